//! Reward-model comparisons. Every format becomes a `Comparison` (K responses + a ranking, best
//! first); a line's format is recognised by its fields:
//!
//! | fields | format |
//! |---|---|
//! | `prompt, responses, ranking` | K-wise ranking (K >= 2), InstructGPT's |
//! | `prompt, chosen, rejected` | pairwise (K = 2) |
//! | `chosen, rejected` (no prompt) | HH-RLHF whole dialogues: see `hh` |
//! | `info, summaries, choice` | TL;DR summary comparisons: see `tldr` |
//!
//! Rankings are strict: `ranking` must be a permutation of 0..K, so ties cannot be expressed, and
//! two identical responses (a tie in disguise) make the line bad.

use super::jsonl::{field, read_records, text, LoadOptions, Loaded};
use super::{hh, tldr, Comparison};
use anyhow::Result;
use serde_json::{Map, Value};
use std::path::Path;

/// Any of the formats above, recognised per line (files may mix them).
pub fn load_comparisons(path: impl AsRef<Path>, opts: LoadOptions) -> Result<Loaded<Comparison>> {
    read_records(path.as_ref(), opts, parse_comparison)
}

pub(crate) fn parse_comparison(obj: &Map<String, Value>) -> Result<Comparison, String> {
    if obj.contains_key("responses") || obj.contains_key("ranking") {
        parse_kwise(obj)
    } else if obj.contains_key("summaries") {
        tldr::parse_tldr(obj)
    } else if obj.contains_key("chosen") || obj.contains_key("rejected") {
        if obj.contains_key("prompt") {
            parse_pairwise(obj)
        } else {
            hh::parse_hh(obj)
        }
    } else {
        Err("not a comparison: expected \"responses\"+\"ranking\", \"chosen\"+\"rejected\" or TL;DR's \"summaries\"+\"choice\"".into())
    }
}

/// `{"prompt", "responses": [..], "ranking": [..]}`.
pub(crate) fn parse_kwise(obj: &Map<String, Value>) -> Result<Comparison, String> {
    let prompt = text(obj, "prompt")?;
    let responses = field(obj, "responses")?.as_array().ok_or("field \"responses\" is not a list")?;
    let responses = responses
        .iter()
        .enumerate()
        .map(|(i, r)| match r.as_str() {
            Some(s) if s.trim().is_empty() => Err(format!("response {i} is empty")),
            Some(s) => Ok(s.to_string()),
            None => Err(format!("response {i} is not a string")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ranking = field(obj, "ranking")?.as_array().ok_or("field \"ranking\" is not a list")?;
    let ranking = ranking.iter().map(|r| r.as_u64().map(|v| v as usize).ok_or(format!("ranking entry {r} is not an index"))).collect::<Result<Vec<_>, _>>()?;
    checked(Comparison { prompt, responses, ranking })
}

/// `{"prompt", "chosen", "rejected"}`: K = 2, chosen first.
pub(crate) fn parse_pairwise(obj: &Map<String, Value>) -> Result<Comparison, String> {
    let c = Comparison { prompt: text(obj, "prompt")?, responses: vec![text(obj, "chosen")?, text(obj, "rejected")?], ranking: vec![0, 1] };
    checked(c)
}

/// The rules every comparison keeps, whatever its source: K >= 2, a ranking that is a permutation
/// of 0..K, non-empty and pairwise distinct responses.
pub fn validate_comparison(c: &Comparison) -> Result<(), String> {
    let k = c.responses.len();
    if k < 2 {
        return Err(format!("{k} response(s): a comparison needs at least 2"));
    }
    if c.ranking.len() != k {
        return Err(format!("ranking {:?} has {} entries for {k} responses", c.ranking, c.ranking.len()));
    }
    let mut seen = vec![false; k];
    for &r in &c.ranking {
        if r >= k || std::mem::replace(&mut seen[r], true) {
            return Err(format!("ranking {:?} is not a permutation of 0..{k} (no ties, no gaps)", c.ranking));
        }
    }
    if c.prompt.trim().is_empty() {
        return Err("the prompt is empty".into());
    }
    for (i, r) in c.responses.iter().enumerate() {
        if r.trim().is_empty() {
            return Err(format!("response {i} is empty"));
        }
        if let Some(j) = c.responses[..i].iter().position(|o| o == r) {
            return Err(format!("responses {j} and {i} are identical: a ranking between them is meaningless"));
        }
    }
    Ok(())
}

fn checked(c: Comparison) -> Result<Comparison, String> {
    validate_comparison(&c)?;
    Ok(c)
}
