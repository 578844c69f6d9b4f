//! The attention launchers (`impl Gpu`): argument checks, grids, shared memory, left padding
//! ([`KeyPad`]) and the KV-cache views the decode kernels read in place ([`KvView`]).

use super::*;
use crate::device::Gpu;
use crate::{Error, Result};
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};

fn check_len(kernel: &str, what: &str, got: usize, want: usize) -> Result<()> {
    if got < want {
        return Err(Error::Other(format!("{kernel}: buffer {what} has {got} elements, shape needs {want}")));
    }
    Ok(())
}

fn grid_y(kernel: &str, n: usize) -> Result<u32> {
    if n == 0 || n > 65535 {
        return Err(Error::Other(format!("{kernel}: {n} tiles does not fit grid.y")));
    }
    Ok(n as u32)
}

fn lc(grid: (u32, u32, u32), threads: u32, smem: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: grid, block_dim: (threads, 1, 1), shared_mem_bytes: smem }
}

/// Left padding: `counts[b]` leading keys hidden from the heads of batch
/// row b, which are heads b·heads_per_row .. (b+1)·heads_per_row (counts <= tk).
pub struct KeyPad<'a> {
    pub counts: &'a CudaSlice<i32>,
    pub heads_per_row: usize,
}

impl KeyPad<'_> {
    fn check(&self, kernel: &str, s: AttnShape) -> Result<()> {
        if self.heads_per_row == 0 || self.counts.len() * self.heads_per_row != s.heads {
            return Err(Error::Other(format!("{kernel} {}: {} padding counts x {} heads per row is not BH", s.describe(), self.counts.len(), self.heads_per_row)));
        }
        Ok(())
    }
}

/// Pushes a kernel's (key_pad, heads_per_row) arguments: a null pointer without padding.
fn push_pad<'a>(lb: &mut cudarc::driver::LaunchArgs<'a>, pad: Option<&'a KeyPad<'a>>, hpr: &'a i32, null: &'a u64) {
    match pad {
        Some(p) => lb.arg(p.counts),
        None => lb.arg(null),
    };
    lb.arg(hpr);
}

