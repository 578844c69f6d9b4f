//! Matmul: f32 on the v2 kernel, bf16 on tensor cores under autocast (wgmma on sm_90,
//! mma.sync elsewhere), fused bias and GELU epilogues, shared or batched right operands.

use super::buffers::*;
use crate::cuda::device::{gpu, CudaStorage};
use crate::storage::Storage;
use crate::{DType, Error, Result, Tensor};
use cudarc::driver::CudaSlice;
use kernels::device::{Gpu, Stored};
use kernels::matmul_tc::MatmulTc;

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
    if batches * m * n == 0 {
        return Ok(T::wrap(out, out_shape, dev)); // nothing to compute (and `c` below would outsize `dst`)
    }
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
