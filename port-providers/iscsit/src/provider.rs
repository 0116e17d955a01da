//! The provider: `create` from the saved configuration, `control` for itadm, and
//! `save_config`.
//!
//! Control requests are JSON objects with an `op` (itadm's subcommands): targets,
//! target portal groups, initiator contexts and defaults. Each change is made on a copy
//! of the configuration, validated, applied to the run time (local ports registered,
//! portals listening) and only then committed; a failure leaves everything as it was.
//! A portal with port 0 gets a free port when it starts listening, and the configuration
//! records that port.

use crate::config::{
    AuthPolicy, ChapCredentials, DigestPolicy, InitiatorContext, IscsitConfig, MutualChap, Portal,
    Secret, TargetAuth, TargetConfig, Tpg, DEFAULT_TPG_TAG, ISCSI_PORT,
};
use crate::limits::Limits;
use crate::names::IscsiName;
use crate::runtime::Runtime;
use plugins_sdk::{Provider, ProviderContext, ProviderKind};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

/// The iSCSI target port provider.
pub struct IscsitProvider {
    rt: Arc<Runtime>,
    /// Serialises control requests.
    ops: Mutex<()>,
}

/// A string field that may be cleared with `"none"` or `""` (itadm's `-l none`).
fn cleared(v: &Option<String>) -> Option<Option<String>> {
    v.as_ref().map(|s| {
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            None
        } else {
            Some(s.clone())
        }
    })
}

/// A member that may be absent (keep), `null` (back to the default) or a value.
fn tristate<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A target's digest policy: `none|header|data|both`, or `default` (the defaults').
fn target_digests(s: &str) -> Result<Option<DigestPolicy>, String> {
    if s.eq_ignore_ascii_case("default") {
        return Ok(None);
    }
    s.parse::<DigestPolicy>()
        .map(Some)
        .map_err(|e| format!("{e} (or default)"))
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
enum Request {
    CreateTarget {
        name: Option<String>,
        alias: Option<String>,
        #[serde(default)]
        tpgs: Vec<String>,
        #[serde(default)]
        portals: Vec<String>,
        auth: Option<TargetAuth>,
        chap_user: Option<String>,
        chap_secret: Option<String>,
        mutual_chap_user: Option<String>,
        mutual_chap_secret: Option<String>,
        acl: Option<Vec<String>>,
        digests: Option<String>,
        nop_interval_ms: Option<u64>,
        nop_timeout_ms: Option<u64>,
    },
    ModifyTarget {
        name: String,
        alias: Option<String>,
        tpgs: Option<Vec<String>>,
        auth: Option<TargetAuth>,
        chap_user: Option<String>,
        chap_secret: Option<String>,
        mutual_chap_user: Option<String>,
        mutual_chap_secret: Option<String>,
        acl: Option<Vec<String>>,
        digests: Option<String>,
        #[serde(default, deserialize_with = "tristate")]
        nop_interval_ms: Option<Option<u64>>,
        #[serde(default, deserialize_with = "tristate")]
        nop_timeout_ms: Option<Option<u64>>,
    },
    DeleteTarget {
        name: String,
        #[serde(default)]
        force: bool,
    },
    ListTarget {
        name: Option<String>,
        #[serde(default)]
        verbose: bool,
    },
    CreateTpg {
        name: String,
        portals: Vec<String>,
    },
    DeleteTpg {
        name: String,
        #[serde(default)]
        force: bool,
    },
    ListTpg {
        name: Option<String>,
    },
    CreateInitiator {
        name: String,
        chap_user: Option<String>,
        chap_secret: Option<String>,
    },
    ModifyInitiator {
        name: String,
        chap_user: Option<String>,
        chap_secret: Option<String>,
    },
    DeleteInitiator {
        name: String,
    },
    ListInitiator {
        name: Option<String>,
    },
    ModifyDefaults {
        auth: Option<AuthPolicy>,
        alias: Option<String>,
        portals: Option<Vec<String>>,
        digests: Option<DigestPolicy>,
        nop_interval_ms: Option<u64>,
        nop_timeout_ms: Option<u64>,
        /// Some fields of [`crate::limits::Limits`]; the others keep their values.
        limits: Option<serde_json::Map<String, Value>>,
        /// `none`, `chap`, or `default` (follow `auth`).
        discovery_auth: Option<String>,
        /// CHAP user of the discovery account (default: `discovery`).
        discovery_chap_user: Option<String>,
        /// Secret of the discovery account (`none` removes the account).
        discovery_chap_secret: Option<String>,
    },
    ListDefaults,
    ListResources,
    /// Failed-authentication counters and throttled sources.
    ListAuthStats,
}

/// The user of a discovery account made without one.
const DISCOVERY_USER: &str = "discovery";

fn name_of(s: &str) -> Result<IscsiName, String> {
    IscsiName::parse(s).map_err(|e| format!("invalid iSCSI name {s:?}: {e}"))
}

fn secret(s: &str) -> Result<Secret, String> {
    Secret::new(s).map_err(|e| e.to_string())
}

/// Parses `ip[:port]` / `[ipv6][:port]`; port 0 is allowed (any free port).
fn portal_addr(s: &str) -> Result<SocketAddr, String> {
    let bad = || format!("invalid portal {s:?}: expected a.b.c.d[:port] or [ipv6][:port]");
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, ISCSI_PORT));
    }
    let v6 = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(bad)?;
    Ok(SocketAddr::new(
        v6.parse::<IpAddr>().map_err(|_| bad())?,
        ISCSI_PORT,
    ))
}

