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
        // A middle or last dim, as a convolution crops its weight's border taps.
        let last = rank - 1;
        let n1 = s[1];
        let s1 = (seed as usize / 7) % n1;
        let nl = if last == 1 { n1 - s1 } else { s[last] };
        let sl = (seed as usize / 11) % nl;
        both(|v| v[0].narrow(1, s1, n1 - s1)?.narrow(last as isize, 0, nl - sl), &[x.clone()]);
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

/// Distinct values whose absolute values are distinct too (`k gap + gap / 4`), none near
/// 0: for extremes and the inf-norm, whose gradient is undefined at ties.
fn distinct_abs(shape: Vec<usize>) -> impl Strategy<Value = Tensor> {
    distinct_tensor_f64(shape, 0.2).prop_map(|t| t.add_scalar(0.05))
}

/// A random subset of `0..rank` as dims (empty means every dim for the new reductions).
fn some_dims(rank: usize, seed: u64) -> Vec<isize> {
    (0..rank as isize).filter(|d| (seed >> d) & 1 == 1).collect()
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn more_unary_ops(x in shape(3, 4).prop_flat_map(away_from_zero)) {
        let x = x.requires_grad_();
        both(|v| Ok(v[0].abs().rsqrt()), &[x.clone()]);
        both(|v| Ok(v[0].abs().log1p()), &[x.clone()]);
        both(|v| Ok(v[0].mul_scalar(-0.9).log1p()), &[x.mul_scalar(0.5).requires_grad_()]);
        both(|v| Ok(v[0].expm1()), &[x.clone()]);
        both(|v| Ok(v[0].sin()), &[x.clone()]);
        both(|v| Ok(v[0].cos()), &[x.clone()]);
        both(|v| Ok(v[0].log_sigmoid()), &[x.mul_scalar(5.0).requires_grad_()]);
        both(|v| Ok(v[0].clamp_min(-1.1)), &[x.clone()]);
        both(|v| Ok(v[0].clamp_max(1.1)), &[x.clone()]);
    }

    #[test]
    fn pow_maximum_minimum((sa, sb) in broadcastable_pair(3, 3), seed in any::<u64>()) {
        let mut r = autograd::rng(seed);
        let base = Tensor::uniform_dtype(&sa, 0.3, 2.0, autograd::DType::F64, &mut r).requires_grad_();
        let exp = Tensor::uniform_dtype(&sb, -2.0, 2.0, autograd::DType::F64, &mut r).requires_grad_();
        both(|v| v[0].pow_tensor(&v[1]), &[base.clone(), exp.clone()]);
        // Continuous draws: a tie (or one within the step of the finite differences) has
        // probability about 1e-6.
        let a = Tensor::uniform_dtype(&sa, -2.0, 2.0, autograd::DType::F64, &mut r).requires_grad_();
        both(|v| v[0].maximum(&v[1]), &[a.clone(), exp.clone()]);
        both(|v| v[0].minimum(&v[1]), &[a.clone(), exp.clone()]);
        both(|v| v[0].maximum(&v[1])?.mul(&v[0].minimum(&v[1])?), &[a, exp]);
    }

    #[test]
    fn variance_products_and_running_sums(s in shape(3, 4).prop_filter("rank >= 1", |s| !s.is_empty()), seed in any::<u64>(), keep in any::<bool>()) {
        let rank = s.len();
        let x = Tensor::uniform_dtype(&s, -2.0, 2.0, autograd::DType::F64, &mut autograd::rng(seed)).requires_grad_();
        let dims = some_dims(rank, seed);
        let dim = (seed % rank as u64) as isize;
        let n: usize = if dims.is_empty() { s.iter().product() } else { dims.iter().map(|&d| s[d as usize]).product() };
        // Keep N - correction > 0 (else the result is NaN or infinite, as PyTorch's).
        let c = if n > 1 { 1.0 } else { 0.0 };
        both(|v| v[0].var_dims(&dims, c, keep), &[x.clone()]);
        both(|v| v[0].var(0.0), &[x.clone()]);
        both(|v| v[0].std_dims(&dims, c, keep), &[x.clone()]);
        both(|v| v[0].cumsum(dim), &[x.clone()]);
        both(|v| v[0].cumsum(-1)?.mul(&v[0]), &[x.clone()]);
        // Products away from zero (the rule g prod / x is differentiable there), of at
        // most 6 factors: a product of 64 can reach 1e20, where finite differences are noise.
        let y = x.abs().add_scalar(0.3).mul(&x.sign()).unwrap().detach().requires_grad_();
        both(|v| v[0].prod_dim(dim, keep), &[y.clone()]);
        let few = y.numel().min(6);
        both(|v| v[0].reshape(&[-1])?.narrow(0, 0, few)?.prod(), &[y.clone()]);
        both(|v| v[0].norm_dims(1.0, &dims, keep), &[y.clone()]);
        both(|v| v[0].norm_dims(2.0, &dims, keep), &[y.clone()]);
        both(|v| v[0].norm(2.0), &[y]);
    }

    #[test]
    fn extremes(x in shape(3, 4).prop_filter("rank >= 1", |s| !s.is_empty()).prop_flat_map(distinct_abs), seed in any::<u64>(), keep in any::<bool>()) {
        let rank = x.rank();
        let dims = some_dims(rank, seed);
        let dim = (seed % rank as u64) as isize;
        let x = x.requires_grad_();
        both(|v| v[0].max(), &[x.clone()]);
        both(|v| v[0].min(), &[x.clone()]);
        both(|v| v[0].amax(&dims, keep), &[x.clone()]);
        both(|v| v[0].amin(&dims, keep), &[x.clone()]);
        both(|v| Ok(v[0].min_dim(dim, keep)?.0), &[x.clone()]);
        both(|v| v[0].norm_dims(f64::INFINITY, &dims, keep), &[x.clone()]);
    }
}

