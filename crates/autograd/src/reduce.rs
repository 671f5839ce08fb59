//! Reductions (sum, mean, max with argmax, logsumexp) and the numerically stable softmax
//! family composed from them. Sums always combine in a fixed order, so they are bitwise reproducible.
//!
//! NaN in, NaN out (docs/reliability.md): sums and means add NaN through; the max, argmax
//! and therefore logsumexp, softmax and log_softmax pick NaN as the largest value.

use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::parallel::{deterministic_sum, install, run_here};
use crate::shape::normalize_dim;
use crate::tape::{record_saving, Saves};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Sizes of the dims before, at and after `dim`.
fn split3(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    let outer = shape[..dim].iter().product();
    let inner = shape[dim + 1..].iter().product();
    (outer, shape[dim], inner)
}

/// `out[o, i] = sum_k x[o, k, i]` over a contiguous `[outer, r, inner]` buffer.
fn sum_axis<T: Element>(x: &[T], outer: usize, r: usize, inner: usize) -> Vec<T> {
    let mut out = crate::buffers::zeroed::<T>(outer * inner);
    let one = |o: usize, dst: &mut [T]| {
        if inner == 1 {
            dst[0] = deterministic_sum(&x[o * r..(o + 1) * r]);
            return;
        }
        for k in 0..r {
            let src = &x[(o * r + k) * inner..(o * r + k + 1) * inner];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
    };
    if outer > 1 && !run_here(x.len()) && inner > 0 {
        install(|| out.par_chunks_mut(inner).enumerate().for_each(|(o, d)| one(o, d)));
    } else if inner > 0 {
        out.chunks_mut(inner).enumerate().for_each(|(o, d)| one(o, d));
    }
    out
}

pub(crate) fn normalize_dims(op: &'static str, dims: &[isize], rank: usize) -> Result<Vec<usize>> {
    let mut ds = Vec::with_capacity(dims.len());
    for &d in dims {
        let d = normalize_dim(op, d, rank)?;
        if ds.contains(&d) {
            return Err(Error::invalid(op, format!("dim {d} appears more than once in {dims:?}")));
        }
        ds.push(d);
    }
    ds.sort_unstable();
    Ok(ds)
}

impl Tensor {
    /// Sum of all elements, as a 0-dimensional tensor.
    ///
    /// An i64 or bool tensor sums to an i64 scalar, wrapping on overflow as PyTorch's does.
    pub fn sum(&self) -> Tensor {
        let storage = match self.storage() {
            crate::Storage::I64(v) => {
                let mut total = 0i64;
                self.layout().for_each_offset(|p| total = total.wrapping_add(v[p]));
                crate::Storage::I64(vec![total])
            }
            crate::Storage::Bool(v) => {
                let mut total = 0i64;
                self.layout().for_each_offset(|p| total += i64::from(v[p]));
                crate::Storage::I64(vec![total])
            }
            s => crate::dispatch_float!(s, |_s: T| {
                let x = self.contiguous_data::<T>().expect("own dtype");
                T::into_storage(vec![deterministic_sum(&x)])
            }),
        };
        let out = Tensor::from_storage(storage, &[]);
        record_saving("sum", out, &[self], Saves::NOTHING, |ctx| Ok(vec![Some(ctx.grad_output().expand(ctx.input_shape(0))?)]))
    }

    /// Sum over `dims` (negative dims count from the end); `keepdim` keeps them as size 1.
    pub fn sum_dims(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let ds = normalize_dims("sum", dims, self.rank())?;
        let mut kept: Vec<usize> = self.shape().to_vec();
        let storage = crate::dispatch!("sum_dims", self.storage(), |_s: T| {
            let src = self.contiguous_data::<T>()?;
            // Reduce one dim at a time, reading the input in place; intermediate buffers go
            // back to the cache.
            // Runs of adjacent dims (H and W of an image) reduce as one.
            let mut data: Option<Vec<T>> = None;
            // `ds` is sorted (normalize_dims).
            let mut end = ds.len();
            while end > 0 {
                let mut start = end - 1;
                while start > 0 && ds[start - 1] + 1 == ds[start] {
                    start -= 1;
                }
                let (first, last) = (ds[start], ds[end - 1]);
                let outer: usize = kept[..first].iter().product();
                let r: usize = kept[first..=last].iter().product();
                let inner: usize = kept[last + 1..].iter().product();
                let next = sum_axis(data.as_deref().unwrap_or(&src), outer, r, inner);
                if let Some(done) = data.replace(next) {
                    crate::buffers::recycle(done);
                }
                kept[first..=last].iter_mut().for_each(|k| *k = 1);
                end = start;
            }
            T::into_storage(data.unwrap_or_else(|| {
                let mut copy = crate::buffers::for_overwrite::<T>(src.len());
                copy.copy_from_slice(&src);
                copy
            }))
        });
        let out_shape: Vec<usize> =
            if keepdim { kept.clone() } else { kept.iter().enumerate().filter(|(i, _)| !ds.contains(i)).map(|(_, &s)| s).collect() };
        let out = Tensor::from_storage(storage, &out_shape);
        Ok(record_saving("sum_dims", out, &[self], Saves::NOTHING, move |ctx| {
            let g = ctx.grad_output().reshape_to(&kept)?;
            Ok(vec![Some(g.expand(ctx.input_shape(0))?)])
        }))
    }

    /// Mean of all elements.
    pub fn mean(&self) -> Tensor {
        let n = self.numel().max(1) as f64;
        self.sum().mul_scalar(1.0 / n)
    }

    /// Mean over `dims`.
    pub fn mean_dims(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.check_float("mean")?;
        let ds = normalize_dims("mean", dims, self.rank())?;
        let n: usize = ds.iter().map(|&d| self.shape()[d]).product();
        Ok(self.sum_dims(dims, keepdim)?.mul_scalar(1.0 / n.max(1) as f64))
    }

    /// Reduces a gradient of a broadcast result back to `shape` (the inverse of
    /// broadcasting): sums over the dims broadcasting added or stretched.
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let rank = self.rank();
        if shape.len() > rank {
            return Err(Error::shape("sum_to", "target has more dims than the tensor", self.shape(), shape));
        }
        let pad = rank - shape.len();
        let mut dims = Vec::new();
        for i in 0..rank {
            let want = if i < pad { 1 } else { shape[i - pad] };
            if i < pad || (want == 1 && self.shape()[i] != 1) {
                dims.push(i as isize);
            } else if want != self.shape()[i] {
                return Err(Error::shape("sum_to", "shapes are not broadcast-compatible", self.shape(), shape));
            }
        }
        self.sum_dims(&dims, true)?.reshape_to(shape)
    }

    /// Largest element along `dim` and where it is (the first one on ties; NaN wins), as
    /// `torch.max(x, dim)`: the values, and their indices as an i64 tensor of the same
    /// shape. Differentiable in the values.
    pub fn max_dim(&self, dim: isize, keepdim: bool) -> Result<(Tensor, Tensor)> {
        self.extreme_dim("max", dim, keepdim, true)
    }

    /// Smallest element along `dim` and where it is (the first one on ties; NaN wins), as
    /// `torch.min(x, dim)`: the values, and their indices as an i64 tensor of the same
    /// shape. Differentiable in the values (the gradient goes to that one element).
    pub fn min_dim(&self, dim: isize, keepdim: bool) -> Result<(Tensor, Tensor)> {
        self.extreme_dim("min", dim, keepdim, false)
    }

    fn extreme_dim(&self, op: &'static str, dim: isize, keepdim: bool, largest: bool) -> Result<(Tensor, Tensor)> {
        self.check_float(op)?;
        let d = normalize_dim(op, dim, self.rank())?;
        if self.shape()[d] == 0 {
            return Err(Error::invalid_shape(op, format!("cannot take the {op} over empty dim {d}"), self.shape()));
        }
        let idx = self.arg_extreme(d, largest)?;
        let mut kept = self.shape().to_vec();
        kept[d] = 1;
        let values = self.gather_positions(d, &idx, &kept)?;
        let indices = Tensor::from_vec(idx.iter().map(|&i| i as i64).collect::<Vec<i64>>(), &kept)?;
        Ok(if keepdim { (values, indices) } else { (values.squeeze(dim)?, indices.squeeze(dim)?) })
    }

    /// Index of the largest element along `dim` (the first on ties; NaN wins), as an i64
    /// tensor with `dim` removed (`torch.argmax(x, dim)`).
    pub fn argmax(&self, dim: isize) -> Result<Tensor> {
        self.arg_index("argmax", dim, true)
    }

    /// Index of the smallest element along `dim` (the first on ties; NaN wins), as an i64
    /// tensor with `dim` removed (`torch.argmin(x, dim)`).
    pub fn argmin(&self, dim: isize) -> Result<Tensor> {
        self.arg_index("argmin", dim, false)
    }

    fn arg_index(&self, op: &'static str, dim: isize, largest: bool) -> Result<Tensor> {
        self.check_float(op)?;
        let d = normalize_dim(op, dim, self.rank())?;
        if self.shape()[d] == 0 {
            return Err(Error::invalid_shape(op, format!("cannot take the {op} over empty dim {d}"), self.shape()));
        }
        let idx = self.arg_extreme(d, largest)?;
        let mut shape = self.shape().to_vec();
        shape.remove(d);
        Tensor::from_vec(idx.iter().map(|&i| i as i64).collect::<Vec<i64>>(), &shape)
    }

    /// Positions of the largest (or smallest) element along `d`, in row-major order of the
    /// remaining dims; the first wins ties, and a NaN beats any number.
    fn arg_extreme(&self, d: usize, largest: bool) -> Result<Vec<usize>> {
        let (outer, r, inner) = split3(self.shape(), d);
        // Float: every caller checked.
        Ok(crate::dispatch_float!(self.storage(), |_s: T| {
            let x = self.contiguous_data::<T>()?;
            let mut idx = vec![0usize; outer * inner];
            for o in 0..outer {
                for i in 0..inner {
                    let mut best = x[o * r * inner + i];
                    let mut bi = 0;
                    for k in 1..r {
                        let v = x[(o * r + k) * inner + i];
                        let better = if largest { v > best } else { v < best };
                        if better || (v.is_nan() && !best.is_nan()) {
                            best = v;
                            bi = k;
                        }
                    }
                    idx[o * inner + i] = bi;
                }
            }
            idx
        }))
    }

    /// `log(sum(exp(x)))` along `dim`, shifted by the (constant) max so it cannot overflow.
    /// NaN anywhere in a slice gives NaN. An infinite max is not subtracted (the shift is 0
    /// there, as PyTorch does), so a slice holding `inf` gives `inf` and one of only `-inf`
    /// gives `-inf`, where `inf - inf` would make NaN.
    pub fn logsumexp(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        let m = infinite_to_zero(&self.max_shift("logsumexp", dim)?);
        let out = self.sub(&m)?.exp().sum_dims(&[dim], true)?.log().add(&m)?;
        if keepdim {
            Ok(out)
        } else {
            out.squeeze(dim)
        }
    }

    /// `exp(x) / sum(exp(x))` along `dim`, computed on `x - max` for stability (the
    /// shift is a constant: softmax does not depend on it, so no gradient is lost).
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        let m = self.max_shift("softmax", dim)?;
        let e = self.sub(&m)?.exp();
        e.div(&e.sum_dims(&[dim], true)?)
    }

    /// `x - logsumexp(x)` along `dim`.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        let m = self.max_shift("log_softmax", dim)?;
        let s = self.sub(&m)?;
        s.sub(&s.exp().sum_dims(&[dim], true)?.log())
    }

    /// The (detached) max along `dim` that the softmax family subtracts; errors name `op`.
    fn max_shift(&self, op: &'static str, dim: isize) -> Result<Tensor> {
        self.check_float(op)?;
        let d = normalize_dim(op, dim, self.rank())?;
        if self.shape()[d] == 0 {
            return Err(Error::invalid_shape(op, format!("cannot reduce over empty dim {d}"), self.shape()));
        }
        Ok(self.max_dim(dim, true)?.0.detach())
    }
}

/// `t` with every infinite value replaced by 0 (NaN kept), detached: a shift for logsumexp
/// (float: `max_shift` checked).
fn infinite_to_zero(t: &Tensor) -> Tensor {
    let storage = crate::dispatch_float!(t.storage(), |_s: T| {
        let v = t.contiguous_data::<T>().expect("own dtype");
        T::into_storage(v.iter().map(|&x| if x.is_infinite() { T::zero() } else { x }).collect())
    });
    Tensor::from_storage(storage, t.shape())
}
