//! The `Conv2d` layer over `ops::conv2d`.

use crate::error::{Error, Result};
use crate::init;
use crate::module::{Module, Visitor};
use autograd::{Activation, Parameter, Rng, Tensor};
use ops::{Conv2dArgs, Epilogue, Pair};

/// Shape and options of a [`Conv2d`], PyTorch's defaults otherwise.
#[derive(Clone, Copy, Debug)]
pub struct Conv2dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: Pair,
    pub args: Conv2dArgs,
    pub bias: bool,
}

impl Conv2dConfig {
    pub fn new(in_channels: usize, out_channels: usize, kernel: impl Into<Pair>) -> Self {
        Conv2dConfig { in_channels, out_channels, kernel: kernel.into(), args: Conv2dArgs::default(), bias: true }
    }
    pub fn stride(mut self, s: impl Into<Pair>) -> Self {
        self.args = self.args.stride(s);
        self
    }
    pub fn padding(mut self, p: impl Into<Pair>) -> Self {
        self.args = self.args.padding(p);
        self
    }
    pub fn dilation(mut self, d: impl Into<Pair>) -> Self {
        self.args = self.args.dilation(d);
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.args = self.args.groups(g);
        self
    }
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
}

/// 2-d convolution layer: `weight [out, in/groups, kh, kw]`, optional `bias [out]`.
pub struct Conv2d {
    pub weight: Parameter,
    pub bias: Option<Parameter>,
    pub config: Conv2dConfig,
}

impl Conv2d {
    /// A layer initialised as PyTorch does: weight Kaiming-uniform with `a = sqrt(5)`
    /// (uniform in `+-1/sqrt(fan_in)`), bias uniform in `+-1/sqrt(fan_in)`.
    pub fn new(config: Conv2dConfig, rng: &mut Rng) -> Result<Conv2d> {
        let g = config.args.groups;
        let Pair(kh, kw) = config.kernel;
        if g == 0 || !config.in_channels.is_multiple_of(g) || !config.out_channels.is_multiple_of(g) || kh == 0 || kw == 0 {
            return Err(Error::config(
                "Conv2d",
                format!(
                    "in_channels {} and out_channels {} must be divisible by groups {}, and the kernel {:?} positive",
                    config.in_channels,
                    config.out_channels,
                    g,
                    (kh, kw)
                ),
            ));
        }
        let shape = [config.out_channels, config.in_channels / g, kh, kw];
        let weight = Parameter::new(&Tensor::zeros(&shape));
        init::kaiming_uniform(&weight, 5f64.sqrt(), rng)?;
        let bias = if config.bias {
            let b = Parameter::new(&Tensor::zeros(&[config.out_channels]));
            init::uniform(&b, 1.0 / (init::fans(&shape).0 as f64).sqrt(), rng)?;
            Some(b)
        } else {
            None
        };
        Ok(Conv2d { weight, bias, config })
    }

    /// The convolution followed by `epilogue` (an activation, then maybe 2x2 pooling) as
    /// one op, `ops::conv2d_fused`: bitwise the values and gradients of the layers in turn.
    /// `Sequential` calls it for the runs it fuses.
    pub fn forward_fused(&self, x: &Tensor, epilogue: Epilogue) -> Result<Tensor> {
        let b = self.bias.as_ref().map(|b| b.tensor());
        Ok(ops::conv2d_fused(x, &self.weight.tensor(), b.as_ref(), self.config.args, epilogue)?)
    }
}

impl Conv2d {
    /// This convolution followed by `bn` in evaluation mode (then `epilogue`), with the
    /// batch norm folded into the convolution: weight `w scale[o]`, bias `(b[o] -
    /// mean[o]) scale[o] + beta[o]` (built with tape ops, so the parameters of both layers
    /// get their gradients). One pass over the output instead of three more. The sums
    /// differ from the layers in turn only in rounding (the scale multiplies each product
    /// rather than the sum): within 1e-6 relative in f32. `None` when `bn` is in training
    /// mode or keeps no running statistics.
    pub fn forward_folded(&self, x: &Tensor, bn: &crate::BatchNorm, epilogue: Epilogue) -> Result<Option<Tensor>> {
        let Some((scale, shift)) = bn.eval_affine()? else { return Ok(None) };
        let w = self.weight.tensor();
        if scale.shape() != [w.shape()[0]] {
            return Err(autograd::Error::mismatch(
                "conv2d_folded",
                "batch norm channels must match the convolution's outputs",
                scale.shape(),
                &w.shape()[..1],
            )
            .into());
        }
        let w = w.mul(&scale.reshape_to(&[w.shape()[0], 1, 1, 1])?)?;
        let b = match &self.bias {
            Some(b) => b.tensor().mul(&scale)?.add(&shift)?,
            None => shift,
        };
        Ok(Some(ops::conv2d_fused(x, &w, Some(&b), self.config.args, epilogue)?))
    }

    /// This convolution, then `bn` normalising with the batch's statistics (training
    /// mode, or a layer without running statistics), then `act`, as one op
    /// (`ops::conv2d_bn_train`): a pass over the output fewer each way and one tensor
    /// fewer written and kept for the backward, with bitwise the values and gradients of the layers in
    /// turn; `bn`'s running statistics are updated as its `forward` does. `None` when `bn`
    /// folds instead ([`forward_folded`](Self::forward_folded)) or is not a `BatchNorm2d`.
    pub fn forward_bn_train(&self, x: &Tensor, bn: &crate::BatchNorm, act: Option<Activation>) -> Result<Option<Tensor>> {
        if bn.folds() || !bn.is_2d() {
            return Ok(None);
        }
        let b = self.bias.as_ref().map(|b| b.tensor());
        let (w, args) = (self.weight.tensor(), self.config.args);
        bn.with_batch_stats(|p| ops::conv2d_bn_train(x, &w, b.as_ref(), args, p, act)).map(Some)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b = self.bias.as_ref().map(|b| b.tensor());
        Ok(ops::conv2d(x, &self.weight.tensor(), b.as_ref(), self.config.args)?)
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        v.parameter("weight", &self.weight);
        if let Some(b) = &self.bias {
            v.parameter("bias", b);
        }
    }
    fn describe(&self) -> String {
        let c = &self.config;
        let mut s = format!(
            "Conv2d({}, {}, kernel_size=({}, {}), stride=({}, {})",
            c.in_channels, c.out_channels, c.kernel.0, c.kernel.1, c.args.stride.0, c.args.stride.1
        );
        if c.args.padding != Pair(0, 0) {
            s += &format!(", padding=({}, {})", c.args.padding.0, c.args.padding.1);
        }
        if c.args.dilation != Pair(1, 1) {
            s += &format!(", dilation=({}, {})", c.args.dilation.0, c.args.dilation.1);
        }
        if c.args.groups != 1 {
            s += &format!(", groups={}", c.args.groups);
        }
        if !c.bias {
            s += ", bias=False";
        }
        s + ")"
    }
}
