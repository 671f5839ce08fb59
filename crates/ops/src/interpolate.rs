//! Resampling of `[N, C, H, W]` inputs, `F.interpolate` with `mode='nearest'` or
//! `'bilinear'` (`align_corners` either way), to a given size or by scale factors.
//!
//! The output size and the source coordinates follow PyTorch's CPU kernels to the
//! rounding: `out = floor(in * scale_factor)`; a given scale factor (unless
//! `recompute_scale_factor`) sets the coordinate map, `src = dst / scale_factor`, else
//! `in / out`. Nearest reads `floor(src)` (in f32, with PyTorch's exact cases: the same
//! size copies, twice the size reads `dst / 2`); bilinear without `align_corners` samples
//! pixel centres, `src = max((dst + 0.5) in / out - 0.5, 0)`, with `align_corners` the
//! corners, `src = dst (in - 1) / (out - 1)`, in the tensor's dtype, as PyTorch's. Each axis becomes a table of (at most two) source indices and
//! weights (`cpu/interpolate.rs`), shared by the forward and its adjoint, so the map and
//! its backward are each other's gradient rules and differentiable to any order.

use crate::args::Pair;
use crate::cpu::interpolate::{self as kernels, Plan, Taps};
use autograd::{record, DType, Error, Result, Tensor};
use std::sync::Arc;

/// How [`interpolate`] reads between input cells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InterpolateMode {
    /// The cell at `floor(dst * in / out)` (PyTorch's `'nearest'`, OpenCV's rule).
    #[default]
    Nearest,
    /// Linear in both axes between the two nearest rows and columns.
    Bilinear,
}

impl InterpolateMode {
    /// PyTorch's name for it.
    pub fn name(self) -> &'static str {
        match self {
            InterpolateMode::Nearest => "nearest",
            InterpolateMode::Bilinear => "bilinear",
        }
    }
}

/// Arguments of [`interpolate`], as `F.interpolate`'s: exactly one of `size` and
/// `scale_factor`; `align_corners` only for bilinear (default false there).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct InterpolateArgs {
    pub size: Option<Pair>,
    pub scale_factor: Option<(f64, f64)>,
    pub mode: InterpolateMode,
    pub align_corners: Option<bool>,
    /// Compute the output size from the scale factor, then map coordinates by
    /// `in / out` rather than by the scale factor.
    pub recompute_scale_factor: Option<bool>,
}

impl InterpolateArgs {
    /// To an output size `(h, w)`.
    pub fn size(size: impl Into<Pair>) -> Self {
        InterpolateArgs { size: Some(size.into()), ..Self::default() }
    }
    /// By scale factors `(h, w)`.
    pub fn scale_factor(h: f64, w: f64) -> Self {
        InterpolateArgs { scale_factor: Some((h, w)), ..Self::default() }
    }
    pub fn mode(mut self, mode: InterpolateMode) -> Self {
        self.mode = mode;
        self
    }
    pub fn align_corners(mut self, on: bool) -> Self {
        self.align_corners = Some(on);
        self
    }
    pub fn recompute_scale_factor(mut self, on: bool) -> Self {
        self.recompute_scale_factor = Some(on);
        self
    }
}

const OP: &str = "interpolate";

/// One output side from a scale factor, as PyTorch: `trunc(in * scale)`, an error when
/// that is not a number or does not fit.
fn scaled_side(input: usize, scale: f64) -> Result<usize> {
    if scale.is_nan() || scale <= 0.0 {
        return Err(Error::invalid(OP, format!("scale factors must be positive, got {scale}")));
    }
    let v = input as f64 * scale;
    if v >= autograd::shape::MAX_NUMEL as f64 {
        return Err(Error::overflow(OP, format!("input side {input} times scale factor {scale} does not fit")));
    }
    Ok(if v < 1.0 { 0 } else { v as usize })
}

/// Scale factors per axis that map coordinates (`None`: `in / out`).
type Scales = (Option<f64>, Option<f64>);

/// The output size, and the scale factors that map coordinates.
fn output_size(x: &[usize], a: &InterpolateArgs) -> Result<((usize, usize), Scales)> {
    if a.mode == InterpolateMode::Nearest && a.align_corners.is_some() {
        return Err(Error::invalid(OP, "align_corners option can only be set with the interpolating modes (bilinear)"));
    }
    if x.len() != 4 {
        return Err(Error::invalid(OP, format!("expects a 4-d input [N, C, H, W] for mode '{}', got {x:?}", a.mode.name())));
    }
    let (h, w) = (x[2], x[3]);
    let (out, scales) = match (a.size, a.scale_factor) {
        (Some(_), Some(_)) => return Err(Error::invalid(OP, "only one of size or scale_factor should be defined")),
        (None, None) => return Err(Error::invalid(OP, "either size or scale_factor should be defined")),
        (Some(_), None) if a.recompute_scale_factor == Some(true) => {
            return Err(Error::invalid(OP, "recompute_scale_factor is not meaningful with an explicit size"))
        }
        (Some(Pair(oh, ow)), None) => ((oh, ow), (None, None)),
        (None, Some((sh, sw))) => {
            let out = (scaled_side(h, sh)?, scaled_side(w, sw)?);
            (out, if a.recompute_scale_factor == Some(true) { (None, None) } else { (Some(sh), Some(sw)) })
        }
    };
    if [h, w, out.0, out.1].contains(&0) || x.contains(&0) {
        return Err(Error::invalid(
            OP,
            format!("expects a non-empty input and output sizes greater than 0, got input {x:?} and output size {:?}", out),
        ));
    }
    let mut y = x.to_vec();
    y[2] = out.0;
    y[3] = out.1;
    autograd::shape::checked_numel(OP, &y)?;
    Ok((out, scales))
}

