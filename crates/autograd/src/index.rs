//! `index_select` and its adjoint `index_add`, taking i64 index tensors as PyTorch does.
//! Each one's gradient rule is the other, so both are differentiable again.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::{checked_numel, normalize_dim};
use crate::tape::record;
use crate::tensor::Tensor;

/// The entries of a 1-d i64 index tensor as positions along a dim of `size`, or an error
/// naming `op` (a negative or too large index, a float tensor, another rank).
fn positions(op: &'static str, index: &Tensor, size: usize) -> Result<Vec<usize>> {
    if index.dtype() != DType::I64 || index.rank() != 1 {
        return Err(Error::invalid(op, format!("the index must be a 1-d i64 tensor, got {} {:?}", index.dtype(), index.shape())));
    }
    index
        .contiguous_data::<i64>()?
        .iter()
        .map(|&i| {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < size)
                .ok_or_else(|| Error::invalid(op, format!("index {i} out of range for a dim of size {size}")))
        })
        .collect()
}

/// `(outer, size of dim, inner)` of a shape around `dim`.
fn around(shape: &[usize], d: usize) -> (usize, usize, usize) {
    (shape[..d].iter().product(), shape[d], shape[d + 1..].iter().product())
}

impl Tensor {
    /// The slices `index[k]` of `dim`, in the index's order (`torch.index_select`): the
    /// result has `index.len()` entries along `dim`. Differentiable in this tensor: the
    /// gradient adds each output slice back where it came from ([`Tensor::index_add`]).
    pub fn index_select(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        self.check_float("index_select")?;
        let d = normalize_dim("index_select", dim, self.rank())?;
        let pos = positions("index_select", index, self.shape()[d])?;
        let mut shape = self.shape().to_vec();
        shape[d] = pos.len();
        checked_numel("index_select", &shape)?;
        let (outer, r, inner) = around(self.shape(), d);
        let storage = crate::dispatch!("index_select", self.storage(), |_s: T| {
            let x = self.contiguous_data::<T>()?;
            let mut out = Vec::with_capacity(outer * pos.len() * inner);
            for o in 0..outer {
                for &p in &pos {
                    out.extend_from_slice(&x[(o * r + p) * inner..][..inner]);
                }
            }
            T::into_storage(out)
        });
        let out = Tensor::from_storage(storage, &shape);
        let index = index.clone();
        Ok(record("index_select", out, &[self], move |ctx| {
            Ok(vec![Some(ctx.grad_output().index_add(dim, &index, ctx.input(0).shape())?)])
        }))
    }

    /// A zero tensor of `shape` with slice `k` of this tensor along `dim` added at
    /// `index[k]` (repeated indices add up): the adjoint of [`Tensor::index_select`].
    pub fn index_add(&self, dim: isize, index: &Tensor, shape: &[usize]) -> Result<Tensor> {
        self.check_float("index_add")?;
        let d = normalize_dim("index_add", dim, shape.len())?;
        checked_numel("index_add", shape)?;
        let pos = positions("index_add", index, shape[d])?;
        let mut want = shape.to_vec();
        want[d] = pos.len();
        if self.shape() != want.as_slice() {
            return Err(Error::mismatch(
                "index_add",
                "the source must match the shape with the index's length at dim",
                self.shape(),
                &want,
            ));
        }
        let (outer, r, inner) = around(shape, d);
        let storage = crate::dispatch!("index_add", self.storage(), |_s: T| {
            let src = self.contiguous_data::<T>()?;
            let mut out = crate::buffers::zeroed::<T>(outer * r * inner);
            for o in 0..outer {
                for (k, &p) in pos.iter().enumerate() {
                    let from = &src[(o * pos.len() + k) * inner..][..inner];
                    out[(o * r + p) * inner..][..inner].iter_mut().zip(from).for_each(|(a, &b)| *a += b);
                }
            }
            T::into_storage(out)
        });
        let out = Tensor::from_storage(storage, shape);
        let index = index.clone();
        Ok(record("index_add", out, &[self], move |ctx| Ok(vec![Some(ctx.grad_output().index_select(dim, &index)?)])))
    }
}
