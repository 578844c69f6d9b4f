//! Anthropic HH-RLHF: `{"chosen", "rejected"}`, each a whole dialogue
//! ("\n\nHuman: ...\n\nAssistant: ...", possibly several turns) that differ only in the last reply.
//! The prompt is their longest shared prefix that ends at an "\n\nAssistant:" marker; the two
//! replies are what follows it (keeping their leading space, as GPT-2 tokenizes words).

use super::comparisons::validate_comparison;
use super::jsonl::{read_records, text, LoadOptions, Loaded};
use super::Comparison;
use anyhow::Result;
use serde_json::{Map, Value};
use std::path::Path;

pub const ASSISTANT: &str = "\n\nAssistant:";

pub fn load_hh_rlhf(path: impl AsRef<Path>, opts: LoadOptions) -> Result<Loaded<Comparison>> {
    read_records(path.as_ref(), opts, parse_hh)
}

pub(crate) fn parse_hh(obj: &Map<String, Value>) -> Result<Comparison, String> {
    let (chosen, rejected) = (text(obj, "chosen")?, text(obj, "rejected")?);
    let (prompt, c, r) = split_hh_pair(&chosen, &rejected)?;
    let c = Comparison { prompt: prompt.to_string(), responses: vec![c.to_string(), r.to_string()], ranking: vec![0, 1] };
    validate_comparison(&c)?;
    Ok(c)
}

/// (prompt, chosen reply, rejected reply). The split point is the last "\n\nAssistant:" that
/// starts inside the shared prefix, so a reply that begins with the same words as the other
/// stays whole; an error if the dialogues share no Assistant turn.
pub fn split_hh_pair<'a>(chosen: &'a str, rejected: &'a str) -> Result<(&'a str, &'a str, &'a str), String> {
    let common = chosen.bytes().zip(rejected.bytes()).take_while(|(a, b)| a == b).count();
    // The marker must lie wholly inside the shared part: search the common prefix only.
    let shared = &chosen[..floor_char_boundary(chosen, common)];
    let cut = shared.rfind(ASSISTANT).ok_or("chosen and rejected share no \"\\n\\nAssistant:\" turn: cannot find the prompt")? + ASSISTANT.len();
    Ok((&chosen[..cut], &chosen[cut..], &rejected[cut..]))
}

/// The largest char boundary <= i (the common prefix may end inside a multi-byte character).
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
