//! InstructGPT's three stages on our engine and GPT-2: supervised fine-tuning on demonstrations,
//! a reward model trained on K-wise rankings (the paper's loss), and PPO with a per-token KL
//! penalty to the SFT policy, plus PPO-ptx (gamma times the pretraining loss in one objective).

pub mod data;
pub mod eval;
pub mod pipeline;
mod fingerprint;
pub mod ppo;
pub mod reward;
pub mod sft;

pub use fingerprint::DataFingerprint;
