//! The tensor: a cheap-to-clone handle to a view of a shared buffer, plus the graph edge
//! (`grad_fn`) that produced it. Tensors are immutable; ops return new tensors.

use crate::dtype::{DType, Scalar, Storage};
use crate::error::{Error, Result};
use crate::shape::{checked_numel, numel_or_panic, Layout};
use crate::tape::{GradSlot, Node};
use std::sync::{Arc, Mutex};

/// An n-dimensional array of f32 or f64 that may take part in automatic differentiation.
///
/// Cloning is cheap (an `Arc` bump). Leaves that require grad own a gradient slot that
/// `backward` accumulates into; results of ops carry the tape entry (`grad_fn`) that made them.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorInner>);

pub(crate) struct TensorInner {
    pub(crate) storage: Arc<Storage>,
    pub(crate) layout: Layout,
    /// The tape entry that produced this tensor; `None` for leaves and constants.
    pub(crate) grad_fn: Option<Arc<Node>>,
    /// Gradient accumulator of a leaf that requires grad (shared with its `Parameter`).
    pub(crate) grad_slot: Option<GradSlot>,
}

impl Tensor {
    // ----- construction -----------------------------------------------------------------

    pub(crate) fn from_parts(storage: Arc<Storage>, layout: Layout) -> Tensor {
        Tensor(Arc::new(TensorInner { storage, layout, grad_fn: None, grad_slot: None }))
    }

    pub(crate) fn from_storage(storage: Storage, shape: &[usize]) -> Tensor {
        debug_assert_eq!(storage.len(), shape.iter().product::<usize>());
        Self::from_parts(Arc::new(storage), Layout::contiguous(shape))
    }

