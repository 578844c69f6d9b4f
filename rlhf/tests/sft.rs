//! SFT: which tokens are learned (the target tensor), truncation, padding, the loss falling on the
//! bundled demonstrations, and an exact resume.

use models::tokenizer::EOT;
use models::{Gpt2, Gpt2Config, Tokenizer};
use rlhf::data::{load_demonstrations, Demonstration, LoadOptions};
use rlhf::sft::*;
use std::path::{Path, PathBuf};

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rlhf-sft-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn small_model(seed: u64) -> Gpt2 {
    Gpt2::new(Gpt2Config::custom(2, 2, 32, 64, 50257), seed).unwrap()
}

fn bundled_demos(n: usize) -> Vec<Demonstration> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/rlhf/demonstrations.jsonl");
    load_demonstrations(path, LoadOptions::default()).unwrap().items.into_iter().take(n).collect()
}

#[test]
fn targets_mask_exactly_the_prompt() {
    let tok = Tokenizer::gpt2();
    let d = Demonstration { prompt: "\n\nHuman: Say hi\n\nAssistant:".into(), response: " Hello there".into() };
    let (p, r) = (tok.encode(&d.prompt), tok.encode(&d.response));
    let e = encode(&tok, &d, 1024, 8).unwrap();
    assert_eq!(e.ids, [p.clone(), r.clone(), vec![EOT]].concat());
    assert_eq!(e.prompt_len, p.len());
    let (ids, targets, kept) = collate(&[&e]).unwrap();
    let n = e.ids.len() - 1;
    assert_eq!(ids.shape(), &[1, n]);
    assert_eq!(ids.to_vec_i64().unwrap(), e.ids[..n].iter().map(|&t| t as i64).collect::<Vec<_>>());
    // Positions 0..P-1 predict prompt tokens 1..P: ignored. From P-1 on they predict the
    // response and then EOT: learned.
    let mut want = vec![IGNORE; p.len() - 1];
    want.extend(r.iter().map(|&t| t as i64));
    want.push(EOT as i64);
    assert_eq!(targets.to_vec_i64().unwrap(), want);
    assert_eq!(kept, r.len() + 1);
}

#[test]
fn truncation_cuts_the_prompt_from_the_left_first() {
    let (p, r): (Vec<u32>, Vec<u32>) = ((0..20).collect(), (100..106).collect());
    // Fits: untouched.
    let e = truncate(p.clone(), r.clone(), 25, 4).unwrap();
    assert_eq!((e.ids.len(), e.prompt_len), (26, 20));
    // Too long by 6: the first 6 prompt tokens go, the response stays whole.
    let e = truncate(p.clone(), r.clone(), 19, 4).unwrap();
    assert_eq!(e.ids, [(6..20).collect::<Vec<u32>>(), r.clone()].concat());
    assert_eq!(e.prompt_len, 14);
    // The prompt keeps its floor of 4 (its last 4); the response is cut from the right.
    let e = truncate(p.clone(), r.clone(), 7, 4).unwrap();
    assert_eq!(e.ids, vec![16, 17, 18, 19, 100, 101, 102, 103]);
    assert_eq!(e.prompt_len, 4);
    // A floor larger than the context still leaves one response token.
    let e = truncate(p, r, 5, 100).unwrap();
    assert_eq!((e.ids.len(), e.prompt_len), (6, 5));
    assert!(truncate(vec![], vec![1], 8, 4).is_err());
}

