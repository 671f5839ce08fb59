//! `examples/train` in CI's short mode: a split run resumed equals the straight run bitwise
//! for every optimiser and scheduler, the three SPEC models train, and the flags that
//! belong to one model or one schedule are refused elsewhere.

use convnet::train::{parse_args, run, TrainArgs};
use std::path::{Path, PathBuf};

fn parsed(flags: &[&str]) -> TrainArgs {
    let mut a = parse_args(std::iter::once(&"train").chain(flags)).unwrap();
    a.data_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
    a
}

fn checkpoint(path: &Path) -> Vec<(String, Vec<u64>)> {
    nn::load(path)
        .unwrap()
        .into_iter()
        .map(|(k, t)| {
            let bits = match t.dtype() {
                autograd::DType::I64 => t.to_vec::<i64>().into_iter().map(|v| v as u64).collect(),
                _ => t.to_vec::<f64>().into_iter().map(f64::to_bits).collect(),
            };
            (k, bits)
        })
        .collect()
}

#[test]
fn a_split_run_resumed_equals_the_straight_run_for_every_optimiser_and_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [&[&str]; 8] = [
        &["--optimizer", "sgd", "--momentum", "0.9", "--weight-decay", "1e-4", "--lr", "0.3"],
        &["--optimizer", "adam", "--scheduler", "step", "--step-size", "1", "--gamma", "0.5"],
        &["--optimizer", "adamw", "--scheduler", "multistep", "--milestones", "1,2"],
        &["--optimizer", "rmsprop", "--momentum", "0.5", "--scheduler", "cosine"],
        &["--optimizer", "sgd", "--scheduler", "onecycle", "--lr", "0.5", "--momentum", "0.9"],
        &["--optimizer", "adam", "--scheduler", "cosine", "--warmup-epochs", "1"],
        &["--optimizer", "sgd", "--clip-grad-norm", "0.5", "--scheduler", "step", "--step-size", "2"],
        // Random crops and flips: the generator's state is in the checkpoint.
        &["--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.1", "--augment"],
    ];
    let base = ["--train-limit", "768", "--test-limit", "50", "--batch-size", "128", "--act", "relu", "--pool", "max"];
    for (i, case) in cases.iter().enumerate() {
        let flags: Vec<&str> = base.iter().chain(case.iter()).copied().collect();
        let straight = dir.path().join(format!("straight{i}.npz"));
        let mut a = parsed(&[&flags[..], &["--epochs", "3"]].concat());
        a.save = Some(straight.clone());
        let full = run(&a, &mut Vec::new()).unwrap();

        // Interrupted after epoch 1 of the 3 planned (the schedule is planned over all 3).
        let split = dir.path().join(format!("split{i}.npz"));
        let mut first = parsed(&[&flags[..], &["--epochs", "3", "--stop-after", "1"]].concat());
        first.save = Some(split.clone());
        assert_eq!(run(&first, &mut Vec::new()).unwrap().epochs.len(), 1);
        let mut resumed = parsed(&["--epochs", "3"]);
        resumed.resume = Some(split.clone());
        resumed.save = Some(split.clone());
        let mut out = Vec::new();
        let r = run(&resumed, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(&format!("resuming {} after epoch 1", split.display())), "{case:?}: {text}");
        assert_eq!(r.epochs.len(), 3);
        assert_eq!(checkpoint(&split), checkpoint(&straight), "{case:?}");
        assert_eq!(r.epochs.last().unwrap().loss.to_bits(), full.epochs.last().unwrap().loss.to_bits(), "{case:?}");
    }
}

