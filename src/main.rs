//! `instructgpt`: the command line over the engine, the kernels, the models and the RLHF stages.

use anyhow::Result;
use clap::{Parser, Subcommand};

// Large freed blocks are reused instead of returned to the OS (no page faults every step).
#[global_allocator]
static ALLOC: engine::alloc::CachingAlloc = engine::alloc::CachingAlloc;

mod cmd {
    pub mod bench;
    mod bench_model;
    pub mod eval;
    pub mod eval_policy;
    pub mod generate;
    pub mod info;
    pub mod kernels;
    mod model_arg;
    pub mod pipeline;
    pub mod ppo;
    pub mod pretrain;
    pub mod rm;
    pub mod selftest;
    pub mod sft;
    mod stage_args;
}

#[derive(Parser)]
#[command(name = "instructgpt", version, about = "InstructGPT reproduced in Rust on our own tensor engine and CUDA kernels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole InstructGPT pipeline on a laptop CPU: pretrain, SFT, reward model, PPO and PPO-ptx, evaluation.
    Pipeline(cmd::pipeline::PipelineArgs),
    /// Pretrain a GPT-2 on text files (token file, AdamW, checkpoints, --resume).
    Pretrain(cmd::pretrain::PretrainArgs),
    /// Supervised fine-tuning on demonstrations (InstructGPT stage 1).
    Sft(cmd::sft::SftArgs),
    /// Continue a prompt with a checkpoint.
    Generate(cmd::generate::GenerateArgs),
    /// Mean next-token loss and perplexity of a text file.
    Eval(cmd::eval::EvalArgs),
    /// A policy against a baseline: win rate under the reward model, KL to the reference, LM loss.
    EvalPolicy(cmd::eval_policy::EvalPolicyArgs),
    /// Train the reward model on ranked comparisons (K-wise loss), then fit its normalization.
    Rm(cmd::rm::RmArgs),
    /// PPO / PPO-ptx against a reward model.
    Ppo(cmd::ppo::PpoArgs),
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
        Command::Pipeline(args) => cmd::pipeline::run(args),
        Command::Pretrain(args) => cmd::pretrain::run(args),
        Command::Sft(args) => cmd::sft::run(args),
        Command::Generate(args) => cmd::generate::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::EvalPolicy(args) => cmd::eval_policy::run(args),
        Command::Rm(args) => cmd::rm::run(args),
        Command::Ppo(args) => cmd::ppo::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Info => cmd::info::run(),
        Command::Kernels(args) => cmd::kernels::run(args),
        Command::Selftest(args) => cmd::selftest::run(args),
    }
}
