//! Convolution as one product over the whole batch per output position and live kernel
//! tap, for small maps with many channels (ResNet's deep stages).
//!
//! At ResNet-18's 4x4, 2x2 and 1x1 maps a sample has only a handful of output positions,
//! so per-sample products are thin (unfolding's columns are `OH OW` per sample) and most
//! of a 3x3 kernel reads padding: at 2x2 each output sees 4 of the 9 taps. Here the
//! tensors are copied position-major, `[positions, N, channels]`, and every pair of an
//! output position `l` and a tap `t` that reads a real input position `p` is one product
//! over the batch:
//!
//! - forward: `Y[l] (N x O) = Σ_t X[p(l, t)] (N x C) W[t] (C x O)`;
//! - input gradient: `dX[p] (N x C) = Σ_(l, t) at p  dY[l] (N x O) W[t]ᵀ (O x C)`;
//! - weight gradient: `dW[t] (C x O) = Σ_l X[p(l, t)]ᵀ (C x N) dY[l] (N x O)`.
//!
//! Taps that read padding are never multiplied. Each output block (a position's rows of
//! the batch, or a tap's rows of channels) is one task that adds its products in the fixed
//! order of the pairs, its tiles fixed by the shape: bitwise the same at any thread count.
//! One group only.

use super::gemm::{gemm_serial, MatRef};
use super::geom::Geom;
use super::transpose::{transpose, transpose_raw};
use crate::args::Pair;
use crate::shared::SharedOut;
use autograd::parallel::{for_each_row_mut, install};
use autograd::{Activation, Element};
use rayon::prelude::*;

/// Batch rows (or channel rows, for the weight gradient) per task: 128 lets each packed
/// panel of the right-hand side serve twice the rows of 64 (ResNet-18's taps lines ran
/// 4-7% faster, ninth session), unless that leaves fewer than [`MIN_TASKS`] tasks (a 1x1
/// map's single position), where 64 keeps the cores busy. A function of the shape only, and
/// each output row's sums do not depend on the blocking: the same bits either way.
const ROWS: usize = 128;
const FEW_ROWS: usize = 64;
const MIN_TASKS: usize = 4;

/// Samples per task of the layout copies.
const COPY_SAMPLES: usize = 8;

/// One product: output position `l`, live tap `t` (its index in [`Plan::taps`]), input
/// position `p`.
#[derive(Clone, Copy, Debug)]
struct Live {
    l: usize,
    t: usize,
    p: usize,
}

/// The products of one geometry: the live pairs, ordered by output position then tap,
/// and the kernel taps (`i kw + j`) that some pair reads through, in kernel order. Only
/// those taps' weights are copied and multiplied.
struct Plan {
    pairs: Vec<Live>,
    taps: Vec<usize>,
}

/// Whether this algorithm computes `g`: one group (the products run over all channels),
/// and a kernel and output small enough that the list of (position, tap) pairs is (at
/// most [`MAX_PAIRS`]; the kernel's own size limits stay with the other algorithms).
pub(super) fn applies(g: &Geom) -> bool {
    let taps = g.kh.saturating_mul(g.kw);
    g.a.groups == 1 && taps <= MAX_TAPS && g.l().saturating_mul(taps) <= MAX_PAIRS
}

/// Most kernel taps (a 64x64 kernel) and most (position, tap) pairs the plan may list.
const MAX_TAPS: usize = 4096;
const MAX_PAIRS: usize = 1 << 22;

/// Every (output position, tap) pair whose tap reads a real input, ordered by output
/// position, then tap.
fn plan(g: &Geom) -> Plan {
    let (Pair(sh, sw), Pair(ph, pw), Pair(dh, dw)) = (g.a.stride, g.a.padding, g.a.dilation);
    // Input coordinate read by output `o` through tap `i`, if inside the input. Geom's
    // size checks bound `o s + i d` by the padded input.
    let at = |o: usize, s: usize, i: usize, d: usize, pad: usize, len: usize| (o * s + i * d).checked_sub(pad).filter(|&r| r < len);
    let mut out = Vec::new();
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            for i in 0..g.kh {
                let Some(iy) = at(oy, sh, i, dh, ph, g.h) else { continue };
                for j in 0..g.kw {
                    if let Some(ix) = at(ox, sw, j, dw, pw, g.w) {
                        out.push(Live { l: oy * g.ow + ox, t: i * g.kw + j, p: iy * g.w + ix });
                    }
                }
            }
        }
    }
    let mut slot = vec![usize::MAX; g.kh * g.kw];
    out.iter().for_each(|q| slot[q.t] = 0);
    let taps: Vec<usize> = (0..slot.len()).filter(|&t| slot[t] == 0).collect();
    taps.iter().enumerate().for_each(|(k, &t)| slot[t] = k);
    out.iter_mut().for_each(|q| q.t = slot[q.t]);
    Plan { pairs: out, taps }
}

