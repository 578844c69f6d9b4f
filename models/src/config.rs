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
        self.n_inner.unwrap_or(self.n_embd.saturating_mul(4))
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

    /// Training FLOPs per token (forward and backward) at context `t`, counted as nanoGPT and
    /// PaLM count them for MFU: 6 per parameter outside the position embeddings (the tied
    /// token embedding once, as the LM head's matmul), plus 12 · layers · width · t for the
    /// attention scores and weighted sums (causal masking not discounted).
    pub fn train_flops_per_token(&self, t: usize) -> f64 {
        let params = self.num_params().saturating_sub(self.n_positions * self.n_embd) as f64;
        6.0 * params + 12.0 * (self.n_layer * self.n_embd) as f64 * t as f64
    }

    /// A lower estimate of the host memory a training step still has to allocate on the CPU once
    /// the weights (and perhaps AdamW's moments, after a resume) are loaded: f32 gradients, and
    /// the activations the backward pass keeps (about 16 floats per layer and embedding width per
    /// token, and with `lm_head` two vocabulary rows: the logits and their gradient), for `rows`
    /// sequences of `seq_len` tokens. Saturating: a hostile config must not wrap to a small value.
    pub fn training_bytes(&self, rows: usize, seq_len: usize, lm_head: bool) -> u64 {
        let mul = u64::saturating_mul;
        let logits = if lm_head { mul(2, self.vocab_size as u64) } else { 0 };
        let per_token = mul(mul(self.n_layer as u64, 16), self.n_embd as u64).saturating_add(logits);
        let activations = mul(mul(rows as u64, seq_len as u64), per_token);
        mul(4, self.num_params() as u64).saturating_add(mul(4, activations))
    }

    /// Err before training when `training_bytes` exceed the machine's available memory (CPU
    /// training only: a CUDA device's allocations fail with their own error). `lm_head`: the
    /// model computes vocabulary logits (a reward or value trunk does not).
    pub fn check_training_memory(&self, rows: usize, seq_len: usize, lm_head: bool, device: engine::Device) -> Result<()> {
        if device.is_cuda() {
            return Ok(());
        }
        let what = format!("training this GPT-2 ({} parameters, {} layers x {} wide) on batches of {rows} x {seq_len} tokens", self.num_params(), self.n_layer, self.n_embd);
        engine::memory::check_host(self.training_bytes(rows, seq_len, lm_head), &what)
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

    /// GPT-2 124M at T = 1024: nanoGPT's count (its get_num_params excludes wpe): 123.65M
    /// parameters outside wpe, so 6 · 123.65M + 12 · 12 · 768 · 1024 ≈ 0.855 GFLOP a token.
    #[test]
    fn train_flops_per_token_counts_as_nanogpt() {
        let c = Gpt2Config::gpt2();
        let f = c.train_flops_per_token(1024);
        let want = 6.0 * (124_439_808.0 - 1024.0 * 768.0) + 12.0 * 12.0 * 768.0 * 1024.0;
        assert_eq!(c.num_params(), 124_439_808);
        assert!((f - want).abs() < 1.0, "{f} vs {want}");
        assert!((f / 1e9 - 0.855).abs() < 0.001);
    }

    /// The training estimate: a reward or value trunk has no logits; a batch beyond the machine
    /// is refused on the CPU and left to the device's own allocator on CUDA; a hostile size
    /// saturates instead of wrapping to a small estimate.
    #[test]
    fn training_memory_estimate() {
        let c = Gpt2Config::custom(2, 2, 64, 64, 50257);
        assert!(c.training_bytes(8, 64, false) < c.training_bytes(8, 64, true));
        assert_eq!(c.training_bytes(8, 64, true) - c.training_bytes(8, 64, false), 4 * 8 * 64 * 2 * 50257);
        let e = c.check_training_memory(1 << 30, 64, true, engine::Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("out of memory: training this GPT-2") && e.contains("on batches of 1073741824 x 64 tokens"), "{e}");
        assert!(c.check_training_memory(1 << 30, 64, true, engine::Device::Cuda(0)).is_ok());
        assert!(c.check_training_memory(8, 64, true, engine::Device::Cpu).is_ok());
        let hostile = Gpt2Config::custom(usize::MAX / 2, 1, usize::MAX / 8, 64, 50257);
        assert_eq!(hostile.training_bytes(1, 1, true), u64::MAX);
        assert_eq!(Gpt2Config::custom(12, 12, 768, 1024, 50257).num_params(), 124_439_808, "GPT-2 124M");
    }

    #[test]
    fn heads_must_divide_the_width() {
        let err = Gpt2Config::custom(2, 3, 32, 16, 50).validate().unwrap_err().to_string();
        assert!(err.contains("not divisible by n_head 3"), "{err}");
        Gpt2Config::custom(2, 4, 32, 16, 50).validate().unwrap();
    }
}
