//! 2-d transposed convolution (`F.conv_transpose2d`), the op front-end over the
//! convolution kernels: a transposed convolution of `x` by `w` is the input gradient of
//! the convolution by the same `w` whose output is shaped like `x`, so the forward is the
//! `conv2d_input_grad` map (whichever kernel `cpu::select` picks for it) plus the bias.
//!
//! With `y = conv_transpose2d(x, w)` the map is bilinear and its adjoints are the other two
//! convolution maps: `dx = conv2d(g, w)` and `dw = conv2d_weight_grad(g, x)`, both
//! recorded ops, so the rule is differentiable to any order. See docs/gradients.md
//! ("Transposed convolution").
//!
//! `output_padding` adds rows and columns at the bottom and right of the output (which
//! only the kernel's reach from the last inputs fills). When it is at least the stride
//! (allowed while it is below the dilation), the convolution over the output would have
//! more rows than `x`: `x` is then read as zero-padded to that size, which adds nothing.

use crate::args::{Conv2dArgs, Conv2dMap, Pair};
use crate::conv::{conv2d, conv2d_weight_grad};
use crate::cpu::geom::Geom;
use crate::cpu::select::{record as record_algo, select};
use autograd::{no_grad, record, Error, Result, Tensor};

/// Arguments of [`conv_transpose2d`], PyTorch's defaults: stride 1, padding 0,
/// output_padding 0, groups 1, dilation 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dArgs {
    /// Stride, padding, dilation and groups of the convolution this one transposes (and
    /// the kernel request for its input-gradient map).
    pub conv: Conv2dArgs,
    /// Extra output rows and columns (each below the stride or the dilation).
    pub output_padding: Pair,
}

impl Default for ConvTranspose2dArgs {
    fn default() -> Self {
        ConvTranspose2dArgs { conv: Conv2dArgs::default(), output_padding: Pair(0, 0) }
    }
}

impl ConvTranspose2dArgs {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn stride(mut self, s: impl Into<Pair>) -> Self {
        self.conv = self.conv.stride(s);
        self
    }
    pub fn padding(mut self, p: impl Into<Pair>) -> Self {
        self.conv = self.conv.padding(p);
        self
    }
    pub fn output_padding(mut self, p: impl Into<Pair>) -> Self {
        self.output_padding = p.into();
        self
    }
    pub fn dilation(mut self, d: impl Into<Pair>) -> Self {
        self.conv = self.conv.dilation(d);
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.conv = self.conv.groups(g);
        self
    }
}

const OP: &str = "conv_transpose2d";

fn fmt(s: &[usize]) -> String {
    autograd::error::fmt_shape(s)
}

/// One output side, `(in - 1) s - 2 p + d (k - 1) + op + 1`, in exact arithmetic: an
/// error when it is below 1 (too small) or past the size limit.
fn out_side(input: usize, k: usize, s: usize, p: usize, d: usize, op: usize, shapes: &dyn Fn() -> String) -> Result<usize> {
    let v = (input as i128 - 1) * s as i128 - 2 * p as i128 + d as i128 * (k as i128 - 1) + op as i128 + 1;
    if v > autograd::shape::MAX_NUMEL as i128 {
        return Err(Error::overflow(OP, format!("output side {v} does not fit ({})", shapes())));
    }
    if v < 1 {
        return Err(Error::invalid(OP, format!("calculated output side {v} is too small ({})", shapes())));
    }
    Ok(v as usize)
}

/// The checked geometry: the output shape, and the convolution (over the output) whose
/// input gradient this is, with its own output size `(oh, ow)` (at least `x`'s).
fn geometry(x: &[usize], w: &[usize], a: ConvTranspose2dArgs) -> Result<([usize; 4], Geom)> {
    let c = a.conv;
    let shapes = || {
        format!(
            "input {}, weight {}, stride {:?}, padding {:?}, output_padding {:?}, dilation {:?}, groups {}",
            fmt(x),
            fmt(w),
            (c.stride.0, c.stride.1),
            (c.padding.0, c.padding.1),
            (a.output_padding.0, a.output_padding.1),
            (c.dilation.0, c.dilation.1),
            c.groups
        )
    };
    if x.len() != 4 || w.len() != 4 {
        return Err(Error::invalid(
            OP,
            format!("expects a 4-d input [N, C_in, H, W] and a 4-d weight [C_in, C_out/groups, kh, kw] ({})", shapes()),
        ));
    }
    let (Pair(sh, sw), Pair(ph, pw), Pair(dh, dw), Pair(oph, opw)) = (c.stride, c.padding, c.dilation, a.output_padding);
    if [sh, sw, dh, dw, c.groups, w[2], w[3]].contains(&0) {
        return Err(Error::invalid(OP, format!("stride, dilation, groups and kernel size must be positive ({})", shapes())));
    }
    if (oph >= sh && oph >= dh) || (opw >= sw && opw >= dw) {
        return Err(Error::invalid(OP, format!("output padding must be smaller than either stride or dilation ({})", shapes())));
    }
    if x[1] != w[0] {
        return Err(Error::invalid(OP, format!("input has {} channels but weight expects {} ({})", x[1], w[0], shapes())));
    }
    if !w[0].is_multiple_of(c.groups) {
        return Err(Error::invalid(OP, format!("{} input channels are not divisible by {} groups ({})", w[0], c.groups, shapes())));
    }
    if x[2] == 0 || x[3] == 0 {
        return Err(Error::invalid(OP, format!("expects a non-empty height and width ({})", shapes())));
    }
    let cout = w[1].checked_mul(c.groups).ok_or_else(|| Error::overflow(OP, format!("output channels overflow ({})", shapes())))?;
    let oh = out_side(x[2], w[2], sh, ph, dh, oph, &shapes)?;
    let ow = out_side(x[3], w[3], sw, pw, dw, opw, &shapes)?;
    let y = [x[0], cout, oh, ow];
    autograd::shape::checked_numel(OP, &y)?;
    let g = Geom::new(OP, &y, w, c)?;
    Ok((y, g))
}

