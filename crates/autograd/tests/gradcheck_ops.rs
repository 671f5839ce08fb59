//! Every differentiable op of the core, gradchecked (first and second order) in f64 over
//! random shapes with proptest. Values are kept away from kinks (abs, relu, clamp) and
//! from ties (max).

use autograd::testing::{assert_gradcheck, assert_gradgradcheck, broadcastable_pair, distinct_tensor_f64, shape};
use autograd::Tensor;
use proptest::prelude::*;

fn cfg() -> ProptestConfig {
    ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() }
}

/// Values in [0.2, 2] with random signs: never near 0 (the kink of abs/relu).
fn away_from_zero(shape: Vec<usize>) -> impl Strategy<Value = Tensor> {
    let n: usize = shape.iter().product();
    (prop::collection::vec(0.2f64..2.0, n), prop::collection::vec(any::<bool>(), n)).prop_map(move |(v, s)| {
        let v: Vec<f64> = v.iter().zip(&s).map(|(&x, &neg)| if neg { -x } else { x }).collect();
        Tensor::from_vec(v, &shape).unwrap()
    })
}

fn both(f: impl Fn(&[Tensor]) -> autograd::Result<Tensor> + Copy, inputs: &[Tensor]) {
    assert_gradcheck(f, inputs);
    assert_gradgradcheck(f, inputs);
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn unary_ops(x in shape(3, 4).prop_flat_map(away_from_zero)) {
        let x = x.requires_grad_();
        both(|v| Ok(v[0].neg()), &[x.clone()]);
        both(|v| Ok(v[0].exp()), &[x.clone()]);
        both(|v| Ok(v[0].abs().log()), &[x.clone()]);
        both(|v| Ok(v[0].abs().sqrt()), &[x.clone()]);
        both(|v| Ok(v[0].abs().pow(1.7)), &[x.clone()]);
        both(|v| Ok(v[0].pow(3.0)), &[x.clone()]);
        both(|v| Ok(v[0].sigmoid()), &[x.clone()]);
        both(|v| Ok(v[0].tanh()), &[x.clone()]);
        both(|v| Ok(v[0].relu()), &[x.clone()]);
        both(|v| Ok(v[0].abs()), &[x.clone()]);
        both(|v| Ok(v[0].add_scalar(0.5).mul_scalar(-1.5)), &[x.clone()]);
        // 0.2 <= |x| <= 2; clamp bounds at +-1.1 may still hit a value exactly only with
        // probability zero.
        both(|v| Ok(v[0].clamp(-1.1, 1.1)), &[x.clone()]);
    }

    #[test]
    fn binary_ops_with_broadcasting((sa, sb) in broadcastable_pair(3, 3), seed in any::<u64>()) {
        let mut r = autograd::rng(seed);
        let a = Tensor::uniform_dtype(&sa, -2.0, 2.0, autograd::DType::F64, &mut r).requires_grad_();
        // Divisors away from zero.
        let b = Tensor::uniform_dtype(&sb, 0.5, 2.0, autograd::DType::F64, &mut r).requires_grad_();
        both(|v| v[0].add(&v[1]), &[a.clone(), b.clone()]);
        both(|v| v[0].sub(&v[1]), &[a.clone(), b.clone()]);
        both(|v| v[0].mul(&v[1]), &[a.clone(), b.clone()]);
        both(|v| v[0].div(&v[1]), &[a.clone(), b.clone()]);
        both(|v| v[1].div(&v[0].abs().add_scalar(0.5)), &[a.clone(), b.clone()]);
    }

    #[test]
    fn reductions(s in shape(4, 3).prop_filter("rank >= 1", |s| !s.is_empty()), dims_seed in any::<u64>(), keep in any::<bool>()) {
        let rank = s.len();
        let x = Tensor::uniform_dtype(&s, -2.0, 2.0, autograd::DType::F64, &mut autograd::rng(dims_seed)).requires_grad_();
        let dims: Vec<isize> = (0..rank as isize).filter(|d| (dims_seed >> d) & 1 == 1).collect();
        let dim = (dims_seed % rank as u64) as isize - rank as isize; // a negative dim
        both(|v| Ok(v[0].sum()), &[x.clone()]);
        both(|v| Ok(v[0].mean()), &[x.clone()]);
        both(|v| v[0].sum_dims(&dims, keep), &[x.clone()]);
        both(|v| v[0].mean_dims(&dims, keep), &[x.clone()]);
        both(|v| v[0].logsumexp(dim, keep), &[x.clone()]);
        both(|v| v[0].softmax(dim), &[x.clone()]);
        both(|v| v[0].log_softmax(dim), &[x.clone()]);
    }

    #[test]
    fn max_along_a_dim(x in shape(3, 4).prop_filter("rank >= 1", |s| !s.is_empty()).prop_flat_map(|s| distinct_tensor_f64(s, 0.1)), d in 0usize..3, keep in any::<bool>()) {
        let dim = (d % x.rank()) as isize;
        let x = x.requires_grad_();
        both(|v| Ok(v[0].max_dim(dim, keep)?.0), &[x]);
    }

    #[test]
    fn shape_ops(s in shape(3, 4).prop_filter("rank >= 2", |s| s.len() >= 2), seed in any::<u64>()) {
        let x = Tensor::uniform_dtype(&s, -1.0, 1.0, autograd::DType::F64, &mut autograd::rng(seed)).requires_grad_();
        let rank = s.len();
        both(|v| v[0].reshape(&[-1]), &[x.clone()]);
        both(|v| Ok(v[0].transpose(0, -1)?.mul_scalar(2.0)), &[x.clone()]);
        let perm: Vec<isize> = (0..rank as isize).rev().collect();
        both(|v| v[0].permute(&perm)?.contiguous().reshape(&[-1]), &[x.clone()]);
        let len0 = s[0];
        let start = (seed as usize) % len0;
        both(|v| v[0].narrow(0, start, len0 - start), &[x.clone()]);
        both(|v| Tensor::cat(&[&v[0], &v[0].mul_scalar(3.0)], -1), &[x.clone()]);
        both(|v| Tensor::stack(&[&v[0], &v[0].exp()], 1), &[x.clone()]);
        both(|v| v[0].flatten(0, 1), &[x.clone()]);
        both(|v| v[0].unsqueeze(1)?.squeeze(1), &[x.clone()]);
        let mut big = vec![2usize];
        big.extend_from_slice(&s);
        both(|v| v[0].expand(&big), &[x.clone()]);
    }

    #[test]
    fn gather_and_scatter(rows in 1usize..4, cols in 2usize..5, seed in any::<u64>()) {
        let mut r = autograd::rng(seed);
        let x = Tensor::uniform_dtype(&[rows, cols], -1.0, 1.0, autograd::DType::F64, &mut r).requires_grad_();
        let idx: Vec<i64> = (0..rows * 2).map(|i| ((seed as usize / (i + 1)) % cols) as i64).collect();
        let idx = Tensor::from_vec(idx, &[rows, 2]).unwrap();
        both(|v| v[0].gather(1, &idx), &[x.clone()]);
        let src = Tensor::uniform_dtype(&[rows, 2], -1.0, 1.0, autograd::DType::F64, &mut r).requires_grad_();
        both(|v| v[0].scatter_add(1, &idx, &v[1]), &[x, src]);
    }
}
