//! The `ConvTranspose2d` layer over `ops::conv_transpose2d`: PyTorch's weight layout
//! `[in, out/groups, kh, kw]`, optional bias `[out]`, and PyTorch's initialisation.

use crate::error::{Error, Result};
use crate::init;
use crate::module::{Module, Visitor};
use autograd::{Parameter, Rng, Tensor};
use ops::{ConvTranspose2dArgs, Pair};

/// Shape and options of a [`ConvTranspose2d`], PyTorch's defaults otherwise (stride 1,
/// padding 0, output_padding 0, groups 1, bias, dilation 1).
#[derive(Clone, Copy, Debug)]
pub struct ConvTranspose2dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: Pair,
    pub args: ConvTranspose2dArgs,
    pub bias: bool,
}

impl ConvTranspose2dConfig {
    pub fn new(in_channels: usize, out_channels: usize, kernel: impl Into<Pair>) -> Self {
        ConvTranspose2dConfig { in_channels, out_channels, kernel: kernel.into(), args: ConvTranspose2dArgs::default(), bias: true }
    }
    pub fn stride(mut self, s: impl Into<Pair>) -> Self {
        self.args = self.args.stride(s);
        self
    }
    pub fn padding(mut self, p: impl Into<Pair>) -> Self {
        self.args = self.args.padding(p);
        self
    }
    pub fn output_padding(mut self, p: impl Into<Pair>) -> Self {
        self.args = self.args.output_padding(p);
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

/// 2-d transposed convolution layer: `weight [in, out/groups, kh, kw]`, optional
/// `bias [out]`.
pub struct ConvTranspose2d {
    pub weight: Parameter,
    pub bias: Option<Parameter>,
    pub config: ConvTranspose2dConfig,
}

impl ConvTranspose2d {
    /// A layer initialised as PyTorch does: weight Kaiming-uniform with `a = sqrt(5)` and
    /// bias uniform in `+-1/sqrt(fan_in)`, where `fan_in` is PyTorch's for this weight,
    /// `weight.size(1) kh kw = (out/groups) kh kw`. An error naming `ConvTranspose2d` for
    /// channels not divisible by `groups`, a zero kernel, stride or dilation, or an
    /// output padding not below the stride or the dilation.
    pub fn new(config: ConvTranspose2dConfig, rng: &mut Rng) -> Result<ConvTranspose2d> {
        let a = config.args;
        let g = a.conv.groups;
        let Pair(kh, kw) = config.kernel;
        let (Pair(sh, sw), Pair(dh, dw), Pair(oph, opw)) = (a.conv.stride, a.conv.dilation, a.output_padding);
        if g == 0 || !config.in_channels.is_multiple_of(g) || !config.out_channels.is_multiple_of(g) {
            return Err(Error::config(
                "ConvTranspose2d",
                format!("in_channels {} and out_channels {} must be divisible by groups {g}", config.in_channels, config.out_channels),
            ));
        }
        if [kh, kw, sh, sw, dh, dw].contains(&0) {
            return Err(Error::config(
                "ConvTranspose2d",
                format!("kernel {:?}, stride {:?} and dilation {:?} must be positive", (kh, kw), (sh, sw), (dh, dw)),
            ));
        }
        if (oph >= sh && oph >= dh) || (opw >= sw && opw >= dw) {
            return Err(Error::config(
                "ConvTranspose2d",
                format!("output padding {:?} must be smaller than either stride {:?} or dilation {:?}", (oph, opw), (sh, sw), (dh, dw)),
            ));
        }
        let shape = [config.in_channels, config.out_channels / g, kh, kw];
        autograd::shape::checked_numel("ConvTranspose2d", &shape)?;
        let weight = Parameter::new(&Tensor::zeros(&shape));
        init::kaiming_uniform(&weight, 5f64.sqrt(), rng)?;
        let bias = if config.bias {
            let b = Parameter::new(&Tensor::zeros(&[config.out_channels]));
            init::uniform(&b, 1.0 / (init::fans(&shape).0.max(1) as f64).sqrt(), rng)?;
            Some(b)
        } else {
            None
        };
        Ok(ConvTranspose2d { weight, bias, config })
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b = self.bias.as_ref().map(|b| b.tensor());
        Ok(ops::conv_transpose2d(x, &self.weight.tensor(), b.as_ref(), self.config.args)?)
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        v.parameter("weight", &self.weight);
        if let Some(b) = &self.bias {
            v.parameter("bias", b);
        }
    }
    fn describe(&self) -> String {
        let c = &self.config;
        let a = c.args;
        let pair = |p: Pair| format!("({}, {})", p.0, p.1);
        let mut s = format!(
            "ConvTranspose2d({}, {}, kernel_size={}, stride={}",
            c.in_channels,
            c.out_channels,
            pair(c.kernel),
            pair(a.conv.stride)
        );
        if a.conv.padding != Pair(0, 0) {
            s += &format!(", padding={}", pair(a.conv.padding));
        }
        if a.conv.dilation != Pair(1, 1) {
            s += &format!(", dilation={}", pair(a.conv.dilation));
        }
        if a.output_padding != Pair(0, 0) {
            s += &format!(", output_padding={}", pair(a.output_padding));
        }
        if a.conv.groups != 1 {
            s += &format!(", groups={}", a.conv.groups);
        }
        if !c.bias {
            s += ", bias=False";
        }
        s + ")"
    }
}
