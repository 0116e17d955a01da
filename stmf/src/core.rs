//! The core: registries of providers, LUs and ports, sessions and their LUN maps, the
//! online/offline handshake, and the management API ([`Stmf`]).

use crate::error::{ErrorKind, Result, StmfError};
use crate::host::HOST_API;
use crate::objects::*;
use crate::session::SessionCore;
use crate::tm::Svc;
use crate::types::*;
use crate::view::ViewStore;
use plugins_sdk::abi::*;
use plugins_sdk::CtlCmd;
use std::collections::{BTreeMap, HashSet};
use std::ffi::c_void;
use std::path::Path;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU16};
use std::sync::{mpsc, Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

pub(crate) struct CoreInner {
    settings: Mutex<Settings>,
    providers: Mutex<Vec<Arc<ProviderEntry>>>,
    lus: RwLock<BTreeMap<Guid, Arc<LuEntry>>>,
    lports: RwLock<Vec<Arc<LportEntry>>>,
    views: Mutex<ViewStore>,
    /// Sessions deregistered while tasks were still in flight.
    dying: Mutex<Vec<Arc<SessionCore>>>,
    /// Sessions owning quarantined tasks: never dropped, so a stuck provider's late call on
    /// such a task still finds its session and port.
    quarantined: Mutex<Vec<Arc<SessionCore>>>,
    /// Admin-offlined objects that are not registered (yet): they stay offline when they come.
    offline_lus: Mutex<HashSet<Guid>>,
    offline_targets: Mutex<HashSet<String>>,
    initialized: AtomicBool,
    next_rel_port: AtomicU16,
    pub(crate) svc: Arc<Svc>,
}

impl Drop for CoreInner {
    fn drop(&mut self) {
        self.svc.stop();
    }
}

/// Records the completion of an ONLINE/OFFLINE request (called from `*_ctl_complete`).
pub(crate) fn ctl_complete(ctl: &Mutex<Ctl>, cv: &Condvar, cmd: CtlCmd, status: Status) {
    let mut c = lock(ctl);
    if let Some((pending, None)) = c.pending {
        if pending == cmd {
            c.pending = Some((pending, Some(status)));
            cv.notify_all();
        }
    }
}

/// Marks a provider failed (it panicked) and forces all its objects offline.
pub(crate) fn fail_provider(p: &ProviderEntry, what: &str) {
    {
        let mut f = lock(&p.failed);
        if f.is_some() {
            return;
        }
        *f = Some(format!("provider {} {what}", p.name));
    }
    tracing::error!(provider = %p.name, "provider {what}; its LUs and ports are forced offline");
    let Some(core) = p.core.upgrade() else { return };
    let why = format!("provider {} {what}", p.name);
    let lus: Vec<_> = read(&core.lus)
        .values()
        .filter(|l| std::ptr::eq(Arc::as_ptr(&l.provider), p))
        .cloned()
        .collect();
    for l in lus {
        core.force_offline_lu(&l, why.clone());
    }
    let lps: Vec<_> = read(&core.lports)
        .iter()
        .filter(|l| std::ptr::eq(Arc::as_ptr(&l.provider), p))
        .cloned()
        .collect();
    for l in lps {
        core.force_offline_lport(&l, why.clone());
    }
}

/// Deregisters a session (host entry).
pub(crate) fn deregister_session(h: SessionHandle) -> Status {
    // The handle is only compared, never dereferenced, until it is found in a port's list.
    for lp in LPORTS_ALL.snapshot() {
        let found = {
            let mut ss = lock(&lp.sessions);
            ss.iter()
                .position(|s| std::ptr::eq(Arc::as_ptr(s) as *const c_void, h.0))
                .map(|i| ss.remove(i))
        };
        if let Some(s) = found {
            if let Some(core) = lp.provider.core.upgrade() {
                core.end_session(s);
            }
            return Status::SUCCESS;
        }
    }
    Status::NOT_FOUND
}

/// A registered (or dying) session by handle; the handle is compared, never dereferenced.
pub(crate) fn find_session(h: SessionHandle) -> Option<Arc<SessionCore>> {
    for lp in LPORTS_ALL.snapshot() {
        if let Some(s) = lock(&lp.sessions)
            .iter()
            .find(|s| std::ptr::eq(Arc::as_ptr(s) as *const c_void, h.0))
        {
            return Some(s.clone());
        }
        if let Some(core) = lp.provider.core.upgrade() {
            if let Some(s) = lock(&core.dying)
                .iter()
                .find(|s| std::ptr::eq(Arc::as_ptr(s) as *const c_void, h.0))
            {
                return Some(s.clone());
            }
        }
    }
    None
}

/// Every live port of every core in the process (sessions are looked up through it).
struct AllPorts(Mutex<Vec<std::sync::Weak<LportEntry>>>);
impl AllPorts {
    fn add(&self, l: &Arc<LportEntry>) {
        let mut v = lock(&self.0);
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(l));
    }
    fn snapshot(&self) -> Vec<Arc<LportEntry>> {
        lock(&self.0).iter().filter_map(|w| w.upgrade()).collect()
    }
}
static LPORTS_ALL: AllPorts = AllPorts(Mutex::new(Vec::new()));

fn sink_string(s: &mut String) -> *mut c_void {
    s as *mut String as *mut c_void
}

impl CoreInner {
    pub(crate) fn abort_timeout(&self) -> Duration {
        Duration::from_millis(lock(&self.settings).abort_timeout_ms)
    }

    fn ctl_timeout(&self) -> Duration {
        Duration::from_millis(lock(&self.settings).ctl_timeout_ms)
    }

    pub(crate) fn all_sessions(&self) -> Vec<Arc<SessionCore>> {
        read(&self.lports)
            .iter()
            .flat_map(|l| lock(&l.sessions).clone())
            .collect()
    }