/// The pairs of `pairs` with `key(pair) == k`, for every `k` in `0..keys`: a stable
/// bucketing, so each bucket keeps the pairs' order.
fn buckets(pairs: &[Live], keys: usize, key: impl Fn(&Live) -> usize) -> Vec<Vec<Live>> {
    let mut b = vec![Vec::new(); keys];
    for q in pairs {
        b[key(q)].push(*q);
    }
    b
}

/// `[N, C, P]` (a batch of channel-major planes) to `[P, N, C]` (position-major).
fn to_positions<T: Element>(x: &[T], n: usize, c: usize, p: usize) -> Vec<T> {
    let mut out = autograd::buffers::for_overwrite::<T>(n * c * p);
    if p == 1 || out.is_empty() {
        out.copy_from_slice(x);
        return out;
    }
    assert_eq!(x.len(), out.len(), "to_positions: the batch's planes");
    let dst = SharedOut::new(&mut out);
    install(|| {
        (0..n.div_ceil(COPY_SAMPLES)).into_par_iter().for_each(|b| {
            for s in b * COPY_SAMPLES..((b + 1) * COPY_SAMPLES).min(n) {
                // Sample `s`'s `[C, P]` planes to its rows `(q n + s) C + ch` (a transpose).
                // SAFETY: `s < n`, so the reads `s C P + ch P + q` stay inside `x` and the
                // writes `(q n + s) C + ch` inside `out` (both `N C P` long, asserted);
                // task `b` alone writes its samples' values.
                unsafe { transpose_raw(c, p, x.as_ptr().add(s * c * p), p, dst.ptr().add(s * c), n * c) };
            }
        })
    });
    out
}

/// `[N, C, P]` to `[C, P, N]`, the batch minor: the weight gradient's left-hand sides
/// `X[p]ᵀ` (a position's `C x N`) then have rows contiguous along the reduction. Read from
/// the position-major copy they were `C` values apart per step, a new cache line each, and
/// that gradient ran 35-40% slower than the forward's products of the same size.
fn to_batch_minor<T: Element>(x: &[T], n: usize, cp: usize) -> Vec<T> {
    let mut out = autograd::buffers::for_overwrite::<T>(n * cp);
    if out.is_empty() {
        return out;
    }
    install(|| {
        out.par_chunks_mut(COPY_COLUMNS * n).enumerate().for_each(|(b, rows)| {
            transpose(n, rows.len() / n, &x[b * COPY_COLUMNS..], cp, rows, n);
        })
    });
    out
}

/// Columns of `[N, C P]` per task of [`to_batch_minor`].
const COPY_COLUMNS: usize = 64;

/// `[P, N, C]` back to `[N, C, P]`, adding `bias[channel]` and applying `act` on the way
/// (as the other kernels do: the sum, then the activation).
fn from_positions<T: Element>(xt: &[T], n: usize, c: usize, p: usize, bias: Option<&[T]>, act: Option<Activation>) -> Vec<T> {
    let mut out = autograd::buffers::for_overwrite::<T>(n * c * p);
    if n * c * p == 0 {
        return out;
    }
    install(|| out.par_chunks_mut(c * p).enumerate().for_each(|(s, sample)| sample_from_positions(xt, s, n, c, p, bias, act, sample)));
    out
}

/// Sample `s`'s `[C, P]` planes (`sample`) from the position-major `xt` (`[P, n, C]`), with
/// the bias and the activation.
#[allow(clippy::too_many_arguments)]
fn sample_from_positions<T: Element>(
    xt: &[T],
    s: usize,
    n: usize,
    c: usize,
    p: usize,
    bias: Option<&[T]>,
    act: Option<Activation>,
    sample: &mut [T],
) {
    transpose(p, c, &xt[s * c..], n * c, sample, p);
    for (ch, plane) in sample.chunks_exact_mut(p).enumerate() {
        if let Some(b) = bias {
            let bc = b[ch]; // hoisted: a bounds check in the loop stops vectorisation
            plane.iter_mut().for_each(|v| *v += bc);
        }
        act.inspect(|a| a.apply_slice(plane));
    }
}

