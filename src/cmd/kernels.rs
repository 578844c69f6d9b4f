//! `instructgpt kernels compile|list|emulate`: compile every registered CUDA kernel with NVRTC
//! (no GPU needed) and, where ptxas is found, report registers / shared memory /
//! stack / spills per kernel; build the emulated GPU (kernels::emu).

use anyhow::{bail, Result};
use kernels::{compile, ptxas, toolkit, MODULES};

#[derive(clap::Args, Debug)]
pub struct KernelsArgs {
    #[command(subcommand)]
    pub cmd: KernelsCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum KernelsCmd {
    /// Compile every kernel with NVRTC and report ptxas resource usage.
    Compile {
        /// sm_80, sm_90, sm_90a, ... or `native` (device 0's own arch; needs a GPU).
        #[arg(long, default_value = "native")]
        arch: String,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// List the registered modules and their entry points.
    List,
    /// Build the emulated GPU: every kernel compiled as C++ for the CPU emulation, behind a
    /// fake CUDA driver and NVRTC (libcuda.so, libnvrtc.so in --out). Run the binary with that
    /// directory first on LD_LIBRARY_PATH (scripts/emulated-gpu.sh does): slow, no GPU needed.
    Emulate {
        #[arg(long)]
        out: std::path::PathBuf,
        /// The C++20 compiler.
        #[arg(long, default_value = "c++")]
        cxx: String,
        /// Build under AddressSanitizer and UBSan (run with the compiler's libasan preloaded).
        #[arg(long)]
        sanitize: bool,
    },
}

pub fn run(args: KernelsArgs) -> Result<()> {
    match args.cmd {
        KernelsCmd::List => {
            for m in MODULES {
                println!("{:<12} {:<20} {}", m.name, m.file, m.entries.join(", "));
            }
            Ok(())
        }
        KernelsCmd::Compile { arch, json } => compile_cmd(&arch, json),
        KernelsCmd::Emulate { out, cxx, sanitize } => {
            let t = std::time::Instant::now();
            let lib = kernels::emu::build_gpu(&out, &cxx, sanitize)?;
            println!("emulated GPU built in {:.0} s: {} (and libnvrtc.so beside it; headers for IGPT_CUDA_INCLUDE in {})", t.elapsed().as_secs_f64(), lib.display(), out.join("include").display());
            Ok(())
        }
    }
}

fn compile_cmd(arch: &str, json: bool) -> Result<()> {
    let arch = if arch == "native" { compile::native_arch()? } else { toolkit::Arch::parse(arch)? };
    let info = compile::compiler_info(&arch)?;
    let ptxas_bin = toolkit::find_ptxas();
    let mut failures = Vec::new();
    let mut resources = Vec::new();
    let mut modules = Vec::new();
    for (m, r) in compile::compile_all(&arch) {
        match r {
            Ok(c) => {
                modules.push(serde_json::json!({"module": m.name, "ptx": c.path, "from_cache": c.from_cache}));
                if let Some(p) = &ptxas_bin {
                    match ptxas::report(p, &c.path, &arch.sm()) {
                        Ok(rs) => resources.extend(rs.into_iter().map(|r| (m.name, r))),
                        Err(log) => failures.push(format!("ptxas failed on module {}:\n{log}", m.name)),
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    if json {
        let res: Vec<_> = resources.iter().map(|(m, r)| serde_json::json!({"module": m, "resources": r})).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({
            "arch": arch.sm(), "compiler": info, "ptxas": ptxas_bin, "modules": modules,
            "resources": res, "failures": failures,
        }))?);
    } else {
        println!("arch: {} (NVRTC emits {}), NVRTC {}.{}", arch.sm(), arch.compute(), info.nvrtc_version.0, info.nvrtc_version.1);
        println!("include dir: {}", info.include_dir.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none found".into()));
        println!("options: {}", info.options.join(" "));
        println!("cache: {}", info.cache_dir.display());
        match &ptxas_bin {
            Some(p) => println!("ptxas: {}", p.display()),
            None => println!("ptxas: not found (PATH, CUDA_HOME/bin, site-packages nvidia/cu13/bin): no resource table"),
        }
        for m in &modules {
            println!("  compiled {:<12} {}{}", m["module"].as_str().unwrap_or(""), m["ptx"].as_str().unwrap_or(""), if m["from_cache"] == true { " (cached)" } else { "" });
        }
        if !resources.is_empty() {
            println!("\n| kernel | module | regs | smem (static) B | stack B | spill st B | spill ld B |");
            println!("|---|---|---:|---:|---:|---:|---:|");
            for (m, r) in &resources {
                println!("| {} | {} | {} | {} | {} | {} | {} |", r.kernel, m, r.registers, r.smem_bytes, r.stack_bytes, r.spill_stores, r.spill_loads);
            }
            let spilled: Vec<_> = resources.iter().filter(|(_, r)| r.spill_stores + r.spill_loads > 0).map(|(_, r)| r.kernel.as_str()).collect();
            println!("\nspills: {}", if spilled.is_empty() { "none".to_string() } else { spilled.join(", ") });
        }
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("error: {f}");
        }
        bail!("{} module(s) failed to compile or assemble for {}", failures.len(), arch.sm());
    }
    Ok(())
}