/// `current` with the fields named in `patch` replaced (unknown fields are refused).
fn patch_limits(current: &Limits, patch: serde_json::Map<String, Value>) -> Result<Limits, String> {
    let mut v = serde_json::to_value(current).map_err(|e| e.to_string())?;
    if let Value::Object(m) = &mut v {
        m.extend(patch);
    }
    serde_json::from_value(v).map_err(|e| format!("invalid limits: {e}"))
}

fn auto_name() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        b = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            .to_be_bytes();
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("iqn.2026-11.org.rstmf:{hex}")
}

impl IscsitProvider {
    fn cfg(&self) -> IscsitConfig {
        self.rt.config_read().clone()
    }

    /// Binds each portal (port 0 picks one) and returns them as configured portals.
    fn bind_portals(&self, portals: &[String]) -> Result<Vec<Portal>, String> {
        let mut out = Vec::new();
        for p in portals {
            let addr = portal_addr(p)?;
            let bound = self
                .rt
                .listen(addr)
                .map_err(|e| format!("cannot listen on portal {addr}: {e}"))?;
            out.push(Portal(bound));
        }
        Ok(out)
    }

    /// Listens on the default portals while a target is served on the default portal
    /// group; a portal with port 0 gets its port (recorded in `cfg`).
    fn listen_default_portals(&self, cfg: &mut IscsitConfig) -> Result<(), String> {
        if !cfg.uses_default_tpg() {
            return Ok(());
        }
        for p in cfg.defaults.portals.iter_mut() {
            let bound = self
                .rt
                .listen(p.addr())
                .map_err(|e| format!("cannot listen on default portal {p}: {e}"))?;
            *p = Portal(bound);
        }
        Ok(())
    }

    fn defaults_json(cfg: &IscsitConfig) -> Value {
        let d = &cfg.defaults;
        json!({
            "auth": d.auth,
            "alias": d.alias,
            "isns": d.isns,
            "portals": d.portals.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "digests": d.digests,
            "nop_interval_ms": d.nop_interval_ms,
            "nop_timeout_ms": d.nop_timeout_ms,
            "limits": d.limits,
            "discovery_auth": d.discovery_auth.map_or(json!("default"), |a| json!(a)),
            "effective_discovery_auth": cfg.effective_auth(None),
            "discovery_chap_user": d.discovery_chap.as_ref().map(|c| c.user.clone()),
            "discovery_chap_secret_set": d.discovery_chap.is_some(),
        })
    }

