//! matmul: values against a naive triple loop, gradients (first and second order) by
//! finite differences, a Hessian-vector product against the analytic Hessian, and
//! bitwise determinism across thread counts.

use autograd::testing::{assert_gradcheck, assert_gradgradcheck, broadcastable_pair};
use autograd::{grad, rng, BackwardOptions, DType, Tensor};
use ops::TensorOps;
use proptest::prelude::*;

fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    c
}

#[test]
fn two_by_two_matches_pytorch() {
    // torch.tensor([[1.,2.],[3.,4.]]) @ torch.tensor([[5.,6.],[7.,8.]]) = [[19,22],[43,50]]
    let a = Tensor::from_vec(vec![1.0f32, 2., 3., 4.], &[2, 2]).unwrap();
    let b = Tensor::from_vec(vec![5.0f32, 6., 7., 8.], &[2, 2]).unwrap();
    assert_eq!(a.matmul(&b).unwrap().to_vec::<f32>(), vec![19.0, 22.0, 43.0, 50.0]);
}

#[test]
fn shape_mismatch_names_op_and_shapes() {
    let a = Tensor::zeros(&[2, 3]);
    let b = Tensor::zeros(&[4, 5]);
    let e = a.matmul(&b).unwrap_err().to_string();
    assert_eq!(e, "matmul: cannot multiply ([2, 3] and [4, 5])");
}

#[test]
fn vector_and_batched_shapes_follow_pytorch() {
    let m = Tensor::ones(&[3, 4]);
    let v = Tensor::ones(&[4]);
    assert_eq!(m.matmul(&v).unwrap().shape(), &[3]);
    assert_eq!(Tensor::ones(&[3]).matmul(&m).unwrap().shape(), &[4]);
    assert_eq!(v.matmul(&v).unwrap().shape(), &[] as &[usize]);
    assert_eq!(v.matmul(&v).unwrap().item().unwrap(), 4.0);
    let a = Tensor::ones(&[2, 1, 3, 4]);
    let b = Tensor::ones(&[5, 4, 6]);
    assert_eq!(a.matmul(&b).unwrap().shape(), &[2, 5, 3, 6]);
}

#[test]
fn large_products_match_naive_including_transposed_views() {
    let (m, k, n) = (300, 257, 190);
    let mut r = rng(1);
    let a = Tensor::uniform_dtype(&[m, k], -1.0, 1.0, DType::F64, &mut r);
    let b = Tensor::uniform_dtype(&[k, n], -1.0, 1.0, DType::F64, &mut r);
    let want = naive(&a.to_vec(), &b.to_vec(), m, k, n);
    let got = a.matmul(&b).unwrap().to_vec::<f64>();
    let err = want.iter().zip(&got).map(|(x, y)| (x - y).abs()).fold(0.0, autograd::tensor::nan_max);
    assert!(err < 1e-10, "max error {err}");
    // Same product from transposed storage: (B^T)^T.
    let bt = b.t().unwrap().contiguous();
    let got_t = a.matmul(&bt.t().unwrap()).unwrap().to_vec::<f64>();
    assert_eq!(got, got_t);
}

