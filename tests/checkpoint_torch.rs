//! LeNet checkpoints across frameworks, against fixtures made by PyTorch
//! (tests/fixtures/lenet_torch/make_fixture.py and make_safetensors.py): PyTorch's weights,
//! saved with numpy.savez, savez_compressed and safetensors.torch.save_file, load into our
//! LeNet and give PyTorch's logits; and our saved weights (.npz and .safetensors), loaded into
//! PyTorch, gave the logits we compute.

use autograd::DType;
use autograd::{no_grad, rng, Tensor};
use nn::{lenet, load, load_npz, save, Act, DataLoader, FashionMnist, Module, Pool};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/lenet_torch").join(name)
}

fn expected(key: &str) -> Tensor {
    load_npz(&fixture("expected.npz")).unwrap().into_iter().find(|(k, _)| k == key).unwrap().1
}

fn net_from(path: &Path) -> nn::Sequential {
    let net = lenet(Pool::Avg, Act::Sigmoid, &mut rng(123)).unwrap();
    nn::load_state_dict_file(&net, path).unwrap();
    net
}

/// Logits for the first 64 test images and accuracy on the first 1000.
fn evaluate(net: &nn::Sequential) -> (Tensor, f64) {
    let (_, test) = FashionMnist::load(root().join("data/fashion-mnist")).unwrap();
    let test = test.limit(1000);
    no_grad(|| {
        let mut batches = DataLoader::new(&test, 64, false, 0).unwrap().epoch(0);
        let (x, _) = batches.next().unwrap().unwrap();
        let logits = net.forward(&x).unwrap();
        let (_, acc) = convnet::lenet::evaluate(net, &test, 1000).unwrap();
        (logits, acc)
    })
}

#[test]
fn pytorch_weights_give_pytorch_logits() {
    let want = expected("torch_logits");
    let want_acc = expected("torch_acc_1000").item().unwrap();
    for file in ["torch_lenet.npz", "torch_lenet_compressed.npz", "torch_lenet.safetensors"] {
        let (logits, acc) = evaluate(&net_from(&fixture(file)));
        let diff = logits.max_abs_diff(&want).unwrap();
        assert!(diff < 1e-4, "{file}: logits differ from PyTorch's by {diff}");
        // PyTorch computed its accuracy in f32; one image more or less would be 1e-3.
        assert!((acc - want_acc).abs() < 1e-6, "{file}: accuracy {acc} vs PyTorch's {want_acc}");
    }
}

#[test]
fn our_weights_give_the_logits_pytorch_computed_from_them() {
    let (logits, _) = evaluate(&net_from(&fixture("rust_lenet.npz")));
    let diff = logits.max_abs_diff(&expected("rust_logits")).unwrap();
    assert!(diff < 1e-4, "logits differ from PyTorch's by {diff}");
}

/// `rust_lenet.safetensors` is our save of rust_lenet.npz's weights (UPDATE_TORCH_FIXTURES=1
/// rewrites it); `make_safetensors.py --check` loaded it in PyTorch with
/// `load_state_dict(strict=True)` and got the logits PyTorch computed from rust_lenet.npz,
/// which are ours (the test above).
#[test]
fn our_safetensors_give_the_logits_pytorch_computed_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rust_lenet.safetensors");
    save(&path, &load_npz(&fixture("rust_lenet.npz")).unwrap()).unwrap();
    if std::env::var_os("UPDATE_TORCH_FIXTURES").is_some() {
        std::fs::copy(&path, fixture("rust_lenet.safetensors")).unwrap();
    }
    assert!(std::fs::read(&path).unwrap() == std::fs::read(fixture("rust_lenet.safetensors")).unwrap(), "not the bytes PyTorch checked");
    let (logits, _) = evaluate(&net_from(&fixture("rust_lenet.safetensors")));
    let diff = logits.max_abs_diff(&expected("rust_logits")).unwrap();
    assert!(diff < 1e-4, "logits differ from PyTorch's by {diff}");
}

