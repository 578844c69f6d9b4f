//! Layout and type changes on the device: row-major copies, f32 <-> bf16, assignment into a
//! view, and the gradient of `narrow`.

use super::buffers::*;
use crate::cuda::device::{gpu, CudaStorage};
use crate::storage::Storage;
use crate::{DType, Error, Result, Tensor};
use cudarc::driver::CudaSlice;
use kernels::device::Gpu;

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
