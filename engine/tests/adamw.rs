//! AdamW against torch (one step from the fixture's stored gradients), against a plain f64
//! implementation of torch's formula over several steps, and checkpoint state round trips.

use engine::optim::{AdamW, AdamWConfig, ParamGroup};
use engine::safetensors::Reader;
use engine::{GradStore, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/gpt2-tiny/model.safetensors");
const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/gpt2-tiny/reference.safetensors");

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().unwrap()
}

#[test]
fn one_step_matches_torch_fixture() {
    let model = Reader::open(MODEL).unwrap();
    let reference = Reader::open(REFERENCE).unwrap();
    let names: Vec<String> = model.names().iter().filter(|n| n.starts_with("transformer.")).cloned().collect();
    assert_eq!(names.len(), 28);

    let params: Vec<(String, Tensor)> = names.iter().map(|n| (n.clone(), model.get(n).unwrap().var())).collect();
    let mut grads = GradStore::new();
    for (n, p) in &params {
        grads.insert(p, reference.get_as(&format!("grad.{n}"), p.shape(), engine::DType::F32).unwrap());
    }
    let (decay, no_decay): (Vec<_>, Vec<_>) = params.iter().map(|(_, p)| p.clone()).partition(|p| p.rank() >= 2);
    assert!(!decay.is_empty() && !no_decay.is_empty());
    let groups = vec![ParamGroup { params: decay, weight_decay: 0.1 }, ParamGroup { params: no_decay, weight_decay: 0.0 }];
    let mut opt = AdamW::new(groups, AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8 }).unwrap();
    let before: Vec<Vec<f32>> = params.iter().map(|(_, p)| vals(p)).collect();
    opt.step(&grads, 1e-2).unwrap();
    assert_eq!(opt.step_count(), 1);

    let mut worst = (0f32, String::new());
    for ((n, p), b) in params.iter().zip(&before) {
        let want = vals(&reference.get(&format!("adamw.{n}")).unwrap());
        let got = vals(p);
        assert_eq!(got.len(), want.len(), "{n}");
        assert_ne!(&got, b, "{n} did not change");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let d = (g - w).abs();
            assert!(d <= 1e-7, "{n}[{i}]: got {g}, torch {w} (diff {d:e})");
            if d > worst.0 {
                worst = (d, n.clone());
            }
        }
    }
    eprintln!("largest |AdamW - torch| = {:e} ({})", worst.0, worst.1);
}

