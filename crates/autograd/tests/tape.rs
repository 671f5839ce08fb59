//! Behaviour of the tape: accumulation, no_grad, detach, retain_graph, seeds, errors,
//! and higher-order gradients.

use autograd::{grad, no_grad, BackwardOptions, Error, Parameter, Tensor};

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

#[test]
fn scalar_backward_gives_the_derivative() {
    // y = x^2 + 3x at x = 2: dy/dx = 7.
    let x = t(&[2.0], &[]).requires_grad_();
    let y = x.mul(&x).unwrap().add(&x.mul_scalar(3.0)).unwrap();
    y.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>(), vec![7.0]);
}

#[test]
fn gradients_accumulate_until_zeroed() {
    let x = t(&[1.0, 2.0], &[2]).requires_grad_();
    for _ in 0..3 {
        x.mul_scalar(2.0).sum().backward().unwrap();
    }
    assert_eq!(x.grad().unwrap().to_vec::<f64>(), vec![6.0, 6.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
    x.mul_scalar(5.0).sum().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>(), vec![5.0, 5.0]);
}

#[test]
fn a_tensor_used_twice_gets_both_contributions() {
    // y = x * x uses x on both sides; and z = y + x adds a third path.
    let x = t(&[3.0], &[1]).requires_grad_();
    let z = x.mul(&x).unwrap().add(&x).unwrap().sum();
    z.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>(), vec![7.0]);
}

#[test]
fn no_grad_records_nothing() {
    let x = t(&[1.0], &[1]).requires_grad_();
    let y = no_grad(|| x.mul_scalar(2.0));
    assert!(!y.requires_grad());
    assert!(matches!(y.sum().backward(), Err(Error::NoGraph)));
    // Recording resumes after the scope.
    assert!(x.mul_scalar(2.0).requires_grad());
}

#[test]
fn detach_cuts_the_graph() {
    let x = t(&[2.0], &[1]).requires_grad_();
    let y = x.mul(&x.detach()).unwrap().sum(); // d/dx = detached x = 2
    y.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>(), vec![2.0]);
}

#[test]
fn non_scalar_backward_needs_a_seed() {
    let x = t(&[1.0, 2.0], &[2]).requires_grad_();
    let y = x.mul_scalar(3.0);
    let err = y.backward().unwrap_err();
    assert!(matches!(err, Error::NonScalarBackward(_)));
    assert!(err.to_string().contains("[2]"), "{err}");
    let seed = t(&[1.0, 10.0], &[2]);
    y.backward_with(Some(&seed), BackwardOptions::default()).unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>(), vec![3.0, 30.0]);
}

#[test]
fn second_backward_through_consumed_graph_is_an_error_unless_retained() {
    let x = t(&[1.0, 2.0], &[2]).requires_grad_();
    let y = x.exp().sum();
    y.backward().unwrap();
    let err = y.backward().unwrap_err();
    assert!(matches!(err, Error::GraphConsumed { .. }), "{err}");
    assert!(err.to_string().contains("retain_graph"), "{err}");

    let x = t(&[0.0], &[1]).requires_grad_();
    let y = x.exp().sum();
    let keep = BackwardOptions { retain_graph: true, ..Default::default() };
    y.backward_with(None, keep).unwrap();
    y.backward_with(None, keep).unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>(), vec![2.0]);
}

#[test]
fn parameter_gradients_add_up_across_uses_and_reset() {
    let p = Parameter::new(&t(&[1.0, -1.0], &[2]));
    let a = p.tensor().mul_scalar(2.0).sum();
    let b = p.tensor().mul_scalar(3.0).sum();
    a.add(&b).unwrap().backward().unwrap();
    assert_eq!(p.grad().unwrap().to_vec::<f64>(), vec![5.0, 5.0]);
    p.update::<f64>(|w| w.iter_mut().for_each(|v| *v -= 1.0)).unwrap();
    assert_eq!(p.data().to_vec::<f64>(), vec![0.0, -2.0]);
    p.zero_grad();
    assert!(p.grad().is_none());
}

#[test]
fn grad_returns_without_touching_leaves() {
    let x = t(&[1.0, 2.0], &[2]).requires_grad_();
    let y = x.pow(3.0).sum();
    let g = grad(&y, &[&x], None, BackwardOptions::default()).unwrap();
    assert_eq!(g[0].as_ref().unwrap().to_vec::<f64>(), vec![3.0, 12.0]);
    assert!(x.grad().is_none());
}

#[test]
fn second_derivative_of_a_scalar_function() {
    // f = x^3: f' = 3x^2, f'' = 6x.
    let x = t(&[2.0], &[]).requires_grad_();
    let y = x.pow(3.0);
    let g = grad(&y, &[&x], None, BackwardOptions { retain_graph: true, create_graph: true, ..Default::default() }).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(g.item().unwrap(), 12.0);
    let gg = grad(&g, &[&x], None, BackwardOptions::default()).unwrap()[0].clone().unwrap();
    assert_eq!(gg.item().unwrap(), 12.0);
}

