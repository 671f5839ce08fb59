//! Register-tile micro-kernels of the direct convolution (see `direct.rs` for the layout).
//!
//! `combine` and `correlate` multiply shifted, contiguous runs of one buffer (the taps) by
//! scalars and vectorise along the run; `channels` and `outer` vectorise over the output
//! channels instead, broadcasting one input value at a time. They are written over arrays
//! of `L` values, one AVX-512 register, and compiled with AVX-512 enabled: the same code
//! serves f32 (`L` = 16) and f64 (`L` = 8), so the f64 gradchecks test exactly the kernels
//! f32 training runs.
//! (Shapes were chosen by reading the assembly: the compiler keeps 4 x 6 and 6 x 4 tiles
//! of accumulators in registers, but turns an 8 x 3 tile into gathers.)

use autograd::Element;
use std::any::TypeId;

/// `L` values, one vector register.
type Vector<T, const L: usize> = [T; L];

/// # Safety
/// `p` must be valid for `L` reads.
#[inline(always)]
unsafe fn load<T: Copy, const L: usize>(p: *const T) -> Vector<T, L> {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe { p.cast::<Vector<T, L>>().read_unaligned() }
}

/// # Safety
/// `p` must be valid for `L` writes.
#[inline(always)]
unsafe fn store<T: Copy, const L: usize>(p: *mut T, v: Vector<T, L>) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe { p.cast::<Vector<T, L>>().write_unaligned(v) }
}

#[inline(always)]
fn fma<T: Element, const L: usize>(acc: &mut Vector<T, L>, a: T, x: &Vector<T, L>) {
    for l in 0..L {
        acc[l] = a.mul_add(x[l], acc[l]);
    }
}

#[inline(always)]
fn fma_vv<T: Element, const L: usize>(acc: &mut Vector<T, L>, a: &Vector<T, L>, x: &Vector<T, L>) {
    for l in 0..L {
        acc[l] = a[l].mul_add(x[l], acc[l]);
    }
}

/// Whether this CPU runs the kernels (they are compiled for AVX-512 only; other CPUs use
/// the unfolding path).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX512.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `fn name<T: Element>(args) = inner` defines `name`, which runs `inner(args)` compiled
/// with AVX-512 enabled when the CPU has it, else as built. `inner` must be
/// `#[inline(always)]`: it is then compiled into the feature-enabled copy, and the element
/// loops of a driver (an epilogue, laying out a gradient) run 16 lanes wide instead of the
/// build's baseline 8. Same arithmetic, so the same values, either way. (A closure handed
/// to one generic feature-enabled function was not inlined into it: a named copy per use
/// is what makes this reliable.)
macro_rules! avx512_copy {
    ($(#[$m:meta])* $vis:vis fn $name:ident<T: Element>($($arg:ident: $ty:ty),* $(,)?) = $inner:ident) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<T: Element>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512<T: Element>($($arg: $ty),*) {
                    $inner($($arg),*)
                }
                if $crate::cpu::tiles::available() {
                    // SAFETY: the CPU has AVX-512.
                    return unsafe { avx512($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}
pub(super) use avx512_copy;

/// Values per vector register for `T`.
pub(super) fn lanes<T: 'static>() -> usize {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        16
    } else {
        8
    }
}

/// Values past the end of a buffer that a kernel may read or (accumulating) write: a
/// tile's last vector runs past the last position by less than one vector. Six vectors'
/// worth is the margin kept.
pub(super) fn slack<T: 'static>() -> usize {
    6 * lanes::<T>()
}

/// Rows per tile of the [`combine`] kernel for `rows` output rows: 6 (4 vectors wide) or 4
/// (6 wide), 24 registers of accumulators either way, whichever pads fewer rows; 1 to 3
/// when that is all there is.
pub(super) fn combine_rows(rows: usize) -> usize {
    if rows < 4 {
        return rows.max(1);
    }
    [6, 4].into_iter().min_by_key(|b| rows.div_ceil(*b) * b).expect("two candidates")
}

/// Vectors per full tile with `ob` rows.
const fn vectors(ob: usize) -> usize {
    if ob == 6 {
        4
    } else {
        6
    }
}

/// Where a tile's rows go: row `r` at `y + r ld`, written, or added to what is there.
#[derive(Clone, Copy)]
struct Rows<T> {
    y: *mut T,
    ld: usize,
    accumulate: bool,
}

/// One tile: `y[r][p0 + q] (+)= Σ_t w[t OB + r] x[offs[t] + p0 + q]` for `q < V L`.
///
/// # Safety
/// As for [`combine`].
#[inline(always)]
unsafe fn combine_tile<T: Element, const L: usize, const OB: usize, const V: usize>(
    offs: &[usize],
    x: *const T,
    w: *const T,
    out: Rows<T>,
    p0: usize,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        let mut acc = [[[T::zero(); L]; V]; OB];
        for (t, &off) in offs.iter().enumerate() {
            let src = x.add(off + p0);
            let mut xv = [[T::zero(); L]; V];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = load(src.add(v * L));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = *w.add(t * OB + r);
                for v in 0..V {
                    fma(&mut acc[v], a, &xv[v]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, acc) in acc.iter().enumerate() {
                let dst = out.y.add(r * out.ld + p0 + v * L);
                if out.accumulate {
                    let mut sum: Vector<T, L> = load(dst);
                    for l in 0..L {
                        sum[l] += acc[l];
                    }
                    store(dst, sum);
                } else {
                    store(dst, *acc);
                }
            }
        }
    }
}

/// Every tile of `positions`: full tiles of `V` vectors, then one narrower tile for the rest.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn combine_rows_avx512<T: Element, const L: usize, const OB: usize, const V: usize>(
    offs: &[usize],
    positions: usize,
    x: *const T,
    w: *const T,
    out: Rows<T>,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        let vecs = positions.div_ceil(L);
        let full = vecs / V * V * L;
        for p0 in (0..full).step_by(V * L) {
            combine_tile::<T, L, OB, V>(offs, x, w, out, p0);
        }
        match vecs % V {
            0 => {}
            1 => combine_tile::<T, L, OB, 1>(offs, x, w, out, full),
            2 => combine_tile::<T, L, OB, 2>(offs, x, w, out, full),
            3 => combine_tile::<T, L, OB, 3>(offs, x, w, out, full),
            4 => combine_tile::<T, L, OB, 4>(offs, x, w, out, full),
            5 => combine_tile::<T, L, OB, 5>(offs, x, w, out, full),
            _ => unreachable!("a tile is at most 6 vectors wide"),
        }
    }
}

