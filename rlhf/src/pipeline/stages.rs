//! The pipeline's stages, each in its own directory under the run's output: a stage whose
//! directory holds a `stage.json` with the same key (its settings and everything upstream) is
//! reused, not retrained, so an interrupted run picks up at the stage it was in and the report
//! can be rebuilt. Every stage is seeded from the run's seed: same seed, same results.

use super::config::{ModelShape, PipelineConfig};
use super::corpus::Corpus;
use super::labeler;
use super::world::Task;
use super::Progress;
use crate::data::{Comparison, Demonstration};
use crate::ppo::trainer::{PpoConfig, PpoTrainer};
use crate::reward::{self, RewardModel, TokenRanking};
use crate::sft::SftConfig;
use anyhow::{Context, Result};
use models::{hf, GenerateConfig, Gpt2, Tokenizer};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const STAGE_FILE: &str = "stage.json";

#[derive(Serialize, Deserialize)]
struct StageRecord {
    key: String,
    seconds: f64,
    #[serde(default)]
    facts: serde_json::Value,
}

/// A stable 64-bit FNV-1a hash of `value`'s JSON, as hex: stage keys.
pub fn key_of(value: &impl Serialize) -> String {
    let text = serde_json::to_string(value).expect("settings serialize");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// One stage's directory and key; `reuse` says whether it already finished with this key.
pub struct Stage {
    pub name: String,
    pub dir: PathBuf,
    pub key: String,
    t0: Instant,
}

impl Stage {
    pub fn new(out: &Path, name: &str, key: String) -> Stage {
        Stage { name: name.to_string(), dir: out.join(name), key, t0: Instant::now() }
    }

    /// The seconds and facts of an earlier finished run of this stage with the same key.
    pub fn reuse(&self) -> Option<(f64, serde_json::Value)> {
        let text = std::fs::read_to_string(self.dir.join(STAGE_FILE)).ok()?;
        let r: StageRecord = serde_json::from_str(&text).ok()?;
        (r.key == self.key).then_some((r.seconds, r.facts))
    }

    /// Start afresh: whatever a different or unfinished run left here goes.
    pub fn clear(&mut self) -> Result<()> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).with_context(|| format!("{}: cannot clear", self.dir.display()))?;
        }
        std::fs::create_dir_all(&self.dir).with_context(|| format!("{}: cannot create", self.dir.display()))?;
        self.t0 = Instant::now();
        Ok(())
    }

    /// Mark the stage finished (written last, atomically: a crash before it means "redo").
    pub fn finish(&self, facts: serde_json::Value) -> Result<f64> {
        let seconds = self.t0.elapsed().as_secs_f64();
        let rec = StageRecord { key: self.key.clone(), seconds, facts };
        engine::safetensors::write_atomic(&self.dir.join(STAGE_FILE), serde_json::to_string_pretty(&rec)?.as_bytes())?;
        Ok(seconds)
    }
}

/// Pretrain a fresh model of `shape` on the corpus for `steps`.
pub fn pretrain(cfg: &PipelineConfig, shape: &ModelShape, steps: u64, corpus: &Corpus, stage: &mut Stage, progress: &mut dyn Progress) -> Result<(Gpt2, f64)> {
    if let Some((s, _)) = stage.reuse() {
        progress.reused(&stage.name);
        return Ok((hf::load(&stage.dir)?.to_device(cfg.device()?)?, s));
    }
    stage.clear()?;
    let pc = models::pretrain::PretrainConfig { steps, ..cfg.pretrain.clone() };
    let model = Gpt2::new(shape.config(), cfg.seed)?.to_device(cfg.device()?)?;
    progress.begin(&stage.name, steps, &format!("{} parameters, {} training tokens", model.num_params(), corpus.train.len()));
    let mut val = f32::NAN;
    let model = models::pretrain::pretrain(model, &corpus.train, &pc, &stage.dir, false, |m| {
        if let Some(v) = m.val_loss {
            val = v;
        }
        progress.update(m.step, format!("loss {:.3} | held-out {val:.3} | {:.0} tok/s", m.loss, m.tokens_per_s));
        true
    })?;
    let s = stage.finish(serde_json::json!({ "val_loss": val }))?;
    progress.end(format!("held-out loss {val:.3}"));
    Ok((model, s))
}

