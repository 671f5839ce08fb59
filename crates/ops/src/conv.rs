//! 2-d convolution (cross-correlation, as in PyTorch) with stride, padding, dilation and
//! groups, and the book's `corr2d`.
//!
//! Kernels: each sample is unfolded (im2col) into a `[C/groups * kh * kw, OH * OW]` matrix
//! in a per-task buffer and multiplied by the weight with the GEMM micro-kernel; samples run
//! in parallel. The three maps below are closed under differentiation, so every gradient
//! rule is itself differentiable (double backward works):
//!
//! - `y = conv2d(x, w)`
//! - `dx = conv2d_input_grad(dy, w)`   (the adjoint in `x`; a transposed convolution)
//! - `dw = conv2d_weight_grad(x, dy)`  (the adjoint in `w`)
//!
//! The weight gradient sums over the batch in fixed groups of samples, added in group
//! order, so it is bitwise identical at any thread count. See docs/gradients.md.

use crate::gemm::{gemm_serial, MatRef};
use autograd::parallel::install;
use autograd::{record, Element, Error, Result, Tensor};
use rayon::prelude::*;

/// A size given per spatial dimension (height, width); `2.into()` means `(2, 2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair(pub usize, pub usize);

impl From<usize> for Pair {
    fn from(v: usize) -> Self {
        Pair(v, v)
    }
}
impl From<(usize, usize)> for Pair {
    fn from((a, b): (usize, usize)) -> Self {
        Pair(a, b)
    }
}
impl From<[usize; 2]> for Pair {
    fn from([a, b]: [usize; 2]) -> Self {
        Pair(a, b)
    }
}

/// Arguments of [`conv2d`], PyTorch's defaults: stride 1, padding 0, dilation 1, groups 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dArgs {
    pub stride: Pair,
    pub padding: Pair,
    pub dilation: Pair,
    pub groups: usize,
}

impl Default for Conv2dArgs {
    fn default() -> Self {
        Conv2dArgs { stride: Pair(1, 1), padding: Pair(0, 0), dilation: Pair(1, 1), groups: 1 }
    }
}

impl Conv2dArgs {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn stride(mut self, s: impl Into<Pair>) -> Self {
        self.stride = s.into();
        self
    }
    pub fn padding(mut self, p: impl Into<Pair>) -> Self {
        self.padding = p.into();
        self
    }
    pub fn dilation(mut self, d: impl Into<Pair>) -> Self {
        self.dilation = d.into();
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// Every size of one convolution, validated once.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    a: Conv2dArgs,
    /// Input channels per group.
    cg: usize,
    /// Output channels per group.
    og: usize,
}

/// Output length of one spatial dim: `floor((in + 2 pad - dilation (k - 1) - 1) / stride) + 1`.
pub fn out_size(input: usize, k: usize, stride: usize, pad: usize, dilation: usize) -> Option<usize> {
    let span = dilation * (k - 1) + 1;
    let padded = input + 2 * pad;
    (padded >= span && stride > 0).then(|| (padded - span) / stride + 1)
}

impl Geom {
    fn new(op: &'static str, x: &[usize], w: &[usize], a: Conv2dArgs) -> Result<Geom> {
        let shapes = || format!("input {}, weight {}", fmt(x), fmt(w));
        if x.len() != 4 || w.len() != 4 {
            return Err(Error::invalid(op, format!("expects a 4-d input [N, C, H, W] and a 4-d weight [O, C/groups, kh, kw] ({})", shapes())));
        }
        let (Pair(sh, sw), Pair(ph, pw), Pair(dh, dw)) = (a.stride, a.padding, a.dilation);
        if sh == 0 || sw == 0 || dh == 0 || dw == 0 || a.groups == 0 {
            return Err(Error::invalid(op, format!("stride, dilation and groups must be positive (stride {:?}, dilation {:?}, groups {}; {})", (sh, sw), (dh, dw), a.groups, shapes())));
        }
        let (n, c, h, wd) = (x[0], x[1], x[2], x[3]);
        let (o, cg, kh, kw) = (w[0], w[1], w[2], w[3]);
        if kh == 0 || kw == 0 {
            return Err(Error::invalid(op, format!("kernel size must be positive ({})", shapes())));
        }
        if c != cg * a.groups {
            return Err(Error::invalid(op, format!("input has {c} channels but weight expects {} ({} per group x {} groups; {})", cg * a.groups, cg, a.groups, shapes())));
        }
        if o % a.groups != 0 {
            return Err(Error::invalid(op, format!("{o} output channels are not divisible by {} groups ({})", a.groups, shapes())));
        }
        let (oh, ow) = match (out_size(h, kh, sh, ph, dh), out_size(wd, kw, sw, pw, dw)) {
            (Some(oh), Some(ow)) => (oh, ow),
            _ => {
                return Err(Error::invalid(
                    op,
                    format!(
                        "kernel {}x{} (dilation {:?}) is larger than the padded input {}x{} ({}, padding {:?})",
                        kh,
                        kw,
                        (dh, dw),
                        h + 2 * ph,
                        wd + 2 * pw,
                        shapes(),
                        (ph, pw)
                    ),
                ))
            }
        };
        Ok(Geom { n, c, h, w: wd, o, kh, kw, oh, ow, a, cg, og: o / a.groups })
    }
    /// Output positions per sample.
    fn l(&self) -> usize {
        self.oh * self.ow
    }
    /// Rows of the unfolded input per group.
    fn rows(&self) -> usize {
        self.cg * self.kh * self.kw
    }
    fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    fn w_shape(&self) -> [usize; 4] {
        [self.o, self.cg, self.kh, self.kw]
    }
    fn y_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.oh, self.ow]
    }
    /// 1x1, stride 1, no padding: the input plane already is the unfolded matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.a.stride == Pair(1, 1) && self.a.padding == Pair(0, 0)
    }
}

