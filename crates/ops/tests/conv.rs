//! conv2d and corr2d: values against a direct loop and the book, errors, gradients by
//! finite differences (first and second order) over random geometry, determinism.

use autograd::testing::{assert_gradcheck, assert_gradgradcheck};
use autograd::Activation;
use autograd::{rng, DType, Tensor};
use ops::{
    avg_pool2d, conv2d, conv2d_algo_applies, conv2d_algo_for, conv2d_fused, conv2d_input_grad, conv2d_weight_grad, corr2d,
    last_conv2d_algo, max_pool2d, Conv2dAlgo, Conv2dArgs, Conv2dMap, Epilogue, Pool2dArgs, Pool2x2,
};
use proptest::prelude::*;

/// The output shape `[N, O, OH, OW]`.
fn out_shape(xs: &[usize], ws: &[usize], a: Conv2dArgs) -> [usize; 4] {
    let oh = (xs[2] + 2 * a.padding.0 - a.dilation.0 * (ws[2] - 1) - 1) / a.stride.0 + 1;
    let ow = (xs[3] + 2 * a.padding.1 - a.dilation.1 * (ws[3] - 1) - 1) / a.stride.1 + 1;
    [xs[0], ws[0], oh, ow]
}

/// Calls `f(y index, x index, w index)` for every product of the direct definition
/// `y[n,o,i,j] = sum_{c,p,q} x[n, g*cg + c, i*sh - ph + p*dh, j*sw - pw + q*dw] w[o,c,p,q]`.
fn for_each_product(xs: &[usize], ws: &[usize], a: Conv2dArgs, mut f: impl FnMut(usize, usize, usize)) {
    let (c, h, wd) = (xs[1], xs[2], xs[3]);
    let (cg, kh, kw) = (ws[1], ws[2], ws[3]);
    let [n, o, oh, ow] = out_shape(xs, ws, a);
    let og = o / a.groups;
    for ni in 0..n {
        for oc in 0..o {
            let grp = oc / og;
            for i in 0..oh {
                for j in 0..ow {
                    for ci in 0..cg {
                        let ch = grp * cg + ci;
                        assert!(ch < c);
                        for p in 0..kh {
                            for q in 0..kw {
                                let iy = (i * a.stride.0 + p * a.dilation.0) as isize - a.padding.0 as isize;
                                let ix = (j * a.stride.1 + q * a.dilation.1) as isize - a.padding.1 as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    f(
                                        ((ni * o + oc) * oh + i) * ow + j,
                                        ((ni * c + ch) * h + iy as usize) * wd + ix as usize,
                                        ((oc * cg + ci) * kh + p) * kw + q,
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The forward pass by the definition, in f64.
fn reference(x: &Tensor, w: &Tensor, b: Option<&Tensor>, a: Conv2dArgs) -> Vec<f64> {
    let (xv, wv) = (x.to_vec::<f64>(), w.to_vec::<f64>());
    let [n, o, oh, ow] = out_shape(x.shape(), w.shape(), a);
    let mut y = vec![0.0; n * o * oh * ow];
    if let Some(b) = b {
        let bv = b.to_vec::<f64>();
        y.iter_mut().enumerate().for_each(|(i, y)| *y = bv[i / (oh * ow) % o]);
    }
    for_each_product(x.shape(), w.shape(), a, |yi, xi, wi| y[yi] += xv[xi] * wv[wi]);
    y
}

/// Both adjoints by the definition, in f64: `(dx, dw)` for output gradient `dy`.
fn reference_grads(x: &Tensor, w: &Tensor, dy: &Tensor, a: Conv2dArgs) -> (Vec<f64>, Vec<f64>) {
    let (xv, wv, dyv) = (x.to_vec::<f64>(), w.to_vec::<f64>(), dy.to_vec::<f64>());
    let (mut dx, mut dw) = (vec![0.0; xv.len()], vec![0.0; wv.len()]);
    for_each_product(x.shape(), w.shape(), a, |yi, xi, wi| {
        dx[xi] += dyv[yi] * wv[wi];
        dw[wi] += dyv[yi] * xv[xi];
    });
    (dx, dw)
}

/// Uniform f64 input, weight, bias and output gradient for one geometry, from `seed`.
fn f64_case(xs: &[usize], ws: &[usize], a: Conv2dArgs, seed: u64) -> [Tensor; 4] {
    let mut r = rng(seed);
    let mut draw = |shape: &[usize]| Tensor::uniform_dtype(shape, -1.0, 1.0, DType::F64, &mut r);
    [draw(xs), draw(ws), draw(&[ws[0]]), draw(&out_shape(xs, ws, a))]
}

fn max_error(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, autograd::tensor::nan_max)
}

#[derive(Debug, Clone)]
struct Case {
    n: usize,
    cg: usize,
    og: usize,
    groups: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    args: Conv2dArgs,
    bias: bool,
}

/// Random geometry, always valid: the padded input is made at least as large as the
/// dilated kernel. Rectangular kernels, ph != pw, strides larger than the kernel and
/// strides that don't divide the input all come up.
fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..3, 1usize..3, 1usize..3, 1usize..3, any::<bool>()),
        (1usize..4, 1usize..4, 1usize..3, 1usize..3, 0usize..3, 0usize..3),
        (1usize..4, 1usize..4, 0usize..3, 0usize..3),
    )
        .prop_map(|((n, cg, og, groups, bias), (kh, kw, dh, dw, ph, pw), (sh, sw, eh, ew))| {
            let (ph, pw) = (ph.min(kh), pw.min(kw));
            let span_h = dh * (kh - 1) + 1;
            let span_w = dw * (kw - 1) + 1;
            // input size so that the padded input is at least the span, plus a few extra
            let h = (span_h + eh).saturating_sub(2 * ph).max(1);
            let w = (span_w + ew).saturating_sub(2 * pw).max(1);
            Case {
                n,
                cg,
                og,
                groups,
                h,
                w,
                kh,
                kw,
                args: Conv2dArgs::new().stride((sh, sw)).padding((ph, pw)).dilation((dh, dw)).groups(groups),
                bias,
            }
        })
}

/// The operands of a case. Fresh kernel buffers are NaN from here on, in this whole test
/// binary: a kernel that reads a cell it never wrote (a spare column, a padding row) fails
/// the comparison, where a reused buffer would hold zeros or the same values from before.
fn tensors(c: &Case, seed: u64) -> (Tensor, Tensor, Tensor) {
    autograd::buffers::poison_for_overwrite();
    let mut r = rng(seed);
    let x = Tensor::uniform_dtype(&[c.n, c.cg * c.groups, c.h, c.w], -1.0, 1.0, DType::F64, &mut r);
    let w = Tensor::uniform_dtype(&[c.og * c.groups, c.cg, c.kh, c.kw], -1.0, 1.0, DType::F64, &mut r);
    let b = Tensor::uniform_dtype(&[c.og * c.groups], -1.0, 1.0, DType::F64, &mut r);
    (x, w, b)
}

#[test]
fn book_corr2d() {
    let x = Tensor::arange(0.0, 9.0, 1.0).unwrap().reshape(&[3, 3]).unwrap();
    let k = Tensor::from_vec(vec![0.0f32, 1.0, 2.0, 3.0], &[2, 2]).unwrap();
    let y = corr2d(&x, &k).unwrap();
    assert_eq!(y.to_vec::<f32>(), vec![19.0, 25.0, 37.0, 43.0]);
    assert_eq!(format!("{y}"), "tensor([[19., 25.],\n        [37., 43.]])");
}

#[test]
fn errors_name_op_shapes_and_parameters() {
    let x = Tensor::zeros(&[8, 3, 28, 28]);
    let w = Tensor::zeros(&[16, 6, 5, 5]);
    let e = conv2d(&x, &w, None, Conv2dArgs::new()).unwrap_err().to_string();
    assert_eq!(e, "conv2d: input has 3 channels but weight expects 6 (6 per group x 1 groups; input [8, 3, 28, 28], weight [16, 6, 5, 5])");
    let w = Tensor::zeros(&[4, 3, 5, 5]);
    let small = Tensor::zeros(&[1, 3, 2, 2]);
    let e = conv2d(&small, &w, None, Conv2dArgs::new().padding(1)).unwrap_err().to_string();
    assert!(e.starts_with("conv2d: kernel 5x5 (dilation (1, 1)) is larger than the padded input 4x4"), "{e}");
    let e = conv2d(&x, &w, None, Conv2dArgs::new().stride(0)).unwrap_err().to_string();
    assert!(e.starts_with("conv2d: stride, dilation and groups must be positive"), "{e}");
    let e = conv2d(&x, &w, None, Conv2dArgs::new().groups(2)).unwrap_err().to_string();
    assert!(e.contains("input has 3 channels but weight expects 6"), "{e}");
    let e = conv2d(&x, &w, Some(&Tensor::zeros(&[5])), Conv2dArgs::new()).unwrap_err().to_string();
    assert!(e.starts_with("conv2d: bias must have shape [4], got [5]"), "{e}");
    let e = corr2d(&Tensor::zeros(&[2, 2]), &Tensor::zeros(&[3, 1])).unwrap_err().to_string();
    assert_eq!(e, "corr2d: kernel must be non-empty and no larger than the input ([2, 2] and [3, 1])");
}

#[test]
fn f32_maps_match_the_definition_on_lenet_shapes() {
    autograd::buffers::poison_for_overwrite();
    let mut r = rng(11);
    for (x_shape, w_shape, pad) in [([3, 1, 28, 28], [6, 1, 5, 5], 2), ([3, 6, 14, 14], [16, 6, 5, 5], 0)] {
        let x = Tensor::uniform(&x_shape, -1.0, 1.0, &mut r);
        let w = Tensor::uniform(&w_shape, -1.0, 1.0, &mut r);
        let b = Tensor::uniform(&[w_shape[0]], -1.0, 1.0, &mut r);
        let a = Conv2dArgs::new().padding(pad);
        let y = conv2d(&x, &w, Some(&b), a).unwrap();
        assert!(max_error(&y.to_vec::<f64>(), &reference(&x, &w, Some(&b), a)) < 1e-4);
        let dy = Tensor::uniform(y.shape(), -1.0, 1.0, &mut r);
        let (dx, dw) = reference_grads(&x, &w, &dy, a);
        assert!(max_error(&conv2d_input_grad(&dy, &w, x.shape(), a).unwrap().to_vec::<f64>(), &dx) < 1e-4);
        assert!(max_error(&conv2d_weight_grad(&x, &dy, w.shape(), a).unwrap().to_vec::<f64>(), &dw) < 1e-3);
    }
}

/// Stride-1 geometry with more channels and larger planes than [`case`] (too slow to
/// gradcheck): every register-tile shape of the direct kernels, their narrow last tiles,
/// padded channel blocks, and strides that take the unfolding path.
fn wide_case() -> impl Strategy<Value = Case> {
    (
        (1usize..4, 1usize..8, 1usize..18, 1usize..3, any::<bool>()),
        (1usize..6, 1usize..6, 1usize..3, 1usize..3, 0usize..4, 0usize..4),
        (prop_oneof![4 => Just(1usize), 1 => 2usize..4], 0usize..24, 0usize..24),
    )
        .prop_map(|((n, cg, og, groups, bias), (kh, kw, dh, dw, ph, pw), (stride, eh, ew))| {
            let (ph, pw) = (ph.min(kh), pw.min(kw));
            let h = (dh * (kh - 1) + 1 + eh).saturating_sub(2 * ph).max(1);
            let w = (dw * (kw - 1) + 1 + ew).saturating_sub(2 * pw).max(1);
            let args = Conv2dArgs::new().stride(stride).padding((ph, pw)).dilation((dh, dw)).groups(groups);
            Case { n, cg, og, groups, h, w, kh, kw, args, bias }
        })
}
#[test]
fn gradients_are_bitwise_identical_at_one_and_two_threads() {
    let mut r = rng(5);
    let x = Tensor::uniform(&[37, 6, 14, 14], -1.0, 1.0, &mut r).requires_grad_();
    let w = Tensor::uniform(&[16, 6, 5, 5], -1.0, 1.0, &mut r).requires_grad_();
    let b = Tensor::uniform(&[16], -1.0, 1.0, &mut r).requires_grad_();
    let seed = Tensor::uniform(&[37, 16, 10, 10], -1.0, 1.0, &mut r);
    let run = |threads| {
        autograd::set_num_threads(threads).unwrap();
        x.zero_grad();
        w.zero_grad();
        b.zero_grad();
        let y = conv2d(&x, &w, Some(&b), Conv2dArgs::new()).unwrap();
        y.backward_with(Some(&seed), Default::default()).unwrap();
        [y, x.grad().unwrap(), w.grad().unwrap(), b.grad().unwrap()]
            .map(|t| t.to_vec::<f32>().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
    };
    let one = run(1);
    let two = run(2);
    assert!(one == two);
}

proptest! {
    #![proptest_config(autograd::testing::config_from_env(48))]

    #[test]
    fn forward_matches_the_definition(c in case(), seed in any::<u64>()) {
        let (x, w, b) = tensors(&c, seed);
        let bias = c.bias.then_some(&b);
        let got = conv2d(&x, &w, bias, c.args).unwrap().to_vec::<f64>();
        prop_assert!(max_error(&got, &reference(&x, &w, bias, c.args)) < 1e-12);
    }

    #[test]
    fn all_three_maps_match_the_definition(c in wide_case(), seed in any::<u64>()) {
        let (x, w, b) = tensors(&c, seed);
        let bias = c.bias.then_some(&b);
        let y = conv2d(&x, &w, bias, c.args).unwrap();
        prop_assert!(max_error(&y.to_vec::<f64>(), &reference(&x, &w, bias, c.args)) < 1e-11);
        let dy = Tensor::uniform_dtype(y.shape(), -1.0, 1.0, DType::F64, &mut rng(seed ^ 1));
        let (dx, dw) = reference_grads(&x, &w, &dy, c.args);
        prop_assert!(max_error(&conv2d_input_grad(&dy, &w, x.shape(), c.args).unwrap().to_vec::<f64>(), &dx) < 1e-11);
        prop_assert!(max_error(&conv2d_weight_grad(&x, &dy, w.shape(), c.args).unwrap().to_vec::<f64>(), &dw) < 1e-10);
        // The same in f32, through the f32 kernels.
        let (x32, w32, dy32) = (x.to_dtype(DType::F32), w.to_dtype(DType::F32), dy.to_dtype(DType::F32));
        let y32 = conv2d(&x32, &w32, bias.map(|b| b.to_dtype(DType::F32)).as_ref(), c.args).unwrap();
        prop_assert!(max_error(&y32.to_vec::<f64>(), &y.to_vec::<f64>()) < 1e-4);
        prop_assert!(max_error(&conv2d_input_grad(&dy32, &w32, x.shape(), c.args).unwrap().to_vec::<f64>(), &dx) < 1e-4);
        prop_assert!(max_error(&conv2d_weight_grad(&x32, &dy32, w.shape(), c.args).unwrap().to_vec::<f64>(), &dw) < 1e-3);
    }

    #[test]
    fn fused_epilogue_is_bitwise_the_ops_in_turn(c in wide_case(), seed in any::<u64>(), act in 0usize..4, pool in 0usize..3, f32 in any::<bool>()) {
        let act = [Some(Activation::Sigmoid), Some(Activation::Relu), Some(Activation::Tanh), None][act];
        let pool = [None, Some(Pool2x2::Avg), Some(Pool2x2::Max)][pool];
        let epilogue = Epilogue { act, pool };
        let dtype = if f32 { DType::F32 } else { DType::F64 };
        let (x, w, b) = tensors(&c, seed);
        let (x, w, b) = (x.to_dtype(dtype).requires_grad_(), w.to_dtype(dtype).requires_grad_(), b.to_dtype(dtype).requires_grad_());
        let run = |fused: bool| -> Option<_> {
            let bias = c.bias.then_some(&b);
            let y = if fused {
                conv2d_fused(&x, &w, bias, c.args, epilogue).ok()?
            } else {
                let z = conv2d(&x, &w, bias, c.args).unwrap();
                let y = act.map_or(z.clone(), |a| a.apply(&z));
                match pool {
                    Some(Pool2x2::Avg) => avg_pool2d(&y, Pool2dArgs::new(2)).ok()?,
                    Some(Pool2x2::Max) => max_pool2d(&y, Pool2dArgs::new(2)).ok()?,
                    None => y,
                }
            };
            let seed = Tensor::uniform_dtype(y.shape(), -1.0, 1.0, dtype, &mut rng(seed ^ 2));
            [&x, &w, &b].iter().for_each(|t| t.zero_grad());
            y.backward_with(Some(&seed), Default::default()).unwrap();
            let grads = [&x, &w, &b].map(|t| t.grad().map(|g| g.to_vec::<f64>()));
            Some((y.to_vec::<f64>(), grads))
        };
        let (fused, plain) = (run(true), run(false));
        // Too small to pool: both refuse.
        prop_assert_eq!(fused.is_none(), plain.is_none());
        if let (Some(fused), Some(plain)) = (fused, plain) {
            prop_assert!(fused.0.iter().zip(&plain.0).all(|(a, b)| a.to_bits() == b.to_bits()));
            prop_assert_eq!(fused.1, plain.1);
        }
    }

    #[test]
    fn gradcheck_conv2d_fused(c in case(), seed in any::<u64>(), tanh in any::<bool>(), pool in 0usize..3) {
        let act = if tanh { Activation::Tanh } else { Activation::Sigmoid };
        // Random inputs: ties in a max-pooling window (where it is not differentiable) have
        // probability zero.
        let pool = [None, Some(Pool2x2::Avg), Some(Pool2x2::Max)][pool];
        let epilogue = Epilogue { act: Some(act), pool };
        let (x, w, b) = tensors(&c, seed);
        let a = c.args;
        prop_assume!(conv2d_fused(&x, &w, None, a, epilogue).is_ok());
        assert_gradcheck(|v| conv2d_fused(&v[0], &v[1], Some(&v[2]), a, epilogue), &[x.clone().requires_grad_(), w.clone().requires_grad_(), b.requires_grad_()]);
        assert_gradgradcheck(|v| conv2d_fused(&v[0], &v[1], None, a, epilogue), &[x.requires_grad_(), w.requires_grad_()]);
    }

    #[test]
    fn gradcheck_conv2d(c in case(), seed in any::<u64>()) {
        let (x, w, b) = tensors(&c, seed);
        let a = c.args;
        if c.bias {
            assert_gradcheck(|v| conv2d(&v[0], &v[1], Some(&v[2]), a), &[x.requires_grad_(), w.requires_grad_(), b.requires_grad_()]);
        } else {
            assert_gradcheck(|v| conv2d(&v[0], &v[1], None, a), &[x.requires_grad_(), w.requires_grad_()]);
        }
    }

    #[test]
    fn gradgradcheck_conv2d(c in case(), seed in any::<u64>()) {
        let (x, w, _) = tensors(&c, seed);
        let a = c.args;
        assert_gradgradcheck(|v| conv2d(&v[0], &v[1], None, a), &[x.requires_grad_(), w.requires_grad_()]);
    }

    #[test]
    fn gradcheck_corr2d(h in 1usize..5, w in 1usize..5, kh in 1usize..3, kw in 1usize..3, seed in any::<u64>()) {
        let (h, w) = (h.max(kh), w.max(kw));
        let mut r = rng(seed);
        let x = Tensor::uniform_dtype(&[h, w], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        let k = Tensor::uniform_dtype(&[kh, kw], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        assert_gradcheck(|v| corr2d(&v[0], &v[1]), &[x.clone(), k.clone()]);
        assert_gradgradcheck(|v| corr2d(&v[0], &v[1]), &[x, k]);
    }
}

/// The edge cases where peers shipped gradient bugs, always run.
#[test]
fn gradcheck_named_edge_cases() {
    let cases = [
        // (x shape, w shape, args)
        ([2, 3, 4, 4], [2, 3, 1, 1], Conv2dArgs::new()),            // 1x1 kernel
        ([1, 2, 3, 4], [2, 2, 5, 6], Conv2dArgs::new().padding(1)), // kernel = padded input
        ([1, 1, 7, 7], [1, 1, 2, 2], Conv2dArgs::new().stride(3)),  // stride > kernel
        ([1, 1, 7, 6], [2, 1, 3, 3], Conv2dArgs::new().stride(2)),  // stride doesn't divide
        ([1, 2, 5, 7], [2, 2, 2, 3], Conv2dArgs::new().stride((2, 1)).padding((1, 2))), // rectangular, ph != pw
        ([2, 4, 5, 5], [4, 2, 3, 3], Conv2dArgs::new().groups(2).dilation(2).padding(1)), // groups and dilation
        ([1, 2, 5, 5], [4, 1, 1, 1], Conv2dArgs::new().groups(2).stride(2)), // 1x1 strided, grouped
    ];
    for (i, (xs, ws, a)) in cases.into_iter().enumerate() {
        let mut r = rng(i as u64);
        let x = Tensor::uniform_dtype(&xs, -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        let w = Tensor::uniform_dtype(&ws, -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        let b = Tensor::uniform_dtype(&[ws[0]], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        assert_gradcheck(|v| conv2d(&v[0], &v[1], Some(&v[2]), a), &[x.clone(), w.clone(), b]);
        assert_gradgradcheck(|v| conv2d(&v[0], &v[1], None, a), &[x, w]);
    }
}

/// Geometries every algorithm is run on: stride 1 with padding (direct, unfold), 1x1 at
/// stride 1 without padding (all three), strided (direct over the phase planes, unfold),
/// grouped and dilated.
fn algo_cases() -> Vec<([usize; 4], [usize; 4], Conv2dArgs)> {
    vec![
        ([2, 3, 6, 5], [4, 3, 3, 3], Conv2dArgs::new().padding(1)),
        ([2, 3, 5, 6], [4, 3, 1, 1], Conv2dArgs::new()),
        ([3, 4, 4, 4], [6, 2, 1, 1], Conv2dArgs::new().groups(2)),
        ([2, 2, 7, 6], [3, 2, 3, 2], Conv2dArgs::new().stride(2).padding((1, 0))),
        ([2, 4, 6, 6], [4, 2, 2, 3], Conv2dArgs::new().groups(2).dilation(2).padding(1)),
        // Small maps where most taps read padding (the taps kernel's pairs differ per
        // output position), strided and dilated too.
        ([3, 5, 2, 2], [4, 5, 3, 3], Conv2dArgs::new().padding(1)),
        ([2, 3, 4, 3], [5, 3, 3, 3], Conv2dArgs::new().stride(2).padding(1)),
        ([2, 3, 2, 3], [2, 3, 3, 2], Conv2dArgs::new().dilation(2).padding((2, 1))),
        // Column strides 2 and 3 with dilated columns: every column phase of the unfolding.
        ([2, 2, 9, 11], [3, 2, 3, 3], Conv2dArgs::new().stride((2, 3)).dilation((1, 2)).padding(1)),
        ([1, 1, 12, 12], [4, 1, 7, 7], Conv2dArgs::new().stride(2).padding(3)),
        // Whole vectors of output channels (in f64, 8 lanes): the direct kernels vectorise
        // over them, 2 and 4 vectors at a time (ResNet's stem takes 4, at stride 2).
        ([2, 3, 9, 9], [16, 3, 3, 3], Conv2dArgs::new().stride(2).padding(1)),
        ([2, 1, 9, 8], [32, 1, 3, 3], Conv2dArgs::new().stride(2).padding(1)),
        ([2, 2, 7, 7], [32, 2, 3, 3], Conv2dArgs::new().stride((1, 3)).padding(1)),
    ]
}

/// Whether `algo` runs `xs` by `ws` here; says so on stderr when it does not, so a
/// machine without AVX-512 shows what it skipped.
fn runs_here(algo: Conv2dAlgo, xs: &[usize], ws: &[usize], a: Conv2dArgs) -> bool {
    let ok = conv2d_algo_applies(algo, xs, ws, a).unwrap();
    if !ok {
        eprintln!("skipping {} for input {xs:?}, weight {ws:?}, {a:?}: it does not apply here", algo.name());
    }
    ok
}

#[test]
fn the_selector_keeps_lenet_on_the_direct_kernels_and_1x1_on_gemm() {
    let lenet = [([256, 1, 28, 28], [6, 1, 5, 5], 2), ([256, 6, 14, 14], [16, 6, 5, 5], 0)];
    for map in [Conv2dMap::Forward, Conv2dMap::InputGrad, Conv2dMap::WeightGrad] {
        for (xs, ws, pad) in lenet {
            let algo = conv2d_algo_for(map, &xs, &ws, Conv2dArgs::new().padding(pad)).unwrap();
            if conv2d_algo_applies(Conv2dAlgo::Direct, &xs, &ws, Conv2dArgs::new()).unwrap() {
                assert_eq!(algo, Conv2dAlgo::Direct, "{map:?} {xs:?}");
            } else {
                eprintln!("no AVX-512: LeNet's {xs:?} takes {}", algo.name());
                assert_eq!(algo, Conv2dAlgo::Unfold);
            }
        }
        let one = conv2d_algo_for(map, &[8, 64, 14, 14], &[128, 64, 1, 1], Conv2dArgs::new()).unwrap();
        assert_eq!(one, Conv2dAlgo::Gemm1x1);
        let strided = conv2d_algo_for(map, &[8, 64, 14, 14], &[128, 64, 3, 3], Conv2dArgs::new().stride(2)).unwrap();
        assert_eq!(strided, Conv2dAlgo::Unfold);
        // ResNet's stem (7x7, stride 2, one input channel) runs direct over phase planes;
        // a strided 1x1 over 64 channels, and 64 outputs at 7x7, unfold.
        let direct = conv2d_algo_applies(Conv2dAlgo::Direct, &[256, 1, 28, 28], &[64, 1, 7, 7], Conv2dArgs::new()).unwrap();
        let stem = conv2d_algo_for(map, &[256, 1, 28, 28], &[64, 1, 7, 7], Conv2dArgs::new().stride(2).padding(3)).unwrap();
        assert_eq!(stem, if direct { Conv2dAlgo::Direct } else { Conv2dAlgo::Unfold }, "{map:?}");
        let short = conv2d_algo_for(map, &[8, 64, 14, 14], &[64, 64, 1, 1], Conv2dArgs::new().stride(2)).unwrap();
        assert_eq!(short, Conv2dAlgo::Unfold);
        // ResNet-18's strided 1x1 shortcuts at a training batch: the taps kernel.
        let shortcut = conv2d_algo_for(map, &[256, 128, 4, 4], &[256, 128, 1, 1], Conv2dArgs::new().stride(2)).unwrap();
        assert_eq!(shortcut, Conv2dAlgo::Taps);
        // At batch 8: 5x5 kernels over 64 channels take the taps kernel at stride 2 onto 7x7
        // outputs; at stride 1 (products by runs of positions) 3x3 kernels up to 14x14 and
        // 5x5 kernels up to 28x28 do, at any channel count, but 3x3 at 28x28 unfolds.
        let small = conv2d_algo_for(map, &[8, 64, 14, 14], &[64, 64, 5, 5], Conv2dArgs::new().stride(2).padding(2)).unwrap();
        assert_eq!(small, Conv2dAlgo::Taps);
        let mid = conv2d_algo_for(map, &[8, 64, 14, 14], &[64, 64, 5, 5], Conv2dArgs::new().padding(2)).unwrap();
        assert_eq!(mid, Conv2dAlgo::Taps);
        let wide = conv2d_algo_for(map, &[8, 256, 28, 28], &[256, 256, 5, 5], Conv2dArgs::new().padding(2)).unwrap();
        assert_eq!(wide, Conv2dAlgo::Taps);
        let many = conv2d_algo_for(map, &[8, 256, 14, 14], &[256, 256, 3, 3], Conv2dArgs::new().padding(1)).unwrap();
        assert_eq!(many, Conv2dAlgo::Taps);
        let large = conv2d_algo_for(map, &[8, 256, 28, 28], &[256, 256, 3, 3], Conv2dArgs::new().padding(1)).unwrap();
        assert_eq!(large, Conv2dAlgo::Unfold);
        // 3x3 onto 14x14 at batch 64: the taps kernel over 64 channels, the direct kernels
        // over 32.
        let at14 = |c: usize| conv2d_algo_for(map, &[64, c, 14, 14], &[c, c, 3, 3], Conv2dArgs::new().padding(1)).unwrap();
        assert_eq!(at14(64), Conv2dAlgo::Taps, "{map:?}");
        if conv2d_algo_applies(Conv2dAlgo::Direct, &[64, 32, 14, 14], &[32, 32, 3, 3], Conv2dArgs::new()).unwrap() {
            assert_eq!(at14(32), Conv2dAlgo::Direct, "{map:?}");
        }
        // 3x3 at stride 2 at batch 8: the taps kernel onto 4x4 outputs, and onto 7x7 with
        // 64 outputs; unfolding onto 7x7 with 128.
        let down =
            |c: usize, hw: usize| conv2d_algo_for(map, &[8, c, hw, hw], &[c, c, 3, 3], Conv2dArgs::new().stride(2).padding(1)).unwrap();
        assert_eq!(down(128, 7), Conv2dAlgo::Taps, "{map:?}");
        assert_eq!(down(64, 14), Conv2dAlgo::Taps, "{map:?}");
        assert_eq!(down(128, 14), Conv2dAlgo::Unfold, "{map:?}");
        // ResNet-18's small maps at a training batch: one product per position and tap; at
        // batch 8 the products of the 2x2 and 1x1 maps would be too thin, while at 7x7 the
        // runs of positions fill them.
        for (xs, ws, s, at_8) in [
            ([256, 64, 7, 7], [64, 64, 3, 3], 1, true),
            ([256, 256, 2, 2], [512, 256, 3, 3], 2, false),
            ([256, 512, 1, 1], [512, 512, 3, 3], 1, false),
        ] {
            let a = Conv2dArgs::new().padding(1).stride(s);
            assert_eq!(conv2d_algo_for(map, &xs, &ws, a).unwrap(), Conv2dAlgo::Taps, "{map:?} {xs:?}");
            let small = [8, xs[1], xs[2], xs[3]];
            assert_eq!(conv2d_algo_for(map, &small, &ws, a).unwrap() == Conv2dAlgo::Taps, at_8, "{map:?} {small:?}");
        }
        // 5x5 at 28x28: the direct kernels up to 64 channels, taps at 128, unfolding at 256.
        let five = |c: usize| conv2d_algo_for(map, &[64, c, 28, 28], &[c, c, 5, 5], Conv2dArgs::new().padding(2)).unwrap();
        assert_eq!(five(128), Conv2dAlgo::Taps, "{map:?}");
        assert_eq!(five(256), Conv2dAlgo::Unfold, "{map:?}");
        // A request that does not apply falls back to the automatic choice.
        let a = Conv2dArgs::new().stride(2).algo(Conv2dAlgo::Gemm1x1);
        assert_eq!(conv2d_algo_for(map, &[8, 64, 14, 14], &[128, 64, 1, 1], a).unwrap(), Conv2dAlgo::Unfold);
    }
    for a in Conv2dAlgo::ALL.into_iter().chain([Conv2dAlgo::Auto]) {
        assert_eq!(Conv2dAlgo::from_name(a.name()), Some(a));
    }
    assert_eq!(Conv2dAlgo::from_name("winograd"), None);
}

/// Every algorithm, where it runs: it is the one that ran (forward and both gradients),
/// it agrees with the definition and with the others in f64, and it passes gradcheck and
/// gradgradcheck.
#[test]
fn every_algorithm_matches_the_definition_and_gradchecks() {
    for (i, (xs, ws, a)) in algo_cases().into_iter().enumerate() {
        let [x, w, b, dy] = f64_case(&xs, &ws, a, 100 + i as u64);
        let want = reference(&x, &w, Some(&b), a);
        let (want_dx, want_dw) = reference_grads(&x, &w, &dy, a);
        let mut results: Vec<(Conv2dAlgo, [Vec<f64>; 3])> = Vec::new();
        for algo in Conv2dAlgo::ALL {
            if !runs_here(algo, &xs, &ws, a) {
                continue;
            }
            let a = a.algo(algo);
            let (xg, wg, bg) = (x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_());
            let y = conv2d(&xg, &wg, Some(&bg), a).unwrap();
            y.backward_with(Some(&dy), Default::default()).unwrap();
            for map in [Conv2dMap::Forward, Conv2dMap::InputGrad, Conv2dMap::WeightGrad] {
                assert_eq!(last_conv2d_algo(map), Some(algo), "case {i}: {map:?} did not run with {}", algo.name());
            }
            let got = [y.to_vec::<f64>(), xg.grad().unwrap().to_vec::<f64>(), wg.grad().unwrap().to_vec::<f64>()];
            assert!(max_error(&got[0], &want) < 1e-12, "case {i} {}: forward", algo.name());
            assert!(max_error(&got[1], &want_dx) < 1e-12, "case {i} {}: input gradient", algo.name());
            assert!(max_error(&got[2], &want_dw) < 1e-12, "case {i} {}: weight gradient", algo.name());
            // The gradient ops on their own go through the selector too.
            let dx = conv2d_input_grad(&dy, &w, &xs, a).unwrap();
            assert_eq!(last_conv2d_algo(Conv2dMap::InputGrad), Some(algo));
            let dw = conv2d_weight_grad(&x, &dy, &ws, a).unwrap();
            assert_eq!(last_conv2d_algo(Conv2dMap::WeightGrad), Some(algo));
            assert!(max_error(&dx.to_vec::<f64>(), &want_dx) < 1e-12 && max_error(&dw.to_vec::<f64>(), &want_dw) < 1e-12);
            for (other, theirs) in &results {
                for (m, (p, q)) in got.iter().zip(theirs).enumerate() {
                    assert!(max_error(p, q) < 1e-12, "case {i}: {} and {} disagree on map {m}", algo.name(), other.name());
                }
            }
            assert_gradcheck(
                |v| conv2d(&v[0], &v[1], Some(&v[2]), a),
                &[x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()],
            );
            assert_gradgradcheck(|v| conv2d(&v[0], &v[1], None, a), &[x.clone().requires_grad_(), w.clone().requires_grad_()]);
            results.push((algo, got));
        }
        assert!(results.iter().any(|(a, _)| *a == Conv2dAlgo::Unfold), "case {i}: unfolding always runs");
    }
}

/// Every algorithm gives bitwise the same values and gradients at one and two threads,
/// on shapes big enough to split into several tasks, GEMM tiles and partial sums.
#[test]
fn every_algorithm_is_bitwise_identical_at_one_and_two_threads() {
    let cases = [
        ([19, 6, 12, 12], [16, 6, 3, 3], Conv2dArgs::new().padding(1)),
        ([19, 64, 8, 8], [96, 64, 1, 1], Conv2dArgs::new()),
        ([19, 8, 13, 11], [12, 8, 3, 3], Conv2dArgs::new().stride(2).padding(1)),
        // Unfolded: blocks of 4 samples, two blocks per partial sum of the weight gradient.
        ([19, 64, 8, 8], [16, 64, 3, 3], Conv2dArgs::new().padding(1)),
        // The taps kernel: three blocks of batch rows, two of channel rows.
        ([130, 70, 2, 2], [40, 70, 3, 3], Conv2dArgs::new().padding(1)),
        // The taps kernel at a small batch: products by runs of positions.
        ([9, 40, 5, 6], [36, 40, 3, 3], Conv2dArgs::new().padding(1)),
        // The taps kernel by blocks of samples: four of 10, each with its partial weight
        // gradient.
        ([40, 24, 6, 9], [20, 24, 3, 3], Conv2dArgs::new().padding(1)),
    ];
    for (xs, ws, a) in cases {
        for algo in Conv2dAlgo::ALL {
            if !runs_here(algo, &xs, &ws, a) {
                continue;
            }
            let a = a.algo(algo);
            let mut r = rng(7);
            let x = Tensor::uniform(&xs, -1.0, 1.0, &mut r).requires_grad_();
            let w = Tensor::uniform(&ws, -1.0, 1.0, &mut r).requires_grad_();
            let b = Tensor::uniform(&[ws[0]], -1.0, 1.0, &mut r).requires_grad_();
            let seed = Tensor::uniform(&out_shape(&xs, &ws, a), -1.0, 1.0, &mut r);
            let run = |threads| {
                autograd::set_num_threads(threads).unwrap();
                [&x, &w, &b].iter().for_each(|t| t.zero_grad());
                let y = conv2d(&x, &w, Some(&b), a).unwrap();
                y.backward_with(Some(&seed), Default::default()).unwrap();
                assert_eq!(last_conv2d_algo(Conv2dMap::WeightGrad), Some(algo));
                [y, x.grad().unwrap(), w.grad().unwrap(), b.grad().unwrap()]
                    .map(|t| t.to_vec::<f32>().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            };
            let one = run(1);
            let two = run(2);
            assert!(one == two, "{} differs between 1 and 2 threads on {xs:?} x {ws:?}", algo.name());
        }
    }
}

/// At stride 1 with a batch of 16 or more, the taps kernel runs blocks of samples (here
/// 8, 8 and 5; 8, 8 and 2; 9, 9, 9 and 6; 8 and 8), each on its own copies, with one
/// partial weight gradient per block: all three maps against the definition in f64, with
/// blocks that do not divide the batch, dilation and uneven padding; each gradient op on its own too, bitwise as in the backward; and gradchecked
/// on a small case of two blocks.
#[test]
fn the_taps_kernel_by_blocks_of_samples_matches_the_definition() {
    let cases = [
        ([21, 3, 5, 8], [4, 3, 3, 3], Conv2dArgs::new().padding(1)),
        ([18, 2, 6, 9], [3, 2, 3, 2], Conv2dArgs::new().dilation(2).padding((2, 1))),
        ([33, 5, 4, 4], [6, 5, 3, 3], Conv2dArgs::new().padding(1)),
        ([16, 4, 7, 7], [5, 4, 5, 5], Conv2dArgs::new().padding((2, 1))),
    ];
    for (i, (xs, ws, a)) in cases.into_iter().enumerate() {
        let a = a.algo(Conv2dAlgo::Taps);
        let [x, w, b, dy] = f64_case(&xs, &ws, a, 60 + i as u64);
        let (xg, wg, bg) = (x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_());
        let y = conv2d(&xg, &wg, Some(&bg), a).unwrap();
        y.backward_with(Some(&dy), Default::default()).unwrap();
        assert_eq!(last_conv2d_algo(Conv2dMap::WeightGrad), Some(Conv2dAlgo::Taps), "case {i}");
        let (want_dx, want_dw) = reference_grads(&x, &w, &dy, a);
        assert!(max_error(&y.to_vec::<f64>(), &reference(&x, &w, Some(&b), a)) < 1e-12, "case {i}: forward");
        assert!(max_error(&xg.grad().unwrap().to_vec::<f64>(), &want_dx) < 1e-12, "case {i}: input gradient");
        assert!(max_error(&wg.grad().unwrap().to_vec::<f64>(), &want_dw) < 1e-12, "case {i}: weight gradient");
        let dx = conv2d_input_grad(&dy, &w, &xs, a).unwrap();
        let dw = conv2d_weight_grad(&x, &dy, &ws, a).unwrap();
        assert!(max_error(&dx.to_vec::<f64>(), &want_dx) < 1e-12, "case {i}: input gradient alone");
        assert!(max_error(&dw.to_vec::<f64>(), &want_dw) < 1e-12, "case {i}: weight gradient alone");
        // The same bits alone as together (the blocks' partials do not depend on dx).
        assert_eq!(dw.to_vec::<f64>(), wg.grad().unwrap().to_vec::<f64>(), "case {i}");
        assert_eq!(dx.to_vec::<f64>(), xg.grad().unwrap().to_vec::<f64>(), "case {i}");
    }
    let a = Conv2dArgs::new().padding(1).algo(Conv2dAlgo::Taps);
    let [x, w, b, _] = f64_case(&[18, 1, 3, 8], &[2, 1, 3, 3], a, 70);
    let (x, w, b) = (x.requires_grad_(), w.requires_grad_(), b.requires_grad_());
    assert_gradcheck(|v| conv2d(&v[0], &v[1], Some(&v[2]), a), &[x.clone(), w.clone(), b]);
    assert_gradgradcheck(|v| conv2d(&v[0], &v[1], None, a), &[x, w]);
}

/// Unfolded matrices larger than the 512 KB the unfolding kernels multiply at a time are
/// made, multiplied and folded back in chunks of rows, each map cut its own way (the
/// forward along the reduction, the gradients along their rows and columns, with a
/// shorter last chunk): against the definition in f64, padded, strided (column phases)
/// and grouped without padding (read in place).
#[test]
fn unfolding_in_chunks_matches_the_definition() {
    let cases = [
        ([2, 16, 12, 12], [16, 16, 5, 5], Conv2dArgs::new().padding(2)),
        ([2, 24, 15, 15], [20, 24, 5, 5], Conv2dArgs::new().stride(2).padding(2)),
        ([2, 32, 16, 16], [16, 16, 5, 5], Conv2dArgs::new().groups(2)),
    ];
    for (i, (xs, ws, a)) in cases.into_iter().enumerate() {
        let a = a.algo(Conv2dAlgo::Unfold);
        let [x, w, b, dy] = f64_case(&xs, &ws, a, 40 + i as u64);
        let (x, w, b) = (x.requires_grad_(), w.requires_grad_(), b.requires_grad_());
        let y = conv2d(&x, &w, Some(&b), a).unwrap();
        y.backward_with(Some(&dy), Default::default()).unwrap();
        assert_eq!(last_conv2d_algo(Conv2dMap::WeightGrad), Some(Conv2dAlgo::Unfold));
        let (want_dx, want_dw) = reference_grads(&x, &w, &dy, a);
        assert!(max_error(&y.to_vec::<f64>(), &reference(&x, &w, Some(&b), a)) < 1e-12, "case {i}: forward");
        assert!(max_error(&x.grad().unwrap().to_vec::<f64>(), &want_dx) < 1e-12, "case {i}: input gradient");
        assert!(max_error(&w.grad().unwrap().to_vec::<f64>(), &want_dw) < 1e-12, "case {i}: weight gradient");
    }
}

/// No channels on one side: the maps give zeros, never a panic. A transposed convolution
/// of no input channels (a case `tests/size_overflow.rs` drew) is the input gradient of a
/// convolution with no output channels.
#[test]
fn maps_with_no_channels_on_one_side_give_zeros() {
    let x = Tensor::ones(&[1, 0, 1, 3]);
    let w = Tensor::ones(&[0, 2, 1, 1]);
    let y = ops::conv_transpose2d(&x, &w, None, ops::ConvTranspose2dArgs::new().stride(3)).unwrap();
    assert_eq!(y.shape(), &[1, 2, 1, 7]);
    assert_eq!(y.to_vec::<f64>(), vec![0.0; 14]);
    for algo in Conv2dAlgo::ALL {
        let a = Conv2dArgs::new().padding(1).algo(algo);
        let dx = conv2d_input_grad(&Tensor::ones(&[2, 0, 5, 5]), &Tensor::ones(&[0, 3, 3, 3]), &[2, 3, 5, 5], a).unwrap();
        assert_eq!(dx.to_vec::<f64>(), vec![0.0; 150], "{}", algo.name());
    }
}

/// An input that needs no gradient (a network's first layer, as ResNet's stem): the direct
/// kernels then sum the weight and bias gradients from a channel-minor copy of the output
/// gradient alone. Against the definition in f64, with and without a fused activation
/// and pooling (against the ops in turn), and bitwise at one and two threads in f32.
#[test]
fn a_first_layer_without_an_input_gradient_gets_its_weight_and_bias_gradients() {
    let (xs, ws, a) = ([5, 1, 14, 13], [32, 1, 7, 7], Conv2dArgs::new().stride(2).padding(3).algo(Conv2dAlgo::Direct));
    if !runs_here(Conv2dAlgo::Direct, &xs, &ws, a) {
        return;
    }
    let [x, w, b, dy] = f64_case(&xs, &ws, a, 31);
    let (w, b) = (w.requires_grad_(), b.requires_grad_());
    let y = conv2d(&x, &w, Some(&b), a).unwrap();
    y.backward_with(Some(&dy), Default::default()).unwrap();
    assert_eq!(last_conv2d_algo(Conv2dMap::WeightGrad), Some(Conv2dAlgo::Direct));
    let (_, want_dw) = reference_grads(&x, &w, &dy, a);
    assert!(max_error(&w.grad().unwrap().to_vec::<f64>(), &want_dw) < 1e-12);
    let want_db = dy.sum_dims(&[0, 2, 3], false).unwrap().to_vec::<f64>();
    assert!(max_error(&b.grad().unwrap().to_vec::<f64>(), &want_db) < 1e-12);

    // Fused ReLU and 2x2 max pooling: bitwise the ops in turn.
    let epilogue = Epilogue { act: Some(Activation::Relu), pool: Some(Pool2x2::Max) };
    let grads = |fused: bool| {
        [&w, &b].iter().for_each(|t| t.zero_grad());
        let y = if fused {
            conv2d_fused(&x, &w, Some(&b), a, epilogue).unwrap()
        } else {
            max_pool2d(&conv2d(&x, &w, Some(&b), a).unwrap().relu(), Pool2dArgs::new(2)).unwrap()
        };
        let seed = Tensor::uniform_dtype(y.shape(), -1.0, 1.0, DType::F64, &mut rng(5));
        y.backward_with(Some(&seed), Default::default()).unwrap();
        [&w, &b].map(|t| t.grad().unwrap().to_vec::<f64>().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
    };
    assert_eq!(grads(true), grads(false));

    let (x, w, b, dy) =
        (x.to_dtype(DType::F32), w.to_dtype(DType::F32).requires_grad_(), b.to_dtype(DType::F32).requires_grad_(), dy.to_dtype(DType::F32));
    let run = |threads| {
        autograd::set_num_threads(threads).unwrap();
        [&w, &b].iter().for_each(|t| t.zero_grad());
        let y = conv2d(&x, &w, Some(&b), a).unwrap();
        y.backward_with(Some(&dy), Default::default()).unwrap();
        [y, w.grad().unwrap(), b.grad().unwrap()].map(|t| t.to_vec::<f32>().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
    };
    assert!(run(1) == run(2));
}

/// Taps that see only padding are skipped: a 3x3 convolution with padding 1 over 1x1
/// planes runs as a 1x1 product, and its values and gradients (zero for the skipped taps)
/// are the definition's.
#[test]
fn taps_wholly_in_padding_are_skipped() {
    let cases = [
        ([2, 4, 1, 1], [3, 4, 3, 3], Conv2dArgs::new().padding(1), Some(Conv2dAlgo::Gemm1x1)),
        ([2, 3, 1, 5], [2, 3, 3, 3], Conv2dArgs::new().padding(1), None),
        ([1, 2, 2, 2], [2, 2, 5, 5], Conv2dArgs::new().padding(2).stride(2), None),
        ([1, 2, 1, 1], [2, 2, 3, 3], Conv2dArgs::new().padding(2).dilation(2), Some(Conv2dAlgo::Gemm1x1)),
    ];
    for (i, (xs, ws, a, algo)) in cases.into_iter().enumerate() {
        let mut r = rng(40 + i as u64);
        let x = Tensor::uniform_dtype(&xs, -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        let w = Tensor::uniform_dtype(&ws, -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        let dy = Tensor::uniform_dtype(&out_shape(&xs, &ws, a), -1.0, 1.0, DType::F64, &mut r);
        let y = conv2d(&x, &w, None, a).unwrap();
        if let Some(algo) = algo {
            assert_eq!(last_conv2d_algo(Conv2dMap::Forward), Some(algo), "case {i}");
        }
        assert!(max_error(&y.to_vec::<f64>(), &reference(&x, &w, None, a)) < 1e-12, "case {i}");
        y.backward_with(Some(&dy), Default::default()).unwrap();
        let (dx, dw) = reference_grads(&x, &w, &dy, a);
        assert!(max_error(&x.grad().unwrap().to_vec::<f64>(), &dx) < 1e-12, "case {i}");
        assert!(max_error(&w.grad().unwrap().to_vec::<f64>(), &dw) < 1e-12, "case {i}");
        assert_gradgradcheck(|v| conv2d(&v[0], &v[1], None, a), &[x.detach(), w.detach()].map(|t| t.requires_grad_()));
    }
    // A NaN at a padding-only tap still makes its output channel NaN (0 * NaN), as
    // PyTorch's: the crop is skipped for a non-finite weight.
    let x = Tensor::ones(&[1, 2, 1, 1]);
    let mut wv = vec![0.5f32; 2 * 2 * 9];
    wv[0] = f32::NAN; // channel 0's top-left corner: only ever reads padding here
    let w = Tensor::from_vec(wv, &[2, 2, 3, 3]).unwrap();
    for algo in Conv2dAlgo::ALL.into_iter().chain([Conv2dAlgo::Auto]) {
        let y = conv2d(&x, &w, None, Conv2dArgs::new().padding(1).algo(algo)).unwrap();
        let y = y.to_vec::<f32>();
        assert!(y[0].is_nan() && y[1] == 1.0, "{}: {y:?}", algo.name());
    }
    // An infinite corner tap over a 2x2 map reads the input at one output only: there the
    // sum is infinite, at the three others 0 * inf is NaN.
    let mut wv = vec![0.5f32; 9];
    wv[0] = f32::INFINITY;
    let w = Tensor::from_vec(wv, &[1, 1, 3, 3]).unwrap();
    let x = Tensor::ones(&[1, 1, 2, 2]);
    for algo in Conv2dAlgo::ALL.into_iter().chain([Conv2dAlgo::Auto]) {
        let y = conv2d(&x, &w, None, Conv2dArgs::new().padding(1).algo(algo)).unwrap().to_vec::<f32>();
        assert!(y[..3].iter().all(|v| v.is_nan()) && y[3] == f32::INFINITY, "{}: {y:?}", algo.name());
    }
}

/// A column stride far beyond the row (a legal geometry: one output column) must not size
/// any buffer by the stride: the unfolding's column phases are at most the row's length.
#[test]
fn a_huge_stride_sizes_nothing_by_the_stride() {
    let mut r = rng(77);
    let x = Tensor::uniform_dtype(&[2, 3, 5, 6], -1.0, 1.0, DType::F64, &mut r);
    let w = Tensor::uniform_dtype(&[4, 3, 3, 3], -1.0, 1.0, DType::F64, &mut r);
    for stride in [ops::Pair(1, 1 << 62), ops::Pair(usize::MAX / 2, 3)] {
        for algo in Conv2dAlgo::ALL {
            let a = Conv2dArgs::new().stride(stride).padding(1).algo(algo);
            let y = conv2d(&x, &w, None, a).unwrap();
            assert!(max_error(&y.to_vec::<f64>(), &reference(&x, &w, None, a)) < 1e-12, "{stride:?} {}", algo.name());
        }
    }
}

#[test]
fn each_sample_gets_the_same_bits_in_any_batch_under_the_taps_kernel() {
    // 160 samples run in blocks of 128 rows, 32 in one block of 32; at a 1x1 map the
    // blocks are of 64 rows. Each sample's forward output, and each sample's input
    // gradient, must be the same bits either way.
    for (side, pad) in [(7, 1), (1, 1)] {
        let a = Conv2dArgs::new().padding(pad).algo(Conv2dAlgo::Taps);
        let mut r = rng(21);
        let x = Tensor::uniform(&[160, 32, side, side], -1.0, 1.0, &mut r).requires_grad_();
        let w = Tensor::uniform(&[32, 32, 3, 3], -0.2, 0.2, &mut r).requires_grad_();
        let dy = Tensor::uniform(&[160, 32, side, side], -1.0, 1.0, &mut r);
        let run = |n: usize| {
            let xn = x.narrow(0, 0, n).unwrap().contiguous().detach().requires_grad_();
            let y = conv2d(&xn, &w, None, a).unwrap();
            assert_eq!(last_conv2d_algo(Conv2dMap::Forward), Some(Conv2dAlgo::Taps));
            y.backward_with(Some(&dy.narrow(0, 0, n).unwrap().contiguous()), Default::default()).unwrap();
            let bits = |t: &Tensor| t.narrow(0, 0, 32).unwrap().to_vec::<f32>().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            (bits(&y), bits(&xn.grad().unwrap()))
        };
        assert!(run(160) == run(32), "side {side}");
    }
}
