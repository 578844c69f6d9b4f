//! `instructgpt selftest --device cuda`: every kernel against CPU references, then
//! matmul timings against cuBLAS. Exits non-zero on any FAIL or when no GPU is usable.

use anyhow::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct SelftestArgs {
    /// Only `cuda` for now.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Skip the matmul timings.
    #[arg(long)]
    pub no_bench: bool,
    /// Only the tensor-core matmul checks (v4; v5, v6 on Hopper), the matmul timings and the
    /// bf16 GPT-2 train step (its matmuls follow IGPT_MATMUL, its attention backward
    /// IGPT_ATTN_BWD): a process of its own for the newest kernels, whose fault would poison
    /// the CUDA context for every later check.
    #[arg(long, conflicts_with = "attention_only")]
    pub matmul_only: bool,
    /// Only the attention kernels' checks and timings and the bf16 GPT-2 train step (its
    /// attention backward IGPT_ATTN_BWD): a process of its own for the attention backward
    /// versions no GPU has run yet (v3, v4).
    #[arg(long)]
    pub attention_only: bool,
    /// Only the engine's checks (its ops against the CPU, the GPT-2 train step and decode), no
    /// kernel checks or timings: what the emulated GPU (`kernels emulate`) runs in CI.
    #[arg(long, conflicts_with_all = ["attention_only", "matmul_only"])]
    pub engine_only: bool,
    /// Also write the JSON object to this file (the tables still print).
    #[arg(long)]
    pub json_out: Option<std::path::PathBuf>,
}

pub fn run(args: SelftestArgs) -> Result<()> {
    if args.device != "cuda" {
        bail!("selftest: unknown device {:?} (only `cuda`)", args.device);
    }
    imp::run(args)
}

