//! The book's next chapter (SPEC section 7): BatchNorm LeNet and ResNet-18, with PyTorch's
//! `state_dict` keys, so a model trained in PyTorch loads here and ours loads there.
//! Both are PyTorch-default initialised. [`Residual`] is written as a user would write a
//! module: a struct, a `forward`, a `visit`.

use crate::activation::{Flatten, ReLU, Sigmoid};
use crate::batch_norm::{BatchNorm, BatchNormConfig};
use crate::conv::{Conv2d, Conv2dConfig};
use crate::error::Result;
use crate::linear::Linear;
use crate::module::{Module, Sequential, Visitor};
use crate::pool::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};
use autograd::{Activation, Rng, Tensor};
use ops::Pool2dArgs;

/// D2L 8.5's LeNet with batch normalisation after every convolution and hidden linear
/// layer (no padding on the first convolution, hence `Linear(256, 120)`).
pub fn bn_lenet(rng: &mut Rng) -> Result<Sequential> {
    let bn2 = |c| BatchNorm::new_2d(BatchNormConfig::new(c));
    let bn1 = |c| BatchNorm::new_1d(BatchNormConfig::new(c));
    let pool = || AvgPool2d::new(Pool2dArgs::new(2).stride(2));
    Ok(Sequential::new()
        .append(Conv2d::new(Conv2dConfig::new(1, 6, 5), rng)?)
        .append(bn2(6))
        .append(Sigmoid)
        .append(pool())
        .append(Conv2d::new(Conv2dConfig::new(6, 16, 5), rng)?)
        .append(bn2(16))
        .append(Sigmoid)
        .append(pool())
        .append(Flatten::default())
        .append(Linear::new(256, 120, rng)?)
        .append(bn1(120))
        .append(Sigmoid)
        .append(Linear::new(120, 84, rng)?)
        .append(bn1(84))
        .append(Sigmoid)
        .append(Linear::new(84, 10, rng)?))
}

/// D2L 8.6's residual block: `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, the
/// shortcut a strided 1x1 convolution (`conv3`) when the shape changes.
pub struct Residual {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub conv3: Option<Conv2d>,
    pub bn1: BatchNorm,
    pub bn2: BatchNorm,
}

impl Residual {
    pub fn new(cin: usize, cout: usize, use_1x1conv: bool, stride: usize, rng: &mut Rng) -> Result<Residual> {
        Ok(Residual {
            conv1: Conv2d::new(Conv2dConfig::new(cin, cout, 3).padding(1).stride(stride), rng)?,
            conv2: Conv2d::new(Conv2dConfig::new(cout, cout, 3).padding(1), rng)?,
            conv3: if use_1x1conv { Some(Conv2d::new(Conv2dConfig::new(cin, cout, 1).stride(stride), rng)?) } else { None },
            bn1: BatchNorm::new_2d(BatchNormConfig::new(cout)),
            bn2: BatchNorm::new_2d(BatchNormConfig::new(cout)),
        })
    }
}

impl Module for Residual {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // In evaluation mode each batch norm folds into its convolution (crate::fuse).
        let y = crate::fuse::conv_bn_act(&self.conv1, &self.bn1, Some(Activation::Relu), x)?;
        let y = crate::fuse::conv_bn_act(&self.conv2, &self.bn2, None, &y)?;
        let shortcut = match &self.conv3 {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        Ok(y.add(&shortcut)?.relu())
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        // PyTorch's registration order: conv1, conv2, conv3, bn1, bn2.
        v.module("conv1", &self.conv1);
        v.module("conv2", &self.conv2);
        if let Some(c) = &self.conv3 {
            v.module("conv3", c);
        }
        v.module("bn1", &self.bn1);
        v.module("bn2", &self.bn2);
    }
}

/// ResNet-18 as SPEC defines it (D2L 8.6 on 28x28 inputs): a 7x7 stem with batch norm,
/// ReLU and 3x3 max pooling, four stages of two residual blocks with 64, 128, 256 and 512
/// channels, global average pooling and a linear classifier over 10 classes.
pub fn resnet18(rng: &mut Rng) -> Result<Sequential> {
    resnet18_with_widths([64, 128, 256, 512], rng)
}

/// [`resnet18`] with other stage widths (same structure and keys), e.g. `[8, 16, 32, 64]`
/// for small tests and fixtures.
pub fn resnet18_with_widths(widths: [usize; 4], rng: &mut Rng) -> Result<Sequential> {
    let stem = Sequential::new()
        .append(Conv2d::new(Conv2dConfig::new(1, widths[0], 7).stride(2).padding(3), rng)?)
        .append(BatchNorm::new_2d(BatchNormConfig::new(widths[0])))
        .append(ReLU)
        .append(MaxPool2d::new(Pool2dArgs::new(3).stride(2).padding(1)));
    let mut net = Sequential::new().append(stem);
    let mut cin = widths[0];
    for (i, &cout) in widths.iter().enumerate() {
        let first = i == 0;
        let mut stage = Sequential::new();
        for b in 0..2 {
            stage = if b == 0 && !first {
                stage.append(Residual::new(cin, cout, true, 2, rng)?)
            } else {
                stage.append(Residual::new(cout, cout, false, 1, rng)?)
            };
        }
        net = net.append(stage);
        cin = cout;
    }
    Ok(net.append(AdaptiveAvgPool2d::new((1, 1))).append(Flatten::default()).append(Linear::new(widths[3], 10, rng)?))
}
