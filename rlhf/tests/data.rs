//! The dataset loaders: every format (plain and .gz), the HH-RLHF prompt split on real
//! dialogues, bad lines named by file and line, skip counts, and the bundled subsets.

use rlhf::data::*;
use std::io::Write;
use std::path::{Path, PathBuf};

fn tmp(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlhf-data-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    if name.ends_with(".gz") {
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::default());
        gz.write_all(content.as_bytes()).unwrap();
        gz.finish().unwrap();
    } else {
        std::fs::write(&path, content).unwrap();
    }
    path
}

fn bundled(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/rlhf").join(name)
}

const STRICT: LoadOptions = LoadOptions { skip_invalid: false };
const SKIP: LoadOptions = LoadOptions { skip_invalid: true };

#[test]
fn demonstrations_plain_gz_and_completion_spelling() {
    let text = "{\"prompt\":\"Q1\",\"response\":\" A1\"}\n\n{\"prompt\":\"Q2\",\"completion\":\" A2\",\"extra\":1}\n";
    for name in ["demos.jsonl", "demos.jsonl.gz"] {
        let got = load_demonstrations(tmp(name, text), STRICT).unwrap();
        assert_eq!(got.skipped, 0);
        assert_eq!(
            got.items,
            vec![Demonstration { prompt: "Q1".into(), response: " A1".into() }, Demonstration { prompt: "Q2".into(), response: " A2".into() }]
        );
    }
}

#[test]
fn kwise_pairwise_and_mixed_comparisons() {
    let text = concat!(
        "{\"prompt\":\"P\",\"responses\":[\"a\",\"b\",\"c\"],\"ranking\":[2,0,1]}\n",
        "{\"prompt\":\"P2\",\"chosen\":\"good\",\"rejected\":\"bad\"}\n",
    );
    let got = load_comparisons(tmp("cmp.jsonl.gz", text), STRICT).unwrap();
    assert_eq!(got.items[0], Comparison { prompt: "P".into(), responses: vec!["a".into(), "b".into(), "c".into()], ranking: vec![2, 0, 1] });
    assert_eq!(got.items[1], Comparison { prompt: "P2".into(), responses: vec!["good".into(), "bad".into()], ranking: vec![0, 1] });
}

#[test]
fn hh_split_keeps_the_whole_dialogue_as_prompt() {
    // Real helpful-base test records (the first, and a multi-turn one whose replies start alike).
    let (c, r) = (
        "\n\nHuman: Do you know why turkeys became the official food of thanksgiving?\n\nAssistant: To be honest, I don’t know anything about that.",
        "\n\nHuman: Do you know why turkeys became the official food of thanksgiving?\n\nAssistant: I know that the American Indians were the first to celebrate the first thanksgiving.",
    );
    let (p, cr, rr) = split_hh_pair(c, r).unwrap();
    assert_eq!(p, "\n\nHuman: Do you know why turkeys became the official food of thanksgiving?\n\nAssistant:");
    assert_eq!((cr, rr), (" To be honest, I don’t know anything about that.", " I know that the American Indians were the first to celebrate the first thanksgiving."));
    let multi = "\n\nHuman: What are some cuss words in english?\n\nAssistant: Here’s an incomplete list.\n\nHuman: What's your favorite one?\n\nAssistant:";
    let (c, r) = (format!("{multi} I haven't even thought about it."), format!("{multi} I have a few."));
    let (p, cr, rr) = split_hh_pair(&c, &r).unwrap();
    assert_eq!(p, multi);
    assert_eq!((cr, rr), (" I haven't even thought about it.", " I have a few."));
    // Replies sharing their first words and "\n\nAssistant:" inside the replies don't move the cut.
    let (p, cr, rr) = split_hh_pair("\n\nHuman: hi\n\nAssistant: Sure thing", "\n\nHuman: hi\n\nAssistant: Sure, no").unwrap();
    assert_eq!((p, cr, rr), ("\n\nHuman: hi\n\nAssistant:", " Sure thing", " Sure, no"));
    assert!(split_hh_pair("\n\nHuman: a", "\n\nHuman: b").is_err());
}

