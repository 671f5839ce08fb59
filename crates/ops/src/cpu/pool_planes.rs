//! Max pooling with general windows (any size, stride and padding) across planes: a
//! block of [`LANES`] planes has the rows under each output row transposed so that the
//! planes sit side by side, and every comparison of a window then runs across the block,
//! compare-and-select over fixed-size arrays that the compiler vectorises.
//!
//! One plane at a time, which input wins a window is data, and the compiler turns the
//! select into a branch that mispredicts on most windows: ResNet's 3x3/stride-2 stem
//! pooling took 13 ms at batch 256 (PyTorch's, plane by plane too, as long). Each window
//! still sees its inputs in row-major order with the pooling ops' winner rule, so the
//! outputs and winners are those of the plane-by-plane search.

use super::pool_rows::wins;
use super::tiles;
use super::transpose::transpose;
use autograd::Element;

/// Planes pooled side by side.
pub(crate) const LANES: usize = 16;

/// Values of the transposed band of rows a block works from (on the stack: a task must
/// not take buffers from the cache, see `scratch.rs`): 32 KiB of `f32`.
const BAND: usize = 8192;

/// Positions per plane the kernel takes: each is carried as a value of the element type,
/// exact in `f32` below 2^24.
const MAX_POSITIONS: usize = 1 << 24;

/// Whether [`max_pool_planes`] takes planes of `inp` positions, `w` wide, under windows
/// `kh` rows tall.
pub(crate) fn fits(inp: usize, kh: usize, w: usize) -> bool {
    inp <= MAX_POSITIONS && kh.checked_mul(w).and_then(|n| n.checked_mul(LANES)).is_some_and(|n| n <= BAND)
}

/// The windows of one plane: for each output row and column, the input rows and columns
/// it covers, clipped to the plane (padding never wins, so it is never read).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Windows<'a> {
    /// Plane width.
    pub w: usize,
    /// Input rows `y0..y1` of each output row.
    pub rows: &'a [(usize, usize)],
    /// Input columns `x0..x1` of each output column.
    pub cols: &'a [(usize, usize)],
}

tiles::avx512_copy! {
    /// [`planes`], compiled for AVX-512 when the CPU has it.
    pub(crate) fn max_pool_planes<T: Element>(x: &[T], win: Windows<'_>, y: &mut [T], at: &mut [u32]) = planes
}

/// Max pooling of whole blocks of [`LANES`] planes: `x` holds the planes (a multiple of
/// `LANES`, `inp` values each), `y` and `at` receive each plane's outputs and their
/// winners' positions in the plane (`rows.len() * cols.len()` per plane, row-major). Every
/// output is the value at its winner: the first maximum of its window in row-major order,
/// NaN winning (the first NaN), and the window's first cell when all are minus infinity.
///
/// # Panics
/// If the sizes disagree or [`fits`] does not hold (internal errors: the front-end
/// checks them).
#[inline(always)]
fn planes<T: Element>(x: &[T], win: Windows<'_>, y: &mut [T], at: &mut [u32]) {
    let outp = win.rows.len() * win.cols.len();
    let blocks = y.len() / (LANES * outp).max(1);
    if blocks == 0 {
        return;
    }
    let inp = x.len() / (blocks * LANES);
    assert!(x.len() == blocks * LANES * inp && y.len() == at.len() && y.len() == blocks * LANES * outp, "max_pool_planes: sizes");
    assert!(inp <= MAX_POSITIONS && win.w > 0 && inp.is_multiple_of(win.w), "max_pool_planes: plane size");
    let h = inp / win.w;
    // Whole rows the band holds.
    let band_rows = BAND / (LANES * win.w);
    let mut band = [T::zero(); BAND];
    for ((xb, yb), ab) in x.chunks_exact(LANES * inp).zip(y.chunks_exact_mut(LANES * outp)).zip(at.chunks_exact_mut(LANES * outp)) {
        // Rows `lo..hi` of the block's planes, position-major: band[p LANES + l] is plane
        // l's value at position lo w + p. Windows move down, so the band follows them.
        let (mut lo, mut hi) = (0, 0);
        for (oy, &(y0, y1)) in win.rows.iter().enumerate() {
            if y0 < lo || y1 > hi {
                (lo, hi) = (y0, (y0 + band_rows).min(h));
                assert!(y1 <= hi, "max_pool_planes: window taller than the band");
                transpose(LANES, (hi - lo) * win.w, &xb[lo * win.w..], inp, &mut band, LANES);
            }
            for (ox, &(x0, x1)) in win.cols.iter().enumerate() {
                // Positions as `T`, exact below `MAX_POSITIONS`: selected with the same
                // masks as the values. (As `u32`, the compiler selected lane by lane.)
                let mut best = [T::neg_infinity(); LANES];
                let mut bi = [T::from_f64((y0 * win.w + x0) as f64); LANES];
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let p = (iy - lo) * win.w + ix;
                        let v: &[T; LANES] = band[p * LANES..][..LANES].try_into().expect("LANES values");
                        let i = T::from_f64((iy * win.w + ix) as f64);
                        for l in 0..LANES {
                            let take = wins(v[l], best[l]);
                            best[l] = if take { v[l] } else { best[l] };
                            bi[l] = if take { i } else { bi[l] };
                        }
                    }
                }
                let o = oy * win.cols.len() + ox;
                for l in 0..LANES {
                    yb[l * outp + o] = best[l];
                    ab[l * outp + o] = bi[l].to_u32().expect("a position below MAX_POSITIONS");
                }
            }
        }
    }
}
