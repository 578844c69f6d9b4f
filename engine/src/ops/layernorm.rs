//! LayerNorm over the last dim, fused: one pass computes y and saves mean and rstd for backward.

use super::view::f32_tensor;
use crate::autograd::Op;
use crate::cpu::layernorm as k;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// LayerNorm over the last dim with weight `w` and bias `b` (both [D]).
    pub fn layer_norm(&self, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
        let _p = crate::profile::scope("layer_norm", self.device());
        let d = *self.shape().last().ok_or_else(|| Error::shape("layer_norm", "needs rank >= 1"))?;
        if w.shape() != [d] || b.shape() != [d] {
            return Err(Error::shape("layer_norm", format!("input {:?} with weight {:?} and bias {:?}", self.shape(), w.shape(), b.shape())));
        }
        if self.device().is_cuda() {
            let (y, mean, rstd) = crate::cuda::ops::layer_norm(self, w, b, d, eps)?;
            return Ok(y.with_op(&[self, w, b], || Op::LayerNorm { x: self.clone(), w: w.clone(), b: b.clone(), mean, rstd }));
        }
        let rows = self.numel() / d.max(1);
        let (y, mean, rstd) = k::forward(&self.cpu_f32("layer_norm")?, &w.cpu_f32("layer_norm")?, &b.cpu_f32("layer_norm")?, d, eps);
        Ok(f32_tensor(y, self.shape()).with_op(&[self, w, b], || Op::LayerNorm { x: self.clone(), w: w.clone(), b: b.clone(), mean: f32_tensor(mean, &[rows]), rstd: f32_tensor(rstd, &[rows]) }))
    }
}

pub(crate) fn backward(x: &Tensor, w: &Tensor, mean: &Tensor, rstd: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    if x.device().is_cuda() {
        return crate::cuda::ops::layer_norm_backward(x, w, mean, rstd, g);
    }
    let d = w.numel();
    let (dx, dw, db) = k::backward(&x.cpu_f32("layer_norm backward")?, &w.cpu_f32("layer_norm backward")?, &g.cpu_f32("layer_norm backward")?, &mean.cpu_f32("layer_norm backward")?, &rstd.cpu_f32("layer_norm backward")?, d);
    Ok((f32_tensor(dx, x.shape()), f32_tensor(dw, &[d]), f32_tensor(db, &[d])))
}
