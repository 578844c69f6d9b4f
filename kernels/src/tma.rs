//! Tensor maps for the Hopper TMA unit (matmul v6): a row-major bf16 matrix described to
//! `cuTensorMapEncodeTiled` as a 2-D tensor, copied in boxes with the 128-byte swizzle that
//! the wgmma descriptors expect.
//!
//! [`Bf16TileMap::new`] is the pure part (dimensions, strides, box, and the TMA rules they must
//! obey), checked here without a GPU; `encode` (feature `cuda`) hands it to the driver.

use crate::{Error, Result};

/// A 2-D bf16 tensor map: `rows x cols` row-major, boxes of `box_rows x box_cols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bf16TileMap {
    /// Innermost first: {cols, rows}.
    pub dims: [u64; 2],
    /// Bytes between rows (the stride of dim 1; dim 0 is contiguous).
    pub row_stride: u64,
    /// Innermost first: {box_cols, box_rows}.
    pub box_dims: [u32; 2],
}

impl Bf16TileMap {
    /// Checks the driver's rules for a tiled, 128-byte-swizzled bf16 map, so that a bad shape is
    /// a named error here rather than CUDA_ERROR_INVALID_VALUE from the driver: the global
    /// address and row stride multiples of 16 bytes (hence `cols % 8 == 0`), strides below 2^40,
    /// dims in 1..=2^32, box dims in 1..=256 with the inner box at most 128 bytes (the swizzle
    /// span) and a multiple of 16 bytes.
    pub fn new(what: &str, addr: u64, rows: usize, cols: usize, box_rows: u32, box_cols: u32) -> Result<Self> {
        let bad = |why: String| Err(Error::Other(format!("{what}: no TMA map for a {rows}x{cols} bf16 matrix: {why}")));
        if rows == 0 || cols == 0 || rows as u64 > 1 << 32 || cols as u64 > 1 << 32 {
            return bad("each dimension must be 1..=2^32".into());
        }
        if !addr.is_multiple_of(16) {
            return bad(format!("address {addr:#x} is not 16-byte aligned"));
        }
        if !cols.is_multiple_of(8) {
            return bad("the row stride must be a multiple of 16 bytes (cols % 8 == 0)".into());
        }
        let row_stride = cols as u64 * 2;
        if row_stride >= 1 << 40 {
            return bad("the row stride must be below 2^40 bytes".into());
        }
        if !(1..=256).contains(&box_rows) || !(1..=256).contains(&box_cols) {
            return bad(format!("box {box_rows}x{box_cols}: each box dimension must be 1..=256"));
        }
        let inner = box_cols as u64 * 2;
        if inner > 128 || !inner.is_multiple_of(16) {
            return bad(format!("box {box_rows}x{box_cols}: the inner box must be a multiple of 16 bytes, at most 128 (the swizzle span)"));
        }
        Ok(Bf16TileMap { dims: [cols as u64, rows as u64], row_stride, box_dims: [box_cols, box_rows] })
    }
}

#[cfg(feature = "cuda")]
pub use gpu::TensorMap;

#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use cudarc::driver::sys;

    /// An encoded `CUtensorMap`, passed to a kernel by value (`const __grid_constant__`).
    #[repr(transparent)]
    #[derive(Clone, Copy)]
    pub struct TensorMap(sys::CUtensorMap);

    // SAFETY: a plain 128-byte struct, copied into the kernel's parameter space by cuLaunchKernel.
    unsafe impl cudarc::driver::DeviceRepr for TensorMap {}

    impl Bf16TileMap {
        /// The driver's encoding of this map at `addr` (the context must be current): 128-byte
        /// swizzle, 256-byte L2 promotion, out-of-bounds elements read as zero.
        pub fn encode(&self, what: &str, addr: u64) -> Result<TensorMap> {
            let mut map = sys::CUtensorMap { opaque: [0; 16] };
            let strides = [self.row_stride];
            let elem_strides = [1u32, 1];
            // SAFETY: every pointer is to a live local array of the length the rank (2) implies.
            let r = unsafe {
                sys::cuTensorMapEncodeTiled(
                    &mut map,
                    sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                    2,
                    addr as *mut std::ffi::c_void,
                    self.dims.as_ptr(),
                    strides.as_ptr(),
                    self.box_dims.as_ptr(),
                    elem_strides.as_ptr(),
                    sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                    sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
                    sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                    sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
                )
            };
            if r != sys::CUresult::CUDA_SUCCESS {
                return Err(Error::cuda(format!("{what}: cuTensorMapEncodeTiled({self:?}, address {addr:#x})"), r));
            }
            Ok(TensorMap(map))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_v6_maps_describe_the_operands() {
        // A [M, K] in boxes of 128 rows x 64 k; B [K, N] in boxes of 64 k x 64 n.
        let a = Bf16TileMap::new("A", 0x1000, 1000, 776, 128, 64).unwrap();
        assert_eq!(a.dims, [776, 1000]);
        assert_eq!(a.row_stride, 1552);
        assert_eq!(a.box_dims, [64, 128]);
        let b = Bf16TileMap::new("B", 0x2000, 776, 8, 64, 64).unwrap();
        assert_eq!((b.dims, b.row_stride, b.box_dims), ([8, 776], 16, [64, 64]));
    }

    #[test]
    fn maps_the_tma_unit_cannot_take_are_named_errors() {
        let err = |r: Result<Bf16TileMap>| r.unwrap_err().to_string();
        assert!(err(Bf16TileMap::new("A", 0x1000, 4, 12, 128, 64)).contains("cols % 8"));
        assert!(err(Bf16TileMap::new("A", 0x1008, 4, 16, 128, 64)).contains("not 16-byte aligned"));
        assert!(err(Bf16TileMap::new("A", 0x1000, 0, 16, 128, 64)).contains("1..=2^32"));
        assert!(err(Bf16TileMap::new("B", 0x1000, 4, 16, 64, 128)).contains("swizzle span"));
        assert!(err(Bf16TileMap::new("B", 0x1000, 4, 16, 257, 64)).contains("1..=256"));
        assert!(err(Bf16TileMap::new("B", 0x1000, 4, 16, 64, 4)).contains("multiple of 16 bytes"));
        assert!(Bf16TileMap::new("B", 0x1000, 4, 16, 64, 4).unwrap_err().to_string().starts_with("B: no TMA map for a 4x16"));
    }
}
