//! PPO and PPO-ptx: the math (`math`, checked against fixtures/rlhf/ppo.json) and the trainer.

pub mod math;
pub mod trainer;

pub use math::{compute_advantages, ppo_loss, Advantages, KlController, LossInputs, PpoHyper, PpoLoss};
