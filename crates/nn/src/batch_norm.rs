//! `BatchNorm1d` and `BatchNorm2d`, as PyTorch's: parameters `weight` and `bias`
//! (`affine`), buffers `running_mean`, `running_var` and the int64 `num_batches_tracked`
//! (`track_running_stats`). Training mode normalises with the batch's statistics (biased
//! variance) and updates the running ones (unbiased variance) by `momentum`, or by the
//! cumulative average when `momentum` is `None`; evaluation mode normalises with the
//! running statistics. The maths is `ops::batch_norm_train` / `ops::batch_norm_eval`.

use crate::error::Result;
use crate::module::{Buffer, Module, Training, Visitor};
use autograd::{no_grad, Parameter, Tensor};

/// Options of a batch-norm layer, PyTorch's defaults: eps 1e-5, momentum 0.1, affine,
/// tracking running statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    pub num_features: usize,
    pub eps: f64,
    /// `None`: the running statistics are the cumulative average of every batch's.
    pub momentum: Option<f64>,
    pub affine: bool,
    pub track_running_stats: bool,
}

impl BatchNormConfig {
    pub fn new(num_features: usize) -> Self {
        BatchNormConfig { num_features, eps: 1e-5, momentum: Some(0.1), affine: true, track_running_stats: true }
    }
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    pub fn momentum(mut self, momentum: Option<f64>) -> Self {
        self.momentum = momentum;
        self
    }
    pub fn affine(mut self, on: bool) -> Self {
        self.affine = on;
        self
    }
    pub fn track_running_stats(mut self, on: bool) -> Self {
        self.track_running_stats = on;
        self
    }
}

/// Batch normalisation over `[N, C]` or `[N, C, L]` (`BatchNorm1d`) or `[N, C, H, W]`
/// (`BatchNorm2d`) inputs; one type, the rank it takes set by the constructor.
pub struct BatchNorm {
    pub weight: Option<Parameter>,
    pub bias: Option<Parameter>,
    pub running_mean: Option<Buffer>,
    pub running_var: Option<Buffer>,
    pub num_batches_tracked: Option<Buffer>,
    pub config: BatchNormConfig,
    training: Training,
    /// The input ranks this layer takes, and its PyTorch name.
    ranks: &'static [usize],
    name: &'static str,
}

/// `BatchNorm1d` (inputs `[N, C]` or `[N, C, L]`).
pub type BatchNorm1d = BatchNorm;
/// `BatchNorm2d` (inputs `[N, C, H, W]`).
pub type BatchNorm2d = BatchNorm;

impl BatchNorm {
    /// PyTorch's `BatchNorm1d(config.num_features, ...)`: weight 1, bias 0, running mean
    /// 0, running variance 1, no batches tracked.
    pub fn new_1d(config: BatchNormConfig) -> BatchNorm {
        BatchNorm::make(config, &[2, 3], "BatchNorm1d")
    }

    /// PyTorch's `BatchNorm2d(config.num_features, ...)`.
    pub fn new_2d(config: BatchNormConfig) -> BatchNorm {
        BatchNorm::make(config, &[4], "BatchNorm2d")
    }

    fn make(config: BatchNormConfig, ranks: &'static [usize], name: &'static str) -> BatchNorm {
        let c = [config.num_features];
        let (weight, bias) = match config.affine {
            true => (Some(Parameter::new(&Tensor::ones(&c))), Some(Parameter::new(&Tensor::zeros(&c)))),
            false => (None, None),
        };
        let track = config.track_running_stats;
        BatchNorm {
            weight,
            bias,
            running_mean: track.then(|| Buffer::new(&Tensor::zeros(&c))),
            running_var: track.then(|| Buffer::new(&Tensor::ones(&c))),
            num_batches_tracked: track.then(|| Buffer::new(&Tensor::full_i64(&[], 0))),
            config,
            training: Training::default(),
            ranks,
            name,
        }
    }

    /// In evaluation mode with running statistics, the per-channel affine map this layer
    /// is, `y = x scale + shift`: `scale = weight / sqrt(running_var + eps)`, `shift = bias
    /// - running_mean scale` (as tape ops, so differentiable in the weight and bias).
    /// `None` in training mode or without running statistics, where the batch's own
    /// statistics are used. What a convolution folds into its weight and bias
    /// ([`Conv2d::forward_folded`](crate::Conv2d::forward_folded)).
    pub fn eval_affine(&self) -> Result<Option<(Tensor, Tensor)>> {
        let (Some(rm), Some(rv)) = (&self.running_mean, &self.running_var) else { return Ok(None) };
        if !self.folds() {
            return Ok(None);
        }
        let invstd = rv.get().add_scalar(self.config.eps).pow(-0.5);
        let scale = match &self.weight {
            Some(w) => w.tensor().mul(&invstd)?,
            None => invstd,
        };
        let shift = rm.get().mul(&scale)?.neg();
        let shift = match &self.bias {
            Some(b) => b.tensor().add(&shift)?,
            None => shift,
        };
        Ok(Some((scale, shift)))
    }

