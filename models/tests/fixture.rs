//! The tiny GPT-2 against PyTorch/transformers' reference outputs (fixtures/gpt2-tiny, see
//! fixtures/README.md for how they were made and why these tolerances).

mod common;
use common::*;
use engine::optim::{AdamW, AdamWConfig};
use models::{generate, lm_targets, GenerateConfig};

#[test]
fn logits_match_transformers() {
    let (model, r) = (tiny(), reference());
    let ids = r.get("input_ids").unwrap();
    let logits = engine::with_no_grad(|| model.forward(&ids)).unwrap();
    let worst = assert_close("logits", &logits, &r.get("logits").unwrap(), 1e-5, 1e-4);
    println!("logits: max |diff| {worst:e}");
}

#[test]
fn loss_and_every_gradient_match_transformers() {
    let (model, r) = (tiny(), reference());
    let ids = r.get("input_ids").unwrap();
    // HF's labels=input_ids loss: position t predicts token t+1.
    let loss = model.loss(&ids, &lm_targets(&ids).unwrap()).unwrap();
    let want = r.get("loss").unwrap().to_scalar().unwrap();
    let got = loss.to_scalar().unwrap();
    assert!((got - want).abs() <= 1e-5, "loss {got} vs {want}");
    let grads = loss.backward().unwrap();
    assert_eq!(model.params().len(), 28);
    let mut worst = 0f32;
    for (name, p) in model.params() {
        let g = grads.get(p).unwrap_or_else(|| panic!("no gradient for {name}"));
        worst = worst.max(assert_close(&format!("grad.{name}"), g, &r.get(&format!("grad.{name}")).unwrap(), 1e-6, 1e-3));
    }
    println!("loss diff {:e}, max grad |diff| {worst:e}", (got - want).abs());
}

/// One AdamW step with the two parameter groups: from the stored gradients (the optimizer alone,
/// atol 1e-7) and from our own gradients (end to end, atol 5e-5).
#[test]
fn adamw_step_matches_torch() {
    let r = reference();
    let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8 };
    for (own_grads, atol) in [(false, 1e-7), (true, 5e-5)] {
        let model = tiny();
        let grads = if own_grads {
            let ids = r.get("input_ids").unwrap();
            model.loss(&ids, &lm_targets(&ids).unwrap()).unwrap().backward().unwrap()
        } else {
            let mut g = engine::GradStore::new();
            for (name, p) in model.params() {
                g.insert(p, r.get(&format!("grad.{name}")).unwrap());
            }
            g
        };
        let mut opt = AdamW::new(model.param_groups(0.1), cfg).unwrap();
        opt.step(&grads, 1e-2).unwrap();
        for (name, p) in model.params() {
            assert_close(&format!("adamw.{name} (own grads: {own_grads})"), p, &r.get(&format!("adamw.{name}")).unwrap(), atol, 0.0);
        }
    }
}

#[test]
fn greedy_generation_matches_transformers_with_and_without_cache() {
    let (model, r) = (tiny(), reference());
    let prompt: Vec<u32> = r.get("generate.prompt").unwrap().to_vec_i64().unwrap().into_iter().map(|t| t as u32).collect();
    let want: Vec<u32> = r.get("generate.output").unwrap().to_vec_i64().unwrap()[prompt.len()..].iter().map(|&t| t as u32).collect();
    assert_eq!(want.len(), 24);
    for use_cache in [true, false] {
        let cfg = GenerateConfig { use_cache, ..GenerateConfig::greedy(24) };
        let out = generate(&model, std::slice::from_ref(&prompt), &cfg).unwrap();
        assert_eq!(out.tokens[0], want, "use_cache = {use_cache}");
        assert_eq!(out.lengths, vec![24]);
        assert!(out.logprobs[0].iter().all(|&l| l.is_finite() && l < 0.0));
    }
}

#[test]
fn both_key_layouts_give_the_same_model() {
    let a = tiny();
    let b = models::hf::load_weights(a.config().clone(), tiny_dir().join("hub-style/model.safetensors")).unwrap();
    for ((na, ta), (nb, tb)) in a.params().iter().zip(b.params()) {
        assert_eq!(na, nb);
        assert_eq!(ta.to_vec_f32().unwrap(), tb.to_vec_f32().unwrap(), "{na}");
    }
    let ids = reference().get("input_ids").unwrap();
    let _g = engine::no_grad();
    assert_eq!(a.forward(&ids).unwrap().to_vec_f32().unwrap(), b.forward(&ids).unwrap().to_vec_f32().unwrap());
}
