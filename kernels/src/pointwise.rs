//! Launchers for `cu/pointwise.cu`: the engine's remaining f32 ops (unary functions, clamp,
//! where, min/max gradients, fill, view-to-view copies, max/argmax, sampling from rows,
//! gather/scatter along rows, log-softmax and the softmax backward). Their reference is the CPU engine itself:
//! `engine::conformance` runs each op on both devices (`instructgpt selftest --device cuda`).

pub const ENTRIES: &[&str] = &[
    "unary_fwd_f32",
    "unary_bwd_f32",
    "where_f32",
    "minmax_bwd_f32",
    "fill_f32",
    "strided_assign_f32",
    "strided_assign_u16",
    "max_rows_f32",
    "sample_rows_f32",
    "gather_rows_f32",
    "scatter_add_rows_f32",
    "log_softmax_fwd_f32",
    "softmax_bwd_f32",
    "cast_bf16_strided",
    "copy_bf16_strided",
    "widen_bf16_strided",
    "cast_bf16_transposed",
    "copy_bf16_transposed",
];

/// The unary functions of `unary_fwd_f32` / `unary_bwd_f32` (discriminants = the kernel's codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    Exp = 0,
    Log = 1,
    Tanh = 2,
    Sigmoid = 3,
    LogSigmoid = 4,
    Sqr = 5,
    Sqrt = 6,
    Relu = 7,
    /// Bounds passed as `lo`, `hi`.
    Clamp = 8,
    /// `x·lo + hi`.
    Affine = 9,
}

#[cfg(feature = "cuda")]
pub use imp::checks;

#[cfg(feature = "cuda")]
mod imp {
    use super::Unary;
    use crate::copy::{padded, TransposedBatch, MAX_RANK};
    use crate::device::{check_len, elementwise_cfg, row_cfg, to_i32, Gpu};
    use crate::{Error, Result};
    use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

    /// Elements a view touches: 1 + its largest offset (0 for an empty view).
    fn extent(offset: usize, shape: &[usize], strides: &[usize]) -> usize {
        if shape.contains(&0) {
            return 0;
        }
        offset + 1 + shape.iter().zip(strides).map(|(d, s)| (d - 1) * s).sum::<usize>()
    }

