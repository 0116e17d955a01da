//! Per-task context of the LU and the state word that makes aborts safe.
//!
//! A task's context lives in `Task::lu_private` from `new_task` until the core's
//! `task_free`, and comes from a per-LU free list (no allocation per command once warm; its
//! scratch buffer keeps its capacity). Several threads may work on one task at once (buffers
//! completing on the port's thread while workers do I/O), and the core may ask the LU to
//! abort it at any time. One atomic word coordinates them:
//!
//! * BUSY (low bits) counts the LU's threads currently inside the task. Every entry (new_task,
//!   dbuf_xfer_done, a worker job) calls [`TaskCtx::enter`] and ends with
//!   [`TaskCtx::leave`].
//! * COMPLETE: the command has its result (set with [`TaskCtx::complete`]).
//! * SENT: status was handed to the core; nobody touches the task again.
//! * ABORTED / PENDING: the core asked to abort; PENDING when the LU was busy and so
//!   answered "pending".
//!
//! Status goes out (or `lu_aborted` is called) only from `leave` by the thread that brings
//! BUSY to zero, after one compare-and-swap decided it: so nothing of the LU touches the
//! task or its context after the core may free it.

use plugins_sdk::scsi::Sense;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

const BUSY: u32 = 0xFFFF;
const COMPLETE: u32 = 1 << 20;
const SENT: u32 = 1 << 21;
const ABORTED: u32 = 1 << 22;
const PENDING: u32 = 1 << 23;

/// How a command ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fin {
    /// GOOD.
    Good,
    /// CHECK CONDITION with sense data.
    Check(Sense),
    /// RESERVATION CONFLICT.
    Conflict,
    /// BUSY (no buffer from the port).
    Busy,
}

impl From<Sense> for Fin {
    fn from(s: Sense) -> Fin {
        Fin::Check(s)
    }
}

/// What `leave` decided to do.
pub(crate) enum Exit {
    /// Nothing: others are still busy, or the task is done already.
    Stay,
    /// Send this status.
    Send(Fin),
    /// Tell the core the abort finished.
    Aborted,
}

/// What a task is doing (decided in `new_task`, then read-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Nothing beyond status.
    None,
    /// Parameter data from `scratch` to the initiator.
    DataIn,
    /// Blocks from the store to the initiator.
    Read,
    /// Blocks from the initiator to the store (`durable`: write-through).
    Write { durable: bool },
    /// Compare data-out with the medium (VERIFY BYTCHK=01b).
    Verify,
    /// OR data-out into the medium.
    OrWrite { durable: bool },
    /// Collect parameter data (or blocks) into `scratch`, then run `Exec` on a worker.
    Gather(super::Exec),
    /// No data-out: run `Exec` on a worker.
    Exec(super::Exec),
}

/// The LU's state of one task.
pub(crate) struct TaskCtx {
    state: AtomicU32,
    pub(crate) op: Op,
    /// Byte offset in the store of the command's first block (streams).
    pub(crate) base: u64,
    /// Bytes to move through buffers (set when planning; a worker may set it for a reply
    /// it builds).
    pub(crate) total: AtomicU64,
    /// Next command-relative offset not yet handed to a buffer.
    pub(crate) next: AtomicU64,
    /// Buffers of this task out of the free state (with the port or being worked on).
    pub(crate) inflight: AtomicU32,
    /// An error was recorded: hand out no more work.
    pub(crate) failed: AtomicBool,
    result: Mutex<Fin>,
    /// Parameter data in or out (reused across tasks).
    pub(crate) scratch: Mutex<Vec<u8>>,
}

/// Largest scratch capacity a context keeps when it goes back to the free list.
const SCRATCH_KEEP: usize = 1 << 20;

