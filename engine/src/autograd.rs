//! Reverse-mode autograd. Every op that records itself stores an `Op`; `backward` walks the graph in
//! reverse topological order and applies the rules in `Op::backward`, one table for the whole engine.
//! Taking each node's `Op` as it goes frees the graph (and the activations it saved) during backward.

use crate::ops;
use crate::{Error, Result, Tensor, TensorId};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Is this thread recording ops for backward?
pub fn grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Turns recording off until dropped: forward-only code (rollouts, evaluation) builds no graph and
/// keeps no activations alive.
#[must_use = "recording resumes when the guard is dropped"]
pub struct NoGradGuard(bool);

pub fn no_grad() -> NoGradGuard {
    NoGradGuard(GRAD_ENABLED.with(|g| g.replace(false)))
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.0));
    }
}

/// Run `f` without recording.
pub fn with_no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _guard = no_grad();
    f()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Exp,
    Log,
    Tanh,
    Sigmoid,
    LogSigmoid,
    Gelu,
    Sqr,
    Sqrt,
    Relu,
}

impl UnaryOp {
    pub fn name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Exp => "exp",
            Log => "log",
            Tanh => "tanh",
            Sigmoid => "sigmoid",
            LogSigmoid => "log_sigmoid",
            Gelu => "gelu",
            Sqr => "sqr",
            Sqrt => "sqrt",
            Relu => "relu",
        }
    }
}

/// How a tensor was computed: its inputs and what backward needs.
pub(crate) enum Op {
    Reshape(Tensor),
    Permute(Tensor, Vec<usize>),
    Narrow(Tensor, usize, usize),
    Broadcast(Tensor),
    Copy(Tensor),
    Cat(Vec<Tensor>, usize),
    IndexSelect(Tensor, usize, Tensor),
    Add(Tensor, Tensor),
    Sub(Tensor, Tensor),
    Mul(Tensor, Tensor),
    Div(Tensor, Tensor),
    Minimum(Tensor, Tensor),
    Maximum(Tensor, Tensor),
    Affine(Tensor, f32),
    Unary(UnaryOp, Tensor, Tensor),
    Clamp(Tensor, f32, f32),
    Where(Tensor, Tensor, Tensor),
    Sum(Tensor, Vec<usize>),
    Max(Tensor, usize, Tensor),
    Gather(Tensor, Tensor),
    Matmul(Tensor, Tensor, Option<Tensor>),
    Softmax(Tensor, Tensor),
    LogSoftmax(Tensor, Tensor),
    // Row statistics saved for backward are tensors, so that they live where the inputs do.
    LayerNorm { x: Tensor, w: Tensor, b: Tensor, mean: Tensor, rstd: Tensor },
    CrossEntropy { logits: Tensor, targets: Tensor, lse: Tensor, n_valid: usize },
    /// Per-row log-probs of the targets under softmax(inv_temp · logits).
    TokenLogprobs { logits: Tensor, targets: Tensor, lse: Tensor, inv_temp: f32 },
    /// `key_pad`: leading padding keys per batch row (empty: none).
    Attention { q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, key_pad: Vec<usize> },
}

