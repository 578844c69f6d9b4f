//! Matmul, softmax, log_softmax, layer_norm, cross_entropy, token_logprobs and causal attention
//! (fused and naive).

use crate::harness::*;
use rand::Rng;
use engine::{causal_attention, causal_attention_naive, Tensor};

/// `shape` with its last two dims swapped.
fn swapped(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    let r = s.len();
    s.swap(r - 2, r - 1);
    s
}

#[test]
fn matmul() {
    let mut r = rng(20);
    // (a shape, b shape): 2-D, batched 3-D and 4-D, shared 2-D rhs.
    let cases: &[(&[usize], &[usize])] = &[
        (&[5, 7], &[7, 3]),
        (&[1, 4], &[4, 1]),
        (&[2, 5, 7], &[2, 7, 3]),
        (&[2, 3, 4, 5], &[2, 3, 5, 6]),
        (&[2, 5, 7], &[7, 3]),
        (&[2, 3, 4, 5], &[5, 6]),
        (&[3, 1, 6], &[6, 2]),
    ];
    for &(sa, sb) in cases {
        let (a, b) = (randn(&mut r, sa), randn(&mut r, sb));
        let n = sb[sb.len() - 1];
        let bias = randn(&mut r, &[n]);
        let (at, bt) = (In { shape: swapped(sa), ..randn(&mut r, sa) }, In { shape: swapped(sb), ..randn(&mut r, sb) });
        let tag = format!("{sa:?}x{sb:?}");
        check(&format!("matmul {tag}"), &[a.clone(), b.clone()], LINEAR, |v| v[0].matmul(&v[1]));
        check(&format!("matmul_bias {tag}"), &[a.clone(), b.clone(), bias.clone()], LINEAR, |v| v[0].matmul_bias(&v[1], &v[2]));
        // Either operand (or both) a transposed view of a var.
        check(&format!("matmul aT {tag}"), &[at.clone(), b.clone()], LINEAR, |v| v[0].t()?.matmul(&v[1]));
        check(&format!("matmul bT {tag}"), &[a.clone(), bt.clone()], LINEAR, |v| v[0].matmul(&v[1].t()?));
        check(&format!("matmul aT bT {tag}"), &[at.clone(), bt.clone()], LINEAR, |v| v[0].t()?.matmul(&v[1].t()?));
        check(&format!("matmul_bias aT bT {tag}"), &[at, bt, bias], LINEAR, |v| v[0].t()?.matmul_bias(&v[1].t()?, &v[2]));
    }
    // Narrowed operands (row and column offsets inside a bigger var) and a permuted batch.
    check("matmul narrowed", &[randn(&mut r, &[2, 6, 9]), randn(&mut r, &[9, 4])], LINEAR, |v| {
        v[0].narrow(1, 1, 4)?.narrow(2, 2, 5)?.matmul(&v[1].narrow(0, 3, 5)?)
    });
    check("matmul permuted batch", &[randn(&mut r, &[5, 2, 7]), randn(&mut r, &[2, 7, 3])], LINEAR, |v| {
        v[0].transpose(0, 1)?.matmul(&v[1])
    });
    // Size-1 batch dims carry arbitrary strides: a transposed lhs with a unit batch dim must not
    // be merged into one tall GEMM (regression: it was, reading the wrong rows), nor a narrowed
    // single row per batch.
    check("matmul aT unit batch dim shared rhs", &[randn(&mut r, &[2, 1, 6, 6]), randn(&mut r, &[6, 3])], LINEAR, |v| {
        v[0].t()?.matmul(&v[1])
    });
    check("matmul aT unit batch dim shared rhs 2", &[randn(&mut r, &[3, 1, 5, 4]), randn(&mut r, &[5, 2])], LINEAR, |v| {
        v[0].t()?.matmul(&v[1])
    });
    check("matmul narrowed single row shared rhs", &[randn(&mut r, &[3, 5, 4]), randn(&mut r, &[4, 2])], LINEAR, |v| {
        v[0].narrow(1, 2, 1)?.matmul(&v[1])
    });
    check("matmul unsqueezed rows shared rhs", &[randn(&mut r, &[3, 4]), randn(&mut r, &[4, 2])], LINEAR, |v| {
        v[0].unsqueeze(1)?.matmul(&v[1])
    });
    check("matmul b permuted batch", &[randn(&mut r, &[2, 5, 7]), randn(&mut r, &[7, 2, 3])], LINEAR, |v| {
        v[0].matmul(&v[1].transpose(0, 1)?)
    });
    // Broadcast (zero-stride) operands: a shared lhs over the batch, and a row repeated M times.
    check("matmul broadcast lhs", &[randn(&mut r, &[4, 5]), randn(&mut r, &[3, 5, 2])], LINEAR, |v| {
        v[0].broadcast_as(&[3, 4, 5])?.matmul(&v[1])
    });
    check("matmul broadcast rows shared rhs", &[randn(&mut r, &[3, 1, 5]), randn(&mut r, &[5, 2])], LINEAR, |v| {
        v[0].broadcast_as(&[3, 4, 5])?.matmul(&v[1])
    });
    // Large enough for the serial per-batch path (m·n·k >= 64³) and for several GEMM blocks.
    let tol = LINEAR.max_checks(40);
    check("matmul big batched", &[randn(&mut r, &[2, 64, 66]), randn(&mut r, &[2, 66, 65])], tol, |v| v[0].matmul(&v[1]));
    check("matmul_bias big shared aT", &[randn(&mut r, &[2, 66, 70]), randn(&mut r, &[66, 65]), randn(&mut r, &[65])], tol, |v| {
        v[0].t()?.matmul_bias(&v[1], &v[2])
    });
    // The same var on both sides: gradients from both operands add.
    check("matmul x xT", &[randn(&mut r, &[3, 4])], LINEAR, |v| v[0].matmul(&v[0].t()?));
}

