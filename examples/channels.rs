//! Book section 7.4: `cargo run --release --example channels`.

fn main() {
    match convnet::book::channels::run(0) {
        Ok(o) => print!("{}", o.text),
        Err(e) => {
            eprintln!("channels: {e}");
            std::process::exit(1);
        }
    }
}
