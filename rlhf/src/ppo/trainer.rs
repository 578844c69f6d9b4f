//! The PPO / PPO-ptx trainer: the policy starts as the SFT model, the reference is a frozen copy
//! of it, the value model starts as the reward model (trunk + scalar head, read at every
//! position). Each iteration samples a rollout batch with `models::generate`, scores it, computes
//! KL-shaped rewards and GAE (`math`), then runs several epochs of minibatch updates. With
//! `ptx_coef` (the paper's gamma) > 0, every optimizer step also adds gamma times the LM loss on
//! a batch of pretraining windows: one objective, one step. The policy and the value model share
//! one AdamW with their own peak learning rates (`lr`, `value_lr`) on one linear schedule.
//!
//! `train_checkpointed` keeps metrics.jsonl and resumable checkpoints (models::checkpoint's
//! layout); `PpoTrainer::resume` continues such a run bit for bit: generation is seeded by
//! (seed, iteration), minibatch order by (seed, iteration), ptx batches by the step, and the prompt
//! draws are replayed.
//!
//! Rollout layout: prompts left-padded to L, responses right-padded to T, so response token j of
//! every row sits at column L + j and is predicted by column L + j - 1 (as in `generate`). Each
//! response is truncated after its first EOS (generate stops there); padding is a separate id
//! (0 here, never fed as a real token: every position past a row's end is masked).

use super::math::{compute_advantages, explained_variance, masked_mean, masked_var_unbiased, ppo_loss, KlController, LossInputs, PpoHyper};
use crate::reward::RewardModel;
use anyhow::{bail, Result};
use engine::optim::{AdamW, AdamWConfig, Decay, LrSchedule};
use engine::{DType, Tensor};
use models::tokens::TokenFile;
use models::{generate, hf, GenerateConfig, Gpt2};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// PPO iterations (one rollout batch each).
    pub iterations: u64,
    /// Prompts per rollout batch.
    pub rollout_batch: usize,
    /// Rows per optimizer step.
    pub minibatch: usize,
    /// Passes over each rollout batch.
    pub ppo_epochs: usize,
    /// The policy's peak learning rate, annealed linearly to zero over all optimizer steps.
    pub lr: f32,
    /// The value model's peak learning rate, on the same schedule (None: `lr`).
    pub value_lr: Option<f32>,
    /// The first this many iterations train only the value model: it starts as the reward model,
    /// which was trained to score whole responses, not prefixes, so its first estimates are poor
    /// (explained variance below 0) and the first policy steps would follow noisy advantages.
    pub value_warmup: u64,
    pub warmup: u64,
    pub weight_decay: f32,
    pub grad_clip: f32,
    pub max_new_tokens: usize,
    pub temperature: f32,
    /// None: responses only end at max_new_tokens.
    pub eos_token_id: Option<u32>,
    /// Score given to responses that end without EOS (None: the reward model's score).
    pub no_eos_score: Option<f32>,
    /// Initial (or fixed) KL coefficient beta.
    pub init_kl_coef: f64,
    /// Some: adaptive controller towards this mean sequence KL (Ziegler et al.).
    pub kl_target: Option<f64>,
    pub kl_horizon: f64,
    pub gamma: f64,
    pub lam: f64,
    pub cliprange: f64,
    pub cliprange_value: f64,
    pub vf_coef: f64,
    /// PPO-ptx's gamma: weight of the pretraining LM loss (0 = plain PPO).
    pub ptx_coef: f32,
    pub ptx_batch: usize,
    pub ptx_seq_len: usize,
    pub seed: u64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            iterations: 100,
            rollout_batch: 16,
            minibatch: 4,
            ppo_epochs: 4,
            lr: 1e-5,
            value_lr: None,
            value_warmup: 0,
            warmup: 0,
            weight_decay: 0.0,
            grad_clip: 1.0,
            max_new_tokens: 32,
            temperature: 1.0,
            eos_token_id: Some(models::tokenizer::EOT),
            no_eos_score: None,
            init_kl_coef: 0.02,
            kl_target: None,
            kl_horizon: 10000.0,
            gamma: 1.0,
            lam: 0.95,
            cliprange: 0.2,
            cliprange_value: 0.2,
            vf_coef: 0.1,
            ptx_coef: 0.0,
            ptx_batch: 4,
            ptx_seq_len: 64,
            seed: 0,
        }
    }
}

