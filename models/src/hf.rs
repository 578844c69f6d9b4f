//! Hugging Face checkpoints: a directory with `config.json` and `model.safetensors`.
//!
//! In: both key layouts (`save_pretrained`'s `transformer.` prefix, and the original hub layout
//! without it), f32/f16/bf16 on disk (converted to f32). The causal-mask buffers old checkpoints
//! carry (`h.N.attn.bias`, `h.N.attn.masked_bias`) are ignored; an `lm_head.weight` is accepted
//! only as the tied copy of wte it must be. Anything missing, misshapen or unexpected is an error
//! naming the tensor and the file.
//!
//! Out: the `save_pretrained` layout (prefix, no lm_head, f32 or bf16) and a `config.json` that
//! transformers' `GPT2LMHeadModel.from_pretrained` reads; both files written atomically.

use crate::config::Gpt2Config;
use crate::gpt2::{param_specs, Gpt2, PREFIX};
use engine::safetensors::Reader;
use engine::{DType, Error, Result, Tensor};
use std::path::Path;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

fn file_error(path: &Path, msg: impl Into<String>) -> Error {
    Error::File { path: path.display().to_string(), msg: msg.into() }
}

/// Load `dir/config.json` and `dir/model.safetensors`.
pub fn load(dir: impl AsRef<Path>) -> Result<Gpt2> {
    let dir = dir.as_ref();
    let config = Gpt2Config::load(dir.join(CONFIG_FILE))?;
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.exists() && dir.join("model.safetensors.index.json").exists() {
        return Err(file_error(&weights, "sharded checkpoints (model.safetensors.index.json) are not supported"));
    }
    load_weights(config, &weights)
}

/// A model with `config` from one safetensors file in either key layout.
pub fn load_weights(config: Gpt2Config, path: impl AsRef<Path>) -> Result<Gpt2> {
    let reader = Reader::open(path.as_ref())?;
    let path = reader.path().to_path_buf();
    let prefix = if reader.contains(&format!("{PREFIX}wte.weight")) {
        PREFIX
    } else if reader.contains("wte.weight") {
        ""
    } else {
        return Err(file_error(&path, format!("not a GPT-2 checkpoint: missing tensor {:?} (or \"wte.weight\")", format!("{PREFIX}wte.weight"))));
    };
    let specs = param_specs(&config);
    let mut tensors = Vec::with_capacity(specs.len());
    let mut used = std::collections::HashSet::new();
    for (name, shape, _) in &specs {
        let key = format!("{prefix}{}", &name[PREFIX.len()..]);
        if !reader.contains(&key) {
            return Err(file_error(&path, format!("missing tensor {key:?} (shape {shape:?})")));
        }
        // get_as checks shape and float-ness and converts f16/bf16 to f32; its errors name both.
        tensors.push((name.clone(), reader.get_as(&key, shape, DType::F32)?));
        used.insert(key);
    }
    let wte = &tensors[0].1;
    let mut unexpected = Vec::new();
    for key in reader.names() {
        if used.contains(key) || is_mask_buffer(key) {
            continue;
        }
        if key == "lm_head.weight" {
            check_tied(&reader, key, wte)?;
            continue;
        }
        unexpected.push(key.as_str());
    }
    if !unexpected.is_empty() {
        return Err(file_error(&path, format!("unexpected tensors for this GPT-2 config: {unexpected:?}")));
    }
    Gpt2::from_tensors(config, tensors)
}

/// `h.N.attn.bias` / `h.N.attn.masked_bias` (optionally prefixed): causal-mask buffers, not weights.
fn is_mask_buffer(key: &str) -> bool {
    let key = key.strip_prefix(PREFIX).unwrap_or(key);
    key.starts_with("h.") && (key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias"))
}

/// The LM head is tied to wte: a stored copy must be that same matrix.
fn check_tied(reader: &Reader, key: &str, wte: &Tensor) -> Result<()> {
    let head = reader.get_as(key, wte.shape(), DType::F32)?;
    if head.to_vec_f32()? != wte.to_vec_f32()? {
        return Err(file_error(reader.path(), format!("{key:?} differs from wte: untied LM heads are not supported")));
    }
    Ok(())
}

/// Save `model` to `dir` (created if needed) as `model.safetensors` in `dtype` (F32 or BF16) and
/// `config.json`. The weights go first, so a directory with the new config always has the new
/// weights next to it.
pub fn save(model: &Gpt2, dir: impl AsRef<Path>, dtype: DType) -> Result<()> {
    let dir = dir.as_ref();
    let dtype_name = match dtype {
        DType::F32 => "float32",
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::I64 => return Err(file_error(dir, "weights must be saved as a float dtype")),
    };
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, format!("cannot create directory: {e}")))?;
    engine::safetensors::save(dir.join(WEIGHTS_FILE), model.params(), Some(dtype), None)?;
    let mut config = model.config().clone();
    config.dtype = Some(dtype_name.into());
    config.save(dir.join(CONFIG_FILE))
}
