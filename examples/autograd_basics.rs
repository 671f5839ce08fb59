//! The core in five steps: `cargo run --release --example autograd_basics`.

fn main() {
    match convnet::basics::run() {
        Ok(b) => print!("{}", b.text),
        Err(e) => {
            eprintln!("autograd_basics: {e}");
            std::process::exit(1);
        }
    }
}
