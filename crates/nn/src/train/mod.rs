//! One training loop for every model: [`Trainer`].
//!
//! ```no_run
//! # use nn::{train::{Trainer, TrainConfig, PrintEpochs}, Sgd, Module};
//! # fn run(net: &nn::Sequential, train: &nn::ImageDataset, test: &nn::ImageDataset) -> nn::Result<()> {
//! let opt = Sgd::new(net.named_parameters(), 0.9)?;
//! let mut trainer = Trainer::new(net, Box::new(opt), TrainConfig::new(10, 256, 42));
//! trainer.add_callback(PrintEpochs { out: std::io::stdout() });
//! trainer.fit(train, test)?;
//! # Ok(()) }
//! ```
//!
//! Each epoch: the data in the order `DataLoader` gives for `(seed, epoch)`, the model in
//! training mode, and for each batch forward, loss, backward, the gradients-ready hooks
//! (clipping; a data-parallel all-reduce), the optimiser's update, the divergence guard
//! (the loss and every updated parameter must be finite, else the run stops naming the
//! step and the last good checkpoint), a per-batch scheduler step. Then evaluation in eval
//! mode, the epoch hooks (printing, plotting), a per-epoch scheduler step and the
//! checkpoint.
//!
//! A checkpoint holds the model's `state_dict` (PyTorch's keys) and the run's state, all
//! by name: `_train.epoch`, `_train.history`, `_train.setting.*` (the run's settings),
//! `_train.optimizer.*`, `_train.scheduler.*` and `_train.rng` (the default generator's
//! state, from which dropout masks and augmentation draw). The data order needs none: it
//! is a function of `(seed, epoch)`. So a run resumed at an epoch boundary
//! ([`Trainer::resume`]) continues bitwise as the uninterrupted one.
//!
//! A data-parallel run sets [`TrainConfig::shard`]: each process then trains on its part of
//! every batch ([`DataLoader::epoch_shard`]), its default generator starts each epoch from
//! [`shard_generator_seed`], and a callback (`nn::distributed`'s, with the `distributed`
//! feature) averages the gradients and sums the epoch's totals over the processes.

pub mod callback;
pub mod checkpoint;
pub mod settings;

pub use callback::{Callback, ClipGradNorm, EpochTotals, FitSummary, PrintEpochs, Running, Step};
pub use checkpoint::read_settings;
pub use settings::{Settings, Value};

use crate::data::{DataLoader, Dataset, Shard};
use crate::error::{Error, Result};
use crate::module::Module;
use crate::optim::lr_scheduler::LrScheduler;
use crate::optim::Optimizer;
use autograd::{no_grad, Generator, Tensor};
use std::path::PathBuf;
use std::time::Instant;

/// One epoch's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochStats {
    /// Running mean of the minibatch losses over the epoch (the book's definition).
    pub loss: f64,
    pub train_acc: f64,
    pub test_acc: f64,
    /// Training examples per second in this epoch (NaN for an epoch read from a checkpoint:
    /// a file does not depend on how fast the machine was).
    pub examples_per_sec: f64,
}

/// When a learning-rate scheduler steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerStep {
    /// After every epoch (StepLR, MultiStepLR, CosineAnnealingLR over epochs).
    Epoch,
    /// After every update (OneCycleLR, warm-up), as PyTorch recipes do.
    Batch,
}

/// The loop's settings.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Total epochs (a resumed run counts the saved ones).
    pub epochs: usize,
    pub batch_size: usize,
    /// The data order's seed, and the default generator's on a fresh run.
    pub seed: u64,
    /// Batch size of evaluation (no graph is kept, so it may be large).
    pub eval_batch_size: usize,
    /// Anomaly mode: the first NaN or infinity fails the step, naming the op.
    pub detect_anomaly: bool,
    /// Where to save a checkpoint after every epoch (atomically).
    pub save: Option<PathBuf>,
    /// Saved in every checkpoint; a resumed run compares its own with them.
    pub settings: Settings,
    /// This process's part of a data-parallel run (`None`: the whole data). Set before
    /// [`Trainer::new`], which records the world size in the settings: a resume needs
    /// the same number of processes.
    pub shard: Option<Shard>,
}

impl TrainConfig {
    pub fn new(epochs: usize, batch_size: usize, seed: u64) -> Self {
        TrainConfig {
            epochs,
            batch_size,
            seed,
            eval_batch_size: 1000,
            detect_anomaly: false,
            save: None,
            settings: Settings::new(),
            shard: None,
        }
    }
}

/// The loss of a batch from the model's output and the labels.
pub type LossFn<'a> = Box<dyn Fn(&Tensor, &[usize]) -> autograd::Result<Tensor> + 'a>;