    /// What the limits hold now: buffer memory, connections, refusals.
    fn resources_json(&self) -> Value {
        let rt = &self.rt;
        let b = &rt.buffers;
        let (open, login) = rt.admission.counts();
        let [conns, logins, source, fds] = rt.admission.refused();
        let sessions: Vec<Value> = rt
            .sessions()
            .iter()
            .map(|s| {
                let a = &s.account;
                json!({
                    "tsih": s.tsih,
                    "initiator": s.key.initiator.as_str(),
                    "buffer_memory": a.memory.used(),
                    "buffers_out": a.out(),
                    "buffer_memory_limit": a.memory.limit(),
                    "buffer_refusals": a.memory.refused(),
                })
            })
            .collect();
        json!({
            "buffer_memory": {
                "used": b.used(),
                "limit": b.limit(),
                "peak": b.peak(),
                "refused": b.refused(),
            },
            "connections": {"open": open, "in_login": login},
            "refused": {
                "max_connections": conns,
                "max_login_connections": logins,
                "max_login_per_source": source,
                "descriptors": fds,
            },
            "sessions": sessions,
        })
    }

    fn free_tag(cfg: &IscsitConfig) -> Result<u16, String> {
        (2..=u16::MAX)
            .find(|t| cfg.tpg(*t).is_none())
            .ok_or_else(|| "no target portal group tag left".to_string())
    }

    fn tags_of(cfg: &IscsitConfig, names: &[String]) -> Result<Vec<u16>, String> {
        names
            .iter()
            .map(|n| {
                if n == "default" {
                    return Ok(DEFAULT_TPG_TAG);
                }
                cfg.tpgs
                    .iter()
                    .find(|g| &g.name == n)
                    .map(|g| g.tag)
                    .ok_or_else(|| format!("target portal group {n:?} does not exist"))
            })
            .filter(|t| t.as_ref().map_or(true, |t| *t != DEFAULT_TPG_TAG))
            .collect()
    }

    fn commit(&self, cfg: IscsitConfig) -> Result<(), String> {
        cfg.validate().map_err(|e| e.to_string())?;
        self.rt.set_config(cfg);
        self.rt.sync_listeners();
        Ok(())
    }

    fn portal_list(cfg: &IscsitConfig, t: &TargetConfig) -> Vec<String> {
        if t.tpg_tags.is_empty() {
            return cfg.defaults.portals.iter().map(|p| p.to_string()).collect();
        }
        t.tpg_tags
            .iter()
            .filter_map(|tag| cfg.tpg(*tag))
            .flat_map(|g| g.portals.iter().map(|p| p.to_string()))
            .collect()
    }

    fn target_json(&self, cfg: &IscsitConfig, t: &TargetConfig, verbose: bool) -> Value {
        let rt = self.rt.target(&t.name);
        let state = rt.as_ref().map_or("offline", |r| r.state_name());
        let sessions = rt.as_ref().map_or_else(Vec::new, |r| r.sessions());
        let tpgs: Vec<Value> = t
            .tpg_tags
            .iter()
            .filter_map(|tag| cfg.tpg(*tag))
            .map(|g| json!({"name": g.name, "tag": g.tag, "portals": g.portals.iter().map(|p| p.to_string()).collect::<Vec<_>>()}))
            .collect();
        let mut v = json!({
            "name": t.name.as_str(),
            "alias": cfg.alias_of(t),
            "state": state,
            "sessions": sessions.len(),
            "portals": Self::portal_list(cfg, t),
            "tpgs": tpgs,
        });
        if verbose {
            v["auth"] = json!(t.auth);
            v["effective_auth"] = json!(cfg.effective_auth(Some(t)));
            let ka = cfg.keepalive_of(Some(t));
            v["digests"] = json!(t.digests.map_or("default", DigestPolicy::as_str));
            v["effective_digests"] = json!(cfg.digests_of(Some(t)));
            v["nop_interval_ms"] = json!(t.nop_interval_ms);
            v["nop_timeout_ms"] = json!(t.nop_timeout_ms);
            v["effective_nop_interval_ms"] = json!(ka.interval_ms);
            v["effective_nop_timeout_ms"] = json!(ka.timeout_ms);
            v["chap_user"] = json!(t.chap.as_ref().map(|c| c.user.clone()));
            v["chap_secret_set"] = json!(t.chap.is_some());
            v["mutual_chap_user"] = json!(t.mutual_chap.as_ref().and_then(|m| m.user.clone()));
            v["mutual_chap_secret_set"] = json!(t.mutual_chap.is_some());
            v["acl"] = json!(t.acl.iter().map(IscsiName::as_str).collect::<Vec<_>>());
            v["session_list"] = json!(sessions
                .iter()
                .map(|s| json!({
                    "initiator": s.key.initiator.as_str(),
                    "alias": s.initiator_alias,
                    "isid": s.key.isid.0.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                    "tsih": s.tsih,
                    "identity": s.identity,
                    "connections": s.conns().iter().map(|c| json!({"cid": c.cid(), "local": c.local.to_string(), "peer": c.peer.to_string()})).collect::<Vec<_>>(),
                }))
                .collect::<Vec<_>>());
        }
        v
    }

