//! General matrix multiply `C = A B` (or `C += A B`) over strided matrices.
//!
//! The micro-kernels come from the `gemm-f32`/`gemm-f64` crates (AVX-512 / AVX2+FMA /
//! scalar, chosen at run time); the packing and blocking around them are ours, so a product
//! never allocates: each thread packs into a fixed panel in its thread-local storage. The
//! parallel split is ours too: the output is cut into a grid of tiles whose sizes depend
//! only on the problem shape, never on the thread count, and every tile runs the whole `k`
//! reduction in one call. Each element is therefore computed by the same instructions in
//! the same order at any thread count: results are bitwise identical at 1, 2 or 64 threads.

use crate::shared::SharedOut;
use autograd::parallel::{install, num_threads};
use autograd::Element;
use rayon::prelude::*;
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::sync::OnceLock;

/// A matrix view: element `(i, j)` lives at `ptr[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub rs: isize,
    pub cs: isize,
}

/// Below this many multiply-adds a product runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 18;
/// The output is cut into at most this many tiles along its longer side.
const MAX_TILES: usize = 8;
/// Tiles are never thinner than this (rows or columns), to keep the kernel efficient.
const MIN_TILE: usize = 64;

/// The tile grid for an `m x n` output: `(rows per tile, cols per tile)`. A function of
/// the shape alone, which is what makes the result independent of the thread count.
pub fn tile_grid(m: usize, n: usize, k: usize) -> (usize, usize) {
    if m.saturating_mul(n).saturating_mul(k) < PAR_MIN_MACS {
        return (m.max(1), n.max(1));
    }
    let split = |len: usize| -> usize {
        let tiles = (len / MIN_TILE).clamp(1, MAX_TILES);
        len.div_ceil(tiles)
    };
    if m >= n {
        (split(m), n.max(1))
    } else {
        (m.max(1), split(n))
    }
}

/// The micro-kernel signature of the `gemm-f32`/`gemm-f64` crates. In their column-major
/// view a call computes an `m x n` block (`m` up to `mr` lanes, `n` up to `nr`) of
/// `dst = alpha dst + beta lhs rhs` over depth `k`, where `lhs` is a micro-panel with `m`
/// contiguous values per depth step (`lhs_cs` apart) and rhs element `(p, j)` sits at
/// `rhs[p rhs_rs + j rhs_cs]`. `alpha_status` 0 ignores `dst`, 1 adds to it.
type MicroKernel<T> =
    unsafe fn(usize, usize, usize, *mut T, *const T, *const T, isize, isize, isize, isize, isize, T, T, u8, bool, bool, bool, *const T);

/// The dot-product kernels of the same crates: an `m x n` block (`m`, `n` up to `hm`,
/// `hn`) of `dst = alpha dst + beta lhs rhs` with row `i` of lhs at `lhs[i lhs_rs]` and
/// column `j` of rhs at `rhs[j rhs_cs]`, both contiguous along `k`.
type DotKernel<T> = unsafe fn(usize, *mut T, *const T, *const T, isize, isize, isize, isize, T, T, u8, bool, bool, bool);

/// The micro-kernels for one element type and instruction set.
struct Kernels<T: 'static> {
    /// Values per vector register.
    lanes: usize,
    /// Columns of `C` per micro-panel: a multiple of `lanes`.
    mr: usize,
    /// Rows of `C` per micro-kernel call.
    nr: usize,
    /// `table[(vectors - 1) * nr + rows - 1]` computes `vectors * lanes` columns by `rows` rows.
    table: Vec<MicroKernel<T>>,
    /// Rows and columns of the largest dot-product block (0 when there are none).
    hm: usize,
    hn: usize,
    /// `dot_table[(rows - 1) * hn + cols - 1]`.
    dot_table: Vec<DotKernel<T>>,
}

macro_rules! kernels_from {
    ($module:path, $lanes:expr) => {{
        use $module as k;
        Kernels {
            lanes: $lanes,
            mr: k::MR_DIV_N * $lanes,
            nr: k::NR,
            table: k::UKR.iter().flatten().copied().collect(),
            hm: k::H_M,
            hn: k::H_N,
            dot_table: k::H_UKR.iter().flatten().copied().collect(),
        }
    }};
}

