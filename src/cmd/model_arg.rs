//! What commands share: resolving `--model` and turning text files into a token file.

use anyhow::{bail, Context, Result};
use models::tokens::TokenFile;
use models::{hf, Gpt2, Gpt2Config, Tokenizer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `--model`: a preset name, a config.json (fresh seeded weights), or a checkpoint directory.
pub fn load_or_init(spec: &str, seed: u64) -> Result<Gpt2> {
    let path = Path::new(spec);
    let model = match spec {
        "tiny" => Gpt2::new(Gpt2Config::tiny(), seed)?,
        "gpt2" => Gpt2::new(Gpt2Config::gpt2(), seed)?,
        _ if path.is_dir() => hf::load(path)?,
        _ if path.is_file() => Gpt2::new(Gpt2Config::load(path)?, seed)?,
        _ => bail!("--model {spec:?}: not a preset (tiny, gpt2), a config.json or a checkpoint directory"),
    };
    Ok(model)
}

/// `--device`: `cpu`, `cuda` or `cuda:N`; a CUDA device must be usable now (a clear error here,
/// not at the first tensor moved there).
pub fn device(spec: &str) -> Result<engine::Device> {
    let device: engine::Device = spec.parse()?;
    if let engine::Device::Cuda(n) = device {
        if let Err(why) = engine::cuda::availability_of(n) {
            bail!("--device {spec}: {why}");
        }
    }
    Ok(device)
}

/// `--bf16` (autocast: bf16 operands, f32 accumulation and master weights) needs a CUDA device:
/// the CPU engine is f32.
pub fn check_bf16(bf16: bool, device: engine::Device) -> Result<()> {
    if bf16 && !device.is_cuda() {
        bail!("--bf16: autocast applies to CUDA matmuls and attention; the CPU engine is f32 (add --device cuda)");
    }
    Ok(())
}

/// A checkpoint directory for commands that need trained weights.
pub fn load_checkpoint(dir: &Path) -> Result<Gpt2> {
    if !dir.is_dir() {
        bail!("--model {}: not a directory with config.json and model.safetensors", dir.display());
    }
    Ok(hf::load(dir)?)
}

/// GPT-2's tokenizer makes ids up to 50256: a model with a smaller vocabulary cannot read them.
pub fn check_vocab(model: &Gpt2, ids: &[u32]) -> Result<()> {
    let v = model.config().vocab_size;
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= v) {
        bail!("the GPT-2 tokenizer produced id {bad}, but this model's vocabulary has only {v} tokens");
    }
    Ok(())
}

/// Tokenize `files` into `out/tokens.bin`, reusing it when `out/tokens.json` says it was made from
/// the same bytes.
pub fn tokenize_files(files: &[PathBuf], tok: &Tokenizer, out: &Path) -> Result<PathBuf> {
    let mut hasher = Sha256::new();
    hasher.update(tok.name().as_bytes());
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("{}: cannot read as UTF-8 text", f.display()))?;
        hasher.update(f.display().to_string().as_bytes());
        hasher.update(text.as_bytes());
        texts.push(text);
    }
    let digest = format!("{:x}", hasher.finalize());
    let (bin, meta) = (out.join("tokens.bin"), out.join("tokens.json"));
    if std::fs::read_to_string(&meta).is_ok_and(|m| m.contains(&digest)) && TokenFile::open(&bin).is_ok() {
        return Ok(bin);
    }
    let mut tokens = Vec::new();
    for text in &texts {
        tokens.extend(tok.encode(text));
        tokens.push(tok.eot());
    }
    TokenFile::write(&bin, &tokens)?;
    let info = serde_json::json!({ "sha256": digest, "tokens": tokens.len(), "files": files });
    engine::safetensors::write_atomic(&meta, serde_json::to_string_pretty(&info)?.as_bytes())?;
    Ok(bin)
}
