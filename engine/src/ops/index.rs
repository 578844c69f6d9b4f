//! Indexing: cat, stack, index_select (and embedding, which is index_select on rows), gather.

use super::view::f32_tensor;
use crate::autograd::Op;
use crate::shape::contiguous_strides;
use crate::{Error, Result, Tensor};

fn check_ids(op: &'static str, ids: &[i64], bound: usize) -> Result<()> {
    match ids.iter().position(|&i| i < 0 || i as usize >= bound) {
        Some(p) => Err(Error::Index(format!("{op}: id {} at position {p} is outside 0..{bound}", ids[p]))),
        None => Ok(()),
    }
}

/// Sizes of the dims before `dim` and after it.
fn outer_inner(shape: &[usize], dim: usize) -> (usize, usize) {
    (shape[..dim].iter().product(), shape[dim + 1..].iter().product())
}

impl Tensor {
    /// Concatenate along `dim`; every other dim must agree.
    pub fn cat(xs: &[Tensor], dim: usize) -> Result<Tensor> {
        let _p = xs.first().and_then(|x| crate::profile::scope("cat", x.device()));
        let first = xs.first().ok_or_else(|| Error::shape("cat", "no tensors"))?;
        if dim >= first.rank() {
            return Err(Error::shape("cat", format!("dim {dim} for shape {:?}", first.shape())));
        }
        let mut shape = first.shape().to_vec();
        shape[dim] = 0;
        for x in xs {
            let same = x.rank() == first.rank() && (0..x.rank()).all(|d| d == dim || x.shape()[d] == first.shape()[d]);
            if !same {
                return Err(Error::shape("cat", format!("{:?} does not match {:?} outside dim {dim}", x.shape(), first.shape())));
            }
            if x.device() != first.device() {
                return Err(Error::DeviceMismatch { op: "cat", a: first.device(), b: x.device() });
            }
            shape[dim] += x.shape()[dim];
        }
        // Every element is written below: on a device, no zeroing first.
        let out = match first.device() {
            crate::Device::Cpu => Tensor::zeros(&shape),
            crate::Device::Cuda(n) => crate::cuda::ops::output_on(&shape, n)?,
        };
        let mut start = 0;
        for x in xs {
            out.narrow(dim, start, x.shape()[dim])?.assign(x)?;
            start += x.shape()[dim];
        }
        let inputs: Vec<&Tensor> = xs.iter().collect();
        Ok(out.with_op(&inputs, || Op::Cat(xs.to_vec(), dim)))
    }

    /// Stack equal-shaped tensors along a new dim.
    pub fn stack(xs: &[Tensor], dim: usize) -> Result<Tensor> {
        let parts = xs.iter().map(|x| x.unsqueeze(dim)).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, dim)
    }

    /// Pick entries `ids` (1-D, i64) along `dim`.
    pub fn index_select(&self, dim: usize, ids: &Tensor) -> Result<Tensor> {
        let _p = crate::profile::scope("index_select", self.device());
        if dim >= self.rank() || ids.rank() != 1 {
            return Err(Error::shape("index_select", format!("dim {dim} of {:?} with ids {:?}", self.shape(), ids.shape())));
        }
        if self.device().is_cuda() {
            let idv = ids.expect_i64("index_select")?.to_vec_i64()?;
            check_ids("index_select", &idv, self.shape()[dim])?;
            // Rows of dim 0 are the embedding kernel's; another dim is swapped to the front and back.
            let out = crate::autograd::with_no_grad(|| {
                if dim == 0 {
                    return crate::cuda::ops::embedding(self, &idv);
                }
                let front = self.detach().transpose(0, dim)?.contiguous()?;
                crate::cuda::ops::embedding(&front, &idv)?.transpose(0, dim)?.contiguous()
            })?;
            let ids = ids.detach();
            return Ok(out.with_op(&[self], || Op::IndexSelect(self.clone(), dim, ids)));
        }
        let idv = ids.cpu_i64("index_select")?;
        check_ids("index_select", &idv, self.shape()[dim])?;
        let x = self.cpu_f32("index_select")?;
        let (outer, inner) = outer_inner(self.shape(), dim);
        let n = self.shape()[dim];
        let mut out = Vec::with_capacity(outer * idv.len() * inner);
        for o in 0..outer {
            for &i in &idv {
                let start = (o * n + i as usize) * inner;
                out.extend_from_slice(&x[start..start + inner]);
            }
        }
        let mut shape = self.shape().to_vec();
        shape[dim] = idv.len();
        drop(x);
        let ids = ids.detach();
        Ok(f32_tensor(out, &shape).with_op(&[self], || Op::IndexSelect(self.clone(), dim, ids)))
    }

    /// Gather along the last dim: `out[.., j] = self[.., ids[.., j]]` (log-probs of chosen tokens).
    pub fn gather(&self, ids: &Tensor) -> Result<Tensor> {
        let _p = crate::profile::scope("gather", self.device());
        let r = self.rank();
        if r == 0 || ids.rank() != r || ids.shape()[..r - 1] != self.shape()[..r - 1] {
            return Err(Error::shape("gather", format!("ids {:?} for {:?}", ids.shape(), self.shape())));
        }
        if self.device().is_cuda() {
            let out = crate::cuda::ops::gather(self, ids)?;
            let ids = ids.detach();
            return Ok(out.with_op(&[self], || Op::Gather(self.clone(), ids)));
        }
        let idv = ids.cpu_i64("gather")?;
        let v = self.shape()[r - 1];
        check_ids("gather", &idv, v)?;
        let x = self.cpu_f32("gather")?;
        let k = ids.shape()[r - 1];
        let out: Vec<f32> = idv.iter().enumerate().map(|(j, &i)| x[(j / k.max(1)) * v + i as usize]).collect();
        drop(x);
        let ids = ids.detach();
        Ok(f32_tensor(out, ids.shape()).with_op(&[self], || Op::Gather(self.clone(), ids)))
    }
}

