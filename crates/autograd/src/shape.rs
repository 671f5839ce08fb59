//! Shapes, strides and broadcasting. A tensor is a view (shape, strides, offset) into a
//! shared buffer, so transpose, narrow and expand cost nothing until a kernel needs
//! contiguous memory.

use crate::error::{Error, Result};
use smallvec::SmallVec;

/// Dimensions of a tensor; inline up to 6 dims (no heap allocation for the usual cases).
pub type Shape = SmallVec<[usize; 6]>;
/// Element strides of a view; a stride of 0 repeats (broadcasts) a dimension.
pub type Strides = SmallVec<[usize; 6]>;

/// Most elements a tensor may have: its bytes (at most 8 per element) must fit in
/// `isize::MAX`, as a `Vec`'s must. Every shape a tensor takes is checked against it, so
/// element counts, strides and offsets computed from a tensor's shape never wrap.
pub const MAX_NUMEL: usize = isize::MAX as usize / 8;

/// The number of elements of `shape`, or a [`Error::SizeOverflow`] naming `op` when it
/// exceeds [`MAX_NUMEL`]. The product of the non-zero dims is checked too: an empty
/// tensor's strides are still computed from them.
pub fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    let nonzero = shape.iter().filter(|&&d| d != 0).try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&n| n <= MAX_NUMEL);
    match nonzero {
        Some(n) => Ok(if shape.contains(&0) { 0 } else { n }),
        None => Err(Error::overflow(op, format!("shape {} has more elements than fit in memory", crate::error::fmt_shape(shape)))),
    }
}

/// [`checked_numel`] for infallible constructors, which panic instead (as `Vec` does).
pub(crate) fn numel_or_panic(op: &'static str, shape: &[usize]) -> usize {
    checked_numel(op, shape).unwrap_or_else(|e| panic!("{e}"))
}

/// Row-major strides of a contiguous tensor of this shape.
pub fn contiguous_strides(shape: &[usize]) -> Strides {
    let mut strides: Strides = SmallVec::from_elem(0, shape.len());
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc *= shape[i];
    }
    strides
}

/// A view into a buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub shape: Shape,
    pub strides: Strides,
    pub offset: usize,
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout { shape: shape.into(), strides: contiguous_strides(shape), offset: 0 }
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// True when the view reads its elements in row-major order from one dense range.
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for i in (0..self.shape.len()).rev() {
            if self.shape[i] != 1 && self.strides[i] != acc {
                return false;
            }
            acc *= self.shape[i];
        }
        true
    }
    /// Calls `f` with the buffer position of every element, in row-major order.
    /// The innermost dimension is a tight loop; outer dims advance like an odometer.
    pub fn for_each_offset(&self, mut f: impl FnMut(usize)) {
        for_each_offset_pair(self, self, |p, _| f(p));
    }
}

/// Buffer positions of the same element in two views of one shape, in row-major order
/// (for binary ops over broadcast views: no index buffer needed).
pub fn for_each_offset_pair(a: &Layout, b: &Layout, mut f: impl FnMut(usize, usize)) {
    debug_assert_eq!(a.shape, b.shape);
    let n = a.numel();
    if n == 0 {
        return;
    }
    let rank = a.shape.len();
    if rank == 0 {
        f(a.offset, b.offset);
        return;
    }
    let inner = a.shape[rank - 1];
    let (sa, sb) = (a.strides[rank - 1], b.strides[rank - 1]);
    let mut idx: SmallVec<[usize; 6]> = SmallVec::from_elem(0, rank);
    let (mut base_a, mut base_b) = (a.offset, b.offset);
    for _ in 0..n / inner {
        let (mut p, mut q) = (base_a, base_b);
        for _ in 0..inner {
            f(p, q);
            p += sa;
            q += sb;
        }
        let mut d = rank - 1;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            base_a += a.strides[d];
            base_b += b.strides[d];
            if idx[d] < a.shape[d] {
                break;
            }
            base_a -= a.strides[d] * a.shape[d];
            base_b -= b.strides[d] * b.shape[d];
            idx[d] = 0;
        }
    }
}

/// Normalises a possibly negative dim (`-1` is the last) against `rank`.
pub fn normalize_dim(op: &'static str, dim: isize, rank: usize) -> Result<usize> {
    let r = rank as isize;
    let d = if dim < 0 { dim + r } else { dim };
    if d < 0 || d >= r.max(0) {
        return Err(Error::DimOutOfRange { op, dim, rank });
    }
    Ok(d as usize)
}

/// NumPy/PyTorch broadcasting: align trailing dims; each pair must be equal or contain a 1.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Shape> {
    let rank = a.len().max(b.len());
    let mut out: Shape = SmallVec::from_elem(1, rank);
    for i in 0..rank {
        let da = if i < rank - a.len() { 1 } else { a[i - (rank - a.len())] };
        let db = if i < rank - b.len() { 1 } else { b[i - (rank - b.len())] };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::shape(op, "shapes cannot be broadcast together", a, b));
        };
    }
    checked_numel(op, &out)?;
    Ok(out)
}