impl TaskCtx {
    pub(crate) fn new() -> TaskCtx {
        TaskCtx {
            state: AtomicU32::new(0),
            op: Op::None,
            base: 0,
            total: AtomicU64::new(0),
            next: AtomicU64::new(0),
            inflight: AtomicU32::new(0),
            failed: AtomicBool::new(false),
            result: Mutex::new(Fin::Good),
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// Prepares a recycled context for a new task: busy once (the caller of `new_task`).
    pub(crate) fn reset(&mut self) {
        *self.state.get_mut() = 1;
        self.op = Op::None;
        self.base = 0;
        *self.total.get_mut() = 0;
        *self.next.get_mut() = 0;
        *self.inflight.get_mut() = 0;
        *self.failed.get_mut() = false;
        *self
            .result
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = Fin::Good;
        let s = self
            .scratch
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        s.clear();
        if s.capacity() > SCRATCH_KEEP {
            s.shrink_to(SCRATCH_KEEP);
        }
    }

    pub(crate) fn scratch(&self) -> MutexGuard<'_, Vec<u8>> {
        self.scratch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters the task; `false` if it was aborted or finished (the caller then only frees
    /// what it holds and leaves).
    pub(crate) fn enter(&self) -> bool {
        let s = self.state.fetch_add(1, Ordering::AcqRel);
        s & (ABORTED | SENT) == 0
    }

    /// Whether the core asked to abort.
    pub(crate) fn aborted(&self) -> bool {
        self.state.load(Ordering::Acquire) & ABORTED != 0
    }

    /// Records the command's result (the first error wins) and marks it complete.
    pub(crate) fn complete(&self, fin: Fin) {
        self.record(fin);
        self.state.fetch_or(COMPLETE, Ordering::AcqRel);
    }

    /// Records an error without completing (more buffers may still be out).
    pub(crate) fn record(&self, fin: Fin) {
        if fin != Fin::Good {
            let mut r = self.result.lock().unwrap_or_else(PoisonError::into_inner);
            if *r == Fin::Good {
                *r = fin;
            }
            self.failed.store(true, Ordering::Release);
        }
    }

    /// Leaves the task; returns what the caller must do next (and then touch nothing).
    pub(crate) fn leave(&self) -> Exit {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let mut new = s.wrapping_sub(1);
            let mut exit = Exit::Stay;
            if new & BUSY == 0 {
                if s & ABORTED != 0 {
                    if s & PENDING != 0 {
                        new &= !PENDING;
                        exit = Exit::Aborted;
                    }
                } else if s & COMPLETE != 0 && s & SENT == 0 {
                    new |= SENT;
                    exit = Exit::Send(Fin::Good);
                }
            }
            match self
                .state
                .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if let Exit::Send(_) = exit {
                        // Nobody else touches the context until the core frees the task,
                        // which it does only after this status.
                        let r = *self.result.lock().unwrap_or_else(PoisonError::into_inner);
                        return Exit::Send(r);
                    }
                    return exit;
                }
                Err(now) => s = now,
            }
        }
    }

    /// The core's abort request: `true` when the LU has let go (done), `false` when a
    /// thread of the LU is busy with the task and `lu_aborted` will follow.
    pub(crate) fn abort(&self) -> bool {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & SENT != 0 {
                return true;
            }
            let (new, done) = if s & BUSY == 0 {
                (s | ABORTED, true)
            } else {
                (s | ABORTED | PENDING, false)
            };
            match self
                .state
                .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return done,
                Err(now) => s = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TaskCtx {
        let mut c = TaskCtx::new();
        c.reset();
        c
    }

    #[test]
    fn status_goes_out_once_when_the_last_thread_leaves() {
        let c = ctx();
        assert!(c.enter()); // a buffer completing on another thread
        c.complete(Fin::Good);
        assert!(matches!(c.leave(), Exit::Stay));
        assert!(matches!(c.leave(), Exit::Send(Fin::Good)));
        assert!(!c.enter(), "finished");
        assert!(matches!(c.leave(), Exit::Stay));
        assert!(c.abort(), "after status the LU has let go");
    }

    #[test]
    fn first_error_wins() {
        let c = ctx();
        c.record(Fin::Busy);
        c.complete(Fin::Conflict);
        assert!(matches!(c.leave(), Exit::Send(Fin::Busy)));
    }

    #[test]
    fn abort_while_busy_is_pending_then_reported() {
        let c = ctx();
        assert!(!c.abort(), "busy: pending");
        c.complete(Fin::Good);
        assert!(
            matches!(c.leave(), Exit::Aborted),
            "no status after an abort"
        );
    }

    #[test]
    fn abort_while_idle_is_done() {
        let c = ctx();
        assert!(matches!(c.leave(), Exit::Stay)); // buffers with the port, nobody busy
        assert!(c.abort());
        assert!(!c.enter(), "a late buffer sees the abort");
        assert!(
            matches!(c.leave(), Exit::Stay),
            "and does not report it again"
        );
    }
}
