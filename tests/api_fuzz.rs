//! Issue "Reliability": the public tensor API under random, often invalid, arguments.
//!
//! Every property throws argument combinations at one op or a family of ops (shapes with
//! dims of size 0, dims out of range or repeated, sizes whose product overflows, bad
//! convolution and pooling parameters, mixed dtypes, strided views) and checks each call
//! against a reference formula: valid arguments must give the output shape the formula
//! predicts, invalid ones an error whose message starts with the op's name (`"conv2d: "`).
//! A panic, caught with `catch_unwind`, fails the test. Every successful result that
//! requires grad is differentiated (`sum().backward()`), which must succeed and give each
//! leaf a gradient of its own shape.
//!
//! 256 cases per property (the whole file runs in well under a second in release);
//! `PROPTEST_CASES=N` for a deeper run by hand.

use autograd::{BackwardOptions, DType, Result, Tensor};
use ops::{Conv2dArgs, Pair, Pool2dArgs};
use proptest::prelude::*;
use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};

// ----- the harness --------------------------------------------------------------------

/// What the reference formula says about one call.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Valid arguments: the op must succeed with this output shape.
    Shape(Vec<usize>),
    /// Invalid arguments: the op must fail, naming itself.
    Fail,
    /// Both are fine (a shape containing a 0 whose other dims overflow when multiplied).
    Either,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()
}

/// Runs `f`; a panic fails the test, an error must start with `"NAME: "` for one of `names`.
/// Returns the result, or the error's message.
fn attempt<T>(names: &[&str], args: &dyn Debug, f: impl FnOnce() -> Result<T>) -> std::result::Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Err(p) => panic!("{} panicked ({}) on {args:?}", names[0], panic_message(&*p)),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let msg = e.to_string();
            assert!(
                names.iter().any(|n| msg.starts_with(&format!("{n}: "))),
                "{}: the error does not name the op: {msg:?} on {args:?}",
                names[0]
            );
            Err(msg)
        }
    }
}

/// Compares an outcome with the expectation.
fn verify(names: &[&str], args: &dyn Debug, expect: &Expect, got: std::result::Result<Vec<usize>, String>) {
    match (expect, got) {
        (Expect::Shape(want), Ok(shape)) => assert_eq!(&shape, want, "{}: wrong output shape on {args:?}", names[0]),
        (Expect::Shape(want), Err(msg)) => panic!("{}: rejected valid arguments (expected shape {want:?}): {msg} on {args:?}", names[0]),
        (Expect::Fail, Ok(shape)) => panic!("{}: accepted invalid arguments (gave shape {shape:?}) on {args:?}", names[0]),
        _ => {}
    }
}

/// Runs an op returning a tensor, checks it against `expect`, and returns the tensor.
fn check(names: &[&str], args: &dyn Debug, expect: &Expect, f: impl FnOnce() -> Result<Tensor>) -> Option<Tensor> {
    let got = attempt(names, args, f);
    verify(names, args, expect, got.as_ref().map(|t| t.shape().to_vec()).map_err(String::clone));
    got.ok()
}

/// Differentiates `out.sum()` when `out` requires grad: it must succeed, and every leaf
/// that receives a gradient receives one of its own shape and dtype.
fn backward(op: &str, args: &dyn Debug, out: &Tensor, leaves: &[&Tensor]) {
    // Gradients of a shape like [2^40, 0] pass through huge intermediate shapes: skip them.
    let size = out.shape().iter().filter(|&&d| d != 0).try_fold(1usize, |a, &d| a.checked_mul(d));
    if !out.requires_grad() || size.is_none_or(|s| s > 1 << 16) {
        return;
    }
    // Several ops read the same input view: keep its graph for the next one.
    let retain = BackwardOptions { retain_graph: true, ..BackwardOptions::default() };
    match catch_unwind(AssertUnwindSafe(|| out.sum().backward_with(None, retain))) {
        Err(p) => panic!("{op}: backward panicked ({}) on {args:?}", panic_message(&*p)),
        Ok(Err(e)) => panic!("{op}: backward failed: {e} on {args:?}"),
        Ok(Ok(())) => {}
    }
    for leaf in leaves {
        if let Some(g) = leaf.grad() {
            assert_eq!(g.shape(), leaf.shape(), "{op}: gradient shape on {args:?}");
            assert_eq!(g.dtype(), leaf.dtype(), "{op}: gradient dtype on {args:?}");
        }
    }
}

/// `check` followed by `backward` on a success.
fn check_grad(names: &[&str], args: &dyn Debug, expect: &Expect, leaves: &[&Tensor], f: impl FnOnce() -> Result<Tensor>) {
    if let Some(out) = check(names, args, expect, f) {
        backward(names[0], args, &out, leaves);
    }
}

// ----- inputs -------------------------------------------------------------------------

/// A tensor to build: its shape, dtype, whether it requires grad, and how it is laid out
/// (0 contiguous, 1 a transposed view, 2 a narrowed view with an offset).
#[derive(Debug, Clone)]
struct Spec {
    shape: Vec<usize>,
    f64: bool,
    grad: bool,
    view: u8,
}

/// A built tensor: `t` is what the op gets, `leaf` is where its gradient lands.
struct Input {
    leaf: Tensor,
    t: Tensor,
}

impl Spec {
    fn new(shape: Vec<usize>, f64: bool, grad: bool, view: u8) -> Spec {
        Spec { shape, f64, grad, view }
    }

    fn dtype(&self) -> DType {
        if self.f64 {
            DType::F64
        } else {
            DType::F32
        }
    }

    fn build(&self) -> Input {
        let r = self.shape.len();
        let view = match self.view {
            1 if r >= 2 => 1,
            2 if r >= 1 => 2,
            _ => 0,
        };
        let mut base = self.shape.clone();
        match view {
            1 => base.swap(r - 2, r - 1),
            2 => base[0] += 2,
            _ => {}
        }
        let n: usize = base.iter().product();
        let vals: Vec<f64> = (0..n).map(|i| ((i * 37 % 19) as f64 - 9.0) / 4.0).collect();
        let t = Tensor::from_vec(vals, &base).unwrap().to_dtype(self.dtype());
        let leaf = if self.grad { t.requires_grad_() } else { t };
        let t = match view {
            1 => leaf.transpose(-1, -2).unwrap(),
            2 => leaf.narrow(0, 1, self.shape[0]).unwrap(),
            _ => leaf.clone(),
        };
        assert_eq!(t.shape(), &self.shape[..]);
        Input { leaf, t }
    }
}

/// Shapes of rank `0..=max_rank` with dims `0..=4`.
fn dims(max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..=4usize, 0..=max_rank)
}

fn spec_of(shape: Vec<usize>) -> impl Strategy<Value = Spec> {
    (Just(shape), prop::bool::weighted(0.3), any::<bool>(), 0..3u8).prop_map(|(s, f, g, v)| Spec::new(s, f, g, v))
}

fn spec(max_rank: usize) -> impl Strategy<Value = Spec> {
    dims(max_rank).prop_flat_map(spec_of)
}

/// A dim argument: in range for small ranks, or not.
fn dim_arg() -> impl Strategy<Value = isize> {
    -6isize..6
}

/// A size argument: usually small, sometimes so large that sums and products overflow.
fn size_arg() -> impl Strategy<Value = usize> {
    prop_oneof![12 => 0..6usize, 1 => Just(usize::MAX), 1 => (1usize << 31)..(1usize << 62)]
}

/// A positive parameter, or sometimes 0.
fn pos(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 6 => 1..=max]
}

/// A permutation of `0..n` drawn from `seed` (xorshift Fisher-Yates).
fn shuffled(n: usize, mut seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    v
}

// ----- reference formulas -------------------------------------------------------------

fn norm(dim: isize, rank: usize) -> Option<usize> {
    let d = if dim < 0 { dim + rank as isize } else { dim };
    (0..rank as isize).contains(&d).then_some(d as usize)
}

fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i < r - s.len() { 1 } else { s[i - (r - s.len())] };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Some(x),
            (1, y) => Some(y),
            _ => None,
        })
        .collect()
}

/// The product of `dims`, if it is at most `autograd::shape::MAX_NUMEL` (the most
/// elements a tensor may have; its bytes must fit in `isize::MAX`).
fn fitting_product<'a>(dims: impl IntoIterator<Item = &'a usize>) -> Option<usize> {
    dims.into_iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&p| p <= autograd::shape::MAX_NUMEL)
}

