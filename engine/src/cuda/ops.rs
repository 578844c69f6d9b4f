//! The engine's ops on CUDA tensors, each a launch of a kernel from `kernels/` on the device's
//! one stream. The ops in `crate::ops` check shapes, call these for CUDA inputs and record the
//! same `Op` for backward as on the CPU, so the gradient rules stay one table.
//!
//! Element types: f32, and bf16 as storage. Every op reads bf16 inputs (widened exactly into
//! f32 where it has no bf16 kernel, and then writes f32); matmul, attention, GELU, softmax and
//! cross-entropy read bf16 natively. Under `autocast_bf16` the activations that feed matmuls are
//! stored in bf16: matmul outputs (each gradient in its operand's type), layernorm and
//! attention outputs (rounded once from their f32 math). Parameters and their gradients stay f32.

use super::device::{gpu, CudaStorage};
use crate::shape::Layout;
use crate::storage::Storage;
use crate::{DType, Device, Error, Result, Tensor};
use cudarc::driver::CudaSlice;
use kernels::device::{Gpu, Stored};
use kernels::attention::{AttnShape, KeyPad, KvView};
use kernels::matmul_tc::MatmulTc;
use kernels::memops::{BinaryOp, CeGroup};
use kernels::pointwise::Unary;
use kernels::rows::RowKernel;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLockReadGuard;

fn err(what: impl std::fmt::Display) -> impl FnOnce(kernels::Error) -> Error {
    move |e| match e {
        kernels::Error::OutOfMemory { what: inner } => crate::memory::device_out_of_memory(&format!("{what} ({inner})"), None, "the GPU", None),
        e => Error::Cuda(format!("{what}: {e}")),
    }
}

/// The error of allocating (or uploading) `bytes` on g's device for `what`: out of memory says
/// how much was asked and what the device and the pool hold.
pub(crate) fn alloc_failed(g: &Gpu, what: &str, bytes: usize, e: cudarc::driver::DriverError) -> Error {
    if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        let device = format!("cuda:{} ({})", g.ctx.ordinal(), g.info.name);
        return crate::memory::device_out_of_memory(what, Some(bytes as u64), &device, g.memory_state().ok());
    }
    Error::Cuda(format!("{what}: allocating {bytes} bytes: {e:?}"))
}

fn ordinal(t: &Tensor) -> usize {
    match t.device() {
        Device::Cuda(n) => n,
        Device::Cpu => unreachable!("called for CUDA tensors only"),
    }
}

/// A tensor's f32 elements on its device, row-major from element 0: its own buffer when it
/// already is exactly that, else a gathered copy.
pub(crate) enum DevF32<'a> {
    Whole(RwLockReadGuard<'a, Storage>),
    Gathered(CudaSlice<f32>),
}

impl Deref for DevF32<'_> {
    type Target = CudaSlice<f32>;
    fn deref(&self) -> &CudaSlice<f32> {
        match self {
            DevF32::Whole(g) => match &**g {
                Storage::Cuda(CudaStorage::F32(s, _)) => s,
                _ => unreachable!("checked in f32_of"),
            },
            DevF32::Gathered(s) => s,
        }
    }
}

static POISON: AtomicBool = AtomicBool::new(false);

/// While on, every op output that its kernel must write in full starts as NaN instead of 0, so
/// that an element a kernel skips shows (`engine::conformance` turns it on).
pub(crate) fn poison_outputs(on: bool) {
    POISON.store(on, Ordering::SeqCst);
}

/// An output buffer the kernel overwrites in full: not zeroed first (that would be one more
/// pass over memory per op), and NaN while [`poison_outputs`] is on, so that the conformance
/// cases catch a kernel that leaves elements unwritten.
fn alloc(g: &Gpu, n: usize, what: &str) -> Result<CudaSlice<f32>> {
    // SAFETY: f32 has no invalid bit patterns, and every caller's kernel writes all n elements.
    let mut buf = unsafe { g.stream.alloc::<f32>(n.max(1)) }.map_err(|e| alloc_failed(g, what, 4 * n, e))?;
    if POISON.load(Ordering::SeqCst) {
        g.fill_f32(&mut buf, f32::NAN).map_err(err(what))?;
    }
    Ok(buf)
}

/// A zeroed buffer that a kernel adds into, or writes only in part.
fn zeros(g: &Gpu, n: usize, what: &str) -> Result<CudaSlice<f32>> {
    g.stream.alloc_zeros::<f32>(n.max(1)).map_err(|e| alloc_failed(g, what, 4 * n, e))
}

pub(crate) fn f32_of<'a>(t: &'a Tensor, op: &'static str) -> Result<DevF32<'a>> {
    let guard = t.read();
    let l = t.layout();
    let g = || gpu(ordinal(t));
    match &*guard {
        Storage::Cuda(CudaStorage::F32(src, _)) => {
            if l.is_contiguous() && l.offset == 0 && src.len() == l.numel() {
                return Ok(DevF32::Whole(guard));
            }
            let g = g()?;
            let mut dst = alloc(&g, l.numel(), op)?;
            let (shape, strides) = merged(l);
            g.strided_copy_f32(src, l.offset, &shape, &strides, &mut dst).map_err(err(op))?;
            Ok(DevF32::Gathered(dst))
        }
        Storage::Cuda(CudaStorage::U16(src, DType::BF16, _)) => {
            // bf16 widened (exactly) for the kernels that take f32.
            let g = g()?;
            let mut dst = alloc(&g, l.numel(), op)?;
            let (shape, strides) = merged(l);
            g.widen_bf16_strided(src, l.offset, &shape, &strides, &mut dst).map_err(err(op))?;
            Ok(DevF32::Gathered(dst))
        }
        Storage::Cuda(_) => Err(Error::DType { op, expected: DType::F32, got: t.dtype() }),
        Storage::Cpu(_) => Err(Error::NotOnDevice { op, device: t.device() }),
    }
}

