//! The attention self-test: every version against [`super::reference`] on fresh random inputs
//! at ragged, padded and KV-cache shapes, outputs poisoned first; unproven versions run last.

use super::*;
use crate::device::Gpu;
use crate::reference::{compare, from_bf16_bits, to_bf16_bits};
use crate::selftest::{Check, Ctx, TOL_BF16, TOL_F32};
use crate::Result;
use rand::{rngs::StdRng, SeedableRng};

fn case(out: &mut Vec<Check>, kernel: &str, shape: &str, precision: &'static str, f: impl FnOnce() -> Result<Vec<Check>>) {
    match f() {
        Ok(rows) => out.extend(rows),
        Err(e) => out.push(Check::failed(kernel, shape.to_string(), precision, e.to_string())),
    }
}

/// Shapes (heads, tq, tk, d): T = 1, 70, 257, tile multiples, tq < tk (KV cache), D = 32,
/// 64 and 128, BH = 1 and 6.
pub const CHECK_SHAPES: &[(usize, usize, usize, usize)] = &[
    (1, 1, 1, 64),
    (6, 1, 1, 128),
    (1, 70, 70, 64),
    (6, 70, 70, 128),
    (6, 257, 257, 64),
    (1, 257, 257, 128),
    (1, 128, 128, 64),
    (6, 64, 192, 128),
    (6, 33, 200, 64),
    (1, 100, 257, 128),
    (6, 1, 150, 128),
    (6, 70, 70, 32),
    (1, 257, 257, 32),
    (6, 33, 200, 32),
];

/// Left-padded batches for v1 and v2 (heads per row, tq, tk, d, padding keys per batch row):
/// padding queries (rows that see no key), whole padded key tiles, pad = tk - 1.
pub const PADDED_SHAPES: &[(usize, usize, usize, usize, &[usize])] = &[
    (3, 70, 70, 64, &[0, 37]),
    (2, 40, 100, 32, &[5, 0, 99]),
    (1, 129, 129, 128, &[64, 1, 128]),
];

/// (heads, tk, d, padding keys per batch row, or none) for the decode kernel; the padded
/// ones have 2 heads per row, and one row whose keys are all padding.
pub const DECODE_SHAPES: &[(usize, usize, usize, &[usize])] = &[
    (1, 1, 64, &[]), (6, 1, 128, &[]), (6, 70, 64, &[]), (1, 257, 128, &[]), (6, 33, 128, &[]), (6, 1000, 64, &[]),
    (1, 2049, 128, &[]), (6, 70, 32, &[]), (4, 45, 64, &[3, 45]), (6, 300, 32, &[0, 299, 40]),
];

/// Random q, k, v and dout for `s`, with NaN in the keys and values that padding hides: a
/// kernel that reads them (0 · NaN) fails.
fn random_inputs(c: &mut Ctx, s: AttnShape, pads: &[usize]) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let AttnShape { heads, tq, tk, d } = s;
    let (nq, nk) = (heads * tq * d, heads * tk * d);
    let (q, mut k, mut v, g) = (c.rand(nq, -2.0, 2.0), c.rand(nk, -2.0, 2.0), c.rand(nk, -1.0, 1.0), c.rand(nq, -1.0, 1.0));
    for (b, &p) in pads.iter().enumerate() {
        let hpr = heads / pads.len();
        for h in b * hpr..(b + 1) * hpr {
            k[h * tk * d..(h * tk + p) * d].fill(f32::NAN);
            v[h * tk * d..(h * tk + p) * d].fill(f32::NAN);
        }
    }
    (q, k, v, g)
}

