//! The batch-norm loops (`batch_norm.rs` is the front-end), over contiguous `[N, C, S]`
//! buffers: parallel over channels (statistics) or over `[S]` planes (element-wise
//! passes); every sum runs in a fixed order, so the bits do not depend on the thread count.

use autograd::parallel::install;
use autograd::{Element, Scalar};
use rayon::prelude::*;

/// `(sum f(x), sum g(x))` over a plane in eight f64 lanes (so the loop vectorises),
/// combined in a fixed order: the same bits on every call.
#[inline(always)]
pub(crate) fn sums8<T: Element>(x: &[T], y: &[T], f: impl Fn(f64, f64) -> (f64, f64)) -> (f64, f64) {
    let (mut a, mut b) = ([0.0f64; 8], [0.0f64; 8]);
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (xs, ys) in xc.zip(yc) {
        for i in 0..8 {
            let (p, q) = f(Scalar::to_f64(xs[i]), Scalar::to_f64(ys[i]));
            a[i] += p;
            b[i] += q;
        }
    }
    let fold = |v: [f64; 8]| ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    let (mut sa, mut sb) = (fold(a), fold(b));
    for (&xv, &yv) in xr.iter().zip(yr) {
        let (p, q) = f(Scalar::to_f64(xv), Scalar::to_f64(yv));
        sa += p;
        sb += q;
    }
    (sa, sb)
}

/// Each channel's mean and biased variance, accumulated in f64 (two passes: the mean,
/// then the squares about it, which is exact where a one-pass formula cancels).
pub(crate) fn channel_stats<T: Element>(x: &[T], n: usize, c: usize, s: usize) -> Vec<(f64, f64)> {
    let m = (n * s) as f64;
    let one = |k: usize| {
        let planes = (0..n).map(|i| &x[(i * c + k) * s..][..s]);
        let sum: f64 = planes.clone().map(|p| sums8(p, p, |v, _| (v, 0.0)).0).sum();
        let mean = sum / m;
        let sq: f64 = planes.map(|p| sums8(p, p, |v, _| ((v - mean) * (v - mean), 0.0)).0).sum();
        (mean, sq / m)
    };
    install(|| (0..c).into_par_iter().map(one).collect())
}

/// Each channel's `(sum dy, sum dy * x_hat)`, accumulated in f64, from the forward's
/// statistics.
pub(crate) fn grad_sums<T: Element>(x: &[T], dy: &[T], n: usize, c: usize, s: usize, stats: &[(f64, f64)], eps: f64) -> Vec<(f64, f64)> {
    let one = |k: usize| {
        let (mean, var) = stats[k];
        let invstd = 1.0 / (var + eps).sqrt();
        let (mut sd, mut sdx) = (0.0f64, 0.0f64);
        for i in 0..n {
            let at = (i * c + k) * s;
            let (a, b) = sums8(&dy[at..][..s], &x[at..][..s], |g, xv| (g, g * (xv - mean)));
            sd += a;
            sdx += b;
        }
        (sd, sdx * invstd)
    };
    install(|| (0..c).into_par_iter().map(one).collect())
}

/// `y = x * scale[c] + shift[c]` plane by plane.
pub(crate) fn affine<T: Element>(x: &[T], c: usize, s: usize, scale: &[T], shift: &[T]) -> Vec<T> {
    let mut y = autograd::buffers::for_overwrite::<T>(x.len());
    if s == 0 {
        return y;
    }
    install(|| {
        y.par_chunks_mut(s).zip(x.par_chunks(s)).enumerate().for_each(|(p, (yp, xp))| {
            let (a, b) = (scale[p % c], shift[p % c]);
            yp.iter_mut().zip(xp).for_each(|(y, &x)| *y = x * a + b);
        })
    });
    y
}

/// `dx = coef[c][0] * dy + coef[c][1] * x + coef[c][2]` plane by plane.
pub(crate) fn grad_input<T: Element>(dy: &[T], x: &[T], c: usize, s: usize, coef: &[[T; 3]]) -> Vec<T> {
    let mut dx = autograd::buffers::for_overwrite::<T>(x.len());
    if s == 0 {
        return dx;
    }
    install(|| {
        dx.par_chunks_mut(s).zip(dy.par_chunks(s).zip(x.par_chunks(s))).enumerate().for_each(|(p, (dp, (gp, xp)))| {
            let [a, b, d] = coef[p % c];
            dp.iter_mut().zip(gp.iter().zip(xp)).for_each(|(o, (&g, &x))| *o = a * g + b * x + d);
        })
    });
    dx
}