/// `Shape(shape)` if `shape` holds exactly `n` elements. A shape whose non-zero dims
/// multiply past the size limit is refused, even when a 0 makes it empty (its strides
/// would not fit).
fn expect_count(shape: &[usize], n: usize) -> Expect {
    let nonzero = fitting_product(shape.iter().filter(|&&d| d != 0));
    let zero = shape.contains(&0);
    match nonzero {
        None => Expect::Fail,
        Some(p) if (if zero { 0 } else { p }) == n => Expect::Shape(shape.to_vec()),
        Some(_) => Expect::Fail,
    }
}

fn reshape_expect(target: &[isize], numel: usize) -> Expect {
    if target.iter().any(|&s| s < -1) || target.iter().filter(|&&s| s == -1).count() > 1 {
        return Expect::Fail;
    }
    let Some(i) = target.iter().position(|&s| s == -1) else {
        return expect_count(&target.iter().map(|&s| s as usize).collect::<Vec<_>>(), numel);
    };
    let others: Vec<usize> = target.iter().filter(|&&s| s != -1).map(|&s| s as usize).collect();
    if others.contains(&0) {
        return Expect::Fail; // the inferred size would be ambiguous
    }
    match fitting_product(&others) {
        Some(known) if numel.is_multiple_of(known) => {
            let mut s: Vec<usize> = target.iter().map(|&s| s.max(0) as usize).collect();
            s[i] = numel / known;
            Expect::Shape(s)
        }
        _ => Expect::Fail,
    }
}

/// Output length of a sliding window: `floor((in + 2p - d(k-1) - 1) / s) + 1`.
fn window_out(input: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    let span = d * (k - 1) + 1;
    let padded = input + 2 * p;
    (padded >= span).then(|| (padded - span) / s + 1)
}

fn conv_expect(x: &[usize], w: &[usize], bias: Option<&[usize]>, a: Conv2dArgs, same_dtype: bool) -> Expect {
    let (Pair(sh, sw), Pair(ph, pw), Pair(dh, dw), g) = (a.stride, a.padding, a.dilation, a.groups);
    if x.len() != 4 || w.len() != 4 || !same_dtype || [sh, sw, dh, dw, g].contains(&0) || w[2] == 0 || w[3] == 0 {
        return Expect::Fail;
    }
    if x[1] != w[1] * g || !w[0].is_multiple_of(g) || bias.is_some_and(|b| b != [w[0]]) {
        return Expect::Fail;
    }
    match (window_out(x[2], w[2], sh, ph, dh), window_out(x[3], w[3], sw, pw, dw)) {
        (Some(oh), Some(ow)) => Expect::Shape(vec![x[0], w[0], oh, ow]),
        _ => Expect::Fail,
    }
}

fn pool_expect(x: &[usize], a: Pool2dArgs) -> Expect {
    let (Pair(kh, kw), Pair(sh, sw), Pair(ph, pw)) = (a.kernel, a.stride.unwrap_or(a.kernel), a.padding);
    let r = x.len();
    if !(r == 3 || r == 4) || [kh, kw, sh, sw].contains(&0) || 2 * ph > kh || 2 * pw > kw {
        return Expect::Fail;
    }
    match (window_out(x[r - 2], kh, sh, ph, 1), window_out(x[r - 1], kw, sw, pw, 1)) {
        // PyTorch refuses an empty plane, and so do we.
        _ if x[r - 2] == 0 || x[r - 1] == 0 => Expect::Fail,
        (Some(oh), Some(ow)) => Expect::Shape([&x[..r - 2], &[oh, ow]].concat()),
        _ => Expect::Fail,
    }
}

/// The shape of `x` reduced over `d`, kept as size 1 or removed.
fn reduced(x: &[usize], d: usize, keepdim: bool) -> Vec<usize> {
    let mut s = x.to_vec();
    if keepdim {
        s[d] = 1;
    } else {
        s.remove(d);
    }
    s
}

fn matmul_expect(a: &[usize], b: &[usize], same_dtype: bool) -> Expect {
    let (ra, rb) = (a.len(), b.len());
    if ra == 0 || rb == 0 || !same_dtype {
        return Expect::Fail;
    }
    let (ka, kb) = (a[ra - 1], if rb == 1 { b[0] } else { b[rb - 2] });
    if ka != kb {
        return Expect::Fail;
    }
    let batch_a = if ra > 2 { &a[..ra - 2] } else { &[][..] };
    let batch_b = if rb > 2 { &b[..rb - 2] } else { &[][..] };
    let Some(mut out) = broadcast(batch_a, batch_b) else { return Expect::Fail };
    if ra >= 2 {
        out.push(a[ra - 2]);
    }
    if rb >= 2 {
        out.push(b[rb - 1]);
    }
    Expect::Shape(out)
}

// ----- the properties -----------------------------------------------------------------

