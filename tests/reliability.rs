//! Issue "Reliability": determinism across thread counts, resuming, numerical faults.

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

fn with_save(mut a: LenetArgs, path: &Path) -> LenetArgs {
    a.save = Some(path.to_path_buf());
    a.explicit.push("--save".into());
    a
}

#[test]
fn same_seed_gives_byte_identical_checkpoints_at_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    // 200 steps of 32 samples, momentum-free SGD on the book's network.
    let flags = ["--epochs", "1", "--batch-size", "32", "--train-limit", "6400", "--test-limit", "200", "--seed", "5"];
    let mut files = Vec::new();
    for threads in ["1", "2", "1"] {
        let path = dir.path().join(format!("t{threads}-{}.npz", files.len()));
        let mut f = flags.to_vec();
        f.extend(["--threads", threads]);
        run(&with_save(parsed(&f), &path), &mut Vec::new()).unwrap();
        files.push(std::fs::read(&path).unwrap());
    }
    assert!(files[0] == files[1], "1 and 2 threads differ");
    assert!(files[0] == files[2], "two runs at 1 thread differ");
}

#[test]
fn resuming_gives_the_same_parameters_as_training_straight_through() {
    let dir = tempfile::tempdir().unwrap();
    let common =
        ["--train-limit", "1024", "--test-limit", "100", "--batch-size", "64", "--optimizer", "adam", "--pool", "max", "--act", "relu"];
    let straight = dir.path().join("straight.npz");
    let mut f = common.to_vec();
    f.extend(["--epochs", "4"]);
    let full = run(&with_save(parsed(&f), &straight), &mut Vec::new()).unwrap();

    // The split run is saved as .safetensors: --save and --resume pick the format by extension.
    let split = dir.path().join("split.safetensors");
    let mut f = common.to_vec();
    f.extend(["--epochs", "2"]);
    run(&with_save(parsed(&f), &split), &mut Vec::new()).unwrap();
    // Resume with only --epochs: the rest comes from the checkpoint.
    let mut r = with_save(parsed(&["--epochs", "4", "--resume", "x"]), &split);
    r.resume = Some(split.clone());
    let mut out = Vec::new();
    let resumed = run(&r, &mut out).unwrap();
    assert!(String::from_utf8(out).unwrap().contains("after epoch 2"));

    let a = nn::load_npz(&straight).unwrap();
    let b = nn::load(&split).unwrap();
    // By name: safetensors keeps its own order (by dtype, then name).
    let params = |v: &[(String, autograd::Tensor)]| {
        let mut p: Vec<_> = v.iter().filter(|(k, _)| !k.starts_with("_train.")).map(|(k, t)| (k.clone(), t.to_vec::<f32>())).collect();
        p.sort_by(|x, y| x.0.cmp(&y.0));
        p
    };
    assert_eq!(params(&a).len(), 10);
    assert_eq!(params(&a), params(&b));
    assert_eq!(full.epochs.len(), 4);
    assert_eq!(resumed.epochs.len(), 4);
    assert_eq!(full.epochs[3].test_acc, resumed.epochs[3].test_acc);
    assert_eq!(full.epochs[3].loss, resumed.epochs[3].loss);
    // The file still loads as plain weights.
    let net = nn::lenet(nn::Pool::Max, nn::Act::Relu, &mut autograd::rng(0)).unwrap();
    nn::Module::load_state_dict(&net, &b).unwrap();
}

