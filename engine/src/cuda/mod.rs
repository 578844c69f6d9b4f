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

    /// Without the feature no CUDA tensor exists, so the ops in `crate::ops` never call these:
    /// each has the signature of its CUDA version and returns the "built without" error.
    pub(crate) mod ops {
        use crate::{Result, Tensor};
        use kernels::memops::BinaryOp;
        use kernels::pointwise::Unary;

        macro_rules! unavailable {
            ($(fn $name:ident($($arg:ty),*) -> $ret:ty;)*) => {$(
                #[allow(clippy::too_many_arguments)]
                pub(crate) fn $name($(_: $arg),*) -> Result<$ret> {
                    Err(super::unavailable(0))
                }
            )*};
        }

        unavailable! {
            fn contiguous(&Tensor) -> Tensor;
            fn convert(&Tensor, crate::DType) -> Option<Tensor>;
            fn binary(BinaryOp, &Tensor, &Tensor) -> Tensor;
            fn affine(&Tensor, f32, f32) -> Tensor;
            fn gelu(&Tensor) -> Tensor;
            fn gelu_backward(&Tensor, &Tensor) -> Tensor;
            fn unary(&Tensor, Unary, f32, f32) -> Tensor;
            fn unary_backward(Unary, &Tensor, &Tensor, &Tensor, f32, f32) -> Tensor;
            fn where_cond(&Tensor, &Tensor, &Tensor) -> Tensor;
            fn min_max_backward(&Tensor, &Tensor, &Tensor, bool) -> (Tensor, Tensor);
            fn softmax(&Tensor, usize) -> Tensor;
            fn log_softmax(&Tensor, usize) -> Tensor;
            fn softmax_backward(&Tensor, &Tensor, usize, bool) -> Tensor;
            fn layer_norm(&Tensor, &Tensor, &Tensor, usize, f32) -> (Tensor, Tensor, Tensor);
            fn layer_norm_backward(&Tensor, &Tensor, &Tensor, &Tensor, &Tensor) -> (Tensor, Tensor, Tensor);
            fn matmul(&Tensor, &Tensor, Option<&Tensor>, &[usize], crate::DType) -> Tensor;
            fn matmul_bias_gelu(&Tensor, &Tensor, &Tensor, &[usize]) -> Option<(Tensor, Tensor)>;
            fn sum(&Tensor, &[usize], &[usize]) -> Tensor;
            fn max_rows(&Tensor, usize, &[usize]) -> (Tensor, Tensor);
            fn sample_rows(&Tensor, &[f32], f32, &[usize]) -> Tensor;
            fn embedding(&Tensor, &[i64]) -> Tensor;
            fn embedding_backward(&Tensor, &[usize], &[i64]) -> Tensor;
            fn gather(&Tensor, &Tensor) -> Tensor;
            fn scatter_along(&Tensor, &[usize], usize, &Tensor) -> Tensor;
            fn zeros_on(&[usize], usize) -> Tensor;
            fn output_on(&[usize], usize) -> Tensor;
            fn global_norm(&[&Tensor]) -> f32;
            fn assign(&Tensor, &Tensor) -> ();
            fn cross_entropy(&Tensor, &[i64], usize) -> (Tensor, Tensor);
            fn cross_entropy_backward(&Tensor, &[i64], &Tensor, f32) -> Tensor;
            fn cross_entropy_rows(&Tensor, &[i64], usize, f32, bool) -> (Tensor, Tensor, Option<Tensor>);
            fn cross_entropy_rows_backward(&Tensor, &[i64], &Tensor, f32, f32, &Tensor) -> Tensor;
            fn adamw_multi(&[crate::optim::AdamwItem<'_>], f32, f32, f32) -> ();
            fn narrow_backward(&Tensor, &[usize], usize, usize) -> Tensor;
            fn attention(&Tensor, &Tensor, &Tensor, usize, usize, usize, usize, &[usize]) -> (Tensor, Tensor);
            fn attention_backward(&Tensor, &Tensor, &Tensor, &Tensor, &Tensor, &Tensor, usize, usize, usize, usize, &[usize]) -> (Tensor, Tensor, Tensor);
        }

        pub(crate) fn attention_kernel_fits(_: usize) -> bool {
            false
        }
        pub(crate) fn poison_outputs(_: bool) {}
    }
}
#[cfg(not(feature = "cuda"))]
pub use stub::*;

#[cfg(feature = "cuda")]
pub use device::{download, upload};

/// Whether CUDA device 0 is usable, with the reason when it is not.
pub fn availability() -> std::result::Result<String, String> {
    availability_of(0)
}

/// Whether CUDA device `ordinal` is usable (its context made, every kernel loaded), with the
/// reason when it is not.
pub fn availability_of(ordinal: usize) -> std::result::Result<String, String> {
    #[cfg(feature = "cuda")]
    {
        device::probe(ordinal)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = ordinal;
        Err("built without the `cuda` feature".into())
    }
}
