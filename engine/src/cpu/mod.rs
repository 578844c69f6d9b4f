//! The CPU backend: our own kernels on plain slices. It runs the whole product without a GPU and is
//! the reference every CUDA kernel is checked against.

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod elementwise;
pub mod gemm;
pub mod layernorm;
pub mod simd;
pub mod softmax;
