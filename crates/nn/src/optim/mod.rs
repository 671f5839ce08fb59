//! Optimisers as PyTorch users know them: [`Sgd`], [`Adam`], [`AdamW`], [`RmsProp`] and
//! [`Adagrad`], with parameter groups, state keyed by parameter name, and learning-rate
//! schedules ([`lr_scheduler`]).
//!
//! # Why one adaptor and many rules
//!
//! Every optimiser does the same plumbing: walk the parameter groups, skip a parameter that
//! is frozen or got no gradient, keep per-parameter state (moments, a step count), write
//! and read that state by parameter name, and check the weights after a step in anomaly
//! mode. Only the arithmetic on one tensor differs. So the plumbing lives here once, in
//! [`Optim`], and each optimiser is a small [`Rule`]: its hyper-parameters and a loop over
//! one parameter's elements (`sgd.rs`, `adam.rs`, ...), as burn's `SimpleOptimizer`.
//! Adding an optimiser is one small file, not a copy of the traversal and the state dict.
//!
//! The rules follow PyTorch's `_single_tensor_*` code paths operation by operation (the
//! same scalar factors computed in f64, the same order of operations), so an f64 run
//! follows PyTorch's parameter trajectory to rounding (`tests/optim.rs` checks 20 steps of
//! every optimiser against a fixture written by `tests/fixtures/optim_ref.py`).
//!
//! # State dicts
//!
//! [`Optimizer::state_dict`] gives named tensors, so a checkpoint can hold them beside the
//! weights:
//!
//! - `state.{param}.{buffer}`: a buffer shaped and typed like the parameter
//!   (`momentum_buffer`, `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`, `square_avg`,
//!   `grad_avg`, `sum`), present once the parameter has taken a step;
//! - `state.{param}.step`: the parameter's step count (f64 scalar), for rules that count;
//! - `param_groups.{g}.{key}`: each group's hyper-parameters (f64 scalars; flags as 0 or
//!   1), and `initial_lr` once a scheduler has set it, so a resumed run continues with the
//!   learning rate a schedule had reached.
//!
//! [`Optimizer::load_state_dict`] checks everything (names, shapes, finiteness, whole step
//! counts, valid hyper-parameters) before it changes anything.

mod adagrad;
mod adam;
mod adamw;
pub mod lr_scheduler;
mod rmsprop;
mod sgd;

pub use adagrad::{Adagrad, AdagradConfig, AdagradRule};
pub use adam::{Adam, AdamConfig, AdamRule};
pub use adamw::{AdamW, AdamWRule};
pub use rmsprop::{RmsProp, RmsPropConfig, RmsPropRule};
pub use sgd::{Sgd, SgdConfig, SgdRule};

use crate::error::{Error, Result};
use autograd::{DType, Element, Parameter, Storage, Tensor};

