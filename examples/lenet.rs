//! The main job: `cargo run --release --example lenet [-- FLAGS]` trains the book's LeNet
//! on Fashion-MNIST and prints the book's summary. `--help` lists the flags.

use convnet::lenet::{parse_args, run, stdout_is_terminal};

fn main() {
    let mut a = parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    a.progress = stdout_is_terminal();
    if let Err(e) = run(&a, &mut std::io::stdout()) {
        eprintln!("lenet: {e}");
        std::process::exit(e.exit_code());
    }
}
