//! Attention timings (CUDA events): forward and forward+backward of each version at B=4 H=16
//! T=2048, and decode over a 2048-key cache.

use super::*;
use crate::bench::{self as b, time_ms};
use crate::device::Gpu;
use crate::reference::to_bf16_bits;
use crate::{Error, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct AttnTiming {
    pub name: String,
    pub shape: String,
    pub median_ms: f64,
    /// Causal FLOPs (forward 4*B*H*T^2*D/2, forward+backward 3.5x that) per second.
    pub tflops: Option<f64>,
    /// For decode: K and V bytes read per second.
    pub gbps: Option<f64>,
    pub error: Option<String>,
}

pub const BENCH_HEADS: usize = 4 * 16;
pub const BENCH_T: usize = 2048;

fn rand_vec(rng: &mut StdRng, n: usize, amp: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(0.001f32..amp) * if rng.gen::<bool>() { 1.0 } else { -1.0 }).collect()
}

/// B=4, H=16, T=2048, D=64 and 128: forward and forward+backward of v1 and v2, plus
/// decode over a 2048-key cache. CUDA events, `bench::WARMUP` warm-up, median of `bench::ITERS`.
pub fn bench(gpu: &Gpu) -> Vec<AttnTiming> {
    let mut out = Vec::new();
    // The forward v3 after everything else (it has not run on a GPU yet: a fault would
    // poison the context for every later row).
    let v3 = if FwdBf16::V3.in_selftest() { vec![false, true] } else { vec![false] };
    for only_v3 in v3 {
        for d in [64usize, 128] {
            if let Err(e) = bench_d(gpu, d, only_v3, &mut out) {
                out.push(AttnTiming { name: "attention setup".into(), shape: format!("D={d}"), median_ms: f64::NAN, tflops: None, gbps: None, error: Some(e.to_string()) });
            }
        }
    }
    out
}

