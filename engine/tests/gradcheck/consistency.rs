//! Fused kernels against their compositions of primitive ops, and forward values against direct
//! f64 computations.

use crate::harness::*;
use engine::{causal_attention, causal_attention_naive, Result, Tensor};
use rand::Rng;

type F<'a> = dyn Fn(&[Tensor]) -> Result<Tensor> + 'a;

/// Forward values and gradients of Σ w·f for two implementations of the same function:
/// |a − b| <= tol · (1 + max|b|), per output / per input.
fn same_function(name: &str, inputs: &[In], w: &[f32], f: &F<'_>, g: &F<'_>, tol: f32) {
    let (sf, yf) = forward(inputs, f);
    let (sg, yg) = forward(inputs, g);
    assert_eq!(sf, sg, "{name}: shapes");
    let e = max_abs_diff(&yf, &yg);
    assert!(e <= tol * (1.0 + max_abs(&yg)), "{name}: forward differs by {e}");
    let (gf, lf) = analytic(inputs, w, f);
    let (gg, lg) = analytic(inputs, w, g);
    assert!((lf - lg).abs() <= tol * (1.0 + lg.abs()), "{name}: loss {lf} vs {lg}");
    // (Some gradients are truly zero, e.g. dq when every query sees one key: not every input.)
    assert!(gg.iter().any(|b| max_abs(b) > 0.0), "{name}: no gradient at all");
    for (k, (a, b)) in gf.iter().zip(&gg).enumerate() {
        let e = max_abs_diff(a, b);
        assert!(e <= tol * (1.0 + max_abs(b)), "{name}: gradient of input {k} differs by {e} (max {})", max_abs(b));
    }
}

#[test]
fn fused_attention_matches_naive() {
    let mut r = rng(30);
    // (b, h, tq, tk, d)
    let cases = [
        (1, 1, 1, 1, 8),
        (2, 3, 1, 1, 12),
        (1, 2, 1, 40, 64),
        (1, 2, 7, 7, 8),
        (2, 2, 5, 17, 12),
        (1, 1, 64, 64, 64),
        (1, 2, 65, 65, 16),
        (1, 1, 70, 70, 12),
        (1, 2, 130, 130, 64),
        (1, 1, 3, 130, 8),
        (2, 1, 66, 200, 8),
        (1, 1, 129, 193, 12),
    ];
    let random: Vec<(usize, usize, usize, usize, usize)> = (0..10)
        .map(|_| {
            let tk = r.gen_range(1..=150);
            (r.gen_range(1..=2), r.gen_range(1..=3), r.gen_range(1..=tk), tk, [8, 12, 16, 64][r.gen_range(0..4)])
        })
        .collect();
    for (b, h, tq, tk, d) in cases.into_iter().chain(random) {
        let ins = [randn(&mut r, &[b, h, tq, d]), randn(&mut r, &[b, h, tk, d]), randn(&mut r, &[b, h, tk, d])];
        let w: Vec<f32> = (0..b * h * tq * d).map(|_| r.gen_range(-1.0..1.0)).collect();
        same_function(
            &format!("attention b{b} h{h} tq{tq} tk{tk} d{d}"),
            &ins,
            &w,
            &|v| causal_attention(&v[0], &v[1], &v[2]),
            &|v| causal_attention_naive(&v[0], &v[1], &v[2]),
            2e-5,
        );
    }
}

#[test]
fn attention_forward_matches_f64() {
    // Direct f64 softmax(q·kᵀ/√d + mask)·v, with the KV-cache alignment (query i sees keys
    // 0..=i + tk − tq).
    let mut r = rng(31);
    for (tq, tk, d) in [(1, 1, 8), (4, 9, 12), (70, 70, 8), (30, 130, 16)] {
        let (q, k, v) = (randn(&mut r, &[1, tq, d]), randn(&mut r, &[1, tk, d]), randn(&mut r, &[1, tk, d]));
        let out = causal_attention(
            &Tensor::new(q.data.clone(), &q.shape).unwrap(),
            &Tensor::new(k.data.clone(), &k.shape).unwrap(),
            &Tensor::new(v.data.clone(), &v.shape).unwrap(),
        )
        .unwrap()
        .to_vec_f32()
        .unwrap();
        for i in 0..tq {
            let seen = i + tk - tq + 1;
            let s: Vec<f64> = (0..seen)
                .map(|j| (0..d).map(|c| q.data[i * d + c] as f64 * k.data[j * d + c] as f64).sum::<f64>() / (d as f64).sqrt())
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            for c in 0..d {
                let want: f64 = (0..seen).map(|j| (s[j] - m).exp() / z * v.data[j * d + c] as f64).sum();
                let got = out[i * d + c] as f64;
                assert!((got - want).abs() < 2e-5, "tq{tq} tk{tk} d{d}: out[{i},{c}] = {got}, want {want}");
            }
        }
    }
}

