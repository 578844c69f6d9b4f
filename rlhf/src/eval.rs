//! Evaluating a policy as the paper does: the win rate against a baseline under a judge (the
//! reward model, or any programmatic judge), the KL to the reference that PPO's penalty optimizes,
//! and the LM loss on held-out pretraining text (the alignment tax).
//!
//! Judge design: score-based. A judge gives each (prompt, response) a score, higher is better; a
//! comparison is won by a when score(a) > score(b), lost when score(a) < score(b), tied when they
//! are equal. The win rate counts ties as half a win.
//!
//! Sampling: prompts (token ids) go through `models::generate` in chunks of `EVAL_BATCH`, chunk i
//! with seed `cfg.seed + i`; both policies see the same chunks and seeds. A response is its
//! generated tokens up to and without its EOS, decoded (lossily) to text for the judge.

use crate::reward::RewardModel;
use anyhow::{bail, Result};
use engine::Tensor;
use models::{generate, GenerateConfig, Gpt2, Tokenizer};
use serde::Serialize;

/// Prompts per `generate` call (and per scoring forward pass).
pub const EVAL_BATCH: usize = 8;

/// Scores responses; higher is better (see the module docs for how scores become wins).
pub trait Judge {
    fn score(&self, prompt: &str, response: &str) -> Result<f32>;

    /// Many at once (the reward model batches them); by default one by one.
    fn scores(&self, items: &[(&str, &str)]) -> Result<Vec<f32>> {
        items.iter().map(|(p, r)| self.score(p, r)).collect()
    }
}

/// The reward model as a judge: its normalized score of prompt ++ response ++ EOT, prompt and
/// response tokenized separately (as the RM was trained).
impl Judge for RewardModel {
    fn score(&self, prompt: &str, response: &str) -> Result<f32> {
        Ok(Judge::scores(self, &[(prompt, response)])?[0])
    }

