//! RMSprop, as `torch.optim.RMSprop` (`_single_tensor_rmsprop`): a running mean of squared
//! gradients with smoothing `alpha`, optionally centred (minus the squared running mean of
//! the gradients), with momentum, L2 weight decay and `maximize`.

use super::ops::lerp;
use super::{hyper_keys, require, Optim, Rule};
use autograd::Element;

/// RMSprop (see [`RmsPropConfig`] for the hyper-parameters).
pub type RmsProp = Optim<RmsPropRule>;

/// RMSprop's hyper-parameters, PyTorch's defaults: `RmsPropConfig::new(1e-2).centered(true)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsPropConfig {
    pub lr: f64,
    pub alpha: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub centered: bool,
    pub maximize: bool,
}

impl RmsPropConfig {
    pub fn new(lr: f64) -> Self {
        RmsPropConfig { lr, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false, maximize: false }
    }
    pub fn alpha(self, alpha: f64) -> Self {
        RmsPropConfig { alpha, ..self }
    }
    pub fn eps(self, eps: f64) -> Self {
        RmsPropConfig { eps, ..self }
    }
    pub fn weight_decay(self, weight_decay: f64) -> Self {
        RmsPropConfig { weight_decay, ..self }
    }
    pub fn momentum(self, momentum: f64) -> Self {
        RmsPropConfig { momentum, ..self }
    }
    pub fn centered(self, centered: bool) -> Self {
        RmsPropConfig { centered, ..self }
    }
    pub fn maximize(self, maximize: bool) -> Self {
        RmsPropConfig { maximize, ..self }
    }
}

hyper_keys!(RmsPropConfig { lr, alpha, eps, weight_decay, momentum, centered, maximize }, |h: &RmsPropConfig| {
    require(h.lr >= 0.0, "learning rate", h.lr)?;
    require(h.eps >= 0.0, "epsilon value", h.eps)?;
    require(h.momentum >= 0.0, "momentum value", h.momentum)?;
    require(h.weight_decay >= 0.0, "weight_decay value", h.weight_decay)?;
    require(h.alpha >= 0.0, "alpha value", h.alpha)
});

/// RMSprop's update of one tensor.
pub struct RmsPropRule;

impl Rule for RmsPropRule {
    type Hyper = RmsPropConfig;
    const NAME: &'static str = "RMSprop";
    const BUFFERS: [&'static str; 3] = ["square_avg", "momentum_buffer", "grad_avg"];
    const COUNTS_STEPS: bool = true;

    fn defaults(lr: f64) -> RmsPropConfig {
        RmsPropConfig::new(lr)
    }

    fn required(h: &RmsPropConfig) -> [bool; 3] {
        [true, h.momentum > 0.0, h.centered]
    }

    fn update<T: Element>(h: &RmsPropConfig, _step: u64, w: &mut [T], g: &[T], [sq, buf, gavg]: [&mut Vec<T>; 3]) {
        let n = w.len();
        let (with_momentum, centered) = (h.momentum > 0.0, h.centered);
        for (b, used) in [(&mut *sq, true), (&mut *buf, with_momentum), (&mut *gavg, centered)] {
            if used && b.is_empty() {
                b.resize(n, T::zero());
            }
        }
        let (neg_lr, alpha, one_minus_alpha, eps) =
            (T::from_f64(-h.lr), T::from_f64(h.alpha), T::from_f64(1.0 - h.alpha), T::from_f64(h.eps));
        let (wd, mom) = (T::from_f64(h.weight_decay), T::from_f64(h.momentum));
        let (decay, maximize) = (h.weight_decay != 0.0, h.maximize);
        let buf = if with_momentum { buf.as_mut_slice() } else { &mut [] };
        let gavg = if centered { gavg.as_mut_slice() } else { &mut [] };
        let (mut buf, mut gavg) = (buf.iter_mut(), gavg.iter_mut());
        for ((w, &g), s) in w.iter_mut().zip(g).zip(sq.iter_mut()) {
            let mut g = if maximize { -g } else { g };
            if decay {
                g += wd * *w;
            }
            *s = *s * alpha + one_minus_alpha * g * g;
            let avg = match gavg.next() {
                Some(a) => {
                    *a = lerp(*a, g, one_minus_alpha);
                    (*s + -T::one() * *a * *a).sqrt()
                }
                None => s.sqrt(),
            } + eps;
            match buf.next() {
                Some(b) => {
                    *b = *b * mom + g / avg;
                    *w += neg_lr * *b;
                }
                None => *w += neg_lr * g / avg,
            }
        }
    }
}
