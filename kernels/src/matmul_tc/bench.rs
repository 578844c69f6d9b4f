//! Timing rows of the tensor-core matmuls for `bench::matmul_bench` (beside cuBLAS).

use super::launch::{versions, wgmma_widths, Cut};
use super::*;
use crate::bench::time_ms;
use crate::device::Gpu;
use crate::{Error, Result};
use cudarc::driver::CudaSlice;

/// Timing rows for `bench::matmul_bench`: (name, median ms) of v4 (and v5, v6 on Hopper), each
/// epilogue (f32, bf16, bf16 GELU with its pre-activation), and the GELU it replaces (a bf16
/// matmul, then the GELU kernel), on the bench's own random bf16 inputs (no bias, like the
/// other rows).
pub fn timings(
    gpu: &Gpu,
    a: &CudaSlice<u16>,
    b: &CudaSlice<u16>,
    c32: &mut CudaSlice<f32>,
    c16: &mut CudaSlice<u16>,
    (m, n, k): (usize, usize, usize),
) -> Vec<(String, Result<f64>)> {
    let mut rows = Vec::new();
    let mut pre = match gpu.stream.alloc_zeros::<u16>(m * n) {
        Ok(p) => Some(p),
        Err(e) => {
            rows.push(("matmul_tc gelu setup".to_string(), Err(Error::cuda("allocating the pre-activation", e))));
            None
        }
    };
    let pick = tile_plan((m, n, k), gpu.info.sm_count.max(1) as usize).0;
    for v in versions(gpu) {
        // f32 out at each tile width (v4: its one; v5/v6: 256 and 192), each with the split
        // the model gives it, `tile_plan`'s width marked; where K is split, the unsplit GEMM
        // beside it. Shapes that fall back to v4 would be labelled with v5's entries: the
        // bench's never do.
        let widths = if v == MatmulTc::V4Mma { vec![V4_BN] } else { wgmma_widths() };
        for bn in widths {
            let (_, splits) = gpu.cut(v, Cut { bn: Some(bn), splits: None }, (m, n, k)).unwrap_or((bn, 1));
            let name = v.entry(Epi::F32, bn);
            let mut label = if splits > 1 { format!("{name} (split-K {splits})") } else { name.to_string() };
            if v != MatmulTc::V4Mma && bn == pick {
                label += " [tile_plan]";
            }
            let cut = Cut { bn: Some(bn), splits: Some(splits) };
            rows.push((label, time_ms(gpu, || gpu.matmul_tc_launch(v, Epi::F32, a, b, None, c32, None, (m, n, k), cut))));
            if splits > 1 {
                let unsplit = Cut { bn: Some(bn), splits: Some(1) };
                rows.push((format!("{name} (unsplit)"), time_ms(gpu, || gpu.matmul_tc_launch(v, Epi::F32, a, b, None, c32, None, (m, n, k), unsplit))));
            }
        }
        // The other epilogues as the engine runs them (IGPT_TILE_N, IGPT_SPLIT_K).
        let ebn = gpu.cut(v, Cut::AUTO, (m, n, k)).map(|c| c.0).unwrap_or(V5_BN);
        rows.push((v.entry(Epi::Bf16, ebn).to_string(), time_ms(gpu, || gpu.matmul_tc_bf16out(v, a, b, None, c16, m, n, k))));
        if let Some(pre) = pre.as_mut() {
            rows.push((v.entry(Epi::Bf16Gelu, ebn).to_string(), time_ms(gpu, || gpu.matmul_tc_bf16_gelu(v, a, b, None, c16, pre, m, n, k))));
            let unfused = time_ms(gpu, || {
                gpu.matmul_tc_bf16out(v, a, b, None, pre, m, n, k)?;
                gpu.gelu_fwd(pre, c16)
            });
            rows.push((format!("{} + gelu_fwd_bf16 (unfused)", v.entry(Epi::Bf16, ebn)), unfused));
        }
    }
    rows
}