/// Token embedding: rows of `table` [V, D] picked by `ids` [..] (i64), giving [.., D].
pub fn embedding(ids: &Tensor, table: &Tensor) -> Result<Tensor> {
    let _p = crate::profile::scope("embedding", table.device());
    if table.rank() != 2 {
        return Err(Error::shape("embedding", format!("table must be [vocab, dim], got {:?}", table.shape())));
    }
    let mut shape = ids.shape().to_vec();
    shape.push(table.shape()[1]);
    table.index_select(0, &ids.flatten_all()?)?.reshape(&shape)
}

/// Gradient of index_select: `g` added into zeros of `shape` at rows `ids` (scatter-add).
pub(crate) fn index_add(g: &Tensor, shape: &[usize], dim: usize, ids: &Tensor) -> Result<Tensor> {
    if g.device().is_cuda() {
        let idv = ids.to_vec_i64()?;
        if dim == 0 {
            return crate::cuda::ops::embedding_backward(g, shape, &idv);
        }
        let mut swapped = shape.to_vec();
        swapped.swap(0, dim);
        let front = g.transpose(0, dim)?.contiguous()?;
        return crate::cuda::ops::embedding_backward(&front, &swapped, &idv)?.transpose(0, dim)?.contiguous();
    }
    let idv = ids.cpu_i64("index_add")?;
    let gv = g.cpu_f32("index_add")?;
    let (outer, inner) = outer_inner(shape, dim);
    let n = shape[dim];
    let mut out = vec![0f32; shape.iter().product()];
    for o in 0..outer {
        for (j, &i) in idv.iter().enumerate() {
            let dst = (o * n + i as usize) * inner;
            let src = (o * idv.len() + j) * inner;
            out[dst..dst + inner].iter_mut().zip(&gv[src..src + inner]).for_each(|(d, s)| *d += s);
        }
    }
    Ok(f32_tensor(out, shape))
}

/// `g` (shaped like `ids`) added into zeros of `shape`, each element at coordinate `ids[..]` along
/// `dim` (the gradient of gather and of max).
pub(crate) fn scatter_along(g: &Tensor, shape: &[usize], dim: usize, ids: &Tensor) -> Result<Tensor> {
    if g.device().is_cuda() {
        return crate::cuda::ops::scatter_along(g, shape, dim, ids);
    }
    let idv = ids.cpu_i64("scatter")?;
    let gv = g.cpu_f32("scatter")?;
    let strides = contiguous_strides(shape);
    let ishape = ids.shape();
    let mut out = vec![0f32; shape.iter().product()];
    let mut idx = vec![0usize; ishape.len()];
    for (e, (&i, &gval)) in idv.iter().zip(gv.iter()).enumerate() {
        if e > 0 {
            for d in (0..ishape.len()).rev() {
                idx[d] += 1;
                if idx[d] < ishape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        let offset: usize = idx.iter().enumerate().map(|(d, &c)| if d == dim { i as usize } else { c } * strides[d]).sum();
        out[offset] += gval;
    }
    Ok(f32_tensor(out, shape))
}
