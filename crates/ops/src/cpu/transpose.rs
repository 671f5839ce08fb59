//! Transposing blocks of a matrix, the layout copy between channel-major planes and
//! position- or channel-minor rows (the direct kernels' channel tiles, the taps kernel's
//! position-major products): in register blocks (8 x 8 for f32, 4 x 4 for f64) of unpacks
//! and lane shuffles where the CPU runs the AVX-512 kernels, with scalar copies at the
//! edges and elsewhere. One value at a time (a store per cache line), it was a fifth of
//! ResNet's stem backward.

use autograd::Element;
use std::any::TypeId;

/// `dst[c ldd + r] = src[r lds + c]` for `r < rows`, `c < cols`: a transposition of a
/// `rows x cols` block of `src` (rows `lds` apart) into `dst` (rows `ldd` apart).
///
/// # Panics
/// If either block runs past its slice (an internal error: the kernels size both).
pub(super) fn transpose<T: Element>(rows: usize, cols: usize, src: &[T], lds: usize, dst: &mut [T], ldd: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    let reach = |lines: usize, ld: usize, len: usize| (lines - 1).checked_mul(ld).and_then(|v| v.checked_add(len));
    assert!(reach(rows, lds, cols).is_some_and(|r| r <= src.len()), "transpose: source block past its slice");
    assert!(reach(cols, ldd, rows).is_some_and(|r| r <= dst.len()), "transpose: destination block past its slice");
    // SAFETY: asserted: every `r lds + c` indexes `src` and every `c ldd + r` indexes
    // `dst`, which the `&mut` borrow makes ours alone.
    unsafe { transpose_raw(rows, cols, src.as_ptr(), lds, dst.as_mut_ptr(), ldd) }
}

/// [`transpose`] through raw pointers, for parallel tasks that write interleaved parts of
/// one buffer (no task may hold a slice covering the others' values).
///
/// # Safety
/// `src + r lds + c` must be valid for reads and `dst + c ldd + r` for writes, with no
/// other access to those values, for every `r < rows`, `c < cols`.
pub(super) unsafe fn transpose_raw<T: Element>(rows: usize, cols: usize, src: *const T, lds: usize, dst: *mut T, ldd: usize) {
    // SAFETY: the caller upholds the contract above; the vector kernels run only where
    // `tiles::available()`, and the casts keep the element type (checked by `TypeId`).
    unsafe {
        #[cfg(target_arch = "x86_64")]
        if super::tiles::available() {
            if TypeId::of::<T>() == TypeId::of::<f32>() {
                return blocked::<f32>(rows, cols, src.cast(), lds, dst.cast(), ldd);
            }
            if TypeId::of::<T>() == TypeId::of::<f64>() {
                return blocked::<f64>(rows, cols, src.cast(), lds, dst.cast(), ldd);
            }
        }
        transpose_scalar(0..rows, 0..cols, src, lds, dst, ldd)
    }
}

/// [`transpose`] one value at a time, over a sub-rectangle.
///
/// # Safety
/// As for [`transpose_raw`]; for the vector kernels, `tiles::available()`.
#[inline(always)]
unsafe fn transpose_scalar<T: Copy>(
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    src: *const T,
    lds: usize,
    dst: *mut T,
    ldd: usize,
) {
    // SAFETY: the caller upholds [`transpose`]'s contract for these indices.
    unsafe {
        for c in cols {
            for r in rows.clone() {
                *dst.add(c * ldd + r) = *src.add(r * lds + c);
            }
        }
    }
}

/// Every whole `B x B` block by [`RegisterBlock::block`], then the edges one value at a
/// time: the loop both element types share.
///
/// # Safety
/// As for [`transpose_raw`], and `tiles::available()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn blocked<T: RegisterBlock>(rows: usize, cols: usize, src: *const T, lds: usize, dst: *mut T, ldd: usize) {
    let b = T::B;
    let (rf, cf) = (rows / b * b, cols / b * b);
    // SAFETY: the caller upholds [`transpose_raw`]'s contract: each block reads `b` rows
    // of `b` values inside `rows x cols` and writes `b` columns of `b` values.
    unsafe {
        for r0 in (0..rf).step_by(b) {
            for c0 in (0..cf).step_by(b) {
                T::block(src.add(r0 * lds + c0), lds, dst.add(c0 * ldd + r0), ldd);
            }
        }
        transpose_scalar(0..rf, cf..cols, src, lds, dst, ldd);
        transpose_scalar(rf..rows, 0..cols, src, lds, dst, ldd);
    }
}

