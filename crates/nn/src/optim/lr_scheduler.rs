//! Learning-rate schedules, as `torch.optim.lr_scheduler`: [`StepLR`], [`MultiStepLR`],
//! [`ExponentialLR`], [`CosineAnnealingLR`], [`LinearLR`], [`OneCycleLR`] (which also
//! cycles the momentum, or Adam's beta1) and [`SequentialLR`].
//!
//! A scheduler does not hold the optimiser (Rust's borrow rules would then keep the
//! training loop from stepping it): construction and [`LrScheduler::step`] take it as an
//! argument, and write each group's learning rate into it, as PyTorch's do:
//!
//! ```no_run
//! # use nn::optim::{Optimizer, Sgd, lr_scheduler::{LrScheduler, StepLR}};
//! # fn run(params: Vec<(String, autograd::Parameter)>) -> nn::Result<()> {
//! let mut opt = Sgd::new(params, 0.1)?;
//! let mut sched = StepLR::new(&mut opt, 30, 0.1)?;
//! for _epoch in 0..100 {
//!     // ... opt.step() for every batch ...
//!     sched.step(&mut opt)?;
//! }
//! # Ok(()) }
//! ```
//!
//! The values follow PyTorch's recursive `get_lr` (each learning rate computed from the
//! group's current one), not the closed forms, with the same operations in the same order,
//! so a sequence matches PyTorch's to rounding; the closed forms are used where PyTorch
//! uses them (a [`SequentialLR`] milestone). The first learning rate is set at
//! construction (PyTorch's `_initial_step`).
//!
//! A scheduler's [`LrScheduler::state_dict`] holds its counters and learning rates as named
//! tensors; the learning rates the groups reached are in the optimiser's own state dict.
//! To resume: build the optimiser and the scheduler as before, then load both.

use super::Optimizer;
use crate::error::{Error, Result};
use autograd::Tensor;
use std::f64::consts::PI;

/// A learning-rate schedule driving an [`Optimizer`]'s groups.
pub trait LrScheduler {
    /// PyTorch's class name, shown in errors.
    fn name(&self) -> &'static str;
    /// Advances one step and writes the new learning rates into `opt`'s groups.
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()>;
    /// The learning rates of the last step, one per group.
    fn get_last_lr(&self) -> &[f64];
    /// The number of steps taken (0 after construction).
    fn last_epoch(&self) -> i64;
    /// The counters and learning rates, named (`last_epoch`, `_step_count`, `base_lrs`,
    /// `_last_lr` as PyTorch names them; a [`SequentialLR`] adds `_schedulers.{i}.*`).
    fn state_dict(&self) -> Vec<(String, Tensor)>;
    /// Restores what [`LrScheduler::state_dict`] returned, after checking all of it.
    fn load_state_dict(&mut self, state: &[(String, Tensor)]) -> Result<()>;
    /// PyTorch's `_initial_step` (used by [`SequentialLR`]).
    fn initial_step(&mut self, opt: &mut dyn Optimizer) -> Result<()>;
    /// PyTorch's `_update_lr(epoch)`: with `Some(e)`, jumps to step `e` (the closed form
    /// where there is one), as [`SequentialLR`] does at a milestone.
    fn update_lr(&mut self, opt: &mut dyn Optimizer, epoch: Option<i64>) -> Result<()>;
    /// Steps the counters back by one (PyTorch's `recursive_undo`).
    fn undo(&mut self);
}

/// The counters every formula scheduler keeps (PyTorch's `LRScheduler` attributes).
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerState {
    /// The groups' learning rates when the schedule started (`initial_lr`).
    pub base_lrs: Vec<f64>,
    pub last_epoch: i64,
    pub step_count: i64,
    pub last_lr: Vec<f64>,
}