    /// The view casts bit for bit on a transposed view, outputs poisoned first: f32 -> bf16
    /// against `half`'s round-to-nearest-even (ties, tiny, huge and non-finite values included),
    /// padded rows too; bf16 -> bf16 (padded) and bf16 -> f32 on those bits. Every other kernel
    /// here is checked through the engine (`engine::conformance`).
    pub fn checks(gpu: &Gpu) -> Vec<crate::selftest::Check> {
        use crate::selftest::Check;
        use half::bf16;
        let (rows, cols) = (37usize, 129usize);
        let mut src: Vec<f32> = (0..rows * cols).map(|i| ((i as f32) * 0.618_034).sin() * 10f32.powi((i % 13) as i32 - 6)).collect();
        let specials = [f32::from_bits(0x3f80_8000), f32::from_bits(0x3f81_8000), f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, 1e-40, -0.0];
        src[..specials.len()].copy_from_slice(&specials);
        let src16: Vec<u16> = src.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        // The view: the transpose of [rows, cols], i.e. [cols, rows] with strides [1, cols].
        // Poison that is a finite number: an unwritten element never passes as a NaN.
        const POISON: u16 = 0x1234;
        // Row c of dst: column c of the source, then pitch - rows untouched (still poison).
        let transposed = |pitch: usize| -> Vec<u16> {
            let src16 = &src16;
            (0..cols).flat_map(|c| (0..pitch).map(move |r| if r < rows { src16[r * cols + c] } else { POISON })).collect()
        };
        let (view, strides) = ([cols, rows], [1, cols]);
        let bits_check = |kernel: &str, desc: String, got: Result<Vec<u32>>, want: Vec<u32>, nan: fn(u32) -> bool| match got {
            Ok(got) if got.len() != want.len() => Check::failed(kernel, desc, "bit-exact", format!("{} elements where {} were expected", got.len(), want.len())),
            Ok(got) => match got.iter().zip(&want).filter(|(g, w)| g != w && !(nan(**g) && nan(**w))).count() {
                0 => Check::new(kernel, desc, "bit-exact", crate::reference::ErrStats::default(), 0.0),
                bad => Check::failed(kernel, desc, "bit-exact", format!("{bad} of {} elements differ", want.len())),
            },
            Err(e) => Check::failed(kernel, desc, "bit-exact", e.to_string()),
        };
        let nan16: fn(u32) -> bool = |b| bf16::from_bits(b as u16).is_nan();
        let up = |v: &[u16]| -> Result<CudaSlice<u16>> { gpu.stream.clone_htod(v).map_err(|e| Error::cuda("upload", e)) };
        let down16 = |d: &CudaSlice<u16>| -> Result<Vec<u32>> { Ok(gpu.stream.clone_dtoh(d).map_err(|e| Error::cuda("download", e))?.into_iter().map(u32::from).collect()) };
        let mut checks = Vec::new();
        for pitch in [rows, rows + 3] {
            let desc = format!("[{cols}, {rows}] transposed view, pitch {pitch}");
            let want: Vec<u32> = transposed(pitch).into_iter().map(u32::from).collect();
            let got = (|| {
                let s = gpu.stream.clone_htod(&src).map_err(|e| Error::cuda("upload", e))?;
                let mut d = up(&vec![POISON; cols * pitch])?;
                gpu.cast_bf16_strided(&s, 0, &view, &strides, &mut d, rows, pitch)?;
                gpu.sync("cast_bf16_strided")?;
                down16(&d)
            })();
            checks.push(bits_check("cast_bf16_strided", desc.clone(), got, want.clone(), nan16));
            let got = (|| {
                let mut d = up(&vec![POISON; cols * pitch])?;
                gpu.copy_bf16_strided(&up(&src16)?, 0, &view, &strides, &mut d, rows, pitch)?;
                gpu.sync("copy_bf16_strided")?;
                down16(&d)
            })();
            checks.push(bits_check("copy_bf16_strided", desc, got, want, nan16));
        }
        let want: Vec<u32> = transposed(rows).into_iter().map(|b| bf16::from_bits(b).to_f32().to_bits()).collect();
        let got = (|| {
            let mut d = gpu.stream.clone_htod(&vec![f32::NAN; cols * rows]).map_err(|e| Error::cuda("upload", e))?;
            gpu.widen_bf16_strided(&up(&src16)?, 0, &view, &strides, &mut d)?;
            gpu.sync("widen_bf16_strided")?;
            Ok(gpu.stream.clone_dtoh(&d).map_err(|e| Error::cuda("download", e))?.into_iter().map(f32::to_bits).collect())
        })();
        checks.push(bits_check("widen_bf16_strided", format!("[{cols}, {rows}] transposed view"), got, want, |b| f32::from_bits(b).is_nan()));
        // The tiled kernels: 3 transposed matrices of 37 x 35 (sizes not multiples of 32), rows
        // ld = 40 apart, a gap between matrices, an offset; dst rows padded to 40.
        let t = TransposedBatch { batch: 3, rows: 37, cols: 35, ld: 40, batch_stride: 35 * 40 + 7 };
        let (offset, pitch) = (5, 40);
        let view = crate::copy::gather_reference(&src, offset, &[t.batch, t.rows, t.cols], &[t.batch_stride, 1, t.ld]);
        let want: Vec<u32> = (0..t.batch * t.rows * pitch).map(|i| if i % pitch < t.cols { u32::from(bf16::from_f32(view[i / pitch * t.cols + i % pitch]).to_bits()) } else { u32::from(POISON) }).collect();
        let desc = format!("{t:?} +{offset}, pitch {pitch}");
        let got = (|| {
            let s = gpu.stream.clone_htod(&src).map_err(|e| Error::cuda("upload", e))?;
            let mut d = up(&vec![POISON; t.batch * t.rows * pitch])?;
            gpu.cast_bf16_transposed(&s, offset, t, &mut d, pitch)?;
            gpu.sync("cast_bf16_transposed")?;
            down16(&d)
        })();
        checks.push(bits_check("cast_bf16_transposed", desc.clone(), got, want.clone(), nan16));
        let got = (|| {
            let mut d = up(&vec![POISON; t.batch * t.rows * pitch])?;
            gpu.copy_bf16_transposed(&up(&src16)?, offset, t, &mut d, pitch)?;
            gpu.sync("copy_bf16_transposed")?;
            down16(&d)
        })();
        checks.push(bits_check("copy_bf16_transposed", desc, got, want, nan16));
        checks
    }

