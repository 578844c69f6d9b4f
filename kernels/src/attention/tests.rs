use super::*;

/// `n` values in [-1, 1) from a small LCG (deterministic, no rand dependency).
fn uniform(seed: &mut u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn reference_small_case_by_hand() {
    // Tiny case by hand: one head, tq=1 at the end of tk=2 keys sees both keys.
    let d = 64;
    let s = AttnShape { heads: 1, tq: 1, tk: 2, d };
    let q = vec![0.1f32; d];
    let k: Vec<f32> = (0..2 * d).map(|i| if i < d { 0.2 } else { -0.3 }).collect();
    let v: Vec<f32> = (0..2 * d).map(|i| if i < d { 1.0 } else { 2.0 }).collect();
    let (f, _) = reference(&q, &k, &v, None, s, &[]);
    let (s0, s1) = (0.1 * 0.2 * d as f64 / 8.0, 0.1 * -0.3 * d as f64 / 8.0);
    let (e0, e1) = (s0.exp(), s1.exp());
    let want = (e0 * 1.0 + e1 * 2.0) / (e0 + e1);
    // The inputs are f32 (0.1 is not exact): agreement to f32 input rounding.
    assert!((f.out.value[0] - want).abs() < 1e-6);
    assert!((f.lse.value[0] - (e0 + e1).ln()).abs() < 1e-6);
}

#[test]
fn reference_backward_matches_finite_differences() {
    // loss = sum(dO * out); check dq, dk, dv against central differences, tq < tk.
    let s = AttnShape { heads: 2, tq: 3, tk: 5, d: 64 };
    let mut seed = 12345u64;
    let mut r = |n: usize| uniform(&mut seed, n);
    let (q, k, v, g) = (r(2 * 3 * 64), r(2 * 5 * 64), r(2 * 5 * 64), r(2 * 3 * 64));
    let (_, b) = reference(&q, &k, &v, Some(&g), s, &[]);
    let b = b.unwrap();
    let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
        let (f, _) = reference(q, k, v, None, s, &[]);
        f.out.value.iter().zip(&g).map(|(o, &gg)| o * gg as f64).sum()
    };
    let h = 1e-2f32; // f32 inputs: a coarse step, checked loosely
    for (which, idx) in [(0usize, 5usize), (0, 200), (1, 3), (1, 300), (1, 639), (2, 7), (2, 450)] {
        let (mut qp, mut kp, mut vp) = (q.clone(), k.clone(), v.clone());
        let (mut qm, mut km, mut vm) = (q.clone(), k.clone(), v.clone());
        let (pp, mm, want) = match which {
            0 => (&mut qp, &mut qm, b.dq.value[idx]),
            1 => (&mut kp, &mut km, b.dk.value[idx]),
            _ => (&mut vp, &mut vm, b.dv.value[idx]),
        };
        pp[idx] += h;
        mm[idx] -= h;
        let hp = (pp[idx] - mm[idx]) as f64;
        let fd = (loss(&qp, &kp, &vp) - loss(&qm, &km, &vm)) / hp;
        assert!((fd - want).abs() < 1e-4 * (1.0 + want.abs()), "tensor {which} [{idx}]: fd {fd} vs {want}");
    }
}

#[test]
fn reference_masking_convention_matches_a_naive_f32_loop() {
    let s = AttnShape { heads: 2, tq: 70, tk: 100, d: 64 };
    let mut seed = 7u64;
    let mut r = |n: usize| uniform(&mut seed, n);
    let (q, k, v) = (r(2 * 70 * 64), r(2 * 100 * 64), r(2 * 100 * 64));
    let (f, _) = reference(&q, &k, &v, None, s, &[]);
    // Recompute naively in f32 to cross-check the masking convention (key j <= i + tk - tq).
    for h in 0..2 {
        for i in [0usize, 35, 69] {
            let n = i + 30 + 1;
            let qi = &q[(h * 70 + i) * 64..(h * 70 + i + 1) * 64];
            let sc: Vec<f32> = (0..n).map(|j| (0..64).map(|c| qi[c] * k[(h * 100 + j) * 64 + c]).sum::<f32>() / 8.0).collect();
            let m = sc.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let l: f32 = sc.iter().map(|x| (x - m).exp()).sum();
            let o0: f32 = (0..n).map(|j| (sc[j] - m).exp() / l * v[(h * 100 + j) * 64]).sum();
            assert!((o0 as f64 - f.out.value[(h * 70 + i) * 64]).abs() < 1e-5);
        }
    }
}

