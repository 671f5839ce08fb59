//! Max and average pooling over each channel separately, as PyTorch's `max_pool2d` and
//! `avg_pool2d` (floor mode).
//!
//! Max pooling sends each gradient to the input that won its window (padding never wins;
//! on ties the first in row-major order wins). The forward keeps each window's winner for
//! the backward, except for 2x2 windows, whose backward finds them again from the input
//! in a vectorised pass; the backward and its adjoint (a gather at the winners) are
//! differentiable ops, so double backward works.
//! Average pooling divides by the full window, padded cells included
//! (`count_include_pad=True`); its backward spreads the gradient evenly and is itself a
//! differentiable op whose adjoint is average pooling again.

use crate::args::{out_size, Pair};
use crate::cpu::pool_planes::{self, max_pool_planes, Windows, LANES};
use crate::cpu::pool_rows::{avg2x2_row, max2x2_row, max2x2_scatter_rows, spread2x2_row, winner4, wins};
use autograd::parallel::{for_each_row_mut, install};
use autograd::{record_saving, Element, Error, Result, Saves, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Arguments of the pooling ops: window, stride (defaults to the window) and padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dArgs {
    pub kernel: Pair,
    pub stride: Option<Pair>,
    pub padding: Pair,
}

impl Pool2dArgs {
    pub fn new(kernel: impl Into<Pair>) -> Self {
        Pool2dArgs { kernel: kernel.into(), stride: None, padding: Pair(0, 0) }
    }
    pub fn stride(mut self, s: impl Into<Pair>) -> Self {
        self.stride = Some(s.into());
        self
    }
    pub fn padding(mut self, p: impl Into<Pair>) -> Self {
        self.padding = p.into();
        self
    }
}

#[derive(Clone, Copy, Debug)]
struct Geom {
    /// Planes: N * C (or C for a 3-d input).
    planes: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    fn new(op: &'static str, shape: &[usize], a: Pool2dArgs) -> Result<Geom> {
        let Pair(kh, kw) = a.kernel;
        let Pair(sh, sw) = a.stride.unwrap_or(a.kernel);
        let Pair(ph, pw) = a.padding;
        let desc =
            || format!("input {}, kernel {:?}, stride {:?}, padding {:?}", autograd::error::fmt_shape(shape), (kh, kw), (sh, sw), (ph, pw));
        if shape.len() != 3 && shape.len() != 4 {
            return Err(Error::invalid(op, format!("expects a 3-d [C, H, W] or 4-d [N, C, H, W] input ({})", desc())));
        }
        autograd::shape::checked_numel(op, shape)?;
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 {
            return Err(Error::invalid(op, format!("kernel and stride must be positive ({})", desc())));
        }
        if shape[shape.len() - 2] == 0 || shape[shape.len() - 1] == 0 {
            // As PyTorch: an empty plane has no windows (with padding it would pool only padding).
            return Err(Error::invalid(op, format!("expects non-empty height and width ({})", desc())));
        }
        if [kh, kw, sh, sw].iter().any(|&v| v > autograd::shape::MAX_NUMEL) {
            return Err(Error::overflow(op, format!("kernel or stride too large ({})", desc())));
        }
        if ph > kh / 2 || pw > kw / 2 {
            return Err(Error::invalid(op, format!("padding should be at most half of the kernel size ({})", desc())));
        }
        let r = shape.len();
        let (h, w) = (shape[r - 2], shape[r - 1]);
        let (oh, ow) = match (out_size(op, h, kh, sh, ph, 1)?, out_size(op, w, kw, sw, pw, 1)?) {
            (Some(oh), Some(ow)) => (oh, ow),
            _ => {
                return Err(Error::invalid(
                    op,
                    format!("window is larger than the padded input {}x{} ({})", h + 2 * ph, w + 2 * pw, desc()),
                ))
            }
        };
        Ok(Geom { planes: shape[..r - 2].iter().product(), h, w, kh, kw, sh, sw, ph, pw, oh, ow })
    }
    /// The common 2x2 window with stride 2 and no padding (LeNet's): windows tile the
    /// input without overlap, which the fast paths below rely on.
    fn is_2x2(&self) -> bool {
        (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw) == (2, 2, 2, 2, 0, 0)
    }
    fn out_shape(&self, input: &[usize]) -> Vec<usize> {
        let mut s = input[..input.len() - 2].to_vec();
        s.extend([self.oh, self.ow]);
        s
    }
    /// Input rows (or columns) covered by output row `o`, clipped to the input.
    fn span(o: usize, stride: usize, pad: usize, k: usize, len: usize) -> (usize, usize) {
        let start = (o * stride) as isize - pad as isize;
        let lo = start.max(0) as usize;
        let hi = ((start + k as isize).max(0) as usize).min(len);
        (lo, hi)
    }
}

/// Runs `f(plane, plane_in, plane_out)` over every channel plane in parallel, into a fresh
/// `planes x out_len` buffer (`in_len`, `out_len`: elements per plane).
fn per_plane<T: Element>(planes: usize, in_len: usize, out_len: usize, x: &[T], f: impl Fn(usize, &[T], &mut [T]) + Sync + Send) -> Vec<T> {
    let mut y = autograd::buffers::for_overwrite::<T>(planes * out_len);
    if out_len > 0 {
        for_each_row_mut(&mut y, out_len, |p, yp| f(p, &x[p * in_len..(p + 1) * in_len], yp));
    }
    y
}

/// Calls `f(out, winner)` for every window of one plane with the plane-local position of
/// its largest input: the first in row-major order on ties, NaN wins, padding never does.
#[inline]
fn for_each_winner<T: Element>(g: &Geom, xp: &[T], mut f: impl FnMut(usize, usize)) {
    if g.is_2x2() {
        for oy in 0..g.oh {
            let (r0, r1) = (2 * oy * g.w, (2 * oy + 1) * g.w);
            for ox in 0..g.ow {
                let c = [r0 + 2 * ox, r0 + 2 * ox + 1, r1 + 2 * ox, r1 + 2 * ox + 1];
                f(oy * g.ow + ox, c[winner4(c.map(|p| xp[p]))]);
            }
        }
        return;
    }
    for oy in 0..g.oh {
        let (y0, y1) = Geom::span(oy, g.sh, g.ph, g.kh, g.h);
        for ox in 0..g.ow {
            let (x0, x1) = Geom::span(ox, g.sw, g.pw, g.kw, g.w);
            let mut best = T::neg_infinity();
            let mut bi = y0 * g.w + x0;
            for iy in y0..y1 {
                for ix in x0..x1 {
                    if wins(xp[iy * g.w + ix], best) {
                        best = xp[iy * g.w + ix];
                        bi = iy * g.w + ix;
                    }
                }
            }
            f(oy * g.ow + ox, bi);
        }
    }
}

/// The gradient of 2x2/stride-2 max pooling of `x` (`[.., H, W]`) given the output
/// gradient `dy`, for a fused op's backward; recorded and differentiable in `dy`, as the
/// pooling's own backward is.
pub(crate) fn max_pool2x2_grad(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let g = Geom::new("max_pool2d_backward", x.shape(), Pool2dArgs::new(2))?;
    let want = g.out_shape(x.shape());
    if dy.shape() != want.as_slice() {
        return Err(Error::mismatch("max_pool2d_backward", "output gradient does not match the pooling output", dy.shape(), &want));
    }
    max_pool2d_scatter(x, dy, g, None)
}

/// Each output's winner, as a position in its input plane, kept by the forward for the
/// backward (shared with the rules of the gradient ops, which read the same winners).
type Winners = Option<Arc<Vec<u32>>>;

/// Max pooling with the gradient routed to the winning position.
pub fn max_pool2d(input: &Tensor, args: Pool2dArgs) -> Result<Tensor> {
    let g = Geom::new("max_pool2d", input.shape(), args)?;
    let (inp, outp) = (g.h * g.w, g.oh * g.ow);
    // General windows keep their winners: finding them again in the backward, plane by
    // plane, cost 13 ms at batch 256 for ResNet's 3x3/stride-2 stem pooling.
    // 2x2 windows find them again in a vectorised pass, and planes too large for a `u32`
    // position do too.
    let keep = !g.is_2x2() && u32::try_from(inp).is_ok();
    let (out, winners) = autograd::dispatch!("max_pool2d", input.storage(), |_s: T| {
        let x = input.contiguous_data::<T>()?;
        let (y, winners) = if keep {
            let mut y = autograd::buffers::for_overwrite::<T>(g.planes * outp);
            let mut at = vec![0u32; g.planes * outp];
            if outp > 0 {
                let rows: Vec<_> = (0..g.oh).map(|o| Geom::span(o, g.sh, g.ph, g.kh, g.h)).collect();
                let cols: Vec<_> = (0..g.ow).map(|o| Geom::span(o, g.sw, g.pw, g.kw, g.w)).collect();
                let win = Windows { w: g.w, rows: &rows, cols: &cols };
                // Whole blocks of planes side by side, a few blocks per task; the planes
                // left over (and planes too wide for a block's band) one at a time.
                let side_by_side = if pool_planes::fits(inp, g.kh, g.w) { g.planes / LANES * LANES } else { 0 };
                let (y_blocks, y_rest) = y.split_at_mut(side_by_side * outp);
                let (at_blocks, at_rest) = at.split_at_mut(side_by_side * outp);
                const TASK: usize = 8 * LANES;
                install(|| {
                    y_blocks.par_chunks_mut(TASK * outp).zip(at_blocks.par_chunks_mut(TASK * outp)).enumerate().for_each(
                        |(t, (yt, at))| {
                            let p0 = t * TASK;
                            max_pool_planes(&x[p0 * inp..(p0 + yt.len() / outp) * inp], win, yt, at);
                        },
                    );
                    y_rest.par_chunks_mut(outp).zip(at_rest.par_chunks_mut(outp)).enumerate().for_each(|(p, (yp, ap))| {
                        let p = side_by_side + p;
                        let xp = &x[p * inp..(p + 1) * inp];
                        // `keep` checked that every position in a plane fits a `u32`.
                        for_each_winner(&g, xp, |o, i| (yp[o], ap[o]) = (xp[i], i as u32));
                    })
                });
            }
            (y, Some(Arc::new(at)))
        } else {
            let y = per_plane::<T>(g.planes, inp, outp, &x, |_, xp, yp| {
                if g.is_2x2() {
                    for (oy, yrow) in yp.chunks_exact_mut(g.ow).enumerate() {
                        max2x2_row(yrow, &xp[2 * oy * g.w..][..2 * g.ow], &xp[(2 * oy + 1) * g.w..][..2 * g.ow]);
                    }
                } else {
                    for_each_winner(&g, xp, |o, i| yp[o] = xp[i]);
                }
            });
            (y, None)
        };
        (Tensor::from_vec(y, &g.out_shape(input.shape()))?, winners)
    });
    // The input: its dtype, and the winners when they are found again in it.
    Ok(record_saving("max_pool2d", out, &[input], Saves::input(0), move |ctx| {
        Ok(vec![Some(max_pool2d_scatter(ctx.input(0), ctx.grad_output(), g, winners.clone())?)])
    }))
}

/// The gradient of max pooling: each output gradient added at its window's winner in `x`
/// (the forward's, or, for 2x2 windows, found again from `x` in a vectorised pass instead
/// of an index buffer). Linear in `dy`; its adjoint is [`max_pool2d_gather`], so double
/// backward works (the gradient in `x` is zero almost everywhere, as in PyTorch).
fn max_pool2d_scatter(x: &Tensor, dy: &Tensor, g: Geom, winners: Winners) -> Result<Tensor> {
    let out = autograd::dispatch!("max_pool2d_backward", x.storage(), |_s: T| {
        let (xd, d) = (x.contiguous_data::<T>()?, dy.contiguous_data::<T>()?);
        let (inp, outp) = (g.h * g.w, g.oh * g.ow);
        // 2x2 windows tile the plane (rows and columns past them excepted), so every cell is
        // written once and the plane needs no zeroing; others zero each plane just before
        // adding into it, while it is in cache (not the whole buffer in a pass of its own).
        let tiled = g.is_2x2() && g.h == 2 * g.oh && g.w == 2 * g.ow;
        let mut dx = autograd::buffers::for_overwrite::<T>(g.planes * inp);
        if inp > 0 {
            for_each_row_mut(&mut dx, inp, |p, dxp| {
                let (dp, xp) = (&d[p * outp..(p + 1) * outp], &xd[p * inp..(p + 1) * inp]);
                if !tiled {
                    dxp.fill(T::zero());
                }
                match &winners {
                    // In output order, as the search below adds them: the same sums.
                    Some(at) => at[p * outp..(p + 1) * outp].iter().zip(dp).for_each(|(&i, &v)| dxp[i as usize] += v),
                    None if tiled => {
                        // Zero both rows of each window row, then one store per window.
                        for (oy, drow) in dp.chunks_exact(g.ow).enumerate() {
                            let r0 = 2 * oy * g.w;
                            max2x2_scatter_rows(&mut dxp[r0..], &xp[r0..], g.w, drow);
                        }
                    }
                    None => for_each_winner(&g, xp, |o, i| dxp[i] += dp[o]),
                }
            });
        }
        Tensor::from_vec(dx, x.shape())?
    });
    Ok(record_saving("max_pool2d_backward", out, &[x, dy], Saves::input(0), move |ctx| {
        Ok(vec![None, Some(max_pool2d_gather(ctx.input(0), ctx.grad_output(), g, winners.clone())?)])
    }))
}

/// `v` (shaped like the pooling input) read at every window's winner in `x`: the adjoint
/// of [`max_pool2d_scatter`] in its gradient argument.
fn max_pool2d_gather(x: &Tensor, v: &Tensor, g: Geom, winners: Winners) -> Result<Tensor> {
    let out = autograd::dispatch!("max_pool2d_backward", x.storage(), |_s: T| {
        let (xd, vd) = (x.contiguous_data::<T>()?, v.contiguous_data::<T>()?);
        let (inp, outp) = (g.h * g.w, g.oh * g.ow);
        let y = per_plane::<T>(g.planes, inp, outp, &xd, |p, xp, yp| {
            let vp = &vd[p * inp..(p + 1) * inp];
            match &winners {
                Some(at) => yp.iter_mut().zip(&at[p * outp..(p + 1) * outp]).for_each(|(y, &i)| *y = vp[i as usize]),
                None => for_each_winner(&g, xp, |o, i| yp[o] = vp[i]),
            }
        });
        Tensor::from_vec(y, &g.out_shape(x.shape()))?
    });
    Ok(record_saving("max_pool2d_gather", out, &[x, v], Saves::input(0), move |ctx| {
        Ok(vec![None, Some(max_pool2d_scatter(ctx.input(0), ctx.grad_output(), g, winners.clone())?)])
    }))
}

/// Average pooling (padded cells count toward the window size).
pub fn avg_pool2d(input: &Tensor, args: Pool2dArgs) -> Result<Tensor> {
    let g = Geom::new("avg_pool2d", input.shape(), args)?;
    let out = autograd::dispatch!("avg_pool2d", input.storage(), |_s: T| {
        let x = input.contiguous_data::<T>()?;
        let scale = T::one() / T::from_f64((g.kh * g.kw) as f64);
        let y = per_plane::<T>(g.planes, g.h * g.w, g.oh * g.ow, &x, |_, xp, yp| {
            if g.is_2x2() {
                for (oy, yrow) in yp.chunks_exact_mut(g.ow).enumerate() {
                    avg2x2_row(yrow, &xp[2 * oy * g.w..][..2 * g.ow], &xp[(2 * oy + 1) * g.w..][..2 * g.ow], scale);
                }
                return;
            }
            for oy in 0..g.oh {
                let (y0, y1) = Geom::span(oy, g.sh, g.ph, g.kh, g.h);
                for ox in 0..g.ow {
                    let (x0, x1) = Geom::span(ox, g.sw, g.pw, g.kw, g.w);
                    let mut s = T::zero();
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            s += xp[iy * g.w + ix];
                        }
                    }
                    yp[oy * g.ow + ox] = s * scale;
                }
            }
        });
        Tensor::from_vec(y, &g.out_shape(input.shape()))?
    });
    Ok(record_saving("avg_pool2d", out, &[input], Saves::NOTHING, move |ctx| {
        Ok(vec![Some(avg_pool2d_backward(ctx.grad_output(), ctx.input_shape(0), args)?)])
    }))
}

