//! AdamW with torch's semantics (decoupled weight decay, bias correction, parameter groups), one
//! fused pass per parameter; and the learning-rate schedules used for training.

use crate::{Error, GradStore, Result, Tensor};
use crate::cpu::adamw;

/// Parameters that share a weight decay (torch: no decay for biases and LayerNorm gains).
pub struct ParamGroup {
    pub params: Vec<Tensor>,
    pub weight_decay: f32,
}

#[derive(Clone, Copy, Debug)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// One parameter's optimizer state. `step` counts the updates this parameter received: like torch,
/// a parameter that had no gradient on some steps gets its own bias correction.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamState {
    pub step: u64,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

struct Slot {
    param: Tensor,
    weight_decay: f32,
    /// Index of the group this parameter came in (for `set_lr_scales`).
    group: usize,
    /// This parameter's learning rate is `lr_scale` times the one `step` gets (1 unless set).
    lr_scale: f32,
    /// The parameter's step count; its moments are `state.m`/`state.v` on the CPU, or
    /// `moments` on the parameter's CUDA device (read back only for `state`).
    state: ParamState,
    moments: Option<(Tensor, Tensor)>,
}

/// One parameter's AdamW update on CUDA: (param, grad, m, v, lr, weight decay, the parameter's
/// own 1-based step); a device's are applied in one launch.
pub(crate) type AdamwItem<'a> = (&'a Tensor, &'a Tensor, &'a Tensor, &'a Tensor, f32, f32, u64);

pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    step: u64,
    groups: usize,
}

impl AdamW {
    pub fn new(groups: Vec<ParamGroup>, cfg: AdamWConfig) -> Result<AdamW> {
        let n_groups = groups.len();
        let mut slots = Vec::new();
        for (gi, g) in groups.into_iter().enumerate() {
            for p in g.params {
                if !p.is_var() || !p.is_contiguous() || p.dtype() != crate::DType::F32 {
                    return Err(Error::Msg(format!("AdamW: parameters must be contiguous f32 vars, got {p:?}")));
                }
                let n = p.numel();
                let (state, moments) = if p.device().is_cuda() {
                    let zeros = || Tensor::zeros_on(&[n], p.device());
                    (ParamState { step: 0, m: Vec::new(), v: Vec::new() }, Some((zeros()?, zeros()?)))
                } else {
                    (ParamState { step: 0, m: vec![0.0; n], v: vec![0.0; n] }, None)
                };
                slots.push(Slot { param: p, weight_decay: g.weight_decay, group: gi, lr_scale: 1.0, state, moments });
            }
        }
        Ok(AdamW { cfg, slots, step: 0, groups: n_groups })
    }

    /// Give each parameter group (in the order `new` got them) its own learning rate: group `i`
    /// is updated with `scales[i] * lr` (torch's per-group `lr`, relative to the schedule's), and
    /// its weight decay is scaled with it (decoupled: p *= 1 - lr_i * wd). All 1 after `new`.
    pub fn set_lr_scales(&mut self, scales: &[f32]) -> Result<()> {
        if scales.len() != self.groups || scales.iter().any(|s| !s.is_finite() || *s < 0.0) {
            return Err(Error::Msg(format!("AdamW: {} learning-rate scales {scales:?} for {} parameter groups (each finite and >= 0)", scales.len(), self.groups)));
        }
        for s in self.slots.iter_mut() {
            s.lr_scale = scales[s.group];
        }
        Ok(())
    }

