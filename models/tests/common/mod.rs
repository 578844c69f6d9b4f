//! Shared by the integration tests: fixture paths, the reference file, tolerance checks.
#![allow(dead_code)]

use engine::safetensors::Reader;
use engine::Tensor;
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

pub fn tiny_dir() -> PathBuf {
    fixtures().join("gpt2-tiny")
}

pub fn reference() -> Reader {
    Reader::open(tiny_dir().join("reference.safetensors")).unwrap()
}

pub fn tiny() -> models::Gpt2 {
    models::hf::load(tiny_dir()).unwrap()
}

/// A fresh scratch directory under the target dir (no temp-dir crate needed).
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Largest |a − b| and whether every element meets |a − b| <= atol + rtol·|b|.
pub fn close(a: &[f32], b: &[f32], atol: f32, rtol: f32) -> (f32, bool) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let mut worst = 0f32;
    let mut ok = true;
    for (&x, &y) in a.iter().zip(b) {
        let d = (x - y).abs();
        worst = worst.max(d);
        ok &= d <= atol + rtol * y.abs(); // NaN fails
    }
    (worst, ok)
}

pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, atol: f32, rtol: f32) -> f32 {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    let (worst, ok) = close(&a.to_vec_f32().unwrap(), &b.to_vec_f32().unwrap(), atol, rtol);
    assert!(ok, "{what}: max |a-b| = {worst:e} exceeds {atol:e} + {rtol:e}|b|");
    worst
}

pub fn ids(v: Vec<i64>, shape: &[usize]) -> Tensor {
    Tensor::new(v, shape).unwrap()
}
