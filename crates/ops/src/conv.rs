//! 2-d convolution (cross-correlation, as in PyTorch) with stride, padding, dilation and
//! groups, the fused `conv2d_fused` (activation and 2x2 average or max pooling applied as
//! the output is written), and the book's `corr2d`: the op front-ends (argument checks,
//! shapes, the tape and the gradient rules) over the CPU kernels in `cpu/`.
//!
//! Each of the three maps below asks `cpu::select` which kernel computes it (the direct
//! stride-1 kernels, unfolding + GEMM, or a plain GEMM for 1x1) and runs it; the gradient
//! rules call the maps' ops and so never choose a kernel themselves. The maps are closed
//! under differentiation, so every gradient rule is itself differentiable (double
//! backward works):
//!
//! - `y = conv2d(x, w)`
//! - `dx = conv2d_input_grad(dy, w)`   (the adjoint in `x`; a transposed convolution)
//! - `dw = conv2d_weight_grad(x, dy)`  (the adjoint in `w`)
//!
//! The weight and bias gradients sum over the batch in fixed blocks of samples, added in
//! block order, so they are bitwise identical at any thread count. See docs/gradients.md.

pub use crate::args::{out_size, Conv2dAlgo, Conv2dArgs, Conv2dMap, Epilogue, Pair, Pool2x2};
pub use crate::cpu::select::{conv2d_algo_applies, conv2d_algo_for, last_conv2d_algo};

use crate::cpu::geom::Geom;
use crate::cpu::select::{live_taps, record as record_algo, select};
use crate::pool::{avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2x2_grad, Pool2dArgs};
use autograd::{no_grad, record_saving, record_saving_with_internals, Error, Result, Saves, Tensor};

fn fmt(s: &[usize]) -> String {
    autograd::error::fmt_shape(s)
}

fn same_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    Ok(())
}

/// 2-d convolution of `input [N, C, H, W]` with `weight [O, C/groups, kh, kw]` plus an
/// optional `bias [O]`, as `torch.nn.functional.conv2d`.
pub fn conv2d(input: &Tensor, weight: &Tensor, bias: Option<&Tensor>, args: Conv2dArgs) -> Result<Tensor> {
    conv2d_fused(input, weight, bias, args, Epilogue::default())
}

