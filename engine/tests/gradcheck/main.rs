//! Finite-difference gradient checks for every differentiable op of the engine, plus consistency
//! checks between fused kernels and their compositions of primitive ops.
//!
//! Method. The engine computes in f32. For an op `f(x_1, .., x_n) -> out` we fix random weights
//! `w` (one per output element, drawn once from a seeded `StdRng`, rounded to f32) and check the
//! gradient of the scalar `L(x) = Σ_i w_i · out_i(x)`:
//!
//! * analytic: the engine's own backward of the same weighted sum built from engine ops,
//!   `f(vars).mul(&w_tensor)?.sum_all()?.backward()`, read with `grads.get(&var)`;
//! * numeric: f32 central differences with the loss reduced in f64 on the host,
//!   `(L(x + h·e_j) − L(x − h·e_j)) / (x_j⁺ − x_j⁻)` where `L` sums `w_i · out_i` in f64 over
//!   `out.to_vec_f32()` and the denominator is the perturbation actually representable in f32.
//!   The step is `h_j = h · max(1, |x_j|)` with `h = 1e-2` unless an op states otherwise.
//!   Every evaluation rebuilds every input from a `Vec` as a fresh var (under `with_no_grad`),
//!   so no graph state leaks between evaluations; random ops (dropout) re-seed their rng inside
//!   the closure so each evaluation draws the same mask.
//! * tolerance: `|num − ana| <= atol + rtol · max(|num|, |ana|)` with (atol, rtol) =
//!   (2e-4, 1e-3) for elementwise ops (`SMOOTH`), (5e-4, 3e-3) for ops mixing many inputs
//!   (softmax, layer_norm, cross_entropy, attention: `TOL`), (1e-3, 1e-3) for ops linear in the
//!   input (matmul, views, indexing, sums: `LINEAR`) and (2e-3, 1e-2) only for inputs offset by
//!   20..100, where the f32 rounding of x itself limits any difference quotient (`LOOSE`).
//!   `harness_detects_wrong_gradients` checks that the checker rejects a gradient that is off.
//!
//! Inputs are random (seeded) and every op is also run on non-contiguous inputs: the closure
//! receives the vars and takes a transposed or narrowed view of them before applying the op, so
//! the kernels' strided gathers are exercised and the gradient must flow back through the view.
//! Large inputs are checked on a seeded random subset of their elements (`max_checks`).

// `&[x.clone()]` reads as "these inputs" in a check; `std::slice::from_ref(&x)` says less.
#![allow(unknown_lints, clippy::cloned_ref_to_slice_refs)]

mod consistency;
mod elementwise;
mod harness;
mod nn;
mod shape_index;
