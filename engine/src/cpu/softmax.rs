//! Softmax and log-softmax over rows, forward and backward; one fused pass per row.

use super::simd::{self, multiversion};
use rayon::prelude::*;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 16;

multiversion! {
    /// y = softmax(x) for one row.
    pub fn softmax_row(x: &[f32], y: &mut [f32]) {
        let m = simd::max(x);
        for (o, &v) in y.iter_mut().zip(x) {
            *o = simd::exp(v - m);
        }
        let inv = 1.0 / simd::sum(y);
        y.iter_mut().for_each(|v| *v *= inv);
    }
}

multiversion! {
    /// log Σ exp(x) for one row, stable.
    pub fn logsumexp_row(x: &[f32]) -> f32 {
        let m = simd::max(x);
        if m == f32::NEG_INFINITY {
            return m;
        }
        let mut acc = [0f32; 16];
        let chunks = x.chunks_exact(16);
        let rest: f32 = chunks.remainder().iter().map(|&v| simd::exp(v - m)).sum();
        for c in chunks {
            for i in 0..16 {
                acc[i] += simd::exp(c[i] - m);
            }
        }
        m + (acc.iter().sum::<f32>() + rest).ln()
    }
}

multiversion! {
    /// dx = y ⊙ (g − Σ g⊙y) for one row.
    pub fn softmax_backward_row(y: &[f32], g: &[f32], dx: &mut [f32]) {
        let s = simd::dot(y, g);
        for ((d, &yv), &gv) in dx.iter_mut().zip(y).zip(g) {
            *d = yv * (gv - s);
        }
    }
}

multiversion! {
    /// dx = g − exp(y)·Σ g for one row of log-softmax output y.
    pub fn log_softmax_backward_row(y: &[f32], g: &[f32], dx: &mut [f32]) {
        let s = simd::sum(g);
        for ((d, &yv), &gv) in dx.iter_mut().zip(y).zip(g) {
            *d = gv - simd::exp(yv) * s;
        }
    }
}

pub fn softmax(x: &[f32], cols: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    if cols == 0 {
        return y;
    }
    y.par_chunks_mut(cols * ROWS_PER_TASK).zip(x.par_chunks(cols * ROWS_PER_TASK)).for_each(|(y, x)| {
        y.chunks_mut(cols).zip(x.chunks(cols)).for_each(|(y, x)| softmax_row(x, y));
    });
    y
}

pub fn log_softmax(x: &[f32], cols: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    if cols == 0 {
        return y;
    }
    y.par_chunks_mut(cols * ROWS_PER_TASK).zip(x.par_chunks(cols * ROWS_PER_TASK)).for_each(|(y, x)| {
        y.chunks_mut(cols).zip(x.chunks(cols)).for_each(|(y, x)| {
            let lse = logsumexp_row(x);
            y.iter_mut().zip(x).for_each(|(o, &v)| *o = v - lse);
        });
    });
    y
}

/// Row-wise backward of softmax (`log = false`) or log-softmax (`log = true`).
pub fn backward(y: &[f32], g: &[f32], cols: usize, log: bool) -> Vec<f32> {
    let mut dx = vec![0f32; y.len()];
    if cols == 0 {
        return dx;
    }
    let task = cols * ROWS_PER_TASK;
    dx.par_chunks_mut(task).zip(y.par_chunks(task).zip(g.par_chunks(task))).for_each(|(dx, (y, g))| {
        for ((d, y), g) in dx.chunks_mut(cols).zip(y.chunks(cols)).zip(g.chunks(cols)) {
            if log {
                log_softmax_backward_row(y, g, d)
            } else {
                softmax_backward_row(y, g, d)
            }
        }
    });
    dx
}
