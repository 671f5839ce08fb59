//! The `Module` trait and `Sequential`. A module is a forward function plus named
//! parameters; everything else (state dicts, zeroing gradients, mode) is provided on top
//! of those two, so a new layer is a few lines.

use crate::error::{Error, Result};
use autograd::{Parameter, Tensor};
use ops::Epilogue;

/// A layer or a network.
pub trait Module: Send + Sync {
    /// Computes the output for a batch.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// The trainable parameters, named like PyTorch's `named_parameters` (`weight`, `bias`,
    /// and `"{index}.{name}"` inside a `Sequential`).
    fn named_parameters(&self) -> Vec<(String, Parameter)> {
        Vec::new()
    }

    /// A one-line description, like PyTorch's module repr: `Conv2d(1, 6, kernel_size=(5, 5), ...)`.
    fn describe(&self) -> String;

    /// Switches between training and evaluation behaviour (for layers that differ).
    fn set_training(&mut self, _training: bool) {}

    /// What this layer computes, if a layer before it can apply it to its output as it
    /// writes it (an activation; 2x2 average or max pooling): `Sequential` then offers it to that
    /// layer through [`Module::forward_then`].
    fn as_epilogue(&self) -> Option<Epilogue> {
        None
    }

    /// This layer followed by `epilogue`, computed as one op by layers that can (a
    /// convolution); `None` when this layer cannot. Must give bitwise the values and
    /// gradients of the layers in turn.
    fn forward_then(&self, _x: &Tensor, _epilogue: Epilogue) -> Option<Result<Tensor>> {
        None
    }

    fn parameters(&self) -> Vec<Parameter> {
        self.named_parameters().into_iter().map(|(_, p)| p).collect()
    }

    /// Forgets every parameter's accumulated gradient.
    fn zero_grad(&self) {
        self.parameters().iter().for_each(|p| p.zero_grad());
    }

    /// Number of trainable scalars.
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|p| p.numel()).sum()
    }

    /// Every parameter's value, keyed as PyTorch keys `state_dict()`.
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        self.named_parameters().into_iter().map(|(n, p)| (n, p.data())).collect()
    }

    /// Loads parameter values. Keys starting with `_train.` (training state kept beside the
    /// weights in a checkpoint) are ignored. Strict: a missing, unexpected or mis-shaped
    /// entry is an error, and so is a NaN or infinite weight (it would make every output NaN
    /// while training carried on: see docs/reliability.md); the error lists all of them and
    /// nothing is loaded then. [`crate::io::load_state_dict_file`] adds the file's name.
    fn load_state_dict(&self, entries: &[(String, Tensor)]) -> Result<()> {
        let params = self.named_parameters();
        let shapes: Vec<(String, Vec<usize>)> = params.iter().map(|(n, p)| (n.clone(), p.shape().to_vec())).collect();
        let mut problems = state_dict_problems(&shapes, entries.iter().map(|(k, t)| (k.as_str(), t.shape())));
        // A NaN or infinite weight would make every output NaN while training carried on
        // (docs/reliability.md).
        for (name, _) in &params {
            if let Some((_, t)) = entries.iter().find(|(k, _)| k == name) {
                if let Some((i, v)) = first_non_finite(t) {
                    problems.push(format!("'{name}' holds {v} at index {i} (a non-finite weight)"));
                }
            }
        }
        if !problems.is_empty() {
            return Err(Error::StateDict(crate::io::list_problems(&problems)));
        }
        for (name, p) in &params {
            if let Some((_, t)) = entries.iter().find(|(k, _)| k == name) {
                p.set(&t.to_dtype(p.dtype()))?;
            }
        }
        Ok(())
    }
}

/// The flat index and value of the first NaN or infinity in `t`, if any.
pub fn first_non_finite(t: &Tensor) -> Option<(usize, f64)> {
    if t.all_finite() {
        return None;
    }
    t.to_vec::<f64>().into_iter().enumerate().find(|(_, v)| !v.is_finite())
}