/// Supervised fine-tuning on the labelers' demonstrations.
pub fn sft(sft_cfg: &SftConfig, base: &Gpt2, demos: &[Demonstration], stage: &mut Stage, progress: &mut dyn Progress) -> Result<(Gpt2, f64)> {
    if let Some((s, _)) = stage.reuse() {
        progress.reused(&stage.name);
        return Ok((hf::load(&stage.dir)?.to_device(base.device())?, s));
    }
    stage.clear()?;
    let tok = Tokenizer::for_config(base.config());
    let train = demos.len() - (demos.len() as f32 * sft_cfg.val_fraction).round() as usize;
    let total = train.div_ceil(sft_cfg.batch) as u64 * sft_cfg.epochs;
    progress.begin(&stage.name, total, &format!("{} demonstrations, {} epochs", demos.len(), sft_cfg.epochs));
    let mut val = f32::NAN;
    let model = crate::sft::train_sft(base.copy()?, &tok, demos, sft_cfg, &stage.dir, false, |m| {
        if let Some(v) = m.val_loss {
            val = v;
        }
        progress.update(m.step, format!("loss {:.3} | held-out {val:.3}", m.loss));
        true
    })?;
    let s = stage.finish(serde_json::json!({ "val_loss": val }))?;
    progress.end(format!("held-out loss {val:.3}"));
    Ok((model, s))
}

/// Samples of a model: generation settings for the pipeline's byte models.
pub fn gen_config(cfg: &PipelineConfig, temperature: f32, seed: u64) -> GenerateConfig {
    let eot = models::tokenizer::BYTES_EOT;
    GenerateConfig { max_new_tokens: cfg.max_new_tokens, temperature, top_k: 0, top_p: 1.0, eos_token_id: Some(eot), pad_token_id: eot, seed, use_cache: true }
}

/// One response (text, EOS dropped) per prompt id sequence.
pub fn sample_texts(model: &Gpt2, prompts: &[Vec<u32>], gen: &GenerateConfig) -> Result<Vec<String>> {
    let tok = Tokenizer::for_config(model.config());
    let s = crate::eval::sample(model, prompts, gen)?;
    s.tokens.iter().map(|t| Ok(tok.decode_lossy(t)?)).collect()
}

/// K-wise rankings for the reward model, and the held-out set gold-scored for its accuracy.
pub struct RmData {
    pub train: Vec<Comparison>,
    pub eval: Vec<(Task, Vec<String>)>,
    /// Pairs of distinct responses two different labelers ordered the same way, of all such pairs.
    pub labeler_agreement: f64,
    /// Pairs the (first) labeler ordered as the gold score does, of pairs with different gold scores.
    pub labeler_gold_agreement: f64,
}

