//! Softmax and log-softmax over the last dim (stable: the row max is subtracted first).

use super::view::f32_tensor;
use crate::autograd::Op;
use crate::cpu::softmax as k;
use crate::{Error, Result, Tensor};

fn last_dim(x: &Tensor, op: &'static str) -> Result<usize> {
    x.shape().last().copied().ok_or_else(|| Error::shape(op, "needs rank >= 1"))
}

impl Tensor {
    pub fn softmax(&self) -> Result<Tensor> {
        let _p = crate::profile::scope("softmax", self.device());
        let cols = last_dim(self, "softmax")?;
        let y = if self.device().is_cuda() {
            crate::cuda::ops::softmax(self, cols)?
        } else {
            f32_tensor(k::softmax(&self.cpu_f32("softmax")?, cols), self.shape())
        };
        let saved = y.detach();
        Ok(y.with_op(&[self], || Op::Softmax(self.clone(), saved)))
    }

    pub fn log_softmax(&self) -> Result<Tensor> {
        let _p = crate::profile::scope("log_softmax", self.device());
        let cols = last_dim(self, "log_softmax")?;
        let y = if self.device().is_cuda() {
            crate::cuda::ops::log_softmax(self, cols)?
        } else {
            f32_tensor(k::log_softmax(&self.cpu_f32("log_softmax")?, cols), self.shape())
        };
        let saved = y.detach();
        Ok(y.with_op(&[self], || Op::LogSoftmax(self.clone(), saved)))
    }
}

pub(crate) fn softmax_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    let cols = last_dim(y, "softmax backward")?;
    if y.device().is_cuda() {
        return crate::cuda::ops::softmax_backward(y, g, cols, false);
    }
    Ok(f32_tensor(k::backward(&y.cpu_f32("softmax backward")?, &g.cpu_f32("softmax backward")?, cols, false), y.shape()))
}

pub(crate) fn log_softmax_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    let cols = last_dim(y, "log_softmax backward")?;
    if y.device().is_cuda() {
        return crate::cuda::ops::softmax_backward(y, g, cols, true);
    }
    Ok(f32_tensor(k::backward(&y.cpu_f32("log_softmax backward")?, &g.cpu_f32("log_softmax backward")?, cols, true), y.shape()))
}
