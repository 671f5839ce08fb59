//! The convolution sweep behind `examples/conv_sweep.rs`: forward + backward of one
//! convolution per grid point, timed as `benches/conv_sweep.py` times PyTorch's (issue 23).

use crate::bench::median_secs_for;
use crate::cli;
use autograd::{rng, set_num_threads, Tensor};
use clap::Parser;
use ops::{last_conv2d_algo, Conv2dAlgo, Conv2dArgs, Conv2dMap, TensorOps};
use std::io::Write;

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
    /// Algorithm to ask for: auto, direct, unfold, gemm1x1 (falls back to auto where it does not apply)
    #[arg(long, default_value = "auto", value_parser = parse_algo)]
    pub algo: Conv2dAlgo,
    /// Seconds to spend on each shape at least (after a warm-up run); at least 3 runs
    #[arg(long, default_value_t = 0.3)]
    pub secs: f64,
}

fn parse_algo(s: &str) -> Result<Conv2dAlgo, String> {
    Conv2dAlgo::from_name(s).ok_or_else(|| format!("expects auto, direct, unfold or gemm1x1, got '{s}'"))
}

/// Runs the sweep, writing one line per shape to `out`; returns `(shape, ms)` pairs.
pub fn run(opts: &SweepOptions, out: &mut impl Write) -> Vec<([usize; 5], f64)> {
    if let Some(t) = opts.threads {
        if let Err(e) = set_num_threads(t) {
            eprintln!("conv_sweep: {e}; using the default pool");
        }
    }
    let mut results = Vec::new();
    let mut r = rng(0);
    for &n in &opts.n {
        for &c in &opts.c {
            for &hw in &opts.hw {
                for &k in &opts.k {
                    for &s in &opts.stride {
                        let args = Conv2dArgs::new().padding(k / 2).stride(s).algo(opts.algo);
                        let x = Tensor::uniform(&[n, c, hw, hw], -1.0, 1.0, &mut r).requires_grad_();
                        let w = Tensor::uniform(&[c, c, k, k], -0.2, 0.2, &mut r).requires_grad_();
                        let b = Tensor::uniform(&[c], -0.2, 0.2, &mut r).requires_grad_();
                        let ohw = (hw + 2 * (k / 2) - k) / s + 1;
                        let seed = Tensor::uniform(&[n, c, ohw, ohw], -1.0, 1.0, &mut r);
                        let secs = median_secs_for(opts.secs, 3, || {
                            let y = x.conv2d(&w, Some(&b), args).expect("valid conv");
                            y.backward_with(Some(&seed), Default::default()).expect("backward");
                            [&x, &w, &b].iter().for_each(|t| t.zero_grad());
                        });
                        let algos = [Conv2dMap::Forward, Conv2dMap::InputGrad, Conv2dMap::WeightGrad]
                            .map(|m| last_conv2d_algo(m).map_or("-", |a| a.name()))
                            .join("/");
                        writeln!(out, "{n} {c} {hw} {k} {s} {:.3} {algos}", secs * 1e3).ok();
                        results.push(([n, c, hw, k, s], secs * 1e3));
                    }
                }
            }
        }
    }
    results
}
