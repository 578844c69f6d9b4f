//! Memory-bound kernels (sources `cu/cross_entropy.cu`, `cu/embedding.cu`, `cu/reduce.cu`,
//! `cu/binary.cu`; each file's header describes its kernels' design).

pub const CE_ENTRIES: &[&str] = &[
    "ce_fwd_warp_f32", "ce_fwd_block_f32", "ce_fwd_warp_bf16", "ce_fwd_block_bf16",
    "ce_bwd_warp_f32", "ce_bwd_block_f32", "ce_bwd_warp_bf16", "ce_bwd_block_bf16",
    "ce_loss_mean_f32",
];
pub const EMBEDDING_ENTRIES: &[&str] = &["embedding_fwd_f32", "embedding_bwd_atomic_f32", "embedding_bwd_sorted_f32"];
pub const REDUCE_ENTRIES: &[&str] = &["sum_rows_f32", "sum_rows_vec4_f32", "sum_rows_finish_f32", "l2norm_partial_f32", "l2norm_finish_f32"];
pub const BINARY_ENTRIES: &[&str] = &[
    "binary_add_f32", "binary_sub_f32", "binary_mul_f32", "binary_div_f32", "binary_min_f32", "binary_max_f32",
    "binary_add_f32_contig", "binary_sub_f32_contig", "binary_mul_f32_contig", "binary_div_f32_contig",
    "binary_min_f32_contig", "binary_max_f32_contig", "binary_f32_bf16_contig",
];

/// Cross-entropy: vocabularies below this use a warp per row, the rest a block per row.
pub const CE_WARP_MAX_V: usize = 4096;

/// Which cross-entropy kernel shape to launch ([`CeGroup::Auto`] picks by V).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CeGroup {
    Auto,
    Warp,
    Block,
}

impl CeGroup {
    pub fn resolve(self, v: usize) -> CeGroup {
        match self {
            CeGroup::Auto if v < CE_WARP_MAX_V => CeGroup::Warp,
            CeGroup::Auto => CeGroup::Block,
            g => g,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 6] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Min, BinaryOp::Max];

    /// The kernels' op code (`binary_f32_bf16_contig`): the position in [`Self::ALL`].
    pub fn code(self) -> i32 {
        Self::ALL.iter().position(|&o| o == self).expect("every op is in ALL") as i32
    }

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Min => "min",
            BinaryOp::Max => "max",
        }
    }

    /// (value, scale) in f64; min/max follow f32::min/max (a NaN operand yields the other).
    pub fn apply_f64(self, a: f64, b: f64) -> (f64, f64) {
        match self {
            BinaryOp::Add => (a + b, a.abs() + b.abs()),
            BinaryOp::Sub => (a - b, a.abs() + b.abs()),
            BinaryOp::Mul => (a * b, (a * b).abs()),
            BinaryOp::Div => (a / b, (a / b).abs()),
            BinaryOp::Min => (a.min(b), a.min(b).abs()),
            BinaryOp::Max => (a.max(b), a.max(b).abs()),
        }
    }
}

/// Broadcast geometry after dropping size-1 dims and merging dims contiguous in both operands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bcast {
    /// Elements of the (contiguous) output.
    pub n: usize,
    /// a, b and out are all contiguous with the same shape: the vector kernel applies.
    pub contiguous: bool,
    /// Dims [d0, d1, d2, d3] (leading 1s), strides of a and b per dim.
    pub dims: [usize; 4],
    pub sa: [usize; 4],
    pub sb: [usize; 4],
    /// Largest element offset + 1 that a and b read (0 when n = 0).
    pub a_extent: usize,
    pub b_extent: usize,
}

pub fn plan_broadcast(shape: &[usize], sa: &[usize], sb: &[usize]) -> Result<Bcast, String> {
    if shape.len() > 4 || sa.len() != shape.len() || sb.len() != shape.len() {
        return Err(format!("broadcast: shape {shape:?} with strides {sa:?} / {sb:?}: need rank <= 4 and one stride per dim"));
    }
    let n: usize = shape.iter().product();
    let extent = |s: &[usize]| if n == 0 { 0 } else { 1 + shape.iter().zip(s).map(|(d, st)| (d - 1) * st).sum::<usize>() };
    let (a_extent, b_extent) = (extent(sa), extent(sb));
    let mut dims: Vec<(usize, usize, usize)> = Vec::new();
    for i in 0..shape.len() {
        if shape[i] == 1 {
            continue;
        }
        let cur = (shape[i], sa[i], sb[i]);
        match dims.last_mut() {
            Some(last) if last.1 == cur.1 * cur.0 && last.2 == cur.2 * cur.0 => *last = (last.0 * cur.0, cur.1, cur.2),
            _ => dims.push(cur),
        }
    }
    if dims.is_empty() {
        dims.push((1, 0, 0));
    }
    let contiguous = dims.len() == 1 && dims[0].1 == 1 && dims[0].2 == 1;
    let mut p = Bcast { n, contiguous, dims: [1; 4], sa: [0; 4], sb: [0; 4], a_extent, b_extent };
    let off = 4 - dims.len();
    for (i, &(d, a, b)) in dims.iter().enumerate() {
        p.dims[off + i] = d;
        p.sa[off + i] = a;
        p.sb[off + i] = b;
    }
    Ok(p)
}

/// Deterministic embedding backward plan: positions grouped by id (stable), segment starts
/// and the id of each segment. Errors on an id outside 0..v.
/// (perm, segment starts, segment ids).
pub type Segments = (Vec<i32>, Vec<i32>, Vec<i64>);

pub fn embedding_segments(ids: &[i64], v: usize) -> Result<Segments, String> {
    if ids.len() > i32::MAX as usize {
        return Err(format!("embedding backward: {} ids do not fit i32", ids.len()));
    }
    if let Some(p) = ids.iter().position(|&i| i < 0 || i as usize >= v) {
        return Err(format!("embedding backward: id {} at position {p} is outside 0..{v}", ids[p]));
    }
    let mut perm: Vec<i32> = (0..ids.len() as i32).collect();
    perm.sort_by_key(|&p| ids[p as usize]); // stable: positions stay in order within an id
    let (mut seg, mut seg_id) = (Vec::new(), Vec::new());
    for (k, &p) in perm.iter().enumerate() {
        let id = ids[p as usize];
        if seg_id.last() != Some(&id) {
            seg.push(k as i32);
            seg_id.push(id);
        }
    }
    seg.push(perm.len() as i32);
    Ok((perm, seg, seg_id))
}

/// sum_rows launch geometry for x [r, c] on `sm_count` SMs: (vector width, column blocks,
/// splits, rows per split); more than one split sums into [splits, c] partials first.
pub fn sum_rows_geometry(r: usize, c: usize, sm_count: usize) -> (usize, usize, usize, usize) {
    let vw = if c.is_multiple_of(4) { 4 } else { 1 };
    let gx = c.div_ceil(32 * vw).max(1);
    let target = sm_count.max(1) * 8;
    let splits = target.div_ceil(gx).min(r.div_ceil(64)).clamp(1, 65535);
    let rows_per = r.div_ceil(splits).max(1);
    (vw, gx, r.div_ceil(rows_per).max(1), rows_per)
}

/// Blocks of l2norm_partial_f32 for `total` elements.
pub fn l2norm_blocks(total: usize, sm_count: usize) -> usize {
    total.max(1).div_ceil(2048).clamp(1, sm_count.max(1) * 8)
}

/// Launch shape of the binary kernels for plan `p`: ((grid x, grid y), (block x, block y));
/// contiguous operands take the `_contig` kernel's 1-D grid.
pub fn binary_launch(p: &Bcast, sm_count: usize) -> ((usize, usize), (usize, usize)) {
    let sms = sm_count.max(1);
    if p.contiguous {
        return ((p.n.div_ceil(1024).clamp(1, sms * 8), 1), (256, 1));
    }
    let d3 = p.dims[3];
    let outer = p.n / d3.max(1);
    let tx = d3.next_power_of_two().clamp(32, 256);
    let ty = 256 / tx;
    let gx = d3.div_ceil(tx).clamp(1, 1024);
    let gy = outer.div_ceil(ty).clamp(1, 65535).min((sms * 64 / gx).max(1));
    ((gx, gy), (tx, ty))
}

/// f64 CPU references for the self-test. TEMPORARY: plain loops, to be replaced by the
/// engine's CPU backend once it is wired in. Scales as in [`crate::reference`].
pub mod refs {
    use super::{BinaryOp, Bcast};
    use crate::reference::Ref;

    pub struct CeFwd {
        pub loss: Ref,
        pub lse: Ref,
        /// Each row's entropy of softmax(a x).
        pub ent: Ref,
    }

    /// Per row: lse and loss (0 for ignored rows); scale = |lse| + max|x| of the row.
    pub fn ce_forward(x: &[f32], t: &[i64], v: usize) -> CeFwd {
        ce_forward_scaled(x, t, v, 1.0)
    }

    /// [`ce_forward`] of z = a x (z rounded to f32 as the kernels do), and the entropy.
    pub fn ce_forward_scaled(x: &[f32], t: &[i64], v: usize, a: f32) -> CeFwd {
        let empty = || Ref { value: vec![], scale: vec![] };
        let mut r = CeFwd { loss: empty(), lse: empty(), ent: empty() };
        for (row, &ti) in x.chunks(v).zip(t) {
            let z: Vec<f64> = row.iter().map(|&b| (a * b) as f64).collect();
            let m = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let amax = z.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
            let lse = m + z.iter().map(|&b| (b - m).exp()).sum::<f64>().ln();
            let sc = lse.abs() + amax;
            r.lse.value.push(lse);
            r.lse.scale.push(sc);
            let ent = -z.iter().map(|&b| (b - lse).exp() * (b - lse)).sum::<f64>();
            r.ent.value.push(ent);
            r.ent.scale.push(ent.abs() + (v as f64).ln() + 1.0);
            if ti < 0 {
                r.loss.value.push(0.0);
                r.loss.scale.push(0.0);
            } else {
                r.loss.value.push(lse - z[ti as usize]);
                r.loss.scale.push(sc);
            }
        }
        r
    }

    /// Mean over kept rows (0 if none) and the kept count.
    pub fn ce_mean(f: &CeFwd, t: &[i64]) -> (Ref, f64) {
        let kept: Vec<usize> = (0..t.len()).filter(|&i| t[i] >= 0).collect();
        let k = kept.len().max(1) as f64;
        let value = kept.iter().map(|&i| f.loss.value[i]).sum::<f64>() / k;
        let scale = kept.iter().map(|&i| f.loss.scale[i]).sum::<f64>() / k;
        (Ref { value: vec![value], scale: vec![scale] }, kept.len() as f64)
    }

    /// d = (exp(x - lse) - onehot) * scale from the given (GPU) lse; 0 for ignored rows.
    pub fn ce_backward(x: &[f32], t: &[i64], lse: &[f32], v: usize, scale: f32) -> Ref {
        ce_backward_scaled(x, t, lse, v, 1.0, scale, None)
    }

    /// d = (exp(a x - lse) - onehot) * scale * gscale[row] (gscale None: 1); 0 for ignored rows.
    pub fn ce_backward_scaled(x: &[f32], t: &[i64], lse: &[f32], v: usize, a: f32, scale: f32, gscale: Option<&[f32]>) -> Ref {
        let (mut value, mut sc) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
        for (r, ((row, &ti), &l)) in x.chunks(v).zip(t).zip(lse).enumerate() {
            let s = scale as f64 * gscale.map_or(1.0, |g| g[r] as f64);
            for (c, &xv) in row.iter().enumerate() {
                if ti < 0 {
                    value.push(0.0);
                    sc.push(0.0);
                    continue;
                }
                let p = ((a * xv) as f64 - l as f64).exp();
                let hot = if c as i64 == ti { 1.0 } else { 0.0 };
                value.push((p - hot) * s);
                sc.push((p + hot) * s.abs());
            }
        }
        Ref { value, scale: sc }
    }