    /// Keeps a session that owns a quarantined task alive for the life of the core.
    pub(crate) fn keep_for_quarantine(&self, s: Arc<SessionCore>) {
        let mut q = lock(&self.quarantined);
        if !q.iter().any(|x| Arc::ptr_eq(x, &s)) {
            q.push(s);
        }
    }

    /// Drops dead sessions whose tasks are all gone.
    pub(crate) fn reap_sessions(&self) {
        lock(&self.dying).retain(|s| s.in_use.load(Acquire) > 0);
    }

    fn build_map(
        &self,
        views: &ViewStore,
        lus: &BTreeMap<Guid, Arc<LuEntry>>,
        s: &SessionCore,
    ) -> Arc<LunMap> {
        // A name the port did not prove gets no host group's views.
        let map = if s.name_unproven {
            views.lun_map_any_host(&s.lport.name)
        } else {
            views.lun_map(&s.initiator, &s.lport.name)
        };
        let entries = map
            .into_iter()
            .map(|(lun, guid)| {
                let lu = lus.get(&guid).cloned();
                let online = lu.as_ref().is_some_and(|l| l.online.load(Acquire));
                MapEntry {
                    lun,
                    guid,
                    lu,
                    online,
                    stats: s.itl_stats(guid),
                }
            })
            .collect();
        Arc::new(LunMap { entries })
    }

    /// Rebuilds every session's LUN map; sessions whose visible inventory changed get the
    /// REPORTED LUNS DATA HAS CHANGED unit attention.
    pub(crate) fn refresh_maps(&self) {
        let views = lock(&self.views);
        let lus = read(&self.lus);
        for lp in read(&self.lports).iter() {
            for s in lock(&lp.sessions).iter() {
                let new = self.build_map(&views, &lus, s);
                let old = std::mem::replace(&mut *write(&s.map), new.clone());
                if old.inventory() != new.inventory() {
                    s.ua_inventory.store(true, Release);
                }
            }
        }
    }

