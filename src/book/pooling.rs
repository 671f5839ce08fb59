//! Section 5: max and average pooling, padding and stride, multiple channels.

use autograd::{Result, Tensor};
use clap::Parser;
use ops::{avg_pool2d, max_pool2d, Pool2dArgs};
use std::fmt::Write;

/// Book section 7.5: max and average pooling.
///
/// No flags of its own: the struct gives `--help`, `--version` and usage errors for
/// anything else.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "pooling", version, long_about = None)]
pub struct Args {}

pub struct Output {
    pub text: String,
    /// Every result in the order printed.
    pub results: Vec<Tensor>,
}

pub fn run() -> Result<Output> {
    let mut s = String::new();
    let mut results = Vec::new();
    let mut show = |label: &str, t: Tensor| {
        writeln!(s, "{label}:\n{t}").unwrap();
        results.push(t);
    };
    let x = Tensor::arange(0.0, 9.0, 1.0)?.reshape(&[1, 1, 3, 3])?;
    let a = Pool2dArgs::new(2).stride(1);
    show("max pooling 2x2, stride 1", max_pool2d(&x, a)?.reshape(&[3 - 1, 3 - 1])?);
    show("average pooling 2x2, stride 1", avg_pool2d(&x, a)?.reshape(&[2, 2])?);
    let x = Tensor::arange(0.0, 16.0, 1.0)?.reshape(&[1, 1, 4, 4])?;
    show("X", x.clone());
    show("MaxPool2d(3)", max_pool2d(&x, Pool2dArgs::new(3))?);
    show("MaxPool2d(3, padding=1, stride=2)", max_pool2d(&x, Pool2dArgs::new(3).padding(1).stride(2))?);
    show("MaxPool2d((2, 3), stride=(2, 3), padding=(0, 1))", max_pool2d(&x, Pool2dArgs::new((2, 3)).stride((2, 3)).padding((0, 1)))?);
    let x2 = Tensor::cat(&[&x, &x.add_scalar(1.0)], 1)?;
    show("two channels: cat(X, X + 1)", x2.clone());
    show("MaxPool2d(3, padding=1, stride=2) per channel", max_pool2d(&x2, Pool2dArgs::new(3).padding(1).stride(2))?);
    Ok(Output { text: s, results })
}