#[test]
fn fused_cross_entropy_matches_composite() {
    let mut r = rng(32);
    for (rows, vocab, ignored) in [(6, 5, 2), (19, 11, 4), (40, 50, 0), (9, 3, 9), (1, 7, 0)] {
        let mut t: Vec<i64> = (0..rows).map(|_| r.gen_range(0..vocab as i64)).collect();
        for i in 0..ignored {
            t[(i * 7) % rows] = -100;
        }
        let n_valid = t.iter().filter(|&&i| i >= 0).count();
        let targets = ids(&t, &[rows]);
        // -mean over kept rows of log_softmax(x)[target], with ignored rows masked out.
        let safe = ids(&t.iter().map(|&i| i.max(0)).collect::<Vec<_>>(), &[rows, 1]);
        let mask: Vec<f32> = t.iter().map(|&i| if i >= 0 { -1.0 / n_valid.max(1) as f32 } else { 0.0 }).collect();
        let mask = Tensor::new(mask, &[rows, 1]).unwrap();
        let x = In { data: randn(&mut r, &[rows, vocab]).data.iter().map(|v| v * 3.0).collect(), shape: vec![rows, vocab] };
        let name = format!("cross_entropy rows{rows} vocab{vocab} ignored{ignored}");
        let fused = |v: &[Tensor]| v[0].cross_entropy(&targets);
        let composite = |v: &[Tensor]| v[0].log_softmax()?.gather(&safe)?.mul(&mask)?.sum_all();
        if n_valid == 0 {
            let (_, y) = forward(&[x.clone()], &fused);
            assert_eq!(y, vec![0.0], "{name}: all ignored");
            let (g, _) = analytic(&[x.clone()], &[1.0], &fused);
            assert!(g[0].iter().all(|&v| v == 0.0), "{name}: all ignored");
            continue;
        }
        same_function(&name, &[x.clone()], &[0.75], &fused, &composite, 1e-5);
        // And against f64 directly.
        let (_, y) = forward(&[x.clone()], &fused);
        let mut want = 0f64;
        for (row, &ti) in x.data.chunks(vocab).zip(&t) {
            if ti >= 0 {
                let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
                want += lse - row[ti as usize] as f64;
            }
        }
        want /= n_valid as f64;
        assert!((y[0] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "{name}: loss {} vs f64 {want}", y[0]);
    }
}

fn softmax_f64(row: &[f32]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|v| v / z).collect()
}

#[test]
fn softmax_stable_and_normalized() {
    let mut r = rng(33);
    let cols = 37;
    // Rows around 0, shifted by ±1e4, and one spanning ±1e4 within the row.
    let mut data = randn(&mut r, &[5, cols]).data;
    for (i, row) in data.chunks_mut(cols).enumerate() {
        match i {
            1 => row.iter_mut().for_each(|v| *v += 1e4),
            2 => row.iter_mut().for_each(|v| *v -= 1e4),
            3 => row.iter_mut().enumerate().for_each(|(j, v)| *v += if j % 3 == 0 { 1e4 } else { -1e4 }),
            4 => row.iter_mut().for_each(|v| *v *= 1e3),
            _ => {}
        }
    }
    let x = Tensor::new(data.clone(), &[5, cols]).unwrap();
    let y = x.softmax().unwrap().to_vec_f32().unwrap();
    let ly = x.log_softmax().unwrap().to_vec_f32().unwrap();
    for (i, ((row, yr), lr)) in data.chunks(cols).zip(y.chunks(cols)).zip(ly.chunks(cols)).enumerate() {
        let s: f64 = yr.iter().map(|&v| v as f64).sum();
        assert!((s - 1.0).abs() < 1e-5, "row {i} sums to {s}");
        let want = softmax_f64(row);
        for (j, (&got, &w)) in yr.iter().zip(&want).enumerate() {
            assert!(got.is_finite() && (got as f64 - w).abs() < 1e-6 + 1e-5 * w, "softmax row {i} col {j}: {got} vs {w}");
        }
        for (j, (&got, &w)) in lr.iter().zip(&want).enumerate() {
            // log-softmax of a vanishing probability is a large finite negative number.
            let w_log = (row[j] as f64) - {
                let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
            };
            let _ = w;
            assert!(got.is_finite() && (got as f64 - w_log).abs() < 1e-3 + 1e-6 * w_log.abs(), "log_softmax row {i} col {j}: {got} vs {w_log}");
        }
    }
    // Gradients stay finite too.
    let xv = x.var();
    let w: Vec<f32> = (0..5 * cols).map(|_| r.gen_range(-1.0..1.0)).collect();
    let wt = Tensor::new(w, &[5, cols]).unwrap();
    for f in [Tensor::softmax, Tensor::log_softmax] {
        let g = f(&xv).unwrap().mul(&wt).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g.get(&xv).unwrap().to_vec_f32().unwrap();
        assert!(g.iter().all(|v| v.is_finite()));
        // Each row's gradient sums to zero (softmax is shift-invariant).
        for row in g.chunks(cols) {
            let s: f32 = row.iter().sum();
            assert!(s.abs() < 1e-4 * (1.0 + max_abs(row)), "row gradient sums to {s}");
        }
    }
}