/// PyTorch's `compute_scales_value`: `1 / scale` for a given positive scale, else `in / out`,
/// in the dtype's precision (`f`: round to it).
fn scales_value(scale: Option<f64>, input: usize, out: usize, f: fn(f64) -> f64) -> f64 {
    match scale {
        Some(s) if s > 0.0 => f(1.0 / s),
        _ => f(f(input as f64) / f(out as f64)),
    }
}

/// `floorf` of a coordinate, as PyTorch's kernels take it (through f32), capped at the
/// last index.
fn floor_index(real: f64, input: usize) -> usize {
    ((real as f32).floor().max(0.0) as usize).min(input - 1)
}

/// PyTorch's `nearest_idx`: a copy when the sizes agree, `dst / 2` when the output is
/// twice the input, else `floor(dst * scale)` in f32 (whatever the dtype), capped.
fn nearest_taps(input: usize, out: usize, scale: Option<f64>) -> Taps {
    let f32_round: fn(f64) -> f64 = |v| v as f32 as f64;
    let s = scales_value(scale, input, out, f32_round) as f32;
    let i0: Vec<usize> = (0..out)
        .map(|o| match () {
            _ if out == input => o,
            _ if out == 2 * input => o >> 1,
            _ => floor_index((o as f32 * s) as f64, input),
        })
        .collect();
    Taps { i1: i0.clone(), i0, l0: vec![1.0; out], l1: vec![0.0; out] }
}

fn linear_taps(input: usize, out: usize, align: bool, scale: Option<f64>, f: fn(f64) -> f64) -> Taps {
    let mut t = Taps::default();
    // PyTorch's `area_pixel_compute_scale` (a single output with corners aligned reads
    // the first corner).
    let s = match (align, out > 1) {
        (true, true) => f(f((input - 1) as f64) / f((out - 1) as f64)),
        (true, false) => 0.0,
        (false, _) => scales_value(scale, input, out, f),
    };
    for o in 0..out {
        if out == input {
            t.i0.push(o);
            t.i1.push(o);
            t.l0.push(1.0);
            t.l1.push(0.0);
            continue;
        }
        let real = if align { f(s * f(o as f64)) } else { f(s * (o as f64 + 0.5) - 0.5).max(0.0) };
        let i0 = floor_index(real, input);
        let l1 = f(real - i0 as f64).clamp(0.0, 1.0);
        t.i0.push(i0);
        t.i1.push(if i0 < input - 1 { i0 + 1 } else { i0 });
        t.l1.push(l1);
        t.l0.push(f(1.0 - l1));
    }
    t
}

/// Resamples the `[H, W]` planes of `input [N, C, H, W]` (`F.interpolate`).
pub fn interpolate(input: &Tensor, args: InterpolateArgs) -> Result<Tensor> {
    input.check_float(OP)?;
    let ((oh, ow), (sh, sw)) = output_size(input.shape(), &args)?;
    let (h, w) = (input.shape()[2], input.shape()[3]);
    let f: fn(f64) -> f64 = if input.dtype() == DType::F32 { |v| v as f32 as f64 } else { |v| v };
    let plan = Arc::new(match args.mode {
        InterpolateMode::Nearest => Plan { h: nearest_taps(h, oh, sh), w: nearest_taps(w, ow, sw), nearest: true },
        InterpolateMode::Bilinear => {
            let align = args.align_corners.unwrap_or(false);
            Plan { h: linear_taps(h, oh, align, sh, f), w: linear_taps(w, ow, align, sw, f), nearest: false }
        }
    });
    resample(input, plan, input.shape()[..2].to_vec(), (h, w))
}

/// The forward map with a plan, recorded; its rule is [`resample_backward`].
fn resample(x: &Tensor, plan: Arc<Plan>, lead: Vec<usize>, (h, w): (usize, usize)) -> Result<Tensor> {
    let planes = lead[0] * lead[1];
    let yshape = [lead[0], lead[1], plan.h.i0.len(), plan.w.i0.len()];
    let y = autograd::dispatch!(OP, x.storage(), |_s: T| {
        let xd = x.contiguous_data::<T>()?;
        Tensor::from_vec(kernels::forward(&xd, planes, (h, w), &plan), &yshape)?
    });
    Ok(record(OP, y, &[x], move |ctx| Ok(vec![Some(resample_backward(ctx.grad_output(), plan.clone(), lead.clone(), (h, w))?)])))
}

/// The adjoint map, recorded; its rule is [`resample`].
fn resample_backward(dy: &Tensor, plan: Arc<Plan>, lead: Vec<usize>, (h, w): (usize, usize)) -> Result<Tensor> {
    const BACK: &str = "interpolate_backward";
    let planes = lead[0] * lead[1];
    let xshape = [lead[0], lead[1], h, w];
    let dx = autograd::dispatch!(BACK, dy.storage(), |_s: T| {
        let d = dy.contiguous_data::<T>()?;
        Tensor::from_vec(kernels::backward(&d, planes, (h, w), &plan), &xshape)?
    });
    Ok(record(BACK, dx, &[dy], move |ctx| Ok(vec![Some(resample(ctx.grad_output(), plan.clone(), lead.clone(), (h, w))?)])))
}
