//! Tokenizers. Two vocabularies:
//! - GPT-2's byte-level BPE (OpenAI's r50k_base), through tiktoken-rs, whose vocabulary ships
//!   inside the crate: nothing is downloaded. No BOS/EOS is added and no prefix space, as HF's
//!   GPT-2 tokenizer does by default. `<|endoftext|>` is 50256.
//! - Plain bytes (ids 0..=255) plus `<|endoftext|>` as 256: a 257-token vocabulary for models small
//!   enough to train on a laptop CPU in minutes (the pipeline's), where a 50257-row embedding and
//!   LM head would cost more than the rest of the network.
//!
//! A checkpoint names its tokenizer in config.json (`"tokenizer": "bytes"`); without it, GPT-2's.

use crate::Gpt2Config;
use engine::{Error, Result};
use std::collections::HashSet;
use tiktoken_rs::CoreBPE;

/// `<|endoftext|>` of GPT-2's vocabulary: its only special token, used as EOS, BOS and document
/// separator.
pub const EOT: u32 = 50256;
pub const EOT_TEXT: &str = "<|endoftext|>";
pub const VOCAB_SIZE: usize = 50257;
/// `<|endoftext|>` of the byte vocabulary.
pub const BYTES_EOT: u32 = 256;
pub const BYTES_VOCAB_SIZE: usize = 257;
/// The config.json field that names the tokenizer, and its value for the byte vocabulary.
pub const CONFIG_KEY: &str = "tokenizer";
pub const BYTES_NAME: &str = "bytes";

#[derive(Clone, Copy)]
enum Kind {
    Gpt2(&'static CoreBPE),
    Bytes,
}

#[derive(Clone, Copy)]
pub struct Tokenizer {
    kind: Kind,
}

impl Tokenizer {
    /// The GPT-2 tokenizer (built once per process: parsing the ranks takes a few tens of ms).
    pub fn gpt2() -> Tokenizer {
        Tokenizer { kind: Kind::Gpt2(tiktoken_rs::r50k_base_singleton()) }
    }

    /// Bytes as ids, plus EOT = 256.
    pub fn bytes() -> Tokenizer {
        Tokenizer { kind: Kind::Bytes }
    }

    /// The tokenizer a model was trained with, from its config (`"tokenizer": "bytes"`, else GPT-2's).
    pub fn for_config(config: &Gpt2Config) -> Tokenizer {
        match config.extra.get(CONFIG_KEY).and_then(|v| v.as_str()) {
            Some(BYTES_NAME) => Tokenizer::bytes(),
            _ => Tokenizer::gpt2(),
        }
    }

    /// "gpt2" or "bytes" (token caches are keyed by it).
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Gpt2(_) => "gpt2",
            Kind::Bytes => BYTES_NAME,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self.kind {
            Kind::Gpt2(_) => VOCAB_SIZE,
            Kind::Bytes => BYTES_VOCAB_SIZE,
        }
    }

    /// The end-of-text id: EOS of a response, document separator in pretraining.
    pub fn eot(&self) -> u32 {
        match self.kind {
            Kind::Gpt2(_) => EOT,
            Kind::Bytes => BYTES_EOT,
        }
    }

    /// Plain text: a literal `<|endoftext|>` is encoded as ordinary characters (safe for
    /// untrusted text; tiktoken's `encode_ordinary`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self.kind {
            Kind::Gpt2(bpe) => bpe.encode_ordinary(text),
            Kind::Bytes => text.bytes().map(u32::from).collect(),
        }
    }

    /// `<|endoftext|>` in the text becomes the single EOT id (HF's default behaviour).
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        match self.kind {
            Kind::Gpt2(bpe) => {
                let allowed = HashSet::from([EOT_TEXT]);
                bpe.encode(text, &allowed).expect("the GPT-2 pattern matches any text").0
            }
            Kind::Bytes => {
                let mut ids = Vec::with_capacity(text.len());
                for (i, part) in text.split(EOT_TEXT).enumerate() {
                    if i > 0 {
                        ids.push(BYTES_EOT);
                    }
                    ids.extend(part.bytes().map(u32::from));
                }
                ids
            }
        }
    }

    /// The bytes behind `ids` (special tokens as their text). Errors on an id outside the vocabulary.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        match self.kind {
            Kind::Gpt2(bpe) => bpe.decode_bytes(ids).map_err(|e| Error::Msg(format!("tokenizer: cannot decode id {}: not in the GPT-2 vocabulary", e.token))),
            Kind::Bytes => {
                let mut out = Vec::with_capacity(ids.len());
                for &id in ids {
                    match id {
                        0..=255 => out.push(id as u8),
                        BYTES_EOT => out.extend_from_slice(EOT_TEXT.as_bytes()),
                        _ => return Err(Error::Msg(format!("tokenizer: cannot decode id {id}: not in the byte vocabulary (0..=256)"))),
                    }
                }
                Ok(out)
            }
        }
    }

    /// Text of `ids`; an error if they end inside a UTF-8 character (or hold an unknown id).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        String::from_utf8(self.decode_bytes(ids)?).map_err(|e| Error::Msg(format!("tokenizer: the ids do not decode to UTF-8: {e}")))
    }

    /// Text of `ids` with incomplete UTF-8 sequences replaced by U+FFFD (as HF's errors="replace";
    /// sampled text can stop mid-character).
    pub fn decode_lossy(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }
}
