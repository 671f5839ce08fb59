//! Element-wise activations as PyTorch's `torch.nn.functional` has them: `leaky_relu`,
//! `elu`, `gelu` (exact, and the tanh approximation), `silu`, `softplus`, `hardtanh`, and
//! the `erf` that exact GELU is made of.
//!
//! Each is one pass forward (the loops in `cpu/unary.rs`) and one pass back: the maths of
//! a function and of its derivative sit side by side in one `Pointwise` impl, which the
//! forward and the first-order backward both call. Under `create_graph` the rule instead
//! builds the derivative from recorded ops (`Pointwise::derivative`), so every
//! activation is differentiable again; the gradchecks compare both paths with finite
//! differences. NaN in gives NaN out, and the gradient at NaN follows PyTorch's kernels.
//! The formulas are in docs/gradients.md ("More activations").

use crate::cpu::unary;
use autograd::{record, Element, Error, Result, Tensor};

/// An element-wise function with its derivative, the maths shared by the forward, the
/// first-order backward and the recorded derivative.
trait Pointwise: Copy + Send + Sync + 'static {
    const NAME: &'static str;
    /// `f(x)`.
    fn f<T: Element>(self, x: T) -> T;
    /// `f'(x)`.
    fn df<T: Element>(self, x: T) -> T;
    /// `f'(x)` made of recorded ops, for a backward that is itself differentiated.
    fn derivative(self, x: &Tensor) -> Result<Tensor>;
}

/// `f(x)` as a recorded op whose rule is `g f'(x)`.
fn apply<A: Pointwise>(a: A, x: &Tensor) -> Result<Tensor> {
    x.check_float(A::NAME)?;
    let y = autograd::dispatch!(A::NAME, x.storage(), |_s: T| {
        let v = x.contiguous_data::<T>()?;
        Tensor::from_vec(unary::map(&v, |v| a.f(v)), x.shape())?
    });
    Ok(record(A::NAME, y, &[x], move |ctx| {
        let (x, g) = (ctx.input(0), ctx.grad_output());
        if ctx.create_graph() {
            return Ok(vec![Some(g.mul(&a.derivative(x)?)?)]);
        }
        let dx = autograd::dispatch!(A::NAME, x.storage(), |_s: T| {
            let (gv, xv) = (g.contiguous_data::<T>()?, x.contiguous_data::<T>()?);
            Tensor::from_vec(unary::zip(&gv, &xv, |g, v| g * a.df(v)), x.shape())?
        });
        Ok(vec![Some(dx)])
    }))
}

/// `f'(x)` as a constant tensor (not recorded): for a derivative that is piecewise
/// constant, whose own derivative is zero almost everywhere.
fn constant_derivative<A: Pointwise>(a: A, x: &Tensor) -> Result<Tensor> {
    Ok(autograd::dispatch!(A::NAME, x.storage(), |_s: T| {
        let v = x.contiguous_data::<T>()?;
        Tensor::from_vec(unary::map(&v, |v| a.df(v)), x.shape())?
    }))
}

/// A bool tensor, `pred(x)` element-wise (a constant selector for `where_`).
fn select<A: Pointwise>(x: &Tensor, pred: impl Fn(f64) -> bool) -> Result<Tensor> {
    let v = autograd::dispatch!(A::NAME, x.storage(), |_s: T| {
        x.contiguous_data::<T>()?.iter().map(|&v| pred(autograd::Scalar::to_f64(v))).collect::<Vec<bool>>()
    });
    Tensor::from_vec(v, x.shape())
}

fn scalar_like(v: f64, x: &Tensor) -> Tensor {
    Tensor::scalar_dtype(v, x.dtype())
}

// ----- leaky_relu --------------------------------------------------------------------

#[derive(Clone, Copy)]
struct LeakyRelu(f64);

impl Pointwise for LeakyRelu {
    const NAME: &'static str = "leaky_relu";
    fn f<T: Element>(self, x: T) -> T {
        if x > T::zero() {
            x
        } else {
            x * T::from_f64(self.0)
        }
    }
    fn df<T: Element>(self, x: T) -> T {
        if x > T::zero() {
            T::one()
        } else {
            T::from_f64(self.0)
        }
    }
    fn derivative(self, x: &Tensor) -> Result<Tensor> {
        constant_derivative(self, x)
    }
}

/// `x` where `x > 0`, else `negative_slope * x` (`F.leaky_relu`, default slope 0.01). The
/// gradient at 0 (and at NaN) is the slope, as PyTorch's.
pub fn leaky_relu(x: &Tensor, negative_slope: f64) -> Result<Tensor> {
    apply(LeakyRelu(negative_slope), x)
}

// ----- elu ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Elu(f64);