/// Something that updates parameters from their gradients. Object safe, so a training loop
/// can hold a `Box<dyn Optimizer>` and schedulers can drive any optimiser.
pub trait Optimizer {
    /// The optimiser's name as errors show it ("SGD", "Adam", ...).
    fn name(&self) -> &'static str;
    /// Applies one update from the accumulated gradients. Frozen parameters and parameters
    /// without a gradient are left alone (and their state does not advance).
    fn step(&mut self) -> Result<()>;
    /// Forgets every parameter's gradient.
    fn zero_grad(&self);
    /// The parameters being optimised, with their names, group after group.
    fn named_parameters(&self) -> Vec<(String, Parameter)>;
    /// The number of parameter groups (at least one).
    fn num_groups(&self) -> usize;
    /// A hyper-parameter of group `group` (`"lr"`, `"momentum"`, `"beta1"`, ...; flags as 0
    /// or 1), `None` if this optimiser has no such key or no such group.
    fn hyper(&self, group: usize, key: &str) -> Option<f64>;
    /// Sets a hyper-parameter of one group; an invalid value (negative learning rate, ...)
    /// or an unknown key is an error and changes nothing.
    fn set_hyper(&mut self, group: usize, key: &str, value: f64) -> Result<()>;
    /// The learning rate a scheduler started from (`initial_lr` in PyTorch's groups), set
    /// by the first scheduler built on this optimiser.
    fn initial_lr(&self, group: usize) -> Option<f64>;
    fn set_initial_lr(&mut self, group: usize, lr: f64);
    /// The learning rate of group 0.
    fn lr(&self) -> f64 {
        self.hyper(0, "lr").expect("every optimiser has at least one group with an lr")
    }
    /// Sets the learning rate of every group.
    fn set_lr(&mut self, lr: f64) -> Result<()> {
        (0..self.num_groups()).try_for_each(|g| self.set_hyper(g, "lr", lr))
    }
    /// The group learning rates, in group order.
    fn lrs(&self) -> Vec<f64> {
        (0..self.num_groups()).map(|g| self.hyper(g, "lr").expect("every group has an lr")).collect()
    }
    /// Internal state (buffers, step counts, group hyper-parameters), named by parameter
    /// name (see the [module docs](self)).
    fn state_dict(&self) -> Vec<(String, Tensor)>;
    /// Restores what [`Optimizer::state_dict`] returned, after checking all of it: on an
    /// error nothing changed.
    fn load_state_dict(&mut self, state: &[(String, Tensor)]) -> Result<()>;
    /// The shape an entry of [`Optimizer::state_dict`] named `key` may have, `None` if this
    /// optimiser never writes such an entry (a checkpoint reader checks headers with it
    /// before reading any data).
    fn entry_shape(&self, key: &str) -> Option<Vec<usize>>;
}

/// The hyper-parameters of one optimiser (one value per parameter group). Keys are the
/// names PyTorch's `param_groups` use, with `betas` split into `beta1` and `beta2`; flags
/// (`nesterov`, `maximize`, ...) are read and written as 0 or 1.
pub trait Hyper: Copy + std::fmt::Debug + Send + Sync + 'static {
    /// Every key, `lr` first.
    const KEYS: &'static [&'static str];
    fn get(&self, key: &str) -> Option<f64>;
    /// Sets a key; `Err` for an unknown key or a flag that is not 0 or 1.
    fn set(&mut self, key: &str, value: f64) -> std::result::Result<(), String>;
    /// PyTorch's constructor checks (`Invalid learning rate: -1`, ...).
    fn check(&self) -> std::result::Result<(), String>;
}

/// A value in a [`Hyper`] struct: a number, or a flag stored as 0 or 1.
pub trait HyperValue: Copy {
    fn to_hyper(self) -> f64;
    fn from_hyper(v: f64) -> std::result::Result<Self, String>;
}
impl HyperValue for f64 {
    fn to_hyper(self) -> f64 {
        self
    }
    fn from_hyper(v: f64) -> std::result::Result<Self, String> {
        Ok(v)
    }
}
impl HyperValue for bool {
    fn to_hyper(self) -> f64 {
        self as u8 as f64
    }
    fn from_hyper(v: f64) -> std::result::Result<Self, String> {
        match v {
            0.0 => Ok(false),
            1.0 => Ok(true),
            v => Err(format!("expects 0 or 1 (a flag), got {v}")),
        }
    }
}

/// Implements [`Hyper`]'s key access for a struct of `f64` and `bool` fields.
macro_rules! hyper_keys {
    ($t:ty { $($f:ident),* $(,)? }, $check:expr) => {
        impl $crate::optim::Hyper for $t {
            const KEYS: &'static [&'static str] = &[$(stringify!($f)),*];
            fn get(&self, key: &str) -> Option<f64> {
                match key {
                    $(stringify!($f) => Some($crate::optim::HyperValue::to_hyper(self.$f)),)*
                    _ => None,
                }
            }
            fn set(&mut self, key: &str, value: f64) -> std::result::Result<(), String> {
                match key {
                    $(stringify!($f) => self.$f = $crate::optim::HyperValue::from_hyper(value).map_err(|e| format!("'{key}' {e}"))?,)*
                    _ => return Err(format!("has no hyper-parameter '{key}'")),
                }
                Ok(())
            }
            fn check(&self) -> std::result::Result<(), String> {
                #[allow(clippy::redundant_closure_call)]
                ($check)(self)
            }
        }
    };
}
pub(crate) use hyper_keys;

