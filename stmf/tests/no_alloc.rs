//! The per-command path allocates nothing in steady state: after the session's task pool is
//! warm, 100 000 commands through port → core → LU (a dylib) → port make no heap allocation.
//! Only the thread that runs the commands is counted (the whole path runs on it; the core's
//! service thread and the test harness may allocate on their own).

mod common;

use common::null_port::{NullSetup, DONE};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::Ordering::Relaxed;

struct Counting;

thread_local! {
    /// Allocations made by this thread (const-initialised: reading it never allocates).
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    ALLOCS.with(|c| c.set(c.get() + 1));
}

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_task_path_does_not_allocate() {
    let b = NullSetup::new();
    assert!(
        allocs() > 0,
        "the counter sees this thread's allocations (setup allocates)"
    );
    for i in 0..1_000 {
        b.task(i);
    }
    let before_done = DONE.load(Relaxed);
    let before = allocs();
    for i in 0..100_000 {
        b.task(1_000 + i);
    }
    let allocs = allocs() - before;
    assert_eq!(
        DONE.load(Relaxed) - before_done,
        100_000,
        "every command completed"
    );
    assert_eq!(allocs, 0, "{allocs} heap allocations on 100000 commands");
    assert_eq!(b.stmf.list_lu()[0].stats.other_cmds, 101_000);
}
