//! AdamW over every parameter in one launch (`adamw_multi_f32` in `cu/adamw.cu`): a table of
//! 64-byte records, one per parameter (its buffers, length, learning rate, weight decay, bias
//! corrections), and each parameter's first chunk; block b of the grid updates one
//! [`CHUNK`]-element chunk. [`plan`] builds the table (pure, tested here); the launcher
//! (feature `cuda`) fills in the device pointers and uploads it.

use crate::reference::AdamWParams;

/// Elements per block (must match `ADAMW_CHUNK` in `cu/adamw.cu`).
pub const CHUNK: usize = 16384;

/// The launch's table: `words[..first_chunk_at]` are the records (8 words each),
/// `words[first_chunk_at..]` the first chunk of each tensor and then the total (= `blocks`).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub words: Vec<u64>,
    pub first_chunk_at: usize,
    pub blocks: usize,
}

/// The table for tensors given as ([p, g, m, v] device addresses, length, hyperparameters).
/// An empty tensor gets no chunk (its record is never read).
pub fn plan(tensors: &[([u64; 4], usize, AdamWParams)]) -> Plan {
    let mut words = Vec::with_capacity(tensors.len() * 9 + 1);
    let mut first = Vec::with_capacity(tensors.len() + 1);
    let mut chunks = 0usize;
    let pair = |lo: f32, hi: f32| lo.to_bits() as u64 | (hi.to_bits() as u64) << 32;
    for (ptrs, n, h) in tensors {
        let (bc1, bc2) = h.bias_corrections();
        words.extend(ptrs);
        words.push(*n as u64);
        words.push(pair(h.lr as f32, h.wd as f32));
        words.push(pair(bc1 as f32, bc2 as f32));
        words.push(0);
        first.push(chunks as u64);
        chunks += n.div_ceil(CHUNK);
    }
    first.push(chunks as u64);
    let first_chunk_at = words.len();
    words.extend(first);
    Plan { words, first_chunk_at, blocks: chunks }
}

#[cfg(feature = "cuda")]
pub use gpu::AdamwTensor;

#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use crate::device::{check_len, Gpu};
    use crate::{Error, Result};
    use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

    /// One parameter's buffers and hyperparameters for [`Gpu::adamw_multi`].
    pub struct AdamwTensor<'a> {
        pub p: &'a mut CudaSlice<f32>,
        pub g: &'a CudaSlice<f32>,
        pub m: &'a mut CudaSlice<f32>,
        pub v: &'a mut CudaSlice<f32>,
        /// lr, wd and step are this tensor's; b1, b2 and eps must be the launch's.
        pub h: AdamWParams,
    }

    impl Gpu {
        /// AdamW over many parameters in one launch, each with its own learning rate, decay
        /// and step; `b1`, `b2`, `eps` shared. The table goes up with one small copy; every
        /// buffer's guard is held until the launch is queued.
        pub fn adamw_multi(&self, tensors: &mut [AdamwTensor<'_>], b1: f32, b2: f32, eps: f32) -> Result<()> {
            let count = i32::try_from(tensors.len()).map_err(|_| Error::Other("adamw_multi: too many tensors".into()))?;
            let mut guards = Vec::with_capacity(tensors.len() * 4);
            let mut entries = Vec::with_capacity(tensors.len());
            for (i, t) in tensors.iter_mut().enumerate() {
                let n = t.p.len();
                for (w, l) in [("g", t.g.len()), ("m", t.m.len()), ("v", t.v.len())] {
                    check_len(&format!("adamw_multi tensor {i}: {w}"), l, n)?;
                }
                let (p, gp) = t.p.device_ptr_mut(&self.stream);
                let (g, gg) = t.g.device_ptr(&self.stream);
                let (m, gm) = t.m.device_ptr_mut(&self.stream);
                let (v, gv) = t.v.device_ptr_mut(&self.stream);
                guards.push((gp, gg, gm, gv));
                entries.push(([p, g, m, v], n, t.h));
            }
            let plan = plan(&entries);
            if plan.blocks == 0 {
                return Ok(());
            }
            if plan.blocks > i32::MAX as usize {
                return Err(Error::Other(format!("adamw_multi: {} chunks do not fit grid.x", plan.blocks)));
            }
            let table = self.stream.clone_htod(&plan.words).map_err(|e| Error::cuda("adamw_multi: uploading the tensor table", e))?;
            let (records, first) = (table.slice(0..plan.first_chunk_at), table.slice(plan.first_chunk_at..));
            let mut lb = self.stream.launch_builder(self.f("adamw_multi_f32")?);
            lb.arg(&records).arg(&first).arg(&count).arg(&b1).arg(&b2).arg(&eps);
            let cfg = LaunchConfig { grid_dim: (plan.blocks as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            unsafe { lb.launch(cfg) }.map_err(|e| Error::cuda(format!("launch adamw_multi_f32: {count} tensors, {} blocks", plan.blocks), e))?;
            drop(guards);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_each_tensor_and_its_chunks() {
        let h = |lr: f64, step: i32| AdamWParams { lr, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.1, step };
        let p = plan(&[([1, 2, 3, 4], 5, h(1e-3, 1)), ([5, 6, 7, 8], 0, h(1e-3, 1)), ([9, 10, 11, 12], 2 * CHUNK + 1, h(2e-3, 7))]);
        assert_eq!((p.first_chunk_at, p.blocks), (24, 4));
        assert_eq!(&p.words[24..], &[0, 1, 1, 4]); // an empty tensor takes no chunk
        assert_eq!(&p.words[16..21], &[9, 10, 11, 12, (2 * CHUNK + 1) as u64]);
        let lo_hi = |w: u64| (f32::from_bits(w as u32), f32::from_bits((w >> 32) as u32));
        assert_eq!(lo_hi(p.words[21]), (2e-3, 0.1));
        let (bc1, bc2) = lo_hi(p.words[22]);
        assert!((bc1 as f64 - (1.0 - 0.9f64.powi(7))).abs() < 1e-7 && (bc2 as f64 - (1.0 - 0.999f64.powi(7))).abs() < 1e-7);
        assert_eq!(plan(&[]).blocks, 0);
    }
}
