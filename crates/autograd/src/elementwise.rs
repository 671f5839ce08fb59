//! Element-wise maths: unary functions, scalar arithmetic, and binary arithmetic with
//! NumPy/PyTorch broadcasting. Each op's gradient rule sits beside its kernel and is written
//! with these same ops, so every rule here is differentiable again (double backward).
//! The gradient of a broadcast operand is reduced back to its shape in one place,
//! [`Tensor::sum_to`].

use crate::activation::{relu, Activation};
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::parallel::for_each_chunk_mut;
use crate::shape::{broadcast_shapes, Layout};
use crate::tape::{record_saving, Saves};
use crate::tensor::Tensor;

/// Applies `f` to every element (parallel for large tensors), keeping a float dtype. An
/// i64 or bool input is promoted to f32 first, as PyTorch promotes integers for float
/// maths (`torch.exp(torch.tensor([1]))` is float32).
macro_rules! map_unary {
    ($x:expr, |$v:ident : $T:ident| $f:expr) => {{
        let promoted;
        let x: &Tensor = if $x.dtype().is_float() {
            $x
        } else {
            promoted = $x.to_dtype($crate::DType::F32);
            &promoted
        };
        let storage = $crate::dispatch_float!(x.storage(), |_s: $T| {
            let src = x.contiguous_data::<$T>().expect("dtype of its own storage");
            let mut out = $crate::buffers::for_overwrite::<$T>(src.len());
            for_each_chunk_mut(&mut out, |start, chunk| {
                let n = chunk.len();
                for (o, &$v) in chunk.iter_mut().zip(&src[start..start + n]) {
                    *o = $f;
                }
            });
            <$T as $crate::Scalar>::into_storage(out)
        });
        Tensor::from_storage(storage, x.shape())
    }};
}

impl Tensor {
    // ----- unary ------------------------------------------------------------------------

    pub fn neg(&self) -> Tensor {
        let out = map_unary!(self, |v: T| -v);
        record_saving("neg", out, &[self], Saves::NOTHING, |ctx| Ok(vec![Some(ctx.grad_output().neg())]))
    }

    pub fn exp(&self) -> Tensor {
        let out = map_unary!(self, |v: T| v.exp());
        // The derivative is the output (differentiable again under create_graph).
        record_saving("exp", out, &[self], Saves::OUTPUT, |ctx| Ok(vec![Some(ctx.grad_output().mul(ctx.output())?)]))
    }

    /// Natural logarithm.
    pub fn log(&self) -> Tensor {
        let out = map_unary!(self, |v: T| v.ln());
        record_saving("log", out, &[self], Saves::input(0), |ctx| Ok(vec![Some(ctx.grad_output().div(ctx.input(0))?)]))
    }

    /// `x^p` for a constant exponent.
    pub fn pow(&self, p: f64) -> Tensor {
        let out = map_unary!(self, |v: T| v.powf(T::from_f64(p)));
        record_saving("pow", out, &[self], Saves::input(0), move |ctx| {
            let d = ctx.input(0).pow(p - 1.0).mul_scalar(p);
            Ok(vec![Some(ctx.grad_output().mul(&d)?)])
        })
    }

    pub fn sqrt(&self) -> Tensor {
        let out = map_unary!(self, |v: T| v.sqrt());
        record_saving("sqrt", out, &[self], Saves::OUTPUT, |ctx| Ok(vec![Some(ctx.grad_output().div(&ctx.output().mul_scalar(2.0))?)]))
    }

    /// Absolute value; its gradient at 0 is 0 (as PyTorch's).
    pub fn abs(&self) -> Tensor {
        let out = map_unary!(self, |v: T| v.abs());
        record_saving("abs", out, &[self], Saves::input(0), |ctx| Ok(vec![Some(ctx.grad_output().mul(&ctx.input(0).sign())?)]))
    }

    /// Limits every element to `[min, max]`; the gradient is zero outside the range. NaN
    /// stays NaN (as PyTorch; `f32::max`/`min` alone would clamp it to `min`), with a zero
    /// gradient (PyTorch's rule: NaN is not inside the range). `min > max` gives `max`
    /// everywhere, and a NaN bound gives NaN everywhere, as PyTorch's.
    pub fn clamp(&self, min: f64, max: f64) -> Tensor {
        self.clamp_bounds("clamp", Some(min), Some(max))
    }

