//! Issue 24's evaluation-mode fusion: a convolution followed by `BatchNorm2d` in eval mode
//! runs as one convolution with the batch norm folded into its weight and bias, in
//! `Sequential` and in `Residual`. The values and every gradient (the input's, both
//! layers' parameters') agree with the layers run one by one (1e-12 in f64, 1e-6 relative
//! to the output's scale in f32: only the rounding differs), gradcheck passes through the
//! folded path. In training mode the convolution, batch norm and activation run as one op
//! (`ops::conv2d_bn_train`), bitwise the layers in turn: values, gradients and the running
//! statistics.

use autograd::testing::assert_gradcheck;
use autograd::{rng, DType, Tensor};
use nn::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, MaxPool2d, Module, ReLU, Residual, Sequential};
use ops::Pool2dArgs;

/// Random running statistics and affine parameters, so the fold is not the identity.
fn randomise(bn: &BatchNorm, seed: u64) {
    let c = bn.config.num_features;
    let mut r = rng(seed);
    bn.running_mean.as_ref().unwrap().set(&Tensor::uniform(&[c], -0.5, 0.5, &mut r)).unwrap();
    bn.running_var.as_ref().unwrap().set(&Tensor::uniform(&[c], 0.5, 2.0, &mut r)).unwrap();
    bn.weight.as_ref().unwrap().set(&Tensor::uniform(&[c], 0.5, 1.5, &mut r)).unwrap();
    bn.bias.as_ref().unwrap().set(&Tensor::uniform(&[c], -0.5, 0.5, &mut r)).unwrap();
}

fn net(seed: u64) -> Sequential {
    let mut r = rng(seed);
    let bn = BatchNorm::new_2d(BatchNormConfig::new(5));
    randomise(&bn, seed + 1);
    Sequential::new()
        .append(Conv2d::new(Conv2dConfig::new(3, 5, 3).padding(1), &mut r).unwrap())
        .append(bn)
        .append(ReLU)
        .append(MaxPool2d::new(Pool2dArgs::new(2).stride(2)))
}

/// The layers of `net` one after another (no fusion).
fn layer_by_layer(net: &Sequential, x: &Tensor) -> Tensor {
    net.layers().iter().fold(x.clone(), |h, l| l.forward(&h).unwrap())
}

