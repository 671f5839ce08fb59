//! The main job in CI's short mode, and its command-line contract.

use clap::error::ErrorKind;
use convnet::lenet::{parse_args, run, LenetArgs};
use nn::{Act, Pool};
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist")
}

fn args(flags: &[&str]) -> Result<LenetArgs, clap::Error> {
    parse_args(std::iter::once(&"lenet").chain(flags))
}

fn parsed(flags: &[&str]) -> LenetArgs {
    args(flags).unwrap()
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
    assert_eq!((a.optimizer.as_str(), a.seed, a.train_limit, a.test_limit, a.threads), ("sgd", 42, None, None, None));
    assert_eq!((&a.save, &a.load, &a.plot, &a.resume, a.eval_only, a.detect_anomaly), (&None, &None, &None, &None, false, false));
    assert_eq!(a.data_dir, PathBuf::from("data/fashion-mnist"));
    assert!(a.explicit.is_empty());
    assert_eq!(parsed(&["--optimizer", "adam"]).lr, 0.001);
    assert_eq!(parsed(&["--optimizer", "adam", "--lr", "0.01"]).lr, 0.01);
    assert_eq!(parsed(&["--lr", "0.5", "--optimizer", "adam"]).lr, 0.5);
    assert_eq!(parsed(&["--seed", "3", "--eval-only", "--load", "w.npz"]).explicit, ["--seed", "--load", "--eval-only"]);
    for help in ["--help", "-h"] {
        let e = args(&[help]).unwrap_err();
        assert_eq!((e.kind(), e.exit_code()), (ErrorKind::DisplayHelp, 0));
        let text = e.to_string();
        for flag in ["--epochs", "--batch-size", "--optimizer", "--lr", "--seed", "--data-dir", "--train-limit", "--test-limit"] {
            assert!(text.contains(flag), "{flag} missing from\n{text}");
        }
        for flag in ["--pool", "--act", "--threads", "--save", "--load", "--eval-only", "--plot", "--resume", "--detect-anomaly"] {
            assert!(text.contains(flag), "{flag} missing from\n{text}");
        }
        assert!(text.contains("0.9 for sgd, 0.001 for adam") && text.contains("[possible values: avg, max]"), "{text}");
    }
    let e = args(&["--version"]).unwrap_err();
    assert_eq!((e.kind(), e.exit_code()), (ErrorKind::DisplayVersion, 0));
}

#[test]
fn bad_flags_are_usage_errors_naming_the_flag() {
    // Each case: the flags, the kind of error, and what the message must name.
    let cases: [(&[&str], ErrorKind, &[&str]); 17] = [
        (&["--epochs"], ErrorKind::InvalidValue, &["--epochs"]),
        (&["--epochs", "ten"], ErrorKind::ValueValidation, &["--epochs", "'ten'"]),
        (&["--batch-size", "0"], ErrorKind::ValueValidation, &["--batch-size", ">= 1"]),
        (&["--optimizer", "rmsprop"], ErrorKind::InvalidValue, &["--optimizer", "'rmsprop'", "sgd, adam"]),
        (&["--lr", "-1"], ErrorKind::ValueValidation, &["--lr", "'-1'", "> 0"]),
        (&["--lr=-1"], ErrorKind::ValueValidation, &["--lr", "'-1'"]),
        (&["--lr", "0"], ErrorKind::ValueValidation, &["--lr", "> 0"]),
        (&["--lr", "inf"], ErrorKind::ValueValidation, &["--lr", "finite"]),
        (&["--lr", "NaN"], ErrorKind::ValueValidation, &["--lr", "finite"]),
        (&["--threads", "0"], ErrorKind::ValueValidation, &["--threads", "1 to 1024"]),
        (&["--threads", "5000"], ErrorKind::ValueValidation, &["--threads", "'5000'", "1 to 1024"]),
        (&["--train-limit", "0"], ErrorKind::ValueValidation, &["--train-limit", ">= 1"]),
        (&["--pool", "sum"], ErrorKind::InvalidValue, &["--pool", "'sum'", "avg, max"]),
        (&["--act", "gelu"], ErrorKind::InvalidValue, &["--act", "'gelu'", "sigmoid, relu"]),
        (&["--eval-only"], ErrorKind::MissingRequiredArgument, &["--load"]),
        (&["--resume", "a.npz", "--eval-only", "--load", "b.npz"], ErrorKind::ArgumentConflict, &["--resume", "cannot be used with"]),
        (&["--frobnicate"], ErrorKind::UnknownArgument, &["--frobnicate"]),
    ];
    for (flags, kind, named) in cases {
        let e = args(flags).unwrap_err();
        let msg = e.to_string();
        assert_eq!((e.kind(), e.exit_code()), (kind, 2), "{flags:?}: {msg}");
        for n in named {
            assert!(msg.contains(n), "{flags:?}: '{n}' missing from {msg}");
        }
    }
}

#[test]
fn missing_data_is_an_error_naming_the_file() {
    let mut a = parsed(&["--epochs", "1"]);
    a.data_dir = PathBuf::from("/nonexistent/fashion");
    let e = run(&a, &mut Vec::new()).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/fashion"), "{e}");
}
