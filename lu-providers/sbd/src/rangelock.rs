//! Atomicity of COMPARE AND WRITE against other writes to its range.
//!
//! COMPARE AND WRITE reads, compares and writes; no other write may land on its blocks in
//! between, and it must not read a half-done write. Plain writes are the hot path and
//! COMPARE AND WRITE is rare, so writes pay two atomic operations and take a lock only
//! while a COMPARE AND WRITE is active (a Dekker-style handshake on two counters, both
//! sequentially consistent):
//!
//! * a writer increments `writers`, then reads `exclusive`: if no COMPARE AND WRITE is
//!   active it writes lock-free and decrements `writers`; otherwise it backs out and takes
//!   the range table in shared mode, waiting for overlapping exclusive holders;
//! * a COMPARE AND WRITE increments `exclusive` (from then on new writers take the slow
//!   path), takes its range exclusively in the table, then waits for the lock-free writers
//!   already under way to finish (each is at most one pwrite).
//!
//! Either the writer sees `exclusive > 0` or the COMPARE AND WRITE sees `writers > 0`, so
//! they never overlap unseen.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Shared,
    Exclusive,
}

struct Held {
    range: Range<u64>,
    mode: Mode,
    id: u64,
}

#[derive(Default)]
struct Table {
    held: Vec<Held>,
    next_id: u64,
}

/// Byte-range exclusion for one LU.
#[derive(Default)]
pub(crate) struct RangeLock {
    writers: AtomicUsize,
    exclusive: AtomicUsize,
    table: Mutex<Table>,
    changed: Condvar,
}

/// Held while a write is in progress; released on drop.
pub(crate) struct WriteGuard<'a> {
    lock: &'a RangeLock,
    slow_id: Option<u64>,
}

/// Held while a COMPARE AND WRITE runs; released on drop.
pub(crate) struct ExclusiveGuard<'a> {
    lock: &'a RangeLock,
    id: u64,
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

impl RangeLock {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters a write of `range` (may wait behind a COMPARE AND WRITE on the same blocks).
    pub(crate) fn write(&self, range: Range<u64>) -> WriteGuard<'_> {
        self.writers.fetch_add(1, SeqCst);
        if self.exclusive.load(SeqCst) == 0 {
            return WriteGuard {
                lock: self,
                slow_id: None,
            };
        }
        self.writers.fetch_sub(1, SeqCst);
        let id = self.acquire(range, Mode::Shared);
        WriteGuard {
            lock: self,
            slow_id: Some(id),
        }
    }

    /// Enters a COMPARE AND WRITE of `range`.
    pub(crate) fn exclusive(&self, range: Range<u64>) -> ExclusiveGuard<'_> {
        self.exclusive.fetch_add(1, SeqCst);
        let id = self.acquire(range, Mode::Exclusive);
        // Lock-free writers that started before us: wait for them to finish.
        while self.writers.load(SeqCst) != 0 {
            std::thread::yield_now();
        }
        ExclusiveGuard { lock: self, id }
    }

    fn acquire(&self, range: Range<u64>, mode: Mode) -> u64 {
        let mut t = self.table();
        loop {
            let blocked = t.held.iter().any(|h| {
                overlaps(&h.range, &range) && (h.mode == Mode::Exclusive || mode == Mode::Exclusive)
            });
            if !blocked {
                break;
            }
            t = self.changed.wait(t).unwrap_or_else(PoisonError::into_inner);
        }
        let id = t.next_id;
        t.next_id += 1;
        t.held.push(Held { range, mode, id });
        id
    }

    fn release(&self, id: u64) {
        let mut t = self.table();
        if let Some(pos) = t.held.iter().position(|h| h.id == id) {
            t.held.swap_remove(pos);
        }
        drop(t);
        self.changed.notify_all();
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        match self.slow_id {
            None => {
                self.lock.writers.fetch_sub(1, SeqCst);
            }
            Some(id) => self.lock.release(id),
        }
    }
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        self.lock.release(self.id);
        self.lock.exclusive.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    /// A writer updates a "block" of two words that must always be equal (writers racing
    /// each other on one range may tear it legitimately, so one writer per pair); other
    /// writers work on neighbouring ranges. A read-compare-write under the exclusive lock
    /// never sees its pair differ.
    #[test]
    fn exclusive_sections_never_see_torn_writes() {
        let lock = Arc::new(RangeLock::default());
        let words: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..3u64 {
            let (lock, words, stop) = (Arc::clone(&lock), Arc::clone(&words), Arc::clone(&stop));
            writers.push(std::thread::spawn(move || {
                let (lo, i) = (w * 512, 2 * w as usize);
                let mut v = 0;
                while !stop.load(SeqCst) {
                    v += 1;
                    let _g = lock.write(lo..lo + 512);
                    words[i].store(v, SeqCst);
                    std::hint::spin_loop();
                    words[i + 1].store(v, SeqCst);
                }
            }));
        }
        for _ in 0..5000 {
            let _g = lock.exclusive(0..512);
            let a = words[0].load(SeqCst);
            std::hint::spin_loop();
            let b = words[1].load(SeqCst);
            assert_eq!(a, b, "torn write seen inside the exclusive section");
        }
        stop.store(true, SeqCst);
        for w in writers {
            w.join().expect("writer");
        }
        assert_eq!(lock.writers.load(SeqCst), 0);
        assert!(lock.table().held.is_empty());
    }

    #[test]
    fn disjoint_ranges_do_not_wait() {
        let lock = RangeLock::default();
        let _x = lock.exclusive(0..10);
        let _w = lock.write(10..20); // slow path, but no overlap: returns at once
        let _y = lock.exclusive(20..30);
    }
}
