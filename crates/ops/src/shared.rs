//! Pieces the op front-ends share: the one way parallel tasks write into a shared output
//! buffer, and the gradient list of an op with optional affine parameters.

use autograd::Tensor;

/// Appends the affine parameters' gradients to `grads` in input order: `dw` if the op
/// took a weight, `db` if it took a bias (the normalisation ops' optional `weight, bias`).
pub(crate) fn push_affine_grads(grads: &mut Vec<Option<Tensor>>, (dw, db): (Tensor, Tensor), has_w: bool, has_b: bool) {
    if has_w {
        grads.push(Some(dw));
    }
    if has_b {
        grads.push(Some(db));
    }
}

/// A raw pointer to an output buffer of `len` values that parallel tasks write in disjoint
/// ranges (samples, tiles, partial sums).
pub(crate) struct SharedOut<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: a `SharedOut` only hands out ranges through `slice`, whose callers guarantee
// the ranges of concurrent tasks are disjoint, so sending it or sharing it between threads
// cannot create aliasing mutable access; `T: Send` because values are written from other
// threads.
unsafe impl<T: Send> Send for SharedOut<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// Wraps `buf`, which must outlive every use of the returned value.
    pub(crate) fn new(buf: &mut [T]) -> Self {
        SharedOut { ptr: buf.as_mut_ptr(), len: buf.len() }
    }

    /// Values `start..start + len` of the buffer. Panics when the range is outside it.
    ///
    /// # Safety
    /// The buffer is alive, and no other live reference (from any thread) overlaps the range.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(
            start.checked_add(len).is_some_and(|end| end <= self.len),
            "SharedOut: range {start}+{len} outside a buffer of {}",
            self.len
        );
        // SAFETY: the range is inside the buffer (asserted); the caller guarantees the
        // buffer is alive and the range is not aliased.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// The buffer's start, for kernels that write through raw tile pointers.
    pub(crate) fn ptr(&self) -> *mut T {
        self.ptr
    }
}