    pub fn embedding_fwd(ids: &[i64], table: &[f32], d: usize) -> Ref {
        let value: Vec<f64> = ids.iter().flat_map(|&i| table[i as usize * d..(i as usize + 1) * d].iter().map(|&x| x as f64)).collect();
        Ref { scale: value.iter().map(|x| x.abs()).collect(), value }
    }

    /// init + scatter-add of dout rows at ids.
    pub fn embedding_bwd(init: &[f32], ids: &[i64], dout: &[f32], d: usize) -> Ref {
        let mut value: Vec<f64> = init.iter().map(|&x| x as f64).collect();
        let mut scale: Vec<f64> = init.iter().map(|&x| (x as f64).abs()).collect();
        for (n, &i) in ids.iter().enumerate() {
            for c in 0..d {
                let g = dout[n * d + c] as f64;
                value[i as usize * d + c] += g;
                scale[i as usize * d + c] += g.abs();
            }
        }
        Ref { value, scale }
    }

    pub fn sum_rows(x: &[f32], r: usize, c: usize) -> Ref {
        let (mut value, mut scale) = (vec![0.0f64; c], vec![0.0f64; c]);
        for i in 0..r {
            for j in 0..c {
                let v = x[i * c + j] as f64;
                value[j] += v;
                scale[j] += v.abs();
            }
        }
        Ref { value, scale }
    }

    /// [norm, sum of squares]; every term is positive, so the scale is the value.
    pub fn l2norm(bufs: &[&[f32]]) -> Ref {
        let ss: f64 = bufs.iter().flat_map(|b| b.iter()).map(|&x| (x as f64) * (x as f64)).sum();
        Ref { value: vec![ss.sqrt(), ss], scale: vec![ss.sqrt(), ss] }
    }

