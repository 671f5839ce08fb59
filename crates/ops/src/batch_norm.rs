//! Batch normalisation, as `torch.nn.functional.batch_norm`, over `[N, C, *]` inputs.
//!
//! Training mode is one op on the tape with its own kernels: the forward takes each
//! channel's mean and biased variance (two passes, accumulated in f64) and writes
//! `y = (x - mean) * invstd * w + b`; the backward takes each channel's sums of `dy` and
//! `dy * x_hat` (one pass) and writes `dx` (a second). Channels are independent and each
//! channel's sums run in a fixed order, so results are bitwise identical at any thread
//! count. Under `create_graph` the rule is composed of tape ops instead, so it is
//! differentiable again. Evaluation mode is an affine map per channel made of tape ops.
//! The running statistics are the caller's (the `BatchNorm` layers): this op returns the
//! batch statistics they are updated from. See docs/gradients.md.

use crate::cpu::batch_norm as kernels;
use autograd::{record_saving, Activation, Error, Result, Saves, Scalar, Tensor};

/// The result of a training-mode [`batch_norm_train`]: the output, and the batch's mean
/// and unbiased variance per channel (detached, in the input's dtype), from which the
/// running statistics are updated.
pub struct BatchNormTrain {
    pub output: Tensor,
    pub mean: Tensor,
    pub var_unbiased: Tensor,
}

/// `(N, C, S)` of an `[N, C, *]` input, checked against the parameters' `[C]` shapes.
fn geometry(op: &'static str, x: &Tensor, params: &[Option<&Tensor>]) -> Result<(usize, usize, usize)> {
    x.check_float(op)?;
    if x.rank() < 2 {
        return Err(Error::invalid(op, format!("expects an input [N, C, *], got {:?}", x.shape())));
    }
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let s: usize = x.shape()[2..].iter().product();
    for p in params.iter().flatten() {
        if p.shape() != [c] {
            return Err(Error::mismatch(op, "weight, bias and statistics must have shape [C]", x.shape(), p.shape()));
        }
        if p.dtype() != x.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: x.dtype(), rhs: p.dtype() });
        }
    }
    Ok((n, c, s))
}

/// `[1, C, 1, ...]`: a per-channel vector shaped to broadcast against `x`.
fn per_channel(v: &Tensor, x: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1; x.rank()];
    shape[1] = x.shape()[1];
    v.reshape_to(&shape)
}

