//! GPT-2's byte-level BPE (OpenAI's r50k_base), through tiktoken-rs, whose vocabulary ships inside
//! the crate: nothing is downloaded. No BOS/EOS is added and no prefix space, as HF's GPT-2
//! tokenizer does by default.

use engine::{Error, Result};
use std::collections::HashSet;
use tiktoken_rs::CoreBPE;

/// `<|endoftext|>`: GPT-2's only special token, used as EOS, BOS and document separator.
pub const EOT: u32 = 50256;
pub const EOT_TEXT: &str = "<|endoftext|>";
pub const VOCAB_SIZE: usize = 50257;

#[derive(Clone, Copy)]
pub struct Tokenizer {
    bpe: &'static CoreBPE,
}

impl Tokenizer {
    /// The GPT-2 tokenizer (built once per process: parsing the ranks takes a few tens of ms).
    pub fn gpt2() -> Tokenizer {
        Tokenizer { bpe: tiktoken_rs::r50k_base_singleton() }
    }

    pub fn vocab_size(&self) -> usize {
        VOCAB_SIZE
    }

    /// Plain text: a literal `<|endoftext|>` is encoded as ordinary characters (safe for
    /// untrusted text; tiktoken's `encode_ordinary`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }

    /// `<|endoftext|>` in the text becomes the single id 50256 (HF's default behaviour).
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        let allowed = HashSet::from([EOT_TEXT]);
        self.bpe.encode(text, &allowed).expect("the GPT-2 pattern matches any text").0
    }

    /// The bytes behind `ids` (special tokens as their text). Errors on an id outside the vocabulary.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        self.bpe.decode_bytes(ids).map_err(|e| Error::Msg(format!("tokenizer: cannot decode id {}: not in the GPT-2 vocabulary", e.token)))
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