/// The best kernels this CPU runs from one element type's crate: AVX-512, else AVX2+FMA,
/// else scalar (`$wide`, `$narrow`: lanes of the two vector widths).
macro_rules! select {
    ($krate:ident, $t:ident, $wide:expr, $narrow:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return kernels_from!($krate::microkernel::avx512f::$t, $wide);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return kernels_from!($krate::microkernel::fma::$t, $narrow);
            }
        }
        kernels_from!($krate::microkernel::scalar::$t, 1)
    }};
}

fn select_f32() -> Kernels<f32> {
    select!(gemm_f32, f32, 16, 8)
}

fn select_f64() -> Kernels<f64> {
    select!(gemm_f64, f64, 8, 4)
}

/// The kernels for `T`, chosen once per process from the CPU's features.
fn kernels<T: Element>() -> &'static Kernels<T> {
    static F32: OnceLock<Kernels<f32>> = OnceLock::new();
    static F64: OnceLock<Kernels<f64>> = OnceLock::new();
    let any: &dyn Any = if TypeId::of::<T>() == TypeId::of::<f32>() { F32.get_or_init(select_f32) } else { F64.get_or_init(select_f64) };
    any.downcast_ref().expect("Element is f32 or f64")
}

/// The panel kernel's blocking for `T` on this CPU, `(mr, nr, kc)`: columns of `C` per
/// packed panel of `B`, rows of `A` per micro-kernel call, and the depth of one pass over a
/// panel. A product cut along `k` at multiples of `kc` (the parts accumulated in order),
/// along `m` at multiples of `nr` or along `n` at multiples of `mr` (no part narrower than
/// a vector) runs every element through the same instructions in the same order as the
/// whole product: the same bits.
pub(crate) fn blocking<T: Element>() -> (usize, usize, usize) {
    let ks = kernels::<T>();
    (ks.mr, ks.nr, (PANEL_BYTES / size_of::<T>() / ks.mr).max(1))
}

/// Bytes of one packed micro-panel of `B`: half of a typical 48 KiB L1, so the panel stays
/// there while every row group of `A` streams past it.
const PANEL_BYTES: usize = 40 << 10;

/// One packed micro-panel's storage, aligned to a cache line.
#[repr(C, align(64))]
struct PanelBuf([f64; PANEL_BYTES / size_of::<f64>()]);

thread_local! {
    /// This thread's packed micro-panel, reused by every product. A fixed-size array with
    /// a constant initialiser lives in the thread's static TLS block, which the system
    /// sets up with the thread itself: packing never calls the allocator, whichever pool
    /// thread a tile lands on and whether that thread has run a product before.
    static PANEL: RefCell<PanelBuf> = const { RefCell::new(PanelBuf([0.0; PANEL_BYTES / size_of::<f64>()])) };
}

/// Runs `f` on this thread's panel buffer viewed as `len` values of `T`.
fn with_panel<T: Element, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    PANEL.with(|cell| {
        let mut buf = cell.borrow_mut();
        let words = &mut buf.0;
        assert!(len <= size_of_val(words) / size_of::<T>(), "gemm: panel of {len} values exceeds {PANEL_BYTES} bytes");
        // SAFETY: `T` is f32 or f64: any bit pattern is valid and f64's alignment covers
        // both; the buffer holds at least `len` values of `T` (asserted above).
        let panel = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<T>(), len) };
        f(panel)
    })
}

/// Copies the `kc x w` block of `B` at `src` (strides `rs`, `cs`) into `panel` as `kc` rows
/// of `mr` values, zero-padded past `w`.
///
/// # Safety
/// `src` must cover the block.
unsafe fn pack<T: Element>(panel: &mut [T], src: *const T, kc: usize, w: usize, mr: usize, rs: isize, cs: isize) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        if cs == 1 {
            for (p, row) in panel.chunks_exact_mut(mr).take(kc).enumerate() {
                row[..w].copy_from_slice(std::slice::from_raw_parts(src.offset(p as isize * rs), w));
                row[w..].fill(T::zero());
            }
        } else if rs != 1 {
            for (p, row) in panel.chunks_exact_mut(mr).take(kc).enumerate() {
                let s = src.offset(p as isize * rs);
                for (j, v) in row[..w].iter_mut().enumerate() {
                    *v = *s.offset(j as isize * cs);
                }
                row[w..].fill(T::zero());
            }
        } else {
            // B is stored by columns (the unfolding weight gradient's `colsᵀ`): a block
            // transpose, where a value at a time was 8% of a 128-channel 5x5 convolution.
            // `cs` is positive: `MatRef::check` refuses negative strides.
            super::transpose::transpose_raw(w, kc, src, cs as usize, panel.as_mut_ptr(), mr);
            for row in panel.chunks_exact_mut(mr).take(kc) {
                row[w..].fill(T::zero());
            }
        }
    }
}

