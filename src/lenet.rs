//! The main job: train the book's LeNet on Fashion-MNIST (`examples/lenet.rs` is a thin
//! `main` over [`parse_args`] and [`run`]). `lenet --help` lists the flags ([`LenetArgs`]).

use crate::cli::{self, RunError};
use crate::plot;
use autograd::{no_grad, rng, set_num_threads, Tensor};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use nn::{lenet, xavier_init, Act, Adam, DataLoader, FashionMnist, ImageDataset, Module, Optimizer, Pool, Sequential, Sgd};
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

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

/// `--pool avg|max`, listed in the help and in the error for any other value.
fn pool_parser() -> impl TypedValueParser<Value = Pool> {
    PossibleValuesParser::new(["avg", "max"]).map(|s| if s == "max" { Pool::Max } else { Pool::Avg })
}

/// `--act sigmoid|relu`.
fn act_parser() -> impl TypedValueParser<Value = Act> {
    PossibleValuesParser::new(["sigmoid", "relu"]).map(|s| if s == "relu" { Act::Relu } else { Act::Sigmoid })
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
    a.explicit = cmd
        .get_arguments()
        .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|arg| arg.get_long().map(|l| format!("--{l}")))
        .collect();
    Ok(a)
}

/// A usage error; `main` adds the `lenet: ` prefix (exactly once) and exits with
/// [`RunError::exit_code`].
fn usage(msg: String) -> RunError {
    RunError::Usage(msg)
}

/// One epoch's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochStats {
    /// Running mean of the minibatch losses over the epoch (the book's definition).
    pub loss: f64,
    pub train_acc: f64,
    pub test_acc: f64,
    pub examples_per_sec: f64,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub layer_table: Vec<(String, Vec<usize>)>,
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

/// Mean loss (over examples) and accuracy of `net` on a dataset, in eval mode and without
/// recording; the net's mode is restored afterwards.
pub fn evaluate(net: &Sequential, data: &ImageDataset, batch_size: usize) -> nn::Result<(f64, f64)> {
    let was_training = net.is_training();
    net.eval();
    let result = no_grad(|| {
        let loader = DataLoader::new(data, batch_size, false, 0)?;
        let (mut loss_sum, mut correct, mut n) = (0.0, 0usize, 0usize);
        for batch in loader.epoch(0) {
            let (x, y) = batch?;
            let logits = net.forward(&x)?;
            loss_sum += ops::cross_entropy(&logits, &y)?.item()? * y.len() as f64;
            correct += nn::correct(&logits, &y)?;
            n += y.len();
        }
        Ok((loss_sum / n.max(1) as f64, correct as f64 / n.max(1) as f64))
    });
    net.set_training(was_training);
    result
}

