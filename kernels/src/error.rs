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
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps any CUDA-side error with what was being done (kernel name and shape, API call).
    pub fn cuda(what: impl Into<String>, err: impl std::fmt::Debug) -> Self {
        Error::Cuda { what: what.into(), msg: format!("{err:?}") }
    }
}
