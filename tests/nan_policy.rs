//! Issue 15, "NaN in, NaN out" (docs/reliability.md): every element-wise op, activation
//! (scalar, vectorised and fused-epilogue paths), reduction, pooling window and loss gives
//! NaN where its input holds NaN, and exactly the values it gives without the NaN
//! everywhere else. Checkpoints with non-finite weights are refused, and the divergence
//! guard of `lenet` never names a file that is missing or holds non-finite values.
//!
//! NaN is placed at the start, middle and end of vectors of lengths around the vector
//! widths (vector loops and scalar tails differ), in f32 and f64.

use autograd::{Activation, DType, Tensor};
use convnet::lenet::{parse_args, run, LenetArgs};
use ops::{Conv2dArgs, Epilogue, Pool2dArgs, Pool2x2};
use std::path::{Path, PathBuf};

const DTYPES: [DType; 2] = [DType::F32, DType::F64];
/// Around 8- and 16-lane vectors, and one long enough for the parallel chunks.
const LENS: [usize; 8] = [1, 7, 8, 9, 16, 17, 33, 70_001];

fn positions(n: usize) -> Vec<usize> {
    let mut p = vec![0, n / 2, n - 1];
    p.dedup();
    p
}

/// Finite values of both signs, none zero.
fn base(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 37 % 19) as f64 - 9.0) * 0.37 + 0.1).collect()
}

fn tensor(v: Vec<f64>, shape: &[usize], dt: DType) -> Tensor {
    Tensor::from_vec(v, shape).unwrap().to_dtype(dt)
}

fn with_nan(mut v: Vec<f64>, at: &[usize]) -> Vec<f64> {
    at.iter().for_each(|&i| v[i] = f64::NAN);
    v
}

/// NaN exactly at `nan`, and elsewhere the bits of `clean` (which may hold NaN itself, as
/// `log` of a negative number does).
#[track_caller]
fn assert_nan_exactly_at(what: &str, got: &[f64], clean: &[f64], nan: &[bool]) {
    assert_eq!(got.len(), clean.len(), "{what}");
    for (i, ((&g, &c), &n)) in got.iter().zip(clean).zip(nan).enumerate() {
        if n {
            assert!(g.is_nan(), "{what}: index {i} is {g}, expected NaN");
        } else {
            assert!(g.to_bits() == c.to_bits() || (g.is_nan() && c.is_nan()), "{what}: index {i} is {g}, expected {c}");
        }
    }
}

/// Both NaN, or the same bits.
#[track_caller]
fn assert_same(what: &str, a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()), "{what}: index {i}: {x} vs {y}");
    }
}

fn mask(n: usize, at: &[usize]) -> Vec<bool> {
    (0..n).map(|i| at.contains(&i)).collect()
}