    /// `max(x, min)` element-wise (`torch.clamp(x, min=min)`): [`Tensor::clamp`] with no upper bound.
    pub fn clamp_min(&self, min: f64) -> Tensor {
        self.clamp_bounds("clamp_min", Some(min), None)
    }

    /// `min(x, max)` element-wise (`torch.clamp(x, max=max)`): [`Tensor::clamp`] with no lower bound.
    pub fn clamp_max(&self, max: f64) -> Tensor {
        self.clamp_bounds("clamp_max", None, Some(max))
    }

    /// `clamp` with either bound optional (a missing bound is infinite).
    fn clamp_bounds(&self, op: &'static str, min: Option<f64>, max: Option<f64>) -> Tensor {
        let (lo, hi) = (min.unwrap_or(f64::NEG_INFINITY), max.unwrap_or(f64::INFINITY));
        let nan_bound = lo.is_nan() || hi.is_nan();
        let out = map_unary!(self, |v: T| {
            let (l, h) = (T::from_f64(lo), T::from_f64(hi));
            let c = if v < l { l } else { v };
            let c = if c > h { h } else { c };
            if nan_bound {
                T::nan()
            } else {
                c
            }
        });
        record_saving(op, out, &[self], Saves::input(0), move |ctx| {
            let x = ctx.input(0);
            let inside = map_unary!(x, |v: T| if v >= T::from_f64(lo) && v <= T::from_f64(hi) { T::one() } else { T::zero() });
            Ok(vec![Some(ctx.grad_output().mul(&inside)?)])
        })
    }

    /// `1 / sqrt(x)`.
    pub fn rsqrt(&self) -> Tensor {
        let out = map_unary!(self, |v: T| T::one() / v.sqrt());
        record_saving("rsqrt", out, &[self], Saves::OUTPUT, |ctx| {
            // d/dx x^(-1/2) = -y^3 / 2, from the output as PyTorch's rule.
            let y = ctx.output();
            Ok(vec![Some(ctx.grad_output().mul(&y.mul(y)?.mul(y)?.mul_scalar(-0.5))?)])
        })
    }

    /// `ln(1 + x)`, accurate for small `x`.
    pub fn log1p(&self) -> Tensor {
        let out = map_unary!(self, |v: T| v.ln_1p());
        record_saving("log1p", out, &[self], Saves::input(0), |ctx| Ok(vec![Some(ctx.grad_output().div(&ctx.input(0).add_scalar(1.0))?)]))
    }

    /// `e^x - 1`, accurate for small `x`.
    pub fn expm1(&self) -> Tensor {
        let out = map_unary!(self, |v: T| v.exp_m1());
        record_saving("expm1", out, &[self], Saves::OUTPUT, |ctx| Ok(vec![Some(ctx.grad_output().mul(&ctx.output().add_scalar(1.0))?)]))
    }

    pub fn sin(&self) -> Tensor {
        let out = map_unary!(self, |v: T| v.sin());
        record_saving("sin", out, &[self], Saves::input(0), |ctx| Ok(vec![Some(ctx.grad_output().mul(&ctx.input(0).cos())?)]))
    }

    pub fn cos(&self) -> Tensor {
        let out = map_unary!(self, |v: T| v.cos());
        record_saving("cos", out, &[self], Saves::input(0), |ctx| Ok(vec![Some(ctx.grad_output().mul(&ctx.input(0).sin().neg())?)]))
    }

    /// `log(sigmoid(x)) = min(x, 0) - log1p(e^-|x|)`, finite for every finite `x`
    /// (`torch.nn.functional.logsigmoid`). The gradient is `sigmoid(-x)`.
    pub fn log_sigmoid(&self) -> Tensor {
        let out = map_unary!(self, |v: T| {
            let m = if v < T::zero() { v } else { T::zero() };
            m - (-v.abs()).exp().ln_1p()
        });
        record_saving("log_sigmoid", out, &[self], Saves::input(0), |ctx| {
            Ok(vec![Some(ctx.grad_output().mul(&ctx.input(0).neg().sigmoid())?)])
        })
    }