    impl Gpu {
        fn cfg_n(&self, n: usize) -> LaunchConfig {
            elementwise_cfg(n, self.info.sm_count)
        }

        /// y = op(x) over `n` elements.
        pub fn unary_fwd(&self, op: Unary, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>, n: usize, lo: f32, hi: f32) -> Result<()> {
            check_len("unary x", x.len(), n)?;
            check_len("unary y", y.len(), n)?;
            let (n64, code) = (n as i64, op as i32);
            let mut b = self.stream.launch_builder(self.f("unary_fwd_f32")?);
            b.arg(x).arg(y).arg(&n64).arg(&code).arg(&lo).arg(&hi);
            unsafe { b.launch(self.cfg_n(n)) }.map_err(|e| Error::cuda(format!("launch unary_fwd_f32 {op:?} n={n}"), e))?;
            Ok(())
        }

        /// dx = g · op'(x) (reading x or the forward's y, whichever the rule needs).
        #[allow(clippy::too_many_arguments)]
        pub fn unary_bwd(&self, op: Unary, x: &CudaSlice<f32>, y: &CudaSlice<f32>, g: &CudaSlice<f32>, dx: &mut CudaSlice<f32>, n: usize, lo: f32, hi: f32) -> Result<()> {
            for (w, l) in [("x", x.len()), ("y", y.len()), ("g", g.len()), ("dx", dx.len())] {
                check_len(&format!("unary backward {w}"), l, n)?;
            }
            let (n64, code) = (n as i64, op as i32);
            let mut b = self.stream.launch_builder(self.f("unary_bwd_f32")?);
            b.arg(x).arg(y).arg(g).arg(dx).arg(&n64).arg(&code).arg(&lo).arg(&hi);
            unsafe { b.launch(self.cfg_n(n)) }.map_err(|e| Error::cuda(format!("launch unary_bwd_f32 {op:?} n={n}"), e))?;
            Ok(())
        }

        /// out = c != 0 ? a : b.
        pub fn where_f32(&self, c: &CudaSlice<f32>, a: &CudaSlice<f32>, b_: &CudaSlice<f32>, out: &mut CudaSlice<f32>, n: usize) -> Result<()> {
            for (w, l) in [("cond", c.len()), ("a", a.len()), ("b", b_.len()), ("out", out.len())] {
                check_len(&format!("where {w}"), l, n)?;
            }
            let n64 = n as i64;
            let mut b = self.stream.launch_builder(self.f("where_f32")?);
            b.arg(c).arg(a).arg(b_).arg(out).arg(&n64);
            unsafe { b.launch(self.cfg_n(n)) }.map_err(|e| Error::cuda(format!("launch where_f32 n={n}"), e))?;
            Ok(())
        }

        /// The gradients of minimum (`is_max` false) or maximum for both operands.
        #[allow(clippy::too_many_arguments)]
        pub fn minmax_bwd(&self, a: &CudaSlice<f32>, b_: &CudaSlice<f32>, g: &CudaSlice<f32>, da: &mut CudaSlice<f32>, db: &mut CudaSlice<f32>, n: usize, is_max: bool) -> Result<()> {
            for (w, l) in [("a", a.len()), ("b", b_.len()), ("g", g.len()), ("da", da.len()), ("db", db.len())] {
                check_len(&format!("min/max backward {w}"), l, n)?;
            }
            let (n64, m) = (n as i64, is_max as i32);
            let mut b = self.stream.launch_builder(self.f("minmax_bwd_f32")?);
            b.arg(a).arg(b_).arg(g).arg(da).arg(db).arg(&n64).arg(&m);
            unsafe { b.launch(self.cfg_n(n)) }.map_err(|e| Error::cuda(format!("launch minmax_bwd_f32 n={n}"), e))?;
            Ok(())
        }