/// The layout's dims without size-1 dims and with neighbours that step evenly merged: the same
/// elements in the same order, in as few dims as the copy kernel can take.
fn merged(l: &Layout) -> (Vec<usize>, Vec<usize>) {
    let (mut shape, mut strides): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    for (&d, &s) in l.shape.iter().zip(&l.strides) {
        if d == 1 {
            continue;
        }
        match (shape.last_mut(), strides.last_mut()) {
            (Some(ld), Some(ls)) if *ls == s * d => {
                *ld *= d;
                *ls = s;
            }
            _ => {
                shape.push(d);
                strides.push(s);
            }
        }
    }
    if shape.is_empty() {
        (vec![1], vec![0])
    } else {
        (shape, strides)
    }
}

/// A fresh contiguous CUDA tensor around `buf`.
fn tensor(buf: CudaSlice<f32>, shape: &[usize], device: usize) -> Tensor {
    Tensor::from_parts(Storage::Cuda(CudaStorage::F32(buf, device)), Layout::contiguous(shape), false, None, false)
}

/// A fresh contiguous bf16 CUDA tensor around `buf` (bf16 bit patterns).
fn tensor16(buf: CudaSlice<u16>, shape: &[usize], device: usize) -> Tensor {
    Tensor::from_parts(Storage::Cuda(CudaStorage::U16(buf, DType::BF16, device)), Layout::contiguous(shape), false, None, false)
}

/// A bf16 output buffer the kernel overwrites in full: NaN while [`poison_outputs`] is on.
fn alloc16(g: &Gpu, n: usize, what: &str) -> Result<CudaSlice<u16>> {
    let fail = |e| alloc_failed(g, what, 2 * n, e);
    if POISON.load(Ordering::SeqCst) {
        return g.stream.clone_htod(&vec![0x7fc0u16; n.max(1)]).map_err(fail);
    }
    // SAFETY: any u16 is a valid bf16 pattern, and every caller's kernel writes all n elements.
    unsafe { g.stream.alloc::<u16>(n.max(1)) }.map_err(fail)
}

fn is_bf16(t: &Tensor) -> bool {
    t.dtype() == DType::BF16
}

/// A row-major copy of any view, in its own element type (f32 or bf16).
pub(crate) fn contiguous(x: &Tensor) -> Result<Tensor> {
    let (dev, op) = (ordinal(x), "contiguous");
    let g = gpu(dev)?;
    if is_bf16(x) {
        let buf = match bf16_of(x, op)? {
            DevBf16::Made(s) => s,
            whole => g.stream.clone_dtod(&*whole).map_err(|e| alloc_failed(&g, op, 2 * whole.len(), e))?,
        };
        return Ok(tensor16(buf, x.shape(), dev));
    }
    let buf = match f32_of(x, op)? {
        DevF32::Gathered(s) => s,
        whole => g.stream.clone_dtod(&*whole).map_err(|e| alloc_failed(&g, op, 4 * whole.len(), e))?,
    };
    Ok(tensor(buf, x.shape(), dev))
}

/// `x` converted to `dtype` on the device, for f32 and bf16 (a fresh buffer); None for other
/// pairs (ids), which the caller converts on the host.
pub(crate) fn convert(x: &Tensor, dtype: DType) -> Result<Option<Tensor>> {
    let (dev, op) = (ordinal(x), "to_dtype");
    Ok(match (x.dtype(), dtype) {
        (DType::F32 | DType::BF16, d) if d == x.dtype() => Some(contiguous(x)?),
        (DType::BF16, DType::F32) => match f32_of(x, op)? {
            DevF32::Gathered(s) => Some(tensor(s, x.shape(), dev)),
            DevF32::Whole(_) => unreachable!("a bf16 tensor is always widened"),
        },
        (DType::F32, DType::BF16) => match bf16_of(x, op)? {
            DevBf16::Made(s) => Some(tensor16(s, x.shape(), dev)),
            DevBf16::Whole(_) => unreachable!("an f32 tensor is always rounded"),
        },
        _ => None,
    })
}

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

/// An activation as autocast stores it: rounded to bf16 when autocast is on, else as it is.
fn stored(t: Tensor, op: &'static str) -> Result<Tensor> {
    if !crate::autocast::bf16_enabled() || is_bf16(&t) {
        return Ok(t);
    }
    let dev = ordinal(&t);
    match bf16_of(&t, op)? {
        DevBf16::Made(s) => Ok(tensor16(s, t.shape(), dev)),
        DevBf16::Whole(_) => unreachable!("an f32 tensor is always rounded"),
    }
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

/// A tensor's elements as bf16 bits on its device, row-major from element 0: its own buffer
/// when it already is exactly that, else made (rounded from an f32 view, copied from a bf16 one).
pub(crate) enum DevBf16<'a> {
    Whole(RwLockReadGuard<'a, Storage>),
    Made(CudaSlice<u16>),
}

impl Deref for DevBf16<'_> {
    type Target = CudaSlice<u16>;
    fn deref(&self) -> &CudaSlice<u16> {
        match self {
            DevBf16::Whole(g) => match &**g {
                Storage::Cuda(CudaStorage::U16(s, DType::BF16, _)) => s,
                _ => unreachable!("checked in bf16_rows"),
            },
            DevBf16::Made(s) => s,
        }
    }
}

