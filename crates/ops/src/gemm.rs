//! General matrix multiply `C = A B` (or `C += A B`) over strided matrices.
//!
//! The micro-kernels come from the `gemm` crate (AVX-512 / AVX2 / NEON, chosen at run
//! time), always called single-threaded. The parallel split is ours: the output is cut
//! into a grid of tiles whose sizes depend only on the problem shape, never on the thread
//! count, and every tile runs the whole `k` reduction in one call. Each element is
//! therefore computed by the same instructions in the same order at any thread count:
//! results are bitwise identical at 1, 2 or 64 threads.

use autograd::parallel::install;
use autograd::Element;
use rayon::prelude::*;

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

struct SendPtr<T>(*mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// The tile grid for an `m x n` output: `(rows per tile, cols per tile)`. A function of
/// the shape alone, which is what makes the result independent of the thread count.
pub fn tile_grid(m: usize, n: usize, k: usize) -> (usize, usize) {
    if m * n * k < PAR_MIN_MACS {
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

/// Computes one tile with the micro-kernel crate.
///
/// # Safety
/// `c` must point to an `m x n` row-major block with row stride `ldc` that nobody else
/// writes concurrently, and `a`, `b` must cover the `m x k` and `k x n` views.
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<T: Element>(
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
) {
    // The crate dispatches on the element type itself (f32 and f64 kernels).
    gemm::gemm::<T>(
        m,
        n,
        k,
        c,
        1,
        ldc as isize,
        accumulate,
        a,
        a_cs,
        a_rs,
        b,
        b_cs,
        b_rs,
        T::one(),
        T::one(),
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
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
    if k == 0 {
        if !accumulate {
            for p in products {
                c[p.c_offset..p.c_offset + m * n].iter_mut().for_each(|v| *v = T::zero());
            }
        }
        return;
    }
    for p in products {
        assert!(p.c_offset + m * n <= c.len(), "gemm: output block out of range");
        for (mat, r, cl) in [(&p.a, m, k), (&p.b, k, n)] {
            let last = mat.offset as isize + (r as isize - 1) * mat.rs + (cl as isize - 1) * mat.cs;
            assert!(mat.rs >= 0 && mat.cs >= 0 && (last as usize) < mat.data.len(), "gemm: input view out of range");
        }
    }
    let (tm, tn) = tile_grid(m, n, k);
    let tiles_m = m.div_ceil(tm);
    let tiles_n = n.div_ceil(tn);
    let per = tiles_m * tiles_n;
    let total = per * products.len();
    let cp = SendPtr(c.as_mut_ptr());
    let run = |t: usize| {
        let p = &products[t / per];
        let (i, j) = ((t % per) / tiles_n, (t % per) % tiles_n);
        let (r0, c0) = (i * tm, j * tn);
        let (rm, cn) = (tm.min(m - r0), tn.min(n - c0));
        let cp = &cp;
        // SAFETY: tiles are disjoint blocks of distinct products' outputs; views were
        // bounds-checked above.
        unsafe {
            kernel::<T>(
                rm,
                cn,
                k,
                cp.0.add(p.c_offset + r0 * n + c0),
                n,
                p.a.data.as_ptr().offset(p.a.offset as isize + r0 as isize * p.a.rs),
                p.a.rs,
                p.a.cs,
                p.b.data.as_ptr().offset(p.b.offset as isize + c0 as isize * p.b.cs),
                p.b.rs,
                p.b.cs,
                accumulate,
            )
        }
    };
    if total == 1 || m * n * k * products.len() < PAR_MIN_MACS {
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
    assert!((m - 1) * ldc + n <= c.len(), "gemm: output block out of range");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * ldc..r * ldc + n].iter_mut().for_each(|v| *v = T::zero());
            }
        }
        return;
    }
    for (mat, r, cl) in [(&a, m, k), (&b, k, n)] {
        let last = mat.offset as isize + (r as isize - 1) * mat.rs + (cl as isize - 1) * mat.cs;
        assert!(mat.rs >= 0 && mat.cs >= 0 && (last as usize) < mat.data.len(), "gemm: input view out of range");
    }
    // SAFETY: bounds checked above; `c` is exclusively borrowed.
    unsafe {
        kernel::<T>(
            m,
            n,
            k,
            c.as_mut_ptr(),
            ldc,
            a.data.as_ptr().add(a.offset),
            a.rs,
            a.cs,
            b.data.as_ptr().add(b.offset),
            b.rs,
            b.cs,
            accumulate,
        )
    }
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major matrix with `cols` columns starting at `offset`.
    pub fn row_major(data: &'a [T], offset: usize, cols: usize) -> Self {
        MatRef { data, offset, rs: cols as isize, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns starting at `offset`.
    pub fn transposed(data: &'a [T], offset: usize, cols: usize) -> Self {
        MatRef { data, offset, rs: 1, cs: cols as isize }
    }
}