/// Batch normalisation with the batch's statistics (training mode, or a layer that does
/// not track running statistics): `y = (x - mean) / sqrt(var + eps) * weight + bias` with
/// the biased variance over every dim but the channel dim. `weight`/`bias` `None` means
/// 1/0 (`affine=False`). Needs more than one value per channel, as PyTorch.
pub fn batch_norm_train(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<BatchNormTrain> {
    const OP: &str = "batch_norm";
    let (out, stats) = normalise(OP, x, weight, bias, eps, None)?;
    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let (has_w, has_b) = (weight.is_some(), bias.is_some());
    // The input and the weight (the statistics are in the closure); not the bias.
    let output = record_saving(OP, out.output, &inputs, Saves::input(0).and_input_if(1, has_w), move |ctx| {
        let (x, g) = (ctx.input(0), ctx.grad_output());
        let w = has_w.then(|| ctx.input(1));
        let (dx, dw, db) = if ctx.create_graph() { composed_backward(x, w, g, eps)? } else { kernel_backward(x, w, g, None, &stats, eps)? };
        let mut grads = vec![Some(dx)];
        crate::shared::push_affine_grads(&mut grads, (dw, db), has_w, has_b);
        Ok(grads)
    });
    Ok(BatchNormTrain { output, ..out })
}

/// The training-mode forward's values for an `[N, C, *]` input, not yet recorded:
/// `act(x_hat * weight + bias)` (the activation only when `conv2d_bn_train` fuses one),
/// the batch's mean and unbiased variance, and the `(mean, biased variance)` per channel
/// the backward reads.
pub(crate) fn normalise(
    op: &'static str,
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    act: Option<Activation>,
) -> Result<(BatchNormTrain, Vec<(f64, f64)>)> {
    let (n, c, s) = geometry(op, x, &[weight, bias])?;
    let m = n * s;
    if m <= 1 {
        return Err(Error::invalid(op, format!("expected more than 1 value per channel when training, got input {:?}", x.shape())));
    }
    Ok(autograd::dispatch!(op, x.storage(), |_s: T| {
        let xd = x.contiguous_data::<T>()?;
        let w = weight.map(|w| w.contiguous_data::<T>()).transpose()?;
        let b = bias.map(|b| b.contiguous_data::<T>()).transpose()?;
        let stats = kernels::channel_stats(&xd, n, c, s);
        let (scale, shift): (Vec<T>, Vec<T>) = (0..c)
            .map(|k| {
                let (mean, var) = stats[k];
                let invstd = 1.0 / (var + eps).sqrt();
                let wk = w.as_ref().map_or(1.0, |w| Scalar::to_f64(w[k]));
                let bk = b.as_ref().map_or(0.0, |b| Scalar::to_f64(b[k]));
                (T::from_f64(wk * invstd), T::from_f64(bk - mean * wk * invstd))
            })
            .unzip();
        let y = kernels::affine(&xd, c, s, &scale, &shift, act);
        let mean: Vec<T> = stats.iter().map(|&(mu, _)| T::from_f64(mu)).collect();
        let var_u: Vec<T> = stats.iter().map(|&(_, v)| T::from_f64(v * m as f64 / (m - 1) as f64)).collect();
        let out = BatchNormTrain {
            output: Tensor::from_vec(y, x.shape())?,
            mean: Tensor::from_vec(mean, &[c])?,
            var_unbiased: Tensor::from_vec(var_u, &[c])?,
        };
        (out, stats)
    }))
}

/// Batch normalisation with given statistics (evaluation mode): the affine map
/// `y = (x - mean) * (weight / sqrt(var + eps)) + bias` per channel, made of tape ops (so
/// differentiable to any order in `x`, `weight` and `bias`).
pub fn batch_norm_eval(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    const OP: &str = "batch_norm";
    geometry(OP, x, &[Some(mean), Some(var), weight, bias])?;
    let invstd = var.add_scalar(eps).pow(-0.5);
    let scale = match weight {
        Some(w) => w.mul(&invstd)?,
        None => invstd,
    };
    let y = x.sub(&per_channel(&mean.detach(), x)?)?.mul(&per_channel(&scale, x)?)?;
    match bias {
        Some(b) => y.add(&per_channel(b, x)?),
        None => Ok(y),
    }
}

/// `(dx, dw, db)` of training-mode batch norm from the kernels (first order), with the
/// forward's per-channel `(mean, biased variance)`; `act` is the activation `conv2d_bn_train`
/// applied after it, with its output (`g` is then the gradient of that output).
pub(crate) fn kernel_backward(
    x: &Tensor,
    w: Option<&Tensor>,
    g: &Tensor,
    act: Option<(Activation, &Tensor)>,
    stats: &[(f64, f64)],
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, s) = geometry("batch_norm_backward", x, &[w])?;
    Ok(autograd::dispatch!("batch_norm_backward", x.storage(), |_s: T| {
        let xd = x.contiguous_data::<T>()?;
        let gd = g.contiguous_data::<T>()?;
        let zd = act.map(|(_, z)| z.contiguous_data::<T>()).transpose()?;
        let og = kernels::OutGrad { dz: &gd, act: act.map(|(a, _)| a).zip(zd.as_deref()) };
        let wd = w.map(|w| w.contiguous_data::<T>()).transpose()?;
        let sums = kernels::grad_sums(&xd, og, n, c, s, stats, eps);
        let m = (n * s) as f64;
        // dx = w * invstd * (dy - sum_dy / M - x_hat * sum_dy_xhat / M), as an affine map
        // of dy and x per channel: dx = a * dy + b * x + d.
        let coef: Vec<[T; 3]> = (0..c)
            .map(|k| {
                let (mean, var) = stats[k];
                let (sum_dy, sum_dy_xhat) = sums[k];
                let invstd = 1.0 / (var + eps).sqrt();
                let wi = wd.as_ref().map_or(1.0, |w| Scalar::to_f64(w[k])) * invstd;
                let bx = -wi * invstd * sum_dy_xhat / m;
                [T::from_f64(wi), T::from_f64(bx), T::from_f64(-wi * sum_dy / m - bx * mean)]
            })
            .collect();
        let dx = kernels::grad_input(og, &xd, c, s, &coef);
        let dw: Vec<T> = sums.iter().map(|&(_, v)| T::from_f64(v)).collect();
        let db: Vec<T> = sums.iter().map(|&(v, _)| T::from_f64(v)).collect();
        (Tensor::from_vec(dx, x.shape())?, Tensor::from_vec(dw, &[c])?, Tensor::from_vec(db, &[c])?)
    }))
}

/// The same gradients composed of tape ops, for `create_graph` (second order).
pub(crate) fn composed_backward(x: &Tensor, w: Option<&Tensor>, g: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let dims: Vec<isize> = (0..x.rank() as isize).filter(|&d| d != 1).collect();
    let mean = x.mean_dims(&dims, true)?;
    let xc = x.sub(&mean)?;
    let invstd = xc.mul(&xc)?.mean_dims(&dims, true)?.add_scalar(eps).pow(-0.5);
    let xhat = xc.mul(&invstd)?;
    let sum_dy = g.sum_dims(&dims, true)?;
    let sum_dy_xhat = g.mul(&xhat)?.sum_dims(&dims, true)?;
    let m = (x.numel() / x.shape()[1].max(1)) as f64;
    let inner = g.sub(&sum_dy.mul_scalar(1.0 / m))?.sub(&xhat.mul(&sum_dy_xhat.mul_scalar(1.0 / m))?)?;
    let scale = match w {
        Some(w) => invstd.mul(&per_channel(w, x)?)?,
        None => invstd,
    };
    let c = [x.shape()[1]];
    Ok((inner.mul(&scale)?, sum_dy_xhat.reshape_to(&c)?, sum_dy.reshape_to(&c)?))
}