    /// out (contiguous, shape `p.dims`) = op(a, b) over the planned strides.
    pub fn binary(op: BinaryOp, a: &[f32], b: &[f32], p: &Bcast) -> Ref {
        let (mut value, mut scale) = (Vec::with_capacity(p.n), Vec::with_capacity(p.n));
        let d = p.dims;
        for i0 in 0..d[0] {
            for i1 in 0..d[1] {
                for i2 in 0..d[2] {
                    for i3 in 0..d[3] {
                        let ia = i0 * p.sa[0] + i1 * p.sa[1] + i2 * p.sa[2] + i3 * p.sa[3];
                        let ib = i0 * p.sb[0] + i1 * p.sb[1] + i2 * p.sb[2] + i3 * p.sb[3];
                        let (v, s) = op.apply_f64(a[ia] as f64, b[ib] as f64);
                        value.push(v);
                        scale.push(s);
                    }
                }
            }
        }
        Ref { value, scale }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_plans_merge_and_pad() {
        // Same-shape contiguous operands collapse to one dim.
        let p = plan_broadcast(&[4, 5, 6], &[30, 6, 1], &[30, 6, 1]).unwrap();
        assert!(p.contiguous);
        assert_eq!((p.n, p.dims), (120, [1, 1, 1, 120]));
        // Bias row [1, C] over [R, C].
        let p = plan_broadcast(&[8, 3], &[3, 1], &[0, 1]).unwrap();
        assert!(!p.contiguous);
        assert_eq!((p.dims, p.sa, p.sb, p.b_extent), ([1, 1, 8, 3], [0, 0, 3, 1], [0, 0, 0, 1], 3));
        // Size-1 dims drop out; [2,1,3,4] + [1,1,3,4] keeps the broadcast dim separate.
        let p = plan_broadcast(&[2, 1, 3, 4], &[12, 12, 4, 1], &[0, 0, 4, 1]).unwrap();
        assert_eq!((p.dims, p.sa, p.sb), ([1, 1, 2, 12], [0, 0, 12, 1], [0, 0, 0, 1]));
        // Scalar, empty, and errors.
        let p = plan_broadcast(&[], &[], &[]).unwrap();
        assert_eq!((p.n, p.dims, p.a_extent), (1, [1, 1, 1, 1], 1));
        assert_eq!(plan_broadcast(&[3, 0], &[0, 1], &[0, 1]).unwrap().n, 0);
        assert!(plan_broadcast(&[1, 1, 1, 1, 1], &[0; 5], &[0; 5]).is_err());
    }

    #[test]
    fn broadcast_reference_matches_direct_indexing() {
        // a: [2, 3] transposed view of a [3, 2] buffer; b: column [2, 1].
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [10.0f32, 20.0];
        let p = plan_broadcast(&[2, 3], &[1, 2], &[1, 0]).unwrap();
        let r = refs::binary(BinaryOp::Add, &a, &b, &p);
        assert_eq!(r.value, vec![11.0, 13.0, 15.0, 22.0, 24.0, 26.0]);
    }

    #[test]
    fn embedding_segments_group_stably() {
        let (perm, seg, ids) = embedding_segments(&[5, 2, 5, 0, 2, 5], 6).unwrap();
        assert_eq!(perm, vec![3, 1, 4, 0, 2, 5]);
        assert_eq!(seg, vec![0, 1, 3, 6]);
        assert_eq!(ids, vec![0, 2, 5]);
        assert!(embedding_segments(&[6], 6).is_err());
        assert!(embedding_segments(&[-1], 6).is_err());
    }

    #[test]
    fn ce_reference_gradient_rows_sum_to_zero() {
        let x: Vec<f32> = (0..21).map(|i| (i as f32 * 0.7).sin() * 3.0).collect();
        let t = [2i64, -100, 6];
        let f = refs::ce_forward(&x, &t, 7);
        let lse: Vec<f32> = f.lse.value.iter().map(|&v| v as f32).collect();
        let d = refs::ce_backward(&x, &t, &lse, 7, 0.5);
        for (r, row) in d.value.chunks(7).enumerate() {
            let s: f64 = row.iter().sum();
            assert!(s.abs() < 1e-6, "row {r}: {s}");
        }
        assert_eq!(f.loss.value[1], 0.0);
        let (m, k) = refs::ce_mean(&f, &t);
        assert_eq!(k, 2.0);
        assert!((m.value[0] - (f.loss.value[0] + f.loss.value[2]) / 2.0).abs() < 1e-12);
    }
}

#[cfg(feature = "cuda")]
pub use imp::*;

#[cfg(feature = "cuda")]
mod imp {
    use super::*;
    use crate::bench::ITERS;
    use crate::device::Gpu;
    use crate::rows::RowKernel;
    use crate::reference::{compare, ErrStats};
    use crate::selftest::{Check, TOL_BF16, TOL_F32};
    use crate::{Error, Result};
    use cudarc::driver::{sys, CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
    use half::bf16;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use serde::Serialize;

    fn lc(grid: (u32, u32, u32), block: (u32, u32, u32)) -> LaunchConfig {
        LaunchConfig { grid_dim: grid, block_dim: block, shared_mem_bytes: 0 }
    }

    fn need(kernel: &str, what: &str, got: usize, want: usize) -> Result<()> {
        if got < want {
            return Err(Error::Other(format!("{kernel}: buffer {what} has {got} elements, the shape needs {want}")));
        }
        Ok(())
    }

    fn i32_of(kernel: &str, what: &str, v: usize) -> Result<i32> {
        i32::try_from(v).map_err(|_| Error::Other(format!("{kernel}: {what} = {v} does not fit in i32")))
    }

    fn u32_of(kernel: &str, what: &str, v: usize) -> Result<u32> {
        u32::try_from(v).map_err(|_| Error::Other(format!("{kernel}: {what} = {v} does not fit a grid dimension")))
    }

    /// Grid for `rows` warps, 8 per 256-thread block.
    fn warp_rows(kernel: &str, rows: usize) -> Result<LaunchConfig> {
        Ok(lc((u32_of(kernel, "blocks", rows.div_ceil(8).max(1))?, 1, 1), (256, 1, 1)))
    }

    /// Global L2 norm plan: device arrays of the buffers' pointers and lengths, partials, out.
    /// Build once per set of buffers ([`Gpu::l2norm_plan`]); [`Gpu::l2norm`] checks that the
    /// same buffers are passed again, so a plan never reads freed memory.
    pub struct L2NormPlan {
        host_ptrs: Vec<u64>,
        host_lens: Vec<i64>,
        ptrs: CudaSlice<u64>,
        lens: CudaSlice<i64>,
        partials: CudaSlice<f32>,
        blocks: usize,
        /// [norm, sum of squares] after [`Gpu::l2norm`].
        pub out: CudaSlice<f32>,
    }

    /// Deterministic embedding backward plan (see [`embedding_segments`]).
    pub struct EmbeddingBwdPlan {
        perm: CudaSlice<i32>,
        seg: CudaSlice<i32>,
        seg_id: CudaSlice<i64>,
        nseg: usize,
        n: usize,
        v: usize,
    }

    impl Gpu {
        #[allow(clippy::too_many_arguments)]
        fn ce_fwd_impl<T: DeviceRepr>(
            &self, dtype: &str, group: CeGroup, x: &CudaSlice<T>, targets: &CudaSlice<i64>, loss: &mut CudaSlice<f32>,
            lse: &mut CudaSlice<f32>, ent: Option<&mut CudaSlice<f32>>, n: usize, v: usize, a: f32,
        ) -> Result<()> {
            let g = group.resolve(v);
            let name = format!("ce_fwd_{}_{dtype}", if g == CeGroup::Warp { "warp" } else { "block" });
            need(&name, "logits", x.len(), n * v)?;
            need(&name, "targets", targets.len(), n)?;
            need(&name, "loss", loss.len(), n)?;
            need(&name, "lse", lse.len(), n)?;
            if let Some(e) = &ent {
                need(&name, "entropy", e.len(), n)?;
            }
            if n == 0 {
                return Ok(());
            }
            if v == 0 {
                return Err(Error::Other(format!("{name}: V = 0")));
            }
            let (ni, vi, null) = (i32_of(&name, "N", n)?, i32_of(&name, "V", v)?, 0u64);
            let cfg = if g == CeGroup::Warp { warp_rows(&name, n)? } else { lc((u32_of(&name, "N", n)?, 1, 1), (256, 1, 1)) };
            let mut b = self.stream.launch_builder(self.f(&name)?);
            b.arg(x).arg(targets).arg(loss).arg(lse);
            match ent {
                Some(e) => b.arg(e),
                None => b.arg(&null),
            };
            b.arg(&ni).arg(&vi).arg(&a);
            unsafe { b.launch(cfg) }.map_err(|e| Error::cuda(format!("launch {name} N={n} V={v}"), e))?;
            Ok(())
        }

        #[allow(clippy::too_many_arguments)]
        fn ce_bwd_impl<T: DeviceRepr>(
            &self, dtype: &str, group: CeGroup, x: &CudaSlice<T>, targets: &CudaSlice<i64>, lse: &CudaSlice<f32>,
            gscale: Option<&CudaSlice<f32>>, dx: &mut CudaSlice<T>, n: usize, v: usize, a: f32, scale: f32,
        ) -> Result<()> {
            let g = group.resolve(v);
            let name = format!("ce_bwd_{}_{dtype}", if g == CeGroup::Warp { "warp" } else { "block" });
            need(&name, "logits", x.len(), n * v)?;
            need(&name, "targets", targets.len(), n)?;
            need(&name, "lse", lse.len(), n)?;
            need(&name, "dlogits", dx.len(), n * v)?;
            if let Some(gs) = gscale {
                need(&name, "row gradients", gs.len(), n)?;
            }
            if n == 0 || v == 0 {
                return Ok(());
            }
            let (ni, vi, null) = (i32_of(&name, "N", n)?, i32_of(&name, "V", v)?, 0u64);
            let cfg = if g == CeGroup::Warp { warp_rows(&name, n)? } else { lc((u32_of(&name, "N", n)?, 1, 1), (256, 1, 1)) };
            let mut b = self.stream.launch_builder(self.f(&name)?);
            b.arg(x).arg(targets).arg(lse);
            match gscale {
                Some(gs) => b.arg(gs),
                None => b.arg(&null),
            };
            b.arg(dx).arg(&ni).arg(&vi).arg(&a).arg(&scale);
            unsafe { b.launch(cfg) }.map_err(|e| Error::cuda(format!("launch {name} N={n} V={v}"), e))?;
            Ok(())
        }

        /// Cross-entropy forward, f32 logits [n, v]: per-row loss (0 for ignored rows) and lse, overwritten.
        #[allow(clippy::too_many_arguments)]
        pub fn cross_entropy_fwd_f32(&self, group: CeGroup, x: &CudaSlice<f32>, targets: &CudaSlice<i64>, loss: &mut CudaSlice<f32>, lse: &mut CudaSlice<f32>, n: usize, v: usize) -> Result<()> {
            self.ce_fwd_impl("f32", group, x, targets, loss, lse, None, n, v, 1.0)
        }

        /// As [`Self::cross_entropy_fwd_f32`] with bf16 logits (bit patterns); loss and lse f32.
        #[allow(clippy::too_many_arguments)]
        pub fn cross_entropy_fwd_bf16(&self, group: CeGroup, x: &CudaSlice<u16>, targets: &CudaSlice<i64>, loss: &mut CudaSlice<f32>, lse: &mut CudaSlice<f32>, n: usize, v: usize) -> Result<()> {
            self.ce_fwd_impl("bf16", group, x, targets, loss, lse, None, n, v, 1.0)
        }

        /// The forward on the logits scaled by `a` (PPO's per-token log-probs at temperature
        /// 1 / a are -loss), with each row's entropy of softmax(a x) into `ent` when given.
        #[allow(clippy::too_many_arguments)]
        pub fn cross_entropy_fwd_scaled_f32(
            &self, group: CeGroup, x: &CudaSlice<f32>, targets: &CudaSlice<i64>, loss: &mut CudaSlice<f32>, lse: &mut CudaSlice<f32>,
            ent: Option<&mut CudaSlice<f32>>, n: usize, v: usize, a: f32,
        ) -> Result<()> {
            self.ce_fwd_impl("f32", group, x, targets, loss, lse, ent, n, v, a)
        }

        /// As [`Self::cross_entropy_fwd_scaled_f32`] with bf16 logits.
        #[allow(clippy::too_many_arguments)]
        pub fn cross_entropy_fwd_scaled_bf16(
            &self, group: CeGroup, x: &CudaSlice<u16>, targets: &CudaSlice<i64>, loss: &mut CudaSlice<f32>, lse: &mut CudaSlice<f32>,
            ent: Option<&mut CudaSlice<f32>>, n: usize, v: usize, a: f32,
        ) -> Result<()> {
            self.ce_fwd_impl("bf16", group, x, targets, loss, lse, ent, n, v, a)
        }

        /// dlogits = (softmax - onehot) * scale for kept rows, 0 for ignored rows (overwritten);
        /// `lse` from the forward. For the mean loss, scale = upstream grad / max(kept, 1).
        #[allow(clippy::too_many_arguments)]
        pub fn cross_entropy_bwd_f32(&self, group: CeGroup, x: &CudaSlice<f32>, targets: &CudaSlice<i64>, lse: &CudaSlice<f32>, dx: &mut CudaSlice<f32>, n: usize, v: usize, scale: f32) -> Result<()> {
            self.ce_bwd_impl("f32", group, x, targets, lse, None, dx, n, v, 1.0, scale)
        }

        /// As [`Self::cross_entropy_bwd_f32`], bf16 logits and bf16 dlogits.
        #[allow(clippy::too_many_arguments)]
        pub fn cross_entropy_bwd_bf16(&self, group: CeGroup, x: &CudaSlice<u16>, targets: &CudaSlice<i64>, lse: &CudaSlice<f32>, dx: &mut CudaSlice<u16>, n: usize, v: usize, scale: f32) -> Result<()> {
            self.ce_bwd_impl("bf16", group, x, targets, lse, None, dx, n, v, 1.0, scale)
        }

        /// The backward of the scaled forward: dlogits = (softmax(a x) - onehot) * scale *
        /// gscale[row] (gscale: each row's upstream gradient; None reads as 1). For log-probs
        /// (-loss) with upstream g: scale = -a, gscale = g.
        #[allow(clippy::too_many_arguments)]
        pub fn cross_entropy_bwd_scaled_f32(
            &self, group: CeGroup, x: &CudaSlice<f32>, targets: &CudaSlice<i64>, lse: &CudaSlice<f32>, gscale: Option<&CudaSlice<f32>>,
            dx: &mut CudaSlice<f32>, n: usize, v: usize, a: f32, scale: f32,
        ) -> Result<()> {
            self.ce_bwd_impl("f32", group, x, targets, lse, gscale, dx, n, v, a, scale)
        }

        /// As [`Self::cross_entropy_bwd_scaled_f32`], bf16 logits and bf16 dlogits.
        #[allow(clippy::too_many_arguments)]
        pub fn cross_entropy_bwd_scaled_bf16(
            &self, group: CeGroup, x: &CudaSlice<u16>, targets: &CudaSlice<i64>, lse: &CudaSlice<f32>, gscale: Option<&CudaSlice<f32>>,
            dx: &mut CudaSlice<u16>, n: usize, v: usize, a: f32, scale: f32,
        ) -> Result<()> {
            self.ce_bwd_impl("bf16", group, x, targets, lse, gscale, dx, n, v, a, scale)
        }

        /// out[0] = mean loss over kept rows (0 if none), out[1] = kept count (exact below 2^24).
        pub fn cross_entropy_mean(&self, loss: &CudaSlice<f32>, targets: &CudaSlice<i64>, n: usize, out: &mut CudaSlice<f32>) -> Result<()> {
            let name = "ce_loss_mean_f32";
            need(name, "loss", loss.len(), n)?;
            need(name, "targets", targets.len(), n)?;
            need(name, "out", out.len(), 2)?;
            let ni = i32_of(name, "N", n)?;
            let mut b = self.stream.launch_builder(self.f(name)?);
            b.arg(loss).arg(targets).arg(&ni).arg(out);
            unsafe { b.launch(lc((1, 1, 1), (1024, 1, 1))) }.map_err(|e| Error::cuda(format!("launch {name} N={n}"), e))?;
            Ok(())
        }

        /// out [n, d] = table[ids] ([v, d]); an id outside 0..v gives a NaN row (validate on the host).
        pub fn embedding_fwd(&self, ids: &CudaSlice<i64>, table: &CudaSlice<f32>, out: &mut CudaSlice<f32>, n: usize, v: usize, d: usize) -> Result<()> {
            let name = "embedding_fwd_f32";
            need(name, "ids", ids.len(), n)?;
            need(name, "table", table.len(), v * d)?;
            need(name, "out", out.len(), n * d)?;
            if n == 0 || d == 0 {
                return Ok(());
            }
            let (ni, vi, di) = (i32_of(name, "N", n)?, i32_of(name, "V", v)?, i32_of(name, "D", d)?);
            let mut b = self.stream.launch_builder(self.f(name)?);
            b.arg(ids).arg(table).arg(out).arg(&ni).arg(&vi).arg(&di);
            unsafe { b.launch(warp_rows(name, n)?) }.map_err(|e| Error::cuda(format!("launch {name} N={n} V={v} D={d}"), e))?;
            Ok(())
        }

        /// dtable[ids[i]] += dout[i] with f32 atomics: ADDS into dtable (zero it for a plain
        /// gradient). Non-deterministic summation order where ids repeat. Bad ids are skipped.
        pub fn embedding_bwd_atomic(&self, ids: &CudaSlice<i64>, dout: &CudaSlice<f32>, dtable: &mut CudaSlice<f32>, n: usize, v: usize, d: usize) -> Result<()> {
            let name = "embedding_bwd_atomic_f32";
            need(name, "ids", ids.len(), n)?;
            need(name, "dout", dout.len(), n * d)?;
            need(name, "dtable", dtable.len(), v * d)?;
            if n == 0 || d == 0 {
                return Ok(());
            }
            let (ni, vi, di) = (i32_of(name, "N", n)?, i32_of(name, "V", v)?, i32_of(name, "D", d)?);
            let mut b = self.stream.launch_builder(self.f(name)?);
            b.arg(ids).arg(dout).arg(dtable).arg(&ni).arg(&vi).arg(&di);
            unsafe { b.launch(warp_rows(name, n)?) }.map_err(|e| Error::cuda(format!("launch {name} N={n} V={v} D={d}"), e))?;
            Ok(())
        }

        /// Uploads the grouping of host `ids` for [`Self::embedding_bwd_sorted`].
        pub fn embedding_bwd_plan(&self, ids: &[i64], v: usize) -> Result<EmbeddingBwdPlan> {
            let (perm, mut seg, mut seg_id) = embedding_segments(ids, v).map_err(Error::Other)?;
            let nseg = seg_id.len();
            if perm.is_empty() {
                seg = vec![0, 0];
                seg_id = vec![0];
            }
            let up_err = |e| Error::cuda("embedding_bwd_sorted_f32: uploading the plan", e);
            let perm_d = self.stream.clone_htod(if perm.is_empty() { &[0i32][..] } else { &perm[..] }).map_err(up_err)?;
            Ok(EmbeddingBwdPlan {
                perm: perm_d,
                seg: self.stream.clone_htod(&seg).map_err(up_err)?,
                seg_id: self.stream.clone_htod(&seg_id).map_err(up_err)?,
                nseg,
                n: perm.len(),
                v,
            })
        }

        /// Deterministic dtable[ids[i]] += dout[i] (ADDS into dtable), ids from the plan.
        pub fn embedding_bwd_sorted(&self, plan: &EmbeddingBwdPlan, dout: &CudaSlice<f32>, dtable: &mut CudaSlice<f32>, d: usize) -> Result<()> {
            let name = "embedding_bwd_sorted_f32";
            need(name, "dout", dout.len(), plan.n * d)?;
            need(name, "dtable", dtable.len(), plan.v * d)?;
            if plan.nseg == 0 || d == 0 {
                return Ok(());
            }
            let (si, vi, di) = (i32_of(name, "segments", plan.nseg)?, i32_of(name, "V", plan.v)?, i32_of(name, "D", d)?);
            let mut b = self.stream.launch_builder(self.f(name)?);
            b.arg(&plan.perm).arg(&plan.seg).arg(&plan.seg_id).arg(&si).arg(dout).arg(dtable).arg(&vi).arg(&di);
            unsafe { b.launch(warp_rows(name, plan.nseg)?) }
                .map_err(|e| Error::cuda(format!("launch {name} N={} segments={} D={d}", plan.n, plan.nseg), e))?;
            Ok(())
        }

        fn sum_rows_geometry(&self, r: usize, c: usize) -> (usize, usize, usize, usize) {
            sum_rows_geometry(r, c, self.info.sm_count.max(1) as usize)
        }

        /// Scratch elements [`Self::sum_rows`] needs for an [r, c] input (0 = none).
        pub fn sum_rows_scratch_len(&self, r: usize, c: usize) -> usize {
            let (_, _, splits, _) = self.sum_rows_geometry(r, c);
            if splits > 1 { splits * c } else { 0 }
        }

        /// out [c] = sum over rows of x [r, c] (overwritten); deterministic. `scratch` needs
        /// [`Self::sum_rows_scratch_len`] elements.
        pub fn sum_rows(&self, x: &CudaSlice<f32>, out: &mut CudaSlice<f32>, scratch: &mut CudaSlice<f32>, r: usize, c: usize) -> Result<()> {
            let name = "sum_rows";
            need(name, "x", x.len(), r * c)?;
            need(name, "out", out.len(), c)?;
            need(name, "scratch", scratch.len(), self.sum_rows_scratch_len(r, c))?;
            if c == 0 {
                return Ok(());
            }
            let (vw, gx, splits, rows_per) = self.sum_rows_geometry(r, c);
            let k = if vw == 4 { "sum_rows_vec4_f32" } else { "sum_rows_f32" };
            let (ri, ci, rp) = (i32_of(k, "R", r)?, i32_of(k, "C", c)?, i32_of(k, "rows per split", rows_per)?);
            let cfg = lc((u32_of(k, "column blocks", gx)?, splits as u32, 1), (32, 8, 1));
            let mut b = self.stream.launch_builder(self.f(k)?);
            b.arg(x);
            if splits > 1 {
                b.arg(&mut *scratch);
            } else {
                b.arg(&mut *out);
            }
            b.arg(&ri).arg(&ci).arg(&rp);
            unsafe { b.launch(cfg) }.map_err(|e| Error::cuda(format!("launch {k} R={r} C={c} splits={splits}"), e))?;
            if splits > 1 {
                let f = "sum_rows_finish_f32";
                let si = splits as i32;
                let mut b = self.stream.launch_builder(self.f(f)?);
                b.arg(&*scratch).arg(out).arg(&si).arg(&ci);
                unsafe { b.launch(lc((u32_of(f, "blocks", c.div_ceil(256))?, 1, 1), (256, 1, 1))) }
                    .map_err(|e| Error::cuda(format!("launch {f} C={c} splits={splits}"), e))?;
            }
            Ok(())
        }

        fn l2_ptrs<S: DevicePtr<f32>>(&self, bufs: &[&S]) -> (Vec<u64>, Vec<i64>) {
            bufs.iter()
                .map(|b| {
                    let (p, _sync) = b.device_ptr(&self.stream);
                    (p, b.len() as i64)
                })
                .unzip()
        }

        /// Plan for the global L2 norm of `bufs` (views allowed; any alignment).
        pub fn l2norm_plan<S: DevicePtr<f32>>(&self, bufs: &[&S]) -> Result<L2NormPlan> {
            let (host_ptrs, host_lens) = self.l2_ptrs(bufs);
            let total: i64 = host_lens.iter().sum();
            let blocks = l2norm_blocks(total.max(0) as usize, self.info.sm_count.max(1) as usize);
            let e = |e| Error::cuda("l2norm: uploading the plan", e);
            let (p, l) = if host_ptrs.is_empty() { (vec![0u64], vec![0i64]) } else { (host_ptrs.clone(), host_lens.clone()) };
            Ok(L2NormPlan {
                ptrs: self.stream.clone_htod(&p).map_err(e)?,
                lens: self.stream.clone_htod(&l).map_err(e)?,
                partials: self.stream.alloc_zeros::<f32>(blocks).map_err(e)?,
                out: self.stream.alloc_zeros::<f32>(2).map_err(e)?,
                host_ptrs,
                host_lens,
                blocks,
            })
        }

        /// plan.out = [sqrt(sum x^2), sum x^2] over all of `bufs` (the plan's buffers), f32
        /// accumulation, deterministic for a given plan.
        pub fn l2norm<S: DevicePtr<f32>>(&self, plan: &mut L2NormPlan, bufs: &[&S]) -> Result<()> {
            let (p, l) = self.l2_ptrs(bufs);
            if p != plan.host_ptrs || l != plan.host_lens {
                return Err(Error::Other("l2norm: the buffers differ from the plan's (build a new plan)".into()));
            }
            let nb = i32_of("l2norm_partial_f32", "buffers", p.len())?;
            let mut b = self.stream.launch_builder(self.f("l2norm_partial_f32")?);
            b.arg(&plan.ptrs).arg(&plan.lens).arg(&nb).arg(&mut plan.partials);
            unsafe { b.launch(lc((plan.blocks as u32, 1, 1), (256, 1, 1))) }
                .map_err(|e| Error::cuda(format!("launch l2norm_partial_f32 buffers={} blocks={}", p.len(), plan.blocks), e))?;
            let np = plan.blocks as i32;
            let mut b = self.stream.launch_builder(self.f("l2norm_finish_f32")?);
            b.arg(&plan.partials).arg(&np).arg(&mut plan.out);
            unsafe { b.launch(lc((1, 1, 1), (1024, 1, 1))) }.map_err(|e| Error::cuda(format!("launch l2norm_finish_f32 parts={np}"), e))?;
            Ok(())
        }

        /// Convenience: the global L2 norm of `bufs` (plans, launches, synchronizes, reads back).
        pub fn global_l2_norm<S: DevicePtr<f32>>(&self, bufs: &[&S]) -> Result<f32> {
            let mut plan = self.l2norm_plan(bufs)?;
            self.l2norm(&mut plan, bufs)?;
            let v = self.stream.clone_dtoh(&plan.out).map_err(|e| Error::cuda("l2norm: reading the result (kernel fault?)", e))?;
            Ok(v[0])
        }

        /// out (contiguous, `shape`) = op(a, b); a and b strided in elements (0 = broadcast), rank <= 4.
        #[allow(clippy::too_many_arguments)]
        pub fn binary(&self, op: BinaryOp, a: &CudaSlice<f32>, a_strides: &[usize], b: &CudaSlice<f32>, b_strides: &[usize], out: &mut CudaSlice<f32>, shape: &[usize]) -> Result<()> {
            let p = plan_broadcast(shape, a_strides, b_strides).map_err(Error::Other)?;
            self.binary_planned(op, a, b, out, &p)
        }

        /// As [`Self::binary`] with a plan from [`plan_broadcast`].
        pub fn binary_planned(&self, op: BinaryOp, a: &CudaSlice<f32>, b: &CudaSlice<f32>, out: &mut CudaSlice<f32>, p: &Bcast) -> Result<()> {
            let base = format!("binary_{}_f32", op.name());
            need(&base, "a", a.len(), p.a_extent)?;
            need(&base, "b", b.len(), p.b_extent)?;
            need(&base, "out", out.len(), p.n)?;
            if p.n == 0 {
                return Ok(());
            }
            let ((gx, gy), (tx, ty)) = binary_launch(p, self.info.sm_count.max(1) as usize);
            if p.contiguous {
                let name = format!("{base}_contig");
                let n = p.n as i64;
                let mut lb = self.stream.launch_builder(self.f(&name)?);
                lb.arg(a).arg(b).arg(out).arg(&n);
                unsafe { lb.launch(lc((gx as u32, 1, 1), (tx as u32, 1, 1))) }.map_err(|e| Error::cuda(format!("launch {name} n={}", p.n), e))?;
                return Ok(());
            }
            let (d3, outer) = (p.dims[3], p.n / p.dims[3]);
            let i = |v: usize| v as i64;
            let (outer_i, d1, d2, d3i) = (i(outer), i(p.dims[1]), i(p.dims[2]), i(d3));
            let sa: Vec<i64> = p.sa.iter().map(|&s| i(s)).collect();
            let sb: Vec<i64> = p.sb.iter().map(|&s| i(s)).collect();
            let mut lb = self.stream.launch_builder(self.f(&base)?);
            lb.arg(a).arg(b).arg(out).arg(&outer_i).arg(&d1).arg(&d2).arg(&d3i);
            for s in sa.iter().chain(sb.iter()) {
                lb.arg(s);
            }
            unsafe { lb.launch(lc((gx as u32, gy as u32, 1), (tx as u32, ty as u32, 1))) }
                .map_err(|e| Error::cuda(format!("launch {base} dims={:?} sa={:?} sb={:?}", p.dims, p.sa, p.sb), e))?;
            Ok(())
        }
    }

    impl Gpu {
        /// out [n] = op(a, b) over contiguous f32 `a` and bf16 `b` (bits) of one shape, or
        /// op(b, a) when `bf16_first`: the bf16 side read in place, not widened first.
        pub fn binary_f32_bf16(&self, op: BinaryOp, a: &CudaSlice<f32>, b: &CudaSlice<u16>, out: &mut CudaSlice<f32>, n: usize, bf16_first: bool) -> Result<()> {
            let name = "binary_f32_bf16_contig";
            need(name, "a", a.len(), n)?;
            need(name, "b", b.len(), n)?;
            need(name, "out", out.len(), n)?;
            if n == 0 {
                return Ok(());
            }
            let plan = plan_broadcast(&[n], &[1], &[1]).map_err(Error::Other)?;
            let ((gx, _), (tx, _)) = binary_launch(&plan, self.info.sm_count.max(1) as usize);
            let (n64, code, first) = (n as i64, op.code(), bf16_first as i32);
            let mut lb = self.stream.launch_builder(self.f(name)?);
            lb.arg(a).arg(b).arg(out).arg(&n64).arg(&code).arg(&first);
            unsafe { lb.launch(lc((gx as u32, 1, 1), (tx as u32, 1, 1))) }.map_err(|e| Error::cuda(format!("launch {name} {} n={n}", op.name()), e))?;
            Ok(())
        }
    }

    // ---------------------------------------------------------------- self-test

    struct Ctx<'a> {
        gpu: &'a Gpu,
        rng: StdRng,
    }

