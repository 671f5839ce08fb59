//! The `Module` contract: a forward function, and one `visit` method declaring what the
//! module holds (parameters, buffers, child modules, a train/eval flag). Everything else,
//! as PyTorch's `nn.Module` has it, is provided on top of those two: dotted names
//! (`1.0.conv1.weight`) for every parameter, buffer and sub-module, `state_dict` and strict
//! or non-strict `load_state_dict`, `train()`/`eval()` over the whole tree, `to_dtype`,
//! freezing and `zero_grad`. So a user's module is a struct, a `forward` and a `visit`.
//!
//! State is shared, not owned by the traversal: `Parameter`, [`Buffer`] and [`Training`]
//! are handles with interior mutability, so a forward pass through `&self` can update a
//! running statistic, and `eval()` on `&self` reaches every layer. See
//! docs/architecture.md ("Modules").

use crate::error::{Error, Result};
use autograd::{DType, Parameter, Tensor};
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Non-trainable state of a module (BatchNorm's running statistics, a step counter): a
/// tensor of any dtype, saved by `state_dict` unless made non-persistent, converted by
/// `to_dtype` when it is floating point (an integer counter keeps its dtype, as with
/// PyTorch's `.double()`). Cloning shares the buffer.
#[derive(Clone)]
pub struct Buffer(Arc<BufferInner>);

struct BufferInner {
    value: RwLock<Tensor>,
    persistent: bool,
}

impl Buffer {
    /// A buffer that `state_dict` saves (PyTorch's `register_buffer(name, t)`).
    pub fn new(value: &Tensor) -> Buffer {
        Buffer::make(value, true)
    }

    /// A buffer that `state_dict` leaves out (`register_buffer(name, t, persistent=False)`).
    pub fn non_persistent(value: &Tensor) -> Buffer {
        Buffer::make(value, false)
    }

    fn make(value: &Tensor, persistent: bool) -> Buffer {
        Buffer(Arc::new(BufferInner { value: RwLock::new(value.detach().contiguous().detach()), persistent }))
    }

    /// The value, outside any graph.
    pub fn get(&self) -> Tensor {
        self.0.value.read().unwrap().clone()
    }

    /// Replaces the value; shape and dtype must stay (an error naming `Buffer::set`).
    pub fn set(&self, value: &Tensor) -> Result<()> {
        let mut v = self.0.value.write().unwrap();
        if value.shape() != v.shape() {
            return Err(autograd::Error::mismatch(
                "Buffer::set",
                "the new value's shape differs from the buffer's",
                v.shape(),
                value.shape(),
            )
            .into());
        }
        if value.dtype() != v.dtype() {
            return Err(autograd::Error::DTypeMismatch { op: "Buffer::set", lhs: v.dtype(), rhs: value.dtype() }.into());
        }
        *v = value.detach().contiguous().detach();
        Ok(())
    }

    pub fn shape(&self) -> Vec<usize> {
        self.0.value.read().unwrap().shape().to_vec()
    }
    pub fn dtype(&self) -> DType {
        self.0.value.read().unwrap().dtype()
    }
    /// Whether `state_dict` saves it.
    pub fn is_persistent(&self) -> bool {
        self.0.persistent
    }

    /// Whether two handles are the same buffer.
    pub fn same_as(&self, other: &Buffer) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Converts a floating-point value to `dtype` (a float); integer and bool buffers stay.
    fn convert(&self, dtype: DType) {
        let mut v = self.0.value.write().unwrap();
        if v.dtype().is_float() && v.dtype() != dtype {
            *v = v.to_dtype(dtype).detach();
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// A module's train/eval switch (PyTorch's `self.training`): true (training) when made.
/// A module whose forward depends on the mode holds one and declares it in
/// [`Module::visit`], so [`Module::train`] and [`Module::eval`] on any ancestor reach it.
#[derive(Debug)]
pub struct Training(AtomicBool);

impl Default for Training {
    fn default() -> Self {
        Training(AtomicBool::new(true))
    }
}

impl Training {
    /// True in training mode.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed)
    }
}

/// What [`Module::visit`] reports to: the module's own parameters, buffers, children and
/// mode flag, each named as PyTorch names the attribute. Every method has a default that
/// ignores the item, so a traversal implements only what it collects.
pub trait Visitor<'a> {
    fn parameter(&mut self, _name: &str, _p: &Parameter) {}
    fn buffer(&mut self, _name: &str, _b: &Buffer) {}
    fn module(&mut self, _name: &str, _m: &'a dyn Module) {}
    fn training(&mut self, _flag: &'a Training) {}
}

/// A layer or a network.
///
/// Implement [`Module::forward`] and, for a module that holds anything, [`Module::visit`];
/// override [`Module::describe`] for a custom repr. The other methods are provided and
/// work through `visit`: there is nothing to gain by overriding them.
pub trait Module: Any + Send + Sync {
    /// Computes the output for a batch.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// Declares what this module holds, in PyTorch's registration order: its parameters
    /// (`v.parameter("weight", &self.weight)`), buffers, child modules
    /// (`v.module("conv1", &self.conv1)`) and, if its forward depends on the mode, its
    /// [`Training`] flag. Parameter-free leaf layers hold nothing: the default.
    fn visit<'a>(&'a self, _v: &mut dyn Visitor<'a>) {}

    /// A description like PyTorch's module repr. The default is the type's name, then the
    /// children one per line: `Net(\n  (conv): Conv2d(...)\n)`.
    fn describe(&self) -> String {
        let name = std::any::type_name::<Self>();
        let name = name.split('<').next().unwrap_or(name).rsplit("::").next().unwrap_or(name);
        describe_children(name, "", &self.named_children())
    }

    /// Every parameter with its dotted name, each shared one once (PyTorch's
    /// `named_parameters()`): a module's own first, then each child's, depth first.
    fn named_parameters(&self) -> Vec<(String, Parameter)> {
        let mut out: Vec<(String, Parameter)> = Vec::new();
        walk(self, "", &mut |prefix, own| {
            for (n, p) in &own.params {
                if !out.iter().any(|(_, q)| q.same_as(p)) {
                    out.push((join(prefix, n), p.clone()));
                }
            }
        });
        out
    }

    fn parameters(&self) -> Vec<Parameter> {
        self.named_parameters().into_iter().map(|(_, p)| p).collect()
    }

    /// Every buffer (persistent or not) with its dotted name, each shared one once.
    fn named_buffers(&self) -> Vec<(String, Buffer)> {
        let mut out: Vec<(String, Buffer)> = Vec::new();
        walk(self, "", &mut |prefix, own| {
            for (n, b) in &own.buffers {
                if !out.iter().any(|(_, c)| c.same_as(b)) {
                    out.push((join(prefix, n), b.clone()));
                }
            }
        });
        out
    }

    /// The direct sub-modules, named.
    fn named_children(&self) -> Vec<(String, &dyn Module)> {
        own(self).children
    }

    /// Every sub-module below this one with its dotted name, depth first (PyTorch's
    /// `named_modules()` without its first entry, the module itself).
    fn named_descendants(&self) -> Vec<(String, &dyn Module)> {
        let mut out = Vec::new();
        descendants(self, "", &mut out);
        out
    }

    /// PyTorch's `named_modules()`: this module (named `""`), then every module below it
    /// with its dotted name, depth first. For a `&dyn Module` (which cannot name itself
    /// as a trait object here), `named_descendants` gives the rest.
    fn named_modules(&self) -> Vec<(String, &dyn Module)>
    where
        Self: Sized,
    {
        let mut out: Vec<(String, &dyn Module)> = vec![(String::new(), self)];
        out.extend(self.named_descendants());
        out
    }

    /// Parameters and persistent buffers, keyed and ordered as PyTorch's `state_dict()`:
    /// for each module depth first, its own parameters, then its own buffers.
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        walk(self, "", &mut |prefix, own| {
            out.extend(own.params.iter().map(|(n, p)| (join(prefix, n), p.data())));
            out.extend(own.buffers.iter().filter(|(_, b)| b.is_persistent()).map(|(n, b)| (join(prefix, n), b.get())));
        });
        out
    }

    /// Loads a state dict strictly: a missing, unexpected or mis-shaped entry is an error,
    /// and so is a NaN or infinite float value (it would make every output NaN while
    /// training carried on: docs/reliability.md) or a float out of an integer buffer's
    /// range (floats truncate toward zero into integers, as PyTorch's `copy_`). The error lists every problem and nothing is loaded then. Values
    /// are converted to each parameter's or buffer's dtype, as PyTorch's `copy_` does;
    /// keys starting with `_train.` (training state beside the weights) are ignored.
    /// [`crate::io::load_state_dict_file`] adds the file's name.
    fn load_state_dict(&self, entries: &[(String, Tensor)]) -> Result<()> {
        load(self, entries, true).map(|_| ())
    }

    /// PyTorch's `load_state_dict(sd, strict=False)`: loads the entries that match and
    /// returns the missing and unexpected keys. A mis-shaped or non-finite entry is still
    /// an error (as PyTorch's size mismatch), and nothing is loaded then.
    fn load_state_dict_non_strict(&self, entries: &[(String, Tensor)]) -> Result<IncompatibleKeys> {
        load(self, entries, false)
    }

    /// Sets the mode of this module and every module below it (PyTorch's `train(mode)`).
    fn set_training(&self, on: bool) {
        walk(self, "", &mut |_, own| own.flags.iter().for_each(|f| f.set(on)));
    }
    /// Training mode for the whole tree.
    fn train(&self) {
        self.set_training(true)
    }
    /// Evaluation mode for the whole tree.
    fn eval(&self) {
        self.set_training(false)
    }
    /// This module's mode: its own flag, or, for a module that holds none, the first flag
    /// below it (depth first); true when no module in the tree has one.
    fn is_training(&self) -> bool {
        let mut found = None;
        walk(self, "", &mut |_, own| {
            if found.is_none() {
                found = own.flags.first().map(|f| f.get());
            }
        });
        found.unwrap_or(true)
    }

    /// Converts every floating-point parameter and buffer to `dtype` (PyTorch's
    /// `.double()` / `.float()`); integer and bool buffers keep theirs. Accumulated
    /// gradients are dropped. Make optimisers after converting.
    fn to_dtype(&self, dtype: DType) -> Result<()> {
        if !dtype.is_float() {
            return Err(autograd::Error::UnsupportedDType { op: "Module::to_dtype", dtype }.into());
        }
        for (_, p) in self.named_parameters() {
            p.convert(dtype)?;
        }
        self.named_buffers().iter().for_each(|(_, b)| b.convert(dtype));
        Ok(())
    }

    /// Freezes (`false`) or unfreezes every parameter (PyTorch's `requires_grad_`).
    fn requires_grad_(&self, on: bool) {
        self.parameters().iter().for_each(|p| {
            p.requires_grad_(on);
        });
    }

    /// Forgets every parameter's accumulated gradient.
    fn zero_grad(&self) {
        self.parameters().iter().for_each(|p| p.zero_grad());
    }

    /// Number of trainable scalars (frozen ones included, as PyTorch counts them).
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|p| p.numel()).sum()
    }
}

/// The keys a non-strict [`Module::load_state_dict_non_strict`] did not match, as
/// PyTorch's `_IncompatibleKeys`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncompatibleKeys {
    pub missing_keys: Vec<String>,
    pub unexpected_keys: Vec<String>,
}

