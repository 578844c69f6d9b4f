//! The generic checker and input generators shared by every gradient test.

use engine::{with_no_grad, Result, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Step and tolerances of one check.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    /// Relative step: each element moves by `h · max(1, |x|)`.
    pub h: f32,
    pub atol: f64,
    pub rtol: f64,
    /// Check at most this many elements per input (a seeded random subset, plus the first and last).
    pub max_checks: usize,
}

/// Nonlinear ops that mix many inputs (softmax, layer_norm, cross_entropy, attention).
pub const TOL: Tol = Tol { h: 1e-2, atol: 5e-4, rtol: 3e-3, max_checks: usize::MAX };
/// Inputs with large offsets (|x| ~ 20..100), where the f32 rounding of x itself and of the
/// cancelling subtraction inside the op limit the accuracy of any difference quotient.
pub const LOOSE: Tol = Tol { h: 1e-2, atol: 2e-3, rtol: 1e-2, max_checks: usize::MAX };
/// Elementwise ops: each output depends on few inputs, so f32 rounding in the differences is
/// small and the tolerance can be tight (a 1% error in a derivative is caught).
pub const SMOOTH: Tol = Tol { h: 1e-2, atol: 2e-4, rtol: 1e-3, max_checks: usize::MAX };
/// Ops linear in the checked input (matmul, views, indexing, sums): differences are exact up to
/// f32 rounding, so the tolerance is tighter.
pub const LINEAR: Tol = Tol { h: 1e-2, atol: 1e-3, rtol: 1e-3, max_checks: usize::MAX };

impl Tol {
    pub fn max_checks(self, n: usize) -> Tol {
        Tol { max_checks: n, ..self }
    }
    pub fn h(self, h: f32) -> Tol {
        Tol { h, ..self }
    }
}

/// One input: its elements and shape (rebuilt into a fresh var for every evaluation).
#[derive(Clone, Debug)]
pub struct In {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Approximately normal samples (sum of uniforms; enough for test inputs).
pub fn randn(rng: &mut StdRng, shape: &[usize]) -> In {
    let data = (0..numel(shape)).map(|_| (0..4).map(|_| rng.gen_range(-1.0f32..1.0)).sum::<f32>() * 0.866).collect();
    In { data, shape: shape.to_vec() }
}

pub fn uniform(rng: &mut StdRng, shape: &[usize], lo: f32, hi: f32) -> In {
    In { data: (0..numel(shape)).map(|_| rng.gen_range(lo..hi)).collect(), shape: shape.to_vec() }
}

/// Uniform in [lo, hi) but at least `margin` away from each of `points` (kinks, clamp bounds).
pub fn uniform_avoiding(rng: &mut StdRng, shape: &[usize], lo: f32, hi: f32, points: &[f32], margin: f32) -> In {
    let data = (0..numel(shape))
        .map(|_| loop {
            let x = rng.gen_range(lo..hi);
            if points.iter().all(|p| (x - p).abs() >= margin) {
                break x;
            }
        })
        .collect();
    In { data, shape: shape.to_vec() }
}

/// Distinct values `spacing` apart in random order (no ties for max/argmax).
pub fn distinct(rng: &mut StdRng, shape: &[usize], spacing: f32) -> In {
    let n = numel(shape);
    let mut data: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * spacing).collect();
    data.shuffle(rng);
    In { data, shape: shape.to_vec() }
}

pub fn ids(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::new(v.to_vec(), shape).unwrap()
}

fn build(inputs: &[In]) -> Vec<Tensor> {
    inputs.iter().map(|i| Tensor::new(i.data.clone(), &i.shape).unwrap().var()).collect()
}

fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Forward only, on fresh vars: (output shape, output values).
pub fn forward(inputs: &[In], f: &dyn Fn(&[Tensor]) -> Result<Tensor>) -> (Vec<usize>, Vec<f32>) {
    with_no_grad(|| {
        let out = f(&build(inputs)).unwrap_or_else(|e| panic!("forward failed: {e}"));
        (out.shape().to_vec(), out.to_vec_f32().unwrap())
    })
}

/// The engine's gradient of Σ w·f(inputs) for every input (zeros where no gradient came back),
/// and the engine's value of that loss.
pub fn analytic(inputs: &[In], w: &[f32], f: &dyn Fn(&[Tensor]) -> Result<Tensor>) -> (Vec<Vec<f32>>, f32) {
    let vars = build(inputs);
    let out = f(&vars).unwrap();
    let wt = Tensor::new(w.to_vec(), out.shape()).unwrap();
    let loss = out.mul(&wt).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap_or_else(|e| panic!("backward failed: {e}"));
    let g = vars
        .iter()
        .zip(inputs)
        .map(|(v, i)| match grads.get(v) {
            Some(g) => {
                assert_eq!(g.shape(), &i.shape[..], "gradient shape");
                g.to_vec_f32().unwrap()
            }
            None => vec![0.0; i.data.len()],
        })
        .collect();
    (g, loss.to_scalar().unwrap())
}

fn weighted(w: &[f32], out: &[f32]) -> f64 {
    w.iter().zip(out).map(|(&w, &o)| w as f64 * o as f64).sum()
}

/// Check the engine's gradient of `f` with respect to every input against central differences.
pub fn check(name: &str, inputs: &[In], tol: Tol, f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let f: &dyn Fn(&[Tensor]) -> Result<Tensor> = &f;
    let mut rng = rng(seed_of(name));
    let (shape, out0) = forward(inputs, f);
    assert!(out0.iter().all(|v| v.is_finite()), "{name}: non-finite forward output");
    let w: Vec<f32> = (0..out0.len()).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let (grads, loss) = analytic(inputs, &w, f);
    let l0 = weighted(&w, &out0);
    assert!((loss as f64 - l0).abs() <= 1e-4 * (1.0 + l0.abs()), "{name}: engine loss {loss} vs host {l0}");
    let _ = shape;

    let mut failures = Vec::new();
    let mut checked = 0;
    for (k, input) in inputs.iter().enumerate() {
        let n = input.data.len();
        let mut idx: Vec<usize> = (0..n).collect();
        if n > tol.max_checks {
            idx.shuffle(&mut rng);
            idx.truncate(tol.max_checks.saturating_sub(2));
            idx.extend([0, n - 1]);
        }
        for &j in &idx {
            let x = input.data[j];
            let h = tol.h * x.abs().max(1.0);
            let mut moved = inputs.to_vec();
            moved[k].data[j] = x + h;
            let plus = weighted(&w, &forward(&moved, f).1);
            let xp = moved[k].data[j] as f64;
            moved[k].data[j] = x - h;
            let minus = weighted(&w, &forward(&moved, f).1);
            let xm = moved[k].data[j] as f64;
            let num = (plus - minus) / (xp - xm);
            let ana = grads[k][j] as f64;
            checked += 1;
            let ok = ana.is_finite() && (num - ana).abs() <= tol.atol + tol.rtol * num.abs().max(ana.abs());
            if !ok {
                failures.push(format!("input {k} {:?} element {j} (x = {x}): numeric {num:.6}, analytic {ana:.6}", input.shape));
            }
        }
    }
    assert!(checked > 0, "{name}: nothing checked");
    if !failures.is_empty() {
        panic!("{name}: {} of {checked} gradient elements differ (tol {tol:?}):\n{}", failures.len(), failures[..failures.len().min(12)].join("\n"));
    }
}

/// Max |a − b| over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn max_abs(a: &[f32]) -> f32 {
    a.iter().map(|x| x.abs()).fold(0.0, f32::max)
}
