//! The datasets of the three stages, as the loaders return them. Loaders (JSONL, plain or .gz)
//! report a bad line with its file and line number; nothing is dropped silently.

/// A demonstration for SFT: the prompt and the response the model should learn to give.
#[derive(Clone, Debug, PartialEq)]
pub struct Demonstration {
    pub prompt: String,
    pub response: String,
}

/// One prompt's ranking of K responses (K >= 2): `ranking` holds response indices, best first.
/// Pairwise data is the K = 2 case.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub prompt: String,
    pub responses: Vec<String>,
    pub ranking: Vec<usize>,
}

/// A prompt for PPO rollouts or evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    pub prompt: String,
}

pub mod comparisons;
pub mod demonstrations;
pub mod hh;
pub mod jsonl;
pub mod prompts;
pub mod tldr;

pub use comparisons::{load_comparisons, validate_comparison};
pub use demonstrations::load_demonstrations;
pub use hh::{load_hh_rlhf, split_hh_pair};
pub use jsonl::{LoadOptions, Loaded};
pub use prompts::load_prompts;
pub use tldr::load_tldr;