/// What one module declares about itself.
#[derive(Default)]
struct Own<'a> {
    params: Vec<(String, Parameter)>,
    buffers: Vec<(String, Buffer)>,
    children: Vec<(String, &'a dyn Module)>,
    flags: Vec<&'a Training>,
}

impl<'a> Visitor<'a> for Own<'a> {
    fn parameter(&mut self, name: &str, p: &Parameter) {
        self.params.push((name.to_string(), p.clone()));
    }
    fn buffer(&mut self, name: &str, b: &Buffer) {
        self.buffers.push((name.to_string(), b.clone()));
    }
    fn module(&mut self, name: &str, m: &'a dyn Module) {
        self.children.push((name.to_string(), m));
    }
    fn training(&mut self, flag: &'a Training) {
        self.flags.push(flag);
    }
}

fn own<M: Module + ?Sized>(m: &M) -> Own<'_> {
    let mut o = Own::default();
    m.visit(&mut o);
    o
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Calls `f` with every module's dotted prefix and declarations, depth first, parents
/// before children (the order of PyTorch's `named_modules`).
fn walk<'a, M: Module + ?Sized>(m: &'a M, prefix: &str, f: &mut dyn FnMut(&str, &Own<'a>)) {
    let o = own(m);
    f(prefix, &o);
    for (name, child) in &o.children {
        walk(*child, &join(prefix, name), f);
    }
}