/// One element type's register transpose of a `B x B` block.
#[cfg(target_arch = "x86_64")]
trait RegisterBlock: Copy {
    const B: usize;
    /// `dst[c ldd + r] = src[r lds + c]` for `r, c < B`.
    ///
    /// # Safety
    /// `tiles::available()`; `B` rows of `B` values readable from `src`, `B` rows of `B`
    /// values writable at `dst`.
    unsafe fn block(src: *const Self, lds: usize, dst: *mut Self, ldd: usize);
}

/// 8 x 8: the classic unpack / shuffle / 128-bit permute.
#[cfg(target_arch = "x86_64")]
impl RegisterBlock for f32 {
    const B: usize = 8;
    #[inline(always)]
    unsafe fn block(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
        use std::arch::x86_64::*;
        // SAFETY: the caller upholds this function's `# Safety` contract: the loads read
        // the block's rows, the stores write its columns.
        unsafe {
            let mut r = [_mm256_setzero_ps(); 8];
            for (k, r) in r.iter_mut().enumerate() {
                *r = _mm256_loadu_ps(src.add(k * lds));
            }
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let out = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (k, v) in out.iter().enumerate() {
                _mm256_storeu_ps(dst.add(k * ldd), *v);
            }
        }
    }
}

/// 4 x 4.
#[cfg(target_arch = "x86_64")]
impl RegisterBlock for f64 {
    const B: usize = 4;
    #[inline(always)]
    unsafe fn block(src: *const f64, lds: usize, dst: *mut f64, ldd: usize) {
        use std::arch::x86_64::*;
        // SAFETY: as for f32, with rows and columns of 4.
        unsafe {
            let mut r = [_mm256_setzero_pd(); 4];
            for (k, r) in r.iter_mut().enumerate() {
                *r = _mm256_loadu_pd(src.add(k * lds));
            }
            let t0 = _mm256_unpacklo_pd(r[0], r[1]);
            let t1 = _mm256_unpackhi_pd(r[0], r[1]);
            let t2 = _mm256_unpacklo_pd(r[2], r[3]);
            let t3 = _mm256_unpackhi_pd(r[2], r[3]);
            let out = [
                _mm256_permute2f128_pd::<0x20>(t0, t2),
                _mm256_permute2f128_pd::<0x20>(t1, t3),
                _mm256_permute2f128_pd::<0x31>(t0, t2),
                _mm256_permute2f128_pd::<0x31>(t1, t3),
            ];
            for (k, v) in out.iter().enumerate() {
                _mm256_storeu_pd(dst.add(k * ldd), *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::transpose;

    /// Every block size around the 8 x 8 (f32) and 4 x 4 (f64) register blocks, with
    /// strides wider than the block, against the definition, in both element types.
    #[test]
    fn transposes_blocks_of_any_size_with_strides() {
        for rows in [0, 1, 3, 4, 7, 8, 9, 16, 19] {
            for cols in [0, 1, 5, 8, 12, 17] {
                let (lds, ldd) = (cols + 3, rows + 2);
                let src: Vec<f64> = (0..rows * lds).map(|i| i as f64 * 0.5 - 7.0).collect();
                let mut dst = vec![f64::NAN; cols * ldd];
                transpose(rows, cols, &src, lds, &mut dst, ldd);
                let srcf: Vec<f32> = src.iter().map(|&v| v as f32).collect();
                let mut dstf = vec![f32::NAN; cols * ldd];
                transpose(rows, cols, &srcf, lds, &mut dstf, ldd);
                for c in 0..cols {
                    for r in 0..ldd {
                        let (got, gotf) = (dst[c * ldd + r], dstf[c * ldd + r]);
                        if r < rows {
                            assert_eq!(got, src[r * lds + c], "{rows}x{cols} at ({r}, {c})");
                            assert_eq!(gotf, srcf[r * lds + c], "f32 {rows}x{cols} at ({r}, {c})");
                        } else {
                            // Past the block: untouched.
                            assert!(got.is_nan() && gotf.is_nan(), "{rows}x{cols} wrote ({r}, {c})");
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "destination block past its slice")]
    fn a_short_destination_is_refused() {
        transpose(2, 3, &[0.0f32; 6], 3, &mut [0.0f32; 5], 2);
    }
}
