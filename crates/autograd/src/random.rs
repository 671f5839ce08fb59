//! Seeded random tensors. The generator is ChaCha8 (`rand_chacha`): its stream is fixed
//! by the seed across versions and platforms, and its state can be saved and restored,
//! which reproducible training and resuming need.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rand::{Rng as _, SeedableRng};

/// The library's random number generator.
pub type Rng = rand_chacha::ChaCha8Rng;

/// A generator from a seed.
pub fn rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

impl Tensor {
    /// f32 values uniform in `[low, high)`.
    pub fn uniform(shape: &[usize], low: f64, high: f64, rng: &mut Rng) -> Tensor {
        Self::uniform_dtype(shape, low, high, DType::F32, rng)
    }

    pub fn uniform_dtype(shape: &[usize], low: f64, high: f64, dtype: DType, rng: &mut Rng) -> Tensor {
        let n = crate::shape::numel_or_panic("Tensor::uniform", shape);
        let v: Vec<f64> = (0..n).map(|_| low + (high - low) * rng.random::<f64>()).collect();
        Tensor::from_vec(v, shape).expect("length matches").to_dtype(dtype)
    }

    /// f32 values uniform in `[0, 1)` (PyTorch's `torch.rand`).
    pub fn rand(shape: &[usize], rng: &mut Rng) -> Tensor {
        Self::uniform(shape, 0.0, 1.0, rng)
    }

    /// f32 values from a normal distribution (Box-Muller, so the stream is ours to keep).
    pub fn normal(shape: &[usize], mean: f64, std: f64, rng: &mut Rng) -> Tensor {
        Self::normal_dtype(shape, mean, std, DType::F32, rng)
    }

    pub fn normal_dtype(shape: &[usize], mean: f64, std: f64, dtype: DType, rng: &mut Rng) -> Tensor {
        let n = crate::shape::numel_or_panic("Tensor::normal", shape);
        let mut v = Vec::with_capacity(n + 1);
        while v.len() < n {
            let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: log is finite
            let u2: f64 = rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            let t = std::f64::consts::TAU * u2;
            v.push(mean + std * r * t.cos());
            v.push(mean + std * r * t.sin());
        }
        v.truncate(n);
        Tensor::from_vec(v, shape).expect("length matches").to_dtype(dtype)
    }

    /// Standard normal f32 values (PyTorch's `torch.randn`).
    pub fn randn(shape: &[usize], rng: &mut Rng) -> Tensor {
        Self::normal(shape, 0.0, 1.0, rng)
    }

    /// i64 values uniform in `[low, high)` (`torch.randint(low, high, shape)`); an error
    /// naming `randint` when the range is empty or the shape too large.
    pub fn randint(low: i64, high: i64, shape: &[usize], rng: &mut Rng) -> Result<Tensor> {
        let n = crate::shape::checked_numel("randint", shape)?;
        if low >= high {
            return Err(Error::invalid("randint", format!("expects low < high, got low={low}, high={high}")));
        }
        // The span fits u64 even for [i64::MIN, i64::MAX); the sum wraps back into range.
        let span = (high as i128 - low as i128) as u64;
        let v: Vec<i64> = (0..n).map(|_| low.wrapping_add(below(rng, span) as i64)).collect();
        Tensor::from_vec(v, shape)
    }

    /// A random permutation of `0..n` as i64 (`torch.randperm`): Fisher-Yates, each of
    /// the `n!` orders equally likely.
    pub fn randperm(n: usize, rng: &mut Rng) -> Result<Tensor> {
        crate::shape::checked_numel("randperm", &[n])?;
        let mut v: Vec<i64> = (0..n as i64).collect();
        for i in (1..n).rev() {
            v.swap(i, below(rng, i as u64 + 1) as usize);
        }
        Tensor::from_vec(v, &[n])
    }
}

/// A uniform draw from `0..n` (`n > 0`), without modulo bias: every integer draw of the
/// library goes through here, so a change of generator is one place.
fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.random_range(0..n)
}