/// `x` (`[n, C, P]`, a few samples) position-major, `[P, n, C]`, on the calling thread.
fn block_to_positions<T: Element>(x: &[T], n: usize, c: usize, p: usize) -> Vec<T> {
    let mut xt = autograd::buffers::for_overwrite::<T>(n * c * p);
    for s in 0..n {
        transpose(c, p, &x[s * c * p..], p, &mut xt[s * c..], n * c);
    }
    xt
}

/// Channels (or output channels) per task of the weight layout copies: a block's rows of
/// the source stay in cache while its taps' destination rows are written.
const COPY_CHANNELS: usize = 16;

/// The weight `[O, C, kh kw]` as one matrix per live tap (`live`, taps in kernel order):
/// `[live, C, O]` when `out_minor`, else `[live, O, C]`. In parallel blocks of channels,
/// each block writing its rows of every tap's matrix.
fn weight_by_tap<T: Element>(w: &[T], o: usize, c: usize, taps: usize, live: &[usize], out_minor: bool) -> Vec<T> {
    let mut out = autograd::buffers::for_overwrite::<T>(o * c * live.len());
    if out.is_empty() {
        return out;
    }
    let dst = SharedOut::new(&mut out);
    // Blocks run along the destination's major dimension: C for [T, C, O], O for [T, O, C].
    let (major, minor) = if out_minor { (c, o) } else { (o, c) };
    install(|| {
        (0..major.div_ceil(COPY_CHANNELS)).into_par_iter().for_each(|b| {
            let rows = b * COPY_CHANNELS..((b + 1) * COPY_CHANNELS).min(major);
            let block = |k: usize| {
                // SAFETY: task `b` alone writes rows `rows` of every tap's matrix, one
                // matrix at a time.
                unsafe { dst.slice((k * major + rows.start) * minor, rows.len() * minor) }
            };
            if out_minor {
                // Rows are input channels: (c, o) = w[o][c][t], a transpose, done in tiles
                // of COPY_CHANNELS output channels, every tap of a tile before the next, so
                // the tile's filters stay in L1 while each write fills a whole cache line.
                for oc0 in (0..o).step_by(COPY_CHANNELS) {
                    let tile = oc0..(oc0 + COPY_CHANNELS).min(o);
                    for (k, &t) in live.iter().enumerate() {
                        let dst = block(k);
                        for (r, ch) in rows.clone().enumerate() {
                            let d = &mut dst[r * minor..][tile.clone()];
                            d.iter_mut().zip(tile.clone()).for_each(|(v, oc)| *v = w[(oc * c + ch) * taps + t]);
                        }
                    }
                }
            } else {
                // Rows are output channels: (o, c) = w[o][c][t], each row one filter.
                for (k, &t) in live.iter().enumerate() {
                    for (r, row) in rows.clone().zip(block(k).chunks_exact_mut(minor)) {
                        let filt = &w[r * c * taps..][..c * taps];
                        row.iter_mut().enumerate().for_each(|(ch, v)| *v = filt[ch * taps + t]);
                    }
                }
            }
        })
    });
    out
}

/// The weight gradient's `[live, C, O]` matrices back to `[O, C, kh kw]`, zeros at the
/// taps that read only padding; in parallel blocks of output channels.
fn weight_from_taps<T: Element>(dwt: &[T], o: usize, c: usize, taps: usize, live: &[usize]) -> Vec<T> {
    let mut dw = autograd::buffers::for_overwrite::<T>(o * c * taps);
    if dw.is_empty() {
        return dw;
    }
    install(|| {
        dw.par_chunks_mut(COPY_CHANNELS * c * taps).enumerate().for_each(|(b, block)| {
            let (oc0, outs) = (b * COPY_CHANNELS, block.len() / (c * taps));
            block.fill(T::zero());
            // The block's output channels are a contiguous run of each (tap, channel) row.
            for ch in 0..c {
                for (s, &t) in live.iter().enumerate() {
                    let src = &dwt[(s * c + ch) * o + oc0..][..outs];
                    src.iter().enumerate().for_each(|(k, &v)| block[(k * c + ch) * taps + t] = v);
                }
            }
        })
    });
    dw
}

/// Runs `f(key, rows, output block)` for every key (position or tap) and block of `ROWS`
/// rows of its `[rows, cols]` output matrix, in parallel; matrix `k` starts at `k rows cols`.
fn for_blocks<T: Element>(
    out: &mut [T],
    keys: usize,
    rows: usize,
    cols: usize,
    f: impl Fn(usize, std::ops::Range<usize>, &mut [T]) + Sync,
) {
    let block = if keys * rows.div_ceil(ROWS) >= MIN_TASKS { ROWS } else { FEW_ROWS };
    let per = rows.div_ceil(block);
    let dst = SharedOut::new(out);
    install(|| {
        (0..keys * per).into_par_iter().for_each(|task| {
            let (k, b) = (task / per, task % per);
            let r = b * block..((b + 1) * block).min(rows);
            // SAFETY: each (key, row block) is one task's own range of the output.
            let block = unsafe { dst.slice((k * rows + r.start) * cols, r.len() * cols) };
            f(k, r, block);
        })
    });
}

