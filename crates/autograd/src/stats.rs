//! Statistics over dims: variance and standard deviation (PyTorch's `correction`),
//! products, running sums, the extremes (`max`, `min`, `amax`, `amin`) and vector norms
//! (p = 1, 2, inf). `var`, `std` and `norm` are composed from the ops of `reduce.rs` and
//! `elementwise.rs`; `prod`, `cumsum` and the extremes have kernels of their own, each
//! with its rule beside it.
//!
//! Where a reduction takes a list of dims, an empty list means every dim (PyTorch's
//! `dim=None`). NaN in, NaN out: a NaN makes its slice's variance, product, sum, norm and
//! extreme NaN.

use crate::dtype::{DType, Element, Storage};
use crate::elementwise::{binary_kernel, BinaryFn};
use crate::error::{Error, Result};
use crate::reduce::normalize_dims;
use crate::shape::normalize_dim;
use crate::tape::{record_saving, Saves};
use crate::tensor::Tensor;

/// `dims` normalised and sorted, or every dim when empty.
fn dims_or_all(op: &'static str, dims: &[isize], rank: usize) -> Result<Vec<usize>> {
    if dims.is_empty() {
        Ok((0..rank).collect())
    } else {
        normalize_dims(op, dims, rank)
    }
}

/// The shape with the reduced dims `ds` set to 1, and the result's shape (those dims kept
/// as 1, or removed).
fn reduced_shapes(shape: &[usize], ds: &[usize], keepdim: bool) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = shape.iter().enumerate().map(|(i, &s)| if ds.contains(&i) { 1 } else { s }).collect();
    let out = if keepdim { kept.clone() } else { shape.iter().enumerate().filter(|(i, _)| !ds.contains(i)).map(|(_, &s)| s).collect() };
    (kept, out)
}

fn as_isize(ds: &[usize]) -> Vec<isize> {
    ds.iter().map(|&d| d as isize).collect()
}

/// `(outer, size of dim, inner)` of a shape around `d`.
fn around(shape: &[usize], d: usize) -> (usize, usize, usize) {
    (shape[..d].iter().product(), shape[d], shape[d + 1..].iter().product())
}

/// 1 where `x` equals the extreme `y` of its slice (NaN counts as equal to a NaN
/// extreme), else 0: the elements an extreme's gradient is shared among.
struct HitOp;
impl BinaryFn for HitOp {
    #[inline(always)]
    fn apply<T: Element>(x: T, y: T) -> T {
        if x == y || (x.is_nan() && y.is_nan()) {
            T::one()
        } else {
            T::zero()
        }
    }
}

/// Product along `d` of a contiguous `[outer, r, inner]` buffer.
fn prod_kernel<T: Element>(x: &[T], outer: usize, r: usize, inner: usize) -> Vec<T> {
    let mut out = vec![T::one(); outer * inner];
    for o in 0..outer {
        let dst = &mut out[o * inner..][..inner];
        for k in 0..r {
            dst.iter_mut().zip(&x[(o * r + k) * inner..][..inner]).for_each(|(d, &v)| *d *= v);
        }
    }
    out
}

/// For every element, the product of the others of its slice along `d` (the prefix
/// product before it times the suffix product after it): exact with zeros, where
/// `prod / x` is not. PyTorch's `prod_safe_zeros_backward`.
fn prod_others<T: Element>(x: &[T], outer: usize, r: usize, inner: usize) -> Vec<T> {
    let mut out = vec![T::one(); x.len()];
    if x.is_empty() {
        // No slice to walk (an `outer` of 2^40 slices of nothing must not loop).
        return out;
    }
    let mut acc = vec![T::one(); inner];
    for o in 0..outer {
        acc.fill(T::one());
        for k in 0..r {
            let at = (o * r + k) * inner;
            for ((d, a), &v) in out[at..at + inner].iter_mut().zip(acc.iter_mut()).zip(&x[at..at + inner]) {
                *d = *a;
                *a *= v;
            }
        }
        acc.fill(T::one());
        for k in (0..r).rev() {
            let at = (o * r + k) * inner;
            for ((d, a), &v) in out[at..at + inner].iter_mut().zip(acc.iter_mut()).zip(&x[at..at + inner]) {
                *d *= *a;
                *a *= v;
            }
        }
    }
    out
}

