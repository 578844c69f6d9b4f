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
    let _p = crate::profile::scope("attention", q.device());
    let dims = dims(q, k, v)?;
    if q.device().is_cuda() {
        return attention_cuda(q, k, v, key_pad, dims);
    }
    let (out, lse) = match (head_stride(k), head_stride(v)) {
        // Keys and values read where they are (a KV cache's buffers viewed up to its length).
        (Some(sk), Some(sv)) if sk == sv => {
            let (ks, vs) = (k.cpu_f32_storage("attention")?, v.cpu_f32_storage("attention")?);
            let (ko, vo) = (k.layout().offset, v.layout().offset);
            k::forward_kv_strided(&q.cpu_f32("attention")?, &ks[ko..], &vs[vo..], dims, &key_pad, sk)
        }
        _ => k::forward_padded(&q.cpu_f32("attention")?, &k.cpu_f32("attention")?, &v.cpu_f32("attention")?, dims, &key_pad),
    };
    let lse = f32_tensor(lse, &q.shape()[..q.rank() - 1]);
    let out = f32_tensor(out, q.shape());
    let saved = out.detach();
    Ok(out.with_op(&[q, k, v], || Op::Attention { q: q.clone(), k: k.clone(), v: v.clone(), out: saved, lse, key_pad }))
}

/// On CUDA: the flash-attention kernels where they fit the head dim (32, 64, 128; padding
/// included); otherwise the same function from ops that have CUDA kernels (an additive mask,
/// softmax, two matmuls; a query that sees no key gets a zero row from softmax, as on the CPU).
fn attention_cuda(q: &Tensor, k: &Tensor, v: &Tensor, key_pad: Vec<usize>, dims: Dims) -> Result<Tensor> {
    let Dims { heads, tq, tk, d } = dims;
    let padded = key_pad.iter().any(|&p| p > 0);
    if !crate::cuda::ops::attention_kernel_fits(d) {
        let scores = q.matmul(&k.t()?)?.mul_scalar(1.0 / (d as f32).sqrt())?;
        let visible = |pad: usize, i: usize, j: usize| j <= i + tk - tq && j >= pad;
        let mask = if padded {
            // [B, 1, .., 1, tq, tk]: one mask per batch row, shared by its heads.
            let data: Vec<f32> = key_pad.iter().flat_map(|&p| (0..tq).flat_map(move |i| (0..tk).map(move |j| if visible(p, i, j) { 0.0 } else { f32::NEG_INFINITY }))).collect();
            let mut shape = vec![1; q.rank()];
            (shape[0], shape[q.rank() - 2], shape[q.rank() - 1]) = (key_pad.len(), tq, tk);
            f32_tensor(data, &shape)
        } else {
            f32_tensor((0..tq).flat_map(|i| (0..tk).map(move |j| if visible(0, i, j) { 0.0 } else { f32::NEG_INFINITY })).collect(), &[tq, tk])
        };
        return scores.add(&mask.to_device(q.device())?)?.softmax()?.matmul(v);
    }
    let (out, lse) = crate::cuda::ops::attention(q, k, v, heads, tq, tk, d, &key_pad)?;
    let saved = out.detach();
    Ok(out.with_op(&[q, k, v], || Op::Attention { q: q.clone(), k: k.clone(), v: v.clone(), out: saved, lse, key_pad }))
}

/// Distance between consecutive heads' [tk, d] blocks when each is row-major and the leading
/// dims step over them evenly (contiguous tensors, and [B, H, len, d] views of a longer buffer).
fn head_stride(t: &Tensor) -> Option<usize> {
    let l = t.layout();
    let r = l.rank();
    let (tk, d) = (l.shape[r - 2], l.shape[r - 1]);
    if (d > 1 && l.strides[r - 1] != 1) || (tk > 1 && l.strides[r - 2] != d) {
        return None;
    }
    // The head dims, innermost first: each (of size > 1) must step over all the heads after it.
    let (mut stride, mut expected) = (None, 0);
    for dim in (0..r - 2).rev() {
        if l.shape[dim] == 1 {
            continue;
        }
        match stride {
            None => stride = Some(l.strides[dim]),
            Some(_) if l.strides[dim] != expected => return None,
            _ => {}
        }
        expected = l.strides[dim] * l.shape[dim];
    }
    let s = stride.unwrap_or(tk * d);
    (s >= tk * d).then_some(s)
}