/// `Err("Invalid {what}: {v}")` unless `ok` (NaN fails every comparison, so it is invalid).
pub(crate) fn require(ok: bool, what: &str, v: f64) -> std::result::Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("Invalid {what}: {v}"))
    }
}

/// One optimiser's arithmetic on one tensor: the part that differs between SGD, Adam, ...
/// [`Optim`] does everything else.
pub trait Rule: 'static {
    type Hyper: Hyper;
    /// PyTorch's class name, shown in errors.
    const NAME: &'static str;
    /// The names of the per-parameter buffers, in the order [`Rule::update`] receives them
    /// (at most three; unused slots are `""`).
    const BUFFERS: [&'static str; 3];
    /// Whether the rule counts steps per parameter (`state["step"]` in PyTorch).
    const COUNTS_STEPS: bool;
    /// The default hyper-parameters with this learning rate.
    fn defaults(lr: f64) -> Self::Hyper;
    /// The buffers a parameter that has taken a step must have (a loaded state without
    /// them is an error).
    fn required(h: &Self::Hyper) -> [bool; 3];
    /// Updates `w` in place from its gradient `g`. `step` is the parameter's step count
    /// including this one (0 for rules that do not count). A buffer is empty until the
    /// rule first fills it (to `w.len()` elements).
    fn update<T: Element>(h: &Self::Hyper, step: u64, w: &mut [T], g: &[T], bufs: [&mut Vec<T>; 3]);
}

/// Parameters with their own hyper-parameters, as an entry of PyTorch's `param_groups`:
/// `ParamGroup::new(biases).weight_decay(0.0)`. Keys not set take the optimiser's defaults.
#[derive(Clone)]
pub struct ParamGroup {
    params: Vec<(String, Parameter)>,
    options: Vec<(String, f64)>,
}

impl ParamGroup {
    pub fn new(params: Vec<(String, Parameter)>) -> Self {
        ParamGroup { params, options: Vec::new() }
    }
    /// Sets any hyper-parameter by key (flags as 0 or 1); an unknown key is an error when
    /// the optimiser is built.
    pub fn set(mut self, key: &str, value: f64) -> Self {
        self.options.retain(|(k, _)| k != key);
        self.options.push((key.to_string(), value));
        self
    }
    pub fn lr(self, lr: f64) -> Self {
        self.set("lr", lr)
    }
    pub fn weight_decay(self, wd: f64) -> Self {
        self.set("weight_decay", wd)
    }
    pub fn momentum(self, m: f64) -> Self {
        self.set("momentum", m)
    }
    pub fn betas(self, b1: f64, b2: f64) -> Self {
        self.set("beta1", b1).set("beta2", b2)
    }
    pub fn eps(self, eps: f64) -> Self {
        self.set("eps", eps)
    }
}

/// What an optimiser can be built from: named parameters (one group), unnamed ones (named
/// by position, `"0"`, `"1"`, ...), one [`ParamGroup`] or several.
pub trait IntoParamGroups {
    fn into_param_groups(self) -> Vec<ParamGroup>;
}
impl IntoParamGroups for Vec<(String, Parameter)> {
    fn into_param_groups(self) -> Vec<ParamGroup> {
        vec![ParamGroup::new(self)]
    }
}
impl IntoParamGroups for Vec<Parameter> {
    fn into_param_groups(self) -> Vec<ParamGroup> {
        vec![ParamGroup::new(self.into_iter().enumerate().map(|(i, p)| (i.to_string(), p)).collect())]
    }
}
impl IntoParamGroups for ParamGroup {
    fn into_param_groups(self) -> Vec<ParamGroup> {
        vec![self]
    }
}
impl IntoParamGroups for Vec<ParamGroup> {
    fn into_param_groups(self) -> Vec<ParamGroup> {
        self
    }
}

