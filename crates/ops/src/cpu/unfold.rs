//! Convolution by unfolding (im2col): a block of samples is unfolded into a
//! `[C/groups * kh * kw, block * OH * OW]` matrix and multiplied by the weight with the
//! GEMM micro-kernel; the input gradient multiplies by the transposed weight and folds
//! back (col2im). The unfolded matrix is never whole: it is made, multiplied and folded a
//! chunk of rows at a time, in a per-task buffer that stays in L2, the chunks cut where the
//! product's own blocking cuts, so the result has the whole product's bits. Samples run in
//! parallel in blocks sized by the geometry alone; the weight gradient adds the blocks'
//! partial sums in block order.

use super::gemm::{gemm_serial, gemm_tiled, MatRef};
use super::geom::Geom;
use super::scratch::{ensure_len, par_tasks, Lens, Scratch};
use crate::args::Pair;
use crate::shared::SharedOut;
use autograd::parallel::install;
use autograd::{Activation, Element};
use rayon::prelude::*;

/// Copies a short run (one output row, typically 5 to 30 elements) with fixed-size moves:
/// a `memcpy` call, which the compiler would otherwise emit, costs more than the copy.
#[inline(always)]
pub(super) fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    let n = dst.len();
    let mut k = 0;
    while k + 8 <= n {
        dst[k..k + 8].copy_from_slice(&src[k..k + 8]);
        k += 8;
    }
    if n - k >= 4 {
        dst[k..k + 4].copy_from_slice(&src[k..k + 4]);
        k += 4;
    }
    if n - k >= 2 {
        dst[k..k + 2].copy_from_slice(&src[k..k + 2]);
        k += 2;
    }
    if n - k == 1 {
        dst[k] = src[k];
    }
}

/// Copies `n` values with 8-wide moves, the last one overlapping its predecessor, so a row
/// of any length of at least 8 takes no scalar tail.
///
/// # Safety
/// `src` and `dst` must be valid for `n` values and must not overlap.
#[inline(always)]
unsafe fn copy_run<T: Copy>(dst: *mut T, src: *const T, n: usize) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        if n >= 8 {
            let mut k = 0;
            while k + 8 < n {
                std::ptr::copy_nonoverlapping(src.add(k), dst.add(k), 8);
                k += 8;
            }
            std::ptr::copy_nonoverlapping(src.add(n - 8), dst.add(n - 8), 8);
        } else {
            for k in 0..n {
                *dst.add(k) = *src.add(k);
            }
        }
    }
}

/// `dst += src` for a short run, 8 lanes at a time (the loop the compiler would vectorise
/// with a runtime trip count costs more in setup than a 10-element row takes).
#[inline(always)]
fn add_run<T: Element>(dst: &mut [T], src: &[T]) {
    let n = dst.len().min(src.len());
    let (d8, s8) = (dst[..n].chunks_exact_mut(8), src[..n].chunks_exact(8));
    let tail = n - n % 8;
    for (d, s) in d8.zip(s8) {
        for k in 0..8 {
            d[k] += s[k];
        }
    }
    for k in tail..n {
        dst[k] += src[k];
    }
}

/// How one sample's planes (one group) are laid out for unfolding: zero-padded to
/// `hp x wp`, each padded row split into `nph` column phases `wq` wide (phase `r` holds
/// columns `r, r + sw, ...`). The values one tap `(i, j)` reads along an output row,
/// columns `ox sw + j dw`, are then the contiguous run of phase `(j dw) % sw` from
/// `(j dw) / sw`: a copy, not a strided gather. At column stride 1 there is one phase, the
/// padded row itself. `nph wq` is at most `2 wp`, whatever the stride.
#[derive(Clone, Copy)]
struct Planes {
    hp: usize,
    wp: usize,
    nph: usize,
    wq: usize,
}

impl Planes {
    fn of(g: &Geom) -> Self {
        let (Pair(ph, pw), sw) = (g.a.padding, g.a.stride.1);
        let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
        let (nph, wq) = if sw > 1 { (sw.min(wp), wp.div_ceil(sw)) } else { (1, wp) };
        Planes { hp, wp, nph, wq }
    }

