//! Direct convolution for stride 1, over "wide" rows: nothing is unfolded.
//!
//! A sample group's zero-padded input planes are `hp x wp`. Number the output positions
//! with the *input's* row length, `p = oy wp + ox`: then kernel tap `(c, i, j)` reads input
//! `off(c, i, j) + p`, with `off = c hp wp + i dh wp + j dw`, for every `p`. Each tap is a
//! contiguous, shifted run of the input, so all three maps vectorise along `p` with plain
//! loads (the micro-kernels are in `tiles.rs`):
//!
//! - forward: output channel `o` is `Σ_taps w[o, tap] x[off(tap) + p]`;
//! - input gradient: the same sum with the roles swapped, over the output gradient laid out
//!   wide, zero outside the outputs, and taps `(o, i, j)` shifted back by `off(i, j)`;
//! - weight gradient: `dw[o, tap] = Σ_n Σ_p dy[o, p] x[off(tap) + p]`.
//!
//! The price is the `wp - OW` columns past each output row, computed and thrown away (29%
//! of LeNet's conv2, 12.5% of conv1), and for the input gradient the zero border of the
//! output gradient; either costs less than writing and re-reading an unfolded matrix.
//! A non-finite input value is read by those spare columns too, so it can turn more weight
//! gradient entries into NaN than the unfolding path would: those entries are then
//! `0 x inf`, where the unfolding path leaves them finite.

use super::{copy_short, ensure_len, tiles, Geom, Pair, Scratch, SharedOut};
use autograd::parallel::install;
use autograd::{Activation, Element};
use rayon::prelude::*;

/// The wide layout of one convolution.
pub(super) struct Wide {
    hp: usize,
    wp: usize,
    /// Offsets of the taps `(c, i, j)` of one group in its padded planes, in weight order.
    offs: Vec<usize>,
    /// Wide positions covering every output: `(OH - 1) wp + OW`.
    positions: usize,
}

impl Wide {
    /// The wide layout, when the direct kernels apply: stride 1, on a CPU that runs them.
    pub(super) fn new(g: &Geom) -> Option<Wide> {
        if g.a.stride != Pair(1, 1) || !tiles::available() || g.l() == 0 || g.rows() == 0 {
            return None;
        }
        let (Pair(ph, pw), Pair(dh, dw)) = (g.a.padding, g.a.dilation);
        let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
        let mut offs = Vec::with_capacity(g.rows());
        for c in 0..g.cg {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    offs.push(c * hp * wp + i * dh * wp + j * dw);
                }
            }
        }
        Some(Wide { hp, wp, offs, positions: (g.oh - 1) * wp + g.ow })
    }

    fn plane(&self) -> usize {
        self.hp * self.wp
    }

    /// Length of one sample group's padded planes plus the zeros the kernels read past them.
    fn padded_len<T: Element>(&self, g: &Geom) -> usize {
        g.cg * self.plane() + tiles::slack::<T>()
    }

    /// Copies group `grp` of sample `x` (`[C, H, W]`) into `dst` (`padded_len` long) as
    /// zero-padded planes followed by zeros.
    fn pad<T: Element>(&self, g: &Geom, x: &[T], grp: usize, dst: &mut [T]) {
        let Pair(ph, pw) = g.a.padding;
        let len = g.cg * self.plane();
        let planes = &x[grp * g.cg * g.h * g.w..][..g.cg * g.h * g.w];
        if ph == 0 && pw == 0 {
            dst[..len].copy_from_slice(planes);
        } else {
            dst[..len].fill(T::zero());
            for cc in 0..g.cg {
                for y in 0..g.h {
                    let row = &mut dst[(cc * self.hp + ph + y) * self.wp + pw..][..g.w];
                    copy_short(row, &planes[(cc * g.h + y) * g.w..][..g.w]);
                }
            }
        }
        dst[len..].fill(T::zero());
    }

    /// Copies rows `channels` of sample `dy` (`[O, OH, OW]`), group `grp`, into `dst` in
    /// wide layout: row `o` at `o ld + at`, zero at the spare columns and everywhere else.
    fn widen<T: Element>(&self, g: &Geom, dy: &[T], grp: usize, dst: &mut [T], ld: usize, at: usize) {
        dst.fill(T::zero());
        let l = g.l();
        for o in 0..g.og {
            let src = &dy[(grp * g.og + o) * l..][..l];
            for oy in 0..g.oh {
                copy_short(&mut dst[o * ld + at + oy * self.wp..][..g.ow], &src[oy * g.ow..][..g.ow]);
            }
        }
    }
}

