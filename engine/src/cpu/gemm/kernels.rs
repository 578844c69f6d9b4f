#![allow(clippy::needless_range_loop)] // register-tile loops index several arrays in lockstep
//! Micro-kernels. Each computes a full MR×NR tile
//! `C[i*rs_c + j] = alpha * sum_p A[p*MR + i] * B[p*NR + j] + beta * C[...]`
//! from packed panels (A: kc×MR, B: kc×NR, both contiguous). `beta == 0` means C is not read.
//! The driver only passes C tiles with unit column stride; edge/strided tiles go through a temp tile.

/// Signature shared by all micro-kernels.
///
/// # Safety
/// `a` must hold `kc*MR` floats, `b` must hold `kc*NR` floats (64-byte aligned for the SIMD
/// kernels), and `c` must be valid for reads/writes of `MR` rows of `NR` contiguous floats with
/// row stride `rs_c`.
pub(crate) type KernelFn =
    unsafe fn(kc: usize, a: *const f32, b: *const f32, c: *mut f32, rs_c: usize, alpha: f32, beta: f32);

/// Portable micro-kernel (plain Rust; LLVM vectorizes the NR-wide rows).
pub(crate) const PORT_MR: usize = 4;
pub(crate) const PORT_NR: usize = 16;

/// # Safety
/// See [`KernelFn`].
pub(crate) unsafe fn kernel_portable(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rs_c: usize,
    alpha: f32,
    beta: f32,
) {
    const MR: usize = PORT_MR;
    const NR: usize = PORT_NR;
    let mut acc = [[0.0f32; NR]; MR];
    // SAFETY: caller guarantees panel sizes.
    let a = unsafe { std::slice::from_raw_parts(a, kc * MR) };
    let b = unsafe { std::slice::from_raw_parts(b, kc * NR) };
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        let bp: &[f32; NR] = bp.try_into().unwrap();
        for i in 0..MR {
            let av = ap[i];
            for j in 0..NR {
                acc[i][j] += av * bp[j];
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: caller guarantees MR rows of NR floats at stride rs_c.
        let cr = unsafe { std::slice::from_raw_parts_mut(c.add(i * rs_c), NR) };
        if beta == 0.0 {
            for j in 0..NR {
                cr[j] = alpha * row[j];
            }
        } else {
            for j in 0..NR {
                cr[j] = alpha * row[j] + beta * cr[j];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    pub(crate) const AVX512_MR: usize = 14;
    pub(crate) const AVX512_NV: usize = 2; // NR = 16 * NV
    pub(crate) const AVX512_NR: usize = 16 * AVX512_NV;

    pub(crate) const AVX2_MR: usize = 6;
    pub(crate) const AVX2_NV: usize = 2; // NR = 8 * NV
    pub(crate) const AVX2_NR: usize = 8 * AVX2_NV;

    /// # Safety
    /// See [`super::KernelFn`]; the CPU must support avx512f.
    pub(crate) unsafe fn kernel_avx512(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        rs_c: usize,
        alpha: f32,
        beta: f32,
    ) {
        // SAFETY: dispatch only selects this kernel when avx512f is detected.
        unsafe { kern512::<AVX512_MR, AVX512_NV>(kc, a, b, c, rs_c, alpha, beta) }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn kern512<const MR: usize, const NV: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        rs_c: usize,
        alpha: f32,
        beta: f32,
    ) {
        let nr = 16 * NV;
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        // SAFETY (whole body): panel/tile extents are guaranteed by the caller.
        unsafe {
            for i in 0..MR {
                _mm_prefetch::<_MM_HINT_T0>(c.add(i * rs_c) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(c.add(i * rs_c + nr - 1) as *const i8);
            }
            let mut ap = a;
            let mut bp = b;
            let mut p = 0;
            while p + 4 <= kc {
                for u in 0..4 {
                    let mut bv = [_mm512_setzero_ps(); NV];
                    for v in 0..NV {
                        bv[v] = _mm512_load_ps(bp.add(u * nr + 16 * v));
                    }
                    for i in 0..MR {
                        let av = _mm512_set1_ps(*ap.add(u * MR + i));
                        for v in 0..NV {
                            acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
                        }
                    }
                }
                ap = ap.add(4 * MR);
                bp = bp.add(4 * nr);
                p += 4;
            }
            while p < kc {
                let mut bv = [_mm512_setzero_ps(); NV];
                for v in 0..NV {
                    bv[v] = _mm512_load_ps(bp.add(16 * v));
                }
                for i in 0..MR {
                    let av = _mm512_set1_ps(*ap.add(i));
                    for v in 0..NV {
                        acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
                    }
                }
                ap = ap.add(MR);
                bp = bp.add(nr);
                p += 1;
            }
            let va = _mm512_set1_ps(alpha);
            if beta == 0.0 {
                for i in 0..MR {
                    for v in 0..NV {
                        _mm512_storeu_ps(c.add(i * rs_c + 16 * v), _mm512_mul_ps(va, acc[i][v]));
                    }
                }
            } else {
                let vb = _mm512_set1_ps(beta);
                for i in 0..MR {
                    for v in 0..NV {
                        let cp = c.add(i * rs_c + 16 * v);
                        let old = _mm512_loadu_ps(cp);
                        _mm512_storeu_ps(cp, _mm512_fmadd_ps(va, acc[i][v], _mm512_mul_ps(vb, old)));
                    }
                }
            }
        }
    }

    /// # Safety
    /// See [`super::KernelFn`]; the CPU must support avx2 and fma.
    pub(crate) unsafe fn kernel_avx2(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        rs_c: usize,
        alpha: f32,
        beta: f32,
    ) {
        // SAFETY: dispatch only selects this kernel when avx2+fma are detected.
        unsafe { kern256::<AVX2_MR, AVX2_NV>(kc, a, b, c, rs_c, alpha, beta) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn kern256<const MR: usize, const NV: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        rs_c: usize,
        alpha: f32,
        beta: f32,
    ) {
        let nr = 8 * NV;
        let mut acc = [[_mm256_setzero_ps(); NV]; MR];
        // SAFETY (whole body): panel/tile extents are guaranteed by the caller.
        unsafe {
            let mut ap = a;
            let mut bp = b;
            let mut p = 0;
            while p + 4 <= kc {
                for u in 0..4 {
                    let mut bv = [_mm256_setzero_ps(); NV];
                    for v in 0..NV {
                        bv[v] = _mm256_load_ps(bp.add(u * nr + 8 * v));
                    }
                    for i in 0..MR {
                        let av = _mm256_broadcast_ss(&*ap.add(u * MR + i));
                        for v in 0..NV {
                            acc[i][v] = _mm256_fmadd_ps(av, bv[v], acc[i][v]);
                        }
                    }
                }
                ap = ap.add(4 * MR);
                bp = bp.add(4 * nr);
                p += 4;
            }
            while p < kc {
                let mut bv = [_mm256_setzero_ps(); NV];
                for v in 0..NV {
                    bv[v] = _mm256_load_ps(bp.add(8 * v));
                }
                for i in 0..MR {
                    let av = _mm256_broadcast_ss(&*ap.add(i));
                    for v in 0..NV {
                        acc[i][v] = _mm256_fmadd_ps(av, bv[v], acc[i][v]);
                    }
                }
                ap = ap.add(MR);
                bp = bp.add(nr);
                p += 1;
            }
            let va = _mm256_set1_ps(alpha);
            if beta == 0.0 {
                for i in 0..MR {
                    for v in 0..NV {
                        _mm256_storeu_ps(c.add(i * rs_c + 8 * v), _mm256_mul_ps(va, acc[i][v]));
                    }
                }
            } else {
                let vb = _mm256_set1_ps(beta);
                for i in 0..MR {
                    for v in 0..NV {
                        let cp = c.add(i * rs_c + 8 * v);
                        let old = _mm256_loadu_ps(cp);
                        _mm256_storeu_ps(cp, _mm256_fmadd_ps(va, acc[i][v], _mm256_mul_ps(vb, old)));
                    }
                }
            }
        }
    }
}