    /// Logistic function `1 / (1 + e^-x)`, computed without overflow for large |x|.
    pub fn sigmoid(&self) -> Tensor {
        let out = map_unary!(self, |v: T| Element::sigmoid(v));
        record_saving("sigmoid", out, &[self], Saves::OUTPUT, |ctx| {
            if !ctx.create_graph() {
                // One fused pass instead of four (the composed rule below is the spec).
                return Ok(vec![Some(binary_kernel::<SigmoidGradOp>("sigmoid_backward", ctx.grad_output(), ctx.output())?)]);
            }
            let y = ctx.output();
            let dy = y.mul(&y.neg().add_scalar(1.0))?;
            Ok(vec![Some(ctx.grad_output().mul(&dy)?)])
        })
    }

    pub fn tanh(&self) -> Tensor {
        let out = map_unary!(self, |v: T| v.tanh());
        record_saving("tanh", out, &[self], Saves::OUTPUT, |ctx| {
            if !ctx.create_graph() {
                return Ok(vec![Some(binary_kernel::<TanhGradOp>("tanh_backward", ctx.grad_output(), ctx.output())?)]);
            }
            let y = ctx.output();
            let dy = y.mul(y)?.neg().add_scalar(1.0);
            Ok(vec![Some(ctx.grad_output().mul(&dy)?)])
        })
    }

    /// `max(x, 0)`; the gradient at 0 is 0 (as PyTorch's). NaN stays NaN and passes its
    /// gradient (as PyTorch's).
    pub fn relu(&self) -> Tensor {
        let out = map_unary!(self, |v: T| relu(v));
        // The output, not the input: the next op usually keeps it anyway (a convolution
        // saves its input), and `relu(x) > 0` exactly where `x > 0` (NaN passes in both).
        record_saving("relu", out, &[self], Saves::OUTPUT, |ctx| {
            if !ctx.create_graph() {
                return Ok(vec![Some(binary_kernel::<ReluGradOp>("relu_backward", ctx.grad_output(), ctx.output())?)]);
            }
            let mask = ctx.output().relu_mask();
            Ok(vec![Some(ctx.grad_output().mul(&mask)?)])
        })
    }

    /// `x + c` for a constant.
    pub fn add_scalar(&self, c: f64) -> Tensor {
        let out = map_unary!(self, |v: T| v + T::from_f64(c));
        record_saving("add_scalar", out, &[self], Saves::NOTHING, |ctx| Ok(vec![Some(ctx.grad_output().clone())]))
    }

    /// `x * c` for a constant.
    pub fn mul_scalar(&self, c: f64) -> Tensor {
        let out = map_unary!(self, |v: T| v * T::from_f64(c));
        record_saving("mul_scalar", out, &[self], Saves::NOTHING, move |ctx| Ok(vec![Some(ctx.grad_output().mul_scalar(c))]))
    }

    // ----- non-differentiable helpers (constants in gradient rules) ----------------------

    /// 1 where `x > c`, else 0, in the input's dtype. Not differentiable (a step function).
    pub fn gt_scalar(&self, c: f64) -> Tensor {
        map_unary!(self, |v: T| if v > T::from_f64(c) { T::one() } else { T::zero() })
    }

    /// 0 where `x <= 0`, else 1 (NaN included): ReLU's derivative as PyTorch's
    /// `threshold_backward` takes it, so a NaN input passes its gradient on. Not
    /// differentiable.
    pub fn relu_mask(&self) -> Tensor {
        map_unary!(self, |v: T| if v <= T::zero() { T::zero() } else { T::one() })
    }

    /// -1, 0 or 1 by the sign of each element, NaN for NaN (so `abs`'s gradient at NaN is
    /// NaN, never a silent 0). Not differentiable.
    pub fn sign(&self) -> Tensor {
        map_unary!(self, |v: T| if v > T::zero() {
            T::one()
        } else if v < T::zero() {
            -T::one()
        } else if v.is_nan() {
            v
        } else {
            T::zero()
        })
    }

