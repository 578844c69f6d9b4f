//! Batched matmul with either operand transposed (as a strided view, at no cost) and an optional
//! bias fused into the output (C starts as the bias rows, then the GEMM accumulates into it).

use super::view::f32_tensor;
use crate::autograd::{Op, UnaryOp};
use crate::cpu::gemm::{sgemm, MatMut, MatRef};
use crate::{DType, Error, Result, Tensor};
use rayon::prelude::*;

/// Below this many multiply-adds per matrix, batches run in parallel instead of inside the GEMM.
const SMALL_GEMM: usize = 64 * 64 * 64;

impl Tensor {
    /// `self` [.., M, K] · `rhs` [.., K, N] (or [K, N], shared by every batch) → [.., M, N].
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        matmul(self, rhs, None, None)
    }

    /// `self · rhs + bias`, with `bias` [N] added to every row.
    pub fn matmul_bias(&self, rhs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        matmul(self, rhs, Some(bias), None)
    }

    /// `gelu(self · rhs + bias)`: an MLP's up-projection. On CUDA one kernel writes both the
    /// pre-activation (which GELU's backward reads) and its GELU, instead of a matmul writing the
    /// pre-activation and a GELU kernel reading it back (the tensor-core matmul under autocast,
    /// v2 in f32); on the CPU, and for a batched `rhs` (or, under autocast, N not a multiple of
    /// 8), `matmul_bias`, then `gelu`. The graph is the same either way: a matmul node, then a
    /// GELU node on its output.
    pub fn matmul_bias_gelu(&self, rhs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let _p = crate::profile::scope("matmul_bias_gelu", self.device());
        if self.device().is_cuda() {
            let out_shape = matmul_shape(self, rhs, Some(bias))?;
            if let Some((pre, post)) = crate::cuda::ops::matmul_bias_gelu(self, rhs, bias, &out_shape)? {
                let pre = pre.with_op(&[self, rhs, bias], || Op::Matmul(self.clone(), rhs.clone(), Some(bias.clone())));
                let saved = post.detach();
                return Ok(post.with_op(&[&pre], || Op::Unary(UnaryOp::Gelu, pre.clone(), saved)));
            }
        }
        self.matmul_bias(rhs, bias)?.gelu()
    }

    /// `matmul` written as `dtype` under autocast on CUDA (where a product is otherwise an
    /// activation, stored bf16); f32 elsewhere. For heads whose outputs are compared, not just
    /// passed on: logits (PPO's ratios and KL are differences of log-probabilities, and bf16's
    /// spacing is 0.5 at |logit| 100), rewards and values.
    pub fn matmul_as(&self, rhs: &Tensor, dtype: DType) -> Result<Tensor> {
        matmul(self, rhs, None, Some(dtype))
    }
}

/// The product's shape [.., M, N], after checking the operands (ranks, inner dims, batch dims,
/// bias, devices).
fn matmul_shape(a: &Tensor, b: &Tensor, bias: Option<&Tensor>) -> Result<Vec<usize>> {
    let (ra, rb) = (a.rank(), b.rank());
    let bad = |why: &str| Error::shape("matmul", format!("{:?} x {:?}: {why}", a.shape(), b.shape()));
    if ra < 2 || rb < 2 {
        return Err(bad("both operands need rank >= 2"));
    }
    let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
    if b.shape()[rb - 2] != k {
        return Err(bad("inner dims differ"));
    }
    let batch_shape = &a.shape()[..ra - 2];
    if rb > 2 && b.shape()[..rb - 2] != *batch_shape {
        return Err(bad("batch dims differ"));
    }
    if let Some(bias) = bias {
        if bias.shape() != [n] {
            return Err(Error::shape("matmul", format!("bias {:?} for {n} output columns", bias.shape())));
        }
    }
    for t in [Some(b), bias].into_iter().flatten() {
        if t.device() != a.device() {
            return Err(Error::DeviceMismatch { op: "matmul", a: a.device(), b: t.device() });
        }
    }
    let mut out_shape = batch_shape.to_vec();
    out_shape.extend([m, n]);
    Ok(out_shape)
}

