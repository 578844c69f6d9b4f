//! Resumable training checkpoints, shared by every stage (pretraining, SFT, reward model, PPO):
//! `trainer-<step>/` holds the weights (HF layout) and AdamW's moments; `trainer.json`, replaced
//! atomically, points at the newest complete one together with the run's settings `R`. A crash at
//! any moment leaves the previous checkpoint intact and pointed to. `save`/`load` checkpoint one
//! GPT-2 and also export its latest weights at the top of `out` (what generate, eval and the next
//! stage load); `save_named`/`load_named` checkpoint any set of named parameters (a reward model's
//! trunk and head, PPO's policy and value model) in one `weights.safetensors`.

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
const WEIGHTS: &str = "weights.safetensors";

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
    let name_of = |p: &Tensor| param_name(model, p).map(str::to_string);
    write(opt, run, out, name_of, |dir| hf::save(model, dir, DType::F32).map_err(Into::into))?;
    hf::save(model, out, DType::F32)?;
    Ok(())
}

/// The newest checkpoint under `out`, its model on `device`; `adamw` builds the optimizer for the
/// loaded model from the run's settings (its moments and step counts are then restored).
pub fn load<R: DeserializeOwned>(out: &Path, device: engine::Device, adamw: impl FnOnce(&Gpt2, &R) -> Result<AdamW>) -> Result<Resumed<R>> {
    let (state, dir) = read_pointer::<R>(out)?;
    let model = hf::load(&dir)?.to_device(device)?;
    let mut opt = adamw(&model, &state.run)?;
    restore_moments(&state, &dir, &mut opt, |p| param_name(&model, p).map(str::to_string))?;
    Ok(Resumed { model, opt, run: state.run, step: state.step })
}

/// `save` for any set of uniquely named parameters (several models, extra heads): the weights go
/// to `trainer-<step>/weights.safetensors` under those names, beside the moments. Every optimizer
/// parameter must be in `named`. Nothing is exported at the top of `out`.
pub fn save_named<R: Serialize>(named: &[(String, Tensor)], opt: &AdamW, run: &R, out: &Path) -> Result<()> {
    let name_of = |p: &Tensor| lookup(named, p).map(str::to_string);
    write(opt, run, out, name_of, |dir| Ok(engine::safetensors::save(dir.join(WEIGHTS), named, Some(DType::F32), None)?))
}

/// Restore what `save_named` wrote into the parameters `named` (overwritten in place, so every
/// model sharing them sees the checkpoint) and into `opt`, built over those parameters as the run
/// that saved it built its own. Returns the run's settings and the optimizer's step count.
pub fn load_named<R: DeserializeOwned>(out: &Path, named: &[(String, Tensor)], opt: &mut AdamW) -> Result<(R, u64)> {
    let (state, dir) = read_pointer::<R>(out)?;
    let weights = engine::safetensors::Reader::open(dir.join(WEIGHTS))?;
    for (name, t) in named {
        t.assign(&weights.get_as(name, t.shape(), DType::F32)?)?;
    }
    restore_moments(&state, &dir, opt, |p| lookup(named, p).map(str::to_string))?;
    Ok((state.run, state.step))
}

/// The run settings the newest checkpoint under `out` was saved with (e.g. to rebuild the
/// trainer before `load_named`).
pub fn read_run<R: DeserializeOwned>(out: &Path) -> Result<R> {
    Ok(read_pointer::<R>(out)?.0.run)
}

/// trainer-<step>/ (weights by `write_weights`, then the moments), then the pointer, atomically;
/// older trainer-* directories go last.
fn write<R: Serialize>(opt: &AdamW, run: &R, out: &Path, name_of: impl Fn(&Tensor) -> Result<String>, write_weights: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (step, states) = opt.state()?;
    let name = format!("trainer-{step}");
    let dir = out.join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    write_weights(&dir)?;
    let mut moments = Vec::with_capacity(2 * states.len());
    let mut param_steps = BTreeMap::new();
    for (p, st) in opt.params().into_iter().zip(&states) {
        let pname = name_of(p)?;
        moments.push((format!("m.{pname}"), Tensor::new(st.m.clone(), p.shape())?));
        moments.push((format!("v.{pname}"), Tensor::new(st.v.clone(), p.shape())?));
        param_steps.insert(pname, st.step);
    }
    engine::safetensors::save(dir.join(MOMENTS), &moments, None, None)?;
    let pointer = Pointer { step, dir: name.clone(), run, param_steps };
    engine::safetensors::write_atomic(&out.join(POINTER), serde_json::to_string_pretty(&pointer)?.as_bytes())?;
    for entry in std::fs::read_dir(out)?.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with("trainer-") && n != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

fn read_pointer<R: DeserializeOwned>(out: &Path) -> Result<(Pointer<R>, std::path::PathBuf)> {
    let pointer = out.join(POINTER);
    let text = std::fs::read_to_string(&pointer).with_context(|| format!("--resume: {} not found: no checkpoint to resume", pointer.display()))?;
    let state: Pointer<R> = serde_json::from_str(&text).with_context(|| format!("{}: corrupt", pointer.display()))?;
    let dir = out.join(&state.dir);
    Ok((state, dir))
}

fn restore_moments<R>(state: &Pointer<R>, dir: &Path, opt: &mut AdamW, name_of: impl Fn(&Tensor) -> Result<String>) -> Result<()> {
    let moments = engine::safetensors::Reader::open(dir.join(MOMENTS))?;
    let mut states = Vec::new();
    for p in opt.params() {
        let name = name_of(p)?;
        let Some(&step) = state.param_steps.get(&name) else { bail!("{}: no optimizer step for {name}", dir.display()) };
        let m = moments.get_as(&format!("m.{name}"), p.shape(), DType::F32)?.to_vec_f32()?;
        let v = moments.get_as(&format!("v.{name}"), p.shape(), DType::F32)?.to_vec_f32()?;
        states.push(ParamState { step, m, v });
    }
    opt.load_state(state.step, states)?;
    Ok(())
}

fn param_name<'a>(model: &'a Gpt2, p: &Tensor) -> Result<&'a str> {
    lookup(model.params(), p)
}

fn lookup<'a>(named: &'a [(String, Tensor)], p: &Tensor) -> Result<&'a str> {
    named.iter().find(|(_, t)| t.id() == p.id()).map(|(n, _)| n.as_str()).context("optimizer parameter not in the checkpointed parameters")
}

/// Drop metric lines past the resumed step (written after the last checkpoint, then lost).
pub fn keep_metrics_up_to(path: &Path, step: u64) -> Result<()> {
    keep_metrics_where(path, "step", step)
}

/// `keep_metrics_up_to` for metrics counted by another field (e.g. PPO's "iteration"): keep the
/// lines whose `field` is at most `last`.
pub fn keep_metrics_where(path: &Path, field: &str, last: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v[field].as_u64()).is_some_and(|s| s <= last))
        .map(|l| format!("{l}\n"))
        .collect();
    engine::safetensors::write_atomic(path, kept.as_bytes())?;
    Ok(())
}
