//! The tensor engine: strided tensors, a reverse-mode autograd, a fast CPU backend (the reference)
//! and a CUDA backend behind the `cuda` feature.

pub mod alloc;
pub mod autocast;
pub mod autograd;
pub mod conformance;
pub mod cpu;
pub mod cuda;
mod device;
mod dtype;
mod error;
pub mod memory;
pub mod ops;
pub mod profile;
pub mod optim;
pub mod safetensors;
pub mod shape;
mod storage;
mod tensor;

pub use autocast::{autocast_bf16, AutocastGuard};
pub use autograd::{no_grad, with_no_grad, GradStore, NoGradGuard};
pub use device::Device;
pub use dtype::DType;
pub use error::{Error, Result};
pub use ops::attention::{causal_attention, causal_attention_naive, causal_attention_padded};
pub use ops::index::embedding;
pub use ops::sample::inverse_cdf;
pub use storage::{CpuStorage, Storage};
pub use tensor::{Element, Tensor, TensorId};
