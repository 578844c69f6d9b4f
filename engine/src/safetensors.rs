//! Safetensors files: read through a memory map (validated by the `safetensors` crate, then every
//! failure reported with the file and tensor name), written atomically (temp file, then rename).

use crate::storage::CpuStorage;
use crate::{DType, Error, Result, Tensor};
use ::safetensors::tensor::{Dtype, TensorView};
use ::safetensors::SafeTensors;
use half::{bf16, f16};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An open safetensors file. Tensors are copied out on request; the map stays read-only.
pub struct Reader {
    path: PathBuf,
    map: memmap2::Mmap,
    names: Vec<String>,
}

impl Reader {
    /// Open and validate: header length and JSON, dtypes, shapes and data offsets must all agree
    /// with the file's size.
    pub fn open(path: impl AsRef<Path>) -> Result<Reader> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| Error::file(&path, format!("cannot open: {e}")))?;
        // SAFETY: the map is read-only and private to this process; a concurrent writer of the same
        // file is the only hazard, and we write checkpoints by rename, never in place.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::file(&path, format!("cannot map: {e}")))?;
        let st = SafeTensors::deserialize(&map).map_err(|e| Error::file(&path, describe(&e)))?;
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        drop(st);
        Ok(Reader { path, map, names })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.binary_search_by(|n| n.as_str().cmp(name)).is_ok()
    }

    /// The `__metadata__` map of the header.
    pub fn metadata(&self) -> Result<HashMap<String, String>> {
        let (_, meta) = SafeTensors::read_metadata(&self.map).map_err(|e| Error::file(&self.path, describe(&e)))?;
        Ok(meta.metadata().clone().unwrap_or_default())
    }

    /// A tensor in its stored dtype (F32, BF16, F16 or I64; I32 ids widen to I64).
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let st = SafeTensors::deserialize(&self.map).map_err(|e| Error::file(&self.path, describe(&e)))?;
        let view = st.tensor(name).map_err(|_| Error::file(&self.path, format!("no tensor named {name:?}")))?;
        let data = view.data();
        let storage = match view.dtype() {
            Dtype::F32 => CpuStorage::F32(bytemuck::pod_collect_to_vec(data)),
            Dtype::BF16 => CpuStorage::BF16(bytemuck::pod_collect_to_vec::<u8, bf16>(data)),
            Dtype::F16 => CpuStorage::F16(bytemuck::pod_collect_to_vec::<u8, f16>(data)),
            Dtype::I64 => CpuStorage::I64(bytemuck::pod_collect_to_vec(data)),
            Dtype::I32 => CpuStorage::I64(bytemuck::pod_collect_to_vec::<u8, i32>(data).into_iter().map(i64::from).collect()),
            other => {
                return Err(Error::file(&self.path, format!("tensor {name:?} has dtype {other:?}; supported: F32, BF16, F16, I64, I32")));
            }
        };
        Ok(Tensor::from_cpu(storage, view.shape()))
    }

    /// A tensor converted to `dtype`, which must have exactly `shape`.
    pub fn get_as(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.shape() != shape {
            return Err(Error::file(&self.path, format!("tensor {name:?} has shape {:?}, expected {shape:?}", t.shape())));
        }
        if t.dtype().is_float() != dtype.is_float() {
            return Err(Error::file(&self.path, format!("tensor {name:?} has dtype {:?}, expected {dtype:?}", t.dtype())));
        }
        t.converted(dtype)
    }

    /// Every tensor, in name order.
    pub fn all(&self) -> Result<Vec<(String, Tensor)>> {
        self.names.iter().map(|n| Ok((n.clone(), self.get(n)?))).collect()
    }
}

fn describe(e: &::safetensors::SafeTensorError) -> String {
    use ::safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => "not a safetensors file: shorter than its 8-byte header length".into(),
        E::InvalidHeaderLength => "truncated or corrupt: the header length points past the end of the file".into(),
        E::HeaderTooLarge => "corrupt: the header length is implausibly large".into(),
        E::InvalidHeader(_) | E::InvalidHeaderDeserialization(_) | E::JsonError(_) => format!("corrupt header: {e:?}"),
        E::MetadataIncompleteBuffer => "truncated or padded: the tensor data does not end where the file ends".into(),
        E::InvalidOffset(name) => format!("tensor {name:?} has data offsets outside the file or overlapping another tensor"),
        E::TensorInvalidInfo | E::ValidationOverflow => format!("a tensor's dtype and shape disagree with its data offsets ({e:?})"),
        other => format!("{other:?}"),
    }
}

/// Write `tensors` to `path` atomically: a temp file in the same directory, synced, then renamed
/// over the target, so a crash leaves either the old file or the new one. `dtype` converts float
/// tensors (e.g. to BF16) on the way; ids stay I64.
pub fn save(path: impl AsRef<Path>, tensors: &[(String, Tensor)], dtype: Option<DType>, metadata: Option<HashMap<String, String>>) -> Result<()> {
    let path = path.as_ref();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let target = match dtype {
            Some(d) if t.dtype().is_float() => d,
            _ => t.dtype(),
        };
        let st_dtype = match target {
            DType::F32 => Dtype::F32,
            DType::BF16 => Dtype::BF16,
            DType::F16 => Dtype::F16,
            DType::I64 => Dtype::I64,
        };
        let bytes = t.converted(target)?.contiguous_storage()?.as_bytes().to_vec();
        owned.push((name.clone(), st_dtype, t.shape().to_vec(), bytes));
    }
    let views = owned
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.as_str(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::file(path, format!("{e:?}")))?;
    let meta = metadata.unwrap_or_else(|| HashMap::from([("format".to_string(), "pt".to_string())]));
    let bytes = ::safetensors::serialize(views, Some(meta)).map_err(|e| Error::file(path, format!("{e:?}")))?;
    write_atomic(path, &bytes)
}

/// Replace `path` with `bytes` so that readers see the old or the new file, never a partial one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::file(path, "not a file path"))?.to_string_lossy();
    // Unique per call (process id + counter): two threads saving the same path must not share
    // (and truncate or rename away) one temp file.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{seq}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Persist the rename itself.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::file(path, format!("cannot write: {e}"))
    })
}
