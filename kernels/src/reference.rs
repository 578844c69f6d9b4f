//! CPU references for the self-test, in f64: straightforward scalar loops, independent of the
//! engine's CPU backend (the engine builds on this crate; its own conformance cases compare the
//! engine's CUDA ops with its CPU ops).
//!
//! Each reference returns, per output, the value and a *scale*: the same expression
//! with every term (and every sum's terms) taken in absolute value. Error is judged as
//! |gpu - ref| / (|ref| + scale): for a matmul that is error relative to sum|a||b|,
//! and it stays meaningful where the result cancels to near zero.

pub struct Ref {
    pub value: Vec<f64>,
    pub scale: Vec<f64>,
}

const GELU_K: f64 = 0.797_884_560_802_865_4; // sqrt(2/pi)
const GELU_C: f64 = 0.044715;

pub fn gelu_fwd(x: &[f32]) -> Ref {
    let (mut value, mut scale) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
    for &v in x {
        let v = v as f64;
        let t = (GELU_K * (v + GELU_C * v * v * v)).tanh();
        value.push(0.5 * v * (1.0 + t));
        scale.push(0.5 * v.abs() * (1.0 + t.abs()));
    }
    Ref { value, scale }
}

pub fn gelu_bwd(x: &[f32], dy: &[f32]) -> Ref {
    let (mut value, mut scale) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
    for (&v, &d) in x.iter().zip(dy) {
        let (v, d) = (v as f64, d as f64);
        let t = (GELU_K * (v + GELU_C * v * v * v)).tanh();
        let dt = GELU_K * (1.0 + 3.0 * GELU_C * v * v);
        value.push(d * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * dt));
        scale.push(d.abs() * (0.5 * (1.0 + t.abs()) + 0.5 * v.abs() * (1.0 + t * t) * dt));
    }
    Ref { value, scale }
}

pub fn softmax(x: &[f32], rows: usize, cols: usize) -> Ref {
    let mut value = Vec::with_capacity(x.len());
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        value.extend(row.iter().map(|&v| (v as f64 - m).exp() / s));
    }
    let scale = value.clone(); // all terms positive: relative error
    Ref { value, scale }
}

pub struct LnFwd {
    pub y: Ref,
    pub mean: Ref,
    pub rstd: Ref,
}

pub fn layernorm_fwd(x: &[f32], gamma: &[f32], beta: &[f32], rows: usize, c: usize, eps: f64) -> LnFwd {
    let (mut y, mut ys) = (Vec::new(), Vec::new());
    let (mut mean, mut means, mut rstd, mut rstds) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..rows {
        let row: Vec<f64> = x[r * c..(r + 1) * c].iter().map(|&v| v as f64).collect();
        let mu = row.iter().sum::<f64>() / c as f64;
        let mean_abs = row.iter().map(|v| v.abs()).sum::<f64>() / c as f64;
        let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / c as f64;
        let rs = 1.0 / (var + eps).sqrt();
        for i in 0..c {
            let (g, b) = (gamma[i] as f64, beta[i] as f64);
            y.push((row[i] - mu) * rs * g + b);
            ys.push(((row[i] - mu).abs() + mean_abs) * rs * g.abs() + b.abs());
        }
        mean.push(mu);
        means.push(mean_abs);
        rstd.push(rs);
        rstds.push(rs);
    }
    LnFwd { y: Ref { value: y, scale: ys }, mean: Ref { value: mean, scale: means }, rstd: Ref { value: rstd, scale: rstds } }
}

pub struct LnBwd {
    pub dx: Ref,
    pub dgamma: Ref,
    pub dbeta: Ref,
}

