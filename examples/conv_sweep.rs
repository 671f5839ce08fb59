//! Convolution sweep (issue 23): `cargo run --release --example conv_sweep -- [--threads N]
//! [--n 8,64] [--c 3,16,64,128,256] [--hw 7,14,28] [--k 1,3,5] [--stride 1,2] [--algo auto]`.
//! One line per shape on stdout: `N C=O H=W k stride ms algorithms`. `benches/conv_sweep.py`
//! runs it side by side with PyTorch.

use clap::Parser;
use convnet::conv_sweep::{run, SweepOptions};

fn main() {
    run(&SweepOptions::parse(), std::io::stdin().lock(), &mut std::io::stdout());
}
