//! Shape ops. Reshape of a contiguous tensor, permute, narrow and expand are views: they
//! share the buffer and only change (shape, strides, offset). Cat copies. Each op's
//! gradient is the inverse shape op on the gradient.

use crate::error::{Error, Result};
use crate::shape::{checked_numel, contiguous_strides, normalize_dim, Layout};
use crate::tape::record;
use crate::tensor::Tensor;

impl Tensor {
    fn view(&self, layout: Layout) -> Tensor {
        Tensor::from_parts(self.0.storage.clone(), layout)
    }

    /// New shape with the same elements; one entry may be `-1` (inferred), as in PyTorch.
    pub fn reshape(&self, shape: &[isize]) -> Result<Tensor> {
        let mut inferred = None;
        let mut known = 1usize;
        for (i, &s) in shape.iter().enumerate() {
            if s == -1 {
                if inferred.replace(i).is_some() {
                    return Err(Error::invalid_shape("reshape", format!("only one dimension can be inferred in {shape:?}"), self.shape()));
                }
            } else if s < 0 {
                return Err(Error::invalid_shape("reshape", format!("invalid size {s} in {shape:?}"), self.shape()));
            } else {
                known = known.checked_mul(s as usize).ok_or_else(|| {
                    Error::invalid_shape("reshape", format!("shape {shape:?} is invalid for {} elements", self.numel()), self.shape())
                })?;
            }
        }
        let mut out: Vec<usize> = shape.iter().map(|&s| s.max(0) as usize).collect();
        if let Some(i) = inferred {
            if known == 0 || !self.numel().is_multiple_of(known) {
                return Err(Error::invalid_shape(
                    "reshape",
                    format!("shape {shape:?} is invalid for {} elements", self.numel()),
                    self.shape(),
                ));
            }
            out[i] = self.numel() / known;
        }
        self.reshape_to(&out)
    }

    /// Reshape to an explicit shape (no inference).
    pub fn reshape_to(&self, shape: &[usize]) -> Result<Tensor> {
        if checked_numel("reshape", shape)? != self.numel() {
            return Err(Error::invalid_shape("reshape", format!("shape {shape:?} is invalid for {} elements", self.numel()), self.shape()));
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let src = if self.is_contiguous() { self.clone() } else { self.contiguous() };
        let out = src.view(Layout { shape: shape.into(), strides: contiguous_strides(shape), offset: src.layout().offset });
        Ok(record("reshape", out, &[&src], |ctx| Ok(vec![Some(ctx.grad_output().reshape_to(ctx.input(0).shape())?)])))
    }

    /// Reorders dims: output dim `i` is input dim `dims[i]` (a view).
    pub fn permute(&self, dims: &[isize]) -> Result<Tensor> {
        let rank = self.rank();
        if dims.len() != rank {
            return Err(Error::invalid_shape("permute", format!("{dims:?} has {} dims, the tensor {rank}", dims.len()), self.shape()));
        }
        let mut perm = Vec::with_capacity(rank);
        for &d in dims {
            let d = normalize_dim("permute", d, rank)?;
            if perm.contains(&d) {
                return Err(Error::invalid_shape("permute", format!("repeated dim in {dims:?}"), self.shape()));
            }
            perm.push(d);
        }
        let l = self.layout();
        let out = self.view(Layout {
            shape: perm.iter().map(|&p| l.shape[p]).collect(),
            strides: perm.iter().map(|&p| l.strides[p]).collect(),
            offset: l.offset,
        });
        let mut inverse = vec![0isize; rank];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i as isize;
        }
        Ok(record("permute", out, &[self], move |ctx| Ok(vec![Some(ctx.grad_output().permute(&inverse)?)])))
    }