/// Samples of `sampler` (SFT in round 1, the last round's PPO policy after it), K per prompt (K in
/// k_min..=k_max), ranked by simulated labelers, the same people every round. Saved in the
/// stage's directory (`comparisons.jsonl`, the rankings; `heldout.jsonl`, the held-out samples).
#[allow(clippy::too_many_arguments)]
pub fn rm_data(cfg: &PipelineConfig, sampler: &Gpt2, round: u64, train: &[Task], eval: &[Task], stage: &mut Stage, progress: &mut dyn Progress) -> Result<(RmData, f64)> {
    if let Some((s, facts)) = stage.reuse() {
        progress.reused(&stage.name);
        // Read back as written (SFT samples may be empty: the strict data loader would refuse them).
        let comparisons = read_saved(&stage.dir.join("comparisons.jsonl"))?.into_iter().map(|r| Comparison { prompt: r.prompt, responses: r.responses, ranking: r.ranking }).collect();
        let held: Vec<Vec<String>> = read_saved(&stage.dir.join("heldout.jsonl"))?.into_iter().map(|r| r.responses).collect();
        let f = |k: &str| facts[k].as_f64().unwrap_or(f64::NAN);
        let data = RmData { train: comparisons, eval: eval.iter().cloned().zip(held).collect(), labeler_agreement: f("labeler_agreement"), labeler_gold_agreement: f("labeler_gold_agreement") };
        return Ok((data, s));
    }
    stage.clear()?;
    let tok = Tokenizer::for_config(sampler.config());
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x1abe_1e25);
    let l = &cfg.labelers;
    let pool = labeler::pool(l.count, l.noise, l.taste_spread, &mut rng);
    // Later rounds: the same labelers, fresh draws of K, samples and ranking noise.
    let salt = (round - 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    if round > 1 {
        rng = StdRng::seed_from_u64(cfg.seed ^ 0x1abe_1e25 ^ salt);
    }
    let who = if round == 1 { "SFT" } else { "policy" };
    let tasks: Vec<&Task> = train.iter().chain(eval).collect();
    let ks: Vec<usize> = tasks.iter().map(|_| labeler::draw_k(l.k_min, l.k_max, &mut rng)).collect();
    let total: usize = ks.iter().sum();
    progress.begin(&stage.name, total as u64, &format!("{total} {who} responses to {} prompts for the labelers", tasks.len()));
    // Response j of every prompt is sampled at temperature T_j, spread over the configured range
    // (golden-ratio steps, so any K covers it): SFT samples of varied care, standing in for the
    // paper's outputs of several models.
    let [lo, hi] = cfg.rm_sample_temperatures;
    let mut texts: Vec<Vec<String>> = vec![Vec::new(); tasks.len()];
    let mut done = 0;
    for j in 0..ks.iter().copied().max().unwrap_or(0) {
        let temperature = lo + (hi - lo) * ((j as f32 * 0.618_034).fract());
        let rows: Vec<usize> = (0..tasks.len()).filter(|&i| ks[i] > j).collect();
        for (c, chunk) in rows.chunks(256).enumerate() {
            let prompts: Vec<Vec<u32>> = chunk.iter().map(|&i| tok.encode(&tasks[i].prompt)).collect();
            let gen = gen_config(cfg, temperature, (cfg.seed ^ 0x5a3_01e5 ^ salt).wrapping_add((j * 10_007 + c) as u64));
            for (&i, t) in chunk.iter().zip(sample_texts(sampler, &prompts, &gen)?) {
                texts[i].push(t);
            }
            done += chunk.len();
            progress.update(done as u64, format!("temperature {temperature:.2}"));
        }
    }
    let mut texts = texts.into_iter();
    let (mut out, mut eval_sets) = (Vec::new(), Vec::new());
    let (mut same, mut pairs, mut gold_same, mut gold_pairs) = (0, 0, 0, 0);
    for (i, (task, &k)) in tasks.iter().zip(&ks).enumerate() {
        let responses = texts.next().expect("one list per task");
        debug_assert_eq!(responses.len(), k);
        if i >= train.len() {
            eval_sets.push(((*task).clone(), responses));
            continue;
        }
        let who = i % pool.len();
        let ranking = pool[who].rank(task, &responses, &mut rng);
        let second = pool[(who + 1) % pool.len()].rank(task, &responses, &mut rng);
        let (s, p) = labeler::agreement(&responses, &ranking, &second);
        (same, pairs) = (same + s, pairs + p);
        let (s, p) = gold_agreement(task, &responses, &ranking);
        (gold_same, gold_pairs) = (gold_same + s, gold_pairs + p);
        out.push(Comparison { prompt: task.prompt.clone(), responses, ranking });
    }
    let frac = |a: usize, b: usize| if b == 0 { f64::NAN } else { a as f64 / b as f64 };
    let data = RmData { train: out, eval: eval_sets, labeler_agreement: frac(same, pairs), labeler_gold_agreement: frac(gold_same, gold_pairs) };
    super::report::write_comparisons(&stage.dir.join("comparisons.jsonl"), &data.train, train)?;
    let held: String = data.eval.iter().map(|(t, r)| format!("{}\n", serde_json::json!({ "prompt": t.prompt, "responses": r, "gold": r.iter().map(|x| t.score(x)).collect::<Vec<_>>() }))).collect();
    engine::safetensors::write_atomic(&stage.dir.join("heldout.jsonl"), held.as_bytes())?;
    let s = stage.finish(serde_json::json!({ "labeler_agreement": data.labeler_agreement, "labeler_gold_agreement": data.labeler_gold_agreement }))?;
    progress.end(format!("labelers agree with each other on {:.3} of pairs, with the gold score on {:.3}", data.labeler_agreement, data.labeler_gold_agreement));
    Ok((data, s))
}

