//! The row kernels (softmax, layernorm: v1 and v2, f32 and bf16, layernorm f32 in to bf16 out).

use crate::harness::*;
use kernels::reference::{self as r, compare, from_bf16_bits, rand_nonzero as rand, to_bf16_bits};
use kernels::selftest::{Check, TOL_BF16, TOL_F32};

#[test]
fn row_kernels_match_the_references_on_the_cpu_emulation() {
    let Some((emu, dir, seed, mut rng)) = start("rows", &["softmax.cu", "layernorm.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();

    // Softmax: one row of all -inf must come out zeros (v1's convention), others as the reference.
    for (rows, cols) in [(1usize, 1usize), (7, 33), (9, 1000), (5, 1025), (3, 2048)] {
        let mut x = rand(&mut rng, rows * cols, -8.0, 8.0);
        if rows > 1 {
            x[cols..2 * cols].fill(f32::NEG_INFINITY);
        }
        let mut want = r::softmax(&x, rows, cols);
        if rows > 1 {
            want.value[cols..2 * cols].fill(0.0);
            want.scale[cols..2 * cols].fill(0.0);
        }
        emu.put("x", &x);
        for k in ["softmax_fwd_f32", "softmax_fwd_v2_f32_w1024", "softmax_fwd_v2_f32_w2048"] {
            if k.ends_with("w1024") && cols > 1024 {
                continue;
            }
            emu.run(k, rows, cols, 1);
            checks.push(Check::new(k, format!("{rows}x{cols}"), "f32", compare(&emu.get("y"), &want), TOL_F32));
        }
    }

    // LayerNorm: forward, then backward from the emulated forward's statistics; v2's backward
    // with one block (every row through it) and with several (rows split, partials summed).
    for (rows, c) in [(3usize, 5usize), (37, 768), (70, 96), (9, 1024), (5, 1025), (4, 2048)] {
        let shape = format!("{rows}x{c}");
        let x: Vec<f32> = rand(&mut rng, rows * c, -2.0, 2.0).into_iter().map(|v| v + 3.0).collect();
        let (gamma, beta, dy) = (rand(&mut rng, c, 0.5, 1.5), rand(&mut rng, c, -0.5, 0.5), rand(&mut rng, rows * c, -1.0, 1.0));
        for (name, v) in [("x", &x), ("gamma", &gamma), ("beta", &beta), ("dy", &dy)] {
            emu.put(name, v);
        }
        let f = r::layernorm_fwd(&x, &gamma, &beta, rows, c, 1e-5);
        let wide = c > 1024;
        for k in ["layernorm_fwd_f32", "layernorm_fwd_v2_f32_w1024", "layernorm_fwd_v2_f32_w2048"] {
            if k.ends_with("w1024") && wide {
                continue;
            }
            emu.run(k, rows, c, 1);
            checks.push(Check::new(&format!("{k} (y)"), shape.clone(), "f32", compare(&emu.get("y"), &f.y), TOL_F32));
            checks.push(Check::new(&format!("{k} (mean)"), shape.clone(), "f32", compare(&emu.get("mean"), &f.mean), TOL_F32));
            checks.push(Check::new(&format!("{k} (rstd)"), shape.clone(), "f32", compare(&emu.get("rstd"), &f.rstd), TOL_F32));
        }
        let (mean, rstd) = (emu.get("mean"), emu.get("rstd"));
        emu.put("mean", &mean);
        emu.put("rstd", &rstd);
        let b = r::layernorm_bwd(&x, &gamma, &mean, &rstd, &dy, rows, c);
        for (k, blocks) in [("layernorm_bwd_f32", 1), ("layernorm_bwd_v2_f32_w1024", 1), ("layernorm_bwd_v2_f32_w1024", 3), ("layernorm_bwd_v2_f32_w2048", 2)] {
            if k.ends_with("w1024") && wide {
                continue;
            }
            emu.run(k, rows, c, blocks);
            let s = format!("{shape}, {blocks} block(s)");
            checks.push(Check::new(&format!("{k} (dx)"), s.clone(), "f32", compare(&emu.get("dx"), &b.dx), TOL_F32));
            checks.push(Check::new(&format!("{k} (dgamma)"), s.clone(), "f32", compare(&emu.get("dgamma"), &b.dgamma), TOL_F32));
            checks.push(Check::new(&format!("{k} (dbeta)"), s, "f32", compare(&emu.get("dbeta"), &b.dbeta), TOL_F32));
        }
    }
    // bf16 rows (v2): activations as bf16 bits, the references on the same rounded inputs.
    for (rows, c) in [(7usize, 33usize), (9, 1000), (5, 1600)] {
        let shape = format!("{rows}x{c}");
        let w = if c <= 1024 { "w1024" } else { "w2048" };
        let x16 = to_bf16_bits(&rand(&mut rng, rows * c, -6.0, 6.0));
        emu.put_u16("x", &x16);
        let k = format!("softmax_fwd_v2_bf16_{w}");
        emu.run(&k, rows, c, 1);
        checks.push(Check::new(&k, shape.clone(), "bf16", compare(&from_bf16_bits(&emu.get_u16("y.u16")), &r::softmax(&from_bf16_bits(&x16), rows, c)), TOL_BF16));

        let x16 = to_bf16_bits(&rand(&mut rng, rows * c, -2.0, 2.0).into_iter().map(|v| v + 3.0).collect::<Vec<f32>>());
        let dy16 = to_bf16_bits(&rand(&mut rng, rows * c, -1.0, 1.0));
        let (gamma, beta) = (rand(&mut rng, c, 0.5, 1.5), rand(&mut rng, c, -0.5, 0.5));
        let (x, dy) = (from_bf16_bits(&x16), from_bf16_bits(&dy16));
        emu.put_u16("x", &x16);
        emu.put_u16("dy", &dy16);
        emu.put("gamma", &gamma);
        emu.put("beta", &beta);
        let k = format!("layernorm_fwd_v2_bf16_{w}");
        emu.run(&k, rows, c, 1);
        let f = r::layernorm_fwd(&x, &gamma, &beta, rows, c, 1e-5);
        let (mean, rstd) = (emu.get("mean"), emu.get("rstd"));
        checks.push(Check::new(&format!("{k} (y)"), shape.clone(), "bf16", compare(&from_bf16_bits(&emu.get_u16("y.u16")), &f.y), TOL_BF16));
        checks.push(Check::new(&format!("{k} (mean)"), shape.clone(), "bf16->f32", compare(&mean, &f.mean), TOL_F32));
        checks.push(Check::new(&format!("{k} (rstd)"), shape.clone(), "bf16->f32", compare(&rstd, &f.rstd), TOL_F32));
        emu.put("mean", &mean);
        emu.put("rstd", &rstd);
        let k = format!("layernorm_bwd_v2_bf16_{w}");
        emu.run(&k, rows, c, 2);
        let b = r::layernorm_bwd(&x, &gamma, &mean, &rstd, &dy, rows, c);
        checks.push(Check::new(&format!("{k} (dx)"), shape.clone(), "bf16", compare(&from_bf16_bits(&emu.get_u16("dx.u16")), &b.dx), TOL_BF16));
        checks.push(Check::new(&format!("{k} (dgamma)"), shape.clone(), "bf16->f32", compare(&emu.get("dgamma"), &b.dgamma), TOL_F32));
        checks.push(Check::new(&format!("{k} (dbeta)"), shape.clone(), "bf16->f32", compare(&emu.get("dbeta"), &b.dbeta), TOL_F32));

        // Autocast's layernorm: f32 x (not rounded) to a bf16 y; back from the bf16 dy to an f32 dx.
        let x: Vec<f32> = rand(&mut rng, rows * c, -2.0, 2.0).into_iter().map(|v| v + 3.0).collect();
        emu.put("x", &x);
        let k = format!("layernorm_fwd_v2_f32_bf16_{w}");
        emu.run(&k, rows, c, 1);
        let f = r::layernorm_fwd(&x, &gamma, &beta, rows, c, 1e-5);
        let (mean, rstd) = (emu.get("mean"), emu.get("rstd"));
        checks.push(Check::new(&format!("{k} (y)"), shape.clone(), "f32->bf16", compare(&from_bf16_bits(&emu.get_u16("y.u16")), &f.y), TOL_BF16));
        checks.push(Check::new(&format!("{k} (mean)"), shape.clone(), "f32", compare(&mean, &f.mean), TOL_F32));
        checks.push(Check::new(&format!("{k} (rstd)"), shape.clone(), "f32", compare(&rstd, &f.rstd), TOL_F32));
        emu.put("mean", &mean);
        emu.put("rstd", &rstd);
        let k = format!("layernorm_bwd_v2_f32_bf16_{w}");
        emu.run(&k, rows, c, 2);
        let b = r::layernorm_bwd(&x, &gamma, &mean, &rstd, &dy, rows, c);
        checks.push(Check::new(&format!("{k} (dx)"), shape.clone(), "bf16->f32", compare(&emu.get("dx"), &b.dx), TOL_F32));
        checks.push(Check::new(&format!("{k} (dgamma)"), shape.clone(), "bf16->f32", compare(&emu.get("dgamma"), &b.dgamma), TOL_F32));
        checks.push(Check::new(&format!("{k} (dbeta)"), shape, "bf16->f32", compare(&emu.get("dbeta"), &b.dbeta), TOL_F32));
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 118);
}
