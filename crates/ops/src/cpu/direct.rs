//! Direct convolution over "wide" rows: nothing is unfolded.
//!
//! A sample group's zero-padded input planes are `hp x wp`. Number the output positions
//! with the *input's* row length, `p = oy wp + ox`: then kernel tap `(c, i, j)` reads input
//! `off(c, i, j) + p`, with `off = c hp wp + i dh wp + j dw`, for every `p`. Each tap is a
//! contiguous, shifted run of the input, so all three maps vectorise along `p` with plain
//! loads (the micro-kernels are in `tiles.rs`):
//!
//! - forward: output channel `o` is `Σ_taps w[o, tap] x[off(tap) + p]`;
//! - input gradient: for each kernel offset `(i, j)`, the rows `Σ_o w[o, c, i, j] dy[o, p]`
//!   (the output gradient laid out wide) added into the padded planes at `p + off(i, j)`;
//! - weight gradient: `dw[o, tap] = Σ_n Σ_p dy[o, p] x[off(tap) + p]`.
//!
//! A stride `(sh, sw)` keeps this form once each padded plane is split into its `sh sw`
//! phases, the plane of the rows `≡ a (mod sh)` and columns `≡ b (mod sw)` (`⌈hp/sh⌉ x
//! ⌈wp/sw⌉` each): padded input `(oy sh + i dh, ox sw + j dw)` is phase `((i dh) mod sh,
//! (j dw) mod sw)` at row `oy + ⌊i dh / sh⌋`, column `ox + ⌊j dw / sw⌋`, again a run shifted
//! by a per-tap offset (ResNet's 7x7 stride-2 stem, with one input channel, is 49 such runs).
//! Below, `hp x wp` are the phase planes' sizes (the padded planes' at stride 1).
//!
//! The price is the `wp - OW` columns past each output row, computed and thrown away (31%
//! of LeNet's conv2, 12.5% of conv1): less than writing and re-reading an unfolded matrix.
//! When the output channels fill whole vectors (conv2's 16), the forward and the weight
//! gradient vectorise over the channels instead and touch only real outputs.
//! Those spare columns also read real input values (and the input gradient multiplies the
//! weights by their zero gradients), so a non-finite input or weight can turn more
//! gradient entries into NaN than the unfolding path would (`0 x inf`), where that path
//! leaves them finite.

use super::epilogue::epilogue_simd;
use super::geom::Geom;
use super::pool_rows::{max2x2_scatter_rows, spread_pairs};
use super::scratch::{ensure_len, par_tasks, Lens};
use super::tiles;
use super::transpose::transpose;
use super::unfold::copy_short;
use crate::args::{Epilogue, Pair, Pool2x2};
use crate::shared::SharedOut;
use autograd::{Activation, Element};

/// Whether the direct kernels can run: they compute any geometry (strides through phase
/// planes), on a CPU that has AVX-512.
pub(super) fn applies() -> bool {
    tiles::available()
}

/// The wide layout of one convolution.
pub(super) struct Wide {
    /// The stride: each padded plane is split into its phases, the plane of rows `a` mod
    /// `sh` and columns `b` mod `sw`; `nh x nw` of them hold values (fewer than the stride
    /// where it exceeds the padded plane).
    sh: usize,
    sw: usize,
    nh: usize,
    nw: usize,
    /// Rows and columns of one phase plane (of a padded plane at stride 1).
    hp: usize,
    wp: usize,
    /// Offsets of the taps `(c, i, j)` of one group in its phase planes, in weight order.
    offs: Vec<usize>,
    /// Wide positions covering every output: `(OH - 1) wp + OW`.
    positions: usize,
}

