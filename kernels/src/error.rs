//! One error type for the crate; messages are meant to be shown to a user as is.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("built without the `cuda` feature (rebuild with `--features cuda`)")]
    NoCudaFeature,
    #[error("no CUDA device: libcuda not found (is the NVIDIA driver installed?)")]
    NoDriver,
    #[error("NVRTC not found: libnvrtc.so.13 is not on the library path (source scripts/cuda-tools.sh or add the toolkit's lib dir to LD_LIBRARY_PATH)")]
    NoNvrtc,
    #[error("cuBLAS not found: libcublas.so.13 is not on the library path")]
    NoCublas,
    #[error("no CUDA include dir with cuda_bf16.h, mma.h and crt/mma.h found (searched: {0}); set CUDA_HOME or IGPT_CUDA_INCLUDE")]
    NoIncludeDir(String),
    #[error("unknown arch {0:?}: expected sm_80, sm_86, sm_89, sm_90, sm_90a or native")]
    BadArch(String),
    #[error("NVRTC failed to compile module `{module}` for {arch} (options: {options}):\n{log}")]
    Compile { module: String, arch: String, options: String, log: String },
    #[error("CUDA error in {what}: {msg}")]
    Cuda { what: String, msg: String },
    #[error("out of device memory in {what}")]
    OutOfMemory { what: String },
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps any CUDA-side error with what was being done (kernel name and shape, API call);
    /// the driver's out-of-memory (cudarc's `DriverError(CUDA_ERROR_OUT_OF_MEMORY, ..)`) becomes
    /// [`Error::OutOfMemory`], which callers turn into advice.
    pub fn cuda(what: impl Into<String>, err: impl std::fmt::Debug) -> Self {
        let msg = format!("{err:?}");
        if msg.contains("CUDA_ERROR_OUT_OF_MEMORY") {
            return Error::OutOfMemory { what: what.into() };
        }
        Error::Cuda { what: what.into(), msg }
    }
}

/// A device's memory when an allocation failed: what the driver has left and what the stream-
/// ordered pool (every buffer's source) holds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryState {
    pub free: u64,
    pub total: u64,
    /// Reserved by the pool: live buffers plus freed ones kept for reuse.
    pub pool_reserved: u64,
    /// Live buffers.
    pub pool_used: u64,
}

impl std::fmt::Display for MemoryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        write!(
            f,
            "{:.2} GiB free of {:.2} GiB; the pool holds {:.2} GiB, {:.2} GiB of it in live buffers",
            gib(self.free),
            gib(self.total),
            gib(self.pool_reserved),
            gib(self.pool_used)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Error, MemoryState};

    #[test]
    fn memory_state_reads_in_gib() {
        let m = MemoryState { free: 3 << 28, total: 80 << 30, pool_reserved: 79 << 30, pool_used: 78 << 30 };
        assert_eq!(m.to_string(), "0.75 GiB free of 80.00 GiB; the pool holds 79.00 GiB, 78.00 GiB of it in live buffers");
    }

    #[derive(Debug)]
    #[allow(dead_code, non_camel_case_types)]
    enum CUresult {
        CUDA_ERROR_OUT_OF_MEMORY,
        CUDA_ERROR_ILLEGAL_ADDRESS,
    }
    /// cudarc's driver error, as its Debug prints it.
    #[derive(Debug)]
    #[allow(dead_code)]
    struct DriverError(CUresult, &'static str);

    #[test]
    fn the_drivers_out_of_memory_is_told_apart() {
        let oom = Error::cuda("launch x", DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY, "out of memory"));
        assert!(matches!(&oom, Error::OutOfMemory { what } if what == "launch x"), "{oom:?}");
        let other = Error::cuda("launch x", DriverError(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS, "an illegal memory access"));
        assert!(other.to_string().contains("CUDA_ERROR_ILLEGAL_ADDRESS"), "{other}");
    }
}
