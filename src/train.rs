//! `examples/train`: SPEC's models (the book's LeNet, BatchNorm LeNet, ResNet-18) on
//! Fashion-MNIST, on the library's one training loop ([`nn::Trainer`]). `train --help`
//! lists the flags ([`TrainArgs`]); `examples/lenet` is this with LeNet's flags only.

use crate::cli::{self, RunError};
use crate::plot;
use autograd::{no_grad, rng, set_num_threads, Tensor};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use nn::data::RandomCropFlip;
use nn::optim::lr_scheduler::{CosineAnnealingLR, LinearLR, LrScheduler, MultiStepLR, OneCycleLR, SequentialLR, StepLR};
use nn::optim::{AdamConfig, RmsPropConfig, SgdConfig};
use nn::train::{settings, Callback, ClipGradNorm, EpochStats, PrintEpochs, Running, SchedulerStep, Settings, Step, Value};
use nn::{Act, Adam, AdamW, Dataset, FashionMnist, Module, Optimizer, Pool, RmsProp, Sequential, Sgd, TrainConfig, Trainer};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Train one of SPEC's models on Fashion-MNIST and print the book's summary.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "train", version, long_about = None, allow_negative_numbers = true)]
pub struct TrainArgs {
    /// The network
    #[arg(long, value_name = "NAME", default_value = "lenet", value_parser = ["lenet", "bn-lenet", "resnet18"])]
    pub model: String,
    /// Epochs to train (with --resume: the total, counting the saved ones)
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = cli::parse_epochs)]
    pub epochs: usize,
    /// Minibatch size
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = cli::parse_count)]
    pub batch_size: usize,
    /// Optimiser
    #[arg(long, value_name = "NAME", default_value = "sgd", value_parser = ["sgd", "adam", "adamw", "rmsprop"])]
    pub optimizer: String,
    /// Learning rate [default: with sgd 0.9 for lenet, 1.0 for bn-lenet, 0.05 for resnet18; 0.001 otherwise]
    #[arg(long, value_name = "X", value_parser = cli::parse_learning_rate)]
    pub lr: Option<f64>,
    /// Momentum (sgd, rmsprop)
    #[arg(long, value_name = "X", default_value_t = 0.0, value_parser = cli::parse_non_negative)]
    pub momentum: f64,
    /// Weight decay [default: 0.01 for adamw, 0 otherwise]
    #[arg(long, value_name = "X", value_parser = cli::parse_non_negative)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule (step, multistep, cosine per epoch; onecycle per batch)
    #[arg(long, value_name = "NAME", default_value = "none", value_parser = ["none", "step", "multistep", "cosine", "onecycle"])]
    pub scheduler: String,
    /// Epochs between decays of --scheduler step
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = cli::parse_count)]
    pub step_size: usize,
    /// Decay factor of --scheduler step and multistep
    #[arg(long, value_name = "X", default_value_t = 0.1, value_parser = cli::parse_factor)]
    pub gamma: f64,
    /// Epochs after which --scheduler multistep decays, e.g. 5,8
    #[arg(long, value_name = "E1,E2,...", value_parser = check_milestones)]
    pub milestones: Option<String>,
    /// Epochs of linear warm-up from lr/100 (per batch), before the schedule
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = cli::parse_epochs)]
    pub warmup_epochs: usize,
    /// Clip the gradients' 2-norm to this before every update
    #[arg(long, value_name = "X", value_parser = cli::parse_learning_rate)]
    pub clip_grad_norm: Option<f64>,
    /// Augment the training images: random crop with 4 pixels of zero padding, then a
    /// random horizontal flip (torchvision's RandomCrop(28, padding=4), RandomHorizontalFlip())
    #[arg(long)]
    pub augment: bool,
    /// Seed for initialisation, shuffling and random draws, 0 to 2^53
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
    /// Pooling layers (lenet only) [default: avg]
    #[arg(long, value_name = "NAME", value_parser = pool_parser())]
    pub pool: Option<Pool>,
    /// Activations (lenet only) [default: sigmoid]
    #[arg(long, value_name = "NAME", value_parser = act_parser())]
    pub act: Option<Act>,
    /// Threads for every kernel [default: all cores]
    #[arg(long, value_name = "N", value_parser = cli::parse_threads)]
    pub threads: Option<usize>,
    /// Save the run after every epoch (atomically)
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
    /// Stop once N epochs are done (counting saved ones), e.g. to fit a job's time limit;
    /// the schedule is still planned over --epochs, and --resume continues
    #[arg(long, value_name = "N", value_parser = cli::parse_count)]
    pub stop_after: Option<usize>,
    /// Continue the run saved there (with --save); --epochs is the total
    #[arg(long, value_name = "FILE.npz", conflicts_with_all = ["load", "eval_only"])]
    pub resume: Option<PathBuf>,
    /// Fail on the first NaN or infinity, naming the op and the step
    #[arg(long)]
    pub detect_anomaly: bool,
    /// Train data-parallel over MPI, one process per rank under `mpirun -n N`:
    /// --batch-size is the global batch, shared by the ranks; only rank 0 prints (no
    /// progress bar), plots and saves (needs a build with --features distributed)
    #[arg(long)]
    pub distributed: bool,
    /// Show a progress bar (set when stdout is a terminal).
    #[arg(skip)]
    pub progress: bool,
    /// The flags given on the command line (the rest are defaults), for `--resume`.
    #[arg(skip)]
    pub explicit: Vec<String>,
}

