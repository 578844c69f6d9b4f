//! Generation and the KV cache: cached vs full recomputation, left-padded ragged batches vs each
//! row alone, per-row EOS, seeded sampling and the log-probs it reports.

mod common;
use common::*;
use engine::Tensor;
use models::{generate, GenerateConfig, Gpt2, Gpt2Config, KvCache};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_ids(rng: &mut StdRng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.gen_range(0..vocab as u32)).collect()
}

fn as_tensor(rows: &[Vec<u32>]) -> Tensor {
    let t = rows[0].len();
    ids(rows.concat().into_iter().map(i64::from).collect(), &[rows.len(), t])
}

/// Left-pad each row with token 0 to the longest; returns (ids, pad counts).
fn left_padded(rows: &[Vec<u32>]) -> (Tensor, Vec<usize>) {
    let n = rows.iter().map(Vec::len).max().unwrap();
    let pad: Vec<usize> = rows.iter().map(|r| n - r.len()).collect();
    let padded: Vec<Vec<u32>> = rows.iter().zip(&pad).map(|(r, &p)| [vec![0; p], r.clone()].concat()).collect();
    (as_tensor(&padded), pad)
}

/// Random models: small and odd shapes, and one longer than the attention kernel's 64-key blocks.
fn random_models() -> Vec<Gpt2> {
    [(2, 4, 48, 64, 97, 1), (1, 3, 24, 40, 61, 2), (3, 2, 32, 160, 128, 3)]
        .into_iter()
        .map(|(l, h, e, ctx, v, seed)| {
            let m = Gpt2::new(Gpt2Config::custom(l, h, e, ctx, v), seed).unwrap();
            // GPT-2's init leaves biases and LayerNorms at 0/1: perturb every parameter so that none
            // of them is silently unused.
            let mut rng = StdRng::seed_from_u64(seed + 100);
            for (_, p) in m.params() {
                p.assign(&p.add(&Tensor::randn(p.shape(), 0.0, 0.05, &mut rng)).unwrap()).unwrap();
            }
            m
        })
        .collect()
}

#[test]
fn cached_forward_matches_full_forward() {
    let _g = engine::no_grad();
    let mut rng = StdRng::seed_from_u64(10);
    for model in random_models() {
        let c = model.config().clone();
        let t = c.n_positions.min(100);
        let rows: Vec<Vec<u32>> = (0..2).map(|_| random_ids(&mut rng, t, c.vocab_size)).collect();
        let full = model.forward(&as_tensor(&rows)).unwrap().to_vec_f32().unwrap();
        // Prefill, then chunks of 1..=4 tokens.
        let mut cache = KvCache::new();
        let mut start = 0;
        let mut step = t / 3;
        let mut cached = vec![Vec::new(); 2];
        while start < t {
            let end = (start + step).min(t);
            let chunk: Vec<Vec<u32>> = rows.iter().map(|r| r[start..end].to_vec()).collect();
            let logits = model.forward_padded(&as_tensor(&chunk), None, Some(&mut cache)).unwrap();
            assert_eq!(cache.len(), end);
            let v = logits.to_vec_f32().unwrap();
            for (b, out) in cached.iter_mut().enumerate() {
                out.extend_from_slice(&v[b * (end - start) * c.vocab_size..(b + 1) * (end - start) * c.vocab_size]);
            }
            start = end;
            step = 1 + start % 4;
        }
        let (worst, ok) = close(&cached.concat(), &full, 1e-5, 1e-4);
        assert!(ok, "{model:?}: cached logits differ from full by {worst:e}");
        if t == c.n_positions {
            // Past the context: an error, not garbage.
            assert!(model.forward_padded(&as_tensor(&[vec![0], vec![0]]), None, Some(&mut cache)).is_err());
        }
    }
}

