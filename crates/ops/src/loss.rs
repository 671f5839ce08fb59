//! Functional losses, composed from tape ops (so they have second-order gradients).

use autograd::{Error, Result, Tensor};

/// Mean softmax cross-entropy of `logits [N, C]` against integer class labels.
/// Computed as `-mean(log_softmax(logits)[i, labels[i]])`, which is stable for any logits.
pub fn cross_entropy(logits: &Tensor, labels: &[usize]) -> Result<Tensor> {
    logits.check_float("cross_entropy")?;
    if logits.rank() != 2 {
        return Err(Error::invalid("cross_entropy", format!("expects logits [N, C], got {:?}", logits.shape())));
    }
    let (n, c) = (logits.shape()[0], logits.shape()[1]);
    if c == 0 {
        return Err(Error::invalid("cross_entropy", format!("logits {:?} have no classes", logits.shape())));
    }
    if labels.len() != n {
        return Err(Error::invalid("cross_entropy", format!("{} labels for a batch of {n} (logits {:?})", labels.len(), logits.shape())));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= c) {
        return Err(Error::invalid("cross_entropy", format!("label {bad} out of range for {c} classes")));
    }
    let picked = logits.log_softmax(1)?.gather(1, labels, &[n, 1])?;
    Ok(picked.mean().neg())
}

/// Mean squared error between two tensors of the same shape.
pub fn mse(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    if pred.shape() != target.shape() {
        return Err(Error::mismatch("mse", "prediction and target shapes differ", pred.shape(), target.shape()));
    }
    if pred.dtype() != target.dtype() {
        return Err(Error::DTypeMismatch { op: "mse", lhs: pred.dtype(), rhs: target.dtype() });
    }
    pred.check_float("mse")?;
    let d = pred.sub(target)?;
    Ok(d.mul(&d)?.mean())
}
