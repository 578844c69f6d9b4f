//! Fused cross-entropy over rows of logits: the forward keeps only each row's logsumexp; the
//! backward rebuilds softmax on the fly straight into the gradient (no probability tensor).

use super::simd::{self, multiversion};
use super::softmax::logsumexp_row;
use rayon::prelude::*;

const ROWS_PER_TASK: usize = 8;

/// Per-row (logsumexp, loss); rows whose target is negative are ignored (loss 0).
pub fn forward(logits: &[f32], targets: &[i64], vocab: usize) -> (Vec<f32>, Vec<f32>) {
    let mut out = vec![(0f32, 0f32); targets.len()];
    out.par_chunks_mut(ROWS_PER_TASK).zip(logits.par_chunks(vocab * ROWS_PER_TASK)).zip(targets.par_chunks(ROWS_PER_TASK)).for_each(
        |((out, x), t)| {
            for ((o, x), &t) in out.iter_mut().zip(x.chunks(vocab)).zip(t) {
                let lse = logsumexp_row(x);
                *o = (lse, if t < 0 { 0.0 } else { lse - x[t as usize] });
            }
        },
    );
    out.into_iter().unzip()
}

multiversion! {
    /// d = (softmax(x) − onehot(t))·scale for one row.
    pub fn backward_row(x: &[f32], lse: f32, t: usize, scale: f32, d: &mut [f32]) {
        for (o, &v) in d.iter_mut().zip(x) {
            *o = simd::exp(v - lse) * scale;
        }
        d[t] -= scale;
    }
}

/// Gradient of `scale · Σ_rows loss` with respect to the logits.
pub fn backward(logits: &[f32], targets: &[i64], lse: &[f32], vocab: usize, scale: f32) -> Vec<f32> {
    let mut d = vec![0f32; logits.len()];
    let task = vocab * ROWS_PER_TASK;
    d.par_chunks_mut(task).zip(logits.par_chunks(task)).zip(targets.par_chunks(ROWS_PER_TASK).zip(lse.par_chunks(ROWS_PER_TASK))).for_each(
        |((d, x), (t, lse))| {
            for (((d, x), &t), &lse) in d.chunks_mut(vocab).zip(x.chunks(vocab)).zip(t).zip(lse) {
                if t >= 0 {
                    backward_row(x, lse, t as usize, scale, d);
                }
            }
        },
    );
    d
}
