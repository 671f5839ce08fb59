//! Book section 7.2: `cargo run --release --example cross_correlation [-- --epochs N]`.

use clap::Parser;
use convnet::book::cross_correlation;

fn main() {
    let args = cross_correlation::Args::parse();
    match cross_correlation::run(args.epochs, 0) {
        Ok(o) => print!("{}", o.text),
        Err(e) => {
            eprintln!("cross_correlation: {e}");
            std::process::exit(1);
        }
    }
}
