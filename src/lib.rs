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

/// Everything a training script usually needs.
pub mod prelude {
    pub use autograd::{gradcheck, no_grad, rng, BackwardOptions, DType, Error, Parameter, Result, Rng, Tensor};
    pub use ops::{cross_entropy, mse, TensorOps};
}
