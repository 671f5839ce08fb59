//! The benchmark suite behind `examples/bench.rs`, kept in the library so tests can run
//! the same code in a short mode.

use crate::cli;
use autograd::{no_grad, rng, set_num_threads, Tensor};
use clap::Parser;
use nn::{lenet, xavier_init, Act, Module, Optimizer, Pool, Sgd};
use ops::{Conv2dArgs, Pool2dArgs, TensorOps};
use std::io::Write;
use std::time::Instant;

/// Benchmarks: prints only measurement lines on stdout, NAME VALUE UNIT, each the median of
/// the repetitions after a warm-up; diagnostics go to stderr.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "bench", version, allow_negative_numbers = true)]
pub struct BenchOptions {
    /// Threads for every pool [default: all cores]
    #[arg(long, value_name = "N", value_parser = cli::parse_threads)]
    pub threads: Option<usize>,
    /// Run only benchmarks whose name contains this
    #[arg(long, value_name = "NAME")]
    pub only: Option<String>,
    /// Repetitions to take the median of
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = cli::parse_count)]
    pub reps: usize,
    /// Smaller problem sizes (for tests); the numbers are then not comparable
    #[arg(long)]
    pub quick: bool,
}

/// Median wall time of `reps` runs of `f`, after one warm-up run, in seconds.
pub fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut ts: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(|a, b| a.total_cmp(b));
    ts[ts.len() / 2]
}

/// One measurement line.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
}

