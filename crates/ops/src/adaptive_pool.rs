//! Adaptive average and max pooling (`torch.nn.functional.adaptive_avg_pool2d`,
//! `adaptive_max_pool2d`). Average pooling: any output size,
//! each output cell the mean of the input cells of its bin, bin `i` of `n` over a side of
//! `h` spanning `floor(i h / n) .. ceil((i + 1) h / n)` as in PyTorch. `(1, 1)` is global
//! average pooling. The pooling and its backward are linear and each other's adjoint, so
//! each is the other's gradient rule and both are differentiable to any order.

use crate::cpu::adaptive_pool as kernels;
use autograd::{record_saving, Error, Result, Saves, Tensor};

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
        Tensor::from_vec(kernels::forward(&x, planes, (h, w), (oh, ow)), &yshape)?
    });
    Ok(record_saving(OP, out, &[input], Saves::NOTHING, move |ctx| {
        Ok(vec![Some(adaptive_avg_pool2d_backward(ctx.grad_output(), ctx.input_shape(0))?)])
    }))
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
        Tensor::from_vec(kernels::backward(&d, planes, (h, w), (oh, ow)), input_shape)?
    });
    let shape = dy.shape().to_vec();
    Ok(record_saving(OP, dx, &[dy], Saves::NOTHING, move |ctx| {
        let g = adaptive_avg_pool2d(ctx.grad_output(), (shape[r - 2], shape[r - 1]))?;
        Ok(vec![Some(g)])
    }))
}

/// Maximum over each bin of an `output_size` grid (`F.adaptive_max_pool2d`), with the
/// same bins as [`adaptive_avg_pool2d`]. NaN wins a bin, and on ties the first maximum in
/// row-major order does.
pub fn adaptive_max_pool2d(input: &Tensor, output_size: (usize, usize)) -> Result<Tensor> {
    Ok(adaptive_max_pool2d_with_indices(input, output_size)?.0)
}

/// [`adaptive_max_pool2d`] and each output's winner as an i64 position in its input plane
/// (`return_indices=True`). The values are the input read at the winners (`gather`), so
/// the gradient goes to the winners (`scatter_add`) and the pair is differentiable to any
/// order, as max pooling's.
pub fn adaptive_max_pool2d_with_indices(input: &Tensor, output_size: (usize, usize)) -> Result<(Tensor, Tensor)> {
    const OP: &str = "adaptive_max_pool2d";
    input.check_float(OP)?;
    let (planes, h, w, yshape) = geometry(OP, input.shape(), output_size)?;
    let (oh, ow) = output_size;
    let idx = autograd::dispatch!(OP, input.storage(), |_s: T| {
        let x = input.contiguous_data::<T>()?;
        Tensor::from_vec(kernels::argmax(&x, planes, (h, w), (oh, ow)), &[planes, oh * ow])?
    });
    let values = input.reshape_to(&[planes, h * w])?.gather(1, &idx)?.reshape_to(&yshape)?;
    Ok((values, idx.reshape_to(&yshape)?))
}
