//! Seeded random tensors. Two generators, for two jobs:
//! - [`Rng`] (ChaCha8, `rand_chacha`) for initialisation and the data order: a sequential
//!   stream fixed by the seed across versions and platforms;
//! - [`Generator`] for the draws made while training (dropout masks, augmentation):
//!   counter-based, so a value depends on its position in the stream, never on the
//!   thread that computed it, and the state is two integers a checkpoint saves.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rand::{Rng as _, RngCore, SeedableRng};

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

// ----- the training-time randomness model ------------------------------------------------

/// The ChaCha8 stream every [`Generator`] draws from. Streams `0, 1, 2, ...` of the same
/// seed give the data loader's per-epoch orders, so draws never share words with them.
const DRAW_STREAM: u64 = u64::MAX;

/// Values drawn from one seeded ChaCha8 block at a time: large enough that the key
/// set-up is negligible, and fixed, so a fill is cut the same way at any thread count.
const DRAW_CHUNK: usize = 1 << 12;

/// The generator of every random draw made while training (dropout masks, data
/// augmentation), as PyTorch's Philox `(seed, offset)` on GPUs: draw number `k` of a
/// seed is a pure function of `(seed, k)`, the `k`-th 64-bit word of ChaCha8 keyed by
/// the seed on its own stream. A draw of `n` values takes the words
/// `offset..offset + n` and advances the offset by `n`.
///
/// So a value never depends on which thread computed it (a tensor is filled in parallel
/// from word positions, bitwise the same at any thread count), and the whole state is two
/// integers: saved in a checkpoint, they make a resumed run draw exactly what the
/// uninterrupted one would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Generator {
    seed: u64,
    offset: u64,
}

impl Generator {
    /// A generator at the start of `seed`'s draws.
    pub fn new(seed: u64) -> Generator {
        Generator { seed, offset: 0 }
    }

    /// A generator restored from [`seed`](Generator::seed) and
    /// [`offset`](Generator::offset), e.g. read back from a checkpoint.
    pub fn from_state(seed: u64, offset: u64) -> Generator {
        Generator { seed, offset }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// How many values have been drawn since the seed.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The state as an i64 tensor `[seed, offset]` (each u64's bits), for a checkpoint,
    /// as PyTorch's `get_rng_state()` gives a tensor.
    pub fn state_tensor(&self) -> Tensor {
        Tensor::from_vec(vec![self.seed as i64, self.offset as i64], &[2]).expect("two values, shape [2]")
    }

    /// The generator whose [`state_tensor`](Generator::state_tensor) is `t`.
    ///
    /// # Errors
    /// Unless `t` is an i64 tensor of shape `[2]`.
    pub fn from_state_tensor(t: &Tensor) -> Result<Generator> {
        if t.dtype() != DType::I64 || t.shape() != [2] {
            return Err(Error::invalid(
                "Generator::from_state_tensor",
                format!("expects an i64 tensor of shape [2] (seed, offset), got {} {:?}", t.dtype(), t.shape()),
            ));
        }
        let v = t.to_vec::<i64>();
        Ok(Generator { seed: v[0] as u64, offset: v[1] as u64 })
    }

    /// Reserves the next `n` draws and returns them; the generator moves past them. The
    /// [`Draws`] can be read from any thread, in any order.
    ///
    /// # Panics
    /// When the offset would pass 2^64 draws (at a billion draws a second, after five
    /// centuries): the stream's end, which no training run reaches.
    pub fn reserve(&mut self, n: u64) -> Draws {
        let start = self.offset;
        self.offset = self.offset.checked_add(n).expect("Generator: more than 2^64 draws from one seed");
        Draws { seed: self.seed, start, len: n }
    }
}

/// A block of reserved draws, from [`Generator::reserve`]: draw `i` is the same whoever
/// reads it and whenever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draws {
    seed: u64,
    start: u64,
    len: u64,
}

impl Draws {
    /// How many draws the block holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The draws `first..first + out.len()` of the block, as raw 64-bit words.
    ///
    /// # Panics
    /// If the range passes the end of the block (a caller's indexing bug: it would read
    /// words reserved by the next draw).
    pub fn fill_u64(&self, first: u64, out: &mut [u64]) {
        let end = first.checked_add(out.len() as u64);
        assert!(end.is_some_and(|e| e <= self.len), "Draws::fill_u64: draws {first}..+{} outside a block of {}", out.len(), self.len);
        let mut rng = Rng::seed_from_u64(self.seed);
        rng.set_stream(DRAW_STREAM);
        // Two 32-bit words per draw; the position is in words (`u128`, no overflow).
        rng.set_word_pos(2 * (self.start as u128 + first as u128));
        for w in out {
            *w = rng.next_u64();
        }
    }

    /// Draw `i` as an f64 uniform in `[0, 1)` (its top 53 bits).
    pub fn uniform_f64(&self, i: u64) -> f64 {
        let mut w = [0u64];
        self.fill_u64(i, &mut w);
        unit_f64(w[0])
    }

