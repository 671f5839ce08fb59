//! # ops
//!
//! The heavy kernels of the library, each beside its gradient rule: matrix products now,
//! convolution and pooling next, and the functional losses. Use them as functions
//! (`ops::matmul(&a, &b)`) or through the [`TensorOps`] extension trait
//! (`a.matmul(&b)`).

pub mod gemm;
pub mod loss;
pub mod matmul;

pub use loss::{cross_entropy, mse};
pub use matmul::matmul;

use autograd::{Result, Tensor};

/// Method syntax for the ops of this crate on [`Tensor`].
pub trait TensorOps {
    /// `self @ other` with PyTorch's `matmul` rules.
    fn matmul(&self, other: &Tensor) -> Result<Tensor>;
}

impl TensorOps for Tensor {
    fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        matmul::matmul(self, other)
    }
}