/// The formula of a schedule: PyTorch's `get_lr` and `_get_closed_form_lr`. Implement it
/// to write a new schedule; [`Scheduler`] does the rest.
pub trait Schedule {
    const NAME: &'static str;
    /// The learning rates for step `s.last_epoch`; `lrs` are the groups' current ones and
    /// `initial` is PyTorch's `_is_initial` (true during construction). May set other
    /// hyper-parameters of `opt` (OneCycleLR's momentum).
    fn get_lr(&self, s: &SchedulerState, lrs: &[f64], opt: &mut dyn Optimizer, initial: bool) -> Result<Vec<f64>>;
    /// The learning rates for step `s.last_epoch` from `base_lrs` alone, if the schedule has
    /// a closed form.
    fn closed_form(&self, _s: &SchedulerState) -> Option<Vec<f64>> {
        None
    }
}

/// A scheduler made of a [`Schedule`] and the counters.
#[derive(Debug, Clone)]
pub struct Scheduler<S: Schedule> {
    schedule: S,
    state: SchedulerState,
}

impl<S: Schedule> Scheduler<S> {
    /// Starts `schedule` on `opt`: records each group's `initial_lr` (the first scheduler on
    /// an optimiser sets it to the group's learning rate), then takes the initial step.
    pub fn start(opt: &mut dyn Optimizer, schedule: S) -> Result<Self> {
        let base_lrs = (0..opt.num_groups())
            .map(|g| match opt.initial_lr(g) {
                Some(lr) => lr,
                None => {
                    let lr = opt.hyper(g, "lr").expect("every group has an lr");
                    opt.set_initial_lr(g, lr);
                    lr
                }
            })
            .collect();
        let mut s = Scheduler { schedule, state: SchedulerState { base_lrs, last_epoch: -1, step_count: 0, last_lr: Vec::new() } };
        s.initial_step(opt)?;
        Ok(s)
    }

    /// The schedule's settings.
    pub fn schedule(&self) -> &S {
        &self.schedule
    }

    /// The counters.
    pub fn state(&self) -> &SchedulerState {
        &self.state
    }

    fn update(&mut self, opt: &mut dyn Optimizer, epoch: Option<i64>, initial: bool) -> Result<()> {
        let values = match epoch {
            None => {
                self.state.last_epoch += 1;
                self.schedule.get_lr(&self.state, &opt.lrs(), opt, initial)?
            }
            Some(e) => {
                self.state.last_epoch = e;
                match self.schedule.closed_form(&self.state) {
                    Some(v) => v,
                    None => self.schedule.get_lr(&self.state, &opt.lrs(), opt, initial)?,
                }
            }
        };
        for (g, lr) in values.into_iter().enumerate() {
            opt.set_hyper(g, "lr", lr).map_err(|e| Error::config(S::NAME, format!("step {}: {e}", self.state.last_epoch)))?;
        }
        self.state.last_lr = opt.lrs();
        Ok(())
    }
}

fn scalar_i64(v: i64) -> Tensor {
    Tensor::from_vec(vec![v], &[]).expect("a scalar")
}
fn f64s(v: &[f64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).expect("a vector")
}

/// Reads the named entries of a scheduler's state dict, naming the scheduler in errors.
struct Reader<'a> {
    name: &'static str,
    state: &'a [(String, Tensor)],
    prefix: String,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Result<&Tensor> {
        let full = format!("{}{key}", self.prefix);
        self.state
            .iter()
            .find(|(k, _)| *k == full)
            .map(|(_, t)| t)
            .ok_or_else(|| Error::StateDict(format!("{}: no '{full}' entry", self.name)))
    }
    fn int(&self, key: &str) -> Result<i64> {
        let t = self.get(key)?;
        let v = if t.shape().is_empty() { t.item()? } else { f64::NAN };
        if !(v.fract() == 0.0 && v.abs() <= (1u64 << 53) as f64) {
            return Err(Error::StateDict(format!("{}: '{}{key}' must be a whole number up to 2^53, got {v}", self.name, self.prefix)));
        }
        Ok(v as i64)
    }
    fn lrs(&self, key: &str, groups: usize) -> Result<Vec<f64>> {
        let t = self.get(key)?;
        let v = t.to_vec::<f64>();
        if t.shape() != [groups] || v.iter().any(|x| !x.is_finite()) {
            return Err(Error::StateDict(format!(
                "{}: '{}{key}' must hold {groups} finite learning rates (one per group), got {v:?}",
                self.name, self.prefix
            )));
        }
        Ok(v)
    }
}

