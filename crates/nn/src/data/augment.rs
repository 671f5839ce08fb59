//! Training-time augmentation: torchvision's `RandomCrop(size, padding=4)` followed by
//! `RandomHorizontalFlip()`, drawn from the thread's default [`autograd::Generator`].
//!
//! A batch reserves three draws per sample on the calling thread (the training loop's),
//! then every sample is cropped and flipped in parallel from its own draws: the result is
//! bitwise the same at any thread count, and a resumed run (which restores the generator)
//! sees the same crops.

use super::Dataset;
use crate::error::Result;
use autograd::{with_default_generator, Draws, Tensor};

/// Draws per sample: the crop's row and column offsets, and the flip.
const DRAWS: u64 = 3;

/// A dataset whose samples are randomly cropped (after zero padding) and flipped
/// left-right: `RandomCrop(H, padding)` then `RandomHorizontalFlip(0.5)` of torchvision,
/// for `[C, H, W]` images.
pub struct RandomCropFlip<D> {
    inner: D,
    padding: usize,
}

impl<D: Dataset> RandomCropFlip<D> {
    /// torchvision's recipe for CIFAR-like data uses `padding = 4`.
    pub fn new(inner: D, padding: usize) -> Self {
        RandomCropFlip { inner, padding }
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Crops and flips each image of `x` `[B, C, H, W]` from `draws` (three per image).
    fn apply(&self, x: &Tensor, draws: Draws) -> Result<Tensor> {
        let &[b, c, h, w] = x.shape() else {
            return Err(autograd::Error::invalid("RandomCropFlip", format!("expects [B, C, H, W] images, got {:?}", x.shape())).into());
        };
        let src = x.contiguous_data::<f32>()?;
        let per = c * h * w;
        let mut out = vec![0f32; b * per];
        let p = self.padding;
        autograd::parallel::for_each_row_mut(&mut out, per.max(1), |k, image| {
            let mut u = [0u64; DRAWS as usize];
            draws.fill_u64(k as u64 * DRAWS, &mut u);
            let unit = |w: u64| (w >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            // torchvision: top = randint(0, H + 2p - H + 1), the same for left.
            let offset = |w: u64| ((unit(w) * (2 * p + 1) as f64) as usize).min(2 * p);
            let (top, left, flip) = (offset(u[0]), offset(u[1]), unit(u[2]) < 0.5);
            let sample = &src[k * per..(k + 1) * per];
            for ch in 0..c {
                for i in 0..h {
                    // Row `i` of the crop is row `top + i` of the padded image.
                    let Some(si) = (top + i).checked_sub(p).filter(|&r| r < h) else { continue };
                    for j in 0..w {
                        let sj = left + j;
                        if sj < p || sj - p >= w {
                            continue;
                        }
                        let dj = if flip { w - 1 - j } else { j };
                        image[(ch * h + i) * w + dj] = sample[(ch * h + si) * w + (sj - p)];
                    }
                }
            }
        });
        Ok(Tensor::from_vec(out, &[b, c, h, w])?)
    }
}

impl<D: Dataset> Dataset for RandomCropFlip<D> {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn get(&self, i: usize) -> Result<(Tensor, usize)> {
        let (x, y) = self.batch(&[i])?;
        Ok((x.squeeze(0)?, y[0]))
    }

    fn batch(&self, indices: &[usize]) -> Result<(Tensor, Vec<usize>)> {
        let (x, y) = self.inner.batch(indices)?;
        let draws = with_default_generator(|g| g.reserve(indices.len() as u64 * DRAWS));
        Ok((self.apply(&x, draws)?, y))
    }
}