/// `out (rows x cols) = Σ a b` over `products` (each `a` is `rows x depth`, `b` is
/// `depth x cols`), added in their order; zeros when there are none.
fn sum_products<'a, T: Element>(
    out: &mut [T],
    rows: usize,
    cols: usize,
    depth: usize,
    products: impl Iterator<Item = (MatRef<'a, T>, MatRef<'a, T>)>,
) {
    let mut any = false;
    for (a, b) in products {
        gemm_serial(rows, cols, depth, a, b, out, cols, any);
        any = true;
    }
    if !any {
        out.fill(T::zero());
    }
}

/// The forward pass: the products, then back to `[N, O, OH, OW]` with the bias and the
/// activation.
pub(super) fn forward<T: Element>(g: &Geom, x: &[T], w: &[T], bias: Option<&[T]>, act: Option<Activation>) -> Vec<T> {
    let (n, c, o, l, p, taps) = (g.n, g.c, g.o, g.l(), g.h * g.w, g.kh * g.kw);
    let plan = plan(g);
    let wt = weight_by_tap(w, o, c, taps, &plan.taps, true);
    let by_l = buckets(&plan.pairs, l, |q| q.l);
    if let Some(s) = block_samples(g) {
        let mut y = forward_blocked(g, &plan, s, x, &wt, bias, act);
        autograd::buffers::recycle(wt);
        poison_skipped_taps(g, &by_l, &plan.taps, w, &mut y);
        return y;
    }
    let xt = to_positions(x, n, c, p);
    let mut yt = autograd::buffers::for_overwrite::<T>(l * n * o);
    if runs_apply(g) {
        forward_runs(g, &plan, &xt, &wt, &mut yt);
    } else {
        for_blocks(&mut yt, l, n, o, |li, rows, out| {
            let products =
                by_l[li].iter().map(|q| (MatRef::row_major(&xt, (q.p * n + rows.start) * c, c), MatRef::row_major(&wt, q.t * c * o, o)));
            sum_products(out, rows.len(), o, c, products);
        });
    }
    autograd::buffers::recycle(xt);
    autograd::buffers::recycle(wt);
    let mut y = from_positions(&yt, n, o, l, bias, act);
    autograd::buffers::recycle(yt);
    poison_skipped_taps(g, &by_l, &plan.taps, w, &mut y);
    y
}

/// Whether the products go by runs of positions ([`forward_runs`]): with fewer than
/// [`RUNS_MAX_BATCH`] samples a position's product has too few rows to keep the
/// micro-kernel busy, and at stride 1 the input positions a tap reads for a run of outputs
/// are a run too, so one product covers them all. The selector asks this too.
pub(super) fn runs_apply(g: &Geom) -> bool {
    g.n < RUNS_MAX_BATCH && g.a.stride == Pair(1, 1)
}
const RUNS_MAX_BATCH: usize = 16;

/// For kernel tap `t = i kw + j` (stride 1), output row `oy`'s run of outputs that read a
/// real input through it, as `(first input position, first output position, length)`, if
/// any. Output `(oy, ox)` reads input `(oy + i dh - ph, ox + j dw - pw)`.
fn tap_run(g: &Geom, t: usize, oy: usize) -> Option<(usize, usize, usize)> {
    let (Pair(ph, pw), Pair(dh, dw)) = (g.a.padding, g.a.dilation);
    let (i, j) = (t / g.kw, t % g.kw);
    let iy = (oy + i * dh).checked_sub(ph).filter(|&r| r < g.h)?;
    let ox0 = pw.saturating_sub(j * dw);
    let ox1 = (g.w + pw).saturating_sub(j * dw).min(g.ow);
    (oy < g.oh && ox0 < ox1).then(|| (iy * g.w + ox0 + j * dw - pw, oy * g.ow + ox0, ox1 - ox0))
}

/// The forward's products by output row and live tap: a tap's run of outputs in a row and
/// the run of inputs it reads are contiguous blocks of rows in the position-major copies,
/// so each run is one product of `len N` rows. Each output adds its taps in kernel order,
/// as the per-position products do (from zero: the sign of an exactly zero sum may
/// differ).
fn forward_runs<T: Element>(g: &Geom, plan: &Plan, xt: &[T], wt: &[T], yt: &mut [T]) {
    for_each_row_mut(yt, g.ow * g.n * g.o, |oy, out| forward_row(g, plan, xt, wt, oy, out));
}

