//! Skinny GEMM (few rows of A, m <= [`MAX_M`]): C = alpha·A·B + beta·C without packing B.
//!
//! The packed path copies all of B into panels before using each element m times; with m = 8
//! (decoding 8 sequences: the LM head multiplies [8, C] by wteᵀ [C, 50257]) packing costs more
//! than the product. Here B is streamed once, straight from its storage, and split over threads
//! by columns:
//! - B with contiguous columns (`rs == 1`, e.g. a transposed view of a [N, K] weight): each
//!   C(i, j) is a dot product of A's row i and B's column j, 8 rows × 2 columns at a time;
//! - B with contiguous rows (`cs == 1`): C's rows accumulate A(i, p)·B(p, j0..j0+32) over p,
//!   8 rows × 32 columns at a time.
//!
//! B comes from DRAM (wte is 51 MB, and it evicts the layers' weights every decode step), and
//! the kernels, with eight A loads between B's, keep too few cache misses in flight: about
//! 10 GB/s on one Zen 5 core. So each block of B (64 columns, or ~256 KiB of rows) is first
//! touched, one read per cache line: a burst that the core overlaps, ~37 GB/s. Then it is
//! multiplied from L2. The 8x50257x256 LM head on one thread: 5.4 -> 2.0 ms.

use super::{Isa, SendPtr};
use rayon::prelude::*;

/// Largest m served here.
pub(crate) const MAX_M: usize = 16;
/// Columns per block in the row-major case.
const NB: usize = 64;
/// Floats of B per touched block in the row-major case.
const ROW_BLOCK: usize = 64 * 1024;

/// Whether `skinny` handles this problem (B needs unit stride along one dim).
pub(crate) fn applies(m: usize, n: usize, k: usize, rsb: usize, csb: usize) -> bool {
    m <= MAX_M && n >= 64 && k >= 16 && (rsb == 1 || csb == 1)
}

/// # Safety
/// Pointers valid for the strided extents (A m×k, B k×n, C m×n), C's elements pairwise distinct.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn skinny(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    rsb: usize,
    csb: usize,
    beta: f32,
    c: *mut f32,
    rsc: usize,
    csc: usize,
) {
    // Contiguous copy of A (m×k, small) so the inner loops are unit-stride.
    let mut av = vec![0f32; m * k];
    for i in 0..m {
        for p in 0..k {
            // SAFETY: inside A's checked extent.
            av[i * k + p] = unsafe { *a.add(i * rsa + p * csa) };
        }
    }
    let work = (m * n * k) as f64;
    let nt = rayon::current_num_threads().clamp(1, (work / 2.0e6) as usize + 1);
    // A few chunks per thread for balance, multiples of NB columns.
    let parts = if nt > 1 { nt * 4 } else { 1 };
    let chunk = n.div_ceil(parts).next_multiple_of(NB);
    let (bs, cs) = (SendPtr(b as *mut f32), SendPtr(c));
    let av = &av;
    // Columns per touched block: 64 for dot products (64 columns of k); for row updates enough
    // for ~256 KiB of B, so that each row's part is a long contiguous run.
    let nb = if rsb == 1 { NB } else { (ROW_BLOCK / k).max(NB) / NB * NB }.min(chunk);
    let run = |j0: usize| {
        let mut acc = vec![0f32; m * nb];
        let j1 = (j0 + chunk).min(n);
        for jb in (j0..j1).step_by(nb) {
            let w = nb.min(j1 - jb);
            // SAFETY: columns [jb, jb + w) of B and C are inside the checked extents; each task
            // owns its columns of C.
            unsafe {
                let bp = bs.get().add(jb * csb) as *const f32;
                touch(bp, k, w, rsb, csb);
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => block_avx512(m, w, k, av, bp, rsb, csb, &mut acc),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => block_avx2(m, w, k, av, bp, rsb, csb, &mut acc),
                    _ => block(m, w, k, av, bp, rsb, csb, &mut acc),
                }
                for i in 0..m {
                    store_row(&acc[i * w..(i + 1) * w], cs.get().add(i * rsc + jb * csc), csc, alpha, beta);
                }
            }
        }
    };
    if nt > 1 {
        (0..n).step_by(chunk).collect::<Vec<_>>().into_par_iter().for_each(run);
    } else {
        run(0);
    }
}