impl Wide {
    /// The wide layout, when the direct kernels apply (see [`applies`]).
    pub(super) fn new(g: &Geom) -> Option<Wide> {
        // Empty problems (no samples, channels or outputs) take the unfolding path, which
        // handles them without any tile.
        if !applies() || [g.n, g.o, g.l(), g.rows()].contains(&0) {
            return None;
        }
        let (Pair(sh, sw), Pair(ph, pw), Pair(dh, dw)) = (g.a.stride, g.a.padding, g.a.dilation);
        // `Geom` checked that the padded planes and the kernel's reach fit in `usize`; the
        // phase planes of a channel hold at most twice the padded plane's rows (and
        // columns): `nh hp < hpad + sh` and `nh <= hpad`.
        let (hpad, wpad) = (g.h + 2 * ph, g.w + 2 * pw);
        let (nh, nw) = (sh.min(hpad), sw.min(wpad));
        let (hp, wp) = (hpad.div_ceil(sh), wpad.div_ceil(sw));
        let phase = hp.checked_mul(wp)?;
        // The buffers: a sample group's phase planes and the slack after them.
        nh.checked_mul(nw)?.checked_mul(phase)?.checked_mul(g.cg)?.checked_add(tiles::slack::<f32>().max(tiles::slack::<f64>()))?;
        let mut offs = Vec::with_capacity(g.rows());
        for c in 0..g.cg {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    // Every tap reads inside the padded plane (the output exists), so
                    // `r < hpad`: its phase `r mod sh` is below `nh`.
                    let (r, q) = (i * dh, j * dw);
                    offs.push(((c * nh + r % sh) * nw + q % sw) * phase + r / sh * wp + q / sw);
                }
            }
        }
        Some(Wide { sh, sw, nh, nw, hp, wp, offs, positions: (g.oh - 1) * wp + g.ow })
    }

    /// Values per input channel: its phase planes.
    fn plane(&self) -> usize {
        self.nh * self.nw * self.hp * self.wp
    }

    /// Length of one sample group's padded planes plus the zeros the kernels read past them.
    fn padded_len<T: Element>(&self, g: &Geom) -> usize {
        g.cg * self.plane() + tiles::slack::<T>()
    }

    /// Where input `(y, x)` of a channel's plane sits among its phase planes.
    fn at(&self, g: &Geom, y: usize, x: usize) -> usize {
        let Pair(ph, pw) = g.a.padding;
        let (py, px) = (y + ph, x + pw);
        (py % self.sh * self.nw + px % self.sw) * self.hp * self.wp + py / self.sh * self.wp + px / self.sw
    }

    /// Copies group `grp` of sample `x` (`[C, H, W]`) into `dst` (`padded_len` long) as
    /// zero-padded (phase) planes followed by zeros.
    fn pad<T: Element>(&self, g: &Geom, x: &[T], grp: usize, dst: &mut [T]) {
        let Pair(ph, pw) = g.a.padding;
        let len = g.cg * self.plane();
        let planes = &x[grp * g.cg * g.h * g.w..][..g.cg * g.h * g.w];
        if ph == 0 && pw == 0 && (self.sh, self.sw) == (1, 1) {
            dst[..len].copy_from_slice(planes);
        } else {
            dst[..len].fill(T::zero());
            for (cc, plane) in dst[..len].chunks_exact_mut(self.plane()).enumerate() {
                for y in 0..g.h {
                    let src = &planes[(cc * g.h + y) * g.w..][..g.w];
                    if self.sw == 1 {
                        copy_short(&mut plane[self.at(g, y, 0)..][..g.w], src);
                        continue;
                    }
                    // Each column phase takes every `sw`-th value of the row.
                    for b in 0..self.sw.min(g.w) {
                        let row = &mut plane[self.at(g, y, b)..];
                        row.iter_mut().zip(src[b..].iter().step_by(self.sw)).for_each(|(d, &v)| *d = v);
                    }
                }
            }
        }
        dst[len..].fill(T::zero());
    }

    /// Copies a channel's plane back out of its (padded, phase) layout: `dst[y][x]` from
    /// `src` at [`Wide::at`].
    fn unpad<T: Element>(&self, g: &Geom, src: &[T], dst: &mut [T]) {
        for y in 0..g.h {
            let row = &mut dst[y * g.w..][..g.w];
            if self.sw == 1 {
                copy_short(row, &src[self.at(g, y, 0)..][..g.w]);
                continue;
            }
            for b in 0..self.sw.min(g.w) {
                let s = &src[self.at(g, y, b)..];
                row[b..].iter_mut().step_by(self.sw).zip(s).for_each(|(d, &v)| *d = v);
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

/// The forward pass: per sample group, output channels in vectors of `L` over each output
/// row when they come in whole vectors, else every block of channels in wide rows; copied
/// out with the bias, then the activation and pooling (while the sample is in cache).
pub(super) fn forward<T: Element>(g: &Geom, wide: &Wide, x: &[T], w: &[T], bias: Option<&[T]>, ep: Epilogue) -> (Vec<T>, Option<Vec<T>>) {
    let (l, rows) = (g.l(), g.rows());
    let lanes = tiles::lanes::<T>();
    // Whole vectors of output channels: vectorise over the channels (no spare columns),
    // else over the wide positions in blocks of `ob` channels.
    let by_channel = g.og.is_multiple_of(lanes);
    let ob = if by_channel { lanes } else { tiles::combine_rows(g.og) };
    let blocks = g.og.div_ceil(ob);
    let vecs = if by_channel { tiles::channel_vectors(blocks) } else { 1 };
    let packed = pack(w, g.a.groups, g.og, rows, ob, |grp, o, t| (grp * g.og + o) * rows + t);
    let ld = round_up::<T>(wide.positions);
    let mut y = autograd::buffers::for_overwrite::<T>(g.n * g.o * l);
    let out = SharedOut::new(&mut y);
    let pl = g.oh / 2 * (g.ow / 2);
    let mut pooled = ep.pool.map(|_| autograd::buffers::for_overwrite::<T>(g.n * g.o * pl));
    let pooled_out = pooled.as_mut().map(|p| SharedOut::new(p));
    let lens = Lens {
        pad: wide.padded_len::<T>(g),
        row: if by_channel { vecs * l * lanes } else { 0 },
        mat: if by_channel { 0 } else { ob * ld },
        ..Lens::default()
    };
    par_tasks::<T>(g.n, lens, |n, sc| {
        ensure_len(&mut sc.pad, wide.padded_len::<T>(g));
        for grp in 0..g.a.groups {
            wide.pad(g, &x[n * g.c * g.h * g.w..], grp, &mut sc.pad);
            if by_channel {
                // `vecs` blocks of `L` channels at a time, each with its own output rows.
                ensure_len(&mut sc.row, vecs * l * lanes);
                for blk in (0..blocks).step_by(vecs) {
                    let wb = &packed[(grp * blocks + blk) * rows * lanes..][..vecs * rows * lanes];
                    for oy in 0..g.oh {
                        // SAFETY: the taps of row `oy` read `ow` values inside the padded
                        // planes; `wb` holds `vecs` blocks of `rows` vectors, `row`
                        // `vecs` blocks of `oh ow` vectors.
                        unsafe {
                            let w = tiles::Blocks { ptr: wb.as_ptr(), stride: rows * lanes };
                            let out = tiles::Blocks { ptr: sc.row.as_ptr().add(oy * g.ow * lanes), stride: l * lanes };
                            tiles::channels(vecs, &wide.offs, g.ow, sc.pad.as_ptr().add(oy * wide.wp), w, out)
                        };
                    }
                    for v in 0..vecs {
                        let c0 = grp * g.og + (blk + v) * lanes;
                        // SAFETY: each sample's output belongs to exactly one task.
                        let dst = unsafe { out.slice((n * g.o + c0) * l, lanes * l) };
                        unpack_channels(&sc.row[v * l * lanes..][..l * lanes], bias.map(|b| &b[c0..][..lanes]), dst);
                    }
                }
                continue;
            }
            ensure_len(&mut sc.mat, ob * ld);
            for blk in 0..blocks {
                let wb = &packed[(grp * blocks + blk) * rows * ob..][..rows * ob];
                // SAFETY: `pad` holds the planes and the slack a tile runs over; `mat`
                // holds `ob` rows of the rounded positions.
                unsafe { tiles::combine(ob, &wide.offs, wide.positions, sc.pad.as_ptr(), wb.as_ptr(), sc.mat.as_mut_ptr(), ld, false) };
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
        // SAFETY: as above; every channel of the sample is written.
        let yn = unsafe { out.slice(n * g.o * l, g.o * l) };
        // SAFETY: each sample's pooled output belongs to exactly one task.
        let pn = pooled_out.as_ref().zip(ep.pool).map(|(p, kind)| (unsafe { p.slice(n * g.o * pl, g.o * pl) }, kind));
        epilogue_simd(ep.act, yn, pn, (g.oh, g.ow));
    });
    autograd::buffers::recycle(packed);
    (y, pooled)
}

/// `dst[k][p] = src[p][k] + bias[k]`: `L` channels' planes from outputs laid out with the
/// channels minor, as the channel-vectorised forward computes them (a [`transpose`],
/// then the bias added while the planes are in L1: the same single rounding).
fn unpack_channels<T: Element>(src: &[T], bias: Option<&[T]>, dst: &mut [T]) {
    let lanes = tiles::lanes::<T>();
    let l = src.len() / lanes;
    transpose(l, lanes, src, lanes, dst, l);
    if let Some(b) = bias {
        for (plane, &bc) in dst.chunks_exact_mut(l.max(1)).zip(&b[..lanes]) {
            plane.iter_mut().for_each(|d| *d += bc);
        }
    }
}

/// The sum of a vector's lanes (8 or 16) as a pairwise tree of fixed-size halves, which
/// the compiler turns into a few vector adds: a fixed order, without a serial chain.
#[inline]
fn lane_sum<T: Element>(v: &[T]) -> T {
    #[inline(always)]
    fn halve<T: Element, const N: usize, const H: usize>(v: &[T; N]) -> [T; H] {
        std::array::from_fn(|i| v[i] + v[i + H])
    }
    let v8: [T; 8] = match v.len() {
        16 => halve::<T, 16, 8>(v.try_into().expect("16 lanes")),
        8 => v.try_into().expect("8 lanes"),
        n => unreachable!("vectors have 8 or 16 lanes, not {n}"),
    };
    let v2 = halve::<T, 4, 2>(&halve::<T, 8, 4>(&v8));
    v2[0] + v2[1]
}

/// The sum of `v` in 16 interleaved partial sums: a fixed order, without one long chain.
#[inline(always)]
fn row_sum<T: Element>(v: &[T]) -> T {
    let mut acc = [T::zero(); 16];
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        acc.iter_mut().zip(c).for_each(|(a, &x)| *a += x);
    }
    acc.iter_mut().zip(chunks.remainder()).for_each(|(a, &x)| *a += x);
    lane_sum(&acc)
}

tiles::avx512_copy! {
    /// [`widen_sample`], compiled for AVX-512 when the CPU has it.
    fn widen_sample_simd<T: Element>(b: &Backward<'_, T>, c0: usize, dims: (usize, usize, usize), out: Widened<'_, T>) = widen_sample
}

/// Where [`widen_sample`] writes one sample group's output gradient.
struct Widened<'a, T> {
    /// The wide rows, `row_len` apart.
    dz: &'a mut [T],
    row_len: usize,
    /// Whether the wide rows are needed (by the input gradient, or a weight gradient over
    /// the wide positions); if not, `dz` is scratch for the compact planes.
    wide_rows: bool,
    /// A plane of scratch.
    tmp: &'a mut [T],
    /// The sums of the rows, added in (the bias gradient), when asked for.
    db: Option<&'a mut [T]>,
    /// The gradient with the channels minor (`[oh ow][og]`), when asked for.
    dyt: Option<&'a mut [T]>,
}

/// The output gradient of channels `c0..c0 + og` of one sample laid out wide, a
/// [`widen_plane`] for each of the `og` rows of `out.dz`, and with the channels minor when
/// asked for. Without the wide rows, only the compact planes are formed (and summed for
/// the bias): at ResNet's stem, whose input needs no gradient, the wide rows were a fifth
/// of the backward.
#[inline(always)]
fn widen_sample<T: Element>(b: &Backward<'_, T>, c0: usize, dims: (usize, usize, usize), out: Widened<'_, T>) {
    let Widened { dz, row_len, wide_rows, tmp, mut db, dyt } = out;
    let (oh, ow, wp) = dims;
    let (l, pl) = (oh * ow, oh / 2 * (ow / 2));
    let og = dz.len() / row_len;
    let plain = b.act.is_none() && b.pool.is_none();
    for o in 0..og {
        let c = c0 + o;
        let dy = if b.pool.is_some() { &b.dy[c * pl..][..pl] } else { &b.dy[c * l..][..l] };
        let y = b.y.map_or(&[][..], |y| &y[c * l..][..l]);
        let plane = compact_plane(dy, y, (b.act, b.pool), (oh, ow), tmp);
        if wide_rows {
            widen_plane(&mut dz[o * row_len..][..row_len], plane, (oh, ow, wp));
        } else if !plain {
            copy_short(&mut dz[o * l..][..l], plane);
        }
        if let Some(db) = db.as_deref_mut().filter(|_| wide_rows) {
            db[o] += row_sum(&dz[o * row_len..][..row_len]);
        }
    }
    let Some(dyt) = dyt else { return };
    match (wide_rows, plain) {
        (true, _) => channels_minor(dz, row_len, dims, dyt),
        (false, true) => channels_minor(&b.dy[c0 * l..][..og * l], l, (oh, ow, ow), dyt),
        (false, false) => channels_minor(&dz[..og * l], l, (oh, ow, ow), dyt),
    }
    if let Some(db) = db.filter(|_| !wide_rows) {
        // Without the wide rows, the bias gradient is summed over the positions of the
        // channel-minor copy, a vector of channels at a time.
        let mut sums = [T::zero(); 64];
        for c0 in (0..og).step_by(64) {
            let sums = &mut sums[..64.min(og - c0)];
            sums.fill(T::zero());
            for p in dyt[..l * og].chunks_exact(og) {
                sums.iter_mut().zip(&p[c0..]).for_each(|(s, &v)| *s += v);
            }
            db[c0..].iter_mut().zip(sums.iter()).for_each(|(d, &s)| *d += s);
        }
    }
}

/// `dyt[(oy ow + ox) og + o] = rows[o row_len + oy wp + ox]`: `og` channels' (wide or
/// compact) rows with the channels minor, by [`transpose`] (the compact rows in one
/// piece).
#[inline(always)]
fn channels_minor<T: Element>(rows: &[T], row_len: usize, (oh, ow, wp): (usize, usize, usize), dyt: &mut [T]) {
    let og = rows.len() / row_len;
    // Compact rows are one run of `oh ow` positions; wide ones a run per output row.
    let (segs, len) = if wp == ow { (1, oh * ow) } else { (oh, ow) };
    for seg in 0..segs {
        transpose(og, len, &rows[seg * wp..], row_len, &mut dyt[seg * ow * og..], og);
    }
}

/// One channel's output gradient `dy` as a compact `oh x ow` plane: through the 2x2
/// pooling's backward when there is one (`dy` is then the pooled gradient; max pooling's
/// winners are found again in `y`, which it read), then the activation's derivative from
/// its output `y`. Each step runs over the whole plane in `tmp`, so it vectorises, where
/// the plane's short rows (LeNet's 28 and 10) would leave scalar tails.
#[inline(always)]
fn compact_plane<'a, T: Element>(
    dy: &'a [T],
    y: &[T],
    (act, pool): (Option<Activation>, Option<Pool2x2>),
    (oh, ow): (usize, usize),
    tmp: &'a mut [T],
) -> &'a [T] {
    let tmp = &mut tmp[..oh * ow];
    let (ph, pw) = (oh / 2, ow / 2);
    match pool {
        // Each window's gradient, scaled, on its four cells.
        Some(Pool2x2::Avg) => {
            let scale = T::one() / T::from_f64(4.0);
            for py in 0..ph {
                let (top, bottom) = tmp[2 * py * ow..][..2 * ow].split_at_mut(ow);
                spread_pairs(&mut top[..2 * pw], &dy[py * pw..][..pw], scale);
                top[2 * pw..].fill(T::zero());
                bottom.copy_from_slice(top);
            }
        }
        // Each window's gradient on its winner.
        Some(Pool2x2::Max) => {
            for py in 0..ph {
                let r = 2 * py * ow;
                max2x2_scatter_rows(&mut tmp[r..], &y[r..], ow, &dy[py * pw..][..pw]);
            }
        }
        None => {}
    }
    // Cells outside every window (an odd last row) get 0.
    if pool.is_some() {
        tmp[2 * ph * ow..].fill(T::zero());
    }
    match act {
        Some(a) => {
            if pool.is_none() {
                tmp.copy_from_slice(dy);
            }
            a.grad_from_output_slice(tmp, y);
            tmp
        }
        None if pool.is_some() => tmp,
        None => dy,
    }
}

/// Lays a compact `oh x ow` plane out wide in `row`: output row `oy` at `oy wp`, zeros in
/// the spare columns and after the last output.
#[inline(always)]
fn widen_plane<T: Element>(row: &mut [T], plane: &[T], (oh, ow, wp): (usize, usize, usize)) {
    for (oy, s) in plane.chunks_exact(ow).enumerate() {
        let (out, spare) = row[oy * wp..].split_at_mut(ow);
        copy_short(out, s);
        // The spare columns, and past the last output row to the end of `row`.
        let spare = if oy + 1 < oh { &mut spare[..wp - ow] } else { spare };
        spare.fill(T::zero());
    }
}

/// What one backward pass computes, and from what.
pub(crate) struct Backward<'a, T> {
    /// The gradient of the op's output.
    pub dy: &'a [T],
    /// The convolution's output after the activation (before any pooling), which the
    /// activation's derivative and max pooling's winners come from.
    pub y: Option<&'a [T]>,
    /// The activation the op applied, if any: the gradient goes back through it (from
    /// `y`) as each sample is laid out.
    pub act: Option<Activation>,
    /// The pooling the op applied, if any: `dy` is then the pooled output's gradient, taken
    /// back over each window first.
    pub pool: Option<Pool2x2>,
    /// The input, to compute the weight gradient.
    pub x: Option<&'a [T]>,
    /// The weight, to compute the input gradient.
    pub w: Option<&'a [T]>,
    /// Whether to compute the bias gradient.
    pub bias: bool,
}

