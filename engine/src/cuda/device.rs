//! CUDA contexts and device buffers through cudarc (dynamic loading: nothing is linked at build time).
//! One shared `kernels::device::Gpu` per device: its stream carries uploads, downloads and kernels.

use crate::storage::CpuStorage;
use crate::{DType, Device, Error, Result};
use cudarc::driver::{CudaContext, CudaSlice};
use kernels::device::Gpu;
use std::sync::{Arc, Mutex, OnceLock};

/// Device memory, one variant per dtype (bf16 and f16 stored as raw u16).
pub enum CudaStorage {
    F32(CudaSlice<f32>, usize),
    U16(CudaSlice<u16>, DType, usize),
    I64(CudaSlice<i64>, usize),
}

impl CudaStorage {
    pub fn device(&self) -> Device {
        match self {
            CudaStorage::F32(_, o) | CudaStorage::U16(_, _, o) | CudaStorage::I64(_, o) => Device::Cuda(*o),
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            CudaStorage::F32(..) => DType::F32,
            CudaStorage::U16(_, d, _) => *d,
            CudaStorage::I64(..) => DType::I64,
        }
    }
}

/// libcuda is loaded lazily and a missing library panics inside cudarc: check first.
pub fn probe(ordinal: usize) -> std::result::Result<String, String> {
    if !driver_present() {
        return Err("no CUDA driver: libcuda.so not found".into());
    }
    let g = gpu(ordinal).map_err(|e| e.to_string())?;
    Ok(format!("cuda:{ordinal} {} ({}, driver {})", g.info.name, g.info.arch, g.info.driver_version))
}

fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda; it touches no CUDA state.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// One [`Gpu`] per ordinal (its context, its one stream, every kernel module loaded), created on
/// first use and shared: tensors, the engine's ops and the CLI's kernel tools all run on the same
/// stream, so work on it is ordered without events.
pub fn gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    static GPUS: OnceLock<Mutex<Vec<Option<Arc<Gpu>>>>> = OnceLock::new();
    if !driver_present() {
        return Err(Error::Cuda(format!("cuda:{ordinal} requested, but no CUDA driver (libcuda.so) was found")));
    }
    let mut all = GPUS.get_or_init(|| Mutex::new(Vec::new())).lock().unwrap_or_else(|e| e.into_inner());
    if all.len() <= ordinal {
        all.resize(ordinal + 1, None);
    }
    if let Some(g) = &all[ordinal] {
        return Ok(g.clone());
    }
    let g = Arc::new(Gpu::new(ordinal).map_err(|e| Error::Cuda(format!("cuda:{ordinal}: {e}")))?);
    // Freed tensors' memory stays in the stream-ordered pool for the next step's tensors instead
    // of going back to the driver at every synchronize (`bench alloc --device cuda` measures both).
    g.set_pool_release_threshold(u64::MAX).map_err(|e| Error::Cuda(format!("cuda:{ordinal}: {e}")))?;
    all[ordinal] = Some(g.clone());
    Ok(g)
}

/// The CUDA context of device `ordinal` (that of [`gpu`]).
pub fn context(ordinal: usize) -> Result<Arc<CudaContext>> {
    Ok(gpu(ordinal)?.ctx.clone())
}

fn err(e: impl std::fmt::Debug) -> Error {
    Error::Cuda(format!("{e:?}"))
}

pub fn upload(src: &CpuStorage, ordinal: usize) -> Result<CudaStorage> {
    let g = gpu(ordinal)?;
    let bytes = src.len() * src.dtype().size_in_bytes();
    let err = |e| super::ops::alloc_failed(&g, "upload to the GPU", bytes, e);
    Ok(match src {
        CpuStorage::F32(v) => CudaStorage::F32(g.upload(v).map_err(err)?, ordinal),
        CpuStorage::BF16(v) => CudaStorage::U16(g.upload(bytemuck::cast_slice::<_, u16>(v)).map_err(err)?, DType::BF16, ordinal),
        CpuStorage::F16(v) => CudaStorage::U16(g.upload(bytemuck::cast_slice::<_, u16>(v)).map_err(err)?, DType::F16, ordinal),
        CpuStorage::I64(v) => CudaStorage::I64(g.upload(v).map_err(err)?, ordinal),
    })
}

pub fn download(src: &CudaStorage) -> Result<CpuStorage> {
    let Device::Cuda(ordinal) = src.device() else { unreachable!() };
    let stream = gpu(ordinal)?.stream.clone();
    Ok(match src {
        CudaStorage::F32(s, _) => CpuStorage::F32(stream.clone_dtoh(s).map_err(err)?),
        CudaStorage::U16(s, dtype, _) => {
            let raw: Vec<u16> = stream.clone_dtoh(s).map_err(err)?;
            match dtype {
                DType::BF16 => CpuStorage::BF16(bytemuck::cast_vec(raw)),
                _ => CpuStorage::F16(bytemuck::cast_vec(raw)),
            }
        }
        CudaStorage::I64(s, _) => CpuStorage::I64(stream.clone_dtoh(s).map_err(err)?),
    })
}