/// `only_v3`: the forward v3's row alone; else every other row.
fn bench_d(gpu: &Gpu, d: usize, only_v3: bool, out: &mut Vec<AttnTiming>) -> Result<()> {
    let s = AttnShape { heads: BENCH_HEADS, tq: BENCH_T, tk: BENCH_T, d };
    let shape = format!("B=4 H=16 T={BENCH_T} D={d}");
    let fwd_flops = 4.0 * s.heads as f64 * (s.tq as f64).powi(2) * d as f64 / 2.0;
    let mut rng = StdRng::seed_from_u64(0xa77e + d as u64);
    let n = s.heads * s.tq * d;
    let up = |v: &[f32]| gpu.stream.clone_htod(v).map_err(|e| Error::cuda("upload", e));
    let up16 = |v: &[f32]| gpu.stream.clone_htod(&to_bf16_bits(v)).map_err(|e| Error::cuda("upload", e));
    let (q, k, v, g) = (rand_vec(&mut rng, n, 2.0), rand_vec(&mut rng, n, 2.0), rand_vec(&mut rng, n, 1.0), rand_vec(&mut rng, n, 1.0));
    let (gq, gk, gv, gg) = (up(&q)?, up(&k)?, up(&v)?, up(&g)?);
    let (gq16, gk16, gv16, gg16) = (up16(&q)?, up16(&k)?, up16(&v)?, up16(&g)?);
    let nan = vec![f32::NAN; n];
    let (mut o, mut lse, mut delta) = (up(&nan)?, up(&nan[..s.heads * s.tq])?, up(&nan[..s.heads * s.tq])?);
    let (mut dq, mut dk, mut dv) = (up(&nan)?, up(&nan)?, up(&nan)?);

    let mut row = |name: &str, flops: Option<f64>, bytes: Option<f64>, r: Result<f64>| {
        let (median_ms, error) = match r {
            Ok(ms) => (ms, None),
            Err(e) => (f64::NAN, Some(e.to_string())),
        };
        out.push(AttnTiming {
            name: name.into(),
            shape: shape.clone(),
            median_ms,
            tflops: flops.map(|f| f / (median_ms * 1e-3) / 1e12),
            gbps: bytes.map(|by| by / (median_ms * 1e-3) / 1e9),
            error,
        });
    };
    let fb = Some(3.5 * fwd_flops);
    if only_v3 {
        row("v3 bf16 fwd (128 queries a block)", Some(fwd_flops), None, time_ms(gpu, || gpu.attention_fwd_bf16(FwdBf16::V3, &gq16, &gk16, &gv16, &mut o, &mut lse, s, None)));
        return Ok(());
    }
    row("v1 f32 fwd", Some(fwd_flops), None, time_ms(gpu, || gpu.attention_fwd_f32(&gq, &gk, &gv, &mut o, &mut lse, s, None)));
    row("v2 bf16 fwd", Some(fwd_flops), None, time_ms(gpu, || gpu.attention_fwd_bf16(FwdBf16::V2, &gq16, &gk16, &gv16, &mut o, &mut lse, s, None)));
    row("v1 f32 fwd+bwd", fb, None, time_ms(gpu, || {
        gpu.attention_fwd_f32(&gq, &gk, &gv, &mut o, &mut lse, s, None)?;
        gpu.attention_bwd_f32(&gq, &gk, &gv, &o, &lse, &gg, &mut dq, &mut dk, &mut dv, &mut delta, s, None)
    }));
    let bwd_rows = [
        (BwdBf16::V2, "v2 bf16 fwd+bwd"),
        (BwdBf16::V3, "v2 fwd + v3 bwd (double-buffered) bf16"),
        (BwdBf16::V4, "v2 fwd + v4 bwd (128 keys, 4-wide dQ) bf16"),
    ];
    for (version, name) in bwd_rows.into_iter().filter(|(v, _)| v.at(d) == *v && v.in_selftest()) {
        row(name, fb, None, time_ms(gpu, || {
            gpu.attention_fwd_bf16(FwdBf16::V2, &gq16, &gk16, &gv16, &mut o, &mut lse, s, None)?;
            gpu.attention_bwd_bf16(version, &gq16, &gk16, &gv16, &o, &lse, &gg16, &mut dq, &mut dk, &mut dv, &mut delta, s, None)
        }));
    }
    // Decode: the last query of each head over the whole cache (K and V read once).
    let kv_bytes = Some(2.0 * (s.heads * s.tk * d * 4) as f64);
    let dec_flops = Some(4.0 * s.heads as f64 * s.tk as f64 * d as f64);
    row("decode f32 (tq=1, tk=2048)", dec_flops, kv_bytes, time_ms(gpu, || gpu.attention_decode_f32(&gq, &gk, &gv, &mut o, &mut lse, s.heads, s.tk, d, None)));
    // The autocast KV cache: bf16 keys and values, half the bytes.
    let kv16_bytes = kv_bytes.map(|b| b / 2.0);
    row("decode bf16 K/V (tq=1, tk=2048)", dec_flops, kv16_bytes, time_ms(gpu, || {
        gpu.attention_decode_kv(&gq, KvView::contiguous(&gk16, s), KvView::contiguous(&gv16, s), &mut o, &mut lse, s.heads, s.tk, d, None)
    }));
    Ok(())
}

pub fn print_timings(t: &[AttnTiming]) {
    if t.is_empty() {
        return;
    }
    println!("\nattention timings (causal; CUDA events, {} warm-up, median of {}):", b::WARMUP, b::ITERS);
    println!("| attention | shape | median ms | TFLOP/s | GB/s |");
    println!("|---|---|---:|---:|---:|");
    for x in t {
        let f = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
        let err = x.error.as_ref().map(|e| format!(" ERROR: {e}")).unwrap_or_default();
        println!("| attention {} | {} | {:.3} | {} | {}{err} |", x.name, x.shape, x.median_ms, f(x.tflops), f(x.gbps));
    }
}
