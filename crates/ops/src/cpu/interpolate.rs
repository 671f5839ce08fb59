//! The resampling loops of `interpolate.rs` (the front-end), plane by plane in parallel:
//! each output cell reads at most two rows and two columns of its plane, given per axis
//! by [`Taps`]; the backward adds each output gradient back to the cells it read, in the
//! same order as PyTorch's CPU kernel. Planes are independent, so the bits do not depend
//! on the thread count.

use autograd::parallel::install;
use autograd::Element;
use rayon::prelude::*;

/// Where each output index of one axis reads: input indices `i0`, `i1` with weights `l0`,
/// `l1` (nearest: `i1 = i0`, `l0 = 1`, `l1 = 0`). The weights are values of the tensor's
/// dtype, kept as f64 (exactly).
#[derive(Clone, Debug, Default)]
pub(crate) struct Taps {
    pub(crate) i0: Vec<usize>,
    pub(crate) i1: Vec<usize>,
    pub(crate) l0: Vec<f64>,
    pub(crate) l1: Vec<f64>,
}

/// The two axes' taps and whether the mode is nearest (a copy, no weights).
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) h: Taps,
    pub(crate) w: Taps,
    pub(crate) nearest: bool,
}

impl Plan {
    fn sizes(&self) -> (usize, usize) {
        (self.h.i0.len(), self.w.i0.len())
    }
}

/// Resamples every `(h, w)` plane of `x` to the plan's output size.
pub(crate) fn forward<T: Element>(x: &[T], planes: usize, (h, w): (usize, usize), plan: &Plan) -> Vec<T> {
    let (oh, ow) = plan.sizes();
    let mut y = autograd::buffers::for_overwrite::<T>(planes * oh * ow);
    if y.is_empty() {
        return y;
    }
    let (th, tw) = (&plan.h, &plan.w);
    let lw: Vec<(T, T)> = tw.l0.iter().zip(&tw.l1).map(|(&a, &b)| (T::from_f64(a), T::from_f64(b))).collect();
    let plane = |(yp, xp): (&mut [T], &[T])| {
        for (i, yr) in yp.chunks_exact_mut(ow).enumerate() {
            let (r0, r1) = (&xp[th.i0[i] * w..][..w], &xp[th.i1[i] * w..][..w]);
            if plan.nearest {
                yr.iter_mut().zip(&tw.i0).for_each(|(o, &c)| *o = r0[c]);
                continue;
            }
            let (lh0, lh1) = (T::from_f64(th.l0[i]), T::from_f64(th.l1[i]));
            for (j, o) in yr.iter_mut().enumerate() {
                let (c0, c1) = (tw.i0[j], tw.i1[j]);
                let (lw0, lw1) = lw[j];
                *o = (r0[c0] * lw0 + r0[c1] * lw1) * lh0 + (r1[c0] * lw0 + r1[c1] * lw1) * lh1;
            }
        }
    };
    install(|| y.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(plane));
    y
}

/// The adjoint: each output gradient added to the (up to four) cells its value read,
/// weighted as it read them.
pub(crate) fn backward<T: Element>(dy: &[T], planes: usize, (h, w): (usize, usize), plan: &Plan) -> Vec<T> {
    let (oh, ow) = plan.sizes();
    let mut dx = autograd::buffers::zeroed::<T>(planes * h * w);
    if planes * oh * ow == 0 || dx.is_empty() {
        return dx;
    }
    let (th, tw) = (&plan.h, &plan.w);
    let lw: Vec<(T, T)> = tw.l0.iter().zip(&tw.l1).map(|(&a, &b)| (T::from_f64(a), T::from_f64(b))).collect();
    let plane = |(xp, dp): (&mut [T], &[T])| {
        for (i, gr) in dp.chunks_exact(ow).enumerate() {
            let (r0, r1) = (th.i0[i] * w, th.i1[i] * w);
            if plan.nearest {
                gr.iter().zip(&tw.i0).for_each(|(&g, &c)| xp[r0 + c] += g);
                continue;
            }
            let (lh0, lh1) = (T::from_f64(th.l0[i]), T::from_f64(th.l1[i]));
            for (j, &g) in gr.iter().enumerate() {
                let (c0, c1) = (tw.i0[j], tw.i1[j]);
                let (lw0, lw1) = lw[j];
                xp[r0 + c0] += lh0 * lw0 * g;
                xp[r0 + c1] += lh0 * lw1 * g;
                xp[r1 + c0] += lh1 * lw0 * g;
                xp[r1 + c1] += lh1 * lw1 * g;
            }
        }
    };
    install(|| dx.par_chunks_mut(h * w).zip(dy.par_chunks(oh * ow)).for_each(plane));
    dx
}
