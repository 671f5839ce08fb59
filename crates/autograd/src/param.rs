//! Parameters: leaves that persist across training steps. Each step's graph starts from
//! `param.tensor()`, a leaf that shares the parameter's gradient slot, so gradients from
//! every use add up in `param.grad()` and the optimiser can update the value in place
//! once the step's graph is gone.

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::tape::GradSlot;
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A trainable tensor with a persistent `.grad`. Cloning shares the same parameter.
#[derive(Clone)]
pub struct Parameter(Arc<ParamInner>);

struct ParamInner {
    value: RwLock<Tensor>,
    grad: GradSlot,
    /// False when frozen: `tensor()` then gives a constant, so backward computes no
    /// gradient for it and optimisers skip it.
    requires_grad: AtomicBool,
}

impl Parameter {
    /// A parameter initialised with a copy of `value`'s data.
    ///
    /// # Panics
    /// If `value` is i64 or bool: a parameter collects gradients, which only floating point
    /// tensors have (as [`Tensor::requires_grad_`]).
    pub fn new(value: &Tensor) -> Parameter {
        assert!(value.dtype().is_float(), "Parameter::new: only floating point tensors can require gradients, not {}", value.dtype());
        let v = value.detach().contiguous().detach();
        Parameter(Arc::new(ParamInner { value: RwLock::new(v), grad: Arc::new(Mutex::new(None)), requires_grad: AtomicBool::new(true) }))
    }

    /// The value as a leaf of the current graph; gradients flow into `self.grad()`. A
    /// frozen parameter gives a constant (no gradient is computed for it).
    pub fn tensor(&self) -> Tensor {
        let v = self.0.value.read().unwrap();
        if self.requires_grad() {
            v.with_grad_slot(self.0.grad.clone())
        } else {
            v.clone()
        }
    }

    /// Whether backward computes this parameter's gradient (true unless frozen).
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }

    /// Freezes (`false`) or unfreezes the parameter, as PyTorch's `p.requires_grad_(False)`:
    /// a frozen parameter is a constant in every graph built afterwards, so backward does
    /// not compute its gradient and optimisers leave it alone. Its accumulated gradient is
    /// kept until `zero_grad`.
    pub fn requires_grad_(&self, on: bool) -> &Self {
        self.0.requires_grad.store(on, Ordering::Relaxed);
        self
    }

    /// Whether two handles are the same parameter (clones share one).
    pub fn same_as(&self, other: &Parameter) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Converts the value to another float dtype in place (`module.to_dtype` uses it, as
    /// PyTorch's `.double()`); the accumulated gradient is dropped, since it no longer
    /// matches. Same dtype: a no-op.
    ///
    /// # Errors
    /// For an i64 or bool target (a parameter stays floating point).
    pub fn convert(&self, dtype: DType) -> Result<()> {
        if !dtype.is_float() {
            return Err(Error::UnsupportedDType { op: "Parameter::convert", dtype });
        }
        let mut v = self.0.value.write().unwrap();
        if v.dtype() != dtype {
            *v = v.to_dtype(dtype).detach();
            *self.0.grad.lock().unwrap() = None;
        }
        Ok(())
    }

    /// The value, outside any graph.
    pub fn data(&self) -> Tensor {
        self.0.value.read().unwrap().clone()
    }

    pub fn shape(&self) -> Vec<usize> {
        self.0.value.read().unwrap().shape().to_vec()
    }
    pub fn dtype(&self) -> DType {
        self.0.value.read().unwrap().dtype()
    }
    pub fn numel(&self) -> usize {
        self.0.value.read().unwrap().numel()
    }

    /// The accumulated gradient, if any backward pass reached this parameter.
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.lock().unwrap().clone()
    }

    /// Forgets the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap() = None;
    }

    /// Replaces the accumulated gradient (`None` clears it, as `zero_grad`). The gradient
    /// must have the parameter's shape and dtype.
    pub fn set_grad(&self, grad: Option<&Tensor>) -> Result<()> {
        if let Some(g) = grad {
            let v = self.0.value.read().unwrap();
            if g.shape() != v.shape() {
                return Err(Error::mismatch(
                    "Parameter::set_grad",
                    "the gradient's shape differs from the parameter's",
                    v.shape(),
                    g.shape(),
                ));
            }
            if g.dtype() != v.dtype() {
                return Err(Error::DTypeMismatch { op: "Parameter::set_grad", lhs: v.dtype(), rhs: g.dtype() });
            }
        }
        *self.0.grad.lock().unwrap() = grad.map(|g| g.detach());
        Ok(())
    }

    /// Edits the accumulated gradient in place, as PyTorch's `p.grad.mul_(c)` (gradient
    /// clipping uses it). The gradient is copied first only if it is a view or shared.
    /// Returns `false`, doing nothing, when there is no gradient.
    pub fn update_grad<T: Element>(&self, f: impl FnOnce(&mut [T])) -> Result<bool> {
        let mut slot = self.0.grad.lock().unwrap();
        let Some(g) = slot.as_mut() else { return Ok(false) };
        if g.dtype() != T::DTYPE {
            return Err(Error::DTypeMismatch { op: "Parameter::update_grad", lhs: g.dtype(), rhs: T::DTYPE });
        }
        if !(g.is_contiguous() && g.0.layout.offset == 0 && g.storage().len() == g.numel()) {
            *g = g.contiguous().detach();
        }
        if Arc::get_mut(&mut g.0).is_none() {
            *g = g.detach();
        }
        let inner = Arc::get_mut(&mut g.0).expect("unique after detach");
        let storage = Arc::make_mut(&mut inner.storage);
        f(T::slice_mut(storage).expect("dtype checked"));
        Ok(true)
    }

    /// Replaces the value; the shape and dtype must stay the same.
    pub fn set(&self, value: &Tensor) -> Result<()> {
        let mut v = self.0.value.write().unwrap();
        if value.shape() != v.shape() {
            return Err(Error::mismatch("Parameter::set", "the new value's shape differs from the parameter's", v.shape(), value.shape()));
        }
        if value.dtype() != v.dtype() {
            return Err(Error::DTypeMismatch { op: "Parameter::set", lhs: v.dtype(), rhs: value.dtype() });
        }
        *v = value.detach().contiguous().detach();
        Ok(())
    }

    /// Edits the value in place (copying first only if a live graph still shares it).
    pub fn update<T: Element>(&self, f: impl FnOnce(&mut [T])) -> Result<()> {
        let mut v = self.0.value.write().unwrap();
        if v.dtype() != T::DTYPE {
            return Err(Error::DTypeMismatch { op: "Parameter::update", lhs: v.dtype(), rhs: T::DTYPE });
        }
        if Arc::get_mut(&mut v.0).is_none() {
            *v = v.detach();
        }
        let inner = Arc::get_mut(&mut v.0).expect("unique after detach");
        let storage = Arc::make_mut(&mut inner.storage);
        f(T::slice_mut(storage).expect("dtype checked"));
        Ok(())
    }
}

impl std::fmt::Debug for Parameter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Parameter containing:\n{}", self.tensor())
    }
}
