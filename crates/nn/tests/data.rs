//! Data loading: the real Fashion-MNIST files, a corpus of bad IDX files
//! (`tests/fixtures/bad/`, written by its `make.py`), and the loader's order.
//!
//! Expected pixel values were read with Python, e.g.
//! `python3 -c "import gzip;d=gzip.open('train-images-idx3-ubyte.gz').read();print(d[16+99])"`.

use autograd::Tensor;
use nn::data::{read_images, read_labels, DataLoader, Dataset, Dim, FashionMnist, ImageDataset};

/// Any geometry: these tests are about the format, not the caller's limits.
const ANY: Dim = Dim::at_most(usize::MAX);
use nn::Error;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// ----- largest single allocation, per thread ------------------------------------------

/// Records the largest allocation each thread makes, to show a header announcing
/// terabytes does not make the reader ask for them.
struct MaxAlloc;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for MaxAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: MaxAlloc = MaxAlloc;

/// Runs `f` and returns its result with the largest allocation it made on this thread.
fn largest_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|m| m.set(0));
    let out = f();
    (out, LARGEST.with(|m| m.get()))
}

// ----- the real data set ---------------------------------------------------------------

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fashion_dir() -> PathBuf {
    root().join("data/fashion-mnist")
}

/// Loaded once for all tests of this binary: decoding 30 MB of gzip is the slow part.
fn fashion() -> &'static (ImageDataset, ImageDataset) {
    static DATA: OnceLock<(ImageDataset, ImageDataset)> = OnceLock::new();
    DATA.get_or_init(|| FashionMnist::load(fashion_dir()).expect("data/fashion-mnist loads"))
}

fn pixel(ds: &ImageDataset, sample: usize, row: usize, col: usize) -> f32 {
    ds.get(sample).unwrap().0.to_vec::<f32>()[row * 28 + col]
}

