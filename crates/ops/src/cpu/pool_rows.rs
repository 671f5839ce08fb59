//! The row kernels of 2x2 pooling, shared by the pooling ops (`pool.rs`) and a fused
//! convolution's epilogue and its backward (`epilogue.rs`, `direct.rs`): one output row
//! from two input rows, as fixed-size arrays the compiler vectorises, and max pooling's
//! winner rule (the first maximum in row-major order, NaN wins, padding never does).

use autograd::Element;

/// Whether `v` beats the best so far: larger, or the first NaN. Non-short-circuit
/// operators, so the compiler evaluates it without branches.
#[inline(always)]
pub(crate) fn wins<T: Element>(v: T, best: T) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

/// The larger of two values, NaN if either is (as max pooling wants), written as a select
/// the compiler can vectorise.
#[inline(always)]
pub(crate) fn max_nan<T: Element>(p: T, q: T) -> T {
    if (p > q) | p.is_nan() {
        p
    } else {
        q
    }
}

/// Which of the four cells `[a, b, c, d]` of a 2x2 window (row-major) wins, as a
/// tournament: each row's pair, then the bottom winner against the top one. A later cell
/// must beat an earlier one strictly, so the first maximum wins, and the first NaN. Two
/// independent comparisons and one more, with selects instead of branches (which cell wins
/// is data: mispredicted branches cost more than the compares).
#[inline(always)]
pub(crate) fn winner4<T: Element>(v: [T; 4]) -> usize {
    let wb = wins(v[1], v[0]);
    let (top, ti) = (if wb { v[1] } else { v[0] }, usize::from(wb));
    let wd = wins(v[3], v[2]);
    let (bottom, bi) = (if wd { v[3] } else { v[2] }, 2 + usize::from(wd));
    if wins(bottom, top) {
        bi
    } else {
        ti
    }
}

/// One output row of 2x2 max pooling from input rows `r0` and `r1` (`2 y.len()` long):
/// the larger of the two rows first (a vectorised pass), then of each pair.
#[inline(always)]
pub(crate) fn max2x2_row<T: Element>(y: &mut [T], r0: &[T], r1: &[T]) {
    const SPAN: usize = 64;
    let mut rows = [T::zero(); 2 * SPAN];
    for (part, yseg) in y.chunks_mut(SPAN).enumerate() {
        let span = 2 * yseg.len();
        let (a, b) = (&r0[2 * SPAN * part..][..span], &r1[2 * SPAN * part..][..span]);
        for ((m, &p), &q) in rows[..span].iter_mut().zip(a).zip(b) {
            *m = max_nan(p, q);
        }
        for (y, pair) in yseg.iter_mut().zip(rows[..span].chunks_exact(2)) {
            *y = max_nan(pair[0], pair[1]);
        }
    }
}

/// The backward of one output row of 2x2 max pooling: `d` and `x` are the two input rows
/// under it (`w` apart, `2 w` long); every cell of `d` is written, `dy[j]` at window
/// `j`'s winner in `x` and 0 elsewhere (including a last odd column).
#[inline(always)]
pub(crate) fn max2x2_scatter_rows<T: Element>(d: &mut [T], x: &[T], w: usize, dy: &[T]) {
    d[..2 * w].fill(T::zero());
    for (j, &v) in dy.iter().enumerate() {
        let c = 2 * j;
        let k = winner4([x[c], x[c + 1], x[c + w], x[c + w + 1]]);
        d[c + (k >> 1) * w + (k & 1)] = v;
    }
}

/// One output row of 2x2 average pooling, `y[j] = scale (r0[2j] + r0[2j + 1] + r1[2j] +
/// r1[2j + 1])`, eight outputs at a time as fixed-size arrays: the compiler turns the
/// stride-2 reads into shuffles, where the plain loop stayed scalar. A row of eight or
/// more ends with eight outputs ending at its end (recomputing a few, to the same values)
/// instead of a scalar tail.
#[inline(always)]
pub(crate) fn avg2x2_row<T: Element>(y: &mut [T], r0: &[T], r1: &[T], scale: T) {
    // Named functions, not closures: they must inline into an AVX-512 caller.
    #[inline(always)]
    fn cell<T: Element>(a: &[T], b: &[T], k: usize, scale: T) -> T {
        (a[2 * k] + a[2 * k + 1] + b[2 * k] + b[2 * k + 1]) * scale
    }
    #[inline(always)]
    fn eight<T: Element>(y: &mut [T], r0: &[T], r1: &[T], j: usize, scale: T) {
        let (a, b): (&[T; 16], &[T; 16]) = (r0[2 * j..][..16].try_into().unwrap(), r1[2 * j..][..16].try_into().unwrap());
        let out: [T; 8] = std::array::from_fn(|k| cell(a, b, k, scale));
        y[j..j + 8].copy_from_slice(&out);
    }
    if y.len() < 8 {
        for (k, y) in y.iter_mut().enumerate() {
            *y = cell(r0, r1, k, scale);
        }
        return;
    }
    let mut j = 0;
    while j + 8 <= y.len() {
        eight(y, r0, r1, j, scale);
        j += 8;
    }
    if j < y.len() {
        eight(y, r0, r1, y.len() - 8, scale);
    }
}

/// The adjoint of [`avg2x2_row`]: each `dy[j] * scale` into the four cells of its window.
#[inline(always)]
pub(crate) fn spread2x2_row<T: Element>(top: &mut [T], bottom: &mut [T], dy: &[T], scale: T) {
    spread_pairs(top, dy, scale);
    bottom.copy_from_slice(top);
}

/// `dst[2j] = dst[2j + 1] = dy[j] * scale`, eight values of `dy` at a time (as fixed-size
/// arrays, which the compiler turns into shuffles).
#[inline(always)]
pub(crate) fn spread_pairs<T: Element>(dst: &mut [T], dy: &[T], scale: T) {
    let mut j = 0;
    while j + 8 <= dy.len() {
        let v: [T; 8] = std::array::from_fn(|k| dy[j + k] * scale);
        let pairs: [T; 16] = std::array::from_fn(|k| v[k / 2]);
        dst[2 * j..][..16].copy_from_slice(&pairs);
        j += 8;
    }
    for k in j..dy.len() {
        dst[2 * k..2 * k + 2].fill(dy[k] * scale);
    }
}
