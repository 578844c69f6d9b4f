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
}
