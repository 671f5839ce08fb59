//! Functional losses with PyTorch's names, defaults and semantics, composed from tape ops
//! (so every one has second-order gradients; docs/gradients.md has their maths).
//!
//! Shapes are checked, not broadcast: an input and its target must have one shape and one
//! float dtype (PyTorch broadcasts some of them with a warning). Optional per-element
//! weights broadcast to the input. Weights are constants: no gradient flows into them (as
//! in PyTorch, whose losses do not differentiate their weights).

use autograd::{DType, Error, Result, Tensor};

/// Class labels for [`cross_entropy`]: an i64 tensor as PyTorch takes them, or a slice
/// of `usize` as a convenience.
pub trait Targets {
    /// The class indices as i64 (an ignored index may be negative) and their shape; an
    /// error naming `op` for a tensor that is not i64.
    fn class_indices(&self, op: &'static str) -> Result<(Vec<i64>, Vec<usize>)>;
}

/// Slice labels as i64 (a label past `i64::MAX` saturates and is then out of range).
fn slice_indices(v: &[usize]) -> (Vec<i64>, Vec<usize>) {
    (v.iter().map(|&l| i64::try_from(l).unwrap_or(i64::MAX)).collect(), vec![v.len()])
}

impl Targets for &[usize] {
    fn class_indices(&self, _: &'static str) -> Result<(Vec<i64>, Vec<usize>)> {
        Ok(slice_indices(self))
    }
}
impl Targets for &Vec<usize> {
    fn class_indices(&self, _: &'static str) -> Result<(Vec<i64>, Vec<usize>)> {
        Ok(slice_indices(self))
    }
}
impl<const N: usize> Targets for &[usize; N] {
    fn class_indices(&self, _: &'static str) -> Result<(Vec<i64>, Vec<usize>)> {
        Ok(slice_indices(self.as_slice()))
    }
}
impl Targets for &Tensor {
    fn class_indices(&self, op: &'static str) -> Result<(Vec<i64>, Vec<usize>)> {
        if self.dtype() != DType::I64 {
            return Err(Error::invalid(
                op,
                format!("targets must be an i64 tensor of class indices, got {} {:?}", self.dtype(), self.shape()),
            ));
        }
        Ok((self.contiguous_data::<i64>()?.into_owned(), self.shape().to_vec()))
    }
}

/// How a loss reduces its per-element values (PyTorch's `reduction`): the mean (the
/// default), the sum, none (the values themselves), or, for [`kl_div`] only, the sum
/// divided by the batch size (`"batchmean"`, the mathematically correct KL divergence).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    None,
    #[default]
    Mean,
    Sum,
    BatchMean,
}

/// Applies `reduction` to per-element losses. The mean of nothing is NaN, as in PyTorch.
fn reduce(op: &'static str, loss: Tensor, reduction: Reduction) -> Result<Tensor> {
    match reduction {
        Reduction::None => Ok(loss),
        Reduction::Sum => Ok(loss.sum()),
        // `sum * (1/n)`: bitwise `Tensor::mean` for n > 0, and 0 * inf = NaN for n = 0.
        Reduction::Mean => Ok(loss.sum().mul_scalar(1.0 / loss.numel() as f64)),
        Reduction::BatchMean => Err(Error::invalid(op, "reduction BatchMean is only defined for kl_div")),
    }
}

/// The front-end check of an element-wise loss: one shape, one float dtype.
fn same_shape_float(op: &'static str, input: &Tensor, target: &Tensor) -> Result<()> {
    input.check_float(op)?;
    if input.dtype() != target.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: input.dtype(), rhs: target.dtype() });
    }
    if input.shape() != target.shape() {
        return Err(Error::mismatch(op, "input and target shapes differ", input.shape(), target.shape()));
    }
    Ok(())
}

