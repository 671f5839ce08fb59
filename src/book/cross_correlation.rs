//! Section 1-2: `corr2d`, a hand-written conv layer, edge detection, learning the kernel.

use autograd::{rng, Parameter, Result, Rng, Tensor};
use clap::Parser;
use nn::{Conv2d, Conv2dConfig, Module};
use ops::corr2d;
use std::fmt::Write;

/// Book section 7.2: corr2d, a hand-written conv layer, edge detection and learning the
/// edge kernel.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "cross_correlation", version, allow_negative_numbers = true)]
pub struct Args {
    /// Epochs of learning the kernel
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub epochs: usize,
}

/// The book's `Conv2D`: a kernel and a scalar bias, both trained, written with nothing but
/// the core's public pieces and `corr2d`.
pub struct Conv2D {
    pub weight: Parameter,
    pub bias: Parameter,
}

impl Conv2D {
    /// Kernel uniform in [0, 1) like `torch.rand`, bias 0.
    pub fn new(kh: usize, kw: usize, rng: &mut Rng) -> Self {
        Conv2D { weight: Parameter::new(&Tensor::rand(&[kh, kw], rng)), bias: Parameter::new(&Tensor::zeros(&[])) }
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        corr2d(x, &self.weight.tensor())?.add(&self.bias.tensor())
    }
}

/// The 6x8 image: ones, with columns 2..6 black (0).
pub fn edge_image() -> Result<Tensor> {
    let v: Vec<f32> = (0..48).map(|i| if (2..6).contains(&(i % 8)) { 0.0 } else { 1.0 }).collect();
    Tensor::from_vec(v, &[6, 8])
}

/// What the script computed.
pub struct Output {
    pub text: String,
    pub corr: Tensor,
    pub custom_layer_out: Tensor,
    pub edges: Tensor,
    pub edges_transposed: Tensor,
    /// Loss after each epoch.
    pub losses: Vec<f64>,
    pub weight_before: Tensor,
    pub weight_after: Tensor,
}

/// Runs the script; `epochs` is the book's 10 by default.
pub fn run(epochs: usize, seed: u64) -> nn::Result<Output> {
    let mut s = String::new();
    let mut r = rng(seed);
    let x = Tensor::arange(0.0, 9.0, 1.0)?.reshape(&[3, 3])?;
    let k = Tensor::from_vec(vec![0.0f32, 1.0, 2.0, 3.0], &[2, 2])?;
    let corr = corr2d(&x, &k)?;
    writeln!(s, "{corr}").unwrap();

    // A hand-written layer on the same input.
    let layer = Conv2D::new(2, 2, &mut r);
    let custom_layer_out = layer.forward(&x)?;
    writeln!(s, "custom Conv2D layer (random kernel, bias 0) on X:\n{}", custom_layer_out.detach()).unwrap();

    // Edge detection.
    let img = edge_image()?;
    let kernel = Tensor::from_vec(vec![1.0f32, -1.0], &[1, 2])?;
    let edges = corr2d(&img, &kernel)?;
    let edges_transposed = corr2d(&img.t()?, &kernel)?;
    writeln!(s, "{img}\n{edges}\n{edges_transposed}").unwrap();

    // Learning the kernel: a 1->1 channel conv with a (1, 2) kernel and no bias.
    let conv = Conv2d::new(Conv2dConfig::new(1, 1, (1, 2)).bias(false), &mut r)?;
    let xb = img.reshape(&[1, 1, 6, 8])?;
    let yb = edges.reshape(&[1, 1, 6, 7])?;
    let weight_before = conv.weight.data().reshape(&[1, 2])?;
    writeln!(s, "before training: {weight_before}").unwrap();
    let mut losses = Vec::with_capacity(epochs);
    for epoch in 0..epochs {
        let y_hat = conv.forward(&xb)?;
        let d = y_hat.sub(&yb)?;
        let l = d.mul(&d)?.sum();
        conv.zero_grad();
        l.backward()?;
        let g = conv.weight.grad().expect("the loss depends on the weight").to_vec::<f32>();
        conv.weight.update::<f32>(|w| w.iter_mut().zip(&g).for_each(|(w, g)| *w -= 0.03 * g))?;
        let lv = l.item()?;
        losses.push(lv);
        writeln!(s, "epoch {}, loss {lv:.3}", epoch + 1).unwrap();
    }
    let weight_after = conv.weight.data().reshape(&[1, 2])?;
    writeln!(s, "after training: {weight_after}").unwrap();
    Ok(Output { text: s, corr, custom_layer_out, edges, edges_transposed, losses, weight_before, weight_after })
}
