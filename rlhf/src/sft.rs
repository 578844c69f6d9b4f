//! Supervised fine-tuning, InstructGPT's first stage: next-token cross-entropy on the response
//! tokens of demonstrations (prompt tokens are context only), AdamW with warmup and cosine decay,
//! gradient clipping, a held-out split, and checkpoints that `resume` continues exactly.
//!
//! Step `s` trains on batch `s % steps_per_epoch` of epoch `s / steps_per_epoch`, whose order is
//! a shuffle seeded by (seed, epoch): a resumed run, from any checkpoint, sees exactly the batches
//! the uninterrupted run would have.
//!
//! Output directory (as `models::pretrain`):
//! ```text
//! config.json, model.safetensors   the latest weights in HF layout (the SFT policy for RM / PPO)
//! metrics.jsonl                    one line per step, with the held-out loss when evaluated
//! trainer.json, trainer-<step>/    the newest resume state (weights + AdamW moments)
//! ```

mod checkpoint;
pub mod encode;

pub use encode::{collate, encode, truncate, SftExample, IGNORE};

use crate::data::Demonstration;
use anyhow::{bail, Result};
use checkpoint::DataFingerprint;
use engine::optim::{Decay, LrSchedule};
use models::{Gpt2, Tokenizer};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Every SFT setting; the `[sft]` table of configs/sft.toml.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    pub epochs: u64,
    /// Demonstrations per step (the last batch of an epoch may be smaller).
    pub batch: usize,
    pub lr: f32,
    pub min_lr: f32,
    /// Warmup, as a fraction of all steps.
    pub warmup_frac: f32,
    pub weight_decay: f32,
    pub beta2: f32,
    pub grad_clip: f32,
    /// Longest input in tokens; 0 = the model's context (n_positions).
    pub max_len: usize,
    /// When truncating, the prompt keeps at least this many of its last tokens.
    pub min_prompt_tokens: usize,
    /// Fraction of demonstrations held out for the validation loss (0 = none).
    pub val_fraction: f32,
    /// Held-out loss every this many steps (0 = at the end of each epoch only).
    pub eval_every: u64,
    /// A checkpoint every this many steps (0 = at the end of each epoch only).
    pub checkpoint_every: u64,
    pub seed: u64,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            epochs: 2,
            batch: 8,
            lr: 1e-4,
            min_lr: 1e-5,
            warmup_frac: 0.05,
            weight_decay: 0.1,
            beta2: 0.95,
            grad_clip: 1.0,
            max_len: 0,
            min_prompt_tokens: 64,
            val_fraction: 0.05,
            eval_every: 0,
            checkpoint_every: 0,
            seed: 0,
        }
    }
}

impl SftConfig {
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch == 0 {
            bail!("sft: epochs ({}) and batch ({}) must be at least 1", self.epochs, self.batch);
        }
        if !(self.lr > 0.0 && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            bail!("sft: need 0 <= min_lr ({}) <= lr ({}) and lr > 0", self.min_lr, self.lr);
        }
        if !(0.0..1.0).contains(&self.val_fraction) || !(0.0..=1.0).contains(&self.warmup_frac) {
            bail!("sft: val_fraction ({}) must be in [0, 1) and warmup_frac ({}) in [0, 1]", self.val_fraction, self.warmup_frac);
        }
        Ok(())
    }
}

/// What one step reports (metrics.jsonl lines; the CLI's progress bar).
#[derive(Clone, Debug, Serialize)]
pub struct SftStep {
    pub step: u64,
    pub total_steps: u64,
    /// 1-based epoch this step belongs to.
    pub epoch: u64,
    pub loss: f32,
    pub lr: f32,
    pub grad_norm: f32,
    /// Response tokens the loss counted.
    pub tokens: usize,
    pub tokens_per_s: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f32>,
}

