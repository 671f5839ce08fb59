//! `randint` and `randperm` with fixed seeds: every value (and, for permutations, every
//! value at every position) must come up within 4 standard deviations of its expected
//! count, permutations must be permutations, and a seed must fix the stream.

use autograd::{rng, DType, Error, Generator, Tensor};

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

#[test]
fn generator_draws_depend_only_on_seed_and_position() {
    // One block of 20,000 equals two consecutive blocks, and the state is (seed, offset).
    let mut whole = Generator::new(7);
    let all = Tensor::rand_with(&[20_000], DType::F64, &mut whole).unwrap().to_vec::<f64>();
    assert_eq!((whole.seed(), whole.offset()), (7, 20_000));
    let mut split = Generator::new(7);
    let mut parts = Tensor::rand_with(&[12_345], DType::F64, &mut split).unwrap().to_vec::<f64>();
    let resumed = &mut Generator::from_state(split.seed(), split.offset());
    parts.extend(Tensor::rand_with(&[20_000 - 12_345], DType::F64, resumed).unwrap().to_vec::<f64>());
    assert_eq!(all, parts);
    // Another seed, another stream; every value in [0, 1); f32 is the f64 draw rounded down.
    let other = Tensor::rand_with(&[20_000], DType::F64, &mut Generator::new(8)).unwrap().to_vec::<f64>();
    assert_ne!(all, other);
    assert!(all.iter().all(|u| (0.0..1.0).contains(u)));
    let f32s = Tensor::rand_with(&[20_000], DType::F32, &mut Generator::new(7)).unwrap().to_vec::<f32>();
    for (a, b) in all.iter().zip(&f32s) {
        assert!(*b as f64 <= *a && *a - (*b as f64) < 2f64.powi(-24) && *b < 1.0);
    }
    // The mean of 20,000 uniforms is within 4 standard deviations of 1/2.
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    assert!((mean - 0.5).abs() < 4.0 * (1.0f64 / 12.0 / 20_000.0).sqrt(), "{mean}");
}

#[test]
fn generator_draws_are_bitwise_the_same_at_one_and_two_threads() {
    // Large enough to be filled in parallel blocks.
    let draw = |threads| {
        autograd::set_num_threads(threads).unwrap();
        let mut g = Generator::new(3);
        let u = Tensor::rand_with(&[300_001], DType::F32, &mut g).unwrap().to_vec::<f32>();
        let b = Tensor::bernoulli_with(&[300_001], 0.3, DType::F64, &mut g).unwrap().to_vec::<f64>();
        (u, b, g)
    };
    let one = draw(1);
    let two = draw(2);
    assert!(one.0.iter().zip(&two.0).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(one.1.iter().zip(&two.1).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(one.2, two.2);
}

#[test]
fn bernoulli_has_rate_p_and_checks_its_arguments() {
    for (seed, p) in [(1u64, 0.5), (2, 0.1), (3, 0.9)] {
        let n = 100_000u64;
        let m = Tensor::bernoulli_with(&[n as usize], p, DType::F32, &mut Generator::new(seed)).unwrap().to_vec::<f32>();
        assert!(m.iter().all(|&v| v == 0.0 || v == 1.0));
        let ones = m.iter().filter(|&&v| v == 1.0).count() as u64;
        within_4_sigma(&format!("bernoulli({p})"), &[ones], n, p);
    }
    let mut g = Generator::new(4);
    assert!(Tensor::bernoulli_with(&[1000], 0.0, DType::F64, &mut g).unwrap().to_vec::<f64>().iter().all(|&v| v == 0.0));
    assert!(Tensor::bernoulli_with(&[1000], 1.0, DType::F64, &mut g).unwrap().to_vec::<f64>().iter().all(|&v| v == 1.0));
    let before = g;
    for p in [-0.1, 1.5, f64::NAN] {
        let e = Tensor::bernoulli_with(&[3], p, DType::F32, &mut g).unwrap_err();
        assert!(e.to_string().contains("bernoulli"), "{e}");
    }
    assert!(Tensor::bernoulli_with(&[3], 0.5, DType::I64, &mut g).is_err());
    assert!(Tensor::rand_with(&[3], DType::Bool, &mut g).is_err());
    assert!(Tensor::rand_with(&[usize::MAX, 2], DType::F32, &mut g).is_err());
    assert_eq!(g, before, "a refused draw reserves nothing");
}

#[test]
fn the_default_generator_is_per_thread_and_restorable() {
    autograd::manual_seed(11);
    let a = Tensor::rand_default(&[5], DType::F64).unwrap().to_vec::<f64>();
    let state = autograd::rng_state();
    assert_eq!(state, Generator::from_state(11, 5));
    let b = Tensor::rand_default(&[5], DType::F64).unwrap().to_vec::<f64>();
    autograd::set_rng_state(state);
    assert_eq!(Tensor::rand_default(&[5], DType::F64).unwrap().to_vec::<f64>(), b);
    autograd::manual_seed(11);
    assert_eq!(Tensor::rand_default(&[5], DType::F64).unwrap().to_vec::<f64>(), a);
    // Another thread starts from its own generator (seed 0), untouched by this one's.
    let other = std::thread::spawn(autograd::rng_state).join().unwrap();
    assert_eq!(other, Generator::new(0));
}

#[test]
fn a_generator_round_trips_through_its_state_tensor() {
    let g = Generator::from_state(u64::MAX - 3, 1 << 63);
    let t = g.state_tensor();
    assert_eq!((t.dtype(), t.shape()), (DType::I64, &[2][..]));
    assert_eq!(Generator::from_state_tensor(&t).unwrap(), g);
    for bad in [Tensor::zeros(&[2]), Tensor::from_vec(vec![1i64, 2, 3], &[3]).unwrap()] {
        assert!(Generator::from_state_tensor(&bad).unwrap_err().to_string().contains("Generator::from_state_tensor"));
    }
}