#[test]
fn layer_norm_matches_f64() {
    let mut r = rng(34);
    for (rows, d, offset, eps) in [(5, 16, 0.0, 1e-5), (40, 24, 100.0, 1e-5), (3, 7, -3.0, 1e-2), (2, 64, 0.0, 1e-5)] {
        let x: Vec<f32> = randn(&mut r, &[rows, d]).data.iter().map(|v| v + offset).collect();
        let w = uniform(&mut r, &[d], 0.5, 1.5).data;
        let b = randn(&mut r, &[d]).data;
        let y = Tensor::new(x.clone(), &[rows, d])
            .unwrap()
            .layer_norm(&Tensor::new(w.clone(), &[d]).unwrap(), &Tensor::new(b.clone(), &[d]).unwrap(), eps)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        for (i, (xr, yr)) in x.chunks(d).zip(y.chunks(d)).enumerate() {
            let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            for j in 0..d {
                let want = (xr[j] as f64 - mean) * rstd * w[j] as f64 + b[j] as f64;
                let got = yr[j] as f64;
                // Values carry ~ulp(offset)·rstd of input rounding; 1e-4 covers offset 100.
                assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "rows{rows} d{d} offset{offset}: y[{i},{j}] = {got}, want {want}");
            }
        }
    }
}

/// Matmul forward against an f64 triple loop, on random layouts: unit batch dims, transposed,
/// narrowed and broadcast operands, shared 2-D rhs.
#[test]
fn matmul_matches_f64() {
    let mut r = rng(35);
    for round in 0..200 {
        let batch: Vec<usize> = (0..r.gen_range(0..=3)).map(|_| r.gen_range(1..=3)).collect();
        let (m, k, n) = (r.gen_range(1..=9), r.gen_range(1..=9), r.gen_range(1..=9));
        let nb: usize = batch.iter().product();
        let shared = r.gen::<bool>();
        // Host copies in logical row-major order.
        let a_host: Vec<f32> = randn(&mut r, &[nb * m * k]).data;
        let b_host: Vec<f32> = randn(&mut r, &[if shared { k * n } else { nb * k * n }]).data;
        // Build each operand through a random storage layout holding those logical values.
        let build = |r: &mut rand::rngs::StdRng, host: &[f32], lead: &[usize], rows: usize, cols: usize| -> Tensor {
            let mut shape: Vec<usize> = lead.to_vec();
            match r.gen_range(0..3) {
                0 => {
                    shape.extend([rows, cols]);
                    Tensor::new(host.to_vec(), &shape).unwrap()
                }
                1 => {
                    // Stored transposed.
                    let mut t = vec![0f32; host.len()];
                    let per = rows * cols;
                    for (bi, chunk) in host.chunks(per.max(1)).enumerate() {
                        for i in 0..rows {
                            for j in 0..cols {
                                t[bi * per + j * rows + i] = chunk[i * cols + j];
                            }
                        }
                    }
                    shape.extend([cols, rows]);
                    Tensor::new(t, &shape).unwrap().t().unwrap()
                }
                _ => {
                    // Padded by 2 columns and narrowed.
                    let mut p = Vec::with_capacity(host.len() / cols.max(1) * (cols + 2));
                    for row in host.chunks(cols) {
                        p.push(9.0);
                        p.extend_from_slice(row);
                        p.push(-9.0);
                    }
                    shape.extend([rows, cols + 2]);
                    let last = shape.len() - 1;
                    Tensor::new(p, &shape).unwrap().narrow(last, 1, cols).unwrap()
                }
            }
        };
        let a = build(&mut r, &a_host, &batch, m, k);
        let b = build(&mut r, &b_host, if shared { &[] } else { &batch }, k, n);
        let got = a.matmul(&b).unwrap().to_vec_f32().unwrap();
        for bi in 0..nb {
            let bo = if shared { 0 } else { bi * k * n };
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|p| a_host[bi * m * k + i * k + p] as f64 * b_host[bo + p * n + j] as f64).sum();
                    let g = got[bi * m * n + i * n + j] as f64;
                    assert!((g - want).abs() < 1e-4 * (1.0 + want.abs()), "round {round}: batch {batch:?} m{m} k{k} n{n} shared={shared}: [{bi},{i},{j}] = {g}, want {want}");
                }
            }
        }
    }
}

