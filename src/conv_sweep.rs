//! The convolution sweep behind `examples/conv_sweep.rs`: forward + backward of one
//! convolution per grid point, timed as `benches/conv_sweep.py` times PyTorch's (issue 23).

use crate::cli;
use autograd::{rng, set_num_threads, Tensor};
use clap::Parser;
use ops::{last_conv2d_algo, Conv2dAlgo, Conv2dArgs, Conv2dMap, TensorOps};
use std::io::{BufRead, Write};
use std::time::Instant;

/// Times forward + backward (input, weight and bias gradients) of `conv2d` over a grid of
/// shapes, printing one line per shape on stdout:
/// `N C=O H=W k stride ms forward/input-grad/weight-grad-algorithms`.
#[derive(Debug, Clone, Parser)]
#[command(name = "conv_sweep", version)]
pub struct SweepOptions {
    /// Threads for every pool [default: all cores]
    #[arg(long, value_name = "N", value_parser = cli::parse_threads)]
    pub threads: Option<usize>,
    /// Batch sizes
    #[arg(long, value_delimiter = ',', default_value = "8,64")]
    pub n: Vec<usize>,
    /// Channels (in = out)
    #[arg(long, value_delimiter = ',', default_value = "3,16,64,128,256")]
    pub c: Vec<usize>,
    /// Input height = width
    #[arg(long, value_delimiter = ',', default_value = "7,14,28")]
    pub hw: Vec<usize>,
    /// Kernel sizes (padding k / 2)
    #[arg(long, value_delimiter = ',', default_value = "1,3,5")]
    pub k: Vec<usize>,
    /// Strides
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub stride: Vec<usize>,
    /// Algorithm to ask for: auto, direct, unfold, gemm1x1, taps (falls back to auto where it does not apply)
    #[arg(long, default_value = "auto", value_parser = parse_algo)]
    pub algo: Conv2dAlgo,
    /// Seconds to spend on each shape at least (after a warm-up run); at least 3 runs
    #[arg(long, default_value_t = 0.3)]
    pub secs: f64,
    /// Time by the wall clock, or by the process's CPU time (all threads: at one thread
    /// the work done, whatever the machine's other tenants take; at more, a sum)
    #[arg(long, default_value = "wall", value_parser = ["wall", "cpu"])]
    pub clock: String,
    /// Read the shapes from stdin, one `N C H k stride` line each, answering each at once
    #[arg(long)]
    pub stdin: bool,
    /// Also time the forward, the input gradient and the weight gradient alone (to stderr)
    #[arg(long)]
    pub split: bool,
}

fn parse_algo(s: &str) -> Result<Conv2dAlgo, String> {
    Conv2dAlgo::from_name(s).ok_or_else(|| format!("expects auto, direct, unfold, gemm1x1 or taps, got '{s}'"))
}

/// Runs the sweep, writing one line per shape to `out`; returns `(shape, ms)` pairs. With
/// `--stdin`, the shapes come from `input` instead, one `N C H k stride` line each, and each
/// answer is flushed at once (how `benches/conv_sweep.py` interleaves ours and PyTorch's
/// shape by shape).
pub fn run(opts: &SweepOptions, input: impl BufRead, out: &mut impl Write) -> Vec<([usize; 5], f64)> {
    if let Some(t) = opts.threads {
        if let Err(e) = set_num_threads(t) {
            eprintln!("conv_sweep: {e}; using the default pool");
        }
    }
    let mut shapes = Vec::new();
    if !opts.stdin {
        for &n in &opts.n {
            for &c in &opts.c {
                for &hw in &opts.hw {
                    for &k in &opts.k {
                        for &s in &opts.stride {
                            shapes.push([n, c, hw, k, s]);
                        }
                    }
                }
            }
        }
    }
    let mut lines = input.lines();
    let mut next = || -> Option<[usize; 5]> {
        if !opts.stdin {
            return if shapes.is_empty() { None } else { Some(shapes.remove(0)) };
        }
        loop {
            let line = lines.next()?.ok()?;
            let v: Vec<usize> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            match v[..] {
                [n, c, hw, k, s] if n * c * hw * k * s > 0 && hw + 2 * (k / 2) >= k => return Some([n, c, hw, k, s]),
                _ => eprintln!("conv_sweep: expected 'N C H k stride' (positive, kernel within the padded input), got '{line}'"),
            }
        }
    };
    let mut results = Vec::new();
    while let Some(shape) = next() {
        let (ms, algos) = measure(opts, shape);
        let [n, c, hw, k, s] = shape;
        writeln!(out, "{n} {c} {hw} {k} {s} {ms:.3} {algos}").ok();
        out.flush().ok();
        results.push((shape, ms));
    }
    results
}

