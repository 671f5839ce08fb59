//! The chapter's five scripts as library functions. Each returns the text its example
//! prints together with the values, so the integration tests assert exactly what a user sees.

pub mod channels;
pub mod cross_correlation;
pub mod padding_stride;
pub mod pooling;

/// PyTorch's `torch.Size([8, 8])`.
pub fn torch_size(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("torch.Size([{}])", dims.join(", "))
}