/// `w` (`[O, C/groups, kh, kw]`) rearranged for [`tiles::combine`]: per group and per block
/// of `ob` rows of the result, `ob` weights per tap, zero for rows past `rows`. `at(grp,
/// row, tap)` gives the weight's index.
fn pack<T: Element>(w: &[T], groups: usize, rows: usize, taps: usize, ob: usize, at: impl Fn(usize, usize, usize) -> usize) -> Vec<T> {
    let blocks = rows.div_ceil(ob);
    let mut packed = autograd::buffers::zeroed::<T>(groups * blocks * taps * ob);
    for grp in 0..groups {
        for r in 0..rows {
            let dst = &mut packed[(grp * blocks + r / ob) * taps * ob + r % ob..];
            for t in 0..taps {
                dst[t * ob] = w[at(grp, r, t)];
            }
        }
    }
    packed
}

/// Rounds `n` up to whole vectors of `T`.
fn round_up<T: 'static>(n: usize) -> usize {
    n.next_multiple_of(tiles::lanes::<T>())
}

/// The forward pass: every block of output channels of a sample group in wide rows, then
/// copied out with its bias and activation (while the block is in cache).
pub(super) fn forward<T: Element>(g: &Geom, wide: &Wide, x: &[T], w: &[T], bias: Option<&[T]>, act: Option<Activation>) -> Vec<T> {
    let (l, rows) = (g.l(), g.rows());
    let ob = tiles::combine_rows(g.og);
    let blocks = g.og.div_ceil(ob);
    let packed = pack(w, g.a.groups, g.og, rows, ob, |grp, o, t| (grp * g.og + o) * rows + t);
    let ld = round_up::<T>(wide.positions);
    let mut y = autograd::buffers::for_overwrite::<T>(g.n * g.o * l);
    let out = SharedOut(y.as_mut_ptr(), y.len());
    install(|| {
        (0..g.n).into_par_iter().for_each_init(Scratch::default, |sc, n| {
            ensure_len(&mut sc.mat, ob * ld);
            ensure_len(&mut sc.pad, wide.padded_len::<T>(g));
            for grp in 0..g.a.groups {
                wide.pad(g, &x[n * g.c * g.h * g.w..], grp, &mut sc.pad);
                for blk in 0..blocks {
                    let wb = &packed[(grp * blocks + blk) * rows * ob..][..rows * ob];
                    // SAFETY: `pad` holds the planes and the slack a tile runs over; `mat`
                    // holds `ob` rows of the rounded positions.
                    unsafe { tiles::combine(ob, &wide.offs, wide.positions, sc.pad.as_ptr(), wb.as_ptr(), sc.mat.as_mut_ptr(), ld) };
                    for r in 0..ob.min(g.og - blk * ob) {
                        let c = grp * g.og + blk * ob + r;
                        // SAFETY: each sample's output belongs to exactly one task.
                        let dst = unsafe { out.slice((n * g.o + c) * l, l) };
                        let bc = bias.map_or(T::zero(), |b| b[c]);
                        for oy in 0..g.oh {
                            let src = &sc.mat[r * ld + oy * wide.wp..][..g.ow];
                            dst[oy * g.ow..][..g.ow].iter_mut().zip(src).for_each(|(d, &v)| *d = v + bc);
                        }
                    }
                }
            }
            if let Some(a) = act {
                // SAFETY: as above; every channel of the sample is written.
                tiles::activate(a, unsafe { out.slice(n * g.o * l, g.o * l) });
            }
        });
    });
    autograd::buffers::recycle(packed);
    y
}

