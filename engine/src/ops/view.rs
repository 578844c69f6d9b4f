//! Views: new layouts over the same storage, no copies. Their gradients are views too.

use crate::autograd::Op;
use crate::shape::numel;
use crate::storage::CpuStorage;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// Same elements, new shape: a view when contiguous, else a copy first.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(Error::shape("reshape", format!("{:?} ({} elements) to {shape:?}", self.shape(), self.numel())));
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let src = if self.is_contiguous() { self.clone() } else { self.contiguous()? };
        let layout = src.layout().reshaped(shape).expect("contiguous");
        Ok(src.view(layout, || Op::Reshape(src.clone())))
    }

    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape(&[self.numel()])
    }

    /// Merge dims `from..=to` into one.
    pub fn flatten(&self, from: usize, to: usize) -> Result<Tensor> {
        if from > to || to >= self.rank() {
            return Err(Error::shape("flatten", format!("dims {from}..={to} of {:?}", self.shape())));
        }
        let s = self.shape();
        let mut shape = s[..from].to_vec();
        shape.push(s[from..=to].iter().product());
        shape.extend_from_slice(&s[to + 1..]);
        self.reshape(&shape)
    }

    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(Error::shape("unsqueeze", format!("dim {dim} for shape {:?}", self.shape())));
        }
        let mut shape = self.shape().to_vec();
        shape.insert(dim, 1);
        let mut layout = self.layout().clone();
        let stride = layout.strides.get(dim).map_or(1, |&s| s * layout.shape[dim]);
        layout.shape = shape;
        layout.strides.insert(dim, stride);
        Ok(self.view(layout, || Op::Reshape(self.clone())))
    }

    pub fn squeeze(&self, dim: usize) -> Result<Tensor> {
        if dim >= self.rank() || self.shape()[dim] != 1 {
            return Err(Error::shape("squeeze", format!("dim {dim} of {:?} is not 1", self.shape())));
        }
        let mut layout = self.layout().clone();
        layout.shape.remove(dim);
        layout.strides.remove(dim);
        Ok(self.view(layout, || Op::Reshape(self.clone())))
    }

    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let layout = self.layout().permuted(perm)?;
        Ok(self.view(layout, || Op::Permute(self.clone(), perm.to_vec())))
    }

    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        if d0 >= self.rank() || d1 >= self.rank() {
            return Err(Error::shape("transpose", format!("dims {d0},{d1} of {:?}", self.shape())));
        }
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(d0, d1);
        self.permute(&perm)
    }

    /// Swap the last two dims.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::shape("t", format!("needs rank >= 2, got {:?}", self.shape())));
        }
        self.transpose(self.rank() - 2, self.rank() - 1)
    }

    /// Elements `start..start+len` along `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        let layout = self.layout().narrowed(dim, start, len)?;
        Ok(self.view(layout, || Op::Narrow(self.clone(), dim, start)))
    }

    /// Numpy-style broadcast to `shape` (zero strides, no copy).
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_to(shape)?;
        Ok(self.view(layout, || Op::Broadcast(self.clone())))
    }

    /// A row-major copy (or this tensor, when it already is one).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let _p = crate::profile::scope("contiguous", self.device());
        if self.device().is_cuda() {
            if !matches!(self.dtype(), crate::DType::F32 | crate::DType::BF16) {
                // ids (not differentiable): rearranged on the host and sent back.
                return self.to_device(crate::Device::Cpu)?.to_device(self.device());
            }
            return Ok(crate::cuda::ops::contiguous(self)?.with_op(&[self], || Op::Copy(self.clone())));
        }
        let data = self.contiguous_storage()?;
        let out = match self.device() {
            crate::Device::Cpu => Tensor::from_cpu(data, self.shape()),
            d => Tensor::from_cpu(data, self.shape()).to_device(d)?,
        };
        Ok(out.with_op(&[self], || Op::Copy(self.clone())))
    }
}

/// Gradient of `narrow`: `g` placed into zeros of the input's shape.
pub(crate) fn narrow_backward(g: &Tensor, shape: &[usize], dim: usize, start: usize) -> Result<Tensor> {
    if g.device().is_cuda() {
        return crate::cuda::ops::narrow_backward(g, shape, dim, start);
    }
    let out = Tensor::zeros(shape);
    out.narrow(dim, start, g.shape()[dim])?.assign(g)?;
    Ok(out)
}

/// A fresh contiguous f32 tensor with the given elements (kernels' outputs).
pub(crate) fn f32_tensor(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_cpu(CpuStorage::F32(data), shape)
}