/// Gradient of [`avg_pool2d`]: each output gradient spread evenly over its window.
/// Linear in `dy`, with `avg_pool2d` as its adjoint, so it is differentiable too.
pub fn avg_pool2d_backward(dy: &Tensor, input_shape: &[usize], args: Pool2dArgs) -> Result<Tensor> {
    let g = Geom::new("avg_pool2d_backward", input_shape, args)?;
    let want = g.out_shape(input_shape);
    if dy.shape() != want.as_slice() {
        return Err(Error::mismatch("avg_pool2d_backward", "output gradient does not match the pooling output", dy.shape(), &want));
    }
    let out = autograd::dispatch!("avg_pool2d_backward", dy.storage(), |_s: T| {
        let d = dy.contiguous_data::<T>()?;
        let scale = T::one() / T::from_f64((g.kh * g.kw) as f64);
        let (inp, outp) = (g.h * g.w, g.oh * g.ow);
        // 2x2 windows over even sizes write every input cell; otherwise some stay 0.
        let covers = g.is_2x2() && g.h == 2 * g.oh && g.w == 2 * g.ow;
        let mut dx =
            if covers { autograd::buffers::for_overwrite::<T>(g.planes * inp) } else { autograd::buffers::zeroed::<T>(g.planes * inp) };
        if inp > 0 {
            for_each_row_mut(&mut dx, inp, |p, dxp| {
                let dp = &d[p * outp..(p + 1) * outp];
                if g.is_2x2() {
                    for (oy, drow) in dp.chunks_exact(g.ow).enumerate() {
                        let (top, bottom) = dxp[2 * oy * g.w..(2 * oy + 2) * g.w].split_at_mut(g.w);
                        spread2x2_row(&mut top[..2 * g.ow], &mut bottom[..2 * g.ow], drow, scale);
                    }
                    return;
                }
                for oy in 0..g.oh {
                    let (y0, y1) = Geom::span(oy, g.sh, g.ph, g.kh, g.h);
                    for ox in 0..g.ow {
                        let (x0, x1) = Geom::span(ox, g.sw, g.pw, g.kw, g.w);
                        let v = dp[oy * g.ow + ox] * scale;
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                dxp[iy * g.w + ix] += v;
                            }
                        }
                    }
                }
            });
        }
        Tensor::from_vec(dx, input_shape)?
    });
    Ok(record_saving("avg_pool2d_backward", out, &[dy], Saves::NOTHING, move |ctx| Ok(vec![Some(avg_pool2d(ctx.grad_output(), args)?)])))
}