        /// Every element of `dst` set to `value`.
        pub fn fill_f32(&self, dst: &mut CudaSlice<f32>, value: f32) -> Result<()> {
            let n = dst.len();
            let n64 = n as i64;
            let mut b = self.stream.launch_builder(self.f("fill_f32")?);
            b.arg(dst).arg(&n64).arg(&value);
            unsafe { b.launch(self.cfg_n(n)) }.map_err(|e| Error::cuda(format!("launch fill_f32 n={n}"), e))?;
            Ok(())
        }

        /// The view (`dst_offset`, `dst_strides`) of `dst` = the view (`src_offset`, `src_strides`)
        /// of `src`, both over `shape` (rank <= 6; merge dims first). Destination strides must not
        /// be 0 where the size is above 1 (one element written twice is a race).
        #[allow(clippy::too_many_arguments)]
        pub fn strided_assign_f32(&self, src: &CudaSlice<f32>, src_offset: usize, src_strides: &[usize], dst: &mut CudaSlice<f32>, dst_offset: usize, dst_strides: &[usize], shape: &[usize]) -> Result<()> {
            self.strided_assign("strided_assign_f32", src, src_offset, src_strides, dst, dst_offset, dst_strides, shape)
        }

        /// [`Self::strided_assign_f32`] for 16-bit elements (bf16 bit patterns).
        #[allow(clippy::too_many_arguments)]
        pub fn strided_assign_u16(&self, src: &CudaSlice<u16>, src_offset: usize, src_strides: &[usize], dst: &mut CudaSlice<u16>, dst_offset: usize, dst_strides: &[usize], shape: &[usize]) -> Result<()> {
            self.strided_assign("strided_assign_u16", src, src_offset, src_strides, dst, dst_offset, dst_strides, shape)
        }

        #[allow(clippy::too_many_arguments)]
        fn strided_assign<T: cudarc::driver::DeviceRepr>(
            &self, kernel: &str, src: &CudaSlice<T>, src_offset: usize, src_strides: &[usize], dst: &mut CudaSlice<T>, dst_offset: usize, dst_strides: &[usize], shape: &[usize],
        ) -> Result<()> {
            let what = format!("{kernel} shape {shape:?} from strides {src_strides:?} +{src_offset} to strides {dst_strides:?} +{dst_offset}");
            let (d, s) = padded(shape, src_strides).ok_or_else(|| Error::Other(format!("{what}: rank > {MAX_RANK} or strides of another rank")))?;
            let (_, t) = padded(shape, dst_strides).ok_or_else(|| Error::Other(format!("{what}: destination strides of another rank")))?;
            let n: usize = shape.iter().product();
            if n == 0 {
                return Ok(());
            }
            if shape.iter().zip(dst_strides).any(|(&d, &s)| d > 1 && s == 0) {
                return Err(Error::Other(format!("{what}: the destination is a broadcast view")));
            }
            let (se, de) = (extent(src_offset, shape, src_strides), extent(dst_offset, shape, dst_strides));
            if se > src.len() || de > dst.len() {
                return Err(Error::Other(format!("{what}: reads {se} of {} source elements, writes up to {de} of {}", src.len(), dst.len())));
            }
            let n64 = n as i64;
            let sv = src.slice(src_offset..);
            let mut dv = dst.slice_mut(dst_offset..);
            let args: Vec<i64> = d[1..].iter().chain(&s).chain(&t).map(|&x| x as i64).collect();
            let mut b = self.stream.launch_builder(self.f(kernel)?);
            b.arg(&sv).arg(&mut dv).arg(&n64);
            for x in &args {
                b.arg(x);
            }
            unsafe { b.launch(self.cfg_n(n)) }.map_err(|e| Error::cuda(format!("launch {what}"), e))?;
            Ok(())
        }

        /// dst (bf16 bits) = the view (`offset`, `strides`) of `src`, rounded to nearest even
        /// (rank <= 6; merge dims first). Its elements, row-major, are rows of `cols`, written
        /// `pitch` apart in dst (pitch = cols: contiguous; the pad is left as it was).
        #[allow(clippy::too_many_arguments)]
        pub fn cast_bf16_strided(&self, src: &CudaSlice<f32>, offset: usize, shape: &[usize], strides: &[usize], dst: &mut CudaSlice<u16>, cols: usize, pitch: usize) -> Result<()> {
            self.cast_view("cast_bf16_strided", src, offset, shape, strides, dst, cols, pitch)
        }