/// The gradients a [`Backward`] asked for.
pub(crate) struct Grads<T> {
    pub dx: Option<Vec<T>>,
    pub dw: Option<Vec<T>>,
    pub db: Option<Vec<T>>,
}

/// The layout of the output gradient in the backward pass: per sample, `og` rows (padded
/// to the weight tiles) of `row` values, output `(oy, ox)` of channel `o` at
/// `o row + oy wp + ox`, zero at the spare columns and past the last output.
struct GradLayout {
    row: usize,
    rows: usize,
}

impl GradLayout {
    fn new<T: Element>(wide: &Wide, og_pad: usize) -> GradLayout {
        GradLayout { row: round_up::<T>(wide.positions), rows: og_pad }
    }
    fn per_sample(&self) -> usize {
        self.rows * self.row
    }
}

/// Samples per backward block: about 512 KB of wide output gradients and padded inputs,
/// which stay in cache while every weight tile passes over them. A function of the
/// geometry alone, so the block sums (added in block order) are the same at any thread
/// count.
fn backward_block<T: Element>(g: &Geom, wide: &Wide, lay: &GradLayout) -> usize {
    let per_sample = (lay.per_sample() + wide.padded_len::<T>(g)) * size_of::<T>();
    ((512 << 10) / per_sample.max(1)).clamp(1, 32)
}

