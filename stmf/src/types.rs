//! Public value types of the management API (serialisable; the control protocol sends them).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A 16-byte NAA identifier naming an LU. Displayed as 32 upper-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = crate::StmfError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad =
            || crate::StmfError::invalid(format!("invalid LU GUID {s:?}: expected 32 hex digits"));
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut g = [0u8; 16];
        for (i, b) in g.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Guid(g))
    }
}

impl Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// State of an LU or local port (COMSTAR's OFFLINE → ONLINING → ONLINE → OFFLINING).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjState {
    /// Not serving.
    Offline,
    /// Online requested, waiting for the provider.
    Onlining,
    /// Serving.
    Online,
    /// Offline requested: aborting tasks, waiting for the provider.
    Offlining,
}

impl fmt::Display for ObjState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjState::Offline => "offline",
            ObjState::Onlining => "onlining",
            ObjState::Online => "online",
            ObjState::Offlining => "offlining",
        })
    }
}

/// A loaded provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// Unique name.
    pub name: String,
    /// `port` or `lu`.
    pub kind: String,
    /// Provider version.
    pub version: String,
    /// Description.
    pub description: String,
    /// Library path (`builtin:` for providers linked into the process).
    pub path: String,
    /// ABI version it was built with.
    pub abi_version: u32,
    /// Number of LUs or ports it has registered.
    pub objects: usize,
    /// Set when the provider failed (panicked); its objects are offline.
    pub failed: Option<String>,
}

/// Statistics of an LU or port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsInfo {
    /// Commands that read data.
    pub read_cmds: u64,
    /// Commands that wrote data.
    pub write_cmds: u64,
    /// Other commands.
    pub other_cmds: u64,
    /// Bytes sent to initiators.
    pub read_bytes: u64,
    /// Bytes received from initiators.
    pub write_bytes: u64,
    /// Commands completed with a status other than GOOD.
    pub errors: u64,
    /// Tasks aborted.
    pub aborted: u64,
    /// Latency histogram: `latency_us_log2[i]` counts commands that took < 2^i µs
    /// (the last bucket is open-ended).
    pub latency_us_log2: Vec<u64>,
}

/// An LU as the core sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LuInfo {
    /// GUID.
    pub guid: Guid,
    /// Alias.
    pub alias: String,
    /// Provider name.
    pub provider: String,
    /// State.
    pub state: ObjState,
    /// Why the LU was forced offline, if it was.
    pub failed: Option<String>,
    /// Number of view entries.
    pub views: usize,
    /// Statistics.
    pub stats: StatsInfo,
    /// The provider's own description (JSON object), for `-v`.
    pub details: serde_json::Value,
}

/// A session (I_T nexus).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Core-assigned id.
    pub id: u64,
    /// Initiator port name.
    pub initiator: String,
    /// Initiator alias.
    pub alias: String,
    /// The port did not prove the initiator name: host-group views do not apply.
    #[serde(default)]
    pub name_unproven: bool,
    /// LUNs mapped for this nexus.
    pub luns: Vec<u16>,
}

/// A local (target) port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LportInfo {
    /// SCSI name (e.g. target IQN).
    pub name: String,
    /// Alias.
    pub alias: String,
    /// Protocol.
    pub protocol: String,
    /// Provider name.
    pub provider: String,
    /// Relative target port identifier.
    pub relative_id: u16,
    /// State.
    pub state: ObjState,
    /// Why it was forced offline, if it was.
    pub failed: Option<String>,
    /// Live sessions.
    pub sessions: Vec<SessionInfo>,
    /// Statistics.
    pub stats: StatsInfo,
}

/// A host group or target group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Member names.
    pub members: Vec<String>,
}

/// A view entry of an LU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewEntry {
    /// LU the entry belongs to.
    pub guid: Guid,
    /// Entry index (unique per LU).
    pub index: u32,
    /// Host group, `None` for all hosts.
    pub host_group: Option<String>,
    /// Target group, `None` for all targets.
    pub target_group: Option<String>,
    /// LUN (0..=16383).
    pub lun: u16,
}

/// Operational summary (`list-state`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateInfo {
    /// `online` once the daemon serves.
    pub operational: String,
    /// `initialized` once the saved configuration was restored.
    pub config: String,
    /// Counts.
    pub providers: usize,
    /// LUs registered.
    pub lus: usize,
    /// Local ports registered.
    pub targets: usize,
    /// Live sessions.
    pub sessions: usize,
    /// Core version.
    pub version: String,
    /// ABI version spoken.
    pub abi_version: u32,
}

/// The core's part of the persisted configuration: groups, views and admin-set states.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreConfig {
    /// Host groups.
    #[serde(default)]
    pub host_groups: Vec<GroupInfo>,
    /// Target groups.
    #[serde(default)]
    pub target_groups: Vec<GroupInfo>,
    /// View entries.
    #[serde(default)]
    pub views: Vec<ViewEntry>,
    /// LUs the admin took offline (they stay offline across restarts).
    #[serde(default)]
    pub offline_lus: Vec<Guid>,
    /// Targets the admin took offline.
    #[serde(default)]
    pub offline_targets: Vec<String>,
}

/// Tunables of the core.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// How long a provider may take to complete an abort before its object is offlined.
    pub abort_timeout_ms: u64,
    /// How long a provider may take to complete ONLINE/OFFLINE.
    pub ctl_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            abort_timeout_ms: 5000,
            ctl_timeout_ms: 10000,
        }
    }
}