impl<S: Schedule> LrScheduler for Scheduler<S> {
    fn name(&self) -> &'static str {
        S::NAME
    }
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.state.step_count += 1;
        self.update(opt, None, false)
    }
    fn get_last_lr(&self) -> &[f64] {
        &self.state.last_lr
    }
    fn last_epoch(&self) -> i64 {
        self.state.last_epoch
    }
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let s = &self.state;
        vec![
            ("last_epoch".into(), scalar_i64(s.last_epoch)),
            ("_step_count".into(), scalar_i64(s.step_count)),
            ("base_lrs".into(), f64s(&s.base_lrs)),
            ("_last_lr".into(), f64s(&s.last_lr)),
        ]
    }
    fn load_state_dict(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let r = Reader { name: S::NAME, state, prefix: String::new() };
        let groups = self.state.base_lrs.len();
        let new = SchedulerState {
            last_epoch: r.int("last_epoch")?,
            step_count: r.int("_step_count")?,
            base_lrs: r.lrs("base_lrs", groups)?,
            last_lr: r.lrs("_last_lr", groups)?,
        };
        if let Some((k, _)) = state.iter().find(|(k, _)| !["last_epoch", "_step_count", "base_lrs", "_last_lr"].contains(&k.as_str())) {
            return Err(Error::StateDict(format!("{}: unexpected entry '{k}'", S::NAME)));
        }
        self.state = new;
        Ok(())
    }
    fn initial_step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.state.step_count = 1;
        self.update(opt, None, true)
    }
    fn update_lr(&mut self, opt: &mut dyn Optimizer, epoch: Option<i64>) -> Result<()> {
        self.update(opt, epoch, false)
    }
    fn undo(&mut self) {
        self.state.last_epoch -= 1;
    }
}

fn check(name: &'static str, ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::config(name, message()))
    }
}

// ----- StepLR -------------------------------------------------------------------------------

/// `StepLR`: the learning rate times `gamma` every `step_size` steps.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSchedule {
    pub step_size: i64,
    pub gamma: f64,
}
pub type StepLR = Scheduler<StepSchedule>;

impl StepLR {
    pub fn new(opt: &mut dyn Optimizer, step_size: i64, gamma: f64) -> Result<Self> {
        check("StepLR", step_size > 0, || format!("step_size must be a positive whole number, got {step_size}"))?;
        Scheduler::start(opt, StepSchedule { step_size, gamma })
    }
}

impl Schedule for StepSchedule {
    const NAME: &'static str = "StepLR";
    fn get_lr(&self, s: &SchedulerState, lrs: &[f64], _: &mut dyn Optimizer, _: bool) -> Result<Vec<f64>> {
        Ok(if s.last_epoch == 0 || s.last_epoch % self.step_size != 0 {
            lrs.to_vec()
        } else {
            lrs.iter().map(|lr| lr * self.gamma).collect()
        })
    }
    fn closed_form(&self, s: &SchedulerState) -> Option<Vec<f64>> {
        let k = s.last_epoch.div_euclid(self.step_size) as f64;
        Some(s.base_lrs.iter().map(|b| b * self.gamma.powf(k)).collect())
    }
}

// ----- MultiStepLR --------------------------------------------------------------------------

/// `MultiStepLR`: the learning rate times `gamma` at each milestone (a milestone listed
/// twice applies `gamma` twice).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStepSchedule {
    /// Sorted.
    pub milestones: Vec<i64>,
    pub gamma: f64,
}
pub type MultiStepLR = Scheduler<MultiStepSchedule>;

impl MultiStepLR {
    pub fn new(opt: &mut dyn Optimizer, milestones: &[i64], gamma: f64) -> Result<Self> {
        let mut milestones = milestones.to_vec();
        milestones.sort_unstable();
        Scheduler::start(opt, MultiStepSchedule { milestones, gamma })
    }
}