/// One parameter and its state.
struct Slot {
    name: String,
    param: Parameter,
    step: u64,
    /// The rule's buffers in the parameter's dtype; empty until first used.
    bufs: [Storage; 3],
}

struct Group<H> {
    hyper: H,
    initial_lr: Option<f64>,
    slots: Vec<Slot>,
}

/// The shared adaptor: parameter groups, per-parameter state by name, the state dict and
/// the anomaly check, around a per-tensor [`Rule`]. `Sgd`, `Adam`, ... are this type with
/// their rule.
pub struct Optim<R: Rule> {
    groups: Vec<Group<R::Hyper>>,
    /// The hyper-parameters a group takes for the keys it does not set.
    defaults: R::Hyper,
}

fn empty_like(dtype: DType) -> Storage {
    match dtype {
        DType::F64 => Storage::F64(Vec::new()),
        _ => Storage::F32(Vec::new()),
    }
}

/// The buffer as `Vec<T>`, converting it first if the parameter's dtype changed since
/// (`Parameter::convert`).
fn typed<T: Element>(s: &mut Storage) -> &mut Vec<T> {
    if T::slice_mut(s).is_none() {
        let v: Vec<T> = autograd::dispatch_all!(&*s, |v: U| v.iter().map(|x| T::from_f64(x.to_f64())).collect());
        *s = T::into_storage(v);
    }
    T::slice_mut(s).expect("converted above")
}

impl<R: Rule> Optim<R> {
    /// An optimiser over `params` with PyTorch's default hyper-parameters and this learning
    /// rate.
    pub fn new(params: impl IntoParamGroups, lr: f64) -> Result<Self> {
        Self::with(params, R::defaults(lr))
    }

    /// An optimiser over `params` with these default hyper-parameters (each group may
    /// override them).
    ///
    /// # Errors
    /// As PyTorch's constructor: an empty parameter list, a parameter in two groups, two
    /// parameters with one name, an unknown key in a group, an invalid hyper-parameter.
    pub fn with(params: impl IntoParamGroups, defaults: R::Hyper) -> Result<Self> {
        let bad = |m: String| Error::config(R::NAME, m);
        let mut groups = Vec::new();
        let mut seen: Vec<(String, Parameter)> = Vec::new();
        for (gi, pg) in params.into_param_groups().into_iter().enumerate() {
            let mut hyper = defaults;
            for (k, v) in &pg.options {
                hyper.set(k, *v).map_err(|e| bad(format!("parameter group {gi} {e}")))?;
            }
            hyper.check().map_err(|e| bad(format!("parameter group {gi}: {e}")))?;
            let mut slots = Vec::with_capacity(pg.params.len());
            for (name, p) in pg.params {
                if let Some((n, _)) = seen.iter().find(|(n, q)| *n == name || q.same_as(&p)) {
                    return Err(bad(if *n == name {
                        format!("two parameters are named '{name}' (the state is keyed by name)")
                    } else {
                        format!("parameter '{name}' is also given as '{n}' (some parameters appear in more than one parameter group)")
                    }));
                }
                seen.push((name.clone(), p.clone()));
                let bufs = std::array::from_fn(|_| empty_like(p.dtype()));
                slots.push(Slot { name, param: p, step: 0, bufs });
            }
            groups.push(Group { hyper, initial_lr: None, slots });
        }
        if seen.is_empty() {
            return Err(bad("optimizer got an empty parameter list".into()));
        }
        defaults.check().map_err(bad)?;
        Ok(Optim { groups, defaults })
    }

    /// The default hyper-parameters (what a group takes for keys it does not set).
    pub fn defaults(&self) -> &R::Hyper {
        &self.defaults
    }

