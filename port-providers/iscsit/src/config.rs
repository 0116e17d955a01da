//! The iscsit object model (reference/comstar.md §5.1, §5.4): targets, target portal
//! groups, initiator contexts and defaults, with validation and serde.
//!
//! Pure data: no I/O. The port provider owns an [`IscsitConfig`], changes it through
//! its control operations, validates it with [`IscsitConfig::validate`] and persists
//! it as JSON ([`IscsitConfig::to_json`] / [`IscsitConfig::from_json`]).
//!
//! CHAP secrets are [`Secret`]s: serialized (the configuration must persist them)
//! but never printed by `Debug`, and zeroed when dropped.
//!
//! Who may log in to a target is decided by an [`AccessPolicy`]. [`AclPolicy`] uses
//! the target's own ACL (empty = every initiator); the provider can substitute a
//! closure that also consults stmf host groups and views.

#![warn(missing_docs)]

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

pub use crate::auth::Identity;
use crate::limits::{LimitError, Limits};
use crate::names::IscsiName;

pub use idm::chap::{Secret, SecretError, MAX_SECRET_LEN, MIN_SECRET_LEN};

/// Longest CHAP user name, alias or TPG name.
pub const MAX_LABEL_LEN: usize = 255;
/// Tag of the default target portal group (COMSTAR `iscsit-default-tpg`): a target
/// bound to no TPG is served on every portal with this tag.
pub const DEFAULT_TPG_TAG: u16 = 1;
/// The IANA iSCSI port.
pub const ISCSI_PORT: u16 = 3260;

/// A CHAP account: the name sent in CHAP_N and the shared secret.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChapCredentials {
    /// CHAP user name.
    pub user: String,
    /// CHAP secret.
    pub secret: Secret,
}

impl PartialEq for ChapCredentials {
    fn eq(&self, other: &Self) -> bool {
        self.user == other.user && self.secret.ct_eq(&other.secret)
    }
}

impl Eq for ChapCredentials {}

/// The target's own CHAP identity, used when the initiator asks the target to
/// authenticate itself (mutual CHAP).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MutualChap {
    /// CHAP_N the target sends; defaults to the target name (COMSTAR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The target's secret; must differ from every secret initiators use.
    pub secret: Secret,
}

/// A global authentication method (itadm `modify-defaults -a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthPolicy {
    /// No authentication.
    #[default]
    None,
    /// CHAP (MD5), one-way or mutual.
    Chap,
}

/// A target's authentication method (itadm `create-target -a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetAuth {
    /// Whatever [`Defaults::auth`] says.
    #[default]
    Default,
    /// No authentication.
    None,
    /// CHAP.
    Chap,
}

/// Which digests a target requires (itadm `--digest`). CRC32C is the only digest; what is
/// not required is accepted either way (the initiator's preference wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestPolicy {
    /// Nothing required: HeaderDigest and DataDigest as the initiator prefers.
    #[default]
    None,
    /// HeaderDigest=CRC32C required.
    Header,
    /// DataDigest=CRC32C required.
    Data,
    /// Both required.
    Both,
}

impl DigestPolicy {
    /// (header, data) required.
    pub fn required(self) -> (bool, bool) {
        match self {
            DigestPolicy::None => (false, false),
            DigestPolicy::Header => (true, false),
            DigestPolicy::Data => (false, true),
            DigestPolicy::Both => (true, true),
        }
    }

    /// The policy's name, as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestPolicy::None => "none",
            DigestPolicy::Header => "header",
            DigestPolicy::Data => "data",
            DigestPolicy::Both => "both",
        }
    }
}

impl FromStr for DigestPolicy {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(DigestPolicy::None),
            "header" => Ok(DigestPolicy::Header),
            "data" => Ok(DigestPolicy::Data),
            "both" => Ok(DigestPolicy::Both),
            _ => Err(ConfigError::BadDigestPolicy(s.to_owned())),
        }
    }
}

/// Default idle time of a full-feature connection before a keepalive NOP-In (ms).
pub const DEFAULT_NOP_INTERVAL_MS: u64 = 10_000;
/// Default time a keepalive NOP-In may stay unanswered before the connection is dropped
/// (ms).
pub const DEFAULT_NOP_TIMEOUT_MS: u64 = 15_000;
/// Longest keepalive interval or timeout (one day, in ms).
pub const MAX_NOP_MS: u64 = 86_400_000;

fn default_nop_interval() -> u64 {
    DEFAULT_NOP_INTERVAL_MS
}