fn descendants<'a, M: Module + ?Sized>(m: &'a M, prefix: &str, out: &mut Vec<(String, &'a dyn Module)>) {
    for (name, child) in own(m).children {
        let full = join(prefix, &name);
        out.push((full.clone(), child));
        descendants(child, &full, out);
    }
}

/// PyTorch's repr of a container: `Name(extra)` alone, or with one indented line per child.
pub fn describe_children(name: &str, extra: &str, children: &[(String, &dyn Module)]) -> String {
    if children.is_empty() {
        return format!("{name}({extra})");
    }
    let mut s = format!("{name}({extra}\n");
    for (n, c) in children {
        s += &format!("  ({n}): {}\n", c.describe().replace('\n', "\n  "));
    }
    s + ")"
}

/// Where a state-dict entry goes.
enum Slot {
    Param(Parameter),
    Buffer(Buffer),
}

impl Slot {
    fn shape(&self) -> Vec<usize> {
        match self {
            Slot::Param(p) => p.shape(),
            Slot::Buffer(b) => b.shape(),
        }
    }
    fn dtype(&self) -> DType {
        match self {
            Slot::Param(p) => p.dtype(),
            Slot::Buffer(b) => b.dtype(),
        }
    }
}

/// The state dict's keys with where each goes, in `state_dict` order.
fn slots<M: Module + ?Sized>(m: &M) -> Vec<(String, Slot)> {
    let mut out = Vec::new();
    walk(m, "", &mut |prefix, own| {
        out.extend(own.params.iter().map(|(n, p)| (join(prefix, n), Slot::Param(p.clone()))));
        out.extend(own.buffers.iter().filter(|(_, b)| b.is_persistent()).map(|(n, b)| (join(prefix, n), Slot::Buffer(b.clone()))));
    });
    out
}