/// `--pool avg|max`, listed in the help and in the error for any other value.
pub(crate) fn pool_parser() -> impl TypedValueParser<Value = Pool> {
    PossibleValuesParser::new(["avg", "max"]).map(|s| if s == "max" { Pool::Max } else { Pool::Avg })
}

/// `--act sigmoid|relu`.
pub(crate) fn act_parser() -> impl TypedValueParser<Value = Act> {
    PossibleValuesParser::new(["sigmoid", "relu"]).map(|s| if s == "relu" { Act::Relu } else { Act::Sigmoid })
}

/// `--milestones 5,8`, checked (the text is kept, as the checkpoint saves it).
fn check_milestones(s: &str) -> Result<String, String> {
    parse_milestones(s).map(|_| s.to_string())
}

/// `5,8`: increasing epochs.
fn parse_milestones(s: &str) -> Result<Vec<usize>, String> {
    let v: Vec<usize> = s.split(',').map(|x| x.trim().parse::<usize>().map_err(|e| format!("{e} in '{s}'"))).collect::<Result<_, _>>()?;
    if v.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("expects increasing epochs, got {s}"));
    }
    Ok(v)
}

/// Parses a command line (program name first), recording the flags given in
/// [`TrainArgs::explicit`]. `--help` and `--version` come back as errors too; `clap::Error::exit`
/// prints each and exits with its code (0 for those, 2 for a usage error).
pub fn parse_args<I, T>(argv: I) -> Result<TrainArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cmd = TrainArgs::command();
    let matches = cmd.clone().try_get_matches_from(argv)?;
    let mut a = TrainArgs::from_arg_matches(&matches)?;
    a.explicit = explicit_flags(&cmd, &matches);
    Ok(a)
}

/// The long flags given on the command line.
pub(crate) fn explicit_flags(cmd: &clap::Command, matches: &clap::ArgMatches) -> Vec<String> {
    cmd.get_arguments()
        .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|arg| arg.get_long().map(|l| format!("--{l}")))
        .collect()
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub layer_table: Vec<(String, Vec<usize>)>,
    /// Every epoch's numbers (a resumed run's saved ones first, without timings).
    pub epochs: Vec<EpochStats>,
    /// Loss of each minibatch of the first epoch (to check that it falls).
    pub first_epoch_losses: Vec<f64>,
    /// With `--eval-only`: mean cross-entropy over every test example, and accuracy.
    pub eval: Option<(f64, f64)>,
    pub peak_memory_mb: Option<f64>,
}

