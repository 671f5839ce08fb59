//! The core in five steps: `cargo run --release --example autograd_basics`.

use clap::Parser;

fn main() {
    convnet::basics::Args::parse();
    match convnet::basics::run() {
        Ok(b) => print!("{}", b.text),
        Err(e) => {
            eprintln!("autograd_basics: {e}");
            std::process::exit(1);
        }
    }
}
