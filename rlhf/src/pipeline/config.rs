//! The pipeline's settings and its presets: `quick` (minutes on a laptop CPU), `paper` (adds the
//! paper's "small aligned model beats a large unaligned one"), and `smoke` (CI: a minute, checks
//! the plumbing, not the figures).

use crate::ppo::trainer::PpoConfig;
use crate::reward::RmConfig;
use crate::sft::SftConfig;
use anyhow::{bail, Result};
use models::pretrain::PretrainConfig;
use serde::{Deserialize, Serialize};

/// A byte-vocabulary GPT-2's shape.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelShape {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub n_positions: usize,
}

impl ModelShape {
    pub fn config(&self) -> models::Gpt2Config {
        models::Gpt2Config::bytes(self.n_layer, self.n_head, self.n_embd, self.n_positions)
    }
}

/// The simulated labelers (see `labeler`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LabelerConfig {
    pub count: usize,
    /// Noise on each perceived gold score (std).
    pub noise: f64,
    /// Spread of the labelers' length tastes (gold points per 10 characters, std).
    pub taste_spread: f64,
    /// K responses per ranking, uniform in k_min..=k_max (the paper: 4..9).
    pub k_min: usize,
    pub k_max: usize,
    /// Share of demonstrations written in one of the labelers' habits (`labeler::HABITS`), not
    /// in the rubric's terse form. Missing in pipeline.json files written before it existed:
    /// those worlds had none.
    #[serde(default)]
    pub demo_slip: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PipelineConfig {
    pub preset: String,
    pub seed: u64,
    pub model: ModelShape,
    /// `paper`: a larger model trained by pretraining and SFT only, for "small_ppo_ptx_vs_large_sft".
    pub large_model: Option<ModelShape>,
    pub pretrain: PretrainConfig,
    /// Steps for the large model's pretraining (the same tokens per step).
    pub large_pretrain_steps: u64,
    /// Prompts per split; no prompt is in two splits.
    pub sft_prompts: usize,
    pub rm_prompts: usize,
    pub rm_eval_prompts: usize,
    pub ppo_prompts: usize,
    pub eval_prompts: usize,
    pub sft: SftConfig,
    pub labelers: LabelerConfig,
    /// Temperatures of the SFT samples that labelers rank: each prompt's K responses spread over
    /// [lo, hi].
    pub rm_sample_temperatures: [f32; 2],
    pub rm: RmConfig,
    /// Train the reward model from the large SFT model (`paper`'s), not the policy's own.
    pub rm_from_large_sft: bool,
    /// Train the reward model from an SFT model of the policy's size trained for this many epochs
    /// (its own stage, `rm_sft`), not from the policy's SFT model: a stronger judge than the
    /// policy is a writer, as the paper's 6B reward model is for its 1.3B policy.
    #[serde(default)]
    pub rm_sft_epochs: Option<u64>,
    /// Also scale the reward model so that SFT samples score with std 1 (not only mean 0): the KL
    /// coefficient then means the same whatever scale the reward model learned.
    pub rm_normalize_gain: bool,
    /// The paper's steps 2 and 3, iterated: after each round but the last, PPO's policy answers
    /// the reward-model prompts, the labelers rank those answers too, and a new reward model
    /// learns from every ranking so far (1: one round, the reward model sees SFT samples only).
    #[serde(default = "one_u64")]
    pub rlhf_rounds: u64,
    /// PPO settings; PPO-ptx is the same with `ptx_coef` set to `gamma`.
    pub ppo: PpoConfig,
    /// PPO-ptx's gamma.
    pub gamma: f32,
    /// Longest response (bytes) anywhere in the pipeline.
    pub max_new_tokens: usize,
    /// Sampling temperature of the evaluation (0 = greedy).
    pub eval_temperature: f32,
    /// Responses each model samples per held-out prompt: every figure of the evaluation is a mean
    /// over all of them (more samples, less sampling noise in the win rates).
    #[serde(default = "one")]
    pub eval_samples: usize,
    /// Held-out pretraining tokens for the ptx loss (the alignment tax).
    pub ptx_eval_tokens: usize,
    /// Every this many PPO iterations, the held-out ptx loss for the curves (0 = only at the end).
    pub ptx_curve_every: u64,
    /// Where the models train and sample: `cpu`, `cuda` or `cuda:N`. Only a device other than the
    /// CPU enters the stage keys: CPU runs keep theirs, a CUDA run has stages of its own.
    #[serde(default = "cpu")]
    pub device: String,
    /// Mixed precision on CUDA (as torch.autocast): matmuls and attention take bf16 operands and
    /// accumulate in f32; weights, optimizer state and checkpoints stay f32. A bf16 run's stages
    /// are its own (false in pipeline.json files written before it existed).
    #[serde(default)]
    pub bf16: bool,
}

