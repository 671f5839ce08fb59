//! The tape. Every differentiable op appends one entry (a [`Node`]): the op's name, one
//! edge per input (where its gradient goes: the input's own entry, or a leaf's gradient
//! slot, with the input's shape and dtype), the rule that turns the output's gradient
//! into the inputs' gradients, and the tensors that rule reads ([`Saves`]). Entries get
//! increasing tape positions, so walking the entries that lead to a result in decreasing
//! position is a valid reverse topological order: that is all `backward` does.
//!
//! The edges are the graph; the saved tensors are the data. An entry keeps only what its
//! rule declared (ReLU its output, a convolution its input and weight, a sum nothing), and
//! a backward pass frees them as soon as the rule has run, unless the graph is retained
//! (PyTorch's `SavedVariable`s).
//!
//! Gradient rules are written with ordinary tensor ops. Running them with recording on
//! (`create_graph`) therefore puts the backward pass itself on the tape, which is how
//! gradients of gradients work.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::{Tensor, TensorInner};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Where a leaf accumulates its gradient; shared by every version of a `Parameter`.
pub type GradSlot = Arc<Mutex<Option<Tensor>>>;

/// A gradient rule: given the context of one tape entry, one gradient per input
/// (`None` where the input needs none).
pub type Rule = dyn Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync;

static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static DETECT_ANOMALY: Cell<bool> = const { Cell::new(false) };
}

/// Turns anomaly detection on or off for this thread (PyTorch's
/// `torch.autograd.set_detect_anomaly`, per thread like grad mode). While it is on, every
/// op recorded on the tape checks its output (and what a fused op computed inside it, see
/// [`record_with_internals`]) as it is recorded, and every backward pass checks each
/// gradient as it is computed; a backward pass (or [`check_finite_graph`]) through a graph
/// then fails on the first NaN or infinity, naming the op and its position on the tape.
/// It costs a pass over every value. Turn it on before the forward pass: the forward
/// values are not kept for a later check.
pub fn set_detect_anomaly(on: bool) {
    DETECT_ANOMALY.with(|d| d.set(on));
}

pub fn is_anomaly_enabled() -> bool {
    DETECT_ANOMALY.with(|d| d.get())
}

/// What a gradient rule reads from the forward pass, declared when the op is recorded
/// ([`record_saving`]): the tape keeps these tensors, and only these, until the rule has
/// run. Everything else a rule needs about its inputs (their shapes, dtypes, whether they
/// need a gradient) comes from the graph's edges, which hold no data.
///
/// ```
/// use autograd::Saves;
/// let relu = Saves::OUTPUT; // the mask is where the output is positive
/// let mul = Saves::input(0).and_input(1); // each side's gradient is the other side
/// assert!(mul.saves_input(1) && !mul.saves_output() && !relu.saves_input(0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saves {
    /// Bit `i`: input `i` (inputs from 64 on are saved only through `all_inputs`).
    inputs: u64,
    all_inputs: bool,
    output: bool,
}

impl Saves {
    /// A rule that needs no tensor (a sum, a reshape, an addition).
    pub const NOTHING: Saves = Saves { inputs: 0, all_inputs: false, output: false };
    /// The output only (ReLU, exp, sigmoid).
    pub const OUTPUT: Saves = Saves { output: true, ..Saves::NOTHING };
    /// Every input.
    pub const INPUTS: Saves = Saves { all_inputs: true, ..Saves::NOTHING };
    /// Every input and the output: what [`record`] keeps, for rules that did not declare.
    pub const ALL: Saves = Saves { all_inputs: true, output: true, inputs: 0 };

    /// Input `i` only.
    pub const fn input(i: usize) -> Saves {
        Saves::NOTHING.and_input(i)
    }
    /// These and input `i` (past input 63: every input).
    pub const fn and_input(self, i: usize) -> Saves {
        if i < 64 {
            Saves { inputs: self.inputs | 1 << i, ..self }
        } else {
            Saves { all_inputs: true, ..self }
        }
    }
    /// These, and input `i` when `cond` holds (a rule that needs an input only for the
    /// other input's gradient saves it only when that one requires grad).
    pub const fn and_input_if(self, i: usize, cond: bool) -> Saves {
        if cond {
            self.and_input(i)
        } else {
            self
        }
    }
    /// These and the output.
    pub const fn and_output(self) -> Saves {
        Saves { output: true, ..self }
    }
    pub const fn saves_input(self, i: usize) -> bool {
        self.all_inputs || (i < 64 && self.inputs & (1 << i) != 0)
    }
    pub const fn saves_output(self) -> bool {
        self.output
    }
    /// Where input `i` sits among the saved inputs, if it is saved.
    fn slot_of(self, i: usize) -> Option<usize> {
        if self.all_inputs {
            Some(i)
        } else if self.saves_input(i) {
            Some((self.inputs & ((1u64 << i) - 1)).count_ones() as usize)
        } else {
            None
        }
    }
}