/// A tensor's elements as bf16 bits: row-major rows of `cols`, written `pitch` apart into a
/// buffer of `rows_to` rows, the padding zero (autocast's operands; a matmul's padded to
/// multiples of 8 for the tensor-core kernels' fast path). A bf16 tensor that already lies so
/// is read in place.
fn bf16_rows<'a>(t: &'a Tensor, cols: usize, pitch: usize, rows_to: usize, op: &'static str) -> Result<DevBf16<'a>> {
    let guard = t.read();
    let l = t.layout();
    let unpadded = pitch == cols && rows_to * cols == t.numel();
    if let Storage::Cuda(CudaStorage::U16(src, DType::BF16, _)) = &*guard {
        if unpadded && l.is_contiguous() && l.offset == 0 && src.len() == l.numel() {
            return Ok(DevBf16::Whole(guard));
        }
    }
    let g = gpu(ordinal(t))?;
    let len = rows_to * pitch;
    let alloc_err = |e| alloc_failed(&g, op, 2 * len, e);
    let mut dst = if unpadded {
        // SAFETY: any u16 is a valid bf16 pattern, and the cast writes every element.
        unsafe { g.stream.alloc::<u16>(len.max(1)) }.map_err(alloc_err)?
    } else {
        g.stream.alloc_zeros::<u16>(len.max(1)).map_err(alloc_err)?
    };
    let (shape, strides) = merged(l);
    let (cols, pitch) = (cols.max(1), pitch.max(1));
    // Transposed matrices (Xᵀ, Wᵀ of a backward) go through the tiled kernels: the strided one
    // would read them 32 rows apart per warp.
    let tiles = kernels::copy::transposed_batch(&shape, &strides).filter(|t| t.cols == cols);
    match (&*guard, tiles) {
        (Storage::Cuda(CudaStorage::F32(src, _)), Some(t)) => g.cast_bf16_transposed(src, l.offset, t, &mut dst, pitch).map_err(err(op))?,
        (Storage::Cuda(CudaStorage::F32(src, _)), None) => g.cast_bf16_strided(src, l.offset, &shape, &strides, &mut dst, cols, pitch).map_err(err(op))?,
        (Storage::Cuda(CudaStorage::U16(src, DType::BF16, _)), Some(t)) => g.copy_bf16_transposed(src, l.offset, t, &mut dst, pitch).map_err(err(op))?,
        (Storage::Cuda(CudaStorage::U16(src, DType::BF16, _)), None) => g.copy_bf16_strided(src, l.offset, &shape, &strides, &mut dst, cols, pitch).map_err(err(op))?,
        (Storage::Cuda(_), _) => return Err(Error::DType { op, expected: DType::BF16, got: t.dtype() }),
        (Storage::Cpu(_), _) => return Err(Error::NotOnDevice { op, device: t.device() }),
    }
    Ok(DevBf16::Made(dst))
}

/// `bf16_rows` without padding: the tensor's elements in order.
fn bf16_of<'a>(t: &'a Tensor, op: &'static str) -> Result<DevBf16<'a>> {
    let cols = t.shape().last().copied().unwrap_or(1);
    bf16_rows(t, cols, cols, t.numel() / cols.max(1), op)
}

/// A matmul output buffer: f32, or bf16 bits.
trait GemmOut: cudarc::driver::DeviceRepr + Sized {
    fn alloc(g: &Gpu, n: usize, op: &str) -> Result<CudaSlice<Self>>;
    fn wrap(buf: CudaSlice<Self>, shape: &[usize], device: usize) -> Tensor;
    /// C [rows, n] = A · B on tensor cores (+ bias), f32 accumulation.
    #[allow(clippy::too_many_arguments)]
    fn gemm(g: &Gpu, v: MatmulTc, a: &CudaSlice<u16>, b: &CudaSlice<u16>, bias: Option<&CudaSlice<f32>>, c: &mut CudaSlice<Self>, m: usize, n: usize, k: usize) -> kernels::Result<()>;
    /// dst [rows, n] = the first n columns of `wide` [rows, pitch].
    fn narrow_cols(g: &Gpu, wide: &CudaSlice<Self>, rows: usize, n: usize, pitch: usize, dst: &mut CudaSlice<Self>) -> kernels::Result<()>;
}

impl GemmOut for f32 {
    fn alloc(g: &Gpu, n: usize, op: &str) -> Result<CudaSlice<f32>> {
        alloc(g, n, op)
    }
    fn wrap(buf: CudaSlice<f32>, shape: &[usize], device: usize) -> Tensor {
        tensor(buf, shape, device)
    }
    fn gemm(g: &Gpu, v: MatmulTc, a: &CudaSlice<u16>, b: &CudaSlice<u16>, bias: Option<&CudaSlice<f32>>, c: &mut CudaSlice<f32>, m: usize, n: usize, k: usize) -> kernels::Result<()> {
        g.matmul_tc_f32out(v, a, b, bias, c, m, n, k)
    }
    fn narrow_cols(g: &Gpu, wide: &CudaSlice<f32>, rows: usize, n: usize, pitch: usize, dst: &mut CudaSlice<f32>) -> kernels::Result<()> {
        g.strided_copy_f32(wide, 0, &[rows, n], &[pitch, 1], dst)
    }
}

impl GemmOut for u16 {
    fn alloc(g: &Gpu, n: usize, op: &str) -> Result<CudaSlice<u16>> {
        alloc16(g, n, op)
    }
    fn wrap(buf: CudaSlice<u16>, shape: &[usize], device: usize) -> Tensor {
        tensor16(buf, shape, device)
    }
    fn gemm(g: &Gpu, v: MatmulTc, a: &CudaSlice<u16>, b: &CudaSlice<u16>, bias: Option<&CudaSlice<f32>>, c: &mut CudaSlice<u16>, m: usize, n: usize, k: usize) -> kernels::Result<()> {
        g.matmul_tc_bf16out(v, a, b, bias, c, m, n, k)
    }
    fn narrow_cols(g: &Gpu, wide: &CudaSlice<u16>, rows: usize, n: usize, pitch: usize, dst: &mut CudaSlice<u16>) -> kernels::Result<()> {
        g.copy_bf16_strided(wide, 0, &[rows, n], &[pitch, 1], dst, n, n)
    }
}