impl Schedule for MultiStepSchedule {
    const NAME: &'static str = "MultiStepLR";
    fn get_lr(&self, s: &SchedulerState, lrs: &[f64], _: &mut dyn Optimizer, _: bool) -> Result<Vec<f64>> {
        let count = self.milestones.iter().filter(|m| **m == s.last_epoch).count();
        Ok(if count == 0 { lrs.to_vec() } else { lrs.iter().map(|lr| lr * self.gamma.powf(count as f64)).collect() })
    }
    fn closed_form(&self, s: &SchedulerState) -> Option<Vec<f64>> {
        let k = bisect_right(&self.milestones, s.last_epoch) as f64;
        Some(s.base_lrs.iter().map(|b| b * self.gamma.powf(k)).collect())
    }
}

/// Python's `bisect_right`: how many of the sorted `v` are at most `x`.
fn bisect_right(v: &[i64], x: i64) -> usize {
    v.partition_point(|m| *m <= x)
}

// ----- ExponentialLR ------------------------------------------------------------------------

/// `ExponentialLR`: the learning rate times `gamma` every step.
#[derive(Debug, Clone, PartialEq)]
pub struct ExponentialSchedule {
    pub gamma: f64,
}
pub type ExponentialLR = Scheduler<ExponentialSchedule>;

impl ExponentialLR {
    pub fn new(opt: &mut dyn Optimizer, gamma: f64) -> Result<Self> {
        Scheduler::start(opt, ExponentialSchedule { gamma })
    }
}

impl Schedule for ExponentialSchedule {
    const NAME: &'static str = "ExponentialLR";
    fn get_lr(&self, _: &SchedulerState, lrs: &[f64], _: &mut dyn Optimizer, initial: bool) -> Result<Vec<f64>> {
        Ok(if initial { lrs.to_vec() } else { lrs.iter().map(|lr| lr * self.gamma).collect() })
    }
    fn closed_form(&self, s: &SchedulerState) -> Option<Vec<f64>> {
        Some(s.base_lrs.iter().map(|b| b * self.gamma.powf(s.last_epoch as f64)).collect())
    }
}

// ----- CosineAnnealingLR --------------------------------------------------------------------

/// `CosineAnnealingLR`: from the base learning rate down to `eta_min` along half a cosine
/// over `t_max` steps (and back up over the next `t_max`, as PyTorch's recursion does).
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealingSchedule {
    pub t_max: i64,
    pub eta_min: f64,
}
pub type CosineAnnealingLR = Scheduler<CosineAnnealingSchedule>;

impl CosineAnnealingLR {
    pub fn new(opt: &mut dyn Optimizer, t_max: i64, eta_min: f64) -> Result<Self> {
        check("CosineAnnealingLR", t_max > 0, || format!("T_max must be a positive whole number, got {t_max}"))?;
        Scheduler::start(opt, CosineAnnealingSchedule { t_max, eta_min })
    }
}

impl Schedule for CosineAnnealingSchedule {
    const NAME: &'static str = "CosineAnnealingLR";
    fn get_lr(&self, s: &SchedulerState, lrs: &[f64], _: &mut dyn Optimizer, initial: bool) -> Result<Vec<f64>> {
        let (e, t, eta) = (s.last_epoch, self.t_max as f64, self.eta_min);
        Ok(if initial {
            lrs.to_vec()
        } else if s.step_count == 1 && e > 0 {
            s.base_lrs.iter().map(|b| eta + (b - eta) * (1.0 + (e as f64 * PI / t).cos()) / 2.0).collect()
        } else if (e - 1 - self.t_max).rem_euclid(2 * self.t_max) == 0 {
            lrs.iter().zip(&s.base_lrs).map(|(lr, b)| lr + (b - eta) * (1.0 - (PI / t).cos()) / 2.0).collect()
        } else {
            let f = (1.0 + (PI * e as f64 / t).cos()) / (1.0 + (PI * (e - 1) as f64 / t).cos());
            lrs.iter().map(|lr| f * (lr - eta) + eta).collect()
        })
    }
    fn closed_form(&self, s: &SchedulerState) -> Option<Vec<f64>> {
        let c = (PI * s.last_epoch as f64 / self.t_max as f64).cos();
        Some(s.base_lrs.iter().map(|b| self.eta_min + (b - self.eta_min) * (1.0 + c) / 2.0).collect())
    }
}

