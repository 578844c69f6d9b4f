//! NVRTC compilation of the registered modules to PTX, with the on-disk cache.
//!
//! Options: `-std=c++17`, `--gpu-architecture=compute_XX[a]` (PTX; the driver or
//! ptxas turns it into machine code for the exact chip), and deliberately NO
//! `--use_fast_math`: the f32 kernels are checked against f64 references at ~1e-5
//! and fast math swaps tanhf/expf/division for approximations worse than that.
//! FMA contraction stays on (NVRTC's default); it only makes results more accurate.

use crate::error::{Error, Result};
use crate::registry::{Module, MODULES};
use crate::toolkit::Arch;
use std::path::PathBuf;

/// One compiled module.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub module: &'static Module,
    pub arch: Arch,
    pub ptx: String,
    /// Where the PTX sits in the cache (always written, so ptxas can read it).
    pub path: PathBuf,
    pub from_cache: bool,
}

/// Everything a report should say about the compiler that was used.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompilerInfo {
    pub nvrtc_version: (i32, i32),
    pub include_dir: Option<PathBuf>,
    pub cache_dir: PathBuf,
    pub options: Vec<String>,
}

pub fn base_options(arch: &Arch) -> Vec<String> {
    vec!["-std=c++17".into(), format!("--gpu-architecture={}", arch.compute())]
}

#[cfg(feature = "cuda")]
mod imp {
    use super::*;
    use crate::{cache, toolkit};
    use cudarc::nvrtc::{self, CompileError, CompileOptions};

    /// Errors instead of the panic cudarc's dynamic loading gives when libnvrtc is absent.
    pub fn ensure_nvrtc() -> Result<()> {
        if unsafe { nvrtc::sys::is_culib_present() } {
            Ok(())
        } else {
            Err(Error::NoNvrtc)
        }
    }

    pub fn nvrtc_version() -> Result<(i32, i32)> {
        ensure_nvrtc()?;
        let (mut major, mut minor) = (0, 0);
        let rc = unsafe { nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        rc.result().map_err(|e| Error::cuda("nvrtcVersion", e))?;
        Ok((major, minor))
    }

    fn nvrtc_compile(m: &'static Module, arch: &Arch, options: &[String], include: Option<&PathBuf>) -> Result<String> {
        let opts = CompileOptions {
            options: options.iter().filter(|o| !o.starts_with("--gpu-architecture")).cloned().collect(),
            // cudarc wants a &'static str: leak one small string per distinct arch.
            arch: Some(Box::leak(arch.compute().into_boxed_str())),
            include_paths: include.map(|p| vec![p.to_string_lossy().into_owned()]).unwrap_or_default(),
            name: Some(m.file.trim_start_matches("cu/").to_string()),
            ..Default::default()
        };
        match nvrtc::compile_ptx_with_opts(m.source, opts) {
            Ok(ptx) => Ok(ptx.to_src()),
            Err(CompileError::CompileError { options, log, .. }) => Err(Error::Compile {
                module: m.name.into(),
                arch: arch.compute(),
                options: options.join(" "),
                log: log.to_string_lossy().into_owned(),
            }),
            Err(e) => Err(Error::cuda(format!("NVRTC on module {}", m.name), e)),
        }
    }

    /// The arch of device 0 (`compute_XX`, no `a` suffix).
    pub fn native_arch() -> Result<Arch> {
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::NoDriver);
        }
        let ctx = cudarc::driver::CudaContext::new(0).map_err(|e| Error::cuda("opening CUDA device 0", e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| Error::cuda("compute capability", e))?;
        Ok(Arch::from_cc(major, minor, false))
    }

    pub fn compiler_info(arch: &Arch) -> Result<CompilerInfo> {
        Ok(CompilerInfo {
            nvrtc_version: nvrtc_version()?,
            include_dir: toolkit::find_include_dir().ok(),
            cache_dir: cache::cache_dir(),
            options: base_options(arch),
        })
    }