/// Running sums along `d` of a contiguous `[outer, r, inner]` buffer, forward or from the
/// end. Floats add in f64 as PyTorch's CPU kernel does (so f32 matches it too); i64 wraps.
fn scan_float<T: Element>(x: &[T], outer: usize, r: usize, inner: usize, reverse: bool) -> Vec<T> {
    let mut out = crate::buffers::for_overwrite::<T>(x.len());
    if x.is_empty() {
        return out;
    }
    let mut acc = vec![0.0f64; inner];
    for o in 0..outer {
        acc.fill(0.0);
        for step in 0..r {
            let k = if reverse { r - 1 - step } else { step };
            let at = (o * r + k) * inner;
            for i in 0..inner {
                acc[i] += x[at + i].to_f64();
                out[at + i] = T::from_f64(acc[i]);
            }
        }
    }
    out
}

fn scan_i64(x: &[i64], outer: usize, r: usize, inner: usize, reverse: bool) -> Vec<i64> {
    let mut out = vec![0i64; x.len()];
    if x.is_empty() {
        return out;
    }
    let mut acc = vec![0i64; inner];
    for o in 0..outer {
        acc.fill(0);
        for step in 0..r {
            let k = if reverse { r - 1 - step } else { step };
            let at = (o * r + k) * inner;
            for i in 0..inner {
                acc[i] = acc[i].wrapping_add(x[at + i]);
                out[at + i] = acc[i];
            }
        }
    }
    out
}

impl Tensor {
    /// Variance of all elements with `correction` (`torch.var(x, correction=c)`: the sum
    /// of squared deviations divided by `max(0, N - c)`; 1 is Bessel's correction, the
    /// default in PyTorch). `N <= c` gives NaN or infinity, as PyTorch's.
    pub fn var(&self, correction: f64) -> Result<Tensor> {
        self.variance("var", &[], correction, false)
    }

    /// Variance over `dims` (every dim when empty), as `torch.var(x, dims, correction=c,
    /// keepdim=k)`.
    pub fn var_dims(&self, dims: &[isize], correction: f64, keepdim: bool) -> Result<Tensor> {
        self.variance("var", dims, correction, keepdim)
    }

    /// Standard deviation of all elements: `sqrt(var(correction))`. Its gradient is 0 where
    /// the result is 0 (a constant slice), as PyTorch's, rather than NaN.
    pub fn std(&self, correction: f64) -> Result<Tensor> {
        Ok(self.variance("std", &[], correction, false)?.sqrt_zero_grad("std"))
    }

    /// Standard deviation over `dims` (every dim when empty).
    pub fn std_dims(&self, dims: &[isize], correction: f64, keepdim: bool) -> Result<Tensor> {
        Ok(self.variance("std", dims, correction, keepdim)?.sqrt_zero_grad("std"))
    }

    /// `sum((x - mean)^2) / max(0, N - correction)`, composed (so differentiable twice).
    fn variance(&self, op: &'static str, dims: &[isize], correction: f64, keepdim: bool) -> Result<Tensor> {
        self.check_float(op)?;
        let ds = dims_or_all(op, dims, self.rank())?;
        let sd = as_isize(&ds);
        let n: f64 = ds.iter().map(|&d| self.shape()[d] as f64).product();
        // NaN stays NaN (`f64::max` would turn it into 0).
        let den = if n - correction < 0.0 { 0.0 } else { n - correction };
        let mean = self.sum_dims(&sd, true)?.mul_scalar(1.0 / n);
        let d = self.sub(&mean)?;
        d.mul(&d)?.sum_dims(&sd, keepdim)?.div(&Tensor::scalar_dtype(den, self.dtype()))
    }

