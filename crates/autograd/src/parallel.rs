//! The library's thread pool. Every parallel kernel runs inside it, so `set_num_threads`
//! caps all of them. Work is always cut into pieces whose boundaries depend on the data
//! size only, never on the thread count, and partial results are combined in piece order:
//! results are bitwise identical at any number of threads.

use rayon::prelude::*;
use std::sync::{Arc, RwLock};

static POOL: RwLock<Option<Arc<rayon::ThreadPool>>> = RwLock::new(None);

/// Below this many elements an element-wise op runs on the calling thread.
pub const PAR_MIN_ELEMS: usize = 1 << 15;
/// Fixed piece size for element-wise work and reductions.
pub const CHUNK: usize = 1 << 13;

/// The most threads [`set_num_threads`] accepts: far above any core count, low enough that
/// a typo (`2^64`) does not spawn threads until the system gives out.
pub const MAX_THREADS: usize = 1024;

/// Sets the number of threads every parallel kernel of the library uses, `1..=MAX_THREADS`.
/// An error, and the pool unchanged, for other counts or if the threads cannot be started.
pub fn set_num_threads(n: usize) -> crate::Result<()> {
    if !(1..=MAX_THREADS).contains(&n) {
        return Err(crate::Error::invalid("set_num_threads", format!("expects 1 to {MAX_THREADS} threads, got {n}")));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("convnet-{i}"))
        .build()
        .map_err(|e| crate::Error::invalid("set_num_threads", format!("cannot start {n} threads: {e}")))?;
    *POOL.write().unwrap() = Some(Arc::new(pool));
    Ok(())
}

fn pool() -> Arc<rayon::ThreadPool> {
    if let Some(p) = POOL.read().unwrap().as_ref() {
        return p.clone();
    }
    let mut w = POOL.write().unwrap();
    w.get_or_insert_with(|| {
        Arc::new(rayon::ThreadPoolBuilder::new().thread_name(|i| format!("convnet-{i}")).build().expect("failed to start the thread pool"))
    })
    .clone()
}

/// Threads the library's kernels use.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Runs `f` inside the library's pool (rayon calls inside it use the pool's threads).
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}

/// Whether a parallel section of `len` elements should run its pieces in order on the
/// calling thread: when it is small, or when the pool has one thread. Entering the pool
/// from outside hands the work to a pool thread and waits for it (futex wake-ups and
/// context switches, about 13% of BN-LeNet's step at one thread), which at one thread buys
/// nothing. The pieces are the same either way, so the results are too.
pub fn run_here(len: usize) -> bool {
    len < PAR_MIN_ELEMS || num_threads() == 1
}

/// `(0..n).map(f).collect()`: in the pool, or in order on the calling thread when the pool
/// has one thread (see [`run_here`]). Each item depends on its index alone.
pub fn map_collect<R: Send>(n: usize, f: impl Fn(usize) -> R + Send + Sync) -> Vec<R> {
    if num_threads() == 1 {
        (0..n).map(f).collect()
    } else {
        install(|| (0..n).into_par_iter().map(f).collect())
    }
}

/// Fills `out[i] = f(i-th chunk)` chunk-wise, in parallel when large enough.
pub fn for_each_chunk_mut<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Send + Sync) {
    if run_here(out.len()) {
        for (i, c) in out.chunks_mut(CHUNK).enumerate() {
            f(i * CHUNK, c);
        }
    } else {
        install(|| {
            out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| f(i * CHUNK, c));
        });
    }
}

/// Fills `out` one row of `row` values at a time, `f(i, row i)`, in parallel when large
/// enough (each row on its own, so the result is the same at any thread count).
pub fn for_each_row_mut<T: Send>(out: &mut [T], row: usize, f: impl Fn(usize, &mut [T]) + Send + Sync) {
    if row == 0 {
        return;
    }
    if run_here(out.len()) {
        out.chunks_mut(row).enumerate().for_each(|(i, r)| f(i, r));
    } else {
        install(|| out.par_chunks_mut(row).enumerate().for_each(|(i, r)| f(i, r)));
    }
}

/// Sum of a slice, with the same grouping at any thread count: fixed chunks summed in
/// order, then the partial sums added in chunk order.
pub fn deterministic_sum<T: crate::Element>(x: &[T]) -> T {
    if x.len() <= CHUNK {
        return chunk_sum(x);
    }
    let partial: Vec<T> =
        if run_here(x.len()) { x.chunks(CHUNK).map(chunk_sum).collect() } else { install(|| x.par_chunks(CHUNK).map(chunk_sum).collect()) };
    partial.into_iter().sum()
}

/// Sum of one chunk in eight interleaved running sums (independent, so the compiler keeps
/// them in one vector register), combined pairwise: a fixed order, and no chain of
/// dependent additions.
fn chunk_sum<T: crate::Element>(c: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let mut it = c.chunks_exact(8);
    for v in &mut it {
        for (l, &x) in lanes.iter_mut().zip(v) {
            *l += x;
        }
    }
    let l = lanes;
    let mut s = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    for &x in it.remainder() {
        s += x;
    }
    s
}
