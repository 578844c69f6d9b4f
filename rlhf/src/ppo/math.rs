//! PPO's arithmetic on a right-padded batch of responses [B, T] (fixtures/README.md section 4,
//! TRL v0.x `PPOTrainer` conventions): per-token k1 KL penalty, the score on the last valid token,
//! values masked past the end, GAE backwards, masked whitening with the unbiased variance, the
//! clipped policy loss and the clipped value loss.
//!
//! Advantages and returns are constants: they are computed here in f64 on plain slices. The losses
//! are engine tensors so that gradients flow into `new_logprobs` and `new_values`. Entries at
//! padded positions (t >= length) of any input are junk and never reach an output.

use engine::{Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PpoHyper {
    /// KL coefficient of the per-token penalty.
    pub beta: f64,
    pub gamma: f64,
    pub lam: f64,
    pub cliprange: f64,
    pub cliprange_value: f64,
    pub vf_coef: f64,
    pub whiten_eps: f64,
}

impl Default for PpoHyper {
    fn default() -> Self {
        PpoHyper { beta: 0.05, gamma: 1.0, lam: 0.95, cliprange: 0.2, cliprange_value: 0.2, vf_coef: 0.1, whiten_eps: 1e-8 }
    }
}

/// Everything derived from one rollout batch before the optimization epochs. Per-token vectors
/// are row-major [B, T]; padded entries are 0.
#[derive(Clone, Debug)]
pub struct Advantages {
    pub batch: usize,
    pub time: usize,
    pub lengths: Vec<usize>,
    pub mask: Vec<f64>,
    pub kl: Vec<f64>,
    pub non_score_reward: Vec<f64>,
    /// length - 1 per row (the score's position).
    pub last_valid_index: Vec<usize>,
    pub rewards: Vec<f64>,
    /// Values masked past the end.
    pub values: Vec<f64>,
    pub td_deltas: Vec<f64>,
    pub advantages: Vec<f64>,
    pub returns: Vec<f64>,
    pub advantages_mean: f64,
    pub advantages_var_unbiased: f64,
    pub n_valid_tokens: usize,
    pub advantages_whitened: Vec<f64>,
    /// mean over rows of Σ_t kl (TRL's objective/kl).
    pub mean_sequence_kl: f64,
    pub mean_sequence_non_score_reward: f64,
}

/// Mask [B, T] from lengths (1 where t < len).
pub fn mask_from_lengths(lengths: &[usize], time: usize) -> Vec<f64> {
    lengths.iter().flat_map(|&l| (0..time).map(move |t| if t < l { 1.0 } else { 0.0 })).collect()
}

/// Σ m·x / Σ m.
pub fn masked_mean(x: &[f64], mask: &[f64]) -> f64 {
    let n: f64 = mask.iter().sum();
    x.iter().zip(mask).map(|(a, m)| if *m != 0.0 { a * m } else { 0.0 }).sum::<f64>() / n.max(1.0)
}

/// Unbiased masked variance (n/(n-1)), TRL's `masked_var`.
pub fn masked_var_unbiased(x: &[f64], mask: &[f64]) -> f64 {
    let mean = masked_mean(x, mask);
    let n: f64 = mask.iter().sum();
    let centered: Vec<f64> = x.iter().map(|a| (a - mean) * (a - mean)).collect();
    let var = masked_mean(&centered, mask);
    if n > 1.0 {
        var * n / (n - 1.0)
    } else {
        var
    }
}

/// KL-shaped rewards, GAE, returns and whitened advantages. `old_logprobs`, `ref_logprobs`,
/// `old_values`: [B, T] row-major; `scores`: [B]; `lengths`: valid tokens per row (>= 1, <= T).
pub fn compute_advantages(
    old_logprobs: &[f64],
    ref_logprobs: &[f64],
    old_values: &[f64],
    scores: &[f64],
    lengths: &[usize],
    time: usize,
    hp: &PpoHyper,
) -> Result<Advantages> {
    let b = lengths.len();
    let n = b * time;
    if old_logprobs.len() != n || ref_logprobs.len() != n || old_values.len() != n || scores.len() != b {
        return Err(engine::Error::Msg(format!(
            "PPO: inputs of {}, {}, {} tokens and {} scores for a [{b}, {time}] batch",
            old_logprobs.len(),
            ref_logprobs.len(),
            old_values.len(),
            scores.len()
        )));
    }
    if let Some(&l) = lengths.iter().find(|&&l| l == 0 || l > time) {
        return Err(engine::Error::Msg(format!("PPO: response length {l} outside 1..={time}")));
    }
    let mask = mask_from_lengths(lengths, time);
    let valid = |i: usize| mask[i] != 0.0;
    let pick = |x: &[f64]| -> Vec<f64> { (0..n).map(|i| if valid(i) { x[i] } else { 0.0 }).collect() };
    let kl: Vec<f64> = (0..n).map(|i| if valid(i) { old_logprobs[i] - ref_logprobs[i] } else { 0.0 }).collect();
    let non_score_reward: Vec<f64> = kl.iter().map(|k| -hp.beta * k).collect();
    let last_valid_index: Vec<usize> = lengths.iter().map(|l| l - 1).collect();
    let mut rewards = non_score_reward.clone();
    for (r, &last) in last_valid_index.iter().enumerate() {
        rewards[r * time + last] += scores[r];
    }
    let values = pick(old_values);
    let mut td_deltas = vec![0.0; n];
    let mut advantages = vec![0.0; n];
    for (r, &len) in lengths.iter().enumerate() {
        let row = r * time;
        let mut last_gae = 0.0;
        for t in (0..len).rev() {
            let next_v = if t + 1 < time { values[row + t + 1] } else { 0.0 };
            let delta = rewards[row + t] + hp.gamma * next_v - values[row + t];
            last_gae = delta + hp.gamma * hp.lam * last_gae;
            td_deltas[row + t] = delta;
            advantages[row + t] = last_gae;
        }
    }
    let returns: Vec<f64> = (0..n).map(|i| if valid(i) { advantages[i] + values[i] } else { 0.0 }).collect();
    let advantages_mean = masked_mean(&advantages, &mask);
    let advantages_var_unbiased = masked_var_unbiased(&advantages, &mask);
    let inv = 1.0 / (advantages_var_unbiased + hp.whiten_eps).sqrt();
    let advantages_whitened: Vec<f64> = (0..n).map(|i| if valid(i) { (advantages[i] - advantages_mean) * inv } else { 0.0 }).collect();
    let seq_sum = |x: &[f64]| (0..b).map(|r| x[r * time..(r + 1) * time].iter().sum::<f64>()).sum::<f64>() / b.max(1) as f64;
    Ok(Advantages {
        batch: b,
        time,
        lengths: lengths.to_vec(),
        mean_sequence_kl: seq_sum(&kl),
        mean_sequence_non_score_reward: seq_sum(&non_score_reward),
        n_valid_tokens: lengths.iter().sum(),
        mask,
        kl,
        non_score_reward,
        last_valid_index,
        rewards,
        values,
        td_deltas,
        advantages,
        returns,
        advantages_mean,
        advantages_var_unbiased,
        advantages_whitened,
    })
}

/// The losses of one minibatch, and the statistics TRL logs with them.
#[derive(Clone, Debug)]
pub struct PpoLoss {
    /// pg_loss + vf_coef · vf_loss (scalar tensor; backward gives the gradients).
    pub total: Tensor,
    pub pg_loss: Tensor,
    pub vf_loss: Tensor,
    pub pg_clipfrac: f64,
    pub vf_clipfrac: f64,
    /// 0.5 · masked_mean((new - old)²).
    pub approx_kl: f64,
}

/// Per-token inputs of `ppo_loss` that are constants (row-major [B, T]; padded entries ignored).
#[derive(Clone, Copy, Debug)]
pub struct LossInputs<'a> {
    pub old_logprobs: &'a [f64],
    pub old_values: &'a [f64],
    pub advantages_whitened: &'a [f64],
    pub returns: &'a [f64],
    pub mask: &'a [f64],
}

