//! Storage: the bytes under a tensor, on the CPU or on a CUDA device (candle's design).

use crate::shape::Layout;
use crate::{cuda::CudaStorage, DType, Device};
use half::{bf16, f16};

pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

/// Host buffers, one variant per dtype.
#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
    I64(Vec<i64>),
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::I64(_) => DType::I64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gather the elements at `offsets` into a new buffer converted to `dtype`.
    pub fn gather_as(&self, offsets: impl Iterator<Item = usize>, dtype: DType) -> CpuStorage {
        macro_rules! convert {
            ($src:expr, $to:expr) => {{
                let src = $src;
                offsets.map(|o| $to(src[o])).collect()
            }};
        }
        match (self, dtype) {
            (CpuStorage::F32(v), DType::F32) => CpuStorage::F32(convert!(v, |x| x)),
            (CpuStorage::F32(v), DType::BF16) => CpuStorage::BF16(convert!(v, bf16::from_f32)),
            (CpuStorage::F32(v), DType::F16) => CpuStorage::F16(convert!(v, f16::from_f32)),
            (CpuStorage::F32(v), DType::I64) => CpuStorage::I64(convert!(v, |x: f32| x as i64)),
            (CpuStorage::BF16(v), DType::F32) => CpuStorage::F32(convert!(v, bf16::to_f32)),
            (CpuStorage::BF16(v), DType::BF16) => CpuStorage::BF16(convert!(v, |x| x)),
            (CpuStorage::BF16(v), DType::F16) => CpuStorage::F16(convert!(v, |x: bf16| f16::from_f32(x.to_f32()))),
            (CpuStorage::BF16(v), DType::I64) => CpuStorage::I64(convert!(v, |x: bf16| x.to_f32() as i64)),
            (CpuStorage::F16(v), DType::F32) => CpuStorage::F32(convert!(v, f16::to_f32)),
            (CpuStorage::F16(v), DType::BF16) => CpuStorage::BF16(convert!(v, |x: f16| bf16::from_f32(x.to_f32()))),
            (CpuStorage::F16(v), DType::F16) => CpuStorage::F16(convert!(v, |x| x)),
            (CpuStorage::F16(v), DType::I64) => CpuStorage::I64(convert!(v, |x: f16| x.to_f32() as i64)),
            (CpuStorage::I64(v), DType::F32) => CpuStorage::F32(convert!(v, |x| x as f32)),
            (CpuStorage::I64(v), DType::BF16) => CpuStorage::BF16(convert!(v, |x| bf16::from_f32(x as f32))),
            (CpuStorage::I64(v), DType::F16) => CpuStorage::F16(convert!(v, |x| f16::from_f32(x as f32))),
            (CpuStorage::I64(v), DType::I64) => CpuStorage::I64(convert!(v, |x| x)),
        }
    }

    /// The elements of `layout`, in row-major order, converted to `dtype`: a plain slice copy when
    /// the layout is contiguous and the dtype unchanged.
    pub fn copy_as(&self, layout: &Layout, dtype: DType) -> CpuStorage {
        if layout.is_contiguous() {
            let range = layout.offset..layout.offset + layout.numel();
            return match (self, dtype) {
                (CpuStorage::F32(v), DType::F32) => CpuStorage::F32(v[range].to_vec()),
                (CpuStorage::BF16(v), DType::BF16) => CpuStorage::BF16(v[range].to_vec()),
                (CpuStorage::F16(v), DType::F16) => CpuStorage::F16(v[range].to_vec()),
                (CpuStorage::I64(v), DType::I64) => CpuStorage::I64(v[range].to_vec()),
                _ => self.gather_as(range, dtype),
            };
        }
        if let (CpuStorage::F32(v), DType::F32) = (self, dtype) {
            let mut out = Vec::with_capacity(layout.numel());
            layout.for_each_run(|s, n, st| {
                if st == 1 {
                    out.extend_from_slice(&v[s..s + n]);
                } else {
                    out.extend((0..n).map(|t| v[s + t * st]));
                }
            });
            return CpuStorage::F32(out);
        }
        self.gather_as(layout.offsets(), dtype)
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CpuStorage::F32(v) => bytemuck::cast_slice(v),
            CpuStorage::BF16(v) => bytemuck::cast_slice(v),
            CpuStorage::F16(v) => bytemuck::cast_slice(v),
            CpuStorage::I64(v) => bytemuck::cast_slice(v),
        }
    }
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(c) => c.device(),
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(c) => c.dtype(),
            Storage::Cuda(c) => c.dtype(),
        }
    }
}
