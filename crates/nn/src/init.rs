//! Weight initialisers, seeded. Fans follow PyTorch: for a weight `[out, in, k...]`,
//! `fan_in = in * prod(k)` and `fan_out = out * prod(k)`.

use crate::error::Result;
use autograd::{Parameter, Rng, Tensor};

/// `(fan_in, fan_out)` of a weight shape.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 => (1, 1),
        1 => (shape[0], shape[0]),
        _ => {
            let rf: usize = shape[2..].iter().product();
            (shape[1] * rf, shape[0] * rf)
        }
    }
}

fn fill_uniform(p: &Parameter, bound: f64, rng: &mut Rng) -> Result<()> {
    p.set(&Tensor::uniform_dtype(&p.shape(), -bound, bound, p.dtype(), rng))?;
    Ok(())
}

fn fill_normal(p: &Parameter, std: f64, rng: &mut Rng) -> Result<()> {
    p.set(&Tensor::normal_dtype(&p.shape(), 0.0, std, p.dtype(), rng))?;
    Ok(())
}

/// Glorot/Xavier uniform: `U(-a, a)`, `a = gain * sqrt(6 / (fan_in + fan_out))`.
pub fn xavier_uniform(p: &Parameter, gain: f64, rng: &mut Rng) -> Result<()> {
    let (i, o) = fans(&p.shape());
    fill_uniform(p, gain * (6.0 / (i + o) as f64).sqrt(), rng)
}

/// Glorot/Xavier normal: `N(0, std^2)`, `std = gain * sqrt(2 / (fan_in + fan_out))`.
pub fn xavier_normal(p: &Parameter, gain: f64, rng: &mut Rng) -> Result<()> {
    let (i, o) = fans(&p.shape());
    fill_normal(p, gain * (2.0 / (i + o) as f64).sqrt(), rng)
}

/// Gain of leaky ReLU with negative slope `a` (PyTorch's `calculate_gain('leaky_relu', a)`).
fn leaky_relu_gain(a: f64) -> f64 {
    (2.0 / (1.0 + a * a)).sqrt()
}

/// He/Kaiming uniform over `fan_in`: `U(-b, b)`, `b = gain(a) * sqrt(3 / fan_in)`.
/// With `a = sqrt(5)` this is PyTorch's default for conv and linear weights.
pub fn kaiming_uniform(p: &Parameter, a: f64, rng: &mut Rng) -> Result<()> {
    let (i, _) = fans(&p.shape());
    fill_uniform(p, leaky_relu_gain(a) * (3.0 / i.max(1) as f64).sqrt(), rng)
}

/// He/Kaiming normal over `fan_in`: `std = gain(a) / sqrt(fan_in)`.
pub fn kaiming_normal(p: &Parameter, a: f64, rng: &mut Rng) -> Result<()> {
    let (i, _) = fans(&p.shape());
    fill_normal(p, leaky_relu_gain(a) / (i.max(1) as f64).sqrt(), rng)
}

/// Uniform in `[-bound, bound]` (PyTorch's bias default uses `1 / sqrt(fan_in)`).
pub fn uniform(p: &Parameter, bound: f64, rng: &mut Rng) -> Result<()> {
    fill_uniform(p, bound, rng)
}

pub fn zeros(p: &Parameter) -> Result<()> {
    p.set(&Tensor::zeros_dtype(&p.shape(), p.dtype()))?;
    Ok(())
}