impl Op {
    /// The forward op's name (the profile's name for its backward rule).
    fn name(&self) -> &'static str {
        use Op::*;
        match self {
            Reshape(_) => "reshape",
            Permute(..) => "permute",
            Narrow(..) => "narrow",
            Broadcast(_) => "broadcast",
            Copy(_) => "copy",
            Cat(..) => "cat",
            IndexSelect(..) => "index_select",
            Add(..) => "add",
            Sub(..) => "sub",
            Mul(..) => "mul",
            Div(..) => "div",
            Minimum(..) => "minimum",
            Maximum(..) => "maximum",
            Affine(..) => "affine",
            Unary(op, ..) => op.name(),
            Clamp(..) => "clamp",
            Where(..) => "where",
            Sum(..) => "sum",
            Max(..) => "max",
            Gather(..) => "gather",
            Matmul(..) => "matmul",
            Softmax(..) => "softmax",
            LogSoftmax(..) => "log_softmax",
            LayerNorm { .. } => "layer_norm",
            CrossEntropy { .. } => "cross_entropy",
            TokenLogprobs { .. } => "token_logprobs",
            Attention { .. } => "attention",
        }
    }

    fn inputs(&self) -> Vec<&Tensor> {
        use Op::*;
        match self {
            Reshape(x) | Permute(x, _) | Narrow(x, ..) | Broadcast(x) | Copy(x) | IndexSelect(x, ..) | Affine(x, _) => vec![x],
            Unary(_, x, _) | Clamp(x, ..) | Sum(x, _) | Max(x, ..) | Gather(x, _) | Softmax(x, _) | LogSoftmax(x, _) => vec![x],
            Add(a, b) | Sub(a, b) | Mul(a, b) | Div(a, b) | Minimum(a, b) | Maximum(a, b) | Where(_, a, b) => vec![a, b],
            Cat(xs, _) => xs.iter().collect(),
            Matmul(a, b, bias) => [Some(a), Some(b), bias.as_ref()].into_iter().flatten().collect(),
            LayerNorm { x, w, b, .. } => vec![x, w, b],
            CrossEntropy { logits, .. } | TokenLogprobs { logits, .. } => vec![logits],
            Attention { q, k, v, .. } => vec![q, k, v],
        }
    }

    /// Every tensor this op holds (inputs and saved tensors), by value: lets `Drop for Inner`
    /// take a graph apart without recursion.
    pub(crate) fn into_tensors(self) -> Vec<Tensor> {
        use Op::*;
        match self {
            Reshape(x) | Permute(x, _) | Narrow(x, ..) | Broadcast(x) | Copy(x) | Affine(x, _) | Clamp(x, ..) | Sum(x, _) => vec![x],
            IndexSelect(x, _, ids) | Gather(x, ids) | Max(x, _, ids) => vec![x, ids],
            Unary(_, x, y) | Softmax(x, y) | LogSoftmax(x, y) => vec![x, y],
            Add(a, b) | Sub(a, b) | Mul(a, b) | Div(a, b) | Minimum(a, b) | Maximum(a, b) => vec![a, b],
            Where(c, a, b) => vec![c, a, b],
            Cat(xs, _) => xs,
            Matmul(a, b, bias) => [Some(a), Some(b), bias].into_iter().flatten().collect(),
            LayerNorm { x, w, b, mean, rstd } => vec![x, w, b, mean, rstd],
            CrossEntropy { logits, targets, lse, .. } | TokenLogprobs { logits, targets, lse, .. } => vec![logits, targets, lse],
            Attention { q, k, v, out, lse, .. } => vec![q, k, v, out, lse],
        }
    }

    /// The gradient rules: given d(loss)/d(out) = `g`, the gradient for each input (same order as
    /// `inputs`). Runs with recording off.
    fn backward(self, out: &Tensor, g: &Tensor) -> Result<Vec<(Tensor, Tensor)>> {
        use Op::*;
        Ok(match self {
            Reshape(x) => vec![(g.reshape(x.shape())?, x)],
            Permute(x, perm) => {
                let mut inverse = vec![0; perm.len()];
                perm.iter().enumerate().for_each(|(i, &p)| inverse[p] = i);
                vec![(g.permute(&inverse)?, x)]
            }
            Narrow(x, dim, start) => vec![(ops::view::narrow_backward(g, x.shape(), dim, start)?, x)],
            Broadcast(x) => vec![(g.sum_to(x.shape())?, x)],
            Copy(x) => vec![(g.clone(), x)],
            Cat(xs, dim) => {
                let mut start = 0;
                let mut grads = Vec::with_capacity(xs.len());
                for x in xs {
                    grads.push((g.narrow(dim, start, x.shape()[dim])?, x.clone()));
                    start += x.shape()[dim];
                }
                grads
            }
            IndexSelect(x, dim, ids) => vec![(ops::index::index_add(g, x.shape(), dim, &ids)?, x)],
            Add(a, b) => vec![(g.clone(), a), (g.clone(), b)],
            Sub(a, b) => vec![(g.clone(), a), (g.neg()?, b)],
            Mul(a, b) => {
                let (ga, gb) = (g.mul(&b)?, g.mul(&a)?);
                vec![(ga, a), (gb, b)]
            }
            Div(a, b) => {
                let (ga, gb) = (g.div(&b)?, g.mul(out)?.div(&b)?.neg()?);
                vec![(ga, a), (gb, b)]
            }
            Minimum(a, b) => ops::elementwise::min_max_backward(g, a, b, false)?,
            Maximum(a, b) => ops::elementwise::min_max_backward(g, a, b, true)?,
            Affine(x, mul) => vec![(g.mul_scalar(mul)?, x)],
            Unary(op, x, y) => vec![(ops::elementwise::unary_backward(op, &x, &y, g)?, x)],
            Clamp(x, lo, hi) => vec![(ops::elementwise::clamp_backward(&x, lo, hi, g)?, x)],
            Where(cond, a, b) => {
                let zero = Tensor::zeros(&[]);
                vec![(cond.where_cond(g, &zero)?, a), (cond.where_cond(&zero, g)?, b)]
            }
            Sum(x, keep_shape) => vec![(g.reshape(&keep_shape)?.broadcast_as(x.shape())?, x)],
            Max(x, dim, argmax) => vec![(ops::index::scatter_along(g, x.shape(), dim, &argmax)?, x)],
            Gather(x, ids) => {
                let last = x.rank() - 1;
                vec![(ops::index::scatter_along(g, x.shape(), last, &ids)?, x)]
            }
            Matmul(a, b, bias) => ops::matmul::backward(g, a, b, bias)?,
            Softmax(x, y) => vec![(ops::softmax::softmax_backward(&y, g)?, x)],
            LogSoftmax(x, y) => vec![(ops::softmax::log_softmax_backward(&y, g)?, x)],
            LayerNorm { x, w, b, mean, rstd } => {
                let (dx, dw, db) = ops::layernorm::backward(&x, &w, &mean, &rstd, g)?;
                vec![(dx, x), (dw, w), (db, b)]
            }
            CrossEntropy { logits, targets, lse, n_valid } => {
                vec![(ops::cross_entropy::backward(&logits, &targets, &lse, n_valid, g.to_scalar()?)?, logits)]
            }
            TokenLogprobs { logits, targets, lse, inv_temp } => {
                vec![(ops::cross_entropy::token_logprobs_backward(&logits, &targets, &lse, inv_temp, g)?, logits)]
            }
            Attention { q, k, v, out, lse, key_pad } => {
                let (dq, dk, dv) = ops::attention::backward(&q, &k, &v, &out, &lse, &key_pad, g)?;
                vec![(dq, q), (dk, k), (dv, v)]
            }
        })
    }
}

