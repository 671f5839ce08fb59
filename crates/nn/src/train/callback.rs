//! What a [`Trainer`](super::Trainer) tells the code around it, and when: the hooks of a
//! training loop (PyTorch Lightning's callbacks, keras' `Callback`, burn's event
//! processors), each with a default that does nothing.

use super::EpochStats;
use crate::error::Result;
use autograd::Parameter;
use std::io::Write;

/// Where the loop is in a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Epoch, from 0.
    pub epoch: usize,
    /// Batch within the epoch, from 0.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// Steps taken before this one since the run started (resumed runs count the saved
    /// epochs' too).
    pub global: u64,
    /// This batch's loss (in a data-parallel run, of this process's part of the batch;
    /// 0 for an empty part).
    pub loss: f64,
    /// Samples this process trained on in this step.
    pub examples: usize,
    /// Samples in the whole batch: `examples` unless the batch is shared between the
    /// processes of a data-parallel run ([`Shard`](crate::data::Shard)).
    pub global_examples: usize,
}

/// An epoch's training numbers before they become [`EpochStats`]: what a data-parallel run
/// sums over its processes ([`Callback::on_train_epoch_end`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochTotals {
    /// The sum over the epoch's batches of this process's share of each batch's loss
    /// (its part's mean loss times `examples / global_examples`): summed over the
    /// processes, the sum of the batches' mean losses.
    pub loss: f64,
    /// Correct predictions.
    pub correct: f64,
    /// Samples trained on.
    pub seen: f64,
}

/// The running numbers of an epoch after a batch, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Running {
    pub loss: f64,
    pub train_acc: f64,
}

/// What the whole run did, for the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct FitSummary {
    /// The last epoch's numbers (saved ones included on a resumed run).
    pub last: Option<EpochStats>,
    /// Training examples per second of training time (evaluation excluded), over the
    /// epochs this process trained.
    pub examples_per_sec: f64,
    pub threads: usize,
}

/// A training loop's hooks. Every method has a default that does nothing; an error stops
/// the run and is returned by [`Trainer::fit`](super::Trainer::fit).
pub trait Callback {
    /// Before the first batch of `epoch` (from 0) of `epochs`, with `batches` to come.
    fn on_epoch_start(&mut self, _epoch: usize, _epochs: usize, _batches: usize) -> Result<()> {
        Ok(())
    }

    /// After backward, before the optimiser's update: the step's gradients are in the
    /// parameters' `.grad()`. Clipping, gradient logging and a data-parallel all-reduce
    /// belong here.
    fn on_gradients_ready(&mut self, _params: &[(String, Parameter)], _step: &Step) -> Result<()> {
        Ok(())
    }

    /// After the update (and a per-batch scheduler step).
    fn on_batch_end(&mut self, _step: &Step, _running: &Running) -> Result<()> {
        Ok(())
    }

    /// After the epoch's last update, before its evaluation, with this process's totals: a
    /// data-parallel run sums them over its processes here (and shares the running
    /// statistics it evaluates with), so the epoch's numbers describe the whole data.
    fn on_train_epoch_end(&mut self, _totals: &mut EpochTotals) -> Result<()> {
        Ok(())
    }

    /// After the epoch's evaluation, before its checkpoint is written. `history` holds every
    /// epoch so far, this one last.
    fn on_epoch_end(&mut self, _stats: &EpochStats, _epochs: usize, _history: &[EpochStats]) -> Result<()> {
        Ok(())
    }

    /// After the last epoch.
    fn on_fit_end(&mut self, _summary: &FitSummary) -> Result<()> {
        Ok(())
    }
}

/// Clips the gradients' global norm before every update (`clip_grad_norm_` with the 2-norm),
/// as PyTorch recipes call it between `backward` and `step`.
pub struct ClipGradNorm {
    pub max_norm: f64,
}

impl Callback for ClipGradNorm {
    fn on_gradients_ready(&mut self, params: &[(String, Parameter)], _step: &Step) -> Result<()> {
        let ps: Vec<Parameter> = params.iter().map(|(_, p)| p.clone()).collect();
        crate::clip::clip_grad_norm_(&ps, self.max_norm, 2.0, false)?;
        Ok(())
    }
}

/// The book's lines: `epoch e/E: loss L, train acc A, test acc T, N examples/sec` after each
/// epoch, then the summary `loss L, train acc A, test acc T` and
/// `N examples/sec on cpu (T threads)`.
pub struct PrintEpochs<W: Write> {
    pub out: W,
}

fn io(e: std::io::Error) -> crate::Error {
    crate::Error::io("<output>", e)
}

impl<W: Write> Callback for PrintEpochs<W> {
    fn on_epoch_end(&mut self, s: &EpochStats, epochs: usize, history: &[EpochStats]) -> Result<()> {
        writeln!(
            self.out,
            "epoch {}/{}: loss {:.4}, train acc {:.4}, test acc {:.4}, {:.1} examples/sec",
            history.len(),
            epochs,
            s.loss,
            s.train_acc,
            s.test_acc,
            s.examples_per_sec
        )
        .map_err(io)
    }

    fn on_fit_end(&mut self, summary: &FitSummary) -> Result<()> {
        if let Some(last) = &summary.last {
            writeln!(self.out, "loss {:.3}, train acc {:.3}, test acc {:.3}", last.loss, last.train_acc, last.test_acc).map_err(io)?;
        }
        if summary.examples_per_sec.is_finite() {
            writeln!(self.out, "{:.1} examples/sec on cpu ({} threads)", summary.examples_per_sec, summary.threads).map_err(io)?;
        }
        Ok(())
    }
}