/// The state dict's keys and shapes (for checking a file's headers before reading it).
pub(crate) fn expected_shapes<M: Module + ?Sized>(m: &M) -> Vec<(String, Vec<usize>)> {
    slots(m).into_iter().map(|(n, s)| (n, s.shape())).collect()
}

fn load<M: Module + ?Sized>(m: &M, entries: &[(String, Tensor)], strict: bool) -> Result<IncompatibleKeys> {
    let slots = slots(m);
    let shapes: Vec<(String, Vec<usize>)> = slots.iter().map(|(n, s)| (n.clone(), s.shape())).collect();
    let (mut problems, keys) = state_dict_problems(&shapes, entries.iter().map(|(k, t)| (k.as_str(), t.shape())), strict);
    let by_name: HashMap<&str, &Tensor> = entries.iter().rev().map(|(k, t)| (k.as_str(), t)).collect();
    let mut values = Vec::with_capacity(slots.len());
    for (name, slot) in &slots {
        let Some(&t) = by_name.get(name.as_str()) else { continue };
        if t.shape() != slot.shape().as_slice() {
            continue; // listed above
        }
        if let Some((i, v)) = first_non_finite(t) {
            let what = if matches!(slot, Slot::Param(_)) { "weight" } else { "value" };
            problems.push(format!("'{name}' holds {v} at index {i} (a non-finite {what})"));
            continue;
        }
        match t.try_to_dtype(slot.dtype()) {
            Ok(v) => values.push((slot, v)),
            Err(e) => problems.push(format!("'{name}' does not convert to the module's {}: {e}", slot.dtype())),
        }
    }
    if !problems.is_empty() {
        return Err(Error::StateDict(crate::io::list_problems(&problems)));
    }
    for (slot, v) in values {
        match slot {
            Slot::Param(p) => p.set(&v)?,
            Slot::Buffer(b) => b.set(&v)?,
        }
    }
    Ok(keys)
}