impl Pointwise for Elu {
    const NAME: &'static str = "elu";
    fn f<T: Element>(self, x: T) -> T {
        if x <= T::zero() {
            x.exp_m1() * T::from_f64(self.0)
        } else {
            x
        }
    }
    fn df<T: Element>(self, x: T) -> T {
        if x <= T::zero() {
            x.exp() * T::from_f64(self.0)
        } else {
            T::one()
        }
    }
    fn derivative(self, x: &Tensor) -> Result<Tensor> {
        // exp of min(x, 0): the branch not taken must not overflow, or its zero gradient
        // would meet an infinity (0 * inf = NaN) in a third-order pass.
        let neg = x.clamp_max(0.0).exp().mul_scalar(self.0);
        Tensor::where_(&select::<Self>(x, |v| v <= 0.0)?, &neg, &scalar_like(1.0, x))
    }
}

/// `x` where `x > 0`, else `alpha (e^x - 1)` (`F.elu`, default alpha 1).
pub fn elu(x: &Tensor, alpha: f64) -> Result<Tensor> {
    apply(Elu(alpha), x)
}

// ----- erf and gelu ------------------------------------------------------------------

/// The error function in the element's own precision (`libm`'s, to about an ulp).
fn erf_of<T: Element>(x: T) -> T {
    if T::DTYPE == autograd::DType::F64 {
        T::from_f64(libm::erf(autograd::Scalar::to_f64(x)))
    } else {
        T::from_f64(libm::erff(autograd::Scalar::to_f64(x) as f32) as f64)
    }
}

#[derive(Clone, Copy)]
struct Erf;

impl Pointwise for Erf {
    const NAME: &'static str = "erf";
    fn f<T: Element>(self, x: T) -> T {
        erf_of(x)
    }
    fn df<T: Element>(self, x: T) -> T {
        T::from_f64(std::f64::consts::FRAC_2_SQRT_PI) * (-(x * x)).exp()
    }
    fn derivative(self, x: &Tensor) -> Result<Tensor> {
        Ok(x.mul(x)?.neg().exp().mul_scalar(std::f64::consts::FRAC_2_SQRT_PI))
    }
}

/// The error function `erf(x) = 2/sqrt(pi) int_0^x e^(-t^2) dt` (`torch.erf`); the
/// gradient is `2/sqrt(pi) e^(-x^2)`.
pub fn erf(x: &Tensor) -> Result<Tensor> {
    apply(Erf, x)
}

/// Which GELU: the exact one (`'none'`, PyTorch's default) or the tanh approximation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GeluApproximate {
    /// `x Phi(x)` with the normal CDF `Phi(x) = (1 + erf(x / sqrt 2)) / 2`.
    #[default]
    None,
    /// `x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2`.
    Tanh,
}

impl GeluApproximate {
    /// PyTorch's name for it (`approximate='none'` or `'tanh'`).
    pub fn name(self) -> &'static str {
        match self {
            GeluApproximate::None => "none",
            GeluApproximate::Tanh => "tanh",
        }
    }
}

/// `1 / sqrt(2 pi)`, the normal density's factor.
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
/// `sqrt(2 / pi)`, the tanh approximation's scale.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_KAPPA: f64 = 0.044715;

#[derive(Clone, Copy)]
struct Gelu(GeluApproximate);

impl Pointwise for Gelu {
    const NAME: &'static str = "gelu";
    fn f<T: Element>(self, x: T) -> T {
        let half = T::from_f64(0.5);
        match self.0 {
            GeluApproximate::None => x * half * (T::one() + erf_of(x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2))),
            GeluApproximate::Tanh => {
                let inner = T::from_f64(SQRT_2_OVER_PI) * (x + T::from_f64(GELU_KAPPA) * x * x * x);
                half * x * (T::one() + inner.tanh())
            }
        }
    }
    fn df<T: Element>(self, x: T) -> T {
        let half = T::from_f64(0.5);
        match self.0 {
            GeluApproximate::None => {
                let cdf = half * (T::one() + erf_of(x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)));
                let pdf = T::from_f64(INV_SQRT_2PI) * (x * x * T::from_f64(-0.5)).exp();
                cdf + x * pdf
            }
            GeluApproximate::Tanh => {
                let (b, k) = (T::from_f64(SQRT_2_OVER_PI), T::from_f64(GELU_KAPPA));
                let x2 = x * x;
                let t = (b * (x + k * x2 * x)).tanh();
                let right = T::one() + t;
                half * right + half * x * ((T::one() - t * t) * b * (T::one() + T::from_f64(3.0) * k * x2))
            }
        }
    }
    fn derivative(self, x: &Tensor) -> Result<Tensor> {
        match self.0 {
            GeluApproximate::None => {
                let cdf = erf(&x.mul_scalar(std::f64::consts::FRAC_1_SQRT_2))?.add_scalar(1.0).mul_scalar(0.5);
                let pdf = x.mul(x)?.mul_scalar(-0.5).exp().mul_scalar(INV_SQRT_2PI);
                cdf.add(&x.mul(&pdf)?)
            }
            GeluApproximate::Tanh => {
                let x2 = x.mul(x)?;
                let t = x.add(&x2.mul(x)?.mul_scalar(GELU_KAPPA))?.mul_scalar(SQRT_2_OVER_PI).tanh();
                let left = t.add_scalar(1.0).mul_scalar(0.5);
                let slope =
                    t.mul(&t)?.neg().add_scalar(1.0).mul(&x2.mul_scalar(3.0 * GELU_KAPPA).add_scalar(1.0))?.mul_scalar(SQRT_2_OVER_PI);
                left.add(&x.mul_scalar(0.5).mul(&slope)?)
            }
        }
    }
}

