//! Issue "Soundness": sizes, strides, paddings, dilations and groups near the ends of
//! `usize` (`2^32`, `2^62`, `2^63`, `usize::MAX`, modular inverses whose product with a
//! small number wraps to a small one) against every public op that takes a shape or a
//! size. Inputs are expanded views of tiny buffers, so an input may claim far more
//! elements than memory holds.
//!
//! Each case is classified with exact (`u128`) arithmetic: arguments that overflow must
//! give an error naming the op; small valid ones must give the right result; a case that
//! would be legal but huge (its result would not fit this machine's memory) is skipped,
//! since allocating it would abort the test process. No case may crash or panic, except
//! the infallible constructors, whose documented panic is checked.

use autograd::shape::MAX_NUMEL;
use autograd::{Error, Result, Tensor};
use ops::{Conv2dArgs, Epilogue, Pair, Pool2dArgs};
use proptest::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The multiplicative inverse of `a` (odd) modulo `2^64`: `a * inv(a)` wraps to 1.
const fn inv(a: u64) -> usize {
    let mut x = a; // Newton's iteration doubles the correct low bits each step.
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x as usize
}
const INV3: usize = inv(3);

/// A result is "small" when it is at most this many elements: cheap to compute.
const SMALL: u128 = 1 << 16;

/// Sizes near every wrap-around point, and small ones.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0..4usize,
        1 => Just(1usize << 32),
        1 => Just((1usize << 32) + 1),
        1 => Just(1usize << 62),
        1 => Just(1usize << 63),
        1 => Just(usize::MAX),
        1 => Just(MAX_NUMEL + 1),
        1 => Just(INV3),
        1 => Just(inv(5)),
        1 => Just(inv(7)),
    ]
}

/// A positive parameter (stride, dilation, kernel, groups): usually small.
fn param() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 1..4usize, 1 => Just(0usize), 1 => size()]
}

/// Runs `f`: a panic fails the test; an error must name `op`.
fn attempt<T>(op: &str, args: &dyn std::fmt::Debug, f: impl FnOnce() -> Result<T>) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Err(_) => panic!("{op} panicked on {args:?}"),
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            assert!(e.to_string().starts_with(&format!("{op}: ")), "{op}: the error does not name the op: {e} on {args:?}");
            None
        }
    }
}

/// What a case must do.
#[derive(Debug)]
enum Expect {
    /// Fail with an error naming the op (overflow, or invalid arguments).
    Fail,
    /// Succeed with this output shape.
    Shape(Vec<usize>),
    /// Either is right (an empty result whose other dims are huge, say).
    Either(Vec<usize>),
}

fn numel128(shape: &[usize]) -> u128 {
    shape.iter().map(|&d| d as u128).product()
}

/// Whether a tensor of `shape` may exist: its non-zero dims multiply to at most MAX_NUMEL.
fn fits(shape: &[usize]) -> bool {
    shape.iter().filter(|&&d| d != 0).try_fold(1u128, |a, &d| Some(a * d as u128).filter(|&p| p <= MAX_NUMEL as u128)).is_some()
}

/// An f64 tensor of `shape` that is a view of a single 1.0, or `None` if it cannot exist.
fn ones_view(shape: &[usize]) -> Option<Tensor> {
    fits(shape).then(|| Tensor::ones_dtype(&vec![1; shape.len()], autograd::DType::F64).expand(shape).expect("fits"))
}

/// Checks an outcome against the expectation (and the values with `values`, if given).
fn verify(op: &str, args: &dyn std::fmt::Debug, expect: &Expect, got: Option<Tensor>, values: impl Fn(&Tensor)) {
    match (expect, got) {
        (Expect::Fail, Some(t)) => panic!("{op}: accepted {args:?}, gave {:?}", t.shape()),
        (Expect::Shape(want), None) => panic!("{op}: refused valid small arguments {args:?} (expected {want:?})"),
        (Expect::Shape(want) | Expect::Either(want), Some(t)) => {
            assert_eq!(t.shape(), &want[..], "{op}: wrong shape on {args:?}");
            values(&t);
        }
        _ => {}
    }
}