#[test]
fn first_order_only_ops_refuse_double_backward_by_name() {
    let x = t(&[1.0, 2.0], &[2]).requires_grad_();
    // A custom op whose rule is declared first-order only.
    let y = autograd::record_first_order("square_kernel", x.mul(&x).unwrap().detach(), &[&x], |ctx| {
        Ok(vec![Some(ctx.grad_output().mul(&ctx.input(0).mul_scalar(2.0))?)])
    })
    .sum();
    let g = grad(&y, &[&x], None, BackwardOptions { retain_graph: true, create_graph: true, ..Default::default() }).unwrap()[0]
        .clone()
        .unwrap();
    assert_eq!(g.to_vec::<f64>(), vec![2.0, 4.0]);
    let err = g.sum().backward().unwrap_err();
    assert_eq!(err, Error::NoSecondOrder { op: "square_kernel" });
    assert!(err.to_string().contains("square_kernel"));
}

#[test]
fn cast_between_dtypes_is_differentiable() {
    let x = t(&[1.5], &[1]).requires_grad_();
    let y = x.to_dtype(autograd::DType::F32).mul_scalar(2.0).to_dtype(autograd::DType::F64).sum();
    y.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>(), vec![2.0]);
    assert_eq!(x.grad().unwrap().dtype(), autograd::DType::F64);
}

#[test]
fn a_frozen_parameter_is_a_constant_and_converts_between_floats() {
    let p = autograd::Parameter::new(&Tensor::full(&[2], 3.0));
    let x = Tensor::full(&[2], 2.0).requires_grad_();
    p.requires_grad_(false);
    assert!(!p.requires_grad() && !p.tensor().requires_grad());
    let y = x.mul(&p.tensor()).unwrap().sum();
    y.backward().unwrap();
    assert!(p.grad().is_none(), "no gradient for a frozen parameter");
    assert_eq!(x.grad().unwrap().to_vec::<f32>(), [3.0, 3.0]);
    p.requires_grad_(true);
    x.mul(&p.tensor()).unwrap().sum().backward().unwrap();
    assert_eq!(p.grad().unwrap().to_vec::<f32>(), [2.0, 2.0]);
    // to f64 and back; the stale gradient goes.
    p.convert(autograd::DType::F64).unwrap();
    assert_eq!((p.dtype(), p.grad().is_none()), (autograd::DType::F64, true));
    assert!(p.convert(autograd::DType::I64).unwrap_err().to_string().starts_with("Parameter::convert: "));
    assert!(p.same_as(&p.clone()) && !p.same_as(&autograd::Parameter::new(&Tensor::zeros(&[2]))));
}

#[test]
fn grad_with_parameters_equals_what_backward_accumulates() {
    // Two uses of w (each `tensor()` is a new handle on the same gradient slot) and a bias.
    let w = Parameter::new(&t(&[0.5, -1.5, 2.0, 0.25], &[2, 2]));
    let b = Parameter::new(&t(&[0.1, -0.2], &[2]));
    let x = t(&[1.0, 2.0, -3.0, 0.5], &[2, 2]);
    let forward = || {
        let h = x.mul(&w.tensor()).unwrap().add(&b.tensor()).unwrap().tanh();
        h.mul(&w.tensor()).unwrap().sum()
    };
    let y = forward();
    let gs = grad(&y, &[&w.tensor(), &b.tensor()], None, BackwardOptions::default()).unwrap();
    assert!(w.grad().is_none() && b.grad().is_none(), "grad leaves .grad alone");
    forward().backward().unwrap();
    assert_eq!(gs[0].as_ref().unwrap().to_vec::<f64>(), w.grad().unwrap().to_vec::<f64>());
    assert_eq!(gs[1].as_ref().unwrap().to_vec::<f64>(), b.grad().unwrap().to_vec::<f64>());
}

#[test]
fn an_unused_input_is_an_error_unless_allowed() {
    let x = t(&[1.0, 2.0], &[2]).requires_grad_();
    let unused = t(&[3.0], &[1]).requires_grad_();
    let p = Parameter::new(&t(&[4.0], &[1]));
    let y = x.mul(&x).unwrap().sum();
    let keep = BackwardOptions { retain_graph: true, ..Default::default() };
    for z in [&unused, &p.tensor()] {
        let e = grad(&y, &[&x, z], None, keep).unwrap_err();
        assert!(e.to_string().contains("not used"), "{e}");
    }
    let allow = BackwardOptions { retain_graph: true, allow_unused: true, ..Default::default() };
    let gs = grad(&y, &[&x, &unused], None, allow).unwrap();
    assert_eq!(gs[0].as_ref().unwrap().to_vec::<f64>(), vec![2.0, 4.0]);
    assert!(gs[1].is_none());
    // An intermediate result off the output's path is unused too.
    let off_path = x.exp();
    assert!(grad(&y, &[&off_path], None, keep).is_err());
    // The output itself and an intermediate on its path are used.
    let h = x.mul_scalar(3.0);
    let y2 = h.sum();
    let gs = grad(&y2, &[&h, &y2], None, keep).unwrap();
    assert_eq!(gs[0].as_ref().unwrap().to_vec::<f64>(), vec![1.0, 1.0]);
    assert_eq!(gs[1].as_ref().unwrap().to_vec::<f64>(), vec![1.0]);
}

#[test]
fn a_used_input_whose_rules_give_no_gradient_gets_zeros() {
    // A custom op whose rule returns no gradient: the input is used, so it gets zeros,
    // never a silent `None`.
    let x = t(&[1.0, -2.0], &[2]).requires_grad_();
    let y = autograd::record("constant_op", x.detach().sign(), &[&x], |_| Ok(vec![None])).sum();
    let g = grad(&y, &[&x], None, BackwardOptions::default()).unwrap();
    assert_eq!(g[0].as_ref().unwrap().to_vec::<f64>(), vec![0.0, 0.0]);
}
