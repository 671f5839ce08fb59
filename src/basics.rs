//! The walk-through behind `examples/autograd_basics.rs`: a scalar function and its
//! gradient, accumulation, `no_grad`, a custom op, and a Hessian-vector product. Each
//! step returns its values so the tests can assert them.

use autograd::{apply, grad, no_grad, BackwardCtx, BackwardOptions, Function, Result, Tensor};
use clap::Parser;
use ops::TensorOps;
use std::fmt::Write;

/// The core in five steps: a gradient, accumulation, no_grad, a custom op and a
/// Hessian-vector product.
///
/// No flags of its own: the struct gives `--help`, `--version` and usage errors for
/// anything else.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "autograd_basics", version, long_about = None)]
pub struct Args {}

/// `x^3` as a user-defined op: forward on plain data, derivative `3x^2` in tape ops (so
/// it is differentiable twice).
pub struct Cube;

impl Function for Cube {
    fn name(&self) -> &'static str {
        "cube"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        x[0].mul(x[0])?.mul(x[0])
    }
    fn backward(&self, ctx: &BackwardCtx) -> Result<Vec<Option<Tensor>>> {
        let x = ctx.input(0);
        Ok(vec![Some(ctx.grad_output().mul(&x.mul(x)?.mul_scalar(3.0))?)])
    }
    fn differentiable_backward(&self) -> bool {
        true
    }
}

/// What the walk-through computed.
pub struct Basics {
    pub text: String,
    pub grad_x: Vec<f32>,
    pub accumulated: Vec<f32>,
    pub cube_grad: Vec<f64>,
    pub hvp: Vec<f64>,
}

/// Runs the walk-through, returning the printed text and the key values.
pub fn run() -> Result<Basics> {
    let mut s = String::new();
    // 1. y = sum(x * x + 3x): dy/dx = 2x + 3.
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?.requires_grad_();
    let y = x.mul(&x)?.add(&x.mul_scalar(3.0))?.sum();
    y.backward()?;
    let g = x.grad().expect("x requires grad");
    writeln!(s, "x = {x}\ny = {y}\ndy/dx = 2x + 3 = {g}").unwrap();
    let grad_x = g.to_vec::<f32>();

    // 2. Gradients accumulate until zeroed, as in PyTorch.
    x.mul_scalar(10.0).sum().backward()?;
    let acc = x.grad().expect("x requires grad");
    writeln!(s, "after a second backward of sum(10x) the grad accumulates: {acc}").unwrap();
    let accumulated = acc.to_vec::<f32>();
    x.zero_grad();

    // 3. Nothing is recorded under no_grad.
    let z = no_grad(|| x.mul_scalar(2.0));
    writeln!(s, "under no_grad: {z} (requires_grad = {})", z.requires_grad()).unwrap();

    // 4. A custom op on the same tape.
    let c = Tensor::from_vec(vec![-1.0f64, 0.5, 2.0], &[3])?.requires_grad_();
    apply(Cube, &[&c])?.sum().backward()?;
    let cg = c.grad().expect("c requires grad");
    writeln!(s, "d/dc sum(cube(c)) = 3c^2 = {cg}").unwrap();

    // 5. Hessian-vector product of f(w) = sum(sigmoid(A w)^2): differentiate the gradient.
    let a = Tensor::from_vec(vec![1.0f64, -2.0, 0.5, 3.0, 0.0, 1.0], &[3, 2])?;
    let w = Tensor::from_vec(vec![0.1f64, -0.2], &[2])?.requires_grad_();
    let v = Tensor::from_vec(vec![1.0f64, 0.0], &[2])?;
    let f = a.matmul(&w)?.sigmoid().pow(2.0).sum();
    let gw = grad(&f, &[&w], None, BackwardOptions { retain_graph: true, create_graph: true, ..Default::default() })?[0]
        .clone()
        .expect("w requires grad");
    let hv = grad(&gw.mul(&v)?.sum(), &[&w], None, BackwardOptions::default())?[0].clone().expect("w requires grad");
    writeln!(s, "f(w) = {f}\ngrad f = {gw}\nH v for v = [1, 0]: {hv}").unwrap();
    Ok(Basics { text: s, grad_x, accumulated, cube_grad: cg.to_vec(), hvp: hv.to_vec() })
}