    /// Values of one sample's planes in this layout.
    fn len(&self, g: &Geom) -> usize {
        g.cg * self.hp * self.nph * self.wq
    }

    /// Whether the input's own planes are in this layout (no padding, column stride 1).
    fn in_place(g: &Geom) -> bool {
        g.a.padding == Pair(0, 0) && g.a.stride.1 == 1
    }
}

/// Writes group `grp` of one sample `x` (`[C, H, W]`) into `dst` in the layout `p`
/// (through `tmp`, the padded planes, when there are column phases).
fn prepare<T: Element>(g: &Geom, p: &Planes, x: &[T], grp: usize, dst: &mut [T], tmp: &mut Vec<T>) {
    let (Pair(ph, pw), sw) = (g.a.padding, g.a.stride.1);
    let planes = &x[grp * g.cg * g.h * g.w..][..g.cg * g.h * g.w];
    let pad_into = |buf: &mut [T]| {
        buf.fill(T::zero());
        for cc in 0..g.cg {
            for y in 0..g.h {
                copy_short(&mut buf[(cc * p.hp + ph + y) * p.wp + pw..][..g.w], &planes[(cc * g.h + y) * g.w..][..g.w]);
            }
        }
    };
    if sw == 1 {
        return pad_into(&mut dst[..p.len(g)]);
    }
    ensure_len(tmp, g.cg * p.hp * p.wp);
    pad_into(tmp);
    for (row, split) in tmp.chunks_exact(p.wp).zip(dst.chunks_exact_mut(p.nph * p.wq)) {
        for (r, phase) in split.chunks_exact_mut(p.wq).enumerate() {
            phase.iter_mut().zip(row.iter().skip(r).step_by(sw)).for_each(|(d, &v)| *d = v);
        }
    }
}

/// Prepares group `grp` of a block of samples into `pad` (one sample after another),
/// unless their planes are already in the layout, and returns sample `s`'s planes.
fn prepare_block<'a, T: Element>(
    g: &Geom,
    p: &Planes,
    x: &'a [T],
    samples: &std::ops::Range<usize>,
    grp: usize,
    pad: &'a mut Vec<T>,
    tmp: &mut Vec<T>,
) -> impl Fn(usize) -> &'a [T] {
    let (chw, len, in_place) = (g.c * g.h * g.w, p.len(g), Planes::in_place(g));
    if !in_place {
        ensure_len(pad, samples.len() * len);
        for (s, n) in samples.clone().enumerate() {
            prepare(g, p, &x[n * chw..(n + 1) * chw], grp, &mut pad[s * len..(s + 1) * len], tmp);
        }
    }
    let (pad, first, group) = (&**pad, samples.start, g.cg * g.h * g.w);
    move |s| if in_place { &x[(first + s) * chw + grp * group..][..group] } else { &pad[s * len..][..len] }
}

/// Row `row` of the unfolded matrix as its channel and kernel tap, `(c, i, j)`.
fn tap_of(g: &Geom, row: usize) -> (usize, usize, usize) {
    let taps = g.kh * g.kw;
    (row / taps, row % taps / g.kw, row % g.kw)
}

/// Whether every tap's outputs read inside the padded planes `p`: the last output row and
/// column read padded row `(oh - 1) sh + (kh - 1) dh` and column `(ow - 1) sw + (kw - 1)
/// dw`, which keeps every phase index below `nph` and every run inside its phase (see
/// `Planes`). The bound the raw runs of [`unfold_rows`] and [`fold_rows`] rest on; needs
/// at least one output and one tap.
fn window_fits(g: &Geom, p: &Planes) -> bool {
    let (Pair(sh, sw), Pair(dh, dw)) = (g.a.stride, g.a.dilation);
    (g.oh - 1) * sh + (g.kh - 1) * dh < p.hp && (g.ow - 1) * sw + (g.kw - 1) * dw < p.wp
}