    fn apply_chap(
        t: &mut TargetConfig,
        chap_user: Option<String>,
        chap_secret: Option<String>,
        mutual_user: Option<String>,
        mutual_secret: Option<String>,
    ) -> Result<(), String> {
        if let Some(sec) = chap_secret {
            if sec.is_empty() || sec.eq_ignore_ascii_case("none") {
                t.chap = None;
            } else {
                let user = cleared(&chap_user)
                    .unwrap_or_else(|| t.chap.as_ref().map(|c| c.user.clone()))
                    .unwrap_or_else(|| t.name.to_string());
                t.chap = Some(ChapCredentials {
                    user,
                    secret: secret(&sec)?,
                });
            }
        } else if let Some(u) = chap_user {
            let name = t.name.to_string();
            let c = t.chap.as_mut().ok_or_else(|| {
                format!("target {name} has no CHAP secret: give one with the CHAP user")
            })?;
            c.user = cleared(&Some(u)).flatten().unwrap_or(name);
        }
        if let Some(sec) = mutual_secret {
            if sec.is_empty() || sec.eq_ignore_ascii_case("none") {
                t.mutual_chap = None;
            } else {
                t.mutual_chap = Some(MutualChap {
                    user: mutual_user,
                    secret: secret(&sec)?,
                });
            }
        } else if let (Some(u), Some(m)) = (mutual_user, t.mutual_chap.as_mut()) {
            m.user = cleared(&Some(u)).flatten();
        }
        Ok(())
    }

    /// The discovery account: a secret (re)makes it (user kept, or given, or
    /// [`DISCOVERY_USER`]); `none` removes it; a user alone renames it.
    fn apply_discovery_chap(
        cfg: &mut IscsitConfig,
        user: Option<String>,
        secret_text: Option<String>,
    ) -> Result<(), String> {
        let d = &mut cfg.defaults;
        match secret_text {
            Some(s) if s.is_empty() || s.eq_ignore_ascii_case("none") => d.discovery_chap = None,
            Some(s) => {
                let user = cleared(&user)
                    .flatten()
                    .or_else(|| d.discovery_chap.as_ref().map(|c| c.user.clone()))
                    .unwrap_or_else(|| DISCOVERY_USER.to_owned());
                d.discovery_chap = Some(ChapCredentials {
                    user,
                    secret: secret(&s)?,
                });
            }
            None => {
                if let Some(u) = user {
                    let c = d.discovery_chap.as_mut().ok_or_else(|| {
                        "there is no discovery account: give its secret with the user".to_string()
                    })?;
                    c.user = cleared(&Some(u))
                        .flatten()
                        .unwrap_or_else(|| DISCOVERY_USER.to_owned());
                }
            }
        }
        Ok(())
    }