/// `mean`/`rstd` are the saved statistics (as the GPU kernel gets them).
pub fn layernorm_bwd(x: &[f32], gamma: &[f32], mean: &[f32], rstd: &[f32], dy: &[f32], rows: usize, c: usize) -> LnBwd {
    let (mut dx, mut dxs) = (Vec::new(), Vec::new());
    let (mut dg, mut dgs, mut db, mut dbs) = (vec![0.0; c], vec![0.0; c], vec![0.0; c], vec![0.0; c]);
    for r in 0..rows {
        let (mu, rs) = (mean[r] as f64, rstd[r] as f64);
        let xhat: Vec<f64> = (0..c).map(|i| (x[r * c + i] as f64 - mu) * rs).collect();
        let g: Vec<f64> = (0..c).map(|i| dy[r * c + i] as f64 * gamma[i] as f64).collect();
        let s1 = g.iter().sum::<f64>() / c as f64;
        let s2 = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / c as f64;
        let a1 = g.iter().map(|v| v.abs()).sum::<f64>() / c as f64;
        let a2 = g.iter().zip(&xhat).map(|(a, b)| (a * b).abs()).sum::<f64>() / c as f64;
        for i in 0..c {
            dx.push(rs * (g[i] - s1 - xhat[i] * s2));
            dxs.push(rs * (g[i].abs() + a1 + xhat[i].abs() * a2));
            let d = dy[r * c + i] as f64;
            dg[i] += d * xhat[i];
            dgs[i] += (d * xhat[i]).abs();
            db[i] += d;
            dbs[i] += d.abs();
        }
    }
    LnBwd { dx: Ref { value: dx, scale: dxs }, dgamma: Ref { value: dg, scale: dgs }, dbeta: Ref { value: db, scale: dbs } }
}

pub struct AdamW {
    pub p: Ref,
    pub m: Ref,
    pub v: Ref,
}

#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub lr: f64,
    pub b1: f64,
    pub b2: f64,
    pub eps: f64,
    pub wd: f64,
    /// 1-based step.
    pub step: i32,
}

impl AdamWParams {
    pub fn bias_corrections(&self) -> (f64, f64) {
        (1.0 - self.b1.powi(self.step), 1.0 - self.b2.powi(self.step))
    }
}

pub fn adamw(p: &[f32], g: &[f32], m: &[f32], v: &[f32], h: AdamWParams) -> AdamW {
    let (bc1, bc2) = h.bias_corrections();
    let mut out = AdamW {
        p: Ref { value: vec![], scale: vec![] },
        m: Ref { value: vec![], scale: vec![] },
        v: Ref { value: vec![], scale: vec![] },
    };
    for i in 0..p.len() {
        let (pi, gi, mi, vi) = (p[i] as f64, g[i] as f64, m[i] as f64, v[i] as f64);
        let m2 = h.b1 * mi + (1.0 - h.b1) * gi;
        let v2 = h.b2 * vi + (1.0 - h.b2) * gi * gi;
        let upd = h.lr * (m2 / bc1) / ((v2 / bc2).sqrt() + h.eps);
        let decayed = pi * (1.0 - h.lr * h.wd);
        out.p.value.push(decayed - upd);
        out.p.scale.push(decayed.abs() + upd.abs());
        out.m.value.push(m2);
        out.m.scale.push((h.b1 * mi).abs() + ((1.0 - h.b1) * gi).abs());
        out.v.value.push(v2);
        out.v.scale.push(v2.abs());
    }
    out
}

/// Row-major C = A B (+ bias); scale = sum_k |a||b| (+ |bias|).
pub fn matmul(a: &[f32], b: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) -> Ref {
    let mut value = vec![0.0f64; m * n];
    let mut scale = vec![0.0f64; m * n];
    for i in 0..m {
        let (vrow, srow) = (&mut value[i * n..(i + 1) * n], &mut scale[i * n..(i + 1) * n]);
        for kk in 0..k {
            let av = a[i * k + kk] as f64;
            let brow = &b[kk * n..(kk + 1) * n];
            for j in 0..n {
                let bv = brow[j] as f64;
                vrow[j] += av * bv;
                srow[j] += (av * bv).abs();
            }
        }
        if let Some(bias) = bias {
            for j in 0..n {
                vrow[j] += bias[j] as f64;
                srow[j] += (bias[j] as f64).abs();
            }
        }
    }
    Ref { value, scale }
}

/// Error statistics of `got` against a reference.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ErrStats {
    /// max_i |got - ref| / (|ref| + scale)
    pub max_rel: f64,
    /// ||got - ref||_2 / || |ref| + scale ||_2 (the same floor as `max_rel`, so a reference
    /// that is nearly zero, e.g. gelu of a very negative input, does not inflate it)
    pub norm_rel: f64,
    /// outputs that are NaN/inf (e.g. never written over the NaN poison)
    pub non_finite: usize,
}

/// `n` values uniform in [lo, hi), never exactly zero: the kernels' checks' inputs (a zero can
/// hide a dropped term).
pub fn rand_nonzero(rng: &mut impl rand::Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|_| loop {
            let v = rng.gen_range(lo..hi);
            if v != 0.0 {
                break v;
            }
        })
        .collect()
}