fn progress_bar(show: bool, len: usize, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(len as u64), indicatif::ProgressDrawTarget::stdout());
    bar.set_style(
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

/// Trains (or evaluates) as the flags say, writing the book's output to `out`.
pub fn run(args: &LenetArgs, out: &mut impl Write) -> Result<Report, RunError> {
    let io = |e: std::io::Error| nn::Error::io("<stdout>", e);
    let mut args = args.clone();
    // A resumed run takes its shape from the checkpoint.
    let resumed = match args.resume.clone() {
        Some(path) => {
            let entries = nn::load_checked(&path, |infos| TrainState::check_headers(infos, args.pool, args.act))?;
            let state = TrainState::from_entries(&entries, &path)?;
            state.apply_to(&mut args, &path)?;
            Some((entries, state))
        }
        None => None,
    };
    // Every output path is checked now, not after the first epoch.
    if let Some(path) = &args.save {
        nn::check_save_path(path)?;
    }
    if let Some(path) = &args.plot {
        nn::check_writable(path)?;
    }
    if let Some(t) = args.threads {
        set_num_threads(t).map_err(|e| usage(format!("--threads: {e}")))?;
    }
    let _restore = AnomalyMode(autograd::is_anomaly_enabled());
    autograd::set_detect_anomaly(args.detect_anomaly);
    let (train, test) = FashionMnist::load(&args.data_dir)?;
    let train = match args.train_limit {
        Some(n) => train.limit(n),
        None => train,
    };
    let test = match args.test_limit {
        Some(n) => test.limit(n),
        None => test,
    };
    let mut r = rng(args.seed);
    let net = lenet(args.pool, args.act, &mut r)?;
    xavier_init(&net, &mut r)?;
    let mut report = Report::default();

    // The book's layer table, for one random image.
    let probe = Tensor::rand(&[1, 1, 28, 28], &mut r);
    // In eval mode, as PyTorch users print it.
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
        let (loss, acc) = evaluate(&net, &test, 1000)?;
        writeln!(out, "test loss {loss:.4}, test acc {acc:.4}").map_err(io)?;
        report.eval = Some((loss, acc));
        return Ok(report);
    }

    let mut opt: Box<dyn Optimizer> = match args.optimizer.as_str() {
        "adam" => Box::new(Adam::new(net.named_parameters(), args.lr)?),
        _ => Box::new(Sgd::new(net.named_parameters(), args.lr)?),
    };
    let mut start_epoch = 0;
    if let (Some((entries, state)), Some(path)) = (&resumed, &args.resume) {
        let in_file = |e: nn::Error| nn::Error::Checkpoint { path: path.clone(), message: e.to_string() };
        // Refuses NaN or infinite weights too, naming the file and the key.
        nn::load_state_dict_from(&net, path, entries)?;
        opt.load_state_dict(&state.optimizer_state).map_err(in_file)?;
        // The run trains at a constant rate: the saved --lr (`_train.config`, checked like
        // the flag) is the rate, whatever the optimiser's saved group says.
        opt.set_lr(args.lr).map_err(in_file)?;
        start_epoch = state.epoch;
        report.epochs = state.history.clone();
        if args.epochs <= start_epoch {
            writeln!(out, "nothing to do: {} already holds {start_epoch} epochs (--epochs {})", path.display(), args.epochs).map_err(io)?;
            return Ok(report);
        }
        writeln!(out, "resuming {} after epoch {start_epoch}", path.display()).map_err(io)?;
    }
    let loader = DataLoader::new(&train, args.batch_size, true, args.seed)?;
    let mut total_examples = 0usize;
    let mut total_secs = 0.0;
    // The file that holds the last good weights and their epoch: the checkpoint resumed
    // from, then each save. Only a file this run read or wrote is ever named.
    let mut last_good: Option<(PathBuf, usize)> = args.resume.clone().map(|p| (p, start_epoch));
    let params = net.named_parameters();
    for epoch in start_epoch..args.epochs {
        let bar = progress_bar(args.progress, loader.len(), epoch + 1, args.epochs);
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen, mut batches) = (0.0, 0usize, 0usize, 0usize);
        for batch in loader.epoch(epoch as u64) {
            let (x, y) = batch?;
            let step = batches + 1;
            let stop = |what: String| diverged(format!("epoch {}, step {step}", epoch + 1), what, &last_good);
            let logits = net.forward(&x)?;
            let loss = ops::cross_entropy(&logits, &y)?;
            if args.detect_anomaly {
                autograd::check_finite_graph(&loss).map_err(|e| stop(e.to_string()))?;
            }
            let lv = loss.item()?;
            if !lv.is_finite() {
                return Err(stop(format!("the loss became {lv}")).into());
            }
            opt.zero_grad();
            loss.backward().map_err(|e| match e {
                e @ autograd::Error::Anomaly { .. } => stop(e.to_string()),
                e => e.into(),
            })?;
            correct += nn::correct(&logits, &y)?;
            // Free the step's graph first, so the optimiser updates the weights in place.
            drop((loss, logits));
            opt.step().map_err(|e| match e {
                nn::Error::Diverged(m) => stop(m),
                e => e,
            })?;
            // The loss above was finite, but the update may not be: check the weights it
            // wrote, so a save never holds NaN or infinity and the run stops at the step
            // that broke them (a pass over the parameters: small next to the step).
            if let Some((name, i, v)) = params.iter().find_map(|(n, p)| nn::module::first_non_finite(&p.data()).map(|(i, v)| (n, i, v))) {
                return Err(stop(format!("the update left parameter '{name}' holding {v} at index {i}")).into());
            }
            if epoch == 0 {
                report.first_epoch_losses.push(lv);
            }
            loss_sum += lv;
            batches += 1;
            seen += y.len();
            bar.set_message(format!("loss {:.4}, train acc {:.4}", loss_sum / batches as f64, correct as f64 / seen as f64));
            bar.inc(1);
        }
        let secs = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        total_examples += seen;
        total_secs += secs;
        let (_, test_acc) = evaluate(&net, &test, 1000)?;
        let stats = EpochStats {
            loss: loss_sum / batches.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            test_acc,
            examples_per_sec: seen as f64 / secs,
        };
        writeln!(
            out,
            "epoch {}/{}: loss {:.4}, train acc {:.4}, test acc {:.4}, {:.1} examples/sec",
            epoch + 1,
            args.epochs,
            stats.loss,
            stats.train_acc,
            stats.test_acc,
            stats.examples_per_sec
        )
        .map_err(io)?;
        report.epochs.push(stats);
        if let Some(path) = &args.save {
            let state = TrainState {
                epoch: epoch + 1,
                seed: args.seed,
                batch_size: args.batch_size,
                train_limit: args.train_limit,
                test_limit: args.test_limit,
                pool: args.pool,
                act: args.act,
                optimizer: args.optimizer.clone(),
                lr: args.lr,
                history: report.epochs.clone(),
                optimizer_state: opt.state_dict(),
            };
            let mut entries = net.state_dict();
            entries.extend(state.entries());
            // The weights are finite (checked after every step); the optimiser's state
            // (Adam's moments can overflow while the weights stay finite) is checked here,
            // so the last good checkpoint is all finite and resumes.
            if let Some((key, i, v)) = entries.iter().find_map(|(k, t)| nn::module::first_non_finite(t).map(|(i, v)| (k, i, v))) {
                let what = format!("'{key}' holds {v} at index {i}, so it was not saved");
                return Err(diverged(format!("epoch {}, end", epoch + 1), what, &last_good).into());
            }
            nn::save(path, &entries)?;
            last_good = Some((path.clone(), epoch + 1));
        }
        if let Some(path) = &args.plot {
            plot::write_training_svg(path, &report.epochs)?;
        }
    }
    if let Some(last) = report.epochs.last() {
        writeln!(out, "loss {:.3}, train acc {:.3}, test acc {:.3}", last.loss, last.train_acc, last.test_acc).map_err(io)?;
        writeln!(out, "{:.1} examples/sec on cpu ({} threads)", total_examples as f64 / total_secs, autograd::num_threads()).map_err(io)?;
    }
    report.peak_memory_mb = peak_memory_mb();
    if let Some(mb) = report.peak_memory_mb {
        writeln!(out, "peak memory {mb:.0} MB").map_err(io)?;
    }
    Ok(report)
}

