//! The main job: train the book's LeNet on Fashion-MNIST (`examples/lenet.rs` is a thin
//! `main` over [`parse_args`] and [`run`]).

use crate::plot;
use autograd::{no_grad, rng, set_num_threads, Tensor};
use nn::{lenet, xavier_init, Act, Adam, DataLoader, FashionMnist, ImageDataset, Module, Optimizer, Pool, Sequential, Sgd};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

pub const USAGE: &str = "\
Train the book's LeNet on Fashion-MNIST and print the book's summary.

usage: lenet [FLAGS]

  --epochs N           epochs to train (10)
  --batch-size N       minibatch size (256)
  --optimizer NAME     sgd | adam (sgd)
  --lr X               learning rate (0.9 for sgd, 0.001 for adam)
  --seed N             seed for init and shuffling (42)
  --data-dir DIR       folder with the four IDX files, gzipped or not (data/fashion-mnist)
  --train-limit N      use the first N training samples
  --test-limit N       use the first N test samples
  --pool NAME          avg | max (avg)
  --act NAME           sigmoid | relu (sigmoid)
  --threads N          threads for every kernel (all cores)
  --save FILE.npz      save the weights after every epoch (atomically)
  --load FILE.npz      start from these weights (e.g. trained in PyTorch)
  --eval-only          evaluate the --load weights on the test set; no training
  --plot FILE.svg      draw train loss, train acc and test acc per epoch
  --resume FILE.npz    continue the run saved there (with --save); --epochs is the total
  --detect-anomaly     fail on the first NaN or infinity, naming the op and the step
  -h, --help           this text
";

/// Every flag of the example.
#[derive(Debug, Clone, PartialEq)]
pub struct LenetArgs {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: String,
    pub lr: f64,
    pub seed: u64,
    pub data_dir: PathBuf,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub pool: Pool,
    pub act: Act,
    pub threads: Option<usize>,
    pub save: Option<PathBuf>,
    pub load: Option<PathBuf>,
    pub eval_only: bool,
    pub plot: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub detect_anomaly: bool,
    /// Show a progress bar (set when stdout is a terminal).
    pub progress: bool,
    /// The flags given on the command line (the rest are defaults), for `--resume`.
    pub explicit: Vec<String>,
}

impl Default for LenetArgs {
    fn default() -> Self {
        LenetArgs {
            epochs: 10,
            batch_size: 256,
            optimizer: "sgd".into(),
            lr: 0.9,
            seed: 42,
            data_dir: PathBuf::from("data/fashion-mnist"),
            train_limit: None,
            test_limit: None,
            pool: Pool::Avg,
            act: Act::Sigmoid,
            threads: None,
            save: None,
            load: None,
            eval_only: false,
            plot: None,
            resume: None,
            detect_anomaly: false,
            progress: false,
            explicit: Vec::new(),
        }
    }
}

/// What [`parse_args`] found: a run to do, or a request for the help text.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Box<LenetArgs>),
    Help,
}

fn usage(msg: String) -> nn::Error {
    nn::Error::Usage(format!("lenet: {msg} (try --help)"))
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(flag: &str, v: &str, min: T) -> nn::Result<T> {
    match v.parse::<T>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(usage(format!("{flag} expects a number >= {min}, got '{v}'"))),
    }
}