/// Output length of a window in exact arithmetic, `None` if the window does not fit.
fn window(input: usize, k: usize, s: usize, p: usize, d: usize) -> Option<u128> {
    let (input, k, s, p, d) = (input as u128, k as u128, s as u128, p as u128, d as u128);
    let span = d * (k - 1) + 1;
    let padded = input + 2 * p;
    (padded >= span).then(|| (padded - span) / s + 1)
}

/// Classifies a result shape given in exact arithmetic: overflow fails; small succeeds;
/// empty-but-huge may go either way. A case whose inputs are legal but huge (an expanded
/// view the op would have to copy or sum over) or whose result is, is skipped (`None`).
/// `all_small`: every size and parameter is small, so the op must succeed.
fn classify(out: &[u128], inputs_small: bool, all_small: bool) -> Option<Expect> {
    let shape: Option<Vec<usize>> = out.iter().map(|&d| usize::try_from(d).ok()).collect();
    let Some(shape) = shape.filter(|s| fits(s)) else { return Some(Expect::Fail) };
    let n = numel128(&shape);
    if n == 0 && !all_small {
        return Some(Expect::Either(shape));
    }
    if !inputs_small || n > SMALL {
        return None;
    }
    Some(if all_small { Expect::Shape(shape) } else { Expect::Either(shape) })
}

fn small(v: usize) -> bool {
    v <= 64
}

