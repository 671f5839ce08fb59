//! i64 and bool tensors: creation, conversion (checked where a float has no i64 value),
//! printing as PyTorch prints them, views and copies, and the float ops refusing them by
//! name. Printed forms are PyTorch 2.15's (`print(torch.tensor(...))`).

use autograd::{DType, Error, Parameter, Tensor};
use std::panic::catch_unwind;

fn i64s(v: &[i64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

fn bools(v: &[bool], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

#[test]
fn creation() {
    let t = i64s(&[1, -2, 3], &[3]);
    assert_eq!(t.dtype(), DType::I64);
    assert_eq!(t.to_vec::<i64>(), [1, -2, 3]);
    assert_eq!(Tensor::zeros_dtype(&[2], DType::I64).to_vec::<i64>(), [0, 0]);
    assert_eq!(Tensor::ones_dtype(&[2], DType::Bool).to_vec::<bool>(), [true, true]);
    assert_eq!(Tensor::full_i64(&[2], i64::MIN).to_vec::<i64>(), [i64::MIN, i64::MIN]);
    assert_eq!(Tensor::full_bool(&[1], false).to_vec::<bool>(), [false]);
    assert_eq!(Tensor::full_dtype(&[1], 7.0, DType::I64).to_vec::<i64>(), [7]);
    assert!(catch_unwind(|| Tensor::full_dtype(&[1], 0.5, DType::I64)).is_err(), "0.5 is not an i64");
    assert_eq!(Tensor::arange_i64(5, -4, -3).unwrap().to_vec::<i64>(), [5, 2, -1]);
    assert_eq!(Tensor::arange_i64(0, 0, 1).unwrap().numel(), 0);
    assert_eq!(Tensor::arange_i64(i64::MIN, i64::MIN + 2, 1).unwrap().to_vec::<i64>(), [i64::MIN, i64::MIN + 1]);
    assert!(matches!(Tensor::arange_i64(i64::MIN, i64::MAX, 1), Err(Error::SizeOverflow { op: "arange", .. })));
    assert!(Tensor::arange_i64(0, 3, 0).is_err());
    assert_eq!(Tensor::arange_dtype(0.0, 4.0, 2.0, DType::I64).unwrap().to_vec::<i64>(), [0, 2]);
    assert!(Tensor::arange_dtype(0.0, 4.0, 0.5, DType::I64).is_err(), "a fractional step has no i64 value");
    // Exact beyond f64's 2^53.
    let big = (1i64 << 60) + 1;
    assert_eq!(i64s(&[big], &[1]).to_vec::<i64>(), [big]);
}

#[test]
fn printing_matches_pytorch() {
    assert_eq!(i64s(&[1, 2, 3], &[3]).to_string(), "tensor([1, 2, 3])");
    assert_eq!(i64s(&[1, 10, -3, 4], &[2, 2]).to_string(), "tensor([[ 1, 10],\n        [-3,  4]])");
    assert_eq!(i64s(&[7], &[]).to_string(), "tensor(7)");
    assert_eq!(bools(&[true, false, true], &[3]).to_string(), "tensor([ True, False,  True])");
    assert_eq!(i64s(&[(1 << 60) + 1], &[1]).to_string(), "tensor([1152921504606846977])");
    assert_eq!(Tensor::zeros_dtype(&[0], DType::I64).to_string(), "tensor([], dtype=torch.int64)");
    assert_eq!(Tensor::zeros_dtype(&[2, 0], DType::I64).to_string(), "tensor([], size=(2, 0), dtype=torch.int64)");
    assert_eq!(Tensor::zeros_dtype(&[0], DType::Bool).to_string(), "tensor([], dtype=torch.bool)");
    let rows = Tensor::arange_i64(0, 10000, 1).unwrap().reshape(&[1000, 10]).unwrap();
    let want = "tensor([[   0,    1,    2,  ...,    7,    8,    9],
        [  10,   11,   12,  ...,   17,   18,   19],
        [  20,   21,   22,  ...,   27,   28,   29],
        ...,
        [9970, 9971, 9972,  ..., 9977, 9978, 9979],
        [9980, 9981, 9982,  ..., 9987, 9988, 9989],
        [9990, 9991, 9992,  ..., 9997, 9998, 9999]])";
    assert_eq!(rows.to_string(), want);
    // Summarised like floats.
    let long = Tensor::arange_i64(0, 2000, 1).unwrap();
    assert_eq!(long.to_string(), "tensor([   0,    1,    2,  ..., 1997, 1998, 1999])");
}

#[test]
fn conversions() {
    let x = Tensor::from_vec(vec![2.7f32, -2.7, 0.0, -0.0], &[4]).unwrap();
    // Truncation toward zero, as PyTorch.
    assert_eq!(x.try_to_dtype(DType::I64).unwrap().to_vec::<i64>(), [2, -2, 0, 0]);
    assert_eq!(x.to_dtype(DType::Bool).to_vec::<bool>(), [true, true, false, false]);
    for bad in [f64::NAN, f64::INFINITY, -f64::INFINITY, 9.3e18, -9.3e18] {
        let t = Tensor::from_vec(vec![1.0, bad], &[2]).unwrap();
        let err = t.try_to_dtype(DType::I64).unwrap_err().to_string();
        assert!(err.starts_with("to_dtype: "), "{err}");
        assert!(catch_unwind(|| t.to_dtype(DType::I64)).is_err(), "the infallible cast panics on {bad}");
    }
    // The edges of the range.
    let edges = Tensor::from_vec(vec![-9_223_372_036_854_775_808.0f64, 9_223_372_036_854_774_784.0], &[2]).unwrap();
    assert_eq!(edges.try_to_dtype(DType::I64).unwrap().to_vec::<i64>(), [i64::MIN, 9_223_372_036_854_774_784]);
    // NaN is true as a bool (nonzero), as in PyTorch.
    assert_eq!(Tensor::scalar(f32::NAN).to_dtype(DType::Bool).to_vec::<bool>(), [true]);
    let i = i64s(&[-1, 0, 5], &[3]);
    assert_eq!(i.to_dtype(DType::F32).to_vec::<f32>(), [-1.0, 0.0, 5.0]);
    assert_eq!(i.to_dtype(DType::Bool).to_vec::<bool>(), [true, false, true]);
    assert_eq!(bools(&[true, false], &[2]).to_dtype(DType::I64).to_vec::<i64>(), [1, 0]);
    assert_eq!(bools(&[true, false], &[2]).to_dtype(DType::F64).to_vec::<f64>(), [1.0, 0.0]);
    // A cast to an integer type leaves the graph: the result has no gradient.
    let x = Tensor::from_vec(vec![1.5f32], &[1]).unwrap().requires_grad_();
    assert!(!x.try_to_dtype(DType::I64).unwrap().requires_grad());
}

#[test]
fn views_copies_and_equality() {
    let t = Tensor::arange_i64(0, 6, 1).unwrap().reshape(&[2, 3]).unwrap();
    let tt = t.t().unwrap();
    assert_eq!(tt.contiguous().to_vec::<i64>(), [0, 3, 1, 4, 2, 5]);
    assert_eq!(tt.to_vec::<i64>(), [0, 3, 1, 4, 2, 5]);
    assert_eq!(t.narrow(1, 1, 2).unwrap().to_vec::<i64>(), [1, 2, 4, 5]);
    assert_eq!(i64s(&[4], &[1]).expand(&[3]).unwrap().to_vec::<i64>(), [4, 4, 4]);
    let c = Tensor::cat(&[&t, &t], 0).unwrap();
    assert_eq!(c.shape(), &[4, 3]);
    assert_eq!(c.to_vec::<i64>()[6..], [0, 1, 2, 3, 4, 5]);
    assert!(t.equal(&Tensor::arange_i64(0, 6, 1).unwrap().reshape(&[2, 3]).unwrap()));
    assert!(!t.equal(&t.to_dtype(DType::F32)), "dtypes differ");
    let m = bools(&[true, false], &[2]);
    assert!(m.equal(&bools(&[true, false], &[2])));
    assert!(!m.equal(&bools(&[true, true], &[2])));
    // Exact equality past 2^53, where an f64 comparison could not tell them apart.
    let big = 1i64 << 60;
    assert!(!i64s(&[big], &[1]).equal(&i64s(&[big + 1], &[1])));
}

#[test]
fn integer_and_bool_tensors_never_require_grad() {
    let t = i64s(&[1], &[1]);
    assert!(catch_unwind(|| t.requires_grad_()).is_err());
    assert!(catch_unwind(|| Parameter::new(&bools(&[true], &[1]))).is_err());
    assert!(!t.requires_grad());
}

#[test]
fn float_ops_refuse_integers_by_name_and_maths_promotes() {
    let a = i64s(&[1, 2], &[2]);
    let b = bools(&[true, false], &[2]);
    let err = b.add(&b).unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType { op: "add", dtype: DType::Bool }), "{err}");
    assert_eq!(err.to_string(), "add: not implemented for dtype bool");
    assert!(a.sum_dims(&[0], false).unwrap_err().to_string().starts_with("sum_dims: "));
    assert!(bools(&[true], &[1]).argmax(0).unwrap_err().to_string().starts_with("argmax: "));
    // Float maths promotes to f32, as torch.exp(torch.tensor([1])) does.
    let e = a.exp();
    assert_eq!(e.dtype(), DType::F32);
    assert_eq!(e.to_vec::<f32>(), [1f32.exp(), 2f32.exp()]);
    assert!(a.all_finite());
}

