//! 1x1 convolutions at stride 1 without padding, as plain matrix products: a sample's
//! input planes `[C, H W]` are already the unfolded matrix, so nothing is copied.
//!
//! - forward, per sample and group: `y[n] = w [og, cg] x x[n] [cg, L]`;
//! - input gradient: `dx[n] = wᵀ [cg, og] x dy[n] [og, L]`;
//! - weight gradient: `dw = Σ_n dy[n] [og, L] x x[n]ᵀ [L, cg]`, summed over fixed blocks
//!   of samples in sample order, then the blocks in block order (bitwise the same at any
//!   thread count).
//!
//! The forward and the input gradient are one batch of products to `gemm_batch`, which
//! splits them into tiles by shape alone.

use super::gemm::{gemm_batch, gemm_serial, MatRef, Product};
use super::geom::Geom;
use super::scratch::{par_tasks, Lens};
use crate::shared::SharedOut;
use autograd::{Activation, Element};

/// Values per chunk of the parallel activation pass (fixed, so the chunking never depends
/// on the thread count; an element-wise map gives the same bits either way).
const ACT_CHUNK: usize = 1 << 14;

/// The forward pass: the bias (or zeros) first, then every product added into it, then
/// the activation.
pub(super) fn forward<T: Element>(g: &Geom, x: &[T], w: &[T], bias: Option<&[T]>, act: Option<Activation>) -> Vec<T> {
    let l = g.l();
    let mut y = autograd::buffers::for_overwrite::<T>(g.n * g.o * l);
    for (p, plane) in y.chunks_mut(l).enumerate() {
        plane.fill(bias.map_or(T::zero(), |b| b[p % g.o]));
    }
    let products: Vec<Product<'_, T>> = (0..g.n)
        .flat_map(|n| (0..g.a.groups).map(move |grp| (n, grp)))
        .map(|(n, grp)| Product {
            a: MatRef::row_major(w, grp * g.og * g.cg, g.cg),
            b: MatRef::row_major(x, (n * g.c + grp * g.cg) * l, l),
            c_offset: (n * g.o + grp * g.og) * l,
        })
        .collect();
    gemm_batch(g.og, l, g.cg, &products, &mut y, true);
    if let Some(a) = act {
        autograd::parallel::for_each_row_mut(&mut y, ACT_CHUNK, |_, c| a.apply_slice(c));
    }
    y
}

/// The input gradient: one product per sample and group, each writing its own planes.
pub(super) fn input_grad<T: Element>(g: &Geom, dy: &[T], w: &[T]) -> Vec<T> {
    let l = g.l();
    let mut dx = autograd::buffers::for_overwrite::<T>(g.n * g.c * l);
    let products: Vec<Product<'_, T>> = (0..g.n)
        .flat_map(|n| (0..g.a.groups).map(move |grp| (n, grp)))
        .map(|(n, grp)| Product {
            a: MatRef::transposed(w, grp * g.og * g.cg, g.cg),
            b: MatRef::row_major(dy, (n * g.o + grp * g.og) * l, l),
            c_offset: (n * g.c + grp * g.cg) * l,
        })
        .collect();
    gemm_batch(g.cg, l, g.og, &products, &mut dx, false);
    dx
}

/// Samples per block of the weight gradient: at most 4 blocks, so the partial sums stay
/// small, and at least one sample each. A function of the batch size alone.
fn block_samples(n: usize) -> usize {
    n.div_ceil(4).max(1)
}

/// The weight gradient: each block adds its samples' products into its own partial sum
/// in sample order; the partials are then added in block order.
pub(super) fn weight_grad<T: Element>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    let l = g.l();
    let size = g.o * g.cg;
    let nb = block_samples(g.n);
    let blocks = g.n.div_ceil(nb);
    let mut partials = autograd::buffers::zeroed::<T>(blocks * size);
    let out = SharedOut::new(&mut partials);
    par_tasks::<T>(blocks, Lens::default(), |b, _| {
        // SAFETY: block `b` owns partial sum `b`.
        let acc = unsafe { out.slice(b * size, size) };
        for n in b * nb..((b + 1) * nb).min(g.n) {
            for grp in 0..g.a.groups {
                let a = MatRef::row_major(dy, (n * g.o + grp * g.og) * l, l);
                let xt = MatRef::transposed(x, (n * g.c + grp * g.cg) * l, l);
                gemm_serial(g.og, g.cg, l, a, xt, &mut acc[grp * g.og * g.cg..], g.cg, true);
            }
        }
    });
    super::sum_partials(partials, size)
}
