//! SFT checkpoints: models::checkpoint's layout (weights + AdamW moments, an atomic pointer), with
//! the run's settings and a fingerprint of its data, so a resume on other data fails instead of
//! mixing two runs.

use super::SftConfig;
use anyhow::Result;
use engine::optim::{AdamW, AdamWConfig};
use models::checkpoint::{self, Resumed};
use models::Gpt2;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Serialize, Deserialize)]
pub(crate) struct SftRun {
    pub config: SftConfig,
    pub data: DataFingerprint,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub(crate) struct DataFingerprint {
    pub examples: usize,
    /// FNV-1a over every example's ids and prompt length.
    pub hash: u64,
}

pub(crate) fn adamw(model: &Gpt2, cfg: &SftConfig) -> Result<AdamW> {
    Ok(AdamW::new(model.param_groups(cfg.weight_decay), AdamWConfig { beta1: 0.9, beta2: cfg.beta2, eps: 1e-8 })?)
}

pub(crate) fn save(model: &Gpt2, opt: &AdamW, cfg: &SftConfig, data: DataFingerprint, out: &Path) -> Result<()> {
    checkpoint::save(model, opt, &SftRun { config: cfg.clone(), data }, out)
}

pub(crate) fn load(out: &Path, device: engine::Device) -> Result<Resumed<SftRun>> {
    checkpoint::load(out, device, |model, run: &SftRun| adamw(model, &run.config))
}