/// torch.optim.AdamW (foreach=False) for one parameter, in f64, with its own step count.
struct RefAdamW {
    p: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl RefAdamW {
    fn step(&mut self, g: &[f32], lr: f64, wd: f64, (b1, b2, eps): (f64, f64, f64)) {
        self.t += 1;
        let (bc1, bc2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for i in 0..self.p.len() {
            let g = g[i] as f64;
            self.p[i] *= 1.0 - lr * wd;
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            let (mh, vh) = (self.m[i] / bc1, self.v[i] / bc2);
            self.p[i] -= lr * mh / (vh.sqrt() + eps);
        }
    }
}

#[test]
fn multi_step_matches_f64_formula_and_skips_params_without_grad() {
    let mut rng = StdRng::seed_from_u64(7);
    let w = Tensor::randn(&[16, 9], 0.0, 1.0, &mut rng).var();
    let b = Tensor::randn(&[9], 0.0, 1.0, &mut rng).var();
    let frozen = Tensor::randn(&[5, 3], 0.0, 1.0, &mut rng).var();
    let frozen_before = vals(&frozen);
    let (b1, b2, eps) = (0.9f32, 0.95f32, 1e-8f32);
    let groups = vec![
        ParamGroup { params: vec![w.clone(), frozen.clone()], weight_decay: 0.1 },
        ParamGroup { params: vec![b.clone()], weight_decay: 0.0 },
    ];
    let mut opt = AdamW::new(groups, AdamWConfig { beta1: b1, beta2: b2, eps }).unwrap();
    let mut rw = RefAdamW { p: vals(&w).iter().map(|&x| x as f64).collect(), m: vec![0.0; 144], v: vec![0.0; 144], t: 0 };
    let mut rb = RefAdamW { p: vals(&b).iter().map(|&x| x as f64).collect(), m: vec![0.0; 9], v: vec![0.0; 9], t: 0 };
    let hp = (b1 as f64, b2 as f64, eps as f64);
    for step in 0..5 {
        let lr = 1e-2f32 * (1.0 - 0.15 * step as f32); // a schedule: lr changes each step
        // Gradients of varied scale, some tiny (comparable to eps).
        let scale = [1.0, 0.01, 3.0, 1e-4, 0.5][step];
        let gw = Tensor::randn(&[16, 9], 0.0, scale, &mut rng);
        let gb = Tensor::randn(&[9], 0.0, scale, &mut rng);
        let mut grads = GradStore::new();
        grads.insert(&w, gw.clone());
        grads.insert(&b, gb.clone());
        opt.step(&grads, lr).unwrap();
        rw.step(&vals(&gw), lr as f64, 0.1f32 as f64, hp);
        rb.step(&vals(&gb), lr as f64, 0.0, hp);
        for (name, t, r) in [("w", &w, &rw), ("b", &b, &rb)] {
            for (i, (got, want)) in vals(t).iter().zip(&r.p).enumerate() {
                let tol = 1e-6 * want.abs().max(1e-2);
                assert!((*got as f64 - want).abs() <= tol, "step {}: {name}[{i}] = {got}, f64 reference {want}", step + 1);
            }
        }
        assert_eq!(vals(&frozen), frozen_before, "a parameter without a gradient must not change (not even by weight decay)");
    }
    assert_eq!(opt.step_count(), 5);
    // Its moments stay zero too.
    let (_, state) = opt.state().unwrap();
    assert!(state[1].m.iter().chain(&state[1].v).all(|&x| x == 0.0));
    assert_eq!(state[1].step, 0);
    assert!(state[0].m.iter().any(|&x| x != 0.0));
    assert_eq!(state[0].step, 5);
}

#[test]
fn rejects_bad_parameters_and_gradients() {
    let not_var = Tensor::zeros(&[3]);
    assert!(AdamW::new(vec![ParamGroup { params: vec![not_var], weight_decay: 0.0 }], AdamWConfig::default()).is_err());
    let p = Tensor::zeros(&[3]).var();
    let mut opt = AdamW::new(vec![ParamGroup { params: vec![p.clone()], weight_decay: 0.0 }], AdamWConfig::default()).unwrap();
    let mut g = GradStore::new();
    g.insert(&p, Tensor::zeros(&[4]));
    assert!(opt.step(&g, 1e-3).is_err(), "a gradient of the wrong shape must be an error");
}

fn make(seed: u64) -> (Vec<Tensor>, AdamW) {
    let mut rng = StdRng::seed_from_u64(seed);
    let ps = vec![Tensor::randn(&[8, 4], 0.0, 1.0, &mut rng).var(), Tensor::randn(&[4], 0.0, 1.0, &mut rng).var()];
    let groups = vec![ParamGroup { params: vec![ps[0].clone()], weight_decay: 0.1 }, ParamGroup { params: vec![ps[1].clone()], weight_decay: 0.0 }];
    (ps, AdamW::new(groups, AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8 }).unwrap())
}

fn run(ps: &[Tensor], opt: &mut AdamW, steps: std::ops::Range<u64>) {
    for s in steps {
        let mut rng = StdRng::seed_from_u64(1000 + s);
        let mut g = GradStore::new();
        for p in ps {
            g.insert(p, Tensor::randn(p.shape(), 0.0, 1.0, &mut rng));
        }
        opt.step(&g, 1e-2).unwrap();
    }
}

fn bits(ps: &[Tensor]) -> Vec<u32> {
    ps.iter().flat_map(vals).map(f32::to_bits).collect()
}

#[test]
fn state_round_trip_resumes_bit_identically() {
    // Uninterrupted: 6 steps.
    let (pa, mut a) = make(3);
    run(&pa, &mut a, 0..6);

    // Interrupted after 3: save params + state, rebuild everything from scratch, restore, go on.
    let (pb, mut b) = make(3);
    run(&pb, &mut b, 0..3);
    let saved_params: Vec<Vec<f32>> = pb.iter().map(vals).collect();
    let (step, moments) = b.state().unwrap();
    assert_eq!(step, 3);
    drop(b);

    let (pc, mut c) = make(99); // different initial values: all must come from the checkpoint
    for (p, v) in pc.iter().zip(&saved_params) {
        p.assign(&Tensor::new(v.clone(), p.shape()).unwrap()).unwrap();
    }
    c.load_state(step, moments.clone()).unwrap();
    assert_eq!(c.step_count(), 3);
    run(&pc, &mut c, 3..6);
    assert_eq!(bits(&pc), bits(&pa), "resumed run must equal the uninterrupted one bit for bit");

    // Without the moments (fresh optimizer, same params) the result differs: the test can fail.
    let (pd, mut d) = make(99);
    for (p, v) in pd.iter().zip(&saved_params) {
        p.assign(&Tensor::new(v.clone(), p.shape()).unwrap()).unwrap();
    }
    run(&pd, &mut d, 3..6);
    assert_ne!(bits(&pd), bits(&pa));

    // Mismatched state is rejected.
    let (_, mut e) = make(3);
    assert!(e.load_state(3, moments[..1].to_vec()).is_err());
    let mut wrong = moments.clone();
    wrong[0].m.pop();
    assert!(e.load_state(3, wrong).is_err());
}

#[test]
fn a_parameter_that_joins_late_gets_its_own_bias_correction() {
    // torch keeps `step` per parameter: one first updated at optimizer step 4 uses t = 1 there.
    let mut rng = StdRng::seed_from_u64(11);
    let (early, late) = (Tensor::randn(&[6], 0.0, 1.0, &mut rng).var(), Tensor::randn(&[6], 0.0, 1.0, &mut rng).var());
    let mut reference = RefAdamW { p: vals(&late).iter().map(|&x| x as f64).collect(), m: vec![0.0; 6], v: vec![0.0; 6], t: 0 };
    let mut opt = AdamW::new(vec![ParamGroup { params: vec![early.clone(), late.clone()], weight_decay: 0.0 }], AdamWConfig::default()).unwrap();
    for step in 0..6 {
        let mut grads = GradStore::new();
        grads.insert(&early, Tensor::randn(&[6], 0.0, 1.0, &mut rng));
        if step >= 3 {
            let g = Tensor::randn(&[6], 0.0, 1e-3, &mut rng);
            reference.step(&vals(&g), 1e-2, 0.0, (0.9, 0.999, 1e-8));
            grads.insert(&late, g);
        }
        opt.step(&grads, 1e-2).unwrap();
    }
    for (got, want) in vals(&late).iter().zip(&reference.p) {
        assert!((*got as f64 - want).abs() <= 1e-6 * want.abs().max(1e-2), "late parameter: {got} vs torch's rule {want}");
    }
    let (_, state) = opt.state().unwrap();
    assert_eq!((state[0].step, state[1].step), (6, 3));
}