/// C's row segment at `c` (stride `cs`) = alpha·acc + beta·C (C not read when beta is 0).
///
/// # Safety
/// `c` must be valid for `acc.len()` elements `cs` apart.
#[inline(always)]
unsafe fn store_row(acc: &[f32], c: *mut f32, cs: usize, alpha: f32, beta: f32) {
    // SAFETY: forwarded.
    unsafe {
        if cs == 1 {
            let row = std::slice::from_raw_parts_mut(c, acc.len());
            if beta == 0.0 {
                row.iter_mut().zip(acc).for_each(|(o, &v)| *o = alpha * v);
            } else {
                row.iter_mut().zip(acc).for_each(|(o, &v)| *o = alpha * v + beta * *o);
            }
        } else {
            for (j, &v) in acc.iter().enumerate() {
                let o = c.add(j * cs);
                *o = if beta == 0.0 { alpha * v } else { alpha * v + beta * *o };
            }
        }
    }
}

/// Reads one float of every cache line of B's k×w block at `b` (see the module doc).
///
/// # Safety
/// The block's strided extent must be readable.
unsafe fn touch(b: *const f32, k: usize, w: usize, rs: usize, cs: usize) {
    // Runs of contiguous floats: the columns (rs == 1) or the rows (cs == 1), or all of it.
    let (mut runs, mut len, stride) = if rs == 1 { (w, k, cs) } else { (k, w, rs) };
    if stride == len {
        (runs, len) = (1, runs * len);
    }
    for r in 0..runs {
        // SAFETY: inside the block; the last float covers a partial last line.
        unsafe {
            let p = b.add(r * stride);
            for t in (0..len).step_by(16) {
                std::ptr::read_volatile(p.add(t));
            }
            std::ptr::read_volatile(p.add(len - 1));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx512(m: usize, w: usize, k: usize, a: &[f32], b: *const f32, rsb: usize, csb: usize, acc: &mut [f32]) {
    // SAFETY: forwarded.
    unsafe {
        if rsb == 1 {
            dots_avx512(m, w, k, a, b, csb, acc)
        } else {
            rows_avx512(m, w, k, a, b, rsb, acc)
        }
    }
}

/// Row case (B's rows contiguous, `rs` apart) with explicit AVX-512: 8 rows × 32 columns of
/// accumulators, so each element of B is loaded once per 8 rows of A; A(i, p) is broadcast.
/// Fewer than 8 rows repeat the last (computed, not stored); a column tail is masked.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_avx512(m: usize, w: usize, k: usize, a: &[f32], b: *const f32, rs: usize, acc: &mut [f32]) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): B rows p < k hold w floats from b + p·rs (loads masked to them); A is
    // m×k contiguous; acc holds m×w.
    unsafe {
        let (ap, cp) = (a.as_ptr(), acc.as_mut_ptr());
        let mut j = 0;
        while j < w {
            let nc = 32.min(w - j);
            let mask = |h: usize| -> __mmask16 { ((1u32 << nc.saturating_sub(16 * h).min(16)) - 1) as __mmask16 };
            let (m0, m1) = (mask(0), mask(1));
            let mut i = 0;
            while i < m {
                let nr = 8.min(m - i);
                let rp: [*const f32; 8] = std::array::from_fn(|r| ap.add((i + r.min(nr - 1)) * k));
                let mut s = [[_mm512_setzero_ps(); 2]; 8];
                for p in 0..k {
                    let row = b.add(p * rs + j);
                    let b0 = _mm512_maskz_loadu_ps(m0, row);
                    let b1 = _mm512_maskz_loadu_ps(m1, row.add(16));
                    for r in 0..8 {
                        let x = _mm512_set1_ps(*rp[r].add(p));
                        s[r][0] = _mm512_fmadd_ps(x, b0, s[r][0]);
                        s[r][1] = _mm512_fmadd_ps(x, b1, s[r][1]);
                    }
                }
                for (r, sr) in s.iter().enumerate().take(nr) {
                    let out = cp.add((i + r) * w + j);
                    _mm512_mask_storeu_ps(out, m0, sr[0]);
                    _mm512_mask_storeu_ps(out.add(16), m1, sr[1]);
                }
                i += 8;
            }
            j += 32;
        }
    }
}

/// Dot-product case (B's columns contiguous, `cs` apart) with explicit AVX-512: 8 rows × 2
/// columns of accumulators over k (masked tail), so each element of B is loaded once per 8 rows
/// of A, then one transposing reduction of all 16. Missing rows/columns repeat the last.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dots_avx512(m: usize, w: usize, k: usize, a: &[f32], b: *const f32, cs: usize, acc: &mut [f32]) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): B columns j < w hold k floats from b + j·cs (the tail's loads masked
    // to them); A is m×k contiguous.
    unsafe {
        let ap = a.as_ptr();
        let k16 = k - k % 16;
        let tail: __mmask16 = ((1u32 << (k % 16)) - 1) as __mmask16;
        let mut j = 0;
        while j < w {
            let nc = 2.min(w - j);
            let cp: [*const f32; 2] = std::array::from_fn(|c| b.add((j + c.min(nc - 1)) * cs));
            let mut i = 0;
            while i < m {
                let nr = 8.min(m - i);
                let rp: [*const f32; 8] = std::array::from_fn(|r| ap.add((i + r.min(nr - 1)) * k));
                // s[2r + c]: row r times column c.
                let mut s = [_mm512_setzero_ps(); 16];
                let mut step = |p: usize, mk: __mmask16| {
                    let bv = [_mm512_maskz_loadu_ps(mk, cp[0].add(p)), _mm512_maskz_loadu_ps(mk, cp[1].add(p))];
                    for r in 0..8 {
                        let av = _mm512_maskz_loadu_ps(mk, rp[r].add(p));
                        for c in 0..2 {
                            s[2 * r + c] = _mm512_fmadd_ps(av, bv[c], s[2 * r + c]);
                        }
                    }
                };
                for p in (0..k16).step_by(16) {
                    step(p, !0);
                }
                if tail != 0 {
                    step(k16, tail);
                }
                // Ordered so that lane 2r + c of the reduction is Σ s[2r + c].
                let v: [__m512; 16] = std::array::from_fn(|x| s[4 * (x % 4) + x / 4]);
                let sums = reduce16(v);
                if nr == 8 && nc == 2 {
                    // Quarter q holds rows 2q and 2q + 1: one 64-bit store per row, no round trip
                    // through memory.
                    let q: [__m128d; 4] = [
                        _mm_castps_pd(_mm512_extractf32x4_ps::<0>(sums)),
                        _mm_castps_pd(_mm512_extractf32x4_ps::<1>(sums)),
                        _mm_castps_pd(_mm512_extractf32x4_ps::<2>(sums)),
                        _mm_castps_pd(_mm512_extractf32x4_ps::<3>(sums)),
                    ];
                    let out = acc.as_mut_ptr().add(i * w + j);
                    for r in 0..8 {
                        let row = out.add(r * w) as *mut f64;
                        if r % 2 == 0 {
                            _mm_storel_pd(row, q[r / 2]);
                        } else {
                            _mm_storeh_pd(row, q[r / 2]);
                        }
                    }
                } else {
                    let mut lanes = [0f32; 16];
                    _mm512_storeu_ps(lanes.as_mut_ptr(), sums);
                    for r in 0..nr {
                        let at = (i + r) * w + j;
                        acc[at..at + nc].copy_from_slice(&lanes[2 * r..2 * r + nc]);
                    }
                }
                i += 8;
            }
            j += 2;
        }
    }
}

/// The 16 horizontal sums at once: lane L of the result is the sum of all lanes of
/// `v[L/4 + 4·(L%4)]`, by halving four times (15 adds instead of 16 separate reductions).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn reduce16(v: [std::arch::x86_64::__m512; 16]) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // Pairs: lanes 0-7 hold 8 partial sums of the first, 8-15 of the second.
    let l1: [__m512; 8] = std::array::from_fn(|i| {
        let (x, y) = (v[2 * i], v[2 * i + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(x, y), _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y))
    });
    // Quarter q of l2[i]: 4 partial sums of v[4i + q].
    let l2: [__m512; 4] = std::array::from_fn(|i| {
        let (x, y) = (l1[2 * i], l1[2 * i + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(x, y), _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y))
    });
    // Within each quarter q of l3[i]: 2 partial sums each of v[8i + q] and v[8i + 4 + q], interleaved.
    let l3: [__m512; 2] = std::array::from_fn(|i| {
        let (x, y) = (l2[2 * i], l2[2 * i + 1]);
        _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y))
    });
    // Quarter q: the sums of v[q], v[4 + q], v[8 + q], v[12 + q].
    let (x, y) = (_mm512_castps_pd(l3[0]), _mm512_castps_pd(l3[1]));
    _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx2(m: usize, w: usize, k: usize, a: &[f32], b: *const f32, rsb: usize, csb: usize, acc: &mut [f32]) {
    // SAFETY: forwarded.
    unsafe { block(m, w, k, a, b, rsb, csb, acc) }
}