    /// True when every element is finite (no NaN or infinity).
    pub fn all_finite(&self) -> bool {
        if !self.dtype().is_float() {
            return true;
        }
        crate::dispatch_float!(self.storage(), |_s: T| slice_all_finite(&self.contiguous_data::<T>().expect("own dtype")))
    }

    // ----- binary with broadcasting -------------------------------------------------------

    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = binary_kernel::<AddOp>("add", self, rhs)?;
        Ok(record_saving("add", out, &[self, rhs], Saves::NOTHING, |ctx| {
            let g = ctx.grad_output();
            Ok(vec![
                grad_if(ctx.needs_grad(0), || g.sum_to(ctx.input_shape(0)))?,
                grad_if(ctx.needs_grad(1), || g.sum_to(ctx.input_shape(1)))?,
            ])
        }))
    }

    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = binary_kernel::<SubOp>("sub", self, rhs)?;
        Ok(record_saving("sub", out, &[self, rhs], Saves::NOTHING, |ctx| {
            let g = ctx.grad_output();
            Ok(vec![
                grad_if(ctx.needs_grad(0), || g.sum_to(ctx.input_shape(0)))?,
                grad_if(ctx.needs_grad(1), || g.neg().sum_to(ctx.input_shape(1)))?,
            ])
        }))
    }

    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        let out = binary_kernel::<MulOp>("mul", self, rhs)?;
        // Each side's gradient reads the other side only.
        let saves = Saves::NOTHING.and_input_if(1, self.requires_grad()).and_input_if(0, rhs.requires_grad());
        Ok(record_saving("mul", out, &[self, rhs], saves, |ctx| {
            let g = ctx.grad_output();
            Ok(vec![
                grad_if(ctx.needs_grad(0), || g.mul(ctx.input(1))?.sum_to(ctx.input_shape(0)))?,
                grad_if(ctx.needs_grad(1), || g.mul(ctx.input(0))?.sum_to(ctx.input_shape(1)))?,
            ])
        }))
    }

    /// `self / rhs`. Two i64 tensors divide as floats (f32), as PyTorch's true division
    /// does; `floor_divide` keeps integers.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        if self.dtype() == crate::DType::I64 && rhs.dtype() == crate::DType::I64 {
            return self.to_dtype(crate::DType::F32).div(&rhs.to_dtype(crate::DType::F32));
        }
        let out = binary_kernel::<DivOp>("div", self, rhs)?;
        // Both gradients read the divisor; only the divisor's reads the dividend.
        Ok(record_saving("div", out, &[self, rhs], Saves::input(1).and_input_if(0, rhs.requires_grad()), |ctx| {
            let g = ctx.grad_output();
            Ok(vec![
                grad_if(ctx.needs_grad(0), || g.div(ctx.input(1))?.sum_to(ctx.input_shape(0)))?,
                // d(a/b)/db = -a / b^2
                grad_if(ctx.needs_grad(1), || {
                    let (a, b) = (ctx.input(0), ctx.input(1));
                    g.mul(a)?.div(&b.mul(b)?)?.neg().sum_to(b.shape())
                })?,
            ])
        }))
    }

    /// `self^exponent` element-wise with broadcasting (`torch.pow` with a tensor exponent).
    /// Gradients as PyTorch's: `b a^(b-1)` for the base (0 where `b = 0`) and `a^b ln a`
    /// for the exponent (0 where `a = 0` and `b >= 0`).
    pub fn pow_tensor(&self, exponent: &Tensor) -> Result<Tensor> {
        let out = binary_kernel::<PowOp>("pow", self, exponent)?;
        let saves = if exponent.requires_grad() { Saves::ALL } else { Saves::INPUTS };
        Ok(record_saving("pow", out, &[self, exponent], saves, |ctx| {
            let (a, b, g) = (ctx.input(0), ctx.input(1), ctx.grad_output());
            let zero = Tensor::zeros_dtype(&[], g.dtype());
            let da = || {
                let d = g.mul(&b.mul(&a.pow_tensor(&b.add_scalar(-1.0))?)?)?;
                Tensor::where_(&b.eq(&zero)?, &zero, &d)?.sum_to(a.shape())
            };
            let db = || {
                let y = if ctx.create_graph() { a.pow_tensor(b)? } else { ctx.output().clone() };
                let d = g.mul(&y.mul(&a.log())?)?;
                let flat = binary_kernel::<PowZeroBaseOp>("pow", a, b)?.gt(&zero)?;
                Tensor::where_(&flat, &zero, &d)?.sum_to(b.shape())
            };
            Ok(vec![grad_if(ctx.needs_grad(0), da)?, grad_if(ctx.needs_grad(1), db)?])
        }))
    }

    /// The larger of two tensors element-wise with broadcasting (`torch.maximum`); NaN if
    /// either is NaN. Floats and i64. At a tie each side gets half the gradient (as PyTorch).
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        let out = binary_kernel::<MaxOp>("maximum", self, other)?;
        Ok(record_saving("maximum", out, &[self, other], Saves::INPUTS, |ctx| split_grad::<MaxWeightOp>("maximum", ctx)))
    }

    /// The smaller of two tensors element-wise with broadcasting (`torch.minimum`); NaN if
    /// either is NaN. Floats and i64. At a tie each side gets half the gradient (as PyTorch).
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        let out = binary_kernel::<MinOp>("minimum", self, other)?;
        Ok(record_saving("minimum", out, &[self, other], Saves::INPUTS, |ctx| split_grad::<MinWeightOp>("minimum", ctx)))
    }
}

