//! What a tape entry saves (issue 25): only what its rule declared, readable through
//! `BackwardCtx`, freed once the rule has run; the output under `create_graph`; anomaly
//! mode's checks at record time. (The byte counts are in the root's `tests/memory.rs`.)

use autograd::testing::{assert_gradcheck, assert_gradgradcheck};
use autograd::{grad, record_saving, BackwardCtx, BackwardOptions, DType, Error, Function, Saves, Tensor};

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

fn keep() -> BackwardOptions {
    BackwardOptions { retain_graph: true, create_graph: true, ..Default::default() }
}

#[test]
fn saves_names_inputs_and_the_output() {
    let s = Saves::input(0).and_input(2);
    assert!(s.saves_input(0) && !s.saves_input(1) && s.saves_input(2) && !s.saves_output());
    assert!(Saves::ALL.saves_input(100) && Saves::ALL.saves_output());
    assert!(Saves::INPUTS.saves_input(7) && !Saves::INPUTS.saves_output());
    assert!(!Saves::NOTHING.saves_input(0) && Saves::OUTPUT.saves_output());
    assert_eq!(Saves::NOTHING.and_input_if(1, false), Saves::NOTHING);
    // Past input 63 a declaration saves every input (never fewer than asked).
    assert!(Saves::input(64).saves_input(3));
}

/// `a * c + b` with a rule that reads `a` and `c` only: the saved inputs are found by
/// their position among all the inputs, and the unsaved one's shape is still known.
#[test]
fn a_rule_reads_the_inputs_it_saved_and_every_input_shape() {
    let (a, b, c) = (t(&[1.0, 2.0], &[2]).requires_grad_(), t(&[3.0, 4.0], &[2]).requires_grad_(), t(&[5.0, 6.0], &[2]).requires_grad_());
    let out = a.detach().mul(&c.detach()).unwrap().add(&b.detach()).unwrap();
    let y = record_saving("fma", out, &[&a, &b, &c], Saves::input(0).and_input(2), |ctx: &BackwardCtx| {
        assert_eq!((ctx.num_inputs(), ctx.input_shape(1), ctx.input_dtype(1)), (3, &[2usize][..], DType::F64));
        let g = ctx.grad_output();
        Ok(vec![Some(g.mul(ctx.input(2))?), Some(g.clone()), Some(g.mul(ctx.input(0))?)])
    });
    y.sum().backward().unwrap();
    assert_eq!(a.grad().unwrap().to_vec::<f64>(), [5.0, 6.0]);
    assert_eq!(b.grad().unwrap().to_vec::<f64>(), [1.0, 1.0]);
    assert_eq!(c.grad().unwrap().to_vec::<f64>(), [1.0, 2.0]);
}

#[test]
#[should_panic(expected = "mystery: the gradient rule reads input 0, which the op did not save")]
fn a_rule_reading_an_input_it_did_not_declare_names_the_op() {
    let x = t(&[1.0], &[1]).requires_grad_();
    let y = record_saving("mystery", x.detach(), &[&x], Saves::NOTHING, |ctx| Ok(vec![Some(ctx.input(0).clone())]));
    let _ = y.sum().backward();
}

#[test]
#[should_panic(expected = "mystery: the gradient rule reads the output, which the op did not save")]
fn a_rule_reading_an_output_it_did_not_declare_names_the_op() {
    let x = t(&[1.0], &[1]).requires_grad_();
    let y = record_saving("mystery", x.detach(), &[&x], Saves::input(0), |ctx| Ok(vec![Some(ctx.output().clone())]));
    let _ = y.sum().backward();
}

/// `exp` written as a custom op that saves only its output: under `create_graph` the
/// output a rule reads is on the tape (as a twin entry's result), so the second
/// derivative is right.
#[test]
fn the_saved_output_is_differentiable_under_create_graph() {
    struct Exp;
    impl Function for Exp {
        fn name(&self) -> &'static str {
            "my_exp"
        }
        fn forward(&self, x: &[&Tensor]) -> autograd::Result<Tensor> {
            Ok(x[0].exp())
        }
        fn backward(&self, ctx: &BackwardCtx) -> autograd::Result<Vec<Option<Tensor>>> {
            Ok(vec![Some(ctx.grad_output().mul(ctx.output())?)])
        }
        fn differentiable_backward(&self) -> bool {
            true
        }
        fn saves(&self) -> Saves {
            Saves::OUTPUT
        }
    }
    let x = t(&[0.5, -1.0], &[2]).requires_grad_();
    let y = autograd::apply(Exp, &[&x]).unwrap().sum();
    let g = grad(&y, &[&x], None, keep()).unwrap()[0].clone().unwrap();
    let gg = grad(&g.sum(), &[&x], None, BackwardOptions::default()).unwrap()[0].clone().unwrap();
    let e: Vec<f64> = [0.5f64, -1.0].iter().map(|v| v.exp()).collect();
    assert_eq!(g.to_vec::<f64>(), e);
    assert_eq!(gg.to_vec::<f64>(), e);
    assert_gradgradcheck(|v| autograd::apply(Exp, &[&v[0]]), &[x]);
}

/// The library's ops that save only their output, first and second order.
#[test]
fn ops_that_save_their_output_gradcheck_twice() {
    let x = t(&[0.3, 1.7, 0.9], &[3]).requires_grad_();
    for f in [Tensor::exp, Tensor::sqrt, Tensor::rsqrt, Tensor::expm1, Tensor::sigmoid, Tensor::tanh, Tensor::relu] {
        assert_gradcheck(|v| Ok(f(&v[0])), &[x.clone()]);
        assert_gradgradcheck(|v| Ok(f(&v[0])), &[x.clone()]);
    }
    // Each side of a product saves the other, only when that other needs a gradient.
    let c = t(&[2.0, -1.0, 0.5], &[3]);
    assert_gradgradcheck(|v| v[0].mul(&c)?.div(&c.add_scalar(3.0)), &[x.clone()]);
    assert_gradgradcheck(|v| c.div(&v[0]), &[x]);
}

#[test]
fn a_consumed_graph_stays_consumed_and_a_retained_one_runs_again() {
    let x = t(&[1.0, 2.0], &[2]).requires_grad_();
    let y = x.exp().relu().sum();
    y.backward_with(None, BackwardOptions { retain_graph: true, ..Default::default() }).unwrap();
    y.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>(), [2.0 * 1f64.exp(), 2.0 * 2f64.exp()]);
    assert!(matches!(y.backward().unwrap_err(), Error::GraphConsumed { .. }));
}

#[test]
fn anomaly_mode_checks_outputs_as_they_are_recorded() {
    let x = t(&[1.0, 0.0], &[2]).requires_grad_();
    // Recorded with anomaly mode off: nothing was checked, so nothing is reported.
    let quiet = x.log().exp().sum();
    autograd::set_detect_anomaly(true);
    let loud = x.mul_scalar(2.0).log().exp().sum();
    let checked = autograd::check_finite_graph(&loud);
    let unchecked = autograd::check_finite_graph(&quiet);
    let e = loud.backward().unwrap_err();
    autograd::set_detect_anomaly(false);
    // log is the second op of its graph (position 1), and the first non-finite one.
    assert!(matches!(&checked, Err(Error::Anomaly { op: "log", position: 1, .. })), "{checked:?}");
    assert_eq!(checked.unwrap_err(), e);
    assert!(unchecked.is_ok());
}
