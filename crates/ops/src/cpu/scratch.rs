//! Per-task scratch buffers for the convolution kernels, reserved before the tasks run.
//!
//! A training step must allocate nothing once warm, whatever the schedule: which pool
//! thread runs which task, and how many tasks run at once, changes from step to step on a
//! loaded machine. So no task takes a buffer from the cache. [`par_tasks`] takes one
//! scratch set per pool thread from the buffer cache on the calling thread, every field at
//! the largest length the op's tasks ask for ([`Lens`]); tasks borrow a free set and give
//! it back, and [`ensure_len`] only moves a field's length within what was reserved. The
//! cache then sees the same takes and returns in the same order every step, and a warm
//! step runs from it entirely (`tests/allocations.rs`).

use autograd::parallel::{install, num_threads};
use autograd::Element;
use rayon::prelude::*;
use std::sync::Mutex;

/// One task's scratch. What each field holds depends on the kernel; between tasks (and
/// after [`ensure_len`]) the contents are meaningless.
#[derive(Default)]
pub(super) struct Scratch<T: Element> {
    /// An unfolded block, or weight-gradient tiles.
    pub cols: Vec<T>,
    /// A product's output block, or a block's wide output gradients.
    pub mat: Vec<T>,
    /// Zero-padded planes of one sample (or of a block of samples).
    pub pad: Vec<T>,
    /// One row (or plane) of values.
    pub row: Vec<T>,
    /// Padded planes of one sample: input gradients, or inputs on their way to column
    /// phases.
    pub planes: Vec<T>,
    /// One sample block's output gradient with the channels minor.
    pub trans: Vec<T>,
}

/// The largest length each [`Scratch`] field reaches in one op (0: unused).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Lens {
    pub cols: usize,
    pub mat: usize,
    pub pad: usize,
    pub row: usize,
    pub planes: usize,
    pub trans: usize,
}

impl<T: Element> Scratch<T> {
    /// A set with every field at its reserved length, from the buffer cache.
    fn reserved(lens: &Lens) -> Self {
        let take = |len: usize| if len == 0 { Vec::new() } else { autograd::buffers::for_overwrite(len) };
        Scratch {
            cols: take(lens.cols),
            mat: take(lens.mat),
            pad: take(lens.pad),
            row: take(lens.row),
            planes: take(lens.planes),
            trans: take(lens.trans),
        }
    }
}

impl<T: Element> Drop for Scratch<T> {
    fn drop(&mut self) {
        for v in [&mut self.cols, &mut self.mat, &mut self.pad, &mut self.row, &mut self.planes, &mut self.trans] {
            // Back to its full length, the key the cache files it under.
            v.resize(v.capacity(), T::zero());
            autograd::buffers::recycle(std::mem::take(v));
        }
    }
}

/// Makes `v` exactly `len` long (contents meaningless: callers overwrite or fill). Within
/// the capacity [`par_tasks`] reserved this never allocates; past it (a reservation too
/// small, a bug the allocation test catches) it swaps buffers through the cache.
pub(super) fn ensure_len<T: Element>(v: &mut Vec<T>, len: usize) {
    if len <= v.capacity() {
        v.resize(len, T::zero());
    } else {
        autograd::buffers::recycle(std::mem::take(v));
        *v = autograd::buffers::for_overwrite(len);
    }
}

/// A set borrowed from the op's free list for as long as one worker runs tasks with it.
struct Lent<'a, T: Element> {
    set: Scratch<T>,
    home: &'a Mutex<Vec<Scratch<T>>>,
}

impl<'a, T: Element> Lent<'a, T> {
    fn new(home: &'a Mutex<Vec<Scratch<T>>>) -> Self {
        // More borrowers than sets only under nested parallelism; such a borrower starts
        // empty and grows through the cache, which is correct, merely not allocation-free.
        let set = home.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        Lent { set, home }
    }
}

impl<T: Element> Drop for Lent<'_, T> {
    fn drop(&mut self) {
        let set = std::mem::take(&mut self.set);
        self.home.lock().unwrap_or_else(|e| e.into_inner()).push(set);
    }
}

/// Runs `f(task, scratch)` for `tasks` tasks in the library's pool, each with a scratch
/// set whose fields hold `lens` (see the module doc). The sets go back to the cache here,
/// on the calling thread, once every task has run.
pub(super) fn par_tasks<T: Element>(tasks: usize, lens: Lens, f: impl Fn(usize, &mut Scratch<T>) + Sync + Send) {
    let sets = num_threads().min(tasks);
    let free = Mutex::new((0..sets).map(|_| Scratch::reserved(&lens)).collect::<Vec<_>>());
    install(|| (0..tasks).into_par_iter().for_each_init(|| Lent::new(&free), |lent, t| f(t, &mut lent.set)));
}
