//! Book section 7.4: `cargo run --release --example channels`.

use clap::Parser;
use convnet::book::channels;

fn main() {
    channels::Args::parse();
    match channels::run(0) {
        Ok(o) => print!("{}", o.text),
        Err(e) => {
            eprintln!("channels: {e}");
            std::process::exit(1);
        }
    }
}