/// The input gradient: `dx[c, q] = Σ_(o, i, j) w[o, c, i, j] dy[o, q - off(i, j)]` over the
/// padded planes, with the output gradient laid out wide after a zero margin of the
/// largest shift, so every tap is again a contiguous run.
pub(super) fn input_grad<T: Element>(g: &Geom, wide: &Wide, dy: &[T], w: &[T]) -> Vec<T> {
    let (Pair(ph, pw), Pair(dh, dw)) = (g.a.padding, g.a.dilation);
    let chw = g.c * g.h * g.w;
    let margin = (g.kh - 1) * dh * wide.wp + (g.kw - 1) * dw;
    let plane = margin + wide.plane();
    let taps = g.og * g.kh * g.kw;
    let mut offs = Vec::with_capacity(taps);
    for o in 0..g.og {
        for i in 0..g.kh {
            for j in 0..g.kw {
                offs.push(o * plane + margin - (i * dh * wide.wp + j * dw));
            }
        }
    }
    let cb = tiles::combine_rows(g.cg);
    let blocks = g.cg.div_ceil(cb);
    let kk = g.kh * g.kw;
    let packed = pack(w, g.a.groups, g.cg, taps, cb, |grp, c, t| ((grp * g.og + t / kk) * g.cg + c) * kk + t % kk);
    // The rows of the padded planes that hold the input, whole.
    let (q0, positions) = (ph * wide.wp, g.h * wide.wp);
    let ld = round_up::<T>(positions);
    let mut dx = autograd::buffers::for_overwrite::<T>(g.n * chw);
    let out = SharedOut(dx.as_mut_ptr(), dx.len());
    install(|| {
        (0..g.n).into_par_iter().for_each_init(Scratch::default, |sc, n| {
            ensure_len(&mut sc.mat, cb * ld);
            ensure_len(&mut sc.pad, g.og * plane + tiles::slack::<T>());
            // SAFETY: each sample's input gradient belongs to exactly one task.
            let dxn = unsafe { out.slice(n * chw, chw) };
            for grp in 0..g.a.groups {
                wide.widen(g, &dy[n * g.o * g.l()..], grp, &mut sc.pad, plane, margin);
                for blk in 0..blocks {
                    let wb = &packed[(grp * blocks + blk) * taps * cb..][..taps * cb];
                    // SAFETY: every tap reads at most `margin + q0 + ld` into its row of
                    // `plane + slack`; `mat` holds `cb` rows of `ld`.
                    unsafe { tiles::combine(cb, &offs, positions, sc.pad.as_ptr().add(q0), wb.as_ptr(), sc.mat.as_mut_ptr(), ld) };
                    for r in 0..cb.min(g.cg - blk * cb) {
                        let c = grp * g.cg + blk * cb + r;
                        for y in 0..g.h {
                            copy_short(&mut dxn[(c * g.h + y) * g.w..][..g.w], &sc.mat[r * ld + y * wide.wp + pw..][..g.w]);
                        }
                    }
                }
            }
        });
    });
    autograd::buffers::recycle(packed);
    dx
}

/// The sum of a vector's lanes as a pairwise tree: independent adds, in a fixed order.
fn lane_sum<T: Element>(v: &[T]) -> T {
    let mut buf = [T::zero(); 16];
    let mut n = v.len();
    buf[..n].copy_from_slice(v);
    while n > 1 {
        n /= 2;
        for i in 0..n {
            buf[i] += buf[i + n];
        }
    }
    buf[0]
}

/// Samples per weight-gradient block: about 512 KB of padded inputs and wide output
/// gradients, which stay in cache while every tile passes over them. A function of the
/// geometry alone, so the block sums (added in block order) are the same at any thread count.
fn weight_grad_block<T: Element>(g: &Geom, wide: &Wide) -> usize {
    let per_sample = (wide.padded_len::<T>(g) + g.og.next_multiple_of(6) * round_up::<T>(wide.positions)) * size_of::<T>();
    ((512 << 10) / per_sample.max(1)).clamp(1, 32)
}

