//! Batched autoregressive sampling: greedy, temperature, top-k, top-p; per-row EOS; ragged
//! prompts left-padded (so every row's next token sits in the last column and one KV cache serves
//! the batch). Runs under `no_grad`: no graph, and nothing but the cache stays alive.

use crate::gpt2::{Gpt2, KvCache};
use engine::{Error, Result, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// A row stops after sampling this token (None: never).
    pub eos_token_id: Option<u32>,
    /// Fills a row's outputs after it stopped (never fed to the model).
    pub pad_token_id: u32,
    pub seed: u64,
    /// Off: recompute the whole sequence every step (the reference the cache is tested against).
    pub use_cache: bool,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_new_tokens: 32,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            eos_token_id: Some(crate::tokenizer::EOT),
            pad_token_id: crate::tokenizer::EOT,
            seed: 0,
            use_cache: true,
        }
    }
}

impl GenerateConfig {
    pub fn greedy(max_new_tokens: usize) -> Self {
        GenerateConfig { max_new_tokens, temperature: 0.0, ..Default::default() }
    }
}

/// What `generate` sampled, per row. Every row has the same length (the number of steps run);
/// after a row's EOS its tokens are `pad_token_id` and its log-probs 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub tokens: Vec<Vec<u32>>,
    /// log p(token) under softmax(logits / temperature) before top-k/top-p filtering (the
    /// policy's own probability, what PPO's ratio needs); with temperature 0, under softmax(logits).
    pub logprobs: Vec<Vec<f32>>,
    /// Tokens generated per row, its EOS included.
    pub lengths: Vec<usize>,
}

/// Continue each prompt (non-empty token ids; lengths may differ).
pub fn generate(model: &Gpt2, prompts: &[Vec<u32>], cfg: &GenerateConfig) -> Result<Generation> {
    // On a GPU the choice is made there when no top-k/top-p filter needs the sorted row, so 2·B
    // numbers come back a step instead of B·V logits (12.9 MB at 64 rows of GPT-2's vocabulary).
    let on_device = model.device().is_cuda() && cfg.top_k == 0 && cfg.top_p >= 1.0;
    generate_choosing(model, prompts, cfg, on_device)
}

