//! Tensor-core matmul, the top of the ladder (sources: `cu/matmul_mma.cu`, `cu/matmul_wgmma.cu`,
//! whose headers describe the designs). Row-major C[M,N] = A[M,K] B[K,N] (+ bias[N], f32),
//! bf16 in (bit patterns), f32 accumulate, f32 or bf16 out, any M, N, K.
//! - v4 (sm_80+): inline-PTX mma.sync m16n8k16 + ldmatrix, 4-stage cp.async pipeline.
//! - v5 (sm_90a only): Hopper wgmma from shared-memory descriptors (128-byte swizzle), fed by
//!   cp.async from every thread.
//! - v6 (sm_90a only): v5's wgmma fed by TMA (tensor maps from [`crate::tma`]), one producer
//!   warpgroup and two consumers synchronised by mbarriers, persistent over the tiles.
//!
//! - split-K (all three): a GEMM with few output tiles and a long K (a weight gradient, Xᵀ·dY
//!   over every token) runs in S slices of K over grid.z, each writing an f32 partial, then one
//!   reduction applies the epilogue; [`split_k`] chooses S from a model of the time.
//!
//! v5 and v6 share one module (`cu/matmul_wgmma.cu`), registered so that `kernels compile`
//! reports it; compiled for any target other than compute_90a it holds stubs that trap.
//! `Gpu::new` compiles every module for the plain `compute_90` of an H100, so these launchers
//! compile and load their own compute_90a build once per context (see `sm90a_function`).
//!
//! Here: the entries, tile sizes and the models that choose tiles and split-K (plain functions,
//! unit-tested without a GPU); `launch` (the launchers, as `impl Gpu` methods), `checks` (the
//! self-test) and `bench` (the rows added to `bench::matmul_bench`) beside it.

/// Every `extern "C"` entry of `cu/matmul_mma.cu` (v4, and split-K's reduction for v4-v6).
pub const V4_ENTRIES: &[&str] = &[
    "matmul_v4_bf16_f32out",
    "matmul_v4_bf16_bf16out",
    "matmul_v4_bf16_gelu",
    "matmul_splitk_reduce_f32out",
    "matmul_splitk_reduce_bf16out",
    "matmul_splitk_reduce_gelu",
];
/// Every `extern "C"` entry of `cu/matmul_wgmma.cu` (v5 and v6).
pub const SM90A_ENTRIES: &[&str] = &[
    "matmul_v5_bf16_f32out",
    "matmul_v5_bf16_bf16out",
    "matmul_v5_bf16_gelu",
    "matmul_v6_bf16_f32out",
    "matmul_v6_bf16_bf16out",
    "matmul_v6_bf16_gelu",
    "matmul_v5_bf16_f32out_n192",
    "matmul_v5_bf16_bf16out_n192",
    "matmul_v5_bf16_gelu_n192",
    "matmul_v6_bf16_f32out_n192",
    "matmul_v6_bf16_bf16out_n192",
    "matmul_v6_bf16_gelu_n192",
];

/// v4 tiles (must match `cu/matmul_mma.cu`).
pub const V4_BM: usize = 128;
pub const V4_BN: usize = 256;
pub const V4_THREADS: u32 = 256;
/// 4 stages x (A 128 x 40 + B 32 x 264) bf16.
pub const V4_SMEM_BYTES: usize = 4 * (128 * 40 + 32 * 264) * 2;

/// v5 tiles (must match `cu/matmul_wgmma.cu`): 128 rows by [`V5_BN`] (or 192) columns.
pub const V5_BM: usize = 128;
pub const V5_BN: usize = 256;
/// The tile widths v5 and v6 are built for (the `_n192` entries are the narrow ones).
pub const WGMMA_TILE_WIDTHS: [usize; 2] = [256, 192];
pub const V5_THREADS: u32 = 256;
/// 4 stages x (A 128 x 64 + B 64 x bn) bf16, plus 1024 bytes to align the base to 1024.
pub const fn v5_smem_bytes(bn: usize) -> usize {
    4 * (128 * 64 + 64 * bn) * 2 + 1024
}

