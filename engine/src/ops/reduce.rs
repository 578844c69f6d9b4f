//! Reductions over dims: sum, mean, max (and argmax); `sum_to` undoes a broadcast.

use super::view::f32_tensor;
use crate::autograd::Op;
use crate::storage::CpuStorage;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// Move `dims` to the end and make the result contiguous: each output element is then one
    /// contiguous row of `row_len` inputs. Returns (rows, row_len, keepdim shape).
    fn rows_over(&self, op: &'static str, dims: &[usize]) -> Result<(Tensor, usize, Vec<usize>)> {
        let mut keep: Vec<usize> = self.shape().to_vec();
        for &d in dims {
            if d >= self.rank() {
                return Err(Error::shape(op, format!("dim {d} out of range for {:?}", self.shape())));
            }
            keep[d] = 1;
        }
        let mut perm: Vec<usize> = (0..self.rank()).filter(|d| !dims.contains(d)).collect();
        perm.extend(dims.iter().copied());
        let row_len = dims.iter().map(|&d| self.shape()[d]).product();
        let rows = crate::autograd::with_no_grad(|| self.detach().permute(&perm)?.contiguous())?;
        Ok((rows, row_len, keep))
    }

    /// Sum over `dims`; keeps them as size 1 when `keepdim`.
    pub fn sum(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let out = if self.device().is_cuda() {
            let keep: Vec<usize> = self.shape().iter().enumerate().map(|(d, &s)| if dims.contains(&d) { 1 } else { s }).collect();
            if let Some(&d) = dims.iter().find(|&&d| d >= self.rank()) {
                return Err(Error::shape("sum", format!("dim {d} out of range for {:?}", self.shape())));
            }
            crate::cuda::ops::sum(self, dims, &keep)?
        } else {
            let (rows, row_len, keep) = self.rows_over("sum", dims)?;
            let v = rows.cpu_f32("sum")?;
            let data: Vec<f32> = if row_len == 0 {
                vec![0.0; keep.iter().product()]
            } else {
                v.chunks(row_len).map(|r| r.iter().map(|&x| x as f64).sum::<f64>() as f32).collect()
            };
            f32_tensor(data, &keep)
        };
        let keep_shape = out.shape().to_vec();
        let out = out.with_op(&[self], || Op::Sum(self.clone(), keep_shape));
        if keepdim {
            Ok(out)
        } else {
            let shape: Vec<usize> = self.shape().iter().enumerate().filter(|(d, _)| !dims.contains(d)).map(|(_, &s)| s).collect();
            out.reshape(&shape)
        }
    }

    pub fn sum_keepdim(&self, dim: usize) -> Result<Tensor> {
        self.sum(&[dim], true)
    }

    /// Sum of all elements, as a scalar tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        let dims: Vec<usize> = (0..self.rank()).collect();
        self.sum(&dims, false)
    }

    pub fn mean(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let n: usize = dims.iter().map(|&d| self.shape().get(d).copied().unwrap_or(1)).product();
        self.sum(dims, keepdim)?.mul_scalar(1.0 / n.max(1) as f32)
    }

    pub fn mean_all(&self) -> Result<Tensor> {
        self.sum_all()?.mul_scalar(1.0 / self.numel().max(1) as f32)
    }

    /// Sum the broadcast dims away so the result has `shape` (the gradient of a broadcast).
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let lead = self.rank().checked_sub(shape.len()).ok_or_else(|| Error::shape("sum_to", format!("{:?} to {shape:?}", self.shape())))?;
        let dims: Vec<usize> = (0..self.rank()).filter(|&d| d < lead || (shape[d - lead] == 1 && self.shape()[d] != 1)).collect();
        self.sum(&dims, true)?.reshape(shape)
    }

    /// Max over `dim`, kept as size 1; the gradient goes to the first maximal element.
    pub fn max_keepdim(&self, dim: usize) -> Result<Tensor> {
        let (values, argmax) = self.max_argmax(dim)?;
        Ok(values.with_op(&[self], || Op::Max(self.clone(), dim, argmax)))
    }

    /// Index of the first maximum along `dim` (i64, kept as size 1).
    pub fn argmax_keepdim(&self, dim: usize) -> Result<Tensor> {
        Ok(self.max_argmax(dim)?.1)
    }

    fn max_argmax(&self, dim: usize) -> Result<(Tensor, Tensor)> {
        let (rows, row_len, keep) = self.rows_over("max", &[dim])?;
        if row_len == 0 {
            return Err(Error::shape("max", format!("empty dim {dim} in {:?}", self.shape())));
        }
        if rows.device().is_cuda() {
            return crate::cuda::ops::max_rows(&rows, row_len, &keep);
        }
        let v = rows.cpu_f32("max")?;
        let (mut values, mut idx) = (Vec::new(), Vec::new());
        for r in v.chunks(row_len) {
            let (i, &m) = r.iter().enumerate().fold((0, &r[0]), |best, (i, x)| if *x > *best.1 { (i, x) } else { best });
            values.push(m);
            idx.push(i as i64);
        }
        Ok((f32_tensor(values, &keep), Tensor::from_cpu(CpuStorage::I64(idx), &keep)))
    }
}
