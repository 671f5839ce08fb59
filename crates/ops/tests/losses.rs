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
