//! The `instructgpt` binary end to end: its outputs parse, and bad input is a clear error, not a panic.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_instructgpt")).args(args).output().expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bench_matmul_json_has_the_promised_fields() {
    let o = run(&["bench", "matmul", "--shape", "64x48x32", "--threads", "1", "--reps", "3", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(j["shape"], "64x48x32");
    assert_eq!(j["device"], "cpu");
    assert_eq!(j["threads"], 1);
    assert!(j["gflops"].as_f64().unwrap() > 0.0);
    assert!(j["ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_train_step_profile_covers_every_phase() {
    let o = run(&["bench", "train-step", "--model", "tiny", "--batch", "2", "--seq-len", "16", "--reps", "1", "--threads", "1", "--profile", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let ops = j["profile"]["ops"].as_array().expect("profile rows");
    let row = |phase: &str, op: &str| ops.iter().find(|r| r["phase"] == phase && r["op"] == op).unwrap_or_else(|| panic!("no {phase} {op} in {ops:?}"));
    for (phase, op) in [("forward", "matmul"), ("forward", "attention"), ("forward", "layer_norm"), ("backward", "matmul"), ("backward", "attention"), ("optimizer", "adamw")] {
        assert!(row(phase, op)["ms_per_step"].as_f64().unwrap() > 0.0, "{phase} {op}");
    }
    let total: f64 = ops.iter().map(|r| r["ms_per_step"].as_f64().unwrap()).sum();
    assert!(total <= j["profile"]["ms_per_step"].as_f64().unwrap(), "the ops fit in the step");
}

#[test]
fn bench_memory_bound_ops_report_bandwidth() {
    for (op, shape) in [("softmax", "64x128"), ("layernorm", "64x128"), ("gelu", "4096"), ("cross-entropy", "16x1000"), ("adamw", "4096")] {
        let o = run(&["bench", op, "--shape", shape, "--reps", "3", "--json"]);
        assert!(o.status.success(), "{op}: {}", stderr(&o));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(j["gbps"].as_f64().unwrap() > 0.0, "{op}: {j}");
    }
    let o = run(&["bench", "attention", "--shape", "1x2x70x16", "--backward", "--reps", "3", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_input_is_a_clear_error() {
    let o = run(&["bench", "matmul", "--shape", "12xz"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad shape \"12xz\""), "{}", stderr(&o));
    let o = run(&["bench", "matmul", "--shape", "12x12"]);
    assert!(stderr(&o).contains("MxNxK"), "{}", stderr(&o));
    let o = run(&["bench", "matmul", "--device", "tpu"]);
    assert!(stderr(&o).contains("unknown device"), "{}", stderr(&o));
    for o in [run(&["bench", "matmul", "--shape", "12x12"]), run(&["bench", "matmul", "--device", "tpu"])] {
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

#[test]
fn no_gpu_here_means_an_error_not_a_panic() {
    // On a machine with a GPU and a `cuda` build this passes too: then the selftest itself runs.
    let o = run(&["selftest", "--device", "cuda", "--no-bench"]);
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    if !o.status.success() {
        assert!(err.starts_with("error: "), "{err}");
        eprintln!("selftest skipped here: {err}");
    }
    // The pipeline checks the device before any stage: no output directory is made without one.
    let out = std::env::temp_dir().join(format!("igpt-cli-cuda-{}", std::process::id()));
    let o = run(&["pipeline", "--preset", "smoke", "--device", "cuda", "--out", out.to_str().unwrap(), "--until", "sft"]);
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    if !o.status.success() {
        assert!(err.contains("--device cuda: "), "{err}");
        assert!(!out.exists(), "no stage ran");
    }
    let _ = std::fs::remove_dir_all(&out);
    let o = run(&["bench", "train-step", "--bf16"]);
    assert!(!o.status.success() && stderr(&o).contains("--bf16: autocast applies to CUDA"), "{}", stderr(&o));
    // A model larger than the machine's memory: a clear error, not an abort or the OOM killer.
    let huge = std::env::temp_dir().join(format!("igpt-cli-huge-{}.json", std::process::id()));
    std::fs::write(&huge, r#"{"n_layer":48,"n_head":64,"n_embd":65536,"n_positions":1024,"vocab_size":50257}"#).unwrap();
    let book = concat!(env!("CARGO_MANIFEST_DIR"), "/data/pretrain/gutenberg_11_alice_in_wonderland.txt");
    let o = run(&["pretrain", "--data", book, "--model", huge.to_str().unwrap(), "--out", out.to_str().unwrap(), "--steps", "1"]);
    let _ = std::fs::remove_file(&huge);
    assert!(!o.status.success() && stderr(&o).contains("error: out of memory: a GPT-2 of"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&out);
    // --bf16 on the CPU: refused before anything is written, by every command that trains.
    for args in [
        &["pipeline", "--preset", "smoke", "--bf16", "--out", out.to_str().unwrap()][..],
        &["pretrain", "--data", "x.txt", "--bf16", "--out", out.to_str().unwrap()],
        &["sft", "--bf16", "--out", out.to_str().unwrap()],
        &["rm", "--bf16", "--out", out.to_str().unwrap()],
        &["ppo", "--bf16", "--out", out.to_str().unwrap()],
    ] {
        let o = run(args);
        assert!(!o.status.success() && stderr(&o).contains("--bf16: autocast applies to CUDA"), "{args:?}: {}", stderr(&o));
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    let o = run(&["pipeline", "--device", "tpu", "--out", out.to_str().unwrap()]);
    assert!(stderr(&o).contains("unknown device \"tpu\""), "{}", stderr(&o));
    let o = run(&["info"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("sgemm kernel"));
}

#[test]
fn pretrain_then_eval_then_generate() {
    let dir = std::env::temp_dir().join(format!("igpt-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("micro.json");
    std::fs::write(&config, r#"{"n_layer":1,"n_head":2,"n_embd":32,"n_positions":64,"vocab_size":50257}"#).unwrap();
    let book = concat!(env!("CARGO_MANIFEST_DIR"), "/data/pretrain/gutenberg_11_alice_in_wonderland.txt");
    let out = dir.join("run");
    let o = run(&["pretrain", "--data", book, "--model", config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--steps", "6", "--batch", "2", "--seq-len", "32", "--eval-every", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count(), 6);

    let text = dir.join("held_out.txt");
    std::fs::write(&text, "Alice was beginning to get very tired of sitting by her sister on the bank.").unwrap();
    let o = run(&["eval", "--model", out.to_str().unwrap(), "--text", text.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (loss, ppl) = (j["loss"].as_f64().unwrap(), j["perplexity"].as_f64().unwrap());
    assert!(loss > 0.0 && (ppl - loss.exp()).abs() < 1e-6 * ppl, "{j}");

    let o = run(&["generate", "--model", out.to_str().unwrap(), "--prompt", "Alice", "--max-new-tokens", "5", "--seed", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again = run(&["generate", "--model", out.to_str().unwrap(), "--prompt", "Alice", "--max-new-tokens", "5", "--seed", "1"]);
    assert_eq!(o.stdout, again.stdout, "greedy generation is deterministic");

    // A transformers-written checkpoint with a 512-token vocabulary: a clear error, not a panic.
    let tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/gpt2-tiny");
    let o = run(&["generate", "--model", tiny, "--prompt", "Hello world"]);
    assert!(stderr(&o).contains("vocabulary has only 512"), "{}", stderr(&o));
    let o = run(&["eval", "--model", "/nonexistent", "--text", text.to_str().unwrap()]);
    assert!(stderr(&o).starts_with("error: ") && !stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn stage_commands_share_their_flags_and_resume() {
    for stage in ["sft", "rm", "ppo"] {
        let o = run(&[stage, "--help"]);
        let help = String::from_utf8_lossy(&o.stdout).into_owned();
        for flag in ["--config", "--out", "--lr", "--seed", "--device", "--skip-invalid", "--resume"] {
            assert!(help.contains(flag), "{stage} --help lacks {flag}: {help}");
        }
    }
    let dir = std::env::temp_dir().join(format!("igpt-cli-stages-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    std::fs::write(p("micro.json"), r#"{"n_layer":1,"n_head":2,"n_embd":32,"n_positions":64,"vocab_size":50257}"#).unwrap();
    let line = |v: serde_json::Value| format!("{v}\n");
    let topics = ["cats", "tea", "rain", "maps", "bread", "owls"];
    let demos: String = topics.iter().map(|t| line(serde_json::json!({"prompt": format!("Tell me about {t}."), "response": format!(" {t} are nice.")}))).collect();
    let cmps: String = topics.iter().map(|t| line(serde_json::json!({"prompt": format!("Tell me about {t}."), "chosen": format!(" {t} are nice."), "rejected": " No."}))).collect();
    let prompts: String = topics.iter().map(|t| line(serde_json::json!({"prompt": format!("Tell me about {t}.")}))).collect();
    std::fs::write(p("demos.jsonl"), demos).unwrap();
    std::fs::write(p("cmps.jsonl"), cmps).unwrap();
    std::fs::write(p("prompts.jsonl"), prompts).unwrap();

    let o = run(&["sft", "--model", &p("micro.json"), "--data", &p("demos.jsonl"), "--out", &p("sft"), "--epochs", "1", "--batch", "2", "--seed", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let rm = ["rm", "--sft", &p("sft"), "--data", &p("cmps.jsonl"), "--out", &p("rm"), "--epochs", "2", "--batch", "2", "--lr", "1e-3"];
    let o = run(&rm);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = || std::fs::read_to_string(dir.join("rm/metrics.jsonl")).unwrap().lines().count();
    assert_eq!(metrics(), 6, "2 epochs of 3 steps");
    assert!(dir.join("rm/trainer.json").exists() && dir.join("rm/reward.json").exists());
    // Resuming the finished run: nothing left to train, the metrics stay, the model is written.
    let o = run(&[&rm[..], &["--resume"]].concat());
    assert!(o.status.success() && stderr(&o).contains("resuming"), "{}", stderr(&o));
    assert_eq!(metrics(), 6);
    // Other comparisons: refused.
    let other_cmps = p("other.jsonl");
    std::fs::write(&other_cmps, std::fs::read_to_string(p("cmps.jsonl")).unwrap().replace("No.", "Never.")).unwrap();
    let mut other = rm;
    other[4] = &other_cmps;
    let o = run(&[&other[..], &["--resume"]].concat());
    assert!(!o.status.success() && stderr(&o).contains("--resume"), "{}", stderr(&o));

    std::fs::write(p("ppo.toml"), "resume_every = 1\n[ppo]\nrollout_batch = 4\nminibatch = 2\nppo_epochs = 1\nmax_new_tokens = 6\n").unwrap();
    let ppo = ["ppo", "--config", &p("ppo.toml"), "--sft", &p("sft"), "--rm", &p("rm"), "--prompts", &p("prompts.jsonl"), "--out", &p("ppo"), "--iterations", "2", "--value-lr", "0"];
    let o = run(&ppo);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("ppo/metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|m| m["value_lr"] == 0.0 && m["lr"].as_f64().unwrap() > 0.0), "{lines:?}");
    assert!(dir.join("ppo/trainer.json").exists() && dir.join("ppo/policy/model.safetensors").exists());
    let o = run(&[&ppo[..], &["--resume"]].concat());
    assert!(o.status.success() && stderr(&o).contains("resuming after iteration 2"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(dir.join("ppo/metrics.jsonl")).unwrap().lines().count(), 2);
}