/// Every way `entries` (name, shape) fail to match the parameters `params` (name, shape):
/// missing, mis-shaped and unexpected keys (`_train.*` keys are allowed). Linear time, so
/// a file with a million entries is refused quickly. Shared by [`Module::load_state_dict`]
/// and the header check of [`crate::io::load_state_dict_file`].
pub(crate) fn state_dict_problems<'a>(
    params: &[(String, Vec<usize>)],
    entries: impl Iterator<Item = (&'a str, &'a [usize])>,
) -> Vec<String> {
    use std::collections::HashMap;
    let wanted: HashMap<&str, &[usize]> = params.iter().map(|(n, s)| (n.as_str(), s.as_slice())).collect();
    let mut found: HashMap<&str, &[usize]> = HashMap::new();
    let mut problems = Vec::new();
    for (k, shape) in entries {
        if wanted.contains_key(k) {
            found.entry(k).or_insert(shape);
        } else if !k.starts_with("_train.") {
            problems.push(format!("unexpected key '{k}'"));
        }
    }
    let mut params_problems = Vec::new();
    for (name, shape) in params {
        match found.get(name.as_str()) {
            None => params_problems.push(format!("missing key '{name}'")),
            Some(s) if s != shape => params_problems.push(format!(
                "'{name}' has shape {} but the module expects {}",
                autograd::error::fmt_shape(s),
                autograd::error::fmt_shape(shape)
            )),
            Some(_) => {}
        }
    }
    params_problems.extend(problems);
    params_problems
}

/// Layers applied in order; parameters are named `"{index}.{name}"` as in PyTorch.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a layer (builder style).
    pub fn append(mut self, layer: impl Module + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }
    pub fn push(&mut self, layer: Box<dyn Module>) {
        self.layers.push(layer);
    }
    pub fn len(&self) -> usize {
        self.layers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
    pub fn layers(&self) -> &[Box<dyn Module>] {
        &self.layers
    }

    /// The epilogue the layers after layer `i` form (an activation, then optionally 2x2
    /// pooling) and how many layers it covers.
    fn epilogue_after(&self, i: usize) -> (Epilogue, usize) {
        let step = |k: usize| self.layers.get(k).and_then(|l| l.as_epilogue());
        match step(i + 1) {
            Some(Epilogue { act: Some(act), pool: None }) => match step(i + 2) {
                Some(Epilogue { act: None, pool: Some(pool) }) => (Epilogue::act(act).then_pool(pool), 2),
                _ => (Epilogue::act(act), 1),
            },
            _ => (Epilogue::default(), 0),
        }
    }

    /// Runs `x` through the layers, returning each layer's description and output shape
    /// (the book's layer table).
    pub fn summary(&self, x: &Tensor) -> Result<Vec<(String, Vec<usize>)>> {
        let mut rows = Vec::with_capacity(self.layers.len());
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h)?;
            rows.push((l.describe(), h.shape().to_vec()));
        }
        Ok(rows)
    }
}

impl Module for Sequential {
    /// Each layer in turn, except that a layer followed by an activation (and then 2x2
    /// pooling) it can fuse runs them as one op: passes over the activations are
    /// saved, the results are the same.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        let mut i = 0;
        while i < self.layers.len() {
            let (epilogue, n) = self.epilogue_after(i);
            match (n > 0).then(|| self.layers[i].forward_then(&h, epilogue)).flatten() {
                Some(y) => {
                    h = y?;
                    i += 1 + n;
                }
                None => {
                    h = self.layers[i].forward(&h)?;
                    i += 1;
                }
            }
        }
        Ok(h)
    }
    fn named_parameters(&self) -> Vec<(String, Parameter)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.named_parameters().into_iter().map(move |(n, p)| (format!("{i}.{n}"), p)))
            .collect()
    }
    fn describe(&self) -> String {
        let inner: Vec<String> = self.layers.iter().enumerate().map(|(i, l)| format!("  ({i}): {}", l.describe())).collect();
        format!("Sequential(\n{}\n)", inner.join("\n"))
    }
    fn set_training(&mut self, training: bool) {
        self.layers.iter_mut().for_each(|l| l.set_training(training));
    }
}
