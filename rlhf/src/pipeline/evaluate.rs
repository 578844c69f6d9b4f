//! The last stage: every model answers the held-out prompts (same sampling seed for all), the
//! gold judge scores the answers, and the paper's comparisons are made: win rates against SFT
//! (ties count half), the KL to SFT, and the LM loss on held-out book text (the alignment tax).

use super::config::PipelineConfig;
use super::corpus::Corpus;
use super::stages::{gen_config, sample_texts};
use super::world::Task;
use super::Progress;
use crate::eval::{kl_to_reference, lm_loss, WinRate};
use anyhow::Result;
use models::{Gpt2, Tokenizer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub struct Models<'a> {
    pub pretrained: &'a Gpt2,
    pub sft: &'a Gpt2,
    pub ppo: &'a Gpt2,
    pub ppo_ptx: &'a Gpt2,
    pub large_sft: Option<&'a Gpt2>,
}

/// results.json.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub preset: String,
    pub seed: u64,
    /// Held-out pairs of SFT samples with different gold scores that the reward model orders as
    /// the gold score does.
    pub rm_accuracy: f64,
    /// Pairs of distinct responses that two simulated labelers ordered alike (the paper: ~73%).
    pub labeler_agreement: f64,
    /// Pairs a labeler ordered as the gold score does.
    pub labeler_gold_agreement: f64,
    /// "ppo_vs_sft", "ppo_ptx_vs_sft" (and "small_ppo_ptx_vs_large_sft"): gold judge, held-out
    /// prompts, ties count half.
    pub win_rate: BTreeMap<String, f64>,
    pub win_counts: BTreeMap<String, WinRate>,
    /// Mean gold score in [0, 1] of each model's held-out responses, and by instruction family.
    pub gold_score: BTreeMap<String, f64>,
    pub gold_score_by_family: BTreeMap<String, BTreeMap<String, f64>>,
    /// LM loss (nats per byte) on held-out book text.
    pub ptx_loss: BTreeMap<String, f64>,
    /// KL to the SFT policy on the policy's own held-out samples (summed over tokens).
    pub kl: BTreeMap<String, f64>,
    /// Mean response length in bytes.
    pub response_length: BTreeMap<String, f64>,
    /// Share of responses framed in one of the labelers' habits (`labeler::HABITS`: a preamble, a
    /// trailing period, quotes), which 40% of the demonstrations have and the rubric penalizes.
    #[serde(default)]
    pub habit_rate: BTreeMap<String, f64>,
    pub eval_prompts: usize,
    /// Responses per prompt and model (`eval_samples`): the win rates count every pair.
    #[serde(default)]
    pub eval_samples: usize,
    /// Wall time per stage and in total (the only field that differs between runs of one seed).
    pub seconds: BTreeMap<String, f64>,
}

impl Results {
    pub fn save(&self, out: &Path) -> Result<()> {
        engine::safetensors::write_atomic(&out.join("results.json"), serde_json::to_string_pretty(self)?.as_bytes())?;
        Ok(())
    }
}

/// One held-out prompt and every model's answer to it (samples.json).
#[derive(Serialize)]
pub struct Sample {
    pub family: &'static str,
    pub prompt: String,
    pub reference_answer: String,
    /// model -> (response, gold score)
    pub responses: BTreeMap<String, (String, f64)>,
}

/// How often score `a[i]` beats `b[i]` (equal scores tie).
pub fn win_rate(a: &[f64], b: &[f64]) -> WinRate {
    let (mut w, mut t, mut l) = (0, 0, 0);
    for (x, y) in a.iter().zip(b) {
        if (x - y).abs() <= 1e-12 {
            t += 1;
        } else if x > y {
            w += 1;
        } else {
            l += 1;
        }
    }
    WinRate::from_counts(w, t, l)
}

