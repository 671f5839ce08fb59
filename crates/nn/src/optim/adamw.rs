//! AdamW, as `torch.optim.AdamW`: Adam's update with decoupled weight decay (the weights
//! shrink by `1 - lr * weight_decay` before the step; the gradient is not touched).

use super::adam::{adam_update, AdamConfig};
use super::{Optim, Rule};
use autograd::Element;

/// AdamW (hyper-parameters: [`AdamConfig`], built with [`AdamConfig::adamw`] for PyTorch's
/// defaults).
pub type AdamW = Optim<AdamWRule>;

/// AdamW's update of one tensor.
pub struct AdamWRule;

impl Rule for AdamWRule {
    type Hyper = AdamConfig;
    const NAME: &'static str = "AdamW";
    const BUFFERS: [&'static str; 3] = ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"];
    const COUNTS_STEPS: bool = true;

    fn defaults(lr: f64) -> AdamConfig {
        AdamConfig::adamw(lr)
    }

    fn required(h: &AdamConfig) -> [bool; 3] {
        [true, true, h.amsgrad]
    }

    fn update<T: Element>(h: &AdamConfig, step: u64, w: &mut [T], g: &[T], bufs: [&mut Vec<T>; 3]) {
        adam_update(h, true, step, w, g, bufs)
    }
}
