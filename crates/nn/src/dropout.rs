//! `Dropout` and `Dropout2d`, as PyTorch's: in training mode each element (or each whole
//! channel) is zeroed with probability `p` and the rest scaled by `1 / (1 - p)`; in
//! evaluation mode the layer is the identity. Masks come from this thread's default
//! generator (`autograd::manual_seed`), so a seeded run draws the same masks at any
//! thread count. The maths is `ops::dropout` / `ops::dropout2d`.

use crate::activation::py_float;
use crate::error::{Error, Result};
use crate::module::{Module, Training, Visitor};
use autograd::Tensor;

fn check_p(layer: &'static str, p: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::config(layer, format!("dropout probability has to be between 0 and 1, but got {p}")));
    }
    Ok(())
}

/// Zeroes elements with probability `p` in training mode (PyTorch's `nn.Dropout`, default
/// `p = 0.5`). `p = 0` draws nothing; `p = 1` gives zeros.
#[derive(Debug)]
pub struct Dropout {
    pub p: f64,
    training: Training,
}

impl Dropout {
    /// An error naming `Dropout` for `p` outside `[0, 1]`.
    pub fn new(p: f64) -> Result<Dropout> {
        check_p("Dropout", p)?;
        Ok(Dropout { p, training: Training::default() })
    }
}

impl Default for Dropout {
    fn default() -> Self {
        Dropout { p: 0.5, training: Training::default() }
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::dropout(x, self.p, self.training.get())?)
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        v.training(&self.training);
    }
    fn describe(&self) -> String {
        format!("Dropout(p={}, inplace=False)", py_float(self.p))
    }
}

/// Zeroes whole channels (`x[n, c]` planes) with probability `p` in training mode
/// (PyTorch's `nn.Dropout2d`). Takes `[N, C, H, W]`, or `[N, C, L]` read as batched
/// channels (PyTorch's present behaviour for 3-d inputs, without its warning).
#[derive(Debug)]
pub struct Dropout2d {
    pub p: f64,
    training: Training,
}

impl Dropout2d {
    /// An error naming `Dropout2d` for `p` outside `[0, 1]`.
    pub fn new(p: f64) -> Result<Dropout2d> {
        check_p("Dropout2d", p)?;
        Ok(Dropout2d { p, training: Training::default() })
    }
}

impl Default for Dropout2d {
    fn default() -> Self {
        Dropout2d { p: 0.5, training: Training::default() }
    }
}

impl Module for Dropout2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::dropout2d(x, self.p, self.training.get())?)
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        v.training(&self.training);
    }
    fn describe(&self) -> String {
        format!("Dropout2d(p={}, inplace=False)", py_float(self.p))
    }
}
