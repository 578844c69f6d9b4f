//! Pretraining: the loss falls, `--resume` continues bit for bit, token files reject bad input.

use models::pretrain::{pretrain, PretrainConfig};
use models::tokens::TokenFile;
use models::{Gpt2, Gpt2Config, Tokenizer};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("igpt-pretrain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn corpus(dir: &Path) -> TokenFile {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/pretrain/gutenberg_11_alice_in_wonderland.txt")).unwrap();
    let path = dir.join("tokens.bin");
    TokenFile::write(&path, &Tokenizer::gpt2().encode(&text[..40_000])).unwrap();
    TokenFile::open(&path).unwrap()
}

fn micro() -> Gpt2 {
    Gpt2::new(Gpt2Config::custom(1, 2, 32, 32, 50257), 3).unwrap()
}

fn cfg(steps: u64) -> PretrainConfig {
    PretrainConfig { steps, batch: 2, seq_len: 32, lr: 3e-3, min_lr: 3e-4, warmup: 2, eval_every: 5, eval_batches: 2, checkpoint_every: 5, ..Default::default() }
}

fn weights(model: &Gpt2) -> Vec<u32> {
    model.params().iter().flat_map(|(_, t)| t.to_vec_f32().unwrap()).map(f32::to_bits).collect()
}

#[test]
fn loss_falls_and_held_out_loss_is_reported() {
    let dir = tmp("falls");
    let data = corpus(&dir);
    let mut losses = Vec::new();
    let mut val = Vec::new();
    pretrain(micro(), &data, &cfg(30), &dir.join("run"), false, |m| {
        losses.push(m.loss);
        val.extend(m.val_loss);
        true
    })
    .unwrap();
    let (first, last) = (losses[..5].iter().sum::<f32>() / 5.0, losses[25..].iter().sum::<f32>() / 5.0);
    assert!(last < first - 1.0, "loss should fall: first five {first}, last five {last}");
    assert_eq!(val.len(), 6);
    assert!(val.last().unwrap() < val.first().unwrap(), "held-out loss should fall: {val:?}");
    let lines = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap().lines().count();
    assert_eq!(lines, 30);
    // The HF export loads and the resume pointer names the one remaining checkpoint.
    models::hf::load(dir.join("run")).unwrap();
    let pointer = std::fs::read_to_string(dir.join("run/trainer.json")).unwrap();
    assert!(pointer.contains("trainer-30"));
    let kept: Vec<_> = std::fs::read_dir(dir.join("run")).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("trainer-")).collect();
    assert_eq!(kept.len(), 1);
    // A fresh (not resumed) run into the same directory starts a fresh metrics file.
    pretrain(micro(), &data, &cfg(5), &dir.join("run"), false, |_| true).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap().lines().count(), 5);
}

#[test]
fn resume_continues_bit_for_bit() {
    let dir = tmp("resume");
    let data = corpus(&dir);
    let straight = pretrain(micro(), &data, &cfg(12), &dir.join("a"), false, |_| true).unwrap();
    // Interrupted after step 7 (between checkpoints: the stop itself writes one), then resumed.
    pretrain(micro(), &data, &cfg(12), &dir.join("b"), false, |m| m.step < 7).unwrap();
    let other_init = Gpt2::new(Gpt2Config::custom(1, 2, 32, 32, 50257), 99).unwrap();
    let resumed = pretrain(other_init, &data, &cfg(12), &dir.join("b"), true, |_| true).unwrap();
    assert_eq!(weights(&resumed), weights(&straight), "resumed run must equal the uninterrupted one");
    let a = std::fs::read_to_string(dir.join("a/metrics.jsonl")).unwrap();
    let b = std::fs::read_to_string(dir.join("b/metrics.jsonl")).unwrap();
    let strip = |s: &str| s.lines().map(|l| l.split("\"tokens_per_s\"").next().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(strip(&a), strip(&b), "the metrics of both runs agree step for step");
}

#[test]
fn resume_without_a_checkpoint_is_a_clear_error() {
    let dir = tmp("nockpt");
    let data = corpus(&dir);
    let e = pretrain(micro(), &data, &cfg(3), &dir.join("empty"), true, |_| true).expect_err("must fail");
    assert!(format!("{e:#}").contains("no checkpoint to resume"), "{e:#}");
}

/// A model or a batch larger than the machine's memory: a clear error before anything is
/// allocated (Linux would overcommit and the process die later), not an abort.
#[test]
fn more_than_the_machine_can_hold_is_refused_up_front() {
    let huge = Gpt2Config::custom(48, 64, 65536, 1024, 50257);
    let e = Gpt2::new(huge, 0).expect_err("2.5e12 parameters do not fit");
    assert!(e.to_string().starts_with("out of memory: a GPT-2 of") && e.to_string().contains("available"), "{e}");
    let dir = tmp("oom");
    let data = corpus(&dir);
    let cfg = PretrainConfig { batch: 1 << 30, ..cfg(1) };
    let e = pretrain(micro(), &data, &cfg, &dir.join("run"), false, |_| true).expect_err("a batch of 2^30 rows does not fit");
    assert!(format!("{e:#}").contains("on batches of 1073741824 x"), "{e:#}");
    assert!(!dir.join("run/metrics.jsonl").exists(), "no step ran");
}

#[test]
fn token_files_round_trip_and_reject_bad_input() {
    let dir = tmp("tokens");
    let p = dir.join("t.bin");
    TokenFile::write(&p, &[1, 50256, 7, 65535]).unwrap();
    let t = TokenFile::open(&p).unwrap();
    assert_eq!(t.window(0, 4), vec![1, 50256, 7, 65535]);
    TokenFile::write(&p, &[70000, 3]).unwrap();
    assert_eq!(TokenFile::open(&p).unwrap().window(0, 2), vec![70000, 3]);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
    let e = TokenFile::open(&p).err().unwrap().to_string();
    assert!(e.contains("truncated") && e.contains("t.bin"), "{e}");
    std::fs::write(&p, b"not a token file at all, really").unwrap();
    assert!(TokenFile::open(&p).err().unwrap().to_string().contains("bad magic"));
    // Too few tokens for the windows: an error naming the file, not a panic.
    TokenFile::write(&p, &[1, 2, 3]).unwrap();
    let small = TokenFile::open(&p).unwrap();
    let e = pretrain(micro(), &small, &cfg(2), &dir.join("run"), false, |_| true).err().unwrap();
    assert!(format!("{e:#}").contains("too few"), "{e:#}");
}