/// One iteration's metrics (a console line and a JSONL record).
#[derive(Clone, Debug, Serialize)]
pub struct PpoMetrics {
    pub iteration: u64,
    pub score_mean: f64,
    pub score_std: f64,
    /// Mean sequence KL (k1, summed over tokens) of the rollout: what the penalty optimizes.
    pub kl: f64,
    pub non_score_reward: f64,
    pub kl_coef: f64,
    /// Mean per-token entropy of the policy on its responses (at the sampling temperature).
    pub entropy: f64,
    pub pg_loss: f64,
    pub vf_loss: f64,
    pub pg_clipfrac: f64,
    pub vf_clipfrac: f64,
    pub approx_kl: f64,
    pub value_explained_variance: f64,
    pub returns_mean: f64,
    pub returns_var: f64,
    pub response_length: f64,
    pub eos_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ptx_loss: Option<f64>,
    /// The policy's learning rate at the iteration's last optimizer step.
    pub lr: f32,
    /// The value model's, at the same step.
    pub value_lr: f32,
    pub rollout_s: f64,
    pub scoring_s: f64,
    pub training_s: f64,
    /// Response tokens generated per second of rollout.
    pub tokens_per_s: f64,
}

impl PpoMetrics {
    pub fn line(&self) -> String {
        let ptx = self.ptx_loss.map(|p| format!(" ptx {p:.3}")).unwrap_or_default();
        format!(
            "it {} | score {:+.3} | kl {:.3} (beta {:.3}) | ent {:.2} | pg {:+.4} vf {:.4} | clip {:.2}/{:.2} | akl {:.4} | ev {:.2} | len {:.1} eos {:.2}{ptx} | {:.1}s+{:.1}s+{:.1}s {:.0} tok/s",
            self.iteration,
            self.score_mean,
            self.kl,
            self.kl_coef,
            self.entropy,
            self.pg_loss,
            self.vf_loss,
            self.pg_clipfrac,
            self.vf_clipfrac,
            self.approx_kl,
            self.value_explained_variance,
            self.response_length,
            self.eos_rate,
            self.rollout_s,
            self.scoring_s,
            self.training_s,
            self.tokens_per_s
        )
    }
}

pub struct PpoTrainer {
    pub cfg: PpoConfig,
    pub policy: Gpt2,
    pub reference: Gpt2,
    pub value: RewardModel,
    pub reward: RewardModel,
    pub kl: KlController,
    opt: AdamW,
    schedule: LrSchedule,
    /// The policy's and the value model's learning rates are these times the schedule's.
    lr_scales: (f32, f32),
    step: u64,
    /// Iterations `train` has completed (a resumed trainer continues after them).
    iterations_done: u64,
    /// The data fingerprint of the checkpoint this trainer was resumed from.
    resumed_data: Option<PpoData>,
}

/// What a PPO run was trained on: a resume on anything else is refused.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
struct PpoData {
    prompts: crate::DataFingerprint,
    /// The pretraining tokens (len and a hash of up to 2^20 evenly spaced ones), with ptx_coef > 0.
    ptx: Option<crate::DataFingerprint>,
    /// Hashes of the frozen reference's (the SFT model's) and the scorer's weights.
    reference: u64,
    reward: u64,
}

/// trainer.json's run settings for PPO.
#[derive(Serialize, Deserialize)]
struct PpoRun {
    config: PpoConfig,
    iterations_done: u64,
    /// The KL controller's beta after `iterations_done` iterations.
    kl_coef: f64,
    data: PpoData,
}

/// Logits the scoring pass materializes at once (`scoring_logprobs`): 2^24 floats (64 MiB), or
/// one rollout row's if that is more.
const SCORING_LOGITS: usize = 1 << 24;

/// A left-padded rollout batch: ids [B, L + T] rows and what scoring made of them.
struct Rollout {
    rows: Vec<Vec<i64>>,
    pads: Vec<usize>,
    resp: Vec<Vec<i64>>,
    prompt_len: usize,
    time: usize,
}

impl Rollout {
    fn ids(&self, which: &[usize]) -> Result<(Tensor, Tensor, Vec<usize>)> {
        let w = self.prompt_len + self.time;
        let ids: Vec<i64> = which.iter().flat_map(|&r| self.rows[r].iter().copied()).collect();
        let resp: Vec<i64> = which.iter().flat_map(|&r| self.resp[r].iter().copied()).collect();
        Ok((Tensor::new(ids, &[which.len(), w])?, Tensor::new(resp, &[which.len(), self.time])?, which.iter().map(|&r| self.pads[r]).collect()))
    }
}

/// log p(response token) [B, T] under softmax(logits / temperature) at the response columns
/// (`resp` [B, T]), one fused pass over the logits that never builds the [B, T, V] log-softmax.
fn response_logprobs(model: &Gpt2, ids: &Tensor, resp: &Tensor, pads: &[usize], prompt_len: usize, time: usize, temperature: f32) -> Result<Tensor> {
    let h = model.hidden_states(ids, Some(pads), None)?;
    let logits = model.lm_head(&h.narrow(1, prompt_len - 1, time)?)?;
    Ok(logits.token_logprobs(resp, sampling_temperature(temperature))?)
}