    /// The hyper-parameters of one group.
    pub fn group(&self, g: usize) -> Option<&R::Hyper> {
        self.groups.get(g).map(|g| &g.hyper)
    }

    fn update_one<T: Element>(h: &R::Hyper, slot: &mut Slot, g: &Tensor) -> Result<()> {
        let gd = g.contiguous_data::<T>()?;
        if gd.len() != slot.param.numel() {
            return Err(Error::config(
                R::NAME,
                format!("parameter '{}' has {} elements but its gradient {}", slot.name, slot.param.numel(), gd.len()),
            ));
        }
        let step = slot.step;
        let [a, b, c] = &mut slot.bufs;
        let bufs = [typed::<T>(a), typed::<T>(b), typed::<T>(c)];
        slot.param.update::<T>(|w| R::update(h, step, w, &gd, bufs))?;
        Ok(())
    }

    /// In anomaly mode ([`autograd::set_detect_anomaly`]), fails if the step left a
    /// parameter NaN or infinite, naming the optimiser, the parameter and the first bad
    /// value: a finite loss before the step says nothing about the weights after it.
    fn check_after_step(&self) -> Result<()> {
        if !autograd::is_anomaly_enabled() {
            return Ok(());
        }
        for s in self.groups.iter().flat_map(|g| &g.slots) {
            if let Some((i, v)) = crate::module::first_non_finite(&s.param.data()) {
                return Err(Error::Diverged(format!(
                    "anomaly: the {} step left parameter '{}' {} holding {v} at index {i}",
                    R::NAME,
                    s.name,
                    autograd::error::fmt_shape(&s.param.shape())
                )));
            }
        }
        Ok(())
    }

    /// The group and slot of the parameter an entry `state.{name}.{field}` names, and the
    /// field, if `field` is one this rule writes.
    fn find_state_entry(&self, key: &str) -> Option<(usize, usize, &'static str)> {
        let rest = key.strip_prefix("state.")?;
        for (gi, g) in self.groups.iter().enumerate() {
            for (si, s) in g.slots.iter().enumerate() {
                let Some(field) = rest.strip_prefix(s.name.as_str()).and_then(|f| f.strip_prefix('.')) else { continue };
                if R::COUNTS_STEPS && field == "step" {
                    return Some((gi, si, "step"));
                }
                if let Some(b) = R::BUFFERS.iter().find(|b| !b.is_empty() && **b == field) {
                    return Some((gi, si, b));
                }
            }
        }
        None
    }

    /// The group and key an entry `param_groups.{g}.{key}` names.
    fn find_group_entry(&self, key: &str) -> Option<(usize, &'static str)> {
        let (g, k) = key.strip_prefix("param_groups.")?.split_once('.')?;
        let g: usize = g.parse().ok().filter(|g| *g < self.groups.len())?;
        R::Hyper::KEYS.iter().chain(&["initial_lr"]).find(|x| **x == k).map(|k| (g, *k))
    }
}

