//! Strided gather: any view of a buffer (permuted, narrowed, broadcast) made contiguous, for
//! kernels that read row-major operands (`strided_assign_f32` of `cu/pointwise.cu` into a
//! row-major destination). Its launcher, its reference and checks.

/// Rank the kernel takes; views of more dims must be merged first.
pub const MAX_RANK: usize = 6;

/// The elements a view reads, in row-major order: the reference, and the CPU engine's gather.
pub fn gather_reference(src: &[f32], offset: usize, shape: &[usize], strides: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        out.push(src[offset + idx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>()]);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// Shape and strides padded to `MAX_RANK` with leading size-1 dims; None when the rank is larger.
pub fn padded(shape: &[usize], strides: &[usize]) -> Option<([usize; MAX_RANK], [usize; MAX_RANK])> {
    if shape.len() > MAX_RANK || strides.len() != shape.len() {
        return None;
    }
    let (mut d, mut s) = ([1usize; MAX_RANK], [0usize; MAX_RANK]);
    let off = MAX_RANK - shape.len();
    d[off..].copy_from_slice(shape);
    s[off..].copy_from_slice(strides);
    Some((d, s))
}

/// A view that is a batch of transposed row-major matrices: after merging (size-1 dims dropped),
/// [R, C] with strides [1, ld], or [B, R, C] with strides [bs, 1, ld]: element (b, r, c) at
/// b·bs + c·ld + r. The tiled cast kernels (`cast_bf16_transposed`, `copy_bf16_transposed`) read
/// such views coalesced; a matmul's transposed operands (Xᵀ, Wᵀ) are this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransposedBatch {
    pub batch: usize,
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
    pub batch_stride: usize,
}

/// The largest grid y and z (matrices of up to 65535·32 rows, 65535 of them).
const GRID_YZ: usize = 65535;

pub fn transposed_batch(shape: &[usize], strides: &[usize]) -> Option<TransposedBatch> {
    let t = match (shape, strides) {
        (&[rows, cols], &[1, ld]) => TransposedBatch { batch: 1, rows, cols, ld, batch_stride: 0 },
        (&[batch, rows, cols], &[batch_stride, 1, ld]) => TransposedBatch { batch, rows, cols, ld, batch_stride },
        _ => return None,
    };
    (t.rows > 1 && t.cols > 1 && t.rows.div_ceil(32) <= GRID_YZ && t.batch <= GRID_YZ).then_some(t)
}

#[cfg(feature = "cuda")]
pub use imp::*;

#[cfg(feature = "cuda")]
mod imp {
    use super::*;
    use crate::device::Gpu;
    use crate::reference::{compare, Ref};
    use crate::selftest::{Check, TOL_F32};
    use crate::{Error, Result};
    use cudarc::driver::CudaSlice;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    impl Gpu {
        /// dst (contiguous over `shape`) = the view of `src` starting at element `offset` with
        /// `strides` (elements; 0 = broadcast), rank <= 6: `strided_assign_f32` into row-major
        /// strides.
        pub fn strided_copy_f32(&self, src: &CudaSlice<f32>, offset: usize, shape: &[usize], strides: &[usize], dst: &mut CudaSlice<f32>) -> Result<()> {
            let mut row_major = vec![1usize; shape.len()];
            for d in (0..shape.len().saturating_sub(1)).rev() {
                row_major[d] = row_major[d + 1] * shape[d + 1];
            }
            self.strided_assign_f32(src, offset, strides, dst, 0, &row_major, shape)
        }
    }

