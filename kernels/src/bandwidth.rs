//! Bandwidth of the memory-bound kernels (softmax, layernorm, GELU, cross-entropy, AdamW,
//! embedding, reductions, binary ops, casts): GB/s against a device copy measured in the same
//! process, both at 256 MiB and at each row's own size, over working sets rotated past the L2.

use crate::bench::ITERS;
use crate::device::Gpu;
use crate::memops::{BinaryOp, CeGroup, L2NormPlan};
use crate::reference::to_bf16_bits;
use crate::rows::RowKernel;
use crate::{Error, Result};
use cudarc::driver::{sys, CudaSlice};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct MemTiming {
    pub name: String,
    pub shape: String,
    /// Fewest bytes the op must move (each input read once, each output written once).
    pub bytes: f64,
    pub median_ms: f64,
    pub gbps: f64,
    /// Against the device-to-device copy measured in the same process (bytes read + written).
    pub pct_of_copy: Option<f64>,
    /// Against a copy of the same bytes (half read, half written) over the same rotating
    /// sets: the ceiling at this size, where a 25 MB op pays the launch and the tail that
    /// the 256 MiB copy of `pct_of_copy` amortizes.
    pub pct_of_same_size_copy: Option<f64>,
    /// Input/output sets rotated per launch so that the working set exceeds 4x the L2 cache.
    pub sets: usize,
    pub error: Option<String>,
}

/// Ops [`bench_op`] knows (names as the CLI spells them).
pub const BENCH_OPS: &[&str] = &["softmax", "layernorm", "gelu", "cross-entropy", "adamw", "embedding", "sum-rows", "l2norm", "binary", "cast"];

fn l2_bytes(gpu: &Gpu) -> usize {
    gpu.ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE).ok().filter(|&v| v > 0).map(|v| v as usize).unwrap_or(50 << 20)
}

/// How many copies of a `bytes_per_set` working set to rotate through (at most 32, at most 16 GiB).
pub fn sets_for(gpu: &Gpu, bytes_per_set: usize) -> usize {
    let b = bytes_per_set.max(1);
    (4 * l2_bytes(gpu)).div_ceil(b).clamp(1, 32).min(((16usize << 30) / b).max(1))
}

/// Median per-launch time in ms: warm-up, then `ITERS` samples, each timing (with CUDA
/// events) at least 16 launches cycling over the `sets` working sets.
pub fn time_per_launch(gpu: &Gpu, sets: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let sets = sets.max(1);
    let per = sets * 16usize.div_ceil(sets);
    for i in 0..per {
        f(i % sets)?;
    }
    gpu.sync("warm-up")?;
    let ev = || gpu.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| Error::cuda("event create", e));
    let mut ms = Vec::with_capacity(ITERS);
    for _ in 0..ITERS {
        let (start, end) = (ev()?, ev()?);
        start.record(&gpu.stream).map_err(|e| Error::cuda("event record", e))?;
        for i in 0..per {
            f(i % sets)?;
        }
        end.record(&gpu.stream).map_err(|e| Error::cuda("event record", e))?;
        ms.push(start.elapsed_ms(&end).map_err(|e| Error::cuda("event elapsed (kernel fault?)", e))? as f64 / per as f64);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    Ok(ms[ms.len() / 2])
}

fn timing(name: &str, shape: &str, bytes: f64, sets: usize, copy: Option<f64>, r: Result<f64>) -> MemTiming {
    let (median_ms, error) = match r {
        Ok(ms) => (ms, None),
        Err(e) => (f64::NAN, Some(e.to_string())),
    };
    let gbps = bytes / (median_ms * 1e-3) / 1e9;
    let pct_of_copy = copy.filter(|c| *c > 0.0 && gbps.is_finite()).map(|c| 100.0 * gbps / c);
    MemTiming { name: name.into(), shape: shape.into(), bytes, median_ms, gbps, pct_of_copy, pct_of_same_size_copy: None, sets, error }
}