#[test]
fn sums_of_integers_are_exact_and_wrap() {
    assert_eq!(i64s(&[i64::MAX, 1], &[2]).sum().to_vec::<i64>(), [i64::MIN]);
    let big = (1i64 << 60) + 1;
    assert_eq!(i64s(&[big, 2], &[2]).sum().to_vec::<i64>(), [big + 2]);
    let s = bools(&[true, false, true], &[3]).sum();
    assert_eq!((s.dtype(), s.to_vec::<i64>()), (DType::I64, vec![2]));
    // Through a strided view too.
    let t = Tensor::arange_i64(0, 6, 1).unwrap().reshape(&[2, 3]).unwrap().t().unwrap().narrow(0, 1, 2).unwrap();
    assert_eq!(t.sum().to_vec::<i64>(), [1 + 4 + 2 + 5]);
}

#[test]
fn comparisons_give_bool_tensors_and_broadcast() {
    let a = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0], &[3]).unwrap();
    let b = Tensor::from_vec(vec![2.0f32], &[1]).unwrap();
    let got = |t: autograd::Result<Tensor>| {
        let t = t.unwrap();
        assert_eq!(t.dtype(), DType::Bool);
        t.to_vec::<bool>()
    };
    // NaN compares false, except `ne` (true), as IEEE and PyTorch.
    assert_eq!(got(a.eq(&b)), [false, false, false]);
    assert_eq!(got(a.ne(&b)), [true, true, true]);
    assert_eq!(got(a.lt(&b)), [true, false, false]);
    assert_eq!(got(a.le(&b)), [true, false, false]);
    assert_eq!(got(a.gt(&b)), [false, false, true]);
    assert_eq!(got(a.ge(&b)), [false, false, true]);
    // i64 past 2^53 compares exactly; broadcasting [2, 1] with [3].
    let big = 1i64 << 60;
    let x = i64s(&[big, big + 1], &[2, 1]);
    let y = i64s(&[big, big + 1, big + 2], &[3]);
    let ge = x.ge(&y).unwrap();
    assert_eq!(ge.shape(), &[2, 3]);
    assert_eq!(ge.to_vec::<bool>(), [true, false, false, true, true, false]);
    assert_eq!(got(bools(&[false, true], &[2]).lt(&bools(&[true, true], &[2]))), [true, false]);
    // Mixed dtypes and shapes that do not broadcast are errors naming the op.
    assert!(matches!(a.eq(&x), Err(Error::DTypeMismatch { op: "eq", .. })));
    assert!(a.lt(&Tensor::zeros(&[2])).unwrap_err().to_string().starts_with("lt: "));
    // No gradient: a step function.
    assert!(!a.requires_grad_().gt(&b).unwrap().requires_grad());
}

