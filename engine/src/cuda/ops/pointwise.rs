//! Elementwise ops over already-broadcast views: binary, affine, unary, where, GELU, and their
//! gradients.

use super::buffers::*;
use crate::cuda::device::{gpu, CudaStorage};
use crate::storage::Storage;
use crate::{DType, Result, Tensor};
use kernels::memops::BinaryOp;
use kernels::pointwise::Unary;

/// `op(a, b)` elementwise; `a` and `b` already broadcast to one shape (views with 0 strides).
pub(crate) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let name = "binary";
    let g = gpu(ordinal(a))?;
    let shape = a.shape().to_vec();
    let n: usize = shape.iter().product();
    let mut out = alloc(&g, n, name)?;
    let (la, lb) = (a.layout(), b.layout());
    // Broadcast views at offset 0 go straight to the kernel (it reads stride 0 in place);
    // anything else is gathered first.
    let direct = shape.len() <= 4 && la.offset == 0 && lb.offset == 0 && a.dtype() == DType::F32 && b.dtype() == DType::F32;
    if direct {
        let (ga, gb) = (a.read(), b.read());
        if let (Storage::Cuda(CudaStorage::F32(sa, _)), Storage::Cuda(CudaStorage::F32(sb, _))) = (&*ga, &*gb) {
            g.binary(op, sa, &la.strides, sb, &lb.strides, &mut out, &shape).map_err(err(op.name()))?;
            return Ok(tensor(out, &shape, ordinal(a)));
        }
    }
    // One f32 and one bf16 operand, both whole contiguous buffers of this shape (autocast's
    // residual adds): the bf16 side read in place.
    if la.offset == 0 && lb.offset == 0 && la.is_contiguous() && lb.is_contiguous() && a.dtype() != b.dtype() {
        let (ga, gb) = (a.read(), b.read());
        let whole = |s: usize| s == n;
        match (&*ga, &*gb) {
            (Storage::Cuda(CudaStorage::F32(sa, _)), Storage::Cuda(CudaStorage::U16(sb, DType::BF16, _))) if whole(sa.len()) && whole(sb.len()) => {
                g.binary_f32_bf16(op, sa, sb, &mut out, n, false).map_err(err(op.name()))?;
                return Ok(tensor(out, &shape, ordinal(a)));
            }
            (Storage::Cuda(CudaStorage::U16(sa, DType::BF16, _)), Storage::Cuda(CudaStorage::F32(sb, _))) if whole(sa.len()) && whole(sb.len()) => {
                g.binary_f32_bf16(op, sb, sa, &mut out, n, true).map_err(err(op.name()))?;
                return Ok(tensor(out, &shape, ordinal(a)));
            }
            _ => {}
        }
    }
    let (va, vb) = (f32_of(a, name)?, f32_of(b, name)?);
    g.binary(op, &va, &[1], &vb, &[1], &mut out, &[n]).map_err(err(op.name()))?;
    Ok(tensor(out, &shape, ordinal(a)))
}

/// `x·mul + add`, one launch (the scalars are kernel arguments).
pub(crate) fn affine(x: &Tensor, mul: f32, add: f32) -> Result<Tensor> {
    unary(x, Unary::Affine, mul, add)
}

pub(crate) fn gelu(x: &Tensor) -> Result<Tensor> {
    let (dev, op) = (ordinal(x), "gelu");
    let g = gpu(dev)?;
    if is_bf16(x) {
        let v = bf16_of(x, op)?;
        let mut y = alloc16(&g, x.numel(), op)?;
        g.gelu_fwd::<u16>(&v, &mut y).map_err(err(op))?;
        return Ok(tensor16(y, x.shape(), dev));
    }
    let v = f32_of(x, op)?;
    let mut y = alloc(&g, x.numel(), op)?;
    g.gelu_fwd(&v, &mut y).map_err(err(op))?;
    Ok(tensor(y, x.shape(), dev))
}

pub(crate) fn gelu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let (dev, op) = (ordinal(x), "gelu backward");
    let g = gpu(dev)?;
    if is_bf16(x) && is_bf16(dy) {
        let (xv, dyv) = (bf16_of(x, op)?, bf16_of(dy, op)?);
        let mut dx = alloc16(&g, x.numel(), op)?;
        g.gelu_bwd::<u16>(&xv, &dyv, &mut dx).map_err(err(op))?;
        return Ok(tensor16(dx, x.shape(), dev));
    }
    let (xv, dyv) = (f32_of(x, op)?, f32_of(dy, op)?);
    let mut dx = alloc(&g, x.numel(), op)?;
    g.gelu_bwd(&xv, &dyv, &mut dx).map_err(err(op))?;
    Ok(tensor(dx, x.shape(), dev))
}

/// `op(x)` elementwise (`lo`, `hi`: clamp's bounds).
pub(crate) fn unary(x: &Tensor, op: Unary, lo: f32, hi: f32) -> Result<Tensor> {
    let (dev, name) = (ordinal(x), "unary");
    let g = gpu(dev)?;
    let v = f32_of(x, name)?;
    let mut y = alloc(&g, x.numel(), name)?;
    g.unary_fwd(op, &v, &mut y, x.numel(), lo, hi).map_err(err(name))?;
    Ok(tensor(y, x.shape(), dev))
}

/// d(loss)/dx of `unary` from its input `x`, output `y` and the upstream gradient.
pub(crate) fn unary_backward(op: Unary, x: &Tensor, y: &Tensor, dy: &Tensor, lo: f32, hi: f32) -> Result<Tensor> {
    let (dev, name) = (ordinal(x), "unary backward");
    let g = gpu(dev)?;
    let (xv, yv, gv) = (f32_of(x, name)?, f32_of(y, name)?, f32_of(dy, name)?);
    let mut dx = alloc(&g, x.numel(), name)?;
    g.unary_bwd(op, &xv, &yv, &gv, &mut dx, x.numel(), lo, hi).map_err(err(name))?;
    Ok(tensor(dx, x.shape(), dev))
}

/// `c != 0 ? a : b`, all three already broadcast to one shape.
pub(crate) fn where_cond(c: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (dev, name) = (ordinal(a), "where");
    let g = gpu(dev)?;
    let (cv, av, bv) = (f32_of(c, name)?, f32_of(a, name)?, f32_of(b, name)?);
    let mut out = alloc(&g, a.numel(), name)?;
    g.where_f32(&cv, &av, &bv, &mut out, a.numel()).map_err(err(name))?;
    Ok(tensor(out, a.shape(), dev))
}

/// The gradients of minimum / maximum for (a, b), both already broadcast to `g`'s shape.
pub(crate) fn min_max_backward(dy: &Tensor, a: &Tensor, b: &Tensor, is_max: bool) -> Result<(Tensor, Tensor)> {
    let (dev, name) = (ordinal(dy), "min/max backward");
    let g = gpu(dev)?;
    let n = dy.numel();
    let (av, bv, gv) = (f32_of(a, name)?, f32_of(b, name)?, f32_of(dy, name)?);
    let (mut da, mut db) = (alloc(&g, n, name)?, alloc(&g, n, name)?);
    g.minmax_bwd(&av, &bv, &gv, &mut da, &mut db, n, is_max).map_err(err(name))?;
    Ok((tensor(da, a.shape(), dev), tensor(db, b.shape(), dev)))
}
