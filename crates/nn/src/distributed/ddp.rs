//! [`DistributedDataParallel`]: what makes a [`Trainer`](crate::train::Trainer) on every
//! rank one data-parallel run.

use super::{Reducible, World};
use crate::data::Shard;
use crate::error::{Error, Result};
use crate::module::Module;
use crate::train::{Callback, EpochTotals, Step};
use autograd::{DType, Parameter, Tensor};

/// PyTorch's `DistributedDataParallel` for our training loop, as a [`Callback`]:
///
/// - at construction, checks that every rank built the same model (names, shapes, dtypes,
///   frozen parameters) and copies rank 0's parameters and buffers to every rank;
/// - after every backward ([`Callback::on_gradients_ready`]), replaces each gradient by its
///   average over the ranks, summed in rank order ([`World::all_reduce_sum`]). A rank's
///   gradient is of the mean loss over its part of the batch; when the parts differ in
///   size (a batch that does not split evenly), each is weighted by its share first, so
///   the average is the gradient of the whole batch's mean loss, as one process computes
///   it. A parameter without a gradient on every rank keeps none (the optimiser skips
///   it, as it would in one process);
/// - after each epoch's training ([`Callback::on_train_epoch_end`]), sums the epoch's loss
///   shares, correct predictions and samples over the ranks, so the printed numbers are
///   the whole data's, and copies rank 0's buffers (BatchNorm's running statistics) to
///   every rank, so every rank evaluates the same model.
///
/// BatchNorm normalises with the statistics of each rank's own part of the batch
/// (PyTorch's default under DDP; there is no SyncBatchNorm).
///
/// Add it to the trainer before any other gradient hook (clipping must see the average).
pub struct DistributedDataParallel<'a> {
    world: &'a World,
    model: &'a dyn Module,
    /// Reused between steps: the flattened gradients of each dtype.
    flat_f32: Vec<f32>,
    flat_f64: Vec<f64>,
}

impl<'a> DistributedDataParallel<'a> {
    /// Wraps `model` (the same on every rank) and copies rank 0's parameters and buffers to
    /// every rank.
    ///
    /// # Errors
    /// When the ranks' models differ (naming the first rank that differs), or a buffer is
    /// of a dtype that cannot be sent (bool).
    pub fn new(world: &'a World, model: &'a dyn Module) -> Result<Self> {
        world.check_same("model", fingerprint(model))?;
        for (name, p) in model.named_parameters() {
            p.set(&broadcast_tensor(world, &name, &p.data())?)?;
        }
        let ddp = DistributedDataParallel { world, model, flat_f32: Vec::new(), flat_f64: Vec::new() };
        ddp.broadcast_buffers()?;
        Ok(ddp)
    }

    /// This rank's part of every batch, for [`TrainConfig::shard`](crate::train::TrainConfig::shard).
    pub fn shard(&self) -> Shard {
        self.world.shard()
    }

    /// Averages every trainable parameter's gradient over the ranks (see the type's docs):
    /// `examples` is how many samples this rank's gradient is the mean over, of
    /// `global_examples` in the whole batch. Every rank must call it at the same step.
    pub fn average_gradients(&mut self, params: &[(String, Parameter)], examples: usize, global_examples: usize) -> Result<()> {
        let world = self.world.size();
        // 1 exactly when the batch splits evenly; 0 for a rank with no samples.
        let weight = if examples * world == global_examples { 1.0 } else { (examples * world) as f64 / global_examples.max(1) as f64 };
        let trainable: Vec<&Parameter> = params.iter().map(|(_, p)| p).filter(|p| p.requires_grad()).collect();
        let of = |dtype: DType| trainable.iter().copied().filter(|p| p.dtype() == dtype).collect::<Vec<_>>();
        average::<f32>(self.world, &of(DType::F32), weight, &mut self.flat_f32)?;
        average::<f64>(self.world, &of(DType::F64), weight, &mut self.flat_f64)?;
        Ok(())
    }

    /// Copies rank 0's buffers (running statistics, counters) to every rank.
    pub fn broadcast_buffers(&self) -> Result<()> {
        for (name, b) in self.model.named_buffers() {
            b.set(&broadcast_tensor(self.world, &name, &b.get())?)?;
        }
        Ok(())
    }
}