type UnaryOp = (&'static str, fn(&Tensor) -> Tensor);

fn unary_ops() -> Vec<UnaryOp> {
    vec![
        ("neg", |x| x.neg()),
        ("exp", |x| x.exp()),
        ("log", |x| x.log()),
        ("sqrt", |x| x.sqrt()),
        ("abs", |x| x.abs()),
        ("sign", |x| x.sign()),
        ("pow 2", |x| x.pow(2.0)),
        ("pow 0.5", |x| x.pow(0.5)),
        ("clamp", |x| x.clamp(-1.0, 1.0)),
        ("sigmoid", |x| x.sigmoid()),
        ("tanh", |x| x.tanh()),
        ("relu", |x| x.relu()),
        ("add_scalar", |x| x.add_scalar(2.5)),
        ("mul_scalar 0", |x| x.mul_scalar(0.0)),
        ("Activation::Sigmoid.apply", |x| Activation::Sigmoid.apply(x)),
        ("Activation::Relu.apply", |x| Activation::Relu.apply(x)),
        ("Activation::Tanh.apply", |x| Activation::Tanh.apply(x)),
    ]
}

#[test]
fn element_wise_ops_give_nan_for_nan_and_the_same_values_elsewhere() {
    for dt in DTYPES {
        for n in LENS {
            let clean_x = tensor(base(n), &[n], dt);
            for (name, op) in unary_ops() {
                let clean = op(&clean_x).to_vec::<f64>();
                for p in positions(n) {
                    let got = op(&tensor(with_nan(base(n), &[p]), &[n], dt)).to_vec::<f64>();
                    assert_nan_exactly_at(&format!("{name} {dt} n={n} NaN at {p}"), &got, &clean, &mask(n, &[p]));
                }
            }
        }
    }
}

#[test]
fn activation_slices_as_fused_ops_apply_them_keep_nan() {
    fn check<T: autograd::Element>(dt: DType) {
        for n in LENS {
            for act in [Activation::Sigmoid, Activation::Relu, Activation::Tanh] {
                let clean: Vec<T> = base(n).into_iter().map(T::from_f64).collect();
                let mut want = clean.clone();
                act.apply_slice(&mut want);
                let want: Vec<f64> = want.iter().map(|&v| autograd::Scalar::to_f64(v)).collect();
                // The slice kernel gives bitwise the recorded op's values.
                assert_same(&format!("{act:?} {dt} n={n}"), &want, &act.apply(&tensor(base(n), &[n], dt)).to_vec::<f64>());
                for p in positions(n) {
                    let mut v = clean.clone();
                    v[p] = T::nan();
                    act.apply_slice(&mut v);
                    let got: Vec<f64> = v.iter().map(|&v| autograd::Scalar::to_f64(v)).collect();
                    assert_nan_exactly_at(&format!("{act:?} slice {dt} n={n} NaN at {p}"), &got, &want, &mask(n, &[p]));
                }
            }
        }
    }
    check::<f32>(DType::F32);
    check::<f64>(DType::F64);
}

#[test]
fn activations_at_infinity_and_nan_match_pytorch() {
    for dt in DTYPES {
        let x = tensor(vec![f64::NEG_INFINITY, f64::INFINITY, f64::NAN, -0.0, 0.0], &[5], dt);
        let s = x.sigmoid().to_vec::<f64>();
        assert_eq!(&s[..2], &[0.0, 1.0], "{dt}");
        assert!(s[2].is_nan());
        assert_eq!(&s[3..], &[0.5, 0.5]);
        let r = x.relu().to_vec::<f64>();
        assert_eq!((r[0], r[1], r[3], r[4]), (0.0, f64::INFINITY, 0.0, 0.0), "{dt}");
        assert!(r[2].is_nan());
        let c = x.clamp(-1.0, 1.0).to_vec::<f64>();
        assert_eq!((c[0], c[1]), (-1.0, 1.0));
        assert!(c[2].is_nan());
    }
}

#[test]
fn binary_ops_and_broadcasting_give_nan_where_an_operand_is_nan() {
    type BinOp = (&'static str, fn(&Tensor, &Tensor) -> Tensor);
    let ops: [BinOp; 4] = [
        ("add", |a, b| a.add(b).unwrap()),
        ("sub", |a, b| a.sub(b).unwrap()),
        ("mul", |a, b| a.mul(b).unwrap()),
        ("div", |a, b| a.div(b).unwrap()),
    ];
    for dt in DTYPES {
        for n in LENS {
            let b: Vec<f64> = base(n).into_iter().rev().collect();
            for (name, op) in ops {
                let clean = op(&tensor(base(n), &[n], dt), &tensor(b.clone(), &[n], dt)).to_vec::<f64>();
                for p in positions(n) {
                    let lhs = op(&tensor(with_nan(base(n), &[p]), &[n], dt), &tensor(b.clone(), &[n], dt)).to_vec::<f64>();
                    assert_nan_exactly_at(&format!("{name} lhs {dt} n={n} at {p}"), &lhs, &clean, &mask(n, &[p]));
                    let rhs = op(&tensor(base(n), &[n], dt), &tensor(with_nan(b.clone(), &[p]), &[n], dt)).to_vec::<f64>();
                    assert_nan_exactly_at(&format!("{name} rhs {dt} n={n} at {p}"), &rhs, &clean, &mask(n, &[p]));
                }
                // A NaN scalar broadcast over the other operand makes every value NaN.
                let nan = tensor(vec![f64::NAN], &[1], dt);
                assert!(op(&tensor(base(n), &[n], dt), &nan).to_vec::<f64>().iter().all(|v| v.is_nan()), "{name} {dt}");
                assert!(op(&nan, &tensor(base(n), &[n], dt)).to_vec::<f64>().iter().all(|v| v.is_nan()), "{name} {dt}");
                // Broadcast rows: NaN in row 1 of a [2, n] operand against a [n] one.
                let two = tensor([base(n), with_nan(base(n), &[n - 1])].concat(), &[2, n], dt);
                let got = op(&two, &tensor(b.clone(), &[n], dt)).to_vec::<f64>();
                assert_nan_exactly_at(
                    &format!("{name} broadcast {dt} n={n}"),
                    &got,
                    &[clean.clone(), clean.clone()].concat(),
                    &mask(2 * n, &[2 * n - 1]),
                );
            }
        }
    }
}

#[test]
fn gradients_at_nan_follow_pytorch() {
    for dt in DTYPES {
        let x = tensor(vec![f64::NAN, -1.0, 2.0, 0.0], &[4], dt).requires_grad_();
        let grad = |y: Tensor| {
            y.sum().backward().unwrap();
            let g = x.grad().unwrap().to_vec::<f64>();
            x.zero_grad();
            g
        };
        // ReLU: PyTorch's threshold_backward passes the gradient where x <= 0 is false,
        // so at NaN too.
        assert_eq!(grad(x.relu()), vec![1.0, 0.0, 1.0, 0.0], "{dt}");
        // The same rule as recorded ops (double backward).
        let y = x.relu().sum();
        let g = autograd::grad(&y, &[&x], None, autograd::BackwardOptions { create_graph: true, ..Default::default() }).unwrap();
        assert_eq!(g[0].as_ref().unwrap().to_vec::<f64>(), vec![1.0, 0.0, 1.0, 0.0], "{dt}");
        let s = grad(x.sigmoid());
        assert!(s[0].is_nan() && s[1..].iter().all(|v| v.is_finite()), "{s:?}");
        let t = grad(x.tanh());
        assert!(t[0].is_nan() && t[1..].iter().all(|v| v.is_finite()), "{t:?}");
        // abs: sign(NaN) is NaN, so the gradient is NaN, never a silent 0.
        let a = grad(x.abs());
        assert!(a[0].is_nan());
        assert_eq!(&a[1..], &[-1.0, 1.0, 0.0]);
        // clamp: NaN is not inside the range, so its gradient is 0 (PyTorch's rule).
        assert_eq!(grad(x.clamp(-0.5, 0.5)), vec![0.0, 0.0, 0.0, 1.0], "{dt}");
    }
}

#[test]
fn reductions_give_nan_for_a_slice_holding_nan() {
    for dt in DTYPES {
        for n in LENS {
            let rows = 3;
            let clean_x = tensor((0..rows).flat_map(|_| base(n)).collect(), &[rows, n], dt);
            for p in positions(n) {
                let at = n + p; // row 1
                let x = tensor(with_nan((0..rows).flat_map(|_| base(n)).collect(), &[at]), &[rows, n], dt);
                let what = |op: &str| format!("{op} {dt} n={n} NaN at {p}");
                assert!(x.sum().item().unwrap().is_nan(), "{}", what("sum"));
                assert!(x.mean().item().unwrap().is_nan(), "{}", what("mean"));
                // Along the rows: row 1 is NaN, the others exactly as without it.
                let row_nan = [false, true, false];
                type Red = (&'static str, fn(&Tensor) -> Tensor);
                let per_row: [Red; 4] = [
                    ("sum_dims", |t| t.sum_dims(&[1], false).unwrap()),
                    ("mean_dims", |t| t.mean_dims(&[-1], false).unwrap()),
                    ("max_dim", |t| t.max_dim(1, false).unwrap().0),
                    ("logsumexp", |t| t.logsumexp(1, false).unwrap()),
                ];
                for (name, op) in per_row {
                    assert_nan_exactly_at(&what(name), &op(&x).to_vec::<f64>(), &op(&clean_x).to_vec::<f64>(), &row_nan);
                }
                let whole_row: Vec<bool> = (0..rows * n).map(|i| i / n == 1).collect();
                for (name, op) in [("softmax", Tensor::softmax as fn(&Tensor, isize) -> _), ("log_softmax", Tensor::log_softmax)] {
                    assert_nan_exactly_at(
                        &what(name),
                        &op(&x, 1).unwrap().to_vec::<f64>(),
                        &op(&clean_x, 1).unwrap().to_vec::<f64>(),
                        &whole_row,
                    );
                }
                assert_eq!(x.argmax(1).unwrap().to_vec::<i64>()[1], p as i64, "{}", what("argmax"));
                // Down the columns (the vectorised inner loop of sum_axis): column p only.
                assert_nan_exactly_at(
                    &what("sum over dim 0"),
                    &x.sum_dims(&[0], false).unwrap().to_vec::<f64>(),
                    &clean_x.sum_dims(&[0], false).unwrap().to_vec::<f64>(),
                    &mask(n, &[p]),
                );
            }
        }
        // Infinities in logsumexp: as PyTorch, not inf - inf = NaN.
        let x = tensor(vec![f64::INFINITY, 1.0, f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NAN, f64::INFINITY], &[3, 2], dt);
        let l = x.logsumexp(1, false).unwrap().to_vec::<f64>();
        assert_eq!(&l[..2], &[f64::INFINITY, f64::NEG_INFINITY], "{dt}");
        assert!(l[2].is_nan());
    }
}

#[test]
fn losses_are_nan_when_an_input_is() {
    for dt in DTYPES {
        let (n, c) = (4, 10);
        let labels = [3, 0, 9, 5];
        let clean = tensor(base(n * c), &[n, c], dt);
        assert!(ops::cross_entropy(&clean, &labels).unwrap().item().unwrap().is_finite());
        // NaN at the label's logit, and at another class's.
        for at in [2 * c + 9, 2 * c + 1, 0] {
            let x = tensor(with_nan(base(n * c), &[at]), &[n, c], dt).requires_grad_();
            let loss = ops::cross_entropy(&x, &labels).unwrap();
            assert!(loss.item().unwrap().is_nan(), "{dt} at {at}");
            loss.backward().unwrap();
            let g = x.grad().unwrap().to_vec::<f64>();
            let row = at / c;
            assert!(g[row * c..(row + 1) * c].iter().all(|v| v.is_nan()), "{dt}: {g:?}");
        }
        let t = tensor(base(n * c), &[n, c], dt);
        assert!(ops::mse(&tensor(with_nan(base(n * c), &[17]), &[n, c], dt), &t).unwrap().item().unwrap().is_nan());
        assert!(ops::mse(&t, &tensor(with_nan(base(n * c), &[39]), &[n, c], dt)).unwrap().item().unwrap().is_nan());
    }
}

// ----- pooling ---------------------------------------------------------------------------

/// Windows (output indices of one plane) that contain input cell `(y, x)`.
fn windows_with(cell: (usize, usize), k: (usize, usize), s: (usize, usize), pad: (usize, usize), out: (usize, usize)) -> Vec<usize> {
    let mut w = Vec::new();
    for oy in 0..out.0 {
        for ox in 0..out.1 {
            let (y0, x0) = ((oy * s.0) as isize - pad.0 as isize, (ox * s.1) as isize - pad.1 as isize);
            let (y, x) = (cell.0 as isize, cell.1 as isize);
            if y0 <= y && y < y0 + k.0 as isize && x0 <= x && x < x0 + k.1 as isize {
                w.push(oy * out.1 + ox);
            }
        }
    }
    w
}

#[test]
fn pooling_windows_holding_nan_are_nan_and_max_sends_the_gradient_to_it() {
    // (kernel, stride, padding): the 2x2 fast path, then the generic one.
    let cases = [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((2, 2), (1, 1), (0, 0)), ((3, 2), (2, 1), (1, 0))];
    for dt in DTYPES {
        for (k, s, pad) in cases {
            // Widths around the row kernels' 8-wide steps and 64-output spans, odd ones too.
            for w in [2, 3, 14, 15, 16, 18, 34, 130, 141] {
                let (planes, h) = (3, 5);
                let len = planes * h * w;
                let args = Pool2dArgs::new(k).stride(s).padding(pad);
                let shape = [1, planes, h, w];
                let clean = tensor(base(len), &shape, dt);
                let (cmax, cavg) = (ops::max_pool2d(&clean, args).unwrap(), ops::avg_pool2d(&clean, args).unwrap());
                let (oh, ow) = (cmax.shape()[2], cmax.shape()[3]);
                let cells = [(0, 0, 0), (1, h / 2, w / 2), (planes - 1, 2 * (oh - 1).min(h / 2), w - 1), (2, 3, (w - 1).min(2 * ow - 1))];
                for (pl, y, x) in cells {
                    let at = (pl * h + y) * w + x;
                    let hit = windows_with((y, x), k, s, pad, (oh, ow));
                    let nan: Vec<bool> = (0..planes * oh * ow).map(|o| o / (oh * ow) == pl && hit.contains(&(o % (oh * ow)))).collect();
                    let what = format!("{dt} k={k:?} s={s:?} p={pad:?} w={w} NaN at {:?}", (pl, y, x));
                    let xn = tensor(with_nan(base(len), &[at]), &shape, dt).requires_grad_();
                    let mp = ops::max_pool2d(&xn, args).unwrap();
                    assert_nan_exactly_at(&format!("max {what}"), &mp.to_vec::<f64>(), &cmax.to_vec::<f64>(), &nan);
                    let ap = ops::avg_pool2d(&xn, args).unwrap();
                    assert_nan_exactly_at(&format!("avg {what}"), &ap.to_vec::<f64>(), &cavg.to_vec::<f64>(), &nan);
                    // Backward: each window holding the NaN sends its gradient to it.
                    let dy: Vec<f64> = (0..planes * oh * ow).map(|i| (i % 7) as f64 + 1.0).collect();
                    let want: f64 = hit.iter().map(|&o| dy[pl * oh * ow + o]).sum();
                    mp.mul(&tensor(dy.clone(), mp.shape(), dt)).unwrap().sum().backward().unwrap();
                    let g = xn.grad().unwrap().to_vec::<f64>();
                    assert_eq!(g[at], want, "max backward {what}");
                    assert_eq!(g.iter().sum::<f64>(), dy.iter().sum::<f64>(), "max backward {what}: every window sends its gradient once");
                }
            }
        }
    }
}

// ----- convolution with fused epilogues --------------------------------------------------

struct ConvCase {
    n: usize,
    c: usize,
    hw: usize,
    o: usize,
    pad: usize,
    stride: usize,
}

/// LeNet's two convolutions (the AVX-512 direct path: 6 channels in wide rows, 16 by
/// channel) and a strided one (the unfolding path).
const CONVS: [ConvCase; 3] = [
    ConvCase { n: 3, c: 1, hw: 28, o: 6, pad: 2, stride: 1 },
    ConvCase { n: 3, c: 6, hw: 14, o: 16, pad: 0, stride: 1 },
    ConvCase { n: 2, c: 1, hw: 28, o: 6, pad: 2, stride: 2 },
];

fn epilogues() -> Vec<Epilogue> {
    let mut v = vec![Epilogue { act: None, pool: Some(Pool2x2::Max) }];
    for act in [Activation::Sigmoid, Activation::Relu, Activation::Tanh] {
        for pool in [None, Some(Pool2x2::Avg), Some(Pool2x2::Max)] {
            v.push(Epilogue { act: Some(act), pool });
        }
    }
    v
}

/// The epilogue as separate ops.
fn unfused(x: &Tensor, w: &Tensor, b: &Tensor, args: Conv2dArgs, ep: Epilogue) -> Tensor {
    let mut y = ops::conv2d(x, w, Some(b), args).unwrap();
    if let Some(a) = ep.act {
        y = a.apply(&y);
    }
    match ep.pool {
        Some(Pool2x2::Avg) => ops::avg_pool2d(&y, Pool2dArgs::new(2)).unwrap(),
        Some(Pool2x2::Max) => ops::max_pool2d(&y, Pool2dArgs::new(2)).unwrap(),
        None => y,
    }
}

#[test]
fn fused_convolution_epilogues_keep_nan_in_values_and_gradients() {
    let mut r = autograd::rng(15);
    for dt in DTYPES {
        for cc in &CONVS {
            let args = Conv2dArgs::new().padding(cc.pad).stride(cc.stride);
            let xs = [cc.n, cc.c, cc.hw, cc.hw];
            let x0 = Tensor::randn(&xs, &mut r).to_vec::<f64>();
            let w = Tensor::randn(&[cc.o, cc.c, 5, 5], &mut r).mul_scalar(0.3).to_dtype(dt);
            let b = Tensor::randn(&[cc.o], &mut r).to_dtype(dt);
            let oh = (cc.hw + 2 * cc.pad - 5) / cc.stride + 1;
            // The input pixel of sample 1, channel 0 that holds NaN: first, middle, last.
            for (py, px) in [(0, 0), (cc.hw / 2, cc.hw / 2 + 1), (cc.hw - 1, cc.hw - 1)] {
                let at = (cc.c * cc.hw + py) * cc.hw + px;
                let x = tensor(with_nan(x0.clone(), &[at]), &xs, dt);
                // Conv outputs whose window covers the pixel, in every channel of sample 1.
                let covered = windows_with((py, px), (5, 5), (cc.stride, cc.stride), (cc.pad, cc.pad), (oh, oh));
                assert!(!covered.is_empty());
                for ep in epilogues() {
                    let what =
                        format!("{dt} conv {}->{} {}x{} stride {} NaN at {:?} {ep:?}", cc.c, cc.o, cc.hw, cc.hw, cc.stride, (py, px));
                    let fused = ops::conv2d_fused(&x, &w, Some(&b), args, ep).unwrap();
                    let want = unfused(&x, &w, &b, args, ep);
                    assert_same(&what, &fused.to_vec::<f64>(), &want.to_vec::<f64>());
                    // Exactly the outputs that read the NaN are NaN.
                    let (plane, hit) = match ep.pool {
                        None => (oh * oh, covered.clone()),
                        Some(_) => {
                            let ph = oh / 2;
                            let hit = (0..ph * ph)
                                .filter(|&o| {
                                    covered
                                        .iter()
                                        .any(|&c| (c / oh / 2, c % oh / 2) == (o / ph, o % ph) && c / oh < 2 * ph && c % oh < 2 * ph)
                                })
                                .collect();
                            (ph * ph, hit)
                        }
                    };
                    let got = fused.to_vec::<f64>();
                    for (i, v) in got.iter().enumerate() {
                        let expect = i / (cc.o * plane) == 1 && hit.contains(&(i % plane));
                        assert_eq!(v.is_nan(), expect, "{what}: output {i} is {v}");
                    }
                }
            }
            // A NaN weight: its output channel is NaN in every sample, the rest unchanged.
            let xc = tensor(x0.clone(), &xs, dt);
            let mut wv = w.to_vec::<f64>();
            wv[3 * cc.c * 25 + 12] = f64::NAN;
            let wn = tensor(wv, w.shape(), dt);
            for ep in epilogues() {
                let got = ops::conv2d_fused(&xc, &wn, Some(&b), args, ep).unwrap();
                let clean = ops::conv2d_fused(&xc, &w, Some(&b), args, ep).unwrap().to_vec::<f64>();
                let plane = got.numel() / (cc.n * cc.o);
                let nan: Vec<bool> = (0..got.numel()).map(|i| i / plane % cc.o == 3).collect();
                assert_nan_exactly_at(&format!("{dt} NaN weight {ep:?}"), &got.to_vec::<f64>(), &clean, &nan);
            }
            // Gradients through the fused backward equal those of the separate ops with a
            // NaN in the input (NaN where those are NaN, the same bits elsewhere).
            let x = tensor(with_nan(x0.clone(), &[(cc.c * cc.hw + cc.hw / 2) * cc.hw + 3]), &xs, dt);
            for ep in epilogues() {
                let grads = |fused: bool| {
                    let (x, w, b) = (x.detach().requires_grad_(), w.detach().requires_grad_(), b.detach().requires_grad_());
                    let y = if fused { ops::conv2d_fused(&x, &w, Some(&b), args, ep).unwrap() } else { unfused(&x, &w, &b, args, ep) };
                    let dy = tensor((0..y.numel()).map(|i| ((i % 5) as f64 - 2.0) * 0.5).collect(), y.shape(), dt);
                    y.mul(&dy).unwrap().sum().backward().unwrap();
                    [x.grad().unwrap(), w.grad().unwrap(), b.grad().unwrap()].map(|g| g.to_vec::<f64>())
                };
                let (f, u) = (grads(true), grads(false));
                for (k, name) in ["input", "weight", "bias"].iter().enumerate() {
                    assert_same(&format!("{dt} {name} gradient {ep:?}"), &f[k], &u[k]);
                }
                // The NaN reaches the weight gradient (it multiplies the NaN input).
                assert!(f[1].iter().any(|v| v.is_nan()), "{dt} {ep:?}");
            }
        }
    }
}

// ----- anomaly mode ----------------------------------------------------------------------

#[test]
fn anomaly_mode_checks_what_a_fused_convolution_computes_before_pooling() {
    use autograd::Error;
    for dt in DTYPES {
        // A 1x1 identity convolution: -inf before the max pooling, which drops it; and an
        // odd last row that no window reads.
        let mut v = vec![0.5; 25];
        v[6] = f64::NEG_INFINITY;
        let drops = tensor(v, &[1, 1, 5, 5], dt);
        let mut v = vec![0.5; 25];
        v[22] = f64::NAN;
        let unread = tensor(v, &[1, 1, 5, 5], dt);
        let w = tensor(vec![1.0], &[1, 1, 1, 1], dt).requires_grad_();
        for (x, ep) in
            [(&drops, Epilogue { act: None, pool: Some(Pool2x2::Max) }), (&unread, Epilogue::act(Activation::Relu).then_pool(Pool2x2::Avg))]
        {
            // Without anomaly mode the pooled output is finite and the step goes through.
            let y = ops::conv2d_fused(x, &w, None, Conv2dArgs::new(), ep).unwrap();
            assert!(y.all_finite(), "{dt} {ep:?}");
            y.sum().backward().unwrap();
            autograd::set_detect_anomaly(true);
            let y = ops::conv2d_fused(x, &w, None, Conv2dArgs::new(), ep).unwrap();
            let e = y.sum().backward().unwrap_err();
            let e2 = autograd::check_finite_graph(&y.sum());
            autograd::set_detect_anomaly(false);
            match e {
                Error::Anomaly { op: "conv2d_fused", position: 0, what } => assert!(what.contains("inside"), "{what}"),
                e => panic!("{dt} {ep:?}: {e}"),
            }
            assert!(matches!(e2, Err(Error::Anomaly { op: "conv2d_fused", .. })), "{e2:?}");
        }
    }
}

#[test]
fn anomaly_mode_checks_the_parameters_after_each_optimiser_step() {
    use nn::Optimizer;
    for dt in DTYPES {
        let make = || autograd::Parameter::new(&tensor(vec![1.0, 2.0], &[2], dt));
        let step = |opt: &mut dyn Optimizer, p: &autograd::Parameter| {
            // Gradient 1e30 at lr 1e308 overflows both dtypes.
            p.tensor().mul_scalar(1e30).sum().backward().unwrap();
            let r = opt.step();
            opt.zero_grad();
            r
        };
        let p = make();
        let mut sgd = nn::Sgd::new(vec![p.clone()], 1e300).unwrap();
        step(&mut sgd, &p).unwrap(); // anomaly mode off: nothing checks
        assert!(!p.data().all_finite());
        for adam in [false, true] {
            let p = make();
            let mut opt: Box<dyn Optimizer> = if adam {
                Box::new(nn::Adam::new(vec![p.clone()], 1e308).unwrap())
            } else {
                Box::new(nn::Sgd::new(vec![p.clone()], 1e308).unwrap())
            };
            autograd::set_detect_anomaly(true);
            let e = step(opt.as_mut(), &p).unwrap_err().to_string();
            autograd::set_detect_anomaly(false);
            let name = if adam { "Adam" } else { "SGD" };
            // SGD: 1 - inf; Adam in f32: inf x 0 (its second moment overflows too).
            assert!(
                e.starts_with(&format!("anomaly: the {name} step left parameter '0' [2] holding ")) && e.ends_with(" at index 0"),
                "{e}"
            );
            assert!(!p.data().all_finite());
        }
    }
}

// ----- checkpoints -----------------------------------------------------------------------

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist")
}

fn parsed(flags: &[&str]) -> LenetArgs {
    let mut a = parse_args(std::iter::once(&"lenet").chain(flags)).unwrap();
    a.data_dir = data_dir();
    a
}

/// `entries` with `value` at index `i` of entry `key`.
fn poisoned(entries: &[(String, Tensor)], key: &str, i: usize, value: f64) -> Vec<(String, Tensor)> {
    let mut e = entries.to_vec();
    let t = &mut e.iter_mut().find(|(k, _)| k == key).unwrap().1;
    let mut v = t.to_vec::<f64>();
    v[i] = value;
    *t = Tensor::from_vec(v, t.shape()).unwrap().to_dtype(t.dtype());
    e
}

#[test]
fn loading_non_finite_weights_is_an_error_naming_the_file_and_the_key() {
    use nn::Module;
    let dir = tempfile::tempdir().unwrap();
    let net = nn::lenet(nn::Pool::Avg, nn::Act::Sigmoid, &mut autograd::rng(1)).unwrap();
    let good = net.state_dict();
    for (value, shown) in [(f64::NAN, "NaN"), (f64::INFINITY, "inf"), (f64::NEG_INFINITY, "-inf")] {
        let bad = poisoned(&good, "3.weight", 7, value);
        let before = net.state_dict();
        let e = net.load_state_dict(&bad).unwrap_err().to_string();
        assert_eq!(e, format!("load_state_dict: '3.weight' holds {shown} at index 7 (a non-finite weight)"));
        // Nothing was loaded.
        for ((_, a), (_, b)) in before.iter().zip(net.state_dict()) {
            assert_eq!(a.to_vec::<f32>(), b.to_vec::<f32>());
        }
        for ext in ["npz", "safetensors"] {
            let path = dir.path().join(format!("bad.{ext}"));
            nn::save(&path, &bad).unwrap();
            // The raw reader returns the array as stored: numpy arrays may hold NaN.
            let raw = nn::load(&path).unwrap();
            let v = raw.iter().find(|(k, _)| k == "3.weight").unwrap().1.to_vec::<f64>();
            assert!(v[7].is_nan() == value.is_nan() && (value.is_nan() || v[7] == value));
            let e = nn::load_state_dict_file(&net, &path).unwrap_err().to_string();
            assert_eq!(e, format!("{}: load_state_dict: '3.weight' holds {shown} at index 7 (a non-finite weight)", path.display()));
        }
    }
}

#[test]
fn lenet_load_and_resume_refuse_checkpoints_with_non_finite_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.npz");
    let mut a = parsed(&["--epochs", "1", "--train-limit", "64", "--test-limit", "10", "--batch-size", "32", "--optimizer", "adam"]);
    a.save = Some(path.clone());
    run(&a, &mut Vec::new()).unwrap();
    let good = nn::load(&path).unwrap();
    for (value, shown) in [(f64::NAN, "NaN"), (f64::INFINITY, "inf")] {
        let bad = dir.path().join(format!("bad-{shown}.npz"));
        nn::save(&bad, &poisoned(&good, "0.weight", 4, value)).unwrap();
        let want = format!("{}: load_state_dict: '0.weight' holds {shown} at index 4 (a non-finite weight)", bad.display());
        let b = bad.to_str().unwrap();
        for flags in [
            &["--load", b, "--eval-only", "--test-limit", "10"][..],
            &["--load", b, "--epochs", "1", "--train-limit", "64", "--test-limit", "10"],
        ] {
            let a = parsed(flags);
            assert_eq!(run(&a, &mut Vec::new()).unwrap_err().to_string(), want, "--load {flags:?}");
        }
        let mut a = parsed(&["--epochs", "2"]);
        a.resume = Some(bad.clone());
        assert_eq!(run(&a, &mut Vec::new()).unwrap_err().to_string(), want, "--resume");
        // A non-finite optimiser moment would turn the weights NaN at the first step.
        let opt = dir.path().join(format!("bad-opt-{shown}.npz"));
        nn::save(&opt, &poisoned(&good, "_train.optimizer.state.3.weight.exp_avg_sq", 0, value)).unwrap();
        a.resume = Some(opt.clone());
        let e = run(&a, &mut Vec::new()).unwrap_err().to_string();
        assert!(
            e.starts_with(&opt.display().to_string())
                && e.contains(&format!("'_train.optimizer.state.3.weight.exp_avg_sq' holds {shown} at index 0")),
            "{e}"
        );
    }
}

/// Every value of every entry of the checkpoint at `path` is finite.
fn assert_all_finite(path: &Path) {
    for (k, t) in nn::load(path).unwrap() {
        assert!(t.all_finite(), "{}: '{k}' is not finite", path.display());
    }
}

/// The checkpoint a divergence message names ("... is PATH"), if any; it must exist.
fn named_checkpoint(msg: &str) -> Option<PathBuf> {
    if msg.ends_with("no checkpoint was written") {
        return None;
    }
    let p = PathBuf::from(msg.rsplit_once(", is ").unwrap_or_else(|| panic!("{msg}")).1);
    assert!(p.exists(), "the message names {} which does not exist: {msg}", p.display());
    Some(p)
}

#[test]
fn the_divergence_guard_keeps_only_finite_checkpoints_and_names_only_written_files() {
    let dir = tempfile::tempdir().unwrap();
    for (act, pool, batch) in [("relu", "max", "64"), ("sigmoid", "avg", "512"), ("relu", "avg", "512")] {
        for lr in ["1e38", "1e12"] {
            let path = dir.path().join(format!("{act}-{pool}-{batch}-{lr}.npz"));
            let flags = [
                "--train-limit",
                "512",
                "--test-limit",
                "20",
                "--act",
                act,
                "--pool",
                pool,
                "--batch-size",
                batch,
                "--epochs",
                "4",
                "--lr",
                lr,
            ];
            let mut a = parsed(&flags);
            a.save = Some(path.clone());
            match run(&a, &mut Vec::new()) {
                Ok(_) => assert_all_finite(&path),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(matches!(e, convnet::cli::RunError::Failed(nn::Error::Diverged(_))), "{msg}");
                    match named_checkpoint(&msg) {
                        Some(p) => assert_all_finite(&p),
                        None => assert!(!path.exists(), "{msg}"),
                    }
                }
            }
        }
    }
    // Resumed from A, saving to B, diverging before B is written: the message names A.
    let a_path = dir.path().join("a.npz");
    let mut a = parsed(&["--train-limit", "256", "--test-limit", "20", "--epochs", "1", "--batch-size", "64"]);
    a.save = Some(a_path.clone());
    run(&a, &mut Vec::new()).unwrap();
    let steep = dir.path().join("steep.npz");
    let steeper = poisoned(&nn::load(&a_path).unwrap(), "_train.setting.lr", 0, 1e38);
    nn::save(&steep, &poisoned(&steeper, "_train.optimizer.param_groups.0.lr", 0, 1e38)).unwrap();
    let b_path = dir.path().join("b.npz");
    let mut r = parsed(&["--epochs", "3"]);
    r.resume = Some(steep.clone());
    r.save = Some(b_path.clone());
    let msg = run(&r, &mut Vec::new()).unwrap_err().to_string();
    let named = named_checkpoint(&msg).unwrap();
    assert_all_finite(&named);
    if !b_path.exists() {
        assert!(msg.ends_with(&format!("after epoch 1, is {}", steep.display())), "{msg}");
    }
}