/// `y[r][p] = Σ_t w[t ob + r] x[offs[t] + p]` for `r < ob` (from [`combine_rows`]) and
/// every `p < positions` rounded up to whole vectors: `ob` rows of a weighted sum of
/// shifted runs of `x`, written to `y` or, with `accumulate`, added to it. The
/// convolution's forward pass and its input gradient are both this.
///
/// # Safety
/// [`available`] must be true. `x` must be valid for reads at `offs[t] + p` for every tap
/// and every `p < positions + L`; `w` for `offs.len() ob` reads; `y` for `ob` rows `ldy`
/// apart of `positions` rounded up to whole vectors.
#[allow(clippy::too_many_arguments)] // the two matrices, their strides, the write mode
pub(super) unsafe fn combine<T: Element>(
    ob: usize,
    offs: &[usize],
    positions: usize,
    x: *const T,
    w: *const T,
    y: *mut T,
    ldy: usize,
    accumulate: bool,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        {
            macro_rules! pick {
            ($($ob:literal)*) => {
                match (lanes::<T>(), ob) {
                    $((16, $ob) => combine_rows_avx512::<T, 16, $ob, { vectors($ob) }>,
                      (8, $ob) => combine_rows_avx512::<T, 8, $ob, { vectors($ob) }>,)*
                    _ => unreachable!("combine_rows gives 1, 2, 3, 4 or 6"),
                }
            };
        }
            let f: unsafe fn(&[usize], usize, *const T, *const T, Rows<T>) = pick!(1 2 3 4 6);
            f(offs, positions, x, w, Rows { y, ld: ldy, accumulate })
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("the direct kernels need AVX-512")
    }
}

/// One tile of [`channels`]: `out[r][l] = Σ_t w[t][l] x[offs[t] + r]` for `R` consecutive
/// positions, each accumulator holding `L` output channels.
///
/// Written with the AVX-512 intrinsics: over `[T; L]` arrays, the compiler vectorised
/// some widths (7, 8, 12 positions) along the positions instead, into gathers and
/// scatters 10-20x slower (issue 23's sweep found it at 16 channels, 14x14). The same
/// fused multiply-adds in the same order, so the same values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channels_tile<T: Element, const L: usize, const V: usize, const R: usize>(
    offs: &[usize],
    x: *const T,
    w: Blocks<T>,
    out: Blocks<T>,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract; `T` is f32 when
    // `L` is 16 and f64 when it is 8 (`lanes`), so the casts keep the element type.
    unsafe {
        if L == 16 {
            channels_tile_f32::<V, R>(offs, x.cast(), w.cast(), out.cast())
        } else {
            channels_tile_f64::<V, R>(offs, x.cast(), w.cast(), out.cast())
        }
    }
}

