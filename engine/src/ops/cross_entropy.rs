//! Fused cross-entropy: mean over the rows whose target is not ignored (target < 0, e.g. -100);
//! and its unreduced sibling, each row's log-probability of its target (PPO's per-token
//! log-probs, at a temperature), with the entropy. Neither materializes the probabilities.

use super::view::f32_tensor;
use crate::autograd::Op;
use crate::cpu::cross_entropy as k;
use crate::{Error, Result, Tensor};

/// The targets as host ids, checked against the logits' shape and vocabulary.
fn checked_targets(logits: &Tensor, targets: &Tensor, op: &'static str) -> Result<(Vec<i64>, usize)> {
    let v = *logits.shape().last().ok_or_else(|| Error::shape(op, "logits need rank >= 1"))?;
    if targets.shape() != &logits.shape()[..logits.rank() - 1] {
        return Err(Error::shape(op, format!("logits {:?} with targets {:?}", logits.shape(), targets.shape())));
    }
    let t = if logits.device().is_cuda() { targets.expect_i64(op)?.to_vec_i64()? } else { targets.cpu_i64(op)? };
    if let Some(p) = t.iter().position(|&i| i >= v as i64) {
        return Err(Error::Index(format!("{op}: target {} at row {p} is outside 0..{v}", t[p])));
    }
    Ok((t, v))
}

impl Tensor {
    /// `self`: logits [.., V]; `targets`: i64 [..] (negative = ignored). Returns the mean loss over
    /// the kept rows (0 when none is kept), as a scalar.
    pub fn cross_entropy(&self, targets: &Tensor) -> Result<Tensor> {
        let _p = crate::profile::scope("cross_entropy", self.device());
        let (t, v) = checked_targets(self, targets, "cross_entropy")?;
        let n_valid = t.iter().filter(|&&i| i >= 0).count();
        if self.device().is_cuda() {
            let (loss, lse) = crate::cuda::ops::cross_entropy(self, &t, v)?;
            let targets = targets.detach();
            return Ok(loss.with_op(&[self], || Op::CrossEntropy { logits: self.clone(), targets, lse, n_valid }));
        }
        let (lse, losses) = k::forward(&self.cpu_f32("cross_entropy")?, &t, v);
        let loss = losses.iter().map(|&l| l as f64).sum::<f64>() / n_valid.max(1) as f64;
        let targets = targets.detach();
        let lse = f32_tensor(lse, &[t.len()]);
        Ok(f32_tensor(vec![loss as f32], &[]).with_op(&[self], || Op::CrossEntropy { logits: self.clone(), targets, lse, n_valid }))
    }

    /// log softmax(self / temperature) at each row's target: `self` logits [.., V], `targets`
    /// i64 [..]; the result has the targets' shape (0 where a target is negative). One fused
    /// pass each way, as `cross_entropy`: the same numbers as `mul_scalar(1 / temperature)`,
    /// `log_softmax` and `gather`, without their three [.., V] tensors.
    pub fn token_logprobs(&self, targets: &Tensor, temperature: f32) -> Result<Tensor> {
        Ok(self.token_logprobs_impl(targets, temperature, false)?.0)
    }

    /// `token_logprobs` and each row's entropy of softmax(self / temperature), from the same
    /// pass; the entropy carries no gradient.
    pub fn token_logprobs_entropy(&self, targets: &Tensor, temperature: f32) -> Result<(Tensor, Tensor)> {
        let (lp, ent) = self.token_logprobs_impl(targets, temperature, true)?;
        Ok((lp, ent.expect("asked for")))
    }

    fn token_logprobs_impl(&self, targets: &Tensor, temperature: f32, entropy: bool) -> Result<(Tensor, Option<Tensor>)> {
        let _p = crate::profile::scope("token_logprobs", self.device());
        let op = "token_logprobs";
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(Error::Msg(format!("{op}: temperature must be positive and finite, got {temperature}")));
        }
        let (t, v) = checked_targets(self, targets, op)?;
        let a = 1.0 / temperature;
        let shape = targets.shape().to_vec();
        let (neg_lp, lse, ent) = if self.device().is_cuda() {
            crate::cuda::ops::cross_entropy_rows(self, &t, v, a, entropy)?
        } else {
            let (lse, loss, ent) = k::forward_scaled(&self.cpu_f32(op)?, &t, v, a, entropy);
            (f32_tensor(loss, &[t.len()]), f32_tensor(lse, &[t.len()]), ent.map(|e| f32_tensor(e, &[t.len()])))
        };
        // The kernels give the loss, lse − z[t]: negated here (no graph: `neg_lp` has no op).
        let lp = neg_lp.neg()?.reshape(&shape)?;
        let targets = targets.detach();
        let lp = lp.with_op(&[self], || Op::TokenLogprobs { logits: self.clone(), targets, lse, inv_temp: a });
        Ok((lp, ent.map(|e| e.reshape(&shape)).transpose()?))
    }
}

/// The gradient of `token_logprobs` for the upstream `g` (the targets' shape): each row's
/// −a·g·(softmax(a x) − onehot).
pub(crate) fn token_logprobs_backward(logits: &Tensor, targets: &Tensor, lse: &Tensor, a: f32, g: &Tensor) -> Result<Tensor> {
    let v = logits.shape()[logits.rank() - 1];
    if logits.device().is_cuda() {
        return crate::cuda::ops::cross_entropy_rows_backward(logits, &targets.to_vec_i64()?, lse, a, -a, g);
    }
    let op = "token_logprobs backward";
    let t = targets.cpu_i64(op)?;
    let d = k::backward_scaled(&logits.cpu_f32(op)?, &t, &lse.cpu_f32(op)?, v, a, -a, Some(&g.cpu_f32(op)?));
    Ok(f32_tensor(d, logits.shape()))
}

pub(crate) fn backward(logits: &Tensor, targets: &Tensor, lse: &Tensor, n_valid: usize, g: f32) -> Result<Tensor> {
    let v = logits.shape()[logits.rank() - 1];
    if logits.device().is_cuda() {
        return crate::cuda::ops::cross_entropy_backward(logits, &targets.to_vec_i64()?, lse, g / n_valid.max(1) as f32);
    }
    let t = targets.cpu_i64("cross_entropy backward")?;
    let d = k::backward(&logits.cpu_f32("cross_entropy backward")?, &t, &lse.cpu_f32("cross_entropy backward")?, v, g / n_valid.max(1) as f32);
    Ok(f32_tensor(d, logits.shape()))
}
