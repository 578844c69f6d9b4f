//! A GPT-2 training step on another device against the same step on the CPU: the loss, every
//! parameter's gradient and the parameters after one AdamW step, from the same weights and
//! tokens. `instructgpt selftest --device cuda` reports it; on the CPU it checks itself.

use crate::{lm_targets, Gpt2, Gpt2Config, KvCache};
use engine::optim::{AdamW, AdamWConfig};
use engine::conformance::Compared;
use engine::{Device, Result, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// (what, on `device`, on the CPU) for: the loss, each gradient, each parameter after the step;
/// with `bf16` the device's step runs under `autocast_bf16` (the CPU's f32 is the reference).
pub fn train_step(device: Device, config: Gpt2Config, batch: usize, time: usize, seed: u64, bf16: bool) -> Result<Vec<Compared>> {
    let model = Gpt2::new(config.clone(), seed)?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let ids: Vec<i64> = (0..batch * time).map(|_| rng.gen_range(0..config.vocab_size as i64)).collect();
    let ids = Tensor::new(ids, &[batch, time])?;
    let targets = lm_targets(&ids)?;
    let run = |m: &Gpt2| -> Result<Vec<(String, Vec<f32>)>> {
        let loss = m.loss(&ids, &targets)?;
        let grads = loss.backward()?;
        let mut out = vec![("loss".to_string(), loss.to_vec_f32()?)];
        for (name, p) in m.params() {
            let g = grads.get(p).map(|g| g.to_vec_f32()).transpose()?.unwrap_or_default();
            out.push((format!("grad {name}"), g));
        }
        // An eps above every |g| keeps the first step near-linear in g: with 1e-8 it is
        // lr·sign(g), and a gradient at rounding level could flip sign between devices; with
        // 1e-2 under bias gradients of 0.3, g/(|g| + eps) magnified a bf16 gradient's error
        // 0.4% into 7% of the step (the emulated GPU's v4 matmuls failed the check so).
        let mut opt = AdamW::new(m.param_groups(0.1), AdamWConfig { eps: 1.0, ..AdamWConfig::default() })?;
        opt.step(&grads, 1e-3)?;
        for (name, p) in m.params() {
            out.push((format!("after AdamW {name}"), p.to_vec_f32()?));
        }
        Ok(out)
    };
    let got = {
        let _autocast = bf16.then(engine::autocast_bf16);
        run(&model.copy()?.to_device(device)?)? // its own weights: the step changes them
    };
    let want = run(&model)?;
    Ok(got.into_iter().zip(want).map(|((name, g), (_, w))| (name, g, w)).collect())
}

/// Sampling's path on `device` against the CPU: a left-padded batch through the KV cache (a
/// prefill, then one token at a time, the cache growing past its first capacity): each call's
/// logits, and the prefill's log-probabilities of the next tokens (the fused token_logprobs, as
/// PPO scores its rollouts); with `bf16` under `autocast_bf16` on the device. In f32 also
/// `generate`, greedy and sampled at temperature 1 (on a GPU it chooses on the device, from the
/// CPU's stream of uniforms): its tokens and log-probabilities.
pub fn decode(device: Device, config: Gpt2Config, seed: u64, bf16: bool) -> Result<Vec<Compared>> {
    let model = Gpt2::new(config.clone(), seed)?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0xdec0);
    let (batch, prefix, steps, pad) = (2, 7, 4, [3usize, 0]);
    let mut token = || rng.gen_range(0..config.vocab_size as i64);
    let ids: Vec<i64> = (0..batch * prefix).map(|_| token()).collect();
    let next: Vec<Vec<i64>> = (0..steps).map(|_| (0..batch).map(|_| token()).collect()).collect();
    let chosen: Vec<i64> = (0..batch * prefix).map(|i| if i % prefix + 1 < prefix { ids[i + 1] } else { next[0][i / prefix] }).collect();
    let run = |m: &Gpt2| -> Result<Vec<(String, Vec<f32>)>> {
        let _no_grad = engine::no_grad();
        let mut cache = KvCache::with_capacity(8);
        let logits = m.forward_padded(&Tensor::new(ids.clone(), &[batch, prefix])?, Some(&pad), Some(&mut cache))?;
        let logprobs = logits.token_logprobs(&Tensor::new(chosen.clone(), &[batch, prefix])?, 1.0)?; // PPO's fused path
        let mut out = vec![("prefill logits".to_string(), logits.to_vec_f32()?), ("prefill log-probs".to_string(), logprobs.to_vec_f32()?)];
        for (s, tokens) in next.iter().enumerate() {
            let logits = m.forward_padded(&Tensor::new(tokens.clone(), &[batch, 1])?, Some(&pad), Some(&mut cache))?;
            out.push((format!("step {s} logits"), logits.to_vec_f32()?));
        }
        if !bf16 {
            // bf16's rounding may rightly change a close choice; f32's should not.
            let prompts: Vec<Vec<u32>> = (0..batch).map(|r| ids[r * prefix + pad[r]..(r + 1) * prefix].iter().map(|&t| t as u32).collect()).collect();
            for (what, temperature) in [("greedy", 0.0), ("sampled", 1.0)] {
                let cfg = crate::GenerateConfig { temperature, seed, ..crate::GenerateConfig::greedy(steps) };
                let g = crate::generate(m, &prompts, &cfg)?;
                out.push((format!("{what} generate: tokens"), g.tokens.concat().iter().map(|&t| t as f32).collect()));
                out.push((format!("{what} generate: log-probs"), g.logprobs.concat()));
            }
        }
        Ok(out)
    };
    let got = {
        let _autocast = bf16.then(engine::autocast_bf16);
        run(&model.to_device(device)?)?
    };
    let want = run(&model)?;
    Ok(got.into_iter().zip(want).map(|((name, g), (_, w))| (name, g, w)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_on_the_cpu_agrees_with_itself() {
        let rows = decode(Device::Cpu, Gpt2Config::custom(2, 2, 32, 16, 50), 4, false).unwrap();
        assert_eq!(rows.len(), 2 + 4 + 4);
        for (what, got, want) in rows {
            assert!(!got.is_empty() && got.iter().all(|x| x.is_finite()) && got == want, "{what}");
        }
    }

    #[test]
    fn on_the_cpu_the_step_agrees_with_itself_and_covers_every_parameter() {
        let config = Gpt2Config::custom(2, 2, 32, 16, 50);
        let rows = train_step(Device::Cpu, config.clone(), 2, 9, 3, false).unwrap();
        let n = Gpt2::new(config, 3).unwrap().params().len();
        assert_eq!(rows.len(), 1 + 2 * n);
        for (what, got, want) in rows {
            assert!(!got.is_empty() && got == want, "{what}");
            if what.starts_with("grad") {
                assert!(got.iter().any(|&x| x != 0.0), "{what}: a gradient reaches it");
            }
        }
    }
}
