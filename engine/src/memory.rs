//! Host memory: what the machine can still give, so that a model or batch too large for it fails
//! with an error that says so before the allocation, not by the kernel's OOM killer halfway in
//! (Linux overcommits: a huge allocation succeeds and the process dies when it touches it).

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

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn more_than_the_machine_has_is_a_clear_error() {
        let err = super::check_host(u64::MAX / 2, "a test buffer").unwrap_err().to_string();
        assert!(err.starts_with("out of memory: a test buffer needs about") && err.contains("available"), "{err}");
        assert!(super::check_host(1 << 20, "a megabyte").is_ok());
    }
}