proptest! {
    #![proptest_config(autograd::testing::config_from_env(256))]

    #[test]
    fn from_vec(len in 0..30usize, shape in prop::collection::vec(size_arg(), 0..=4), f64 in any::<bool>()) {
        let args = (len, &shape, f64);
        let expect = expect_count(&shape, len);
        if f64 {
            check(&["from_vec"], &args, &expect, || Tensor::from_vec(vec![0.5f64; len], &shape));
        } else {
            check(&["from_vec"], &args, &expect, || Tensor::from_vec(vec![0.5f32; len], &shape));
        }
    }

    #[test]
    fn reshape(
        x in spec(4),
        random in prop::collection::vec(prop_oneof![6 => -2isize..7, 2 => Just(-1isize), 1 => Just(isize::MAX), 1 => (1isize << 31)..(1isize << 40)], 0..=5),
        derive in 0..3u8,
        seed in any::<u64>(),
        at in 0..6usize,
    ) {
        // Half the targets are a shuffle of the input's dims (one of them maybe -1).
        let target: Vec<isize> = match derive {
            0 => random,
            _ => {
                let mut t: Vec<isize> = shuffled(x.shape.len(), seed).iter().map(|&i| x.shape[i] as isize).collect();
                if derive == 2 && !t.is_empty() {
                    let n = t.len();
                    t[at % n] = -1;
                }
                t
            }
        };
        let input = x.build();
        let args = (&x, &target);
        let expect = reshape_expect(&target, input.t.numel());
        check_grad(&["reshape"], &args, &expect, &[&input.leaf], || input.t.reshape(&target));
    }

    #[test]
    fn permute(x in spec(4), random in prop::collection::vec(-6isize..6, 0..=5), valid in any::<bool>(), seed in any::<u64>()) {
        let r = x.shape.len();
        let dims: Vec<isize> = if valid {
            shuffled(r, seed).iter().enumerate().map(|(i, &d)| if (seed >> i) & 1 == 1 { d as isize - r as isize } else { d as isize }).collect()
        } else {
            random
        };
        let normed: Option<Vec<usize>> = dims.iter().map(|&d| norm(d, r)).collect();
        let expect = match normed {
            Some(p) if p.len() == r && (0..r).all(|i| p.contains(&i)) => Expect::Shape(p.iter().map(|&i| x.shape[i]).collect()),
            _ => Expect::Fail,
        };
        let input = x.build();
        check_grad(&["permute"], &(&x, &dims), &expect, &[&input.leaf], || input.t.permute(&dims));
    }

    #[test]
    fn transpose_and_t(x in spec(4), d0 in dim_arg(), d1 in dim_arg()) {
        let r = x.shape.len();
        let expect = match (norm(d0, r), norm(d1, r)) {
            (Some(a), Some(b)) => {
                let mut s = x.shape.clone();
                s.swap(a, b);
                Expect::Shape(s)
            }
            _ => Expect::Fail,
        };
        let input = x.build();
        check_grad(&["transpose"], &(&x, d0, d1), &expect, &[&input.leaf], || input.t.transpose(d0, d1));
        let expect = if r == 2 { Expect::Shape(vec![x.shape[1], x.shape[0]]) } else { Expect::Fail };
        check_grad(&["t"], &x, &expect, &[&input.leaf], || input.t.t());
    }

    #[test]
    fn narrow(x in spec(4), dim in dim_arg(), start in size_arg(), len in size_arg()) {
        let expect = match norm(dim, x.shape.len()) {
            Some(d) if start as u128 + len as u128 <= x.shape[d] as u128 => {
                let mut s = x.shape.clone();
                s[d] = len;
                Expect::Shape(s)
            }
            _ => Expect::Fail,
        };
        let input = x.build();
        check_grad(&["narrow"], &(&x, dim, start, len), &expect, &[&input.leaf], || input.t.narrow(dim, start, len));
    }

    /// Each edit: (which dim, new size, kind). Kinds 0-4 resize the cat dim (still valid),
    /// 5 resizes any dim, 6 drops the last dim, 7 switches the dtype.
    #[test]
    fn cat(
        base in dims(4),
        n in 0..4usize,
        edits in prop::collection::vec((0..4usize, 0..5usize, 0..8u8, 0..3u8), 4),
        dim in dim_arg(),
        f64 in any::<bool>(),
        grad in any::<bool>(),
    ) {
        let r = base.len();
        let specs: Vec<Spec> = edits[..n]
            .iter()
            .map(|&(which, size, kind, view)| {
                let mut s = base.clone();
                let mut f = f64;
                match kind {
                    0..=4 => {
                        if let Some(d) = norm(dim, r) {
                            s[d] = size;
                        }
                    }
                    5 if r > 0 => s[which % r] = size,
                    6 => {
                        s.pop();
                    }
                    7 => f = !f,
                    _ => {}
                }
                Spec::new(s, f, grad, view)
            })
            .collect();
        let expect = match specs.first() {
            None => Expect::Fail,
            Some(first) => match norm(dim, first.shape.len()) {
                Some(d) if specs.iter().all(|s| {
                    s.f64 == first.f64
                        && s.shape.len() == first.shape.len()
                        && s.shape.iter().zip(&first.shape).enumerate().all(|(i, (a, b))| i == d || a == b)
                }) =>
                {
                    let mut out = first.shape.clone();
                    out[d] = specs.iter().map(|s| s.shape[d]).sum();
                    Expect::Shape(out)
                }
                _ => Expect::Fail,
            },
        };
        let inputs: Vec<Input> = specs.iter().map(Spec::build).collect();
        let ts: Vec<&Tensor> = inputs.iter().map(|i| &i.t).collect();
        let leaves: Vec<&Tensor> = inputs.iter().map(|i| &i.leaf).collect();
        check_grad(&["cat"], &(&specs, dim), &expect, &leaves, || Tensor::cat(&ts, dim));
    }

    /// Kinds 0-5 keep the shape, 6 resizes a dim, 7 switches the dtype.
    #[test]
    fn stack(
        base in dims(3),
        n in 0..4usize,
        edits in prop::collection::vec((0..4usize, 0..5usize, 0..8u8, 0..3u8), 4),
        dim in dim_arg(),
        f64 in any::<bool>(),
        grad in any::<bool>(),
    ) {
        let r = base.len();
        let specs: Vec<Spec> = edits[..n]
            .iter()
            .map(|&(which, size, kind, view)| {
                let mut s = base.clone();
                let mut f = f64;
                match kind {
                    6 if r > 0 => s[which % r] = size,
                    7 => f = !f,
                    _ => {}
                }
                Spec::new(s, f, grad, view)
            })
            .collect();
        let expect = match specs.first() {
            Some(first) if specs.iter().all(|s| s.shape == first.shape && s.f64 == first.f64) => match norm(dim, r + 1) {
                Some(d) => {
                    let mut out = first.shape.clone();
                    out.insert(d, n);
                    Expect::Shape(out)
                }
                None => Expect::Fail,
            },
            _ => Expect::Fail,
        };
        let inputs: Vec<Input> = specs.iter().map(Spec::build).collect();
        let ts: Vec<&Tensor> = inputs.iter().map(|i| &i.t).collect();
        let leaves: Vec<&Tensor> = inputs.iter().map(|i| &i.leaf).collect();
        check_grad(&["stack"], &(&specs, dim), &expect, &leaves, || Tensor::stack(&ts, dim));
    }

    #[test]
    fn flatten_squeeze_unsqueeze(x in spec(4), start in dim_arg(), end in dim_arg(), dim in dim_arg()) {
        let r = x.shape.len();
        let input = x.build();
        let args = (&x, start, end, dim);
        let expect = match (norm(start, r), norm(end, r)) {
            // A 0-d tensor flattens to [1] whatever the dims (PyTorch accepts only 0 and -1).
            _ if r == 0 => if [0, -1].contains(&start) && [0, -1].contains(&end) { Expect::Shape(vec![1]) } else { Expect::Either },
            (Some(s), Some(e)) if s <= e => {
                Expect::Shape([&x.shape[..s], &[x.shape[s..=e].iter().product()], &x.shape[e + 1..]].concat())
            }
            _ => Expect::Fail,
        };
        check_grad(&["flatten"], &args, &expect, &[&input.leaf], || input.t.flatten(start, end));
        let expect = match norm(dim, r) {
            Some(d) if x.shape[d] == 1 => Expect::Shape([&x.shape[..d], &x.shape[d + 1..]].concat()),
            _ => Expect::Fail,
        };
        check_grad(&["squeeze"], &args, &expect, &[&input.leaf], || input.t.squeeze(dim));
        let expect = match norm(dim, r + 1) {
            Some(d) => Expect::Shape([&x.shape[..d], &[1], &x.shape[d..]].concat()),
            None => Expect::Fail,
        };
        check_grad(&["unsqueeze"], &args, &expect, &[&input.leaf], || input.t.unsqueeze(dim));
    }

    /// Half the targets keep the input's dims, replace its 1s and add leading dims.
    #[test]
    fn expand(
        x in spec(3),
        random in prop::collection::vec(prop_oneof![8 => 0..5usize, 1 => (1usize << 31)..(1usize << 40)], 0..=5),
        derive in any::<bool>(),
        lead in 0..3usize,
    ) {
        let target: Vec<usize> = if derive {
            let mut t: Vec<usize> = random.iter().take(lead).copied().collect();
            t.extend(x.shape.iter().enumerate().map(|(i, &d)| if d == 1 { random.get(i).copied().unwrap_or(1) } else { d }));
            t
        } else {
            random
        };
        let r = x.shape.len();
        let fits = target.len() >= r && x.shape.iter().zip(&target[target.len() - r..]).all(|(&s, &t)| s == t || s == 1);
        let expect = if target == x.shape {
            Expect::Shape(target.clone())
        } else if !fits {
            Expect::Fail
        } else {
            // An element count past the size limit must be refused (even if a 0 makes it 0).
            match fitting_product(target.iter().filter(|&&d| d != 0)) {
                Some(_) => Expect::Shape(target.clone()),
                None => Expect::Fail,
            }
        };
        let input = x.build();
        check_grad(&["expand"], &(&x, &target), &expect, &[&input.leaf], || input.t.expand(&target));
    }

    /// Sums and means over random dim lists (out of range and repeated dims included).
    #[test]
    fn sum_and_mean(x in spec(4), dims in prop::collection::vec(dim_arg(), 0..=4), keepdim in any::<bool>()) {
        let r = x.shape.len();
        let input = x.build();
        let args = (&x, &dims, keepdim);
        check_grad(&["sum"], &args, &Expect::Shape(vec![]), &[&input.leaf], || Ok(input.t.sum()));
        check_grad(&["mean"], &args, &Expect::Shape(vec![]), &[&input.leaf], || Ok(input.t.mean()));
        let normed: Option<Vec<usize>> = dims.iter().map(|&d| norm(d, r)).collect();
        let expect = match normed {
            Some(ds) if (0..ds.len()).all(|i| !ds[..i].contains(&ds[i])) => Expect::Shape(if keepdim {
                x.shape.iter().enumerate().map(|(i, &s)| if ds.contains(&i) { 1 } else { s }).collect()
            } else {
                x.shape.iter().enumerate().filter(|(i, _)| !ds.contains(i)).map(|(_, &s)| s).collect()
            }),
            _ => Expect::Fail,
        };
        check_grad(&["sum", "sum_dims"], &args, &expect, &[&input.leaf], || input.t.sum_dims(&dims, keepdim));
        check_grad(&["mean", "mean_dims"], &args, &expect, &[&input.leaf], || input.t.mean_dims(&dims, keepdim));
    }

    /// max, argmax, logsumexp, softmax and log_softmax: one dim, which must not be empty.
    #[test]
    fn max_and_softmax(x in spec(4), dim in dim_arg(), keepdim in any::<bool>()) {
        let r = x.shape.len();
        let input = x.build();
        let args = (&x, dim, keepdim);
        let d = norm(dim, r).filter(|&d| x.shape[d] > 0);
        let expect_reduced = |keep: bool| d.map_or(Expect::Fail, |d| Expect::Shape(reduced(&x.shape, d, keep)));
        let expect_same = d.map_or(Expect::Fail, |_| Expect::Shape(x.shape.clone()));

        let got = attempt(&["max", "max_dim"], &args, || input.t.max_dim(dim, keepdim));
        if let Ok((values, idx)) = &got {
            let d = d.expect("max succeeded");
            assert_eq!((idx.dtype(), idx.shape()), (DType::I64, values.shape()), "max: indices on {args:?}");
            assert!(idx.to_vec::<i64>().iter().all(|&i| (0..x.shape[d] as i64).contains(&i)), "max: index out of range on {args:?}");
        }
        verify(&["max", "max_dim"], &args, &expect_reduced(keepdim), got.as_ref().map(|(t, _)| t.shape().to_vec()).map_err(String::clone));
        if let Ok((values, _)) = &got {
            backward("max", &args, values, &[&input.leaf]);
        }

        let got = attempt(&["argmax"], &args, || input.t.argmax(dim));
        if let Ok(idx) = &got {
            let d = d.expect("argmax succeeded");
            assert_eq!(idx.dtype(), DType::I64, "argmax: dtype on {args:?}");
            assert!(idx.to_vec::<i64>().iter().all(|&i| (0..x.shape[d] as i64).contains(&i)), "argmax: index out of range on {args:?}");
        }
        verify(&["argmax"], &args, &expect_reduced(false), got.map(|t| t.shape().to_vec()));

        check_grad(&["logsumexp"], &args, &expect_reduced(keepdim), &[&input.leaf], || input.t.logsumexp(dim, keepdim));
        check_grad(&["softmax"], &args, &expect_same, &[&input.leaf], || input.t.softmax(dim));
        check_grad(&["log_softmax"], &args, &expect_same, &[&input.leaf], || input.t.log_softmax(dim));
    }

    /// Index shapes: the input's with `dim` resized (valid), or another dim resized, or
    /// a dim dropped; indices in range, or not, and sometimes one too many or too few.
    #[test]
    fn gather_and_scatter_add(
        x in spec(4),
        dim in dim_arg(),
        shape_edit in (0..6u8, 0..4usize, 0..5usize),
        raw_index in prop::collection::vec(0..6usize, 300),
        index_edit in 0..6u8,
        src in (any::<bool>(), any::<bool>(), 0..3u8, 0..5u8),
    ) {
        let r = x.shape.len();
        let mut ishape = x.shape.clone();
        match shape_edit {
            (0..=3, _, size) => {
                if let Some(d) = norm(dim, r) {
                    ishape[d] = size;
                }
            }
            (4, which, size) if r > 0 => ishape[which % r] = size,
            (5, _, _) => {
                ishape.pop();
            }
            _ => {}
        }
        let n: usize = ishape.iter().product();
        let size = norm(dim, r).map_or(0, |d| x.shape[d]);
        let mut index: Vec<i64> = raw_index.iter().cycle().take(n).map(|&i| if size > 0 { (i % size) as i64 } else { i as i64 }).collect();
        match (index_edit, index.first_mut()) {
            (4, Some(i)) => *i = size as i64,
            (5, Some(i)) => *i = -1,
            _ => {}
        }
        let index_t = Tensor::from_vec(index.clone(), &ishape).unwrap();
        // PyTorch's rule: the input's rank, no larger off `dim`, every index in range.
        let index_ok = |shape: &[usize]| match norm(dim, shape.len()) {
            Some(d) => {
                ishape.len() == shape.len()
                    && ishape.iter().zip(shape).enumerate().all(|(i, (a, b))| i == d || a <= b)
                    && index.iter().all(|&i| i >= 0 && (i as usize) < shape[d])
            }
            None => false,
        };

        let input = x.build();
        let args = (&x, dim, &ishape, &index);
        let expect = if index_ok(&x.shape) { Expect::Shape(ishape.clone()) } else { Expect::Fail };
        check_grad(&["gather"], &args, &expect, &[&input.leaf], || input.t.gather(dim, &index_t));

        // scatter_add: a source (usually of the index's shape) added into x.
        let (f64, grad, view, wrong) = src;
        let mut src_shape = ishape.clone();
        if wrong == 0 {
            src_shape.push(1);
        }
        let s = Spec::new(src_shape.clone(), f64, grad, view);
        let source = s.build();
        let ok = index_ok(&x.shape) && src_shape == ishape && f64 == x.f64;
        let expect = if ok { Expect::Shape(x.shape.clone()) } else { Expect::Fail };
        let args = (&x, &s, dim, &ishape, &index);
        check_grad(&["scatter_add"], &args, &expect, &[&input.leaf, &source.leaf], || input.t.scatter_add(dim, &index_t, &source.t));
    }

    /// Two shapes that broadcast (dims set to 1, leading dims dropped), then maybe one dim
    /// of the right operand changed, which usually makes them incompatible.
    #[test]
    fn add_sub_mul_div(
        base in dims(4),
        masks in (prop::collection::vec(any::<bool>(), 4), prop::collection::vec(any::<bool>(), 4)),
        drop in 0..5usize,
        edit in (0..4u8, 0..4usize, 0..5usize),
        dtypes in (prop::bool::weighted(0.3), 0..12u8),
        grads in (any::<bool>(), any::<bool>()),
        views in (0..3u8, 0..3u8),
    ) {
        let a: Vec<usize> = base.iter().zip(&masks.0).map(|(&d, &m)| if m { 1 } else { d }).collect();
        let mut b: Vec<usize> = base.iter().zip(&masks.1).map(|(&d, &m)| if m { 1 } else { d }).skip(drop.min(base.len())).collect();
        if edit.0 == 0 && !b.is_empty() {
            let n = b.len();
            b[edit.1 % n] = edit.2;
        }
        let (fa, fb) = (dtypes.0, if dtypes.1 == 0 { !dtypes.0 } else { dtypes.0 });
        let (sa, sb) = (Spec::new(a.clone(), fa, grads.0, views.0), Spec::new(b.clone(), fb, grads.1, views.1));
        let (x, y) = (sa.build(), sb.build());
        let expect = match broadcast(&a, &b) {
            Some(s) if fa == fb => Expect::Shape(s),
            _ => Expect::Fail,
        };
        let args = (&sa, &sb);
        let leaves = [&x.leaf, &y.leaf];
        check_grad(&["add"], &args, &expect, &leaves, || x.t.add(&y.t));
        check_grad(&["sub"], &args, &expect, &leaves, || x.t.sub(&y.t));
        check_grad(&["mul"], &args, &expect, &leaves, || x.t.mul(&y.t));
        check_grad(&["div"], &args, &expect, &leaves, || x.t.div(&y.t));
        check_grad(&["maximum"], &args, &expect, &leaves, || x.t.maximum(&y.t));
        check_grad(&["minimum"], &args, &expect, &leaves, || x.t.minimum(&y.t));
        check_grad(&["pow"], &args, &expect, &leaves, || x.t.abs().pow_tensor(&y.t));
    }

    /// 0-d to 4-d operands: vectors, matrices and broadcast batches, with matching or
    /// mismatched inner sizes and batch dims.
    #[test]
    fn matmul(
        ranks in (0..=4usize, 0..=4usize),
        mkn in (0..4usize, 0..4usize, 0..4usize),
        k2 in prop_oneof![4 => Just(None), 1 => (0..4usize).prop_map(Some)],
        batch in prop::collection::vec(0..4usize, 2),
        batch_b in prop_oneof![3 => Just(None), 1 => prop::collection::vec(0..4usize, 2).prop_map(Some)],
        ones in prop::collection::vec(any::<bool>(), 2),
        dtypes in (prop::bool::weighted(0.3), 0..12u8),
        grads in (any::<bool>(), any::<bool>()),
        views in (0..3u8, 0..3u8),
    ) {
        let (m, k, n) = mkn;
        let (ra, rb) = ranks;
        let bb: Vec<usize> = batch_b.unwrap_or_else(|| batch.iter().zip(&ones).map(|(&d, &o)| if o { 1 } else { d }).collect());
        let shape = |rank: usize, batch: &[usize], rows: usize, cols: usize, vector: usize| -> Vec<usize> {
            match rank {
                0 => vec![],
                1 => vec![vector],
                _ => [&batch[2 - (rank - 2).min(2)..], &[rows, cols][..]].concat(),
            }
        };
        let a = shape(ra, &batch, m, k, k);
        let kb = k2.unwrap_or(k);
        let b = shape(rb, &bb, kb, n, kb);
        let (fa, fb) = (dtypes.0, if dtypes.1 == 0 { !dtypes.0 } else { dtypes.0 });
        let (sa, sb) = (Spec::new(a.clone(), fa, grads.0, views.0), Spec::new(b.clone(), fb, grads.1, views.1));
        let (x, y) = (sa.build(), sb.build());
        let expect = matmul_expect(&a, &b, fa == fb);
        let args = (&sa, &sb);
        if let Some(c) = check(&["matmul"], &args, &expect, || ops::matmul(&x.t, &y.t)) {
            if a.last() == Some(&0) {
                assert!(c.to_vec::<f64>().iter().all(|&v| v == 0.0), "matmul: an empty product is not 0 on {args:?}");
            }
            backward("matmul", &args, &c, &[&x.leaf, &y.leaf]);
        }
    }

    #[test]
    fn conv2d(
        nchw in (0..3usize, 0..5usize, 0..7usize, 0..7usize),
        o in 0..5usize,
        kernel in (pos(3), pos(3)),
        stride in (pos(3), pos(3)),
        padding in (0..3usize, 0..3usize),
        dilation in (pos(3), pos(3)),
        groups in prop_oneof![1 => Just(0usize), 4 => Just(1usize), 3 => 2..=4usize],
        weight_c in prop_oneof![5 => Just(None), 1 => (0..5usize).prop_map(Some)],
        bias in 0..5u8,
        ranks in 0..10u8,
        dtypes in (prop::bool::weighted(0.3), 0..16u8),
        grads in (any::<bool>(), any::<bool>(), any::<bool>()),
        views in (0..3u8, 0..3u8),
    ) {
        let (n, c, h, w) = nchw;
        // Usually the input channels a weight of this many groups expects.
        let cw = weight_c.unwrap_or(if groups > 0 && c % groups == 0 { c / groups } else { c });
        let mut xs = vec![n, c, h, w];
        let mut ws = vec![o, cw, kernel.0, kernel.1];
        match ranks {
            0 => {
                xs.remove(0);
            }
            1 => {
                ws.remove(0);
            }
            _ => {}
        }
        let bs: Option<Vec<usize>> = match bias {
            0 | 1 => None,
            2 | 3 => Some(vec![o]),
            _ => Some(vec![o + 1]),
        };
        let f = dtypes.0;
        let (fw, fb) = (if dtypes.1 == 0 { !f } else { f }, if dtypes.1 == 1 { !f } else { f });
        let args = Conv2dArgs::new().stride(stride).padding(padding).dilation(dilation).groups(groups);
        let sx = Spec::new(xs.clone(), f, grads.0, views.0);
        let sw = Spec::new(ws.clone(), fw, grads.1, views.1);
        let sb = bs.clone().map(|b| Spec::new(b, fb, grads.2, 0));
        let (x, wt, b) = (sx.build(), sw.build(), sb.as_ref().map(Spec::build));
        let same = fw == f && (sb.is_none() || fb == f);
        let expect = conv_expect(&xs, &ws, bs.as_deref(), args, same);
        let mut leaves = vec![&x.leaf, &wt.leaf];
        leaves.extend(b.as_ref().map(|b| &b.leaf));
        let desc = (&sx, &sw, &sb, args);
        if let Some(y) = check(&["conv2d"], &desc, &expect, || ops::conv2d(&x.t, &wt.t, b.as_ref().map(|b| &b.t), args)) {
            if ws[1] == 0 {
                // Nothing to correlate: the bias alone (or zeros), not stale memory.
                let want = b.as_ref().map_or(vec![0.0; y.numel()], |b| {
                    let v = b.t.to_vec::<f64>();
                    (0..y.numel()).map(|i| v[i / (y.numel() / xs[0] / ws[0]) % ws[0]]).collect()
                });
                assert_eq!(y.to_vec::<f64>(), want, "conv2d: values on {desc:?}");
            }
            backward("conv2d", &desc, &y, &leaves);
        }
    }

    /// Inputs of rank 2 to 5 (3-d [C, H, W] and 4-d [N, C, H, W] are valid), planes with
    /// 0 rows or columns, windows larger than the input, padding above half the window.
    #[test]
    fn max_and_avg_pool2d(
        lead in prop_oneof![1 => prop::collection::vec(0..4usize, 0), 4 => prop::collection::vec(0..4usize, 1..=2), 1 => prop::collection::vec(0..4usize, 3)],
        hw in (0..7usize, 0..7usize),
        tensor in (any::<bool>(), any::<bool>(), 0..3u8),
        kernel in (pos(4), pos(4)),
        stride in prop_oneof![1 => Just(None), 3 => (pos(3), pos(3)).prop_map(Some)],
        padding in (0..3usize, 0..3usize),
    ) {
        let (f64, grad, view) = tensor;
        let shape: Vec<usize> = [&lead[..], &[hw.0, hw.1]].concat();
        let mut args = Pool2dArgs::new(kernel).padding(padding);
        args.stride = stride.map(Pair::from);
        let s = Spec::new(shape.clone(), f64, grad, view);
        let input = s.build();
        let expect = pool_expect(&shape, args);
        let desc = (&s, args);
        if let Some(out) = check(&["max_pool2d"], &desc, &expect, || ops::max_pool2d(&input.t, args)) {
            backward("max_pool2d", &desc, &out, &[&input.leaf]);
        }
        check_grad(&["avg_pool2d"], &desc, &expect, &[&input.leaf], || ops::avg_pool2d(&input.t, args));
    }

    #[test]
    fn corr2d(x in spec(3), k in spec(3)) {
        let (xs, ks) = (&x.shape, &k.shape);
        let valid = xs.len() == 2 && ks.len() == 2 && ks[0] <= xs[0] && ks[1] <= xs[1];
        let expect = if valid && ks[0] > 0 && ks[1] > 0 && x.f64 == k.f64 {
            Expect::Shape(vec![xs[0] - ks[0] + 1, xs[1] - ks[1] + 1])
        } else {
            Expect::Fail
        };
        let names: &[&str] = &["corr2d"];
        let (a, b) = (x.build(), k.build());
        check_grad(names, &(&x, &k), &expect, &[&a.leaf, &b.leaf], || ops::corr2d(&a.t, &b.t));
    }

    /// Logits usually [N, C]; labels usually N of them, in range or not.
    #[test]
    fn cross_entropy(
        logits in prop_oneof![4 => (0..5usize, 0..5usize).prop_map(|(n, c)| vec![n, c]), 1 => dims(3)].prop_flat_map(spec_of),
        raw in prop::collection::vec(0..7usize, 6),
        count in prop_oneof![4 => Just(0isize), 1 => -1isize..=1],
        in_range in prop::bool::weighted(0.8),
    ) {
        let s = &logits.shape;
        let (n, c) = if s.len() == 2 { (s[0], s[1]) } else { (s.first().copied().unwrap_or(1), 1) };
        let len = (n as isize + count).max(0) as usize;
        let labels: Vec<usize> = raw.iter().cycle().take(len).map(|&l| if in_range && c > 0 { l % c } else { l }).collect();
        let expect = if s.len() != 2 || labels.len() != n || labels.iter().any(|&l| l >= c) {
            Expect::Fail
        } else if c == 0 {
            Expect::Either // an empty batch of no classes
        } else {
            Expect::Shape(vec![])
        };
        let input = logits.build();
        check_grad(&["cross_entropy"], &(&logits, &labels), &expect, &[&input.leaf], || ops::cross_entropy(&input.t, &labels));
    }

    /// Same shapes (valid), broadcastable or unrelated shapes, and mixed dtypes.
    #[test]
    fn mse(a in spec(4), other in dims(4), mode in 0..6u8) {
        let mut b = a.clone();
        match mode {
            0 => b.shape = other,
            1 => b.f64 = !b.f64,
            2 => b.shape.insert(0, 1),
            _ => b.view = (b.view + 1) % 3,
        }
        let expect = if a.shape == b.shape && a.f64 == b.f64 { Expect::Shape(vec![]) } else { Expect::Fail };
        let (x, y) = (a.build(), b.build());
        check_grad(&["mse"], &(&a, &b), &expect, &[&x.leaf, &y.leaf], || ops::mse(&x.t, &y.t));
    }

    /// The element-wise functions of issue 27 never fail on a float tensor of any shape.
    #[test]
    fn more_element_wise(x in spec(4), bounds in (-3.0f64..3.0, -3.0f64..3.0)) {
        let input = x.build();
        let same = Expect::Shape(x.shape.clone());
        let leaves = [&input.leaf];
        for (name, f) in [
            ("rsqrt", (|t: &Tensor| t.rsqrt()) as fn(&Tensor) -> Tensor),
            ("log1p", |t| t.log1p()),
            ("expm1", |t| t.expm1()),
            ("sin", |t| t.sin()),
            ("cos", |t| t.cos()),
            ("log_sigmoid", |t| t.log_sigmoid()),
        ] {
            check_grad(&[name], &x, &same, &leaves, || Ok(f(&input.t)));
        }
        check_grad(&["clamp_min"], &(&x, bounds), &same, &leaves, || Ok(input.t.clamp_min(bounds.0)));
        check_grad(&["clamp_max"], &(&x, bounds), &same, &leaves, || Ok(input.t.clamp_max(bounds.1)));
        check_grad(&["clamp"], &(&x, bounds), &same, &leaves, || Ok(input.t.clamp(bounds.0, bounds.1)));
    }

    /// var/std/prod/cumsum/extremes/norm over random dim lists (out of range, repeated,
    /// over empty dims), with random corrections and p.
    #[test]
    fn statistics(
        x in spec(4),
        dims in prop::collection::vec(dim_arg(), 0..=4),
        dim in dim_arg(),
        keepdim in any::<bool>(),
        correction in prop_oneof![Just(0.0), Just(1.0), -1.0f64..3.0],
        p in prop::sample::select(vec![1.0, 2.0, f64::INFINITY, 3.0, 0.0, f64::NAN]),
    ) {
        let r = x.shape.len();
        let input = x.build();
        let leaves = [&input.leaf];
        let args = (&x, &dims, dim, keepdim, correction, p);
        // Reductions over a list: every dim when empty; a bad or repeated dim fails.
        let normed: Option<Vec<usize>> = if dims.is_empty() { Some((0..r).collect()) } else { dims.iter().map(|&d| norm(d, r)).collect() };
        let normed = normed.filter(|ds| (0..ds.len()).all(|i| !ds[..i].contains(&ds[i])));
        let shape_over = |ds: &[usize], keep: bool| -> Vec<usize> {
            if keep {
                x.shape.iter().enumerate().map(|(i, &s)| if ds.contains(&i) { 1 } else { s }).collect()
            } else {
                x.shape.iter().enumerate().filter(|(i, _)| !ds.contains(i)).map(|(_, &s)| s).collect()
            }
        };
        let over = normed.as_ref().map_or(Expect::Fail, |ds| Expect::Shape(shape_over(ds, keepdim)));
        let nonempty = normed.as_ref().filter(|ds| ds.iter().all(|&d| x.shape[d] > 0));
        let over_nonempty = nonempty.map_or(Expect::Fail, |ds| Expect::Shape(shape_over(ds, keepdim)));
        check_grad(&["var"], &args, &over, &leaves, || input.t.var_dims(&dims, correction, keepdim));
        check_grad(&["std"], &args, &over, &leaves, || input.t.std_dims(&dims, correction, keepdim));
        check_grad(&["amax"], &args, &over_nonempty, &leaves, || input.t.amax(&dims, keepdim));
        check_grad(&["amin"], &args, &over_nonempty, &leaves, || input.t.amin(&dims, keepdim));
        let norm_expect = if p == 1.0 || p == 2.0 { over.clone() } else if p == f64::INFINITY { over_nonempty.clone() } else { Expect::Fail };
        check_grad(&["norm"], &args, &norm_expect, &leaves, || input.t.norm_dims(p, &dims, keepdim));
        // Whole-tensor reductions.
        let scalar = Expect::Shape(vec![]);
        let full = if x.shape.contains(&0) { Expect::Fail } else { scalar.clone() };
        check_grad(&["var"], &args, &scalar, &leaves, || input.t.var(correction));
        check_grad(&["std"], &args, &scalar, &leaves, || input.t.std(correction));
        check_grad(&["prod"], &args, &scalar, &leaves, || input.t.prod());
        check_grad(&["max"], &args, &full, &leaves, || input.t.max());
        check_grad(&["min"], &args, &full, &leaves, || input.t.min());
        check_grad(&["norm"], &args, &if p == f64::INFINITY { full.clone() } else if p == 1.0 || p == 2.0 { scalar.clone() } else { Expect::Fail }, &leaves, || input.t.norm(p));
        // One dim.
        let d = norm(dim, r);
        let one = |keep: bool| d.map_or(Expect::Fail, |d| Expect::Shape(reduced(&x.shape, d, keep)));
        check_grad(&["prod"], &args, &one(keepdim), &leaves, || input.t.prod_dim(dim, keepdim));
        let cum = if r == 0 { if [0, -1].contains(&dim) { Expect::Shape(vec![]) } else { Expect::Fail } } else { d.map_or(Expect::Fail, |_| Expect::Shape(x.shape.clone())) };
        check_grad(&["cumsum"], &args, &cum, &leaves, || input.t.cumsum(dim));
        let got = attempt(&["min"], &args, || input.t.min_dim(dim, keepdim));
        if let Ok((values, idx)) = &got {
            let d = d.expect("min succeeded");
            assert_eq!((idx.dtype(), idx.shape()), (DType::I64, values.shape()), "min: indices on {args:?}");
            assert!(idx.to_vec::<i64>().iter().all(|&i| (0..x.shape[d] as i64).contains(&i)), "min: index out of range on {args:?}");
        }
        let expect = d.filter(|&d| x.shape[d] > 0).map_or(Expect::Fail, |d| Expect::Shape(reduced(&x.shape, d, keepdim)));
        verify(&["min"], &args, &expect, got.as_ref().map(|(t, _)| t.shape().to_vec()).map_err(String::clone));
        if let Ok((values, _)) = &got {
            backward("min", &args, values, &[&input.leaf]);
        }
    }

    /// Sizes that overflow, empty ranges, bad dtypes.
    #[test]
    fn creation(n in size_arg(), m in size_arg(), ends in (-5.0f64..5.0, -5.0f64..5.0), bounds in (-4i64..4, -4i64..4), dtype in 0..4u8) {
        let dtype = [DType::F32, DType::F64, DType::I64, DType::Bool][dtype as usize];
        let args = (n, m, ends, bounds, dtype);
        let shape = [n, m];
        let huge = |s: &[usize]| s.iter().filter(|&&d| d != 0).try_fold(1usize, |a, &d| a.checked_mul(d)).is_none_or(|p| p > 1 << 20);
        // Legal but huge results would be allocated: only their failure is checked.
        if !huge(&shape) || fitting_product(shape.iter().filter(|&&d| d != 0)).is_none() {
            check(&["eye"], &args, &expect_count(&shape, n.saturating_mul(m)), || Tensor::eye_dtype(n, m, dtype));
        }
        if !huge(&[n]) || n > autograd::shape::MAX_NUMEL {
            let expect = if n > autograd::shape::MAX_NUMEL || !dtype.is_float() { Expect::Fail } else { Expect::Shape(vec![n]) };
            check(&["linspace"], &args, &expect, || Tensor::linspace_dtype(ends.0, ends.1, n, dtype));
            let expect = if n > autograd::shape::MAX_NUMEL { Expect::Fail } else { Expect::Shape(vec![n]) };
            check(&["randperm"], &args, &expect, || Tensor::randperm(n, &mut autograd::rng(1)));
            let expect = if bounds.0 >= bounds.1 || n > autograd::shape::MAX_NUMEL { Expect::Fail } else { Expect::Shape(vec![n]) };
            check(&["randint"], &args, &expect, || Tensor::randint(bounds.0, bounds.1, &[n], &mut autograd::rng(1)));
        }
    }

    /// Class-index losses: targets of the right shape or not, in range, ignored or not;
    /// weights of the right length and dtype or not; smoothing in [0, 1] or not.
    #[test]
    fn class_index_losses(
        logits in prop_oneof![4 => (0..4usize, 0..4usize).prop_map(|(n, c)| vec![n, c]), 2 => (0..3usize, 1..4usize, 0..3usize).prop_map(|(n, c, d)| vec![n, c, d]), 1 => dims(3)].prop_flat_map(spec_of),
        raw in prop::collection::vec(-1i64..5, 12),
        edits in (0..6u8, prop::bool::weighted(0.3), 0..4u8, 0..4u8),
        smoothing in prop_oneof![4 => 0.0f64..1.0, 1 => Just(1.5), 1 => Just(-0.1)],
    ) {
        let (tshape_edit, ignore, weight_edit, red) = edits;
        let s = &logits.shape;
        let c = match s.len() { 0 => 0, 1 => s[0], _ => s[1] };
        let mut tshape: Vec<usize> = match s.len() { 0 | 1 => vec![], _ => [&s[..1], &s[2..]].concat() };
        if tshape_edit == 0 {
            tshape.push(1);
        }
        let n: usize = tshape.iter().product();
        let t: Vec<i64> = raw.iter().cycle().take(n).map(|&v| if v == -1 && ignore { -100 } else if c > 0 && v >= 0 && tshape_edit != 1 { v % c as i64 } else { v }).collect();
        let targets = Tensor::from_vec(t.clone(), &tshape).unwrap();
        let weight = match weight_edit {
            0 => Some(Tensor::ones_dtype(&[c], logits.dtype())),
            1 => Some(Tensor::ones_dtype(&[c + 1], logits.dtype())),
            2 => Some(Tensor::ones_dtype(&[c], if logits.f64 { DType::F32 } else { DType::F64 })),
            _ => None,
        };
        let reduction = [ops::Reduction::Mean, ops::Reduction::Sum, ops::Reduction::None, ops::Reduction::BatchMean][red as usize];
        let shape_ok = !s.is_empty() && c > 0 && tshape_edit != 0;
        let labels_ok = t.iter().all(|&v| v == -100 || (0..c as i64).contains(&v));
        let weight_ok = weight_edit >= 3 || weight_edit == 0;
        let valid = shape_ok && labels_ok && weight_ok && reduction != ops::Reduction::BatchMean;
        let out = if reduction == ops::Reduction::None { tshape.clone() } else { vec![] };
        let input = logits.build();
        let args = (&logits, &t, &tshape, weight_edit, reduction, smoothing);
        let opts = ops::CrossEntropyOptions { weight: weight.clone(), reduction, label_smoothing: smoothing, ..Default::default() };
        let expect = if valid && (0.0..=1.0).contains(&smoothing) { Expect::Shape(out.clone()) } else { Expect::Fail };
        check_grad(&["cross_entropy"], &args, &expect, &[&input.leaf], || ops::cross_entropy_with(&input.t, &targets, &opts));
        let opts = ops::NllLossOptions { weight, reduction, ..Default::default() };
        let expect = if valid { Expect::Shape(out) } else { Expect::Fail };
        check_grad(&["nll_loss"], &args, &expect, &[&input.leaf], || ops::nll_loss(&input.t, &targets, &opts));
    }

    /// Element-wise losses: same shapes and dtypes (valid), or not; weights that broadcast
    /// or not; bad beta and delta; every reduction.
    #[test]
    fn element_wise_losses(a in spec(3), other in dims(3), mode in 0..6u8, red in 0..4u8, w in (0..4u8, 0..4u8), k in prop_oneof![3 => 0.1f64..2.0, 1 => Just(0.0), 1 => Just(-1.0)]) {
        let mut b = a.clone();
        match mode {
            0 => b.shape = other,
            1 => b.f64 = !b.f64,
            2 => b.shape.insert(0, 1),
            _ => b.view = (b.view + 1) % 3,
        }
        let reduction = [ops::Reduction::Mean, ops::Reduction::Sum, ops::Reduction::None, ops::Reduction::BatchMean][red as usize];
        let pair_ok = a.shape == b.shape && a.f64 == b.f64;
        let out = if reduction == ops::Reduction::None { a.shape.clone() } else { vec![] };
        let valid = |ok: bool, batchmean_ok: bool| {
            if pair_ok && ok && (reduction != ops::Reduction::BatchMean || batchmean_ok) { Expect::Shape(out.clone()) } else { Expect::Fail }
        };
        let (x, y) = (a.build(), b.build());
        let leaves = [&x.leaf, &y.leaf];
        let args = (&a, &b, reduction, w, k);
        check_grad(&["l1_loss"], &args, &valid(true, false), &leaves, || ops::l1_loss(&x.t, &y.t, reduction));
        check_grad(&["mse_loss"], &args, &valid(true, false), &leaves, || ops::mse_loss(&x.t, &y.t, reduction));
        check_grad(&["smooth_l1_loss"], &args, &valid(k >= 0.0, false), &leaves, || ops::smooth_l1_loss(&x.t, &y.t, reduction, k));
        check_grad(&["huber_loss"], &args, &valid(k > 0.0, false), &leaves, || ops::huber_loss(&x.t, &y.t, reduction, k));
        check_grad(&["kl_div"], &args, &valid(true, true), &leaves, || ops::kl_div(&x.t, &y.t, reduction, k > 1.0));
        // Weights: a trailing slice of the input's shape (broadcasts), or one dim too long.
        let weight_of = |edit: u8| -> Option<(Tensor, bool)> {
            let dtype = if a.f64 { DType::F64 } else { DType::F32 };
            match edit {
                0 => None,
                1 => Some((Tensor::ones_dtype(&a.shape[a.shape.len().min(1)..], dtype), true)),
                2 => Some((Tensor::ones_dtype(&[a.shape.last().map_or(2, |&d| d + 2)], dtype), false)),
                _ => Some((Tensor::ones_dtype(&[], if a.f64 { DType::F32 } else { DType::F64 }), false)),
            }
        };
        let (wt, pw) = (weight_of(w.0), weight_of(w.1));
        let ok = |o: &Option<(Tensor, bool)>| o.as_ref().is_none_or(|(_, ok)| *ok);
        let (p, q) = (x.t.sigmoid(), y.t.sigmoid());
        check_grad(&["binary_cross_entropy"], &args, &valid(ok(&wt), false), &leaves, || {
            ops::binary_cross_entropy(&p, &q, wt.as_ref().map(|w| &w.0), reduction)
        });
        check_grad(&["binary_cross_entropy_with_logits"], &args, &valid(ok(&wt) && ok(&pw), false), &leaves, || {
            ops::binary_cross_entropy_with_logits(&x.t, &q, wt.as_ref().map(|w| &w.0), pw.as_ref().map(|w| &w.0), reduction)
        });
    }
}