/// `matmul` under `autocast_bf16`: bf16 operands (read in place when they already are bf16
/// rows), f32 accumulation on tensor cores (wgmma on sm_90, mma.sync elsewhere), the bias added
/// in f32, the output written as `T` (bf16 bits or f32). K and N are padded with zeros to
/// multiples of 8 (GPT-2's 50257-token vocabulary), which keeps the kernels on their fast path;
/// a padded N is computed wide and its first N columns copied out.
fn matmul_bf16<T: GemmOut>(a: &Tensor, b: &Tensor, bias: Option<&Tensor>, out_shape: &[usize]) -> Result<Tensor> {
    let (dev, op) = (ordinal(a), "matmul (bf16 autocast)");
    let g = gpu(dev)?;
    // v5 on Hopper, v4 elsewhere; IGPT_MATMUL=v4|v5|v6 chooses (see `Gpu::engine_matmul`).
    let v = g.engine_matmul().map_err(err(op))?;
    let (k, n) = (a.shape()[a.rank() - 1], b.shape()[b.rank() - 1]);
    let (kp, np) = (k.next_multiple_of(8).max(8), n.next_multiple_of(8).max(8));
    let bias_dev = bias.map(|t| f32_of(t, op)).transpose()?;
    let bias_wide = match &bias_dev {
        Some(bv) if np != n => {
            let mut p = zeros(&g, np, op)?;
            g.stream.memcpy_dtod(&bv.slice(0..n), &mut p.slice_mut(0..n)).map_err(|e| Error::Cuda(format!("{op}: padding the bias: {e:?}")))?;
            Some(p)
        }
        _ => None,
    };
    let bias_arg: Option<&CudaSlice<f32>> = bias_wide.as_ref().or(bias_dev.as_deref());
    // C [rows, n] = A [rows, k] · B [k, n], operands padded.
    let gemm = |av: &Tensor, bv: &Tensor, rows: usize, dst: &mut CudaSlice<T>| -> Result<()> {
        let (a16, b16) = (bf16_rows(av, k, kp, rows, op)?, bf16_rows(bv, n, np, kp, op)?);
        if np == n {
            return T::gemm(&g, v, &a16, &b16, bias_arg, dst, rows, n, kp).map_err(err(op));
        }
        let mut wide = T::alloc(&g, rows * np, op)?;
        T::gemm(&g, v, &a16, &b16, bias_arg, &mut wide, rows, np, kp).map_err(err(op))?;
        T::narrow_cols(&g, &wide, rows, n, np, dst).map_err(err(op))
    };
    batched(a, b, out_shape, op, gemm)
}

/// `gelu(a · b + bias)` in one kernel with a GELU epilogue: the pre-activation and its GELU.
/// Under autocast both bf16, from the tensor-core matmul; otherwise both f32, from v2. None
/// where no such kernel applies (a batched `b`, K = 0; under autocast N not a multiple of 8):
/// the caller runs the two ops.
pub(crate) fn matmul_bias_gelu(a: &Tensor, b: &Tensor, bias: &Tensor, out_shape: &[usize]) -> Result<Option<(Tensor, Tensor)>> {
    let (k, n) = (a.shape()[a.rank() - 1], b.shape()[b.rank() - 1]);
    if b.rank() != 2 || k == 0 {
        return Ok(None);
    }
    let dev = ordinal(a);
    let g = gpu(dev)?;
    let rows = a.numel() / k;
    if !crate::autocast::bf16_enabled() {
        let op = "matmul_bias_gelu";
        let (x, w, bv) = (f32_of(a, op)?, f32_of(b, op)?, f32_of(bias, op)?);
        let (mut pre, mut post) = (alloc(&g, rows * n, op)?, alloc(&g, rows * n, op)?);
        g.matmul_f32_gelu(&x, &w, Some(&bv), &mut post, &mut pre, rows, n, k).map_err(err(op))?;
        return Ok(Some((tensor(pre, out_shape, dev), tensor(post, out_shape, dev))));
    }
    if !n.is_multiple_of(8) {
        return Ok(None);
    }
    let op = "matmul_bias_gelu (bf16 autocast)";
    let v = g.engine_matmul().map_err(err(op))?;
    let kp = k.next_multiple_of(8);
    let (a16, b16) = (bf16_rows(a, k, kp, rows, op)?, bf16_rows(b, n, n, kp, op)?);
    let bias_dev = f32_of(bias, op)?;
    let (mut pre, mut post) = (alloc16(&g, rows * n, op)?, alloc16(&g, rows * n, op)?);
    g.matmul_tc_bf16_gelu(v, &a16, &b16, Some(&bias_dev), &mut post, &mut pre, rows, n, kp).map_err(err(op))?;
    Ok(Some((tensor16(pre, out_shape, dev), tensor16(post, out_shape, dev))))
}

/// `a` [.., M, K] · `b` [.., K, N] or [K, N] (+ `bias` [N]) → [.., M, N]. A shared `b` makes
/// one GEMM over all rows of `a`; batched operands one GEMM per batch.
/// Under autocast the product is written in `out` (bf16 for activations; the backward asks for
/// each operand's type, so a parameter's gradient comes out of the kernel in f32); otherwise in f32.
pub(crate) fn matmul(a: &Tensor, b: &Tensor, bias: Option<&Tensor>, out_shape: &[usize], out: DType) -> Result<Tensor> {
    if crate::autocast::bf16_enabled() {
        return match out {
            DType::BF16 => matmul_bf16::<u16>(a, b, bias, out_shape),
            _ => matmul_bf16::<f32>(a, b, bias, out_shape),
        };
    }
    let op = "matmul";
    let (dev, g) = (ordinal(a), gpu(ordinal(a))?);
    let (m, k, n) = (a.shape()[a.rank() - 2], a.shape()[a.rank() - 1], b.shape()[b.rank() - 1]);
    let batches: usize = a.shape()[..a.rank() - 2].iter().product();
    let biasv = bias.map(|t| f32_of(t, op)).transpose()?;
    let shared_b = b.numel() == k * n; // one [K, N] for every product
    if !shared_b && b.numel() != batches * k * n {
        return Err(Error::shape(op, format!("{:?} · {:?}: batch dims must match or B be one matrix", a.shape(), b.shape())));
    }
    // Each operand read where it lies when its buffer holds the matrices row-major or
    // transposed (a transposed weight in backward: dX = dY·Wᵀ, dW = Xᵀ·dY), else gathered.
    let (x, a_t) = match gemm_in_place(a) {
        Some(v) => v,
        None => (f32_of(a, op)?, false),
    };
    let (y, b_t) = match gemm_in_place(b) {
        Some((whole, true)) if a_t => {
            drop(whole); // no TT kernel: B copied row-major
            (DevF32::Gathered(row_major_copy(b, op)?), false)
        }
        Some(v) => v,
        None => (f32_of(b, op)?, false),
    };
    let stored = match (a_t, b_t) {
        (false, false) => Stored::NN,
        (false, true) => Stored::NT,
        _ => Stored::TN,
    };
    let mut out = alloc(&g, batches * m * n, op)?;
    if shared_b && !a_t {
        // One GEMM over the rows of every product (A's matrices lie back to back).
        g.matmul_f32_batched_stored(stored, &x, &y, true, biasv.as_deref(), &mut out, 1, batches * m, n, k).map_err(err(op))?;
    } else {
        // One launch over all products (grid.z): attention's Q·Kᵀ and P·V per batch and head.
        g.matmul_f32_batched_stored(stored, &x, &y, shared_b, biasv.as_deref(), &mut out, batches, m, n, k).map_err(err(op))?;
    }
    Ok(tensor(out, out_shape, dev))
}

