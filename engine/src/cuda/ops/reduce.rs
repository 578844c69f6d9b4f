//! Sums over dims, and the global L2 norm of many tensors in one fused reduction.

use super::buffers::*;
use crate::cuda::device::gpu;
use crate::{Error, Result, Tensor};
use cudarc::driver::CudaView;

/// Sum over `dims` (kept as size 1): the reduced dims are moved to the front and gathered, so
/// that the sum is one column reduction over [reduced, kept].
pub(crate) fn sum(x: &Tensor, dims: &[usize], keep_shape: &[usize]) -> Result<Tensor> {
    let (dev, op) = (ordinal(x), "sum");
    let g = gpu(dev)?;
    let mut perm: Vec<usize> = dims.to_vec();
    perm.extend((0..x.rank()).filter(|d| !dims.contains(d)));
    let reduced: usize = dims.iter().map(|&d| x.shape()[d]).product();
    let kept = x.numel() / reduced.max(1);
    let moved = x.detach().permute(&perm)?;
    let v = f32_of(&moved, op)?;
    if reduced == 0 {
        return Ok(tensor(zeros(&g, kept, op)?, keep_shape, dev));
    }
    let mut out = alloc(&g, kept, op)?;
    let mut scratch = zeros(&g, g.sum_rows_scratch_len(reduced, kept), op)?;
    g.sum_rows(&v, &mut out, &mut scratch, reduced, kept).map_err(err(op))?;
    Ok(tensor(out, keep_shape, dev))
}

/// The L2 norm over all of `ts` (f32 on one CUDA device): one fused reduction, one number back.
pub(crate) fn global_norm(ts: &[&Tensor]) -> Result<f32> {
    let Some(first) = ts.first() else { return Ok(0.0) };
    let (dev, op) = (ordinal(first), "global_norm");
    let g = gpu(dev)?;
    let views = ts.iter().map(|t| f32_of(t, op)).collect::<Result<Vec<_>>>()?;
    // Each buffer cut to its tensor's elements: an empty tensor's buffer holds one unused element.
    let cut: Vec<CudaView<f32>> = views.iter().zip(ts).map(|(v, t)| v.slice(0..t.numel())).collect();
    let bufs: Vec<&CudaView<f32>> = cut.iter().collect();
    let mut plan = g.l2norm_plan(&bufs).map_err(err(op))?;
    g.l2norm(&mut plan, &bufs).map_err(err(op))?;
    let out = g.stream.clone_dtoh(&plan.out).map_err(|e| Error::Cuda(format!("{op}: reading the norm: {e:?}")))?;
    Ok(out[0])
}