/// `conv2d` followed by `epilogue` as one op: the activation and the pooling are applied
/// while each sample's output is in cache, and the backward pass takes both back from the
/// saved activation in one pass. Values and gradients are bitwise those of the ops in turn.
pub fn conv2d_fused(input: &Tensor, weight: &Tensor, bias: Option<&Tensor>, args: Conv2dArgs, epilogue: Epilogue) -> Result<Tensor> {
    let op = if epilogue == Epilogue::default() { "conv2d" } else { "conv2d_fused" };
    let g = Geom::new(op, input.shape(), weight.shape(), args)?;
    same_dtype(op, input, weight)?;
    if let Some(b) = bias {
        same_dtype(op, input, b)?;
        if b.shape() != [g.o] {
            return Err(Error::invalid(
                op,
                format!("bias must have shape [{}], got {} (weight {})", g.o, fmt(b.shape()), fmt(weight.shape())),
            ));
        }
    }
    let pool = Pool2dArgs::new(2);
    if epilogue.pool.is_some() && (g.oh < 2 || g.ow < 2) {
        return Err(Error::invalid(op, format!("2x2 pooling needs a convolution output of at least 2x2, got {}x{}", g.oh, g.ow)));
    }
    // Taps that only ever see padding are skipped: by the taps kernel itself, or else
    // cropped off the weight (a differentiable view, so their gradient is zero) with the
    // smaller convolution going to the selector. Not when the weight holds a NaN or
    // infinity: `0 * NaN` is NaN, and NaN in must be NaN out (docs/reliability.md), so
    // such a weight takes the full convolution (the taps kernel sees to that itself).
    let algo = select(Conv2dMap::Forward, &g);
    if let Some((i0, ti, j0, tj)) = live_taps(&g).filter(|_| algo != Conv2dAlgo::Taps && weight.all_finite()) {
        let w = weight.narrow(2, i0, ti)?.narrow(3, j0, tj)?;
        let Pair(ph, pw) = args.padding;
        let a = Conv2dArgs { padding: Pair(ph - i0 * args.dilation.0, pw - j0 * args.dilation.1), ..args };
        return conv2d_fused(input, &w, bias, a, epilogue);
    }
    let (full, pooled) = autograd::dispatch!("conv2d", input.storage(), |_s: T| {
        let (x, w) = (input.contiguous_data::<T>()?, weight.contiguous_data::<T>()?);
        let b = bias.map(|b| b.contiguous_data::<T>()).transpose()?;
        record_algo(Conv2dMap::Forward, algo);
        let (y, pooled) = crate::cpu::forward(&g, algo, &x, &w, b.as_deref(), epilogue);
        let y = Tensor::from_vec(y, &g.y_shape())?;
        let pooled = match pooled {
            Some(p) => Some(Tensor::from_vec(p, &[g.n, g.o, g.oh / 2, g.ow / 2])?),
            None => match epilogue.pool {
                Some(Pool2x2::Avg) => Some(no_grad(|| avg_pool2d(&y, pool))?),
                Some(Pool2x2::Max) => Some(no_grad(|| max_pool2d(&y, pool))?),
                None => None,
            },
        };
        (y, pooled)
    });
    // What the backward reads besides the inputs: the activation's output (its derivative
    // comes from it), and max pooling's input (its winners are found again in it). With
    // pooling the op's output is the pooled tensor, so the rule keeps the activation
    // itself; without, it is the op's output.
    let needs_y = epilogue.act.is_some() || epilogue.pool == Some(Pool2x2::Max);
    let before_pool = if pooled.is_some() { Some(full.clone()) } else { None };
    let kept = before_pool.clone().filter(|_| needs_y);
    let out = pooled.unwrap_or(full);
    let saves = if epilogue.act.is_some() {
        // A differentiated backward recomputes the activation's input from all three.
        Saves::INPUTS
    } else {
        // The input gradient reads the weight, the weight gradient the input, the bias
        // gradient nothing.
        Saves::NOTHING.and_input_if(1, input.requires_grad()).and_input_if(0, weight.requires_grad())
    };
    let saves = if needs_y && kept.is_none() { saves.and_output() } else { saves };
    let mut inputs = vec![input, weight];
    inputs.extend(bias);
    // Anomaly mode checks the activation before the pooling too: pooling can hide a
    // non-finite value (max drops a -inf, an odd last row is never read).
    let internals: Vec<&Tensor> = before_pool.iter().collect();
    Ok(record_saving_with_internals(op, out, &inputs, &internals, saves, move |ctx| {
        let y = match &kept {
            Some(y) => Some(y),
            None if needs_y => Some(ctx.output()),
            None => None,
        };
        // The direct kernels compute every gradient (and take the epilogue back) in one
        // pass, when the selector picks them for both gradient maps; the differentiable
        // path below runs each map through its own op, which asks the selector again.
        if !ctx.create_graph() && [Conv2dMap::InputGrad, Conv2dMap::WeightGrad].iter().all(|&m| select(m, &g) == Conv2dAlgo::Direct) {
            if let Some(grads) = backward_direct(&g, ctx, ctx.grad_output(), y, epilogue, (ctx.num_inputs() == 3).then_some(2))? {
                return Ok(grads);
            }
        }
        // The gradient before the pooling, then before the activation.
        let mut dy = ctx.grad_output().clone();
        match (epilogue.pool, y) {
            (Some(Pool2x2::Avg), _) => dy = avg_pool2d_backward(&dy, &g.y_shape(), pool)?,
            // The winners are those of the activation, which is what the pooling read.
            (Some(Pool2x2::Max), Some(y)) => dy = max_pool2x2_grad(y, &dy)?,
            (Some(Pool2x2::Max), None) => return Err(Error::invalid(op, "max pooling's input was not saved")),
            (None, _) => {}
        }
        let dy = match (epilogue.act, y) {
            (None, _) => dy,
            // A differentiated backward needs it as a function of the inputs.
            (Some(a), _) if ctx.create_graph() => {
                let bias = (ctx.num_inputs() == 3).then(|| ctx.input(2));
                a.backward_from_input(&dy, &conv2d(ctx.input(0), ctx.input(1), bias, args)?)?
            }
            (Some(a), Some(y)) => a.backward_from_output(&dy, y)?,
            (Some(_), None) => return Err(Error::invalid(op, "the activation's output was not saved")),
        };
        conv_grads(ctx, &dy, args, (ctx.num_inputs() == 3).then_some(2))
    }))
}

