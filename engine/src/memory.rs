//! Host memory: what the machine can still give, so that a model or batch too large for it fails
//! with an error that says so before the allocation, not by the kernel's OOM killer halfway in
//! (Linux overcommits: a huge allocation succeeds and the process dies when it touches it).
//! And the error of a GPU that ran out: what asked, how much, the device's state, what to try.

use crate::{Error, Result};

/// Bytes the kernel reports as available for new allocations (`MemAvailable`); None where there
/// is no /proc/meminfo.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Err when `bytes` (an estimate of what `what` needs) exceed the available memory.
pub fn check_host(bytes: u64, what: &str) -> Result<()> {
    match available_bytes() {
        Some(free) if bytes > free => Err(Error::OutOfMemory(format!("{what} needs about {}, and this machine has {} available", gib(bytes), gib(free)))),
        _ => Ok(()),
    }
}

/// The error of a device allocation that found no memory: `what` needed `bytes` more (when
/// known) on `device`, whose memory was `state` (when it could be read).
pub fn device_out_of_memory(what: &str, bytes: Option<u64>, device: &str, state: Option<kernels::MemoryState>) -> Error {
    let need = bytes.map(|b| format!(" {} more", size(b))).unwrap_or_default();
    let state = state.map(|s| format!(" ({s})")).unwrap_or_default();
    Error::OutOfMemory(format!("{what} needed{need} on {device}{state}; a smaller batch or sequence length, or bf16 autocast (--bf16), needs less"))
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// GiB from 1 GiB up, MiB below.
fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        gib(bytes)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn more_than_the_machine_has_is_a_clear_error() {
        let err = super::check_host(u64::MAX / 2, "a test buffer").unwrap_err().to_string();
        assert!(err.starts_with("out of memory: a test buffer needs about") && err.contains("available"), "{err}");
        assert!(super::check_host(1 << 20, "a megabyte").is_ok());
    }

    #[test]
    fn a_gpu_out_of_memory_says_who_asked_how_much_and_what_to_try() {
        let state = kernels::MemoryState { free: 1 << 29, total: 80 << 30, pool_reserved: 79 << 30, pool_used: 70 << 30 };
        let err = super::device_out_of_memory("matmul", Some(3 << 29), "cuda:0 (NVIDIA H100)", Some(state)).to_string();
        assert_eq!(
            err,
            "out of memory: matmul needed 1.5 GiB more on cuda:0 (NVIDIA H100) (0.50 GiB free of 80.00 GiB; the pool holds 79.00 GiB, \
             70.00 GiB of it in live buffers); a smaller batch or sequence length, or bf16 autocast (--bf16), needs less"
        );
        let err = super::device_out_of_memory("layernorm backward", None, "the GPU", None).to_string();
        assert!(err.starts_with("out of memory: layernorm backward needed on the GPU; "), "{err}");
        assert!(super::device_out_of_memory("x", Some(5 << 20), "d", None).to_string().contains("needed 5.0 MiB more on d;"));
    }
}