/// Unfolds rows `rows` of one sample's unfolded matrix from its planes `src` (layout `p`)
/// into `cols`, the chunk's `k`-th row at `cols[k ld]`: row `(c kh + i) kw + j` holds, for
/// every output position, the input value kernel tap `(i, j)` of channel `c` sees there.
fn unfold_rows<T: Element>(g: &Geom, p: &Planes, src: &[T], rows: std::ops::Range<usize>, cols: &mut [T], ld: usize) {
    let (Pair(sh, sw), Pair(dh, dw)) = (g.a.stride, g.a.dilation);
    if rows.is_empty() || g.l() == 0 {
        return;
    }
    assert!(rows.end <= g.rows() && (rows.len() - 1) * ld + g.l() <= cols.len(), "unfold: output block too small");
    assert!(p.len(g) <= src.len() && window_fits(g, p), "unfold: window outside the padded planes");
    for (k, row) in rows.enumerate() {
        let (cc, i, j) = tap_of(g, row);
        let (q, r) = ((j * dw) / sw, (j * dw) % sw);
        // Raw copies: this loop runs `C kh kw OH` times per sample, and slice bounds
        // checks cost more than the few moves of each run.
        // SAFETY: the asserts above bound every run read and written.
        unsafe {
            let dst = cols.as_mut_ptr().add(k * ld);
            for oy in 0..g.oh {
                let y = cc * p.hp + oy * sh + i * dh;
                copy_run(dst.add(oy * g.ow), src.as_ptr().add((y * p.nph + r) * p.wq + q), g.ow);
            }
        }
    }
}

/// The adjoint of [`unfold_rows`]: adds rows `rows` of one sample's unfolded matrix
/// (`cols`, the chunk's `k`-th row at `cols[k ld]`) into its padded planes `acc`
/// (`cg x hp x wp`), in row order.
fn fold_rows<T: Element>(g: &Geom, p: &Planes, cols: &[T], ld: usize, rows: std::ops::Range<usize>, acc: &mut [T]) {
    let (Pair(sh, sw), Pair(dh, dw)) = (g.a.stride, g.a.dilation);
    if rows.is_empty() || g.l() == 0 {
        return;
    }
    assert!(rows.end <= g.rows() && (rows.len() - 1) * ld + g.l() <= cols.len(), "fold: input block too small");
    assert!(g.cg * p.hp * p.wp <= acc.len() && window_fits(g, p), "fold: window outside the padded planes");
    for (k, row) in rows.enumerate() {
        let (cc, i, j) = tap_of(g, row);
        let base = (cc * p.hp + i * dh) * p.wp + j * dw;
        for oy in 0..g.oh {
            // Raw runs: slicing `acc` per output row (bounds-checked twice) cost as much
            // as the few adds of a 14-value row.
            // SAFETY: the asserts above keep the run read inside `cols` and the run
            // written, `(cc hp + oy sh + i dh) wp + j dw + ox sw` for `ox < ow`, inside
            // channel `cc`'s padded plane, so inside `acc`.
            unsafe {
                let src = cols.as_ptr().add(k * ld + oy * g.ow);
                let dst = acc.as_mut_ptr().add(base + oy * sh * p.wp);
                if sw == 1 {
                    add_run(std::slice::from_raw_parts_mut(dst, g.ow), std::slice::from_raw_parts(src, g.ow));
                } else {
                    for ox in 0..g.ow {
                        *dst.add(ox * sw) += *src.add(ox);
                    }
                }
            }
        }
    }
}

/// Adds the interior of one sample's padded planes `acc` (layout `p`) into its planes `dx`.
fn unpad_add<T: Element>(g: &Geom, p: &Planes, acc: &[T], dx: &mut [T]) {
    let Pair(ph, pw) = g.a.padding;
    for cc in 0..g.cg {
        for y in 0..g.h {
            let d = &mut dx[(cc * g.h + y) * g.w..][..g.w];
            let s = &acc[(cc * p.hp + ph + y) * p.wp + pw..][..g.w];
            d.iter_mut().zip(s).for_each(|(d, &v)| *d += v);
        }
    }
}

