//! Who a login proved to be ([`Identity`]), and the throttle on failed CHAP attempts
//! ([`AuthThrottle`]), sans-IO: the caller passes the time.
//!
//! The model (docs/security.md, "Authentication"): a name is proven only by the secret
//! of its own initiator context. A shared account (the target's, or the discovery
//! account of the defaults) shows that a host knows a shared secret, not which host it
//! is, so everything keyed by the initiator name (ACL entries, host-group views,
//! session reinstatement) honours only proven names, or names taken on trust when the
//! target asks for no authentication.
//!
//! The throttle charges every failed CHAP verification to its source (an IPv4
//! address, or the /64 of an IPv6 address): after [`ThrottleConfig::threshold`]
//! consecutive failures the source is refused for a backoff that doubles with each
//! further failure up to [`ThrottleConfig::backoff_max`]. A refused login costs a
//! table look-up: no text is parsed and no CHAP is computed. The table holds at most
//! [`ThrottleConfig::capacity`] sources; a source with no failure for
//! [`ThrottleConfig::forget`] starts afresh and is the first to go when the table is
//! full. Failure log lines are rate-limited per source and in total.

#![warn(missing_docs)]

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// What a login established about the InitiatorName it claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Identity {
    /// No authentication (AuthMethod=None on a target that asks for none): the name is
    /// taken on trust, as every name is when nothing is authenticated.
    #[default]
    Trusted,
    /// CHAP with the secret of the initiator's own context: the name is proven.
    Proven,
    /// CHAP with a shared account (the target's or the discovery account): the host
    /// knows a shared secret; its name is not proven.
    SharedSecret,
}

impl Identity {
    /// Whether things keyed by the initiator name (ACL entries, host groups,
    /// reinstatement of the name's sessions) may be granted on this login's name.
    pub fn name_honoured(self) -> bool {
        !matches!(self, Identity::SharedSecret)
    }

    /// Whether a login with this identity may replace or join a session that was
    /// authenticated as `old`: a session whose name was proven only by one that proves
    /// it again; any other session by any login of the same nexus (hosts that share a
    /// secret are one principal to the target).
    pub fn may_take_over(self, old: Identity) -> bool {
        old != Identity::Proven || self == Identity::Proven
    }

    /// The name shown by `list-target -v` and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Identity::Trusted => "trusted",
            Identity::Proven => "proven",
            Identity::SharedSecret => "shared-secret",
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The unit failures are charged to: an IPv4 address (IPv4-mapped IPv6 included), or
/// the /64 network of an IPv6 address (one host usually owns a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Net([u8; 8]),
}

impl Source {
    /// The source of a peer address.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(a) => Source::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => {
                    let mut net = [0u8; 8];
                    net.copy_from_slice(&a.octets()[..8]);
                    Source::V6Net(net)
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(a) => write!(f, "{a}"),
            Source::V6Net(n) => {
                let mut o = [0u8; 16];
                o[..8].copy_from_slice(n);
                write!(f, "{}/64", std::net::Ipv6Addr::from(o))
            }
        }
    }
}

/// The throttle's knobs (from [`crate::limits::Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Consecutive failures from one source before it is refused.
    pub threshold: u32,
    /// First refusal period; doubles with each further failure.
    pub backoff: Duration,
    /// Longest refusal period.
    pub backoff_max: Duration,
    /// A source with no failure for this long starts afresh (and leaves the table).
    pub forget: Duration,
    /// Sources the table holds at most.
    pub capacity: usize,
}

impl ThrottleConfig {
    /// The knobs of `limits`.
    pub fn from_limits(l: &crate::limits::Limits) -> Self {
        Self {
            threshold: l.auth_fail_threshold,
            backoff: Duration::from_millis(l.auth_backoff_ms),
            backoff_max: Duration::from_millis(l.auth_backoff_max_ms),
            forget: Duration::from_millis(l.auth_forget_ms),
            capacity: l.auth_sources as usize,
        }
    }