// ----- LinearLR -----------------------------------------------------------------------------

/// `LinearLR`: the base learning rate times a factor going linearly from `start_factor` to
/// `end_factor` over `total_iters` steps (a warm-up, with the defaults 1/3, 1 and 5).
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSchedule {
    pub start_factor: f64,
    pub end_factor: f64,
    pub total_iters: i64,
}
pub type LinearLR = Scheduler<LinearSchedule>;

impl LinearLR {
    pub fn new(opt: &mut dyn Optimizer, start_factor: f64, end_factor: f64, total_iters: i64) -> Result<Self> {
        check("LinearLR", start_factor > 0.0 && start_factor <= 1.0, || {
            format!("Starting multiplicative factor expected to be greater than 0 and less or equal to 1, got {start_factor}")
        })?;
        check("LinearLR", (0.0..=1.0).contains(&end_factor), || {
            format!("Ending multiplicative factor expected to be between 0 and 1, got {end_factor}")
        })?;
        check("LinearLR", total_iters > 0, || format!("total_iters must be a positive whole number, got {total_iters}"))?;
        Scheduler::start(opt, LinearSchedule { start_factor, end_factor, total_iters })
    }
}

impl Schedule for LinearSchedule {
    const NAME: &'static str = "LinearLR";
    fn get_lr(&self, s: &SchedulerState, lrs: &[f64], _: &mut dyn Optimizer, initial: bool) -> Result<Vec<f64>> {
        let (a, b, n) = (self.start_factor, self.end_factor, self.total_iters);
        Ok(if s.last_epoch == 0 {
            lrs.iter().map(|lr| lr * a).collect()
        } else if initial || s.last_epoch > n {
            lrs.to_vec()
        } else {
            let f = 1.0 + (b - a) / (n as f64 * a + (s.last_epoch - 1) as f64 * (b - a));
            lrs.iter().map(|lr| lr * f).collect()
        })
    }
    fn closed_form(&self, s: &SchedulerState) -> Option<Vec<f64>> {
        let (a, b, n) = (self.start_factor, self.end_factor, self.total_iters);
        let f = a + (b - a) * n.min(s.last_epoch) as f64 / n as f64;
        Some(s.base_lrs.iter().map(|lr| lr * f).collect())
    }
}

// ----- OneCycleLR ---------------------------------------------------------------------------

/// How [`OneCycleLR`] moves between two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anneal {
    Cos,
    Linear,
}

/// [`OneCycleLR`]'s settings, PyTorch's defaults: `OneCycleConfig::new(0.1, 100)`.
#[derive(Debug, Clone, PartialEq)]
pub struct OneCycleConfig {
    /// The peak learning rate, one for every group or one per group.
    pub max_lr: Vec<f64>,
    pub total_steps: i64,
    pub pct_start: f64,
    pub anneal_strategy: Anneal,
    /// Cycle the momentum (SGD, RMSprop) or beta1 (Adam, AdamW) inversely to the learning rate.
    pub cycle_momentum: bool,
    pub base_momentum: f64,
    pub max_momentum: f64,
    pub div_factor: f64,
    pub final_div_factor: f64,
    pub three_phase: bool,
}

