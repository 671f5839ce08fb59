//! Comparisons, which give bool tensors, and the selections that take them as masks:
//! `where_` and `masked_fill`. Operands broadcast as in the arithmetic ops. A comparison
//! has no gradient (a step function); `where_` passes the gradient to the branch each
//! element came from, so it is differentiable in its value operands (and again: its rule
//! is written with `where_` itself).

use crate::dtype::{DType, Storage};
use crate::elementwise::broadcast_layout;
use crate::error::{Error, Result};
use crate::shape::{broadcast_shapes, for_each_offset_pair};
use crate::tape::{record_saving, Saves};
use crate::tensor::Tensor;

/// `f(a, b)` over the broadcast of `a` and `b` (same dtype), as a bool tensor.
fn compare(op: &'static str, a: &Tensor, b: &Tensor, f: fn(std::cmp::Ordering) -> bool, nan: bool) -> Result<Tensor> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    let shape = broadcast_shapes(op, a.shape(), b.shape())?;
    let (la, lb) = (broadcast_layout(a.layout(), &shape), broadcast_layout(b.layout(), &shape));
    let out = crate::dispatch_all!(a.storage(), |x: T| {
        let y = T::slice(b.storage()).expect("same dtype");
        let mut out = Vec::with_capacity(la.numel());
        // Unordered pairs (a NaN) compare as `nan`: false, or true for `ne`.
        for_each_offset_pair(&la, &lb, |p, q| out.push(x[p].partial_cmp(&y[q]).map_or(nan, f)));
        out
    });
    Ok(Tensor::from_storage(Storage::Bool(out), &shape))
}

impl Tensor {
    /// `self == other` element-wise (`torch.eq`), a bool tensor.
    pub fn eq(&self, other: &Tensor) -> Result<Tensor> {
        compare("eq", self, other, |o| o.is_eq(), false)
    }
    /// `self != other` element-wise (`torch.ne`); true where either is NaN.
    pub fn ne(&self, other: &Tensor) -> Result<Tensor> {
        compare("ne", self, other, |o| o.is_ne(), true)
    }
    /// `self < other` element-wise (`torch.lt`).
    pub fn lt(&self, other: &Tensor) -> Result<Tensor> {
        compare("lt", self, other, |o| o.is_lt(), false)
    }
    /// `self <= other` element-wise (`torch.le`).
    pub fn le(&self, other: &Tensor) -> Result<Tensor> {
        compare("le", self, other, |o| o.is_le(), false)
    }
    /// `self > other` element-wise (`torch.gt`).
    pub fn gt(&self, other: &Tensor) -> Result<Tensor> {
        compare("gt", self, other, |o| o.is_gt(), false)
    }
    /// `self >= other` element-wise (`torch.ge`).
    pub fn ge(&self, other: &Tensor) -> Result<Tensor> {
        compare("ge", self, other, |o| o.is_ge(), false)
    }

    /// `cond ? a : b` element-wise (`torch.where`): `cond` is bool, `a` and `b` share a
    /// dtype, and all three broadcast. Differentiable in `a` and `b`: each gets the
    /// gradient where it was chosen, zero elsewhere, summed back to its shape.
    pub fn where_(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if cond.dtype() != DType::Bool {
            return Err(Error::invalid("where", format!("the condition must be a bool tensor, not {}", cond.dtype())));
        }
        if a.dtype() != b.dtype() {
            return Err(Error::DTypeMismatch { op: "where", lhs: a.dtype(), rhs: b.dtype() });
        }
        let shape = broadcast_shapes("where", cond.shape(), &broadcast_shapes("where", a.shape(), b.shape())?)?;
        let mask = cond.expand(&shape)?.contiguous_data::<bool>()?.into_owned();
        let (la, lb) = (broadcast_layout(a.layout(), &shape), broadcast_layout(b.layout(), &shape));
        let storage = crate::dispatch_all!(a.storage(), |x: T| {
            let y = T::slice(b.storage()).expect("same dtype");
            let mut out = Vec::with_capacity(mask.len());
            let mut k = 0;
            for_each_offset_pair(&la, &lb, |p, q| {
                out.push(if mask[k] { x[p] } else { y[q] });
                k += 1;
            });
            T::into_storage(out)
        });
        let out = Tensor::from_storage(storage, &shape);
        let cond = cond.clone();
        Ok(record_saving("where", out, &[a, b], Saves::NOTHING, move |ctx| {
            let g = ctx.grad_output();
            let zero = Tensor::zeros_dtype(&[], g.dtype());
            let ga = if ctx.needs_grad(0) { Some(Tensor::where_(&cond, g, &zero)?.sum_to(ctx.input_shape(0))?) } else { None };
            let gb = if ctx.needs_grad(1) { Some(Tensor::where_(&cond, &zero, g)?.sum_to(ctx.input_shape(1))?) } else { None };
            Ok(vec![ga, gb])
        }))
    }

    /// `value` where `mask` is true, this tensor elsewhere (`Tensor.masked_fill`); `mask`
    /// broadcasts to this tensor's shape. Differentiable in this tensor.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        if mask.dtype() != DType::Bool {
            return Err(Error::invalid("masked_fill", format!("the mask must be a bool tensor, not {}", mask.dtype())));
        }
        let b = broadcast_shapes("masked_fill", mask.shape(), self.shape())?;
        if b.as_slice() != self.shape() {
            return Err(Error::mismatch("masked_fill", "the mask must broadcast to the tensor's shape", mask.shape(), self.shape()));
        }
        let fill = match self.dtype() {
            DType::I64 => Tensor::full_i64(
                &[],
                crate::tensor::exact_i64(value).ok_or_else(|| Error::invalid("masked_fill", format!("{value} is not an i64 value")))?,
            ),
            dtype => Tensor::full_dtype(&[], value, dtype),
        };
        Tensor::where_(mask, &fill, self).map_err(|e| match e {
            Error::InvalidArgument { msg, .. } => Error::invalid("masked_fill", msg),
            e => e,
        })
    }
}
