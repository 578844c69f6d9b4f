//! The reward-model loss against fixtures/rlhf/rm_loss.json, and a tiny RM learning a synthetic
//! preference.

use engine::Tensor;
use models::{Gpt2, Gpt2Config};
use rlhf::reward::{self, rm_accuracy, rm_loss, RankGroup, RewardModel, RmConfig, TokenRanking};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/rlhf/rm_loss.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + rel * b.abs()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// All prompts' rewards in one flat tensor, and their groups.
fn batch(f: &Value) -> (Vec<f32>, Vec<RankGroup>) {
    let (mut r, mut g) = (Vec::new(), Vec::new());
    for p in f["prompts"].as_array().unwrap() {
        let ranking = p["ranking_best_to_worst"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        g.push(RankGroup { offset: r.len(), ranking });
        r.extend(floats(&p["rewards"]).into_iter().map(|x| x as f32));
    }
    (r, g)
}

#[test]
fn loss_gradients_and_accuracy_match_the_fixture() {
    let f = fixture();
    let (r, groups) = batch(&f);
    let rewards = Tensor::new(r.clone(), &[r.len()]).unwrap().var();
    let (total, per) = rm_loss(&rewards, &groups).unwrap();
    let want_total = f["total_loss"].as_f64().unwrap();
    let got_total = total.to_scalar().unwrap() as f64;
    assert!(close(got_total, want_total, 1e-6, 0.0), "total {got_total} vs {want_total}");
    let prompts = f["prompts"].as_array().unwrap();
    for (p, (got, g)) in prompts.iter().zip(per.iter().zip(&groups)) {
        let want = p["loss"].as_f64().unwrap();
        assert!(close(*got, want, 1e-6, 0.0), "prompt loss {got} vs {want}");
        // The fixture's pair list is ours, in the same order.
        let k = g.ranking.len();
        let pairs: Vec<[usize; 2]> = (0..k).flat_map(|i| (i + 1..k).map(move |j| (i, j))).map(|(i, j)| [g.ranking[i], g.ranking[j]]).collect();
        let want_pairs: Vec<[usize; 2]> = p["pairs_winner_loser"].as_array().unwrap().iter().map(|w| [w[0].as_u64().unwrap() as usize, w[1].as_u64().unwrap() as usize]).collect();
        assert_eq!(pairs, want_pairs);
    }
    let grads = total.backward().unwrap();
    let g = grads.get(&rewards).unwrap().to_vec_f32().unwrap();
    let want_g: Vec<f64> = prompts.iter().flat_map(|p| floats(&p["grad_total_wrt_rewards"])).collect();
    for (i, (a, w)) in g.iter().zip(&want_g).enumerate() {
        assert!(close(*a as f64, *w, 1e-6, 1e-9), "d total / d r[{i}]: {a} vs {w}");
    }
    let acc = rm_accuracy(&r, &groups);
    assert_eq!(acc.correct, prompts.iter().map(|p| p["n_correct_pairs"].as_u64().unwrap() as usize).sum::<usize>());
    assert_eq!(acc.pairs as u64, f["n_pairs_total"].as_u64().unwrap());
    assert!(close(acc.pooled, f["accuracy_pooled"].as_f64().unwrap(), 1e-12, 0.0));
    assert!(close(acc.mean_over_prompts, f["accuracy_mean_over_prompts"].as_f64().unwrap(), 1e-12, 0.0));
    for (a, p) in acc.per_prompt.iter().zip(prompts) {
        assert!(close(*a, p["accuracy"].as_f64().unwrap(), 1e-12, 0.0));
    }
}

#[test]
fn the_diagnostic_pooled_mean_is_not_our_loss() {
    let f = fixture();
    let (r, groups) = batch(&f);
    let (total, _) = rm_loss(&Tensor::new(r.clone(), &[r.len()]).unwrap(), &groups).unwrap();
    let diag = f["diagnostic_not_reference_loss_mean_over_all_pairs_pooled"].as_f64().unwrap();
    assert!((total.to_scalar().unwrap() as f64 - diag).abs() > 1e-3);
}

/// Responses with the marker token win: K = 3 rankings, best = has the marker.
fn synthetic(n: usize, seed: u64) -> Vec<TokenRanking> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    const MARKER: u32 = 7;
    let word = |rng: &mut rand::rngs::StdRng| loop {
        let t = rng.gen_range(10..200u32);
        if t != MARKER {
            return t;
        }
    };
    (0..n)
        .map(|_| {
            let prompt: Vec<u32> = (0..4).map(|_| word(&mut rng)).collect();
            let mut responses = Vec::new();
            for k in 0..3 {
                let mut r: Vec<u32> = (0..5).map(|_| word(&mut rng)).collect();
                if k == 0 {
                    let at = rng.gen_range(0..5);
                    r[at] = MARKER;
                }
                responses.push(r);
            }
            // Shuffle positions: ranking lists the marker response first.
            let perm: Vec<usize> = if rng.gen_bool(0.5) { vec![2, 0, 1] } else { vec![1, 2, 0] };
            let mut shuffled = vec![Vec::new(); 3];
            for (orig, &pos) in perm.iter().enumerate() {
                shuffled[pos] = responses[orig].clone();
            }
            TokenRanking { prompt, responses: shuffled, ranking: perm.clone() }
        })
        .collect()
}

