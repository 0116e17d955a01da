//! The core's task record and its ownership state.
//!
//! A task is known to up to three parties: the port (from `task_alloc` until
//! `send_status_done` or its abort completes), the LU (from `new_task` until it sends status
//! with LU_DONE or lets go in an abort) and the core itself (while it is in the middle of
//! routing or aborting it). Each is one bit; whoever clears the last bit frees the task. This
//! is COMSTAR's known-to-LU/known-to-port pair made explicit, with the core's own bit closing
//! the races where a provider completes a task while the core is still calling into it.
//!
//! Apart from those roles, the task's *memory* is reference-counted ([`CoreTask::refs`], ABI
//! 3): one reference for the core's lifecycle (from `task_alloc` until the task is freed, see
//! [`crate::route::free_task`]) plus one per `TaskHandle` a provider keeps. A task the core
//! has freed but a provider still holds is a *zombie*: its state word is 0, so every host
//! entry point refuses it, and it goes back to the session's pool with its last reference.
//! Until then the session counts it in use, which keeps a dying session (and so the task's
//! session and port pointers) alive.

use crate::objects::{lock, LuEntry, LunMap};
use crate::session::SessionCore;
use crate::stats::IoStats;
use crate::tm::AbortGroup;
use plugins_sdk::abi::Task;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub(crate) const IN_USE: u32 = 1 << 0;
pub(crate) const KNOWN_TO_PORT: u32 = 1 << 1;
pub(crate) const KNOWN_TO_LU: u32 = 1 << 2;
pub(crate) const ABORTING: u32 = 1 << 4;
pub(crate) const QUARANTINED: u32 = 1 << 5;
/// The core answers the command itself (REPORT LUNS, no LU, unit attention).
pub(crate) const DEFAULT_LU: u32 = 1 << 6;
/// A task-management request.
pub(crate) const TM: u32 = 1 << 7;
/// The LU was handed the task (so it gets `task_free`).
pub(crate) const ROUTED_TO_LU: u32 = 1 << 8;
/// The core is inside the LU's `new_task` for this task: an abort must not ask the LU yet
/// (it may not have registered the task); `post_task` asks it when `new_task` returns.
pub(crate) const IN_NEW_TASK: u32 = 1 << 9;
/// The LU has been asked to abort the task (exactly once).
pub(crate) const LU_ABORT_ASKED: u32 = 1 << 10;
/// `post_task` took the task: the lifecycle reference is the core's, no longer borrowed by
/// the port's unposted task (set with an operation post_task does anyway on every path).
pub(crate) const POSTED: u32 = 1 << 11;
/// One reference held by the core (bits 16..32 count them: routing and aborting nest).
pub(crate) const CORE_ONE: u32 = 1 << 16;
pub(crate) const CORE_MASK: u32 = 0xFFFF << 16;
pub(crate) const KNOWN_ANY: u32 = KNOWN_TO_PORT | KNOWN_TO_LU | CORE_MASK;

/// [`CoreTask::refs`]: the number of references (low bits) ...
pub(crate) const REF_COUNT: u64 = (1 << 48) - 1;
/// ... and, set when the session was dropped with the task still referenced, the mark that
/// makes the last reference free the box instead of returning it to the (gone) pool.
pub(crate) const ORPHAN: u64 = 1 << 63;
/// More references than any sane provider takes: like `Arc`, the core aborts rather than let
/// the count come anywhere near wrapping.
const REF_LIMIT: u64 = 1 << 40;

/// The task as the core stores it: the public ABI struct first, so a `*mut Task` handed to a
/// provider is also a `*mut CoreTask`.
#[repr(C)]
pub(crate) struct CoreTask {
    pub public: Task,
    pub state: AtomicU32,
    /// References to the task's memory (see the module documentation) and [`ORPHAN`].
    pub refs: AtomicU64,
    /// Bumped each time the task is freed, so stale references (timers) can tell.
    pub generation: AtomicU32,
    pub session: *const SessionCore,
    /// The map the task was routed with (keeps its LU alive).
    pub map: Option<Arc<LunMap>>,
    pub lu: *const LuEntry,
    pub stats: *const IoStats,
    pub start: Instant,
    pub waiters: Mutex<Vec<Arc<AbortGroup>>>,
    /// Copy of a CDB longer than the inline array.
    pub ext_cdb: Vec<u8>,
}

impl CoreTask {
    pub fn new_boxed(session: *const SessionCore) -> *mut CoreTask {
        // SAFETY: Task is plain old data (integers, arrays and raw pointers): all-zero is a
        // valid value.
        let mut public: Task = unsafe { std::mem::zeroed() };
        public.host = &crate::host::HOST_API;
        Box::into_raw(Box::new(CoreTask {
            public,
            state: AtomicU32::new(0),
            refs: AtomicU64::new(0),
            generation: AtomicU32::new(0),
            session,
            map: None,
            lu: std::ptr::null(),
            stats: std::ptr::null(),
            start: Instant::now(),
            waiters: Mutex::new(Vec::new()),
            ext_cdb: Vec::new(),
        }))
    }
}