/// One tile's problem `C (+)= A B` as raw pointers: `C` is `m x n` row-major with row
/// stride `ldc`, element `(i, p)` of `A` is at `a[i a_rs + p a_cs]`, `(p, j)` of `B` at
/// `b[p b_rs + j b_cs]`.
#[derive(Clone, Copy)]
struct Tile<T> {
    m: usize,
    n: usize,
    k: usize,
    c: *mut T,
    ldc: usize,
    a: *const T,
    a_rs: isize,
    a_cs: isize,
    b: *const T,
    b_rs: isize,
    b_cs: isize,
    accumulate: bool,
}

/// Computes one tile on the calling thread.
///
/// # Safety
/// `c` must cover an `m x n` block that nobody else writes concurrently, and `a`, `b`
/// must cover the `m x k` and `k x n` views.
unsafe fn kernel<T: Element>(t: Tile<T>) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        let ks = kernels::<T>();
        // Rows of A and columns of B both contiguous along k (C = A Bᵀ): packing B then means
        // transposing it, which costs about as much as 32 rows of products; with fewer rows to
        // share it, or too few columns to fill a vector, dot products win.
        if ks.hm > 0 && t.a_cs == 1 && t.b_rs == 1 && (t.m <= 32 || t.n < ks.lanes) {
            dots(ks, t);
        } else {
            panels(ks, t);
        }
    }
}

/// `C (+)= A B` vectorised along the columns of `C`: `B` in micro-panels of `mr` columns
/// (packed unless they can be read in place), each multiplied by every group of `nr` rows of
/// `A`, read in place.
///
/// # Safety
/// As for [`kernel`].
unsafe fn panels<T: Element>(ks: &Kernels<T>, t: Tile<T>) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        let Tile { m, n, k, c, ldc, a, a_rs, a_cs, b, b_rs, b_cs, accumulate } = t;
        let (mr, nr) = (ks.mr, ks.nr);
        let kc_max = blocking::<T>().2;
        // Contiguous panels pay for their copy once several row groups reuse them, unless
        // `B` is already laid out as packed panels (`mr` columns, rows `mr` apart: the
        // taps kernel's 64-channel products), where the copy would change nothing.
        let packed = b_cs == 1 && b_rs == mr as isize;
        let repack = b_cs != 1 || (m > 4 * nr && !packed);
        with_panel::<T, _>(kc_max.min(k) * mr, |panel| {
            for p0 in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - p0);
                let status = u8::from(p0 > 0 || accumulate);
                for j0 in (0..n).step_by(mr) {
                    let w = mr.min(n - j0);
                    let src = b.offset(p0 as isize * b_rs + j0 as isize * b_cs);
                    let (lhs, lhs_cs) = if repack || w < mr {
                        pack(panel, src, kc, w, mr, b_rs, b_cs);
                        (panel.as_ptr(), mr as isize)
                    } else {
                        (src, b_rs)
                    };
                    let row = (w.div_ceil(ks.lanes) - 1) * nr;
                    for i0 in (0..m).step_by(nr) {
                        let h = nr.min(m - i0);
                        let rhs = a.offset(i0 as isize * a_rs + p0 as isize * a_cs);
                        // Transposed view: lanes run along our columns (dst_rs = 1), the
                        // kernel's columns are our rows (dst_cs = ldc).
                        (ks.table[row + h - 1])(
                            w,
                            h,
                            kc,
                            c.add(i0 * ldc + j0),
                            lhs,
                            rhs,
                            ldc as isize,
                            1,
                            lhs_cs,
                            a_cs,
                            a_rs,
                            T::one(),
                            T::one(),
                            status,
                            false,
                            false,
                            false,
                            lhs,
                        );
                    }
                }
            }
        });
    }
}