/// cuMemcpyDtoD of a 256 MiB buffer; GB/s counts bytes read plus bytes written.
pub fn copy_bandwidth(gpu: &Gpu) -> Result<MemTiming> {
    let n = 64usize << 20; // f32 elements = 256 MiB
    let src = gpu.stream.clone_htod(&vec![1.5f32; n]).map_err(|e| Error::cuda("copy bench upload", e))?;
    let mut dst = gpu.stream.alloc_zeros::<f32>(n).map_err(|e| Error::cuda("copy bench alloc", e))?;
    let r = time_per_launch(gpu, 1, |_| gpu.stream.memcpy_dtod(&src, &mut dst).map_err(|e| Error::cuda("cuMemcpyDtoD 256 MiB", e)));
    Ok(timing("memcpy D2D (read+write)", "256 MiB", 2.0 * (n * 4) as f64, 1, None, r))
}

/// GB/s (read + written) of cuMemcpyDtoD moving `bytes` in all (half read, half written),
/// cycling over at least `sets` buffer pairs, and enough that they exceed 4x the L2 (the
/// op's own sets were sized for its buffers, which may be larger than the copy's).
fn copy_gbps_at(gpu: &Gpu, bytes: f64, sets: usize) -> Result<f64> {
    let n = ((bytes / 8.0) as usize).max(1); // f32 elements per buffer
    let sets = sets.max(sets_for(gpu, 8 * n));
    let mut pairs: Vec<(CudaSlice<f32>, CudaSlice<f32>)> = (0..sets)
        .map(|_| Ok((gpu.stream.alloc_zeros::<f32>(n).map_err(|e| Error::cuda("same-size copy alloc", e))?, gpu.stream.alloc_zeros::<f32>(n).map_err(|e| Error::cuda("same-size copy alloc", e))?)))
        .collect::<Result<_>>()?;
    let ms = time_per_launch(gpu, sets, |i| {
        let (src, dst) = &mut pairs[i];
        gpu.stream.memcpy_dtod(src, dst).map_err(|e| Error::cuda("same-size cuMemcpyDtoD", e))
    })?;
    Ok(2.0 * (n * 4) as f64 / (ms * 1e-3) / 1e9)
}

/// Fills `pct_of_same_size_copy` of each timed row (one copy timing per distinct size).
fn add_same_size_copies(gpu: &Gpu, rows: &mut [MemTiming]) {
    let mut done: Vec<((u64, usize), Option<f64>)> = Vec::new();
    for t in rows.iter_mut().filter(|t| t.error.is_none() && t.gbps.is_finite()) {
        let key = (t.bytes as u64, t.sets);
        let copy = match done.iter().find(|(k, _)| *k == key) {
            Some((_, c)) => *c,
            None => {
                let c = copy_gbps_at(gpu, t.bytes, t.sets).ok();
                done.push((key, c));
                c
            }
        };
        t.pct_of_same_size_copy = copy.filter(|c| *c > 0.0).map(|c| 100.0 * t.gbps / c);
    }
}

fn rand_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(0.001f32..1.0) * if rng.gen::<bool>() { scale } else { -scale }).collect()
}

/// v1, and v2 where rows of `width` fit it: (version, entry name) for `{stem}_f32`.
fn row_versions(stem: &str, width: usize) -> Vec<(RowKernel, String)> {
    let mut v = vec![(RowKernel::V1, format!("{stem}_f32"))];
    if let Some(e) = RowKernel::v2_entry(&format!("{stem}_v2_f32"), width) {
        v.push((RowKernel::V2, e));
    }
    v
}

