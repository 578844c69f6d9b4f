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
//! This file holds the launchers (as `impl Gpu` methods), the self-test checks and the timing
//! rows added to `bench::matmul_bench`.

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

#[cfg(feature = "cuda")]
pub use gpu::{checks, timings};

#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use crate::bench::time_ms;
    use crate::compile;
    use crate::device::Gpu;
    use crate::reference::{self as r, compare};
    use crate::selftest::{Check, TOL_BF16, TOL_F32};
    use crate::toolkit::Arch;
    use crate::{Error, Result};
    use cudarc::driver::sys::CUfunction_attribute_enum;
    use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
    use half::bf16;
    use rand::{rngs::StdRng, SeedableRng};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// v5 and v6 functions per context, compiled for compute_90a. The cached functions keep
    /// their context alive, so a context address cannot be reused while it is a key here.
    /// How a GEMM is cut into blocks: a tile width (v5, v6) and slices of K, each forced or (None)
    /// left to the environment and the model.
    #[derive(Clone, Copy)]
    struct Cut {
        bn: Option<usize>,
        splits: Option<usize>,
    }

    impl Cut {
        const AUTO: Cut = Cut { bn: None, splits: None };
    }

    #[allow(clippy::type_complexity)]
    static SM90A_CACHE: Mutex<Vec<(usize, Arc<HashMap<&'static str, CudaFunction>>)>> = Mutex::new(Vec::new());

    fn check_len(kernel: &str, what: &str, got: usize, want: usize) -> Result<()> {
        if got < want {
            return Err(Error::Other(format!(
                "{kernel}: buffer {what} has {got} elements, shape needs {want}"
            )));
        }
        Ok(())
    }

    impl Gpu {
        /// True when v5 and v6 (wgmma) can run here: compute capability 9.0 (H100 / H200).
        pub fn has_wgmma(&self) -> bool {
            self.info.compute_capability == (9, 0)
        }

        /// The compute_90a build of `cu/matmul_wgmma.cu` (v5, v6), compiled (or read from the
        /// kernel cache) and loaded once per context.
        fn sm90a_function(&self, name: &'static str) -> Result<CudaFunction> {
            if !self.has_wgmma() {
                return Err(Error::Other(format!(
                    "{name}: wgmma needs compute capability 9.0 (sm_90a); this device is {:?}",
                    self.info.compute_capability
                )));
            }
            let key = Arc::as_ptr(&self.ctx) as usize;
            let mut cache = SM90A_CACHE.lock().map_err(|_| Error::Other("sm_90a kernel cache poisoned".into()))?;
            if let Some((_, funcs)) = cache.iter().find(|(k, _)| *k == key) {
                return funcs
                    .get(name)
                    .cloned()
                    .ok_or_else(|| Error::Other(format!("kernel {name} is not loaded")));
            }
            let m = crate::registry::module("matmul_wgmma").ok_or_else(|| Error::Other("module matmul_wgmma is not registered".into()))?;
            let arch = Arch::parse("sm_90a")?;
            let c = compile::compile_module(m, &arch)?;
            let module = self
                .ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(c.ptx.clone()))
                .map_err(|e| Error::cuda("loading module matmul_wgmma (compute_90a)", e))?;
            let mut funcs = HashMap::new();
            for e in SM90A_ENTRIES {
                let f = module
                    .load_function(e)
                    .map_err(|err| Error::cuda(format!("loading function {e}"), err))?;
                funcs.insert(*e, f);
            }
            let funcs = Arc::new(funcs);
            cache.push((key, funcs.clone()));
            funcs
                .get(name)
                .cloned()
                .ok_or_else(|| Error::Other(format!("kernel {name} is not loaded")))
        }

        /// Row-major C[m,n] = A[m,k] B[k,n] (+ bias[n]) on tensor cores, bf16 in, f32 out.
        #[allow(clippy::too_many_arguments)]
        pub fn matmul_tc_f32out(
            &self,
            v: MatmulTc,
            a: &CudaSlice<u16>,
            b: &CudaSlice<u16>,
            bias: Option<&CudaSlice<f32>>,
            c: &mut CudaSlice<f32>,
            m: usize,
            n: usize,
            k: usize,
        ) -> Result<()> {
            self.matmul_tc_launch(v, Epi::F32, a, b, bias, c, None, (m, n, k), Cut::AUTO)
        }

        /// As [`Self::matmul_tc_f32out`] with a bf16 output (round to nearest even).
        #[allow(clippy::too_many_arguments)]
        pub fn matmul_tc_bf16out(
            &self,
            v: MatmulTc,
            a: &CudaSlice<u16>,
            b: &CudaSlice<u16>,
            bias: Option<&CudaSlice<f32>>,
            c: &mut CudaSlice<u16>,
            m: usize,
            n: usize,
            k: usize,
        ) -> Result<()> {
            self.matmul_tc_launch(v, Epi::Bf16, a, b, bias, c, None, (m, n, k), Cut::AUTO)
        }

        /// C = gelu(A·B + bias) and `pre` = A·B + bias, both bf16 from one kernel: an MLP's
        /// up-projection with the pre-activation its backward needs.
        #[allow(clippy::too_many_arguments)]
        pub fn matmul_tc_bf16_gelu(
            &self,
            v: MatmulTc,
            a: &CudaSlice<u16>,
            b: &CudaSlice<u16>,
            bias: Option<&CudaSlice<f32>>,
            c: &mut CudaSlice<u16>,
            pre: &mut CudaSlice<u16>,
            m: usize,
            n: usize,
            k: usize,
        ) -> Result<()> {
            self.matmul_tc_launch(v, Epi::Bf16Gelu, a, b, bias, c, Some(pre), (m, n, k), Cut::AUTO)
        }

        #[allow(clippy::too_many_arguments)]
        fn matmul_tc_launch<TO: DeviceRepr>(
            &self,
            v: MatmulTc,
            epi: Epi,
            a: &CudaSlice<u16>,
            b: &CudaSlice<u16>,
            bias: Option<&CudaSlice<f32>>,
            c: &mut CudaSlice<TO>,
            pre: Option<&mut CudaSlice<u16>>,
            (m, n, k): (usize, usize, usize),
            cut: Cut,
        ) -> Result<()> {
            let shape = format!("{} M={m} N={n} K={k}", v.name(epi));
            check_len(&shape, "A", a.len(), m * k)?;
            check_len(&shape, "B", b.len(), k * n)?;
            check_len(&shape, "C", c.len(), m * n)?;
            if let Some(pre) = &pre {
                check_len(&shape, "pre", pre.len(), m * n)?;
            }
            if (epi == Epi::Bf16Gelu) != pre.is_some() {
                return Err(Error::Other(format!("{shape}: the GELU epilogue, and only it, writes a pre-activation buffer")));
            }
            if let Some(bias) = bias {
                check_len(&shape, "bias", bias.len(), n)?;
            }
            let (mi, ni, _) = (to_i32(&shape, "M", m)?, to_i32(&shape, "N", n)?, to_i32(&shape, "K", k)?);
            if m == 0 || n == 0 {
                return Ok(());
            }
            // v5 and v6 have no scalar fallback (and TMA needs 16-byte row strides): shapes or
            // buffers they cannot take go to v4.
            let (pa, _ra) = a.device_ptr(&self.stream);
            let (pb, _rb) = b.device_ptr(&self.stream);
            let mut v = v;
            if v != MatmulTc::V4Mma {
                let aligned = |p: u64| p.is_multiple_of(16);
                if k == 0 || !k.is_multiple_of(8) || !n.is_multiple_of(8) || !aligned(pa) || !aligned(pb) {
                    v = MatmulTc::V4Mma;
                }
            }
            // Split-K: the slices' f32 partials, then one reduction applies the epilogue.
            let (bn, splits) = self.cut(v, cut, (m, n, k))?;
            let ptrs = (pa, pb);
            if splits == 1 {
                self.gemm_launch(v, v.entry(epi, bn), bn, ptrs, (a, b), bias, c, pre, (m, n, k), 1, &shape)?;
            } else {
                // SAFETY: f32 has no invalid bit patterns, and the slices write all of it.
                let mut part = unsafe { self.stream.alloc::<f32>(splits * m * n) }.map_err(|e| Error::cuda(format!("{shape}: split-K partials ({splits} x {m} x {n} f32)"), e))?;
                self.gemm_launch(v, v.entry(Epi::F32, bn), bn, ptrs, (a, b), None, &mut part, None, (m, n, k), splits, &shape)?;
                let reduce = match epi {
                    Epi::F32 => "matmul_splitk_reduce_f32out",
                    Epi::Bf16 => "matmul_splitk_reduce_bf16out",
                    Epi::Bf16Gelu => "matmul_splitk_reduce_gelu",
                };
                let pairs = m * n.div_ceil(2);
                let cfg = LaunchConfig { grid_dim: (pairs.div_ceil(256).clamp(1, 8 * self.info.sm_count.max(1) as usize) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
                let (si, null) = (splits as i32, 0u64);
                let mut lb = self.stream.launch_builder(self.f(reduce)?);
                lb.arg(&part).arg(&si);
                epilogue_args(&mut lb, bias, &null, c, pre);
                lb.arg(&mi).arg(&ni);
                unsafe { lb.launch(cfg) }.map_err(|e| Error::cuda(format!("launch {reduce} {shape} splits={splits}"), e))?;
            }
            drop((_ra, _rb)); // A and B are read by the launches just queued
            Ok(())
        }

        /// The tile width and the slices of K a GEMM runs in: as `cut` says, or `IGPT_TILE_N` (unset:
        /// 256, the width measured on an H100; `auto`: [`tile_plan`]) and `IGPT_SPLIT_K` (unset:
        /// the model); at most one slice per k-tile, and none empty.
        fn cut(&self, v: MatmulTc, cut: Cut, (m, n, k): (usize, usize, usize)) -> Result<(usize, usize)> {
            let sms = self.info.sm_count.max(1) as usize;
            let (bm, bk) = if v == MatmulTc::V4Mma { (V4_BM, 32) } else { (V5_BM, 64) };
            let bn = match (v, cut.bn) {
                (MatmulTc::V4Mma, _) => V4_BN,
                (_, Some(bn)) => bn,
                (_, None) => match tile_from_env()? {
                    TileChoice::Fixed(bn) => bn,
                    TileChoice::Model => tile_plan((m, n, k), sms).0,
                },
            };
            let ktiles = k.div_ceil(bk).max(1);
            let s = match cut.splits {
                Some(s) => s,
                None => split_from_env()?.unwrap_or_else(|| split_k_timed((m, n, k), (bm, bn, bk), sms, tile_rate(bn)).0),
            }
            .clamp(1, ktiles);
            Ok((bn, ktiles.div_ceil(ktiles.div_ceil(s))))
        }

        /// One launch of GEMM kernel `name` (version `v`) writing `c` (and `pre`), its grid
        /// `splits` slices of K deep (each then writes an f32 partial, see `cu/matmul_epilogue.cuh`).
        #[allow(clippy::too_many_arguments)]
        fn gemm_launch<TO: DeviceRepr>(
            &self,
            v: MatmulTc,
            name: &'static str,
            bn: usize,
            (pa, pb): (u64, u64),
            (a, b): (&CudaSlice<u16>, &CudaSlice<u16>),
            bias: Option<&CudaSlice<f32>>,
            c: &mut CudaSlice<TO>,
            pre: Option<&mut CudaSlice<u16>>,
            (m, n, k): (usize, usize, usize),
            splits: usize,
            shape: &str,
        ) -> Result<()> {
            let (f, bm, threads, smem) = match v {
                MatmulTc::V4Mma => (self.f(name)?.clone(), V4_BM, V4_THREADS, V4_SMEM_BYTES),
                MatmulTc::V5Wgmma => (self.sm90a_function(name)?, V5_BM, V5_THREADS, v5_smem_bytes(bn)),
                MatmulTc::V6Tma => (self.sm90a_function(name)?, V5_BM, V6_THREADS, v6_smem_bytes(bn)),
            };
            self.ctx
                .bind_to_thread()
                .map_err(|e| Error::cuda(format!("{name}: binding the CUDA context"), e))?;
            f.set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
            .map_err(|e| Error::cuda(format!("{name}: raising the dynamic shared memory limit to {smem} B"), e))?;
            let tiles = m.div_ceil(bm) * n.div_ceil(bn);
            if tiles > i32::MAX as usize {
                return Err(Error::Other(format!("{shape}: {tiles} tiles do not fit grid.x")));
            }
            // v6 is persistent: one block per SM (its shared memory allows no more), each
            // walking the tiles with a stride of the grid; with split-K, the SMs shared among
            // the slices.
            let blocks = match v {
                MatmulTc::V6Tma => tiles.min((self.info.sm_count.max(1) as usize / splits).max(1)),
                _ => tiles,
            };
            let cfg = LaunchConfig {
                grid_dim: (blocks as u32, 1, splits as u32),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: smem as u32,
            };
            let null: u64 = 0; // a null `const float*` for "no bias"
            let maps = match v {
                MatmulTc::V6Tma => {
                    let (am, bmap) = v6_maps(shape, pa, pb, m, n, k)?;
                    Some((am.encode(&format!("{shape}: A"), pa)?, bmap.encode(&format!("{shape}: B"), pb)?))
                }
                _ => None,
            };
            let (mi, ni, ki) = (m as i32, n as i32, k as i32);
            let mut lb = self.stream.launch_builder(&f);
            match &maps {
                Some((am, bmap)) => lb.arg(am).arg(bmap),
                None => lb.arg(a).arg(b),
            };
            epilogue_args(&mut lb, bias, &null, c, pre);
            lb.arg(&mi).arg(&ni).arg(&ki);
            unsafe { lb.launch(cfg) }.map_err(|e| Error::cuda(format!("launch {name} ({shape}) blocks={blocks} splits={splits} smem={smem}"), e))?;
            Ok(())
        }
    }

    /// The arguments every GEMM and reduction entry takes after its inputs: the bias (a null
    /// pointer for none), C, and the GELU epilogue's pre-activation when it writes one.
    fn epilogue_args<'a, TO>(lb: &mut cudarc::driver::LaunchArgs<'a>, bias: Option<&'a CudaSlice<f32>>, null: &'a u64, c: &'a mut CudaSlice<TO>, pre: Option<&'a mut CudaSlice<u16>>) {
        match bias {
            Some(bias) => lb.arg(bias),
            None => lb.arg(null),
        };
        lb.arg(c);
        if let Some(pre) = pre {
            lb.arg(pre);
        }
    }

    enum TileChoice {
        Fixed(usize),
        Model,
    }

    /// `IGPT_TILE_N=256|192|auto`: every Hopper GEMM (v5, v6) with tiles that wide, or as
    /// [`tile_plan`] chooses; unset, 256 (the width measured on an H100: the narrow tiles become
    /// the default once a GPU run has shown them correct and faster where the model picks them).
    fn tile_from_env() -> Result<TileChoice> {
        match std::env::var("IGPT_TILE_N").ok().filter(|v| !v.is_empty()).as_deref() {
            None => Ok(TileChoice::Fixed(V5_BN)),
            Some("auto") => Ok(TileChoice::Model),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if WGMMA_TILE_WIDTHS.contains(&n) => Ok(TileChoice::Fixed(n)),
                _ => Err(Error::Other(format!("IGPT_TILE_N={v:?}: expected auto or one of the Hopper tile widths {WGMMA_TILE_WIDTHS:?}"))),
            },
        }
    }

    /// `IGPT_SPLIT_K=N`: every tensor-core GEMM in N slices of K (1: never split); unset, the
    /// model in [`split_k`] chooses.
    fn split_from_env() -> Result<Option<usize>> {
        match std::env::var("IGPT_SPLIT_K").ok().filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Some(n)),
                _ => Err(Error::Other(format!("IGPT_SPLIT_K={v:?}: expected a whole number of slices, 1 or more"))),
            },
        }
    }

    fn to_i32(shape: &str, what: &str, v: usize) -> Result<i32> {
        i32::try_from(v).map_err(|_| Error::Other(format!("{shape}: {what} = {v} does not fit in i32")))
    }

    /// The Hopper tile widths the self-test checks and times: both, or 256 alone under
    /// `IGPT_SKIP_UNPROVEN=1` (the 192-wide tiles have not run on a GPU yet).
    fn wgmma_widths() -> Vec<usize> {
        WGMMA_TILE_WIDTHS.into_iter().filter(|&w| w == V5_BN || !crate::skip_unproven()).collect()
    }

    fn env_is(name: &str, value: &str) -> bool {
        std::env::var(name).is_ok_and(|s| s == value)
    }

    /// The versions this device runs, oldest first. `IGPT_SKIP_V5=1` / `IGPT_SKIP_V6=1` leave one
    /// out (a kernel fault poisons the CUDA context, and with it every later check and timing
    /// in the process), as does `IGPT_SKIP_UNPROVEN=1` for v6.
    fn versions(gpu: &Gpu) -> Vec<MatmulTc> {
        let mut v = vec![MatmulTc::V4Mma];
        if gpu.has_wgmma() && !env_is("IGPT_SKIP_V5", "1") {
            v.push(MatmulTc::V5Wgmma);
        }
        if gpu.has_wgmma() && !env_is("IGPT_SKIP_V6", "1") && !crate::skip_unproven() {
            v.push(MatmulTc::V6Tma);
        }
        v
    }

    impl Gpu {
        /// The version the engine's bf16 matmuls use: v5 on Hopper (v6 takes over once a GPU
        /// check has shown it correct and faster), v4 elsewhere. `IGPT_MATMUL=v4|v5|v6` picks
        /// one; `IGPT_SKIP_V5=1` keeps the default to v4.
        pub fn engine_matmul(&self) -> Result<MatmulTc> {
            let hopper = self.has_wgmma();
            match std::env::var("IGPT_MATMUL").ok().as_deref() {
                None | Some("") => Ok(if hopper && !env_is("IGPT_SKIP_V5", "1") { MatmulTc::V5Wgmma } else { MatmulTc::V4Mma }),
                Some("v4") => Ok(MatmulTc::V4Mma),
                Some(v @ ("v5" | "v6")) if !hopper => Err(Error::Other(format!(
                    "IGPT_MATMUL={v}: wgmma needs compute capability 9.0 (sm_90a); this device is {:?}",
                    self.info.compute_capability
                ))),
                Some("v5") => Ok(MatmulTc::V5Wgmma),
                Some("v6") => Ok(MatmulTc::V6Tma),
                Some(other) => Err(Error::Other(format!("IGPT_MATMUL={other:?}: expected v4, v5 or v6"))),
            }
        }
    }

    /// (M, N, K, bias): 1x1x1; the scalar fallback (K, N not multiples of 8); ragged edges on
    /// the fast path; one k-tile only (K = 64, many blocks); K not a multiple of the k-tile;
    /// exact tile multiples; thin shapes.
    pub const CHECK_SHAPES: &[(usize, usize, usize, bool)] = &[
        (1, 1, 1, false),
        (1, 1, 1, true),
        (127, 129, 65, false),
        (127, 129, 65, true),
        (33, 17, 200, true),
        (257, 300, 192, false),
        (257, 300, 192, true),
        (4096, 4096, 64, false),
        (4096, 4096, 64, true),
        (1000, 1000, 1000, false),
        (1000, 1000, 1000, true),
        (256, 512, 136, true),
        (8, 776, 40, false),
        (640, 8, 1032, true),
        // more tiles than an H100 has SMs (v6's persistent blocks take two), 3 k-tiles each:
        // v6's stage ring wraps inside a tile.
        (2176, 2304, 136, true),
        // few tiles, long K: split-K (see `split_k`), ragged edges and a ragged last slice too.
        (256, 512, 2048, true),
        (100, 264, 3000, true),
    ];

    use crate::reference::rand_nonzero as rand;

    /// v4 (and v5, v6 on Hopper), f32 and bf16 out, against the f64 reference on the same
    /// bf16-rounded inputs; fresh random inputs, NaN-poisoned outputs. The 1000^3 case also
    /// reruns each version and requires a bitwise-identical result (a race would show there).
    pub fn checks(gpu: &Gpu) -> Vec<Check> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ 0x7c7c_0004;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Vec::new();
        let up = |v: &[f32]| gpu.stream.clone_htod(v).map_err(|e| Error::cuda("upload", e));
        let up16 = |v: &[u16]| gpu.stream.clone_htod(v).map_err(|e| Error::cuda("upload", e));
        let down = |s: &CudaSlice<f32>| gpu.stream.clone_dtoh(s).map_err(|e| Error::cuda("download", e));
        let down16 = |s: &CudaSlice<u16>| -> Result<Vec<f32>> {
            let bits = gpu.stream.clone_dtoh(s).map_err(|e| Error::cuda("download", e))?;
            Ok(bits.into_iter().map(|b| bf16::from_bits(b).to_f32()).collect())
        };
        // Versions outermost: every older version's rows are in before a newer one runs (a fault
        // would poison the context). v5 and v6 at both tile widths, whatever the model picks.
        let cuts = |v: MatmulTc| -> Vec<usize> { if v == MatmulTc::V4Mma { vec![V4_BN] } else { wgmma_widths() } };
        for (v, bn) in versions(gpu).into_iter().flat_map(|v| cuts(v).into_iter().map(move |bn| (v, bn))) {
            let cut = Cut { bn: Some(bn), splits: None };
            for &(m, n, k, with_bias) in CHECK_SHAPES {
                // Shapes v5/v6 cannot take (K or N not a multiple of 8) run v4, the launcher's
                // fallback: once, and labelled so.
                let falls_back = v != MatmulTc::V4Mma && (k == 0 || !k.is_multiple_of(8) || !n.is_multiple_of(8));
                if falls_back && bn != V5_BN {
                    continue;
                }
                let shape = format!("{m}x{n}x{k}{}{}", if with_bias { "+bias" } else { "" }, if falls_back { " (runs v4)" } else { "" });
                let a16: Vec<u16> = rand(&mut rng, m * k, -1.0, 1.0)
                    .iter()
                    .map(|&x| bf16::from_f32(x).to_bits())
                    .collect();
                let b16: Vec<u16> = rand(&mut rng, k * n, -1.0, 1.0)
                    .iter()
                    .map(|&x| bf16::from_f32(x).to_bits())
                    .collect();
                let bias = with_bias.then(|| rand(&mut rng, n, -1.0, 1.0));
                let from_bf = |v: &[u16]| -> Vec<f32> { v.iter().map(|&x| bf16::from_bits(x).to_f32()).collect() };
                let want = r::matmul(&from_bf(&a16), &from_bf(&b16), bias.as_deref(), m, n, k);
                let r: Result<Vec<Check>> = (|| {
                    let (ga, gb) = (up16(&a16)?, up16(&b16)?);
                    let gbias = bias.as_ref().map(|b| up(b)).transpose()?;
                    let mut rows = Vec::new();
                    let name = v.entry(Epi::F32, bn);
                    let mut gc = up(&vec![f32::NAN; m * n])?;
                    gpu.matmul_tc_launch(v, Epi::F32, &ga, &gb, gbias.as_ref(), &mut gc, None, (m, n, k), cut)?;
                    gpu.sync(name)?;
                    let first = down(&gc)?;
                    rows.push(Check::new(name, shape.clone(), "bf16->f32", compare(&first, &want), TOL_F32));
                    if (m, n, k) == (1000, 1000, 1000) {
                        let mut gc2 = up(&vec![f32::NAN; m * n])?;
                        gpu.matmul_tc_launch(v, Epi::F32, &ga, &gb, gbias.as_ref(), &mut gc2, None, (m, n, k), cut)?;
                        gpu.sync(name)?;
                        let second = down(&gc2)?;
                        let same = first.iter().zip(&second).all(|(x, y)| x.to_bits() == y.to_bits());
                        let mut ch = Check::new(
                            &format!("{name} (rerun, bitwise)"),
                            shape.clone(),
                            "bf16->f32",
                            compare(&second, &want),
                            TOL_F32,
                        );
                        ch.pass &= same;
                        if !same {
                            ch.error = Some("second run differs bitwise from the first (race?)".into());
                        }
                        rows.push(ch);
                    }
                    let name16 = v.entry(Epi::Bf16, bn);
                    let mut gc16 = up16(&vec![bf16::NAN.to_bits(); m * n])?;
                    gpu.matmul_tc_launch(v, Epi::Bf16, &ga, &gb, gbias.as_ref(), &mut gc16, None, (m, n, k), cut)?;
                    gpu.sync(name16)?;
                    rows.push(Check::new(name16, shape.clone(), "bf16", compare(&down16(&gc16)?, &want), TOL_BF16));
                    // GELU epilogue: the pre-activation against the product, and the output against
                    // GELU of that stored pre-activation (a reference from the exact product would
                    // charge GELU with the matmul's rounding where the product cancels near 0).
                    let name_g = v.entry(Epi::Bf16Gelu, bn);
                    let (mut post, mut pre) = (up16(&vec![bf16::NAN.to_bits(); m * n])?, up16(&vec![bf16::NAN.to_bits(); m * n])?);
                    gpu.matmul_tc_launch(v, Epi::Bf16Gelu, &ga, &gb, gbias.as_ref(), &mut post, Some(&mut pre), (m, n, k), cut)?;
                    gpu.sync(name_g)?;
                    let stored_pre = down16(&pre)?;
                    rows.push(Check::new(&format!("{name_g} (pre)"), shape.clone(), "bf16", compare(&stored_pre, &want), TOL_BF16));
                    rows.push(Check::new(&format!("{name_g} (gelu)"), shape.clone(), "bf16", compare(&down16(&post)?, &r::gelu_fwd(&stored_pre)), TOL_BF16));
                    Ok(rows)
                })();
                match r {
                    Ok(rows) => out.extend(rows),
                    Err(e) => out.push(Check::failed(v.entry(Epi::F32, bn), shape.clone(), "bf16->f32", e.to_string())),
                }
            }
        }
        out
    }

    /// Timing rows for `bench::matmul_bench`: (name, median ms) of v4 (and v5, v6 on Hopper), each
    /// epilogue (f32, bf16, bf16 GELU with its pre-activation), and the GELU it replaces (a bf16
    /// matmul, then the GELU kernel), on the bench's own random bf16 inputs (no bias, like the
    /// other rows).
    pub fn timings(
        gpu: &Gpu,
        a: &CudaSlice<u16>,
        b: &CudaSlice<u16>,
        c32: &mut CudaSlice<f32>,
        c16: &mut CudaSlice<u16>,
        (m, n, k): (usize, usize, usize),
    ) -> Vec<(String, Result<f64>)> {
        let mut rows = Vec::new();
        let mut pre = match gpu.stream.alloc_zeros::<u16>(m * n) {
            Ok(p) => Some(p),
            Err(e) => {
                rows.push(("matmul_tc gelu setup".to_string(), Err(Error::cuda("allocating the pre-activation", e))));
                None
            }
        };
        let pick = tile_plan((m, n, k), gpu.info.sm_count.max(1) as usize).0;
        for v in versions(gpu) {
            // f32 out at each tile width (v4: its one; v5/v6: 256 and 192), each with the split
            // the model gives it, `tile_plan`'s width marked; where K is split, the unsplit GEMM
            // beside it. Shapes that fall back to v4 would be labelled with v5's entries: the
            // bench's never do.
            let widths = if v == MatmulTc::V4Mma { vec![V4_BN] } else { wgmma_widths() };
            for bn in widths {
                let (_, splits) = gpu.cut(v, Cut { bn: Some(bn), splits: None }, (m, n, k)).unwrap_or((bn, 1));
                let name = v.entry(Epi::F32, bn);
                let mut label = if splits > 1 { format!("{name} (split-K {splits})") } else { name.to_string() };
                if v != MatmulTc::V4Mma && bn == pick {
                    label += " [tile_plan]";
                }
                let cut = Cut { bn: Some(bn), splits: Some(splits) };
                rows.push((label, time_ms(gpu, || gpu.matmul_tc_launch(v, Epi::F32, a, b, None, c32, None, (m, n, k), cut))));
                if splits > 1 {
                    let unsplit = Cut { bn: Some(bn), splits: Some(1) };
                    rows.push((format!("{name} (unsplit)"), time_ms(gpu, || gpu.matmul_tc_launch(v, Epi::F32, a, b, None, c32, None, (m, n, k), unsplit))));
                }
            }
            // The other epilogues as the engine runs them (IGPT_TILE_N, IGPT_SPLIT_K).
            let ebn = gpu.cut(v, Cut::AUTO, (m, n, k)).map(|c| c.0).unwrap_or(V5_BN);
            rows.push((v.entry(Epi::Bf16, ebn).to_string(), time_ms(gpu, || gpu.matmul_tc_bf16out(v, a, b, None, c16, m, n, k))));
            if let Some(pre) = pre.as_mut() {
                rows.push((v.entry(Epi::Bf16Gelu, ebn).to_string(), time_ms(gpu, || gpu.matmul_tc_bf16_gelu(v, a, b, None, c16, pre, m, n, k))));
                let unfused = time_ms(gpu, || {
                    gpu.matmul_tc_bf16out(v, a, b, None, pre, m, n, k)?;
                    gpu.gelu_fwd(pre, c16)
                });
                rows.push((format!("{} + gelu_fwd_bf16 (unfused)", v.entry(Epi::Bf16, ebn)), unfused));
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2 124M's GEMMs at 8192 tokens on an H100 (132 SMs), v5's tiles.
    #[test]
    fn split_k_goes_to_the_gemms_that_leave_the_gpu_idle() {
        let s = |mnk| split_k(mnk, (V5_BM, V5_BN, 64), 132);
        // Weight gradients (Xᵀ·dY, K = the tokens): few tiles, long K.
        assert_eq!(s((768, 768, 8192)), 7, "attention projection: 18 tiles");
        assert_eq!(s((768, 2304, 8192)), 2, "qkv: 54 tiles");
        assert!(s((768, 3072, 8192)) > 1 && s((3072, 768, 8192)) > 1, "MLP: 72 tiles");
        // Forward and input gradients: enough tiles, or too short a K to pay for the partials.
        assert_eq!(s((8192, 768, 768)), 1);
        assert_eq!(s((8192, 2304, 768)), 1);
        assert_eq!(s((8192, 50304, 768)), 1, "LM head");
        assert_eq!(s((4096, 4096, 4096)), 1);
        // Every slice keeps at least 4 k-tiles.
        assert_eq!(s((128, 256, 64 * 7)), 1);
        assert!(s((128, 256, 64 * 8)) <= 2);
        assert_eq!(s((1, 1, 1)), 1);
    }

    /// The tile width model on an H100: the N = 768 GEMMs (3 tiles of 256 across, 4 of 192) and
    /// qkv (9 vs 12) go narrow; the shapes that already fill whole waves keep 256.
    #[test]
    fn tile_plan_narrows_the_gemms_that_leave_a_wave_part_empty() {
        let p = |mnk| tile_plan(mnk, 132);
        assert_eq!(p((8192, 768, 768)), (192, 1), "attention projection: 256 tiles of 192 (2 waves) vs 192 of 256");
        assert_eq!(p((8192, 768, 3072)), (192, 1), "MLP projection / fc input gradient");
        assert_eq!(p((8192, 768, 2304)).0, 192, "qkv input gradient");
        assert_eq!(p((8192, 2304, 768)).0, 192, "qkv: 768 tiles of 192 (6 waves) vs 576 of 256 (5 waves, the last 36% full)");
        assert_eq!(p((8192, 3072, 768)), (256, 1), "MLP up-projection: 768 tiles of 256 fill 6 waves");
        assert_eq!(p((4096, 4096, 4096)), (256, 1));
        assert_eq!(p((8192, 50304, 768)).0, 256, "LM head");
        // Weight gradients: the tile and the split are chosen together. 768 x 768: 24 tiles of
        // 192 in 5 slices (120 blocks) vs 18 of 256 in 7; MLP: 96 tiles of 192, one wave
        // unsplit, beats 72 of 256 in 3 slices and their partials; qkv: 54 tiles of 256 in 2.
        assert_eq!(p((768, 768, 8192)), (192, 5));
        assert_eq!(p((768, 3072, 8192)), (192, 1));
        assert_eq!(p((768, 2304, 8192)), (256, 2));
        assert_eq!(v5_smem_bytes(256), 197_632);
        assert_eq!(v5_smem_bytes(192), 164_864);
        assert_eq!(v6_smem_bytes(192), 164_928);
    }
}
