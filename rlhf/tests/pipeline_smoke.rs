//! The pipeline end to end at the `smoke` size: every stage runs, every file is written, the same
//! seed gives the same results, and a finished stage is reused rather than retrained.

use rlhf::pipeline::{self, PipelineConfig, Silent};

#[test]
fn smoke_pipeline_runs_every_stage_and_is_deterministic() {
    let cfg = PipelineConfig::preset("smoke", 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let ra = pipeline::run(&cfg, &a, &mut Silent).unwrap();
    for f in ["results.json", "report.html", "samples.json", "pipeline.json", "data/demonstrations.jsonl", "rankings/comparisons.jsonl", "rankings/heldout.jsonl", "data/eval_prompts.jsonl", "pretrained/model.safetensors", "sft/config.json", "rm/config.json", "ppo/policy/model.safetensors", "ppo_ptx/value/config.json", "ppo/metrics.jsonl", "rm/heldout.jsonl"] {
        assert!(a.join(f).is_file(), "{f} is missing");
    }
    let html = std::fs::read_to_string(a.join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 6 && html.contains("<polyline"), "curves as inline SVG");
    for key in ["ppo_vs_sft", "ppo_ptx_vs_sft"] {
        assert!((0.0..=1.0).contains(&ra.win_rate[key]), "{key}");
    }
    for m in ["pretrained", "sft", "ppo", "ppo_ptx"] {
        assert!(ra.ptx_loss[m].is_finite() && ra.ptx_loss[m] > 0.0, "{m}");
        assert!((0.0..=1.0).contains(&ra.gold_score[m]), "{m}");
    }
    assert!(ra.kl.contains_key("ppo") && ra.kl.contains_key("ppo_ptx"));
    let ppo_lines = std::fs::read_to_string(a.join("ppo_ptx/metrics.jsonl")).unwrap();
    assert_eq!(ppo_lines.lines().count() as u64, cfg.ppo.iterations);
    assert!(ppo_lines.contains("heldout_ptx_loss") && ppo_lines.contains("ptx_loss"));

    // Same seed, another directory: the same results (wall time aside).
    let rb = pipeline::run(&cfg, &b, &mut Silent).unwrap();
    let strip = |r: &pipeline::Results| {
        let mut v = serde_json::to_value(r).unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        v
    };
    assert_eq!(strip(&ra), strip(&rb));
    // Run again in place: every stage is reused, and the figures are unchanged.
    let sft_weights = std::fs::metadata(a.join("sft/model.safetensors")).unwrap().modified().unwrap();
    let rc = pipeline::run(&cfg, &a, &mut Silent).unwrap();
    assert_eq!(strip(&ra), strip(&rc));
    assert_eq!(std::fs::metadata(a.join("sft/model.safetensors")).unwrap().modified().unwrap(), sft_weights, "sft was reused, not retrained");
    // Two responses per prompt and model: every pair counts, and the stages are reused.
    let count = |r: &pipeline::Results| r.win_counts.values().map(|w| w.wins + w.ties + w.losses).collect::<Vec<_>>();
    assert_eq!(count(&ra), vec![cfg.eval_prompts; 2]);
    let r2 = pipeline::run(&PipelineConfig { eval_samples: 2, ..cfg.clone() }, &a, &mut Silent).unwrap();
    assert_eq!((count(&r2), r2.eval_samples), (vec![2 * cfg.eval_prompts; 2], 2));
    assert_eq!(std::fs::metadata(a.join("sft/model.safetensors")).unwrap().modified().unwrap(), sft_weights);
    // Another seed: another run.
    let rd = pipeline::run(&PipelineConfig::preset("smoke", 8).unwrap(), &dir.path().join("d"), &mut Silent).unwrap();
    assert_ne!(strip(&ra), strip(&rd));
}

#[test]
fn the_reward_model_can_start_from_its_own_longer_trained_sft_model() {
    let dir = tempfile::tempdir().unwrap();
    let (own, policys) = (dir.path().join("own"), dir.path().join("policys"));
    let mut cfg = PipelineConfig::preset("smoke", 7).unwrap();
    pipeline::run_until(&cfg, &policys, &mut Silent, pipeline::Until::Rm).unwrap();
    cfg.rm_sft_epochs = Some(2);
    pipeline::run_until(&cfg, &own, &mut Silent, pipeline::Until::Rm).unwrap();
    let bytes = |d: &std::path::Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert!(own.join("rm_sft/model.safetensors").is_file() && !policys.join("rm_sft").exists());
    assert_eq!(bytes(&own, "sft/model.safetensors"), bytes(&policys, "sft/model.safetensors"), "the policy's SFT model is the same");
    assert_eq!(bytes(&own, "rankings/comparisons.jsonl"), bytes(&policys, "rankings/comparisons.jsonl"), "the labelers rank the policy's samples");
    assert_ne!(bytes(&own, "rm_sft/model.safetensors"), bytes(&own, "sft/model.safetensors"));
    assert_ne!(bytes(&own, "rm/model.safetensors"), bytes(&policys, "rm/model.safetensors"), "another start, another reward model");
}

#[test]
fn contradictory_reward_model_starts_are_refused_before_any_stage_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = PipelineConfig::preset("smoke", 7).unwrap();
    cfg.rm_from_large_sft = true;
    let err = pipeline::run(&cfg, dir.path(), &mut Silent).unwrap_err().to_string();
    assert!(err.contains("large_model"), "{err}");
    cfg.large_model = Some(cfg.model);
    cfg.rm_sft_epochs = Some(2);
    let err = pipeline::run(&cfg, dir.path(), &mut Silent).unwrap_err().to_string();
    assert!(err.contains("rm_sft_epochs") && err.contains("set one"), "{err}");
    let (mut cfg, epochs) = (PipelineConfig::preset("smoke", 7).unwrap(), Some(0));
    cfg.rm_sft_epochs = epochs;
    let err = pipeline::run(&cfg, dir.path(), &mut Silent).unwrap_err().to_string();
    assert!(err.contains("rm_sft_epochs = 0"), "{err}");
    let mut cfg = PipelineConfig::preset("smoke", 7).unwrap();
    cfg.set("bf16=true").unwrap();
    let err = pipeline::run(&cfg, dir.path(), &mut Silent).unwrap_err().to_string();
    assert!(err.contains("bf16") && err.contains("CPU engine is f32"), "{err}");
    assert!(!dir.path().join("pretrained").exists(), "nothing was trained");
}

