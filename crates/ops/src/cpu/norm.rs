//! The loops of layer and group normalisation (`norm.rs` is the front-end). Both
//! normalise rows: the input is a contiguous `[rows, d]` buffer whose row `r` is group
//! `r % groups` of a sample, made of `d / s` channels of `s` values each, and channel `k`
//! of group `q` has affine weight `q (d / s) + k`. Layer norm is `groups = 1, s = 1` (one
//! weight per element of the normalised shape); group norm is `s` = the spatial size.
//!
//! Rows are independent and each row's sums run in a fixed order (in f64); the weight
//! gradient adds per-block partial sums in block order, blocks fixed by the size. So the
//! bits do not depend on the thread count.

use super::batch_norm::sums8;
use autograd::parallel::install;
use autograd::{Element, Scalar};
use rayon::prelude::*;

/// The row geometry shared by the loops.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rows {
    pub(crate) rows: usize,
    /// Values per row: `cg * s`.
    pub(crate) d: usize,
    pub(crate) groups: usize,
    /// Channels per row.
    pub(crate) cg: usize,
    pub(crate) s: usize,
}

impl Rows {
    pub(crate) fn new(rows: usize, groups: usize, cg: usize, s: usize) -> Rows {
        Rows { rows, d: cg * s, groups: groups.max(1), cg, s }
    }
    /// Number of affine weights.
    pub(crate) fn weights(&self) -> usize {
        self.groups * self.cg
    }
    /// The first affine weight of row `r`.
    fn first_weight(&self, r: usize) -> usize {
        (r % self.groups) * self.cg
    }
}

/// Each row's mean and `1 / sqrt(biased variance + eps)`, in f64 (two passes).
pub(crate) fn row_stats<T: Element>(x: &[T], g: Rows, eps: f64) -> Vec<(f64, f64)> {
    if g.d == 0 {
        return Vec::new(); // no values (and the row count may be anything)
    }
    let one = |r: usize| {
        let row = &x[r * g.d..][..g.d];
        let mean = sums8(row, row, |v, _| (v, 0.0)).0 / g.d as f64;
        let var = sums8(row, row, |v, _| ((v - mean) * (v - mean), 0.0)).0 / g.d as f64;
        (mean, 1.0 / (var + eps).sqrt())
    };
    install(|| (0..g.rows).into_par_iter().map(one).collect())
}

/// `y = (x - mean) rstd w + b` per row and channel, as `x a + c` with `a = rstd w` and
/// `c = b - mean a` computed once per channel in f64.
pub(crate) fn forward<T: Element>(x: &[T], g: Rows, stats: &[(f64, f64)], w: Option<&[T]>, b: Option<&[T]>) -> Vec<T> {
    let mut y = autograd::buffers::for_overwrite::<T>(x.len());
    if g.d == 0 {
        return y;
    }
    let row = |(r, yr): (usize, &mut [T])| {
        let (mean, rstd) = stats[r];
        let xr = &x[r * g.d..][..g.d];
        for (k, (yc, xc)) in yr.chunks_mut(g.s).zip(xr.chunks(g.s)).enumerate() {
            let at = g.first_weight(r) + k;
            let a = rstd * w.map_or(1.0, |w| Scalar::to_f64(w[at]));
            let c = b.map_or(0.0, |b| Scalar::to_f64(b[at])) - mean * a;
            let (a, c) = (T::from_f64(a), T::from_f64(c));
            yc.iter_mut().zip(xc).for_each(|(o, &v)| *o = v * a + c);
        }
    };
    install(|| y.par_chunks_mut(g.d).enumerate().for_each(row));
    y
}

/// The first-order gradients: `dx`, and the weight and bias gradients (zeros when there
/// are no affine weights), from the forward's statistics. With `gw = g w` and
/// `x_hat = (x - mean) rstd`, per row of `d` values:
/// `dx = rstd (gw - sum(gw) / d - x_hat sum(gw x_hat) / d)`, written `a g + bx x + c`.
pub(crate) fn backward<T: Element>(x: &[T], dy: &[T], g: Rows, stats: &[(f64, f64)], w: Option<&[T]>) -> (Vec<T>, Vec<T>, Vec<T>) {
    let nw = g.weights();
    let mut dx = autograd::buffers::for_overwrite::<T>(x.len());
    // Fixed blocks of rows, each with its own partial weight and bias sums (none when
    // there are no values: the row count may then be anything).
    let per = g.rows.div_ceil(64).max(1);
    let blocks = if g.d == 0 { 0 } else { g.rows.div_ceil(per) };
    let mut partial = vec![0.0f64; blocks * 2 * nw];
    if blocks > 0 {
        let block = |(bi, (dxb, pb)): (usize, (&mut [T], &mut [f64]))| {
            let (pw, pb) = pb.split_at_mut(nw);
            for (i, dxr) in dxb.chunks_mut(g.d).enumerate() {
                let r = bi * per + i;
                let (mean, rstd) = stats[r];
                let (xr, gr) = (&x[r * g.d..][..g.d], &dy[r * g.d..][..g.d]);
                let w0 = g.first_weight(r);
                let (mut s1, mut s2) = (0.0f64, 0.0f64);
                for (k, (xc, gc)) in xr.chunks(g.s).zip(gr.chunks(g.s)).enumerate() {
                    let wk = w.map_or(1.0, |w| Scalar::to_f64(w[w0 + k]));
                    let (sg, sgx) = sums8(gc, xc, |gv, xv| (gv, gv * (xv - mean)));
                    pw[w0 + k] += sgx * rstd;
                    pb[w0 + k] += sg;
                    s1 += wk * sg;
                    s2 += wk * sgx * rstd;
                }
                let d = g.d as f64;
                let bx = -rstd * rstd * s2 / d;
                let c = T::from_f64(-rstd * s1 / d - bx * mean);
                let bx = T::from_f64(bx);
                for (k, (dc, (xc, gc))) in dxr.chunks_mut(g.s).zip(xr.chunks(g.s).zip(gr.chunks(g.s))).enumerate() {
                    let a = T::from_f64(rstd * w.map_or(1.0, |w| Scalar::to_f64(w[w0 + k])));
                    dc.iter_mut().zip(xc.iter().zip(gc)).for_each(|(o, (&xv, &gv))| *o = a * gv + bx * xv + c);
                }
            }
        };
        install(|| dx.par_chunks_mut(per * g.d).zip(partial.par_chunks_mut(2 * nw)).enumerate().for_each(block));
    }
    let (mut dw, mut db) = (vec![0.0f64; nw], vec![0.0f64; nw]);
    if nw > 0 {
        for p in partial.chunks(2 * nw) {
            dw.iter_mut().zip(&p[..nw]).for_each(|(a, &v)| *a += v);
            db.iter_mut().zip(&p[nw..]).for_each(|(a, &v)| *a += v);
        }
    }
    let cast = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect::<Vec<T>>();
    (dx, cast(dw), cast(db))
}
