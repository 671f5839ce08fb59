//! The main job in CI's short mode, and its command-line contract.

use convnet::lenet::{parse_args, run, Command, LenetArgs};
use nn::{Act, Pool};
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist")
}

fn args(flags: &[&str]) -> nn::Result<Command> {
    parse_args(&flags.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

fn parsed(flags: &[&str]) -> LenetArgs {
    match args(flags).unwrap() {
        Command::Run(a) => *a,
        Command::Help => panic!("unexpected help"),
    }
}

#[test]
fn short_training_run_learns() {
    let mut a = parsed(&[
        "--pool",
        "max",
        "--act",
        "relu",
        "--optimizer",
        "adam",
        "--epochs",
        "1",
        "--train-limit",
        "5000",
        "--test-limit",
        "1000",
    ]);
    a.data_dir = data_dir();
    let dir = tempfile::tempdir().unwrap();
    a.save = Some(dir.path().join("lenet.npz"));
    a.plot = Some(dir.path().join("lenet.svg"));
    let mut out = Vec::new();
    let r = run(&a, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();

    // The layer table of SPEC section 6.
    let shapes: Vec<Vec<usize>> = r.layer_table.iter().map(|(_, s)| s.clone()).collect();
    assert_eq!(
        shapes,
        vec![
            vec![1, 6, 28, 28],
            vec![1, 6, 28, 28],
            vec![1, 6, 14, 14],
            vec![1, 16, 10, 10],
            vec![1, 16, 10, 10],
            vec![1, 16, 5, 5],
            vec![1, 400],
            vec![1, 120],
            vec![1, 120],
            vec![1, 84],
            vec![1, 84],
            vec![1, 10]
        ]
    );
    assert!(text.starts_with("Conv2d     output shape: torch.Size([1, 6, 28, 28])\nReLU"), "{text}");

    // The loss falls and the model beats chance by far.
    let l = &r.first_epoch_losses;
    assert_eq!(l.len(), 20); // 5000 / 256, last partial batch kept
    let head: f64 = l[..3].iter().sum::<f64>() / 3.0;
    let tail: f64 = l[l.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(tail < head - 0.3, "loss did not fall: {l:?}");
    let e = &r.epochs[0];
    assert!(e.test_acc > 0.4, "test acc {}", e.test_acc);
    assert!(text.contains("epoch 1/1: loss "));
    assert!(text.contains(&format!("loss {:.3}, train acc {:.3}, test acc {:.3}\n", e.loss, e.train_acc, e.test_acc)));
    assert!(text.contains(" examples/sec on cpu ("));

    // The checkpoint it saved evaluates to the same test accuracy.
    let mut ev = parsed(&["--pool", "max", "--act", "relu", "--eval-only", "--load", "x.npz", "--test-limit", "1000"]);
    ev.data_dir = data_dir();
    ev.load = a.save.clone();
    let mut out = Vec::new();
    let r2 = run(&ev, &mut out).unwrap();
    let (loss, acc) = r2.eval.unwrap();
    assert!((acc - e.test_acc).abs() < 1e-12, "{acc} vs {}", e.test_acc);
    assert!(loss.is_finite() && loss > 0.0);
    assert!(String::from_utf8(out).unwrap().contains(&format!("test loss {loss:.4}, test acc {acc:.4}")));

    // The figure has one point per epoch for each of the three curves.
    let svg = std::fs::read_to_string(dir.path().join("lenet.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 3);
    assert!(svg.contains("test acc"));
}

#[test]
fn flags_parse_with_the_documented_defaults() {
    let a = parsed(&[]);
    assert_eq!((a.epochs, a.batch_size, a.lr, a.pool, a.act), (10, 256, 0.9, Pool::Avg, Act::Sigmoid));
    assert_eq!(a.data_dir, PathBuf::from("data/fashion-mnist"));
    assert_eq!(parsed(&["--optimizer", "adam"]).lr, 0.001);
    assert_eq!(parsed(&["--optimizer", "adam", "--lr", "0.01"]).lr, 0.01);
    assert_eq!(args(&["--help"]).unwrap(), Command::Help);
}

#[test]
fn bad_flags_are_clear_errors() {
    let cases: [(&[&str], &str); 9] = [
        (&["--epochs"], "lenet: --epochs needs a value (try --help)"),
        (&["--epochs", "ten"], "lenet: --epochs expects a number >= 0, got 'ten' (try --help)"),
        (&["--batch-size", "0"], "lenet: --batch-size expects a number >= 1, got '0' (try --help)"),
        (&["--optimizer", "rmsprop"], "lenet: --optimizer expects sgd or adam, got 'rmsprop' (try --help)"),
        (&["--lr", "-1"], "lenet: --lr expects a positive number, got '-1' (try --help)"),
        (&["--pool", "min"], "lenet: --pool expects avg or max, got 'min' (try --help)"),
        (&["--act", "gelu"], "lenet: --act expects sigmoid or relu, got 'gelu' (try --help)"),
        (&["--eval-only"], "lenet: --eval-only needs --load FILE.npz (try --help)"),
        (&["--frobnicate"], "lenet: unknown flag '--frobnicate' (try --help)"),
    ];
    for (flags, msg) in cases {
        assert_eq!(args(flags).unwrap_err().to_string(), msg);
    }
}

#[test]
fn missing_data_is_an_error_naming_the_file() {
    let mut a = parsed(&["--epochs", "1"]);
    a.data_dir = PathBuf::from("/nonexistent/fashion");
    let e = run(&a, &mut Vec::new()).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/fashion"), "{e}");
}
