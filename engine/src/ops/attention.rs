//! Causal self-attention: a fused, tiled kernel (the default) and a naive reference made of
//! primitive ops (scores, mask, softmax, weighted sum) that autograd differentiates on its own.

use super::view::f32_tensor;
use crate::autograd::Op;
use crate::cpu::attention::{self as k, Dims};
use crate::{Error, Result, Tensor};

/// q [.., tq, d], k and v [.., tk, d] with the same leading (batch, head) dims and tq <= tk.
fn dims(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Dims> {
    let r = q.rank();
    let bad = || Error::shape("attention", format!("q {:?}, k {:?}, v {:?}", q.shape(), k.shape(), v.shape()));
    if r < 2 || k.shape() != v.shape() || k.rank() != r || q.shape()[..r - 2] != k.shape()[..r - 2] || q.shape()[r - 1] != k.shape()[r - 1] {
        return Err(bad());
    }
    let (tq, tk, d) = (q.shape()[r - 2], k.shape()[r - 2], q.shape()[r - 1]);
    if tq > tk || tq == 0 || d == 0 {
        return Err(bad());
    }
    Ok(Dims { heads: q.shape()[..r - 2].iter().product(), tq, tk, d })
}

/// Fused causal attention, softmax(q·kᵀ/√d + causal mask)·v.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    attention(q, k, v, Vec::new())
}

/// Causal attention over a left-padded batch: q [B, .., tq, d], k and v [B, .., tk, d]; the first
/// `key_pad[b]` keys of batch row b are padding that no query sees. Queries that see no key at
/// all (padding queries) output zeros and get no gradient.
pub fn causal_attention_padded(q: &Tensor, k: &Tensor, v: &Tensor, key_pad: &[usize]) -> Result<Tensor> {
    let Dims { tk, .. } = dims(q, k, v)?;
    if q.rank() < 3 || key_pad.len() != q.shape()[0] || key_pad.iter().any(|&p| p > tk) {
        return Err(Error::shape("attention", format!("key_pad {key_pad:?} for q {:?}, k {:?}: one count <= tk per batch row (dim 0)", q.shape(), k.shape())));
    }
    attention(q, k, v, key_pad.to_vec())
}

fn attention(q: &Tensor, k: &Tensor, v: &Tensor, key_pad: Vec<usize>) -> Result<Tensor> {
    let dims = dims(q, k, v)?;
    let (out, lse) = k::forward_padded(&q.cpu_f32("attention")?, &k.cpu_f32("attention")?, &v.cpu_f32("attention")?, dims, &key_pad);
    let out = f32_tensor(out, q.shape());
    let saved = out.detach();
    Ok(out.with_op(&[q, k, v], || Op::Attention { q: q.clone(), k: k.clone(), v: v.clone(), out: saved, lse, key_pad }))
}

/// The same function from primitive ops, materializing the full score matrix (the reference).
pub fn causal_attention_naive(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let Dims { tq, tk, d, .. } = dims(q, k, v)?;
    let scores = q.matmul(&k.t()?)?.mul_scalar(1.0 / (d as f32).sqrt())?;
    let visible: Vec<f32> = (0..tq).flat_map(|i| (0..tk).map(move |j| if j <= i + tk - tq { 1.0 } else { 0.0 })).collect();
    let masked = f32_tensor(visible, &[tq, tk]).where_cond(&scores, &Tensor::scalar(f32::NEG_INFINITY))?;
    masked.softmax()?.matmul(v)
}

pub(crate) fn backward(q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, lse: &[f32], key_pad: &[usize], g: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let dims = dims(q, k, v)?;
    let (qv, kv, vv) = (q.cpu_f32("attention backward")?, k.cpu_f32("attention backward")?, v.cpu_f32("attention backward")?);
    let (dq, dk, dv) = k::backward_padded(&qv, &kv, &vv, &out.cpu_f32("attention backward")?, lse, &g.cpu_f32("attention backward")?, dims, key_pad);
    Ok((f32_tensor(dq, q.shape()), f32_tensor(dk, k.shape()), f32_tensor(dv, v.shape())))
}
