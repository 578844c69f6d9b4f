//! Causal self-attention, fused and tiled in the FlashAttention-2 way: scores exist one
//! (query block × key block) tile at a time, softmax is computed online, and only each row's
//! logsumexp is saved for backward (O(T) extra memory per head, not O(T²)).
//!
//! Layout: q [heads, tq, d], k and v [heads, tk, d], contiguous, with tq <= tk. Query i sits at
//! absolute position i + (tk − tq) and sees keys 0..=that position (a KV cache puts the new
//! queries at the end).
//!
//! Left-padded batches (`*_padded`): `key_pad` holds, per batch row, how many leading keys are
//! padding that no query may see; the heads are split evenly over those rows (heads of row b are
//! b·n .. (b+1)·n). A query that sees no key at all (a padding query) outputs zeros, its logsumexp
//! is +inf and it gets no gradient: finite everywhere, unlike a softmax over nothing.

use super::gemm::{sgemm, MatMut, MatRef};
use super::simd::{self, multiversion};
use rayon::prelude::*;

const BLOCK_Q: usize = 64;
const BLOCK_K: usize = 64;
/// Queries per head up to which each row makes one pass of dot products over its keys instead of
/// going through GEMM tiles: decoding has one query per head, where a tile's set-up costs more
/// than its arithmetic.
const ROW_WISE_Q: usize = 4;

#[derive(Clone, Copy)]
pub struct Dims {
    pub heads: usize,
    pub tq: usize,
    pub tk: usize,
    pub d: usize,
}

impl Dims {
    fn offset(&self) -> usize {
        self.tk - self.tq
    }
    fn scale(&self) -> f32 {
        1.0 / (self.d as f32).sqrt()
    }
    /// Number of keys query row `i` may see.
    fn visible(&self, i: usize) -> usize {
        i + self.offset() + 1
    }
}

/// C[m×n] (+)= alpha · A·B over row-major slices with the given strides.
#[allow(clippy::too_many_arguments)]
fn gemm(m: usize, n: usize, k: usize, alpha: f32, a: (&[f32], usize, usize), b: (&[f32], usize, usize), beta: f32, c: &mut [f32], ldc: usize) {
    sgemm(
        m,
        n,
        k,
        alpha,
        MatRef { data: a.0, offset: 0, rs: a.1, cs: a.2 },
        MatRef { data: b.0, offset: 0, rs: b.1, cs: b.2 },
        beta,
        MatMut { data: c, offset: 0, rs: ldc, cs: 1 },
    );
}

/// Padding keys of head `h`: `key_pad` has one entry per batch row (empty: no padding).
fn pad_of(key_pad: &[usize], h: usize, heads: usize) -> usize {
    if key_pad.is_empty() {
        0
    } else {
        key_pad[h / (heads / key_pad.len())]
    }
}

/// Returns (out [heads, tq, d], lse [heads, tq]).
pub fn forward(q: &[f32], k: &[f32], v: &[f32], dims: Dims) -> (Vec<f32>, Vec<f32>) {
    forward_padded(q, k, v, dims, &[])
}

/// `forward` with leading padding keys per batch row (see the module doc).
pub fn forward_padded(q: &[f32], k: &[f32], v: &[f32], dims: Dims, key_pad: &[usize]) -> (Vec<f32>, Vec<f32>) {
    forward_kv_strided(q, k, v, dims, key_pad, dims.tk * dims.d)
}

/// `forward_padded` with head h's keys and values at `h·kv_stride` of `k` and `v` (each head's
/// [tk, d] rows still contiguous): a KV cache with room for more positions is read in place.
pub fn forward_kv_strided(q: &[f32], k: &[f32], v: &[f32], dims: Dims, key_pad: &[usize], kv_stride: usize) -> (Vec<f32>, Vec<f32>) {
    let Dims { heads, tq, tk, d } = dims;
    assert!(heads == 0 || (kv_stride >= tk * d && k.len().min(v.len()) >= (heads - 1) * kv_stride + tk * d), "attention: keys/values too short");
    let mut out = vec![0f32; heads * tq * d];
    let mut lse = vec![0f32; heads * tq];
    if tq <= ROW_WISE_Q {
        out.par_chunks_mut(tq * d).zip(lse.par_chunks_mut(tq)).enumerate().for_each(|(h, (o, l))| {
            let kv = h * kv_stride..h * kv_stride + tk * d;
            let (kh, vh) = (&k[kv.clone()], &v[kv]);
            let pad = pad_of(key_pad, h, heads);
            // The cache is cold every decode step (the LM head streams 51 MB through it): a burst of
            // one read per line fetches it several times faster than the dependent passes would.
            touch(&kh[pad.min(tk) * d..]);
            touch(&vh[pad.min(tk) * d..]);
            let mut scores = vec![0f32; tk];
            for i in 0..tq {
                let (qi, oi) = (&q[(h * tq + i) * d..][..d], &mut o[i * d..(i + 1) * d]);
                l[i] = attend_row(qi, kh, vh, pad, dims.visible(i), &mut scores, oi);
            }
        });
        return (out, lse);
    }
    let q_blocks = tq.div_ceil(BLOCK_Q);
    // One task per (head, query block): they write disjoint rows of `out` and `lse`.
    let tasks: Vec<(usize, usize)> = (0..heads).flat_map(|h| (0..q_blocks).map(move |b| (h, b))).collect();
    let results: Vec<(usize, usize, Vec<f32>, Vec<f32>)> = tasks
        .into_par_iter()
        .map(|(h, qb)| {
            let i0 = qb * BLOCK_Q;
            let rows = BLOCK_Q.min(tq - i0);
            let qh = &q[(h * tq + i0) * d..(h * tq + i0 + rows) * d];
            let kv = h * kv_stride..h * kv_stride + tk * d;
            let (kh, vh) = (&k[kv.clone()], &v[kv]);
            let (o, l) = forward_block(qh, kh, vh, i0, rows, dims, pad_of(key_pad, h, heads));
            (h, i0, o, l)
        })
        .collect();
    for (h, i0, o, l) in results {
        out[(h * tq + i0) * d..(h * tq + i0) * d + o.len()].copy_from_slice(&o);
        lse[h * tq + i0..h * tq + i0 + l.len()].copy_from_slice(&l);
    }
    (out, lse)
}

