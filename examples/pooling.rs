//! Book section 7.5: `cargo run --release --example pooling`.

use clap::Parser;
use convnet::book::pooling;

fn main() {
    pooling::Args::parse();
    match pooling::run() {
        Ok(o) => print!("{}", o.text),
        Err(e) => {
            eprintln!("pooling: {e}");
            std::process::exit(1);
        }
    }
}