/// One line of the rankings stage's own files (comparisons.jsonl, heldout.jsonl).
#[derive(Deserialize)]
struct SavedResponses {
    prompt: String,
    responses: Vec<String>,
    #[serde(default)]
    ranking: Vec<usize>,
}

fn read_saved(path: &Path) -> Result<Vec<SavedResponses>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    text.lines().enumerate().map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not a saved ranking", path.display(), i + 1))).collect()
}

fn gold_agreement(task: &Task, responses: &[String], ranking: &[usize]) -> (usize, usize) {
    let gold: Vec<f64> = responses.iter().map(|r| task.score(r)).collect();
    let mut pos = vec![0; ranking.len()];
    ranking.iter().enumerate().for_each(|(i, &x)| pos[x] = i);
    let (mut same, mut pairs) = (0, 0);
    for i in 0..gold.len() {
        for j in i + 1..gold.len() {
            if (gold[i] - gold[j]).abs() > 1e-9 {
                pairs += 1;
                same += ((gold[i] > gold[j]) == (pos[i] < pos[j])) as usize;
            }
        }
    }
    (same, pairs)
}

/// The reward model's scores of `responses` to `prompt` (each ended by EOS, as PPO scores them).
pub fn rm_scores(rm: &RewardModel, prompt: &str, responses: &[String]) -> Result<Vec<f32>> {
    let tok = Tokenizer::for_config(rm.trunk.config());
    let p = tok.encode(prompt);
    let seqs: Vec<Vec<u32>> = responses.iter().map(|r| p.iter().copied().chain(tok.encode(r)).chain([tok.eot()]).collect()).collect();
    Ok(rm.scores(&seqs)?)
}

/// The reward model's accuracy on held-out pairs ordered by the gold score (pairs whose gold
/// scores are equal are left out: there is nothing to get right).
pub fn gold_pair_accuracy(rm: &RewardModel, eval: &[(Task, Vec<String>)]) -> Result<f64> {
    let (mut right, mut pairs) = (0usize, 0usize);
    for (task, responses) in eval {
        let scores = rm_scores(rm, &task.prompt, responses)?;
        let gold: Vec<f64> = responses.iter().map(|r| task.score(r)).collect();
        for i in 0..gold.len() {
            for j in i + 1..gold.len() {
                if (gold[i] - gold[j]).abs() > 1e-9 {
                    pairs += 1;
                    right += ((gold[i] - gold[j]) * (scores[i] - scores[j]) as f64 > 0.0) as usize;
                }
            }
        }
    }
    Ok(if pairs == 0 { f64::NAN } else { right as f64 / pairs as f64 })
}

