//! Book section 7.2: `cargo run --release --example cross_correlation [-- --epochs N]`.

fn main() {
    let epochs = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => 10,
        [flag, n] if flag == "--epochs" => match n.parse() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("cross_correlation: --epochs needs a non-negative integer, got '{n}'");
                std::process::exit(2);
            }
        },
        other => {
            eprintln!("cross_correlation: unexpected arguments {other:?}; usage: cross_correlation [--epochs N]");
            std::process::exit(2);
        }
    };
    match convnet::book::cross_correlation::run(epochs, 0) {
        Ok(o) => print!("{}", o.text),
        Err(e) => {
            eprintln!("cross_correlation: {e}");
            std::process::exit(1);
        }
    }
}