    /// Whether this is a `BatchNorm2d` (what a convolution's output feeds).
    pub(crate) fn is_2d(&self) -> bool {
        self.ranks == [4]
    }

    /// Whether this layer is an affine map a preceding convolution can fold in (evaluation
    /// mode with running statistics).
    pub fn folds(&self) -> bool {
        !self.training.get() && self.running_mean.is_some() && self.running_var.is_some()
    }

    /// Normalises with the batch's statistics through `op` (`ops::batch_norm_train`, or
    /// `ops::conv2d_bn_train` when a convolution's output comes in fused), given this
    /// layer's parameters, then updates the running statistics from the batch's as
    /// `forward` does in training mode. (In evaluation mode with running statistics the
    /// layer normalises with those instead: see [`folds`](Self::folds).)
    pub(crate) fn with_batch_stats(
        &self,
        op: impl FnOnce(ops::BatchNormParams<'_>) -> autograd::Result<ops::BatchNormTrain>,
    ) -> Result<Tensor> {
        let w = self.weight.as_ref().map(|p| p.tensor());
        let b = self.bias.as_ref().map(|p| p.tensor());
        let out = op(ops::BatchNormParams { weight: w.as_ref(), bias: b.as_ref(), eps: self.config.eps })?;
        if self.training.get() {
            self.update_running(&out.mean, &out.var_unbiased)?;
        }
        Ok(out.output)
    }

    /// Folds this batch's statistics into the running ones, as PyTorch: `num_batches_tracked`
    /// counts the batch, then `running = (1 - f) running + f batch` with `f` the momentum
    /// (or `1 / num_batches_tracked` without one) and the unbiased batch variance.
    fn update_running(&self, mean: &Tensor, var_unbiased: &Tensor) -> Result<()> {
        let (Some(rm), Some(rv), Some(nbt)) = (&self.running_mean, &self.running_var, &self.num_batches_tracked) else { return Ok(()) };
        no_grad(|| -> Result<()> {
            let count = nbt.get().to_vec::<i64>()[0].wrapping_add(1);
            nbt.set(&Tensor::full_i64(&[], count))?;
            let f = self.config.momentum.unwrap_or(1.0 / count as f64);
            rm.set(&rm.get().mul_scalar(1.0 - f).add(&mean.mul_scalar(f))?)?;
            rv.set(&rv.get().mul_scalar(1.0 - f).add(&var_unbiased.mul_scalar(f))?)?;
            Ok(())
        })
    }
}

impl Module for BatchNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.ranks.contains(&x.rank()) {
            let want = if self.ranks.len() == 1 { "[N, C, H, W]" } else { "[N, C] or [N, C, L]" };
            return Err(
                autograd::Error::invalid("batch_norm", format!("{} expects an input {want}, got {:?}", self.name, x.shape())).into()
            );
        }
        let w = self.weight.as_ref().map(|p| p.tensor());
        let b = self.bias.as_ref().map(|p| p.tensor());
        let eps = self.config.eps;
        match (&self.running_mean, &self.running_var) {
            (Some(rm), Some(rv)) if !self.training.get() => Ok(ops::batch_norm_eval(x, &rm.get(), &rv.get(), w.as_ref(), b.as_ref(), eps)?),
            _ => self.with_batch_stats(|p| ops::batch_norm_train(x, p.weight, p.bias, p.eps)),
        }
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            v.parameter("weight", w);
            v.parameter("bias", b);
        }
        if let (Some(m), Some(var), Some(n)) = (&self.running_mean, &self.running_var, &self.num_batches_tracked) {
            v.buffer("running_mean", m);
            v.buffer("running_var", var);
            v.buffer("num_batches_tracked", n);
        }
        v.training(&self.training);
    }
    fn describe(&self) -> String {
        let c = &self.config;
        let py = |b: bool| if b { "True" } else { "False" };
        let momentum = c.momentum.map_or("None".to_string(), |m| format!("{m}"));
        format!(
            "{}({}, eps={}, momentum={momentum}, affine={}, track_running_stats={})",
            self.name,
            c.num_features,
            python_float(c.eps),
            py(c.affine),
            py(c.track_running_stats)
        )
    }
}

/// A float as Python's repr writes it (`1e-05`, `0.001`).
pub(crate) fn python_float(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-4 {
        let s = format!("{v:e}");
        match s.split_once('e') {
            Some((m, e)) => {
                let exp: i32 = e.parse().unwrap_or(0);
                format!("{m}e{}{:02}", if exp < 0 { "-" } else { "+" }, exp.abs())
            }
            None => s,
        }
    } else {
        format!("{v}")
    }
}
