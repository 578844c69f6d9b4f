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
use crate::{checkpoint, Gpt2};
use anyhow::{bail, Context, Result};
use engine::optim::{AdamW, AdamWConfig, Decay, LrSchedule};
use engine::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
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

/// Train `model` on `data`, writing checkpoints and metrics under `out`. With `resume`, the model,
/// optimizer and step come from `out`'s newest checkpoint instead (and its run config is used).
/// `report` sees every step; returning false stops the run after a checkpoint (e.g. on Ctrl-C).
pub fn pretrain(mut model: Gpt2, data: &TokenFile, cfg: &PretrainConfig, out: &Path, resume: bool, mut report: impl FnMut(&StepMetrics) -> bool) -> Result<Gpt2> {
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut cfg = cfg.clone();
    let mut opt = adamw(&model, &cfg)?;
    let mut start = 0;
    if resume {
        let r = checkpoint::load(out, model.device(), adamw)?;
        (model, opt, cfg, start) = (r.model, r.opt, r.run, r.step);
    }
    model.config().check_training_memory(cfg.batch, cfg.seq_len, true, model.device())?;
    let (train_len, val_start) = split(data, &cfg)?;
    let schedule = LrSchedule { peak: cfg.lr, min_lr: cfg.min_lr, warmup_steps: cfg.warmup, total_steps: cfg.steps, decay: Decay::Cosine };
    let metrics_path = out.join("metrics.jsonl");
    // Resuming keeps the lines of the steps that stand; a fresh run starts a fresh file.
    if resume {
        checkpoint::keep_metrics_up_to(&metrics_path, start)?;
    }
    let mut metrics = std::fs::OpenOptions::new().create(true).append(resume).write(true).truncate(!resume).open(&metrics_path)?;
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
            checkpoint::save(&model, &opt, &cfg, out)?;
        }
        if !go_on {
            break;
        }
    }
    Ok(model)
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

fn adamw(model: &Gpt2, cfg: &PretrainConfig) -> Result<AdamW> {
    Ok(AdamW::new(model.param_groups(cfg.weight_decay), AdamWConfig { beta1: 0.9, beta2: cfg.beta2, eps: 1e-8 })?)
}