#[test]
fn where_and_masked_fill() {
    let cond = bools(&[true, false, true, false], &[2, 2]);
    let a = Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap();
    let b = Tensor::from_vec(vec![-1.0f64], &[1]).unwrap();
    let w = Tensor::where_(&cond, &a, &b).unwrap();
    assert_eq!(w.to_vec::<f64>(), [1.0, -1.0, 1.0, -1.0]);
    let i = Tensor::where_(&bools(&[false, true], &[2]), &i64s(&[5], &[1]), &i64s(&[1 << 60, 7], &[2])).unwrap();
    assert_eq!(i.to_vec::<i64>(), [1 << 60, 5]);
    assert!(Tensor::where_(&a, &a, &b).unwrap_err().to_string().starts_with("where: "), "a float condition");
    assert!(matches!(Tensor::where_(&cond, &a, &i64s(&[1], &[1])), Err(Error::DTypeMismatch { op: "where", .. })));

    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    let m = bools(&[true, false], &[2]);
    assert_eq!(x.masked_fill(&m, -9.0).unwrap().to_vec::<f32>(), [-9.0, 2.0, -9.0, 4.0]);
    assert_eq!(i64s(&[1, 2], &[2]).masked_fill(&m, 7.0).unwrap().to_vec::<i64>(), [7, 2]);
    assert!(i64s(&[1, 2], &[2]).masked_fill(&m, 0.5).unwrap_err().to_string().starts_with("masked_fill: "));
    assert!(x.masked_fill(&x, 0.0).unwrap_err().to_string().starts_with("masked_fill: "), "a float mask");
    assert!(x.masked_fill(&bools(&[true; 3], &[3]), 0.0).unwrap_err().to_string().starts_with("masked_fill: "));
    // The gradient reaches the elements that were kept, and only those.
    let leaf = x.requires_grad_();
    leaf.masked_fill(&m, 0.0).unwrap().sum().backward().unwrap();
    assert_eq!(leaf.grad().unwrap().to_vec::<f32>(), [0.0, 1.0, 0.0, 1.0]);
}

