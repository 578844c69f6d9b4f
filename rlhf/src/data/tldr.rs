//! OpenAI's TL;DR summary comparisons (summarize-from-feedback):
//! `{"info": {"post", "title", "subreddit", ..}, "summaries": [{"text", ..}, {"text", ..}],
//! "choice": 0|1, ..}`. The prompt is the paper's format, "SUBREDDIT: r/..\nTITLE: ..\nPOST: ..
//! \nTL;DR:", and the summaries (which start with a space) are the responses, preferred first.

use super::comparisons::validate_comparison;
use super::jsonl::{field, read_records, text, LoadOptions, Loaded};
use super::Comparison;
use anyhow::Result;
use serde_json::{Map, Value};
use std::path::Path;

pub fn load_tldr(path: impl AsRef<Path>, opts: LoadOptions) -> Result<Loaded<Comparison>> {
    read_records(path.as_ref(), opts, parse_tldr)
}

/// The prompt a TL;DR post becomes.
pub fn tldr_prompt(subreddit: &str, title: &str, post: &str) -> String {
    format!("SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:")
}

pub(crate) fn parse_tldr(obj: &Map<String, Value>) -> Result<Comparison, String> {
    let info = field(obj, "info")?.as_object().ok_or("field \"info\" is not an object")?;
    let prompt = tldr_prompt(&text(info, "subreddit")?, &text(info, "title")?, &text(info, "post")?);
    let summaries = field(obj, "summaries")?.as_array().ok_or("field \"summaries\" is not a list")?;
    if summaries.len() != 2 {
        return Err(format!("{} summaries: TL;DR comparisons have exactly 2", summaries.len()));
    }
    let texts = summaries
        .iter()
        .map(|s| s.as_object().ok_or_else(|| "a summary is not an object".to_string()).and_then(|s| text(s, "text")))
        .collect::<Result<Vec<_>, _>>()?;
    let choice = match field(obj, "choice")?.as_u64() {
        Some(c @ (0 | 1)) => c as usize,
        _ => return Err(format!("choice {} is not 0 or 1", obj["choice"])),
    };
    let c = Comparison { prompt, responses: texts, ranking: vec![choice, 1 - choice] };
    validate_comparison(&c)?;
    Ok(c)
}
