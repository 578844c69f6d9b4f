//! Matmul timing with CUDA events (warm-up, median of many), our ladder against
//! cuBLAS in the same process. Inputs are random, never zeros.

use crate::device::{Gpu, MatmulF32, Stored};
use crate::{Error, Result};
use cudarc::cublas::{result as cublas_result, sys as cublas_sys, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{sys, CudaSlice, DevicePtr, DevicePtrMut};
use half::bf16;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub name: String,
    pub shape: (usize, usize, usize),
    pub median_ms: f64,
    pub tflops: f64,
    /// Against cuBLAS of the same input precision, when it ran.
    pub pct_of_cublas: Option<f64>,
    pub error: Option<String>,
}

pub const WARMUP: usize = 3;
pub const ITERS: usize = 20;

/// Median over `ITERS` event-timed runs of `f`, after `WARMUP` untimed ones.
pub fn time_ms(gpu: &Gpu, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..WARMUP {
        f()?;
    }
    gpu.sync("warm-up")?;
    let ev = |what| gpu.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| Error::cuda(what, e));
    let mut times = Vec::with_capacity(ITERS);
    for _ in 0..ITERS {
        let (start, end) = (ev("event create")?, ev("event create")?);
        start.record(&gpu.stream).map_err(|e| Error::cuda("event record", e))?;
        f()?;
        end.record(&gpu.stream).map_err(|e| Error::cuda("event record", e))?;
        times.push(start.elapsed_ms(&end).map_err(|e| Error::cuda("event elapsed (kernel fault?)", e))? as f64);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(times[ITERS / 2])
}

fn rand_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(0.001f32..1.0) * if rng.gen::<bool>() { 1.0 } else { -1.0 }).collect()
}

pub fn cublas_available() -> bool {
    unsafe { cublas_sys::is_culib_present() }
}

/// Row-major C = A B through column-major cuBLAS: C^T = B^T A^T, i.e. swap operands and m/n.
fn cublas_sgemm(blas: &CudaBlas, a: &CudaSlice<f32>, b: &CudaSlice<f32>, c: &mut CudaSlice<f32>, (m, n, k): (usize, usize, usize)) -> Result<()> {
    let cfg = GemmConfig {
        transa: cublas_sys::cublasOperation_t::CUBLAS_OP_N,
        transb: cublas_sys::cublasOperation_t::CUBLAS_OP_N,
        m: n as i32,
        n: m as i32,
        k: k as i32,
        alpha: 1.0f32,
        lda: n as i32,
        ldb: k as i32,
        beta: 0.0f32,
        ldc: n as i32,
    };
    unsafe { blas.gemm(cfg, b, a, c) }.map_err(|e| Error::cuda("cublasSgemm", e))
}