/// Where one input's gradient goes, and what it must look like. No data: an edge keeps
/// the graph (the input's tape entry, or a leaf's gradient slot), never the input's buffer.
#[derive(Clone)]
pub(crate) struct Edge {
    /// The entry of the op that produced the input; `None` for a leaf or a constant.
    node: Option<Arc<Node>>,
    /// A leaf's gradient slot; `None` for a constant or an op's result.
    slot: Option<GradSlot>,
    shape: Shape,
    dtype: DType,
}

impl Edge {
    fn to(t: &Tensor) -> Edge {
        Edge { node: t.0.grad_fn.clone(), slot: t.0.grad_slot.clone(), shape: t.0.layout.shape.clone(), dtype: t.dtype() }
    }
    fn requires_grad(&self) -> bool {
        self.node.is_some() || self.slot.is_some()
    }
}

/// What a rule reads at backward time, taken out of the entry (and so freed) once it has
/// run, unless the graph is retained. The rule is here too: a closure may hold tensors of
/// its own (a fused op's activation before pooling, an index).
struct Saved {
    rule: Box<Rule>,
    /// The declared inputs in input order, as they were (with their own graph edges, so a
    /// rule run under `create_graph` is differentiable in them).
    inputs: Vec<Tensor>,
    /// The output without its graph edge (a saved output must not point to its own entry).
    output: Option<Tensor>,
}

/// One tape entry.
pub struct Node {
    /// Position on the tape; later ops have larger positions.
    pub(crate) seq: u64,
    pub(crate) name: &'static str,
    /// One per input, in order.
    edges: Vec<Edge>,
    saves: Saves,
    /// The rule and its saved tensors; `None` once a backward pass consumed them.
    saved: Mutex<Option<Arc<Saved>>>,
    /// Whether the rule is itself differentiable (its ops are all on the tape).
    second_order: bool,
    /// What anomaly mode found when the op was recorded (a non-finite output, or a
    /// non-finite value a fused op computed inside).
    anomaly: Option<&'static str>,
}

/// What a gradient rule sees.
pub struct BackwardCtx<'a> {
    node: &'a Node,
    saved: &'a Arc<Saved>,
    /// Under `create_graph`: the saved output as the result of a twin entry, made when the
    /// rule first asks for it.
    recorded_output: OnceLock<Tensor>,
    grad_output: &'a Tensor,
    create_graph: bool,
}

