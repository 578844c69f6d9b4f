//! `instructgpt bench <op>`: time one op at one shape and print GFLOP/s (compute-bound ops) or
//! GB/s (memory-bound ops), so that anyone can set it beside another library's figure in one run.

use anyhow::{anyhow, bail, Context, Result};
use engine::optim::{AdamW, AdamWConfig, ParamGroup};
use engine::{GradStore, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::Instant;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// MxNxK: C[M,N] = A[M,K] B[K,N] (GFLOP/s).
    Matmul,
    /// RxC: softmax over rows (GB/s).
    Softmax,
    /// RxC: layernorm over rows (GB/s).
    Layernorm,
    /// N: GELU over N elements (GB/s).
    Gelu,
    /// NxV: fused cross-entropy over N rows of V logits (GB/s).
    CrossEntropy,
    /// NxV: PPO's per-token log-probs at temperature 0.7 (with --backward: and their gradient),
    /// the fused op beside log_softmax + gather, interleaved in one run (GB/s of logits read;
    /// cpu and cuda, f32 logits).
    TokenLogprobs,
    /// BxHxTxD: fused causal attention (GFLOP/s).
    Attention,
    /// N: one AdamW step over N parameters (GB/s).
    Adamw,
    /// NxVxD: embedding rows of a [V, D] table for N ids; --backward: scatter-add (GB/s, cuda only).
    Embedding,
    /// RxC: column sums (bias gradient) [R, C] -> [C] (GB/s, cuda only).
    SumRows,
    /// KxN: global L2 norm over K buffers of N floats (GB/s, cuda only).
    L2norm,
    /// RxC: rounding an f32 [R, C] to bf16 (autocast's operands), row-major and transposed
    /// (strided vs tiled kernels) (GB/s, cuda only).
    Cast,
    /// RxC: add/sub/mul/div/min/max, same shape and broadcast (GB/s, cuda only).
    Binary,
    /// N tokens: a GPT-2 124M train step's device allocations under each allocator: cuMemAlloc,
    /// the stream-ordered pool (release threshold 0 and max), our caching allocator (cuda only).
    Alloc,
    /// GPT-2 train step (forward, loss, backward, AdamW) on --model, --batch x --seq-len (tokens/s).
    TrainStep,
    /// Greedy KV-cache generation on --model, --prompts x --prompt-len, --new-tokens (tokens/s;
    /// on CUDA with --bf16: autocast, its KV cache bf16).
    Generate,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub op: Op,
    /// Shape, e.g. 1024x1024x1024 for matmul (defaults per op).
    #[arg(long)]
    pub shape: Option<String>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Also time the backward pass (attention, softmax, layernorm, gelu, cross-entropy).
    #[arg(long)]
    pub backward: bool,
    /// matmul: pass B as a transposed [N, K] view (`x @ W^T`).
    #[arg(long)]
    pub bt: bool,
    /// Timed repetitions (default: as many as fit in about a second, 5 to 200).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// train-step/generate: model preset, config.json or checkpoint directory.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// train-step: batch size.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// train-step: sequence length.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// train-step and generate on CUDA: matmuls in bf16 on tensor cores (f32 accumulation and
    /// master weights; PyTorch's autocast), not f32.
    #[arg(long)]
    pub bf16: bool,
    /// train-step: the device's peak TFLOP/s for MFU (default: from the GPU's name for H100,
    /// H200 and A100, bf16 tensor cores or f32 as run; none on the CPU).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// generate: number of prompts.
    #[arg(long, default_value_t = 8)]
    pub prompts: usize,
    /// generate: tokens per prompt.
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    /// generate: new tokens per prompt.
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// train-step and generate: then run as many steps again with the op-level profile on and
    /// print where the time goes, by op and phase (on CUDA, device time between events).
    #[arg(long)]
    pub profile: bool,
    /// generate: sampling temperature (0 = greedy; PPO's rollouts sample at 1).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
}

fn default_shape(op: Op) -> &'static str {
    match op {
        Op::Matmul => "1024x1024x1024",
        Op::Softmax | Op::Layernorm => "4096x768",
        Op::Gelu => "8388608",
        Op::CrossEntropy => "1024x50257",
        Op::TokenLogprobs => "512x50257",
        Op::Attention => "4x12x512x64",
        Op::Adamw => "16777216",
        Op::Embedding => "8192x50257x768",
        Op::SumRows => "8192x3072",
        Op::L2norm => "64x1966081",
        Op::Binary => "8192x3072",
        Op::Cast => "8192x3072",
        Op::Alloc => "8192",
        Op::TrainStep | Op::Generate => "0",
    }
}

