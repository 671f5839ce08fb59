//! `GroupNorm`, as PyTorch's: the channels of an `[N, C, *]` input split into
//! `num_groups` groups, each sample's group normalised over its channels and positions,
//! then per-channel `weight` (ones) and `bias` (zeros) when `affine`. No running
//! statistics: the same in both modes. The maths is `ops::group_norm`.

use crate::activation::py_float;
use crate::error::{Error, Result};
use crate::module::{Module, Visitor};
use autograd::{Parameter, Tensor};

/// Options of a [`GroupNorm`], PyTorch's defaults: eps 1e-5, affine weight and bias.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormConfig {
    pub num_groups: usize,
    pub num_channels: usize,
    pub eps: f64,
    pub affine: bool,
    /// A bias beside the weight (PyTorch's `bias=True`; only with `affine`).
    pub bias: bool,
}

impl GroupNormConfig {
    pub fn new(num_groups: usize, num_channels: usize) -> Self {
        GroupNormConfig { num_groups, num_channels, eps: 1e-5, affine: true, bias: true }
    }
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    pub fn affine(mut self, on: bool) -> Self {
        self.affine = on;
        self
    }
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }
}

/// Group normalisation of `[N, C, *]` inputs.
pub struct GroupNorm {
    pub weight: Option<Parameter>,
    pub bias: Option<Parameter>,
    pub config: GroupNormConfig,
}

impl GroupNorm {
    /// An error naming `GroupNorm` unless `num_groups` is positive and divides
    /// `num_channels` (PyTorch's `ValueError`).
    pub fn new(config: GroupNormConfig) -> Result<GroupNorm> {
        let (g, c) = (config.num_groups, config.num_channels);
        if g == 0 || !c.is_multiple_of(g) {
            return Err(Error::config("GroupNorm", format!("num_channels {c} must be divisible by num_groups {g} (a positive number)")));
        }
        let weight = config.affine.then(|| Parameter::new(&Tensor::ones(&[c])));
        let bias = (config.affine && config.bias).then(|| Parameter::new(&Tensor::zeros(&[c])));
        Ok(GroupNorm { weight, bias, config })
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        if x.rank() < 2 || x.shape()[1] != c.num_channels {
            return Err(autograd::Error::invalid(
                "group_norm",
                format!("GroupNorm({}, {}) expects an input [N, {}, *], got {:?}", c.num_groups, c.num_channels, c.num_channels, x.shape()),
            )
            .into());
        }
        let w = self.weight.as_ref().map(|p| p.tensor());
        let b = self.bias.as_ref().map(|p| p.tensor());
        Ok(ops::group_norm(x, c.num_groups, w.as_ref(), b.as_ref(), c.eps)?)
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        if let Some(w) = &self.weight {
            v.parameter("weight", w);
        }
        if let Some(b) = &self.bias {
            v.parameter("bias", b);
        }
    }
    fn describe(&self) -> String {
        let c = &self.config;
        let py = |b: bool| if b { "True" } else { "False" };
        format!(
            "GroupNorm({}, {}, eps={}, affine={}, bias={})",
            c.num_groups,
            c.num_channels,
            py_float(c.eps),
            py(c.affine),
            py(c.affine && c.bias)
        )
    }
}
