//! Every kernel of cu/pointwise.cu: GELU, unary ops, casts and transposed casts, strided copies,
//! row max, sampling, where, min/max backward, fill, gather and scatter.

use crate::harness::*;
use kernels::copy::TransposedBatch;
use kernels::reference::{self as r, compare, rand_nonzero as rand};
use kernels::selftest::{Check, TOL_F32};
use rand::{rngs::StdRng, Rng};

#[test]
fn pointwise_row_and_view_kernels_match_the_references_on_the_cpu_emulation() {
    let Some((emu, dir, seed, mut rng)) = start("pointwise", &["pointwise.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();

    for (rows, cols) in [(1usize, 1usize), (6, 33), (9, 300), (3, 1025)] {
        let shape = format!("{rows}x{cols}");
        // max/argmax: ties (values clamped), a NaN mid-row (skipped), a NaN first (kept, index 0).
        let mut x: Vec<f32> = rand(&mut rng, rows * cols, -4.0, 4.0).into_iter().map(|v| v.clamp(-1.0, 1.0)).collect();
        if cols > 2 {
            x[1] = f32::NAN;
        }
        if rows > 2 && cols > 1 {
            x[2 * cols] = f32::NAN;
        }
        emu.put("x", &x);
        emu.run("max_rows_f32", rows, cols, 0);
        let (vals, idx) = (emu.get("vals"), emu.get_i64("idx.i64"));
        let bad = x
            .chunks(cols)
            .zip(vals.iter().zip(&idx))
            .filter(|(row, (&v, &i))| {
                let (mut best, mut at) = (row[0], 0usize);
                for (c, &e) in row.iter().enumerate().skip(1) {
                    if e > best {
                        (best, at) = (e, c);
                    }
                }
                i != at as i64 || !(v == best || (v.is_nan() && best.is_nan()))
            })
            .count();
        checks.push(exact("max_rows_f32", shape.clone(), bad, rows));

        // log-softmax, and both row backwards from the forward outputs.
        let x = rand(&mut rng, rows * cols, -8.0, 8.0);
        let g = rand(&mut rng, rows * cols, -1.0, 1.0);
        emu.put("x", &x);
        emu.run("log_softmax_fwd_f32", rows, cols, 0);
        let mut want = r::Ref { value: vec![], scale: vec![] };
        for row in x.chunks(cols) {
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            want.value.extend(row.iter().map(|&v| v as f64 - lse));
            want.scale.extend(row.iter().map(|&v| (v as f64).abs() + lse.abs()));
        }
        checks.push(Check::new("log_softmax_fwd_f32", shape.clone(), "f32", compare(&emu.get("y"), &want), TOL_F32));
        for log in [false, true] {
            let y: Vec<f32> = if log { want.value.iter().map(|&v| v as f32).collect() } else { r::softmax(&x, rows, cols).value.iter().map(|&v| v as f32).collect() };
            emu.put("x", &y);
            emu.put("g", &g);
            let k = if log { "softmax_bwd_f32_log" } else { "softmax_bwd_f32" };
            emu.run(k, rows, cols, 0);
            let mut want = r::Ref { value: vec![], scale: vec![] };
            for (yr, gr) in y.chunks(cols).zip(g.chunks(cols)) {
                let (yr, gr): (Vec<f64>, Vec<f64>) = (yr.iter().map(|&v| v as f64).collect(), gr.iter().map(|&v| v as f64).collect());
                if log {
                    let (s, sa) = (gr.iter().sum::<f64>(), gr.iter().map(|v| v.abs()).sum::<f64>());
                    want.value.extend(yr.iter().zip(&gr).map(|(y, g)| g - y.exp() * s));
                    want.scale.extend(yr.iter().zip(&gr).map(|(y, g)| g.abs() + y.exp() * sa));
                } else {
                    let (s, sa) = (yr.iter().zip(&gr).map(|(y, g)| y * g).sum::<f64>(), yr.iter().zip(&gr).map(|(y, g)| (y * g).abs()).sum::<f64>());
                    want.value.extend(yr.iter().zip(&gr).map(|(y, g)| y * (g - s)));
                    want.scale.extend(yr.iter().zip(&gr).map(|(y, g)| y.abs() * (g.abs() + sa)));
                }
            }
            checks.push(Check::new(k, shape.clone(), "f32", compare(&emu.get("dx"), &want), TOL_F32));
        }
    }

    // Views: a permuted, narrowed view of a [4, 5, 6] buffer (offset applied by the launcher,
    // so the source passed starts at it), and a broadcast (stride 0) one; bf16 rows padded.
    let buf = rand(&mut rng, 4 * 5 * 6, -3.0, 3.0);
    let views: [(&str, usize, Vec<usize>, Vec<usize>); 3] = [
        ("[6, 4, 3] permuted + narrowed", 6, vec![6, 4, 3], vec![1, 30, 6]),
        ("[2, 3, 5, 6] broadcast (stride 0)", 0, vec![2, 3, 5, 6], vec![0, 30, 6, 1]),
        ("rank 1", 7, vec![100], vec![1]),
    ];
    for (desc, offset, shape, strides) in views {
        let n: usize = shape.iter().product();
        let want = kernels::copy::gather_reference(&buf, offset, &shape, &strides);
        let (d, s) = kernels::copy::padded(&shape, &strides).unwrap();
        let t: Vec<usize> = (0..6).map(|k| d[k + 1..].iter().product()).collect(); // row-major destination
        let cols = *shape.last().unwrap();
        let src16: Vec<u16> = buf.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
        let want16: Vec<u16> = want.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
        let kernels = [("strided_assign_f32", cols), ("strided_assign_u16", cols), ("cast_bf16_strided", cols), ("cast_bf16_strided", cols + 3), ("copy_bf16_strided", cols + 3), ("widen_bf16_strided", cols)];
        for (kernel, pitch) in kernels {
            let mut args: Vec<i64> = vec![n as i64, cols as i64, pitch as i64];
            args.extend(d[1..].iter().map(|&v| v as i64));
            args.extend(s.iter().map(|&v| v as i64));
            args.extend(t.iter().map(|&v| v as i64));
            emu.put_i64("view.i64", &args);
            // The launcher passes the source from its offset on.
            emu.put("x", &buf[offset..]);
            emu.put_u16("x", &src16[offset..]);
            emu.run(kernel, 1, buf.len() - offset, 0);
            let label = format!("{desc}, pitch {pitch}");
            let bad = match kernel {
                "strided_assign_f32" => emu.get("dst").iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count(),
                // bf16 -> f32 is exact: the widened bits of the rounded view.
                "widen_bf16_strided" => emu.get("dst").iter().zip(&want16).filter(|(a, b)| a.to_bits() != half::bf16::from_bits(**b).to_f32().to_bits()).count(),
                _ => {
                    // f32 -> bf16 rounds as `half` does; bf16 -> bf16 copies the bits: both give
                    // the rounded view, rows `pitch` apart, the pad still poison.
                    let got = emu.get_u16("dst.u16");
                    (0..got.len()).filter(|&i| got[i] != if i % pitch < cols { want16[i / pitch * cols + i % pitch] } else { 0x1234 }).count()
                }
            };
            checks.push(exact(kernel, label, bad, n));
        }
    }
    // The tiled casts of transposed matrices: sizes off the 32x32 tile, rows ld apart, a gap
    // between matrices, an offset, padded dst rows; one matrix of Wᵀ's shape too.
    let buf = rand(&mut rng, 5000, -3.0, 3.0);
    let buf16: Vec<u16> = buf.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
    for (offset, t, pitch) in [(5, TransposedBatch { batch: 3, rows: 37, cols: 35, ld: 40, batch_stride: 35 * 40 + 7 }, 40), (0, TransposedBatch { batch: 1, rows: 64, cols: 70, ld: 64, batch_stride: 0 }, 72)] {
        let view = kernels::copy::gather_reference(&buf, offset, &[t.batch, t.rows, t.cols], &[t.batch_stride, 1, t.ld]);
        emu.put_i64("tview.i64", &[t.batch, t.rows, t.cols, t.ld, t.batch_stride, pitch].map(|v| v as i64));
        emu.put("x", &buf[offset..]);
        emu.put_u16("x", &buf16[offset..]);
        for kernel in ["cast_bf16_transposed", "copy_bf16_transposed"] {
            emu.run(kernel, 1, buf.len() - offset, 0);
            let got = emu.get_u16("dst.u16");
            let want = |i: usize| if i % pitch < t.cols { half::bf16::from_f32(view[i / pitch * t.cols + i % pitch]).to_bits() } else { 0x1234 };
            let bad = (0..got.len()).filter(|&i| got[i] != want(i)).count() + (t.batch * t.rows * pitch).abs_diff(got.len());
            checks.push(exact(kernel, format!("{t:?} +{offset}, pitch {pitch}"), bad, got.len()));
        }
    }
    elementwise_checks(&emu, &mut rng, &mut checks);
    sample_checks(&emu, &mut rng, &mut checks);
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 68);
}

/// sample_rows_f32 against the inverse CDF in f64: each row's pick must hold its uniform's
/// target u·Σw inside its own interval of the running sum (up to f32 rounding, 1e-5 of Σw) and
/// have positive weight. Row 0 draws u = 0 (the first positive weight, exactly: its id 0 is
/// masked), row 1 the largest uniform below 1; the 50257-wide rows mask every other id and put
/// one logit far above the rest on the last row; a row of -inf, or with one NaN, gives its last
/// id (as the CPU's walk).
fn sample_checks(emu: &Emu, rng: &mut StdRng, checks: &mut Vec<Check>) {
    for (rows, cols) in [(1usize, 1usize), (6, 33), (9, 300), (3, 1025), (4, 50257)] {
        for temperature in [1.0f32, 0.7] {
            let a = 1.0 / temperature;
            let mut x = rand(rng, rows * cols, -6.0, 6.0);
            let mut u: Vec<f32> = (0..rows).map(|_| rng.gen::<f32>()).collect();
            u[0] = 0.0;
            if rows > 1 {
                u[1] = 1.0 - f32::EPSILON / 2.0;
            }
            if cols > 1 {
                x[0] = f32::NEG_INFINITY;
            }
            if cols > 50_000 {
                x.iter_mut().skip(1).step_by(2).for_each(|v| *v = f32::NEG_INFINITY);
                x[rows * cols - 7] = 90.0; // exp overflows unless taken relative to the row max
            }
            if rows == 9 {
                x[8 * cols..].fill(f32::NEG_INFINITY);
            }
            if rows == 6 {
                x[4 * cols - 1] = f32::NAN; // one NaN (in the last chunk): the CPU's walk finds no interval
            }
            emu.put("x", &x);
            emu.put("u", &u);
            emu.run_args(&["sample_rows_f32".into(), rows.to_string(), cols.to_string(), emu.dir.display().to_string(), a.to_string()]);
            let got = emu.get_i64("idx.i64");
            let bad = x
                .chunks(cols)
                .zip(u.iter().zip(&got))
                .enumerate()
                .filter(|&(r, (row, (&u, &i)))| {
                    let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                    let w: Vec<f64> = row.iter().map(|&v| ((v as f64 - m) * a as f64).exp()).collect();
                    let total: f64 = w.iter().sum();
                    if total.is_nan() || total <= 0.0 {
                        return i != cols as i64 - 1; // a NaN, or no positive weight: the last id
                    }
                    let Some(i) = usize::try_from(i).ok().filter(|&i| i < cols && w[i] > 0.0) else { return true };
                    if r == 0 {
                        return Some(i) != w.iter().position(|&w| w > 0.0);
                    }
                    let (before, target, slack) = (w[..i].iter().sum::<f64>(), u as f64 * total, 1e-5 * total);
                    !(before - slack <= target && target < before + w[i] + slack)
                })
                .count();
            checks.push(exact("sample_rows_f32", format!("{rows}x{cols} T={temperature}"), bad, rows));
        }
    }
}

/// The elementwise kernels of cu/pointwise.cu: each unary function and its gradient, where,
/// the min/max gradient (ties split), fill, and gather/scatter along rows (a bad id, repeats).
fn elementwise_checks(emu: &Emu, rng: &mut StdRng, checks: &mut Vec<Check>) {
    let n = 1000 + 37;
    let run = |kernel: &str, extra: &[String]| {
        let mut a = vec![kernel.to_string(), "1".into(), n.to_string(), emu.dir.display().to_string()];
        a.extend_from_slice(extra);
        emu.run_args(&a);
    };
    // (name, code, lo, hi, f(x), f'(x) from x and y = f(x)): the kernel's op codes (pointwise::Unary).
    type F = fn(f64, f64) -> f64;
    let unary: [(&str, i32, f64, f64, F, F); 10] = [
        ("exp", 0, 0.0, 0.0, |x, _| x.exp(), |_, y| y),
        ("log", 1, 0.0, 0.0, |x, _| x.abs().ln(), |x, _| 1.0 / x.abs()),
        ("tanh", 2, 0.0, 0.0, |x, _| x.tanh(), |_, y| 1.0 - y * y),
        ("sigmoid", 3, 0.0, 0.0, |x, _| 1.0 / (1.0 + (-x).exp()), |_, y| y * (1.0 - y)),
        ("log_sigmoid", 4, 0.0, 0.0, |x, _| -(1.0 + (-x).exp()).ln(), |x, _| 1.0 / (1.0 + x.exp())),
        ("sqr", 5, 0.0, 0.0, |x, _| x * x, |x, _| 2.0 * x),
        ("sqrt", 6, 0.0, 0.0, |x, _| x.abs().sqrt(), |_, y| 0.5 / y),
        ("relu", 7, 0.0, 0.0, |x, _| x.max(0.0), |x, _| if x > 0.0 { 1.0 } else { 0.0 }),
        ("clamp", 8, -0.5, 0.75, |x, _| x.clamp(-0.5, 0.75), |x, _| if (-0.5..=0.75).contains(&x) { 1.0 } else { 0.0 }),
        ("affine", 9, 1.5, -0.25, |x, _| x * 1.5 - 0.25, |_, _| 1.5),
    ];
    for (name, code, lo, hi, f, df) in unary {
        let mut x = rand(rng, n, -3.0, 3.0);
        if matches!(name, "log" | "sqrt") {
            x.iter_mut().for_each(|v| *v = v.abs());
        }
        let g = rand(rng, n, -1.0, 1.0);
        emu.put("a", &x);
        let extra = [code.to_string(), lo.to_string(), hi.to_string()];
        run("unary_fwd_f32", &extra);
        let y = emu.get("out");
        let want: Vec<f64> = x.iter().map(|&v| f(v as f64, 0.0)).collect();
        checks.push(Check::new(&format!("unary_fwd_f32 ({name})"), format!("n={n}"), "f32", compare(&y, &r::Ref { scale: want.iter().map(|v| v.abs()).collect(), value: want }), TOL_F32));
        emu.put("b", &y);
        emu.put("g", &g);
        run("unary_bwd_f32", &extra);
        let want: Vec<f64> = x.iter().zip(&y).zip(&g).map(|((&xv, &yv), &gv)| gv as f64 * df(xv as f64, yv as f64)).collect();
        checks.push(Check::new(&format!("unary_bwd_f32 ({name})"), format!("n={n}"), "f32", compare(&emu.get("out"), &r::Ref { scale: want.iter().map(|v| v.abs()).collect(), value: want }), TOL_F32));
    }

    let (a, b, g) = (rand(rng, n, -1.0, 1.0), rand(rng, n, -1.0, 1.0), rand(rng, n, -1.0, 1.0));
    let c: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { 0.0 } else { 2.0 }).collect();
    for (name, x) in [("a", &a), ("b", &b), ("c", &c), ("g", &g)] {
        emu.put(name, x);
    }
    run("where_f32", &[]);
    let bad = emu.get("out").iter().enumerate().filter(|&(i, &o)| o.to_bits() != if c[i] != 0.0 { a[i] } else { b[i] }.to_bits()).count();
    checks.push(exact("where_f32", format!("n={n}"), bad, n));

    // min/max gradient: every 5th pair tied (half the gradient each).
    let b2: Vec<f32> = b.iter().enumerate().map(|(i, &v)| if i % 5 == 0 { a[i] } else { v }).collect();
    emu.put("b", &b2);
    for is_max in [0, 1] {
        run("minmax_bwd_f32", &[is_max.to_string()]);
        let (da, db) = (emu.get("da"), emu.get("db"));
        let bad = (0..n)
            .filter(|&i| {
                let (wa, wb) = if a[i] == b2[i] { (0.5 * g[i], 0.5 * g[i]) } else if (a[i] > b2[i]) == (is_max == 1) { (g[i], 0.0) } else { (0.0, g[i]) };
                da[i] != wa || db[i] != wb
            })
            .count();
        checks.push(exact(&format!("minmax_bwd_f32 ({})", if is_max == 1 { "max" } else { "min" }), format!("n={n}, ties"), bad, n));
    }

    run("fill_f32", &["-2.5".to_string()]);
    let bad = emu.get("out").iter().filter(|&&o| o != -2.5).count();
    checks.push(exact("fill_f32", format!("n={n}"), bad, n));

    // Rows of v = 50 entries, 7 ids per row (repeats; one bad id per row in gather).
    let (rows, v, k) = (4usize, 50usize, 7usize);
    let x = rand(rng, rows * v, -1.0, 1.0);
    let ids: Vec<i64> = (0..rows * k).map(|i| if i % k == 6 { if i % 2 == 0 { -1 } else { v as i64 } } else { ((i * 13) % 5) as i64 * 9 }).collect();
    let gk = rand(rng, rows * k, -1.0, 1.0);
    emu.put("a", &x);
    emu.put("g", &gk);
    emu.put_i64("ids.i64", &ids);
    let run_rows = |kernel: &str| emu.run_args(&[kernel.to_string(), rows.to_string(), v.to_string(), emu.dir.display().to_string(), k.to_string()]);
    run_rows("gather_rows_f32");
    let got = emu.get("out");
    let bad = (0..rows * k)
        .filter(|&i| {
            let id = ids[i];
            if id < 0 || id >= v as i64 { !got[i].is_nan() } else { got[i] != x[(i / k) * v + id as usize] }
        })
        .count();
    checks.push(exact("gather_rows_f32", format!("{rows}x{v}, {k} ids per row, bad ids"), bad, rows * k));
    run_rows("scatter_add_rows_f32");
    let mut want = vec![0f64; rows * v];
    for i in 0..rows * k {
        let id = ids[i];
        if id >= 0 && id < v as i64 {
            want[(i / k) * v + id as usize] += gk[i] as f64;
        }
    }
    let want = r::Ref { scale: want.iter().map(|w| w.abs() + 1.0).collect(), value: want };
    checks.push(Check::new("scatter_add_rows_f32", format!("{rows}x{v}, {k} ids per row, repeats"), "f32", compare(&emu.get("out"), &want), TOL_F32));
}