#[test]
fn bn_lenet_and_resnet18_learn_in_20_steps_and_round_trip_through_eval_only() {
    let dir = tempfile::tempdir().unwrap();
    for model in ["bn-lenet", "resnet18"] {
        let path = dir.path().join(format!("{model}.npz"));
        // 20 steps of batch 64 on real data.
        let mut a = parsed(&["--model", model, "--epochs", "1", "--batch-size", "64", "--train-limit", "1280", "--test-limit", "200"]);
        a.save = Some(path.clone());
        let mut out = Vec::new();
        let r = run(&a, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let losses = &r.first_epoch_losses;
        assert_eq!(losses.len(), 20);
        let (head, tail) = (losses[..3].iter().sum::<f64>() / 3.0, losses[17..].iter().sum::<f64>() / 3.0);
        assert!(tail <= 0.8 * head, "{model}: the loss went from {head:.3} to {tail:.3}");
        let last = r.epochs.last().unwrap();
        // Above chance (0.1). Eval-mode accuracy lags this early: the running statistics
        // have seen 20 batches at momentum 0.1.
        assert!(last.train_acc > 0.25 && last.test_acc > 0.1, "{model}: accuracy at chance: {last:?}");
        assert!(text.contains("loss ") && text.contains("examples/sec on cpu"), "{text}");
        // The top-level children, computed in eval mode.
        let first = r.layer_table.first().unwrap();
        assert_eq!(first.1[0], 1, "{model}: {:?}", r.layer_table);
        assert_eq!(r.layer_table.last().unwrap().1, vec![1, 10]);

        let e = parsed(&["--model", model, "--eval-only", "--test-limit", "200", "--load", path.to_str().unwrap()]);
        let mut out = Vec::new();
        let ev = run(&e, &mut out).unwrap();
        let (loss, acc) = ev.eval.unwrap();
        assert_eq!(acc.to_bits(), last.test_acc.to_bits(), "{model}");
        assert!(String::from_utf8(out).unwrap().contains(&format!("test loss {loss:.4}, test acc {acc:.4}")));
    }
}

#[test]
fn model_and_schedule_flags_are_checked() {
    let run_err = |flags: &[&str]| run(&parsed(flags), &mut Vec::new()).unwrap_err();
    let e = run_err(&["--model", "bn-lenet", "--pool", "max", "--train-limit", "10"]);
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("--pool applies to --model lenet only"), "{e}");
    let e = run_err(&["--scheduler", "multistep", "--train-limit", "10", "--test-limit", "10"]);
    assert!(e.to_string().contains("--milestones"), "{e}");
    let e = run_err(&["--scheduler", "onecycle", "--warmup-epochs", "1", "--train-limit", "10", "--test-limit", "10"]);
    assert!(e.to_string().contains("--warmup-epochs"), "{e}");
    assert!(parse_args(["train", "--milestones", "5,3"]).unwrap_err().to_string().contains("increasing"));
    assert!(parse_args(["train", "--model", "vgg"]).is_err());
    // The defaults SPEC's recipes use.
    let a = parsed(&[]);
    assert_eq!((a.model.as_str(), a.epochs, a.batch_size, a.optimizer.as_str(), a.scheduler.as_str()), ("lenet", 10, 256, "sgd", "none"));
}

#[test]
fn a_resumed_run_refuses_another_schedule_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cos.npz");
    let mut a = parsed(&["--scheduler", "cosine", "--epochs", "3", "--stop-after", "1", "--train-limit", "256", "--test-limit", "20"]);
    a.save = Some(path.clone());
    run(&a, &mut Vec::new()).unwrap();
    let mut r = parsed(&["--epochs", "5"]);
    r.resume = Some(path.clone());
    let e = run(&r, &mut Vec::new()).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().starts_with("--epochs 5 contradicts the run saved in"), "{e}");
    // Without --epochs the saved plan is kept.
    let mut r = parsed(&[]);
    r.resume = Some(path);
    assert_eq!(run(&r, &mut Vec::new()).unwrap().epochs.len(), 3);
}

/// Without the `distributed` feature, `--distributed` is a usage error saying how to build
/// it (with it, tests/distributed.rs runs it under mpirun).
#[cfg(not(feature = "distributed"))]
#[test]
fn distributed_needs_the_feature() {
    let e = run(&parsed(&["--distributed", "--train-limit", "10"]), &mut Vec::new()).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("--distributed needs a build with `--features distributed`"), "{e}");
}

#[test]
fn a_bn_lenet_trained_in_pytorch_evaluates_as_there() {
    // tests/fixtures/train/make_fixture.py: SPEC's keys, int64 num_batches_tracked.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train");
    let expected = std::fs::read_to_string(dir.join("bn_lenet_torch.expected")).unwrap();
    let v: Vec<f64> = expected.split_whitespace().map(|x| x.parse().unwrap()).collect();
    let weights = dir.join("bn_lenet_torch.npz");
    let a = parsed(&["--model", "bn-lenet", "--eval-only", "--test-limit", "1000", "--load", weights.to_str().unwrap()]);
    let mut out = Vec::new();
    let (loss, acc) = run(&a, &mut out).unwrap().eval.unwrap();
    // Both in f32, summed in other orders: the loss to rounding, the accuracy exactly.
    assert!((loss - v[0]).abs() < 1e-5, "loss {loss} vs PyTorch's {}", v[0]);
    assert_eq!((acc * 1000.0).round(), (v[1] * 1000.0).round());
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(&format!("test loss {:.4}, test acc {:.4}", v[0], v[1])), "{text}");
}
