//! `RandomCropFlip`: every output is the input shifted by a crop offset in `-p..=p` (zeros
//! where the padding shows) and maybe mirrored; offsets and flips are uniform; the draws
//! come from the default generator, so they are the same at any thread count and resume
//! with its state.

use autograd::{manual_seed, rng_state, set_rng_state, Generator};
use nn::data::RandomCropFlip;
use nn::{Dataset, ImageDataset};

const H: usize = 6;
const W: usize = 5;

/// `n` images `[2, H, W]` whose pixels are distinct and non-zero.
fn dataset(n: usize) -> ImageDataset {
    let per = 2 * H * W;
    let images: Vec<f32> = (0..n * per).map(|i| 1.0 + i as f32).collect();
    ImageDataset::new(images, (0..n).map(|i| i % 10).collect(), [2, H, W]).unwrap()
}

/// The input shifted by `(dy, dx)` (output pixel `(i, j)` reads `(i + dy, j + dx)`, zero
/// outside) and mirrored if `flip`.
fn shifted(src: &[f32], dy: isize, dx: isize, flip: bool) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    for c in 0..2 {
        for i in 0..H {
            for j in 0..W {
                let (si, sj) = (i as isize + dy, j as isize + dx);
                if (0..H as isize).contains(&si) && (0..W as isize).contains(&sj) {
                    let dj = if flip { W - 1 - j } else { j };
                    out[(c * H + i) * W + dj] = src[(c * H + si as usize) * W + sj as usize];
                }
            }
        }
    }
    out
}

#[test]
fn each_sample_is_a_padded_crop_maybe_flipped_with_uniform_offsets() {
    let p = 2usize;
    let n = 3000;
    let aug = RandomCropFlip::new(dataset(n), p);
    manual_seed(9);
    let idx: Vec<usize> = (0..n).collect();
    let (x, y) = aug.batch(&idx).unwrap();
    assert_eq!(y, (0..n).map(|i| i % 10).collect::<Vec<_>>());
    assert_eq!(rng_state(), Generator::from_state(9, 3 * n as u64), "three draws a sample");
    let out = x.to_vec::<f32>();
    let per = 2 * H * W;
    let (plain, _) = dataset(n).batch(&idx).unwrap();
    let src = plain.to_vec::<f32>();
    let mut offsets = vec![0u32; (2 * p + 1) * (2 * p + 1)];
    let mut flips = 0;
    for k in 0..n {
        let (s, o) = (&src[k * per..(k + 1) * per], &out[k * per..(k + 1) * per]);
        let found = (0..2 * p + 1)
            .flat_map(|a| (0..2 * p + 1).map(move |b| (a, b)))
            .flat_map(|(a, b)| [(a, b, false), (a, b, true)])
            .find(|&(a, b, f)| shifted(s, a as isize - p as isize, b as isize - p as isize, f) == o);
        let (a, b, f) = found.unwrap_or_else(|| panic!("sample {k} is not a crop of its image"));
        offsets[a * (2 * p + 1) + b] += 1;
        flips += f as u32;
    }
    // Each of the 25 offsets and each flip state within 4 standard deviations.
    let q = 1.0 / offsets.len() as f64;
    let sd = (n as f64 * q * (1.0 - q)).sqrt();
    for (i, &c) in offsets.iter().enumerate() {
        assert!((c as f64 - n as f64 * q).abs() <= 4.0 * sd, "offset {i}: {c} of {n}");
    }
    assert!((flips as f64 - n as f64 / 2.0).abs() <= 4.0 * (n as f64 / 4.0).sqrt(), "{flips} flips of {n}");
}

#[test]
fn augmentation_is_the_same_at_any_thread_count_and_resumes_with_the_generator() {
    let aug = RandomCropFlip::new(dataset(20_000), 4);
    let idx: Vec<usize> = (0..20_000).rev().collect();
    let draw = |threads| {
        autograd::set_num_threads(threads).unwrap();
        manual_seed(3);
        let a = aug.batch(&idx[..7000]).unwrap().0.to_vec::<f32>();
        let state = rng_state();
        let b = aug.batch(&idx[7000..]).unwrap().0.to_vec::<f32>();
        (a, state, b)
    };
    let (a1, s1, b1) = draw(1);
    let (a2, s2, b2) = draw(2);
    assert_eq!((&a1, s1, &b1), (&a2, s2, &b2));
    // Restoring the state after the first batch gives the second batch again.
    manual_seed(77);
    set_rng_state(s1);
    assert_eq!(aug.batch(&idx[7000..]).unwrap().0.to_vec::<f32>(), b1);
    // A bad sample index is an error, and reserves nothing.
    let before = rng_state();
    assert!(aug.batch(&[20_000]).is_err());
    assert_eq!(rng_state(), before);
}
