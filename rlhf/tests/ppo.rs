//! PPO math against fixtures/rlhf/ppo.json (float64 reference; our losses run in f32).

use engine::Tensor;
use rlhf::ppo::math::{compute_advantages, ppo_loss, KlController, LossInputs, PpoHyper};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/rlhf/ppo.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// [B][T] with nulls as None, flattened row-major.
fn grid(v: &Value) -> Vec<Option<f64>> {
    v.as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64())).collect()
}

fn flat(v: &Value) -> Vec<f64> {
    grid(v).into_iter().map(|x| x.unwrap()).collect()
}

fn hyper(f: &Value) -> PpoHyper {
    let h = &f["hyperparameters"];
    PpoHyper {
        beta: h["beta_kl_coef"].as_f64().unwrap(),
        gamma: h["gamma"].as_f64().unwrap(),
        lam: h["lam"].as_f64().unwrap(),
        cliprange: h["cliprange"].as_f64().unwrap(),
        cliprange_value: h["cliprange_value"].as_f64().unwrap(),
        vf_coef: h["vf_coef"].as_f64().unwrap(),
        whiten_eps: h["whiten_eps"].as_f64().unwrap(),
    }
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + rel * b.abs()
}

/// Compare valid entries; padded (null) ones must be 0 in ours.
fn check_grid(name: &str, ours: &[f64], want: &Value, rel: f64, abs: f64) {
    let want = grid(want);
    assert_eq!(ours.len(), want.len(), "{name}: size");
    for (i, (a, w)) in ours.iter().zip(&want).enumerate() {
        match w {
            Some(w) => assert!(close(*a, *w, rel, abs), "{name}[{i}]: {a} vs {w}"),
            None => assert_eq!(*a, 0.0, "{name}[{i}] is padding"),
        }
    }
}

struct Inputs {
    lengths: Vec<usize>,
    time: usize,
    old_lp: Vec<f64>,
    ref_lp: Vec<f64>,
    old_v: Vec<f64>,
    scores: Vec<f64>,
    new_lp: Vec<f64>,
    new_v: Vec<f64>,
}

