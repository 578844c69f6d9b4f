//! `instructgpt`: the command line over the engine, the kernels, the models and the RLHF stages.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod cmd {
    pub mod bench;
    pub mod eval;
    pub mod generate;
    pub mod info;
    pub mod kernels;
    mod model_arg;
    pub mod pretrain;
    pub mod selftest;
}

#[derive(Parser)]
#[command(name = "instructgpt", version, about = "InstructGPT reproduced in Rust on our own tensor engine and CUDA kernels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pretrain a GPT-2 on text files (token file, AdamW, checkpoints, --resume).
    Pretrain(cmd::pretrain::PretrainArgs),
    /// Continue a prompt with a checkpoint.
    Generate(cmd::generate::GenerateArgs),
    /// Mean next-token loss and perplexity of a text file.
    Eval(cmd::eval::EvalArgs),
    /// Time one op (GFLOP/s or GB/s) on the CPU or a CUDA device.
    Bench(cmd::bench::BenchArgs),
    /// What this build and machine offer: SIMD level, threads, CUDA.
    Info,
    /// Compile or list the CUDA kernels (NVRTC; no GPU needed to compile).
    Kernels(cmd::kernels::KernelsArgs),
    /// Check every CUDA kernel against the CPU reference on a GPU.
    Selftest(cmd::selftest::SelftestArgs),
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        // `{:#}` prints the whole context chain on one line; no backtrace for user errors.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Pretrain(args) => cmd::pretrain::run(args),
        Command::Generate(args) => cmd::generate::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Info => cmd::info::run(),
        Command::Kernels(args) => cmd::kernels::run(args),
        Command::Selftest(args) => cmd::selftest::run(args),
    }
}