/// Runs every selected benchmark, writing `NAME VALUE UNIT` lines to `out`.
pub fn run_all(opts: &BenchOptions, out: &mut impl Write) -> Vec<Measurement> {
    if let Some(t) = opts.threads {
        // --threads is checked by its parser; starting the threads can still fail.
        if let Err(e) = set_num_threads(t) {
            eprintln!("bench: {e}; using the default pool");
        }
    }
    eprintln!("bench: {} threads", autograd::num_threads());
    let mut results = Vec::new();
    let wanted = |name: &str| opts.only.as_deref().is_none_or(|o| name.contains(o));
    let mut emit = |m: Measurement| {
        writeln!(out, "{} {:.3} {}", m.name, m.value, m.unit).ok();
        results.push(m);
    };
    if wanted("sgemm_1024") {
        let n = if opts.quick { 128 } else { 1024 };
        let mut r = rng(0);
        let a = Tensor::uniform(&[n, n], -1.0, 1.0, &mut r);
        let b = Tensor::uniform(&[n, n], -1.0, 1.0, &mut r);
        let secs = median_secs(opts.reps, || {
            std::hint::black_box(a.matmul(&b).expect("square matmul"));
        });
        emit(Measurement { name: "sgemm_1024".into(), value: 2.0 * (n * n * n) as f64 / secs / 1e9, unit: "GFLOP/s" });
    }
    let batch = if opts.quick { 8 } else { 256 };
    let mut r = rng(1);
    // LeNet's convolutions: weight and bias gradients always; the input gradient only for
    // conv2 (the network's input never needs one).
    for (name, c, o, hw, pad, input_grad) in [("conv1", 1, 6, 28, 2, false), ("conv2", 6, 16, 14, 0, true)] {
        let x = Tensor::uniform(&[batch, c, hw, hw], 0.0, 1.0, &mut r);
        let x = if input_grad { x.requires_grad_() } else { x };
        let w = Tensor::uniform(&[o, c, 5, 5], -0.2, 0.2, &mut r).requires_grad_();
        let b = Tensor::uniform(&[o], -0.2, 0.2, &mut r).requires_grad_();
        let args = Conv2dArgs::new().padding(pad);
        let ohw = hw + 2 * pad - 4;
        let seed = Tensor::uniform(&[batch, o, ohw, ohw], -1.0, 1.0, &mut r);
        let fwd_flops = 2.0 * (batch * o * ohw * ohw * c * 25) as f64;
        if wanted(&format!("{name}_fwd")) {
            let secs = median_secs(opts.reps, || {
                std::hint::black_box(no_grad(|| x.conv2d(&w, Some(&b), args)).expect("valid conv"));
            });
            eprintln!("{name}_fwd: {:.1} GFLOP/s", fwd_flops / secs / 1e9);
            emit(Measurement { name: format!("{name}_fwd"), value: secs * 1e3, unit: "ms" });
        }
        // The two gradient kernels on their own, to see where the backward's time goes.
        if wanted(&format!("{name}_dw")) {
            let secs = median_secs(opts.reps, || {
                std::hint::black_box(ops::conv2d_weight_grad(&x, &seed, w.shape(), args).expect("valid conv"));
            });
            emit(Measurement { name: format!("{name}_dw"), value: secs * 1e3, unit: "ms" });
        }
        if input_grad && wanted(&format!("{name}_dx")) {
            let secs = median_secs(opts.reps, || {
                std::hint::black_box(ops::conv2d_input_grad(&seed, &w, x.shape(), args).expect("valid conv"));
            });
            emit(Measurement { name: format!("{name}_dx"), value: secs * 1e3, unit: "ms" });
        }
        if wanted(&format!("{name}_fwd_bwd")) {
            let secs = conv_fwd_bwd_secs(opts.reps, &x, &w, &b, args, &seed);
            let flops = fwd_flops * if input_grad { 3.0 } else { 2.0 };
            eprintln!("{name}_fwd_bwd: {:.1} GFLOP/s", flops / secs / 1e9);
            emit(Measurement { name: format!("{name}_fwd_bwd"), value: secs * 1e3, unit: "ms" });
        }
    }
    // A transposed convolution that doubles the side (DCGAN's upsampling step): the
    // convolution's input-gradient map plus the bias.
    if wanted("conv_transpose2d_16to8_s2_fwd") {
        let x = Tensor::uniform(&[batch, 16, 7, 7], -1.0, 1.0, &mut r);
        let w = Tensor::uniform(&[16, 8, 4, 4], -0.2, 0.2, &mut r);
        let b = Tensor::uniform(&[8], -0.2, 0.2, &mut r);
        let args = ops::ConvTranspose2dArgs::new().stride(2).padding(1);
        let secs = median_secs(opts.reps, || {
            std::hint::black_box(ops::conv_transpose2d(&x, &w, Some(&b), args).expect("valid transposed conv"));
        });
        emit(Measurement { name: "conv_transpose2d_16to8_s2_fwd".into(), value: secs * 1e3, unit: "ms" });
    }
    for (name, c, hw) in [("avgpool1", 6, 28), ("avgpool2", 16, 10)] {
        if !wanted(&format!("{name}_fwd_bwd")) {
            continue;
        }
        let x = Tensor::uniform(&[batch, c, hw, hw], 0.0, 1.0, &mut r).requires_grad_();
        let seed = Tensor::uniform(&[batch, c, hw / 2, hw / 2], -1.0, 1.0, &mut r);
        let secs = median_secs(opts.reps, || {
            let y = x.avg_pool2d(Pool2dArgs::new(2).stride(2)).expect("valid pooling");
            y.backward_with(Some(&seed), Default::default()).expect("backward");
            x.zero_grad();
        });
        emit(Measurement { name: format!("{name}_fwd_bwd"), value: secs * 1e3, unit: "ms" });
    }
    // Training-mode batch norm, forward and backward, at a ResNet and a BN-LeNet shape.
    for (name, c, hw) in [("batchnorm2d_64x14", 64, 14), ("batchnorm2d_6x24", 6, 24)] {
        let name = format!("{name}_fwd_bwd");
        if !wanted(&name) {
            continue;
        }
        let bn = nn::BatchNorm::new_2d(nn::BatchNormConfig::new(c));
        let x = Tensor::uniform(&[batch, c, hw, hw], -1.0, 1.0, &mut r).requires_grad_();
        let seed = Tensor::uniform(&[batch, c, hw, hw], -1.0, 1.0, &mut r);
        let secs = median_secs(opts.reps, || {
            let y = bn.forward(&x).expect("valid batch norm");
            y.backward_with(Some(&seed), Default::default()).expect("backward");
            x.zero_grad();
            bn.zero_grad();
        });
        emit(Measurement { name, value: secs * 1e3, unit: "ms" });
    }
    // The LeNet training step through the public path (nn layers, the tape, SGD), on one
    // fixed batch of uniform random images with random labels; and BN-LeNet's (SPEC 7).
    let steps = if opts.quick { 2 } else { 30 };
    let xb = Tensor::rand(&[batch, 1, 28, 28], &mut r);
    let yb: Vec<usize> = (0..batch).map(|i| (i * 7 + 3) % 10).collect();
    let nets = [
        ("lenet_train_avgpool_sigmoid", Some((Pool::Avg, Act::Sigmoid))),
        ("lenet_train_maxpool_relu", Some((Pool::Max, Act::Relu))),
        ("bn_lenet_train", None),
    ];
    for (name, lenet_kind) in nets {
        if !wanted(name) {
            continue;
        }
        let net = match lenet_kind {
            Some((pool, act)) => {
                let net = lenet(pool, act, &mut r).expect("LeNet builds");
                xavier_init(&net, &mut r).expect("init");
                net
            }
            None => nn::bn_lenet(&mut r).expect("BN-LeNet builds"),
        };
        let mut opt = Sgd::new(net.named_parameters(), 0.1).expect("valid SGD settings");
        let mut losses = Vec::new();
        let mut step = || {
            let loss = ops::cross_entropy(&net.forward(&xb).expect("forward"), &yb).expect("loss");
            opt.zero_grad();
            loss.backward().expect("backward");
            losses.push(loss.item().expect("scalar"));
            // Free the graph first, so the optimiser updates the parameters in place.
            drop(loss);
            opt.step().expect("step");
        };
        for _ in 0..4 {
            step(); // warm-up (median_secs adds one more run)
        }
        let secs = median_secs(opts.reps, || (0..steps).for_each(|_| step()));
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        assert!(last < first, "{name}: loss did not fall ({first} -> {last})");
        emit(Measurement { name: name.into(), value: (steps * batch) as f64 / secs, unit: "examples/s" });
    }
    if wanted("lenet_infer_avgpool_sigmoid") {
        let net = lenet(Pool::Avg, Act::Sigmoid, &mut r).expect("LeNet builds");
        let secs = median_secs(opts.reps, || {
            for _ in 0..steps {
                std::hint::black_box(no_grad(|| net.forward(&xb)).expect("forward"));
            }
        });
        emit(Measurement { name: "lenet_infer_avgpool_sigmoid".into(), value: (steps * batch) as f64 / secs, unit: "examples/s" });
    }
    resnet_lines(opts, &wanted, &mut emit);
    memory_lines(opts, &wanted, &mut emit);
    results
}

