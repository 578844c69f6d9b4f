//! Criterion benches of the CPU backend's hot ops. Throughput is reported as elements/s where an
//! "element" is one FLOP (matmul, attention) or one byte moved (memory-bound ops), so criterion's
//! Gelem/s reads directly as GFLOP/s or GB/s.
//!
//! Run: `cargo bench --bench engine` (set RAYON_NUM_THREADS=1 for single-thread figures).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::optim::{AdamW, AdamWConfig, ParamGroup};
use engine::{GradStore, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::hint::black_box;

fn rng() -> StdRng {
    StdRng::seed_from_u64(0)
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul_gflops");
    g.sample_size(10);
    for &(m, n, k) in &[(1024, 1024, 1024), (2048, 3072, 768), (2048, 768, 3072)] {
        let a = Tensor::randn(&[m, k], 0.0, 1.0, &mut rng());
        let b = Tensor::randn(&[k, n], 0.0, 1.0, &mut rng());
        let bt = Tensor::randn(&[n, k], 0.0, 1.0, &mut rng());
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        g.bench_function(format!("{m}x{n}x{k}"), |bch| bch.iter(|| black_box(a.matmul(&b).unwrap())));
        g.bench_function(format!("{m}x{n}x{k}_bT"), |bch| bch.iter(|| black_box(a.matmul(&bt.t().unwrap()).unwrap())));
    }
    g.finish();
}

fn memory_bound(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory_gbps");
    g.sample_size(20);
    let (rows, cols) = (4096, 768);
    let x = Tensor::randn(&[rows, cols], 0.0, 1.0, &mut rng());
    let (w, b) = (Tensor::randn(&[cols], 1.0, 0.1, &mut rng()), Tensor::randn(&[cols], 0.0, 0.1, &mut rng()));
    g.throughput(Throughput::Bytes(2 * 4 * (rows * cols) as u64));
    g.bench_function("softmax_4096x768", |bch| bch.iter(|| black_box(x.softmax().unwrap())));
    g.bench_function("layernorm_4096x768", |bch| bch.iter(|| black_box(x.layer_norm(&w, &b, 1e-5).unwrap())));

    let (n, v) = (256, 50257);
    let logits = Tensor::randn(&[n, v], 0.0, 1.0, &mut rng());
    let targets = Tensor::new((0..n).map(|i| (i * 7919 % v) as i64).collect(), &[n]).unwrap();
    g.throughput(Throughput::Bytes(4 * (n * v) as u64));
    g.bench_function("cross_entropy_256x50257", |bch| bch.iter(|| black_box(logits.cross_entropy(&targets).unwrap())));

    let params = 4 << 20;
    let p = Tensor::randn(&[params], 0.0, 1.0, &mut rng()).var();
    let mut grads = GradStore::new();
    grads.insert(&p, Tensor::randn(&[params], 0.0, 1.0, &mut rng()));
    let mut opt = AdamW::new(vec![ParamGroup { params: vec![p], weight_decay: 0.1 }], AdamWConfig::default()).unwrap();
    g.throughput(Throughput::Bytes(7 * 4 * params as u64));
    g.bench_function("adamw_4M", |bch| bch.iter(|| opt.step(&grads, 1e-4).unwrap()));
    g.finish();
}

fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_gflops");
    g.sample_size(10);
    let (b, h, t, d) = (4, 12, 256, 64);
    let qkv: Vec<Tensor> = (0..3).map(|_| Tensor::randn(&[b, h, t, d], 0.0, 1.0, &mut rng())).collect();
    let fwd = 2 * (b * h * t * t * d) as u64;
    g.throughput(Throughput::Elements(fwd));
    g.bench_function("causal_fwd_4x12x256x64", |bch| {
        bch.iter(|| black_box(engine::with_no_grad(|| engine::causal_attention(&qkv[0], &qkv[1], &qkv[2])).unwrap()))
    });
    g.throughput(Throughput::Elements(fwd * 7 / 2));
    g.bench_function("causal_fwd_bwd_4x12x256x64", |bch| {
        bch.iter(|| {
            let v: Vec<Tensor> = qkv.iter().map(|t| t.var()).collect();
            let out = engine::causal_attention(&v[0], &v[1], &v[2]).unwrap();
            black_box(out.sum_all().unwrap().backward().unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, matmul, memory_bound, attention);
criterion_main!(benches);
