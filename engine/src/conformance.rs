//! The engine on another device against itself on the CPU: each case builds its inputs on the
//! CPU (fresh random values, never zeros), runs the same ops on both devices, takes a weighted
//! sum of the output and its backward, and returns every output and input gradient from both.
//! `instructgpt selftest --device cuda` turns these into its table of errors.

use crate::{DType, Device, Result, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// One result on both devices: (what, e.g. "out" or "d0", on the device, on the CPU).
pub type Compared = (String, Vec<f32>, Vec<f32>);

/// One case: what it computes, on which shapes, and its results, or why it could not run.
pub struct DeviceCase {
    pub op: &'static str,
    pub shape: String,
    /// "f32", or "bf16" for a case run under `autocast_bf16` (the CPU's f32 is its reference).
    pub precision: &'static str,
    pub results: Result<Vec<Compared>>,
}

type Build = fn(&[Tensor]) -> Result<Tensor>;

/// (op, input shapes, f, whether to check gradients).
fn cases() -> Vec<(&'static str, Vec<Vec<usize>>, Build, bool)> {
    let cases: Vec<(&'static str, Vec<Vec<usize>>, Build, bool)> = vec![
        ("add (broadcast)", vec![vec![7, 33], vec![33]], |x| x[0].add(&x[1]), true),
        ("sub (broadcast)", vec![vec![3, 1, 5], vec![4, 5]], |x| x[0].sub(&x[1]), true),
        ("mul", vec![vec![1000 + 3]], |x| x[0].mul(&x[0].affine(0.5, 1.0)?), true),
        ("div (broadcast)", vec![vec![6, 129], vec![6, 1]], |x| x[0].div(&x[1].affine(0.1, 3.0)?), true),
        ("minimum / maximum (ties split the gradient)", vec![vec![5, 17], vec![17]], |x| {
            x[0].minimum(&x[1])?.add(&x[0].maximum(&x[0].clamp(-0.5, 0.5)?)?)
        }, true),
        ("affine", vec![vec![4, 9, 10]], |x| x[0].affine(1.5, -0.25), true),
        ("gelu", vec![vec![3, 1001]], |x| x[0].gelu(), true),
        ("exp, log, tanh", vec![vec![5, 33]], |x| x[0].exp()?.add(&x[0].sqr()?.add_scalar(0.1)?.log()?)?.add(&x[0].tanh()?), true),
        ("sigmoid, log_sigmoid", vec![vec![4, 65]], |x| {
            let y = x[0].affine(6.0, 0.0)?;
            y.sigmoid()?.add(&y.log_sigmoid()?)
        }, true),
        ("sqr, sqrt, relu", vec![vec![300]], |x| x[0].sqr()?.add(&x[0].sqr()?.add_scalar(0.1)?.sqrt()?)?.add(&x[0].relu()?), true),
        ("clamp", vec![vec![7, 40]], |x| x[0].affine(3.0, 0.0)?.clamp(-1.0, 1.5), true),
        ("where (broadcast)", vec![vec![6, 20], vec![20], vec![6, 20]], |x| x[2].relu()?.where_cond(&x[0], &x[1]), true),
        ("softmax", vec![vec![7, 129]], |x| x[0].softmax(), true),
        ("layer_norm", vec![vec![5, 7, 96], vec![96], vec![96]], |x| x[0].layer_norm(&x[1], &x[2], 1e-5), true),
        ("matmul + bias", vec![vec![65, 33], vec![33, 47], vec![47]], |x| x[0].matmul_bias(&x[1], &x[2]), true),
        ("matmul_bias_gelu (f32, the GELU epilogue of v2)", vec![vec![2, 9, 40], vec![40, 67], vec![67]], |x| x[0].matmul_bias_gelu(&x[1], &x[2]), true),
        ("matmul_bias_gelu of a transposed view (gathered)", vec![vec![40, 18], vec![40, 64], vec![64]], |x| x[0].t()?.matmul_bias_gelu(&x[1], &x[2]), true),
        ("matmul, shared weight", vec![vec![2, 9, 33], vec![33, 20]], |x| x[0].matmul(&x[1]), true),
        ("matmul by a transposed weight (the tied head: its gradient in the weight's layout)", vec![vec![2, 9, 33], vec![70, 33]], |x| x[0].matmul(&x[1].t()?), true),
        ("matmul, transposed view", vec![vec![33, 65], vec![47, 33]], |x| x[0].t()?.matmul(&x[1].t()?), true),
        ("matmul, batched", vec![vec![3, 17, 9], vec![3, 9, 11]], |x| x[0].matmul(&x[1]), true),
        ("matmul, A a transposed view (read in place), batched, shared B", vec![vec![3, 9, 17], vec![9, 11]], |x| x[0].transpose(1, 2)?.matmul(&x[1]), true),
        ("matmul, x·xᵀ (one buffer, both sides)", vec![vec![20, 33]], |x| x[0].matmul(&x[0].t()?), true),
        ("matmul, batched 4-d, transposed view (scores)", vec![vec![2, 3, 130, 32], vec![2, 3, 129, 32]], |x| x[0].matmul(&x[1].t()?), true),
        ("sum (dims 0, 2)", vec![vec![4, 5, 6]], |x| x[0].sum(&[0, 2], true), true),
        ("max over dim 1", vec![vec![4, 9, 6]], |x| x[0].max_keepdim(1), true),
        ("max with ties (the first takes the gradient)", vec![vec![6, 50]], |x| x[0].clamp(-0.2, 0.2)?.max_keepdim(1), true),
        ("argmax over dim 2", vec![vec![5, 7, 40]], |x| x[0].argmax_keepdim(2)?.to_dtype(crate::DType::F32), false),
        // Logits spread (x·3e4) so that a few ids hold the mass: the CDF's steps are then far
        // wider than f32's summation-order error. At x·4 the 50257 ids share it, steps of ~2e-5
        // against errors of ~1e-5, and the emulated GPU once drew the id next to the CPU's.
        ("sample_rows at temperature 0.8 (fixed uniforms; ids as numbers)", vec![vec![3, 4, 50257]], |x| {
            let u: Vec<f64> = (0..12).map(|i| (0.05 + 0.618_034 * i as f64) % 1.0).collect();
            x[0].affine(3.0e4, 0.0)?.sample_rows(&u, 0.8)?.to_dtype(crate::DType::F32)
        }, false),
        ("log_softmax", vec![vec![7, 129]], |x| x[0].log_softmax(), true),
        ("log_softmax, wide rows", vec![vec![3, 5000]], |x| x[0].log_softmax(), true),
        ("gather (host ids, repeated)", vec![vec![3, 50]], |x| {
            let ids = Tensor::new(vec![0i64, 49, 7, 7, 3, 3, 3, 20, 1, 2, 48, 0], &[3, 4])?;
            x[0].gather(&ids)
        }, true),
        ("gather (device ids from argmax)", vec![vec![2, 6, 33]], |x| x[0].gather(&x[0].argmax_keepdim(2)?), true),
        ("cat (dim 1), stack", vec![vec![2, 3, 5], vec![2, 4, 5]], |x| {
            let c = Tensor::cat(&[x[0].clone(), x[1].clone(), x[0].clone()], 1)?;
            Tensor::stack(&[c.clone(), c.affine(2.0, 0.0)?], 0)
        }, true),
        ("index_select (dim 1)", vec![vec![4, 10, 3]], |x| x[0].index_select(1, &Tensor::new(vec![9i64, 0, 3, 3], &[4])?), true),
        ("assign into views", vec![vec![4, 6], vec![2, 3]], |x| {
            let buf = x[0].affine(1.0, 0.0)?;
            buf.narrow(0, 1, 2)?.narrow(1, 2, 3)?.assign(&x[1])?;
            buf.narrow(1, 0, 2)?.assign(&buf.narrow(1, 4, 2)?)?; // from the same buffer
            buf.t()?.narrow(0, 5, 1)?.assign(&x[1].narrow(1, 0, 1)?.reshape(&[1, 2])?.broadcast_as(&[2, 2])?.reshape(&[1, 4])?)?;
            buf.narrow(0, 0, 2)?.narrow(1, 0, 3)?.assign(&x[1].narrow(0, 0, 1)?.broadcast_as(&[2, 3])?)?; // a stride-0 source
            Ok(buf)
        }, false),
        ("narrow (its gradient)", vec![vec![3, 4, 10]], |x| x[0].narrow(1, 1, 2)?.narrow(2, 3, 5)?.affine(2.0, 0.0), true),
        ("to_dtype f32 (a copy of a permuted view)", vec![vec![5, 7, 3]], |x| x[0].permute(&[1, 2, 0])?.to_dtype(crate::DType::F32), false),
        ("contiguous (permuted, narrowed)", vec![vec![6, 5, 8]], |x| x[0].permute(&[2, 0, 1])?.narrow(1, 1, 4)?.contiguous(), true),
        ("embedding", vec![vec![50, 24]], |x| {
            let ids = Tensor::new(vec![3i64, 0, 49, 3, 7, 3, 21], &[7])?;
            crate::embedding(&ids.reshape(&[7])?, &x[0])
        }, true),
        ("cross_entropy (one target ignored)", vec![vec![9, 257]], |x| {
            let targets = Tensor::new(vec![5i64, 256, 0, -100, 17, 17, 100, 3, 200], &[9])?;
            x[0].cross_entropy(&targets)
        }, true),
        ("token_logprobs at temperature 0.7, + its entropy (rows [3, 3], one target ignored)", vec![vec![3, 3, 257]], |x| {
            let targets = Tensor::new(vec![5i64, 256, 0, -100, 17, 17, 100, 3, 200], &[3, 3])?;
            let (lp, ent) = x[0].token_logprobs_entropy(&targets, 0.7)?;
            lp.add(&ent.mul_scalar(0.5)?)
        }, true),
        ("attention, flash kernels (head dim 64)", vec![vec![2, 3, 40, 64]; 3], |x| crate::causal_attention(&x[0], &x[1], &x[2]), true),
        ("attention, composed (head dim 16)", vec![vec![2, 2, 33, 16]; 3], |x| crate::causal_attention(&x[0], &x[1], &x[2]), true),
        ("attention, flash kernels (head dim 128, tq < tk)", vec![vec![1, 2, 17, 128], vec![1, 2, 70, 128], vec![1, 2, 70, 128]], |x| crate::causal_attention(&x[0], &x[1], &x[2]), true),
        ("attention, decode kernel (one query, head dim 64)", vec![vec![2, 3, 1, 64], vec![2, 3, 45, 64], vec![2, 3, 45, 64]], |x| crate::causal_attention(&x[0], &x[1], &x[2]), true),
        ("attention, padded keys (head dim 64)", vec![vec![2, 3, 24, 64]; 3], |x| crate::causal_attention_padded(&x[0], &x[1], &x[2], &[0, 5]), true),
        ("attention, flash kernels (head dim 32)", vec![vec![2, 2, 70, 32]; 3], |x| crate::causal_attention(&x[0], &x[1], &x[2]), true),
        ("attention, padded keys, padding queries (head dim 32, tq < tk)", vec![vec![3, 2, 20, 32], vec![3, 2, 50, 32], vec![3, 2, 50, 32]], |x| {
            crate::causal_attention_padded(&x[0], &x[1], &x[2], &[40, 0, 33])
        }, true),
        ("attention, padded, one query (decode kernel, head dim 32; a row all padding)", vec![vec![2, 2, 1, 32], vec![2, 2, 9, 32], vec![2, 2, 9, 32]], |x| {
            crate::causal_attention_padded(&x[0], &x[1], &x[2], &[3, 9])
        }, true),
        ("attention, padded, one query (decode)", vec![vec![2, 2, 1, 16], vec![2, 2, 9, 16], vec![2, 2, 9, 16]], |x| {
            crate::causal_attention_padded(&x[0], &x[1], &x[2], &[3, 0])
        }, true),
        ("mlp block", vec![vec![2, 5, 32], vec![32], vec![32], vec![32, 64], vec![64], vec![64, 32]], |x| {
            let h = x[0].layer_norm(&x[1], &x[2], 1e-5)?.matmul_bias(&x[3], &x[4])?.gelu()?.matmul(&x[5])?;
            x[0].add(&h)
        }, true),
        ("matmul of empty operands (K = 0: zeros; no rows: nothing)", vec![vec![3, 0], vec![0, 4], vec![3, 4], vec![2, 0, 5], vec![2, 5, 3]], empty_matmuls, true),
    ];
    cases
}

/// Uploads of 0 elements; [3, 0]·[0, 4] (all zeros: every element must still be written) + x2,
/// plus the sum of [2, 0, 5]·[2, 5, 3] (nothing to compute; its backward multiplies over K = 0).
fn empty_matmuls(x: &[Tensor]) -> Result<Tensor> {
    let none = x[3].matmul(&x[4])?.sum_all()?;
    x[0].matmul(&x[1])?.add(&x[2])?.add(&none)
}

/// Matmuls under `autocast_bf16`, forward and backward, on the device (the CPU runs f32).
fn bf16_cases() -> Vec<(&'static str, Vec<Vec<usize>>, Build, bool)> {
    vec![
        ("matmul + bias, bf16 autocast", vec![vec![65, 40], vec![40, 47], vec![47]], |x| x[0].matmul_bias(&x[1], &x[2]), true),
        ("matmul, K and N not multiples of 8 (padded), bf16 autocast", vec![vec![33, 45], vec![45, 19]], |x| x[0].matmul(&x[1]), true),
        ("matmul, batched, transposed view, bf16 autocast", vec![vec![3, 17, 24], vec![3, 11, 24]], |x| x[0].matmul(&x[1].t()?), true),
        ("matmul by a transposed weight (the tied head), bf16 autocast", vec![vec![2, 9, 40], vec![70, 40]], |x| x[0].matmul(&x[1].t()?), true),
        ("matmul of empty operands (K = 0: zeros; no rows: nothing), bf16 autocast", vec![vec![3, 0], vec![0, 4], vec![3, 4], vec![2, 0, 5], vec![2, 5, 3]], empty_matmuls, true),
        ("attention, flash kernels (head dim 64), bf16 autocast", vec![vec![2, 3, 40, 64]; 3], |x| crate::causal_attention(&x[0], &x[1], &x[2]), true),
        ("attention, head dim 32, bf16 autocast", vec![vec![2, 2, 40, 32]; 3], |x| crate::causal_attention(&x[0], &x[1], &x[2]), true),
        ("attention, padded keys, bf16 autocast", vec![vec![2, 3, 24, 64]; 3], |x| crate::causal_attention_padded(&x[0], &x[1], &x[2], &[0, 5]), true),
        ("attention, padded keys, padding queries (head dim 32, tq < tk), bf16 autocast", vec![vec![3, 2, 20, 32], vec![3, 2, 50, 32], vec![3, 2, 50, 32]], |x| {
            crate::causal_attention_padded(&x[0], &x[1], &x[2], &[40, 0, 33])
        }, true),
        ("attention, padded, one query (the f32 decode kernel), bf16 autocast", vec![vec![2, 2, 1, 64], vec![2, 2, 9, 64], vec![2, 2, 9, 64]], |x| {
            crate::causal_attention_padded(&x[0], &x[1], &x[2], &[3, 9])
        }, true),
        ("attention, flash kernels (head dim 128, tq < tk), bf16 autocast", vec![vec![1, 2, 17, 128], vec![1, 2, 70, 128], vec![1, 2, 70, 128]], |x| crate::causal_attention(&x[0], &x[1], &x[2]), true),
        // The fused GELU epilogue (N = 64), and the composed fallback (N = 36, not a multiple of 8).
        ("matmul_bias_gelu (the tensor-core GELU epilogue), bf16 autocast", vec![vec![2, 9, 40], vec![40, 64], vec![64]], |x| x[0].matmul_bias_gelu(&x[1], &x[2]), true),
        ("matmul_bias_gelu, N not a multiple of 8 (matmul, then GELU), bf16 autocast", vec![vec![7, 24], vec![24, 36], vec![36]], |x| x[0].matmul_bias_gelu(&x[1], &x[2]), true),
        ("mlp block, bf16 autocast", vec![vec![2, 5, 32], vec![32], vec![32], vec![32, 64], vec![64], vec![64, 32]], |x| {
            let h = x[0].layer_norm(&x[1], &x[2], 1e-5)?.matmul_bias(&x[3], &x[4])?.gelu()?.matmul(&x[5])?;
            x[0].add(&h)
        }, true),
        // bf16 tensors through the ops that read and write bf16 natively (GELU, softmax,
        // cross-entropy), and one that widens them (exp); to_dtype's gradient comes back in f32.
        ("gelu, softmax, exp of bf16 tensors, bf16 autocast", vec![vec![3, 1001], vec![5, 200]], |x| {
            let (a, b) = (x[0].to_dtype(DType::BF16)?, x[1].to_dtype(DType::BF16)?);
            let s = b.softmax()?.add(&b.exp()?)?.sum_all()?;
            a.gelu()?.add(&s)
        }, true),
        // One f32 and one bf16 operand of one shape: the bf16 side read in place, on either side
        // of a non-commutative op.
        ("f32 with bf16 operands (sub, div; bf16 on either side), bf16 autocast", vec![vec![4, 333], vec![4, 333]], |x| {
            let b = x[1].to_dtype(DType::BF16)?;
            x[0].sub(&b)?.add(&b.div(&x[0].affine(0.1, 3.0)?)?)
        }, true),
        ("layer_norm of bf16 rows (bf16 in and out), bf16 autocast", vec![vec![5, 7, 96], vec![96], vec![96]], |x| x[0].to_dtype(DType::BF16)?.layer_norm(&x[1], &x[2], 1e-5), true),
        ("cross_entropy of bf16 logits (one target ignored), bf16 autocast", vec![vec![9, 257]], |x| {
            let targets = Tensor::new(vec![5i64, 256, 0, -100, 17, 17, 100, 3, 200], &[9])?;
            x[0].to_dtype(DType::BF16)?.cross_entropy(&targets)
        }, true),
        ("token_logprobs of bf16 logits at temperature 1.3 (one target ignored), bf16 autocast", vec![vec![9, 257]], |x| {
            let targets = Tensor::new(vec![5i64, 256, 0, -100, 17, 17, 100, 3, 200], &[9])?;
            x[0].to_dtype(DType::BF16)?.token_logprobs(&targets, 1.3)
        }, true),
        // The storage types autocast promises on the device (the CPU ignores autocast): an
        // activation matmul, layernorm, attention and GELU of bf16 store bf16; a head
        // (`matmul_as` f32) and the residual add f32.
        ("storage types under bf16 autocast (matmul, matmul_as f32, layer_norm, attention, gelu, add)", vec![vec![2, 2, 16, 64], vec![64, 64], vec![64], vec![64]], |x| {
            let act = x[0].matmul(&x[1])?;
            let head = x[0].matmul_as(&x[1], DType::F32)?;
            let ln = x[0].layer_norm(&x[2], &x[3], 1e-5)?;
            let att = crate::causal_attention(&ln, &act, &x[0])?;
            let g = act.gelu()?;
            let sum = head.add(&att)?.add(&g)?;
            if x[0].device().is_cuda() {
                let got = [act.dtype(), head.dtype(), ln.dtype(), att.dtype(), g.dtype(), sum.dtype()];
                let want = [DType::BF16, DType::F32, DType::BF16, DType::BF16, DType::BF16, DType::F32];
                if got != want {
                    return Err(crate::Error::Msg(format!("types (matmul, matmul_as f32, layer_norm, attention, gelu, add) {got:?}, want {want:?}")));
                }
            }
            Ok(sum)
        }, true),
        // A GPT-2 block as the model runs it under autocast: layernorm, attention and matmul
        // outputs stored in bf16, q/k/v gathered from the bf16 qkv (a bf16 copy and its
        // gradient), the residual stream and every parameter gradient f32. Weights scaled by
        // 0.1 as trained ones are small: with |w| up to 1 the attention scores reach the
        // hundreds, where bf16 rounding alone moves the softmax (errors ~1e-1 of the peak with
        // the rounding emulated on the CPU, against ~5e-3 at this scale).
        ("transformer block, bf16 autocast", vec![vec![2, 24, 128], vec![128], vec![128], vec![128, 384], vec![384], vec![128, 128]], |x| {
            let qkv = x[0].layer_norm(&x[1], &x[2], 1e-5)?.matmul_bias(&x[3].mul_scalar(0.1)?, &x[4])?;
            let heads = qkv.reshape(&[2, 24, 3, 2, 64])?.permute(&[2, 0, 3, 1, 4])?;
            let part = |i: usize| heads.narrow(0, i, 1)?.reshape(&[2, 2, 24, 64]);
            let a = crate::causal_attention(&part(0)?, &part(1)?, &part(2)?)?.permute(&[0, 2, 1, 3])?.reshape(&[2, 24, 128])?;
            x[0].add(&a.matmul(&x[5].mul_scalar(0.1)?)?)
        }, true),
    ]
}

fn run_on(device: Device, inputs: &[Tensor], weights: &Tensor, f: Build, grads: bool, bf16: bool) -> Result<Vec<(String, Vec<f32>)>> {
    let _autocast = bf16.then(crate::autocast_bf16);
    let xs: Vec<Tensor> = inputs.iter().map(|t| Ok(t.to_device(device)?.var())).collect::<Result<_>>()?;
    let y = f(&xs)?;
    let mut out = vec![("out".to_string(), y.to_vec_f32()?)];
    if grads {
        let loss = y.mul(&weights.to_device(device)?)?.sum_all()?;
        let g = loss.backward()?;
        for (i, x) in xs.iter().enumerate().filter(|(_, x)| x.numel() > 0) {
            let gi = g.get(x).map(|t| t.to_vec_f32()).transpose()?.unwrap_or_else(|| vec![0.0; x.numel()]);
            out.push((format!("d{i}"), gi));
        }
    }
    Ok(out)
}

/// Every case on `device` and on the CPU, inputs drawn from `seed`.
pub fn compare_devices(device: Device, seed: u64) -> Vec<DeviceCase> {
    // Outputs start as NaN on the device while the cases run: an element a kernel skips shows.
    struct Poisoned;
    impl Drop for Poisoned {
        fn drop(&mut self) {
            crate::cuda::ops::poison_outputs(false); // also when a case panics
        }
    }
    crate::cuda::ops::poison_outputs(device.is_cuda());
    let _on = Poisoned;
    compare_all(device, seed)
}

fn compare_all(device: Device, seed: u64) -> Vec<DeviceCase> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut adamw_rng = StdRng::seed_from_u64(seed ^ 0xada);
    let mut nonzero = |shape: &[usize]| -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.gen_range(0.1f32..1.0) * if rng.gen() { 1.0 } else { -1.0 }).collect();
        Tensor::new(v, shape).expect("sizes match")
    };
    let tagged = |list: Vec<(&'static str, Vec<Vec<usize>>, Build, bool)>, bf16: bool| list.into_iter().map(move |c| (c, bf16));
    tagged(cases(), false)
        .chain(tagged(bf16_cases(), true))
        .map(|((op, shapes, f, grads), bf16)| {
            let inputs: Vec<Tensor> = shapes.iter().map(|s| nonzero(s)).collect();
            let shape = shapes.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" ");
            let results = (|| {
                let want_shape = crate::autograd::with_no_grad(|| f(&inputs))?.shape().to_vec();
                let weights = nonzero(&want_shape);
                let got = run_on(device, &inputs, &weights, f, grads, bf16)?;
                let want = run_on(Device::Cpu, &inputs, &weights, f, grads, false)?;
                Ok(got.into_iter().zip(want).map(|((name, g), (_, w))| (name, g, w)).collect())
            })();
            DeviceCase { op, shape, precision: if bf16 { "bf16" } else { "f32" }, results }
        })
        .chain([adamw_case(device, &mut adamw_rng), norm_case(device, &mut adamw_rng)])
        .collect()
}

