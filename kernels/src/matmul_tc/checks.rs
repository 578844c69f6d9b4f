//! The tensor-core matmuls' self-test: every version and tile width against the f64 reference
//! on the same bf16-rounded inputs, outputs poisoned first, with a bitwise rerun for races.

use super::launch::{versions, wgmma_widths, Cut};
use super::*;
use crate::device::Gpu;
use crate::reference::{self as r, compare, from_bf16_bits, rand_nonzero as rand, to_bf16_bits};
use crate::selftest::{Check, TOL_BF16, TOL_F32};
use crate::{Error, Result};
use cudarc::driver::CudaSlice;
use half::bf16;
use rand::{rngs::StdRng, SeedableRng};

/// (M, N, K, bias): 1x1x1; the scalar fallback (K, N not multiples of 8); ragged edges on
/// the fast path; one k-tile only (K = 64, many blocks); K not a multiple of the k-tile;
/// exact tile multiples; thin shapes.
pub const CHECK_SHAPES: &[(usize, usize, usize, bool)] = &[
    (1, 1, 1, false),
    (1, 1, 1, true),
    (127, 129, 65, false),
    (127, 129, 65, true),
    (33, 17, 200, true),
    (257, 300, 192, false),
    (257, 300, 192, true),
    (4096, 4096, 64, false),
    (4096, 4096, 64, true),
    (1000, 1000, 1000, false),
    (1000, 1000, 1000, true),
    (256, 512, 136, true),
    (8, 776, 40, false),
    (640, 8, 1032, true),
    // more tiles than an H100 has SMs (v6's persistent blocks take two), 3 k-tiles each:
    // v6's stage ring wraps inside a tile.
    (2176, 2304, 136, true),
    // few tiles, long K: split-K (see `split_k`), ragged edges and a ragged last slice too.
    (256, 512, 2048, true),
    (100, 264, 3000, true),
];


