//! exp, tanh, erf and rounding for f32 in plain arithmetic, so that loops over them vectorise. The C library's expf,
//! tanhf and erff are calls LLVM cannot vectorise; in training they took a tenth of all CPU time (perf,
//! engine/benches/train.rs: expm1f, tanhf, expf and erff, for softmax, the cross-entropy and GELU).
//!
//! Accuracy (the tests sweep each over its range): exp within 2e-7 relative, tanh within 2e-7 and erf within
//! 6e-7 absolute;
//! values used inside sums and products of other f32s, where the C library's last bit does not survive anyway.

/// e^x. Below -87.3 (e^x under f32's smallest normal) it is 0, so a mask's -inf gives an exact 0; NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n * LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let clamped = x.clamp(-87.3, 88.7);
    let rounded = clamped * LOG2_E + ROUND;
    let n = rounded - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    // e^r on [-ln2/2, ln2/2] (Cephes' expf polynomial).
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let e_r = p * r * r + r + 1.0;
    // 2^n: n sits in the low bits of `rounded` (ROUND's bits plus n), and shifting it into the exponent field
    // pushes ROUND's bits out. `n as i32` would saturate and test for NaN, one element at a time.
    let scale = f32::from_bits(rounded.to_bits().wrapping_add(127) << 23);
    let y = e_r * scale;
    if x.is_nan() {
        x
    } else if x < -87.3 {
        0.0
    } else if x > 88.7 {
        f32::INFINITY
    } else {
        y
    }
}

/// 1.5 * 2^23: adding and taking it away rounds an f32 under 2^22 to the nearest integer, ties to even, in two
/// additions (f32::round is a call into the C library, which would stop the loop vectorising); the integer then
/// sits in the low bits of the sum.
const ROUND: f32 = 12_582_912.0;

/// x rounded to the nearest integer, ties to even, for |x| < 2^22 (see ROUND), in plain arithmetic.
#[inline(always)]
pub fn round_to_i32(x: f32) -> i32 {
    ((x + ROUND).to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32)
}

/// tanh(x) = 1 - 2 / (e^2x + 1): exact at the extremes, 2e-7 absolute near 0 (not relative, which GELU, its
/// use, does not need).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// erf(x) by Abramowitz and Stegun 7.1.26 (1.5e-7 absolute; 5e-7 in f32), odd in x.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(from: f32, to: f32) -> impl Iterator<Item = f32> {
        (0..=200_000).map(move |i| from + (to - from) * i as f32 / 200_000.0)
    }

    #[test]
    fn exp_is_within_two_ten_millionths() {
        let worst = sweep(-87.0, 88.0)
            .map(|x| ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 2e-7, "{worst}");
        assert_eq!([exp(0.0), exp(f32::NEG_INFINITY), exp(-100.0), exp(100.0)], [1.0, 0.0, 0.0, f32::INFINITY]);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn round_to_i32_rounds_ties_to_even() {
        let cases = [(0.0, 0), (0.49, 0), (0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (-126.6, -127)];
        for (x, want) in cases {
            assert_eq!(round_to_i32(x), want, "{x}");
        }
        assert_eq!(round_to_i32(4_194_303.0), 4_194_303);
    }

    #[test]
    fn tanh_and_erf_are_within_their_bounds() {
        let worst_tanh = sweep(-20.0, 20.0).map(|x| (tanh(x) as f64 - (x as f64).tanh()).abs()).fold(0.0, f64::max);
        let worst_erf = sweep(-6.0, 6.0)
            .map(|x| (erf(x) as f64 - candle_core::cpu::erf::erf_f64(x as f64)).abs())
            .fold(0.0, f64::max);
        assert!(worst_tanh < 2e-7 && worst_erf < 6e-7, "tanh {worst_tanh}, erf {worst_erf}");
        assert_eq!([tanh(0.0), tanh(50.0), tanh(-50.0), erf(0.0)], [0.0, 1.0, -1.0, 0.0]);
    }
}
