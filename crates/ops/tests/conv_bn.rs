//! Issue 24's training-mode fusion, `ops::conv2d_bn_train`: a convolution, batch
//! normalisation with the batch's statistics and an activation as one op. Its output,
//! batch statistics and every gradient are bitwise those of `conv2d`, `batch_norm_train`
//! and the activation in turn (the same kernels in the same order), under every
//! convolution kernel the selector picks; it gradchecks to first and second order in f64;
//! bad arguments are errors naming the op.

use autograd::testing::{assert_gradcheck, assert_gradgradcheck};
use autograd::{rng, Activation, DType, Tensor};
use ops::{conv2d_bn_train, BatchNormParams, Conv2dArgs, Pair};
use proptest::prelude::*;

const ACTS: [Option<Activation>; 4] = [None, Some(Activation::Relu), Some(Activation::Sigmoid), Some(Activation::Tanh)];

/// `(input, weight, conv bias, gamma, beta)`, all requiring gradients.
fn operands(n: usize, c: usize, o: usize, hw: usize, k: usize, dtype: DType, seed: u64) -> [Tensor; 5] {
    let mut r = rng(seed);
    let mut u = |shape: &[usize], lo, hi| Tensor::uniform_dtype(shape, lo, hi, dtype, &mut r).requires_grad_();
    [u(&[n, c, hw, hw], -1.0, 1.0), u(&[o, c, k, k], -0.3, 0.3), u(&[o], -0.5, 0.5), u(&[o], 0.5, 1.5), u(&[o], -0.5, 0.5)]
}

