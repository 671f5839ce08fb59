//! Layer normalisation (`F.layer_norm`) and group normalisation (`F.group_norm`): each
//! sample's values are normalised by their own mean and biased variance, over the last
//! dims (layer norm) or over each group of channels (group norm), then scaled and
//! shifted by per-element (layer norm) or per-channel (group norm) affine weights.
//!
//! Both are one op over a `[A, G, Cg, S]` view of the input, normalised over its last two
//! dims, with weights `[G Cg]` (layer norm: `A` the leading dims, `G = 1`, `Cg` the
//! normalised elements, `S = 1`; group norm: `A = N`, `Cg = C / G`, `S` the spatial
//! size). The forward and first-order backward are the row loops of `cpu/norm.rs`; under
//! `create_graph` the rule is composed of tape ops instead, so it is differentiable again.
//! The maths is in docs/gradients.md ("Layer and group normalisation").

use crate::cpu::norm::{self as kernels, Rows};
use autograd::{record, Error, Result, Tensor};

/// Checks an affine parameter's shape and dtype.
fn check_param(op: &'static str, what: &str, p: Option<&Tensor>, x: &Tensor, want: &[usize]) -> Result<()> {
    let Some(p) = p else { return Ok(()) };
    if p.shape() != want {
        return Err(Error::invalid(op, format!("{what} must have shape {}, got {} (input {})", fmt(want), fmt(p.shape()), fmt(x.shape()))));
    }
    if p.dtype() != x.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: x.dtype(), rhs: p.dtype() });
    }
    Ok(())
}

fn fmt(s: &[usize]) -> String {
    autograd::error::fmt_shape(s)
}

/// `F.layer_norm(x, normalized_shape, weight, bias, eps)`: normalises over the trailing
/// dims that `normalized_shape` names (the input's shape must end with it); `weight` and
/// `bias`, if given, have that shape.
pub fn layer_norm(x: &Tensor, normalized_shape: &[usize], weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    const OP: &str = "layer_norm";
    x.check_float(OP)?;
    let (r, k) = (x.rank(), normalized_shape.len());
    if k == 0 || k > r || x.shape()[r - k..] != *normalized_shape {
        return Err(Error::invalid(
            OP,
            format!(
                "given normalized_shape={}, expected an input of shape [*, {}], got {}",
                fmt(normalized_shape),
                fmt(normalized_shape).trim_matches(['[', ']']),
                fmt(x.shape())
            ),
        ));
    }
    check_param(OP, "weight", weight, x, normalized_shape)?;
    check_param(OP, "bias", bias, x, normalized_shape)?;
    let d: usize = normalized_shape.iter().product();
    let a: usize = x.shape()[..r - k].iter().product();
    let view = [a, 1, d, 1];
    let wv = weight.map(|w| w.reshape_to(&[d])).transpose()?;
    let bv = bias.map(|b| b.reshape_to(&[d])).transpose()?;
    norm_rows(OP, &x.reshape_to(&view)?, wv.as_ref(), bv.as_ref(), eps)?.reshape_to(x.shape())
}

/// `F.group_norm(x, num_groups, weight, bias, eps)` over an `[N, C, *]` input: the
/// channels split into `num_groups` groups (`C` divisible by it), each sample's group
/// normalised over its channels and spatial positions; `weight` and `bias` are `[C]`.
pub fn group_norm(x: &Tensor, num_groups: usize, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    const OP: &str = "group_norm";
    x.check_float(OP)?;
    if x.rank() < 2 {
        return Err(Error::invalid(OP, format!("expects an input [N, C, *], got {}", fmt(x.shape()))));
    }
    let (n, c) = (x.shape()[0], x.shape()[1]);
    if num_groups == 0 || !c.is_multiple_of(num_groups) {
        return Err(Error::invalid(
            OP,
            format!("expected the number of channels in the input to be divisible by num_groups, got {c} channels and num_groups={num_groups} (input {})", fmt(x.shape())),
        ));
    }
    check_param(OP, "weight", weight, x, &[c])?;
    check_param(OP, "bias", bias, x, &[c])?;
    let s: usize = x.shape()[2..].iter().product();
    let view = [n, num_groups, c / num_groups, s];
    norm_rows(OP, &x.reshape_to(&view)?, weight, bias, eps)?.reshape_to(x.shape())
}

/// The shared op over a `[A, G, Cg, S]` view with weights `[G Cg]`.
fn norm_rows(op: &'static str, x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let [a, groups, cg, s] = <[usize; 4]>::try_from(x.shape()).expect("a 4-d view");
    let g = Rows::new(a * groups, groups, cg, s);
    let (y, stats) = autograd::dispatch!(op, x.storage(), |_s: T| {
        let xd = x.contiguous_data::<T>()?;
        let w = weight.map(|w| w.contiguous_data::<T>()).transpose()?;
        let b = bias.map(|b| b.contiguous_data::<T>()).transpose()?;
        let stats = kernels::row_stats(&xd, g, eps);
        (Tensor::from_vec(kernels::forward(&xd, g, &stats, w.as_deref(), b.as_deref()), x.shape())?, stats)
    });
    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let (has_w, has_b) = (weight.is_some(), bias.is_some());
    Ok(record(op, y, &inputs, move |ctx| {
        let (x, dy) = (ctx.input(0), ctx.grad_output());
        let w = has_w.then(|| ctx.input(1));
        let (dx, dw, db) = if ctx.create_graph() {
            composed_backward(x, w, dy, eps)?
        } else {
            autograd::dispatch!(op, x.storage(), |_s: T| {
                let (xd, gd) = (x.contiguous_data::<T>()?, dy.contiguous_data::<T>()?);
                let wd = w.map(|w| w.contiguous_data::<T>()).transpose()?;
                let (dx, dw, db) = kernels::backward(&xd, &gd, g, &stats, wd.as_deref());
                let nw = [g.weights()];
                (Tensor::from_vec(dx, x.shape())?, Tensor::from_vec(dw, &nw)?, Tensor::from_vec(db, &nw)?)
            })
        };
        let mut grads = vec![Some(dx)];
        crate::shared::push_affine_grads(&mut grads, (dw, db), has_w, has_b);
        Ok(grads)
    }))
}

/// The gradients composed of tape ops (for `create_graph`), on the `[A, G, Cg, S]` view:
/// the formulas of `cpu/norm.rs` with the sums as `sum_dims` over the last two dims.
fn composed_backward(x: &Tensor, w: Option<&Tensor>, g: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let sh = x.shape();
    let dims = [2isize, 3];
    let xc = x.sub(&x.mean_dims(&dims, true)?)?;
    let rstd = xc.mul(&xc)?.mean_dims(&dims, true)?.add_scalar(eps).pow(-0.5);
    let xhat = xc.mul(&rstd)?;
    let gw = match w {
        Some(w) => g.mul(&w.reshape_to(&[1, sh[1], sh[2], 1])?)?,
        None => g.clone(),
    };
    let inner = gw.sub(&gw.mean_dims(&dims, true)?)?.sub(&xhat.mul(&gw.mul(&xhat)?.mean_dims(&dims, true)?)?)?;
    let nw = [sh[1] * sh[2]];
    let dw = g.mul(&xhat)?.sum_dims(&[0, 3], false)?.reshape_to(&nw)?;
    let db = g.sum_dims(&[0, 3], false)?.reshape_to(&nw)?;
    Ok((inner.mul(&rstd)?, dw, db))
}