/// `t`'s own buffer, when a GEMM can read its matrices [.., rows, cols] there: the buffer holds
/// exactly the view's elements (offset 0), each matrix row-major (false) or stored transposed as
/// [cols, rows] (true), and the matrices lie back to back in batch order.
fn gemm_in_place(t: &Tensor) -> Option<(DevF32<'_>, bool)> {
    let l = t.layout();
    let transposed = l.gemm_matrices()?;
    if t.dtype() != DType::F32 {
        return None;
    }
    let guard = t.read();
    match &*guard {
        Storage::Cuda(CudaStorage::F32(s, _)) if s.len() == l.numel() => Some((DevF32::Whole(guard), transposed)),
        _ => None,
    }
}

/// A row-major copy of any f32 view (even one that is already its whole buffer).
fn row_major_copy(t: &Tensor, op: &'static str) -> Result<CudaSlice<f32>> {
    match f32_of(t, op)? {
        DevF32::Gathered(s) => Ok(s),
        whole => {
            let g = gpu(ordinal(t))?;
            g.stream.clone_dtod(&*whole).map_err(|e| alloc_failed(&g, op, 4 * whole.len(), e))
        }
    }
}

/// The bf16 matmul's batching: `gemm(A, B, rows, C)` computes C [rows, N] = A [rows, K] · B [K, N]
/// for one pair of operands; a shared `b` makes one call over all rows of `a`, batched operands
/// one call per batch, each product copied into place.
fn batched<T: GemmOut>(a: &Tensor, b: &Tensor, out_shape: &[usize], op: &'static str, gemm: impl Fn(&Tensor, &Tensor, usize, &mut CudaSlice<T>) -> Result<()>) -> Result<Tensor> {
    let dev = ordinal(a);
    let g = gpu(dev)?;
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
    let batches: usize = a.shape()[..ra - 2].iter().product();
    let mut out = T::alloc(&g, batches * m * n, op)?;
    if rb == 2 || batches == 1 {
        gemm(a, b, batches * m, &mut out)?;
        return Ok(T::wrap(out, out_shape, dev));
    }
    let (a3, b3) = (a.reshape(&[batches, m, k])?, b.reshape(&[batches, k, n])?);
    let mut c = T::alloc(&g, m * n, op)?;
    for i in 0..batches {
        gemm(&a3.narrow(0, i, 1)?, &b3.narrow(0, i, 1)?, m, &mut c)?;
        let mut dst = out.slice_mut(i * m * n..(i + 1) * m * n);
        g.stream.memcpy_dtod(&c, &mut dst).map_err(|e| Error::Cuda(format!("{op}: copy batch {i}: {e:?}")))?;
    }
    Ok(T::wrap(out, out_shape, dev))
}

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

/// i64 ids on `device`, from wherever they are (host ids are what callers usually build).
fn ids_on(g: &Gpu, ids: &[i64], op: &str) -> Result<CudaSlice<i64>> {
    // Never an empty allocation: the kernels read none of it when there are no ids.
    let ids = if ids.is_empty() { &[0i64][..] } else { ids };
    g.stream.clone_htod(ids).map_err(|e| alloc_failed(g, op, 8 * ids.len(), e))
}

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

/// Whether the flash-attention kernels take this head dim (the f32 ones take 32, 64 and 128).
pub(crate) fn attention_kernel_fits(d: usize) -> bool {
    kernels::attention::F32_HEAD_DIMS.contains(&d)
}

/// Autocast runs attention on tensor cores (v2, head dims 32, 64 and 128, left padding
/// included); one query per head (sampling) takes the f32 decode kernel, which spreads the keys
/// over a block instead of filling a 64-query tile with one row.
fn attention_in_bf16(d: usize, tq: usize) -> bool {
    crate::autocast::bf16_enabled() && kernels::attention::BF16_HEAD_DIMS.contains(&d) && tq > 1
}

/// `key_pad` (one count per batch row, or empty) on the device.
fn key_pad_on(g: &Gpu, key_pad: &[usize], op: &str) -> Result<Option<CudaSlice<i32>>> {
    if key_pad.iter().all(|&p| p == 0) {
        return Ok(None);
    }
    let counts: Vec<i32> = key_pad.iter().map(|&p| i32::try_from(p).map_err(|_| Error::Msg(format!("{op}: {p} padding keys do not fit i32")))).collect::<Result<_>>()?;
    g.stream.clone_htod(&counts).map(Some).map_err(|e| alloc_failed(g, op, 4 * counts.len(), e))
}

