//! The fusion pass `Sequential` runs: a [`Conv2d`] followed by an activation layer (and
//! then 2x2/stride-2 pooling) becomes one `ops::conv2d_fused` call, which applies the
//! activation and pooling while each sample's output is in cache. It recognises the
//! library's own layer types by downcasting, so fusion is not part of the `Module`
//! contract: a user-written module fuses by calling `ops::conv2d_fused` itself.

use crate::activation::{ReLU, Sigmoid, Tanh};
use crate::conv::Conv2d;
use crate::module::Module;
use crate::pool::{AvgPool2d, MaxPool2d};
use autograd::Activation;
use ops::{Epilogue, Pair, Pool2dArgs, Pool2x2};
use std::any::Any;

/// The convolution at the start of `layers`, the epilogue the layers after it form, and
/// how many layers the fused op covers (2 or 3); `None` when nothing fuses there.
pub(crate) fn fused_run(layers: &[Box<dyn Module>]) -> Option<(&Conv2d, Epilogue, usize)> {
    let conv = as_any(layers.first()?.as_ref()).downcast_ref::<Conv2d>()?;
    let act = activation(layers.get(1)?.as_ref())?;
    Some(match layers.get(2).and_then(|l| pool(l.as_ref())) {
        Some(p) => (conv, Epilogue::act(act).then_pool(p), 3),
        None => (conv, Epilogue::act(act), 2),
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
