//! On-disk cache of compiled PTX. The key is a sha256 over everything that changes
//! the output: source, arch, NVRTC version, options and include dir. Writes are
//! atomic (temp file in the same dir, then rename) so concurrent runs never read a
//! half-written file.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `$IGPT_KERNEL_CACHE`, else `$XDG_CACHE_HOME/instructgpt/kernels`, else `~/.cache/instructgpt/kernels`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IGPT_KERNEL_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("instructgpt").join("kernels")
}

pub fn key(source: &str, arch: &str, nvrtc_version: (i32, i32), options: &[String], include_dir: Option<&Path>) -> String {
    let mut h = Sha256::new();
    for part in [
        source.as_bytes(),
        arch.as_bytes(),
        format!("nvrtc {}.{}", nvrtc_version.0, nvrtc_version.1).as_bytes(),
        options.join("\u{1f}").as_bytes(),
        include_dir.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default().as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes()); // length-prefixed: no ambiguity between fields
        h.update(part);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub fn path_for(dir: &Path, module: &str, key: &str) -> PathBuf {
    dir.join(format!("{module}-{}.ptx", &key[..16]))
}

pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().filter(|s| !s.is_empty())
}

pub fn write_atomic(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let tmp = dir.join(format!(".{}.{}.{}.tmp", path.file_name().unwrap().to_string_lossy(), std::process::id(), nanos));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_every_input() {
        let opts = vec!["-std=c++17".to_string()];
        let base = key("src", "compute_90a", (13, 0), &opts, None);
        assert_eq!(base, key("src", "compute_90a", (13, 0), &opts, None));
        assert_ne!(base, key("src2", "compute_90a", (13, 0), &opts, None));
        assert_ne!(base, key("src", "compute_80", (13, 0), &opts, None));
        assert_ne!(base, key("src", "compute_90a", (13, 2), &opts, None));
        assert_ne!(base, key("src", "compute_90a", (13, 0), &[], None));
        assert_ne!(base, key("src", "compute_90a", (13, 0), &opts, Some(Path::new("/x"))));
        assert_eq!(base.len(), 64);
    }

    #[test]
    fn atomic_write_roundtrip() {
        let dir = std::env::temp_dir().join(format!("igpt-cache-{}", std::process::id()));
        let p = path_for(&dir, "m", &key("a", "b", (1, 2), &[], None));
        write_atomic(&p, "ptx text").unwrap();
        assert_eq!(read(&p).as_deref(), Some("ptx text"));
        write_atomic(&p, "ptx text 2").unwrap();
        assert_eq!(read(&p).as_deref(), Some("ptx text 2"));
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "temp file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
