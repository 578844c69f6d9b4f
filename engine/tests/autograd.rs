//! Autograd behaviour: recording on/off, freeing the graph, leaves, detach, accumulation,
//! clipping, fan-out (x*x, diamonds), deep chains, error cases, seeded reproducibility.

use engine::{no_grad, with_no_grad, GradStore, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, &mut StdRng::seed_from_u64(seed))
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

fn grad_of(store: &GradStore, v: &Tensor) -> Vec<f32> {
    vals(store.get(v).unwrap_or_else(|| panic!("no gradient for {v:?}")))
}

#[test]
fn no_grad_records_nothing_and_keeps_nothing_alive() {
    let x = randn(&[4, 8], 1).var();
    let w = randn(&[8, 6], 2).var();
    let (m, y) = {
        let _g = no_grad();
        let m = x.matmul(&w).unwrap();
        let y = m.gelu().unwrap().sum_all().unwrap();
        (m, y)
    };
    assert!(!m.tracked() && !y.tracked(), "ops under no_grad must not be tracked");
    // Nothing (no recorded gelu) holds the intermediate: our handle is the only one.
    assert_eq!(m.strong_count(), 1);
    assert!(y.backward().is_err(), "backward through a no_grad result must fail");

    // Same with the closure form, and recording resumes afterwards.
    let z = with_no_grad(|| x.mul(&x).unwrap());
    assert!(!z.tracked());
    let z2 = x.mul(&x).unwrap();
    assert!(z2.tracked(), "recording must resume after the guard is dropped");

    // Nested guards restore the outer state.
    {
        let _a = no_grad();
        {
            let _b = no_grad();
        }
        assert!(!x.mul_scalar(2.0).unwrap().tracked(), "inner guard's drop must not re-enable recording");
    }
    assert!(x.mul_scalar(2.0).unwrap().tracked());
}

#[test]
fn backward_frees_saved_activations() {
    let x = randn(&[4, 8], 3).var();
    let w = randn(&[8, 6], 4).var();
    let m = x.matmul(&w).unwrap();
    let h = m.gelu().unwrap();
    let loss = h.sum_all().unwrap();
    drop(h);
    // The recorded gelu saved `m`.
    assert!(m.strong_count() >= 2, "gelu should have saved its input while recording");
    let grads = loss.backward().unwrap();
    assert!(grads.get(&x).is_some() && grads.get(&w).is_some());
    assert_eq!(m.strong_count(), 1, "backward must release the activations the graph saved");
    let err = loss.backward().err().expect("backward should fail").to_string();
    assert!(err.contains("freed"), "second backward should say the graph was freed: {err}");

    // A graph that is never used for backward is released when dropped.
    let m2 = x.matmul(&w).unwrap();
    let loss2 = m2.gelu().unwrap().sum_all().unwrap();
    assert!(m2.strong_count() >= 2);
    drop(loss2);
    assert_eq!(m2.strong_count(), 1, "dropping the loss must drop the graph");
}

#[test]
fn backward_through_partly_freed_graph_is_an_error() {
    let x = randn(&[5], 5).var();
    let a = x.mul_scalar(2.0).unwrap();
    a.sum_all().unwrap().backward().unwrap();
    let err = a.mul_scalar(3.0).unwrap().sum_all().unwrap().backward();
    assert!(err.is_err(), "reusing a subgraph freed by an earlier backward must be an error");
}

#[test]
fn var_is_a_leaf_and_detach_stops_gradients() {
    let base = randn(&[3, 4], 6);
    assert!(!base.tracked() && !base.is_var());
    let x = base.var();
    assert!(x.is_var() && x.tracked() && x.same_storage(&base));

    let y = randn(&[3, 4], 7).var();
    // loss = sum(x*y) + sum(detach(x)*y*y): d/dx = y only.
    let loss = x.mul(&y).unwrap().sum_all().unwrap().add(&x.detach().mul(&y).unwrap().mul(&y).unwrap().sum_all().unwrap()).unwrap();
    let g = loss.backward().unwrap();
    assert_close(&grad_of(&g, &x), &vals(&y), 1e-6, "dx");
    // d/dy = x + 2*x*y
    let (xv, yv) = (vals(&x), vals(&y));
    let want: Vec<f32> = xv.iter().zip(&yv).map(|(x, y)| x + 2.0 * x * y).collect();
    assert_close(&grad_of(&g, &y), &want, 1e-5, "dy");

    let d = x.detach();
    assert!(!d.tracked() && !d.is_var() && d.same_storage(&x));
    let only_detached = d.mul_scalar(2.0).unwrap().sum_all().unwrap();
    assert!(!only_detached.tracked());
    assert!(only_detached.backward().is_err());

    // Gradients reach only vars: a non-var input is never in the store.
    let c = randn(&[3, 4], 8);
    let g = x.mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.len(), 1);
    assert!(g.get(&c).is_none());
    assert_close(&grad_of(&g, &x), &vals(&c), 1e-6, "dx with constant");
}

