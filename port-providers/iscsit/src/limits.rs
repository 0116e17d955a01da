//! The resource budget of the provider (docs/security.md): how much memory, how many
//! commands, connections and how much time a peer can make the target hold.
//!
//! Pure data, part of the defaults ([`crate::config::Defaults::limits`]), set with
//! `itadm modify-defaults` and persisted with the rest of the configuration. Every
//! field has a default that is safe on an exposed network; 0 in
//! [`Limits::buffer_memory`] means "size it from the machine".

#![warn(missing_docs)]

/// Smallest global buffer budget (and the floor of the machine-sized default).
pub const MIN_BUFFER_MEMORY: u64 = 64 << 20;
/// Largest machine-sized default of the global buffer budget.
pub const MAX_AUTO_BUFFER_MEMORY: u64 = 4 << 30;
/// Smallest per-session buffer budget: one largest buffer (1 MiB) and some headroom.
pub const MIN_SESSION_BUFFER_MEMORY: u64 = 4 << 20;

/// The limits (see the module documentation and docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of data buffers (immediate, unsolicited, R2T'd and Data-In) all sessions
    /// together may hold; 0 = an eighth of physical memory, within 64 MiB..4 GiB.
    pub buffer_memory: u64,
    /// Bytes of data buffers one session may hold.
    pub session_buffer_memory: u64,
    /// Commands a session may have outstanding: MaxCmdSN − ExpCmdSN + 1 when idle.
    pub cmd_window: u32,
    /// Immediate commands (I=1) a session may have outstanding besides its window.
    pub max_immediate_commands: u32,
    /// Bytes queued for a connection's socket beyond which it takes no new PDUs.
    pub send_queue_limit: u64,
    /// A connection with bytes queued that writes nothing for this long is dropped (ms).
    pub send_timeout_ms: u64,
    /// Connections in login (not yet in full feature phase), all portals together.
    pub max_login_connections: u32,
    /// Connections in login from one source address.
    pub max_login_per_source: u32,
    /// Time a connection may take from accept to full feature phase (ms).
    pub login_timeout_ms: u64,
    /// Time a login may wait for the initiator's next Login Request (ms).
    pub login_idle_timeout_ms: u64,
    /// Connections in every phase, all portals together.
    pub max_connections: u32,
    /// Consecutive failed CHAP verifications from one source (IPv4 address or IPv6
    /// /64) before its logins are refused.
    pub auth_fail_threshold: u32,
    /// First refusal period of a throttled source (ms); doubles with each further
    /// failure.
    pub auth_backoff_ms: u64,
    /// Longest refusal period (ms).
    pub auth_backoff_max_ms: u64,
    /// A source with no failure for this long starts afresh (ms).
    pub auth_forget_ms: u64,
    /// Sources the failed-authentication table holds at most (the stalest go first).
    pub auth_sources: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            buffer_memory: 0,
            session_buffer_memory: 64 << 20,
            cmd_window: 128,
            max_immediate_commands: 16,
            send_queue_limit: 4 << 20,
            send_timeout_ms: 30_000,
            max_login_connections: 256,
            max_login_per_source: 16,
            login_timeout_ms: 15_000,
            login_idle_timeout_ms: 5_000,
            max_connections: 4096,
            auth_fail_threshold: 5,
            auth_backoff_ms: 1_000,
            auth_backoff_max_ms: 60_000,
            auth_forget_ms: 600_000,
            auth_sources: 4096,
        }
    }
}

/// A limit that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit {name} = {value} is out of range ({range})")]
pub struct LimitError {
    /// The field.
    pub name: &'static str,
    /// The value given.
    pub value: u64,
    /// What is allowed.
    pub range: &'static str,
}

impl Limits {
    /// Checks every field against its legal range.
    pub fn validate(&self) -> Result<(), LimitError> {
        let check = |name, value: u64, ok: bool, range| {
            if ok {
                Ok(())
            } else {
                Err(LimitError { name, value, range })
            }
        };
        let b = self.buffer_memory;
        check(
            "buffer_memory",
            b,
            b == 0 || b >= MIN_BUFFER_MEMORY,
            "0 (auto) or at least 64 MiB",
        )?;
        let s = self.session_buffer_memory;
        check(
            "session_buffer_memory",
            s,
            s >= MIN_SESSION_BUFFER_MEMORY && (b == 0 || s <= b),
            "at least 4 MiB and at most buffer_memory",
        )?;
        let w = u64::from(self.cmd_window);
        check("cmd_window", w, (1..=4096).contains(&w), "1..=4096")?;
        let i = u64::from(self.max_immediate_commands);
        check(
            "max_immediate_commands",
            i,
            (1..=1024).contains(&i),
            "1..=1024",
        )?;
        let q = self.send_queue_limit;
        check(
            "send_queue_limit",
            q,
            (64 << 10..=1 << 30).contains(&q),
            "64 KiB..=1 GiB",
        )?;
        let t = self.send_timeout_ms;
        check("send_timeout_ms", t, t >= 100, "at least 100")?;
        let l = u64::from(self.max_login_connections);
        check("max_login_connections", l, l >= 1, "at least 1")?;
        let p = u64::from(self.max_login_per_source);
        check(
            "max_login_per_source",
            p,
            p >= 1 && p <= l,
            "1..=max_login_connections",
        )?;
        let lt = self.login_timeout_ms;
        check("login_timeout_ms", lt, lt >= 100, "at least 100")?;
        let li = self.login_idle_timeout_ms;
        check(
            "login_idle_timeout_ms",
            li,
            li >= 100 && li <= lt,
            "100..=login_timeout_ms",
        )?;
        let c = u64::from(self.max_connections);
        check(
            "max_connections",
            c,
            c >= l,
            "at least max_login_connections",
        )?;
        let a = u64::from(self.auth_fail_threshold);
        check(
            "auth_fail_threshold",
            a,
            (1..=1000).contains(&a),
            "1..=1000",
        )?;
        let ab = self.auth_backoff_ms;
        check(
            "auth_backoff_ms",
            ab,
            (1..=3_600_000).contains(&ab),
            "1..=3600000",
        )?;
        let am = self.auth_backoff_max_ms;
        check(
            "auth_backoff_max_ms",
            am,
            am >= ab && am <= 86_400_000,
            "auth_backoff_ms..=86400000",
        )?;
        let af = self.auth_forget_ms;
        check(
            "auth_forget_ms",
            af,
            af >= am && af <= 7 * 86_400_000,
            "auth_backoff_max_ms..=604800000",
        )?;
        let asrc = u64::from(self.auth_sources);
        check(
            "auth_sources",
            asrc,
            (16..=1_000_000).contains(&asrc),
            "16..=1000000",
        )?;
        Ok(())
    }