/// `x` zero-padded at the bottom and right to `(h, w)` (recorded: `cat` with zeros).
fn pad_end(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let mut x = x.clone();
    for (dim, to) in [(2usize, h), (3, w)] {
        let have = x.shape()[dim];
        if to > have {
            let mut zs = x.shape().to_vec();
            zs[dim] = to - have;
            x = Tensor::cat(&[&x, &Tensor::zeros_dtype(&zs, x.dtype())], dim as isize)?;
        }
    }
    Ok(x)
}

/// 2-d transposed convolution of `input [N, C_in, H, W]` by `weight [C_in, C_out/groups,
/// kh, kw]` plus an optional `bias [C_out]`, as `torch.nn.functional.conv_transpose2d`:
/// the output is `[N, C_out, (H - 1) s - 2 p + d (kh - 1) + output_padding + 1, ...]`.
pub fn conv_transpose2d(input: &Tensor, weight: &Tensor, bias: Option<&Tensor>, args: ConvTranspose2dArgs) -> Result<Tensor> {
    let (yshape, g) = geometry(input.shape(), weight.shape(), args)?;
    for t in std::iter::once(weight).chain(bias) {
        if t.dtype() != input.dtype() {
            return Err(Error::DTypeMismatch { op: OP, lhs: input.dtype(), rhs: t.dtype() });
        }
    }
    if let Some(b) = bias {
        if b.shape() != [yshape[1]] {
            return Err(Error::invalid(
                OP,
                format!("bias must have shape [{}], got {} (weight {})", yshape[1], fmt(b.shape()), fmt(weight.shape())),
            ));
        }
    }
    let (h, w) = (input.shape()[2], input.shape()[3]);
    let padded = (g.oh, g.ow) != (h, w);
    let algo = select(Conv2dMap::InputGrad, &g);
    input.check_float(OP)?;
    // An empty output reads nothing (the input may be a huge expanded view).
    let empty = yshape.contains(&0);
    let out = if empty { Tensor::zeros_dtype(&yshape, input.dtype()) } else { forward(input, weight, bias, &g, algo, yshape, padded)? };
    let conv = args.conv;
    let mut inputs = vec![input, weight];
    inputs.extend(bias);
    Ok(record(OP, out, &inputs, move |ctx| {
        let (x, w, gy) = (ctx.input(0), ctx.input(1), ctx.grad_output());
        let dx = if ctx.needs_grad(0) {
            let d = conv2d(gy, w, None, conv)?;
            Some(if padded { d.narrow(2, 0, h)?.narrow(3, 0, x.shape()[3])? } else { d })
        } else {
            None
        };
        let dw = if ctx.needs_grad(1) {
            let xp = if padded { pad_end(x, g.oh, g.ow)? } else { x.clone() };
            Some(conv2d_weight_grad(gy, &xp, w.shape(), conv)?)
        } else {
            None
        };
        let mut grads = vec![dx, dw];
        if ctx.inputs().len() == 3 {
            grads.push(if ctx.needs_grad(2) { Some(gy.sum_dims(&[0, 2, 3], false)?) } else { None });
        }
        Ok(grads)
    }))
}

/// The forward values: the input-gradient map of the convolution `g` (over the output),
/// with `x` zero-padded to that convolution's output size when needed, plus the bias.
fn forward(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    g: &Geom,
    algo: crate::args::Conv2dAlgo,
    yshape: [usize; 4],
    padded: bool,
) -> Result<Tensor> {
    Ok(autograd::dispatch!(OP, input.storage(), |_s: T| {
        let xp = if padded { no_grad(|| pad_end(&input.detach(), g.oh, g.ow))? } else { input.clone() };
        let (x, wd) = (xp.contiguous_data::<T>()?, weight.contiguous_data::<T>()?);
        record_algo(Conv2dMap::InputGrad, algo);
        let mut y = crate::cpu::input_grad(g, algo, &x, &wd);
        if let Some(b) = bias {
            let b = b.contiguous_data::<T>()?;
            let plane = yshape[2] * yshape[3];
            for (i, p) in y.chunks_mut(plane).enumerate() {
                let v = b[i % yshape[1]];
                p.iter_mut().for_each(|e| *e += v);
            }
        }
        Tensor::from_vec(y, &yshape)?
    }))
}