impl<'a> BackwardCtx<'a> {
    /// Gradient of the loss with respect to this op's output.
    pub fn grad_output(&self) -> &Tensor {
        self.grad_output
    }
    /// The i-th input of the op, as it was in the forward pass.
    ///
    /// # Panics
    /// If the op did not save input `i` ([`Saves`]): a bug in the op's declaration, which
    /// its first backward shows. Ops recorded with [`record`] save every input.
    pub fn input(&self, i: usize) -> &Tensor {
        match self.node.saves.slot_of(i).and_then(|k| self.saved.inputs.get(k)) {
            Some(t) => t,
            None => panic!("{}: the gradient rule reads input {i}, which the op did not save (declare it in its Saves)", self.node.name),
        }
    }
    /// Every input of the op, as it was in the forward pass.
    ///
    /// # Panics
    /// If the op did not save them all ([`Saves`]); ops recorded with [`record`] do.
    pub fn inputs(&self) -> &[Tensor] {
        if self.saved.inputs.len() != self.node.edges.len() {
            panic!("{}: the gradient rule reads every input, but the op saved only some (declare them in its Saves)", self.node.name);
        }
        &self.saved.inputs
    }
    /// How many inputs the op has (saved or not).
    pub fn num_inputs(&self) -> usize {
        self.node.edges.len()
    }
    /// The shape of input `i` (known whether or not the input was saved).
    pub fn input_shape(&self, i: usize) -> &[usize] {
        &self.node.edges[i].shape
    }
    /// The dtype of input `i` (known whether or not the input was saved).
    pub fn input_dtype(&self, i: usize) -> DType {
        self.node.edges[i].dtype
    }
    /// The op's output. Detached in a first-order backward. Under `create_graph` it is on
    /// the tape as the result of a twin of this entry (same op, edges, rule and saved
    /// tensors, a new tape position): what recomputing the op from its saved inputs would
    /// record, without recomputing it or saving the inputs, so a rule written with its
    /// output (`exp`'s `g * y`) is differentiable again, bit for bit as a recomputation.
    ///
    /// # Panics
    /// If the op did not save its output ([`Saves::and_output`]); ops recorded with
    /// [`record`] do.
    pub fn output(&self) -> &Tensor {
        let Some(y) = self.saved.output.as_ref() else {
            panic!("{}: the gradient rule reads the output, which the op did not save (declare it in its Saves)", self.node.name)
        };
        if !self.create_graph {
            return y;
        }
        self.recorded_output.get_or_init(|| {
            let twin = Node {
                seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
                name: self.node.name,
                edges: self.node.edges.clone(),
                saves: self.node.saves,
                saved: Mutex::new(Some(self.saved.clone())),
                second_order: self.node.second_order,
                anomaly: None,
            };
            Tensor(Arc::new(TensorInner {
                storage: y.0.storage.clone(),
                layout: y.0.layout.clone(),
                grad_fn: Some(Arc::new(twin)),
                grad_slot: None,
            }))
        })
    }
    /// Whether input `i` needs a gradient; rules skip the work for the others.
    pub fn needs_grad(&self, i: usize) -> bool {
        self.node.edges[i].requires_grad()
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
/// off or no input requires grad, returns `output` unchanged. This is how any custom op of
/// a user's joins the tape. The entry keeps every input and the output for the rule
/// ([`Saves::ALL`]); [`record_saving`] keeps only what the rule declares.
pub fn record(
    name: &'static str,
    output: Tensor,
    inputs: &[&Tensor],
    rule: impl Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Tensor {
    record_impl(name, output, inputs, Saves::ALL, Box::new(rule), true, &[])
}

/// [`record`] keeping only the tensors `saves` names for the rule (every op in the
/// library joins the tape this way): the rule may read those inputs (`ctx.input(i)`) and,
/// if declared, the output (`ctx.output()`); the inputs' shapes and dtypes are always known.
pub fn record_saving(
    name: &'static str,
    output: Tensor,
    inputs: &[&Tensor],
    saves: Saves,
    rule: impl Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Tensor {
    record_impl(name, output, inputs, saves, Box::new(rule), true, &[])
}

/// Like [`record`], for a fused op that computes values inside it that its output may not
/// show (a convolution's activation before max pooling drops a `-inf`, an odd last row, or
/// anything a later step maps to a finite value): anomaly mode checks `internals` as it
/// checks the output, when the op is recorded, so a NaN or infinity there is reported at
/// this op. The tape does not keep them.
pub fn record_with_internals(
    name: &'static str,
    output: Tensor,
    inputs: &[&Tensor],
    internals: &[&Tensor],
    rule: impl Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Tensor {
    record_impl(name, output, inputs, Saves::ALL, Box::new(rule), true, internals)
}

/// [`record_with_internals`] keeping only what `saves` names ([`record_saving`]).
pub fn record_saving_with_internals(
    name: &'static str,
    output: Tensor,
    inputs: &[&Tensor],
    internals: &[&Tensor],
    saves: Saves,
    rule: impl Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Tensor {
    record_impl(name, output, inputs, saves, Box::new(rule), true, internals)
}

/// Like [`record`], for a rule that is not itself differentiable (a hand-written kernel).
/// Double backward through such an op is an error naming it, never a silent zero.
pub fn record_first_order(
    name: &'static str,
    output: Tensor,
    inputs: &[&Tensor],
    rule: impl Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Tensor {
    record_impl(name, output, inputs, Saves::ALL, Box::new(rule), false, &[])
}

/// [`record_first_order`] keeping only what `saves` names ([`record_saving`]).
pub fn record_first_order_saving(
    name: &'static str,
    output: Tensor,
    inputs: &[&Tensor],
    saves: Saves,
    rule: impl Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Tensor {
    record_impl(name, output, inputs, saves, Box::new(rule), false, &[])
}

fn record_impl(
    name: &'static str,
    output: Tensor,
    inputs: &[&Tensor],
    saves: Saves,
    rule: Box<Rule>,
    second_order: bool,
    internals: &[&Tensor],
) -> Tensor {
    // An i64 or bool result (an index, a mask, a comparison) has no gradient.
    if !is_grad_enabled() || !output.dtype().is_float() || !inputs.iter().any(|t| t.requires_grad()) {
        return output;
    }
    let anomaly = anomaly_at_record(&output, internals);
    let saved_inputs = inputs.iter().enumerate().filter(|&(i, _)| saves.saves_input(i)).map(|(_, t)| (*t).clone()).collect();
    push(name, output, inputs.iter().map(|t| Edge::to(t)).collect(), saves, saved_inputs, rule, second_order, anomaly)
}

/// In anomaly mode, what is wrong with an op's output (or with what a fused op computed
/// inside it) as it is recorded; the node keeps only this verdict.
fn anomaly_at_record(output: &Tensor, internals: &[&Tensor]) -> Option<&'static str> {
    if !is_anomaly_enabled() {
        None
    } else if !output.all_finite() {
        Some("its forward produced a non-finite value")
    } else if internals.iter().any(|t| !t.all_finite()) {
        Some("its forward computed a non-finite value inside (before its last fused step)")
    } else {
        None
    }
}

/// Appends an entry and returns `output` as its result.
#[allow(clippy::too_many_arguments)]
fn push(
    name: &'static str,
    output: Tensor,
    edges: Vec<Edge>,
    saves: Saves,
    inputs: Vec<Tensor>,
    rule: Box<Rule>,
    second_order: bool,
    anomaly: Option<&'static str>,
) -> Tensor {
    let saved = Saved { rule, inputs, output: saves.saves_output().then(|| output.detach()) };
    let node = Node {
        seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
        name,
        edges,
        saves,
        saved: Mutex::new(Some(Arc::new(saved))),
        second_order,
        anomaly,
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
/// a parameter shares.
fn slot_key(slot: &GradSlot) -> usize {
    Arc::as_ptr(slot) as usize
}

/// [`slot_key`] of a leaf tensor (0 for one without a slot, which needs no gradient).
fn leaf_key(leaf: &Tensor) -> usize {
    leaf.0.grad_slot.as_ref().map(slot_key).unwrap_or(0)
}

/// Sums two gradient contributions (recorded when building a graph).
fn accumulate(acc: Option<Tensor>, g: Tensor) -> Result<Tensor> {
    match acc {
        None => Ok(g),
        Some(a) => a.add(&g),
    }
}

/// The entries that lead to `root` by tape position, and the gradient slots of the
/// leaves they reach.
fn collect(root: &Tensor) -> (HashMap<u64, Arc<Node>>, HashSet<usize>) {
    let mut nodes: HashMap<u64, Arc<Node>> = HashMap::new();
    let mut leaves: HashSet<usize> = HashSet::new();
    let mut stack: Vec<Arc<Node>> = root.0.grad_fn.iter().cloned().collect();
    while let Some(n) = stack.pop() {
        if nodes.contains_key(&n.seq) {
            continue;
        }
        for e in &n.edges {
            match (&e.node, &e.slot) {
                (Some(f), _) if !nodes.contains_key(&f.seq) => stack.push(f.clone()),
                (None, Some(s)) => {
                    leaves.insert(slot_key(s));
                }
                _ => {}
            }
        }
        nodes.insert(n.seq, n);
    }
    if root.0.grad_fn.is_none() {
        leaves.insert(leaf_key(root));
    }
    (nodes, leaves)
}

/// Tape positions from the last op to the first (a reverse topological order).
fn reverse_order(nodes: &HashMap<u64, Arc<Node>>) -> Vec<u64> {
    let mut order: Vec<u64> = nodes.keys().copied().collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    order
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

    let (nodes, used_leaves) = collect(root);
    let order = reverse_order(&nodes);
    let anomaly = is_anomaly_enabled();
    if anomaly {
        first_anomaly(&nodes, &order)?;
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
    let mut leaf_grads: Vec<(GradSlot, Tensor)> = Vec::new();
    let mut leaf_index: HashMap<usize, usize> = HashMap::new();
    let mut deliver_leaf = |slot: &GradSlot, g: Tensor, results: &mut Vec<Option<Tensor>>| -> Result<()> {
        let key = slot_key(slot);
        if targets.is_some() {
            if let Some(ix) = target_of_leaf.get(&key) {
                for &i in ix {
                    results[i] = Some(accumulate(results[i].take(), g.clone())?);
                }
            }
            return Ok(());
        }
        match leaf_index.get(&key) {
            Some(&i) => {
                let prev = leaf_grads[i].1.clone();
                leaf_grads[i].1 = prev.add(&g)?;
            }
            None => {
                leaf_index.insert(key, leaf_grads.len());
                leaf_grads.push((slot.clone(), g));
            }
        }
        Ok(())
    };

    let mut pending: HashMap<u64, Tensor> = HashMap::new();
    match (&root.0.grad_fn, &root.0.grad_slot) {
        (Some(f), _) => {
            pending.insert(f.seq, seed);
        }
        (None, Some(s)) => deliver_leaf(s, seed, &mut results)?,
        (None, None) => {}
    }

    for &seq in &order {
        let Some(g) = pending.remove(&seq) else { continue };
        let node = &nodes[&seq];
        if let Some(ix) = target_of_node.get(&seq) {
            for &i in ix {
                results[i] = Some(accumulate(results[i].take(), g.clone())?);
            }
        }
        // The rule and what it saved: taken out of the entry unless the graph is retained,
        // so they are freed as soon as the rule has run.
        let saved = {
            let mut slot = node.saved.lock().unwrap();
            let s = if retain { slot.clone() } else { slot.take() };
            s.ok_or(Error::GraphConsumed { op: node.name, seq })?
        };
        let grads = {
            let ctx = BackwardCtx { node, saved: &saved, recorded_output: OnceLock::new(), grad_output: &g, create_graph };
            if create_graph && !node.second_order {
                let grads = no_grad(|| (saved.rule)(&ctx))?;
                // Mark each result as depending on the op, so that differentiating it
                // again fails loudly instead of treating the rule as a constant.
                let mut deps = node.edges.clone();
                deps.push(Edge::to(&g));
                let name = node.name;
                grads
                    .into_iter()
                    .map(|og| {
                        og.map(|t| {
                            let rule: Box<Rule> = Box::new(move |_| Err(Error::NoSecondOrder { op: name }));
                            let anomaly = anomaly_at_record(&t, &[]);
                            push(name, t, deps.clone(), Saves::NOTHING, Vec::new(), rule, true, anomaly)
                        })
                    })
                    .collect()
            } else {
                (saved.rule)(&ctx)?
            }
        };
        drop(saved);
        if grads.len() != node.edges.len() {
            return Err(Error::BadGradient {
                op: node.name,
                msg: format!("rule returned {} gradients for {} inputs", grads.len(), node.edges.len()),
            });
        }
        for (i, (edge, og)) in node.edges.iter().zip(grads).enumerate() {
            let Some(gi) = og else { continue };
            if !edge.requires_grad() {
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
            if gi.shape() != edge.shape.as_slice() || gi.dtype() != edge.dtype {
                return Err(Error::BadGradient {
                    op: node.name,
                    msg: format!(
                        "gradient {} {} for input {} {}",
                        crate::error::fmt_shape(gi.shape()),
                        gi.dtype(),
                        crate::error::fmt_shape(&edge.shape),
                        edge.dtype
                    ),
                });
            }
            match (&edge.node, &edge.slot) {
                (Some(f), _) => {
                    let acc = pending.remove(&f.seq);
                    pending.insert(f.seq, accumulate(acc, gi)?);
                }
                (None, Some(s)) => deliver_leaf(s, gi, &mut results)?,
                (None, None) => {}
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
    for (slot, g) in leaf_grads {
        let mut s = slot.lock().unwrap();
        let new = match s.take() {
            None => g,
            Some(old) => old.add(&g)?,
        };
        *s = Some(new);
    }
    Ok(None)
}

/// The first entry, in forward order, that anomaly mode flagged when it was recorded,
/// with its position on this graph's tape (0 = the first op recorded).
fn first_anomaly(nodes: &HashMap<u64, Arc<Node>>, order: &[u64]) -> Result<()> {
    for (position, seq) in order.iter().rev().enumerate() {
        let node = &nodes[seq];
        if let Some(what) = node.anomaly {
            return Err(Error::Anomaly { op: node.name, position, what: what.into() });
        }
    }
    Ok(())
}

/// Reports the first op of the graph behind `root` whose forward produced a NaN or an
/// infinity (what anomaly mode does at the start of a backward pass), so a training loop
/// can name that op before it even looks at the loss. The check itself ran when each op
/// was recorded, in anomaly mode ([`set_detect_anomaly`]); this walks the graph's edges
/// and reads no values, so an op recorded with anomaly mode off is never reported.
pub fn check_finite_graph(root: &Tensor) -> Result<()> {
    let (nodes, _) = collect(root);
    first_anomaly(&nodes, &reverse_order(&nodes))
}