    /// Fills `out[j]` with `f(uniform draw first + j)`, drawing one ChaCha8 block per
    /// `DRAW_CHUNK` values, in parallel for large `out`: the same result at any number of
    /// threads.
    pub fn fill_uniform<T: Send>(&self, first: u64, out: &mut [T], f: impl Fn(f64) -> T + Send + Sync) {
        let fill = |i: usize, chunk: &mut [T]| {
            let mut words = [0u64; DRAW_CHUNK];
            let words = &mut words[..chunk.len()];
            self.fill_u64(first + (i * DRAW_CHUNK) as u64, words);
            for (o, &w) in chunk.iter_mut().zip(words.iter()) {
                *o = f(unit_f64(w));
            }
        };
        if crate::parallel::run_here(out.len()) {
            out.chunks_mut(DRAW_CHUNK).enumerate().for_each(|(i, c)| fill(i, c));
        } else {
            use rayon::prelude::*;
            crate::parallel::install(|| out.par_chunks_mut(DRAW_CHUNK).enumerate().for_each(|(i, c)| fill(i, c)));
        }
    }
}

/// The top 53 bits of a word as a float in `[0, 1)`: every value a multiple of 2^-53.
fn unit_f64(w: u64) -> f64 {
    (w >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

thread_local! {
    static DEFAULT_GENERATOR: std::cell::Cell<Generator> = const { std::cell::Cell::new(Generator { seed: 0, offset: 0 }) };
}

/// Reseeds this thread's default generator (PyTorch's `torch.manual_seed`): the one
/// [`Tensor::rand_default`], [`Tensor::bernoulli_default`] and the layers that draw
/// (dropout) use. Each thread has its own, seeded 0 until set, so tests running side
/// by side never take each other's draws; a training loop draws on the thread that runs
/// its forward passes.
pub fn manual_seed(seed: u64) {
    set_rng_state(Generator::new(seed));
}

/// This thread's default generator's state (PyTorch's `torch.get_rng_state`), for a
/// checkpoint.
pub fn rng_state() -> Generator {
    DEFAULT_GENERATOR.with(|g| g.get())
}

/// Restores this thread's default generator (PyTorch's `torch.set_rng_state`).
pub fn set_rng_state(state: Generator) {
    DEFAULT_GENERATOR.with(|g| g.set(state));
}

/// Runs `f` with this thread's default generator, keeping what it advanced.
pub fn with_default_generator<R>(f: impl FnOnce(&mut Generator) -> R) -> R {
    DEFAULT_GENERATOR.with(|cell| {
        let mut g = cell.get();
        let r = f(&mut g);
        cell.set(g);
        r
    })
}

impl Tensor {
    /// Values uniform in `[0, 1)` of a float `dtype` drawn from `generator` (element `i`
    /// is draw `offset + i`), bitwise the same at any thread count. An f32 value is the
    /// f64 draw rounded down to 24 bits, so it is below 1 too.
    ///
    /// # Errors
    /// For an i64 or bool `dtype`, or a shape too large.
    pub fn rand_with(shape: &[usize], dtype: DType, generator: &mut Generator) -> Result<Tensor> {
        let n = crate::shape::checked_numel("rand_with", shape)?;
        if !dtype.is_float() {
            return Err(Error::UnsupportedDType { op: "rand_with", dtype });
        }
        let draws = generator.reserve(n as u64);
        match dtype {
            DType::F64 => {
                let mut v = vec![0f64; n];
                draws.fill_uniform(0, &mut v, |u| u);
                Tensor::from_vec(v, shape)
            }
            _ => {
                let mut v = vec![0f32; n];
                draws.fill_uniform(0, &mut v, |u| ((u * (1u32 << 24) as f64).floor() / (1u32 << 24) as f64) as f32);
                Tensor::from_vec(v, shape)
            }
        }
    }

    /// [`Tensor::rand_with`] from this thread's default generator.
    pub fn rand_default(shape: &[usize], dtype: DType) -> Result<Tensor> {
        with_default_generator(|g| Tensor::rand_with(shape, dtype, g))
    }

    /// A float tensor of ones with probability `p` and zeros otherwise (PyTorch's
    /// `torch.bernoulli` of a constant `p`): element `i` is 1 when draw `offset + i` is
    /// below `p`, so `p = 0` gives all zeros and `p = 1` all ones.
    ///
    /// # Errors
    /// For `p` outside `[0, 1]` (NaN included), a non-float `dtype`, or a shape too large.
    pub fn bernoulli_with(shape: &[usize], p: f64, dtype: DType, generator: &mut Generator) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid("bernoulli", format!("expects a probability in [0, 1], got {p}")));
        }
        let n = crate::shape::checked_numel("bernoulli", shape)?;
        if !dtype.is_float() {
            return Err(Error::UnsupportedDType { op: "bernoulli", dtype });
        }
        let draws = generator.reserve(n as u64);
        match dtype {
            DType::F64 => {
                let mut v = vec![0f64; n];
                draws.fill_uniform(0, &mut v, |u| if u < p { 1.0 } else { 0.0 });
                Tensor::from_vec(v, shape)
            }
            _ => {
                let mut v = vec![0f32; n];
                draws.fill_uniform(0, &mut v, |u| if u < p { 1.0 } else { 0.0 });
                Tensor::from_vec(v, shape)
            }
        }
    }

    /// [`Tensor::bernoulli_with`] from this thread's default generator.
    pub fn bernoulli_default(shape: &[usize], p: f64, dtype: DType) -> Result<Tensor> {
        with_default_generator(|g| Tensor::bernoulli_with(shape, p, dtype, g))
    }
}
