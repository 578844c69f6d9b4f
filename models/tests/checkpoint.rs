//! HF checkpoint IO: save/load round trips (f32 exact, bf16 close, f16 on disk), config.json,
//! and clear errors for broken files.

mod common;
use common::*;
use engine::safetensors::{save, Reader};
use engine::{DType, Tensor};
use models::{hf, Gpt2, Gpt2Config};
use std::path::Path;

fn logits(model: &Gpt2) -> Tensor {
    let ids = reference().get("input_ids").unwrap();
    engine::with_no_grad(|| model.forward(&ids)).unwrap()
}

/// Copy the fixture's config and write `tensors` as its weights.
fn checkpoint_with(dir: &Path, tensors: &[(String, Tensor)], dtype: Option<DType>) {
    std::fs::copy(tiny_dir().join("config.json"), dir.join("config.json")).unwrap();
    save(dir.join("model.safetensors"), tensors, dtype, None).unwrap();
}

fn fixture_tensors() -> Vec<(String, Tensor)> {
    Reader::open(tiny_dir().join("model.safetensors")).unwrap().all().unwrap()
}

#[test]
fn f32_save_then_load_is_exact() {
    let model = tiny();
    let dir = scratch("save-f32");
    hf::save(&model, &dir, DType::F32).unwrap();
    let back = hf::load(&dir).unwrap();
    assert_eq!(back.config(), model.config());
    assert_eq!(logits(&back).to_vec_f32().unwrap(), logits(&model).to_vec_f32().unwrap());
    // The save_pretrained layout: prefixed names, no lm_head, no mask buffers, metadata format=pt.
    let r = Reader::open(dir.join("model.safetensors")).unwrap();
    let mut want: Vec<String> = model.params().iter().map(|(n, _)| n.clone()).collect();
    want.sort();
    assert_eq!(r.names(), &want[..]);
    assert_eq!(r.metadata().unwrap().get("format").map(String::as_str), Some("pt"));
    assert_eq!(r.get("transformer.wte.weight").unwrap().dtype(), DType::F32);
    // No temp files left behind.
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(files.len(), 2, "{files:?}");
}

#[test]
fn bf16_round_trip_stays_close() {
    let model = tiny();
    let dir = scratch("save-bf16");
    hf::save(&model, &dir, DType::BF16).unwrap();
    let r = Reader::open(dir.join("model.safetensors")).unwrap();
    assert_eq!(r.get("transformer.h.0.attn.c_attn.weight").unwrap().dtype(), DType::BF16);
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["dtype"], "bfloat16");
    let back = hf::load(&dir).unwrap();
    let (a, b) = (logits(&back), logits(&model));
    let worst = assert_close("bf16 logits", &a, &b, 1e-2, 0.0);
    assert!(worst > 0.0, "bf16 storage must actually round");
    println!("bf16 round trip: max logit |diff| {worst:e}");
}

#[test]
fn f16_weights_on_disk_load_as_f32() {
    let dir = scratch("load-f16");
    checkpoint_with(&dir, &fixture_tensors(), Some(DType::F16));
    let model = hf::load(&dir).unwrap();
    assert_eq!(model.params()[0].1.dtype(), DType::F32);
    assert_close("f16 logits", &logits(&model), &logits(&tiny()), 5e-3, 0.0);
}

