//! Functional losses: values against PyTorch and gradients against finite differences.

use autograd::testing::{assert_gradcheck, assert_gradgradcheck};
use autograd::{rng, DType, Tensor};
use proptest::prelude::*;

#[test]
fn cross_entropy_matches_pytorch() {
    // torch.nn.functional.cross_entropy(torch.tensor([[1.,2.,3.],[1.,0.,-1.]]), torch.tensor([2, 0]))
    //   = 0.40760596
    let logits = Tensor::from_vec(vec![1.0f64, 2., 3., 1., 0., -1.], &[2, 3]).unwrap();
    let l = ops::cross_entropy(&logits, &[2, 0]).unwrap().item().unwrap();
    assert!((l - 0.407_605_964_4).abs() < 1e-9, "{l}");
}

#[test]
fn cross_entropy_is_stable_for_huge_logits() {
    let logits = Tensor::from_vec(vec![1000.0f32, 0.0, -1000.0], &[1, 3]).unwrap();
    assert_eq!(ops::cross_entropy(&logits, &[0]).unwrap().item().unwrap(), 0.0);
    assert_eq!(ops::cross_entropy(&logits, &[1]).unwrap().item().unwrap(), 1000.0);
}

#[test]
fn loss_errors_name_the_op() {
    let logits = Tensor::zeros(&[2, 3]);
    assert!(ops::cross_entropy(&logits, &[0]).unwrap_err().to_string().starts_with("cross_entropy: 1 labels for a batch of 2"));
    assert!(ops::cross_entropy(&logits, &[0, 3]).unwrap_err().to_string().contains("label 3 out of range for 3 classes"));
    let e = ops::mse(&Tensor::zeros(&[2]), &Tensor::zeros(&[3])).unwrap_err().to_string();
    assert_eq!(e, "mse: prediction and target shapes differ ([2] and [3])");
}

#[test]
fn mse_value() {
    let p = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
    let t = Tensor::from_vec(vec![1.0f32, 0.0, 0.0], &[3]).unwrap();
    assert!((ops::mse(&p, &t).unwrap().item().unwrap() - 13.0 / 3.0).abs() < 1e-6);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn loss_gradients(n in 1usize..5, c in 2usize..5, seed in any::<u64>()) {
        let mut r = rng(seed);
        let logits = Tensor::uniform_dtype(&[n, c], -3.0, 3.0, DType::F64, &mut r).requires_grad_();
        let labels: Vec<usize> = (0..n).map(|i| (seed as usize >> i) % c).collect();
        assert_gradcheck(|v| ops::cross_entropy(&v[0], &labels), &[logits.clone()]);
        assert_gradgradcheck(|v| ops::cross_entropy(&v[0], &labels), &[logits.clone()]);
        let target = Tensor::uniform_dtype(&[n, c], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        assert_gradcheck(|v| ops::mse(&v[0], &v[1]), &[logits.clone(), target.clone()]);
        assert_gradgradcheck(|v| ops::mse(&v[0], &v[1]), &[logits, target]);
    }
}

#[test]
fn targets_as_an_i64_tensor_as_pytorch_takes_them() {
    let logits = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 1.0, 0.0, -1.0], &[2, 3]).unwrap();
    let from_slice = ops::cross_entropy(&logits, &[2, 0]).unwrap().item().unwrap();
    let targets = Tensor::from_vec(vec![2i64, 0], &[2]).unwrap();
    assert_eq!(ops::cross_entropy(&logits, &targets).unwrap().item().unwrap(), from_slice);
    // A negative label, a float tensor or a wrong rank is an error naming the op.
    for bad in [
        Tensor::from_vec(vec![-1i64, 0], &[2]).unwrap(),
        Tensor::from_vec(vec![2.0f32, 0.0], &[2]).unwrap(),
        Tensor::from_vec(vec![2i64, 0], &[2, 1]).unwrap(),
        Tensor::from_vec(vec![3i64, 0], &[2]).unwrap(),
    ] {
        let e = ops::cross_entropy(&logits, &bad).unwrap_err().to_string();
        assert!(e.starts_with("cross_entropy: "), "{e}");
    }
}