/// The rule of `maximum`/`minimum`: `g` times a constant weight per side (1 where that
/// side was chosen, 1/2 at ties, 0 where the other was; 1 for both at NaN), summed back to
/// each operand's shape: `W(a, b)` weighs the first operand and `W(b, a)` the second.
fn split_grad<W: BinaryFn>(op: &'static str, ctx: &crate::tape::BackwardCtx) -> Result<Vec<Option<Tensor>>> {
    let (a, b, g) = (ctx.input(0), ctx.input(1), ctx.grad_output());
    Ok(vec![
        grad_if(ctx.needs_grad(0), || g.mul(&binary_kernel::<W>(op, a, b)?)?.sum_to(a.shape()))?,
        grad_if(ctx.needs_grad(1), || g.mul(&binary_kernel::<W>(op, b, a)?)?.sum_to(b.shape()))?,
    ])
}

/// Runs a gradient computation only for inputs that need one.
pub(crate) fn grad_if(needed: bool, f: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    if needed {
        f().map(Some)
    } else {
        Ok(None)
    }
}

/// Layout of `x` seen through the broadcast shape `out` (stride 0 on repeated dims).
pub(crate) fn broadcast_layout(x: &Layout, out: &[usize]) -> Layout {
    let pad = out.len() - x.shape.len();
    let mut strides: crate::shape::Strides = smallvec::SmallVec::from_elem(0, out.len());
    for i in 0..x.shape.len() {
        strides[pad + i] = if x.shape[i] == 1 { 0 } else { x.strides[i] };
    }
    Layout { shape: out.into(), strides, offset: x.offset }
}

