//! A counting global allocator: the bytes live now and the most live at once since the
//! last [`reset_peak`], over every thread. Memory measurements read it instead of the
//! process's resident size, which depends on the system allocator, the kernel and what
//! else the process did; these counts depend only on what the program allocates.
//!
//! A binary installs it with
//! `#[global_allocator] static ALLOC: convnet::alloc_count::CountingAlloc = convnet::alloc_count::CountingAlloc;`
//! (`examples/bench.rs` and `tests/memory.rs` do). It lives in the root crate, beside the
//! bench lines that read it, rather than in `autograd`: the tape has no use for it, and a
//! global allocator is a choice for a binary to make.
//!
//! Freed tensor buffers normally go to the recycled-buffer cache
//! (`autograd::buffers`), which the allocator still sees as live: measurements turn
//! recycling off first ([`autograd::buffers::set_recycling`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting what it hands out.
pub struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees (alignment, size, null on failure) are ours; the counters are
// atomics and never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract (non-zero size), which
        // is `System.alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, hence from `System`, with this layout.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`, and the caller guarantees
        // `new_size` is valid for it.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // The old block is freed and a new one of `new_size` is live.
            grew(new_size);
            shrank(layout.size());
        }
        p
    }
}

/// Bytes allocated through [`CountingAlloc`] and not yet freed (0 if it is not installed).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most bytes live at once since the last [`reset_peak`] (or the start).
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new peak from what is live now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Whether this process's global allocator is [`CountingAlloc`]: only it moves the
/// counter, so an allocation of our own that leaves it unchanged means it is not.
pub fn installed() -> bool {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    drop(std::hint::black_box(Box::new([0u8; 64])));
    ALLOCATIONS.load(Ordering::Relaxed) != before
}
