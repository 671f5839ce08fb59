//! Issue "Integer and boolean tensors": every public op given operands of every dtype
//! (f32, f64, i64, bool), alone and mixed. Float ops on an i64 or bool tensor, and mixed
//! dtypes, must be errors naming the op, never a panic; dtype-generic ops (views, copies,
//! comparisons, selection) must work on every dtype; float maths on integers promotes to
//! f32, as PyTorch's does.

use autograd::{DType, Result, Tensor};
use ops::{Conv2dArgs, Epilogue, Pool2dArgs};
use proptest::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

const DTYPES: [DType; 4] = [DType::F32, DType::F64, DType::I64, DType::Bool];

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(DTYPES.to_vec())
}

/// A tensor of `shape` and `dtype` with small varied values (a strided view when `view`).
fn tensor(shape: &[usize], dtype: DType, view: bool) -> Tensor {
    let n: usize = shape.iter().product();
    let vals: Vec<f64> = (0..n).map(|i| (i * 7 % 5) as f64 - 2.0).collect();
    let t = Tensor::from_vec(vals, shape).unwrap().try_to_dtype(dtype).unwrap();
    if view && shape.len() >= 2 {
        let r = shape.len();
        let mut s = shape.to_vec();
        s.swap(r - 2, r - 1);
        let vals: Vec<f64> = (0..n).map(|i| (i * 7 % 5) as f64 - 2.0).collect();
        Tensor::from_vec(vals, &s).unwrap().try_to_dtype(dtype).unwrap().transpose(-1, -2).unwrap()
    } else {
        t
    }
}

/// Runs `f`: a panic fails; an error must name `op`. Returns whether it succeeded.
fn run<T>(op: &str, args: &dyn std::fmt::Debug, f: impl FnOnce() -> Result<T>) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Err(_) => panic!("{op} panicked on {args:?}"),
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("{op}: ")), "{op}: the error does not name the op: {msg} on {args:?}");
            false
        }
    }
}

/// Float-only ops succeed exactly when every operand has the same float dtype.
fn float_only(op: &str, args: &dyn std::fmt::Debug, dtypes: &[DType], f: impl FnOnce() -> Result<Tensor>) {
    let want = dtypes[0].is_float() && dtypes.iter().all(|&d| d == dtypes[0]);
    let ok = run(op, args, f);
    assert_eq!(ok, want, "{op} on {dtypes:?}: succeeded {ok}, expected {want}");
}