/// Peak resident memory of this process (Linux), in MB.
pub fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A run's settings with every default resolved: what a checkpoint saves.
#[derive(Debug, Clone, PartialEq)]
struct Resolved {
    lr: f64,
    weight_decay: f64,
    pool: Pool,
    act: Act,
}

impl TrainArgs {
    /// The defaults that depend on other flags: the learning rate on the model and the
    /// optimiser, the weight decay on the optimiser.
    fn resolved(&self) -> Resolved {
        let lr = self.lr.unwrap_or(match (self.optimizer.as_str(), self.model.as_str()) {
            ("sgd", "bn-lenet") => 1.0,
            ("sgd", "resnet18") => 0.05,
            ("sgd", _) => 0.9,
            _ => 0.001,
        });
        let weight_decay = self.weight_decay.unwrap_or(if self.optimizer == "adamw" { 0.01 } else { 0.0 });
        Resolved { lr, weight_decay, pool: self.pool.unwrap_or(Pool::Avg), act: self.act.unwrap_or(Act::Sigmoid) }
    }

    /// Whether the schedule's length depends on the total epochs (then a resumed run
    /// cannot change them).
    fn schedule_needs_epochs(&self) -> bool {
        matches!(self.scheduler.as_str(), "cosine" | "onecycle") || self.warmup_epochs > 0
    }

    /// The settings a checkpoint saves, named after their flags.
    fn settings(&self) -> Settings {
        let r = self.resolved();
        let limit = |l: Option<usize>| l.map_or(Value::Text("none".into()), |n| Value::Number(n as f64));
        let mut s =
            Settings::new().text("model", &self.model).number("seed", self.seed as f64).number("batch_size", self.batch_size as f64);
        s.set("train_limit", limit(self.train_limit));
        s.set("test_limit", limit(self.test_limit));
        if self.model == "lenet" {
            s.set("pool", Value::Text(format!("{:?}", r.pool).to_lowercase()));
            s.set("act", Value::Text(format!("{:?}", r.act).to_lowercase()));
        }
        let milestones = self.milestones.clone().unwrap_or_default();
        s.text("optimizer", &self.optimizer)
            .number("lr", r.lr)
            .number("momentum", self.momentum)
            .number("weight_decay", r.weight_decay)
            .text("scheduler", &self.scheduler)
            .number("step_size", self.step_size as f64)
            .number("gamma", self.gamma)
            .text("milestones", milestones)
            .number("warmup_epochs", self.warmup_epochs as f64)
            .number("clip_grad_norm", self.clip_grad_norm.unwrap_or(0.0))
            .number("augment", self.augment as u8 as f64)
            .number("epochs", self.epochs as f64)
    }

