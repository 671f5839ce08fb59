//! The loops of a fused convolution's epilogue: the activation (autograd's own maths,
//! `Activation::apply_slice`, so fused and unfused compute the same bits) and then 2x2
//! pooling with the pooling ops' own row kernels, over one sample while it is in cache.

use super::pool_rows::{avg2x2_row, max2x2_row};
use super::tiles;
use crate::args::Pool2x2;
use autograd::{Activation, Element};

tiles::avx512_copy! {
    /// [`epilogue`], compiled for AVX-512 when the CPU has it.
    pub(super) fn epilogue_simd<T: Element>(act: Option<Activation>, y: &mut [T], pooled: Option<(&mut [T], Pool2x2)>, dims: (usize, usize)) = epilogue
}

/// One sample's epilogue: the activation over its output `y` (`[C, oh, ow]`) in place,
/// then the 2x2 pooling of that into `pooled`, with the pooling ops' own row kernels.
#[inline(always)]
fn epilogue<T: Element>(act: Option<Activation>, y: &mut [T], pooled: Option<(&mut [T], Pool2x2)>, (oh, ow): (usize, usize)) {
    if let Some(a) = act {
        a.apply_slice(y);
    }
    let Some((pooled, kind)) = pooled else { return };
    let (pl, pw) = (oh / 2 * (ow / 2), ow / 2);
    let scale = T::one() / T::from_f64(4.0);
    for (plane, yp) in pooled.chunks_exact_mut(pl.max(1)).zip(y.chunks_exact(oh * ow)) {
        for (py, row) in plane.chunks_exact_mut(pw.max(1)).enumerate() {
            let (r0, r1) = (&yp[2 * py * ow..][..2 * pw], &yp[(2 * py + 1) * ow..][..2 * pw]);
            match kind {
                Pool2x2::Avg => avg2x2_row(row, r0, r1, scale),
                Pool2x2::Max => max2x2_row(row, r0, r1),
            }
        }
    }
}