fn default_nop_timeout() -> u64 {
    DEFAULT_NOP_TIMEOUT_MS
}

/// The default portal group's portals when nothing is configured: COMSTAR's
/// `iscsit-default-tpg`, every IPv4 address on port 3260.
pub fn default_portals() -> Vec<Portal> {
    vec![Portal(SocketAddr::new(
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        ISCSI_PORT,
    ))]
}

/// A network portal: IPv4 `a.b.c.d:port` or IPv6 `[addr]:port`; the port defaults
/// to 3260. Serialized in that text form.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Portal(pub SocketAddr);

impl Portal {
    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.0
    }

    /// True for `0.0.0.0` and `[::]` (listen on every interface).
    pub fn is_wildcard(&self) -> bool {
        self.0.ip().is_unspecified()
    }
}

impl FromStr for Portal {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::BadPortal(s.to_owned());
        let addr = if let Ok(sa) = s.parse::<SocketAddr>() {
            sa
        } else if let Ok(ip) = s.parse::<IpAddr>() {
            SocketAddr::new(ip, ISCSI_PORT)
        } else if let Some(v6) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            SocketAddr::new(v6.parse::<IpAddr>().map_err(|_| bad())?, ISCSI_PORT)
        } else {
            return Err(bad());
        };
        if addr.port() == 0 {
            return Err(bad());
        }
        Ok(Portal(addr))
    }
}

impl TryFrom<String> for Portal {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, ConfigError> {
        s.parse()
    }
}

impl From<Portal> for String {
    fn from(p: Portal) -> String {
        p.to_string()
    }
}

impl fmt::Display for Portal {
    /// `a.b.c.d:port` or `[v6]:port`, the TargetAddress form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Portal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Portal({})", self.0)
    }
}

/// A target portal group: a named set of portals with a tag (itadm `create-tpg`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tpg {
    /// Name (unique).
    pub name: String,
    /// Target portal group tag, 2..=65535 (1 is the default TPG).
    pub tag: u16,
    /// Portals (at least one).
    pub portals: Vec<Portal>,
}

/// An iSCSI target node (one stmf local port).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The target's iSCSI name.
    pub name: IscsiName,
    /// TargetAlias (falls back to [`Defaults::alias`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Tags of the TPGs the target is served on; empty = the default TPG (tag 1,
    /// every portal).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tpg_tags: Vec<u16>,
    /// Authentication method.
    #[serde(default)]
    pub auth: TargetAuth,
    /// A per-target CHAP account initiators may authenticate with (tgt/LIO style), in
    /// addition to the secrets of initiator contexts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<ChapCredentials>,
    /// The target's own identity for mutual CHAP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutual_chap: Option<MutualChap>,
    /// Initiators allowed to see and log in to this target; empty = every initiator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acl: Vec<IscsiName>,
    /// Digests required (absent: [`Defaults::digests`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digests: Option<DigestPolicy>,
    /// Keepalive NOP-In interval in ms, 0 = no keepalive (absent: the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nop_interval_ms: Option<u64>,
    /// Keepalive answer timeout in ms (absent: the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nop_timeout_ms: Option<u64>,
}

impl TargetConfig {
    /// A target with defaults: default auth, default TPG, no CHAP, open ACL.
    pub fn new(name: IscsiName) -> Self {
        Self {
            name,
            alias: None,
            tpg_tags: Vec::new(),
            auth: TargetAuth::Default,
            chap: None,
            mutual_chap: None,
            acl: Vec::new(),
            digests: None,
            nop_interval_ms: None,
            nop_timeout_ms: None,
        }
    }

    /// Whether the ACL lets `initiator` in (an empty ACL lets everyone in).
    pub fn acl_allows(&self, initiator: &IscsiName) -> bool {
        self.acl.is_empty() || self.acl.contains(initiator)
    }

    /// Whether the target is served on the portal group with `tag`.
    pub fn serves_tag(&self, tag: u16) -> bool {
        if self.tpg_tags.is_empty() {
            tag == DEFAULT_TPG_TAG
        } else {
            self.tpg_tags.contains(&tag)
        }
    }
}

/// An initiator context: CHAP account of one initiator (itadm `create-initiator`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitiatorContext {
    /// Initiator name.
    pub name: IscsiName,
    /// CHAP_N the initiator sends; defaults to its iSCSI name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_user: Option<String>,
    /// The initiator's CHAP secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap_secret: Option<Secret>,
}