/// v6: v5's tile; a producer warpgroup and two consumers (must match `cu/matmul_wgmma.cu`).
pub const V6_THREADS: u32 = 384;
/// v5's stages, its 1024 bytes of alignment, and 8 mbarriers (full and empty per stage).
pub const fn v6_smem_bytes(bn: usize) -> usize {
    v5_smem_bytes(bn) + 8 * 8
}

/// v6's tensor maps for A [m, k] at `pa` and B [k, n] at `pb` (bf16, row-major): A in boxes of
/// one tile's 128 rows x 64 k, B in boxes of 64 k x 64 n (a tile's 256 columns are four, 192
/// three); the
/// kernel's TMA coordinates assume these boxes. Pure: the launcher encodes them, the CPU
/// emulation reads them.
pub fn v6_maps(what: &str, pa: u64, pb: u64, m: usize, n: usize, k: usize) -> crate::Result<(crate::tma::Bf16TileMap, crate::tma::Bf16TileMap)> {
    use crate::tma::Bf16TileMap;
    Ok((Bf16TileMap::new(&format!("{what}: A"), pa, m, k, V5_BM as u32, 64)?, Bf16TileMap::new(&format!("{what}: B"), pb, k, n, 64, 64)?))
}

/// Into how many slices of K a GEMM is split (split-K: each slice a partial product, then one
/// reduction, `cu/matmul_epilogue.cuh`), for `tiles` output tiles of `bm` x `bn`, `ktiles`
/// k-tiles of `bk` and `sms` multiprocessors running one block each. Picks the S that minimizes
/// a model of the time: ceil(tiles·S / sms) waves of tiles that each take 1/S of a whole tile's
/// time, plus, when split, the partials' round trip through memory (S·M·N f32 written, then
/// read) and the reduction's launch. Rates of an H100 (bf16 tensor cores at ~5 TFLOP/s per SM,
/// ~3 TB/s of memory); the choice moves little if both are off by the same factor. Every slice
/// keeps at least 4 k-tiles (the pipeline needs some to fill). A weight gradient of GPT-2 124M
/// at 8192 tokens (768 x 768 x 8192: 18 tiles of 128 x 256 on 132 SMs) gets 7 slices; a long
/// GEMM that already fills the GPU, or a short K, gets 1.
pub fn split_k(mnk: (usize, usize, usize), (bm, bn, bk): (usize, usize, usize), sms: usize) -> usize {
    split_k_timed(mnk, (bm, bn, bk), sms, 1.0).0
}

/// [`split_k`]'s choice and its modelled time in seconds, for tiles that run at `rate` times
/// the full-width tile's FLOP rate.
fn split_k_timed((m, n, k): (usize, usize, usize), (bm, bn, bk): (usize, usize, usize), sms: usize, rate: f64) -> (usize, f64) {
    const SM_FLOPS: f64 = 5e12;
    const MEM_BYTES_PER_S: f64 = 3e12;
    const REDUCE_LAUNCH_S: f64 = 5e-6;
    let (tiles, ktiles, sms) = (m.div_ceil(bm) * n.div_ceil(bn), k.div_ceil(bk), sms.max(1));
    let tile_s = 2.0 * (bm * bn * k) as f64 / (SM_FLOPS * rate);
    let time = |s: usize| {
        let waves = (tiles * s).div_ceil(sms) as f64;
        let reduce = if s > 1 { 8.0 * (s * m * n) as f64 / MEM_BYTES_PER_S + REDUCE_LAUNCH_S } else { 0.0 };
        waves * tile_s / s as f64 + reduce
    };
    (1..=(ktiles / 4).clamp(1, 16)).map(|s| (s, time(s))).min_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((1, 0.0))
}

/// The rate of a 128 x 192 tile relative to a 128 x 256 one (per FLOP, once it runs): a guess,
/// for the next GPU run to calibrate (`selftest`'s timings put both widths side by side).
/// Narrower tiles read more shared memory per FLOP (A is re-read for every 192 columns instead
/// of 256) and pay their prologue and epilogue over fewer FLOPs.
pub const N192_RATE: f64 = 0.92;

/// The modelled rate of a `bn`-wide Hopper tile relative to the 256-wide one.
fn tile_rate(bn: usize) -> f64 {
    if bn == V5_BN { 1.0 } else { N192_RATE }
}

