//! Convolution by unfolding (im2col): a block of samples is unfolded into a
//! `[C/groups * kh * kw, block * OH * OW]` matrix in a per-task buffer and multiplied by
//! the weight with the GEMM micro-kernel; the input gradient multiplies by the transposed
//! weight and folds back (col2im). Samples run in parallel in blocks sized by the geometry
//! alone; the weight gradient adds the blocks' partial sums in block order.

use super::gemm::{gemm_serial, MatRef};
use super::geom::Geom;
use super::scratch::{ensure_len, par_tasks, Lens, Scratch};
use crate::args::Pair;
use crate::shared::SharedOut;
use autograd::{Activation, Element};

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

/// The planes of one group of one sample, zero-padded when the convolution pads, so the
/// unfolding loops below never test bounds. Returns the planes and their padded size.
fn padded_planes<'a, T: Element>(g: &Geom, x: &'a [T], grp: usize, buf: &'a mut Vec<T>) -> (&'a [T], usize, usize) {
    let Pair(ph, pw) = g.a.padding;
    let planes = &x[grp * g.cg * g.h * g.w..][..g.cg * g.h * g.w];
    if ph == 0 && pw == 0 {
        return (planes, g.h, g.w);
    }
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    ensure_len(buf, g.cg * hp * wp);
    buf.fill(T::zero());
    for cc in 0..g.cg {
        for y in 0..g.h {
            let dst = &mut buf[(cc * hp + ph + y) * wp + pw..][..g.w];
            copy_short(dst, &planes[(cc * g.h + y) * g.w..][..g.w]);
        }
    }
    (buf, hp, wp)
}

/// Unfolds group `grp` of one sample `x` (`[C, H, W]`) into `cols`: row
/// `(c, i, j)` of the unfolded matrix starts at `cols[row * ld]` and holds, for every output
/// position, the input value that kernel tap `(i, j)` of channel `c` sees there.
fn im2col<T: Element>(g: &Geom, x: &[T], grp: usize, cols: &mut [T], ld: usize, buf: &mut Vec<T>, phases: &mut Vec<T>) {
    let (Pair(sh, sw), Pair(dh, dw)) = (g.a.stride, g.a.dilation);
    let (src, hp, wp) = padded_planes(g, x, grp, buf);
    if sw > 1 {
        return im2col_phases(g, src, hp, wp, cols, ld, phases);
    }
    // Stride 1, as raw copies: this loop runs C*kh*kw*OH times per sample, and slice
    // bounds checks cost more than the few moves of each row.
    let (rows, l) = (g.rows(), g.l());
    assert!(rows == 0 || (rows - 1) * ld + l <= cols.len(), "im2col: output block too small");
    let fits = g.oh == 0 || g.kh == 0 || ((g.oh - 1) * sh + (g.kh - 1) * dh < hp && g.ow + (g.kw.max(1) - 1) * dw <= wp);
    assert!(g.cg * hp * wp <= src.len() && fits, "im2col: window outside the padded planes");
    for cc in 0..g.cg {
        for i in 0..g.kh {
            for oy in 0..g.oh {
                // SAFETY: the asserts above bound every row read and written.
                unsafe {
                    let line = src.as_ptr().add((cc * hp + i * dh + oy * sh) * wp);
                    let dst = cols.as_mut_ptr().add((cc * g.kh + i) * g.kw * ld + oy * g.ow);
                    for j in 0..g.kw {
                        copy_run(dst.add(j * ld), line.add(j * dw), g.ow);
                    }
                }
            }
        }
    }
}

/// The column phases of a padded row `wp` long at column stride `sw`: how many there are
/// (`sw`, or fewer when the row is shorter than the stride) and how wide each is. At most
/// `2 wp` values together, whatever the stride.
fn phases_of(wp: usize, sw: usize) -> (usize, usize) {
    (sw.min(wp), wp.div_ceil(sw))
}