/// v4 (and v5, v6 on Hopper), f32 and bf16 out, against the f64 reference on the same
/// bf16-rounded inputs; fresh random inputs, NaN-poisoned outputs. The 1000^3 case also
/// reruns each version and requires a bitwise-identical result (a race would show there).
pub fn checks(gpu: &Gpu) -> Vec<Check> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ 0x7c7c_0004;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let up = |v: &[f32]| gpu.stream.clone_htod(v).map_err(|e| Error::cuda("upload", e));
    let up16 = |v: &[u16]| gpu.stream.clone_htod(v).map_err(|e| Error::cuda("upload", e));
    let down = |s: &CudaSlice<f32>| gpu.stream.clone_dtoh(s).map_err(|e| Error::cuda("download", e));
    let down16 = |s: &CudaSlice<u16>| -> Result<Vec<f32>> {
        let bits = gpu.stream.clone_dtoh(s).map_err(|e| Error::cuda("download", e))?;
        Ok(from_bf16_bits(&bits))
    };
    // Versions outermost: every older version's rows are in before a newer one runs (a fault
    // would poison the context). v5 and v6 at both tile widths, whatever the model picks.
    let cuts = |v: MatmulTc| -> Vec<usize> { if v == MatmulTc::V4Mma { vec![V4_BN] } else { wgmma_widths() } };
    for (v, bn) in versions(gpu).into_iter().flat_map(|v| cuts(v).into_iter().map(move |bn| (v, bn))) {
        let cut = Cut { bn: Some(bn), splits: None };
        for &(m, n, k, with_bias) in CHECK_SHAPES {
            // Shapes v5/v6 cannot take (K or N not a multiple of 8) run v4, the launcher's
            // fallback: once, and labelled so.
            let falls_back = v != MatmulTc::V4Mma && (k == 0 || !k.is_multiple_of(8) || !n.is_multiple_of(8));
            if falls_back && bn != V5_BN {
                continue;
            }
            let shape = format!("{m}x{n}x{k}{}{}", if with_bias { "+bias" } else { "" }, if falls_back { " (runs v4)" } else { "" });
            let a16 = to_bf16_bits(&rand(&mut rng, m * k, -1.0, 1.0));
            let b16 = to_bf16_bits(&rand(&mut rng, k * n, -1.0, 1.0));
            let bias = with_bias.then(|| rand(&mut rng, n, -1.0, 1.0));
            let want = r::matmul(&from_bf16_bits(&a16), &from_bf16_bits(&b16), bias.as_deref(), m, n, k);
            let r: Result<Vec<Check>> = (|| {
                let (ga, gb) = (up16(&a16)?, up16(&b16)?);
                let gbias = bias.as_ref().map(|b| up(b)).transpose()?;
                let mut rows = Vec::new();
                let name = v.entry(Epi::F32, bn);
                let mut gc = up(&vec![f32::NAN; m * n])?;
                gpu.matmul_tc_launch(v, Epi::F32, &ga, &gb, gbias.as_ref(), &mut gc, None, (m, n, k), cut)?;
                gpu.sync(name)?;
                let first = down(&gc)?;
                rows.push(Check::new(name, shape.clone(), "bf16->f32", compare(&first, &want), TOL_F32));
                if (m, n, k) == (1000, 1000, 1000) {
                    let mut gc2 = up(&vec![f32::NAN; m * n])?;
                    gpu.matmul_tc_launch(v, Epi::F32, &ga, &gb, gbias.as_ref(), &mut gc2, None, (m, n, k), cut)?;
                    gpu.sync(name)?;
                    let second = down(&gc2)?;
                    let same = first.iter().zip(&second).all(|(x, y)| x.to_bits() == y.to_bits());
                    let mut ch = Check::new(
                        &format!("{name} (rerun, bitwise)"),
                        shape.clone(),
                        "bf16->f32",
                        compare(&second, &want),
                        TOL_F32,
                    );
                    ch.pass &= same;
                    if !same {
                        ch.error = Some("second run differs bitwise from the first (race?)".into());
                    }
                    rows.push(ch);
                }
                let name16 = v.entry(Epi::Bf16, bn);
                let mut gc16 = up16(&vec![bf16::NAN.to_bits(); m * n])?;
                gpu.matmul_tc_launch(v, Epi::Bf16, &ga, &gb, gbias.as_ref(), &mut gc16, None, (m, n, k), cut)?;
                gpu.sync(name16)?;
                rows.push(Check::new(name16, shape.clone(), "bf16", compare(&down16(&gc16)?, &want), TOL_BF16));
                // GELU epilogue: the pre-activation against the product, and the output against
                // GELU of that stored pre-activation (a reference from the exact product would
                // charge GELU with the matmul's rounding where the product cancels near 0).
                let name_g = v.entry(Epi::Bf16Gelu, bn);
                let (mut post, mut pre) = (up16(&vec![bf16::NAN.to_bits(); m * n])?, up16(&vec![bf16::NAN.to_bits(); m * n])?);
                gpu.matmul_tc_launch(v, Epi::Bf16Gelu, &ga, &gb, gbias.as_ref(), &mut post, Some(&mut pre), (m, n, k), cut)?;
                gpu.sync(name_g)?;
                let stored_pre = down16(&pre)?;
                rows.push(Check::new(&format!("{name_g} (pre)"), shape.clone(), "bf16", compare(&stored_pre, &want), TOL_BF16));
                rows.push(Check::new(&format!("{name_g} (gelu)"), shape.clone(), "bf16", compare(&down16(&post)?, &r::gelu_fwd(&stored_pre)), TOL_BF16));
                Ok(rows)
            })();
            match r {
                Ok(rows) => out.extend(rows),
                Err(e) => out.push(Check::failed(v.entry(Epi::F32, bn), shape.clone(), "bf16->f32", e.to_string())),
            }
        }
    }
    out
}