/// Global settings (itadm `modify-defaults`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Authentication for targets with [`TargetAuth::Default`] and for discovery sessions.
    #[serde(default)]
    pub auth: AuthPolicy,
    /// Alias of targets that have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// iSNS registration (not implemented; must stay off).
    #[serde(default)]
    pub isns: bool,
    /// Portals of the default portal group (tag 1), which serves every target bound to no
    /// portal group. Listened on while such a target exists.
    #[serde(default = "default_portals")]
    pub portals: Vec<Portal>,
    /// Digests required of targets that do not say.
    #[serde(default)]
    pub digests: DigestPolicy,
    /// Idle time before a keepalive NOP-In, in ms (0 = no keepalive).
    #[serde(default = "default_nop_interval")]
    pub nop_interval_ms: u64,
    /// Time a keepalive NOP-In may stay unanswered, in ms.
    #[serde(default = "default_nop_timeout")]
    pub nop_timeout_ms: u64,
    /// The resource budget (docs/security.md).
    #[serde(default)]
    pub limits: Limits,
    /// Authentication of discovery sessions (absent: [`Defaults::auth`], as before this
    /// setting existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_auth: Option<AuthPolicy>,
    /// A CHAP account for discovery sessions of initiators that have no initiator
    /// context of their own (LIO's discovery_auth). It proves no name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_chap: Option<ChapCredentials>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            auth: AuthPolicy::default(),
            alias: None,
            isns: false,
            portals: default_portals(),
            digests: DigestPolicy::None,
            nop_interval_ms: DEFAULT_NOP_INTERVAL_MS,
            nop_timeout_ms: DEFAULT_NOP_TIMEOUT_MS,
            limits: Limits::default(),
            discovery_auth: None,
            discovery_chap: None,
        }
    }
}

/// Keepalive settings in force for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveSettings {
    /// Idle time before a NOP-In (ms); 0 = none.
    pub interval_ms: u64,
    /// Time a NOP-In may stay unanswered (ms).
    pub timeout_ms: u64,
}

/// The whole iscsit configuration.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IscsitConfig {
    /// Global defaults.
    #[serde(default)]
    pub defaults: Defaults,
    /// Target portal groups.
    #[serde(default)]
    pub tpgs: Vec<Tpg>,
    /// Targets.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Initiator contexts.
    #[serde(default)]
    pub initiators: Vec<InitiatorContext>,
}

/// A configuration the model refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The JSON does not parse or does not fit the model (the message says where).
    #[error("invalid iscsit configuration: {0}")]
    Json(String),
    /// A resource limit out of its range.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A portal that is not `ip[:port]` or `[ipv6][:port]`.
    #[error("invalid portal {0:?}: expected a.b.c.d[:port] or [ipv6][:port]")]
    BadPortal(String),
    /// Two targets with one name.
    #[error("target {0} is defined twice")]
    DuplicateTarget(IscsiName),
    /// Two initiator contexts with one name.
    #[error("initiator {0} is defined twice")]
    DuplicateInitiator(IscsiName),
    /// Two TPGs with one tag.
    #[error("target portal group tag {0} is used twice")]
    DuplicateTpgTag(u16),
    /// Two TPGs with one name.
    #[error("target portal group {0:?} is defined twice")]
    DuplicateTpgName(String),
    /// A TPG tag of 0 or 1 (1 is the default TPG).
    #[error("target portal group {name:?} has tag {tag}; tags 2..=65535 are available (1 is the default TPG)")]
    ReservedTpgTag {
        /// TPG name.
        name: String,
        /// The tag.
        tag: u16,
    },
    /// A TPG with no portals.
    #[error("target portal group {0:?} has no portals")]
    EmptyTpg(String),
    /// An empty or over-long TPG name.
    #[error("target portal group name {0:?} must be 1 to 255 characters without controls")]
    BadTpgName(String),
    /// A target bound to a tag no TPG has.
    #[error("target {target} is bound to target portal group tag {tag}, which does not exist")]
    UnknownTpg {
        /// Target name.
        target: IscsiName,
        /// The tag.
        tag: u16,
    },
    /// One portal reached through two portal groups of one target (RFC 7143 §4.4.1:
    /// a portal belongs to exactly one portal group of a node).
    #[error("portal {portal} of target {target} is in two of its target portal groups")]
    PortalInTwoGroups {
        /// Target name.
        target: IscsiName,
        /// The portal.
        portal: Portal,
    },
    /// An alias that is too long or has control characters.
    #[error("alias of {owner} must be at most 255 bytes without control characters")]
    BadAlias {
        /// Who owns the alias.
        owner: String,
    },
    /// A CHAP user name that is empty, too long or has control characters.
    #[error("CHAP user of {owner} must be 1 to 255 bytes without control characters")]
    BadChapUser {
        /// Who owns the account.
        owner: String,
    },
    /// The target's mutual-CHAP secret is also used to authenticate initiators.
    #[error("mutual CHAP secret of target {0} is also used to authenticate initiators; RFC 7143 §12.1.3 forbids one secret in both directions")]
    SecretReused(IscsiName),
    /// iSNS is not implemented.
    #[error("iSNS is not supported yet; set \"isns\": false")]
    IsnsUnsupported,
    /// A digest policy other than none, header, data, both.
    #[error("invalid digest policy {0:?}: expected none, header, data or both")]
    BadDigestPolicy(String),
    /// A keepalive interval or timeout out of range.
    #[error("keepalive of {owner}: the interval must be 0 (off) to 86400000 ms and the timeout 1 to 86400000 ms")]
    BadKeepalive {
        /// Whose setting.
        owner: String,
    },
    /// The default portal group has no portals.
    #[error("the default portal group needs at least one portal")]
    NoDefaultPortals,
}

