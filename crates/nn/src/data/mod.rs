//! Data loading: the [`Dataset`] trait, an in-memory [`ImageDataset`], the
//! [`FashionMnist`] files, and a seeded, reproducible [`DataLoader`].

pub mod augment;
pub mod idx;
pub mod loader;

pub use augment::RandomCropFlip;
pub use idx::{read_idx, read_images, read_labels, Dim, Idx};
pub use loader::{shard_range, Batches, DataLoader, Shard};

use crate::error::{Error, Result};
use autograd::Tensor;
use std::path::{Path, PathBuf};

/// Indexed samples of (image, label), like PyTorch's map-style `Dataset`.
pub trait Dataset {
    /// The number of samples.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `i`: an image `[C, H, W]` and its class. A `Result`, not a panic, so a
    /// dataset that reads lazily from disk can report a bad file.
    fn get(&self, i: usize) -> Result<(Tensor, usize)>;

    /// Samples `indices` as one batch `[B, C, H, W]` and their labels. The default stacks
    /// [`get`](Dataset::get)s; datasets that hold their samples in memory override it to
    /// copy rows straight into one buffer, since the loader calls this once per batch.
    fn batch(&self, indices: &[usize]) -> Result<(Tensor, Vec<usize>)> {
        let (images, labels): (Vec<Tensor>, Vec<usize>) =
            indices.iter().map(|&i| self.get(i)).collect::<Result<Vec<_>>>()?.into_iter().unzip();
        let refs: Vec<&Tensor> = images.iter().collect();
        Ok((Tensor::stack(&refs, 0)?, labels))
    }
}

/// Pixels held in memory, `[N, C, H, W]` row-major.
#[derive(Debug, Clone, PartialEq)]
enum Pixels {
    F32(Vec<f32>),
    /// Bytes from an IDX file, scaled by `1 / 255` as they are read: a quarter of the
    /// memory of f32 (Fashion-MNIST's training set is 47 MB instead of 188 MB).
    U8(Vec<u8>),
}

impl Pixels {
    fn len(&self) -> usize {
        match self {
            Pixels::F32(v) => v.len(),
            Pixels::U8(v) => v.len(),
        }
    }
    fn truncate(&mut self, n: usize) {
        match self {
            Pixels::F32(v) => {
                v.truncate(n);
                v.shrink_to_fit();
            }
            Pixels::U8(v) => {
                v.truncate(n);
                v.shrink_to_fit();
            }
        }
    }

    /// Writes the values at `start..start + out.len()` into `out` as f32.
    fn write_into(&self, start: usize, out: &mut [f32]) {
        let range = start..start + out.len();
        match self {
            Pixels::F32(v) => out.copy_from_slice(&v[range]),
            Pixels::U8(v) => out.iter_mut().zip(&v[range]).for_each(|(o, &b)| *o = f32::from(b) / 255.0),
        }
    }
}

/// Images held in memory (f32, or bytes read from an IDX file), with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDataset {
    pixels: Pixels,
    labels: Vec<usize>,
    /// `[C, H, W]` of one sample.
    sample_shape: [usize; 3],
}

impl ImageDataset {
    /// Wraps `images` (`labels.len()` samples of `sample_shape` = `[C, H, W]`, row-major).
    pub fn new(images: Vec<f32>, labels: Vec<usize>, sample_shape: [usize; 3]) -> Result<Self> {
        let per = sample_shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if per.and_then(|p| p.checked_mul(labels.len())) != Some(images.len()) {
            let msg = format!("{} values cannot hold {} images of shape {:?}", images.len(), labels.len(), sample_shape);
            return Err(autograd::Error::invalid("ImageDataset::new", msg).into());
        }
        Ok(ImageDataset { pixels: Pixels::F32(images), labels, sample_shape })
    }

    /// Reads an IDX image file and label file (raw or gzipped) as one channel images with
    /// pixels scaled to [0, 1] (kept as bytes, scaled when a sample is read). `expect` is
    /// the geometry accepted (`[N, rows, cols]`; the label count must fit `expect[0]` too),
    /// checked on the headers before any data is decoded. Fails if the counts differ or a
    /// label is not below `num_classes`.
    pub fn from_idx(images: impl AsRef<Path>, labels: impl AsRef<Path>, num_classes: usize, expect: [Dim; 3]) -> Result<Self> {
        let (images, labels) = (images.as_ref(), labels.as_ref());
        let idx = read_images(images, expect)?;
        let targets = read_labels(labels, expect[0], num_classes)?;
        let (n, rows, cols) = (idx.dims[0], idx.dims[1], idx.dims[2]);
        if targets.len() != n {
            let msg = format!("{} labels but {n} images in {}", targets.len(), images.display());
            return Err(Error::format(labels, 4, msg));
        }
        Ok(ImageDataset { pixels: Pixels::U8(idx.data), labels: targets, sample_shape: [1, rows, cols] })
    }

