//! The row kernels (softmax, layernorm: sources `cu/softmax.cu`, `cu/layernorm.cu`) come in two
//! versions that the self-test checks and the bench compares: v1 reads a row more than once and
//! takes any width; v2 holds the row in registers (its backward is one fused pass) and takes
//! rows up to [`V2_MAX_WIDTH`], in two builds by how many elements each lane holds, for f32 and
//! for bf16 activations (f32 math; layernorm's parameters, statistics and their gradients f32),
//! and layernorm also from an f32 input to a bf16 output (autocast's f32 residual stream).

pub const SOFTMAX_ENTRIES: &[&str] = &[
    "softmax_fwd_f32", "softmax_fwd_v2_f32_w1024", "softmax_fwd_v2_f32_w2048", "softmax_fwd_v2_bf16_w1024", "softmax_fwd_v2_bf16_w2048",
];
pub const LAYERNORM_ENTRIES: &[&str] = &[
    "layernorm_fwd_f32", "layernorm_bwd_dx_f32", "layernorm_bwd_dparams_f32",
    "layernorm_fwd_v2_f32_w1024", "layernorm_fwd_v2_f32_w2048",
    "layernorm_bwd_v2_f32_w1024", "layernorm_bwd_v2_f32_w2048", "layernorm_bwd_v2_finish_f32",
    "layernorm_fwd_v2_bf16_w1024", "layernorm_fwd_v2_bf16_w2048", "layernorm_bwd_v2_bf16_w1024", "layernorm_bwd_v2_bf16_w2048",
    "layernorm_fwd_v2_f32_bf16_w1024", "layernorm_fwd_v2_f32_bf16_w2048", "layernorm_bwd_v2_f32_bf16_w1024", "layernorm_bwd_v2_f32_bf16_w2048",
];

/// The widest row v2 takes (64 elements per lane).
pub const V2_MAX_WIDTH: usize = 2048;

/// Warps per block of the fused layernorm backward (v2).
pub const LN_BWD_V2_WARPS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RowKernel {
    V1,
    V2,
}

impl RowKernel {
    /// v2 where the row fits, else v1: what the engine launches.
    pub fn for_width(width: usize) -> RowKernel {
        if width <= V2_MAX_WIDTH {
            RowKernel::V2
        } else {
            RowKernel::V1
        }
    }

    /// The v2 build for rows of `width`: `{stem}_w1024` or `{stem}_w2048`; None when too wide.
    pub fn v2_entry(stem: &str, width: usize) -> Option<String> {
        match width {
            0..=1024 => Some(format!("{stem}_w1024")),
            1025..=V2_MAX_WIDTH => Some(format!("{stem}_w2048")),
            _ => None,
        }
    }
}

/// Blocks of the fused layernorm backward: one wave, as many as are resident at once (each
/// strides over rows), never more than the rows need; its dgamma/dbeta partials are [blocks, 2C].
pub fn ln_bwd_v2_blocks(rows: usize, sm_count: usize, resident_per_sm: usize) -> usize {
    rows.div_ceil(LN_BWD_V2_WARPS).clamp(1, sm_count.max(1) * resident_per_sm.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_pick_their_build() {
        assert_eq!(RowKernel::for_width(768), RowKernel::V2);
        assert_eq!(RowKernel::for_width(2049), RowKernel::V1);
        assert_eq!(RowKernel::v2_entry("softmax_fwd_v2_f32", 1).as_deref(), Some("softmax_fwd_v2_f32_w1024"));
        assert_eq!(RowKernel::v2_entry("softmax_fwd_v2_f32", 1024).as_deref(), Some("softmax_fwd_v2_f32_w1024"));
        assert_eq!(RowKernel::v2_entry("softmax_fwd_v2_f32", 1025).as_deref(), Some("softmax_fwd_v2_f32_w2048"));
        assert_eq!(RowKernel::v2_entry("layernorm_fwd_v2_f32", 2048).as_deref(), Some("layernorm_fwd_v2_f32_w2048"));
        assert_eq!(RowKernel::v2_entry("layernorm_fwd_v2_f32", 2049), None);
        // Every build the launchers can name is registered.
        for w in [1, 1024, 1025, 2048] {
            for stem in ["softmax_fwd_v2_f32", "layernorm_fwd_v2_f32", "layernorm_bwd_v2_f32"] {
                let e = RowKernel::v2_entry(stem, w).unwrap();
                assert!(SOFTMAX_ENTRIES.contains(&e.as_str()) || LAYERNORM_ENTRIES.contains(&e.as_str()), "{e}");
            }
        }
    }

    #[test]
    fn fused_backward_grid_fills_the_chip_within_the_rows() {
        assert_eq!(ln_bwd_v2_blocks(0, 132, 2), 1);
        assert_eq!(ln_bwd_v2_blocks(20, 132, 2), 3);
        assert_eq!(ln_bwd_v2_blocks(4096, 132, 2), 264);
        assert_eq!(ln_bwd_v2_blocks(4096, 132, 1), 132);
        assert_eq!(ln_bwd_v2_blocks(4096, 0, 0), 1);
    }
}
