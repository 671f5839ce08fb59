//! A residual block written as a user would (D2L 8.6): a struct of layers, a `forward`, a
//! `visit`, trained for a few steps on Fashion-MNIST.
//! `cargo run --release --example residual [-- STEPS]`

use convnet::prelude::*;

/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + x)`: the shape is kept, so the shortcut is `x`.
struct Block {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.bn1.forward(&self.conv1.forward(x)?)?.relu();
        let y = self.bn2.forward(&self.conv2.forward(&y)?)?;
        Ok(y.add(x)?.relu())
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        v.module("conv1", &self.conv1);
        v.module("bn1", &self.bn1);
        v.module("conv2", &self.conv2);
        v.module("bn2", &self.bn2);
    }
}

fn block(c: usize, r: &mut Rng) -> Result<Block> {
    let conv = |r: &mut Rng| Conv2d::new(Conv2dConfig::new(c, c, 3).padding(1), r);
    let bn = || BatchNorm2d::new_2d(nn::BatchNormConfig::new(c));
    Ok(Block { conv1: conv(r)?, bn1: bn(), conv2: conv(r)?, bn2: bn() })
}

/// Trains `steps` steps; returns the losses.
fn train(steps: usize) -> Result<Vec<f64>> {
    let r = &mut rng(0);
    let net = Sequential::new()
        .append(Conv2d::new(Conv2dConfig::new(1, 16, 3).padding(1), r)?)
        .append(ReLU)
        .append(block(16, r)?)
        .append(MaxPool2d::new(Pool2dArgs::new(2).stride(2)))
        .append(block(16, r)?)
        .append(nn::AdaptiveAvgPool2d::new((1, 1)))
        .append(Flatten::default())
        .append(Linear::new(16, 10, r)?);
    let (train, _) = FashionMnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/data/fashion-mnist"))?;
    let mut opt = Sgd::with(net.named_parameters(), nn::optim::SgdConfig::new(0.1).momentum(0.9))?;
    let mut losses = Vec::new();
    for (step, batch) in DataLoader::new(&train, 64, true, 0)?.epoch(0).take(steps).enumerate() {
        let (x, y) = batch?;
        let loss = cross_entropy(&net.forward(&x)?, &y)?;
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
        losses.push(loss.item()?);
        if step % 10 == 0 || step + 1 == steps {
            println!("step {:>3}: loss {:.4}", step + 1, losses[step]);
        }
    }
    let names: Vec<String> = net.state_dict().into_iter().map(|(k, _)| k).take(6).collect();
    println!("{} parameters; state_dict keys {}, ...", net.num_parameters(), names.join(", "));
    Ok(losses)
}

fn main() -> Result<()> {
    let steps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    train(steps).map(|_| ())
}

#[test]
fn the_block_learns_in_30_steps() {
    let l = train(30).unwrap();
    let (head, tail) = (l[..5].iter().sum::<f64>() / 5.0, l[25..].iter().sum::<f64>() / 5.0);
    assert!(tail < 0.8 * head, "the loss went from {head:.3} to {tail:.3}");
}