/// The error that stops a diverging run at `when`: what went wrong, and the checkpoint
/// that still holds good weights (a file this run resumed from or wrote), if any.
fn diverged(when: String, what: String, last_good: &Option<(PathBuf, usize)>) -> nn::Error {
    let kept = match last_good {
        Some((p, e)) => format!("the last good checkpoint, after epoch {e}, is {}", p.display()),
        None => "no checkpoint was written".to_string(),
    };
    nn::Error::Diverged(format!("{when}: {what}; training stopped, {kept}"))
}

/// Restores this thread's anomaly mode when a run ends.
struct AnomalyMode(bool);
impl Drop for AnomalyMode {
    fn drop(&mut self) {
        autograd::set_detect_anomaly(self.0);
    }
}

/// Whether the progress bar should be drawn.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

// ----- resuming ---------------------------------------------------------------------------

/// The `_train.*` entries a checkpoint carries beside the weights, so a run can continue
/// exactly: the completed epochs, the flags that shape the run, the history for the summary
/// and the plot, and the optimiser state. The data order needs no saved RNG state: each
/// epoch's shuffle is a function of (seed, epoch).
#[derive(Debug, Clone)]
pub struct TrainState {
    pub epoch: usize,
    pub seed: u64,
    pub batch_size: usize,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub pool: Pool,
    pub act: Act,
    pub optimizer: String,
    pub lr: f64,
    pub history: Vec<EpochStats>,
    pub optimizer_state: Vec<(String, Tensor)>,
}

const OPT_PREFIX: &str = "_train.optimizer.";

