//! Adam, as `torch.optim.Adam` (`_single_tensor_adam`): bias-corrected moments, optional
//! AMSGrad, L2 weight decay added to the gradient, and `maximize`. [`AdamW`](super::AdamW)
//! runs the same update with decoupled weight decay.

use super::ops::lerp;
use super::{hyper_keys, require, Optim, Rule};
use autograd::Element;

/// Adam (see [`AdamConfig`] for the hyper-parameters).
pub type Adam = Optim<AdamRule>;

/// The hyper-parameters of Adam and AdamW, PyTorch's defaults:
/// `AdamConfig::new(1e-3).betas(0.8, 0.99)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub amsgrad: bool,
    pub maximize: bool,
}

impl AdamConfig {
    /// Adam's defaults (no weight decay).
    pub fn new(lr: f64) -> Self {
        AdamConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, amsgrad: false, maximize: false }
    }
    /// AdamW's defaults (weight decay 0.01).
    pub fn adamw(lr: f64) -> Self {
        AdamConfig { weight_decay: 1e-2, ..Self::new(lr) }
    }
    pub fn betas(self, beta1: f64, beta2: f64) -> Self {
        AdamConfig { beta1, beta2, ..self }
    }
    pub fn eps(self, eps: f64) -> Self {
        AdamConfig { eps, ..self }
    }
    pub fn weight_decay(self, weight_decay: f64) -> Self {
        AdamConfig { weight_decay, ..self }
    }
    pub fn amsgrad(self, amsgrad: bool) -> Self {
        AdamConfig { amsgrad, ..self }
    }
    pub fn maximize(self, maximize: bool) -> Self {
        AdamConfig { maximize, ..self }
    }
}

hyper_keys!(AdamConfig { lr, beta1, beta2, eps, weight_decay, amsgrad, maximize }, |h: &AdamConfig| {
    require(h.lr >= 0.0, "learning rate", h.lr)?;
    require(h.eps >= 0.0, "epsilon value", h.eps)?;
    require((0.0..1.0).contains(&h.beta1), "beta parameter at index 0", h.beta1)?;
    require((0.0..1.0).contains(&h.beta2), "beta parameter at index 1", h.beta2)?;
    require(h.weight_decay >= 0.0, "weight_decay value", h.weight_decay)
});

/// Adam's update of one tensor.
pub struct AdamRule;

impl Rule for AdamRule {
    type Hyper = AdamConfig;
    const NAME: &'static str = "Adam";
    const BUFFERS: [&'static str; 3] = ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"];
    const COUNTS_STEPS: bool = true;

    fn defaults(lr: f64) -> AdamConfig {
        AdamConfig::new(lr)
    }

    fn required(h: &AdamConfig) -> [bool; 3] {
        [true, true, h.amsgrad]
    }

    fn update<T: Element>(h: &AdamConfig, step: u64, w: &mut [T], g: &[T], bufs: [&mut Vec<T>; 3]) {
        adam_update(h, false, step, w, g, bufs)
    }
}

/// One Adam or AdamW step (`decoupled`: AdamW's `param.mul_(1 - lr * weight_decay)` in
/// place of adding `weight_decay * param` to the gradient).
pub(super) fn adam_update<T: Element>(h: &AdamConfig, decoupled: bool, step: u64, w: &mut [T], g: &[T], bufs: [&mut Vec<T>; 3]) {
    let [m, v, vmax] = bufs;
    for b in [&mut *m, &mut *v] {
        if b.is_empty() {
            b.resize(w.len(), T::zero());
        }
    }
    if h.amsgrad && vmax.is_empty() {
        vmax.resize(w.len(), T::zero());
    }
    // The scalars, in f64 as Python computes them (`step` is a float in PyTorch's state).
    let step = step as f64;
    let bias_correction1 = 1.0 - h.beta1.powf(step);
    let bias_correction2 = 1.0 - h.beta2.powf(step);
    let neg_step_size = T::from_f64(-(h.lr / bias_correction1));
    let bc2_sqrt = T::from_f64(bias_correction2.powf(0.5));
    let (wd, decay_factor) = (T::from_f64(h.weight_decay), T::from_f64(1.0 - h.lr * h.weight_decay));
    let (one_minus_b1, b2, one_minus_b2, eps) =
        (T::from_f64(1.0 - h.beta1), T::from_f64(h.beta2), T::from_f64(1.0 - h.beta2), T::from_f64(h.eps));
    let (decay, maximize, amsgrad) = (h.weight_decay != 0.0, h.maximize, h.amsgrad);
    let vmax = if amsgrad { vmax.as_mut_slice() } else { &mut [] };
    let mut vmax = vmax.iter_mut();
    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let mut g = if maximize { -g } else { g };
        if decay {
            if decoupled {
                *w *= decay_factor;
            } else {
                g += wd * *w;
            }
        }
        *m = lerp(*m, g, one_minus_b1);
        *v = *v * b2 + one_minus_b2 * g * g;
        let second = match vmax.next() {
            Some(vm) => {
                // torch.maximum: NaN in either gives NaN (f64::max would drop it).
                if *v > *vm || v.is_nan() {
                    *vm = *v;
                }
                *vm
            }
            None => *v,
        };
        let denom = second.sqrt() / bc2_sqrt + eps;
        *w += neg_step_size * *m / denom;
    }
}
