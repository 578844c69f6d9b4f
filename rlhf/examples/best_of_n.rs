//! How much better could a policy get, and can the reward model see it? For a finished pipeline
//! run: the SFT model's mean gold score on the held-out prompts at several temperatures, the gold
//! score of the best of n samples as the reward model picks it and as the gold judge would (an
//! oracle), and the win rate of each pick against one SFT sample at temperature 1 (the
//! evaluation's baseline), and the reward model's mean score of all samples and of its picks. If best-of-n by the reward model gains little, PPO cannot gain much.
//!
//! `cargo run --release -p rlhf --example best_of_n -- runs/pipeline [sft|ppo/policy|...] [n]`

use anyhow::{Context, Result};
use models::{hf, Tokenizer};
use rlhf::pipeline::{evaluate::win_rate, stages, PipelineConfig, Splits};
use rlhf::reward::RewardModel;
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().context("usage: best_of_n RUN_DIR [MODEL] [N]")?);
    let model = args.next().unwrap_or_else(|| "sft".into());
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(8);
    let path = dir.join("pipeline.json");
    let cfg: PipelineConfig = serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?).with_context(|| format!("{}: not a pipeline config", path.display()))?;
    let eval = Splits::of(&cfg).eval;
    let policy = hf::load(dir.join(&model))?;
    let rm = RewardModel::load(dir.join("rm"))?;
    let tok = Tokenizer::bytes();
    let prompts: Vec<Vec<u32>> = eval.iter().map(|t| tok.encode(&t.prompt)).collect();
    let gold_of = |texts: &[String]| -> Vec<f64> { texts.iter().zip(&eval).map(|(r, t)| t.score(r)).collect() };
    let baseline = gold_of(&stages::sample_texts(&policy, &prompts, &stages::gen_config(&cfg, 1.0, 77))?);
    let win = |g: &[f64]| win_rate(g, &baseline).rate;
    println!("{model} of {}, {} held-out prompts; win rates against one {model} sample at temperature 1", dir.display(), eval.len());
    println!("{:>11} {:>10} {:>13} {:>10} {:>9} {:>12} {:>10} {:>8} {:>10}", "temperature", "mean gold", "best by RM", "oracle", "win: one", "win: RM pick", "win: oracle", "mean RM", "RM of pick");
    for temperature in [0.0f32, 0.3, 0.6, 1.0] {
        let k = if temperature == 0.0 { 1 } else { n };
        let mut samples: Vec<Vec<String>> = vec![Vec::new(); eval.len()];
        for s in 0..k {
            for (i, t) in stages::sample_texts(&policy, &prompts, &stages::gen_config(&cfg, temperature, 1000 + s as u64))?.into_iter().enumerate() {
                samples[i].push(t);
            }
        }
        let (mut one, mut picked, mut oracle, mut mean) = (Vec::new(), Vec::new(), Vec::new(), 0.0);
        let (mut rm_mean, mut rm_pick) = (0.0, 0.0);
        for (task, texts) in eval.iter().zip(&samples) {
            let gold: Vec<f64> = texts.iter().map(|r| task.score(r)).collect();
            let scores = stages::rm_scores(&rm, &task.prompt, texts)?;
            let best = (0..texts.len()).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).expect("k >= 1");
            mean += gold.iter().sum::<f64>() / gold.len() as f64;
            rm_mean += scores.iter().map(|&s| s as f64).sum::<f64>() / scores.len() as f64;
            rm_pick += scores[best] as f64;
            one.push(gold[0]);
            picked.push(gold[best]);
            oracle.push(gold.iter().copied().fold(0.0, f64::max));
        }
        let avg = |g: &[f64]| g.iter().sum::<f64>() / g.len() as f64;
        let per_prompt = |x: f64| x / eval.len() as f64;
        println!(
            "{temperature:>11} {:>10.3} {:>13.3} {:>10.3} {:>9.3} {:>12.3} {:>10.3} {:>8.3} {:>10.3}",
            per_prompt(mean),
            avg(&picked),
            avg(&oracle),
            win(&one),
            win(&picked),
            win(&oracle),
            per_prompt(rm_mean),
            per_prompt(rm_pick)
        );
    }
    Ok(())
}
