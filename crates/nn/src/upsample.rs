//! `Upsample` (and PyTorch's two fixed-mode aliases), the layer over `ops::interpolate`:
//! nearest or bilinear resampling of `[N, C, H, W]` inputs to a size or by scale factors.

use crate::activation::py_float;
use crate::error::{Error, Result};
use crate::module::Module;
use autograd::Tensor;
use ops::{InterpolateArgs, InterpolateMode, Pair};

/// Resampling to a fixed size or by fixed scale factors (PyTorch's `nn.Upsample`).
#[derive(Clone, Copy, Debug)]
pub struct Upsample {
    pub args: InterpolateArgs,
    /// PyTorch's name for the repr (`Upsample`, `UpsamplingNearest2d`, ...).
    name: &'static str,
}

impl Upsample {
    /// `nn.Upsample(size=..., scale_factor=..., mode=..., align_corners=...,
    /// recompute_scale_factor=...)` from the arguments of `ops::interpolate`; checked as
    /// the first forward would (an error naming `Upsample`).
    pub fn new(args: InterpolateArgs) -> Result<Upsample> {
        Upsample::named(args, "Upsample")
    }

    /// `nn.Upsample(size=(h, w), mode=mode)`.
    pub fn to_size(size: impl Into<Pair>, mode: InterpolateMode) -> Result<Upsample> {
        Upsample::new(InterpolateArgs::size(size).mode(mode))
    }

    /// `nn.Upsample(scale_factor=(sh, sw), mode=mode)`.
    pub fn by_scale(scale_h: f64, scale_w: f64, mode: InterpolateMode) -> Result<Upsample> {
        Upsample::new(InterpolateArgs::scale_factor(scale_h, scale_w).mode(mode))
    }

    /// `nn.UpsamplingNearest2d(scale_factor=...)`: nearest.
    pub fn nearest2d(args: InterpolateArgs) -> Result<Upsample> {
        Upsample::named(args.mode(InterpolateMode::Nearest), "UpsamplingNearest2d")
    }

    /// `nn.UpsamplingBilinear2d(...)`: bilinear with `align_corners=True`.
    pub fn bilinear2d(args: InterpolateArgs) -> Result<Upsample> {
        Upsample::named(args.mode(InterpolateMode::Bilinear).align_corners(true), "UpsamplingBilinear2d")
    }

    fn named(args: InterpolateArgs, name: &'static str) -> Result<Upsample> {
        // Checked against a 1x1 input the way interpolate checks it.
        let probe = Tensor::zeros(&[1, 1, 1, 1]);
        match ops::interpolate(&probe, args) {
            Err(autograd::Error::InvalidArgument { msg, .. }) if !msg.contains("greater than 0") => Err(Error::config("Upsample", msg)),
            _ => Ok(Upsample { args, name }),
        }
    }
}

impl Module for Upsample {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::interpolate(x, self.args)?)
    }
    fn describe(&self) -> String {
        let a = &self.args;
        let mut s = format!("{}(", self.name);
        if let Some(Pair(h, w)) = a.size {
            s += &format!("size=({h}, {w})");
        } else if let Some((h, w)) = a.scale_factor {
            if h == w {
                s += &format!("scale_factor={}", py_float(h));
            } else {
                s += &format!("scale_factor=({}, {})", py_float(h), py_float(w));
            }
        }
        s += &format!(", mode='{}'", a.mode.name());
        if self.name == "Upsample" && a.align_corners == Some(true) {
            s += ", align_corners=True";
        }
        s + ")"
    }
}
