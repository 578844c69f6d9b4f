//! Runtime ISA dispatch for hot loops, and a vectorizable `exp`.
//!
//! The crate is built for baseline x86-64, so plain loops get SSE2 only. `multiversion!` compiles a
//! loop body three times (AVX-512, AVX2+FMA, baseline) and calls the best one this CPU has.

use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Level {
    Avx512,
    Avx2,
    Base,
}

pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") && is_x86_feature_detected!("fma") {
                return Level::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Level::Avx2;
            }
        }
        Level::Base
    })
}

/// Define `pub fn name(args) -> ret { body }`, compiled per ISA level and dispatched at run time.
/// The body must be safe code; loops over fixed-size arrays of 16 vectorize at every level.
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            // The inner functions repeat the outer one's arguments, however many it has.
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v512($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v256($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                // SAFETY: `level()` checked that the CPU has these features.
                match $crate::cpu::simd::level() {
                    $crate::cpu::simd::Level::Avx512 => unsafe { v512($($arg),*) },
                    $crate::cpu::simd::Level::Avx2 => unsafe { v256($($arg),*) },
                    $crate::cpu::simd::Level::Base => imp($($arg),*),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            imp($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// exp(x) in f32 (Cephes' polynomial, about 1 ulp), written with plain arithmetic so that loops
/// calling it vectorize. exp of anything below -87.3 (including -inf) is exactly 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let xc = x.clamp(-87.3, 88.3);
    // Round x·log2(e) to the integer k with the magic-number trick; k also lands in the low
    // mantissa bits of `kr`, which builds 2^k below with integer ops (an `as i32` cast would
    // be scalarized: Rust's float-to-int casts saturate).
    let kr = xc * LOG2E + ROUND;
    let k = kr - ROUND;
    let r = xc - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(kr.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23);
    if x < -87.3 {
        0.0
    } else {
        y * scale
    }
}

/// tanh(x) = 1 − 2/(e^{2x} + 1) through the vectorizable `exp` (absolute error ~1e-7).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// Sum with 16 independent accumulators (vectorizes; plain `sum()` is a serial chain).
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Max with 16 independent lanes.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let mut m = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for c in chunks {
        for i in 0..16 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    for a in acc {
        m = if a > m { a } else { m };
    }
    m
}

/// Dot product with 16 independent accumulators.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let rest: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + rest
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let (got, want) = (super::exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(super::exp(-100.0), 0.0);
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            assert!((super::tanh(x) as f64 - (x as f64).tanh()).abs() < 2e-7, "tanh({x})");
        }
    }

    #[test]
    fn reductions_match_serial() {
        let x: Vec<f32> = (0..37).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
        assert_eq!(super::sum(&x), x.iter().sum::<f32>());
        assert_eq!(super::max(&x), 50.0);
        assert_eq!(super::dot(&x, &x), x.iter().map(|v| v * v).sum::<f32>());
    }
}

multiversion! {
    /// Max of a slice (-inf when empty), dispatched to the widest SIMD level.
    pub fn max_of(x: &[f32]) -> f32 {
        max(x)
    }
}

multiversion! {
    /// Sum of a slice (16 lanes, as `sum`), dispatched to the widest SIMD level.
    pub fn sum_of(x: &[f32]) -> f32 {
        sum(x)
    }
}

multiversion! {
    /// x[i] = exp(x[i] − shift) in place (a softmax numerator), at the widest SIMD level.
    pub fn exp_shifted(x: &mut [f32], shift: f32) {
        for v in x.iter_mut() {
            *v = exp(*v - shift);
        }
    }
}

multiversion! {
    /// ds[i] = p[i] · (ds[i] − delta): softmax's backward along one row (`ds` holds dP on entry).
    pub fn softmax_grad_row(ds: &mut [f32], p: &[f32], delta: f32) {
        for (d, &pv) in ds.iter_mut().zip(p) {
            *d = pv * (*d - delta);
        }
    }
}

multiversion! {
    /// Σ exp(x − shift) over a slice, in f32 lanes accumulated in f64 per 1024 elements (the
    /// normaliser of a softmax over a vocabulary-sized row).
    pub fn sum_exp(x: &[f32], shift: f32) -> f64 {
        let mut total = 0f64;
        for block in x.chunks(1024) {
            let mut acc = [0f32; 16];
            let chunks = block.chunks_exact(16);
            let rest: f32 = chunks.remainder().iter().map(|&v| exp(v - shift)).sum();
            for c in chunks {
                for i in 0..16 {
                    acc[i] += exp(c[i] - shift);
                }
            }
            total += acc.iter().sum::<f32>() as f64 + rest as f64;
        }
        total
    }
}
