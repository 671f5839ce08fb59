//! Loss modules over the functional losses of `ops` (PyTorch's `nn.*Loss`: the options as
//! fields, `forward(pred, target)`), and accuracy.

use crate::error::Result;
use autograd::Tensor;
use ops::{CrossEntropyOptions, NllLossOptions, Reduction, Targets};

/// Softmax cross-entropy of logits against class indices (`torch.nn.CrossEntropyLoss`):
/// [`ops::cross_entropy_with`] with these options (the default is the mean over the
/// batch, no weights, -100 ignored, no smoothing).
#[derive(Default, Clone, Debug)]
pub struct CrossEntropyLoss {
    pub options: CrossEntropyOptions,
}

impl CrossEntropyLoss {
    pub fn new(options: CrossEntropyOptions) -> Self {
        CrossEntropyLoss { options }
    }
    pub fn forward(&self, logits: &Tensor, labels: impl Targets) -> Result<Tensor> {
        Ok(ops::cross_entropy_with(logits, labels, &self.options)?)
    }
}

/// Negative log-likelihood of log-probabilities against class indices (`torch.nn.NLLLoss`).
#[derive(Default, Clone, Debug)]
pub struct NllLoss {
    pub options: NllLossOptions,
}

impl NllLoss {
    pub fn new(options: NllLossOptions) -> Self {
        NllLoss { options }
    }
    pub fn forward(&self, log_probs: &Tensor, labels: impl Targets) -> Result<Tensor> {
        Ok(ops::nll_loss(log_probs, labels, &self.options)?)
    }
}

/// Binary cross-entropy of probabilities (`torch.nn.BCELoss`).
#[derive(Default, Clone, Debug)]
pub struct BceLoss {
    /// Broadcasts to the input; a constant.
    pub weight: Option<Tensor>,
    pub reduction: Reduction,
}

impl BceLoss {
    pub fn forward(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(ops::binary_cross_entropy(pred, target, self.weight.as_ref(), self.reduction)?)
    }
}

/// Binary cross-entropy of logits, stable for any logits (`torch.nn.BCEWithLogitsLoss`).
#[derive(Default, Clone, Debug)]
pub struct BceWithLogitsLoss {
    pub weight: Option<Tensor>,
    /// The weight of positive examples, usually one per class (`[C]`).
    pub pos_weight: Option<Tensor>,
    pub reduction: Reduction,
}

impl BceWithLogitsLoss {
    pub fn forward(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(ops::binary_cross_entropy_with_logits(logits, target, self.weight.as_ref(), self.pos_weight.as_ref(), self.reduction)?)
    }
}

/// Absolute error (`torch.nn.L1Loss`).
#[derive(Default, Clone, Copy, Debug)]
pub struct L1Loss {
    pub reduction: Reduction,
}

impl L1Loss {
    pub fn forward(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(ops::l1_loss(pred, target, self.reduction)?)
    }
}

/// Squared error (`torch.nn.MSELoss`); the default is the mean, [`ops::mse`].
#[derive(Default, Clone, Copy, Debug)]
pub struct MseLoss {
    pub reduction: Reduction,
}

impl MseLoss {
    pub fn forward(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(match self.reduction {
            Reduction::Mean => ops::mse(pred, target)?,
            r => ops::mse_loss(pred, target, r)?,
        })
    }
}

/// Smooth L1 loss (`torch.nn.SmoothL1Loss`, `beta` 1 by default).
#[derive(Clone, Copy, Debug)]
pub struct SmoothL1Loss {
    pub reduction: Reduction,
    pub beta: f64,
}

impl Default for SmoothL1Loss {
    fn default() -> Self {
        SmoothL1Loss { reduction: Reduction::Mean, beta: 1.0 }
    }
}

impl SmoothL1Loss {
    pub fn forward(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(ops::smooth_l1_loss(pred, target, self.reduction, self.beta)?)
    }
}

/// Huber loss (`torch.nn.HuberLoss`, `delta` 1 by default).
#[derive(Clone, Copy, Debug)]
pub struct HuberLoss {
    pub reduction: Reduction,
    pub delta: f64,
}

impl Default for HuberLoss {
    fn default() -> Self {
        HuberLoss { reduction: Reduction::Mean, delta: 1.0 }
    }
}

impl HuberLoss {
    pub fn forward(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(ops::huber_loss(pred, target, self.reduction, self.delta)?)
    }
}

/// Kullback-Leibler divergence of log-probabilities from a target distribution
/// (`torch.nn.KLDivLoss`); use `Reduction::BatchMean` for the divergence itself.
#[derive(Default, Clone, Copy, Debug)]
pub struct KlDivLoss {
    pub reduction: Reduction,
    /// The target holds log-probabilities too.
    pub log_target: bool,
}

impl KlDivLoss {
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(ops::kl_div(input, target, self.reduction, self.log_target)?)
    }
}

/// Number of rows of `logits [N, C]` whose largest entry is at the label.
pub fn correct(logits: &Tensor, labels: &[usize]) -> Result<usize> {
    let pred = logits.argmax(-1)?.to_vec::<i64>();
    Ok(pred.iter().zip(labels).filter(|&(&p, &l)| usize::try_from(p) == Ok(l)).count())
}

/// Fraction of correct predictions.
pub fn accuracy(logits: &Tensor, labels: &[usize]) -> Result<f64> {
    Ok(correct(logits, labels)? as f64 / labels.len().max(1) as f64)
}