proptest! {
    #![proptest_config(autograd::testing::config_from_env(512))]

    #[test]
    fn from_vec_and_constructors(shape in prop::collection::vec(size(), 0..=3)) {
        let n = numel128(&shape);
        let data = vec![0.0f32; if n <= 8 { n as usize } else { 3 }];
        let got = attempt("from_vec", &shape, || Tensor::from_vec(data.clone(), &shape));
        let expect = if fits(&shape) && n == data.len() as u128 { Expect::Shape(shape.clone()) } else { Expect::Fail };
        verify("from_vec", &shape, &expect, got, |_| {});
        // The infallible constructors panic on an overflowing shape, with a clear message,
        // and never make a tensor whose shape and storage disagree.
        if !fits(&shape) {
            let p = catch_unwind(|| Tensor::zeros(&shape)).expect_err("zeros must panic on overflow");
            let msg = p.downcast_ref::<String>().cloned().unwrap_or_default();
            prop_assert!(msg.contains("size overflow"), "{msg}");
        } else if n <= SMALL {
            let t = Tensor::zeros(&shape);
            prop_assert_eq!(t.shape(), &shape[..]);
            prop_assert_eq!(t.to_vec::<f32>().len() as u128, n);
        }
    }

    #[test]
    fn expand_reshape_and_broadcast(base in prop::collection::vec(0..3usize, 1..=3), target in prop::collection::vec(size(), 1..=3)) {
        let x = Tensor::ones(&base);
        let args = (&base, &target);
        let got = attempt("expand", &args, || x.expand(&target));
        if let Some(t) = &got {
            prop_assert!(fits(&target));
            prop_assert_eq!(t.shape(), &target[..]);
            // Printing reads only the values it shows.
            let s = t.to_string();
            prop_assert!(s.starts_with("tensor("));
        }
        if let Some(t) = got.filter(|_| numel128(&target) <= SMALL) {
            let t2: Vec<isize> = target.iter().map(|&d| d as isize).collect();
            let reshaped = attempt("reshape", &args, || t.reshape(&t2));
            prop_assert!(reshaped.is_some());
        }
    }

    #[test]
    fn broadcasting(rows in size(), cols in size()) {
        // [rows, 1] + [1, cols]: each operand fits, their broadcast may not.
        let args = (rows, cols);
        let (Some(a), Some(b)) = (ones_view(&[rows, 1]), ones_view(&[1, cols])) else { return Ok(()) };
        let Some(expect) = classify(&[rows as u128, cols as u128], true, small(rows) && small(cols)) else { return Ok(()) };
        let got = attempt("add", &args, || a.add(&b));
        verify("add", &args, &expect, got, |t| assert!(t.to_vec::<f64>().iter().all(|&v| v == 2.0), "1 + 1"));
    }

    #[test]
    fn matmul_and_linear(m in size(), k in size(), n in size(), batch in size()) {
        let args = (m, k, n, batch);
        let (a, b) = (ones_view(&[batch, m, k]), ones_view(&[k, n]));
        let (Some(a), Some(b)) = (a, b) else { return Ok(()) };
        let all_small = [m, k, n, batch].iter().all(|&v| small(v));
        let Some(expect) = classify(&[batch as u128, m as u128, n as u128], all_small, all_small) else { return Ok(()) };
        let got = attempt("matmul", &args, || ops::matmul(&a, &b));
        verify("matmul", &args, &expect, got, |t| assert!(t.to_vec::<f64>().iter().all(|&v| v == k as f64), "matmul of ones"));
        // linear(x [batch, m, k], w [n, k]) = x wᵀ: the same output.
        if let Some(w) = ones_view(&[n, k]) {
            let got = attempt("linear", &args, || ops::linear(&a, &w, None));
            verify("linear", &args, &expect, got, |t| assert!(t.to_vec::<f64>().iter().all(|&v| v == k as f64), "linear of ones"));
        }
    }

    #[test]
    fn convolutions(
        (n, c, h, w) in (0..3usize, 1..3usize, size(), size()),
        (o, kh, kw) in (1..3usize, param(), param()),
        (s, p, d, g) in (param(), size(), param(), prop_oneof![4 => Just(1usize), 1 => param()]),
    ) {
        let a = Conv2dArgs::new().stride(s).padding(p).dilation(d).groups(g);
        let args = ((n, c, h, w), (o, kh, kw), a);
        let cg = if g > 0 && c % g == 0 { c / g } else { 1 };
        let x = ones_view(&[n, c, h, w]);
        let wt = ones_view(&[o, cg, kh, kw]);
        let (Some(x), Some(wt)) = (x, wt) else { return Ok(()) };
        let valid = s > 0 && d > 0 && g > 0 && kh > 0 && kw > 0 && c % g == 0 && o % g == 0;
        let all_small = [h, w, kh, kw, s, p, d, g].iter().all(|&v| small(v));
        let out = match (valid, window(h, kh, s.max(1), p, d), window(w, kw, s.max(1), p, d)) {
            (true, Some(oh), Some(ow)) => classify(&[n as u128, o as u128, oh, ow], [h, w, kh, kw].iter().all(|&v| small(v)), all_small),
            _ => Some(Expect::Fail),
        };
        let Some(expect) = out else { return Ok(()) };
        let y = attempt("conv2d", &args, || ops::conv2d(&x, &wt, None, a));
        verify("conv2d", &args, &expect, y.clone(), |_| {});
        let fused = attempt("conv2d", &args, || ops::conv2d_fused(&x, &wt, None, a, Epilogue::default()));
        verify("conv2d", &args, &expect, fused, |_| {});
        // The gradient ops take the other shape as an argument: the same geometry.
        let dy_shape: Vec<usize> = match &expect { Expect::Shape(s) | Expect::Either(s) => s.clone(), Expect::Fail => vec![n, o, 1, 1] };
        let dy = Tensor::ones_dtype(&[1, 1, 1, 1], autograd::DType::F64).expand(&dy_shape).unwrap();
        let input_grad_expect = match &expect { Expect::Fail => Expect::Fail, Expect::Shape(_) => Expect::Shape(vec![n, c, h, w]), Expect::Either(_) => Expect::Either(vec![n, c, h, w]) };
        if numel128(&[n, c, h, w]) <= SMALL || matches!(input_grad_expect, Expect::Fail) {
            let dx = attempt("conv2d_input_grad", &args, || ops::conv2d_input_grad(&dy, &wt, &[n, c, h, w], a));
            verify("conv2d_input_grad", &args, &input_grad_expect, dx, |_| {});
        }
        let weight_grad_expect = match &expect { Expect::Fail => Expect::Fail, Expect::Shape(_) => Expect::Shape(vec![o, cg, kh, kw]), Expect::Either(_) => Expect::Either(vec![o, cg, kh, kw]) };
        if numel128(&[o, cg, kh, kw]) <= SMALL || matches!(weight_grad_expect, Expect::Fail) {
            let dw = attempt("conv2d_weight_grad", &args, || ops::conv2d_weight_grad(&x, &dy, &[o, cg, kh, kw], a));
            verify("conv2d_weight_grad", &args, &weight_grad_expect, dw, |_| {});
        }
    }

    #[test]
    fn pooling((n, c, h, w) in (0..3usize, 1..3usize, size(), size()), (k, s, p) in (param(), prop_oneof![1 => Just(None), 3 => param().prop_map(Some)], size())) {
        let a = Pool2dArgs { kernel: Pair(k, k), stride: s.map(|s| Pair(s, s)), padding: Pair(p, p) };
        let args = ((n, c, h, w), a);
        let Some(x) = ones_view(&[n, c, h, w]) else { return Ok(()) };
        let stride = s.unwrap_or(k);
        let valid = k > 0 && stride > 0 && h > 0 && w > 0 && p <= k / 2;
        let all_small = [h, w, k, stride, p].iter().all(|&v| small(v));
        let out = match (valid, window(h, k, stride.max(1), p, 1), window(w, k, stride.max(1), p, 1)) {
            (true, Some(oh), Some(ow)) => classify(&[n as u128, c as u128, oh, ow], small(h) && small(w), all_small),
            _ => Some(Expect::Fail),
        };
        let Some(expect) = out else { return Ok(()) };
        let got = attempt("max_pool2d", &args, || ops::max_pool2d(&x, a));
        verify("max_pool2d", &args, &expect, got, |t| assert!(t.to_vec::<f64>().iter().all(|&v| v == 1.0), "max of ones"));
        let got = attempt("avg_pool2d", &args, || ops::avg_pool2d(&x, a));
        verify("avg_pool2d", &args, &expect, got, |_| {});
        if let Expect::Shape(y) = &expect {
            if numel128(&[n, c, h, w]) <= SMALL {
                let dy = Tensor::ones_dtype(y, autograd::DType::F64);
                let dx = attempt("avg_pool2d_backward", &args, || ops::avg_pool2d_backward(&dy, &[n, c, h, w], a));
                verify("avg_pool2d_backward", &args, &Expect::Shape(vec![n, c, h, w]), dx, |_| {});
            }
        }
    }

    #[test]
    fn index_ops(outer in size(), r in 1..4usize, k in 0..3usize, inner in size()) {
        // scatter_add into a (broadcast) tensor of any size: its shape must be checked
        // before anything is sized from it.
        let args = (outer, r, k, inner);
        let index_shape = [outer, k, inner];
        let Some(base) = ones_view(&[outer, r, inner]) else { return Ok(()) };
        let Some(src) = ones_view(&index_shape) else { return Ok(()) };
        let Some(expect) = classify(&[outer as u128, r as u128, inner as u128], true, small(outer) && small(inner)) else { return Ok(()) };
        let index_len = numel128(&index_shape);
        if index_len > SMALL {
            return Ok(());
        }
        let index = Tensor::zeros_dtype(&index_shape, autograd::DType::I64);
        let got = attempt("scatter_add", &args, || base.scatter_add(1, &index, &src));
        verify("scatter_add", &args, &expect, got, |_| {});
        let got = attempt("gather", &args, || base.gather(1, &index));
        verify("gather", &args, &Expect::Shape(index_shape.to_vec()), got, |_| {});
    }
    #[test]
    fn eye_linspace_and_cumsum(rows in size(), cols in size()) {
        let args = (rows, cols);
        let all_small = small(rows) && small(cols);
        // eye(rows, cols): its element count is the product.
        if let Some(expect) = classify(&[rows as u128, cols as u128], true, all_small) {
            let got = attempt("eye", &args, || Tensor::eye_dtype(rows, cols, autograd::DType::F64));
            verify("eye", &args, &expect, got, |t| {
                let v = t.to_vec::<f64>();
                assert!(v.iter().enumerate().all(|(k, &e)| e == if k / cols == k % cols { 1.0 } else { 0.0 }), "eye values");
            });
        }
        // linspace(.., steps = rows): one dim.
        if let Some(expect) = classify(&[rows as u128], true, small(rows)) {
            let got = attempt("linspace", &args, || Tensor::linspace_dtype(0.0, 1.0, rows, autograd::DType::F64));
            verify("linspace", &args, &expect, got, |t| {
                let v = t.to_vec::<f64>();
                assert!(v.first().is_none_or(|&a| a == 0.0) && (rows < 2 || v[rows - 1] == 1.0), "linspace ends");
            });
        }
        // cumsum of an expanded view of ones: its shape is the input's (which exists), and
        // along dim 1 the values count up.
        let Some(x) = ones_view(&[rows, cols]) else { return Ok(()) };
        let Some(expect) = classify(&[rows as u128, cols as u128], true, all_small) else { return Ok(()) };
        let got = attempt("cumsum", &args, || x.cumsum(1));
        verify("cumsum", &args, &expect, got, |t| {
            assert!(t.to_vec::<f64>().iter().enumerate().all(|(i, &v)| v == (i % cols + 1) as f64), "cumsum of ones");
        });
    }
}

