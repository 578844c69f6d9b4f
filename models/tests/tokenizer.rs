//! The GPT-2 tokenizer against every vector of fixtures/tokenizer/gpt2_vectors.json (ids made with
//! transformers' GPT2Tokenizer and cross-checked against OpenAI's encoder.py algorithm).

mod common;
use models::tokenizer::{Tokenizer, EOT};
use serde_json::Value;

#[test]
fn every_vector_encodes_and_decodes_like_transformers() {
    let text = std::fs::read_to_string(common::fixtures().join("tokenizer/gpt2_vectors.json")).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file["eot_token_id"], EOT);
    let tok = Tokenizer::gpt2();
    assert_eq!(file["vocab_size"].as_u64(), Some(tok.vocab_size() as u64));
    let vectors = file["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 44);
    let mut failures = Vec::new();
    let mut modes = [0, 0];
    for v in vectors {
        let text = v["text"].as_str().unwrap();
        let want: Vec<u32> = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let special = match v["mode"].as_str().unwrap() {
            "ordinary" => false,
            "special" => true,
            m => panic!("unknown mode {m}"),
        };
        modes[special as usize] += 1;
        let got = if special { tok.encode_with_special(text) } else { tok.encode(text) };
        if got != want {
            failures.push(format!("{} {text:?}: got {got:?}, want {want:?}", v["category"]));
        }
        // Texts without the special token encode the same either way.
        if !text.contains("<|endoftext|>") && tok.encode_with_special(text) != want {
            failures.push(format!("{text:?}: special mode differs"));
        }
        match tok.decode(&want) {
            Ok(back) if back == text => {}
            other => failures.push(format!("{text:?}: decodes to {other:?}")),
        }
    }
    assert!(modes[0] > 0 && modes[1] > 0, "both modes covered: {modes:?}");
    assert!(failures.is_empty(), "{} of {} vectors fail:\n{}", failures.len(), vectors.len(), failures.join("\n"));
}

#[test]
fn decoding_errors_and_partial_characters() {
    let tok = Tokenizer::gpt2();
    assert!(tok.decode(&[50257]).is_err());
    // An emoji is four bytes spread over several tokens: stop after the first.
    let ids = tok.encode("🤗");
    assert!(ids.len() > 1);
    assert!(tok.decode(&ids[..1]).is_err());
    assert!(tok.decode_lossy(&ids[..1]).unwrap().contains('\u{FFFD}'));
    assert_eq!(tok.decode(&[EOT]).unwrap(), "<|endoftext|>");
}

#[test]
fn byte_vocabulary_round_trips_and_names_its_eot() {
    let tok = Tokenizer::bytes();
    let text = "Sort: 3 1 2 — naïve";
    let ids = tok.encode(text);
    assert_eq!(ids.len(), text.len());
    assert!(ids.iter().all(|&i| i < 256));
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert_eq!(tok.eot(), 256);
    assert_eq!(tok.encode_with_special("a<|endoftext|>b"), vec![97, 256, 98]);
    assert_eq!(tok.encode("a<|endoftext|>b").len(), 15, "plain encode treats the marker as text");
    assert_eq!(tok.decode(&[104, 256]).unwrap(), "h<|endoftext|>");
    let err = tok.decode(&[300]).unwrap_err().to_string();
    assert!(err.contains("300"), "{err}");
}

#[test]
fn a_config_names_its_tokenizer() {
    use models::Gpt2Config;
    let c = Gpt2Config::bytes(2, 2, 32, 64);
    assert_eq!(Tokenizer::for_config(&c).name(), "bytes");
    assert_eq!(c.vocab_size, 257);
    let back = Gpt2Config::from_json(&c.to_json().unwrap()).unwrap();
    assert_eq!(Tokenizer::for_config(&back).eot(), 256, "the tokenizer survives config.json");
    assert_eq!(Tokenizer::for_config(&Gpt2Config::tiny()).eot(), EOT);
    let mut bad = c.clone();
    bad.vocab_size = 200;
    assert!(bad.validate().is_err(), "a byte model needs all 257 ids");
}
