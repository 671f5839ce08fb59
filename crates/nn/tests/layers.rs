//! Layers, initialisers, optimisers and state dicts, against PyTorch's numbers.

use autograd::{rng, Tensor};
use nn::optim::{AdamConfig, SgdConfig};
use nn::{init, Adam, Conv2d, Conv2dConfig, Linear, Module, Optimizer, Sequential, Sgd};

/// Three steps of `loss = 0.1 * sum(w^3) + sum(w * arange(6))` from the same start, in
/// f64. The expected values were printed by PyTorch 2.15 running
/// `tests/fixtures/optim_ref.py`, whose core is:
///
/// ```python
/// w = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=torch.float64, requires_grad=True)
/// opt = make_opt([w])
/// for t in range(3):
///     opt.zero_grad()
///     ((w * w * w).sum() * 0.1 + (w * torch.arange(6.).reshape(2, 3)).sum()).backward()
///     opt.step()
/// ```
fn run(mut make: impl FnMut(Vec<autograd::Parameter>) -> Box<dyn Optimizer>) -> Vec<f64> {
    let w = autograd::Parameter::new(&Tensor::from_vec(vec![0.5f64, -1.0, 2.0, 1.5, 0.25, -0.75], &[2, 3]).unwrap());
    let k = Tensor::arange_dtype(0.0, 6.0, 1.0, autograd::DType::F64).unwrap().reshape(&[2, 3]).unwrap();
    let mut opt = make(vec![w.clone()]);
    for _ in 0..3 {
        opt.zero_grad();
        let x = w.tensor();
        let loss = x.mul(&x).unwrap().mul(&x).unwrap().sum().mul_scalar(0.1).add(&x.mul(&k).unwrap().sum()).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
    }
    w.data().to_vec()
}

fn close(got: &[f64], want: &[f64]) {
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
}

#[test]
fn sgd_matches_pytorch() {
    close(
        &run(|p| Box::new(Sgd::new(p, 0.1).unwrap())),
        &[0.47816006261019584, -1.41656507938747, 1.13691979317248, 0.4751091218761958, -0.9617268885058805, -2.4138535498780698],
    );
    close(
        &run(|p| Box::new(Sgd::with(p, SgdConfig::new(0.1).momentum(0.9)).unwrap())),
        &[0.4589811924267583, -1.7726555645274704, 0.3551379410124799, -0.4454693711122416, -2.0254718505423406, -3.848195626662851],
    );
    close(
        &run(|p| Box::new(Sgd::with(p, SgdConfig::new(0.1).momentum(0.9).nesterov(true).weight_decay(0.01)).unwrap())),
        &[0.43891258078873296, -2.174830364253206, -0.21397592064482587, -1.206503508397565, -3.1423867683411246, -5.670614414847957],
    );
}

#[test]
fn adam_matches_pytorch() {
    close(
        &run(|p| Box::new(Adam::new(p, 0.1).unwrap())),
        &[0.21322039559342343, -1.3003532924387942, 1.7004160853039507, 1.2002501588781895, -0.04997641994694217, -1.0500877779456825],
    );
    close(
        &run(|p| Box::new(Adam::with(p, AdamConfig::new(0.05).betas(0.8, 0.99).eps(1e-6).weight_decay(0.1)).unwrap())),
        &[0.352314155730876, -1.1501979602714834, 1.8501928470492284, 1.3501285668113228, 0.10002708964551207, -0.9000353582446168],
    );
}

#[test]
fn optimizer_state_round_trips() {
    let w = autograd::Parameter::new(&Tensor::ones(&[3]));
    let mut a = Adam::new(vec![w.clone()], 0.1).unwrap();
    w.tensor().mul_scalar(2.0).sum().backward().unwrap();
    a.step().unwrap();
    let st = a.state_dict();
    let mut b = Adam::new(vec![w.clone()], 0.1).unwrap();
    b.load_state_dict(&st).unwrap();
    assert_eq!(
        b.state_dict().iter().map(|(k, t)| (k.clone(), t.to_vec::<f64>())).collect::<Vec<_>>(),
        st.iter().map(|(k, t)| (k.clone(), t.to_vec::<f64>())).collect::<Vec<_>>()
    );
}

#[test]
fn default_init_bounds_follow_pytorch() {
    let mut r = rng(0);
    // Conv2d(6, 16, 5): fan_in = 150, weights and bias uniform in +-1/sqrt(150).
    let c = Conv2d::new(Conv2dConfig::new(6, 16, 5), &mut r).unwrap();
    let bound = 1.0 / 150f32.sqrt();
    let w = c.weight.data().to_vec::<f32>();
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(w.iter().any(|v| v.abs() > 0.9 * bound), "not spread over the range");
    assert!(c.bias.as_ref().unwrap().data().to_vec::<f32>().iter().all(|v| v.abs() <= bound));
    // Xavier-uniform on Linear(400, 120): bound sqrt(6 / 520).
    let l = Linear::new(400, 120, &mut r).unwrap();
    init::xavier_uniform(&l.weight, 1.0, &mut r).unwrap();
    let b = (6.0f32 / 520.0).sqrt();
    let w = l.weight.data().to_vec::<f32>();
    assert!(w.iter().all(|v| v.abs() <= b) && w.iter().any(|v| v.abs() > 0.95 * b));
    let mean = w.iter().sum::<f32>() / w.len() as f32;
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert_eq!(init::fans(&[16, 6, 5, 5]), (150, 400));
}