/// v1 forward and backward (from the GPU's own out and lse, as training runs them) against
/// the reference; `pads` empty or one count per batch row.
fn v1_checks(c: &mut Ctx, s: AttnShape, pads: &[usize]) -> Result<Vec<Check>> {
    let gpu = c.gpu;
    let AttnShape { heads, tq, tk, d } = s;
    let shape = if pads.is_empty() { s.describe() } else { format!("{} pad {pads:?}", s.describe()) };
    let (nq, nk) = (heads * tq * d, heads * tk * d);
    let (q, k, v, g) = random_inputs(c, s, pads);
    let (fr, br) = reference(&q, &k, &v, Some(&g), s, pads);
    let br = br.expect("backward reference");
    let (gq, gk, gv, gg) = (c.up(&q)?, c.up(&k)?, c.up(&v)?, c.up(&g)?);
    let counts = c.up(&pads.iter().map(|&p| p as i32).collect::<Vec<i32>>())?;
    let key_pad = (!pads.is_empty()).then(|| KeyPad { counts: &counts, heads_per_row: heads / pads.len() });
    let (mut go, mut gl) = (c.poisoned(nq)?, c.poisoned(heads * tq)?);
    gpu.attention_fwd_f32(&gq, &gk, &gv, &mut go, &mut gl, s, key_pad.as_ref())?;
    gpu.sync("attn_fwd_v1_f32")?;
    let mut rows = vec![
        Check::new("attn_fwd_v1_f32 (out)", shape.clone(), "f32", compare(&c.down(&go)?, &fr.out), TOL_F32),
        lse_check("attn_fwd_v1_f32 (lse)", shape.clone(), "f32", &c.down(&gl)?, &fr.lse, TOL_F32),
    ];
    let (mut dq, mut dk, mut dv, mut delta) = (c.poisoned(nq)?, c.poisoned(nk)?, c.poisoned(nk)?, c.poisoned(heads * tq)?);
    gpu.attention_bwd_f32(&gq, &gk, &gv, &go, &gl, &gg, &mut dq, &mut dk, &mut dv, &mut delta, s, key_pad.as_ref())?;
    gpu.sync("attn_bwd_v1_f32")?;
    rows.push(Check::new("attn_bwd_v1_f32 (dq)", shape.clone(), "f32", compare(&c.down(&dq)?, &br.dq), TOL_F32));
    rows.push(Check::new("attn_bwd_v1_f32 (dk)", shape.clone(), "f32", compare(&c.down(&dk)?, &br.dk), TOL_F32));
    rows.push(Check::new("attn_bwd_v1_f32 (dv)", shape, "f32", compare(&c.down(&dv)?, &br.dv), TOL_F32));
    Ok(rows)
}

/// v2 forward and backward against the reference on the same bf16-rounded inputs (only the
/// kernel's own roundings, P and dS to bf16 for the tensor cores, and f32 arithmetic
/// differ); `pads` empty or one count per batch row, the hidden keys and values NaN.
fn v2_checks(c: &mut Ctx, s: AttnShape, pads: &[usize]) -> Result<Vec<Check>> {
    let gpu = c.gpu;
    let AttnShape { heads, tq, tk, d } = s;
    let shape = if pads.is_empty() { s.describe() } else { format!("{} pad {pads:?}", s.describe()) };
    let (nq, nk) = (heads * tq * d, heads * tk * d);
    let (q, k, v, g) = random_inputs(c, s, pads);
    let (q16, k16, v16, g16) = (to_bf16_bits(&q), to_bf16_bits(&k), to_bf16_bits(&v), to_bf16_bits(&g));
    let (fr, br) = reference(&from_bf16_bits(&q16), &from_bf16_bits(&k16), &from_bf16_bits(&v16), Some(&from_bf16_bits(&g16)), s, pads);
    let br = br.expect("backward reference");
    let (gq, gk, gv, gg) = (c.up(&q16)?, c.up(&k16)?, c.up(&v16)?, c.up(&g16)?);
    let counts = c.up(&pads.iter().map(|&p| p as i32).collect::<Vec<i32>>())?;
    let key_pad = (!pads.is_empty()).then(|| KeyPad { counts: &counts, heads_per_row: heads / pads.len() });
    let (mut go, mut gl) = (c.poisoned(nq)?, c.poisoned(heads * tq)?);
    gpu.attention_fwd_bf16(FwdBf16::V2, &gq, &gk, &gv, &mut go, &mut gl, s, key_pad.as_ref())?;
    gpu.sync("attn_fwd_v2_bf16")?;
    let mut rows = vec![
        Check::new("attn_fwd_v2_bf16 (out)", shape.clone(), "bf16->f32", compare(&c.down(&go)?, &fr.out), TOL_BF16),
        lse_check("attn_fwd_v2_bf16 (lse)", shape.clone(), "bf16->f32", &c.down(&gl)?, &fr.lse, TOL_BF16),
    ];
    for version in BwdBf16::ALL.into_iter().filter(|v| v.at(d) == *v && v.in_selftest()) {
        let name = &format!("attn_bwd_{}_bf16", version.name());
        let (mut dq, mut dk, mut dv, mut delta) = (c.poisoned(nq)?, c.poisoned(nk)?, c.poisoned(nk)?, c.poisoned(heads * tq)?);
        gpu.attention_bwd_bf16(version, &gq, &gk, &gv, &go, &gl, &gg, &mut dq, &mut dk, &mut dv, &mut delta, s, key_pad.as_ref())?;
        gpu.sync(name)?;
        rows.push(Check::new(&format!("{name} (dq)"), shape.clone(), "bf16->f32", compare(&c.down(&dq)?, &br.dq), TOL_BF16));
        rows.push(Check::new(&format!("{name} (dk)"), shape.clone(), "bf16->f32", compare(&c.down(&dk)?, &br.dk), TOL_BF16));
        rows.push(Check::new(&format!("{name} (dv)"), shape.clone(), "bf16->f32", compare(&c.down(&dv)?, &br.dv), TOL_BF16));
    }
    Ok(rows)
}

