//! InstructGPT's three stages: SFT, the K-wise reward model, PPO and PPO-ptx (issue 5).
