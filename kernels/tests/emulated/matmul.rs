//! Matmul: the f32 ladder (v1, v2 batched with stored transposes), v3 (WMMA stand-ins), v4
//! (mma.sync), and the Hopper v5/v6 (wgmma, TMA, mbarriers), with epilogues and split-K.

use crate::harness::*;
use kernels::reference::{self as r, compare, from_bf16_bits, rand_nonzero as rand, to_bf16_bits};
use kernels::selftest::{Check, TOL_BF16, TOL_F32};
use rand::rngs::StdRng;

#[test]
fn f32_matmul_kernels_match_the_reference_on_the_cpu_emulation() {
    let Some((emu, dir, seed, mut rng)) = start("matmul", &["matmul_f32.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();
    let transpose = |x: &[f32], rows: usize, cols: usize| -> Vec<f32> { (0..cols * rows).map(|i| x[(i % rows) * cols + i / rows]).collect() };
    // (batches, m, n, k, shared B, bias): ragged edges, vector-aligned and not, a B shared by all.
    for (batches, m, n, k, shared_b, with_bias) in [(1usize, 17usize, 33usize, 5usize, false, true), (2, 130, 136, 72, false, false), (3, 64, 130, 33, true, true), (1, 1, 1, 1, false, false), (1, 129, 264, 24, false, true)] {
        let shape = format!("{batches}x{m}x{n}x{k}{}{}", if shared_b { " shared B" } else { "" }, if with_bias { " +bias" } else { "" });
        let nb = if shared_b { 1 } else { batches };
        let (a, b) = (rand(&mut rng, batches * m * k, -1.0, 1.0), rand(&mut rng, nb * k * n, -1.0, 1.0));
        let bias = rand(&mut rng, n, -1.0, 1.0);
        let mut want = r::Ref { value: Vec::new(), scale: Vec::new() };
        for i in 0..batches {
            let bi = if shared_b { 0 } else { i };
            let one = r::matmul(&a[i * m * k..(i + 1) * m * k], &b[bi * k * n..(bi + 1) * k * n], with_bias.then_some(&bias[..]), m, n, k);
            want.value.extend(one.value);
            want.scale.extend(one.scale);
        }
        emu.put("bias", &bias);
        for kind in ["v1", "gelu", "nn", "nt", "tn"] {
            if (kind == "v1" || kind == "gelu") && batches > 1 {
                continue;
            }
            // Each operand stored the way the entry reads it, per matrix.
            let store = |x: &[f32], count: usize, rows: usize, cols: usize, t: bool| -> Vec<f32> {
                if !t {
                    return x.to_vec();
                }
                (0..count).flat_map(|i| transpose(&x[i * rows * cols..(i + 1) * rows * cols], rows, cols)).collect()
            };
            emu.put("a", &store(&a, batches, m, k, kind == "tn"));
            emu.put("b", &store(&b, nb, k, n, kind == "nt"));
            let args = [kind, &batches.to_string(), &m.to_string(), &n.to_string(), &k.to_string(), if shared_b { "1" } else { "0" }, if with_bias { "1" } else { "0" }, &dir.display().to_string()];
            emu.run_args(&args.map(String::from));
            if kind == "gelu" {
                // The pre-activation, and the output against GELU of it (as the self-test).
                let pre = emu.get("pre");
                checks.push(Check::new("matmul_v2_f32_gelu (pre)", shape.clone(), "f32", compare(&pre, &want), TOL_F32));
                checks.push(Check::new("matmul_v2_f32_gelu (gelu)", shape.clone(), "f32", compare(&emu.get("c"), &r::gelu_fwd(&pre)), TOL_F32));
                continue;
            }
            let name = if kind == "v1" { "matmul_v1_f32".to_string() } else { format!("matmul_v2_f32_batched ({})", kind.to_uppercase()) };
            checks.push(Check::new(&name, shape.clone(), "f32", compare(&emu.get("c"), &want), TOL_F32));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 23);
}

/// The tensor-core matmuls before Hopper against the f64 reference on the same bf16 inputs: v4
/// (mma.sync, ldmatrix and cp.async on the stand-ins of emu/tensor_core.h) with each epilogue,
/// f32, bf16, and bf16 GELU with its pre-activation (the epilogue v5 and v6 share), whole and
/// with split-K; and v3 (WMMA on the stand-in of emu/mma.h, cp.async double buffering), f32 and
/// bf16 out.
#[test]
fn tensor_core_matmuls_v3_and_v4_match_the_reference_on_the_cpu_emulation() {
    let Some((emu, dir, seed, mut rng)) = start("matmul_tc", &["matmul_mma.cu", "matmul_bf16.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();
    // (m, n, k, bias): ragged tiles on the fast path (two k-tiles), odd N and K (the scalar
    // loads, unpaired stores), a thin N, more than one block in each direction.
    for (m, n, k, with_bias) in [(130usize, 264usize, 40usize, true), (17, 33, 5, true), (64, 8, 72, false), (257, 520, 24, true)] {
        let (shape, want) = bf16_matmul_inputs(&emu, &mut rng, m, n, k, with_bias);
        let run = |kind: &str| emu.run_args(&[kind, &m.to_string(), &n.to_string(), &k.to_string(), if with_bias { "1" } else { "0" }, &dir.display().to_string()].map(String::from));
        checks.extend(bf16_matmul_checks(&emu, run, ("matmul_v4", ""), &shape, &want));
        run("v3_f32");
        checks.push(Check::new("matmul_v3_bf16_f32out", shape.clone(), "bf16->f32", compare(&emu.get("c"), &want), TOL_F32));
        run("v3_bf16");
        checks.push(Check::new("matmul_v3_bf16_bf16out", shape.clone(), "bf16", compare(&from_bf16_bits(&emu.get_u16("c.u16")), &want), TOL_BF16));
    }
    // v4 with split-K (its f32 partials over grid.z, then the reduction's epilogue): 7 k-tiles
    // in slices of 3, 3 and 1 on the fast path; the scalar path (odd N and K) in 2 slices.
    for (m, n, k, with_bias, splits) in [(130usize, 264usize, 200usize, true, 3usize), (17, 33, 75, true, 2)] {
        let (shape, want) = bf16_matmul_inputs(&emu, &mut rng, m, n, k, with_bias);
        let run = |kind: &str| emu.run_args(&[kind, &m.to_string(), &n.to_string(), &k.to_string(), if with_bias { "1" } else { "0" }, &dir.display().to_string(), &splits.to_string()].map(String::from));
        checks.extend(bf16_matmul_checks(&emu, run, ("matmul_v4", ""), &format!("{shape}, split-K {splits}"), &want));
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 32);
}

/// Fresh bf16 A [m, k] and B [k, n] and an f32 bias, put where the matmul drivers read them
/// (a.u16, b.u16, bias.f32): the shape's label and the f64 reference on the same bf16 values.
fn bf16_matmul_inputs(emu: &Emu, rng: &mut StdRng, m: usize, n: usize, k: usize, with_bias: bool) -> (String, r::Ref) {
    let (a16, b16) = (to_bf16_bits(&rand(rng, m * k, -1.0, 1.0)), to_bf16_bits(&rand(rng, k * n, -1.0, 1.0)));
    let bias = rand(rng, n, -1.0, 1.0);
    emu.put_u16("a", &a16);
    emu.put_u16("b", &b16);
    emu.put("bias", &bias);
    let want = r::matmul(&from_bf16_bits(&a16), &from_bf16_bits(&b16), with_bias.then_some(&bias[..]), m, n, k);
    (format!("{m}x{n}x{k}{}", if with_bias { "+bias" } else { "" }), want)
}

/// A bf16 matmul's three outputs against `want`: `run(kind)` runs the kernel `{name}_bf16_{kind}`
/// for kind f32 (c.f32), bf16 (c.u16) and gelu (c.u16 and pre.u16; the GELU against GELU of the
/// kernel's own stored pre-activation, as the self-test does).
/// `name`: the entries' prefix ("matmul_v5"); `suffix`: what ends them ("" or "_n192").
fn bf16_matmul_checks(emu: &Emu, run: impl Fn(&str), (name, suffix): (&str, &str), label: &str, want: &r::Ref) -> Vec<Check> {
    let bf16_out = |file: &str| from_bf16_bits(&emu.get_u16(file));
    run("f32");
    let mut checks = vec![Check::new(&format!("{name}_bf16_f32out{suffix}"), label.to_string(), "bf16->f32", compare(&emu.get("c"), want), TOL_F32)];
    run("bf16");
    checks.push(Check::new(&format!("{name}_bf16_bf16out{suffix}"), label.to_string(), "bf16", compare(&bf16_out("c.u16"), want), TOL_BF16));
    run("gelu");
    let stored_pre = bf16_out("pre.u16");
    checks.push(Check::new(&format!("{name}_bf16_gelu{suffix} (pre)"), label.to_string(), "bf16", compare(&stored_pre, want), TOL_BF16));
    checks.push(Check::new(&format!("{name}_bf16_gelu{suffix} (gelu)"), label.to_string(), "bf16", compare(&bf16_out("c.u16"), &r::gelu_fwd(&stored_pre)), TOL_BF16));
    checks
}

/// The Hopper matmuls on the stand-ins of emu/hopper.h (wgmma from shared-memory descriptors,
/// TMA boxes with the 128-byte swizzle, mbarriers): v5 (proven on an H100) checks the stand-ins'
/// model of the hardware; v6 then runs the same wgmma fed by TMA, with its producer and
/// consumers on mbarriers and persistent blocks over more tiles than blocks (the stage ring
/// wrapping inside and across tiles), its maps from the launcher's own `v6_maps`.
#[test]
fn hopper_matmuls_v5_and_v6_match_the_reference_on_the_cpu_emulation() {
    use kernels::matmul_tc::v6_maps;
    let Some((emu, dir, seed, mut rng)) = start("matmul_wgmma", &["matmul_wgmma.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();
    // (m, n, k, bias, v6 blocks, K slices): ragged M, N and K edges (zero-filled), one k-tile, 3
    // k-tiles over 4 tiles on 3 blocks (uneven), 5 k-tiles over 2 tiles on 1 block; split-K:
    // 7 k-tiles in slices of 3, 3 and 1 (f32 partials, then the reduction's epilogue; v6 with 2
    // persistent blocks per slice over 4 tiles), and 5 k-tiles in 2 slices of a ragged K.
    let cases = [(200usize, 264usize, 136usize, true, 2usize, 1usize), (130, 40, 64, false, 1, 1), (256, 512, 192, true, 3, 1), (100, 256, 320, true, 1, 1), (200, 264, 448, true, 2, 3), (130, 264, 296, false, 1, 2)];
    for (m, n, k, with_bias, blocks, splits) in cases {
        let (shape, want) = bf16_matmul_inputs(&emu, &mut rng, m, n, k, with_bias);
        // The maps as the launcher makes them (addresses: any 16-byte aligned stand-in).
        let (am, bm) = v6_maps(&shape, 0x1000, 0x2000, m, n, k).unwrap();
        let maps: Vec<u64> = [am, bm].iter().flat_map(|t| [t.dims[0], t.dims[1], t.row_stride, t.box_dims[0] as u64, t.box_dims[1] as u64]).collect();
        std::fs::write(dir.join("maps.u64"), maps.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        // Both tile widths: 256, and 192 (the _n192 entries: wgmma m64n192k16, three B boxes).
        for bn in [256usize, 192] {
            let tiles = m.div_ceil(128) * n.div_ceil(bn);
            for (version, grid) in [("v5", tiles), ("v6", blocks)] {
                let mut label = if version == "v6" { format!("{shape}, {tiles} tiles on {grid} blocks") } else { shape.clone() };
                if splits > 1 {
                    label += &format!(", split-K {splits}");
                }
                let run = |kind: &str| emu.run_args(&[version, kind, &m.to_string(), &n.to_string(), &k.to_string(), if with_bias { "1" } else { "0" }, &grid.to_string(), &dir.display().to_string(), &splits.to_string(), &bn.to_string()].map(String::from));
                let suffix = if bn == 256 { "" } else { "_n192" };
                checks.extend(bf16_matmul_checks(&emu, run, (&format!("matmul_{version}"), suffix), &label, &want));
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 2 * 48);
}
