//! `instructgpt sft`: supervised fine-tuning on demonstrations (InstructGPT's first stage). All
//! settings live in a TOML file (configs/sft.toml); flags override single ones.

use super::model_arg::load_or_init;
use super::stage_args::{Common, StageArgs, StageFile};
use anyhow::{bail, Result};
use models::Tokenizer;
use rlhf::data::{load_demonstrations, LoadOptions};
use rlhf::sft::{train_sft, SftConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct SftArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// A preset (tiny, gpt2), a config.json, or a checkpoint directory (HF layout).
    #[arg(long)]
    pub model: Option<String>,
    /// Demonstration files (JSONL, plain or .gz); replace the config's list.
    #[arg(long, num_args = 1..)]
    pub data: Option<Vec<PathBuf>>,
    #[arg(long)]
    pub epochs: Option<u64>,
    #[arg(long)]
    pub batch: Option<usize>,
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

impl StageFile for SftFile {
    const STAGE: &'static str = "SFT";
    fn common(&mut self) -> Common<'_> {
        Common { out: &mut self.out, device: &mut self.device, skip_invalid: &mut self.skip_invalid, threads: self.threads }
    }
    fn lr_seed(&mut self) -> (&mut f32, &mut u64) {
        (&mut self.sft.lr, &mut self.sft.seed)
    }
}

pub fn run(args: SftArgs) -> Result<()> {
    let stage = args.stage.load(|f: &mut SftFile| {
        if let Some(m) = args.model {
            f.model = m;
        }
        if let Some(d) = args.data {
            f.data = d;
        }
        f.sft.epochs = args.epochs.unwrap_or(f.sft.epochs);
        f.sft.batch = args.batch.unwrap_or(f.sft.batch);
    })?;
    if stage.file.data.is_empty() {
        bail!("no demonstrations: give --data or `data` in the config");
    }
    stage.file.sft.validate()?;
    stage.install(|| train(&stage.file, &stage.out, stage.resume, stage.device))
}

fn train(file: &SftFile, out: &Path, resume: bool, device: engine::Device) -> Result<()> {
    let opts = LoadOptions { skip_invalid: file.skip_invalid };
    let mut demos = Vec::new();
    for path in &file.data {
        let loaded = load_demonstrations(path, opts)?;
        eprintln!("sft: {}: {} demonstrations{}", path.display(), loaded.items.len(), if opts.skip_invalid { format!(", {} bad lines skipped", loaded.skipped) } else { String::new() });
        demos.extend(loaded.items);
    }
    let model = load_or_init(&file.model, file.sft.seed)?.to_device(device)?;
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