/// A left-padded row computes what the row computes alone (positions from 0 at its first real
/// token, padding invisible), with and without the cache.
#[test]
fn left_padded_forward_matches_each_row_alone() {
    let _g = engine::no_grad();
    let mut rng = StdRng::seed_from_u64(11);
    for model in random_models() {
        let c = model.config().clone();
        let longest = c.n_positions.min(90);
        let lens = [longest, 1, longest / 2, longest - 1];
        let rows: Vec<Vec<u32>> = lens.iter().map(|&n| random_ids(&mut rng, n, c.vocab_size)).collect();
        let (batch, pad) = left_padded(&rows);
        let logits = model.forward_padded(&batch, Some(&pad), None).unwrap().to_vec_f32().unwrap();
        // The same through the cache: the first 60% as prefill, then one token at a time.
        let mut cache = KvCache::new();
        let split = longest * 3 / 5;
        let mut stepped = model.forward_padded(&batch.narrow(1, 0, split).unwrap(), Some(&pad), Some(&mut cache)).unwrap().to_vec_f32().unwrap();
        let mut per_row: Vec<Vec<f32>> = stepped.chunks(split * c.vocab_size).map(<[f32]>::to_vec).collect();
        for i in split..longest {
            let step = model.forward_padded(&batch.narrow(1, i, 1).unwrap(), Some(&pad), Some(&mut cache)).unwrap().to_vec_f32().unwrap();
            for (b, row) in per_row.iter_mut().enumerate() {
                row.extend_from_slice(&step[b * c.vocab_size..(b + 1) * c.vocab_size]);
            }
        }
        stepped = per_row.concat();
        for (b, row) in rows.iter().enumerate() {
            let alone = model.forward(&as_tensor(std::slice::from_ref(row))).unwrap().to_vec_f32().unwrap();
            let real = (b * longest + pad[b]) * c.vocab_size..(b + 1) * longest * c.vocab_size;
            let (worst, ok) = close(&logits[real.clone()], &alone, 1e-5, 1e-4);
            assert!(ok, "{model:?} row {b} (pad {}): padded logits differ from alone by {worst:e}", pad[b]);
            let (worst, ok) = close(&stepped[real], &alone, 1e-5, 1e-4);
            assert!(ok, "{model:?} row {b} (pad {}): cached padded logits differ from alone by {worst:e}", pad[b]);
        }
    }
}

#[test]
fn ragged_batch_generation_matches_each_row_alone() {
    let model = tiny();
    let prompt: Vec<u32> = reference().get("generate.prompt").unwrap().to_vec_i64().unwrap().into_iter().map(|t| t as u32).collect();
    let mut rng = StdRng::seed_from_u64(12);
    let prompts = vec![prompt.clone(), random_ids(&mut rng, 3, 512), random_ids(&mut rng, 17, 512), random_ids(&mut rng, 1, 512)];
    for use_cache in [true, false] {
        let cfg = GenerateConfig { use_cache, ..GenerateConfig::greedy(24) };
        let batch = generate(&model, &prompts, &cfg).unwrap();
        for (b, p) in prompts.iter().enumerate() {
            let alone = generate(&model, std::slice::from_ref(p), &cfg).unwrap();
            assert_eq!(batch.tokens[b], alone.tokens[0], "row {b} (prompt of {}), use_cache {use_cache}", p.len());
            let (worst, ok) = close(&batch.logprobs[b], &alone.logprobs[0], 1e-5, 1e-4);
            assert!(ok, "row {b}: log-probs differ by {worst:e}");
        }
        // The fixture's prompt, padded in a batch, still gives transformers' continuation.
        let want: Vec<u32> = reference().get("generate.output").unwrap().to_vec_i64().unwrap()[8..].iter().map(|&t| t as u32).collect();
        assert_eq!(batch.tokens[0], want);
    }
}

/// Each row stops at its own EOS and is padded after it; the batch stops when all rows have.
#[test]
fn rows_stop_at_eos_independently() {
    let model = tiny();
    let mut rng = StdRng::seed_from_u64(13);
    let prompts: Vec<Vec<u32>> = (0..3).map(|i| random_ids(&mut rng, 4 + 3 * i, 512)).collect();
    let free = generate(&model, &prompts, &GenerateConfig { eos_token_id: None, ..GenerateConfig::greedy(20) }).unwrap();
    // EOS := a token row 0 emits at step 2 (so row 0 must stop there or earlier).
    let eos = free.tokens[0][2];
    let pad = 9999;
    let cfg = GenerateConfig { eos_token_id: Some(eos), pad_token_id: pad, ..GenerateConfig::greedy(20) };
    let out = generate(&model, &prompts, &cfg).unwrap();
    let stops: Vec<Option<usize>> = free.tokens.iter().map(|row| row.iter().position(|&t| t == eos)).collect();
    let steps = stops.iter().map(|s| s.map_or(20, |i| i + 1)).max().unwrap();
    for (b, row) in free.tokens.iter().enumerate() {
        let n = stops[b].map_or(20, |i| i + 1);
        let mut want = row[..n].to_vec();
        want.resize(steps, pad);
        assert_eq!(out.tokens[b], want, "row {b}");
        assert_eq!(out.lengths[b], n);
        assert!(out.logprobs[b][n..].iter().all(|&l| l == 0.0));
        assert_eq!(out.logprobs[b][..n], free.logprobs[b][..n]);
    }
    assert!(stops[0].is_some());
    // Everyone done before max_new_tokens: the batch stops early.
    let one = generate(&model, &prompts[..1], &cfg).unwrap();
    assert_eq!(one.tokens[0].len(), stops[0].unwrap() + 1);
}