/// Causal attention, q [.., tq, d], k and v [.., tk, d], the first `key_pad[b]` keys of batch
/// row b hidden (empty: none): (out, lse [.., tq]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, tq: usize, tk: usize, d: usize, key_pad: &[usize]) -> Result<(Tensor, Tensor)> {
    let (dev, op) = (ordinal(q), "attention");
    let g = gpu(dev)?;
    let s = AttnShape { heads, tq, tk, d };
    let (mut out, mut lse) = (alloc(&g, heads * tq * d, op)?, alloc(&g, heads * tq, op)?);
    let counts = key_pad_on(&g, key_pad, op)?;
    let pad = counts.as_ref().map(|c| KeyPad { counts: c, heads_per_row: heads / key_pad.len() });
    if attention_in_bf16(d, tq) {
        // Autocast: bf16 q, k, v on tensor cores (v2), f32 accumulation, out and lse.
        let (q16, k16, v16) = (bf16_of(q, op)?, bf16_of(k, op)?, bf16_of(v, op)?);
        // v2; IGPT_ATTN_FWD=v3 takes 128 queries per block.
        let version = kernels::attention::FwdBf16::for_engine().map_err(err(op))?;
        g.attention_fwd_bf16(version, &q16, &k16, &v16, &mut out, &mut lse, s, pad.as_ref()).map_err(err(op))?;
    } else {
        if tq == 1 {
            // One new query per head (sampling with the KV cache): the decode kernel, which
            // spreads the keys over a block instead of filling a 64-query tile with one row.
            decode(&g, &*f32_of(q, op)?, k, v, &mut out, &mut lse, s, pad.as_ref())?;
        } else {
            let (qv, kv, vv) = (f32_of(q, op)?, f32_of(k, op)?, f32_of(v, op)?);
            g.attention_fwd_f32(&qv, &kv, &vv, &mut out, &mut lse, s, pad.as_ref()).map_err(err(op))?;
        }
    }
    // Under autocast the output is stored in bf16: it feeds the output projection's matmul.
    Ok((stored(tensor(out, q.shape(), dev), op)?, tensor(lse, &q.shape()[..q.rank() - 1], dev)))
}

/// Decode over `k` and `v` [.., tk, d] read where they lie (a KV cache's views of buffers of
/// larger capacity: rows of d contiguous, heads evenly apart), f32 or bf16; other layouts are
/// gathered into contiguous f32 first.
#[allow(clippy::too_many_arguments)]
fn decode(g: &Gpu, q: &CudaSlice<f32>, k: &Tensor, v: &Tensor, out: &mut CudaSlice<f32>, lse: &mut CudaSlice<f32>, s: AttnShape, pad: Option<&KeyPad>) -> Result<()> {
    let (heads, tk, d, op) = (s.heads, s.tk, s.d, "attention (decode)");
    let in_place = match (k.layout().even_blocks(tk, d), v.layout().even_blocks(tk, d)) {
        (Some((ko, ks)), Some((vo, vs))) if ks == vs && k.dtype() == v.dtype() && (ko | vo | ks) % 4 == 0 => Some((ko, vo, ks)),
        _ => None,
    };
    if let Some((ko, vo, stride)) = in_place {
        let (kg, vg) = (k.read(), v.read());
        match (&*kg, &*vg) {
            (Storage::Cuda(CudaStorage::F32(kb, _)), Storage::Cuda(CudaStorage::F32(vb, _))) => {
                let (kv, vv) = (KvView { buf: kb, offset: ko, head_stride: stride }, KvView { buf: vb, offset: vo, head_stride: stride });
                return g.attention_decode_kv(q, kv, vv, out, lse, heads, tk, d, pad).map_err(err(op));
            }
            (Storage::Cuda(CudaStorage::U16(kb, DType::BF16, _)), Storage::Cuda(CudaStorage::U16(vb, DType::BF16, _))) => {
                let (kv, vv) = (KvView { buf: kb, offset: ko, head_stride: stride }, KvView { buf: vb, offset: vo, head_stride: stride });
                return g.attention_decode_kv(q, kv, vv, out, lse, heads, tk, d, pad).map_err(err(op));
            }
            _ => {}
        }
    }
    let (kv, vv) = (f32_of(k, op)?, f32_of(v, op)?);
    g.attention_decode_f32(q, &kv, &vv, out, lse, heads, tk, d, pad).map_err(err(op))
}

/// (dq, dk, dv) of `attention`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, lse: &Tensor, dout: &Tensor, heads: usize, tq: usize, tk: usize, d: usize, key_pad: &[usize]) -> Result<(Tensor, Tensor, Tensor)> {
    let (dev, op) = (ordinal(q), "attention backward");
    let g = gpu(dev)?;
    let s = AttnShape { heads, tq, tk, d };
    let (ov, lv) = (f32_of(out, op)?, f32_of(lse, op)?);
    let (mut dq, mut dk, mut dv, mut delta) = (alloc(&g, q.numel(), op)?, alloc(&g, k.numel(), op)?, alloc(&g, v.numel(), op)?, alloc(&g, heads * tq, op)?);
    let counts = key_pad_on(&g, key_pad, op)?;
    let pad = counts.as_ref().map(|c| KeyPad { counts: c, heads_per_row: heads / key_pad.len() });
    if attention_in_bf16(d, tq) {
        let (q16, k16, v16, do16) = (bf16_of(q, op)?, bf16_of(k, op)?, bf16_of(v, op)?, bf16_of(dout, op)?);
        // v2; IGPT_ATTN_BWD=v3 or v4 takes the double-buffered builds (v4: 128 keys per block).
        let version = kernels::attention::BwdBf16::for_engine().map_err(err(op))?;
        g.attention_bwd_bf16(version, &q16, &k16, &v16, &ov, &lv, &do16, &mut dq, &mut dk, &mut dv, &mut delta, s, pad.as_ref()).map_err(err(op))?;
    } else {
        let (qv, kv, vv, dov) = (f32_of(q, op)?, f32_of(k, op)?, f32_of(v, op)?, f32_of(dout, op)?);
        g.attention_bwd_f32(&qv, &kv, &vv, &ov, &lv, &dov, &mut dq, &mut dk, &mut dv, &mut delta, s, pad.as_ref()).map_err(err(op))?;
    }
    Ok((tensor(dq, q.shape(), dev), tensor(dk, k.shape(), dev), tensor(dv, v.shape(), dev)))
}