/// Samples are processed in blocks: one GEMM covers a whole block (its unfolded inputs side
/// by side), which keeps the products large enough to run near the kernel's peak while
/// the block's buffers stay in cache. The block size depends on the geometry only, never
/// on the thread count, and the weight gradient adds the blocks' partial sums in block
/// order: results are bitwise identical at any thread count.
///
/// Where a sample's unfolded input is too large for that cache budget anyway (many
/// channels), each product streams the whole weight (and the weight gradient's sum) from
/// memory once per block, so blocks hold at least `REUSE_COLS` output positions, up to
/// `MAX_BLOCK_BYTES` of unfolded input; the samples are then spread evenly over the blocks.
fn block_samples<T>(g: &Geom) -> usize {
    const BUDGET: usize = 256 * 1024;
    const REUSE_COLS: usize = 256;
    const MAX_BLOCK_BYTES: usize = 16 << 20;
    let per_sample = (g.rows() * g.l() * std::mem::size_of::<T>()).max(1);
    let by_cache = (BUDGET / per_sample).clamp(1, 32);
    let by_reuse = REUSE_COLS.div_ceil(g.l().max(1)).min((MAX_BLOCK_BYTES / per_sample).max(1)).min(32);
    if by_cache >= by_reuse || g.n == 0 {
        return by_cache;
    }
    g.n.div_ceil(g.n.div_ceil(by_reuse))
}

/// Bytes of unfolded matrix one product takes at a time. A block's whole unfolded matrix
/// (20 MB for one sample of a 5x5 convolution over 256 channels at 28x28) went out to
/// memory between its unfolding and the product's packing, and came back: a fifth of
/// such a convolution's time. Cut into chunks of rows this size, each chunk is unfolded,
/// multiplied and (in the input gradient) folded back while it stays in L2.
const CHUNK_BYTES: usize = 512 << 10;

/// Rows of the unfolded matrix (`ld` values each) per chunk: all of them while they fit in
/// [`CHUNK_BYTES`], else as many as fit rounded down to a multiple of `unit`, the product's
/// blocking along the cut, which keeps the whole product's bits (`gemm::blocking`).
fn chunk_rows<T>(rows: usize, ld: usize, unit: usize) -> usize {
    let fit = CHUNK_BYTES / (ld * std::mem::size_of::<T>()).max(1);
    if fit >= rows {
        rows.max(1)
    } else {
        (fit / unit * unit).max(unit).min(rows)
    }
}

/// `0..rows` in chunks `len` long, a last chunk shorter than `min` joined to the one before
/// (at most `len + min - 1` rows in a chunk).
fn chunks(rows: usize, len: usize, min: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let n = rows.div_ceil(len);
    let count = if n > 1 && rows - (n - 1) * len < min { n - 1 } else { n };
    (0..count).map(move |c| c * len..if c + 1 == count { rows } else { (c + 1) * len })
}

/// How the three maps cut the unfolded matrix: `(len, min)` per chunk. The forward cuts
/// the product's reduction (at multiples of its depth `kc`), the input gradient its rows
/// (`nr`), the weight gradient its columns (`mr`, never leaving a part narrower than
/// `mr`, which could switch the product to dot kernels).
struct Cuts {
    forward: (usize, usize),
    input: (usize, usize),
    weight: (usize, usize),
}

impl Cuts {
    fn of<T: Element>(g: &Geom, ld: usize) -> Self {
        let (mr, nr, kc) = super::gemm::blocking::<T>();
        let rows = g.rows();
        Cuts {
            forward: (chunk_rows::<T>(rows, ld, kc), 1),
            input: (chunk_rows::<T>(rows, ld, nr), 1),
            weight: (chunk_rows::<T>(rows, ld, mr), mr),
        }
    }

