//! The row kernels' own CUDA source, run on the CPU emulation in `kernels/emu` (C++20, one
//! thread per CUDA thread) and compared with the f64 references and tolerances of the GPU
//! self-test: their indexing, bounds, reductions and barriers are checked on machines without
//! a GPU. Skipped, with a message, where no C++ compiler is found ($CXX, c++, g++).

use kernels::reference::{self as r, compare};
use kernels::selftest::{Check, TOL_F32};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn compiler() -> Option<String> {
    let candidates = std::env::var("CXX").into_iter().chain(["c++".to_string(), "g++".to_string()]);
    candidates.into_iter().find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// Builds `rows_emu` from the kernel sources (shared memory rewritten for the emulation).
fn build(cxx: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["softmax.cu", "layernorm.cu"] {
        let text = std::fs::read_to_string(src.join("src/cu").join(file)).unwrap();
        std::fs::write(dir.join(file), text.replace("extern __shared__", "extern")).unwrap();
    }
    let exe = dir.join("rows_emu");
    let out = Command::new(cxx)
        .args(["-std=c++20", "-O2", "-pthread", "-I"])
        .arg(dir)
        .arg("-I")
        .arg(src.join("emu"))
        .arg(src.join("emu/rows.cpp"))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(out.status.success(), "compiling kernels/emu/rows.cpp with {cxx}:\n{}", String::from_utf8_lossy(&out.stderr));
    exe
}

struct Emu {
    exe: PathBuf,
    dir: PathBuf,
}

impl Emu {
    fn put(&self, name: &str, v: &[f32]) {
        std::fs::write(self.dir.join(format!("{name}.f32")), v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    }
    fn get(&self, name: &str) -> Vec<f32> {
        let b = std::fs::read(self.dir.join(format!("{name}.f32"))).unwrap();
        b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }
    /// Runs one kernel; a deadlock (a divergent barrier) fails after a minute instead of hanging.
    fn run(&self, kernel: &str, rows: usize, cols: usize, blocks: usize) {
        let mut child = Command::new(&self.exe).args([kernel, &rows.to_string(), &cols.to_string()]).arg(&self.dir).arg(blocks.to_string()).spawn().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{kernel} {rows}x{cols}: the emulator failed");
                return;
            }
            if start.elapsed() > Duration::from_secs(60) {
                child.kill().ok();
                panic!("{kernel} {rows}x{cols}: still running after 60 s (a deadlocked barrier or shuffle?)");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn rand(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|_| loop {
            let v = rng.gen_range(lo..hi);
            if v != 0.0 {
                break v;
            }
        })
        .collect()
}

#[test]
fn row_kernels_match_the_references_on_the_cpu_emulation() {
    let Some(cxx) = compiler() else {
        eprintln!("skipped: no C++ compiler ($CXX, c++, g++) to build the CPU emulation of the kernels");
        return;
    };
    let dir = std::env::temp_dir().join(format!("igpt-emu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let emu = Emu { exe: build(&cxx, &dir), dir: dir.clone() };
    let seed: u64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut checks: Vec<Check> = Vec::new();

    // Softmax: one row of all -inf must come out zeros (v1's convention), others as the reference.
    for (rows, cols) in [(1usize, 1usize), (7, 33), (9, 1000), (5, 1025), (3, 2048)] {
        let mut x = rand(&mut rng, rows * cols, -8.0, 8.0);
        if rows > 1 {
            x[cols..2 * cols].fill(f32::NEG_INFINITY);
        }
        let mut want = r::softmax(&x, rows, cols);
        if rows > 1 {
            want.value[cols..2 * cols].fill(0.0);
            want.scale[cols..2 * cols].fill(0.0);
        }
        emu.put("x", &x);
        for k in ["softmax_fwd_f32", "softmax_fwd_v2_f32_w1024", "softmax_fwd_v2_f32_w2048"] {
            if k.ends_with("w1024") && cols > 1024 {
                continue;
            }
            emu.run(k, rows, cols, 1);
            checks.push(Check::new(k, format!("{rows}x{cols}"), "f32", compare(&emu.get("y"), &want), TOL_F32));
        }
    }

    // LayerNorm: forward, then backward from the emulated forward's statistics; v2's backward
    // with one block (every row through it) and with several (rows split, partials summed).
    for (rows, c) in [(3usize, 5usize), (37, 768), (70, 96), (9, 1024), (5, 1025), (4, 2048)] {
        let shape = format!("{rows}x{c}");
        let x: Vec<f32> = rand(&mut rng, rows * c, -2.0, 2.0).into_iter().map(|v| v + 3.0).collect();
        let (gamma, beta, dy) = (rand(&mut rng, c, 0.5, 1.5), rand(&mut rng, c, -0.5, 0.5), rand(&mut rng, rows * c, -1.0, 1.0));
        for (name, v) in [("x", &x), ("gamma", &gamma), ("beta", &beta), ("dy", &dy)] {
            emu.put(name, v);
        }
        let f = r::layernorm_fwd(&x, &gamma, &beta, rows, c, 1e-5);
        let wide = c > 1024;
        for k in ["layernorm_fwd_f32", "layernorm_fwd_v2_f32_w1024", "layernorm_fwd_v2_f32_w2048"] {
            if k.ends_with("w1024") && wide {
                continue;
            }
            emu.run(k, rows, c, 1);
            checks.push(Check::new(&format!("{k} (y)"), shape.clone(), "f32", compare(&emu.get("y"), &f.y), TOL_F32));
            checks.push(Check::new(&format!("{k} (mean)"), shape.clone(), "f32", compare(&emu.get("mean"), &f.mean), TOL_F32));
            checks.push(Check::new(&format!("{k} (rstd)"), shape.clone(), "f32", compare(&emu.get("rstd"), &f.rstd), TOL_F32));
        }
        let (mean, rstd) = (emu.get("mean"), emu.get("rstd"));
        emu.put("mean", &mean);
        emu.put("rstd", &rstd);
        let b = r::layernorm_bwd(&x, &gamma, &mean, &rstd, &dy, rows, c);
        for (k, blocks) in [("layernorm_bwd_f32", 1), ("layernorm_bwd_v2_f32_w1024", 1), ("layernorm_bwd_v2_f32_w1024", 3), ("layernorm_bwd_v2_f32_w2048", 2)] {
            if k.ends_with("w1024") && wide {
                continue;
            }
            emu.run(k, rows, c, blocks);
            let s = format!("{shape}, {blocks} block(s)");
            checks.push(Check::new(&format!("{k} (dx)"), s.clone(), "f32", compare(&emu.get("dx"), &b.dx), TOL_F32));
            checks.push(Check::new(&format!("{k} (dgamma)"), s.clone(), "f32", compare(&emu.get("dgamma"), &b.dgamma), TOL_F32));
            checks.push(Check::new(&format!("{k} (dbeta)"), s, "f32", compare(&emu.get("dbeta"), &b.dbeta), TOL_F32));
        }
    }
    std::fs::remove_dir_all(&dir).ok();

    for c in &checks {
        println!("{:<40} {:<20} max rel {:.2e} {}", c.kernel, c.shape, c.stats.max_rel, if c.pass { "PASS" } else { "FAIL" });
    }
    let failed: Vec<(&String, &String)> = checks.iter().filter(|c| !c.pass).map(|c| (&c.kernel, &c.shape)).collect();
    assert!(failed.is_empty(), "seed {seed}: {} of {} emulated checks failed: {failed:?}", failed.len(), checks.len());
    assert!(checks.len() > 80, "only {} checks ran", checks.len());
}