#[test]
fn softmax_log_softmax() {
    let mut r = rng(21);
    for shape in [&[3usize, 7][..], &[2, 3, 33], &[5], &[2, 1]] {
        let x = randn(&mut r, shape);
        check(&format!("softmax {shape:?}"), &[x.clone()], TOL, |v| v[0].softmax());
        check(&format!("log_softmax {shape:?}"), &[x.clone()], TOL, |v| v[0].log_softmax());
    }
    // Rows with offsets beyond exp's f32 range (the kernels must subtract the row max); steps of
    // about 1e-2 absolute.
    let mut x = randn(&mut r, &[3, 6]);
    x.data.iter_mut().enumerate().for_each(|(i, v)| *v += [100.0, -100.0, 60.0][i / 6]);
    check("softmax offset", &[x.clone()], LOOSE.h(1e-4), |v| v[0].softmax());
    check("log_softmax offset", &[x], LOOSE.h(1e-4), |v| v[0].log_softmax());
    // Non-contiguous rows.
    let x = randn(&mut r, &[9, 4]);
    check("softmax transposed", &[x.clone()], TOL, |v| v[0].t()?.softmax());
    check("log_softmax transposed", &[x.clone()], TOL, |v| v[0].t()?.log_softmax());
    check("softmax narrowed", &[x.clone()], TOL, |v| v[0].narrow(1, 1, 3)?.softmax());
    check("log_softmax narrowed", &[x], TOL, |v| v[0].narrow(0, 2, 5)?.log_softmax());
}

#[test]
fn layer_norm() {
    let mut r = rng(22);
    let eps = 1e-5;
    // More rows than one kernel task (16) so the per-task dw/db partials are summed.
    for (xs, d) in [(&[4usize, 16][..], 16usize), (&[37, 8], 8), (&[2, 3, 5], 5), (&[3, 40], 40)] {
        let (x, w, b) = (randn(&mut r, xs), uniform(&mut r, &[d], 0.5, 1.5), randn(&mut r, &[d]));
        check(&format!("layer_norm {xs:?}"), &[x, w, b], TOL.h(5e-3), |v| v[0].layer_norm(&v[1], &v[2], eps));
    }
    // Non-contiguous x (transposed) and a narrowed weight.
    let (x, w, b) = (randn(&mut r, &[8, 6]), uniform(&mut r, &[10], 0.5, 1.5), randn(&mut r, &[8]));
    check("layer_norm strided", &[x, w, b], TOL.h(5e-3), |v| v[0].t()?.layer_norm(&v[1].narrow(0, 1, 8)?, &v[2], eps));
    // Rows with a large mean.
    let mut x = randn(&mut r, &[3, 8]);
    x.data.iter_mut().for_each(|v| *v += 20.0);
    let (w, b) = (uniform(&mut r, &[8], 0.5, 1.5), randn(&mut r, &[8]));
    check("layer_norm offset", &[x, w, b], LOOSE.h(5e-4), |v| v[0].layer_norm(&v[1], &v[2], eps));
}