fn f64s(v: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape).expect("length matches")
}

impl TrainState {
    /// The entries to store beside the weights.
    pub fn entries(&self) -> Vec<(String, Tensor)> {
        let limit = |l: Option<usize>| l.map_or(-1.0, |n| n as f64);
        let config = vec![
            self.seed as f64,
            self.batch_size as f64,
            limit(self.train_limit),
            limit(self.test_limit),
            (self.pool == Pool::Max) as u8 as f64,
            (self.act == Act::Relu) as u8 as f64,
            (self.optimizer == "adam") as u8 as f64,
            self.lr,
        ];
        // No timings: the file must not depend on how fast the machine was.
        let hist: Vec<f64> = self.history.iter().flat_map(|e| [e.loss, e.train_acc, e.test_acc]).collect();
        let mut out = vec![
            ("_train.epoch".to_string(), f64s(vec![self.epoch as f64], &[])),
            ("_train.config".to_string(), f64s(config, &[8])),
            ("_train.history".to_string(), f64s(hist, &[self.history.len(), 3])),
        ];
        out.extend(self.optimizer_state.iter().map(|(k, t)| (format!("{OPT_PREFIX}{k}"), t.clone())));
        out
    }

    /// The header check of a checkpoint to resume, before any data is read: LeNet's
    /// parameters with their shapes, the `_train` entries with theirs (at most
    /// [`cli::MAX_EPOCHS`] history rows), optimiser state shaped like the parameters, and
    /// nothing else. So a file cannot make the resume read more than about four models.
    pub fn check_headers(infos: &[nn::EntryInfo], pool: Pool, act: Act) -> Result<Vec<bool>, String> {
        // Pool and activation have no parameters: the shapes do not depend on them.
        let net = lenet(pool, act, &mut rng(0)).map_err(|e| e.to_string())?;
        let params: Vec<(String, Vec<usize>)> = net.named_parameters().into_iter().map(|(n, p)| (n, p.shape().to_vec())).collect();
        // The optimiser state either optimiser writes (keyed by parameter name), before the
        // saved config says which one the run used.
        let opts: Vec<Box<dyn Optimizer>> = vec![
            Box::new(Sgd::new(net.named_parameters(), 0.1).map_err(|e| e.to_string())?),
            Box::new(Adam::new(net.named_parameters(), 0.1).map_err(|e| e.to_string())?),
        ];
        let mut problems = Vec::new();
        for info in infos {
            let (name, shape) = (info.name.as_str(), info.shape.as_slice());
            let ok = match name {
                "_train.epoch" => shape.is_empty(),
                "_train.config" => shape == [8],
                "_train.history" => matches!(shape, [rows, 3] if *rows <= cli::MAX_EPOCHS),
                _ => match name.strip_prefix(OPT_PREFIX) {
                    Some(k) => opts.iter().any(|o| o.entry_shape(k).is_some_and(|s| s == shape)),
                    None => params.iter().find(|(n, _)| n == name).is_some_and(|(_, s)| s == shape),
                },
            };
            if !ok {
                problems.push(format!("unexpected entry '{name}' of shape {}", autograd::error::fmt_shape(shape)));
            }
        }
        match problems.is_empty() {
            true => Ok(vec![true; infos.len()]),
            false => {
                let shown: Vec<String> = problems.iter().take(10).cloned().collect();
                let more = if problems.len() > 10 { format!("; and {} more", problems.len() - 10) } else { String::new() };
                Err(format!("not a resumable lenet checkpoint: {}{more}", shown.join("; ")))
            }
        }
    }

