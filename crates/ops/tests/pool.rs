//! Pooling: the book's values, PyTorch's rules (padding never wins, ties to the first,
//! count_include_pad), errors, and gradients over random geometry.

use autograd::testing::{assert_gradcheck, assert_gradgradcheck, distinct_tensor_f64};
use autograd::{rng, DType, Tensor};
use ops::{avg_pool2d, max_pool2d, Pair, Pool2dArgs};
use proptest::prelude::*;

fn x16() -> Tensor {
    Tensor::arange(0.0, 16.0, 1.0).unwrap().reshape(&[1, 1, 4, 4]).unwrap()
}

#[test]
fn book_values() {
    let x = Tensor::arange(0.0, 9.0, 1.0).unwrap().reshape(&[1, 1, 3, 3]).unwrap();
    let a = Pool2dArgs::new(2).stride(1);
    assert_eq!(max_pool2d(&x, a).unwrap().to_vec::<f32>(), vec![4., 5., 7., 8.]);
    assert_eq!(avg_pool2d(&x, a).unwrap().to_vec::<f32>(), vec![2., 3., 5., 6.]);
    assert_eq!(max_pool2d(&x16(), Pool2dArgs::new(3)).unwrap().to_vec::<f32>(), vec![10.]);
    assert_eq!(max_pool2d(&x16(), Pool2dArgs::new(3).padding(1).stride(2)).unwrap().to_vec::<f32>(), vec![5., 7., 13., 15.]);
    assert_eq!(max_pool2d(&x16(), Pool2dArgs::new((2, 3)).stride((2, 3)).padding((0, 1))).unwrap().to_vec::<f32>(), vec![5., 7., 13., 15.]);
    let two = Tensor::cat(&[&x16(), &x16().add_scalar(1.0)], 1).unwrap();
    let y = max_pool2d(&two, Pool2dArgs::new(3).padding(1).stride(2)).unwrap();
    assert_eq!(y.shape(), &[1, 2, 2, 2]);
    assert_eq!(y.to_vec::<f32>(), vec![5., 7., 13., 15., 6., 8., 14., 16.]);
}

#[test]
fn padding_never_wins_and_avg_counts_padding() {
    let x = Tensor::full(&[1, 1, 2, 2], -5.0);
    let m = max_pool2d(&x, Pool2dArgs::new(2).stride(1).padding(1)).unwrap();
    assert!(m.to_vec::<f32>().iter().all(|&v| v == -5.0));
    // Corner window covers one real cell out of four.
    let a = avg_pool2d(&Tensor::ones(&[1, 1, 2, 2]), Pool2dArgs::new(2).stride(1).padding(1)).unwrap();
    assert_eq!(a.to_vec::<f32>(), vec![0.25, 0.5, 0.25, 0.5, 1.0, 0.5, 0.25, 0.5, 0.25]);
}

#[test]
fn ties_send_the_gradient_to_the_first_position() {
    let x = Tensor::ones(&[1, 1, 2, 2]).requires_grad_();
    max_pool2d(&x, Pool2dArgs::new(2)).unwrap().sum().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f32>(), vec![1., 0., 0., 0.]);
}

