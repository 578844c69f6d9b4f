//! The engine's ops on CUDA tensors, each a launch of a kernel from `kernels/` on the device's
//! one stream. The ops in `crate::ops` check shapes, call these for CUDA inputs and record the
//! same `Op` for backward as on the CPU, so the gradient rules stay one table.
//!
//! Element types: f32, and bf16 as storage. Every op reads bf16 inputs (widened exactly into
//! f32 where it has no bf16 kernel, and then writes f32); matmul, attention, GELU, softmax and
//! cross-entropy read bf16 natively. Under `autocast_bf16` the activations that feed matmuls are
//! stored in bf16: matmul outputs (each gradient in its operand's type), layernorm and
//! attention outputs (rounded once from their f32 math). Parameters and their gradients stay f32.
//!
//! One file per family, as in `crate::ops`; `buffers` holds what they share: the device views
//! of a tensor's elements (f32, bf16 bits, ids) and the output buffers (poisoned on request).

mod adamw;
mod attention;
mod buffers;
mod copy;
mod cross_entropy;
mod indexing;
mod matmul;
mod pointwise;
mod reduce;
mod rows;

pub(crate) use adamw::*;
pub(crate) use attention::*;
pub(crate) use buffers::{alloc_failed, poison_outputs, output_on, zeros_on};
pub(crate) use copy::*;
pub(crate) use cross_entropy::*;
pub(crate) use indexing::*;
pub(crate) use matmul::*;
pub(crate) use pointwise::*;
pub(crate) use reduce::*;
pub(crate) use rows::*;
