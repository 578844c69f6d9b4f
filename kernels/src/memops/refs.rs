//! f64 CPU references for the self-test: plain loops, independent of the engine (which builds
//! on this crate). Scales as in [`crate::reference`].

use super::{BinaryOp, Bcast};
use crate::reference::Ref;

pub struct CeFwd {
    pub loss: Ref,
    pub lse: Ref,
    /// Each row's entropy of softmax(a x).
    pub ent: Ref,
}

/// Per row: lse and loss (0 for ignored rows); scale = |lse| + max|x| of the row.
pub fn ce_forward(x: &[f32], t: &[i64], v: usize) -> CeFwd {
    ce_forward_scaled(x, t, v, 1.0)
}

/// [`ce_forward`] of z = a x (z rounded to f32 as the kernels do), and the entropy.
pub fn ce_forward_scaled(x: &[f32], t: &[i64], v: usize, a: f32) -> CeFwd {
    let empty = || Ref { value: vec![], scale: vec![] };
    let mut r = CeFwd { loss: empty(), lse: empty(), ent: empty() };
    for (row, &ti) in x.chunks(v).zip(t) {
        let z: Vec<f64> = row.iter().map(|&b| (a * b) as f64).collect();
        let m = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let amax = z.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
        let lse = m + z.iter().map(|&b| (b - m).exp()).sum::<f64>().ln();
        let sc = lse.abs() + amax;
        r.lse.value.push(lse);
        r.lse.scale.push(sc);
        let ent = -z.iter().map(|&b| (b - lse).exp() * (b - lse)).sum::<f64>();
        r.ent.value.push(ent);
        r.ent.scale.push(ent.abs() + (v as f64).ln() + 1.0);
        if ti < 0 {
            r.loss.value.push(0.0);
            r.loss.scale.push(0.0);
        } else {
            r.loss.value.push(lse - z[ti as usize]);
            r.loss.scale.push(sc);
        }
    }
    r
}

/// Mean over kept rows (0 if none) and the kept count.
pub fn ce_mean(f: &CeFwd, t: &[i64]) -> (Ref, f64) {
    let kept: Vec<usize> = (0..t.len()).filter(|&i| t[i] >= 0).collect();
    let k = kept.len().max(1) as f64;
    let value = kept.iter().map(|&i| f.loss.value[i]).sum::<f64>() / k;
    let scale = kept.iter().map(|&i| f.loss.scale[i]).sum::<f64>() / k;
    (Ref { value: vec![value], scale: vec![scale] }, kept.len() as f64)
}

/// d = (exp(x - lse) - onehot) * scale from the given (GPU) lse; 0 for ignored rows.
pub fn ce_backward(x: &[f32], t: &[i64], lse: &[f32], v: usize, scale: f32) -> Ref {
    ce_backward_scaled(x, t, lse, v, 1.0, scale, None)
}

/// d = (exp(a x - lse) - onehot) * scale * gscale[row] (gscale None: 1); 0 for ignored rows.
pub fn ce_backward_scaled(x: &[f32], t: &[i64], lse: &[f32], v: usize, a: f32, scale: f32, gscale: Option<&[f32]>) -> Ref {
    let (mut value, mut sc) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
    for (r, ((row, &ti), &l)) in x.chunks(v).zip(t).zip(lse).enumerate() {
        let s = scale as f64 * gscale.map_or(1.0, |g| g[r] as f64);
        for (c, &xv) in row.iter().enumerate() {
            if ti < 0 {
                value.push(0.0);
                sc.push(0.0);
                continue;
            }
            let p = ((a * xv) as f64 - l as f64).exp();
            let hot = if c as i64 == ti { 1.0 } else { 0.0 };
            value.push((p - hot) * s);
            sc.push((p + hot) * s.abs());
        }
    }
    Ref { value, scale: sc }
}

pub fn embedding_fwd(ids: &[i64], table: &[f32], d: usize) -> Ref {
    let value: Vec<f64> = ids.iter().flat_map(|&i| table[i as usize * d..(i as usize + 1) * d].iter().map(|&x| x as f64)).collect();
    Ref { scale: value.iter().map(|x| x.abs()).collect(), value }
}

/// init + scatter-add of dout rows at ids.
pub fn embedding_bwd(init: &[f32], ids: &[i64], dout: &[f32], d: usize) -> Ref {
    let mut value: Vec<f64> = init.iter().map(|&x| x as f64).collect();
    let mut scale: Vec<f64> = init.iter().map(|&x| (x as f64).abs()).collect();
    for (n, &i) in ids.iter().enumerate() {
        for c in 0..d {
            let g = dout[n * d + c] as f64;
            value[i as usize * d + c] += g;
            scale[i as usize * d + c] += g.abs();
        }
    }
    Ref { value, scale }
}

pub fn sum_rows(x: &[f32], r: usize, c: usize) -> Ref {
    let (mut value, mut scale) = (vec![0.0f64; c], vec![0.0f64; c]);
    for i in 0..r {
        for j in 0..c {
            let v = x[i * c + j] as f64;
            value[j] += v;
            scale[j] += v.abs();
        }
    }
    Ref { value, scale }
}

/// [norm, sum of squares]; every term is positive, so the scale is the value.
pub fn l2norm(bufs: &[&[f32]]) -> Ref {
    let ss: f64 = bufs.iter().flat_map(|b| b.iter()).map(|&x| (x as f64) * (x as f64)).sum();
    Ref { value: vec![ss.sqrt(), ss], scale: vec![ss.sqrt(), ss] }
}

/// out (contiguous, shape `p.dims`) = op(a, b) over the planned strides.
pub fn binary(op: BinaryOp, a: &[f32], b: &[f32], p: &Bcast) -> Ref {
    let (mut value, mut scale) = (Vec::with_capacity(p.n), Vec::with_capacity(p.n));
    let d = p.dims;
    for i0 in 0..d[0] {
        for i1 in 0..d[1] {
            for i2 in 0..d[2] {
                for i3 in 0..d[3] {
                    let ia = i0 * p.sa[0] + i1 * p.sa[1] + i2 * p.sa[2] + i3 * p.sa[3];
                    let ib = i0 * p.sb[0] + i1 * p.sb[1] + i2 * p.sb[2] + i3 * p.sb[3];
                    let (v, s) = op.apply_f64(a[ia] as f64, b[ib] as f64);
                    value.push(v);
                    scale.push(s);
                }
            }
        }
    }
    Ref { value, scale }
}
