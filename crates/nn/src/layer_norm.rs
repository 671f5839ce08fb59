//! `LayerNorm`, as PyTorch's: normalises over the last `normalized_shape.len()` dims of
//! each input, with per-element `weight` (ones) and `bias` (zeros) of that shape when
//! `elementwise_affine` (and `bias`). The same in training and evaluation mode: it keeps
//! no running statistics. The maths is `ops::layer_norm`.

use crate::activation::py_float;
use crate::error::{Error, Result};
use crate::module::{Module, Visitor};
use autograd::{Parameter, Tensor};

/// Options of a [`LayerNorm`], PyTorch's defaults: eps 1e-5, affine weight and bias.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNormConfig {
    pub normalized_shape: Vec<usize>,
    pub eps: f64,
    pub elementwise_affine: bool,
    /// A bias beside the weight (PyTorch's `bias=True`; only with `elementwise_affine`).
    pub bias: bool,
}

impl LayerNormConfig {
    pub fn new(normalized_shape: &[usize]) -> Self {
        LayerNormConfig { normalized_shape: normalized_shape.to_vec(), eps: 1e-5, elementwise_affine: true, bias: true }
    }
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    pub fn elementwise_affine(mut self, on: bool) -> Self {
        self.elementwise_affine = on;
        self
    }
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }
}

/// Layer normalisation over the trailing `normalized_shape` dims.
pub struct LayerNorm {
    pub weight: Option<Parameter>,
    pub bias: Option<Parameter>,
    pub config: LayerNormConfig,
}

impl LayerNorm {
    /// An error naming `LayerNorm` for an empty `normalized_shape` (PyTorch needs at
    /// least one dim) or a shape too large.
    pub fn new(config: LayerNormConfig) -> Result<LayerNorm> {
        let s = &config.normalized_shape;
        if s.is_empty() {
            return Err(Error::config("LayerNorm", "normalized_shape must have at least one dim"));
        }
        autograd::shape::checked_numel("LayerNorm", s)?;
        let affine = config.elementwise_affine;
        let weight = affine.then(|| Parameter::new(&Tensor::ones(s)));
        let bias = (affine && config.bias).then(|| Parameter::new(&Tensor::zeros(s)));
        Ok(LayerNorm { weight, bias, config })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.as_ref().map(|p| p.tensor());
        let b = self.bias.as_ref().map(|p| p.tensor());
        Ok(ops::layer_norm(x, &self.config.normalized_shape, w.as_ref(), b.as_ref(), self.config.eps)?)
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
        let shape = c.normalized_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        let shape = if c.normalized_shape.len() == 1 { format!("({shape},)") } else { format!("({shape})") };
        let py = |b: bool| if b { "True" } else { "False" };
        format!(
            "LayerNorm({shape}, eps={}, elementwise_affine={}, bias={})",
            py_float(c.eps),
            py(c.elementwise_affine),
            py(c.elementwise_affine && c.bias)
        )
    }
}