/// `C (+)= A Bᵀ` as blocks of dot products, for rows of `A` (`a_rs` apart) and columns of
/// `B` (`b_cs` apart) contiguous along `k`: no packing at all.
///
/// # Safety
/// As for [`kernel`].
unsafe fn dots<T: Element>(ks: &Kernels<T>, t: Tile<T>) {
    // SAFETY: the caller upholds this function's `# Safety` contract, which is what the
    // operations below need.
    unsafe {
        let Tile { m, n, k, c, ldc, a, a_rs, b, b_cs, accumulate, .. } = t;
        let status = u8::from(accumulate);
        for i0 in (0..m).step_by(ks.hm) {
            let h = ks.hm.min(m - i0);
            for j0 in (0..n).step_by(ks.hn) {
                let w = ks.hn.min(n - j0);
                let (lhs, rhs) = (a.offset(i0 as isize * a_rs), b.offset(j0 as isize * b_cs));
                (ks.dot_table[(h - 1) * ks.hn + w - 1])(
                    k,
                    c.add(i0 * ldc + j0),
                    lhs,
                    rhs,
                    1,
                    ldc as isize,
                    a_rs,
                    b_cs,
                    T::one(),
                    T::one(),
                    status,
                    false,
                    false,
                    false,
                );
            }
        }
    }
}

/// One product of a batch: `c[batch] (+)= a[batch] @ b[batch]`.
pub struct Product<'a, T> {
    pub a: MatRef<'a, T>,
    pub b: MatRef<'a, T>,
    /// Offset of this product's output block in `c`.
    pub c_offset: usize,
}

/// Runs a batch of `m x k` by `k x n` products into row-major output blocks of `c`,
/// tiles of all products in parallel.
pub fn gemm_batch<T: Element>(m: usize, n: usize, k: usize, products: &[Product<'_, T>], c: &mut [T], accumulate: bool) {
    if m == 0 || n == 0 {
        return;
    }
    for p in products {
        let end = m.checked_mul(n).and_then(|mn| mn.checked_add(p.c_offset));
        assert!(end.is_some_and(|e| e <= c.len()), "gemm: output block out of range");
    }
    if k == 0 {
        if !accumulate {
            for p in products {
                c[p.c_offset..p.c_offset + m * n].iter_mut().for_each(|v| *v = T::zero());
            }
        }
        return;
    }
    for p in products {
        p.a.check(m, k);
        p.b.check(k, n);
    }
    let (tm, tn) = tile_grid(m, n, k);
    let tiles_m = m.div_ceil(tm);
    let tiles_n = n.div_ceil(tn);
    let per = tiles_m * tiles_n;
    let total = per * products.len();
    let cp = SharedOut::new(c);
    let run = |t: usize| {
        let p = &products[t / per];
        let (i, j) = ((t % per) / tiles_n, (t % per) % tiles_n);
        let (r0, c0) = (i * tm, j * tn);
        let (rm, cn) = (tm.min(m - r0), tn.min(n - c0));
        let cp = &cp;
        // SAFETY: tiles are disjoint blocks of distinct products' outputs; views were
        // bounds-checked above.
        unsafe {
            kernel(Tile {
                m: rm,
                n: cn,
                k,
                c: cp.ptr().add(p.c_offset + r0 * n + c0),
                ldc: n,
                a: p.a.data.as_ptr().offset(p.a.offset as isize + r0 as isize * p.a.rs),
                a_rs: p.a.rs,
                a_cs: p.a.cs,
                b: p.b.data.as_ptr().offset(p.b.offset as isize + c0 as isize * p.b.cs),
                b_rs: p.b.rs,
                b_cs: p.b.cs,
                accumulate,
            })
        }
    };
    if total == 1 || num_threads() == 1 || m.saturating_mul(n).saturating_mul(k).saturating_mul(products.len()) < PAR_MIN_MACS {
        (0..total).for_each(run);
    } else {
        install(|| (0..total).into_par_iter().for_each(run));
    }
}

/// One product on the calling thread: `c (+)= a @ b` with `c` row-major, row stride `ldc`.
/// For kernels (convolution) that already run in parallel over a batch.
#[allow(clippy::too_many_arguments)] // the BLAS shape: m, n, k, A, B, C, ldc, beta
pub fn gemm_serial<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let end = (m - 1).checked_mul(ldc).and_then(|r| r.checked_add(n));
    assert!(end.is_some_and(|e| e <= c.len()), "gemm: output block out of range");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * ldc..r * ldc + n].iter_mut().for_each(|v| *v = T::zero());
            }
        }
        return;
    }
    a.check(m, k);
    b.check(k, n);
    // SAFETY: bounds checked above; `c` is exclusively borrowed.
    unsafe {
        kernel(Tile {
            m,
            n,
            k,
            c: c.as_mut_ptr(),
            ldc,
            a: a.data.as_ptr().add(a.offset),
            a_rs: a.rs,
            a_cs: a.cs,
            b: b.data.as_ptr().add(b.offset),
            b_rs: b.rs,
            b_cs: b.cs,
            accumulate,
        })
    }
}

