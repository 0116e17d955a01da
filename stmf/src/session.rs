//! Sessions (I_T nexuses) and their task pools.

use crate::objects::{lock, LportEntry, LunMap};
use crate::stats::IoStats;
use crate::task::CoreTask;
use crate::types::Guid;
use std::collections::HashMap;
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
    fn drop(&mut self) {
        let pool = self.pool.get_mut().unwrap_or_else(|e| e.into_inner());
        for &t in &pool.all {
            // SAFETY: every pointer in `all` came from Box::into_raw and the session is the
            // last owner (quarantined tasks were removed from `all` and are never freed).
            drop(unsafe { Box::from_raw(t) });
        }
        pool.all.clear();
        pool.free.clear();
    }
}
