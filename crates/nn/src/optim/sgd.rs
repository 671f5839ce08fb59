//! SGD, as `torch.optim.SGD` (`_single_tensor_sgd`): momentum with dampening, Nesterov,
//! L2 weight decay added to the gradient, and `maximize`.

use super::{hyper_keys, require, Optim, Rule};
use autograd::Element;

/// Stochastic gradient descent (see [`SgdConfig`] for the hyper-parameters).
pub type Sgd = Optim<SgdRule>;

/// SGD's hyper-parameters, PyTorch's defaults: `SgdConfig::new(0.1).momentum(0.9)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    pub maximize: bool,
}

impl SgdConfig {
    pub fn new(lr: f64) -> Self {
        SgdConfig { lr, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false, maximize: false }
    }
    pub fn momentum(self, momentum: f64) -> Self {
        SgdConfig { momentum, ..self }
    }
    pub fn dampening(self, dampening: f64) -> Self {
        SgdConfig { dampening, ..self }
    }
    pub fn weight_decay(self, weight_decay: f64) -> Self {
        SgdConfig { weight_decay, ..self }
    }
    pub fn nesterov(self, nesterov: bool) -> Self {
        SgdConfig { nesterov, ..self }
    }
    pub fn maximize(self, maximize: bool) -> Self {
        SgdConfig { maximize, ..self }
    }
}

hyper_keys!(SgdConfig { lr, momentum, dampening, weight_decay, nesterov, maximize }, |h: &SgdConfig| {
    require(h.lr >= 0.0, "learning rate", h.lr)?;
    require(h.momentum >= 0.0, "momentum value", h.momentum)?;
    require(h.weight_decay >= 0.0, "weight_decay value", h.weight_decay)?;
    require(h.dampening.is_finite(), "dampening value", h.dampening)?;
    if h.nesterov && (h.momentum <= 0.0 || h.dampening != 0.0) {
        return Err("Nesterov momentum requires a momentum and zero dampening".to_string());
    }
    Ok(())
});

/// SGD's update of one tensor.
pub struct SgdRule;

impl Rule for SgdRule {
    type Hyper = SgdConfig;
    const NAME: &'static str = "SGD";
    const BUFFERS: [&'static str; 3] = ["momentum_buffer", "", ""];
    const COUNTS_STEPS: bool = false;

    fn defaults(lr: f64) -> SgdConfig {
        SgdConfig::new(lr)
    }

    fn required(_: &SgdConfig) -> [bool; 3] {
        // A missing momentum buffer starts again from the gradient, as in PyTorch.
        [false; 3]
    }

    fn update<T: Element>(h: &SgdConfig, _step: u64, w: &mut [T], g: &[T], [buf, _, _]: [&mut Vec<T>; 3]) {
        let (lr, wd, mom) = (T::from_f64(-h.lr), T::from_f64(h.weight_decay), T::from_f64(h.momentum));
        let one_minus_damp = T::from_f64(1.0 - h.dampening);
        let (decay, maximize, nesterov) = (h.weight_decay != 0.0, h.maximize, h.nesterov);
        // The gradient as PyTorch's loop has it after `-grad` and weight decay.
        let grad = |w: T, g: T| {
            let g = if maximize { -g } else { g };
            if decay {
                g + wd * w
            } else {
                g
            }
        };
        if h.momentum == 0.0 {
            for (w, &g) in w.iter_mut().zip(g) {
                *w += lr * grad(*w, g);
            }
        } else if buf.is_empty() {
            // First step: the buffer is the gradient itself (no dampening).
            buf.reserve_exact(w.len());
            for (w, &g) in w.iter_mut().zip(g) {
                let d = grad(*w, g);
                buf.push(d);
                let d = if nesterov { d + mom * d } else { d };
                *w += lr * d;
            }
        } else {
            for ((w, &g), b) in w.iter_mut().zip(g).zip(buf.iter_mut()) {
                let d = grad(*w, g);
                *b = *b * mom + one_minus_damp * d;
                let d = if nesterov { d + mom * *b } else { *b };
                *w += lr * d;
            }
        }
    }
}
