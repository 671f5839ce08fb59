//! Issue 26: `Dropout` and `Dropout2d` with fixed seeds. The mask rate is within 4
//! standard deviations of `p`, kept values are scaled by exactly `1 / (1 - p)`, evaluation
//! mode is the identity, and the same seed gives the same masks at any thread count.

use autograd::{manual_seed, DType, Tensor};
use nn::{Dropout, Dropout2d, Module};

/// `(zeros, kept values all exactly x / (1 - p))` of a dropout output of all-ones input.
fn count(y: &Tensor, p: f64, dtype: DType) -> usize {
    let keep = Tensor::scalar_dtype(1.0, dtype).mul_scalar(1.0 / (1.0 - p)).to_vec::<f64>()[0];
    let v = y.to_vec::<f64>();
    assert!(v.iter().all(|&e| e == 0.0 || e == keep), "values other than 0 and 1/(1-p) = {keep}");
    v.iter().filter(|&&e| e == 0.0).count()
}

#[test]
fn dropout_rate_is_within_four_standard_deviations_and_scaling_is_exact() {
    for dtype in [DType::F32, DType::F64] {
        for (p, seed) in [(0.1, 1u64), (0.5, 2), (0.8, 3)] {
            manual_seed(seed);
            let n = 100_000usize;
            let layer = Dropout::new(p).unwrap();
            let y = layer.forward(&Tensor::ones_dtype(&[n], dtype)).unwrap();
            let zeros = count(&y, p, dtype) as f64;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!((zeros - n as f64 * p).abs() <= 4.0 * sd, "p={p}: {zeros} zeros of {n}");
        }
    }
}

#[test]
fn dropout2d_zeroes_whole_channels_at_the_rate() {
    manual_seed(7);
    let (n, c, h, w) = (50usize, 40usize, 3usize, 2usize);
    let p = 0.3;
    let y = Dropout2d::new(p).unwrap().forward(&Tensor::ones_dtype(&[n, c, h, w], DType::F64)).unwrap();
    count(&y, p, DType::F64);
    let v = y.to_vec::<f64>();
    let planes: Vec<&[f64]> = v.chunks(h * w).collect();
    assert!(planes.iter().all(|pl| pl.iter().all(|&e| e == pl[0])), "a channel is kept or dropped whole");
    let dropped = planes.iter().filter(|pl| pl[0] == 0.0).count() as f64;
    let m = (n * c) as f64;
    assert!((dropped - m * p).abs() <= 4.0 * (m * p * (1.0 - p)).sqrt(), "{dropped} of {m} channels dropped");
    // [N, C, L] is read as batched channels, as PyTorch does today.
    let y = Dropout2d::new(0.5).unwrap().forward(&Tensor::ones_dtype(&[4, 6, 5], DType::F64)).unwrap();
    let v = y.to_vec::<f64>();
    assert!(v.chunks(5).all(|pl| pl.iter().all(|&e| e == pl[0])));
    let e = Dropout2d::default().forward(&Tensor::ones(&[4, 6])).unwrap_err().to_string();
    assert!(e.starts_with("dropout2d: "), "{e}");
}

#[test]
fn eval_mode_p0_and_p1() {
    let x = Tensor::from_vec(vec![1.0f32, -2.0, f32::NAN, 4.0], &[4]).unwrap();
    let layer = Dropout::new(0.5).unwrap();
    layer.eval();
    let same = |a: &Tensor, b: &Tensor| a.to_vec::<f32>().iter().zip(b.to_vec::<f32>()).all(|(p, q)| p.to_bits() == q.to_bits());
    assert!(same(&layer.forward(&x).unwrap(), &x), "eval mode is the identity");
    let d2 = Dropout2d::new(0.5).unwrap();
    d2.eval();
    let x4 = Tensor::ones(&[2, 3, 2, 2]);
    assert!(d2.forward(&x4).unwrap().equal(&x4));
    // p = 0 draws nothing: the generator does not move.
    manual_seed(3);
    let before = autograd::rng_state();
    assert!(same(&Dropout::new(0.0).unwrap().forward(&x).unwrap(), &x));
    assert_eq!(autograd::rng_state(), before);
    // p = 1 multiplies by zero (NaN stays NaN, as PyTorch's input * 0).
    let y = Dropout::new(1.0).unwrap().forward(&x).unwrap().to_vec::<f32>();
    assert_eq!((y[0], y[1], y[3]), (0.0, 0.0, 0.0));
    assert!(y[2].is_nan());
    for p in [-0.1, 1.5, f64::NAN] {
        let e = Dropout::new(p).unwrap_err().to_string();
        assert!(e.starts_with("Dropout: "), "{e}");
        assert!(ops::dropout(&x, p, true).unwrap_err().to_string().starts_with("dropout: "));
    }
    assert_eq!(Dropout::default().describe(), "Dropout(p=0.5, inplace=False)");
    assert_eq!(Dropout2d::new(0.3).unwrap().describe(), "Dropout2d(p=0.3, inplace=False)");
}

#[test]
fn same_seed_same_masks_at_any_thread_count() {
    let x = Tensor::uniform(&[64, 8, 16, 16], -1.0, 1.0, &mut autograd::rng(9)).requires_grad_();
    let run = |threads| {
        autograd::set_num_threads(threads).unwrap();
        manual_seed(42);
        x.zero_grad();
        let y = Dropout::new(0.4).unwrap().forward(&x).unwrap();
        let z = Dropout2d::new(0.4).unwrap().forward(&y).unwrap();
        z.sum().backward().unwrap();
        let bits = |t: &Tensor| t.to_vec::<f32>().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        (bits(&z), bits(&x.grad().unwrap()), autograd::rng_state())
    };
    let one = run(1);
    assert!(one == run(2) && one == run(3));
    // A different seed gives a different mask.
    autograd::set_num_threads(1).unwrap();
    manual_seed(43);
    let other = Dropout::new(0.4).unwrap().forward(&x).unwrap();
    assert!(!other.equal(&Tensor::from_vec(one.0.iter().map(|&b| f32::from_bits(b)).collect(), x.shape()).unwrap()));
}