#[test]
fn results_are_bitwise_identical_at_one_and_two_threads() {
    let mut r = rng(7);
    let a = Tensor::uniform(&[4, 333, 517], -1.0, 1.0, &mut r);
    let b = Tensor::uniform(&[517, 229], -1.0, 1.0, &mut r);
    autograd::set_num_threads(1).unwrap();
    let one = a.matmul(&b).unwrap().to_vec::<f32>();
    autograd::set_num_threads(2).unwrap();
    let two = a.matmul(&b).unwrap().to_vec::<f32>();
    assert!(one.iter().zip(&two).all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn hessian_vector_product_matches_the_analytic_hessian() {
    // f(x) = sum(sigmoid(A x)^2). With s = sigmoid(Ax), u = s, s' = s(1-s):
    // grad = A^T (2 s s'),  H = A^T diag(2 s'^2 + 2 s s'') A,  s'' = s'(1 - 2s).
    let (m, n) = (5, 4);
    let mut r = rng(3);
    let a = Tensor::uniform_dtype(&[m, n], -1.0, 1.0, DType::F64, &mut r);
    let x = Tensor::uniform_dtype(&[n], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
    let v = Tensor::uniform_dtype(&[n], -1.0, 1.0, DType::F64, &mut r);
    let f = a.matmul(&x).unwrap().sigmoid().pow(2.0).sum();
    let g = grad(&f, &[&x], None, BackwardOptions { retain_graph: true, create_graph: true, ..Default::default() }).unwrap()[0]
        .clone()
        .unwrap();
    let gv = g.mul(&v).unwrap().sum();
    let hv = grad(&gv, &[&x], None, BackwardOptions::default()).unwrap()[0].clone().unwrap().to_vec::<f64>();

    let av = a.to_vec::<f64>();
    let xv = x.to_vec::<f64>();
    let mut h = vec![0.0; n * n];
    for i in 0..m {
        let z: f64 = (0..n).map(|j| av[i * n + j] * xv[j]).sum();
        let s = 1.0 / (1.0 + (-z).exp());
        let s1 = s * (1.0 - s);
        let s2 = s1 * (1.0 - 2.0 * s);
        let w = 2.0 * s1 * s1 + 2.0 * s * s2;
        for p in 0..n {
            for q in 0..n {
                h[p * n + q] += av[i * n + p] * w * av[i * n + q];
            }
        }
    }
    let vv = v.to_vec::<f64>();
    for p in 0..n {
        let want: f64 = (0..n).map(|q| h[p * n + q] * vv[q]).sum();
        assert!((want - hv[p]).abs() < 1e-12, "Hv[{p}] = {} but analytic {want}", hv[p]);
    }
}

proptest! {
    #![proptest_config(autograd::testing::config_from_env(48))]

    /// Every kernel path (dot products, panels read in place, packed panels, edge panels,
    /// several depth blocks) against the naive loop, from row-major and transposed storage.
    #[test]
    fn products_match_naive_for_every_layout(
        m in 1usize..40, k in 1usize..300, n in 1usize..150,
        ta in any::<bool>(), tb in any::<bool>(), f64_ in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let a = Tensor::uniform_dtype(&[m, k], -1.0, 1.0, DType::F64, &mut r);
        let b = Tensor::uniform_dtype(&[k, n], -1.0, 1.0, DType::F64, &mut r);
        let want = naive(&a.to_vec(), &b.to_vec(), m, k, n);
        let dtype = if f64_ { DType::F64 } else { DType::F32 };
        let view = |t: &Tensor, transposed: bool| {
            let t = t.to_dtype(dtype);
            if transposed { t.t().unwrap().contiguous().t().unwrap() } else { t }
        };
        let got = view(&a, ta).matmul(&view(&b, tb)).unwrap().to_dtype(DType::F64).to_vec::<f64>();
        let tol = if f64_ { 1e-12 } else { 1e-6 } * k as f64;
        for (w, g) in want.iter().zip(&got) {
            prop_assert!((w - g).abs() <= tol, "{m}x{k}x{n} ta={ta} tb={tb}: want {w}, got {g}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn gradcheck_2d(m in 1usize..5, k in 1usize..5, n in 1usize..5, seed in any::<u64>()) {
        let mut r = rng(seed);
        let a = Tensor::uniform_dtype(&[m, k], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        let b = Tensor::uniform_dtype(&[k, n], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        assert_gradcheck(|v| v[0].matmul(&v[1]), &[a.clone(), b.clone()]);
        assert_gradgradcheck(|v| v[0].matmul(&v[1]), &[a.clone(), b.clone()]);
        // A transposed operand goes to the kernel as strides.
        assert_gradcheck(|v| v[0].t()?.matmul(&v[1].t()?), &[b, a]);
    }

    #[test]
    fn gradcheck_batched_with_broadcast((ba, bb) in broadcastable_pair(2, 3), m in 1usize..4, k in 1usize..4, n in 1usize..4, seed in any::<u64>()) {
        let mut r = rng(seed);
        let sa: Vec<usize> = ba.iter().copied().chain([m, k]).collect();
        let sb: Vec<usize> = bb.iter().copied().chain([k, n]).collect();
        let a = Tensor::uniform_dtype(&sa, -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        let b = Tensor::uniform_dtype(&sb, -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        assert_gradcheck(|v| v[0].matmul(&v[1]), &[a.clone(), b.clone()]);
        assert_gradgradcheck(|v| v[0].matmul(&v[1]), &[a, b]);
    }

    #[test]
    fn gradcheck_vectors(k in 1usize..5, n in 1usize..4, seed in any::<u64>()) {
        let mut r = rng(seed);
        let v = Tensor::uniform_dtype(&[k], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        let m = Tensor::uniform_dtype(&[k, n], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        assert_gradcheck(|x| x[0].matmul(&x[1]), &[v.clone(), m.clone()]);
        assert_gradcheck(|x| x[1].t()?.matmul(&x[0]), &[v.clone(), m]);
        assert_gradgradcheck(|x| x[0].matmul(&x[0]), &[v]);
    }
}

proptest! {
    #![proptest_config(autograd::testing::config_from_env(24))]

    /// `linear` (leading batch dims, with and without bias) against matmul + add, and its
    /// gradients of first and second order by finite differences.
    #[test]
    fn linear_matches_matmul_and_gradchecks(
        batch in autograd::testing::shape(2, 3), in_f in 1usize..5, out_f in 1usize..5, bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let xs: Vec<usize> = batch.iter().copied().chain([in_f]).collect();
        let x = Tensor::uniform_dtype(&xs, -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        let w = Tensor::uniform_dtype(&[out_f, in_f], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        let b = Tensor::uniform_dtype(&[out_f], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        let mut inputs = vec![x.clone(), w.clone()];
        if bias {
            inputs.push(b.clone());
        }
        let f = |v: &[Tensor]| ops::linear(&v[0], &v[1], v.get(2));
        let want = x.matmul(&w.t().unwrap()).unwrap();
        let want = if bias { want.add(&b).unwrap() } else { want };
        let got = f(&inputs).unwrap();
        prop_assert_eq!(got.shape(), want.shape());
        for (g, w) in got.to_vec::<f64>().iter().zip(want.to_vec::<f64>()) {
            prop_assert!((g - w).abs() < 1e-12);
        }
        assert_gradcheck(f, &inputs);
        assert_gradgradcheck(f, &inputs);
    }
}

#[test]
fn linear_rejects_mismatched_shapes_naming_the_op() {
    let x = Tensor::zeros(&[2, 3]);
    let e = ops::linear(&x, &Tensor::zeros(&[4, 5]), None).unwrap_err().to_string();
    assert!(e.starts_with("linear:") && e.contains("[2, 3]") && e.contains("[4, 5]"), "{e}");
    let e = ops::linear(&x, &Tensor::zeros(&[4, 3]), Some(&Tensor::zeros(&[3]))).unwrap_err().to_string();
    assert!(e.starts_with("linear:") && e.contains("bias"), "{e}");
}
