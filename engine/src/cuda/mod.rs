//! The CUDA backend. Built only with the `cuda` feature; without it `CudaStorage` is an empty enum,
//! so every `match` over `Storage` stays exhaustive and costs nothing (candle's stub pattern).

#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
pub(crate) mod ops;
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

    /// Without the feature no CUDA tensor exists, so the ops in `crate::ops` never call these.
    pub(crate) mod ops {
        use crate::{Result, Tensor};
        use kernels::memops::BinaryOp;

        fn none() -> crate::Error {
            super::unavailable(0)
        }
        pub(crate) fn contiguous(_: &Tensor) -> Result<Tensor> {
            Err(none())
        }
        pub(crate) fn binary(_: BinaryOp, _: &Tensor, _: &Tensor) -> Result<Tensor> {
            Err(none())
        }
        pub(crate) fn affine(_: &Tensor, _: f32, _: f32) -> Result<Tensor> {
            Err(none())
        }
        pub(crate) fn gelu(_: &Tensor) -> Result<Tensor> {
            Err(none())
        }
        pub(crate) fn gelu_backward(_: &Tensor, _: &Tensor) -> Result<Tensor> {
            Err(none())
        }
        pub(crate) fn softmax(_: &Tensor, _: usize) -> Result<Tensor> {
            Err(none())
        }
        pub(crate) fn layer_norm(_: &Tensor, _: &Tensor, _: &Tensor, _: usize, _: f32) -> Result<(Tensor, Tensor, Tensor)> {
            Err(none())
        }
        pub(crate) fn layer_norm_backward(_: &Tensor, _: &Tensor, _: &Tensor, _: &Tensor, _: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
            Err(none())
        }
        pub(crate) fn matmul(_: &Tensor, _: &Tensor, _: Option<&Tensor>, _: &[usize]) -> Result<Tensor> {
            Err(none())
        }
        pub(crate) fn sum(_: &Tensor, _: &[usize], _: &[usize]) -> Result<Tensor> {
            Err(none())
        }
        pub(crate) fn embedding(_: &Tensor, _: &[i64]) -> Result<Tensor> {
            Err(none())
        }
        pub(crate) fn embedding_backward(_: &Tensor, _: &[usize], _: &[i64]) -> Result<Tensor> {
            Err(none())
        }
        pub(crate) fn cross_entropy(_: &Tensor, _: &[i64], _: usize) -> Result<(Tensor, Tensor)> {
            Err(none())
        }
        pub(crate) fn cross_entropy_backward(_: &Tensor, _: &[i64], _: &Tensor, _: f32) -> Result<Tensor> {
            Err(none())
        }
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn adamw(_: &Tensor, _: &Tensor, _: &Tensor, _: &Tensor, _: f32, _: f32, _: f32, _: f32, _: f32, _: u64) -> Result<()> {
            Err(none())
        }
        pub(crate) fn narrow_backward(_: &Tensor, _: &[usize], _: usize, _: usize) -> Result<Tensor> {
            Err(none())
        }
        pub(crate) fn attention_kernel_fits(_: usize) -> bool {
            false
        }
        pub(crate) fn attention(_: &Tensor, _: &Tensor, _: &Tensor, _: usize, _: usize, _: usize, _: usize) -> Result<(Tensor, Tensor)> {
            Err(none())
        }
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn attention_backward(_: &Tensor, _: &Tensor, _: &Tensor, _: &Tensor, _: &Tensor, _: &Tensor, _: usize, _: usize, _: usize, _: usize) -> Result<(Tensor, Tensor, Tensor)> {
            Err(none())
        }
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
