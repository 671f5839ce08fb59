//! Optimisers: SGD (momentum, Nesterov, weight decay) and Adam, with PyTorch's update
//! rules. Parameters are updated in place once the step's graph is gone.

use crate::error::{Error, Result};
use autograd::{Element, Parameter, Storage, Tensor};

/// Something that updates parameters from their gradients.
pub trait Optimizer {
    /// Applies one update using the accumulated gradients (parameters without a gradient
    /// are left alone).
    fn step(&mut self) -> Result<()>;
    /// The parameters being optimised.
    fn params(&self) -> &[Parameter];
    /// Forgets every parameter's gradient.
    fn zero_grad(&self) {
        self.params().iter().for_each(|p| p.zero_grad());
    }
    /// The learning rate.
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    /// Internal state (momentum buffers, moments, step count), named, for checkpoints.
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Restores what [`Optimizer::state`] returned.
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()>;
}

/// A per-parameter buffer in the parameter's dtype.
fn zeros_like(p: &Parameter) -> Storage {
    match p.dtype() {
        autograd::DType::F32 => Storage::F32(vec![0.0; p.numel()]),
        autograd::DType::F64 => Storage::F64(vec![0.0; p.numel()]),
        dtype => unreachable!("a parameter is float (Parameter::new checks), not {dtype}"),
    }
}

fn storage_tensor(s: &Storage, shape: &[usize]) -> Tensor {
    autograd::dispatch_all!(s, |v: T| Tensor::from_vec(v.clone(), shape).expect("buffer matches its parameter"))
}

fn load_buffer(state: &[(String, Tensor)], key: &str, p: &Parameter) -> Result<Option<Storage>> {
    let Some((_, t)) = state.iter().find(|(k, _)| k == key) else { return Ok(None) };
    if t.shape() != p.shape().as_slice() {
        return Err(Error::StateDict(format!("optimizer state '{key}' has shape {:?}, parameter {:?}", t.shape(), p.shape())));
    }
    // A NaN moment would turn the weights NaN at the first step.
    if let Some((i, v)) = crate::module::first_non_finite(t) {
        return Err(Error::StateDict(format!("optimizer state '{key}' holds {v} at index {i} (a non-finite value)")));
    }
    Ok(Some(match p.dtype() {
        autograd::DType::F32 => Storage::F32(t.to_vec()),
        autograd::DType::F64 => Storage::F64(t.to_vec()),
        dtype => unreachable!("a parameter is float (Parameter::new checks), not {dtype}"),
    }))
}

/// In anomaly mode ([`autograd::set_detect_anomaly`]), fails if a step left a parameter
/// NaN or infinite, naming the optimiser, the parameter's position and the first bad
/// value: a finite loss before the step says nothing about the weights after it.
fn check_after_step(opt: &str, params: &[Parameter]) -> Result<()> {
    if !autograd::is_anomaly_enabled() {
        return Ok(());
    }
    for (k, p) in params.iter().enumerate() {
        if let Some((i, v)) = crate::module::first_non_finite(&p.data()) {
            return Err(Error::Diverged(format!(
                "anomaly: the {opt} step left parameter {k} {} holding {v} at index {i}",
                autograd::error::fmt_shape(&p.shape())
            )));
        }
    }
    Ok(())
}

/// Stochastic gradient descent, as `torch.optim.SGD` (no dampening).
pub struct Sgd {
    params: Vec<Parameter>,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    buffers: Vec<Option<Storage>>,
}

impl Sgd {
    pub fn new(params: Vec<Parameter>, lr: f64) -> Self {
        let n = params.len();
        Sgd { params, lr, momentum: 0.0, nesterov: false, weight_decay: 0.0, buffers: vec![None; n] }
    }
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }
    pub fn nesterov(mut self, on: bool) -> Self {
        self.nesterov = on;
        self
    }
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }
}

/// SGD's hyper-parameters for one update.
#[derive(Clone, Copy)]
struct SgdHyper {
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
}

fn sgd_update<T: Element>(w: &mut [T], g: &[T], buf: Option<&mut [T]>, first: bool, h: SgdHyper) {
    let (lr, mom, wd, nesterov) = (T::from_f64(h.lr), T::from_f64(h.momentum), T::from_f64(h.weight_decay), h.nesterov);
    match buf {
        None => {
            for (w, &g) in w.iter_mut().zip(g) {
                let d = if wd != T::zero() { g + wd * *w } else { g };
                *w = *w - lr * d;
            }
        }
        Some(b) => {
            for ((w, &g), b) in w.iter_mut().zip(g).zip(b.iter_mut()) {
                let d = if wd != T::zero() { g + wd * *w } else { g };
                *b = if first { d } else { mom * *b + d };
                let d = if nesterov { d + mom * *b } else { *b };
                *w = *w - lr * d;
            }
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        if self.nesterov && self.momentum <= 0.0 {
            return Err(Error::Usage("SGD: Nesterov momentum requires a momentum > 0".into()));
        }
        for (p, buf) in self.params.iter().zip(self.buffers.iter_mut()) {
            let Some(g) = p.grad() else { continue };
            let first = buf.is_none();
            if self.momentum != 0.0 && buf.is_none() {
                *buf = Some(zeros_like(p));
            }
            let h = SgdHyper { lr: self.lr, momentum: self.momentum, nesterov: self.nesterov, weight_decay: self.weight_decay };
            autograd::dispatch!("Sgd::step", g.storage(), |_s: T| {
                let gd = g.contiguous_data::<T>()?;
                let b = buf.as_mut().map(|s| T::slice_mut(s).expect("buffer has its parameter's dtype").as_mut_slice());
                p.update::<T>(|w| sgd_update(w, &gd, b, first, h))?;
            });
        }
        check_after_step("SGD", &self.params)
    }
    fn params(&self) -> &[Parameter] {
        &self.params
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.buffers)
            .enumerate()
            .filter_map(|(i, (p, b))| b.as_ref().map(|b| (format!("momentum_buffer.{i}"), storage_tensor(b, &p.shape()))))
            .collect()
    }
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        for (i, p) in self.params.iter().enumerate() {
            self.buffers[i] = load_buffer(state, &format!("momentum_buffer.{i}"), p)?;
        }
        Ok(())
    }
}

