//! Adaptive average pooling (`torch.nn.functional.adaptive_avg_pool2d`): any output size,
//! each output cell the mean of the input cells of its bin, bin `i` of `n` over a side of
//! `h` spanning `floor(i h / n) .. ceil((i + 1) h / n)` as in PyTorch. `(1, 1)` is global
//! average pooling. The pooling and its backward are linear and each other's adjoint, so
//! each is the other's gradient rule and both are differentiable to any order.

use autograd::parallel::install;
use autograd::{record, Error, Result, Tensor};
use rayon::prelude::*;

/// The bin of output cell `i` of `n` over a side of `len`.
fn bin(i: usize, n: usize, len: usize) -> (usize, usize) {
    (i * len / n, ((i + 1) * len).div_ceil(n))
}

/// `(planes, h, w)` of an `[N, C, H, W]` or `[C, H, W]` shape, and the output shape.
fn geometry(op: &'static str, shape: &[usize], out: (usize, usize)) -> Result<(usize, usize, usize, Vec<usize>)> {
    let r = shape.len();
    if !(3..=4).contains(&r) {
        return Err(Error::invalid(op, format!("expects an input [N, C, H, W] or [C, H, W], got {shape:?}")));
    }
    let (h, w) = (shape[r - 2], shape[r - 1]);
    if out.0 == 0 || out.1 == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(op, format!("output size {out:?} and input sides {:?} must be positive", (h, w))));
    }
    // Bin edges compute (i + 1) * len: bounded by the checked numbers below.
    if out.0.checked_mul(h).is_none() || out.1.checked_mul(w).is_none() {
        return Err(Error::SizeOverflow { op, msg: format!("output size {out:?} for input sides {:?}", (h, w)) });
    }
    let mut y = shape.to_vec();
    y[r - 2] = out.0;
    y[r - 1] = out.1;
    autograd::shape::checked_numel(op, &y)?;
    Ok((shape[..r - 2].iter().product(), h, w, y))
}

/// Mean over each bin of an `output_size` grid.
pub fn adaptive_avg_pool2d(input: &Tensor, output_size: (usize, usize)) -> Result<Tensor> {
    const OP: &str = "adaptive_avg_pool2d";
    input.check_float(OP)?;
    let (planes, h, w, yshape) = geometry(OP, input.shape(), output_size)?;
    let (oh, ow) = output_size;
    let out = autograd::dispatch!(OP, input.storage(), |_s: T| {
        let x = input.contiguous_data::<T>()?;
        let mut y = autograd::buffers::for_overwrite::<T>(planes * oh * ow);
        let plane = |(yp, xp): (&mut [T], &[T])| {
            for i in 0..oh {
                let (y0, y1) = bin(i, oh, h);
                for j in 0..ow {
                    let (x0, x1) = bin(j, ow, w);
                    let mut s = T::zero();
                    for row in xp[y0 * w..y1 * w].chunks_exact(w) {
                        for &v in &row[x0..x1] {
                            s += v;
                        }
                    }
                    yp[i * ow + j] = s / T::from_f64(((y1 - y0) * (x1 - x0)) as f64);
                }
            }
        };
        install(|| y.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(plane));
        Tensor::from_vec(y, &yshape)?
    });
    Ok(record(OP, out, &[input], move |ctx| Ok(vec![Some(adaptive_avg_pool2d_backward(ctx.grad_output(), ctx.input(0).shape())?)])))
}

/// Gradient of [`adaptive_avg_pool2d`] for an input of `input_shape`: each output
/// gradient spread evenly over its bin (bins may overlap; their shares add up).
pub fn adaptive_avg_pool2d_backward(dy: &Tensor, input_shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "adaptive_avg_pool2d_backward";
    dy.check_float(OP)?;
    let r = dy.rank();
    if r < 2 || r != input_shape.len() {
        return Err(Error::mismatch(OP, "output gradient and input must have one rank", dy.shape(), input_shape));
    }
    let out = (dy.shape()[r - 2], dy.shape()[r - 1]);
    let (planes, h, w, yshape) = geometry(OP, input_shape, out)?;
    if dy.shape() != yshape.as_slice() {
        return Err(Error::mismatch(OP, "output gradient does not match the pooling output", dy.shape(), &yshape));
    }
    let (oh, ow) = out;
    let dx = autograd::dispatch!(OP, dy.storage(), |_s: T| {
        let d = dy.contiguous_data::<T>()?;
        let mut dx = autograd::buffers::zeroed::<T>(planes * h * w);
        let plane = |(xp, dp): (&mut [T], &[T])| {
            for i in 0..oh {
                let (y0, y1) = bin(i, oh, h);
                for j in 0..ow {
                    let (x0, x1) = bin(j, ow, w);
                    let share = dp[i * ow + j] / T::from_f64(((y1 - y0) * (x1 - x0)) as f64);
                    for row in xp[y0 * w..y1 * w].chunks_exact_mut(w) {
                        row[x0..x1].iter_mut().for_each(|v| *v += share);
                    }
                }
            }
        };
        install(|| dx.par_chunks_mut(h * w).zip(d.par_chunks(oh * ow)).for_each(plane));
        Tensor::from_vec(dx, input_shape)?
    });
    let shape = dy.shape().to_vec();
    Ok(record(OP, dx, &[dy], move |ctx| {
        let g = adaptive_avg_pool2d(ctx.grad_output(), (shape[r - 2], shape[r - 1]))?;
        Ok(vec![Some(g)])
    }))
}