impl Gpu {
    /// 16-byte alignment (float4 / cp.async rows); cudarc allocations always are.
    fn attn_aligned<T>(&self, kernel: &str, what: &str, s: &CudaSlice<T>) -> Result<()> {
        let (ptr, _sync) = s.device_ptr(&self.stream);
        if ptr % 16 != 0 {
            return Err(Error::Other(format!("{kernel}: buffer {what} is not 16-byte aligned")));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn attn_fwd_checks<T>(&self, kernel: &str, q: &CudaSlice<T>, k: &CudaSlice<T>, v: &CudaSlice<T>, out: &CudaSlice<f32>, lse: &CudaSlice<f32>, s: AttnShape) -> Result<()> {
        s.validate(kernel, if kernel.contains("bf16") { BF16_HEAD_DIMS } else { F32_HEAD_DIMS })?;
        let (nq, nk) = (s.heads * s.tq * s.d, s.heads * s.tk * s.d);
        for (w, l, n) in [("q", q.len(), nq), ("k", k.len(), nk), ("v", v.len(), nk), ("out", out.len(), nq), ("lse", lse.len(), s.heads * s.tq)] {
            check_len(kernel, w, l, n)?;
        }
        self.attn_aligned(kernel, "q", q)?;
        self.attn_aligned(kernel, "k", k)?;
        self.attn_aligned(kernel, "v", v)?;
        self.attn_aligned(kernel, "out", out)
    }

    #[allow(clippy::too_many_arguments)]
    fn attn_bwd_checks<T>(
        &self, kernel: &str, q: &CudaSlice<T>, k: &CudaSlice<T>, v: &CudaSlice<T>, out: &CudaSlice<f32>, lse: &CudaSlice<f32>,
        dout: &CudaSlice<T>, dq: &CudaSlice<f32>, dk: &CudaSlice<f32>, dv: &CudaSlice<f32>, delta: &CudaSlice<f32>, s: AttnShape,
    ) -> Result<()> {
        self.attn_fwd_checks(kernel, q, k, v, out, lse, s)?;
        let (nq, nk) = (s.heads * s.tq * s.d, s.heads * s.tk * s.d);
        for (w, l, n) in [("dout", dout.len(), nq), ("dq", dq.len(), nq), ("dk", dk.len(), nk), ("dv", dv.len(), nk), ("delta", delta.len(), s.heads * s.tq)] {
            check_len(kernel, w, l, n)?;
        }
        for (w, p) in [("dq", dq), ("dk", dk), ("dv", dv)] {
            self.attn_aligned(kernel, w, p)?;
        }
        self.attn_aligned(kernel, "dout", dout)
    }

    #[allow(clippy::too_many_arguments)]
    /// `pad`: the left padding, None without.
    #[allow(clippy::too_many_arguments)]
    fn attn_launch_fwd<T: cudarc::driver::DeviceRepr>(
        &self, base: &str, (bq, threads): (usize, u32), q: &CudaSlice<T>, k: &CudaSlice<T>, v: &CudaSlice<T>, out: &mut CudaSlice<f32>,
        lse: &mut CudaSlice<f32>, s: AttnShape, pad: Option<&KeyPad>,
    ) -> Result<()> {
        self.attn_fwd_checks(base, q, k, v, out, lse, s)?;
        if let Some(p) = pad {
            p.check(base, s)?;
        }
        let name = format!("{base}_d{}", s.d);
        let grid = (s.heads as u32, grid_y(&name, s.tq.div_ceil(bq))?, 1);
        let (tq, tk, scale) = (s.tq as i32, s.tk as i32, s.scale());
        let (hpr, null) = (pad.map_or(1, |p| p.heads_per_row) as i32, 0u64);
        let mut lb = self.stream.launch_builder(self.f(&name)?);
        lb.arg(q).arg(k).arg(v).arg(out).arg(lse).arg(&tq).arg(&tk).arg(&scale);
        push_pad(&mut lb, pad, &hpr, &null);
        unsafe { lb.launch(lc(grid, threads, 0)) }.map_err(|e| Error::cuda(format!("launch {name} {} grid={grid:?}", s.describe()), e))?;
        Ok(())
    }

    /// v1 forward, f32 (out and lse overwritten), with left padding when `pad` is given.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_fwd_f32(&self, q: &CudaSlice<f32>, k: &CudaSlice<f32>, v: &CudaSlice<f32>, out: &mut CudaSlice<f32>, lse: &mut CudaSlice<f32>, s: AttnShape, pad: Option<&KeyPad>) -> Result<()> {
        self.attn_launch_fwd("attn_fwd_v1_f32", (FWD_BQ, 256), q, k, v, out, lse, s, pad)
    }

    /// v2 or v3 forward: bf16 q/k/v (bit patterns), f32 out and lse, with left padding when
    /// `pad` is given.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_fwd_bf16(&self, version: FwdBf16, q: &CudaSlice<u16>, k: &CudaSlice<u16>, v: &CudaSlice<u16>, out: &mut CudaSlice<f32>, lse: &mut CudaSlice<f32>, s: AttnShape, pad: Option<&KeyPad>) -> Result<()> {
        let bq = version.queries_per_block();
        self.attn_launch_fwd(version.stem(), (bq, 2 * bq as u32), q, k, v, out, lse, s, pad)
    }