/// Parses the flags (without the program name).
pub fn parse_args(args: &[String]) -> nn::Result<Command> {
    let mut a = LenetArgs::default();
    let mut lr = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| usage(format!("{flag} needs a value")));
        a.explicit.push(flag.clone());
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--epochs" => a.epochs = number(flag, value()?, 0)?,
            "--batch-size" => a.batch_size = number(flag, value()?, 1)?,
            "--optimizer" => {
                let v = value()?;
                if v != "sgd" && v != "adam" {
                    return Err(usage(format!("--optimizer expects sgd or adam, got '{v}'")));
                }
                a.optimizer = v.clone();
            }
            "--lr" => {
                let v = value()?;
                match v.parse::<f64>() {
                    Ok(x) if x > 0.0 && x.is_finite() => lr = Some(x),
                    _ => return Err(usage(format!("--lr expects a positive number, got '{v}'"))),
                }
            }
            "--seed" => a.seed = number(flag, value()?, 0)?,
            "--data-dir" => a.data_dir = PathBuf::from(value()?),
            "--train-limit" => a.train_limit = Some(number(flag, value()?, 1)?),
            "--test-limit" => a.test_limit = Some(number(flag, value()?, 1)?),
            "--pool" => {
                a.pool = match value()?.as_str() {
                    "avg" => Pool::Avg,
                    "max" => Pool::Max,
                    v => return Err(usage(format!("--pool expects avg or max, got '{v}'"))),
                }
            }
            "--act" => {
                a.act = match value()?.as_str() {
                    "sigmoid" => Act::Sigmoid,
                    "relu" => Act::Relu,
                    v => return Err(usage(format!("--act expects sigmoid or relu, got '{v}'"))),
                }
            }
            "--threads" => a.threads = Some(number(flag, value()?, 1)?),
            "--save" => a.save = Some(PathBuf::from(value()?)),
            "--load" => a.load = Some(PathBuf::from(value()?)),
            "--eval-only" => a.eval_only = true,
            "--plot" => a.plot = Some(PathBuf::from(value()?)),
            "--resume" => a.resume = Some(PathBuf::from(value()?)),
            "--detect-anomaly" => a.detect_anomaly = true,
            other => return Err(usage(format!("unknown flag '{other}'"))),
        }
    }
    a.lr = lr.unwrap_or(if a.optimizer == "adam" { 0.001 } else { 0.9 });
    if a.eval_only && a.load.is_none() {
        return Err(usage("--eval-only needs --load FILE.npz".into()));
    }
    if a.resume.is_some() && (a.load.is_some() || a.eval_only) {
        return Err(usage("--resume continues a saved run; it cannot be combined with --load or --eval-only".into()));
    }
    Ok(Command::Run(Box::new(a)))
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