    impl Ctx<'_> {
        /// Uniform in [lo, hi), never exactly zero.
        fn rand(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
            crate::reference::rand_nonzero(&mut self.rng, n, lo, hi)
        }
        fn up<T: DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>> {
            self.gpu.stream.clone_htod(v).map_err(|e| Error::cuda("upload", e))
        }
        fn nan(&self, n: usize) -> Result<CudaSlice<f32>> {
            self.up(&vec![f32::NAN; n.max(1)])
        }
        fn down<T: DeviceRepr + Default + Clone>(&self, s: &CudaSlice<T>) -> Result<Vec<T>> {
            self.gpu.stream.clone_dtoh(s).map_err(|e| Error::cuda("download (kernel fault?)", e))
        }
        /// Targets in 0..v with about `ignored` of them -100 (the first row always kept).
        fn targets(&mut self, n: usize, v: usize, ignored: f64) -> Vec<i64> {
            (0..n).map(|i| if i > 0 && self.rng.gen_bool(ignored) { -100 } else { self.rng.gen_range(0..v) as i64 }).collect()
        }
    }

    fn bf16_bits(v: &[f32]) -> Vec<u16> {
        v.iter().map(|&x| bf16::from_f32(x).to_bits()).collect()
    }
    fn from_bits(v: &[u16]) -> Vec<f32> {
        v.iter().map(|&x| bf16::from_bits(x).to_f32()).collect()
    }

    fn case(out: &mut Vec<Check>, kernel: &str, shape: &str, precision: &'static str, f: impl FnOnce() -> Result<Vec<Check>>) {
        match f() {
            Ok(rows) => out.extend(rows),
            Err(e) => out.push(Check::failed(kernel, shape.to_string(), precision, e.to_string())),
        }
    }

    fn exact(got: &[f32], want: &crate::reference::Ref) -> ErrStats {
        compare(got, want)
    }

    /// Every kernel of this file against the f64 references; launch/sync errors become failed rows.
    pub fn checks(gpu: &Gpu) -> Vec<Check> {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) ^ 0x3e3_0b5;
        let mut c = Ctx { gpu, rng: StdRng::seed_from_u64(seed) };
        let mut out = Vec::new();