/// Reads one float per 64-byte line of `x`.
fn touch(x: &[f32]) {
    for i in (0..x.len()).step_by(16) {
        // SAFETY: i < x.len().
        unsafe { std::ptr::read_volatile(x.as_ptr().add(i)) };
    }
}

multiversion! {
    /// One query row against keys `lo..hi` of its head (k and v [tk, d], d = q.len()): writes
    /// softmax(q·kᵀ/√d)·v into `out` and returns the logsumexp (zeros and +inf when it sees no
    /// key, as `forward_block`). `scores` holds at least `hi` floats.
    pub fn attend_row(q: &[f32], k: &[f32], v: &[f32], lo: usize, hi: usize, scores: &mut [f32], out: &mut [f32]) -> f32 {
        let d = q.len();
        let scale = 1.0 / (d as f32).sqrt();
        out.fill(0.0);
        if lo >= hi {
            return f32::INFINITY;
        }
        let s = &mut scores[lo..hi];
        for (j, x) in s.iter_mut().enumerate() {
            *x = scale * simd::dot(q, &k[(lo + j) * d..(lo + j + 1) * d]);
        }
        let m = simd::max(s);
        for x in s.iter_mut() {
            *x = simd::exp(*x - m);
        }
        let l = simd::sum(s);
        for (j, &p) in s.iter().enumerate() {
            for (o, &x) in out.iter_mut().zip(&v[(lo + j) * d..(lo + j + 1) * d]) {
                *o += p * x;
            }
        }
        let inv = 1.0 / l;
        out.iter_mut().for_each(|o| *o *= inv);
        m + l.ln()
    }
}

/// Online softmax over key blocks for `rows` queries starting at row `i0` of one head, whose
/// first `pad` keys are hidden.
#[allow(clippy::too_many_arguments)]
fn forward_block(q: &[f32], k: &[f32], v: &[f32], i0: usize, rows: usize, dims: Dims, pad: usize) -> (Vec<f32>, Vec<f32>) {
    let d = dims.d;
    let keys = dims.visible(i0 + rows - 1);
    let mut acc = vec![0f32; rows * d];
    let mut s = vec![0f32; rows * BLOCK_K];
    let (mut m, mut l) = (vec![f32::NEG_INFINITY; rows], vec![0f32; rows]);
    // Key blocks wholly inside the padding hold nothing visible.
    for j0 in (pad - pad % BLOCK_K..keys).step_by(BLOCK_K) {
        let cols = BLOCK_K.min(keys - j0);
        // S = scale · Q Kᵀ for this tile (Kᵀ read through strides: no transpose copy).
        gemm(rows, cols, d, dims.scale(), (q, d, 1), (&k[j0 * d..], 1, d), 0.0, &mut s, BLOCK_K);
        for r in 0..rows {
            let row = &mut s[r * BLOCK_K..r * BLOCK_K + cols];
            let seen = dims.visible(i0 + r).saturating_sub(j0).min(cols);
            row[seen..].fill(f32::NEG_INFINITY);
            row[..pad.saturating_sub(j0).min(seen)].fill(f32::NEG_INFINITY);
            let m_new = m[r].max(simd::max_of(row));
            if m_new == f32::NEG_INFINITY {
                // Nothing visible to this row yet: exp(-inf - -inf) would be NaN.
                row.fill(0.0);
                continue;
            }
            let alpha = simd::exp(m[r] - m_new);
            simd::exp_shifted(row, m_new);
            l[r] = l[r] * alpha + simd::sum_of(row);
            m[r] = m_new;
            acc[r * d..(r + 1) * d].iter_mut().for_each(|a| *a *= alpha);
        }
        // acc += P V.
        gemm(rows, d, cols, 1.0, (&s, BLOCK_K, 1), (&v[j0 * d..], d, 1), 1.0, &mut acc, d);
    }
    let mut lse = vec![0f32; rows];
    for r in 0..rows {
        if l[r] == 0.0 {
            // A padding query that sees no key: output 0, and +inf makes backward's P exactly 0.
            lse[r] = f32::INFINITY;
            continue;
        }
        let inv = 1.0 / l[r];
        acc[r * d..(r + 1) * d].iter_mut().for_each(|a| *a *= inv);
        lse[r] = m[r] + l[r].ln();
    }
    (acc, lse)
}

