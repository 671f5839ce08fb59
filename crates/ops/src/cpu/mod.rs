//! The CPU kernels under the op front-ends. A front-end (`conv.rs`, `pool.rs`,
//! `matmul.rs`, `linear.rs`, `batch_norm.rs`, `adaptive_pool.rs`) checks arguments, infers shapes, records the op and holds
//! its gradient rule; it calls in here with validated sizes and contiguous slices, and
//! never picks a kernel itself: [`select`] does, for each convolution map.
//!
//! - `gemm.rs`: the matrix product (packing, blocking, the tile split);
//! - `unfold.rs`: convolution by im2col + GEMM; `pointwise.rs`: 1x1 convolution as GEMM;
//! - `direct.rs`, `tiles.rs`: convolution over wide rows, strides through phase planes (AVX-512);
//! - `taps.rs`: one product over the batch per output position and live tap (small maps);
//! - `transpose.rs`: block transposes, the layout copies of the direct and taps kernels;
//! - `epilogue.rs`: a fused convolution's activation and pooling loops; `pool_rows.rs`:
//!   the 2x2 pooling row kernels the pooling ops and the epilogue share; `pool_planes.rs`:
//!   max pooling's general windows across blocks of planes;
//! - `geom.rs`: a convolution's validated sizes; `scratch.rs`: per-task scratch;
//! - `batch_norm.rs`, `adaptive_pool.rs`: the loops of those ops.

pub(crate) mod adaptive_pool;
pub(crate) mod batch_norm;
mod direct;
pub(crate) mod epilogue;
pub(crate) mod gemm;
pub(crate) mod geom;
pub(crate) mod interpolate;
pub(crate) mod norm;
mod pointwise;
pub(crate) mod pool_planes;
pub(crate) mod pool_rows;
mod scratch;
pub(crate) mod select;
mod taps;
mod tiles;
mod transpose;
pub(crate) mod unary;
mod unfold;

use crate::args::{Conv2dAlgo, Epilogue};
use autograd::parallel::install;
use autograd::Element;
pub(crate) use direct::{Backward, Grads};
use geom::Geom;
use rayon::prelude::*;

/// The forward pass with `algo` (from [`select`](select::select)). Returns the output after the
/// activation, and the pooled output when the kernel fused the pooling too.
///
/// Each map runs wholly inside the pool (here and in the functions below): a kernel's
/// layout copies, products and sums are several parallel sections (the taps kernel has
/// five in the forward, seven in the backward), and each entered from outside the pool
/// hands the work to a pool thread and waits for it. One hand-off per map took 2-5% off
/// ResNet's `b2` at one thread.
pub(crate) fn forward<T: Element>(
    g: &Geom,
    algo: Conv2dAlgo,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    ep: Epilogue,
) -> (Vec<T>, Option<Vec<T>>) {
    install(|| match (algo, direct::Wide::new(g)) {
        (Conv2dAlgo::Direct, Some(wide)) => direct::forward(g, &wide, x, w, bias, ep),
        (Conv2dAlgo::Gemm1x1, _) => (pointwise::forward(g, x, w, bias, ep.act), None),
        (Conv2dAlgo::Taps, _) => (taps::forward(g, x, w, bias, ep.act), None),
        _ => (unfold::forward(g, x, w, bias, ep.act), None),
    })
}

/// The input gradient with `algo` (from [`select`](select::select)).
pub(crate) fn input_grad<T: Element>(g: &Geom, algo: Conv2dAlgo, dy: &[T], w: &[T]) -> Vec<T> {
    install(|| match (algo, direct::Wide::new(g)) {
        (Conv2dAlgo::Direct, Some(wide)) => {
            let b = direct::Backward { dy, y: None, act: None, pool: None, x: None, w: Some(w), bias: false };
            direct::backward(g, &wide, b).dx.expect("asked for")
        }
        (Conv2dAlgo::Gemm1x1, _) => pointwise::input_grad(g, dy, w),
        (Conv2dAlgo::Taps, _) => taps::input_grad(g, dy, w),
        _ => unfold::input_grad(g, dy, w),
    })
}

/// The weight gradient with `algo` (from [`select`](select::select)).
pub(crate) fn weight_grad<T: Element>(g: &Geom, algo: Conv2dAlgo, x: &[T], dy: &[T]) -> Vec<T> {
    install(|| match (algo, direct::Wide::new(g)) {
        (Conv2dAlgo::Direct, Some(wide)) => {
            let b = direct::Backward { dy, y: None, act: None, pool: None, x: Some(x), w: None, bias: false };
            direct::backward(g, &wide, b).dw.expect("asked for")
        }
        (Conv2dAlgo::Gemm1x1, _) => pointwise::weight_grad(g, x, dy),
        (Conv2dAlgo::Taps, _) => taps::weight_grad(g, x, dy),
        _ => unfold::weight_grad(g, x, dy),
    })
}

/// Both gradients `(dx, dw)` in one call where the kernel shares work between them (the
/// taps kernel's layout copy of `dy`), when `algo` computes both maps; `None` otherwise.
pub(crate) fn both_grads<T: Element>(g: &Geom, algo: Conv2dAlgo, x: &[T], w: &[T], dy: &[T]) -> Option<(Vec<T>, Vec<T>)> {
    (algo == Conv2dAlgo::Taps).then(|| install(|| taps::both_grads(g, x, w, dy)))
}

/// Every gradient of a fused convolution in one pass with the direct kernels (the
/// activation and pooling taken back on the way), or `None` where they do not apply.
pub(crate) fn backward_direct<T: Element>(g: &Geom, b: Backward<'_, T>) -> Option<Grads<T>> {
    direct::Wide::new(g).map(|wide| install(|| direct::backward(g, &wide, b)))
}

/// `Σ_p partials[p]` for partial sums `size` long, every element added up from zero in
/// partial order, so the same bits at any thread count; element ranges (fixed chunks) run
/// in parallel. Gives `partials` back to the buffer cache.
fn sum_partials<T: Element>(partials: Vec<T>, size: usize) -> Vec<T> {
    const CHUNK: usize = 1 << 14;
    let parts = partials.len().checked_div(size).unwrap_or(0);
    let mut out = autograd::buffers::for_overwrite::<T>(size);
    install(|| {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, o)| {
            o.fill(T::zero());
            let len = o.len();
            for p in 0..parts {
                o.iter_mut().zip(&partials[p * size + i * CHUNK..][..len]).for_each(|(o, &v)| *o += v);
            }
        })
    });
    autograd::buffers::recycle(partials);
    out
}
