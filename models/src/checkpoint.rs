//! Resumable training checkpoints, shared by every stage that trains a GPT-2 (pretraining, SFT):
//! `trainer-<step>/` holds the weights (HF layout) and AdamW's moments; `trainer.json`, replaced
//! atomically, points at the newest complete one together with the run's settings `R`. A crash at
//! any moment leaves the previous checkpoint intact and pointed to. The top of `out` also gets an
//! HF export of the latest weights (what generate, eval and the next stage load).

use crate::{hf, Gpt2};
use anyhow::{bail, Context, Result};
use engine::optim::{AdamW, ParamState};
use engine::{DType, Tensor};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

const MOMENTS: &str = "optimizer.safetensors";
const POINTER: &str = "trainer.json";

#[derive(Serialize, Deserialize)]
struct Pointer<R> {
    step: u64,
    dir: String,
    /// The run's settings (and whatever else a stage needs to resume exactly).
    run: R,
    /// AdamW's per-parameter step counts, by parameter name.
    param_steps: BTreeMap<String, u64>,
}

/// What `load` restores.
pub struct Resumed<R> {
    pub model: Gpt2,
    pub opt: AdamW,
    pub run: R,
    /// Optimizer steps taken.
    pub step: u64,
}

pub fn save<R: Serialize>(model: &Gpt2, opt: &AdamW, run: &R, out: &Path) -> Result<()> {
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
    let pointer = Pointer { step, dir: name.clone(), run, param_steps };
    engine::safetensors::write_atomic(&out.join(POINTER), serde_json::to_string_pretty(&pointer)?.as_bytes())?;
    hf::save(model, out, DType::F32)?;
    for entry in std::fs::read_dir(out)?.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with("trainer-") && n != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// The newest checkpoint under `out`; `adamw` builds the optimizer for the loaded model from the
/// run's settings (its moments and step counts are then restored).
pub fn load<R: DeserializeOwned>(out: &Path, adamw: impl FnOnce(&Gpt2, &R) -> Result<AdamW>) -> Result<Resumed<R>> {
    let pointer = out.join(POINTER);
    let text = std::fs::read_to_string(&pointer).with_context(|| format!("--resume: {} not found: no checkpoint to resume", pointer.display()))?;
    let state: Pointer<R> = serde_json::from_str(&text).with_context(|| format!("{}: corrupt", pointer.display()))?;
    let dir = out.join(&state.dir);
    let model = hf::load(&dir)?;
    let moments = engine::safetensors::Reader::open(dir.join(MOMENTS))?;
    let mut opt = adamw(&model, &state.run)?;
    let mut states = Vec::new();
    for p in opt.params() {
        let name = param_name(&model, p)?;
        let Some(&step) = state.param_steps.get(name) else { bail!("{}: no optimizer step for {name}", pointer.display()) };
        let m = moments.get_as(&format!("m.{name}"), p.shape(), DType::F32)?.to_vec_f32()?;
        let v = moments.get_as(&format!("v.{name}"), p.shape(), DType::F32)?.to_vec_f32()?;
        states.push(ParamState { step, m, v });
    }
    opt.load_state(state.step, states)?;
    Ok(Resumed { model, opt, run: state.run, step: state.step })
}

fn param_name<'a>(model: &'a Gpt2, p: &Tensor) -> Result<&'a str> {
    model.params().iter().find(|(_, t)| t.id() == p.id()).map(|(n, _)| n.as_str()).context("optimizer parameter not in the model")
}

/// Drop metric lines past the resumed step (written after the last checkpoint, then lost).
pub fn keep_metrics_up_to(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s <= step))
        .map(|l| format!("{l}\n"))
        .collect();
    engine::safetensors::write_atomic(path, kept.as_bytes())?;
    Ok(())
}