        /// As [`Self::cast_bf16_strided`] from a bf16 view: the bits copied (a bf16 view
        /// gathered, or padded for the tensor cores).
        #[allow(clippy::too_many_arguments)]
        pub fn copy_bf16_strided(&self, src: &CudaSlice<u16>, offset: usize, shape: &[usize], strides: &[usize], dst: &mut CudaSlice<u16>, cols: usize, pitch: usize) -> Result<()> {
            self.cast_view("copy_bf16_strided", src, offset, shape, strides, dst, cols, pitch)
        }

        /// dst (f32, contiguous) = the bf16 view (`offset`, `strides`) of `src`, widened exactly.
        pub fn widen_bf16_strided(&self, src: &CudaSlice<u16>, offset: usize, shape: &[usize], strides: &[usize], dst: &mut CudaSlice<f32>) -> Result<()> {
            let cols = shape.last().copied().unwrap_or(1).max(1);
            self.cast_view("widen_bf16_strided", src, offset, shape, strides, dst, cols, cols)
        }

        /// As [`Self::cast_bf16_strided`] for a batch of transposed matrices (the view from
        /// `offset` with [`crate::copy::transposed_batch`]'s layout), tiled so that reads and
        /// writes are coalesced: dst rows of `t.cols`, `pitch` apart.
        pub fn cast_bf16_transposed(&self, src: &CudaSlice<f32>, offset: usize, t: TransposedBatch, dst: &mut CudaSlice<u16>, pitch: usize) -> Result<()> {
            self.cast_tiles("cast_bf16_transposed", src, offset, t, dst, pitch)
        }

        /// As [`Self::cast_bf16_transposed`] from bf16 (the bits copied).
        pub fn copy_bf16_transposed(&self, src: &CudaSlice<u16>, offset: usize, t: TransposedBatch, dst: &mut CudaSlice<u16>, pitch: usize) -> Result<()> {
            self.cast_tiles("copy_bf16_transposed", src, offset, t, dst, pitch)
        }

        fn cast_tiles<S: DeviceRepr, D: DeviceRepr>(&self, kernel: &str, src: &CudaSlice<S>, offset: usize, t: TransposedBatch, dst: &mut CudaSlice<D>, pitch: usize) -> Result<()> {
            let what = format!("{kernel} {t:?} +{offset}, pitch {pitch}");
            if t.batch == 0 || t.rows == 0 || t.cols == 0 {
                return Ok(());
            }
            let se = offset + 1 + (t.batch - 1) * t.batch_stride + (t.cols - 1) * t.ld + (t.rows - 1);
            let de = t.batch * t.rows * pitch;
            if pitch < t.cols || se > src.len() || dst.len() < de {
                return Err(Error::Other(format!("{what}: reads {se} of {} source elements, writes {de} of {} (pitch >= cols)", src.len(), dst.len())));
            }
            if t.rows.div_ceil(32) > 65535 || t.batch > 65535 {
                return Err(Error::Other(format!("{what}: grid beyond 65535 in y or z")));
            }
            let v: [i64; 5] = [t.rows as i64, t.cols as i64, t.ld as i64, t.batch_stride as i64, pitch as i64];
            let sv = src.slice(offset..);
            let mut b = self.stream.launch_builder(self.f(kernel)?);
            b.arg(&sv).arg(dst);
            for x in &v {
                b.arg(x);
            }
            let cfg = LaunchConfig { grid_dim: (t.cols.div_ceil(32) as u32, t.rows.div_ceil(32) as u32, t.batch as u32), block_dim: (32, 8, 1), shared_mem_bytes: 0 };
            unsafe { b.launch(cfg) }.map_err(|e| Error::cuda(format!("launch {what}"), e))?;
            Ok(())
        }