fn label_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_LABEL_LEN && !s.chars().any(char::is_control)
}

fn keepalive_ok(interval: Option<u64>, timeout: Option<u64>) -> bool {
    interval.is_none_or(|i| i <= MAX_NOP_MS)
        && timeout.is_none_or(|t| (1..=MAX_NOP_MS).contains(&t))
}

fn alias_ok(s: &str) -> bool {
    s.len() <= MAX_LABEL_LEN && !s.chars().any(char::is_control)
}

impl IscsitConfig {
    /// Parses and validates a JSON configuration.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let cfg: IscsitConfig =
            serde_json::from_str(json).map_err(|e| ConfigError::Json(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration as pretty JSON (secrets included: store it with care).
    pub fn to_json(&self) -> Result<String, ConfigError> {
        serde_json::to_string_pretty(self).map_err(|e| ConfigError::Json(e.to_string()))
    }

    /// Checks the cross-object rules: unique names and tags, known TPG tags, one
    /// portal group per portal per target, CHAP users and aliases, and mutual-CHAP
    /// secrets distinct from initiator secrets. Secret lengths are checked when a
    /// [`Secret`] is built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.defaults.isns {
            return Err(ConfigError::IsnsUnsupported);
        }
        if let Some(a) = &self.defaults.alias {
            if !alias_ok(a) {
                return Err(ConfigError::BadAlias {
                    owner: "the defaults".into(),
                });
            }
        }
        if !keepalive_ok(
            Some(self.defaults.nop_interval_ms),
            Some(self.defaults.nop_timeout_ms),
        ) {
            return Err(ConfigError::BadKeepalive {
                owner: "the defaults".into(),
            });
        }
        if self.defaults.portals.is_empty() {
            return Err(ConfigError::NoDefaultPortals);
        }
        self.defaults.limits.validate()?;
        let mut tags = HashSet::new();
        let mut tpg_names = HashSet::new();
        for tpg in &self.tpgs {
            if !label_ok(&tpg.name) {
                return Err(ConfigError::BadTpgName(tpg.name.clone()));
            }
            if tpg.tag <= DEFAULT_TPG_TAG {
                return Err(ConfigError::ReservedTpgTag {
                    name: tpg.name.clone(),
                    tag: tpg.tag,
                });
            }
            if !tags.insert(tpg.tag) {
                return Err(ConfigError::DuplicateTpgTag(tpg.tag));
            }
            if !tpg_names.insert(tpg.name.as_str()) {
                return Err(ConfigError::DuplicateTpgName(tpg.name.clone()));
            }
            if tpg.portals.is_empty() {
                return Err(ConfigError::EmptyTpg(tpg.name.clone()));
            }
        }
        if let Some(c) = &self.defaults.discovery_chap {
            if !label_ok(&c.user) {
                return Err(ConfigError::BadChapUser {
                    owner: "the discovery account".into(),
                });
            }
        }
        let mut initiators = HashSet::new();
        for ini in &self.initiators {
            if !initiators.insert(&ini.name) {
                return Err(ConfigError::DuplicateInitiator(ini.name.clone()));
            }
            if ini.chap_user.as_deref().is_some_and(|u| !label_ok(u)) {
                return Err(ConfigError::BadChapUser {
                    owner: format!("initiator {}", ini.name),
                });
            }
        }
        let mut targets = HashSet::new();
        for t in &self.targets {
            if !targets.insert(&t.name) {
                return Err(ConfigError::DuplicateTarget(t.name.clone()));
            }
            self.validate_target(t)?;
        }
        Ok(())
    }