impl OneCycleConfig {
    pub fn new(max_lr: f64, total_steps: i64) -> Self {
        OneCycleConfig {
            max_lr: vec![max_lr],
            total_steps,
            pct_start: 0.3,
            anneal_strategy: Anneal::Cos,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }
    /// A peak learning rate per group.
    pub fn max_lrs(self, max_lr: Vec<f64>) -> Self {
        OneCycleConfig { max_lr, ..self }
    }
    pub fn pct_start(self, pct_start: f64) -> Self {
        OneCycleConfig { pct_start, ..self }
    }
    pub fn anneal_strategy(self, anneal_strategy: Anneal) -> Self {
        OneCycleConfig { anneal_strategy, ..self }
    }
    pub fn cycle_momentum(self, cycle_momentum: bool) -> Self {
        OneCycleConfig { cycle_momentum, ..self }
    }
    pub fn momentum_range(self, base_momentum: f64, max_momentum: f64) -> Self {
        OneCycleConfig { base_momentum, max_momentum, ..self }
    }
    pub fn div_factor(self, div_factor: f64) -> Self {
        OneCycleConfig { div_factor, ..self }
    }
    pub fn final_div_factor(self, final_div_factor: f64) -> Self {
        OneCycleConfig { final_div_factor, ..self }
    }
    pub fn three_phase(self, three_phase: bool) -> Self {
        OneCycleConfig { three_phase, ..self }
    }
}

/// Where a phase's values come from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lr {
    Initial,
    Max,
    Min,
}
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mom {
    Base,
    Max,
}

#[derive(Debug, Clone, PartialEq)]
struct Phase {
    end_step: f64,
    lr: (Lr, Lr),
    momentum: (Mom, Mom),
}

/// The 1cycle schedule: see [`OneCycleConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct OneCycleSchedule {
    config: OneCycleConfig,
    phases: Vec<Phase>,
    initial_lr: Vec<f64>,
    max_lr: Vec<f64>,
    min_lr: Vec<f64>,
    /// The key cycled: "momentum" or "beta1" (`None` without cycling).
    momentum_key: Option<&'static str>,
}
/// `OneCycleLR`: up from `max_lr / div_factor` to `max_lr` over `pct_start` of the steps,
/// then down to `initial / final_div_factor`, with the momentum moving the other way.
pub type OneCycleLR = Scheduler<OneCycleSchedule>;

impl OneCycleLR {
    /// PyTorch's defaults with this peak learning rate over `total_steps` steps.
    pub fn new(opt: &mut dyn Optimizer, max_lr: f64, total_steps: i64) -> Result<Self> {
        Self::with(opt, OneCycleConfig::new(max_lr, total_steps))
    }

    pub fn with(opt: &mut dyn Optimizer, config: OneCycleConfig) -> Result<Self> {
        const NAME: &str = "OneCycleLR";
        let c = &config;
        let n = opt.num_groups();
        check(NAME, c.total_steps > 0, || format!("Expected positive integer total_steps, but got {}", c.total_steps))?;
        check(NAME, (0.0..=1.0).contains(&c.pct_start), || format!("Expected float between 0 and 1 pct_start, but got {}", c.pct_start))?;
        let max_lr = match c.max_lr.len() {
            1 => vec![c.max_lr[0]; n],
            k => {
                check(NAME, k == n, || format!("expected {n} values for max_lr (one per group), got {k}"))?;
                c.max_lr.clone()
            }
        };
        let total = c.total_steps as f64;
        let (p1, p2) = (c.pct_start * total - 1.0, 2.0 * c.pct_start * total - 2.0);
        let phase = |end_step, lr, momentum| Phase { end_step, lr, momentum };
        let phases = if c.three_phase {
            vec![
                phase(p1, (Lr::Initial, Lr::Max), (Mom::Max, Mom::Base)),
                phase(p2, (Lr::Max, Lr::Initial), (Mom::Base, Mom::Max)),
                phase(total - 1.0, (Lr::Initial, Lr::Min), (Mom::Max, Mom::Max)),
            ]
        } else {
            vec![phase(p1, (Lr::Initial, Lr::Max), (Mom::Max, Mom::Base)), phase(total - 1.0, (Lr::Max, Lr::Min), (Mom::Base, Mom::Max))]
        };
        let initial_lr: Vec<f64> = max_lr.iter().map(|m| m / c.div_factor).collect();
        let min_lr = initial_lr.iter().map(|i| i / c.final_div_factor).collect();
        for (g, lr) in initial_lr.iter().enumerate() {
            opt.set_initial_lr(g, *lr);
        }
        let momentum_key = if c.cycle_momentum {
            let key = ["beta1", "momentum"].into_iter().find(|k| opt.hyper(0, k).is_some()).ok_or_else(|| {
                Error::config(
                    NAME,
                    format!("optimizer must support momentum or beta1 with `cycle_momentum` option enabled ({} has neither)", opt.name()),
                )
            })?;
            for g in 0..n {
                opt.set_hyper(g, key, c.max_momentum)?;
            }
            Some(key)
        } else {
            None
        };
        Scheduler::start(opt, OneCycleSchedule { config, phases, initial_lr, max_lr, min_lr, momentum_key })
    }
}