/// Adam, as `torch.optim.Adam` (no amsgrad; L2 weight decay added to the gradient).
pub struct Adam {
    params: Vec<Parameter>,
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    step: u64,
    m: Vec<Storage>,
    v: Vec<Storage>,
}

impl Adam {
    pub fn new(params: Vec<Parameter>, lr: f64) -> Self {
        let m: Vec<Storage> = params.iter().map(zeros_like).collect();
        let v = m.clone();
        Adam { params, lr, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, step: 0, m, v }
    }
    pub fn betas(mut self, b1: f64, b2: f64) -> Self {
        self.betas = (b1, b2);
        self
    }
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }
}

#[allow(clippy::too_many_arguments)]
fn adam_update<T: Element>(w: &mut [T], g: &[T], m: &mut [T], v: &mut [T], step: u64, lr: f64, (b1, b2): (f64, f64), eps: f64, wd: f64) {
    // Clamped: `as i32` would wrap to a negative power past 2^31 steps (b^(2^31) is 0 anyway).
    let step = step.min(i32::MAX as u64) as i32;
    let bc1 = 1.0 - b1.powi(step);
    let bc2 = 1.0 - b2.powi(step);
    let step_size = T::from_f64(lr / bc1);
    let bc2_sqrt = T::from_f64(bc2.sqrt());
    let (b1, b2, eps, wd) = (T::from_f64(b1), T::from_f64(b2), T::from_f64(eps), T::from_f64(wd));
    let one = T::one();
    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = if wd != T::zero() { g + wd * *w } else { g };
        *m = b1 * *m + (one - b1) * g;
        *v = b2 * *v + (one - b2) * g * g;
        let denom = v.sqrt() / bc2_sqrt + eps;
        *w = *w - step_size * *m / denom;
    }
}

impl Optimizer for Adam {
    fn step(&mut self) -> Result<()> {
        self.step = self.step.saturating_add(1);
        for ((p, m), v) in self.params.iter().zip(self.m.iter_mut()).zip(self.v.iter_mut()) {
            let Some(g) = p.grad() else { continue };
            let (step, lr, betas, eps, wd) = (self.step, self.lr, self.betas, self.eps, self.weight_decay);
            autograd::dispatch!("Adam::step", g.storage(), |_s: T| {
                let gd = g.contiguous_data::<T>()?;
                let (m, v) = (T::slice_mut(m).expect("moment dtype"), T::slice_mut(v).expect("moment dtype"));
                p.update::<T>(|w| adam_update(w, &gd, m, v, step, lr, betas, eps, wd))?;
            });
        }
        check_after_step("Adam", &self.params)
    }
    fn params(&self) -> &[Parameter] {
        &self.params
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_string(), Tensor::scalar_dtype(self.step as f64, autograd::DType::F64))];
        for (i, p) in self.params.iter().enumerate() {
            out.push((format!("exp_avg.{i}"), storage_tensor(&self.m[i], &p.shape())));
            out.push((format!("exp_avg_sq.{i}"), storage_tensor(&self.v[i], &p.shape())));
        }
        out
    }
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let step = state.iter().find(|(k, _)| k == "step").ok_or_else(|| Error::StateDict("Adam state lacks 'step'".into()))?;
        // A whole number up to 2^53 (exact in the f64 a checkpoint stores it as): a NaN,
        // negative or huge step would wrap or saturate silently.
        let v = step.1.item()?;
        if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= (1u64 << 53) as f64) {
            return Err(Error::StateDict(format!("Adam 'step' must be a whole number from 0 to 2^53, got {v}")));
        }
        self.step = v as u64;
        for (i, p) in self.params.iter().enumerate() {
            self.m[i] = load_buffer(state, &format!("exp_avg.{i}"), p)?
                .ok_or_else(|| Error::StateDict(format!("Adam state lacks 'exp_avg.{i}'")))?;
            self.v[i] = load_buffer(state, &format!("exp_avg_sq.{i}"), p)?
                .ok_or_else(|| Error::StateDict(format!("Adam state lacks 'exp_avg_sq.{i}'")))?;
        }
        Ok(())
    }
}