/// A binary element-wise function, generic over the element type so each dtype gets
/// its own tight loop.
pub(crate) trait BinaryFn: Send + Sync {
    fn apply<T: Element>(a: T, b: T) -> T;
    /// The same function on i64 (wrapping), for the ops integers support.
    const INT: Option<fn(i64, i64) -> i64> = None;
}
macro_rules! binary_fn {
    ($name:ident, $a:ident, $b:ident, $e:expr) => {
        pub(crate) struct $name;
        impl BinaryFn for $name {
            #[inline(always)]
            fn apply<T: Element>($a: T, $b: T) -> T {
                $e
            }
        }
    };
    ($name:ident, $a:ident, $b:ident, $e:expr, $int:expr) => {
        pub(crate) struct $name;
        impl BinaryFn for $name {
            #[inline(always)]
            fn apply<T: Element>($a: T, $b: T) -> T {
                $e
            }
            const INT: Option<fn(i64, i64) -> i64> = Some($int);
        }
    };
}
binary_fn!(AddOp, a, b, a + b, i64::wrapping_add);
binary_fn!(SubOp, a, b, a - b, i64::wrapping_sub);
binary_fn!(MulOp, a, b, a * b, i64::wrapping_mul);
binary_fn!(DivOp, a, b, a / b);
binary_fn!(PowOp, a, b, a.powf(b));
// NaN wins (either side), as PyTorch's `maximum`/`minimum`.
binary_fn!(MaxOp, a, b, if a.is_nan() || a > b { a } else { b }, std::cmp::max::<i64>);
binary_fn!(MinOp, a, b, if a.is_nan() || a < b { a } else { b }, std::cmp::min::<i64>);
// Gradient weight of `maximum`'s (`minimum`'s) first operand; the second's is the same
// with the arguments swapped: 1/2 at ties, 0 where the other side wins, else (NaN too) 1.
binary_fn!(
    MaxWeightOp,
    a,
    b,
    if a == b {
        T::from_f64(0.5)
    } else if a < b {
        T::zero()
    } else {
        T::one()
    }
);
binary_fn!(
    MinWeightOp,
    a,
    b,
    if a == b {
        T::from_f64(0.5)
    } else if a > b {
        T::zero()
    } else {
        T::one()
    }
);
// 1 where the exponent's gradient is 0 by PyTorch's convention: base 0, exponent >= 0.
binary_fn!(PowZeroBaseOp, a, b, if a == T::zero() && b >= T::zero() { T::one() } else { T::zero() });
// Fused first-order rules: (gradient, saved value) -> input gradient.
binary_fn!(SigmoidGradOp, g, y, Activation::Sigmoid.grad_from_output(g, y));
binary_fn!(TanhGradOp, g, y, Activation::Tanh.grad_from_output(g, y));
// From the input or the output alike: x > 0 exactly where relu(x) > 0.
binary_fn!(ReluGradOp, g, x, Activation::Relu.grad_from_output(g, x));

pub(crate) fn binary_kernel<F: BinaryFn>(op: &'static str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    if let (crate::DType::I64, Some(f)) = (a.dtype(), F::INT) {
        return crate::integer::broadcast_i64(op, a, b, |x, y| Some(f(x, y)));
    }
    let shape = broadcast_shapes(op, a.shape(), b.shape())?;
    let storage = crate::dispatch!(op, a.storage(), |_s: T| T::into_storage(binary_typed::<T>(a, b, &shape, F::apply::<T>)));
    Ok(Tensor::from_storage(storage, &shape))
}

