//! The `Linear` layer: `y = x W^T + b`, weight `[out, in]` as in PyTorch.

use crate::error::Result;
use crate::init;
use crate::module::{Module, Visitor};
use autograd::{Parameter, Rng, Tensor};

pub struct Linear {
    pub weight: Parameter,
    pub bias: Option<Parameter>,
    pub in_features: usize,
    pub out_features: usize,
}

impl Linear {
    /// Initialised as PyTorch does (Kaiming-uniform `a = sqrt(5)`, bias `+-1/sqrt(in)`).
    pub fn new(in_features: usize, out_features: usize, rng: &mut Rng) -> Result<Linear> {
        Self::with_bias(in_features, out_features, true, rng)
    }

    pub fn with_bias(in_features: usize, out_features: usize, bias: bool, rng: &mut Rng) -> Result<Linear> {
        let weight = Parameter::new(&Tensor::zeros(&[out_features, in_features]));
        init::kaiming_uniform(&weight, 5f64.sqrt(), rng)?;
        let bias = if bias {
            let b = Parameter::new(&Tensor::zeros(&[out_features]));
            init::uniform(&b, 1.0 / (in_features.max(1) as f64).sqrt(), rng)?;
            Some(b)
        } else {
            None
        };
        Ok(Linear { weight, bias, in_features, out_features })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let bias = self.bias.as_ref().map(|b| b.tensor());
        Ok(ops::linear(x, &self.weight.tensor(), bias.as_ref())?)
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        v.parameter("weight", &self.weight);
        if let Some(b) = &self.bias {
            v.parameter("bias", b);
        }
    }
    fn describe(&self) -> String {
        format!(
            "Linear(in_features={}, out_features={}, bias={})",
            self.in_features,
            self.out_features,
            if self.bias.is_some() { "True" } else { "False" }
        )
    }
}
