//! The Module contract (buffers, modes, nesting, dtype conversion, freezing, strict and
//! non-strict loading) on a small stateful module, against the PyTorch module of the same
//! structure in tests/fixtures/stateful/make_fixture.py (a kept script, run by hand).

use autograd::testing::assert_gradcheck;
use autograd::{no_grad, rng, DType, Parameter, Tensor};
use nn::{Buffer, Linear, Module, Sequential, Training, Visitor};
use std::path::PathBuf;

/// A parameter, a running mean, an int64 counter, a non-persistent scratch buffer, a
/// child, and a forward that depends on the mode.
struct Stateful {
    scale: Parameter,
    running_mean: Buffer,
    count: Buffer,
    scratch: Buffer,
    child: Linear,
    training: Training,
}

impl Stateful {
    fn new(n: usize) -> Stateful {
        let mut r = rng(0);
        Stateful {
            scale: Parameter::new(&Tensor::ones(&[n])),
            running_mean: Buffer::new(&Tensor::zeros(&[n])),
            count: Buffer::new(&Tensor::full_i64(&[], 0)),
            scratch: Buffer::non_persistent(&Tensor::zeros(&[n])),
            child: Linear::new(n, n, &mut r).unwrap(),
            training: Training::default(),
        }
    }
}

impl Module for Stateful {
    fn forward(&self, x: &Tensor) -> nn::Result<Tensor> {
        let m = if self.training.get() {
            let m = x.mean_dims(&[0], false)?;
            no_grad(|| -> nn::Result<()> {
                let rm = self.running_mean.get();
                self.running_mean.set(&rm.mul_scalar(0.9).add(&m.mul_scalar(0.1))?)?;
                self.count.set(&self.count.get().add(&Tensor::full_i64(&[], 1))?)?;
                Ok(())
            })?;
            m
        } else {
            self.running_mean.get()
        };
        self.child.forward(&x.sub(&m)?.mul(&self.scale.tensor())?)
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        v.parameter("scale", &self.scale);
        v.buffer("running_mean", &self.running_mean);
        v.buffer("count", &self.count);
        v.buffer("scratch", &self.scratch);
        v.module("child", &self.child);
        v.training(&self.training);
    }
}

/// A module with a child and no state of its own.
struct Block {
    inner: Stateful,
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> nn::Result<Tensor> {
        Ok(self.inner.forward(x)?.add(x)?)
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        v.module("inner", &self.inner);
    }
}

fn net() -> Sequential {
    Sequential::new().append(Stateful::new(3)).append(nn::ReLU).append(Block { inner: Stateful::new(3) })
}

fn fixture(name: &str) -> Vec<(String, Tensor)> {
    nn::load_npz(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stateful").join(name)).unwrap()
}

fn get<'a>(entries: &'a [(String, Tensor)], key: &str) -> &'a Tensor {
    &entries.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("{key} missing")).1
}

/// Same keys in the same order, same dtypes and shapes, values within `tol`.
fn assert_same_state(ours: &[(String, Tensor)], theirs: &[(String, Tensor)], tol: f64) {
    let keys = |v: &[(String, Tensor)]| v.iter().map(|(k, t)| (k.clone(), t.dtype(), t.shape().to_vec())).collect::<Vec<_>>();
    assert_eq!(keys(ours), keys(theirs));
    for ((k, a), (_, b)) in ours.iter().zip(theirs) {
        let d = a.max_abs_diff(b).unwrap();
        assert!(d <= tol, "{k}: off by {d}");
    }
}

#[test]
fn names_dtypes_and_order_are_pytorchs() {
    let net = net();
    net.to_dtype(DType::F64).unwrap();
    assert_same_state(
        &net.state_dict().iter().map(|(k, t)| (k.clone(), t.zeros_like())).collect::<Vec<_>>(),
        &{
            let mut init = fixture("init.npz");
            init.iter_mut().for_each(|(_, t)| *t = t.zeros_like());
            init
        },
        0.0,
    );
    let names = |v: Vec<(String, &dyn Module)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(net.named_children()), ["0", "1", "2"]);
    assert_eq!(names(net.named_descendants()), ["0", "0.child", "1", "2", "2.inner", "2.inner.child"]);
    assert_eq!(names(net.named_modules()), ["", "0", "0.child", "1", "2", "2.inner", "2.inner.child"]);
    assert_eq!(names(net.named_children()[2].1.named_descendants()), ["inner", "inner.child"]);
    let buffers: Vec<String> = net.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(buffers, ["0.running_mean", "0.count", "0.scratch", "2.inner.running_mean", "2.inner.count", "2.inner.scratch"]);
    assert_eq!(net.named_parameters().len(), 6);
    assert!(net
        .describe()
        .starts_with("Sequential(\n  (0): Stateful(\n    (child): Linear(in_features=3, out_features=3, bias=True)\n  )\n"));
}

