//! Language-model pretraining: random windows of a token file, AdamW with warmup and cosine decay,
//! gradient clipping, held-out loss, and checkpoints that let `--resume` continue bit for bit.
//!
//! The batch of step `s` is drawn from an RNG seeded by (seed, s), so a resumed run sees exactly
//! the batches the uninterrupted run would have; the optimizer moments travel in the checkpoint.
//!
//! Output directory:
//! ```text
//! config.json, model.safetensors   the latest weights in HF layout (generate / eval / transformers)
//! metrics.jsonl                    one line per step (and the held-out loss when evaluated)
//! trainer.json                     points at the newest complete resume state, replaced atomically
//! trainer-<step>/                  weights + AdamW moments + step counters of one checkpoint
//! ```

use crate::tokens::TokenFile;
use crate::{hf, Gpt2};
use anyhow::{bail, Context, Result};
use engine::optim::{AdamW, AdamWConfig, Decay, LrSchedule, ParamState};
use engine::{DType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PretrainConfig {
    pub steps: u64,
    pub batch: usize,
    pub seq_len: usize,
    pub lr: f32,
    pub min_lr: f32,
    pub warmup: u64,
    pub weight_decay: f32,
    pub beta2: f32,
    pub grad_clip: f32,
    pub eval_every: u64,
    pub eval_batches: usize,
    pub checkpoint_every: u64,
    /// The last fraction of the token file is held out.
    pub val_fraction: f32,
    pub seed: u64,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            steps: 200,
            batch: 4,
            seq_len: 128,
            lr: 6e-4,
            min_lr: 6e-5,
            warmup: 20,
            weight_decay: 0.1,
            beta2: 0.95,
            grad_clip: 1.0,
            eval_every: 50,
            eval_batches: 4,
            checkpoint_every: 100,
            val_fraction: 0.05,
            seed: 0,
        }
    }
}

/// What one step reports (the CLI draws its progress bar from these).
#[derive(Clone, Debug, Serialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f32,
    pub lr: f32,
    pub grad_norm: f32,
    pub tokens_per_s: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f32>,
}

#[derive(Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    dir: String,
    config: PretrainConfig,
    /// AdamW's per-parameter step counts, by parameter name.
    param_steps: std::collections::BTreeMap<String, u64>,
}

/// Train `model` on `data`, writing checkpoints and metrics under `out`. With `resume`, the model,
/// optimizer and step come from `out`'s newest checkpoint instead (and its run config is used).
/// `report` sees every step; returning false stops the run after a checkpoint (e.g. on Ctrl-C).
pub fn pretrain(mut model: Gpt2, data: &TokenFile, cfg: &PretrainConfig, out: &Path, resume: bool, mut report: impl FnMut(&StepMetrics) -> bool) -> Result<Gpt2> {
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut cfg = cfg.clone();
    let mut opt = AdamW::new(model.param_groups(cfg.weight_decay), AdamWConfig { beta1: 0.9, beta2: cfg.beta2, eps: 1e-8 })?;
    let mut start = 0;
    if resume {
        let (m, state, states) = load_checkpoint(out)?;
        model = m;
        opt = AdamW::new(model.param_groups(state.config.weight_decay), AdamWConfig { beta1: 0.9, beta2: state.config.beta2, eps: 1e-8 })?;
        opt.load_state(state.step, states)?;
        start = state.step;
        cfg = state.config;
    }
    let (train_len, val_start) = split(data, &cfg)?;
    let schedule = LrSchedule { peak: cfg.lr, min_lr: cfg.min_lr, warmup_steps: cfg.warmup, total_steps: cfg.steps, decay: Decay::Cosine };
    let metrics_path = out.join("metrics.jsonl");
    if resume {
        keep_metrics_up_to(&metrics_path, start)?;
    }
    let mut metrics = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path)?;
    for step in start..cfg.steps {
        let t0 = Instant::now();
        let (ids, targets) = batch(data, train_len, &cfg, step)?;
        let loss = model.loss(&ids, &targets)?;
        let mut grads = loss.backward()?;
        let grad_norm = grads.clip_global_norm(cfg.grad_clip)?;
        let lr = schedule.lr(step);
        opt.step(&grads, lr)?;
        let tokens = (cfg.batch * cfg.seq_len) as f32;
        let done = step + 1;
        let val_loss = if done % cfg.eval_every == 0 || done == cfg.steps { Some(held_out_loss(&model, data, val_start, &cfg)?) } else { None };
        let m = StepMetrics { step: done, loss: loss.to_scalar()?, lr, grad_norm, tokens_per_s: tokens / t0.elapsed().as_secs_f32(), val_loss };
        writeln!(metrics, "{}", serde_json::to_string(&m)?)?;
        let go_on = report(&m);
        if done % cfg.checkpoint_every == 0 || done == cfg.steps || !go_on {
            save_checkpoint(&model, &opt, &cfg, out)?;
        }
        if !go_on {
            break;
        }
    }
    Ok(model)
}

/// Drop metric lines past the resumed step (written after the last checkpoint, then lost).
fn keep_metrics_up_to(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s <= step))
        .map(|l| format!("{l}\n"))
        .collect();
    engine::safetensors::write_atomic(path, kept.as_bytes())?;
    Ok(())
}