    /// The refusal period after `streak` consecutive failures (zero below the
    /// threshold).
    pub fn backoff_after(&self, streak: u32) -> Duration {
        if streak < self.threshold.max(1) {
            return Duration::ZERO;
        }
        let doublings = (streak - self.threshold.max(1)).min(31);
        self.backoff
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max)
    }
}

/// Per-source log lines: at most one per this interval (the others are counted and
/// reported with the next line).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Failure log lines per second, all sources together.
pub const LOG_LINES_PER_SECOND: u32 = 20;
/// Longest InitiatorName kept per source for the statistics (RFC 7143: 223 bytes).
const MAX_NAME: usize = 223;

#[derive(Debug, Clone)]
struct Entry {
    streak: u32,
    failures: u64,
    refused: u64,
    last_failure: Instant,
    blocked_until: Option<Instant>,
    last_logged: Option<Instant>,
    suppressed: u32,
    last_initiator: String,
}

impl Entry {
    fn blocked_at(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .and_then(|t| t.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    fn forgotten(&self, cfg: &ThrottleConfig, now: Instant) -> bool {
        self.blocked_at(now).is_none()
            && now.saturating_duration_since(self.last_failure) >= cfg.forget
    }
}

/// What [`AuthThrottle::failed`] decided about one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureNote {
    /// The source charged.
    pub source: Source,
    /// Consecutive failures of the source, this one included.
    pub streak: u32,
    /// Log this failure; the number of earlier ones left out since the last line.
    pub log: Option<u32>,
    /// The source is refused from now for this long.
    pub throttled_for: Option<Duration>,
}

/// One source in [`AuthStats`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceStats {
    /// `a.b.c.d` or `<ipv6 network>/64`.
    pub source: String,
    /// Failed CHAP verifications from it while tracked.
    pub failures: u64,
    /// Consecutive failures counting towards its backoff.
    pub consecutive: u32,
    /// Logins refused because it was throttled.
    pub refused: u64,
    /// Whether logins from it are refused now.
    pub throttled: bool,
    /// How much longer (ms; 0 when not throttled).
    pub throttled_for_ms: u64,
    /// Time since its last failure (ms).
    pub last_failure_ms_ago: u64,
    /// The InitiatorName of its last failed login (as claimed).
    pub last_initiator: String,
}

/// The reply of the `list-auth-stats` control operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuthStats {
    /// Failed CHAP verifications since the provider started.
    pub failures_total: u64,
    /// Logins refused because their source was throttled.
    pub refused_total: u64,
    /// Successful CHAP verifications.
    pub successes_total: u64,
    /// Sources dropped from a full table while they still counted.
    pub sources_evicted: u64,
    /// Sources tracked now (at most `auth_sources`).
    pub sources_tracked: usize,
    /// Sources refused now.
    pub sources_throttled: usize,
    /// The sources, most failures first.
    pub sources: Vec<SourceStats>,
}

