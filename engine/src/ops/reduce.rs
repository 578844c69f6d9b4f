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

    /// The CPU sum of any `dims`: each output's inputs gathered into one contiguous row, added
    /// one by one in f64.
    fn sum_rows(&self, dims: &[usize]) -> Result<(Vec<f32>, Vec<usize>)> {
        let (rows, row_len, keep) = self.rows_over("sum", dims)?;
        let v = rows.cpu_f32("sum")?;
        let data = if row_len == 0 {
            vec![0.0; keep.iter().product()]
        } else {
            v.chunks(row_len).map(|r| r.iter().map(|&x| x as f64).sum::<f64>() as f32).collect()
        };
        Ok((data, keep))
    }

    /// The CPU sum when `dims` is one ascending run of consecutive dims (a bias gradient sums
    /// dims 0..2 of [B, T, C]): the input read once in memory order as [outer, run, inner],
    /// without the transposed copy `rows_over` makes. Each output still adds its inputs one by
    /// one in f64 in the run's row-major order, so the result is bit-identical to the general
    /// path. None: another pattern (the general path handles it).
    fn sum_run(&self, dims: &[usize]) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
        let Some(&first) = dims.first() else { return Ok(None) };
        if dims.iter().enumerate().any(|(i, &d)| d != first + i) || first + dims.len() > self.rank() || self.numel() == 0 {
            return Ok(None);
        }
        let shape = self.shape();
        let (outer, run, inner): (usize, usize, usize) =
            (shape[..first].iter().product(), dims.iter().map(|&d| shape[d]).product(), shape[first + dims.len()..].iter().product());
        let keep: Vec<usize> = shape.iter().enumerate().map(|(d, &s)| if dims.contains(&d) { 1 } else { s }).collect();
        let v = self.cpu_f32("sum")?;
        let zero = std::iter::empty::<f64>().sum::<f64>(); // what `Iterator::sum` starts from (-0.0)
        if inner == 1 {
            let sums = v.chunks(run).map(|r| r.iter().map(|&x| x as f64).sum::<f64>() as f32);
            return Ok(Some((sums.collect(), keep)));
        }
        let mut acc = vec![zero; outer * inner];
        for (o, out) in acc.chunks_mut(inner).enumerate() {
            for r in 0..run {
                let row = &v[(o * run + r) * inner..][..inner];
                out.iter_mut().zip(row).for_each(|(a, &x)| *a += x as f64);
            }
        }
        Ok(Some((acc.into_iter().map(|a| a as f32).collect(), keep)))
    }

    /// Sum over `dims`; keeps them as size 1 when `keepdim`.
    pub fn sum(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let _p = crate::profile::scope("sum", self.device());
        let out = if self.device().is_cuda() {
            let keep: Vec<usize> = self.shape().iter().enumerate().map(|(d, &s)| if dims.contains(&d) { 1 } else { s }).collect();
            if let Some(&d) = dims.iter().find(|&&d| d >= self.rank()) {
                return Err(Error::shape("sum", format!("dim {d} out of range for {:?}", self.shape())));
            }
            crate::cuda::ops::sum(self, dims, &keep)?
        } else {
            let (data, keep) = match self.sum_run(dims)? {
                Some(run) => run,
                None => self.sum_rows(dims)?,
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
        let _p = crate::profile::scope("max", self.device());
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

#[cfg(test)]
mod tests {
    use crate::Tensor;

    /// The run fast path gives the general path's bits, contiguous or not, for every run of dims.
    #[test]
    fn sum_run_matches_the_general_path_bit_for_bit() {
        let mut seed = 7u64;
        let mut rand = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1e3
        };
        for shape in [vec![7usize], vec![5, 3], vec![4, 6, 5], vec![3, 1, 4, 9], vec![2, 5, 33, 3]] {
            let data: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| rand()).collect();
            let x = Tensor::new(data, &shape).unwrap();
            let rank = shape.len();
            let xt = if rank >= 2 { x.transpose(0, rank - 1).unwrap() } else { x.clone() };
            for t in [&x, &xt] {
                for first in 0..rank {
                    for len in 1..=rank - first {
                        let dims: Vec<usize> = (first..first + len).collect();
                        let (fast, keep) = t.sum_run(&dims).unwrap().expect("a run of dims takes the fast path");
                        let (general, keep2) = t.sum_rows(&dims).unwrap();
                        assert_eq!(keep, keep2);
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&fast), bits(&general), "shape {shape:?} dims {dims:?} contiguous {}", t.is_contiguous());
                    }
                }
            }
        }
        let x = Tensor::new(vec![1.0; 24], &[2, 3, 4]).unwrap();
        assert!(x.sum_run(&[0, 2]).unwrap().is_none() && x.sum_run(&[1, 0]).unwrap().is_none(), "other patterns take the general path");
    }
}
