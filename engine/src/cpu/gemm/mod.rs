//! CPU single-precision GEMM (BLIS/GotoBLAS style).
//!
//! Structure: for each NC-column block of B and KC-deep slice of K, B is packed into NR-column
//! micro-panels (shared by all threads); each thread then packs MC-row blocks of A into MR-row
//! micro-panels and runs an MR×NR register-blocked micro-kernel over its share of the tiles.
//! Packing handles arbitrary strides (transposed operands cost nothing extra) and pads edges
//! with zeros; edge tiles of C go through a small temporary tile.
//!
//! Micro-kernels are chosen at runtime (`is_x86_feature_detected!`): AVX-512 (14×32),
//! AVX2+FMA (6×16) and a portable plain-Rust fallback (4×16).

mod gemv;
mod kernels;
mod pack;
mod skinny;

use kernels::KernelFn;
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::OnceLock;

/// A strided matrix operand: element (i, j) is at `data[offset + i*rs + j*cs]` (strides in
/// elements, may be any positive value, so transposed views cost nothing).
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

/// Mutable strided matrix operand: element (i, j) is at `data[offset + i*rs + j*cs]`.
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

/// Micro-kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Isa {
    fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2+fma",
            Isa::Portable => "portable",
        }
    }

    /// Whether the running CPU can execute this kernel family.
    pub(crate) fn supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
            }
            Isa::Portable => true,
        }
    }

    /// Register-tile shape and cache blocking. Measured on Zen 5 (48 KiB L1d, 1 MiB L2):
    /// kc in 384..512 and mc in 84..168 are all within noise of each other.
    fn params(self) -> Params {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Params {
                mr: kernels::x86::AVX512_MR,
                nr: kernels::x86::AVX512_NR,
                kc: 384,
                mc: 14 * 12,
                nc: 4096,
                kernel: kernels::x86::kernel_avx512,
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Params {
                mr: kernels::x86::AVX2_MR,
                nr: kernels::x86::AVX2_NR,
                kc: 256,
                mc: 6 * 24,
                nc: 4096,
                kernel: kernels::x86::kernel_avx2,
            },
            Isa::Portable => Params {
                mr: kernels::PORT_MR,
                nr: kernels::PORT_NR,
                kc: 256,
                mc: 64,
                nc: 2048,
                kernel: kernels::kernel_portable,
            },
        }
    }
}

#[derive(Clone, Copy)]
struct Params {
    mr: usize,
    nr: usize,
    kc: usize,
    mc: usize,
    nc: usize,
    kernel: KernelFn,
}

fn detect() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if Isa::Avx512.supported() {
                return Isa::Avx512;
            }
            if Isa::Avx2.supported() {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    })
}

/// Which micro-kernel runtime dispatch picked ("avx512", "avx2+fma", "portable").
pub fn isa_name() -> &'static str {
    detect().name()
}

/// C = alpha * A·B + beta * C, A is m×k, B is k×n, C is m×n. beta == 0 means C is not read
/// (may hold NaN). Uses the current rayon pool (callers install a pool to choose threads);
/// small problems stay single-threaded.
///
/// Panics if an operand's largest touched index is outside its `data`, or if C's strides could
/// make two elements of C alias.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(m: usize, n: usize, k: usize, alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) {
    sgemm_with(detect(), m, n, k, alpha, a, b, beta, c)
}

fn max_index(rows: usize, cols: usize, offset: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(offset)
}

fn check_operand(name: &str, rows: usize, cols: usize, len: usize, offset: usize, rs: usize, cs: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    let max = max_index(rows, cols, offset, rs, cs);
    assert!(
        matches!(max, Some(mx) if mx < len),
        "sgemm: operand {name} ({rows}x{cols}, offset {offset}, rs {rs}, cs {cs}) exceeds its data (len {len})"
    );
}