    /// The global buffer budget in force: [`Limits::buffer_memory`], or sized from
    /// `physical` bytes of memory when it is 0.
    pub fn buffer_budget(&self, physical: u64) -> u64 {
        if self.buffer_memory != 0 {
            return self.buffer_memory;
        }
        (physical / 8).clamp(MIN_BUFFER_MEMORY, MAX_AUTO_BUFFER_MEMORY)
    }
}

/// Physical memory of this machine in bytes (0 when unknown).
pub fn physical_memory() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || size <= 0 {
        return 0;
    }
    (pages as u64).saturating_mul(size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let l = Limits::default();
        l.validate().unwrap();
        let j = serde_json::to_string(&l).unwrap();
        assert_eq!(serde_json::from_str::<Limits>(&j).unwrap(), l);
        // Missing fields take their defaults.
        let p: Limits = serde_json::from_str(r#"{"cmd_window": 32}"#).unwrap();
        assert_eq!(p.cmd_window, 32);
        assert_eq!(p.send_queue_limit, l.send_queue_limit);
        assert!(serde_json::from_str::<Limits>(r#"{"nope": 1}"#).is_err());
    }

    #[test]
    fn out_of_range_is_refused_with_the_field_name() {
        let bad = |f: fn(&mut Limits)| {
            let mut l = Limits::default();
            f(&mut l);
            l.validate().unwrap_err().name
        };
        assert_eq!(bad(|l| l.buffer_memory = 1 << 20), "buffer_memory");
        assert_eq!(
            bad(|l| l.session_buffer_memory = 1 << 20),
            "session_buffer_memory"
        );
        assert_eq!(
            bad(|l| {
                l.buffer_memory = 64 << 20;
                l.session_buffer_memory = 128 << 20
            }),
            "session_buffer_memory"
        );
        assert_eq!(bad(|l| l.cmd_window = 0), "cmd_window");
        assert_eq!(
            bad(|l| l.max_login_per_source = 1000),
            "max_login_per_source"
        );
        assert_eq!(
            bad(|l| l.login_idle_timeout_ms = 60_000),
            "login_idle_timeout_ms"
        );
        assert_eq!(bad(|l| l.auth_fail_threshold = 0), "auth_fail_threshold");
        assert_eq!(bad(|l| l.auth_backoff_ms = 0), "auth_backoff_ms");
        assert_eq!(
            bad(|l| l.auth_backoff_max_ms = 10),
            "auth_backoff_max_ms",
            "below auth_backoff_ms"
        );
        assert_eq!(bad(|l| l.auth_forget_ms = 1000), "auth_forget_ms");
        assert_eq!(bad(|l| l.auth_sources = 15), "auth_sources");
        assert_eq!(bad(|l| l.auth_sources = 2_000_000), "auth_sources");
    }

    #[test]
    fn auth_throttle_defaults() {
        let l = Limits::default();
        assert_eq!(
            (
                l.auth_fail_threshold,
                l.auth_backoff_ms,
                l.auth_backoff_max_ms,
                l.auth_forget_ms,
                l.auth_sources
            ),
            (5, 1_000, 60_000, 600_000, 4096)
        );
        // An old configuration without the fields gets them.
        let p: Limits = serde_json::from_str(r#"{"cmd_window": 32}"#).unwrap();
        assert_eq!(p.auth_sources, 4096);
    }

    #[test]
    fn auto_budget_is_sized_from_the_machine() {
        let l = Limits::default();
        assert_eq!(l.buffer_budget(24 << 30), 3 << 30);
        assert_eq!(l.buffer_budget(128 << 20), MIN_BUFFER_MEMORY);
        assert_eq!(l.buffer_budget(1 << 40), MAX_AUTO_BUFFER_MEMORY);
        let fixed = Limits {
            buffer_memory: 256 << 20,
            ..l
        };
        assert_eq!(fixed.buffer_budget(24 << 30), 256 << 20);
        assert!(physical_memory() > 0);
    }
}