        // Cross-entropy: both group shapes at every size, f32 and bf16 logits.
        for (n, v) in [(1usize, 7usize), (33, 7), (33, 1000), (5, 4097), (1, 50_257), (33, 50_257), (4, 33)] {
            let shape = format!("N={n} V={v}");
            // Rows offset by up to +-20 (the max subtraction matters), values in [-8, 8).
            let mut x = c.rand(n * v, -8.0, 8.0);
            for row in x.chunks_mut(v) {
                let off = c.rng.gen_range(-20.0f32..20.0);
                row.iter_mut().for_each(|e| *e += off);
            }
            let t = if n == 4 { vec![-100i64; n] } else { c.targets(n, v, 0.25) }; // N=4: all ignored
            let kept = t.iter().filter(|&&i| i >= 0).count();
            let scale = c.rng.gen_range(0.5f32..2.0) / kept.max(1) as f32;
            for group in [CeGroup::Warp, CeGroup::Block] {
                let gname = if group == CeGroup::Warp { "warp" } else { "block" };
                let sh = format!("{shape} ignored={}", n - kept);
                case(&mut out, &format!("ce_{gname}_f32"), &sh, "f32", || {
                    let f = refs::ce_forward(&x, &t, v);
                    let (gx, gt) = (c.up(&x)?, c.up(&t)?);
                    let (mut gl, mut gs, mut gm) = (c.nan(n)?, c.nan(n)?, c.nan(2)?);
                    gpu.cross_entropy_fwd_f32(group, &gx, &gt, &mut gl, &mut gs, n, v)?;
                    gpu.cross_entropy_mean(&gl, &gt, n, &mut gm)?;
                    gpu.sync(&format!("ce_fwd_{gname}_f32"))?;
                    let lse = c.down(&gs)?;
                    let (mref, kref) = refs::ce_mean(&f, &t);
                    let m = c.down(&gm)?;
                    let mut rows = vec![
                        Check::new(&format!("ce_fwd_{gname}_f32 (loss)"), sh.clone(), "f32", compare(&c.down(&gl)?, &f.loss), TOL_F32),
                        Check::new(&format!("ce_fwd_{gname}_f32 (lse)"), sh.clone(), "f32", compare(&lse, &f.lse), TOL_F32),
                        Check::new("ce_loss_mean_f32 (mean)", sh.clone(), "f32", compare(&m[..1], &mref), TOL_F32),
                        Check::new("ce_loss_mean_f32 (kept)", sh.clone(), "exact", compare(&m[1..2], &crate::reference::Ref { value: vec![kref], scale: vec![0.0] }), 0.0),
                    ];
                    let mut gd = c.nan(n * v)?;
                    gpu.cross_entropy_bwd_f32(group, &gx, &gt, &gs, &mut gd, n, v, scale)?;
                    gpu.sync(&format!("ce_bwd_{gname}_f32"))?;
                    let b = refs::ce_backward(&x, &t, &lse, v, scale);
                    rows.push(Check::new(&format!("ce_bwd_{gname}_f32"), sh.clone(), "f32", compare(&c.down(&gd)?, &b), TOL_F32));
                    Ok(rows)
                });
                case(&mut out, &format!("ce_{gname}_bf16"), &sh, "bf16", || {
                    // The reference sees the same bf16 logits: the forward differs only by f32
                    // arithmetic; the gradient also by its rounding to bf16.
                    let x16 = bf16_bits(&x);
                    let xr = from_bits(&x16);
                    let f = refs::ce_forward(&xr, &t, v);
                    let (gx, gt) = (c.up(&x16)?, c.up(&t)?);
                    let (mut gl, mut gs) = (c.nan(n)?, c.nan(n)?);
                    gpu.cross_entropy_fwd_bf16(group, &gx, &gt, &mut gl, &mut gs, n, v)?;
                    gpu.sync(&format!("ce_fwd_{gname}_bf16"))?;
                    let lse = c.down(&gs)?;
                    let mut rows = vec![
                        Check::new(&format!("ce_fwd_{gname}_bf16 (loss)"), sh.clone(), "bf16->f32", compare(&c.down(&gl)?, &f.loss), TOL_F32),
                        Check::new(&format!("ce_fwd_{gname}_bf16 (lse)"), sh.clone(), "bf16->f32", compare(&lse, &f.lse), TOL_F32),
                    ];
                    let mut gd = c.up(&vec![0x7fc0u16; n * v])?;
                    gpu.cross_entropy_bwd_bf16(group, &gx, &gt, &gs, &mut gd, n, v, scale)?;
                    gpu.sync(&format!("ce_bwd_{gname}_bf16"))?;
                    let b = refs::ce_backward(&xr, &t, &lse, v, scale);
                    rows.push(Check::new(&format!("ce_bwd_{gname}_bf16"), sh.clone(), "bf16", compare(&from_bits(&c.down(&gd)?), &b), TOL_BF16));
                    Ok(rows)
                });
            }
        }

        // The scaled forms (PPO's per-token log-probs at a temperature): logits times a, each
        // row's entropy, and per-row upstream gradients (of both signs, one row's 0).
        for (n, v) in [(33usize, 1000usize), (5, 4097), (9, 50_257)] {
            let a = 1.0 / c.rng.gen_range(0.5f32..1.5);
            let x = c.rand(n * v, -8.0, 8.0);
            let t = c.targets(n, v, 0.25);
            let mut gs = c.rand(n, -2.0, 2.0);
            gs[n / 2] = 0.0;
            for group in [CeGroup::Warp, CeGroup::Block] {
                let gname = if group == CeGroup::Warp { "warp" } else { "block" };
                let sh = format!("N={n} V={v} a={a:.3}");
                for bf in [false, true] {
                    let dt = if bf { "bf16" } else { "f32" };
                    case(&mut out, &format!("ce_scaled_{gname}_{dt}"), &sh, if bf { "bf16" } else { "f32" }, || {
                        let x16 = bf16_bits(&x);
                        let xr = if bf { from_bits(&x16) } else { x.clone() };
                        let f = refs::ce_forward_scaled(&xr, &t, v, a);
                        let (gt, ggs) = (c.up(&t)?, c.up(&gs)?);
                        let (mut gl, mut gl2, mut ge) = (c.nan(n)?, c.nan(n)?, c.nan(n)?);
                        let (loss, lse, ent, dx) = if bf {
                            let gx = c.up(&x16)?;
                            gpu.cross_entropy_fwd_scaled_bf16(group, &gx, &gt, &mut gl, &mut gl2, Some(&mut ge), n, v, a)?;
                            let mut gd = c.up(&vec![0x7fc0u16; n * v])?;
                            gpu.cross_entropy_bwd_scaled_bf16(group, &gx, &gt, &gl2, Some(&ggs), &mut gd, n, v, a, -a)?;
                            gpu.sync(&format!("ce_scaled_{gname}_bf16"))?;
                            (c.down(&gl)?, c.down(&gl2)?, c.down(&ge)?, from_bits(&c.down(&gd)?))
                        } else {
                            let gx = c.up(&x)?;
                            gpu.cross_entropy_fwd_scaled_f32(group, &gx, &gt, &mut gl, &mut gl2, Some(&mut ge), n, v, a)?;
                            let mut gd = c.nan(n * v)?;
                            gpu.cross_entropy_bwd_scaled_f32(group, &gx, &gt, &gl2, Some(&ggs), &mut gd, n, v, a, -a)?;
                            gpu.sync(&format!("ce_scaled_{gname}_f32"))?;
                            (c.down(&gl)?, c.down(&gl2)?, c.down(&ge)?, c.down(&gd)?)
                        };
                        let b = refs::ce_backward_scaled(&xr, &t, &lse, v, a, -a, Some(&gs));
                        Ok(vec![
                            Check::new(&format!("ce_fwd_{gname}_{dt} scaled (loss)"), sh.clone(), "f32", compare(&loss, &f.loss), TOL_F32),
                            Check::new(&format!("ce_fwd_{gname}_{dt} scaled (lse)"), sh.clone(), "f32", compare(&lse, &f.lse), TOL_F32),
                            Check::new(&format!("ce_fwd_{gname}_{dt} scaled (entropy)"), sh.clone(), "f32", compare(&ent, &f.ent), TOL_F32),
                            Check::new(&format!("ce_bwd_{gname}_{dt} scaled, row gradients"), sh.clone(), dt, compare(&dx, &b), if bf { TOL_BF16 } else { TOL_F32 }),
                        ])
                    });
                }
            }
        }

        // Embedding: repeated ids (drawn from a few distinct values), D with and without % 4.
        for (n, v, d, distinct) in [(1usize, 7usize, 4usize, 7usize), (33, 1000, 768, 5), (33, 7, 33, 7), (1000, 50, 64, 3), (64, 50_257, 64, 40), (64, 100, 1600, 10), (9, 11, 1, 2)] {
            let shape = format!("N={n} V={v} D={d}");
            case(&mut out, "embedding", &shape, "f32", || {
                let pool: Vec<i64> = (0..distinct).map(|_| c.rng.gen_range(0..v) as i64).collect();
                let ids: Vec<i64> = (0..n).map(|_| pool[c.rng.gen_range(0..pool.len())]).collect();
                let (table, dout, init) = (c.rand(v * d, -1.0, 1.0), c.rand(n * d, -1.0, 1.0), c.rand(v * d, -1.0, 1.0));
                let (gi, gtab, gdo) = (c.up(&ids)?, c.up(&table)?, c.up(&dout)?);
                let mut go = c.nan(n * d)?;
                gpu.embedding_fwd(&gi, &gtab, &mut go, n, v, d)?;
                gpu.sync("embedding_fwd_f32")?;
                let mut rows = vec![Check::new("embedding_fwd_f32", shape.clone(), "exact", exact(&c.down(&go)?, &refs::embedding_fwd(&ids, &table, d)), 0.0)];
                // Backward adds into dtable: start from random values, not NaN.
                let want = refs::embedding_bwd(&init, &ids, &dout, d);
                let mut gt = c.up(&init)?;
                gpu.embedding_bwd_atomic(&gi, &gdo, &mut gt, n, v, d)?;
                gpu.sync("embedding_bwd_atomic_f32")?;
                rows.push(Check::new("embedding_bwd_atomic_f32", format!("{shape} distinct={distinct}"), "f32", compare(&c.down(&gt)?, &want), TOL_F32));
                let plan = gpu.embedding_bwd_plan(&ids, v)?;
                let mut gt = c.up(&init)?;
                gpu.embedding_bwd_sorted(&plan, &gdo, &mut gt, d)?;
                gpu.sync("embedding_bwd_sorted_f32")?;
                let first = c.down(&gt)?;
                rows.push(Check::new("embedding_bwd_sorted_f32", format!("{shape} distinct={distinct}"), "f32", compare(&first, &want), TOL_F32));
                // Deterministic: a second run is bit-identical.
                let mut gt = c.up(&init)?;
                gpu.embedding_bwd_sorted(&plan, &gdo, &mut gt, d)?;
                gpu.sync("embedding_bwd_sorted_f32")?;
                let again = c.down(&gt)?;
                let diff = first.iter().zip(&again).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                rows.push(Check::new("embedding_bwd_sorted_f32 (bitwise rerun)", shape.clone(), "exact", ErrStats { max_rel: diff as f64, ..Default::default() }, 0.0));
                Ok(rows)
            });
        }

        // Column sums (bias gradient): one split and many, float4 and scalar columns.
        for (r, cc) in [(1usize, 1usize), (33, 7), (1000, 768), (4097, 1001), (8192, 3072), (64, 4), (70_000, 3)] {
            let shape = format!("{r}x{cc}");
            case(&mut out, "sum_rows", &shape, "f32", || {
                let x = c.rand(r * cc, -1.0, 1.0);
                let gx = c.up(&x)?;
                let (mut go, mut gs) = (c.nan(cc)?, c.nan(gpu.sum_rows_scratch_len(r, cc))?);
                gpu.sum_rows(&gx, &mut go, &mut gs, r, cc)?;
                gpu.sync("sum_rows")?;
                let sh = format!("{shape} scratch={}", gpu.sum_rows_scratch_len(r, cc));
                Ok(vec![Check::new(if cc % 4 == 0 { "sum_rows_vec4_f32" } else { "sum_rows_f32" }, sh, "f32", compare(&c.down(&go)?, &refs::sum_rows(&x, r, cc)), TOL_F32)])
            });
        }