#[test]
fn cross_entropy() {
    let mut r = rng(23);
    let t = ids(&[0, 4, -100, 2, 2, -100], &[6]);
    check("cross_entropy", &[randn(&mut r, &[6, 5])], TOL, |v| v[0].cross_entropy(&t));
    let t3 = ids(&[6, 0, -100, 3, 3, 1], &[2, 3]);
    check("cross_entropy 3d", &[randn(&mut r, &[2, 3, 7])], TOL, |v| v[0].cross_entropy(&t3));
    // More rows than one kernel task (8), a few ignored.
    let t19: Vec<i64> = (0..19).map(|i| if i % 5 == 3 { -100 } else { (i * 3 % 5) as i64 }).collect();
    let t19 = ids(&t19, &[19]);
    check("cross_entropy 19 rows", &[randn(&mut r, &[19, 5])], TOL, |v| v[0].cross_entropy(&t19));
    // Strided logits.
    check("cross_entropy transposed", &[randn(&mut r, &[5, 6])], TOL, |v| v[0].t()?.cross_entropy(&t));
    check("cross_entropy narrowed", &[randn(&mut r, &[6, 9])], TOL, |v| v[0].narrow(1, 2, 5)?.cross_entropy(&t));
    // Every row ignored: the loss is 0 and so is the gradient.
    let none = ids(&[-100, -100, -100], &[3]);
    let x = randn(&mut r, &[3, 4]);
    let (_, loss) = forward(&[x.clone()], &|v| v[0].cross_entropy(&none));
    assert_eq!(loss, vec![0.0]);
    let (g, _) = analytic(&[x.clone()], &[1.0], &|v| v[0].cross_entropy(&none));
    assert!(g[0].iter().all(|&v| v == 0.0), "gradient of an all-ignored loss: {:?}", g[0]);
    check("cross_entropy all ignored", &[x], TOL, |v| v[0].cross_entropy(&none));
}

#[test]
fn token_logprobs() {
    let mut r = rng(27);
    let t = ids(&[0, 4, -100, 2, 2, -100], &[6]);
    for temp in [1.0f32, 0.7, 1.6] {
        check(&format!("token_logprobs T={temp}"), &[randn(&mut r, &[6, 5])], TOL, |v| v[0].token_logprobs(&t, temp));
        check(&format!("token_logprobs transposed T={temp}"), &[randn(&mut r, &[5, 6])], TOL, |v| v[0].t()?.token_logprobs(&t, temp));
    }
    let t3 = ids(&[6, 0, -100, 3, 3, 1], &[2, 3]);
    check("token_logprobs 3d", &[randn(&mut r, &[2, 3, 7])], TOL, |v| v[0].token_logprobs(&t3, 0.9));
    // More rows than one kernel task (8), a few ignored: each row's upstream weight reaches its row.
    let t19: Vec<i64> = (0..19).map(|i| if i % 5 == 3 { -100 } else { (i * 3 % 5) as i64 }).collect();
    let t19 = ids(&t19, &[19]);
    check("token_logprobs 19 rows", &[randn(&mut r, &[19, 5])], TOL, |v| v[0].token_logprobs(&t19, 0.8));
}

