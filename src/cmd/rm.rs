//! `instructgpt rm`: train the reward model on K-wise comparisons (InstructGPT's second stage),
//! then fit its normalization on SFT samples. Settings: configs/rm.toml; flags override.

use super::model_arg::{check_vocab, load_checkpoint};
use anyhow::{bail, Context, Result};
use models::Tokenizer;
use rlhf::data::{load_comparisons, load_demonstrations, LoadOptions};
use rlhf::reward::{self, RewardModel, RmConfig, TokenRanking};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// TOML settings (see configs/rm.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The SFT checkpoint directory (HF layout) the reward model starts from.
    #[arg(long)]
    pub sft: Option<PathBuf>,
    /// Comparison files (JSONL, plain or .gz).
    #[arg(long, num_args = 1..)]
    pub data: Option<Vec<PathBuf>>,
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub skip_invalid: bool,
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

pub fn run(args: RmArgs) -> Result<()> {
    let mut file: RmFile = match &args.config {
        Some(p) => toml::from_str(&std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?).with_context(|| format!("{}: invalid RM config", p.display()))?,
        None => RmFile::default(),
    };
    file.sft = args.sft.or(file.sft);
    if let Some(d) = args.data {
        file.data = d;
    }
    file.out = args.out.or(file.out);
    file.rm.epochs = args.epochs.unwrap_or(file.rm.epochs);
    file.rm.lr = args.lr.unwrap_or(file.rm.lr);
    file.rm.batch = args.batch.unwrap_or(file.rm.batch);
    file.rm.seed = args.seed.unwrap_or(file.rm.seed);
    file.device = args.device.unwrap_or(file.device);
    file.skip_invalid |= args.skip_invalid;
    match file.device.as_str() {
        "cpu" => {}
        "cuda" => bail!("--device cuda: the reward model trains on the CPU for now (the engine's CUDA ops are not wired into training yet)"),
        other => bail!("--device {other:?}: expected cpu or cuda"),
    }
    let Some(out) = file.out.clone() else { bail!("no output directory: give --out or `out` in the config") };
    let Some(sft) = file.sft.clone() else { bail!("no SFT checkpoint: give --sft or `sft` in the config") };
    if file.data.is_empty() {
        bail!("no comparisons: give --data or `data` in the config");
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(file.threads).build()?;
    pool.install(|| train(&file, &sft, &out))
}

fn train(file: &RmFile, sft: &Path, out: &Path) -> Result<()> {
    let opts = LoadOptions { skip_invalid: file.skip_invalid };
    let sft_model = load_checkpoint(sft)?;
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
    std::fs::create_dir_all(out)?;
    let mut metrics = std::fs::File::create(out.join("metrics.jsonl"))?;
    eprintln!("rm: {} parameters, {} training / {} held-out rankings", rm.trunk.num_params() + rm.head_w.numel() + 1, data.len(), val.len());
    reward::train(&rm, &data, &val, &file.rm, Some(&mut metrics), |m| {
        let v = m.val_accuracy.map(|a| format!(" | held-out acc {a:.3} loss {:.3}", m.val_loss.unwrap_or(f64::NAN))).unwrap_or_default();
        eprintln!("step {} epoch {} | loss {:.4} acc {:.3}{v} | lr {:.1e} | {:.0} resp/s", m.step, m.epoch, m.loss, m.accuracy, m.lr, m.responses_per_s);
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