/// A weight that broadcasts to `input` (same float dtype), as a constant.
fn loss_weight(op: &'static str, weight: Option<&Tensor>, input: &Tensor) -> Result<Option<Tensor>> {
    let Some(w) = weight else { return Ok(None) };
    if w.dtype() != input.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: input.dtype(), rhs: w.dtype() });
    }
    let b = autograd::shape::broadcast_shapes(op, w.shape(), input.shape())?;
    if b.as_slice() != input.shape() {
        return Err(Error::mismatch(op, "the weight must broadcast to the input's shape", w.shape(), input.shape()));
    }
    Ok(Some(w.detach()))
}

/// Options of [`cross_entropy_with`], with PyTorch's defaults.
#[derive(Clone, Debug)]
pub struct CrossEntropyOptions {
    /// A weight per class (`[C]`, the logits' dtype); the weighted mean divides by the sum
    /// of the weights of the non-ignored targets.
    pub weight: Option<Tensor>,
    /// Targets equal to this contribute nothing, to the sum or to the mean's count
    /// (default -100).
    pub ignore_index: i64,
    pub reduction: Reduction,
    /// In `[0, 1]`: the target becomes `1 - s` on the label plus `s / C` on every class.
    pub label_smoothing: f64,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions { weight: None, ignore_index: -100, reduction: Reduction::Mean, label_smoothing: 0.0 }
    }
}

/// Options of [`nll_loss`], with PyTorch's defaults.
#[derive(Clone, Debug)]
pub struct NllLossOptions {
    pub weight: Option<Tensor>,
    pub ignore_index: i64,
    pub reduction: Reduction,
}

impl Default for NllLossOptions {
    fn default() -> Self {
        NllLossOptions { weight: None, ignore_index: -100, reduction: Reduction::Mean }
    }
}

/// Mean softmax cross-entropy of `logits [N, C]` against class labels (an i64 tensor `[N]`,
/// or a `usize` slice). Computed as `-mean(log_softmax(logits)[i, labels[i]])`, which is
/// stable for any logits. A label of -100 is ignored, as PyTorch's default; see
/// [`cross_entropy_with`] for the options.
pub fn cross_entropy(logits: &Tensor, labels: impl Targets) -> Result<Tensor> {
    cross_entropy_with(logits, labels, &CrossEntropyOptions::default())
}

/// `torch.nn.functional.cross_entropy` with class-index targets: logits `[C]`, `[N, C]` or
/// `[N, C, d1, ...]` against targets `[]`, `[N]` or `[N, d1, ...]`, with a class
/// `weight`, `ignore_index`, `label_smoothing` and `reduction`. Per sample `i` with
/// target `y` (and `lp = log_softmax` over the classes, `w` the weights, 1 without):
/// `loss_i = (1 - s) (-w_y lp_y) + (s / C) (-sum_c w_c lp_c)`, 0 for an ignored target.
pub fn cross_entropy_with(logits: &Tensor, targets: impl Targets, opts: &CrossEntropyOptions) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    logits.check_float(OP)?;
    let (t, tshape) = targets.class_indices(OP)?;
    let s = opts.label_smoothing;
    if !(0.0..=1.0).contains(&s) {
        return Err(Error::invalid(OP, format!("label_smoothing must be between 0.0 and 1.0, got {s}")));
    }
    let (c, _) = class_layout(OP, logits, &tshape)?;
    let lp = logits.log_softmax(if logits.rank() == 1 { 0 } else { 1 })?;
    nll_rows(OP, &lp, c, &t, &tshape, opts.weight.as_ref(), opts.ignore_index, s, opts.reduction)
}

/// `torch.nn.functional.nll_loss`: `-w_y input[y]` per sample (the input holds
/// log-probabilities: `[C]`, `[N, C]` or `[N, C, d1, ...]`), with a class `weight`,
/// `ignore_index` and `reduction`; the weighted mean divides by the sum of the weights of
/// the non-ignored targets.
pub fn nll_loss(input: &Tensor, targets: impl Targets, opts: &NllLossOptions) -> Result<Tensor> {
    const OP: &str = "nll_loss";
    input.check_float(OP)?;
    let (t, tshape) = targets.class_indices(OP)?;
    let (c, _) = class_layout(OP, input, &tshape)?;
    nll_rows(OP, input, c, &t, &tshape, opts.weight.as_ref(), opts.ignore_index, 0.0, opts.reduction)
}