impl OneCycleSchedule {
    fn anneal(&self, start: f64, end: f64, pct: f64) -> f64 {
        match self.config.anneal_strategy {
            Anneal::Cos => end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0),
            Anneal::Linear => (end - start) * pct + start,
        }
    }
}

impl Schedule for OneCycleSchedule {
    const NAME: &'static str = "OneCycleLR";
    fn get_lr(&self, s: &SchedulerState, lrs: &[f64], opt: &mut dyn Optimizer, _: bool) -> Result<Vec<f64>> {
        let step = s.last_epoch;
        if step > self.config.total_steps {
            return Err(Error::config(
                "OneCycleLR",
                format!("Tried to step {step} times. The specified number of total steps is {}", self.config.total_steps),
            ));
        }
        let mut out = Vec::with_capacity(lrs.len());
        for g in 0..lrs.len() {
            let lr_of = |k: Lr| match k {
                Lr::Initial => self.initial_lr[g],
                Lr::Max => self.max_lr[g],
                Lr::Min => self.min_lr[g],
            };
            let mom_of = |k: Mom| match k {
                Mom::Base => self.config.base_momentum,
                Mom::Max => self.config.max_momentum,
            };
            let mut start_step = 0.0;
            for (i, p) in self.phases.iter().enumerate() {
                if step as f64 <= p.end_step || i == self.phases.len() - 1 {
                    if p.end_step == start_step {
                        return Err(Error::config("OneCycleLR", format!("phase {i} is empty (division by zero at step {step})")));
                    }
                    let pct = (step as f64 - start_step) / (p.end_step - start_step);
                    out.push(self.anneal(lr_of(p.lr.0), lr_of(p.lr.1), pct));
                    if let Some(key) = self.momentum_key {
                        opt.set_hyper(g, key, self.anneal(mom_of(p.momentum.0), mom_of(p.momentum.1), pct))?;
                    }
                    break;
                }
                start_step = p.end_step;
            }
        }
        Ok(out)
    }
}

// ----- SequentialLR -------------------------------------------------------------------------

/// `SequentialLR`: runs `schedulers[0]` until `milestones[0]`, then `schedulers[1]` from its
/// start (its closed form at step 0), and so on. Build the schedulers on the optimiser
/// first, as in PyTorch.
pub struct SequentialLR {
    schedulers: Vec<Box<dyn LrScheduler>>,
    milestones: Vec<i64>,
    last_epoch: i64,
    last_lr: Vec<f64>,
}

impl SequentialLR {
    pub fn new(opt: &mut dyn Optimizer, mut schedulers: Vec<Box<dyn LrScheduler>>, milestones: Vec<i64>) -> Result<Self> {
        const NAME: &str = "SequentialLR";
        check(NAME, !schedulers.is_empty(), || "SequentialLR expects at least one scheduler, but got no scheduler".into())?;
        check(NAME, milestones.len() + 1 == schedulers.len(), || {
            format!(
                "Sequential Schedulers expects number of schedulers provided to be one more than the number of milestone points, \
                 but got number of schedulers {} and the number of milestones to be equal to {}",
                schedulers.len(),
                milestones.len()
            )
        })?;
        // Back to the initial learning rates, and undo the schedulers' initial steps.
        for g in 0..opt.num_groups() {
            let lr = opt.initial_lr(g).or_else(|| opt.hyper(g, "lr")).expect("every group has an lr");
            opt.set_hyper(g, "lr", lr)?;
        }
        schedulers.iter_mut().for_each(|s| s.undo());
        let idx = bisect_right(&milestones, 0);
        schedulers[idx].initial_step(opt)?;
        let last_lr = schedulers[idx].get_last_lr().to_vec();
        Ok(SequentialLR { schedulers, milestones, last_epoch: 0, last_lr })
    }
}

