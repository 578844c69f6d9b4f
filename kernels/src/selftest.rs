//! GPU self-test: every kernel on several shapes (including ones that are not tile
//! multiples), fresh random inputs each run, outputs poisoned with NaN before the
//! launch, compared with the f64 CPU references in [`crate::reference`].

use crate::reference::ErrStats;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub kernel: String,
    pub shape: String,
    pub precision: &'static str,
    pub stats: ErrStats,
    /// Bound on `stats.max_rel`; `stats.norm_rel` must be under 10x this.
    pub tol: f64,
    pub pass: bool,
    /// Launch/sync error, if the kernel did not run at all.
    pub error: Option<String>,
}

pub const TOL_F32: f64 = 1e-5;
pub const TOL_BF16: f64 = 1e-2;

impl Check {
    pub fn new(kernel: &str, shape: String, precision: &'static str, stats: ErrStats, tol: f64) -> Check {
        let pass = stats.non_finite == 0 && stats.max_rel <= tol && stats.norm_rel <= 10.0 * tol;
        Check { kernel: kernel.into(), shape, precision, stats, tol, pass, error: None }
    }
    pub fn failed(kernel: &str, shape: String, precision: &'static str, err: String) -> Check {
        Check { kernel: kernel.into(), shape, precision, stats: ErrStats::default(), tol: 0.0, pass: false, error: Some(err) }
    }
}

#[cfg(feature = "cuda")]
pub use imp::run_checks;
#[cfg(feature = "cuda")]
pub(crate) use imp::Ctx;

#[cfg(not(feature = "cuda"))]
pub fn run_checks(_gpu: &()) -> crate::Result<Vec<Check>> {
    Err(crate::Error::NoCudaFeature)
}