        // Global L2 norm: many buffers in one launch, including misaligned views.
        for lens in [vec![1usize], vec![7, 1000, 12_345], vec![(1 << 20) + 3, 5, 768 * 3072, 33, 1]] {
            let shape = format!("buffers={lens:?}");
            case(&mut out, "l2norm", &shape, "f32", || {
                let host: Vec<Vec<f32>> = lens.iter().map(|&n| c.rand(n, -1.0, 1.0)).collect();
                let dev: Vec<CudaSlice<f32>> = host.iter().map(|h| c.up(h)).collect::<Result<_>>()?;
                let refs_in: Vec<&[f32]> = host.iter().map(|h| &h[..]).collect();
                let want = refs::l2norm(&refs_in);
                let bufs: Vec<&CudaSlice<f32>> = dev.iter().collect();
                let mut plan = gpu.l2norm_plan(&bufs)?;
                gpu.l2norm(&mut plan, &bufs)?;
                gpu.sync("l2norm")?;
                let mut rows = vec![Check::new("l2norm_partial+finish_f32", shape.clone(), "f32", compare(&c.down(&plan.out)?, &want), TOL_F32)];
                // Views at odd offsets: the scalar prefix before 16-byte alignment.
                if host.iter().all(|h| h.len() < 4) {
                    return Ok(rows);
                }
                let big = &dev[dev.len() - 1 - (dev.len() > 1) as usize];
                let views = [big.slice(1..), big.slice(3..big.len().clamp(3, 1000))];
                let vrefs: Vec<&cudarc::driver::CudaView<f32>> = views.iter().collect();
                let hb = &host[dev.len() - 1 - (dev.len() > 1) as usize];
                let want = refs::l2norm(&[&hb[1..], &hb[3..hb.len().clamp(3, 1000)]]);
                let mut plan = gpu.l2norm_plan(&vrefs)?;
                gpu.l2norm(&mut plan, &vrefs)?;
                gpu.sync("l2norm (views)")?;
                rows.push(Check::new("l2norm_partial+finish_f32 (offset views)", shape.clone(), "f32", compare(&c.down(&plan.out)?, &want), TOL_F32));
                Ok(rows)
            });
        }