/// Fine-tune `model` on `demos`, writing checkpoints and metrics under `out`. With `resume`, the
/// model, optimizer, step and settings come from `out`'s newest checkpoint instead of `model` and
/// `cfg` (the demonstrations must be the same). `report` sees every step; returning false stops
/// the run after a checkpoint (e.g. on Ctrl-C).
pub fn train_sft(
    model: Gpt2,
    tok: &Tokenizer,
    demos: &[Demonstration],
    cfg: &SftConfig,
    out: &Path,
    resume: bool,
    mut report: impl FnMut(&SftStep) -> bool,
) -> Result<Gpt2> {
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", out.display()))?;
    let (mut model, mut cfg, mut opt, mut start) = (model, cfg.clone(), None, 0);
    let mut resumed_data = None;
    if resume {
        let r = checkpoint::load(out, model.device())?;
        (model, cfg, opt, start, resumed_data) = (r.model, r.run.config, Some(r.opt), r.step, Some(r.run.data));
    }
    cfg.validate()?;
    let mut opt = match opt {
        Some(o) => o,
        None => checkpoint::adamw(&model, &cfg)?,
    };
    let examples = encode_all(tok, &model, demos, &cfg)?;
    let longest = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    model.config().check_training_memory(cfg.batch.min(examples.len()), longest, true, model.device())?;
    let fingerprint = fingerprint(&examples);
    if let Some(saved) = resumed_data.filter(|d| *d != fingerprint) {
        bail!("--resume: {} was trained on {} examples (hash {:x}), these demonstrations give {} (hash {:x})", out.display(), saved.examples, saved.hash, fingerprint.examples, fingerprint.hash);
    }
    let (train, val) = split_holdout(examples.len(), cfg.val_fraction, cfg.seed);
    if train.is_empty() {
        bail!("sft: no training examples ({} demonstrations, val_fraction {})", demos.len(), cfg.val_fraction);
    }
    let per_epoch = train.len().div_ceil(cfg.batch) as u64;
    let total = per_epoch * cfg.epochs;
    let schedule = LrSchedule { peak: cfg.lr, min_lr: cfg.min_lr, warmup_steps: (total as f32 * cfg.warmup_frac) as u64, total_steps: total, decay: Decay::Cosine };
    let metrics_path = out.join("metrics.jsonl");
    // Resuming keeps the lines of the steps that stand; a fresh run starts a fresh file.
    if resume {
        models::checkpoint::keep_metrics_up_to(&metrics_path, start)?;
    }
    let mut metrics = std::fs::OpenOptions::new().create(true).append(resume).write(true).truncate(!resume).open(&metrics_path)?;
    let mut order = (u64::MAX, Vec::new());
    for step in start..total {
        let t0 = Instant::now();
        let (epoch, b) = (step / per_epoch, (step % per_epoch) as usize);
        if order.0 != epoch {
            order = (epoch, epoch_order(&train, cfg.seed, epoch));
        }
        let rows: Vec<&SftExample> = order.1[b * cfg.batch..((b + 1) * cfg.batch).min(train.len())].iter().map(|&i| &examples[i]).collect();
        let (ids, targets, tokens) = collate(&rows)?;
        let loss = model.loss(&ids, &targets)?;
        let mut grads = loss.backward()?;
        let grad_norm = grads.clip_global_norm(cfg.grad_clip)?;
        let lr = schedule.lr(step);
        opt.step(&grads, lr)?;
        let done = step + 1;
        let epoch_end = done % per_epoch == 0;
        let evaluate = !val.is_empty() && (epoch_end || (cfg.eval_every > 0 && done % cfg.eval_every == 0));
        let val_loss = if evaluate { Some(held_out_loss(&model, &examples, &val, cfg.batch)?) } else { None };
        let m = SftStep { step: done, total_steps: total, epoch: epoch + 1, loss: loss.to_scalar()?, lr, grad_norm, tokens, tokens_per_s: tokens as f32 / t0.elapsed().as_secs_f32(), val_loss };
        writeln!(metrics, "{}", serde_json::to_string(&m)?)?;
        let go_on = report(&m);
        if epoch_end || (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0) || !go_on {
            checkpoint::save(&model, &opt, &cfg, fingerprint, out)?;
        }
        if !go_on {
            break;
        }
    }
    Ok(model)
}

/// Tokenize every demonstration for this model's context and vocabulary.
pub fn encode_all(tok: &Tokenizer, model: &Gpt2, demos: &[Demonstration], cfg: &SftConfig) -> Result<Vec<SftExample>> {
    let ctx = model.config().n_positions;
    let max_len = if cfg.max_len == 0 { ctx } else { cfg.max_len.min(ctx) };
    let vocab = model.config().vocab_size;
    demos
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let e = encode(tok, d, max_len, cfg.min_prompt_tokens).map_err(|e| anyhow::anyhow!("demonstration {i}: {e}"))?;
            if let Some(&bad) = e.ids.iter().find(|&&t| t as usize >= vocab) {
                bail!("demonstration {i}: token id {bad} is outside this model's vocabulary of {vocab}");
            }
            Ok(e)
        })
        .collect()
}

/// (train, held-out) example indices: a seeded shuffle, the first `val_fraction` held out (at
/// least one when the fraction is positive and there are two or more examples).
pub fn split_holdout(n: usize, val_fraction: f32, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x5F7_0000_0000_0001));
    let n_val = if val_fraction > 0.0 && n >= 2 { ((n as f32 * val_fraction).round() as usize).clamp(1, n - 1) } else { 0 };
    let train = idx.split_off(n_val);
    (train, idx)
}

/// The training examples' order in `epoch`: a shuffle seeded by (seed, epoch).
pub fn epoch_order(train: &[usize], seed: u64, epoch: u64) -> Vec<usize> {
    let mut order = train.to_vec();
    order.shuffle(&mut StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch));
    order
}

/// Mean loss per response token over the held-out examples (batches of `batch`, no graph).
pub fn held_out_loss(model: &Gpt2, examples: &[SftExample], val: &[usize], batch: usize) -> Result<f32> {
    let _guard = engine::no_grad();
    let (mut total, mut count) = (0f64, 0usize);
    for chunk in val.chunks(batch.max(1)) {
        let rows: Vec<&SftExample> = chunk.iter().map(|&i| &examples[i]).collect();
        let (ids, targets, tokens) = collate(&rows)?;
        // The loss is a mean over the batch's tokens: weight it back to a per-token sum.
        total += model.loss(&ids, &targets)?.to_scalar()? as f64 * tokens as f64;
        count += tokens;
    }
    Ok((total / count.max(1) as f64) as f32)
}

fn fingerprint(examples: &[SftExample]) -> DataFingerprint {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |v: u64| {
        for b in v.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    };
    for e in examples {
        eat(e.prompt_len as u64);
        eat(e.ids.len() as u64);
        e.ids.iter().for_each(|&t| eat(t as u64));
    }
    DataFingerprint { examples: examples.len(), hash: h }
}