/// Train the reward model from the SFT model on the rankings; normalize it so that SFT samples
/// score 0 on average. Held-out gold accuracy goes to `heldout.jsonl` as it trains.
pub fn reward_model(cfg: &PipelineConfig, sft: &Gpt2, data: &RmData, stage: &mut Stage, progress: &mut dyn Progress) -> Result<(RewardModel, f64, f64)> {
    if let Some((s, facts)) = stage.reuse() {
        progress.reused(&stage.name);
        return Ok((RewardModel::load(&stage.dir)?.to_device(sft.device())?, facts["gold_accuracy"].as_f64().unwrap_or(f64::NAN), s));
    }
    stage.clear()?;
    let tok = Tokenizer::for_config(sft.config());
    let train: Vec<TokenRanking> = data.train.iter().map(|c| TokenRanking::from_comparison(&tok, c)).collect();
    let mut rm = RewardModel::from_sft(sft, cfg.seed ^ 0x4e5d)?;
    let total = train.len().div_ceil(cfg.rm.batch) as u64 * cfg.rm.epochs as u64;
    let pairs: usize = data.train.iter().map(|c| c.responses.len() * (c.responses.len() - 1) / 2).sum();
    progress.begin(&stage.name, total, &format!("{} rankings ({pairs} pairs)", train.len()));
    let mut metrics = std::fs::File::create(stage.dir.join("metrics.jsonl"))?;
    let mut heldout = std::fs::File::create(stage.dir.join("heldout.jsonl"))?;
    let shared = rm.clone();
    let (mut acc, mut failed) = (f64::NAN, None);
    reward::train(&rm, &train, &[], &cfg.rm, Some(&mut metrics), |m| {
        if failed.is_some() {
            return;
        }
        if m.step % cfg.rm.eval_every.max(1) == 0 || m.step == total {
            match gold_pair_accuracy(&shared, &data.eval) {
                Ok(a) => {
                    acc = a;
                    let _ = writeln!(heldout, "{}", serde_json::json!({ "step": m.step, "gold_accuracy": a }));
                }
                Err(e) => failed = Some(e),
            }
        }
        progress.update(m.step, format!("loss {:.3} | train acc {:.2} | held-out gold acc {acc:.3}", m.loss, m.accuracy));
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    // SFT's own samples (the rankings' responses) score 0 on average after this.
    let samples: Vec<Vec<u32>> = train.iter().flat_map(|r| r.responses.iter().map(move |x| [r.prompt.as_slice(), x.as_slice()].concat())).take(1024).collect();
    let norm = rm.fit_normalization(&samples, cfg.rm_normalize_gain, 32)?;
    rm.save(&stage.dir)?;
    let s = stage.finish(serde_json::json!({ "gold_accuracy": acc, "normalization_bias": norm.bias, "normalization_gain": norm.gain }))?;
    progress.end(format!("held-out gold accuracy {acc:.3}"));
    Ok((rm, acc, s))
}

/// PPO (gamma 0) or PPO-ptx from the SFT model against the reward model; the held-out ptx loss
/// every `ptx_curve_every` iterations goes into the metrics for the report's curves.
#[allow(clippy::too_many_arguments)]
pub fn ppo(cfg: &PipelineConfig, gamma: f32, sft: &Gpt2, rm: &RewardModel, prompts: &[Vec<u32>], corpus: &Corpus, stage: &mut Stage, progress: &mut dyn Progress) -> Result<(Gpt2, f64)> {
    if let Some((s, _)) = stage.reuse() {
        progress.reused(&stage.name);
        return Ok((hf::load(stage.dir.join("policy"))?.to_device(sft.device())?, s));
    }
    stage.clear()?;
    let pc = PpoConfig { ptx_coef: gamma, max_new_tokens: cfg.max_new_tokens, seed: cfg.seed, ..cfg.ppo.clone() };
    let mut trainer = PpoTrainer::new(sft, rm, pc.clone())?;
    progress.begin(&stage.name, pc.iterations, &format!("{} iterations of {} rollouts, gamma {gamma}", pc.iterations, pc.rollout_batch));
    let mut metrics = std::fs::File::create(stage.dir.join("metrics.jsonl"))?;
    let curve_tokens = &corpus.held_out[..corpus.held_out.len().min(cfg.ptx_eval_tokens / 4).max(2)];
    let seq = sft.config().n_positions;
    trainer.train(prompts, (gamma > 0.0).then_some(&corpus.train), |tr, m| {
        let mut line = serde_json::to_value(m)?;
        if cfg.ptx_curve_every > 0 && (m.iteration % cfg.ptx_curve_every == 0 || m.iteration == pc.iterations) {
            line["heldout_ptx_loss"] = crate::eval::lm_loss(&tr.policy, curve_tokens, seq)?.into();
        }
        writeln!(metrics, "{line}")?;
        progress.update(m.iteration, format!("score {:+.3} | kl {:.3} | ent {:.2} | len {:.1}", m.score_mean, m.kl, m.entropy, m.response_length));
        Ok(true)
    })?;
    trainer.save(&stage.dir)?;
    let s = stage.finish(serde_json::Value::Null)?;
    progress.end(String::new());
    Ok((trainer.policy.clone(), s))
}