    /// The most rows any chunk of the three maps holds.
    fn max_rows(&self, rows: usize) -> usize {
        [self.forward, self.input, self.weight].iter().map(|&(len, min)| (len + min - 1).min(rows)).max().unwrap_or(0)
    }
}

/// The scratch every task of the unfolding kernels reserves: a chunk of its largest
/// block's unfolded matrix, a block of outputs (or output gradients), the block's planes
/// laid out for unfolding (or padded input-gradient planes), and one sample's padded
/// planes on their way to column phases.
fn lens<T: Element>(g: &Geom) -> Lens {
    let nb = block_samples::<T>(g).min(g.n);
    let ld = nb * g.l();
    // A shorter last block cuts its chunks longer: reserve for both.
    let last = if g.n == 0 { 0 } else { g.n - (g.n - 1) / nb.max(1) * nb };
    let cols = [nb, last].map(|s| Cuts::of::<T>(g, s * g.l()).max_rows(g.rows()) * s * g.l()).into_iter().max().unwrap_or(0);
    let p = Planes::of(g);
    let padded = g.cg * p.hp * p.wp;
    let prepared = if Planes::in_place(g) { 0 } else { p.len(g) };
    let acc = if g.a.padding != Pair(0, 0) { padded } else { 0 };
    let tmp = if g.a.stride.1 > 1 { padded } else { 0 };
    Lens { cols, mat: g.og * ld, pad: nb * prepared.max(acc), planes: tmp, ..Lens::default() }
}

/// The product the maps' tasks run: on the calling thread, or, where a map is a single
/// task (8 samples of 4x4 outputs make one block), cut into tiles run in parallel. With
/// two tasks or more the tiles cost more than they spread (8x256x7 5x5: 21.9 -> 28.2 ms
/// at 2 threads with two blocks). Chosen by the geometry; the bits are the same either way.
type Product<T> = fn(usize, usize, usize, MatRef<'_, T>, MatRef<'_, T>, &mut [T], usize, bool);

fn product_for<T: Element>(tasks: usize) -> Product<T> {
    if tasks == 1 {
        gemm_tiled::<T>
    } else {
        gemm_serial::<T>
    }
}

/// Runs `f(block index, samples, scratch)` over the sample blocks in parallel, each
/// task's scratch reserved for the unfolding kernels' largest block.
fn for_blocks<T: Element>(g: &Geom, f: impl Fn(usize, std::ops::Range<usize>, &mut Scratch<T>) + Sync + Send) {
    let nb = block_samples::<T>(g);
    par_tasks::<T>(g.n.div_ceil(nb), lens::<T>(g), |b, sc| f(b, b * nb..((b + 1) * nb).min(g.n), sc));
}

/// Copies the output gradient of `samples`, group `grp`, into `mat` as `[og, nb * L]`.
fn gather_dy<T: Element>(g: &Geom, dy: &[T], samples: &std::ops::Range<usize>, grp: usize, mat: &mut [T]) {
    let (l, ld) = (g.l(), samples.len() * g.l());
    for (s, n) in samples.clone().enumerate() {
        for oc in 0..g.og {
            let src = &dy[(n * g.o + grp * g.og + oc) * l..][..l];
            mat[oc * ld + s * l..][..l].copy_from_slice(src);
        }
    }
}