/// Same as [`sgemm`] but with an explicit micro-kernel family (must be supported by the CPU).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_with(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: MatMut,
) {
    assert!(isa.supported(), "sgemm: kernel {} not supported on this CPU", isa.name());
    check_operand("A", m, k, a.data.len(), a.offset, a.rs, a.cs);
    check_operand("B", k, n, b.data.len(), b.offset, b.rs, b.cs);
    check_operand("C", m, n, c.data.len(), c.offset, c.rs, c.cs);
    if m == 0 || n == 0 {
        return;
    }
    // C must not alias itself (tiles are written concurrently): require a row- or column-major
    // style layout (possibly padded).
    assert!(
        m == 1
            || n == 1
            || (c.rs >= 1 && c.cs >= 1 && (c.rs >= c.cs * n || c.cs >= c.rs * m)),
        "sgemm: C strides (rs {}, cs {}) alias for a {m}x{n} matrix",
        c.rs,
        c.cs
    );
    // SAFETY: all three operands were bounds-checked above; C is exclusively borrowed and its
    // elements are pairwise distinct (checked above); A and B are shared borrows and cannot
    // overlap C (Rust borrow rules).
    unsafe {
        let cp = c.data.as_mut_ptr().add(c.offset);
        if k == 0 || alpha == 0.0 {
            scale_c(m, n, beta, cp, c.rs, c.cs);
            return;
        }
        let ap = a.data.as_ptr().add(a.offset);
        let bp = b.data.as_ptr().add(b.offset);
        if m == 1 || n == 1 {
            let g = if m == 1 {
                // y = C row 0 (n), M(j, p) = B(p, j), x = A row 0.
                gemv::Gemv { rows: n, k, m: bp, s_i: b.cs, s_p: b.rs, x: ap, s_x: a.cs, y: cp, s_y: c.cs }
            } else {
                // y = C column 0 (m), M = A, x = B column 0.
                gemv::Gemv { rows: m, k, m: ap, s_i: a.rs, s_p: a.cs, x: bp, s_x: b.rs, y: cp, s_y: c.rs }
            };
            gemv::gemv(isa, g, alpha, beta);
            return;
        }
        if skinny::applies(m, n, k, b.rs, b.cs) {
            skinny::skinny(isa, m, n, k, alpha, ap, a.rs, a.cs, bp, b.rs, b.cs, beta, cp, c.rs, c.cs);
            return;
        }
        gemm_impl(isa.params(), m, n, k, alpha, ap, a.rs, a.cs, bp, b.rs, b.cs, beta, cp, c.rs, c.cs);
    }
}