/// bf16 in, f32 compute, bf16 out (cublasGemmEx), same operand swap as above.
fn cublas_bf16(blas: &CudaBlas, gpu: &Gpu, a: &CudaSlice<u16>, b: &CudaSlice<u16>, c: &mut CudaSlice<u16>, (m, n, k): (usize, usize, usize)) -> Result<()> {
    let (alpha, beta) = (1.0f32, 0.0f32);
    let (pa, _ra) = a.device_ptr(&gpu.stream);
    let (pb, _rb) = b.device_ptr(&gpu.stream);
    let (pc, _rc) = c.device_ptr_mut(&gpu.stream);
    let bf = cublas_sys::cudaDataType_t::CUDA_R_16BF;
    unsafe {
        cublas_result::gemm_ex(
            *blas.handle(),
            cublas_sys::cublasOperation_t::CUBLAS_OP_N,
            cublas_sys::cublasOperation_t::CUBLAS_OP_N,
            n as i32, m as i32, k as i32,
            &alpha as *const f32 as *const _,
            pb as *const _, bf, n as i32,
            pa as *const _, bf, k as i32,
            &beta as *const f32 as *const _,
            pc as *mut _, bf, n as i32,
            cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| Error::cuda("cublasGemmEx bf16", e))
}

/// Times every matmul version and cuBLAS at each (M, N, K).
pub fn matmul_bench(gpu: &Gpu, shapes: &[(usize, usize, usize)]) -> Result<Vec<Timing>> {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let blas = if cublas_available() { Some(CudaBlas::new(gpu.stream.clone()).map_err(|e| Error::cuda("cublasCreate", e))?) } else { None };
    let mut out = Vec::new();
    for &(m, n, k) in shapes {
        let flops = 2.0 * m as f64 * n as f64 * k as f64;
        let (a, b) = (rand_vec(&mut rng, m * k), rand_vec(&mut rng, k * n));
        let up = |v: &[f32]| gpu.stream.clone_htod(v).map_err(|e| Error::cuda("upload", e));
        let up16 = |v: &[f32]| {
            let bits: Vec<u16> = v.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
            gpu.stream.clone_htod(&bits).map_err(|e| Error::cuda("upload", e))
        };
        let (ga, gb, ga16, gb16) = (up(&a)?, up(&b)?, up16(&a)?, up16(&b)?);
        let mut c32 = up(&vec![f32::NAN; m * n])?;
        let mut c16 = gpu.stream.clone_htod(&vec![0x7fc0u16; m * n]).map_err(|e| Error::cuda("upload", e))?;

        let mut row = |name: &str, r: Result<f64>| {
            let (median_ms, error) = match r {
                Ok(ms) => (ms, None),
                Err(e) => (f64::NAN, Some(e.to_string())),
            };
            out.push(Timing { name: name.into(), shape: (m, n, k), median_ms, tflops: flops / (median_ms * 1e-3) / 1e12, pct_of_cublas: None, error });
        };
        let s = (m, n, k);
        if let Some(blas) = &blas {
            row("cublas_sgemm", time_ms(gpu, || cublas_sgemm(blas, &ga, &gb, &mut c32, s)));
            row("cublas_bf16_gemm_ex", time_ms(gpu, || cublas_bf16(blas, gpu, &ga16, &gb16, &mut c16, s)));
        }
        row("matmul_v1_f32", time_ms(gpu, || gpu.matmul_f32(MatmulF32::V1Tiled, &ga, &gb, None, &mut c32, m, n, k)));
        row("matmul_v2_f32", time_ms(gpu, || gpu.matmul_f32(MatmulF32::V2Register, &ga, &gb, None, &mut c32, m, n, k)));
        // v2 reading a transposed operand in place (backward's dY·Wᵀ and Xᵀ·dY); same FLOPs.
        for stored in [Stored::NT, Stored::TN] {
            row(stored.entry(), time_ms(gpu, || gpu.matmul_f32_batched_stored(stored, &ga, &gb, true, None, &mut c32, 1, m, n, k)));
        }
        row("matmul_v3_bf16_f32out", time_ms(gpu, || gpu.matmul_bf16_f32out(&ga16, &gb16, None, &mut c32, m, n, k)));
        row("matmul_v3_bf16_bf16out", time_ms(gpu, || gpu.matmul_bf16_bf16out(&ga16, &gb16, None, &mut c16, m, n, k)));
        for (name, r) in crate::matmul_tc::timings(gpu, &ga16, &gb16, &mut c32, &mut c16, s) {
            row(&name, r);
        }
    }
    // Percent of cuBLAS at the same shape and input precision.
    let base: Vec<(String, (usize, usize, usize), f64)> = out.iter().filter(|t| t.name.starts_with("cublas")).map(|t| (t.name.clone(), t.shape, t.tflops)).collect();
    for t in out.iter_mut().filter(|t| !t.name.starts_with("cublas")) {
        let want = if t.name.contains("bf16") { "cublas_bf16_gemm_ex" } else { "cublas_sgemm" };
        if let Some((_, _, tf)) = base.iter().find(|(n, s, _)| n == want && *s == t.shape) {
            if tf.is_finite() && *tf > 0.0 {
                t.pct_of_cublas = Some(100.0 * t.tflops / tf);
            }
        }
    }
    Ok(out)
}
