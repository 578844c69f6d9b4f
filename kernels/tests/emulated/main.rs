//! Kernels' own CUDA source, run on the CPU emulation in `kernels/emu` (C++20, one thread per
//! CUDA thread) and compared with f64 references at the GPU self-test's tolerances (or bit for
//! bit): their indexing, bounds (under AddressSanitizer), reductions and barriers, and with
//! `IGPT_EMU_SANITIZER=thread` their races between a block's threads (under ThreadSanitizer), are
//! checked on machines without a GPU.
//! Covered: the row kernels (softmax, layernorm, both versions, f32 and bf16, layernorm f32 to bf16), every kernel of
//! cu/pointwise.cu (the engine's remaining ops), the f32 attention kernels (v1 forward and backward, decode; head dims
//! 32/64/128, left padding), the f32 matmuls (v1; v2 batched, operands stored as read or
//! transposed), cross-entropy (warp and block, f32 and bf16), embedding (forward, both
//! backwards), AdamW, GELU (f32 and bf16), the row sums, the global L2 norm and the broadcast binary ops,
//! and, on stand-ins for their tensor-core instructions (emu/tensor_core.h), attention v2 and matmul
//! v4 with its epilogues, (emu/hopper.h: wgmma, TMA, mbarriers) the Hopper matmuls v5 and v6, v4-v6
//! with split-K and its reduction, and (emu/mma.h: WMMA) matmul v3: every kernel. Skipped, with a
//! message, where no C++20 compiler with the sanitizer is found ($CXX, c++, g++).
//!
//! `harness` builds and runs the drivers; one file per kernel family holds its test.

mod harness;

mod attention;
mod matmul;
mod memops;
mod pointwise;
mod rows;