/// The global gradient norm over tensors of several sizes (one empty), and the gradients after
/// clipping to half of it.
fn norm_case(device: Device, rng: &mut StdRng) -> DeviceCase {
    let shapes = [vec![37, 11], vec![300], vec![0, 9], vec![5, 4, 3]];
    let values: Vec<Vec<f32>> = shapes.iter().map(|s| (0..s.iter().product()).map(|_| rng.gen_range(-2.0f32..2.0)).collect()).collect();
    let run = |device: Device| -> Result<Vec<(String, Vec<f32>)>> {
        let params: Vec<Tensor> = shapes.iter().map(|s| Tensor::zeros(s).var()).collect();
        let mut store = crate::GradStore::new();
        for ((p, v), s) in params.iter().zip(&values).zip(&shapes) {
            store.insert(p, Tensor::new(v.clone(), s)?.to_device(device)?);
        }
        let norm = store.global_norm()?;
        store.clip_global_norm(norm / 2.0)?;
        let mut out = vec![("norm".to_string(), vec![norm])];
        for (i, p) in params.iter().enumerate().filter(|(_, p)| p.numel() > 0) {
            out.push((format!("clipped {i}"), store.get(p).expect("inserted").to_vec_f32()?));
        }
        Ok(out)
    };
    let results = (|| Ok(run(device)?.into_iter().zip(run(Device::Cpu)?).map(|((name, g), (_, w))| (name, g, w)).collect()))();
    DeviceCase { op: "global gradient norm, clipping", shape: "[37, 11] [300] [0, 9] [5, 4, 3]".into(), precision: "f32", results }
}