/// A training loop over a model, an optimiser and, optionally, a scheduler; see the
/// [module docs](self).
pub struct Trainer<'a> {
    model: &'a dyn Module,
    optimizer: Box<dyn Optimizer + 'a>,
    scheduler: Option<(Box<dyn LrScheduler + 'a>, SchedulerStep)>,
    callbacks: Vec<Box<dyn Callback + 'a>>,
    loss: LossFn<'a>,
    config: TrainConfig,
    /// Completed epochs.
    epoch: usize,
    history: Vec<EpochStats>,
    /// Updates done (saved epochs' included).
    global_step: u64,
    /// The file holding the last good weights and their epoch (the checkpoint resumed
    /// from, then each save): what a divergence message points to.
    last_good: Option<(PathBuf, usize)>,
    /// The default generator's state at the last epoch boundary (what a checkpoint saves).
    rng: Generator,
}

impl<'a> Trainer<'a> {
    /// A loop with cross-entropy loss; the run starts at epoch 0 with the default generator
    /// seeded from `config.seed`.
    /// `config.settings` gets `seed` and `batch_size` from the config (a resume refuses a
    /// checkpoint saved with others).
    pub fn new(model: &'a dyn Module, optimizer: Box<dyn Optimizer + 'a>, mut config: TrainConfig) -> Self {
        let rng = Generator::new(config.seed);
        config.settings.set("seed", Value::Number(config.seed as f64));
        config.settings.set("batch_size", Value::Number(config.batch_size as f64));
        if let Some(shard) = config.shard {
            config.settings.set(WORLD_SIZE, Value::Number(shard.world as f64));
        }
        Trainer {
            model,
            optimizer,
            scheduler: None,
            callbacks: Vec::new(),
            loss: Box::new(|logits, labels| ops::cross_entropy(logits, labels)),
            config,
            epoch: 0,
            history: Vec::new(),
            global_step: 0,
            last_good: None,
            rng,
        }
    }

    /// Adds a learning-rate scheduler, stepped after every epoch or every update.
    pub fn set_scheduler(&mut self, scheduler: Box<dyn LrScheduler + 'a>, every: SchedulerStep) {
        self.scheduler = Some((scheduler, every));
    }

    /// Replaces the loss (cross-entropy by default).
    pub fn set_loss(&mut self, loss: impl Fn(&Tensor, &[usize]) -> autograd::Result<Tensor> + 'a) {
        self.loss = Box::new(loss);
    }

    pub fn add_callback(&mut self, callback: impl Callback + 'a) {
        self.callbacks.push(Box::new(callback));
    }