#[test]
fn two_by_two_windows_route_ties_and_nan_as_the_general_path() {
    // Windows: all equal (first wins), one NaN (it wins), a tie of 5s, a clear 9. The
    // 4x4 input takes the tiled 2x2 path; the 5x5 one (a last row and column no window
    // covers) the general one. Both must agree.
    let n = f32::NAN;
    #[rustfmt::skip]
    let v = vec![1., 1., 2., n,
                 1., 1., 3., 1.,
                 0., 5., 4., 4.,
                 5., 0., 4., 9.];
    let seed = Tensor::from_vec(vec![10f32, 20., 30., 40.], &[1, 1, 2, 2]).unwrap();
    let x = Tensor::from_vec(v.clone(), &[1, 1, 4, 4]).unwrap().requires_grad_();
    let y = max_pool2d(&x, Pool2dArgs::new(2)).unwrap();
    assert_eq!(y.to_vec::<f32>()[0], 1.0);
    assert!(y.to_vec::<f32>()[1].is_nan());
    assert_eq!(&y.to_vec::<f32>()[2..], &[5.0, 9.0]);
    y.backward_with(Some(&seed), Default::default()).unwrap();
    #[rustfmt::skip]
    let want = vec![10., 0., 0., 20.,
                    0., 0., 0., 0.,
                    0., 30., 0., 0.,
                    0., 0., 0., 40.];
    assert_eq!(x.grad().unwrap().to_vec::<f32>(), want);
    let mut v5 = Vec::new();
    for r in 0..5 {
        for c in 0..5 {
            v5.push(if r < 4 && c < 4 { v[r * 4 + c] } else { 100.0 });
        }
    }
    let x5 = Tensor::from_vec(v5, &[1, 1, 5, 5]).unwrap().requires_grad_();
    max_pool2d(&x5, Pool2dArgs::new(2)).unwrap().backward_with(Some(&seed), Default::default()).unwrap();
    let g5 = x5.grad().unwrap().to_vec::<f32>();
    let inner: Vec<f32> = (0..16).map(|i| g5[(i / 4) * 5 + i % 4]).collect();
    assert_eq!(inner, want);
    assert!(g5.iter().enumerate().filter(|(i, _)| i / 5 == 4 || i % 5 == 4).all(|(_, &g)| g == 0.0));
}

#[test]
fn avg_2x2_gradient_is_zero_where_no_window_reaches() {
    // Odd sizes leave the last row and column outside every window. Recycled buffers of
    // the gradient's length are full of 7s first, so a cell the kernel forgets shows up.
    for (h, w) in [(5, 5), (4, 7), (7, 4), (3, 18), (17, 19)] {
        drop(Tensor::full(&[2, 3, h, w], 7.0));
        let x = Tensor::rand(&[2, 3, h, w], &mut rng(1)).requires_grad_();
        let y = avg_pool2d(&x, Pool2dArgs::new(2).stride(2)).unwrap();
        let dy = Tensor::rand(y.shape(), &mut rng(2));
        y.backward_with(Some(&dy), Default::default()).unwrap();
        let (dx, dyv, (oh, ow)) = (x.grad().unwrap().to_vec::<f32>(), dy.to_vec::<f32>(), (h / 2, w / 2));
        for (i, &v) in dx.iter().enumerate() {
            let (p, r, c) = (i / (h * w), i / w % h, i % w);
            let want = if r < 2 * oh && c < 2 * ow { dyv[(p * oh + r / 2) * ow + c / 2] * 0.25 } else { 0.0 };
            assert_eq!(v, want, "{h}x{w} at plane {p}, ({r}, {c})");
        }
    }
}

#[test]
fn errors() {
    let x = Tensor::zeros(&[1, 1, 4, 4]);
    let e = max_pool2d(&x, Pool2dArgs::new(2).padding(2)).unwrap_err().to_string();
    assert_eq!(
        e,
        "max_pool2d: padding should be at most half of the kernel size (input [1, 1, 4, 4], kernel (2, 2), stride (2, 2), padding (2, 2))"
    );
    let e = avg_pool2d(&x, Pool2dArgs::new(5)).unwrap_err().to_string();
    assert!(e.starts_with("avg_pool2d: window is larger than the padded input 4x4"), "{e}");
    let e = max_pool2d(&x, Pool2dArgs::new(2).stride(0)).unwrap_err().to_string();
    assert!(e.starts_with("max_pool2d: kernel and stride must be positive"), "{e}");
    let e = max_pool2d(&Tensor::zeros(&[4, 4]), Pool2dArgs::new(2)).unwrap_err().to_string();
    assert!(e.starts_with("max_pool2d: expects a 3-d [C, H, W] or 4-d [N, C, H, W] input"), "{e}");
}

