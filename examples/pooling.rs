//! Book section 7.5: `cargo run --release --example pooling`.

fn main() {
    match convnet::book::pooling::run() {
        Ok(o) => print!("{}", o.text),
        Err(e) => {
            eprintln!("pooling: {e}");
            std::process::exit(1);
        }
    }
}