#[test]
fn train_and_eval_match_pytorch_with_buffers_updated() {
    let net = net();
    net.to_dtype(DType::F64).unwrap();
    // Floats converted, the counter kept int64.
    assert_eq!(net.named_buffers()[1].1.dtype(), DType::I64);
    assert!(net.parameters().iter().all(|p| p.dtype() == DType::F64));
    net.load_state_dict(&fixture("init.npz")).unwrap();
    let io = fixture("io.npz");
    assert!(net.is_training());
    for i in 0..3 {
        let y = net.forward(get(&io, &format!("x{i}"))).unwrap();
        assert!(y.max_abs_diff(get(&io, &format!("y{i}"))).unwrap() < 1e-12, "train step {i}");
    }
    net.eval();
    assert!(!net.is_training() && !net.named_children()[2].1.is_training(), "eval reaches every module");
    let y = net.forward(get(&io, "xe")).unwrap();
    assert!(y.max_abs_diff(get(&io, "ye")).unwrap() < 1e-12, "eval");
    // Running means and counters as PyTorch's after three training forwards; the eval
    // forward changed nothing.
    assert_same_state(&net.state_dict(), &fixture("after.npz"), 1e-12);
    assert_eq!(get(&net.state_dict(), "2.inner.count").to_vec::<i64>(), [3]);
    // The other direction: our file loads into PyTorch (make_fixture.py --check FILE).
    if let Ok(path) = std::env::var("CONVNET_STATEFUL_OUT") {
        nn::save_state_dict(&net, std::path::Path::new(&path)).unwrap();
    }
    net.train();
    assert!(net.is_training());
}

#[test]
fn strict_and_non_strict_loading() {
    let net = net();
    net.to_dtype(DType::F64).unwrap();
    let mut sd = fixture("after.npz");
    sd.retain(|(k, _)| k != "0.count");
    sd.push(("extra.weight".into(), Tensor::zeros(&[1])));
    // PyTorch: _IncompatibleKeys(missing_keys=['0.count'], unexpected_keys=['extra.weight']).
    let e = net.load_state_dict(&sd).unwrap_err().to_string();
    assert_eq!(e, "load_state_dict: missing key '0.count'; unexpected key 'extra.weight'");
    assert_eq!(net.state_dict()[0].1.to_vec::<f64>(), [1.0, 1.0, 1.0], "a refused load changes nothing");
    let keys = net.load_state_dict_non_strict(&sd).unwrap();
    assert_eq!((keys.missing_keys, keys.unexpected_keys), (vec!["0.count".to_string()], vec!["extra.weight".to_string()]));
    assert_same_state(&net.state_dict()[..1], &sd[..1], 0.0);
    assert_eq!(get(&net.state_dict(), "0.count").to_vec::<i64>(), [0], "a missing key keeps its value");
    // Shape, non-finite and out-of-range integer problems are errors either way, all listed.
    let mut bad = fixture("after.npz");
    bad[0].1 = Tensor::zeros_dtype(&[4], DType::F64);
    bad[1].1 = Tensor::full_dtype(&[3], f64::NAN, DType::F64);
    bad[2].1 = Tensor::full_dtype(&[], 1e30, DType::F64);
    let e = net.load_state_dict_non_strict(&bad).unwrap_err().to_string();
    assert_eq!(
        e,
        "load_state_dict: '0.scale' has shape [4] but the module expects [3]; '0.running_mean' holds NaN at index 0 (a non-finite value); \
         '0.count' does not convert to the module's i64: to_dtype: 1000000000000000000000000000000 has no i64 value (casting f64 to i64)"
    );
    // A float loads into the int64 counter truncated toward zero, as PyTorch's copy_.
    let mut ok = fixture("after.npz");
    ok[2].1 = Tensor::full_dtype(&[], -7.9, DType::F64);
    net.load_state_dict(&ok).unwrap();
    assert_eq!(get(&net.state_dict(), "0.count").to_vec::<i64>(), [-7]);
}

#[test]
fn a_converted_model_gradchecks_in_f64_and_frozen_parameters_get_no_gradient() {
    let net = net();
    net.to_dtype(DType::F64).unwrap();
    net.load_state_dict(&fixture("after.npz")).unwrap();
    net.eval();
    let x = Tensor::uniform_dtype(&[4, 3], -1.0, 1.0, DType::F64, &mut rng(2)).requires_grad_();
    assert_gradcheck(|v| Ok(net.forward(&v[0]).map_err(|e| autograd::Error::invalid("net", e.to_string()))?.tanh()), &[x.clone()]);
    // Freeze the first block's child: backward computes nothing for it.
    net.named_children()[0].1.named_children()[0].1.requires_grad_(false);
    net.zero_grad();
    net.forward(&x).unwrap().sum().backward().unwrap();
    let grads: Vec<(String, bool)> = net.named_parameters().into_iter().map(|(n, p)| (n, p.grad().is_some())).collect();
    let want = [("0.scale", true), ("0.child.weight", false), ("0.child.bias", false), ("2.inner.scale", true)];
    for (n, g) in want {
        assert_eq!(grads.iter().find(|(k, _)| k == n).unwrap().1, g, "{n}");
    }
}

#[test]
fn a_shared_parameter_is_listed_once_and_saved_under_each_name() {
    let a = Linear::new(2, 2, &mut rng(0)).unwrap();
    let b = Linear { weight: a.weight.clone(), bias: None, in_features: 2, out_features: 2 };
    let net = Sequential::new().append(a).append(b);
    assert_eq!(net.named_parameters().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["0.weight", "0.bias"]);
    assert_eq!(net.state_dict().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["0.weight", "0.bias", "1.weight"]);
    assert!(net.to_dtype(DType::I64).unwrap_err().to_string().starts_with("Module::to_dtype: "));
}
