//! Runs `ptxas -v` on PTX we generated and parses its per-kernel resource report
//! (registers, static shared memory, stack frame, spills): the CPU-side check that a
//! kernel did not fall into local memory.

use serde::Serialize;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Resources {
    pub kernel: String,
    pub registers: u32,
    pub smem_bytes: u32,
    pub stack_bytes: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

/// Assembles `ptx_file` for `sm` (e.g. "sm_90a"); returns per-kernel resources, or
/// the ptxas output on failure.
pub fn report(ptxas: &Path, ptx_file: &Path, sm: &str) -> Result<Vec<Resources>, String> {
    let out_cubin = ptx_file.with_extension("cubin");
    let out = Command::new(ptxas)
        .arg(format!("-arch={sm}"))
        .arg("-v")
        .arg(ptx_file)
        .arg("-o")
        .arg(&out_cubin)
        .output()
        .map_err(|e| format!("could not run {}: {e}", ptxas.display()))?;
    let _ = std::fs::remove_file(&out_cubin);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(text);
    }
    Ok(parse(&text))
}

/// First unsigned integer directly before `unit` in `line` ("12 registers" -> 12).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let idx = line.find(unit)?;
    line[..idx].split_whitespace().last()?.parse().ok()
}

pub fn parse(text: &str) -> Vec<Resources> {
    let mut all: Vec<Resources> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            all.push(Resources { kernel: name, ..Default::default() });
            continue;
        }
        let Some(cur) = all.last_mut() else { continue };
        if line.contains("stack frame") {
            cur.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            cur.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            cur.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("Used") && line.contains("registers") {
            cur.registers = number_before(line, "registers").unwrap_or(0);
            cur.smem_bytes = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_verbose_output() {
        let text = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'matmul_v2_f32' for 'sm_90a'\n\
ptxas info    : Function properties for matmul_v2_f32\n\
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 128 registers, used 1 barriers, 8192 bytes smem, 400 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'gelu_fwd_f32' for 'sm_90a'\n\
ptxas info    : Function properties for gelu_fwd_f32\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 14 registers, 380 bytes cmem[0]\n";
        let r = parse(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], Resources { kernel: "matmul_v2_f32".into(), registers: 128, smem_bytes: 8192, stack_bytes: 8, spill_stores: 4, spill_loads: 12 });
        assert_eq!(r[1].registers, 14);
        assert_eq!(r[1].smem_bytes, 0);
    }
}
