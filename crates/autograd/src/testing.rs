//! Property-testing helpers for users' own ops and layers (enable the `testing` feature).
//! The library's own proptest suites use exactly these.
//!
//! ```
//! use autograd::testing::{assert_gradcheck, tensor_f64};
//! use proptest::prelude::*;
//!
//! proptest!(|(x in tensor_f64(vec![2, 3], -2.0, 2.0))| {
//!     assert_gradcheck(|v| Ok(v[0].tanh().sum()), &[x.requires_grad_()]);
//! });
//! ```

use crate::gradcheck::{gradcheck, gradgradcheck, GradcheckOptions};
use crate::tensor::Tensor;
use crate::Result;
use proptest::prelude::*;

/// A proptest configuration with `default_cases` cases (CI's budget) unless the
/// `PROPTEST_CASES` environment variable asks for more (a deep run by hand), and no
/// regression files.
pub fn config_from_env(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok());
    ProptestConfig { cases: cases.unwrap_or(default_cases), failure_persistence: None, ..ProptestConfig::default() }
}

/// Shapes of rank `0..=max_rank` with dims in `1..=max_dim`.
pub fn shape(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..=max_dim, 0..=max_rank)
}

/// Two shapes that broadcast together: some dims set to 1 on either side, and one side
/// possibly shorter.
pub fn broadcastable_pair(max_rank: usize, max_dim: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape(max_rank, max_dim)
        .prop_flat_map(|s| {
            let n = s.len();
            (Just(s), prop::collection::vec(0u8..4, n), prop::collection::vec(0u8..4, n), 0..=n)
        })
        .prop_map(|(s, ma, mb, drop)| {
            let a: Vec<usize> = s.iter().zip(&ma).map(|(&d, &m)| if m == 0 { 1 } else { d }).collect();
            let b: Vec<usize> = s.iter().zip(&mb).map(|(&d, &m)| if m == 0 { 1 } else { d }).collect();
            (a, b[drop.min(b.len())..].to_vec())
        })
}

/// An f64 tensor of the given shape with elements in `[lo, hi)`.
pub fn tensor_f64(shape: Vec<usize>, lo: f64, hi: f64) -> impl Strategy<Value = Tensor> {
    let n: usize = shape.iter().product();
    prop::collection::vec(lo..hi, n).prop_map(move |v| Tensor::from_vec(v, &shape).expect("length matches"))
}

/// An f64 tensor whose elements are at least `gap` away from each other (for max and
/// max pooling, whose gradient is undefined at ties).
pub fn distinct_tensor_f64(shape: Vec<usize>, gap: f64) -> impl Strategy<Value = Tensor> {
    let n: usize = shape.iter().product();
    Just((0..n).collect::<Vec<usize>>()).prop_shuffle().prop_map(move |perm| {
        let v: Vec<f64> = perm.iter().map(|&p| (p as f64 - n as f64 / 2.0) * gap).collect();
        Tensor::from_vec(v, &shape).expect("length matches")
    })
}

/// Panics with the gradcheck report unless `f`'s gradients match finite differences.
pub fn assert_gradcheck(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    let r = gradcheck(f, inputs, GradcheckOptions::default()).unwrap_or_else(|e| panic!("gradcheck errored: {e}"));
    assert!(r.passed, "{r}");
}

/// Panics unless second-order gradients of `f` match finite differences of its gradients.
pub fn assert_gradgradcheck(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    let r = gradgradcheck(f, inputs, GradcheckOptions::default()).unwrap_or_else(|e| panic!("gradgradcheck errored: {e}"));
    assert!(r.passed, "{r}");
}
