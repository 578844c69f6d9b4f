//! LayerNorm over rows: forward saves each row's mean and 1/std; backward reuses them.

use super::simd::{self, multiversion};
use rayon::prelude::*;

const ROWS_PER_TASK: usize = 16;

multiversion! {
    /// y = (x − mean)·rstd·w + b for one row; returns (mean, rstd).
    pub fn forward_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [f32]) -> (f32, f32) {
        let n = x.len() as f32;
        let mean = simd::sum(x) / n;
        // Two passes: the centred variance is accurate even when |mean| >> std.
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v - mean;
        }
        let var = simd::dot(y, y) / n;
        let rstd = 1.0 / (var + eps).sqrt();
        for ((o, &wv), &bv) in y.iter_mut().zip(w).zip(b) {
            *o = *o * rstd * wv + bv;
        }
        (mean, rstd)
    }
}

multiversion! {
    /// dx for one row; adds this row's share into dw and db.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_row(x: &[f32], w: &[f32], g: &[f32], mean: f32, rstd: f32, dx: &mut [f32], dw: &mut [f32], db: &mut [f32]) {
        let n = x.len() as f32;
        // dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ⊙x̂)), with ĝ = g⊙w and x̂ = (x − mean)·rstd.
        let (mut sum_g, mut sum_gx) = (0f32, 0f32);
        for i in 0..x.len() {
            let xhat = (x[i] - mean) * rstd;
            let gh = g[i] * w[i];
            sum_g += gh;
            sum_gx += gh * xhat;
            dw[i] += g[i] * xhat;
            db[i] += g[i];
        }
        let (mg, mgx) = (sum_g / n, sum_gx / n);
        for i in 0..x.len() {
            let xhat = (x[i] - mean) * rstd;
            dx[i] = rstd * (g[i] * w[i] - mg - xhat * mgx);
        }
    }
}

/// Returns (y, mean, rstd) for `x` viewed as rows of `cols`.
pub fn forward(x: &[f32], w: &[f32], b: &[f32], cols: usize, eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / cols.max(1);
    let mut y = vec![0f32; x.len()];
    let mut stats = vec![(0f32, 0f32); rows];
    if cols > 0 {
        let task = cols * ROWS_PER_TASK;
        y.par_chunks_mut(task).zip(x.par_chunks(task)).zip(stats.par_chunks_mut(ROWS_PER_TASK)).for_each(|((y, x), st)| {
            for ((y, x), s) in y.chunks_mut(cols).zip(x.chunks(cols)).zip(st) {
                *s = forward_row(x, w, b, eps, y);
            }
        });
    }
    let (mean, rstd) = stats.into_iter().unzip();
    (y, mean, rstd)
}

/// Returns (dx, dw, db).
pub fn backward(x: &[f32], w: &[f32], g: &[f32], mean: &[f32], rstd: &[f32], cols: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0f32; x.len()];
    if cols == 0 {
        return (dx, vec![], vec![]);
    }
    let task = cols * ROWS_PER_TASK;
    // Each task keeps its own dw/db partial sums; they are added at the end.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(task)
        .zip(x.par_chunks(task).zip(g.par_chunks(task)))
        .zip(mean.par_chunks(ROWS_PER_TASK).zip(rstd.par_chunks(ROWS_PER_TASK)))
        .map(|((dx, (x, g)), (mean, rstd))| {
            let (mut dw, mut db) = (vec![0f32; cols], vec![0f32; cols]);
            for (r, ((dx, x), g)) in dx.chunks_mut(cols).zip(x.chunks(cols)).zip(g.chunks(cols)).enumerate() {
                backward_row(x, w, g, mean[r], rstd[r], dx, &mut dw, &mut db);
            }
            (dw, db)
        })
        .collect();
    let (mut dw, mut db) = (vec![0f32; cols], vec![0f32; cols]);
    for (pw, pb) in partials {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dx, dw, db)
}
