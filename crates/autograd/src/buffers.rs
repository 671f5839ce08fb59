//! Recycled tensor buffers. A training step allocates the same large buffers every time
//! (activations, gradients, unfolded inputs); returning them to the operating system and
//! getting them back costs a page fault per 4 KiB and a full zeroing by the kernel. Freed
//! tensor storage therefore goes to a small cache keyed by length, and kernels take their
//! output buffers from it. Values never depend on the cache: buffers come back zeroed.

use crate::dtype::Element;
use std::collections::HashMap;
use std::sync::Mutex;

/// Buffers shorter than this go straight to the allocator (no page faults to save).
const MIN_LEN: usize = 1024;
/// Bytes the cache may hold: enough for a warm LeNet step at batch 256 to run entirely
/// from it (`tests/allocations.rs`), small beside the 220 MB Fashion-MNIST takes as f32.
const MAX_BYTES: usize = 128 << 20;

/// Free buffers of one element type, by length.
///
/// Whether a warm training step allocates must not depend on anything but the step
/// itself: so there is no cap on buffers of one length (a step may hold any number live
/// at once and give them all back), and when the byte budget forces an eviction the
/// victim is the length used least recently (a clock ticked by every take and return),
/// never an arbitrary one (a `HashMap`'s iteration order differs per process). Lengths a
/// run has stopped using (a last short batch, an evaluation pass) go first.
pub struct Cache<T> {
    free: HashMap<usize, Shelf<T>>,
    bytes: usize,
    /// Most bytes held at once.
    budget: usize,
    clock: u64,
}

/// The free buffers of one length and when that length was last taken or returned.
struct Shelf<T> {
    bufs: Vec<Vec<T>>,
    used: u64,
}

impl<T> Cache<T> {
    pub(crate) fn new() -> Self {
        Cache::with_budget(MAX_BYTES)
    }

    fn with_budget(budget: usize) -> Self {
        Cache { free: HashMap::new(), bytes: 0, budget, clock: 0 }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// A free buffer of `len` elements, if the cache holds one.
    fn take(&mut self, len: usize) -> Option<Vec<T>> {
        let now = self.tick();
        let shelf = self.free.get_mut(&len)?;
        shelf.used = now;
        let v = shelf.bufs.pop()?;
        self.bytes -= len * std::mem::size_of::<T>();
        Some(v)
    }

    /// Keeps `v` (its length is its capacity), evicting the least recently used other
    /// lengths while the cache would exceed its budget; drops `v` if that is not enough.
    fn put(&mut self, v: Vec<T>) {
        let len = v.len();
        let size = len * std::mem::size_of::<T>();
        while self.bytes + size > self.budget {
            let victim =
                self.free.iter().filter(|(&l, s)| l != len && !s.bufs.is_empty()).min_by_key(|(&l, s)| (s.used, l)).map(|(&l, _)| l);
            let Some(victim) = victim else { return };
            // The whole shelf goes: the length unused for longest is the least likely to be
            // wanted again.
            let freed: usize = self.free.remove(&victim).map_or(0, |s| s.bufs.iter().map(Vec::len).sum());
            self.bytes -= freed * std::mem::size_of::<T>();
        }
        let now = self.tick();
        let shelf = self.free.entry(len).or_insert_with(|| Shelf { bufs: Vec::new(), used: now });
        shelf.used = now;
        shelf.bufs.push(v);
        self.bytes += size;
    }
}

/// Where each element type keeps its cache.
pub trait Cached: Sized + 'static {
    fn cache() -> &'static Mutex<Cache<Self>>;
}

static F32_CACHE: std::sync::LazyLock<Mutex<Cache<f32>>> = std::sync::LazyLock::new(|| Mutex::new(Cache::new()));
static F64_CACHE: std::sync::LazyLock<Mutex<Cache<f64>>> = std::sync::LazyLock::new(|| Mutex::new(Cache::new()));

impl Cached for f32 {
    fn cache() -> &'static Mutex<Cache<f32>> {
        &F32_CACHE
    }
}
impl Cached for f64 {
    fn cache() -> &'static Mutex<Cache<f64>> {
        &F64_CACHE
    }
}

fn reuse<T: Element>(len: usize) -> Option<Vec<T>> {
    if len < MIN_LEN || !RECYCLE.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    T::cache().lock().unwrap().take(len)
}

