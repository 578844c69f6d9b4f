//! The embedded kernel sources: one `.cu` file per family, compiled as one NVRTC
//! module each, with the `extern "C"` entry points it must export.

#[derive(Debug, Clone, Copy)]
pub struct Module {
    /// Module name (also the cache-file prefix).
    pub name: &'static str,
    pub file: &'static str,
    /// What NVRTC compiles: the file, after any shared prelude (cu/*.cuh) it needs.
    pub source: &'static str,
    pub entries: &'static [&'static str],
    /// Needs the toolkit headers (cuda_bf16.h / mma.h) on the include path.
    pub needs_headers: bool,
}

pub const MODULES: &[Module] = &[
    Module {
        name: "elementwise",
        file: "cu/elementwise.cu",
        source: concat!(include_str!("cu/bf16_storage.cuh"), include_str!("cu/elementwise.cu")),
        entries: &["gelu_fwd_f32", "gelu_bwd_f32", "gelu_fwd_bf16", "gelu_bwd_bf16"],
        needs_headers: false,
    },
    Module {
        name: "softmax",
        file: "cu/softmax.cu",
        source: concat!(include_str!("cu/bf16_storage.cuh"), include_str!("cu/softmax.cu")),
        entries: crate::rows::SOFTMAX_ENTRIES,
        needs_headers: false,
    },
    Module {
        name: "layernorm",
        file: "cu/layernorm.cu",
        source: concat!(include_str!("cu/bf16_storage.cuh"), include_str!("cu/layernorm.cu")),
        entries: crate::rows::LAYERNORM_ENTRIES,
        needs_headers: false,
    },
    Module {
        name: "adamw",
        file: "cu/adamw.cu",
        source: include_str!("cu/adamw.cu"),
        entries: &["adamw_f32", "adamw_multi_f32"],
        needs_headers: false,
    },
    Module {
        name: "matmul_f32",
        file: "cu/matmul_f32.cu",
        source: concat!(include_str!("cu/matmul_epilogue.cuh"), include_str!("cu/matmul_f32.cu")),
        entries: &["matmul_v1_f32", "matmul_v2_f32", "matmul_v2_f32_gelu", "matmul_v2_f32_batched", "matmul_v2_f32_batched_nt", "matmul_v2_f32_batched_tn"],
        needs_headers: false,
    },
    Module {
        name: "matmul_bf16",
        file: "cu/matmul_bf16.cu",
        source: include_str!("cu/matmul_bf16.cu"),
        entries: &["matmul_v3_bf16_f32out", "matmul_v3_bf16_bf16out"],
        needs_headers: true,
    },
    Module {
        name: "attention",
        file: "cu/attention.cu",
        source: include_str!("cu/attention.cu"),
        entries: crate::attention::ENTRIES,
        needs_headers: false,
    },
    Module {
        name: "matmul_mma",
        file: "cu/matmul_mma.cu",
        source: concat!(include_str!("cu/matmul_epilogue.cuh"), include_str!("cu/matmul_mma.cu")),
        entries: crate::matmul_tc::V4_ENTRIES,
        needs_headers: false,
    },
    Module {
        name: "matmul_wgmma",
        file: "cu/matmul_wgmma.cu",
        source: concat!(include_str!("cu/matmul_epilogue.cuh"), include_str!("cu/matmul_wgmma.cu")),
        entries: crate::matmul_tc::SM90A_ENTRIES,
        needs_headers: false,
    },
    Module {
        name: "cross_entropy",
        file: "cu/cross_entropy.cu",
        source: include_str!("cu/cross_entropy.cu"),
        entries: crate::memops::CE_ENTRIES,
        needs_headers: false,
    },
    Module {
        name: "embedding",
        file: "cu/embedding.cu",
        source: include_str!("cu/embedding.cu"),
        entries: crate::memops::EMBEDDING_ENTRIES,
        needs_headers: false,
    },
    Module {
        name: "reduce",
        file: "cu/reduce.cu",
        source: include_str!("cu/reduce.cu"),
        entries: crate::memops::REDUCE_ENTRIES,
        needs_headers: false,
    },
    Module {
        name: "binary",
        file: "cu/binary.cu",
        source: include_str!("cu/binary.cu"),
        entries: crate::memops::BINARY_ENTRIES,
        needs_headers: false,
    },
    Module {
        name: "pointwise",
        file: "cu/pointwise.cu",
        source: include_str!("cu/pointwise.cu"),
        entries: crate::pointwise::ENTRIES,
        needs_headers: false,
    },
];

pub fn module(name: &str) -> Option<&'static Module> {
    MODULES.iter().find(|m| m.name == name)
}

/// The module exporting `entry`, if any.
pub fn module_of(entry: &str) -> Option<&'static Module> {
    MODULES.iter().find(|m| m.entries.contains(&entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_defined_extern_c_in_its_source() {
        for m in MODULES {
            assert!(!m.entries.is_empty(), "{} has no entries", m.name);
            for e in m.entries {
                let defined = m.source.lines().any(|l| l.contains(&format!("{e}(")))
                    && m.source.contains("extern \"C\" __global__");
                assert!(defined, "{}: entry {e} not found in {}", m.name, m.file);
            }
        }
    }

    #[test]
    fn names_are_unique_and_headers_declared() {
        let mut names: Vec<_> = MODULES.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), MODULES.len());
        let mut entries: Vec<_> = MODULES.iter().flat_map(|m| m.entries.iter()).collect();
        let n = entries.len();
        entries.sort();
        entries.dedup();
        assert_eq!(entries.len(), n, "duplicate entry point");
        for m in MODULES {
            let includes = m.source.contains("#include");
            assert_eq!(includes, m.needs_headers, "{}: needs_headers disagrees with #include", m.name);
        }
    }

    #[test]
    fn the_required_kernels_are_registered() {
        for e in [
            "gelu_fwd_f32", "gelu_bwd_f32", "softmax_fwd_f32", "layernorm_fwd_f32",
            "layernorm_bwd_dx_f32", "layernorm_bwd_dparams_f32", "adamw_f32", "adamw_multi_f32",
            "matmul_v1_f32", "matmul_v2_f32", "matmul_v3_bf16_f32out", "matmul_v3_bf16_bf16out",
        ] {
            assert!(module_of(e).is_some(), "{e} missing");
        }
    }
}
