//! Who may connect: connections are counted from accept to close, and those still in
//! login also per source address, against [`Limits`]. A connection over a cap is closed
//! at once, before anything is read from it; refusals are counted and logged at most
//! once a second, so a flood costs one accept and one close each, and no log storm.
//!
//! When the login places are all taken, a newcomer from a source with fewer connections
//! in login than the busiest source takes the place of that source's oldest connection
//! in login (which its event loop closes at its next tick, within 100 ms): a flood from
//! many addresses cannot keep the others from logging in, it can only keep its own
//! addresses waiting. The same eviction frees a descriptor when the process runs out.

use crate::limits::Limits;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` connections are open.
    Connections,
    /// `max_login_connections` connections are in login.
    Logins,
    /// `max_login_per_source` connections from this address are in login.
    Source,
    /// The process is out of file descriptors.
    Descriptors,
}

impl Refusal {
    fn index(self) -> usize {
        self as usize
    }

    /// What the log says.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Connections => "max_connections reached",
            Refusal::Logins => "max_login_connections reached",
            Refusal::Source => "max_login_per_source reached",
            Refusal::Descriptors => "out of file descriptors",
        }
    }
}

#[derive(Default)]
struct Counts {
    open: u32,
    login: u32,
    /// Connections in login per source, oldest first (each its eviction flag).
    per_source: HashMap<IpAddr, VecDeque<Arc<AtomicBool>>>,
}

impl Counts {
    fn in_login_from(&self, peer: &IpAddr) -> usize {
        self.per_source.get(peer).map_or(0, VecDeque::len)
    }

    /// Evicts the oldest connection in login of the source with the most, if that
    /// source has more than `than`; true when one was evicted.
    fn evict_busiest(&mut self, than: usize) -> bool {
        let Some((&peer, _)) = self
            .per_source
            .iter()
            .filter(|(_, q)| q.len() > than)
            .max_by_key(|(_, q)| q.len())
        else {
            return false;
        };
        let Some(q) = self.per_source.get_mut(&peer) else {
            return false;
        };
        let Some(flag) = q.pop_front() else {
            return false;
        };
        if q.is_empty() {
            self.per_source.remove(&peer);
        }
        flag.store(true, Ordering::Release);
        self.login = self.login.saturating_sub(1);
        true
    }
}

/// Connection counts and refusals of the provider.
pub struct Admission {
    counts: Mutex<Counts>,
    refused: [AtomicU64; 4],
    /// Refusals not logged yet, and when the log last spoke.
    unlogged: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            counts: Mutex::new(Counts::default()),
            refused: Default::default(),
            unlogged: AtomicU64::new(0),
            last_log: Mutex::new(None),
        }
    }
}

impl Admission {
    /// Counts a connection from `peer`, or says why it is refused.
    pub fn admit(self: &Arc<Self>, peer: IpAddr, limits: &Limits) -> Result<Ticket, Refusal> {
        let peer = canonical(peer);
        let mut c = lock(&self.counts);
        let from_source = c.in_login_from(&peer);
        let refusal = if c.open >= limits.max_connections {
            Some(Refusal::Connections)
        } else if from_source >= limits.max_login_per_source as usize {
            Some(Refusal::Source)
        } else if c.login >= limits.max_login_connections && !c.evict_busiest(from_source + 1) {
            Some(Refusal::Logins)
        } else {
            None
        };
        if let Some(r) = refusal {
            drop(c);
            self.refuse(r, peer);
            return Err(r);
        }
        c.open += 1;
        c.login += 1;
        let evicted = Arc::new(AtomicBool::new(false));
        c.per_source
            .entry(peer)
            .or_default()
            .push_back(Arc::clone(&evicted));
        Ok(Ticket {
            adm: Arc::clone(self),
            peer,
            in_login: true,
            evicted,
        })
    }

    /// Out of descriptors: evicts the oldest connection in login of the busiest source
    /// so that its descriptor comes free; true when there was one.
    pub fn evict_for_descriptor(&self) -> bool {
        lock(&self.counts).evict_busiest(0)
    }

    /// Records a refusal (also those decided elsewhere, e.g. out of descriptors).
    pub fn refuse(&self, r: Refusal, peer: IpAddr) {
        self.refused[r.index()].fetch_add(1, Ordering::Relaxed);
        let n = self.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let mut last = lock(&self.last_log);
        if last.is_some_and(|t| now.duration_since(t).as_secs() < 1) {
            return;
        }
        *last = Some(now);
        self.unlogged.store(0, Ordering::Relaxed);
        tracing::warn!(%peer, reason = r.reason(), refused = n, "iSCSI connections refused");
    }

    /// Connections open, in login.
    pub fn counts(&self) -> (u32, u32) {
        let c = lock(&self.counts);
        (c.open, c.login)
    }

    /// Refusals so far, by reason: connections, logins, source, descriptors.
    pub fn refused(&self) -> [u64; 4] {
        [0, 1, 2, 3].map(|i| self.refused[i].load(Ordering::Relaxed))
    }
}

/// An IPv4 address mapped into IPv6 counts as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A counted connection; dropping it uncounts it.
pub struct Ticket {
    adm: Arc<Admission>,
    peer: IpAddr,
    in_login: bool,
    /// Set when a newcomer took this connection's login place: close it.
    evicted: Arc<AtomicBool>,
}

impl Ticket {
    /// The connection left login (full feature phase): it no longer counts as in login.
    pub fn logged_in(&mut self) {
        if std::mem::take(&mut self.in_login) {
            self.adm
                .leave_login(&mut lock(&self.adm.counts), self.peer, &self.evicted);
        }
    }

    /// True when the connection lost its login place to a newcomer and must close.
    pub fn evicted(&self) -> bool {
        self.in_login && self.evicted.load(Ordering::Acquire)
    }
}

impl Admission {
    fn leave_login(&self, c: &mut Counts, peer: IpAddr, flag: &Arc<AtomicBool>) {
        if flag.load(Ordering::Acquire) {
            return; // uncounted when it was evicted
        }
        c.login = c.login.saturating_sub(1);
        if let Some(q) = c.per_source.get_mut(&peer) {
            q.retain(|f| !Arc::ptr_eq(f, flag));
            if q.is_empty() {
                c.per_source.remove(&peer);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = lock(&self.adm.counts);
        c.open = c.open.saturating_sub(1);
        if self.in_login {
            self.adm.leave_login(&mut c, self.peer, &self.evicted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_source_in_login_and_overall() {
        let adm = Arc::new(Admission::default());
        let limits = Limits {
            max_login_connections: 3,
            max_login_per_source: 2,
            max_connections: 4,
            ..Limits::default()
        };
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let mut a1 = adm.admit(a, &limits).unwrap();
        let _a2 = adm.admit(a, &limits).unwrap();
        assert_eq!(adm.admit(a, &limits).err(), Some(Refusal::Source));
        // The same address written as IPv4-mapped IPv6 is the same source.
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(adm.admit(mapped, &limits).err(), Some(Refusal::Source));
        let _b1 = adm.admit(b, &limits).unwrap();
        // All login places taken, and a second connection of b would not leave b with
        // fewer in login than a: refused.
        assert_eq!(adm.admit(b, &limits).err(), Some(Refusal::Logins));
        // A connection that logged in frees its login place, not its connection place.
        a1.logged_in();
        assert_eq!(adm.counts(), (3, 2));
        let _b2 = adm.admit(b, &limits).unwrap();
        assert_eq!(adm.admit(b, &limits).err(), Some(Refusal::Connections));
        drop(a1);
        assert_eq!(adm.counts(), (3, 3));
        assert_eq!(adm.refused(), [1, 1, 2, 0]);
    }

    /// A source that holds most of the login places loses its oldest to a newcomer.
    #[test]
    fn a_newcomer_takes_the_oldest_place_of_the_busiest_source() {
        let adm = Arc::new(Admission::default());
        let limits = Limits {
            max_login_connections: 3,
            max_login_per_source: 3,
            ..Limits::default()
        };
        let flood: IpAddr = "10.0.0.9".parse().unwrap();
        let honest: IpAddr = "10.0.0.1".parse().unwrap();
        let f: Vec<Ticket> = (0..3).map(|_| adm.admit(flood, &limits).unwrap()).collect();
        assert_eq!(adm.admit(flood, &limits).err(), Some(Refusal::Source));
        let mut h = adm.admit(honest, &limits).expect("the newcomer gets in");
        assert!(f[0].evicted(), "the flood's oldest connection goes");
        assert!(!f[1].evicted() && !f[2].evicted() && !h.evicted());
        assert_eq!(
            adm.counts(),
            (4, 3),
            "the evicted one is open until it closes"
        );
        // A second honest connection would leave it with two against the flood's two:
        // refused, nobody evicted.
        assert_eq!(adm.admit(honest, &limits).err(), Some(Refusal::Logins));
        h.logged_in();
        drop(f);
        assert_eq!(adm.counts(), (1, 0));
        assert!(lock(&adm.counts).per_source.is_empty());
        // Out of descriptors: the busiest source's oldest goes.
        let g: Vec<Ticket> = (0..2).map(|_| adm.admit(flood, &limits).unwrap()).collect();
        assert!(adm.evict_for_descriptor());
        assert!(g[0].evicted() && !g[1].evicted());
    }

    #[test]
    fn dropping_a_ticket_in_login_frees_both_places() {
        let adm = Arc::new(Admission::default());
        let limits = Limits::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = adm.admit(ip, &limits).unwrap();
        drop(t);
        assert_eq!(adm.counts(), (0, 0));
        assert!(
            lock(&adm.counts).per_source.is_empty(),
            "no entry left behind"
        );
    }
}