/// `generate`, choosing each token on the logits' device (`device_picks`) or on the host (`pick`).
fn generate_choosing(model: &Gpt2, prompts: &[Vec<u32>], cfg: &GenerateConfig, on_device: bool) -> Result<Generation> {
    let _no_grad = engine::no_grad();
    let vocab = model.config().vocab_size;
    if prompts.is_empty() || prompts.iter().any(|p| p.is_empty()) {
        return Err(Error::Msg("generate: every prompt needs at least one token".into()));
    }
    if let Some(&bad) = prompts.iter().flatten().find(|&&t| t as usize >= vocab) {
        return Err(Error::Msg(format!("generate: prompt token {bad} is outside the vocabulary of {vocab}")));
    }
    if !(cfg.temperature >= 0.0 && cfg.temperature.is_finite() && cfg.top_p > 0.0 && cfg.top_p <= 1.0) {
        return Err(Error::Msg(format!("generate: need a finite temperature >= 0 and 0 < top_p <= 1, got {} and {}", cfg.temperature, cfg.top_p)));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest + cfg.max_new_tokens > model.config().n_positions {
        return Err(Error::Msg(format!(
            "generate: prompt of {longest} + {} new tokens exceeds the model's {} positions",
            cfg.max_new_tokens,
            model.config().n_positions
        )));
    }
    let b = prompts.len();
    let pad: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    // Padding positions hold token 0: any valid id works, attention never sees them.
    let mut seqs: Vec<Vec<i64>> = prompts.iter().zip(&pad).map(|(p, &n)| std::iter::repeat_n(0, n).chain(p.iter().map(|&t| t as i64)).collect()).collect();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut cache = KvCache::with_capacity(longest + cfg.max_new_tokens);
    let mut out = Generation { tokens: vec![Vec::new(); b], logprobs: vec![Vec::new(); b], lengths: vec![0; b] };
    let mut done = vec![false; b];
    let mut next_input = batch(&seqs)?;
    for step in 0..cfg.max_new_tokens {
        let logits = if cfg.use_cache {
            last_logits(model, &next_input, &pad, Some(&mut cache))?
        } else {
            last_logits(model, &batch(&seqs)?, &pad, None)?
        };
        let picks = if on_device {
            // A uniform per live row, in row order, as `pick` draws them: the same stream.
            let u: Vec<f64> = done.iter().map(|&d| if d || cfg.temperature == 0.0 { 0.0 } else { rng.gen() }).collect();
            device_picks(&logits, cfg.temperature, &u)?
        } else {
            Vec::new()
        };
        let logits = if on_device { Vec::new() } else { logits.to_vec_f32()? };
        let mut fed = Vec::with_capacity(b);
        for r in 0..b {
            if done[r] {
                out.tokens[r].push(cfg.pad_token_id);
                out.logprobs[r].push(0.0);
                fed.push(0);
                continue;
            }
            let (tok, lp) = if on_device { picks[r] } else { pick(&logits[r * vocab..(r + 1) * vocab], cfg, &mut rng) };
            out.tokens[r].push(tok);
            out.logprobs[r].push(lp);
            out.lengths[r] += 1;
            done[r] = cfg.eos_token_id == Some(tok);
            fed.push(tok as i64);
        }
        if done.iter().all(|&d| d) || step + 1 == cfg.max_new_tokens {
            break;
        }
        for (s, &t) in seqs.iter_mut().zip(&fed) {
            s.push(t);
        }
        next_input = Tensor::new(fed, &[b, 1])?;
    }
    Ok(out)
}

/// Equal-length rows as an i64 [B, T] tensor.
fn batch(seqs: &[Vec<i64>]) -> Result<Tensor> {
    let t = seqs[0].len();
    Tensor::new(seqs.concat(), &[seqs.len(), t])
}

/// Logits of the last position of every row, [B, V] where the model is: the LM head runs on
/// that position only.
fn last_logits(model: &Gpt2, ids: &Tensor, pad: &[usize], cache: Option<&mut KvCache>) -> Result<Tensor> {
    let h = model.hidden_states(ids, Some(pad), cache)?;
    let (b, t) = (h.shape()[0], h.shape()[1]);
    let logits = model.lm_head(&h.narrow(1, t - 1, 1)?)?;
    let v = logits.shape()[2];
    logits.reshape(&[b, v])
}

/// `pick`'s choice for every row of logits [B, V] when nothing is filtered, made on their device:
/// greedy, the first maximum (argmax); else the draw `inverse_cdf` makes from the row's uniform
/// `u`. With its log-probability (the fused `token_logprobs`).
fn device_picks(logits: &Tensor, temperature: f32, u: &[f64]) -> Result<Vec<(u32, f32)>> {
    let b = logits.shape()[0];
    let (ids, t) = if temperature == 0.0 { (logits.argmax_keepdim(1)?.reshape(&[b])?, 1.0) } else { (logits.sample_rows(u, temperature)?, temperature) };
    let lp = logits.token_logprobs(&ids, t)?.to_vec_f32()?;
    Ok(ids.to_vec_i64()?.into_iter().zip(lp).map(|(i, l)| (i as u32, l)).collect())
}

/// Choose one token from a row of logits; returns it with its log-probability (see `Generation`).
fn pick(logits: &[f32], cfg: &GenerateConfig, rng: &mut StdRng) -> (u32, f32) {
    let greedy = cfg.temperature == 0.0;
    if greedy {
        // The first maximum, as torch.argmax; log-softmax from a vectorized f32 exp-sum.
        let max = engine::cpu::simd::max_of(logits);
        let best = logits.iter().position(|&x| x == max).unwrap_or(0);
        let lse = max as f64 + engine::cpu::simd::sum_exp(logits, max).ln();
        return (best as u32, (logits[best] as f64 - lse) as f32);
    }
    let inv_t = if greedy { 1.0 } else { 1.0 / cfg.temperature as f64 };
    let scaled: Vec<f64> = logits.iter().map(|&x| x as f64 * inv_t).collect();
    let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + scaled.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
    let logprob = |i: usize| (scaled[i] - lse) as f32;
    if greedy {
        // The first maximum, as torch.argmax.
        let best = scaled.iter().position(|&x| x == max).unwrap_or(0);
        return (best as u32, logprob(best));
    }
    // Candidates, most likely first (ties: lower id first, for determinism).
    let mut cand: Vec<usize> = (0..scaled.len()).collect();
    let by_logit = |a: &usize, b: &usize| scaled[*b].total_cmp(&scaled[*a]).then(a.cmp(b));
    if cfg.top_k > 0 && cfg.top_k < cand.len() {
        cand.select_nth_unstable_by(cfg.top_k - 1, by_logit);
        cand.truncate(cfg.top_k);
    }
    if cfg.top_p < 1.0 {
        cand.sort_unstable_by(by_logit);
        // Among the survivors of top-k, renormalized (HF applies top-p after top-k).
        let z: f64 = cand.iter().map(|&i| (scaled[i] - max).exp()).sum();
        let (mut cum, mut keep) = (0.0, 0);
        while keep < cand.len() && cum < cfg.top_p as f64 {
            cum += (scaled[cand[keep]] - max).exp() / z;
            keep += 1;
        }
        cand.truncate(keep.max(1));
    }
    let weights: Vec<f64> = cand.iter().map(|&i| (scaled[i] - max).exp()).collect();
    let chosen = cand[engine::inverse_cdf(&weights, rng.gen::<f64>())];
    (chosen as u32, logprob(chosen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Gpt2Config;

    /// A small model with every parameter perturbed (GPT-2's init leaves biases at 0), wide enough
    /// (vocab 300) for the LM head to take the skinny GEMM path the real ones take.
    fn model() -> Gpt2 {
        let m = Gpt2::new(Gpt2Config::custom(2, 4, 64, 96, 300), 9).unwrap();
        let mut rng = StdRng::seed_from_u64(10);
        for (_, p) in m.params() {
            p.assign(&p.add(&Tensor::randn(p.shape(), 0.0, 0.05, &mut rng)).unwrap()).unwrap();
        }
        m
    }

    fn ragged_prompts() -> Vec<Vec<u32>> {
        let mut rng = StdRng::seed_from_u64(11);
        [17, 1, 9, 30, 4, 23, 2, 11].iter().map(|&n| (0..n).map(|_| rng.gen_range(0..300)).collect()).collect()
    }

    /// The greedy choice made where the logits are (a GPU's path, run here on the CPU) is
    /// `pick`'s: the same first maximum (ties included) and its log-probability.
    #[test]
    fn greedy_picks_on_the_device_are_picks() {
        let (b, v) = (7, 301);
        let mut rng = StdRng::seed_from_u64(12);
        let mut x: Vec<f32> = (0..b * v).map(|_| rng.gen_range(-8.0f32..8.0)).collect();
        x[3 * v + 10] = 20.0; // a tie: the first of the two wins
        x[3 * v + 200] = 20.0;
        x[5 * v + v - 1] = 30.0; // the last column
        let got = device_picks(&Tensor::new(x.clone(), &[b, v]).unwrap(), 0.0, &[0.0; 7]).unwrap();
        let cfg = GenerateConfig::greedy(1);
        for (r, &(tok, lp)) in got.iter().enumerate() {
            let (want_tok, want_lp) = pick(&x[r * v..(r + 1) * v], &cfg, &mut rng);
            assert_eq!(tok, want_tok, "row {r}");
            assert!((lp - want_lp).abs() <= 1e-5 * (1.0 + want_lp.abs()), "row {r}: log-prob {lp} vs {want_lp}");
        }
        assert_eq!((got[3].0, got[5].0), (10, v as u32 - 1));
    }

    /// Generation that chooses on the logits' device (a GPU's path, run here on the CPU) gives
    /// the host's tokens, greedy and sampled, with rows stopping at different steps (a stopped
    /// row draws no uniform on either path), and its log-probs up to f32 rounding.
    #[test]
    fn choosing_on_the_device_gives_the_hosts_generation() {
        let (model, prompts) = (model(), ragged_prompts());
        for temperature in [0.0, 1.0, 0.7] {
            let free = GenerateConfig { temperature, eos_token_id: None, seed: 3, ..GenerateConfig::greedy(24) };
            let first = generate(&model, &prompts, &free).unwrap();
            // An EOS that some row samples early: rows then stop at different steps.
            let cfg = GenerateConfig { eos_token_id: Some(first.tokens[1][4]), ..free };
            let host = generate_choosing(&model, &prompts, &cfg, false).unwrap();
            let device = generate_choosing(&model, &prompts, &cfg, true).unwrap();
            assert!(host.lengths.iter().any(|&n| n < 24) && host.lengths.iter().any(|&n| n > 5), "T={temperature}: rows stop at different steps: {:?}", host.lengths);
            assert_eq!((&device.tokens, &device.lengths), (&host.tokens, &host.lengths), "T={temperature}");
            for (a, b) in device.logprobs.iter().flatten().zip(host.logprobs.iter().flatten()) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "T={temperature}: log-prob {a} vs {b}");
            }
        }
    }

    /// The preallocated cache (written in place, read through views) gives the tokens and
    /// log-probs of recomputing everything, on left-padded ragged prompts, greedy and sampled.
    #[test]
    fn cache_matches_recomputation_on_ragged_prompts() {
        let (model, prompts) = (model(), ragged_prompts());
        let greedy = GenerateConfig { eos_token_id: None, ..GenerateConfig::greedy(40) };
        let sampled = GenerateConfig { temperature: 0.9, top_k: 50, seed: 4, ..greedy.clone() };
        for cfg in [greedy, sampled] {
            let cached = generate(&model, &prompts, &cfg).unwrap();
            let full = generate(&model, &prompts, &GenerateConfig { use_cache: false, ..cfg.clone() }).unwrap();
            assert_eq!(cached.tokens, full.tokens, "temperature {}", cfg.temperature);
            for (a, b) in cached.logprobs.iter().flatten().zip(full.logprobs.iter().flatten()) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "log-prob {a} vs {b}");
            }
        }
    }

    /// A cache that outgrows its capacity, or is cloned midway, still matches a fresh one.
    #[test]
    fn cache_grows_and_clones_independently() {
        let _g = engine::no_grad();
        let model = model();
        let ids = |v: Vec<i64>| Tensor::new(v.clone(), &[2, v.len() / 2]).unwrap();
        let pad = [0, 3];
        let (mut small, mut big) = (KvCache::with_capacity(2), KvCache::with_capacity(64));
        let prefix = ids(vec![5, 6, 7, 8, 1, 2, 3, 4]);
        let a = model.forward_padded(&prefix, Some(&pad), Some(&mut small)).unwrap().to_vec_f32().unwrap();
        let b = model.forward_padded(&prefix, Some(&pad), Some(&mut big)).unwrap().to_vec_f32().unwrap();
        assert_eq!(a, b);
        let mut fork = big.clone();
        for t in 0..10 {
            let step = ids(vec![t, t + 1]);
            let a = model.forward_padded(&step, Some(&pad), Some(&mut small)).unwrap().to_vec_f32().unwrap();
            let b = model.forward_padded(&step, Some(&pad), Some(&mut big)).unwrap().to_vec_f32().unwrap();
            assert_eq!(a, b, "step {t}");
        }
        // The clone saw none of those steps: it continues from the prefix.
        let step = ids(vec![9, 9]);
        let forked = model.forward_padded(&step, Some(&pad), Some(&mut fork)).unwrap().to_vec_f32().unwrap();
        let mut fresh = KvCache::new();
        model.forward_padded(&prefix, Some(&pad), Some(&mut fresh)).unwrap();
        assert_eq!(forked, model.forward_padded(&step, Some(&pad), Some(&mut fresh)).unwrap().to_vec_f32().unwrap());
        assert_eq!((small.len(), fork.len()), (14, 5));
    }

    /// While gradients are recorded the cache concatenates instead (its buffers are written in
    /// place, which autograd cannot see): same logits, and gradients reach earlier positions.
    #[test]
    fn cache_under_autograd_concatenates() {
        let model = model();
        let ids = |v: Vec<i64>| Tensor::new(v, &[1, 2]).unwrap();
        let run = |cache: &mut KvCache| {
            model.forward_padded(&ids(vec![1, 2]), None, Some(&mut *cache)).unwrap();
            model.forward_padded(&ids(vec![3, 4]), None, Some(cache)).unwrap()
        };
        let recorded = run(&mut KvCache::new());
        let plain = engine::with_no_grad(|| run(&mut KvCache::new()));
        assert_eq!(recorded.to_vec_f32().unwrap(), plain.to_vec_f32().unwrap());
        let grads = recorded.sum_all().unwrap().backward().unwrap();
        let wpe = model.param("transformer.wpe.weight").unwrap();
        let g = grads.get(wpe).unwrap().to_vec_f32().unwrap();
        assert!(g[..64].iter().any(|&x| x != 0.0), "position 0 (first chunk) gets a gradient");
    }

    fn cfg(temperature: f32, top_k: usize, top_p: f32) -> GenerateConfig {
        GenerateConfig { temperature, top_k, top_p, ..Default::default() }
    }

    fn counts(logits: &[f32], c: &GenerateConfig, n: usize) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut k = vec![0; logits.len()];
        for _ in 0..n {
            k[pick(logits, c, &mut rng).0 as usize] += 1;
        }
        k
    }

    #[test]
    fn greedy_takes_the_first_maximum_and_reports_its_logprob() {
        let logits = [0.0, 2.0, 2.0, -1.0];
        let (t, lp) = pick(&logits, &cfg(0.0, 0, 1.0), &mut StdRng::seed_from_u64(0));
        let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
        assert_eq!(t, 1);
        assert!((lp as f64 - (2.0 - z.ln())).abs() < 1e-6);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        // probabilities ∝ e^[3, 2, 1, 0, -1]: 0.636, 0.234, 0.086, 0.032, 0.012
        let logits = [1.0, 3.0, -1.0, 2.0, 0.0];
        let k2 = counts(&logits, &cfg(1.0, 2, 1.0), 2000);
        assert_eq!((k2[0], k2[2], k2[4]), (0, 0, 0));
        assert!(k2[1] > 1200 && k2[3] > 400, "{k2:?}");
        // top_p 0.8: {1, 3} reach 0.87 → only those; top_p 0.5: token 1 alone.
        let p8 = counts(&logits, &cfg(1.0, 0, 0.8), 2000);
        assert_eq!((p8[0], p8[2], p8[4]), (0, 0, 0), "{p8:?}");
        let p5 = counts(&logits, &cfg(1.0, 0, 0.5), 200);
        assert_eq!(p5[1], 200);
        // Without filters every token shows up, in proportion.
        let all = counts(&logits, &cfg(1.0, 0, 1.0), 20000);
        assert!(all.iter().all(|&c| c > 0), "{all:?}");
        assert!((all[1] as f64 / 20000.0 - 0.636).abs() < 0.02, "{all:?}");
    }

    #[test]
    fn temperature_sharpens_and_logprobs_use_it() {
        let logits = [0.0, 1.0];
        let cold = counts(&logits, &cfg(0.25, 0, 1.0), 4000);
        // p(1) = 1 / (1 + e^-4) = 0.982
        assert!(cold[1] as f64 / 4000.0 > 0.97, "{cold:?}");
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..20 {
            let (t, lp) = pick(&logits, &cfg(0.5, 0, 1.0), &mut rng);
            let want = if t == 1 { -(1.0f64 + (-2.0f64).exp()).ln() } else { -(1.0f64 + 2.0f64.exp()).ln() };
            assert!((lp as f64 - want).abs() < 1e-6);
        }
    }
}
