//! Dropout (`F.dropout`) and channel dropout (`F.dropout2d`), as PyTorch's CPU ops: in
//! training mode each element (or each whole channel) is kept with probability `1 - p`
//! and scaled by `1 / (1 - p)`, so the expected value is unchanged; in evaluation mode,
//! and for `p = 0`, the input is returned as it is (nothing drawn); `p = 1` multiplies by
//! zero (NaN stays NaN, as PyTorch's `input * 0`).
//!
//! The mask is drawn from this thread's default generator ([`autograd::manual_seed`]),
//! one draw per element (per channel for `dropout2d`), so it is bitwise the same at any
//! thread count and a checkpoint of the generator's state replays it. The output is
//! `x * mask`, a recorded product with a constant, so the gradient is `g * mask` and
//! differentiable again.

use autograd::{Error, Result, Tensor};

fn check_p(op: &'static str, p: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::invalid(op, format!("dropout probability has to be between 0 and 1, but got {p}")));
    }
    Ok(())
}

/// `x * mask`, the mask of `shape` (broadcast over `x`) holding `1 / (1 - p)` with
/// probability `1 - p` and 0 otherwise.
fn masked(op: &'static str, x: &Tensor, p: f64, shape: &[usize]) -> Result<Tensor> {
    x.check_float(op)?;
    if p == 1.0 {
        return Ok(x.mul_scalar(0.0));
    }
    let keep = Tensor::bernoulli_default(shape, 1.0 - p, x.dtype())?;
    // PyTorch's `noise.div_(1 - p)`: each kept element is exactly 1 / (1 - p) rounded to
    // the dtype, and `x * mask` multiplies by that one number.
    let mask = keep.mul_scalar(1.0 / (1.0 - p));
    x.mul(&mask)
}

/// Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)` when
/// `training`; the identity otherwise (`F.dropout(x, p, training)`).
pub fn dropout(x: &Tensor, p: f64, training: bool) -> Result<Tensor> {
    check_p("dropout", p)?;
    if !training || p == 0.0 || x.numel() == 0 {
        x.check_float("dropout")?;
        return Ok(x.clone());
    }
    masked("dropout", x, p, x.shape())
}

/// Zeroes whole channels: each `x[n, c]` plane with probability `p` (`F.dropout2d`). The
/// input is `[N, C, H, W]`, or `[N, C, L]`, which PyTorch also reads as batched channels
/// (with a warning that this will change to `[C, H, W]`; here it is the documented
/// behaviour, with no warning). Other ranks are an error (PyTorch deprecates them).
pub fn dropout2d(x: &Tensor, p: f64, training: bool) -> Result<Tensor> {
    check_p("dropout2d", p)?;
    if x.rank() != 3 && x.rank() != 4 {
        return Err(Error::invalid("dropout2d", format!("expects a 4-d [N, C, H, W] or 3-d [N, C, L] input, got {:?}", x.shape())));
    }
    if !training || p == 0.0 || x.numel() == 0 {
        x.check_float("dropout2d")?;
        return Ok(x.clone());
    }
    let mut shape = vec![1; x.rank()];
    shape[..2].copy_from_slice(&x.shape()[..2]);
    masked("dropout2d", x, p, &shape)
}
