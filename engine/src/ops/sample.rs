//! Sampling a token per row from softmax(logits / temperature) by inverse CDF, on the logits'
//! device. The caller draws the uniforms (one stream, one seed: a run is reproducible), so a GPU
//! hands back B ids instead of B·V logits, and both devices turn one uniform into the same token
//! but for rounding at a boundary.

use crate::storage::CpuStorage;
use crate::{Error, Result, Tensor};

/// The inverse CDF of unnormalized `weights` at `u` in [0, 1): the first index whose running sum
/// exceeds u·Σw (the last index when rounding or NaN leaves none). The one walk of the CPU's
/// samplers (`sample_rows` here, top-k/top-p in models::generate); the CUDA kernel walks the same
/// order in f32.
pub fn inverse_cdf(weights: &[f64], u: f64) -> usize {
    let mut left = u * weights.iter().sum::<f64>();
    for (i, &w) in weights.iter().enumerate() {
        if left < w {
            return i;
        }
        left -= w;
    }
    weights.len().saturating_sub(1)
}

impl Tensor {
    /// One draw per row (the last dim) of softmax(self / temperature): row r takes
    /// `inverse_cdf` of its weights at `uniforms[r]`, each in [0, 1). i64 ids shaped as the rows
    /// (the last dim dropped), on self's device; no gradient.
    pub fn sample_rows(&self, uniforms: &[f64], temperature: f32) -> Result<Tensor> {
        let _p = crate::profile::scope("sample_rows", self.device());
        let op = "sample_rows";
        let cols = *self.shape().last().ok_or_else(|| Error::shape(op, "logits need rank >= 1"))?;
        let keep = &self.shape()[..self.rank() - 1];
        let rows: usize = keep.iter().product();
        if cols == 0 || rows != uniforms.len() {
            return Err(Error::shape(op, format!("logits {:?} with {} uniforms (one per row of a non-empty last dim)", self.shape(), uniforms.len())));
        }
        // 1/temperature must be finite too: the kernel scales by it in f32.
        if !(temperature > 0.0 && temperature.is_finite() && (1.0 / temperature).is_finite()) {
            return Err(Error::Msg(format!("{op}: temperature must be positive and finite (and its inverse too), got {temperature}")));
        }
        if let Some(p) = uniforms.iter().position(|u| !(0.0..1.0).contains(u)) {
            return Err(Error::Msg(format!("{op}: uniform {} for row {p} is outside [0, 1)", uniforms[p])));
        }
        if self.device().is_cuda() {
            // In f32 a uniform just below 1 may round to 1; the largest f32 below 1 keeps it a draw.
            let u: Vec<f32> = uniforms.iter().map(|&u| (u as f32).min(1.0 - f32::EPSILON / 2.0)).collect();
            let rows = crate::autograd::with_no_grad(|| self.detach().contiguous())?;
            return crate::cuda::ops::sample_rows(&rows, &u, 1.0 / temperature, keep);
        }
        let inv_t = 1.0 / temperature as f64;
        let x = self.cpu_f32(op)?;
        let ids = x
            .chunks(cols)
            .zip(uniforms)
            .map(|(row, &u)| {
                let scaled: Vec<f64> = row.iter().map(|&v| v as f64 * inv_t).collect();
                let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scaled.iter().map(|s| (s - max).exp()).collect();
                inverse_cdf(&weights, u) as i64
            })
            .collect();
        Ok(Tensor::from_cpu(CpuStorage::I64(ids), keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_cdf_takes_the_interval_the_target_falls_in() {
        let w = [0.0, 1.0, 0.0, 2.0, 1.0];
        let picks: Vec<usize> = [0.0, 0.2, 0.2499, 0.25, 0.5, 0.7499, 0.75, 0.9999].iter().map(|&u| inverse_cdf(&w, u)).collect();
        assert_eq!(picks, [1, 1, 1, 3, 3, 3, 4, 4], "zero weights are never taken");
        assert_eq!(inverse_cdf(&[f64::NAN, f64::NAN], 0.5), 1, "no interval: the last index");
    }

    #[test]
    fn sample_rows_follows_the_temperature_and_checks_its_input() {
        // Logits log(1, 2, 1) at T = 1: intervals [0, .25), [.25, .75), [.75, 1); at T = 0.5 the
        // weights square to 1, 4, 1: [0, 1/6), [1/6, 5/6), [5/6, 1).
        let x = Tensor::new([1.0f32, 2.0, 1.0].map(f32::ln).repeat(3).to_vec(), &[3, 3]).unwrap();
        let ids = |u: &[f64], t: f32| x.sample_rows(u, t).unwrap().to_vec_i64().unwrap();
        assert_eq!(ids(&[0.2, 0.3, 0.8], 1.0), [0, 1, 2]);
        assert_eq!(ids(&[0.2, 0.8, 0.1], 0.5), [1, 1, 0]);
        assert_eq!(x.sample_rows(&[0.5; 3], 1.0).unwrap().shape(), &[3]);
        assert_eq!(Tensor::zeros(&[0, 5]).sample_rows(&[], 1.0).unwrap().shape(), &[0], "no rows, no ids");
        assert!(x.t().unwrap().sample_rows(&[0.2, 0.3, 0.8], 1.0).is_ok(), "a transposed view is read as its rows");
        for (u, t) in [(vec![0.5; 2], 1.0), (vec![0.5, 0.5, 1.0], 1.0), (vec![0.5, -0.1, 0.5], 1.0), (vec![0.5; 3], 0.0), (vec![0.5; 3], f32::NAN), (vec![0.5; 3], 1e-39)] {
            let e = x.sample_rows(&u, t).unwrap_err().to_string();
            assert!(e.contains("sample_rows"), "{e}");
        }
    }
}