/// `out`: the product's element type under autocast on CUDA (None: bf16, an activation); the
/// backward asks for each operand's own type. f32 everywhere else.
fn matmul(a: &Tensor, b: &Tensor, bias: Option<&Tensor>, out: Option<DType>) -> Result<Tensor> {
    let _p = crate::profile::scope("matmul", a.device());
    let out_shape = matmul_shape(a, b, bias)?;
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
    let batches: usize = a.shape()[..ra - 2].iter().product();

    if a.device().is_cuda() {
        let out = crate::cuda::ops::matmul(a, b, bias, &out_shape, out.unwrap_or(DType::BF16))?;
        let (ca, cb, cbias) = (a.clone(), b.clone(), bias.cloned());
        let inputs: Vec<&Tensor> = [Some(a), Some(b), bias].into_iter().flatten().collect();
        return Ok(out.with_op(&inputs, move || Op::Matmul(ca, cb, cbias)));
    }

    // C starts as the bias rows (beta = 1) or is written fresh (beta = 0).
    let (mut out, beta) = match bias {
        Some(bias) => (bias.cpu_f32("matmul bias")?.repeat(batches * m), 1.0),
        None => (vec![0f32; batches * m * n], 0.0),
    };
    {
        let (av, bv) = (a.cpu_f32_storage("matmul")?, b.cpu_f32_storage("matmul")?);
        let (la, lb) = (a.layout(), b.layout());
        let mat = |data, l: &crate::shape::Layout, r: usize, batch: usize| MatRef {
            data,
            offset: batch_offset(l, r - 2, batch),
            rs: l.strides[r - 2],
            cs: l.strides[r - 1],
        };
        // A shared B and batch dims that collapse into rows: one large GEMM.
        let merged = if rb == 2 && batches > 1 { merged_row_stride(la) } else { None };
        if let Some(rs) = merged {
            let am = MatRef { data: &av, offset: la.offset, rs, cs: la.strides[ra - 1] };
            let c = MatMut { data: &mut out, offset: 0, rs: n, cs: 1 };
            sgemm(batches * m, n, k, 1.0, am, mat(&bv, lb, 2, 0), beta, c);
        } else if batches > 1 && m * n * k < SMALL_GEMM {
            out.par_chunks_mut((m * n).max(1)).enumerate().for_each(|(i, c)| {
                let bm = if rb == 2 { mat(&bv, lb, 2, 0) } else { mat(&bv, lb, rb, i) };
                sgemm(m, n, k, 1.0, mat(&av, la, ra, i), bm, beta, MatMut { data: c, offset: 0, rs: n, cs: 1 });
            });
        } else {
            for (i, c) in out.chunks_mut((m * n).max(1)).enumerate().take(batches) {
                let bm = if rb == 2 { mat(&bv, lb, 2, 0) } else { mat(&bv, lb, rb, i) };
                sgemm(m, n, k, 1.0, mat(&av, la, ra, i), bm, beta, MatMut { data: c, offset: 0, rs: n, cs: 1 });
            }
        }
    }
    let inputs: Vec<&Tensor> = [Some(a), Some(b), bias].into_iter().flatten().collect();
    Ok(f32_tensor(out, &out_shape).with_op(&inputs, || Op::Matmul(a.clone(), b.clone(), bias.cloned())))
}

/// Storage offset of matrix number `batch` (row-major over the dims before `mat_dim`).
fn batch_offset(l: &crate::shape::Layout, mat_dim: usize, mut batch: usize) -> usize {
    let mut offset = l.offset;
    for d in (0..mat_dim).rev() {
        offset += (batch % l.shape[d]) * l.strides[d];
        batch /= l.shape[d];
    }
    offset
}

/// The stride that reads the batch dims and the row dim as one long row dim, if one does. Each
/// dim of size > 1 must step over all the rows after it: stride = (rows after it) · row stride.
/// Size-1 dims carry arbitrary strides, so they are skipped, never chained through; with a single
/// row per matrix (the last position of each sequence) the innermost batch dim sets the stride.
fn merged_row_stride(l: &crate::shape::Layout) -> Option<usize> {
    let r = l.rank();
    let mut stride = (l.shape[r - 2] != 1).then_some(l.strides[r - 2]);
    let mut expected = l.strides[r - 2] * l.shape[r - 2];
    for d in (0..r - 2).rev() {
        if l.shape[d] == 1 {
            continue;
        }
        match stride {
            None => stride = Some(l.strides[d]),
            Some(_) if l.strides[d] != expected => return None,
            Some(_) => {}
        }
        expected = l.strides[d] * l.shape[d];
    }
    Some(stride.unwrap_or(l.strides[r - 2]))
}