    /// The run saved with `saved`, read back through the same checks as the flags: every
    /// flag not given now takes its saved value; a given one that contradicts the saved
    /// run is a usage error. The epochs stay this run's unless the schedule depends on them.
    fn resumed(&self, saved: &Settings, path: &Path) -> Result<TrainArgs, RunError> {
        let bad = |m: String| nn::Error::format(path, 0, format!("not a resumable checkpoint: {m}"));
        let num = |k: &str| saved.get_number(k).map_err(&bad);
        let text = |k: &str| saved.get_text(k).map(str::to_string).map_err(&bad);
        let check = |what: &'static str| move |m: String| bad(format!("saved {what} {m}"));
        let whole_with = |k: &str, what: &'static str, f: fn(usize) -> Result<usize, String>| -> nn::Result<usize> {
            settings::whole::<usize>(num(k)?).and_then(f).map_err(check(what))
        };
        let choice = |k: &str, what: &'static str, allowed: &[&str]| -> nn::Result<String> {
            let v = text(k)?;
            match allowed.contains(&v.as_str()) {
                true => Ok(v),
                false => Err(check(what)(format!("expects one of {}, got '{v}'", allowed.join(", ")))),
            }
        };
        let limit = |k: &str, what: &'static str| -> nn::Result<Option<usize>> {
            match saved.get(k) {
                Some(Value::Text(t)) if t == "none" => Ok(None),
                _ => whole_with(k, what, settings::count).map(Some),
            }
        };
        let mut s = self.clone();
        s.model = choice("model", "model", &["lenet", "bn-lenet", "resnet18"])?;
        s.seed = settings::whole::<u64>(num("seed")?).and_then(settings::seed).map_err(check("seed"))?;
        s.batch_size = whole_with("batch_size", "batch size", settings::count)?;
        s.train_limit = limit("train_limit", "train limit")?;
        s.test_limit = limit("test_limit", "test limit")?;
        if s.model == "lenet" {
            s.pool = Some(if choice("pool", "pool", &["avg", "max"])? == "max" { Pool::Max } else { Pool::Avg });
            s.act = Some(if choice("act", "act", &["sigmoid", "relu"])? == "relu" { Act::Relu } else { Act::Sigmoid });
        }
        s.optimizer = choice("optimizer", "optimizer", &["sgd", "adam", "adamw", "rmsprop"])?;
        s.lr = Some(settings::learning_rate(num("lr")?).map_err(check("learning rate"))?);
        s.momentum = settings::non_negative(num("momentum")?).map_err(check("momentum"))?;
        s.weight_decay = Some(settings::non_negative(num("weight_decay")?).map_err(check("weight decay"))?);
        s.scheduler = choice("scheduler", "scheduler", &["none", "step", "multistep", "cosine", "onecycle"])?;
        s.step_size = whole_with("step_size", "step size", settings::count)?;
        s.gamma = settings::factor(num("gamma")?).map_err(check("gamma"))?;
        let m = text("milestones")?;
        s.milestones = if m.is_empty() { None } else { Some(check_milestones(&m).map_err(check("milestones"))?) };
        s.warmup_epochs = whole_with("warmup_epochs", "warm-up epochs", settings::epochs)?;
        let clip = settings::non_negative(num("clip_grad_norm")?).map_err(check("clip-grad-norm"))?;
        s.clip_grad_norm = (clip > 0.0).then_some(clip);
        s.augment = match num("augment")? {
            0.0 => false,
            1.0 => true,
            v => return Err(check("augment")(format!("expects 0 or 1, got {v}")).into()),
        };
        let saved_epochs = whole_with("epochs", "epochs", settings::epochs)?;
        if s.schedule_needs_epochs() {
            s.epochs = saved_epochs;
        }
        // A flag given now must agree with the saved run.
        let given: Vec<String> = self.explicit.iter().map(|f| f.trim_start_matches('-').replace('-', "_")).collect();
        let given: Vec<&str> = given.iter().map(String::as_str).collect();
        let now = self.settings();
        let mut then = s.settings();
        if s.schedule_needs_epochs() {
            then.set("epochs", Value::Number(saved_epochs as f64));
        }
        if let Some((name, now, then)) = now.contradiction(&then, &given) {
            let flag = format!("--{}", name.replace('_', "-"));
            return Err(RunError::Usage(format!("{flag} {now} contradicts the run saved in {} ({flag} {then})", path.display())));
        }
        Ok(s)
    }
}

/// The network, initialised from `seed` (LeNet with Xavier, as the book; the others with
/// PyTorch's default initialisation), and the generator, for the layer table's probe.
fn build_model(a: &TrainArgs) -> nn::Result<(Sequential, autograd::Rng)> {
    let mut r = rng(a.seed);
    let net = match a.model.as_str() {
        "bn-lenet" => nn::bn_lenet(&mut r)?,
        "resnet18" => nn::resnet18(&mut r)?,
        _ => {
            let res = a.resolved();
            let net = nn::lenet(res.pool, res.act, &mut r)?;
            nn::xavier_init(&net, &mut r)?;
            net
        }
    };
    Ok((net, r))
}