    /// `sqrt(x)` whose gradient is 0 where `x` is 0 instead of infinite (the convention of
    /// PyTorch's `std` and 2-norm backward). The rule takes the square root of `x` with its
    /// zeros replaced by 1 and selects with `where_`, so no infinity enters the graph at
    /// any order.
    fn sqrt_zero_grad(&self, op: &'static str) -> Tensor {
        let out = self.detach().sqrt();
        record_saving(op, out, &[self], Saves::input(0), |ctx| {
            let x = ctx.input(0);
            let zero = Tensor::zeros_dtype(&[], x.dtype());
            let at_zero = x.eq(&zero)?;
            let safe = Tensor::where_(&at_zero, &Tensor::ones_dtype(&[], x.dtype()), x)?.sqrt();
            let d = ctx.grad_output().div(&safe.mul_scalar(2.0))?;
            Ok(vec![Some(Tensor::where_(&at_zero, &zero, &d)?)])
        })
    }

    /// Product of all elements (`torch.prod(x)`), 1 for an empty tensor.
    pub fn prod(&self) -> Result<Tensor> {
        self.check_float("prod")?;
        let flat = self.reshape_to(&[self.numel()])?;
        flat.prod_along(0, false)
    }

    /// Product along `dim` (`torch.prod(x, dim, keepdim)`). The gradient of each element is
    /// the product of the others in its slice, exact when some are 0 (as PyTorch's).
    pub fn prod_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.check_float("prod")?;
        let d = normalize_dim("prod", dim, self.rank())?;
        self.prod_along(d, keepdim)
    }

    fn prod_along(&self, d: usize, keepdim: bool) -> Result<Tensor> {
        let (outer, r, inner) = around(self.shape(), d);
        let (kept, shape) = reduced_shapes(self.shape(), &[d], keepdim);
        let storage = crate::dispatch!("prod", self.storage(), |_s: T| {
            T::into_storage(prod_kernel(&self.contiguous_data::<T>()?, outer, r, inner))
        });
        let out = Tensor::from_storage(storage, &shape);
        Ok(record_saving("prod", out, &[self], Saves::input(0), move |ctx| {
            let x = ctx.input(0);
            let g = ctx.grad_output().reshape_to(&kept)?.expand(x.shape())?;
            let (others, has_zero) = crate::dispatch!("prod", x.storage(), |_s: T| {
                let v = x.contiguous_data::<T>()?;
                let has_zero = v.iter().any(|&e| e == T::zero());
                (Tensor::from_storage(T::into_storage(prod_others(&v, outer, r, inner)), x.shape()), has_zero)
            });
            if !ctx.create_graph() {
                return Ok(vec![Some(g.mul(&others)?)]);
            }
            if !has_zero {
                // g prod / x, in recorded ops: differentiable again.
                return Ok(vec![Some(g.mul(&x.prod_along(d, true)?)?.div(x)?)]);
            }
            // With a zero in the input the rule is the kernel above, which is first-order
            // only: differentiating it again is an error naming prod, never a silent zero.
            let gx = g.mul(&others)?.detach();
            Ok(vec![Some(record_saving("prod", gx, &[x, ctx.grad_output()], Saves::NOTHING, |_| Err(Error::NoSecondOrder { op: "prod" })))])
        }))
    }

    /// Running sums along `dim` (`torch.cumsum`): element `k` is the sum of elements
    /// `0..=k`. Floats (summed in f64, as PyTorch's CPU kernel) and i64 (wrapping); bool
    /// sums as i64, as PyTorch's. The gradient is the running sum of `g` from the end.
    pub fn cumsum(&self, dim: isize) -> Result<Tensor> {
        if self.dtype() == DType::Bool {
            return self.to_dtype(DType::I64).cumsum(dim);
        }
        if self.rank() == 0 {
            // A 0-d tensor is its own running sum (dim 0 or -1, as PyTorch accepts).
            normalize_dim("cumsum", dim, 1)?;
            return Ok(self.clone());
        }
        let d = normalize_dim("cumsum", dim, self.rank())?;
        self.scan(d, false)
    }

    fn scan(&self, d: usize, reverse: bool) -> Result<Tensor> {
        let (outer, r, inner) = around(self.shape(), d);
        let storage = match self.storage() {
            Storage::I64(_) => Storage::I64(scan_i64(&self.contiguous_data::<i64>()?, outer, r, inner, reverse)),
            s => {
                crate::dispatch!("cumsum", s, |_s: T| T::into_storage(scan_float(&self.contiguous_data::<T>()?, outer, r, inner, reverse)))
            }
        };
        let out = Tensor::from_storage(storage, self.shape());
        Ok(record_saving("cumsum", out, &[self], Saves::NOTHING, move |ctx| Ok(vec![Some(ctx.grad_output().scan(d, !reverse)?)])))
    }

    /// Largest element (`torch.max(x)`), NaN if there is one. The gradient is shared
    /// evenly among the elements equal to it, as PyTorch's.
    pub fn max(&self) -> Result<Tensor> {
        self.extreme("max", &[], false, true)
    }

    /// Smallest element (`torch.min(x)`), NaN if there is one; the gradient is shared
    /// evenly among the elements equal to it.
    pub fn min(&self) -> Result<Tensor> {
        self.extreme("min", &[], false, false)
    }

    /// Largest element over `dims` (every dim when empty), as `torch.amax`; ties share the
    /// gradient evenly.
    pub fn amax(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.extreme("amax", dims, keepdim, true)
    }

    /// Smallest element over `dims` (every dim when empty), as `torch.amin`.
    pub fn amin(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.extreme("amin", dims, keepdim, false)
    }

    fn extreme(&self, op: &'static str, dims: &[isize], keepdim: bool, largest: bool) -> Result<Tensor> {
        self.check_float(op)?;
        let ds = dims_or_all(op, dims, self.rank())?;
        if let Some(&d) = ds.iter().find(|&&d| self.shape()[d] == 0) {
            return Err(Error::invalid_shape(
                op,
                format!("cannot reduce over empty dim {d} (the {op} of nothing is undefined)"),
                self.shape(),
            ));
        }
        let (kept, shape) = reduced_shapes(self.shape(), &ds, keepdim);
        // The reduced dims last, so each output value reads one contiguous row.
        let rest = (0..self.rank()).filter(|d| !ds.contains(d));
        let perm: Vec<isize> = rest.chain(ds.iter().copied()).map(|d| d as isize).collect();
        let xp = self.detach().permute(&perm)?;
        let r: usize = ds.iter().map(|&d| self.shape()[d]).product();
        let storage = crate::dispatch!(op, xp.storage(), |_s: T| {
            let x = xp.contiguous_data::<T>()?;
            let pick = |m: T, v: T| if m.is_nan() || !(v.is_nan() || if largest { v > m } else { v < m }) { m } else { v };
            T::into_storage(x.chunks(r).map(|row| row.iter().fold(row[0], |m, &v| pick(m, v))).collect::<Vec<T>>())
        });
        let out = Tensor::from_storage(storage, &shape);
        let sd = as_isize(&ds);
        Ok(record_saving(op, out, &[self], Saves::ALL, move |ctx| {
            let x = ctx.input(0);
            let hit = binary_kernel::<HitOp>(op, x, &ctx.output().reshape_to(&kept)?)?;
            let share = hit.div(&hit.sum_dims(&sd, true)?)?;
            Ok(vec![Some(ctx.grad_output().reshape_to(&kept)?.expand(x.shape())?.mul(&share)?)])
        }))
    }

    /// Vector norm of all elements (`torch.linalg.vector_norm(x, p)`) for p = 1, 2 or
    /// infinity.
    pub fn norm(&self, p: f64) -> Result<Tensor> {
        self.norm_dims(p, &[], false)
    }

    /// Vector norm over `dims` (every dim when empty) for p = 1 (`sum |x|`), 2
    /// (`sqrt(sum x^2)`, gradient `x / norm`, 0 where the norm is 0) or infinity
    /// (`max |x|`, the gradient shared among ties), as PyTorch's.
    pub fn norm_dims(&self, p: f64, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.check_float("norm")?;
        let sd = as_isize(&dims_or_all("norm", dims, self.rank())?);
        if p == 1.0 {
            self.abs().sum_dims(&sd, keepdim)
        } else if p == 2.0 {
            Ok(self.mul(self)?.sum_dims(&sd, keepdim)?.sqrt_zero_grad("norm"))
        } else if p == f64::INFINITY {
            self.abs().extreme("norm", &sd, keepdim, true)
        } else {
            Err(Error::invalid("norm", format!("p must be 1, 2 or inf, got {p}")))
        }
    }
}