/// One AdamW step in place on the device: `param`, `m` and `v` (contiguous, each its whole
/// buffer) updated from `grad`; `step` is the parameter's own 1-based count.
#[allow(clippy::too_many_arguments)]
pub(crate) fn adamw(param: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, step: u64) -> Result<()> {
    let op = "AdamW";
    let g = gpu(ordinal(param))?;
    if param.same_storage(grad) || param.same_storage(m) || param.same_storage(v) {
        // The update takes the parameter's write lock: a gradient reading the same buffer would deadlock.
        return Err(Error::Msg(format!("{op}: the gradient or a moment of {param:?} shares the parameter's buffer")));
    }
    let gv = f32_of(grad, op)?;
    let h = kernels::reference::AdamWParams { lr: lr as f64, b1: beta1 as f64, b2: beta2 as f64, eps: eps as f64, wd: weight_decay as f64, step: step as i32 };
    let whole = |t: &Tensor| t.is_contiguous() && t.layout().offset == 0;
    if !(whole(param) && whole(m) && whole(v)) {
        return Err(Error::Msg(format!("{op}: a parameter on CUDA must own its whole buffer, got {param:?}")));
    }
    let (mut pw, mut mw, mut vw) = (param.write(), m.write(), v.write());
    match (&mut *pw, &mut *mw, &mut *vw) {
        (Storage::Cuda(CudaStorage::F32(p, _)), Storage::Cuda(CudaStorage::F32(ms, _)), Storage::Cuda(CudaStorage::F32(vs, _))) => {
            g.adamw(p, &gv, ms, vs, h).map_err(err(op))
        }
        _ => Err(Error::Msg(format!("{op}: parameter and moments must be f32 on the same CUDA device"))),
    }
}