#[test]
fn a_tiny_reward_model_learns_a_marker_preference() {
    let sft = Gpt2::new(Gpt2Config::custom(1, 2, 32, 32, 256), 3).unwrap();
    let rm = RewardModel::from_sft(&sft, 4).unwrap();
    let train = synthetic(64, 1);
    let val = synthetic(32, 2);
    let (_, before) = reward::evaluate(&rm, &val, 16).unwrap();
    let cfg = RmConfig { epochs: 4, batch: 8, lr: 3e-3, min_lr: 3e-4, warmup: 2, weight_decay: 0.0, grad_clip: 1.0, eval_every: 1000, seed: 0, ..RmConfig::default() };
    let steps = reward::train(&rm, &train, &val, &cfg, None, |_| {}).unwrap();
    let last = steps.last().unwrap();
    assert!(steps.iter().all(|s| s.loss.is_finite()));
    let acc = last.val_accuracy.unwrap();
    // Chance is 1/3 of pairs right on average for random scores with a marker only in the best.
    assert!(acc > 0.75 && acc > before.pooled + 0.2, "held-out accuracy {acc} (before {})", before.pooled);
    assert!(last.val_loss.unwrap() < steps[0].loss);
}

#[test]
fn checkpoint_round_trip_and_normalization() {
    let sft = Gpt2::new(Gpt2Config::custom(1, 2, 16, 16, 64), 5).unwrap();
    let mut rm = RewardModel::from_sft(&sft, 6).unwrap();
    let samples: Vec<Vec<u32>> = (0..12).map(|i| (0..(3 + i % 5)).map(|j| ((i * 7 + j * 3) % 64) as u32).collect()).collect();
    rm.fit_normalization(&samples, true, 5).unwrap();
    let s = rm.scores(&samples).unwrap();
    let mean = s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64;
    let std = (s.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
    assert!(mean.abs() < 1e-5 && (std - 1.0).abs() < 1e-4, "mean {mean} std {std}");
    let dir = tempfile::tempdir().unwrap();
    rm.save(dir.path()).unwrap();
    let back = RewardModel::load(dir.path()).unwrap();
    assert_eq!(back.norm, rm.norm);
    assert_eq!(back.scores(&samples).unwrap(), s);
    // Right padding never changes a sequence's reward.
    let alone = rm.scores(&samples[..1]).unwrap()[0];
    assert!((alone - s[0]).abs() < 1e-5);
}

/// metrics.jsonl's lines without the wall-clock field.
fn metrics_without_timings(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("responses_per_s").unwrap();
            v
        })
        .collect()
}

#[test]
fn interrupted_and_resumed_training_matches_the_uninterrupted_one() {
    let sft = Gpt2::new(Gpt2Config::custom(1, 2, 32, 32, 256), 3).unwrap();
    let (train, val) = (synthetic(24, 1), synthetic(6, 2));
    // 2 epochs of 6 steps; checkpoints every 4 steps and at each epoch's end: 4, 6, 8, 12.
    let cfg = RmConfig { epochs: 2, batch: 4, lr: 3e-3, min_lr: 3e-4, warmup: 2, weight_decay: 0.1, grad_clip: 1.0, eval_every: 3, checkpoint_every: 4, seed: 7 };
    let dir = tempfile::tempdir().unwrap();
    let full = RewardModel::from_sft(&sft, 4).unwrap();
    let full_steps = reward::train_checkpointed(&full, &train, &val, &cfg, &dir.path().join("full"), false, |_| true).unwrap();
    assert_eq!(full_steps.len(), 12);
    // The same numbers as `train` (which keeps no checkpoints).
    let plain = RewardModel::from_sft(&sft, 4).unwrap();
    let plain_steps = reward::train(&plain, &train, &val, &cfg, None, |_| {}).unwrap();
    assert_eq!(plain_steps.iter().map(|s| s.loss).collect::<Vec<_>>(), full_steps.iter().map(|s| s.loss).collect::<Vec<_>>());

    // A crash in step 10's report (its metrics line already written): the newest checkpoint is
    // step 8's, in the middle of epoch 2, and the resumed run redoes steps 9 and 10.
    let out = dir.path().join("resumed");
    let first = RewardModel::from_sft(&sft, 4).unwrap();
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reward::train_checkpointed(&first, &train, &val, &cfg, &out, false, |m| {
            assert!(m.step < 10, "simulated crash");
            true
        })
    }));
    assert!(crashed.is_err());
    assert_eq!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count(), 10);
    // Resumed into a model with other weights and other settings: the checkpoint's win.
    let resumed = RewardModel::from_sft(&Gpt2::new(Gpt2Config::custom(1, 2, 32, 32, 256), 9).unwrap(), 5).unwrap();
    let other_cfg = RmConfig { lr: 1.0, seed: 1, ..cfg.clone() };
    assert_eq!(reward::resumed_config(&out).unwrap(), cfg);
    let steps = reward::train_checkpointed(&resumed, &train, &val, &other_cfg, &out, true, |_| true).unwrap();
    assert_eq!(steps.iter().map(|s| s.step).collect::<Vec<_>>(), vec![9, 10, 11, 12]);
    for ((name, a), (_, b)) in full.named_params().iter().zip(resumed.named_params()) {
        assert!(a.to_vec_f32().unwrap() == b.to_vec_f32().unwrap(), "{name} differs from the uninterrupted run's");
    }
    let (a, b) = (metrics_without_timings(&dir.path().join("full/metrics.jsonl")), metrics_without_timings(&out.join("metrics.jsonl")));
    assert_eq!(a.len(), 12);
    assert_eq!(a, b);

    // Other rankings are refused.
    let err = reward::train_checkpointed(&resumed, &train[..20], &val, &cfg, &out, true, |_| true).unwrap_err();
    assert!(format!("{err:#}").contains("--resume"), "{err:#}");
    let err = reward::train_checkpointed(&resumed, &train, &synthetic(6, 3), &cfg, &out, true, |_| true).unwrap_err();
    assert!(format!("{err:#}").contains("held-out"), "{err:#}");
}
