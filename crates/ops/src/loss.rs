//! Functional losses, composed from tape ops (so they have second-order gradients).

use autograd::{Error, Result, Tensor};

/// Class labels for [`cross_entropy`]: an i64 tensor `[N]` as PyTorch takes them, or a
/// slice of `usize` as a convenience.
pub trait Targets {
    /// The labels as indices; an error naming `cross_entropy` when they are not `[N]` i64
    /// values that fit an index.
    fn labels(&self) -> Result<std::borrow::Cow<'_, [usize]>>;
}

impl Targets for &[usize] {
    fn labels(&self) -> Result<std::borrow::Cow<'_, [usize]>> {
        Ok(std::borrow::Cow::Borrowed(self))
    }
}
impl Targets for &Vec<usize> {
    fn labels(&self) -> Result<std::borrow::Cow<'_, [usize]>> {
        Ok(std::borrow::Cow::Borrowed(self.as_slice()))
    }
}
impl<const N: usize> Targets for &[usize; N] {
    fn labels(&self) -> Result<std::borrow::Cow<'_, [usize]>> {
        Ok(std::borrow::Cow::Borrowed(self.as_slice()))
    }
}
impl Targets for &Tensor {
    fn labels(&self) -> Result<std::borrow::Cow<'_, [usize]>> {
        if self.dtype() != autograd::DType::I64 || self.rank() != 1 {
            return Err(Error::invalid(
                "cross_entropy",
                format!("targets must be an i64 tensor [N], got {} {:?}", self.dtype(), self.shape()),
            ));
        }
        let v = self.contiguous_data::<i64>()?;
        v.iter()
            .map(|&l| usize::try_from(l).map_err(|_| Error::invalid("cross_entropy", format!("label {l} out of range"))))
            .collect::<Result<Vec<usize>>>()
            .map(std::borrow::Cow::Owned)
    }
}

/// Mean softmax cross-entropy of `logits [N, C]` against class labels (an i64 tensor `[N]`,
/// or a `usize` slice). Computed as `-mean(log_softmax(logits)[i, labels[i]])`, which is
/// stable for any logits.
pub fn cross_entropy(logits: &Tensor, labels: impl Targets) -> Result<Tensor> {
    logits.check_float("cross_entropy")?;
    let labels = labels.labels()?;
    let labels: &[usize] = &labels;
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
    let index = Tensor::from_vec(labels.iter().map(|&l| l as i64).collect::<Vec<i64>>(), &[n, 1])?;
    let picked = logits.log_softmax(1)?.gather(1, &index)?;
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
