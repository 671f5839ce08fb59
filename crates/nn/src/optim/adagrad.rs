//! Adagrad, as `torch.optim.Adagrad` (`_single_tensor_adagrad`, dense gradients): a sum of
//! squared gradients per element, a learning rate that decays with the step count, L2
//! weight decay and `maximize`.

use super::{hyper_keys, require, Optim, Rule};
use autograd::Element;

/// Adagrad (see [`AdagradConfig`] for the hyper-parameters).
pub type Adagrad = Optim<AdagradRule>;

/// Adagrad's hyper-parameters, PyTorch's defaults: `AdagradConfig::new(1e-2).lr_decay(1e-3)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdagradConfig {
    pub lr: f64,
    pub lr_decay: f64,
    pub weight_decay: f64,
    /// The value the sum of squares starts from.
    pub initial_accumulator_value: f64,
    pub eps: f64,
    pub maximize: bool,
}

impl AdagradConfig {
    pub fn new(lr: f64) -> Self {
        AdagradConfig { lr, lr_decay: 0.0, weight_decay: 0.0, initial_accumulator_value: 0.0, eps: 1e-10, maximize: false }
    }
    pub fn lr_decay(self, lr_decay: f64) -> Self {
        AdagradConfig { lr_decay, ..self }
    }
    pub fn weight_decay(self, weight_decay: f64) -> Self {
        AdagradConfig { weight_decay, ..self }
    }
    pub fn initial_accumulator_value(self, initial_accumulator_value: f64) -> Self {
        AdagradConfig { initial_accumulator_value, ..self }
    }
    pub fn eps(self, eps: f64) -> Self {
        AdagradConfig { eps, ..self }
    }
    pub fn maximize(self, maximize: bool) -> Self {
        AdagradConfig { maximize, ..self }
    }
}

hyper_keys!(AdagradConfig { lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize }, |h: &AdagradConfig| {
    require(h.lr >= 0.0, "learning rate", h.lr)?;
    require(h.lr_decay >= 0.0, "lr_decay value", h.lr_decay)?;
    require(h.weight_decay >= 0.0, "weight_decay value", h.weight_decay)?;
    require(h.initial_accumulator_value >= 0.0, "initial_accumulator_value value", h.initial_accumulator_value)?;
    require(h.eps >= 0.0, "epsilon value", h.eps)
});

/// Adagrad's update of one tensor.
pub struct AdagradRule;

impl Rule for AdagradRule {
    type Hyper = AdagradConfig;
    const NAME: &'static str = "Adagrad";
    const BUFFERS: [&'static str; 3] = ["sum", "", ""];
    const COUNTS_STEPS: bool = true;

    fn defaults(lr: f64) -> AdagradConfig {
        AdagradConfig::new(lr)
    }

    fn required(_: &AdagradConfig) -> [bool; 3] {
        [true, false, false]
    }

    fn update<T: Element>(h: &AdagradConfig, step: u64, w: &mut [T], g: &[T], [sum, _, _]: [&mut Vec<T>; 3]) {
        if sum.is_empty() {
            sum.resize(w.len(), T::from_f64(h.initial_accumulator_value));
        }
        let clr = h.lr / (1.0 + (step as f64 - 1.0) * h.lr_decay);
        let (neg_clr, wd, eps) = (T::from_f64(-clr), T::from_f64(h.weight_decay), T::from_f64(h.eps));
        let (decay, maximize) = (h.weight_decay != 0.0, h.maximize);
        for ((w, &g), s) in w.iter_mut().zip(g).zip(sum.iter_mut()) {
            let mut g = if maximize { -g } else { g };
            if decay {
                g += wd * *w;
            }
            *s += T::one() * g * g;
            let std = s.sqrt() + eps;
            *w += neg_clr * g / std;
        }
    }
}
