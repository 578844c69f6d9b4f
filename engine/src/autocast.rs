//! Mixed precision, as `torch.autocast(dtype=bfloat16)`: inside [`autocast_bf16`], matmuls and
//! flash attention on CUDA read their operands as bf16 (rounded from the f32 tensors, which stay
//! the master copies that AdamW updates) and accumulate and write f32 on tensor cores. Every
//! other op stays f32.
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
