//! Reductions, views, concatenation and indexing.

use crate::harness::*;
use engine::{embedding, Tensor};

#[test]
fn sum_mean() {
    let mut r = rng(10);
    let x = randn(&mut r, &[3, 4, 5]);
    let dim_sets: &[&[usize]] = &[&[0], &[1], &[2], &[0, 2], &[2, 0], &[1, 2], &[0, 1, 2], &[]];
    for dims in dim_sets {
        for keep in [false, true] {
            check(&format!("sum {dims:?} keep={keep}"), &[x.clone()], LINEAR, |v| v[0].sum(dims, keep));
            check(&format!("mean {dims:?} keep={keep}"), &[x.clone()], LINEAR, |v| v[0].mean(dims, keep));
            // On a permuted (non-contiguous) view of a [5,3,4] var.
            check(&format!("sum permuted {dims:?} keep={keep}"), &[randn(&mut r, &[5, 3, 4])], LINEAR, |v| v[0].permute(&[1, 2, 0])?.sum(dims, keep));
        }
    }
    check("sum_keepdim", &[x.clone()], LINEAR, |v| v[0].sum_keepdim(1));
    check("sum_all", &[x.clone()], LINEAR, |v| v[0].sum_all());
    check("mean_all", &[x.clone()], LINEAR, |v| v[0].mean_all());
    check("sum_all narrowed", &[x.clone()], LINEAR, |v| v[0].narrow(2, 1, 3)?.sum_all());
    check("mean_all transposed", &[x], LINEAR, |v| v[0].transpose(0, 2)?.mean_all());
    // A nonlinear consumer of the reduction, so the broadcast-back of the gradient is checked
    // with a non-uniform upstream gradient per element.
    check("sum then sqr", &[randn(&mut r, &[4, 6])], TOL, |v| v[0].sum(&[1], true)?.sqr()?.mul(&v[0]));
}

