//! A target node: one stmf local port. The [`Port`] entry points find the connection of
//! a task in its `port_private` and hand over to it.

use super::conn::Conn;
use super::session::Session;
use super::Runtime;
use crate::config::TargetState;
use crate::names::IscsiName;
use plugins_sdk::{AbortOutcome, CtlCmd, DataBuf, Host, LportHandle, Port, Status, TaskHandle};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

const OFFLINE: u8 = 0;
const ONLINE: u8 = 1;
const REMOVED: u8 = 2;

/// How long sessions get to log out after an Async logout request before they are
/// dropped (the Async Message asks for it within 2 s).
pub const LOGOUT_GRACE: Duration = Duration::from_secs(3);

/// A target node's run-time state.
pub struct Target {
    /// Its name.
    pub name: IscsiName,
    rt: Weak<Runtime>,
    /// The stmf local port.
    pub lport: OnceLock<LportHandle>,
    state: AtomicU8,
    sessions: Mutex<Vec<Arc<Session>>>,
}

impl Target {
    /// A target not yet registered.
    pub fn new(name: IscsiName, rt: Weak<Runtime>) -> Self {
        Self {
            name,
            rt,
            lport: OnceLock::new(),
            state: AtomicU8::new(OFFLINE),
            sessions: Mutex::new(Vec::new()),
        }
    }

    /// Run-time state for logins.
    pub fn state(&self) -> TargetState {
        match self.state.load(Ordering::Acquire) {
            ONLINE => TargetState::Online,
            REMOVED => TargetState::Removed,
            _ => TargetState::Offline,
        }
    }

    /// `"online"`, `"offline"` or `"removed"`.
    pub fn state_name(&self) -> &'static str {
        match self.state() {
            TargetState::Online => "online",
            TargetState::Offline => "offline",
            TargetState::Removed => "removed",
        }
    }

    /// Marks the target as being deleted (logins get 0x0204).
    pub fn set_removed(&self) {
        self.state.store(REMOVED, Ordering::Release);
    }

    /// Records a new session.
    pub fn add_session(&self, s: Arc<Session>) {
        lock(&self.sessions).push(s);
    }

    /// Forgets a session.
    pub fn remove_session(&self, s: &Session) {
        lock(&self.sessions).retain(|x| !std::ptr::eq(Arc::as_ptr(x), s));
    }

    /// The sessions (a copy).
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        lock(&self.sessions).clone()
    }

    /// Asks every session to log out (Async Message), waits up to [`LOGOUT_GRACE`], then
    /// drops what is left. Blocks: run it on a thread of its own.
    pub fn logout_all(&self, rt: &Arc<Runtime>) {
        let sessions = self.sessions();
        for s in &sessions {
            for c in s.conns() {
                c.request_logout();
            }
        }
        let deadline = Instant::now() + LOGOUT_GRACE;
        while !self.sessions().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for s in self.sessions() {
            rt.close_session(&s, "target going offline");
        }
    }
}

/// The port side of a target: what the core calls.
pub struct TargetPort {
    /// The target.
    pub target: Arc<Target>,
}

impl Port for TargetPort {
    fn xfer_data(&self, host: &Host, task: &TaskHandle, buf: DataBuf, _flags: u32) {
        match Conn::of_task(task) {
            Some(c) => c.xfer_data(task, buf),
            None => host.data_xfer_done(task, buf, Status::BAD_STATE),
        }
    }

    fn send_status(&self, host: &Host, task: &TaskHandle, _flags: u32) {
        match Conn::of_task(task) {
            Some(c) => c.send_status(task),
            None => host.send_status_done(task, Status::BAD_STATE),
        }
    }

    fn task_free(&self, task: &TaskHandle) {
        Conn::task_free(task);
    }

    fn abort(&self, _host: &Host, task: &TaskHandle) -> AbortOutcome {
        match Conn::of_task(task) {
            Some(c) => c.abort(task),
            None => AbortOutcome::Done,
        }
    }

    fn ctl(&self, host: &Host, lport: LportHandle, cmd: CtlCmd) {
        let t = &self.target;
        if cmd == CtlCmd::ONLINE {
            let _ = t
                .state
                .compare_exchange(OFFLINE, ONLINE, Ordering::AcqRel, Ordering::Acquire);
            tracing::info!(target = %t.name, "iSCSI target online");
            host.lport_ctl_complete(lport, cmd, Status::SUCCESS);
        } else if cmd == CtlCmd::OFFLINE {
            let _ = t
                .state
                .compare_exchange(ONLINE, OFFLINE, Ordering::AcqRel, Ordering::Acquire);
            let (host, t) = (*host, Arc::clone(t));
            let rt = t.rt.upgrade();
            // Logging initiators out takes seconds: never on the caller's thread.
            let spawned = std::thread::Builder::new()
                .name("iscsit-offline".into())
                .spawn(move || {
                    if let Some(rt) = rt {
                        t.logout_all(&rt);
                    }
                    tracing::info!(target = %t.name, "iSCSI target offline");
                    host.lport_ctl_complete(lport, cmd, Status::SUCCESS);
                });
            if let Err(e) = spawned {
                tracing::error!("iscsit: cannot start the offline thread: {e}");
            }
        }
    }

    fn dbuf_alloc(&self, task: &TaskHandle, size: u32, min_size: u32) -> Result<DataBuf, u32> {
        match Conn::of_task(task) {
            Some(c) => c.dbuf_alloc(size, min_size),
            None => Err(0),
        }
    }

    fn dbuf_free(&self, buf: DataBuf) {
        super::pool::BufPool::free(buf);
    }

    fn info(&self) -> String {
        let t = &self.target;
        serde_json::json!({
            "name": t.name.as_str(),
            "state": t.state_name(),
            "sessions": t.sessions().len(),
        })
        .to_string()
    }
}
