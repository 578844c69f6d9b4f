//! Skinny GEMM (few rows of A, m <= [`MAX_M`]): C = alpha·A·B + beta·C without packing B.
//!
//! The packed path copies all of B into panels before using each element m times; with m = 8
//! (decoding 8 sequences: the LM head multiplies [8, C] by wteᵀ [C, 50257]) packing costs more
//! than the product. Here B is streamed once, straight from its storage, and split over threads
//! by columns:
//! - B with contiguous columns (`rs == 1`, e.g. a transposed view of a [N, K] weight): each
//!   C(i, j) is a dot product of A's row i and B's column j, 4 columns × 4 rows at a time;
//! - B with contiguous rows (`cs == 1`): C's rows accumulate A(i, p)·B(p, j0..j0+64) over p,
//!   4 rows × 64 columns at a time.

use super::{Isa, SendPtr};
use rayon::prelude::*;

/// Largest m served here.
pub(crate) const MAX_M: usize = 16;
/// Columns per block in the row-major case.
const NB: usize = 64;

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
    let run = |j0: usize| {
        let j1 = (j0 + chunk).min(n);
        let w = j1 - j0;
        let mut acc = vec![0f32; m * w];
        // SAFETY: columns [j0, j1) of B and C are inside the checked extents; each task owns its
        // columns of C.
        unsafe {
            let bp = bs.get().add(j0 * csb) as *const f32;
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => block_avx512(m, w, k, av, bp, rsb, csb, &mut acc),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => block_avx2(m, w, k, av, bp, rsb, csb, &mut acc),
                _ => block(m, w, k, av, bp, rsb, csb, &mut acc),
            }
            for i in 0..m {
                for j in 0..w {
                    let cp = cs.get().add(i * rsc + (j0 + j) * csc);
                    let v = alpha * acc[i * w + j];
                    *cp = if beta == 0.0 { v } else { v + beta * *cp };
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx512(m: usize, w: usize, k: usize, a: &[f32], b: *const f32, rsb: usize, csb: usize, acc: &mut [f32]) {
    // SAFETY: forwarded.
    unsafe {
        if rsb == 1 {
            dots_avx512(m, w, k, a, b, csb, acc)
        } else {
            block(m, w, k, a, b, rsb, csb, acc)
        }
    }
}

/// Dot-product case (B's columns contiguous, `cs` apart) with explicit AVX-512: 4 columns × 4
/// rows of accumulators, k in steps of 16 with a masked tail.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dots_avx512(m: usize, w: usize, k: usize, a: &[f32], b: *const f32, cs: usize, acc: &mut [f32]) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): B columns j < w hold k floats from b + j·cs; A is m×k contiguous.
    unsafe {
        let ap = a.as_ptr();
        let tail = (k % 16) as u32;
        let mask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
        let k16 = k - k % 16;
        let mut j = 0;
        while j < w {
            let nc = 4.min(w - j);
            let cp: [*const f32; 4] = std::array::from_fn(|c| b.add((j + c.min(nc - 1)) * cs));
            let mut i = 0;
            while i < m {
                let nr = 4.min(m - i);
                let rp: [*const f32; 4] = std::array::from_fn(|r| ap.add((i + r.min(nr - 1)) * k));
                let mut s = [[_mm512_setzero_ps(); 4]; 4];
                let mut p = 0;
                while p < k16 {
                    let bv: [__m512; 4] = std::array::from_fn(|c| _mm512_loadu_ps(cp[c].add(p)));
                    for r in 0..4 {
                        let av = _mm512_loadu_ps(rp[r].add(p));
                        for c in 0..4 {
                            s[r][c] = _mm512_fmadd_ps(av, bv[c], s[r][c]);
                        }
                    }
                    p += 16;
                }
                if tail != 0 {
                    let bv: [__m512; 4] = std::array::from_fn(|c| _mm512_maskz_loadu_ps(mask, cp[c].add(p)));
                    for r in 0..4 {
                        let av = _mm512_maskz_loadu_ps(mask, rp[r].add(p));
                        for c in 0..4 {
                            s[r][c] = _mm512_fmadd_ps(av, bv[c], s[r][c]);
                        }
                    }
                }
                for r in 0..nr {
                    for c in 0..nc {
                        acc[(i + r) * w + j + c] = _mm512_reduce_add_ps(s[r][c]);
                    }
                }
                i += 4;
            }
            j += 4;
        }
    }
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