fn fmt(s: &[usize]) -> String {
    autograd::error::fmt_shape(s)
}

/// Range of output columns `ox` whose input column `ox * stride + off` lies in `[0, len)`.
fn valid_range(out: usize, len: usize, stride: usize, off: isize) -> (usize, usize) {
    let lo = if off >= 0 { 0 } else { ((-off) as usize).div_ceil(stride) };
    let last = len as isize - 1 - off;
    let hi = if last < 0 { 0 } else { (last as usize / stride + 1).min(out) };
    (lo.min(hi), hi)
}

/// Unfolds group `grp` of one sample `x` (`[C, H, W]`) into `cols` (`[rows, OH*OW]`).
fn im2col<T: Element>(g: &Geom, x: &[T], grp: usize, cols: &mut [T]) {
    let (Pair(sh, sw), Pair(ph, pw), Pair(dh, dw)) = (g.a.stride, g.a.padding, g.a.dilation);
    let l = g.l();
    for cc in 0..g.cg {
        let plane = &x[(grp * g.cg + cc) * g.h * g.w..][..g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut cols[((cc * g.kh + i) * g.kw + j) * l..][..l];
                let off = (j * dw) as isize - pw as isize;
                let (lo, hi) = valid_range(g.ow, g.w, sw, off);
                for oy in 0..g.oh {
                    let dst = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    let iy = (oy * sh + i * dh) as isize - ph as isize;
                    if iy < 0 || iy >= g.h as isize || lo >= hi {
                        dst.fill(T::zero());
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..][..g.w];
                    dst[..lo].fill(T::zero());
                    dst[hi..].fill(T::zero());
                    let start = (lo * sw) as isize + off;
                    if sw == 1 {
                        dst[lo..hi].copy_from_slice(&src[start as usize..start as usize + (hi - lo)]);
                    } else {
                        for (k, d) in dst[lo..hi].iter_mut().enumerate() {
                            *d = src[start as usize + k * sw];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds `cols` back into group `grp` of one sample `dx`.
fn col2im<T: Element>(g: &Geom, cols: &[T], grp: usize, dx: &mut [T]) {
    let (Pair(sh, sw), Pair(ph, pw), Pair(dh, dw)) = (g.a.stride, g.a.padding, g.a.dilation);
    let l = g.l();
    for cc in 0..g.cg {
        let plane = &mut dx[(grp * g.cg + cc) * g.h * g.w..][..g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &cols[((cc * g.kh + i) * g.kw + j) * l..][..l];
                let off = (j * dw) as isize - pw as isize;
                let (lo, hi) = valid_range(g.ow, g.w, sw, off);
                if lo >= hi {
                    continue;
                }
                for oy in 0..g.oh {
                    let iy = (oy * sh + i * dh) as isize - ph as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.w..][..g.w];
                    let src = &row[oy * g.ow..(oy + 1) * g.ow];
                    let start = ((lo * sw) as isize + off) as usize;
                    for (k, &s) in src[lo..hi].iter().enumerate() {
                        dst[start + k * sw] += s;
                    }
                }
            }
        }
    }
}

/// Samples per task for the weight gradient: partial sums are formed over these fixed
/// groups and then added in order, whatever the thread count.
const WGRAD_SAMPLES: usize = 8;

fn forward_kernel<T: Element>(g: &Geom, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let (l, rows) = (g.l(), g.rows());
    let chw = g.c * g.h * g.w;
    let mut y = vec![T::zero(); g.n * g.o * l];
    let per_sample = |n: usize, yn: &mut [T], cols: &mut Vec<T>| {
        let xn = &x[n * chw..(n + 1) * chw];
        for grp in 0..g.a.groups {
            let b = if g.is_pointwise() {
                MatRef::row_major(xn, grp * g.cg * l, l)
            } else {
                cols.resize(rows * l, T::zero());
                im2col(g, xn, grp, cols);
                MatRef::row_major(cols, 0, l)
            };
            let a = MatRef::row_major(w, grp * g.og * rows, rows);
            gemm_serial(g.og, l, rows, a, b, &mut yn[grp * g.og * l..], l, false);
        }
        if let Some(bias) = bias {
            for (oc, plane) in yn.chunks_mut(l).enumerate() {
                plane.iter_mut().for_each(|v| *v += bias[oc]);
            }
        }
    };
    let chunk = g.o * l;
    if chunk == 0 {
        return y;
    }
    install(|| y.par_chunks_mut(chunk).enumerate().for_each_init(Vec::new, |cols, (n, yn)| per_sample(n, yn, cols)));
    y
}

fn input_grad_kernel<T: Element>(g: &Geom, dy: &[T], w: &[T]) -> Vec<T> {
    let (l, rows) = (g.l(), g.rows());
    let chw = g.c * g.h * g.w;
    let mut dx = vec![T::zero(); g.n * chw];
    if chw == 0 {
        return dx;
    }
    install(|| {
        dx.par_chunks_mut(chw).enumerate().for_each_init(Vec::new, |cols: &mut Vec<T>, (n, dxn)| {
            let dyn_ = &dy[n * g.o * l..(n + 1) * g.o * l];
            for grp in 0..g.a.groups {
                let a = MatRef::transposed(w, grp * g.og * rows, rows);
                let b = MatRef::row_major(dyn_, grp * g.og * l, l);
                if g.is_pointwise() {
                    gemm_serial(rows, l, g.og, a, b, &mut dxn[grp * g.cg * l..], l, false);
                } else {
                    cols.resize(rows * l, T::zero());
                    gemm_serial(rows, l, g.og, a, b, cols, l, false);
                    col2im(g, cols, grp, dxn);
                }
            }
        })
    });
    dx
}

fn weight_grad_kernel<T: Element>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    let (l, rows) = (g.l(), g.rows());
    let chw = g.c * g.h * g.w;
    let size = g.o * rows;
    let tasks = g.n.div_ceil(WGRAD_SAMPLES);
    let partial = |t: usize| -> Vec<T> {
        let mut acc = vec![T::zero(); size];
        let mut cols = Vec::new();
        for n in t * WGRAD_SAMPLES..((t + 1) * WGRAD_SAMPLES).min(g.n) {
            let xn = &x[n * chw..(n + 1) * chw];
            for grp in 0..g.a.groups {
                let b = if g.is_pointwise() {
                    MatRef::transposed(xn, grp * g.cg * l, l)
                } else {
                    cols.resize(rows * l, T::zero());
                    im2col(g, xn, grp, &mut cols);
                    MatRef::transposed(&cols, 0, l)
                };
                let a = MatRef::row_major(dy, (n * g.o + grp * g.og) * l, l);
                gemm_serial(g.og, rows, l, a, b, &mut acc[grp * g.og * rows..], rows, true);
            }
        }
        acc
    };
    let partials: Vec<Vec<T>> = install(|| (0..tasks).into_par_iter().map(partial).collect());
    let mut out = vec![T::zero(); size];
    for p in partials {
        out.iter_mut().zip(p).for_each(|(o, v)| *o += v);
    }
    out
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
    let g = Geom::new("conv2d", input.shape(), weight.shape(), args)?;
    same_dtype("conv2d", input, weight)?;
    if let Some(b) = bias {
        same_dtype("conv2d", input, b)?;
        if b.shape() != [g.o] {
            return Err(Error::invalid("conv2d", format!("bias must have shape [{}], got {} (weight {})", g.o, fmt(b.shape()), fmt(weight.shape()))));
        }
    }
    let out = autograd::dispatch!(input.storage(), |_s: T| {
        let (x, w) = (input.contiguous_data::<T>()?, weight.contiguous_data::<T>()?);
        let b = bias.map(|b| b.contiguous_data::<T>()).transpose()?;
        Tensor::from_vec(forward_kernel(&g, &x, &w, b.as_deref()), &g.y_shape())?
    });
    let mut inputs = vec![input, weight];
    inputs.extend(bias);
    Ok(record("conv2d", out, &inputs, move |ctx| {
        let (x, w, dy) = (ctx.input(0), ctx.input(1), ctx.grad_output());
        let mut grads = vec![
            if ctx.needs_grad(0) { Some(conv2d_input_grad(dy, w, x.shape(), args)?) } else { None },
            if ctx.needs_grad(1) { Some(conv2d_weight_grad(x, dy, w.shape(), args)?) } else { None },
        ];
        if ctx.inputs().len() == 3 {
            grads.push(if ctx.needs_grad(2) { Some(dy.sum_dims(&[0, 2, 3], false)?) } else { None });
        }
        Ok(grads)
    }))
}

/// Gradient of `conv2d` with respect to its input, given the output gradient `dy`: a
/// transposed convolution. Differentiable (its adjoints are `conv2d` and
/// [`conv2d_weight_grad`]).
pub fn conv2d_input_grad(dy: &Tensor, weight: &Tensor, input_shape: &[usize], args: Conv2dArgs) -> Result<Tensor> {
    let g = Geom::new("conv2d_input_grad", input_shape, weight.shape(), args)?;
    same_dtype("conv2d_input_grad", dy, weight)?;
    if dy.shape() != g.y_shape() {
        return Err(Error::mismatch("conv2d_input_grad", "output gradient does not match the convolution's output", dy.shape(), &g.y_shape()));
    }
    let out = autograd::dispatch!(dy.storage(), |_s: T| {
        let (d, w) = (dy.contiguous_data::<T>()?, weight.contiguous_data::<T>()?);
        Tensor::from_vec(input_grad_kernel(&g, &d, &w), &g.x_shape())?
    });
    Ok(record("conv2d_input_grad", out, &[dy, weight], move |ctx| {
        let (dy, w, u) = (ctx.input(0), ctx.input(1), ctx.grad_output());
        Ok(vec![
            if ctx.needs_grad(0) { Some(conv2d(u, w, None, args)?) } else { None },
            if ctx.needs_grad(1) { Some(conv2d_weight_grad(u, dy, w.shape(), args)?) } else { None },
        ])
    }))
}

/// Gradient of `conv2d` with respect to its weight, given the input and the output
/// gradient. Differentiable (its adjoints are [`conv2d_input_grad`] and `conv2d`).
pub fn conv2d_weight_grad(input: &Tensor, dy: &Tensor, weight_shape: &[usize], args: Conv2dArgs) -> Result<Tensor> {
    let g = Geom::new("conv2d_weight_grad", input.shape(), weight_shape, args)?;
    same_dtype("conv2d_weight_grad", input, dy)?;
    if dy.shape() != g.y_shape() {
        return Err(Error::mismatch("conv2d_weight_grad", "output gradient does not match the convolution's output", dy.shape(), &g.y_shape()));
    }
    let out = autograd::dispatch!(dy.storage(), |_s: T| {
        let (x, d) = (input.contiguous_data::<T>()?, dy.contiguous_data::<T>()?);
        Tensor::from_vec(weight_grad_kernel(&g, &x, &d), &g.w_shape())?
    });
    Ok(record("conv2d_weight_grad", out, &[input, dy], move |ctx| {
        let (x, dy, v) = (ctx.input(0), ctx.input(1), ctx.grad_output());
        Ok(vec![
            if ctx.needs_grad(0) { Some(conv2d_input_grad(dy, v, x.shape(), args)?) } else { None },
            if ctx.needs_grad(1) { Some(conv2d(x, v, None, args)?) } else { None },
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
    if kh > h || kw > w {
        return Err(Error::mismatch("corr2d", "kernel is larger than the input", x.shape(), k.shape()));
    }
    let y = conv2d(&x.reshape_to(&[1, 1, h, w])?, &k.reshape_to(&[1, 1, kh, kw])?, None, Conv2dArgs::default())?;
    y.reshape_to(&[h - kh + 1, w - kw + 1])
}
