//! The reward model: GPT-2's trunk with a scalar head read at each sequence's final real token,
//! trained with InstructGPT's K-wise loss (one prompt's ranking = one batch element, every
//! response forwarded once, the mean over its C(K,2) pairs of -log σ(r_w - r_l)).
//!
//! Checkpoint directory: the trunk in HF layout (`config.json`, `model.safetensors`; the
//! unembedding is unused but kept so any GPT-2 tool reads it), `reward_head.safetensors`
//! (`score.weight` [d, 1], `score.bias` [1]) and `reward.json` (the normalization). Training with
//! `train_checkpointed` also leaves `metrics.jsonl`, `trainer.json` and `trainer-<step>/` there,
//! which `--resume` continues exactly.

use anyhow::{bail, Context, Result};
use engine::optim::{AdamW, AdamWConfig, Decay, LrSchedule, ParamGroup};
use engine::{DType, Tensor};
use models::{hf, Gpt2};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

pub const HEAD_FILE: &str = "reward_head.safetensors";
pub const META_FILE: &str = "reward.json";

/// normalized = gain · (raw + bias).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub bias: f32,
    pub gain: f32,
}

impl Default for Normalization {
    fn default() -> Self {
        Normalization { bias: 0.0, gain: 1.0 }
    }
}

/// A ranking of K responses in a batch of forwarded responses: `offset..offset+K` are its
/// responses' rows; `ranking` holds response indices (0..K), best first.
#[derive(Clone, Debug, PartialEq)]
pub struct RankGroup {
    pub offset: usize,
    pub ranking: Vec<usize>,
}

/// The paper's loss over a batch of rankings. `rewards`: [N] (one per forwarded response).
/// Returns the total (mean over groups, a scalar tensor with gradients) and each group's loss.
pub fn rm_loss(rewards: &Tensor, groups: &[RankGroup]) -> engine::Result<(Tensor, Vec<f64>)> {
    let n = rewards.numel();
    let (mut win, mut lose, mut weight) = (Vec::new(), Vec::new(), Vec::new());
    for g in groups {
        let k = g.ranking.len();
        if k < 2 || g.ranking.iter().any(|&i| g.offset + i >= n || i >= k) {
            return Err(engine::Error::Msg(format!("reward loss: bad ranking {:?} at offset {} of {n} rewards", g.ranking, g.offset)));
        }
        let w = 1.0 / (groups.len() as f64 * (k * (k - 1) / 2) as f64);
        for i in 0..k {
            for j in i + 1..k {
                win.push((g.offset + g.ranking[i]) as i64);
                lose.push((g.offset + g.ranking[j]) as i64);
                weight.push(w as f32);
            }
        }
    }
    let p = win.len();
    let flat = rewards.reshape(&[n])?;
    let rw = flat.index_select(0, &Tensor::new(win.clone(), &[p])?)?;
    let rl = flat.index_select(0, &Tensor::new(lose.clone(), &[p])?)?;
    let total = rw.sub(&rl)?.log_sigmoid()?.mul(&Tensor::new(weight, &[p])?.to_device(flat.device())?)?.sum_all()?.neg()?;
    let r: Vec<f64> = flat.to_vec_f32()?.into_iter().map(f64::from).collect();
    let per = groups.iter().map(|g| group_pairs(g).map(|(w, l)| softplus(r[l] - r[w])).sum::<f64>() / pairs(g.ranking.len()) as f64).collect();
    Ok((total, per))
}

fn pairs(k: usize) -> usize {
    k * (k - 1) / 2
}

/// (winner row, loser row) of every pair of a group.
fn group_pairs(g: &RankGroup) -> impl Iterator<Item = (usize, usize)> + '_ {
    let k = g.ranking.len();
    (0..k).flat_map(move |i| (i + 1..k).map(move |j| (g.offset + g.ranking[i], g.offset + g.ranking[j])))
}

/// -log σ(-x) = log(1 + e^x), stably.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Pairwise accuracy (strict: a tie is wrong).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Accuracy {
    pub correct: usize,
    pub pairs: usize,
    /// correct / pairs over all groups.
    pub pooled: f64,
    /// The mean of each group's accuracy.
    pub mean_over_prompts: f64,
    pub per_prompt: Vec<f64>,
}

