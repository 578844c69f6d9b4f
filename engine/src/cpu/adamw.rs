//! The AdamW update, fused: one pass reads p, g, m, v and writes p, m, v.

use super::simd::multiversion;
use rayon::prelude::*;

/// Per-step constants of the update (torch.optim.AdamW, foreach=False).
#[derive(Clone, Copy)]
pub struct Step {
    pub decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub step_size: f32,
    pub bc2_sqrt: f32,
    pub eps: f32,
}

multiversion! {
    pub fn update_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: Step) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            // Same operation order as torch: decay, lerp the first moment, then the update.
            *p *= s.decay;
            *m += (g - *m) * (1.0 - s.beta1);
            *v = *v * s.beta2 + (1.0 - s.beta2) * g * g;
            *p -= s.step_size * *m / (v.sqrt() / s.bc2_sqrt + s.eps);
        }
    }
}

const CHUNK: usize = 1 << 14;

pub fn update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: Step) {
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| update_chunk(p, g, m, v, s));
}
