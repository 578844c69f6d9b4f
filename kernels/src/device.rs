//! A CUDA device with every registered module loaded, and typed launchers that
//! compute launch configs from shapes. bf16 buffers are `CudaSlice<u16>` (bit
//! patterns; cudarc implements DeviceRepr for half::bf16 only with its `f16` feature).
//! Launches are asynchronous: a launch error names kernel and shape here; faults
//! during execution surface at the caller's next synchronize.

use crate::compile::{self, Compiled};
use crate::error::{Error, Result};
use crate::registry::MODULES;
use crate::rows::RowKernel;
use crate::toolkit::Arch;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceInfo {
    pub name: String,
    pub compute_capability: (i32, i32),
    pub sm_count: i32,
    pub driver_version: String,
    pub arch: String,
}

pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub info: DeviceInfo,
    pub compiled: Vec<Compiled>,
    funcs: HashMap<&'static str, CudaFunction>,
    /// Resident blocks per SM by (kernel, threads, dynamic shared bytes), asked of the driver once.
    occupancy: std::sync::Mutex<HashMap<(String, u32, usize), u32>>,
}

/// Errors instead of the panic cudarc's dynamic loading gives when libcuda is absent.
pub fn ensure_driver() -> Result<()> {
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::NoDriver)
    }
}

fn driver_version() -> Result<String> {
    let mut v = 0i32;
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }.result().map_err(|e| Error::cuda("cuDriverGetVersion", e))?;
    Ok(format!("{}.{}", v / 1000, (v % 1000) / 10))
}

pub type Dim = (u32, u32, u32);

fn cfg(grid: Dim, block: Dim) -> LaunchConfig {
    LaunchConfig { grid_dim: grid, block_dim: block, shared_mem_bytes: 0 }
}

/// Grid for grid-stride elementwise kernels: enough blocks to fill the chip, never more than needed.
pub(crate) fn elementwise_cfg(n: usize, sm_count: i32) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, (sm_count.max(1) as usize) * 16);
    cfg((blocks as u32, 1, 1), (256, 1, 1))
}

/// One warp per row, 4 warps per block.
pub(crate) fn row_cfg(rows: usize) -> LaunchConfig {
    cfg((rows.div_ceil(4).max(1) as u32, 1, 1), (128, 1, 1))
}

/// Element types the row and elementwise kernels store: f32, or bf16 as its bit patterns (u16).
pub trait RowElem: cudarc::driver::DeviceRepr {
    const NAME: &'static str;
}
impl RowElem for f32 {
    const NAME: &'static str = "f32";
}
impl RowElem for u16 {
    const NAME: &'static str = "bf16";
}

/// The entry of row kernel `op` to launch: v1's (`{op}_f32`; f32 only), or v2's build for rows
/// of `width` (`{op}_v2_{f32|bf16}_w*`).
fn row_entry<T: RowElem>(v: RowKernel, op: &str, width: usize) -> Result<String> {
    row_entry2::<T, T>(v, op, width)
}

/// As [`row_entry`] for a kernel whose input is `X` and output `Y`: `{op}_v2_{X}_{Y}_w*` when they
/// differ (layernorm from the f32 residual stream to a bf16 activation; v2 only).
fn row_entry2<X: RowElem, Y: RowElem>(v: RowKernel, op: &str, width: usize) -> Result<String> {
    let types = if X::NAME == Y::NAME { X::NAME.to_string() } else { format!("{}_{}", X::NAME, Y::NAME) };
    match v {
        RowKernel::V1 if types == "f32" => Ok(format!("{op}_f32")),
        RowKernel::V1 => Err(Error::Other(format!("{op}: v1 has no {types} build; v2 takes rows up to {}", crate::rows::V2_MAX_WIDTH))),
        RowKernel::V2 => {
            let stem = format!("{op}_v2_{types}");
            RowKernel::v2_entry(&stem, width).ok_or_else(|| Error::Other(format!("{stem}: rows of {width} are wider than v2 takes ({})", crate::rows::V2_MAX_WIDTH)))
        }
    }
}

pub(crate) fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got < want {
        return Err(Error::Other(format!("{what}: buffer has {got} elements, shape needs {want}")));
    }
    Ok(())
}

pub(crate) fn to_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Other(format!("{what} = {v} does not fit in i32")))
}