/// Outputs and the gradients of the input and of every parameter, from `f`.
fn run(params: &[Tensor], x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Vec<Tensor> {
    params.iter().chain([x]).for_each(|p| p.zero_grad());
    let y = f(x);
    y.mul(&y).unwrap().sum().backward().unwrap();
    let mut out = vec![y.detach()];
    out.extend(params.iter().chain([x]).map(|p| p.grad().unwrap()));
    out
}

fn assert_close(a: &[Tensor], b: &[Tensor], rel: f64, what: &str) {
    for (i, (p, q)) in a.iter().zip(b).enumerate() {
        let scale = q.abs().max().unwrap().item().unwrap().max(1.0);
        let d = p.max_abs_diff(q).unwrap();
        assert!(d <= rel * scale, "{what}: result {i} differs by {d} (scale {scale})");
    }
}

#[test]
fn sequential_folds_eval_batch_norm_into_the_convolution() {
    for (dtype, rel) in [(DType::F64, 1e-12), (DType::F32, 1e-6)] {
        let net = net(3);
        net.to_dtype(dtype).unwrap();
        net.eval();
        let params: Vec<Tensor> = net.parameters().iter().map(|p| p.tensor()).collect();
        let x = Tensor::uniform_dtype(&[4, 3, 8, 8], -1.0, 1.0, dtype, &mut rng(4)).requires_grad_();
        let fused = run(&params, &x, |x| net.forward(x).unwrap());
        let plain = run(&params, &x, |x| layer_by_layer(&net, x));
        assert_close(&fused, &plain, rel, &format!("{dtype:?}"));
        // The fold is a real change of the sums: not bitwise the layers in turn in f32.
        if dtype == DType::F32 {
            assert_ne!(fused[0].to_vec::<f32>(), plain[0].to_vec::<f32>(), "the eval path did not fold");
        }
    }
}

#[test]
fn the_folded_path_gradchecks() {
    let net = net(5);
    net.to_dtype(DType::F64).unwrap();
    net.eval();
    let x = Tensor::uniform_dtype(&[2, 3, 4, 4], -1.0, 1.0, DType::F64, &mut rng(6)).requires_grad_();
    assert_gradcheck(|v| net.forward(&v[0]).map_err(|e| autograd::Error::invalid("folded", e.to_string())), &[x]);
}

/// Every value of a training step as bits: the output, the gradients, the running statistics.
fn step_bits(module: &dyn Module, x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Vec<Vec<u32>> {
    let params: Vec<Tensor> = module.parameters().iter().map(|p| p.tensor()).collect();
    let mut all = run(&params, x, f);
    all.extend(module.state_dict().into_iter().filter(|(k, _)| k.contains("running")).map(|(_, t)| t));
    all.iter().map(|t| t.to_vec::<f32>().iter().map(|v| v.to_bits()).collect()).collect()
}

#[test]
fn training_mode_is_the_layers_in_turn_bitwise() {
    // Two copies of the same state, so both see the same running statistics update. The
    // fused run is the convolution, batch norm and ReLU; the pooling stays a layer.
    let (fused_net, other) = (net(7), net(7));
    let x = Tensor::uniform(&[4, 3, 8, 8], -1.0, 1.0, &mut rng(8)).requires_grad_();
    let fused = step_bits(&fused_net, &x, |x| fused_net.forward(x).unwrap());
    let plain = step_bits(&other, &x, |x| layer_by_layer(&other, x));
    assert!(fused == plain);
    assert_eq!(fused.len(), 1 + 4 + 1 + 2, "output, 4 parameter gradients, the input's, 2 running statistics");
}

#[test]
fn residual_in_training_mode_is_the_layers_in_turn_bitwise() {
    for (cin, shortcut, stride) in [(6, false, 1), (4, true, 2)] {
        let (block, other) = (
            Residual::new(cin, 6, shortcut, stride, &mut rng(13)).unwrap(),
            Residual::new(cin, 6, shortcut, stride, &mut rng(13)).unwrap(),
        );
        let x = Tensor::uniform(&[3, cin, 6, 6], -1.0, 1.0, &mut rng(14)).requires_grad_();
        let fused = step_bits(&block, &x, |x| block.forward(x).unwrap());
        let plain = step_bits(&other, &x, |x| {
            let b = &other;
            let y = b.bn1.forward(&b.conv1.forward(x).unwrap()).unwrap().relu();
            let y = b.bn2.forward(&b.conv2.forward(&y).unwrap()).unwrap();
            let s = b.conv3.as_ref().map_or(x.clone(), |c| c.forward(x).unwrap());
            y.add(&s).unwrap().relu()
        });
        assert!(fused == plain, "stride {stride}");
    }
}

#[test]
fn residual_folds_both_batch_norms_in_eval_mode() {
    for (cin, shortcut, stride) in [(6, false, 1), (4, true, 2)] {
        let block = Residual::new(cin, 6, shortcut, stride, &mut rng(9)).unwrap();
        randomise(&block.bn1, 10);
        randomise(&block.bn2, 11);
        block.to_dtype(DType::F64).unwrap();
        block.eval();
        let params: Vec<Tensor> = block.parameters().iter().map(|p| p.tensor()).collect();
        let x = Tensor::uniform_dtype(&[3, cin, 6, 6], -1.0, 1.0, DType::F64, &mut rng(12)).requires_grad_();
        let fused = run(&params, &x, |x| block.forward(x).unwrap());
        let plain = run(&params, &x, |x| {
            let y = block.bn1.forward(&block.conv1.forward(x).unwrap()).unwrap().relu();
            let y = block.bn2.forward(&block.conv2.forward(&y).unwrap()).unwrap();
            let s = block.conv3.as_ref().map_or(x.clone(), |c| c.forward(x).unwrap());
            y.add(&s).unwrap().relu()
        });
        assert_close(&fused, &plain, 1e-12, &format!("stride {stride}"));
    }
}