    fn scores(&self, items: &[(&str, &str)]) -> Result<Vec<f32>> {
        let tok = Tokenizer::for_config(self.trunk.config());
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(EVAL_BATCH) {
            let seqs: Vec<Vec<u32>> = chunk.iter().map(|(p, r)| tok.encode(p).into_iter().chain(tok.encode(r)).chain([tok.eot()]).collect()).collect();
            out.extend(RewardModel::scores(self, &seqs)?);
        }
        Ok(out)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct WinRate {
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    /// (wins + ties / 2) / comparisons; 0.5 when there are none.
    pub rate: f64,
}

impl WinRate {
    pub fn from_counts(wins: usize, ties: usize, losses: usize) -> WinRate {
        let n = wins + ties + losses;
        let rate = if n == 0 { 0.5 } else { (wins as f64 + 0.5 * ties as f64) / n as f64 };
        WinRate { wins, ties, losses, rate }
    }
}

/// Sampled responses: per prompt, the generated tokens up to and without EOS, and the count
/// generated (EOS included).
pub struct Samples {
    pub tokens: Vec<Vec<u32>>,
    pub lengths: Vec<usize>,
}

fn check_prompts(prompts: &[Vec<u32>]) -> Result<()> {
    if prompts.is_empty() {
        bail!("eval: no prompts");
    }
    Ok(())
}

/// Sample one response per prompt (chunks of `EVAL_BATCH`, chunk i with seed cfg.seed + i).
pub fn sample(policy: &Gpt2, prompts: &[Vec<u32>], cfg: &GenerateConfig) -> Result<Samples> {
    check_prompts(prompts)?;
    let mut out = Samples { tokens: Vec::with_capacity(prompts.len()), lengths: Vec::with_capacity(prompts.len()) };
    for (i, chunk) in prompts.chunks(EVAL_BATCH).enumerate() {
        let c = GenerateConfig { seed: cfg.seed.wrapping_add(i as u64), ..cfg.clone() };
        let g = generate(policy, chunk, &c)?;
        for (toks, &len) in g.tokens.iter().zip(&g.lengths) {
            let mut t = toks[..len].to_vec();
            if len > 0 && cfg.eos_token_id == Some(t[len - 1]) {
                t.pop();
            }
            out.tokens.push(t);
            out.lengths.push(len);
        }
    }
    Ok(out)
}

/// Win rate of `policy_a` against `policy_b` under `judge`, one response each per prompt, both
/// sampled with the same `cfg` (same seeds).
pub fn win_rate(policy_a: &Gpt2, policy_b: &Gpt2, prompts: &[Vec<u32>], judge: &dyn Judge, cfg: &GenerateConfig) -> Result<WinRate> {
    let tok = Tokenizer::for_config(policy_a.config());
    let a = sample(policy_a, prompts, cfg)?;
    let b = sample(policy_b, prompts, cfg)?;
    let texts = |ids: &[Vec<u32>]| ids.iter().map(|t| tok.decode_lossy(t)).collect::<engine::Result<Vec<String>>>();
    let (p, ra, rb) = (texts(prompts)?, texts(&a.tokens)?, texts(&b.tokens)?);
    let sa = judge.scores(&pairs(&p, &ra))?;
    let sb = judge.scores(&pairs(&p, &rb))?;
    if sa.len() != prompts.len() || sb.len() != prompts.len() {
        bail!("eval: the judge returned {} and {} scores for {} prompts", sa.len(), sb.len(), prompts.len());
    }
    let (mut w, mut t, mut l) = (0, 0, 0);
    for (x, y) in sa.iter().zip(&sb) {
        if x > y {
            w += 1;
        } else if x < y {
            l += 1;
        } else {
            t += 1;
        }
    }
    Ok(WinRate::from_counts(w, t, l))
}

fn pairs<'a>(prompts: &'a [String], responses: &'a [String]) -> Vec<(&'a str, &'a str)> {
    prompts.iter().zip(responses).map(|(p, r)| (p.as_str(), r.as_str())).collect()
}

/// Σ_t log p(response token t) [per row] for left-padded prompts + right-padded responses, under
/// softmax(logits / temperature) (temperature 0 reads as 1), as PPO computes them.
fn response_logprob_rows(model: &Gpt2, prompts: &[Vec<u32>], resp: &[Vec<u32>], temperature: f32) -> Result<Vec<Vec<f64>>> {
    let b = prompts.len();
    let plen = prompts.iter().map(Vec::len).max().unwrap_or(1);
    let time = resp.iter().map(Vec::len).max().unwrap_or(0);
    if time == 0 {
        return Ok(vec![Vec::new(); b]);
    }
    let mut ids = Vec::with_capacity(b * (plen + time));
    let mut targets = Vec::with_capacity(b * time);
    let mut pads = Vec::with_capacity(b);
    for (p, r) in prompts.iter().zip(resp) {
        pads.push(plen - p.len());
        ids.extend(std::iter::repeat_n(0i64, plen - p.len()).chain(p.iter().map(|&t| t as i64)));
        let row: Vec<i64> = (0..time).map(|j| r.get(j).map_or(0, |&t| t as i64)).collect();
        ids.extend_from_slice(&row);
        targets.extend_from_slice(&row);
    }
    let ids = Tensor::new(ids, &[b, plen + time])?;
    let h = model.hidden_states(&ids, Some(&pads), None)?;
    let logits = model.lm_head(&h.narrow(1, plen - 1, time)?)?;
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let lp = logits.token_logprobs(&Tensor::new(targets, &[b, time])?, t)?.to_vec_f32()?;
    Ok(resp.iter().enumerate().map(|(r, x)| lp[r * time..r * time + x.len()].iter().map(|&v| v as f64).collect()).collect())
}

/// KL of `policy` to `reference` as PPO's penalty optimizes it (k1): the mean over the policy's
/// own sampled responses of Σ_t (log π(y_t) − log π_ref(y_t)), the EOS token included, under
/// softmax(logits / cfg.temperature).
pub fn kl_to_reference(policy: &Gpt2, reference: &Gpt2, prompts: &[Vec<u32>], cfg: &GenerateConfig) -> Result<f64> {
    let _g = engine::no_grad();
    let s = sample(policy, prompts, cfg)?;
    // The scored tokens: each response as generated, its EOS included.
    let resp: Vec<Vec<u32>> = s.tokens.iter().zip(&s.lengths).map(|(t, &len)| {
        let mut t = t.clone();
        if t.len() < len {
            t.push(cfg.eos_token_id.expect("a response shorter than its length ended with EOS"));
        }
        t
    }).collect();
    let mut total = 0.0;
    for (pc, rc) in prompts.chunks(EVAL_BATCH).zip(resp.chunks(EVAL_BATCH)) {
        let lp = response_logprob_rows(policy, pc, rc, cfg.temperature)?;
        let rlp = response_logprob_rows(reference, pc, rc, cfg.temperature)?;
        for (a, b) in lp.iter().zip(&rlp) {
            total += a.iter().zip(b).map(|(x, y)| x - y).sum::<f64>();
        }
    }
    Ok(total / prompts.len() as f64)
}

/// Mean next-token loss (nats per predicted token) of `model` on `tokens`, cut into consecutive
/// windows of `seq_len` + 1 tokens (at most n_positions + 1; the last, shorter window too when
/// it has at least 2 tokens): each window predicts all but its first token; windows are weighted
/// by their predicted tokens. The alignment tax is a policy's loss minus the baseline's.
pub fn lm_loss(model: &Gpt2, tokens: &[u32], seq_len: usize) -> Result<f64> {
    let _g = engine::no_grad();
    let len = seq_len.min(model.config().n_positions).max(1) + 1;
    let vocab = model.config().vocab_size;
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
        bail!("lm_loss: token {bad} is outside the vocabulary of {vocab}");
    }
    let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let windows: Vec<&[i64]> = ids.chunks(len).filter(|w| w.len() >= 2).collect();
    if windows.is_empty() {
        bail!("lm_loss: needs at least 2 tokens, got {}", tokens.len());
    }
    let (mut total, mut count) = (0f64, 0usize);
    for group in windows.chunk_by(|a, b| a.len() == b.len()) {
        for batch in group.chunks(EVAL_BATCH) {
            let (b, t) = (batch.len(), batch[0].len() - 1);
            let inp: Vec<i64> = batch.iter().flat_map(|w| w[..t].iter().copied()).collect();
            let tgt: Vec<i64> = batch.iter().flat_map(|w| w[1..].iter().copied()).collect();
            let loss = model.loss(&Tensor::new(inp, &[b, t])?, &Tensor::new(tgt, &[b, t])?)?.to_scalar()?;
            total += loss as f64 * (b * t) as f64;
            count += b * t;
        }
    }
    Ok(total / count as f64)
}