/// A bf16 forward version alone against the reference on the same bf16-rounded inputs.
fn fwd_checks(c: &mut Ctx, version: FwdBf16, s: AttnShape, pads: &[usize]) -> Result<Vec<Check>> {
    let gpu = c.gpu;
    let AttnShape { heads, tq, .. } = s;
    let shape = if pads.is_empty() { s.describe() } else { format!("{} pad {pads:?}", s.describe()) };
    let (q, k, v, _) = random_inputs(c, s, pads);
    let (q16, k16, v16) = (to_bf16_bits(&q), to_bf16_bits(&k), to_bf16_bits(&v));
    let (fr, _) = reference(&from_bf16_bits(&q16), &from_bf16_bits(&k16), &from_bf16_bits(&v16), None, s, pads);
    let (gq, gk, gv) = (c.up(&q16)?, c.up(&k16)?, c.up(&v16)?);
    let counts = c.up(&pads.iter().map(|&p| p as i32).collect::<Vec<i32>>())?;
    let key_pad = (!pads.is_empty()).then(|| KeyPad { counts: &counts, heads_per_row: heads / pads.len() });
    let (mut go, mut gl) = (c.poisoned(heads * tq * s.d)?, c.poisoned(heads * tq)?);
    let name = version.stem();
    gpu.attention_fwd_bf16(version, &gq, &gk, &gv, &mut go, &mut gl, s, key_pad.as_ref())?;
    gpu.sync(name)?;
    Ok(vec![
        Check::new(&format!("{name} (out)"), shape.clone(), "bf16->f32", compare(&c.down(&go)?, &fr.out), TOL_BF16),
        lse_check(&format!("{name} (lse)"), shape, "bf16->f32", &c.down(&gl)?, &fr.lse, TOL_BF16),
    ])
}