/// Seconds on the process's CPU clock (every thread's time).
fn cpu_secs() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Median time of runs of `f` after one warm-up run, in seconds, by `opts.clock`: at least
/// `min_reps` runs, more until they took `opts.secs` of wall time (at most 51).
fn median_secs_for(opts: &SweepOptions, min_reps: usize, mut f: impl FnMut()) -> f64 {
    let cpu = opts.clock == "cpu";
    let now = || if cpu { cpu_secs() } else { 0.0 };
    f();
    let start = Instant::now();
    let mut ts = Vec::new();
    while ts.len() < min_reps.max(1) || (start.elapsed().as_secs_f64() < opts.secs && ts.len() < 51) {
        let (t, c) = (Instant::now(), now());
        f();
        ts.push(if cpu { now() - c } else { t.elapsed().as_secs_f64() });
    }
    ts.sort_by(|a, b| a.total_cmp(b));
    ts[ts.len() / 2]
}

/// Median milliseconds of forward + backward of one shape, and the algorithms that ran.
fn measure(opts: &SweepOptions, [n, c, hw, k, s]: [usize; 5]) -> (f64, String) {
    let mut r = rng(0);
    let args = Conv2dArgs::new().padding(k / 2).stride(s).algo(opts.algo);
    let x = Tensor::uniform(&[n, c, hw, hw], -1.0, 1.0, &mut r).requires_grad_();
    let w = Tensor::uniform(&[c, c, k, k], -0.2, 0.2, &mut r).requires_grad_();
    let b = Tensor::uniform(&[c], -0.2, 0.2, &mut r).requires_grad_();
    let ohw = (hw + 2 * (k / 2) - k) / s + 1;
    let seed = Tensor::uniform(&[n, c, ohw, ohw], -1.0, 1.0, &mut r);
    let secs = median_secs_for(opts, 3, || {
        let y = x.conv2d(&w, Some(&b), args).expect("valid conv");
        y.backward_with(Some(&seed), Default::default()).expect("backward");
        [&x, &w, &b].iter().for_each(|t| t.zero_grad());
    });
    let algos =
        [Conv2dMap::Forward, Conv2dMap::InputGrad, Conv2dMap::WeightGrad].map(|m| last_conv2d_algo(m).map_or("-", |a| a.name())).join("/");
    if opts.split {
        let fwd = median_secs_for(opts, 3, || {
            std::hint::black_box(autograd::no_grad(|| x.conv2d(&w, Some(&b), args)).expect("valid conv"));
        });
        let dx = median_secs_for(opts, 3, || {
            std::hint::black_box(ops::conv2d_input_grad(&seed, &w, x.shape(), args).expect("valid conv"));
        });
        let dw = median_secs_for(opts, 3, || {
            std::hint::black_box(ops::conv2d_weight_grad(&x, &seed, w.shape(), args).expect("valid conv"));
        });
        eprintln!("{n} {c} {hw} {k} {s}: forward {:.3} ms, input grad {:.3} ms, weight grad {:.3} ms", fwd * 1e3, dx * 1e3, dw * 1e3);
    }
    (secs * 1e3, algos)
}
