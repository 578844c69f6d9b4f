//! The whole of InstructGPT in one call, small enough for a laptop CPU: pretrain a byte-level GPT
//! on public-domain books, fine-tune it on demonstrations, train a reward model on K-wise
//! rankings of its samples, optimize it with PPO and with PPO-ptx, and evaluate them all on
//! held-out prompts with the gold judge (`world`). Simulated labelers (`labeler`) stand in for
//! the paper's humans.
//!
//! Output directory:
//! ```text
//! pipeline.json                the settings of the run
//! data/                        the world's prompts (one file per split) and demonstrations
//! rankings/                    SFT samples ranked by the labelers (comparisons.jsonl), held-out samples
//! corpus/train.bin             pretraining tokens
//! pretrained/ sft/ rm/         HF checkpoints and metrics.jsonl of each stage (stage.json: finished)
//! ppo/ ppo_ptx/                policy/ and value/ checkpoints, metrics.jsonl
//! results.json, report.html    the figures (see `results`), and one self-contained page with curves
//! samples.json                 every model's response to a few held-out prompts
//! ```

pub mod config;
pub mod corpus;
pub mod evaluate;
pub mod labeler;
pub mod report;
pub mod stages;
pub mod world;

pub use config::PipelineConfig;
pub use evaluate::Results;

use anyhow::Result;
use corpus::Corpus;
use models::Tokenizer;
use rand::rngs::StdRng;
use rand::SeedableRng;
use stages::{key_of, Stage};
use std::path::Path;
use std::time::Instant;

/// Part of every stage's key: a new release retrains rather than reuse an older one's stages.
const CODE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the pipeline reports progress (the CLI draws progress bars; tests stay silent).
pub trait Progress {
    fn begin(&mut self, stage: &str, total: u64, what: &str);
    fn update(&mut self, done: u64, message: String);
    fn end(&mut self, summary: String);
    /// A stage found finished in the output directory with the same settings.
    fn reused(&mut self, stage: &str);
    /// A finding worth a line of its own between stages.
    fn note(&mut self, _line: &str) {}
}

/// No output.
pub struct Silent;

impl Progress for Silent {
    fn begin(&mut self, _: &str, _: u64, _: &str) {}
    fn update(&mut self, _: u64, _: String) {}
    fn end(&mut self, _: String) {}
    fn reused(&mut self, _: &str) {}
}

/// Run every stage into `out`, write results.json, samples.json and report.html, and return the
/// results.
pub fn run(cfg: &PipelineConfig, out: &Path, progress: &mut dyn Progress) -> Result<Results> {
    Ok(run_until(cfg, out, progress, Until::All)?.expect("a whole run has results"))
}

/// Where a run may stop early (to tune one stage: the finished ones are reused next time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Until {
    Sft,
    Rm,
    All,
}

impl std::str::FromStr for Until {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Until> {
        match s {
            "sft" => Ok(Until::Sft),
            "rm" => Ok(Until::Rm),
            "all" => Ok(Until::All),
            _ => anyhow::bail!("{s:?}: expected sft, rm or all"),
        }
    }
}

/// The world's prompts of a run, in disjoint splits.
pub struct Splits {
    pub eval: Vec<world::Task>,
    pub ppo: Vec<world::Task>,
    pub rm_eval: Vec<world::Task>,
    pub rm: Vec<world::Task>,
    pub sft: Vec<world::Task>,
    /// The sizes above, in that order (part of the stage keys).
    pub sizes: [usize; 5],
}

impl Splits {
    /// Held-out splits first, so their prompts never depend on the other splits' sizes.
    pub fn of(cfg: &PipelineConfig) -> Splits {
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x0077_0e1d);
        let sizes = [cfg.eval_prompts, cfg.ppo_prompts, cfg.rm_eval_prompts, cfg.rm_prompts, cfg.sft_prompts];
        let mut s = world::disjoint_splits(&sizes, &mut rng).into_iter();
        let mut next = || s.next().expect("one split per size");
        Splits { eval: next(), ppo: next(), rm_eval: next(), rm: next(), sft: next(), sizes }
    }
}