/// How the operands of `matmul_v2_f32_batched*` are stored: NN as the product reads them; NT
/// with B stored transposed ([N, K]); TN with A stored transposed ([K, M]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Stored {
    NN,
    NT,
    TN,
}

impl Stored {
    pub fn entry(self) -> &'static str {
        match self {
            Stored::NN => "matmul_v2_f32_batched",
            Stored::NT => "matmul_v2_f32_batched_nt",
            Stored::TN => "matmul_v2_f32_batched_tn",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MatmulF32 {
    V1Tiled,
    V2Register,
}

impl Gpu {
    /// Opens device `ordinal`, compiles (or loads cached) modules for its own arch and loads them.
    pub fn new(ordinal: usize) -> Result<Gpu> {
        ensure_driver()?;
        compile::ensure_nvrtc()?;
        let count = CudaContext::device_count().map_err(|e| Error::cuda("cuDeviceGetCount (no CUDA device?)", e))?;
        if count as usize <= ordinal {
            return Err(Error::Other(format!("no CUDA device {ordinal}: {count} device(s) found")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::cuda("creating the CUDA context", e))?;
        // One stream only: cudarc's per-buffer event tracking is for multi-stream use and
        // would add event records to every launch we time.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let cc = ctx.compute_capability().map_err(|e| Error::cuda("compute capability", e))?;
        let sm_count = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| Error::cuda("multiprocessor count", e))?;
        let arch = Arch::from_cc(cc.0, cc.1, false);
        let info = DeviceInfo {
            name: ctx.name().map_err(|e| Error::cuda("device name", e))?,
            compute_capability: cc,
            sm_count,
            driver_version: driver_version()?,
            arch: arch.compute(),
        };
        let mut funcs = HashMap::new();
        let mut compiled = Vec::new();
        for m in MODULES {
            let c = compile::compile_module(m, &arch)?;
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(c.ptx.clone()))
                .map_err(|e| Error::cuda(format!("loading module {} ({})", m.name, arch.compute()), e))?;
            for e in m.entries {
                let f = module.load_function(e).map_err(|err| Error::cuda(format!("loading function {e}"), err))?;
                funcs.insert(*e, f);
            }
            compiled.push(c);
        }
        Ok(Gpu { ctx, stream, info, compiled, funcs, occupancy: Default::default() })
    }

    /// Blocks of `f` resident per SM at this block size and dynamic shared memory (cached).
    fn resident_blocks(&self, name: &str, f: &CudaFunction, threads: u32, smem: usize) -> Result<u32> {
        let key = (name.to_string(), threads, smem);
        if let Some(&n) = self.occupancy.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(n);
        }
        // The driver's occupancy query runs outside cudarc's own context handling.
        self.ctx.bind_to_thread().map_err(|e| Error::cuda(format!("{name}: binding the CUDA context"), e))?;
        let n = f.occupancy_max_active_blocks_per_multiprocessor(threads, smem, None).map_err(|e| Error::cuda(format!("{name}: occupancy"), e))?;
        self.occupancy.lock().unwrap_or_else(|p| p.into_inner()).insert(key, n);
        Ok(n)
    }

    /// `v` on the device. An empty `v` gets one unused element: the driver documents that it
    /// refuses 0-byte allocations, and a caller's length lives in its own shape or count.
    pub fn upload<T: cudarc::driver::DeviceRepr + Default>(&self, v: &[T]) -> std::result::Result<CudaSlice<T>, cudarc::driver::DriverError> {
        if v.is_empty() {
            return self.stream.clone_htod(&[T::default()]);
        }
        self.stream.clone_htod(v)
    }

    pub(crate) fn f(&self, name: &str) -> Result<&CudaFunction> {
        self.funcs.get(name).ok_or_else(|| Error::Other(format!("kernel {name} is not loaded")))
    }

    /// Bytes the device's default memory pool (behind cuMemAllocAsync) keeps reserved when
    /// memory is freed: 0 (the driver's default) hands it back at every synchronize; u64::MAX
    /// keeps it for the next allocation, as a caching allocator does.
    pub fn set_pool_release_threshold(&self, bytes: u64) -> Result<()> {
        use cudarc::driver::sys;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        let mut value = bytes;
        unsafe {
            sys::cuDeviceGetDefaultMemPool(&mut pool, self.ctx.cu_device()).result().map_err(|e| Error::cuda("cuDeviceGetDefaultMemPool", e))?;
            sys::cuMemPoolSetAttribute(pool, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &mut value as *mut u64 as *mut std::ffi::c_void)
                .result()
                .map_err(|e| Error::cuda("cuMemPoolSetAttribute(RELEASE_THRESHOLD)", e))?;
            sys::cuMemPoolTrimTo(pool, 0).result().map_err(|e| Error::cuda("cuMemPoolTrimTo", e))?;
        }
        Ok(())
    }

    /// The high-water mark of the default memory pool's bytes in use since the last reset
    /// (tensors and workspaces: every allocation goes through cuMemAllocAsync); `reset` then
    /// restarts the mark (from the next allocation on).
    pub fn pool_peak_bytes(&self, reset: bool) -> Result<u64> {
        use cudarc::driver::sys;
        let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
        let value = self.pool_attribute(attr, "USED_MEM_HIGH")?;
        if reset {
            // Only 0 may be set.
            let mut zero = 0u64;
            let pool = self.default_pool()?;
            unsafe { sys::cuMemPoolSetAttribute(pool, attr, &mut zero as *mut u64 as *mut std::ffi::c_void) }
                .result()
                .map_err(|e| Error::cuda("cuMemPoolSetAttribute(USED_MEM_HIGH)", e))?;
        }
        Ok(value)
    }

    /// The device's memory as the driver and the pool see it, for an out-of-memory message:
    /// what the driver has free, and what the pool holds.
    pub fn memory_state(&self) -> Result<crate::MemoryState> {
        use cudarc::driver::sys::CUmemPool_attribute as A;
        let (free, total) = self.ctx.mem_get_info().map_err(|e| Error::cuda("cuMemGetInfo", e))?;
        Ok(crate::MemoryState {
            free: free as u64,
            total: total as u64,
            pool_reserved: self.pool_attribute(A::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, "RESERVED_MEM_CURRENT")?,
            pool_used: self.pool_attribute(A::CU_MEMPOOL_ATTR_USED_MEM_CURRENT, "USED_MEM_CURRENT")?,
        })
    }

    fn default_pool(&self) -> Result<cudarc::driver::sys::CUmemoryPool> {
        let mut pool: cudarc::driver::sys::CUmemoryPool = std::ptr::null_mut();
        unsafe { cudarc::driver::sys::cuDeviceGetDefaultMemPool(&mut pool, self.ctx.cu_device()) }
            .result()
            .map_err(|e| Error::cuda("cuDeviceGetDefaultMemPool", e))?;
        Ok(pool)
    }

    fn pool_attribute(&self, attr: cudarc::driver::sys::CUmemPool_attribute, name: &str) -> Result<u64> {
        let pool = self.default_pool()?;
        let mut value = 0u64;
        unsafe { cudarc::driver::sys::cuMemPoolGetAttribute(pool, attr, &mut value as *mut u64 as *mut std::ffi::c_void) }
            .result()
            .map_err(|e| Error::cuda(format!("cuMemPoolGetAttribute({name})"), e))?;
        Ok(value)
    }

    pub fn sync(&self, what: &str) -> Result<()> {
        self.stream.synchronize().map_err(|e| Error::cuda(format!("synchronize after {what}"), e))
    }

    /// y = gelu(x) over f32 or bf16 (u16 bits) elements, f32 math.
    pub fn gelu_fwd<T: RowElem>(&self, x: &CudaSlice<T>, y: &mut CudaSlice<T>) -> Result<()> {
        let n = x.len();
        check_len("gelu_fwd y", y.len(), n)?;
        let (n64, name) = (n as i64, format!("gelu_fwd_{}", T::NAME));
        let mut b = self.stream.launch_builder(self.f(&name)?);
        b.arg(x).arg(y).arg(&n64);
        unsafe { b.launch(elementwise_cfg(n, self.info.sm_count)) }.map_err(|e| Error::cuda(format!("launch {name} n={n}"), e))?;
        Ok(())
    }

    /// dx = dy · gelu'(x) (overwritten), f32 or bf16 elements.
    pub fn gelu_bwd<T: RowElem>(&self, x: &CudaSlice<T>, dy: &CudaSlice<T>, dx: &mut CudaSlice<T>) -> Result<()> {
        let n = x.len();
        check_len("gelu_bwd dy", dy.len(), n)?;
        check_len("gelu_bwd dx", dx.len(), n)?;
        let (n64, name) = (n as i64, format!("gelu_bwd_{}", T::NAME));
        let mut b = self.stream.launch_builder(self.f(&name)?);
        b.arg(x).arg(dy).arg(dx).arg(&n64);
        unsafe { b.launch(elementwise_cfg(n, self.info.sm_count)) }.map_err(|e| Error::cuda(format!("launch {name} n={n}"), e))?;
        Ok(())
    }

    /// Softmax over rows: v2 where the row fits (see [`crate::rows`]), else v1.
    pub fn softmax_fwd(&self, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>, rows: usize, cols: usize) -> Result<()> {
        self.softmax_fwd_with(RowKernel::for_width(cols), x, y, rows, cols)
    }

    /// Either version for f32 rows; v2 for bf16 ones (`T` = u16 bit patterns).
    pub fn softmax_fwd_with<T: RowElem>(&self, v: RowKernel, x: &CudaSlice<T>, y: &mut CudaSlice<T>, rows: usize, cols: usize) -> Result<()> {
        check_len("softmax x", x.len(), rows * cols)?;
        check_len("softmax y", y.len(), rows * cols)?;
        let name = row_entry::<T>(v, "softmax_fwd", cols)?;
        let (r, c) = (to_i32("rows", rows)?, to_i32("cols", cols)?);
        let mut b = self.stream.launch_builder(self.f(&name)?);
        b.arg(x).arg(y).arg(&r).arg(&c);
        unsafe { b.launch(row_cfg(rows)) }.map_err(|e| Error::cuda(format!("launch {name} {rows}x{cols}"), e))?;
        Ok(())
    }

    /// LayerNorm forward: v2 where the row fits, else v1.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_fwd(
        &self, x: &CudaSlice<f32>, gamma: &CudaSlice<f32>, beta: &CudaSlice<f32>, y: &mut CudaSlice<f32>,
        mean: &mut CudaSlice<f32>, rstd: &mut CudaSlice<f32>, rows: usize, c: usize, eps: f32,
    ) -> Result<()> {
        self.layernorm_fwd_with(RowKernel::for_width(c), x, gamma, beta, y, mean, rstd, rows, c, eps)
    }