/// `x` where `mask` holds (else 0) on `device`, where the loss is computed.
fn constant(x: &[f64], mask: &[f64], shape: &[usize], device: engine::Device) -> Result<Tensor> {
    Tensor::new(x.iter().zip(mask).map(|(v, m)| if *m != 0.0 { *v as f32 } else { 0.0 }).collect::<Vec<f32>>(), shape)?.to_device(device)
}

/// The clipped PPO losses for `new_logprobs` and `new_values` ([B, T] tensors, usually recorded
/// from the policy and value model).
pub fn ppo_loss(new_logprobs: &Tensor, new_values: &Tensor, inp: &LossInputs, hp: &PpoHyper) -> Result<PpoLoss> {
    let shape = new_logprobs.shape().to_vec();
    if new_values.shape() != shape.as_slice() || shape.len() != 2 {
        return Err(engine::Error::Msg(format!("PPO loss: logprobs {:?} and values {:?} must be the same [B, T]", shape, new_values.shape())));
    }
    let n = shape[0] * shape[1];
    for (name, x) in [("old_logprobs", inp.old_logprobs), ("old_values", inp.old_values), ("advantages", inp.advantages_whitened), ("returns", inp.returns), ("mask", inp.mask)] {
        if x.len() != n {
            return Err(engine::Error::Msg(format!("PPO loss: {name} has {} entries for [{}, {}]", x.len(), shape[0], shape[1])));
        }
    }
    let (mask_v, dev) = (inp.mask, new_logprobs.device());
    let n_valid: f64 = mask_v.iter().sum::<f64>().max(1.0);
    let mask = constant(mask_v, mask_v, &shape, dev)?;
    let old_lp = constant(inp.old_logprobs, mask_v, &shape, dev)?;
    let old_v = constant(inp.old_values, mask_v, &shape, dev)?;
    let adv = constant(inp.advantages_whitened, mask_v, &shape, dev)?;
    let ret = constant(inp.returns, mask_v, &shape, dev)?;
    // Padded entries are replaced (not multiplied: junk may be inf or NaN) before anything else.
    let new_lp = mask.where_cond(new_logprobs, &old_lp)?;
    let new_v = mask.where_cond(new_values, &old_v)?;
    let masked_mean = |x: &Tensor| -> Result<Tensor> { x.mul(&mask)?.sum_all()?.mul_scalar((1.0 / n_valid) as f32) };

    let logratio = new_lp.sub(&old_lp)?;
    let ratio = logratio.exp()?;
    let (lo, hi) = ((1.0 - hp.cliprange) as f32, (1.0 + hp.cliprange) as f32);
    let neg_adv = adv.neg()?;
    let pg_losses = neg_adv.mul(&ratio)?;
    let pg_losses_clipped = neg_adv.mul(&ratio.clamp(lo, hi)?)?;
    let pg_loss = masked_mean(&pg_losses.maximum(&pg_losses_clipped)?)?;

    let cv = hp.cliprange_value as f32;
    let v_lo = old_v.add_scalar(-cv)?;
    let v_hi = old_v.add_scalar(cv)?;
    let values_clipped = new_v.minimum(&v_hi)?.maximum(&v_lo)?;
    let vf_unclipped = new_v.sub(&ret)?.sqr()?;
    let vf_clipped = values_clipped.sub(&ret)?.sqr()?;
    let vf_loss = masked_mean(&vf_unclipped.maximum(&vf_clipped)?)?.mul_scalar(0.5)?;
    let total = pg_loss.add(&vf_loss.mul_scalar(hp.vf_coef as f32)?)?;

    // Statistics from the values (f64), masked.
    let (pu, pc) = (pg_losses.to_vec_f32()?, pg_losses_clipped.to_vec_f32()?);
    let (vu, vc) = (vf_unclipped.to_vec_f32()?, vf_clipped.to_vec_f32()?);
    let lr = logratio.to_vec_f32()?;
    let frac = |a: &[f32], b: &[f32]| (0..n).filter(|&i| mask_v[i] != 0.0 && b[i] > a[i]).count() as f64 / n_valid;
    let approx_kl = 0.5 * (0..n).filter(|&i| mask_v[i] != 0.0).map(|i| (lr[i] as f64).powi(2)).sum::<f64>() / n_valid;
    Ok(PpoLoss { total, pg_loss, vf_loss, pg_clipfrac: frac(&pu, &pc), vf_clipfrac: frac(&vu, &vc), approx_kl })
}