/// The same function from primitive ops, materializing the full score matrix (the reference).
pub fn causal_attention_naive(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let Dims { tq, tk, d, .. } = dims(q, k, v)?;
    let scores = q.matmul(&k.t()?)?.mul_scalar(1.0 / (d as f32).sqrt())?;
    let visible: Vec<f32> = (0..tq).flat_map(|i| (0..tk).map(move |j| if j <= i + tk - tq { 1.0 } else { 0.0 })).collect();
    let masked = f32_tensor(visible, &[tq, tk]).where_cond(&scores, &Tensor::scalar(f32::NEG_INFINITY))?;
    masked.softmax()?.matmul(v)
}

pub(crate) fn backward(q: &Tensor, k: &Tensor, v: &Tensor, out: &Tensor, lse: &Tensor, key_pad: &[usize], g: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let dims = dims(q, k, v)?;
    if q.device().is_cuda() {
        let Dims { heads, tq, tk, d } = dims;
        return crate::cuda::ops::attention_backward(q, k, v, out, lse, g, heads, tq, tk, d, key_pad);
    }
    let (qv, kv, vv) = (q.cpu_f32("attention backward")?, k.cpu_f32("attention backward")?, v.cpu_f32("attention backward")?);
    let (dq, dk, dv) = k::backward_padded(&qv, &kv, &vv, &out.cpu_f32("attention backward")?, &lse.cpu_f32("attention backward")?, &g.cpu_f32("attention backward")?, dims, key_pad);
    Ok((f32_tensor(dq, q.shape()), f32_tensor(dk, k.shape()), f32_tensor(dv, v.shape())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Keys and values viewed out of longer [B, H, cap, d] buffers (a KV cache) are read in place
    /// and give what contiguous copies give, with and without padding.
    #[test]
    fn cache_views_match_contiguous_copies() {
        let _g = crate::no_grad();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (b, h, tq, tk, cap, d) in [(2, 3, 1, 9, 16, 8), (1, 2, 3, 40, 41, 16), (2, 1, 70, 70, 100, 8)] {
            let q = Tensor::randn(&[b, h, tq, d], 0.0, 1.0, &mut rng);
            let (kb, vb) = (Tensor::randn(&[b, h, cap, d], 0.0, 1.0, &mut rng), Tensor::randn(&[b, h, cap, d], 0.0, 1.0, &mut rng));
            let (k, v) = (kb.narrow(2, 0, tk).unwrap(), vb.narrow(2, 0, tk).unwrap());
            assert_eq!(head_stride(&k), Some(cap * d));
            let (kc, vc) = (k.contiguous().unwrap(), v.contiguous().unwrap());
            for pad in [vec![0; b], (0..b).map(|i| (i * 5) % tk).collect()] {
                let got = causal_attention_padded(&q, &k, &v, &pad).unwrap().to_vec_f32().unwrap();
                let want = causal_attention_padded(&q, &kc, &vc, &pad).unwrap().to_vec_f32().unwrap();
                assert_eq!(got, want, "b{b} h{h} tq{tq} tk{tk} pad {pad:?}");
            }
        }
        // Views whose heads are not evenly spaced are gathered instead.
        let x = Tensor::zeros(&[2, 3, 5, 4]);
        assert_eq!(head_stride(&x.narrow(1, 0, 2).unwrap()), None);
        assert_eq!(head_stride(&x.narrow(3, 0, 2).unwrap()), None);
        assert_eq!(head_stride(&x), Some(20));
    }
}
