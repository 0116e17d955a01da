//! The core's task record and its ownership state.
//!
//! A task is known to up to three parties: the port (from `task_alloc` until
//! `send_status_done` or its abort completes), the LU (from `new_task` until it sends status
//! with LU_DONE or lets go in an abort) and the core itself (while it is in the middle of
//! routing or aborting it). Each is one bit; whoever clears the last bit frees the task. This
//! is COMSTAR's known-to-LU/known-to-port pair made explicit, with the core's own bit closing
//! the races where a provider completes a task while the core is still calling into it.

use crate::objects::{lock, LuEntry, LunMap};
use crate::session::SessionCore;
use crate::stats::IoStats;
use crate::tm::AbortGroup;
use plugins_sdk::abi::Task;
use std::sync::atomic::{AtomicU32, Ordering};
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
/// One reference held by the core (bits 16..32 count them: routing and aborting nest).
pub(crate) const CORE_ONE: u32 = 1 << 16;
pub(crate) const CORE_MASK: u32 = 0xFFFF << 16;
pub(crate) const KNOWN_ANY: u32 = KNOWN_TO_PORT | KNOWN_TO_LU | CORE_MASK;

/// The task as the core stores it: the public ABI struct first, so a `*mut Task` handed to a
/// provider is also a `*mut CoreTask`.
#[repr(C)]
pub(crate) struct CoreTask {
    pub public: Task,
    pub state: AtomicU32,
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
        let public: Task = unsafe { std::mem::zeroed() };
        Box::into_raw(Box::new(CoreTask {
            public,
            state: AtomicU32::new(0),
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

/// Takes a core reference on a task the caller knows is alive.
#[inline]
pub(crate) fn hold(ct: *mut CoreTask) -> u32 {
    state(ct).fetch_add(CORE_ONE, Ordering::AcqRel)
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
/// Must be called with the session's pool lock held, so the task cannot be recycled.
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

/// Takes the abort groups waiting on a task.
pub(crate) fn take_waiters(ct: *mut CoreTask) -> Vec<Arc<AbortGroup>> {
    // SAFETY: live task; the waiters field is behind its own mutex.
    std::mem::take(&mut *lock(unsafe { &(*ct).waiters }))
}