    fn attn_preprocess<T: cudarc::driver::DeviceRepr>(&self, name: &str, out: &CudaSlice<f32>, dout: &CudaSlice<T>, delta: &mut CudaSlice<f32>, s: AttnShape) -> Result<()> {
        let rows = s.heads * s.tq;
        let (r, d) = (rows as i32, s.d as i32);
        let mut lb = self.stream.launch_builder(self.f(name)?);
        lb.arg(out).arg(dout).arg(delta).arg(&r).arg(&d);
        unsafe { lb.launch(lc((rows.div_ceil(4) as u32, 1, 1), 128, 0)) }.map_err(|e| Error::cuda(format!("launch {name} {}", s.describe()), e))?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn attn_launch_bwd<T: cudarc::driver::DeviceRepr>(
        &self, name: &str, bk: usize, threads: u32, smem: usize, q: &CudaSlice<T>, k: &CudaSlice<T>, v: &CudaSlice<T>,
        dout: &CudaSlice<T>, lse: &CudaSlice<f32>, delta: &CudaSlice<f32>, dq: &mut CudaSlice<f32>, dk: &mut CudaSlice<f32>,
        dv: &mut CudaSlice<f32>, s: AttnShape, pad: Option<&KeyPad>,
    ) -> Result<()> {
        if let Some(p) = pad {
            p.check(name, s)?;
        }
        let f = self.f(name)?;
        if smem > 48 * 1024 {
            self.ctx.bind_to_thread().map_err(|e| Error::cuda(format!("{name}: binding the CUDA context"), e))?;
            f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
                .map_err(|e| Error::cuda(format!("{name}: raising the dynamic shared memory limit to {smem} B"), e))?;
        }
        let grid = (s.heads as u32, grid_y(name, s.tk.div_ceil(bk))?, 1);
        let (tq, tk, scale) = (s.tq as i32, s.tk as i32, s.scale());
        let (hpr, null) = (pad.map_or(1, |p| p.heads_per_row) as i32, 0u64);
        let mut lb = self.stream.launch_builder(f);
        lb.arg(q).arg(k).arg(v).arg(dout).arg(lse).arg(delta).arg(dq).arg(dk).arg(dv).arg(&tq).arg(&tk).arg(&scale);
        push_pad(&mut lb, pad, &hpr, &null);
        unsafe { lb.launch(lc(grid, threads, smem as u32)) }
            .map_err(|e| Error::cuda(format!("launch {name} {} grid={grid:?} smem={smem}", s.describe()), e))?;
        Ok(())
    }

    /// v1 backward, f32: dq, dk, dv overwritten (dq zeroed here, then accumulated
    /// atomically); `out`/`lse` from [`Self::attention_fwd_f32`] with the same `pad`;
    /// `delta` is [heads, tq] scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_bwd_f32(
        &self, q: &CudaSlice<f32>, k: &CudaSlice<f32>, v: &CudaSlice<f32>, out: &CudaSlice<f32>, lse: &CudaSlice<f32>,
        dout: &CudaSlice<f32>, dq: &mut CudaSlice<f32>, dk: &mut CudaSlice<f32>, dv: &mut CudaSlice<f32>, delta: &mut CudaSlice<f32>,
        s: AttnShape, pad: Option<&KeyPad>,
    ) -> Result<()> {
        self.attn_bwd_checks("attn_bwd_v1_f32", q, k, v, out, lse, dout, dq, dk, dv, delta, s)?;
        self.stream.memset_zeros(dq).map_err(|e| Error::cuda("attn_bwd_v1_f32: zeroing dq", e))?;
        self.attn_preprocess("attn_bwd_preprocess_f32", out, dout, delta, s)?;
        let name = format!("attn_bwd_v1_f32_d{}", s.d);
        self.attn_launch_bwd(&name, BWD_V1_BK, 256, 0, q, k, v, dout, lse, delta, dq, dk, dv, s, pad)
    }