        // Broadcast binary ops: (shape, a strides, b strides, a len, b len).
        type Case<'a> = (&'a str, Vec<usize>, Vec<usize>, Vec<usize>, usize, usize);
        let layouts: Vec<Case> = vec![
            ("contiguous 1", vec![1], vec![1], vec![1], 1, 1),
            ("contiguous 33x1000", vec![33, 1000], vec![1000, 1], vec![1000, 1], 33_000, 33_000),
            ("contiguous 2^20+3", vec![(1 << 20) + 3], vec![1], vec![1], (1 << 20) + 3, (1 << 20) + 3),
            ("bias row [R,C]+[1,C]", vec![257, 768], vec![768, 1], vec![0, 1], 257 * 768, 768),
            ("outer [R,1]+[1,C]", vec![33, 129], vec![1, 0], vec![0, 1], 33, 129),
            ("4-D [2,3,5,7]+[1,3,1,7]", vec![2, 3, 5, 7], vec![105, 35, 7, 1], vec![0, 7, 0, 1], 210, 21),
            ("transposed a [65,33]", vec![65, 33], vec![1, 65], vec![33, 1], 65 * 33, 65 * 33),
            ("scalar b", vec![3, 4, 5], vec![20, 5, 1], vec![0, 0, 0], 60, 1),
            ("last-dim broadcast [1000,5,1]->[1000,5,3]", vec![1000, 5, 3], vec![15, 3, 1], vec![5, 1, 0], 15_000, 5000),
        ];
        for (name, shape, sa, sb, na, nb) in layouts {
            let sh = format!("{name} {shape:?}");
            case(&mut out, "binary", &sh, "f32", || {
                let a = c.rand(na, -4.0, 4.0);
                // b away from 0 (division): magnitude in [0.25, 2), random sign.
                let b: Vec<f32> = c.rand(nb, 0.25, 2.0).into_iter().map(|v| if c.rng.gen_bool(0.5) { -v } else { v }).collect();
                let p = plan_broadcast(&shape, &sa, &sb).map_err(Error::Other)?;
                let (ga, gb) = (c.up(&a)?, c.up(&b)?);
                let mut rows = Vec::new();
                for op in BinaryOp::ALL {
                    let mut go = c.nan(p.n)?;
                    gpu.binary(op, &ga, &sa, &gb, &sb, &mut go, &shape)?;
                    let k = format!("binary_{}_f32{}", op.name(), if p.contiguous { "_contig" } else { "" });
                    gpu.sync(&k)?;
                    let got = c.down(&go)?;
                    rows.push(Check::new(&k, sh.clone(), "f32", compare(&got[..p.n], &refs::binary(op, &a, &b, &p)), TOL_F32));
                }
                Ok(rows)
            });
        }
        out
    }

    // ---------------------------------------------------------------- bandwidth benchmark

    #[derive(Debug, Clone, Serialize)]
    pub struct MemTiming {
        pub name: String,
        pub shape: String,
        /// Fewest bytes the op must move (each input read once, each output written once).
        pub bytes: f64,
        pub median_ms: f64,
        pub gbps: f64,
        /// Against the device-to-device copy measured in the same process (bytes read + written).
        pub pct_of_copy: Option<f64>,
        /// Against a copy of the same bytes (half read, half written) over the same rotating
        /// sets: the ceiling at this size, where a 25 MB op pays the launch and the tail that
        /// the 256 MiB copy of `pct_of_copy` amortizes.
        pub pct_of_same_size_copy: Option<f64>,
        /// Input/output sets rotated per launch so that the working set exceeds 4x the L2 cache.
        pub sets: usize,
        pub error: Option<String>,
    }

    /// Ops [`bench_op`] knows (names as the CLI spells them).
    pub const BENCH_OPS: &[&str] = &["softmax", "layernorm", "gelu", "cross-entropy", "adamw", "embedding", "sum-rows", "l2norm", "binary", "cast"];

    fn l2_bytes(gpu: &Gpu) -> usize {
        gpu.ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE).ok().filter(|&v| v > 0).map(|v| v as usize).unwrap_or(50 << 20)
    }

    /// How many copies of a `bytes_per_set` working set to rotate through (at most 32, at most 16 GiB).
    pub fn sets_for(gpu: &Gpu, bytes_per_set: usize) -> usize {
        let b = bytes_per_set.max(1);
        (4 * l2_bytes(gpu)).div_ceil(b).clamp(1, 32).min(((16usize << 30) / b).max(1))
    }

    /// Median per-launch time in ms: warm-up, then `ITERS` samples, each timing (with CUDA
    /// events) at least 16 launches cycling over the `sets` working sets.
    pub fn time_per_launch(gpu: &Gpu, sets: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<f64> {
        let sets = sets.max(1);
        let per = sets * 16usize.div_ceil(sets);
        for i in 0..per {
            f(i % sets)?;
        }
        gpu.sync("warm-up")?;
        let ev = || gpu.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| Error::cuda("event create", e));
        let mut ms = Vec::with_capacity(ITERS);
        for _ in 0..ITERS {
            let (start, end) = (ev()?, ev()?);
            start.record(&gpu.stream).map_err(|e| Error::cuda("event record", e))?;
            for i in 0..per {
                f(i % sets)?;
            }
            end.record(&gpu.stream).map_err(|e| Error::cuda("event record", e))?;
            ms.push(start.elapsed_ms(&end).map_err(|e| Error::cuda("event elapsed (kernel fault?)", e))? as f64 / per as f64);
        }
        ms.sort_by(|a, b| a.total_cmp(b));
        Ok(ms[ms.len() / 2])
    }

    fn timing(name: &str, shape: &str, bytes: f64, sets: usize, copy: Option<f64>, r: Result<f64>) -> MemTiming {
        let (median_ms, error) = match r {
            Ok(ms) => (ms, None),
            Err(e) => (f64::NAN, Some(e.to_string())),
        };
        let gbps = bytes / (median_ms * 1e-3) / 1e9;
        let pct_of_copy = copy.filter(|c| *c > 0.0 && gbps.is_finite()).map(|c| 100.0 * gbps / c);
        MemTiming { name: name.into(), shape: shape.into(), bytes, median_ms, gbps, pct_of_copy, pct_of_same_size_copy: None, sets, error }
    }

    /// cuMemcpyDtoD of a 256 MiB buffer; GB/s counts bytes read plus bytes written.
    pub fn copy_bandwidth(gpu: &Gpu) -> Result<MemTiming> {
        let n = 64usize << 20; // f32 elements = 256 MiB
        let src = gpu.stream.clone_htod(&vec![1.5f32; n]).map_err(|e| Error::cuda("copy bench upload", e))?;
        let mut dst = gpu.stream.alloc_zeros::<f32>(n).map_err(|e| Error::cuda("copy bench alloc", e))?;
        let r = time_per_launch(gpu, 1, |_| gpu.stream.memcpy_dtod(&src, &mut dst).map_err(|e| Error::cuda("cuMemcpyDtoD 256 MiB", e)));
        Ok(timing("memcpy D2D (read+write)", "256 MiB", 2.0 * (n * 4) as f64, 1, None, r))
    }

    /// GB/s (read + written) of cuMemcpyDtoD moving `bytes` in all (half read, half written),
    /// cycling over at least `sets` buffer pairs, and enough that they exceed 4x the L2 (the
    /// op's own sets were sized for its buffers, which may be larger than the copy's).
    fn copy_gbps_at(gpu: &Gpu, bytes: f64, sets: usize) -> Result<f64> {
        let n = ((bytes / 8.0) as usize).max(1); // f32 elements per buffer
        let sets = sets.max(sets_for(gpu, 8 * n));
        let mut pairs: Vec<(CudaSlice<f32>, CudaSlice<f32>)> = (0..sets)
            .map(|_| Ok((gpu.stream.alloc_zeros::<f32>(n).map_err(|e| Error::cuda("same-size copy alloc", e))?, gpu.stream.alloc_zeros::<f32>(n).map_err(|e| Error::cuda("same-size copy alloc", e))?)))
            .collect::<Result<_>>()?;
        let ms = time_per_launch(gpu, sets, |i| {
            let (src, dst) = &mut pairs[i];
            gpu.stream.memcpy_dtod(src, dst).map_err(|e| Error::cuda("same-size cuMemcpyDtoD", e))
        })?;
        Ok(2.0 * (n * 4) as f64 / (ms * 1e-3) / 1e9)
    }

    /// Fills `pct_of_same_size_copy` of each timed row (one copy timing per distinct size).
    fn add_same_size_copies(gpu: &Gpu, rows: &mut [MemTiming]) {
        let mut done: Vec<((u64, usize), Option<f64>)> = Vec::new();
        for t in rows.iter_mut().filter(|t| t.error.is_none() && t.gbps.is_finite()) {
            let key = (t.bytes as u64, t.sets);
            let copy = match done.iter().find(|(k, _)| *k == key) {
                Some((_, c)) => *c,
                None => {
                    let c = copy_gbps_at(gpu, t.bytes, t.sets).ok();
                    done.push((key, c));
                    c
                }
            };
            t.pct_of_same_size_copy = copy.filter(|c| *c > 0.0).map(|c| 100.0 * t.gbps / c);
        }
    }

    fn rand_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(0.001f32..1.0) * if rng.gen::<bool>() { scale } else { -scale }).collect()
    }

    /// v1, and v2 where rows of `width` fit it: (version, entry name) for `{stem}_f32`.
    fn row_versions(stem: &str, width: usize) -> Vec<(RowKernel, String)> {
        let mut v = vec![(RowKernel::V1, format!("{stem}_f32"))];
        if let Some(e) = RowKernel::v2_entry(&format!("{stem}_v2_f32"), width) {
            v.push((RowKernel::V2, e));
        }
        v
    }

    /// GELU forward (and backward) over `n` rotating sets of `x`'s element type.
    fn gelu_rows<T: crate::device::RowElem + cudarc::driver::ValidAsZeroBits>(
        gpu: &Gpu, x: &[T], n: usize, backward: bool, row: &mut impl FnMut(&str, f64, usize, Result<f64>),
    ) -> Result<()> {
        let up = || gpu.stream.clone_htod(x).map_err(|e| Error::cuda("bench upload", e));
        let mut s: Vec<(CudaSlice<T>, CudaSlice<T>, CudaSlice<T>)> = (0..n).map(|_| Ok((up()?, up()?, up()?))).collect::<Result<_>>()?;
        let bytes = std::mem::size_of_val(x) as f64;
        row(&format!("gelu_fwd_{}", T::NAME), 2.0 * bytes, n, time_per_launch(gpu, n, |i| {
            let (x, y, _) = &mut s[i];
            gpu.gelu_fwd(x, y)
        }));
        if backward {
            row(&format!("gelu_bwd_{}", T::NAME), 3.0 * bytes, n, time_per_launch(gpu, n, |i| {
                let (x, dy, dx) = &mut s[i];
                gpu.gelu_bwd(x, dy, dx)
            }));
        }
        Ok(())
    }

    fn to_bf16_bits(v: &[f32]) -> Vec<u16> {
        v.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect()
    }

    fn dims(shape: &[usize], n: usize, form: &str, op: &str) -> Result<()> {
        if shape.len() != n || shape.contains(&0) {
            return Err(Error::Other(format!("bench {op}: shape must be {form} with sizes > 0, got {shape:?}")));
        }
        Ok(())
    }

    /// Times one op (and its backward when asked) at `shape`; `copy_gbps` from [`copy_bandwidth`].
    pub fn bench_op(gpu: &Gpu, op: &str, shape: &[usize], backward: bool, copy_gbps: Option<f64>) -> Result<Vec<MemTiming>> {
        let mut rng = StdRng::seed_from_u64(0xbe7c);
        let st = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        let up = |v: &[f32]| gpu.stream.clone_htod(v).map_err(|e| Error::cuda("bench upload", e));
        let up16 = |v: &[u16]| gpu.stream.clone_htod(v).map_err(|e| Error::cuda("bench upload", e));
        let mut out = Vec::new();
        let mut row = |name: &str, bytes: f64, sets: usize, r: Result<f64>| out.push(timing(name, &st, bytes, sets, copy_gbps, r));
        match op {
            "softmax" => {
                dims(shape, 2, "RxC", op)?;
                let (r, c) = (shape[0], shape[1]);
                let bytes = 2.0 * 4.0 * (r * c) as f64;
                let n = sets_for(gpu, bytes as usize);
                let x = rand_vec(&mut rng, r * c, 4.0);
                let mut s: Vec<(CudaSlice<f32>, CudaSlice<f32>)> = (0..n).map(|_| Ok((up(&x)?, up(&x)?))).collect::<Result<_>>()?;
                for (v, name) in row_versions("softmax_fwd", c) {
                    row(&name, bytes, n, time_per_launch(gpu, n, |i| {
                        let (x, y) = &mut s[i];
                        gpu.softmax_fwd_with(v, x, y, r, c)
                    }));
                }
                if backward {
                    // dx = y (dy - sum(y dy)): reads y and dy, writes dx; dy = the input set (random).
                    let mut dx = up(&x)?;
                    row("softmax_bwd_f32", 1.5 * bytes, n, time_per_launch(gpu, n, |i| {
                        let (x, y) = &s[i];
                        gpu.softmax_bwd(y, x, &mut dx, r, c, false)
                    }));
                }
                if let Some(name) = RowKernel::v2_entry("softmax_fwd_v2_bf16", c) {
                    // bf16 rows: half the bytes.
                    let x16 = to_bf16_bits(&x);
                    let mut s16: Vec<(CudaSlice<u16>, CudaSlice<u16>)> = (0..n).map(|_| Ok((up16(&x16)?, up16(&x16)?))).collect::<Result<_>>()?;
                    row(&name, bytes / 2.0, n, time_per_launch(gpu, n, |i| {
                        let (x, y) = &mut s16[i];
                        gpu.softmax_fwd_with(RowKernel::V2, x, y, r, c)
                    }));
                }
            }
            "layernorm" => {
                dims(shape, 2, "RxC", op)?;
                let (r, c) = (shape[0], shape[1]);
                let (rc, cf, rf) = ((r * c) as f64, c as f64, r as f64);
                let fwd_bytes = 4.0 * (2.0 * rc + 2.0 * cf + 2.0 * rf);
                let n = sets_for(gpu, (4.0 * 4.0 * rc) as usize);
                let (x, g, b) = (rand_vec(&mut rng, r * c, 2.0), rand_vec(&mut rng, c, 1.0), rand_vec(&mut rng, c, 1.0));
                let (gg, gb) = (up(&g)?, up(&b)?);
                struct Ln {
                    x: CudaSlice<f32>,
                    y: CudaSlice<f32>,
                    mean: CudaSlice<f32>,
                    rstd: CudaSlice<f32>,
                    dx: CudaSlice<f32>,
                }
                let mut s: Vec<Ln> = (0..n)
                    .map(|_| Ok(Ln { x: up(&x)?, y: up(&x)?, mean: up(&x[..r])?, rstd: up(&x[..r])?, dx: up(&x)? }))
                    .collect::<Result<_>>()?;
                for (v, name) in row_versions("layernorm_fwd", c) {
                    row(&name, fwd_bytes, n, time_per_launch(gpu, n, |i| {
                        let l = &mut s[i];
                        gpu.layernorm_fwd_with(v, &l.x, &gg, &gb, &mut l.y, &mut l.mean, &mut l.rstd, r, c, 1e-5)
                    }));
                }
                if backward {
                    // dy = the forward's y buffer (random, finite); fewest bytes: read x, dy, gamma,
                    // mean, rstd; write dx, dgamma, dbeta (v2 comes close: it adds only its partial
                    // sums; v1 reads x and dy twice).
                    let bwd_bytes = 4.0 * (3.0 * rc + 3.0 * cf + 2.0 * rf);
                    let (mut dg, mut db) = (up(&g)?, up(&b)?);
                    for (v, name) in row_versions("layernorm_bwd", c) {
                        let name = if v == RowKernel::V1 { "layernorm_bwd_f32 (dx + dparams kernels)".to_string() } else { format!("{name} (fused + finish)") };
                        row(&name, bwd_bytes, n, time_per_launch(gpu, n, |i| {
                            let l = &mut s[i];
                            gpu.layernorm_bwd_with(v, &l.x, &gg, &l.mean, &l.rstd, &l.y, &mut l.dx, &mut dg, &mut db, r, c)
                        }));
                    }
                }
                if let Some(fwd) = RowKernel::v2_entry("layernorm_fwd_v2_bf16", c) {
                    // bf16 activations (x, y, dy, dx): their bytes halved; parameters and statistics f32.
                    let x16 = to_bf16_bits(&x);
                    let mut s16: Vec<(CudaSlice<u16>, CudaSlice<u16>, CudaSlice<u16>)> = (0..n).map(|_| Ok((up16(&x16)?, up16(&x16)?, up16(&x16)?))).collect::<Result<_>>()?;
                    let (mut mean, mut rstd) = (up(&x[..r])?, up(&x[..r])?);
                    row(&fwd, 2.0 * 2.0 * rc + 4.0 * (2.0 * cf + 2.0 * rf), n, time_per_launch(gpu, n, |i| {
                        let (x, y, _) = &mut s16[i];
                        gpu.layernorm_fwd_with(RowKernel::V2, x, &gg, &gb, y, &mut mean, &mut rstd, r, c, 1e-5)
                    }));
                    if backward {
                        let name = RowKernel::v2_entry("layernorm_bwd_v2_bf16", c).unwrap_or_default();
                        let (mut dg, mut db) = (up(&g)?, up(&b)?);
                        row(&format!("{name} (fused + finish)"), 2.0 * 3.0 * rc + 4.0 * (3.0 * cf + 2.0 * rf), n, time_per_launch(gpu, n, |i| {
                            let (x, dy, dx) = &mut s16[i];
                            gpu.layernorm_bwd_with(RowKernel::V2, x, &gg, &mean, &rstd, dy, dx, &mut dg, &mut db, r, c)
                        }));
                    }
                    // Autocast's build: f32 x (the residual stream) to a bf16 y; back from a bf16
                    // dy to an f32 dx.
                    let fwd = RowKernel::v2_entry("layernorm_fwd_v2_f32_bf16", c).unwrap_or_default();
                    row(&fwd, (4.0 + 2.0) * rc + 4.0 * (2.0 * cf + 2.0 * rf), n, time_per_launch(gpu, n, |i| {
                        let (l, (_, y, _)) = (&s[i], &mut s16[i]);
                        gpu.layernorm_fwd_with(RowKernel::V2, &l.x, &gg, &gb, y, &mut mean, &mut rstd, r, c, 1e-5)
                    }));
                    if backward {
                        let name = RowKernel::v2_entry("layernorm_bwd_v2_f32_bf16", c).unwrap_or_default();
                        let (mut dg, mut db) = (up(&g)?, up(&b)?);
                        row(&format!("{name} (fused + finish)"), (4.0 + 2.0 + 4.0) * rc + 4.0 * (3.0 * cf + 2.0 * rf), n, time_per_launch(gpu, n, |i| {
                            let (l, (_, dy, _)) = (&mut s[i], &s16[i]);
                            gpu.layernorm_bwd_with(RowKernel::V2, &l.x, &gg, &mean, &rstd, dy, &mut l.dx, &mut dg, &mut db, r, c)
                        }));
                    }
                }
            }
            "gelu" => {
                dims(shape, 1, "N", op)?;
                let len = shape[0];
                let n = sets_for(gpu, 3 * 4 * len);
                let x = rand_vec(&mut rng, len, 4.0);
                // f32, then bf16 storage (half the bytes).
                gelu_rows(gpu, &x, n, backward, &mut row)?;
                gelu_rows(gpu, &to_bf16_bits(&x), n, backward, &mut row)?;
            }
            "cross-entropy" => {
                dims(shape, 2, "NxV", op)?;
                let (nr, v) = (shape[0], shape[1]);
                let nv = (nr * v) as f64;
                let x = rand_vec(&mut rng, nr * v, 8.0);
                let t: Vec<i64> = (0..nr).map(|i| if i % 16 == 15 { -100 } else { ((i * 7919) % v) as i64 }).collect();
                let gt = gpu.stream.clone_htod(&t).map_err(|e| Error::cuda("bench upload", e))?;
                let g = CeGroup::Auto.resolve(v);
                let gname = if g == CeGroup::Warp { "warp" } else { "block" };
                for bf in [false, true] {
                    let es = if bf { 2.0 } else { 4.0 };
                    let per_set = (nv * es * if backward { 2.0 } else { 1.0 }) as usize;
                    let n = sets_for(gpu, per_set);
                    let fwd_bytes = nv * es + nr as f64 * 16.0;
                    let bwd_bytes = 2.0 * nv * es + nr as f64 * 12.0;
                    let (mut loss, mut lse) = (up(&vec![0.0; nr])?, up(&vec![0.0; nr])?);
                    if bf {
                        let x16 = bf16_bits(&x);
                        let mut s: Vec<(CudaSlice<u16>, CudaSlice<u16>)> = (0..n)
                            .map(|_| Ok((gpu.stream.clone_htod(&x16).map_err(|e| Error::cuda("bench upload", e))?, if backward { gpu.stream.clone_htod(&x16).map_err(|e| Error::cuda("bench upload", e))? } else { gpu.stream.alloc_zeros::<u16>(1).map_err(|e| Error::cuda("bench alloc", e))? })))
                            .collect::<Result<_>>()?;
                        row(&format!("ce_fwd_{gname}_bf16"), fwd_bytes, n, time_per_launch(gpu, n, |i| gpu.cross_entropy_fwd_bf16(g, &s[i].0, &gt, &mut loss, &mut lse, nr, v)));
                        // PPO's per-token log-probs: at a temperature, with the entropy.
                        let mut ent = up(&vec![0.0; nr])?;
                        row(&format!("ce_fwd_{gname}_bf16 (a = 1/0.7, + entropy)"), fwd_bytes + nr as f64 * 4.0, n, time_per_launch(gpu, n, |i| {
                            gpu.cross_entropy_fwd_scaled_bf16(g, &s[i].0, &gt, &mut loss, &mut lse, Some(&mut ent), nr, v, 1.0 / 0.7)
                        }));
                        if backward {
                            row(&format!("ce_bwd_{gname}_bf16 (bf16 dlogits)"), bwd_bytes, n, time_per_launch(gpu, n, |i| {
                                let (x, d) = &mut s[i];
                                gpu.cross_entropy_bwd_bf16(g, x, &gt, &lse, d, nr, v, 1e-3)
                            }));
                            let gs = up(&vec![0.5; nr])?;
                            row(&format!("ce_bwd_{gname}_bf16 (a = 1/0.7, row gradients)"), bwd_bytes + nr as f64 * 4.0, n, time_per_launch(gpu, n, |i| {
                                let (x, d) = &mut s[i];
                                gpu.cross_entropy_bwd_scaled_bf16(g, x, &gt, &lse, Some(&gs), d, nr, v, 1.0 / 0.7, -1.0 / 0.7)
                            }));
                        }
                    } else {
                        let mut s: Vec<(CudaSlice<f32>, CudaSlice<f32>)> =
                            (0..n).map(|_| Ok((up(&x)?, if backward { up(&x)? } else { up(&[0.0])? }))).collect::<Result<_>>()?;
                        row(&format!("ce_fwd_{gname}_f32"), fwd_bytes, n, time_per_launch(gpu, n, |i| gpu.cross_entropy_fwd_f32(g, &s[i].0, &gt, &mut loss, &mut lse, nr, v)));
                        if backward {
                            row(&format!("ce_bwd_{gname}_f32"), bwd_bytes, n, time_per_launch(gpu, n, |i| {
                                let (x, d) = &mut s[i];
                                gpu.cross_entropy_bwd_f32(g, x, &gt, &lse, d, nr, v, 1e-3)
                            }));
                        }
                    }
                }
            }
            "adamw" => {
                dims(shape, 1, "N", op)?;
                let len = shape[0];
                let n = sets_for(gpu, 4 * 4 * len);
                let (p, g, m) = (rand_vec(&mut rng, len, 1.0), rand_vec(&mut rng, len, 1.0), rand_vec(&mut rng, len, 0.1));
                let v: Vec<f32> = m.iter().map(|x| x * x).collect();
                let mut s: Vec<[CudaSlice<f32>; 4]> = (0..n).map(|_| Ok([up(&p)?, up(&g)?, up(&m)?, up(&v)?])).collect::<Result<_>>()?;
                let h = crate::reference::AdamWParams { lr: 3e-4, b1: 0.9, b2: 0.95, eps: 1e-8, wd: 0.1, step: 10 };
                row("adamw_f32", 7.0 * 4.0 * len as f64, n, time_per_launch(gpu, n, |i| {
                    let [p, g, m, v] = &mut s[i];
                    gpu.adamw(p, g, m, v, h)
                }));
                drop(s);
                // A model's parameters: GPT-2 124M's 148 tensors, one launch each vs one in all.
                let (d, layers) = (768usize, 12);
                let mut sizes = vec![50257 * d, 1024 * d];
                for _ in 0..layers {
                    sizes.extend([d, d, d * 3 * d, 3 * d, d * d, d, d, d, d * 4 * d, 4 * d, 4 * d * d, d]);
                }
                sizes.extend([d, d]);
                let total: usize = sizes.iter().sum();
                let fill = |n: usize, x: f32| gpu.stream.clone_htod(&vec![x; n]).map_err(|e| Error::cuda("upload", e));
                let mut t: Vec<[CudaSlice<f32>; 4]> = sizes.iter().map(|&n| Ok([fill(n, 0.5)?, fill(n, 0.01)?, fill(n, 1e-3)?, fill(n, 1e-6)?])).collect::<Result<_>>()?;
                let what = format!("GPT-2 124M's {} tensors", sizes.len());
                let bytes = 7.0 * 4.0 * total as f64;
                let per = time_per_launch(gpu, 1, |_| t.iter_mut().try_for_each(|[p, g, m, v]| gpu.adamw(p, g, m, v, h)));
                row(&format!("adamw_f32, a launch per tensor ({what})"), bytes, 1, per);
                let multi = time_per_launch(gpu, 1, |_| {
                    let mut list: Vec<_> = t.iter_mut().map(|[p, g, m, v]| crate::adamw::AdamwTensor { p, g, m, v, h }).collect();
                    gpu.adamw_multi(&mut list, 0.9, 0.95, 1e-8)
                });
                row(&format!("adamw_multi_f32, one launch ({what})"), bytes, 1, multi);
            }
            "embedding" => {
                dims(shape, 3, "NxVxD", op)?;
                let (nr, v, d) = (shape[0], shape[1], shape[2]);
                let nd = (nr * d) as f64;
                let ids: Vec<i64> = (0..nr).map(|_| rng.gen_range(0..v) as i64).collect();
                let gi = gpu.stream.clone_htod(&ids).map_err(|e| Error::cuda("bench upload", e))?;
                let table = rand_vec(&mut rng, v * d, 1.0);
                let n = sets_for(gpu, 4 * (v * d + nr * d));
                let mut s: Vec<(CudaSlice<f32>, CudaSlice<f32>)> = (0..n).map(|_| Ok((up(&table)?, up(&table[..nr * d])?))).collect::<Result<_>>()?;
                // Forward: ids, the N table rows read, N rows written.
                row("embedding_fwd_f32", nr as f64 * 8.0 + 2.0 * 4.0 * nd, n, time_per_launch(gpu, n, |i| {
                    let (t, o) = &mut s[i];
                    gpu.embedding_fwd(&gi, t, o, nr, v, d)
                }));
                if backward {
                    // Backward: ids, dout read, each touched dtable row read and written (repeats counted).
                    let bytes = nr as f64 * 8.0 + 3.0 * 4.0 * nd;
                    row("embedding_bwd_atomic_f32", bytes, n, time_per_launch(gpu, n, |i| {
                        let (t, o) = &mut s[i];
                        gpu.embedding_bwd_atomic(&gi, o, t, nr, v, d)
                    }));
                    let plan = gpu.embedding_bwd_plan(&ids, v)?;
                    row("embedding_bwd_sorted_f32 (deterministic)", bytes + nr as f64 * 4.0, n, time_per_launch(gpu, n, |i| {
                        let (t, o) = &mut s[i];
                        gpu.embedding_bwd_sorted(&plan, o, t, d)
                    }));
                }
            }
            "sum-rows" => {
                dims(shape, 2, "RxC", op)?;
                let (r, c) = (shape[0], shape[1]);
                let n = sets_for(gpu, 4 * r * c);
                let x = rand_vec(&mut rng, r * c, 1.0);
                let s: Vec<CudaSlice<f32>> = (0..n).map(|_| up(&x)).collect::<Result<_>>()?;
                let (mut o, mut scratch) = (up(&vec![0.0; c])?, up(&vec![0.0; gpu.sum_rows_scratch_len(r, c).max(1)])?);
                row("sum_rows (bias grad)", 4.0 * (r * c + c) as f64, n, time_per_launch(gpu, n, |i| gpu.sum_rows(&s[i], &mut o, &mut scratch, r, c)));
            }
            "l2norm" => {
                dims(shape, 2, "KxN (K buffers of N)", op)?;
                let (k, len) = (shape[0], shape[1]);
                let n = sets_for(gpu, 4 * k * len);
                let x = rand_vec(&mut rng, len, 1.0);
                let bufs: Vec<Vec<CudaSlice<f32>>> = (0..n).map(|_| (0..k).map(|_| up(&x)).collect::<Result<_>>()).collect::<Result<_>>()?;
                let refs_: Vec<Vec<&CudaSlice<f32>>> = bufs.iter().map(|b| b.iter().collect()).collect();
                let mut plans: Vec<L2NormPlan> = refs_.iter().map(|r| gpu.l2norm_plan(r)).collect::<Result<_>>()?;
                row("l2norm (partial + finish)", 4.0 * (k * len) as f64, n, time_per_launch(gpu, n, |i| gpu.l2norm(&mut plans[i], &refs_[i])));
            }
            "binary" => {
                dims(shape, 2, "RxC", op)?;
                let (r, c) = (shape[0], shape[1]);
                let n = sets_for(gpu, 3 * 4 * r * c);
                let a = rand_vec(&mut rng, r * c, 2.0);
                let b: Vec<f32> = rand_vec(&mut rng, r * c, 2.0).into_iter().map(|v| v + v.signum() * 0.5).collect();
                let mut s: Vec<[CudaSlice<f32>; 3]> = (0..n).map(|_| Ok([up(&a)?, up(&b)?, up(&a)?])).collect::<Result<_>>()?;
                for op in BinaryOp::ALL {
                    row(&format!("binary_{}_f32_contig", op.name()), 3.0 * 4.0 * (r * c) as f64, n, time_per_launch(gpu, n, |i| {
                        let [x, y, o] = &mut s[i];
                        gpu.binary(op, x, &[c, 1], y, &[c, 1], o, &[r, c])
                    }));
                }
                row("binary_add_f32 bias row [R,C]+[1,C]", 4.0 * (2 * r * c + c) as f64, n, time_per_launch(gpu, n, |i| {
                    let [x, y, o] = &mut s[i];
                    gpu.binary(BinaryOp::Add, x, &[c, 1], y, &[0, 1], o, &[r, c])
                }));
                row("binary_mul_f32 column [R,C]*[R,1]", 4.0 * (2 * r * c + r) as f64, n, time_per_launch(gpu, n, |i| {
                    let [x, y, o] = &mut s[i];
                    gpu.binary(BinaryOp::Mul, x, &[c, 1], y, &[1, 0], o, &[r, c])
                }));
            }
            "cast" => {
                // f32 [R, C] to bf16 bits: read 4 bytes, write 2 per element. As stored, then the
                // transposed view [C, R] (a backward's Xᵀ) by the strided kernel and by the tiled one.
                dims(shape, 2, "RxC", op)?;
                let (r, c) = (shape[0], shape[1]);
                let bytes = 6.0 * (r * c) as f64;
                let n = sets_for(gpu, 6 * r * c);
                let x = rand_vec(&mut rng, r * c, 2.0);
                let mut s: Vec<(CudaSlice<f32>, CudaSlice<u16>)> = (0..n).map(|_| Ok((up(&x)?, up16(&vec![0u16; r * c])?))).collect::<Result<_>>()?;
                row("cast_bf16_strided, row-major", bytes, n, time_per_launch(gpu, n, |i| {
                    let (x, y) = &mut s[i];
                    gpu.cast_bf16_strided(x, 0, &[r, c], &[c, 1], y, c, c)
                }));
                row("cast_bf16_strided, transposed view", bytes, n, time_per_launch(gpu, n, |i| {
                    let (x, y) = &mut s[i];
                    gpu.cast_bf16_strided(x, 0, &[c, r], &[1, c], y, r, r)
                }));
                let t = crate::copy::TransposedBatch { batch: 1, rows: c, cols: r, ld: c, batch_stride: 0 };
                row("cast_bf16_transposed (tiled), transposed view", bytes, n, time_per_launch(gpu, n, |i| {
                    let (x, y) = &mut s[i];
                    gpu.cast_bf16_transposed(x, 0, t, y, r)
                }));
            }
            other => return Err(Error::Other(format!("bench: unknown memory-bound op {other:?} (known: {})", BENCH_OPS.join(", ")))),
        }
        add_same_size_copies(gpu, &mut out);
        Ok(out)
    }
}
