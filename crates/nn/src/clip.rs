//! Gradient clipping, as `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`: called
//! between `backward` and the optimiser step, they rescale or clamp the accumulated
//! gradients in place.
//!
//! PyTorch's semantics, kept exactly: the total norm is the norm of the per-parameter
//! norms; every gradient is multiplied by `max_norm / (total + 1e-6)` clamped to at most 1
//! (so a small total leaves the gradients as they are, bit for bit); parameters without a
//! gradient are skipped; a NaN gradient gives a NaN total and NaN gradients (NaN in, NaN
//! out) unless `error_if_nonfinite` asks for an error instead.

use crate::error::{Error, Result};
use autograd::{DType, Element, Parameter, Tensor};

/// The `p`-norm of a gradient's elements, computed in f64 (`p` = infinity: the largest
/// magnitude, NaN if any element is NaN).
fn norm_of(values: impl Iterator<Item = f64>, p: f64) -> f64 {
    if p == f64::INFINITY {
        values.map(f64::abs).fold(0.0, |m, a| if a > m || a.is_nan() { a } else { m })
    } else if p == 2.0 {
        values.map(|v| v * v).sum::<f64>().sqrt()
    } else if p == 1.0 {
        values.map(f64::abs).sum()
    } else {
        values.map(|v| v.abs().powf(p)).sum::<f64>().powf(1.0 / p)
    }
}

fn grad_norm<T: Element>(g: &Tensor, p: f64) -> Result<f64> {
    Ok(norm_of(g.contiguous_data::<T>()?.iter().map(|v| autograd::Scalar::to_f64(*v)), p))
}

/// Rescales the gradients of `params` so that their total `norm_type`-norm (2.0, 1.0, any
/// positive `p`, or `f64::INFINITY` for the largest magnitude) is at most `max_norm`, and
/// returns the total norm before clipping (0 when no parameter has a gradient).
///
/// # Errors
/// A `norm_type` that is not positive, a NaN `max_norm`, and, with `error_if_nonfinite`, a
/// NaN or infinite total norm (the gradients are then left alone).
pub fn clip_grad_norm_(params: &[Parameter], max_norm: f64, norm_type: f64, error_if_nonfinite: bool) -> Result<f64> {
    const NAME: &str = "clip_grad_norm_";
    if norm_type.is_nan() || norm_type <= 0.0 {
        return Err(Error::config(NAME, format!("norm_type must be positive or infinity, got {norm_type}")));
    }
    if max_norm.is_nan() {
        return Err(Error::config(NAME, "max_norm is NaN"));
    }
    let mut norms = Vec::with_capacity(params.len());
    for p in params {
        let Some(g) = p.grad() else { continue };
        norms.push(match g.dtype() {
            DType::F32 => grad_norm::<f32>(&g, norm_type)?,
            DType::F64 => grad_norm::<f64>(&g, norm_type)?,
            dtype => return Err(autograd::Error::UnsupportedDType { op: NAME, dtype }.into()),
        });
    }
    if norms.is_empty() {
        return Ok(0.0);
    }
    let total = norm_of(norms.into_iter(), norm_type);
    if error_if_nonfinite && !total.is_finite() {
        return Err(Error::Diverged(format!(
            "{NAME}: the total norm of order {norm_type} for gradients from `parameters` is non-finite ({total}), so it cannot be \
             clipped (pass error_if_nonfinite = false to scale the gradients by the non-finite norm anyway)"
        )));
    }
    let coef = max_norm / (total + 1e-6);
    // torch.clamp(coef, max=1.0): a NaN coefficient stays NaN (f64::min would give 1).
    let coef = if coef > 1.0 { 1.0 } else { coef };
    for p in params {
        scale_grad(p, coef)?;
    }
    Ok(total)
}

fn scale_grad(p: &Parameter, c: f64) -> Result<()> {
    fn go<T: Element>(p: &Parameter, c: f64) -> Result<()> {
        let c = T::from_f64(c);
        p.update_grad::<T>(|g| g.iter_mut().for_each(|v| *v *= c))?;
        Ok(())
    }
    match p.grad().map(|g| g.dtype()) {
        None => Ok(()),
        Some(DType::F64) => go::<f64>(p, c),
        Some(_) => go::<f32>(p, c),
    }
}

/// Clamps every gradient element of `params` to `[-clip_value, clip_value]` (NaN stays NaN).
///
/// # Errors
/// A negative or NaN `clip_value`.
pub fn clip_grad_value_(params: &[Parameter], clip_value: f64) -> Result<()> {
    if clip_value.is_nan() || clip_value < 0.0 {
        return Err(Error::config("clip_grad_value_", format!("clip_value must be at least 0, got {clip_value}")));
    }
    fn go<T: Element>(p: &Parameter, c: f64) -> Result<()> {
        let (lo, hi) = (T::from_f64(-c), T::from_f64(c));
        // torch.clamp: NaN passes through.
        p.update_grad::<T>(|g| {
            g.iter_mut().for_each(|v| {
                *v = if *v < lo {
                    lo
                } else if *v > hi {
                    hi
                } else {
                    *v
                }
            })
        })?;
        Ok(())
    }
    for p in params {
        match p.grad().map(|g| g.dtype()) {
            None => {}
            Some(DType::F64) => go::<f64>(p, clip_value)?,
            Some(_) => go::<f32>(p, clip_value)?,
        }
    }
    Ok(())
}