#[derive(Debug, Clone)]
struct Case {
    shape: Vec<usize>,
    args: Pool2dArgs,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..3, 1usize..3, 1usize..4, 1usize..4, prop::option::of((1usize..4, 1usize..4)), 0usize..2, 0usize..2, 0usize..3, 0usize..3)
        .prop_map(|(n, c, kh, kw, stride, ph, pw, eh, ew)| {
            let (ph, pw) = (ph.min(kh / 2), pw.min(kw / 2));
            let h = (kh + eh).saturating_sub(2 * ph).max(1);
            let w = (kw + ew).saturating_sub(2 * pw).max(1);
            let mut args = Pool2dArgs::new((kh, kw)).padding((ph, pw));
            if let Some(s) = stride {
                args = args.stride(s);
            }
            Case { shape: vec![n, c, h, w], args }
        })
}

proptest! {
    #![proptest_config(autograd::testing::config_from_env(48))]

    #[test]
    fn gradcheck_max_pool(c in case().prop_flat_map(|c| (Just(c.clone()), distinct_tensor_f64(c.shape, 0.05)))) {
        let (c, x) = c;
        let a = c.args;
        assert_gradcheck(|v| max_pool2d(&v[0], a), &[x.requires_grad_()]);
        assert_gradgradcheck(|v| max_pool2d(&v[0], a).map(|y| y.mul(&y).unwrap()), &[x.requires_grad_()]);
    }

    #[test]
    fn gradcheck_avg_pool(c in case(), seed in any::<u64>()) {
        let x = Tensor::uniform_dtype(&c.shape, -1.0, 1.0, DType::F64, &mut rng(seed)).requires_grad_();
        let a = c.args;
        assert_gradcheck(|v| avg_pool2d(&v[0], a), &[x.clone()]);
        assert_gradgradcheck(|v| avg_pool2d(&v[0], a).map(|y| y.mul(&y).unwrap()), &[x]);
    }
}

#[test]
fn named_edge_cases() {
    // window != stride, stride not dividing the input, rectangular window, ph != pw, 1x1.
    for (shape, a) in [
        ([1, 2, 5, 5], Pool2dArgs::new(3).stride(2)),
        ([1, 1, 7, 6], Pool2dArgs::new(2).stride(3)),
        ([2, 1, 5, 6], Pool2dArgs::new((2, 3)).stride((1, 2)).padding((1, 0))),
        ([1, 1, 3, 3], Pool2dArgs::new(1)),
        ([1, 1, 4, 4], Pool2dArgs::new(4)),
        ([2, 2, 5, 6], Pool2dArgs::new(2)), // the 2x2 / stride 2 fast path, odd height
    ] {
        let n: usize = shape.iter().product();
        // Distinct values (31 is prime to every n here), so max pooling has no ties.
        let x = Tensor::from_vec((0..n).map(|i| ((i * 31) % n) as f64 * 0.1).collect(), &shape).unwrap().requires_grad_();
        assert_gradcheck(|v| max_pool2d(&v[0], a), &[x.clone()]);
        assert_gradcheck(|v| avg_pool2d(&v[0], a), &[x.clone()]);
        assert_gradgradcheck(|v| avg_pool2d(&v[0], a), &[x]);
    }
}