/// AdamW over many parameters on one device in one launch (`adamw_multi_f32`), each with its
/// own learning rate, decay and step. Where a gradient or moment shares a buffer with another
/// parameter of the list (the write locks of one launch would then meet), one launch per
/// parameter instead, as [`adamw`].
pub(crate) fn adamw_multi(items: &[crate::optim::AdamwItem<'_>], beta1: f32, beta2: f32, eps: f32) -> Result<()> {
    let op = "AdamW";
    let Some(first) = items.first() else { return Ok(()) };
    let dev = ordinal(first.0);
    // A parameter sharing a buffer with anything else of the list, or a gradient with a moment.
    let shared = items.iter().enumerate().any(|(i, a)| {
        items.iter().enumerate().any(|(j, b)| {
            [b.1, b.2, b.3].iter().any(|t| a.0.same_storage(t)) || (i != j && a.0.same_storage(b.0)) || a.1.same_storage(b.2) || a.1.same_storage(b.3)
        })
    });
    if shared || items.iter().any(|it| ordinal(it.0) != dev) {
        for &(p, g, m, v, lr, wd, step) in items {
            adamw(p, g, m, v, lr, beta1, beta2, eps, wd, step)?;
        }
        return Ok(());
    }
    let g = gpu(dev)?;
    let whole = |t: &Tensor| t.is_contiguous() && t.layout().offset == 0;
    if let Some(it) = items.iter().find(|it| !(whole(it.0) && whole(it.2) && whole(it.3))) {
        return Err(Error::Msg(format!("{op}: a parameter on CUDA must own its whole buffer, got {:?}", it.0)));
    }
    let grads = items.iter().map(|it| f32_of(it.1, op)).collect::<Result<Vec<_>>>()?;
    let mut locks: Vec<_> = items.iter().map(|it| (it.0.write(), it.2.write(), it.3.write())).collect();
    let mut list = Vec::with_capacity(items.len());
    for (((pw, mw, vw), gv), it) in locks.iter_mut().zip(&grads).zip(items) {
        let h = kernels::reference::AdamWParams { lr: it.4 as f64, b1: beta1 as f64, b2: beta2 as f64, eps: eps as f64, wd: it.5 as f64, step: it.6 as i32 };
        match (&mut **pw, &mut **mw, &mut **vw) {
            (Storage::Cuda(CudaStorage::F32(p, _)), Storage::Cuda(CudaStorage::F32(m, _)), Storage::Cuda(CudaStorage::F32(v, _))) => {
                list.push(kernels::adamw::AdamwTensor { p, g: gv, m, v, h })
            }
            _ => return Err(Error::Msg(format!("{op}: parameter and moments must be f32 on the same CUDA device, got {:?}", it.0))),
        }
    }
    g.adamw_multi(&mut list, beta1, beta2, eps).map_err(err(op))
}

/// The gradient of `narrow`: `g` placed at `start..start+len` along `dim` of zeros of `shape`,
/// one block copy per index of the dims before `dim`; in `g`'s type (f32 or bf16).
pub(crate) fn narrow_backward(g: &Tensor, shape: &[usize], dim: usize, start: usize) -> Result<Tensor> {
    let (dev, op) = (ordinal(g), "narrow backward");
    let gpu = gpu(dev)?;
    if is_bf16(g) {
        let gv = bf16_of(g, op)?;
        let out = place_narrowed(&gpu, &gv, shape, dim, start, g.shape()[dim], op)?;
        return Ok(tensor16(out, shape, dev));
    }
    let gv = f32_of(g, op)?;
    Ok(tensor(place_narrowed(&gpu, &gv, shape, dim, start, g.shape()[dim], op)?, shape, dev))
}

fn place_narrowed<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(gpu: &Gpu, g: &CudaSlice<T>, shape: &[usize], dim: usize, start: usize, len: usize, op: &str) -> Result<CudaSlice<T>> {
    let (outer, n, inner): (usize, usize, usize) = (shape[..dim].iter().product(), shape[dim], shape[dim + 1..].iter().product());
    let total = shape.iter().product::<usize>();
    // Written only at the narrowed part.
    let mut out = gpu.stream.alloc_zeros::<T>(total.max(1)).map_err(|e| alloc_failed(gpu, op, total * std::mem::size_of::<T>(), e))?;
    for o in 0..outer {
        let src = g.slice(o * len * inner..(o + 1) * len * inner);
        let mut dst = out.slice_mut((o * n + start) * inner..(o * n + start + len) * inner);
        gpu.stream.memcpy_dtod(&src, &mut dst).map_err(|e| Error::Cuda(format!("{op}: copy: {e:?}")))?;
    }
    Ok(out)
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

/// i64 ids on the device, row-major: the tensor's own buffer when it is one, else uploaded
/// from the host (where host ids are checked against `bound` first).
enum DevI64<'a> {
    Whole(RwLockReadGuard<'a, Storage>),
    Uploaded(CudaSlice<i64>),
}

impl Deref for DevI64<'_> {
    type Target = CudaSlice<i64>;
    fn deref(&self) -> &CudaSlice<i64> {
        match self {
            DevI64::Whole(g) => match &**g {
                Storage::Cuda(CudaStorage::I64(s, _)) => s,
                _ => unreachable!("checked in ids_of"),
            },
            DevI64::Uploaded(s) => s,
        }
    }
}

fn ids_of<'a>(g: &Gpu, ids: &'a Tensor, bound: usize, op: &'static str) -> Result<DevI64<'a>> {
    ids.expect_i64(op)?;
    if ids.device().is_cuda() {
        let l = ids.layout();
        let guard = ids.read();
        if let Storage::Cuda(CudaStorage::I64(s, _)) = &*guard {
            if l.is_contiguous() && l.offset == 0 && s.len() == l.numel() {
                // Ids made on the device (argmax, sampling) are in range by construction; the
                // kernels give NaN for a bad one rather than read outside the row.
                return Ok(DevI64::Whole(guard));
            }
        }
    }
    let host = ids.to_vec_i64()?;
    if let Some(p) = host.iter().position(|&i| i < 0 || i as usize >= bound) {
        return Err(Error::Index(format!("{op}: id {} at position {p} is outside 0..{bound}", host[p])));
    }
    Ok(DevI64::Uploaded(ids_on(g, &host, op)?))
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

/// A zero tensor of `shape` on `device`.
pub(crate) fn zeros_on(shape: &[usize], device: usize) -> Result<Tensor> {
    let g = gpu(device)?;
    Ok(tensor(zeros(&g, shape.iter().product(), "zeros")?, shape, device))
}

/// A tensor of `shape` on `device` that the caller overwrites in full (poisoned like any op's
/// output while `poison_outputs` is on).
pub(crate) fn output_on(shape: &[usize], device: usize) -> Result<Tensor> {
    let g = gpu(device)?;
    Ok(tensor(alloc(&g, shape.iter().product(), "output")?, shape, device))
}

/// The L2 norm over all of `ts` (f32 on one CUDA device): one fused reduction, one number back.
pub(crate) fn global_norm(ts: &[&Tensor]) -> Result<f32> {
    let Some(first) = ts.first() else { return Ok(0.0) };
    let (dev, op) = (ordinal(first), "global_norm");
    let g = gpu(dev)?;
    let views = ts.iter().map(|t| f32_of(t, op)).collect::<Result<Vec<_>>>()?;
    let bufs: Vec<&CudaSlice<f32>> = views.iter().map(|v| &**v).collect();
    let mut plan = g.l2norm_plan(&bufs).map_err(err(op))?;
    g.l2norm(&mut plan, &bufs).map_err(err(op))?;
    let out = g.stream.clone_dtoh(&plan.out).map_err(|e| Error::Cuda(format!("{op}: reading the norm: {e:?}")))?;
    Ok(out[0])
}

/// Shape and the two views' strides with size-1 dims dropped and dims that step evenly in both
/// merged (as `merged` does for one view).
fn merged_pair(shape: &[usize], a: &[usize], b: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let (mut d, mut sa, mut sb): (Vec<usize>, Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..shape.len() {
        if shape[i] == 1 {
            continue;
        }
        match (d.last_mut(), sa.last_mut(), sb.last_mut()) {
            (Some(ld), Some(la), Some(lb)) if *la == a[i] * shape[i] && *lb == b[i] * shape[i] => {
                *ld *= shape[i];
                *la = a[i];
                *lb = b[i];
            }
            _ => {
                d.push(shape[i]);
                sa.push(a[i]);
                sb.push(b[i]);
            }
        }
    }
    if d.is_empty() {
        (vec![1], vec![0], vec![0])
    } else {
        (d, sa, sb)
    }
}

/// `dst`'s elements (any view, f32 or bf16 on CUDA) = `src`'s (same shape, device and type).
pub(crate) fn assign(dst: &Tensor, src: &Tensor) -> Result<()> {
    let (dev, name) = (ordinal(dst), "assign");
    let g = gpu(dev)?;
    if !matches!((dst.dtype(), src.dtype()), (DType::F32, DType::F32) | (DType::BF16, DType::BF16)) {
        return Err(Error::NotOnDevice { op: "assign (CUDA: f32 or bf16, both the same)", device: dst.device() });
    }
    // A source sharing the destination's buffer is copied out first: the copy below holds the
    // destination's write lock and would wait on its own read lock.
    let owned;
    let src = if src.same_storage(dst) {
        owned = contiguous(src)?; // always a fresh buffer
        &owned
    } else {
        src
    };
    let (sl, dl) = (src.layout().clone(), dst.layout().clone());
    let (shape, ss, ds) = merged_pair(&dl.shape, &sl.strides, &dl.strides);
    let sg = src.read();
    let mut dg = dst.write();
    match (&*sg, &mut *dg) {
        (Storage::Cuda(CudaStorage::F32(sbuf, _)), Storage::Cuda(CudaStorage::F32(dbuf, _))) => {
            g.strided_assign_f32(sbuf, sl.offset, &ss, dbuf, dl.offset, &ds, &shape).map_err(err(name))
        }
        (Storage::Cuda(CudaStorage::U16(sbuf, DType::BF16, _)), Storage::Cuda(CudaStorage::U16(dbuf, DType::BF16, _))) => {
            g.strided_assign_u16(sbuf, sl.offset, &ss, dbuf, dl.offset, &ds, &shape).map_err(err(name))
        }
        _ => Err(Error::NotOnDevice { op: name, device: src.device() }),
    }
}