    fn validate_target(&self, t: &TargetConfig) -> Result<(), ConfigError> {
        if t.alias.as_deref().is_some_and(|a| !alias_ok(a)) {
            return Err(ConfigError::BadAlias {
                owner: format!("target {}", t.name),
            });
        }
        let mut portals = HashSet::new();
        for &tag in &t.tpg_tags {
            let tpg = self.tpg(tag).ok_or_else(|| ConfigError::UnknownTpg {
                target: t.name.clone(),
                tag,
            })?;
            for p in &tpg.portals {
                if !portals.insert(*p) {
                    return Err(ConfigError::PortalInTwoGroups {
                        target: t.name.clone(),
                        portal: *p,
                    });
                }
            }
        }
        let owner = || format!("target {}", t.name);
        if !keepalive_ok(t.nop_interval_ms, t.nop_timeout_ms) {
            return Err(ConfigError::BadKeepalive { owner: owner() });
        }
        if t.chap.as_ref().is_some_and(|c| !label_ok(&c.user)) {
            return Err(ConfigError::BadChapUser { owner: owner() });
        }
        if let Some(m) = &t.mutual_chap {
            if m.user.as_deref().is_some_and(|u| !label_ok(u)) {
                return Err(ConfigError::BadChapUser { owner: owner() });
            }
            let reused = t.chap.iter().any(|c| c.secret.ct_eq(&m.secret))
                || self
                    .defaults
                    .discovery_chap
                    .iter()
                    .any(|c| c.secret.ct_eq(&m.secret))
                || self
                    .initiators
                    .iter()
                    .filter_map(|i| i.chap_secret.as_ref())
                    .any(|s| s.ct_eq(&m.secret));
            if reused {
                return Err(ConfigError::SecretReused(t.name.clone()));
            }
        }
        Ok(())
    }

