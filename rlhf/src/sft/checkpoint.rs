//! SFT checkpoints, laid out as pretraining's (models::pretrain): `trainer-<step>/` holds the
//! weights (HF layout) and AdamW's moments; `trainer.json`, replaced atomically, points at the
//! newest complete one, so a crash at any moment leaves a valid checkpoint to resume from.

use super::SftConfig;
use anyhow::{bail, Context, Result};
use engine::optim::{AdamW, AdamWConfig, ParamState};
use engine::{DType, Tensor};
use models::{hf, Gpt2};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

const MOMENTS: &str = "optimizer.safetensors";
const POINTER: &str = "trainer.json";

#[derive(Serialize, Deserialize)]
pub(crate) struct TrainerState {
    pub step: u64,
    pub dir: String,
    pub config: SftConfig,
    /// What the run trained on, so a resume on other data fails instead of mixing two runs.
    pub data: DataFingerprint,
    /// AdamW's per-parameter step counts, by parameter name.
    pub param_steps: BTreeMap<String, u64>,
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
    let (step, states) = opt.state();
    let name = format!("trainer-{step}");
    let dir = out.join(&name);
    hf::save(model, &dir, DType::F32)?;
    let mut moments = Vec::with_capacity(2 * states.len());
    let mut param_steps = BTreeMap::new();
    for (p, st) in opt.params().into_iter().zip(&states) {
        let pname = param_name(model, p)?;
        moments.push((format!("m.{pname}"), Tensor::new(st.m.clone(), p.shape())?));
        moments.push((format!("v.{pname}"), Tensor::new(st.v.clone(), p.shape())?));
        param_steps.insert(pname.to_string(), st.step);
    }
    engine::safetensors::save(dir.join(MOMENTS), &moments, None, None)?;
    let state = TrainerState { step, dir: name.clone(), config: cfg.clone(), data, param_steps };
    engine::safetensors::write_atomic(&out.join(POINTER), serde_json::to_string_pretty(&state)?.as_bytes())?;
    // The HF export at the top of `out`: what generate / eval / the reward model and PPO load.
    hf::save(model, out, DType::F32)?;
    for entry in std::fs::read_dir(out)?.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with("trainer-") && n != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// The model, its optimizer (moments and step restored) and the run's state.
pub(crate) fn load(out: &Path) -> Result<(Gpt2, AdamW, TrainerState)> {
    let pointer = out.join(POINTER);
    let text = std::fs::read_to_string(&pointer).with_context(|| format!("--resume: {} not found: no checkpoint to resume", pointer.display()))?;
    let state: TrainerState = serde_json::from_str(&text).with_context(|| format!("{}: corrupt", pointer.display()))?;
    let dir = out.join(&state.dir);
    let model = hf::load(&dir)?;
    let moments = engine::safetensors::Reader::open(dir.join(MOMENTS))?;
    let mut opt = adamw(&model, &state.config)?;
    let mut states = Vec::new();
    for p in opt.params() {
        let name = param_name(&model, p)?;
        let Some(&step) = state.param_steps.get(name) else { bail!("{}: no optimizer step for {name}", pointer.display()) };
        let m = moments.get_as(&format!("m.{name}"), p.shape(), DType::F32)?.to_vec_f32()?;
        let v = moments.get_as(&format!("v.{name}"), p.shape(), DType::F32)?.to_vec_f32()?;
        states.push(ParamState { step, m, v });
    }
    opt.load_state(state.step, states)?;
    Ok((model, opt, state))
}

fn param_name<'a>(model: &'a Gpt2, p: &Tensor) -> Result<&'a str> {
    model.params().iter().find(|(_, t)| t.id() == p.id()).map(|(n, _)| n.as_str()).context("optimizer parameter not in the model")
}
