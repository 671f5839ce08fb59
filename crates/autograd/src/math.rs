//! Scalar maths written so the compiler can vectorise it. libm's `expf` is a function call
//! per element; the sigmoid of a training step calls it millions of times.

/// `e^x` for `x <= 0` in f32, to about 1 ulp: Cephes' `expf` (range reduction by
/// `ln 2` in two parts, a degree-5 polynomial), branch-free. Arguments below the smallest
/// normal result give 0; NaN gives NaN.
#[inline(always)]
pub fn exp_nonpositive_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // A select, not `x.max(-87.3)`: `f32::max` would turn NaN into -87.3 (and the result
    // into 1.2e-38); this way NaN runs through the polynomial and comes out NaN.
    let xc = if x < -87.3 { -87.3 } else { x };
    let n = (xc * LOG2E + 0.5).floor();
    let r = xc - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let y = p * r * r + r + 1.0;
    // n is an integer in [-126, 0]. Adding 1.5 * 2^23 puts it in the low mantissa bits,
    // which reads it out without a float-to-int `as` (saturating, so never vectorised).
    let n_int = (n + 12_582_912.0).to_bits() as i32 - 0x4B40_0000;
    let scale = f32::from_bits(((n_int + 127) << 23) as u32);
    if x < -87.3 {
        0.0
    } else {
        y * scale
    }
}

/// Logistic function in f32 without overflow: `1 / (1 + e^-x)` for `x >= 0`,
/// `e^x / (1 + e^x)` below, both through `e^-|x|`. NaN gives NaN (as PyTorch).
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    let e = exp_nonpositive_f32(-x.abs());
    let d = 1.0 / (1.0 + e);
    if x >= 0.0 {
        d
    } else {
        e * d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let got = exp_nonpositive_f32(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max((got - want).abs() / want);
            x += 0.000_37;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive_f32(0.0), 1.0);
        assert_eq!(exp_nonpositive_f32(-100.0), 0.0);
    }

    #[test]
    fn sigmoid_matches_f64() {
        let mut x = -30.0f32;
        while x <= 30.0 {
            let got = sigmoid_f32(x) as f64;
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((got - want).abs() <= 3e-7 * want, "x = {x}: {got} vs {want}");
            x += 0.001_7;
        }
        assert_eq!(sigmoid_f32(100.0), 1.0);
        assert_eq!(sigmoid_f32(-100.0), 0.0);
        assert!(sigmoid_f32(f32::NAN).is_nan());
        assert_eq!(sigmoid_f32(f32::INFINITY), 1.0);
        assert_eq!(sigmoid_f32(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn exp_of_nan_is_nan() {
        assert!(exp_nonpositive_f32(f32::NAN).is_nan());
        assert!(exp_nonpositive_f32(-f32::NAN).is_nan());
        assert_eq!(exp_nonpositive_f32(f32::NEG_INFINITY), 0.0);
    }
}
