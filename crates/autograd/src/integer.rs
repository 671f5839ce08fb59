//! Element-wise arithmetic on i64 tensors, as far as index computations need it: `add`,
//! `sub` and `mul` (through the float ops' front-ends), `floor_divide` and `remainder`.
//! Overflow wraps, as PyTorch's does (never a debug-build panic); division by zero is an
//! error naming the op (PyTorch raises `ZeroDivisionError`). None of it has a gradient:
//! integer tensors never require grad.

use crate::dtype::{DType, Storage};
use crate::elementwise::broadcast_layout;
use crate::error::{Error, Result};
use crate::shape::{broadcast_shapes, for_each_offset_pair};
use crate::tensor::Tensor;

/// `f(a, b)` over the broadcast of two i64 tensors; the first error stops it.
pub(crate) fn broadcast_i64(op: &'static str, a: &Tensor, b: &Tensor, f: impl Fn(i64, i64) -> Option<i64>) -> Result<Tensor> {
    let (Storage::I64(x), Storage::I64(y)) = (a.storage(), b.storage()) else {
        let other = if a.dtype() == DType::I64 { b } else { a };
        return Err(Error::UnsupportedDType { op, dtype: other.dtype() });
    };
    let shape = broadcast_shapes(op, a.shape(), b.shape())?;
    let (la, lb) = (broadcast_layout(a.layout(), &shape), broadcast_layout(b.layout(), &shape));
    let mut out = Vec::with_capacity(la.numel());
    let mut failed = false;
    for_each_offset_pair(&la, &lb, |p, q| match f(x[p], y[q]) {
        Some(v) => out.push(v),
        None => {
            failed = true;
            out.push(0);
        }
    });
    if failed {
        return Err(Error::invalid(op, "integer division by zero"));
    }
    Ok(Tensor::from_storage(Storage::I64(out), &shape))
}

/// `floor(a / b)`, rounding toward negative infinity as Python's `//`; wraps for
/// `i64::MIN // -1`; `None` for a zero divisor.
fn floor_div(a: i64, b: i64) -> Option<i64> {
    if b == 0 {
        return None;
    }
    let q = a.wrapping_div(b);
    Some(if a.wrapping_rem(b) != 0 && ((a < 0) != (b < 0)) { q - 1 } else { q })
}

/// `a - floor(a / b) * b`: the remainder with the divisor's sign, as Python's `%`.
fn floor_rem(a: i64, b: i64) -> Option<i64> {
    if b == 0 {
        return None;
    }
    let r = a.wrapping_rem(b);
    Some(if r != 0 && ((r < 0) != (b < 0)) { r + b } else { r })
}

impl Tensor {
    /// `floor(self / rhs)` element-wise with broadcasting, for i64 tensors
    /// (`torch.floor_divide`); division by zero is an error.
    pub fn floor_divide(&self, rhs: &Tensor) -> Result<Tensor> {
        broadcast_i64("floor_divide", self, rhs, floor_div)
    }

    /// `self - floor(self / rhs) * rhs` element-wise with broadcasting, for i64 tensors
    /// (`torch.remainder`: the result has the divisor's sign); division by zero is an error.
    pub fn remainder(&self, rhs: &Tensor) -> Result<Tensor> {
        broadcast_i64("remainder", self, rhs, floor_rem)
    }
}

#[cfg(test)]
mod tests {
    use super::{floor_div, floor_rem};

    #[test]
    fn floor_division_matches_python() {
        // (a, b, a // b, a % b) as Python computes them.
        for (a, b, q, r) in [(7, 2, 3, 1), (-7, 2, -4, 1), (7, -2, -4, -1), (-7, -2, 3, -1), (6, 3, 2, 0), (-6, 3, -2, 0), (0, -5, 0, 0)] {
            assert_eq!((floor_div(a, b), floor_rem(a, b)), (Some(q), Some(r)), "{a} {b}");
        }
        assert_eq!(floor_div(i64::MIN, -1), Some(i64::MIN), "wraps as PyTorch");
        assert_eq!(floor_rem(i64::MIN, -1), Some(0));
        assert_eq!((floor_div(1, 0), floor_rem(1, 0)), (None, None));
    }
}