#[test]
fn prod_gradients_with_zeros_are_exact_and_first_order_only() {
    // d prod / dx_i is the product of the others: nonzero only at a lone zero.
    let x = Tensor::from_vec(vec![2.0f64, 0.0, 3.0, 0.0, 0.0, 5.0], &[2, 3]).unwrap().requires_grad_();
    x.prod_dim(1, false).unwrap().sum().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>(), vec![0.0, 6.0, 0.0, 0.0, 0.0, 0.0]);
    // A second order through a zero is an error naming prod, never a silent zero.
    let y = x.prod().unwrap();
    let opts = autograd::BackwardOptions { create_graph: true, retain_graph: true, ..Default::default() };
    let g = autograd::grad(&y, &[&x], None, opts).unwrap()[0].clone().unwrap();
    let e = g.sum().backward().unwrap_err().to_string();
    assert!(e.contains("prod"), "{e}");
}

#[test]
fn std_and_norm_have_zero_gradient_at_zero() {
    let fs: [fn(&Tensor) -> autograd::Result<Tensor>; 2] = [|t| t.std(1.0), |t| t.norm(2.0)];
    for f in fs {
        let x = Tensor::from_vec(vec![0.0f64; 3], &[3]).unwrap().requires_grad_();
        let y = f(&x).unwrap();
        let opts = autograd::BackwardOptions { create_graph: true, retain_graph: true, ..Default::default() };
        let g = autograd::grad(&y, &[&x], None, opts).unwrap()[0].clone().unwrap();
        assert_eq!(g.to_vec::<f64>(), vec![0.0; 3]);
        // And the second order is finite too (no infinity inside the rule).
        let h = autograd::grad(&g.sum(), &[&x], None, autograd::BackwardOptions::default()).unwrap()[0].clone();
        assert!(h.is_none_or(|h| h.all_finite()));
    }
}