/// Issue 26: the new activations give NaN exactly where the input is NaN (and the same
/// bits elsewhere); the normalisations make a NaN's row (group) NaN and leave the others;
/// nearest upsampling copies a NaN to exactly the cells that read it; adaptive max pooling
/// makes the bins holding a NaN NaN.
#[test]
fn issue26_layers_keep_nan() {
    type Op = (&'static str, fn(&Tensor) -> Tensor);
    let ops_list: Vec<Op> = vec![
        ("leaky_relu", |x| ops::leaky_relu(x, 0.01).unwrap()),
        ("elu", |x| ops::elu(x, 1.0).unwrap()),
        ("gelu", |x| ops::gelu(x, ops::GeluApproximate::None).unwrap()),
        ("gelu tanh", |x| ops::gelu(x, ops::GeluApproximate::Tanh).unwrap()),
        ("erf", |x| ops::erf(x).unwrap()),
        ("silu", |x| ops::silu(x).unwrap()),
        ("softplus", |x| ops::softplus(x, 1.0, 20.0).unwrap()),
        ("hardtanh", |x| ops::hardtanh(x, -1.0, 1.0).unwrap()),
        ("dropout eval", |x| ops::dropout(x, 0.5, false).unwrap()),
    ];
    for dt in DTYPES {
        for n in LENS {
            let clean_x = tensor(base(n), &[n], dt);
            for (name, op) in &ops_list {
                let clean = op(&clean_x).to_vec::<f64>();
                for p in positions(n) {
                    let got = op(&tensor(with_nan(base(n), &[p]), &[n], dt)).to_vec::<f64>();
                    assert_nan_exactly_at(&format!("{name} {dt} n={n} NaN at {p}"), &got, &clean, &mask(n, &[p]));
                }
            }
        }
        // Rows of 7 values: a NaN poisons its own row only.
        let (rows, d) = (4, 7);
        let clean_x = tensor(base(rows * d), &[rows, d], dt);
        let at = 2 * d + 3;
        let x = tensor(with_nan(base(rows * d), &[at]), &[rows, d], dt);
        let row_mask: Vec<bool> = (0..rows * d).map(|i| i / d == 2).collect();
        let ln = |x: &Tensor| ops::layer_norm(x, &[d], None, None, 1e-5).unwrap().to_vec::<f64>();
        assert_nan_exactly_at(&format!("layer_norm {dt}"), &ln(&x), &ln(&clean_x), &row_mask);
        let gn = |x: &Tensor| ops::group_norm(&x.reshape_to(&[1, rows, d]).unwrap(), rows, None, None, 1e-5).unwrap().to_vec::<f64>();
        assert_nan_exactly_at(&format!("group_norm {dt}"), &gn(&x), &gn(&clean_x), &row_mask);
        // Nearest 2x upsampling of a 4x7 plane: the NaN's 2x2 block.
        let up = |x: &Tensor| {
            let a = ops::InterpolateArgs::scale_factor(2.0, 2.0);
            ops::interpolate(&x.reshape_to(&[1, 1, rows, d]).unwrap(), a).unwrap().to_vec::<f64>()
        };
        let up_mask: Vec<bool> = (0..4 * rows * d).map(|i| (i / (2 * d)) / 2 == 2 && (i % (2 * d)) / 2 == 3).collect();
        assert_nan_exactly_at(&format!("interpolate {dt}"), &up(&x), &up(&clean_x), &up_mask);
        // Adaptive max pooling to 2x2 (bins of 2 rows, 4 columns: [0, 4) and [3, 7)).
        let pool = |x: &Tensor| ops::adaptive_max_pool2d(&x.reshape_to(&[1, rows, d]).unwrap(), (2, 2)).unwrap().to_vec::<f64>();
        assert_nan_exactly_at(&format!("adaptive_max_pool2d {dt}"), &pool(&x), &pool(&clean_x), &[false, false, true, true]);
    }
}