fn inputs(f: &Value) -> Inputs {
    let i = &f["inputs"];
    let lengths: Vec<usize> = i["lengths"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    Inputs {
        time: i["mask"][0].as_array().unwrap().len(),
        lengths,
        old_lp: flat(&i["old_logprobs"]),
        ref_lp: flat(&i["ref_logprobs"]),
        old_v: flat(&i["old_values"]),
        scores: i["scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect(),
        new_lp: flat(&i["new_logprobs"]),
        new_v: flat(&i["new_values"]),
    }
}

#[test]
fn intermediates_match_the_fixture() {
    let f = fixture();
    let hp = hyper(&f);
    let x = inputs(&f);
    let a = compute_advantages(&x.old_lp, &x.ref_lp, &x.old_v, &x.scores, &x.lengths, x.time, &hp).unwrap();
    let m = &f["intermediates"];
    let (rel, abs) = (1e-10, 1e-12);
    check_grid("kl", &a.kl, &m["kl"], rel, abs);
    check_grid("non_score_reward", &a.non_score_reward, &m["non_score_reward"], rel, abs);
    let lvi: Vec<usize> = m["last_valid_index"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    assert_eq!(a.last_valid_index, lvi);
    check_grid("rewards", &a.rewards, &m["rewards"], rel, abs);
    check_grid("td_deltas", &a.td_deltas, &m["td_deltas"], rel, abs);
    check_grid("advantages", &a.advantages, &m["advantages"], rel, abs);
    check_grid("returns", &a.returns, &m["returns"], rel, abs);
    assert!(close(a.advantages_mean, m["advantages_mean"].as_f64().unwrap(), rel, abs));
    assert!(close(a.advantages_var_unbiased, m["advantages_var_unbiased"].as_f64().unwrap(), rel, abs));
    assert_eq!(a.n_valid_tokens as u64, m["n_valid_tokens"].as_u64().unwrap());
    check_grid("advantages_whitened", &a.advantages_whitened, &m["advantages_whitened"], rel, abs);
    let o = &f["outputs"];
    assert!(close(a.mean_sequence_kl, o["mean_sequence_kl"].as_f64().unwrap(), rel, abs));
    assert!(close(a.mean_sequence_non_score_reward, o["mean_sequence_non_score_reward"].as_f64().unwrap(), rel, abs));
}

#[test]
fn losses_gradients_and_clip_fractions_match_the_fixture() {
    let f = fixture();
    let hp = hyper(&f);
    let x = inputs(&f);
    let a = compute_advantages(&x.old_lp, &x.ref_lp, &x.old_v, &x.scores, &x.lengths, x.time, &hp).unwrap();
    let shape = [x.lengths.len(), x.time];
    let to_t = |v: &[f64]| Tensor::new(v.iter().map(|&y| y as f32).collect::<Vec<f32>>(), &shape).unwrap().var();
    let (new_lp, new_v) = (to_t(&x.new_lp), to_t(&x.new_v));
    let inp = LossInputs { old_logprobs: &x.old_lp, old_values: &x.old_v, advantages_whitened: &a.advantages_whitened, returns: &a.returns, mask: &a.mask };
    let out = ppo_loss(&new_lp, &new_v, &inp, &hp).unwrap();
    let o = &f["outputs"];
    let (rel, abs) = (2e-6, 1e-7);
    for (name, got) in [("pg_loss", &out.pg_loss), ("vf_loss", &out.vf_loss), ("total_loss", &out.total)] {
        let got = got.to_scalar().unwrap() as f64;
        let want = o[name].as_f64().unwrap();
        assert!(close(got, want, rel, abs), "{name}: {got} vs {want}");
    }
    assert_eq!(out.pg_clipfrac, o["pg_clipfrac"].as_f64().unwrap());
    assert_eq!(out.pg_clipfrac, 5.0 / 14.0);
    assert_eq!(out.vf_clipfrac, o["vf_clipfrac"].as_f64().unwrap());
    assert_eq!(out.vf_clipfrac, 3.0 / 14.0);
    assert!(close(out.approx_kl, o["approx_kl"].as_f64().unwrap(), 1e-6, 1e-9));
    let grads = out.total.backward().unwrap();
    let g_lp: Vec<f64> = grads.get(&new_lp).unwrap().to_vec_f32().unwrap().into_iter().map(f64::from).collect();
    let g_v: Vec<f64> = grads.get(&new_v).unwrap().to_vec_f32().unwrap().into_iter().map(f64::from).collect();
    let want_lp = flat(&o["grad_total_wrt_new_logprobs"]);
    let want_v = flat(&o["grad_total_wrt_new_values"]);
    for (i, (a, w)) in g_lp.iter().zip(&want_lp).enumerate() {
        assert!(close(*a, *w, 2e-6, 1e-8), "d/d new_logprobs[{i}]: {a} vs {w}");
        if *w == 0.0 {
            assert_eq!(*a, 0.0, "d/d new_logprobs[{i}] must be exactly 0");
        }
    }
    for (i, (a, w)) in g_v.iter().zip(&want_v).enumerate() {
        assert!(close(*a, *w, 2e-6, 1e-8), "d/d new_values[{i}]: {a} vs {w}");
        if *w == 0.0 {
            assert_eq!(*a, 0.0, "d/d new_values[{i}] must be exactly 0");
        }
    }
}

#[test]
fn padded_junk_never_matters_even_nan() {
    let f = fixture();
    let hp = hyper(&f);
    let mut x = inputs(&f);
    let base = compute_advantages(&x.old_lp, &x.ref_lp, &x.old_v, &x.scores, &x.lengths, x.time, &hp).unwrap();
    for (r, &l) in x.lengths.clone().iter().enumerate() {
        for t in l..x.time {
            let i = r * x.time + t;
            x.old_lp[i] = f64::NAN;
            x.ref_lp[i] = 1e30;
            x.old_v[i] = f64::INFINITY;
            x.new_lp[i] = f64::NAN;
            x.new_v[i] = -1e30;
        }
    }
    let a = compute_advantages(&x.old_lp, &x.ref_lp, &x.old_v, &x.scores, &x.lengths, x.time, &hp).unwrap();
    assert_eq!(a.advantages_whitened, base.advantages_whitened);
    assert_eq!(a.returns, base.returns);
    let shape = [x.lengths.len(), x.time];
    let to_t = |v: &[f64]| Tensor::new(v.iter().map(|&y| y as f32).collect::<Vec<f32>>(), &shape).unwrap().var();
    let (new_lp, new_v) = (to_t(&x.new_lp), to_t(&x.new_v));
    let inp = LossInputs { old_logprobs: &x.old_lp, old_values: &x.old_v, advantages_whitened: &a.advantages_whitened, returns: &a.returns, mask: &a.mask };
    let out = ppo_loss(&new_lp, &new_v, &inp, &hp).unwrap();
    let want = f["outputs"]["total_loss"].as_f64().unwrap();
    assert!(close(out.total.to_scalar().unwrap() as f64, want, 2e-6, 1e-7));
    let g = out.total.backward().unwrap();
    assert!(g.get(&new_lp).unwrap().to_vec_f32().unwrap().iter().all(|v| v.is_finite()));
    assert!(g.get(&new_v).unwrap().to_vec_f32().unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn adaptive_kl_controller_follows_ziegler() {
    let mut c = KlController::adaptive(0.2, 6.0, 10000.0);
    c.update(12.0, 100); // error clipped to +0.2
    assert!((c.value - 0.2 * (1.0 + 0.2 * 100.0 / 10000.0)).abs() < 1e-15);
    c.update(5.7, 100); // error -0.05
    assert!((c.value - 0.2 * 1.002 * (1.0 - 0.05 * 0.01)).abs() < 1e-15);
    let mut fixed = KlController::fixed(0.05);
    fixed.update(100.0, 1000);
    assert_eq!(fixed.value, 0.05);
}

mod smoke {
    use models::tokens::TokenFile;
    use models::{Gpt2, Gpt2Config};
    use rlhf::ppo::trainer::{PpoConfig, PpoTrainer};
    use rlhf::reward::{self, RewardModel, RmConfig, TokenRanking};

    const EOS: u32 = 3;

    fn sft() -> Gpt2 {
        Gpt2::new(Gpt2Config::custom(1, 2, 32, 48, 64), 11).unwrap()
    }

    /// Responses containing token 5 win.
    fn rankings(n: usize) -> Vec<TokenRanking> {
        (0..n)
            .map(|i| {
                let p = vec![10 + (i % 40) as u32, 11, 12];
                let good = vec![20 + (i % 7) as u32, 5, 21, EOS];
                let bad = vec![20 + (i % 7) as u32, 30, 21, EOS];
                if i % 2 == 0 {
                    TokenRanking { prompt: p, responses: vec![good, bad], ranking: vec![0, 1] }
                } else {
                    TokenRanking { prompt: p, responses: vec![bad, good], ranking: vec![1, 0] }
                }
            })
            .collect()
    }

    fn ptx_file(dir: &std::path::Path) -> TokenFile {
        // A simple repeating "language": 40 50 41 51 ... so the LM loss is learnable.
        let toks: Vec<u32> = (0..4000).map(|i| if i % 2 == 0 { 40 + (i / 2 % 8) as u32 } else { 50 + (i / 2 % 8) as u32 }).collect();
        let path = dir.join("ptx.bin");
        TokenFile::write(&path, &toks).unwrap();
        TokenFile::open(&path).unwrap()
    }

    fn cfg(ptx_coef: f32, iterations: u64) -> PpoConfig {
        PpoConfig {
            iterations,
            rollout_batch: 8,
            minibatch: 4,
            ppo_epochs: 2,
            lr: 3e-3,
            max_new_tokens: 8,
            temperature: 1.0,
            eos_token_id: Some(EOS),
            no_eos_score: Some(-1.0),
            init_kl_coef: 0.05,
            kl_target: Some(1.0),
            kl_horizon: 100.0,
            ptx_coef,
            ptx_batch: 4,
            ptx_seq_len: 16,
            seed: 1,
            ..PpoConfig::default()
        }
    }

    #[test]
    fn rm_then_ppo_ptx_runs_with_finite_moving_losses() {
        let dir = tempfile::tempdir().unwrap();
        let sft = sft();
        let rm = RewardModel::from_sft(&sft, 2).unwrap();
        let rm_cfg = RmConfig { epochs: 2, batch: 8, lr: 3e-3, min_lr: 3e-4, warmup: 1, eval_every: 100, ..RmConfig::default() };
        let steps = reward::train(&rm, &rankings(32), &rankings(8), &rm_cfg, None, |_| {}).unwrap();
        assert!(steps.iter().all(|s| s.loss.is_finite()));
        let mut rm = rm;
        let samples: Vec<Vec<u32>> = rankings(8).iter().map(|r| [r.prompt.clone(), r.responses[0].clone()].concat()).collect();
        rm.fit_normalization(&samples, false, 4).unwrap();
        rm.save(dir.path().join("rm")).unwrap();
        let rm = RewardModel::load(dir.path().join("rm")).unwrap();
        let data = ptx_file(dir.path());
        let prompts: Vec<Vec<u32>> = (0..6).map(|i| vec![10 + i, 11, 12]).collect();
        let mut ppo = PpoTrainer::new(&sft, &rm, cfg(0.5, 4)).unwrap();
        let ms = ppo.train(&prompts, Some(&data), |_, _| Ok(true)).unwrap();
        assert_eq!(ms.len(), 4);
        for m in &ms {
            for (name, v) in [("pg", m.pg_loss), ("vf", m.vf_loss), ("kl", m.kl), ("entropy", m.entropy), ("score", m.score_mean), ("ptx", m.ptx_loss.unwrap())] {
                assert!(v.is_finite(), "{name} = {v} in {m:?}");
            }
            assert!(m.response_length >= 1.0 && m.response_length <= 8.0);
            assert!(m.kl_coef > 0.0);
        }
        assert!(ms[0].kl.abs() < 1e-4, "first rollout: policy == reference, kl {}", ms[0].kl);
        assert!(ms.iter().any(|m| m.kl.abs() > 1e-4), "the policy must move");
        assert_ne!(ms[0].vf_loss, ms[3].vf_loss);
        assert!(ms[3].ptx_loss.unwrap() < ms[0].ptx_loss.unwrap(), "ptx loss {} -> {}", ms[0].ptx_loss.unwrap(), ms[3].ptx_loss.unwrap());
        // The reference stays frozen: a fresh copy of the SFT model still matches it.
        assert_eq!(ppo.reference.params()[0].1.to_vec_f32().unwrap(), sft.params()[0].1.to_vec_f32().unwrap());
        ppo.save(dir.path().join("ppo")).unwrap();
        assert!(dir.path().join("ppo/policy/model.safetensors").exists());
        assert!(RewardModel::load(dir.path().join("ppo/value")).is_ok());
    }

    #[test]
    fn ptx_keeps_the_lm_loss_lower_than_plain_ppo() {
        let dir = tempfile::tempdir().unwrap();
        let sft = sft();
        let rm = RewardModel::from_sft(&sft, 2).unwrap();
        let data = ptx_file(dir.path());
        let prompts: Vec<Vec<u32>> = (0..6).map(|i| vec![10 + i, 11, 12]).collect();
        let held_out = |m: &Gpt2| {
            let _g = engine::no_grad();
            let w = data.window(3000, 33);
            let ids = engine::Tensor::new(w[..32].to_vec(), &[1, 32]).unwrap();
            let tg = engine::Tensor::new(w[1..].to_vec(), &[1, 32]).unwrap();
            m.loss(&ids, &tg).unwrap().to_scalar().unwrap()
        };
        let run = |coef: f32| {
            let mut ppo = PpoTrainer::new(&sft, &rm, cfg(coef, 3)).unwrap();
            ppo.train(&prompts, Some(&data), |_, _| Ok(true)).unwrap();
            held_out(&ppo.policy)
        };
        let (plain, ptx) = (run(0.0), run(1.0));
        assert!(ptx < plain, "held-out LM loss: ptx {ptx} vs plain {plain}");
    }

    /// metrics.jsonl's lines without the wall-clock fields.
    fn metrics_without_timings(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                for k in ["rollout_s", "scoring_s", "training_s", "tokens_per_s"] {
                    v.as_object_mut().unwrap().remove(k).unwrap();
                }
                v
            })
            .collect()
    }

    fn values(named: &[(String, engine::Tensor)]) -> Vec<(String, Vec<f32>)> {
        named.iter().map(|(n, t)| (n.clone(), t.to_vec_f32().unwrap())).collect()
    }

    #[test]
    fn interrupted_and_resumed_run_matches_the_uninterrupted_one() {
        let dir = tempfile::tempdir().unwrap();
        let sft = sft();
        let rm = RewardModel::from_sft(&sft, 2).unwrap();
        let data = ptx_file(dir.path());
        let prompts: Vec<Vec<u32>> = (0..6).map(|i| vec![10 + i, 11, 12]).collect();
        // PPO-ptx (its batches follow the step counter) with the adaptive KL controller (its beta
        // is state): 4 iterations, resumable checkpoints every 2.
        let c = PpoConfig { value_lr: Some(1e-3), ..cfg(0.5, 4) };
        let full_dir = dir.path().join("full");
        let mut full = PpoTrainer::new(&sft, &rm, c.clone()).unwrap();
        full.train_checkpointed(&prompts, Some(&data), &full_dir, 2, |_, _| Ok(true)).unwrap();
        assert!(full.kl.value != c.init_kl_coef, "the controller moved");

        // Crash during iteration 3's report, after its metrics line is written: the newest
        // checkpoint is iteration 2's, and the resumed run must redo iteration 3.
        let out = dir.path().join("resumed");
        let mut first = PpoTrainer::new(&sft, &rm, c.clone()).unwrap();
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            first.train_checkpointed(&prompts, Some(&data), &out, 2, |_, m| {
                assert!(m.iteration < 3, "simulated crash");
                Ok(true)
            })
        }));
        assert!(crashed.is_err());
        assert_eq!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count(), 3);
        let mut resumed = PpoTrainer::resume(&sft, &rm, &out).unwrap();
        assert_eq!(resumed.iterations_done(), 2);
        let mut seen = Vec::new();
        resumed
            .train_checkpointed(&prompts, Some(&data), &out, 2, |_, m| {
                seen.push(m.iteration);
                Ok(true)
            })
            .unwrap();
        assert_eq!(seen, vec![3, 4]);
        for ((name, a), (_, b)) in values(&resumed.named_params()).iter().zip(values(&full.named_params())) {
            assert!(*a == b, "{name} differs from the uninterrupted run's");
        }
        assert_eq!(resumed.kl.value, full.kl.value);
        let (a, b) = (metrics_without_timings(&full_dir.join("metrics.jsonl")), metrics_without_timings(&out.join("metrics.jsonl")));
        assert_eq!(a.len(), 4);
        assert_eq!(a, b);

        // Other prompts are refused.
        let mut again = PpoTrainer::resume(&sft, &rm, &out).unwrap();
        let err = again.train_checkpointed(&prompts[..5], Some(&data), &out, 2, |_, _| Ok(true)).unwrap_err();
        assert!(format!("{err:#}").contains("--resume") && format!("{err:#}").contains("prompts"), "{err:#}");
        // So is another reward model.
        let other_rm = RewardModel::from_sft(&sft, 3).unwrap();
        let mut again = PpoTrainer::resume(&sft, &other_rm, &out).unwrap();
        let err = again.train_checkpointed(&prompts, Some(&data), &out, 2, |_, _| Ok(true)).unwrap_err();
        assert!(format!("{err:#}").contains("reward model"), "{err:#}");
    }

    #[test]
    fn a_zero_value_lr_freezes_the_value_model_only() {
        let dir = tempfile::tempdir().unwrap();
        let sft = sft();
        let rm = RewardModel::from_sft(&sft, 2).unwrap();
        let data = ptx_file(dir.path());
        let prompts: Vec<Vec<u32>> = (0..6).map(|i| vec![10 + i, 11, 12]).collect();
        let c = PpoConfig { value_lr: Some(0.0), weight_decay: 0.1, ..cfg(0.0, 2) };
        let mut ppo = PpoTrainer::new(&sft, &rm, c).unwrap();
        let (value0, policy0) = (values(&ppo.value.named_params()), values(ppo.policy.params()));
        let ms = ppo.train(&prompts, Some(&data), |_, _| Ok(true)).unwrap();
        assert!(ms.iter().all(|m| m.value_lr == 0.0 && m.lr > 0.0));
        assert_eq!(values(&ppo.value.named_params()), value0, "value_lr 0: the value model does not move");
        let moved = values(ppo.policy.params()).iter().zip(&policy0).filter(|(a, b)| a.1 != b.1).count();
        assert!(moved > policy0.len() / 2, "the policy moves: {moved} of {} tensors changed", policy0.len());

        // Without value_lr the value model trains at the policy's rate.
        let mut ppo = PpoTrainer::new(&sft, &rm, PpoConfig { weight_decay: 0.1, ..cfg(0.0, 1) }).unwrap();
        let value0 = values(&ppo.value.named_params());
        let ms = ppo.train(&prompts, None, |_, _| Ok(true)).unwrap();
        assert_eq!(ms[0].value_lr, ms[0].lr);
        assert_ne!(values(&ppo.value.named_params()), value0);
    }

    #[test]
    fn the_value_warmup_trains_the_value_model_alone_then_both() {
        let dir = tempfile::tempdir().unwrap();
        let sft = sft();
        let rm = RewardModel::from_sft(&sft, 2).unwrap();
        let data = ptx_file(dir.path());
        let prompts: Vec<Vec<u32>> = (0..6).map(|i| vec![10 + i, 11, 12]).collect();
        let mut ppo = PpoTrainer::new(&sft, &rm, PpoConfig { value_warmup: 2, weight_decay: 0.1, ..cfg(0.5, 3) }).unwrap();
        let (value0, policy0) = (values(&ppo.value.named_params()), values(ppo.policy.params()));
        let mut seen = Vec::new();
        ppo.train(&prompts, Some(&data), |t, m| {
            seen.push((m.lr, m.ptx_loss, values(t.policy.params()), values(&t.value.named_params())));
            Ok(true)
        })
        .unwrap();
        for (lr, ptx, policy, value) in &seen[..2] {
            assert_eq!((*lr, *ptx), (0.0, None), "warm-up: no policy step, no ptx loss");
            assert_eq!(policy, &policy0, "warm-up: the policy does not move (not even by weight decay)");
            assert_ne!(value, &value0, "warm-up: the value model trains");
        }
        let (lr, ptx, policy, _) = &seen[2];
        assert!(*lr > 0.0 && ptx.is_some_and(f64::is_finite));
        assert_ne!(policy, &policy0, "after the warm-up the policy trains");
    }

    #[test]
    fn the_reward_model_may_be_larger_than_the_policy_but_must_share_its_vocabulary() {
        // The paper scores every policy with a 6B reward model; ours may be wider and deeper too.
        let sft = sft();
        let big = Gpt2::new(Gpt2Config::custom(2, 2, 48, 48, 64), 12).unwrap();
        let rm = RewardModel::from_sft(&big, 2).unwrap();
        let prompts: Vec<Vec<u32>> = (0..6).map(|i| vec![10 + i, 11, 12]).collect();
        let mut ppo = PpoTrainer::new(&sft, &rm, cfg(0.0, 2)).unwrap();
        let ms = ppo.train(&prompts, None, |_, _| Ok(true)).unwrap();
        assert!(ms.iter().all(|m| m.vf_loss.is_finite() && m.pg_loss.is_finite() && m.score_mean.is_finite()), "{ms:?}");
        assert_ne!(ms[0].vf_loss, ms[1].vf_loss);
        // Another vocabulary, or a shorter context, is refused with a clear error.
        for other in [Gpt2Config::custom(1, 2, 32, 40, 64), Gpt2Config::custom(1, 2, 32, 48, 32)] {
            let rm = RewardModel::from_sft(&Gpt2::new(other.clone(), 13).unwrap(), 2).unwrap();
            let Err(err) = PpoTrainer::new(&sft, &rm, cfg(0.0, 1)) else { panic!("{other:?} accepted") };
            let err = err.to_string();
            assert!(err.contains("vocabulary") && err.contains("context"), "{err}");
        }
    }
}