proptest! {
    #![proptest_config(autograd::testing::config_from_env(256))]

    #[test]
    fn element_wise_and_reductions(da in dtype(), db in dtype(), view in any::<bool>()) {
        let (a, b) = (tensor(&[2, 3], da, view), tensor(&[3], db, false));
        let args = (da, db, view);
        // Arithmetic takes floats and i64 (wrapping; `div` of integers is a float division),
        // with both operands of one dtype.
        for (op, f) in [
            ("add", Tensor::add as fn(&Tensor, &Tensor) -> Result<Tensor>),
            ("sub", Tensor::sub),
            ("mul", Tensor::mul),
            ("div", Tensor::div),
        ] {
            let want = da == db && da != DType::Bool;
            prop_assert_eq!(run(op, &args, || f(&a, &b)), want, "{} on {:?}", op, args);
        }
        for (op, f) in [("floor_divide", Tensor::floor_divide as fn(&Tensor, &Tensor) -> Result<Tensor>), ("remainder", Tensor::remainder)] {
            // The values include zeros: an i64 pair may still fail, by division by zero.
            let ok = run(op, &args, || f(&a, &b));
            prop_assert!(!ok || (da == DType::I64 && db == DType::I64), "{} on {:?}", op, args);
        }
        float_only("mse", &args, &[da, db], || ops::mse(&a, &tensor(&[2, 3], db, false)));
        // Comparisons and selection take every dtype, as long as the operands agree.
        for (op, f) in [
            ("eq", Tensor::eq as fn(&Tensor, &Tensor) -> Result<Tensor>),
            ("ne", Tensor::ne),
            ("lt", Tensor::lt),
            ("le", Tensor::le),
            ("gt", Tensor::gt),
            ("ge", Tensor::ge),
        ] {
            prop_assert_eq!(run(op, &args, || f(&a, &b)), da == db);
        }
        let cond = tensor(&[2, 3], DType::Bool, false);
        prop_assert_eq!(run("where", &args, || Tensor::where_(&cond, &a, &b)), da == db);
        prop_assert!(run("masked_fill", &args, || a.masked_fill(&cond, 1.0)));
        // Indexing: selecting takes every dtype; adding takes floats and i64 (wrapping), the
        // two operands of one dtype; a float index is an error naming the op.
        let idx = Tensor::from_vec(vec![0i64, 2, 1, 0, 0, 2], &[2, 3]).unwrap();
        let rows = Tensor::from_vec(vec![2i64, 0, 1], &[3]).unwrap();
        let src = tensor(&[2, 3], db, false);
        prop_assert!(run("gather", &args, || a.gather(1, &idx)));
        prop_assert!(run("index_select", &args, || a.index_select(1, &rows)));
        prop_assert_eq!(run("scatter_add", &args, || a.scatter_add(1, &idx, &src)), da == db && da != DType::Bool);
        prop_assert_eq!(run("index_add", &args, || a.index_add(1, &rows, &src)), da == db && da != DType::Bool);
        prop_assert!(!run("gather", &args, || a.gather(1, &idx.to_dtype(DType::F32))));
        prop_assert!(!run("index_select", &args, || a.index_select(1, &rows.to_dtype(DType::Bool))));
        // Reductions over dims are float maths; the whole sum works on every dtype.
        for (op, f) in [
            ("sum_dims", (|t: &Tensor| t.sum_dims(&[0], false)) as fn(&Tensor) -> Result<Tensor>),
            ("mean", |t| t.mean_dims(&[1], true)),
            ("max", |t| t.max_dim(1, false).map(|(v, _)| v)),
            ("softmax", |t| t.softmax(1)),
            ("log_softmax", |t| t.log_softmax(1)),
            ("logsumexp", |t| t.logsumexp(1, false)),
        ] {
            float_only(op, &args, &[da], || f(&a));
        }
        // The reductions of issue 27 are float maths too, except cumsum (i64 wraps; bool
        // sums as i64, as PyTorch's).
        for (op, f) in [
            ("var", (|t: &Tensor| t.var_dims(&[1], 1.0, false)) as fn(&Tensor) -> Result<Tensor>),
            ("std", |t| t.std(0.0)),
            ("prod", |t| t.prod_dim(0, true)),
            ("prod", |t| t.prod()),
            ("norm", |t| t.norm_dims(2.0, &[1], false)),
            ("norm", |t| t.norm(f64::INFINITY)),
            ("amax", |t| t.amax(&[0], false)),
            ("amin", |t| t.amin(&[], true)),
            ("max", |t| t.max()),
            ("min", |t| t.min()),
            ("min", |t| t.min_dim(1, false).map(|(v, _)| v)),
        ] {
            float_only(op, &args, &[da], || f(&a));
        }
        let c = a.cumsum(1).unwrap();
        prop_assert_eq!(c.dtype(), if da.is_float() { da } else { DType::I64 });
        prop_assert_eq!(c.to_vec::<f64>()[5], a.to_vec::<f64>()[3..].iter().sum::<f64>());
        // maximum/minimum take floats and i64; pow floats; both of one dtype.
        prop_assert_eq!(run("maximum", &args, || a.maximum(&b)), da == db && da != DType::Bool);
        prop_assert_eq!(run("minimum", &args, || a.minimum(&b)), da == db && da != DType::Bool);
        float_only("pow", &args, &[da, db], || a.pow_tensor(&b));
        for t in [a.rsqrt(), a.log1p(), a.expm1(), a.sin(), a.cos(), a.log_sigmoid(), a.clamp_min(0.0), a.clamp_max(0.0)] {
            prop_assert_eq!(t.dtype(), if da.is_float() { da } else { DType::F32 });
        }
        // Losses: float operands of one dtype (class-index targets are i64).
        let (p, q) = (tensor(&[2, 3], da, false), tensor(&[2, 3], db, false));
        let red = ops::Reduction::Mean;
        float_only("l1_loss", &args, &[da, db], || ops::l1_loss(&p, &q, red));
        float_only("mse_loss", &args, &[da, db], || ops::mse_loss(&p, &q, red));
        float_only("smooth_l1_loss", &args, &[da, db], || ops::smooth_l1_loss(&p, &q, red, 1.0));
        float_only("huber_loss", &args, &[da, db], || ops::huber_loss(&p, &q, red, 1.0));
        float_only("kl_div", &args, &[da, db], || ops::kl_div(&p, &q, red, true));
        float_only("binary_cross_entropy_with_logits", &args, &[da, db], || ops::binary_cross_entropy_with_logits(&p, &q, None, None, red));
        let unit = |t: &Tensor| if t.dtype().is_float() { t.sigmoid() } else { t.clone() };
        float_only("binary_cross_entropy", &args, &[da, db], || ops::binary_cross_entropy(&unit(&p), &unit(&q), None, red));
        let labels = Tensor::from_vec(vec![0i64, 2], &[2]).unwrap();
        float_only("nll_loss", &args, &[da], || ops::nll_loss(&p, &labels, &Default::default()));
        float_only("cross_entropy", &args, &[da], || ops::cross_entropy_with(&p, &labels, &Default::default()));
        // A class weight of another dtype than the logits is an error naming the loss.
        let weight = ops::CrossEntropyOptions { weight: Some(tensor(&[3], db, false)), ..Default::default() };
        float_only("cross_entropy", &args, &[da, db], || ops::cross_entropy_with(&p, &labels, &weight));
        // Targets must be i64 class indices.
        let targets = Tensor::from_vec(vec![0.0f64, 1.0], &[2]).unwrap().try_to_dtype(db).unwrap();
        prop_assert_eq!(run("nll_loss", &args, || ops::nll_loss(&p, &targets, &Default::default())), da.is_float() && db == DType::I64);
        // Creation: eye of every dtype, linspace of floats.
        prop_assert!(run("eye", &args, || Tensor::eye_dtype(2, 3, da)));
        prop_assert_eq!(run("linspace", &args, || Tensor::linspace_dtype(0.0, 1.0, 4, da)), da.is_float());
        prop_assert!(run("argmax", &args, || a.argmax(1)) == da.is_float());
        let s = a.sum();
        prop_assert_eq!(s.dtype(), if da.is_float() { da } else { DType::I64 });
        // Float maths promotes integers to f32 and never fails.
        for t in [a.exp(), a.neg(), a.sigmoid(), a.relu(), a.abs(), a.clamp(-1.0, 1.0), a.mean()] {
            prop_assert_eq!(t.dtype(), if da.is_float() { da } else { DType::F32 });
        }
    }

    #[test]
    fn views_and_copies_take_every_dtype(da in dtype(), view in any::<bool>()) {
        let a = tensor(&[2, 3], da, view);
        let args = (da, view);
        prop_assert!(run("reshape", &args, || a.reshape(&[3, 2])));
        prop_assert!(run("permute", &args, || a.permute(&[1, 0])));
        prop_assert!(run("narrow", &args, || a.narrow(1, 1, 2)));
        prop_assert!(run("expand", &args, || a.unsqueeze(0)?.expand(&[4, 2, 3])));
        prop_assert!(run("cat", &args, || Tensor::cat(&[&a, &a], 1)));
        prop_assert!(run("stack", &args, || Tensor::stack(&[&a, &a], 0)));
        prop_assert!(run("flatten", &args, || a.flatten(0, 1)));
        prop_assert_eq!(a.contiguous().to_vec::<f64>(), a.to_vec::<f64>());
        prop_assert!(a.equal(&a.contiguous()));
        prop_assert!(a.to_string().starts_with("tensor("));
        // Mixed dtypes in a copy are errors naming the op.
        let other = tensor(&[2, 3], if da == DType::I64 { DType::F32 } else { DType::I64 }, false);
        prop_assert!(!run("cat", &args, || Tensor::cat(&[&a, &other], 0)));
    }

    #[test]
    fn heavy_ops(dx in dtype(), dw in dtype()) {
        let args = (dx, dw);
        let (x, w) = (tensor(&[2, 3, 6, 6], dx, false), tensor(&[4, 3, 3, 3], dw, false));
        float_only("conv2d", &args, &[dx, dw], || ops::conv2d(&x, &w, None, Conv2dArgs::default()));
        float_only("conv2d", &args, &[dx, dw], || ops::conv2d_fused(&x, &w, None, Conv2dArgs::default(), Epilogue::default()));
        let dy = tensor(&[2, 4, 4, 4], dx, false);
        float_only("conv2d_input_grad", &args, &[dx, dw], || ops::conv2d_input_grad(&dy, &w, &[2, 3, 6, 6], Conv2dArgs::default()));
        float_only("conv2d_weight_grad", &args, &[dx, dw], || ops::conv2d_weight_grad(&x, &tensor(&[2, 4, 4, 4], dw, false), &[4, 3, 3, 3], Conv2dArgs::default()));
        float_only("max_pool2d", &args, &[dx], || ops::max_pool2d(&x, Pool2dArgs::new(2)));
        float_only("avg_pool2d", &args, &[dx], || ops::avg_pool2d(&x, Pool2dArgs::new(2)));
        float_only("avg_pool2d_backward", &args, &[dx], || ops::avg_pool2d_backward(&tensor(&[2, 3, 3, 3], dx, false), &[2, 3, 6, 6], Pool2dArgs::new(2)));
        let (a, b) = (tensor(&[2, 3], dx, true), tensor(&[3, 4], dw, false));
        float_only("matmul", &args, &[dx, dw], || ops::matmul(&a, &b));
        float_only("linear", &args, &[dx, dw], || ops::linear(&a, &tensor(&[4, 3], dw, false), None));
        float_only("corr2d", &args, &[dx, dw], || ops::corr2d(&tensor(&[4, 4], dx, false), &tensor(&[2, 2], dw, false)));
        float_only("cross_entropy", &args, &[dx], || ops::cross_entropy(&a, &[0, 2]));
    }
}