    /// Compiles (or loads from the cache) one module.
    pub fn compile_module(m: &'static Module, arch: &Arch) -> Result<Compiled> {
        let version = nvrtc_version()?;
        let include = if m.needs_headers { Some(toolkit::find_include_dir()?) } else { None };
        let options = base_options(arch);
        let key = cache::key(m.source, &arch.compute(), version, &options, include.as_deref());
        let path = cache::path_for(&cache::cache_dir(), m.name, &key);
        if let Some(ptx) = cache::read(&path) {
            return Ok(Compiled { module: m, arch: arch.clone(), ptx, path, from_cache: true });
        }
        let ptx = nvrtc_compile(m, arch, &options, include.as_ref())?;
        cache::write_atomic(&path, &ptx)?;
        Ok(Compiled { module: m, arch: arch.clone(), ptx, path, from_cache: false })
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;
    pub fn ensure_nvrtc() -> Result<()> {
        Err(Error::NoCudaFeature)
    }
    pub fn nvrtc_version() -> Result<(i32, i32)> {
        Err(Error::NoCudaFeature)
    }
    pub fn compiler_info(_arch: &Arch) -> Result<CompilerInfo> {
        Err(Error::NoCudaFeature)
    }
    pub fn native_arch() -> Result<Arch> {
        Err(Error::NoCudaFeature)
    }
    pub fn compile_module(_m: &'static Module, _arch: &Arch) -> Result<Compiled> {
        Err(Error::NoCudaFeature)
    }
}

pub use imp::{compile_module, compiler_info, ensure_nvrtc, native_arch, nvrtc_version};

/// Compiles every registered module; one result per module so a caller can report all failures.
pub fn compile_all(arch: &Arch) -> Vec<(&'static Module, Result<Compiled>)> {
    MODULES.iter().map(|m| (m, compile_module(m, arch))).collect()
}

#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::*;
    use crate::toolkit;

    #[test]
    fn every_module_compiles_for_sm80_and_sm90a() {
        if ensure_nvrtc().is_err() {
            println!("SKIP: libnvrtc not found (source scripts/cuda-tools.sh)");
            return;
        }
        if toolkit::find_include_dir().is_err() {
            println!("SKIP: no CUDA include dir with cuda_bf16.h / mma.h");
            return;
        }
        let dir = std::env::temp_dir().join(format!("igpt-kcache-{}", std::process::id()));
        std::env::set_var("IGPT_KERNEL_CACHE", &dir);
        for arch in ["sm_80", "sm_90a"] {
            let arch = Arch::parse(arch).unwrap();
            for (m, r) in compile_all(&arch) {
                let c = r.unwrap_or_else(|e| panic!("{}: {e}", m.name));
                assert!(!c.from_cache);
                for e in m.entries {
                    assert!(c.ptx.contains(&format!(".entry {e}(")), "{}: {e} missing from PTX", m.name);
                }
                if m.name == "matmul_bf16" {
                    assert!(c.ptx.contains("mma.sync"), "no tensor-core mma in PTX");
                    assert!(c.ptx.contains("cp.async"), "no cp.async in PTX");
                }
                // Second time comes from the cache, byte-identical.
                let again = compile_module(m, &arch).unwrap();
                assert!(again.from_cache);
                assert_eq!(again.ptx, c.ptx);
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn compile_errors_carry_the_nvrtc_log() {
        if ensure_nvrtc().is_err() {
            println!("SKIP: libnvrtc not found");
            return;
        }
        static BAD: Module = Module { name: "bad", file: "cu/bad.cu", source: "extern \"C\" __global__ void k() { undefined_thing(); }", entries: &["k"], needs_headers: false };
        // A failed compile writes nothing to the cache, so no private cache dir is needed.
        let err = compile_module(&BAD, &Arch::parse("sm_80").unwrap()).unwrap_err().to_string();
        assert!(err.contains("undefined_thing"), "{err}");
    }
}
