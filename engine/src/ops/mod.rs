//! Tensor-level ops: each checks shapes, dispatches to a backend kernel and records its `Op`.
//! Forward and backward of each family sit side by side in one file.

pub mod attention;
pub mod cross_entropy;
pub mod elementwise;
pub mod index;
pub mod layernorm;
pub mod matmul;
pub mod reduce;
pub mod sample;
pub mod softmax;
pub mod view;