#[test]
fn inits_are_reproducible_from_the_seed() {
    let a = Linear::new(10, 5, &mut rng(9)).unwrap().weight.data().to_vec::<f32>();
    let b = Linear::new(10, 5, &mut rng(9)).unwrap().weight.data().to_vec::<f32>();
    let c = Linear::new(10, 5, &mut rng(10)).unwrap().weight.data().to_vec::<f32>();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn a_custom_layer_is_a_few_lines() {
    /// `y = x * scale`, one parameter.
    struct Scale(autograd::Parameter);
    impl Module for Scale {
        fn forward(&self, x: &Tensor) -> nn::Result<Tensor> {
            Ok(x.mul(&self.0.tensor())?)
        }
        fn visit<'a>(&'a self, v: &mut dyn nn::Visitor<'a>) {
            v.parameter("scale", &self.0);
        }
    }
    let net = Sequential::new().append(Scale(autograd::Parameter::new(&Tensor::full(&[1], 3.0)))).append(nn::ReLU);
    let y = net.forward(&Tensor::from_vec(vec![1.0f32, -2.0], &[2]).unwrap()).unwrap();
    assert_eq!(y.to_vec::<f32>(), vec![3.0, 0.0]);
    assert_eq!(net.state_dict()[0].0, "0.scale");
    y.sum().backward().unwrap();
    assert_eq!(net.parameters()[0].grad().unwrap().to_vec::<f32>(), vec![1.0]);
    assert!(net.describe().contains("(0): Scale()"));
    assert_eq!(net.num_parameters(), 1);
}

#[test]
fn conv2d_layer_validates_its_config() {
    let e = Conv2d::new(Conv2dConfig::new(3, 4, 3).groups(2), &mut rng(0)).err().unwrap().to_string();
    assert!(e.contains("must be divisible by groups 2"), "{e}");
    let c = Conv2d::new(Conv2dConfig::new(4, 4, 3).groups(2).bias(false).padding(1), &mut rng(0)).unwrap();
    assert_eq!(c.weight.shape(), vec![4, 2, 3, 3]);
    assert_eq!(c.describe(), "Conv2d(4, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), groups=2, bias=False)");
    let y = c.forward(&Tensor::ones(&[1, 4, 5, 5])).unwrap();
    assert_eq!(y.shape(), &[1, 4, 5, 5]);
}

#[test]
fn sequential_fuses_conv_and_activation_with_the_same_results() {
    for (act, pool) in [(nn::Act::Sigmoid, nn::Pool::Avg), (nn::Act::Relu, nn::Pool::Max)] {
        let net = nn::lenet(pool, act, &mut rng(3)).unwrap();
        let x = Tensor::rand(&[5, 1, 28, 28], &mut rng(4));
        let run = |fused: bool| {
            net.zero_grad();
            let y = if fused { net.forward(&x).unwrap() } else { net.layers().iter().fold(x.clone(), |h, l| l.forward(&h).unwrap()) };
            y.mul(&y).unwrap().sum().backward().unwrap();
            let grads: Vec<Vec<u32>> =
                net.parameters().iter().map(|p| p.grad().unwrap().to_vec::<f32>().iter().map(|v| v.to_bits()).collect()).collect();
            (y.to_vec::<f32>().iter().map(|v| v.to_bits()).collect::<Vec<_>>(), grads)
        };
        assert!(run(true) == run(false));
    }
    // The op a 3x3 convolution followed by `rest` puts last on the tape, and its shape.
    let top_op = |rest: Vec<Box<dyn Module>>, side: usize| {
        let mut net = Sequential::new().append(Conv2d::new(Conv2dConfig::new(1, 2, 3), &mut rng(0)).unwrap());
        rest.into_iter().for_each(|l| net.push(l));
        let y = net.forward(&Tensor::rand(&[1, 1, side, side], &mut rng(1)).requires_grad_()).unwrap();
        (y.grad_fn_name(), y.shape().to_vec())
    };
    let pool = |k: usize| ops::Pool2dArgs::new(k);
    // The fused op is on the tape under its own name ...
    assert_eq!(top_op(vec![Box::new(nn::Sigmoid)], 5), (Some("conv2d_fused"), vec![1, 2, 3, 3]));
    // ... and so is a following 2x2 average or max pooling: the pooled tensor is its output.
    let avg: Vec<Box<dyn Module>> = vec![Box::new(nn::Sigmoid), Box::new(nn::AvgPool2d::new(pool(2)))];
    assert_eq!(top_op(avg, 6), (Some("conv2d_fused"), vec![1, 2, 2, 2]));
    let max: Vec<Box<dyn Module>> = vec![Box::new(nn::ReLU), Box::new(nn::MaxPool2d::new(pool(2)))];
    assert_eq!(top_op(max, 6), (Some("conv2d_fused"), vec![1, 2, 2, 2]));
    // A pooling the epilogue does not cover (3x3) stays its own op.
    let avg3: Vec<Box<dyn Module>> = vec![Box::new(nn::Sigmoid), Box::new(nn::AvgPool2d::new(pool(3)))];
    assert_eq!(top_op(avg3, 8).0, Some("avg_pool2d"));
    // A training-mode batch norm joins the convolution and the activation in one op; the
    // 2x2 pooling after them stays a layer in training mode.
    let bn = || Box::new(nn::BatchNorm::new_2d(nn::BatchNormConfig::new(2))) as Box<dyn Module>;
    assert_eq!(top_op(vec![bn(), Box::new(nn::ReLU)], 5), (Some("conv2d_bn_train"), vec![1, 2, 3, 3]));
    assert_eq!(top_op(vec![bn(), Box::new(nn::ReLU), Box::new(nn::MaxPool2d::new(pool(2)))], 6).0, Some("max_pool2d"));
    assert_eq!(top_op(vec![bn()], 5).0, Some("conv2d_bn_train"));
}