/// Median seconds of one convolution's forward and backward from `seed` (the gradients of
/// whichever of `x`, `w`, `b` require them), the gradients cleared after each run.
fn conv_fwd_bwd_secs(reps: usize, x: &Tensor, w: &Tensor, b: &Tensor, args: Conv2dArgs, seed: &Tensor) -> f64 {
    median_secs(reps, || {
        let y = x.conv2d(w, Some(b), args).expect("valid conv");
        y.backward_with(Some(seed), Default::default()).expect("backward");
        [w, b, x].iter().for_each(|t| t.zero_grad());
    })
}

// ----- ResNet-18 (issue 24) ------------------------------------------------------------

/// Every distinct convolution of SPEC section 7's ResNet-18 on 28x28 inputs:
/// `(name, in channels, out channels, kernel, stride, input side)`, padding `k / 2`.
pub const R18_CONVS: [(&str, usize, usize, usize, usize, usize); 11] = [
    ("stem", 1, 64, 7, 2, 28),
    ("b2", 64, 64, 3, 1, 7),
    ("b3_down", 64, 128, 3, 2, 7),
    ("b3_short", 64, 128, 1, 2, 7),
    ("b3", 128, 128, 3, 1, 4),
    ("b4_down", 128, 256, 3, 2, 4),
    ("b4_short", 128, 256, 1, 2, 4),
    ("b4", 256, 256, 3, 1, 2),
    ("b5_down", 256, 512, 3, 2, 2),
    ("b5_short", 256, 512, 1, 2, 2),
    ("b5", 512, 512, 3, 1, 1),
];