    fn handle(&self, req: Request) -> Result<Value, String> {
        match req {
            Request::CreateTarget {
                name,
                alias,
                tpgs,
                portals,
                auth,
                chap_user,
                chap_secret,
                mutual_chap_user,
                mutual_chap_secret,
                acl,
                digests,
                nop_interval_ms,
                nop_timeout_ms,
            } => {
                let name = name_of(&name.unwrap_or_else(auto_name))?;
                let mut cfg = self.cfg();
                if cfg.target(&name).is_some() {
                    return Err(format!("target {name} already exists"));
                }
                let mut t = TargetConfig::new(name.clone());
                t.alias = cleared(&alias).flatten();
                t.auth = auth.unwrap_or_default();
                t.tpg_tags = Self::tags_of(&cfg, &tpgs)?;
                t.digests = digests
                    .as_deref()
                    .map(target_digests)
                    .transpose()?
                    .flatten();
                t.nop_interval_ms = nop_interval_ms;
                t.nop_timeout_ms = nop_timeout_ms;
                if let Some(acl) = acl {
                    t.acl = acl.iter().map(|a| name_of(a)).collect::<Result<_, _>>()?;
                }
                Self::apply_chap(
                    &mut t,
                    chap_user,
                    chap_secret,
                    mutual_chap_user,
                    mutual_chap_secret,
                )?;
                if !portals.is_empty() {
                    let bound = self.bind_portals(&portals)?;
                    let tag = Self::free_tag(&cfg)?;
                    cfg.tpgs.push(Tpg {
                        name: name.to_string(),
                        tag,
                        portals: bound,
                    });
                    t.tpg_tags.push(tag);
                }
                cfg.targets.push(t.clone());
                let valid = self
                    .listen_default_portals(&mut cfg)
                    .and_then(|()| cfg.validate().map_err(|e| e.to_string()));
                if let Err(e) = valid {
                    self.rt.sync_listeners();
                    return Err(e);
                }
                let alias = cfg.alias_of(&t).unwrap_or("").to_owned();
                if let Err(e) = self.rt.add_target(&t, &alias) {
                    self.rt.sync_listeners();
                    return Err(e);
                }
                let reply = json!({
                    "name": name.as_str(),
                    "portals": Self::portal_list(&cfg, &t),
                });
                self.commit(cfg)?;
                Ok(reply)
            }
            Request::ModifyTarget {
                name,
                alias,
                tpgs,
                auth,
                chap_user,
                chap_secret,
                mutual_chap_user,
                mutual_chap_secret,
                acl,
                digests,
                nop_interval_ms,
                nop_timeout_ms,
            } => {
                let name = name_of(&name)?;
                let mut cfg = self.cfg();
                let digests = digests.as_deref().map(target_digests).transpose()?;
                let tags = match &tpgs {
                    Some(t) => Some(Self::tags_of(&cfg, t)?),
                    None => None,
                };
                let t = cfg
                    .targets
                    .iter_mut()
                    .find(|t| t.name == name)
                    .ok_or_else(|| format!("target {name} does not exist"))?;
                if let Some(a) = cleared(&alias) {
                    t.alias = a;
                }
                if let Some(a) = auth {
                    t.auth = a;
                }
                if let Some(tags) = tags {
                    t.tpg_tags = tags;
                }
                if let Some(d) = digests {
                    t.digests = d;
                }
                if let Some(i) = nop_interval_ms {
                    t.nop_interval_ms = i;
                }
                if let Some(to) = nop_timeout_ms {
                    t.nop_timeout_ms = to;
                }
                if let Some(acl) = acl {
                    t.acl = acl.iter().map(|a| name_of(a)).collect::<Result<_, _>>()?;
                }
                Self::apply_chap(
                    t,
                    chap_user,
                    chap_secret,
                    mutual_chap_user,
                    mutual_chap_secret,
                )?;
                let t = t.clone();
                if let Err(e) = self.listen_default_portals(&mut cfg) {
                    self.rt.sync_listeners();
                    return Err(e);
                }
                self.commit(cfg.clone())?;
                Ok(self.target_json(&cfg, &t, true))
            }
            Request::DeleteTarget { name, force } => {
                let name = name_of(&name)?;
                let mut cfg = self.cfg();
                if cfg.target(&name).is_none() {
                    return Err(format!("target {name} does not exist"));
                }
                if let Some(t) = self.rt.target(&name) {
                    let n = t.sessions().len();
                    if n > 0 && !force {
                        return Err(format!(
                            "target {name} has {n} session(s); use force to log them out"
                        ));
                    }
                }
                self.rt.remove_target(&name)?;
                cfg.targets.retain(|t| t.name != name);
                // The portal group made for the target's own portals goes with it.
                let own = cfg
                    .tpgs
                    .iter()
                    .find(|g| g.name == name.as_str())
                    .map(|g| g.tag);
                if let Some(tag) = own {
                    if !cfg.targets.iter().any(|t| t.tpg_tags.contains(&tag)) {
                        cfg.tpgs.retain(|g| g.tag != tag);
                    }
                }
                self.commit(cfg)?;
                Ok(json!({"deleted": name.as_str()}))
            }
            Request::ListTarget { name, verbose } => {
                let cfg = self.cfg();
                let filter = name.as_deref().map(name_of).transpose()?;
                let list: Vec<Value> = cfg
                    .targets
                    .iter()
                    .filter(|t| filter.as_ref().is_none_or(|n| &t.name == n))
                    .map(|t| self.target_json(&cfg, t, verbose))
                    .collect();
                if let (Some(n), true) = (&filter, list.is_empty()) {
                    return Err(format!("target {n} does not exist"));
                }
                Ok(json!({ "targets": list }))
            }
            Request::CreateTpg { name, portals } => {
                let mut cfg = self.cfg();
                if cfg.tpgs.iter().any(|g| g.name == name) {
                    return Err(format!("target portal group {name:?} already exists"));
                }
                if portals.is_empty() {
                    return Err(format!(
                        "target portal group {name:?} needs at least one portal"
                    ));
                }
                let bound = self.bind_portals(&portals)?;
                let tag = Self::free_tag(&cfg)?;
                cfg.tpgs.push(Tpg {
                    name: name.clone(),
                    tag,
                    portals: bound.clone(),
                });
                if let Err(e) = self.commit(cfg) {
                    self.rt.sync_listeners();
                    return Err(e);
                }
                Ok(
                    json!({"name": name, "tag": tag, "portals": bound.iter().map(|p| p.to_string()).collect::<Vec<_>>()}),
                )
            }
            Request::DeleteTpg { name, force } => {
                let mut cfg = self.cfg();
                let tag = cfg
                    .tpgs
                    .iter()
                    .find(|g| g.name == name)
                    .map(|g| g.tag)
                    .ok_or_else(|| format!("target portal group {name:?} does not exist"))?;
                let users: Vec<String> = cfg
                    .targets
                    .iter()
                    .filter(|t| t.tpg_tags.contains(&tag))
                    .map(|t| t.name.to_string())
                    .collect();
                if !users.is_empty() && !force {
                    return Err(format!(
                        "target portal group {name:?} is used by {}; use force",
                        users.join(", ")
                    ));
                }
                for t in cfg.targets.iter_mut() {
                    t.tpg_tags.retain(|x| *x != tag);
                }
                cfg.tpgs.retain(|g| g.tag != tag);
                // A target left without a group falls back to the default portal group.
                if let Err(e) = self.listen_default_portals(&mut cfg) {
                    tracing::warn!("iscsit: {e}");
                }
                self.commit(cfg)?;
                Ok(json!({"deleted": name}))
            }
            Request::ListTpg { name } => {
                let cfg = self.cfg();
                let list: Vec<Value> = cfg
                    .tpgs
                    .iter()
                    .filter(|g| name.as_ref().is_none_or(|n| &g.name == n))
                    .map(|g| {
                        let users: Vec<&str> = cfg
                            .targets
                            .iter()
                            .filter(|t| t.tpg_tags.contains(&g.tag))
                            .map(|t| t.name.as_str())
                            .collect();
                        json!({"name": g.name, "tag": g.tag, "portals": g.portals.iter().map(|p| p.to_string()).collect::<Vec<_>>(), "targets": users})
                    })
                    .collect();
                if let (Some(n), true) = (&name, list.is_empty()) {
                    return Err(format!("target portal group {n:?} does not exist"));
                }
                Ok(json!({ "tpgs": list }))
            }
            Request::CreateInitiator {
                name,
                chap_user,
                chap_secret,
            } => {
                let name = name_of(&name)?;
                let mut cfg = self.cfg();
                if cfg.initiator(&name).is_some() {
                    return Err(format!("initiator {name} already exists"));
                }
                cfg.initiators.push(InitiatorContext {
                    name: name.clone(),
                    chap_user: cleared(&chap_user).flatten(),
                    chap_secret: chap_secret.as_deref().map(secret).transpose()?,
                });
                self.commit(cfg)?;
                Ok(json!({"name": name.as_str()}))
            }
            Request::ModifyInitiator {
                name,
                chap_user,
                chap_secret,
            } => {
                let name = name_of(&name)?;
                let mut cfg = self.cfg();
                let i = cfg
                    .initiators
                    .iter_mut()
                    .find(|i| i.name == name)
                    .ok_or_else(|| format!("initiator {name} does not exist"))?;
                if let Some(u) = cleared(&chap_user) {
                    i.chap_user = u;
                }
                if let Some(s) = cleared(&chap_secret) {
                    i.chap_secret = s.as_deref().map(secret).transpose()?;
                }
                self.commit(cfg)?;
                Ok(json!({"name": name.as_str()}))
            }
            Request::DeleteInitiator { name } => {
                let name = name_of(&name)?;
                let mut cfg = self.cfg();
                let before = cfg.initiators.len();
                cfg.initiators.retain(|i| i.name != name);
                if cfg.initiators.len() == before {
                    return Err(format!("initiator {name} does not exist"));
                }
                self.commit(cfg)?;
                Ok(json!({"deleted": name.as_str()}))
            }
            Request::ListInitiator { name } => {
                let cfg = self.cfg();
                let filter = name.as_deref().map(name_of).transpose()?;
                let list: Vec<Value> = cfg
                    .initiators
                    .iter()
                    .filter(|i| filter.as_ref().is_none_or(|n| &i.name == n))
                    .map(|i| json!({"name": i.name.as_str(), "chap_user": i.chap_user, "chap_secret_set": i.chap_secret.is_some()}))
                    .collect();
                if let (Some(n), true) = (&filter, list.is_empty()) {
                    return Err(format!("initiator {n} does not exist"));
                }
                Ok(json!({ "initiators": list }))
            }
            Request::ModifyDefaults {
                auth,
                alias,
                portals,
                digests,
                nop_interval_ms,
                nop_timeout_ms,
                limits,
                discovery_auth,
                discovery_chap_user,
                discovery_chap_secret,
            } => {
                let mut cfg = self.cfg();
                if let Some(a) = auth {
                    cfg.defaults.auth = a;
                }
                if let Some(a) = discovery_auth {
                    cfg.defaults.discovery_auth = match a.to_ascii_lowercase().as_str() {
                        "default" => None,
                        "none" => Some(AuthPolicy::None),
                        "chap" => Some(AuthPolicy::Chap),
                        _ => {
                            return Err(format!(
                                "invalid discovery auth {a:?}: expected none, chap or default"
                            ))
                        }
                    };
                }
                Self::apply_discovery_chap(&mut cfg, discovery_chap_user, discovery_chap_secret)?;
                if let Some(patch) = limits {
                    cfg.defaults.limits = patch_limits(&cfg.defaults.limits, patch)?;
                }
                if let Some(a) = cleared(&alias) {
                    cfg.defaults.alias = a;
                }
                if let Some(d) = digests {
                    cfg.defaults.digests = d;
                }
                if let Some(i) = nop_interval_ms {
                    cfg.defaults.nop_interval_ms = i;
                }
                if let Some(t) = nop_timeout_ms {
                    cfg.defaults.nop_timeout_ms = t;
                }
                if let Some(ps) = portals {
                    if ps.is_empty() {
                        return Err("the default portal group needs at least one portal".into());
                    }
                    let mut out = Vec::with_capacity(ps.len());
                    for p in &ps {
                        let addr = portal_addr(p)?;
                        // Port 0 is resolved now, so the configuration records a real port.
                        let addr = if addr.port() == 0 {
                            self.rt
                                .listen(addr)
                                .map_err(|e| format!("cannot listen on portal {addr}: {e}"))?
                        } else {
                            addr
                        };
                        out.push(Portal(addr));
                    }
                    cfg.defaults.portals = out;
                }
                let listened = self
                    .listen_default_portals(&mut cfg)
                    .and_then(|()| cfg.validate().map_err(|e| e.to_string()));
                if let Err(e) = listened {
                    self.rt.sync_listeners();
                    return Err(e);
                }
                let reply = Self::defaults_json(&cfg);
                self.commit(cfg)?;
                Ok(reply)
            }
            Request::ListDefaults => Ok(Self::defaults_json(&self.cfg())),
            Request::ListResources => Ok(self.resources_json()),
            Request::ListAuthStats => {
                serde_json::to_value(self.rt.auth_stats()).map_err(|e| e.to_string())
            }
        }
    }
}