/// Checks `x` (`[C]`, `[N, C]` or `[N, C, d1, ...]`) against the targets' shape; returns
/// the number of classes and of samples.
fn class_layout(op: &'static str, x: &Tensor, tshape: &[usize]) -> Result<(usize, usize)> {
    let s = x.shape();
    if s.is_empty() {
        return Err(Error::invalid(op, "expects input [C], [N, C] or [N, C, d1, ...], got a 0-d tensor"));
    }
    let c = if s.len() == 1 { s[0] } else { s[1] };
    if c == 0 {
        return Err(Error::invalid(op, format!("logits {s:?} have no classes")));
    }
    let want: Vec<usize> = if s.len() == 1 { vec![] } else { [&s[..1], &s[2..]].concat() };
    if tshape != want.as_slice() {
        return Err(if s.len() == 2 && tshape.len() == 1 {
            Error::invalid(op, format!("{} labels for a batch of {} (logits {s:?})", tshape[0], s[0]))
        } else {
            Error::mismatch(op, format!("targets must have shape {want:?} for this input"), tshape, s)
        });
    }
    Ok((c, want.iter().product()))
}

/// The class-index losses on log-probabilities `lp` (class dim 1, or 0 for `[C]`): picks
/// each sample's entry, weighs, smooths, masks the ignored and reduces.
#[allow(clippy::too_many_arguments)]
fn nll_rows(
    op: &'static str,
    lp: &Tensor,
    c: usize,
    t: &[i64],
    tshape: &[usize],
    weight: Option<&Tensor>,
    ignore_index: i64,
    smoothing: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    let dtype = lp.dtype();
    let w: Option<Vec<f64>> = match weight {
        None => None,
        Some(w) if w.dtype() != dtype => return Err(Error::DTypeMismatch { op, lhs: dtype, rhs: w.dtype() }),
        Some(w) if w.shape() != [c] => {
            return Err(Error::invalid(op, format!("a weight must hold one value per class ({c}), got shape {:?}", w.shape())))
        }
        Some(w) => Some(w.to_vec::<f64>()),
    };
    let ignored: Vec<bool> = t.iter().map(|&y| y == ignore_index).collect();
    if let Some((&bad, _)) = t.iter().zip(&ignored).find(|&(&y, &ig)| !ig && !(0..c as i64).contains(&y)) {
        return Err(Error::invalid(op, format!("label {bad} out of range for {c} classes")));
    }
    if reduction == Reduction::BatchMean {
        return Err(Error::invalid(op, "reduction BatchMean is only defined for kl_div"));
    }
    // Rows [M, C], classes last.
    let m = t.len();
    let rows = match lp.rank() {
        1 => lp.reshape_to(&[1, c])?,
        2 => lp.clone(),
        r => {
            let perm: Vec<isize> = std::iter::once(0).chain(2..r as isize).chain(std::iter::once(1)).collect();
            lp.permute(&perm)?.reshape_to(&[m, c])?
        }
    };
    let index = Tensor::from_vec(t.iter().zip(&ignored).map(|(&y, &ig)| if ig { 0 } else { y }).collect::<Vec<i64>>(), &[m, 1])?;
    let picked = rows.gather(1, &index)?.reshape_to(&[m])?;
    let any_ignored = ignored.contains(&true);
    // Each sample's class weight (0 where ignored); only built when there are weights.
    let sample_w: Option<Vec<f64>> =
        w.as_ref().map(|w| t.iter().zip(&ignored).map(|(&y, &ig)| if ig { 0.0 } else { w[y as usize] }).collect());
    let constant = |v: Vec<f64>, shape: &[usize]| -> Result<Tensor> { Ok(Tensor::from_vec(v, shape)?.to_dtype(dtype)) };
    // The weighted mean's denominator: the weights of the kept samples (their count without weights).
    let denom: f64 = match &sample_w {
        Some(sw) => sw.iter().sum(),
        None => ignored.iter().filter(|&&ig| !ig).count() as f64,
    };
    let mut loss = match &sample_w {
        None => picked.neg(),
        Some(sw) => picked.mul(&constant(sw.clone(), &[m])?)?.neg(),
    };
    if smoothing > 0.0 {
        let all = match &w {
            None => rows.sum_dims(&[1], false)?,
            Some(w) => rows.mul(&constant(w.clone(), &[c])?)?.sum_dims(&[1], false)?,
        };
        loss = loss.mul_scalar(1.0 - smoothing).sub(&all.mul_scalar(smoothing / c as f64))?;
    }
    if any_ignored {
        // A select, not a product with 0: an ignored row's -inf must not make NaN.
        let mask = Tensor::from_vec(ignored, &[m])?;
        loss = Tensor::where_(&mask, &Tensor::zeros_dtype(&[], dtype), &loss)?;
    }
    match reduction {
        Reduction::None => loss.reshape_to(tshape),
        Reduction::Sum => Ok(loss.sum()),
        Reduction::Mean if w.is_none() && !any_ignored && m > 0 => Ok(loss.mean()),
        _ => loss.sum().div(&Tensor::scalar_dtype(denom, dtype)),
    }
}

