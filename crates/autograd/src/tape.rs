//! The tape. Every differentiable op appends one entry (a [`Node`]): the op's name, its
//! inputs, its (detached) output and the rule that turns the output's gradient into the
//! inputs' gradients. Entries get increasing tape positions, so walking the entries that
//! lead to a result in decreasing position is a valid reverse topological order: that
//! is all `backward` does.
//!
//! Gradient rules are written with ordinary tensor ops. Running them with recording on
//! (`create_graph`) therefore puts the backward pass itself on the tape, which is how
//! gradients of gradients work.

use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorInner};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where a leaf accumulates its gradient; shared by every version of a `Parameter`.
pub type GradSlot = Arc<Mutex<Option<Tensor>>>;

/// A gradient rule: given the context of one tape entry, one gradient per input
/// (`None` where the input needs none).
pub type Rule = dyn Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync;

static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static DETECT_ANOMALY: Cell<bool> = const { Cell::new(false) };
}

/// Turns anomaly detection on or off for backward passes run by this thread (PyTorch's
/// `torch.autograd.set_detect_anomaly`, per thread like grad mode): every backward pass
/// then checks the forward values of the graph (with what fused ops computed inside them,
/// see [`record_with_internals`]) and every gradient it computes, and fails
/// on the first NaN or infinity, naming the op and its position on the tape. It costs a
/// pass over every value.
pub fn set_detect_anomaly(on: bool) {
    DETECT_ANOMALY.with(|d| d.set(on));
}

pub fn is_anomaly_enabled() -> bool {
    DETECT_ANOMALY.with(|d| d.get())
}

/// One tape entry.
pub struct Node {
    /// Position on the tape; later ops have larger positions.
    pub(crate) seq: u64,
    pub(crate) name: &'static str,
    pub(crate) inputs: Vec<Tensor>,
    /// The op's result without its graph edge (shares the buffer; no reference cycle).
    pub(crate) output: Tensor,
    /// The gradient rule; taken out (freeing what it captured) after a backward pass
    /// unless the caller retains the graph.
    rule: Mutex<Option<Arc<Rule>>>,
    /// Whether the rule is itself differentiable (its ops are all on the tape).
    second_order: bool,
    /// Values a fused op computed inside and saved (a convolution's activation before its
    /// pooling), kept only in anomaly mode, which checks them with the output.
    internals: Vec<Tensor>,
}

/// What a gradient rule sees.
pub struct BackwardCtx<'a> {
    node: &'a Node,
    grad_output: &'a Tensor,
    create_graph: bool,
}

impl<'a> BackwardCtx<'a> {
    /// Gradient of the loss with respect to this op's output.
    pub fn grad_output(&self) -> &Tensor {
        self.grad_output
    }
    /// The i-th input of the op, as it was in the forward pass.
    pub fn input(&self, i: usize) -> &Tensor {
        &self.node.inputs[i]
    }
    pub fn inputs(&self) -> &[Tensor] {
        &self.node.inputs
    }
    /// The op's output, detached. Rules that need a differentiable output under
    /// `create_graph` recompute it from the inputs instead.
    pub fn output(&self) -> &Tensor {
        &self.node.output
    }
    /// Whether input `i` needs a gradient; rules skip the work for the others.
    pub fn needs_grad(&self, i: usize) -> bool {
        self.node.inputs[i].requires_grad()
    }
    /// True when the backward pass itself is being recorded (double backward).
    pub fn create_graph(&self) -> bool {
        self.create_graph
    }
}

// ----- grad mode ----------------------------------------------------------------------

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// True unless inside [`no_grad`] (per thread).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous grad mode when dropped.
pub struct GradModeGuard(bool);
impl GradModeGuard {
    pub fn new(enabled: bool) -> Self {
        GradModeGuard(GRAD_ENABLED.with(|g| g.replace(enabled)))
    }
}
impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.0));
    }
}

/// Runs `f` without recording anything on the tape (PyTorch's `torch.no_grad()`).
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _g = GradModeGuard::new(false);
    f()
}

// ----- recording ----------------------------------------------------------------------

