//! Causal attention on the GPU, FlashAttention-2 style (sources: `cu/attention.cu`, whose
//! header describes each kernel's design). Here: the entries, the versions and their tile
//! sizes, and the shape every launcher takes; `launch` (the launchers, as `impl Gpu` methods),
//! `reference` (f64, on the CPU), `checks` (the self-test) and `bench` (the timings) beside it.
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

mod reference;
pub use reference::{lse_check, reference, AttnBwdRef, AttnFwdRef};
#[cfg(test)]
mod tests;

#[cfg(feature = "cuda")]
mod bench;
#[cfg(feature = "cuda")]
mod checks;
#[cfg(feature = "cuda")]
mod launch;
#[cfg(feature = "cuda")]
pub use bench::{bench, print_timings, AttnTiming};
#[cfg(feature = "cuda")]
pub use checks::checks;
#[cfg(feature = "cuda")]
pub use launch::{KeyPad, KvElement, KvView};