    /// Reads the entries back. Every saved setting goes through the same checks as its
    /// flag ([`cli`]), so a damaged or hand-edited file cannot resume with, say, a batch
    /// size of 0 or a NaN learning rate; an error names the file and the setting.
    pub fn from_entries(entries: &[(String, Tensor)], path: &std::path::Path) -> nn::Result<TrainState> {
        let bad = |m: &str| nn::Error::format(path, 0, format!("not a resumable lenet checkpoint: {m}"));
        let get =
            |k: &str| entries.iter().find(|(n, _)| n == k).map(|(_, t)| t.to_vec::<f64>()).ok_or_else(|| bad(&format!("no '{k}' entry")));
        let saved = |what: &'static str| move |m: String| bad(&format!("saved {what} {m}"));
        let epoch = get("_train.epoch")?;
        let c = get("_train.config")?;
        let h = get("_train.history")?;
        if epoch.len() != 1 || c.len() != 8 || h.len() % 3 != 0 {
            return Err(bad("malformed _train entries"));
        }
        let epoch: usize = cli::whole(epoch[0]).and_then(cli::epochs).map_err(saved("epoch"))?;
        // A NaN or infinite optimiser moment would turn the weights NaN at the first step.
        for (k, t) in entries.iter().filter(|(k, _)| k.starts_with(OPT_PREFIX)) {
            if let Some((i, v)) = nn::module::first_non_finite(t) {
                return Err(bad(&format!("'{k}' holds {v} at index {i} (a non-finite value)")));
            }
        }
        if h.len() / 3 != epoch {
            return Err(bad("malformed _train entries"));
        }
        // -1 stands for no limit.
        let limit = |v: f64, what: &'static str| match v {
            -1.0 => Ok(None),
            v => cli::whole(v).and_then(cli::count).map(Some).map_err(saved(what)),
        };
        // The choices are stored as 0 or 1 (the first or the second name).
        let second = |v: f64, what: &'static str| match v {
            0.0 => Ok(false),
            1.0 => Ok(true),
            v => Err(saved(what)(format!("expects 0 or 1, got {v}"))),
        };
        Ok(TrainState {
            epoch,
            seed: cli::whole(c[0]).and_then(cli::seed).map_err(saved("seed"))?,
            batch_size: cli::whole(c[1]).and_then(cli::count).map_err(saved("batch size"))?,
            train_limit: limit(c[2], "train limit")?,
            test_limit: limit(c[3], "test limit")?,
            pool: if second(c[4], "pool")? { Pool::Max } else { Pool::Avg },
            act: if second(c[5], "act")? { Act::Relu } else { Act::Sigmoid },
            optimizer: if second(c[6], "optimizer")? { "adam".into() } else { "sgd".into() },
            lr: cli::learning_rate(c[7]).map_err(saved("learning rate"))?,
            history: h.chunks(3).map(|e| EpochStats { loss: e[0], train_acc: e[1], test_acc: e[2], examples_per_sec: f64::NAN }).collect(),
            optimizer_state: entries.iter().filter_map(|(k, t)| k.strip_prefix(OPT_PREFIX).map(|k| (k.to_string(), t.clone()))).collect(),
        })
    }

    /// Applies the saved run's settings to `args`; a flag given on the command line that
    /// contradicts them is an error.
    pub fn apply_to(&self, args: &mut LenetArgs, path: &std::path::Path) -> Result<(), RunError> {
        let given = |f: &str| args.explicit.iter().any(|e| e == f);
        let fmt_limit = |l: Option<usize>| l.map_or("none".to_string(), |n| n.to_string());
        let checks: [(&str, String, String); 8] = [
            ("--seed", args.seed.to_string(), self.seed.to_string()),
            ("--batch-size", args.batch_size.to_string(), self.batch_size.to_string()),
            ("--train-limit", fmt_limit(args.train_limit), fmt_limit(self.train_limit)),
            ("--test-limit", fmt_limit(args.test_limit), fmt_limit(self.test_limit)),
            ("--pool", format!("{:?}", args.pool).to_lowercase(), format!("{:?}", self.pool).to_lowercase()),
            ("--act", format!("{:?}", args.act).to_lowercase(), format!("{:?}", self.act).to_lowercase()),
            ("--optimizer", args.optimizer.clone(), self.optimizer.clone()),
            ("--lr", args.lr.to_string(), self.lr.to_string()),
        ];
        for (flag, now, saved) in checks {
            if given(flag) && now != saved {
                return Err(usage(format!("{flag} {now} contradicts the run saved in {} ({flag} {saved})", path.display())));
            }
        }
        args.seed = self.seed;
        args.batch_size = self.batch_size;
        args.train_limit = self.train_limit;
        args.test_limit = self.test_limit;
        args.pool = self.pool;
        args.act = self.act;
        args.optimizer = self.optimizer.clone();
        args.lr = self.lr;
        Ok(())
    }
}