#[test]
fn a_second_round_ranks_the_policys_answers_and_trains_a_new_reward_model_on_all_rankings() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cfg = PipelineConfig::preset("smoke", 7).unwrap();
    pipeline::run_until(&cfg, &out, &mut Silent, pipeline::Until::Rm).unwrap();
    let bytes = |f: &str| std::fs::read(out.join(f)).unwrap();
    let (sft, rankings, rm) = (bytes("sft/model.safetensors"), bytes("rankings/comparisons.jsonl"), bytes("rm/model.safetensors"));
    assert!(!out.join("ppo_round1").exists());

    let two = PipelineConfig { rlhf_rounds: 2, ..cfg.clone() };
    pipeline::run_until(&two, &out, &mut Silent, pipeline::Until::Rm).unwrap();
    // Round 1 is reused as it was; round 2 adds a policy, its rankings and a new reward model.
    assert_eq!((bytes("sft/model.safetensors"), bytes("rankings/comparisons.jsonl"), bytes("rm/model.safetensors")), (sft, rankings.clone(), rm.clone()));
    assert!(out.join("ppo_round1/policy/model.safetensors").is_file());
    let lines = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).collect::<Vec<_>>();
    let (first, second) = (lines(&rankings), lines(&bytes("rankings_round2/comparisons.jsonl")));
    assert_eq!(first.len(), second.len(), "one ranking per reward-model prompt again");
    assert!(first.iter().zip(&second).all(|(a, b)| a["prompt"] == b["prompt"]), "the same prompts");
    let differ = first.iter().zip(&second).filter(|(a, b)| a["responses"] != b["responses"]).count();
    assert!(differ > first.len() / 2, "new answers, from the policy: {differ} of {} differ", first.len());
    assert_ne!(bytes("rm_round2/model.safetensors"), rm, "a new reward model");
    let facts: serde_json::Value = serde_json::from_slice(&bytes("rm_round2/stage.json")).unwrap();
    let metrics = String::from_utf8(bytes("rm_round2/metrics.jsonl")).unwrap();
    let steps_one = String::from_utf8(bytes("rm/metrics.jsonl")).unwrap().lines().count();
    assert!(metrics.lines().count() >= 2 * steps_one - 1, "it trains on both rounds' rankings ({} steps, {steps_one} in round 1)", metrics.lines().count());
    assert!(facts["facts"]["gold_accuracy"].as_f64().is_some());

    // To the end: PPO and PPO-ptx learn against the round-2 reward model.
    let r = pipeline::run(&two, &out, &mut Silent).unwrap();
    assert!(r.seconds.contains_key("rm_round2") && r.seconds.contains_key("ppo_round1"));
    assert!((0.0..=1.0).contains(&r.win_rate["ppo_ptx_vs_sft"]));
}
