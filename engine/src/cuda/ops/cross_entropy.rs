//! Fused cross-entropy forward and backward over the logits' rows (mean over kept targets, or
//! per row for PPO), bf16 logits read as they are, the probabilities never stored.

use super::buffers::*;
use crate::cuda::device::{gpu, CudaStorage};
use crate::shape::Layout;
use crate::storage::Storage;
use crate::{Result, Tensor};
use kernels::memops::CeGroup;

/// Mean cross-entropy over the rows whose target is kept: (loss [], lse [rows]); bf16 logits
/// read as they are (the logits are the largest activation: [tokens, vocabulary]).
pub(crate) fn cross_entropy(logits: &Tensor, targets: &[i64], v: usize) -> Result<(Tensor, Tensor)> {
    let (dev, op) = (ordinal(logits), "cross_entropy");
    let g = gpu(dev)?;
    let n = targets.len();
    let t = ids_on(&g, targets, op)?;
    let (mut loss, mut lse, mut mean) = (alloc(&g, n, op)?, alloc(&g, n, op)?, alloc(&g, 2, op)?);
    if is_bf16(logits) {
        let x = bf16_of(logits, op)?;
        g.cross_entropy_fwd_bf16(CeGroup::Auto, &x, &t, &mut loss, &mut lse, n, v).map_err(err(op))?;
    } else {
        let x = f32_of(logits, op)?;
        g.cross_entropy_fwd_f32(CeGroup::Auto, &x, &t, &mut loss, &mut lse, n, v).map_err(err(op))?;
    }
    g.cross_entropy_mean(&loss, &t, n, &mut mean).map_err(err(op))?;
    // `mean` holds [mean, kept rows]: the scalar is its first element.
    let loss = Tensor::from_parts(Storage::Cuda(CudaStorage::F32(mean, dev)), Layout::contiguous(&[]), false, None, false);
    Ok((loss, tensor(lse, &[n], dev)))
}

/// d(logits) = scale · (softmax − onehot), rows with ignored targets 0; in the logits' type.
pub(crate) fn cross_entropy_backward(logits: &Tensor, targets: &[i64], lse: &Tensor, scale: f32) -> Result<Tensor> {
    let (dev, op) = (ordinal(logits), "cross_entropy backward");
    let g = gpu(dev)?;
    let (n, v) = (targets.len(), *logits.shape().last().expect("rank >= 1"));
    let l = f32_of(lse, op)?;
    let t = ids_on(&g, targets, op)?;
    if is_bf16(logits) {
        let x = bf16_of(logits, op)?;
        let mut dx = alloc16(&g, n * v, op)?;
        g.cross_entropy_bwd_bf16(CeGroup::Auto, &x, &t, &l, &mut dx, n, v, scale).map_err(err(op))?;
        return Ok(tensor16(dx, logits.shape(), dev));
    }
    let x = f32_of(logits, op)?;
    let mut dx = alloc(&g, n * v, op)?;
    g.cross_entropy_bwd_f32(CeGroup::Auto, &x, &t, &l, &mut dx, n, v, scale).map_err(err(op))?;
    Ok(tensor(dx, logits.shape(), dev))
}

/// Per-row cross-entropy of `a` · logits, unreduced: (loss [n], lse [n], and with `entropy`
/// each row's entropy [n]), all f32; bf16 logits read as they are.
pub(crate) fn cross_entropy_rows(logits: &Tensor, targets: &[i64], v: usize, a: f32, entropy: bool) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let (dev, op) = (ordinal(logits), "token_logprobs");
    let g = gpu(dev)?;
    let n = targets.len();
    let t = ids_on(&g, targets, op)?;
    let (mut loss, mut lse) = (alloc(&g, n, op)?, alloc(&g, n, op)?);
    let mut ent = if entropy { Some(alloc(&g, n, op)?) } else { None };
    if is_bf16(logits) {
        let x = bf16_of(logits, op)?;
        g.cross_entropy_fwd_scaled_bf16(CeGroup::Auto, &x, &t, &mut loss, &mut lse, ent.as_mut(), n, v, a).map_err(err(op))?;
    } else {
        let x = f32_of(logits, op)?;
        g.cross_entropy_fwd_scaled_f32(CeGroup::Auto, &x, &t, &mut loss, &mut lse, ent.as_mut(), n, v, a).map_err(err(op))?;
    }
    Ok((tensor(loss, &[n], dev), tensor(lse, &[n], dev), ent.map(|e| tensor(e, &[n], dev))))
}

/// The gradient of `cross_entropy_rows`' loss weighted by the upstream `g` (one value a row):
/// d(logits) = scale · g[row] · (softmax(a x) − onehot), in the logits' type.
pub(crate) fn cross_entropy_rows_backward(logits: &Tensor, targets: &[i64], lse: &Tensor, a: f32, scale: f32, g_rows: &Tensor) -> Result<Tensor> {
    let (dev, op) = (ordinal(logits), "token_logprobs backward");
    let g = gpu(dev)?;
    let (n, v) = (targets.len(), *logits.shape().last().expect("rank >= 1"));
    let (l, gr) = (f32_of(lse, op)?, f32_of(g_rows, op)?);
    let t = ids_on(&g, targets, op)?;
    if is_bf16(logits) {
        let x = bf16_of(logits, op)?;
        let mut dx = alloc16(&g, n * v, op)?;
        g.cross_entropy_bwd_scaled_bf16(CeGroup::Auto, &x, &t, &l, Some(&gr), &mut dx, n, v, a, scale).map_err(err(op))?;
        return Ok(tensor16(dx, logits.shape(), dev));
    }
    let x = f32_of(logits, op)?;
    let mut dx = alloc(&g, n * v, op)?;
    g.cross_entropy_bwd_scaled_f32(CeGroup::Auto, &x, &t, &l, Some(&gr), &mut dx, n, v, a, scale).map_err(err(op))?;
    Ok(tensor(dx, logits.shape(), dev))
}