#[test]
fn fashion_mnist_has_the_canonical_sizes_labels_and_pixels() {
    let (train, test) = fashion();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(train.sample_shape(), [1, 28, 28]);
    assert_eq!(train.images().len(), 60_000 * 784);
    // SOURCE.txt: first ten labels of each split.
    assert_eq!(&train.labels()[..10], &[9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
    assert_eq!(&test.labels()[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    assert_eq!(FashionMnist::CLASSES[train.labels()[0]], "Ankle boot");
    for (ds, per_class) in [(train, 6000), (test, 1000)] {
        let mut counts = [0; 10];
        ds.labels().iter().for_each(|&l| counts[l] += 1);
        assert_eq!(counts, [per_class; 10]);
    }
    // d[16 + 99] = 13, d[16 + 100] = 73, d[16 + 14*28 + 14] = 217 (train); 110 (test).
    assert_eq!(pixel(train, 0, 3, 15), 13.0 / 255.0);
    assert_eq!(pixel(train, 0, 3, 16), 73.0 / 255.0);
    assert_eq!(pixel(train, 0, 14, 14), 217.0 / 255.0);
    assert_eq!(pixel(test, 0, 14, 14), 110.0 / 255.0);
    assert_eq!(pixel(test, 0, 27, 27), 0.0);
    let (lo, hi) = train.images().iter().fold((f32::MAX, f32::MIN), |(lo, hi), &p| (lo.min(p), hi.max(p)));
    assert_eq!((lo, hi), (0.0, 1.0));

    let (image, label) = train.get(0).unwrap();
    assert_eq!((image.shape(), label), (&[1, 28, 28][..], 9));
    assert_eq!(image.to_vec::<f32>()[14 * 28 + 14], 217.0 / 255.0);
}

#[test]
fn limit_keeps_the_first_samples() {
    let (train, _) = fashion();
    let small = train.clone().limit(100);
    assert_eq!(small.len(), 100);
    assert_eq!(small.labels(), &train.labels()[..100]);
    assert_eq!(&small.images()[..], &train.images()[..100 * 784]);
    assert_eq!(small.clone().limit(1000).len(), 100);
}

#[test]
fn loader_over_the_real_data_yields_nchw_batches() {
    let (_, test) = fashion();
    let loader = DataLoader::new(test, 128, true, 7).unwrap();
    assert_eq!(loader.len(), 79); // 78 full batches and one of 16
    let batches: Vec<_> = loader.epoch(0).collect::<nn::Result<_>>().unwrap();
    assert_eq!(batches[0].0.shape(), &[128, 1, 28, 28]);
    assert_eq!(batches[78].0.shape(), &[16, 1, 28, 28]);
    let total: usize = batches.iter().map(|(_, l)| l.len()).sum();
    assert_eq!(total, 10_000);
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

#[test]
fn raw_and_gzipped_files_read_identically() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        std::fs::write(tmp.path().join(name), gunzip(&fashion_dir().join(format!("{name}.gz")))).unwrap();
    }
    let gz = read_images(fashion_dir().join("t10k-images-idx3-ubyte.gz"), [ANY; 3]).unwrap();
    let raw = read_images(tmp.path().join("t10k-images-idx3-ubyte"), [ANY; 3]).unwrap();
    assert_eq!(raw.dims, [10_000, 28, 28]);
    assert_eq!(gz, raw);
    let gz = read_labels(fashion_dir().join("t10k-labels-idx1-ubyte.gz"), ANY, 10).unwrap();
    let raw = read_labels(tmp.path().join("t10k-labels-idx1-ubyte"), ANY, 10).unwrap();
    assert_eq!(gz, raw);

    // Gzip is told by its magic, not the name.
    let renamed = tmp.path().join("labels-without-suffix");
    std::fs::copy(fashion_dir().join("t10k-labels-idx1-ubyte.gz"), &renamed).unwrap();
    assert_eq!(read_labels(&renamed, ANY, 10).unwrap(), raw);
}

// ----- bad files -----------------------------------------------------------------------

#[test]
fn every_file_of_the_bad_corpus_is_rejected_at_its_offset() {
    let dir = root().join("tests/fixtures/bad");
    let manifest = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
    let expected: HashMap<&str, (&str, &str, &str)> = manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0], (f[1], f[2], f[3]))
        })
        .collect();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name == "make.py" || name == "expected.tsv" {
            continue;
        }
        let &(kind, offset, fragment) = expected.get(name.as_str()).unwrap_or_else(|| panic!("{name} is not in expected.tsv"));
        let (err, largest) = largest_alloc(|| {
            if name.contains(".labels") {
                read_labels(&path, ANY, 10).map(|_| ()).unwrap_err()
            } else {
                read_images(&path, [ANY; 3]).map(|_| ()).unwrap_err()
            }
        });
        let shown = err.to_string();
        match (&err, kind) {
            (Error::Format { path: p, offset: o, message }, "Format") => {
                assert_eq!(p, &path, "{shown}");
                if offset != "-" {
                    assert_eq!(o.to_string(), offset, "{name}: {shown}");
                }
                assert!(message.contains(fragment), "{name}: expected {fragment:?} in {shown}");
            }
            _ => panic!("{name}: expected a {kind} error, got {shown}"),
        }
        // Announced terabytes, inflating megabytes: only buffers of a fixed size are allocated.
        assert!(largest < 1 << 20, "{name}: allocated {largest} bytes at once");
        seen += 1;
    }
    assert_eq!(seen, expected.len(), "every file listed in expected.tsv exists");
}

#[test]
fn missing_files_are_io_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let err = read_images(tmp.path().join("nope"), [ANY; 3]).unwrap_err();
    assert!(matches!(&err, Error::Io { path, .. } if path.ends_with("nope")), "{err}");
    let err = FashionMnist::load(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn image_and_label_counts_must_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    let labels = tmp.path().join("labels");
    std::fs::write(&images, [&[0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1][..], &[0, 255]].concat()).unwrap();
    std::fs::write(&labels, [0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]).unwrap();
    let err = ImageDataset::from_idx(&images, &labels, 10, [ANY; 3]).unwrap_err();
    assert!(matches!(&err, Error::Format { path, offset: 4, .. } if path == &labels), "{err}");
    // A label at the limit of num_classes is out of range; below it is fine.
    std::fs::write(&labels, [0, 0, 8, 1, 0, 0, 0, 2, 1, 2]).unwrap();
    let err = ImageDataset::from_idx(&images, &labels, 2, [ANY; 3]).unwrap_err();
    assert!(matches!(&err, Error::Format { offset: 9, .. }), "{err}");
    let ds = ImageDataset::from_idx(&images, &labels, 3, [ANY; 3]).unwrap();
    assert_eq!((&ds.images()[..], ds.labels()), (&[0.0, 1.0][..], &[1, 2][..]));
}

// ----- datasets and the loader ---------------------------------------------------------

/// `n` samples of shape [1, 2, 2] whose pixels all equal their index, so a batch tells
/// which samples it holds.
fn numbered(n: usize) -> ImageDataset {
    let images = (0..n).flat_map(|i| [i as f32; 4]).collect();
    ImageDataset::new(images, (0..n).collect(), [1, 2, 2]).unwrap()
}

