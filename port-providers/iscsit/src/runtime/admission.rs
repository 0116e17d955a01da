//! Who may connect: connections are counted from accept to close, and those still in
//! login also per source address, against [`Limits`]. A connection over a cap is closed
//! at once, before anything is read from it; refusals are counted and logged at most
//! once a second, so a flood costs one accept and one close each, and no log storm.

use crate::limits::Limits;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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
    per_source: HashMap<IpAddr, u32>,
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
        let from_source = c.per_source.get(&peer).copied().unwrap_or(0);
        let refusal = if c.open >= limits.max_connections {
            Some(Refusal::Connections)
        } else if c.login >= limits.max_login_connections {
            Some(Refusal::Logins)
        } else if from_source >= limits.max_login_per_source {
            Some(Refusal::Source)
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
        *c.per_source.entry(peer).or_insert(0) += 1;
        Ok(Ticket {
            adm: Arc::clone(self),
            peer,
            in_login: true,
        })
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
}

impl Ticket {
    /// The connection left login (full feature phase): it no longer counts as in login.
    pub fn logged_in(&mut self) {
        if std::mem::take(&mut self.in_login) {
            self.adm.leave_login(&mut lock(&self.adm.counts), self.peer);
        }
    }
}

impl Admission {
    fn leave_login(&self, c: &mut Counts, peer: IpAddr) {
        c.login = c.login.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
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
            self.adm.leave_login(&mut c, self.peer);
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
