//! The adaptive average pooling loops (`adaptive_pool.rs` is the front-end), plane by
//! plane in parallel, over contiguous buffers of validated sizes.

use autograd::parallel::install;
use autograd::Element;
use rayon::prelude::*;

/// The bin of output cell `i` of `n` over a side of `len` (PyTorch's).
fn bin(i: usize, n: usize, len: usize) -> (usize, usize) {
    (i * len / n, ((i + 1) * len).div_ceil(n))
}

/// Planes per parallel task: enough for a few thousand values, so that small planes (a
/// global pooling of ResNet's `[256, 512, 1, 1]`: 131,072 planes of one value) are not
/// a task each.
fn planes_per_task(in_len: usize, out_len: usize) -> usize {
    (4096 / in_len.max(out_len).max(1)).max(1)
}

/// Each `(oh, ow)` output plane: the mean of every bin of its `(h, w)` input plane.
pub(crate) fn forward<T: Element>(x: &[T], planes: usize, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<T> {
    let mut y = autograd::buffers::for_overwrite::<T>(planes * oh * ow);
    let plane = |(yp, xp): (&mut [T], &[T])| {
        for i in 0..oh {
            let (y0, y1) = bin(i, oh, h);
            for j in 0..ow {
                let (x0, x1) = bin(j, ow, w);
                let mut s = T::zero();
                for row in xp[y0 * w..y1 * w].chunks_exact(w) {
                    for &v in &row[x0..x1] {
                        s += v;
                    }
                }
                yp[i * ow + j] = s / T::from_f64(((y1 - y0) * (x1 - x0)) as f64);
            }
        }
    };
    let g = planes_per_task(h * w, oh * ow);
    if (oh, ow) == (1, 1) {
        // Global pooling, without the bins' integer divisions per value: the same sum in
        // the same order (from zero, row-major), divided by the same count.
        let count = T::from_f64((h * w) as f64);
        let global = |(yg, xg): (&mut [T], &[T])| {
            yg.iter_mut().zip(xg.chunks_exact(h * w)).for_each(|(y, p)| *y = p.iter().fold(T::zero(), |s, &v| s + v) / count)
        };
        install(|| y.par_chunks_mut(g).zip(x.par_chunks(g * h * w)).for_each(global));
        return y;
    }
    install(|| {
        y.par_chunks_mut(g * oh * ow)
            .zip(x.par_chunks(g * h * w))
            .for_each(|(yg, xg)| yg.chunks_mut(oh * ow).zip(xg.chunks(h * w)).for_each(plane))
    });
    y
}

/// The adjoint: each output gradient spread evenly over its bin (overlaps add up).
pub(crate) fn backward<T: Element>(dy: &[T], planes: usize, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<T> {
    let global = (oh, ow) == (1, 1);
    // Global pooling writes every value; the bins add into zeros.
    let mut dx =
        if global { autograd::buffers::for_overwrite::<T>(planes * h * w) } else { autograd::buffers::zeroed::<T>(planes * h * w) };
    let plane = |(xp, dp): (&mut [T], &[T])| {
        for i in 0..oh {
            let (y0, y1) = bin(i, oh, h);
            for j in 0..ow {
                let (x0, x1) = bin(j, ow, w);
                let share = dp[i * ow + j] / T::from_f64(((y1 - y0) * (x1 - x0)) as f64);
                for row in xp[y0 * w..y1 * w].chunks_exact_mut(w) {
                    row[x0..x1].iter_mut().for_each(|v| *v += share);
                }
            }
        }
    };
    let g = planes_per_task(h * w, oh * ow);
    if global {
        // Global pooling: each plane is `0 + share`, as the general loop adds it.
        let count = T::from_f64((h * w) as f64);
        let global = |(xg, dg): (&mut [T], &[T])| xg.chunks_exact_mut(h * w).zip(dg).for_each(|(p, &d)| p.fill(T::zero() + d / count));
        install(|| dx.par_chunks_mut(g * h * w).zip(dy.par_chunks(g)).for_each(global));
        return dx;
    }
    install(|| {
        dx.par_chunks_mut(g * h * w)
            .zip(dy.par_chunks(g * oh * ow))
            .for_each(|(xg, dg)| xg.chunks_mut(h * w).zip(dg.chunks(oh * ow)).for_each(plane))
    });
    dx
}

/// Each bin's winner as a position in its `(h, w)` plane (PyTorch's `return_indices`):
/// the first largest value in row-major order, or the first NaN (NaN wins, as in max
/// pooling).
pub(crate) fn argmax<T: Element>(x: &[T], planes: usize, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<i64> {
    let mut idx = vec![0i64; planes * oh * ow];
    let plane = |(ip, xp): (&mut [i64], &[T])| {
        for i in 0..oh {
            let (y0, y1) = bin(i, oh, h);
            for j in 0..ow {
                let (x0, x1) = bin(j, ow, w);
                let (mut best, mut at) = (T::neg_infinity(), y0 * w + x0);
                for r in y0..y1 {
                    for c in x0..x1 {
                        if crate::cpu::pool_rows::wins(xp[r * w + c], best) {
                            best = xp[r * w + c];
                            at = r * w + c;
                        }
                    }
                }
                ip[i * ow + j] = at as i64;
            }
        }
    };
    if planes > 0 && oh * ow > 0 {
        let g = planes_per_task(h * w, oh * ow);
        install(|| {
            idx.par_chunks_mut(g * oh * ow)
                .zip(x.par_chunks(g * h * w))
                .for_each(|(ig, xg)| ig.chunks_mut(oh * ow).zip(xg.chunks(h * w)).for_each(plane))
        });
    }
    idx
}