/// Output row `oy` (`out`, `[OW, N, O]`) of [`forward_runs`].
fn forward_row<T: Element>(g: &Geom, plan: &Plan, xt: &[T], wt: &[T], oy: usize, out: &mut [T]) {
    let (n, c, o) = (g.n, g.c, g.o);
    out.fill(T::zero());
    for (k, &t) in plan.taps.iter().enumerate() {
        if let Some((p0, l0, len)) = tap_run(g, t, oy) {
            let (a, b) = (MatRef::row_major(xt, p0 * n * c, c), MatRef::row_major(wt, k * c * o, o));
            let at = (l0 - oy * g.ow) * n * o;
            gemm_serial(len * n, o, c, a, b, &mut out[at..][..len * n * o], o, true);
        }
    }
}

/// Fewest samples per block of the blocked path.
const MIN_BLOCK: usize = 8;

/// Samples per block of the blocked path, if it applies: at stride 1 with a batch of
/// [`RUNS_MAX_BATCH`] or more (below, [`runs_apply`] takes the whole batch by runs) and
/// rows of 4 or more outputs. Each block of samples runs [`forward_runs`]'s products on
/// copies of its own samples: a position-major copy of the whole batch (3 MB at
/// ResNet-18's `b2`) goes to memory and back, a block's stays in L2. About [`ROWS`]
/// rows per product, but at least [`MIN_TASKS`] blocks while they have [`MIN_BLOCK`]
/// samples (a batch of 16 at 7x7 in one block ran on one core: 22% slower than the
/// whole-batch products at 2 threads). A function of the shape only. Each output and
/// input gradient adds the same products in the same order as the per-position path, so
/// there the blocking changes no bit (but the sign of an exactly zero sum); the weight
/// gradient adds one partial per block ([`grads_blocked`]).
fn block_samples(g: &Geom) -> Option<usize> {
    // Blocks of no values could not be cut (the selector sends no empty map here anyway).
    let values = [g.c, g.o, g.h * g.w, g.l()].iter().all(|&v| v > 0);
    let s = ROWS.div_ceil(g.ow).min(g.n.div_ceil(MIN_TASKS)).max(MIN_BLOCK);
    (values && g.a.stride == Pair(1, 1) && g.n >= RUNS_MAX_BATCH && g.ow >= 4).then_some(s)
}

/// The forward by blocks of `s` samples ([`block_samples`]): each block's copy, products
/// by runs and copy back on one thread, the blocks in parallel.
fn forward_blocked<T: Element>(g: &Geom, plan: &Plan, s: usize, x: &[T], wt: &[T], bias: Option<&[T]>, act: Option<Activation>) -> Vec<T> {
    let (c, o, l, p) = (g.c, g.o, g.l(), g.h * g.w);
    let mut y = autograd::buffers::for_overwrite::<T>(g.n * o * l);
    for_each_row_mut(&mut y, s * o * l, |b, yb| {
        let ns = yb.len() / (o * l);
        let gb = Geom { n: ns, ..*g };
        let xt = block_to_positions(&x[b * s * c * p..][..ns * c * p], ns, c, p);
        let mut yt = autograd::buffers::for_overwrite::<T>(l * ns * o);
        for (oy, out) in yt.chunks_exact_mut(g.ow * ns * o).enumerate() {
            forward_row(&gb, plan, &xt, wt, oy, out);
        }
        for (i, sample) in yb.chunks_exact_mut(o * l).enumerate() {
            sample_from_positions(&yt, i, ns, o, l, bias, act, sample);
        }
        autograd::buffers::recycle(xt);
        autograd::buffers::recycle(yt);
    });
    y
}

/// The input gradient's products by input row and live tap, the adjoint of
/// [`forward_runs`]: a run of inputs gathers the run of output gradients that read it
/// (from output row `iy + ph - i dh`). Each input adds its outputs in increasing order
/// (the taps in reverse), as the per-position products do.
fn input_grad_runs<T: Element>(g: &Geom, plan: &Plan, dyt: &[T], wt: &[T], dxt: &mut [T]) {
    for_each_row_mut(dxt, g.w * g.n * g.c, |iy, out| input_grad_row(g, plan, dyt, wt, iy, out));
}