/// Three AdamW steps (weight decay, a second group at another learning rate) on a parameter on
/// each device, from the same gradients: parameters and moments after them.
fn adamw_case(device: Device, rng: &mut StdRng) -> DeviceCase {
    use crate::optim::{AdamW, AdamWConfig, ParamGroup};
    let shapes = [vec![37, 11], vec![300]];
    let init: Vec<Vec<f32>> = shapes.iter().map(|s| (0..s.iter().product()).map(|_| rng.gen_range(-1.0f32..1.0)).collect()).collect();
    let grads: Vec<Vec<Vec<f32>>> = (0..3).map(|_| init.iter().map(|p| p.iter().map(|_| rng.gen_range(-2.0f32..2.0)).collect()).collect()).collect();
    let run = |device: Device| -> Result<Vec<(String, Vec<f32>)>> {
        let params: Vec<Tensor> = init.iter().zip(&shapes).map(|(v, s)| Ok(Tensor::new(v.clone(), s)?.to_device(device)?.var())).collect::<Result<_>>()?;
        let groups = vec![ParamGroup { params: vec![params[0].clone()], weight_decay: 0.1 }, ParamGroup { params: vec![params[1].clone()], weight_decay: 0.0 }];
        let mut opt = AdamW::new(groups, AdamWConfig::default())?;
        opt.set_lr_scales(&[1.0, 0.5])?;
        for step in &grads {
            let mut store = crate::GradStore::new();
            for ((p, g), s) in params.iter().zip(step).zip(&shapes) {
                store.insert(p, Tensor::new(g.clone(), s)?.to_device(device)?);
            }
            opt.step(&store, 1e-2)?;
        }
        let (_, states) = opt.state()?;
        let mut out = Vec::new();
        for (i, (p, st)) in params.iter().zip(states).enumerate() {
            out.extend([(format!("param {i}"), p.to_vec_f32()?), (format!("m {i}"), st.m), (format!("v {i}"), st.v)]);
        }
        Ok(out)
    };
    let results = (|| Ok(run(device)?.into_iter().zip(run(Device::Cpu)?).map(|((name, g), (_, w))| (name, g, w)).collect()))();
    DeviceCase { op: "AdamW (3 steps, two groups)", shape: "[37, 11] [300]".into(), precision: "f32", results }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the CPU against itself every case runs, checks gradients where it says so, and agrees
    /// exactly: the harness itself works, so a GPU run's failures are the GPU's.
    #[test]
    fn every_case_runs_on_the_cpu_and_agrees_with_itself() {
        let cases = compare_devices(Device::Cpu, 1);
        let declared: Vec<_> = super::cases().into_iter().chain(super::bf16_cases()).collect();
        assert_eq!(cases.len(), declared.len() + 2, "every case, AdamW and the norm");
        assert_eq!(cases.iter().filter(|c| c.precision == "bf16").count(), super::bf16_cases().len());
        let with_grads: Vec<&str> = declared.iter().filter(|c| c.3).map(|c| c.0).collect();
        assert!(with_grads.len() >= 30);
        for c in cases {
            let results = c.results.unwrap_or_else(|e| panic!("{}: {e}", c.op));
            assert!(results.len() >= 2 || !with_grads.contains(&c.op), "{}: gradients checked", c.op);
            if c.op.starts_with("AdamW") {
                assert!(results.iter().any(|(w, g, _)| w == "v 1" && g.iter().all(|&x| x > 0.0)), "the moments moved");
            }
            for (what, got, want) in results {
                assert!(!want.is_empty() && want.iter().all(|x| x.is_finite()), "{} {what}", c.op);
                assert_eq!(got, want, "{} {what}", c.op);
            }
        }
    }
}