/// Sampling is reproducible from the seed, and the reported log-probs are log-softmax(logits / T)
/// of the sampled tokens, as a teacher-forced full forward recomputes them.
#[test]
fn sampling_is_seeded_and_reports_its_logprobs() {
    let model = tiny();
    let mut rng = StdRng::seed_from_u64(14);
    let prompts: Vec<Vec<u32>> = vec![random_ids(&mut rng, 5, 512), random_ids(&mut rng, 9, 512)];
    for (temperature, top_k, top_p) in [(1.0, 0, 1.0), (0.7, 20, 1.0), (1.3, 0, 0.9), (0.9, 50, 0.8)] {
        let cfg = GenerateConfig { temperature, top_k, top_p, eos_token_id: None, seed: 5, ..GenerateConfig::greedy(16) };
        let a = generate(&model, &prompts, &cfg).unwrap();
        assert_eq!(a, generate(&model, &prompts, &cfg).unwrap());
        assert_ne!(a.tokens, generate(&model, &prompts, &GenerateConfig { seed: 6, ..cfg.clone() }).unwrap().tokens);
        let uncached = generate(&model, &prompts, &GenerateConfig { use_cache: false, ..cfg.clone() }).unwrap();
        assert_eq!(uncached.tokens, a.tokens, "T {temperature} k {top_k} p {top_p}: cache changed the samples");
        for (b, p) in prompts.iter().enumerate() {
            let seq = [p.clone(), a.tokens[b].clone()].concat();
            let logits = engine::with_no_grad(|| model.forward(&as_tensor(std::slice::from_ref(&seq)))).unwrap();
            let logp = logits.mul_scalar(1.0 / temperature).unwrap().log_softmax().unwrap().to_vec_f32().unwrap();
            for (i, &lp) in a.logprobs[b].iter().enumerate() {
                let pos = p.len() - 1 + i;
                let want = logp[pos * 512 + seq[pos + 1] as usize];
                assert!((lp - want).abs() < 1e-4, "row {b} step {i}: logprob {lp} vs {want}");
            }
        }
    }
}

#[test]
fn generation_keeps_nothing_alive_and_checks_its_inputs() {
    let model = tiny();
    let wte = model.params()[0].1.clone();
    let before = wte.strong_count();
    let out = generate(&model, &[vec![1, 2, 3]], &GenerateConfig::greedy(5)).unwrap();
    assert_eq!(out.tokens[0].len(), 5);
    assert_eq!(wte.strong_count(), before, "a graph or cache still holds the weights");
    assert!(engine::autograd::grad_enabled(), "recording must resume after generate");
    let bad = |prompts: &[Vec<u32>], cfg: GenerateConfig| generate(&model, prompts, &cfg).is_err();
    assert!(bad(&[vec![]], GenerateConfig::greedy(1)));
    assert!(bad(&[vec![512]], GenerateConfig::greedy(1)));
    assert!(bad(&[vec![1; 60]], GenerateConfig::greedy(5)), "64 positions");
    assert!(bad(&[vec![1]], GenerateConfig { top_p: 0.0, ..GenerateConfig::default() }));
    assert!(bad(&[vec![1]], GenerateConfig { temperature: f32::INFINITY, ..GenerateConfig::default() }));
    assert!(bad(&[vec![1]], GenerateConfig { temperature: -0.5, ..GenerateConfig::default() }));
}