/// The output, the batch mean and unbiased variance, and the gradients of every operand
/// under a random output gradient: fused, or the ops one after another.
fn outcome(v: &[Tensor; 5], args: Conv2dArgs, act: Option<Activation>, fused: bool) -> Vec<Tensor> {
    v.iter().for_each(|t| t.zero_grad());
    let bn = BatchNormParams { weight: Some(&v[3]), bias: Some(&v[4]), eps: 1e-5 };
    let out = if fused {
        conv2d_bn_train(&v[0], &v[1], Some(&v[2]), args, bn, act).unwrap()
    } else {
        let y = ops::conv2d(&v[0], &v[1], Some(&v[2]), args).unwrap();
        let mut out = ops::batch_norm_train(&y, bn.weight, bn.bias, bn.eps).unwrap();
        out.output = act.map_or(out.output.clone(), |a| a.apply(&out.output));
        out
    };
    let seed = Tensor::uniform_dtype(out.output.shape(), -1.0, 1.0, v[0].dtype(), &mut rng(99));
    out.output.backward_with(Some(&seed), Default::default()).unwrap();
    let mut all = vec![out.output.detach(), out.mean, out.var_unbiased];
    all.extend(v.iter().map(|t| t.grad().unwrap()));
    all
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn fused_is_the_ops_in_turn_bitwise_under_every_kernel() {
    // (batch, in, out, side, kernel, stride, padding): LeNet's first layer (direct
    // kernels), a ResNet stage-2 block at 7x7 (taps), a strided one (unfolding), a 1x1
    // kernel (a plain product), a 3x3 over 2x2 maps (mostly padding), maps of 34x34 (past
    // the planes whose activation gradient the batch norm's sums form first).
    let shapes = [
        (4, 1, 6, 12, 5, 1, 2),
        (16, 32, 32, 7, 3, 1, 1),
        (3, 4, 8, 9, 3, 2, 1),
        (4, 8, 16, 5, 1, 1, 0),
        (16, 32, 32, 2, 3, 1, 1),
        (2, 2, 3, 34, 3, 1, 1),
    ];
    for (i, &(n, c, o, hw, k, s, p)) in shapes.iter().enumerate() {
        let args = Conv2dArgs { stride: Pair(s, s), padding: Pair(p, p), ..Default::default() };
        let v = operands(n, c, o, hw, k, DType::F32, i as u64);
        for act in ACTS {
            let (fused, plain) = (outcome(&v, args, act, true), outcome(&v, args, act, false));
            for (j, (a, b)) in fused.iter().zip(&plain).enumerate() {
                assert!(bits(a) == bits(b), "shape {i}, {act:?}: result {j} differs by {}", a.max_abs_diff(b).unwrap());
            }
        }
    }
}

#[test]
fn fused_is_bitwise_identical_at_one_and_two_threads() {
    let v = operands(16, 32, 32, 7, 3, DType::F32, 7);
    let args = Conv2dArgs { padding: Pair(1, 1), ..Default::default() };
    let run = |t| {
        autograd::set_num_threads(t).unwrap();
        outcome(&v, args, Some(Activation::Relu), true).iter().map(bits).collect::<Vec<_>>()
    };
    assert!(run(1) == run(2));
}

#[test]
fn bad_arguments_are_errors_naming_the_op() {
    let [x, w, b, gamma, _] = operands(2, 3, 4, 5, 3, DType::F32, 1);
    let args = Conv2dArgs { padding: Pair(1, 1), ..Default::default() };
    let short = Tensor::ones(&[3]);
    let bn = BatchNormParams { weight: Some(&short), bias: None, eps: 1e-5 };
    let e = conv2d_bn_train(&x, &w, Some(&b), args, bn, None).err().expect("a 3-channel gamma for 4 channels");
    assert!(e.to_string().contains("conv2d_bn_train"), "{e}");
    // One value per channel: no variance to normalise by.
    let one = Tensor::ones(&[1, 3, 1, 1]);
    let bn = BatchNormParams { weight: Some(&gamma), bias: None, eps: 1e-5 };
    let e = conv2d_bn_train(&one, &w, Some(&b), Conv2dArgs { padding: Pair(1, 1), ..Default::default() }, bn, None).err().expect("1 value");
    assert!(e.to_string().contains("more than 1 value per channel"), "{e}");
    // A convolution error is the convolution's.
    let e = conv2d_bn_train(&x, &Tensor::ones(&[4, 2, 3, 3]), None, args, bn, None).err().expect("channels differ");
    assert!(e.to_string().contains("conv2d"), "{e}");
}

#[test]
fn nan_in_the_input_is_nan_out_in_its_channels() {
    let [x, w, b, gamma, beta] = operands(2, 3, 4, 5, 3, DType::F32, 2);
    let mut xv = x.to_vec::<f32>();
    xv[7] = f32::NAN;
    let x = Tensor::from_vec(xv, x.shape()).unwrap();
    let bn = BatchNormParams { weight: Some(&gamma), bias: Some(&beta), eps: 1e-5 };
    let args = Conv2dArgs { padding: Pair(1, 1), ..Default::default() };
    let out = conv2d_bn_train(&x, &w, Some(&b), args, bn, Some(Activation::Relu)).unwrap();
    // Every output channel reads the poisoned input, so every channel's statistics are NaN.
    assert!(out.mean.to_vec::<f32>().iter().all(|m| m.is_nan()));
    assert!(out.output.to_vec::<f32>().iter().all(|v| v.is_nan()));
}

proptest! {
    #![proptest_config(autograd::testing::config_from_env(12))]

    #[test]
    fn conv2d_bn_train_gradchecks(
        n in 2usize..4, c in 1usize..3, o in 1usize..3, hw in 2usize..5, stride in 1usize..3,
        act in 0usize..4, affine in any::<bool>(), seed in any::<u64>(),
    ) {
        let v = operands(n, c, o, hw, 3, DType::F64, seed);
        let args = Conv2dArgs { stride: Pair(stride, stride), padding: Pair(1, 1), ..Default::default() };
        let act = ACTS[act];
        let f = |v: &[Tensor]| {
            let bn = if affine {
                BatchNormParams { weight: Some(&v[3]), bias: Some(&v[4]), eps: 1e-5 }
            } else {
                BatchNormParams { weight: None, bias: None, eps: 1e-5 }
            };
            // A non-linear reduction-free read-out, so the second order sees the statistics.
            Ok(conv2d_bn_train(&v[0], &v[1], Some(&v[2]), args, bn, act)?.output.tanh())
        };
        let inputs = if affine { v.to_vec() } else { v[..3].to_vec() };
        assert_gradcheck(f, &inputs);
        assert_gradgradcheck(f, &inputs);
    }
}