/// Where `V` blocks of `L` channels live: block `v` at `ptr + v stride`.
#[derive(Clone, Copy)]
pub(super) struct Blocks<T> {
    pub ptr: *const T,
    pub stride: usize,
}

impl<T> Blocks<T> {
    fn cast<U>(self) -> Blocks<U> {
        Blocks { ptr: self.ptr.cast(), stride: self.stride }
    }
    fn add(self, n: usize) -> Blocks<T> {
        Blocks { ptr: self.ptr.wrapping_add(n), ..self }
    }
}

macro_rules! channels_tile_intrinsics {
    ($name:ident, $t:ty, $zero:ident, $load:ident, $set1:ident, $fmadd:ident, $store:ident) => {
        /// [`channels_tile`] for one element type.
        ///
        /// # Safety
        /// As for [`channels`].
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn $name<const V: usize, const R: usize>(offs: &[usize], x: *const $t, w: Blocks<$t>, out: Blocks<$t>) {
            use std::arch::x86_64::*;
            const L: usize = 64 / size_of::<$t>();
            // SAFETY: the caller upholds [`channels`]' contract: each of `w`'s `V` blocks
            // holds a vector per tap, `x` values at `offs[t] + r` for `r < R`, each of
            // `out`'s blocks `R` vectors.
            unsafe {
                let mut acc = [[$zero(); R]; V];
                for (t, &off) in offs.iter().enumerate() {
                    // (A loop, not `array::from_fn`: a closure is not always compiled
                    // with the function's AVX-512.)
                    let mut wv = [$zero(); V];
                    for (v, wv) in wv.iter_mut().enumerate() {
                        *wv = $load(w.ptr.add(v * w.stride + t * L));
                    }
                    let src = x.add(off);
                    for r in 0..R {
                        let xb = $set1(*src.add(r));
                        for (acc, wv) in acc.iter_mut().zip(&wv) {
                            acc[r] = $fmadd(xb, *wv, acc[r]);
                        }
                    }
                }
                for (v, acc) in acc.iter().enumerate() {
                    for (r, acc) in acc.iter().enumerate() {
                        $store(out.ptr.cast_mut().add(v * out.stride + r * L), *acc);
                    }
                }
            }
        }
    };
}
channels_tile_intrinsics!(channels_tile_f32, f32, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps);
channels_tile_intrinsics!(channels_tile_f64, f64, _mm512_setzero_pd, _mm512_loadu_pd, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_storeu_pd);

/// Every tile of a row of `n` positions: tiles of `RMAX` (12 or 24 accumulators), then
/// one narrower tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn channels_avx512<T: Element, const L: usize, const V: usize, const RMAX: usize>(
    offs: &[usize],
    n: usize,
    x: *const T,
    w: Blocks<T>,
    out: Blocks<T>,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        let full = n / RMAX * RMAX;
        for p in (0..full).step_by(RMAX) {
            channels_tile::<T, L, V, RMAX>(offs, x.add(p), w, out.add(p * L));
        }
        let (x, out) = (x.add(full), out.add(full * L));
        macro_rules! rest {
            ($($r:literal)*) => {
                match n - full {
                    0 => {}
                    $($r => channels_tile::<T, L, V, $r>(offs, x, w, out),)*
                    _ => unreachable!("fewer than RMAX positions remain"),
                }
            };
        }
        rest!(1 2 3 4 5 6 7 8 9 10 11)
    }
}

/// Vectors of output channels per [`channels`] or [`outer`] call for `blocks` blocks of
/// `L` channels: 4, 2 or 1, the most that divides them. Several vectors share each
/// broadcast input value (ResNet's stem, 64 channels, loaded one per multiply-add with
/// one vector).
pub(super) fn channel_vectors(blocks: usize) -> usize {
    [4, 2, 1].into_iter().find(|&v| blocks.is_multiple_of(v)).expect("1 divides")
}

