//! Issue 16, hostile flags and paths for `lenet`: output paths are checked before training,
//! saved settings are checked like flags, errors name the file and exit codes are as
//! documented. Everything happens in temp dirs.

use convnet::lenet::{parse_args, run, LenetArgs};
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist")
}

fn parsed(flags: &[&str]) -> LenetArgs {
    let mut a = parse_args(std::iter::once(&"lenet").chain(flags)).unwrap();
    a.data_dir = data_dir();
    a
}

const SMALL: [&str; 6] = ["--epochs", "1", "--train-limit", "256", "--test-limit", "50"];

/// The error of a run that must fail before training: no epoch line was printed.
fn fails_before_training(a: &LenetArgs) -> String {
    let mut out = Vec::new();
    let e = run(a, &mut out).unwrap_err().to_string();
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains("epoch 1/"), "trained before failing: {out}");
    e
}

#[test]
fn output_paths_are_checked_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/x.npz");
    let folder = dir.path().join("folder.npz");
    std::fs::create_dir(&folder).unwrap();
    let cases: [(&str, PathBuf, &str); 4] = [
        ("--save", missing.clone(), "No such file"),
        ("--save", dir.path().join("x.pt"), "unknown checkpoint extension '.pt'"),
        ("--save", folder, "is a folder, not a regular file"),
        ("--plot", dir.path().join("no/such/dir/x.svg"), "No such file"),
    ];
    for (flag, path, what) in cases {
        let mut a = parsed(&SMALL);
        match flag {
            "--save" => a.save = Some(path.clone()),
            _ => a.plot = Some(path.clone()),
        }
        let e = fails_before_training(&a);
        assert!(e.starts_with(&path.display().to_string()) && e.contains(what), "{flag}: {e}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing left behind");
}

#[test]
fn the_plot_is_written_atomically_and_its_temporary_file_removed_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("fig.svg");
    let stats = vec![convnet::lenet::EpochStats { loss: 1.0, train_acc: 0.5, test_acc: 0.5, examples_per_sec: 1.0 }];
    convnet::plot::write_training_svg(&svg, &stats).unwrap();
    convnet::plot::write_training_svg(&svg, &stats).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // A folder in the way: refused, nothing left behind.
    let folder = dir.path().join("folder.svg");
    std::fs::create_dir(&folder).unwrap();
    assert!(convnet::plot::write_training_svg(&folder, &stats).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn loading_a_fifo_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("w.npz");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for flag in ["--load", "--resume"] {
        let mut a = parsed(&SMALL);
        match flag {
            "--load" => a.load = Some(fifo.clone()),
            _ => a.resume = Some(fifo.clone()),
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(fails_before_training(&a)).unwrap());
        let e = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("blocked on the FIFO");
        assert!(e.contains("is a FIFO, not a regular file"), "{flag}: {e}");
    }
}

#[test]
fn threads_and_epochs_beyond_their_limits_are_usage_errors() {
    for flags in [["--threads", "1025"], ["--threads", "18446744073709551616"], ["--epochs", "1000001"]] {
        let e = parse_args(std::iter::once(&"lenet").chain(&flags)).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{flags:?}: {e}");
        assert!(e.to_string().contains(flags[0]), "{e}");
    }
}

/// Saves a 1-epoch Adam run at `path` and rewrites one `_train` entry with `edit`.
fn edited_checkpoint(path: &Path, name: &str, value: f64) {
    let mut a = parsed(&[&SMALL[..], &["--optimizer", "adam"]].concat());
    a.save = Some(path.to_path_buf());
    run(&a, &mut Vec::new()).unwrap();
    let mut entries = nn::load(path).unwrap();
    let e = entries.iter_mut().find(|(k, _)| k == name).unwrap();
    e.1 = autograd::Tensor::scalar_dtype(value, autograd::DType::F64);
    nn::save(path, &entries).unwrap();
}

#[test]
fn resume_checks_the_adam_step_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.npz");
    for bad in [18_446_744_073_709_551_615.0, 1e300, -1.0, 0.5, f64::NAN] {
        edited_checkpoint(&path, "_train.optimizer.state.0.weight.step", bad);
        let mut a = parsed(&["--epochs", "2"]);
        a.resume = Some(path.clone());
        let e = fails_before_training(&a);
        // A NaN step is caught first by the check that every saved optimiser value is finite.
        let named = e.contains("Adam: 'state.0.weight.step' must be a whole number") || (bad.is_nan() && e.contains("holds NaN"));
        assert!(e.starts_with(&path.display().to_string()) && named, "{bad}: {e}");
    }
    edited_checkpoint(&path, "_train.epoch", 2e6);
    let mut a = parsed(&["--epochs", "3"]);
    a.resume = Some(path.clone());
    let e = fails_before_training(&a);
    assert!(e.starts_with(&path.display().to_string()) && e.contains("saved epoch"), "{e}");
}

#[test]
fn resume_refuses_entries_that_are_not_the_run_before_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.safetensors");
    let mut a = parsed(&SMALL);
    a.save = Some(path.clone());
    run(&a, &mut Vec::new()).unwrap();
    let mut entries = nn::load(&path).unwrap();
    entries.push(("_train.optimizer.state.99.weight.momentum_buffer".into(), autograd::Tensor::zeros(&[3])));
    entries.push(("extra".into(), autograd::Tensor::zeros(&[3])));
    nn::save(&path, &entries).unwrap();
    let mut a = parsed(&["--epochs", "2"]);
    a.resume = Some(path.clone());
    let e = fails_before_training(&a);
    assert!(e.starts_with(&format!("{}: not a checkpoint of this run: unexpected entry", path.display())), "{e}");
    assert!(e.contains("'extra'") && e.contains("99.weight.momentum_buffer"), "{e}");
}

#[test]
fn load_errors_name_the_file_and_usage_errors_exit_2_with_one_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.npz");
    nn::save(&path, &[("fc.weight".to_string(), autograd::Tensor::zeros(&[2]))]).unwrap();
    let mut a = parsed(&SMALL);
    a.load = Some(path.clone());
    let e = run(&a, &mut Vec::new()).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{}: load_state_dict: missing key", path.display())), "{msg}");
    assert!(msg.ends_with("; and 1 more"), "at most 10 problems listed: {msg}");

    // A flag contradicting the saved run: a usage error (exit 2), and `main` prints
    // "lenet: {e}", so the message itself must not start with "lenet:".
    let ckpt = dir.path().join("run.npz");
    let mut a = parsed(&SMALL);
    a.save = Some(ckpt.clone());
    run(&a, &mut Vec::new()).unwrap();
    let mut a = parsed(&["--epochs", "2", "--batch-size", "128"]);
    a.resume = Some(ckpt);
    let e = run(&a, &mut Vec::new()).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().starts_with("--batch-size 128 contradicts"), "{e}");
}
