//! Loss modules over the functional losses of `ops`, and accuracy.

use crate::error::Result;
use autograd::Tensor;

/// Mean softmax cross-entropy of logits `[N, C]` against class labels.
#[derive(Default, Clone, Copy, Debug)]
pub struct CrossEntropyLoss;

impl CrossEntropyLoss {
    pub fn forward(&self, logits: &Tensor, labels: &[usize]) -> Result<Tensor> {
        Ok(ops::cross_entropy(logits, labels)?)
    }
}

/// Mean squared error.
#[derive(Default, Clone, Copy, Debug)]
pub struct MseLoss;

impl MseLoss {
    pub fn forward(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(ops::mse(pred, target)?)
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
