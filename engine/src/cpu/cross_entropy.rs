//! Fused cross-entropy over rows of logits: the forward keeps only each row's logsumexp; the
//! backward rebuilds softmax on the fly straight into the gradient (no probability tensor).
//! The scaled forms read the logits times `a` (PPO's per-token log-probs at temperature 1 / a
//! are minus the loss) and give each row's entropy; a = 1 is the plain loss, bit for bit.

use super::simd::{self, multiversion};
use super::softmax::logsumexp_row;
use rayon::prelude::*;

const ROWS_PER_TASK: usize = 8;

/// Per-row (logsumexp, loss); rows whose target is negative are ignored (loss 0).
pub fn forward(logits: &[f32], targets: &[i64], vocab: usize) -> (Vec<f32>, Vec<f32>) {
    let (lse, loss, _) = forward_scaled(logits, targets, vocab, 1.0, false);
    (lse, loss)
}

/// Per row of z = a · logits: (logsumexp(z), loss = lse − z[target] (0 for a negative target),
/// and with `entropy` −Σ p log p of p = softmax(z), summed in f64).
pub fn forward_scaled(logits: &[f32], targets: &[i64], vocab: usize, a: f32, entropy: bool) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let mut out = vec![(0f32, 0f32, 0f32); targets.len()];
    out.par_chunks_mut(ROWS_PER_TASK).zip(logits.par_chunks(vocab * ROWS_PER_TASK)).zip(targets.par_chunks(ROWS_PER_TASK)).for_each(
        |((out, x), t)| {
            let mut z = Vec::new();
            for ((o, x), &t) in out.iter_mut().zip(x.chunks(vocab)).zip(t) {
                let z: &[f32] = if a == 1.0 {
                    x
                } else {
                    z.clear();
                    z.extend(x.iter().map(|&v| a * v));
                    &z
                };
                let lse = logsumexp_row(z);
                let ent = if entropy { -z.iter().filter(|v| v.is_finite()).map(|&v| (simd::exp(v - lse) as f64) * (v - lse) as f64).sum::<f64>() } else { 0.0 };
                *o = (lse, if t < 0 { 0.0 } else { lse - z[t as usize] }, ent as f32);
            }
        },
    );
    let ent = entropy.then(|| out.iter().map(|o| o.2).collect());
    let (lse, loss) = out.into_iter().map(|o| (o.0, o.1)).unzip();
    (lse, loss, ent)
}

multiversion! {
    /// d = (softmax(a·x) − onehot(t))·scale for one row.
    pub fn backward_row(x: &[f32], lse: f32, t: usize, a: f32, scale: f32, d: &mut [f32]) {
        for (o, &v) in d.iter_mut().zip(x) {
            *o = simd::exp(a * v - lse) * scale;
        }
        d[t] -= scale;
    }
}

/// Gradient of `scale · Σ_rows loss` with respect to the logits.
pub fn backward(logits: &[f32], targets: &[i64], lse: &[f32], vocab: usize, scale: f32) -> Vec<f32> {
    backward_scaled(logits, targets, lse, vocab, 1.0, scale, None)
}

/// Gradient of `scale · Σ_rows g[row] · loss[row]` (g None: all 1) for the loss of a · logits.
pub fn backward_scaled(logits: &[f32], targets: &[i64], lse: &[f32], vocab: usize, a: f32, scale: f32, g: Option<&[f32]>) -> Vec<f32> {
    let mut d = vec![0f32; logits.len()];
    let task = vocab * ROWS_PER_TASK;
    d.par_chunks_mut(task).zip(logits.par_chunks(task)).zip(targets.par_chunks(ROWS_PER_TASK).zip(lse.par_chunks(ROWS_PER_TASK))).enumerate().for_each(
        |(i, ((d, x), (t, lse)))| {
            for (r, (((d, x), &t), &lse)) in d.chunks_mut(vocab).zip(x.chunks(vocab)).zip(t).zip(lse).enumerate() {
                if t >= 0 {
                    let s = g.map_or(scale, |g| scale * g[i * ROWS_PER_TASK + r]);
                    backward_row(x, lse, t as usize, a, s, d);
                }
            }
        },
    );
    d
}
