//! Ops over the last dim, one row per warp or block: softmax and log-softmax with their
//! backward, layernorm forward and backward, row max and sampling.

use super::buffers::*;
use crate::cuda::device::{gpu, CudaStorage};
use crate::shape::Layout;
use crate::storage::Storage;
use crate::{Result, Tensor};
use kernels::rows::RowKernel;

/// Softmax over the last dim (bf16 rows in bf16 where the v2 kernel takes their width).
pub(crate) fn softmax(x: &Tensor, cols: usize) -> Result<Tensor> {
    let (dev, op) = (ordinal(x), "softmax");
    let g = gpu(dev)?;
    let rows = x.numel() / cols.max(1);
    if is_bf16(x) && RowKernel::for_width(cols) == RowKernel::V2 {
        let v = bf16_of(x, op)?;
        let mut y = alloc16(&g, x.numel(), op)?;
        g.softmax_fwd_with::<u16>(RowKernel::V2, &v, &mut y, rows, cols).map_err(err(op))?;
        return Ok(tensor16(y, x.shape(), dev));
    }
    let v = f32_of(x, op)?;
    let mut y = alloc(&g, x.numel(), op)?;
    g.softmax_fwd(&v, &mut y, rows, cols).map_err(err(op))?;
    Ok(tensor(y, x.shape(), dev))
}

/// (y, mean [rows], rstd [rows]). Under autocast y is bf16 (it feeds a matmul): written so by
/// the kernel where the row fits v2 (the f32 residual stream in, bf16 out), else rounded once
/// from the f32 kernel's output. A bf16 x gives a bf16 y where the row fits v2.
pub(crate) fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, d: usize, eps: f32) -> Result<(Tensor, Tensor, Tensor)> {
    let (dev, op) = (ordinal(x), "layer_norm");
    let g = gpu(dev)?;
    let (wv, bv) = (f32_of(w, op)?, f32_of(b, op)?);
    let rows = x.numel() / d.max(1);
    let (mut mean, mut rstd) = (alloc(&g, rows, op)?, alloc(&g, rows, op)?);
    let v2 = RowKernel::for_width(d) == RowKernel::V2;
    let bf16_out = is_bf16(x) || crate::autocast::bf16_enabled();
    let y = if v2 && bf16_out {
        let mut y = alloc16(&g, x.numel(), op)?;
        if is_bf16(x) {
            let xv = bf16_of(x, op)?;
            g.layernorm_fwd_with(RowKernel::V2, &xv, &wv, &bv, &mut y, &mut mean, &mut rstd, rows, d, eps).map_err(err(op))?;
        } else {
            let xv = f32_of(x, op)?;
            g.layernorm_fwd_with(RowKernel::V2, &xv, &wv, &bv, &mut y, &mut mean, &mut rstd, rows, d, eps).map_err(err(op))?;
        }
        tensor16(y, x.shape(), dev)
    } else {
        let xv = f32_of(x, op)?;
        let mut y = alloc(&g, x.numel(), op)?;
        g.layernorm_fwd(&xv, &wv, &bv, &mut y, &mut mean, &mut rstd, rows, d, eps).map_err(err(op))?;
        stored(tensor(y, x.shape(), dev), op)?
    };
    Ok((y, tensor(mean, &[rows], dev), tensor(rstd, &[rows], dev)))
}

/// (dx, dw, db); dx in x's type. A bf16 dy (the forward's bf16 y) is read as it is where the
/// row fits v2.
pub(crate) fn layer_norm_backward(x: &Tensor, w: &Tensor, mean: &Tensor, rstd: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let (dev, op) = (ordinal(x), "layer_norm backward");
    let g = gpu(dev)?;
    let d = w.numel();
    let rows = x.numel() / d.max(1);
    let (wv, mv, rv) = (f32_of(w, op)?, f32_of(mean, op)?, f32_of(rstd, op)?);
    let (mut dw, mut db) = (alloc(&g, d, op)?, alloc(&g, d, op)?);
    let v2 = RowKernel::for_width(d) == RowKernel::V2;
    let dx = match (v2 && is_bf16(dy), is_bf16(x)) {
        (true, true) => {
            let (xv, dyv) = (bf16_of(x, op)?, bf16_of(dy, op)?);
            let mut dx = alloc16(&g, x.numel(), op)?;
            g.layernorm_bwd_with(RowKernel::V2, &xv, &wv, &mv, &rv, &dyv, &mut dx, &mut dw, &mut db, rows, d).map_err(err(op))?;
            tensor16(dx, x.shape(), dev)
        }
        (true, false) => {
            let (xv, dyv) = (f32_of(x, op)?, bf16_of(dy, op)?);
            let mut dx = alloc(&g, x.numel(), op)?;
            g.layernorm_bwd_with(RowKernel::V2, &xv, &wv, &mv, &rv, &dyv, &mut dx, &mut dw, &mut db, rows, d).map_err(err(op))?;
            tensor(dx, x.shape(), dev)
        }
        (false, _) => {
            let (xv, dyv) = (f32_of(x, op)?, f32_of(dy, op)?);
            let mut dx = alloc(&g, x.numel(), op)?;
            g.layernorm_bwd(&xv, &wv, &mv, &rv, &dyv, &mut dx, &mut dw, &mut db, rows, d).map_err(err(op))?;
            tensor(dx, x.shape(), dev)
        }
    };
    Ok((dx, tensor(dw, &[d], dev), tensor(db, &[d], dev)))
}