#[cfg(not(feature = "cuda"))]
mod imp {
    pub fn run(_args: super::SelftestArgs) -> anyhow::Result<()> {
        Err(kernels::Error::NoCudaFeature.into())
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use super::SelftestArgs;
    use anyhow::{bail, Result};
    use kernels::{bench, compile, selftest, toolkit};

    fn libs(prefix: &str) -> String {
        let l = toolkit::find_libs(prefix);
        if l.is_empty() { "not found in the usual dirs".into() } else { l.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ") }
    }

    /// The engine's own CUDA storage: f32, bf16 and i64 tensors (one a strided view) go to the
    /// device and back unchanged.
    fn engine_round_trip() -> selftest::Check {
        use engine::{DType, Device, Tensor};
        use rand::SeedableRng;
        let run = || -> engine::Result<f64> {
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let x = Tensor::randn(&[33, 65], 0.0, 1.0, &mut rng).t()?;
            let mut worst = 0f64;
            for dtype in [DType::F32, DType::BF16, DType::I64] {
                let host = x.mul_scalar(100.0)?.to_dtype(dtype)?;
                let back = host.to_device(Device::Cuda(0))?.to_device(Device::Cpu)?;
                let (a, b) = (host.to_vec_f32()?, back.to_vec_f32()?);
                worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs() as f64).fold(worst, f64::max);
            }
            Ok(worst)
        };
        let shape = "65x33 view; f32, bf16, i64".to_string();
        match run() {
            Ok(err) => selftest::Check::new("engine tensor host<->device", shape, "exact", kernels::reference::ErrStats { max_rel: err, ..Default::default() }, 0.0),
            Err(e) => selftest::Check::failed("engine tensor host<->device", shape, "exact", e.to_string()),
        }
    }

    /// The engine's ops on cuda:0 against the same ops on the CPU (engine::conformance): each
    /// output and input gradient, error relative to the largest CPU value of that tensor.
    /// Errors of a device result against the CPU's, relative to the CPU tensor's peak; a length
    /// mismatch is an error.
    fn against_cpu(got: &[f32], want: &[f32]) -> std::result::Result<kernels::reference::ErrStats, String> {
        if got.len() != want.len() {
            return Err(format!("{} elements, the CPU gives {}", got.len(), want.len()));
        }
        let peak = want.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
        let r = kernels::reference::Ref { value: want.iter().map(|&x| x as f64).collect(), scale: vec![peak; want.len()] };
        Ok(kernels::reference::compare(got, &r))
    }

    fn engine_ops() -> Vec<selftest::Check> {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        let mut out = Vec::new();
        for case in engine::conformance::compare_devices(engine::Device::Cuda(0), seed) {
            let name = format!("engine {}", case.op);
            match case.results {
                Err(e) => out.push(selftest::Check::failed(&name, case.shape, case.precision, e.to_string())),
                Ok(rows) => {
                    for (what, got, want) in rows {
                        let row = format!("{name} ({what})");
                        // bf16 operands through a chain of matmuls (a layer's weight gradient sums only
                        // 10 rows): errors reach ~1.3e-2 of the peak without any bug; a bug gives O(1).
                        let tol = if case.precision == "bf16" { 3.0 * selftest::TOL_BF16 } else { selftest::TOL_F32 };
                        out.push(match against_cpu(&got, &want) {
                            Ok(st) => selftest::Check::new(&row, case.shape.clone(), case.precision, st, tol),
                            Err(e) => selftest::Check::failed(&row, case.shape.clone(), case.precision, e),
                        });
                    }
                }
            }
        }
        out
    }

    /// Tolerance of a whole-model check: f32 differs from the CPU by summation order only (1e-4
    /// relative to the tensor's peak); bf16 autocast by its roundings, as the bf16 op cases.
    fn model_tol(bf16: bool) -> (&'static str, f64) {
        if bf16 {
            ("bf16", 3.0 * selftest::TOL_BF16)
        } else {
            ("f32", 1e-4)
        }
    }

    /// One GPT-2 training step (2 layers, head dim 64: the flash kernels) on cuda:0 against the
    /// CPU: the loss, the worst gradient and the worst parameter after AdamW, each by max error.
    /// With `bf16`, under autocast (bf16 activations; the CPU's f32 step is the reference).
    fn gpt2_step(bf16: bool) -> Vec<selftest::Check> {
        let shape = "2 layers, 2 heads of 64, B2 x T33, vocab 300".to_string();
        let (precision, tol) = model_tol(bf16);
        let config = models::Gpt2Config::custom(2, 2, 128, 64, 300);
        let rows = match models::device_check::train_step(engine::Device::Cuda(0), config, 2, 33, 11, bf16) {
            Ok(rows) => rows,
            Err(e) => return vec![selftest::Check::failed("engine GPT-2 train step", shape, precision, e.to_string())],
        };
        let mut worst: std::collections::BTreeMap<&str, (kernels::reference::ErrStats, String)> = Default::default();
        for (what, got, want) in &rows {
            let group = if what == "loss" { "loss" } else if what.starts_with("grad") { "gradients" } else { "parameters after AdamW" };
            let st = match against_cpu(got, want) {
                Ok(st) => st,
                Err(e) => return vec![selftest::Check::failed("engine GPT-2 train step", format!("{shape}; {what}"), precision, e)],
            };
            let e = worst.entry(group).or_insert((st, what.clone()));
            // A tensor with NaN/inf stays the group's worst whatever comes after it.
            if (st.non_finite > 0, st.max_rel) > (e.0.non_finite > 0, e.0.max_rel) {
                *e = (st, what.clone());
            }
        }
        worst.into_iter().map(|(group, (st, what))| selftest::Check::new(&format!("engine GPT-2 train step ({group})"), format!("{shape}; worst: {what}"), precision, st, tol)).collect()
    }

    /// Sampling's path: a left-padded batch through the KV cache on cuda:0 against the CPU, one
    /// row per call; with `bf16` under autocast, as `--bf16` rollouts run. Head dim 16 takes the
    /// composed attention; 32 the flash and decode kernels (the cache read in place, bf16 under
    /// autocast).
    fn gpt2_decode(bf16: bool, head_dim: usize) -> Vec<selftest::Check> {
        let shape = format!("2 layers, 2 heads of {head_dim}, B2, prefix 7 (3 padded) + 4 steps, vocab 300");
        let (precision, tol) = model_tol(bf16);
        match models::device_check::decode(engine::Device::Cuda(0), models::Gpt2Config::custom(2, 2, 2 * head_dim, 64, 300), 12, bf16) {
            Err(e) => vec![selftest::Check::failed("engine GPT-2 decode", shape, precision, e.to_string())],
            Ok(rows) => rows
                .into_iter()
                .map(|(what, got, want)| {
                    let row = format!("engine GPT-2 decode ({what})");
                    match against_cpu(&got, &want) {
                        Ok(st) => selftest::Check::new(&row, shape.clone(), precision, st, tol),
                        Err(e) => selftest::Check::failed(&row, shape.clone(), precision, e),
                    }
                })
                .collect(),
        }
    }

    pub fn run(args: SelftestArgs) -> Result<()> {
        // Shared with the engine (one stream). Clear errors: no libcuda / no device / no libnvrtc / compile log.
        let gpu = engine::cuda::gpu(0)?;
        let nvrtc = compile::nvrtc_version()?;
        let include = toolkit::find_include_dir().map(|p| p.display().to_string()).unwrap_or_else(|e| e.to_string());
        let mut checks = Vec::new();
        let mut attention_timings = Vec::new();
        if args.attention_only || args.matmul_only {
            checks.extend(if args.attention_only { kernels::attention::checks(&gpu) } else { kernels::matmul_tc::checks(&gpu) });
            if args.attention_only && !args.no_bench {
                // Timed before the engine's step on the newest versions (a fault there would
                // poison the context for the timings).
                attention_timings = kernels::attention::bench(&gpu);
            }
            // The engine's bf16 GPT-2 step on the versions the environment picks (IGPT_MATMUL,
            // IGPT_TILE_N, IGPT_ATTN_BWD), named in the rows.
            let v = gpu.engine_matmul().map(|v| format!("{v:?}")).unwrap_or_else(|e| e.to_string());
            let a = kernels::attention::BwdBf16::for_engine().map(|a| format!("{a:?}")).unwrap_or_else(|e| e.to_string());
            let f = kernels::attention::FwdBf16::for_engine().map(|f| format!("{f:?}")).unwrap_or_else(|e| e.to_string());
            let tiles = std::env::var("IGPT_TILE_N").unwrap_or_else(|_| "256".into());
            checks.extend(gpt2_step(true).into_iter().map(|mut c| {
                c.shape = format!("{}; matmuls {v} (tiles {tiles}), attention forward {f}, backward {a}", c.shape);
                c
            }));
        } else {
            if !args.engine_only {
                checks.extend(selftest::run_checks(&gpu)?);
            }
            checks.push(engine_round_trip());
            checks.extend(engine_ops());
            for bf16 in [false, true] {
                checks.extend(gpt2_step(bf16));
                checks.extend(gpt2_decode(bf16, 16));
                checks.extend(gpt2_decode(bf16, 32));
            }
        }
        let timings = if args.no_bench || args.attention_only || args.engine_only {
            Vec::new()
        } else {
            // 4096^3, GPT-2 small's MLP up- and down-projections at 8 x 1024 tokens (N = 768: the
            // narrow tiles' case), and two of its weight gradients there (few tiles, K = the
            // tokens: split-K's case).
            bench::matmul_bench(&gpu, &[(4096, 4096, 4096), (8192, 3072, 768), (8192, 768, 3072), (768, 768, 8192), (768, 3072, 8192)])?
        };
        if !(args.no_bench || args.matmul_only || args.attention_only || args.engine_only) {
            attention_timings = kernels::attention::bench(&gpu);
        }
        let failed = checks.iter().filter(|c| !c.pass).count();
        let report = serde_json::to_string_pretty(&serde_json::json!({
            "device": gpu.info, "nvrtc": nvrtc, "include_dir": include,
            "libcuda": libs("libcuda.so"), "libnvrtc": libs("libnvrtc.so"), "libcublas": libs("libcublas.so"),
            "cublas_loaded": bench::cublas_available(),
            "checks": checks, "timings": timings, "attention_timings": attention_timings, "failed": failed,
        }))?;
        if let Some(path) = &args.json_out {
            engine::safetensors::write_atomic(path, report.as_bytes())?;
        }
        if args.json {
            println!("{report}");
        } else {
            let i = &gpu.info;
            println!("device: {} (cc {}.{}, {} SMs), driver {}, kernels built for {}", i.name, i.compute_capability.0, i.compute_capability.1, i.sm_count, i.driver_version, i.arch);
            println!("NVRTC {}.{}, include dir: {include}", nvrtc.0, nvrtc.1);
            println!("libcuda: {}\nlibnvrtc: {}\nlibcublas: {} (loadable: {})", libs("libcuda.so"), libs("libnvrtc.so"), libs("libcublas.so"), bench::cublas_available());
            println!("\n| kernel | shape | precision | max rel err | norm rel err | non-finite | tol | result |");
            println!("|---|---|---|---:|---:|---:|---:|---|");
            for c in &checks {
                let res = match &c.error { Some(e) => format!("FAIL ({e})"), None => (if c.pass { "PASS" } else { "FAIL" }).to_string() };
                println!("| {} | {} | {} | {:.2e} | {:.2e} | {} | {:.0e} | {} |", c.kernel, c.shape, c.precision, c.stats.max_rel, c.stats.norm_rel, c.stats.non_finite, c.tol, res);
            }
            // Worst error per kernel, the compact view.
            println!("\n| kernel | worst max rel err | cases | result |");
            println!("|---|---:|---:|---|");
            let mut names: Vec<&str> = checks.iter().map(|c| c.kernel.as_str()).collect();
            let mut seen = std::collections::HashSet::new();
            names.retain(|n| seen.insert(*n));
            for n in names {
                let rows: Vec<_> = checks.iter().filter(|c| c.kernel == n).collect();
                let worst = rows.iter().map(|c| c.stats.max_rel).fold(0.0f64, f64::max);
                let ok = rows.iter().all(|c| c.pass);
                println!("| {n} | {worst:.2e} | {} | {} |", rows.len(), if ok { "PASS" } else { "FAIL" });
            }
            if !timings.is_empty() {
                println!("\nmatmul timings (CUDA events, {} warm-up, median of {}):", bench::WARMUP, bench::ITERS);
                println!("| kernel | M x N x K | median ms | TFLOP/s | % of cuBLAS |");
                println!("|---|---|---:|---:|---:|");
                for t in &timings {
                    let pct = t.pct_of_cublas.map(|p| format!("{p:.1}%")).unwrap_or_else(|| "-".into());
                    let err = t.error.as_ref().map(|e| format!(" ERROR: {e}")).unwrap_or_default();
                    println!("| {} | {}x{}x{} | {:.3} | {:.1} | {pct}{err} |", t.name, t.shape.0, t.shape.1, t.shape.2, t.median_ms, t.tflops);
                }
            }
            kernels::attention::print_timings(&attention_timings);
            println!("\nselftest: {} checks, {} passed, {} failed", checks.len(), checks.len() - failed, failed);
        }
        if failed > 0 {
            bail!("{failed} kernel check(s) failed");
        }
        Ok(())
    }
}