fn binary_typed<T: Element>(a: &Tensor, b: &Tensor, shape: &[usize], f: impl Fn(T, T) -> T + Send + Sync) -> Vec<T> {
    let n: usize = shape.iter().product();
    let mut out = crate::buffers::for_overwrite::<T>(n);
    if a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous() {
        let (x, y) = (a.as_slice::<T>().unwrap(), b.as_slice::<T>().unwrap());
        for_each_chunk_mut(&mut out, |s, c| {
            let n = c.len();
            for ((o, &p), &q) in c.iter_mut().zip(&x[s..s + n]).zip(&y[s..s + n]) {
                *o = f(p, q);
            }
        });
        return out;
    }
    if b.numel() == 1 && a.shape() == shape && a.is_contiguous() {
        let (x, q) = (a.as_slice::<T>().unwrap(), b.to_vec::<T>()[0]);
        for_each_chunk_mut(&mut out, |s, c| {
            let n = c.len();
            for (o, &p) in c.iter_mut().zip(&x[s..s + n]) {
                *o = f(p, q);
            }
        });
        return out;
    }
    if a.numel() == 1 && b.shape() == shape && b.is_contiguous() {
        let (p, y) = (a.to_vec::<T>()[0], b.as_slice::<T>().unwrap());
        for_each_chunk_mut(&mut out, |s, c| {
            let n = c.len();
            for (o, &q) in c.iter_mut().zip(&y[s..s + n]) {
                *o = f(p, q);
            }
        });
        return out;
    }
    // General case: walk both operands through their broadcast views.
    let la = broadcast_layout(a.layout(), shape);
    let lb = broadcast_layout(b.layout(), shape);
    let (sa, sb) = (T::slice(a.storage()).unwrap(), T::slice(b.storage()).unwrap());
    if let Some((lead, inner, ka, kb)) = split_runs(&la, &lb) {
        // A tight loop per run of the trailing dims, runs in parallel (each output element
        // is still `f` of the same two values: the same bits at any thread count).
        let prefix = |l: &Layout| Layout { shape: l.shape[..lead].into(), strides: l.strides[..lead].into(), offset: l.offset };
        let mut starts = Vec::with_capacity(n / inner);
        crate::shape::for_each_offset_pair(&prefix(&la), &prefix(&lb), |p, q| starts.push((p, q)));
        crate::parallel::for_each_row_mut(&mut out, inner, |i, row| {
            let (p, q) = starts[i];
            match (ka, kb) {
                (Run::Contiguous, Run::Contiguous) => {
                    row.iter_mut().zip(&sa[p..p + inner]).zip(&sb[q..q + inner]).for_each(|((o, &x), &y)| *o = f(x, y))
                }
                (Run::Contiguous, Run::Constant) => {
                    let y = sb[q];
                    row.iter_mut().zip(&sa[p..p + inner]).for_each(|(o, &x)| *o = f(x, y))
                }
                (Run::Constant, Run::Contiguous) => {
                    let x = sa[p];
                    row.iter_mut().zip(&sb[q..q + inner]).for_each(|(o, &y)| *o = f(x, y))
                }
                (Run::Constant, Run::Constant) => row.fill(f(sa[p], sb[q])),
            }
        });
        return out;
    }
    let mut k = 0;
    crate::shape::for_each_offset_pair(&la, &lb, |p, q| {
        out[k] = f(sa[p], sb[q]);
        k += 1;
    });
    out
}

/// How an operand reads a run of trailing dims: as a contiguous slice, or one value
/// repeated (stride 0, as a per-channel vector broadcast over `H W`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Run {
    Contiguous,
    Constant,
}

/// How `l` reads dims `from..`: contiguously, constantly, or neither.
fn run_kind(l: &Layout, from: usize) -> Option<Run> {
    let (mut expect, mut contiguous, mut constant) = (1usize, true, true);
    for d in (from..l.shape.len()).rev() {
        if l.shape[d] == 1 {
            continue;
        }
        contiguous &= l.strides[d] == expect;
        constant &= l.strides[d] == 0;
        expect = expect.saturating_mul(l.shape[d]);
    }
    if contiguous {
        Some(Run::Contiguous)
    } else {
        constant.then_some(Run::Constant)
    }
}

/// Runs shorter than this go through the general walk (the per-run set-up would cost more).
const MIN_RUN: usize = 16;

/// The longest run of trailing dims over which both broadcast views read contiguously
/// or constantly: `(leading dims, run length, how a reads, how b reads)`, or `None` when
/// that run is shorter than [`MIN_RUN`]. Each kind only holds for shorter suffixes once it
/// holds for a longer one, so the scan stops at the first dim that breaks either.
fn split_runs(la: &Layout, lb: &Layout) -> Option<(usize, usize, Run, Run)> {
    let rank = la.shape.len();
    let mut best = None;
    for from in (0..rank).rev() {
        match (run_kind(la, from), run_kind(lb, from)) {
            (Some(ka), Some(kb)) => best = Some((from, ka, kb)),
            _ => break,
        }
    }
    let (from, ka, kb) = best?;
    let inner: usize = la.shape[from..].iter().product();
    (inner >= MIN_RUN).then_some((from, inner, ka, kb))
}

/// Whether every value is finite: blocks of 512 folded without short-circuit (which the
/// compiler vectorises), stopping at the first block with a NaN or infinity. The training
/// loop checks every parameter after every update with it.
fn slice_all_finite<T: crate::Element>(v: &[T]) -> bool {
    v.chunks(512).all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()))
}