#[test]
fn backward_into_accumulates_and_zero_clears() {
    let x = randn(&[2, 3], 9).var();
    let w = randn(&[3, 4], 10).var();
    let loss = || x.matmul(&w).unwrap().tanh().unwrap().sum_all().unwrap();
    let once = loss().backward().unwrap();
    let mut store = GradStore::new();
    loss().backward_into(&mut store).unwrap();
    loss().backward_into(&mut store).unwrap();
    for v in [&x, &w] {
        let twice: Vec<f32> = grad_of(&once, v).iter().map(|g| 2.0 * g).collect();
        assert_close(&grad_of(&store, v), &twice, 1e-6, "accumulated");
    }
    assert_eq!(store.len(), 2);
    store.zero();
    assert!(store.is_empty() && store.get(&x).is_none());
    loss().backward_into(&mut store).unwrap();
    assert_close(&grad_of(&store, &x), &grad_of(&once, &x), 1e-6, "after zero");
}

#[test]
fn clip_global_norm() {
    let a = randn(&[10, 10], 11).var();
    let b = randn(&[7], 12).var();
    // loss = 3*sum(a) + sum(b^2): grads are 3 and 2b.
    let loss = || a.mul_scalar(3.0).unwrap().sum_all().unwrap().add(&b.sqr().unwrap().sum_all().unwrap()).unwrap();
    let mut g = loss().backward().unwrap();
    let bv = vals(&b);
    let expect_norm = (100.0 * 9.0 + bv.iter().map(|x| 4.0 * (*x as f64) * (*x as f64)).sum::<f64>()).sqrt();
    let norm = g.global_norm().unwrap() as f64;
    assert!((norm - expect_norm).abs() <= 1e-5 * expect_norm, "{norm} vs {expect_norm}");

    let max_norm = (expect_norm / 4.0) as f32;
    let before = g.clip_global_norm(max_norm).unwrap() as f64;
    assert!((before - expect_norm).abs() <= 1e-5 * expect_norm, "clip returns the norm before clipping");
    let after = g.global_norm().unwrap();
    assert!((after - max_norm).abs() <= 1e-5 * max_norm, "after clipping: {after} vs {max_norm}");
    // Direction is kept: every gradient is scaled by the same factor.
    let scale = max_norm as f64 / expect_norm;
    let want: Vec<f32> = bv.iter().map(|x| (2.0 * *x as f64 * scale) as f32).collect();
    assert_close(&grad_of(&g, &b), &want, 1e-5, "clipped b grad");

    // Below the limit nothing changes.
    let mut g2 = loss().backward().unwrap();
    let (ga, gb) = (grad_of(&g2, &a), grad_of(&g2, &b));
    let n2 = g2.clip_global_norm((expect_norm * 2.0) as f32).unwrap();
    assert!((n2 as f64 - expect_norm).abs() <= 1e-5 * expect_norm);
    assert_eq!(grad_of(&g2, &a), ga);
    assert_eq!(grad_of(&g2, &b), gb);
}

#[test]
fn same_tensor_twice_gets_both_contributions() {
    let x = randn(&[6], 13).var();
    let g = x.mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
    let want: Vec<f32> = vals(&x).iter().map(|v| 2.0 * v).collect();
    assert_close(&grad_of(&g, &x), &want, 1e-6, "d(x*x)/dx");

    // x + x + x through separate ops.
    let g = x.add(&x).unwrap().add(&x).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close(&grad_of(&g, &x), &[3.0; 6], 1e-6, "d(3x)/dx");
}

