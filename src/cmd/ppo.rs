//! `instructgpt ppo`: PPO / PPO-ptx against a reward model (InstructGPT's third stage). Settings:
//! configs/ppo.toml; flags override. Resumable checkpoints every `resume_every` iterations;
//! `--resume` continues exactly.

use super::model_arg::{check_vocab, load_checkpoint, tokenize_files};
use super::stage_args::{Common, StageArgs, StageFile};
use anyhow::{bail, Result};
use models::tokens::TokenFile;
use models::Tokenizer;
use rlhf::data::{load_prompts, LoadOptions};
use rlhf::ppo::trainer::{PpoConfig, PpoTrainer};
use rlhf::reward::RewardModel;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct PpoArgs {
    #[command(flatten)]
    pub stage: StageArgs,
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
    pub iterations: Option<u64>,
    /// The value model's peak learning rate (default: --lr's).
    #[arg(long)]
    pub value_lr: Option<f32>,
    #[arg(long)]
    pub init_kl_coef: Option<f64>,
    #[arg(long)]
    pub temperature: Option<f32>,
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
    /// Iterations between snapshots of the policy and value model under out/iter-N (0: only the
    /// final one, in out).
    checkpoint_every: u64,
    /// Iterations between resumable checkpoints (out/trainer.json + trainer-<step>/, only the
    /// newest kept; 0: only after the last iteration).
    resume_every: u64,
    ppo: PpoConfig,
}

impl Default for PpoFile {
    fn default() -> Self {
        PpoFile { sft: None, rm: None, prompts: Vec::new(), ptx_data: Vec::new(), out: None, device: "cpu".into(), skip_invalid: false, threads: 0, checkpoint_every: 0, resume_every: 10, ppo: PpoConfig::default() }
    }
}

impl StageFile for PpoFile {
    const STAGE: &'static str = "PPO";
    fn common(&mut self) -> Common<'_> {
        Common { out: &mut self.out, device: &mut self.device, skip_invalid: &mut self.skip_invalid, threads: self.threads }
    }
    fn lr_seed(&mut self) -> (&mut f32, &mut u64) {
        (&mut self.ppo.lr, &mut self.ppo.seed)
    }
}

pub fn run(args: PpoArgs) -> Result<()> {
    let mut stage = args.stage.load(|f: &mut PpoFile| {
        f.sft = args.sft.or(f.sft.take());
        f.rm = args.rm.or(f.rm.take());
        if let Some(p) = args.prompts {
            f.prompts = p;
        }
        if let Some(p) = args.ptx_data {
            f.ptx_data = p;
        }
        let c = &mut f.ppo;
        c.ptx_coef = args.ptx_coef.unwrap_or(c.ptx_coef);
        c.iterations = args.iterations.unwrap_or(c.iterations);
        c.value_lr = args.value_lr.or(c.value_lr);
        c.init_kl_coef = args.init_kl_coef.unwrap_or(c.init_kl_coef);
        c.temperature = args.temperature.unwrap_or(c.temperature);
    })?;
    if stage.resume {
        // The run continues with its own settings (as `sft --resume`).
        stage.file.ppo = PpoTrainer::saved_config(&stage.out)?;
    }
    let file = &stage.file;
    let (Some(sft), Some(rm)) = (file.sft.clone(), file.rm.clone()) else { bail!("give the SFT and reward-model checkpoints: --sft and --rm (or `sft`, `rm` in the config)") };
    if file.prompts.is_empty() {
        bail!("no prompts: give --prompts or `prompts` in the config");
    }
    if file.ppo.ptx_coef > 0.0 && file.ptx_data.is_empty() {
        bail!("ptx_coef {} needs pretraining text: --ptx-data or `ptx_data` in the config", file.ppo.ptx_coef);
    }
    stage.install(|| train(&stage.file, &sft, &rm, &stage.out, stage.resume, stage.device))
}

fn train(file: &PpoFile, sft: &Path, rm: &Path, out: &Path, resume: bool, device: engine::Device) -> Result<()> {
    let policy = load_checkpoint(sft)?.to_device(device)?;
    let tok = Tokenizer::for_config(policy.config());
    let reward = RewardModel::load(rm)?.to_device(device)?;
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
    let mut trainer = if resume { PpoTrainer::resume(&policy, &reward, out)? } else { PpoTrainer::new(&policy, &reward, file.ppo.clone())? };
    eprintln!(
        "ppo: {} prompts, {} iterations of {} rollouts, ptx_coef {}{}",
        prompts.len(),
        file.ppo.iterations,
        file.ppo.rollout_batch,
        file.ppo.ptx_coef,
        if resume { format!(" (resuming after iteration {})", trainer.iterations_done()) } else { String::new() }
    );
    let every = file.checkpoint_every;
    trainer.train_checkpointed(&prompts, ptx.as_ref(), out, file.resume_every, |t, m| {
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
