//! Binary element-wise ops over broadcast and strided views, against the definition
//! (every output element from its operands' elements by index), on shapes large enough
//! for the run-by-run path (a per-channel vector against `[N, C, H, W]`, a row against a
//! matrix, transposed and narrowed views) as well as the general walk.

use autograd::Tensor;
use proptest::prelude::*;

/// Row-major multi-index of flat position `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// Flat position in `shape` (right-aligned against the output's index, size-1 dims
/// broadcast) of output index `idx`.
fn ravel_broadcast(idx: &[usize], shape: &[usize]) -> usize {
    let pad = idx.len() - shape.len();
    shape.iter().enumerate().fold(0, |acc, (d, &n)| acc * n + if n == 1 { 0 } else { idx[pad + d] })
}

/// `f` of the two operands by the definition of broadcasting.
fn reference(a: &Tensor, b: &Tensor, out: &[usize], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    let (av, bv) = (a.to_vec::<f64>(), b.to_vec::<f64>());
    let n: usize = out.iter().product();
    (0..n)
        .map(|i| {
            let idx = unravel(i, out);
            f(av[ravel_broadcast(&idx, a.shape())], bv[ravel_broadcast(&idx, b.shape())])
        })
        .collect()
}

/// A 4-d shape and the shape of an operand broadcast against it: each dim kept or set to
/// 1, leading dims possibly dropped.
fn shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (prop::collection::vec(1usize..12, 4), prop::collection::vec(any::<bool>(), 4), 0usize..3).prop_map(|(full, keep, drop)| {
        let b: Vec<usize> = full.iter().zip(&keep).map(|(&n, &k)| if k { n } else { 1 }).collect();
        (full, b[drop..].to_vec())
    })
}

/// An op under test: its name, the tensor op, and the same on one pair of values.
type BinaryCase = (&'static str, fn(&Tensor, &Tensor) -> autograd::Result<Tensor>, fn(f64, f64) -> f64);

fn check(a: &Tensor, b: &Tensor) {
    let out = autograd::shape::broadcast_shapes("test", a.shape(), b.shape()).unwrap();
    let ops: [BinaryCase; 4] = [
        ("add", |x, y| x.add(y), |x, y| x + y),
        ("sub", |x, y| x.sub(y), |x, y| x - y),
        ("mul", |x, y| x.mul(y), |x, y| x * y),
        ("div", |x, y| x.div(y), |x, y| x / y),
    ];
    for (name, op, f) in ops {
        let got = op(a, b).unwrap();
        assert_eq!(got.shape(), &out[..], "{name}");
        assert_eq!(got.to_vec::<f64>(), reference(a, b, &out, f), "{name} of {:?} and {:?}", a.shape(), b.shape());
        let got = op(b, a).unwrap();
        assert_eq!(got.to_vec::<f64>(), reference(b, a, &out, f), "{name} of {:?} and {:?}", b.shape(), a.shape());
    }
}

fn uniform(shape: &[usize], seed: u64) -> Tensor {
    Tensor::uniform_dtype(shape, 0.5, 2.0, autograd::DType::F64, &mut autograd::rng(seed))
}

#[test]
fn per_channel_vectors_and_rows_broadcast_exactly() {
    let x = uniform(&[5, 7, 6, 6], 1);
    check(&x, &uniform(&[1, 7, 1, 1], 2)); // batch norm's per-channel scale
    check(&x, &uniform(&[7, 1, 1], 3));
    check(&x, &uniform(&[6, 6], 4)); // one plane against every plane
    check(&uniform(&[40, 33], 5), &uniform(&[33], 6)); // a bias row
    check(&uniform(&[40, 33], 7), &uniform(&[40, 1], 8)); // a column
    check(&x, &uniform(&[1], 9));
    // Strided operands: a transposed and a narrowed view.
    let t = uniform(&[6, 6, 7, 5], 10).permute(&[3, 2, 0, 1]).unwrap();
    check(&t, &uniform(&[1, 7, 1, 1], 11));
    let nar = uniform(&[5, 7, 9, 6], 12).narrow(2, 2, 6).unwrap();
    check(&nar, &uniform(&[7, 1, 1], 13));
    check(&nar, &x);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn broadcast_views_match_the_definition((full, part) in shapes(), seed in any::<u64>(), transpose in any::<bool>()) {
        let a = uniform(&full, seed);
        let a = if transpose { a.transpose(1, 3).unwrap().contiguous().transpose(1, 3).unwrap() } else { a };
        check(&a, &uniform(&part, seed ^ 1));
    }
}