#[test]
fn config_json_round_trips_and_reads_what_transformers_writes() {
    let text = std::fs::read_to_string(tiny_dir().join("config.json")).unwrap();
    let c = Gpt2Config::from_json(&text).unwrap();
    assert_eq!((c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.n_positions), (2, 4, 48, 512, 64));
    assert_eq!((c.n_inner, c.layer_norm_epsilon, c.dtype.as_deref()), (None, 1e-5, Some("float32")));
    assert_eq!(c.eos_token_id, Some(50256));
    // Ours → JSON → ours is the identity, and every field of the original file survives.
    let json = c.to_json().unwrap();
    assert_eq!(Gpt2Config::from_json(&json).unwrap(), c);
    let (orig, ours): (serde_json::Value, serde_json::Value) = (serde_json::from_str(&text).unwrap(), serde_json::from_str(&json).unwrap());
    for (k, v) in orig.as_object().unwrap() {
        assert_eq!(&ours[k], v, "field {k}");
    }
    // What transformers needs to build GPT2LMHeadModel with a tied head.
    let fresh: serde_json::Value = serde_json::from_str(&Gpt2Config::gpt2().to_json().unwrap()).unwrap();
    assert_eq!(fresh["model_type"], "gpt2");
    assert_eq!(fresh["architectures"], serde_json::json!(["GPT2LMHeadModel"]));
    assert_eq!(fresh["activation_function"], "gelu_new");
    assert_eq!(fresh["tie_word_embeddings"], true);
    assert_eq!((fresh["n_layer"].as_u64(), fresh["n_embd"].as_u64(), fresh["n_positions"].as_u64()), (Some(12), Some(768), Some(1024)));
    // Older transformers: torch_dtype; minimal configs get GPT-2's defaults.
    let old = Gpt2Config::from_json(r#"{"vocab_size": 10, "n_positions": 8, "n_embd": 4, "n_layer": 1, "n_head": 2, "torch_dtype": "float16"}"#).unwrap();
    assert_eq!(old.dtype.as_deref(), Some("float16"));
    assert_eq!((old.activation_function.as_str(), old.layer_norm_epsilon, old.tie_word_embeddings), ("gelu_new", 1e-5, true));
    assert!(!Gpt2Config::from_json(&old.to_json().unwrap().replace("float16", "x")).unwrap().to_json().unwrap().contains("torch_dtype"));
    // What we would compute differently is refused.
    let base = r#""vocab_size": 10, "n_positions": 8, "n_embd": 4, "n_layer": 1"#;
    for bad in [r#""n_head": 2, "activation_function": "relu""#, r#""n_head": 2, "tie_word_embeddings": false"#, r#""n_head": 3"#, r#""n_head": 2, "model_type": "llama""#] {
        let text = format!("{{{base}, {bad}}}");
        assert!(Gpt2Config::from_json(&text).is_err(), "{bad} accepted");
        assert!(Gpt2Config::from_json(&format!("{{{base}, \"n_head\": 2}}")).is_ok());
    }
}

fn load_error(tensors: Vec<(String, Tensor)>, name: &str) -> String {
    let dir = scratch(name);
    checkpoint_with(&dir, &tensors, None);
    match hf::load(&dir) {
        Ok(_) => panic!("{name}: loaded a broken checkpoint"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let key = "transformer.h.1.mlp.c_fc.bias";
    let without: Vec<_> = fixture_tensors().into_iter().filter(|(n, _)| n != key).collect();
    let msg = load_error(without, "missing");
    println!("{msg}");
    assert!(msg.contains(key) && msg.contains("missing") && msg.contains("model.safetensors"), "{msg}");

    let key = "transformer.h.0.attn.c_attn.weight";
    // Transposed (nn.Linear's orientation): same size, wrong shape.
    let misshapen: Vec<_> = fixture_tensors().into_iter().map(|(n, t)| if n == key { (n, t.t().unwrap().contiguous().unwrap()) } else { (n, t) }).collect();
    let msg = load_error(misshapen, "misshapen");
    println!("{msg}");
    assert!(msg.contains(key) && msg.contains("[144, 48]") && msg.contains("model.safetensors"), "{msg}");

    let mut extra = fixture_tensors();
    extra.push(("transformer.h.0.attn.rotary".into(), Tensor::zeros(&[2])));
    let msg = load_error(extra, "unexpected");
    assert!(msg.contains("transformer.h.0.attn.rotary"), "{msg}");

    let msg = load_error(vec![("foo".into(), Tensor::zeros(&[2]))], "not-gpt2");
    assert!(msg.contains("wte.weight"), "{msg}");

    let dir = scratch("no-config");
    assert!(hf::load(&dir).unwrap_err().to_string().contains("config.json"));
}

#[test]
fn tied_lm_head_and_mask_buffers_are_accepted_an_untied_head_is_not() {
    let mut tensors = fixture_tensors();
    let wte = tensors.iter().find(|(n, _)| n == "transformer.wte.weight").unwrap().1.clone();
    tensors.push(("lm_head.weight".into(), wte.clone()));
    tensors.push(("transformer.h.0.attn.masked_bias".into(), Tensor::scalar(-1e4)));
    tensors.push(("transformer.h.1.attn.bias".into(), Tensor::ones(&[1, 1, 64, 64])));
    let dir = scratch("tied-head");
    checkpoint_with(&dir, &tensors, None);
    let model = hf::load(&dir).unwrap();
    assert_eq!(logits(&model).to_vec_f32().unwrap(), logits(&tiny()).to_vec_f32().unwrap());

    let last = tensors.len() - 3;
    tensors[last].1 = wte.mul_scalar(0.5).unwrap();
    let msg = load_error(tensors, "untied-head");
    assert!(msg.contains("lm_head.weight"), "{msg}");
}
