//! The book's LeNet-5 (SPEC section 6), as an `nn::Sequential` whose parameter names match
//! PyTorch's `state_dict()` of the same network: `0.weight`, `3.weight`, `7.weight`, ...

use crate::activation::{Flatten, ReLU, Sigmoid};
use crate::conv::{Conv2d, Conv2dConfig};
use crate::error::Result;
use crate::init;
use crate::linear::Linear;
use crate::module::{Module, Sequential};
use crate::pool::{AvgPool2d, MaxPool2d};
use autograd::Rng;
use ops::Pool2dArgs;

/// Pooling of the two subsampling layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pool {
    #[default]
    Avg,
    Max,
}

/// Activation after each conv and hidden linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Act {
    #[default]
    Sigmoid,
    Relu,
}

/// The book's network with the chosen pooling and activation, PyTorch-default
/// initialised (call [`xavier_init`] for the book's recipe).
pub fn lenet(pool: Pool, act: Act, rng: &mut Rng) -> Result<Sequential> {
    let act_layer = |s: Sequential| match act {
        Act::Sigmoid => s.append(Sigmoid),
        Act::Relu => s.append(ReLU),
    };
    let pool_layer = |s: Sequential| match pool {
        Pool::Avg => s.append(AvgPool2d::new(Pool2dArgs::new(2).stride(2))),
        Pool::Max => s.append(MaxPool2d::new(Pool2dArgs::new(2).stride(2))),
    };
    let mut s = Sequential::new().append(Conv2d::new(Conv2dConfig::new(1, 6, 5).padding(2), rng)?);
    s = pool_layer(act_layer(s));
    s = s.append(Conv2d::new(Conv2dConfig::new(6, 16, 5), rng)?);
    s = pool_layer(act_layer(s)).append(Flatten::default());
    s = act_layer(s.append(Linear::new(16 * 5 * 5, 120, rng)?));
    s = act_layer(s.append(Linear::new(120, 84, rng)?));
    Ok(s.append(Linear::new(84, 10, rng)?))
}

/// The book's init: Xavier-uniform for every conv and linear weight (biases keep their
/// default init, as in the book's `init_weights`).
pub fn xavier_init(net: &dyn Module, rng: &mut Rng) -> Result<()> {
    for (name, p) in net.named_parameters() {
        if name.ends_with("weight") {
            init::xavier_uniform(&p, 1.0, rng)?;
        }
    }
    Ok(())
}