/// The tile width and slices of K for a Hopper GEMM (v5, v6) of (m, n, k) on `sms` SMs: the pair
/// with the least modelled time ([`split_k`]'s model, the narrow tile at [`N192_RATE`]). GPT-2
/// 124M at 8192 tokens: every GEMM with N = 768 (output projections, input gradients) and the
/// qkv projection (N = 2304) take 192; the MLP's up-projection (N = 3072), the LM head and
/// 4096^3 keep 256.
pub fn tile_plan(mnk: (usize, usize, usize), sms: usize) -> (usize, usize) {
    WGMMA_TILE_WIDTHS
        .iter()
        .map(|&bn| {
            let (s, t) = split_k_timed(mnk, (V5_BM, bn, 64), sms, tile_rate(bn));
            (bn, s, t)
        })
        .min_by(|a, b| a.2.total_cmp(&b.2))
        .map(|(bn, s, _)| (bn, s))
        .unwrap_or((V5_BN, 1))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MatmulTc {
    /// mma.sync + ldmatrix + cp.async (sm_80+).
    V4Mma,
    /// wgmma (sm_90a; the launcher refuses other devices).
    V5Wgmma,
    /// wgmma + TMA, warp-specialized, persistent (sm_90a).
    V6Tma,
}

/// What the epilogue writes (`cu/matmul_epilogue.cuh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Epi {
    /// C in f32.
    F32,
    /// C in bf16.
    Bf16,
    /// C = gelu(A·B + bias) in bf16, and the pre-activation A·B + bias (bf16) beside it.
    Bf16Gelu,
}

impl MatmulTc {
    /// The entry with the default tile (for v5 and v6, 128 x 256).
    pub fn name(self, epi: Epi) -> &'static str {
        match (self, epi) {
            (MatmulTc::V4Mma, Epi::F32) => "matmul_v4_bf16_f32out",
            (MatmulTc::V4Mma, Epi::Bf16) => "matmul_v4_bf16_bf16out",
            (MatmulTc::V4Mma, Epi::Bf16Gelu) => "matmul_v4_bf16_gelu",
            (MatmulTc::V5Wgmma, Epi::F32) => "matmul_v5_bf16_f32out",
            (MatmulTc::V5Wgmma, Epi::Bf16) => "matmul_v5_bf16_bf16out",
            (MatmulTc::V5Wgmma, Epi::Bf16Gelu) => "matmul_v5_bf16_gelu",
            (MatmulTc::V6Tma, Epi::F32) => "matmul_v6_bf16_f32out",
            (MatmulTc::V6Tma, Epi::Bf16) => "matmul_v6_bf16_bf16out",
            (MatmulTc::V6Tma, Epi::Bf16Gelu) => "matmul_v6_bf16_gelu",
        }
    }

    /// The entry for tiles `bn` wide (v5, v6: 256 or 192; v4: 256 only).
    pub fn entry(self, epi: Epi, bn: usize) -> &'static str {
        match (self, epi, bn) {
            (MatmulTc::V5Wgmma, Epi::F32, 192) => "matmul_v5_bf16_f32out_n192",
            (MatmulTc::V5Wgmma, Epi::Bf16, 192) => "matmul_v5_bf16_bf16out_n192",
            (MatmulTc::V5Wgmma, Epi::Bf16Gelu, 192) => "matmul_v5_bf16_gelu_n192",
            (MatmulTc::V6Tma, Epi::F32, 192) => "matmul_v6_bf16_f32out_n192",
            (MatmulTc::V6Tma, Epi::Bf16, 192) => "matmul_v6_bf16_bf16out_n192",
            (MatmulTc::V6Tma, Epi::Bf16Gelu, 192) => "matmul_v6_bf16_gelu_n192",
            _ => self.name(epi),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(feature = "cuda")]
mod bench;
#[cfg(feature = "cuda")]
mod checks;
#[cfg(feature = "cuda")]
mod launch;
#[cfg(feature = "cuda")]
pub use bench::timings;
#[cfg(feature = "cuda")]
pub use checks::checks;