/// The backward pass, every gradient from one pass over the samples in blocks. Per block
/// and group, each sample's output gradient `ĝ` is laid out wide once (through the
/// activation and pooling, with the bias gradient summed on the way), then
///
/// - input gradient, per sample and kernel offset `(i, j)`: the rows
///   `Σ_o w[o, c, i, j] ĝ[o, p]` (a weighted sum of runs again) are added into the padded
///   input gradient at `p + off(i, j)`, straight from the registers;
/// - weight gradient: `dw[o, tap] = Σ_n Σ_p ĝ[o, p] x[off(tap) + p]`, every tile of
///   (output channels x taps) over the block's samples with its sums in registers.
pub(super) fn backward<T: Element>(g: &Geom, wide: &Wide, b: Backward<'_, T>) -> Grads<T> {
    let (rows, chw, l) = (g.rows(), g.c * g.h * g.w, g.l());
    let lanes = tiles::lanes::<T>();
    let (ob, tb) = tiles::correlate_shape(g.og, rows);
    let (og_pad, taps_pad) = (g.og.next_multiple_of(ob), rows.next_multiple_of(tb));
    let lay = GradLayout::new::<T>(wide, og_pad);
    let per_sample = lay.per_sample();
    // Weight gradient: vectorised over the output channels when they come in whole
    // vectors (every output position computed once), else in tiles over the wide
    // positions. Spare taps read offset 0; their sums are dropped.
    let dw_by_channel = b.x.is_some() && g.og.is_multiple_of(lanes);
    // The input gradient and the weight gradient over wide positions read the wide rows.
    let wide_rows = b.w.is_some() || !dw_by_channel;
    let vecs = if dw_by_channel { tiles::channel_vectors(g.og / lanes) } else { 1 };
    let rt = tiles::outer_taps(rows, vecs);
    let mut offs = wide.offs.clone();
    offs.resize(taps_pad.max(rows.next_multiple_of(rt)), 0);
    let ldd = lay.row;
    let xlen = wide.padded_len::<T>(g);
    // Input gradient: for each kernel offset, the output channels are the taps; the
    // weight is packed per (channel block, offset) as [o][channel].
    let offs_o: Vec<usize> = (0..g.og).map(|o| o * lay.row).collect();
    let cb = tiles::combine_rows(g.cg);
    let cblocks = g.cg.div_ceil(cb);
    let kk = g.kh * g.kw;
    let taps_dx = kk * g.og;
    let packed = b.w.map(|w| pack(w, g.a.groups, g.cg, taps_dx, cb, |grp, c, t| ((grp * g.og + t % g.og) * g.cg + c) * kk + t / g.og));
    // Kernel offset `(i, j)`'s shift in the (phase) planes: the offset of tap `(0, i, j)`.
    let shift = |ij: usize| wide.offs[ij];
    // Whole channel blocks: the spare rows of the last one add zeros past `cg`.
    let dxp_len = cblocks * cb * wide.plane() + tiles::slack::<T>();

    let nb = backward_block::<T>(g, wide, &lay);
    let blocks = g.n.div_ceil(nb);
    let (dw_size, db_size) = (if b.x.is_some() { g.o * rows } else { 0 }, if b.bias { g.o } else { 0 });
    let part = dw_size + db_size;
    let mut partials = autograd::buffers::zeroed::<T>(blocks * part);
    let mut dx = b.w.map(|_| autograd::buffers::for_overwrite::<T>(g.n * chw));
    let parts_out = SharedOut::new(&mut partials);
    let dx_out = dx.as_mut().map(|d| SharedOut::new(d));
    let nbs = nb.min(g.n);
    let lens = Lens {
        mat: nbs * per_sample + tiles::slack::<T>(),
        row: l,
        trans: if dw_by_channel { nbs * l * g.og } else { 0 },
        planes: if packed.is_some() { dxp_len } else { 0 },
        pad: if b.x.is_some() { nbs * xlen } else { 0 },
        cols: match (b.x.is_some(), dw_by_channel) {
            (false, _) => 0,
            (true, true) => vecs * rt * lanes,
            (true, false) => og_pad * taps_pad * lanes,
        },
    };
    par_tasks::<T>(blocks, lens, |blk, sc| {
        let samples = blk * nb..((blk + 1) * nb).min(g.n);
        let ns = samples.len();
        ensure_len(&mut sc.mat, ns * per_sample + tiles::slack::<T>());
        // SAFETY: block `blk` owns partial sum `blk`.
        let part = unsafe { parts_out.slice(blk * part, part) };
        let (dw_part, db_part) = part.split_at_mut(dw_size);
        for grp in 0..g.a.groups {
            // Every value the tiles read is written below: each sample's `og` rows by
            // `widen_plane`, and the rows padding them to whole tiles and the slack here.
            sc.mat[ns * per_sample..].fill(T::zero());
            ensure_len(&mut sc.row, l);
            if dw_by_channel {
                ensure_len(&mut sc.trans, ns * l * g.og);
            }
            for (s, n) in samples.clone().enumerate() {
                let (dz, pad_rows) = sc.mat[s * per_sample..][..per_sample].split_at_mut(g.og * lay.row);
                pad_rows.fill(T::zero());
                let out = Widened {
                    dz,
                    row_len: lay.row,
                    wide_rows,
                    tmp: &mut sc.row,
                    db: b.bias.then(|| &mut db_part[grp * g.og..][..g.og]),
                    dyt: dw_by_channel.then(|| &mut sc.trans[s * l * g.og..][..l * g.og]),
                };
                widen_sample_simd(&b, n * g.o + grp * g.og, (g.oh, g.ow, wide.wp), out);
                if let (Some(packed), Some(out)) = (&packed, &dx_out) {
                    ensure_len(&mut sc.planes, dxp_len);
                    sc.planes.fill(T::zero());
                    let plane = wide.plane();
                    for cbk in 0..cblocks {
                        for ij in 0..kk {
                            let wb = &packed[((grp * cblocks + cbk) * kk + ij) * g.og * cb..][..g.og * cb];
                            // SAFETY: the taps read `og` rows of `ldd` from this sample's
                            // gradient; the rows written start at `shift(ij) + c plane`
                            // and run `ldd` past it, inside the planes plus their slack
                            // (`shift + positions <= plane`).
                            unsafe {
                                tiles::combine(
                                    cb,
                                    &offs_o,
                                    wide.positions,
                                    sc.mat.as_ptr().add(s * per_sample),
                                    wb.as_ptr(),
                                    sc.planes.as_mut_ptr().add(cbk * cb * plane + shift(ij)),
                                    plane,
                                    true,
                                )
                            };
                        }
                    }
                    // SAFETY: each sample's input gradient belongs to exactly one block.
                    let dxn = unsafe { out.slice(n * chw, chw) };
                    for c in 0..g.cg {
                        let dst = &mut dxn[(grp * g.cg + c) * g.h * g.w..][..g.h * g.w];
                        wide.unpad(g, &sc.planes[c * plane..][..plane], dst);
                    }
                }
            }
            let Some(x) = b.x else { continue };
            ensure_len(&mut sc.pad, ns * xlen);
            for (s, n) in samples.clone().enumerate() {
                wide.pad(g, &x[n * chw..], grp, &mut sc.pad[s * xlen..][..xlen]);
            }
            if dw_by_channel {
                // Every call sums `rt` taps of `vecs L` output channels over the block.
                ensure_len(&mut sc.cols, vecs * rt * lanes);
                for ov in (0..g.og / lanes).step_by(vecs) {
                    let runs = tiles::ChannelRuns {
                        samples: ns,
                        dyt: sc.trans[ov * lanes..].as_ptr(),
                        dyt_stride: l * g.og,
                        ld: g.og,
                        x: sc.pad.as_ptr(),
                        x_stride: xlen,
                        oh: g.oh,
                        ow: g.ow,
                        wp: wide.wp,
                    };
                    for t0 in (0..rows).step_by(rt) {
                        // SAFETY: `trans` holds `ns` samples of `l` positions of `og`
                        // channels (`vecs L` of them past `ov L`); `pad` the planes plus
                        // the slack; `offs` `rt` taps past `t0` (spare ones read offset
                        // 0); `cols` `vecs rt` vectors.
                        unsafe { tiles::outer(vecs, rt, runs, offs.as_ptr().add(t0), sc.cols.as_mut_ptr()) };
                        for (i, v) in sc.cols[..vecs * rt * lanes].chunks_exact(lanes).enumerate() {
                            let (vec, t) = (i / rt, i % rt);
                            if t0 + t < rows {
                                for (k, &v) in v.iter().enumerate() {
                                    dw_part[(grp * g.og + (ov + vec) * lanes + k) * rows + t0 + t] = v;
                                }
                            }
                        }
                    }
                }
                continue;
            }
            ensure_len(&mut sc.cols, og_pad * taps_pad * lanes);
            sc.cols.fill(T::zero());
            // Every tile passes over the samples of a sub-block while its gradient rows
            // and input planes are in L1 (the block is in L2); each tile's sums run
            // over the samples in order either way.
            let sub = ((40 << 10) / ((per_sample + xlen) * size_of::<T>())).max(1);
            for s0 in (0..ns).step_by(sub) {
                let runs = tiles::Runs {
                    samples: sub.min(ns - s0),
                    vecs: ldd / lanes,
                    dy: sc.mat[s0 * per_sample..].as_ptr(),
                    dy_stride: per_sample,
                    ldd: lay.row,
                    x: sc.pad[s0 * xlen..].as_ptr(),
                    x_stride: xlen,
                };
                // Tiles are stored one after the other, `ob x tb` vectors each.
                let mut tile = sc.cols.chunks_exact_mut(ob * tb * lanes);
                for o0 in (0..og_pad).step_by(ob) {
                    for t0 in (0..taps_pad).step_by(tb) {
                        let sums = tile.next().expect("one tile per block").as_mut_ptr();
                        let runs = tiles::Runs { dy: runs.dy.wrapping_add(o0 * lay.row), ..runs };
                        // SAFETY: each sample's rows hold `ldd` values past `dy`,
                        // `pad` the planes plus the slack a vector runs over, `sums` one tile.
                        unsafe { tiles::correlate((ob, tb), runs, offs.as_ptr().add(t0), sums) };
                    }
                }
            }
            for (i, sums) in sc.cols.chunks_exact(ob * tb * lanes).enumerate() {
                let (o0, t0) = (i / (taps_pad / tb) * ob, i % (taps_pad / tb) * tb);
                for (k, v) in sums.chunks_exact(lanes).enumerate() {
                    let (o, t) = (o0 + k / tb, t0 + k % tb);
                    if o < g.og && t < rows {
                        dw_part[(grp * g.og + o) * rows + t] = lane_sum(v);
                    }
                }
            }
        }
    });
    if let Some(p) = packed {
        autograd::buffers::recycle(p);
    }
    // Block partial sums, added in block order.
    let mut dw = b.x.map(|_| autograd::buffers::zeroed::<T>(dw_size));
    let mut db = b.bias.then(|| autograd::buffers::zeroed::<T>(db_size));
    for p in partials.chunks(part.max(1)) {
        let (pw, pb) = p.split_at(dw_size);
        for (sum, p) in [(&mut dw, pw), (&mut db, pb)] {
            if let Some(sum) = sum {
                sum.iter_mut().zip(p).for_each(|(d, &v)| *d += v);
            }
        }
    }
    autograd::buffers::recycle(partials);
    Grads { dx, dw, db }
}
