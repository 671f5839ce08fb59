//! Mini-batches over a [`Dataset`], shuffled reproducibly.
//!
//! Epoch `e`'s order depends only on `(seed, e)`: ChaCha8 seeded with `seed`, on stream
//! `e`, drives a Fisher–Yates shuffle written here. So a run resumed at epoch `e` sees the
//! same batches as an uninterrupted one, and no dependency upgrade can change the order.
//!
//! A data-parallel run ([`DataLoader::epoch_shard`]) shares every batch of that order
//! between its processes: rank `r` of `w` takes the `r`-th contiguous part of each batch
//! ([`shard_range`]), so the ranks' parts of step `b` together are exactly batch `b` of a
//! one-process run with the same batch size.

use super::Dataset;
use crate::error::Result;
use autograd::{Rng, Tensor};
use rand_chacha::rand_core::RngCore;
use std::ops::Range;

/// This process's part of a data-parallel run: rank `rank` of `world` processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Shard {
    /// The whole data, in one process.
    pub const WHOLE: Shard = Shard { rank: 0, world: 1 };

    /// Rank `rank` of `world`; an error unless `rank < world`.
    pub fn new(rank: usize, world: usize) -> Result<Shard> {
        if rank >= world {
            return Err(crate::Error::config("Shard::new", format!("rank {rank} is not below the world size {world}")));
        }
        Ok(Shard { rank, world })
    }
}

/// The positions `rank` takes of a batch of `n` samples shared by `world` processes:
/// `n·rank/world .. n·(rank+1)/world`, so the parts are contiguous, in rank order, and
/// differ in size by at most one (a part is empty when `n < world`). `world` must be at
/// least 1.
pub fn shard_range(n: usize, rank: usize, world: usize) -> Range<usize> {
    // u128: n·world cannot overflow.
    let at = |r: usize| (n as u128 * r as u128 / world.max(1) as u128) as usize;
    at(rank)..at(rank + 1)
}

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
        self.epoch_shard(epoch, Shard::WHOLE)
    }

    /// `shard`'s part of every batch of `epoch` (a distributed sampler): as many batches as
    /// [`DataLoader::epoch`] gives, batch `b` holding the positions
    /// [`shard_range`]`(len_b, rank, world)` of that batch. A part that is empty (a last
    /// batch with fewer samples than processes) comes as no labels and images of shape
    /// `[0]`, without asking the dataset.
    pub fn epoch_shard(&self, epoch: u64, shard: Shard) -> Batches<'a, D> {
        Batches { dataset: self.dataset, order: self.permutation(epoch), batch_size: self.batch_size, next: 0, shard }
    }

    /// The number of samples in batch `b` of an epoch (every process's parts together).
    pub fn batch_len(&self, b: usize) -> usize {
        let start = b.saturating_mul(self.batch_size).min(self.dataset.len());
        (start + self.batch_size).min(self.dataset.len()) - start
    }
}

/// Iterator over one epoch's batches, from [`DataLoader::epoch`].
pub struct Batches<'a, D: Dataset + ?Sized> {
    dataset: &'a D,
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
    shard: Shard,
}

impl<D: Dataset + ?Sized> Iterator for Batches<'_, D> {
    type Item = Result<(Tensor, Vec<usize>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let part = shard_range(end - self.next, self.shard.rank, self.shard.world);
        let indices = &self.order[self.next + part.start..self.next + part.end];
        self.next = end;
        if indices.is_empty() {
            return Some(Ok((Tensor::zeros(&[0]), Vec::new())));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageDataset;

    fn dataset(n: usize) -> ImageDataset {
        let pixels: Vec<f32> = (0..n).map(|i| i as f32).collect();
        ImageDataset::new(pixels, (0..n).collect(), [1, 1, 1]).unwrap()
    }

    /// The ranks' parts of every batch, joined in rank order, are the one-process batch.
    #[test]
    fn shards_partition_every_batch() {
        for (n, batch) in [(10, 4), (23, 8), (3, 8), (64, 16), (9, 9)] {
            let data = dataset(n);
            let loader = DataLoader::new(&data, batch, true, 7).unwrap();
            let whole: Vec<Vec<usize>> = loader.epoch(3).map(|b| b.unwrap().1).collect();
            for world in 1..=5 {
                let parts: Vec<Vec<Vec<usize>>> =
                    (0..world).map(|r| loader.epoch_shard(3, Shard::new(r, world).unwrap()).map(|b| b.unwrap().1).collect()).collect();
                for (b, expected) in whole.iter().enumerate() {
                    assert_eq!(expected.len(), loader.batch_len(b));
                    let joined: Vec<usize> = parts.iter().flat_map(|p| p[b].clone()).collect();
                    assert_eq!(&joined, expected, "n {n}, batch {batch}, world {world}, step {b}");
                    let sizes: Vec<usize> = parts.iter().map(|p| p[b].len()).collect();
                    assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
                }
            }
        }
    }

    #[test]
    fn shard_range_is_balanced_and_rank_checked() {
        assert_eq!(shard_range(10, 0, 3), 0..3);
        assert_eq!(shard_range(10, 1, 3), 3..6);
        assert_eq!(shard_range(10, 2, 3), 6..10);
        assert_eq!(shard_range(1, 0, 2), 0..0);
        assert_eq!(shard_range(1, 1, 2), 0..1);
        assert!(Shard::new(2, 2).unwrap_err().to_string().contains("rank 2 is not below the world size 2"));
    }
}