/// The temperature the log-probs are taken at: greedy decoding (0) scores at 1.
fn sampling_temperature(t: f32) -> f32 {
    if t > 0.0 {
        t
    } else {
        1.0
    }
}

/// `response_logprobs` for the no-graph scoring pass, as f64 [B * T], and each response
/// position's entropy under the same distribution when `entropy`. The LM head runs on at most
/// `seqs` rollout rows at a time, so no [B, T, V] tensor exists: at GPT-2 size (V 50257, 64
/// rollouts of 32 tokens) one is 400 MB. Each row goes through exactly the operations
/// `response_logprobs` applies to it: the same numbers, so the first PPO ratio is exactly 1.
#[allow(clippy::too_many_arguments)]
fn scoring_logprobs(model: &Gpt2, ids: &Tensor, resp: &Tensor, pads: &[usize], prompt_len: usize, time: usize, temperature: f32, entropy: bool, seqs: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let _g = engine::no_grad();
    let h = model.hidden_states(ids, Some(pads), None)?;
    let b = ids.shape()[0];
    let hr = h.narrow(1, prompt_len - 1, time)?;
    let t = sampling_temperature(temperature);
    let (mut lp, mut ent) = (Vec::with_capacity(b * time), Vec::with_capacity(if entropy { b * time } else { 0 }));
    // Equal chunks of at most `seqs` rows (no small remainder).
    let chunks = b.div_ceil(seqs.max(1));
    for k in 0..chunks {
        let (start, len) = (k * b / chunks, (k + 1) * b / chunks - k * b / chunks);
        let logits = model.lm_head(&hr.narrow(0, start, len)?)?;
        let resp = resp.narrow(0, start, len)?;
        if entropy {
            let (l, e) = logits.token_logprobs_entropy(&resp, t)?;
            lp.extend(f64s(&l)?);
            ent.extend(f64s(&e)?);
        } else {
            lp.extend(f64s(&logits.token_logprobs(&resp, t)?)?);
        }
    }
    Ok((lp, ent))
}

/// Values [B, T] at the response columns (the state before each response token).
fn response_values(value: &RewardModel, ids: &Tensor, pads: &[usize], prompt_len: usize, time: usize) -> Result<Tensor> {
    let h = value.trunk.hidden_states(ids, Some(pads), None)?;
    Ok(value.head(&h.narrow(1, prompt_len - 1, time)?)?)
}

fn f64s(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_vec_f32()?.into_iter().map(f64::from).collect())
}

