//! Sessions (I_T nexuses) and their task pools.

use crate::objects::{lock, LportEntry, LunMap};
use crate::stats::IoStats;
use crate::task::{refs, state, CoreTask, IN_USE, ORPHAN, POSTED, REF_COUNT};
use crate::types::Guid;
use std::collections::HashMap;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};

/// Task storage of a session. Tasks are boxed once and recycled; `all` lists every task the
/// session owns (for task-management scans), `free` the idle ones. Allocation, freeing and
/// TM scans take this lock, so a task's "in use" state is stable while it is held.
pub(crate) struct TaskPool {
    pub free: Vec<*mut CoreTask>,
    pub all: Vec<*mut CoreTask>,
}

// SAFETY: the raw pointers are owned boxes, only touched under the pool lock or by the owner
// of an in-use task.
unsafe impl Send for TaskPool {}

pub(crate) struct SessionCore {
    pub id: u64,
    pub lport: Arc<LportEntry>,
    pub initiator: String,
    pub alias: String,
    pub transport_id: String,
    pub map: RwLock<Arc<LunMap>>,
    /// REPORTED LUNS DATA HAS CHANGED is pending for this nexus.
    pub ua_inventory: AtomicBool,
    pub pool: Mutex<TaskPool>,
    /// Tasks in use (allocated and not yet freed); lets a dying session know when to go.
    pub in_use: AtomicUsize,
    pub closing: AtomicBool,
    /// Per-LU counters of this session (I_T_L nexus statistics).
    pub itl_stats: Mutex<HashMap<Guid, Arc<IoStats>>>,
    /// Counters of commands the core answered itself (no LU).
    pub core_stats: Arc<IoStats>,
    /// The port did not prove the initiator name (`session_flags::NAME_UNPROVEN`): only
    /// views for all host groups apply.
    pub name_unproven: bool,
}

impl SessionCore {
    pub fn new(
        id: u64,
        lport: Arc<LportEntry>,
        initiator: String,
        alias: String,
        transport_id: String,
    ) -> Self {
        SessionCore {
            id,
            lport,
            initiator,
            alias,
            transport_id,
            map: RwLock::new(Arc::new(LunMap::default())),
            ua_inventory: AtomicBool::new(false),
            pool: Mutex::new(TaskPool {
                free: Vec::new(),
                all: Vec::new(),
            }),
            in_use: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            itl_stats: Mutex::new(HashMap::new()),
            core_stats: Arc::new(IoStats::default()),
            name_unproven: false,
        }
    }

    pub fn itl_stats(&self, guid: Guid) -> Arc<IoStats> {
        lock(&self.itl_stats).entry(guid).or_default().clone()
    }
}

impl Drop for SessionCore {
    /// Frees the session's tasks. Normally they are all idle (a dying session is dropped
    /// once none is in use). At core teardown some may still be live, or zombies with
    /// handles out: such a task is orphaned — marked so its last reference frees it, its
    /// state word cleared so host calls refuse it, and the lifecycle reference given up on
    /// the core's behalf (unless the port's unposted task still owns it: then posting or
    /// abandoning it gives it up) — and a provider's kept handle stays valid memory.
    fn drop(&mut self) {
        let pool = self.pool.get_mut().unwrap_or_else(|e| e.into_inner());
        for &t in &pool.all {
            let st = state(t).load(Acquire);
            let live = st & IN_USE != 0;
            let posted = st & POSTED != 0;
            if live {
                state(t).store(0, Release);
            }
            let held = refs(t).fetch_or(ORPHAN, AcqRel) & REF_COUNT;
            let free = if live && posted && held > 0 {
                // The core will never end this task's lifecycle: give up its reference.
                refs(t).fetch_sub(1, AcqRel) & REF_COUNT == 1
            } else {
                !live && held == 0
            };
            if free {
                // SAFETY: every pointer in `all` came from Box::into_raw; no reference is
                // left (quarantined tasks were removed from `all` and are never freed).
                drop(unsafe { Box::from_raw(t) });
            }
        }
        pool.all.clear();
        pool.free.clear();
    }
}
