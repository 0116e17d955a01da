//! The provider's run time: targets (local ports), portals (listeners), sessions and the
//! event loops that serve their connections.
//!
//! - `evloop`: the `mio` threads (accept, read, timers);
//! - `conn`: one connection: login, full feature phase, the port entry points;
//! - `session`: a session, its connections and its CmdSN window;
//! - `target`: a target node and its `Port` implementation;
//! - `pool`: the per-connection data buffer store and the buffer budgets;
//! - `admission`: connection caps (in login, per source, overall);
//! - `deferred`: calls into the core made once no lock is held.

pub mod admission;
pub mod conn;
pub mod deferred;
pub mod evloop;
pub mod pool;
pub mod session;
pub mod target;

use crate::auth::{AuthStats, AuthThrottle, ThrottleConfig};
use crate::config::{IscsitConfig, TargetConfig, DEFAULT_TPG_TAG};
use crate::limits::{physical_memory, Limits};
use crate::login::{default_local_config, SessionKey};
use crate::names::IscsiName;
use admission::Admission;
use conn::{Conn, Gone, Keepalive};
use deferred::Frame;
use evloop::{Loops, Msg};
use idm::keys::{Digest, LocalConfig};
use plugins_sdk::Host;
use pool::Budget;
use session::Session;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;
use target::Target;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A listening portal.
struct Listener {
    id: u64,
    bound: SocketAddr,
}

/// Everything the provider runs.
pub struct Runtime {
    /// The core's services.
    pub host: Host,
    config: RwLock<IscsitConfig>,
    targets: Mutex<HashMap<IscsiName, Arc<Target>>>,
    sessions: Mutex<HashMap<u16, Arc<Session>>>,
    next_tsih: Mutex<u16>,
    listeners: Mutex<Vec<Listener>>,
    loops: OnceLock<Loops>,
    next_id: AtomicU64,
    /// Data buffer memory of every connection together (`buffer_memory`).
    pub buffers: Arc<Budget>,
    /// Connection counts and refusals.
    pub admission: Arc<Admission>,
    /// Failed-authentication accounting and throttling (all portals).
    auth: Mutex<AuthThrottle>,
}

impl Runtime {
    /// Starts the event loops (no portals yet).
    pub fn start(host: Host, config: IscsitConfig) -> io::Result<Arc<Runtime>> {
        let budget = config.defaults.limits.buffer_budget(physical_memory());
        let rt = Arc::new(Runtime {
            host,
            config: RwLock::new(config),
            targets: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            next_tsih: Mutex::new(1),
            listeners: Mutex::new(Vec::new()),
            loops: OnceLock::new(),
            next_id: AtomicU64::new(1),
            buffers: Arc::new(Budget::new(budget)),
            admission: Arc::new(Admission::default()),
            auth: Mutex::new(AuthThrottle::new()),
        });
        let n = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let loops = Loops::start(n, Arc::downgrade(&rt))?;
        let _ = rt.loops.set(loops);
        Ok(rt)
    }

    /// Stops the loops (connections are closed).
    pub fn stop(&self) {
        if let Some(l) = self.loops.get() {
            l.stop();
        }
    }

    fn loops(&self) -> Option<&Loops> {
        self.loops.get()
    }

    // ---- configuration ------------------------------------------------------------

    /// The configuration (read).
    pub fn config_read(&self) -> RwLockReadGuard<'_, IscsitConfig> {
        self.config.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the configuration.
    pub fn set_config(&self, cfg: IscsitConfig) {
        self.buffers
            .set_limit(cfg.defaults.limits.buffer_budget(physical_memory()));
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = cfg;
    }

    /// The resource limits in force (connections cache them and refresh on ticks).
    pub fn limits(&self) -> Limits {
        self.config_read().defaults.limits
    }

    /// The operational key policy of a login to `target` (`None`: discovery): its digest
    /// policy from the configuration.
    pub fn local_config(&self, target: Option<&IscsiName>) -> LocalConfig {
        Self::local_config_of(&self.config_read(), target)
    }

