//! The tensor-core matmul launchers (`impl Gpu`): v4 (mma.sync), v5 and v6 (wgmma, sm_90a
//! only, compiled apart and cached per context), their tile and split-K choice, and the
//! version the engine runs.

use super::*;
use crate::compile;
use crate::device::Gpu;
use crate::toolkit::Arch;
use crate::{Error, Result};
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How a GEMM is cut into blocks: a tile width (v5, v6) and slices of K, each forced or (None)
/// left to the environment and the model.
#[derive(Clone, Copy)]
pub(super) struct Cut {
    pub(super) bn: Option<usize>,
    pub(super) splits: Option<usize>,
}

impl Cut {
    pub(super) const AUTO: Cut = Cut { bn: None, splits: None };
}

/// v5 and v6 functions per context, compiled for compute_90a. The cached functions keep
/// their context alive, so a context address cannot be reused while it is a key here.
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
    pub(super) fn matmul_tc_launch<TO: DeviceRepr>(
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
    pub(super) fn cut(&self, v: MatmulTc, cut: Cut, (m, n, k): (usize, usize, usize)) -> Result<(usize, usize)> {
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
pub(super) fn wgmma_widths() -> Vec<usize> {
    WGMMA_TILE_WIDTHS.into_iter().filter(|&w| w == V5_BN || !crate::skip_unproven()).collect()
}

fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|s| s == value)
}

/// The versions this device runs, oldest first. `IGPT_SKIP_V5=1` / `IGPT_SKIP_V6=1` leave one
/// out (a kernel fault poisons the CUDA context, and with it every later check and timing
/// in the process), as does `IGPT_SKIP_UNPROVEN=1` for v6.
pub(super) fn versions(gpu: &Gpu) -> Vec<MatmulTc> {
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