// ----- issue 26: the new layers' ops ----------------------------------------------------

/// Output side of a transposed convolution, `None` when not positive.
fn transposed_out(input: usize, k: usize, s: usize, p: usize, d: usize, op: usize) -> Option<usize> {
    let v = (input as i128 - 1) * s as i128 - 2 * p as i128 + d as i128 * (k as i128 - 1) + op as i128 + 1;
    (v >= 1).then_some(v as usize)
}

proptest! {
    #![proptest_config(autograd::testing::config_from_env(256))]

    /// The activations take any float tensor; only their own parameters can be invalid.
    #[test]
    fn issue26_activations(x in spec(4), beta in prop_oneof![4 => 0.5f64..2.0, 1 => Just(0.0)], bounds in (-2.0f64..2.0, -2.0f64..2.0)) {
        let input = x.build();
        let same = Expect::Shape(x.shape.clone());
        let leaves = [&input.leaf];
        let t = &input.t;
        check_grad(&["leaky_relu"], &x, &same, &leaves, || ops::leaky_relu(t, 0.1));
        check_grad(&["elu"], &x, &same, &leaves, || ops::elu(t, 1.0));
        check_grad(&["gelu"], &x, &same, &leaves, || ops::gelu(t, ops::GeluApproximate::None));
        check_grad(&["gelu"], &x, &same, &leaves, || ops::gelu(t, ops::GeluApproximate::Tanh));
        check_grad(&["erf"], &x, &same, &leaves, || ops::erf(t));
        check_grad(&["silu"], &x, &same, &leaves, || ops::silu(t));
        let sp = if beta == 0.0 { Expect::Fail } else { same.clone() };
        check_grad(&["softplus"], &(&x, beta), &sp, &leaves, || ops::softplus(t, beta, 20.0));
        let ht = if bounds.0 > bounds.1 { Expect::Fail } else { same.clone() };
        check_grad(&["hardtanh"], &(&x, bounds), &ht, &leaves, || ops::hardtanh(t, bounds.0, bounds.1));
    }

    /// Any rank, probabilities in and out of [0, 1]; dropout2d takes ranks 3 and 4.
    #[test]
    fn issue26_dropout(x in spec(5), p in prop_oneof![4 => 0.0f64..=1.0, 1 => Just(1.0), 1 => Just(0.0), 1 => -0.5f64..0.0, 1 => 1.01f64..2.0], training in any::<bool>()) {
        let input = x.build();
        let ok = (0.0..=1.0).contains(&p);
        let args = (&x, p, training);
        let same = if ok { Expect::Shape(x.shape.clone()) } else { Expect::Fail };
        check_grad(&["dropout"], &args, &same, &[&input.leaf], || ops::dropout(&input.t, p, training));
        let r = x.shape.len();
        let d2 = if ok && (r == 3 || r == 4) { Expect::Shape(x.shape.clone()) } else { Expect::Fail };
        check_grad(&["dropout2d"], &args, &d2, &[&input.leaf], || ops::dropout2d(&input.t, p, training));
    }

    /// Normalised shapes that are a suffix of the input's or not; parameters of the right
    /// shape or not; group counts that divide the channels or not.
    #[test]
    fn issue26_layer_and_group_norm(x in spec(4), k in 0..4usize, wrong in prop::collection::vec(0..4usize, 0..=3), which in 0..4u8, groups in 0..5usize, affine in 0..3u8) {
        let r = x.shape.len();
        let normalized: Vec<usize> = if which == 0 { wrong } else { x.shape[r - k.min(r)..].to_vec() };
        let dtype = if x.f64 { DType::F64 } else { DType::F32 };
        let input = x.build();
        let suffix = !normalized.is_empty() && normalized.len() <= r && x.shape[r - normalized.len()..] == normalized[..];
        let (w, good) = match affine {
            0 => (None, true),
            1 => (Some(Tensor::ones_dtype(&normalized, dtype).requires_grad_()), true),
            _ => (Some(Tensor::ones_dtype(&[normalized.iter().product::<usize>() + 1], dtype)), false),
        };
        let expect = if suffix && good { Expect::Shape(x.shape.clone()) } else { Expect::Fail };
        let args = (&x, &normalized, affine);
        check_grad(&["layer_norm"], &args, &expect, &[&input.leaf], || ops::layer_norm(&input.t, &normalized, w.as_ref(), None, 1e-5));
        let c = x.shape.get(1).copied().unwrap_or(0);
        let wc = match affine {
            0 => None,
            1 => Some(Tensor::ones_dtype(&[c], dtype).requires_grad_()),
            _ => Some(Tensor::ones_dtype(&[c + 1], dtype)),
        };
        let ok = r >= 2 && groups > 0 && c % groups == 0 && affine != 2;
        let expect = if ok { Expect::Shape(x.shape.clone()) } else { Expect::Fail };
        check_grad(&["group_norm"], &(&x, groups, affine), &expect, &[&input.leaf], || ops::group_norm(&input.t, groups, wc.as_ref(), wc.as_ref(), 1e-5));
    }

    #[test]
    fn issue26_conv_transpose2d(
        nchw in (0..3usize, 0..5usize, 0..5usize, 0..5usize),
        cout_g in 0..3usize,
        kernel in (pos(3), pos(3)),
        stride in (pos(3), pos(3)),
        padding in (0..3usize, 0..3usize),
        output_padding in (0..3usize, 0..3usize),
        dilation in (pos(3), pos(3)),
        groups in prop_oneof![1 => Just(0usize), 4 => Just(1usize), 3 => 2..=3usize],
        weight_c in prop_oneof![5 => Just(None), 1 => (0..5usize).prop_map(Some)],
        bias in 0..3u8,
        rank in 0..8u8,
        f in prop::bool::weighted(0.3),
        grads in (any::<bool>(), any::<bool>()),
    ) {
        let (n, c, h, w) = nchw;
        let mut xs = vec![n, c, h, w];
        let ws = vec![weight_c.unwrap_or(c), cout_g, kernel.0, kernel.1];
        if rank == 0 {
            xs.remove(0);
        }
        let cout = cout_g * groups;
        let bs: Option<Vec<usize>> = match bias { 0 => None, 1 => Some(vec![cout]), _ => Some(vec![cout + 1]) };
        let args = ops::ConvTranspose2dArgs::new().stride(stride).padding(padding).output_padding(output_padding).dilation(dilation).groups(groups);
        let sx = Spec::new(xs.clone(), f, grads.0, 0);
        let sw = Spec::new(ws.clone(), f, grads.1, 0);
        let (x, wt) = (sx.build(), sw.build());
        let b = bs.as_ref().map(|s| Tensor::ones_dtype(s, sx.dtype()));
        let (Pair(sh, sww), Pair(dh, dw), Pair(oph, opw)) = (args.conv.stride, args.conv.dilation, args.output_padding);
        let valid = xs.len() == 4
            && ![sh, sww, dh, dw, kernel.0, kernel.1].contains(&0)
            && groups > 0
            && ws[0] == c
            && c % groups == 0
            && (oph < sh || oph < dh)
            && (opw < sww || opw < dw)
            && h > 0
            && w > 0
            && bias != 2;
        let expect = match (valid, transposed_out(h, kernel.0, sh, padding.0, dh, oph), transposed_out(w, kernel.1, sww, padding.1, dw, opw)) {
            (true, Some(oh), Some(ow)) => Expect::Shape(vec![n, cout, oh, ow]),
            _ => Expect::Fail,
        };
        let desc = (&sx, &sw, &bs, args);
        check_grad(&["conv_transpose2d"], &desc, &expect, &[&x.leaf, &wt.leaf], || ops::conv_transpose2d(&x.t, &wt.t, b.as_ref(), args));
    }

    /// Weights of rank 1 to 3, indices in range or not, i64 or float, padding rows in
    /// range or not.
    #[test]
    fn issue26_embedding(weight in (1..3usize).prop_flat_map(|r| prop::collection::vec(0..4usize, r)).prop_flat_map(spec_of), raw in prop::collection::vec(-1i64..6, 0..6), pad in prop_oneof![2 => Just(None), 1 => (-6isize..6).prop_map(Some)], float_idx in prop::bool::weighted(0.1)) {
        let s = &weight.shape;
        let num = s[0];
        let idx = if float_idx { Tensor::zeros(&[raw.len()]) } else { Tensor::from_vec(raw.clone(), &[raw.len()]).unwrap() };
        let pad_ok = pad.is_none_or(|p| (-(num as isize)..num as isize).contains(&p));
        let valid = s.len() == 2 && !float_idx && pad_ok && raw.iter().all(|&i| (0..num as i64).contains(&i));
        let expect = if valid { Expect::Shape(vec![raw.len(), s[1]]) } else { Expect::Fail };
        let w = weight.build();
        let opts = ops::EmbeddingOptions { padding_idx: pad, scale_grad_by_freq: pad.is_some() };
        check_grad(&["embedding"], &(&weight, &raw, pad), &expect, &[&w.leaf], || ops::embedding(&w.t, &idx, opts));
    }

    #[test]
    fn issue26_adaptive_max_pool2d(x in spec(5), out in (0..4usize, 0..4usize)) {
        let r = x.shape.len();
        let valid = (3..=4).contains(&r) && out.0 > 0 && out.1 > 0 && x.shape[r - 2] > 0 && x.shape[r - 1] > 0;
        let expect = if valid { Expect::Shape([&x.shape[..r - 2], &[out.0, out.1]].concat()) } else { Expect::Fail };
        let input = x.build();
        check_grad(&["adaptive_max_pool2d"], &(&x, out), &expect, &[&input.leaf], || ops::adaptive_max_pool2d(&input.t, out));
    }

    #[test]
    fn issue26_interpolate(
        x in spec(5),
        size in prop_oneof![2 => Just(None), 3 => (0..6usize, 0..6usize).prop_map(Some)],
        scale in prop_oneof![2 => Just(None), 3 => (prop_oneof![4 => 0.3f64..3.0, 1 => Just(0.0), 1 => Just(-1.0), 1 => Just(f64::NAN)], 0.3f64..3.0).prop_map(Some)],
        bilinear in any::<bool>(),
        align in prop_oneof![Just(None), Just(Some(true)), Just(Some(false))],
        recompute in prop_oneof![Just(None), Just(Some(true))],
    ) {
        let mode = if bilinear { ops::InterpolateMode::Bilinear } else { ops::InterpolateMode::Nearest };
        let a = ops::InterpolateArgs { size: size.map(Pair::from), scale_factor: scale, mode, align_corners: align, recompute_scale_factor: recompute };
        let s = &x.shape;
        let out = match (size, scale) {
            (Some(sz), None) if recompute != Some(true) => Some(sz),
            (None, Some((sh, sw))) if s.len() == 4 && sh > 0.0 && sw > 0.0 => Some(((s[2] as f64 * sh) as usize, (s[3] as f64 * sw) as usize)),
            _ => None,
        };
        let valid = s.len() == 4 && !s.contains(&0) && !(mode == ops::InterpolateMode::Nearest && align.is_some());
        let expect = match out {
            Some((oh, ow)) if valid && oh > 0 && ow > 0 => Expect::Shape(vec![s[0], s[1], oh, ow]),
            _ => Expect::Fail,
        };
        let input = x.build();
        check_grad(&["interpolate"], &(&x, a), &expect, &[&input.leaf], || ops::interpolate(&input.t, a));
    }
}