    /// Views of a random buffer: permuted, narrowed (an offset), broadcast, rank 1 to 6, sizes
    /// that are not multiples of anything; outputs poisoned with NaN before the launch.
    pub fn checks(gpu: &Gpu) -> Vec<Check> {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) ^ 0xc09;
        let mut rng = StdRng::seed_from_u64(seed);
        // (shape, strides, offset) over a source of `len` elements.
        let cases: [(&[usize], &[usize], usize); 6] = [
            (&[1], &[1], 0),
            (&[1000], &[1], 37),                        // a narrowed vector
            (&[33, 17], &[1, 33], 0),                   // a transpose
            (&[4, 5, 7], &[5 * 7 * 2, 1, 5], 3),        // permuted, inside a larger buffer
            (&[3, 1, 65, 8], &[0, 0, 8, 1], 11),        // broadcast over the first dim
            (&[2, 3, 2, 5, 3, 7], &[630, 1, 315, 63, 21, 3], 2), // rank 6, every dim strided
        ];
        let mut out = Vec::new();
        for (shape, strides, offset) in cases {
            let desc = format!("{shape:?} strides {strides:?} +{offset}");
            let extent = offset + 1 + shape.iter().zip(strides).map(|(d, s)| (d - 1) * s).sum::<usize>();
            let src: Vec<f32> = (0..extent + 5).map(|_| rng.gen_range(0.5f32..2.0) * if rng.gen() { 1.0 } else { -1.0 }).collect();
            let want = gather_reference(&src, offset, shape, strides);
            let run = || -> Result<Vec<f32>> {
                let gsrc = gpu.stream.clone_htod(&src).map_err(|e| Error::cuda("upload", e))?;
                let mut gdst = gpu.stream.clone_htod(&vec![f32::NAN; want.len()]).map_err(|e| Error::cuda("upload", e))?;
                gpu.strided_copy_f32(&gsrc, offset, shape, strides, &mut gdst)?;
                gpu.sync("strided_copy_f32")?;
                gpu.stream.clone_dtoh(&gdst).map_err(|e| Error::cuda("download", e))
            };
            out.push(match run() {
                Ok(got) => {
                    let r = Ref { value: want.iter().map(|&x| x as f64).collect(), scale: want.iter().map(|&x| x.abs() as f64).collect() };
                    Check::new("strided_copy_f32", desc, "exact", compare(&got, &r), TOL_F32)
                }
                Err(e) => Check::failed("strided_copy_f32", desc, "exact", e.to_string()),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_reads_a_transposed_narrowed_view() {
        // src as a [3, 4] matrix; the view: its transpose's last 2 rows, i.e. columns 2..4.
        let src: Vec<f32> = (0..12).map(|x| x as f32).collect();
        assert_eq!(gather_reference(&src, 2, &[2, 3], &[1, 4]), vec![2.0, 6.0, 10.0, 3.0, 7.0, 11.0]);
        assert_eq!(gather_reference(&src, 5, &[2, 2], &[0, 1]), vec![5.0, 6.0, 5.0, 6.0], "broadcast rows");
        assert_eq!(padded(&[2, 3], &[1, 4]), Some(([1, 1, 1, 1, 2, 3], [0, 0, 0, 0, 1, 4])));
        assert_eq!(padded(&[1; 7], &[1; 7]), None);
    }

    #[test]
    fn transposed_views_are_recognized_and_nothing_else() {
        // Wᵀ of a row-major [5, 7] weight: [7, 5] with strides [1, 7].
        assert_eq!(transposed_batch(&[7, 5], &[1, 7]), Some(TransposedBatch { batch: 1, rows: 7, cols: 5, ld: 7, batch_stride: 0 }));
        // Kᵀ per head of [B·H, T, D] keys: [B·H, D, T] with strides [T·D, 1, D].
        assert_eq!(transposed_batch(&[6, 16, 9], &[144, 1, 16]), Some(TransposedBatch { batch: 6, rows: 16, cols: 9, ld: 16, batch_stride: 144 }));
        // A narrowed source: rows `ld` apart with ld > rows.
        assert_eq!(transposed_batch(&[4, 3], &[1, 10]).map(|t| t.ld), Some(10));
        // Row-major, a vector, rank 1 or 4, and no unit stride on the row dim: the strided kernel.
        for (shape, strides) in [(vec![5, 7], vec![7, 1]), (vec![1, 7], vec![1, 1]), (vec![7, 1], vec![1, 7]), (vec![35], vec![1]), (vec![2, 2, 3, 4], vec![24, 1, 2, 6]), (vec![4, 3], vec![2, 8])] {
            assert_eq!(transposed_batch(&shape, &strides), None, "{shape:?} {strides:?}");
        }
        // Grids beyond the hardware's y/z limit fall back too.
        assert_eq!(transposed_batch(&[65536 * 32, 2], &[1, 65536 * 32]), None);
        assert_eq!(transposed_batch(&[65536, 2, 2], &[4, 1, 2]), None);
    }

    /// The reference the tiled kernels are checked against is the plain gather of the view.
    #[test]
    fn a_transposed_batch_reads_what_the_view_reads() {
        let src: Vec<f32> = (0..200).map(|i| i as f32).collect();
        let (shape, strides, offset) = ([3usize, 4, 5], [60usize, 1, 11], 7);
        let t = transposed_batch(&shape, &strides).unwrap();
        let got: Vec<f32> = (0..t.batch).flat_map(|b| (0..t.rows).flat_map(move |r| (0..t.cols).map(move |c| (b, r, c)))).map(|(b, r, c)| src[offset + b * t.batch_stride + c * t.ld + r]).collect();
        assert_eq!(got, gather_reference(&src, offset, &shape, &strides));
    }
}
