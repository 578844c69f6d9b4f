//! Attention: the f32 kernels (v1 forward and backward, decode) and, on the tensor-core
//! stand-ins, the bf16 forward v2/v3 and backward v2/v3/v4, with left padding.

use crate::harness::*;
use kernels::reference::{compare, from_bf16_bits, rand_nonzero as rand, to_bf16_bits};
use kernels::selftest::{Check, TOL_BF16, TOL_F32};

/// NaN in the keys and values that padding hides: a kernel that reads them (0 · NaN) fails.
fn nan_padding(k: &mut [f32], v: &mut [f32], pads: &[usize], heads_per_row: usize, tk: usize, d: usize) {
    for (b, &p) in pads.iter().enumerate() {
        for h in b * heads_per_row..(b + 1) * heads_per_row {
            k[h * tk * d..(h * tk + p) * d].fill(f32::NAN);
            v[h * tk * d..(h * tk + p) * d].fill(f32::NAN);
        }
    }
}

#[test]
fn f32_attention_kernels_match_the_reference_on_the_cpu_emulation() {
    use kernels::attention::{lse_check, reference, AttnShape};
    let Some((emu, dir, seed, mut rng)) = start("attention", &["attention.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();
    let run = |kernel: &str, s: AttnShape, hpr: usize| {
        let a = [kernel.to_string(), s.heads.to_string(), s.tq.to_string(), s.tk.to_string(), s.d.to_string(), hpr.to_string(), dir.display().to_string()];
        emu.run_args(&a);
    };

    // (heads per row, tq, tk, d, padding keys per batch row; empty: one unpadded row of heads):
    // head dims 32/64/128, tq < tk, tiles not full, padding queries, a wholly padded key tile.
    let cases: [(usize, usize, usize, usize, &[usize]); 6] = [
        (2, 70, 70, 32, &[]),
        (1, 33, 100, 64, &[]),
        (2, 17, 40, 128, &[]),
        (2, 20, 40, 32, &[5, 0, 39]),
        (1, 70, 70, 64, &[0, 37]),
        (1, 40, 80, 32, &[33, 80 - 1]),
    ];
    for (hpr, tq, tk, d, pads) in cases {
        let heads = hpr * pads.len().max(1);
        let s = AttnShape { heads, tq, tk, d };
        let label = format!("{} pad {pads:?}", s.describe());
        let (nq, nk) = (heads * tq * d, heads * tk * d);
        let (q, mut k, mut v, g) = (rand(&mut rng, nq, -2.0, 2.0), rand(&mut rng, nk, -2.0, 2.0), rand(&mut rng, nk, -1.0, 1.0), rand(&mut rng, nq, -1.0, 1.0));
        nan_padding(&mut k, &mut v, pads, hpr, tk, d);
        for (name, x) in [("q", &q), ("k", &k), ("v", &v), ("dout", &g)] {
            emu.put(name, x);
        }
        emu.put_i32("pads.i32", &pads.iter().map(|&p| p as i32).collect::<Vec<i32>>());
        let hpr_arg = if pads.is_empty() { 0 } else { hpr };
        let (f, b) = reference(&q, &k, &v, Some(&g), s, pads);
        let b = b.unwrap();
        run("fwd", s, hpr_arg);
        let (out, lse) = (emu.get("out"), emu.get("lse"));
        checks.push(Check::new("attn_fwd_v1_f32 (out)", label.clone(), "f32", compare(&out, &f.out), TOL_F32));
        checks.push(lse_check("attn_fwd_v1_f32 (lse)", label.clone(), "f32", &lse, &f.lse, TOL_F32));
        // Backward from the emulated forward's out and lse, as training runs it.
        run("bwd", s, hpr_arg);
        for (name, want) in [("dq", &b.dq), ("dk", &b.dk), ("dv", &b.dv)] {
            checks.push(Check::new(&format!("attn_bwd_v1_f32 ({name})"), label.clone(), "f32", compare(&emu.get(name), want), TOL_F32));
        }
    }

    // Decode: one query per head at the end of the keys; a row whose keys are all padding. Each
    // case also read in place from a KV cache of larger capacity (heads `cap * d` apart, the
    // rows past tk NaN), with f32 and bf16 keys and values.
    let decode: [(usize, usize, usize, &[usize]); 4] = [(2, 300, 64, &[]), (3, 1, 128, &[]), (2, 45, 32, &[3, 45]), (1, 70, 32, &[0, 69, 12])];
    for (hpr, tk, d, pads) in decode {
        let heads = hpr * pads.len().max(1);
        let s = AttnShape { heads, tq: 1, tk, d };
        let label = format!("{} pad {pads:?}", s.describe());
        let (q, mut k, mut v) = (rand(&mut rng, heads * d, -2.0, 2.0), rand(&mut rng, heads * tk * d, -2.0, 2.0), rand(&mut rng, heads * tk * d, -1.0, 1.0));
        nan_padding(&mut k, &mut v, pads, hpr, tk, d);
        emu.put_i32("pads.i32", &pads.iter().map(|&p| p as i32).collect::<Vec<i32>>());
        emu.put("q", &q);
        let hpr_arg = if pads.is_empty() { 0 } else { hpr };
        let cap = tk + 7;
        // Heads `cap * d` apart: the cache's layout, the unused rows poisoned.
        let cached = |x: &[f32]| -> Vec<f32> {
            let mut buf = vec![f32::NAN; (heads - 1) * cap * d + tk * d];
            for h in 0..heads {
                buf[h * cap * d..h * cap * d + tk * d].copy_from_slice(&x[h * tk * d..(h + 1) * tk * d]);
            }
            buf
        };
        for (kernel, stride) in [("decode", tk * d), ("decode", cap * d), ("decode_bf16kv", cap * d)] {
            let bf = kernel == "decode_bf16kv";
            // bf16 K/V: the reference reads the same rounded values (NaN stays NaN).
            let round = |x: &[f32]| -> Vec<f32> { if bf { from_bf16_bits(&to_bf16_bits(x)) } else { x.to_vec() } };
            let (kr, vr) = (round(&k), round(&v));
            let (kb, vb) = if stride == tk * d { (kr.clone(), vr.clone()) } else { (cached(&kr), cached(&vr)) };
            if bf {
                emu.put_u16("k", &to_bf16_bits(&kb));
                emu.put_u16("v", &to_bf16_bits(&vb));
            } else {
                emu.put("k", &kb);
                emu.put("v", &vb);
            }
            let (f, _) = reference(&q, &kr, &vr, None, s, pads);
            let a = [kernel.to_string(), heads.to_string(), "1".into(), tk.to_string(), d.to_string(), hpr_arg.to_string(), dir.display().to_string(), stride.to_string()];
            emu.run_args(&a);
            let name = if bf { "attn_decode_bf16kv" } else { "attn_decode_f32" };
            let label = if stride == tk * d { label.clone() } else { format!("{label}, cache of {cap}") };
            checks.push(Check::new(&format!("{name} (out)"), label.clone(), "f32", compare(&emu.get("out"), &f.out), TOL_F32));
            checks.push(lse_check(&format!("{name} (lse)"), label, "f32", &emu.get("lse"), &f.lse, TOL_F32));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 54);
}

/// v2 (bf16 in, f32 accumulation on tensor cores) with mma.sync, ldmatrix and cp.async on the
/// stand-ins of emu/tensor_core.h: forward, then backward from the emulated forward's out and
/// lse, against the f64 reference on the same bf16-rounded inputs.
#[test]
fn bf16_attention_kernels_match_the_reference_on_the_cpu_emulation() {
    use kernels::attention::{lse_check, reference, AttnShape};
    let Some((emu, dir, seed, mut rng)) = start("attention", &["attention.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();
    // (heads per row, tq, tk, d, padding keys per batch row; empty: no padding): head dims
    // 32/64/128, two query tiles with a partial one, tq < tk, padding queries (tq = tk), a
    // wholly padded key tile, pad = tk - 1; v4's 128-key blocks: two and a ragged third
    // (tk = 300), a wholly padded first block (pad 129).
    let cases: [(usize, usize, usize, usize, &[usize]); 7] = [
        (2, 70, 70, 64, &[]),
        (1, 33, 100, 128, &[]),
        (2, 40, 40, 32, &[]),
        (2, 20, 80, 32, &[5, 0, 79]),
        (1, 70, 70, 64, &[0, 37]),
        (1, 40, 130, 128, &[70, 129]),
        (1, 150, 300, 64, &[]),
    ];
    for (hpr, tq, tk, d, pads) in cases {
        let heads = hpr * pads.len().max(1);
        let s = AttnShape { heads, tq, tk, d };
        let label = format!("{} pad {pads:?}", s.describe());
        let (nq, nk) = (heads * tq * d, heads * tk * d);
        let (q, mut k, mut v, g) = (rand(&mut rng, nq, -2.0, 2.0), rand(&mut rng, nk, -2.0, 2.0), rand(&mut rng, nk, -1.0, 1.0), rand(&mut rng, nq, -1.0, 1.0));
        nan_padding(&mut k, &mut v, pads, hpr, tk, d);
        let (q16, k16, v16, g16) = (to_bf16_bits(&q), to_bf16_bits(&k), to_bf16_bits(&v), to_bf16_bits(&g));
        for (name, x) in [("q", &q16), ("k", &k16), ("v", &v16), ("dout", &g16)] {
            emu.put_u16(name, x);
        }
        emu.put_i32("pads.i32", &pads.iter().map(|&p| p as i32).collect::<Vec<i32>>());
        let hpr_arg = if pads.is_empty() { 0 } else { hpr };
        let (f, b) = reference(&from_bf16_bits(&q16), &from_bf16_bits(&k16), &from_bf16_bits(&v16), Some(&from_bf16_bits(&g16)), s, pads);
        let b = b.unwrap();
        let run = |kernel: &str| emu.run_args(&[kernel, &heads.to_string(), &tq.to_string(), &tk.to_string(), &d.to_string(), &hpr_arg.to_string(), &dir.display().to_string()].map(String::from));
        for (kind, kernel) in [("fwd3", "attn_fwd_v3_bf16"), ("fwd2", "attn_fwd_v2_bf16")] {
            run(kind);
            checks.push(Check::new(&format!("{kernel} (out)"), label.clone(), "bf16->f32", compare(&emu.get("out"), &f.out), TOL_BF16));
            checks.push(lse_check(&format!("{kernel} (lse)"), label.clone(), "bf16->f32", &emu.get("lse"), &f.lse, TOL_BF16));
        }
        for (kind, kernel) in [("bwd2", "attn_bwd_v2_bf16"), ("bwd3", "attn_bwd_v3_bf16"), ("bwd4", "attn_bwd_v4_bf16")] {
            if kind == "bwd4" && d == 32 {
                continue; // v4 has no d=32 build (the launcher runs v3 there)
            }
            run(kind);
            for (name, want) in [("dq", &b.dq), ("dk", &b.dk), ("dv", &b.dv)] {
                checks.push(Check::new(&format!("{kernel} ({name})"), label.clone(), "bf16->f32", compare(&emu.get(name), want), TOL_BF16));
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 85);
}
