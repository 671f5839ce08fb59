//! The main job: train the book's LeNet on Fashion-MNIST (`examples/lenet.rs` is a thin
//! `main` over [`parse_args`] and [`run`]). `lenet --help` lists the flags ([`LenetArgs`]):
//! `train`'s ([`crate::train`]) for LeNet with a constant learning rate, run by the same
//! code on the same loop, so the two examples' checkpoints are one format.

use crate::cli::{self, RunError};
use crate::train::{act_parser, explicit_flags, pool_parser, TrainArgs};
use clap::{CommandFactory, FromArgMatches, Parser};
use nn::{Act, ImageDataset, Pool, Sequential};
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

pub use crate::train::{peak_memory_mb, Report};
pub use nn::EpochStats;

/// Train the book's LeNet on Fashion-MNIST and print the book's summary.
///
/// The flags are the run's settings; [`parse_args`] also records which ones were given,
/// so `--resume` can tell a repeated flag from one that contradicts the saved run.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "lenet", version, long_about = None, allow_negative_numbers = true)]
pub struct LenetArgs {
    /// Epochs to train (with --resume: the total, counting the saved ones)
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = cli::parse_epochs)]
    pub epochs: usize,
    /// Minibatch size
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = cli::parse_count)]
    pub batch_size: usize,
    /// Optimiser
    #[arg(long, value_name = "NAME", default_value = "sgd", value_parser = ["sgd", "adam"])]
    pub optimizer: String,
    /// Learning rate [default: 0.9 for sgd, 0.001 for adam]
    #[arg(long, value_name = "X", default_value = "0.9", default_value_if("optimizer", "adam", "0.001"),
          hide_default_value = true, value_parser = cli::parse_learning_rate)]
    pub lr: f64,
    /// Seed for initialisation and shuffling, 0 to 2^53 (a checkpoint keeps it exactly)
    #[arg(long, value_name = "N", default_value_t = 42, value_parser = cli::parse_seed)]
    pub seed: u64,
    /// Folder with the four IDX files, gzipped or not
    #[arg(long, value_name = "DIR", default_value = "data/fashion-mnist")]
    pub data_dir: PathBuf,
    /// Use the first N training samples
    #[arg(long, value_name = "N", value_parser = cli::parse_count)]
    pub train_limit: Option<usize>,
    /// Use the first N test samples
    #[arg(long, value_name = "N", value_parser = cli::parse_count)]
    pub test_limit: Option<usize>,
    /// Pooling layers
    #[arg(long, value_name = "NAME", default_value = "avg", value_parser = pool_parser())]
    pub pool: Pool,
    /// Activations
    #[arg(long, value_name = "NAME", default_value = "sigmoid", value_parser = act_parser())]
    pub act: Act,
    /// Threads for every kernel [default: all cores]
    #[arg(long, value_name = "N", value_parser = cli::parse_threads)]
    pub threads: Option<usize>,
    /// Save the weights after every epoch (atomically)
    #[arg(long, value_name = "FILE.npz")]
    pub save: Option<PathBuf>,
    /// Start from these weights (e.g. trained in PyTorch)
    #[arg(long, value_name = "FILE.npz")]
    pub load: Option<PathBuf>,
    /// Evaluate the --load weights on the test set; no training
    #[arg(long, requires = "load")]
    pub eval_only: bool,
    /// Draw train loss, train acc and test acc per epoch
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Continue the run saved there (with --save); --epochs is the total
    #[arg(long, value_name = "FILE.npz", conflicts_with_all = ["load", "eval_only"])]
    pub resume: Option<PathBuf>,
    /// Fail on the first NaN or infinity, naming the op and the step
    #[arg(long)]
    pub detect_anomaly: bool,
    /// Show a progress bar (set when stdout is a terminal).
    #[arg(skip)]
    pub progress: bool,
    /// The flags given on the command line (the rest are defaults), for `--resume`.
    #[arg(skip)]
    pub explicit: Vec<String>,
}

/// Parses a command line (program name first, as from `std::env::args_os`), recording
/// the flags given in [`LenetArgs::explicit`]. `--help` and `--version` come back as
/// errors too; `clap::Error::exit` prints each and exits with its code (0 for those, 2
/// for a usage error).
pub fn parse_args<I, T>(argv: I) -> Result<LenetArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cmd = LenetArgs::command();
    let matches = cmd.clone().try_get_matches_from(argv)?;
    let mut a = LenetArgs::from_arg_matches(&matches)?;
    a.explicit = explicit_flags(&cmd, &matches);
    Ok(a)
}

impl LenetArgs {
    /// The same run as `train --model lenet` flags.
    pub fn to_train_args(&self) -> TrainArgs {
        TrainArgs {
            model: "lenet".into(),
            epochs: self.epochs,
            batch_size: self.batch_size,
            optimizer: self.optimizer.clone(),
            lr: Some(self.lr),
            momentum: 0.0,
            weight_decay: None,
            scheduler: "none".into(),
            step_size: 5,
            gamma: 0.1,
            milestones: None,
            warmup_epochs: 0,
            clip_grad_norm: None,
            augment: false,
            seed: self.seed,
            data_dir: self.data_dir.clone(),
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            pool: Some(self.pool),
            act: Some(self.act),
            threads: self.threads,
            save: self.save.clone(),
            load: self.load.clone(),
            eval_only: self.eval_only,
            plot: self.plot.clone(),
            stop_after: None,
            resume: self.resume.clone(),
            detect_anomaly: self.detect_anomaly,
            distributed: false,
            progress: self.progress,
            explicit: self.explicit.clone(),
        }
    }
}

/// Mean loss (over examples) and accuracy of `net` on a dataset, in eval mode and without
/// recording; the net's mode is restored afterwards.
pub fn evaluate(net: &Sequential, data: &ImageDataset, batch_size: usize) -> nn::Result<(f64, f64)> {
    nn::train::evaluate(net, data, batch_size)
}

/// Trains (or evaluates) as the flags say, writing the book's output to `out`.
pub fn run(args: &LenetArgs, out: &mut impl Write) -> Result<Report, RunError> {
    crate::train::run(&args.to_train_args(), out)
}

/// Whether the progress bar should be drawn.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
