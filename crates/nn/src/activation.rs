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

/// Flattens every dim after the batch dim (C, H, W order, as PyTorch).
#[derive(Default, Clone, Copy, Debug)]
pub struct Flatten;

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() < 2 {
            return Ok(x.clone());
        }
        Ok(x.flatten(1, -1)?)
    }
    fn describe(&self) -> String {
        "Flatten(start_dim=1, end_dim=-1)".into()
    }
}