pub fn rm_accuracy(rewards: &[f32], groups: &[RankGroup]) -> Accuracy {
    let per: Vec<(usize, usize)> = groups.iter().map(|g| (group_pairs(g).filter(|&(w, l)| rewards[w] > rewards[l]).count(), pairs(g.ranking.len()))).collect();
    let correct = per.iter().map(|p| p.0).sum();
    let total: usize = per.iter().map(|p| p.1).sum();
    let per_prompt: Vec<f64> = per.iter().map(|&(c, n)| c as f64 / n as f64).collect();
    Accuracy {
        correct,
        pairs: total,
        pooled: correct as f64 / total.max(1) as f64,
        mean_over_prompts: per_prompt.iter().sum::<f64>() / per_prompt.len().max(1) as f64,
        per_prompt,
    }
}

/// A tokenized ranking: the prompt's ids and K responses' ids (each ending as the model should
/// read it, e.g. with EOS).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRanking {
    pub prompt: Vec<u32>,
    pub responses: Vec<Vec<u32>>,
    pub ranking: Vec<usize>,
}

impl TokenRanking {
    /// Tokenize as SFT does: prompt ++ response ++ EOT, prompt and response encoded separately.
    pub fn from_comparison(tok: &models::Tokenizer, c: &crate::data::Comparison) -> TokenRanking {
        let eot = tok.eot();
        TokenRanking {
            prompt: tok.encode(&c.prompt),
            responses: c.responses.iter().map(|r| tok.encode(r).into_iter().chain([eot]).collect()).collect(),
            ranking: c.ranking.clone(),
        }
    }
}

/// GPT-2 trunk + scalar head. `clone` shares parameters; `copy` makes independent ones.
#[derive(Clone, Debug)]
pub struct RewardModel {
    pub trunk: Gpt2,
    /// [d, 1]
    pub head_w: Tensor,
    /// [1]
    pub head_b: Tensor,
    pub norm: Normalization,
}

impl RewardModel {
    /// From an SFT model: its trunk (the unembedding is unused), a fresh head with weights
    /// N(0, 1/sqrt(d+1)) (the paper's init; std = 1/sqrt(d+1)) and bias 0.
    pub fn from_sft(sft: &Gpt2, seed: u64) -> engine::Result<RewardModel> {
        let d = sft.config().n_embd;
        let mut rng = StdRng::seed_from_u64(seed);
        let head_w = Tensor::randn(&[d, 1], 0.0, 1.0 / ((d + 1) as f32).sqrt(), &mut rng).to_device(sft.device())?.var();
        let head_b = Tensor::zeros_on(&[1], sft.device())?.var();
        Ok(RewardModel { trunk: sft.copy()?, head_w, head_b, norm: Normalization::default() })
    }

    /// The same reward model with its parameters on `device` (shared when already there).
    pub fn to_device(&self, device: engine::Device) -> engine::Result<RewardModel> {
        let head = |t: &Tensor| -> engine::Result<Tensor> { Ok(if t.device() == device { t.clone() } else { t.to_device(device)?.var() }) };
        Ok(RewardModel { trunk: self.trunk.to_device(device)?, head_w: head(&self.head_w)?, head_b: head(&self.head_b)?, norm: self.norm })
    }

    /// Independent parameters with the same values (PPO's value model).
    pub fn copy(&self) -> engine::Result<RewardModel> {
        Ok(RewardModel { trunk: self.trunk.copy()?, head_w: self.head_w.to_dtype(DType::F32)?.detach().var(), head_b: self.head_b.to_dtype(DType::F32)?.detach().var(), norm: self.norm })
    }

    pub fn params(&self) -> Vec<Tensor> {
        let mut p: Vec<Tensor> = self.trunk.params().iter().map(|(_, t)| t.clone()).collect();
        p.push(self.head_w.clone());
        p.push(self.head_b.clone());
        p
    }