    fn wait_ctl(&self, ctl: &Mutex<Ctl>, cv: &Condvar) -> Option<Status> {
        let deadline = Instant::now() + self.ctl_timeout();
        let mut c = lock(ctl);
        loop {
            if let Some((_, Some(st))) = c.pending {
                c.pending = None;
                return Some(st);
            }
            let now = Instant::now();
            if now >= deadline {
                c.pending = None;
                return None;
            }
            c = cv
                .wait_timeout(c, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Sends ONLINE or OFFLINE to an LU and waits for its completion.
    fn ctl_lu(&self, lu: &Arc<LuEntry>, cmd: CtlCmd) -> Result<()> {
        if lu.provider.is_failed() || lu.released.load(Acquire) {
            return Err(StmfError::new(
                ErrorKind::Provider,
                format!("LU {}: its provider has failed", lu.guid),
            ));
        }
        lock(&lu.ctl).pending = Some((cmd, None));
        // SAFETY: not released (checked above), so the LU's ops and ctx are valid.
        let r = unsafe { (lu.ops.ctl)(lu.ctx, LuHandle(Arc::as_ptr(lu) as *const c_void), cmd) };
        if r == Status::PANICKED {
            lock(&lu.ctl).pending = None;
            fail_provider(&lu.provider, "panicked in ctl");
            return Err(StmfError::new(
                ErrorKind::Provider,
                format!("LU {}: provider panicked", lu.guid),
            ));
        }
        match self.wait_ctl(&lu.ctl, &lu.ctl_cv) {
            Some(st) if st.is_ok() => Ok(()),
            Some(st) => Err(StmfError::new(
                ErrorKind::Provider,
                format!("LU {}: provider failed the request: {st}", lu.guid),
            )),
            None => Err(StmfError::new(
                ErrorKind::Timeout,
                format!(
                    "LU {}: provider did not complete the request within {} ms",
                    lu.guid,
                    self.ctl_timeout().as_millis()
                ),
            )),
        }
    }

    fn ctl_lport(&self, lp: &Arc<LportEntry>, cmd: CtlCmd) -> Result<()> {
        if lp.provider.is_failed() || lp.released.load(Acquire) {
            return Err(StmfError::new(
                ErrorKind::Provider,
                format!("target {}: its provider has failed", lp.name),
            ));
        }
        lock(&lp.ctl).pending = Some((cmd, None));
        // SAFETY: not released (checked above), so the port's ops and ctx are valid.
        let r = unsafe { (lp.ops.ctl)(lp.ctx, LportHandle(Arc::as_ptr(lp) as *const c_void), cmd) };
        if r == Status::PANICKED {
            lock(&lp.ctl).pending = None;
            fail_provider(&lp.provider, "panicked in ctl");
            return Err(StmfError::new(
                ErrorKind::Provider,
                format!("target {}: provider panicked", lp.name),
            ));
        }
        match self.wait_ctl(&lp.ctl, &lp.ctl_cv) {
            Some(st) if st.is_ok() => Ok(()),
            Some(st) => Err(StmfError::new(
                ErrorKind::Provider,
                format!("target {}: provider failed the request: {st}", lp.name),
            )),
            None => Err(StmfError::new(
                ErrorKind::Timeout,
                format!(
                    "target {}: provider did not complete the request within {} ms",
                    lp.name,
                    self.ctl_timeout().as_millis()
                ),
            )),
        }
    }

    fn online_lu_entry(&self, lu: &Arc<LuEntry>) -> Result<()> {
        {
            let mut c = lock(&lu.ctl);
            match c.state {
                ObjState::Online => return Ok(()),
                ObjState::Onlining | ObjState::Offlining => {
                    return Err(StmfError::busy(format!("LU {} is {}", lu.guid, c.state)))
                }
                ObjState::Offline => c.state = ObjState::Onlining,
            }
        }
        match self.ctl_lu(lu, CtlCmd::ONLINE) {
            Ok(()) => {
                {
                    let mut c = lock(&lu.ctl);
                    c.state = ObjState::Online;
                    c.failed = None;
                    c.admin_offline = false;
                }
                lock(&self.offline_lus).remove(&lu.guid);
                lu.online.store(true, Release);
                // SAFETY: the LU is registered (we are onlining it): its ops and ctx stay
                // valid until the core calls its release.
                unsafe {
                    (lu.ops.ctl)(
                        lu.ctx,
                        LuHandle(Arc::as_ptr(lu) as *const c_void),
                        CtlCmd::ACK_ONLINE_COMPLETE,
                    )
                };
                self.refresh_maps();
                Ok(())
            }
            Err(e) => {
                let mut c = lock(&lu.ctl);
                c.state = ObjState::Offline;
                c.failed = Some(e.message.clone());
                Err(e)
            }
        }
    }

    fn offline_lu_entry(&self, lu: &Arc<LuEntry>, admin: bool) -> Result<()> {
        {
            let mut c = lock(&lu.ctl);
            match c.state {
                ObjState::Offline => {
                    c.admin_offline |= admin;
                    return Ok(());
                }
                ObjState::Onlining | ObjState::Offlining => {
                    return Err(StmfError::busy(format!("LU {} is {}", lu.guid, c.state)))
                }
                ObjState::Online => c.state = ObjState::Offlining,
            }
        }
        lu.online.store(false, Release);
        self.refresh_maps();
        // Abort everything outstanding on the LU, from every initiator.
        let (tx, rx) = mpsc::channel();
        crate::tm::abort_lu_tasks(
            &self.all_sessions_with_dying(),
            Arc::as_ptr(lu),
            move |timed_out| {
                let _ = tx.send(timed_out);
            },
        );
        let limit = self.abort_timeout() + Duration::from_secs(2);
        match rx.recv_timeout(limit) {
            Ok(false) => {}
            Ok(true) | Err(_) => {
                let why = format!("LU {} did not complete the abort of its tasks within {} ms; it has been forced offline", lu.guid, self.abort_timeout().as_millis());
                self.force_offline_lu(lu, why.clone());
                return Err(StmfError::new(ErrorKind::Timeout, why));
            }
        }
        match self.ctl_lu(lu, CtlCmd::OFFLINE) {
            Ok(()) => {
                {
                    let mut c = lock(&lu.ctl);
                    c.state = ObjState::Offline;
                    c.admin_offline = admin;
                }
                if admin {
                    lock(&self.offline_lus).insert(lu.guid);
                }
                // SAFETY: the LU is registered (we are offlining it): its ops and ctx stay
                // valid until the core calls its release.
                unsafe {
                    (lu.ops.ctl)(
                        lu.ctx,
                        LuHandle(Arc::as_ptr(lu) as *const c_void),
                        CtlCmd::ACK_OFFLINE_COMPLETE,
                    )
                };
                Ok(())
            }
            Err(e) if e.kind == ErrorKind::Timeout => {
                self.force_offline_lu(lu, e.message.clone());
                Err(e)
            }
            Err(e) => {
                // COMSTAR's rule: a failed offline returns the LU to service.
                lock(&lu.ctl).state = ObjState::Online;
                lu.online.store(true, Release);
                self.refresh_maps();
                Err(e)
            }
        }
    }

    fn all_sessions_with_dying(&self) -> Vec<Arc<SessionCore>> {
        let mut v = self.all_sessions();
        v.extend(lock(&self.dying).iter().cloned());
        v
    }

    /// Forces an LU offline without asking its provider (stuck or failed).
    pub(crate) fn force_offline_lu(&self, lu: &Arc<LuEntry>, why: String) {
        {
            let mut c = lock(&lu.ctl);
            c.state = ObjState::Offline;
            c.failed = Some(why);
            c.pending = None;
        }
        lu.ctl_cv.notify_all();
        lu.online.store(false, Release);
        self.refresh_maps();
    }

    /// Forces a port offline without asking its provider.
    pub(crate) fn force_offline_lport(&self, lp: &LportEntry, why: String) {
        {
            let mut c = lock(&lp.ctl);
            c.state = ObjState::Offline;
            c.failed = Some(why);
            c.pending = None;
        }
        lp.ctl_cv.notify_all();
        lp.online.store(false, Release);
    }

    fn online_lport_entry(&self, lp: &Arc<LportEntry>) -> Result<()> {
        {
            let mut c = lock(&lp.ctl);
            match c.state {
                ObjState::Online => return Ok(()),
                ObjState::Onlining | ObjState::Offlining => {
                    return Err(StmfError::busy(format!(
                        "target {} is {}",
                        lp.name, c.state
                    )))
                }
                ObjState::Offline => c.state = ObjState::Onlining,
            }
        }
        match self.ctl_lport(lp, CtlCmd::ONLINE) {
            Ok(()) => {
                {
                    let mut c = lock(&lp.ctl);
                    c.state = ObjState::Online;
                    c.failed = None;
                    c.admin_offline = false;
                }
                lock(&self.offline_targets).remove(&lp.name);
                lp.online.store(true, Release);
                // SAFETY: the port is registered (we are onlining it): its ops and ctx stay
                // valid until the core calls its release.
                unsafe {
                    (lp.ops.ctl)(
                        lp.ctx,
                        LportHandle(Arc::as_ptr(lp) as *const c_void),
                        CtlCmd::ACK_ONLINE_COMPLETE,
                    )
                };
                Ok(())
            }
            Err(e) => {
                let mut c = lock(&lp.ctl);
                c.state = ObjState::Offline;
                c.failed = Some(e.message.clone());
                Err(e)
            }
        }
    }

    fn offline_lport_entry(&self, lp: &Arc<LportEntry>, admin: bool) -> Result<()> {
        {
            let mut c = lock(&lp.ctl);
            match c.state {
                ObjState::Offline => {
                    c.admin_offline |= admin;
                    return Ok(());
                }
                ObjState::Onlining | ObjState::Offlining => {
                    return Err(StmfError::busy(format!(
                        "target {} is {}",
                        lp.name, c.state
                    )))
                }
                ObjState::Online => c.state = ObjState::Offlining,
            }
        }
        lp.online.store(false, Release);
        // The port logs its sessions out (deregistering them) before it completes OFFLINE.
        let r = self.ctl_lport(lp, CtlCmd::OFFLINE);
        match r {
            Ok(()) => {
                {
                    let mut c = lock(&lp.ctl);
                    c.state = ObjState::Offline;
                    c.admin_offline = admin;
                }
                if admin {
                    lock(&self.offline_targets).insert(lp.name.clone());
                }
                // SAFETY: the port is registered (we are offlining it): its ops and ctx stay
                // valid until the core calls its release.
                unsafe {
                    (lp.ops.ctl)(
                        lp.ctx,
                        LportHandle(Arc::as_ptr(lp) as *const c_void),
                        CtlCmd::ACK_OFFLINE_COMPLETE,
                    )
                };
                Ok(())
            }
            Err(e) => {
                self.force_offline_lport(lp, e.message.clone());
                Err(e)
            }
        }
    }

    pub(crate) fn register_lu(
        &self,
        p: &Arc<ProviderEntry>,
        reg: &LuRegistration,
    ) -> std::result::Result<LuHandle, Status> {
        if p.kind != ProviderKind::LU || p.is_failed() {
            return Err(Status::BAD_STATE);
        }
        if reg.guid[0] >> 4 != 6 {
            tracing::warn!(provider = %p.name, "refused LU registration: GUID is not an NAA-6 identifier");
            return Err(Status::INVALID_ARG);
        }
        let guid = Guid(reg.guid);
        let lu = {
            let mut lus = write(&self.lus);
            if lus.contains_key(&guid) {
                return Err(Status::ALREADY);
            }
            let lu = Arc::new(LuEntry {
                guid,
                // SAFETY: the registration's strings are valid for this call (ABI
                // contract); invalid UTF-8 is replaced, never trusted.
                alias: unsafe { reg.alias.as_str() }.chars().take(255).collect(),
                provider: p.clone(),
                ctx: reg.ctx,
                ops: LuOps { ..reg.ops },
                ctl: Mutex::new(Ctl::new()),
                ctl_cv: Condvar::new(),
                online: AtomicBool::new(false),
                released: AtomicBool::new(false),
                retired: Default::default(),
            });
            lus.insert(guid, lu.clone());
            LUS.insert(&lu);
            lu
        };
        tracing::info!(provider = %p.name, "LU {guid} registered");
        let keep_offline = lock(&self.offline_lus).contains(&guid);
        if keep_offline {
            lock(&lu.ctl).admin_offline = true;
        } else if let Err(e) = self.online_lu_entry(&lu) {
            tracing::warn!("LU {guid} did not come online: {e}");
        }
        Ok(LuHandle(Arc::as_ptr(&lu) as *const c_void))
    }

    pub(crate) fn deregister_lu(&self, lu: &Arc<LuEntry>) -> Status {
        if lu.online.load(Acquire) && !lu.provider.is_failed() {
            if let Err(e) = self.offline_lu_entry(lu, false) {
                tracing::warn!("deregistering LU {}: {e}", lu.guid);
            }
        }
        write(&self.lus).remove(&lu.guid);
        LUS.remove(lu);
        self.refresh_maps();
        if !lu.released.swap(true, AcqRel) {
            // SAFETY: last call to the LU; the core references it no more.
            unsafe { (lu.ops.release)(lu.ctx) };
        }
        tracing::info!("LU {} deregistered", lu.guid);
        Status::SUCCESS
    }

    pub(crate) fn register_lport(
        &self,
        p: &Arc<ProviderEntry>,
        reg: &LportRegistration,
    ) -> std::result::Result<LportHandle, Status> {
        if p.kind != ProviderKind::PORT || p.is_failed() {
            return Err(Status::BAD_STATE);
        }
        // SAFETY: the registration's strings are valid for this call (ABI contract);
        // invalid UTF-8 is replaced, never trusted.
        let (name, alias, protocol) = unsafe {
            (
                reg.name.as_str().into_owned(),
                reg.alias.as_str().into_owned(),
                reg.protocol.as_str().into_owned(),
            )
        };
        if name.is_empty() || name.len() > 223 {
            return Err(Status::INVALID_ARG);
        }
        let lp = {
            let mut lps = write(&self.lports);
            if lps.iter().any(|l| l.name == name) {
                return Err(Status::ALREADY);
            }
            let lp = Arc::new(LportEntry {
                name: name.clone(),
                alias,
                protocol,
                relative_id: self.next_rel_port.fetch_add(1, Relaxed),
                provider: p.clone(),
                ctx: reg.ctx,
                ops: PortOps { ..reg.ops },
                ctl: Mutex::new(Ctl::new()),
                ctl_cv: Condvar::new(),
                online: AtomicBool::new(false),
                released: AtomicBool::new(false),
                sessions: Mutex::new(Vec::new()),
                retired: Default::default(),
            });
            lps.push(lp.clone());
            LPORTS.insert(&lp);
            LPORTS_ALL.add(&lp);
            lp
        };
        tracing::info!(provider = %p.name, "target {name} registered");
        if lock(&self.offline_targets).contains(&name) {
            lock(&lp.ctl).admin_offline = true;
        } else if let Err(e) = self.online_lport_entry(&lp) {
            tracing::warn!("target {name} did not come online: {e}");
        }
        Ok(LportHandle(Arc::as_ptr(&lp) as *const c_void))
    }

    pub(crate) fn deregister_lport(&self, lp: &Arc<LportEntry>) -> Status {
        if !lock(&lp.sessions).is_empty() {
            return Status::BUSY;
        }
        if lp.online.load(Acquire) && !lp.provider.is_failed() {
            if let Err(e) = self.offline_lport_entry(lp, false) {
                tracing::warn!("deregistering target {}: {e}", lp.name);
            }
        }
        write(&self.lports).retain(|l| !Arc::ptr_eq(l, lp));
        LPORTS.remove(lp);
        if !lp.released.swap(true, AcqRel) {
            // SAFETY: the swap makes this the one and last call to the port, with the ctx
            // it registered; nothing calls it after.
            unsafe { (lp.ops.release)(lp.ctx) };
        }
        tracing::info!("target {} deregistered", lp.name);
        Status::SUCCESS
    }

    pub(crate) fn register_session(
        &self,
        lp: &Arc<LportEntry>,
        reg: &SessionRegistration,
    ) -> std::result::Result<SessionHandle, Status> {
        if !lp.online.load(Acquire) {
            return Err(Status::BAD_STATE);
        }
        // SAFETY: the registration's strings are valid for this call (ABI contract);
        // invalid UTF-8 is replaced, never trusted.
        let (ini, alias, tid) = unsafe {
            (
                reg.initiator.as_str().into_owned(),
                reg.alias.as_str().into_owned(),
                reg.transport_id.as_str().into_owned(),
            )
        };
        if ini.is_empty() || reg.flags & !session_flags::ALL != 0 {
            return Err(Status::INVALID_ARG);
        }
        let id = NEXT_SESSION_ID.fetch_add(1, Relaxed);
        let mut s = SessionCore::new(id, lp.clone(), ini, alias, tid);
        s.name_unproven = reg.flags & session_flags::NAME_UNPROVEN != 0;
        let s = Arc::new(s);
        {
            let views = lock(&self.views);
            let lus = read(&self.lus);
            *write(&s.map) = self.build_map(&views, &lus, &s);
            lock(&lp.sessions).push(s.clone());
        }
        tracing::debug!(
            "session {id} of {} (transport id {:?}) registered on {}",
            s.initiator,
            s.transport_id,
            lp.name
        );
        Ok(SessionHandle(Arc::as_ptr(&s) as *const c_void))
    }

    /// I_T nexus loss: abort the session's tasks, tell the LUs, retire its counters.
    fn end_session(&self, s: Arc<SessionCore>) {
        s.closing.store(true, Release);
        // Into the dying list first: the aborts below schedule their deadlines against the
        // session, which they find there (the reaper drops it once no task is in use).
        lock(&self.dying).push(s.clone());
        crate::tm::abort_session_tasks(&s);
        let map = read(&s.map).clone();
        for e in &map.entries {
            if let Some(lu) = &e.lu {
                lu.retired.absorb(&e.stats);
                if !lu.released.load(Acquire) {
                    // SAFETY: not released, so the LU's ops and ctx are valid.
                    unsafe {
                        (lu.ops.event)(
                            lu.ctx,
                            LuEvent::ITL_REMOVED,
                            SessionHandle(Arc::as_ptr(&s) as *const c_void),
                        )
                    };
                }
            }
        }
        for st in lock(&s.itl_stats).values() {
            s.lport.retired.absorb(st);
        }
        s.lport.retired.absorb(&s.core_stats);
    }

    fn lu_stats(&self, lu: &LuEntry) -> StatsInfo {
        let mut out = StatsInfo::default();
        lu.retired.add_to(&mut out);
        for s in self.all_sessions() {
            if let Some(st) = lock(&s.itl_stats).get(&lu.guid) {
                st.add_to(&mut out);
            }
        }
        out
    }

    fn lport_stats(&self, lp: &LportEntry) -> StatsInfo {
        let mut out = StatsInfo::default();
        lp.retired.add_to(&mut out);
        for s in lock(&lp.sessions).iter() {
            for st in lock(&s.itl_stats).values() {
                st.add_to(&mut out);
            }
            s.core_stats.add_to(&mut out);
        }
        out
    }

    fn provider_info(&self, p: &ProviderEntry) -> ProviderInfo {
        let objects = if p.kind == ProviderKind::LU {
            read(&self.lus)
                .values()
                .filter(|l| std::ptr::eq(Arc::as_ptr(&l.provider), p))
                .count()
        } else {
            read(&self.lports)
                .iter()
                .filter(|l| std::ptr::eq(Arc::as_ptr(&l.provider), p))
                .count()
        };
        ProviderInfo {
            name: p.name.clone(),
            kind: p.kind.name().to_string(),
            version: p.version.clone(),
            description: p.description.clone(),
            path: p.path.clone(),
            abi_version: p.root.abi_version,
            objects,
            failed: lock(&p.failed).clone(),
        }
    }

    fn find_provider(&self, name: &str) -> Result<Arc<ProviderEntry>> {
        lock(&self.providers)
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| StmfError::not_found(format!("provider {name} is not loaded")))
    }

    fn install_provider(
        self: &Arc<Self>,
        root: &'static ProviderRoot,
        lib: Option<libloading::Library>,
        path: String,
        config: &str,
    ) -> Result<ProviderInfo> {
        // SAFETY: checked root; static strings.
        let (name, version, description) = unsafe {
            (
                root.name.as_str().into_owned(),
                root.version.as_str().into_owned(),
                root.description.as_str().into_owned(),
            )
        };
        let entry = {
            let mut ps = lock(&self.providers);
            if let Some(p) = ps.iter().find(|p| p.name == name) {
                return Err(StmfError::exists(format!(
                    "{path}: provider {name} is already loaded (from {})",
                    p.path
                )));
            }
            let entry = Arc::new(ProviderEntry {
                name: name.clone(),
                kind: root.kind,
                version,
                description,
                path: path.clone(),
                root,
                instance: AtomicPtr::new(std::ptr::null_mut()),
                lib: Mutex::new(lib),
                failed: Mutex::new(None),
                core: Arc::downgrade(self),
            });
            ps.push(entry.clone());
            PROVIDERS.insert(&entry);
            entry
        };
        let mut err = String::new();
        let mut inst: *mut c_void = std::ptr::null_mut();
        // SAFETY: the provider's create entry with the host table; out-params valid.
        let st = unsafe {
            (root.create)(
                &HOST_API,
                ProviderToken(Arc::as_ptr(&entry) as *const c_void),
                RStr::new(config),
                &mut inst,
                sink_string(&mut err),
            )
        };
        if !st.is_ok() || inst.is_null() {
            self.remove_provider_objects(&entry);
            lock(&self.providers).retain(|p| !Arc::ptr_eq(p, &entry));
            PROVIDERS.remove(&entry);
            let why = if err.is_empty() { st.to_string() } else { err };
            return Err(StmfError::new(
                ErrorKind::ProviderLoad,
                format!("{path}: provider {name} refused to start: {why}"),
            ));
        }
        entry.instance.store(inst, Release);
        tracing::info!("provider {name} {} loaded from {path}", entry.version);
        Ok(self.provider_info(&entry))
    }

    /// Deregisters whatever a provider left registered.
    fn remove_provider_objects(&self, p: &Arc<ProviderEntry>) {
        let lus: Vec<_> = read(&self.lus)
            .values()
            .filter(|l| Arc::ptr_eq(&l.provider, p))
            .cloned()
            .collect();
        for l in lus {
            self.deregister_lu(&l);
        }
        let lps: Vec<_> = read(&self.lports)
            .iter()
            .filter(|l| Arc::ptr_eq(&l.provider, p))
            .cloned()
            .collect();
        for l in lps {
            let sessions: Vec<_> = std::mem::take(&mut *lock(&l.sessions));
            for s in sessions {
                self.end_session(s);
            }
            self.deregister_lport(&l);
        }
    }
}

/// The rstmf core. Cheap to clone (a handle to shared state).
#[derive(Clone)]
pub struct Stmf {
    inner: Arc<CoreInner>,
}

impl Stmf {
    /// Creates a core with `settings` and starts its service thread.
    pub fn new(settings: Settings) -> Stmf {
        let svc = Svc::new();
        let inner = Arc::new(CoreInner {
            settings: Mutex::new(settings),
            providers: Mutex::new(Vec::new()),
            lus: RwLock::new(BTreeMap::new()),
            lports: RwLock::new(Vec::new()),
            views: Mutex::new(ViewStore::default()),
            dying: Mutex::new(Vec::new()),
            quarantined: Mutex::new(Vec::new()),
            offline_lus: Mutex::new(HashSet::new()),
            offline_targets: Mutex::new(HashSet::new()),
            initialized: AtomicBool::new(false),
            next_rel_port: AtomicU16::new(1),
            svc: svc.clone(),
        });
        let weak = Arc::downgrade(&inner);
        let spawned = std::thread::Builder::new()
            .name("stmf-svc".into())
            .spawn(move || svc.run(weak));
        if let Err(e) = spawned {
            tracing::error!(
                "cannot start the stmf service thread: {e}; abort timeouts will not fire"
            );
        }
        Stmf { inner }
    }

    /// The core's settings.
    pub fn settings(&self) -> Settings {
        lock(&self.inner.settings).clone()
    }

    /// Loads a provider library, checks its ABI and creates it with `config` (JSON, may be "").
    pub fn load_provider(&self, path: &Path, config: &str) -> Result<ProviderInfo> {
        let (lib, root) = crate::loader::open(path)?;
        self.inner
            .install_provider(root, Some(lib), path.display().to_string(), config)
    }

    /// Registers a provider linked into this process (tests, benchmarks), with the same checks.
    pub fn register_builtin_provider(
        &self,
        root: &'static ProviderRoot,
        config: &str,
    ) -> Result<ProviderInfo> {
        // SAFETY: a 'static root of this process.
        let root = unsafe { crate::loader::check_root(root, "builtin")? };
        // SAFETY: the root is 'static data of this process, its name a static string.
        let name = unsafe { root.name.as_str().into_owned() };
        self.inner
            .install_provider(root, None, format!("builtin:{name}"), config)
    }

    /// Destroys a provider and unloads its library; refused while it has objects online.
    pub fn unload_provider(&self, name: &str) -> Result<()> {
        let p = self.inner.find_provider(name)?;
        if !p.is_failed() {
            let lus = read(&self.inner.lus)
                .values()
                .filter(|l| Arc::ptr_eq(&l.provider, &p) && l.online.load(Acquire))
                .count();
            let lps = read(&self.inner.lports)
                .iter()
                .filter(|l| Arc::ptr_eq(&l.provider, &p) && l.online.load(Acquire))
                .count();
            if lus + lps > 0 {
                return Err(StmfError::busy(format!("provider {name} has {lus} LU(s) and {lps} target(s) online; take them offline first")));
            }
        }
        self.destroy_provider(&p);
        Ok(())
    }

    fn destroy_provider(&self, p: &Arc<ProviderEntry>) {
        let inst = p.instance.swap(std::ptr::null_mut(), AcqRel);
        if !inst.is_null() {
            // SAFETY: the provider's destroy entry with its own instance (once: swapped out).
            unsafe { (p.root.destroy)(inst) };
        }
        self.inner.remove_provider_objects(p);
        lock(&self.inner.providers).retain(|x| !Arc::ptr_eq(x, p));
        PROVIDERS.remove(p);
        drop(lock(&p.lib).take());
        tracing::info!("provider {} unloaded", p.name);
    }

    /// Loaded providers.
    pub fn list_providers(&self) -> Vec<ProviderInfo> {
        let ps = lock(&self.inner.providers).clone();
        ps.iter().map(|p| self.inner.provider_info(p)).collect()
    }

    fn call_provider(
        &self,
        name: &str,
        f: impl FnOnce(&ProviderEntry, *mut c_void, *mut c_void) -> Status,
    ) -> Result<String> {
        let p = self.inner.find_provider(name)?;
        if let Some(why) = lock(&p.failed).clone() {
            return Err(StmfError::new(ErrorKind::Provider, why));
        }
        let inst = p.instance.load(Acquire);
        let mut out = String::new();
        let st = f(&p, inst, sink_string(&mut out));
        match st {
            Status::SUCCESS => Ok(out),
            Status::PANICKED => {
                fail_provider(&p, "panicked in a management request");
                Err(StmfError::new(
                    ErrorKind::Provider,
                    format!("provider {name} panicked"),
                ))
            }
            _ => Err(StmfError::new(
                ErrorKind::Provider,
                if out.is_empty() {
                    format!("provider {name}: {st}")
                } else {
                    format!("provider {name}: {out}")
                },
            )),
        }
    }

    /// Sends a management request (JSON) to a provider and returns its JSON reply.
    pub fn provider_control(&self, name: &str, request_json: &str) -> Result<String> {
        // SAFETY: the provider's control entry with its instance; sink valid for the call.
        let r = self.call_provider(name, |p, inst, sink| unsafe {
            (p.root.control)(inst, RStr::new(request_json), sink)
        });
        if r.is_ok() {
            self.inner.refresh_maps();
        }
        r
    }

    /// The provider's configuration to persist.
    pub fn provider_config(&self, name: &str) -> Result<String> {
        // SAFETY: as in provider_control.
        self.call_provider(name, |p, inst, sink| unsafe {
            (p.root.save_config)(inst, sink)
        })
    }

    /// Operational summary.
    pub fn state(&self) -> StateInfo {
        StateInfo {
            operational: "online".into(),
            config: if self.inner.initialized.load(Acquire) {
                "initialized"
            } else {
                "uninitialized"
            }
            .into(),
            providers: lock(&self.inner.providers).len(),
            lus: read(&self.inner.lus).len(),
            targets: read(&self.inner.lports).len(),
            sessions: self.inner.all_sessions().len(),
            version: env!("CARGO_PKG_VERSION").into(),
            abi_version: ABI_VERSION,
        }
    }

    /// Marks the saved configuration as restored.
    pub fn set_config_initialized(&self) {
        self.inner.initialized.store(true, Release);
    }

    fn views_op<T>(&self, f: impl FnOnce(&mut ViewStore) -> Result<T>) -> Result<T> {
        let r = f(&mut lock(&self.inner.views));
        if r.is_ok() {
            self.inner.refresh_maps();
        }
        r
    }

    /// Creates a host group.
    pub fn create_hg(&self, name: &str) -> Result<()> {
        self.views_op(|v| v.create_hg(name))
    }
    /// Deletes a host group.
    pub fn delete_hg(&self, name: &str) -> Result<()> {
        self.views_op(|v| v.delete_hg(name))
    }
    /// Adds an initiator to a host group.
    pub fn add_hg_member(&self, group: &str, member: &str) -> Result<()> {
        self.views_op(|v| v.add_hg_member(group, member))
    }
    /// Removes an initiator from a host group.
    pub fn remove_hg_member(&self, group: &str, member: &str) -> Result<()> {
        self.views_op(|v| v.remove_hg_member(group, member))
    }
    /// Lists host groups.
    pub fn list_hg(&self) -> Vec<GroupInfo> {
        lock(&self.inner.views).list_hg()
    }
    /// Creates a target group.
    pub fn create_tg(&self, name: &str) -> Result<()> {
        self.views_op(|v| v.create_tg(name))
    }
    /// Deletes a target group.
    pub fn delete_tg(&self, name: &str) -> Result<()> {
        self.views_op(|v| v.delete_tg(name))
    }
    /// Adds a target to a target group.
    pub fn add_tg_member(&self, group: &str, member: &str) -> Result<()> {
        self.views_op(|v| v.add_tg_member(group, member))
    }
    /// Removes a target from a target group.
    pub fn remove_tg_member(&self, group: &str, member: &str) -> Result<()> {
        self.views_op(|v| v.remove_tg_member(group, member))
    }
    /// Lists target groups.
    pub fn list_tg(&self) -> Vec<GroupInfo> {
        lock(&self.inner.views).list_tg()
    }

    /// Adds a view entry (LUN auto-assigned when `None`).
    pub fn add_view(
        &self,
        guid: Guid,
        host_group: Option<&str>,
        target_group: Option<&str>,
        lun: Option<u16>,
    ) -> Result<ViewEntry> {
        self.views_op(|v| v.add_view(guid, host_group, target_group, lun))
    }
    /// Removes one view entry.
    pub fn remove_view(&self, guid: Guid, index: u32) -> Result<()> {
        self.views_op(|v| v.remove_view(guid, index))
    }
    /// Removes every view entry of an LU.
    pub fn remove_all_views(&self, guid: Guid) -> Result<usize> {
        self.views_op(|v| Ok(v.remove_all_views(guid)))
    }
    /// The view entries of an LU.
    pub fn list_view(&self, guid: Guid) -> Result<Vec<ViewEntry>> {
        let v = lock(&self.inner.views).list_view(guid);
        if v.is_empty() && !read(&self.inner.lus).contains_key(&guid) {
            return Err(StmfError::not_found(format!(
                "LU {guid} is not registered and has no view entries"
            )));
        }
        Ok(v)
    }

    fn find_lu(&self, guid: Guid) -> Result<Arc<LuEntry>> {
        read(&self.inner.lus)
            .get(&guid)
            .cloned()
            .ok_or_else(|| StmfError::not_found(format!("LU {guid} is not registered")))
    }

    fn find_lport(&self, name: &str) -> Result<Arc<LportEntry>> {
        read(&self.inner.lports)
            .iter()
            .find(|l| l.name == name)
            .cloned()
            .ok_or_else(|| StmfError::not_found(format!("target {name} is not registered")))
    }

    /// Registered LUs.
    pub fn list_lu(&self) -> Vec<LuInfo> {
        let lus: Vec<_> = read(&self.inner.lus).values().cloned().collect();
        lus.iter()
            .map(|l| {
                let mut details = String::new();
                if !l.released.load(Acquire) && !l.provider.is_failed() {
                    // SAFETY: the LU's info entry; sink valid for the call.
                    if unsafe { (l.ops.info)(l.ctx, sink_string(&mut details)) } == Status::PANICKED
                    {
                        fail_provider(&l.provider, "panicked in info");
                    }
                }
                let c = lock(&l.ctl);
                LuInfo {
                    guid: l.guid,
                    alias: l.alias.clone(),
                    provider: l.provider.name.clone(),
                    state: c.state,
                    failed: c.failed.clone(),
                    views: lock(&self.inner.views).view_count(l.guid),
                    stats: self.inner.lu_stats(l),
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                }
            })
            .collect()
    }

    /// Brings an LU online.
    pub fn online_lu(&self, guid: Guid) -> Result<()> {
        let lu = self.find_lu(guid)?;
        self.inner.online_lu_entry(&lu)
    }

    /// Takes an LU offline: aborts its tasks (a provider that does not let go within the abort
    /// timeout is forced offline and this returns a Timeout error), then asks the provider.
    pub fn offline_lu(&self, guid: Guid) -> Result<()> {
        let lu = self.find_lu(guid)?;
        self.inner.offline_lu_entry(&lu, true)
    }

    /// Registered local ports.
    pub fn list_targets(&self) -> Vec<LportInfo> {
        let lps: Vec<_> = read(&self.inner.lports).clone();
        lps.iter()
            .map(|l| {
                let stats = self.inner.lport_stats(l);
                let sessions = lock(&l.sessions)
                    .iter()
                    .map(|s| SessionInfo {
                        id: s.id,
                        initiator: s.initiator.clone(),
                        alias: s.alias.clone(),
                        name_unproven: s.name_unproven,
                        luns: read(&s.map)
                            .inventory()
                            .into_iter()
                            .map(|(l, _)| l)
                            .collect(),
                    })
                    .collect();
                let c = lock(&l.ctl);
                LportInfo {
                    name: l.name.clone(),
                    alias: l.alias.clone(),
                    protocol: l.protocol.clone(),
                    provider: l.provider.name.clone(),
                    relative_id: l.relative_id,
                    state: c.state,
                    failed: c.failed.clone(),
                    sessions,
                    stats,
                }
            })
            .collect()
    }

    /// Brings a target port online.
    pub fn online_target(&self, name: &str) -> Result<()> {
        let lp = self.find_lport(name)?;
        self.inner.online_lport_entry(&lp)
    }

    /// Takes a target port offline.
    pub fn offline_target(&self, name: &str) -> Result<()> {
        let lp = self.find_lport(name)?;
        self.inner.offline_lport_entry(&lp, true)
    }

    /// The core's configuration to persist.
    pub fn export_config(&self) -> CoreConfig {
        let mut cfg = lock(&self.inner.views).export();
        let mut lus: Vec<Guid> = lock(&self.inner.offline_lus).iter().copied().collect();
        lus.sort();
        let mut tgts: Vec<String> = lock(&self.inner.offline_targets).iter().cloned().collect();
        tgts.sort();
        cfg.offline_lus = lus;
        cfg.offline_targets = tgts;
        cfg
    }

    /// Restores groups, views and admin-set states.
    pub fn import_config(&self, cfg: &CoreConfig) -> Result<()> {
        let store = ViewStore::import(cfg)?;
        *lock(&self.inner.views) = store;
        lock(&self.inner.offline_lus).extend(cfg.offline_lus.iter().copied());
        lock(&self.inner.offline_targets).extend(cfg.offline_targets.iter().cloned());
        for g in &cfg.offline_lus {
            if let Ok(lu) = self.find_lu(*g) {
                if let Err(e) = self.inner.offline_lu_entry(&lu, true) {
                    tracing::warn!("restoring offline state of LU {g}: {e}");
                }
            }
        }
        for t in &cfg.offline_targets {
            if let Ok(lp) = self.find_lport(t) {
                if let Err(e) = self.inner.offline_lport_entry(&lp, true) {
                    tracing::warn!("restoring offline state of target {t}: {e}");
                }
            }
        }
        self.inner.refresh_maps();
        Ok(())
    }

    /// Clean shutdown: targets offline first (no new commands), then LUs (flushed by their
    /// providers on OFFLINE), then providers destroyed in reverse load order.
    pub fn shutdown(&self) {
        let lps: Vec<_> = read(&self.inner.lports).clone();
        for lp in &lps {
            if lp.online.load(Acquire) {
                if let Err(e) = self.inner.offline_lport_entry(lp, false) {
                    tracing::warn!("shutdown: {e}");
                }
            }
        }
        let lus: Vec<_> = read(&self.inner.lus).values().cloned().collect();
        for lu in &lus {
            if lu.online.load(Acquire) {
                if let Err(e) = self.inner.offline_lu_entry(lu, false) {
                    tracing::warn!("shutdown: {e}");
                }
            }
        }
        let ps: Vec<_> = lock(&self.inner.providers).clone();
        for p in ps.iter().rev() {
            self.destroy_provider(p);
        }
        self.inner.svc.stop();
    }
}
