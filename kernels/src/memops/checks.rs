//! The self-test of this module's kernels: each against the f64 references of [`super::refs`]
//! on fresh random inputs, outputs poisoned with NaN first.

use super::*;
use crate::device::Gpu;
use crate::reference::{compare, from_bf16_bits, to_bf16_bits, ErrStats};
use crate::selftest::{Check, TOL_BF16, TOL_F32};
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, DeviceRepr};
use rand::{rngs::StdRng, Rng, SeedableRng};

struct Ctx<'a> {
    gpu: &'a Gpu,
    rng: StdRng,
}

impl Ctx<'_> {
    /// Uniform in [lo, hi), never exactly zero.
    fn rand(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        crate::reference::rand_nonzero(&mut self.rng, n, lo, hi)
    }
    fn up<T: DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>> {
        self.gpu.stream.clone_htod(v).map_err(|e| Error::cuda("upload", e))
    }
    fn nan(&self, n: usize) -> Result<CudaSlice<f32>> {
        self.up(&vec![f32::NAN; n.max(1)])
    }
    fn down<T: DeviceRepr + Default + Clone>(&self, s: &CudaSlice<T>) -> Result<Vec<T>> {
        self.gpu.stream.clone_dtoh(s).map_err(|e| Error::cuda("download (kernel fault?)", e))
    }
    /// Targets in 0..v with about `ignored` of them -100 (the first row always kept).
    fn targets(&mut self, n: usize, v: usize, ignored: f64) -> Vec<i64> {
        (0..n).map(|i| if i > 0 && self.rng.gen_bool(ignored) { -100 } else { self.rng.gen_range(0..v) as i64 }).collect()
    }
}

fn case(out: &mut Vec<Check>, kernel: &str, shape: &str, precision: &'static str, f: impl FnOnce() -> Result<Vec<Check>>) {
    match f() {
        Ok(rows) => out.extend(rows),
        Err(e) => out.push(Check::failed(kernel, shape.to_string(), precision, e.to_string())),
    }
}

fn exact(got: &[f32], want: &crate::reference::Ref) -> ErrStats {
    compare(got, want)
}

