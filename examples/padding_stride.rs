//! Book section 7.3: `cargo run --release --example padding_stride`.

use clap::Parser;
use convnet::book::padding_stride;

fn main() {
    padding_stride::Args::parse();
    match padding_stride::run(0) {
        Ok((text, _)) => print!("{text}"),
        Err(e) => {
            eprintln!("padding_stride: {e}");
            std::process::exit(1);
        }
    }
}
