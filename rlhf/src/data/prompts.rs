//! Prompts for PPO rollouts and evaluation: `{"prompt"}` per line; other fields (ppo_prompts'
//! `"source"`, an id) are ignored. Text is kept verbatim.

use super::jsonl::{read_records, text, LoadOptions, Loaded};
use super::Prompt;
use anyhow::Result;
use std::path::Path;

pub fn load_prompts(path: impl AsRef<Path>, opts: LoadOptions) -> Result<Loaded<Prompt>> {
    read_records(path.as_ref(), opts, |obj| Ok(Prompt { prompt: text(obj, "prompt")? }))
}