impl Callback for DistributedDataParallel<'_> {
    fn on_gradients_ready(&mut self, params: &[(String, Parameter)], step: &Step) -> Result<()> {
        self.average_gradients(params, step.examples, step.global_examples)
    }

    fn on_train_epoch_end(&mut self, totals: &mut EpochTotals) -> Result<()> {
        let mut sums = [totals.loss, totals.correct, totals.seen];
        self.world.all_reduce_sum(&mut sums[..])?;
        *totals = EpochTotals { loss: sums[0], correct: sums[1], seen: sums[2] };
        self.broadcast_buffers()
    }
}

/// Averages the gradients of `params` (all of dtype `T`) over the ranks through `flat`:
/// each gradient (times `weight`; zeros if it has none) and then one has-a-gradient flag
/// per parameter, summed over the ranks, divided by the world size.
fn average<T: Reducible>(world: &World, params: &[&Parameter], weight: f64, flat: &mut Vec<T>) -> Result<()> {
    if params.is_empty() {
        return Ok(());
    }
    let numel: usize = params.iter().map(|p| p.numel()).sum();
    flat.clear();
    flat.reserve(numel + params.len());
    let mut flags = Vec::with_capacity(params.len());
    let w = T::from_f64(weight);
    for p in params {
        match p.grad() {
            Some(g) if weight != 0.0 => {
                let g = g.contiguous_data::<T>()?;
                match weight == 1.0 {
                    true => flat.extend_from_slice(&g),
                    false => flat.extend(g.iter().map(|&x| x * w)),
                }
                flags.push(T::one());
            }
            _ => {
                flat.resize(flat.len() + p.numel(), T::zero());
                flags.push(T::zero());
            }
        }
    }
    flat.extend_from_slice(&flags);
    world.all_reduce_sum(&mut flat[..])?;
    let ranks = T::from_f64(world.size() as f64);
    let (grads, flags) = flat.split_at_mut(numel);
    let mut at = 0;
    for (p, &flag) in params.iter().zip(flags.iter()) {
        let part = &mut grads[at..at + p.numel()];
        at += p.numel();
        if flag == T::zero() {
            p.set_grad(None)?;
            continue;
        }
        part.iter_mut().for_each(|x| *x /= ranks);
        if !p.update_grad::<T>(|g| g.copy_from_slice(part))? {
            p.set_grad(Some(&Tensor::from_vec(part.to_vec(), &p.shape())?))?;
        }
    }
    Ok(())
}

/// `t` as rank 0 has it, on every rank (same shape and dtype on every rank: the model
/// fingerprints were compared).
fn broadcast_tensor(world: &World, name: &str, t: &Tensor) -> Result<Tensor> {
    let shape = t.shape().to_vec();
    Ok(match t.dtype() {
        DType::F32 => {
            let mut v = t.to_vec::<f32>();
            world.broadcast_from_rank0(&mut v[..]);
            Tensor::from_vec(v, &shape)?
        }
        DType::F64 => {
            let mut v = t.to_vec::<f64>();
            world.broadcast_from_rank0(&mut v[..]);
            Tensor::from_vec(v, &shape)?
        }
        DType::I64 => {
            let mut v = t.to_vec::<i64>();
            world.broadcast_from_rank0(&mut v[..]);
            Tensor::from_vec(v, &shape)?
        }
        dtype => {
            return Err(Error::config("DistributedDataParallel", format!("cannot copy '{name}' between ranks: a {dtype} tensor")));
        }
    })
}

/// FNV-1a of the model's structure: every parameter's and buffer's name, shape, dtype and
/// whether it trains. Equal fingerprints mean the ranks' messages will have equal sizes.
fn fingerprint(model: &dyn Module) -> u64 {
    let mut text = String::new();
    for (n, p) in model.named_parameters() {
        text.push_str(&format!("p {n} {:?} {} {}\n", p.shape(), p.dtype(), p.requires_grad()));
    }
    for (n, b) in model.named_buffers() {
        text.push_str(&format!("b {n} {:?} {}\n", b.shape(), b.dtype()));
    }
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}