/// The flat index and value of the first NaN or infinity in a float tensor, if any
/// (integer and bool tensors have none).
pub fn first_non_finite(t: &Tensor) -> Option<(usize, f64)> {
    if !t.dtype().is_float() || t.all_finite() {
        return None;
    }
    t.to_vec::<f64>().into_iter().enumerate().find(|(_, v)| !v.is_finite())
}

/// Every way `entries` (name, shape) fail to match `expected` (name, shape): mis-shaped
/// keys always; missing and unexpected keys as problems when `strict`, else returned
/// (`_train.*` keys are allowed either way). Linear time, so a file with a million entries
/// is refused quickly. Shared by [`Module::load_state_dict`] and the header check of
/// [`crate::io::load_state_dict_file`].
pub(crate) fn state_dict_problems<'a>(
    expected: &[(String, Vec<usize>)],
    entries: impl Iterator<Item = (&'a str, &'a [usize])>,
    strict: bool,
) -> (Vec<String>, IncompatibleKeys) {
    let wanted: HashMap<&str, &[usize]> = expected.iter().map(|(n, s)| (n.as_str(), s.as_slice())).collect();
    let mut found: HashMap<&str, &[usize]> = HashMap::new();
    let mut keys = IncompatibleKeys::default();
    for (k, shape) in entries {
        if wanted.contains_key(k) {
            found.entry(k).or_insert(shape);
        } else if !k.starts_with("_train.") {
            keys.unexpected_keys.push(k.to_string());
        }
    }
    let mut problems = Vec::new();
    for (name, shape) in expected {
        match found.get(name.as_str()) {
            None if strict => problems.push(format!("missing key '{name}'")),
            None => keys.missing_keys.push(name.clone()),
            Some(s) if s != shape => problems.push(format!(
                "'{name}' has shape {} but the module expects {}",
                autograd::error::fmt_shape(s),
                autograd::error::fmt_shape(shape)
            )),
            Some(_) => {}
        }
    }
    if strict {
        problems.extend(keys.unexpected_keys.drain(..).map(|k| format!("unexpected key '{k}'")));
    }
    (problems, keys)
}

/// Modules applied in order; children are named `"0"`, `"1"`, ... as in PyTorch.
///
/// A convolution followed by an activation (and then 2x2 pooling) runs as one fused op,
/// `ops::conv2d_fused`, with bitwise the values and gradients of the layers in turn. A
/// user-written module gets the same by calling `ops::conv2d_fused` itself.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
    training: Training,
}

impl Sequential {
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a layer (builder style).
    pub fn append(mut self, layer: impl Module) -> Self {
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
    /// Each layer in turn, except that runs the fusion pass (`crate::fuse`) finds (a
    /// convolution, maybe a `BatchNorm2d`, an activation, maybe 2x2 pooling) run as one
    /// op: passes over the activations are saved, the results are the same (to rounding
    /// where an evaluation-mode batch norm folds into the convolution).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        let mut i = 0;
        while i < self.layers.len() {
            match crate::fuse::fused_run(&self.layers[i..]) {
                Some(run) => {
                    h = run.forward(&h)?;
                    i += run.len;
                }
                None => {
                    h = self.layers[i].forward(&h)?;
                    i += 1;
                }
            }
        }
        Ok(h)
    }
    fn visit<'a>(&'a self, v: &mut dyn Visitor<'a>) {
        for (i, l) in self.layers.iter().enumerate() {
            v.module(&i.to_string(), l.as_ref());
        }
        v.training(&self.training);
    }
    fn describe(&self) -> String {
        describe_children("Sequential", "", &self.named_children())
    }
}