pub fn evaluate(cfg: &PipelineConfig, m: &Models, tasks: &[Task], corpus: &Corpus, progress: &mut dyn Progress) -> Result<(Results, Vec<Sample>)> {
    let tok = Tokenizer::bytes();
    let prompts: Vec<Vec<u32>> = tasks.iter().map(|t| tok.encode(&t.prompt)).collect();
    let mut named: Vec<(&str, &Gpt2)> = vec![("pretrained", m.pretrained), ("sft", m.sft), ("ppo", m.ppo), ("ppo_ptx", m.ppo_ptx)];
    if let Some(l) = m.large_sft {
        named.push(("large_sft", l));
    }
    // Each model samples with its own seed, as independent outputs are compared in the paper
    // (shared random numbers would make similar policies give identical answers: ties).
    // Sample k of model i: its own seed (k = 0 keeps the seeds of a one-sample evaluation).
    let gen_of = |i: usize, k: usize| gen_config(cfg, cfg.eval_temperature, (cfg.seed ^ 0xe7a1).wrapping_add(1_000_003 * i as u64).wrapping_add(7_919 * k as u64));
    let per_prompt = cfg.eval_samples.max(1);
    progress.begin("eval", named.len() as u64 * 2, &format!("{} held-out prompts, {per_prompt} responses each", tasks.len()));
    let mut r = Results { preset: cfg.preset.clone(), seed: cfg.seed, eval_prompts: tasks.len(), eval_samples: per_prompt, ..Default::default() };
    // Per model: every response, sample by sample (prompt order within each), and its score.
    let mut scores: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut texts: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let all_tasks: Vec<&Task> = (0..per_prompt).flat_map(|_| tasks.iter()).collect();
    for (i, (name, model)) in named.iter().enumerate() {
        let mut t = Vec::with_capacity(all_tasks.len());
        for k in 0..per_prompt {
            t.extend(sample_texts(model, &prompts, &gen_of(i, k))?);
        }
        let s: Vec<f64> = all_tasks.iter().zip(&t).map(|(task, x)| task.score(x)).collect();
        r.gold_score.insert(name.to_string(), mean(&s));
        let mut fam: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (task, &x) in all_tasks.iter().zip(&s) {
            fam.entry(task.family.name().to_string()).or_default().push(x);
        }
        r.gold_score_by_family.insert(name.to_string(), fam.into_iter().map(|(k, v)| (k, mean(&v))).collect());
        r.response_length.insert(name.to_string(), mean(&t.iter().map(|x| x.len() as f64).collect::<Vec<_>>()));
        r.habit_rate.insert(name.to_string(), mean(&t.iter().map(|x| super::labeler::has_habit(x) as u8 as f64).collect::<Vec<_>>()));
        r.ptx_loss.insert(name.to_string(), lm_loss(model, &corpus.held_out, model.config().n_positions)?);
        progress.update(2 * i as u64 + 1, format!("{name}: gold {:.3}", r.gold_score[*name]));
        if matches!(*name, "ppo" | "ppo_ptx") {
            r.kl.insert(name.to_string(), kl_to_reference(model, m.sft, &prompts, &gen_of(i, 0))?);
        }
        progress.update(2 * i as u64 + 2, String::new());
        scores.insert(name, s);
        texts.insert(name, t);
    }
    let mut pairs = vec![("ppo_vs_sft", "ppo", "sft"), ("ppo_ptx_vs_sft", "ppo_ptx", "sft")];
    if m.large_sft.is_some() {
        pairs.push(("small_ppo_ptx_vs_large_sft", "ppo_ptx", "large_sft"));
    }
    for (key, a, b) in pairs {
        let w = win_rate(&scores[a], &scores[b]);
        r.win_rate.insert(key.to_string(), w.rate);
        r.win_counts.insert(key.to_string(), w);
    }
    progress.end(format!("PPO-ptx vs SFT win rate {:.3}", r.win_rate["ppo_ptx_vs_sft"]));
    // The first two held-out prompts of each family, every model's answer.
    let mut samples = Vec::new();
    for fam in super::world::Family::ALL {
        for (i, task) in tasks.iter().enumerate().filter(|(_, t)| t.family == fam).take(2) {
            let responses = texts.iter().map(|(name, t)| (name.to_string(), (t[i].clone(), scores[name][i]))).collect();
            samples.push(Sample { family: fam.name(), prompt: task.prompt.clone(), reference_answer: task.answer.clone(), responses });
        }
    }
    Ok((r, samples))
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}
