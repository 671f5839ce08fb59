//! Constructors with a structure: the identity matrix and evenly spaced values. Sizes
//! come from arguments, so they are checked (`Error::SizeOverflow` naming the op) instead
//! of panicking as the plain fills do.

use crate::dtype::{DType, Element, Storage};
use crate::error::{Error, Result};
use crate::shape::checked_numel;
use crate::tensor::Tensor;

impl Tensor {
    /// The `n x m` f32 matrix with ones on the diagonal (`torch.eye(n, m)`).
    pub fn eye(n: usize, m: usize) -> Result<Tensor> {
        Self::eye_dtype(n, m, DType::F32)
    }

    /// [`Tensor::eye`] of any dtype (bool: `true` on the diagonal).
    pub fn eye_dtype(n: usize, m: usize, dtype: DType) -> Result<Tensor> {
        let len = checked_numel("eye", &[n, m])?;
        let diag = n.min(m);
        let storage = match dtype {
            DType::F32 => Storage::F32(diagonal(len, m, diag, 0.0, 1.0)),
            DType::F64 => Storage::F64(diagonal(len, m, diag, 0.0, 1.0)),
            DType::I64 => Storage::I64(diagonal(len, m, diag, 0, 1)),
            DType::Bool => Storage::Bool(diagonal(len, m, diag, false, true)),
        };
        Ok(Tensor::from_storage(storage, &[n, m]))
    }

    /// `steps` f32 values from `start` to `end` inclusive, evenly spaced
    /// (`torch.linspace`).
    pub fn linspace(start: f64, end: f64, steps: usize) -> Result<Tensor> {
        Self::linspace_dtype(start, end, steps, DType::F32)
    }

    /// [`Tensor::linspace`] in f32 or f64, computed in that dtype as PyTorch's CPU kernel
    /// does: `start + i step` for the first half and `end - (steps - 1 - i) step` for the
    /// rest (each one fused multiply-add, as the kernel compiles), so both ends are exact
    /// and the values are PyTorch's bits. Integer dtypes are refused.
    pub fn linspace_dtype(start: f64, end: f64, steps: usize, dtype: DType) -> Result<Tensor> {
        checked_numel("linspace", &[steps])?;
        let storage = match dtype {
            DType::F32 => Storage::F32(spaced(start as f32, end as f32, steps)),
            DType::F64 => Storage::F64(spaced(start, end, steps)),
            other => return Err(Error::UnsupportedDType { op: "linspace", dtype: other }),
        };
        Ok(Tensor::from_storage(storage, &[steps]))
    }
}

/// A row-major `[len / m, m]` buffer of `zero` with `one` at `(i, i)` for `i < diag`.
fn diagonal<T: Copy>(len: usize, m: usize, diag: usize, zero: T, one: T) -> Vec<T> {
    let mut v = vec![zero; len];
    // i (m + 1) < len for every i < diag = min(n, m), since len = n m.
    (0..diag).for_each(|i| v[i * m + i] = one);
    v
}

fn spaced<T: Element>(start: T, end: T, steps: usize) -> Vec<T> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / T::from_f64((steps - 1) as f64);
    let half = steps / 2;
    (0..steps)
        .map(
            |i| {
                if i < half {
                    step.mul_add(T::from_f64(i as f64), start)
                } else {
                    (-step).mul_add(T::from_f64((steps - 1 - i) as f64), end)
                }
            },
        )
        .collect()
}
