//! BatchNorm, adaptive pooling and SPEC section 7's models against PyTorch
//! (tests/fixtures/bn/make_fixture.py, a kept script run by hand), and their gradients
//! checked numerically in f64 in both modes.

use autograd::testing::{assert_gradcheck, assert_gradgradcheck};
use autograd::{rng, DType, Tensor};
use nn::{BatchNorm, BatchNormConfig, Module, Optimizer};
use proptest::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<(String, Tensor)> {
    nn::load_npz(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bn").join(name)).unwrap()
}

fn map(v: Vec<(String, Tensor)>) -> HashMap<String, Tensor> {
    v.into_iter().collect()
}

fn close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
    assert_eq!((got.dtype(), got.shape()), (want.dtype(), want.shape()), "{what}");
    let d = got.max_abs_diff(want).unwrap();
    assert!(d <= tol, "{what}: off by {d}");
}

/// Three training steps and an evaluation step of one fixture case.
fn check_case(f: &HashMap<String, Tensor>, name: &str, layer: BatchNorm) {
    layer.to_dtype(DType::F64).unwrap();
    if let (Some(w), Some(b)) = (&layer.weight, &layer.bias) {
        w.set(&f[&format!("{name}.weight")]).unwrap();
        b.set(&f[&format!("{name}.bias")]).unwrap();
    }
    for k in 0..3 {
        let x = f[&format!("{name}.x{k}")].requires_grad_();
        layer.zero_grad();
        let y = layer.forward(&x).unwrap();
        close(&y, &f[&format!("{name}.y{k}")], 1e-12, &format!("{name} y{k}"));
        y.mul(&f[&format!("{name}.r{k}")]).unwrap().sum().backward().unwrap();
        close(&x.grad().unwrap(), &f[&format!("{name}.dx{k}")], 1e-12, &format!("{name} dx{k}"));
        if let (Some(w), Some(b)) = (&layer.weight, &layer.bias) {
            close(&w.grad().unwrap(), &f[&format!("{name}.dw{k}")], 1e-12, &format!("{name} dw{k}"));
            close(&b.grad().unwrap(), &f[&format!("{name}.db{k}")], 1e-12, &format!("{name} db{k}"));
        }
    }
    let sd = map(layer.state_dict());
    for key in ["running_mean", "running_var", "num_batches_tracked"] {
        close(&sd[key], &f[&format!("{name}.{key}")], 1e-12, &format!("{name} {key}"));
    }
    layer.eval();
    let x = f[&format!("{name}.xe")].requires_grad_();
    let y = layer.forward(&x).unwrap();
    close(&y, &f[&format!("{name}.ye")], 1e-12, &format!("{name} eval"));
    y.mul(&f[&format!("{name}.re")]).unwrap().sum().backward().unwrap();
    close(&x.grad().unwrap(), &f[&format!("{name}.dxe")], 1e-12, &format!("{name} eval dx"));
    assert_eq!(map(layer.state_dict())["num_batches_tracked"].to_vec::<i64>(), [3], "eval changes no statistic");
}

#[test]
fn batch_norm_matches_pytorch_in_both_modes() {
    let f = map(fixture("bn.npz"));
    check_case(&f, "bn2d", BatchNorm::new_2d(BatchNormConfig::new(3)));
    check_case(&f, "bn1d", BatchNorm::new_1d(BatchNormConfig::new(5).momentum(None)));
    check_case(&f, "bn1d_plain", BatchNorm::new_1d(BatchNormConfig::new(4).affine(false)));
}

#[test]
fn batch_norm_layers_check_their_input() {
    let bn = BatchNorm::new_2d(BatchNormConfig::new(3));
    let e = bn.forward(&Tensor::zeros(&[1, 3, 1, 1])).unwrap_err().to_string();
    assert!(e.starts_with("batch_norm: expected more than 1 value per channel when training"), "{e}");
    assert!(bn.forward(&Tensor::zeros(&[2, 4, 2, 2])).unwrap_err().to_string().starts_with("batch_norm: "));
    assert!(bn.forward(&Tensor::zeros(&[2, 3])).unwrap_err().to_string().starts_with("batch_norm: "));
    bn.eval();
    assert_eq!(bn.forward(&Tensor::ones(&[1, 3, 1, 1])).unwrap().shape(), &[1, 3, 1, 1], "eval takes a single value");
    assert_eq!(bn.describe(), "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)");
    let plain = BatchNorm::new_1d(BatchNormConfig::new(2).momentum(None).affine(false).track_running_stats(false));
    assert_eq!(plain.describe(), "BatchNorm1d(2, eps=1e-05, momentum=None, affine=False, track_running_stats=False)");
    assert!(plain.state_dict().is_empty());
    // Without running statistics eval mode normalises with the batch's.
    plain.eval();
    let y = plain.forward(&Tensor::from_vec(vec![1.0f32, 5.0, 3.0, 7.0], &[2, 2]).unwrap()).unwrap();
    assert!(y.max_abs_diff(&Tensor::from_vec(vec![-1.0f32, -1.0, 1.0, 1.0], &[2, 2]).unwrap()).unwrap() < 1e-4);
}