/// The gradients of a convolution's input, weight and bias (inputs 0, 1 and `bias`, if
/// any, of the op whose backward `ctx` is), each if needed, from its output gradient
/// `dy`. In a first-order backward, where the selector picks a kernel that computes
/// several at once (the direct kernels' single pass, the taps kernel's shared layout copy
/// of `dy`), they come from one call; else each map runs through its own op, which is
/// differentiable, and the bias gradient is `dy` summed. The same values either way as a
/// plain `conv2d`'s backward. Also the rule of `conv2d_bn_train`.
pub(crate) fn conv_grads(ctx: &autograd::BackwardCtx, dy: &Tensor, args: Conv2dArgs, bias: Option<usize>) -> Result<Vec<Option<Tensor>>> {
    let (xs, ws) = (ctx.input_shape(0), ctx.input_shape(1));
    let g = Geom::new("conv2d_backward", xs, ws, args)?;
    g.check_output_grad("conv2d_backward", dy)?;
    if !ctx.create_graph() {
        let algo = select(Conv2dMap::InputGrad, &g);
        if algo == Conv2dAlgo::Direct && select(Conv2dMap::WeightGrad, &g) == algo {
            if let Some(grads) = backward_direct(&g, ctx, dy, None, Epilogue::default(), bias)? {
                return Ok(grads);
            }
        }
        if ctx.needs_grad(0) && ctx.needs_grad(1) && select(Conv2dMap::WeightGrad, &g) == algo {
            let both = autograd::dispatch!("conv2d_backward", dy.storage(), |_s: T| {
                let (x, w, d) = (ctx.input(0).contiguous_data::<T>()?, ctx.input(1).contiguous_data::<T>()?, dy.contiguous_data::<T>()?);
                match crate::cpu::both_grads(&g, algo, &x, &w, &d) {
                    Some((dx, dw)) => Some((Tensor::from_vec(dx, xs)?, Tensor::from_vec(dw, ws)?)),
                    None => None,
                }
            });
            if let Some((dx, dw)) = both {
                record_algo(Conv2dMap::InputGrad, algo);
                record_algo(Conv2dMap::WeightGrad, algo);
                let mut grads = vec![Some(dx), Some(dw)];
                if let Some(b) = bias {
                    grads.push(if ctx.needs_grad(b) { Some(dy.sum_dims(&[0, 2, 3], false)?) } else { None });
                }
                return Ok(grads);
            }
        }
    }
    let dw = if ctx.needs_grad(1) { Some(conv2d_weight_grad(ctx.input(0), dy, ws, args)?) } else { None };
    let dx = if ctx.needs_grad(0) { Some(conv2d_input_grad(dy, ctx.input(1), xs, args)?) } else { None };
    let mut grads = vec![dx, dw];
    if let Some(b) = bias {
        grads.push(if ctx.needs_grad(b) { Some(dy.sum_dims(&[0, 2, 3], false)?) } else { None });
    }
    Ok(grads)
}

/// The first-order backward of a convolution on the direct path, from its output
/// gradient `dy` (before `ep`'s pooling and activation, which it takes back on the way
/// from `y`, the activation's output): pooling, activation, bias (input `bias` of the
/// op, if any), input and weight gradients in one pass over the samples.
fn backward_direct(
    g: &Geom,
    ctx: &autograd::BackwardCtx,
    dy: &Tensor,
    y: Option<&Tensor>,
    ep: Epilogue,
    bias: Option<usize>,
) -> Result<Option<Vec<Option<Tensor>>>> {
    let want_bias = bias.is_some_and(|b| ctx.needs_grad(b));
    autograd::dispatch!("conv2d_backward", dy.storage(), |_s: T| {
        // The weight gradient reads the input, the input gradient the weight.
        let xd = if ctx.needs_grad(1) { Some(ctx.input(0).contiguous_data::<T>()?) } else { None };
        let wd = if ctx.needs_grad(0) { Some(ctx.input(1).contiguous_data::<T>()?) } else { None };
        let (dyd, yd) = (dy.contiguous_data::<T>()?, y.map(|y| y.contiguous_data::<T>()).transpose()?);
        let b = crate::cpu::Backward {
            dy: &dyd,
            y: yd.as_deref(),
            act: ep.act,
            pool: ep.pool,
            x: xd.as_deref(),
            w: wd.as_deref(),
            bias: want_bias,
        };
        let Some(grads) = crate::cpu::backward_direct(g, b) else { return Ok(None) };
        for (map, ran) in [(Conv2dMap::InputGrad, ctx.needs_grad(0)), (Conv2dMap::WeightGrad, ctx.needs_grad(1))] {
            if ran {
                record_algo(map, Conv2dAlgo::Direct);
            }
        }
        let mut out = vec![
            grads.dx.map(|v| Tensor::from_vec(v, &g.x_shape())).transpose()?,
            grads.dw.map(|v| Tensor::from_vec(v, &g.w_shape())).transpose()?,
        ];
        if bias.is_some() {
            out.push(grads.db.map(|v| Tensor::from_vec(v, &[g.o])).transpose()?);
        }
        Ok(Some(out))
    })
}

