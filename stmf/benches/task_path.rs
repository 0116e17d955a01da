//! Task path through the ABI: a null port (in this process) submits commands to a null LU
//! loaded as a shared library (`tests/fixtures/null-lu`), one thread, and the core routes
//! each one: task_alloc → post_task → LU new_task → send_status → port send_status →
//! send_status_done → task freed. Reports tasks per second.
//!
//! Run: `cargo build --release -p null-lu && cargo bench -p stmf --bench task_path`

#[path = "../tests/common/null_port.rs"]
mod null_port;

use null_port::{NullSetup, DONE};
use std::sync::atomic::Ordering::Relaxed;

fn main() {
    divan::main();
}

/// One TEST UNIT READY through port → core → LU (dylib) → core → port.
#[divan::bench(min_time = 2)]
fn null_task(bencher: divan::Bencher) {
    let b = NullSetup::new();
    for i in 0..10_000 {
        b.task(i);
    }
    let mut tag = 0u64;
    bencher
        .counter(divan::counter::ItemsCount::new(1usize))
        .bench_local(|| {
            tag += 1;
            b.task(tag);
        });
    assert!(DONE.load(Relaxed) > 10_000, "tasks did not complete");
    assert!(
        b.stmf.list_lu()[0].stats.other_cmds > 10_000,
        "the LU counted the commands"
    );
}