#[test]
fn diamond_graph() {
    // a = exp(x); b = a*2; c = sin-free branch: a*a; loss = sum(b + c) => d/dx = (2 + 2a) * a
    let x = randn(&[8], 14).mul_scalar(0.5).unwrap().var();
    let a = x.exp().unwrap();
    let b = a.mul_scalar(2.0).unwrap();
    let c = a.mul(&a).unwrap();
    let loss = b.add(&c).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let want: Vec<f32> = vals(&x).iter().map(|v| (2.0 + 2.0 * v.exp()) * v.exp()).collect();
    assert_close(&grad_of(&g, &x), &want, 1e-5, "diamond");

    // A diamond through views: transposed and plain paths meeting in a matmul.
    let m = randn(&[3, 3], 15).var();
    let loss = m.matmul(&m.t().unwrap()).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    // d/dM sum(M M^T) = (1 M) + (1 M) where 1 is the all-ones matrix: each entry 2*colsum... compute.
    let mv = vals(&m);
    let mut want = vec![0f32; 9];
    for i in 0..3 {
        for j in 0..3 {
            // sum_{a,b} sum_k M[a,k] M[b,k]; d/dM[i,j] = 2 * sum_b M[b,j]
            want[i * 3 + j] = 2.0 * (0..3).map(|b| mv[b * 3 + j]).sum::<f32>();
        }
    }
    assert_close(&grad_of(&g, &m), &want, 1e-5, "M M^T");
}

#[test]
fn deep_chain_does_not_overflow_the_stack() {
    const N: usize = 10_000;
    let x = Tensor::full(&[4], 0.5).var();
    let mut y = x.clone();
    for _ in 0..N {
        y = y.mul_scalar(1.0001).unwrap().add_scalar(0.0).unwrap();
    }
    let loss = y.sum_all().unwrap();
    let g = loss.backward().unwrap();
    let want = 1.0001f64.powi(N as i32) as f32;
    assert_close(&grad_of(&g, &x), &[want; 4], 1e-3, "deep chain");
    drop((y, loss));

    // A deep graph dropped without backward must not overflow either (dropping it recursively
    // overflowed a 2 MiB test-thread stack somewhere between 10k and 200k ops).
    const DEEP: usize = 200_000;
    let mut y = x.clone();
    for _ in 0..DEEP {
        y = y.add_scalar(1.0).unwrap();
    }
    assert_eq!(vals(&y), vec![0.5 + DEEP as f32; 4]);
    drop(y);
}

#[test]
fn backward_errors() {
    let x = randn(&[3], 16).var();
    let non_scalar = x.mul_scalar(2.0).unwrap();
    let e = non_scalar.backward().err().expect("backward should fail").to_string();
    assert!(e.contains("scalar") && e.contains("[3]"), "{e}");
    let untracked = randn(&[3], 17).sum_all().unwrap();
    let e = untracked.backward().err().expect("backward should fail").to_string();
    assert!(e.contains("no var") || e.contains("no_grad"), "{e}");
    // A one-element non-scalar shape is fine (numel 1).
    let one = x.sum(&[0], true).unwrap();
    assert_eq!(one.shape(), &[1]);
    let g = one.backward().unwrap();
    assert_close(&grad_of(&g, &x), &[1.0; 3], 0.0, "sum keepdim");
}

#[test]
fn randn_is_reproducible_with_a_seeded_rng() {
    let a = Tensor::randn(&[64], 0.0, 1.0, &mut StdRng::seed_from_u64(42));
    let b = Tensor::randn(&[64], 0.0, 1.0, &mut StdRng::seed_from_u64(42));
    let c = Tensor::randn(&[64], 0.0, 1.0, &mut StdRng::seed_from_u64(43));
    let (av, bv, cv) = (vals(&a), vals(&b), vals(&c));
    assert_eq!(av.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), bv.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    assert_ne!(av, cv, "a different seed must give different values");
    // The stream continues: two draws from one rng differ from each other.
    let mut rng = StdRng::seed_from_u64(42);
    let d1 = vals(&Tensor::randn(&[64], 0.0, 1.0, &mut rng));
    let d2 = vals(&Tensor::randn(&[64], 0.0, 1.0, &mut rng));
    assert_eq!(d1, av);
    assert_ne!(d1, d2);
    // mean/std are applied.
    let s = vals(&Tensor::randn(&[64], 3.0, 0.5, &mut StdRng::seed_from_u64(42)));
    for (x, z) in s.iter().zip(&av) {
        assert!((x - (3.0 + 0.5 * z)).abs() <= 1e-6);
    }
}