    /// Epochs completed (saved ones included).
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    pub fn history(&self) -> &[EpochStats] {
        &self.history
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn optimizer(&self) -> &dyn Optimizer {
        self.optimizer.as_ref()
    }

    /// Mean loss (over examples) and accuracy of the model on `data`, in eval mode and
    /// without recording; the model's mode is restored afterwards.
    pub fn evaluate(&self, data: &dyn Dataset) -> Result<(f64, f64)> {
        evaluate_with(self.model, data, self.config.eval_batch_size, &self.loss)
    }

    /// Trains from the current epoch to `config.epochs`, evaluating on `test` after each
    /// epoch. Returns the history (saved epochs first on a resumed run).
    pub fn fit(&mut self, train: &dyn Dataset, test: &dyn Dataset) -> Result<Vec<EpochStats>> {
        self.fit_until(train, test, self.config.epochs)
    }

    /// [`Trainer::fit`], stopping once `stop` epochs (at most `config.epochs`) are done: a
    /// run cut to fit a time limit, whose schedule is still planned over `config.epochs`
    /// and which [`Trainer::resume`] continues.
    pub fn fit_until(&mut self, train: &dyn Dataset, test: &dyn Dataset, stop: usize) -> Result<Vec<EpochStats>> {
        let stop = stop.min(self.config.epochs);
        let _restore = AnomalyMode(autograd::is_anomaly_enabled());
        autograd::set_detect_anomaly(self.config.detect_anomaly);
        let loader = DataLoader::new(train, self.config.batch_size, true, self.config.seed)?;
        let shard = self.config.shard.unwrap_or(Shard::WHOLE);
        let (batch_size, world) = (self.config.batch_size, shard.world);
        if batch_size < world || shard.rank >= world {
            let what = format!("rank {} of {world} processes cannot share batches of {batch_size}", shard.rank);
            return Err(Error::config("Trainer::fit", format!("{what}: the batch size must be at least the world size")));
        }
        let params = self.model.named_parameters();
        let (mut examples, mut secs) = (0usize, 0.0f64);
        autograd::set_rng_state(self.rng);
        // Every epoch has the same number of batches.
        self.global_step = self.epoch as u64 * loader.len() as u64;
        for epoch in self.epoch..stop {
            if let Some(shard) = self.config.shard {
                autograd::set_rng_state(Generator::new(shard_generator_seed(self.config.seed, shard, epoch)));
            }
            self.model.train();
            for cb in &mut self.callbacks {
                cb.on_epoch_start(epoch, self.config.epochs, loader.len())?;
            }
            let start = Instant::now();
            let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
            // This process's share of the batches' losses (`loss_sum` itself without a shard).
            let mut loss_share = 0.0;
            for (b, batch) in loader.epoch_shard(epoch as u64, shard).enumerate() {
                let (x, y) = batch?;
                // The step's name is formatted only when the run stops there.
                let stop = |what: String| diverged(&format!("epoch {}, step {}", epoch + 1, b + 1), what, &self.last_good);
                let lv = if y.is_empty() {
                    // This process's part of a last batch smaller than the world: nothing
                    // to learn from, but the gradient hooks below still run (every process
                    // takes part in the all-reduce).
                    self.optimizer.zero_grad();
                    0.0
                } else {
                    let logits = self.model.forward(&x)?;
                    let loss = (self.loss)(&logits, &y)?;
                    if self.config.detect_anomaly {
                        autograd::check_finite_graph(&loss).map_err(|e| stop(e.to_string()))?;
                    }
                    let lv = loss.item()?;
                    if !lv.is_finite() {
                        return Err(stop(format!("the loss became {lv}")));
                    }
                    self.optimizer.zero_grad();
                    loss.backward().map_err(|e| match e {
                        e @ autograd::Error::Anomaly { .. } => stop(e.to_string()),
                        e => e.into(),
                    })?;
                    correct += crate::loss::correct(&logits, &y)?;
                    // Free the step's graph first, so the optimiser updates the weights in place.
                    drop((loss, logits));
                    lv
                };
                let global_examples = loader.batch_len(b);
                let step =
                    Step { epoch, batch: b, batches: loader.len(), global: self.global_step, loss: lv, examples: y.len(), global_examples };
                for cb in &mut self.callbacks {
                    cb.on_gradients_ready(&params, &step)?;
                }
                self.optimizer.step().map_err(|e| match e {
                    Error::Diverged(m) => stop(m),
                    e => e,
                })?;
                // The loss was finite, but the update may not be: check the weights it
                // wrote, so a save never holds NaN or infinity and the run stops at the
                // step that broke them (a pass over the parameters: small next to a step).
                if let Some((name, i, v)) =
                    params.iter().find_map(|(n, p)| crate::module::first_non_finite(&p.data()).map(|(i, v)| (n, i, v)))
                {
                    return Err(stop(format!("the update left parameter '{name}' holding {v} at index {i}")));
                }
                if let Some((s, SchedulerStep::Batch)) = &mut self.scheduler {
                    s.step(self.optimizer.as_mut())?;
                }
                self.global_step += 1;
                loss_sum += lv;
                // Exactly `lv` for a whole batch (the ratio is 1).
                loss_share += lv * (y.len() as f64 / global_examples as f64);
                seen += y.len();
                let running = Running { loss: loss_sum / (b + 1) as f64, train_acc: correct as f64 / seen as f64 };
                for cb in &mut self.callbacks {
                    cb.on_batch_end(&step, &running)?;
                }
            }
            let epoch_secs = start.elapsed().as_secs_f64();
            let mut totals = EpochTotals { loss: loss_share, correct: correct as f64, seen: seen as f64 };
            for cb in &mut self.callbacks {
                cb.on_train_epoch_end(&mut totals)?;
            }
            examples += totals.seen as usize;
            secs += epoch_secs;
            let (_, test_acc) = self.evaluate(test)?;
            let batches = loader.len().max(1);
            let stats = EpochStats {
                loss: totals.loss / batches as f64,
                train_acc: totals.correct / totals.seen.max(1.0),
                test_acc,
                examples_per_sec: totals.seen / epoch_secs,
            };
            self.history.push(stats.clone());
            if let Some((s, SchedulerStep::Epoch)) = &mut self.scheduler {
                s.step(self.optimizer.as_mut())?;
            }
            self.epoch = epoch + 1;
            self.rng = autograd::rng_state();
            for cb in &mut self.callbacks {
                cb.on_epoch_end(&stats, self.config.epochs, &self.history)?;
            }
            if let Some(path) = self.config.save.clone() {
                self.save(&path)?;
            }
        }
        let summary =
            FitSummary { last: self.history.last().cloned(), examples_per_sec: examples as f64 / secs, threads: autograd::num_threads() };
        for cb in &mut self.callbacks {
            cb.on_fit_end(&summary)?;
        }
        Ok(self.history.clone())
    }

    /// Writes a checkpoint of the run at the current epoch boundary. Everything is checked
    /// finite first (the weights are after every step; an optimiser's moments can overflow
    /// while the weights stay finite), so the last good checkpoint always resumes.
    pub fn save(&mut self, path: &std::path::Path) -> Result<()> {
        let entries = checkpoint::entries(self);
        if let Some((key, i, v)) = entries.iter().find_map(|(k, t)| crate::module::first_non_finite(t).map(|(i, v)| (k, i, v))) {
            let what = format!("'{key}' holds {v} at index {i}, so it was not saved");
            return Err(diverged(&format!("epoch {}, end", self.epoch), what, &self.last_good));
        }
        crate::io::save(path, &entries)?;
        self.last_good = Some((path.to_path_buf(), self.epoch));
        Ok(())
    }

    /// Continues the run saved in `path`: the model's weights and buffers, the optimiser,
    /// the scheduler, the default generator, the completed epochs and their history. The
    /// model, optimiser and scheduler must be built as the saved run's were (see
    /// [`read_settings`]); the file's headers are checked against them before any data is
    /// read, and nothing changes on an error.
    pub fn resume(&mut self, path: &std::path::Path) -> Result<()> {
        checkpoint::resume(self, path)?;
        self.last_good = Some((path.to_path_buf(), self.epoch));
        Ok(())
    }
}

/// The setting a data-parallel run records its number of processes in.
pub(crate) const WORLD_SIZE: &str = "world_size";

/// The seed of `shard`'s default generator in `epoch` of a data-parallel run whose seed is
/// `seed`: different for every rank and epoch (splitmix64 of the three), so the ranks draw
/// different dropout masks and augmentations, and a function of the three alone, so a run
/// resumed at an epoch boundary needs no per-rank generator state.
pub fn shard_generator_seed(seed: u64, shard: Shard, epoch: usize) -> u64 {
    let mix = |x: u64| {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    mix(mix(mix(seed) ^ shard.rank as u64) ^ epoch as u64)
}

/// Mean loss (over examples) and accuracy of `model` on `data` with cross-entropy, in eval
/// mode and without recording; the model's mode is restored afterwards.
pub fn evaluate(model: &dyn Module, data: &dyn Dataset, batch_size: usize) -> Result<(f64, f64)> {
    evaluate_with(model, data, batch_size, &|l, y| ops::cross_entropy(l, y))
}

fn evaluate_with(
    model: &dyn Module,
    data: &dyn Dataset,
    batch_size: usize,
    loss: &dyn Fn(&Tensor, &[usize]) -> autograd::Result<Tensor>,
) -> Result<(f64, f64)> {
    let was_training = model.is_training();
    model.eval();
    let result = no_grad(|| {
        let loader = DataLoader::new(data, batch_size, false, 0)?;
        let (mut loss_sum, mut correct, mut n) = (0.0, 0usize, 0usize);
        for batch in loader.epoch(0) {
            let (x, y) = batch?;
            let logits = model.forward(&x)?;
            loss_sum += loss(&logits, &y)?.item()? * y.len() as f64;
            correct += crate::loss::correct(&logits, &y)?;
            n += y.len();
        }
        Ok((loss_sum / n.max(1) as f64, correct as f64 / n.max(1) as f64))
    });
    model.set_training(was_training);
    result
}

/// The error that stops a diverging run at `when`: what went wrong, and the checkpoint that
/// still holds good weights (a file this run resumed from or wrote), if any.
fn diverged(when: &str, what: String, last_good: &Option<(PathBuf, usize)>) -> Error {
    let kept = match last_good {
        Some((p, e)) => format!("the last good checkpoint, after epoch {e}, is {}", p.display()),
        None => "no checkpoint was written".to_string(),
    };
    Error::Diverged(format!("{when}: {what}; training stopped, {kept}"))
}

/// Restores this thread's anomaly mode when a run ends.
struct AnomalyMode(bool);
impl Drop for AnomalyMode {
    fn drop(&mut self) {
        autograd::set_detect_anomaly(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (rank, epoch) of a run draws from its own seed, and a run's seeds are not
    /// another seed's.
    #[test]
    fn shard_generator_seeds_differ_by_rank_epoch_and_seed() {
        let mut seen = std::collections::HashSet::new();
        for seed in [0u64, 1, 42] {
            for world in [1usize, 2, 3] {
                for rank in 0..world {
                    for epoch in 0..50 {
                        let s = shard_generator_seed(seed, Shard { rank, world }, epoch);
                        assert_eq!(s, shard_generator_seed(seed, Shard { rank, world: 7 }, epoch), "the world size plays no part");
                        seen.insert((seed, rank, epoch, s));
                    }
                }
            }
        }
        let seeds: std::collections::HashSet<u64> = seen.iter().map(|t| t.3).collect();
        assert_eq!(seeds.len(), 3 * 3 * 50);
    }
}