    /// [`Runtime::local_config`] from `cfg` (for callers holding the configuration).
    pub fn local_config_of(cfg: &IscsitConfig, target: Option<&IscsiName>) -> LocalConfig {
        let required = {
            let t = target.and_then(|n| cfg.target(n));
            cfg.digests_of(t).required()
        };
        const CRC_ONLY: &[Digest] = &[Digest::Crc32c];
        let mut l = LocalConfig {
            max_connections: 8,
            initial_r2t: false,
            immediate_data: true,
            first_burst_length: 262_144,
            max_outstanding_r2t: 4,
            ..default_local_config()
        };
        if required.0 {
            l.header_digests = CRC_ONLY;
        }
        if required.1 {
            l.data_digests = CRC_ONLY;
        }
        l
    }

    /// The TargetName of a login whose first request carries `data`.
    pub fn login_target(data: &[u8]) -> Option<IscsiName> {
        idm::text::parse(data).ok().and_then(|pairs| {
            pairs
                .iter()
                .find(|(k, _)| *k == "TargetName")
                .and_then(|(_, v)| IscsiName::parse_lenient(v).ok())
        })
    }

    /// The throttle's knobs now.
    pub fn throttle_config(&self) -> ThrottleConfig {
        self.throttle_config_of(&self.config_read())
    }

    /// The throttle's knobs of `cfg`.
    pub fn throttle_config_of(&self, cfg: &IscsitConfig) -> ThrottleConfig {
        ThrottleConfig::from_limits(&cfg.defaults.limits)
    }

