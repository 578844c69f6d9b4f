//! The memory-bound kernels: cross-entropy, embedding, AdamW, row sums, the global L2 norm and
//! the broadcast binary ops.

use crate::harness::*;
use kernels::reference::{self as r, compare, from_bf16_bits, rand_nonzero as rand, to_bf16_bits};
use kernels::selftest::{Check, TOL_BF16, TOL_F32};
use rand::Rng;

#[test]
fn memory_bound_kernels_match_the_references_on_the_cpu_emulation() {
    use kernels::memops::{embedding_segments, refs};
    use kernels::reference::AdamWParams;
    let Some((emu, dir, seed, mut rng)) = start("memops", &["cross_entropy.cu", "embedding.cu", "adamw.cu", "elementwise.cu", "reduce.cu", "binary.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();
    let run = |args: &[String]| {
        let mut a = vec![args[0].clone(), dir.display().to_string()];
        a.extend_from_slice(&args[1..]);
        emu.run_args(&a);
    };
    let s = |v: &[&dyn ToString]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };

    // Cross-entropy: warp and block groups, f32 and bf16 logits, one ignored row, odd widths
    // (the 16-byte vector loads' prefix and tail). Then the scaled forms (PPO's per-token
    // log-probs at temperature 1 / a): the entropy, and per-row upstream gradients.
    for (n, v) in [(6usize, 33usize), (4, 1001), (3, 5003)] {
        let mut t: Vec<i64> = (0..n).map(|i| ((i * 7919) % v) as i64).collect();
        t[1] = -100;
        emu.put_i64("t.i64", &t);
        let x32 = rand(&mut rng, n * v, -6.0, 6.0);
        let gs = rand(&mut rng, n, -2.0, 2.0);
        emu.put("gscale", &gs);
        for dtype in ["f32", "bf16"] {
            let x = if dtype == "bf16" { from_bf16_bits(&to_bf16_bits(&x32)) } else { x32.clone() };
            if dtype == "bf16" {
                emu.put_u16("x", &to_bf16_bits(&x32));
            } else {
                emu.put("x", &x);
            }
            let (tol, prec) = if dtype == "bf16" { (TOL_BF16, "bf16") } else { (TOL_F32, "f32") };
            for group in ["warp", "block"] {
                for a in [1.0f32, 1.0 / 0.7] {
                    let scaled = a != 1.0;
                    let f = refs::ce_forward_scaled(&x, &t, v, a);
                    let shape = if scaled { format!("{n}x{v} a={a:.3}") } else { format!("{n}x{v}") };
                    let k = format!("ce_fwd_{group}_{dtype}");
                    run(&s(&[&k, &n, &v, &a, &(scaled as u8)]));
                    let (loss, lse) = (emu.get("loss"), emu.get("lse"));
                    checks.push(Check::new(&format!("{k} (loss)"), shape.clone(), "f32", compare(&loss, &f.loss), TOL_F32));
                    checks.push(Check::new(&format!("{k} (lse)"), shape.clone(), "f32", compare(&lse, &f.lse), TOL_F32));
                    if scaled {
                        checks.push(Check::new(&format!("{k} (entropy)"), shape.clone(), "f32", compare(&emu.get("ent"), &f.ent), TOL_F32));
                    }
                    let k = format!("ce_bwd_{group}_{dtype}");
                    let (scale, g) = if scaled { (-a, Some(&gs[..])) } else { (0.25, None) };
                    run(&s(&[&k, &n, &v, &a, &scale, &(scaled as u8)]));
                    let dx = if dtype == "bf16" { from_bf16_bits(&emu.get_u16("dx.u16")) } else { emu.get("dx") };
                    checks.push(Check::new(&k, shape.clone(), prec, compare(&dx, &refs::ce_backward_scaled(&x, &t, &lse, v, a, scale, g)), tol));
                    if group == "warp" && dtype == "f32" && !scaled {
                        run(&s(&[&"ce_loss_mean_f32", &n]));
                        let (want, kept) = refs::ce_mean(&f, &t);
                        let got = emu.get("mean");
                        let c = Check::new("ce_loss_mean_f32", shape, "f32", compare(&got[..1], &want), TOL_F32);
                        checks.push(if got[1] as f64 == kept { c } else { Check::failed("ce_loss_mean_f32", c.shape, "f32", format!("kept {} != {kept}", got[1])) });
                    }
                }
            }
        }
    }

    // Embedding: forward, and both backwards adding into a non-zero table (repeated ids).
    for (n, v, d) in [(9usize, 20usize, 24usize), (33, 50, 769), (5, 7, 128)] {
        let shape = format!("N={n} V={v} D={d}");
        let ids: Vec<i64> = (0..n).map(|i| ((i * i + 3) % v) as i64).collect();
        let (table, dout) = (rand(&mut rng, v * d, -1.0, 1.0), rand(&mut rng, n * d, -1.0, 1.0));
        emu.put_i64("ids.i64", &ids);
        emu.put("table", &table);
        emu.put("dout", &dout);
        run(&s(&[&"embedding_fwd_f32", &n, &v, &d]));
        checks.push(Check::new("embedding_fwd_f32", shape.clone(), "f32", compare(&emu.get("out"), &refs::embedding_fwd(&ids, &table, d)), TOL_F32));
        let want = refs::embedding_bwd(&table, &ids, &dout, d);
        emu.put("dtable", &table);
        run(&s(&[&"embedding_bwd_atomic_f32", &n, &v, &d]));
        checks.push(Check::new("embedding_bwd_atomic_f32", shape.clone(), "f32", compare(&emu.get("dtable"), &want), TOL_F32));
        let (perm, seg, seg_id) = embedding_segments(&ids, v).unwrap();
        emu.put_i32("perm.i32", &perm);
        emu.put_i32("seg.i32", &seg);
        emu.put_i64("seg_id.i64", &seg_id);
        emu.put("dtable", &table);
        run(&s(&[&"embedding_bwd_sorted_f32", &seg_id.len(), &n, &v, &d]));
        checks.push(Check::new("embedding_bwd_sorted_f32", shape, "f32", compare(&emu.get("dtable"), &want), TOL_F32));
    }

    // AdamW over several tensors in one launch: lengths around the chunk (an empty one too),
    // each its own learning rate, decay and step; the table from kernels::adamw::plan, with
    // element offsets where the launcher puts device addresses.
    {
        use kernels::adamw::{plan, CHUNK};
        let sizes = [5usize, 2 * CHUNK + 1, 0, 1000, CHUNK];
        let total: usize = sizes.iter().sum();
        let (p, g, m) = (rand(&mut rng, total, -1.0, 1.0), rand(&mut rng, total, -1.0, 1.0), rand(&mut rng, total, -0.1, 0.1));
        let v: Vec<f32> = rand(&mut rng, total, -0.1, 0.1).into_iter().map(|x| x * x).collect();
        let mut entries = Vec::new();
        let mut off = 0u64;
        for (i, &n) in sizes.iter().enumerate() {
            let h = AdamWParams { lr: 1e-4 * (i + 1) as f64, b1: 0.9, b2: 0.95, eps: 1e-8, wd: 0.05 * i as f64, step: rng.gen_range(1..300) };
            entries.push(([off; 4], n, h));
            off += n as u64;
        }
        let pl = plan(&entries);
        std::fs::write(dir.join("table.u64"), pl.words.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        for (name, x) in [("p", &p), ("g", &g), ("m", &m), ("v", &v)] {
            emu.put(name, x);
        }
        run(&s(&[&"adamw_multi_f32", &sizes.len(), &pl.first_chunk_at, &pl.blocks, &total, &0.9f32, &0.95f32, &1e-8f32]));
        let (gp, gm, gv) = (emu.get("p"), emu.get("m"), emu.get("v"));
        let mut start = 0;
        for (_, n, h) in &entries {
            let r = start..start + n;
            let want = r::adamw(&p[r.clone()], &g[r.clone()], &m[r.clone()], &v[r.clone()], *h);
            let shape = format!("n={n} of {} tensors, lr={:.0e} wd={:.2} step={}", sizes.len(), h.lr, h.wd, h.step);
            checks.push(Check::new("adamw_multi_f32 (p)", shape.clone(), "f32", compare(&gp[r.clone()], &want.p), TOL_F32));
            checks.push(Check::new("adamw_multi_f32 (m)", shape.clone(), "f32", compare(&gm[r.clone()], &want.m), TOL_F32));
            checks.push(Check::new("adamw_multi_f32 (v)", shape, "f32", compare(&gv[r.clone()], &want.v), TOL_F32));
            start += n;
        }
    }

    // AdamW and GELU over n not a multiple of the grid (grid-stride tails).
    for n in [1usize, 1001, 4099] {
        let h = AdamWParams { lr: 3e-4, b1: 0.9, b2: 0.95, eps: 1e-8, wd: 0.1, step: rng.gen_range(1..200) };
        let (p, g, m) = (rand(&mut rng, n, -1.0, 1.0), rand(&mut rng, n, -1.0, 1.0), rand(&mut rng, n, -0.1, 0.1));
        let v: Vec<f32> = rand(&mut rng, n, -0.1, 0.1).into_iter().map(|x| x * x).collect();
        for (name, x) in [("p", &p), ("g", &g), ("m", &m), ("v", &v)] {
            emu.put(name, x);
        }
        let (bc1, bc2) = h.bias_corrections();
        run(&s(&[&"adamw_f32", &n, &(h.lr as f32), &(h.b1 as f32), &(h.b2 as f32), &(h.eps as f32), &(h.wd as f32), &(bc1 as f32), &(bc2 as f32)]));
        let want = r::adamw(&p, &g, &m, &v, h);
        let shape = format!("n={n} step={}", h.step);
        checks.push(Check::new("adamw_f32 (p)", shape.clone(), "f32", compare(&emu.get("p"), &want.p), TOL_F32));
        checks.push(Check::new("adamw_f32 (m)", shape.clone(), "f32", compare(&emu.get("m"), &want.m), TOL_F32));
        checks.push(Check::new("adamw_f32 (v)", shape, "f32", compare(&emu.get("v"), &want.v), TOL_F32));

        let (x, dy) = (rand(&mut rng, n, -6.0, 6.0), rand(&mut rng, n, -1.0, 1.0));
        emu.put("x", &x);
        emu.put("dy", &dy);
        run(&s(&[&"gelu_fwd_f32", &n]));
        checks.push(Check::new("gelu_fwd_f32", format!("n={n}"), "f32", compare(&emu.get("out"), &r::gelu_fwd(&x)), TOL_F32));
        run(&s(&[&"gelu_bwd_f32", &n]));
        checks.push(Check::new("gelu_bwd_f32", format!("n={n}"), "f32", compare(&emu.get("out"), &r::gelu_bwd(&x, &dy)), TOL_F32));
        let (x16, dy16) = (to_bf16_bits(&x), to_bf16_bits(&dy));
        emu.put_u16("x", &x16);
        emu.put_u16("dy", &dy16);
        run(&s(&[&"gelu_fwd_bf16", &n]));
        checks.push(Check::new("gelu_fwd_bf16", format!("n={n}"), "bf16", compare(&from_bf16_bits(&emu.get_u16("out.u16")), &r::gelu_fwd(&from_bf16_bits(&x16))), TOL_BF16));
        run(&s(&[&"gelu_bwd_bf16", &n]));
        checks.push(Check::new("gelu_bwd_bf16", format!("n={n}"), "bf16", compare(&from_bf16_bits(&emu.get_u16("out.u16")), &r::gelu_bwd(&from_bf16_bits(&x16), &from_bf16_bits(&dy16))), TOL_BF16));
    }
    // Sums over rows (one split and several, vector and scalar widths), at an H100's geometry.
    const SMS: usize = 132;
    for (rows, c) in [(3usize, 5usize), (700, 96), (2000, 33), (64, 1)] {
        let x = rand(&mut rng, rows * c, -1.0, 1.0);
        emu.put("x", &x);
        let (vw, gx, splits, rows_per) = kernels::memops::sum_rows_geometry(rows, c, SMS);
        run(&s(&[&"sum_rows", &rows, &c, &vw, &gx, &splits, &rows_per]));
        checks.push(Check::new(if vw == 4 { "sum_rows_vec4_f32" } else { "sum_rows_f32" }, format!("{rows}x{c}, {splits} split(s)"), "f32", compare(&emu.get("out"), &refs::sum_rows(&x, rows, c)), TOL_F32));
    }

    // The global L2 norm over buffers at odd offsets of one allocation (any alignment).
    let data = rand(&mut rng, 50_000, -1.0, 1.0);
    let (offsets, lens) = (vec![1i64, 7000, 30_001, 49_990], vec![5000i64, 20_000, 3, 10]);
    emu.put("data", &data);
    emu.put_i64("offsets.i64", &offsets);
    emu.put_i64("lens.i64", &lens);
    let total: i64 = lens.iter().sum();
    run(&s(&[&"l2norm", &offsets.len(), &kernels::memops::l2norm_blocks(total as usize, SMS)]));
    let bufs: Vec<&[f32]> = offsets.iter().zip(&lens).map(|(&o, &l)| &data[o as usize..(o + l) as usize]).collect();
    checks.push(Check::new("l2norm_partial_f32 + finish", format!("{} buffers, {total} elements", bufs.len()), "f32", compare(&emu.get("out"), &refs::l2norm(&bufs)), TOL_F32));

    // Broadcast binary ops: contiguous, a bias row, a column, a transposed view.
    /// (what, shape, strides of a, strides of b)
    type Case = (&'static str, &'static [usize], &'static [usize], &'static [usize]);
    let cases: [Case; 4] = [
        ("contiguous", &[37, 41], &[41, 1], &[41, 1]),
        ("bias row [R,C]+[1,C]", &[70, 33], &[33, 1], &[0, 1]),
        ("column [R,C]*[R,1]", &[9, 300], &[300, 1], &[1, 0]),
        ("transposed a, 3-d", &[4, 6, 5], &[1, 4, 24], &[30, 5, 1]),
    ];
    for (desc, shape, sa, sb) in cases {
        let p = kernels::memops::plan_broadcast(shape, sa, sb).unwrap();
        let (a, mut b) = (rand(&mut rng, p.a_extent, -2.0, 2.0), rand(&mut rng, p.b_extent, -2.0, 2.0));
        b.iter_mut().for_each(|v| *v += 3.0f32.copysign(*v)); // |b| >= 3: no division blow-up
        emu.put("a", &a);
        emu.put("b", &b);
        let ((gx, gy), (tx, ty)) = kernels::memops::binary_launch(&p, SMS);
        for op in kernels::memops::BinaryOp::ALL {
            let k = format!("binary_{}", op.name());
            let args: Vec<String> = if p.contiguous {
                s(&[&k, &"contig", &p.n, &gx, &tx])
            } else {
                let mut v = s(&[&k, &"bcast", &p.a_extent, &p.b_extent, &(p.n / p.dims[3]), &p.dims[1], &p.dims[2], &p.dims[3]]);
                v.extend(p.sa.iter().chain(&p.sb).map(|x| x.to_string()));
                v.extend([gx, gy, tx, ty].map(|x| x.to_string()));
                v
            };
            run(&args);
            let name = format!("binary_{}_f32{}", op.name(), if p.contiguous { "_contig" } else { "" });
            checks.push(Check::new(&name, format!("{desc} {shape:?}"), "f32", compare(&emu.get("out"), &refs::binary(op, &a, &b, &p)), TOL_F32));
        }
    }
    // One f32 operand with one bf16 (autocast's residual add), either order: 4096 elements (the
    // vector path) and 1001 (a scalar tail); exact against the f32 op of the widened bf16.
    for n in [4096usize, 1001] {
        let p = kernels::memops::plan_broadcast(&[n], &[1], &[1]).unwrap();
        let a = rand(&mut rng, n, -2.0, 2.0);
        let b16 = to_bf16_bits(&rand(&mut rng, n, -2.0, 2.0).iter().map(|v| v + 3.0f32.copysign(*v)).collect::<Vec<f32>>());
        let b = from_bf16_bits(&b16);
        emu.put("a", &a);
        emu.put_u16("b", &b16);
        let ((gx, _), (tx, _)) = kernels::memops::binary_launch(&p, SMS);
        for op in kernels::memops::BinaryOp::ALL {
            for first in [false, true] {
                run(&s(&[&"binary_f32_bf16_contig", &op.code(), &n, &gx, &tx, &(first as i32)]));
                let f = |x: f32, y: f32| match op.name() {
                    "add" => x + y,
                    "sub" => x - y,
                    "mul" => x * y,
                    "div" => x / y,
                    "min" => x.min(y),
                    _ => x.max(y),
                };
                let want: Vec<f32> = a.iter().zip(&b).map(|(&x, &y)| if first { f(y, x) } else { f(x, y) }).collect();
                let bad = emu.get("out").iter().zip(&want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
                checks.push(exact("binary_f32_bf16_contig", format!("{} n={n}{}", op.name(), if first { " (bf16 first)" } else { "" }), bad, n));
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 154);
}
