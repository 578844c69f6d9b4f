//! The emulation harness: the compiler and sanitizer, building a driver over the kernels' own
//! source, running it with inputs and outputs as files, and reporting checks.

use kernels::selftest::Check;
use rand::{rngs::StdRng, SeedableRng};
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
        std::fs::write(dir.join(file), kernels::emu::emulation_source(module)).unwrap();
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

pub(crate) struct Emu {
    exe: PathBuf,
    pub(crate) dir: PathBuf,
}

impl Emu {
    pub(crate) fn put(&self, name: &str, v: &[f32]) {
        std::fs::write(self.dir.join(format!("{name}.f32")), v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    }
    pub(crate) fn put_u16(&self, name: &str, v: &[u16]) {
        std::fs::write(self.dir.join(format!("{name}.u16")), v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    }
    pub(crate) fn put_i32(&self, file: &str, v: &[i32]) {
        std::fs::write(self.dir.join(file), v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    }
    pub(crate) fn put_i64(&self, file: &str, v: &[i64]) {
        std::fs::write(self.dir.join(file), v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    }
    pub(crate) fn get(&self, name: &str) -> Vec<f32> {
        let b = std::fs::read(self.dir.join(format!("{name}.f32"))).unwrap();
        b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }
    pub(crate) fn get_i64(&self, file: &str) -> Vec<i64> {
        std::fs::read(self.dir.join(file)).unwrap().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
    }
    pub(crate) fn get_u16(&self, file: &str) -> Vec<u16> {
        std::fs::read(self.dir.join(file)).unwrap().chunks_exact(2).map(|c| u16::from_le_bytes(c.try_into().unwrap())).collect()
    }
    /// Runs one kernel; a deadlock (a divergent barrier) fails after a minute instead of hanging.
    pub(crate) fn run(&self, kernel: &str, rows: usize, cols: usize, blocks: usize) {
        self.run_args(&[kernel.to_string(), rows.to_string(), cols.to_string(), self.dir.display().to_string(), blocks.to_string()]);
    }
    pub(crate) fn run_args(&self, args: &[String]) {
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
pub(crate) fn start(driver: &str, sources: &[&str]) -> Option<(Emu, PathBuf, u64, StdRng)> {
    let cxx = compiler()?;
    let (emu, dir) = setup(&cxx, driver, sources);
    let seed = seed();
    Some((emu, dir, seed, StdRng::seed_from_u64(seed)))
}

pub(crate) fn seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

pub(crate) fn report(checks: &[Check], seed: u64, at_least: usize) {
    for c in checks {
        println!("{:<40} {:<24} max rel {:.2e} {}", c.kernel, c.shape, c.stats.max_rel, if c.pass { "PASS" } else { "FAIL" });
    }
    let failed: Vec<(&String, &String, &Option<String>)> = checks.iter().filter(|c| !c.pass).map(|c| (&c.kernel, &c.shape, &c.error)).collect();
    assert!(failed.is_empty(), "seed {seed}: {} of {} emulated checks failed: {failed:?}", failed.len(), checks.len());
    assert!(checks.len() >= at_least, "only {} checks ran", checks.len());
}

/// A check that passes only on exact agreement; `bad` counts the disagreeing elements.
pub(crate) fn exact(kernel: &str, shape: String, bad: usize, of: usize) -> Check {
    match bad {
        0 => Check::new(kernel, shape, "exact", Default::default(), 0.0),
        _ => Check::failed(kernel, shape, "exact", format!("{bad} of {of} elements differ")),
    }
}