/// Train on tokens [0, train_len); hold out [val_start, len).
fn split(data: &TokenFile, cfg: &PretrainConfig) -> Result<(usize, usize)> {
    let n = data.len();
    let val = ((n as f64 * cfg.val_fraction as f64) as usize).max(cfg.seq_len + 1);
    if n < val + cfg.seq_len + 1 {
        bail!("{}: {n} tokens are too few for windows of {} plus a held-out part of {val}", data.path().display(), cfg.seq_len + 1);
    }
    Ok((n - val, n - val))
}

/// The inputs and next-token targets [batch, seq_len] of `step`, from random training windows.
pub fn batch(data: &TokenFile, train_len: usize, cfg: &PretrainConfig, step: u64) -> Result<(Tensor, Tensor)> {
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step);
    let (mut ids, mut targets) = (Vec::new(), Vec::new());
    for _ in 0..cfg.batch {
        let w = data.window(rng.gen_range(0..=train_len - cfg.seq_len - 1), cfg.seq_len + 1);
        ids.extend_from_slice(&w[..cfg.seq_len]);
        targets.extend_from_slice(&w[1..]);
    }
    Ok((Tensor::new(ids, &[cfg.batch, cfg.seq_len])?, Tensor::new(targets, &[cfg.batch, cfg.seq_len])?))
}

/// Mean loss over evenly spaced held-out windows (the same windows every time).
pub fn held_out_loss(model: &Gpt2, data: &TokenFile, val_start: usize, cfg: &PretrainConfig) -> Result<f32> {
    let _guard = engine::no_grad();
    let span = data.len() - val_start - cfg.seq_len - 1;
    let n = cfg.eval_batches * cfg.batch;
    let mut total = 0f64;
    for i in 0..n {
        let w = data.window(val_start + span * i / n.max(1), cfg.seq_len + 1);
        let ids = Tensor::new(w[..cfg.seq_len].to_vec(), &[1, cfg.seq_len])?;
        let targets = Tensor::new(w[1..].to_vec(), &[1, cfg.seq_len])?;
        total += model.loss(&ids, &targets)?.to_scalar()? as f64;
    }
    Ok((total / n.max(1) as f64) as f32)
}

const MOMENTS: &str = "optimizer.safetensors";

/// Write a complete checkpoint into a fresh directory, then point `trainer.json` at it (one atomic
/// rename): a crash at any moment leaves the previous checkpoint intact and pointed to.
fn save_checkpoint(model: &Gpt2, opt: &AdamW, cfg: &PretrainConfig, out: &Path) -> Result<()> {
    let (step, states) = opt.state();
    let name = format!("trainer-{step}");
    let dir = out.join(&name);
    hf::save(model, &dir, DType::F32)?;
    let mut moments = Vec::with_capacity(2 * states.len());
    let mut param_steps = std::collections::BTreeMap::new();
    for (p, st) in opt.params().into_iter().zip(&states) {
        let pname = param_name(model, p)?;
        moments.push((format!("m.{pname}"), Tensor::new(st.m.clone(), p.shape())?));
        moments.push((format!("v.{pname}"), Tensor::new(st.v.clone(), p.shape())?));
        param_steps.insert(pname.to_string(), st.step);
    }
    engine::safetensors::save(dir.join(MOMENTS), &moments, None, None)?;
    let state = TrainerState { step, dir: name.clone(), config: cfg.clone(), param_steps };
    engine::safetensors::write_atomic(&out.join("trainer.json"), serde_json::to_string_pretty(&state)?.as_bytes())?;
    // The HF export at the top of `out` (not used for resuming).
    hf::save(model, out, DType::F32)?;
    for entry in std::fs::read_dir(out)?.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with("trainer-") && n != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

fn param_name<'a>(model: &'a Gpt2, p: &Tensor) -> Result<&'a str> {
    model.params().iter().find(|(_, t)| t.id() == p.id()).map(|(n, _)| n.as_str()).context("optimizer parameter not in the model")
}

fn load_checkpoint(out: &Path) -> Result<(Gpt2, TrainerState, Vec<ParamState>)> {
    let pointer: PathBuf = out.join("trainer.json");
    let text = std::fs::read_to_string(&pointer).with_context(|| format!("--resume: {} not found: no checkpoint to resume", pointer.display()))?;
    let state: TrainerState = serde_json::from_str(&text).with_context(|| format!("{}: corrupt", pointer.display()))?;
    let dir = out.join(&state.dir);
    let model = hf::load(&dir)?;
    let moments = engine::safetensors::Reader::open(dir.join(MOMENTS))?;
    // Moments in the optimizer's parameter order, matched by name.
    let opt = AdamW::new(model.param_groups(state.config.weight_decay), AdamWConfig::default())?;
    let mut states = Vec::new();
    for p in opt.params() {
        let name = param_name(&model, p)?;
        let step = *state.param_steps.get(name).with_context(|| format!("{}: no optimizer step for {name}", pointer.display()))?;
        let m = moments.get_as(&format!("m.{name}"), p.shape(), DType::F32)?.to_vec_f32()?;
        let v = moments.get_as(&format!("v.{name}"), p.shape(), DType::F32)?.to_vec_f32()?;
        states.push(ParamState { step, m, v });
    }
    Ok((model, state, states))
}
