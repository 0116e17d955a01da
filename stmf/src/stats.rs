//! Per-nexus I/O statistics, summed into per-LU and per-port figures on demand, so the
//! per-command path only touches counters of its own session.

use crate::types::StatsInfo;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Number of latency buckets (< 1 µs … ≥ 2^30 µs).
pub const LAT_BUCKETS: usize = 32;

/// Counters of one I_T_L nexus (or the retired sum of ended ones).
#[derive(Debug, Default)]
pub struct IoStats {
    read_cmds: AtomicU64,
    write_cmds: AtomicU64,
    other_cmds: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    errors: AtomicU64,
    aborted: AtomicU64,
    lat: [AtomicU64; LAT_BUCKETS],
}

/// Command class for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdClass {
    /// Reads data.
    Read,
    /// Writes data.
    Write,
    /// Neither.
    Other,
}

impl IoStats {
    /// Counts a completed command.
    pub fn command(&self, class: CmdClass, good: bool, latency_ns: u64) {
        match class {
            CmdClass::Read => &self.read_cmds,
            CmdClass::Write => &self.write_cmds,
            CmdClass::Other => &self.other_cmds,
        }
        .fetch_add(1, Relaxed);
        if !good {
            self.errors.fetch_add(1, Relaxed);
        }
        let us = latency_ns / 1000;
        let b = (u64::BITS - us.leading_zeros()) as usize;
        self.lat[b.min(LAT_BUCKETS - 1)].fetch_add(1, Relaxed);
    }

    /// Counts bytes moved.
    pub fn bytes(&self, to_initiator: bool, n: u64) {
        if to_initiator {
            &self.read_bytes
        } else {
            &self.write_bytes
        }
        .fetch_add(n, Relaxed);
    }

    /// Counts an aborted task.
    pub fn aborted(&self) {
        self.aborted.fetch_add(1, Relaxed);
    }

    /// Adds these counters into `into`.
    pub fn add_to(&self, into: &mut StatsInfo) {
        into.read_cmds += self.read_cmds.load(Relaxed);
        into.write_cmds += self.write_cmds.load(Relaxed);
        into.other_cmds += self.other_cmds.load(Relaxed);
        into.read_bytes += self.read_bytes.load(Relaxed);
        into.write_bytes += self.write_bytes.load(Relaxed);
        into.errors += self.errors.load(Relaxed);
        into.aborted += self.aborted.load(Relaxed);
        if into.latency_us_log2.len() < LAT_BUCKETS {
            into.latency_us_log2.resize(LAT_BUCKETS, 0);
        }
        for (d, s) in into.latency_us_log2.iter_mut().zip(self.lat.iter()) {
            *d += s.load(Relaxed);
        }
    }

    /// Adds `other`'s counters into these (retiring an ended nexus).
    pub fn absorb(&self, other: &IoStats) {
        let mut s = StatsInfo::default();
        other.add_to(&mut s);
        self.read_cmds.fetch_add(s.read_cmds, Relaxed);
        self.write_cmds.fetch_add(s.write_cmds, Relaxed);
        self.other_cmds.fetch_add(s.other_cmds, Relaxed);
        self.read_bytes.fetch_add(s.read_bytes, Relaxed);
        self.write_bytes.fetch_add(s.write_bytes, Relaxed);
        self.errors.fetch_add(s.errors, Relaxed);
        self.aborted.fetch_add(s.aborted, Relaxed);
        for (d, v) in self.lat.iter().zip(s.latency_us_log2) {
            d.fetch_add(v, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_sums() {
        let s = IoStats::default();
        s.command(CmdClass::Read, true, 500); // < 1 µs → bucket 0
        s.command(CmdClass::Write, false, 3_000); // 3 µs → bucket 2 (< 4 µs)
        s.bytes(true, 4096);
        let r = IoStats::default();
        r.absorb(&s);
        let mut out = StatsInfo::default();
        r.add_to(&mut out);
        assert_eq!(
            (out.read_cmds, out.write_cmds, out.errors, out.read_bytes),
            (1, 1, 1, 4096)
        );
        assert_eq!(out.latency_us_log2[0], 1);
        assert_eq!(out.latency_us_log2[2], 1);
    }
}
