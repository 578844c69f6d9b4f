//! `instructgpt eval`: mean next-token loss and perplexity of a text file under a checkpoint.
//! The file is tokenized as one sequence (no BOS) and cut into context-length windows; every token
//! but each window's first is predicted.

use super::model_arg::{check_vocab, load_checkpoint};
use anyhow::{bail, Result};
use engine::Tensor;
use models::Tokenizer;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint directory (config.json + model.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// A UTF-8 text file.
    #[arg(long)]
    pub text: PathBuf,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long)]
    pub json: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let model = load_checkpoint(&args.model)?.to_device(super::model_arg::device(&args.device)?)?;
    let text = std::fs::read_to_string(&args.text).map_err(|e| anyhow::anyhow!("{}: {e}", args.text.display()))?;
    let tokens = Tokenizer::for_config(model.config()).encode(&text);
    check_vocab(&model, &tokens)?;
    let ids: Vec<i64> = tokens.into_iter().map(i64::from).collect();
    if ids.len() < 2 {
        bail!("{}: needs at least 2 tokens, has {}", args.text.display(), ids.len());
    }
    let ctx = model.config().n_positions;
    let windows: Vec<&[i64]> = ids.chunks(ctx).filter(|w| w.len() >= 2).collect();
    let _guard = engine::no_grad();
    let (mut total, mut count) = (0f64, 0usize);
    // Equal-length windows go through together; the shorter last one alone.
    for group in windows.chunk_by(|a, b| a.len() == b.len()) {
        for batch in group.chunks(args.batch.max(1)) {
            let (b, t) = (batch.len(), batch[0].len());
            let inputs: Vec<i64> = batch.iter().flat_map(|w| w[..t - 1].iter().copied()).collect();
            let targets: Vec<i64> = batch.iter().flat_map(|w| w[1..].iter().copied()).collect();
            let loss = model.loss(&Tensor::new(inputs, &[b, t - 1])?, &Tensor::new(targets, &[b, t - 1])?)?.to_scalar()?;
            total += loss as f64 * (b * (t - 1)) as f64;
            count += b * (t - 1);
        }
    }
    let loss = total / count as f64;
    if args.json {
        println!("{}", serde_json::json!({ "loss": loss, "perplexity": loss.exp(), "tokens": ids.len(), "predicted": count, "windows": windows.len(), "context": ctx }));
    } else {
        println!("{}: {} tokens, {} windows of up to {ctx}; loss {loss:.4}, perplexity {:.2}", args.text.display(), ids.len(), windows.len(), loss.exp());
    }
    Ok(())
}