/// GELU forward (and backward) over `n` rotating sets of `x`'s element type.
fn gelu_rows<T: crate::device::RowElem + cudarc::driver::ValidAsZeroBits>(
    gpu: &Gpu, x: &[T], n: usize, backward: bool, row: &mut impl FnMut(&str, f64, usize, Result<f64>),
) -> Result<()> {
    let up = || gpu.stream.clone_htod(x).map_err(|e| Error::cuda("bench upload", e));
    let mut s: Vec<(CudaSlice<T>, CudaSlice<T>, CudaSlice<T>)> = (0..n).map(|_| Ok((up()?, up()?, up()?))).collect::<Result<_>>()?;
    let bytes = std::mem::size_of_val(x) as f64;
    row(&format!("gelu_fwd_{}", T::NAME), 2.0 * bytes, n, time_per_launch(gpu, n, |i| {
        let (x, y, _) = &mut s[i];
        gpu.gelu_fwd(x, y)
    }));
    if backward {
        row(&format!("gelu_bwd_{}", T::NAME), 3.0 * bytes, n, time_per_launch(gpu, n, |i| {
            let (x, dy, dx) = &mut s[i];
            gpu.gelu_bwd(x, dy, dx)
        }));
    }
    Ok(())
}

fn dims(shape: &[usize], n: usize, form: &str, op: &str) -> Result<()> {
    if shape.len() != n || shape.contains(&0) {
        return Err(Error::Other(format!("bench {op}: shape must be {form} with sizes > 0, got {shape:?}")));
    }
    Ok(())
}