/// `out[v][r][l] = Σ_t w[v][t L + l] x[offs[t] + r]` for `r < n`, `v < vecs` (from
/// [`channel_vectors`]) and `l` below the lanes of a vector: `vecs` vectors of output
/// channels per position, each tap a broadcast input value times vectors of weights. A
/// forward pass with a multiple of `L` output channels does no work on spare columns this
/// way, where [`combine`] computes whole wide rows.
///
/// # Safety
/// [`available`] must be true. `x` must be valid for reads at `offs[t] + r`, each of `w`'s
/// `vecs` blocks for `offs.len() L` reads, each of `out`'s for `n L` writes.
pub(super) unsafe fn channels<T: Element>(vecs: usize, offs: &[usize], n: usize, x: *const T, w: Blocks<T>, out: Blocks<T>) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        {
            type F<T> = unsafe fn(&[usize], usize, *const T, Blocks<T>, Blocks<T>);
            let f: F<T> = match (lanes::<T>(), vecs) {
                (16, 4) => channels_avx512::<T, 16, 4, 6>,
                (16, 2) => channels_avx512::<T, 16, 2, 12>,
                (16, 1) => channels_avx512::<T, 16, 1, 12>,
                (8, 4) => channels_avx512::<T, 8, 4, 6>,
                (8, 2) => channels_avx512::<T, 8, 2, 12>,
                (8, 1) => channels_avx512::<T, 8, 1, 12>,
                _ => unreachable!("channel_vectors gives 4, 2 or 1"),
            };
            f(offs, n, x, w, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("the direct kernels need AVX-512")
    }
}

/// Taps per [`outer`] call for `taps` taps and `vecs` vectors of channels (from
/// [`channel_vectors`]): 8, 10 or 12 (4, 5 or 6 with 4 vectors), whichever pads least (the
/// larger on a tie, for more independent sums in flight).
pub(super) fn outer_taps(taps: usize, vecs: usize) -> usize {
    let choices = if vecs == 4 { [6, 5, 4] } else { [12, 10, 8] };
    choices.into_iter().min_by_key(|&r| taps.next_multiple_of(r)).expect("three candidates")
}

/// One call of [`outer`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn outer_avx512<T: Element, const L: usize, const V: usize, const R: usize>(runs: ChannelRuns<T>, offs: *const usize, acc: *mut T) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        let offs: [usize; R] = std::array::from_fn(|t| *offs.add(t));
        let mut a = [[[T::zero(); L]; R]; V];
        for s in 0..runs.samples {
            for oy in 0..runs.oh {
                let x = runs.x.add(s * runs.x_stride + oy * runs.wp);
                let dy = runs.dyt.add(s * runs.dyt_stride + oy * runs.ow * runs.ld);
                for ox in 0..runs.ow {
                    let d: [Vector<T, L>; V] = std::array::from_fn(|v| load(dy.add(ox * runs.ld + v * L)));
                    for t in 0..R {
                        let xb = *x.add(offs[t] + ox);
                        for (a, d) in a.iter_mut().zip(&d) {
                            fma(&mut a[t], xb, d);
                        }
                    }
                }
            }
        }
        for (v, a) in a.iter().enumerate() {
            for (t, a) in a.iter().enumerate() {
                store(acc.add((v * R + t) * L), *a);
            }
        }
    }
}

/// The runs [`outer`] sums over: for each of `samples` samples, the output gradient with
/// the channels minor (from `dyt + s dyt_stride`: output `(oy, ox)` at `(oy ow + ox) ld`)
/// and the padded input planes (from `x + s x_stride`, rows `wp` apart).
#[derive(Clone, Copy)]
pub(super) struct ChannelRuns<T> {
    pub samples: usize,
    pub dyt: *const T,
    pub dyt_stride: usize,
    pub ld: usize,
    pub x: *const T,
    pub x_stride: usize,
    pub oh: usize,
    pub ow: usize,
    pub wp: usize,
}

/// `acc[v][t] = Σ_s Σ_(oy, ox) dyt[s][(oy ow + ox) ld + v L ..][..L] x[s][offs[t] + oy wp + ox]`
/// for `r` taps (from [`outer_taps`]) and `vecs` vectors (from [`channel_vectors`]): the
/// weight gradients of `vecs L` output channels at once, vectors over the channels per
/// tap, each input value broadcast. Unlike [`correlate`], no lane runs over a spare column
/// of the wide rows, and no lanes are summed at the end. The sums stay in registers for
/// the whole call, and are stored (not added) to `acc`.
///
/// # Safety
/// [`available`] must be true. For every sample, `dyt` must be valid for `vecs L` reads at
/// every output's offset, `x` for reads at `offs[t] + oy wp + ox`; `offs` for `r` reads;
/// `acc` for `vecs r L` writes.
pub(super) unsafe fn outer<T: Element>(vecs: usize, r: usize, runs: ChannelRuns<T>, offs: *const usize, acc: *mut T) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        {
            macro_rules! pick {
                ($(($l:literal, $v:literal, $r:literal)),*) => {
                    match (lanes::<T>(), vecs, r) {
                        $(($l, $v, $r) => outer_avx512::<T, $l, $v, $r> as unsafe fn(ChannelRuns<T>, *const usize, *mut T),)*
                        _ => unreachable!("outer_taps and channel_vectors give these"),
                    }
                };
            }
            let f = pick!(
                (16, 1, 12),
                (16, 1, 10),
                (16, 1, 8),
                (16, 2, 12),
                (16, 2, 10),
                (16, 2, 8),
                (16, 4, 6),
                (16, 4, 5),
                (16, 4, 4),
                (8, 1, 12),
                (8, 1, 10),
                (8, 1, 8),
                (8, 2, 12),
                (8, 2, 10),
                (8, 2, 8),
                (8, 4, 6),
                (8, 4, 5),
                (8, 4, 4)
            );
            f(runs, offs, acc)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("the direct kernels need AVX-512")
    }
}