/// The padded kernel against primitive ops: scores with the causal and key-padding mask (a large
/// finite negative, so fully-masked rows stay finite), softmax, weighted sum, and rows that see no
/// key zeroed. All-zero pads must also equal the unpadded kernel bit for bit.
#[test]
fn padded_attention_matches_masked_naive() {
    use engine::causal_attention_padded;
    let mut r = rng(35);
    // (b, h, tq, tk, d, pads)
    type Case = (usize, usize, usize, usize, usize, &'static [usize]);
    let cases: [Case; 6] = [
        (2, 2, 7, 7, 8, &[0, 4]),
        (3, 1, 3, 10, 12, &[9, 0, 10]),
        (2, 3, 70, 70, 16, &[65, 1]),
        (2, 1, 66, 200, 8, &[150, 64]),
        (1, 2, 1, 40, 64, &[39]),
        (2, 1, 130, 130, 12, &[0, 129]),
    ];
    for (b, h, tq, tk, d, pads) in cases {
        let ins = [randn(&mut r, &[b, h, tq, d]), randn(&mut r, &[b, h, tk, d]), randn(&mut r, &[b, h, tk, d])];
        let w: Vec<f32> = (0..b * h * tq * d).map(|_| r.gen_range(-1.0..1.0)).collect();
        let mut visible = vec![0f32; b * tq * tk];
        let mut any = vec![0f32; b * tq];
        for bi in 0..b {
            for i in 0..tq {
                for j in pads[bi]..=(i + tk - tq) {
                    visible[(bi * tq + i) * tk + j] = 1.0;
                    any[bi * tq + i] = 1.0;
                }
            }
        }
        let visible = Tensor::new(visible, &[b, 1, tq, tk]).unwrap();
        let any = Tensor::new(any, &[b, 1, tq, 1]).unwrap();
        let naive = |v: &[Tensor]| -> Result<Tensor> {
            let s = v[0].matmul(&v[1].t()?)?.mul_scalar(1.0 / (d as f32).sqrt())?;
            visible.where_cond(&s, &Tensor::scalar(-1e30))?.softmax()?.matmul(&v[2])?.mul(&any)
        };
        same_function(
            &format!("padded attention b{b} h{h} tq{tq} tk{tk} d{d} pads{pads:?}"),
            &ins,
            &w,
            &|v| causal_attention_padded(&v[0], &v[1], &v[2], pads),
            &naive,
            2e-5,
        );
        let zeros = vec![0; b];
        let (_, a) = forward(&ins, &|v| causal_attention_padded(&v[0], &v[1], &v[2], &zeros));
        let (_, c) = forward(&ins, &|v| causal_attention(&v[0], &v[1], &v[2]));
        assert_eq!(a, c, "zero pads must equal the unpadded kernel");
    }
    // A pad count per batch row, each at most tk.
    let t = Tensor::zeros(&[2, 1, 3, 8]);
    assert!(causal_attention_padded(&t, &t, &t, &[1]).is_err());
    assert!(causal_attention_padded(&t, &t, &t, &[1, 4]).is_err());
}