/// Input row `iy` (`out`, `[W, N, C]`) of [`input_grad_runs`].
fn input_grad_row<T: Element>(g: &Geom, plan: &Plan, dyt: &[T], wt: &[T], iy: usize, out: &mut [T]) {
    let (n, c, o) = (g.n, g.c, g.o);
    let (ph, dh) = (g.a.padding.0, g.a.dilation.0);
    out.fill(T::zero());
    for (k, &t) in plan.taps.iter().enumerate().rev() {
        let run = (iy + ph).checked_sub(t / g.kw * dh).and_then(|oy| tap_run(g, t, oy));
        if let Some((p0, l0, len)) = run {
            let (a, b) = (MatRef::row_major(dyt, l0 * n * o, o), MatRef::row_major(wt, k * o * c, c));
            let at = (p0 - iy * g.w) * n * c;
            gemm_serial(len * n, c, o, a, b, &mut out[at..][..len * n * c], c, true);
        }
    }
}

/// The input gradient by blocks of `s` samples, as [`forward_blocked`].
fn input_grad_blocked<T: Element>(g: &Geom, plan: &Plan, s: usize, dy: &[T], w: &[T]) -> Vec<T> {
    let (c, o, l, p) = (g.c, g.o, g.l(), g.h * g.w);
    let wt = weight_by_tap(w, o, c, g.kh * g.kw, &plan.taps, false);
    let mut dx = autograd::buffers::for_overwrite::<T>(g.n * c * p);
    for_each_row_mut(&mut dx, s * c * p, |b, dxb| {
        let ns = dxb.len() / (c * p);
        let dyt = block_to_positions(&dy[b * s * o * l..][..ns * o * l], ns, o, l);
        block_input_grad(&Geom { n: ns, ..*g }, plan, &dyt, &wt, dxb);
        autograd::buffers::recycle(dyt);
    });
    autograd::buffers::recycle(wt);
    dx
}

/// One block's input gradient `dxb` (`[ns, C, P]`) from its position-major `dyt`, `gb`
/// the block's geometry.
fn block_input_grad<T: Element>(gb: &Geom, plan: &Plan, dyt: &[T], wt: &[T], dxb: &mut [T]) {
    let (ns, c, p) = (gb.n, gb.c, gb.h * gb.w);
    let mut dxt = autograd::buffers::for_overwrite::<T>(p * ns * c);
    for (iy, out) in dxt.chunks_exact_mut(gb.w * ns * c).enumerate() {
        input_grad_row(gb, plan, dyt, wt, iy, out);
    }
    for (i, sample) in dxb.chunks_exact_mut(c * p).enumerate() {
        sample_from_positions(&dxt, i, ns, c, p, None, None, sample);
    }
    autograd::buffers::recycle(dxt);
}

/// NaN in, NaN out: the definition multiplies a tap that reads padding by zero, and
/// `0 * NaN` and `0 * inf` are NaN, so an output sees NaN from every non-finite weight of
/// a tap it skipped. Outputs of channels whose filters are all finite (checked first, in
/// parallel: the usual case costs one read of the weight) are left alone.
fn poison_skipped_taps<T: Element>(g: &Geom, by_l: &[Vec<Live>], live: &[usize], w: &[T], y: &mut [T]) {
    let (o, taps, l) = (g.o, g.kh * g.kw, g.l());
    let per = g.c * taps;
    let finite = |v: &[T]| v.chunks(512).all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()));
    let bad: Vec<usize> = install(|| (0..o).into_par_iter().filter(|&oc| !finite(&w[oc * per..][..per])).collect());
    for oc in bad {
        let filt = &w[oc * per..][..per];
        let tap_bad = |t: usize| (0..g.c).any(|ch| !filt[ch * taps + t].is_finite());
        for (li, pairs) in by_l.iter().enumerate() {
            // The pairs name taps by their index among the live ones.
            let skipped_bad = (0..taps).any(|t| tap_bad(t) && !pairs.iter().any(|q| live[q.t] == t));
            if skipped_bad {
                (0..g.n).for_each(|s| y[(s * o + oc) * l + li] = T::nan());
            }
        }
    }
}

/// The input gradient: each input position's rows of the batch add the products of the
/// pairs that read it.
pub(super) fn input_grad<T: Element>(g: &Geom, dy: &[T], w: &[T]) -> Vec<T> {
    if let Some(s) = block_samples(g) {
        return input_grad_blocked(g, &plan(g), s, dy, w);
    }
    let dyt = to_positions(dy, g.n, g.o, g.l());
    let dx = input_grad_from(g, &plan(g), &dyt, w);
    autograd::buffers::recycle(dyt);
    dx
}