    /// Optimizer steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr` (times each group's scale, see `set_lr_scales`).
    /// Parameters without a gradient are left alone (torch). On CUDA every parameter of a
    /// device is updated by one launch.
    pub fn step(&mut self, grads: &GradStore, lr: f32) -> Result<()> {
        // Every gradient's shape first: a bad one fails the step before any state changes.
        for s in &self.slots {
            if let Some(g) = grads.get(&s.param).filter(|g| g.shape() != s.param.shape()) {
                return Err(Error::shape("AdamW", format!("gradient {:?} for parameter {:?}", g.shape(), s.param.shape())));
            }
        }
        let _phase = crate::profile::phase(crate::profile::Phase::Optimizer);
        let _p = self.slots.first().and_then(|s| crate::profile::scope("adamw", s.param.device()));
        self.step += 1;
        let AdamWConfig { beta1, beta2, eps } = self.cfg;
        let mut on_device: Vec<(usize, Vec<AdamwItem<'_>>)> = Vec::new();
        for s in self.slots.iter_mut() {
            let Some(g) = grads.get(&s.param) else { continue };
            s.state.step += 1;
            let lr = lr * s.lr_scale;
            if s.moments.is_some() {
                let s: &Slot = s; // one launch per device, below, borrows every CUDA slot at once
                let (Some((m, v)), crate::Device::Cuda(dev)) = (&s.moments, s.param.device()) else {
                    return Err(Error::Msg(format!("AdamW: moments on CUDA for a CPU parameter {:?}", s.param)));
                };
                let item = (&s.param, g, m, v, lr, s.weight_decay, s.state.step);
                match on_device.iter_mut().find(|(d, _)| *d == dev) {
                    Some((_, items)) => items.push(item),
                    None => on_device.push((dev, vec![item])),
                }
                continue;
            }
            let st = &mut s.state;
            let t = st.step as i32;
            let (bc1, bc2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
            let k = adamw::Step { decay: 1.0 - lr * s.weight_decay, beta1, beta2, step_size: lr / bc1, bc2_sqrt: bc2.sqrt(), eps };
            let g = g.cpu_f32("AdamW gradient")?;
            let (m, v) = (&mut st.m, &mut st.v);
            s.param.update_f32(|p| adamw::update(p, &g, m, v, k))?;
        }
        for (_, items) in &on_device {
            crate::cuda::ops::adamw_multi(items, beta1, beta2, eps)?;
        }
        Ok(())
    }

    /// The parameters, in the order `state` reports them (groups in order, each group's in order).
    pub fn params(&self) -> Vec<&Tensor> {
        self.slots.iter().map(|s| &s.param).collect()
    }

    /// The optimizer's step count and each parameter's state, in `params` order (checkpoints).
    pub fn state(&self) -> Result<(u64, Vec<ParamState>)> {
        let states = self.slots.iter().map(|s| match &s.moments {
            Some((m, v)) => Ok(ParamState { step: s.state.step, m: m.to_vec_f32()?, v: v.to_vec_f32()? }),
            None => Ok(s.state.clone()),
        });
        Ok((self.step, states.collect::<Result<_>>()?))
    }

    /// Restore what `state` returned.
    pub fn load_state(&mut self, step: u64, states: Vec<ParamState>) -> Result<()> {
        let fits = states.len() == self.slots.len() && self.slots.iter().zip(&states).all(|(s, st)| st.m.len() == s.param.numel() && st.v.len() == s.param.numel());
        if !fits {
            return Err(Error::Msg("AdamW state does not match the parameters".into()));
        }
        for (s, st) in self.slots.iter_mut().zip(states) {
            if s.moments.is_some() {
                let n = st.m.len();
                let on = |x: Vec<f32>| Tensor::new(x, &[n])?.to_device(s.param.device());
                s.moments = Some((on(st.m)?, on(st.v)?));
                s.state = ParamState { step: st.step, m: Vec::new(), v: Vec::new() };
            } else {
                s.state = st;
            }
        }
        self.step = step;
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decay {
    Cosine,
    Linear,
    Constant,
}

/// Linear warmup from 0 to `peak`, then `decay` down to `min_lr` at `total_steps`.
#[derive(Clone, Copy, Debug)]
pub struct LrSchedule {
    pub peak: f32,
    pub min_lr: f32,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub decay: Decay,
}

impl LrSchedule {
    /// Learning rate for step `step` (0-based).
    pub fn lr(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f32 / span as f32).min(1.0);
        let frac = match self.decay {
            Decay::Cosine => 0.5 * (1.0 + (std::f32::consts::PI * progress).cos()),
            Decay::Linear => 1.0 - progress,
            Decay::Constant => 1.0,
        };
        self.min_lr + (self.peak - self.min_lr) * frac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        let s = LrSchedule { peak: 1.0, min_lr: 0.0, warmup_steps: 10, total_steps: 110, decay: Decay::Cosine };
        assert!((s.lr(0) - 0.1).abs() < 1e-6);
        assert!((s.lr(9) - 1.0).abs() < 1e-6);
        assert!((s.lr(60) - 0.5).abs() < 1e-6);
        assert!(s.lr(110).abs() < 1e-6);
        let l = LrSchedule { decay: Decay::Linear, ..s };
        assert!((l.lr(35) - 0.75).abs() < 1e-6);
    }

    #[test]
    fn group_lr_scales_act_as_per_group_learning_rates() {
        let grads_for = |ps: &[&Tensor]| {
            let loss = ps.iter().map(|p| p.mul(p).unwrap().sum_all().unwrap()).reduce(|a, b| a.add(&b).unwrap()).unwrap();
            loss.backward().unwrap()
        };
        let init = [0.5f32, -1.0, 2.0];
        let mk = || Tensor::new(init.to_vec(), &[3]).unwrap().var();
        // Scaled: group 0 at 1x, group 1 at 0.25x, group 2 frozen; with weight decay on all.
        let (a, b, c) = (mk(), mk(), mk());
        let group = |p: &Tensor| ParamGroup { params: vec![p.clone()], weight_decay: 0.1 };
        let mut opt = AdamW::new(vec![group(&a), group(&b), group(&c)], AdamWConfig::default()).unwrap();
        opt.set_lr_scales(&[1.0, 0.25, 0.0]).unwrap();
        // References: plain AdamW at lr and at lr / 4.
        let (ra, rb) = (mk(), mk());
        let mut full = AdamW::new(vec![group(&ra)], AdamWConfig::default()).unwrap();
        let mut quarter = AdamW::new(vec![group(&rb)], AdamWConfig::default()).unwrap();
        for _ in 0..3 {
            opt.step(&grads_for(&[&a, &b, &c]), 0.1).unwrap();
            full.step(&grads_for(&[&ra]), 0.1).unwrap();
            quarter.step(&grads_for(&[&rb]), 0.1 * 0.25).unwrap();
        }
        assert_eq!(a.to_vec_f32().unwrap(), ra.to_vec_f32().unwrap());
        assert_eq!(b.to_vec_f32().unwrap(), rb.to_vec_f32().unwrap());
        assert_ne!(a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
        assert_eq!(c.to_vec_f32().unwrap(), init.to_vec(), "scale 0 freezes the group");
        assert!(opt.set_lr_scales(&[1.0, 1.0]).is_err(), "one scale per group");
    }
}