/// A zero-filled buffer of `len` elements, reusing a freed one when there is one.
pub fn zeroed<T: Element>(len: usize) -> Vec<T> {
    match reuse(len) {
        Some(mut v) => {
            v.fill(T::zero());
            v
        }
        None => vec![T::zero(); len],
    }
}

/// A buffer of `len` elements for a kernel that writes every one of them before anything
/// reads it: a reused buffer keeps its old (finite, meaningless) values, which saves
/// zeroing it.
pub fn for_overwrite<T: Element>(len: usize) -> Vec<T> {
    if POISON.load(std::sync::atomic::Ordering::Relaxed) {
        return vec![T::from_f64(f64::NAN); len];
    }
    reuse(len).unwrap_or_else(|| vec![T::zero(); len])
}

/// Whether [`for_overwrite`] hands out NaN-filled buffers ([`poison_for_overwrite`]).
static POISON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on (for the whole process), [`for_overwrite`] returns buffers full of NaN
/// instead of reused or zeroed ones: a kernel that reads a value it did not write first
/// then shows it in its result. For tests; reused buffers would usually hide such a bug,
/// since they tend to hold zeros or an earlier call's identical values.
#[cfg(feature = "testing")]
pub fn poison_for_overwrite() {
    POISON.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Gives a buffer back for reuse (called when tensor storage is dropped).
pub fn recycle<T: Element>(v: Vec<T>) {
    let len = v.len();
    if len < MIN_LEN || v.capacity() != len || !RECYCLE.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let size = len * std::mem::size_of::<T>();
    if size > MAX_BYTES {
        return;
    }
    T::cache().lock().unwrap().put(v);
}

/// Whether freed buffers are kept for reuse ([`set_recycling`]).
static RECYCLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns buffer recycling on (the default) or off for the whole process. Off, freed
/// tensor storage goes straight back to the allocator and kernels allocate fresh
/// buffers, so the bytes an allocator counts as live are exactly what tensors and the
/// tape hold: the memory measurements (`examples/bench`'s `chain50_*` and
/// `resnet18_train_peak_mb`, `tests/memory.rs`) turn it off. Turning it off empties the
/// cache. Values never depend on it.
pub fn set_recycling(on: bool) {
    RECYCLE.store(on, std::sync::atomic::Ordering::Relaxed);
    if !on {
        clear();
    }
}

/// Bytes the cache holds now (at most 128 MiB per element type, f32 and f64).
pub fn cached_bytes() -> usize {
    f32::cache().lock().unwrap().bytes + f64::cache().lock().unwrap().bytes
}

/// Drops every cached buffer (memory goes back to the allocator).
pub fn clear() {
    fn clear_one<T: Element>() {
        let mut c = T::cache().lock().unwrap();
        c.free.clear();
        c.bytes = 0;
    }
    clear_one::<f32>();
    clear_one::<f64>();
}

#[cfg(test)]
mod tests {
    use super::Cache;

    fn lens(c: &Cache<f32>) -> Vec<(usize, usize)> {
        let mut v: Vec<(usize, usize)> = c.free.iter().map(|(&l, s)| (l, s.bufs.len())).filter(|&(_, n)| n > 0).collect();
        v.sort();
        v
    }

    #[test]
    fn keeps_any_number_of_one_length() {
        let mut c = Cache::<f32>::with_budget(1 << 20);
        (0..100).for_each(|_| c.put(vec![0.0; 1024]));
        assert_eq!(lens(&c), [(1024, 100)]);
        assert!((0..100).all(|_| c.take(1024).is_some()));
        assert!(c.take(1024).is_none());
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn evicts_the_least_recently_used_length() {
        // Room for four buffers of 1024 f32.
        let mut c = Cache::<f32>::with_budget(4 * 4096);
        c.put(vec![0.0; 1024]);
        c.put(vec![0.0; 1025]);
        c.put(vec![0.0; 1026]);
        // 1024 is used again (taken and returned): 1025 is now the stalest.
        let v = c.take(1024).unwrap();
        c.put(v);
        c.put(vec![0.0; 1100]);
        assert_eq!(lens(&c), [(1024, 1), (1026, 1), (1100, 1)]);
        // A buffer larger than everything else fits only once all other lengths are gone.
        c.put(vec![0.0; 4000]);
        assert_eq!(lens(&c), [(4000, 1)]);
        assert_eq!(c.bytes, 16000);
    }
}
