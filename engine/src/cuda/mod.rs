//! The CUDA backend. Built only with the `cuda` feature; without it `CudaStorage` is an empty enum,
//! so every `match` over `Storage` stays exhaustive and costs nothing (candle's stub pattern).

#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
pub use device::{context, gpu, CudaStorage};

#[cfg(not(feature = "cuda"))]
mod stub {
    use crate::{DType, Device, Error, Result};

    /// Uninhabited: no CUDA tensor can exist in a build without the `cuda` feature.
    pub enum CudaStorage {}

    impl CudaStorage {
        pub fn device(&self) -> Device {
            match *self {}
        }
        pub fn dtype(&self) -> DType {
            match *self {}
        }
    }

    pub fn unavailable(ordinal: usize) -> Error {
        Error::Cuda(format!(
            "cuda:{ordinal} requested, but this binary was built without the `cuda` feature \
             (rebuild with `cargo build --release --features cuda`)"
        ))
    }

    pub fn upload(_: &crate::storage::CpuStorage, ordinal: usize) -> Result<CudaStorage> {
        Err(unavailable(ordinal))
    }

    pub fn download(s: &CudaStorage) -> Result<crate::storage::CpuStorage> {
        match *s {}
    }
}
#[cfg(not(feature = "cuda"))]
pub use stub::*;

#[cfg(feature = "cuda")]
pub use device::{download, upload};

/// Whether a usable CUDA device is present, with the reason when it is not.
pub fn availability() -> std::result::Result<String, String> {
    #[cfg(feature = "cuda")]
    {
        device::probe()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err("built without the `cuda` feature".into())
    }
}