    /// Every parameter under a unique name: the trunk's (HF names), `score.weight`, `score.bias`.
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut p = self.trunk.params().to_vec();
        p.push(("score.weight".into(), self.head_w.clone()));
        p.push(("score.bias".into(), self.head_b.clone()));
        p
    }

    pub fn param_groups(&self, weight_decay: f32) -> Vec<ParamGroup> {
        let mut g = self.trunk.param_groups(weight_decay);
        g[0].params.push(self.head_w.clone());
        g[1].params.push(self.head_b.clone());
        g
    }

    /// The head on every position: [B, T, C] hidden states -> [B, T] (PPO's values). Rewards
    /// and values are written f32 under autocast too (compared and subtracted, not passed on).
    pub fn head(&self, h: &Tensor) -> engine::Result<Tensor> {
        let (b, t) = (h.shape()[0], h.shape()[1]);
        h.matmul_as(&self.head_w, DType::F32)?.add(&self.head_b)?.reshape(&[b, t])
    }

    /// Raw (unnormalized) rewards [B] read at `last[b]` of each row of `ids` [B, T]. Right padding
    /// past `last` never matters (causal attention); `left_pad` as in `Gpt2::hidden_states`.
    pub fn raw_rewards_at(&self, ids: &Tensor, left_pad: Option<&[usize]>, last: &[usize]) -> engine::Result<Tensor> {
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        let h = self.trunk.hidden_states(ids, left_pad, None)?;
        let c = h.shape()[2];
        let idx: Vec<i64> = last.iter().enumerate().map(|(r, &i)| (r * t + i) as i64).collect();
        let picked = h.reshape(&[b * t, c])?.index_select(0, &Tensor::new(idx, &[b])?)?;
        picked.matmul_as(&self.head_w, DType::F32)?.add(&self.head_b)?.reshape(&[b])
    }

    /// Raw rewards of token sequences (right-padded into one batch; each longer than the model's
    /// window keeps its last n_positions tokens).
    pub fn raw_rewards(&self, seqs: &[Vec<u32>]) -> engine::Result<Tensor> {
        let (ids, last) = right_pad(seqs, self.trunk.config().n_positions)?;
        self.raw_rewards_at(&ids, None, &last)
    }

    /// Normalized scores (no gradients), as PPO uses them.
    pub fn scores(&self, seqs: &[Vec<u32>]) -> engine::Result<Vec<f32>> {
        let _g = engine::no_grad();
        Ok(self.raw_rewards(seqs)?.to_vec_f32()?.into_iter().map(|r| self.norm.gain * (r + self.norm.bias)).collect())
    }

    /// Fit the normalization on samples (prompt + SFT response ids): mean 0, and std 1 if `gain`.
    pub fn fit_normalization(&mut self, samples: &[Vec<u32>], gain: bool, batch: usize) -> engine::Result<Normalization> {
        let _g = engine::no_grad();
        let mut raw = Vec::with_capacity(samples.len());
        for chunk in samples.chunks(batch.max(1)) {
            raw.extend(self.raw_rewards(chunk)?.to_vec_f32()?.into_iter().map(f64::from));
        }
        let n = raw.len().max(1) as f64;
        let mean = raw.iter().sum::<f64>() / n;
        let std = (raw.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
        self.norm = Normalization { bias: -mean as f32, gain: if gain && std > 0.0 { (1.0 / std) as f32 } else { 1.0 } };
        Ok(self.norm)
    }

    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        hf::save(&self.trunk, dir, DType::F32)?;
        engine::safetensors::save(dir.join(HEAD_FILE), &[("score.weight".into(), self.head_w.clone()), ("score.bias".into(), self.head_b.clone())], Some(DType::F32), None)?;
        let meta = serde_json::json!({ "normalization": self.norm, "head": "score.weight [n_embd, 1], score.bias [1], read at the last real token", "applied": "gain * (raw + bias)" });
        engine::safetensors::write_atomic(&dir.join(META_FILE), serde_json::to_string_pretty(&meta)?.as_bytes())?;
        Ok(())
    }

    pub fn load(dir: impl AsRef<Path>) -> Result<RewardModel> {
        let dir = dir.as_ref();
        let trunk = hf::load(dir).with_context(|| format!("{}: reward-model trunk", dir.display()))?;
        let d = trunk.config().n_embd;
        let r = engine::safetensors::Reader::open(dir.join(HEAD_FILE))?;
        let head_w = r.get_as("score.weight", &[d, 1], DType::F32)?.contiguous()?.detach().var();
        let head_b = r.get_as("score.bias", &[1], DType::F32)?.contiguous()?.detach().var();
        let meta_path = dir.join(META_FILE);
        let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).with_context(|| format!("{}: cannot read", meta_path.display()))?)?;
        let norm: Normalization = serde_json::from_value(meta["normalization"].clone()).with_context(|| format!("{}: bad \"normalization\"", meta_path.display()))?;
        Ok(RewardModel { trunk, head_w, head_b, norm })
    }
}