impl PpoTrainer {
    /// `sft`: the policy's start and the frozen reference; `reward`: the scorer and the value
    /// model's start.
    pub fn new(sft: &Gpt2, reward: &RewardModel, cfg: PpoConfig) -> Result<PpoTrainer> {
        // The reward/value model may be another size (the paper: a 6B one for every policy), but
        // it reads the policy's tokens and whole sequences.
        let (p, r) = (sft.config(), reward.trunk.config());
        if p.vocab_size != r.vocab_size || r.n_positions < p.n_positions {
            bail!("PPO: the reward model needs the policy's vocabulary ({} tokens, it has {}) and at least its context ({} positions, it has {})", p.vocab_size, r.vocab_size, p.n_positions, r.n_positions);
        }
        if let Some(e) = cfg.eos_token_id.filter(|&e| e as usize >= sft.config().vocab_size) {
            bail!("PPO: eos_token_id {e} is outside the policy's vocabulary of {} (its tokenizer's EOT is {})", sft.config().vocab_size, models::Tokenizer::for_config(sft.config()).eot());
        }
        if cfg.minibatch == 0 || cfg.rollout_batch == 0 || cfg.ppo_epochs == 0 {
            bail!("PPO: rollout_batch, minibatch and ppo_epochs must be positive");
        }
        let value_lr = cfg.value_lr.unwrap_or(cfg.lr);
        if !(cfg.lr >= 0.0 && value_lr >= 0.0 && cfg.lr.is_finite() && value_lr.is_finite()) {
            bail!("PPO: lr ({}) and value_lr ({value_lr}) must be finite and >= 0", cfg.lr);
        }
        let policy = sft.copy()?;
        let reference = sft.copy()?;
        // The value model starts as the reward model with its normalization folded into the head,
        // so its outputs are on the scale of the scores it will predict.
        let mut value = reward.copy()?;
        let n = value.norm;
        value.head_w = value.head_w.mul_scalar(n.gain)?.detach().var();
        value.head_b = value.head_b.add_scalar(n.bias)?.mul_scalar(n.gain)?.detach().var();
        value.norm = crate::reward::Normalization::default();
        // One optimizer, the policy's groups then the value model's, each side at its own rate:
        // the schedule runs at the policy's peak and the value groups are scaled to theirs (or,
        // with a policy lr of 0, the schedule runs at the value model's peak and the policy is
        // scaled to 0).
        let (mut groups, pg) = (policy.param_groups(cfg.weight_decay), value.param_groups(cfg.weight_decay));
        let (n_policy, n_value) = (groups.len(), pg.len());
        groups.extend(pg);
        let mut opt = AdamW::new(groups, AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8 })?;
        let (peak, lr_scales) = if cfg.lr > 0.0 { (cfg.lr, (1.0, value_lr / cfg.lr)) } else { (value_lr, (0.0, 1.0)) };
        let scales: Vec<f32> = std::iter::repeat_n(lr_scales.0, n_policy).chain(std::iter::repeat_n(lr_scales.1, n_value)).collect();
        opt.set_lr_scales(&scales)?;
        let per_iter = (cfg.ppo_epochs * cfg.rollout_batch.div_ceil(cfg.minibatch)) as u64;
        let schedule = LrSchedule { peak, min_lr: 0.0, warmup_steps: cfg.warmup, total_steps: per_iter * cfg.iterations, decay: Decay::Linear };
        let kl = match cfg.kl_target {
            Some(t) => KlController::adaptive(cfg.init_kl_coef, t, cfg.kl_horizon),
            None => KlController::fixed(cfg.init_kl_coef),
        };
        Ok(PpoTrainer { cfg, policy, reference, value, reward: reward.clone(), kl, opt, schedule, lr_scales, step: 0, iterations_done: 0, resumed_data: None })
    }

    fn hyper(&self) -> PpoHyper {
        let c = &self.cfg;
        PpoHyper { beta: self.kl.value, gamma: c.gamma, lam: c.lam, cliprange: c.cliprange, cliprange_value: c.cliprange_value, vf_coef: c.vf_coef, whiten_eps: 1e-8 }
    }

    /// A batch of pretraining windows (inputs, targets) for iteration/step `key`.
    fn ptx_batch(&self, data: &TokenFile, key: u64) -> Result<(Tensor, Tensor)> {
        let c = &self.cfg;
        let len = c.ptx_seq_len.min(self.policy.config().n_positions);
        if data.len() < len + 2 {
            bail!("{}: {} tokens are too few for pretraining windows of {}", data.path().display(), data.len(), len + 1);
        }
        let mut rng = StdRng::seed_from_u64(c.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ key);
        let (mut ids, mut tg) = (Vec::new(), Vec::new());
        for _ in 0..c.ptx_batch {
            let w = data.window(rng.gen_range(0..=data.len() - len - 1), len + 1);
            ids.extend_from_slice(&w[..len]);
            tg.extend_from_slice(&w[1..]);
        }
        Ok((Tensor::new(ids, &[c.ptx_batch, len])?, Tensor::new(tg, &[c.ptx_batch, len])?))
    }

    /// One PPO iteration on `prompts` (token ids); `ptx`: the pretraining tokens (used when
    /// ptx_coef > 0).
    pub fn iteration(&mut self, iteration: u64, prompts: &[Vec<u32>], ptx: Option<&TokenFile>) -> Result<PpoMetrics> {
        let c = self.cfg.clone();
        let vocab = self.policy.config().vocab_size;
        let eos = c.eos_token_id;
        // 1. Rollout.
        let t0 = Instant::now();
        let gen_cfg = GenerateConfig {
            max_new_tokens: c.max_new_tokens,
            temperature: c.temperature,
            top_k: 0,
            top_p: 1.0,
            eos_token_id: eos,
            pad_token_id: 0,
            seed: c.seed.wrapping_mul(1_000_003).wrapping_add(iteration),
            use_cache: true,
        };
        let gen = generate(&self.policy, prompts, &gen_cfg)?;
        let rollout_s = t0.elapsed().as_secs_f64();
        // 2. Scoring: old log-probs, reference log-probs, values, rewards.
        let t1 = Instant::now();
        let b = prompts.len();
        let prompt_len = prompts.iter().map(Vec::len).max().unwrap_or(1);
        let lengths: Vec<usize> = gen.lengths.iter().map(|&l| l.max(1)).collect();
        let time = lengths.iter().copied().max().unwrap_or(1);
        let ended: Vec<bool> = (0..b).map(|r| eos.is_some() && gen.tokens[r].get(gen.lengths[r].wrapping_sub(1)).copied() == eos && gen.lengths[r] > 0).collect();
        let mut ro = Rollout { rows: Vec::new(), pads: Vec::new(), resp: Vec::new(), prompt_len, time };
        for (r, p) in prompts.iter().enumerate() {
            let pad = prompt_len - p.len();
            let resp: Vec<i64> = (0..time).map(|j| if j < lengths[r] { gen.tokens[r][j] as i64 } else { 0 }).collect();
            let row: Vec<i64> = std::iter::repeat_n(0, pad).chain(p.iter().map(|&t| t as i64)).chain(resp.iter().copied()).collect();
            ro.rows.push(row);
            ro.pads.push(pad);
            ro.resp.push(resp);
        }
        let all: Vec<usize> = (0..b).collect();
        let (old_lp, ref_lp, old_v, scores, entropy) = {
            let _g = engine::no_grad();
            let (ids, resp, pads) = ro.ids(&all)?;
            let rows = (SCORING_LOGITS / (vocab * time)).max(1);
            let (lp, per_tok) = scoring_logprobs(&self.policy, &ids, &resp, &pads, prompt_len, time, c.temperature, true, rows)?;
            let mask = super::math::mask_from_lengths(&lengths, time);
            let entropy = masked_mean(&per_tok, &mask);
            let (rlp, _) = scoring_logprobs(&self.reference, &ids, &resp, &pads, prompt_len, time, c.temperature, false, rows)?;
            let v = response_values(&self.value, &ids, &pads, prompt_len, time)?;
            let last: Vec<usize> = (0..b).map(|r| prompt_len + lengths[r] - 1).collect();
            let raw = self.reward.raw_rewards_at(&ids, Some(&pads), &last)?.to_vec_f32()?;
            let n = self.reward.norm;
            let scores: Vec<f64> = raw
                .iter()
                .zip(&ended)
                .map(|(&r, &e)| match (e, c.no_eos_score) {
                    (false, Some(s)) if eos.is_some() => s as f64,
                    _ => (n.gain * (r + n.bias)) as f64,
                })
                .collect();
            (lp, rlp, f64s(&v)?, scores, entropy)
        };
        let hp = self.hyper();
        let adv = compute_advantages(&old_lp, &ref_lp, &old_v, &scores, &lengths, time, &hp)?;
        let scoring_s = t1.elapsed().as_secs_f64();
        // 3. Training: epochs of minibatches, one optimizer step each.
        let t2 = Instant::now();
        let mut rng = StdRng::seed_from_u64(c.seed ^ iteration.wrapping_mul(0x9E37_79B9));
        let (mut pg_sum, mut vf_sum, mut pgc, mut vfc, mut akl, mut ptx_sum, mut n_mb) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0usize);
        let mut lr = 0.0;
        let mut value_lr = 0.0;
        let mut order = all.clone();
        let train_policy = iteration > c.value_warmup;
        for _ in 0..c.ppo_epochs {
            order.shuffle(&mut rng);
            for mb in order.chunks(c.minibatch) {
                let (ids, resp, pads) = ro.ids(mb)?;
                // In the value warm-up the policy gets no gradient (AdamW leaves it and its
                // moments alone); its log-probs are still computed, for the metrics.
                let new_lp = {
                    let _g = (!train_policy).then(engine::no_grad);
                    response_logprobs(&self.policy, &ids, &resp, &pads, prompt_len, time, c.temperature)?
                };
                let new_v = response_values(&self.value, &ids, &pads, prompt_len, time)?;
                let take = |x: &[f64]| -> Vec<f64> { mb.iter().flat_map(|&r| x[r * time..(r + 1) * time].iter().copied()).collect() };
                let (o_lp, o_v, a_w, ret, m) = (take(&old_lp), take(&adv.values), take(&adv.advantages_whitened), take(&adv.returns), take(&adv.mask));
                let inp = LossInputs { old_logprobs: &o_lp, old_values: &o_v, advantages_whitened: &a_w, returns: &ret, mask: &m };
                let out = ppo_loss(&new_lp, &new_v, &inp, &hp)?;
                let mut loss = if train_policy { out.total.clone() } else { out.vf_loss.mul_scalar(c.vf_coef as f32)? };
                if c.ptx_coef > 0.0 && train_policy {
                    let Some(data) = ptx else { bail!("PPO-ptx: ptx_coef {} needs pretraining data", c.ptx_coef) };
                    let (pi, pt) = self.ptx_batch(data, self.step)?;
                    let ptx_loss = self.policy.loss(&pi, &pt)?;
                    ptx_sum += ptx_loss.to_scalar()? as f64;
                    loss = loss.add(&ptx_loss.mul_scalar(c.ptx_coef)?)?;
                }
                let mut grads = loss.backward()?;
                grads.clip_global_norm(c.grad_clip)?;
                let base = self.schedule.lr(self.step);
                (lr, value_lr) = (if train_policy { base * self.lr_scales.0 } else { 0.0 }, base * self.lr_scales.1);
                self.opt.step(&grads, base)?;
                self.step += 1;
                pg_sum += out.pg_loss.to_scalar()? as f64;
                vf_sum += out.vf_loss.to_scalar()? as f64;
                pgc += out.pg_clipfrac;
                vfc += out.vf_clipfrac;
                akl += out.approx_kl;
                n_mb += 1;
            }
        }
        let training_s = t2.elapsed().as_secs_f64();
        let kl_coef = self.kl.value;
        self.kl.update(adv.mean_sequence_kl, b);
        let nm = n_mb.max(1) as f64;
        let smean = scores.iter().sum::<f64>() / b as f64;
        let gen_tokens: usize = gen.lengths.iter().sum();
        Ok(PpoMetrics {
            iteration,
            score_mean: smean,
            score_std: (scores.iter().map(|s| (s - smean).powi(2)).sum::<f64>() / b as f64).sqrt(),
            kl: adv.mean_sequence_kl,
            non_score_reward: adv.mean_sequence_non_score_reward,
            kl_coef,
            entropy,
            pg_loss: pg_sum / nm,
            vf_loss: vf_sum / nm,
            pg_clipfrac: pgc / nm,
            vf_clipfrac: vfc / nm,
            approx_kl: akl / nm,
            value_explained_variance: explained_variance(&adv.values, &adv.returns, &adv.mask),
            returns_mean: masked_mean(&adv.returns, &adv.mask),
            returns_var: masked_var_unbiased(&adv.returns, &adv.mask),
            response_length: gen_tokens as f64 / b as f64,
            eos_rate: ended.iter().filter(|&&e| e).count() as f64 / b as f64,
            ptx_loss: (c.ptx_coef > 0.0 && train_policy).then(|| ptx_sum / nm),
            lr,
            value_lr,
            rollout_s,
            scoring_s,
            training_s,
            tokens_per_s: gen_tokens as f64 / rollout_s.max(1e-9),
        })
    }

    /// Run `cfg.iterations` iterations (those after `iterations_done` on a resumed trainer), each
    /// on `rollout_batch` prompts drawn (seeded) from `prompts`; `report` sees the trainer (e.g.
    /// to checkpoint) and each iteration's metrics, and may stop the run by returning false.
    /// Err when an optimizer step would not fit in the machine's memory on the CPU: it trains the
    /// policy and the value model on a minibatch (and the policy on a pretraining batch for
    /// PPO-ptx).
    fn check_memory(&self, prompts: &[Vec<u32>]) -> Result<()> {
        let c = &self.cfg;
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0) + c.max_new_tokens;
        let with_ptx = c.ptx_coef > 0.0;
        let ptx_len = if with_ptx { c.ptx_seq_len.min(self.policy.config().n_positions) } else { 0 };
        let rows = c.minibatch.min(c.rollout_batch) + if with_ptx { c.ptx_batch } else { 0 };
        self.policy.config().check_training_memory(rows, longest.max(ptx_len), true, self.policy.device())?;
        Ok(self.value.trunk.config().check_training_memory(c.minibatch.min(c.rollout_batch), longest, false, self.policy.device())?)
    }

    pub fn train(&mut self, prompts: &[Vec<u32>], ptx: Option<&TokenFile>, report: impl FnMut(&PpoTrainer, &PpoMetrics) -> Result<bool>) -> Result<Vec<PpoMetrics>> {
        self.check_memory(prompts)?;
        self.run(prompts, ptx, report)
    }

    /// `train` after its memory check (`train_checkpointed` makes it before touching `out`).
    fn run(&mut self, prompts: &[Vec<u32>], ptx: Option<&TokenFile>, mut report: impl FnMut(&PpoTrainer, &PpoMetrics) -> Result<bool>) -> Result<Vec<PpoMetrics>> {
        if prompts.is_empty() {
            bail!("PPO: no prompts");
        }
        let mut rng = StdRng::seed_from_u64(self.cfg.seed.wrapping_add(17));
        // A resumed trainer replays the prompt draws of the iterations it already did.
        for _ in 0..self.iterations_done * self.cfg.rollout_batch as u64 {
            rng.gen_range(0..prompts.len());
        }
        let mut out = Vec::new();
        for it in self.iterations_done..self.cfg.iterations {
            let batch: Vec<Vec<u32>> = (0..self.cfg.rollout_batch).map(|_| prompts[rng.gen_range(0..prompts.len())].clone()).collect();
            let m = self.iteration(it + 1, &batch, ptx)?;
            self.iterations_done = it + 1;
            let go_on = report(self, &m)?;
            out.push(m);
            if !go_on {
                break;
            }
        }
        Ok(out)
    }

    /// Iterations completed by `train` (and by the run a resumed trainer continues).
    pub fn iterations_done(&self) -> u64 {
        self.iterations_done
    }

    /// Every trained parameter under a unique name: `policy.<HF name>`, `value.<HF name>`,
    /// `value.score.weight`, `value.score.bias`.
    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let policy = self.policy.params().iter().map(|(n, t)| (format!("policy.{n}"), t.clone()));
        policy.chain(self.value.named_params().into_iter().map(|(n, t)| (format!("value.{n}"), t))).collect()
    }

    /// The settings of the newest checkpoint under `out` (what `resume` continues with).
    pub fn saved_config(out: &Path) -> Result<PpoConfig> {
        Ok(models::checkpoint::read_run::<PpoRun>(out)?.config)
    }

    /// The trainer `train_checkpointed` left in `out`, to continue exactly: `PpoTrainer::new`
    /// with the run's saved settings, then the policy, the value model, AdamW's moments, the step
    /// and iteration counters and the KL coefficient from the newest checkpoint. `sft` and
    /// `reward` must be the models that run started from (checked by `train_checkpointed`).
    pub fn resume(sft: &Gpt2, reward: &RewardModel, out: &Path) -> Result<PpoTrainer> {
        let saved: PpoRun = models::checkpoint::read_run(out)?;
        let mut t = PpoTrainer::new(sft, reward, saved.config)?;
        let named = t.named_params();
        let (run, step) = models::checkpoint::load_named::<PpoRun>(out, &named, &mut t.opt)?;
        t.step = step;
        t.iterations_done = run.iterations_done;
        t.kl.value = run.kl_coef;
        t.resumed_data = Some(run.data);
        Ok(t)
    }

    /// `train`, with `out/metrics.jsonl` (one line per iteration) and a resumable checkpoint
    /// (models::checkpoint's layout: `trainer.json` + `trainer-<step>/`) every `every` iterations
    /// (0: none before the end), after the last and when `report` stops the run. A trainer from
    /// `resume` continues the run, its metrics file cut back to its checkpoint; it must get the
    /// same prompts and pretraining data, and have been resumed from the same SFT and reward
    /// models.
    pub fn train_checkpointed(&mut self, prompts: &[Vec<u32>], ptx: Option<&TokenFile>, out: &Path, every: u64, mut report: impl FnMut(&PpoTrainer, &PpoMetrics) -> Result<bool>) -> Result<Vec<PpoMetrics>> {
        self.check_memory(prompts)?; // before an earlier run's metrics.jsonl is truncated
        std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", out.display()))?;
        let data = self.data_fingerprint(prompts, ptx)?;
        let metrics_path = out.join("metrics.jsonl");
        if let Some(saved) = self.resumed_data.take() {
            let mismatch = [
                ("prompts", saved.prompts != data.prompts),
                ("pretraining data", saved.ptx != data.ptx),
                ("SFT model (the reference)", saved.reference != data.reference),
                ("reward model", saved.reward != data.reward),
            ];
            let differ: Vec<&str> = mismatch.iter().filter(|m| m.1).map(|m| m.0).collect();
            if !differ.is_empty() {
                bail!("--resume: {} was trained with other {} than these (saved prompts: {}, these: {})", out.display(), differ.join(" and "), saved.prompts, data.prompts);
            }
            models::checkpoint::keep_metrics_where(&metrics_path, "iteration", self.iterations_done)?;
        } else {
            std::fs::File::create(&metrics_path).map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", metrics_path.display()))?;
        }
        let mut metrics = std::fs::OpenOptions::new().append(true).open(&metrics_path)?;
        let last = self.cfg.iterations;
        self.run(prompts, ptx, |t, m| {
            writeln!(metrics, "{}", serde_json::to_string(m)?)?;
            let go_on = report(t, m)?;
            if (every > 0 && m.iteration % every == 0) || m.iteration == last || !go_on {
                t.save_checkpoint(out, data)?;
            }
            Ok(go_on)
        })
    }

    fn save_checkpoint(&self, out: &Path, data: PpoData) -> Result<()> {
        let run = PpoRun { config: self.cfg.clone(), iterations_done: self.iterations_done, kl_coef: self.kl.value, data };
        models::checkpoint::save_named(&self.named_params(), &self.opt, &run, out)
    }

    fn data_fingerprint(&self, prompts: &[Vec<u32>], ptx: Option<&TokenFile>) -> Result<PpoData> {
        use crate::fingerprint::Fnv;
        let mut h = Fnv::new();
        prompts.iter().for_each(|p| h.tokens(p));
        let prompts_fp = crate::DataFingerprint { items: prompts.len(), hash: h.finish() };
        let ptx = match ptx {
            Some(d) if self.cfg.ptx_coef > 0.0 => {
                let mut h = Fnv::new();
                let stride = d.len().div_ceil(1 << 20).max(1);
                (0..d.len()).step_by(stride).for_each(|i| h.eat(d.get(i) as u64));
                Some(crate::DataFingerprint { items: d.len(), hash: h.finish() })
            }
            _ => None,
        };
        let weights = |named: &[(String, Tensor)]| -> Result<u64> {
            let mut h = Fnv::new();
            for (n, t) in named {
                h.tokens(&n.bytes().map(u32::from).collect::<Vec<_>>());
                h.floats(&t.to_vec_f32()?);
            }
            Ok(h.finish())
        };
        let mut reward = weights(&self.reward.named_params())?;
        reward ^= (self.reward.norm.bias.to_bits() as u64) << 32 | self.reward.norm.gain.to_bits() as u64;
        Ok(PpoData { prompts: prompts_fp, ptx, reference: weights(self.reference.params())?, reward })
    }

    /// `dir/policy` (HF layout) and `dir/value` (reward-model layout).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        hf::save(&self.policy, dir.join("policy"), DType::F32)?;
        self.value.save(dir.join("value"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::Gpt2Config;

    /// The scoring pass, in chunks of rollout rows, gives the training pass's log-probs to the
    /// last bit (the first PPO ratio is exactly 1) at any chunk size and temperature; those are
    /// log_softmax + gather's, and the entropies the definition's, to f32 rounding.
    #[test]
    fn chunked_scoring_matches_the_training_pass_and_the_plain_computation() {
        let vocab = 301;
        let model = Gpt2::new(Gpt2Config::custom(1, 2, 32, 32, vocab), 5).unwrap();
        let (b, prompt_len, time) = (5, 4, 9);
        let pads = vec![0, 2, 1, 3, 0];
        let mut rows = Vec::new();
        let mut resp = Vec::new();
        for (r, &pad) in pads.iter().enumerate() {
            let row: Vec<i64> = (0..prompt_len + time).map(|j| if j < pad { 0 } else { ((r * 37 + j * 11) % vocab) as i64 }).collect();
            resp.extend_from_slice(&row[prompt_len..]);
            rows.extend(row);
        }
        let ids = Tensor::new(rows, &[b, prompt_len + time]).unwrap();
        let resp = Tensor::new(resp, &[b, time]).unwrap();
        for temperature in [1.0, 0.7] {
            let train = f64s(&response_logprobs(&model, &ids, &resp, &pads, prompt_len, time, temperature).unwrap()).unwrap();
            // The plain computation: the whole [B, T, V] log-softmax, gathered.
            let (want_lp, want_ent) = {
                let _g = engine::no_grad();
                let h = model.hidden_states(&ids, Some(&pads), None).unwrap();
                let logits = model.lm_head(&h.narrow(1, prompt_len - 1, time).unwrap()).unwrap();
                let lsm = logits.mul_scalar(1.0 / temperature).unwrap().log_softmax().unwrap();
                let lp = f64s(&lsm.gather(&resp.reshape(&[b, time, 1]).unwrap()).unwrap()).unwrap();
                let ls = lsm.to_vec_f32().unwrap();
                (lp, ls.chunks(vocab).map(|row| -row.iter().map(|&l| (l as f64).exp() * l as f64).sum::<f64>()).collect::<Vec<f64>>())
            };
            assert_eq!(train.len(), b * time);
            assert!(want_ent.iter().all(|e| *e > 0.0 && e.is_finite()));
            for (i, (x, y)) in train.iter().zip(&want_lp).enumerate() {
                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "position {i}, temperature {temperature}: fused {x} vs log_softmax+gather {y}");
            }
            for chunk in [1, 2, 3, b, 1000] {
                let (lp, ent) = scoring_logprobs(&model, &ids, &resp, &pads, prompt_len, time, temperature, true, chunk).unwrap();
                assert_eq!(lp, train, "log-probs, {chunk} rows at a time, temperature {temperature}");
                for (i, (x, y)) in ent.iter().zip(&want_ent).enumerate() {
                    assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "entropy at {i}, {chunk} rows at a time: {x} vs {y}");
                }
                let (lp2, ent2) = scoring_logprobs(&model, &ids, &resp, &pads, prompt_len, time, temperature, false, chunk).unwrap();
                assert_eq!((lp2, ent2.len()), (lp, 0));
            }
        }
    }
}