    /// Wraps a typed buffer (f32, f64, i64 or bool) whose length must match the shape.
    pub fn from_vec<T: Scalar>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        let n = checked_numel("from_vec", shape)?;
        if data.len() != n {
            return Err(Error::invalid_shape("from_vec", format!("{} elements cannot fill the shape", data.len()), shape));
        }
        Ok(Self::from_storage(T::into_storage(data), shape))
    }

    /// A 0-dimensional f32 tensor.
    pub fn scalar(v: f32) -> Tensor {
        Self::from_storage(Storage::F32(vec![v]), &[])
    }

    /// A 0-dimensional tensor of the given dtype.
    pub fn scalar_dtype(v: f64, dtype: DType) -> Tensor {
        Self::full_dtype(&[], v, dtype)
    }

    /// f32 tensor filled with `value`.
    ///
    /// # Panics
    /// When the shape has more elements than fit in memory ([`crate::shape::MAX_NUMEL`]),
    /// as `Vec` does: the sizes are the program's own. The same holds for `zeros`, `ones`,
    /// their `_dtype` forms and the random constructors.
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Self::full_dtype(shape, value as f64, DType::F32)
    }

    /// A tensor of `dtype` filled with `value` (panics as [`Tensor::full`] does, and when
    /// `value` has no exact i64 value for an i64 tensor: NaN, infinite, fractional or out
    /// of range). A bool tensor holds `value != 0`.
    pub fn full_dtype(shape: &[usize], value: f64, dtype: DType) -> Tensor {
        let n = numel_or_panic("Tensor::full", shape);
        let storage = match dtype {
            DType::F32 => Storage::F32(vec![value as f32; n]),
            DType::F64 => Storage::F64(vec![value; n]),
            DType::I64 => Storage::I64(vec![exact_i64(value).unwrap_or_else(|| panic!("Tensor::full: {value} is not an i64 value")); n]),
            DType::Bool => Storage::Bool(vec![value != 0.0; n]),
        };
        Self::from_storage(storage, shape)
    }

    /// An i64 tensor filled with `value`.
    pub fn full_i64(shape: &[usize], value: i64) -> Tensor {
        let n = numel_or_panic("Tensor::full", shape);
        Self::from_storage(Storage::I64(vec![value; n]), shape)
    }

    /// A bool tensor filled with `value`.
    pub fn full_bool(shape: &[usize], value: bool) -> Tensor {
        let n = numel_or_panic("Tensor::full", shape);
        Self::from_storage(Storage::Bool(vec![value; n]), shape)
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Self::full(shape, 0.0)
    }
    pub fn ones(shape: &[usize]) -> Tensor {
        Self::full(shape, 1.0)
    }
    pub fn zeros_dtype(shape: &[usize], dtype: DType) -> Tensor {
        Self::full_dtype(shape, 0.0, dtype)
    }
    pub fn ones_dtype(shape: &[usize], dtype: DType) -> Tensor {
        Self::full_dtype(shape, 1.0, dtype)
    }
    /// Zeros with this tensor's shape and dtype.
    pub fn zeros_like(&self) -> Tensor {
        Self::zeros_dtype(self.shape(), self.dtype())
    }
    pub fn ones_like(&self) -> Tensor {
        Self::ones_dtype(self.shape(), self.dtype())
    }

    /// `[start, start+step, ...)` below `end`, as f32 (PyTorch's `torch.arange`).
    pub fn arange(start: f64, end: f64, step: f64) -> Result<Tensor> {
        Self::arange_dtype(start, end, step, DType::F32)
    }

    pub fn arange_dtype(start: f64, end: f64, step: f64, dtype: DType) -> Result<Tensor> {
        let bad_int = || Error::invalid("arange", format!("start={start}, end={end}, step={step} are not all i64 values"));
        let len = ((end - start) / step).ceil();
        if step == 0.0 || !start.is_finite() || !end.is_finite() || !step.is_finite() || len.is_nan() || len < 0.0 {
            return Err(Error::invalid("arange", format!("invalid range start={start}, end={end}, step={step}")));
        }
        if len > crate::shape::MAX_NUMEL as f64 {
            return Err(Error::overflow("arange", format!("start={start}, end={end}, step={step} gives {len:e} elements")));
        }
        let n = len as usize;
        if dtype == DType::I64 {
            return Self::arange_i64(
                exact_i64(start).ok_or_else(bad_int)?,
                exact_i64(end).ok_or_else(bad_int)?,
                exact_i64(step).ok_or_else(bad_int)?,
            );
        }
        let vals: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Self::from_vec(vals, &[n])?.to_dtype_no_grad(dtype)
    }

    /// `[start, start+step, ...)` below `end` as i64 (`torch.arange` with integer arguments).
    pub fn arange_i64(start: i64, end: i64, step: i64) -> Result<Tensor> {
        if step == 0 {
            return Err(Error::invalid("arange", format!("invalid range start={start}, end={end}, step={step}")));
        }
        // Exact in i128: no i64 arithmetic can wrap here.
        let span = end as i128 - start as i128;
        let n = if (span > 0) == (step > 0) && span != 0 {
            (span.abs() + step.unsigned_abs() as i128 - 1) / step.unsigned_abs() as i128
        } else {
            0
        };
        if n > crate::shape::MAX_NUMEL as i128 {
            return Err(Error::overflow("arange", format!("start={start}, end={end}, step={step} gives {n} elements")));
        }
        let vals: Vec<i64> = (0..n as i64).map(|i| (start as i128 + i as i128 * step as i128) as i64).collect();
        Self::from_vec(vals, &[n as usize])
    }

    /// `Err(UnsupportedDType)` naming `op` unless this tensor is f32 or f64: the front-end
    /// check of an op built from float maths, so its error names it rather than an inner op.
    pub fn check_float(&self, op: &'static str) -> Result<()> {
        if self.dtype().is_float() {
            Ok(())
        } else {
            Err(Error::UnsupportedDType { op, dtype: self.dtype() })
        }
    }

    // ----- accessors ----------------------------------------------------------------------

    pub fn shape(&self) -> &[usize] {
        &self.0.layout.shape
    }
    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.layout.shape.len()
    }
    /// Size of one dimension (negative counts from the end).
    pub fn size(&self, dim: isize) -> Result<usize> {
        let d = crate::shape::normalize_dim("size", dim, self.rank())?;
        Ok(self.shape()[d])
    }
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }
    pub fn dtype(&self) -> DType {
        self.0.storage.dtype()
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// The whole buffer behind this view (kernels index it with `layout()`).
    pub fn storage(&self) -> &Storage {
        &self.0.storage
    }
    /// True for leaves that collect a gradient and for results of ops that depend on them.
    pub fn requires_grad(&self) -> bool {
        self.0.grad_fn.is_some() || self.0.grad_slot.is_some()
    }
    /// True when no op produced this tensor (created by the user, or detached).
    pub fn is_leaf(&self) -> bool {
        self.0.grad_fn.is_none()
    }
    /// Name of the op that produced this tensor, like PyTorch's `grad_fn`.
    pub fn grad_fn_name(&self) -> Option<&'static str> {
        self.0.grad_fn.as_ref().map(|n| n.name)
    }
    /// Identity of the underlying handle (two clones share it).
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// A leaf sharing this tensor's data that collects a gradient in `.grad()`.
    ///
    /// # Panics
    /// If the tensor is i64 or bool: only floating point tensors can require gradients
    /// (PyTorch raises the same). A program asks this of tensors it made, so it is a
    /// programming error, not bad input.
    pub fn requires_grad_(&self) -> Tensor {
        assert!(self.dtype().is_float(), "requires_grad_: only floating point tensors can require gradients, not {}", self.dtype());
        self.with_grad_slot(Arc::new(Mutex::new(None)))
    }

    pub(crate) fn with_grad_slot(&self, slot: GradSlot) -> Tensor {
        Tensor(Arc::new(TensorInner {
            storage: self.0.storage.clone(),
            layout: self.0.layout.clone(),
            grad_fn: None,
            grad_slot: Some(slot),
        }))
    }

    /// The same data, cut from the graph: no gradient flows through the result.
    pub fn detach(&self) -> Tensor {
        Self::from_parts(self.0.storage.clone(), self.0.layout.clone())
    }

    /// The accumulated gradient of a leaf, if a backward pass reached it.
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad_slot.as_ref().and_then(|s| s.lock().unwrap().clone())
    }
    /// Clears the accumulated gradient of a leaf.
    pub fn zero_grad(&self) {
        if let Some(s) = &self.0.grad_slot {
            *s.lock().unwrap() = None;
        }
    }

    // ----- data access --------------------------------------------------------------------

    /// The elements in row-major order, converted to `T` (exactly when `T` is the tensor's
    /// own dtype; otherwise through f64, as [`Scalar::from_f64`] converts).
    pub fn to_vec<T: Scalar>(&self) -> Vec<T> {
        if T::DTYPE == self.dtype() {
            return self.contiguous_data::<T>().expect("dtype checked").into_owned();
        }
        crate::dispatch_all!(self.storage(), |v: S| {
            let mut out = Vec::with_capacity(self.numel());
            self.0.layout.for_each_offset(|p| out.push(T::from_f64(v[p].to_f64())));
            out
        })
    }

    /// The value of a one-element tensor, as f64.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::invalid_shape("item", "only one-element tensors can be converted to a number", self.shape()));
        }
        Ok(self.to_vec::<f64>()[0])
    }

    /// Borrows the elements as a typed slice when the tensor is contiguous and of dtype `T`.
    pub fn as_slice<T: Scalar>(&self) -> Option<&[T]> {
        if !self.is_contiguous() {
            return None;
        }
        let o = self.0.layout.offset;
        T::slice(self.storage()).map(|s| &s[o..o + self.numel()])
    }

    /// The elements as an owned contiguous buffer of the tensor's own dtype. No copy
    /// beyond the one needed when the tensor is a strided view.
    pub fn contiguous_data<T: Scalar>(&self) -> Result<std::borrow::Cow<'_, [T]>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch { op: "contiguous_data", lhs: self.dtype(), rhs: T::DTYPE });
        }
        if let Some(s) = self.as_slice::<T>() {
            return Ok(std::borrow::Cow::Borrowed(s));
        }
        let src = T::slice(self.storage()).expect("dtype checked");
        let mut out = Vec::with_capacity(self.numel());
        self.0.layout.for_each_offset(|p| out.push(src[p]));
        Ok(std::borrow::Cow::Owned(out))
    }

    /// Copies a strided view into fresh contiguous storage (a no-op handle clone if it
    /// already is contiguous). Differentiable: the gradient passes through unchanged.
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() && self.0.layout.offset == 0 && self.storage().len() == self.numel() {
            return self.clone();
        }
        let storage = crate::dispatch_all!(self.storage(), |v: T| {
            let mut out = Vec::with_capacity(self.numel());
            self.0.layout.for_each_offset(|p| out.push(v[p]));
            T::into_storage(out)
        });
        let out = Tensor::from_storage(storage, self.shape());
        crate::tape::record_saving("contiguous", out, &[self], crate::tape::Saves::NOTHING, |ctx| Ok(vec![Some(ctx.grad_output().clone())]))
    }

    /// Converts to another dtype. Differentiable between f32 and f64: the gradient is cast
    /// back, so an f32 layer can be gradchecked in f64. Any dtype converts to f32, f64 and
    /// bool (`x != 0`, NaN is true, as in PyTorch), and i64 and bool to i64.
    ///
    /// # Panics
    /// For a float tensor to i64: NaN, infinities and out-of-range values have no i64
    /// value (x86 would give `i64::MIN`); use [`Tensor::try_to_dtype`], which returns an error.
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        let out = self.to_dtype_no_grad(dtype).unwrap_or_else(|e| panic!("{e}"));
        let from = self.dtype();
        if !(from.is_float() && dtype.is_float()) {
            return out;
        }
        crate::tape::record_saving("to_dtype", out, &[self], crate::tape::Saves::NOTHING, move |ctx| {
            Ok(vec![Some(ctx.grad_output().to_dtype(from))])
        })
    }

    /// [`Tensor::to_dtype`] for every pair of dtypes: a float value that is NaN, infinite
    /// or outside i64's range is an error for an i64 result (fractions truncate toward
    /// zero, as in PyTorch).
    pub fn try_to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if self.dtype().is_float() && dtype == DType::I64 {
            self.to_dtype_no_grad(dtype)
        } else {
            Ok(self.to_dtype(dtype))
        }
    }

    fn to_dtype_no_grad(&self, dtype: DType) -> Result<Tensor> {
        let storage = match dtype {
            DType::F32 => Storage::F32(self.to_vec::<f32>()),
            DType::F64 => Storage::F64(self.to_vec::<f64>()),
            DType::Bool => Storage::Bool(crate::dispatch_all!(self.storage(), |v: S| {
                let mut out = Vec::with_capacity(self.numel());
                self.0.layout.for_each_offset(|p| out.push(v[p].to_f64() != 0.0));
                out
            })),
            DType::I64 => Storage::I64(match self.storage() {
                Storage::I64(_) | Storage::Bool(_) => self.to_vec::<i64>(),
                s => crate::dispatch_all!(s, |v: S| {
                    let mut out = Vec::with_capacity(self.numel());
                    let mut bad = None;
                    self.0.layout.for_each_offset(|p| {
                        let x = v[p].to_f64();
                        match in_i64_range(x) {
                            true => out.push(x as i64),
                            false => {
                                bad.get_or_insert(x);
                                out.push(0);
                            }
                        }
                    });
                    if let Some(x) = bad {
                        return Err(Error::invalid("to_dtype", format!("{x} has no i64 value (casting {} to i64)", self.dtype())));
                    }
                    out
                }),
            }),
        };
        Ok(Tensor::from_storage(storage, self.shape()))
    }

    /// Exact equality of shape, dtype and every element (NaN is never equal, as `==`).
    pub fn equal(&self, other: &Tensor) -> bool {
        if self.shape() != other.shape() || self.dtype() != other.dtype() {
            return false;
        }
        crate::dispatch_all!(self.storage(), |_v: T| {
            let (a, b) = (self.contiguous_data::<T>().expect("own dtype"), other.contiguous_data::<T>().expect("same dtype"));
            a == b
        })
    }

    /// Largest absolute element-wise difference to another tensor of the same shape; NaN
    /// when any difference is NaN (`f64::max` would skip it, and a check `diff < tol`
    /// would pass on a result full of NaN).
    pub fn max_abs_diff(&self, other: &Tensor) -> Result<f64> {
        if self.shape() != other.shape() {
            return Err(Error::shape("max_abs_diff", "shapes differ", self.shape(), other.shape()));
        }
        Ok(self.to_vec::<f64>().iter().zip(other.to_vec::<f64>()).map(|(a, b)| (a - b).abs()).fold(0.0, nan_max))
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Whether the float `x` truncates to an i64 (finite and within range).
fn in_i64_range(x: f64) -> bool {
    // -2^63 is exact in f64; 2^63 is the first value past the range.
    x.is_finite() && x.trunc() >= -9_223_372_036_854_775_808.0 && x.trunc() < 9_223_372_036_854_775_808.0
}

/// `x` as an i64 when it is exactly one.
pub(crate) fn exact_i64(x: f64) -> Option<i64> {
    (in_i64_range(x) && x.fract() == 0.0).then_some(x as i64)
}

/// `max` that keeps a NaN: the fold of differences a comparison must not pass.
pub fn nan_max(m: f64, e: f64) -> f64 {
    if m.is_nan() || e.is_nan() {
        f64::NAN
    } else {
        m.max(e)
    }
}