#[test]
fn resume_rejects_contradicting_flags_and_reports_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.npz");
    run(&with_save(parsed(&["--epochs", "1", "--train-limit", "256", "--test-limit", "50", "--seed", "3"]), &path), &mut Vec::new())
        .unwrap();
    let resume = |flags: &[&str]| {
        let mut a = parsed(flags);
        a.resume = Some(path.clone());
        run(&a, &mut Vec::new())
    };
    let e = resume(&["--epochs", "2", "--batch-size", "128"]).unwrap_err().to_string();
    assert!(e.contains("--batch-size 128 contradicts the run saved in") && e.ends_with("(--batch-size 256) (try --help)"), "{e}");
    let e = resume(&["--epochs", "2", "--pool", "max"]).unwrap_err().to_string();
    assert!(e.contains("--pool max contradicts"), "{e}");
    // Repeating the original flags is fine.
    resume(&["--epochs", "1", "--seed", "3", "--train-limit", "256"]).unwrap();
    let mut a = parsed(&["--epochs", "1"]);
    a.resume = Some(path.clone());
    let mut out = Vec::new();
    run(&a, &mut out).unwrap();
    assert!(String::from_utf8(out).unwrap().contains("nothing to do:"));
    let e = parse_args(["lenet", "--resume", "a.npz", "--load", "b.npz"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let e = e.to_string();
    assert!(e.contains("'--resume <FILE.npz>' cannot be used with '--load <FILE.npz>'"), "{e}");
}

#[test]
fn resume_checks_every_saved_setting_like_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.npz");
    run(&with_save(parsed(&["--epochs", "1", "--train-limit", "64", "--test-limit", "10", "--batch-size", "32"]), &path), &mut Vec::new())
        .unwrap();
    let good = nn::load_npz(&path).unwrap();
    let saved = nn::train::read_settings(&path).unwrap();
    let num = |k: &str| saved.get_number(k).unwrap();
    assert_eq!((num("seed"), num("batch_size"), num("train_limit"), num("test_limit"), num("lr")), (42.0, 32.0, 64.0, 10.0, 0.9));
    assert_eq!(
        (saved.get_text("pool").unwrap(), saved.get_text("act").unwrap(), saved.get_text("optimizer").unwrap()),
        ("avg", "sigmoid", "sgd")
    );
    let number = |x: f64| autograd::Tensor::scalar_dtype(x, autograd::DType::F64);
    let text = |s: &str| {
        let b: Vec<i64> = s.bytes().map(i64::from).collect();
        let n = b.len();
        autograd::Tensor::from_vec(b, &[n]).unwrap()
    };
    let cases: Vec<(&str, autograd::Tensor, &str)> = vec![
        ("seed", number(-1.0), "saved seed expects a non-negative whole number, got -1"),
        ("seed", number(1e19), "saved seed expects a whole number from 0 to 9007199254740992, got 10000000000000000000"),
        ("seed", number(2.5), "saved seed expects a non-negative whole number, got 2.5"),
        ("batch_size", number(0.0), "saved batch size expects a whole number >= 1, got 0"),
        ("batch_size", number(1e30), "saved batch size is too large: 1000000000000000000000000000000"),
        ("batch_size", number(f64::NAN), "saved batch size expects a non-negative whole number, got NaN"),
        ("train_limit", number(0.0), "saved train limit expects a whole number >= 1, got 0"),
        ("train_limit", number(-2.0), "saved train limit expects a non-negative whole number, got -2"),
        ("test_limit", number(0.5), "saved test limit expects a non-negative whole number, got 0.5"),
        ("pool", text("median"), "saved pool expects one of avg, max, got 'median'"),
        ("act", number(1.0), "setting 'act' is a number, expected a text"),
        ("optimizer", text("lbfgs"), "saved optimizer expects one of sgd, adam, adamw, rmsprop, got 'lbfgs'"),
        ("lr", number(0.0), "saved learning rate expects a finite number > 0, got 0"),
        ("lr", number(f64::INFINITY), "saved learning rate expects a finite number > 0, got inf"),
        ("lr", number(f64::NAN), "saved learning rate expects a finite number > 0, got NaN"),
        ("momentum", number(-0.5), "saved momentum expects a finite number >= 0, got -0.5"),
        ("gamma", number(2.0), "saved gamma expects a number in (0, 1], got 2"),
        ("scheduler", text("cyclic"), "saved scheduler expects one of none, step, multistep, cosine, onecycle, got 'cyclic'"),
        ("milestones", text("5,3"), "saved milestones expects increasing epochs, got 5,3"),
    ];
    let bad = dir.path().join("bad.npz");
    for (key, value, msg) in cases {
        let mut entries = good.clone();
        entries.iter_mut().find(|(k, _)| k == &format!("_train.setting.{key}")).unwrap().1 = value;
        nn::save_npz(&bad, &entries).unwrap();
        let mut a = parsed(&["--epochs", "2"]);
        a.resume = Some(bad.clone());
        let e = run(&a, &mut Vec::new()).unwrap_err().to_string();
        assert_eq!(e, format!("{}: at byte 0: not a resumable checkpoint: {msg}", bad.display()), "{key}");
    }
    let mut entries = good.clone();
    entries.iter_mut().find(|(k, _)| k == "_train.epoch").unwrap().1 = number(0.5);
    nn::save_npz(&bad, &entries).unwrap();
    let mut a = parsed(&["--epochs", "2"]);
    a.resume = Some(bad.clone());
    let e = run(&a, &mut Vec::new()).unwrap_err().to_string();
    assert!(e.starts_with(&bad.display().to_string()) && e.contains("saved epoch expects a non-negative whole number, got 0.5"), "{e}");
}

