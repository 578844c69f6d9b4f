//! Kernels' own CUDA source, run on the CPU emulation in `kernels/emu` (C++20, one thread per
//! CUDA thread) and compared with f64 references at the GPU self-test's tolerances (or bit for
//! bit): their indexing, bounds (under AddressSanitizer), reductions and barriers, and with
//! `IGPT_EMU_SANITIZER=thread` their races between a block's threads (under ThreadSanitizer), are
//! checked on machines without a GPU.
//! Covered: the row kernels (softmax, layernorm, both versions, f32 and bf16, layernorm f32 to bf16), every kernel of
//! cu/pointwise.cu (the engine's remaining ops), the f32 attention kernels (v1 forward and backward, decode; head dims
//! 32/64/128, left padding), the f32 matmuls (v1; v2 batched, operands stored as read or
//! transposed), cross-entropy (warp and block, f32 and bf16), embedding (forward, both
//! backwards), AdamW, GELU (f32 and bf16), the row sums, the global L2 norm and the broadcast binary ops,
//! and, on stand-ins for their tensor-core instructions (emu/tensor_core.h), attention v2 and matmul
//! v4 with its epilogues, (emu/hopper.h: wgmma, TMA, mbarriers) the Hopper matmuls v5 and v6, v4-v6
//! with split-K and its reduction, and (emu/mma.h: WMMA) matmul v3: every kernel. Skipped, with a
//! message, where no C++20 compiler with the sanitizer is found ($CXX, c++, g++).

