//! Pooling layers over `ops::max_pool2d` and `ops::avg_pool2d`.

use crate::error::Result;
use crate::module::Module;
use autograd::Tensor;
use ops::{Pair, Pool2dArgs};

fn describe(name: &str, a: &Pool2dArgs) -> String {
    let Pair(sh, sw) = a.stride.unwrap_or(a.kernel);
    let one = |p: Pair| if p.0 == p.1 { p.0.to_string() } else { format!("({}, {})", p.0, p.1) };
    format!("{name}(kernel_size={}, stride={}, padding={})", one(a.kernel), one(Pair(sh, sw)), one(a.padding))
}

/// Max pooling; the stride defaults to the window.
pub struct MaxPool2d(pub Pool2dArgs);

impl MaxPool2d {
    pub fn new(args: Pool2dArgs) -> Self {
        MaxPool2d(args)
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::max_pool2d(x, self.0)?)
    }
    fn describe(&self) -> String {
        describe("MaxPool2d", &self.0)
    }
}

/// Average pooling; padded cells count toward the window (PyTorch's default).
pub struct AvgPool2d(pub Pool2dArgs);

impl AvgPool2d {
    pub fn new(args: Pool2dArgs) -> Self {
        AvgPool2d(args)
    }
}

impl Module for AvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::avg_pool2d(x, self.0)?)
    }
    fn describe(&self) -> String {
        describe("AvgPool2d", &self.0)
    }
}

/// Average pooling to a fixed output size (PyTorch's `nn.AdaptiveAvgPool2d`); `(1, 1)` is
/// global average pooling.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveAvgPool2d(pub (usize, usize));

impl AdaptiveAvgPool2d {
    pub fn new(output_size: (usize, usize)) -> Self {
        AdaptiveAvgPool2d(output_size)
    }
}

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::adaptive_avg_pool2d(x, self.0)?)
    }
    fn describe(&self) -> String {
        format!("AdaptiveAvgPool2d(output_size={:?})", self.0)
    }
}

/// Max pooling to a fixed output size (PyTorch's `nn.AdaptiveMaxPool2d`), the bins of
/// [`AdaptiveAvgPool2d`]; `ops::adaptive_max_pool2d_with_indices` gives the winners too.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveMaxPool2d(pub (usize, usize));

impl AdaptiveMaxPool2d {
    pub fn new(output_size: (usize, usize)) -> Self {
        AdaptiveMaxPool2d(output_size)
    }
}

impl Module for AdaptiveMaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::adaptive_max_pool2d(x, self.0)?)
    }
    fn describe(&self) -> String {
        format!("AdaptiveMaxPool2d(output_size={:?})", self.0)
    }
}