impl<R: Rule> Optimizer for Optim<R> {
    fn name(&self) -> &'static str {
        R::NAME
    }

    fn step(&mut self) -> Result<()> {
        for group in &mut self.groups {
            let h = group.hyper;
            for slot in &mut group.slots {
                if !slot.param.requires_grad() {
                    continue;
                }
                let Some(g) = slot.param.grad() else { continue };
                if R::COUNTS_STEPS {
                    slot.step = slot.step.saturating_add(1);
                }
                match g.dtype() {
                    DType::F32 => Self::update_one::<f32>(&h, slot, &g)?,
                    DType::F64 => Self::update_one::<f64>(&h, slot, &g)?,
                    dtype => return Err(autograd::Error::UnsupportedDType { op: R::NAME, dtype }.into()),
                }
            }
        }
        self.check_after_step()
    }

    fn zero_grad(&self) {
        self.groups.iter().flat_map(|g| &g.slots).for_each(|s| s.param.zero_grad());
    }

    fn named_parameters(&self) -> Vec<(String, Parameter)> {
        self.groups.iter().flat_map(|g| &g.slots).map(|s| (s.name.clone(), s.param.clone())).collect()
    }

    fn num_groups(&self) -> usize {
        self.groups.len()
    }

    fn hyper(&self, group: usize, key: &str) -> Option<f64> {
        self.groups.get(group)?.hyper.get(key)
    }

    fn set_hyper(&mut self, group: usize, key: &str, value: f64) -> Result<()> {
        let n = self.groups.len();
        let g = self.groups.get_mut(group).ok_or_else(|| Error::config(R::NAME, format!("no parameter group {group} (there are {n})")))?;
        let mut h = g.hyper;
        h.set(key, value).and_then(|_| h.check()).map_err(|e| Error::config(R::NAME, format!("parameter group {group}: {e}")))?;
        g.hyper = h;
        Ok(())
    }

    fn initial_lr(&self, group: usize) -> Option<f64> {
        self.groups.get(group)?.initial_lr
    }

    fn set_initial_lr(&mut self, group: usize, lr: f64) {
        if let Some(g) = self.groups.get_mut(group) {
            g.initial_lr = Some(lr);
        }
    }

    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let scalar = |v: f64| Tensor::scalar_dtype(v, DType::F64);
        let mut out = Vec::new();
        for s in self.groups.iter().flat_map(|g| &g.slots) {
            if R::COUNTS_STEPS && s.step > 0 {
                out.push((format!("state.{}.step", s.name), scalar(s.step as f64)));
            }
            for (b, name) in s.bufs.iter().zip(R::BUFFERS) {
                if !b.is_empty() {
                    let t = autograd::dispatch_all!(b, |v: T| Tensor::from_vec(v.clone(), &s.param.shape()));
                    out.push((format!("state.{}.{name}", s.name), t.expect("a buffer has its parameter's size")));
                }
            }
        }
        for (gi, g) in self.groups.iter().enumerate() {
            for k in R::Hyper::KEYS {
                out.push((format!("param_groups.{gi}.{k}"), scalar(g.hyper.get(k).expect("a listed key"))));
            }
            if let Some(lr) = g.initial_lr {
                out.push((format!("param_groups.{gi}.initial_lr"), scalar(lr)));
            }
        }
        out
    }

    fn load_state_dict(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let mut problems = Vec::new();
        let mut hypers: Vec<R::Hyper> = self.groups.iter().map(|g| g.hyper).collect();
        let mut initial: Vec<Option<f64>> = self.groups.iter().map(|g| g.initial_lr).collect();
        // New state for every parameter: what the dict does not hold starts afresh, as in
        // PyTorch (whose state is replaced by the loaded one).
        let mut steps: Vec<Vec<Option<u64>>> = self.groups.iter().map(|g| vec![None; g.slots.len()]).collect();
        let mut bufs: Vec<Vec<[Option<Storage>; 3]>> =
            self.groups.iter().map(|g| g.slots.iter().map(|_| [None, None, None]).collect()).collect();
        for (key, t) in state {
            let key = key.as_str();
            let finite = || crate::module::first_non_finite(t).map(|(i, v)| format!("'{key}' holds {v} at index {i} (a non-finite value)"));
            if let Some((gi, k)) = self.find_group_entry(key) {
                let v = match t.shape() {
                    [] => t.item()?,
                    s => {
                        problems.push(format!("'{key}' has shape {}, expected a scalar", autograd::error::fmt_shape(s)));
                        continue;
                    }
                };
                if k == "initial_lr" {
                    match v.is_finite() {
                        true => initial[gi] = Some(v),
                        false => problems.push(format!("'{key}' is {v}")),
                    }
                } else if let Err(e) = hypers[gi].set(k, v) {
                    problems.push(e);
                }
            } else if let Some((gi, si, field)) = self.find_state_entry(key) {
                let p = &self.groups[gi].slots[si].param;
                if field == "step" {
                    let v = match t.shape() {
                        [] => t.item()?,
                        _ => f64::NAN,
                    };
                    // A whole number up to 2^53 (exact in the f64 it is stored as): a NaN,
                    // negative or huge step would wrap or saturate silently.
                    if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= (1u64 << 53) as f64) {
                        problems.push(format!("'{key}' must be a whole number from 0 to 2^53, got {v}"));
                    } else {
                        steps[gi][si] = Some(v as u64);
                    }
                } else if t.shape() != p.shape().as_slice() {
                    problems.push(format!(
                        "'{key}' has shape {}, parameter {}",
                        autograd::error::fmt_shape(t.shape()),
                        autograd::error::fmt_shape(&p.shape())
                    ));
                } else if let Some(m) = finite() {
                    // A NaN moment would turn the weights NaN at the first step.
                    problems.push(m);
                } else {
                    let b = R::BUFFERS.iter().position(|b| *b == field).expect("a listed buffer");
                    bufs[gi][si][b] = Some(match p.dtype() {
                        DType::F64 => Storage::F64(t.to_vec()),
                        _ => Storage::F32(t.to_vec()),
                    });
                }
            } else {
                problems.push(format!("unexpected entry '{key}'"));
            }
        }
        for (gi, h) in hypers.iter().enumerate() {
            if let Err(e) = h.check() {
                problems.push(format!("parameter group {gi}: {e}"));
            }
            for (si, s) in self.groups[gi].slots.iter().enumerate() {
                let step = steps[gi][si].unwrap_or(0);
                let has_any = bufs[gi][si].iter().any(Option::is_some);
                if R::COUNTS_STEPS && has_any && step == 0 {
                    problems.push(format!("'state.{}.step' is missing (or 0) but the parameter has state", s.name));
                }
                if step > 0 && s.param.numel() > 0 {
                    for (b, req) in R::required(h).iter().enumerate() {
                        if *req && bufs[gi][si][b].is_none() {
                            problems.push(format!(
                                "'state.{}.{}' is missing (the parameter has taken {step} steps)",
                                s.name,
                                R::BUFFERS[b]
                            ));
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            let shown: Vec<&str> = problems.iter().take(10).map(String::as_str).collect();
            let more = if problems.len() > 10 { format!("; and {} more", problems.len() - 10) } else { String::new() };
            return Err(Error::StateDict(format!("{}: {}{more}", R::NAME, shown.join("; "))));
        }
        for (gi, g) in self.groups.iter_mut().enumerate() {
            g.hyper = hypers[gi];
            g.initial_lr = initial[gi];
            for (si, s) in g.slots.iter_mut().enumerate() {
                s.step = steps[gi][si].unwrap_or(0);
                let dtype = s.param.dtype();
                s.bufs = std::array::from_fn(|b| bufs[gi][si][b].take().unwrap_or_else(|| empty_like(dtype)));
            }
        }
        Ok(())
    }

    fn entry_shape(&self, key: &str) -> Option<Vec<usize>> {
        if self.find_group_entry(key).is_some() {
            return Some(Vec::new());
        }
        let (gi, si, field) = self.find_state_entry(key)?;
        Some(if field == "step" { Vec::new() } else { self.groups[gi].slots[si].param.shape() })
    }
}

/// Element-wise helpers written as PyTorch's CPU kernels compute them, so a rule reads
/// like the Python it follows.
pub(crate) mod ops {
    use autograd::Element;

    /// `torch.lerp(start, end, weight)`: `start + weight * (end - start)` for a small weight,
    /// `end - (end - start) * (1 - weight)` otherwise (PyTorch's two-sided formula).
    #[inline(always)]
    pub fn lerp<T: Element>(start: T, end: T, weight: T) -> T {
        if weight.abs() < T::from_f64(0.5) {
            start + weight * (end - start)
        } else {
            end - (end - start) * (T::one() - weight)
        }
    }
}