#[test]
fn padding_is_ignored() {
    let tok = Tokenizer::gpt2();
    let demos = bundled_demos(3);
    let ex: Vec<SftExample> = demos.iter().map(|d| encode(&tok, d, 64, 16).unwrap()).collect();
    let (ids, targets, kept) = collate(&[&ex[0], &ex[1], &ex[2]]).unwrap();
    let t = ids.shape()[1];
    let tv = targets.to_vec_i64().unwrap();
    let idv = ids.to_vec_i64().unwrap();
    for (b, e) in ex.iter().enumerate() {
        for i in e.ids.len() - 1..t {
            assert_eq!((tv[b * t + i], idv[b * t + i]), (IGNORE, 0), "row {b} pad position {i}");
        }
    }
    assert_eq!(kept, ex.iter().map(|e| e.target_tokens()).sum::<usize>());
    // The padded batch's mean loss equals the token-weighted mean of each row alone.
    let model = small_model(1);
    let batch_loss = model.loss(&ids, &targets).unwrap().to_scalar().unwrap() as f64;
    let mut sum = 0f64;
    for e in &ex {
        let (i, t, k) = collate(&[e]).unwrap();
        sum += model.loss(&i, &t).unwrap().to_scalar().unwrap() as f64 * k as f64;
    }
    let alone = sum / kept as f64;
    assert!((batch_loss - alone).abs() < 1e-4 * alone, "{batch_loss} vs {alone}");
}

fn quick_cfg() -> SftConfig {
    SftConfig { epochs: 1, batch: 4, lr: 3e-3, min_lr: 3e-4, warmup_frac: 0.0, max_len: 64, min_prompt_tokens: 16, val_fraction: 0.2, ..SftConfig::default() }
}

#[test]
fn loss_falls_on_the_bundled_demonstrations() {
    let tok = Tokenizer::gpt2();
    let demos = bundled_demos(40);
    let out = out_dir("falls");
    let cfg = SftConfig { epochs: 3, ..quick_cfg() };
    let mut steps = Vec::new();
    train_sft(small_model(0), &tok, &demos, &cfg, &out, false, |m| {
        steps.push(m.clone());
        true
    })
    .unwrap();
    assert_eq!(steps.len(), 24, "32 training examples / batch 4 x 3 epochs");
    let first = steps[..3].iter().map(|m| m.loss).sum::<f32>() / 3.0;
    let last = steps[steps.len() - 3..].iter().map(|m| m.loss).sum::<f32>() / 3.0;
    assert!(last < first - 1.0, "training loss {first} -> {last}");
    let vals: Vec<f32> = steps.iter().filter_map(|m| m.val_loss).collect();
    assert_eq!(vals.len(), 3, "one held-out loss per epoch");
    assert!(vals[2] < vals[0], "held-out loss {vals:?}");
    // HF export, metrics and the resume pointer are there.
    for f in ["config.json", "model.safetensors", "metrics.jsonl", "trainer.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    assert_eq!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count(), 24);
    // A fresh (not resumed) run into the same directory starts a fresh metrics file.
    train_sft(small_model(0), &tok, &demos, &quick_cfg(), &out, false, |_| true).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count(), 8);
}

#[test]
fn resume_after_an_epoch_matches_the_uninterrupted_run() {
    let tok = Tokenizer::gpt2();
    let demos = bundled_demos(20);
    let cfg = SftConfig { epochs: 2, ..quick_cfg() };
    let full = train_sft(small_model(3), &tok, &demos, &cfg, &out_dir("full"), false, |_| true).unwrap();
    let out = out_dir("resumed");
    // Stop at the end of epoch 1 (4 steps: 16 examples / 4), then resume.
    train_sft(small_model(3), &tok, &demos, &cfg, &out, false, |m| m.step < 4).unwrap();
    let mut resumed_steps = Vec::new();
    let resumed = train_sft(small_model(99), &tok, &demos, &cfg, &out, true, |m| {
        resumed_steps.push(m.step);
        true
    })
    .unwrap();
    assert_eq!(resumed_steps, vec![5, 6, 7, 8]);
    for ((name, a), (_, b)) in full.params().iter().zip(resumed.params()) {
        assert_eq!(a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap(), "{name}");
    }
    // Other data is refused.
    let err = train_sft(small_model(3), &tok, &demos[..10], &cfg, &out, true, |_| true).unwrap_err();
    assert!(format!("{err:#}").contains("--resume"), "{err:#}");
}
