//! What the tape keeps (issue 25), counted in bytes by a counting global allocator with
//! buffer recycling off: a bound on bytes, never a timing. A chain of 50
//! `conv2d 3x3 (padding 1) -> relu` layers needs one activation per layer plus the input
//! (51) at the end of the forward; the backward frees each layer's saved tensors as its
//! rule runs, so its peak stays a few activations above that.

use convnet::alloc_count::CountingAlloc;
use convnet::bench::{chain_memory, CHAIN_SHAPE};
use std::sync::Mutex;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// The counters are global: the tests in this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn the_50_layer_chain_keeps_one_activation_per_layer_and_frees_it_during_the_backward() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(convnet::alloc_count::installed());
    for threads in [1, 2] {
        autograd::set_num_threads(threads).unwrap();
        let m = chain_memory(50, CHAIN_SHAPE, false).unwrap();
        // Issue 25's bounds (before it: about 101 and 101-135).
        assert!(m.fwd_live_acts <= 52.0, "{threads} threads: {m:?}");
        assert!(m.bwd_peak_acts <= 56.0, "{threads} threads: {m:?}");
        // Each ReLU output is kept once, however many rules read it.
        assert!(m.fwd_live_acts >= 50.0, "{threads} threads: {m:?}");
        // With the root still held, what is left is the weights' gradients (0.9 of an
        // activation) and the graph's bookkeeping: every saved tensor went.
        assert!(m.after_bwd_acts < 1.5, "{threads} threads: {m:?}");
    }
}

#[test]
fn a_retained_graph_keeps_what_it_saved() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    autograd::set_num_threads(2).unwrap();
    let m = chain_memory(50, CHAIN_SHAPE, true).unwrap();
    assert!(m.after_bwd_acts >= 51.0, "{m:?}");
    assert!(m.fwd_live_acts <= 52.0, "{m:?}");
}

#[test]
fn the_counter_sees_an_allocation_and_its_release() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Other threads (the harness's) may allocate meanwhile: a large buffer keeps the check
    // clear of their few bytes.
    let before = convnet::alloc_count::live_bytes();
    convnet::alloc_count::reset_peak();
    let v = std::hint::black_box(vec![1u8; 8 << 20]);
    assert!(convnet::alloc_count::live_bytes() >= before + (8 << 20) - (1 << 16));
    drop(v);
    assert!(convnet::alloc_count::peak_bytes() >= before + (8 << 20) - (1 << 16));
    assert!(convnet::alloc_count::live_bytes() < before + (1 << 16));
}