#[test]
fn padded_reference_is_the_unpadded_one_on_the_visible_keys() {
    let (tq, tk, d, pad) = (4usize, 10usize, 32usize, 3usize);
    let mut seed = 99u64;
    let mut r = |n: usize| uniform(&mut seed, n);
    // Two batch rows of one head each; row 1 hides its first `pad` keys.
    let (q, k, v, g) = (r(2 * tq * d), r(2 * tk * d), r(2 * tk * d), r(2 * tq * d));
    let (f, b) = reference(&q, &k, &v, Some(&g), AttnShape { heads: 2, tq, tk, d }, &[0, pad]);
    let b = b.unwrap();
    let one = AttnShape { heads: 1, tq, tk: tk - pad, d };
    let (ks, vs) = (&k[(tk + pad) * d..], &v[(tk + pad) * d..]);
    let (f1, b1) = reference(&q[tq * d..], ks, vs, Some(&g[tq * d..]), one, &[]);
    let b1 = b1.unwrap();
    assert_eq!(&f.out.value[tq * d..], &f1.out.value[..]);
    assert_eq!(&f.lse.value[tq..], &f1.lse.value[..]);
    assert_eq!(&b.dq.value[tq * d..], &b1.dq.value[..]);
    assert_eq!(&b.dk.value[(tk + pad) * d..], &b1.dk.value[..]);
    assert!(b.dk.value[tk * d..(tk + pad) * d].iter().chain(&b.dv.value[tk * d..(tk + pad) * d]).all(|&x| x == 0.0));
    // tq = tk: the first `pad` queries see no key: zeros and lse = +inf.
    let s = AttnShape { heads: 1, tq: tk, tk, d };
    let (f, _) = reference(&k[..tk * d], &k[..tk * d], &v[..tk * d], None, s, &[pad]);
    assert!(f.lse.value[..pad].iter().all(|l| *l == f64::INFINITY) && f.lse.value[pad..].iter().all(|l| l.is_finite()));
    assert!(f.out.value[..pad * d].iter().all(|&o| o == 0.0));
}

#[test]
fn entries_and_smem_sizes() {
    for e in ENTRIES {
        assert!(crate::registry::module_of(e).is_some(), "{e} not registered");
    }
    assert_eq!(BwdBf16::V2.smem_bytes(32), 20_224);
    assert_eq!(BwdBf16::V2.smem_bytes(64), 32_512);
    assert_eq!(BwdBf16::V2.smem_bytes(128), 57_088);
    assert_eq!(BwdBf16::V3.smem_bytes(64), 41_984);
    assert_eq!(BwdBf16::V3.smem_bytes(128), 74_752);
    assert_eq!(BwdBf16::V4.smem_bytes(64), 64_512);
    assert_eq!(BwdBf16::V4.smem_bytes(128), 113_664);
    assert_eq!(BwdBf16::V4.entry(32), "attn_bwd_v3_bf16_d32");
    assert_eq!((BwdBf16::V4.keys_per_block(64), BwdBf16::V4.threads(64)), (128, 256));
    assert_eq!((BwdBf16::V4.keys_per_block(32), BwdBf16::V4.threads(32)), (64, 128));
    assert!(AttnShape { heads: 1, tq: 2, tk: 1, d: 64 }.validate("k", F32_HEAD_DIMS).is_err());
    assert!(AttnShape { heads: 1, tq: 1, tk: 1, d: 96 }.validate("k", F32_HEAD_DIMS).is_err());
    assert!(AttnShape { heads: 6, tq: 70, tk: 257, d: 128 }.validate("k", BF16_HEAD_DIMS).is_ok());
    assert!(AttnShape { heads: 6, tq: 70, tk: 257, d: 32 }.validate("k", F32_HEAD_DIMS).is_ok());
    assert!(AttnShape { heads: 6, tq: 70, tk: 257, d: 96 }.validate("k", BF16_HEAD_DIMS).is_err());
}