    /// The failed-authentication table (see [`crate::auth`]).
    pub fn auth_throttle(&self) -> MutexGuard<'_, AuthThrottle> {
        lock(&self.auth)
    }

    /// `list-auth-stats`.
    pub fn auth_stats(&self) -> AuthStats {
        let cfg = self.throttle_config();
        self.auth_throttle().stats(&cfg, std::time::Instant::now())
    }

    /// Keepalive settings of a connection to `target` (`None`: discovery); `None` when
    /// keepalive is off.
    pub fn keepalive(&self, target: Option<&IscsiName>) -> Option<Keepalive> {
        let cfg = self.config_read();
        let k = cfg.keepalive_of(target.and_then(|n| cfg.target(n)));
        (k.interval_ms > 0).then(|| Keepalive {
            interval: Duration::from_millis(k.interval_ms),
            timeout: Duration::from_millis(k.timeout_ms),
        })
    }

    /// The portal group tag of a connection on `local` for a login to `target` (`None`:
    /// discovery): the group of the target's that has the portal, 0 when none has it.
    pub fn portal_group_for(&self, local: SocketAddr, target: Option<&IscsiName>) -> u16 {
        Self::portal_group_of(&self.config_read(), local, target)
    }

    /// [`Runtime::portal_group_for`] from `cfg` (for callers holding the configuration).
    pub fn portal_group_of(
        cfg: &IscsitConfig,
        local: SocketAddr,
        target: Option<&IscsiName>,
    ) -> u16 {
        let serves = |tag: u16| {
            cfg.portals_of(tag).iter().any(|p| {
                p.addr().port() == local.port() && (p.is_wildcard() || same_ip(p.addr(), local))
            })
        };
        match target.and_then(|n| cfg.target(n)) {
            Some(t) if t.tpg_tags.is_empty() => {
                if serves(DEFAULT_TPG_TAG) {
                    DEFAULT_TPG_TAG
                } else {
                    0
                }
            }
            Some(t) => t
                .tpg_tags
                .iter()
                .copied()
                .find(|&tag| serves(tag))
                .unwrap_or(0),
            None => cfg
                .tpgs
                .iter()
                .map(|g| g.tag)
                .find(|&tag| serves(tag))
                .unwrap_or(DEFAULT_TPG_TAG),
        }
    }

    // ---- targets --------------------------------------------------------------------

    /// The run-time target `name`.
    pub fn target(&self, name: &IscsiName) -> Option<Arc<Target>> {
        lock(&self.targets).get(name).cloned()
    }

    /// Every run-time target.
    pub fn targets(&self) -> Vec<Arc<Target>> {
        lock(&self.targets).values().cloned().collect()
    }

    /// Registers target `t` as a local port with the core.
    pub fn add_target(
        self: &Arc<Self>,
        t: &TargetConfig,
        alias: &str,
    ) -> Result<Arc<Target>, String> {
        let target = Arc::new(Target::new(t.name.clone(), Arc::downgrade(self)));
        let port = Arc::new(target::TargetPort {
            target: Arc::clone(&target),
        });
        let lport = self
            .host
            .register_lport(t.name.as_str(), alias, "iscsi", port)
            .map_err(|st| format!("registering target {} with the core: {st}", t.name))?;
        let _ = target.lport.set(lport);
        lock(&self.targets).insert(t.name.clone(), Arc::clone(&target));
        Ok(target)
    }

    /// Logs every initiator out of target `name` and deregisters it.
    pub fn remove_target(self: &Arc<Self>, name: &IscsiName) -> Result<(), String> {
        let Some(t) = self.target(name) else {
            return Ok(());
        };
        t.set_removed();
        for s in t.sessions() {
            self.close_session(&s, "target deleted");
        }
        if let Some(&lport) = t.lport.get() {
            let mut tries = 0;
            loop {
                let st = self.host.deregister_lport(lport);
                if st.is_ok() || st == plugins_sdk::Status::NOT_FOUND {
                    break;
                }
                tries += 1;
                if tries > 100 {
                    return Err(format!("target {name} cannot be deregistered: {st}"));
                }
                for s in t.sessions() {
                    self.close_session(&s, "target deleted");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        lock(&self.targets).remove(name);
        Ok(())
    }

    // ---- portals ----------------------------------------------------------------------

    /// Listens on `addr` (port 0: any free port); returns the bound address. A portal
    /// already listening is reused.
    pub fn listen(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        if addr.port() != 0 {
            if let Some(l) = lock(&self.listeners).iter().find(|l| l.bound == addr) {
                return Ok(l.bound);
            }
        }
        let std_l = std::net::TcpListener::bind(addr)?;
        std_l.set_nonblocking(true)?;
        let bound = std_l.local_addr()?;
        let l = mio::net::TcpListener::from_std(std_l);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let loops = self
            .loops()
            .ok_or_else(|| io::Error::other("event loops not running"))?;
        loops.send(0, Msg::Listen(id, l));
        lock(&self.listeners).push(Listener { id, bound });
        tracing::info!(portal = %bound, "iSCSI portal listening");
        Ok(bound)
    }

    /// Stops listening on portals the configuration no longer names (the default portals
    /// count while a target is served on the default portal group).
    pub fn sync_listeners(&self) {
        let wanted: Vec<SocketAddr> = {
            let cfg = self.config_read();
            let mut w: Vec<SocketAddr> = cfg
                .tpgs
                .iter()
                .flat_map(|g| g.portals.iter().map(|p| p.addr()))
                .collect();
            if cfg.uses_default_tpg() {
                w.extend(cfg.defaults.portals.iter().map(|p| p.addr()));
            }
            w
        };
        let mut ls = lock(&self.listeners);
        let Some(loops) = self.loops() else {
            return;
        };
        ls.retain(|l| {
            let keep = wanted.contains(&l.bound);
            if !keep {
                loops.send(0, Msg::Unlisten(l.id));
                tracing::info!(portal = %l.bound, "iSCSI portal closed");
            }
            keep
        });
    }

    /// Addresses listened on.
    pub fn bound_portals(&self) -> Vec<SocketAddr> {
        lock(&self.listeners).iter().map(|l| l.bound).collect()
    }

    /// A loop accepted `stream` from `peer`.
    /// Connections over a cap are closed at once (see `admission`).
    pub fn accept(self: &Arc<Self>, stream: mio::net::TcpStream, peer: SocketAddr) {
        let limits = self.limits();
        let Ok(ticket) = self.admission.admit(peer.ip(), &limits) else {
            return;
        };
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!("iscsit: accepted socket has no address: {e}");
                return;
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(conn = id, %peer, %local, "iSCSI connection accepted");
        let Some(loops) = self.loops() else {
            return;
        };
        let i = loops.pick();
        let conn = Conn::new(id, self, stream, local, peer, ticket, &limits, i);
        loops.send(i, Msg::Adopt(conn));
    }

    /// Asks the loop of `conn` to run [`Conn::on_wake`] (from any thread, any lock).
    pub fn wake(&self, conn: &Arc<Conn>) {
        if let Some(loops) = self.loops() {
            loops.send(conn.loop_index(), Msg::Wake(Arc::clone(conn)));
        }
    }

    // ---- sessions ---------------------------------------------------------------------

    /// The session with `tsih`.
    pub fn session(&self, tsih: u16) -> Option<Arc<Session>> {
        lock(&self.sessions).get(&tsih).cloned()
    }

    /// The live session with `key`.
    pub fn find_session(&self, key: &SessionKey) -> Option<u16> {
        lock(&self.sessions)
            .values()
            .find(|s| s.key == *key && !s.is_closing())
            .map(|s| s.tsih)
    }

    /// A TSIH no session uses.
    pub fn allocate_tsih(&self) -> Option<u16> {
        let sessions = lock(&self.sessions);
        let mut next = lock(&self.next_tsih);
        for _ in 0..u16::MAX {
            let t = *next;
            *next = next.wrapping_add(1).max(1);
            if t != 0 && !sessions.contains_key(&t) {
                return Some(t);
            }
        }
        None
    }

    /// Records a new session.
    pub fn insert_session(&self, s: Arc<Session>) {
        lock(&self.sessions).insert(s.tsih, s);
    }

    /// Every session.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        lock(&self.sessions).values().cloned().collect()
    }

    /// Ends a session: its connections close, its SDK session is deregistered (which
    /// aborts its tasks). Call without any connection lock held.
    pub fn close_session(&self, s: &Arc<Session>, why: &str) {
        if !s.start_closing() {
            return;
        }
        let _f = Frame::enter();
        tracing::info!(tsih = s.tsih, initiator = %s.key.initiator, why, "iSCSI session closed");
        {
            let mut t = lock(&self.sessions);
            if t.get(&s.tsih).is_some_and(|x| Arc::ptr_eq(x, s)) {
                t.remove(&s.tsih);
            }
        }
        if let Some(t) = &s.target {
            t.remove_session(s);
        }
        for c in s.conns() {
            c.close("session closed");
        }
        if let Some(h) = s.handle {
            let st = self.host.deregister_session(h);
            if !st.is_ok() {
                tracing::warn!(tsih = s.tsih, "deregistering the session: {st}");
            }
        }
    }

    /// A connection ended for reason `gone`; decides its session's fate (ERL 0: a failed
    /// connection fails the session).
    pub(crate) fn conn_gone(&self, conn: &Arc<Conn>, session: Option<Arc<Session>>, gone: Gone) {
        let Some(s) = session else {
            return;
        };
        match gone {
            Gone::Failed => self.close_session(&s, "connection failed"),
            Gone::LoggedOutSession => self.close_session(&s, "logout"),
            Gone::LoggedOutConn => {
                if s.remove_conn(conn) == 0 {
                    self.close_session(&s, "last connection logged out");
                }
            }
            Gone::SessionClosing => {
                s.remove_conn(conn);
            }
        }
    }
}

fn same_ip(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    };
    canon(a.ip()) == canon(b.ip())
}
