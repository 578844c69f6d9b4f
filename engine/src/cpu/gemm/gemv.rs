//! Matrix-vector fast path (m == 1 or n == 1), where packing into register tiles would waste
//! most of the work. Computes `y[i] = alpha * sum_p M(i, p) * x[p] + beta * y[i]`.

use super::{Isa, SendPtr};
use rayon::prelude::*;

/// Strided matrix-vector operands (raw pointers into bounds-checked data).
#[derive(Clone, Copy)]
pub(crate) struct Gemv {
    pub rows: usize,
    pub k: usize,
    pub m: *const f32,
    pub s_i: usize,
    pub s_p: usize,
    pub x: *const f32,
    pub s_x: usize,
    pub y: *mut f32,
    pub s_y: usize,
}

/// # Safety
/// All pointers must be valid for the strided extents described by `g`, and `y`'s elements
/// must be pairwise distinct.
pub(crate) unsafe fn gemv(isa: Isa, g: Gemv, alpha: f32, beta: f32) {
    // Contiguous copy of x (k floats) so the inner loops are unit-stride.
    let xv: Vec<f32> = (0..g.k).map(|p| unsafe { *g.x.add(p * g.s_x) }).collect();
    let work = g.rows as f64 * g.k as f64;
    let nt = rayon::current_num_threads().clamp(1, (work / 1.0e6) as usize + 1);
    let chunk = g.rows.div_ceil(nt).next_multiple_of(16);
    let y = SendPtr(g.y);
    let m = SendPtr(g.m as *mut f32);
    let run = |r0: usize| {
        let r1 = (r0 + chunk).min(g.rows);
        let mut acc = vec![0f32; r1 - r0];
        // SAFETY: rows [r0, r1) are inside the checked extent; each task owns its rows of y.
        unsafe {
            let mp = m.get().add(r0 * g.s_i) as *const f32;
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 | Isa::Avx2 => avx2_rows(mp, g.s_i, g.s_p, g.k, &xv, &mut acc),
                _ => rows_generic(mp, g.s_i, g.s_p, g.k, &xv, &mut acc),
            }
            for (i, &v) in acc.iter().enumerate() {
                let yp = y.get().add((r0 + i) * g.s_y);
                *yp = if beta == 0.0 { alpha * v } else { alpha * v + beta * *yp };
            }
        }
    };
    if nt > 1 {
        (0..g.rows).step_by(chunk).collect::<Vec<_>>().into_par_iter().for_each(run);
    } else {
        run(0);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_rows(m: *const f32, s_i: usize, s_p: usize, k: usize, x: &[f32], acc: &mut [f32]) {
    // SAFETY: forwarded.
    unsafe { rows_generic(m, s_i, s_p, k, x, acc) }
}

/// acc[i] = sum_p M(i, p) * x[p] for the rows in `acc`.
#[inline(always)]
unsafe fn rows_generic(m: *const f32, s_i: usize, s_p: usize, k: usize, x: &[f32], acc: &mut [f32]) {
    // SAFETY (whole body): the caller guarantees the strided extents.
    unsafe {
        if s_p == 1 {
            // Dot products of contiguous rows.
            for (i, out) in acc.iter_mut().enumerate() {
                let row = std::slice::from_raw_parts(m.add(i * s_i), k);
                let mut lanes = [0f32; 16];
                let mut rc = row.chunks_exact(16);
                let mut xc = x.chunks_exact(16);
                for (r, xx) in (&mut rc).zip(&mut xc) {
                    for l in 0..16 {
                        lanes[l] += r[l] * xx[l];
                    }
                }
                let mut s: f32 = lanes.iter().sum();
                for (r, xx) in rc.remainder().iter().zip(xc.remainder()) {
                    s += r * xx;
                }
                *out = s;
            }
        } else if s_i == 1 {
            // AXPY over contiguous columns of M.
            let n = acc.len();
            for (p, &xp) in x.iter().enumerate() {
                let col = std::slice::from_raw_parts(m.add(p * s_p), n);
                for (o, &v) in acc.iter_mut().zip(col) {
                    *o += v * xp;
                }
            }
        } else {
            for (i, out) in acc.iter_mut().enumerate() {
                let mut s = 0f32;
                for (p, &xp) in x.iter().enumerate() {
                    s += *m.add(i * s_i + p * s_p) * xp;
                }
                *out = s;
            }
        }
    }
}
