//! Parameter-free layers: activations and `Flatten`.

use crate::error::Result;
use crate::module::Module;
use autograd::Tensor;

macro_rules! activation {
    ($(#[$doc:meta])* $name:ident, $method:ident) => {
        $(#[$doc])*
        #[derive(Default, Clone, Copy, Debug)]
        pub struct $name;
        impl Module for $name {
            fn forward(&self, x: &Tensor) -> Result<Tensor> {
                Ok(x.$method())
            }
            fn describe(&self) -> String {
                format!("{}()", stringify!($name))
            }
        }
    };
}

activation!(
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    sigmoid
);
activation!(
    /// `max(x, 0)`.
    ReLU,
    relu
);
activation!(
    /// Hyperbolic tangent.
    Tanh,
    tanh
);

/// Flattens dims `start_dim..=end_dim` into one (PyTorch's `nn.Flatten`); the default,
/// `Flatten::default()`, flattens every dim after the batch dim (C, H, W order).
#[derive(Clone, Copy, Debug)]
pub struct Flatten {
    pub start_dim: isize,
    pub end_dim: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start_dim: 1, end_dim: -1 }
    }
}

impl Flatten {
    pub fn new(start_dim: isize, end_dim: isize) -> Self {
        Flatten { start_dim, end_dim }
    }
}

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // A 1-d input with the default dims is returned as it is, as PyTorch does for a
        // 0-d one: there is nothing after the batch dim to flatten.
        if x.rank() < 2 && self.start_dim == 1 {
            return Ok(x.clone());
        }
        Ok(x.flatten(self.start_dim, self.end_dim)?)
    }
    fn describe(&self) -> String {
        format!("Flatten(start_dim={}, end_dim={})", self.start_dim, self.end_dim)
    }
}

/// Passes its input through (PyTorch's `nn.Identity`), e.g. a residual branch's shortcut.
#[derive(Default, Clone, Copy, Debug)]
pub struct Identity;

impl Module for Identity {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
}
