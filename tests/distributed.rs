//! Data-parallel training over MPI (`--features distributed`), on loopback.
//!
//! Each test launches `mpirun -n 2` on this test binary itself, running one `child_*`
//! test per rank (`--exact NAME --ignored`: MPI initialises once per process, so one MPI
//! test per child), and checks what the job wrote. The children are `#[ignore]`d so the
//! ordinary run skips them, and refuse to run outside `mpirun` (`CONVNET_MPI_CHILD`).
//!
//! - LeNet in f64, global batch 256, 100 steps: a 2-rank run's weights are within 1e-8
//!   (relative, in norm) of one process's, and two 2-rank runs are bitwise identical;
//! - a 2-rank run with dropout split by a checkpoint and resumed equals the straight run
//!   bitwise, the ranks draw different masks, and one process refuses its checkpoint;
//! - `examples/train --distributed` (LeNet, ResNet-18): rank 0 alone prints, a split run
//!   resumes bitwise, a usage error ends every rank;
//! - a rank that returns an error, panics or is killed mid-epoch ends the job, naming it.
//!
//! A missing `mpirun` fails these tests (never skips them): README, "Distributed".

use autograd::{rng, DType, Tensor};
use convnet::train::{parse_args, run};
use nn::distributed::{DistributedDataParallel, World};
use nn::train::{Callback, Step, TrainConfig, Trainer};
use nn::{FashionMnist, ImageDataset, Module, Sequential, Sgd, Visitor};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

// ----- the parent side: launching a 2-rank job of one child test ---------------------------

