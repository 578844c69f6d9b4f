//! Causal attention on the GPU, FlashAttention-2 style (sources: `cu/attention.cu`, whose
//! header describes each kernel's design). This file holds the attention launchers (as
//! `impl Gpu` methods), an f64 CPU reference, the self-test checks and the timings.
//!
//! Layout: q, out [heads, tq, d]; k, v [heads, tk, d]; lse [heads, tq] (natural log, f32);
//! every tensor contiguous, tq <= tk, query i sees keys j <= i + (tk - tq), scale 1/sqrt(d).
//! Versions (a ladder, both kept):
//! - v1: f32 in and out, CUDA cores; d = 32, 64 or 128; left padding ([`KeyPad`]).
//! - v2: bf16 q/k/v (and dout), f32 accumulation on tensor cores; out, lse, dq, dk, dv f32;
//!   d = 32, 64 or 128; left padding. Backward reads the f32 `out` of v2's forward (for delta =
//!   rowsum(dout * out)).
//! - v3: forward with 128 queries per block ([`FwdBf16`]); backward, v2's with double-buffered
//!   query tiles ([`BwdBf16`]).
//! - v4 (backward only): v3 with 128 keys per block and 4-wide dQ reductions; d = 64 or 128
//!   (at d = 32 the launcher runs v3).
//! - decode: tq = 1 per head over a KV cache of any length, as v1, reading K and V where the
//!   cache holds them ([`KvView`]: heads a capacity apart), f32 or bf16.
//!
//! With padding, a query that sees no key outputs zeros with lse = +inf (the CPU engine's rule).
//!
//! Backward adds dq with f32 atomicAdd (the launcher zeroes dq first); `delta` is a
//! [heads, tq] f32 scratch buffer the caller provides.

use crate::reference::Ref;

/// Every `extern "C"` entry of `cu/attention.cu` (the registry lists these).
pub const ENTRIES: &[&str] = &[
    "attn_fwd_v1_f32_d32",
    "attn_fwd_v1_f32_d64",
    "attn_fwd_v1_f32_d128",
    "attn_fwd_v2_bf16_d32",
    "attn_fwd_v2_bf16_d64",
    "attn_fwd_v2_bf16_d128",
    "attn_fwd_v3_bf16_d32",
    "attn_fwd_v3_bf16_d64",
    "attn_fwd_v3_bf16_d128",
    "attn_bwd_preprocess_f32",
    "attn_bwd_preprocess_bf16",
    "attn_bwd_v1_f32_d32",
    "attn_bwd_v1_f32_d64",
    "attn_bwd_v1_f32_d128",
    "attn_bwd_v2_bf16_d32",
    "attn_bwd_v2_bf16_d64",
    "attn_bwd_v2_bf16_d128",
    "attn_bwd_v3_bf16_d32",
    "attn_bwd_v3_bf16_d64",
    "attn_bwd_v3_bf16_d128",
    "attn_bwd_v4_bf16_d64",
    "attn_bwd_v4_bf16_d128",
    "attn_decode_f32_d32",
    "attn_decode_f32_d64",
    "attn_decode_f32_d128",
    "attn_decode_bf16kv_d32",
    "attn_decode_bf16kv_d64",
    "attn_decode_bf16kv_d128",
];

/// Head dims of the f32 kernels (v1, decode) and of the bf16 tensor-core ones (v2).
pub const F32_HEAD_DIMS: &[usize] = &[32, 64, 128];
pub const BF16_HEAD_DIMS: &[usize] = &[32, 64, 128];

/// Query rows per block of the forward kernels (v1 and v2).
pub const FWD_BQ: usize = 64;
/// The bf16 forward: v2 (64 queries per block, 4 warps) or v3 (128 queries, 8 warps: each K/V
/// tile read once per 128 queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FwdBf16 {
    V2,
    V3,
}

impl FwdBf16 {
    pub const ALL: [FwdBf16; 2] = [FwdBf16::V2, FwdBf16::V3];

    /// The engine's choice: v2 (measured on an H100), or `IGPT_ATTN_FWD=v2|v3`.
    pub fn for_engine() -> crate::Result<FwdBf16> {
        match std::env::var("IGPT_ATTN_FWD").ok().filter(|v| !v.is_empty()).as_deref() {
            None | Some("v2") => Ok(FwdBf16::V2),
            Some("v3") => Ok(FwdBf16::V3),
            Some(other) => Err(crate::Error::Other(format!("IGPT_ATTN_FWD={other:?}: expected v2 or v3"))),
        }
    }

    /// The entry's stem ("attn_fwd_v2_bf16"); the launcher appends the head dim.
    pub fn stem(self) -> &'static str {
        match self {
            FwdBf16::V2 => "attn_fwd_v2_bf16",
            FwdBf16::V3 => "attn_fwd_v3_bf16",
        }
    }

    /// Queries per block (the grid's y extent is tq / this).
    pub fn queries_per_block(self) -> usize {
        match self {
            FwdBf16::V2 => FWD_BQ,
            FwdBf16::V3 => 2 * FWD_BQ,
        }
    }

    /// Whether the self-test checks and times this version here: v3 has not run on a GPU yet
    /// and stays out under `IGPT_SKIP_UNPROVEN=1`.
    pub fn in_selftest(self) -> bool {
        self == FwdBf16::V2 || !crate::skip_unproven()
    }
}

/// Keys per block of the f32 backward (v1).
pub const BWD_V1_BK: usize = 32;

/// The bf16 backward: v2, v3 (v2 with double-buffered query tiles) or v4 (v3 with 128 keys per
/// block and 4-wide dQ reductions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BwdBf16 {
    V2,
    V3,
    V4,
}

impl BwdBf16 {
    pub const ALL: [BwdBf16; 3] = [BwdBf16::V2, BwdBf16::V3, BwdBf16::V4];

    /// Whether the self-test checks and times this version here: v3 and v4 have not run on a
    /// GPU yet and stay out under `IGPT_SKIP_UNPROVEN=1`.
    pub fn in_selftest(self) -> bool {
        self == BwdBf16::V2 || !crate::skip_unproven()
    }

