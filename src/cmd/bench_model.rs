//! `instructgpt bench train-step` and `instructgpt bench generate`: whole-model figures (tokens/s)
//! for GPT-2 on the CPU (and the training step on CUDA), to set beside PyTorch/transformers
//! (`scripts/compare_gpt2.py`, `scripts/torch_baseline.py`).

use super::bench::BenchArgs;
use anyhow::{anyhow, bail, Result};
use engine::optim::{AdamW, AdamWConfig};
use engine::{Device, Tensor};
use models::{generate, lm_targets, GenerateConfig, Gpt2, Gpt2Config};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn model_of(spec: &str) -> Result<Gpt2> {
    super::model_arg::load_or_init(spec, 0)
}

fn median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0])
}

/// `reps` more runs of `step` under the op-level profile: the profile and the runs' mean wall time.
fn profiled(reps: usize, mut step: impl FnMut() -> Result<()>) -> Result<(engine::profile::Profile, f64)> {
    engine::profile::start();
    let t0 = Instant::now();
    let ran = (0..reps).try_for_each(|_| step());
    let secs = t0.elapsed().as_secs_f64() / reps.max(1) as f64;
    let profile = engine::profile::stop();
    ran.map(|_| (profile, secs))
}

/// The profile as JSON rows (per step).
fn profile_json(p: &engine::profile::Profile, reps: usize) -> serde_json::Value {
    let n = reps.max(1) as f64;
    p.rows.iter().map(|r| serde_json::json!({"phase": r.phase.name(), "op": r.op, "calls_per_step": r.calls as f64 / n, "ms_per_step": r.seconds * 1e3 / n})).collect()
}

fn random_ids(rng: &mut StdRng, n: usize, vocab: usize) -> Vec<i64> {
    (0..n).map(|_| rng.gen_range(0..vocab as i64)).collect()
}

/// Forward, loss, backward and one AdamW step on random tokens; tokens/s = B·T / step time.
/// On CUDA, reading the loss back waits for the step's last launch, so each time is the whole step.
pub fn train_step(args: &BenchArgs, threads: usize, device: Device) -> Result<()> {
    let model = model_of(&args.model)?.to_device(device)?;
    let cfg: &Gpt2Config = model.config();
    let (b, t) = (args.batch, args.seq_len);
    let mut rng = StdRng::seed_from_u64(1);
    let ids = Tensor::new(random_ids(&mut rng, b * (t + 1), cfg.vocab_size), &[b, t + 1])?;
    let inputs = ids.narrow(1, 0, t)?.contiguous()?;
    let targets = lm_targets(&ids)?.narrow(1, 0, t)?.contiguous()?;
    super::model_arg::check_bf16(args.bf16, device)?;
    // The kernel versions chosen by environment (IGPT_MATMUL, IGPT_ATTN_FWD, IGPT_ATTN_BWD, IGPT_SPLIT_K, IGPT_TILE_N) are named in the line.
    let chosen: Vec<String> = ["IGPT_MATMUL", "IGPT_ATTN_FWD", "IGPT_ATTN_BWD", "IGPT_SPLIT_K", "IGPT_TILE_N"].iter().filter_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()).map(|v| format!("{k}={v}"))).collect();
    let precision = match (args.bf16, chosen.is_empty()) {
        (false, _) => "f32".to_string(),
        (true, true) => "bf16 autocast".to_string(),
        (true, false) => format!("bf16 autocast ({})", chosen.join(" ")),
    };
    let mut opt = AdamW::new(model.param_groups(0.1), AdamWConfig::default())?;
    let mut step = || -> Result<f32> {
        let _autocast = args.bf16.then(engine::autocast_bf16);
        let loss = model.loss(&inputs, &targets)?;
        let grads = loss.backward()?;
        opt.step(&grads, 1e-4)?;
        Ok(loss.to_scalar()?)
    };
    let warmup = 2;
    let reps = args.reps.unwrap_or(5);
    for _ in 0..warmup {
        step()?;
    }
    let mut times = Vec::with_capacity(reps);
    let mut loss = 0.0;
    pool_peak(device, true)?;
    for _ in 0..reps {
        let t0 = Instant::now();
        loss = step()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let peak = pool_peak(device, false)?;
    let profile = if args.profile { Some(profiled(reps, || step().map(|_| ()))?) } else { None };
    let (med, min) = median(times);
    let tok_s = (b * t) as f64 / med;
    // Model FLOP/s (nanoGPT's count) and MFU against the device's peak.
    let model_tflops = cfg.train_flops_per_token(t) * tok_s / 1e12;
    let device_peak = match args.peak_tflops {
        Some(p) if p.is_finite() && p > 0.0 => Some((p, "--peak-tflops".to_string())),
        Some(p) => bail!("--peak-tflops {p}: expected a positive number"),
        None => peak_of(device, args.bf16)?,
    };
    let mfu = device_peak.as_ref().map(|(p, _)| model_tflops / p);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"op": "train-step", "model": args.model, "device": format!("{device:?}"), "precision": precision, "batch": b, "seq_len": t, "threads": threads,
                "params": model.num_params(), "ms": med * 1e3, "ms_min": min * 1e3, "reps": reps, "tokens_per_s": tok_s, "loss": loss, "peak_device_bytes": peak,
                "model_tflops": model_tflops, "mfu": mfu, "peak_tflops": device_peak.as_ref().map(|p| p.0), "peak_of": device_peak.as_ref().map(|p| p.1.clone()),
                "profile": profile.as_ref().map(|(p, secs)| serde_json::json!({"ms_per_step": secs * 1e3, "ops": profile_json(p, reps), "dropped": p.dropped}))})
        );
    } else {
        let on = if device.is_cuda() { format!("{device:?}") } else { format!("cpu ({threads} threads)") };
        let mem = peak.map(|p| format!(", peak device memory {:.2} GiB", p as f64 / (1u64 << 30) as f64)).unwrap_or_default();
        let mfu = match (&device_peak, mfu) {
            (Some((p, what)), Some(m)) => format!(", MFU {:.1}% of {p:.1} ({what})", 100.0 * m),
            _ => String::new(),
        };
        println!(
            "train-step {} {b}x{t} {on} {precision}: median {:.1} ms (min {:.1}, {reps} reps), {tok_s:.1} tokens/s, {:.3} TFLOP/s (model){mfu}, loss {loss:.3}{mem}",
            args.model,
            med * 1e3,
            min * 1e3,
            model_tflops
        );
        if let Some((p, secs)) = &profile {
            print_profile(p, reps, *secs, device);
        }
    }
    Ok(())
}

