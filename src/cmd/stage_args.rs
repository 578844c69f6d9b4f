//! What the three stage commands (sft, rm, ppo) share: their common flags, flattened into each
//! command's arguments, and reading the stage's TOML file with those flags applied.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct StageArgs {
    /// TOML settings (configs/sft.toml, rm.toml, ppo.toml); without it, the built-in defaults.
    /// The flags override single settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output directory: the stage's model, checkpoints, metrics.jsonl.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Peak learning rate (ppo: the policy's).
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Mixed precision on CUDA (as torch.autocast): matmuls and attention take bf16 operands and
    /// accumulate in f32; weights, optimizer state and checkpoints stay f32.
    #[arg(long)]
    pub bf16: bool,
    /// Skip bad data lines (counted and printed) instead of failing on the first.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Continue from the newest checkpoint in the output directory (with the run's saved settings).
    #[arg(long)]
    pub resume: bool,
}

/// The top-level settings every stage's TOML file has.
pub struct Common<'a> {
    pub out: &'a mut Option<PathBuf>,
    pub device: &'a mut String,
    pub skip_invalid: &'a mut bool,
    /// CPU threads; 0 = all cores.
    pub threads: usize,
}

/// A stage's TOML file.
pub trait StageFile: DeserializeOwned + Default {
    /// The stage in messages ("SFT", "RM", "PPO").
    const STAGE: &'static str;
    fn common(&mut self) -> Common<'_>;
    /// The stage's learning rate and seed, which --lr and --seed override.
    fn lr_seed(&mut self) -> (&mut f32, &mut u64);
}

/// A stage's settings after the common flags: its file, where it writes, and how it runs.
pub struct Stage<F> {
    pub file: F,
    pub out: PathBuf,
    pub resume: bool,
    pub threads: usize,
    /// Where the models train (`device` in the file, or --device).
    pub device: engine::Device,
    /// --bf16: the stage runs under `engine::autocast_bf16`.
    pub bf16: bool,
}

impl<F> Stage<F> {
    /// Run `f` on a pool of the configured threads (under bf16 autocast with --bf16: the guard
    /// is per thread, so it is taken on the thread that runs `f`).
    pub fn install<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let bf16 = self.bf16;
        rayon::ThreadPoolBuilder::new().num_threads(self.threads).build()?.install(move || {
            let _autocast = bf16.then(engine::autocast_bf16);
            f()
        })
    }
}

impl StageArgs {
    /// The TOML file (or the defaults), `stage_flags` (the command's own overrides) and then the
    /// common flags applied; the device checked and the output directory required.
    pub fn load<F: StageFile>(&self, stage_flags: impl FnOnce(&mut F)) -> Result<Stage<F>> {
        let mut file: F = match &self.config {
            Some(p) => read_toml(p, F::STAGE)?,
            None => F::default(),
        };
        stage_flags(&mut file);
        let (lr, seed) = file.lr_seed();
        *lr = self.lr.unwrap_or(*lr);
        *seed = self.seed.unwrap_or(*seed);
        let c = file.common();
        if let Some(o) = &self.out {
            *c.out = Some(o.clone());
        }
        if let Some(d) = &self.device {
            *c.device = d.clone();
        }
        *c.skip_invalid |= self.skip_invalid;
        let device = super::model_arg::device(c.device)?;
        super::model_arg::check_bf16(self.bf16, device)?;
        let Some(out) = c.out.clone() else { bail!("no output directory: give --out or `out` in the config") };
        let threads = c.threads;
        Ok(Stage { file, out, resume: self.resume, threads, device, bf16: self.bf16 })
    }
}

fn read_toml<F: DeserializeOwned>(path: &Path, stage: &str) -> Result<F> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: invalid {stage} config", path.display()))
}
