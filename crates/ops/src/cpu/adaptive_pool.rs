//! The adaptive average pooling loops (`adaptive_pool.rs` is the front-end), plane by
//! plane in parallel, over contiguous buffers of validated sizes.

use autograd::parallel::install;
use autograd::Element;
use rayon::prelude::*;

/// The bin of output cell `i` of `n` over a side of `len` (PyTorch's).
fn bin(i: usize, n: usize, len: usize) -> (usize, usize) {
    (i * len / n, ((i + 1) * len).div_ceil(n))
}

/// Every bin of an `(oh, ow)` grid over an `(h, w)` plane, computed once per call rather
/// than per plane (two integer divisions per bin and plane).
struct Bins {
    /// Input rows `y0..y1` of each output row.
    rows: Vec<(usize, usize)>,
    /// Input columns `x0..x1` of each output column.
    cols: Vec<(usize, usize)>,
}

impl Bins {
    fn new((h, w): (usize, usize), (oh, ow): (usize, usize)) -> Bins {
        Bins { rows: (0..oh).map(|i| bin(i, oh, h)).collect(), cols: (0..ow).map(|j| bin(j, ow, w)).collect() }
    }
    /// Each bin `(output index, rows, columns)`, row-major.
    fn each(&self) -> impl Iterator<Item = (usize, (usize, usize), (usize, usize))> + '_ {
        let ow = self.cols.len();
        self.rows.iter().enumerate().flat_map(move |(i, &r)| self.cols.iter().enumerate().map(move |(j, &c)| (i * ow + j, r, c)))
    }
}

/// Planes per parallel task: enough for a few thousand values, so that small planes (a
/// global pooling of ResNet's `[256, 512, 1, 1]`: 131,072 planes of one value) are not a
/// task each.
fn planes_per_task(in_len: usize, out_len: usize) -> usize {
    (4096 / in_len.max(out_len).max(1)).max(1)
}

/// `f(out_planes, in_planes)` over groups of whole planes (`out_len` and `in_len` values
/// each), a few thousand values per parallel task.
fn by_groups<A: Send, B: Sync>(out: &mut [A], out_len: usize, inp: &[B], in_len: usize, f: impl Fn(&mut [A], &[B]) + Sync) {
    let g = planes_per_task(in_len, out_len);
    install(|| out.par_chunks_mut(g * out_len).zip(inp.par_chunks(g * in_len)).for_each(|(o, i)| f(o, i)));
}

/// `f(out_plane, in_plane)` for every plane, by [`by_groups`].
fn per_plane<A: Send, B: Sync>(out: &mut [A], out_len: usize, inp: &[B], in_len: usize, f: impl Fn(&mut [A], &[B]) + Sync) {
    by_groups(out, out_len, inp, in_len, |og, ig| og.chunks_mut(out_len).zip(ig.chunks(in_len)).for_each(|(o, i)| f(o, i)));
}

/// Each `(oh, ow)` output plane: the mean of every bin of its `(h, w)` input plane.
pub(crate) fn forward<T: Element>(x: &[T], planes: usize, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<T> {
    let mut y = autograd::buffers::for_overwrite::<T>(planes * oh * ow);
    if (oh, ow) == (1, 1) {
        // One bin, the whole plane: the same sum in the same order (from zero,
        // row-major) and the same count, without the bins' loops (5x faster at
        // `[256, 512, 1, 1]`).
        let count = T::from_f64((h * w) as f64);
        let mean = |p: &[T]| p.iter().fold(T::zero(), |s, &v| s + v) / count;
        by_groups(&mut y, 1, x, h * w, |yg, xg| yg.iter_mut().zip(xg.chunks_exact(h * w)).for_each(|(y, p)| *y = mean(p)));
        return y;
    }
    let bins = Bins::new((h, w), (oh, ow));
    per_plane(&mut y, oh * ow, x, h * w, |yp, xp| {
        for (o, (y0, y1), (x0, x1)) in bins.each() {
            let mut s = T::zero();
            for row in xp[y0 * w..y1 * w].chunks_exact(w) {
                for &v in &row[x0..x1] {
                    s += v;
                }
            }
            yp[o] = s / T::from_f64(((y1 - y0) * (x1 - x0)) as f64);
        }
    });
    y
}

/// The adjoint: each output gradient spread evenly over its bin (overlaps add up).
pub(crate) fn backward<T: Element>(dy: &[T], planes: usize, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<T> {
    if (oh, ow) == (1, 1) {
        // One bin: each plane is `0 + share`, as the bins' loop adds it into zeros.
        let mut dx = autograd::buffers::for_overwrite::<T>(planes * h * w);
        let count = T::from_f64((h * w) as f64);
        by_groups(&mut dx, h * w, dy, 1, |xg, dg| xg.chunks_exact_mut(h * w).zip(dg).for_each(|(p, &d)| p.fill(T::zero() + d / count)));
        return dx;
    }
    let mut dx = autograd::buffers::zeroed::<T>(planes * h * w);
    let bins = Bins::new((h, w), (oh, ow));
    per_plane(&mut dx, h * w, dy, oh * ow, |xp, dp| {
        for (o, (y0, y1), (x0, x1)) in bins.each() {
            let share = dp[o] / T::from_f64(((y1 - y0) * (x1 - x0)) as f64);
            for row in xp[y0 * w..y1 * w].chunks_exact_mut(w) {
                row[x0..x1].iter_mut().for_each(|v| *v += share);
            }
        }
    });
    dx
}

/// Each bin's winner as a position in its `(h, w)` plane (PyTorch's `return_indices`):
/// the first largest value in row-major order, or the first NaN (NaN wins, as in max
/// pooling).
pub(crate) fn argmax<T: Element>(x: &[T], planes: usize, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<i64> {
    let mut idx = vec![0i64; planes * oh * ow];
    let bins = Bins::new((h, w), (oh, ow));
    per_plane(&mut idx, oh * ow, x, h * w, |ip, xp| {
        for (o, (y0, y1), (x0, x1)) in bins.each() {
            let (mut best, mut at) = (T::neg_infinity(), y0 * w + x0);
            for r in y0..y1 {
                for c in x0..x1 {
                    if crate::cpu::pool_rows::wins(xp[r * w + c], best) {
                        best = xp[r * w + c];
                        at = r * w + c;
                    }
                }
            }
            ip[o] = at as i64;
        }
    });
    idx
}
