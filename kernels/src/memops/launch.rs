//! Typed launchers for the memory-bound kernels: argument and size checks, grids, and the
//! plans (L2 norm, deterministic embedding backward) that a caller builds once and reuses.

use super::*;
use crate::device::Gpu;
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};

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