/// Only `get`, so `batch` is the trait's default (stacking).
struct GetOnly(ImageDataset);

impl Dataset for GetOnly {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, i: usize) -> nn::Result<(Tensor, usize)> {
        self.0.get(i)
    }
}

#[test]
fn direct_batch_equals_the_default_stack_of_gets() {
    let ds = numbered(6);
    let (fast, fast_labels) = ds.batch(&[5, 0, 3]).unwrap();
    let (slow, slow_labels) = GetOnly(ds.clone()).batch(&[5, 0, 3]).unwrap();
    assert_eq!(fast.shape(), &[3, 1, 2, 2]);
    assert!(fast.equal(&slow));
    assert_eq!(fast_labels, vec![5, 0, 3]);
    assert_eq!(fast_labels, slow_labels);
    assert!(ds.batch(&[1, 6]).is_err());
    assert!(ds.get(6).is_err());
    assert!(ImageDataset::new(vec![0.0; 7], vec![0, 1], [1, 2, 2]).is_err());
}

/// The sample indices of each batch, read back from the pixels.
fn epoch_indices(loader: &DataLoader<'_, dyn Dataset>, epoch: u64) -> Vec<Vec<usize>> {
    loader
        .epoch(epoch)
        .map(|b| {
            let (images, labels) = b.unwrap();
            let firsts: Vec<usize> = images.to_vec::<f32>().chunks(4).map(|c| c[0] as usize).collect();
            assert_eq!(firsts, labels);
            labels
        })
        .collect()
}