/// The forward pass by unfolding (im2col and GEMM), for strided convolutions and CPUs
/// without the direct kernels.
pub(super) fn forward<T: Element>(g: &Geom, x: &[T], w: &[T], bias: Option<&[T]>, act: Option<Activation>) -> Vec<T> {
    let (l, rows) = (g.l(), g.rows());
    let mut y = autograd::buffers::for_overwrite::<T>(g.n * g.o * l);
    if rows == 0 {
        // No input channels: every output is its bias (or 0).
        for (p, plane) in y.chunks_mut(l.max(1)).enumerate() {
            plane.fill(bias.map_or(T::zero(), |b| b[p % g.o]));
            act.inspect(|a| a.apply_slice(plane));
        }
        return y;
    }
    let p = Planes::of(g);
    let product = product_for::<T>(g.n.div_ceil(block_samples::<T>(g)));
    let out = SharedOut::new(&mut y);
    for_blocks::<T>(g, |_, samples, sc| {
        let ld = samples.len() * l;
        let (len, min) = Cuts::of::<T>(g, ld).forward;
        ensure_len(&mut sc.mat, g.og * ld);
        for grp in 0..g.a.groups {
            let planes = prepare_block(g, &p, x, &samples, grp, &mut sc.pad, &mut sc.planes);
            for part in chunks(rows, len, min) {
                ensure_len(&mut sc.cols, part.len() * ld);
                for s in 0..samples.len() {
                    unfold_rows(g, &p, planes(s), part.clone(), &mut sc.cols[s * l..], ld);
                }
                let a = MatRef::row_major(w, grp * g.og * rows + part.start, rows);
                product(g.og, ld, part.len(), a, MatRef::row_major(&sc.cols, 0, ld), &mut sc.mat, ld, part.start > 0);
            }
            for (s, n) in samples.clone().enumerate() {
                for oc in 0..g.og {
                    let c = grp * g.og + oc;
                    // SAFETY: each sample's output belongs to exactly one block.
                    let dst = unsafe { out.slice((n * g.o + c) * l, l) };
                    let src = &sc.mat[oc * ld + s * l..][..l];
                    match bias {
                        Some(b) => {
                            let bc = b[c]; // hoisted: a bounds check in the loop stops vectorisation
                            dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v + bc);
                        }
                        None => dst.copy_from_slice(src),
                    }
                    act.inspect(|a| a.apply_slice(dst));
                }
            }
        }
    });
    y
}

/// The input gradient by unfolding: per block, the product of the transposed weight
/// with the output gradient, folded back (col2im) chunk by chunk.
pub(super) fn input_grad<T: Element>(g: &Geom, dy: &[T], w: &[T]) -> Vec<T> {
    let (l, rows) = (g.l(), g.rows());
    let chw = g.c * g.h * g.w;
    let mut dx = autograd::buffers::zeroed::<T>(g.n * chw);
    if rows == 0 || g.og == 0 || dx.is_empty() {
        // No output channels (a transposed convolution of no input channels): zeros.
        return dx;
    }
    // Each group's weight transposed to `[rows, og]`, once per call: read in place, the
    // product's rows of `Wᵀ` are `rows` values apart, every step of the reduction a new
    // cache line in a new page (no prefetcher follows that); this copy costs `o * rows`
    // moves against the product's `n * L` times as many multiply-adds.
    // In parallel by blocks of rows of `Wᵀ` (6.5 MB at 256 channels of 5x5).
    let mut wt = autograd::buffers::for_overwrite::<T>(w.len());
    for grp in 0..g.a.groups {
        let at = grp * g.og * rows;
        let block = &mut wt[at..at + g.og * rows];
        install(|| {
            block.par_chunks_mut(TRANSPOSE_ROWS * g.og).enumerate().for_each(|(b, dst)| {
                let r0 = b * TRANSPOSE_ROWS;
                super::transpose::transpose(g.og, dst.len() / g.og, &w[at + r0..], rows, dst, g.og);
            })
        });
    }
    let p = Planes::of(g);
    let padded = g.a.padding != Pair(0, 0);
    let plen = g.cg * p.hp * p.wp;
    let product = product_for::<T>(g.n.div_ceil(block_samples::<T>(g)));
    let out = SharedOut::new(&mut dx);
    for_blocks::<T>(g, |_, samples, sc| {
        let ld = samples.len() * l;
        let (len, min) = Cuts::of::<T>(g, ld).input;
        ensure_len(&mut sc.mat, g.og * ld);
        for grp in 0..g.a.groups {
            gather_dy(g, dy, &samples, grp, &mut sc.mat);
            if padded {
                ensure_len(&mut sc.pad, samples.len() * plen);
                sc.pad.fill(T::zero());
            }
            for part in chunks(rows, len, min) {
                ensure_len(&mut sc.cols, part.len() * ld);
                let a = MatRef::row_major(&wt, grp * g.og * rows + part.start * g.og, g.og);
                product(part.len(), ld, g.og, a, MatRef::row_major(&sc.mat, 0, ld), &mut sc.cols, ld, false);
                for (s, n) in samples.clone().enumerate() {
                    let cols = &sc.cols[s * l..];
                    if padded {
                        fold_rows(g, &p, cols, ld, part.clone(), &mut sc.pad[s * plen..(s + 1) * plen]);
                    } else {
                        // SAFETY: each sample's input gradient belongs to exactly one block.
                        let dxn = unsafe { out.slice(n * chw, chw) };
                        fold_rows(g, &p, cols, ld, part.clone(), &mut dxn[grp * g.cg * g.h * g.w..]);
                    }
                }
            }
            if padded {
                for (s, n) in samples.clone().enumerate() {
                    // SAFETY: as above.
                    let dxn = unsafe { out.slice(n * chw, chw) };
                    unpad_add(g, &p, &sc.pad[s * plen..(s + 1) * plen], &mut dxn[grp * g.cg * g.h * g.w..]);
                }
            }
        }
    });
    autograd::buffers::recycle(wt);
    dx
}