/// The fused op gives what its composition gives (scale, log_softmax, gather), the entropy what
/// its definition gives, and ignored rows 0 with no gradient.
#[test]
fn token_logprobs_match_log_softmax_and_gather() {
    let mut r = rng(28);
    let (rows, v, temp) = (21usize, 37usize, 0.7f32);
    let x = randn(&mut r, &[3, 7, v]);
    let tv: Vec<i64> = (0..rows).map(|i| if i % 6 == 4 { -100 } else { (i * 11 % v) as i64 }).collect();
    let t = ids(&tv, &[3, 7]);
    let (_, fused) = forward(std::slice::from_ref(&x), &|a| a[0].token_logprobs(&t, temp));
    let (_, ent) = forward(std::slice::from_ref(&x), &|a| Ok(a[0].token_logprobs_entropy(&t, temp)?.1));
    let (_, lsm) = forward(std::slice::from_ref(&x), &|a| a[0].mul_scalar(1.0 / temp)?.log_softmax());
    for (i, &ti) in tv.iter().enumerate() {
        let row = &lsm[i * v..(i + 1) * v];
        let want = if ti < 0 { 0.0 } else { row[ti as usize] };
        assert!((fused[i] - want).abs() <= 1e-5 * (1.0 + want.abs()), "row {i}: fused {} vs log_softmax+gather {want}", fused[i]);
        let h: f64 = -row.iter().map(|&l| (l as f64).exp() * l as f64).sum::<f64>();
        assert!((ent[i] as f64 - h).abs() <= 1e-5 * (1.0 + h.abs()), "row {i}: entropy {} vs {h}", ent[i]);
    }
    // Gradients: the composition's, for the same upstream weights.
    let w: Vec<f32> = (0..rows).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let (g_fused, _) = analytic(std::slice::from_ref(&x), &w, &|a| a[0].token_logprobs(&t, temp));
    let t_safe = ids(&tv.iter().map(|&i| i.max(0)).collect::<Vec<_>>(), &[3, 7, 1]);
    let keep: Vec<f32> = tv.iter().map(|&i| if i < 0 { 0.0 } else { 1.0 }).collect();
    let keep = Tensor::new(keep, &[3, 7]).unwrap();
    let (g_comp, _) = analytic(std::slice::from_ref(&x), &w, &|a| a[0].mul_scalar(1.0 / temp)?.log_softmax()?.gather(&t_safe)?.reshape(&[3, 7])?.mul(&keep));
    let d = max_abs_diff(&g_fused[0], &g_comp[0]);
    assert!(d <= 1e-5 * (1.0 + max_abs(&g_comp[0])), "gradients differ by {d}");
    for (i, &ti) in tv.iter().enumerate() {
        if ti < 0 {
            assert!(g_fused[0][i * v..(i + 1) * v].iter().all(|&g| g == 0.0), "ignored row {i} got a gradient");
        }
    }
}

#[test]
fn token_logprobs_reject_bad_input_clearly() {
    let x = Tensor::zeros(&[2, 3, 5]);
    let t = ids(&[0, 1, 2, 3, 4, 0], &[2, 3]);
    let msg = |e: engine::Error| e.to_string();
    for temp in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let e = msg(x.token_logprobs(&t, temp).unwrap_err());
        assert!(e.contains("temperature"), "{e}");
    }
    let e = msg(x.token_logprobs(&ids(&[0, 1, 5, 0, 0, 0], &[2, 3]), 1.0).unwrap_err());
    assert!(e.contains("target 5 at row 2") && e.contains("0..5"), "{e}");
    let e = msg(x.token_logprobs(&ids(&[0, 1, 2], &[3]), 1.0).unwrap_err());
    assert!(e.contains("token_logprobs") && e.contains("[2, 3, 5]"), "{e}");
}

/// q [b, h, tq, d], k and v [b, h, tk, d].
fn qkv(r: &mut rand::rngs::StdRng, b: usize, h: usize, tq: usize, tk: usize, d: usize) -> [In; 3] {
    [randn(r, &[b, h, tq, d]), randn(r, &[b, h, tk, d]), randn(r, &[b, h, tk, d])]
}