/// Max pooling one window at a time, as PyTorch defines it (padding never wins; the first
/// maximum in row-major order wins, a NaN over any number and the first NaN over later
/// ones): each plane's outputs and their winners' positions in the plane.
fn max_pool_by_windows(x: &[f64], planes: usize, (h, w): (usize, usize), a: Pool2dArgs) -> (Vec<f64>, Vec<usize>) {
    let (Pair(kh, kw), Pair(sh, sw), Pair(ph, pw)) = (a.kernel, a.stride.unwrap_or(a.kernel), a.padding);
    let (oh, ow) = ((h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1);
    let (mut y, mut at) = (Vec::new(), Vec::new());
    for p in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<(f64, usize)> = None;
                for ky in 0..kh {
                    for kx in 0..kw {
                        let (iy, ix) = ((oy * sh + ky).wrapping_sub(ph), (ox * sw + kx).wrapping_sub(pw));
                        if iy >= h || ix >= w {
                            continue;
                        }
                        let v = x[p * h * w + iy * w + ix];
                        let better = match best {
                            None => true,
                            Some((b, _)) => v > b || (v.is_nan() && !b.is_nan()),
                        };
                        if better {
                            best = Some((v, iy * w + ix));
                        }
                    }
                }
                let (v, i) = best.expect("every window covers an input");
                y.push(v);
                at.push(i);
            }
        }
    }
    (y, at)
}

proptest! {
    #![proptest_config(autograd::testing::config_from_env(64))]

    /// Enough planes for the kernel that pools blocks of 16 planes side by side, and some
    /// left over for the plane-by-plane search; values from a small set, so windows tie,
    /// hold NaN or are all minus infinity. Outputs (bitwise) and where the gradient goes
    /// must be those of the window-by-window definition, in both element types.
    #[test]
    fn max_pool_over_many_planes_matches_the_window_by_window_definition(
        (planes, kh, kw, sh, sw, ph, pw, h, w) in (16usize..40, 1usize..5, 1usize..5, 1usize..4, 1usize..4, 0usize..3, 0usize..3, 0usize..9, 0usize..9)
            .prop_map(|(planes, kh, kw, sh, sw, ph, pw, eh, ew)| {
                let (ph, pw) = (ph.min(kh / 2), pw.min(kw / 2));
                (planes, kh, kw, sh, sw, ph, pw, (kh + eh).saturating_sub(2 * ph).max(1), (kw + ew).saturating_sub(2 * pw).max(1))
            }),
        seed in any::<u64>(),
    ) {
        let a = Pool2dArgs::new((kh, kw)).stride((sh, sw)).padding((ph, pw));
        let n = planes * h * w;
        let pick = Tensor::uniform_dtype(&[n], 0.0, 7.0, DType::F64, &mut rng(seed)).to_vec::<f64>();
        let values = [f64::NEG_INFINITY, -1.0, 0.0, 1.0, 2.0, f64::NAN, 2.0];
        let x: Vec<f64> = pick.iter().map(|&u| values[u as usize]).collect();
        let (want_y, want_at) = max_pool_by_windows(&x, planes, (h, w), a);
        let outp = want_y.len() / planes;
        // Seeds 1, 2, 3, ...: each input's gradient names the windows it won.
        let mut want_dx = vec![0.0; n];
        for (o, &i) in want_at.iter().enumerate() {
            want_dx[o / outp * h * w + i] += (o + 1) as f64;
        }
        for dt in [DType::F32, DType::F64] {
            let xt = Tensor::from_vec(x.clone(), &[planes, 1, h, w]).unwrap().to_dtype(dt).requires_grad_();
            let y = max_pool2d(&xt, a).unwrap();
            let got = y.to_vec::<f64>();
            prop_assert_eq!(got.len(), want_y.len());
            for (o, (g, e)) in got.iter().zip(&want_y).enumerate() {
                prop_assert!(g.to_bits() == e.to_bits() || (g.is_nan() && e.is_nan()), "{dt} output {o}: {g} against {e}");
            }
            let seed_t = Tensor::from_vec((1..=got.len()).map(|k| k as f64).collect(), y.shape()).unwrap().to_dtype(dt);
            y.backward_with(Some(&seed_t), Default::default()).unwrap();
            prop_assert_eq!(xt.grad().unwrap().to_vec::<f64>(), want_dx.clone(), "{} gradient", dt);
        }
    }
}
