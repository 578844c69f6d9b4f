use super::*;

/// GPT-2 124M's GEMMs at 8192 tokens on an H100 (132 SMs), v5's tiles.
#[test]
fn split_k_goes_to_the_gemms_that_leave_the_gpu_idle() {
    let s = |mnk| split_k(mnk, (V5_BM, V5_BN, 64), 132);
    // Weight gradients (Xᵀ·dY, K = the tokens): few tiles, long K.
    assert_eq!(s((768, 768, 8192)), 7, "attention projection: 18 tiles");
    assert_eq!(s((768, 2304, 8192)), 2, "qkv: 54 tiles");
    assert!(s((768, 3072, 8192)) > 1 && s((3072, 768, 8192)) > 1, "MLP: 72 tiles");
    // Forward and input gradients: enough tiles, or too short a K to pay for the partials.
    assert_eq!(s((8192, 768, 768)), 1);
    assert_eq!(s((8192, 2304, 768)), 1);
    assert_eq!(s((8192, 50304, 768)), 1, "LM head");
    assert_eq!(s((4096, 4096, 4096)), 1);
    // Every slice keeps at least 4 k-tiles.
    assert_eq!(s((128, 256, 64 * 7)), 1);
    assert!(s((128, 256, 64 * 8)) <= 2);
    assert_eq!(s((1, 1, 1)), 1);
}

/// The tile width model on an H100: the N = 768 GEMMs (3 tiles of 256 across, 4 of 192) and
/// qkv (9 vs 12) go narrow; the shapes that already fill whole waves keep 256.
#[test]
fn tile_plan_narrows_the_gemms_that_leave_a_wave_part_empty() {
    let p = |mnk| tile_plan(mnk, 132);
    assert_eq!(p((8192, 768, 768)), (192, 1), "attention projection: 256 tiles of 192 (2 waves) vs 192 of 256");
    assert_eq!(p((8192, 768, 3072)), (192, 1), "MLP projection / fc input gradient");
    assert_eq!(p((8192, 768, 2304)).0, 192, "qkv input gradient");
    assert_eq!(p((8192, 2304, 768)).0, 192, "qkv: 768 tiles of 192 (6 waves) vs 576 of 256 (5 waves, the last 36% full)");
    assert_eq!(p((8192, 3072, 768)), (256, 1), "MLP up-projection: 768 tiles of 256 fill 6 waves");
    assert_eq!(p((4096, 4096, 4096)), (256, 1));
    assert_eq!(p((8192, 50304, 768)).0, 256, "LM head");
    // Weight gradients: the tile and the split are chosen together. 768 x 768: 24 tiles of
    // 192 in 5 slices (120 blocks) vs 18 of 256 in 7; MLP: 96 tiles of 192, one wave
    // unsplit, beats 72 of 256 in 3 slices and their partials; qkv: 54 tiles of 256 in 2.
    assert_eq!(p((768, 768, 8192)), (192, 5));
    assert_eq!(p((768, 3072, 8192)), (192, 1));
    assert_eq!(p((768, 2304, 8192)), (256, 2));
    assert_eq!(v5_smem_bytes(256), 197_632);
    assert_eq!(v5_smem_bytes(192), 164_864);
    assert_eq!(v6_smem_bytes(192), 164_928);
}
