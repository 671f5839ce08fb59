//! Indexing with i64 index tensors, as PyTorch's: `index_select` and its adjoint
//! `index_add` (whole slices along a dim), `gather` and its adjoint `scatter_add` (one
//! element per index position). Each pair's gradient rules are each other, so all four are
//! differentiable again. Selecting works on every dtype; adding on floats and i64 (which
//! wraps, as PyTorch's). Indices are checked once, before any kernel runs: a negative or
//! too large index is an error naming the op.

use crate::dtype::{DType, Scalar, Storage};
use crate::error::{Error, Result};
use crate::shape::{checked_numel, normalize_dim, Layout};
use crate::tape::{record_saving, Saves};
use crate::tensor::Tensor;
use std::sync::Arc;

/// The entries of an i64 index tensor as positions along a dim of `size`, or an error
/// naming `op` (a negative or too large index, a float tensor).
fn positions(op: &'static str, index: &Tensor, size: usize) -> Result<Vec<usize>> {
    if index.dtype() != DType::I64 {
        return Err(Error::invalid(op, format!("the index must be an i64 tensor, got {} {:?}", index.dtype(), index.shape())));
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

/// Adds element-wise into `dst`: floats add, i64 wraps on overflow (as PyTorch's), bool
/// is refused by the callers before any kernel runs.
trait AddInto: Fresh {
    fn add_to(dst: &mut Self, v: Self);
}
impl AddInto for f32 {
    fn add_to(dst: &mut f32, v: f32) {
        *dst += v;
    }
}
impl AddInto for f64 {
    fn add_to(dst: &mut f64, v: f64) {
        *dst += v;
    }
}
impl AddInto for i64 {
    fn add_to(dst: &mut i64, v: i64) {
        *dst = dst.wrapping_add(v);
    }
}

/// Runs `$body` with `$T` the element type of a float or i64 storage (an [`AddInto`]);
/// a bool storage returns `UnsupportedDType` naming `$op`.
macro_rules! dispatch_add {
    ($op:expr, $storage:expr, |$T:ident| $body:expr) => {
        match $storage {
            Storage::F32(_) => {
                type $T = f32;
                $body
            }
            Storage::F64(_) => {
                type $T = f64;
                $body
            }
            Storage::I64(_) => {
                type $T = i64;
                $body
            }
            Storage::Bool(_) => return Err(Error::UnsupportedDType { op: $op, dtype: DType::Bool }),
        }
    };
}

/// A fresh zeroed buffer: floats come from the recycled-buffer cache (`buffers`), so a
/// gather or scatter in a warm training step allocates nothing new.
trait Fresh: Scalar {
    fn fresh(len: usize) -> Vec<Self> {
        vec![Self::default(); len]
    }
}
impl Fresh for f32 {
    fn fresh(len: usize) -> Vec<f32> {
        crate::buffers::zeroed(len)
    }
}
impl Fresh for f64 {
    fn fresh(len: usize) -> Vec<f64> {
        crate::buffers::zeroed(len)
    }
}
impl Fresh for i64 {}
impl Fresh for bool {}

/// The contiguous data of `base`, or zeros when there is none: the start of an add-into
/// result of `len` elements.
fn start_from<T: Fresh>(base: Option<&Tensor>, len: usize) -> Result<Vec<T>> {
    let mut out = T::fresh(len);
    if let Some(b) = base {
        out.copy_from_slice(&b.contiguous_data::<T>()?);
    }
    Ok(out)
}

/// Where each element of a `gather` index reads in the indexed tensor (and a
/// `scatter_add` writes): flat offsets into the contiguous indexed tensor of shape
/// `xshape`, one per index position in row-major order over `ishape`. Computed once in
/// the forward and shared with the gradient rules.
struct Offsets {
    at: Vec<usize>,
    ishape: Vec<usize>,
    xshape: Vec<usize>,
}

impl Offsets {
    /// Checks `ishape` against `xshape` (same rank; no larger than it off `d`, as PyTorch
    /// requires) and `pos` against the size of dim `d`, then walks the index's positions.
    fn new(op: &'static str, xshape: &[usize], d: usize, pos: &[usize], ishape: &[usize]) -> Result<Offsets> {
        if ishape.len() != xshape.len() || ishape.iter().zip(xshape).enumerate().any(|(a, (i, x))| a != d && i > x) {
            return Err(Error::shape(op, format!("the index must have the input's rank and be no larger off dim {d}"), xshape, ishape));
        }
        checked_numel(op, xshape)?;
        if pos.len() != checked_numel(op, ishape)? {
            return Err(Error::invalid(op, format!("{} indices for index shape {:?}", pos.len(), ishape)));
        }
        if let Some(&bad) = pos.iter().find(|&&p| p >= xshape[d]) {
            return Err(Error::invalid(op, format!("index {bad} out of range for dim {d} of size {}", xshape[d])));
        }
        // Row-major strides of the indexed tensor; every offset below is < numel(xshape),
        // which `checked_numel` bounded, since each coordinate is below its dim's size.
        let mut strides = vec![1usize; xshape.len()];
        for a in (0..xshape.len().saturating_sub(1)).rev() {
            strides[a] = strides[a + 1] * xshape[a + 1];
        }
        let mut coord = vec![0usize; ishape.len()];
        let mut at = Vec::with_capacity(pos.len());
        for &p in pos {
            let off: usize = coord.iter().zip(&strides).enumerate().map(|(a, (&c, &s))| if a == d { p * s } else { c * s }).sum();
            at.push(off);
            // Next position of the odometer over `ishape`.
            for a in (0..ishape.len()).rev() {
                coord[a] += 1;
                if coord[a] < ishape[a] {
                    break;
                }
                coord[a] = 0;
            }
        }
        Ok(Offsets { at, ishape: ishape.to_vec(), xshape: xshape.to_vec() })
    }
}

/// The buffer position of element `flat` (row-major) of a view: `flat` is below the
/// view's element count, so the position lies inside the buffer the view was checked
/// against when it was made.
fn strided(layout: &Layout, mut flat: usize) -> usize {
    let mut at = layout.offset;
    for (&n, &st) in layout.shape.iter().zip(&layout.strides).rev() {
        at += (flat % n) * st;
        flat /= n;
    }
    at
}

impl Tensor {
    /// The slices `index[k]` of `dim`, in the index's order (`torch.index_select`), for a
    /// 1-d i64 `index`: the result has `index.len()` entries along `dim`. Works on every
    /// dtype; differentiable in a float tensor (the gradient adds each output slice back
    /// where it came from, with [`Tensor::index_add`]).
    pub fn index_select(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        let d = normalize_dim("index_select", dim, self.rank())?;
        if index.rank() != 1 {
            return Err(Error::invalid("index_select", format!("the index must be 1-d, got {} {:?}", index.dtype(), index.shape())));
        }
        let pos = positions("index_select", index, self.shape()[d])?;
        let mut shape = self.shape().to_vec();
        shape[d] = pos.len();
        checked_numel("index_select", &shape)?;
        let (outer, r, inner) = around(self.shape(), d);
        let storage = crate::dispatch_all!(self.storage(), |_s: T| {
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
        Ok(record_saving("index_select", out, &[self], Saves::NOTHING, move |ctx| {
            Ok(vec![Some(ctx.grad_output().index_add_into(None, dim, &index, ctx.input_shape(0))?)])
        }))
    }

    /// This tensor with slice `k` of `source` along `dim` added at `index[k]` (repeated
    /// indices add up), as `torch.index_add`: the adjoint of [`Tensor::index_select`].
    /// `source` has this tensor's shape except `index.len()` at `dim`. Floats and i64 (which
    /// wraps); differentiable in both float tensors.
    pub fn index_add(&self, dim: isize, index: &Tensor, source: &Tensor) -> Result<Tensor> {
        if self.dtype() != source.dtype() {
            return Err(Error::DTypeMismatch { op: "index_add", lhs: self.dtype(), rhs: source.dtype() });
        }
        source.index_add_into(Some(self), dim, index, self.shape())
    }

    /// `base` (or zeros of `shape`) with this tensor's slices added at `index` along `dim`.
    fn index_add_into(&self, base: Option<&Tensor>, dim: isize, index: &Tensor, shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "index_add";
        let d = normalize_dim(OP, dim, shape.len())?;
        checked_numel(OP, shape)?;
        if index.rank() != 1 {
            return Err(Error::invalid(OP, format!("the index must be 1-d, got {} {:?}", index.dtype(), index.shape())));
        }
        let pos = positions(OP, index, shape[d])?;
        let mut want = shape.to_vec();
        want[d] = pos.len();
        if self.shape() != want.as_slice() {
            return Err(Error::mismatch(OP, "the source must match the input with the index's length at dim", self.shape(), &want));
        }
        let (outer, r, inner) = around(shape, d);
        let storage = dispatch_add!(OP, self.storage(), |T| {
            let src = self.contiguous_data::<T>()?;
            let mut out = start_from::<T>(base, outer * r * inner)?;
            for o in 0..outer {
                for (k, &p) in pos.iter().enumerate() {
                    let from = &src[(o * pos.len() + k) * inner..][..inner];
                    out[(o * r + p) * inner..][..inner].iter_mut().zip(from).for_each(|(a, &b)| T::add_to(a, b));
                }
            }
            T::into_storage(out)
        });
        let out = Tensor::from_storage(storage, shape);
        let index = index.clone();
        let has_base = base.is_some();
        let rule = move |ctx: &crate::tape::BackwardCtx| -> Result<Vec<Option<Tensor>>> {
            let g = ctx.grad_output();
            let gs = Some(g.index_select(dim, &index)?);
            Ok(if has_base { vec![Some(g.clone()), gs] } else { vec![gs] })
        };
        Ok(match base {
            Some(b) => record_saving(OP, out, &[b, self], Saves::NOTHING, rule),
            None => record_saving(OP, out, &[self], Saves::NOTHING, rule),
        })
    }

    /// Picks elements along `dim`: `out[.., j, ..] = x[.., index[.., j, ..], ..]`, as
    /// `torch.gather`. `index` is an i64 tensor of this tensor's rank, no larger off `dim`;
    /// the result has its shape. Works on every dtype; differentiable in a float tensor
    /// (the gradient scatters back and adds, [`Tensor::scatter_add`]).
    pub fn gather(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        let d = normalize_dim("gather", dim, self.rank())?;
        let pos = positions("gather", index, self.shape()[d])?;
        let map = Offsets::new("gather", self.shape(), d, &pos, index.shape())?;
        Ok(self.take(Arc::new(map)))
    }

    /// [`Tensor::gather`] with positions already checked by the caller (`max_dim`).
    pub(crate) fn gather_positions(&self, d: usize, pos: &[usize], ishape: &[usize]) -> Result<Tensor> {
        let map = Offsets::new("gather", self.shape(), d, pos, ishape)?;
        Ok(self.take(Arc::new(map)))
    }

    /// This tensor with `src[p]` added at position `index[p]` along `dim` for every index
    /// position `p` (repeated positions add up), as `torch.scatter_add`: the adjoint of
    /// [`Tensor::gather`]. `index` is an i64 tensor of this tensor's rank, no larger off
    /// `dim`; `src` has the index's shape (PyTorch also takes a larger `src` and ignores
    /// the rest: that is an error here). Floats and i64 (which wraps); differentiable in
    /// both float tensors.
    pub fn scatter_add(&self, dim: isize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        const OP: &str = "scatter_add";
        if self.dtype() != src.dtype() {
            return Err(Error::DTypeMismatch { op: OP, lhs: self.dtype(), rhs: src.dtype() });
        }
        let d = normalize_dim(OP, dim, self.rank())?;
        if src.shape() != index.shape() {
            return Err(Error::mismatch(OP, "the source and the index must have one shape", src.shape(), index.shape()));
        }
        let pos = positions(OP, index, self.shape()[d])?;
        let map = Offsets::new(OP, self.shape(), d, &pos, index.shape())?;
        src.put_add(Some(self), Arc::new(map))
    }

    /// Gather through precomputed offsets; the output has the index's shape.
    /// A strided view is read in place, never copied whole: a gather may pick a few
    /// elements of a large broadcast tensor.
    fn take(&self, map: Arc<Offsets>) -> Tensor {
        let storage = crate::dispatch_all!(self.storage(), |s: T| {
            let mut out = <T as Fresh>::fresh(map.at.len());
            match self.as_slice::<T>() {
                Some(x) => out.iter_mut().zip(&map.at).for_each(|(d, &o)| *d = x[o]),
                None => out.iter_mut().zip(&map.at).for_each(|(d, &o)| *d = s[strided(self.layout(), o)]),
            }
            T::into_storage(out)
        });
        let out = Tensor::from_storage(storage, &map.ishape);
        record_saving("gather", out, &[self], Saves::NOTHING, move |ctx| Ok(vec![Some(ctx.grad_output().put_add(None, map.clone())?)]))
    }

    /// `base` (or zeros of the indexed shape) with this tensor's elements added at the
    /// offsets, in index order (so sums are reproducible).
    fn put_add(&self, base: Option<&Tensor>, map: Arc<Offsets>) -> Result<Tensor> {
        const OP: &str = "scatter_add";
        let storage = dispatch_add!(OP, self.storage(), |T| {
            let src = self.contiguous_data::<T>()?;
            let mut out = start_from::<T>(base, map.xshape.iter().product())?;
            for (&o, &v) in map.at.iter().zip(src.iter()) {
                T::add_to(&mut out[o], v);
            }
            T::into_storage(out)
        });
        let out = Tensor::from_storage(storage, &map.xshape);
        let has_base = base.is_some();
        let rule = move |ctx: &crate::tape::BackwardCtx| -> Result<Vec<Option<Tensor>>> {
            let g = ctx.grad_output();
            let gs = Some(g.take(map.clone()));
            Ok(if has_base { vec![Some(g.clone()), gs] } else { vec![gs] })
        };
        Ok(match base {
            Some(b) => record_saving(OP, out, &[b, self], Saves::NOTHING, rule),
            None => record_saving(OP, out, &[self], Saves::NOTHING, rule),
        })
    }
}