fn build_optimizer(a: &TrainArgs, net: &Sequential) -> nn::Result<Box<dyn Optimizer>> {
    let r = a.resolved();
    let params = net.named_parameters();
    Ok(match a.optimizer.as_str() {
        "adam" => Box::new(Adam::with(params, AdamConfig::new(r.lr).weight_decay(r.weight_decay))?),
        "adamw" => Box::new(AdamW::with(params, AdamConfig::adamw(r.lr).weight_decay(r.weight_decay))?),
        "rmsprop" => Box::new(RmsProp::with(params, RmsPropConfig::new(r.lr).momentum(a.momentum).weight_decay(r.weight_decay))?),
        _ => Box::new(Sgd::with(params, SgdConfig::new(r.lr).momentum(a.momentum).weight_decay(r.weight_decay))?),
    })
}

/// A scheduler and when it steps.
type Schedule = (Box<dyn LrScheduler>, SchedulerStep);

/// The schedule: per epoch for step, multistep and cosine; per batch for onecycle, and for
/// everything after a warm-up (then in batch units: the same epochs' boundaries).
fn build_scheduler(a: &TrainArgs, opt: &mut dyn Optimizer, batches: usize) -> Result<Option<Schedule>, RunError> {
    let usage = |m: &str| Err(RunError::Usage(m.to_string()));
    let (w, e, b) = (a.warmup_epochs as i64, a.epochs as i64, batches as i64);
    let milestones: Vec<i64> = a
        .milestones
        .as_deref()
        .map(parse_milestones)
        .transpose()
        .map_err(RunError::Usage)?
        .unwrap_or_default()
        .into_iter()
        .map(|m| m as i64)
        .collect();
    if a.scheduler == "multistep" && milestones.is_empty() {
        return usage("--scheduler multistep needs --milestones");
    }
    if w > 0 && a.scheduler == "onecycle" {
        return usage("--warmup-epochs does not apply to --scheduler onecycle, which warms up itself");
    }
    if w > 0 && w >= e {
        return usage("--warmup-epochs must be fewer than --epochs");
    }
    // The main schedule in `unit`s (1 for epochs, batches per epoch after a warm-up),
    // starting after the warm-up.
    let main = |opt: &mut dyn Optimizer, unit: i64| -> nn::Result<Option<Box<dyn LrScheduler>>> {
        Ok(match a.scheduler.as_str() {
            "step" => Some(Box::new(StepLR::new(opt, a.step_size as i64 * unit, a.gamma)?)),
            "multistep" => {
                Some(Box::new(MultiStepLR::new(opt, &milestones.iter().map(|m| (m - w).max(0) * unit).collect::<Vec<_>>(), a.gamma)?))
            }
            "cosine" => Some(Box::new(CosineAnnealingLR::new(opt, (e - w) * unit, 0.0)?)),
            _ => None,
        })
    };
    Ok(match (a.scheduler.as_str(), w) {
        ("none", 0) => None,
        ("onecycle", _) => Some((Box::new(OneCycleLR::new(opt, a.resolved().lr, e * b)?), SchedulerStep::Batch)),
        (_, 0) => main(opt, 1)?.map(|s| (s, SchedulerStep::Epoch)),
        _ => {
            let warm: Box<dyn LrScheduler> = Box::new(LinearLR::new(opt, 0.01, 1.0, w * b)?);
            match main(opt, b)? {
                None => Some((warm, SchedulerStep::Batch)),
                Some(rest) => Some((Box::new(SequentialLR::new(opt, vec![warm, rest], vec![w * b])?), SchedulerStep::Batch)),
            }
        }
    })
}

/// The progress bar, drawn when stdout is a terminal.
struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
}

impl Callback for ProgressBar {
    fn on_epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) -> nn::Result<()> {
        let bar = indicatif::ProgressBar::with_draw_target(Some(batches as u64), indicatif::ProgressDrawTarget::stdout());
        bar.set_style(
            indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{epochs}", epoch + 1));
        self.bar = Some(bar);
        Ok(())
    }
    fn on_batch_end(&mut self, _step: &Step, r: &Running) -> nn::Result<()> {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("loss {:.4}, train acc {:.4}", r.loss, r.train_acc));
            bar.inc(1);
        }
        Ok(())
    }
    fn on_epoch_end(&mut self, _s: &EpochStats, _epochs: usize, _history: &[EpochStats]) -> nn::Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        Ok(())
    }
}