    /// Either version for f32 activations; v2 for bf16 ones (x, y as u16 bit patterns; gamma,
    /// beta, mean, rstd f32), and for an f32 x with a bf16 y (autocast).
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_fwd_with<X: RowElem, Y: RowElem>(
        &self, v: RowKernel, x: &CudaSlice<X>, gamma: &CudaSlice<f32>, beta: &CudaSlice<f32>, y: &mut CudaSlice<Y>,
        mean: &mut CudaSlice<f32>, rstd: &mut CudaSlice<f32>, rows: usize, c: usize, eps: f32,
    ) -> Result<()> {
        for (w, l, n) in [("x", x.len(), rows * c), ("gamma", gamma.len(), c), ("beta", beta.len(), c), ("y", y.len(), rows * c), ("mean", mean.len(), rows), ("rstd", rstd.len(), rows)] {
            check_len(&format!("layernorm_fwd {w}"), l, n)?;
        }
        let name = row_entry2::<X, Y>(v, "layernorm_fwd", c)?;
        let (r, cc) = (to_i32("rows", rows)?, to_i32("C", c)?);
        let mut b = self.stream.launch_builder(self.f(&name)?);
        b.arg(x).arg(gamma).arg(beta).arg(y).arg(mean).arg(rstd).arg(&r).arg(&cc).arg(&eps);
        unsafe { b.launch(row_cfg(rows)) }.map_err(|e| Error::cuda(format!("launch {name} {rows}x{c}"), e))?;
        Ok(())
    }