/// The weight gradient: each tap's rows of channels add the products of the positions
/// it reads a real input at; taps that only ever read padding get zeros.
pub(super) fn weight_grad<T: Element>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    if let Some((_, dw)) = block_samples(g).and_then(|s| grads_blocked(g, &plan(g), s, x, None, dy)) {
        return dw;
    }
    let dyt = to_positions(dy, g.n, g.o, g.l());
    let dw = weight_grad_from(g, &plan(g), x, &dyt);
    autograd::buffers::recycle(dyt);
    dw
}

/// Both gradients, `(dx, dw)`, from one position-major copy of `dy` (what the two maps
/// would each make), or by blocks of samples: bitwise [`input_grad`] and [`weight_grad`].
pub(super) fn both_grads<T: Element>(g: &Geom, x: &[T], w: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    let plan = plan(g);
    if let Some((Some(dx), dw)) = block_samples(g).and_then(|s| grads_blocked(g, &plan, s, x, Some(w), dy)) {
        return (dx, dw);
    }
    let dyt = to_positions(dy, g.n, g.o, g.l());
    let dx = input_grad_from(g, &plan, &dyt, w);
    let dw = weight_grad_from(g, &plan, x, &dyt);
    autograd::buffers::recycle(dyt);
    (dx, dw)
}

/// Most values the blocked weight gradient's partials may take ([`grads_blocked`]): 16 MB
/// in f32. ResNet-18's `b2` needs 0.5 M, `b3` 1.2 M; 256 channels at 7x7 and batch 256
/// would need 8 M, and keep the whole-batch products instead.
const MAX_PARTIALS: usize = 1 << 22;

/// The weight gradient, and the input gradient when `w` is given, by blocks of `s`
/// samples, if the partials fit [`MAX_PARTIALS`]: each block copies its samples of `dy`
/// (and `x`) into cache-sized position-major (and batch-minor) copies, computes its
/// samples' `dx` by runs ([`block_input_grad`]) and its own partial weight gradient,
/// products of depth `len s`; the partials are then added in block order, so the sums do
/// not depend on the threads, nor on whether `dx` is wanted.
fn grads_blocked<T: Element>(g: &Geom, plan: &Plan, s: usize, x: &[T], w: Option<&[T]>, dy: &[T]) -> Option<(Option<Vec<T>>, Vec<T>)> {
    let (n, c, o, l, p, taps) = (g.n, g.c, g.o, g.l(), g.h * g.w, g.kh * g.kw);
    let (blocks, live) = (n.div_ceil(s), plan.taps.len());
    let part_len = live * c * o;
    if blocks.saturating_mul(part_len) > MAX_PARTIALS {
        return None;
    }
    let wt = w.map(|w| weight_by_tap(w, o, c, taps, &plan.taps, false));
    let mut dx = wt.as_ref().map(|_| autograd::buffers::for_overwrite::<T>(n * c * p));
    let mut partial = autograd::buffers::for_overwrite::<T>(blocks * part_len);
    let block = |b: usize, pb: &mut [T], dxb: Option<&mut [T]>| {
        let ns = s.min(n - b * s);
        let gb = Geom { n: ns, ..*g };
        let dyt = block_to_positions(&dy[b * s * o * l..][..ns * o * l], ns, o, l);
        if let (Some(dxb), Some(wt)) = (dxb, &wt) {
            block_input_grad(&gb, plan, &dyt, wt, dxb);
        }
        // The block's samples batch-minor, `[C P, ns]`: a channel's run of positions is a
        // contiguous `len ns` values, the depth of its products.
        let mut xc = autograd::buffers::for_overwrite::<T>(ns * c * p);
        transpose(ns, c * p, &x[b * s * c * p..][..ns * c * p], c * p, &mut xc, ns);
        for (k, out) in pb.chunks_exact_mut(c * o).enumerate() {
            tap_weight_grad_by_runs(&gb, plan.taps[k], &xc, &dyt, 0..c, out);
        }
        autograd::buffers::recycle(xc);
        autograd::buffers::recycle(dyt);
    };
    // Each block's partial and, when wanted, its samples' part of `dx`.
    let dx_blocks: Vec<Option<&mut [T]>> = match dx.as_mut() {
        Some(dx) => dx.chunks_mut(s * c * p).map(Some).collect(),
        None => (0..blocks).map(|_| None).collect(),
    };
    let jobs: Vec<_> = partial.chunks_mut(part_len).zip(dx_blocks).enumerate().collect();
    if autograd::parallel::run_here(n * c * p) {
        jobs.into_iter().for_each(|(b, (pb, dxb))| block(b, pb, dxb));
    } else {
        install(|| jobs.into_par_iter().for_each(|(b, (pb, dxb))| block(b, pb, dxb)));
    }
    if let Some(wt) = wt {
        autograd::buffers::recycle(wt);
    }
    // The partials added in block order, each tap's matrix on its own.
    let mut dwt = autograd::buffers::for_overwrite::<T>(part_len);
    for_each_row_mut(&mut dwt, c * o, |k, out| {
        let mut parts = partial.chunks_exact(part_len).map(|pb| &pb[k * c * o..][..c * o]);
        out.copy_from_slice(parts.next().expect("a batch of at least one block"));
        for pb in parts {
            out.iter_mut().zip(pb).for_each(|(v, &d)| *v += d);
        }
    });
    autograd::buffers::recycle(partial);
    let dw = weight_from_taps(&dwt, o, c, taps, &plan.taps);
    autograd::buffers::recycle(dwt);
    Some((dx, dw))
}