/// Redraws the training plot after every epoch.
struct Plot(PathBuf);

impl Callback for Plot {
    fn on_epoch_end(&mut self, _s: &EpochStats, _epochs: usize, history: &[EpochStats]) -> nn::Result<()> {
        plot::write_training_svg(&self.0, history)
    }
}

/// Keeps the first epoch's minibatch losses, for the report.
struct FirstEpochLosses<'a>(&'a mut Vec<f64>);

impl Callback for FirstEpochLosses<'_> {
    fn on_batch_end(&mut self, step: &Step, _r: &Running) -> nn::Result<()> {
        if step.epoch == 0 {
            self.0.push(step.loss);
        }
        Ok(())
    }
}

/// The processes of a `--distributed` run.
#[cfg(feature = "distributed")]
use nn::distributed::World;

/// Without the `distributed` feature there is no world: a type with no values keeps one
/// code path for both builds.
#[cfg(not(feature = "distributed"))]
enum World {}

#[cfg(not(feature = "distributed"))]
impl World {
    fn rank(&self) -> usize {
        match *self {}
    }
    fn shard(&self) -> nn::data::Shard {
        match *self {}
    }
    fn local_size(&self) -> usize {
        match *self {}
    }
}

/// Trains (or evaluates) as the flags say, writing the book's output to `out`. With
/// `--distributed`, this process is one rank of an MPI job: only rank 0 writes to `out`,
/// and an error on any rank ends every rank (`MPI_Abort`, naming the rank) instead of
/// returning, since returning would finalise MPI while the other ranks wait for this one.
pub fn run(args: &TrainArgs, out: &mut dyn Write) -> Result<Report, RunError> {
    if !args.distributed {
        return train(args, out, None);
    }
    #[cfg(feature = "distributed")]
    {
        let world = World::init()?;
        let mut sink = std::io::sink();
        let out: &mut dyn Write = if world.rank() == 0 { out } else { &mut sink };
        match train(args, out, Some(&world)) {
            Ok(report) => Ok(report),
            Err(e) => world.fail(format!("train: rank {} of {}: {e}", world.rank(), world.size()), e.exit_code()),
        }
    }
    #[cfg(not(feature = "distributed"))]
    Err(RunError::Usage("--distributed needs a build with `--features distributed` (README, \"Distributed\")".into()))
}