/// Output rows and taps per [`correlate`] tile for `rows` rows and `taps` taps: 4 x 6 or
/// 6 x 4, whichever pads less.
pub(super) fn correlate_shape(rows: usize, taps: usize) -> (usize, usize) {
    [(4, 6), (6, 4)].into_iter().min_by_key(|&(r, t)| rows.div_ceil(r) * r * taps.div_ceil(t) * t).expect("two candidates")
}

/// One tile of [`correlate`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn correlate_avx512<T: Element, const L: usize, const OB: usize, const TB: usize>(runs: Runs<T>, offs: *const usize, acc: *mut T) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        let mut a = [[[T::zero(); L]; TB]; OB];
        for (r, a) in a.iter_mut().enumerate() {
            for (t, a) in a.iter_mut().enumerate() {
                *a = load(acc.add((r * TB + t) * L));
            }
        }
        let offs: [usize; TB] = std::array::from_fn(|t| *offs.add(t));
        for s in 0..runs.samples {
            let (x, dy) = (runs.x.add(s * runs.x_stride), runs.dy.add(s * runs.dy_stride));
            for v in 0..runs.vecs {
                let p = v * L;
                let mut xv = [[T::zero(); L]; TB];
                for (t, xv) in xv.iter_mut().enumerate() {
                    *xv = load(x.add(offs[t] + p));
                }
                for (r, a) in a.iter_mut().enumerate() {
                    let d = load(dy.add(r * runs.ldd + p));
                    for t in 0..TB {
                        fma_vv(&mut a[t], &d, &xv[t]);
                    }
                }
            }
        }
        for (r, a) in a.iter().enumerate() {
            for (t, a) in a.iter().enumerate() {
                store(acc.add((r * TB + t) * L), *a);
            }
        }
    }
}

/// The runs [`correlate`] sums over: for each of `samples` samples, `vecs` vectors of
/// output-gradient rows (`ldd` apart, from `dy + s dy_stride`) and of input (from
/// `x + s x_stride`).
#[derive(Clone, Copy)]
pub(super) struct Runs<T> {
    pub samples: usize,
    pub vecs: usize,
    pub dy: *const T,
    pub dy_stride: usize,
    pub ldd: usize,
    pub x: *const T,
    pub x_stride: usize,
}

/// `acc[r][t] += dy[s][r ldd + p] * x[s][offs[t] + p]`, lane by lane, over every sample `s`
/// and `p < vecs L`: an `ob x tb` tile (from [`correlate_shape`]) of vector partial sums of
/// the correlation of output rows with shifted runs of the input. The convolution's weight
/// gradient is this, summed over lanes. The sums stay in registers for the whole call.
///
/// # Safety
/// [`available`] must be true. For every sample, `dy` must be valid for `ob` rows of
/// `vecs L` values and `x` for reads at `offs[t] + p`; `offs` for `tb` reads; `acc` for
/// `ob tb L` values.
pub(super) unsafe fn correlate<T: Element>((ob, tb): (usize, usize), runs: Runs<T>, offs: *const usize, acc: *mut T) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        {
            let f: unsafe fn(Runs<T>, *const usize, *mut T) = match (lanes::<T>(), ob, tb) {
                (16, 4, 6) => correlate_avx512::<T, 16, 4, 6>,
                (16, 6, 4) => correlate_avx512::<T, 16, 6, 4>,
                (8, 4, 6) => correlate_avx512::<T, 8, 4, 6>,
                (8, 6, 4) => correlate_avx512::<T, 8, 6, 4>,
                _ => unreachable!("correlate_shape gives 4 x 6 or 6 x 4"),
            };
            f(runs, offs, acc)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("the direct kernels need AVX-512")
    }
}
