//! Demonstrations to token sequences and padded batches: the only place that decides which
//! tokens SFT learns from.

use crate::data::Demonstration;
use anyhow::{bail, Result};
use engine::Tensor;
use models::Tokenizer;

/// Targets with this value are ignored by `cross_entropy` (HF's convention).
pub const IGNORE: i64 = -100;

/// One demonstration as tokens: `ids` = prompt ++ response ++ EOT (after truncation); the first
/// `prompt_len` ids are prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct SftExample {
    pub ids: Vec<u32>,
    pub prompt_len: usize,
}

impl SftExample {
    /// Positions whose target is a response token (the EOT included): what the loss counts.
    pub fn target_tokens(&self) -> usize {
        self.ids.len() - self.prompt_len
    }
}

/// Tokenize a demonstration. EOT follows the response so the model learns where an answer ends
/// (generation stops there). Prompt and response are encoded separately: the response's leading
/// space then starts its first word, as GPT-2 saw text in pretraining.
pub fn encode(tok: &Tokenizer, d: &Demonstration, max_len: usize, min_prompt_tokens: usize) -> Result<SftExample> {
    let prompt = tok.encode(&d.prompt);
    let mut response = tok.encode(&d.response);
    response.push(tok.eot());
    truncate(prompt, response, max_len, min_prompt_tokens)
}

/// Fit prompt ++ response into `max_len` model inputs (max_len + 1 tokens, since the last token
/// is only a target). The prompt is cut from the left first (its end, next to the answer, matters
/// most), but keeps at least `min_prompt_tokens` of itself; past that the response is cut from
/// the right, and always keeps at least one token.
pub fn truncate(prompt: Vec<u32>, response: Vec<u32>, max_len: usize, min_prompt_tokens: usize) -> Result<SftExample> {
    let (p, r, budget) = (prompt.len(), response.len(), max_len + 1);
    if p == 0 {
        bail!("an empty prompt: the first response token would have nothing to be predicted from");
    }
    if budget < 2 {
        bail!("max_len {max_len}: too short for one prompt and one response token");
    }
    if p + r <= budget {
        return Ok(SftExample { ids: [prompt, response].concat(), prompt_len: p });
    }
    let floor = min_prompt_tokens.clamp(1, budget - 1).min(p);
    let keep_p = budget.saturating_sub(r).clamp(floor, p);
    let keep_r = (budget - keep_p).min(r);
    let ids = [&prompt[p - keep_p..], &response[..keep_r]].concat();
    Ok(SftExample { ids, prompt_len: keep_p })
}

/// A right-padded batch: inputs [B, T] and next-token targets [B, T] (i64), T = the longest
/// row's input length. A target is kept only where the token it predicts is a response token;
/// prompt positions and padding are IGNORE. Padding ids are 0 (any id would do: padding sits after
/// every real position, so the causal mask hides it). Also returns the kept target count.
pub fn collate(rows: &[&SftExample]) -> Result<(Tensor, Tensor, usize)> {
    let t = rows.iter().map(|e| e.ids.len() - 1).max().unwrap_or(0);
    if t == 0 {
        bail!("collate: an empty batch");
    }
    let (mut ids, mut targets) = (Vec::with_capacity(rows.len() * t), Vec::with_capacity(rows.len() * t));
    let mut kept = 0;
    for e in rows {
        let n = e.ids.len() - 1;
        for i in 0..t {
            if i < n {
                ids.push(e.ids[i] as i64);
                // Position i predicts ids[i + 1]: learned only when that token is response.
                let learn = i + 1 >= e.prompt_len;
                targets.push(if learn { e.ids[i + 1] as i64 } else { IGNORE });
                kept += learn as usize;
            } else {
                ids.push(0);
                targets.push(IGNORE);
            }
        }
    }
    Ok((Tensor::new(ids, &[rows.len(), t])?, Tensor::new(targets, &[rows.len(), t])?, kept))
}