/// Log-softmax over the last dim.
pub(crate) fn log_softmax(x: &Tensor, cols: usize) -> Result<Tensor> {
    let (dev, name) = (ordinal(x), "log_softmax");
    let g = gpu(dev)?;
    let v = f32_of(x, name)?;
    let mut y = alloc(&g, x.numel(), name)?;
    g.log_softmax_fwd(&v, &mut y, x.numel() / cols.max(1), cols).map_err(err(name))?;
    Ok(tensor(y, x.shape(), dev))
}

/// The backward of softmax (`log` false) or log-softmax over the last dim, from its output `y`.
pub(crate) fn softmax_backward(y: &Tensor, dy: &Tensor, cols: usize, log: bool) -> Result<Tensor> {
    let (dev, name) = (ordinal(y), "softmax backward");
    let g = gpu(dev)?;
    let (yv, gv) = (f32_of(y, name)?, f32_of(dy, name)?);
    let mut dx = alloc(&g, y.numel(), name)?;
    g.softmax_bwd(&yv, &gv, &mut dx, y.numel() / cols.max(1), cols, log).map_err(err(name))?;
    Ok(tensor(dx, y.shape(), dev))
}

/// Each row's max and the index of its first maximum: `rows` [r, cols] → (values, ids), both
/// shaped `keep` (ids are i64 on the device).
pub(crate) fn max_rows(rows: &Tensor, cols: usize, keep: &[usize]) -> Result<(Tensor, Tensor)> {
    let (dev, name) = (ordinal(rows), "max");
    let g = gpu(dev)?;
    let r = rows.numel() / cols.max(1);
    let v = f32_of(rows, name)?;
    let mut vals = alloc(&g, r, name)?;
    let mut idx = g.stream.alloc_zeros::<i64>(r.max(1)).map_err(|e| alloc_failed(&g, name, 8 * r, e))?;
    g.max_rows(&v, &mut vals, &mut idx, r, cols).map_err(err(name))?;
    let ids = Tensor::from_parts(Storage::Cuda(CudaStorage::I64(idx, dev)), Layout::contiguous(keep), false, None, false);
    Ok((tensor(vals, keep, dev), ids))
}

/// One draw per row of `x` [rows, cols] from softmax(a·x), by inverse CDF from each row's
/// uniform; the ids are i64 on the device, shaped `keep`.
pub(crate) fn sample_rows(x: &Tensor, uniforms: &[f32], a: f32, keep: &[usize]) -> Result<Tensor> {
    let (dev, name) = (ordinal(x), "sample_rows");
    let g = gpu(dev)?;
    let (rows, cols) = (uniforms.len(), x.numel() / uniforms.len().max(1));
    // Never an empty allocation (the driver refuses 0 bytes): no rows, no launch.
    let mut idx = g.stream.alloc_zeros::<i64>(rows.max(1)).map_err(|e| alloc_failed(&g, name, 8 * rows, e))?;
    if rows > 0 {
        let xv = f32_of(x, name)?;
        let u = g.stream.clone_htod(uniforms).map_err(|e| alloc_failed(&g, name, 4 * rows, e))?;
        g.sample_rows(&xv, &u, &mut idx, rows, cols, a).map_err(err(name))?;
    }
    Ok(Tensor::from_parts(Storage::Cuda(CudaStorage::I64(idx, dev)), Layout::contiguous(keep), false, None, false))
}
