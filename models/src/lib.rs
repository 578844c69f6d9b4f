//! GPT-2 on the engine (issue 4): the model, Hugging Face checkpoints in and out, the GPT-2
//! tokenizer, and batched generation with a KV cache.
//!
//! ```no_run
//! use models::{generate, hf, GenerateConfig, Gpt2, Gpt2Config, Tokenizer};
//! let model = hf::load("fixtures/gpt2-tiny")?;                    // or Gpt2::new(Gpt2Config::tiny(), seed)
//! let tok = Tokenizer::gpt2();
//! let ids = engine::Tensor::new(vec![464i64, 2068, 7586], &[1, 3])?;
//! let logits = model.forward(&ids)?;                              // [1, 3, vocab]
//! let out = generate(&model, &[tok.encode("Hello")], &GenerateConfig::greedy(8))?;
//! hf::save(&model, "/tmp/ckpt", engine::DType::BF16)?;
//! # Ok::<(), engine::Error>(())
//! ```

pub mod checkpoint;
pub mod config;
pub mod device_check;
pub mod generate;
pub mod gpt2;
pub mod hf;
pub mod pretrain;
pub mod tokenizer;
pub mod tokens;

pub use config::Gpt2Config;
pub use generate::{generate, GenerateConfig, Generation};
pub use gpt2::{lm_targets, Gpt2, KvCache};
pub use tokenizer::Tokenizer;
