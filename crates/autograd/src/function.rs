//! User-defined differentiable ops, like `torch.autograd.Function`: a forward computed on
//! plain data and a backward rule, joined to the same tape as the built-in ops.
//!
//! ```
//! use autograd::{Function, BackwardCtx, Tensor, Result};
//!
//! /// `x^3`, with its derivative `3x^2` written in tape ops (so it has a second order too).
//! struct Cube;
//! impl Function for Cube {
//!     fn name(&self) -> &'static str { "cube" }
//!     fn forward(&self, x: &[&Tensor]) -> Result<Tensor> { x[0].mul(x[0])?.mul(x[0]) }
//!     fn backward(&self, ctx: &BackwardCtx) -> Result<Vec<Option<Tensor>>> {
//!         let x = ctx.input(0);
//!         Ok(vec![Some(ctx.grad_output().mul(&x.mul(x)?.mul_scalar(3.0))?)])
//!     }
//!     fn differentiable_backward(&self) -> bool { true }
//! }
//!
//! let x = Tensor::from_vec(vec![2.0f64], &[1])?.requires_grad_();
//! let y = autograd::apply(Cube, &[&x])?;
//! y.sum().backward()?;
//! assert_eq!(x.grad().unwrap().to_vec::<f64>(), vec![12.0]);
//! # Ok::<(), autograd::Error>(())
//! ```

use crate::error::Result;
use crate::tape::{no_grad, record_first_order_saving, record_saving, BackwardCtx, Saves};
use crate::tensor::Tensor;
use std::sync::Arc;

/// A differentiable op defined by its forward and its gradient rule.
pub trait Function: Send + Sync + 'static {
    /// Shown in errors and in `grad_fn`.
    fn name(&self) -> &'static str;
    /// Computes the output; runs with recording off.
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor>;
    /// One gradient per input (`None` for inputs that need none; see `ctx.needs_grad`).
    fn backward(&self, ctx: &BackwardCtx) -> Result<Vec<Option<Tensor>>>;
    /// Return true if `backward` uses only differentiable tensor ops, which makes double
    /// backward through this op correct. Otherwise double backward is an error naming it.
    fn differentiable_backward(&self) -> bool {
        false
    }
    /// What `backward` reads through `ctx.input(i)` and `ctx.output()`; the tape keeps
    /// only these until the rule has run. Every input and the output unless declared.
    fn saves(&self) -> Saves {
        Saves::ALL
    }
}

/// Runs a [`Function`] on `inputs` and records it on the tape.
pub fn apply<F: Function>(f: F, inputs: &[&Tensor]) -> Result<Tensor> {
    let out = no_grad(|| f.forward(inputs))?;
    let name = f.name();
    let (twice, saves) = (f.differentiable_backward(), f.saves());
    let f = Arc::new(f);
    let rule = move |ctx: &BackwardCtx| f.backward(ctx);
    Ok(if twice { record_saving(name, out, inputs, saves, rule) } else { record_first_order_saving(name, out, inputs, saves, rule) })
}
