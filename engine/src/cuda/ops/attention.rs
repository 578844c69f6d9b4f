//! Causal flash attention forward and backward (f32, or bf16 tensor cores under autocast), and
//! the decode kernel for one query per head over a KV cache read where it lies.

use super::buffers::*;
use crate::cuda::device::{gpu, CudaStorage};
use crate::storage::Storage;
use crate::{DType, Error, Result, Tensor};
use cudarc::driver::CudaSlice;
use kernels::device::Gpu;
use kernels::attention::{AttnShape, KeyPad, KvView};

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