/// [`run`] on one process, or on one rank of `world`.
fn train(args: &TrainArgs, out: &mut dyn Write, world: Option<&World>) -> Result<Report, RunError> {
    let io = |e: std::io::Error| nn::Error::io("<stdout>", e);
    let rank0 = world.is_none_or(|w| w.rank() == 0);
    if args.model != "lenet" {
        for flag in ["--pool", "--act"] {
            if args.explicit.iter().any(|f| f == flag) {
                return Err(RunError::Usage(format!("{flag} applies to --model lenet only, not {}", args.model)));
            }
        }
    }
    // A resumed run takes its settings from the checkpoint.
    let args = match &args.resume {
        Some(path) => args.resumed(&nn::train::read_settings(path)?, path)?,
        None => args.clone(),
    };
    // Every output path is checked now, not after the first epoch (by the one rank that
    // writes them).
    if let Some(path) = args.save.as_ref().filter(|_| rank0) {
        nn::check_save_path(path)?;
    }
    if let Some(path) = args.plot.as_ref().filter(|_| rank0) {
        nn::check_writable(path)?;
    }
    // The ranks on one machine share its cores.
    let threads = args.threads.or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        world.map(|w| (cores / w.local_size()).max(1))
    });
    if let Some(t) = threads {
        set_num_threads(t).map_err(|e| RunError::Usage(format!("--threads: {e}")))?;
    }
    let (train, test) = FashionMnist::load(&args.data_dir)?;
    let train = match args.train_limit {
        Some(n) => train.limit(n),
        None => train,
    };
    let test = match args.test_limit {
        Some(n) => test.limit(n),
        None => test,
    };
    let (net, mut r) = build_model(&args)?;
    let mut report = Report::default();

    // The book's layer table, for one random image, in eval mode as PyTorch users print it.
    let probe = Tensor::rand(&[1, 1, 28, 28], &mut r);
    net.eval();
    report.layer_table = no_grad(|| net.summary(&probe))?;
    net.train();
    for (name, shape) in &report.layer_table {
        let name = name.split('(').next().unwrap_or(name);
        writeln!(out, "{name:<10} output shape: {}", crate::book::torch_size(shape)).map_err(io)?;
    }

    if let Some(path) = &args.load {
        // Refuses NaN or infinite weights, naming the file and the key.
        nn::load_state_dict_file(&net, path)?;
        writeln!(out, "loaded weights from {}", path.display()).map_err(io)?;
    }
    if args.eval_only {
        let (loss, acc) = nn::train::evaluate(&net, &test, 1000)?;
        writeln!(out, "test loss {loss:.4}, test acc {acc:.4}").map_err(io)?;
        report.eval = Some((loss, acc));
        return Ok(report);
    }

    let mut opt = build_optimizer(&args, &net)?;
    let batches = train.len().div_ceil(args.batch_size);
    let scheduler = build_scheduler(&args, opt.as_mut(), batches)?;
    let mut config = TrainConfig::new(args.epochs, args.batch_size, args.seed);
    config.detect_anomaly = args.detect_anomaly;
    config.save = args.save.clone().filter(|_| rank0);
    config.settings = args.settings();
    config.shard = world.map(|w| w.shard());
    let mut first_losses = Vec::new();
    let mut trainer = Trainer::new(&net, opt, config);
    if let Some((s, every)) = scheduler {
        trainer.set_scheduler(s, every);
    }
    if let Some(path) = &args.resume {
        trainer.resume(path)?;
        report.epochs = trainer.history().to_vec();
        if args.epochs <= trainer.epoch() {
            writeln!(out, "nothing to do: {} already holds {} epochs (--epochs {})", path.display(), trainer.epoch(), args.epochs)
                .map_err(io)?;
            return Ok(report);
        }
        writeln!(out, "resuming {} after epoch {}", path.display(), trainer.epoch()).map_err(io)?;
    }
    // Rank 0's weights and buffers on every rank (after a resume too, so the ranks agree
    // even if their copies of the file did not), then the gradients averaged before any
    // other gradient hook sees them.
    #[cfg(feature = "distributed")]
    if let Some(w) = world {
        trainer.add_callback(nn::distributed::DistributedDataParallel::new(w, &net)?);
    }
    if let Some(max_norm) = args.clip_grad_norm {
        trainer.add_callback(ClipGradNorm { max_norm });
    }
    // Not with --distributed: mpirun gives the ranks a terminal even when its own output
    // goes to a file (a cluster job's log), which the bar would fill.
    if args.progress && world.is_none() {
        trainer.add_callback(ProgressBar { bar: None });
    }
    trainer.add_callback(FirstEpochLosses(&mut first_losses));
    trainer.add_callback(PrintEpochs { out: &mut *out });
    if let Some(path) = args.plot.as_ref().filter(|_| rank0) {
        trainer.add_callback(Plot(path.clone()));
    }
    let stop = args.stop_after.map_or(args.epochs, |n| n.min(args.epochs));
    let augmented;
    let train_set: &dyn Dataset = if args.augment {
        augmented = RandomCropFlip::new(train, 4);
        &augmented
    } else {
        &train
    };
    let fitted = trainer.fit_until(train_set, &test, stop);
    drop(trainer);
    report.epochs = fitted?;
    report.first_epoch_losses = first_losses;
    report.peak_memory_mb = peak_memory_mb();
    if let Some(mb) = report.peak_memory_mb {
        writeln!(out, "peak memory {mb:.0} MB").map_err(io)?;
    }
    Ok(report)
}
