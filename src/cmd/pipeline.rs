//! `instructgpt pipeline`: the whole of InstructGPT on a laptop CPU (rlhf::pipeline), one progress
//! bar per stage, the results table at the end.

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rlhf::pipeline::{self, PipelineConfig, Progress};
use std::path::PathBuf;

#[derive(Args)]
pub struct PipelineArgs {
    /// Output directory (checkpoints, metrics, results.json, report.html). A stage already
    /// finished there with the same settings is reused.
    #[arg(long, default_value = "runs/pipeline")]
    pub out: PathBuf,
    /// quick (about 10 minutes on 2 cores), paper (adds a larger SFT model to beat; about 30), or
    /// smoke (a minute: checks the plumbing, not the figures).
    #[arg(long, default_value = "quick")]
    pub preset: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or cuda:N (f32 unless --bf16; its stages are not reused by CPU runs, nor the reverse).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Mixed precision on CUDA (as torch.autocast): bf16 matmul and attention operands, f32
    /// accumulation, weights and optimizer state; a bf16 run's stages are its own.
    #[arg(long)]
    pub bf16: bool,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Override a setting of the preset: `--set rm.lr=1e-3 --set ppo.iterations=100` (names as in
    /// the run's pipeline.json).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Stop after a stage (sft, rm or all); finished stages are reused by the next run in --out.
    #[arg(long, default_value = "all")]
    pub until: pipeline::Until,
    /// Print results.json instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One indicatif bar per stage.
struct Bars {
    bar: Option<ProgressBar>,
}

impl Progress for Bars {
    fn begin(&mut self, stage: &str, total: u64, what: &str) {
        eprintln!("== {stage}: {what}");
        let bar = ProgressBar::new(total);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}").expect("a valid template"));
        self.bar = Some(bar);
    }
    fn update(&mut self, done: u64, message: String) {
        if let Some(b) = &self.bar {
            b.set_position(done);
            if !message.is_empty() {
                b.set_message(message);
            }
        }
    }
    fn end(&mut self, summary: String) {
        if let Some(b) = self.bar.take() {
            b.finish();
        }
        if !summary.is_empty() {
            eprintln!("   {summary}");
        }
    }
    fn reused(&mut self, stage: &str) {
        eprintln!("== {stage}: finished earlier with the same settings, reused");
    }
    fn note(&mut self, line: &str) {
        eprintln!("   {line}");
    }
}

pub fn run(args: PipelineArgs) -> Result<()> {
    let mut cfg = PipelineConfig::preset(&args.preset, args.seed)?;
    cfg.device = args.device.clone();
    cfg.bf16 |= args.bf16;
    for a in &args.set {
        cfg.set(a)?;
    }
    let device = super::model_arg::device(&cfg.device)?;
    super::model_arg::check_bf16(cfg.bf16, device)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads.unwrap_or(0)).build()?;
    eprintln!("pipeline: preset {}, seed {}, {} threads, output {}", cfg.preset, cfg.seed, pool.current_num_threads(), args.out.display());
    let Some(results) = pool.install(|| pipeline::run_until(&cfg, &args.out, &mut Bars { bar: None }, args.until))? else {
        eprintln!("pipeline: stopped after {:?}; run again without --until to go on", args.until);
        return Ok(());
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!("{}", pipeline::report::table(&results));
        println!("wrote {}/results.json and {}/report.html", args.out.display(), args.out.display());
    }
    Ok(())
}