/// Gradients of the leaf parameters (vars), by tensor id.
#[derive(Default, Clone)]
pub struct GradStore(HashMap<TensorId, Tensor>);

impl GradStore {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.id())
    }
    pub fn insert(&mut self, t: &Tensor, g: Tensor) {
        self.0.insert(t.id(), g);
    }
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.0.remove(&t.id())
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Forget every gradient (before the next accumulation).
    pub fn zero(&mut self) {
        self.0.clear();
    }

    fn accumulate(&mut self, id: TensorId, g: Tensor) -> Result<()> {
        let g = match self.0.remove(&id) {
            Some(acc) => acc.add(&g)?,
            None => g,
        };
        self.0.insert(id, g);
        Ok(())
    }

    /// The L2 norm over all gradients together.
    pub fn global_norm(&self) -> Result<f32> {
        let _p = self.0.values().next().and_then(|g| crate::profile::scope("global_norm", g.device()));
        let mut sum = 0f64;
        // Gradients on a device: one fused reduction there per device, one number back. In the
        // order of their tensors' ids, not the map's (which changes from run to run): the same
        // sum, to the last bit, every run.
        let mut grads: Vec<(&TensorId, &Tensor)> = self.0.iter().collect();
        grads.sort_by_key(|(id, _)| **id);
        let mut on_device: std::collections::BTreeMap<usize, Vec<&Tensor>> = Default::default();
        for (_, g) in grads {
            if let crate::Device::Cuda(n) = g.device() {
                on_device.entry(n).or_default().push(g);
            } else {
                sum += g.to_vec_f32()?.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
            }
        }
        for gs in on_device.values() {
            sum += (crate::cuda::ops::global_norm(gs)? as f64).powi(2);
        }
        Ok(sum.sqrt() as f32)
    }

    /// Scale all gradients so that their global norm is at most `max_norm`; returns the norm before.
    pub fn clip_global_norm(&mut self, max_norm: f32) -> Result<f32> {
        let _phase = crate::profile::phase(crate::profile::Phase::Optimizer);
        let norm = self.global_norm()?;
        if norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            let _guard = no_grad();
            for g in self.0.values_mut() {
                *g = g.mul_scalar(scale)?;
            }
        }
        Ok(norm)
    }
}

impl Tensor {
    /// Gradients of this scalar with respect to every var it depends on.
    pub fn backward(&self) -> Result<GradStore> {
        let mut store = GradStore::new();
        self.backward_into(&mut store)?;
        Ok(store)
    }