/// Mean loss (over examples) and accuracy of `net` on a dataset, without recording.
pub fn evaluate(net: &Sequential, data: &ImageDataset, batch_size: usize) -> nn::Result<(f64, f64)> {
    no_grad(|| {
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
    })
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
pub fn run(args: &LenetArgs, out: &mut impl Write) -> nn::Result<Report> {
    let io = |e: std::io::Error| nn::Error::io("<stdout>", e);
    let mut args = args.clone();
    // A resumed run takes its shape from the checkpoint.
    let resumed = match args.resume.clone() {
        Some(path) => {
            let entries = nn::load(&path)?;
            let state = TrainState::from_entries(&entries, &path)?;
            state.apply_to(&mut args, &path)?;
            Some((entries, state))
        }
        None => None,
    };
    if let Some(t) = args.threads {
        set_num_threads(t);
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
    report.layer_table = no_grad(|| net.summary(&probe))?;
    for (name, shape) in &report.layer_table {
        let name = name.split('(').next().unwrap_or(name);
        writeln!(out, "{name:<10} output shape: {}", crate::book::torch_size(shape)).map_err(io)?;
    }

    if let Some(path) = &args.load {
        net.load_state_dict(&nn::load(path)?)?;
        writeln!(out, "loaded weights from {}", path.display()).map_err(io)?;
    }
    if args.eval_only {
        let (loss, acc) = evaluate(&net, &test, 1000)?;
        writeln!(out, "test loss {loss:.4}, test acc {acc:.4}").map_err(io)?;
        report.eval = Some((loss, acc));
        return Ok(report);
    }

    let mut opt: Box<dyn Optimizer> = match args.optimizer.as_str() {
        "adam" => Box::new(Adam::new(net.parameters(), args.lr)),
        _ => Box::new(Sgd::new(net.parameters(), args.lr)),
    };
    let mut start_epoch = 0;
    if let (Some((entries, state)), Some(path)) = (&resumed, &args.resume) {
        net.load_state_dict(entries)?;
        opt.load_state(&state.optimizer_state)?;
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
    let mut last_saved: Option<usize> = None;
    for epoch in start_epoch..args.epochs {
        let bar = progress_bar(args.progress, loader.len(), epoch + 1, args.epochs);
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen, mut batches) = (0.0, 0usize, 0usize, 0usize);
        for batch in loader.epoch(epoch as u64) {
            let (x, y) = batch?;
            let step = batches + 1;
            let stop = |what: String| {
                let kept = match (&args.save, last_saved.or((start_epoch > 0).then_some(start_epoch))) {
                    (Some(p), Some(e)) => format!("the last good checkpoint, after epoch {e}, is {}", p.display()),
                    _ => "no checkpoint was written".to_string(),
                };
                nn::Error::Diverged(format!("epoch {}, step {step}: {what}; training stopped, {kept}", epoch + 1))
            };
            let logits = net.forward(&x)?;
            let loss = ops::cross_entropy(&logits, &y)?;
            if args.detect_anomaly {
                autograd::check_finite_graph(&loss).map_err(|e| stop(e.to_string()))?;
            }
            let lv = loss.item()?;
            if !lv.is_finite() {
                return Err(stop(format!("the loss became {lv}")));
            }
            opt.zero_grad();
            loss.backward().map_err(|e| match e {
                e @ autograd::Error::Anomaly { .. } => stop(e.to_string()),
                e => e.into(),
            })?;
            correct += nn::correct(&logits, &y)?;
            // Free the step's graph first, so the optimiser updates the weights in place.
            drop((loss, logits));
            opt.step()?;
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
                optimizer_state: opt.state(),
            };
            let mut entries = net.state_dict();
            entries.extend(state.entries());
            nn::save(path, &entries)?;
            last_saved = Some(epoch + 1);
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

    /// Reads the entries back (an error names the file when they are missing or malformed).
    pub fn from_entries(entries: &[(String, Tensor)], path: &std::path::Path) -> nn::Result<TrainState> {
        let bad = |m: &str| nn::Error::format(path, 0, format!("not a resumable lenet checkpoint: {m}"));
        let get =
            |k: &str| entries.iter().find(|(n, _)| n == k).map(|(_, t)| t.to_vec::<f64>()).ok_or_else(|| bad(&format!("no '{k}' entry")));
        let epoch = get("_train.epoch")?;
        let c = get("_train.config")?;
        let h = get("_train.history")?;
        if epoch.len() != 1 || c.len() != 8 || h.len() % 3 != 0 || h.len() / 3 != epoch[0] as usize {
            return Err(bad("malformed _train entries"));
        }
        let limit = |v: f64| (v >= 0.0).then_some(v as usize);
        Ok(TrainState {
            epoch: epoch[0] as usize,
            seed: c[0] as u64,
            batch_size: c[1] as usize,
            train_limit: limit(c[2]),
            test_limit: limit(c[3]),
            pool: if c[4] == 1.0 { Pool::Max } else { Pool::Avg },
            act: if c[5] == 1.0 { Act::Relu } else { Act::Sigmoid },
            optimizer: if c[6] == 1.0 { "adam".into() } else { "sgd".into() },
            lr: c[7],
            history: h.chunks(3).map(|e| EpochStats { loss: e[0], train_acc: e[1], test_acc: e[2], examples_per_sec: f64::NAN }).collect(),
            optimizer_state: entries.iter().filter_map(|(k, t)| k.strip_prefix(OPT_PREFIX).map(|k| (k.to_string(), t.clone()))).collect(),
        })
    }

    /// Applies the saved run's settings to `args`; a flag given on the command line that
    /// contradicts them is an error.
    pub fn apply_to(&self, args: &mut LenetArgs, path: &std::path::Path) -> nn::Result<()> {
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
