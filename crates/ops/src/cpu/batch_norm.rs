//! The batch-norm loops (`batch_norm.rs` is the front-end), over contiguous `[N, C, S]`
//! buffers: parallel over channels (statistics) or over `[S]` planes (element-wise
//! passes); every sum runs in a fixed order, so the bits do not depend on the thread count.

use autograd::parallel::{for_each_row_mut, map_collect};
use autograd::{Activation, Element, Scalar};

/// `(sum f(x), sum g(x))` over a plane in eight f64 lanes (so the loop vectorises),
/// combined in a fixed order: the same bits on every call.
#[inline(always)]
pub(crate) fn sums8<T: Element>(x: &[T], y: &[T], f: impl Fn(f64, f64) -> (f64, f64)) -> (f64, f64) {
    sums8_of3(x, y, y, |a, b, _| f(Scalar::to_f64(a), Scalar::to_f64(b)))
}

/// [`sums8`] over three planes, with `f` of the values themselves (so it can do
/// arithmetic in `T` first, as an activation's gradient does): the same lanes and order.
#[inline(always)]
fn sums8_of3<T: Element>(x: &[T], y: &[T], z: &[T], f: impl Fn(T, T, T) -> (f64, f64)) -> (f64, f64) {
    if x.len() < 8 {
        // No whole lane group: the sum below is `0 + the values in order`, with none of
        // the chunking set up (a BatchNorm1d's planes are single values).
        let (mut sa, mut sb) = (0.0, 0.0);
        for ((&xv, &yv), &zv) in x.iter().zip(y).zip(z) {
            let (p, q) = f(xv, yv, zv);
            sa += p;
            sb += q;
        }
        return (sa, sb);
    }
    let (mut a, mut b) = ([0.0f64; 8], [0.0f64; 8]);
    let (xc, yc, zc) = (x.chunks_exact(8), y.chunks_exact(8), z.chunks_exact(8));
    let (xr, yr, zr) = (xc.remainder(), yc.remainder(), zc.remainder());
    for ((xs, ys), zs) in xc.zip(yc).zip(zc) {
        for i in 0..8 {
            let (p, q) = f(xs[i], ys[i], zs[i]);
            a[i] += p;
            b[i] += q;
        }
    }
    let fold = |v: [f64; 8]| ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    let (mut sa, mut sb) = (fold(a), fold(b));
    for ((&xv, &yv), &zv) in xr.iter().zip(yr).zip(zr) {
        let (p, q) = f(xv, yv, zv);
        sa += p;
        sb += q;
    }
    (sa, sb)
}

/// Channels per task when the planes are single values.
const ROW_RUN: usize = 64;

/// Per-channel sums in f64 over planes of one value (`s == 1`: a BatchNorm1d, a 1x1 map),
/// where a channel's values are `c` apart. Each task takes a run of channels and adds
/// sample `i`'s values of them (`add(acc, i, channels)`), the samples in order: a loop
/// over a row's channels, which vectorises, where a sum per channel would read one value
/// per cache line. Each channel adds the same values in the same order as the planes'
/// sums ([`sums8`] of one value is `0 + v`, and a sum from `0` is never `-0`), so the
/// bits are those of the general path.
fn by_rows<A: Copy + Default + Send>(n: usize, c: usize, add: impl Fn(&mut [A], usize, std::ops::Range<usize>) + Send + Sync) -> Vec<A> {
    let runs = map_collect(c.div_ceil(ROW_RUN), |t| {
        let ks = t * ROW_RUN..c.min((t + 1) * ROW_RUN);
        let mut acc = vec![A::default(); ks.len()];
        for i in 0..n {
            add(&mut acc, i, ks.clone());
        }
        acc
    });
    runs.concat()
}

/// Each channel's mean and biased variance, accumulated in f64 (two passes: the mean,
/// then the squares about it, which is exact where a one-pass formula cancels).
pub(crate) fn channel_stats<T: Element>(x: &[T], n: usize, c: usize, s: usize) -> Vec<(f64, f64)> {
    let m = (n * s) as f64;
    if s == 1 {
        let sums = by_rows(n, c, |acc: &mut [f64], i, ks| acc.iter_mut().zip(&x[i * c..][ks]).for_each(|(a, &v)| *a += Scalar::to_f64(v)));
        let means: Vec<f64> = sums.iter().map(|&sum| sum / m).collect();
        let squares = by_rows(n, c, |acc: &mut [f64], i, ks| {
            let values = acc.iter_mut().zip(&x[i * c..][ks.clone()]).zip(&means[ks]);
            values.for_each(|((a, &v), &mean)| *a += (Scalar::to_f64(v) - mean) * (Scalar::to_f64(v) - mean));
        });
        return means.into_iter().zip(squares).map(|(mean, sq)| (mean, sq / m)).collect();
    }
    let one = |k: usize| {
        let planes = (0..n).map(|i| &x[(i * c + k) * s..][..s]);
        let sum: f64 = planes.clone().map(|p| sums8(p, p, |v, _| (v, 0.0)).0).sum();
        let mean = sum / m;
        let sq: f64 = planes.map(|p| sums8(p, p, |v, _| ((v - mean) * (v - mean), 0.0)).0).sum();
        (mean, sq / m)
    };
    map_collect(c, one)
}

/// The gradient reaching the batch norm's output: the op's own `dz`, or, when an
/// activation follows in the same op (`conv2d_bn_train`), `act'` applied to it from the
/// activation's output `z`, formed on the fly with the activation's own arithmetic.
#[derive(Clone, Copy)]
pub(crate) struct OutGrad<'a, T> {
    pub dz: &'a [T],
    pub act: Option<(Activation, &'a [T])>,
}

