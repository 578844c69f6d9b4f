//! The f64 CPU reference of causal attention (forward and backward, left padding), and the
//! lse check that treats fully padded rows exactly.

use super::AttnShape;
use crate::reference::Ref;

pub struct AttnFwdRef {
    pub out: Ref,
    pub lse: Ref,
}

pub struct AttnBwdRef {
    pub dq: Ref,
    pub dk: Ref,
    pub dv: Ref,
}

/// f64 reference of causal attention, the first `key_pad[b]` keys of batch row b's heads hidden
/// (empty: none; a query that sees no key gets zeros and lse = +inf); plain f64 loops, as
/// `crate::reference`. Scales (see `crate::reference::Ref`):
/// - out[i,:] = sum_j p_ij v_j: scale sum_j p_ij |v_j|;
/// - lse_i: 1 + max_j scale * sum_d |q_id k_jd| (the size of the scores it is built from);
/// - backward, with A_ij = sum_d |dO_id v_jd| (scale of dP_ij), Dabs_i = sum_j p_ij A_ij (scale
///   of delta_i) and |dS|_ij = p_ij (A_ij + Dabs_i): dq = scale sum_j |dS|_ij |k_j|,
///   dk = scale sum_i |dS|_ij |q_i|, dv = sum_i p_ij |dO_i|.
pub fn reference(q: &[f32], k: &[f32], v: &[f32], dout: Option<&[f32]>, s: AttnShape, key_pad: &[usize]) -> (AttnFwdRef, Option<AttnBwdRef>) {
    let AttnShape { heads, tq, tk, d } = s;
    assert!(tq >= 1 && tq <= tk, "reference: need 1 <= tq <= tk");
    assert_eq!(q.len(), heads * tq * d);
    assert_eq!(k.len(), heads * tk * d);
    assert_eq!(v.len(), heads * tk * d);
    let off = tk - tq;
    let scale = 1.0 / (d as f64).sqrt();
    let z = |n: usize| Ref { value: vec![0.0; n], scale: vec![0.0; n] };
    let mut fwd = AttnFwdRef { out: z(heads * tq * d), lse: z(heads * tq) };
    let mut bwd = dout.map(|_| AttnBwdRef { dq: z(heads * tq * d), dk: z(heads * tk * d), dv: z(heads * tk * d) });
    let (mut sc, mut sabs, mut p, mut dp, mut a) = (vec![0f64; tk], vec![0f64; tk], vec![0f64; tk], vec![0f64; tk], vec![0f64; tk]);
    for h in 0..heads {
        let pad = if key_pad.is_empty() { 0 } else { key_pad[h / (heads / key_pad.len())] };
        let qh = &q[h * tq * d..(h + 1) * tq * d];
        let kh = &k[h * tk * d..(h + 1) * tk * d];
        let vh = &v[h * tk * d..(h + 1) * tk * d];
        for i in 0..tq {
            let n = i + off + 1; // visible keys
            let qi = &qh[i * d..(i + 1) * d];
            let mut m = f64::NEG_INFINITY;
            let mut smax_abs = 0f64;
            for j in pad..n {
                let kj = &kh[j * d..(j + 1) * d];
                let (mut x, mut xa) = (0f64, 0f64);
                for c in 0..d {
                    let t = qi[c] as f64 * kj[c] as f64;
                    x += t;
                    xa += t.abs();
                }
                sc[j] = x * scale;
                sabs[j] = xa * scale;
                m = m.max(sc[j]);
                smax_abs = smax_abs.max(sabs[j]);
            }
            let l: f64 = (pad..n).map(|j| (sc[j] - m).exp()).sum();
            for j in pad..n {
                p[j] = (sc[j] - m).exp() / l;
            }
            let row = h * tq + i;
            if pad >= n {
                // A padding query: no key visible; zeros (as initialized) and lse = +inf.
                fwd.lse.value[row] = f64::INFINITY;
                continue;
            }
            fwd.lse.value[row] = m + l.ln();
            fwd.lse.scale[row] = 1.0 + smax_abs;
            for c in 0..d {
                let (mut o, mut os) = (0f64, 0f64);
                for j in pad..n {
                    let vv = vh[j * d + c] as f64;
                    o += p[j] * vv;
                    os += p[j] * vv.abs();
                }
                fwd.out.value[row * d + c] = o;
                fwd.out.scale[row * d + c] = os;
            }
            if let (Some(g), Some(b)) = (dout, bwd.as_mut()) {
                let gi = &g[row * d..(row + 1) * d];
                let (mut delta, mut dabs) = (0f64, 0f64);
                for j in pad..n {
                    let vj = &vh[j * d..(j + 1) * d];
                    let (mut x, mut xa) = (0f64, 0f64);
                    for c in 0..d {
                        let t = gi[c] as f64 * vj[c] as f64;
                        x += t;
                        xa += t.abs();
                    }
                    dp[j] = x;
                    a[j] = xa;
                    delta += p[j] * x;
                    dabs += p[j] * xa;
                }
                for j in pad..n {
                    let ds = p[j] * (dp[j] - delta);
                    let ds_abs = p[j] * (a[j] + dabs);
                    let kj = &kh[j * d..(j + 1) * d];
                    let krow = h * tk + j;
                    for c in 0..d {
                        let (kv, qv, gv) = (kj[c] as f64, qi[c] as f64, gi[c] as f64);
                        b.dq.value[row * d + c] += scale * ds * kv;
                        b.dq.scale[row * d + c] += scale * ds_abs * kv.abs();
                        b.dk.value[krow * d + c] += scale * ds * qv;
                        b.dk.scale[krow * d + c] += scale * ds_abs * qv.abs();
                        b.dv.value[krow * d + c] += p[j] * gv;
                        b.dv.scale[krow * d + c] += p[j] * gv.abs();
                    }
                }
            }
        }
    }
    (fwd, bwd)
}

/// The lse check: rows the reference gives +inf (padding queries) must be exactly +inf; the
/// others are compared as usual.
pub fn lse_check(kernel: &str, shape: String, precision: &'static str, got: &[f32], want: &Ref, tol: f64) -> crate::selftest::Check {
    use crate::selftest::Check;
    let inf_wrong = got.iter().zip(&want.value).filter(|(g, w)| w.is_infinite() && **g != f32::INFINITY).count();
    if inf_wrong > 0 {
        return Check::failed(kernel, shape, precision, format!("{inf_wrong} padding rows without lse = +inf"));
    }
    let keep: Vec<usize> = (0..got.len()).filter(|&i| want.value[i].is_finite()).collect();
    let finite = Ref { value: keep.iter().map(|&i| want.value[i]).collect(), scale: keep.iter().map(|&i| want.scale[i]).collect() };
    Check::new(kernel, shape, precision, crate::reference::compare(&keep.iter().map(|&i| got[i]).collect::<Vec<f32>>(), &finite), tol)
}