/// Every attention kernel against the f64 reference; a launch/sync error becomes a failed row.
pub fn checks(gpu: &Gpu) -> Vec<Check> {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) ^ 0xa77e_4710;
    let mut c = Ctx { gpu, rng: StdRng::seed_from_u64(seed) };
    let mut out = Vec::new();

    for &(heads, tq, tk, d) in CHECK_SHAPES {
        let s = AttnShape { heads, tq, tk, d };
        let shape = s.describe();
        case(&mut out, "attn_v1_f32", &shape, "f32", || v1_checks(&mut c, s, &[]));
        case(&mut out, "attn_v2_bf16", &shape, "bf16", || v2_checks(&mut c, s, &[]));
    }

    for &(heads_per_row, tq, tk, d, pads) in PADDED_SHAPES {
        let s = AttnShape { heads: heads_per_row * pads.len(), tq, tk, d };
        case(&mut out, "attn_v1_f32 (padded)", &s.describe(), "f32", || v1_checks(&mut c, s, pads));
        case(&mut out, "attn_v2_bf16 (padded)", &s.describe(), "bf16", || v2_checks(&mut c, s, pads));
    }

    for &(heads, tk, d, pads) in DECODE_SHAPES {
        let s = AttnShape { heads, tq: 1, tk, d };
        let shape = if pads.is_empty() { s.describe() } else { format!("{} pad {pads:?}", s.describe()) };
        case(&mut out, "attn_decode_f32", &shape, "f32", || {
            let (q, k, v) = (c.rand(heads * d, -2.0, 2.0), c.rand(heads * tk * d, -2.0, 2.0), c.rand(heads * tk * d, -1.0, 1.0));
            let (fr, _) = reference(&q, &k, &v, None, s, pads);
            let (gq, gk, gv) = (c.up(&q)?, c.up(&k)?, c.up(&v)?);
            let counts = c.up(&pads.iter().map(|&p| p as i32).collect::<Vec<i32>>())?;
            let key_pad = (!pads.is_empty()).then(|| KeyPad { counts: &counts, heads_per_row: heads / pads.len() });
            let (mut go, mut gl) = (c.poisoned(heads * d)?, c.poisoned(heads)?);
            gpu.attention_decode_f32(&gq, &gk, &gv, &mut go, &mut gl, heads, tk, d, key_pad.as_ref())?;
            gpu.sync("attn_decode_f32")?;
            Ok(vec![
                Check::new("attn_decode_f32 (out)", shape.clone(), "f32", compare(&c.down(&go)?, &fr.out), TOL_F32),
                lse_check("attn_decode_f32 (lse)", shape.clone(), "f32", &c.down(&gl)?, &fr.lse, TOL_F32),
            ])
        });
        // Read in place from a KV cache's buffers (heads `cap * d` apart from element 4, the
        // rows past tk NaN), f32 and bf16.
        let cap = tk + 13;
        let cached = format!("{shape}, cache of {cap}");
        case(&mut out, "attn_decode (KV cache layout)", &cached, "f32, bf16 K/V", || {
            let (q, k, v) = (c.rand(heads * d, -2.0, 2.0), c.rand(heads * tk * d, -2.0, 2.0), c.rand(heads * tk * d, -1.0, 1.0));
            let lay = |x: &[f32]| -> Vec<f32> {
                let mut buf = vec![f32::NAN; 4 + heads * cap * d];
                for h in 0..heads {
                    buf[4 + h * cap * d..4 + h * cap * d + tk * d].copy_from_slice(&x[h * tk * d..(h + 1) * tk * d]);
                }
                buf
            };
            let counts = c.up(&pads.iter().map(|&p| p as i32).collect::<Vec<i32>>())?;
            let key_pad = (!pads.is_empty()).then(|| KeyPad { counts: &counts, heads_per_row: heads / pads.len() });
            let gq = c.up(&q)?;
            let mut rows = Vec::new();
            for bf in [false, true] {
                // bf16: the reference reads the same rounded keys and values.
                let round = |x: &[f32]| if bf { from_bf16_bits(&to_bf16_bits(x)) } else { x.to_vec() };
                let (fr, _) = reference(&q, &round(&k), &round(&v), None, s, pads);
                let (mut go, mut gl) = (c.poisoned(heads * d)?, c.poisoned(heads)?);
                let name = if bf { "attn_decode_bf16kv" } else { "attn_decode_f32" };
                if bf {
                    let (gk, gv) = (c.up(&to_bf16_bits(&lay(&k)))?, c.up(&to_bf16_bits(&lay(&v)))?);
                    let (kv, vv) = (KvView { buf: &gk, offset: 4, head_stride: cap * d }, KvView { buf: &gv, offset: 4, head_stride: cap * d });
                    gpu.attention_decode_kv(&gq, kv, vv, &mut go, &mut gl, heads, tk, d, key_pad.as_ref())?;
                } else {
                    let (gk, gv) = (c.up(&lay(&k))?, c.up(&lay(&v))?);
                    let (kv, vv) = (KvView { buf: &gk, offset: 4, head_stride: cap * d }, KvView { buf: &gv, offset: 4, head_stride: cap * d });
                    gpu.attention_decode_kv(&gq, kv, vv, &mut go, &mut gl, heads, tk, d, key_pad.as_ref())?;
                }
                gpu.sync(name)?;
                rows.push(Check::new(&format!("{name} (cache layout, out)"), cached.clone(), "f32", compare(&c.down(&go)?, &fr.out), TOL_F32));
                rows.push(lse_check(&format!("{name} (cache layout, lse)"), cached.clone(), "f32", &c.down(&gl)?, &fr.lse, TOL_F32));
            }
            Ok(rows)
        });
    }

    // The forward v3 last: a fault there (it has not run on a GPU yet) costs no other row.
    if FwdBf16::V3.in_selftest() {
        let padded = PADDED_SHAPES.iter().map(|&(hpr, tq, tk, d, pads)| (AttnShape { heads: hpr * pads.len(), tq, tk, d }, pads));
        let plain = CHECK_SHAPES.iter().map(|&(heads, tq, tk, d)| (AttnShape { heads, tq, tk, d }, &[][..]));
        for (s, pads) in plain.chain(padded) {
            case(&mut out, "attn_fwd_v3_bf16", &s.describe(), "bf16", || fwd_checks(&mut c, FwdBf16::V3, s, pads));
        }
    }
    out
}
