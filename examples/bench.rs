//! Benchmarks: `cargo run --release --example bench -- [--threads N] [--only NAME] [--reps N]`.
//! Prints only measurement lines on stdout, `NAME VALUE UNIT`, each the median of the
//! repetitions (5) after a warm-up; diagnostics go to stderr. `--help` lists the flags.

use clap::Parser;
use convnet::alloc_count::CountingAlloc;
use convnet::bench::{run_all, BenchOptions};

/// Counts live bytes for the memory lines (`chain50_*`, `resnet18_train_peak_mb`).
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() {
    run_all(&BenchOptions::parse(), &mut std::io::stdout());
}
