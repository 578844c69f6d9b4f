//! Elementwise kernels over strided f32 operands (broadcast views have zero strides).

use crate::shape::Layout;
use rayon::prelude::*;

/// Below this many elements a loop stays on one thread.
const PAR_MIN: usize = 1 << 16;

/// `out[i] = f(a[i], b[i])` over the elements of two layouts of the same shape.
pub fn binary_map(a: &[f32], la: &Layout, b: &[f32], lb: &Layout, f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let n = la.numel();
    let mut out = vec![0f32; n];
    if la.is_contiguous() && lb.is_contiguous() {
        let (a, b) = (&a[la.offset..la.offset + n], &b[lb.offset..lb.offset + n]);
        let body = |(o, (a, b)): (&mut [f32], (&[f32], &[f32]))| o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&x, &y))| *o = f(x, y));
        if n >= PAR_MIN {
            out.par_chunks_mut(PAR_MIN / 4).zip(a.par_chunks(PAR_MIN / 4).zip(b.par_chunks(PAR_MIN / 4))).for_each(body);
        } else {
            body((&mut out, (a, b)));
        }
        return out;
    }
    // Strided: walk the outer dims with an odometer, the last dim as the inner loop.
    let rank = la.rank();
    if rank == 0 {
        out[0] = f(a[la.offset], b[lb.offset]);
        return out;
    }
    let inner = la.shape[rank - 1];
    if inner == 0 {
        return out;
    }
    let (sa, sb) = (la.strides[rank - 1], lb.strides[rank - 1]);
    let mut idx = vec![0usize; rank - 1];
    let (mut oa, mut ob) = (la.offset, lb.offset);
    for row in out.chunks_mut(inner) {
        for (j, o) in row.iter_mut().enumerate() {
            *o = f(a[oa + j * sa], b[ob + j * sb]);
        }
        for d in (0..rank - 1).rev() {
            idx[d] += 1;
            oa += la.strides[d];
            ob += lb.strides[d];
            if idx[d] < la.shape[d] {
                break;
            }
            oa -= la.strides[d] * idx[d];
            ob -= lb.strides[d] * idx[d];
            idx[d] = 0;
        }
    }
    out
}

/// `out[i] = f(x[i])` over a contiguous slice.
pub fn unary_map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    if x.len() >= PAR_MIN {
        out.par_chunks_mut(PAR_MIN / 4).zip(x.par_chunks(PAR_MIN / 4)).for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v)));
    } else {
        out.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v));
    }
    out
}

/// `out[i] = f(x[i], y[i], g[i])` over contiguous slices (fused backward rules).
pub fn ternary_map(x: &[f32], y: &[f32], g: &[f32], f: impl Fn(f32, f32, f32) -> f32 + Sync) -> Vec<f32> {
    x.iter().zip(y).zip(g).map(|((&x, &y), &g)| f(x, y, g)).collect()
}

use super::simd::{self, multiversion};

/// GPT-2's `gelu_new`: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    let u = GELU_C * (x + 0.044715 * x * x * x);
    0.5 * x * (1.0 + simd::tanh(u))
}

#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    let u = GELU_C * (x + 0.044715 * x * x * x);
    let t = simd::tanh(u);
    let du = GELU_C * (1.0 + 3.0 * 0.044715 * x * x);
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
}

multiversion! {
    /// y = gelu(x), one chunk.
    pub fn gelu_forward_chunk(x: &[f32], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = gelu(v);
        }
    }
}

multiversion! {
    /// dx = g · gelu'(x), one chunk.
    pub fn gelu_backward_chunk(x: &[f32], g: &[f32], dx: &mut [f32]) {
        for ((o, &v), &gv) in dx.iter_mut().zip(x).zip(g) {
            *o = gv * gelu_grad(v);
        }
    }
}

pub fn gelu_forward(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(PAR_MIN / 4).zip(x.par_chunks(PAR_MIN / 4)).for_each(|(y, x)| gelu_forward_chunk(x, y));
    y
}

pub fn gelu_backward(x: &[f32], g: &[f32]) -> Vec<f32> {
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(PAR_MIN / 4).zip(x.par_chunks(PAR_MIN / 4).zip(g.par_chunks(PAR_MIN / 4))).for_each(|(d, (x, g))| gelu_backward_chunk(x, g, d));
    dx
}

const GELU_C: f32 = 0.797_884_6; // sqrt(2/pi)

pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// log σ(x) = -softplus(-x), stable for large |x|.
pub fn log_sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}