    /// The first `n` samples (all of them if there are fewer), e.g. for a quick run.
    pub fn limit(mut self, n: usize) -> Self {
        let n = n.min(self.labels.len());
        self.labels.truncate(n);
        self.labels.shrink_to_fit();
        self.pixels.truncate(n * self.sample_numel());
        self
    }

    /// `[C, H, W]` of one sample.
    pub fn sample_shape(&self) -> [usize; 3] {
        self.sample_shape
    }

    /// All pixels as f32, `[N, C, H, W]` row-major (a copy when they are held as bytes).
    pub fn images(&self) -> std::borrow::Cow<'_, [f32]> {
        match &self.pixels {
            Pixels::F32(v) => std::borrow::Cow::Borrowed(v),
            Pixels::U8(_) => {
                let mut out = vec![0.0; self.pixels.len()];
                self.pixels.write_into(0, &mut out);
                std::borrow::Cow::Owned(out)
            }
        }
    }

    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    fn sample_numel(&self) -> usize {
        self.sample_shape.iter().product()
    }

    fn check_index(&self, op: &'static str, i: usize) -> Result<()> {
        if i < self.labels.len() {
            return Ok(());
        }
        let msg = format!("index {i} is out of range for a dataset of {} samples", self.labels.len());
        Err(autograd::Error::invalid(op, msg).into())
    }
}

impl Dataset for ImageDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn get(&self, i: usize) -> Result<(Tensor, usize)> {
        self.check_index("ImageDataset::get", i)?;
        let per = self.sample_numel();
        let mut image = vec![0.0; per];
        self.pixels.write_into(i * per, &mut image);
        Ok((Tensor::from_vec(image, &self.sample_shape)?, self.labels[i]))
    }

    /// One buffer written in place: no per-sample tensors, no stack.
    fn batch(&self, indices: &[usize]) -> Result<(Tensor, Vec<usize>)> {
        let per = self.sample_numel();
        for &i in indices {
            self.check_index("ImageDataset::batch", i)?;
        }
        // A recycled buffer, filled a sample per task: gathering and scaling a batch is
        // the one step of the training loop outside the kernels.
        let mut data = autograd::buffers::for_overwrite::<f32>(indices.len() * per);
        autograd::parallel::for_each_row_mut(&mut data, per, |k, image| self.pixels.write_into(indices[k] * per, image));
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        let [c, h, w] = self.sample_shape;
        Ok((Tensor::from_vec(data, &[indices.len(), c, h, w])?, labels))
    }
}

/// Fashion-MNIST (Zalando): 28x28 grey images of clothing in 10 classes, 60,000 for
/// training and 10,000 for testing.
pub struct FashionMnist;

impl FashionMnist {
    /// Class names, indexed by label.
    pub const CLASSES: [&'static str; 10] =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

    /// At most this many training images (the data set's size).
    pub const MAX_TRAIN: usize = 60_000;
    /// At most this many test images.
    pub const MAX_TEST: usize = 10_000;
    /// Image rows and columns.
    pub const SIDE: usize = 28;

    /// Loads `(train, test)` from the four canonical files in `dir`
    /// (`{train,t10k}-{images-idx3,labels-idx1}-ubyte`, each with or without `.gz`).
    /// The headers must announce 1 to 60,000 (train) or 10,000 (test) images of 28x28, so
    /// an empty set, another geometry or a decompression bomb fails here, naming the file.
    pub fn load(dir: impl AsRef<Path>) -> Result<(ImageDataset, ImageDataset)> {
        let dir = dir.as_ref();
        let split = |prefix: &str, max: usize| -> Result<ImageDataset> {
            let images = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
            let labels = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
            let side = Dim::exactly(Self::SIDE);
            ImageDataset::from_idx(images, labels, Self::CLASSES.len(), [Dim::count(max), side, side])
        };
        Ok((split("train", Self::MAX_TRAIN)?, split("t10k", Self::MAX_TEST)?))
    }
}

/// `dir/name`, else `dir/name.gz`; the error names both so the user sees what was looked for.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let raw = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    match (raw.is_file(), gz.is_file()) {
        (true, _) => Ok(raw),
        (false, true) => Ok(gz),
        (false, false) => Err(Error::io(&gz, format!("not found (nor {})", raw.display()))),
    }
}