    /// Like `backward`, adding into `store` (gradient accumulation over micro-batches).
    pub fn backward_into(&self, store: &mut GradStore) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::Autograd(format!("backward needs a scalar, got shape {:?}", self.shape())));
        }
        if !self.tracked() {
            return Err(Error::Autograd("backward on a tensor that depends on no var (or was computed under no_grad)".into()));
        }
        if !self.is_var() && !self.has_op() {
            return Err(Error::Autograd("the graph was already freed by an earlier backward".into()));
        }
        let _guard = no_grad();
        let _phase = crate::profile::phase(crate::profile::Phase::Backward);
        let order = topological_order(self);
        let mut grads = Pending::default();
        grads.put(self.id(), Tensor::ones(self.shape()).to_device(self.device())?, false);
        for node in order.iter().rev() {
            let Some(g) = grads.take(node.id()) else { continue };
            // Summed in whatever types the rules wrote, converted once.
            let g = in_dtype_of(g, node)?;
            if node.is_var() {
                store.accumulate(node.id(), g)?;
                continue;
            }
            let Some(op) = node.take_op() else {
                return Err(Error::Autograd("part of the graph was already freed by an earlier backward".into()));
            };
            let _p = crate::profile::scope(op.name(), node.device());
            if let Op::Narrow(x, dim, start) = &op {
                if x.tracked() {
                    grads.add_narrowed(x, *dim, *start, &g)?;
                }
                continue;
            }
            for (gi, input) in op.backward(node, &g)? {
                if input.tracked() {
                    grads.add(input.id(), gi)?;
                }
            }
        }
        Ok(())
    }
}

/// Gradients still to be passed on, by tensor id. An entry is `owned` when its buffer was made
/// here (a sum, or zeros) and nothing else holds it: then gradients of narrowed views of that
/// tensor (q, k and v cut from one qkv projection) are added into their slices in place,
/// instead of each becoming a zero-filled full-size tensor that is then summed whole.
#[derive(Default)]
struct Pending {
    grads: HashMap<TensorId, Tensor>,
    owned: HashSet<TensorId>,
}

impl Pending {
    fn put(&mut self, id: TensorId, g: Tensor, owned: bool) {
        if owned {
            self.owned.insert(id);
        } else {
            self.owned.remove(&id);
        }
        self.grads.insert(id, g);
    }

    fn take(&mut self, id: TensorId) -> Option<Tensor> {
        self.owned.remove(&id);
        self.grads.remove(&id)
    }

    /// Add `g` to the gradient of tensor `id` (a rule's output may be shared, e.g. Add hands the
    /// same `g` to both inputs, so it is stored as not owned).
    fn add(&mut self, id: TensorId, g: Tensor) -> Result<()> {
        match self.take(id) {
            Some(acc) => self.put(id, acc.add(&g)?, true),
            None => self.put(id, g, false),
        }
        Ok(())
    }

    /// Add `g`, the gradient of `x.narrow(dim, start, len)`, into `x`'s gradient: into its
    /// slice of an owned buffer (made as zeros, f32, for the first one), else as a whole tensor.
    /// The same sums as the general rule, element for element (0 + g, acc + g).
    fn add_narrowed(&mut self, x: &Tensor, dim: usize, start: usize, g: &Tensor) -> Result<()> {
        let id = x.id();
        let owned = self.owned.contains(&id);
        let buf = match self.take(id) {
            None => Tensor::zeros_on(x.shape(), x.device())?,
            Some(acc) if owned && acc.dtype() == crate::DType::F32 => acc,
            Some(acc) => {
                let full = ops::view::narrow_backward(g, x.shape(), dim, start)?;
                self.put(id, acc.add(&full)?, true);
                return Ok(());
            }
        };
        let slice = buf.narrow(dim, start, g.shape()[dim])?;
        slice.assign(&slice.add(g)?)?;
        self.put(id, buf, true);
        Ok(())
    }
}

/// A gradient in its tensor's element type, as torch keeps them: a bf16 activation's gradient
/// is stored in bf16, a parameter's (f32 master weights) in f32, whatever type the rule that
/// made it wrote (ops without a bf16 kernel write f32; the bf16 matmul writes each operand's).
fn in_dtype_of(g: Tensor, t: &Tensor) -> Result<Tensor> {
    if g.dtype() == t.dtype() || !t.dtype().is_float() {
        return Ok(g);
    }
    g.converted(t.dtype())
}

/// Tracked nodes reachable from `root`, inputs before the tensors computed from them.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order DFS (deep graphs must not overflow the stack).
    let mut stack = vec![(root.clone(), false)];
    while let Some((node, children_done)) = stack.pop() {
        if children_done {
            order.push(node);
            continue;
        }
        if !seen.insert(node.id()) {
            continue;
        }
        let children: Vec<Tensor> = node.with_op_inputs(|inputs| inputs.into_iter().filter(|t| t.tracked()).cloned().collect());
        stack.push((node, true));
        for c in children {
            if !seen.contains(&c.id()) {
                stack.push((c, false));
            }
        }
    }
    order
}

impl Tensor {
    fn with_op_inputs<R>(&self, f: impl FnOnce(Vec<&Tensor>) -> R) -> R {
        let guard = self.op_lock();
        f(guard.as_ref().map(|op| op.inputs()).unwrap_or_default())
    }
}
