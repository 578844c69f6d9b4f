//! Binary ops with broadcasting, scalar affine maps, unary functions, clamp, min/max, where, dropout.

use crate::harness::*;
use engine::{Result, Tensor};
use rand::Rng;

type Bin = fn(&Tensor, &Tensor) -> Result<Tensor>;

fn binaries() -> [(&'static str, Bin); 4] {
    [("add", |a, b| a.add(b)), ("sub", |a, b| a.sub(b)), ("mul", |a, b| a.mul(b)), ("div", |a, b| a.div(b))]
}

/// Right operands of div stay away from zero.
fn rhs(rng: &mut rand::rngs::StdRng, name: &str, shape: &[usize]) -> In {
    if name == "div" {
        let mut x = uniform(rng, shape, 0.5, 2.0);
        x.data.iter_mut().for_each(|v| *v *= if rng.gen::<bool>() { 1.0 } else { -1.0 });
        x
    } else {
        randn(rng, shape)
    }
}

#[test]
fn binary_broadcasting() {
    let mut r = rng(1);
    let pairs: &[(&[usize], &[usize])] = &[
        (&[3, 4], &[3, 4]),
        (&[3, 1, 4], &[5, 1]),
        (&[5, 1], &[3, 1, 4]),
        (&[3, 1], &[1, 4]),
        (&[2, 3], &[]),
        (&[], &[2, 3]),
        (&[2, 3], &[1]),
        (&[1], &[2, 3]),
        (&[4], &[3, 4]),
        (&[], &[]),
    ];
    for (name, op) in binaries() {
        for (sa, sb) in pairs {
            let a = randn(&mut r, sa);
            let b = rhs(&mut r, name, sb);
            check(&format!("{name} {sa:?} {sb:?}"), &[a, b], SMOOTH, |x| op(&x[0], &x[1]));
        }
    }
}

#[test]
fn binary_non_contiguous() {
    let mut r = rng(2);
    for (name, op) in binaries() {
        // a: a transposed [4,3] var; b: columns 1..5 of a [3,6] var.
        let a = randn(&mut r, &[4, 3]);
        let b = rhs(&mut r, name, &[3, 6]);
        check(&format!("{name} strided"), &[a.clone(), b.clone()], SMOOTH, |x| op(&x[0].t()?, &x[1].narrow(1, 1, 4)?));
        // A strided [3,2] operand broadcast against a [3,1] view of a [1,3] var's transpose.
        let c = rhs(&mut r, name, &[1, 3]);
        check(&format!("{name} strided broadcast"), &[a, c], SMOOTH, |x| op(&x[0].t()?.narrow(1, 0, 2)?, &x[1].t()?));
    }
}

#[test]
fn scalar_affine() {
    let mut r = rng(3);
    let x = randn(&mut r, &[3, 5]);
    type Unary = fn(&Tensor) -> Result<Tensor>;
    let cases: [(&str, Unary); 4] = [
        ("affine", |x| x.affine(-1.5, 0.25)),
        ("add_scalar", |x| x.add_scalar(3.0)),
        ("mul_scalar", |x| x.mul_scalar(0.7)),
        ("neg", |x| x.neg()),
    ];
    for (name, op) in cases {
        check(name, &[x.clone()], LINEAR, |v| op(&v[0]));
        check(&format!("{name} transposed"), &[x.clone()], LINEAR, |v| op(&v[0].t()?));
        check(&format!("{name} narrowed"), &[x.clone()], LINEAR, |v| op(&v[0].narrow(1, 1, 3)?));
    }
}

#[test]
fn unary() {
    let mut r = rng(4);
    type Un = fn(&Tensor) -> Result<Tensor>;
    let mut big = vec![30.0, -30.0, 15.0, -15.0, 8.0, -8.0];
    big.extend(randn(&mut r, &[14]).data);
    let cases: Vec<(&str, Un, In)> = vec![
        ("exp", |x| x.exp(), uniform(&mut r, &[4, 5], -2.0, 2.0)),
        ("log", |x| x.log(), uniform(&mut r, &[4, 5], 0.2, 3.0)),
        ("tanh", |x| x.tanh(), randn(&mut r, &[4, 5])),
        ("sigmoid", |x| x.sigmoid(), uniform(&mut r, &[4, 5], -4.0, 4.0)),
        ("log_sigmoid", |x| x.log_sigmoid(), uniform(&mut r, &[4, 5], -4.0, 4.0)),
        ("log_sigmoid large", |x| x.log_sigmoid(), In { data: big, shape: vec![4, 5] }),
        ("gelu", |x| x.gelu(), uniform(&mut r, &[4, 5], -3.0, 3.0)),
        ("sqr", |x| x.sqr(), randn(&mut r, &[4, 5])),
        ("sqrt", |x| x.sqrt(), uniform(&mut r, &[4, 5], 0.2, 3.0)),
        ("relu", |x| x.relu(), uniform_avoiding(&mut r, &[4, 5], -2.0, 2.0, &[0.0], 0.1)),
    ];
    for (name, op, x) in cases {
        // |x| up to 30: a relative step of 1e-3 keeps the truncation error of the difference small.
        let tol = if name.contains("large") { SMOOTH.h(1e-3) } else { SMOOTH };
        check(name, &[x.clone()], tol, |v| op(&v[0]));
        // The same elements through a transposed view (the op gathers a strided input).
        check(&format!("{name} transposed"), &[x.clone()], tol, |v| op(&v[0].t()?));
        check(&format!("{name} narrowed"), &[x], tol, |v| op(&v[0].narrow(0, 1, 2)?));
    }
}

#[test]
fn unary_forward_values() {
    // Closed forms in f64 (large |x| included): the gradient checks cannot see a wrong forward
    // whose backward is consistent with it.
    let xs: Vec<f32> = vec![-30.0, -15.0, -3.0, -0.5, -1e-3, 0.0, 1e-3, 0.7, 2.5, 15.0, 30.0];
    let n = xs.len();
    let x = Tensor::new(xs.clone(), &[n]).unwrap();
    let gelu = |x: f64| 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    type Exact = Box<dyn Fn(f64) -> f64>;
    let cases: Vec<(&str, Tensor, Exact)> = vec![
        ("tanh", x.tanh().unwrap(), Box::new(f64::tanh)),
        ("sigmoid", x.sigmoid().unwrap(), Box::new(sig)),
        ("log_sigmoid", x.log_sigmoid().unwrap(), Box::new(move |x| -(1.0 + (-x).exp()).ln())),
        ("gelu", x.gelu().unwrap(), Box::new(gelu)),
        ("relu", x.relu().unwrap(), Box::new(|x| x.max(0.0))),
        ("sqr", x.sqr().unwrap(), Box::new(|x| x * x)),
    ];
    for (name, y, f) in cases {
        for (&xi, &yi) in xs.iter().zip(&y.to_vec_f32().unwrap()) {
            let want = f(xi as f64);
            assert!((yi as f64 - want).abs() <= 1e-6 + 1e-5 * want.abs(), "{name}({xi}) = {yi}, want {want}");
        }
    }
}

#[test]
fn clamp() {
    let mut r = rng(5);
    let (lo, hi) = (-0.5, 0.7);
    let x = uniform_avoiding(&mut r, &[5, 6], -1.5, 1.5, &[lo, hi], 0.05);
    assert!(x.data.iter().any(|&v| v < lo) && x.data.iter().any(|&v| v > hi) && x.data.iter().any(|&v| v > lo && v < hi));
    check("clamp", &[x.clone()], SMOOTH, |v| v[0].clamp(lo, hi));
    check("clamp transposed", &[x], SMOOTH, |v| v[0].t()?.clamp(lo, hi));
}

/// b = a + (±0.1..1.5) elementwise (broadcasting b over a's leading dims): no ties within 2h.
fn untied(r: &mut rand::rngs::StdRng, a_shape: &[usize], b_shape: &[usize]) -> (In, In) {
    let b = randn(r, b_shape);
    let n: usize = a_shape.iter().product();
    let bn = b.data.len();
    let data = (0..n)
        .map(|i| {
            let gap = r.gen_range(0.1f32..1.5);
            b.data[i % bn] + if r.gen::<bool>() { gap } else { -gap }
        })
        .collect();
    (In { data, shape: a_shape.to_vec() }, b)
}

#[test]
fn minimum_maximum() {
    let mut r = rng(6);
    for (name, op) in [("minimum", Tensor::minimum as Bin), ("maximum", Tensor::maximum as Bin)] {
        let (a, b) = untied(&mut r, &[4, 5], &[4, 5]);
        check(name, &[a, b], SMOOTH, |x| op(&x[0], &x[1]));
        let (a, b) = untied(&mut r, &[3, 5], &[5]);
        check(&format!("{name} broadcast"), &[a.clone(), b.clone()], SMOOTH, |x| op(&x[0], &x[1]));
        check(&format!("{name} broadcast swapped"), &[b, a], SMOOTH, |x| op(&x[0], &x[1]));
        // Strided: a transposed on both sides ([5,4] vars viewed as [4,5]).
        let (a, b) = untied(&mut r, &[5, 4], &[5, 4]);
        check(&format!("{name} transposed"), &[a, b], SMOOTH, |x| op(&x[0].t()?, &x[1].t()?));
        // Exact ties split the gradient evenly, which is also what a central difference that
        // moves one operand across the tie measures: (h − 0) / 2h = 1/2.
        let a = randn(&mut r, &[3, 4]);
        let mut b = randn(&mut r, &[3, 4]);
        b.data.iter_mut().zip(&a.data).step_by(2).for_each(|(b, &a)| *b = a);
        check(&format!("{name} ties"), &[a, b], SMOOTH, |x| op(&x[0], &x[1]));
    }
}

#[test]
fn where_cond() {
    let mut r = rng(7);
    let mask: Vec<f32> = (0..12).map(|i| if (i * 7) % 3 == 0 { 1.0 } else { 0.0 }).collect();
    let cond = Tensor::new(mask, &[3, 4]).unwrap();
    let (a, b, c) = (randn(&mut r, &[3, 4]), randn(&mut r, &[4]), randn(&mut r, &[]));
    check("where", &[a.clone(), randn(&mut r, &[3, 4])], SMOOTH, |x| cond.where_cond(&x[0], &x[1]));
    check("where broadcast false", &[a.clone(), b.clone()], SMOOTH, |x| cond.where_cond(&x[0], &x[1]));
    check("where broadcast true", &[b.clone(), a.clone()], SMOOTH, |x| cond.where_cond(&x[0], &x[1]));
    check("where scalar", &[c, a], SMOOTH, |x| cond.where_cond(&x[0], &x[1]));
    // Row condition [3,1] broadcast over columns; a transposed operand.
    let row = Tensor::new(vec![1.0f32, 0.0, 1.0], &[3, 1]).unwrap();
    check("where strided", &[randn(&mut r, &[4, 3]), b], SMOOTH, |x| row.where_cond(&x[0].t()?, &x[1]));
}

#[test]
fn dropout() {
    use rand::SeedableRng;
    let mut r = rng(8);
    let x = randn(&mut r, &[6, 7]);
    let drop = |x: &Tensor| x.dropout(0.3, &mut rand::rngs::StdRng::seed_from_u64(99));
    // The mask must be the same in every evaluation, and really drop something.
    let (_, y) = forward(&[x.clone()], &|v| drop(&v[0]));
    let zeros = y.iter().filter(|&&v| v == 0.0).count();
    assert!(zeros > 3 && zeros < 30, "{zeros} of 42 dropped");
    for (&yi, &xi) in y.iter().zip(&x.data) {
        assert!(yi == 0.0 || (yi - xi / 0.7).abs() < 1e-5, "kept values are scaled by 1/(1-p)");
    }
    check("dropout", &[x.clone()], LINEAR, |v| drop(&v[0]));
    check("dropout transposed", &[x], LINEAR, |v| drop(&v[0].t()?));
}