    /// LayerNorm backward: dx, dgamma, dbeta (all overwritten); v2 where the row fits, else v1.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_bwd(
        &self, x: &CudaSlice<f32>, gamma: &CudaSlice<f32>, mean: &CudaSlice<f32>, rstd: &CudaSlice<f32>,
        dy: &CudaSlice<f32>, dx: &mut CudaSlice<f32>, dgamma: &mut CudaSlice<f32>, dbeta: &mut CudaSlice<f32>,
        rows: usize, c: usize,
    ) -> Result<()> {
        self.layernorm_bwd_with(RowKernel::for_width(c), x, gamma, mean, rstd, dy, dx, dgamma, dbeta, rows, c)
    }

    /// v1: a dx kernel and a dgamma/dbeta kernel. v2: one fused pass writing per-block partial
    /// dgamma/dbeta (a scratch buffer from the stream's pool), then a kernel that sums them.
    /// bf16 activations (x, dy, dx; v2 only): the parameter gradients stay f32. x and dx are
    /// `X`, dy is `Y` (the forward's output type: f32 x with bf16 dy under autocast).
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_bwd_with<X: RowElem, Y: RowElem>(
        &self, v: RowKernel, x: &CudaSlice<X>, gamma: &CudaSlice<f32>, mean: &CudaSlice<f32>, rstd: &CudaSlice<f32>,
        dy: &CudaSlice<Y>, dx: &mut CudaSlice<X>, dgamma: &mut CudaSlice<f32>, dbeta: &mut CudaSlice<f32>,
        rows: usize, c: usize,
    ) -> Result<()> {
        for (w, l, n) in [("x", x.len(), rows * c), ("gamma", gamma.len(), c), ("mean", mean.len(), rows), ("rstd", rstd.len(), rows), ("dy", dy.len(), rows * c), ("dx", dx.len(), rows * c), ("dgamma", dgamma.len(), c), ("dbeta", dbeta.len(), c)] {
            check_len(&format!("layernorm_bwd {w}"), l, n)?;
        }
        let (r, cc) = (to_i32("rows", rows)?, to_i32("C", c)?);
        let launch_err = |name: String| move |e| Error::cuda(format!("launch {name} {rows}x{c}"), e);
        if v == RowKernel::V1 {
            row_entry2::<X, Y>(v, "layernorm_bwd", c)?; // f32 only
            let mut b = self.stream.launch_builder(self.f("layernorm_bwd_dx_f32")?);
            b.arg(x).arg(gamma).arg(mean).arg(rstd).arg(dy).arg(dx).arg(&r).arg(&cc);
            unsafe { b.launch(row_cfg(rows)) }.map_err(launch_err("layernorm_bwd_dx_f32".into()))?;
            let mut b = self.stream.launch_builder(self.f("layernorm_bwd_dparams_f32")?);
            b.arg(x).arg(mean).arg(rstd).arg(dy).arg(dgamma).arg(dbeta).arg(&r).arg(&cc);
            let grid = (c.div_ceil(32).max(1) as u32, 1, 1);
            unsafe { b.launch(cfg(grid, (32, 8, 1))) }.map_err(launch_err("layernorm_bwd_dparams_f32".into()))?;
            return Ok(());
        }
        let name = row_entry2::<X, Y>(v, "layernorm_bwd", c)?;
        let f = self.f(&name)?;
        let (threads, smem) = ((32 * crate::rows::LN_BWD_V2_WARPS) as u32, 2 * c * 4);
        let resident = self.resident_blocks(&name, f, threads, smem)?;
        let blocks = crate::rows::ln_bwd_v2_blocks(rows, self.info.sm_count.max(1) as usize, resident as usize);
        // SAFETY: every block writes its whole row of 2C partials before the finish kernel reads them.
        let mut partial = unsafe { self.stream.alloc::<f32>((blocks * 2 * c).max(1)) }
            .map_err(|e| Error::cuda(format!("{name}: allocating {blocks}x{} partial sums", 2 * c), e))?;
        let launch = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: smem as u32 };
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(gamma).arg(mean).arg(rstd).arg(dy).arg(dx).arg(&mut partial).arg(&r).arg(&cc);
        unsafe { b.launch(launch) }.map_err(launch_err(name.clone()))?;
        let nb = blocks as i32;
        let mut b = self.stream.launch_builder(self.f("layernorm_bwd_v2_finish_f32")?);
        b.arg(&partial).arg(dgamma).arg(dbeta).arg(&nb).arg(&cc);
        let grid = ((2 * c).div_ceil(32).max(1) as u32, 1, 1);
        unsafe { b.launch(cfg(grid, (32, 8, 1))) }.map_err(launch_err("layernorm_bwd_v2_finish_f32".into()))?;
        Ok(())
    }

    /// One AdamW step over flat buffers; `step` is 1-based.
    #[allow(clippy::too_many_arguments)]
    pub fn adamw(
        &self, p: &mut CudaSlice<f32>, g: &CudaSlice<f32>, m: &mut CudaSlice<f32>, v: &mut CudaSlice<f32>,
        h: crate::reference::AdamWParams,
    ) -> Result<()> {
        let n = p.len();
        for (w, l) in [("g", g.len()), ("m", m.len()), ("v", v.len())] {
            check_len(&format!("adamw {w}"), l, n)?;
        }
        let (bc1, bc2) = h.bias_corrections();
        let n64 = n as i64;
        let a = [h.lr as f32, h.b1 as f32, h.b2 as f32, h.eps as f32, h.wd as f32, bc1 as f32, bc2 as f32];
        let mut b = self.stream.launch_builder(self.f("adamw_f32")?);
        b.arg(p).arg(g).arg(m).arg(v).arg(&n64);
        for x in &a {
            b.arg(x);
        }
        unsafe { b.launch(elementwise_cfg(n, self.info.sm_count)) }.map_err(|e| Error::cuda(format!("launch adamw_f32 n={n}"), e))?;
        Ok(())
    }

    /// Row-major C[m,n] = A[m,k] B[k,n] (+ bias[n]), f32.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_f32(
        &self, version: MatmulF32, a: &CudaSlice<f32>, b: &CudaSlice<f32>, bias: Option<&CudaSlice<f32>>,
        c: &mut CudaSlice<f32>, m: usize, n: usize, k: usize,
    ) -> Result<()> {
        let (name, tile, block) = match version {
            MatmulF32::V1Tiled => ("matmul_v1_f32", 32usize, (32u32, 32u32, 1u32)),
            MatmulF32::V2Register => ("matmul_v2_f32", 128, (256, 1, 1)),
        };
        self.launch_matmul(name, tile, block, a, b, bias, c, None, (m, n, k))
    }

    /// v2 with the GELU epilogue: C = gelu(A B + bias) and `pre` = A B + bias, f32 [m, n] each.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_f32_gelu(
        &self, a: &CudaSlice<f32>, b: &CudaSlice<f32>, bias: Option<&CudaSlice<f32>>, c: &mut CudaSlice<f32>,
        pre: &mut CudaSlice<f32>, m: usize, n: usize, k: usize,
    ) -> Result<()> {
        self.launch_matmul("matmul_v2_f32_gelu", 128, (256, 1, 1), a, b, bias, c, Some(pre), (m, n, k))
    }

    /// `batches` products C[i] = A[i] B[i] (+ bias) in one launch of v2: A [batches, m, k], B
    /// [batches, k, n] (or one [k, n] for all when `shared_b`), C [batches, m, n], back to back.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_f32_batched(
        &self, a: &CudaSlice<f32>, b: &CudaSlice<f32>, shared_b: bool, bias: Option<&CudaSlice<f32>>,
        c: &mut CudaSlice<f32>, batches: usize, m: usize, n: usize, k: usize,
    ) -> Result<()> {
        self.matmul_f32_batched_stored(Stored::NN, a, b, shared_b, bias, c, batches, m, n, k)
    }

    /// As [`Self::matmul_f32_batched`], with one operand stored transposed (`stored`): A as
    /// [batches, k, m] (TN) or B as [batches, n, k] (NT, one [n, k] when `shared_b`), read in place.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_f32_batched_stored(
        &self, stored: Stored, a: &CudaSlice<f32>, b: &CudaSlice<f32>, shared_b: bool, bias: Option<&CudaSlice<f32>>,
        c: &mut CudaSlice<f32>, batches: usize, m: usize, n: usize, k: usize,
    ) -> Result<()> {
        let name = stored.entry();
        if batches == 0 {
            return Ok(());
        }
        let shape = format!("{name} {batches}x M={m} N={n} K={k}");
        let (sa, sb, sc) = (m * k, if shared_b { 0 } else { k * n }, m * n);
        check_len(&format!("{shape}: A"), a.len(), batches * sa)?;
        check_len(&format!("{shape}: B"), b.len(), if shared_b { k * n } else { batches * sb })?;
        check_len(&format!("{shape}: C"), c.len(), batches * sc)?;
        if let Some(bias) = bias {
            check_len(&format!("{shape}: bias"), bias.len(), n)?;
        }
        let (mi, ni, ki) = (to_i32("M", m)?, to_i32("N", n)?, to_i32("K", k)?);
        let (grid_y, grid_z) = (m.div_ceil(128), batches);
        if grid_y > 65535 || grid_z > 65535 {
            return Err(Error::Other(format!("{shape}: M or the batch too large for the grid")));
        }
        let grid = (n.div_ceil(128).max(1) as u32, grid_y.max(1) as u32, grid_z.max(1) as u32);
        let (sa, sb, sc) = (sa as i64, sb as i64, sc as i64);
        let null: u64 = 0;
        let mut lb = self.stream.launch_builder(self.f(name)?);
        lb.arg(a).arg(b);
        match bias {
            Some(bias) => lb.arg(bias),
            None => lb.arg(&null),
        };
        lb.arg(c).arg(&mi).arg(&ni).arg(&ki).arg(&sa).arg(&sb).arg(&sc);
        unsafe { lb.launch(cfg(grid, (256, 1, 1))) }.map_err(|e| Error::cuda(format!("launch {shape} grid={grid:?}"), e))?;
        Ok(())
    }

    /// Row-major C[m,n] = A[m,k] B[k,n] (+ bias[n], f32), bf16 in (bit patterns), f32 accumulate, f32 out.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_bf16_f32out(
        &self, a: &CudaSlice<u16>, b: &CudaSlice<u16>, bias: Option<&CudaSlice<f32>>, c: &mut CudaSlice<f32>,
        m: usize, n: usize, k: usize,
    ) -> Result<()> {
        self.launch_matmul("matmul_v3_bf16_f32out", 128, (256, 1, 1), a, b, bias, c, None, (m, n, k))
    }

    /// As [`Self::matmul_bf16_f32out`] with a bf16 output.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_bf16_bf16out(
        &self, a: &CudaSlice<u16>, b: &CudaSlice<u16>, bias: Option<&CudaSlice<f32>>, c: &mut CudaSlice<u16>,
        m: usize, n: usize, k: usize,
    ) -> Result<()> {
        self.launch_matmul("matmul_v3_bf16_bf16out", 128, (256, 1, 1), a, b, bias, c, None, (m, n, k))
    }

    /// `pre`: the GELU entries' second output, pushed after C.
    #[allow(clippy::too_many_arguments)]
    fn launch_matmul<TI, TO>(
        &self, name: &str, tile: usize, block: Dim, a: &CudaSlice<TI>, b: &CudaSlice<TI>,
        bias: Option<&CudaSlice<f32>>, c: &mut CudaSlice<TO>, pre: Option<&mut CudaSlice<TO>>, (m, n, k): (usize, usize, usize),
    ) -> Result<()> {
        let shape = format!("{name} M={m} N={n} K={k}");
        check_len(&format!("{shape}: A"), a.len(), m * k)?;
        check_len(&format!("{shape}: B"), b.len(), k * n)?;
        check_len(&format!("{shape}: C"), c.len(), m * n)?;
        if let Some(pre) = &pre {
            check_len(&format!("{shape}: pre"), pre.len(), m * n)?;
        }
        if let Some(bias) = bias {
            check_len(&format!("{shape}: bias"), bias.len(), n)?;
        }
        let (mi, ni, ki) = (to_i32("M", m)?, to_i32("N", n)?, to_i32("K", k)?);
        let grid_y = m.div_ceil(tile);
        if grid_y > 65535 {
            return Err(Error::Other(format!("{shape}: M too large for grid.y")));
        }
        let grid = (n.div_ceil(tile).max(1) as u32, grid_y.max(1) as u32, 1);
        let null: u64 = 0; // a null `const float*` for "no bias"
        let mut lb = self.stream.launch_builder(self.f(name)?);
        lb.arg(a).arg(b);
        match bias {
            Some(bias) => lb.arg(bias),
            None => lb.arg(&null),
        };
        lb.arg(c);
        if let Some(pre) = pre {
            lb.arg(pre);
        }
        lb.arg(&mi).arg(&ni).arg(&ki);
        unsafe { lb.launch(cfg(grid, block)) }.map_err(|e| Error::cuda(format!("launch {shape} grid={grid:?}"), e))?;
        Ok(())
    }
}