use kernels::copy::TransposedBatch;
use kernels::reference::{self as r, compare, from_bf16_bits, to_bf16_bits};
use kernels::selftest::{Check, TOL_BF16, TOL_F32};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The flags every driver is built with: C++20 (std::barrier) and a sanitizer, every finding
/// fatal. By default AddressSanitizer and UBSan: an access outside a buffer or shared array, a
/// misaligned vector. With `IGPT_EMU_SANITIZER=thread`, ThreadSanitizer: the emulation's
/// threads are the block's CUDA threads and its barriers, shuffles and mbarriers are C++
/// synchronization, so an access to shared or global memory that another thread of the block
/// writes with no barrier between them (a missing `__syncthreads`, a stage read before its
/// mbarrier wait, a buffer refilled while another warp still reads it) is a data race, and fails
/// the run however the threads happen to be scheduled.
fn flags() -> &'static [&'static str] {
    const COMMON: [&str; 5] = ["-std=c++20", "-O1", "-g", "-fno-omit-frame-pointer", "-pthread"];
    static FLAGS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    FLAGS.get_or_init(|| {
        let sanitizer: &[&str] = match std::env::var("IGPT_EMU_SANITIZER").as_deref() {
            Ok("thread") => &["-fsanitize=thread"],
            Ok("address") | Ok("") | Err(_) => &["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
            Ok(other) => panic!("IGPT_EMU_SANITIZER={other:?}: expected address (the default) or thread"),
        };
        COMMON.iter().chain(sanitizer).copied().collect()
    })
}

/// Under ThreadSanitizer, the first race ends the run with a failing status (the report on
/// stderr names both accesses).
const TSAN_OPTIONS: &str = "halt_on_error=1 exitcode=66";

/// A C++ compiler that builds and runs a std::barrier program with [`flags`]; None (the test
/// says it skipped) for a missing or too old toolchain, unless IGPT_REQUIRE_EMULATION is set
/// (CI sets it): then that is a failure. The drivers' own build errors always fail. Probed once
/// per process: tests run in parallel, and each probing in one shared directory made a test
/// delete another's probe mid-build, which then read as "no compiler" and skipped.
fn compiler() -> Option<String> {
    static FOUND: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let found = FOUND.get_or_init(probe_compiler).clone();
    if found.is_none() {
        let why = format!("no C++20 compiler with {:?} ($CXX, c++, g++) to build the CPU emulation of the kernels", flags());
        assert!(std::env::var_os("IGPT_REQUIRE_EMULATION").is_none(), "IGPT_REQUIRE_EMULATION is set, but there is {why}");
        eprintln!("skipped: {why}");
    }
    found
}

fn probe_compiler() -> Option<String> {
    let probe_dir = std::env::temp_dir().join(format!("igpt-emu-probe-{}", std::process::id()));
    std::fs::create_dir_all(&probe_dir).ok()?;
    let (src, exe) = (probe_dir.join("probe.cpp"), probe_dir.join("probe"));
    std::fs::write(&src, "#include <barrier>\nint main() { std::barrier<> b(1); b.arrive_and_wait(); return 0; }\n").ok()?;
    let candidates = std::env::var("CXX").into_iter().chain(["c++".to_string(), "g++".to_string()]);
    let found = candidates.into_iter().find(|c| {
        Command::new(c).args(flags()).arg(&src).arg("-o").arg(&exe).output().is_ok_and(|o| o.status.success())
            && Command::new(&exe).output().is_ok_and(|o| o.status.success())
    });
    std::fs::remove_dir_all(&probe_dir).ok();
    found
}

/// Builds the driver `emu/{driver}.cpp` over the kernel sources (the dynamic shared array
/// rewritten to a pointer the driver sizes), with the sanitizer of [`flags`]: a kernel that
/// reads or writes outside its buffers (or its shared arrays), or races, fails the run. PTX
/// helper sections are swapped for the CPU stand-ins of emu/tensor_core.h.
fn build(cxx: &str, dir: &Path, driver: &str, sources: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in sources {
        // The text NVRTC compiles (preludes included), not the bare file.
        let module = kernels::MODULES.iter().find(|m| m.file == format!("cu/{file}")).unwrap_or_else(|| panic!("no module for {file}"));
        let text = module.source;
        let text = without_ptx(text)
            .replace("extern __shared__ float block_sums[];", "float* block_sums = static_cast<float*>(emu_dynamic_smem);")
            .replace("extern __shared__ __align__(128) unsigned char smem[];", "unsigned char* smem = static_cast<unsigned char*>(emu_dynamic_smem);")
            .replace("extern __shared__ __align__(128) unsigned char v4_smem[];", "unsigned char* v4_smem = static_cast<unsigned char*>(emu_dynamic_smem);")
            .replace("extern __shared__ __align__(1024) unsigned char v5_smem[];", "unsigned char* v5_smem = static_cast<unsigned char*>(emu_dynamic_smem);")
            .replace("extern __shared__ __align__(1024) unsigned char v6_smem[];", "unsigned char* v6_smem = static_cast<unsigned char*>(emu_dynamic_smem);");
        assert!(!text.contains("extern __shared__"), "{file}: a dynamic shared array the emulation does not know");
        std::fs::write(dir.join(file), text).unwrap();
    }
    let exe = dir.join(driver);
    let out = Command::new(cxx)
        .args(flags())
        .arg("-I")
        .arg(dir)
        .arg("-I")
        .arg(src.join("emu"))
        .arg(src.join(format!("emu/{driver}.cpp")))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(out.status.success(), "compiling kernels/emu/{driver}.cpp with {cxx}:\n{}", String::from_utf8_lossy(&out.stderr));
    exe
}

/// A kernel source with each section between "PTX helpers" banners (inline assembly) swapped
/// for the CPU stand-ins of emu/tensor_core.h.
fn without_ptx(text: &str) -> String {
    let (begin, end) = ("// --- PTX helpers (begin)", "// --- PTX helpers (end)");
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(begin) {
        let j = rest[i..].find(end).map(|j| i + j).expect("a PTX helpers section without its end banner");
        out.push_str(&rest[..i]);
        out.push_str("#include \"tensor_core.h\"\n");
        rest = &rest[j + end.len()..];
    }
    out.push_str(rest);
    out
}

struct Emu {
    exe: PathBuf,
    dir: PathBuf,
}

impl Emu {
    fn put(&self, name: &str, v: &[f32]) {
        std::fs::write(self.dir.join(format!("{name}.f32")), v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    }
    fn put_u16(&self, name: &str, v: &[u16]) {
        std::fs::write(self.dir.join(format!("{name}.u16")), v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    }
    fn put_i32(&self, file: &str, v: &[i32]) {
        std::fs::write(self.dir.join(file), v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    }
    fn put_i64(&self, file: &str, v: &[i64]) {
        std::fs::write(self.dir.join(file), v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    }
    fn get(&self, name: &str) -> Vec<f32> {
        let b = std::fs::read(self.dir.join(format!("{name}.f32"))).unwrap();
        b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }
    fn get_i64(&self, file: &str) -> Vec<i64> {
        std::fs::read(self.dir.join(file)).unwrap().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
    }
    fn get_u16(&self, file: &str) -> Vec<u16> {
        std::fs::read(self.dir.join(file)).unwrap().chunks_exact(2).map(|c| u16::from_le_bytes(c.try_into().unwrap())).collect()
    }
    /// Runs one kernel; a deadlock (a divergent barrier) fails after a minute instead of hanging.
    fn run(&self, kernel: &str, rows: usize, cols: usize, blocks: usize) {
        self.run_args(&[kernel.to_string(), rows.to_string(), cols.to_string(), self.dir.display().to_string(), blocks.to_string()]);
    }
    fn run_args(&self, args: &[String]) {
        let kernel = args.join(" ");
        let (rows, cols) = ("", "");
        let mut child = Command::new(&self.exe).args(args).env("TSAN_OPTIONS", TSAN_OPTIONS).spawn().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{kernel}{rows}{cols}: the emulator failed");
                return;
            }
            if start.elapsed() > Duration::from_secs(60) {
                child.kill().ok();
                panic!("{kernel}{rows}{cols}: still running after 60 s (a deadlocked barrier or shuffle?)");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

use kernels::reference::rand_nonzero as rand;

#[test]
fn row_kernels_match_the_references_on_the_cpu_emulation() {
    let Some((emu, dir, seed, mut rng)) = start("rows", &["softmax.cu", "layernorm.cu"]) else { return };
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
    // bf16 rows (v2): activations as bf16 bits, the references on the same rounded inputs.
    for (rows, c) in [(7usize, 33usize), (9, 1000), (5, 1600)] {
        let shape = format!("{rows}x{c}");
        let w = if c <= 1024 { "w1024" } else { "w2048" };
        let x16 = to_bf16_bits(&rand(&mut rng, rows * c, -6.0, 6.0));
        emu.put_u16("x", &x16);
        let k = format!("softmax_fwd_v2_bf16_{w}");
        emu.run(&k, rows, c, 1);
        checks.push(Check::new(&k, shape.clone(), "bf16", compare(&from_bf16_bits(&emu.get_u16("y.u16")), &r::softmax(&from_bf16_bits(&x16), rows, c)), TOL_BF16));

        let x16 = to_bf16_bits(&rand(&mut rng, rows * c, -2.0, 2.0).into_iter().map(|v| v + 3.0).collect::<Vec<f32>>());
        let dy16 = to_bf16_bits(&rand(&mut rng, rows * c, -1.0, 1.0));
        let (gamma, beta) = (rand(&mut rng, c, 0.5, 1.5), rand(&mut rng, c, -0.5, 0.5));
        let (x, dy) = (from_bf16_bits(&x16), from_bf16_bits(&dy16));
        emu.put_u16("x", &x16);
        emu.put_u16("dy", &dy16);
        emu.put("gamma", &gamma);
        emu.put("beta", &beta);
        let k = format!("layernorm_fwd_v2_bf16_{w}");
        emu.run(&k, rows, c, 1);
        let f = r::layernorm_fwd(&x, &gamma, &beta, rows, c, 1e-5);
        let (mean, rstd) = (emu.get("mean"), emu.get("rstd"));
        checks.push(Check::new(&format!("{k} (y)"), shape.clone(), "bf16", compare(&from_bf16_bits(&emu.get_u16("y.u16")), &f.y), TOL_BF16));
        checks.push(Check::new(&format!("{k} (mean)"), shape.clone(), "bf16->f32", compare(&mean, &f.mean), TOL_F32));
        checks.push(Check::new(&format!("{k} (rstd)"), shape.clone(), "bf16->f32", compare(&rstd, &f.rstd), TOL_F32));
        emu.put("mean", &mean);
        emu.put("rstd", &rstd);
        let k = format!("layernorm_bwd_v2_bf16_{w}");
        emu.run(&k, rows, c, 2);
        let b = r::layernorm_bwd(&x, &gamma, &mean, &rstd, &dy, rows, c);
        checks.push(Check::new(&format!("{k} (dx)"), shape.clone(), "bf16", compare(&from_bf16_bits(&emu.get_u16("dx.u16")), &b.dx), TOL_BF16));
        checks.push(Check::new(&format!("{k} (dgamma)"), shape.clone(), "bf16->f32", compare(&emu.get("dgamma"), &b.dgamma), TOL_F32));
        checks.push(Check::new(&format!("{k} (dbeta)"), shape.clone(), "bf16->f32", compare(&emu.get("dbeta"), &b.dbeta), TOL_F32));

        // Autocast's layernorm: f32 x (not rounded) to a bf16 y; back from the bf16 dy to an f32 dx.
        let x: Vec<f32> = rand(&mut rng, rows * c, -2.0, 2.0).into_iter().map(|v| v + 3.0).collect();
        emu.put("x", &x);
        let k = format!("layernorm_fwd_v2_f32_bf16_{w}");
        emu.run(&k, rows, c, 1);
        let f = r::layernorm_fwd(&x, &gamma, &beta, rows, c, 1e-5);
        let (mean, rstd) = (emu.get("mean"), emu.get("rstd"));
        checks.push(Check::new(&format!("{k} (y)"), shape.clone(), "f32->bf16", compare(&from_bf16_bits(&emu.get_u16("y.u16")), &f.y), TOL_BF16));
        checks.push(Check::new(&format!("{k} (mean)"), shape.clone(), "f32", compare(&mean, &f.mean), TOL_F32));
        checks.push(Check::new(&format!("{k} (rstd)"), shape.clone(), "f32", compare(&rstd, &f.rstd), TOL_F32));
        emu.put("mean", &mean);
        emu.put("rstd", &rstd);
        let k = format!("layernorm_bwd_v2_f32_bf16_{w}");
        emu.run(&k, rows, c, 2);
        let b = r::layernorm_bwd(&x, &gamma, &mean, &rstd, &dy, rows, c);
        checks.push(Check::new(&format!("{k} (dx)"), shape.clone(), "bf16->f32", compare(&emu.get("dx"), &b.dx), TOL_F32));
        checks.push(Check::new(&format!("{k} (dgamma)"), shape.clone(), "bf16->f32", compare(&emu.get("dgamma"), &b.dgamma), TOL_F32));
        checks.push(Check::new(&format!("{k} (dbeta)"), shape, "bf16->f32", compare(&emu.get("dbeta"), &b.dbeta), TOL_F32));
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 118);
}

fn setup(cxx: &str, driver: &str, sources: &[&str]) -> (Emu, PathBuf) {
    // One directory per call: two tests may build the same driver at once.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("igpt-emu-{driver}-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    (Emu { exe: build(cxx, &dir, driver, sources), dir: dir.clone() }, dir)
}

/// A test's emulation: the driver built over its sources (None: no compiler, the test skips),
/// and the seed and generator of its inputs.
fn start(driver: &str, sources: &[&str]) -> Option<(Emu, PathBuf, u64, StdRng)> {
    let cxx = compiler()?;
    let (emu, dir) = setup(&cxx, driver, sources);
    let seed = seed();
    Some((emu, dir, seed, StdRng::seed_from_u64(seed)))
}

fn seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn report(checks: &[Check], seed: u64, at_least: usize) {
    for c in checks {
        println!("{:<40} {:<24} max rel {:.2e} {}", c.kernel, c.shape, c.stats.max_rel, if c.pass { "PASS" } else { "FAIL" });
    }
    let failed: Vec<(&String, &String, &Option<String>)> = checks.iter().filter(|c| !c.pass).map(|c| (&c.kernel, &c.shape, &c.error)).collect();
    assert!(failed.is_empty(), "seed {seed}: {} of {} emulated checks failed: {failed:?}", failed.len(), checks.len());
    assert!(checks.len() >= at_least, "only {} checks ran", checks.len());
}

/// A check that passes only on exact agreement; `bad` counts the disagreeing elements.
fn exact(kernel: &str, shape: String, bad: usize, of: usize) -> Check {
    match bad {
        0 => Check::new(kernel, shape, "exact", Default::default(), 0.0),
        _ => Check::failed(kernel, shape, "exact", format!("{bad} of {of} elements differ")),
    }
}

#[test]
fn pointwise_row_and_view_kernels_match_the_references_on_the_cpu_emulation() {
    let Some((emu, dir, seed, mut rng)) = start("pointwise", &["pointwise.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();

    for (rows, cols) in [(1usize, 1usize), (6, 33), (9, 300), (3, 1025)] {
        let shape = format!("{rows}x{cols}");
        // max/argmax: ties (values clamped), a NaN mid-row (skipped), a NaN first (kept, index 0).
        let mut x: Vec<f32> = rand(&mut rng, rows * cols, -4.0, 4.0).into_iter().map(|v| v.clamp(-1.0, 1.0)).collect();
        if cols > 2 {
            x[1] = f32::NAN;
        }
        if rows > 2 && cols > 1 {
            x[2 * cols] = f32::NAN;
        }
        emu.put("x", &x);
        emu.run("max_rows_f32", rows, cols, 0);
        let (vals, idx) = (emu.get("vals"), emu.get_i64("idx.i64"));
        let bad = x
            .chunks(cols)
            .zip(vals.iter().zip(&idx))
            .filter(|(row, (&v, &i))| {
                let (mut best, mut at) = (row[0], 0usize);
                for (c, &e) in row.iter().enumerate().skip(1) {
                    if e > best {
                        (best, at) = (e, c);
                    }
                }
                i != at as i64 || !(v == best || (v.is_nan() && best.is_nan()))
            })
            .count();
        checks.push(exact("max_rows_f32", shape.clone(), bad, rows));

        // log-softmax, and both row backwards from the forward outputs.
        let x = rand(&mut rng, rows * cols, -8.0, 8.0);
        let g = rand(&mut rng, rows * cols, -1.0, 1.0);
        emu.put("x", &x);
        emu.run("log_softmax_fwd_f32", rows, cols, 0);
        let mut want = r::Ref { value: vec![], scale: vec![] };
        for row in x.chunks(cols) {
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            want.value.extend(row.iter().map(|&v| v as f64 - lse));
            want.scale.extend(row.iter().map(|&v| (v as f64).abs() + lse.abs()));
        }
        checks.push(Check::new("log_softmax_fwd_f32", shape.clone(), "f32", compare(&emu.get("y"), &want), TOL_F32));
        for log in [false, true] {
            let y: Vec<f32> = if log { want.value.iter().map(|&v| v as f32).collect() } else { r::softmax(&x, rows, cols).value.iter().map(|&v| v as f32).collect() };
            emu.put("x", &y);
            emu.put("g", &g);
            let k = if log { "softmax_bwd_f32_log" } else { "softmax_bwd_f32" };
            emu.run(k, rows, cols, 0);
            let mut want = r::Ref { value: vec![], scale: vec![] };
            for (yr, gr) in y.chunks(cols).zip(g.chunks(cols)) {
                let (yr, gr): (Vec<f64>, Vec<f64>) = (yr.iter().map(|&v| v as f64).collect(), gr.iter().map(|&v| v as f64).collect());
                if log {
                    let (s, sa) = (gr.iter().sum::<f64>(), gr.iter().map(|v| v.abs()).sum::<f64>());
                    want.value.extend(yr.iter().zip(&gr).map(|(y, g)| g - y.exp() * s));
                    want.scale.extend(yr.iter().zip(&gr).map(|(y, g)| g.abs() + y.exp() * sa));
                } else {
                    let (s, sa) = (yr.iter().zip(&gr).map(|(y, g)| y * g).sum::<f64>(), yr.iter().zip(&gr).map(|(y, g)| (y * g).abs()).sum::<f64>());
                    want.value.extend(yr.iter().zip(&gr).map(|(y, g)| y * (g - s)));
                    want.scale.extend(yr.iter().zip(&gr).map(|(y, g)| y.abs() * (g.abs() + sa)));
                }
            }
            checks.push(Check::new(k, shape.clone(), "f32", compare(&emu.get("dx"), &want), TOL_F32));
        }
    }

    // Views: a permuted, narrowed view of a [4, 5, 6] buffer (offset applied by the launcher,
    // so the source passed starts at it), and a broadcast (stride 0) one; bf16 rows padded.
    let buf = rand(&mut rng, 4 * 5 * 6, -3.0, 3.0);
    let views: [(&str, usize, Vec<usize>, Vec<usize>); 3] = [
        ("[6, 4, 3] permuted + narrowed", 6, vec![6, 4, 3], vec![1, 30, 6]),
        ("[2, 3, 5, 6] broadcast (stride 0)", 0, vec![2, 3, 5, 6], vec![0, 30, 6, 1]),
        ("rank 1", 7, vec![100], vec![1]),
    ];
    for (desc, offset, shape, strides) in views {
        let n: usize = shape.iter().product();
        let want = kernels::copy::gather_reference(&buf, offset, &shape, &strides);
        let (d, s) = kernels::copy::padded(&shape, &strides).unwrap();
        let t: Vec<usize> = (0..6).map(|k| d[k + 1..].iter().product()).collect(); // row-major destination
        let cols = *shape.last().unwrap();
        let src16: Vec<u16> = buf.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
        let want16: Vec<u16> = want.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
        let kernels = [("strided_assign_f32", cols), ("strided_assign_u16", cols), ("cast_bf16_strided", cols), ("cast_bf16_strided", cols + 3), ("copy_bf16_strided", cols + 3), ("widen_bf16_strided", cols)];
        for (kernel, pitch) in kernels {
            let mut args: Vec<i64> = vec![n as i64, cols as i64, pitch as i64];
            args.extend(d[1..].iter().map(|&v| v as i64));
            args.extend(s.iter().map(|&v| v as i64));
            args.extend(t.iter().map(|&v| v as i64));
            emu.put_i64("view.i64", &args);
            // The launcher passes the source from its offset on.
            emu.put("x", &buf[offset..]);
            emu.put_u16("x", &src16[offset..]);
            emu.run(kernel, 1, buf.len() - offset, 0);
            let label = format!("{desc}, pitch {pitch}");
            let bad = match kernel {
                "strided_assign_f32" => emu.get("dst").iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count(),
                // bf16 -> f32 is exact: the widened bits of the rounded view.
                "widen_bf16_strided" => emu.get("dst").iter().zip(&want16).filter(|(a, b)| a.to_bits() != half::bf16::from_bits(**b).to_f32().to_bits()).count(),
                _ => {
                    // f32 -> bf16 rounds as `half` does; bf16 -> bf16 copies the bits: both give
                    // the rounded view, rows `pitch` apart, the pad still poison.
                    let got = emu.get_u16("dst.u16");
                    (0..got.len()).filter(|&i| got[i] != if i % pitch < cols { want16[i / pitch * cols + i % pitch] } else { 0x1234 }).count()
                }
            };
            checks.push(exact(kernel, label, bad, n));
        }
    }
    // The tiled casts of transposed matrices: sizes off the 32x32 tile, rows ld apart, a gap
    // between matrices, an offset, padded dst rows; one matrix of Wᵀ's shape too.
    let buf = rand(&mut rng, 5000, -3.0, 3.0);
    let buf16: Vec<u16> = buf.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
    for (offset, t, pitch) in [(5, TransposedBatch { batch: 3, rows: 37, cols: 35, ld: 40, batch_stride: 35 * 40 + 7 }, 40), (0, TransposedBatch { batch: 1, rows: 64, cols: 70, ld: 64, batch_stride: 0 }, 72)] {
        let view = kernels::copy::gather_reference(&buf, offset, &[t.batch, t.rows, t.cols], &[t.batch_stride, 1, t.ld]);
        emu.put_i64("tview.i64", &[t.batch, t.rows, t.cols, t.ld, t.batch_stride, pitch].map(|v| v as i64));
        emu.put("x", &buf[offset..]);
        emu.put_u16("x", &buf16[offset..]);
        for kernel in ["cast_bf16_transposed", "copy_bf16_transposed"] {
            emu.run(kernel, 1, buf.len() - offset, 0);
            let got = emu.get_u16("dst.u16");
            let want = |i: usize| if i % pitch < t.cols { half::bf16::from_f32(view[i / pitch * t.cols + i % pitch]).to_bits() } else { 0x1234 };
            let bad = (0..got.len()).filter(|&i| got[i] != want(i)).count() + (t.batch * t.rows * pitch).abs_diff(got.len());
            checks.push(exact(kernel, format!("{t:?} +{offset}, pitch {pitch}"), bad, got.len()));
        }
    }
    elementwise_checks(&emu, &mut rng, &mut checks);
    sample_checks(&emu, &mut rng, &mut checks);
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 68);
}

/// sample_rows_f32 against the inverse CDF in f64: each row's pick must hold its uniform's
/// target u·Σw inside its own interval of the running sum (up to f32 rounding, 1e-5 of Σw) and
/// have positive weight. Row 0 draws u = 0 (the first positive weight, exactly: its id 0 is
/// masked), row 1 the largest uniform below 1; the 50257-wide rows mask every other id and put
/// one logit far above the rest on the last row; a row of -inf, or with one NaN, gives its last
/// id (as the CPU's walk).
fn sample_checks(emu: &Emu, rng: &mut StdRng, checks: &mut Vec<Check>) {
    for (rows, cols) in [(1usize, 1usize), (6, 33), (9, 300), (3, 1025), (4, 50257)] {
        for temperature in [1.0f32, 0.7] {
            let a = 1.0 / temperature;
            let mut x = rand(rng, rows * cols, -6.0, 6.0);
            let mut u: Vec<f32> = (0..rows).map(|_| rng.gen::<f32>()).collect();
            u[0] = 0.0;
            if rows > 1 {
                u[1] = 1.0 - f32::EPSILON / 2.0;
            }
            if cols > 1 {
                x[0] = f32::NEG_INFINITY;
            }
            if cols > 50_000 {
                x.iter_mut().skip(1).step_by(2).for_each(|v| *v = f32::NEG_INFINITY);
                x[rows * cols - 7] = 90.0; // exp overflows unless taken relative to the row max
            }
            if rows == 9 {
                x[8 * cols..].fill(f32::NEG_INFINITY);
            }
            if rows == 6 {
                x[4 * cols - 1] = f32::NAN; // one NaN (in the last chunk): the CPU's walk finds no interval
            }
            emu.put("x", &x);
            emu.put("u", &u);
            emu.run_args(&["sample_rows_f32".into(), rows.to_string(), cols.to_string(), emu.dir.display().to_string(), a.to_string()]);
            let got = emu.get_i64("idx.i64");
            let bad = x
                .chunks(cols)
                .zip(u.iter().zip(&got))
                .enumerate()
                .filter(|&(r, (row, (&u, &i)))| {
                    let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                    let w: Vec<f64> = row.iter().map(|&v| ((v as f64 - m) * a as f64).exp()).collect();
                    let total: f64 = w.iter().sum();
                    if total.is_nan() || total <= 0.0 {
                        return i != cols as i64 - 1; // a NaN, or no positive weight: the last id
                    }
                    let Some(i) = usize::try_from(i).ok().filter(|&i| i < cols && w[i] > 0.0) else { return true };
                    if r == 0 {
                        return Some(i) != w.iter().position(|&w| w > 0.0);
                    }
                    let (before, target, slack) = (w[..i].iter().sum::<f64>(), u as f64 * total, 1e-5 * total);
                    !(before - slack <= target && target < before + w[i] + slack)
                })
                .count();
            checks.push(exact("sample_rows_f32", format!("{rows}x{cols} T={temperature}"), bad, rows));
        }
    }
}

/// The elementwise kernels of cu/pointwise.cu: each unary function and its gradient, where,
/// the min/max gradient (ties split), fill, and gather/scatter along rows (a bad id, repeats).
fn elementwise_checks(emu: &Emu, rng: &mut StdRng, checks: &mut Vec<Check>) {
    let n = 1000 + 37;
    let run = |kernel: &str, extra: &[String]| {
        let mut a = vec![kernel.to_string(), "1".into(), n.to_string(), emu.dir.display().to_string()];
        a.extend_from_slice(extra);
        emu.run_args(&a);
    };
    // (name, code, lo, hi, f(x), f'(x) from x and y = f(x)): the kernel's op codes (pointwise::Unary).
    type F = fn(f64, f64) -> f64;
    let unary: [(&str, i32, f64, f64, F, F); 10] = [
        ("exp", 0, 0.0, 0.0, |x, _| x.exp(), |_, y| y),
        ("log", 1, 0.0, 0.0, |x, _| x.abs().ln(), |x, _| 1.0 / x.abs()),
        ("tanh", 2, 0.0, 0.0, |x, _| x.tanh(), |_, y| 1.0 - y * y),
        ("sigmoid", 3, 0.0, 0.0, |x, _| 1.0 / (1.0 + (-x).exp()), |_, y| y * (1.0 - y)),
        ("log_sigmoid", 4, 0.0, 0.0, |x, _| -(1.0 + (-x).exp()).ln(), |x, _| 1.0 / (1.0 + x.exp())),
        ("sqr", 5, 0.0, 0.0, |x, _| x * x, |x, _| 2.0 * x),
        ("sqrt", 6, 0.0, 0.0, |x, _| x.abs().sqrt(), |_, y| 0.5 / y),
        ("relu", 7, 0.0, 0.0, |x, _| x.max(0.0), |x, _| if x > 0.0 { 1.0 } else { 0.0 }),
        ("clamp", 8, -0.5, 0.75, |x, _| x.clamp(-0.5, 0.75), |x, _| if (-0.5..=0.75).contains(&x) { 1.0 } else { 0.0 }),
        ("affine", 9, 1.5, -0.25, |x, _| x * 1.5 - 0.25, |_, _| 1.5),
    ];
    for (name, code, lo, hi, f, df) in unary {
        let mut x = rand(rng, n, -3.0, 3.0);
        if matches!(name, "log" | "sqrt") {
            x.iter_mut().for_each(|v| *v = v.abs());
        }
        let g = rand(rng, n, -1.0, 1.0);
        emu.put("a", &x);
        let extra = [code.to_string(), lo.to_string(), hi.to_string()];
        run("unary_fwd_f32", &extra);
        let y = emu.get("out");
        let want: Vec<f64> = x.iter().map(|&v| f(v as f64, 0.0)).collect();
        checks.push(Check::new(&format!("unary_fwd_f32 ({name})"), format!("n={n}"), "f32", compare(&y, &r::Ref { scale: want.iter().map(|v| v.abs()).collect(), value: want }), TOL_F32));
        emu.put("b", &y);
        emu.put("g", &g);
        run("unary_bwd_f32", &extra);
        let want: Vec<f64> = x.iter().zip(&y).zip(&g).map(|((&xv, &yv), &gv)| gv as f64 * df(xv as f64, yv as f64)).collect();
        checks.push(Check::new(&format!("unary_bwd_f32 ({name})"), format!("n={n}"), "f32", compare(&emu.get("out"), &r::Ref { scale: want.iter().map(|v| v.abs()).collect(), value: want }), TOL_F32));
    }

    let (a, b, g) = (rand(rng, n, -1.0, 1.0), rand(rng, n, -1.0, 1.0), rand(rng, n, -1.0, 1.0));
    let c: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { 0.0 } else { 2.0 }).collect();
    for (name, x) in [("a", &a), ("b", &b), ("c", &c), ("g", &g)] {
        emu.put(name, x);
    }
    run("where_f32", &[]);
    let bad = emu.get("out").iter().enumerate().filter(|&(i, &o)| o.to_bits() != if c[i] != 0.0 { a[i] } else { b[i] }.to_bits()).count();
    checks.push(exact("where_f32", format!("n={n}"), bad, n));

    // min/max gradient: every 5th pair tied (half the gradient each).
    let b2: Vec<f32> = b.iter().enumerate().map(|(i, &v)| if i % 5 == 0 { a[i] } else { v }).collect();
    emu.put("b", &b2);
    for is_max in [0, 1] {
        run("minmax_bwd_f32", &[is_max.to_string()]);
        let (da, db) = (emu.get("da"), emu.get("db"));
        let bad = (0..n)
            .filter(|&i| {
                let (wa, wb) = if a[i] == b2[i] { (0.5 * g[i], 0.5 * g[i]) } else if (a[i] > b2[i]) == (is_max == 1) { (g[i], 0.0) } else { (0.0, g[i]) };
                da[i] != wa || db[i] != wb
            })
            .count();
        checks.push(exact(&format!("minmax_bwd_f32 ({})", if is_max == 1 { "max" } else { "min" }), format!("n={n}, ties"), bad, n));
    }

    run("fill_f32", &["-2.5".to_string()]);
    let bad = emu.get("out").iter().filter(|&&o| o != -2.5).count();
    checks.push(exact("fill_f32", format!("n={n}"), bad, n));

    // Rows of v = 50 entries, 7 ids per row (repeats; one bad id per row in gather).
    let (rows, v, k) = (4usize, 50usize, 7usize);
    let x = rand(rng, rows * v, -1.0, 1.0);
    let ids: Vec<i64> = (0..rows * k).map(|i| if i % k == 6 { if i % 2 == 0 { -1 } else { v as i64 } } else { ((i * 13) % 5) as i64 * 9 }).collect();
    let gk = rand(rng, rows * k, -1.0, 1.0);
    emu.put("a", &x);
    emu.put("g", &gk);
    emu.put_i64("ids.i64", &ids);
    let run_rows = |kernel: &str| emu.run_args(&[kernel.to_string(), rows.to_string(), v.to_string(), emu.dir.display().to_string(), k.to_string()]);
    run_rows("gather_rows_f32");
    let got = emu.get("out");
    let bad = (0..rows * k)
        .filter(|&i| {
            let id = ids[i];
            if id < 0 || id >= v as i64 { !got[i].is_nan() } else { got[i] != x[(i / k) * v + id as usize] }
        })
        .count();
    checks.push(exact("gather_rows_f32", format!("{rows}x{v}, {k} ids per row, bad ids"), bad, rows * k));
    run_rows("scatter_add_rows_f32");
    let mut want = vec![0f64; rows * v];
    for i in 0..rows * k {
        let id = ids[i];
        if id >= 0 && id < v as i64 {
            want[(i / k) * v + id as usize] += gk[i] as f64;
        }
    }
    let want = r::Ref { scale: want.iter().map(|w| w.abs() + 1.0).collect(), value: want };
    checks.push(Check::new("scatter_add_rows_f32", format!("{rows}x{v}, {k} ids per row, repeats"), "f32", compare(&emu.get("out"), &want), TOL_F32));
}

/// NaN in the keys and values that padding hides: a kernel that reads them (0 · NaN) fails.
fn nan_padding(k: &mut [f32], v: &mut [f32], pads: &[usize], heads_per_row: usize, tk: usize, d: usize) {
    for (b, &p) in pads.iter().enumerate() {
        for h in b * heads_per_row..(b + 1) * heads_per_row {
            k[h * tk * d..(h * tk + p) * d].fill(f32::NAN);
            v[h * tk * d..(h * tk + p) * d].fill(f32::NAN);
        }
    }
}

#[test]
fn f32_attention_kernels_match_the_reference_on_the_cpu_emulation() {
    use kernels::attention::{lse_check, reference, AttnShape};
    let Some((emu, dir, seed, mut rng)) = start("attention", &["attention.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();
    let run = |kernel: &str, s: AttnShape, hpr: usize| {
        let a = [kernel.to_string(), s.heads.to_string(), s.tq.to_string(), s.tk.to_string(), s.d.to_string(), hpr.to_string(), dir.display().to_string()];
        emu.run_args(&a);
    };

    // (heads per row, tq, tk, d, padding keys per batch row; empty: one unpadded row of heads):
    // head dims 32/64/128, tq < tk, tiles not full, padding queries, a wholly padded key tile.
    let cases: [(usize, usize, usize, usize, &[usize]); 6] = [
        (2, 70, 70, 32, &[]),
        (1, 33, 100, 64, &[]),
        (2, 17, 40, 128, &[]),
        (2, 20, 40, 32, &[5, 0, 39]),
        (1, 70, 70, 64, &[0, 37]),
        (1, 40, 80, 32, &[33, 80 - 1]),
    ];
    for (hpr, tq, tk, d, pads) in cases {
        let heads = hpr * pads.len().max(1);
        let s = AttnShape { heads, tq, tk, d };
        let label = format!("{} pad {pads:?}", s.describe());
        let (nq, nk) = (heads * tq * d, heads * tk * d);
        let (q, mut k, mut v, g) = (rand(&mut rng, nq, -2.0, 2.0), rand(&mut rng, nk, -2.0, 2.0), rand(&mut rng, nk, -1.0, 1.0), rand(&mut rng, nq, -1.0, 1.0));
        nan_padding(&mut k, &mut v, pads, hpr, tk, d);
        for (name, x) in [("q", &q), ("k", &k), ("v", &v), ("dout", &g)] {
            emu.put(name, x);
        }
        emu.put_i32("pads.i32", &pads.iter().map(|&p| p as i32).collect::<Vec<i32>>());
        let hpr_arg = if pads.is_empty() { 0 } else { hpr };
        let (f, b) = reference(&q, &k, &v, Some(&g), s, pads);
        let b = b.unwrap();
        run("fwd", s, hpr_arg);
        let (out, lse) = (emu.get("out"), emu.get("lse"));
        checks.push(Check::new("attn_fwd_v1_f32 (out)", label.clone(), "f32", compare(&out, &f.out), TOL_F32));
        checks.push(lse_check("attn_fwd_v1_f32 (lse)", label.clone(), "f32", &lse, &f.lse, TOL_F32));
        // Backward from the emulated forward's out and lse, as training runs it.
        run("bwd", s, hpr_arg);
        for (name, want) in [("dq", &b.dq), ("dk", &b.dk), ("dv", &b.dv)] {
            checks.push(Check::new(&format!("attn_bwd_v1_f32 ({name})"), label.clone(), "f32", compare(&emu.get(name), want), TOL_F32));
        }
    }

    // Decode: one query per head at the end of the keys; a row whose keys are all padding. Each
    // case also read in place from a KV cache of larger capacity (heads `cap * d` apart, the
    // rows past tk NaN), with f32 and bf16 keys and values.
    let decode: [(usize, usize, usize, &[usize]); 4] = [(2, 300, 64, &[]), (3, 1, 128, &[]), (2, 45, 32, &[3, 45]), (1, 70, 32, &[0, 69, 12])];
    for (hpr, tk, d, pads) in decode {
        let heads = hpr * pads.len().max(1);
        let s = AttnShape { heads, tq: 1, tk, d };
        let label = format!("{} pad {pads:?}", s.describe());
        let (q, mut k, mut v) = (rand(&mut rng, heads * d, -2.0, 2.0), rand(&mut rng, heads * tk * d, -2.0, 2.0), rand(&mut rng, heads * tk * d, -1.0, 1.0));
        nan_padding(&mut k, &mut v, pads, hpr, tk, d);
        emu.put_i32("pads.i32", &pads.iter().map(|&p| p as i32).collect::<Vec<i32>>());
        emu.put("q", &q);
        let hpr_arg = if pads.is_empty() { 0 } else { hpr };
        let cap = tk + 7;
        // Heads `cap * d` apart: the cache's layout, the unused rows poisoned.
        let cached = |x: &[f32]| -> Vec<f32> {
            let mut buf = vec![f32::NAN; (heads - 1) * cap * d + tk * d];
            for h in 0..heads {
                buf[h * cap * d..h * cap * d + tk * d].copy_from_slice(&x[h * tk * d..(h + 1) * tk * d]);
            }
            buf
        };
        for (kernel, stride) in [("decode", tk * d), ("decode", cap * d), ("decode_bf16kv", cap * d)] {
            let bf = kernel == "decode_bf16kv";
            // bf16 K/V: the reference reads the same rounded values (NaN stays NaN).
            let round = |x: &[f32]| -> Vec<f32> { if bf { from_bf16_bits(&to_bf16_bits(x)) } else { x.to_vec() } };
            let (kr, vr) = (round(&k), round(&v));
            let (kb, vb) = if stride == tk * d { (kr.clone(), vr.clone()) } else { (cached(&kr), cached(&vr)) };
            if bf {
                emu.put_u16("k", &to_bf16_bits(&kb));
                emu.put_u16("v", &to_bf16_bits(&vb));
            } else {
                emu.put("k", &kb);
                emu.put("v", &vb);
            }
            let (f, _) = reference(&q, &kr, &vr, None, s, pads);
            let a = [kernel.to_string(), heads.to_string(), "1".into(), tk.to_string(), d.to_string(), hpr_arg.to_string(), dir.display().to_string(), stride.to_string()];
            emu.run_args(&a);
            let name = if bf { "attn_decode_bf16kv" } else { "attn_decode_f32" };
            let label = if stride == tk * d { label.clone() } else { format!("{label}, cache of {cap}") };
            checks.push(Check::new(&format!("{name} (out)"), label.clone(), "f32", compare(&emu.get("out"), &f.out), TOL_F32));
            checks.push(lse_check(&format!("{name} (lse)"), label, "f32", &emu.get("lse"), &f.lse, TOL_F32));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 54);
}

/// v2 (bf16 in, f32 accumulation on tensor cores) with mma.sync, ldmatrix and cp.async on the
/// stand-ins of emu/tensor_core.h: forward, then backward from the emulated forward's out and
/// lse, against the f64 reference on the same bf16-rounded inputs.
#[test]
fn bf16_attention_kernels_match_the_reference_on_the_cpu_emulation() {
    use kernels::attention::{lse_check, reference, AttnShape};
    let Some((emu, dir, seed, mut rng)) = start("attention", &["attention.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();
    // (heads per row, tq, tk, d, padding keys per batch row; empty: no padding): head dims
    // 32/64/128, two query tiles with a partial one, tq < tk, padding queries (tq = tk), a
    // wholly padded key tile, pad = tk - 1; v4's 128-key blocks: two and a ragged third
    // (tk = 300), a wholly padded first block (pad 129).
    let cases: [(usize, usize, usize, usize, &[usize]); 7] = [
        (2, 70, 70, 64, &[]),
        (1, 33, 100, 128, &[]),
        (2, 40, 40, 32, &[]),
        (2, 20, 80, 32, &[5, 0, 79]),
        (1, 70, 70, 64, &[0, 37]),
        (1, 40, 130, 128, &[70, 129]),
        (1, 150, 300, 64, &[]),
    ];
    for (hpr, tq, tk, d, pads) in cases {
        let heads = hpr * pads.len().max(1);
        let s = AttnShape { heads, tq, tk, d };
        let label = format!("{} pad {pads:?}", s.describe());
        let (nq, nk) = (heads * tq * d, heads * tk * d);
        let (q, mut k, mut v, g) = (rand(&mut rng, nq, -2.0, 2.0), rand(&mut rng, nk, -2.0, 2.0), rand(&mut rng, nk, -1.0, 1.0), rand(&mut rng, nq, -1.0, 1.0));
        nan_padding(&mut k, &mut v, pads, hpr, tk, d);
        let (q16, k16, v16, g16) = (to_bf16_bits(&q), to_bf16_bits(&k), to_bf16_bits(&v), to_bf16_bits(&g));
        for (name, x) in [("q", &q16), ("k", &k16), ("v", &v16), ("dout", &g16)] {
            emu.put_u16(name, x);
        }
        emu.put_i32("pads.i32", &pads.iter().map(|&p| p as i32).collect::<Vec<i32>>());
        let hpr_arg = if pads.is_empty() { 0 } else { hpr };
        let (f, b) = reference(&from_bf16_bits(&q16), &from_bf16_bits(&k16), &from_bf16_bits(&v16), Some(&from_bf16_bits(&g16)), s, pads);
        let b = b.unwrap();
        let run = |kernel: &str| emu.run_args(&[kernel, &heads.to_string(), &tq.to_string(), &tk.to_string(), &d.to_string(), &hpr_arg.to_string(), &dir.display().to_string()].map(String::from));
        for (kind, kernel) in [("fwd3", "attn_fwd_v3_bf16"), ("fwd2", "attn_fwd_v2_bf16")] {
            run(kind);
            checks.push(Check::new(&format!("{kernel} (out)"), label.clone(), "bf16->f32", compare(&emu.get("out"), &f.out), TOL_BF16));
            checks.push(lse_check(&format!("{kernel} (lse)"), label.clone(), "bf16->f32", &emu.get("lse"), &f.lse, TOL_BF16));
        }
        for (kind, kernel) in [("bwd2", "attn_bwd_v2_bf16"), ("bwd3", "attn_bwd_v3_bf16"), ("bwd4", "attn_bwd_v4_bf16")] {
            if kind == "bwd4" && d == 32 {
                continue; // v4 has no d=32 build (the launcher runs v3 there)
            }
            run(kind);
            for (name, want) in [("dq", &b.dq), ("dk", &b.dk), ("dv", &b.dv)] {
                checks.push(Check::new(&format!("{kernel} ({name})"), label.clone(), "bf16->f32", compare(&emu.get(name), want), TOL_BF16));
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 85);
}

/// The tensor-core matmuls before Hopper against the f64 reference on the same bf16 inputs: v4
/// (mma.sync, ldmatrix and cp.async on the stand-ins of emu/tensor_core.h) with each epilogue,
/// f32, bf16, and bf16 GELU with its pre-activation (the epilogue v5 and v6 share), whole and
/// with split-K; and v3 (WMMA on the stand-in of emu/mma.h, cp.async double buffering), f32 and
/// bf16 out.
#[test]
fn tensor_core_matmuls_v3_and_v4_match_the_reference_on_the_cpu_emulation() {
    let Some((emu, dir, seed, mut rng)) = start("matmul_tc", &["matmul_mma.cu", "matmul_bf16.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();
    // (m, n, k, bias): ragged tiles on the fast path (two k-tiles), odd N and K (the scalar
    // loads, unpaired stores), a thin N, more than one block in each direction.
    for (m, n, k, with_bias) in [(130usize, 264usize, 40usize, true), (17, 33, 5, true), (64, 8, 72, false), (257, 520, 24, true)] {
        let (shape, want) = bf16_matmul_inputs(&emu, &mut rng, m, n, k, with_bias);
        let run = |kind: &str| emu.run_args(&[kind, &m.to_string(), &n.to_string(), &k.to_string(), if with_bias { "1" } else { "0" }, &dir.display().to_string()].map(String::from));
        checks.extend(bf16_matmul_checks(&emu, run, ("matmul_v4", ""), &shape, &want));
        run("v3_f32");
        checks.push(Check::new("matmul_v3_bf16_f32out", shape.clone(), "bf16->f32", compare(&emu.get("c"), &want), TOL_F32));
        run("v3_bf16");
        checks.push(Check::new("matmul_v3_bf16_bf16out", shape.clone(), "bf16", compare(&from_bf16_bits(&emu.get_u16("c.u16")), &want), TOL_BF16));
    }
    // v4 with split-K (its f32 partials over grid.z, then the reduction's epilogue): 7 k-tiles
    // in slices of 3, 3 and 1 on the fast path; the scalar path (odd N and K) in 2 slices.
    for (m, n, k, with_bias, splits) in [(130usize, 264usize, 200usize, true, 3usize), (17, 33, 75, true, 2)] {
        let (shape, want) = bf16_matmul_inputs(&emu, &mut rng, m, n, k, with_bias);
        let run = |kind: &str| emu.run_args(&[kind, &m.to_string(), &n.to_string(), &k.to_string(), if with_bias { "1" } else { "0" }, &dir.display().to_string(), &splits.to_string()].map(String::from));
        checks.extend(bf16_matmul_checks(&emu, run, ("matmul_v4", ""), &format!("{shape}, split-K {splits}"), &want));
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 32);
}

/// Fresh bf16 A [m, k] and B [k, n] and an f32 bias, put where the matmul drivers read them
/// (a.u16, b.u16, bias.f32): the shape's label and the f64 reference on the same bf16 values.
fn bf16_matmul_inputs(emu: &Emu, rng: &mut StdRng, m: usize, n: usize, k: usize, with_bias: bool) -> (String, r::Ref) {
    let (a16, b16) = (to_bf16_bits(&rand(rng, m * k, -1.0, 1.0)), to_bf16_bits(&rand(rng, k * n, -1.0, 1.0)));
    let bias = rand(rng, n, -1.0, 1.0);
    emu.put_u16("a", &a16);
    emu.put_u16("b", &b16);
    emu.put("bias", &bias);
    let want = r::matmul(&from_bf16_bits(&a16), &from_bf16_bits(&b16), with_bias.then_some(&bias[..]), m, n, k);
    (format!("{m}x{n}x{k}{}", if with_bias { "+bias" } else { "" }), want)
}

/// A bf16 matmul's three outputs against `want`: `run(kind)` runs the kernel `{name}_bf16_{kind}`
/// for kind f32 (c.f32), bf16 (c.u16) and gelu (c.u16 and pre.u16; the GELU against GELU of the
/// kernel's own stored pre-activation, as the self-test does).
/// `name`: the entries' prefix ("matmul_v5"); `suffix`: what ends them ("" or "_n192").
fn bf16_matmul_checks(emu: &Emu, run: impl Fn(&str), (name, suffix): (&str, &str), label: &str, want: &r::Ref) -> Vec<Check> {
    let bf16_out = |file: &str| from_bf16_bits(&emu.get_u16(file));
    run("f32");
    let mut checks = vec![Check::new(&format!("{name}_bf16_f32out{suffix}"), label.to_string(), "bf16->f32", compare(&emu.get("c"), want), TOL_F32)];
    run("bf16");
    checks.push(Check::new(&format!("{name}_bf16_bf16out{suffix}"), label.to_string(), "bf16", compare(&bf16_out("c.u16"), want), TOL_BF16));
    run("gelu");
    let stored_pre = bf16_out("pre.u16");
    checks.push(Check::new(&format!("{name}_bf16_gelu{suffix} (pre)"), label.to_string(), "bf16", compare(&stored_pre, want), TOL_BF16));
    checks.push(Check::new(&format!("{name}_bf16_gelu{suffix} (gelu)"), label.to_string(), "bf16", compare(&bf16_out("c.u16"), &r::gelu_fwd(&stored_pre)), TOL_BF16));
    checks
}

/// The Hopper matmuls on the stand-ins of emu/hopper.h (wgmma from shared-memory descriptors,
/// TMA boxes with the 128-byte swizzle, mbarriers): v5 (proven on an H100) checks the stand-ins'
/// model of the hardware; v6 then runs the same wgmma fed by TMA, with its producer and
/// consumers on mbarriers and persistent blocks over more tiles than blocks (the stage ring
/// wrapping inside and across tiles), its maps from the launcher's own `v6_maps`.
#[test]
fn hopper_matmuls_v5_and_v6_match_the_reference_on_the_cpu_emulation() {
    use kernels::matmul_tc::v6_maps;
    let Some((emu, dir, seed, mut rng)) = start("matmul_wgmma", &["matmul_wgmma.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();
    // (m, n, k, bias, v6 blocks, K slices): ragged M, N and K edges (zero-filled), one k-tile, 3
    // k-tiles over 4 tiles on 3 blocks (uneven), 5 k-tiles over 2 tiles on 1 block; split-K:
    // 7 k-tiles in slices of 3, 3 and 1 (f32 partials, then the reduction's epilogue; v6 with 2
    // persistent blocks per slice over 4 tiles), and 5 k-tiles in 2 slices of a ragged K.
    let cases = [(200usize, 264usize, 136usize, true, 2usize, 1usize), (130, 40, 64, false, 1, 1), (256, 512, 192, true, 3, 1), (100, 256, 320, true, 1, 1), (200, 264, 448, true, 2, 3), (130, 264, 296, false, 1, 2)];
    for (m, n, k, with_bias, blocks, splits) in cases {
        let (shape, want) = bf16_matmul_inputs(&emu, &mut rng, m, n, k, with_bias);
        // The maps as the launcher makes them (addresses: any 16-byte aligned stand-in).
        let (am, bm) = v6_maps(&shape, 0x1000, 0x2000, m, n, k).unwrap();
        let maps: Vec<u64> = [am, bm].iter().flat_map(|t| [t.dims[0], t.dims[1], t.row_stride, t.box_dims[0] as u64, t.box_dims[1] as u64]).collect();
        std::fs::write(dir.join("maps.u64"), maps.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        // Both tile widths: 256, and 192 (the _n192 entries: wgmma m64n192k16, three B boxes).
        for bn in [256usize, 192] {
            let tiles = m.div_ceil(128) * n.div_ceil(bn);
            for (version, grid) in [("v5", tiles), ("v6", blocks)] {
                let mut label = if version == "v6" { format!("{shape}, {tiles} tiles on {grid} blocks") } else { shape.clone() };
                if splits > 1 {
                    label += &format!(", split-K {splits}");
                }
                let run = |kind: &str| emu.run_args(&[version, kind, &m.to_string(), &n.to_string(), &k.to_string(), if with_bias { "1" } else { "0" }, &grid.to_string(), &dir.display().to_string(), &splits.to_string(), &bn.to_string()].map(String::from));
                let suffix = if bn == 256 { "" } else { "_n192" };
                checks.extend(bf16_matmul_checks(&emu, run, (&format!("matmul_{version}"), suffix), &label, &want));
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 2 * 48);
}

#[test]
fn f32_matmul_kernels_match_the_reference_on_the_cpu_emulation() {
    let Some((emu, dir, seed, mut rng)) = start("matmul", &["matmul_f32.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();
    let transpose = |x: &[f32], rows: usize, cols: usize| -> Vec<f32> { (0..cols * rows).map(|i| x[(i % rows) * cols + i / rows]).collect() };
    // (batches, m, n, k, shared B, bias): ragged edges, vector-aligned and not, a B shared by all.
    for (batches, m, n, k, shared_b, with_bias) in [(1usize, 17usize, 33usize, 5usize, false, true), (2, 130, 136, 72, false, false), (3, 64, 130, 33, true, true), (1, 1, 1, 1, false, false), (1, 129, 264, 24, false, true)] {
        let shape = format!("{batches}x{m}x{n}x{k}{}{}", if shared_b { " shared B" } else { "" }, if with_bias { " +bias" } else { "" });
        let nb = if shared_b { 1 } else { batches };
        let (a, b) = (rand(&mut rng, batches * m * k, -1.0, 1.0), rand(&mut rng, nb * k * n, -1.0, 1.0));
        let bias = rand(&mut rng, n, -1.0, 1.0);
        let mut want = r::Ref { value: Vec::new(), scale: Vec::new() };
        for i in 0..batches {
            let bi = if shared_b { 0 } else { i };
            let one = r::matmul(&a[i * m * k..(i + 1) * m * k], &b[bi * k * n..(bi + 1) * k * n], with_bias.then_some(&bias[..]), m, n, k);
            want.value.extend(one.value);
            want.scale.extend(one.scale);
        }
        emu.put("bias", &bias);
        for kind in ["v1", "gelu", "nn", "nt", "tn"] {
            if (kind == "v1" || kind == "gelu") && batches > 1 {
                continue;
            }
            // Each operand stored the way the entry reads it, per matrix.
            let store = |x: &[f32], count: usize, rows: usize, cols: usize, t: bool| -> Vec<f32> {
                if !t {
                    return x.to_vec();
                }
                (0..count).flat_map(|i| transpose(&x[i * rows * cols..(i + 1) * rows * cols], rows, cols)).collect()
            };
            emu.put("a", &store(&a, batches, m, k, kind == "tn"));
            emu.put("b", &store(&b, nb, k, n, kind == "nt"));
            let args = [kind, &batches.to_string(), &m.to_string(), &n.to_string(), &k.to_string(), if shared_b { "1" } else { "0" }, if with_bias { "1" } else { "0" }, &dir.display().to_string()];
            emu.run_args(&args.map(String::from));
            if kind == "gelu" {
                // The pre-activation, and the output against GELU of it (as the self-test).
                let pre = emu.get("pre");
                checks.push(Check::new("matmul_v2_f32_gelu (pre)", shape.clone(), "f32", compare(&pre, &want), TOL_F32));
                checks.push(Check::new("matmul_v2_f32_gelu (gelu)", shape.clone(), "f32", compare(&emu.get("c"), &r::gelu_fwd(&pre)), TOL_F32));
                continue;
            }
            let name = if kind == "v1" { "matmul_v1_f32".to_string() } else { format!("matmul_v2_f32_batched ({})", kind.to_uppercase()) };
            checks.push(Check::new(&name, shape.clone(), "f32", compare(&emu.get("c"), &want), TOL_F32));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 23);
}

#[test]
fn memory_bound_kernels_match_the_references_on_the_cpu_emulation() {
    use kernels::memops::{embedding_segments, refs};
    use kernels::reference::AdamWParams;
    let Some((emu, dir, seed, mut rng)) = start("memops", &["cross_entropy.cu", "embedding.cu", "adamw.cu", "elementwise.cu", "reduce.cu", "binary.cu"]) else { return };
    let mut checks: Vec<Check> = Vec::new();
    let run = |args: &[String]| {
        let mut a = vec![args[0].clone(), dir.display().to_string()];
        a.extend_from_slice(&args[1..]);
        emu.run_args(&a);
    };
    let s = |v: &[&dyn ToString]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };

    // Cross-entropy: warp and block groups, f32 and bf16 logits, one ignored row, odd widths
    // (the 16-byte vector loads' prefix and tail). Then the scaled forms (PPO's per-token
    // log-probs at temperature 1 / a): the entropy, and per-row upstream gradients.
    for (n, v) in [(6usize, 33usize), (4, 1001), (3, 5003)] {
        let mut t: Vec<i64> = (0..n).map(|i| ((i * 7919) % v) as i64).collect();
        t[1] = -100;
        emu.put_i64("t.i64", &t);
        let x32 = rand(&mut rng, n * v, -6.0, 6.0);
        let gs = rand(&mut rng, n, -2.0, 2.0);
        emu.put("gscale", &gs);
        for dtype in ["f32", "bf16"] {
            let x = if dtype == "bf16" { from_bf16_bits(&to_bf16_bits(&x32)) } else { x32.clone() };
            if dtype == "bf16" {
                emu.put_u16("x", &to_bf16_bits(&x32));
            } else {
                emu.put("x", &x);
            }
            let (tol, prec) = if dtype == "bf16" { (TOL_BF16, "bf16") } else { (TOL_F32, "f32") };
            for group in ["warp", "block"] {
                for a in [1.0f32, 1.0 / 0.7] {
                    let scaled = a != 1.0;
                    let f = refs::ce_forward_scaled(&x, &t, v, a);
                    let shape = if scaled { format!("{n}x{v} a={a:.3}") } else { format!("{n}x{v}") };
                    let k = format!("ce_fwd_{group}_{dtype}");
                    run(&s(&[&k, &n, &v, &a, &(scaled as u8)]));
                    let (loss, lse) = (emu.get("loss"), emu.get("lse"));
                    checks.push(Check::new(&format!("{k} (loss)"), shape.clone(), "f32", compare(&loss, &f.loss), TOL_F32));
                    checks.push(Check::new(&format!("{k} (lse)"), shape.clone(), "f32", compare(&lse, &f.lse), TOL_F32));
                    if scaled {
                        checks.push(Check::new(&format!("{k} (entropy)"), shape.clone(), "f32", compare(&emu.get("ent"), &f.ent), TOL_F32));
                    }
                    let k = format!("ce_bwd_{group}_{dtype}");
                    let (scale, g) = if scaled { (-a, Some(&gs[..])) } else { (0.25, None) };
                    run(&s(&[&k, &n, &v, &a, &scale, &(scaled as u8)]));
                    let dx = if dtype == "bf16" { from_bf16_bits(&emu.get_u16("dx.u16")) } else { emu.get("dx") };
                    checks.push(Check::new(&k, shape.clone(), prec, compare(&dx, &refs::ce_backward_scaled(&x, &t, &lse, v, a, scale, g)), tol));
                    if group == "warp" && dtype == "f32" && !scaled {
                        run(&s(&[&"ce_loss_mean_f32", &n]));
                        let (want, kept) = refs::ce_mean(&f, &t);
                        let got = emu.get("mean");
                        let c = Check::new("ce_loss_mean_f32", shape, "f32", compare(&got[..1], &want), TOL_F32);
                        checks.push(if got[1] as f64 == kept { c } else { Check::failed("ce_loss_mean_f32", c.shape, "f32", format!("kept {} != {kept}", got[1])) });
                    }
                }
            }
        }
    }

    // Embedding: forward, and both backwards adding into a non-zero table (repeated ids).
    for (n, v, d) in [(9usize, 20usize, 24usize), (33, 50, 769), (5, 7, 128)] {
        let shape = format!("N={n} V={v} D={d}");
        let ids: Vec<i64> = (0..n).map(|i| ((i * i + 3) % v) as i64).collect();
        let (table, dout) = (rand(&mut rng, v * d, -1.0, 1.0), rand(&mut rng, n * d, -1.0, 1.0));
        emu.put_i64("ids.i64", &ids);
        emu.put("table", &table);
        emu.put("dout", &dout);
        run(&s(&[&"embedding_fwd_f32", &n, &v, &d]));
        checks.push(Check::new("embedding_fwd_f32", shape.clone(), "f32", compare(&emu.get("out"), &refs::embedding_fwd(&ids, &table, d)), TOL_F32));
        let want = refs::embedding_bwd(&table, &ids, &dout, d);
        emu.put("dtable", &table);
        run(&s(&[&"embedding_bwd_atomic_f32", &n, &v, &d]));
        checks.push(Check::new("embedding_bwd_atomic_f32", shape.clone(), "f32", compare(&emu.get("dtable"), &want), TOL_F32));
        let (perm, seg, seg_id) = embedding_segments(&ids, v).unwrap();
        emu.put_i32("perm.i32", &perm);
        emu.put_i32("seg.i32", &seg);
        emu.put_i64("seg_id.i64", &seg_id);
        emu.put("dtable", &table);
        run(&s(&[&"embedding_bwd_sorted_f32", &seg_id.len(), &n, &v, &d]));
        checks.push(Check::new("embedding_bwd_sorted_f32", shape, "f32", compare(&emu.get("dtable"), &want), TOL_F32));
    }

    // AdamW over several tensors in one launch: lengths around the chunk (an empty one too),
    // each its own learning rate, decay and step; the table from kernels::adamw::plan, with
    // element offsets where the launcher puts device addresses.
    {
        use kernels::adamw::{plan, CHUNK};
        let sizes = [5usize, 2 * CHUNK + 1, 0, 1000, CHUNK];
        let total: usize = sizes.iter().sum();
        let (p, g, m) = (rand(&mut rng, total, -1.0, 1.0), rand(&mut rng, total, -1.0, 1.0), rand(&mut rng, total, -0.1, 0.1));
        let v: Vec<f32> = rand(&mut rng, total, -0.1, 0.1).into_iter().map(|x| x * x).collect();
        let mut entries = Vec::new();
        let mut off = 0u64;
        for (i, &n) in sizes.iter().enumerate() {
            let h = AdamWParams { lr: 1e-4 * (i + 1) as f64, b1: 0.9, b2: 0.95, eps: 1e-8, wd: 0.05 * i as f64, step: rng.gen_range(1..300) };
            entries.push(([off; 4], n, h));
            off += n as u64;
        }
        let pl = plan(&entries);
        std::fs::write(dir.join("table.u64"), pl.words.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        for (name, x) in [("p", &p), ("g", &g), ("m", &m), ("v", &v)] {
            emu.put(name, x);
        }
        run(&s(&[&"adamw_multi_f32", &sizes.len(), &pl.first_chunk_at, &pl.blocks, &total, &0.9f32, &0.95f32, &1e-8f32]));
        let (gp, gm, gv) = (emu.get("p"), emu.get("m"), emu.get("v"));
        let mut start = 0;
        for (_, n, h) in &entries {
            let r = start..start + n;
            let want = r::adamw(&p[r.clone()], &g[r.clone()], &m[r.clone()], &v[r.clone()], *h);
            let shape = format!("n={n} of {} tensors, lr={:.0e} wd={:.2} step={}", sizes.len(), h.lr, h.wd, h.step);
            checks.push(Check::new("adamw_multi_f32 (p)", shape.clone(), "f32", compare(&gp[r.clone()], &want.p), TOL_F32));
            checks.push(Check::new("adamw_multi_f32 (m)", shape.clone(), "f32", compare(&gm[r.clone()], &want.m), TOL_F32));
            checks.push(Check::new("adamw_multi_f32 (v)", shape, "f32", compare(&gv[r.clone()], &want.v), TOL_F32));
            start += n;
        }
    }

    // AdamW and GELU over n not a multiple of the grid (grid-stride tails).
    for n in [1usize, 1001, 4099] {
        let h = AdamWParams { lr: 3e-4, b1: 0.9, b2: 0.95, eps: 1e-8, wd: 0.1, step: rng.gen_range(1..200) };
        let (p, g, m) = (rand(&mut rng, n, -1.0, 1.0), rand(&mut rng, n, -1.0, 1.0), rand(&mut rng, n, -0.1, 0.1));
        let v: Vec<f32> = rand(&mut rng, n, -0.1, 0.1).into_iter().map(|x| x * x).collect();
        for (name, x) in [("p", &p), ("g", &g), ("m", &m), ("v", &v)] {
            emu.put(name, x);
        }
        let (bc1, bc2) = h.bias_corrections();
        run(&s(&[&"adamw_f32", &n, &(h.lr as f32), &(h.b1 as f32), &(h.b2 as f32), &(h.eps as f32), &(h.wd as f32), &(bc1 as f32), &(bc2 as f32)]));
        let want = r::adamw(&p, &g, &m, &v, h);
        let shape = format!("n={n} step={}", h.step);
        checks.push(Check::new("adamw_f32 (p)", shape.clone(), "f32", compare(&emu.get("p"), &want.p), TOL_F32));
        checks.push(Check::new("adamw_f32 (m)", shape.clone(), "f32", compare(&emu.get("m"), &want.m), TOL_F32));
        checks.push(Check::new("adamw_f32 (v)", shape, "f32", compare(&emu.get("v"), &want.v), TOL_F32));

        let (x, dy) = (rand(&mut rng, n, -6.0, 6.0), rand(&mut rng, n, -1.0, 1.0));
        emu.put("x", &x);
        emu.put("dy", &dy);
        run(&s(&[&"gelu_fwd_f32", &n]));
        checks.push(Check::new("gelu_fwd_f32", format!("n={n}"), "f32", compare(&emu.get("out"), &r::gelu_fwd(&x)), TOL_F32));
        run(&s(&[&"gelu_bwd_f32", &n]));
        checks.push(Check::new("gelu_bwd_f32", format!("n={n}"), "f32", compare(&emu.get("out"), &r::gelu_bwd(&x, &dy)), TOL_F32));
        let (x16, dy16) = (to_bf16_bits(&x), to_bf16_bits(&dy));
        emu.put_u16("x", &x16);
        emu.put_u16("dy", &dy16);
        run(&s(&[&"gelu_fwd_bf16", &n]));
        checks.push(Check::new("gelu_fwd_bf16", format!("n={n}"), "bf16", compare(&from_bf16_bits(&emu.get_u16("out.u16")), &r::gelu_fwd(&from_bf16_bits(&x16))), TOL_BF16));
        run(&s(&[&"gelu_bwd_bf16", &n]));
        checks.push(Check::new("gelu_bwd_bf16", format!("n={n}"), "bf16", compare(&from_bf16_bits(&emu.get_u16("out.u16")), &r::gelu_bwd(&from_bf16_bits(&x16), &from_bf16_bits(&dy16))), TOL_BF16));
    }
    // Sums over rows (one split and several, vector and scalar widths), at an H100's geometry.
    const SMS: usize = 132;
    for (rows, c) in [(3usize, 5usize), (700, 96), (2000, 33), (64, 1)] {
        let x = rand(&mut rng, rows * c, -1.0, 1.0);
        emu.put("x", &x);
        let (vw, gx, splits, rows_per) = kernels::memops::sum_rows_geometry(rows, c, SMS);
        run(&s(&[&"sum_rows", &rows, &c, &vw, &gx, &splits, &rows_per]));
        checks.push(Check::new(if vw == 4 { "sum_rows_vec4_f32" } else { "sum_rows_f32" }, format!("{rows}x{c}, {splits} split(s)"), "f32", compare(&emu.get("out"), &refs::sum_rows(&x, rows, c)), TOL_F32));
    }

    // The global L2 norm over buffers at odd offsets of one allocation (any alignment).
    let data = rand(&mut rng, 50_000, -1.0, 1.0);
    let (offsets, lens) = (vec![1i64, 7000, 30_001, 49_990], vec![5000i64, 20_000, 3, 10]);
    emu.put("data", &data);
    emu.put_i64("offsets.i64", &offsets);
    emu.put_i64("lens.i64", &lens);
    let total: i64 = lens.iter().sum();
    run(&s(&[&"l2norm", &offsets.len(), &kernels::memops::l2norm_blocks(total as usize, SMS)]));
    let bufs: Vec<&[f32]> = offsets.iter().zip(&lens).map(|(&o, &l)| &data[o as usize..(o + l) as usize]).collect();
    checks.push(Check::new("l2norm_partial_f32 + finish", format!("{} buffers, {total} elements", bufs.len()), "f32", compare(&emu.get("out"), &refs::l2norm(&bufs)), TOL_F32));

    // Broadcast binary ops: contiguous, a bias row, a column, a transposed view.
    /// (what, shape, strides of a, strides of b)
    type Case = (&'static str, &'static [usize], &'static [usize], &'static [usize]);
    let cases: [Case; 4] = [
        ("contiguous", &[37, 41], &[41, 1], &[41, 1]),
        ("bias row [R,C]+[1,C]", &[70, 33], &[33, 1], &[0, 1]),
        ("column [R,C]*[R,1]", &[9, 300], &[300, 1], &[1, 0]),
        ("transposed a, 3-d", &[4, 6, 5], &[1, 4, 24], &[30, 5, 1]),
    ];
    for (desc, shape, sa, sb) in cases {
        let p = kernels::memops::plan_broadcast(shape, sa, sb).unwrap();
        let (a, mut b) = (rand(&mut rng, p.a_extent, -2.0, 2.0), rand(&mut rng, p.b_extent, -2.0, 2.0));
        b.iter_mut().for_each(|v| *v += 3.0f32.copysign(*v)); // |b| >= 3: no division blow-up
        emu.put("a", &a);
        emu.put("b", &b);
        let ((gx, gy), (tx, ty)) = kernels::memops::binary_launch(&p, SMS);
        for op in kernels::memops::BinaryOp::ALL {
            let k = format!("binary_{}", op.name());
            let args: Vec<String> = if p.contiguous {
                s(&[&k, &"contig", &p.n, &gx, &tx])
            } else {
                let mut v = s(&[&k, &"bcast", &p.a_extent, &p.b_extent, &(p.n / p.dims[3]), &p.dims[1], &p.dims[2], &p.dims[3]]);
                v.extend(p.sa.iter().chain(&p.sb).map(|x| x.to_string()));
                v.extend([gx, gy, tx, ty].map(|x| x.to_string()));
                v
            };
            run(&args);
            let name = format!("binary_{}_f32{}", op.name(), if p.contiguous { "_contig" } else { "" });
            checks.push(Check::new(&name, format!("{desc} {shape:?}"), "f32", compare(&emu.get("out"), &refs::binary(op, &a, &b, &p)), TOL_F32));
        }
    }
    // One f32 operand with one bf16 (autocast's residual add), either order: 4096 elements (the
    // vector path) and 1001 (a scalar tail); exact against the f32 op of the widened bf16.
    for n in [4096usize, 1001] {
        let p = kernels::memops::plan_broadcast(&[n], &[1], &[1]).unwrap();
        let a = rand(&mut rng, n, -2.0, 2.0);
        let b16 = to_bf16_bits(&rand(&mut rng, n, -2.0, 2.0).iter().map(|v| v + 3.0f32.copysign(*v)).collect::<Vec<f32>>());
        let b = from_bf16_bits(&b16);
        emu.put("a", &a);
        emu.put_u16("b", &b16);
        let ((gx, _), (tx, _)) = kernels::memops::binary_launch(&p, SMS);
        for op in kernels::memops::BinaryOp::ALL {
            for first in [false, true] {
                run(&s(&[&"binary_f32_bf16_contig", &op.code(), &n, &gx, &tx, &(first as i32)]));
                let f = |x: f32, y: f32| match op.name() {
                    "add" => x + y,
                    "sub" => x - y,
                    "mul" => x * y,
                    "div" => x / y,
                    "min" => x.min(y),
                    _ => x.max(y),
                };
                let want: Vec<f32> = a.iter().zip(&b).map(|(&x, &y)| if first { f(y, x) } else { f(x, y) }).collect();
                let bad = emu.get("out").iter().zip(&want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
                checks.push(exact("binary_f32_bf16_contig", format!("{} n={n}{}", op.name(), if first { " (bf16 first)" } else { "" }), bad, n));
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    report(&checks, seed, 154);
}