    /// The target named `name`.
    pub fn target(&self, name: &IscsiName) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| &t.name == name)
    }

    /// The initiator context of `name`.
    pub fn initiator(&self, name: &IscsiName) -> Option<&InitiatorContext> {
        self.initiators.iter().find(|i| &i.name == name)
    }

    /// The TPG with `tag`.
    pub fn tpg(&self, tag: u16) -> Option<&Tpg> {
        self.tpgs.iter().find(|t| t.tag == tag)
    }

    /// The authentication a login to `target` needs (`None`: a discovery session, which
    /// follows [`Defaults::discovery_auth`], or [`Defaults::auth`] when that is unset).
    pub fn effective_auth(&self, target: Option<&TargetConfig>) -> AuthPolicy {
        match target.map(|t| t.auth) {
            Some(TargetAuth::None) => AuthPolicy::None,
            Some(TargetAuth::Chap) => AuthPolicy::Chap,
            Some(TargetAuth::Default) => self.defaults.auth,
            None => self.defaults.discovery_auth.unwrap_or(self.defaults.auth),
        }
    }

    /// The digests required for a login to `target` (`None`: a discovery session).
    pub fn digests_of(&self, target: Option<&TargetConfig>) -> DigestPolicy {
        target
            .and_then(|t| t.digests)
            .unwrap_or(self.defaults.digests)
    }

    /// The keepalive settings of connections to `target` (`None`: discovery).
    pub fn keepalive_of(&self, target: Option<&TargetConfig>) -> KeepaliveSettings {
        KeepaliveSettings {
            interval_ms: target
                .and_then(|t| t.nop_interval_ms)
                .unwrap_or(self.defaults.nop_interval_ms),
            timeout_ms: target
                .and_then(|t| t.nop_timeout_ms)
                .unwrap_or(self.defaults.nop_timeout_ms),
        }
    }

    /// True when some target is served on the default portal group.
    pub fn uses_default_tpg(&self) -> bool {
        self.targets.iter().any(|t| t.tpg_tags.is_empty())
    }

    /// The portals of the portal group with `tag` (the defaults' for tag 1).
    pub fn portals_of(&self, tag: u16) -> &[Portal] {
        if tag == DEFAULT_TPG_TAG {
            &self.defaults.portals
        } else {
            self.tpg(tag).map_or(&[], |g| g.portals.as_slice())
        }
    }

    /// The alias announced for `target`.
    pub fn alias_of<'a>(&'a self, target: &'a TargetConfig) -> Option<&'a str> {
        target.alias.as_deref().or(self.defaults.alias.as_deref())
    }

    /// The one CHAP account a login of `initiator` to `target` (`None`: discovery) may
    /// prove it holds, and what proving it establishes (docs/security.md,
    /// "Authentication"):
    ///
    /// - the initiator's own context, when it has a secret: only that secret, and it
    ///   proves the name ([`Identity::Proven`]); no shared account is tried for a name
    ///   that has its own secret;
    /// - otherwise the target's account (the defaults' discovery account for discovery
    ///   sessions): it shows the host knows a shared secret, not who it is
    ///   ([`Identity::SharedSecret`]).
    pub fn chap_account<'a>(
        &'a self,
        initiator: &'a IscsiName,
        target: Option<&'a TargetConfig>,
    ) -> Option<(crate::chap::ChapAccount<'a>, Identity)> {
        if let Some(ctx) = self.initiator(initiator) {
            if let Some(secret) = &ctx.chap_secret {
                let user = ctx.chap_user.as_deref().unwrap_or(initiator.as_str());
                return Some((crate::chap::ChapAccount { user, secret }, Identity::Proven));
            }
        }
        let shared = match target {
            Some(t) => t.chap.as_ref(),
            None => self.defaults.discovery_chap.as_ref(),
        }?;
        let account = crate::chap::ChapAccount {
            user: &shared.user,
            secret: &shared.secret,
        };
        Some((account, Identity::SharedSecret))
    }

    /// The target's own CHAP account for mutual CHAP (user defaults to its name).
    pub fn mutual_account<'a>(
        &'a self,
        target: Option<&'a TargetConfig>,
    ) -> Option<crate::chap::ChapAccount<'a>> {
        let t = target?;
        let m = t.mutual_chap.as_ref()?;
        Some(crate::chap::ChapAccount {
            user: m.user.as_deref().unwrap_or(t.name.as_str()),
            secret: &m.secret,
        })
    }
}

/// Decides whether an initiator may see (SendTargets) and log in to a target.
///
/// Implemented by [`AclPolicy`] and by any `Fn(&IscsiName, &TargetConfig) -> bool`,
/// so the provider can plug in stmf host groups and views later.
pub trait AccessPolicy {
    /// True when `initiator` may access `target`.
    fn may_access(&self, initiator: &IscsiName, target: &TargetConfig) -> bool;

    /// True when a host that claims `initiator` with `identity` may access `target`.
    /// A name that is not proven ([`Identity::SharedSecret`]) gets only what is not
    /// keyed by it: the open access of an empty ACL, if the policy grants it.
    fn may_access_as(
        &self,
        initiator: &IscsiName,
        identity: Identity,
        target: &TargetConfig,
    ) -> bool {
        self.may_access(initiator, target) && (identity.name_honoured() || target.acl.is_empty())
    }
}

/// The built-in policy: the target's ACL, where an empty ACL admits everyone.
#[derive(Debug, Clone, Copy, Default)]
pub struct AclPolicy;

impl AccessPolicy for AclPolicy {
    fn may_access(&self, initiator: &IscsiName, target: &TargetConfig) -> bool {
        target.acl_allows(initiator)
    }
}

impl<F> AccessPolicy for F
where
    F: Fn(&IscsiName, &TargetConfig) -> bool,
{
    fn may_access(&self, initiator: &IscsiName, target: &TargetConfig) -> bool {
        self(initiator, target)
    }
}