/// Right-pad token sequences (pad id 0) into [B, T]; each too long keeps its last `max_len`
/// tokens. Returns the ids and each row's last real index.
pub fn right_pad(seqs: &[Vec<u32>], max_len: usize) -> engine::Result<(Tensor, Vec<usize>)> {
    if seqs.is_empty() || seqs.iter().any(|s| s.is_empty()) {
        return Err(engine::Error::Msg("reward model: empty batch or empty sequence".into()));
    }
    let cut: Vec<&[u32]> = seqs.iter().map(|s| &s[s.len().saturating_sub(max_len)..]).collect();
    let t = cut.iter().map(|s| s.len()).max().unwrap_or(1);
    let mut ids = vec![0i64; seqs.len() * t];
    for (r, s) in cut.iter().enumerate() {
        for (j, &x) in s.iter().enumerate() {
            ids[r * t + j] = x as i64;
        }
    }
    Ok((Tensor::new(ids, &[seqs.len(), t])?, cut.iter().map(|s| s.len() - 1).collect()))
}

/// A batch's loss tensor, per-prompt losses, raw rewards and groups.
pub type BatchLoss = (Tensor, Vec<f64>, Vec<f32>, Vec<RankGroup>);

/// Forward every response of `batch` once; the loss and each response's raw reward.
pub fn batch_loss(rm: &RewardModel, batch: &[&TokenRanking]) -> engine::Result<BatchLoss> {
    let mut seqs = Vec::new();
    let mut groups = Vec::new();
    for c in batch {
        groups.push(RankGroup { offset: seqs.len(), ranking: c.ranking.clone() });
        seqs.extend(c.responses.iter().map(|r| [c.prompt.as_slice(), r.as_slice()].concat()));
    }
    let rewards = rm.raw_rewards(&seqs)?;
    let (loss, per) = rm_loss(&rewards, &groups)?;
    let values = rewards.to_vec_f32()?;
    Ok((loss, per, values, groups))
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RmConfig {
    pub epochs: usize,
    /// Rankings (prompts) per step.
    pub batch: usize,
    pub lr: f32,
    pub min_lr: f32,
    pub warmup: u64,
    pub weight_decay: f32,
    pub grad_clip: f32,
    pub eval_every: u64,
    /// A resumable checkpoint every this many steps (0: at the end of each epoch only); used by
    /// `train_checkpointed`.
    pub checkpoint_every: u64,
    pub seed: u64,
}

impl Default for RmConfig {
    fn default() -> Self {
        RmConfig { epochs: 1, batch: 8, lr: 9e-6, min_lr: 9e-7, warmup: 0, weight_decay: 0.0, grad_clip: 1.0, eval_every: 50, checkpoint_every: 0, seed: 0 }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RmStep {
    pub step: u64,
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub lr: f32,
    pub grad_norm: f32,
    pub responses_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy_mean_over_prompts: Option<f64>,
}

/// Held-out loss (mean over prompts) and accuracy, no gradients.
pub fn evaluate(rm: &RewardModel, data: &[TokenRanking], batch: usize) -> Result<(f64, Accuracy)> {
    let _g = engine::no_grad();
    let (mut losses, mut rewards, mut groups) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in data.chunks(batch.max(1)) {
        let refs: Vec<&TokenRanking> = chunk.iter().collect();
        let (_, per, vals, gs) = batch_loss(rm, &refs)?;
        losses.extend(per);
        let off = rewards.len();
        rewards.extend(vals);
        groups.extend(gs.into_iter().map(|g| RankGroup { offset: g.offset + off, ranking: g.ranking }));
    }
    if losses.is_empty() {
        bail!("reward model evaluation: no data");
    }
    Ok((losses.iter().sum::<f64>() / losses.len() as f64, rm_accuracy(&rewards, &groups)))
}

fn adamw(rm: &RewardModel, cfg: &RmConfig) -> Result<AdamW> {
    Ok(AdamW::new(rm.param_groups(cfg.weight_decay), AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8 })?)
}

/// Train on `train` (shuffled each epoch, seeded), evaluating on `val` every `eval_every` steps
/// and at the end; each step's metrics go to `metrics` (JSONL) when given and to `report`.
pub fn train(rm: &RewardModel, train: &[TokenRanking], val: &[TokenRanking], cfg: &RmConfig, metrics: Option<&mut dyn Write>, mut report: impl FnMut(&RmStep)) -> Result<Vec<RmStep>> {
    check_memory(rm, train, cfg)?;
    let mut opt = adamw(rm, cfg)?;
    run_steps(rm, &mut opt, train, val, cfg, 0, metrics, |m, _, _| {
        report(m);
        Ok(true)
    })
}

/// Err when a batch of rankings (each element a whole ranking: its K responses, each after the
/// prompt) would not fit in the machine's memory on the CPU.
fn check_memory(rm: &RewardModel, train: &[TokenRanking], cfg: &RmConfig) -> Result<()> {
    let k = train.iter().map(|r| r.responses.len()).max().unwrap_or(0);
    let longest = train.iter().flat_map(|r| r.responses.iter().map(|x| r.prompt.len() + x.len() + 1)).max().unwrap_or(0);
    let rows = cfg.batch.min(train.len()).saturating_mul(k);
    Ok(rm.trunk.config().check_training_memory(rows, longest, false, rm.trunk.device())?)
}

/// What an RM checkpoint's trainer.json keeps besides the step: the settings and the data.
#[derive(Serialize, Deserialize)]
struct RmRun {
    config: RmConfig,
    train: crate::DataFingerprint,
    val: crate::DataFingerprint,
}

/// `train`, with `metrics.jsonl` and resumable checkpoints under `out` (models::checkpoint's
/// layout: `trainer.json` + `trainer-<step>/` with the trunk and head weights and AdamW's moments)
/// every `checkpoint_every` steps, at the end of each epoch, and when `report` returns false (which
/// stops the run). With `resume`, the weights (written into `rm`'s parameters), the optimizer, the
/// step and the settings come from `out`'s newest checkpoint instead of `rm` and `cfg`; `train`
/// and `val` must be the rankings that run had. The trained weights end up in `rm`; nothing is
/// exported (save `rm` once its normalization is fitted).
pub fn train_checkpointed(rm: &RewardModel, train: &[TokenRanking], val: &[TokenRanking], cfg: &RmConfig, out: &Path, resume: bool, mut report: impl FnMut(&RmStep) -> bool) -> Result<Vec<RmStep>> {
    check_memory(rm, train, cfg)?; // before an earlier run's metrics.jsonl is truncated
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let run = RmRun { config: cfg.clone(), train: fingerprint(train), val: fingerprint(val) };
    let named = rm.named_params();
    let metrics_path = out.join("metrics.jsonl");
    let (run, mut opt, start) = if resume {
        let saved: RmRun = models::checkpoint::read_run(out)?;
        for (what, was, now) in [("training", saved.train, run.train), ("held-out", saved.val, run.val)] {
            if was != now {
                bail!("--resume: {} was trained with {what} rankings of {was}, these give {now} (same files and val_fraction?)", out.display());
            }
        }
        let mut opt = adamw(rm, &saved.config)?;
        let (_, step) = models::checkpoint::load_named::<RmRun>(out, &named, &mut opt)?;
        models::checkpoint::keep_metrics_up_to(&metrics_path, step)?;
        (saved, opt, step)
    } else {
        std::fs::File::create(&metrics_path).with_context(|| format!("{}: cannot create", metrics_path.display()))?;
        (run, adamw(rm, cfg)?, 0)
    };
    let mut metrics = std::fs::OpenOptions::new().append(true).open(&metrics_path)?;
    let every = run.config.checkpoint_every;
    run_steps(rm, &mut opt, train, val, &run.config, start, Some(&mut metrics), |m, opt, epoch_end| {
        let go_on = report(m);
        if epoch_end || (every > 0 && m.step.is_multiple_of(every)) || !go_on {
            models::checkpoint::save_named(&named, opt, &run, out)?;
        }
        Ok(go_on)
    })
}

/// The settings of the newest checkpoint under `out` (what `train_checkpointed` resumes with).
pub fn resumed_config(out: &Path) -> Result<RmConfig> {
    Ok(models::checkpoint::read_run::<RmRun>(out)?.config)
}

fn fingerprint(data: &[TokenRanking]) -> crate::DataFingerprint {
    let mut h = crate::fingerprint::Fnv::new();
    for r in data {
        h.tokens(&r.prompt);
        h.eat(r.responses.len() as u64);
        r.responses.iter().for_each(|x| h.tokens(x));
        r.ranking.iter().for_each(|&i| h.eat(i as u64));
    }
    crate::DataFingerprint { items: data.len(), hash: h.finish() }
}

/// Steps `start..` of the run (step `s` trains on the same batch, at the same learning rate, as
/// in an uninterrupted run); `after` sees each step's metrics, the optimizer and whether the step
/// ended an epoch, and stops the run by returning false.
#[allow(clippy::too_many_arguments)]
fn run_steps(
    rm: &RewardModel,
    opt: &mut AdamW,
    train: &[TokenRanking],
    val: &[TokenRanking],
    cfg: &RmConfig,
    start: u64,
    mut metrics: Option<&mut dyn Write>,
    mut after: impl FnMut(&RmStep, &AdamW, bool) -> Result<bool>,
) -> Result<Vec<RmStep>> {
    if train.is_empty() {
        bail!("reward model: no training rankings");
    }
    let steps_per_epoch = train.len().div_ceil(cfg.batch.max(1)) as u64;
    let total = steps_per_epoch * cfg.epochs as u64;
    let schedule = LrSchedule { peak: cfg.lr, min_lr: cfg.min_lr, warmup_steps: cfg.warmup, total_steps: total, decay: Decay::Cosine };
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut out = Vec::new();
    let mut step = 0u64;
    for epoch in 0..cfg.epochs {
        // Every epoch's shuffle is replayed, also before `start`: the order depends on all of them.
        order.shuffle(&mut rng);
        for chunk in order.chunks(cfg.batch.max(1)) {
            if step < start {
                step += 1;
                continue;
            }
            let t0 = std::time::Instant::now();
            let batch: Vec<&TokenRanking> = chunk.iter().map(|&i| &train[i]).collect();
            let (loss, per, vals, groups) = batch_loss(rm, &batch)?;
            let mut grads = loss.backward()?;
            let grad_norm = grads.clip_global_norm(cfg.grad_clip)?;
            let lr = schedule.lr(step);
            opt.step(&grads, lr)?;
            step += 1;
            let acc = rm_accuracy(&vals, &groups);
            let (mut val_loss, mut val_accuracy, mut val_mean) = (None, None, None);
            if !val.is_empty() && (step.is_multiple_of(cfg.eval_every.max(1)) || step == total) {
                let (l, a) = evaluate(rm, val, cfg.batch)?;
                (val_loss, val_accuracy, val_mean) = (Some(l), Some(a.pooled), Some(a.mean_over_prompts));
            }
            let m = RmStep {
                step,
                epoch,
                loss: per.iter().sum::<f64>() / per.len() as f64,
                accuracy: acc.pooled,
                lr,
                grad_norm,
                responses_per_s: vals.len() as f64 / t0.elapsed().as_secs_f64(),
                val_loss,
                val_accuracy,
                val_accuracy_mean_over_prompts: val_mean,
            };
            if let Some(w) = metrics.as_deref_mut() {
                writeln!(w, "{}", serde_json::to_string(&m)?)?;
            }
            let go_on = after(&m, opt, step.is_multiple_of(steps_per_epoch))?;
            out.push(m);
            if !go_on {
                return Ok(out);
            }
        }
    }
    Ok(out)
}