/// Times one op (and its backward when asked) at `shape`; `copy_gbps` from [`copy_bandwidth`].
pub fn bench_op(gpu: &Gpu, op: &str, shape: &[usize], backward: bool, copy_gbps: Option<f64>) -> Result<Vec<MemTiming>> {
    let mut rng = StdRng::seed_from_u64(0xbe7c);
    let st = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    let up = |v: &[f32]| gpu.stream.clone_htod(v).map_err(|e| Error::cuda("bench upload", e));
    let up16 = |v: &[u16]| gpu.stream.clone_htod(v).map_err(|e| Error::cuda("bench upload", e));
    let mut out = Vec::new();
    let mut row = |name: &str, bytes: f64, sets: usize, r: Result<f64>| out.push(timing(name, &st, bytes, sets, copy_gbps, r));
    match op {
        "softmax" => {
            dims(shape, 2, "RxC", op)?;
            let (r, c) = (shape[0], shape[1]);
            let bytes = 2.0 * 4.0 * (r * c) as f64;
            let n = sets_for(gpu, bytes as usize);
            let x = rand_vec(&mut rng, r * c, 4.0);
            let mut s: Vec<(CudaSlice<f32>, CudaSlice<f32>)> = (0..n).map(|_| Ok((up(&x)?, up(&x)?))).collect::<Result<_>>()?;
            for (v, name) in row_versions("softmax_fwd", c) {
                row(&name, bytes, n, time_per_launch(gpu, n, |i| {
                    let (x, y) = &mut s[i];
                    gpu.softmax_fwd_with(v, x, y, r, c)
                }));
            }
            if backward {
                // dx = y (dy - sum(y dy)): reads y and dy, writes dx; dy = the input set (random).
                let mut dx = up(&x)?;
                row("softmax_bwd_f32", 1.5 * bytes, n, time_per_launch(gpu, n, |i| {
                    let (x, y) = &s[i];
                    gpu.softmax_bwd(y, x, &mut dx, r, c, false)
                }));
            }
            if let Some(name) = RowKernel::v2_entry("softmax_fwd_v2_bf16", c) {
                // bf16 rows: half the bytes.
                let x16 = to_bf16_bits(&x);
                let mut s16: Vec<(CudaSlice<u16>, CudaSlice<u16>)> = (0..n).map(|_| Ok((up16(&x16)?, up16(&x16)?))).collect::<Result<_>>()?;
                row(&name, bytes / 2.0, n, time_per_launch(gpu, n, |i| {
                    let (x, y) = &mut s16[i];
                    gpu.softmax_fwd_with(RowKernel::V2, x, y, r, c)
                }));
            }
        }
        "layernorm" => {
            dims(shape, 2, "RxC", op)?;
            let (r, c) = (shape[0], shape[1]);
            let (rc, cf, rf) = ((r * c) as f64, c as f64, r as f64);
            let fwd_bytes = 4.0 * (2.0 * rc + 2.0 * cf + 2.0 * rf);
            let n = sets_for(gpu, (4.0 * 4.0 * rc) as usize);
            let (x, g, b) = (rand_vec(&mut rng, r * c, 2.0), rand_vec(&mut rng, c, 1.0), rand_vec(&mut rng, c, 1.0));
            let (gg, gb) = (up(&g)?, up(&b)?);
            struct Ln {
                x: CudaSlice<f32>,
                y: CudaSlice<f32>,
                mean: CudaSlice<f32>,
                rstd: CudaSlice<f32>,
                dx: CudaSlice<f32>,
            }
            let mut s: Vec<Ln> = (0..n)
                .map(|_| Ok(Ln { x: up(&x)?, y: up(&x)?, mean: up(&x[..r])?, rstd: up(&x[..r])?, dx: up(&x)? }))
                .collect::<Result<_>>()?;
            for (v, name) in row_versions("layernorm_fwd", c) {
                row(&name, fwd_bytes, n, time_per_launch(gpu, n, |i| {
                    let l = &mut s[i];
                    gpu.layernorm_fwd_with(v, &l.x, &gg, &gb, &mut l.y, &mut l.mean, &mut l.rstd, r, c, 1e-5)
                }));
            }
            if backward {
                // dy = the forward's y buffer (random, finite); fewest bytes: read x, dy, gamma,
                // mean, rstd; write dx, dgamma, dbeta (v2 comes close: it adds only its partial
                // sums; v1 reads x and dy twice).
                let bwd_bytes = 4.0 * (3.0 * rc + 3.0 * cf + 2.0 * rf);
                let (mut dg, mut db) = (up(&g)?, up(&b)?);
                for (v, name) in row_versions("layernorm_bwd", c) {
                    let name = if v == RowKernel::V1 { "layernorm_bwd_f32 (dx + dparams kernels)".to_string() } else { format!("{name} (fused + finish)") };
                    row(&name, bwd_bytes, n, time_per_launch(gpu, n, |i| {
                        let l = &mut s[i];
                        gpu.layernorm_bwd_with(v, &l.x, &gg, &l.mean, &l.rstd, &l.y, &mut l.dx, &mut dg, &mut db, r, c)
                    }));
                }
            }
            if let Some(fwd) = RowKernel::v2_entry("layernorm_fwd_v2_bf16", c) {
                // bf16 activations (x, y, dy, dx): their bytes halved; parameters and statistics f32.
                let x16 = to_bf16_bits(&x);
                let mut s16: Vec<(CudaSlice<u16>, CudaSlice<u16>, CudaSlice<u16>)> = (0..n).map(|_| Ok((up16(&x16)?, up16(&x16)?, up16(&x16)?))).collect::<Result<_>>()?;
                let (mut mean, mut rstd) = (up(&x[..r])?, up(&x[..r])?);
                row(&fwd, 2.0 * 2.0 * rc + 4.0 * (2.0 * cf + 2.0 * rf), n, time_per_launch(gpu, n, |i| {
                    let (x, y, _) = &mut s16[i];
                    gpu.layernorm_fwd_with(RowKernel::V2, x, &gg, &gb, y, &mut mean, &mut rstd, r, c, 1e-5)
                }));
                if backward {
                    let name = RowKernel::v2_entry("layernorm_bwd_v2_bf16", c).unwrap_or_default();
                    let (mut dg, mut db) = (up(&g)?, up(&b)?);
                    row(&format!("{name} (fused + finish)"), 2.0 * 3.0 * rc + 4.0 * (3.0 * cf + 2.0 * rf), n, time_per_launch(gpu, n, |i| {
                        let (x, dy, dx) = &mut s16[i];
                        gpu.layernorm_bwd_with(RowKernel::V2, x, &gg, &mean, &rstd, dy, dx, &mut dg, &mut db, r, c)
                    }));
                }
                // Autocast's build: f32 x (the residual stream) to a bf16 y; back from a bf16
                // dy to an f32 dx.
                let fwd = RowKernel::v2_entry("layernorm_fwd_v2_f32_bf16", c).unwrap_or_default();
                row(&fwd, (4.0 + 2.0) * rc + 4.0 * (2.0 * cf + 2.0 * rf), n, time_per_launch(gpu, n, |i| {
                    let (l, (_, y, _)) = (&s[i], &mut s16[i]);
                    gpu.layernorm_fwd_with(RowKernel::V2, &l.x, &gg, &gb, y, &mut mean, &mut rstd, r, c, 1e-5)
                }));
                if backward {
                    let name = RowKernel::v2_entry("layernorm_bwd_v2_f32_bf16", c).unwrap_or_default();
                    let (mut dg, mut db) = (up(&g)?, up(&b)?);
                    row(&format!("{name} (fused + finish)"), (4.0 + 2.0 + 4.0) * rc + 4.0 * (3.0 * cf + 2.0 * rf), n, time_per_launch(gpu, n, |i| {
                        let (l, (_, dy, _)) = (&mut s[i], &s16[i]);
                        gpu.layernorm_bwd_with(RowKernel::V2, &l.x, &gg, &mean, &rstd, dy, &mut l.dx, &mut dg, &mut db, r, c)
                    }));
                }
            }
        }
        "gelu" => {
            dims(shape, 1, "N", op)?;
            let len = shape[0];
            let n = sets_for(gpu, 3 * 4 * len);
            let x = rand_vec(&mut rng, len, 4.0);
            // f32, then bf16 storage (half the bytes).
            gelu_rows(gpu, &x, n, backward, &mut row)?;
            gelu_rows(gpu, &to_bf16_bits(&x), n, backward, &mut row)?;
        }
        "cross-entropy" => {
            dims(shape, 2, "NxV", op)?;
            let (nr, v) = (shape[0], shape[1]);
            let nv = (nr * v) as f64;
            let x = rand_vec(&mut rng, nr * v, 8.0);
            let t: Vec<i64> = (0..nr).map(|i| if i % 16 == 15 { -100 } else { ((i * 7919) % v) as i64 }).collect();
            let gt = gpu.stream.clone_htod(&t).map_err(|e| Error::cuda("bench upload", e))?;
            let g = CeGroup::Auto.resolve(v);
            let gname = if g == CeGroup::Warp { "warp" } else { "block" };
            for bf in [false, true] {
                let es = if bf { 2.0 } else { 4.0 };
                let per_set = (nv * es * if backward { 2.0 } else { 1.0 }) as usize;
                let n = sets_for(gpu, per_set);
                let fwd_bytes = nv * es + nr as f64 * 16.0;
                let bwd_bytes = 2.0 * nv * es + nr as f64 * 12.0;
                let (mut loss, mut lse) = (up(&vec![0.0; nr])?, up(&vec![0.0; nr])?);
                if bf {
                    let x16 = to_bf16_bits(&x);
                    let mut s: Vec<(CudaSlice<u16>, CudaSlice<u16>)> = (0..n)
                        .map(|_| Ok((gpu.stream.clone_htod(&x16).map_err(|e| Error::cuda("bench upload", e))?, if backward { gpu.stream.clone_htod(&x16).map_err(|e| Error::cuda("bench upload", e))? } else { gpu.stream.alloc_zeros::<u16>(1).map_err(|e| Error::cuda("bench alloc", e))? })))
                        .collect::<Result<_>>()?;
                    row(&format!("ce_fwd_{gname}_bf16"), fwd_bytes, n, time_per_launch(gpu, n, |i| gpu.cross_entropy_fwd_bf16(g, &s[i].0, &gt, &mut loss, &mut lse, nr, v)));
                    // PPO's per-token log-probs: at a temperature, with the entropy.
                    let mut ent = up(&vec![0.0; nr])?;
                    row(&format!("ce_fwd_{gname}_bf16 (a = 1/0.7, + entropy)"), fwd_bytes + nr as f64 * 4.0, n, time_per_launch(gpu, n, |i| {
                        gpu.cross_entropy_fwd_scaled_bf16(g, &s[i].0, &gt, &mut loss, &mut lse, Some(&mut ent), nr, v, 1.0 / 0.7)
                    }));
                    if backward {
                        row(&format!("ce_bwd_{gname}_bf16 (bf16 dlogits)"), bwd_bytes, n, time_per_launch(gpu, n, |i| {
                            let (x, d) = &mut s[i];
                            gpu.cross_entropy_bwd_bf16(g, x, &gt, &lse, d, nr, v, 1e-3)
                        }));
                        let gs = up(&vec![0.5; nr])?;
                        row(&format!("ce_bwd_{gname}_bf16 (a = 1/0.7, row gradients)"), bwd_bytes + nr as f64 * 4.0, n, time_per_launch(gpu, n, |i| {
                            let (x, d) = &mut s[i];
                            gpu.cross_entropy_bwd_scaled_bf16(g, x, &gt, &lse, Some(&gs), d, nr, v, 1.0 / 0.7, -1.0 / 0.7)
                        }));
                    }
                } else {
                    let mut s: Vec<(CudaSlice<f32>, CudaSlice<f32>)> =
                        (0..n).map(|_| Ok((up(&x)?, if backward { up(&x)? } else { up(&[0.0])? }))).collect::<Result<_>>()?;
                    row(&format!("ce_fwd_{gname}_f32"), fwd_bytes, n, time_per_launch(gpu, n, |i| gpu.cross_entropy_fwd_f32(g, &s[i].0, &gt, &mut loss, &mut lse, nr, v)));
                    if backward {
                        row(&format!("ce_bwd_{gname}_f32"), bwd_bytes, n, time_per_launch(gpu, n, |i| {
                            let (x, d) = &mut s[i];
                            gpu.cross_entropy_bwd_f32(g, x, &gt, &lse, d, nr, v, 1e-3)
                        }));
                    }
                }
            }
        }
        "adamw" => {
            dims(shape, 1, "N", op)?;
            let len = shape[0];
            let n = sets_for(gpu, 4 * 4 * len);
            let (p, g, m) = (rand_vec(&mut rng, len, 1.0), rand_vec(&mut rng, len, 1.0), rand_vec(&mut rng, len, 0.1));
            let v: Vec<f32> = m.iter().map(|x| x * x).collect();
            let mut s: Vec<[CudaSlice<f32>; 4]> = (0..n).map(|_| Ok([up(&p)?, up(&g)?, up(&m)?, up(&v)?])).collect::<Result<_>>()?;
            let h = crate::reference::AdamWParams { lr: 3e-4, b1: 0.9, b2: 0.95, eps: 1e-8, wd: 0.1, step: 10 };
            row("adamw_f32", 7.0 * 4.0 * len as f64, n, time_per_launch(gpu, n, |i| {
                let [p, g, m, v] = &mut s[i];
                gpu.adamw(p, g, m, v, h)
            }));
            drop(s);
            // A model's parameters: GPT-2 124M's 148 tensors, one launch each vs one in all.
            let (d, layers) = (768usize, 12);
            let mut sizes = vec![50257 * d, 1024 * d];
            for _ in 0..layers {
                sizes.extend([d, d, d * 3 * d, 3 * d, d * d, d, d, d, d * 4 * d, 4 * d, 4 * d * d, d]);
            }
            sizes.extend([d, d]);
            let total: usize = sizes.iter().sum();
            let fill = |n: usize, x: f32| gpu.stream.clone_htod(&vec![x; n]).map_err(|e| Error::cuda("upload", e));
            let mut t: Vec<[CudaSlice<f32>; 4]> = sizes.iter().map(|&n| Ok([fill(n, 0.5)?, fill(n, 0.01)?, fill(n, 1e-3)?, fill(n, 1e-6)?])).collect::<Result<_>>()?;
            let what = format!("GPT-2 124M's {} tensors", sizes.len());
            let bytes = 7.0 * 4.0 * total as f64;
            let per = time_per_launch(gpu, 1, |_| t.iter_mut().try_for_each(|[p, g, m, v]| gpu.adamw(p, g, m, v, h)));
            row(&format!("adamw_f32, a launch per tensor ({what})"), bytes, 1, per);
            let multi = time_per_launch(gpu, 1, |_| {
                let mut list: Vec<_> = t.iter_mut().map(|[p, g, m, v]| crate::adamw::AdamwTensor { p, g, m, v, h }).collect();
                gpu.adamw_multi(&mut list, 0.9, 0.95, 1e-8)
            });
            row(&format!("adamw_multi_f32, one launch ({what})"), bytes, 1, multi);
        }
        "embedding" => {
            dims(shape, 3, "NxVxD", op)?;
            let (nr, v, d) = (shape[0], shape[1], shape[2]);
            let nd = (nr * d) as f64;
            let ids: Vec<i64> = (0..nr).map(|_| rng.gen_range(0..v) as i64).collect();
            let gi = gpu.stream.clone_htod(&ids).map_err(|e| Error::cuda("bench upload", e))?;
            let table = rand_vec(&mut rng, v * d, 1.0);
            let n = sets_for(gpu, 4 * (v * d + nr * d));
            let mut s: Vec<(CudaSlice<f32>, CudaSlice<f32>)> = (0..n).map(|_| Ok((up(&table)?, up(&table[..nr * d])?))).collect::<Result<_>>()?;
            // Forward: ids, the N table rows read, N rows written.
            row("embedding_fwd_f32", nr as f64 * 8.0 + 2.0 * 4.0 * nd, n, time_per_launch(gpu, n, |i| {
                let (t, o) = &mut s[i];
                gpu.embedding_fwd(&gi, t, o, nr, v, d)
            }));
            if backward {
                // Backward: ids, dout read, each touched dtable row read and written (repeats counted).
                let bytes = nr as f64 * 8.0 + 3.0 * 4.0 * nd;
                row("embedding_bwd_atomic_f32", bytes, n, time_per_launch(gpu, n, |i| {
                    let (t, o) = &mut s[i];
                    gpu.embedding_bwd_atomic(&gi, o, t, nr, v, d)
                }));
                let plan = gpu.embedding_bwd_plan(&ids, v)?;
                row("embedding_bwd_sorted_f32 (deterministic)", bytes + nr as f64 * 4.0, n, time_per_launch(gpu, n, |i| {
                    let (t, o) = &mut s[i];
                    gpu.embedding_bwd_sorted(&plan, o, t, d)
                }));
            }
        }
        "sum-rows" => {
            dims(shape, 2, "RxC", op)?;
            let (r, c) = (shape[0], shape[1]);
            let n = sets_for(gpu, 4 * r * c);
            let x = rand_vec(&mut rng, r * c, 1.0);
            let s: Vec<CudaSlice<f32>> = (0..n).map(|_| up(&x)).collect::<Result<_>>()?;
            let (mut o, mut scratch) = (up(&vec![0.0; c])?, up(&vec![0.0; gpu.sum_rows_scratch_len(r, c).max(1)])?);
            row("sum_rows (bias grad)", 4.0 * (r * c + c) as f64, n, time_per_launch(gpu, n, |i| gpu.sum_rows(&s[i], &mut o, &mut scratch, r, c)));
        }
        "l2norm" => {
            dims(shape, 2, "KxN (K buffers of N)", op)?;
            let (k, len) = (shape[0], shape[1]);
            let n = sets_for(gpu, 4 * k * len);
            let x = rand_vec(&mut rng, len, 1.0);
            let bufs: Vec<Vec<CudaSlice<f32>>> = (0..n).map(|_| (0..k).map(|_| up(&x)).collect::<Result<_>>()).collect::<Result<_>>()?;
            let refs_: Vec<Vec<&CudaSlice<f32>>> = bufs.iter().map(|b| b.iter().collect()).collect();
            let mut plans: Vec<L2NormPlan> = refs_.iter().map(|r| gpu.l2norm_plan(r)).collect::<Result<_>>()?;
            row("l2norm (partial + finish)", 4.0 * (k * len) as f64, n, time_per_launch(gpu, n, |i| gpu.l2norm(&mut plans[i], &refs_[i])));
        }
        "binary" => {
            dims(shape, 2, "RxC", op)?;
            let (r, c) = (shape[0], shape[1]);
            let n = sets_for(gpu, 3 * 4 * r * c);
            let a = rand_vec(&mut rng, r * c, 2.0);
            let b: Vec<f32> = rand_vec(&mut rng, r * c, 2.0).into_iter().map(|v| v + v.signum() * 0.5).collect();
            let mut s: Vec<[CudaSlice<f32>; 3]> = (0..n).map(|_| Ok([up(&a)?, up(&b)?, up(&a)?])).collect::<Result<_>>()?;
            for op in BinaryOp::ALL {
                row(&format!("binary_{}_f32_contig", op.name()), 3.0 * 4.0 * (r * c) as f64, n, time_per_launch(gpu, n, |i| {
                    let [x, y, o] = &mut s[i];
                    gpu.binary(op, x, &[c, 1], y, &[c, 1], o, &[r, c])
                }));
            }
            row("binary_add_f32 bias row [R,C]+[1,C]", 4.0 * (2 * r * c + c) as f64, n, time_per_launch(gpu, n, |i| {
                let [x, y, o] = &mut s[i];
                gpu.binary(BinaryOp::Add, x, &[c, 1], y, &[0, 1], o, &[r, c])
            }));
            row("binary_mul_f32 column [R,C]*[R,1]", 4.0 * (2 * r * c + r) as f64, n, time_per_launch(gpu, n, |i| {
                let [x, y, o] = &mut s[i];
                gpu.binary(BinaryOp::Mul, x, &[c, 1], y, &[1, 0], o, &[r, c])
            }));
        }
        "cast" => {
            // f32 [R, C] to bf16 bits: read 4 bytes, write 2 per element. As stored, then the
            // transposed view [C, R] (a backward's Xᵀ) by the strided kernel and by the tiled one.
            dims(shape, 2, "RxC", op)?;
            let (r, c) = (shape[0], shape[1]);
            let bytes = 6.0 * (r * c) as f64;
            let n = sets_for(gpu, 6 * r * c);
            let x = rand_vec(&mut rng, r * c, 2.0);
            let mut s: Vec<(CudaSlice<f32>, CudaSlice<u16>)> = (0..n).map(|_| Ok((up(&x)?, up16(&vec![0u16; r * c])?))).collect::<Result<_>>()?;
            row("cast_bf16_strided, row-major", bytes, n, time_per_launch(gpu, n, |i| {
                let (x, y) = &mut s[i];
                gpu.cast_bf16_strided(x, 0, &[r, c], &[c, 1], y, c, c)
            }));
            row("cast_bf16_strided, transposed view", bytes, n, time_per_launch(gpu, n, |i| {
                let (x, y) = &mut s[i];
                gpu.cast_bf16_strided(x, 0, &[c, r], &[1, c], y, r, r)
            }));
            let t = crate::copy::TransposedBatch { batch: 1, rows: c, cols: r, ld: c, batch_stride: 0 };
            row("cast_bf16_transposed (tiled), transposed view", bytes, n, time_per_launch(gpu, n, |i| {
                let (x, y) = &mut s[i];
                gpu.cast_bf16_transposed(x, 0, t, y, r)
            }));
        }
        other => return Err(Error::Other(format!("bench: unknown memory-bound op {other:?} (known: {})", BENCH_OPS.join(", ")))),
    }
    add_same_size_copies(gpu, &mut out);
    Ok(out)
}