/// The weight gradient: per block of samples, every tile of (output channels x taps) runs
/// over the block's samples with its sums in registers; lanes are added at the end.
pub(super) fn weight_grad<T: Element>(g: &Geom, wide: &Wide, x: &[T], dy: &[T]) -> Vec<T> {
    let rows = g.rows();
    let (ob, tb) = tiles::correlate_shape(g.og, rows);
    let (og_pad, taps_pad) = (g.og.next_multiple_of(ob), rows.next_multiple_of(tb));
    let lanes = tiles::lanes::<T>();
    // Spare taps read offset 0; their sums are dropped.
    let mut offs = wide.offs.clone();
    offs.resize(taps_pad, 0);
    let ldd = round_up::<T>(wide.positions);
    let xlen = wide.padded_len::<T>(g);
    let nb = weight_grad_block::<T>(g, wide);
    let blocks = g.n.div_ceil(nb);
    let size = g.o * rows;
    let mut partials = autograd::buffers::for_overwrite::<T>(blocks * size);
    let out = SharedOut(partials.as_mut_ptr(), partials.len());
    install(|| {
        (0..blocks).into_par_iter().for_each_init(Scratch::default, |sc, b| {
            let samples = b * nb..((b + 1) * nb).min(g.n);
            ensure_len(&mut sc.pad, samples.len() * xlen);
            ensure_len(&mut sc.mat, samples.len() * og_pad * ldd);
            ensure_len(&mut sc.cols, og_pad * taps_pad * lanes);
            // SAFETY: block `b` owns partial sum `b`.
            let acc = unsafe { out.slice(b * size, size) };
            for grp in 0..g.a.groups {
                for (s, n) in samples.clone().enumerate() {
                    wide.pad(g, &x[n * g.c * g.h * g.w..], grp, &mut sc.pad[s * xlen..][..xlen]);
                    wide.widen(g, &dy[n * g.o * g.l()..], grp, &mut sc.mat[s * og_pad * ldd..][..og_pad * ldd], ldd, 0);
                }
                sc.cols.fill(T::zero());
                let runs = tiles::Runs {
                    samples: samples.len(),
                    vecs: ldd / lanes,
                    dy: sc.mat.as_ptr(),
                    dy_stride: og_pad * ldd,
                    ldd,
                    x: sc.pad.as_ptr(),
                    x_stride: xlen,
                };
                // Tiles are stored one after the other, `ob x tb` vectors each.
                let mut tile = sc.cols.chunks_exact_mut(ob * tb * lanes);
                for o0 in (0..og_pad).step_by(ob) {
                    for t0 in (0..taps_pad).step_by(tb) {
                        let sums = tile.next().expect("one tile per block").as_mut_ptr();
                        let runs = tiles::Runs { dy: runs.dy.wrapping_add(o0 * ldd), ..runs };
                        // SAFETY: `mat` holds `og_pad` rows of `ldd` per sample, `pad` the
                        // planes plus the slack a vector runs over, `sums` one tile.
                        unsafe { tiles::correlate((ob, tb), runs, offs.as_ptr().add(t0), sums) };
                    }
                }
                for (i, sums) in sc.cols.chunks_exact(ob * tb * lanes).enumerate() {
                    let (o0, t0) = (i / (taps_pad / tb) * ob, i % (taps_pad / tb) * tb);
                    for (k, v) in sums.chunks_exact(lanes).enumerate() {
                        let (o, t) = (o0 + k / tb, t0 + k % tb);
                        if o < g.og && t < rows {
                            acc[(grp * g.og + o) * rows + t] = lane_sum(v);
                        }
                    }
                }
            }
        });
    });
    let mut dw = autograd::buffers::zeroed::<T>(size);
    for p in partials.chunks(size.max(1)) {
        dw.iter_mut().zip(p).for_each(|(d, &v)| *d += v);
    }
    autograd::buffers::recycle(partials);
    dw
}