#[test]
fn loader_batches_cover_every_sample_once_and_keep_the_last_partial_batch() {
    let ds = numbered(10);
    let loader: DataLoader<'_, dyn Dataset> = DataLoader::new(&ds as &dyn Dataset, 4, true, 42).unwrap();
    assert_eq!(loader.len(), 3);
    assert_eq!(loader.epoch(0).len(), 3);
    for epoch in 0..5 {
        let batches = epoch_indices(&loader, epoch);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        let mut all: Vec<usize> = batches.concat();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }
    let in_order = DataLoader::new(&ds as &dyn Dataset, 4, false, 42).unwrap();
    assert_eq!(epoch_indices(&in_order, 3), [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    assert!(DataLoader::new(&ds, 0, true, 0).is_err());
    let empty = numbered(0);
    assert_eq!(DataLoader::new(&empty, 4, true, 0).unwrap().epoch(0).count(), 0);
}

#[test]
fn shuffle_depends_only_on_seed_and_epoch() {
    let ds = numbered(50);
    let a = DataLoader::new(&ds, 8, true, 1).unwrap();
    let b = DataLoader::new(&ds, 8, true, 1).unwrap();
    let other_seed = DataLoader::new(&ds, 8, true, 2).unwrap();
    assert_eq!(a.permutation(3), b.permutation(3));
    assert_ne!(a.permutation(0), a.permutation(1));
    assert_ne!(a.permutation(0), other_seed.permutation(0));
    assert_ne!(a.permutation(0), (0..50).collect::<Vec<_>>());
    // Pinned: a change here reorders every training run made before it.
    let small = numbered(10);
    let pinned = DataLoader::new(&small, 4, true, 0).unwrap();
    assert_eq!(pinned.permutation(0), PINNED_SEED0_EPOCH0);
}

const PINNED_SEED0_EPOCH0: [usize; 10] = [7, 8, 9, 0, 1, 5, 4, 6, 3, 2];

#[test]
fn shuffle_is_uniform_over_permutations() {
    // 4 items, 24 orders, 24,000 epochs: each order about 1,000 times (sd ~31).
    let ds = numbered(4);
    let loader = DataLoader::new(&ds, 4, true, 9).unwrap();
    let mut counts: HashMap<Vec<usize>, usize> = HashMap::new();
    for epoch in 0..24_000 {
        *counts.entry(loader.permutation(epoch)).or_default() += 1;
    }
    assert_eq!(counts.len(), 24);
    for (order, &c) in &counts {
        assert!((850..1150).contains(&c), "{order:?} drawn {c} times");
    }
}

// ----- mutation fuzzing ------------------------------------------------------------------

/// Proptest mutation fuzzing of the IDX reader, raw and gzipped: header fields (the magic's
/// zero bytes, element type and rank, the dims) set to hostile values, bytes flipped, files
/// truncated or extended, and for gzipped files the compressed bytes mutated too or another
/// gzip member appended. Every read returns `Ok` or a typed `Format`/`Io` error, never
/// panics, and never allocates a megabyte at once. When the decompressed stream is known
/// (raw files, intact gzip), the result must be exactly what a reference parser says.
mod idx_fuzz {
    use super::*;
    use nn::data::{read_idx, Idx};
    use proptest::prelude::*;
    use std::io::Write;

    #[derive(Debug, Clone, Copy)]
    enum Reader {
        Images,
        /// `read_labels` with 10 classes.
        Labels,
        /// `read_idx` with this rank.
        Idx(usize),
    }

    #[derive(Debug, Clone)]
    enum Edit {
        /// Byte 0-3 of the magic: the two zero bytes, the element type, the rank.
        Magic {
            at: usize,
            value: u8,
        },
        /// Dim `i`: the big-endian u32 at `4 + 4 i` (past the header: payload bytes).
        Dim {
            i: usize,
            value: u32,
        },
        Flip {
            pos: usize,
            bit: u8,
        },
        Truncate(usize),
        Extend(Vec<u8>),
        Overwrite {
            pos: usize,
            bytes: Vec<u8>,
        },
    }

    /// A valid file: its header announces `dims` and the payload holds that many bytes.
    fn idx_bytes(dims: &[usize], seed: u64, modulo: u64) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for &d in dims {
            v.extend_from_slice(&(d as u32).to_be_bytes());
        }
        let n: usize = dims.iter().product();
        v.extend((0..n as u64).map(|i| ((seed.wrapping_add(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % modulo) as u8));
        v
    }

    fn good_file() -> impl Strategy<Value = (Reader, Vec<u8>)> {
        prop_oneof![
            (0..4usize, 0..6usize, 0..6usize, any::<u64>()).prop_map(|(n, r, c, seed)| (Reader::Images, idx_bytes(&[n, r, c], seed, 256))),
            (0..20usize, any::<u64>()).prop_map(|(n, seed)| (Reader::Labels, idx_bytes(&[n], seed, 10))),
            (prop::collection::vec(0..4usize, 0..=4), any::<u64>())
                .prop_map(|(dims, seed)| (Reader::Idx(dims.len()), idx_bytes(&dims, seed, 256))),
        ]
    }

    fn dim_value() -> impl Strategy<Value = u32> {
        prop_oneof![Just(0u32), Just(1), 0..64u32, Just(1 << 16), Just(1 << 31), Just(u32::MAX), any::<u32>()]
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let bytes = || prop::collection::vec(any::<u8>(), 1..12);
        prop_oneof![
            (0..4usize, prop_oneof![Just(0u8), Just(1), Just(3), Just(8), Just(0x0d), Just(0x1f), Just(255), any::<u8>()])
                .prop_map(|(at, value)| Edit::Magic { at, value }),
            (0..5usize, dim_value()).prop_map(|(i, value)| Edit::Dim { i, value }),
            (any::<usize>(), 0..8u8).prop_map(|(pos, bit)| Edit::Flip { pos, bit }),
            any::<usize>().prop_map(Edit::Truncate),
            prop::collection::vec(any::<u8>(), 1..64).prop_map(Edit::Extend),
            (any::<usize>(), bytes()).prop_map(|(pos, bytes)| Edit::Overwrite { pos, bytes }),
        ]
    }

    fn overwrite(b: &mut [u8], pos: usize, bytes: &[u8]) {
        let pos = pos.min(b.len());
        for (dst, src) in b[pos..].iter_mut().zip(bytes) {
            *dst = *src;
        }
    }

    fn apply(b: &mut Vec<u8>, e: &Edit) {
        let len = b.len();
        match e {
            Edit::Magic { at, value } => overwrite(b, *at, &[*value]),
            Edit::Dim { i, value } => overwrite(b, 4 + 4 * i, &value.to_be_bytes()),
            Edit::Flip { pos, bit } if len > 0 => b[pos % len] ^= 1 << bit,
            Edit::Truncate(n) if len > 0 => b.truncate(n % len),
            Edit::Extend(tail) => b.extend_from_slice(tail),
            Edit::Overwrite { pos, bytes } if len > 0 => overwrite(b, pos % len, bytes),
            _ => {}
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// What the reader must return for this decompressed stream (`None`: an error).
    fn reference(stream: &[u8], reader: Reader) -> Option<Idx> {
        let rank = match reader {
            Reader::Images => 3,
            Reader::Labels => 1,
            Reader::Idx(r) => r,
        };
        let header = 4 + 4 * rank;
        if stream.len() < header || stream[..3] != [0, 0, 8] || usize::from(stream[3]) != rank {
            return None;
        }
        let dims: Vec<usize> = stream[4..header].chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap()) as usize).collect();
        let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        let data = &stream[header..];
        if data.len() != n || (matches!(reader, Reader::Labels) && data.iter().any(|&b| b >= 10)) {
            return None;
        }
        Some(Idx { dims, data: data.to_vec() })
    }

    fn read(reader: Reader, path: &Path) -> nn::Result<Idx> {
        match reader {
            Reader::Images => read_images(path, [ANY; 3]),
            Reader::Labels => read_labels(path, ANY, 10).map(|l| Idx { dims: vec![l.len()], data: l.iter().map(|&x| x as u8).collect() }),
            Reader::Idx(rank) => read_idx(path, &vec![ANY; rank]),
        }
    }

    /// Edits the file's contents, maybe gzips it and appends a second member, maybe
    /// mutates the bytes on disk, then reads it.
    fn check(reader: Reader, good: &[u8], edits: &[Edit], gz: bool, member: &Option<Vec<u8>>, outer: &Option<Edit>) {
        let mut stream = good.to_vec();
        for e in edits {
            apply(&mut stream, e);
        }
        let mut bytes = if gz { gzip(&stream) } else { stream.clone() };
        let first_member = bytes.len();
        // Cut right after the first of two gzip members: a valid file of that member alone.
        let cut_between = gz && member.is_some() && matches!(outer, Some(Edit::Truncate(_)));
        if let Some(m) = member {
            bytes.extend(if gz { gzip(m) } else { m.clone() });
            stream.extend_from_slice(m);
        }
        let cut_between = cut_between && matches!(outer, Some(Edit::Truncate(n)) if n % bytes.len() == first_member);
        if cut_between {
            stream.truncate(stream.len() - member.as_ref().map_or(0, Vec::len));
        }
        if let Some(o) = outer {
            apply(&mut bytes, o);
        }
        // The decompressed stream is known unless the gzip bytes were mutated, or a raw
        // file now starts with the gzip magic.
        let known = if gz { outer.is_none() || cut_between } else { !bytes.starts_with(&[0x1f, 0x8b]) };
        if !gz {
            stream = bytes.clone();
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::write(&path, &bytes).unwrap();
        let case = || format!("{reader:?}, edits {edits:?}, gzip {gz}, member {member:?}, outer {outer:?}");
        let (result, largest) = largest_alloc(|| std::panic::catch_unwind(|| read(reader, &path)));
        let result = result.unwrap_or_else(|_| panic!("the reader panicked on {}", case()));
        assert!(largest < 1 << 20, "allocated {largest} bytes at once on {}", case());
        match &result {
            Ok(idx) => {
                assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>(), "{}", case());
                assert!(cut_between || !matches!(outer, Some(Edit::Truncate(_))), "a truncated file loaded: {}", case());
            }
            Err(Error::Format { path: p, .. } | Error::Io { path: p, .. }) => assert_eq!(p, &path),
            Err(other) => panic!("unexpected error kind {other:?} on {}", case()),
        }
        if known {
            match (reference(&stream, reader), result) {
                (Some(want), Ok(got)) => assert_eq!(got, want, "{}", case()),
                (Some(_), Err(e)) => panic!("a valid file was rejected ({e}) on {}", case()),
                (None, Ok(got)) => panic!("a bad file was accepted as {got:?} on {}", case()),
                (None, Err(e)) => assert!(matches!(e, Error::Format { .. }), "bad contents must be a Format error: {e} on {}", case()),
            }
        }
    }

    // 256 cases per property (well under a second); PROPTEST_CASES=N for a deeper run.

    proptest! {
        #![proptest_config(autograd::testing::config_from_env(256))]

        #[test]
        fn mutated_raw_idx_never_panics(file in good_file(), edits in prop::collection::vec(edit(), 0..4)) {
            check(file.0, &file.1, &edits, false, &None, &None);
        }

        #[test]
        fn mutated_gzip_idx_never_panics(
            file in good_file(),
            edits in prop::collection::vec(edit(), 0..3),
            member in prop::option::weighted(0.15, prop::collection::vec(any::<u8>(), 0..40)),
            outer in prop::option::weighted(0.6, edit()),
        ) {
            check(file.0, &file.1, &edits, true, &member, &outer);
        }
    }
}
