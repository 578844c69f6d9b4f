//! Finding the CUDA toolkit pieces we need at run time: the headers NVRTC needs for
//! bf16/WMMA, `ptxas` for resource reports, and a target architecture.
//! Never assumes one layout: a system toolkit (CUDA_HOME, CUDA_PATH, /usr/local/cuda*)
//! and the PyPI wheels (`site-packages/nvidia/cu13`) are both searched.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A target for NVRTC: `compute_XX[a]` is what NVRTC emits (PTX), `sm_XX[a]` what ptxas takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arch {
    /// e.g. "90a", "80"
    pub code: String,
}

impl Arch {
    /// Parses `sm_80`, `sm_90`, `sm_90a`, `compute_90`, `90a`. `native` is resolved by the caller.
    pub fn parse(s: &str) -> Result<Arch> {
        let code = s.trim_start_matches("sm_").trim_start_matches("compute_");
        let digits = code.trim_end_matches('a');
        let ok = !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit())
            && code.len() - digits.len() <= 1
            && digits.parse::<u32>().map(|v| v >= 70).unwrap_or(false);
        if !ok {
            return Err(Error::BadArch(s.to_string()));
        }
        Ok(Arch { code: code.to_string() })
    }
    pub fn from_cc(major: i32, minor: i32, arch_specific: bool) -> Arch {
        let a = if arch_specific && major >= 9 { "a" } else { "" };
        Arch { code: format!("{major}{minor}{a}") }
    }
    pub fn sm(&self) -> String {
        format!("sm_{}", self.code)
    }
    pub fn compute(&self) -> String {
        format!("compute_{}", self.code)
    }
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// `site-packages/nvidia/cu13` roots: from `python3 -c "import nvidia"` (namespace
/// package, may have several paths) and from the IGPT_CUDA_TOOLS dir that
/// scripts/cuda-tools.sh installs into.
pub fn python_cuda_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(t) = env_path("IGPT_CUDA_TOOLS") {
        roots.push(t.join("nvidia/cu13"));
    }
    let out = Command::new("python3")
        .args(["-c", "import nvidia, os; print(os.pathsep.join(list(nvidia.__path__)))"])
        .output();
    if let Ok(o) = out {
        if o.status.success() {
            for p in String::from_utf8_lossy(&o.stdout).trim().split(':').filter(|s| !s.is_empty()) {
                roots.push(PathBuf::from(p).join("cu13"));
            }
        }
    }
    roots.retain(|r| r.is_dir());
    roots.dedup();
    roots
}

/// Toolkit roots in search order (each may have include/, bin/, lib/ or lib64/).
pub fn toolkit_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(p) = env_path(var) {
            roots.push(p);
        }
    }
    roots.push(PathBuf::from("/usr/local/cuda"));
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/local")
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    versioned.retain(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("cuda-13")));
    versioned.sort();
    versioned.reverse(); // newest first
    roots.extend(versioned);
    roots.extend(python_cuda_roots());
    roots.dedup();
    roots
}

/// mma.h includes crt/mma.h, which some wheels (torch's nvidia-cuda-runtime) lack.
fn is_include_dir(dir: &Path) -> bool {
    ["cuda_bf16.h", "mma.h", "crt/mma.h"].iter().all(|f| dir.join(f).is_file())
}

/// Include dir candidates, in search order: IGPT_CUDA_INCLUDE, then `<root>/include`.
pub fn include_dir_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = env_path("IGPT_CUDA_INCLUDE") {
        c.push(p);
    }
    c.extend(toolkit_roots().into_iter().map(|r| r.join("include")));
    c
}

/// First include dir that has cuda_bf16.h and mma.h.
pub fn find_include_dir() -> Result<PathBuf> {
    first_include_dir(&include_dir_candidates())
}

fn first_include_dir(cands: &[PathBuf]) -> Result<PathBuf> {
    cands.iter().find(|d| is_include_dir(d)).cloned().ok_or_else(|| {
        Error::NoIncludeDir(cands.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))
    })
}

/// `ptxas`: PATH first, then `<root>/bin/ptxas` for every toolkit root.
pub fn find_ptxas() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join("ptxas");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    toolkit_roots().into_iter().map(|r| r.join("bin/ptxas")).find(|p| p.is_file())
}

/// Where a shared library named `prefix*` lives among the usual dirs (for reports only:
/// the dynamic loader decides what is actually loaded).
pub fn find_libs(prefix: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(ld) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&ld));
    }
    for r in toolkit_roots() {
        dirs.push(r.join("lib64"));
        dirs.push(r.join("lib"));
    }
    dirs.extend(["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/nvidia/lib64"].map(PathBuf::from));
    dirs.dedup();
    let mut found = Vec::new();
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(&d) {
            let mut here: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
                .collect();
            here.sort();
            for p in here {
                if !found.contains(&p) {
                    found.push(p);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_parsing() {
        assert_eq!(Arch::parse("sm_90a").unwrap().compute(), "compute_90a");
        assert_eq!(Arch::parse("sm_80").unwrap().sm(), "sm_80");
        assert_eq!(Arch::parse("compute_90").unwrap().code, "90");
        assert!(Arch::parse("sm_9x").is_err());
        assert!(Arch::parse("native").is_err());
        assert!(Arch::parse("sm_90aa").is_err());
        assert_eq!(Arch::from_cc(9, 0, true).sm(), "sm_90a");
        assert_eq!(Arch::from_cc(8, 0, true).sm(), "sm_80");
    }

    #[test]
    fn include_dir_needs_both_headers() {
        let dir = std::env::temp_dir().join(format!("igpt-inc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cuda_bf16.h"), "").unwrap();
        std::fs::write(dir.join("mma.h"), "").unwrap();
        std::fs::create_dir_all(dir.join("crt")).unwrap();
        std::fs::write(dir.join("crt/mma.h"), "").unwrap();
        let missing = PathBuf::from("/nonexistent/include");
        assert_eq!(first_include_dir(&[missing.clone(), dir.clone()]).unwrap(), dir);
        std::fs::remove_file(dir.join("crt/mma.h")).unwrap();
        let err = first_include_dir(&[missing, dir.clone()]).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/include"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        // The real search must return a dir that has both headers, or a clear error.
        match find_include_dir() {
            Ok(d) => assert!(is_include_dir(&d)),
            Err(e) => println!("no include dir here: {e}"),
        }
        println!("include dirs searched: {:?}", include_dir_candidates());
    }
}