proptest! {
    #![proptest_config(autograd::testing::config_from_env(24))]

    #[test]
    fn batch_norm_gradchecks_in_both_modes(n in 2usize..4, c in 1usize..4, s in 1usize..4, seed in any::<u64>()) {
        let mut r = rng(seed);
        let x = Tensor::uniform_dtype(&[n, c, s, 2], -2.0, 2.0, DType::F64, &mut r).requires_grad_();
        let w = Tensor::uniform_dtype(&[c], 0.5, 1.5, DType::F64, &mut r).requires_grad_();
        let b = Tensor::uniform_dtype(&[c], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        let train = |v: &[Tensor]| Ok(ops::batch_norm_train(&v[0], Some(&v[1]), Some(&v[2]), 1e-5)?.output.tanh());
        assert_gradcheck(train, &[x.clone(), w.clone(), b.clone()]);
        assert_gradgradcheck(train, &[x.clone(), w.clone(), b.clone()]);
        let mean = Tensor::uniform_dtype(&[c], -1.0, 1.0, DType::F64, &mut r);
        let var = Tensor::uniform_dtype(&[c], 0.5, 2.0, DType::F64, &mut r);
        let eval = |v: &[Tensor]| Ok(ops::batch_norm_eval(&v[0], &mean, &var, Some(&v[1]), Some(&v[2]), 1e-5)?.tanh());
        assert_gradcheck(eval, &[x.clone(), w.clone(), b.clone()]);
        assert_gradgradcheck(eval, &[x, w, b]);
    }

    #[test]
    fn adaptive_avg_pool_gradchecks(h in 1usize..7, w in 1usize..7, oh in 1usize..5, ow in 1usize..5, seed in any::<u64>()) {
        let x = Tensor::uniform_dtype(&[2, 2, h, w], -1.0, 1.0, DType::F64, &mut rng(seed)).requires_grad_();
        let f = |v: &[Tensor]| Ok(ops::adaptive_avg_pool2d(&v[0], (oh, ow))?.tanh());
        assert_gradcheck(f, &[x.clone()]);
        assert_gradgradcheck(f, &[x]);
    }
}

#[test]
fn adaptive_avg_pool_bins_as_pytorch() {
    // torch.nn.functional.adaptive_avg_pool2d(torch.arange(10.).view(1, 1, 2, 5), (1, 3)):
    // bins [0, 2), [1, 4), [3, 5) over the width.
    let x = Tensor::arange(0.0, 10.0, 1.0).unwrap().reshape(&[1, 1, 2, 5]).unwrap();
    let y = ops::adaptive_avg_pool2d(&x, (1, 3)).unwrap();
    assert_eq!(y.to_vec::<f32>(), [3.0, 4.5, 6.0]);
    let g = ops::adaptive_avg_pool2d(&x, (1, 1)).unwrap();
    assert_eq!(g.to_vec::<f32>(), [4.5]);
    assert!(ops::adaptive_avg_pool2d(&x, (0, 1)).unwrap_err().to_string().starts_with("adaptive_avg_pool2d: "));
    assert!(ops::adaptive_avg_pool2d(&Tensor::zeros(&[5]), (1, 1)).unwrap_err().to_string().starts_with("adaptive_avg_pool2d: "));
}

/// SPEC's models: keys, shapes, dtypes and order as PyTorch's; PyTorch's weights give
/// PyTorch's logits in eval and train mode; train mode updates the statistics as PyTorch.
#[test]
fn spec_models_match_pytorch() {
    let io = map(fixture("models_io.npz"));
    let x = &io["x"];
    for (name, net) in [
        ("bn_lenet", nn::bn_lenet(&mut rng(0)).unwrap()),
        ("resnet_small", nn::resnet18_with_widths([8, 16, 32, 64], &mut rng(0)).unwrap()),
    ] {
        let theirs = fixture(&format!("{name}.npz"));
        let keys = |v: &[(String, Tensor)]| v.iter().map(|(k, t)| (k.clone(), t.dtype(), t.shape().to_vec())).collect::<Vec<_>>();
        assert_eq!(keys(&net.state_dict()), keys(&theirs), "{name}: state_dict keys");
        net.load_state_dict(&theirs).unwrap();
        net.eval();
        close(&net.forward(x).unwrap(), &io[&format!("{name}.eval")], 1e-4, &format!("{name} eval logits"));
        net.train();
        close(&net.forward(x).unwrap(), &io[&format!("{name}.train")], 1e-4, &format!("{name} train logits"));
        for (k, t) in net.state_dict() {
            close(&t, &io[&format!("{name}.after.{k}")], 1e-5, &format!("{name} {k} after a train step"));
        }
        // The other direction: our file loads into PyTorch (make_fixture.py --check NAME FILE).
        if let Ok(dir) = std::env::var("CONVNET_BN_OUT") {
            nn::save_state_dict(&net, &PathBuf::from(dir).join(format!("{name}.npz"))).unwrap();
        }
    }
}

/// Each model's training as PyTorch's: four SGD steps from PyTorch's initial state
/// (`steps.npz`) give its losses, its state after them (weights, momentum's effect,
/// running statistics, step counts) and its eval-mode logits. In f64 to 1e-11: the whole
/// step (forward with the fused train-mode convolutions, loss, backward, SGD) is PyTorch's
/// maths. In f32 to rounding: the first step is compared to 1e-5, and the later steps no
/// further from PyTorch's f32 than three times its own distance to f64, which is how far
/// rounding alone carries them (the small ResNet at lr 0.05 with momentum amplifies it).
#[test]
fn spec_models_take_pytorchs_training_steps() {
    let f = map(fixture("steps.npz"));
    let labels = f["y"].to_dtype(DType::I64);
    for (name, lr, momentum, weight_decay) in [("bn_lenet", 1.0, 0.0, 0.0), ("resnet_small", 0.05, 0.9, 5e-4)] {
        for (tag, dtype) in [("f64", DType::F64), ("f32", DType::F32)] {
            let what = format!("{name} in {tag}");
            let net = match name {
                "bn_lenet" => nn::bn_lenet(&mut rng(0)).unwrap(),
                _ => nn::resnet18_with_widths([8, 16, 32, 64], &mut rng(0)).unwrap(),
            };
            net.load_state_dict(&fixture(&format!("{name}.npz"))).unwrap();
            net.to_dtype(dtype).unwrap();
            let config = nn::optim::SgdConfig::new(lr).momentum(momentum).weight_decay(weight_decay);
            let mut opt = nn::Sgd::with(net.named_parameters(), config).unwrap();
            net.train();
            // How far PyTorch's own f32 run is from its f64 run, per step.
            let drift = |key: &str| {
                let (a, b) = (&f[&format!("{name}.f32.{key}")], &f[&format!("{name}.f64.{key}")]);
                a.to_dtype(DType::F64).max_abs_diff(b).unwrap()
            };
            let tol = |key: &str, first: bool| match tag {
                "f64" => 1e-11,
                _ if first => 1e-5,
                _ => (3.0 * drift(key)).max(1e-5),
            };
            for k in 0..4 {
                let x = f["x"].narrow(0, k, 1).unwrap().squeeze(0).unwrap().to_dtype(dtype);
                let y = labels.narrow(0, k, 1).unwrap().squeeze(0).unwrap();
                let loss = ops::cross_entropy(&net.forward(&x).unwrap(), &y).unwrap();
                opt.zero_grad();
                loss.backward().unwrap();
                opt.step().unwrap();
                let key = format!("loss{k}");
                close(&loss, &f[&format!("{name}.{tag}.{key}")], tol(&key, k == 0), &format!("{what}: {key}"));
            }
            for (k, t) in net.state_dict() {
                let key = format!("after.{k}");
                close(&t, &f[&format!("{name}.{tag}.{key}")], tol(&key, false), &format!("{what}: {k} after four steps"));
            }
            net.eval();
            let logits = net.forward(&f["xe"].to_dtype(dtype)).unwrap();
            close(&logits, &f[&format!("{name}.{tag}.eval")], tol("eval", false), &format!("{what}: eval logits after four steps"));
        }
    }
}

#[test]
fn resnet18_has_spec_keys() {
    let small = nn::resnet18_with_widths([8, 16, 32, 64], &mut rng(0)).unwrap();
    let full = nn::resnet18(&mut rng(0)).unwrap();
    let names = |n: &nn::Sequential| n.state_dict().into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(names(&full), names(&small));
    assert_eq!(names(&full).len(), 127);
    assert_eq!(full.num_parameters(), 11_178_378, "PyTorch's count");
    let sd = full.state_dict();
    let find = |k: &str| sd.iter().find(|(n, _)| n == k).map(|(_, t)| (t.dtype(), t.shape().to_vec())).unwrap();
    assert_eq!(find("0.1.num_batches_tracked"), (DType::I64, vec![]));
    assert_eq!(find("2.0.conv3.bias"), (DType::F32, vec![128]));
    assert_eq!(find("4.1.bn2.running_var"), (DType::F32, vec![512]));
    assert_eq!(find("7.weight"), (DType::F32, vec![10, 512]));
    let y = full.forward(&Tensor::rand(&[2, 1, 28, 28], &mut rng(1))).unwrap();
    assert_eq!(y.shape(), &[2, 10]);
}

/// The kernels against the same maths composed of tape ops, at shapes the fixtures and
/// the gradchecks leave out: many channels, planes of 1, 3, 8, 49 and 1089 values (the
/// kernels' sums run in lanes of 8, with a separate path under 8; the gradient sums form
/// the output gradient of planes up to 1024 values first).
#[test]
fn batch_norm_kernels_match_the_composed_maths_on_many_channels() {
    let mut r = rng(11);
    for shape in [vec![40, 150], vec![24, 40, 3], vec![9, 70, 2, 4], vec![5, 3, 7, 7], vec![2, 3, 33, 33]] {
        let c = shape[1];
        let x = Tensor::uniform_dtype(&shape, -2.0, 3.0, DType::F64, &mut r).requires_grad_();
        let w = Tensor::uniform_dtype(&[c], 0.5, 1.5, DType::F64, &mut r).requires_grad_();
        let b = Tensor::uniform_dtype(&[c], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
        let seed = Tensor::uniform_dtype(&shape, -1.0, 1.0, DType::F64, &mut r);
        let out = ops::batch_norm_train(&x, Some(&w), Some(&b), 1e-5).unwrap();
        let dims: Vec<isize> = (0..shape.len() as isize).filter(|&d| d != 1).collect();
        let per_channel: Vec<isize> = shape.iter().enumerate().map(|(d, &n)| if d == 1 { n as isize } else { 1 }).collect();
        let mean = x.mean_dims(&dims, true).unwrap();
        let var = x.var_dims(&dims, 0.0, true).unwrap();
        let want = x
            .sub(&mean)
            .unwrap()
            .div(&var.add_scalar(1e-5).sqrt())
            .unwrap()
            .mul(&w.reshape(&per_channel).unwrap())
            .unwrap()
            .add(&b.reshape(&per_channel).unwrap())
            .unwrap();
        let what = format!("{shape:?}");
        close(&out.output, &want, 1e-12, &format!("{what}: output"));
        close(&out.mean, &mean.reshape(&[c as isize]).unwrap(), 1e-14, &format!("{what}: mean"));
        let got = autograd::grad(&out.output, &[&x, &w, &b], Some(&seed), Default::default()).unwrap();
        let want = autograd::grad(&want, &[&x, &w, &b], Some(&seed), Default::default()).unwrap();
        for ((g, h), name) in got.iter().zip(&want).zip(["dx", "dweight", "dbias"]) {
            close(g.as_ref().unwrap(), h.as_ref().unwrap(), 1e-11, &format!("{what}: {name}"));
        }
    }
}

#[test]
fn batch_norm_is_bitwise_identical_at_one_and_two_threads() {
    let mut r = rng(5);
    // Planes of 143 values; single values (BatchNorm1d) and planes of 3, under a lane group.
    for shape in [vec![37, 6, 13, 11], vec![37, 150], vec![37, 40, 3]] {
        let x = Tensor::uniform(&shape, -1.0, 3.0, &mut r).requires_grad_();
        let seed = Tensor::uniform(&shape, -1.0, 1.0, &mut r);
        let run = |threads| {
            autograd::set_num_threads(threads).unwrap();
            let config = BatchNormConfig::new(shape[1]);
            let bn = if shape.len() == 4 { BatchNorm::new_2d(config) } else { BatchNorm::new_1d(config) };
            x.zero_grad();
            let y = bn.forward(&x).unwrap();
            y.backward_with(Some(&seed), Default::default()).unwrap();
            let p = bn.parameters();
            let sd = map(bn.state_dict());
            [y, x.grad().unwrap(), p[0].grad().unwrap(), p[1].grad().unwrap(), sd["running_mean"].clone(), sd["running_var"].clone()]
                .map(|t| t.to_vec::<f32>().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        };
        assert!(run(1) == run(2), "{shape:?}");
    }
}

#[test]
fn global_average_pooling_is_each_planes_sum_over_its_size() {
    // Enough planes for several parallel tasks, and a plane of one value (ResNet's head:
    // [256, 512, 1, 1]), including -0 (a sum from 0 gives +0, as PyTorch's).
    for (shape, n) in [([3usize, 1500, 2, 3], 6usize), ([2, 5000, 1, 1], 1)] {
        let mut v = Tensor::uniform(&shape, -1.0, 1.0, &mut rng(4)).to_vec::<f32>();
        v[0] = -0.0;
        let x = Tensor::from_vec(v.clone(), &shape).unwrap().requires_grad_();
        let y = ops::adaptive_avg_pool2d(&x, (1, 1)).unwrap();
        let want: Vec<f32> = v.chunks(n).map(|p| p.iter().fold(0.0f32, |s, &a| s + a) / n as f32).collect();
        assert_eq!(y.to_vec::<f32>().iter().map(|a| a.to_bits()).collect::<Vec<_>>(), want.iter().map(|a| a.to_bits()).collect::<Vec<_>>());
        let seed: Vec<f32> = (0..want.len()).map(|i| i as f32 - 7.0).collect();
        y.backward_with(Some(&Tensor::from_vec(seed.clone(), y.shape()).unwrap()), Default::default()).unwrap();
        let want_dx: Vec<f32> = seed.iter().flat_map(|&d| std::iter::repeat_n(0.0 + d / n as f32, n)).collect();
        assert_eq!(x.grad().unwrap().to_vec::<f32>(), want_dx);
    }
}

#[test]
fn adaptive_pooling_of_many_planes_matches_the_bins() {
    // Enough planes for several parallel tasks of several planes each; overlapping bins.
    let (planes, h, w, oh, ow) = (3000, 3, 5, 2, 3);
    let v = Tensor::uniform(&[planes, 1, h, w], -1.0, 1.0, &mut rng(6)).to_vec::<f32>();
    let x = Tensor::from_vec(v.clone(), &[planes, 1, h, w]).unwrap();
    let bin = |i: usize, n: usize, len: usize| (i * len / n, ((i + 1) * len).div_ceil(n));
    let (mut means, mut winners) = (Vec::new(), Vec::new());
    for p in v.chunks(h * w) {
        for i in 0..oh {
            for j in 0..ow {
                let ((y0, y1), (x0, x1)) = (bin(i, oh, h), bin(j, ow, w));
                let cells: Vec<usize> = (y0..y1).flat_map(|r| (x0..x1).map(move |c| r * w + c)).collect();
                means.push(cells.iter().fold(0.0f32, |s, &k| s + p[k]) / cells.len() as f32);
                winners.push(cells.iter().copied().fold(cells[0], |b, k| if p[k] > p[b] { k } else { b }) as i64);
            }
        }
    }
    let y = ops::adaptive_avg_pool2d(&x, (oh, ow)).unwrap().to_vec::<f32>();
    assert!(y.iter().zip(&means).all(|(a, b)| a.to_bits() == b.to_bits()));
    let (m, at) = ops::adaptive_max_pool2d_with_indices(&x, (oh, ow)).unwrap();
    assert_eq!(at.to_vec::<i64>(), winners);
    assert_eq!(m.to_vec::<f32>(), winners.iter().enumerate().map(|(o, &k)| v[o / (oh * ow) * h * w + k as usize]).collect::<Vec<_>>());
}
