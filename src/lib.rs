#![doc = include_str!("../README.md")]
//! ---
//! # convnet
//!
//! Define-by-run reverse-mode autodiff over n-dimensional tensors, fast CPU kernels for
//! matrix products (and, next, convolution and pooling), and the layers to build and train
//! convolutional networks.
//!
//! This facade re-exports the workspace crates:
//! - [`autograd`]: tensors, the tape, parameters, the tensor algebra, gradcheck;
//! - [`ops`]: heavy kernels with their gradient rules (matmul, losses);
//! - [`nn`]: modules and training.

pub use autograd;
pub use nn;
pub use ops;

pub mod alloc_count;
pub mod basics;
pub mod bench;
pub mod book;
pub mod cli;
pub mod conv_sweep;
pub mod lenet;
pub mod plot;
pub mod train;

/// The one error type at the surface: every call of [`autograd`], [`ops`] and [`nn`]
/// converts into it with `?` (an autograd or ops error becomes [`nn::Error::Tensor`]), so
/// a program using all three returns one `Result`.
pub use nn::Error;

/// `Result<T, convnet::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a user writing and training a model needs, in one import:
///
/// ```
/// use convnet::prelude::*;
///
/// fn main() -> Result<()> {
///     let net = Sequential::new().append(Linear::new(4, 3, &mut rng(0))?).append(ReLU);
///     let x = Tensor::ones(&[2, 4]);
///     let loss = ops::cross_entropy(&net.forward(&x)?, &[0, 2])?; // an ops call
///     let mut opt = Sgd::new(net.named_parameters(), 0.1)?; // an nn call
///     loss.backward()?; // an autograd call
///     opt.step()?;
///     Ok(())
/// }
/// ```
pub mod prelude {
    pub use crate::{Error, Result};
    pub use autograd::{
        grad, gradcheck, gradgradcheck, manual_seed, no_grad, rng, BackwardOptions, DType, Generator, GradcheckOptions, Parameter, Rng,
        Tensor,
    };
    pub use nn::optim::lr_scheduler::{CosineAnnealingLR, ExponentialLR, LinearLR, LrScheduler, MultiStepLR, OneCycleLR, StepLR};
    pub use nn::{
        clip_grad_norm_, clip_grad_value_, Adagrad, Adam, AdamW, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, BceLoss,
        BceWithLogitsLoss, Buffer, Conv2d, Conv2dConfig, CrossEntropyLoss, DataLoader, Dataset, FashionMnist, Flatten, HuberLoss, Identity,
        KlDivLoss, L1Loss, Linear, MaxPool2d, Module, MseLoss, NllLoss, Optimizer, ReLU, Residual, RmsProp, Sequential, Sgd, Sigmoid,
        SmoothL1Loss, Tanh, Training, Visitor,
    };
    pub use nn::{
        AdaptiveMaxPool2d, ConvTranspose2d, Dropout, Dropout2d, Embedding, GroupNorm, Hardtanh, LayerNorm, LeakyReLU, LogSoftmax, SiLU,
        Softmax, Softplus, Trainer, Upsample, ELU, GELU,
    };
    pub use ops::{self, cross_entropy, mse, Conv2dArgs, Pool2dArgs, Reduction, TensorOps};
}
