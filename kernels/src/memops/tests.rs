use super::*;

#[test]
fn broadcast_plans_merge_and_pad() {
    // Same-shape contiguous operands collapse to one dim.
    let p = plan_broadcast(&[4, 5, 6], &[30, 6, 1], &[30, 6, 1]).unwrap();
    assert!(p.contiguous);
    assert_eq!((p.n, p.dims), (120, [1, 1, 1, 120]));
    // Bias row [1, C] over [R, C].
    let p = plan_broadcast(&[8, 3], &[3, 1], &[0, 1]).unwrap();
    assert!(!p.contiguous);
    assert_eq!((p.dims, p.sa, p.sb, p.b_extent), ([1, 1, 8, 3], [0, 0, 3, 1], [0, 0, 0, 1], 3));
    // Size-1 dims drop out; [2,1,3,4] + [1,1,3,4] keeps the broadcast dim separate.
    let p = plan_broadcast(&[2, 1, 3, 4], &[12, 12, 4, 1], &[0, 0, 4, 1]).unwrap();
    assert_eq!((p.dims, p.sa, p.sb), ([1, 1, 2, 12], [0, 0, 12, 1], [0, 0, 0, 1]));
    // Scalar, empty, and errors.
    let p = plan_broadcast(&[], &[], &[]).unwrap();
    assert_eq!((p.n, p.dims, p.a_extent), (1, [1, 1, 1, 1], 1));
    assert_eq!(plan_broadcast(&[3, 0], &[0, 1], &[0, 1]).unwrap().n, 0);
    assert!(plan_broadcast(&[1, 1, 1, 1, 1], &[0; 5], &[0; 5]).is_err());
}

#[test]
fn broadcast_reference_matches_direct_indexing() {
    // a: [2, 3] transposed view of a [3, 2] buffer; b: column [2, 1].
    let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [10.0f32, 20.0];
    let p = plan_broadcast(&[2, 3], &[1, 2], &[1, 0]).unwrap();
    let r = refs::binary(BinaryOp::Add, &a, &b, &p);
    assert_eq!(r.value, vec![11.0, 13.0, 15.0, 22.0, 24.0, 26.0]);
}

#[test]
fn embedding_segments_group_stably() {
    let (perm, seg, ids) = embedding_segments(&[5, 2, 5, 0, 2, 5], 6).unwrap();
    assert_eq!(perm, vec![3, 1, 4, 0, 2, 5]);
    assert_eq!(seg, vec![0, 1, 3, 6]);
    assert_eq!(ids, vec![0, 2, 5]);
    assert!(embedding_segments(&[6], 6).is_err());
    assert!(embedding_segments(&[-1], 6).is_err());
}

#[test]
fn ce_reference_gradient_rows_sum_to_zero() {
    let x: Vec<f32> = (0..21).map(|i| (i as f32 * 0.7).sin() * 3.0).collect();
    let t = [2i64, -100, 6];
    let f = refs::ce_forward(&x, &t, 7);
    let lse: Vec<f32> = f.lse.value.iter().map(|&v| v as f32).collect();
    let d = refs::ce_backward(&x, &t, &lse, 7, 0.5);
    for (r, row) in d.value.chunks(7).enumerate() {
        let s: f64 = row.iter().sum();
        assert!(s.abs() < 1e-6, "row {r}: {s}");
    }
    assert_eq!(f.loss.value[1], 0.0);
    let (m, k) = refs::ce_mean(&f, &t);
    assert_eq!(k, 2.0);
    assert!((m.value[0] - (f.loss.value[0] + f.loss.value[2]) / 2.0).abs() < 1e-12);
}