/// C = beta * C (beta == 0 writes zeros without reading).
unsafe fn scale_c(m: usize, n: usize, beta: f32, c: *mut f32, rs: usize, cs: usize) {
    for i in 0..m {
        for j in 0..n {
            // SAFETY: (i, j) is inside the checked C extent.
            unsafe {
                let p = c.add(i * rs + j * cs);
                *p = if beta == 0.0 { 0.0 } else { beta * *p };
            }
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: used only to share buffers whose concurrent accesses are to disjoint regions
// (or read-only after a join point).
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    #[inline(always)]
    fn get(self) -> *mut T {
        self.0
    }
}

thread_local! {
    static BUF_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BUF_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a 64-byte-aligned scratch buffer of at least `len` floats taken from the
/// thread-local `key` (a fresh allocation if it is already in use, e.g. re-entrant calls).
fn with_buf<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(*mut f32) -> R,
) -> R {
    fn aligned(v: &mut Vec<f32>, len: usize) -> *mut f32 {
        if v.len() < len + 16 {
            v.clear();
            v.resize(len + 16, 0.0);
        }
        let p = v.as_mut_ptr();
        let mis = (p as usize / 4) % 16;
        // SAFETY: we allocated 16 extra floats, so the aligned start plus `len` stays in bounds.
        unsafe { p.add((16 - mis) % 16) }
    }
    let mut f = Some(f);
    let r = key.with(|cell| {
        if let Ok(mut v) = cell.try_borrow_mut() {
            let p = aligned(&mut v, len);
            Some((f.take().unwrap())(p))
        } else {
            None
        }
    });
    match r {
        Some(r) => r,
        None => {
            let mut v = Vec::new();
            let p = aligned(&mut v, len);
            (f.take().unwrap())(p)
        }
    }
}

/// Chooses a tm × tn split of `nt` threads over (row panels, column panels).
fn split_threads(nt: usize, mp: usize, np: usize, mr: usize, nr: usize) -> (usize, usize) {
    let mut best = (nt, 1);
    let mut best_cost = f64::INFINITY;
    for tm in 1..=nt {
        if tm * (nt / tm) != nt {
            continue;
        }
        let tn = nt / tm;
        let rows = mp.div_ceil(tm) * mr;
        let cols = np.div_ceil(tn) * nr;
        // Work of the busiest thread, plus a small penalty for duplicated A packing.
        let cost = (rows * cols) as f64 * (1.0 + 0.02 * (tn - 1) as f64);
        if cost < best_cost * 0.999 {
            best_cost = cost;
            best = (tm, tn);
        }
    }
    best
}

#[allow(clippy::too_many_arguments)]
unsafe fn gemm_impl(
    p: Params,
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
    let (mr, nr) = (p.mr, p.nr);
    let flops = 2.0 * m as f64 * n as f64 * k as f64;
    let mut nt = rayon::current_num_threads().max(1);
    // Keep at least ~4 MFLOP per thread, otherwise the fork/join cost dominates.
    nt = nt.min((flops / 4.0e6) as usize).max(1);

    // Split K (and later each thread's rows) into near-equal blocks instead of leaving a thin tail.
    let kc_blk = k.div_ceil(k.div_ceil(p.kc)).next_multiple_of(8).min(k);
    let kc_max = kc_blk;
    let nc_max = p.nc.min(n.div_ceil(nr) * nr);
    let mc_max = p.mc.min(m.div_ceil(mr) * mr);
    let a_s = SendPtr(a as *mut f32);
    let c_s = SendPtr(c);

    with_buf(&BUF_B, kc_max * nc_max, |bbuf| {
        let bbuf = SendPtr(bbuf);
        let mut jc = 0;
        while jc < n {
            let nc = p.nc.min(n - jc);
            let np = nc.div_ceil(nr);
            let mp = m.div_ceil(mr);
            let (tm, tn) = if nt > 1 { split_threads(nt, mp, np, mr, nr) } else { (1, 1) };
            let mut pc = 0;
            while pc < k {
                let kc = kc_blk.min(k - pc);
                let beta_eff = if pc == 0 { beta } else { 1.0 };
                // SAFETY: the B block starting at (pc, jc) is inside the checked extent.
                let bsrc = SendPtr(unsafe { b.add(pc * rsb + jc * csb) } as *mut f32);

                // ---- pack B (kc × nc) into np micro-panels of kc × nr ----
                let pack_b = |t: usize, parts: usize| {
                    let (p0, p1) = (t * np / parts, (t + 1) * np / parts);
                    for jp in p0..p1 {
                        let j0 = jp * nr;
                        // SAFETY: panel jp of the packed buffer is written by exactly one task.
                        unsafe {
                            pack::pack_b(
                                kc,
                                nr.min(nc - j0),
                                nr,
                                bsrc.get().add(j0 * csb),
                                rsb,
                                csb,
                                bbuf.get().add(jp * kc * nr),
                            );
                        }
                    }
                };
                if nt > 1 {
                    (0..nt).into_par_iter().for_each(|t| pack_b(t, nt));
                } else {
                    pack_b(0, 1);
                }

                // ---- compute: task t handles row panels [r0, r1) × column panels [q0, q1) ----
                let compute = |t: usize| {
                    let (ti, tj) = (t / tn, t % tn);
                    let (r0, r1) = (ti * mp / tm, (ti + 1) * mp / tm);
                    let (q0, q1) = (tj * np / tn, (tj + 1) * np / tn);
                    if r0 == r1 || q0 == q1 {
                        return;
                    }
                    let rp = r1 - r0;
                    let mcp_cap = rp.div_ceil(rp.div_ceil(mc_max / mr));
                    let mc_cap = mcp_cap * mr;
                    with_buf(&BUF_A, mc_cap * kc, |abuf| {
                        let mut ic = r0 * mr;
                        let iend = (r1 * mr).min(m);
                        while ic < iend {
                            let mc = mc_cap.min(iend - ic);
                            let mcp = mc.div_ceil(mr);
                            // SAFETY: rows [ic, ic+mc) × cols [pc, pc+kc) are inside A; abuf
                            // holds mcp*mr*kc floats and is private to this thread.
                            unsafe {
                                let asrc = a_s.get().add(ic * rsa + pc * csa);
                                for ip in 0..mcp {
                                    let i0 = ip * mr;
                                    pack::pack_a(
                                        kc,
                                        mr.min(mc - i0),
                                        mr,
                                        asrc.add(i0 * rsa),
                                        rsa,
                                        csa,
                                        abuf.add(ip * kc * mr),
                                    );
                                }
                            }
                            for jp in q0..q1 {
                                let j0 = jp * nr;
                                let nr_eff = nr.min(nc - j0);
                                // SAFETY: packed B panel jp is complete (join above).
                                let bpan = unsafe { bbuf.get().add(jp * kc * nr) };
                                for ip in 0..mcp {
                                    let i0 = ip * mr;
                                    let mr_eff = mr.min(mc - i0);
                                    // SAFETY: tile (ic+i0.., jc+j0..) of C is inside the checked
                                    // extent and owned by this task only.
                                    unsafe {
                                        let apan = abuf.add(ip * kc * mr);
                                        let ct = c_s.get().add((ic + i0) * rsc + (jc + j0) * csc);
                                        run_tile(
                                            p.kernel, kc, apan, bpan, ct, rsc, csc, mr, nr, mr_eff,
                                            nr_eff, alpha, beta_eff,
                                        );
                                    }
                                }
                            }
                            ic += mc;
                        }
                    });
                };
                if tm * tn > 1 {
                    (0..tm * tn).into_par_iter().for_each(compute);
                } else {
                    compute(0);
                }
                pc += kc;
            }
            jc += nc;
        }
    });
}

/// Largest MR*NR of any kernel (size of the temporary edge tile).
const MAX_TILE: usize = {
    let mut t = kernels::PORT_MR * kernels::PORT_NR;
    #[cfg(target_arch = "x86_64")]
    {
        let (a, b) = (kernels::x86::AVX512_MR * kernels::x86::AVX512_NR, kernels::x86::AVX2_MR * kernels::x86::AVX2_NR);
        if a > t {
            t = a;
        }
        if b > t {
            t = b;
        }
    }
    t
};

#[repr(align(64))]
struct Tile([f32; MAX_TILE]);

#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn run_tile(
    kernel: KernelFn,
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    csc: usize,
    mr: usize,
    nr: usize,
    mr_eff: usize,
    nr_eff: usize,
    alpha: f32,
    beta: f32,
) {
    // SAFETY: forwarded from caller (panels complete, tile inside C).
    unsafe {
        if mr_eff == mr && nr_eff == nr && csc == 1 {
            kernel(kc, a, b, c, rsc, alpha, beta);
        } else {
            debug_assert!(mr * nr <= MAX_TILE);
            let mut t = Tile([0.0; MAX_TILE]);
            kernel(kc, a, b, t.0.as_mut_ptr(), nr, alpha, 0.0);
            for i in 0..mr_eff {
                for j in 0..nr_eff {
                    let cp = c.add(i * rsc + j * csc);
                    let v = t.0[i * nr + j];
                    *cp = if beta == 0.0 { v } else { v + beta * *cp };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn below(&mut self, n: usize) -> usize {
            self.next();
            (self.0 % n as u64) as usize
        }
    }

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if Isa::Avx2.supported() {
                v.push(Isa::Avx2);
            }
            if Isa::Avx512.supported() {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    /// A strided m×n matrix stored in a buffer with some slack and a nonzero offset.
    struct Strided {
        data: Vec<f32>,
        offset: usize,
        rs: usize,
        cs: usize,
    }

    impl Strided {
        /// `trans`: column-major storage; `pad`: extra leading-dimension padding.
        fn new(rng: &mut Rng, m: usize, n: usize, trans: bool, pad: usize, fill: Option<f32>) -> Self {
            let offset = 3;
            let (rs, cs) = if trans { (1, m + pad) } else { (n + pad, 1) };
            let len = offset + m.max(1) * n.max(1) + pad * (m.max(n) + 1) + 5;
            let data = (0..len).map(|_| fill.unwrap_or_else(|| rng.next())).collect();
            Strided { data, offset, rs, cs }
        }
        fn at(&self, i: usize, j: usize) -> f32 {
            self.data[self.offset + i * self.rs + j * self.cs]
        }
        fn r(&self) -> MatRef<'_> {
            MatRef { data: &self.data, offset: self.offset, rs: self.rs, cs: self.cs }
        }
        fn w(&mut self) -> MatMut<'_> {
            MatMut { data: &mut self.data, offset: self.offset, rs: self.rs, cs: self.cs }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check(isa: Isa, rng: &mut Rng, m: usize, n: usize, k: usize, ta: bool, tb: bool, tc: bool, alpha: f32, beta: f32) {
        let a = Strided::new(rng, m, k, ta, 2, None);
        let b = Strided::new(rng, k, n, tb, 0, None);
        let mut c = Strided::new(rng, m, n, tc, 1, if beta == 0.0 { Some(f32::NAN) } else { None });
        let c0 = Strided { data: c.data.clone(), offset: c.offset, rs: c.rs, cs: c.cs };
        sgemm_with(isa, m, n, k, alpha, a.r(), b.r(), beta, c.w());
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                let mut mag = 0f64;
                for p in 0..k {
                    let x = a.at(i, p) as f64 * b.at(p, j) as f64;
                    s += x;
                    mag += x.abs();
                }
                let mut want = alpha as f64 * s;
                let mut scale = alpha.abs() as f64 * mag;
                if beta != 0.0 {
                    want += beta as f64 * c0.at(i, j) as f64;
                    scale += (beta as f64 * c0.at(i, j) as f64).abs();
                }
                let got = c.at(i, j) as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * scale + 1e-30,
                    "{isa:?} m={m} n={n} k={k} ta={ta} tb={tb} tc={tc} alpha={alpha} beta={beta}: \
                     C({i},{j}) = {got}, want {want} (scale {scale})"
                );
            }
        }
        // Elements of the C buffer outside the matrix must be untouched.
        let mut inside = vec![false; c.data.len()];
        for i in 0..m {
            for j in 0..n {
                inside[c.offset + i * c.rs + j * c.cs] = true;
            }
        }
        for (idx, (x, y)) in c.data.iter().zip(&c0.data).enumerate() {
            if !inside[idx] {
                assert!(x.to_bits() == y.to_bits(), "{isa:?}: C buffer modified outside the matrix at {idx}");
            }
        }
    }

    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (7, 13, 5),
        (1, 37, 19),
        (23, 1, 11),
        (14, 32, 8),
        (6, 16, 3),
        (15, 33, 17),
        (33, 65, 129),
        (29, 47, 401),
        (300, 200, 600),
        (171, 97, 785),
    ];

    #[test]
    fn all_isas_shapes_layouts() {
        let mut rng = Rng(0x9E3779B97F4A7C15);
        for isa in isas() {
            for &(m, n, k) in SHAPES {
                for layout in 0..8 {
                    let (ta, tb, tc) = (layout & 1 != 0, layout & 2 != 0, layout & 4 != 0);
                    let (alpha, beta) = [(1.0, 0.0), (-0.5, 0.0), (1.0, 1.0), (0.75, -1.25)][layout % 4];
                    check(isa, &mut rng, m, n, k, ta, tb, tc, alpha, beta);
                }
            }
        }
    }

    #[test]
    fn random_shapes_multithreaded() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let mut rng = Rng(12345);
        pool.install(|| {
            for isa in isas() {
                for _ in 0..12 {
                    let m = 1 + rng.below(260);
                    let n = 1 + rng.below(260);
                    let k = 1 + rng.below(500);
                    let l = rng.below(8);
                    let beta = if rng.below(2) == 0 { 0.0 } else { 0.5 };
                    check(isa, &mut rng, m, n, k, l & 1 != 0, l & 2 != 0, l & 4 != 0, 1.5, beta);
                }
                // Matrix-vector fast paths, large enough to be split across threads.
                for l in 0..4 {
                    let (ta, tb) = (l & 1 != 0, l & 2 != 0);
                    check(isa, &mut rng, 1, 1500, 801, ta, tb, false, 0.5, 0.0);
                    check(isa, &mut rng, 1300, 1, 900, ta, tb, true, 1.0, -2.0);
                }
                // Large enough to use several threads and several K blocks.
                check(isa, &mut rng, 257, 263, 801, false, true, false, 1.0, 0.0);
            }
        });
    }

    #[test]
    fn skinny_path_shapes_layouts() {
        // m <= 16 with B row- or column-contiguous: the unpacked skinny path (edges in m, n, k).
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let mut rng = Rng(4242);
        pool.install(|| {
            for isa in isas() {
                for &(m, n, k) in &[(2, 64, 16), (8, 1000, 256), (5, 777, 33), (16, 130, 70), (3, 4100, 19), (13, 301, 517)] {
                    assert!(skinny::applies(m, n, k, 1, 2) && skinny::applies(m, n, k, 2, 1));
                    for layout in 0..8 {
                        let (ta, tb, tc) = (layout & 1 != 0, layout & 2 != 0, layout & 4 != 0);
                        let (alpha, beta) = [(1.0, 0.0), (-0.5, 0.0), (1.0, 1.0), (0.75, -1.25)][layout % 4];
                        check(isa, &mut rng, m, n, k, ta, tb, tc, alpha, beta);
                    }
                }
            }
        });
    }

    #[test]
    fn wide_n_exceeds_nc() {
        let mut rng = Rng(777);
        for isa in isas() {
            check(isa, &mut rng, 3, 4200, 9, false, false, false, 1.0, 2.0);
            check(isa, &mut rng, 5, 4150, 3, true, true, false, 1.0, 0.0);
        }
    }

    #[test]
    fn k_zero_and_empty() {
        for isa in isas() {
            let mut c = vec![f32::NAN; 6];
            let a: [f32; 0] = [];
            let ar = MatRef { data: &a, offset: 0, rs: 0, cs: 1 };
            sgemm_with(isa, 2, 3, 0, 1.0, ar, ar, 0.0, MatMut { data: &mut c, offset: 0, rs: 3, cs: 1 });
            assert!(c.iter().all(|&x| x == 0.0));
            let mut c = vec![2.0f32; 6];
            sgemm_with(isa, 2, 3, 0, 1.0, ar, ar, 0.5, MatMut { data: &mut c, offset: 0, rs: 3, cs: 1 });
            assert!(c.iter().all(|&x| x == 1.0));
            // m = 0 / n = 0: nothing touched.
            let b = [1.0f32; 4];
            let br = MatRef { data: &b, offset: 0, rs: 2, cs: 1 };
            let mut c: [f32; 0] = [];
            sgemm_with(isa, 0, 2, 2, 1.0, br, br, 0.0, MatMut { data: &mut c, offset: 0, rs: 2, cs: 1 });
            sgemm_with(isa, 2, 0, 2, 1.0, br, br, 0.0, MatMut { data: &mut c, offset: 0, rs: 0, cs: 1 });
        }
        // alpha = 0 with beta = 0 must also ignore NaN in C.
        let a = [1.0f32; 4];
        let ar = MatRef { data: &a, offset: 0, rs: 2, cs: 1 };
        let mut c = vec![f32::NAN; 4];
        sgemm(2, 2, 2, 0.0, ar, ar, 0.0, MatMut { data: &mut c, offset: 0, rs: 2, cs: 1 });
        assert!(c.iter().all(|&x| x == 0.0));
    }

    #[test]
    #[should_panic(expected = "exceeds its data")]
    fn out_of_bounds_panics() {
        let a = [1.0f32; 5];
        let ar = MatRef { data: &a, offset: 0, rs: 3, cs: 1 };
        let mut c = vec![0.0f32; 9];
        sgemm(3, 3, 3, 1.0, ar, ar, 0.0, MatMut { data: &mut c, offset: 0, rs: 3, cs: 1 });
    }

    #[test]
    fn isa_name_is_known() {
        assert!(["avx512", "avx2+fma", "portable"].contains(&isa_name()));
    }
}
