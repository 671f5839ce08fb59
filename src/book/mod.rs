//! The chapter's five scripts as library functions. Each returns the text its example
//! prints together with the values, so the integration tests assert exactly what a user sees.

pub mod channels;
pub mod cross_correlation;
pub mod padding_stride;
pub mod pooling;

/// PyTorch's `torch.Size([8, 8])`.
pub fn torch_size(shape: &[usize]) -> String {
    format!("torch.Size({})", autograd::error::fmt_shape(shape))
}