#[test]
fn hh_loader_on_the_bundled_real_pairs() {
    let path = bundled("hh_rlhf_helpful.jsonl");
    let got = load_hh_rlhf(&path, STRICT).unwrap();
    assert_eq!((got.items.len(), got.skipped), (150, 0));
    let raw: Vec<serde_json::Value> = std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (c, r) in got.items.iter().zip(&raw) {
        assert!(c.prompt.starts_with("\n\nHuman:") && c.prompt.ends_with("\n\nAssistant:"));
        assert_eq!(format!("{}{}", c.prompt, c.responses[0]), r["chosen"].as_str().unwrap());
        assert_eq!(format!("{}{}", c.prompt, c.responses[1]), r["rejected"].as_str().unwrap());
        assert!(!c.responses[0].contains("\n\nHuman:") && !c.responses[1].contains("\n\nHuman:"));
    }
    // The auto-detecting loader reads the same lines the same way.
    assert_eq!(load_comparisons(&path, STRICT).unwrap(), got);
}

#[test]
fn tldr_prompt_and_choice() {
    let line = r#"{"info": {"id": "t3_x", "post": "My post.", "title": "A title", "subreddit": "AskReddit"}, "split": "valid2", "summaries": [{"text": " first", "policy": "a", "note": null}, {"text": " second", "policy": "ref", "note": "ok"}], "choice": 1, "worker": "w", "batch": "batch18", "extra": {"confidence": 2}}"#;
    let got = load_tldr(tmp("tldr.jsonl", line), STRICT).unwrap();
    assert_eq!(got.items[0].prompt, "SUBREDDIT: r/AskReddit\nTITLE: A title\nPOST: My post.\nTL;DR:");
    assert_eq!(got.items[0].responses, vec![" first", " second"]);
    assert_eq!(got.items[0].ranking, vec![1, 0]);
    let bundled = load_tldr(bundled("tldr_comparisons.jsonl"), STRICT).unwrap();
    assert_eq!((bundled.items.len(), bundled.skipped), (60, 0));
}

#[test]
fn prompts_with_and_without_source() {
    let got = load_prompts(tmp("prompts.jsonl.gz", "{\"prompt\":\"a\"}\n{\"prompt\":\"b\",\"source\":\"hh\"}\n"), STRICT).unwrap();
    assert_eq!(got.items, vec![Prompt { prompt: "a".into() }, Prompt { prompt: "b".into() }]);
}