    /// The engine's choice: v2 (measured on an H100), or `IGPT_ATTN_BWD=v2|v3|v4`; any other
    /// value is an error (a typo would otherwise time v2 under another name).
    pub fn for_engine() -> crate::Result<BwdBf16> {
        match std::env::var("IGPT_ATTN_BWD").ok().filter(|v| !v.is_empty()).as_deref() {
            None | Some("v2") => Ok(BwdBf16::V2),
            Some("v3") => Ok(BwdBf16::V3),
            Some("v4") => Ok(BwdBf16::V4),
            Some(other) => Err(crate::Error::Other(format!("IGPT_ATTN_BWD={other:?}: expected v2, v3 or v4"))),
        }
    }

    /// The version that runs at head dim `d`: v4 has no d = 32 build (a warp's share of the dQ
    /// tile would be under one ldmatrix block), v3 stands in.
    pub fn at(self, d: usize) -> BwdBf16 {
        if self == BwdBf16::V4 && d < 64 { BwdBf16::V3 } else { self }
    }

    /// Short name, as in the entries ("v2", "v3", "v4").
    pub fn name(self) -> &'static str {
        match self {
            BwdBf16::V2 => "v2",
            BwdBf16::V3 => "v3",
            BwdBf16::V4 => "v4",
        }
    }

    pub fn entry(self, d: usize) -> String {
        format!("attn_bwd_{}_bf16_d{d}", self.at(d).name())
    }

    /// Keys per block (the grid's y extent is tk / keys).
    pub fn keys_per_block(self, d: usize) -> usize {
        if self.at(d) == BwdBf16::V4 { 128 } else { 64 }
    }

    pub fn threads(self, d: usize) -> u32 {
        2 * self.keys_per_block(d) as u32
    }

    /// Dynamic shared memory (must match the layout in attention.cu).
    pub fn smem_bytes(self, d: usize) -> usize {
        let (bk, bq, lds, bufs) = (self.keys_per_block(d), 32, d + 8, if self.at(d) == BwdBf16::V2 { 1 } else { 2 });
        (2 * bk * lds + 2 * bufs * bq * lds + bq * (bk + 8)) * 2 + 2 * bufs * bq * 4
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AttnShape {
    /// Batch x heads.
    pub heads: usize,
    pub tq: usize,
    pub tk: usize,
    pub d: usize,
}

impl AttnShape {
    pub fn scale(&self) -> f32 {
        1.0 / (self.d as f32).sqrt()
    }

    pub fn describe(&self) -> String {
        format!("BH={} tq={} tk={} D={}", self.heads, self.tq, self.tk, self.d)
    }

    /// Rejects shapes the kernels do not handle (head dims other than `dims`), with the kernel
    /// name in the message.
    pub fn validate(&self, kernel: &str, dims: &[usize]) -> crate::Result<()> {
        let bad = |why: String| Err(crate::Error::Other(format!("{kernel} {}: {why}", self.describe())));
        if !dims.contains(&self.d) {
            return bad(format!("head dim {} is not supported (only {dims:?})", self.d));
        }
        if self.heads == 0 || self.tq == 0 {
            return bad("empty shape".into());
        }
        if self.tq > self.tk {
            return bad("tq > tk (queries must sit at the end of the keys)".into());
        }
        if self.heads > i32::MAX as usize || self.tk > i32::MAX as usize || self.heads * self.tq > i32::MAX as usize {
            return bad("too large for the kernels' 32-bit row indices".into());
        }
        Ok(())
    }
}

pub struct AttnFwdRef {
    pub out: Ref,
    pub lse: Ref,
}

pub struct AttnBwdRef {
    pub dq: Ref,
    pub dk: Ref,
    pub dv: Ref,
}

/// f64 reference of causal attention, the first `key_pad[b]` keys of batch row b's heads hidden
/// (empty: none; a query that sees no key gets zeros and lse = +inf) (TEMPORARY, like `crate::reference`: plain loops, to be
/// replaced by the engine's CPU backend). Scales (see `crate::reference::Ref`):
/// - out[i,:] = sum_j p_ij v_j: scale sum_j p_ij |v_j|;
/// - lse_i: 1 + max_j scale * sum_d |q_id k_jd| (the size of the scores it is built from);
/// - backward, with A_ij = sum_d |dO_id v_jd| (scale of dP_ij), Dabs_i = sum_j p_ij A_ij (scale
///   of delta_i) and |dS|_ij = p_ij (A_ij + Dabs_i): dq = scale sum_j |dS|_ij |k_j|,
///   dk = scale sum_i |dS|_ij |q_i|, dv = sum_i p_ij |dO_i|.
pub fn reference(q: &[f32], k: &[f32], v: &[f32], dout: Option<&[f32]>, s: AttnShape, key_pad: &[usize]) -> (AttnFwdRef, Option<AttnBwdRef>) {
    let AttnShape { heads, tq, tk, d } = s;
    assert!(tq >= 1 && tq <= tk, "reference: need 1 <= tq <= tk");
    assert_eq!(q.len(), heads * tq * d);
    assert_eq!(k.len(), heads * tk * d);
    assert_eq!(v.len(), heads * tk * d);
    let off = tk - tq;
    let scale = 1.0 / (d as f64).sqrt();
    let z = |n: usize| Ref { value: vec![0.0; n], scale: vec![0.0; n] };
    let mut fwd = AttnFwdRef { out: z(heads * tq * d), lse: z(heads * tq) };
    let mut bwd = dout.map(|_| AttnBwdRef { dq: z(heads * tq * d), dk: z(heads * tk * d), dv: z(heads * tk * d) });
    let (mut sc, mut sabs, mut p, mut dp, mut a) = (vec![0f64; tk], vec![0f64; tk], vec![0f64; tk], vec![0f64; tk], vec![0f64; tk]);
    for h in 0..heads {
        let pad = if key_pad.is_empty() { 0 } else { key_pad[h / (heads / key_pad.len())] };
        let qh = &q[h * tq * d..(h + 1) * tq * d];
        let kh = &k[h * tk * d..(h + 1) * tk * d];
        let vh = &v[h * tk * d..(h + 1) * tk * d];
        for i in 0..tq {
            let n = i + off + 1; // visible keys
            let qi = &qh[i * d..(i + 1) * d];
            let mut m = f64::NEG_INFINITY;
            let mut smax_abs = 0f64;
            for j in pad..n {
                let kj = &kh[j * d..(j + 1) * d];
                let (mut x, mut xa) = (0f64, 0f64);
                for c in 0..d {
                    let t = qi[c] as f64 * kj[c] as f64;
                    x += t;
                    xa += t.abs();
                }
                sc[j] = x * scale;
                sabs[j] = xa * scale;
                m = m.max(sc[j]);
                smax_abs = smax_abs.max(sabs[j]);
            }
            let l: f64 = (pad..n).map(|j| (sc[j] - m).exp()).sum();
            for j in pad..n {
                p[j] = (sc[j] - m).exp() / l;
            }
            let row = h * tq + i;
            if pad >= n {
                // A padding query: no key visible; zeros (as initialized) and lse = +inf.
                fwd.lse.value[row] = f64::INFINITY;
                continue;
            }
            fwd.lse.value[row] = m + l.ln();
            fwd.lse.scale[row] = 1.0 + smax_abs;
            for c in 0..d {
                let (mut o, mut os) = (0f64, 0f64);
                for j in pad..n {
                    let vv = vh[j * d + c] as f64;
                    o += p[j] * vv;
                    os += p[j] * vv.abs();
                }
                fwd.out.value[row * d + c] = o;
                fwd.out.scale[row * d + c] = os;
            }
            if let (Some(g), Some(b)) = (dout, bwd.as_mut()) {
                let gi = &g[row * d..(row + 1) * d];
                let (mut delta, mut dabs) = (0f64, 0f64);
                for j in pad..n {
                    let vj = &vh[j * d..(j + 1) * d];
                    let (mut x, mut xa) = (0f64, 0f64);
                    for c in 0..d {
                        let t = gi[c] as f64 * vj[c] as f64;
                        x += t;
                        xa += t.abs();
                    }
                    dp[j] = x;
                    a[j] = xa;
                    delta += p[j] * x;
                    dabs += p[j] * xa;
                }
                for j in pad..n {
                    let ds = p[j] * (dp[j] - delta);
                    let ds_abs = p[j] * (a[j] + dabs);
                    let kj = &kh[j * d..(j + 1) * d];
                    let krow = h * tk + j;
                    for c in 0..d {
                        let (kv, qv, gv) = (kj[c] as f64, qi[c] as f64, gi[c] as f64);
                        b.dq.value[row * d + c] += scale * ds * kv;
                        b.dq.scale[row * d + c] += scale * ds_abs * kv.abs();
                        b.dk.value[krow * d + c] += scale * ds * qv;
                        b.dk.scale[krow * d + c] += scale * ds_abs * qv.abs();
                        b.dv.value[krow * d + c] += p[j] * gv;
                        b.dv.scale[krow * d + c] += p[j] * gv.abs();
                    }
                }
            }
        }
    }
    (fwd, bwd)
}

/// The lse check: rows the reference gives +inf (padding queries) must be exactly +inf; the
/// others are compared as usual.
pub fn lse_check(kernel: &str, shape: String, precision: &'static str, got: &[f32], want: &Ref, tol: f64) -> crate::selftest::Check {
    use crate::selftest::Check;
    let inf_wrong = got.iter().zip(&want.value).filter(|(g, w)| w.is_infinite() && **g != f32::INFINITY).count();
    if inf_wrong > 0 {
        return Check::failed(kernel, shape, precision, format!("{inf_wrong} padding rows without lse = +inf"));
    }
    let keep: Vec<usize> = (0..got.len()).filter(|&i| want.value[i].is_finite()).collect();
    let finite = Ref { value: keep.iter().map(|&i| want.value[i]).collect(), scale: keep.iter().map(|&i| want.scale[i]).collect() };
    Check::new(kernel, shape, precision, crate::reference::compare(&keep.iter().map(|&i| got[i]).collect::<Vec<f32>>(), &finite), tol)
}

#[cfg(feature = "cuda")]
pub use gpu::{bench, checks, print_timings, AttnTiming, KeyPad, KvElement, KvView};

#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use crate::bench::{self as b, time_ms};
    use crate::device::Gpu;
    use crate::reference::compare;
    use crate::selftest::{Check, Ctx, TOL_BF16, TOL_F32};
    use crate::{Error, Result};
    use cudarc::driver::sys::CUfunction_attribute_enum;
    use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
    use half::bf16;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use serde::Serialize;

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

    // ---------------------------------------------------------------------------------------
    // Self-test
    // ---------------------------------------------------------------------------------------

    fn to_bf16_bits(v: &[f32]) -> Vec<u16> {
        v.iter().map(|&x| bf16::from_f32(x).to_bits()).collect()
    }
    fn from_bf16_bits(v: &[u16]) -> Vec<f32> {
        v.iter().map(|&x| bf16::from_bits(x).to_f32()).collect()
    }

    fn case(out: &mut Vec<Check>, kernel: &str, shape: &str, precision: &'static str, f: impl FnOnce() -> Result<Vec<Check>>) {
        match f() {
            Ok(rows) => out.extend(rows),
            Err(e) => out.push(Check::failed(kernel, shape.to_string(), precision, e.to_string())),
        }
    }

    /// Shapes (heads, tq, tk, d): T = 1, 70, 257, tile multiples, tq < tk (KV cache), D = 32,
    /// 64 and 128, BH = 1 and 6.
    pub const CHECK_SHAPES: &[(usize, usize, usize, usize)] = &[
        (1, 1, 1, 64),
        (6, 1, 1, 128),
        (1, 70, 70, 64),
        (6, 70, 70, 128),
        (6, 257, 257, 64),
        (1, 257, 257, 128),
        (1, 128, 128, 64),
        (6, 64, 192, 128),
        (6, 33, 200, 64),
        (1, 100, 257, 128),
        (6, 1, 150, 128),
        (6, 70, 70, 32),
        (1, 257, 257, 32),
        (6, 33, 200, 32),
    ];

    /// Left-padded batches for v1 and v2 (heads per row, tq, tk, d, padding keys per batch row):
    /// padding queries (rows that see no key), whole padded key tiles, pad = tk - 1.
    pub const PADDED_SHAPES: &[(usize, usize, usize, usize, &[usize])] = &[
        (3, 70, 70, 64, &[0, 37]),
        (2, 40, 100, 32, &[5, 0, 99]),
        (1, 129, 129, 128, &[64, 1, 128]),
    ];

    /// (heads, tk, d, padding keys per batch row, or none) for the decode kernel; the padded
    /// ones have 2 heads per row, and one row whose keys are all padding.
    pub const DECODE_SHAPES: &[(usize, usize, usize, &[usize])] = &[
        (1, 1, 64, &[]), (6, 1, 128, &[]), (6, 70, 64, &[]), (1, 257, 128, &[]), (6, 33, 128, &[]), (6, 1000, 64, &[]),
        (1, 2049, 128, &[]), (6, 70, 32, &[]), (4, 45, 64, &[3, 45]), (6, 300, 32, &[0, 299, 40]),
    ];

    /// Random q, k, v and dout for `s`, with NaN in the keys and values that padding hides: a
    /// kernel that reads them (0 · NaN) fails.
    fn random_inputs(c: &mut Ctx, s: AttnShape, pads: &[usize]) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let AttnShape { heads, tq, tk, d } = s;
        let (nq, nk) = (heads * tq * d, heads * tk * d);
        let (q, mut k, mut v, g) = (c.rand(nq, -2.0, 2.0), c.rand(nk, -2.0, 2.0), c.rand(nk, -1.0, 1.0), c.rand(nq, -1.0, 1.0));
        for (b, &p) in pads.iter().enumerate() {
            let hpr = heads / pads.len();
            for h in b * hpr..(b + 1) * hpr {
                k[h * tk * d..(h * tk + p) * d].fill(f32::NAN);
                v[h * tk * d..(h * tk + p) * d].fill(f32::NAN);
            }
        }
        (q, k, v, g)
    }

    /// v1 forward and backward (from the GPU's own out and lse, as training runs them) against
    /// the reference; `pads` empty or one count per batch row.
    fn v1_checks(c: &mut Ctx, s: AttnShape, pads: &[usize]) -> Result<Vec<Check>> {
        let gpu = c.gpu;
        let AttnShape { heads, tq, tk, d } = s;
        let shape = if pads.is_empty() { s.describe() } else { format!("{} pad {pads:?}", s.describe()) };
        let (nq, nk) = (heads * tq * d, heads * tk * d);
        let (q, k, v, g) = random_inputs(c, s, pads);
        let (fr, br) = reference(&q, &k, &v, Some(&g), s, pads);
        let br = br.expect("backward reference");
        let (gq, gk, gv, gg) = (c.up(&q)?, c.up(&k)?, c.up(&v)?, c.up(&g)?);
        let counts = c.up(&pads.iter().map(|&p| p as i32).collect::<Vec<i32>>())?;
        let key_pad = (!pads.is_empty()).then(|| KeyPad { counts: &counts, heads_per_row: heads / pads.len() });
        let (mut go, mut gl) = (c.poisoned(nq)?, c.poisoned(heads * tq)?);
        gpu.attention_fwd_f32(&gq, &gk, &gv, &mut go, &mut gl, s, key_pad.as_ref())?;
        gpu.sync("attn_fwd_v1_f32")?;
        let mut rows = vec![
            Check::new("attn_fwd_v1_f32 (out)", shape.clone(), "f32", compare(&c.down(&go)?, &fr.out), TOL_F32),
            lse_check("attn_fwd_v1_f32 (lse)", shape.clone(), "f32", &c.down(&gl)?, &fr.lse, TOL_F32),
        ];
        let (mut dq, mut dk, mut dv, mut delta) = (c.poisoned(nq)?, c.poisoned(nk)?, c.poisoned(nk)?, c.poisoned(heads * tq)?);
        gpu.attention_bwd_f32(&gq, &gk, &gv, &go, &gl, &gg, &mut dq, &mut dk, &mut dv, &mut delta, s, key_pad.as_ref())?;
        gpu.sync("attn_bwd_v1_f32")?;
        rows.push(Check::new("attn_bwd_v1_f32 (dq)", shape.clone(), "f32", compare(&c.down(&dq)?, &br.dq), TOL_F32));
        rows.push(Check::new("attn_bwd_v1_f32 (dk)", shape.clone(), "f32", compare(&c.down(&dk)?, &br.dk), TOL_F32));
        rows.push(Check::new("attn_bwd_v1_f32 (dv)", shape, "f32", compare(&c.down(&dv)?, &br.dv), TOL_F32));
        Ok(rows)
    }

    /// v2 forward and backward against the reference on the same bf16-rounded inputs (only the
    /// kernel's own roundings, P and dS to bf16 for the tensor cores, and f32 arithmetic
    /// differ); `pads` empty or one count per batch row, the hidden keys and values NaN.
    fn v2_checks(c: &mut Ctx, s: AttnShape, pads: &[usize]) -> Result<Vec<Check>> {
        let gpu = c.gpu;
        let AttnShape { heads, tq, tk, d } = s;
        let shape = if pads.is_empty() { s.describe() } else { format!("{} pad {pads:?}", s.describe()) };
        let (nq, nk) = (heads * tq * d, heads * tk * d);
        let (q, k, v, g) = random_inputs(c, s, pads);
        let (q16, k16, v16, g16) = (to_bf16_bits(&q), to_bf16_bits(&k), to_bf16_bits(&v), to_bf16_bits(&g));
        let (fr, br) = reference(&from_bf16_bits(&q16), &from_bf16_bits(&k16), &from_bf16_bits(&v16), Some(&from_bf16_bits(&g16)), s, pads);
        let br = br.expect("backward reference");
        let (gq, gk, gv, gg) = (c.up(&q16)?, c.up(&k16)?, c.up(&v16)?, c.up(&g16)?);
        let counts = c.up(&pads.iter().map(|&p| p as i32).collect::<Vec<i32>>())?;
        let key_pad = (!pads.is_empty()).then(|| KeyPad { counts: &counts, heads_per_row: heads / pads.len() });
        let (mut go, mut gl) = (c.poisoned(nq)?, c.poisoned(heads * tq)?);
        gpu.attention_fwd_bf16(FwdBf16::V2, &gq, &gk, &gv, &mut go, &mut gl, s, key_pad.as_ref())?;
        gpu.sync("attn_fwd_v2_bf16")?;
        let mut rows = vec![
            Check::new("attn_fwd_v2_bf16 (out)", shape.clone(), "bf16->f32", compare(&c.down(&go)?, &fr.out), TOL_BF16),
            lse_check("attn_fwd_v2_bf16 (lse)", shape.clone(), "bf16->f32", &c.down(&gl)?, &fr.lse, TOL_BF16),
        ];
        for version in BwdBf16::ALL.into_iter().filter(|v| v.at(d) == *v && v.in_selftest()) {
            let name = &format!("attn_bwd_{}_bf16", version.name());
            let (mut dq, mut dk, mut dv, mut delta) = (c.poisoned(nq)?, c.poisoned(nk)?, c.poisoned(nk)?, c.poisoned(heads * tq)?);
            gpu.attention_bwd_bf16(version, &gq, &gk, &gv, &go, &gl, &gg, &mut dq, &mut dk, &mut dv, &mut delta, s, key_pad.as_ref())?;
            gpu.sync(name)?;
            rows.push(Check::new(&format!("{name} (dq)"), shape.clone(), "bf16->f32", compare(&c.down(&dq)?, &br.dq), TOL_BF16));
            rows.push(Check::new(&format!("{name} (dk)"), shape.clone(), "bf16->f32", compare(&c.down(&dk)?, &br.dk), TOL_BF16));
            rows.push(Check::new(&format!("{name} (dv)"), shape.clone(), "bf16->f32", compare(&c.down(&dv)?, &br.dv), TOL_BF16));
        }
        Ok(rows)
    }

    /// A bf16 forward version alone against the reference on the same bf16-rounded inputs.
    fn fwd_checks(c: &mut Ctx, version: FwdBf16, s: AttnShape, pads: &[usize]) -> Result<Vec<Check>> {
        let gpu = c.gpu;
        let AttnShape { heads, tq, .. } = s;
        let shape = if pads.is_empty() { s.describe() } else { format!("{} pad {pads:?}", s.describe()) };
        let (q, k, v, _) = random_inputs(c, s, pads);
        let (q16, k16, v16) = (to_bf16_bits(&q), to_bf16_bits(&k), to_bf16_bits(&v));
        let (fr, _) = reference(&from_bf16_bits(&q16), &from_bf16_bits(&k16), &from_bf16_bits(&v16), None, s, pads);
        let (gq, gk, gv) = (c.up(&q16)?, c.up(&k16)?, c.up(&v16)?);
        let counts = c.up(&pads.iter().map(|&p| p as i32).collect::<Vec<i32>>())?;
        let key_pad = (!pads.is_empty()).then(|| KeyPad { counts: &counts, heads_per_row: heads / pads.len() });
        let (mut go, mut gl) = (c.poisoned(heads * tq * s.d)?, c.poisoned(heads * tq)?);
        let name = version.stem();
        gpu.attention_fwd_bf16(version, &gq, &gk, &gv, &mut go, &mut gl, s, key_pad.as_ref())?;
        gpu.sync(name)?;
        Ok(vec![
            Check::new(&format!("{name} (out)"), shape.clone(), "bf16->f32", compare(&c.down(&go)?, &fr.out), TOL_BF16),
            lse_check(&format!("{name} (lse)"), shape, "bf16->f32", &c.down(&gl)?, &fr.lse, TOL_BF16),
        ])
    }

    /// Every attention kernel against the f64 reference; a launch/sync error becomes a failed row.
    pub fn checks(gpu: &Gpu) -> Vec<Check> {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) ^ 0xa77e_4710;
        let mut c = Ctx { gpu, rng: StdRng::seed_from_u64(seed) };
        let mut out = Vec::new();

        for &(heads, tq, tk, d) in CHECK_SHAPES {
            let s = AttnShape { heads, tq, tk, d };
            let shape = s.describe();
            case(&mut out, "attn_v1_f32", &shape, "f32", || v1_checks(&mut c, s, &[]));
            case(&mut out, "attn_v2_bf16", &shape, "bf16", || v2_checks(&mut c, s, &[]));
        }

        for &(heads_per_row, tq, tk, d, pads) in PADDED_SHAPES {
            let s = AttnShape { heads: heads_per_row * pads.len(), tq, tk, d };
            case(&mut out, "attn_v1_f32 (padded)", &s.describe(), "f32", || v1_checks(&mut c, s, pads));
            case(&mut out, "attn_v2_bf16 (padded)", &s.describe(), "bf16", || v2_checks(&mut c, s, pads));
        }

        for &(heads, tk, d, pads) in DECODE_SHAPES {
            let s = AttnShape { heads, tq: 1, tk, d };
            let shape = if pads.is_empty() { s.describe() } else { format!("{} pad {pads:?}", s.describe()) };
            case(&mut out, "attn_decode_f32", &shape, "f32", || {
                let (q, k, v) = (c.rand(heads * d, -2.0, 2.0), c.rand(heads * tk * d, -2.0, 2.0), c.rand(heads * tk * d, -1.0, 1.0));
                let (fr, _) = reference(&q, &k, &v, None, s, pads);
                let (gq, gk, gv) = (c.up(&q)?, c.up(&k)?, c.up(&v)?);
                let counts = c.up(&pads.iter().map(|&p| p as i32).collect::<Vec<i32>>())?;
                let key_pad = (!pads.is_empty()).then(|| KeyPad { counts: &counts, heads_per_row: heads / pads.len() });
                let (mut go, mut gl) = (c.poisoned(heads * d)?, c.poisoned(heads)?);
                gpu.attention_decode_f32(&gq, &gk, &gv, &mut go, &mut gl, heads, tk, d, key_pad.as_ref())?;
                gpu.sync("attn_decode_f32")?;
                Ok(vec![
                    Check::new("attn_decode_f32 (out)", shape.clone(), "f32", compare(&c.down(&go)?, &fr.out), TOL_F32),
                    lse_check("attn_decode_f32 (lse)", shape.clone(), "f32", &c.down(&gl)?, &fr.lse, TOL_F32),
                ])
            });
            // Read in place from a KV cache's buffers (heads `cap * d` apart from element 4, the
            // rows past tk NaN), f32 and bf16.
            let cap = tk + 13;
            let cached = format!("{shape}, cache of {cap}");
            case(&mut out, "attn_decode (KV cache layout)", &cached, "f32, bf16 K/V", || {
                let (q, k, v) = (c.rand(heads * d, -2.0, 2.0), c.rand(heads * tk * d, -2.0, 2.0), c.rand(heads * tk * d, -1.0, 1.0));
                let lay = |x: &[f32]| -> Vec<f32> {
                    let mut buf = vec![f32::NAN; 4 + heads * cap * d];
                    for h in 0..heads {
                        buf[4 + h * cap * d..4 + h * cap * d + tk * d].copy_from_slice(&x[h * tk * d..(h + 1) * tk * d]);
                    }
                    buf
                };
                let counts = c.up(&pads.iter().map(|&p| p as i32).collect::<Vec<i32>>())?;
                let key_pad = (!pads.is_empty()).then(|| KeyPad { counts: &counts, heads_per_row: heads / pads.len() });
                let gq = c.up(&q)?;
                let mut rows = Vec::new();
                for bf in [false, true] {
                    // bf16: the reference reads the same rounded keys and values.
                    let round = |x: &[f32]| if bf { from_bf16_bits(&to_bf16_bits(x)) } else { x.to_vec() };
                    let (fr, _) = reference(&q, &round(&k), &round(&v), None, s, pads);
                    let (mut go, mut gl) = (c.poisoned(heads * d)?, c.poisoned(heads)?);
                    let name = if bf { "attn_decode_bf16kv" } else { "attn_decode_f32" };
                    if bf {
                        let (gk, gv) = (c.up(&to_bf16_bits(&lay(&k)))?, c.up(&to_bf16_bits(&lay(&v)))?);
                        let (kv, vv) = (KvView { buf: &gk, offset: 4, head_stride: cap * d }, KvView { buf: &gv, offset: 4, head_stride: cap * d });
                        gpu.attention_decode_kv(&gq, kv, vv, &mut go, &mut gl, heads, tk, d, key_pad.as_ref())?;
                    } else {
                        let (gk, gv) = (c.up(&lay(&k))?, c.up(&lay(&v))?);
                        let (kv, vv) = (KvView { buf: &gk, offset: 4, head_stride: cap * d }, KvView { buf: &gv, offset: 4, head_stride: cap * d });
                        gpu.attention_decode_kv(&gq, kv, vv, &mut go, &mut gl, heads, tk, d, key_pad.as_ref())?;
                    }
                    gpu.sync(name)?;
                    rows.push(Check::new(&format!("{name} (cache layout, out)"), cached.clone(), "f32", compare(&c.down(&go)?, &fr.out), TOL_F32));
                    rows.push(lse_check(&format!("{name} (cache layout, lse)"), cached.clone(), "f32", &c.down(&gl)?, &fr.lse, TOL_F32));
                }
                Ok(rows)
            });
        }

        // The forward v3 last: a fault there (it has not run on a GPU yet) costs no other row.
        if FwdBf16::V3.in_selftest() {
            let padded = PADDED_SHAPES.iter().map(|&(hpr, tq, tk, d, pads)| (AttnShape { heads: hpr * pads.len(), tq, tk, d }, pads));
            let plain = CHECK_SHAPES.iter().map(|&(heads, tq, tk, d)| (AttnShape { heads, tq, tk, d }, &[][..]));
            for (s, pads) in plain.chain(padded) {
                case(&mut out, "attn_fwd_v3_bf16", &s.describe(), "bf16", || fwd_checks(&mut c, FwdBf16::V3, s, pads));
            }
        }
        out
    }

    // ---------------------------------------------------------------------------------------
    // Timings
    // ---------------------------------------------------------------------------------------

    #[derive(Debug, Clone, Serialize)]
    pub struct AttnTiming {
        pub name: String,
        pub shape: String,
        pub median_ms: f64,
        /// Causal FLOPs (forward 4*B*H*T^2*D/2, forward+backward 3.5x that) per second.
        pub tflops: Option<f64>,
        /// For decode: K and V bytes read per second.
        pub gbps: Option<f64>,
        pub error: Option<String>,
    }

    pub const BENCH_HEADS: usize = 4 * 16;
    pub const BENCH_T: usize = 2048;

    fn rand_vec(rng: &mut StdRng, n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(0.001f32..amp) * if rng.gen::<bool>() { 1.0 } else { -1.0 }).collect()
    }

    /// B=4, H=16, T=2048, D=64 and 128: forward and forward+backward of v1 and v2, plus
    /// decode over a 2048-key cache. CUDA events, `bench::WARMUP` warm-up, median of `bench::ITERS`.
    pub fn bench(gpu: &Gpu) -> Vec<AttnTiming> {
        let mut out = Vec::new();
        // The forward v3 after everything else (it has not run on a GPU yet: a fault would
        // poison the context for every later row).
        let v3 = if FwdBf16::V3.in_selftest() { vec![false, true] } else { vec![false] };
        for only_v3 in v3 {
            for d in [64usize, 128] {
                if let Err(e) = bench_d(gpu, d, only_v3, &mut out) {
                    out.push(AttnTiming { name: "attention setup".into(), shape: format!("D={d}"), median_ms: f64::NAN, tflops: None, gbps: None, error: Some(e.to_string()) });
                }
            }
        }
        out
    }

    /// `only_v3`: the forward v3's row alone; else every other row.
    fn bench_d(gpu: &Gpu, d: usize, only_v3: bool, out: &mut Vec<AttnTiming>) -> Result<()> {
        let s = AttnShape { heads: BENCH_HEADS, tq: BENCH_T, tk: BENCH_T, d };
        let shape = format!("B=4 H=16 T={BENCH_T} D={d}");
        let fwd_flops = 4.0 * s.heads as f64 * (s.tq as f64).powi(2) * d as f64 / 2.0;
        let mut rng = StdRng::seed_from_u64(0xa77e + d as u64);
        let n = s.heads * s.tq * d;
        let up = |v: &[f32]| gpu.stream.clone_htod(v).map_err(|e| Error::cuda("upload", e));
        let up16 = |v: &[f32]| gpu.stream.clone_htod(&to_bf16_bits(v)).map_err(|e| Error::cuda("upload", e));
        let (q, k, v, g) = (rand_vec(&mut rng, n, 2.0), rand_vec(&mut rng, n, 2.0), rand_vec(&mut rng, n, 1.0), rand_vec(&mut rng, n, 1.0));
        let (gq, gk, gv, gg) = (up(&q)?, up(&k)?, up(&v)?, up(&g)?);
        let (gq16, gk16, gv16, gg16) = (up16(&q)?, up16(&k)?, up16(&v)?, up16(&g)?);
        let nan = vec![f32::NAN; n];
        let (mut o, mut lse, mut delta) = (up(&nan)?, up(&nan[..s.heads * s.tq])?, up(&nan[..s.heads * s.tq])?);
        let (mut dq, mut dk, mut dv) = (up(&nan)?, up(&nan)?, up(&nan)?);

        let mut row = |name: &str, flops: Option<f64>, bytes: Option<f64>, r: Result<f64>| {
            let (median_ms, error) = match r {
                Ok(ms) => (ms, None),
                Err(e) => (f64::NAN, Some(e.to_string())),
            };
            out.push(AttnTiming {
                name: name.into(),
                shape: shape.clone(),
                median_ms,
                tflops: flops.map(|f| f / (median_ms * 1e-3) / 1e12),
                gbps: bytes.map(|by| by / (median_ms * 1e-3) / 1e9),
                error,
            });
        };
        let fb = Some(3.5 * fwd_flops);
        if only_v3 {
            row("v3 bf16 fwd (128 queries a block)", Some(fwd_flops), None, time_ms(gpu, || gpu.attention_fwd_bf16(FwdBf16::V3, &gq16, &gk16, &gv16, &mut o, &mut lse, s, None)));
            return Ok(());
        }
        row("v1 f32 fwd", Some(fwd_flops), None, time_ms(gpu, || gpu.attention_fwd_f32(&gq, &gk, &gv, &mut o, &mut lse, s, None)));
        row("v2 bf16 fwd", Some(fwd_flops), None, time_ms(gpu, || gpu.attention_fwd_bf16(FwdBf16::V2, &gq16, &gk16, &gv16, &mut o, &mut lse, s, None)));
        row("v1 f32 fwd+bwd", fb, None, time_ms(gpu, || {
            gpu.attention_fwd_f32(&gq, &gk, &gv, &mut o, &mut lse, s, None)?;
            gpu.attention_bwd_f32(&gq, &gk, &gv, &o, &lse, &gg, &mut dq, &mut dk, &mut dv, &mut delta, s, None)
        }));
        let bwd_rows = [
            (BwdBf16::V2, "v2 bf16 fwd+bwd"),
            (BwdBf16::V3, "v2 fwd + v3 bwd (double-buffered) bf16"),
            (BwdBf16::V4, "v2 fwd + v4 bwd (128 keys, 4-wide dQ) bf16"),
        ];
        for (version, name) in bwd_rows.into_iter().filter(|(v, _)| v.at(d) == *v && v.in_selftest()) {
            row(name, fb, None, time_ms(gpu, || {
                gpu.attention_fwd_bf16(FwdBf16::V2, &gq16, &gk16, &gv16, &mut o, &mut lse, s, None)?;
                gpu.attention_bwd_bf16(version, &gq16, &gk16, &gv16, &o, &lse, &gg16, &mut dq, &mut dk, &mut dv, &mut delta, s, None)
            }));
        }
        // Decode: the last query of each head over the whole cache (K and V read once).
        let kv_bytes = Some(2.0 * (s.heads * s.tk * d * 4) as f64);
        let dec_flops = Some(4.0 * s.heads as f64 * s.tk as f64 * d as f64);
        row("decode f32 (tq=1, tk=2048)", dec_flops, kv_bytes, time_ms(gpu, || gpu.attention_decode_f32(&gq, &gk, &gv, &mut o, &mut lse, s.heads, s.tk, d, None)));
        // The autocast KV cache: bf16 keys and values, half the bytes.
        let kv16_bytes = kv_bytes.map(|b| b / 2.0);
        row("decode bf16 K/V (tq=1, tk=2048)", dec_flops, kv16_bytes, time_ms(gpu, || {
            gpu.attention_decode_kv(&gq, KvView::contiguous(&gk16, s), KvView::contiguous(&gv16, s), &mut o, &mut lse, s.heads, s.tk, d, None)
        }));
        Ok(())
    }

    pub fn print_timings(t: &[AttnTiming]) {
        if t.is_empty() {
            return;
        }
        println!("\nattention timings (causal; CUDA events, {} warm-up, median of {}):", b::WARMUP, b::ITERS);
        println!("| attention | shape | median ms | TFLOP/s | GB/s |");
        println!("|---|---|---:|---:|---:|");
        for x in t {
            let f = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
            let err = x.error.as_ref().map(|e| format!(" ERROR: {e}")).unwrap_or_default();
            println!("| attention {} | {} | {:.3} | {} | {}{err} |", x.name, x.shape, x.median_ms, f(x.tflops), f(x.gbps));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` values in [-1, 1) from a small LCG (deterministic, no rand dependency).
    fn uniform(seed: &mut u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn reference_small_case_by_hand() {
        // Tiny case by hand: one head, tq=1 at the end of tk=2 keys sees both keys.
        let d = 64;
        let s = AttnShape { heads: 1, tq: 1, tk: 2, d };
        let q = vec![0.1f32; d];
        let k: Vec<f32> = (0..2 * d).map(|i| if i < d { 0.2 } else { -0.3 }).collect();
        let v: Vec<f32> = (0..2 * d).map(|i| if i < d { 1.0 } else { 2.0 }).collect();
        let (f, _) = reference(&q, &k, &v, None, s, &[]);
        let (s0, s1) = (0.1 * 0.2 * d as f64 / 8.0, 0.1 * -0.3 * d as f64 / 8.0);
        let (e0, e1) = (s0.exp(), s1.exp());
        let want = (e0 * 1.0 + e1 * 2.0) / (e0 + e1);
        // The inputs are f32 (0.1 is not exact): agreement to f32 input rounding.
        assert!((f.out.value[0] - want).abs() < 1e-6);
        assert!((f.lse.value[0] - (e0 + e1).ln()).abs() < 1e-6);
    }

    #[test]
    fn reference_backward_matches_finite_differences() {
        // loss = sum(dO * out); check dq, dk, dv against central differences, tq < tk.
        let s = AttnShape { heads: 2, tq: 3, tk: 5, d: 64 };
        let mut seed = 12345u64;
        let mut r = |n: usize| uniform(&mut seed, n);
        let (q, k, v, g) = (r(2 * 3 * 64), r(2 * 5 * 64), r(2 * 5 * 64), r(2 * 3 * 64));
        let (_, b) = reference(&q, &k, &v, Some(&g), s, &[]);
        let b = b.unwrap();
        let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            let (f, _) = reference(q, k, v, None, s, &[]);
            f.out.value.iter().zip(&g).map(|(o, &gg)| o * gg as f64).sum()
        };
        let h = 1e-2f32; // f32 inputs: a coarse step, checked loosely
        for (which, idx) in [(0usize, 5usize), (0, 200), (1, 3), (1, 300), (1, 639), (2, 7), (2, 450)] {
            let (mut qp, mut kp, mut vp) = (q.clone(), k.clone(), v.clone());
            let (mut qm, mut km, mut vm) = (q.clone(), k.clone(), v.clone());
            let (pp, mm, want) = match which {
                0 => (&mut qp, &mut qm, b.dq.value[idx]),
                1 => (&mut kp, &mut km, b.dk.value[idx]),
                _ => (&mut vp, &mut vm, b.dv.value[idx]),
            };
            pp[idx] += h;
            mm[idx] -= h;
            let hp = (pp[idx] - mm[idx]) as f64;
            let fd = (loss(&qp, &kp, &vp) - loss(&qm, &km, &vm)) / hp;
            assert!((fd - want).abs() < 1e-4 * (1.0 + want.abs()), "tensor {which} [{idx}]: fd {fd} vs {want}");
        }
    }

    #[test]
    fn reference_masking_convention_matches_a_naive_f32_loop() {
        let s = AttnShape { heads: 2, tq: 70, tk: 100, d: 64 };
        let mut seed = 7u64;
        let mut r = |n: usize| uniform(&mut seed, n);
        let (q, k, v) = (r(2 * 70 * 64), r(2 * 100 * 64), r(2 * 100 * 64));
        let (f, _) = reference(&q, &k, &v, None, s, &[]);
        // Recompute naively in f32 to cross-check the masking convention (key j <= i + tk - tq).
        for h in 0..2 {
            for i in [0usize, 35, 69] {
                let n = i + 30 + 1;
                let qi = &q[(h * 70 + i) * 64..(h * 70 + i + 1) * 64];
                let sc: Vec<f32> = (0..n).map(|j| (0..64).map(|c| qi[c] * k[(h * 100 + j) * 64 + c]).sum::<f32>() / 8.0).collect();
                let m = sc.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let l: f32 = sc.iter().map(|x| (x - m).exp()).sum();
                let o0: f32 = (0..n).map(|j| (sc[j] - m).exp() / l * v[(h * 100 + j) * 64]).sum();
                assert!((o0 as f64 - f.out.value[(h * 70 + i) * 64]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn padded_reference_is_the_unpadded_one_on_the_visible_keys() {
        let (tq, tk, d, pad) = (4usize, 10usize, 32usize, 3usize);
        let mut seed = 99u64;
        let mut r = |n: usize| uniform(&mut seed, n);
        // Two batch rows of one head each; row 1 hides its first `pad` keys.
        let (q, k, v, g) = (r(2 * tq * d), r(2 * tk * d), r(2 * tk * d), r(2 * tq * d));
        let (f, b) = reference(&q, &k, &v, Some(&g), AttnShape { heads: 2, tq, tk, d }, &[0, pad]);
        let b = b.unwrap();
        let one = AttnShape { heads: 1, tq, tk: tk - pad, d };
        let (ks, vs) = (&k[(tk + pad) * d..], &v[(tk + pad) * d..]);
        let (f1, b1) = reference(&q[tq * d..], ks, vs, Some(&g[tq * d..]), one, &[]);
        let b1 = b1.unwrap();
        assert_eq!(&f.out.value[tq * d..], &f1.out.value[..]);
        assert_eq!(&f.lse.value[tq..], &f1.lse.value[..]);
        assert_eq!(&b.dq.value[tq * d..], &b1.dq.value[..]);
        assert_eq!(&b.dk.value[(tk + pad) * d..], &b1.dk.value[..]);
        assert!(b.dk.value[tk * d..(tk + pad) * d].iter().chain(&b.dv.value[tk * d..(tk + pad) * d]).all(|&x| x == 0.0));
        // tq = tk: the first `pad` queries see no key: zeros and lse = +inf.
        let s = AttnShape { heads: 1, tq: tk, tk, d };
        let (f, _) = reference(&k[..tk * d], &k[..tk * d], &v[..tk * d], None, s, &[pad]);
        assert!(f.lse.value[..pad].iter().all(|l| *l == f64::INFINITY) && f.lse.value[pad..].iter().all(|l| l.is_finite()));
        assert!(f.out.value[..pad * d].iter().all(|&o| o == 0.0));
    }

    #[test]
    fn entries_and_smem_sizes() {
        for e in ENTRIES {
            assert!(crate::registry::module_of(e).is_some(), "{e} not registered");
        }
        assert_eq!(BwdBf16::V2.smem_bytes(32), 20_224);
        assert_eq!(BwdBf16::V2.smem_bytes(64), 32_512);
        assert_eq!(BwdBf16::V2.smem_bytes(128), 57_088);
        assert_eq!(BwdBf16::V3.smem_bytes(64), 41_984);
        assert_eq!(BwdBf16::V3.smem_bytes(128), 74_752);
        assert_eq!(BwdBf16::V4.smem_bytes(64), 64_512);
        assert_eq!(BwdBf16::V4.smem_bytes(128), 113_664);
        assert_eq!(BwdBf16::V4.entry(32), "attn_bwd_v3_bf16_d32");
        assert_eq!((BwdBf16::V4.keys_per_block(64), BwdBf16::V4.threads(64)), (128, 256));
        assert_eq!((BwdBf16::V4.keys_per_block(32), BwdBf16::V4.threads(32)), (64, 128));
        assert!(AttnShape { heads: 1, tq: 2, tk: 1, d: 64 }.validate("k", F32_HEAD_DIMS).is_err());
        assert!(AttnShape { heads: 1, tq: 1, tk: 1, d: 96 }.validate("k", F32_HEAD_DIMS).is_err());
        assert!(AttnShape { heads: 6, tq: 70, tk: 257, d: 128 }.validate("k", BF16_HEAD_DIMS).is_ok());
        assert!(AttnShape { heads: 6, tq: 70, tk: 257, d: 32 }.validate("k", F32_HEAD_DIMS).is_ok());
        assert!(AttnShape { heads: 6, tq: 70, tk: 257, d: 96 }.validate("k", BF16_HEAD_DIMS).is_err());
    }
}