/// acc[i·w + j] = Σ_p A(i, p)·B(p, j) for the w columns at `b` (A contiguous m×k).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block(m: usize, w: usize, k: usize, a: &[f32], b: *const f32, rsb: usize, csb: usize, acc: &mut [f32]) {
    // SAFETY (whole body): the caller guarantees B's strided extent (k×w from `b`).
    unsafe {
        if rsb == 1 {
            let k16 = k - k % 16;
            let mut j = 0;
            while j < w {
                let nc = 4.min(w - j);
                let cols: [&[f32]; 4] = std::array::from_fn(|c| std::slice::from_raw_parts(b.add((j + c.min(nc - 1)) * csb), k));
                let mut i = 0;
                while i < m {
                    let nr = 4.min(m - i);
                    let rows: [&[f32]; 4] = std::array::from_fn(|r| &a[(i + r.min(nr - 1)) * k..(i + r.min(nr - 1) + 1) * k]);
                    let mut s = [[[0f32; 16]; 4]; 4];
                    let mut p = 0;
                    while p < k16 {
                        for c in 0..4 {
                            let bc = &cols[c][p..p + 16];
                            for r in 0..4 {
                                let ar = &rows[r][p..p + 16];
                                for l in 0..16 {
                                    s[r][c][l] = ar[l].mul_add(bc[l], s[r][c][l]);
                                }
                            }
                        }
                        p += 16;
                    }
                    for r in 0..nr {
                        for c in 0..nc {
                            let mut t: f32 = s[r][c].iter().sum();
                            for q in k16..k {
                                t += rows[r][q] * cols[c][q];
                            }
                            acc[(i + r) * w + j + c] = t;
                        }
                    }
                    i += 4;
                }
                j += 4;
            }
        } else {
            debug_assert_eq!(csb, 1);
            let mut j = 0;
            while j < w {
                let nc = NB.min(w - j);
                let mut i = 0;
                while i < m {
                    let nr = 4.min(m - i);
                    let mut s = [[0f32; NB]; 4];
                    if nc == NB {
                        for p in 0..k {
                            let row = std::slice::from_raw_parts(b.add(p * rsb + j), NB);
                            for r in 0..4 {
                                let x = a[(i + r.min(nr - 1)) * k + p];
                                for l in 0..NB {
                                    s[r][l] = x.mul_add(row[l], s[r][l]);
                                }
                            }
                        }
                    } else {
                        for p in 0..k {
                            let row = std::slice::from_raw_parts(b.add(p * rsb + j), nc);
                            for r in 0..nr {
                                let x = a[(i + r) * k + p];
                                for l in 0..nc {
                                    s[r][l] += x * row[l];
                                }
                            }
                        }
                    }
                    for r in 0..nr {
                        acc[(i + r) * w + j..(i + r) * w + j + nc].copy_from_slice(&s[r][..nc]);
                    }
                    i += 4;
                }
                j += NB;
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    #[test]
    fn reduce16_lane_order() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        use std::arch::x86_64::*;
        // v[i] holds 2^i in one lane (a different one each), so each sum names its source.
        let mut got = [0f32; 16];
        // SAFETY: AVX-512 checked above.
        unsafe {
            let v: [__m512; 16] = std::array::from_fn(|i| {
                let mut x = [0f32; 16];
                x[(i * 5) % 16] = (1u32 << i) as f32;
                _mm512_loadu_ps(x.as_ptr())
            });
            _mm512_storeu_ps(got.as_mut_ptr(), super::reduce16(v));
        }
        for (l, g) in got.iter().enumerate() {
            assert_eq!(*g, (1u32 << (l / 4 + 4 * (l % 4))) as f32, "lane {l}");
        }
    }
}