/// The weight gradient by unfolding. Each block unfolds its samples again (chunk by chunk,
/// in cache) rather than reading an unfolded copy of the whole batch kept by the forward:
/// that copy (35 MB for LeNet's batch of 256) cost more in memory traffic than the second
/// unfolding costs in arithmetic.
pub(super) fn weight_grad<T: Element>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    let (l, rows) = (g.l(), g.rows());
    let size = g.o * rows;
    if size == 0 {
        return Vec::new();
    }
    let nb = block_samples::<T>(g);
    let blocks = g.n.div_ceil(nb);
    // Consecutive blocks share a partial sum: `per` of them, a function of the geometry.
    let per = blocks.div_ceil(MAX_PARTIALS).max(1);
    let parts = blocks.div_ceil(per);
    let p = Planes::of(g);
    let mut partials = autograd::buffers::for_overwrite::<T>(parts * size);
    let product = product_for::<T>(parts);
    let out = SharedOut::new(&mut partials);
    par_tasks::<T>(parts, lens::<T>(g), |task, sc| {
        // SAFETY: task `task` owns partial sum `task`.
        let acc = unsafe { out.slice(task * size, size) };
        for b in task * per..((task + 1) * per).min(blocks) {
            let samples = b * nb..((b + 1) * nb).min(g.n);
            let ld = samples.len() * l;
            let (len, min) = Cuts::of::<T>(g, ld).weight;
            ensure_len(&mut sc.mat, g.og * ld);
            for grp in 0..g.a.groups {
                gather_dy(g, dy, &samples, grp, &mut sc.mat);
                let planes = prepare_block(g, &p, x, &samples, grp, &mut sc.pad, &mut sc.planes);
                for part in chunks(rows, len, min) {
                    ensure_len(&mut sc.cols, part.len() * ld);
                    for s in 0..samples.len() {
                        unfold_rows(g, &p, planes(s), part.clone(), &mut sc.cols[s * l..], ld);
                    }
                    let a = MatRef::row_major(&sc.mat, 0, ld);
                    let dst = &mut acc[grp * g.og * rows + part.start..];
                    product(g.og, part.len(), ld, a, MatRef::transposed(&sc.cols, 0, ld), dst, rows, b > task * per);
                }
            }
        }
    });
    super::sum_partials(partials, size)
}

/// Rows of `Wᵀ` per task of the input gradient's weight transposition.
const TRANSPOSE_ROWS: usize = 256;

/// The most partial sums the weight gradient keeps: enough tasks for the 2 to 4 cores this
/// library targets, where one partial per block (up to 64 at batch 64, 2.4 MB each at 256
/// channels of 3x3) made adding them up 15% of a 256-channel convolution's backward.
const MAX_PARTIALS: usize = 4;
