//! `instructgpt sft`: supervised fine-tuning on demonstrations (InstructGPT's first stage). All
//! settings live in a TOML file (configs/sft.toml); flags override single ones.

use super::model_arg::load_or_init;
use anyhow::{bail, Context, Result};
use models::Tokenizer;
use rlhf::data::{load_demonstrations, LoadOptions};
use rlhf::sft::{train_sft, SftConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct SftArgs {
    /// TOML settings (see configs/sft.toml); without it, the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A preset (tiny, gpt2), a config.json, or a checkpoint directory (HF layout).
    #[arg(long)]
    pub model: Option<String>,
    /// Demonstration files (JSONL, plain or .gz); replace the config's list.
    #[arg(long, num_args = 1..)]
    pub data: Option<Vec<PathBuf>>,
    /// Output directory: the fine-tuned model (HF layout), checkpoints, metrics.jsonl.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub epochs: Option<u64>,
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu (cuda is not wired into training yet).
    #[arg(long)]
    pub device: Option<String>,
    /// Skip bad data lines (counted and printed) instead of failing on the first.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Continue from the newest checkpoint in the output directory (with the run's saved settings).
    #[arg(long)]
    pub resume: bool,
}

/// The TOML file: where things are, and the `[sft]` training settings.
#[derive(Deserialize, Debug)]
#[serde(default, deny_unknown_fields)]
struct SftFile {
    model: String,
    data: Vec<PathBuf>,
    out: Option<PathBuf>,
    device: String,
    skip_invalid: bool,
    threads: usize,
    sft: SftConfig,
}

impl Default for SftFile {
    fn default() -> Self {
        SftFile { model: "tiny".into(), data: Vec::new(), out: None, device: "cpu".into(), skip_invalid: false, threads: 0, sft: SftConfig::default() }
    }
}

fn read_config(path: Option<&Path>) -> Result<SftFile> {
    let Some(path) = path else { return Ok(SftFile::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: invalid SFT config", path.display()))
}

pub fn run(args: SftArgs) -> Result<()> {
    let mut file = read_config(args.config.as_deref())?;
    // Flags override the file.
    if let Some(m) = args.model {
        file.model = m;
    }
    if let Some(d) = args.data {
        file.data = d;
    }
    file.out = args.out.or(file.out);
    file.sft.epochs = args.epochs.unwrap_or(file.sft.epochs);
    file.sft.lr = args.lr.unwrap_or(file.sft.lr);
    file.sft.batch = args.batch.unwrap_or(file.sft.batch);
    file.sft.seed = args.seed.unwrap_or(file.sft.seed);
    file.device = args.device.unwrap_or(file.device);
    file.skip_invalid |= args.skip_invalid;
    match file.device.as_str() {
        "cpu" => {}
        "cuda" => bail!("--device cuda: SFT runs on the CPU for now (the engine's CUDA ops are not wired into training yet)"),
        other => bail!("--device {other:?}: expected cpu or cuda"),
    }
    let Some(out) = file.out.clone() else { bail!("no output directory: give --out or `out` in the config") };
    if file.data.is_empty() {
        bail!("no demonstrations: give --data or `data` in the config");
    }
    file.sft.validate()?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(file.threads).build()?;
    pool.install(|| train(&file, &out, args.resume))
}

fn train(file: &SftFile, out: &Path, resume: bool) -> Result<()> {
    let opts = LoadOptions { skip_invalid: file.skip_invalid };
    let mut demos = Vec::new();
    for path in &file.data {
        let loaded = load_demonstrations(path, opts)?;
        eprintln!("sft: {}: {} demonstrations{}", path.display(), loaded.items.len(), if opts.skip_invalid { format!(", {} bad lines skipped", loaded.skipped) } else { String::new() });
        demos.extend(loaded.items);
    }
    let model = load_or_init(&file.model, file.sft.seed)?;
    let cfg = &file.sft;
    eprintln!("sft: {} parameters, {} demonstrations, {} epochs of batch {}, lr {:.1e}{}", model.num_params(), demos.len(), cfg.epochs, cfg.batch, cfg.lr, if resume { " (resuming)" } else { "" });
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")?);
    let mut last_val = None;
    let tok = Tokenizer::for_config(model.config());
    train_sft(model, &tok, &demos, cfg, out, resume, |m| {
        last_val = m.val_loss.or(last_val);
        let val = last_val.map(|v| format!(" | held-out {v:.3}")).unwrap_or_default();
        bar.set_length(m.total_steps);
        bar.set_position(m.step);
        bar.set_message(format!("epoch {} | loss {:.3}{val} | {:.0} tok/s | lr {:.1e}", m.epoch, m.loss, m.tokens_per_s, m.lr));
        true
    })?;
    bar.finish();
    eprintln!("sft: wrote {}", out.display());
    Ok(())
}