#[test]
fn the_reported_cases_are_errors() {
    let big = 1usize << 32;
    // matmul of [2^32, 1] by [1, 2^32]: 2^64 outputs.
    let a = Tensor::ones(&[1, 1]).expand(&[big, 1]).unwrap();
    let b = Tensor::ones(&[1, 1]).expand(&[1, big]).unwrap();
    assert!(matches!(ops::matmul(&a, &b), Err(Error::SizeOverflow { op: "matmul", .. })));
    // A dilation whose product with k - 1 = 3 wraps to 1.
    let x = Tensor::ones(&[1, 1, 5, 5]);
    let w = Tensor::ones(&[1, 1, 4, 4]);
    let dilated = Conv2dArgs::new().dilation(INV3);
    assert!(matches!(ops::conv2d(&x, &w, None, dilated), Err(Error::SizeOverflow { op: "conv2d", .. })));
    let dy = Tensor::ones(&[1, 1, 2, 2]);
    assert!(ops::conv2d_input_grad(&dy, &w, &[1, 1, 5, 5], dilated).unwrap_err().to_string().starts_with("conv2d_input_grad: "));
    assert!(ops::conv2d_weight_grad(&x, &dy, &[1, 1, 4, 4], dilated).unwrap_err().to_string().starts_with("conv2d_weight_grad: "));
    // Padding 2^63: 2 p wrapped to 0.
    let padded = Conv2dArgs::new().padding(1usize << 63);
    assert!(matches!(ops::conv2d(&x, &w, None, padded), Err(Error::SizeOverflow { .. })));
    let pool = Pool2dArgs::new(2).padding(1usize << 63);
    assert!(ops::max_pool2d(&x, pool).unwrap_err().to_string().starts_with("max_pool2d: "));
    // zeros(&[3, INV3]): 3 * INV3 wraps to 1.
    assert!(catch_unwind(|| Tensor::zeros(&[3, INV3])).is_err());
    assert!(matches!(Tensor::from_vec(vec![0.0f32], &[3, INV3]), Err(Error::SizeOverflow { op: "from_vec", .. })));
    // Broadcasting to [2^63 + 1, 2].
    let row = Tensor::ones(&[1, 2]);
    assert!(matches!(row.expand(&[(1 << 63) + 1, 2]), Err(Error::SizeOverflow { op: "expand", .. })));
    // eye and linspace sized past memory: errors naming them.
    assert!(matches!(Tensor::eye(3, INV3), Err(Error::SizeOverflow { op: "eye", .. })));
    assert!(matches!(Tensor::linspace(0.0, 1.0, MAX_NUMEL + 1), Err(Error::SizeOverflow { op: "linspace", .. })));
    // arange to infinity: an error, not a panic.
    assert!(Tensor::arange(0.0, f64::INFINITY, 1.0).is_err());
    // Printing a huge expanded view shows its edges without copying it.
    let huge = Tensor::ones(&[1, 1]).expand(&[1 << 29, 1 << 30]).unwrap();
    let s = huge.to_string();
    assert!(s.contains("...") && s.len() < 1000, "{s}");
}