/// Each bad line on line 2 after a good line 1: the error names the file and line 2, and
/// skip_invalid skips exactly that line.
#[test]
fn every_bad_line_is_named_by_file_and_line() {
    let good_cmp = "{\"prompt\":\"P\",\"chosen\":\"a\",\"rejected\":\"b\"}";
    let cases: &[(&str, &str, &str)] = &[
        ("cmp", "{\"prompt\":\"P\",\"responses\":[\"a\",\"b\"],", "malformed JSON"),
        ("cmp", "[1,2]", "not a JSON object"),
        ("cmp", "{\"prompt\":\"P\",\"responses\":[\"a\",\"b\"]}", "missing field \"ranking\""),
        ("cmp", "{\"prompt\":\"P\",\"responses\":[\"a\",\"b\"],\"ranking\":[0,0]}", "not a permutation"),
        ("cmp", "{\"prompt\":\"P\",\"responses\":[\"a\",\"b\"],\"ranking\":[0,2]}", "not a permutation"),
        ("cmp", "{\"prompt\":\"P\",\"responses\":[\"a\",\"b\",\"c\"],\"ranking\":[0,1]}", "has 2 entries for 3"),
        ("cmp", "{\"prompt\":\"P\",\"responses\":[\"a\"],\"ranking\":[0]}", "at least 2"),
        ("cmp", "{\"prompt\":\"P\",\"responses\":[\"a\",\"b\"],\"ranking\":[0,-1]}", "not an index"),
        ("cmp", "{\"prompt\":\"P\",\"responses\":[\"a\",\" \"],\"ranking\":[0,1]}", "response 1 is empty"),
        ("cmp", "{\"prompt\":\"P\",\"chosen\":\"same\",\"rejected\":\"same\"}", "identical"),
        ("cmp", "{\"prompt\":\"\",\"chosen\":\"a\",\"rejected\":\"b\"}", "\"prompt\" is empty"),
        ("cmp", "{\"chosen\":\"\\n\\nHuman: hi\\n\\nAssistant: a\",\"rejected\":\"\\n\\nHuman: hi\\n\\nAssistant: \"}", "response 1 is empty"),
        ("cmp", "{\"chosen\":\"Human: a\",\"rejected\":\"Human: b\"}", "share no"),
        ("cmp", "{\"info\":{\"post\":\"p\",\"title\":\"t\",\"subreddit\":\"s\"},\"summaries\":[{\"text\":\"a\"},{\"text\":\"b\"}],\"choice\":2}", "not 0 or 1"),
        ("cmp", "{\"prompt\":\"P\"}", "not a comparison"),
        ("demo", "{\"prompt\":\"P\"}", "missing field \"response\""),
        ("demo", "{\"prompt\":\"P\",\"response\":\"\"}", "\"response\" is empty"),
        ("demo", "{\"prompt\":\"P\",\"response\":3}", "not a string"),
        ("prompt", "{\"text\":\"P\"}", "missing field \"prompt\""),
    ];
    for (i, (kind, bad, why)) in cases.iter().enumerate() {
        let first = match *kind {
            "cmp" => good_cmp,
            "demo" => "{\"prompt\":\"P\",\"response\":\"R\"}",
            _ => "{\"prompt\":\"P\"}",
        };
        let name = format!("bad{i}.jsonl{}", if i % 2 == 0 { ".gz" } else { "" });
        let path = tmp(&name, &format!("{first}\n{bad}\n{first}\n"));
        let load = |o| -> anyhow::Result<usize> {
            Ok(match *kind {
                "cmp" => { let l = load_comparisons(&path, o)?; assert_eq!(l.items.len(), 2); l.skipped }
                "demo" => { let l = load_demonstrations(&path, o)?; assert_eq!(l.items.len(), 2); l.skipped }
                _ => { let l = load_prompts(&path, o)?; assert_eq!(l.items.len(), 2); l.skipped }
            })
        };
        let err = format!("{:#}", load(STRICT).unwrap_err());
        assert!(err.contains(&format!("{name}:2: ")), "case {i}: {err}");
        assert!(err.contains(why), "case {i}: expected {why:?} in {err}");
        assert_eq!(load(SKIP).unwrap(), 1, "case {i}");
    }
}

#[test]
fn a_missing_file_is_named() {
    let err = format!("{:#}", load_prompts("/nonexistent/p.jsonl", STRICT).unwrap_err());
    assert!(err.contains("/nonexistent/p.jsonl"), "{err}");
}

#[test]
fn bundled_subsets_load_strictly() {
    let d = load_demonstrations(bundled("demonstrations.jsonl"), STRICT).unwrap();
    assert_eq!((d.items.len(), d.skipped), (300, 0));
    assert!(d.items.iter().all(|x| x.prompt.ends_with("\n\nAssistant:") && x.response.starts_with(' ')));
    let k = load_comparisons(bundled("oasst1_rankings.jsonl"), STRICT).unwrap();
    assert_eq!(k.items.len(), 80);
    assert!(k.items.iter().any(|c| c.responses.len() > 2), "OASST1 gives K > 2 rankings");
    assert_eq!(load_prompts(bundled("ppo_prompts.jsonl"), STRICT).unwrap().items.len(), 300);
    let eval = load_prompts(bundled("eval_prompts.jsonl"), STRICT).unwrap();
    assert_eq!(eval.items.len(), 160);
    // The held-out prompts are not among the PPO prompts.
    let ppo: std::collections::HashSet<_> = load_prompts(bundled("ppo_prompts.jsonl"), STRICT).unwrap().items.into_iter().collect::<Vec<_>>().into_iter().map(|p| p.prompt).collect();
    assert!(eval.items.iter().all(|p| !ppo.contains(&p.prompt)));
}