/// `conv_r18_*_fwd_bwd` (ms: forward, then the input gradient, except for the stem whose
/// input is the network's, and the weight and bias gradients), `resnet18_train` (SGD
/// steps, examples/s) and `resnet18_infer` (eval mode, examples/s), at batch 256.
fn resnet_lines(opts: &BenchOptions, wanted: &dyn Fn(&str) -> bool, emit: &mut dyn FnMut(Measurement)) {
    let batch = if opts.quick { 8 } else { 256 };
    let mut r = rng(24);
    for (name, c, o, k, s, hw) in R18_CONVS {
        let name = format!("conv_r18_{name}_fwd_bwd");
        if !wanted(&name) {
            continue;
        }
        let x = Tensor::uniform(&[batch, c, hw, hw], -1.0, 1.0, &mut r);
        let x = if c > 1 { x.requires_grad_() } else { x };
        let w = Tensor::uniform(&[o, c, k, k], -0.1, 0.1, &mut r).requires_grad_();
        let b = Tensor::uniform(&[o], -0.1, 0.1, &mut r).requires_grad_();
        let args = Conv2dArgs::new().padding(k / 2).stride(s);
        let ohw = (hw + 2 * (k / 2) - k) / s + 1;
        let seed = Tensor::uniform(&[batch, o, ohw, ohw], -1.0, 1.0, &mut r);
        let secs = conv_fwd_bwd_secs(opts.reps, &x, &w, &b, args, &seed);
        emit(Measurement { name, value: secs * 1e3, unit: "ms" });
    }
    let xb = Tensor::rand(&[batch, 1, 28, 28], &mut r);
    let yb: Vec<usize> = (0..batch).map(|i| (i * 7 + 3) % 10).collect();
    let steps = if opts.quick { 1 } else { 3 };
    if wanted("resnet18_train") {
        let net = nn::resnet18(&mut r).expect("ResNet-18 builds");
        let mut opt = Sgd::new(net.named_parameters(), 0.05).expect("valid SGD settings");
        let mut step = || {
            let loss = ops::cross_entropy(&net.forward(&xb).expect("forward"), &yb).expect("loss");
            opt.zero_grad();
            loss.backward().expect("backward");
            drop(loss);
            opt.step().expect("step");
        };
        step(); // warm-up (median_secs adds one more run)
        let secs = median_secs(opts.reps, || (0..steps).for_each(|_| step()));
        emit(Measurement { name: "resnet18_train".into(), value: (steps * batch) as f64 / secs, unit: "examples/s" });
    }
    if wanted("resnet18_infer") {
        let net = nn::resnet18(&mut r).expect("ResNet-18 builds");
        net.eval();
        let secs = median_secs(opts.reps, || {
            for _ in 0..steps {
                std::hint::black_box(no_grad(|| net.forward(&xb)).expect("forward"));
            }
        });
        emit(Measurement { name: "resnet18_infer".into(), value: (steps * batch) as f64 / secs, unit: "examples/s" });
    }
}

// ----- memory -------------------------------------------------------------------------

/// The chain of issue 25 (and `tests/memory.rs`): `[batch, channels, height, width]` of
/// every activation. 512 KiB each; the 50 weights' gradients add up to 0.9 of one.
pub const CHAIN_SHAPE: [usize; 4] = [8, 16, 32, 32];

