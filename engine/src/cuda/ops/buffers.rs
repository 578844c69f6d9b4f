//! What every op here shares: a tensor's elements as device buffers (f32, bf16 bits, i64 ids;
//! its own buffer when it lies so, else a gathered copy), output buffers (NaN while poisoned),
//! fresh tensors around them, and kernel errors as engine errors.

use crate::cuda::device::{gpu, CudaStorage};
use crate::shape::Layout;
use crate::storage::Storage;
use crate::{DType, Device, Error, Result, Tensor};
use cudarc::driver::CudaSlice;
use kernels::device::Gpu;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLockReadGuard;

pub(super) fn err(what: impl std::fmt::Display) -> impl FnOnce(kernels::Error) -> Error {
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

pub(super) fn ordinal(t: &Tensor) -> usize {
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

pub(super) static POISON: AtomicBool = AtomicBool::new(false);

/// While on, every op output that its kernel must write in full starts as NaN instead of 0, so
/// that an element a kernel skips shows (`engine::conformance` turns it on).
pub(crate) fn poison_outputs(on: bool) {
    POISON.store(on, Ordering::SeqCst);
}

/// An output buffer the kernel overwrites in full: not zeroed first (that would be one more
/// pass over memory per op), and NaN while [`poison_outputs`] is on, so that the conformance
/// cases catch a kernel that leaves elements unwritten.
pub(super) fn alloc(g: &Gpu, n: usize, what: &str) -> Result<CudaSlice<f32>> {
    // SAFETY: f32 has no invalid bit patterns, and every caller's kernel writes all n elements.
    let mut buf = unsafe { g.stream.alloc::<f32>(n.max(1)) }.map_err(|e| alloc_failed(g, what, 4 * n, e))?;
    if POISON.load(Ordering::SeqCst) {
        g.fill_f32(&mut buf, f32::NAN).map_err(err(what))?;
    }
    Ok(buf)
}

/// A zeroed buffer that a kernel adds into, or writes only in part.
pub(super) fn zeros(g: &Gpu, n: usize, what: &str) -> Result<CudaSlice<f32>> {
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
pub(super) fn merged(l: &Layout) -> (Vec<usize>, Vec<usize>) {
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
pub(super) fn tensor(buf: CudaSlice<f32>, shape: &[usize], device: usize) -> Tensor {
    Tensor::from_parts(Storage::Cuda(CudaStorage::F32(buf, device)), Layout::contiguous(shape), false, None, false)
}

/// A fresh contiguous bf16 CUDA tensor around `buf` (bf16 bit patterns).
pub(super) fn tensor16(buf: CudaSlice<u16>, shape: &[usize], device: usize) -> Tensor {
    Tensor::from_parts(Storage::Cuda(CudaStorage::U16(buf, DType::BF16, device)), Layout::contiguous(shape), false, None, false)
}

/// A bf16 output buffer the kernel overwrites in full: NaN while [`poison_outputs`] is on.
pub(super) fn alloc16(g: &Gpu, n: usize, what: &str) -> Result<CudaSlice<u16>> {
    let fail = |e| alloc_failed(g, what, 2 * n, e);
    if POISON.load(Ordering::SeqCst) {
        return g.stream.clone_htod(&vec![0x7fc0u16; n.max(1)]).map_err(fail);
    }
    // SAFETY: any u16 is a valid bf16 pattern, and every caller's kernel writes all n elements.
    unsafe { g.stream.alloc::<u16>(n.max(1)) }.map_err(fail)
}

pub(super) fn is_bf16(t: &Tensor) -> bool {
    t.dtype() == DType::BF16
}

/// An activation as autocast stores it: rounded to bf16 when autocast is on, else as it is.
pub(super) fn stored(t: Tensor, op: &'static str) -> Result<Tensor> {
    if !crate::autocast::bf16_enabled() || is_bf16(&t) {
        return Ok(t);
    }
    let dev = ordinal(&t);
    match bf16_of(&t, op)? {
        DevBf16::Made(s) => Ok(tensor16(s, t.shape(), dev)),
        DevBf16::Whole(_) => unreachable!("an f32 tensor is always rounded"),
    }
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
pub(super) fn bf16_rows<'a>(t: &'a Tensor, cols: usize, pitch: usize, rows_to: usize, op: &'static str) -> Result<DevBf16<'a>> {
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
pub(super) fn bf16_of<'a>(t: &'a Tensor, op: &'static str) -> Result<DevBf16<'a>> {
    let cols = t.shape().last().copied().unwrap_or(1);
    bf16_rows(t, cols, cols, t.numel() / cols.max(1), op)
}

/// i64 ids on `device`, from wherever they are (host ids are what callers usually build).
pub(super) fn ids_on(g: &Gpu, ids: &[i64], op: &str) -> Result<CudaSlice<i64>> {
    // No ids: one unused slot (`Gpu::upload`), which the kernels never read.
    g.upload(ids).map_err(|e| alloc_failed(g, op, 8 * ids.len(), e))
}

/// i64 ids on the device, row-major: the tensor's own buffer when it is one, else uploaded
/// from the host (where host ids are checked against `bound` first).
pub(super) enum DevI64<'a> {
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

pub(super) fn ids_of<'a>(g: &Gpu, ids: &'a Tensor, bound: usize, op: &'static str) -> Result<DevI64<'a>> {
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

/// Shape and the two views' strides with size-1 dims dropped and dims that step evenly in both
/// merged (as `merged` does for one view).
pub(super) fn merged_pair(shape: &[usize], a: &[usize], b: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
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