/// Failed-authentication accounting and throttling for all portals.
#[derive(Debug)]
pub struct AuthThrottle {
    entries: HashMap<Source, Entry>,
    failures_total: u64,
    refused_total: u64,
    successes_total: u64,
    evicted: u64,
    log_second: Option<Instant>,
    log_lines: u32,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthThrottle {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            entries: HashMap::new(),
            failures_total: 0,
            refused_total: 0,
            successes_total: 0,
            evicted: 0,
            log_second: None,
            log_lines: 0,
        }
    }

    /// Whether a login from `ip` must be refused now; a refusal is counted. Costs one
    /// look-up and allocates nothing.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let e = self.entries.get_mut(&Source::of(ip))?;
        let left = e.blocked_at(now)?;
        e.refused += 1;
        self.refused_total += 1;
        Some(left)
    }

    /// A CHAP verification from `ip`, claiming `initiator`, succeeded (counted only:
    /// success does not clear a streak, so one valid account cannot launder guesses
    /// at another).
    pub fn succeeded(&mut self) {
        self.successes_total += 1;
    }

    /// A CHAP verification from `ip`, claiming `initiator`, failed.
    pub fn failed(
        &mut self,
        cfg: &ThrottleConfig,
        ip: IpAddr,
        initiator: &str,
        now: Instant,
    ) -> FailureNote {
        let source = Source::of(ip);
        self.failures_total += 1;
        if !self.entries.contains_key(&source) {
            self.make_room(cfg, now);
        }
        let e = self.entries.entry(source).or_insert_with(|| Entry {
            streak: 0,
            failures: 0,
            refused: 0,
            last_failure: now,
            blocked_until: None,
            last_logged: None,
            suppressed: 0,
            last_initiator: String::new(),
        });
        if e.forgotten(cfg, now) {
            e.streak = 0;
        }
        e.streak = e.streak.saturating_add(1);
        e.failures += 1;
        e.last_failure = now;
        e.last_initiator.clear();
        e.last_initiator
            .extend(initiator.chars().filter(|c| !c.is_control()).take(MAX_NAME));
        let backoff = cfg.backoff_after(e.streak);
        let throttled_for = (!backoff.is_zero()).then(|| {
            e.blocked_until = Some(now + backoff);
            backoff
        });
        let per_source = e
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_INTERVAL);
        let global = match self.log_second {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {
                self.log_lines < LOG_LINES_PER_SECOND
            }
            _ => {
                self.log_second = Some(now);
                self.log_lines = 0;
                true
            }
        };
        let log = if per_source && global {
            self.log_lines += 1;
            e.last_logged = Some(now);
            Some(std::mem::take(&mut e.suppressed))
        } else {
            e.suppressed = e.suppressed.saturating_add(1);
            None
        };
        FailureNote {
            source,
            streak: e.streak,
            log,
            throttled_for,
        }
    }

    /// Drops forgotten sources; when the table is still full, evicts the source whose
    /// last failure is oldest among those not refused now (or, if all are, the one
    /// whose refusal ends first).
    fn make_room(&mut self, cfg: &ThrottleConfig, now: Instant) {
        let cap = cfg.capacity.max(1);
        if self.entries.len() < cap {
            return;
        }
        self.entries.retain(|_, e| !e.forgotten(cfg, now));
        while self.entries.len() >= cap {
            let victim = self
                .entries
                .iter()
                .min_by_key(|(_, e)| (e.blocked_at(now).is_some(), e.blocked_until, e.last_failure))
                .map(|(s, _)| *s);
            match victim {
                Some(s) => {
                    self.entries.remove(&s);
                    self.evicted += 1;
                }
                None => break,
            }
        }
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The statistics (forgotten sources are dropped first).
    pub fn stats(&mut self, cfg: &ThrottleConfig, now: Instant) -> AuthStats {
        self.entries.retain(|_, e| !e.forgotten(cfg, now));
        let mut sources: Vec<(Source, SourceStats)> = self
            .entries
            .iter()
            .map(|(s, e)| {
                let left = e.blocked_at(now);
                (
                    *s,
                    SourceStats {
                        source: s.to_string(),
                        failures: e.failures,
                        consecutive: e.streak,
                        refused: e.refused,
                        throttled: left.is_some(),
                        throttled_for_ms: left.map_or(0, |d| d.as_millis() as u64),
                        last_failure_ms_ago: now
                            .saturating_duration_since(e.last_failure)
                            .as_millis() as u64,
                        last_initiator: e.last_initiator.clone(),
                    },
                )
            })
            .collect();
        sources.sort_by(|a, b| b.1.failures.cmp(&a.1.failures).then(a.0.cmp(&b.0)));
        AuthStats {
            failures_total: self.failures_total,
            refused_total: self.refused_total,
            successes_total: self.successes_total,
            sources_evicted: self.evicted,
            sources_tracked: sources.len(),
            sources_throttled: sources.iter().filter(|s| s.1.throttled).count(),
            sources: sources.into_iter().map(|s| s.1).collect(),
        }
    }
}

#[cfg(test)]
mod tests;
