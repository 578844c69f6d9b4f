//! `instructgpt rm`: train the reward model on K-wise comparisons (InstructGPT's second stage),
//! then fit its normalization on SFT samples. Settings: configs/rm.toml; flags override.
//! Resumable checkpoints in the output directory; `--resume` continues exactly.

use super::model_arg::{check_vocab, load_checkpoint};
use super::stage_args::{Common, StageArgs, StageFile};
use anyhow::{bail, Result};
use models::Tokenizer;
use rlhf::data::{load_comparisons, load_demonstrations, LoadOptions};
use rlhf::reward::{self, RewardModel, RmConfig, TokenRanking};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// The SFT checkpoint directory (HF layout) the reward model starts from.
    #[arg(long)]
    pub sft: Option<PathBuf>,
    /// Comparison files (JSONL, plain or .gz).
    #[arg(long, num_args = 1..)]
    pub data: Option<Vec<PathBuf>>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch: Option<usize>,
}

#[derive(Deserialize, Debug)]
#[serde(default, deny_unknown_fields)]
struct RmFile {
    sft: Option<PathBuf>,
    data: Vec<PathBuf>,
    out: Option<PathBuf>,
    device: String,
    skip_invalid: bool,
    threads: usize,
    /// Fraction of rankings held out for accuracy.
    val_fraction: f32,
    /// Demonstration-format files ({"prompt","response"}) of SFT outputs for the normalization;
    /// empty: the best-ranked response of each training comparison stands in.
    normalization_samples: Vec<PathBuf>,
    /// Also scale to std 1.
    normalize_gain: bool,
    rm: RmConfig,
}

impl Default for RmFile {
    fn default() -> Self {
        RmFile { sft: None, data: Vec::new(), out: None, device: "cpu".into(), skip_invalid: false, threads: 0, val_fraction: 0.05, normalization_samples: Vec::new(), normalize_gain: false, rm: RmConfig::default() }
    }
}

impl StageFile for RmFile {
    const STAGE: &'static str = "RM";
    fn common(&mut self) -> Common<'_> {
        Common { out: &mut self.out, device: &mut self.device, skip_invalid: &mut self.skip_invalid, threads: self.threads }
    }
    fn lr_seed(&mut self) -> (&mut f32, &mut u64) {
        (&mut self.rm.lr, &mut self.rm.seed)
    }
}

pub fn run(args: RmArgs) -> Result<()> {
    let mut stage = args.stage.load(|f: &mut RmFile| {
        f.sft = args.sft.or(f.sft.take());
        if let Some(d) = args.data {
            f.data = d;
        }
        f.rm.epochs = args.epochs.unwrap_or(f.rm.epochs);
        f.rm.batch = args.batch.unwrap_or(f.rm.batch);
    })?;
    let Some(sft) = stage.file.sft.clone() else { bail!("no SFT checkpoint: give --sft or `sft` in the config") };
    if stage.file.data.is_empty() {
        bail!("no comparisons: give --data or `data` in the config");
    }
    if stage.resume {
        // The run continues with its own settings (as `sft --resume`).
        stage.file.rm = reward::resumed_config(&stage.out)?;
    }
    stage.install(|| train(&stage.file, &sft, &stage.out, stage.resume, stage.device))
}

fn train(file: &RmFile, sft: &Path, out: &Path, resume: bool, device: engine::Device) -> Result<()> {
    let opts = LoadOptions { skip_invalid: file.skip_invalid };
    let sft_model = load_checkpoint(sft)?.to_device(device)?;
    let tok = Tokenizer::for_config(sft_model.config());
    let mut data = Vec::new();
    for path in &file.data {
        let loaded = load_comparisons(path, opts)?;
        eprintln!("rm: {}: {} comparisons, {} bad lines skipped", path.display(), loaded.items.len(), loaded.skipped);
        data.extend(loaded.items.iter().map(|c| TokenRanking::from_comparison(&tok, c)));
    }
    for r in &data {
        check_vocab(&sft_model, &r.prompt)?;
        r.responses.iter().try_for_each(|x| check_vocab(&sft_model, x))?;
    }
    let n_val = ((data.len() as f32 * file.val_fraction) as usize).min(data.len().saturating_sub(1));
    let val = data.split_off(data.len() - n_val);
    let mut rm = RewardModel::from_sft(&sft_model, file.rm.seed)?;
    eprintln!("rm: {} parameters, {} training / {} held-out rankings{}", rm.trunk.num_params() + rm.head_w.numel() + 1, data.len(), val.len(), if resume { " (resuming)" } else { "" });
    reward::train_checkpointed(&rm, &data, &val, &file.rm, out, resume, |m| {
        let v = m.val_accuracy.map(|a| format!(" | held-out acc {a:.3} loss {:.3}", m.val_loss.unwrap_or(f64::NAN))).unwrap_or_default();
        eprintln!("step {} epoch {} | loss {:.4} acc {:.3}{v} | lr {:.1e} | {:.0} resp/s", m.step, m.epoch, m.loss, m.accuracy, m.lr, m.responses_per_s);
        true
    })?;
    let samples: Vec<Vec<u32>> = if file.normalization_samples.is_empty() {
        data.iter().map(|r| [r.prompt.as_slice(), r.responses[r.ranking[0]].as_slice()].concat()).collect()
    } else {
        let mut s = Vec::new();
        for p in &file.normalization_samples {
            for d in load_demonstrations(p, opts)?.items {
                s.push(tok.encode(&d.prompt).into_iter().chain(tok.encode(&d.response)).chain([tok.eot()]).collect());
            }
        }
        s
    };
    let norm = rm.fit_normalization(&samples, file.normalize_gain, file.rm.batch.max(1) * 2)?;
    eprintln!("rm: normalization bias {:.4} gain {:.4} on {} samples", norm.bias, norm.gain, samples.len());
    rm.save(out)?;
    eprintln!("rm: wrote {}", out.display());
    Ok(())
}