/// [`input_grad`] from `dy` already position-major (`dyt`).
fn input_grad_from<T: Element>(g: &Geom, plan: &Plan, dyt: &[T], w: &[T]) -> Vec<T> {
    let (n, c, o, p, taps) = (g.n, g.c, g.o, g.h * g.w, g.kh * g.kw);
    let wt = weight_by_tap(w, o, c, taps, &plan.taps, false);
    let by_p = buckets(&plan.pairs, p, |q| q.p);
    let mut dxt = autograd::buffers::for_overwrite::<T>(p * n * c);
    if runs_apply(g) {
        input_grad_runs(g, plan, dyt, &wt, &mut dxt);
    } else {
        for_blocks(&mut dxt, p, n, c, |pi, rows, out| {
            let products =
                by_p[pi].iter().map(|q| (MatRef::row_major(dyt, (q.l * n + rows.start) * o, o), MatRef::row_major(&wt, q.t * o * c, c)));
            sum_products(out, rows.len(), c, o, products);
        });
    }
    autograd::buffers::recycle(wt);
    let dx = from_positions(&dxt, n, c, p, None, None);
    autograd::buffers::recycle(dxt);
    dx
}

/// Tap `t`'s weight gradient, channel rows `rows` (`out`, `[rows, O]`), by runs: a run of
/// outputs and the run of inputs it reads are one product of depth `len N`, from the
/// batch-minor `xc` (`[C, P, N]`) and the position-major `dyt` (`[L, N, O]`) of `g.n`
/// samples.
fn tap_weight_grad_by_runs<T: Element>(g: &Geom, t: usize, xc: &[T], dyt: &[T], rows: std::ops::Range<usize>, out: &mut [T]) {
    let (n, o, p) = (g.n, g.o, g.h * g.w);
    let mut any = false;
    for (p0, l0, len) in (0..g.oh).filter_map(|oy| tap_run(g, t, oy)) {
        let a = MatRef { data: xc, offset: (rows.start * p + p0) * n, rs: (p * n) as isize, cs: 1 };
        gemm_serial(rows.len(), o, len * n, a, MatRef::row_major(dyt, l0 * n * o, o), out, o, any);
        any = true;
    }
    if !any {
        out.fill(T::zero());
    }
}

/// [`weight_grad`] from `dy` already position-major (`dyt`).
fn weight_grad_from<T: Element>(g: &Geom, plan: &Plan, x: &[T], dyt: &[T]) -> Vec<T> {
    let (n, c, o, p, taps) = (g.n, g.c, g.o, g.h * g.w, g.kh * g.kw);
    let xc = to_batch_minor(x, n, c * p);
    let live = plan.taps.len();
    let by_t = buckets(&plan.pairs, live, |q| q.t);
    let mut dwt = autograd::buffers::for_overwrite::<T>(live * c * o);
    let runs = runs_apply(g);
    for_blocks(&mut dwt, live, c, o, |ti, rows, out| {
        // Xᵀ: element (channel, sample) of position p, at `(channel P + p) N + sample`.
        let xt_at = |p0: usize| MatRef { data: &xc[..], offset: (rows.start * p + p0) * n, rs: (p * n) as isize, cs: 1 };
        if runs {
            return tap_weight_grad_by_runs(g, plan.taps[ti], &xc, dyt, rows, out);
        }
        let products = by_t[ti].iter().map(|q| (xt_at(q.p), MatRef::row_major(dyt, q.l * n * o, o)));
        sum_products(out, rows.len(), o, n, products);
    });
    autograd::buffers::recycle(xc);
    let dw = weight_from_taps(&dwt, o, c, taps, &plan.taps);
    autograd::buffers::recycle(dwt);
    dw
}
