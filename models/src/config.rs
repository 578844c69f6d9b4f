//! GPT-2 hyperparameters, read from and written to Hugging Face's `config.json`.
//!
//! Unknown fields are kept (in `extra`) so that a loaded-then-saved config keeps what transformers
//! wrote (task_specific_params, summary_*, ...); fields that would change the network's function
//! in ways this implementation does not follow are rejected by `validate`.

use engine::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

fn default_eps() -> f64 {
    1e-5
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn default_init_range() -> f64 {
    0.02
}
fn default_pdrop() -> f64 {
    0.1
}
fn default_token() -> Option<u32> {
    Some(50256)
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// MLP width; `None` means 4·n_embd (HF writes `null`).
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// f64 like every float here: f32 would not write back the decimal transformers wrote.
    /// Dropout rates are kept for HF round trips; this implementation applies no dropout.
    #[serde(default = "default_pdrop")]
    pub resid_pdrop: f64,
    #[serde(default = "default_pdrop")]
    pub embd_pdrop: f64,
    #[serde(default = "default_pdrop")]
    pub attn_pdrop: f64,
    #[serde(default = "default_token")]
    pub bos_token_id: Option<u32>,
    #[serde(default = "default_token")]
    pub eos_token_id: Option<u32>,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
    /// Storage dtype of the weights: transformers 5 writes `dtype`, older versions `torch_dtype`
    /// (read here, folded into `dtype`, never written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    #[serde(default, skip_serializing)]
    torch_dtype: Option<String>,
    /// Every other field, kept as read.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Gpt2Config {
    fn new(n_layer: usize, n_head: usize, n_embd: usize, n_positions: usize) -> Self {
        Gpt2Config {
            vocab_size: 50257,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            n_inner: None,
            layer_norm_epsilon: default_eps(),
            activation_function: default_activation(),
            initializer_range: default_init_range(),
            resid_pdrop: default_pdrop(),
            embd_pdrop: default_pdrop(),
            attn_pdrop: default_pdrop(),
            bos_token_id: default_token(),
            eos_token_id: default_token(),
            tie_word_embeddings: true,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            reorder_and_upcast_attn: false,
            dtype: None,
            torch_dtype: None,
            extra: Default::default(),
        }
    }

    /// A small model for tests and quick runs: 4 layers, 4 heads, 256 wide, 256 positions.
    pub fn tiny() -> Self {
        Self::new(4, 4, 256, 256)
    }

    /// GPT-2 small (124M), as the `gpt2` hub config.
    pub fn gpt2() -> Self {
        Self::new(12, 12, 768, 1024)
    }

    /// Any shape, for tests and experiments (GPT-2 defaults elsewhere).
    pub fn custom(n_layer: usize, n_head: usize, n_embd: usize, n_positions: usize, vocab_size: usize) -> Self {
        Gpt2Config { vocab_size, ..Self::new(n_layer, n_head, n_embd, n_positions) }
    }

    /// A model over the byte vocabulary (257 tokens, EOT = 256; see `tokenizer`), for runs small
    /// enough for a laptop CPU. config.json records the tokenizer.
    pub fn bytes(n_layer: usize, n_head: usize, n_embd: usize, n_positions: usize) -> Self {
        let eot = Some(crate::tokenizer::BYTES_EOT);
        let mut c = Gpt2Config { bos_token_id: eot, eos_token_id: eot, ..Self::custom(n_layer, n_head, n_embd, n_positions, crate::tokenizer::BYTES_VOCAB_SIZE) };
        c.extra.insert(crate::tokenizer::CONFIG_KEY.into(), crate::tokenizer::BYTES_NAME.into());
        c
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    pub fn mlp_width(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Parameter count (wte counted once: the LM head is tied to it).
    pub fn num_params(&self) -> usize {
        // Saturating: a hostile config.json must not wrap around to a small count.
        let (c, m) = (self.n_embd, self.mlp_width());
        let (add, mul) = (usize::saturating_add, usize::saturating_mul);
        // Two layernorms, attention (qkv and projection), MLP (fc and projection), with biases.
        let block = [mul(4, c), mul(mul(3, c), c), mul(3, c), mul(c, c), c, mul(c, m), m, mul(m, c), c].into_iter().fold(0, add);
        [mul(self.vocab_size, c), mul(self.n_positions, c), mul(self.n_layer, block), mul(2, c)].into_iter().fold(0, add)
    }

    /// A lower estimate of the host memory a training step takes on the CPU: f32 weights,
    /// gradients and AdamW's two moments, and the activations the backward pass keeps (about 16
    /// floats per layer and embedding width, and two vocabulary rows, per token), for `rows`
    /// sequences of `seq_len` tokens.
    pub fn training_bytes(&self, rows: usize, seq_len: usize) -> u64 {
        let per_token = (self.n_layer as u64).saturating_mul(16 * self.n_embd as u64).saturating_add(2 * self.vocab_size as u64);
        let activations = (rows as u64).saturating_mul(seq_len as u64).saturating_mul(per_token);
        (16 * self.num_params() as u64).saturating_add(activations.saturating_mul(4))
    }

    /// Err before training when `training_bytes` exceed the machine's available memory (CPU
    /// training only: a CUDA device's allocations fail with their own error).
    pub fn check_training_memory(&self, rows: usize, seq_len: usize, device: engine::Device) -> Result<()> {
        if device.is_cuda() {
            return Ok(());
        }
        let what = format!("training this GPT-2 ({} parameters, {} layers x {} wide) on batches of {rows} x {seq_len} tokens", self.num_params(), self.n_layer, self.n_embd);
        engine::memory::check_host(self.training_bytes(rows, seq_len), &what)
    }

    /// Reject configs this implementation would silently compute differently from transformers.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::Msg(format!("GPT-2 config: {why}")));
        if self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 || self.vocab_size == 0 || self.n_positions == 0 {
            return bad(format!("sizes must be positive: {self:?}"));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!("n_embd {} is not divisible by n_head {}", self.n_embd, self.n_head));
        }
        // gelu_pytorch_tanh is the same tanh approximation as gelu_new.
        if !matches!(self.activation_function.as_str(), "gelu_new" | "gelu_pytorch_tanh") {
            return bad(format!("activation_function {:?} is not supported (gelu_new only)", self.activation_function));
        }
        if !self.tie_word_embeddings {
            return bad("untied LM heads are not supported (tie_word_embeddings = false)".into());
        }
        if !self.scale_attn_weights || self.scale_attn_by_inverse_layer_idx || self.reorder_and_upcast_attn {
            return bad("only the standard attention scaling (1/sqrt(head_dim)) is supported".into());
        }
        let tokenizer = crate::Tokenizer::for_config(self);
        if self.vocab_size < tokenizer.vocab_size() && self.extra.contains_key(crate::tokenizer::CONFIG_KEY) {
            return bad(format!("vocab_size {} is smaller than its tokenizer's vocabulary ({})", self.vocab_size, tokenizer.vocab_size()));
        }
        if self.extra.get("add_cross_attention").and_then(|v| v.as_bool()) == Some(true) {
            return bad("cross-attention is not supported".into());
        }
        Ok(())
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let mut c: Gpt2Config = serde_json::from_str(text).map_err(|e| Error::Msg(format!("GPT-2 config: {e}")))?;
        if c.dtype.is_none() {
            c.dtype = c.torch_dtype.take();
        }
        c.torch_dtype = None;
        if let Some(t) = c.extra.get("model_type").and_then(|v| v.as_str()) {
            if t != "gpt2" {
                return Err(Error::Msg(format!("GPT-2 config: model_type is {t:?}, not \"gpt2\"")));
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// HF's `config.json`: model_type and architectures set, our own fields over any kept ones.
    pub fn to_json(&self) -> Result<String> {
        let mut v = serde_json::to_value(self).map_err(|e| Error::Msg(format!("GPT-2 config: {e}")))?;
        let obj = v.as_object_mut().expect("a struct serializes to an object");
        obj.insert("model_type".into(), "gpt2".into());
        obj.insert("architectures".into(), serde_json::json!(["GPT2LMHeadModel"]));
        // Sorted keys, as save_pretrained writes them (whatever order serde_json's map keeps).
        let sorted: std::collections::BTreeMap<String, serde_json::Value> = obj.clone().into_iter().collect();
        serde_json::to_string_pretty(&sorted).map_err(|e| Error::Msg(format!("GPT-2 config: {e}")))
    }

    /// Read `config.json` (errors name the file).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file_err = |msg: String| Error::File { path: path.display().to_string(), msg };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
        Self::from_json(&text).map_err(|e| file_err(e.to_string()))
    }

    /// Write `config.json` atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        engine::safetensors::write_atomic(path.as_ref(), self.to_json()?.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_must_divide_the_width() {
        let err = Gpt2Config::custom(2, 3, 32, 16, 50).validate().unwrap_err().to_string();
        assert!(err.contains("not divisible by n_head 3"), "{err}");
        Gpt2Config::custom(2, 4, 32, 16, 50).validate().unwrap();
    }
}
