//! Mini-batches over a [`Dataset`], shuffled reproducibly.
//!
//! Epoch `e`'s order depends only on `(seed, e)`: ChaCha8 seeded with `seed`, on stream
//! `e`, drives a Fisher–Yates shuffle written here. So a run resumed at epoch `e` sees the
//! same batches as an uninterrupted one, and no dependency upgrade can change the order.

use super::Dataset;
use crate::error::Result;
use autograd::{Rng, Tensor};
use rand_chacha::rand_core::RngCore;

/// Batches of `batch_size` samples (the last one may be smaller), like PyTorch's
/// `DataLoader(dataset, batch_size, shuffle)` with `drop_last=False`.
pub struct DataLoader<'a, D: Dataset + ?Sized> {
    dataset: &'a D,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
}

impl<'a, D: Dataset + ?Sized> DataLoader<'a, D> {
    /// Fails on `batch_size == 0`, which would yield no batch and loop forever in a
    /// training loop that counts them.
    pub fn new(dataset: &'a D, batch_size: usize, shuffle: bool, seed: u64) -> Result<Self> {
        if batch_size == 0 {
            return Err(autograd::Error::invalid("DataLoader::new", "batch_size must be at least 1").into());
        }
        Ok(DataLoader { dataset, batch_size, shuffle, seed })
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        self.dataset.len().div_ceil(self.batch_size)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The sample order of `epoch`: `0..len` unless shuffling.
    pub fn permutation(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            let mut rng = autograd::rng(self.seed);
            rng.set_stream(epoch);
            shuffle(&mut order, &mut rng);
        }
        order
    }

    /// The batches of `epoch`, each `Ok((images [B, C, H, W], labels))`.
    pub fn epoch(&self, epoch: u64) -> Batches<'a, D> {
        Batches { dataset: self.dataset, order: self.permutation(epoch), batch_size: self.batch_size, next: 0 }
    }
}

/// Iterator over one epoch's batches, from [`DataLoader::epoch`].
pub struct Batches<'a, D: Dataset + ?Sized> {
    dataset: &'a D,
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
}

impl<D: Dataset + ?Sized> Iterator for Batches<'_, D> {
    type Item = Result<(Tensor, Vec<usize>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let indices = &self.order[self.next..end];
        self.next = end;
        Some(self.dataset.batch(indices))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.order.len() - self.next).div_ceil(self.batch_size);
        (n, Some(n))
    }
}

impl<D: Dataset + ?Sized> ExactSizeIterator for Batches<'_, D> {}

/// Fisher–Yates, from the back: each position takes a uniform pick of the ones not yet fixed.
fn shuffle(v: &mut [usize], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// Uniform in `0..bound` without modulo bias: draws below `2^64 mod bound` are rejected,
/// leaving a range whose length is a multiple of `bound`.
fn below(rng: &mut Rng, bound: u64) -> u64 {
    let reject = bound.wrapping_neg() % bound;
    loop {
        let x = rng.next_u64();
        if x >= reject {
            return x % bound;
        }
    }
}