impl Provider for IscsitProvider {
    const NAME: &'static str = "iscsit";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "iSCSI target port provider (RFC 7143 over TCP)";
    const KIND: ProviderKind = ProviderKind::PORT;

    fn create(ctx: ProviderContext, config: &str) -> Result<Self, String> {
        let cfg = if config.trim().is_empty() {
            IscsitConfig::default()
        } else {
            IscsitConfig::from_json(config).map_err(|e| format!("iscsit: {e}"))?
        };
        let rt = Runtime::start(ctx.host(), cfg.clone())
            .map_err(|e| format!("iscsit: cannot start the event loops: {e}"))?;
        let p = IscsitProvider {
            rt,
            ops: Mutex::new(()),
        };
        let default_portals: &[Portal] = if cfg.uses_default_tpg() {
            &cfg.defaults.portals
        } else {
            &[]
        };
        for g in cfg
            .tpgs
            .iter()
            .map(|g| g.portals.as_slice())
            .chain([default_portals])
        {
            for portal in g {
                if let Err(e) = p.rt.listen(portal.addr()) {
                    tracing::error!(portal = %portal, "iscsit: cannot listen on a configured portal: {e}");
                }
            }
        }
        for t in &cfg.targets {
            let alias = cfg.alias_of(t).unwrap_or("").to_owned();
            if let Err(e) = p.rt.add_target(t, &alias) {
                tracing::error!("iscsit: {e}");
            }
        }
        Ok(p)
    }