/// [`gemm_serial`] with the output cut into [`tile_grid`]'s tiles (a function of the shape
/// alone), run in parallel: for a kernel with fewer tasks of its own than cores (one
/// block of a small batch). A tile computes each of its elements as the whole product
/// does (tiles are at least 64 wide, so none switches to the dot kernels): the same bits
/// as [`gemm_serial`], at any thread count.
#[allow(clippy::too_many_arguments)] // as gemm_serial
pub fn gemm_tiled<T: Element>(m: usize, n: usize, k: usize, a: MatRef<'_, T>, b: MatRef<'_, T>, c: &mut [T], ldc: usize, accumulate: bool) {
    let (tm, tn) = tile_grid(m, n, k);
    let tiles_n = n.div_ceil(tn.max(1));
    let tiles = m.div_ceil(tm.max(1)) * tiles_n;
    if tiles <= 1 || k == 0 || num_threads() == 1 {
        return gemm_serial(m, n, k, a, b, c, ldc, accumulate);
    }
    let end = (m - 1).checked_mul(ldc).and_then(|r| r.checked_add(n));
    assert!(n <= ldc && end.is_some_and(|e| e <= c.len()), "gemm: output block out of range");
    a.check(m, k);
    b.check(k, n);
    let cp = SharedOut::new(c);
    install(|| {
        (0..tiles).into_par_iter().for_each(|t| {
            let (r0, c0) = (t / tiles_n * tm, t % tiles_n * tn);
            let (rm, cn) = (tm.min(m - r0), tn.min(n - c0));
            // SAFETY: the tiles are disjoint blocks of `c`'s `m x n` (rows `ldc >= n`
            // apart, asserted inside `c`); the views were bounds-checked above.
            unsafe {
                kernel(Tile {
                    m: rm,
                    n: cn,
                    k,
                    c: cp.ptr().add(r0 * ldc + c0),
                    ldc,
                    a: a.data.as_ptr().offset(a.offset as isize + r0 as isize * a.rs),
                    a_rs: a.rs,
                    a_cs: a.cs,
                    b: b.data.as_ptr().offset(b.offset as isize + c0 as isize * b.cs),
                    b_rs: b.rs,
                    b_cs: b.cs,
                    accumulate,
                })
            }
        })
    });
}

impl<'a, T> MatRef<'a, T> {
    /// Panics unless the `rows x cols` view (both at least 1) lies inside `data`, computed
    /// with checked arithmetic (a huge stride cannot wrap back inside).
    fn check(&self, rows: usize, cols: usize) {
        let step = |n: usize, stride: isize| usize::try_from(stride).ok().and_then(|s| s.checked_mul(n - 1));
        let last = step(rows, self.rs).zip(step(cols, self.cs)).and_then(|(r, c)| self.offset.checked_add(r)?.checked_add(c));
        assert!(last.is_some_and(|l| l < self.data.len()), "gemm: input view out of range");
    }
    /// A row-major matrix with `cols` columns starting at `offset`.
    pub fn row_major(data: &'a [T], offset: usize, cols: usize) -> Self {
        MatRef { data, offset, rs: cols as isize, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns starting at `offset`.
    pub fn transposed(data: &'a [T], offset: usize, cols: usize) -> Self {
        MatRef { data, offset, rs: 1, cs: cols as isize }
    }
}
