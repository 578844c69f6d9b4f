//! `instructgpt info`: the facts a benchmark report needs about this build and machine.

use anyhow::Result;

pub fn run() -> Result<()> {
    println!("instructgpt {}", env!("CARGO_PKG_VERSION"));
    println!("cpu: sgemm kernel {}, elementwise SIMD {:?}, {} threads", engine::cpu::gemm::isa_name(), engine::cpu::simd::level(), rayon::current_num_threads());
    match engine::cuda::availability() {
        Ok(dev) => println!("cuda: {dev}"),
        Err(why) => println!("cuda: unavailable ({why})"),
    }
    Ok(())
}