#[test]
fn a_diverging_run_stops_with_a_clear_message_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.npz");
    let flags = [
        "--train-limit",
        "512",
        "--test-limit",
        "50",
        "--act",
        "relu",
        "--pool",
        "max",
        "--batch-size",
        "64",
        "--epochs",
        "5",
        "--lr",
        "1e12",
    ];
    let e = run(&with_save(parsed(&flags), &path), &mut Vec::new()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, convnet::cli::RunError::Failed(nn::Error::Diverged(_))), "{msg}");
    assert!(msg.contains("the loss became") && msg.contains("training stopped"), "{msg}");
    // "epoch E, step S: ...": the file holds epoch E - 1, the last one that finished.
    let epoch: usize = msg.strip_prefix("epoch ").unwrap().split(',').next().unwrap().parse().unwrap();
    if epoch == 1 {
        assert!(msg.ends_with("no checkpoint was written"), "{msg}");
        assert!(!path.exists());
    } else {
        assert!(msg.ends_with(&format!("after epoch {}, is {}", epoch - 1, path.display())), "{msg}");
        let saved = nn::load_npz(&path).unwrap();
        let e = saved.iter().find(|(k, _)| k == "_train.epoch").unwrap().1.item().unwrap();
        assert_eq!(e as usize, epoch - 1);
    }
}

#[test]
fn anomaly_mode_names_the_op_and_the_step() {
    let flags = [
        "--epochs",
        "5",
        "--train-limit",
        "512",
        "--batch-size",
        "64",
        "--test-limit",
        "50",
        "--act",
        "relu",
        "--pool",
        "max",
        "--lr",
        "1e12",
    ];
    let mut a = parsed(&flags);
    a.detect_anomaly = true;
    let e = run(&a, &mut Vec::new()).unwrap_err().to_string();
    assert!(!autograd::is_anomaly_enabled(), "run() restores the mode");
    assert!(e.starts_with("epoch ") && e.contains(", step "), "{e}");
    assert!(e.contains("anomaly: ") && e.contains(" on the tape): its "), "{e}");
}

#[test]
fn anomaly_mode_in_the_core() {
    use autograd::{Error, Tensor};
    autograd::set_detect_anomaly(true);
    let x = Tensor::from_vec(vec![1.0f64, 0.0], &[2]).unwrap().requires_grad_();
    // log(0) = -inf in the forward.
    let e = x.log().sum().backward().unwrap_err();
    assert!(matches!(e, Error::Anomaly { op: "log", position: 0, .. }), "{e}");
    // sqrt'(0) = inf in the backward.
    let e = x.sqrt().sum().backward().unwrap_err();
    autograd::set_detect_anomaly(false);
    match e {
        Error::Anomaly { op, what, .. } => {
            assert_eq!(op, "sqrt");
            assert!(what.contains("backward"), "{what}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn checkpoint_paths_need_a_known_extension() {
    let mut a = parsed(&["--eval-only", "--load", "weights.pt", "--test-limit", "10"]);
    a.load = Some(PathBuf::from("weights.pt"));
    let e = run(&a, &mut Vec::new()).unwrap_err().to_string();
    assert!(e.contains("weights.pt") && e.contains("unknown checkpoint extension '.pt': use .npz or .safetensors"), "{e}");
}