/// Runs `child` (a test of this binary) on `ranks` processes under `mpirun`, on loopback,
/// with `env` added; `MPIEXEC_TIMEOUT` ends a hung job.
fn mpirun_command(ranks: usize, child: &str, env: &[(&str, &str)]) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new("mpirun");
    cmd.args(["-n", &ranks.to_string(), "--oversubscribe", "--bind-to", "none"])
        .args(["--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"])
        .arg(exe)
        .args(["--exact", child, "--ignored", "--nocapture", "--test-threads", "1"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("MPIEXEC_TIMEOUT", "300")
        .env("CONVNET_MPI_CHILD", "1")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn mpirun(ranks: usize, child: &str, env: &[(&str, &str)]) -> Output {
    mpirun_command(ranks, child, env)
        .output()
        .unwrap_or_else(|e| panic!("cannot start mpirun ({e}): apt-get install openmpi-bin libopenmpi-dev (README, \"Distributed\")"))
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The job's output, after checking that it succeeded.
fn succeeded(o: Output) -> String {
    let (out, err) = text(&o);
    assert!(o.status.success(), "the MPI job failed ({}):\n--- stdout\n{out}\n--- stderr\n{err}", o.status);
    out
}

fn out_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn env_path(key: &str) -> PathBuf {
    PathBuf::from(std::env::var(key).unwrap_or_else(|_| panic!("{key} is set by the parent test")))
}

/// Inside `mpirun`, launched by a parent test: false in an ordinary test run, where the
/// `child_*` tests are skipped (`#[ignore]`) unless asked for.
fn is_child() -> bool {
    std::env::var_os("CONVNET_MPI_CHILD").is_some()
}

fn bits(entries: &[(String, Tensor)]) -> Vec<(String, Vec<u64>)> {
    entries
        .iter()
        .map(|(k, t)| {
            let b = match t.dtype() {
                DType::I64 => t.to_vec::<i64>().into_iter().map(|v| v as u64).collect(),
                _ => t.to_vec::<f64>().into_iter().map(f64::to_bits).collect(),
            };
            (k.clone(), b)
        })
        .collect()
}

// ----- models and data -----------------------------------------------------------------------

fn data(train: usize, test: usize) -> (ImageDataset, ImageDataset) {
    let (tr, te) = FashionMnist::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist")).unwrap();
    (tr.limit(train), te.limit(test))
}

/// A model in f64 fed the data loader's f32 images: converts them first (the f64 check's
/// only test-only piece).
struct F64Input(Sequential);

impl Module for F64Input {
    fn forward(&self, x: &Tensor) -> nn::Result<Tensor> {
        self.0.forward(&x.to_dtype(DType::F64))
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        self.0.visit(v)
    }
}

/// The book's LeNet in f64 for 100 steps of global batch 256: 2505 images make ten batches
/// an epoch, the last of 201 (split 100/101 over two ranks, so the shares are weighted),
/// for ten epochs. Returns the final state dict.
fn lenet_f64(world: Option<&World>) -> Vec<(String, Tensor)> {
    let (train, test) = data(2505, 200);
    let mut r = rng(0);
    let net = nn::lenet(nn::Pool::Avg, nn::Act::Sigmoid, &mut r).unwrap();
    nn::xavier_init(&net, &mut r).unwrap();
    net.to_dtype(DType::F64).unwrap();
    let model = F64Input(net);
    let mut config = TrainConfig::new(10, 256, 42);
    config.shard = world.map(|w| w.shard());
    let mut trainer = Trainer::new(&model, Box::new(Sgd::new(model.named_parameters(), 0.9).unwrap()), config);
    let steps = std::rc::Rc::new(std::cell::Cell::new(0));
    if let Some(w) = world {
        trainer.add_callback(DistributedDataParallel::new(w, &model).unwrap());
    }
    trainer.add_callback(CountSteps(steps.clone()));
    trainer.fit(&train, &test).unwrap();
    drop(trainer);
    assert_eq!(steps.get(), 100);
    model.state_dict()
}

/// A two-layer net in f64 on 641 images in batches of 64 for two epochs: each epoch's last
/// batch holds one image, so rank 0's part of it is empty (no forward, no gradient).
fn mlp_f64(world: Option<&World>) -> Vec<(String, Tensor)> {
    let (train, test) = data(641, 100);
    let mut r = rng(5);
    let net = Sequential::new()
        .append(nn::Flatten::new(1, -1))
        .append(nn::Linear::new(784, 16, &mut r).unwrap())
        .append(nn::ReLU)
        .append(nn::Linear::new(16, 10, &mut r).unwrap());
    net.to_dtype(DType::F64).unwrap();
    let model = F64Input(net);
    let mut config = TrainConfig::new(2, 64, 9);
    config.shard = world.map(|w| w.shard());
    let mut trainer = Trainer::new(&model, Box::new(Sgd::new(model.named_parameters(), 0.5).unwrap()), config);
    if let Some(w) = world {
        trainer.add_callback(DistributedDataParallel::new(w, &model).unwrap());
    }
    trainer.fit(&train, &test).unwrap();
    drop(trainer);
    model.state_dict()
}

/// `||a - b|| / ||b||` over every entry.
fn relative_difference(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for ((k, x), (k1, y)) in a.iter().zip(b) {
        assert_eq!(k, k1);
        for (x, y) in x.to_vec::<f64>().into_iter().zip(y.to_vec::<f64>()) {
            diff += (x - y) * (x - y);
            norm += y * y;
        }
    }
    (diff / norm).sqrt()
}

struct CountSteps(std::rc::Rc<std::cell::Cell<usize>>);
impl Callback for CountSteps {
    fn on_batch_end(&mut self, _s: &Step, _r: &nn::train::Running) -> nn::Result<()> {
        self.0.set(self.0.get() + 1);
        Ok(())
    }
}

/// A small net with dropout: the ranks' masks come from their own generators.
fn dropout_mlp() -> Sequential {
    let mut r = rng(3);
    Sequential::new()
        .append(nn::Flatten::new(1, -1))
        .append(nn::Linear::new(784, 32, &mut r).unwrap())
        .append(nn::ReLU)
        .append(nn::Dropout::new(0.5).unwrap())
        .append(nn::Linear::new(32, 10, &mut r).unwrap())
}

/// Trains [`dropout_mlp`] on 600 images (batches of 64, the last of 24) for three epochs,
/// stopping after `stop`, saving to `save` (rank 0) and resuming `resume`; `hook` is added
/// after the all-reduce. Returns the final state dict.
fn dropout_run(
    world: &World,
    stop: usize,
    save: Option<&Path>,
    resume: Option<&Path>,
    hook: Option<FailAt>,
) -> nn::Result<Vec<(String, Tensor)>> {
    let (train, test) = data(600, 100);
    let net = dropout_mlp();
    let mut config = TrainConfig::new(3, 64, 7);
    config.shard = Some(world.shard());
    config.save = save.filter(|_| world.rank() == 0).map(Path::to_path_buf);
    let mut trainer = Trainer::new(&net, Box::new(Sgd::new(net.named_parameters(), 0.1)?), config);
    if let Some(path) = resume {
        trainer.resume(path)?;
    }
    trainer.add_callback(DistributedDataParallel::new(world, &net)?);
    if let Some(h) = hook {
        trainer.add_callback(h);
    }
    trainer.fit_until(&train, &test, stop)?;
    drop(trainer);
    Ok(net.state_dict())
}

/// FNV-1a of a state dict's bits: what the ranks compare to show they hold the same model.
fn hash(entries: &[(String, Tensor)]) -> u64 {
    bits(entries).iter().flat_map(|(_, b)| b.iter()).fold(0xcbf2_9ce4_8422_2325u64, |h, &w| (h ^ w).wrapping_mul(0x0100_0000_01b3))
}

// ----- the checks --------------------------------------------------------------------------

#[test]
fn lenet_f64_two_ranks_match_one_process_and_are_bitwise_reproducible() {
    let dir = out_dir();
    let runs: Vec<Vec<(String, Tensor)>> = ["a", "b"]
        .iter()
        .map(|name| {
            let path = dir.path().join(format!("{name}.npz"));
            succeeded(mpirun(2, "child_lenet_f64", &[("CONVNET_OUT", path.to_str().unwrap())]));
            nn::load(&path).unwrap()
        })
        .collect();
    assert_eq!(bits(&runs[0]), bits(&runs[1]), "two 2-rank runs differ");
    let rel = relative_difference(&runs[0], &lenet_f64(None));
    eprintln!("2 ranks vs 1 process after 100 steps: relative difference {rel:e}");
    assert!(rel <= 1e-8, "relative difference {rel:e}");
    assert!(bits(&runs[0]) != bits(&lenet_f64_untrained()), "the weights did not move");
}

fn lenet_f64_untrained() -> Vec<(String, Tensor)> {
    let mut r = rng(0);
    let net = nn::lenet(nn::Pool::Avg, nn::Act::Sigmoid, &mut r).unwrap();
    nn::xavier_init(&net, &mut r).unwrap();
    net.to_dtype(DType::F64).unwrap();
    net.state_dict()
}

#[test]
#[ignore = "one rank of lenet_f64_two_ranks_match_one_process_and_are_bitwise_reproducible, under mpirun"]
fn child_lenet_f64() {
    assert!(is_child(), "run by its parent test under mpirun");
    let world = World::init().unwrap();
    let state = lenet_f64(Some(&world));
    world.check_same("trained weights", hash(&state)).unwrap();
    if world.rank() == 0 {
        nn::save(&env_path("CONVNET_OUT"), &state).unwrap();
    }
}

#[test]
fn a_rank_with_an_empty_part_of_the_last_batch_still_matches_one_process() {
    let dir = out_dir();
    let path = dir.path().join("mlp.npz");
    succeeded(mpirun(2, "child_mlp_f64", &[("CONVNET_OUT", path.to_str().unwrap())]));
    let rel = relative_difference(&nn::load(&path).unwrap(), &mlp_f64(None));
    assert!(rel <= 1e-8, "relative difference {rel:e}");
}

#[test]
#[ignore = "one rank of a_rank_with_an_empty_part_of_the_last_batch_still_matches_one_process, under mpirun"]
fn child_mlp_f64() {
    assert!(is_child(), "run by its parent test under mpirun");
    let world = World::init().unwrap();
    let state = mlp_f64(Some(&world));
    world.check_same("trained weights", hash(&state)).unwrap();
    if world.rank() == 0 {
        nn::save(&env_path("CONVNET_OUT"), &state).unwrap();
    }
}

/// The all-reduce on three ranks (where Open MPI's own changes its order) is the
/// rank-order sum, bitwise, on every rank, for lengths below, at and above the world size.
#[test]
fn the_all_reduce_adds_in_rank_order_on_three_ranks() {
    succeeded(mpirun(3, "child_reduce", &[]));
}

#[test]
#[ignore = "the ranks of the_all_reduce_adds_in_rank_order_on_three_ranks, under mpirun"]
fn child_reduce() {
    assert!(is_child(), "run by its parent test under mpirun");
    let world = World::init().unwrap();
    // Rank r's element i: magnitudes far apart, so a different order gives other bits.
    let value = |r: usize, i: usize| {
        ((i * 7 + r * 13) % 17) as f64 * [1e-3, 1.0, 1e8][r % 3] * if (i + r).is_multiple_of(2) { 1.0 } else { -1.0 } + 0.1
    };
    for n in [0usize, 1, 2, 3, 5, 1000, 100_003] {
        let mut x64: Vec<f64> = (0..n).map(|i| value(world.rank(), i)).collect();
        let mut x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
        world.all_reduce_sum(&mut x64[..]).unwrap();
        world.all_reduce_sum(&mut x32[..]).unwrap();
        for i in 0..n {
            let e64 = (1..world.size()).fold(value(0, i), |acc, r| acc + value(r, i));
            let e32 = (1..world.size()).fold(value(0, i) as f32, |acc, r| acc + value(r, i) as f32);
            assert_eq!(x64[i].to_bits(), e64.to_bits(), "f64, n {n}, element {i}, rank {}", world.rank());
            assert_eq!(x32[i].to_bits(), e32.to_bits(), "f32, n {n}, element {i}, rank {}", world.rank());
        }
    }
}

#[test]
fn a_two_rank_run_with_dropout_resumes_bitwise_and_needs_two_ranks() {
    let dir = out_dir();
    succeeded(mpirun(2, "child_resume", &[("CONVNET_OUT", dir.path().to_str().unwrap())]));
    // One process refuses the 2-rank checkpoint.
    let net = dropout_mlp();
    let mut trainer = Trainer::new(&net, Box::new(Sgd::new(net.named_parameters(), 0.1).unwrap()), TrainConfig::new(3, 64, 7));
    let err = trainer.resume(&dir.path().join("split.npz")).unwrap_err().to_string();
    assert!(err.contains("saved by a run of 2 processes, this run has 1"), "{err}");
}

#[test]
#[ignore = "one rank of a_two_rank_run_with_dropout_resumes_bitwise_and_needs_two_ranks, under mpirun"]
fn child_resume() {
    assert!(is_child(), "run by its parent test under mpirun");
    let world = World::init().unwrap();
    let path = env_path("CONVNET_OUT").join("split.npz");
    let straight = dropout_run(&world, 3, None, None, None).unwrap();
    dropout_run(&world, 1, Some(&path), None, None).unwrap();
    world.barrier(); // rank 0 has written the file
    let resumed = dropout_run(&world, 3, None, Some(&path), None).unwrap();
    assert_eq!(bits(&straight), bits(&resumed), "rank {}: the resumed run differs", world.rank());
    world.check_same("trained weights", hash(&straight)).unwrap();
    // Every rank drew its own dropout masks.
    let seeds = world.all_gather_u64(autograd::rng_state().seed());
    assert!(seeds[0] != seeds[1], "{seeds:?}");
}

/// Fails rank 1 at its third step, the way `how` says.
struct FailAt {
    rank: usize,
    how: &'static str,
    pid_file: Option<PathBuf>,
}

impl Callback for FailAt {
    fn on_gradients_ready(&mut self, _p: &[(String, autograd::Parameter)], step: &Step) -> nn::Result<()> {
        if self.rank != 1 || step.global != 2 {
            return Ok(());
        }
        match self.how {
            "error" => Err(nn::Error::config("FailAt", "injected failure at step 3")),
            "panic" => panic!("injected panic at step 3"),
            _ => {
                // Mid-epoch: tell the parent who to kill, then wait for it (rank 0 waits
                // in the next all-reduce).
                std::fs::write(self.pid_file.as_ref().unwrap(), std::process::id().to_string()).unwrap();
                std::thread::sleep(Duration::from_secs(120));
                Ok(())
            }
        }
    }
}

#[test]
#[ignore = "one rank of a_failing_rank_ends_the_job_naming_it, under mpirun"]
fn child_fail() {
    assert!(is_child(), "run by its parent test under mpirun");
    let world = World::init().unwrap();
    let how: &'static str = match std::env::var("CONVNET_FAIL").unwrap().as_str() {
        "error" => "error",
        "panic" => "panic",
        _ => "kill",
    };
    let pid_file = std::env::var_os("CONVNET_OUT").map(|d| PathBuf::from(d).join("pid"));
    let hook = FailAt { rank: world.rank(), how, pid_file };
    let result = dropout_run(&world, 3, None, None, Some(hook));
    world.abort_on_error(result);
}

#[test]
fn a_failing_rank_ends_the_job_naming_it() {
    for how in ["error", "panic"] {
        let start = Instant::now();
        let o = mpirun(2, "child_fail", &[("CONVNET_FAIL", how)]);
        let secs = start.elapsed().as_secs_f64();
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{how}: the job succeeded:\n{out}\n{err}");
        let expected = match how {
            "error" => "rank 1 of 2: FailAt: injected failure at step 3",
            _ => "rank 1 of 2 panicked",
        };
        // Our own line names the rank: Open MPI 4.1.4's own MPI_ABORT notice is often lost
        // here ("ORTE_ERROR_LOG: ... show_help.c").
        assert!(err.contains(expected), "{how}: no '{expected}' in stderr:\n{err}");
        assert!(secs < 60.0, "{how}: the job took {secs:.1} s to end");
        eprintln!("{how} on rank 1: the job ended {secs:.2} s after it started");
    }
}

#[test]
fn a_rank_killed_mid_epoch_ends_the_job_naming_it() {
    let dir = out_dir();
    let mut child = mpirun_command(2, "child_fail", &[("CONVNET_FAIL", "kill"), ("CONVNET_OUT", dir.path().to_str().unwrap())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start mpirun: apt-get install openmpi-bin libopenmpi-dev (README, \"Distributed\")");
    let pid_file = dir.path().join("pid");
    let start = Instant::now();
    let pid: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok()) {
            break pid;
        }
        assert!(child.try_wait().unwrap().is_none(), "the job ended before rank 1 reached step 3");
        assert!(start.elapsed() < Duration::from_secs(120), "rank 1 never reached step 3");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: kill(2) with a pid read from the file the child rank wrote, and SIGKILL.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill {pid}");
    let killed = Instant::now();
    let o = child.wait_with_output().unwrap();
    let secs = killed.elapsed().as_secs_f64();
    let (out, err) = text(&o);
    assert!(!o.status.success(), "the job succeeded:\n{out}\n{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("rank 1 with PID") && all.contains("signal 9"), "mpirun does not name rank 1:\n{all}");
    assert!(secs < 60.0, "the job took {secs:.1} s to end after rank 1 was killed");
    eprintln!("rank 1 killed: the job ended {secs:.2} s later");
}

// ----- examples/train --distributed ----------------------------------------------------------

#[test]
#[ignore = "one rank of the train_distributed tests, under mpirun"]
fn child_train() {
    assert!(is_child(), "run by its parent test under mpirun");
    let flags = std::env::var("CONVNET_TRAIN_ARGS").unwrap();
    let mut a = parse_args(std::iter::once("train").chain(flags.split(' '))).unwrap();
    a.data_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
    run(&a, &mut std::io::stdout()).unwrap();
}

fn train_job(flags: &str) -> Output {
    mpirun(2, "child_train", &[("CONVNET_TRAIN_ARGS", flags)])
}

#[test]
fn train_distributed_prints_once_and_resumes_bitwise() {
    let dir = out_dir();
    let base = "--model lenet --distributed --train-limit 1000 --test-limit 200 --batch-size 100 --epochs 2 --act relu --pool max --lr 0.1 --augment";
    let straight = dir.path().join("straight.npz");
    let split = dir.path().join("split.npz");
    let out = succeeded(train_job(&format!("{base} --save {}", straight.display())));
    assert_eq!(out.matches("epoch 1/2:").count(), 1, "rank 0 alone prints:\n{out}");
    assert_eq!(out.matches("Conv2d     output shape").count(), 2, "rank 0 alone prints the layer table:\n{out}");
    let last = out.lines().find(|l| l.starts_with("loss ")).unwrap().to_string();
    succeeded(train_job(&format!("{base} --save {} --stop-after 1", split.display())));
    let out = succeeded(train_job(&format!("--distributed --epochs 2 --resume {} --save {}", split.display(), split.display())));
    assert!(out.contains("resuming"), "{out}");
    assert!(out.contains(&last), "the resumed run ends differently:\n{out}\nexpected {last}");
    assert_eq!(bits(&nn::load(&straight).unwrap()), bits(&nn::load(&split).unwrap()), "the resumed checkpoint differs");
    // One process refuses to continue a 2-rank run.
    let mut a = parse_args(["train", "--resume", split.to_str().unwrap(), "--epochs", "3"]).unwrap();
    a.data_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
    let err = run(&a, &mut std::io::sink()).unwrap_err().to_string();
    assert!(err.contains("saved by a run of 2 processes, this run has 1"), "{err}");
}

#[test]
fn train_distributed_resnet18_trains_and_a_usage_error_ends_every_rank() {
    let out = succeeded(train_job("--model resnet18 --distributed --train-limit 64 --test-limit 32 --batch-size 32 --epochs 1"));
    assert_eq!(out.matches("epoch 1/1:").count(), 1, "{out}");
    let o = train_job("--model resnet18 --distributed --pool max --epochs 1");
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    assert!(err.contains("of 2: --pool applies to --model lenet only"), "{err}");
}
