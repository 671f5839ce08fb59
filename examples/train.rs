//! `cargo run --release --example train -- --model lenet|bn-lenet|resnet18 [FLAGS]` trains
//! one of SPEC's models on Fashion-MNIST and prints the book's summary. `--help` lists the
//! flags.

use convnet::lenet::stdout_is_terminal;
use convnet::train::{parse_args, run};

fn main() {
    let mut a = parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    a.progress = stdout_is_terminal();
    if let Err(e) = run(&a, &mut std::io::stdout()) {
        eprintln!("train: {e}");
        std::process::exit(e.exit_code());
    }
}