/// What a chain of `conv2d 3x3 (padding 1) -> relu` layers keeps, in units of one
/// activation, as counted by [`crate::alloc_count`] with buffer recycling off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChainMemory {
    /// Live at the end of the forward: the input batch and whatever the tape kept.
    pub fwd_live_acts: f64,
    /// The most live during the backward, the weights' gradients included.
    pub bwd_peak_acts: f64,
    /// Live once the backward is done, the graph still held (its root is alive).
    pub after_bwd_acts: f64,
}

/// Turns buffer recycling off while alive, so the counting allocator sees exactly what
/// tensors hold (the cache would count as live).
struct RecyclingOff;
impl RecyclingOff {
    fn new() -> Self {
        autograd::buffers::set_recycling(false);
        RecyclingOff
    }
}
impl Drop for RecyclingOff {
    fn drop(&mut self) {
        autograd::buffers::set_recycling(true);
    }
}

/// Runs `layers` of `x -> relu(conv2d(x, w_i, padding 1))` on an input of `shape` (which
/// needs no gradient), then the backward of the sum, and counts the live bytes above
/// what existed before the input was made (the weights). Needs [`crate::alloc_count::CountingAlloc`]
/// as the global allocator; `retain_graph` keeps every saved tensor for comparison.
pub fn chain_memory(layers: usize, shape: [usize; 4], retain_graph: bool) -> autograd::Result<ChainMemory> {
    use crate::alloc_count::{live_bytes, peak_bytes, reset_peak};
    let _off = RecyclingOff::new();
    let [n, c, h, w] = shape;
    let mut r = rng(25);
    // He-uniform for ReLU, so the values neither vanish nor blow up over 50 layers.
    let bound = (6.0 / (9 * c) as f64).sqrt();
    let ws: Vec<Tensor> = (0..layers).map(|_| Tensor::uniform(&[c, c, 3, 3], -bound, bound, &mut r).requires_grad_()).collect();
    let args = Conv2dArgs::new().padding(1);
    let act = (n * c * h * w * std::mem::size_of::<f32>()) as f64;
    let opts = autograd::BackwardOptions { retain_graph, ..Default::default() };
    let mut run = || -> autograd::Result<ChainMemory> {
        ws.iter().for_each(Tensor::zero_grad);
        let base = live_bytes() as f64;
        let mut y = Tensor::uniform(&[n, c, h, w], -1.0, 1.0, &mut r);
        for wi in &ws {
            y = y.conv2d(wi, None, args)?.relu();
        }
        let loss = y.sum();
        drop(y);
        let fwd = live_bytes() as f64 - base;
        reset_peak();
        loss.backward_with(None, opts)?;
        let peak = peak_bytes() as f64 - base;
        let after = live_bytes() as f64 - base;
        drop(loss);
        Ok(ChainMemory { fwd_live_acts: fwd / act, bwd_peak_acts: peak / act, after_bwd_acts: after / act })
    };
    // The first run starts the pool's threads and fills lazily made statics.
    run()?;
    run()
}