pub fn parse_shape(s: &str) -> Result<Vec<usize>> {
    s.split('x').map(|d| d.trim().parse::<usize>().with_context(|| format!("bad shape {s:?}: expected sizes joined by 'x'"))).collect()
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.bf16 && !matches!(args.op, Op::TrainStep | Op::Generate) {
        bail!("--bf16 is for train-step and generate (the kernel benchmarks time their own precisions)");
    }
    let shape = parse_shape(args.shape.as_deref().unwrap_or(default_shape(args.op)))?;
    if args.op == Op::TokenLogprobs {
        return token_logprobs_bench(&args, &shape);
    }
    match args.device.as_str() {
        "cpu" => {}
        "cuda" => return run_cuda(&args, &shape),
        other => bail!("unknown device {other:?}: expected cpu or cuda"),
    }
    let threads = args.threads.unwrap_or_else(num_cores);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    match args.op {
        Op::TrainStep => return pool.install(|| super::bench_model::train_step(&args, threads, engine::Device::Cpu)),
        Op::Generate => return pool.install(|| super::bench_model::generate_bench(&args, threads, engine::Device::Cpu)),
        _ => {}
    }
    let r = pool.install(|| measure_cpu(&args, &shape))?;
    let shape_str = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    let isa = engine::cpu::gemm::isa_name();
    if args.json {
        let mut j = serde_json::json!({
            "op": format!("{:?}", args.op).to_lowercase(), "shape": shape_str, "device": "cpu", "threads": threads,
            "isa": isa, "backward": args.backward, "ms": r.median_ms, "ms_min": r.min_ms, "reps": r.reps,
        });
        if let Some(f) = r.flops {
            j["gflops"] = serde_json::json!(f / r.median_ms / 1e6);
        }
        if let Some(b) = r.bytes {
            j["gbps"] = serde_json::json!(b / r.median_ms / 1e6);
        }
        println!("{j}");
    } else {
        let rate = match (r.flops, r.bytes) {
            (Some(f), _) => format!("{:.1} GFLOP/s", f / r.median_ms / 1e6),
            (None, Some(b)) => format!("{:.1} GB/s", b / r.median_ms / 1e6),
            _ => String::new(),
        };
        let pass = if args.backward { " fwd+bwd" } else { "" };
        println!(
            "{:?}{pass} {shape_str} cpu ({threads} threads, {isa}): median {:.3} ms (min {:.3}, {} reps), {rate}",
            args.op, r.median_ms, r.min_ms, r.reps
        );
    }
    Ok(())
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

struct Measured {
    median_ms: f64,
    min_ms: f64,
    reps: usize,
    flops: Option<f64>,
    bytes: Option<f64>,
}

/// Warm up, then time `reps` calls; the median is the figure (robust to a noisy shared machine).
fn time(reps: Option<usize>, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64, usize)> {
    let t0 = Instant::now();
    f()?;
    let first = t0.elapsed().as_secs_f64();
    f()?;
    let reps = reps.unwrap_or_else(|| ((1.0 / first.max(1e-6)) as usize).clamp(5, 200));
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    Ok((ms[ms.len() / 2], ms[0], reps))
}

fn need(shape: &[usize], n: usize, form: &str) -> Result<()> {
    if shape.len() != n {
        bail!("this op takes a shape of the form {form}");
    }
    Ok(())
}

fn measure_cpu(args: &BenchArgs, s: &[usize]) -> Result<Measured> {
    let mut rng = StdRng::seed_from_u64(0);
    let bwd = args.backward;
    // Forward (and optionally backward) of `f` on fresh vars built from `inputs`.
    let run_op = |inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> engine::Result<Tensor>| -> Result<()> {
        if bwd {
            let vars: Vec<Tensor> = inputs.iter().map(|t| t.var()).collect();
            let out = f(&vars)?;
            let loss = if out.numel() == 1 { out } else { out.sum_all()? };
            loss.backward()?;
        } else {
            let _guard = engine::no_grad();
            f(inputs)?;
        }
        Ok(())
    };
    type Body = Box<dyn Fn(&[Tensor]) -> engine::Result<Tensor>>;
    let (flops, bytes, inputs, f): (Option<f64>, Option<f64>, Vec<Tensor>, Body) = match args.op {
        Op::Matmul => {
            need(s, 3, "MxNxK")?;
            let (m, n, k) = (s[0], s[1], s[2]);
            let a = Tensor::randn(&[m, k], 0.0, 1.0, &mut rng);
            let b = if args.bt { Tensor::randn(&[n, k], 0.0, 1.0, &mut rng) } else { Tensor::randn(&[k, n], 0.0, 1.0, &mut rng) };
            let bt = args.bt;
            let passes = if bwd { 3.0 } else { 1.0 };
            (Some(passes * 2.0 * (m * n * k) as f64), None, vec![a, b], Box::new(move |x| if bt { x[0].matmul(&x[1].t()?) } else { x[0].matmul(&x[1]) }))
        }
        Op::Softmax | Op::Layernorm => {
            need(s, 2, "RxC")?;
            let x = Tensor::randn(s, 0.0, 1.0, &mut rng);
            let bytes = (if bwd { 5.0 } else { 2.0 }) * 4.0 * (s[0] * s[1]) as f64;
            if args.op == Op::Softmax {
                (None, Some(bytes), vec![x], Box::new(|x| x[0].softmax()))
            } else {
                let (w, b) = (Tensor::randn(&[s[1]], 1.0, 0.1, &mut rng), Tensor::randn(&[s[1]], 0.0, 0.1, &mut rng));
                (None, Some(bytes), vec![x, w, b], Box::new(|x| x[0].layer_norm(&x[1], &x[2], 1e-5)))
            }
        }
        Op::Gelu => {
            need(s, 1, "N")?;
            let bytes = (if bwd { 5.0 } else { 2.0 }) * 4.0 * s[0] as f64;
            (None, Some(bytes), vec![Tensor::randn(s, 0.0, 1.0, &mut rng)], Box::new(|x| x[0].gelu()))
        }
        Op::CrossEntropy => {
            need(s, 2, "NxV")?;
            let (n, v) = (s[0], s[1]);
            let logits = Tensor::randn(&[n, v], 0.0, 1.0, &mut rng);
            let targets = Tensor::new((0..n).map(|i| ((i * 7919) % v) as i64).collect(), &[n])?;
            let bytes = (if bwd { 3.0 } else { 1.0 }) * 4.0 * (n * v) as f64;
            (None, Some(bytes), vec![logits], Box::new(move |x| x[0].cross_entropy(&targets)))
        }
        Op::Attention => {
            need(s, 4, "BxHxTxD")?;
            let (b, h, t, d) = (s[0], s[1], s[2], s[3]);
            let qkv: Vec<Tensor> = (0..3).map(|_| Tensor::randn(&[b, h, t, d], 0.0, 1.0, &mut rng)).collect();
            // Causal: half of the two T×T×D products; backward does 2.5x the forward's work.
            let fwd = 2.0 * (b * h * t * t * d) as f64;
            (Some(if bwd { 3.5 * fwd } else { fwd }), None, qkv, Box::new(|x| engine::causal_attention(&x[0], &x[1], &x[2])))
        }
        Op::Adamw => return bench_adamw(args, s),
        Op::TrainStep | Op::Generate | Op::TokenLogprobs => unreachable!("handled in run"),
        Op::Embedding | Op::SumRows | Op::L2norm | Op::Binary | Op::Cast | Op::Alloc => bail!("{:?}: only benchmarked with --device cuda", args.op),
    };
    let (median_ms, min_ms, reps) = time(args.reps, || run_op(&inputs, &*f))?;
    Ok(Measured { median_ms, min_ms, reps, flops, bytes })
}

/// `token_logprobs` against the ops it fuses (scale, log_softmax, gather), on the chosen device,
/// alternating one call of each so that both see the same machine load. Each call ends by
/// reading a scalar back (on CUDA: after its kernels finished).
fn token_logprobs_bench(args: &BenchArgs, s: &[usize]) -> Result<()> {
    need(s, 2, "NxV")?;
    const TEMPERATURE: f64 = 0.7;
    let (n, v, temp) = (s[0], s[1], TEMPERATURE as f32);
    let device = match args.device.as_str() {
        "cpu" => engine::Device::Cpu,
        "cuda" => engine::Device::Cuda(0),
        other => bail!("unknown device {other:?}: expected cpu or cuda"),
    };
    let threads = args.threads.unwrap_or_else(num_cores);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let mut rng = StdRng::seed_from_u64(0);
    let logits = Tensor::randn(&[n, v], 0.0, 2.0, &mut rng).to_device(device)?;
    let ids: Vec<i64> = (0..n).map(|i| ((i * 7919) % v) as i64).collect();
    let (t, t1) = (Tensor::new(ids.clone(), &[n])?.to_device(device)?, Tensor::new(ids, &[n, 1])?.to_device(device)?);
    let bwd = args.backward;
    let run = |fused: bool| -> Result<f64> {
        let t0 = Instant::now();
        let x = if bwd { logits.var() } else { logits.clone() };
        let _g = (!bwd).then(engine::no_grad);
        let lp = if fused { x.token_logprobs(&t, temp)? } else { x.mul_scalar(1.0 / temp)?.log_softmax()?.gather(&t1)? };
        let total = lp.sum_all()?;
        if bwd {
            let g = total.backward()?;
            g.get(&x).ok_or_else(|| anyhow!("no gradient reached the logits"))?.sum_all()?.to_scalar()?;
        } else {
            total.to_scalar()?;
        }
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    };
    let (mut fused, mut composed) = (Vec::new(), Vec::new());
    pool.install(|| -> Result<()> {
        run(true)?;
        run(false)?;
        for _ in 0..args.reps.unwrap_or(10) {
            fused.push(run(true)?);
            composed.push(run(false)?);
        }
        Ok(())
    })?;
    let median = |m: &mut Vec<f64>| {
        m.sort_by(|a, b| a.total_cmp(b));
        m[m.len() / 2]
    };
    let (f, c) = (median(&mut fused), median(&mut composed));
    // Logits read once forward, and backward read again with the gradient written (f32).
    let gb = (n * v) as f64 * 4.0 * if bwd { 3.0 } else { 1.0 } / 1e9;
    let pass = if bwd { "forward+backward" } else { "forward" };
    let dev = if device == engine::Device::Cpu { format!("cpu, {threads} threads") } else { args.device.clone() };
    if args.json {
        println!("{}", serde_json::json!({ "op": "token-logprobs", "shape": format!("{n}x{v}"), "device": dev, "backward": bwd, "temperature": TEMPERATURE,
            "fused_ms": f, "composed_ms": c, "fused_gbps": gb / f * 1e3, "speedup": c / f, "reps": fused.len() }));
    } else {
        println!("token-logprobs {pass} {n}x{v} ({dev}, temperature {temp}, {} reps interleaved, medians):", fused.len());
        println!("  fused token_logprobs        {f:9.3} ms  {:7.1} GB/s", gb / f * 1e3);
        println!("  log_softmax + gather        {c:9.3} ms  ({:.2}x the fused time)", c / f);
    }
    Ok(())
}

fn bench_adamw(args: &BenchArgs, s: &[usize]) -> Result<Measured> {
    need(s, 1, "N")?;
    let mut rng = StdRng::seed_from_u64(0);
    let p = Tensor::randn(s, 0.0, 1.0, &mut rng).var();
    let mut grads = GradStore::new();
    grads.insert(&p, Tensor::randn(s, 0.0, 1.0, &mut rng));
    let mut opt = AdamW::new(vec![ParamGroup { params: vec![p], weight_decay: 0.1 }], AdamWConfig::default())?;
    let (median_ms, min_ms, reps) = time(args.reps, || opt.step(&grads, 1e-4).map_err(|e| anyhow!(e)))?;
    // Reads p, g, m, v and writes p, m, v.
    Ok(Measured { median_ms, min_ms, reps, flops: None, bytes: Some(7.0 * 4.0 * s[0] as f64) })
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(_: &BenchArgs, _: &[usize]) -> Result<()> {
    bail!("--device cuda: this binary was built without the `cuda` feature (cargo build --release --features cuda)")
}

#[cfg(feature = "cuda")]
fn run_cuda(args: &BenchArgs, s: &[usize]) -> Result<()> {
    let gpu = engine::cuda::gpu(0)?;
    if args.op == Op::TrainStep {
        return super::bench_model::train_step(args, 0, engine::Device::Cuda(0));
    }
    if args.op == Op::Generate {
        return super::bench_model::generate_bench(args, 0, engine::Device::Cuda(0));
    }
    if args.op == Op::Alloc {
        need(s, 1, "N")?;
        // GPT-2 124M: 12 layers, width 768, vocabulary 50257; logits in chunks of 1024 rows.
        let sizes = kernels::alloc_bench::step_buffers(12, s[0], 768, 50257, 1024);
        let timings = kernels::alloc_bench::alloc_bench(&gpu, &sizes, args.reps.unwrap_or(20))?;
        if args.json {
            println!("{}", serde_json::json!({ "op": "alloc", "device": "cuda", "gpu": gpu.info.name, "tokens": s[0], "results": timings }));
        } else {
            println!("{}: a GPT-2 124M train step's allocations, {} tokens ({} buffers, {:.0} MiB per step)", gpu.info.name, s[0], timings[0].buffers_per_step, timings[0].mib_per_step);
            println!("| allocator | first step us | step us (median) |");
            println!("|---|---:|---:|");
            for t in &timings {
                let err = t.error.as_ref().map(|e| format!(" ERROR: {e}")).unwrap_or_default();
                println!("| {} | {:.0} | {:.0}{err} |", t.strategy, t.first_step_us, t.step_us);
            }
        }
        return Ok(());
    }
    if args.op == Op::Matmul {
        need(s, 3, "MxNxK")?;
        let timings = kernels::bench::matmul_bench(&gpu, &[(s[0], s[1], s[2])])?;
        if args.json {
            println!("{}", serde_json::json!({ "op": "matmul", "device": "cuda", "gpu": gpu.info.name, "results": timings }));
        } else {
            for t in &timings {
                let pct = t.pct_of_cublas.map(|p| format!(", {p:.1}% of cuBLAS")).unwrap_or_default();
                println!("{} {}x{}x{}: median {:.3} ms, {:.1} TFLOP/s{pct}", t.name, t.shape.0, t.shape.1, t.shape.2, t.median_ms, t.tflops);
            }
        }
        return Ok(());
    }
    let name = match args.op {
        Op::Softmax => "softmax",
        Op::Layernorm => "layernorm",
        Op::Gelu => "gelu",
        Op::CrossEntropy => "cross-entropy",
        Op::Adamw => "adamw",
        Op::Embedding => "embedding",
        Op::SumRows => "sum-rows",
        Op::L2norm => "l2norm",
        Op::Binary => "binary",
        Op::Cast => "cast",
        Op::TokenLogprobs => unreachable!("handled in run"),
        Op::Matmul | Op::Alloc | Op::Attention | Op::TrainStep | Op::Generate => bail!("--device cuda: {:?} is benchmarked by `instructgpt selftest --device cuda`", args.op),
    };
    // The ceiling, measured in this process: a device-to-device copy, bytes read + written.
    let copy = kernels::bandwidth::copy_bandwidth(&gpu)?;
    if let Some(e) = &copy.error {
        bail!("device-to-device copy benchmark failed: {e}");
    }
    let timings = kernels::bandwidth::bench_op(&gpu, name, s, args.backward, Some(copy.gbps))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "op": name, "device": "cuda", "gpu": gpu.info.name, "backward": args.backward, "copy": copy, "results": timings })
        );
    } else {
        println!("{} ({}): {} {:.1} GB/s (median {:.3} ms)", gpu.info.name, gpu.info.arch, copy.name, copy.gbps, copy.median_ms);
        // % of copy: against the 256 MiB copy above; % of same-size copy: against a copy of the
        // row's own bytes over the same sets (the ceiling at that size).
        println!("| kernel | shape | MB moved | sets | median ms | GB/s | % of copy | % of same-size copy |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for t in &timings {
            let pct = |p: Option<f64>| p.map(|p| format!("{p:.1}%")).unwrap_or_else(|| "-".into());
            let err = t.error.as_ref().map(|e| format!(" ERROR: {e}")).unwrap_or_default();
            println!(
                "| {} | {} | {:.1} | {} | {:.4} | {:.1} | {} | {}{err} |",
                t.name, t.shape, t.bytes / 1e6, t.sets, t.median_ms, t.gbps, pct(t.pct_of_copy), pct(t.pct_of_same_size_copy)
            );
        }
    }
    Ok(())
}