#[test]
fn attention() {
    let mut r = rng(24);
    // (b, h, tq, tk, d, elements checked per input)
    let cases = [
        (1, 2, 5, 5, 8, usize::MAX),
        (2, 1, 3, 7, 12, usize::MAX),
        (1, 1, 1, 1, 8, usize::MAX),
        (1, 1, 1, 9, 12, usize::MAX),
        (1, 1, 70, 70, 8, 120),
        (1, 1, 66, 130, 8, 120),
        (1, 1, 130, 130, 64, 60),
        (1, 2, 20, 20, 64, 80),
    ];
    for (b, h, tq, tk, d, n) in cases {
        let ins = qkv(&mut r, b, h, tq, tk, d);
        let tag = format!("b{b} h{h} tq{tq} tk{tk} d{d}");
        let tol = TOL.max_checks(n);
        check(&format!("causal_attention {tag}"), &ins, tol, |v| causal_attention(&v[0], &v[1], &v[2]));
        if tq * tk <= 70 * 70 {
            check(&format!("causal_attention_naive {tag}"), &ins, tol, |v| causal_attention_naive(&v[0], &v[1], &v[2]));
        }
    }
    // Strided inputs: q stored [b, h, d, tq] and transposed, k a narrowed view, v with heads and
    // time swapped.
    let (b, h, tq, tk, d) = (1, 2, 9, 11, 8);
    let ins = [randn(&mut r, &[b, h, d, tq]), randn(&mut r, &[b, h, tk + 3, d]), randn(&mut r, &[b, tk, h, d])];
    type Attn = fn(&Tensor, &Tensor, &Tensor) -> engine::Result<Tensor>;
    for (name, f) in [("causal_attention", causal_attention as Attn), ("causal_attention_naive", causal_attention_naive as Attn)] {
        check(&format!("{name} strided"), &ins, TOL, |v| f(&v[0].t()?, &v[1].narrow(2, 2, tk)?, &v[2].transpose(1, 2)?));
    }
    let ins = [randn(&mut r, &[1, 1, 64, 70]), randn(&mut r, &[1, 1, 70, 64]), randn(&mut r, &[1, 1, 70, 64])];
    check("causal_attention strided T70 d64", &ins, TOL.max_checks(60), |v| causal_attention(&v[0].t()?, &v[1], &v[2]));
}

/// Random shapes (seeded): broadcasting pairs, batched matmuls with random transposes, row ops
/// and attention, several draws each.
#[test]
fn random_shapes() {
    use rand::Rng;
    let mut r = rng(25);
    for round in 0..20 {
        // Broadcasting: drop or set to 1 random dims of a random rank-1..4 shape, on either side.
        let rank = r.gen_range(1..=4);
        let full: Vec<usize> = (0..rank).map(|_| r.gen_range(1..=4)).collect();
        let mut small: Vec<usize> = full[r.gen_range(0..rank)..].to_vec();
        small.iter_mut().for_each(|s| {
            if r.gen::<bool>() {
                *s = 1
            }
        });
        let (mut a, mut b) = (randn(&mut r, &full), randn(&mut r, &small));
        if r.gen::<bool>() {
            std::mem::swap(&mut a, &mut b);
        }
        let den = In { data: b.data.iter().map(|v| v.abs() + 0.5).collect(), shape: b.shape.clone() };
        check(&format!("random {round} mul {:?} {:?}", a.shape, b.shape), &[a.clone(), b.clone()], SMOOTH, |v| v[0].mul(&v[1]));
        check(&format!("random {round} div {:?} {:?}", a.shape, den.shape), &[a.clone(), den], SMOOTH, |v| v[0].div(&v[1]));
        check(&format!("random {round} sub {:?} {:?}", a.shape, b.shape), &[a, b], SMOOTH, |v| v[0].sub(&v[1]));

        // Batched matmul, each operand stored transposed at random.
        let batch: Vec<usize> = (0..r.gen_range(0..=2)).map(|_| r.gen_range(1..=3)).collect();
        let (m, k, n) = (r.gen_range(1..=7), r.gen_range(1..=7), r.gen_range(1..=7));
        let shared = r.gen::<bool>();
        let (ta, tb) = (r.gen::<bool>(), r.gen::<bool>());
        let sa: Vec<usize> = batch.iter().copied().chain(if ta { [k, m] } else { [m, k] }).collect();
        let sb: Vec<usize> = if shared { vec![] } else { batch.clone() }.into_iter().chain(if tb { [n, k] } else { [k, n] }).collect();
        let ins = [randn(&mut r, &sa), randn(&mut r, &sb), randn(&mut r, &[n])];
        check(&format!("random {round} matmul_bias {sa:?}{} x {sb:?}{}", if ta { "ᵀ" } else { "" }, if tb { "ᵀ" } else { "" }), &ins, LINEAR, |v| {
            let a = if ta { v[0].t()? } else { v[0].clone() };
            let b = if tb { v[1].t()? } else { v[1].clone() };
            a.matmul_bias(&b, &v[2])
        });

        // Row ops over a random last dim.
        let rows = r.gen_range(1..=20);
        let cols = r.gen_range(1..=40);
        let x = randn(&mut r, &[rows, cols]);
        check(&format!("random {round} softmax [{rows},{cols}]"), &[x.clone()], TOL.max_checks(200), |v| v[0].softmax());
        check(&format!("random {round} log_softmax [{rows},{cols}]"), &[x.clone()], TOL.max_checks(200), |v| v[0].log_softmax());
        let (w, bias) = (uniform(&mut r, &[cols], 0.5, 1.5), randn(&mut r, &[cols]));
        if cols > 1 {
            // Rows with a tiny spread make layer_norm nearly singular (curvature ~ 1/std²), which
            // no fixed step resolves: redraw rows until their std is at least 0.3.
            let mut x = x.clone();
            for row in x.data.chunks_mut(cols) {
                while {
                    let mean = row.iter().sum::<f32>() / cols as f32;
                    (row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / cols as f32).sqrt() < 0.3
                } {
                    row.iter_mut().for_each(|v| *v = r.gen_range(-2.0..2.0));
                }
            }
            check(&format!("random {round} layer_norm [{rows},{cols}]"), &[x, w, bias], TOL.h(5e-3).max_checks(200), |v| v[0].layer_norm(&v[1], &v[2], 1e-5));
        }
        let t: Vec<i64> = (0..rows).map(|_| if r.gen_range(0..4) == 0 { -100 } else { r.gen_range(0..cols as i64) }).collect();
        let t = ids(&t, &[rows]);
        check(&format!("random {round} cross_entropy [{rows},{cols}]"), &[x], TOL.max_checks(200), |v| v[0].cross_entropy(&t));

        // Attention with random (b, h, tq <= tk, d).
        let (bb, hh) = (r.gen_range(1..=2), r.gen_range(1..=2));
        let tk = r.gen_range(1..=80);
        let tq = r.gen_range(1..=tk);
        let d = [8, 12, 16][r.gen_range(0..3)];
        let ins = qkv(&mut r, bb, hh, tq, tk, d);
        check(&format!("random {round} causal_attention b{bb} h{hh} tq{tq} tk{tk} d{d}"), &ins, TOL.max_checks(50), |v| causal_attention(&v[0], &v[1], &v[2]));
    }
}

