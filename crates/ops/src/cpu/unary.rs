//! Element-wise loops for the activations of `activation.rs`: one value in, one value out
//! (the forward), or a gradient and a value in (the first-order backward), in fixed chunks
//! run in parallel for large tensors. Each output element depends on its inputs only, so
//! the result is the same at any thread count.

use autograd::parallel::for_each_chunk_mut;
use autograd::Element;

/// `f(x[i])` for every `i`.
pub(crate) fn map<T: Element>(x: &[T], f: impl Fn(T) -> T + Send + Sync) -> Vec<T> {
    let mut out = autograd::buffers::for_overwrite::<T>(x.len());
    for_each_chunk_mut(&mut out, |start, chunk| {
        chunk.iter_mut().zip(&x[start..]).for_each(|(o, &v)| *o = f(v));
    });
    out
}

/// `f(a[i], b[i])` for every `i` (`a` and `b` the same length).
pub(crate) fn zip<T: Element>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Send + Sync) -> Vec<T> {
    debug_assert_eq!(a.len(), b.len());
    let mut out = autograd::buffers::for_overwrite::<T>(a.len());
    for_each_chunk_mut(&mut out, |start, chunk| {
        chunk.iter_mut().zip(a[start..].iter().zip(&b[start..])).for_each(|(o, (&u, &v))| *o = f(u, v));
    });
    out
}