impl LrScheduler for SequentialLR {
    fn name(&self) -> &'static str {
        "SequentialLR"
    }
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.last_epoch += 1;
        let idx = bisect_right(&self.milestones, self.last_epoch);
        let s = &mut self.schedulers[idx];
        if idx > 0 && self.milestones[idx - 1] == self.last_epoch {
            s.update_lr(opt, Some(0))?;
        } else {
            s.step(opt)?;
        }
        self.last_lr = s.get_last_lr().to_vec();
        Ok(())
    }
    fn get_last_lr(&self) -> &[f64] {
        &self.last_lr
    }
    fn last_epoch(&self) -> i64 {
        self.last_epoch
    }
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("last_epoch".to_string(), scalar_i64(self.last_epoch)), ("_last_lr".to_string(), f64s(&self.last_lr))];
        for (i, s) in self.schedulers.iter().enumerate() {
            out.extend(s.state_dict().into_iter().map(|(k, t)| (format!("_schedulers.{i}.{k}"), t)));
        }
        out
    }
    fn load_state_dict(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let r = Reader { name: "SequentialLR", state, prefix: String::new() };
        let last_epoch = r.int("last_epoch")?;
        let last_lr = r.lrs("_last_lr", self.last_lr.len())?;
        let mut parts: Vec<Vec<(String, Tensor)>> = vec![Vec::new(); self.schedulers.len()];
        for (k, t) in state {
            if k == "last_epoch" || k == "_last_lr" {
                continue;
            }
            let part = k
                .strip_prefix("_schedulers.")
                .and_then(|r| r.split_once('.'))
                .and_then(|(i, rest)| i.parse::<usize>().ok().filter(|i| *i < parts.len()).map(|i| (i, rest)));
            match part {
                Some((i, rest)) => parts[i].push((rest.to_string(), t.clone())),
                None => return Err(Error::StateDict(format!("SequentialLR: unexpected entry '{k}'"))),
            }
        }
        // Check every part before changing any scheduler: load into copies of the state
        // first is not possible for trait objects, so restore on failure instead.
        let saved: Vec<Vec<(String, Tensor)>> = self.schedulers.iter().map(|s| s.state_dict()).collect();
        for (i, part) in parts.iter().enumerate() {
            if let Err(e) = self.schedulers[i].load_state_dict(part) {
                for (s, old) in self.schedulers.iter_mut().zip(&saved).take(i) {
                    s.load_state_dict(old).expect("a state dict the scheduler wrote");
                }
                return Err(e);
            }
        }
        self.last_epoch = last_epoch;
        self.last_lr = last_lr;
        Ok(())
    }
    fn initial_step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        let idx = bisect_right(&self.milestones, 0);
        self.schedulers[idx].initial_step(opt)?;
        self.last_lr = self.schedulers[idx].get_last_lr().to_vec();
        Ok(())
    }
    fn update_lr(&mut self, opt: &mut dyn Optimizer, epoch: Option<i64>) -> Result<()> {
        match epoch {
            None => self.step(opt),
            Some(e) => {
                let idx = bisect_right(&self.milestones, e);
                self.schedulers[idx].update_lr(opt, Some(e))?;
                self.last_lr = self.schedulers[idx].get_last_lr().to_vec();
                Ok(())
            }
        }
    }
    fn undo(&mut self) {
        self.schedulers.iter_mut().for_each(|s| s.undo());
    }
}
