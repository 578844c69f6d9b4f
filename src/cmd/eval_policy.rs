//! `instructgpt eval-policy`: a policy against a baseline, as the paper evaluates: the win rate
//! under the reward model (same prompts, same seeds), the KL to the reference on the policy's own
//! samples (k1, what PPO's penalty optimizes) and, with `--ptx-text`, each model's LM loss on
//! held-out pretraining text (the alignment tax).

use super::model_arg::{check_vocab, load_checkpoint};
use anyhow::{bail, Context, Result};
use models::{GenerateConfig, Tokenizer};
use rlhf::data::{load_prompts, LoadOptions};
use rlhf::eval::{kl_to_reference, lm_loss, win_rate};
use rlhf::reward::RewardModel;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct EvalPolicyArgs {
    /// The policy checkpoint (HF layout, e.g. `ppo --out`/policy).
    #[arg(long)]
    pub policy: PathBuf,
    /// The baseline checkpoint (e.g. the SFT model).
    #[arg(long)]
    pub baseline: PathBuf,
    /// The KL reference (default: the baseline).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Reward-model checkpoint: the judge.
    #[arg(long)]
    pub rm: PathBuf,
    /// Held-out prompts (JSONL {"prompt"}, plain or .gz).
    #[arg(long)]
    pub prompts: PathBuf,
    /// Held-out pretraining text: each model's LM loss on it.
    #[arg(long)]
    pub ptx_text: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use at most this many prompts (the first ones).
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long)]
    pub json: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: EvalPolicyArgs) -> Result<()> {
    let device = super::model_arg::device(&args.device)?;
    let policy = load_checkpoint(&args.policy)?.to_device(device)?;
    let tok = Tokenizer::for_config(policy.config());
    let baseline = load_checkpoint(&args.baseline)?.to_device(device)?;
    let reference = match &args.reference {
        Some(r) => load_checkpoint(r)?.to_device(device)?,
        None => baseline.clone(),
    };
    let rm = RewardModel::load(&args.rm)?.to_device(device)?;
    let n_pos = [&policy, &baseline, &reference].iter().map(|m| m.config().n_positions).min().unwrap_or(0);
    let loaded = load_prompts(&args.prompts, LoadOptions::default())?;
    let mut prompts = Vec::new();
    let mut left_out = 0;
    for p in &loaded.items {
        if args.limit.is_some_and(|l| prompts.len() >= l) {
            break;
        }
        let ids = tok.encode(&p.prompt);
        check_vocab(&policy, &ids)?;
        check_vocab(&baseline, &ids)?;
        if ids.is_empty() || ids.len() + args.max_new_tokens > n_pos {
            left_out += 1;
            continue;
        }
        prompts.push(ids);
    }
    if prompts.is_empty() {
        bail!("{}: no usable prompt (non-empty and leaving room for {} new tokens in {n_pos} positions)", args.prompts.display(), args.max_new_tokens);
    }
    eprintln!("eval-policy: {} prompts ({left_out} left out as empty or too long)", prompts.len());
    let cfg = GenerateConfig { max_new_tokens: args.max_new_tokens, temperature: args.temperature, seed: args.seed, eos_token_id: Some(tok.eot()), pad_token_id: tok.eot(), ..Default::default() };
    let wr = win_rate(&policy, &baseline, &prompts, &rm, &cfg)?;
    let kl_policy = kl_to_reference(&policy, &reference, &prompts, &cfg)?;
    let kl_baseline = kl_to_reference(&baseline, &reference, &prompts, &cfg)?;
    let lm = match &args.ptx_text {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read as UTF-8 text", path.display()))?;
            let ids = tok.encode(&text);
            Some((lm_loss(&policy, &ids, policy.config().n_positions)?, lm_loss(&baseline, &ids, baseline.config().n_positions)?, ids.len()))
        }
        None => None,
    };
    if args.json {
        let mut out = serde_json::json!({
            "prompts": prompts.len(),
            "win_rate": wr,
            "kl_to_reference": { "policy": kl_policy, "baseline": kl_baseline },
        });
        if let Some((p, b, n)) = lm {
            out["lm_loss"] = serde_json::json!({ "policy": p, "baseline": b, "alignment_tax": p - b, "tokens": n });
        }
        println!("{out}");
    } else {
        println!("win rate vs baseline: {:.3} ({} wins, {} ties, {} losses over {} prompts; ties count half)", wr.rate, wr.wins, wr.ties, wr.losses, prompts.len());
        println!("KL to reference (k1, summed over tokens, mean over samples): policy {kl_policy:.4}, baseline {kl_baseline:.4}");
        if let Some((p, b, n)) = lm {
            println!("LM loss on {n} tokens of held-out text: policy {p:.4}, baseline {b:.4} (alignment tax {:+.4})", p - b);
        }
    }
    Ok(())
}