    /// v2, v3 or v4 backward: bf16 q/k/v/dout, f32 `out` and `lse` from
    /// [`Self::attention_fwd_bf16`] with the same `pad`, f32 dq/dk/dv (overwritten; dq
    /// zeroed here, then accumulated atomically).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_bwd_bf16(
        &self, version: BwdBf16, q: &CudaSlice<u16>, k: &CudaSlice<u16>, v: &CudaSlice<u16>, out: &CudaSlice<f32>, lse: &CudaSlice<f32>,
        dout: &CudaSlice<u16>, dq: &mut CudaSlice<f32>, dk: &mut CudaSlice<f32>, dv: &mut CudaSlice<f32>, delta: &mut CudaSlice<f32>,
        s: AttnShape, pad: Option<&KeyPad>,
    ) -> Result<()> {
        let (d, name) = (s.d, version.entry(s.d));
        self.attn_bwd_checks(&name, q, k, v, out, lse, dout, dq, dk, dv, delta, s)?;
        self.stream.memset_zeros(dq).map_err(|e| Error::cuda(format!("{name}: zeroing dq"), e))?;
        self.attn_preprocess("attn_bwd_preprocess_bf16", out, dout, delta, s)?;
        self.attn_launch_bwd(&name, version.keys_per_block(d), version.threads(d), version.smem_bytes(d), q, k, v, dout, lse, delta, dq, dk, dv, s, pad)
    }

    /// Decode: q [heads, d] (one new query per head, the last position), k/v [heads, tk, d],
    /// out [heads, d], lse [heads]; any tk >= 1; f32; left padding when `pad` is given.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_decode_f32(
        &self, q: &CudaSlice<f32>, k: &CudaSlice<f32>, v: &CudaSlice<f32>, out: &mut CudaSlice<f32>, lse: &mut CudaSlice<f32>,
        heads: usize, tk: usize, d: usize, pad: Option<&KeyPad>,
    ) -> Result<()> {
        let s = AttnShape { heads, tq: 1, tk, d };
        self.attn_fwd_checks("attn_decode_f32", q, k, v, out, lse, s)?;
        self.attention_decode("attn_decode_f32", q, KvView::contiguous(k, s), KvView::contiguous(v, s), out, lse, s, pad)
    }

    /// Decode reading K and V in place (a KV cache's buffers; f32, or bf16 with
    /// `attn_decode_bf16kv`): q [heads, d] f32, out [heads, d], lse [heads].
    #[allow(clippy::too_many_arguments)]
    pub fn attention_decode_kv<T: DeviceRepr + KvElement>(
        &self, q: &CudaSlice<f32>, k: KvView<T>, v: KvView<T>, out: &mut CudaSlice<f32>, lse: &mut CudaSlice<f32>,
        heads: usize, tk: usize, d: usize, pad: Option<&KeyPad>,
    ) -> Result<()> {
        let s = AttnShape { heads, tq: 1, tk, d };
        let name = T::DECODE;
        if !F32_HEAD_DIMS.contains(&d) || tk == 0 {
            return Err(Error::Other(format!("{name}: head dim {d} (32, 64 or 128) and tk {tk} (>= 1)")));
        }
        for (what, len, want) in [("q", q.len(), heads * d), ("out", out.len(), heads * d), ("lse", lse.len(), heads)] {
            if len < want {
                return Err(Error::Other(format!("{name}: {what} holds {len} elements, needs {want}")));
            }
        }
        self.attention_decode(name, q, k, v, out, lse, s, pad)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_decode<T: DeviceRepr + KvElement>(
        &self, name: &str, q: &CudaSlice<f32>, k: KvView<T>, v: KvView<T>, out: &mut CudaSlice<f32>, lse: &mut CudaSlice<f32>, s: AttnShape, pad: Option<&KeyPad>,
    ) -> Result<()> {
        if k.head_stride != v.head_stride {
            return Err(Error::Other(format!("{name}: keys {} and values {} apart per head: one stride for both", k.head_stride, v.head_stride)));
        }
        k.check(name, "k", s)?;
        v.check(name, "v", s)?;
        if let Some(p) = pad {
            p.check(name, s)?;
        }
        let entry = format!("{name}_d{}", s.d);
        let (tki, stride, scale) = (s.tk as i32, k.head_stride as i64, s.scale());
        let (hpr, null) = (pad.map_or(1, |p| p.heads_per_row) as i32, 0u64);
        let (kv, vv) = (k.buf.slice(k.offset..), v.buf.slice(v.offset..));
        let mut lb = self.stream.launch_builder(self.f(&entry)?);
        lb.arg(q).arg(&kv).arg(&vv).arg(out).arg(lse).arg(&tki).arg(&stride).arg(&scale);
        push_pad(&mut lb, pad, &hpr, &null);
        unsafe { lb.launch(lc((s.heads as u32, 1, 1), 256, 0)) }.map_err(|e| Error::cuda(format!("launch {entry} heads={} tk={}", s.heads, s.tk), e))?;
        Ok(())
    }
}

/// The element types of a KV cache the decode kernels read, with their kernel's name.
pub trait KvElement {
    const DECODE: &'static str;
}
impl KvElement for f32 {
    const DECODE: &'static str = "attn_decode_f32";
}
impl KvElement for u16 {
    const DECODE: &'static str = "attn_decode_bf16kv";
}

/// Keys or values for decode where they lie: head h's tk rows of d start at element
/// `offset + h * head_stride` of `buf` (a cache of capacity c has head_stride c * d).
pub struct KvView<'a, T> {
    pub buf: &'a CudaSlice<T>,
    pub offset: usize,
    pub head_stride: usize,
}

impl<'a, T> KvView<'a, T> {
    /// A contiguous [heads, tk, d] buffer.
    pub fn contiguous(buf: &'a CudaSlice<T>, s: AttnShape) -> Self {
        KvView { buf, offset: 0, head_stride: s.tk * s.d }
    }

    /// Rows that fit their heads, inside the buffer, and aligned for 4-element loads.
    fn check(&self, name: &str, what: &str, s: AttnShape) -> Result<()> {
        let rows = s.tk * s.d;
        let end = self.offset + (s.heads.max(1) - 1) * self.head_stride + rows;
        if (s.heads > 1 && self.head_stride < rows) || end > self.buf.len() {
            return Err(Error::Other(format!(
                "{name}: {what} of {} heads x {} keys x {} from element {} with heads {} apart needs {end} of {} elements",
                s.heads, s.tk, s.d, self.offset, self.head_stride, self.buf.len()
            )));
        }
        if !self.offset.is_multiple_of(4) || !self.head_stride.is_multiple_of(4) {
            return Err(Error::Other(format!("{name}: {what} offset {} and head stride {} must be multiples of 4 elements", self.offset, self.head_stride)));
        }
        Ok(())
    }
}
