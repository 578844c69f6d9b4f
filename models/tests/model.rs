//! The model itself: presets, GPT-2's init, parameter bookkeeping, the tied head, input checks.

mod common;
use common::*;
use engine::Tensor;
use models::{lm_targets, Gpt2, Gpt2Config};

fn stats(t: &Tensor) -> (f64, f64) {
    let v = t.to_vec_f32().unwrap();
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
    (mean, var.sqrt())
}

#[test]
fn presets_have_the_published_sizes() {
    let g = Gpt2Config::gpt2();
    assert_eq!((g.n_layer, g.n_head, g.n_embd, g.n_positions, g.vocab_size), (12, 12, 768, 1024, 50257));
    // GPT-2 small as transformers counts it (wte shared with the head).
    assert_eq!(g.num_params(), 124_439_808);
    let t = Gpt2Config::tiny();
    assert_eq!((t.n_layer, t.n_head, t.n_embd, t.n_positions, t.vocab_size), (4, 4, 256, 256, 50257));
    let model = Gpt2::new(t.clone(), 0).unwrap();
    assert_eq!(model.num_params(), t.num_params());
    assert_eq!(model.params().len(), 2 + 12 * 4 + 2);
    let logits = engine::with_no_grad(|| model.forward(&ids(vec![50256, 1, 2, 3, 4, 5], &[2, 3]))).unwrap();
    assert_eq!(logits.shape(), &[2, 3, 50257]);
}

#[test]
fn init_follows_gpt2_and_is_seeded() {
    let c = Gpt2Config::tiny();
    let model = Gpt2::new(c.clone(), 7).unwrap();
    let proj_std = 0.02 / (2.0 * c.n_layer as f64).sqrt();
    for (name, p) in model.params() {
        let (mean, std) = stats(p);
        let want = if name.ends_with("c_proj.weight") {
            Some(proj_std)
        } else if p.rank() == 2 {
            Some(0.02)
        } else {
            None
        };
        match want {
            Some(s) => assert!(mean.abs() < 1e-3 && (std / s - 1.0).abs() < 0.03, "{name}: mean {mean}, std {std}, want {s}"),
            None => {
                let fill = if name.contains("ln_") && name.ends_with(".weight") { 1.0 } else { 0.0 };
                assert!(p.to_vec_f32().unwrap().iter().all(|&x| x == fill), "{name} must be all {fill}");
            }
        }
    }
    let again = Gpt2::new(c.clone(), 7).unwrap();
    let other = Gpt2::new(c, 8).unwrap();
    let w = |m: &Gpt2, i: usize| m.params()[i].1.to_vec_f32().unwrap();
    assert_eq!(w(&model, 4), w(&again, 4));
    assert_ne!(w(&model, 4), w(&other, 4));
}

#[test]
fn parameters_are_one_ordered_list_of_vars() {
    let model = tiny();
    let names: Vec<&str> = model.params().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..4], ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias"]);
    assert_eq!(names[names.len() - 1], "transformer.ln_f.bias");
    assert!(model.params().iter().all(|(_, p)| p.is_var() && p.is_contiguous()));
    assert!(model.param("transformer.h.1.mlp.c_fc.weight").is_some_and(|p| p.shape() == [48, 192]));
    // AdamW groups: decay exactly for dim >= 2 (wte, wpe and 4 matrices per layer).
    let groups = model.param_groups(0.1);
    assert_eq!((groups[0].weight_decay, groups[1].weight_decay), (0.1, 0.0));
    assert_eq!(groups[0].params.len(), 2 + 4 * 2);
    assert!(groups[0].params.iter().all(|p| p.rank() == 2) && groups[1].params.iter().all(|p| p.rank() == 1));
    assert_eq!(groups[0].params.len() + groups[1].params.len(), model.params().len());
    // Parameters share storage with the model: updating one in place changes the forward.
    let x = ids(vec![1, 2, 3], &[1, 3]);
    let before = engine::with_no_grad(|| model.forward(&x)).unwrap().to_vec_f32().unwrap();
    let ln_f = model.param("transformer.ln_f.bias").unwrap();
    ln_f.assign(&ln_f.add_scalar(0.1).unwrap()).unwrap();
    assert_ne!(engine::with_no_grad(|| model.forward(&x)).unwrap().to_vec_f32().unwrap(), before);
}

/// The head is wte itself: its gradient is the sum of the embedding's and the head's, and a clone
/// of the model shares the same parameters.
#[test]
fn lm_head_is_tied_to_wte() {
    let model = tiny();
    let x = ids(vec![3, 1, 4, 1, 5, 9], &[1, 6]);
    let h = engine::with_no_grad(|| model.hidden_states(&x, None, None)).unwrap();
    let wte = model.param("transformer.wte.weight").unwrap();
    let direct = h.matmul(&wte.t().unwrap().contiguous().unwrap()).unwrap();
    // Same values up to summation order (a transposed view and a contiguous copy may take
    // different GEMM paths: dot products vs row updates in the skinny kernel).
    let (head, direct) = (model.lm_head(&h).unwrap().to_vec_f32().unwrap(), direct.to_vec_f32().unwrap());
    assert_eq!(head.len(), direct.len());
    for (a, b) in head.iter().zip(&direct) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }
    let loss = model.loss(&x, &lm_targets(&x).unwrap()).unwrap();
    let g = loss.backward().unwrap();
    let gw = g.get(wte).unwrap().to_vec_f32().unwrap();
    // Rows of tokens absent from the input get gradient from the head only: non-zero.
    assert!(gw[7 * 48..8 * 48].iter().any(|&v| v != 0.0));
    assert!(model.clone().params()[0].1.same_storage(wte));
}

/// `copy` is independent (a frozen reference policy): training one leaves the other alone.
#[test]
fn copy_is_independent() {
    let model = tiny();
    let frozen = model.copy().unwrap();
    let x = ids(vec![1, 2, 3], &[1, 3]);
    let logits = |m: &Gpt2| engine::with_no_grad(|| m.forward(&x)).unwrap().to_vec_f32().unwrap();
    assert_eq!(logits(&model), logits(&frozen));
    let w = model.param("transformer.h.0.attn.c_attn.weight").unwrap();
    assert!(!frozen.param("transformer.h.0.attn.c_attn.weight").unwrap().same_storage(w));
    w.assign(&w.mul_scalar(1.5).unwrap()).unwrap();
    assert_ne!(logits(&model), logits(&frozen));
}

#[test]
fn bad_inputs_are_errors() {
    let model = tiny();
    let _g = engine::no_grad();
    assert!(model.forward(&ids(vec![1; 65], &[1, 65])).is_err(), "past n_positions");
    assert!(model.forward(&ids(vec![512], &[1, 1])).is_err(), "id outside the vocabulary");
    assert!(model.forward(&ids(vec![1, 2], &[2])).is_err(), "ids must be [B, T]");
    assert!(model.forward_padded(&ids(vec![1, 2], &[2, 1]), Some(&[0]), None).is_err(), "one pad per row");
    assert!(Gpt2::new(Gpt2Config::custom(1, 3, 8, 8, 8), 0).is_err(), "8 wide, 3 heads");
}