// ----- issue 26: transposed convolution and interpolation -------------------------------

proptest! {
    #![proptest_config(autograd::testing::config_from_env(512))]

    /// `(h - 1) s - 2 p + d (k - 1) + output_padding + 1` per side, in exact arithmetic.
    #[test]
    fn conv_transpose2d_sizes(
        (n, c, h, w) in (0..3usize, 0..3usize, size(), size()),
        (cout, kh, kw) in (0..3usize, param(), param()),
        (s, p, d) in (param(), size(), param()),
        op in prop_oneof![3 => Just(0usize), 1 => 1..3usize, 1 => size()],
    ) {
        let a = ops::ConvTranspose2dArgs::new().stride(s).padding(p).dilation(d).output_padding(op);
        let args = ((n, c, h, w), (cout, kh, kw), a);
        let (Some(x), Some(wt)) = (ones_view(&[n, c, h, w]), ones_view(&[c, cout, kh, kw])) else { return Ok(()) };
        let valid = s > 0 && d > 0 && kh > 0 && kw > 0 && (op < s || op < d) && h > 0 && w > 0;
        let side = |i: usize, k: usize| -> Option<i128> {
            let v = (i as i128 - 1) * s as i128 - 2 * p as i128 + d as i128 * (k as i128 - 1) + op as i128 + 1;
            (v >= 1).then_some(v)
        };
        let all_small = [h, w, kh, kw, s, p, d, op].iter().all(|&v| small(v));
        let out = match (valid, side(h, kh), side(w, kw)) {
            (true, Some(oh), Some(ow)) => classify(&[n as u128, cout as u128, oh as u128, ow as u128], numel128(&[n, c, h, w]) <= SMALL, all_small),
            _ => Some(Expect::Fail),
        };
        let Some(expect) = out else { return Ok(()) };
        let got = attempt("conv_transpose2d", &args, || ops::conv_transpose2d(&x, &wt, None, a));
        verify("conv_transpose2d", &args, &expect, got, |_| {});
    }

    /// Output sizes given or from scale factors up to 1e300 and infinity.
    #[test]
    fn interpolate_sizes(
        (n, c, h, w) in (0..3usize, 1..3usize, size(), size()),
        out in (size(), size()),
        scale in prop_oneof![2 => Just(None), 1 => prop::sample::select(vec![0.5, 2.0, 3.7, 1e10, 1e300, f64::INFINITY]).prop_map(Some)],
        bilinear in any::<bool>(),
    ) {
        let mode = if bilinear { ops::InterpolateMode::Bilinear } else { ops::InterpolateMode::Nearest };
        let a = match scale {
            Some(f) => ops::InterpolateArgs::scale_factor(f, f).mode(mode),
            None => ops::InterpolateArgs::size(out).mode(mode),
        };
        let args = ((n, c, h, w), a);
        let Some(x) = ones_view(&[n, c, h, w]) else { return Ok(()) };
        let sized = |i: usize, f: f64| -> u128 {
            let v = i as f64 * f;
            if v >= u128::MAX as f64 { u128::MAX } else { v as u128 }
        };
        let (oh, ow) = match scale { Some(f) => (sized(h, f), sized(w, f)), None => (out.0 as u128, out.1 as u128) };
        let all_small = [h, w].iter().all(|&v| small(v)) && oh <= 64 && ow <= 64;
        let valid = n > 0 && h > 0 && w > 0 && oh > 0 && ow > 0;
        let expect = if valid { classify(&[n as u128, c as u128, oh, ow], numel128(&[n, c, h, w]) <= SMALL, all_small) } else { Some(Expect::Fail) };
        let Some(expect) = expect else { return Ok(()) };
        let got = attempt("interpolate", &args, || ops::interpolate(&x, a));
        let nearest = !bilinear;
        verify("interpolate", &args, &expect, got, |t| assert!(!nearest || t.to_vec::<f64>().iter().all(|&v| v == 1.0), "nearest of ones"));
    }
}