        #[allow(clippy::too_many_arguments)]
        fn cast_view<S: DeviceRepr, D: DeviceRepr>(&self, kernel: &str, src: &CudaSlice<S>, offset: usize, shape: &[usize], strides: &[usize], dst: &mut CudaSlice<D>, cols: usize, pitch: usize) -> Result<()> {
            let what = format!("{kernel} shape {shape:?} strides {strides:?} +{offset}, rows of {cols} at pitch {pitch}");
            let (d, s) = padded(shape, strides).ok_or_else(|| Error::Other(format!("{what}: rank > {MAX_RANK} or strides of another rank")))?;
            let n: usize = shape.iter().product();
            if n == 0 {
                return Ok(());
            }
            if cols == 0 || pitch < cols || !n.is_multiple_of(cols) {
                return Err(Error::Other(format!("{what}: {n} elements are not rows of {cols} (pitch >= cols)")));
            }
            let (se, de) = (extent(offset, shape, strides), n / cols * pitch);
            if se > src.len() || dst.len() < de {
                return Err(Error::Other(format!("{what}: reads {se} of {} source elements, writes {de} of {}", src.len(), dst.len())));
            }
            let (n64, c64, p64) = (n as i64, cols as i64, pitch as i64);
            let sv = src.slice(offset..);
            let args: Vec<i64> = d[1..].iter().chain(&s).map(|&x| x as i64).collect();
            let mut b = self.stream.launch_builder(self.f(kernel)?);
            b.arg(&sv).arg(dst).arg(&n64).arg(&c64).arg(&p64);
            for x in &args {
                b.arg(x);
            }
            unsafe { b.launch(self.cfg_n(n)) }.map_err(|e| Error::cuda(format!("launch {what}"), e))?;
            Ok(())
        }

        /// Each row's maximum and the index of its first maximum.
        pub fn max_rows(&self, x: &CudaSlice<f32>, vals: &mut CudaSlice<f32>, idx: &mut CudaSlice<i64>, rows: usize, cols: usize) -> Result<()> {
            check_len("max x", x.len(), rows * cols)?;
            check_len("max values", vals.len(), rows)?;
            check_len("max indices", idx.len(), rows)?;
            if cols == 0 {
                return Err(Error::Other("max_rows: rows of 0 columns have no maximum".into()));
            }
            let (r, c) = (to_i32("rows", rows)?, to_i32("cols", cols)?);
            let mut b = self.stream.launch_builder(self.f("max_rows_f32")?);
            b.arg(x).arg(vals).arg(idx).arg(&r).arg(&c);
            unsafe { b.launch(row_cfg(rows)) }.map_err(|e| Error::cuda(format!("launch max_rows_f32 {rows}x{cols}"), e))?;
            Ok(())
        }

