//! The fusion pass `Sequential` (and `Residual`) runs over the library's own layers:
//!
//! - a [`Conv2d`], a `BatchNorm2d` in evaluation mode (folded into the convolution's weight
//!   and bias), then an activation layer (then 2x2/stride-2 pooling) becomes one
//!   `ops::conv2d_fused` call, which applies the activation and pooling while each
//!   sample's output is in cache;
//! - a [`Conv2d`], a `BatchNorm2d` normalising with the batch's statistics (training mode),
//!   then maybe an activation becomes one `ops::conv2d_bn_train` call (the pooling after it
//!   stays a layer of its own).
//!
//! It recognises the layer types by downcasting, so fusion is not part of the `Module`
//! contract: a user-written module fuses by calling those ops (or
//! [`Conv2d::forward_folded`], [`Conv2d::forward_bn_train`]) itself.

use crate::activation::{ReLU, Sigmoid, Tanh};
use crate::batch_norm::BatchNorm;
use crate::conv::Conv2d;
use crate::module::Module;
use crate::pool::{AvgPool2d, MaxPool2d};
use autograd::{Activation, Tensor};
use ops::{Epilogue, Pair, Pool2dArgs, Pool2x2};
use std::any::Any;

/// A run of layers computed as one fused convolution.
pub(crate) struct FusedRun<'a> {
    conv: &'a Conv2d,
    /// A `BatchNorm2d` right after the convolution: folded into it in evaluation mode,
    /// else normalising with the batch's statistics in the same op.
    bn: Option<&'a BatchNorm>,
    epilogue: Epilogue,
    /// Layers the run covers (2 to 4).
    pub(crate) len: usize,
}

impl FusedRun<'_> {
    /// The run's output for input `x`.
    pub(crate) fn forward(&self, x: &Tensor) -> crate::Result<Tensor> {
        let Some(bn) = self.bn else { return self.conv.forward_fused(x, self.epilogue) };
        // The batch norm's mode cannot change between `fused_run` and here (one forward
        // call), and a pooling layer is only taken into a run whose batch norm folds;
        // skipping a layer would be wrong, so a refusal is an error, never a fallback.
        let y = if bn.folds() {
            self.conv.forward_folded(x, bn, self.epilogue)?
        } else if self.epilogue.pool.is_none() {
            self.conv.forward_bn_train(x, bn, self.epilogue.act)?
        } else {
            None
        };
        y.ok_or_else(|| autograd::Error::invalid("conv2d_fused", "the batch norm changed mode during the forward").into())
    }
}

/// The fused run at the start of `layers`: a convolution, then a batch norm and/or an
/// activation (then maybe 2x2 pooling, when any batch norm folds); `None` when nothing
/// fuses there.
pub(crate) fn fused_run(layers: &[Box<dyn Module>]) -> Option<FusedRun<'_>> {
    let conv = as_any(layers.first()?.as_ref()).downcast_ref::<Conv2d>()?;
    let bn = layers.get(1).and_then(|l| as_any(l.as_ref()).downcast_ref::<BatchNorm>()).filter(|b| b.is_2d());
    let next = 1 + usize::from(bn.is_some());
    let Some(act) = layers.get(next).and_then(|l| activation(l.as_ref())) else {
        return bn.map(|bn| FusedRun { conv, bn: Some(bn), epilogue: Epilogue::default(), len: 2 });
    };
    let pool = layers.get(next + 1).and_then(|l| pool(l.as_ref())).filter(|_| bn.is_none_or(|b| b.folds()));
    Some(match pool {
        Some(p) => FusedRun { conv, bn, epilogue: Epilogue::act(act).then_pool(p), len: next + 2 },
        None => FusedRun { conv, bn, epilogue: Epilogue::act(act), len: next + 1 },
    })
}

/// `conv` then `bn` then `act` (if any) as one op: folded when `bn` is in evaluation
/// mode, else with the batch's statistics; the layers in turn only if `bn` is not 2-d.
/// How `Residual` runs its two convolutions.
pub(crate) fn conv_bn_act(conv: &Conv2d, bn: &BatchNorm, act: Option<Activation>, x: &Tensor) -> crate::Result<Tensor> {
    let epilogue = act.map_or(Epilogue::default(), Epilogue::act);
    if let Some(y) = conv.forward_folded(x, bn, epilogue)? {
        return Ok(y);
    }
    if let Some(y) = conv.forward_bn_train(x, bn, act)? {
        return Ok(y);
    }
    let y = bn.forward(&conv.forward(x)?)?;
    Ok(match act {
        Some(a) => a.apply(&y),
        None => y,
    })
}

fn as_any(m: &dyn Module) -> &dyn Any {
    m
}

fn activation(m: &dyn Module) -> Option<Activation> {
    let a = as_any(m);
    if a.is::<Sigmoid>() {
        Some(Activation::Sigmoid)
    } else if a.is::<ReLU>() {
        Some(Activation::Relu)
    } else if a.is::<Tanh>() {
        Some(Activation::Tanh)
    } else {
        None
    }
}

fn pool(m: &dyn Module) -> Option<Pool2x2> {
    let a = as_any(m);
    if let Some(p) = a.downcast_ref::<MaxPool2d>() {
        is_2x2(p.0).then_some(Pool2x2::Max)
    } else if let Some(p) = a.downcast_ref::<AvgPool2d>() {
        is_2x2(p.0).then_some(Pool2x2::Avg)
    } else {
        None
    }
}

/// Whether `a` is the 2x2/stride-2 unpadded pooling a convolution can fuse.
fn is_2x2(a: Pool2dArgs) -> bool {
    let two = Pair(2, 2);
    a.kernel == two && a.stride.unwrap_or(a.kernel) == two && a.padding == Pair(0, 0)
}