/// Puts `output` on the tape as the result of op `name` applied to `inputs`, with a gradient
/// rule written in differentiable ops (so it supports double backward). When recording is
/// off or no input requires grad, returns `output` unchanged. This is how every op in the
/// library, and any custom op of a user's, joins the tape.
pub fn record(
    name: &'static str,
    output: Tensor,
    inputs: &[&Tensor],
    rule: impl Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Tensor {
    record_impl(name, output, inputs, Arc::new(rule), true, &[])
}

/// Like [`record`], for a fused op that computes values inside it that its output may not
/// show (a convolution's activation before max pooling drops a `-inf`, an odd last row, or
/// anything a later step maps to a finite value): anomaly mode checks `internals` as it
/// checks the output, so a NaN or infinity there is reported at this op. They are kept on
/// the tape only while anomaly mode is on.
pub fn record_with_internals(
    name: &'static str,
    output: Tensor,
    inputs: &[&Tensor],
    internals: &[&Tensor],
    rule: impl Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Tensor {
    record_impl(name, output, inputs, Arc::new(rule), true, internals)
}

/// Like [`record`], for a rule that is not itself differentiable (a hand-written kernel).
/// Double backward through such an op is an error naming it, never a silent zero.
pub fn record_first_order(
    name: &'static str,
    output: Tensor,
    inputs: &[&Tensor],
    rule: impl Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Tensor {
    record_impl(name, output, inputs, Arc::new(rule), false, &[])
}

fn record_impl(
    name: &'static str,
    output: Tensor,
    inputs: &[&Tensor],
    rule: Arc<Rule>,
    second_order: bool,
    internals: &[&Tensor],
) -> Tensor {
    // An i64 or bool result (an index, a mask, a comparison) has no gradient.
    if !is_grad_enabled() || !output.dtype().is_float() || !inputs.iter().any(|t| t.requires_grad()) {
        return output;
    }
    let node = Node {
        seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
        name,
        inputs: inputs.iter().map(|t| (*t).clone()).collect(),
        output: output.detach(),
        rule: Mutex::new(Some(rule)),
        second_order,
        internals: if is_anomaly_enabled() { internals.iter().map(|t| t.detach()).collect() } else { Vec::new() },
    };
    Tensor(Arc::new(TensorInner {
        storage: output.0.storage.clone(),
        layout: output.0.layout.clone(),
        grad_fn: Some(Arc::new(node)),
        grad_slot: None,
    }))
}

// ----- backward -----------------------------------------------------------------------

/// Options of a backward pass (PyTorch's `retain_graph` and `create_graph`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BackwardOptions {
    /// Keep the gradient rules (and what they saved) for another backward pass.
    pub retain_graph: bool,
    /// Record the backward pass on the tape, so gradients can be differentiated again.
    /// Implies `retain_graph`.
    pub create_graph: bool,
    /// For [`grad`] only: an input the output does not depend on gets `None` instead of
    /// an error (PyTorch's `allow_unused`).
    pub allow_unused: bool,
}

impl Tensor {
    /// Backpropagates from a one-element tensor, accumulating into the `.grad()` of every
    /// leaf that requires grad.
    pub fn backward(&self) -> Result<()> {
        self.backward_with(None, BackwardOptions::default())
    }

    /// Backpropagates with an explicit seed gradient (required for non-scalar outputs)
    /// and options.
    pub fn backward_with(&self, seed: Option<&Tensor>, opts: BackwardOptions) -> Result<()> {
        run_backward(self, seed, opts, None).map(|_| ())
    }
}

/// Gradients of `output` with respect to `inputs`, returned instead of accumulated
/// (PyTorch's `torch.autograd.grad`). With `create_graph` the results are themselves on
/// the tape, which gives Hessian-vector products and `gradgradcheck`.
///
/// A leaf input is matched by its gradient slot, so a parameter is passed as
/// `&p.tensor()`: every handle of the parameter shares the slot, and its gradient is the
/// sum over all its uses, as `backward` accumulates it (nothing is written to `p.grad()`).
///
/// # Errors
/// An input that does not require grad, and an input the output does not depend on,
/// unless `opts.allow_unused` (then its entry is `None`). An input the graph reaches but
/// whose every rule returned no gradient gets zeros. Every entry of a used input is
/// `Some`.
pub fn grad(output: &Tensor, inputs: &[&Tensor], seed: Option<&Tensor>, opts: BackwardOptions) -> Result<Vec<Option<Tensor>>> {
    for t in inputs {
        if !t.requires_grad() {
            return Err(Error::invalid("grad", "one of the differentiated tensors does not require grad"));
        }
    }
    run_backward(output, seed, opts, Some(inputs)).map(|r| r.unwrap_or_default())
}

/// The key a leaf's gradient is gathered under: its gradient slot, which every handle of
/// a parameter shares (0 for a leaf without one, which needs no gradient).
fn leaf_key(leaf: &Tensor) -> usize {
    leaf.0.grad_slot.as_ref().map(|s| Arc::as_ptr(s) as usize).unwrap_or(0)
}

/// Sums two gradient contributions (recorded when building a graph).
fn accumulate(acc: Option<Tensor>, g: Tensor) -> Result<Tensor> {
    match acc {
        None => Ok(g),
        Some(a) => a.add(&g),
    }
}

fn run_backward(
    root: &Tensor,
    seed: Option<&Tensor>,
    opts: BackwardOptions,
    targets: Option<&[&Tensor]>,
) -> Result<Option<Vec<Option<Tensor>>>> {
    if !root.requires_grad() {
        return Err(Error::NoGraph);
    }
    let seed = match seed {
        Some(s) => {
            if s.shape() != root.shape() {
                return Err(Error::shape("backward", "seed gradient shape differs from the output's", s.shape(), root.shape()));
            }
            s.to_dtype(root.dtype())
        }
        None if root.numel() == 1 => Tensor::ones_dtype(root.shape(), root.dtype()),
        None => return Err(Error::NonScalarBackward(root.shape().to_vec())),
    };
    let create_graph = opts.create_graph;
    let retain = opts.retain_graph || create_graph;
    let _mode = GradModeGuard::new(create_graph);
    let seed = if create_graph { seed } else { seed.detach() };

    // Collect the tape entries that lead to the root, then order them by tape position.
    let mut nodes: HashMap<u64, Arc<Node>> = HashMap::new();
    // The gradient slots of the leaves the graph reaches (for `grad`'s unused check).
    let mut used_leaves: HashSet<usize> = HashSet::new();
    let mut stack: Vec<Arc<Node>> = root.0.grad_fn.iter().cloned().collect();
    while let Some(n) = stack.pop() {
        if nodes.contains_key(&n.seq) {
            continue;
        }
        for inp in &n.inputs {
            match &inp.0.grad_fn {
                Some(f) => {
                    if !nodes.contains_key(&f.seq) {
                        stack.push(f.clone());
                    }
                }
                None => {
                    used_leaves.insert(leaf_key(inp));
                }
            }
        }
        nodes.insert(n.seq, n);
    }
    if root.0.grad_fn.is_none() {
        used_leaves.insert(leaf_key(root));
    }
    let mut order: Vec<u64> = nodes.keys().copied().collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    let anomaly = is_anomaly_enabled();
    if anomaly {
        check_forward(&nodes, &order)?;
    }

    // Where each target's gradient comes from: a node's output, or a leaf.
    let mut target_of_node: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut target_of_leaf: HashMap<usize, Vec<usize>> = HashMap::new();
    if let Some(ts) = targets {
        for (i, t) in ts.iter().enumerate() {
            match &t.0.grad_fn {
                Some(f) => target_of_node.entry(f.seq).or_default().push(i),
                None => target_of_leaf.entry(leaf_key(t)).or_default().push(i),
            }
        }
    }
    let mut results: Vec<Option<Tensor>> = vec![None; targets.map_or(0, |t| t.len())];
    // Leaf gradients, keyed by grad slot so all versions of a parameter add up.
    let mut leaf_grads: Vec<(Tensor, Tensor)> = Vec::new();
    let mut leaf_index: HashMap<usize, usize> = HashMap::new();
    let mut deliver_leaf = |leaf: &Tensor, g: Tensor, results: &mut Vec<Option<Tensor>>| -> Result<()> {
        if targets.is_some() {
            if let Some(ix) = target_of_leaf.get(&leaf_key(leaf)) {
                for &i in ix {
                    results[i] = Some(accumulate(results[i].take(), g.clone())?);
                }
            }
            return Ok(());
        }
        let key = leaf_key(leaf);
        if key == 0 {
            return Ok(());
        }
        match leaf_index.get(&key) {
            Some(&i) => {
                let prev = leaf_grads[i].1.clone();
                leaf_grads[i].1 = prev.add(&g)?;
            }
            None => {
                leaf_index.insert(key, leaf_grads.len());
                leaf_grads.push((leaf.clone(), g));
            }
        }
        Ok(())
    };

    let mut pending: HashMap<u64, Tensor> = HashMap::new();
    match &root.0.grad_fn {
        Some(f) => {
            pending.insert(f.seq, seed);
        }
        None => deliver_leaf(root, seed, &mut results)?,
    }

    for &seq in &order {
        let Some(g) = pending.remove(&seq) else { continue };
        let node = &nodes[&seq];
        if let Some(ix) = target_of_node.get(&seq) {
            for &i in ix {
                results[i] = Some(accumulate(results[i].take(), g.clone())?);
            }
        }
        let rule = {
            let mut slot = node.rule.lock().unwrap();
            let r = slot.clone().ok_or(Error::GraphConsumed { op: node.name, seq })?;
            if !retain {
                *slot = None;
            }
            r
        };
        let grads = {
            let ctx = BackwardCtx { node, grad_output: &g, create_graph };
            if create_graph && !node.second_order {
                let grads = no_grad(|| rule(&ctx))?;
                // Mark each result as depending on the op, so that differentiating it
                // again fails loudly instead of treating the rule as a constant.
                let mut deps: Vec<&Tensor> = node.inputs.iter().collect();
                deps.push(&g);
                let name = node.name;
                grads.into_iter().map(|og| og.map(|t| record(name, t, &deps, move |_| Err(Error::NoSecondOrder { op: name })))).collect()
            } else {
                rule(&ctx)?
            }
        };
        if grads.len() != node.inputs.len() {
            return Err(Error::BadGradient {
                op: node.name,
                msg: format!("rule returned {} gradients for {} inputs", grads.len(), node.inputs.len()),
            });
        }
        for (i, (inp, og)) in node.inputs.iter().zip(grads).enumerate() {
            let Some(gi) = og else { continue };
            if !inp.requires_grad() {
                continue;
            }
            if anomaly && !gi.all_finite() {
                let position = order.len() - 1 - order.iter().position(|&s| s == seq).unwrap_or(0);
                return Err(Error::Anomaly {
                    op: node.name,
                    position,
                    what: format!("its backward produced a non-finite gradient for input {i}"),
                });
            }
            if gi.shape() != inp.shape() || gi.dtype() != inp.dtype() {
                return Err(Error::BadGradient {
                    op: node.name,
                    msg: format!(
                        "gradient {} {} for input {} {}",
                        crate::error::fmt_shape(gi.shape()),
                        gi.dtype(),
                        crate::error::fmt_shape(inp.shape()),
                        inp.dtype()
                    ),
                });
            }
            match &inp.0.grad_fn {
                Some(f) => {
                    let acc = pending.remove(&f.seq);
                    pending.insert(f.seq, accumulate(acc, gi)?);
                }
                None => deliver_leaf(inp, gi, &mut results)?,
            }
        }
    }

    if let Some(ts) = targets {
        for (r, t) in results.iter_mut().zip(ts) {
            if r.is_some() {
                continue;
            }
            let used = match &t.0.grad_fn {
                Some(f) => nodes.contains_key(&f.seq),
                None => used_leaves.contains(&leaf_key(t)),
            };
            if used {
                // Reached, but every rule on the way returned no gradient: it is zero.
                *r = Some(Tensor::zeros_dtype(t.shape(), t.dtype()));
            } else if !opts.allow_unused {
                return Err(Error::invalid(
                    "grad",
                    "one of the differentiated tensors was not used to compute the output (pass allow_unused to get None for it)",
                ));
            }
        }
        return Ok(Some(results));
    }
    for (leaf, g) in leaf_grads {
        let slot = leaf.0.grad_slot.as_ref().expect("keyed by slot");
        let mut s = slot.lock().unwrap();
        let new = match s.take() {
            None => g,
            Some(old) => old.add(&g)?,
        };
        *s = Some(new);
    }
    Ok(None)
}

/// Position of each node on this graph's tape (0 = first op recorded) and the first one
/// whose output is not finite, in forward order.
fn check_forward(nodes: &HashMap<u64, Arc<Node>>, order: &[u64]) -> Result<()> {
    for (position, seq) in order.iter().rev().enumerate() {
        let node = &nodes[seq];
        if !node.output.all_finite() {
            return Err(Error::Anomaly { op: node.name, position, what: "its forward produced a non-finite value".into() });
        }
        if node.internals.iter().any(|t| !t.all_finite()) {
            return Err(Error::Anomaly {
                op: node.name,
                position,
                what: "its forward computed a non-finite value inside (before its last fused step)".into(),
            });
        }
    }
    Ok(())
}

/// Checks the forward values of the graph behind `root` (what anomaly mode does at the
/// start of a backward pass), so a training loop can name the op that produced a NaN
/// before it even looks at the loss.
pub fn check_finite_graph(root: &Tensor) -> Result<()> {
    let mut nodes: HashMap<u64, Arc<Node>> = HashMap::new();
    let mut stack: Vec<Arc<Node>> = root.0.grad_fn.iter().cloned().collect();
    while let Some(n) = stack.pop() {
        if nodes.contains_key(&n.seq) {
            continue;
        }
        stack.extend(n.inputs.iter().filter_map(|i| i.0.grad_fn.clone()));
        nodes.insert(n.seq, n);
    }
    let mut order: Vec<u64> = nodes.keys().copied().collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    check_forward(&nodes, &order)
}