        /// One draw per row of x [rows, cols] from softmax(a·x), by inverse CDF from the row's
        /// uniform `u` in [0, 1) (block per row; see the kernel).
        pub fn sample_rows(&self, x: &CudaSlice<f32>, u: &CudaSlice<f32>, idx: &mut CudaSlice<i64>, rows: usize, cols: usize, a: f32) -> Result<()> {
            check_len("sample x", x.len(), rows * cols)?;
            check_len("sample uniforms", u.len(), rows)?;
            check_len("sample indices", idx.len(), rows)?;
            if cols == 0 || rows == 0 {
                return Err(Error::Other(format!("sample_rows: nothing to draw from {rows}x{cols}")));
            }
            let c = to_i32("cols", cols)?;
            let cfg = LaunchConfig { grid_dim: (to_i32("rows", rows)? as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            let mut b = self.stream.launch_builder(self.f("sample_rows_f32")?);
            b.arg(x).arg(u).arg(idx).arg(&c).arg(&a);
            unsafe { b.launch(cfg) }.map_err(|e| Error::cuda(format!("launch sample_rows_f32 {rows}x{cols}"), e))?;
            Ok(())
        }

        /// out [rows, k] = x [rows, v] at `ids` [rows, k] along each row (NaN for a bad id).
        pub fn gather_rows(&self, x: &CudaSlice<f32>, ids: &CudaSlice<i64>, out: &mut CudaSlice<f32>, rows: usize, v: usize, k: usize) -> Result<()> {
            self.rows_ids("gather_rows_f32", x, ids, out, rows, v, k, false)
        }

        /// dx [rows, v] += g [rows, k] at `ids` (dx must be zeroed first for a gradient).
        pub fn scatter_add_rows(&self, g: &CudaSlice<f32>, ids: &CudaSlice<i64>, dx: &mut CudaSlice<f32>, rows: usize, v: usize, k: usize) -> Result<()> {
            self.rows_ids("scatter_add_rows_f32", g, ids, dx, rows, v, k, true)
        }

        #[allow(clippy::too_many_arguments)]
        fn rows_ids(&self, kernel: &'static str, src: &CudaSlice<f32>, ids: &CudaSlice<i64>, dst: &mut CudaSlice<f32>, rows: usize, v: usize, k: usize, scatter: bool) -> Result<()> {
            let (src_n, dst_n) = if scatter { (rows * k, rows * v) } else { (rows * v, rows * k) };
            check_len(&format!("{kernel} source"), src.len(), src_n)?;
            check_len(&format!("{kernel} ids"), ids.len(), rows * k)?;
            check_len(&format!("{kernel} destination"), dst.len(), dst_n)?;
            let n = rows * k;
            if n == 0 {
                return Ok(());
            }
            let (n64, vv, kk) = (n as i64, to_i32("v", v)?, to_i32("k", k)?);
            let mut b = self.stream.launch_builder(self.f(kernel)?);
            b.arg(src).arg(ids).arg(dst).arg(&n64).arg(&vv).arg(&kk);
            unsafe { b.launch(self.cfg_n(n)) }.map_err(|e| Error::cuda(format!("launch {kernel} rows={rows} v={v} k={k}"), e))?;
            Ok(())
        }

        pub fn log_softmax_fwd(&self, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>, rows: usize, cols: usize) -> Result<()> {
            check_len("log_softmax x", x.len(), rows * cols)?;
            check_len("log_softmax y", y.len(), rows * cols)?;
            let (r, c) = (to_i32("rows", rows)?, to_i32("cols", cols)?);
            let mut b = self.stream.launch_builder(self.f("log_softmax_fwd_f32")?);
            b.arg(x).arg(y).arg(&r).arg(&c);
            unsafe { b.launch(row_cfg(rows)) }.map_err(|e| Error::cuda(format!("launch log_softmax_fwd_f32 {rows}x{cols}"), e))?;
            Ok(())
        }

        /// The backward of softmax (`log` false) or log-softmax from the forward's output `y`.
        pub fn softmax_bwd(&self, y: &CudaSlice<f32>, g: &CudaSlice<f32>, dx: &mut CudaSlice<f32>, rows: usize, cols: usize, log: bool) -> Result<()> {
            for (w, l) in [("y", y.len()), ("g", g.len()), ("dx", dx.len())] {
                check_len(&format!("softmax backward {w}"), l, rows * cols)?;
            }
            let (r, c, is_log) = (to_i32("rows", rows)?, to_i32("cols", cols)?, log as i32);
            let mut b = self.stream.launch_builder(self.f("softmax_bwd_f32")?);
            b.arg(y).arg(g).arg(dx).arg(&r).arg(&c).arg(&is_log);
            unsafe { b.launch(row_cfg(rows)) }.map_err(|e| Error::cuda(format!("launch softmax_bwd_f32 {rows}x{cols}"), e))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every entry point is exported by the source (the registry loads each by name).
    #[test]
    fn every_entry_is_defined_in_the_source() {
        let src = include_str!("cu/pointwise.cu");
        for e in super::ENTRIES {
            assert!(src.contains(&format!(" {e}(")), "{e} missing from cu/pointwise.cu");
        }
    }

    /// The kernel's op codes are `Unary`'s discriminants.
    #[test]
    fn unary_codes_match_the_kernel() {
        use super::Unary::*;
        let src = include_str!("cu/pointwise.cu");
        for (name, op) in [("EXP", Exp), ("LOG", Log), ("TANH", Tanh), ("SIGMOID", Sigmoid), ("LOGSIGMOID", LogSigmoid), ("SQR", Sqr), ("SQRT", Sqrt), ("RELU", Relu), ("CLAMP", Clamp), ("AFFINE", Affine)] {
            assert!(src.contains(&format!("#define U_{name} {}\n", op as i32)), "U_{name} is not {}", op as i32);
        }
    }
}