    fn control(&self, request: &str) -> Result<String, String> {
        let _g = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let req: Request =
            serde_json::from_str(request).map_err(|e| format!("iscsit: invalid request: {e}"))?;
        self.handle(req).map(|v| v.to_string())
    }

    fn save_config(&self) -> String {
        self.rt.config_read().to_json().unwrap_or_default()
    }

    fn shutdown(&self) {
        for t in self.rt.targets() {
            if let Err(e) = self.rt.remove_target(&t.name) {
                tracing::warn!("iscsit: {e}");
            }
        }
        self.rt.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_account() {
        let mut cfg = IscsitConfig::default();
        let none = |u: Option<&str>| u.map(str::to_owned);
        let err = IscsitProvider::apply_discovery_chap(&mut cfg, none(Some("u")), None);
        assert!(err.unwrap_err().contains("no discovery account"));
        IscsitProvider::apply_discovery_chap(&mut cfg, None, none(Some("disc-secret-123")))
            .unwrap();
        let c = cfg.defaults.discovery_chap.clone().unwrap();
        assert_eq!(c.user, DISCOVERY_USER);
        IscsitProvider::apply_discovery_chap(&mut cfg, none(Some("alice")), None).unwrap();
        assert_eq!(cfg.defaults.discovery_chap.as_ref().unwrap().user, "alice");
        let e = IscsitProvider::apply_discovery_chap(&mut cfg, None, none(Some("short")));
        assert!(e.unwrap_err().contains("at least 12"));
        IscsitProvider::apply_discovery_chap(&mut cfg, None, none(Some("none"))).unwrap();
        assert!(cfg.defaults.discovery_chap.is_none());
    }

    #[test]
    fn portals_allow_port_zero_and_ipv6() {
        assert_eq!(portal_addr("127.0.0.1:0").unwrap().port(), 0);
        assert_eq!(portal_addr("127.0.0.1").unwrap().port(), 3260);
        assert_eq!(portal_addr("[::1]").unwrap(), "[::1]:3260".parse().unwrap());
        assert_eq!(portal_addr("[::1]:0").unwrap().port(), 0);
        assert!(portal_addr("host:1").is_err());
    }

    #[test]
    fn requests_parse() {
        let r: Request = serde_json::from_str(
            r#"{"op":"create-target","name":"iqn.2026-11.org.rstmf:default","portals":["127.0.0.1:3260"]}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::CreateTarget { .. }));
        let r: Request = serde_json::from_str(r#"{"op":"list-defaults"}"#).unwrap();
        assert!(matches!(r, Request::ListDefaults));
        let r: Request = serde_json::from_str(r#"{"op":"list-auth-stats"}"#).unwrap();
        assert!(matches!(r, Request::ListAuthStats));
        assert!(serde_json::from_str::<Request>(r#"{"op":"bogus"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"create-tpg","name":"a"}"#).is_err());
        assert!(auto_name().starts_with("iqn.2026-11.org.rstmf:"));
        assert_eq!(cleared(&Some("none".into())), Some(None));
        assert_eq!(cleared(&None), None);
    }
}