/// Peak live bytes of one training step (forward, cross-entropy, backward, SGD update)
/// of `nn::resnet18_with_widths(widths)` on a batch of `batch` 1x28x28 images: the
/// model's state, the batch and its labels, plus the most the step added at once, as
/// counted by [`crate::alloc_count`] with buffer recycling off (after one warm-up step,
/// with the gradients cleared as `zero_grad` leaves them).
pub fn resnet18_step_peak_bytes(batch: usize, widths: [usize; 4]) -> nn::Result<usize> {
    use crate::alloc_count::{live_bytes, peak_bytes, reset_peak};
    let _off = RecyclingOff::new();
    let mut r = rng(18);
    let net = nn::resnet18_with_widths(widths, &mut r)?;
    let mut opt = Sgd::new(net.named_parameters(), 0.1)?;
    let x = Tensor::rand(&[batch, 1, 28, 28], &mut r);
    let y: Vec<usize> = (0..batch).map(|i| (i * 7 + 3) % 10).collect();
    let mut step = || -> nn::Result<()> {
        let loss = ops::cross_entropy(&net.forward(&x)?, &y)?;
        opt.zero_grad();
        loss.backward()?;
        drop(loss);
        opt.step()?;
        opt.zero_grad();
        Ok(())
    };
    step()?;
    let state: usize = net.state_dict().iter().map(|(_, t)| t.numel() * t.dtype().size()).sum();
    let held = state + x.numel() * x.dtype().size() + y.len() * std::mem::size_of::<i64>();
    let base = live_bytes();
    reset_peak();
    step()?;
    Ok(held + peak_bytes().saturating_sub(base))
}

/// Bytes the recycled-buffer cache holds after two ordinary training steps (recycling on)
/// of the network [`resnet18_step_peak_bytes`] measures: what a normal run holds on top of
/// the live bytes (at most 128 MiB per element type).
pub fn resnet18_cached_bytes(batch: usize, widths: [usize; 4]) -> nn::Result<usize> {
    autograd::buffers::clear();
    let mut r = rng(18);
    let net = nn::resnet18_with_widths(widths, &mut r)?;
    let mut opt = Sgd::new(net.named_parameters(), 0.1)?;
    let x = Tensor::rand(&[batch, 1, 28, 28], &mut r);
    let y: Vec<usize> = (0..batch).map(|i| (i * 7 + 3) % 10).collect();
    for _ in 0..2 {
        let loss = ops::cross_entropy(&net.forward(&x)?, &y)?;
        opt.zero_grad();
        loss.backward()?;
        drop(loss);
        opt.step()?;
    }
    Ok(autograd::buffers::cached_bytes())
}

/// The memory lines: `chain50_fwd_live_acts`, `chain50_bwd_peak_acts` (issue 25's
/// bounds: at most 52 and 56) and `resnet18_train_peak_mb` (MiB). Skipped, with a note
/// on stderr, when the counting allocator is not installed.
fn memory_lines(opts: &BenchOptions, wanted: &dyn Fn(&str) -> bool, emit: &mut dyn FnMut(Measurement)) {
    let chain = ["chain50_fwd_live_acts", "chain50_bwd_peak_acts"];
    let resnet = "resnet18_train_peak_mb";
    if !chain.iter().any(|n| wanted(n)) && !wanted(resnet) {
        return;
    }
    if !crate::alloc_count::installed() {
        eprintln!("bench: the memory lines need convnet::alloc_count::CountingAlloc as the global allocator (examples/bench installs it); skipped");
        return;
    }
    if chain.iter().any(|n| wanted(n)) {
        let shape = if opts.quick { [2, 4, 8, 8] } else { CHAIN_SHAPE };
        let m = chain_memory(50, shape, false).expect("the chain runs");
        eprintln!("chain50: {shape:?} activations; {:.2} live after the backward", m.after_bwd_acts);
        for (name, value) in chain.iter().zip([m.fwd_live_acts, m.bwd_peak_acts]) {
            if wanted(name) {
                emit(Measurement { name: (*name).into(), value, unit: "activations" });
            }
        }
    }
    if wanted(resnet) {
        let (batch, widths) = if opts.quick { (4, [8, 16, 32, 64]) } else { (256, [64, 128, 256, 512]) };
        let bytes = resnet18_step_peak_bytes(batch, widths).expect("the ResNet-18 step runs");
        let cached = resnet18_cached_bytes(batch, widths).expect("the ResNet-18 step runs");
        eprintln!("resnet18: the buffer cache holds {:.1} MiB after two ordinary steps", cached as f64 / (1 << 20) as f64);
        emit(Measurement { name: resnet.into(), value: bytes as f64 / (1 << 20) as f64, unit: "MiB" });
    }
}
