//! The i64 and bool tensor ops against PyTorch's values (tests/fixtures/int_ops/
//! make_fixture.py, run by hand): each case's inputs and PyTorch's result are read from
//! int_ops.npz with their dtypes, the op runs here on the same inputs, and the result must
//! be equal in dtype, shape and every element (floats to 1e-12 where they are computed).

use autograd::{DType, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture() -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/int_ops/int_ops.npz");
    nn::load_npz(&path).unwrap().into_iter().collect()
}

struct Cases(HashMap<String, Tensor>);

impl Cases {
    fn get(&self, key: &str) -> &Tensor {
        self.0.get(key).unwrap_or_else(|| panic!("{key} missing from the fixture"))
    }

    /// Checks `got` against `NAME.out` (or `NAME.outK`): dtype, shape and values exactly
    /// (NaN equals NaN).
    fn check(&self, name: &str, out: &str, got: &Tensor) {
        let want = self.get(&format!("{name}.{out}"));
        assert_eq!((got.dtype(), got.shape()), (want.dtype(), want.shape()), "{name}: dtype and shape");
        match want.dtype() {
            DType::I64 => assert_eq!(got.to_vec::<i64>(), want.to_vec::<i64>(), "{name}"),
            DType::Bool => assert_eq!(got.to_vec::<bool>(), want.to_vec::<bool>(), "{name}"),
            _ => {
                for (g, w) in got.to_vec::<f64>().iter().zip(want.to_vec::<f64>()) {
                    assert!(g == &w || (g.is_nan() && w.is_nan()), "{name}: {g} != {w}");
                }
            }
        }
    }

    fn close(&self, name: &str, out: &str, got: &Tensor) {
        let want = self.get(&format!("{name}.{out}"));
        assert_eq!((got.dtype(), got.shape()), (want.dtype(), want.shape()), "{name}: dtype and shape");
        let d = got.max_abs_diff(want).unwrap();
        assert!(d <= 1e-12, "{name}: off by {d}");
    }
}

#[test]
fn integer_arithmetic_and_sums() {
    let c = Cases(fixture());
    for (name, f) in [
        ("add", Tensor::add as fn(&Tensor, &Tensor) -> autograd::Result<Tensor>),
        ("sub", Tensor::sub),
        ("mul", Tensor::mul),
        ("floor_divide", Tensor::floor_divide),
        ("remainder", Tensor::remainder),
        ("div_i64", Tensor::div),
    ] {
        c.check(name, "out", &f(c.get(&format!("{name}.a")), c.get(&format!("{name}.b"))).unwrap());
    }
    c.check("sum_i64", "out", &c.get("sum_i64.a").sum());
    c.check("sum_bool", "out", &c.get("sum_bool.a").sum());
}

#[test]
fn comparisons_where_and_masked_fill() {
    let c = Cases(fixture());
    for (op, f) in [
        ("eq", Tensor::eq as fn(&Tensor, &Tensor) -> autograd::Result<Tensor>),
        ("ne", Tensor::ne),
        ("lt", Tensor::lt),
        ("le", Tensor::le),
        ("gt", Tensor::gt),
        ("ge", Tensor::ge),
    ] {
        for dt in ["f32", "i64"] {
            let name = format!("{op}_{dt}");
            c.check(&name, "out", &f(c.get(&format!("{name}.a")), c.get(&format!("{name}.b"))).unwrap());
        }
    }
    for name in ["where", "where_i64"] {
        let (cond, a, b) = (c.get(&format!("{name}.c")), c.get(&format!("{name}.a")), c.get(&format!("{name}.b")));
        c.check(name, "out", &Tensor::where_(cond, a, b).unwrap());
    }
    c.check("masked_fill", "out", &c.get("masked_fill.a").masked_fill(c.get("masked_fill.m"), -7.5).unwrap());
    c.check("masked_fill_i64", "out", &c.get("masked_fill_i64.a").masked_fill(c.get("masked_fill_i64.m"), 42.0).unwrap());
}

#[test]
fn indices_and_indexing() {
    let c = Cases(fixture());
    c.check("argmax", "out", &c.get("argmax.a").argmax(1).unwrap());
    c.check("argmin", "out", &c.get("argmin.a").argmin(1).unwrap());
    c.check("argmin0", "out", &c.get("argmin0.a").argmin(0).unwrap());
    let (values, indices) = c.get("max_dim.a").max_dim(1, false).unwrap();
    c.check("max_dim", "out", &values);
    c.check("max_dim", "out1", &indices);
    c.check("gather", "out", &c.get("gather.a").gather(1, c.get("gather.i")).unwrap());
    c.check("gather0", "out", &c.get("gather0.a").gather(0, c.get("gather0.i")).unwrap());
    for name in ["scatter_add", "scatter_add_i64"] {
        let (a, i, s) = (c.get(&format!("{name}.a")), c.get(&format!("{name}.i")), c.get(&format!("{name}.s")));
        c.check(name, "out", &a.scatter_add(1, i, s).unwrap());
    }
    c.check("index_select", "out", &c.get("index_select.a").index_select(0, c.get("index_select.i")).unwrap());
    c.check("index_select_bool", "out", &c.get("index_select_bool.a").index_select(1, c.get("index_select_bool.i")).unwrap());
    let (a, i, s) = (c.get("index_add.a"), c.get("index_add.i"), c.get("index_add.s"));
    c.check("index_add", "out", &a.index_add(0, i, s).unwrap());
}

#[test]
fn cross_entropy_takes_i64_targets() {
    let c = Cases(fixture());
    let logits = c.get("cross_entropy.a").requires_grad_();
    let loss = ops::cross_entropy(&logits, c.get("cross_entropy.t")).unwrap();
    c.close("cross_entropy", "out", &loss);
    loss.backward().unwrap();
    c.close("cross_entropy", "out1", &logits.grad().unwrap());
}

#[test]
fn conversions_and_arange() {
    let c = Cases(fixture());
    c.check("to_i64", "out", &c.get("to_i64.a").try_to_dtype(DType::I64).unwrap());
    c.check("bool_to_i64", "out", &c.get("bool_to_i64.a").to_dtype(DType::I64));
    c.check("i64_to_f32", "out", &c.get("i64_to_f32.a").to_dtype(DType::F32));
    c.check("i64_to_bool", "out", &c.get("i64_to_bool.a").to_dtype(DType::Bool));
    c.check("arange", "out", &Tensor::arange_i64(5, -4, -3).unwrap());
}