fn by_name(path: &Path) -> Vec<(String, Tensor)> {
    let mut v = load(path).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Same names, dtypes, shapes and values.
fn assert_same(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    assert_eq!(a.len(), b.len());
    for ((k, x), (l, y)) in a.iter().zip(b) {
        assert_eq!((k, x.dtype(), x.shape()), (l, y.dtype(), y.shape()));
        assert_eq!(x.to_vec::<f64>(), y.to_vec::<f64>(), "{k}");
    }
}

/// A PyTorch BatchNorm2d state_dict holds an int64 `num_batches_tracked` (2 here): it loads as
/// an i64 tensor from safetensors.torch.save_file's file and from numpy.savez's alike. Our
/// re-saves of it, `rust_batchnorm.{safetensors,npz}` (UPDATE_TORCH_FIXTURES=1 rewrites them),
/// keep every dtype: `make_safetensors.py --check` loaded them in PyTorch and found
/// `num_batches_tracked` int64 and every value PyTorch saved.
#[test]
fn pytorch_batchnorm_state_dicts_keep_their_int64_counter() {
    let (st, npz) = (by_name(&fixture("torch_batchnorm.safetensors")), by_name(&fixture("torch_batchnorm.npz")));
    let names: Vec<&str> = st.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["bias", "num_batches_tracked", "running_mean", "running_var", "weight"]);
    let counter = &st[1].1;
    assert_eq!((counter.dtype(), counter.shape(), counter.to_vec::<i64>()), (DType::I64, &[] as &[usize], vec![2]));
    assert!(st.iter().filter(|(k, _)| k != "num_batches_tracked").all(|(_, t)| t.dtype() == DType::F32));
    assert_same(&st, &npz);
    assert_eq!(st[3].1.shape(), &[3]);
    assert!(st[3].1.to_vec::<f32>().iter().all(|&v| v != 1.0), "running_var was updated by two batches");

    let dir = tempfile::tempdir().unwrap();
    for name in ["rust_batchnorm.safetensors", "rust_batchnorm.npz"] {
        let path = dir.path().join(name);
        save(&path, &st).unwrap();
        if std::env::var_os("UPDATE_TORCH_FIXTURES").is_some() {
            std::fs::copy(&path, fixture(name)).unwrap();
        }
        assert!(std::fs::read(&path).unwrap() == std::fs::read(fixture(name)).unwrap(), "{name}: not the bytes PyTorch checked");
        assert_same(&by_name(&path), &st);
    }
}

#[test]
fn state_dict_keys_match_pytorch() {
    let net = lenet(Pool::Avg, Act::Sigmoid, &mut rng(0)).unwrap();
    let ours: Vec<(String, Vec<usize>)> = net.state_dict().into_iter().map(|(k, t)| (k, t.shape().to_vec())).collect();
    let theirs: Vec<(String, Vec<usize>)> =
        load_npz(&fixture("torch_lenet.npz")).unwrap().into_iter().map(|(k, t)| (k, t.shape().to_vec())).collect();
    assert_eq!(ours, theirs);
    assert_eq!(ours[0], ("0.weight".to_string(), vec![6, 1, 5, 5]));
    assert_eq!(ours[4], ("7.weight".to_string(), vec![120, 400]));
}

#[test]
fn mismatched_state_dicts_list_every_problem() {
    let net = lenet(Pool::Avg, Act::Sigmoid, &mut rng(0)).unwrap();
    let mut sd = net.state_dict();
    sd.retain(|(k, _)| k != "3.bias");
    sd[0].1 = Tensor::zeros(&[6, 1, 3, 3]);
    sd.push(("12.weight".into(), Tensor::zeros(&[1])));
    sd.push(("_train.epoch".into(), Tensor::zeros(&[])));
    let e = net.load_state_dict(&sd).unwrap_err().to_string();
    assert_eq!(
        e,
        "load_state_dict: '0.weight' has shape [6, 1, 3, 3] but the module expects [6, 1, 5, 5]; missing key '3.bias'; unexpected key '12.weight'"
    );
}