#[test]
fn where_is_differentiable_twice() {
    use autograd::testing::{assert_gradcheck, assert_gradgradcheck};
    let mut r = autograd::rng(5);
    let cond = bools(&[true, false, false, true, true, false], &[2, 3]);
    let a = Tensor::uniform_dtype(&[2, 3], -2.0, 2.0, DType::F64, &mut r).requires_grad_();
    let b = Tensor::uniform_dtype(&[3], -2.0, 2.0, DType::F64, &mut r).requires_grad_();
    // Squared so the second derivative is not zero.
    let f = |v: &[Tensor]| {
        let w = Tensor::where_(&cond, &v[0], &v[1])?;
        w.mul(&w)
    };
    assert_gradcheck(f, &[a.clone(), b.clone()]);
    assert_gradgradcheck(f, &[a, b]);
}

#[test]
fn integer_arithmetic_wraps_and_divides_as_pytorch() {
    let a = i64s(&[i64::MAX, -7, 7, 1 << 60], &[4]);
    let b = i64s(&[1, 2, -2, 3], &[4]);
    assert_eq!(a.add(&b).unwrap().to_vec::<i64>(), [i64::MIN, -5, 5, (1 << 60) + 3]);
    assert_eq!(a.sub(&b).unwrap().to_vec::<i64>(), [i64::MAX - 1, -9, 9, (1 << 60) - 3]);
    assert_eq!(a.mul(&b).unwrap().to_vec::<i64>(), [i64::MAX, -14, -14, (3i64 << 60)]);
    // Python's // and %: toward negative infinity, the remainder takes the divisor's sign.
    assert_eq!(a.floor_divide(&b).unwrap().to_vec::<i64>(), [i64::MAX, -4, -4, (1 << 60) / 3]);
    assert_eq!(a.remainder(&b).unwrap().to_vec::<i64>(), [0, 1, -1, (1 << 60) % 3]);
    // Broadcasting, and true division promoting to f32.
    let col = i64s(&[10, 20], &[2, 1]);
    assert_eq!(col.floor_divide(&i64s(&[3, -3], &[2])).unwrap().to_vec::<i64>(), [3, -4, 6, -7]);
    let q = i64s(&[7], &[1]).div(&i64s(&[2], &[1])).unwrap();
    assert_eq!((q.dtype(), q.to_vec::<f32>()), (DType::F32, vec![3.5]));
    // Division by zero is an error naming the op; mixed dtypes too.
    let zero = i64s(&[0], &[1]);
    assert_eq!(a.floor_divide(&zero).unwrap_err().to_string(), "floor_divide: integer division by zero");
    assert!(a.remainder(&zero).unwrap_err().to_string().starts_with("remainder: "));
    assert!(matches!(a.add(&a.to_dtype(DType::F32)), Err(Error::DTypeMismatch { op: "add", .. })));
    assert!(a.to_dtype(DType::F32).floor_divide(&a).unwrap_err().to_string().starts_with("floor_divide: "));
}

