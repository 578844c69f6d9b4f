//! Packing of operand blocks into contiguous, zero-padded micro-panels.

/// Packs a `kc × w_eff` slice into a panel `dst[p*w + i] = src[i*s_w + p*s_k]`, zero-padding
/// columns `w_eff..w`.
///
/// # Safety
/// `src` must be valid for the strided reads, `dst` for `kc*w` writes.
#[inline]
unsafe fn pack_panel(kc: usize, w_eff: usize, w: usize, src: *const f32, s_w: usize, s_k: usize, dst: *mut f32) {
    // SAFETY: extents guaranteed by the caller.
    unsafe {
        if s_w == 1 {
            for p in 0..kc {
                let s = src.add(p * s_k);
                let d = dst.add(p * w);
                std::ptr::copy_nonoverlapping(s, d, w_eff);
                for i in w_eff..w {
                    *d.add(i) = 0.0;
                }
            }
        } else {
            // Blocked over k so the written span stays in L1 while each source row is read
            // in contiguous-ish chunks.
            const PB: usize = 16;
            let mut p0 = 0;
            while p0 < kc {
                let pe = (p0 + PB).min(kc);
                for i in 0..w_eff {
                    let s = src.add(i * s_w);
                    for p in p0..pe {
                        *dst.add(p * w + i) = *s.add(p * s_k);
                    }
                }
                p0 = pe;
            }
            for p in 0..kc {
                for i in w_eff..w {
                    *dst.add(p * w + i) = 0.0;
                }
            }
        }
    }
}

/// Packs rows of A: `dst[p*mr + i] = A(i, p)` for the `mr_eff × kc` block at `src`.
///
/// # Safety
/// See [`pack_panel`].
pub(crate) unsafe fn pack_a(kc: usize, mr_eff: usize, mr: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
    unsafe { pack_panel(kc, mr_eff, mr, src, rs, cs, dst) }
}

/// Packs columns of B: `dst[p*nr + j] = B(p, j)` for the `kc × nr_eff` block at `src`.
///
/// # Safety
/// See [`pack_panel`].
pub(crate) unsafe fn pack_b(kc: usize, nr_eff: usize, nr: usize, src: *const f32, rs: usize, cs: usize, dst: *mut f32) {
    unsafe { pack_panel(kc, nr_eff, nr, src, cs, rs, dst) }
}
