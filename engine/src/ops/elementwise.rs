//! Elementwise ops: broadcasting binary ops, scalar affine maps, unary functions, where/clamp, dropout.

use super::view::f32_tensor;
use crate::autograd::{Op, UnaryOp};
use crate::cpu::elementwise::{self as k, binary_map, ternary_map, unary_map};
use crate::shape::broadcast_shape;
use crate::storage::CpuStorage;
use crate::{Device, Error, Result, Tensor};
use kernels::memops::BinaryOp;
use kernels::pointwise::Unary;
use rand::Rng;

/// A binary op's name in the engine (its profile row and its errors): torch's.
fn binary_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Min => "minimum",
        BinaryOp::Max => "maximum",
        op => op.name(),
    }
}

/// Broadcast two operands to their common shape, as recorded views.
fn broadcast_pair(op: &'static str, a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    if a.device() != b.device() {
        return Err(Error::DeviceMismatch { op, a: a.device(), b: b.device() });
    }
    let shape = broadcast_shape(op, a.shape(), b.shape())?;
    Ok((a.broadcast_as(&shape)?, b.broadcast_as(&shape)?))
}

fn binary(a: &Tensor, b: &Tensor, kind: BinaryOp) -> Result<Tensor> {
    let op = binary_name(kind);
    let _p = crate::profile::scope(op, a.device());
    let (a, b) = broadcast_pair(op, a, b)?;
    let (ca, cb) = (a.clone(), b.clone());
    let record = move || match kind {
        BinaryOp::Add => Op::Add(ca, cb),
        BinaryOp::Sub => Op::Sub(ca, cb),
        BinaryOp::Mul => Op::Mul(ca, cb),
        BinaryOp::Div => Op::Div(ca, cb),
        BinaryOp::Min => Op::Minimum(ca, cb),
        BinaryOp::Max => Op::Maximum(ca, cb),
    };
    if a.device().is_cuda() {
        return Ok(crate::cuda::ops::binary(kind, &a, &b)?.with_op(&[&a, &b], record));
    }
    let data = {
        let (sa, sb) = (a.cpu_f32_storage(op)?, b.cpu_f32_storage(op)?);
        let (la, lb) = (a.layout(), b.layout());
        match kind {
            BinaryOp::Add => binary_map(&sa, la, &sb, lb, |x, y| x + y),
            BinaryOp::Sub => binary_map(&sa, la, &sb, lb, |x, y| x - y),
            BinaryOp::Mul => binary_map(&sa, la, &sb, lb, |x, y| x * y),
            BinaryOp::Div => binary_map(&sa, la, &sb, lb, |x, y| x / y),
            BinaryOp::Min => binary_map(&sa, la, &sb, lb, f32::min),
            BinaryOp::Max => binary_map(&sa, la, &sb, lb, f32::max),
        }
    };
    Ok(Tensor::from_op(CpuStorage::F32(data), a.shape(), &[&a, &b], record))
}

/// The CUDA kernel's code for a unary op (GELU has kernels of its own).
fn cuda_unary(op: UnaryOp) -> Option<Unary> {
    Some(match op {
        UnaryOp::Exp => Unary::Exp,
        UnaryOp::Log => Unary::Log,
        UnaryOp::Tanh => Unary::Tanh,
        UnaryOp::Sigmoid => Unary::Sigmoid,
        UnaryOp::LogSigmoid => Unary::LogSigmoid,
        UnaryOp::Sqr => Unary::Sqr,
        UnaryOp::Sqrt => Unary::Sqrt,
        UnaryOp::Relu => Unary::Relu,
        UnaryOp::Gelu => return None,
    })
}

fn unary(x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    let _p = crate::profile::scope(op.name(), x.device());
    if x.device().is_cuda() {
        let out = match cuda_unary(op) {
            Some(k) => crate::cuda::ops::unary(x, k, 0.0, 0.0)?,
            None => crate::cuda::ops::gelu(x)?,
        };
        let saved = out.detach();
        return Ok(out.with_op(&[x], || Op::Unary(op, x.clone(), saved)));
    }
    let data = {
        let v = x.cpu_f32("unary")?;
        match op {
            UnaryOp::Exp => unary_map(&v, f32::exp),
            UnaryOp::Log => unary_map(&v, f32::ln),
            UnaryOp::Tanh => unary_map(&v, f32::tanh),
            UnaryOp::Sigmoid => unary_map(&v, k::sigmoid),
            UnaryOp::LogSigmoid => unary_map(&v, k::log_sigmoid),
            UnaryOp::Gelu => k::gelu_forward(&v),
            UnaryOp::Sqr => unary_map(&v, |x| x * x),
            UnaryOp::Sqrt => unary_map(&v, f32::sqrt),
            UnaryOp::Relu => unary_map(&v, |x| x.max(0.0)),
        }
    };
    let out = f32_tensor(data, x.shape());
    let saved = out.detach();
    Ok(out.with_op(&[x], || Op::Unary(op, x.clone(), saved)))
}

