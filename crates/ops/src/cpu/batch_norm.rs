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

/// The longest plane (and row run) whose ReLU gradient [`grad_sums`] forms first, on the
/// stack.
const G_SPAN: usize = 1024;

/// Values a task reads from each sample, at least, where the planes are small: a run of
/// whole planes of consecutive channels, contiguous in memory.
const PLANE_RUN: usize = 256;

/// Channels per task for planes of `s` values: [`ROW_RUN`] for single values, else
/// enough planes for [`PLANE_RUN`] values (one plane when a plane is that long).
fn run_len(s: usize) -> usize {
    if s == 1 {
        ROW_RUN
    } else {
        (PLANE_RUN / s).clamp(1, ROW_RUN)
    }
}

/// Per-channel sums in f64, a task per run of `run` channels: it adds sample `i`'s planes
/// of them (`add(acc, i, channels)`), the samples in order, so each task reads one
/// contiguous run per sample. For planes of one value (a BatchNorm1d, a 1x1 map) the
/// caller's loop runs across the row's channels, which vectorises, where a sum per channel
/// would read one value per cache line; for small planes (ResNet's 7x7 to 2x2 maps), a
/// task reads its run's planes in one stretch per sample where a task per channel read a
/// few cache lines `c s` values apart (alone, no faster in a timer with the data in
/// cache). Each channel adds the same values in the same order as a plane-by-plane sum
/// ([`sums8`] of one value is `0 + v`, and a sum from `0` is never `-0`), so the bits do
/// not depend on the run length.
fn by_runs<A: Copy + Default + Send>(
    n: usize,
    c: usize,
    run: usize,
    add: impl Fn(&mut [A], usize, std::ops::Range<usize>) + Send + Sync,
) -> Vec<A> {
    by_runs_with(n, c, run, || (), |_, acc, i, ks| add(acc, i, ks))
}

/// [`by_runs`] with a scratch value per task, made by `scratch`.
fn by_runs_with<A: Copy + Default + Send, S>(
    n: usize,
    c: usize,
    run: usize,
    scratch: impl Fn() -> S + Send + Sync,
    add: impl Fn(&mut S, &mut [A], usize, std::ops::Range<usize>) + Send + Sync,
) -> Vec<A> {
    let runs = map_collect(c.div_ceil(run), |t| {
        let ks = t * run..c.min((t + 1) * run);
        let mut acc = vec![A::default(); ks.len()];
        let mut own = scratch();
        for i in 0..n {
            add(&mut own, &mut acc, i, ks.clone());
        }
        acc
    });
    runs.concat()
}

/// Each channel's mean and biased variance, accumulated in f64 (two passes: the mean,
/// then the squares about it, which is exact where a one-pass formula cancels).
pub(crate) fn channel_stats<T: Element>(x: &[T], n: usize, c: usize, s: usize) -> Vec<(f64, f64)> {
    let m = (n * s) as f64;
    let run = run_len(s);
    // Sample `i`'s planes of channels `ks`, one after another.
    let planes = |i: usize, ks: &std::ops::Range<usize>| x[(i * c + ks.start) * s..(i * c + ks.end) * s].chunks_exact(s);
    let sums = if s == 1 {
        by_runs(n, c, run, |acc: &mut [f64], i, ks| acc.iter_mut().zip(&x[i * c..][ks]).for_each(|(a, &v)| *a += Scalar::to_f64(v)))
    } else {
        by_runs(n, c, run, |acc: &mut [f64], i, ks| {
            acc.iter_mut().zip(planes(i, &ks)).for_each(|(a, p)| *a += sums8(p, p, |v, _| (v, 0.0)).0)
        })
    };
    let means: Vec<f64> = sums.iter().map(|&sum| sum / m).collect();
    let squares = if s == 1 {
        by_runs(n, c, run, |acc: &mut [f64], i, ks| {
            let values = acc.iter_mut().zip(&x[i * c..][ks.clone()]).zip(&means[ks]);
            values.for_each(|((a, &v), &mean)| *a += (Scalar::to_f64(v) - mean) * (Scalar::to_f64(v) - mean));
        })
    } else {
        by_runs(n, c, run, |acc: &mut [f64], i, ks| {
            let values = acc.iter_mut().zip(planes(i, &ks)).zip(&means[ks]);
            values.for_each(|((a, p), &mean)| *a += sums8(p, p, |v, _| ((v - mean) * (v - mean), 0.0)).0);
        })
    };
    means.into_iter().zip(squares).map(|(mean, sq)| (mean, sq / m)).collect()
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
    let run = run_len(s);
    // ReLU's gradient (a compare and a select) is formed for a row's run of channels, or
    // for a plane, first, in a loop that vectorises: formed inside the f64 sums, it kept
    // the whole loop scalar. The other activations' gradients are arithmetic, which
    // vectorises in place, and a stack copy of them cost BN-LeNet 5% at one thread.
    let form_first = matches!(og.act, Some((Activation::Relu, _)));
    let sums = with_grad!(og, |grad, z| {
        let scratch = || [T::zero(); G_SPAN];
        if s == 1 {
            // Both sums in one pass over the rows.
            by_runs_with(n, c, run, scratch, |gs, acc: &mut [(f64, f64)], i, ks| {
                let (dr, zr, xr) = (&og.dz[i * c..][ks.clone()], &z[i * c..][ks.clone()], &x[i * c..][ks.clone()]);
                let stats = &stats[ks.clone()];
                let add = |(sd, sdx): &mut (f64, f64), g: T, xv: T, mean: f64| {
                    let g = Scalar::to_f64(g);
                    *sd += g;
                    *sdx += g * (Scalar::to_f64(xv) - mean);
                };
                if form_first {
                    let g = &mut gs[..ks.len()];
                    g.iter_mut().zip(dr.iter().zip(zr)).for_each(|(g, (&d, &zv))| *g = grad(d, zv));
                    acc.iter_mut().zip(g.iter().zip(xr)).zip(stats).for_each(|((a, (&g, &xv)), &(mean, _))| add(a, g, xv, mean));
                } else {
                    let values = acc.iter_mut().zip(dr.iter().zip(zr).zip(xr)).zip(stats);
                    values.for_each(|((a, ((&d, &zv), &xv)), &(mean, _))| add(a, grad(d, zv), xv, mean));
                }
            })
        } else {
            by_runs_with(n, c, run, scratch, |gs, acc: &mut [(f64, f64)], i, ks| {
                let at = (i * c + ks.start) * s..(i * c + ks.end) * s;
                let planes = og.dz[at.clone()].chunks_exact(s).zip(z[at.clone()].chunks_exact(s)).zip(x[at].chunks_exact(s));
                for (((sd, sdx), ((dp, zp), xp)), &(mean, _)) in acc.iter_mut().zip(planes).zip(&stats[ks]) {
                    let (a, b) = if form_first && s <= G_SPAN {
                        let g = &mut gs[..s];
                        g.iter_mut().zip(dp.iter().zip(zp)).for_each(|(g, (&d, &zv))| *g = grad(d, zv));
                        sums8(g, xp, |g, xv| (g, g * (xv - mean)))
                    } else {
                        sums8_of3(dp, zp, xp, |d, zv, xv| {
                            let g = Scalar::to_f64(grad(d, zv));
                            (g, g * (Scalar::to_f64(xv) - mean))
                        })
                    };
                    *sd += a;
                    *sdx += b;
                }
            })
        }
    });
    sums.into_iter().zip(stats).map(|((sd, sdx), &(_, var))| (sd, sdx * (1.0 / (var + eps).sqrt()))).collect()
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
