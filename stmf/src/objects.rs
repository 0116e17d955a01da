//! The core's objects: loaded providers, LUs, local ports, sessions and their LUN maps.
//!
//! Objects are `Arc`s owned by the core's registries; providers hold raw handles (the `Arc`'s
//! address). Handles a provider passes back on management paths (register, deregister, ctl
//! completion) are validated against the live registries below; the per-command path (session
//! and task pointers) trusts them, as every SCSI target framework must to be fast.

use crate::stats::IoStats;
use crate::types::{Guid, ObjState};
use plugins_sdk::abi::{LuOps, PortOps, ProviderKind, ProviderRoot, Status};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};

/// Locks a mutex, recovering from poisoning (a panic elsewhere must not wedge the daemon).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-locks, recovering from poisoning.
pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-locks, recovering from poisoning.
pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// A loaded provider.
pub(crate) struct ProviderEntry {
    pub name: String,
    pub kind: ProviderKind,
    pub version: String,
    pub description: String,
    pub path: String,
    pub root: &'static ProviderRoot,
    pub instance: AtomicPtr<c_void>,
    /// The library; dropped (dlclose) after the instance is destroyed.
    pub lib: Mutex<Option<libloading::Library>>,
    pub failed: Mutex<Option<String>>,
    pub core: Weak<crate::core::CoreInner>,
}

// SAFETY: the root is immutable static data of a loaded library; the instance pointer is only
// passed back to the provider, which is Send + Sync by the SDK's trait bounds.
unsafe impl Send for ProviderEntry {}
// SAFETY: as above.
unsafe impl Sync for ProviderEntry {}

impl ProviderEntry {
    pub fn is_failed(&self) -> bool {
        lock(&self.failed).is_some()
    }
}

/// Online/offline handshake state of an LU or port.
pub(crate) struct Ctl {
    pub state: ObjState,
    /// The request sent to the provider and its completion, if any arrived.
    pub pending: Option<(plugins_sdk::CtlCmd, Option<Status>)>,
    /// Why the object was forced offline.
    pub failed: Option<String>,
    /// The admin took it offline (kept across restarts).
    pub admin_offline: bool,
}

impl Ctl {
    pub fn new() -> Self {
        Ctl {
            state: ObjState::Offline,
            pending: None,
            failed: None,
            admin_offline: false,
        }
    }
}

/// A registered LU.
pub(crate) struct LuEntry {
    pub guid: Guid,
    pub alias: String,
    pub provider: Arc<ProviderEntry>,
    pub ctx: *const c_void,
    pub ops: LuOps,
    pub ctl: Mutex<Ctl>,
    pub ctl_cv: Condvar,
    /// Fast check on the command path: the LU accepts new tasks.
    pub online: AtomicBool,
    /// Set once `release` was called: never call the provider again.
    pub released: AtomicBool,
    /// Counters of nexuses that ended.
    pub retired: IoStats,
}

// SAFETY: ctx is the provider's object pointer, only handed back to it; the provider's LU
// type is Send + Sync (SDK trait bound).
unsafe impl Send for LuEntry {}
// SAFETY: as above.
unsafe impl Sync for LuEntry {}

/// A registered local port.
pub(crate) struct LportEntry {
    pub name: String,
    pub alias: String,
    pub protocol: String,
    pub relative_id: u16,
    pub provider: Arc<ProviderEntry>,
    pub ctx: *const c_void,
    pub ops: PortOps,
    pub ctl: Mutex<Ctl>,
    pub ctl_cv: Condvar,
    pub online: AtomicBool,
    pub released: AtomicBool,
    pub sessions: Mutex<Vec<Arc<crate::session::SessionCore>>>,
    pub retired: IoStats,
}

// SAFETY: as for LuEntry.
unsafe impl Send for LportEntry {}
// SAFETY: as for LuEntry.
unsafe impl Sync for LportEntry {}

/// One LUN of a session's map.
pub(crate) struct MapEntry {
    pub lun: u16,
    pub guid: Guid,
    /// The LU, if one with this GUID is registered.
    pub lu: Option<Arc<LuEntry>>,
    /// Whether the LU was online when the map was built (what REPORT LUNS reports; the
    /// command path checks the live state).
    pub online: bool,
    /// Counters of this I_T_L nexus (shared by successive maps of the session).
    pub stats: Arc<IoStats>,
}

/// A session's LUN map, sorted by LUN. Replaced as a whole when views change; tasks keep the
/// map they were routed with alive.
#[derive(Default)]
pub(crate) struct LunMap {
    pub entries: Vec<MapEntry>,
}

impl LunMap {
    pub fn get(&self, lun: u16) -> Option<&MapEntry> {
        self.entries
            .binary_search_by_key(&lun, |e| e.lun)
            .ok()
            .and_then(|i| self.entries.get(i))
    }

    /// What an initiator can see: (LUN, GUID) of online LUs. Differences raise the UA.
    pub fn inventory(&self) -> Vec<(u16, Guid)> {
        self.entries
            .iter()
            .filter(|e| e.online)
            .map(|e| (e.lun, e.guid))
            .collect()
    }
}

/// Live-object registries, by address, for validating handles on management paths.
pub(crate) struct Registry<T> {
    map: Mutex<BTreeMap<usize, Weak<T>>>,
}

impl<T> Registry<T> {
    pub const fn new() -> Self {
        Registry {
            map: Mutex::new(BTreeMap::new()),
        }
    }
    pub fn insert(&self, a: &Arc<T>) {
        lock(&self.map).insert(Arc::as_ptr(a) as usize, Arc::downgrade(a));
    }
    pub fn remove(&self, a: &Arc<T>) {
        lock(&self.map).remove(&(Arc::as_ptr(a) as usize));
    }
    pub fn get(&self, p: *const c_void) -> Option<Arc<T>> {
        lock(&self.map).get(&(p as usize)).and_then(Weak::upgrade)
    }
}

pub(crate) static PROVIDERS: Registry<ProviderEntry> = Registry::new();
pub(crate) static LUS: Registry<LuEntry> = Registry::new();
pub(crate) static LPORTS: Registry<LportEntry> = Registry::new();

/// Source of session ids (unique in the process).
pub(crate) static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);