/// Returns (dq, dk, dv), recomputing each score tile from q, k and the saved logsumexp.
pub fn backward(q: &[f32], k: &[f32], v: &[f32], out: &[f32], lse: &[f32], dout: &[f32], dims: Dims) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    backward_padded(q, k, v, out, lse, dout, dims, &[])
}

/// `backward` with leading padding keys per batch row (see the module doc).
#[allow(clippy::too_many_arguments)]
pub fn backward_padded(q: &[f32], k: &[f32], v: &[f32], out: &[f32], lse: &[f32], dout: &[f32], dims: Dims, key_pad: &[usize]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims { heads, tq, tk, d } = dims;
    let mut dq = vec![0f32; heads * tq * d];
    let mut dk = vec![0f32; heads * tk * d];
    let mut dv = vec![0f32; heads * tk * d];
    // One task per head: dq accumulates over key blocks and dk/dv over query blocks.
    dq.par_chunks_mut(tq * d)
        .zip(dk.par_chunks_mut(tk * d).zip(dv.par_chunks_mut(tk * d)))
        .enumerate()
        .for_each(|(h, (dq, (dk, dv)))| {
            let q = &q[h * tq * d..(h + 1) * tq * d];
            let (k, v) = (&k[h * tk * d..(h + 1) * tk * d], &v[h * tk * d..(h + 1) * tk * d]);
            let (o, g) = (&out[h * tq * d..(h + 1) * tq * d], &dout[h * tq * d..(h + 1) * tq * d]);
            backward_head(q, k, v, o, &lse[h * tq..(h + 1) * tq], g, dq, dk, dv, dims, pad_of(key_pad, h, heads));
        });
    (dq, dk, dv)
}

#[allow(clippy::too_many_arguments)]
fn backward_head(q: &[f32], k: &[f32], v: &[f32], o: &[f32], lse: &[f32], g: &[f32], dq: &mut [f32], dk: &mut [f32], dv: &mut [f32], dims: Dims, pad: usize) {
    let Dims { tq, tk, d, .. } = dims;
    let scale = dims.scale();
    // D_i = Σ_d dO·O: the row term of softmax's backward.
    let delta: Vec<f32> = (0..tq).map(|i| simd::dot(&g[i * d..(i + 1) * d], &o[i * d..(i + 1) * d])).collect();
    let mut p = vec![0f32; BLOCK_Q * BLOCK_K];
    let mut dp = vec![0f32; BLOCK_Q * BLOCK_K];
    for j0 in (pad - pad % BLOCK_K..tk).step_by(BLOCK_K) {
        let cols = BLOCK_K.min(tk - j0);
        let hidden = pad.saturating_sub(j0).min(cols);
        // First query row that sees key j0.
        let first = j0.saturating_sub(dims.offset());
        for i0 in (first - first % BLOCK_Q..tq).step_by(BLOCK_Q) {
            let rows = BLOCK_Q.min(tq - i0);
            let qi = &q[i0 * d..];
            gemm(rows, cols, d, scale, (qi, d, 1), (&k[j0 * d..], 1, d), 0.0, &mut p, BLOCK_K);
            for r in 0..rows {
                let seen = dims.visible(i0 + r).saturating_sub(j0).min(cols);
                let row = &mut p[r * BLOCK_K..r * BLOCK_K + cols];
                // Keys before `hidden` (padding) and from `seen` on (the future) get P = 0.
                let lo = hidden.min(seen);
                row[..lo].fill(0.0);
                row[seen..].fill(0.0);
                simd::exp_shifted(&mut row[lo..seen], lse[i0 + r]);
            }
            let gi = &g[i0 * d..];
            // dV_j += Pᵀ dO_i
            gemm(cols, d, rows, 1.0, (&p, 1, BLOCK_K), (gi, d, 1), 1.0, &mut dv[j0 * d..], d);
            // dP = dO_i V_jᵀ, then dS = P ⊙ (dP − D_i), kept in `dp`.
            gemm(rows, cols, d, 1.0, (gi, d, 1), (&v[j0 * d..], 1, d), 0.0, &mut dp, BLOCK_K);
            for r in 0..rows {
                let at = r * BLOCK_K..r * BLOCK_K + cols;
                simd::softmax_grad_row(&mut dp[at.clone()], &p[at], delta[i0 + r]);
            }
            // dQ_i += scale · dS K_j;  dK_j += scale · dSᵀ Q_i
            gemm(rows, d, cols, scale, (&dp, BLOCK_K, 1), (&k[j0 * d..], d, 1), 1.0, &mut dq[i0 * d..], d);
            gemm(cols, d, rows, scale, (&dp, 1, BLOCK_K), (qi, d, 1), 1.0, &mut dk[j0 * d..], d);
        }
    }
}
