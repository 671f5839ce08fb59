//! Parameters: leaves that persist across training steps. Each step's graph starts from
//! `param.tensor()`, a leaf that shares the parameter's gradient slot, so gradients from
//! every use add up in `param.grad()` and the optimiser can update the value in place
//! once the step's graph is gone.

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::tape::GradSlot;
use crate::tensor::Tensor;
use std::sync::{Arc, Mutex, RwLock};

/// A trainable tensor with a persistent `.grad`. Cloning shares the same parameter.
#[derive(Clone)]
pub struct Parameter(Arc<ParamInner>);

struct ParamInner {
    value: RwLock<Tensor>,
    grad: GradSlot,
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
        Parameter(Arc::new(ParamInner { value: RwLock::new(v), grad: Arc::new(Mutex::new(None)) }))
    }

    /// The value as a leaf of the current graph; gradients flow into `self.grad()`.
    pub fn tensor(&self) -> Tensor {
        self.0.value.read().unwrap().with_grad_slot(self.0.grad.clone())
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
