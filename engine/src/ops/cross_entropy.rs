//! Fused cross-entropy: mean over the rows whose target is not ignored (target < 0, e.g. -100).

use super::view::f32_tensor;
use crate::autograd::Op;
use crate::cpu::cross_entropy as k;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// `self`: logits [.., V]; `targets`: i64 [..] (negative = ignored). Returns the mean loss over
    /// the kept rows (0 when none is kept), as a scalar.
    pub fn cross_entropy(&self, targets: &Tensor) -> Result<Tensor> {
        let v = *self.shape().last().ok_or_else(|| Error::shape("cross_entropy", "logits need rank >= 1"))?;
        if targets.shape() != &self.shape()[..self.rank() - 1] {
            return Err(Error::shape("cross_entropy", format!("logits {:?} with targets {:?}", self.shape(), targets.shape())));
        }
        let t = if self.device().is_cuda() { targets.expect_i64("cross_entropy")?.to_vec_i64()? } else { targets.cpu_i64("cross_entropy")? };
        if let Some(p) = t.iter().position(|&i| i >= v as i64) {
            return Err(Error::Index(format!("cross_entropy: target {} at row {p} is outside 0..{v}", t[p])));
        }
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
