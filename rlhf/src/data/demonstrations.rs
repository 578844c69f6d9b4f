//! SFT demonstrations: `{"prompt", "response"}` per line (`"completion"` is accepted for
//! `"response"`, the OpenAI fine-tuning spelling). Text is kept verbatim: the bundled files
//! already carry the chat template (see data/rlhf/README.md).

use super::jsonl::{read_records, text, LoadOptions, Loaded};
use super::Demonstration;
use anyhow::Result;
use serde_json::{Map, Value};
use std::path::Path;

pub fn load_demonstrations(path: impl AsRef<Path>, opts: LoadOptions) -> Result<Loaded<Demonstration>> {
    read_records(path.as_ref(), opts, parse_demonstration)
}

pub(crate) fn parse_demonstration(obj: &Map<String, Value>) -> Result<Demonstration, String> {
    let prompt = text(obj, "prompt")?;
    let response = match (obj.contains_key("response"), obj.contains_key("completion")) {
        (true, true) => return Err("both \"response\" and \"completion\": which one is the answer?".into()),
        (false, true) => text(obj, "completion")?,
        _ => text(obj, "response")?,
    };
    Ok(Demonstration { prompt, response })
}