#[test]
fn index_select_takes_i64_indices_and_is_differentiable_twice() {
    use autograd::testing::{assert_gradcheck, assert_gradgradcheck};
    let x = Tensor::from_vec((0..12).map(|v| v as f64).collect::<Vec<_>>(), &[3, 4]).unwrap();
    let idx = i64s(&[2, 0, 2], &[3]);
    let rows = x.index_select(0, &idx).unwrap();
    assert_eq!(rows.shape(), &[3, 4]);
    assert_eq!(rows.to_vec::<f64>(), [8.0, 9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0, 8.0, 9.0, 10.0, 11.0]);
    let cols = x.index_select(-1, &i64s(&[3, 1], &[2])).unwrap();
    assert_eq!(cols.to_vec::<f64>(), [3.0, 1.0, 7.0, 5.0, 11.0, 9.0]);
    // Repeated indices add up in the gradient.
    let leaf = x.requires_grad_();
    leaf.index_select(0, &idx).unwrap().sum().backward().unwrap();
    assert_eq!(leaf.grad().unwrap().to_vec::<f64>(), [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0]);
    let f = |v: &[Tensor]| {
        let s = v[0].index_select(1, &i64s(&[1, 1, 0], &[3]))?;
        s.mul(&s)
    };
    let mut r = autograd::rng(9);
    let a = Tensor::uniform_dtype(&[2, 3], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
    assert_gradcheck(f, &[a.clone()]);
    assert_gradgradcheck(f, &[a]);
    // Bad indices are errors naming the op.
    for bad in [i64s(&[3], &[1]), i64s(&[-1], &[1]), i64s(&[0], &[1, 1])] {
        assert!(x.index_select(0, &bad).unwrap_err().to_string().starts_with("index_select: "));
    }
    assert!(x.index_select(0, &Tensor::zeros(&[1])).unwrap_err().to_string().starts_with("index_select: "), "a float index");
    // Selection works on every dtype.
    assert_eq!(i64s(&[5, 6, 7], &[3]).index_select(0, &i64s(&[2, 0], &[2])).unwrap().to_vec::<i64>(), [7, 5]);
    assert_eq!(bools(&[true, false], &[2]).index_select(0, &i64s(&[1, 1], &[2])).unwrap().to_vec::<bool>(), [false, false]);
}

#[test]
fn index_add_adds_into_the_tensor_and_is_differentiable_twice() {
    use autograd::testing::{assert_gradcheck, assert_gradgradcheck};
    // torch.ones(3, 2).index_add(0, tensor([2, 0, 2]), arange(6).view(3, 2))
    let x = Tensor::ones_dtype(&[3, 2], DType::F64);
    let src = Tensor::arange_dtype(0.0, 6.0, 1.0, DType::F64).unwrap().reshape(&[3, 2]).unwrap();
    let idx = i64s(&[2, 0, 2], &[3]);
    assert_eq!(x.index_add(0, &idx, &src).unwrap().to_vec::<f64>(), [3.0, 4.0, 1.0, 1.0, 5.0, 7.0]);
    // i64 wraps on overflow, as PyTorch's.
    let big = i64s(&[i64::MAX, 0], &[2]);
    assert_eq!(big.index_add(0, &i64s(&[0], &[1]), &i64s(&[1], &[1])).unwrap().to_vec::<i64>(), [i64::MIN, 0]);
    let f = |v: &[Tensor]| v[0].index_add(1, &i64s(&[1, 1, 0], &[3]), &v[1].mul(&v[1])?);
    let mut r = autograd::rng(3);
    let a = Tensor::uniform_dtype(&[2, 2], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
    let b = Tensor::uniform_dtype(&[2, 3], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
    assert_gradcheck(f, &[a.clone(), b.clone()]);
    assert_gradgradcheck(f, &[a, b]);
    for (what, res) in [
        ("shape", x.index_add(0, &idx, &src.narrow(1, 0, 1).unwrap())),
        ("index", x.index_add(0, &i64s(&[3, 0, 0], &[3]), &src)),
        ("dtype", x.index_add(0, &idx, &src.to_dtype(DType::F32))),
        ("bool", bools(&[true], &[1]).index_add(0, &i64s(&[0], &[1]), &bools(&[true], &[1]))),
    ] {
        assert!(res.unwrap_err().to_string().starts_with("index_add: "), "{what}");
    }
}

#[test]
fn gather_and_scatter_add_take_i64_index_tensors() {
    use autograd::testing::{assert_gradcheck, assert_gradgradcheck};
    // torch.gather(arange(6).view(2, 3), 1, tensor([[2, 0], [1, 1]])): a smaller index, as PyTorch allows.
    let x = Tensor::arange_i64(0, 6, 1).unwrap().reshape(&[2, 3]).unwrap();
    let idx = i64s(&[2, 0, 1, 1], &[2, 2]);
    let g = x.gather(1, &idx).unwrap();
    assert_eq!((g.dtype(), g.shape(), g.to_vec::<i64>()), (DType::I64, &[2, 2][..], vec![2, 0, 4, 4]));
    // Along dim 0 of a transposed view, and on bools.
    let xt = x.transpose(0, 1).unwrap(); // [[0, 3], [1, 4], [2, 5]]
    assert_eq!(xt.gather(0, &i64s(&[2, 0], &[1, 2])).unwrap().to_vec::<i64>(), [2, 3]);
    assert_eq!(bools(&[true, false], &[1, 2]).gather(1, &i64s(&[1, 0, 1], &[1, 3])).unwrap().to_vec::<bool>(), [false, true, false]);
    // torch.zeros(2, 3).scatter_add(1, idx, ones(2, 2)): repeated positions add up.
    let s = Tensor::zeros_dtype(&[2, 3], DType::F64).scatter_add(1, &idx, &Tensor::ones_dtype(&[2, 2], DType::F64)).unwrap();
    assert_eq!(s.to_vec::<f64>(), [1.0, 0.0, 1.0, 0.0, 2.0, 0.0]);
    assert_eq!(x.scatter_add(1, &idx, &i64s(&[10, 20, 30, 40], &[2, 2])).unwrap().to_vec::<i64>(), [20, 1, 12, 3, 74, 5]);
    // Gradients in the float inputs, twice.
    let mut r = autograd::rng(5);
    let a = Tensor::uniform_dtype(&[2, 3], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
    let b = Tensor::uniform_dtype(&[2, 2], -1.0, 1.0, DType::F64, &mut r).requires_grad_();
    let f = |v: &[Tensor]| {
        let p = v[0].gather(1, &idx)?;
        v[0].scatter_add(1, &idx, &p.mul(&v[1])?)
    };
    assert_gradcheck(f, &[a.clone(), b.clone()]);
    assert_gradgradcheck(f, &[a, b]);
    // Bad indices and shapes are errors naming the op.
    let xf = Tensor::zeros_dtype(&[2, 3], DType::F64);
    for (what, res) in [
        ("negative", xf.gather(1, &i64s(&[-1], &[1, 1]))),
        ("too large", xf.gather(1, &i64s(&[3], &[1, 1]))),
        ("larger off dim", xf.gather(1, &i64s(&[0, 0, 0], &[3, 1]))),
        ("rank", xf.gather(1, &i64s(&[0], &[1]))),
        ("float index", xf.gather(1, &Tensor::zeros(&[1, 1]))),
    ] {
        assert!(res.unwrap_err().to_string().starts_with("gather: "), "{what}");
    }
    let ones = Tensor::ones_dtype(&[2, 2], DType::F64);
    for (what, res) in [
        ("index", xf.scatter_add(1, &i64s(&[0, 3, 0, 0], &[2, 2]), &ones)),
        ("source shape", xf.scatter_add(1, &idx, &Tensor::ones_dtype(&[2, 3], DType::F64))),
        ("dtype", xf.scatter_add(1, &idx, &ones.to_dtype(DType::F32))),
        ("bool", bools(&[true], &[1, 1]).scatter_add(1, &i64s(&[0], &[1, 1]), &bools(&[true], &[1, 1]))),
    ] {
        assert!(res.unwrap_err().to_string().starts_with("scatter_add: "), "{what}");
    }
}

#[test]
fn argmax_argmin_and_max_give_i64_indices() {
    // torch.argmax / argmin / max(x, 1) of [[1, 5, 5], [nan, 0, 2]]: ties go to the first,
    // NaN wins both.
    let x = Tensor::from_vec(vec![1.0f32, 5.0, 5.0, f32::NAN, 0.0, 2.0], &[2, 3]).unwrap();
    let am = x.argmax(1).unwrap();
    assert_eq!((am.dtype(), am.shape(), am.to_vec::<i64>()), (DType::I64, &[2][..], vec![1, 0]));
    assert_eq!(x.argmin(1).unwrap().to_vec::<i64>(), [0, 0]);
    assert_eq!(x.argmin(0).unwrap().to_vec::<i64>(), [1, 1, 1]);
    let (values, idx) = x.max_dim(1, true).unwrap();
    assert_eq!((idx.dtype(), idx.shape(), idx.to_vec::<i64>()), (DType::I64, &[2, 1][..], vec![1, 0]));
    assert_eq!(values.shape(), &[2, 1]);
    assert!(x.argmin(5).unwrap_err().to_string().starts_with("argmin: "));
    assert!(i64s(&[1], &[1]).argmin(0).unwrap_err().to_string().starts_with("argmin: "));
}