/// Runs `$body` with `$g` bound to a function `(dz, z) -> g` for `$og`'s activation,
/// picked once outside the loops (so they vectorise), and `$z` to the slice `z` is read
/// from (`dz` itself without an activation, then unused).
macro_rules! with_grad {
    ($og:expr, |$g:ident, $z:ident| $body:expr) => {
        match $og.act {
            None => {
                let ($g, $z) = (|d: T, _: T| d, $og.dz);
                $body
            }
            Some((Activation::Relu, z)) => {
                let ($g, $z) = (|d: T, z: T| Activation::Relu.grad_from_output(d, z), z);
                $body
            }
            Some((Activation::Sigmoid, z)) => {
                let ($g, $z) = (|d: T, z: T| Activation::Sigmoid.grad_from_output(d, z), z);
                $body
            }
            Some((Activation::Tanh, z)) => {
                let ($g, $z) = (|d: T, z: T| Activation::Tanh.grad_from_output(d, z), z);
                $body
            }
        }
    };
}

/// Each channel's `(sum g, sum g * x_hat)`, accumulated in f64, from the forward's
/// statistics, `g` as [`OutGrad`] forms it.
pub(crate) fn grad_sums<T: Element>(
    x: &[T],
    og: OutGrad<'_, T>,
    n: usize,
    c: usize,
    s: usize,
    stats: &[(f64, f64)],
    eps: f64,
) -> Vec<(f64, f64)> {
    with_grad!(og, |grad, z| {
        if s == 1 {
            // Both sums in one pass over the rows.
            let sums = by_rows(n, c, |acc: &mut [(f64, f64)], i, ks| {
                let row = og.dz[i * c..][ks.clone()].iter().zip(&z[i * c..][ks.clone()]).zip(&x[i * c..][ks.clone()]);
                for (((sd, sdx), ((&d, &zv), &xv)), &(mean, _)) in acc.iter_mut().zip(row).zip(&stats[ks]) {
                    let g = Scalar::to_f64(grad(d, zv));
                    *sd += g;
                    *sdx += g * (Scalar::to_f64(xv) - mean);
                }
            });
            return sums.into_iter().zip(stats).map(|((sd, sdx), &(_, var))| (sd, sdx * (1.0 / (var + eps).sqrt()))).collect();
        }
        let one = |k: usize| {
            let (mean, var) = stats[k];
            let invstd = 1.0 / (var + eps).sqrt();
            let (mut sd, mut sdx) = (0.0f64, 0.0f64);
            for i in 0..n {
                let at = (i * c + k) * s;
                let (a, b) = sums8_of3(&og.dz[at..][..s], &z[at..][..s], &x[at..][..s], |d, zv, xv| {
                    let g = Scalar::to_f64(grad(d, zv));
                    (g, g * (Scalar::to_f64(xv) - mean))
                });
                sd += a;
                sdx += b;
            }
            (sd, sdx * invstd)
        };
        map_collect(c, one)
    })
}

/// `y = act(x * scale[c] + shift[c])` a sample at a time (the activation, if any, applied
/// to the sample's planes while they are in cache). By samples, not planes: a
/// BatchNorm1d's planes are single values, one task and one activation call each.
pub(crate) fn affine<T: Element>(x: &[T], c: usize, s: usize, scale: &[T], shift: &[T], act: Option<Activation>) -> Vec<T> {
    let mut y = autograd::buffers::for_overwrite::<T>(x.len());
    if c * s == 0 {
        return y;
    }
    let row = c * s;
    for_each_row_mut(&mut y, row, |i, yr| {
        let xr = &x[i * row..][..row];
        if s == 1 {
            // A BatchNorm1d's (or a 1x1 map's) row is one value per channel: one loop over
            // the channels, which vectorises, where planes of one value would not.
            yr.iter_mut().zip(xr).zip(scale.iter().zip(shift)).for_each(|((y, &x), (&a, &b))| *y = x * a + b);
        } else {
            for ((yp, xp), (&a, &b)) in yr.chunks_exact_mut(s).zip(xr.chunks_exact(s)).zip(scale.iter().zip(shift)) {
                yp.iter_mut().zip(xp).for_each(|(y, &x)| *y = x * a + b);
            }
        }
        if let Some(act) = act {
            act.apply_slice(yr);
        }
    });
    y
}

/// `dx = coef[c][0] * g + coef[c][1] * x + coef[c][2]` a sample at a time (as
/// [`affine`]), `g` as [`OutGrad`] forms it.
pub(crate) fn grad_input<T: Element>(og: OutGrad<'_, T>, x: &[T], c: usize, s: usize, coef: &[[T; 3]]) -> Vec<T> {
    let mut dx = autograd::buffers::for_overwrite::<T>(x.len());
    let row = c * s;
    if row == 0 {
        return dx;
    }
    with_grad!(og, |grad, z| for_each_row_mut(&mut dx, row, |i, dr| {
        let (dzr, zr, xr) = (&og.dz[i * row..][..row], &z[i * row..][..row], &x[i * row..][..row]);
        if s == 1 {
            // One value per channel, as in `affine`.
            let values = dr.iter_mut().zip(dzr.iter().zip(zr).zip(xr));
            values.zip(coef).for_each(|((o, ((&dz, &z), &x)), &[a, b, d])| *o = a * grad(dz, z) + b * x + d);
            return;
        }
        let planes = dr.chunks_exact_mut(s).zip(dzr.chunks_exact(s).zip(zr.chunks_exact(s)).zip(xr.chunks_exact(s)));
        for ((dp, ((dzp, zp), xp)), &[a, b, d]) in planes.zip(coef) {
            dp.iter_mut().zip(dzp.iter().zip(zp).zip(xp)).for_each(|(o, ((&dz, &z), &x))| *o = a * grad(dz, z) + b * x + d);
        }
    }));
    dx
}