/// d(loss)/dx for a unary op, from its input `x`, output `y` and upstream gradient `g`.
pub(crate) fn unary_backward(op: UnaryOp, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Tensor> {
    if x.device().is_cuda() {
        return match cuda_unary(op) {
            Some(k) => crate::cuda::ops::unary_backward(k, x, y, g, 0.0, 0.0),
            None => crate::cuda::ops::gelu_backward(x, g),
        };
    }
    let (xv, yv, gv) = (x.cpu_f32("unary backward")?, y.cpu_f32("unary backward")?, g.cpu_f32("unary backward")?);
    let data = match op {
        UnaryOp::Exp => ternary_map(&xv, &yv, &gv, |_, y, g| g * y),
        UnaryOp::Log => ternary_map(&xv, &yv, &gv, |x, _, g| g / x),
        UnaryOp::Tanh => ternary_map(&xv, &yv, &gv, |_, y, g| g * (1.0 - y * y)),
        UnaryOp::Sigmoid => ternary_map(&xv, &yv, &gv, |_, y, g| g * y * (1.0 - y)),
        UnaryOp::LogSigmoid => ternary_map(&xv, &yv, &gv, |x, _, g| g * k::sigmoid(-x)),
        UnaryOp::Gelu => k::gelu_backward(&xv, &gv),
        UnaryOp::Sqr => ternary_map(&xv, &yv, &gv, |x, _, g| 2.0 * x * g),
        UnaryOp::Sqrt => ternary_map(&xv, &yv, &gv, |_, y, g| g / (2.0 * y)),
        UnaryOp::Relu => ternary_map(&xv, &yv, &gv, |x, _, g| if x > 0.0 { g } else { 0.0 }),
    };
    Ok(f32_tensor(data, x.shape()))
}

/// `t` on `device`: moved there when it is a constant (untracked), else it must already be there.
fn on_device(t: &Tensor, device: Device) -> Result<Tensor> {
    if t.device() == device || !t.tracked() {
        return t.to_device(device);
    }
    Err(Error::DeviceMismatch { op: "where", a: t.device(), b: device })
}

/// Gradient of minimum/maximum: to the selected operand; a tie splits it evenly (as torch does).
pub(crate) fn min_max_backward(g: &Tensor, a: Tensor, b: Tensor, is_max: bool) -> Result<Vec<(Tensor, Tensor)>> {
    if g.device().is_cuda() {
        let (ga, gb) = crate::cuda::ops::min_max_backward(g, &a, &b, is_max)?;
        return Ok(vec![(ga, a), (gb, b)]);
    }
    let (av, bv, gv) = (a.cpu_f32("min/max backward")?, b.cpu_f32("min/max backward")?, g.cpu_f32("min/max backward")?);
    let pick = |x: f32, y: f32, g: f32| {
        if x == y {
            0.5 * g
        } else if (x > y) == is_max {
            g
        } else {
            0.0
        }
    };
    let ga = ternary_map(&av, &bv, &gv, pick);
    let gb = ternary_map(&bv, &av, &gv, pick);
    let shape = a.shape().to_vec();
    drop((av, bv, gv));
    Ok(vec![(f32_tensor(ga, &shape), a), (f32_tensor(gb, &shape), b)])
}

/// Gradient of clamp: passes where lo <= x <= hi.
pub(crate) fn clamp_backward(x: &Tensor, lo: f32, hi: f32, g: &Tensor) -> Result<Tensor> {
    if x.device().is_cuda() {
        return crate::cuda::ops::unary_backward(Unary::Clamp, x, x, g, lo, hi);
    }
    let (xv, gv) = (x.cpu_f32("clamp backward")?, g.cpu_f32("clamp backward")?);
    let data = ternary_map(&xv, &gv, &gv, |x, g, _| if x >= lo && x <= hi { g } else { 0.0 });
    Ok(f32_tensor(data, x.shape()))
}

impl Tensor {
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Add)
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Sub)
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Mul)
    }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Div)
    }
    /// Elementwise minimum (PPO's clipped objective).
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Min)
    }
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Max)
    }

    /// `x·mul + add`.
    pub fn affine(&self, mul: f32, add: f32) -> Result<Tensor> {
        let _p = crate::profile::scope("affine", self.device());
        if self.device().is_cuda() {
            return Ok(crate::cuda::ops::affine(self, mul, add)?.with_op(&[self], || Op::Affine(self.clone(), mul)));
        }
        let data = unary_map(&self.cpu_f32("affine")?, |x| x * mul + add);
        Ok(f32_tensor(data, self.shape()).with_op(&[self], || Op::Affine(self.clone(), mul)))
    }
    pub fn add_scalar(&self, v: f32) -> Result<Tensor> {
        self.affine(1.0, v)
    }
    pub fn mul_scalar(&self, v: f32) -> Result<Tensor> {
        self.affine(v, 0.0)
    }
    pub fn neg(&self) -> Result<Tensor> {
        self.affine(-1.0, 0.0)
    }

    pub fn exp(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Exp)
    }
    pub fn log(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Log)
    }
    pub fn tanh(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Tanh)
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Sigmoid)
    }
    /// log σ(x), stable (the reward model's pairwise loss).
    pub fn log_sigmoid(&self) -> Result<Tensor> {
        unary(self, UnaryOp::LogSigmoid)
    }
    /// GPT-2's tanh-form GELU (`gelu_new`).
    pub fn gelu(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Gelu)
    }
    pub fn sqr(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Sqr)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Sqrt)
    }
    pub fn relu(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Relu)
    }

    pub fn clamp(&self, lo: f32, hi: f32) -> Result<Tensor> {
        let _p = crate::profile::scope("clamp", self.device());
        if lo > hi {
            return Err(Error::Msg(format!("clamp: lower bound {lo} above upper bound {hi}")));
        }
        let out = if self.device().is_cuda() {
            crate::cuda::ops::unary(self, Unary::Clamp, lo, hi)?
        } else {
            f32_tensor(unary_map(&self.cpu_f32("clamp")?, |x| x.clamp(lo, hi)), self.shape())
        };
        Ok(out.with_op(&[self], || Op::Clamp(self.clone(), lo, hi)))
    }

    /// `self` is the condition (non-zero = true): elements of `on_true` where it holds, else of
    /// `on_false`; all three broadcast together.
    /// On CUDA the condition, and an untracked CPU operand (a constant), move to the device.
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let _p = crate::profile::scope("where", self.device());
        let device = [on_true, on_false, self].iter().map(|t| t.device()).find(|d| d.is_cuda()).unwrap_or(Device::Cpu);
        let (on_true, on_false) = (on_device(on_true, device)?, on_device(on_false, device)?);
        let cond = if self.dtype() == crate::DType::F32 { self.clone() } else { self.converted(crate::DType::F32)? };
        let cond = cond.detach().to_device(device)?;
        let shape = broadcast_shape("where", &broadcast_shape("where", cond.shape(), on_true.shape())?, on_false.shape())?;
        let (c, a, b) = (cond.broadcast_as(&shape)?.detach(), on_true.broadcast_as(&shape)?, on_false.broadcast_as(&shape)?);
        if device.is_cuda() {
            let out = crate::cuda::ops::where_cond(&c, &a, &b)?;
            return Ok(out.with_op(&[&a, &b], || Op::Where(c.clone(), a.clone(), b.clone())));
        }
        let data = {
            let (cv, av, bv) = (c.cpu_f32("where")?, a.cpu_f32("where")?, b.cpu_f32("where")?);
            ternary_map(&cv, &av, &bv, |c, x, y| if c != 0.0 { x } else { y })
        };
        Ok(f32_tensor(data, &shape).with_op(&[&a, &b], || Op::Where(c.clone(), a.clone(), b.clone())))
    }

    /// Inverted dropout: zero each element with probability `p`, scale the rest by 1/(1-p).
    pub fn dropout(&self, p: f32, rng: &mut impl Rng) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::Msg(format!("dropout: p must be in [0, 1), got {p}")));
        }
        if p == 0.0 {
            return Ok(self.clone());
        }
        let scale = 1.0 / (1.0 - p);
        let mask: Vec<f32> = (0..self.numel()).map(|_| if rng.gen::<f32>() < p { 0.0 } else { scale }).collect();
        self.mul(&f32_tensor(mask, self.shape()).to_device(self.device())?)
    }
}