/// Left-padded attention: per batch row, the first `pad` keys are hidden from every query; rows
/// that see no key output zeros (no gradient). Pads cross the 64-key block edge too.
#[test]
fn attention_padded() {
    use engine::causal_attention_padded;
    let mut r = rng(26);
    // (b, h, tq, tk, d, pads, elements checked per input)
    type Case = (usize, usize, usize, usize, usize, &'static [usize], usize);
    let cases: [Case; 6] = [
        (2, 2, 6, 6, 8, &[0, 3], usize::MAX),
        (3, 1, 4, 9, 12, &[2, 0, 6], usize::MAX),
        (2, 1, 1, 7, 8, &[7, 1], usize::MAX),
        (1, 2, 5, 5, 8, &[5], usize::MAX),
        (2, 1, 80, 80, 8, &[70, 3], 100),
        (2, 1, 3, 140, 8, &[66, 130], 100),
    ];
    for (b, h, tq, tk, d, pads, n) in cases {
        let ins = qkv(&mut r, b, h, tq, tk, d);
        let tag = format!("b{b} h{h} tq{tq} tk{tk} d{d} pads{pads:?}");
        check(&format!("causal_attention_padded {tag}"), &ins, TOL.max_checks(n), |v| causal_attention_padded(&v[0], &v[1], &v[2], pads));
    }
    // Strided inputs, as in `attention`.
    let (b, h, tq, tk, d) = (2, 2, 9, 11, 8);
    let ins = [randn(&mut r, &[b, h, d, tq]), randn(&mut r, &[b, h, tk + 3, d]), randn(&mut r, &[b, tk, h, d])];
    check("causal_attention_padded strided", &ins, TOL, |v| causal_attention_padded(&v[0].t()?, &v[1].narrow(2, 2, tk)?, &v[2].transpose(1, 2)?, &[4, 1]));
}
