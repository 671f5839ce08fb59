//! The main job: `cargo run --release --example lenet [-- FLAGS]` trains the book's LeNet
//! on Fashion-MNIST and prints the book's summary. `--help` lists the flags.

use convnet::lenet::{parse_args, run, stdout_is_terminal, Command, USAGE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut a = match parse_args(&args) {
        Ok(Command::Run(a)) => *a,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    a.progress = stdout_is_terminal();
    if let Err(e) = run(&a, &mut std::io::stdout()) {
        eprintln!("lenet: {e}");
        std::process::exit(1);
    }
}