/// Values whose magnitudes avoid `[k - 0.15, k + 0.15]` and 0 (the kinks of the smooth L1
/// and Huber losses, and of |d|), with random signs.
fn off_kinks(n: usize, k: f64) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec((0.1f64..(k - 0.15), (k + 0.15)..(k + 1.5), any::<bool>(), any::<bool>()), n)
        .prop_map(|v| v.into_iter().map(|(a, b, pick, neg)| if pick { a } else { b } * if neg { -1.0 } else { 1.0 }).collect())
}

fn both(f: impl Fn(&[Tensor]) -> autograd::Result<Tensor> + Copy, inputs: &[Tensor]) {
    assert_gradcheck(f, inputs);
    assert_gradgradcheck(f, inputs);
}

const REDUCTIONS: [ops::Reduction; 3] = [ops::Reduction::Mean, ops::Reduction::Sum, ops::Reduction::None];

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn class_index_loss_gradients(n in 1usize..5, c in 2usize..5, seed in any::<u64>(), red in 0usize..3, smooth in 0.0f64..0.5) {
        let mut r = rng(seed);
        let logits = Tensor::uniform_dtype(&[n, c], -3.0, 3.0, DType::F64, &mut r).requires_grad_();
        // Some targets ignored (-100), at least one kept.
        let t: Vec<i64> = (0..n).map(|i| if i > 0 && (seed >> i) & 3 == 0 { -100 } else { ((seed >> (2 * i)) % c as u64) as i64 }).collect();
        let t = Tensor::from_vec(t, &[n]).unwrap();
        let w = Tensor::uniform_dtype(&[c], 0.5, 2.0, DType::F64, &mut r);
        let opts = ops::CrossEntropyOptions { weight: Some(w.clone()), reduction: REDUCTIONS[red], label_smoothing: smooth, ..Default::default() };
        both(|v| ops::cross_entropy_with(&v[0], &t, &opts), &[logits.clone()]);
        let plain = ops::CrossEntropyOptions { reduction: REDUCTIONS[red], ..Default::default() };
        both(|v| ops::cross_entropy_with(&v[0], &t, &plain), &[logits.clone()]);
        let nll = ops::NllLossOptions { weight: Some(w), reduction: REDUCTIONS[red], ..Default::default() };
        both(|v| ops::nll_loss(&v[0].log_softmax(1)?, &t, &nll), &[logits]);
    }

    #[test]
    fn binary_loss_gradients(n in 1usize..4, c in 1usize..4, seed in any::<u64>(), red in 0usize..3) {
        let mut r = rng(seed);
        let red = REDUCTIONS[red];
        let p = Tensor::uniform_dtype(&[n, c], 0.05, 0.95, DType::F64, &mut r).requires_grad_();
        let y = Tensor::uniform_dtype(&[n, c], 0.0, 1.0, DType::F64, &mut r).requires_grad_();
        let w = Tensor::uniform_dtype(&[c], 0.5, 2.0, DType::F64, &mut r);
        both(|v| ops::binary_cross_entropy(&v[0], &v[1], Some(&w), red), &[p.clone(), y.clone()]);
        let x = Tensor::uniform_dtype(&[n, c], -4.0, 4.0, DType::F64, &mut r).requires_grad_();
        let pw = Tensor::uniform_dtype(&[c], 0.5, 3.0, DType::F64, &mut r);
        both(|v| ops::binary_cross_entropy_with_logits(&v[0], &v[1], Some(&w), Some(&pw), red), &[x.clone(), y.clone()]);
        both(|v| ops::binary_cross_entropy_with_logits(&v[0], &v[1], None, None, red), &[x, y]);
    }

    #[test]
    fn regression_loss_gradients(d in off_kinks(6, 0.75), seed in any::<u64>(), red in 0usize..3) {
        let red = REDUCTIONS[red];
        let t = Tensor::uniform_dtype(&[2, 3], -1.0, 1.0, DType::F64, &mut rng(seed)).requires_grad_();
        let p = t.add(&Tensor::from_vec(d, &[2, 3]).unwrap()).unwrap().detach().requires_grad_();
        both(|v| ops::l1_loss(&v[0], &v[1], red), &[p.clone(), t.clone()]);
        both(|v| ops::mse_loss(&v[0], &v[1], red), &[p.clone(), t.clone()]);
        both(|v| ops::smooth_l1_loss(&v[0], &v[1], red, 0.75), &[p.clone(), t.clone()]);
        both(|v| ops::smooth_l1_loss(&v[0], &v[1], red, 0.0), &[p.clone(), t.clone()]);
        both(|v| ops::huber_loss(&v[0], &v[1], red, 0.75), &[p, t]);
    }

    #[test]
    fn kl_div_gradients(n in 1usize..4, c in 2usize..5, seed in any::<u64>(), red in 0usize..4) {
        let mut r = rng(seed);
        let red = [ops::Reduction::Mean, ops::Reduction::Sum, ops::Reduction::None, ops::Reduction::BatchMean][red];
        let z = Tensor::uniform_dtype(&[n, c], -2.0, 2.0, DType::F64, &mut r).requires_grad_();
        let u = Tensor::uniform_dtype(&[n, c], -2.0, 2.0, DType::F64, &mut r).requires_grad_();
        both(|v| ops::kl_div(&v[0].log_softmax(1)?, &v[1].softmax(1)?, red, false), &[z.clone(), u.clone()]);
        both(|v| ops::kl_div(&v[0].log_softmax(1)?, &v[1].log_softmax(1)?, red, true), &[z, u]);
    }
}