/// Every kernel of this file against the f64 references; launch/sync errors become failed rows.
pub fn checks(gpu: &Gpu) -> Vec<Check> {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) ^ 0x3e3_0b5;
    let mut c = Ctx { gpu, rng: StdRng::seed_from_u64(seed) };
    let mut out = Vec::new();

    // Cross-entropy: both group shapes at every size, f32 and bf16 logits.
    for (n, v) in [(1usize, 7usize), (33, 7), (33, 1000), (5, 4097), (1, 50_257), (33, 50_257), (4, 33)] {
        let shape = format!("N={n} V={v}");
        // Rows offset by up to +-20 (the max subtraction matters), values in [-8, 8).
        let mut x = c.rand(n * v, -8.0, 8.0);
        for row in x.chunks_mut(v) {
            let off = c.rng.gen_range(-20.0f32..20.0);
            row.iter_mut().for_each(|e| *e += off);
        }
        let t = if n == 4 { vec![-100i64; n] } else { c.targets(n, v, 0.25) }; // N=4: all ignored
        let kept = t.iter().filter(|&&i| i >= 0).count();
        let scale = c.rng.gen_range(0.5f32..2.0) / kept.max(1) as f32;
        for group in [CeGroup::Warp, CeGroup::Block] {
            let gname = if group == CeGroup::Warp { "warp" } else { "block" };
            let sh = format!("{shape} ignored={}", n - kept);
            case(&mut out, &format!("ce_{gname}_f32"), &sh, "f32", || {
                let f = refs::ce_forward(&x, &t, v);
                let (gx, gt) = (c.up(&x)?, c.up(&t)?);
                let (mut gl, mut gs, mut gm) = (c.nan(n)?, c.nan(n)?, c.nan(2)?);
                gpu.cross_entropy_fwd_f32(group, &gx, &gt, &mut gl, &mut gs, n, v)?;
                gpu.cross_entropy_mean(&gl, &gt, n, &mut gm)?;
                gpu.sync(&format!("ce_fwd_{gname}_f32"))?;
                let lse = c.down(&gs)?;
                let (mref, kref) = refs::ce_mean(&f, &t);
                let m = c.down(&gm)?;
                let mut rows = vec![
                    Check::new(&format!("ce_fwd_{gname}_f32 (loss)"), sh.clone(), "f32", compare(&c.down(&gl)?, &f.loss), TOL_F32),
                    Check::new(&format!("ce_fwd_{gname}_f32 (lse)"), sh.clone(), "f32", compare(&lse, &f.lse), TOL_F32),
                    Check::new("ce_loss_mean_f32 (mean)", sh.clone(), "f32", compare(&m[..1], &mref), TOL_F32),
                    Check::new("ce_loss_mean_f32 (kept)", sh.clone(), "exact", compare(&m[1..2], &crate::reference::Ref { value: vec![kref], scale: vec![0.0] }), 0.0),
                ];
                let mut gd = c.nan(n * v)?;
                gpu.cross_entropy_bwd_f32(group, &gx, &gt, &gs, &mut gd, n, v, scale)?;
                gpu.sync(&format!("ce_bwd_{gname}_f32"))?;
                let b = refs::ce_backward(&x, &t, &lse, v, scale);
                rows.push(Check::new(&format!("ce_bwd_{gname}_f32"), sh.clone(), "f32", compare(&c.down(&gd)?, &b), TOL_F32));
                Ok(rows)
            });
            case(&mut out, &format!("ce_{gname}_bf16"), &sh, "bf16", || {
                // The reference sees the same bf16 logits: the forward differs only by f32
                // arithmetic; the gradient also by its rounding to bf16.
                let x16 = to_bf16_bits(&x);
                let xr = from_bf16_bits(&x16);
                let f = refs::ce_forward(&xr, &t, v);
                let (gx, gt) = (c.up(&x16)?, c.up(&t)?);
                let (mut gl, mut gs) = (c.nan(n)?, c.nan(n)?);
                gpu.cross_entropy_fwd_bf16(group, &gx, &gt, &mut gl, &mut gs, n, v)?;
                gpu.sync(&format!("ce_fwd_{gname}_bf16"))?;
                let lse = c.down(&gs)?;
                let mut rows = vec![
                    Check::new(&format!("ce_fwd_{gname}_bf16 (loss)"), sh.clone(), "bf16->f32", compare(&c.down(&gl)?, &f.loss), TOL_F32),
                    Check::new(&format!("ce_fwd_{gname}_bf16 (lse)"), sh.clone(), "bf16->f32", compare(&lse, &f.lse), TOL_F32),
                ];
                let mut gd = c.up(&vec![0x7fc0u16; n * v])?;
                gpu.cross_entropy_bwd_bf16(group, &gx, &gt, &gs, &mut gd, n, v, scale)?;
                gpu.sync(&format!("ce_bwd_{gname}_bf16"))?;
                let b = refs::ce_backward(&xr, &t, &lse, v, scale);
                rows.push(Check::new(&format!("ce_bwd_{gname}_bf16"), sh.clone(), "bf16", compare(&from_bf16_bits(&c.down(&gd)?), &b), TOL_BF16));
                Ok(rows)
            });
        }
    }

    // The scaled forms (PPO's per-token log-probs at a temperature): logits times a, each
    // row's entropy, and per-row upstream gradients (of both signs, one row's 0).
    for (n, v) in [(33usize, 1000usize), (5, 4097), (9, 50_257)] {
        let a = 1.0 / c.rng.gen_range(0.5f32..1.5);
        let x = c.rand(n * v, -8.0, 8.0);
        let t = c.targets(n, v, 0.25);
        let mut gs = c.rand(n, -2.0, 2.0);
        gs[n / 2] = 0.0;
        for group in [CeGroup::Warp, CeGroup::Block] {
            let gname = if group == CeGroup::Warp { "warp" } else { "block" };
            let sh = format!("N={n} V={v} a={a:.3}");
            for bf in [false, true] {
                let dt = if bf { "bf16" } else { "f32" };
                case(&mut out, &format!("ce_scaled_{gname}_{dt}"), &sh, if bf { "bf16" } else { "f32" }, || {
                    let x16 = to_bf16_bits(&x);
                    let xr = if bf { from_bf16_bits(&x16) } else { x.clone() };
                    let f = refs::ce_forward_scaled(&xr, &t, v, a);
                    let (gt, ggs) = (c.up(&t)?, c.up(&gs)?);
                    let (mut gl, mut gl2, mut ge) = (c.nan(n)?, c.nan(n)?, c.nan(n)?);
                    let (loss, lse, ent, dx) = if bf {
                        let gx = c.up(&x16)?;
                        gpu.cross_entropy_fwd_scaled_bf16(group, &gx, &gt, &mut gl, &mut gl2, Some(&mut ge), n, v, a)?;
                        let mut gd = c.up(&vec![0x7fc0u16; n * v])?;
                        gpu.cross_entropy_bwd_scaled_bf16(group, &gx, &gt, &gl2, Some(&ggs), &mut gd, n, v, a, -a)?;
                        gpu.sync(&format!("ce_scaled_{gname}_bf16"))?;
                        (c.down(&gl)?, c.down(&gl2)?, c.down(&ge)?, from_bf16_bits(&c.down(&gd)?))
                    } else {
                        let gx = c.up(&x)?;
                        gpu.cross_entropy_fwd_scaled_f32(group, &gx, &gt, &mut gl, &mut gl2, Some(&mut ge), n, v, a)?;
                        let mut gd = c.nan(n * v)?;
                        gpu.cross_entropy_bwd_scaled_f32(group, &gx, &gt, &gl2, Some(&ggs), &mut gd, n, v, a, -a)?;
                        gpu.sync(&format!("ce_scaled_{gname}_f32"))?;
                        (c.down(&gl)?, c.down(&gl2)?, c.down(&ge)?, c.down(&gd)?)
                    };
                    let b = refs::ce_backward_scaled(&xr, &t, &lse, v, a, -a, Some(&gs));
                    Ok(vec![
                        Check::new(&format!("ce_fwd_{gname}_{dt} scaled (loss)"), sh.clone(), "f32", compare(&loss, &f.loss), TOL_F32),
                        Check::new(&format!("ce_fwd_{gname}_{dt} scaled (lse)"), sh.clone(), "f32", compare(&lse, &f.lse), TOL_F32),
                        Check::new(&format!("ce_fwd_{gname}_{dt} scaled (entropy)"), sh.clone(), "f32", compare(&ent, &f.ent), TOL_F32),
                        Check::new(&format!("ce_bwd_{gname}_{dt} scaled, row gradients"), sh.clone(), dt, compare(&dx, &b), if bf { TOL_BF16 } else { TOL_F32 }),
                    ])
                });
            }
        }
    }

    // Embedding: repeated ids (drawn from a few distinct values), D with and without % 4.
    for (n, v, d, distinct) in [(1usize, 7usize, 4usize, 7usize), (33, 1000, 768, 5), (33, 7, 33, 7), (1000, 50, 64, 3), (64, 50_257, 64, 40), (64, 100, 1600, 10), (9, 11, 1, 2)] {
        let shape = format!("N={n} V={v} D={d}");
        case(&mut out, "embedding", &shape, "f32", || {
            let pool: Vec<i64> = (0..distinct).map(|_| c.rng.gen_range(0..v) as i64).collect();
            let ids: Vec<i64> = (0..n).map(|_| pool[c.rng.gen_range(0..pool.len())]).collect();
            let (table, dout, init) = (c.rand(v * d, -1.0, 1.0), c.rand(n * d, -1.0, 1.0), c.rand(v * d, -1.0, 1.0));
            let (gi, gtab, gdo) = (c.up(&ids)?, c.up(&table)?, c.up(&dout)?);
            let mut go = c.nan(n * d)?;
            gpu.embedding_fwd(&gi, &gtab, &mut go, n, v, d)?;
            gpu.sync("embedding_fwd_f32")?;
            let mut rows = vec![Check::new("embedding_fwd_f32", shape.clone(), "exact", exact(&c.down(&go)?, &refs::embedding_fwd(&ids, &table, d)), 0.0)];
            // Backward adds into dtable: start from random values, not NaN.
            let want = refs::embedding_bwd(&init, &ids, &dout, d);
            let mut gt = c.up(&init)?;
            gpu.embedding_bwd_atomic(&gi, &gdo, &mut gt, n, v, d)?;
            gpu.sync("embedding_bwd_atomic_f32")?;
            rows.push(Check::new("embedding_bwd_atomic_f32", format!("{shape} distinct={distinct}"), "f32", compare(&c.down(&gt)?, &want), TOL_F32));
            let plan = gpu.embedding_bwd_plan(&ids, v)?;
            let mut gt = c.up(&init)?;
            gpu.embedding_bwd_sorted(&plan, &gdo, &mut gt, d)?;
            gpu.sync("embedding_bwd_sorted_f32")?;
            let first = c.down(&gt)?;
            rows.push(Check::new("embedding_bwd_sorted_f32", format!("{shape} distinct={distinct}"), "f32", compare(&first, &want), TOL_F32));
            // Deterministic: a second run is bit-identical.
            let mut gt = c.up(&init)?;
            gpu.embedding_bwd_sorted(&plan, &gdo, &mut gt, d)?;
            gpu.sync("embedding_bwd_sorted_f32")?;
            let again = c.down(&gt)?;
            let diff = first.iter().zip(&again).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            rows.push(Check::new("embedding_bwd_sorted_f32 (bitwise rerun)", shape.clone(), "exact", ErrStats { max_rel: diff as f64, ..Default::default() }, 0.0));
            Ok(rows)
        });
    }

    // Column sums (bias gradient): one split and many, float4 and scalar columns.
    for (r, cc) in [(1usize, 1usize), (33, 7), (1000, 768), (4097, 1001), (8192, 3072), (64, 4), (70_000, 3)] {
        let shape = format!("{r}x{cc}");
        case(&mut out, "sum_rows", &shape, "f32", || {
            let x = c.rand(r * cc, -1.0, 1.0);
            let gx = c.up(&x)?;
            let (mut go, mut gs) = (c.nan(cc)?, c.nan(gpu.sum_rows_scratch_len(r, cc))?);
            gpu.sum_rows(&gx, &mut go, &mut gs, r, cc)?;
            gpu.sync("sum_rows")?;
            let sh = format!("{shape} scratch={}", gpu.sum_rows_scratch_len(r, cc));
            Ok(vec![Check::new(if cc % 4 == 0 { "sum_rows_vec4_f32" } else { "sum_rows_f32" }, sh, "f32", compare(&c.down(&go)?, &refs::sum_rows(&x, r, cc)), TOL_F32)])
        });
    }

    // Global L2 norm: many buffers in one launch, including misaligned views.
    for lens in [vec![1usize], vec![7, 1000, 12_345], vec![(1 << 20) + 3, 5, 768 * 3072, 33, 1]] {
        let shape = format!("buffers={lens:?}");
        case(&mut out, "l2norm", &shape, "f32", || {
            let host: Vec<Vec<f32>> = lens.iter().map(|&n| c.rand(n, -1.0, 1.0)).collect();
            let dev: Vec<CudaSlice<f32>> = host.iter().map(|h| c.up(h)).collect::<Result<_>>()?;
            let refs_in: Vec<&[f32]> = host.iter().map(|h| &h[..]).collect();
            let want = refs::l2norm(&refs_in);
            let bufs: Vec<&CudaSlice<f32>> = dev.iter().collect();
            let mut plan = gpu.l2norm_plan(&bufs)?;
            gpu.l2norm(&mut plan, &bufs)?;
            gpu.sync("l2norm")?;
            let mut rows = vec![Check::new("l2norm_partial+finish_f32", shape.clone(), "f32", compare(&c.down(&plan.out)?, &want), TOL_F32)];
            // Views at odd offsets: the scalar prefix before 16-byte alignment.
            if host.iter().all(|h| h.len() < 4) {
                return Ok(rows);
            }
            let big = &dev[dev.len() - 1 - (dev.len() > 1) as usize];
            let views = [big.slice(1..), big.slice(3..big.len().clamp(3, 1000))];
            let vrefs: Vec<&cudarc::driver::CudaView<f32>> = views.iter().collect();
            let hb = &host[dev.len() - 1 - (dev.len() > 1) as usize];
            let want = refs::l2norm(&[&hb[1..], &hb[3..hb.len().clamp(3, 1000)]]);
            let mut plan = gpu.l2norm_plan(&vrefs)?;
            gpu.l2norm(&mut plan, &vrefs)?;
            gpu.sync("l2norm (views)")?;
            rows.push(Check::new("l2norm_partial+finish_f32 (offset views)", shape.clone(), "f32", compare(&c.down(&plan.out)?, &want), TOL_F32));
            Ok(rows)
        });
    }

    // Broadcast binary ops: (shape, a strides, b strides, a len, b len).
    type Case<'a> = (&'a str, Vec<usize>, Vec<usize>, Vec<usize>, usize, usize);
    let layouts: Vec<Case> = vec![
        ("contiguous 1", vec![1], vec![1], vec![1], 1, 1),
        ("contiguous 33x1000", vec![33, 1000], vec![1000, 1], vec![1000, 1], 33_000, 33_000),
        ("contiguous 2^20+3", vec![(1 << 20) + 3], vec![1], vec![1], (1 << 20) + 3, (1 << 20) + 3),
        ("bias row [R,C]+[1,C]", vec![257, 768], vec![768, 1], vec![0, 1], 257 * 768, 768),
        ("outer [R,1]+[1,C]", vec![33, 129], vec![1, 0], vec![0, 1], 33, 129),
        ("4-D [2,3,5,7]+[1,3,1,7]", vec![2, 3, 5, 7], vec![105, 35, 7, 1], vec![0, 7, 0, 1], 210, 21),
        ("transposed a [65,33]", vec![65, 33], vec![1, 65], vec![33, 1], 65 * 33, 65 * 33),
        ("scalar b", vec![3, 4, 5], vec![20, 5, 1], vec![0, 0, 0], 60, 1),
        ("last-dim broadcast [1000,5,1]->[1000,5,3]", vec![1000, 5, 3], vec![15, 3, 1], vec![5, 1, 0], 15_000, 5000),
    ];
    for (name, shape, sa, sb, na, nb) in layouts {
        let sh = format!("{name} {shape:?}");
        case(&mut out, "binary", &sh, "f32", || {
            let a = c.rand(na, -4.0, 4.0);
            // b away from 0 (division): magnitude in [0.25, 2), random sign.
            let b: Vec<f32> = c.rand(nb, 0.25, 2.0).into_iter().map(|v| if c.rng.gen_bool(0.5) { -v } else { v }).collect();
            let p = plan_broadcast(&shape, &sa, &sb).map_err(Error::Other)?;
            let (ga, gb) = (c.up(&a)?, c.up(&b)?);
            let mut rows = Vec::new();
            for op in BinaryOp::ALL {
                let mut go = c.nan(p.n)?;
                gpu.binary(op, &ga, &sa, &gb, &sb, &mut go, &shape)?;
                let k = format!("binary_{}_f32{}", op.name(), if p.contiguous { "_contig" } else { "" });
                gpu.sync(&k)?;
                let got = c.down(&go)?;
                rows.push(Check::new(&k, sh.clone(), "f32", compare(&got[..p.n], &refs::binary(op, &a, &b, &p)), TOL_F32));
            }
            Ok(rows)
        });
    }
    out
}