/// [`im2col`] at a column stride `sw > 1`: each padded row is first split into its `sw`
/// column phases (phase `r` holds columns `r, r + sw, ...`), so that the values one tap
/// reads along an output row, columns `ox sw + j dw`, are the contiguous run of phase
/// `(j dw) % sw` from `(j dw) / sw`, copied as the stride-1 case copies, instead of a
/// strided gather per value.
fn im2col_phases<T: Element>(g: &Geom, src: &[T], hp: usize, wp: usize, cols: &mut [T], ld: usize, phases: &mut Vec<T>) {
    let (Pair(sh, sw), Pair(dh, dw)) = (g.a.stride, g.a.dilation);
    let (nph, wq) = phases_of(wp, sw);
    ensure_len(phases, g.cg * hp * nph * wq);
    for (row, split) in src[..g.cg * hp * wp].chunks_exact(wp).zip(phases.chunks_exact_mut(nph * wq)) {
        for (r, phase) in split.chunks_exact_mut(wq).enumerate() {
            phase.iter_mut().zip(row.iter().skip(r).step_by(sw)).for_each(|(d, &v)| *d = v);
        }
    }
    for cc in 0..g.cg {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let (q, r) = ((j * dw) / sw, (j * dw) % sw);
                let row = &mut cols[((cc * g.kh + i) * g.kw + j) * ld..][..g.l()];
                for oy in 0..g.oh {
                    // Padded row `oy sh + i dh` of channel `cc`, its phase `r`, from `q`:
                    // `(ow - 1) sw + j dw < wp` keeps `r < nph` and `q + ow <= wq`.
                    let y = cc * hp + oy * sh + i * dh;
                    let line = &phases[(y * nph + r) * wq + q..][..g.ow];
                    copy_short(&mut row[oy * g.ow..(oy + 1) * g.ow], line);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds the unfolded matrix back into group `grp` of one
/// sample `dx` (through a padded buffer when the convolution pads).
fn col2im<T: Element>(g: &Geom, cols: &[T], ld: usize, grp: usize, dx: &mut [T], buf: &mut Vec<T>) {
    let (Pair(sh, sw), Pair(ph, pw), Pair(dh, dw)) = (g.a.stride, g.a.padding, g.a.dilation);
    let padded = ph > 0 || pw > 0;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    let dst_planes = &mut dx[grp * g.cg * g.h * g.w..][..g.cg * g.h * g.w];
    let acc: &mut [T] = if padded {
        ensure_len(buf, g.cg * hp * wp);
        buf.fill(T::zero());
        buf
    } else {
        dst_planes
    };
    for cc in 0..g.cg {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &cols[((cc * g.kh + i) * g.kw + j) * ld..][..g.l()];
                let base = (cc * hp + i * dh) * wp + j * dw;
                for oy in 0..g.oh {
                    let src = &row[oy * g.ow..(oy + 1) * g.ow];
                    let line = &mut acc[base + oy * sh * wp..];
                    if sw == 1 {
                        add_run(&mut line[..g.ow], src);
                    } else {
                        for (ox, &v) in src.iter().enumerate() {
                            line[ox * sw] += v;
                        }
                    }
                }
            }
        }
    }
    if padded {
        for cc in 0..g.cg {
            for y in 0..g.h {
                let d = &mut dst_planes[(cc * g.h + y) * g.w..][..g.w];
                let s = &buf[(cc * hp + ph + y) * wp + pw..][..g.w];
                d.iter_mut().zip(s).for_each(|(d, &v)| *d += v);
            }
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

/// The scratch every task of the unfolding kernels reserves: its largest block unfolded,
/// a block of outputs (or output gradients), and one sample's padded planes.
fn lens<T>(g: &Geom) -> Lens {
    let ld = block_samples::<T>(g).min(g.n) * g.l();
    let Pair(ph, pw) = g.a.padding;
    let pad = if ph > 0 || pw > 0 { g.cg * (g.h + 2 * ph) * (g.w + 2 * pw) } else { 0 };
    let sw = g.a.stride.1;
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    let phases = if sw > 1 { g.cg * hp * phases_of(wp, sw).0 * phases_of(wp, sw).1 } else { 0 };
    Lens { cols: g.rows() * ld, mat: g.og * ld, pad, planes: phases, ..Lens::default() }
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

/// Unfolds group `grp` of a block of samples into `sc.cols` (`[rows, block * OH*OW]`).
fn unfold_block<T: Element>(g: &Geom, x: &[T], samples: &std::ops::Range<usize>, grp: usize, sc: &mut Scratch<T>) {
    let (l, chw) = (g.l(), g.c * g.h * g.w);
    let ld = samples.len() * l;
    for (s, n) in samples.clone().enumerate() {
        im2col(g, &x[n * chw..(n + 1) * chw], grp, &mut sc.cols[s * l..], ld, &mut sc.pad, &mut sc.planes);
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
    let out = SharedOut::new(&mut y);
    for_blocks::<T>(g, |_, samples, sc| {
        let ld = samples.len() * l;
        ensure_len(&mut sc.cols, rows * ld);
        ensure_len(&mut sc.mat, g.og * ld);
        for grp in 0..g.a.groups {
            unfold_block(g, x, &samples, grp, sc);
            let a = MatRef::row_major(w, grp * g.og * rows, rows);
            gemm_serial(g.og, ld, rows, a, MatRef::row_major(&sc.cols, 0, ld), &mut sc.mat, ld, false);
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
/// with the output gradient, folded back (col2im).
pub(super) fn input_grad<T: Element>(g: &Geom, dy: &[T], w: &[T]) -> Vec<T> {
    let (l, rows) = (g.l(), g.rows());
    let chw = g.c * g.h * g.w;
    let mut dx = autograd::buffers::zeroed::<T>(g.n * chw);
    if rows == 0 || dx.is_empty() {
        return dx;
    }
    let out = SharedOut::new(&mut dx);
    for_blocks::<T>(g, |_, samples, sc| {
        let ld = samples.len() * l;
        ensure_len(&mut sc.cols, rows * ld);
        ensure_len(&mut sc.mat, g.og * ld);
        for grp in 0..g.a.groups {
            gather_dy(g, dy, &samples, grp, &mut sc.mat);
            let a = MatRef::transposed(w, grp * g.og * rows, rows);
            gemm_serial(rows, ld, g.og, a, MatRef::row_major(&sc.mat, 0, ld), &mut sc.cols, ld, false);
            for (s, n) in samples.clone().enumerate() {
                // SAFETY: each sample's input gradient belongs to exactly one block.
                let dxn = unsafe { out.slice(n * chw, chw) };
                col2im(g, &sc.cols[s * l..], ld, grp, dxn, &mut sc.pad);
            }
        }
    });
    dx
}

/// The weight gradient by unfolding. Each block unfolds its samples again (into scratch
/// that stays in cache) rather than reading an unfolded copy of the whole batch kept by
/// the forward: that copy (35 MB for LeNet's batch of 256) cost more in memory traffic
/// than the second unfolding costs in arithmetic.
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
    let mut partials = autograd::buffers::for_overwrite::<T>(parts * size);
    let out = SharedOut::new(&mut partials);
    par_tasks::<T>(parts, lens::<T>(g), |p, sc| {
        // SAFETY: task `p` owns partial sum `p`.
        let acc = unsafe { out.slice(p * size, size) };
        for b in p * per..((p + 1) * per).min(blocks) {
            let samples = b * nb..((b + 1) * nb).min(g.n);
            let ld = samples.len() * l;
            ensure_len(&mut sc.mat, g.og * ld);
            ensure_len(&mut sc.cols, rows * ld);
            for grp in 0..g.a.groups {
                unfold_block(g, x, &samples, grp, sc);
                gather_dy(g, dy, &samples, grp, &mut sc.mat);
                let a = MatRef::row_major(&sc.mat, 0, ld);
                let dst = &mut acc[grp * g.og * rows..];
                gemm_serial(g.og, rows, ld, a, MatRef::transposed(&sc.cols, 0, ld), dst, rows, b > p * per);
            }
        }
    });
    super::sum_partials(partials, size)
}

/// The most partial sums the weight gradient keeps: enough tasks for the 2 to 4 cores this
/// library targets, where one partial per block (up to 64 at batch 64, 2.4 MB each at 256
/// channels of 3x3) made adding them up 15% of a 256-channel convolution's backward.
const MAX_PARTIALS: usize = 4;
