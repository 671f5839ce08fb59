//! Section 4: multiple input and output channels, and 1x1 convolution as a matrix product.

use autograd::{rng, Result, Tensor};
use clap::Parser;
use ops::{corr2d, TensorOps};
use std::fmt::Write;

/// Book section 7.4: multiple input and output channels, 1x1 convolution.
///
/// No flags of its own: the struct gives `--help`, `--version` and usage errors for
/// anything else.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "channels", version, long_about = None)]
pub struct Args {}

/// Sum over input channels of per-channel `corr2d` (the book's `corr2d_multi_in`).
pub fn corr2d_multi_in(x: &Tensor, k: &Tensor) -> Result<Tensor> {
    let mut acc = corr2d(&x.narrow(0, 0, 1)?.squeeze(0)?, &k.narrow(0, 0, 1)?.squeeze(0)?)?;
    for c in 1..x.shape()[0] {
        acc = acc.add(&corr2d(&x.narrow(0, c, 1)?.squeeze(0)?, &k.narrow(0, c, 1)?.squeeze(0)?)?)?;
    }
    Ok(acc)
}

/// One `corr2d_multi_in` per output-channel kernel, stacked (`corr2d_multi_in_out`).
pub fn corr2d_multi_in_out(x: &Tensor, k: &Tensor) -> Result<Tensor> {
    let outs: Vec<Tensor> = (0..k.shape()[0]).map(|o| corr2d_multi_in(x, &k.narrow(0, o, 1)?.squeeze(0)?)).collect::<Result<_>>()?;
    Tensor::stack(&outs.iter().collect::<Vec<_>>(), 0)
}

/// The 1x1 convolution as a matrix product: `K [O, C, 1, 1]` times `X [C, H*W]`.
pub fn corr2d_multi_in_out_1x1(x: &Tensor, k: &Tensor) -> Result<Tensor> {
    let (c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let o = k.shape()[0];
    k.reshape_to(&[o, c])?.matmul(&x.reshape_to(&[c, h * w])?)?.reshape_to(&[o, h, w])
}

pub struct Output {
    pub text: String,
    pub multi_in: Tensor,
    pub multi_out: Tensor,
    /// Largest difference between the 1x1 convolution and the matrix product.
    pub one_by_one_diff: f64,
}

pub fn run(seed: u64) -> Result<Output> {
    let mut s = String::new();
    let x0 = Tensor::arange(0.0, 9.0, 1.0)?.reshape(&[3, 3])?;
    let x = Tensor::stack(&[&x0, &x0.add_scalar(1.0)], 0)?;
    let k0 = Tensor::from_vec(vec![0.0f32, 1., 2., 3.], &[2, 2])?;
    let k = Tensor::stack(&[&k0, &k0.add_scalar(1.0)], 0)?;
    let multi_in = corr2d_multi_in(&x, &k)?;
    writeln!(s, "multi in:\n{multi_in}").unwrap();
    let k3 = Tensor::stack(&[&k, &k.add_scalar(1.0), &k.add_scalar(2.0)], 0)?;
    let multi_out = corr2d_multi_in_out(&x, &k3)?;
    writeln!(s, "kernel shape: {}\nmulti out:\n{multi_out}", super::torch_size(k3.shape())).unwrap();

    let mut r = rng(seed);
    let xr = Tensor::normal(&[3, 3, 3], 0.0, 1.0, &mut r);
    let kr = Tensor::normal(&[2, 3, 1, 1], 0.0, 1.0, &mut r);
    let y1 = corr2d_multi_in_out_1x1(&xr, &kr)?;
    let y2 = corr2d_multi_in_out(&xr, &kr)?;
    let one_by_one_diff = y1.max_abs_diff(&y2)?;
    writeln!(s, "1 * 1 correlation:\nmax |matmul - conv| = {one_by_one_diff:.3e} (< 1e-6: {})", one_by_one_diff < 1e-6).unwrap();
    Ok(Output { text: s, multi_in, multi_out, one_by_one_diff })
}