/// Checks that every element of `x` is in `[0, 1]` (NaN passes, to give NaN).
fn check_unit_interval(op: &'static str, what: &str, x: &Tensor) -> Result<()> {
    if x.to_vec::<f64>().iter().any(|&v| !v.is_nan() && !(0.0..=1.0).contains(&v)) {
        return Err(Error::invalid(op, format!("all elements of {what} should be between 0 and 1")));
    }
    Ok(())
}

/// `torch.nn.functional.binary_cross_entropy`: `-w (y log p + (1 - y) log(1 - p))` with
/// each log clamped at -100 (so `p = 0` or 1 gives a finite loss), as PyTorch. `input`
/// and `target` in `[0, 1]` (NaN gives NaN); `weight` broadcasts to the input.
pub fn binary_cross_entropy(input: &Tensor, target: &Tensor, weight: Option<&Tensor>, reduction: Reduction) -> Result<Tensor> {
    const OP: &str = "binary_cross_entropy";
    same_shape_float(OP, input, target)?;
    check_unit_interval(OP, "input", input)?;
    check_unit_interval(OP, "target", target)?;
    let w = loss_weight(OP, weight, input)?;
    let log_p = input.log().clamp_min(-100.0);
    let log_q = input.neg().log1p().clamp_min(-100.0);
    // (y - 1) log(1 - p) - y log p, PyTorch's order.
    let loss = target.add_scalar(-1.0).mul(&log_q)?.sub(&target.mul(&log_p)?)?;
    let loss = match w {
        Some(w) => loss.mul(&w)?,
        None => loss,
    };
    reduce(OP, loss, reduction)
}

/// `torch.nn.functional.binary_cross_entropy_with_logits`:
/// `w ((1 - y) x - (1 + (pw - 1) y) log_sigmoid(x))`, stable for any logits (`log_sigmoid`
/// never overflows). `pos_weight` (the weight of positive examples, usually `[C]`) and
/// `weight` broadcast to the input.
pub fn binary_cross_entropy_with_logits(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    pos_weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    const OP: &str = "binary_cross_entropy_with_logits";
    same_shape_float(OP, input, target)?;
    let w = loss_weight(OP, weight, input)?;
    let pw = loss_weight(OP, pos_weight, input)?;
    let ls = input.log_sigmoid();
    let ls = match pw {
        Some(pw) => ls.mul(&pw.add_scalar(-1.0).mul(target)?.add_scalar(1.0))?,
        None => ls,
    };
    let loss = target.neg().add_scalar(1.0).mul(input)?.sub(&ls)?;
    let loss = match w {
        Some(w) => loss.mul(&w)?,
        None => loss,
    };
    reduce(OP, loss, reduction)
}

