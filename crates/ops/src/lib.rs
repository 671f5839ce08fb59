//! # ops
//!
//! The heavy kernels of the library, each beside its gradient rule: matrix products,
//! the fused linear layer, convolution and pooling, and the functional losses. Use them as functions
//! (`ops::matmul(&a, &b)`) or through the [`TensorOps`] extension trait
//! (`a.matmul(&b)`).
//!
//! The kernels use `unsafe` for raw tile pointers and feature-enabled SIMD copies; every
//! block states the invariant that makes it sound, and the lints below keep it so.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod adaptive_pool;
mod args;
pub mod batch_norm;
pub mod conv;
pub mod conv_bn;
pub(crate) mod cpu;
pub mod linear;
pub mod loss;
pub mod matmul;
pub mod pool;
mod shared;

pub use adaptive_pool::{adaptive_avg_pool2d, adaptive_avg_pool2d_backward};
pub use batch_norm::{batch_norm_eval, batch_norm_train, BatchNormTrain};
pub use conv::{
    conv2d, conv2d_algo_applies, conv2d_algo_for, conv2d_fused, conv2d_input_grad, conv2d_weight_grad, corr2d, last_conv2d_algo,
    Conv2dAlgo, Conv2dArgs, Conv2dMap, Epilogue, Pair, Pool2x2,
};
pub use conv_bn::{conv2d_bn_train, BatchNormParams};
pub use linear::linear;
pub use loss::{
    binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, cross_entropy_with, huber_loss, kl_div, l1_loss, mse, mse_loss,
    nll_loss, smooth_l1_loss, CrossEntropyOptions, NllLossOptions, Reduction, Targets,
};
pub use matmul::matmul;
pub use pool::{avg_pool2d, avg_pool2d_backward, max_pool2d, Pool2dArgs};

// Issue 26: more layers' ops (activations, normalisation, transposed convolution,
// embeddings, resampling, dropout).
pub mod activation;
pub mod conv_transpose;
pub mod dropout;
pub mod embedding;
pub mod interpolate;
pub mod norm;
pub use activation::{elu, erf, gelu, hardtanh, leaky_relu, silu, softplus, GeluApproximate};
pub use adaptive_pool::{adaptive_max_pool2d, adaptive_max_pool2d_with_indices};
pub use conv_transpose::{conv_transpose2d, ConvTranspose2dArgs};
pub use dropout::{dropout, dropout2d};
pub use embedding::{embedding, EmbeddingOptions};
pub use interpolate::{interpolate, InterpolateArgs, InterpolateMode};
pub use norm::{group_norm, layer_norm};

use autograd::{Result, Tensor};

/// Method syntax for the ops of this crate on [`Tensor`].
pub trait TensorOps {
    /// `self @ other` with PyTorch's `matmul` rules.
    fn matmul(&self, other: &Tensor) -> Result<Tensor>;
    /// 2-d convolution with this tensor as the input.
    fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, args: Conv2dArgs) -> Result<Tensor>;
    fn max_pool2d(&self, args: Pool2dArgs) -> Result<Tensor>;
    fn avg_pool2d(&self, args: Pool2dArgs) -> Result<Tensor>;
}

impl TensorOps for Tensor {
    fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        matmul::matmul(self, other)
    }
    fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, args: Conv2dArgs) -> Result<Tensor> {
        conv::conv2d(self, weight, bias, args)
    }
    fn max_pool2d(&self, args: Pool2dArgs) -> Result<Tensor> {
        pool::max_pool2d(self, args)
    }
    fn avg_pool2d(&self, args: Pool2dArgs) -> Result<Tensor> {
        pool::avg_pool2d(self, args)
    }
}
