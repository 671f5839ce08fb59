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

/// Caps the number of threads every parallel kernel of the library uses (at least 1).
pub fn set_num_threads(n: usize) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .thread_name(|i| format!("convnet-{i}"))
        .build()
        .expect("failed to start the thread pool");
    *POOL.write().unwrap() = Some(Arc::new(pool));
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

/// Fills `out[i] = f(i-th chunk)` chunk-wise, in parallel when large enough.
pub fn for_each_chunk_mut<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Send + Sync) {
    if out.len() < PAR_MIN_ELEMS {
        for (i, c) in out.chunks_mut(CHUNK).enumerate() {
            f(i * CHUNK, c);
        }
    } else {
        install(|| {
            out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| f(i * CHUNK, c));
        });
    }
}

/// Sum of a slice, with the same grouping at any thread count: fixed chunks summed in
/// order, then the partial sums added in chunk order.
pub fn deterministic_sum<T: crate::Element>(x: &[T]) -> T {
    let partial: Vec<T> = if x.len() < PAR_MIN_ELEMS {
        x.chunks(CHUNK).map(|c| c.iter().copied().sum()).collect()
    } else {
        install(|| x.par_chunks(CHUNK).map(|c| c.iter().copied().sum()).collect())
    };
    partial.into_iter().sum()
}