/// The core's view of a task pointer received from a provider.
#[inline]
pub(crate) fn core_of(t: *mut Task) -> *mut CoreTask {
    t as *mut CoreTask
}

/// Field accessors that never form a reference to the whole task (providers write the public
/// part concurrently through their own raw pointers).
#[inline]
pub(crate) fn state<'a>(ct: *mut CoreTask) -> &'a AtomicU32 {
    // SAFETY: callers hold a live task; the state field is only accessed atomically.
    unsafe { &(*ct).state }
}

#[inline]
pub(crate) fn session<'a>(ct: *mut CoreTask) -> &'a SessionCore {
    // SAFETY: a task's session outlives it (the session frees its tasks on drop).
    unsafe { &*(*ct).session }
}

/// Clears `bits` (KNOWN_TO_PORT / KNOWN_TO_LU); when that leaves the task known to nobody,
/// frees it.
pub(crate) fn release(ct: *mut CoreTask, bits: u32) {
    let prev = state(ct).fetch_and(!bits, Ordering::AcqRel);
    if prev & bits != 0
        && prev & IN_USE != 0
        && prev & QUARANTINED == 0
        && (prev & !bits) & KNOWN_ANY == 0
    {
        crate::route::free_task(ct);
    }
}

/// Drops a core reference; frees the task when nobody knows it any more.
#[inline]
pub(crate) fn unpin(ct: *mut CoreTask) {
    let prev = state(ct).fetch_sub(CORE_ONE, Ordering::AcqRel);
    let now = prev.wrapping_sub(CORE_ONE);
    if prev & IN_USE != 0 && prev & QUARANTINED == 0 && now & KNOWN_ANY == 0 {
        crate::route::free_task(ct);
    }
}

/// Pins a task for the core (one core reference plus `extra`) if somebody still knows it.
/// Must be called with the session's pool lock held or with a reference on the task (a
/// provider's call), so the task cannot be recycled.
#[inline]
pub(crate) fn pin(ct: *mut CoreTask, extra: u32) -> Option<u32> {
    let st = state(ct);
    let mut s = st.load(Ordering::Acquire);
    loop {
        if s & IN_USE == 0 || s & KNOWN_ANY == 0 || s & QUARANTINED != 0 {
            return None;
        }
        match st.compare_exchange_weak(
            s,
            (s + CORE_ONE) | extra,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Some(s),
            Err(now) => s = now,
        }
    }
}

#[inline]
pub(crate) fn refs<'a>(ct: *mut CoreTask) -> &'a AtomicU64 {
    // SAFETY: callers hold a reference on the task (or the pool lock of its live session);
    // the field is only accessed atomically.
    unsafe { &(*ct).refs }
}

/// Takes one more reference for a provider (`task_hold`); the caller holds one already.
#[inline]
pub(crate) fn ref_hold(ct: *mut CoreTask) {
    let prev = refs(ct).fetch_add(1, Ordering::Relaxed);
    if prev & REF_COUNT >= REF_LIMIT {
        tracing::error!("a provider took {REF_LIMIT} references on one task; aborting");
        std::process::abort();
    }
}

/// Gives back one reference (`task_rele`); the last one of a dead task recycles it.
#[inline]
pub(crate) fn ref_rele(ct: *mut CoreTask) {
    let prev = refs(ct).fetch_sub(1, Ordering::Release);
    if prev & REF_COUNT == 1 {
        std::sync::atomic::fence(Ordering::Acquire);
        last_ref(ct, prev);
    }
}

/// The last reference of a dead task is gone: back to the pool, or freed if the session went.
fn last_ref(ct: *mut CoreTask, prev: u64) {
    if prev & ORPHAN != 0 {
        // SAFETY: the session that owned the box is gone and gave it up (see
        // SessionCore::drop); this was the last reference, so nobody can reach it any more.
        drop(unsafe { Box::from_raw(ct) });
    } else {
        crate::route::recycle(ct);
    }
}

/// The core is done with a task (after the providers' `task_free`): drops the lifecycle
/// reference. With no handle out (the common case) the task goes straight back to the pool;
/// otherwise it stays a zombie until its last handle is released.
#[inline]
pub(crate) fn end_lifecycle(ct: *mut CoreTask) {
    // Only the lifecycle reference: no provider holds a handle, and none can take one now —
    // a handle is taken from a handle, or inside a call the core makes while it holds the
    // task, and every such call has returned.
    if refs(ct).load(Ordering::Acquire) == 1 {
        refs(ct).store(0, Ordering::Relaxed);
        crate::route::recycle(ct);
        return;
    }
    // A zombie: the state word says "not in use", so host calls on it are refused.
    state(ct).store(0, Ordering::Release);
    ref_rele(ct);
}

/// Takes the abort groups waiting on a task.
pub(crate) fn take_waiters(ct: *mut CoreTask) -> Vec<Arc<AbortGroup>> {
    // SAFETY: live task; the waiters field is behind its own mutex.
    std::mem::take(&mut *lock(unsafe { &(*ct).waiters }))
}