#[cfg(feature = "cuda")]
mod imp {
    use super::*;
    use crate::device::{Gpu, MatmulF32, Stored};
    use crate::rows::RowKernel;
    use crate::reference::{self as r, compare, from_bf16_bits, to_bf16_bits, AdamWParams};
    use crate::{Error, Result};
    use cudarc::driver::CudaSlice;
    use half::bf16;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// What every kernel check needs: the device and a seeded RNG for fresh, non-zero inputs.
    pub(crate) struct Ctx<'a> {
        pub(crate) gpu: &'a Gpu,
        pub(crate) rng: StdRng,
    }

    impl Ctx<'_> {
        /// Uniform in [lo, hi), never exactly zero.
        pub(crate) fn rand(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
            r::rand_nonzero(&mut self.rng, n, lo, hi)
        }
        /// `v` on the device (an empty `v`, such as the attention checks' "no padding" counts,
        /// as one unused element: `Gpu::upload`).
        pub(crate) fn up<T: cudarc::driver::DeviceRepr + Default>(&self, v: &[T]) -> Result<CudaSlice<T>> {
            self.gpu.upload(v).map_err(|e| Error::cuda("upload", e))
        }
        pub(crate) fn poisoned(&self, n: usize) -> Result<CudaSlice<f32>> {
            self.up(&vec![f32::NAN; n])
        }
        pub(crate) fn poisoned_bf16(&self, n: usize) -> Result<CudaSlice<u16>> {
            self.up(&vec![bf16::NAN.to_bits(); n])
        }
        pub(crate) fn down(&self, s: &CudaSlice<f32>) -> Result<Vec<f32>> {
            self.gpu.stream.clone_dtoh(s).map_err(|e| Error::cuda("download", e))
        }
        pub(crate) fn down_bf16(&self, s: &CudaSlice<u16>) -> Result<Vec<f32>> {
            let bits = self.gpu.stream.clone_dtoh(s).map_err(|e| Error::cuda("download", e))?;
            Ok(from_bf16_bits(&bits))
        }
    }

    /// A row kernel's activation type on the host: f32, or bf16 bits (u16).
    trait Act: crate::device::RowElem + Clone + Default {
        const POISON: Self;
        /// `v` as stored (rounded for bf16).
        fn store(v: &[f32]) -> Vec<Self>;
        fn load(v: &[Self]) -> Vec<f32>;
    }
    impl Act for f32 {
        const POISON: f32 = f32::NAN;
        fn store(v: &[f32]) -> Vec<f32> {
            v.to_vec()
        }
        fn load(v: &[f32]) -> Vec<f32> {
            v.to_vec()
        }
    }
    impl Act for u16 {
        const POISON: u16 = 0x7fc0; // bf16 NaN
        fn store(v: &[f32]) -> Vec<u16> {
            to_bf16_bits(v)
        }
        fn load(v: &[u16]) -> Vec<f32> {
            from_bf16_bits(v)
        }
    }

    /// Layernorm v2 with x (and dx) stored as `X`, y (and dy) as `Y`, against the reference on
    /// the stored inputs: bf16/bf16, or f32/bf16 (autocast's). Outputs poisoned first.
    fn ln_v2_typed<X: Act, Y: Act>(out: &mut Vec<Check>, c: &mut Ctx, gpu: &Gpu, rows: usize, ch: usize, w: &str) {
        let types = if X::NAME == Y::NAME { X::NAME.to_string() } else { format!("{}_{}", X::NAME, Y::NAME) };
        let (fwd, bwd) = (format!("layernorm_fwd_v2_{types}{w}"), format!("layernorm_bwd_v2_{types}{w}"));
        let tol = |name: &str| if name == "f32" { TOL_F32 } else { TOL_BF16 };
        let (x_label, y_label): (&'static str, &'static str) = if X::NAME == "f32" { ("f32", "f32->bf16") } else { ("bf16->f32", "bf16") };
        let shape = format!("{rows}x{ch}");
        case(out, &fwd, shape.clone(), y_label, || {
            let x = X::store(&c.rand(rows * ch, -2.0, 2.0).into_iter().map(|v| v + 3.0).collect::<Vec<f32>>());
            let dy = Y::store(&c.rand(rows * ch, -1.0, 1.0));
            let (gamma, beta) = (c.rand(ch, 0.5, 1.5), c.rand(ch, -0.5, 0.5));
            let (gx, gg, gb, gdy) = (c.up(&x)?, c.up(&gamma)?, c.up(&beta)?, c.up(&dy)?);
            let (mut gy, mut gm, mut gr) = (c.up(&vec![Y::POISON; rows * ch])?, c.poisoned(rows)?, c.poisoned(rows)?);
            gpu.layernorm_fwd_with(RowKernel::V2, &gx, &gg, &gb, &mut gy, &mut gm, &mut gr, rows, ch, 1e-5)?;
            gpu.sync(&fwd)?;
            let (x, dy) = (X::load(&x), Y::load(&dy));
            let f = r::layernorm_fwd(&x, &gamma, &beta, rows, ch, 1e-5);
            let (mean, rstd) = (c.down(&gm)?, c.down(&gr)?);
            let down = |s: &CudaSlice<Y>| -> Result<Vec<f32>> { Ok(Y::load(&gpu.stream.clone_dtoh(s).map_err(|e| Error::cuda("download", e))?)) };
            let mut rows_out = vec![
                Check::new(&format!("{fwd} (y)"), shape.clone(), y_label, compare(&down(&gy)?, &f.y), tol(Y::NAME)),
                Check::new(&format!("{fwd} (mean)"), shape.clone(), x_label, compare(&mean, &f.mean), TOL_F32),
                Check::new(&format!("{fwd} (rstd)"), shape.clone(), x_label, compare(&rstd, &f.rstd), TOL_F32),
            ];
            let (mut gdx, mut gdg, mut gdb) = (c.up(&vec![X::POISON; rows * ch])?, c.poisoned(ch)?, c.poisoned(ch)?);
            gpu.layernorm_bwd_with(RowKernel::V2, &gx, &gg, &gm, &gr, &gdy, &mut gdx, &mut gdg, &mut gdb, rows, ch)?;
            gpu.sync(&bwd)?;
            let b = r::layernorm_bwd(&x, &gamma, &mean, &rstd, &dy, rows, ch);
            let dx = X::load(&gpu.stream.clone_dtoh(&gdx).map_err(|e| Error::cuda("download", e))?);
            let grads = if X::NAME == "f32" { "bf16->f32" } else { "bf16" };
            rows_out.push(Check::new(&format!("{bwd} (dx)"), shape.clone(), grads, compare(&dx, &b.dx), tol(X::NAME)));
            rows_out.push(Check::new(&format!("{bwd} + finish (dgamma)"), shape.clone(), "bf16->f32", compare(&c.down(&gdg)?, &b.dgamma), TOL_F32));
            rows_out.push(Check::new(&format!("{bwd} + finish (dbeta)"), shape.clone(), "bf16->f32", compare(&c.down(&gdb)?, &b.dbeta), TOL_F32));
            Ok(rows_out)
        });
    }

    /// Runs one case; a launch or sync error becomes a failed row instead of aborting the run.
    fn case(out: &mut Vec<Check>, kernel: &str, shape: String, precision: &'static str, f: impl FnOnce() -> Result<Vec<Check>>) {
        match f() {
            Ok(rows) => out.extend(rows),
            Err(e) => out.push(Check::failed(kernel, shape, precision, e.to_string())),
        }
    }

    pub fn run_checks(gpu: &Gpu) -> Result<Vec<Check>> {
        let seed: u64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        let mut c = Ctx { gpu, rng: StdRng::seed_from_u64(seed) };
        let mut out = Vec::new();

        for n in [1usize, 1000, 12_345, (1 << 20) + 3] {
            case(&mut out, "gelu_fwd_f32", format!("n={n}"), "f32", || {
                let x = c.rand(n, -6.0, 6.0);
                let (dx_, mut dy_) = (c.up(&x)?, c.poisoned(n)?);
                gpu.gelu_fwd(&dx_, &mut dy_)?;
                gpu.sync("gelu_fwd_f32")?;
                Ok(vec![Check::new("gelu_fwd_f32", format!("n={n}"), "f32", compare(&c.down(&dy_)?, &r::gelu_fwd(&x)), TOL_F32)])
            });
            case(&mut out, "gelu_bwd_f32", format!("n={n}"), "f32", || {
                let (x, dy) = (c.rand(n, -6.0, 6.0), c.rand(n, -1.0, 1.0));
                let (gx, gdy, mut gdx) = (c.up(&x)?, c.up(&dy)?, c.poisoned(n)?);
                gpu.gelu_bwd(&gx, &gdy, &mut gdx)?;
                gpu.sync("gelu_bwd_f32")?;
                Ok(vec![Check::new("gelu_bwd_f32", format!("n={n}"), "f32", compare(&c.down(&gdx)?, &r::gelu_bwd(&x, &dy)), TOL_F32)])
            });
            // bf16 storage: the reference sees the same rounded inputs.
            case(&mut out, "gelu_bf16", format!("n={n}"), "bf16", || {
                let (x16, dy16) = (to_bf16_bits(&c.rand(n, -6.0, 6.0)), to_bf16_bits(&c.rand(n, -1.0, 1.0)));
                let (x, dy) = (from_bf16_bits(&x16), from_bf16_bits(&dy16));
                let (gx, gdy, mut gy, mut gdx) = (c.up(&x16)?, c.up(&dy16)?, c.poisoned_bf16(n)?, c.poisoned_bf16(n)?);
                gpu.gelu_fwd(&gx, &mut gy)?;
                gpu.gelu_bwd(&gx, &gdy, &mut gdx)?;
                gpu.sync("gelu_fwd_bf16, gelu_bwd_bf16")?;
                Ok(vec![
                    Check::new("gelu_fwd_bf16", format!("n={n}"), "bf16", compare(&c.down_bf16(&gy)?, &r::gelu_fwd(&x)), TOL_BF16),
                    Check::new("gelu_bwd_bf16", format!("n={n}"), "bf16", compare(&c.down_bf16(&gdx)?, &r::gelu_bwd(&x, &dy)), TOL_BF16),
                ])
            });
        }

        // Row kernels: v1 at every shape, v2 (rows in registers) where the row fits its builds.
        let versions = |width: usize| {
            let mut v = vec![(RowKernel::V1, None)];
            if let Some(e) = RowKernel::v2_entry("", width) {
                v.push((RowKernel::V2, Some(e)));
            }
            v
        };
        for (rows, cols) in [(1usize, 1usize), (7, 33), (64, 1000), (300, 768), (5, 1025), (33, 2048), (130, 4097), (3, 50_257)] {
            let shape = format!("{rows}x{cols}");
            for (v, w) in versions(cols) {
                let name = w.map_or("softmax_fwd_f32".to_string(), |w| format!("softmax_fwd_v2_f32{w}"));
                case(&mut out, &name, shape.clone(), "f32", || {
                    let x = c.rand(rows * cols, -8.0, 8.0);
                    let (gx, mut gy) = (c.up(&x)?, c.poisoned(rows * cols)?);
                    gpu.softmax_fwd_with(v, &gx, &mut gy, rows, cols)?;
                    gpu.sync(&name)?;
                    Ok(vec![Check::new(&name, shape.clone(), "f32", compare(&c.down(&gy)?, &r::softmax(&x, rows, cols)), TOL_F32)])
                });
            }
            // bf16 rows (v2): the reference sees the same bf16-rounded input.
            let Some(w) = RowKernel::v2_entry("", cols) else { continue };
            let name = format!("softmax_fwd_v2_bf16{w}");
            case(&mut out, &name, shape.clone(), "bf16", || {
                let x16 = to_bf16_bits(&c.rand(rows * cols, -8.0, 8.0));
                let (gx, mut gy) = (c.up(&x16)?, c.poisoned_bf16(rows * cols)?);
                gpu.softmax_fwd_with(RowKernel::V2, &gx, &mut gy, rows, cols)?;
                gpu.sync(&name)?;
                Ok(vec![Check::new(&name, shape.clone(), "bf16", compare(&c.down_bf16(&gy)?, &r::softmax(&from_bf16_bits(&x16), rows, cols)), TOL_BF16)])
            });
        }

        for (rows, ch) in [(3usize, 5usize), (37, 768), (256, 1600), (1000, 33), (4100, 96), (9, 2048), (5, 2049)] {
            let shape = format!("{rows}x{ch}");
            for (v, w) in versions(ch) {
                let (fwd, bwd) = match &w {
                    None => ("layernorm_fwd_f32".to_string(), ["layernorm_bwd_dx_f32".to_string(), "layernorm_bwd_dparams_f32".to_string()]),
                    Some(w) => (format!("layernorm_fwd_v2_f32{w}"), [format!("layernorm_bwd_v2_f32{w}"), format!("layernorm_bwd_v2_f32{w} + finish")]),
                };
                case(&mut out, &fwd, shape.clone(), "f32", || {
                    let eps = 1e-5f32;
                    // Offset rows so the mean is not ~0 (exercises the centred variance).
                    let x: Vec<f32> = c.rand(rows * ch, -2.0, 2.0).into_iter().map(|v| v + 3.0).collect();
                    let (gamma, beta, dy) = (c.rand(ch, 0.5, 1.5), c.rand(ch, -0.5, 0.5), c.rand(rows * ch, -1.0, 1.0));
                    let (gx, gg, gb, gdy) = (c.up(&x)?, c.up(&gamma)?, c.up(&beta)?, c.up(&dy)?);
                    let (mut gy, mut gm, mut gr) = (c.poisoned(rows * ch)?, c.poisoned(rows)?, c.poisoned(rows)?);
                    gpu.layernorm_fwd_with(v, &gx, &gg, &gb, &mut gy, &mut gm, &mut gr, rows, ch, eps)?;
                    gpu.sync(&fwd)?;
                    let f = r::layernorm_fwd(&x, &gamma, &beta, rows, ch, eps as f64);
                    let (mean, rstd) = (c.down(&gm)?, c.down(&gr)?);
                    let mut rows_out = vec![
                        Check::new(&format!("{fwd} (y)"), shape.clone(), "f32", compare(&c.down(&gy)?, &f.y), TOL_F32),
                        Check::new(&format!("{fwd} (mean)"), shape.clone(), "f32", compare(&mean, &f.mean), TOL_F32),
                        Check::new(&format!("{fwd} (rstd)"), shape.clone(), "f32", compare(&rstd, &f.rstd), TOL_F32),
                    ];
                    // Backward uses the GPU's own saved statistics, as training will.
                    let (mut gdx, mut gdg, mut gdb) = (c.poisoned(rows * ch)?, c.poisoned(ch)?, c.poisoned(ch)?);
                    gpu.layernorm_bwd_with(v, &gx, &gg, &gm, &gr, &gdy, &mut gdx, &mut gdg, &mut gdb, rows, ch)?;
                    gpu.sync(&bwd[0])?;
                    let b = r::layernorm_bwd(&x, &gamma, &mean, &rstd, &dy, rows, ch);
                    rows_out.push(Check::new(&bwd[0], shape.clone(), "f32", compare(&c.down(&gdx)?, &b.dx), TOL_F32));
                    rows_out.push(Check::new(&format!("{} (dgamma)", bwd[1]), shape.clone(), "f32", compare(&c.down(&gdg)?, &b.dgamma), TOL_F32));
                    rows_out.push(Check::new(&format!("{} (dbeta)", bwd[1]), shape.clone(), "f32", compare(&c.down(&gdb)?, &b.dbeta), TOL_F32));
                    Ok(rows_out)
                });
            }
            // bf16 activations (v2): x, y, dy, dx bf16; and autocast's build, the f32 residual
            // stream in, a bf16 y out (dy bf16, dx f32). Statistics and parameter gradients f32.
            let Some(w) = RowKernel::v2_entry("", ch) else { continue };
            ln_v2_typed::<u16, u16>(&mut out, &mut c, gpu, rows, ch, &w);
            ln_v2_typed::<f32, u16>(&mut out, &mut c, gpu, rows, ch, &w);
        }

        for n in [1usize, 1001, (1 << 20) + 5] {
            let shape = format!("n={n}");
            case(&mut out, "adamw_f32", shape.clone(), "f32", || {
                let h = AdamWParams { lr: 3e-4, b1: 0.9, b2: 0.95, eps: 1e-8, wd: 0.1, step: c.rng.gen_range(1..200) };
                let (p, g, m) = (c.rand(n, -1.0, 1.0), c.rand(n, -1.0, 1.0), c.rand(n, -0.1, 0.1));
                let v: Vec<f32> = c.rand(n, -0.1, 0.1).into_iter().map(|x| x * x).collect();
                let (mut gp, gg, mut gm, mut gv) = (c.up(&p)?, c.up(&g)?, c.up(&m)?, c.up(&v)?);
                gpu.adamw(&mut gp, &gg, &mut gm, &mut gv, h)?;
                gpu.sync("adamw_f32")?;
                let want = r::adamw(&p, &g, &m, &v, h);
                let s = format!("{shape} step={}", h.step);
                Ok(vec![
                    Check::new("adamw_f32 (p)", s.clone(), "f32", compare(&c.down(&gp)?, &want.p), TOL_F32),
                    Check::new("adamw_f32 (m)", s.clone(), "f32", compare(&c.down(&gm)?, &want.m), TOL_F32),
                    Check::new("adamw_f32 (v)", s, "f32", compare(&c.down(&gv)?, &want.v), TOL_F32),
                ])
            });
        }

        // Every tensor in one launch: lengths around the chunk (and an empty one), each its own
        // learning rate, decay and step.
        let sizes = [5usize, 2 * crate::adamw::CHUNK + 1, 0, 1000, (1 << 20) + 3];
        case(&mut out, "adamw_multi_f32", format!("{} tensors", sizes.len()), "f32", || {
            let mut host = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let h = AdamWParams { lr: 1e-4 * (i + 1) as f64, b1: 0.9, b2: 0.95, eps: 1e-8, wd: 0.05 * i as f64, step: c.rng.gen_range(1..300) };
                let (p, g, m) = (c.rand(n, -1.0, 1.0), c.rand(n, -1.0, 1.0), c.rand(n, -0.1, 0.1));
                let v: Vec<f32> = c.rand(n, -0.1, 0.1).into_iter().map(|x| x * x).collect();
                host.push((p, g, m, v, h));
            }
            let mut dev = Vec::new();
            for (p, g, m, v, _) in &host {
                // An empty tensor keeps one unused slot (`Gpu::upload`).
                let up = |x: &[f32]| c.up(x);
                dev.push((up(p)?, up(g)?, up(m)?, up(v)?));
            }
            let mut list: Vec<_> = dev
                .iter_mut()
                .zip(&host)
                .filter(|(_, (p, ..))| !p.is_empty())
                .map(|((gp, gg, gm, gv), (.., h))| crate::adamw::AdamwTensor { p: gp, g: gg, m: gm, v: gv, h: *h })
                .collect();
            gpu.adamw_multi(&mut list, 0.9, 0.95, 1e-8)?;
            gpu.sync("adamw_multi_f32")?;
            let mut rows = Vec::new();
            for ((p, g, m, v, h), (gp, _, gm, gv)) in host.iter().zip(&dev).filter(|((p, ..), _)| !p.is_empty()) {
                let want = r::adamw(p, g, m, v, *h);
                let s = format!("n={} of {} tensors, step={}", p.len(), sizes.len(), h.step);
                rows.push(Check::new("adamw_multi_f32 (p)", s.clone(), "f32", compare(&c.down(gp)?, &want.p), TOL_F32));
                rows.push(Check::new("adamw_multi_f32 (m)", s.clone(), "f32", compare(&c.down(gm)?, &want.m), TOL_F32));
                rows.push(Check::new("adamw_multi_f32 (v)", s, "f32", compare(&c.down(gv)?, &want.v), TOL_F32));
            }
            Ok(rows)
        });

        // (M, N, K, bias): tile multiples, ragged edges, tiny, vector-aligned and not.
        let shapes = [
            (1usize, 1usize, 1usize, false), (17, 33, 5, true), (127, 129, 65, false), (128, 128, 128, true),
            (257, 300, 191, true), (64, 768, 768, true), (130, 136, 72, false), (256, 512, 384, true), (8, 16, 24, false),
        ];
        for &(m, n, k, with_bias) in &shapes {
            let shape = format!("{m}x{n}x{k}{}", if with_bias { "+bias" } else { "" });
            case(&mut out, "matmul", shape.clone(), "f32", || {
                let (a, b) = (c.rand(m * k, -1.0, 1.0), c.rand(k * n, -1.0, 1.0));
                let bias = with_bias.then(|| c.rand(n, -1.0, 1.0));
                let (ga, gb) = (c.up(&a)?, c.up(&b)?);
                let gbias = bias.as_ref().map(|v| c.up(v)).transpose()?;
                let want = r::matmul(&a, &b, bias.as_deref(), m, n, k);
                let mut rows_out = Vec::new();
                for (v, name) in [(MatmulF32::V1Tiled, "matmul_v1_f32"), (MatmulF32::V2Register, "matmul_v2_f32")] {
                    let mut gc = c.poisoned(m * n)?;
                    gpu.matmul_f32(v, &ga, &gb, gbias.as_ref(), &mut gc, m, n, k)?;
                    gpu.sync(name)?;
                    rows_out.push(Check::new(name, shape.clone(), "f32", compare(&c.down(&gc)?, &want), TOL_F32));
                }
                // v2's GELU epilogue: the pre-activation, and the output against GELU of it.
                let (mut post, mut pre) = (c.poisoned(m * n)?, c.poisoned(m * n)?);
                gpu.matmul_f32_gelu(&ga, &gb, gbias.as_ref(), &mut post, &mut pre, m, n, k)?;
                gpu.sync("matmul_v2_f32_gelu")?;
                let stored_pre = c.down(&pre)?;
                rows_out.push(Check::new("matmul_v2_f32_gelu (pre)", shape.clone(), "f32", compare(&stored_pre, &want), TOL_F32));
                rows_out.push(Check::new("matmul_v2_f32_gelu (gelu)", shape.clone(), "f32", compare(&c.down(&post)?, &r::gelu_fwd(&stored_pre)), TOL_F32));
                // bf16: the reference uses the same bf16-rounded inputs, so only accumulation
                // (and for bf16 out, the final rounding) differs.
                let (a16, b16) = (to_bf16_bits(&a), to_bf16_bits(&b));
                let want16 = r::matmul(&from_bf16_bits(&a16), &from_bf16_bits(&b16), bias.as_deref(), m, n, k);
                let (ga16, gb16) = (c.up(&a16)?, c.up(&b16)?);
                let mut gc = c.poisoned(m * n)?;
                gpu.matmul_bf16_f32out(&ga16, &gb16, gbias.as_ref(), &mut gc, m, n, k)?;
                gpu.sync("matmul_v3_bf16_f32out")?;
                rows_out.push(Check::new("matmul_v3_bf16_f32out", shape.clone(), "bf16->f32", compare(&c.down(&gc)?, &want16), TOL_F32));
                let mut gc16 = c.poisoned_bf16(m * n)?;
                gpu.matmul_bf16_bf16out(&ga16, &gb16, gbias.as_ref(), &mut gc16, m, n, k)?;
                gpu.sync("matmul_v3_bf16_bf16out")?;
                rows_out.push(Check::new("matmul_v3_bf16_bf16out", shape.clone(), "bf16", compare(&c.down_bf16(&gc16)?, &want16), TOL_BF16));
                Ok(rows_out)
            });
        }
        // v2 batched (grid.z): each product against its own reference, B per batch or shared;
        // operands stored as read (NN) or one of them transposed (NT, TN), read in place.
        // `count` row-major [rows, cols] matrices, each stored as [cols, rows].
        let transpose = |x: &[f32], count: usize, rows: usize, cols: usize| -> Vec<f32> {
            (0..count * rows * cols).map(|j| {
                let (i, e) = (j / (rows * cols), j % (rows * cols));
                x[i * rows * cols + (e % rows) * cols + e / rows]
            }).collect()
        };
        for &(batches, m, n, k, shared_b, with_bias) in &[(3usize, 17usize, 33usize, 9usize, false, false), (12, 130, 64, 32, false, true), (5, 64, 130, 32, true, false), (2, 129, 131, 67, false, true)] {
            for stored in [Stored::NN, Stored::NT, Stored::TN] {
                let shape = format!("{batches}x{m}x{n}x{k}{}{}", if shared_b { " shared B" } else { "" }, if with_bias { "+bias" } else { "" });
                let name = stored.entry();
                case(&mut out, name, shape.clone(), "f32", || {
                    let nb = if shared_b { 1 } else { batches };
                    let (a, b) = (c.rand(batches * m * k, -1.0, 1.0), c.rand(nb * k * n, -1.0, 1.0));
                    let bias = with_bias.then(|| c.rand(n, -1.0, 1.0));
                    let mut want = r::Ref { value: Vec::new(), scale: Vec::new() };
                    for i in 0..batches {
                        let bi = if shared_b { 0 } else { i };
                        let one = r::matmul(&a[i * m * k..(i + 1) * m * k], &b[bi * k * n..(bi + 1) * k * n], bias.as_deref(), m, n, k);
                        want.value.extend(one.value);
                        want.scale.extend(one.scale);
                    }
                    let a_up = if stored == Stored::TN { transpose(&a, batches, m, k) } else { a };
                    let b_up = if stored == Stored::NT { transpose(&b, nb, k, n) } else { b };
                    let (ga, gb) = (c.up(&a_up)?, c.up(&b_up)?);
                    let gbias = bias.as_ref().map(|v| c.up(v)).transpose()?;
                    let mut gc = c.poisoned(batches * m * n)?;
                    gpu.matmul_f32_batched_stored(stored, &ga, &gb, shared_b, gbias.as_ref(), &mut gc, batches, m, n, k)?;
                    gpu.sync(name)?;
                    Ok(vec![Check::new(name, shape.clone(), "f32", compare(&c.down(&gc)?, &want), TOL_F32)])
                });
            }
        }
        out.extend(crate::attention::checks(gpu));
        out.extend(crate::memops::checks(gpu));
        out.extend(crate::copy::checks(gpu));
        out.extend(crate::pointwise::checks(gpu));
        // Last: the newest tensor-core versions (a fault poisons the context for what follows).
        out.extend(crate::matmul_tc::checks(gpu));
        Ok(out)
    }
}
