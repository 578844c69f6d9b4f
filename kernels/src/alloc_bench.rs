//! Device memory reuse, measured: what one training step's allocations cost with each way of
//! getting device memory, so the CUDA backend can pick one on evidence (the CUDA-backend issue
//! asks: cudarc's stream-ordered pool or our own caching allocator?).
//!
//! A step replays the buffers of a GPT-2 train step (`step_buffers`): the forward allocates every
//! activation, the backward allocates a gradient per activation and frees both, last first, and
//! the step ends with a stream synchronize (a loss read back). No kernel touches the memory: the
//! figure is the allocator's own cost per step, host wall clock, median over the timed steps.
//!
//! - `cuMemAlloc`: cuMemAlloc/cuMemFree on every buffer (the naive baseline; both synchronize).
//! - `pool, release 0`: cuMemAllocAsync/cuMemFreeAsync on the device's default pool as cudarc uses
//!   it; the pool's release threshold is 0, so each synchronize hands the memory back to the driver.
//! - `pool, keep`: the same pool with the release threshold at its maximum: freed memory stays
//!   reserved and is reused.
//! - `caching`: our free lists, one per size class (2 MiB granules), on top of cuMemAlloc: after
//!   the first step nothing reaches the driver.

use crate::device::Gpu;
use crate::{Error, Result};
use cudarc::driver::{result, sys};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct AllocTiming {
    pub strategy: &'static str,
    /// Median over the timed steps, microseconds.
    pub step_us: f64,
    /// The first step (cold: nothing reserved yet).
    pub first_step_us: f64,
    pub buffers_per_step: usize,
    pub mib_per_step: f64,
    pub error: Option<String>,
}

/// Sizes in bytes of the buffers one train step of a GPT-2 allocates (f32 activations; logits
/// in chunks of `logit_rows` rows, as a fused cross-entropy would), in allocation order.
pub fn step_buffers(layers: usize, tokens: usize, width: usize, vocab: usize, logit_rows: usize) -> Vec<usize> {
    let act = |n: usize| n * 4;
    let mut v = vec![act(tokens * width)]; // embeddings
    for _ in 0..layers {
        v.extend([
            act(tokens * width),     // ln1
            act(3 * tokens * width), // qkv
            act(tokens * width),     // attention out
            act(12 * tokens),        // attention logsumexp (12 heads): small buffers count too
            act(tokens * width),     // projection + residual
            act(tokens * width),     // ln2
            act(4 * tokens * width), // fc
            act(4 * tokens * width), // gelu
            act(tokens * width),     // fc projection + residual
        ]);
    }
    v.push(act(tokens * width)); // final layernorm
    let rows = logit_rows.clamp(1, tokens);
    v.extend(std::iter::repeat_n(act(rows * vocab), tokens.div_ceil(rows)));
    v
}

#[derive(Clone, Copy, PartialEq)]
enum Strategy {
    Sync,
    PoolRelease,
    PoolKeep,
    Caching,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::Sync => "cuMemAlloc",
            Strategy::PoolRelease => "pool, release 0",
            Strategy::PoolKeep => "pool, keep",
            Strategy::Caching => "caching",
        }
    }
}

const GRANULE: usize = 2 << 20;

/// Our caching allocator: freed blocks wait in a list per rounded size and are handed out again.
#[derive(Default)]
struct Caching {
    free: HashMap<usize, Vec<sys::CUdeviceptr>>,
}

impl Caching {
    fn class(bytes: usize) -> usize {
        bytes.div_ceil(GRANULE).max(1) * GRANULE
    }
    fn alloc(&mut self, bytes: usize) -> Result<sys::CUdeviceptr> {
        let class = Caching::class(bytes);
        match self.free.get_mut(&class).and_then(Vec::pop) {
            Some(p) => Ok(p),
            None => unsafe { result::malloc_sync(class) }.map_err(|e| Error::cuda("cuMemAlloc (caching)", e)),
        }
    }
    fn free(&mut self, ptr: sys::CUdeviceptr, bytes: usize) {
        self.free.entry(Caching::class(bytes)).or_default().push(ptr);
    }
    fn release(self) -> Result<()> {
        for p in self.free.into_values().flatten() {
            unsafe { result::free_sync(p) }.map_err(|e| Error::cuda("cuMemFree (caching)", e))?;
        }
        Ok(())
    }
}

/// One step of `sizes` with `s`; returns its wall time in microseconds.
fn step(gpu: &Gpu, s: Strategy, sizes: &[usize], cache: &mut Caching) -> Result<f64> {
    let stream = gpu.stream.cu_stream();
    let alloc = |cache: &mut Caching, bytes: usize| -> Result<sys::CUdeviceptr> {
        unsafe {
            match s {
                Strategy::Sync => result::malloc_sync(bytes).map_err(|e| Error::cuda("cuMemAlloc", e)),
                Strategy::PoolRelease | Strategy::PoolKeep => result::malloc_async(stream, bytes).map_err(|e| Error::cuda("cuMemAllocAsync", e)),
                Strategy::Caching => cache.alloc(bytes),
            }
        }
    };
    let free = |cache: &mut Caching, ptr: sys::CUdeviceptr, bytes: usize| -> Result<()> {
        unsafe {
            match s {
                Strategy::Sync => result::free_sync(ptr).map_err(|e| Error::cuda("cuMemFree", e)),
                Strategy::PoolRelease | Strategy::PoolKeep => result::free_async(ptr, stream).map_err(|e| Error::cuda("cuMemFreeAsync", e)),
                Strategy::Caching => {
                    cache.free(ptr, bytes);
                    Ok(())
                }
            }
        }
    };
    let t = Instant::now();
    let mut live = Vec::with_capacity(sizes.len());
    for &b in sizes {
        live.push((alloc(cache, b)?, b));
    }
    while let Some((act, b)) = live.pop() {
        let grad = alloc(cache, b)?;
        free(cache, grad, b)?;
        free(cache, act, b)?;
    }
    gpu.sync("allocation step")?;
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

/// Every strategy on the same step, `steps` timed steps each after a cold first one.
pub fn alloc_bench(gpu: &Gpu, sizes: &[usize], steps: usize) -> Result<Vec<AllocTiming>> {
    gpu.ctx.bind_to_thread().map_err(|e| Error::cuda("bind context", e))?;
    let mut out = Vec::new();
    for s in [Strategy::Sync, Strategy::PoolRelease, Strategy::PoolKeep, Strategy::Caching] {
        let run = || -> Result<(f64, f64)> {
            gpu.set_pool_release_threshold(if s == Strategy::PoolKeep { u64::MAX } else { 0 })?;
            let mut cache = Caching::default();
            let first = step(gpu, s, sizes, &mut cache)?;
            let mut times = (0..steps.max(1)).map(|_| step(gpu, s, sizes, &mut cache)).collect::<Result<Vec<f64>>>()?;
            cache.release()?;
            gpu.set_pool_release_threshold(0)?;
            times.sort_by(f64::total_cmp);
            Ok((first, times[times.len() / 2]))
        };
        let (first, median, error) = match run() {
            Ok((f, m)) => (f, m, None),
            Err(e) => (f64::NAN, f64::NAN, Some(e.to_string())),
        };
        out.push(AllocTiming {
            strategy: s.name(),
            step_us: median,
            first_step_us: first,
            buffers_per_step: 2 * sizes.len(),
            mib_per_step: 2.0 * sizes.iter().sum::<usize>() as f64 / (1 << 20) as f64,
            error,
        });
    }
    Ok(out)
}