fn cpu() -> String {
    "cpu".into()
}

fn one_u64() -> u64 {
    1
}

fn one() -> usize {
    1
}

impl PipelineConfig {
    pub fn device(&self) -> Result<engine::Device> {
        Ok(self.device.parse()?)
    }

    /// Override one setting by its dotted path, e.g. `rm.lr=1e-3` or `model.n_layer=6`; the value
    /// is read as JSON (a bare word is a string).
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let Some((path, value)) = assignment.split_once('=') else { bail!("--set {assignment:?}: expected key=value") };
        let value: serde_json::Value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.into()));
        let mut root = serde_json::to_value(&*self)?;
        let mut node = &mut root;
        for part in path.split('.') {
            node = match node.get_mut(part) {
                Some(n) => n,
                None => bail!("--set {assignment:?}: no setting {path:?} (see pipeline.json in a run's output for every name)"),
            };
        }
        *node = value;
        *self = serde_json::from_value(root).map_err(|e| anyhow::anyhow!("--set {assignment:?}: {e}"))?;
        Ok(())
    }

    pub fn preset(name: &str, seed: u64) -> Result<PipelineConfig> {
        let model = ModelShape { n_layer: 4, n_head: 4, n_embd: 128, n_positions: 128 };
        let max_new_tokens = 48;
        let quick = PipelineConfig {
            preset: "quick".into(),
            seed,
            model,
            large_model: None,
            pretrain: PretrainConfig { steps: 1000, batch: 16, seq_len: 128, lr: 2e-3, min_lr: 2e-4, warmup: 50, weight_decay: 0.1, beta2: 0.95, grad_clip: 1.0, eval_every: 100, eval_batches: 4, checkpoint_every: 500, val_fraction: 0.05, seed },
            large_pretrain_steps: 0,
            sft_prompts: 12000,
            rm_prompts: 3000,
            rm_eval_prompts: 120,
            ppo_prompts: 800,
            eval_prompts: 240,
            sft: SftConfig { epochs: 2, batch: 64, lr: 1e-3, min_lr: 1e-4, warmup_frac: 0.05, weight_decay: 0.1, beta2: 0.95, grad_clip: 1.0, max_len: 0, min_prompt_tokens: 64, val_fraction: 0.05, eval_every: 0, checkpoint_every: 0, seed },
            labelers: LabelerConfig { count: 5, noise: 0.18, taste_spread: 0.05, k_min: 4, k_max: 9, demo_slip: 0.4 },
            rm_sample_temperatures: [0.5, 1.3],
            rm_normalize_gain: true,
            rlhf_rounds: 1,
            rm_from_large_sft: false,
            rm_sft_epochs: None,
            rm: RmConfig { epochs: 2, batch: 8, lr: 3e-4, min_lr: 3e-5, warmup: 10, weight_decay: 0.0, grad_clip: 1.0, eval_every: 50, seed, ..RmConfig::default() },
            ppo: PpoConfig {
                iterations: 100,
                rollout_batch: 32,
                minibatch: 8,
                ppo_epochs: 2,
                lr: 1e-4,
                max_new_tokens,
                temperature: 1.0,
                eos_token_id: Some(models::tokenizer::BYTES_EOT),
                no_eos_score: Some(-1.0),
                init_kl_coef: 0.2,
                ptx_batch: 4,
                ptx_seq_len: 128,
                seed,
                ..PpoConfig::default()
            },
            gamma: 0.01,
            max_new_tokens,
            eval_temperature: 1.0,
            eval_samples: 4,
            ptx_eval_tokens: 32 * 1024,
            ptx_curve_every: 10,
            device: cpu(),
            bf16: false,
        };
        let cfg = match name {
            "quick" => quick,
            "paper" => PipelineConfig {
                preset: "paper".into(),
                large_model: Some(ModelShape { n_layer: 8, n_head: 8, n_embd: 256, n_positions: 128 }),
                large_pretrain_steps: 1000,
                ppo: PpoConfig { iterations: 150, ..quick.ppo.clone() },
                eval_prompts: 400,
                ..quick
            },
            "smoke" => PipelineConfig {
                preset: "smoke".into(),
                model: ModelShape { n_layer: 2, n_head: 2, n_embd: 32, n_positions: 96 },
                pretrain: PretrainConfig { steps: 20, batch: 4, seq_len: 64, eval_every: 10, eval_batches: 2, checkpoint_every: 10, ..quick.pretrain.clone() },
                sft_prompts: 64,
                rm_prompts: 16,
                rm_eval_prompts: 8,
                ppo_prompts: 16,
                eval_prompts: 16,
                sft: SftConfig { epochs: 1, batch: 16, ..quick.sft.clone() },
                rm: RmConfig { epochs: 1, batch: 4, eval_every: 2, ..quick.rm.clone() },
                ppo: PpoConfig { iterations: 2, rollout_batch: 8, minibatch: 4, max_new_tokens: 16, ptx_batch: 2, ptx_seq_len: 64, ..quick.ppo.clone() },
                max_new_tokens: 16,
                ptx_eval_tokens: 2048,
                ptx_curve_every: 1,
                eval_samples: 1,
                ..quick
            },
            other => bail!("--preset {other:?}: expected quick, paper or smoke"),
        };
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipeline.json written before a setting existed still reads, with the value that setting
    /// had then (no demonstration slips, one answer per prompt, the policy's SFT as RM start).
    #[test]
    fn older_pipeline_json_reads_with_the_old_behaviour() {
        let mut json = serde_json::to_value(PipelineConfig::preset("quick", 3).unwrap()).unwrap();
        json["labelers"].as_object_mut().unwrap().remove("demo_slip");
        json.as_object_mut().unwrap().remove("eval_samples");
        json.as_object_mut().unwrap().remove("rm_sft_epochs");
        json.as_object_mut().unwrap().remove("rlhf_rounds");
        json.as_object_mut().unwrap().remove("bf16");
        let old: PipelineConfig = serde_json::from_value(json).unwrap();
        assert_eq!((old.labelers.demo_slip, old.eval_samples, old.rm_sft_epochs, old.rlhf_rounds, old.bf16), (0.0, 1, None, 1, false));
        assert_eq!(PipelineConfig::preset("quick", 3).unwrap().labelers.demo_slip, 0.4, "today's default differs");
    }

    /// pipeline.json files from before the device setting read as CPU runs; a bad device is an
    /// error that names it.
    #[test]
    fn the_device_reads_as_cpu_from_older_files() {
        let mut cfg = PipelineConfig::preset("smoke", 0).unwrap();
        let mut json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json.as_object_mut().unwrap().remove("device").unwrap(), "cpu");
        assert_eq!(serde_json::from_value::<PipelineConfig>(json).unwrap().device().unwrap(), engine::Device::Cpu);
        cfg.set("device=cuda:1").unwrap();
        assert_eq!(cfg.device().unwrap(), engine::Device::Cuda(1));
        assert_eq!(serde_json::to_value(&cfg).unwrap()["device"], "cuda:1");
        cfg.set("device=tpu").unwrap();
        assert!(cfg.device().unwrap_err().to_string().contains("\"tpu\""));
    }
}