/// Gradient of `conv2d` with respect to its input, given the output gradient `dy`: a
/// transposed convolution. Differentiable (its adjoints are `conv2d` and
/// [`conv2d_weight_grad`]).
pub fn conv2d_input_grad(dy: &Tensor, weight: &Tensor, input_shape: &[usize], args: Conv2dArgs) -> Result<Tensor> {
    let g = Geom::new("conv2d_input_grad", input_shape, weight.shape(), args)?;
    same_dtype("conv2d_input_grad", dy, weight)?;
    g.check_output_grad("conv2d_input_grad", dy)?;
    let algo = select(Conv2dMap::InputGrad, &g);
    let out = autograd::dispatch!("conv2d_input_grad", dy.storage(), |_s: T| {
        let (d, w) = (dy.contiguous_data::<T>()?, weight.contiguous_data::<T>()?);
        record_algo(Conv2dMap::InputGrad, algo);
        Tensor::from_vec(crate::cpu::input_grad(&g, algo, &d, &w), &g.x_shape())?
    });
    // Each argument's gradient reads the other one.
    let saves = Saves::NOTHING.and_input_if(1, dy.requires_grad()).and_input_if(0, weight.requires_grad());
    Ok(record_saving("conv2d_input_grad", out, &[dy, weight], saves, move |ctx| {
        let u = ctx.grad_output();
        Ok(vec![
            if ctx.needs_grad(0) { Some(conv2d(u, ctx.input(1), None, args)?) } else { None },
            if ctx.needs_grad(1) { Some(conv2d_weight_grad(u, ctx.input(0), ctx.input_shape(1), args)?) } else { None },
        ])
    }))
}

/// Gradient of `conv2d` with respect to its weight, given the input and the output
/// gradient. Differentiable (its adjoints are [`conv2d_input_grad`] and `conv2d`).
pub fn conv2d_weight_grad(input: &Tensor, dy: &Tensor, weight_shape: &[usize], args: Conv2dArgs) -> Result<Tensor> {
    let g = Geom::new("conv2d_weight_grad", input.shape(), weight_shape, args)?;
    same_dtype("conv2d_weight_grad", input, dy)?;
    g.check_output_grad("conv2d_weight_grad", dy)?;
    let algo = select(Conv2dMap::WeightGrad, &g);
    let out = autograd::dispatch!("conv2d_weight_grad", dy.storage(), |_s: T| {
        let (x, d) = (input.contiguous_data::<T>()?, dy.contiguous_data::<T>()?);
        record_algo(Conv2dMap::WeightGrad, algo);
        Tensor::from_vec(crate::cpu::weight_grad(&g, algo, &x, &d), &g.w_shape())?
    });
    let saves = Saves::NOTHING.and_input_if(1, input.requires_grad()).and_input_if(0, dy.requires_grad());
    Ok(record_saving("conv2d_weight_grad", out, &[input, dy], saves, move |ctx| {
        let v = ctx.grad_output();
        Ok(vec![
            if ctx.needs_grad(0) { Some(conv2d_input_grad(ctx.input(1), v, ctx.input_shape(0), args)?) } else { None },
            if ctx.needs_grad(1) { Some(conv2d(ctx.input(0), v, None, args)?) } else { None },
        ])
    }))
}

/// The book's `corr2d`: 2-d cross-correlation of a 2-d input with a 2-d kernel, no padding,
/// stride 1. Differentiable in both arguments.
pub fn corr2d(x: &Tensor, k: &Tensor) -> Result<Tensor> {
    if x.rank() != 2 || k.rank() != 2 {
        return Err(Error::mismatch("corr2d", "expects a 2-d input and a 2-d kernel", x.shape(), k.shape()));
    }
    let (h, w) = (x.shape()[0], x.shape()[1]);
    let (kh, kw) = (k.shape()[0], k.shape()[1]);
    if kh > h || kw > w || kh == 0 || kw == 0 {
        return Err(Error::mismatch("corr2d", "kernel must be non-empty and no larger than the input", x.shape(), k.shape()));
    }
    same_dtype("corr2d", x, k)?;
    x.check_float("corr2d")?;
    let y = conv2d(&x.reshape_to(&[1, 1, h, w])?, &k.reshape_to(&[1, 1, kh, kw])?, None, Conv2dArgs::default())?;
    y.reshape_to(&[h - kh + 1, w - kw + 1])
}