/// `run`, stopping after `until` (no results unless it ran to the end).
pub fn run_until(cfg: &PipelineConfig, out: &Path, progress: &mut dyn Progress, until: Until) -> Result<Option<Results>> {
    let t0 = Instant::now();
    // Settings that contradict each other fail before any stage runs.
    if cfg.rm_from_large_sft && cfg.large_model.is_none() {
        anyhow::bail!("rm_from_large_sft needs a large_model (the paper preset has one)");
    }
    if cfg.rm_from_large_sft && cfg.rm_sft_epochs.is_some() {
        anyhow::bail!("rm_sft_epochs and rm_from_large_sft both choose the reward model's start: set one");
    }
    if cfg.rm_sft_epochs == Some(0) {
        anyhow::bail!("rm_sft_epochs = 0: the reward model's own SFT model needs at least 1 epoch (or leave it unset)");
    }
    let device = cfg.device()?;
    if cfg.bf16 && !device.is_cuda() {
        anyhow::bail!("bf16: autocast applies to CUDA matmuls and attention; the CPU engine is f32 (set device to cuda)");
    }
    // Every op of the run is issued from this thread, so one guard covers all stages.
    let _autocast = cfg.bf16.then(engine::autocast_bf16);
    std::fs::create_dir_all(out)?;
    engine::safetensors::write_atomic(&out.join("pipeline.json"), serde_json::to_string_pretty(cfg)?.as_bytes())?;
    let tok = Tokenizer::bytes();
    let mut seconds: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();

    let Splits { eval: eval_tasks, ppo: ppo_tasks, rm_eval: rm_eval_tasks, rm: rm_tasks, sft: sft_tasks, sizes } = Splits::of(cfg);
    let mut demo_rng = StdRng::seed_from_u64(cfg.seed ^ 0xde30);
    let demos: Vec<crate::data::Demonstration> = sft_tasks.iter().map(|t| crate::data::Demonstration { prompt: t.prompt.clone(), response: labeler::demonstrate(t, cfg.labelers.demo_slip, &mut demo_rng) }).collect();
    report::write_data(&out.join("data"), &[("sft", &sft_tasks), ("rm", &rm_tasks), ("rm_eval", &rm_eval_tasks), ("ppo", &ppo_tasks), ("eval", &eval_tasks)], &sft_tasks, &demos)?;
    let corpus = Corpus::build(&tok, &out.join("corpus"), cfg.ptx_eval_tokens)?;

    // Pretraining and SFT (and, for `paper`, the same for a larger model).
    let world_key = key_of(&(cfg.seed, sizes, world::VERSION, cfg.labelers.demo_slip));
    // Everything downstream keys on the pretrained model: a CUDA run's keys differ from here on
    // (and a bf16 run's from an f32 one's).
    let on_device = |key: String| match (device.is_cuda(), cfg.bf16) {
        (false, _) => key,
        (true, false) => key_of(&(key, format!("{device:?}"))),
        (true, true) => key_of(&(key, format!("{device:?}"), "bf16")),
    };
    let mut stage = Stage::new(out, "pretrained", on_device(key_of(&("pretrain", CODE_VERSION, cfg.seed, &cfg.model, &cfg.pretrain))));
    let (pretrained, s) = stages::pretrain(cfg, &cfg.model, cfg.pretrain.steps, &corpus, &mut stage, progress)?;
    seconds.insert("pretrain".into(), s);
    let pretrained_key = stage.key.clone();
    let mut stage = Stage::new(out, "sft", key_of(&("sft", &pretrained_key, &world_key, &cfg.sft)));
    let (sft, s) = stages::sft(&cfg.sft, &pretrained, &demos, &mut stage, progress)?;
    seconds.insert("sft".into(), s);
    let sft_key = stage.key.clone();
    if until == Until::Sft {
        return Ok(None);
    }
    let (large, large_key) = match &cfg.large_model {
        Some(shape) => {
            let mut stage = Stage::new(out, "large_pretrained", on_device(key_of(&("pretrain", CODE_VERSION, cfg.seed, shape, &cfg.pretrain, cfg.large_pretrain_steps))));
            let (p, s1) = stages::pretrain(cfg, shape, cfg.large_pretrain_steps, &corpus, &mut stage, progress)?;
            let mut stage = Stage::new(out, "large_sft", key_of(&("sft", &stage.key, &world_key, &cfg.sft)));
            let (m, s2) = stages::sft(&cfg.sft, &p, &demos, &mut stage, progress)?;
            seconds.insert("large_pretrain_and_sft".into(), s1 + s2);
            (Some(m), Some(stage.key.clone()))
        }
        None => (None, None),
    };

    // The reward model, from rankings of SFT samples.
    let mut stage = Stage::new(out, "rankings", key_of(&("rankings", &sft_key, world::SCORE_VERSION, &cfg.labelers, cfg.rm_sample_temperatures, cfg.max_new_tokens)));
    let (data, s) = stages::rm_data(cfg, &sft, 1, &rm_tasks, &rm_eval_tasks, &mut stage, progress)?;
    let stage_key_of_rankings = stage.key.clone();
    seconds.insert("rankings".into(), s);
    // The paper's reward model is its own (6B) SFT model, not the policy's: `rm_from_large_sft`
    // (the larger model's), or `rm_sft_epochs` (one of the policy's size, trained longer).
    let rm_sft = match cfg.rm_sft_epochs {
        Some(epochs) => {
            let sft_cfg = crate::sft::SftConfig { epochs, ..cfg.sft.clone() };
            let mut stage = Stage::new(out, "rm_sft", key_of(&("sft", &pretrained_key, &world_key, &sft_cfg)));
            let (m, s) = stages::sft(&sft_cfg, &pretrained, &demos, &mut stage, progress)?;
            seconds.insert("rm_sft".into(), s);
            Some((m, stage.key.clone()))
        }
        None => None,
    };
    let (rm_init, rm_init_key) = match (&large, cfg.rm_from_large_sft, &rm_sft) {
        (Some(l), true, _) => (l, large_key.as_ref().expect("a key with the model")),
        (_, _, Some((m, key))) => (m, key),
        _ => (&sft, &sft_key),
    };
    let rm_key = key_of(&("rm", &stage.key, rm_init_key, &cfg.rm, cfg.rm_normalize_gain));
    let mut stage = Stage::new(out, "rm", rm_key.clone());
    let (mut rm, mut rm_accuracy, s) = stages::reward_model(cfg, rm_init, &data, &mut stage, progress)?;
    seconds.insert("rm".into(), s);
    if until == Until::Rm && cfg.rlhf_rounds <= 1 {
        return Ok(None);
    }

    // The paper's steps 2 and 3, iterated (`rlhf_rounds`): the current policy's answers are ranked
    // too, and the next reward model learns from every ranking so far (SFT's first, so that its
    // normalization is still fitted on SFT samples). Its accuracy is still measured on the held-out
    // SFT samples; the policy's held-out samples show what the new rankings taught it.
    let prompts: Vec<Vec<u32>> = ppo_tasks.iter().map(|t| tok.encode(&t.prompt)).collect();
    let ppo_key = |rm_key: &str, gamma: f32, name: &str| key_of(&(name, rm_key, &cfg.ppo, gamma, cfg.ptx_curve_every, cfg.ptx_eval_tokens));
    let (mut rm_key, mut rankings_key, mut rankings) = (rm_key, stage_key_of_rankings, data.train.clone());
    for round in 2..=cfg.rlhf_rounds {
        let name = format!("ppo_round{}", round - 1);
        let mut stage = Stage::new(out, &name, ppo_key(&rm_key, 0.0, "ppo"));
        let (policy, s) = stages::ppo(cfg, 0.0, &sft, &rm, &prompts, &corpus, &mut stage, progress)?;
        seconds.insert(name, s);
        let name = format!("rankings_round{round}");
        let mut stage = Stage::new(out, &name, key_of(&("rankings", round, &stage.key, &rankings_key, world::SCORE_VERSION, &cfg.labelers, cfg.rm_sample_temperatures, cfg.max_new_tokens)));
        let (more, s) = stages::rm_data(cfg, &policy, round, &rm_tasks, &rm_eval_tasks, &mut stage, progress)?;
        seconds.insert(name, s);
        rankings_key = stage.key.clone();
        rankings.extend(more.train);
        let all = stages::RmData { train: rankings, eval: data.eval.clone(), labeler_agreement: data.labeler_agreement, labeler_gold_agreement: data.labeler_gold_agreement };
        let name = format!("rm_round{round}");
        rm_key = key_of(&("rm", round, &rankings_key, rm_init_key, &cfg.rm, cfg.rm_normalize_gain));
        let mut stage = Stage::new(out, &name, rm_key.clone());
        let (next, acc, s) = stages::reward_model(cfg, rm_init, &all, &mut stage, progress)?;
        seconds.insert(name, s);
        let (before, after) = (stages::gold_pair_accuracy(&rm, &more.eval)?, stages::gold_pair_accuracy(&next, &more.eval)?);
        progress.note(&format!("round {round}: on the policy's held-out samples the reward model orders {after:.3} of pairs as the gold score does ({before:.3} before)"));
        (rm, rm_accuracy, rankings) = (next, acc, all.train);
    }
    if until == Until::Rm {
        return Ok(None);
    }

    // PPO and PPO-ptx, from the same SFT model and the last reward model.
    let mut runs = Vec::new();
    for (name, gamma) in [("ppo", 0.0), ("ppo_ptx", cfg.gamma)] {
        let mut stage = Stage::new(out, name, ppo_key(&rm_key, gamma, name));
        let (policy, s) = stages::ppo(cfg, gamma, &sft, &rm, &prompts, &corpus, &mut stage, progress)?;
        seconds.insert(name.into(), s);
        runs.push(policy);
    }
    let [ppo, ppo_ptx]: [models::Gpt2; 2] = runs.try_into().map_err(|_| anyhow::anyhow!("two policies"))?;

    // Evaluation on held-out prompts, with the gold judge.
    let t = Instant::now();
    let models = evaluate::Models { pretrained: &pretrained, sft: &sft, ppo: &ppo, ppo_ptx: &ppo_ptx, large_sft: large.as_ref() };
    let (mut results, samples) = evaluate::evaluate(cfg, &models, &eval_tasks, &corpus, progress)?;
    results.rm_accuracy = rm_accuracy;
    results.labeler_agreement = data.labeler_agreement;
    results.labeler_gold_agreement = data.labeler_gold_agreement;
    seconds.insert("eval".into(), t.elapsed().as_secs_f64());
    seconds.insert("total".into(), t0.elapsed().as_secs_f64());
    results.seconds = seconds.into_iter().collect();
    results.save(out)?;
    engine::safetensors::write_atomic(&out.join("samples.json"), serde_json::to_string_pretty(&samples)?.as_bytes())?;
    report::write_html(out, cfg, &results, &samples)?;
    Ok(Some(results))
}