fn print_profile(p: &engine::profile::Profile, reps: usize, secs: f64, device: Device) {
    let time = if device.is_cuda() { "device time between events on the stream" } else { "wall time" };
    println!("\nprofile ({reps} more runs, {:.1} ms a run with the profile on; each op's {time}):\n{}", secs * 1e3, p.table(reps, secs));
}

/// On CUDA, the memory pool's high-water mark in bytes (parameters, moments, activations kept
/// for backward, gradients, workspaces): what bf16 activations save shows here. Reset first
/// with `reset`.
/// The device's vendor peak (TFLOP/s, which card) for MFU: bf16 tensor cores under autocast,
/// else f32 (kernels::peak); None on the CPU and for cards not in the table.
fn peak_of(device: Device, bf16: bool) -> Result<Option<(f64, String)>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(n) = device {
        let name = engine::cuda::gpu(n)?.info.name.clone();
        let precision = if bf16 { "bf16 dense" } else { "f32" };
        return Ok(kernels::peak::peak_dense_tflops(&name, bf16).map(|(p, what)| (p, format!("{what} {precision}"))));
    }
    let _ = (device, bf16);
    Ok(None)
}

fn pool_peak(device: Device, reset: bool) -> Result<Option<u64>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(n) = device {
        return Ok(Some(engine::cuda::gpu(n)?.pool_peak_bytes(reset)?));
    }
    let _ = (device, reset);
    Ok(None)
}

/// Generation with the KV cache (greedy, or sampled at `--temperature`), never stopping early;
/// tokens/s = new tokens / time.
pub fn generate_bench(args: &BenchArgs, threads: usize, device: Device) -> Result<()> {
    super::model_arg::check_bf16(args.bf16, device)?;
    let model = model_of(&args.model)?.to_device(device)?;
    let vocab = model.config().vocab_size;
    let mut rng = StdRng::seed_from_u64(2);
    let prompts: Vec<Vec<u32>> =
        (0..args.prompts).map(|_| random_ids(&mut rng, args.prompt_len, vocab).into_iter().map(|x| x as u32).collect()).collect();
    let cfg = GenerateConfig { eos_token_id: None, temperature: args.temperature, ..GenerateConfig::greedy(args.new_tokens) };
    let run = || -> Result<usize> {
        // Under autocast on CUDA the KV cache is bf16 and decode reads it in place.
        let _autocast = args.bf16.then(engine::autocast_bf16);
        let g = generate(&model, &prompts, &cfg).map_err(|e| anyhow!(e))?;
        Ok(g.lengths.iter().sum())
    };
    run()?;
    let reps = args.reps.unwrap_or(3);
    let mut times = Vec::with_capacity(reps);
    let mut n = 0;
    for _ in 0..reps {
        let t0 = Instant::now();
        n = run()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let profile = if args.profile { Some(profiled(reps, || run().map(|_| ()))?) } else { None };
    let (med, min) = median(times);
    let tok_s = n as f64 / med;
    let (dev, precision) = (if device == Device::Cpu { format!("cpu ({threads} threads)") } else { format!("{device:?}") }, if args.bf16 { "bf16 autocast" } else { "f32" });
    if args.json {
        println!(
            "{}",
            serde_json::json!({"op": "generate", "model": args.model, "prompts": args.prompts, "prompt_len": args.prompt_len,
                "new_tokens": args.new_tokens, "temperature": args.temperature, "device": dev, "precision": precision, "threads": threads, "ms": med * 1e3, "ms_min": min * 1e3, "reps": reps, "tokens_per_s": tok_s,
                "profile": profile.as_ref().map(|(p, secs)| serde_json::json!({"ms_per_run": secs * 1e3, "ops": profile_json(p, reps), "dropped": p.dropped}))})
        );
    } else {
        println!(
            "generate {} {}x{} +{} {}, {dev}, {precision}: median {:.1} ms (min {:.1}, {reps} reps), {tok_s:.1} new tokens/s",
            args.model,
            args.prompts,
            args.prompt_len,
            args.new_tokens,
            if args.temperature == 0.0 { "greedy".to_string() } else { format!("T={}", args.temperature) },
            med * 1e3,
            min * 1e3
        );
        if let Some((p, secs)) = &profile {
            print_profile(p, reps, *secs, device);
        }
    }
    Ok(())
}