/// `torch.nn.functional.l1_loss`: `|x - y|`, reduced.
pub fn l1_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    same_shape_float("l1_loss", input, target)?;
    reduce("l1_loss", input.sub(target)?.abs(), reduction)
}

/// `torch.nn.functional.mse_loss`: `(x - y)^2`, reduced ([`mse`] is its mean).
pub fn mse_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    same_shape_float("mse_loss", input, target)?;
    let d = input.sub(target)?;
    reduce("mse_loss", d.mul(&d)?, reduction)
}

/// `torch.nn.functional.smooth_l1_loss`: with `z = |x - y|`, `z^2 / (2 beta)` where
/// `z < beta`, else `z - beta / 2`; `beta = 0` is the L1 loss. `beta >= 0`.
pub fn smooth_l1_loss(input: &Tensor, target: &Tensor, reduction: Reduction, beta: f64) -> Result<Tensor> {
    const OP: &str = "smooth_l1_loss";
    same_shape_float(OP, input, target)?;
    if beta.is_nan() || beta < 0.0 {
        return Err(Error::invalid(OP, format!("beta must be >= 0, got {beta}")));
    }
    let d = input.sub(target)?;
    if beta == 0.0 {
        // Not through the quadratic branch, whose 1/beta would put NaN in the gradient.
        return reduce(OP, d.abs(), reduction);
    }
    reduce(OP, piecewise(&d, beta, 0.5 / beta, 1.0)?, reduction)
}

/// `torch.nn.functional.huber_loss`: with `z = |x - y|`, `z^2 / 2` where `z < delta`,
/// else `delta (z - delta / 2)`: `delta` times the smooth L1 loss with `beta = delta`.
/// `delta > 0`.
pub fn huber_loss(input: &Tensor, target: &Tensor, reduction: Reduction, delta: f64) -> Result<Tensor> {
    const OP: &str = "huber_loss";
    same_shape_float(OP, input, target)?;
    if delta.is_nan() || delta <= 0.0 {
        return Err(Error::invalid(OP, format!("delta must be > 0, got {delta}")));
    }
    reduce(OP, piecewise(&input.sub(target)?, delta, 0.5, delta)?, reduction)
}

/// `q d^2` where `|d| < k`, else `s (|d| - k / 2)`; both branches are finite, so the
/// select passes no NaN into the gradient.
fn piecewise(d: &Tensor, k: f64, q: f64, s: f64) -> Result<Tensor> {
    let a = d.abs();
    let inside = a.lt(&Tensor::scalar_dtype(k, d.dtype()))?;
    let quad = d.mul(d)?.mul_scalar(q);
    let lin = a.add_scalar(-0.5 * k).mul_scalar(s);
    Tensor::where_(&inside, &quad, &lin)
}

/// `torch.nn.functional.kl_div(input, target)` with `input` log-probabilities:
/// `target (log target - input)` per element (`0 log 0 = 0`), or with `log_target`
/// `exp(target) (target - input)`. `Reduction::BatchMean` divides the sum by the batch
/// size (the first dim), which is the KL divergence; `Mean` averages over every element,
/// as PyTorch's.
pub fn kl_div(input: &Tensor, target: &Tensor, reduction: Reduction, log_target: bool) -> Result<Tensor> {
    const OP: &str = "kl_div";
    same_shape_float(OP, input, target)?;
    let loss = if log_target {
        target.exp().mul(&target.sub(input)?)?
    } else {
        // xlogy(t, t): log of t with its zeros replaced by 1, so 0 log 0 = 0 and no
        // infinity enters the gradient.
        let zero = target.eq(&Tensor::zeros_dtype(&[], target.dtype()))?;
        let safe = Tensor::where_(&zero, &Tensor::ones_dtype(&[], target.dtype()), target)?;
        target.mul(&safe.log())?.sub(&target.mul(input)?)?
    };
    match reduction {
        Reduction::BatchMean if input.rank() > 0 => loss.sum().div(&Tensor::scalar_dtype(input.shape()[0] as f64, input.dtype())),
        Reduction::BatchMean => Ok(loss.sum()),
        r => reduce(OP, loss, r),
    }
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