/// `v` rounded to bf16 (nearest, ties to even) as bit patterns: a bf16 kernel's input, whose
/// reference then reads the same rounded values back through [`from_bf16_bits`].
pub fn to_bf16_bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect()
}

/// bf16 bit patterns widened to f32 (exact).
pub fn from_bf16_bits(v: &[u16]) -> Vec<f32> {
    v.iter().map(|&x| half::bf16::from_bits(x).to_f32()).collect()
}

pub fn compare(got: &[f32], r: &Ref) -> ErrStats {
    assert_eq!(got.len(), r.value.len(), "length mismatch");
    let mut st = ErrStats::default();
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for ((&g, &v), &s) in got.iter().zip(&r.value).zip(&r.scale) {
        if !g.is_finite() {
            st.non_finite += 1;
            continue;
        }
        let d = (g as f64 - v).abs();
        st.max_rel = st.max_rel.max(d / (v.abs() + s + 1e-30));
        num += d * d;
        den += (v.abs() + s) * (v.abs() + s);
    }
    st.norm_rel = if den > 0.0 { (num / den).sqrt() } else { num.sqrt() };
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_bwd_matches_finite_difference() {
        let xs: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.1).collect();
        let ones = vec![1.0f32; xs.len()];
        let d = gelu_bwd(&xs, &ones).value;
        for (i, &x) in xs.iter().enumerate() {
            let h = 1e-6;
            let f = |v: f64| 0.5 * v * (1.0 + (GELU_K * (v + GELU_C * v * v * v)).tanh());
            let fd = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
            assert!((fd - d[i]).abs() < 1e-6, "x={x}: {fd} vs {}", d[i]);
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_compare_flags_nan() {
        let x: Vec<f32> = (0..30).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let r = softmax(&x, 3, 10);
        for row in r.value.chunks(10) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let mut got: Vec<f32> = r.value.iter().map(|&v| v as f32).collect();
        assert!(compare(&got, &r).max_rel < 1e-7);
        got[4] = f32::NAN;
        assert_eq!(compare(&got, &r).non_finite, 1);
    }

    #[test]
    fn layernorm_backward_matches_finite_difference() {
        let (rows, c) = (2, 5);
        let x: Vec<f32> = (0..rows * c).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
        let gamma: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.1).collect();
        let beta = vec![0.1f32; c];
        let dy: Vec<f32> = (0..rows * c).map(|i| ((i * 3 % 5) as f32 - 2.0) * 0.5).collect();
        let eps = 1e-5;
        let f = layernorm_fwd(&x, &gamma, &beta, rows, c, eps);
        let mean: Vec<f32> = f.mean.value.iter().map(|&v| v as f32).collect();
        let rstd: Vec<f32> = f.rstd.value.iter().map(|&v| v as f32).collect();
        let b = layernorm_bwd(&x, &gamma, &mean, &rstd, &dy, rows, c);
        // loss = sum(dy * y); d loss / d x[j] by central differences in f64.
        let loss = |xv: &[f64]| -> f64 {
            let mut l = 0.0;
            for r in 0..rows {
                let row = &xv[r * c..(r + 1) * c];
                let mu = row.iter().sum::<f64>() / c as f64;
                let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / c as f64;
                for i in 0..c {
                    l += dy[r * c + i] as f64 * ((row[i] - mu) / (var + eps).sqrt() * gamma[i] as f64 + beta[i] as f64);
                }
            }
            l
        };
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for j in 0..rows * c {
            let (mut xp, mut xm) = (x64.clone(), x64.clone());
            xp[j] += 1e-6;
            xm[j] -= 1e-6;
            let fd = (loss(&xp) - loss(&xm)) / 2e-6;
            assert!((fd - b.dx.value[j]).abs() < 1e-4, "dx[{j}]: {fd} vs {}", b.dx.value[j]);
        }
    }

    #[test]
    fn matmul_reference_small() {
        let r = matmul(&[1., 2., 3., 4.], &[5., 6., 7., 8.], Some(&[1., -1.]), 2, 2, 2);
        assert_eq!(r.value, vec![20.0, 21.0, 44.0, 49.0]);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        // At step 1, mhat = g and vhat = g^2, so the step is lr * sign(g) (eps aside).
        let h = AdamWParams { lr: 1e-3, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.0, step: 1 };
        let r = adamw(&[1.0], &[0.5], &[0.0], &[0.0], h);
        assert!((r.p.value[0] - (1.0 - 1e-3)).abs() < 1e-9);
    }
}