#[test]
fn max_keepdim() {
    let mut r = rng(11);
    for dim in 0..3 {
        let x = distinct(&mut r, &[3, 4, 5], 0.1);
        check(&format!("max_keepdim {dim}"), &[x.clone()], LINEAR, |v| v[0].max_keepdim(dim));
        check(&format!("max_keepdim {dim} permuted"), &[x], LINEAR, |v| v[0].permute(&[2, 0, 1])?.max_keepdim(dim));
    }
    // The forward really is the max.
    let x = distinct(&mut r, &[4, 6], 0.1);
    let (_, m) = forward(&[x.clone()], &|v| v[0].max_keepdim(1));
    for (row, &mv) in x.data.chunks(6).zip(&m) {
        assert_eq!(mv, row.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
    }
}

#[test]
fn gather_last_dim() {
    let mut r = rng(12);
    // Repeated ids within a row: the scatter must accumulate.
    let ids2 = ids(&[0, 4, 4, 2, 1, 1, 1, 3, 4, 0, 2, 0], &[3, 4]);
    check("gather 2d", &[randn(&mut r, &[3, 5])], LINEAR, |v| v[0].gather(&ids2));
    check("gather 2d transposed", &[randn(&mut r, &[5, 3])], LINEAR, |v| v[0].t()?.gather(&ids2));
    let ids3 = ids(&[5, 0, 1, 1, 2, 3, 4, 4, 0, 5, 3, 3], &[2, 3, 2]);
    check("gather 3d", &[randn(&mut r, &[2, 3, 6])], LINEAR, |v| v[0].gather(&ids3));
    check("gather 3d narrowed", &[randn(&mut r, &[2, 3, 8])], LINEAR, |v| v[0].narrow(2, 1, 6)?.gather(&ids3));
    // Values too.
    let x = randn(&mut r, &[3, 5]);
    let (_, g) = forward(&[x.clone()], &|v| v[0].gather(&ids2));
    let idv = ids2.to_vec_i64().unwrap();
    for (j, &gv) in g.iter().enumerate() {
        assert_eq!(gv, x.data[(j / 4) * 5 + idv[j] as usize]);
    }
}

#[test]
fn cat_stack() {
    let mut r = rng(13);
    for dim in 0..3 {
        let mut shapes = [[2usize, 3, 4], [2, 3, 4], [2, 3, 4]];
        shapes[1][dim] = 1;
        shapes[2][dim] = 3;
        let ins: Vec<In> = shapes.iter().map(|s| randn(&mut r, s)).collect();
        check(&format!("cat {dim}"), &ins, LINEAR, |v| Tensor::cat(v, dim));
        // A nonlinear consumer so each part gets a distinct upstream gradient pattern.
        check(&format!("cat {dim} then tanh"), &ins, TOL, |v| Tensor::cat(v, dim)?.tanh());
        let same: Vec<In> = (0..3).map(|_| randn(&mut r, &[2, 3, 4])).collect();
        check(&format!("stack {dim}"), &same, LINEAR, |v| Tensor::stack(v, dim));
        check(&format!("stack {}", dim + 1), &same, LINEAR, |v| Tensor::stack(v, dim + 1));
    }
    // Strided parts: a transposed one and a narrowed one.
    let (a, b) = (randn(&mut r, &[4, 3]), randn(&mut r, &[3, 7]));
    check("cat strided", &[a.clone(), b.clone()], LINEAR, |v| Tensor::cat(&[v[0].t()?, v[1].narrow(1, 2, 4)?], 0));
    check("stack strided", &[a, b], LINEAR, |v| Tensor::stack(&[v[0].t()?, v[1].narrow(1, 2, 4)?], 1));
    // The same var twice: gradients add.
    check("cat same var", &[randn(&mut r, &[2, 3])], LINEAR, |v| Tensor::cat(&[v[0].clone(), v[0].clone()], 1));
}

#[test]
fn narrow_index_select_embedding() {
    let mut r = rng(14);
    let x = randn(&mut r, &[4, 5, 3]);
    check("narrow 0", &[x.clone()], LINEAR, |v| v[0].narrow(0, 1, 2));
    check("narrow 1", &[x.clone()], LINEAR, |v| v[0].narrow(1, 2, 3));
    check("narrow 2", &[x.clone()], LINEAR, |v| v[0].narrow(2, 0, 1));
    check("narrow narrow", &[x.clone()], LINEAR, |v| v[0].narrow(1, 1, 4)?.narrow(1, 1, 2)?.sqr());
    check("narrow transposed", &[x.clone()], LINEAR, |v| v[0].transpose(0, 2)?.narrow(1, 1, 3));
    let sel = ids(&[3, 0, 3, 1, 3], &[5]);
    check("index_select 0", &[x.clone()], LINEAR, |v| v[0].index_select(0, &sel));
    check("index_select 1", &[x.clone()], LINEAR, |v| v[0].index_select(1, &sel));
    check("index_select 2", &[x.clone()], LINEAR, |v| v[0].index_select(2, &ids(&[2, 2, 0], &[3])));
    check("index_select transposed", &[x], LINEAR, |v| v[0].transpose(0, 1)?.index_select(1, &sel));
    // Embedding with repeated ids (scatter-add of the rows' gradients).
    let tok = ids(&[1, 6, 1, 0, 3, 1, 6, 6, 2, 0], &[2, 5]);
    let table = randn(&mut r, &[7, 4]);
    check("embedding", &[table.clone()], LINEAR, |v| embedding(&tok, &v[0]));
    check("embedding 1d ids", &[table], LINEAR, |v| embedding(&ids(&[5, 5, 5, 2], &[4]), &v[0]));
    check("embedding narrowed table", &[randn(&mut r, &[7, 6])], LINEAR, |v| embedding(&tok, &v[0].narrow(1, 1, 4)?));
}

#[test]
fn views() {
    let mut r = rng(15);
    let x = randn(&mut r, &[2, 3, 4]);
    check("reshape", &[x.clone()], LINEAR, |v| v[0].reshape(&[4, 6]));
    check("reshape transposed (copy)", &[x.clone()], LINEAR, |v| v[0].transpose(1, 2)?.reshape(&[8, 3]));
    check("flatten", &[x.clone()], LINEAR, |v| v[0].transpose(0, 1)?.flatten(1, 2));
    check("permute", &[x.clone()], LINEAR, |v| v[0].permute(&[2, 0, 1]));
    check("transpose", &[x.clone()], LINEAR, |v| v[0].transpose(0, 2));
    check("t", &[x.clone()], LINEAR, |v| v[0].t());
    for d in 0..4 {
        check(&format!("unsqueeze {d}"), &[x.clone()], LINEAR, |v| v[0].unsqueeze(d));
        check(&format!("unsqueeze {d} transposed"), &[x.clone()], LINEAR, |v| v[0].transpose(0, 2)?.unsqueeze(d)?.sqr());
    }
    check("squeeze", &[randn(&mut r, &[3, 1, 4])], LINEAR, |v| v[0].squeeze(1));
    check("squeeze narrowed", &[randn(&mut r, &[3, 5, 4])], LINEAR, |v| v[0].narrow(1, 2, 1)?.squeeze(1));
    check("contiguous", &[x.clone()], LINEAR, |v| v[0].permute(&[1, 2, 0])?.contiguous());
    check("broadcast_as", &[randn(&mut r, &[3, 1])], LINEAR, |v| v[0].broadcast_as(&[2, 3, 4]));
    check("broadcast_as scalar", &[randn(&mut r, &[])], LINEAR, |v| v[0].broadcast_as(&[2, 3]));
    check("broadcast_as then reshape (copy)", &[randn(&mut r, &[3, 1])], LINEAR, |v| v[0].broadcast_as(&[2, 3, 4])?.reshape(&[6, 4]));
    check("broadcast_as transposed", &[randn(&mut r, &[1, 4])], LINEAR, |v| v[0].t()?.broadcast_as(&[2, 4, 3]));
    // A chain of views feeding a nonlinear op.
    check("view chain", &[x], TOL, |v| v[0].permute(&[2, 0, 1])?.narrow(0, 1, 2)?.reshape(&[2, 6])?.unsqueeze(0)?.exp());
}

/// Ops whose output is viewed (transposed, permuted, summed) before the loss: their backward then
/// receives a non-contiguous or zero-stride (broadcast) upstream gradient.
#[test]
fn strided_upstream_gradients() {
    use engine::{causal_attention, causal_attention_naive};
    let mut r = rng(16);
    let x = randn(&mut r, &[4, 6]);
    let pos = uniform(&mut r, &[4, 6], 0.3, 2.0);
    type Un = fn(&Tensor) -> engine::Result<Tensor>;
    let unaries: [(&str, Un); 9] = [
        ("exp", |x| x.exp()),
        ("tanh", |x| x.tanh()),
        ("sigmoid", |x| x.sigmoid()),
        ("log_sigmoid", |x| x.log_sigmoid()),
        ("gelu", |x| x.gelu()),
        ("sqr", |x| x.sqr()),
        ("softmax", |x| x.softmax()),
        ("log_softmax", |x| x.log_softmax()),
        ("affine", |x| x.affine(2.0, 1.0)),
    ];
    for (name, op) in unaries {
        check(&format!("{name} then t"), &[x.clone()], TOL, |v| op(&v[0])?.t());
        check(&format!("{name} then sum(0)"), &[x.clone()], TOL, |v| op(&v[0])?.sum(&[0], false));
        check(&format!("{name} then narrow"), &[x.clone()], TOL, |v| op(&v[0])?.narrow(1, 1, 3));
    }
    for (name, op) in [("log", Tensor::log as Un), ("sqrt", Tensor::sqrt as Un)] {
        check(&format!("{name} then t"), &[pos.clone()], TOL, |v| op(&v[0])?.t());
    }
    let (y, b) = (randn(&mut r, &[4, 6]), randn(&mut r, &[6]));
    check("mul then t", &[x.clone(), y.clone()], TOL, |v| v[0].mul(&v[1])?.t());
    check("div then sum(1)", &[x.clone(), pos.clone()], TOL, |v| v[0].div(&v[1])?.sum(&[1], true));
    check("mul self then t", &[x.clone()], TOL, |v| v[0].mul(&v[0])?.t());
    check("matmul then t", &[x.clone(), randn(&mut r, &[6, 5])], LINEAR, |v| v[0].matmul(&v[1])?.t());
    check("matmul_bias then sum(0)", &[x.clone(), randn(&mut r, &[6, 5]), randn(&mut r, &[5])], LINEAR, |v| {
        v[0].matmul_bias(&v[1], &v[2])?.sum(&[0], false)
    });
    let w = uniform(&mut r, &[6], 0.5, 1.5);
    check("layer_norm then t", &[x.clone(), w.clone(), b.clone()], TOL.h(5e-3), |v| v[0].layer_norm(&v[1], &v[2], 1e-5)?.t());
    check("layer_norm then sum(0)", &[x.clone(), w, b], TOL.h(5e-3), |v| v[0].layer_norm(&v[1], &v[2], 1e-5)?.sum(&[0], false));
    let g = ids(&[0, 5, 5, 1, 2, 3, 4, 0], &[4, 2]);
    check("gather then t", &[x.clone()], LINEAR, |v| v[0].gather(&g)?.t());
    check("index_select then t", &[x.clone()], LINEAR, |v| v[0].index_select(1, &ids(&[4, 4, 0], &[3]))?.t());
    check("max_keepdim then t", &[distinct(&mut r, &[4, 6], 0.1)], LINEAR, |v| v[0].max_keepdim(1)?.t());
    let (a, c) = untied_pair(&mut r);
    check("maximum then t", &[a.clone(), c.clone()], TOL, |v| v[0].maximum(&v[1])?.t());
    check("minimum then sum(1)", &[a, c], TOL, |v| v[0].minimum(&v[1])?.sum(&[1], false));
    check("clamp then t", &[uniform_avoiding(&mut r, &[4, 6], -2.0, 2.0, &[-1.0, 1.0], 0.05)], TOL, |v| v[0].clamp(-1.0, 1.0)?.t());
    let cond = Tensor::new((0..24).map(|i| (i % 2) as f32).collect::<Vec<f32>>(), &[4, 6]).unwrap();
    check("where then t", &[x.clone(), y], TOL, |v| cond.where_cond(&v[0], &v[1])?.t());
    check("cat then t", &[x.clone(), randn(&mut r, &[4, 2])], LINEAR, |v| Tensor::cat(&[v[0].clone(), v[1].clone()], 1)?.t());
    // Attention output laid out back as [b, t, h, d] (as a model does).
    let (q, k, vv) = (randn(&mut r, &[1, 2, 9, 8]), randn(&mut r, &[1, 2, 9, 8]), randn(&mut r, &[1, 2, 9, 8]));
    check("causal_attention then transpose", &[q.clone(), k.clone(), vv.clone()], TOL, |v| causal_attention(&v[0], &v[1], &v[2])?.transpose(1, 2));
    check("causal_attention_naive then transpose", &[q, k, vv], TOL, |v| causal_attention_naive(&v[0], &v[1], &v[2])?.transpose(1, 2));
}

fn untied_pair(r: &mut rand::rngs::StdRng) -> (In, In) {
    use rand::Rng;
    let a = randn(r, &[4, 6]);
    let b = In { data: a.data.iter().map(|&x| x + if r.gen::<bool>() { 0.3 } else { -0.3 }).collect(), shape: a.shape.clone() };
    (a, b)
}

/// The checker itself must reject a wrong gradient: x·detach(x) has true gradient 2x but the
/// engine (correctly) reports x for it.
#[test]
fn harness_detects_wrong_gradients() {
    let mut r = rng(17);
    let x = uniform(&mut r, &[3, 4], 0.5, 2.0);
    let wrong = std::panic::catch_unwind(|| check("x * detach(x)", &[x.clone()], TOL, |v| v[0].mul(&v[0].detach()))).is_err();
    assert!(wrong, "the checker accepted a gradient off by a factor 2");
    // And it accepts the same function written with a tracked operand.
    check("x * x", &[x], TOL, |v| v[0].mul(&v[0]));
}