/// bf16 as storage: `to_dtype` between float types stays in the graph, ops read bf16 by
/// widening it (exactly) and compute in f32, and each gradient comes back in its tensor's type
/// (a bf16 leaf's in bf16, an f32 one's in f32, whatever type the rules wrote).
#[test]
fn bf16_storage_keeps_the_graph_and_gradients_take_their_tensors_type() {
    use engine::DType;
    let x = randn(&[3, 40], 21).var();
    let w = randn(&[40], 22).var();
    let b = randn(&[40], 23).var();
    let xs = x.to_dtype(DType::BF16).unwrap();
    assert_eq!(xs.dtype(), DType::BF16);
    assert!(xs.tracked(), "to_dtype between float types is recorded");
    // The op on bf16 equals the op on the widened values, bit for bit.
    let widened = xs.detach().to_dtype(DType::F32).unwrap();
    let (y, y_ref) = (xs.layer_norm(&w, &b, 1e-5).unwrap(), widened.layer_norm(&w, &b, 1e-5).unwrap());
    assert_eq!(y.dtype(), DType::F32);
    assert_eq!(vals(&y), vals(&y_ref));
    // Gradients through the bf16 copy reach x in f32: d(sum 3·x_bf16)/dx = 3 exactly.
    let g = xs.mul_scalar(3.0).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().dtype(), DType::F32);
    assert!(grad_of(&g, &x).iter().all(|&d| d == 3.0));
    // A bf16 leaf gets a bf16 gradient: d(sum v²)/dv = 2v, rounded to bf16 (exact here: 2v is).
    let v = x.detach().to_dtype(DType::BF16).unwrap().var();
    let g = v.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let gv = g.get(&v).unwrap();
    assert_eq!(gv.dtype(), DType::BF16);
    let want: Vec<f32> = vals(&v).iter().map(|&e| 2.0 * e).collect();
    assert_eq!(vals(gv), want);
    // Ids are not floats: converting them is not recorded, and float ops refuse them.
    let ids = Tensor::new(vec![1i64, 2, 3], &[3]).unwrap();
    assert!(!ids.to_dtype(DType::F32).unwrap().tracked());
    let err = ids.gelu().unwrap_err().to_string();
    assert!(err.contains("I64") || err.contains("i64"), "{err}");
}

/// Gradients of narrowed views (q, k and v cut from one projection) are added into their
/// slices of one buffer: overlapping slices add up, a gradient shared with another tensor (Add
/// hands the same one to both inputs) is never written into, whichever arrives first.
#[test]
fn narrowed_gradients_add_into_one_buffer_without_touching_shared_ones() {
    let x = randn(&[4, 6], 31).var();
    let w = randn(&[4, 6], 32).var();
    let c = randn(&[4, 6], 33);
    let slices = |x: &Tensor| -> Tensor {
        let a = x.narrow(1, 0, 3).unwrap().mul_scalar(2.0).unwrap().sum_all().unwrap();
        let b = x.narrow(1, 2, 4).unwrap().sqr().unwrap().sum_all().unwrap(); // overlaps a at column 2
        let d = x.narrow(0, 1, 2).unwrap().sum_all().unwrap(); // another dim
        a.add(&b).unwrap().add(&d).unwrap()
    };
    let shared = || x.add(&w).unwrap().mul(&c).unwrap().sum_all().unwrap();
    let xs = vals(&x);
    let cs = vals(&c);
    let want: Vec<f32> = (0..24)
        .map(|i| {
            let (r, col) = (i / 6, i % 6);
            cs[i] + if col < 3 { 2.0 } else { 0.0 } + if col >= 2 { 2.0 * xs[i] } else { 0.0 } + if (1..3).contains(&r) { 1.0 } else { 0.0 }
        })
        .collect();
    for shared_first in [true, false] {
        let loss = if shared_first { shared().add(&slices(&x)).unwrap() } else { slices(&x).add(&shared()).unwrap() };
        let g = loss.backward().unwrap();
        assert_close(&grad_of(&g, &x), &want, 1e-6, "dx");
        assert_eq!(grad_of(&g, &w), cs, "dw is the shared gradient, untouched");
    }
    // Only narrowed views: the buffer starts as zeros; untouched elements stay exactly 0.
    let g = x.narrow(1, 4, 2).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = grad_of(&g, &x);
    assert!(dx.iter().enumerate().all(|(i, &d)| d == if i % 6 >= 4 { 1.0 } else { 0.0 }), "{dx:?}");
}
