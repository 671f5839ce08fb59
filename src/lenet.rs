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
    /// Show a progress bar (set when stdout is a terminal).
    pub progress: bool,
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
            progress: false,
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
            other => return Err(usage(format!("unknown flag '{other}'"))),
        }
    }
    a.lr = lr.unwrap_or(if a.optimizer == "adam" { 0.001 } else { 0.9 });
    if a.eval_only && a.load.is_none() {
        return Err(usage("--eval-only needs --load FILE.npz".into()));
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
    if let Some(t) = args.threads {
        set_num_threads(t);
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
        net.load_state_dict(&nn::load_npz(path)?)?;
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
    let loader = DataLoader::new(&train, args.batch_size, true, args.seed)?;
    let mut total_examples = 0usize;
    let mut total_secs = 0.0;
    for epoch in 0..args.epochs {
        let bar = progress_bar(args.progress, loader.len(), epoch + 1, args.epochs);
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen, mut batches) = (0.0, 0usize, 0usize, 0usize);
        for batch in loader.epoch(epoch as u64) {
            let (x, y) = batch?;
            let logits = net.forward(&x)?;
            let loss = ops::cross_entropy(&logits, &y)?;
            opt.zero_grad();
            loss.backward()?;
            opt.step()?;
            let lv = loss.item()?;
            if epoch == 0 {
                report.first_epoch_losses.push(lv);
            }
            loss_sum += lv;
            batches += 1;
            correct += nn::correct(&logits.detach(), &y)?;
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
            nn::save_npz(path, &net.state_dict())?;
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

/// Whether the progress bar should be drawn.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
