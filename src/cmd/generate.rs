//! `instructgpt generate`: continue a prompt with a checkpoint (greedy when temperature is 0).

use super::model_arg::{check_vocab, load_checkpoint};
use anyhow::{bail, Result};
use models::{generate, GenerateConfig, Tokenizer};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Checkpoint directory (config.json + model.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let device = super::model_arg::device(&args.device)?;
    if args.temperature < 0.0 || !(0.0..=1.0).contains(&args.top_p) || args.top_p == 0.0 {
        bail!("--temperature must be >= 0 and --top-p in (0, 1]");
    }
    let model = load_checkpoint(&args.model)?.to_device(device)?;
    let tok = Tokenizer::for_config(model.config());
    let prompt = tok.encode(&args.prompt);
    if prompt.is_empty() {
        bail!("--prompt is empty");
    }
    check_vocab(&model, &prompt)?;
    let room = model.config().n_positions.saturating_sub(prompt.len());
    let cfg = GenerateConfig {
        max_new_tokens: args.max_new_tokens.min(room),
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        eos_token_id: Some(tok.eot()),
        pad_token_id: tok.eot(),
        ..GenerateConfig::default()
    };
    let out = generate(&model, &[prompt], &cfg)?;
    let row = &out.tokens[0][..out.lengths[0]];
    let ended = row.last() == Some(&tok.eot());
    let text = tok.decode_lossy(if ended { &row[..row.len() - 1] } else { row })?;
    println!("{text}");
    Ok(())
}