    /// Swaps two dims (a view).
    pub fn transpose(&self, d0: isize, d1: isize) -> Result<Tensor> {
        let rank = self.rank();
        let (a, b) = (normalize_dim("transpose", d0, rank)?, normalize_dim("transpose", d1, rank)?);
        let mut perm: Vec<isize> = (0..rank as isize).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Transpose of a 2-d tensor.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::invalid_shape("t", "expects a 2-d tensor", self.shape()));
        }
        self.transpose(0, 1)
    }

    /// `len` entries of `dim` starting at `start` (a view).
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = normalize_dim("narrow", dim, self.rank())?;
        if len > self.shape()[d] || start > self.shape()[d] - len {
            return Err(Error::invalid_shape(
                "narrow",
                format!("start {start} + length {len} exceeds dim {d} of size {}", self.shape()[d]),
                self.shape(),
            ));
        }
        let l = self.layout();
        let mut shape = l.shape.clone();
        shape[d] = len;
        let out = self.view(Layout { shape, strides: l.strides.clone(), offset: l.offset + start * l.strides[d] });
        let full = self.shape()[d];
        Ok(record("narrow", out, &[self], move |ctx| Ok(vec![Some(ctx.grad_output().unnarrow(d, start, full)?)])))
    }

    /// The adjoint of `narrow(d, start, len)`: `self` (of length `len` in dim `d`) placed at
    /// `start` in a zero tensor of length `full` there. One copy of contiguous runs: a
    /// convolution whose border taps are cropped (`ops::conv2d`) takes its weight's
    /// gradient through here at every step. Differentiable: its own gradient is the narrow.
    pub(crate) fn unnarrow(&self, d: usize, start: usize, full: usize) -> Result<Tensor> {
        let len = self.shape()[d];
        let mut shape = self.shape().to_vec();
        shape[d] = full;
        let n = checked_numel("narrow", &shape)?;
        let outer: usize = shape[..d].iter().product();
        let inner: usize = shape[d + 1..].iter().product();
        let (run, stride) = (len * inner, full * inner);
        let storage = crate::dispatch_all!(self.storage(), |_s: T| {
            let g = self.contiguous_data::<T>()?;
            let mut out = vec![T::default(); n];
            if run > 0 {
                for (o, src) in g.chunks_exact(run).enumerate().take(outer) {
                    let at = o * stride + start * inner;
                    out[at..at + run].copy_from_slice(src);
                }
            }
            T::into_storage(out)
        });
        let out = Tensor::from_storage(storage, &shape);
        Ok(record("narrow_backward", out, &[self], move |ctx| Ok(vec![Some(ctx.grad_output().narrow(d as isize, start, len)?)])))
    }

    /// Joins tensors along an existing dim; all other dims must agree.
    pub fn cat(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("cat", "expects a non-empty list of tensors"))?;
        let d = normalize_dim("cat", dim, first.rank())?;
        for t in &tensors[1..] {
            if t.dtype() != first.dtype() {
                return Err(Error::DTypeMismatch { op: "cat", lhs: first.dtype(), rhs: t.dtype() });
            }
            let ok = t.rank() == first.rank() && t.shape().iter().zip(first.shape()).enumerate().all(|(i, (a, b))| i == d || a == b);
            if !ok {
                return Err(Error::shape("cat", format!("sizes must match except in dim {d}"), first.shape(), t.shape()));
            }
        }
        let outer: usize = first.shape()[..d].iter().product();
        let inner: usize = first.shape()[d + 1..].iter().product();
        let total = tensors.iter().try_fold(0usize, |a, t| a.checked_add(t.shape()[d]));
        let mut shape = first.shape().to_vec();
        shape[d] = total.ok_or_else(|| Error::overflow("cat", format!("dim {d} of the result overflows")))?;
        checked_numel("cat", &shape)?;
        let total = shape[d];
        let storage = crate::dispatch_all!(first.storage(), |_s: T| {
            let parts: Vec<_> = tensors.iter().map(|t| t.contiguous_data::<T>()).collect::<Result<_>>()?;
            let mut out = Vec::with_capacity(outer * total * inner);
            for o in 0..outer {
                for (t, p) in tensors.iter().zip(&parts) {
                    let w = t.shape()[d] * inner;
                    out.extend_from_slice(&p[o * w..(o + 1) * w]);
                }
            }
            T::into_storage(out)
        });
        let out = Tensor::from_storage(storage, &shape);
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[d]).collect();
        Ok(record("cat", out, tensors, move |ctx| {
            let mut start = 0;
            let mut grads = Vec::with_capacity(sizes.len());
            for (i, &n) in sizes.iter().enumerate() {
                grads.push(if ctx.needs_grad(i) { Some(ctx.grad_output().narrow(d as isize, start, n)?) } else { None });
                start += n;
            }
            Ok(grads)
        }))
    }

    /// Joins same-shaped tensors along a new dim.
    pub fn stack(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("stack", "expects a non-empty list of tensors"))?;
        for t in &tensors[1..] {
            if t.dtype() != first.dtype() {
                return Err(Error::DTypeMismatch { op: "stack", lhs: first.dtype(), rhs: t.dtype() });
            }
            if t.shape() != first.shape() {
                return Err(Error::shape("stack", "all tensors must have the same shape", first.shape(), t.shape()));
            }
        }
        let d = normalize_dim("stack", dim, first.rank() + 1)?;
        let parts: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(d as isize)).collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = parts.iter().collect();
        Tensor::cat(&refs, d as isize)
    }

    /// Merges dims `start..=end` into one.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape_to(&[1]);
        }
        let (s, e) = (normalize_dim("flatten", start, self.rank())?, normalize_dim("flatten", end, self.rank())?);
        if s > e {
            return Err(Error::invalid_shape("flatten", format!("start dim {start} comes after end dim {end}"), self.shape()));
        }
        let mut shape: Vec<usize> = self.shape()[..s].to_vec();
        shape.push(self.shape()[s..=e].iter().product());
        shape.extend_from_slice(&self.shape()[e + 1..]);
        self.reshape_to(&shape)
    }

    /// Removes a size-1 dim (an error if its size is not 1).
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = normalize_dim("squeeze", dim, self.rank())?;
        if self.shape()[d] != 1 {
            return Err(Error::invalid_shape("squeeze", format!("dim {d} has size {}, not 1", self.shape()[d]), self.shape()));
        }
        let mut shape = self.shape().to_vec();
        shape.remove(d);
        self.reshape_to(&shape)
    }

    /// Inserts a size-1 dim at `dim` (`-1` appends).
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let d = normalize_dim("unsqueeze", dim, self.rank() + 1)?;
        let mut shape = self.shape().to_vec();
        shape.insert(d, 1);
        self.reshape_to(&shape)
    }

    /// Broadcasts to `shape` without copying (repeated dims get stride 0). The gradient
    /// sums back over the repeated dims.
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let b = crate::shape::broadcast_shapes("expand", self.shape(), shape)?;
        if b.as_slice() != shape {
            return Err(Error::shape("expand", "cannot expand to a smaller shape", self.shape(), shape));
        }
        let layout = crate::elementwise::broadcast_layout(self.layout(), shape);
        let out = self.view(layout);
        Ok(record("expand", out, &[self], |ctx| Ok(vec![Some(ctx.grad_output().sum_to(ctx.input(0).shape())?)])))
    }
}
