//! `instructgpt pretrain`: tokenize text files into a token file, then train a GPT-2 on it.

use super::model_arg::{load_or_init, tokenize_files};
use models::Tokenizer;
use anyhow::Result;
use models::pretrain::{pretrain, PretrainConfig};
use models::tokens::TokenFile;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct PretrainArgs {
    /// Text files (UTF-8); documents are joined with <|endoftext|>.
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// A preset (tiny, gpt2), a config.json, or a checkpoint directory (HF layout).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Output directory: checkpoints, metrics.jsonl, the token file.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 6e-4)]
    pub lr: f32,
    /// Warmup steps (default: 10% of the steps).
    #[arg(long)]
    pub warmup: Option<u64>,
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue from the newest checkpoint in --out (with the run's saved settings).
    #[arg(long)]
    pub resume: bool,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Mixed precision on CUDA: bf16 matmul and attention operands, f32 accumulation, weights and
    /// optimizer state.
    #[arg(long)]
    pub bf16: bool,
}

pub fn run(args: PretrainArgs) -> Result<()> {
    let device = super::model_arg::device(&args.device)?;
    super::model_arg::check_bf16(args.bf16, device)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads.unwrap_or(0)).build()?;
    pool.install(|| {
        let _autocast = args.bf16.then(engine::autocast_bf16);
        std::fs::create_dir_all(&args.out)?;
        let model = load_or_init(&args.model, args.seed)?.to_device(device)?;
        let tokens_path = tokenize_files(&args.data, &Tokenizer::for_config(model.config()), &args.out)?;
        let data = TokenFile::open(&tokens_path)?;
        let cfg = PretrainConfig {
            steps: args.steps,
            batch: args.batch,
            seq_len: args.seq_len.min(model.config().n_positions),
            lr: args.lr,
            min_lr: args.lr / 10.0,
            warmup: args.warmup.unwrap_or(args.steps / 10),
            eval_every: args.eval_every,
            checkpoint_every: args.checkpoint_every,
            seed: args.seed,
            ..PretrainConfig::default()
        };
        eprintln!(
            "pretrain: {} parameters, {} tokens in {}, {} steps of {}x{}",
            model.num_params(),
            data.len(),
            tokens_path.display(),
            cfg.steps,
            cfg.batch,
            cfg.seq_len
        );
        let bar = indicatif::ProgressBar::new(cfg.steps);
        bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")?);
        let mut last_val = None;
        pretrain(model, &data, &cfg, &args.out, args.resume, |m| {
            last_val = m.val_loss.or(last_val);
            let val = last_val.map(|v| format!(" | held-out {v:.3}")).unwrap_or_default();
            bar.set_position(m.step);
            bar.set_message(format!("loss {:.3}{val} | {:.0} tok/s | lr {:.1e}", m.loss, m.tokens_per_s, m.lr));
            true
        })?;
        bar.finish();
        eprintln!("pretrain: wrote {}", args.out.display());
        Ok(())
    })
}