/// The Gaussian error linear unit (`F.gelu(x, approximate=...)`).
pub fn gelu(x: &Tensor, approximate: GeluApproximate) -> Result<Tensor> {
    apply(Gelu(approximate), x)
}

// ----- silu --------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Silu;

impl Pointwise for Silu {
    const NAME: &'static str = "silu";
    fn f<T: Element>(self, x: T) -> T {
        // PyTorch's form: at x -> -inf the denominator is inf and the value -0, never NaN.
        x / (T::one() + (-x).exp())
    }
    fn df<T: Element>(self, x: T) -> T {
        let s = T::one() / (T::one() + (-x).exp());
        s * (T::one() + x * (T::one() - s))
    }
    fn derivative(self, x: &Tensor) -> Result<Tensor> {
        let s = x.sigmoid();
        s.mul(&x.mul(&s.neg().add_scalar(1.0))?.add_scalar(1.0))
    }
}

/// `x sigmoid(x)` (`F.silu`, also called swish).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    apply(Silu, x)
}

// ----- softplus ----------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Softplus {
    beta: f64,
    threshold: f64,
}

impl Pointwise for Softplus {
    const NAME: &'static str = "softplus";
    fn f<T: Element>(self, x: T) -> T {
        let bx = x * T::from_f64(self.beta);
        if bx > T::from_f64(self.threshold) {
            return x;
        }
        // log(1 + e^bx) = max(bx, 0) + log1p(e^-|bx|): never overflows, whatever the
        // threshold (PyTorch's log1p(exp(bx)) is inf past bx = 709 if it is raised).
        let m = if bx > T::zero() { bx } else { T::zero() };
        (m + (-bx.abs()).exp().ln_1p()) / T::from_f64(self.beta)
    }
    fn df<T: Element>(self, x: T) -> T {
        let bx = x * T::from_f64(self.beta);
        if bx > T::from_f64(self.threshold) {
            T::one()
        } else {
            Element::sigmoid(bx)
        }
    }
    fn derivative(self, x: &Tensor) -> Result<Tensor> {
        let (b, t) = (self.beta, self.threshold);
        Tensor::where_(&select::<Self>(x, |v| v * b > t)?, &scalar_like(1.0, x), &x.mul_scalar(b).sigmoid())
    }
}

/// `log(1 + e^(beta x)) / beta`, and `x` itself where `beta x > threshold` (`F.softplus`,
/// defaults beta 1, threshold 20). `beta` must be non-zero and finite.
pub fn softplus(x: &Tensor, beta: f64, threshold: f64) -> Result<Tensor> {
    if beta == 0.0 || !beta.is_finite() || threshold.is_nan() {
        return Err(Error::invalid(
            "softplus",
            format!("beta must be finite and non-zero and threshold a number, got beta={beta}, threshold={threshold}"),
        ));
    }
    apply(Softplus { beta, threshold }, x)
}

// ----- hardtanh ----------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Hardtanh(f64, f64);

impl Pointwise for Hardtanh {
    const NAME: &'static str = "hardtanh";
    fn f<T: Element>(self, x: T) -> T {
        let (lo, hi) = (T::from_f64(self.0), T::from_f64(self.1));
        if x < lo {
            lo
        } else if x > hi {
            hi
        } else {
            x
        }
    }
    fn df<T: Element>(self, x: T) -> T {
        // PyTorch's hardtanh_backward: 0 at the bounds themselves, 1 at NaN.
        if x <= T::from_f64(self.0) || x >= T::from_f64(self.1) {
            T::zero()
        } else {
            T::one()
        }
    }
    fn derivative(self, x: &Tensor) -> Result<Tensor> {
        constant_derivative(self, x)
    }
}

/// `x` clamped to `[min_val, max_val]` (`F.hardtanh`, defaults -1 and 1); the gradient is
/// 0 outside the open interval. `min_val > max_val` (or a NaN bound) is an error, as
/// PyTorch's `ValueError`.
pub fn hardtanh(x: &Tensor, min_val: f64, max_val: f64) -> Result<Tensor> {
    if min_val.is_nan() || max_val.is_nan() || min_val > max_val {
        return Err(Error::invalid("hardtanh", format!("min_val cannot be greater than max_val (or NaN), got {min_val} and {max_val}")));
    }
    apply(Hardtanh(min_val, max_val), x)
}