/// Run-time state of a target as the provider sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetState {
    /// Accepting logins.
    #[default]
    Online,
    /// Configured but offline (stmf local port not online): login status 0x0301.
    Offline,
    /// Being deleted: login status 0x0204.
    Removed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> IscsiName {
        IscsiName::parse(s).unwrap()
    }

    #[test]
    fn secret_lengths() {
        assert_eq!(Secret::new("short").unwrap_err(), SecretError::TooShort(5));
        assert_eq!(
            Secret::new("a".repeat(11)).unwrap_err(),
            SecretError::TooShort(11)
        );
        assert_eq!(Secret::new("a".repeat(12)).unwrap().len(), 12);
        assert_eq!(Secret::new("a".repeat(255)).unwrap().len(), 255);
        assert_eq!(
            Secret::new("a".repeat(256)).unwrap_err(),
            SecretError::TooLong(256)
        );
        assert_eq!(Secret::new("abcdefghijk\0l").unwrap_err(), SecretError::Nul);
        let e = SecretError::TooShort(8).to_string();
        assert!(e.contains("8 bytes") && e.contains("at least 12"), "{e}");
    }

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("supersecret-123").unwrap();
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        let c = ChapCredentials {
            user: "alice".into(),
            secret: s.clone(),
        };
        let dbg = format!("{c:?} {:#?}", c);
        assert!(!dbg.contains("supersecret"), "{dbg}");
        // But it is persisted.
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"user":"alice","secret":"supersecret-123"}"#);
        assert!(s.ct_eq(&Secret::new("supersecret-123").unwrap()));
        assert!(!s.ct_eq(&Secret::new("supersecret-124").unwrap()));
    }

    #[test]
    fn short_secret_refused_in_json() {
        let json = r#"{"targets":[{"name":"iqn.2026-11.org.rstmf:t","auth":"chap",
            "chap":{"user":"u","secret":"tooshort"}}]}"#;
        let err = IscsitConfig::from_json(json).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Json(_)));
        assert!(
            msg.contains("8 bytes") && msg.contains("at least 12"),
            "{msg}"
        );
        assert!(!msg.contains("tooshort"), "secret leaked: {msg}");
    }

    #[test]
    fn portals() {
        let p: Portal = "10.0.0.1:3261".parse().unwrap();
        assert_eq!(p.to_string(), "10.0.0.1:3261");
        let p: Portal = "10.0.0.1".parse().unwrap();
        assert_eq!(p.to_string(), "10.0.0.1:3260");
        let p: Portal = "[fe80::1]:3260".parse().unwrap();
        assert_eq!(p.to_string(), "[fe80::1]:3260");
        let p: Portal = "[2001:db8::5]".parse().unwrap();
        assert_eq!(p.to_string(), "[2001:db8::5]:3260");
        let p: Portal = "2001:db8::5".parse().unwrap();
        assert_eq!(p.to_string(), "[2001:db8::5]:3260");
        assert!("0.0.0.0:3260".parse::<Portal>().unwrap().is_wildcard());
        for bad in [
            "",
            "host:3260",
            "10.0.0.1:0",
            "10.0.0.1:99999",
            "[fe80::1",
            "1.2.3.4:x",
        ] {
            assert!(bad.parse::<Portal>().is_err(), "{bad}");
        }
    }

    fn sample() -> IscsitConfig {
        let json = r#"{
          "defaults": {"auth": "none", "alias": "rstmf"},
          "tpgs": [
            {"name": "a", "tag": 2, "portals": ["10.0.0.1:3260", "[fe80::1]:3260"]},
            {"name": "b", "tag": 3, "portals": ["10.0.1.1"]}
          ],
          "targets": [
            {"name": "iqn.2026-11.org.rstmf:t1", "tpg_tags": [2, 3], "auth": "chap",
             "chap": {"user": "t1user", "secret": "target1secret"},
             "mutual_chap": {"secret": "mutual-secret-1"},
             "acl": ["iqn.1994-05.com.redhat:host1"]},
            {"name": "IQN.2026-11.org.rstmf:T2", "alias": "two"}
          ],
          "initiators": [
            {"name": "iqn.1994-05.com.redhat:host1", "chap_secret": "host1-secret!"}
          ]
        }"#;
        IscsitConfig::from_json(json).unwrap()
    }

    #[test]
    fn model_round_trip() {
        let cfg = sample();
        let t2 = cfg.target(&name("iqn.2026-11.org.rstmf:t2")).unwrap();
        assert_eq!(cfg.alias_of(t2), Some("two"));
        assert!(t2.serves_tag(DEFAULT_TPG_TAG) && !t2.serves_tag(2));
        assert_eq!(cfg.effective_auth(Some(t2)), AuthPolicy::None);
        let t1 = cfg.target(&name("iqn.2026-11.org.rstmf:t1")).unwrap();
        assert_eq!(cfg.alias_of(t1), Some("rstmf"));
        assert_eq!(cfg.effective_auth(Some(t1)), AuthPolicy::Chap);
        assert!(t1.serves_tag(3) && !t1.serves_tag(1));
        let host1 = name("iqn.1994-05.com.redhat:host1");
        // A name with its own secret is proven by that secret alone.
        let (a, id) = cfg.chap_account(&host1, Some(t1)).unwrap();
        assert_eq!(
            (a.user, id),
            ("iqn.1994-05.com.redhat:host1", Identity::Proven)
        );
        assert_eq!(a.secret.expose(), b"host1-secret!");
        // Any other name may use the target's account, which proves no name.
        let host2 = name("iqn.1994-05.com.redhat:host2");
        let (a, id) = cfg.chap_account(&host2, Some(t1)).unwrap();
        assert_eq!((a.user, id), ("t1user", Identity::SharedSecret));
        // No account at all for host2 on t2 or in discovery.
        assert!(cfg.chap_account(&host2, Some(t2)).is_none());
        assert!(cfg.chap_account(&host2, None).is_none());
        let (_, id) = cfg.chap_account(&host1, None).unwrap();
        assert_eq!(id, Identity::Proven);
        assert_eq!(
            cfg.mutual_account(Some(t1)).unwrap().user,
            "iqn.2026-11.org.rstmf:t1"
        );
        assert!(AclPolicy.may_access(&host1, t1));
        assert!(!AclPolicy.may_access(&name("iqn.1994-05.com.redhat:host2"), t1));
        assert!(AclPolicy.may_access(&name("iqn.1994-05.com.redhat:host2"), t2));
        let json = cfg.to_json().unwrap();
        let back = IscsitConfig::from_json(&json).unwrap();
        assert_eq!(back.to_json().unwrap(), json);
        assert!(json.contains("\"target1secret\""));
        assert!(!format!("{cfg:?}").contains("target1secret"));
    }

    #[test]
    fn closures_are_policies() {
        let cfg = sample();
        let t1 = cfg.target(&name("iqn.2026-11.org.rstmf:t1")).unwrap();
        let deny_all = |_: &IscsiName, _: &TargetConfig| false;
        assert!(!deny_all.may_access(&name("iqn.1994-05.com.redhat:host1"), t1));
    }

    #[test]
    fn validation_errors() {
        let base = sample();
        let mut c = base.clone();
        c.targets.push(c.targets[0].clone());
        assert!(matches!(c.validate(), Err(ConfigError::DuplicateTarget(_))));

        let mut c = base.clone();
        c.tpgs[1].tag = 2;
        assert_eq!(c.validate(), Err(ConfigError::DuplicateTpgTag(2)));

        let mut c = base.clone();
        c.tpgs[1].tag = 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ReservedTpgTag { tag: 1, .. })
        ));

        let mut c = base.clone();
        c.tpgs[1].name = "a".into();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DuplicateTpgName(_))
        ));

        let mut c = base.clone();
        c.tpgs[1].portals.clear();
        assert!(matches!(c.validate(), Err(ConfigError::EmptyTpg(_))));

        let mut c = base.clone();
        c.targets[0].tpg_tags.push(9);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::UnknownTpg { tag: 9, .. })
        ));

        let mut c = base.clone();
        c.tpgs[1].portals.push("10.0.0.1:3260".parse().unwrap());
        assert!(matches!(
            c.validate(),
            Err(ConfigError::PortalInTwoGroups { .. })
        ));

        let mut c = base.clone();
        c.targets[0].mutual_chap.as_mut().unwrap().secret = Secret::new("host1-secret!").unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::SecretReused(_))));

        let mut c = base.clone();
        c.targets[0].mutual_chap.as_mut().unwrap().secret = Secret::new("target1secret").unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::SecretReused(_))));

        let mut c = base.clone();
        c.targets[0].chap.as_mut().unwrap().user = String::new();
        assert!(matches!(c.validate(), Err(ConfigError::BadChapUser { .. })));

        let mut c = base.clone();
        c.targets[1].alias = Some("a\nb".into());
        assert!(matches!(c.validate(), Err(ConfigError::BadAlias { .. })));

        let mut c = base.clone();
        c.defaults.isns = true;
        assert_eq!(c.validate(), Err(ConfigError::IsnsUnsupported));

        let mut c = base;
        c.initiators.push(c.initiators[0].clone());
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DuplicateInitiator(_))
        ));

        assert!(matches!(
            IscsitConfig::from_json(r#"{"targets":[{"name":"iqn.2026-11.x:y","bogus":1}]}"#),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            IscsitConfig::from_json(r#"{"targets":[{"name":"not-a-name"}]}"#),
            Err(ConfigError::Json(_))
        ));
    }
}
