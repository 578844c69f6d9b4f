//! Vendor peak dense throughputs of the GPUs this project is measured on, for MFU (model FLOPs
//! achieved over the device's peak). Dense (no sparsity), at the boost clock, per GPU.

/// (TFLOP/s, what it is) for a CUDA device `name` as the driver reports it (e.g. "NVIDIA H100
/// 80GB HBM3"): bf16 on tensor cores when `bf16`, else f32 on CUDA cores (our f32 kernels use
/// no TF32). None for a device not in the table.
pub fn peak_dense_tflops(name: &str, bf16: bool) -> Option<(f64, &'static str)> {
    let n = name.to_ascii_uppercase();
    let (tc, f32, what) = if n.contains("H200") {
        (989.4, 66.9, "H200")
    } else if n.contains("H100") && n.contains("PCIE") {
        (756.5, 51.2, "H100 PCIe")
    } else if n.contains("H100") && n.contains("NVL") {
        (835.5, 60.0, "H100 NVL")
    } else if n.contains("H100") {
        (989.4, 66.9, "H100 SXM")
    } else if n.contains("A100") {
        (312.0, 19.5, "A100")
    } else {
        return None;
    };
    Some(if bf16 { (tc, what) } else { (f32, what) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_cards_are_known_and_others_are_not() {
        assert_eq!(peak_dense_tflops("NVIDIA H100 80GB HBM3", true), Some((989.4, "H100 SXM")));
        assert_eq!(peak_dense_tflops("NVIDIA H100 80GB HBM3", false), Some((66.9, "H100 SXM")));
        assert_eq!(peak_dense_tflops("NVIDIA H200", true), Some((989.4, "H200")));
        assert_eq!(peak_dense_tflops("NVIDIA H100 PCIe", true).map(|p| p.1), Some("H100 PCIe"));
        assert_eq!(peak_dense_tflops("NVIDIA GeForce RTX 4090", true), None);
    }
}
