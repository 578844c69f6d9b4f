//! Embedding rows, gather along the last dim, and their scatter-add gradients.

use super::buffers::*;
use super::copy::contiguous;
use crate::cuda::device::gpu;
use crate::{Result, Tensor};

/// Rows `ids` of `table` [V, D] (validated on the host: the kernel gives NaN for a bad id).
pub(crate) fn embedding(table: &Tensor, ids: &[i64]) -> Result<Tensor> {
    let (dev, op) = (ordinal(table), "index_select");
    let g = gpu(dev)?;
    let (v, d) = (table.shape()[0], table.numel() / table.shape()[0].max(1));
    let tv = f32_of(table, op)?;
    let gids = ids_on(&g, ids, op)?;
    let mut out = alloc(&g, ids.len() * d, op)?;
    g.embedding_fwd(&gids, &tv, &mut out, ids.len(), v, d).map_err(err(op))?;
    let mut shape = table.shape().to_vec();
    shape[0] = ids.len();
    Ok(tensor(out, &shape, dev))
}

/// The gradient of `embedding`: `dout` rows added into zeros of `shape` at rows `ids`.
pub(crate) fn embedding_backward(dout: &Tensor, shape: &[usize], ids: &[i64]) -> Result<Tensor> {
    let (dev, op) = (ordinal(dout), "index_add");
    let g = gpu(dev)?;
    let (v, d) = (shape[0], shape.iter().skip(1).product::<usize>());
    let dv = f32_of(dout, op)?;
    let mut dtable = zeros(&g, v * d, op)?; // rows no id names stay 0
    // Sorted segments, one sum per distinct id in a fixed order: the same gradient every run
    // (the atomic kernel's order, and so its last bits, vary when ids repeat, as tokens and
    // positions do in every batch).
    let plan = g.embedding_bwd_plan(ids, v).map_err(err(op))?;
    g.embedding_bwd_sorted(&plan, &dv, &mut dtable, d).map_err(err(op))?;
    Ok(tensor(dtable, shape, dev))
}

/// `x` [.., v] at `ids` [.., k] along the last dim.
pub(crate) fn gather(x: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (dev, name) = (ordinal(x), "gather");
    let g = gpu(dev)?;
    let v = *x.shape().last().expect("rank checked");
    let k = *ids.shape().last().expect("rank checked");
    let rows = ids.numel() / k.max(1);
    let (xv, iv) = (f32_of(x, name)?, ids_of(&g, ids, v, name)?);
    let mut out = alloc(&g, ids.numel(), name)?;
    g.gather_rows(&xv, &iv, &mut out, rows, v, k).map_err(err(name))?;
    Ok(tensor(out, ids.shape(), dev))
}

/// `dy` (shaped like `ids`) added into zeros of `shape` at `ids` along `dim` (the gradient of
/// gather and of max): `dim` is moved last, scattered along rows, and moved back.
pub(crate) fn scatter_along(dy: &Tensor, shape: &[usize], dim: usize, ids: &Tensor) -> Result<Tensor> {
    let (dev, name) = (ordinal(dy), "scatter");
    let g = gpu(dev)?;
    let r = shape.len();
    let mut perm: Vec<usize> = (0..r).filter(|&d| d != dim).collect();
    perm.push(dim);
    let (gm, im) = (dy.detach().permute(&perm)?, ids.detach().permute(&perm)?);
    let (v, k) = (shape[dim], gm.shape()[r - 1]);
    let rows: usize = shape.iter().enumerate().filter(|&(d, _)| d != dim).map(|(_, &s)| s).product();
    let (gv, iv) = (f32_of(&gm, name)?, ids_of(&g, &im, v, name)?);
    let mut dx = zeros(&g, rows * v, name)?;
    g.scatter_add_rows(&gv, &iv, &mut dx, rows, v, k).map_err(err(name))?;
    let moved: Vec<usize> = perm.iter().map(|&d| shape[d]).collect();
    let mut inverse = vec![0; r];
    perm.iter().enumerate().for_each(|(i, &p)| inverse[p] = i);
    contiguous(&tensor(dx, &moved, dev).permute(&inverse)?)
}
