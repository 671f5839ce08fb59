//! Benchmarks: `cargo run --release --example bench -- [--threads N] [--only NAME]`.
//! Prints only measurement lines on stdout, `NAME VALUE UNIT`, each the median of 5
//! repetitions after a warm-up; diagnostics go to stderr.

use convnet::bench::{parse_args, run_all};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    run_all(&opts, &mut std::io::stdout());
}