#[test]
fn loss_options_are_checked_naming_the_loss() {
    let x = Tensor::zeros_dtype(&[2, 3], DType::F64);
    let t = Tensor::from_vec(vec![0i64, 2], &[2]).unwrap();
    let e = |r: autograd::Result<Tensor>| r.unwrap_err().to_string();
    let smooth = ops::CrossEntropyOptions { label_smoothing: 1.5, ..Default::default() };
    assert!(e(ops::cross_entropy_with(&x, &t, &smooth)).starts_with("cross_entropy: label_smoothing"));
    let weight = ops::CrossEntropyOptions { weight: Some(Tensor::ones_dtype(&[2], DType::F64)), ..Default::default() };
    assert!(e(ops::cross_entropy_with(&x, &t, &weight)).starts_with("cross_entropy: a weight must hold one value per class"));
    let batch = ops::NllLossOptions { reduction: ops::Reduction::BatchMean, ..Default::default() };
    assert!(e(ops::nll_loss(&x, &t, &batch)).starts_with("nll_loss: reduction BatchMean"));
    assert!(e(ops::binary_cross_entropy(&x.add_scalar(2.0), &x, None, ops::Reduction::Mean))
        .starts_with("binary_cross_entropy: all elements of input"));
    assert!(e(ops::smooth_l1_loss(&x, &x, ops::Reduction::Mean, -1.0)).starts_with("smooth_l1_loss: beta"));
    assert!(e(ops::huber_loss(&x, &x, ops::Reduction::Mean, 0.0)).starts_with("huber_loss: delta"));
    assert!(e(ops::l1_loss(&x, &x.reshape(&[3, 2]).unwrap(), ops::Reduction::Mean)).starts_with("l1_loss: input and target shapes differ"));
    let pw = Tensor::ones_dtype(&[2], DType::F64);
    assert!(e(ops::binary_cross_entropy_with_logits(&x, &x, None, Some(&pw), ops::Reduction::Mean))
        .starts_with("binary_cross_entropy_with_logits: "));
    // All targets ignored: the mean of nothing is NaN, as PyTorch's.
    let ignored = Tensor::from_vec(vec![-100i64, -100], &[2]).unwrap();
    assert!(ops::cross_entropy(&x, &ignored).unwrap().item().unwrap().is_nan());
}
