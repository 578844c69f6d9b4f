//! `instructgpt ppo`: PPO / PPO-ptx against a reward model (InstructGPT's third stage). Settings:
//! configs/ppo.toml; flags override.

use super::model_arg::{check_vocab, load_checkpoint, tokenize_files};
use anyhow::{bail, Context, Result};
use models::tokens::TokenFile;
use models::Tokenizer;
use rlhf::data::{load_prompts, LoadOptions};
use rlhf::ppo::trainer::{PpoConfig, PpoTrainer};
use rlhf::reward::RewardModel;
use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct PpoArgs {
    /// TOML settings (see configs/ppo.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// SFT checkpoint (HF layout): the policy's start and the frozen reference.
    #[arg(long)]
    pub sft: Option<PathBuf>,
    /// Reward-model checkpoint (`instructgpt rm --out`): the scorer and the value model's start.
    #[arg(long)]
    pub rm: Option<PathBuf>,
    /// Prompt files (JSONL {"prompt"}, plain or .gz).
    #[arg(long, num_args = 1..)]
    pub prompts: Option<Vec<PathBuf>>,
    /// Pretraining text files for PPO-ptx.
    #[arg(long, num_args = 1..)]
    pub ptx_data: Option<Vec<PathBuf>>,
    /// PPO-ptx's gamma (0 = plain PPO).
    #[arg(long)]
    pub ptx_coef: Option<f32>,
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub iterations: Option<u64>,
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long)]
    pub init_kl_coef: Option<f64>,
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub skip_invalid: bool,
}

#[derive(Deserialize, Debug)]
#[serde(default, deny_unknown_fields)]
struct PpoFile {
    sft: Option<PathBuf>,
    rm: Option<PathBuf>,
    prompts: Vec<PathBuf>,
    ptx_data: Vec<PathBuf>,
    out: Option<PathBuf>,
    device: String,
    skip_invalid: bool,
    threads: usize,
    /// Iterations between checkpoints under out/iter-N (0: only the final one, in out).
    checkpoint_every: u64,
    ppo: PpoConfig,
}

impl Default for PpoFile {
    fn default() -> Self {
        PpoFile { sft: None, rm: None, prompts: Vec::new(), ptx_data: Vec::new(), out: None, device: "cpu".into(), skip_invalid: false, threads: 0, checkpoint_every: 0, ppo: PpoConfig::default() }
    }
}

pub fn run(args: PpoArgs) -> Result<()> {
    let mut file: PpoFile = match &args.config {
        Some(p) => toml::from_str(&std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?).with_context(|| format!("{}: invalid PPO config", p.display()))?,
        None => PpoFile::default(),
    };
    file.sft = args.sft.or(file.sft);
    file.rm = args.rm.or(file.rm);
    if let Some(p) = args.prompts {
        file.prompts = p;
    }
    if let Some(p) = args.ptx_data {
        file.ptx_data = p;
    }
    file.out = args.out.or(file.out);
    let c = &mut file.ppo;
    c.ptx_coef = args.ptx_coef.unwrap_or(c.ptx_coef);
    c.iterations = args.iterations.unwrap_or(c.iterations);
    c.lr = args.lr.unwrap_or(c.lr);
    c.init_kl_coef = args.init_kl_coef.unwrap_or(c.init_kl_coef);
    c.temperature = args.temperature.unwrap_or(c.temperature);
    c.seed = args.seed.unwrap_or(c.seed);
    file.device = args.device.unwrap_or(file.device);
    file.skip_invalid |= args.skip_invalid;
    match file.device.as_str() {
        "cpu" => {}
        "cuda" => bail!("--device cuda: PPO runs on the CPU for now (the engine's CUDA ops are not wired into training yet)"),
        other => bail!("--device {other:?}: expected cpu or cuda"),
    }
    let Some(out) = file.out.clone() else { bail!("no output directory: give --out or `out` in the config") };
    let (Some(sft), Some(rm)) = (file.sft.clone(), file.rm.clone()) else { bail!("give the SFT and reward-model checkpoints: --sft and --rm (or `sft`, `rm` in the config)") };
    if file.prompts.is_empty() {
        bail!("no prompts: give --prompts or `prompts` in the config");
    }
    if file.ppo.ptx_coef > 0.0 && file.ptx_data.is_empty() {
        bail!("ptx_coef {} needs pretraining text: --ptx-data or `ptx_data` in the config", file.ppo.ptx_coef);
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(file.threads).build()?;
    pool.install(|| train(&file, &sft, &rm, &out))
}

fn train(file: &PpoFile, sft: &Path, rm: &Path, out: &Path) -> Result<()> {
    let policy = load_checkpoint(sft)?;
    let tok = Tokenizer::for_config(policy.config());
    let reward = RewardModel::load(rm)?;
    let mut prompts = Vec::new();
    for path in &file.prompts {
        let loaded = load_prompts(path, LoadOptions { skip_invalid: file.skip_invalid })?;
        // Prompts that leave no room for max_new_tokens in the model's window cannot be rolled out:
        // they are left out, and counted.
        let mut too_long = 0;
        for p in &loaded.items {
            let ids = tok.encode(&p.prompt);
            check_vocab(&policy, &ids)?;
            if ids.is_empty() || ids.len() + file.ppo.max_new_tokens > policy.config().n_positions {
                too_long += 1;
                continue;
            }
            prompts.push(ids);
        }
        eprintln!(
            "ppo: {}: {} prompts, {} bad lines skipped, {too_long} left out as empty or longer than {} - {} tokens",
            path.display(),
            loaded.items.len(),
            loaded.skipped,
            policy.config().n_positions,
            file.ppo.max_new_tokens
        );
    }
    if prompts.is_empty() {
        bail!("ppo: no usable prompt (non-empty and short enough for max_new_tokens in the model's window)");
    }
    std::fs::create_dir_all(out)?;
    let ptx = if file.ppo.ptx_coef > 0.0 { Some(TokenFile::open(&tokenize_files(&file.ptx_data, &tok, out)?)?) } else { None };
    let mut trainer = PpoTrainer::new(&policy, &reward, file.ppo.clone())?;
    let mut metrics = std::fs::File::create(out.join("metrics.jsonl"))?;
    eprintln!("ppo: {} prompts, {} iterations of {} rollouts, ptx_coef {}", prompts.len(), file.ppo.iterations, file.ppo.rollout_batch, file.ppo.ptx_coef);
    let every = file.checkpoint_every;
    trainer.train(&prompts, ptx.as_ref(), |t, m| {
        writeln!(metrics, "{}", serde_json::to_string(m)?)?;
        eprintln!("{}", m.line());
        if every > 0 && m.iteration % every == 0 {
            t.save(out.join(format!("iter-{}", m.iteration)))?;
        }
        Ok(true)
    })?;
    trainer.save(out)?;
    eprintln!("ppo: wrote {}/policy and {}/value", out.display(), out.display());
    Ok(())
}
