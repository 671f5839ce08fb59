//! Section 3: output shapes of padded and strided convolutions on an 8x8 input.

use super::torch_size;
use autograd::rng;
use clap::Parser;
use nn::{Conv2d, Conv2dConfig, Module};
use std::fmt::Write;

/// Book section 7.3: output shapes of padded and strided convolutions.
///
/// No flags of its own: the struct gives `--help`, `--version` and usage errors for
/// anything else.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "padding_stride", version, long_about = None)]
pub struct Args {}

/// The four layers of the book, each applied to a random 8x8 input.
pub fn run(seed: u64) -> nn::Result<(String, Vec<Vec<usize>>)> {
    let mut r = rng(seed);
    let x = autograd::Tensor::rand(&[1, 1, 8, 8], &mut r);
    let layers = [
        Conv2dConfig::new(1, 1, 3).padding(1),
        Conv2dConfig::new(1, 1, (5, 3)).padding((2, 1)),
        Conv2dConfig::new(1, 1, 3).padding(1).stride(2),
        Conv2dConfig::new(1, 1, (3, 5)).padding((0, 1)).stride((3, 4)),
    ];
    let mut s = String::new();
    let mut shapes = Vec::new();
    for cfg in layers {
        let conv = Conv2d::new(cfg, &mut r)?;
        let y = conv.forward(&x)?;
        let hw = y.shape()[2..].to_vec();
        writeln!(s, "{}: {}", conv.describe(), torch_size(&hw)).unwrap();
        shapes.push(hw);
    }
    Ok((s, shapes))
}
