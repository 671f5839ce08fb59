//! No new tensor buffers per training step once warm: a counting global allocator sees
//! every allocation over 4 KiB, on every thread, during warm LeNet training steps.
//! (Small allocations, the tape's own bookkeeping, are allowed.)

use autograd::{rng, Tensor};
use nn::{lenet, xavier_init, Act, Module, Optimizer, Pool, Sgd};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Allocations at least this large count as buffers.
const LARGE: usize = 4 << 10;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LARGE_ALLOCS: AtomicUsize = AtomicUsize::new(0);
static LARGE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            note(new_size);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// When set, only allocations of threads that marked themselves (`MARKED`) count: a test
/// that checks the counter itself must not see what the test harness's own threads
/// allocate meanwhile (which depends on the schedule).
static MARKED_ONLY: AtomicBool = AtomicBool::new(false);

thread_local! {
    static MARKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn note(size: usize) {
    if MARKED_ONLY.load(Ordering::Relaxed) && !MARKED.with(|m| m.get()) {
        return;
    }
    if size > LARGE && COUNTING.load(Ordering::Relaxed) {
        LARGE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        LARGE_BYTES.fetch_add(size, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The counter is global: tests in this file take turns, each for its whole body.
static SERIAL: Mutex<()> = Mutex::new(());

/// Allocations over 4 KiB (count, bytes) made by `steps` LeNet training steps after
/// `warm` untimed ones, on a batch of 256 as in `examples/lenet`.
fn large_allocations(pool: Pool, act: Act, threads: usize, warm: usize, steps: usize) -> (usize, usize) {
    autograd::set_num_threads(threads).unwrap();
    let mut r = rng(3);
    let net = lenet(pool, act, &mut r).unwrap();
    xavier_init(&net, &mut r).unwrap();
    let mut opt = Sgd::new(net.named_parameters(), 0.1).unwrap();
    let x = Tensor::rand(&[256, 1, 28, 28], &mut r);
    let y: Vec<usize> = (0..256).map(|i| (i * 7 + 3) % 10).collect();
    let mut losses = Vec::new();
    let mut step = || {
        let loss = ops::cross_entropy(&net.forward(&x).unwrap(), &y).unwrap();
        opt.zero_grad();
        loss.backward().unwrap();
        losses.push(loss.item().unwrap());
        drop(loss);
        opt.step().unwrap();
    };
    (0..warm).for_each(|_| step());
    LARGE_ALLOCS.store(0, Ordering::SeqCst);
    LARGE_BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    (0..steps).for_each(|_| step());
    COUNTING.store(false, Ordering::SeqCst);
    assert!(losses[losses.len() - 1] < losses[0], "training must make progress: {losses:?}");
    (LARGE_ALLOCS.load(Ordering::SeqCst), LARGE_BYTES.load(Ordering::SeqCst))
}

#[test]
fn the_counter_sees_a_tensor_buffer() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    MARKED.with(|m| m.set(true));
    MARKED_ONLY.store(true, Ordering::SeqCst);
    LARGE_ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let v = std::hint::black_box(vec![0u8; 5000]);
    COUNTING.store(false, Ordering::SeqCst);
    MARKED_ONLY.store(false, Ordering::SeqCst);
    drop(v);
    assert_eq!(LARGE_ALLOCS.load(Ordering::SeqCst), 1);
}

#[test]
fn warm_training_steps_allocate_no_buffers() {
    // Held for the whole test, so nothing of it runs while the other test counts.
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (pool, act) in [(Pool::Avg, Act::Sigmoid), (Pool::Max, Act::Relu)] {
        for threads in [1, 2] {
            let (count, bytes) = large_allocations(pool, act, threads, 4, 3);
            assert_eq!(count, 0, "{pool:?}/{act:?} at {threads} threads: {count} allocations over 4 KiB ({bytes} bytes) in 3 warm steps");
        }
    }
}