/// dA = g·Bᵀ, dB = Aᵀ·g (summed over batches when B was shared), dbias = Σ rows of g; each
/// written in its operand's type (f32 weights get f32 gradients straight from the kernel).
pub(crate) fn backward(g: &Tensor, a: Tensor, b: Tensor, bias: Option<Tensor>) -> Result<Vec<(Tensor, Tensor)>> {
    let mut grads = Vec::with_capacity(3);
    if a.tracked() {
        grads.push((matmul(g, &b.t()?, None, Some(a.dtype()))?, a.clone()));
    }
    if b.tracked() {
        let db = if b.rank() == 2 && a.rank() > 2 {
            let k = a.shape()[a.rank() - 1];
            let n = g.shape()[g.rank() - 1];
            let rows = a.numel() / k.max(1);
            let (a2, g2) = (a.reshape(&[rows, k])?, g.reshape(&[rows, n])?);
            if !b.is_contiguous() && b.t()?.is_contiguous() {
                // b is a transposed view (the tied LM head's wteᵀ): its gradient computed in the
                // layout of what it views, (Gᵀ·A)ᵀ, so that it reaches the parameter contiguous
                // instead of as a transposed view that every later sum reads across its rows.
                matmul(&g2.t()?, &a2, None, Some(b.dtype()))?.t()?
            } else {
                matmul(&a2.t()?, &g2, None, Some(b.dtype()))?
            }
        } else {
            matmul(&a.t()?, g, None, Some(b.dtype()))?
        };
        grads.push((db, b));
    }
    if let Some(bias) = bias {
        if bias.tracked() {
            grads.push((g.sum_to(bias.shape())?, bias));
        }
    }
    Ok(grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn matmul_bias_gelu_is_matmul_bias_then_gelu_values_and_gradients() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let x = Tensor::randn(&[2, 5, 12], 0.0, 1.0, &mut rng).var();
        let w = Tensor::randn(&[12, 16], 0.0, 0.5, &mut rng).var();
        let b = Tensor::randn(&[16], 0.0, 0.5, &mut rng).var();
        let fused = x.matmul_bias_gelu(&w, &b).unwrap();
        let composed = x.matmul_bias(&w, &b).unwrap().gelu().unwrap();
        assert_eq!(fused.shape(), &[2, 5, 16]);
        assert_eq!(fused.to_vec_f32().unwrap(), composed.to_vec_f32().unwrap());
        let (gf, gc) = (fused.sum_all().unwrap().backward().unwrap(), composed.sum_all().unwrap().backward().unwrap());
        for t in [&x, &w, &b] {
            assert_eq!(gf.get(t).unwrap().to_vec_f32().unwrap(), gc.get(t).unwrap().to_vec_f32().unwrap());
        }
        assert!(x.matmul_bias_gelu(&w, &Tensor::zeros(&[15])).is_err());
    }

    /// The tied LM head multiplies by a transposed view of the embedding (x · wteᵀ): wte's
    /// gradient arrives contiguous in wte's own layout, with the values of the same product
    /// taken with wteᵀ materialized.
    #[test]
    fn a_transposed_weight_gets_its_gradient_in_its_own_layout() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let x = Tensor::randn(&[2, 5, 12], 0.0, 1.0, &mut rng).var();
        let w = Tensor::randn(&[16, 12], 0.0, 0.5, &mut rng).var();
        let wt = w.t().unwrap().contiguous().unwrap().var();
        let weights = Tensor::randn(&[2, 5, 16], 0.0, 1.0, &mut rng);
        let tied = x.matmul(&w.t().unwrap()).unwrap().mul(&weights).unwrap().sum_all().unwrap().backward().unwrap();
        let plain = x.matmul(&wt).unwrap().mul(&weights).unwrap().sum_all().unwrap().backward().unwrap();
        let gw = tied.get(&w).unwrap();
        assert_eq!(gw.shape(), &[16, 12]);
        assert!(gw.is_contiguous(), "the gradient of w should not be a transposed view");
        let want = plain.get(&wt).unwrap().t().unwrap().contiguous().unwrap().to_vec_f32().unwrap();
        for (g, w) in gw.to_vec_f32().unwrap().iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
        assert_eq!(tied.get(&x).unwrap().to_vec_f32().unwrap(), plain.get(&x).unwrap().to_vec_f32().unwrap());
    }

    /// One row per matrix taken out of longer sequences ([B, T, K] narrowed to [B, 1, K]) is one
    /// GEMM over B rows, and gives what its contiguous copy gives.
    #[test]
    fn single_row_views_merge_into_one_gemm() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let x = Tensor::randn(&[3, 5, 20], 0.0, 1.0, &mut rng);
        let w = Tensor::randn(&[20, 70], 0.0, 1.0, &mut rng);
        let last = x.narrow(1, 4, 1).unwrap();
        assert_eq!(merged_row_stride(last.layout()), Some(100));
        let want = last.contiguous().unwrap().matmul(&w).unwrap().to_vec_f32().unwrap();
        assert_eq!(last.matmul(&w).unwrap().to_vec_f32().unwrap(), want);
        // Rows that are not evenly spaced do not merge.
        assert_eq!(merged_row_stride(x.narrow(1, 0, 2).unwrap().layout()), None);
        assert_eq!(merged_row_stride(x.layout()), Some(20));
    }
}