/// Fraction of the variance of `returns` the values explain: 1 - Var(returns - values) / Var(returns)
/// over valid tokens (unbiased variances, as the ratio does not care).
pub fn explained_variance(values: &[f64], returns: &[f64], mask: &[f64]) -> f64 {
    let diff: Vec<f64> = returns.iter().zip(values).map(|(r, v)| r - v).collect();
    let var_r = masked_var_unbiased(returns, mask);
    if var_r == 0.0 {
        return f64::NAN;
    }
    1.0 - masked_var_unbiased(&diff, mask) / var_r
}

/// The adaptive KL controller of Ziegler et al. (2019): moves beta so that the mean sequence KL
/// approaches `target`, by at most 20% of the error per `horizon` samples.
#[derive(Clone, Debug, PartialEq)]
pub struct KlController {
    pub value: f64,
    /// None: a fixed beta.
    pub target: Option<f64>,
    pub horizon: f64,
}

impl KlController {
    pub fn fixed(beta: f64) -> Self {
        KlController { value: beta, target: None, horizon: 10000.0 }
    }

    pub fn adaptive(init: f64, target: f64, horizon: f64) -> Self {
        KlController { value: init, target: Some(target), horizon }
    }

    /// After a rollout of `n_samples` whose mean sequence KL was `current`.
    pub fn update(&mut self, current: f64, n_samples: usize) {
        if let Some(target) = self.target {
            let error = (current / target - 1.0).clamp(-0.2, 0.2);
            self.value *= 1.0 + error * n_samples as f64 / self.horizon;
        }
    }
}
