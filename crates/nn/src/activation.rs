//! Parameter-free layers: activations (ReLU, Sigmoid, Tanh; LeakyReLU, ELU, GELU, SiLU,
//! Softplus, Hardtanh, Softmax, LogSoftmax) and `Flatten`.

use crate::error::Result;
use crate::module::Module;
use autograd::Tensor;

macro_rules! activation {
    ($(#[$doc:meta])* $name:ident, $method:ident) => {
        $(#[$doc])*
        #[derive(Default, Clone, Copy, Debug)]
        pub struct $name;
        impl Module for $name {
            fn forward(&self, x: &Tensor) -> Result<Tensor> {
                Ok(x.$method())
            }
            fn describe(&self) -> String {
                format!("{}()", stringify!($name))
            }
        }
    };
}

activation!(
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    sigmoid
);
activation!(
    /// `max(x, 0)`.
    ReLU,
    relu
);
activation!(
    /// Hyperbolic tangent.
    Tanh,
    tanh
);

/// Flattens dims `start_dim..=end_dim` into one (PyTorch's `nn.Flatten`); the default,
/// `Flatten::default()`, flattens every dim after the batch dim (C, H, W order).
#[derive(Clone, Copy, Debug)]
pub struct Flatten {
    pub start_dim: isize,
    pub end_dim: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start_dim: 1, end_dim: -1 }
    }
}

impl Flatten {
    pub fn new(start_dim: isize, end_dim: isize) -> Self {
        Flatten { start_dim, end_dim }
    }
}

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // A 1-d input with the default dims is returned as it is, as PyTorch does for a
        // 0-d one: there is nothing after the batch dim to flatten.
        if x.rank() < 2 && self.start_dim == 1 {
            return Ok(x.clone());
        }
        Ok(x.flatten(self.start_dim, self.end_dim)?)
    }
    fn describe(&self) -> String {
        format!("Flatten(start_dim={}, end_dim={})", self.start_dim, self.end_dim)
    }
}

/// Passes its input through (PyTorch's `nn.Identity`), e.g. a residual branch's shortcut.
#[derive(Default, Clone, Copy, Debug)]
pub struct Identity;

impl Module for Identity {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
}

// ----- issue 26: more activations (the maths is in `ops::activation`) ------------------

/// A float as Python's repr writes it: `1.0`, `0.01`, `1e-05`.
pub(crate) fn py_float(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        crate::batch_norm::python_float(v)
    }
}

/// `x` for `x > 0`, else `negative_slope * x` (PyTorch's `nn.LeakyReLU`, default 0.01).
#[derive(Clone, Copy, Debug)]
pub struct LeakyReLU {
    pub negative_slope: f64,
}

impl Default for LeakyReLU {
    fn default() -> Self {
        LeakyReLU { negative_slope: 0.01 }
    }
}

impl LeakyReLU {
    pub fn new(negative_slope: f64) -> Self {
        LeakyReLU { negative_slope }
    }
}

impl Module for LeakyReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::leaky_relu(x, self.negative_slope)?)
    }
    fn describe(&self) -> String {
        format!("LeakyReLU(negative_slope={})", py_float(self.negative_slope))
    }
}

/// `x` for `x > 0`, else `alpha (e^x - 1)` (PyTorch's `nn.ELU`, default alpha 1).
#[derive(Clone, Copy, Debug)]
pub struct ELU {
    pub alpha: f64,
}

impl Default for ELU {
    fn default() -> Self {
        ELU { alpha: 1.0 }
    }
}

impl ELU {
    pub fn new(alpha: f64) -> Self {
        ELU { alpha }
    }
}

impl Module for ELU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::elu(x, self.alpha)?)
    }
    fn describe(&self) -> String {
        format!("ELU(alpha={})", py_float(self.alpha))
    }
}

/// The Gaussian error linear unit (PyTorch's `nn.GELU`): exact by default, or the tanh
/// approximation.
#[derive(Clone, Copy, Debug, Default)]
pub struct GELU {
    pub approximate: ops::GeluApproximate,
}

impl GELU {
    pub fn new(approximate: ops::GeluApproximate) -> Self {
        GELU { approximate }
    }
}

impl Module for GELU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::gelu(x, self.approximate)?)
    }
    fn describe(&self) -> String {
        format!("GELU(approximate='{}')", self.approximate.name())
    }
}

/// `x sigmoid(x)` (PyTorch's `nn.SiLU`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SiLU;

impl Module for SiLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::silu(x)?)
    }
    fn describe(&self) -> String {
        "SiLU()".into()
    }
}

/// `log(1 + e^(beta x)) / beta`, linear past `beta x > threshold` (PyTorch's
/// `nn.Softplus`, defaults beta 1, threshold 20).
#[derive(Clone, Copy, Debug)]
pub struct Softplus {
    pub beta: f64,
    pub threshold: f64,
}

impl Default for Softplus {
    fn default() -> Self {
        Softplus { beta: 1.0, threshold: 20.0 }
    }
}

impl Softplus {
    pub fn new(beta: f64, threshold: f64) -> Self {
        Softplus { beta, threshold }
    }
}

impl Module for Softplus {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::softplus(x, self.beta, self.threshold)?)
    }
    fn describe(&self) -> String {
        format!("Softplus(beta={}, threshold={})", py_float(self.beta), py_float(self.threshold))
    }
}

/// `x` clamped to `[min_val, max_val]` (PyTorch's `nn.Hardtanh`, defaults -1 and 1).
#[derive(Clone, Copy, Debug)]
pub struct Hardtanh {
    pub min_val: f64,
    pub max_val: f64,
}

impl Default for Hardtanh {
    fn default() -> Self {
        Hardtanh { min_val: -1.0, max_val: 1.0 }
    }
}

impl Hardtanh {
    /// An error naming `Hardtanh` when `min_val > max_val`, as PyTorch's constructor.
    pub fn new(min_val: f64, max_val: f64) -> Result<Self> {
        if min_val.is_nan() || max_val.is_nan() || min_val > max_val {
            return Err(crate::Error::config("Hardtanh", format!("min_val cannot be greater than max_val, got {min_val} and {max_val}")));
        }
        Ok(Hardtanh { min_val, max_val })
    }
}

impl Module for Hardtanh {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::hardtanh(x, self.min_val, self.max_val)?)
    }
    fn describe(&self) -> String {
        format!("Hardtanh(min_val={}, max_val={})", py_float(self.min_val), py_float(self.max_val))
    }
}

/// `exp(x) / sum(exp(x))` along `dim` (PyTorch's `nn.Softmax(dim)`; the dim is required,
/// where PyTorch guesses one with a warning).
#[derive(Clone, Copy, Debug)]
pub struct Softmax {
    pub dim: isize,
}

impl Softmax {
    pub fn new(dim: isize) -> Self {
        Softmax { dim }
    }
}

impl Module for Softmax {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.softmax(self.dim)?)
    }
    fn describe(&self) -> String {
        format!("Softmax(dim={})", self.dim)
    }
}

/// `x - logsumexp(x)` along `dim` (PyTorch's `nn.LogSoftmax(dim)`).
#[derive(Clone, Copy, Debug)]
pub struct LogSoftmax {
    pub dim: isize,
}

impl LogSoftmax {
    pub fn new(dim: isize) -> Self {
        LogSoftmax { dim }
    }
}

impl Module for LogSoftmax {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.log_softmax(self.dim)?)
    }
    fn describe(&self) -> String {
        format!("LogSoftmax(dim={})", self.dim)
    }
}
