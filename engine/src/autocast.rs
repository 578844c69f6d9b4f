//! Mixed precision, as `torch.autocast(dtype=bfloat16)`: inside [`autocast_bf16`], matmuls and
//! flash attention on CUDA read their operands as bf16 (rounded from the f32 parameters, which
//! stay the master copies that AdamW updates, or read in place when already bf16) and accumulate
//! in f32 on tensor cores; the activations that feed matmuls are stored in bf16 (matmul,
//! layernorm and attention outputs), and so is what GELU and softmax make of them; heads whose
//! outputs are compared ask for f32 (`Tensor::matmul_as`: logits, rewards, values). Ops without a
//! bf16 kernel widen their inputs and write f32 (the residual stream stays f32). Gradients take
//! their tensor's type (see `backward`): parameters get f32 ones.
//! The CPU ignores it: its f32 result is the reference the bf16 one is checked against.

use std::cell::Cell;

thread_local! {
    static BF16: Cell<bool> = const { Cell::new(false) };
}

/// Are this thread's CUDA matmuls in bf16 right now?
pub fn bf16_enabled() -> bool {
    BF16.with(|b| b.get())
}

/// bf16 matmuls until dropped (cover the backward too: its matmuls read the flag when they run).
#[must_use = "f32 matmuls resume when the guard is dropped"]
pub struct AutocastGuard(bool);

pub fn autocast_bf16() -> AutocastGuard {
    AutocastGuard(BF16.with(|b| b.replace(true)))
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        BF16.with(|b| b.set(self.0));
    }
}
