//! `randint` and `randperm` with fixed seeds: every value (and, for permutations, every
//! value at every position) must come up within 4 standard deviations of its expected
//! count, permutations must be permutations, and a seed must fix the stream.

use autograd::{rng, Error, Tensor};

/// Asserts that each count is within 4 standard deviations of `trials * p`.
fn within_4_sigma(what: &str, counts: &[u64], trials: u64, p: f64) {
    let (mean, sd) = (trials as f64 * p, (trials as f64 * p * (1.0 - p)).sqrt());
    for (v, &c) in counts.iter().enumerate() {
        assert!((c as f64 - mean).abs() <= 4.0 * sd, "{what}: value {v} came up {c} times, expected {mean:.0} +- {:.0}", 4.0 * sd);
    }
}

#[test]
fn randint_is_uniform_over_its_range() {
    for (seed, low, high) in [(1u64, 0i64, 10i64), (2, -3, 4), (3, 1_000_000, 1_000_007), (4, -1, 0)] {
        let n = 60_000usize;
        let t = Tensor::randint(low, high, &[200, n / 200], &mut rng(seed)).unwrap();
        assert_eq!((t.dtype(), t.shape()), (autograd::DType::I64, &[200, n / 200][..]));
        let k = (high - low) as usize;
        let mut counts = vec![0u64; k];
        for v in t.to_vec::<i64>() {
            assert!((low..high).contains(&v), "{v} outside [{low}, {high})");
            counts[(v - low) as usize] += 1;
        }
        within_4_sigma(&format!("randint({low}, {high})"), &counts, n as u64, 1.0 / k as f64);
    }
    // The widest range: the sign bit is a fair coin.
    let t = Tensor::randint(i64::MIN, i64::MAX, &[20_000], &mut rng(5)).unwrap().to_vec::<i64>();
    let negative = t.iter().filter(|&&v| v < 0).count() as u64;
    within_4_sigma("randint(i64::MIN, i64::MAX) signs", &[negative, 20_000 - negative], 20_000, 0.5);
}

#[test]
fn randperm_is_a_uniform_permutation() {
    let n = 6usize;
    let trials = 12_000u64;
    let mut r = rng(7);
    let mut at = vec![vec![0u64; n]; n]; // at[position][value]
    for _ in 0..trials {
        let p = Tensor::randperm(n, &mut r).unwrap().to_vec::<i64>();
        let mut seen = p.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..n as i64).collect::<Vec<_>>(), "not a permutation: {p:?}");
        p.iter().enumerate().for_each(|(i, &v)| at[i][v as usize] += 1);
    }
    for (i, counts) in at.iter().enumerate() {
        within_4_sigma(&format!("randperm position {i}"), counts, trials, 1.0 / n as f64);
    }
    let big = Tensor::randperm(10_000, &mut rng(8)).unwrap().to_vec::<i64>();
    let mut sorted = big.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10_000).collect::<Vec<i64>>());
    assert_eq!(Tensor::randperm(0, &mut rng(0)).unwrap().shape(), &[0]);
}

#[test]
fn a_seed_fixes_the_stream_and_bad_arguments_are_errors() {
    let a = Tensor::randint(0, 100, &[50], &mut rng(9)).unwrap();
    assert!(a.equal(&Tensor::randint(0, 100, &[50], &mut rng(9)).unwrap()));
    assert!(!a.equal(&Tensor::randint(0, 100, &[50], &mut rng(10)).unwrap()));
    assert!(Tensor::randperm(50, &mut rng(9)).unwrap().equal(&Tensor::randperm(50, &mut rng(9)).unwrap()));
    let e = Tensor::randint(5, 5, &[2], &mut rng(0)).unwrap_err().to_string();
    assert!(e.starts_with("randint: expects low < high"), "{e}");
    assert!(matches!(Tensor::randint(0, 2, &[usize::MAX, 2], &mut rng(0)), Err(Error::SizeOverflow { op: "randint", .. })));
    assert!(matches!(Tensor::randperm(usize::MAX, &mut rng(0)), Err(Error::SizeOverflow { op: "randperm", .. })));
}
