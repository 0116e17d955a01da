//! # sbd: the SCSI block device LU provider of rstmf
//!
//! Serves logical units backed by a regular file (sparse or preallocated), a block device or
//! RAM, with the SPC-4/SBC-3 command set a disk needs (see `docs/sbd.md` for the list, the
//! design choices and the measurements). Loaded by the core as a shared library like any
//! third-party provider.
//!
//! * [`SbdProvider`]: management requests ([`Provider::control`]) and the saved
//!   configuration (which LUs to re-import at start).
//! * [`lu::SbdLu`]: one LU and its command set; the data path and where it runs are described
//!   in that module.
//! * [`backing`]: the stores; [`meta`]: what is kept with an LU so `import-lu` brings it back;
//!   [`pr`]: persistent reservations; [`scsi`]: parameter data encoders.
//!
//! ## Management requests (JSON)
//!
//! | request | reply |
//! |---|---|
//! | `{"op":"create-lu","backing":"file","path":"/d/lu0.img","size":"10g","props":{...}}` | `{"guid":"600144F0…"}` |
//! | `{"op":"create-lu","backing":"ram","size":67108864}` | `{"guid":…}` |
//! | `{"op":"create-lu","backing":"bdev","path":"/dev/sdb","props":{"meta":"/var/lib/rstmf/sdb.meta"}}` | `{"guid":…}` |
//! | `{"op":"import-lu","path":"/d/lu0.img"}` (the data file or its `.meta`) | `{"guid":…}` |
//! | `{"op":"modify-lu","guid":…,"props":{"alias":"x","wcd":true},"size":"20g"}` | `{"guid":…}` |
//! | `{"op":"delete-lu","guid":…,"keep_views":true}` (data and metadata are kept) | `{"deleted":…}` |
//! | `{"op":"list-lu"}` | `{"lus":[{…}]}` |
//!
//! Properties (stmfadm's names): `alias`, `blk` (512 or 4096), `guid`, `meta`, `mgmt-url`,
//! `pid`, `serial`, `vid`, `wcd` (write-back cache disabled), `wp` (write protect), `thin`,
//! `sanitize-rate` (bytes per second a SANITIZE OVERWRITE may write; 0, the default, is no
//! limit). `blk`, `guid`, `meta`, `pid`, `serial`, `vid` and `thin` are create-only.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod backing;
use plugins_sdk::scsi::naa as guid;
pub mod lu;
pub mod meta;
mod pool;
pub mod pr;
mod rangelock;
pub mod scsi;
mod sys;

use backing::{Backing, BackingKind, BdevStore, FileStore, RamStore};
use lu::{Registry, SbdLu};
use meta::{default_meta_path, LuMeta, SavedMode, META_FORMAT, META_VERSION};
use plugins_sdk::{Host, LuHandle, Provider, ProviderContext, ProviderKind, Status};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A 16-byte NAA identifier.
pub type Guid = [u8; 16];

/// Version of the saved provider configuration.
const CONFIG_VERSION: u32 = 1;
/// Smallest LU (COMSTAR's minimum).
const MIN_SIZE: u64 = 1 << 20;
/// Default number of I/O workers.
const DEFAULT_WORKERS: usize = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Errors of management requests (shown to the admin as their message).
#[derive(Debug, thiserror::Error)]
pub enum SbdError {
    /// The request is not valid JSON or not a known request.
    #[error("invalid request: {0}")]
    Request(String),
    /// A property or size is invalid.
    #[error("{0}")]
    Invalid(String),
    /// No such LU.
    #[error("no LU {0}")]
    NotFound(String),
    /// The LU exists already.
    #[error("LU {0} exists already")]
    Exists(String),
    /// Metadata could not be read or written.
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    /// The backing store could not be opened or created.
    #[error("{path}: {source}")]
    Store {
        /// The data file or device.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The core refused.
    #[error("the core refused LU {guid}: {status}")]
    Core {
        /// The LU.
        guid: String,
        /// The core's status.
        status: Status,
    },
}

fn invalid(msg: impl Into<String>) -> SbdError {
    SbdError::Invalid(msg.into())
}

/// LU properties of create-lu / modify-lu.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Props {
    alias: Option<String>,
    #[serde(alias = "block_size", alias = "block-size")]
    blk: Option<Value>,
    guid: Option<String>,
    meta: Option<PathBuf>,
    #[serde(rename = "mgmt-url", alias = "mgmt_url")]
    mgmt_url: Option<String>,
    pid: Option<String>,
    serial: Option<String>,
    vid: Option<String>,
    wcd: Option<Value>,
    wp: Option<Value>,
    thin: Option<Value>,
    /// SANITIZE OVERWRITE rate limit, bytes per second (`0`: none).
    #[serde(rename = "sanitize-rate", alias = "sanitize_rate")]
    sanitize_rate: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
enum Request {
    #[serde(rename = "create-lu")]
    Create {
        #[serde(default = "default_backing")]
        backing: BackingKind,
        path: Option<PathBuf>,
        size: Option<Value>,
        #[serde(default)]
        props: Props,
        /// Shorthand for `props.alias` (stmfd's embedded default sends it at top level).
        alias: Option<String>,
    },
    #[serde(rename = "delete-lu")]
    Delete {
        guid: String,
        #[serde(default)]
        keep_views: bool,
    },
    #[serde(rename = "import-lu")]
    Import { path: PathBuf },
    #[serde(rename = "modify-lu")]
    Modify {
        /// The LU, by GUID ...
        guid: Option<String>,
        /// ... or by its data or metadata file.
        path: Option<PathBuf>,
        #[serde(default)]
        props: Props,
        size: Option<Value>,
    },
    #[serde(rename = "list-lu")]
    List { guid: Option<String> },
}

fn default_backing() -> BackingKind {
    BackingKind::File
}

/// One entry of the saved configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum SavedLu {
    /// A file or device LU: its metadata file.
    Meta(PathBuf),
    /// A RAM LU: its whole definition.
    Ram(Box<LuMeta>),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedConfig {
    version: u32,
    #[serde(default)]
    workers: Option<usize>,
    #[serde(default)]
    lus: Vec<SavedLu>,
}

/// Parses a size: a number of bytes, or a string with an optional k/m/g/t/p suffix.
fn parse_size(v: &Value) -> Result<u64, SbdError> {
    let bad = || {
        invalid(format!(
            "invalid size {v}: a number of bytes or a string like \"64m\", \"10g\""
        ))
    };
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(bad),
        Value::String(s) => {
            let s = s.trim().to_ascii_lowercase();
            let (digits, shift) = match s.chars().last() {
                Some('k') => (&s[..s.len() - 1], 10),
                Some('m') => (&s[..s.len() - 1], 20),
                Some('g') => (&s[..s.len() - 1], 30),
                Some('t') => (&s[..s.len() - 1], 40),
                Some('p') => (&s[..s.len() - 1], 50),
                _ => (s.as_str(), 0),
            };
            let n: u64 = digits.parse().map_err(|_| bad())?;
            n.checked_mul(1u64 << shift).ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

fn parse_flag(name: &str, v: &Value) -> Result<bool, SbdError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(invalid(format!(
                "property {name}: {s:?} is not true or false"
            ))),
        },
        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
        _ => Err(invalid(format!(
            "property {name}: {v} is not true or false"
        ))),
    }
}

fn check_ascii(name: &str, s: &str, max: usize) -> Result<(), SbdError> {
    if s.len() > max {
        return Err(invalid(format!(
            "property {name} is longer than {max} bytes"
        )));
    }
    if !s.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        return Err(invalid(format!("property {name} must be printable ASCII")));
    }
    Ok(())
}

/// The core's handle of a registered LU.
struct CoreLu(LuHandle);

// SAFETY: an LuHandle is an opaque token the core hands out and validates on every call; it
// is never dereferenced here, and the core accepts it from any thread.
unsafe impl Send for CoreLu {}
// SAFETY: as above; the token is never mutated.
unsafe impl Sync for CoreLu {}

struct Registered {
    lu: Arc<SbdLu>,
    handle: CoreLu,
    saved: SavedLu,
}

/// A saved LU that could not be brought back at start (kept in the configuration).
struct Failed {
    saved: SavedLu,
    reason: String,
}

/// The provider instance.
pub struct SbdProvider {
    host: Host,
    pool: Arc<pool::Pool<lu::Job>>,
    registry: Arc<Registry>,
    lus: Mutex<BTreeMap<Guid, Registered>>,
    failed: Mutex<Vec<Failed>>,
}

/// The JSON `list-lu` shows for an LU.
pub(crate) fn lu_info(lu: &SbdLu) -> Value {
    let m = lu.meta();
    json!({
        "guid": m.guid,
        "alias": m.alias,
        "backing": m.backing,
        "data": m.data,
        "meta": lu.meta_path,
        "size": lu.blocks() * u64::from(lu.block_size()),
        "block_size": m.block_size,
        "thin": m.thin,
        "write_cache": m.write_cache,
        "write_protect": m.write_protect,
        "vid": m.vid,
        "pid": m.pid,
        "serial": m.serial,
        "mgmt_url": m.mgmt_url,
        "sanitize_rate": m.sanitize_rate,
        "allocated": lu.store.allocated().ok(),
        "pr": lu.pr_summary(),
    })
}

impl SbdProvider {
    fn register(
        &self,
        meta: LuMeta,
        meta_path: Option<PathBuf>,
        store: Box<dyn Backing>,
        saved: SavedLu,
    ) -> Result<String, SbdError> {
        let guid = guid::parse(&meta.guid).map_err(SbdError::Invalid)?;
        let hex = guid::to_hex(&guid);
        if lock(&self.lus).contains_key(&guid) {
            return Err(SbdError::Exists(hex));
        }
        let alias = meta.alias.clone();
        let lu = SbdLu::new(
            self.host,
            Arc::clone(&self.pool),
            Arc::clone(&self.registry),
            store,
            meta,
            meta_path,
            guid,
        );
        self.registry.insert(&lu);
        // Not holding our lock: the core calls back into the LU while onlining it.
        let handle = match self.host.register_lu(guid, &alias, Arc::clone(&lu)) {
            Ok(h) => h,
            Err(status) => {
                self.registry.remove(&guid);
                return Err(SbdError::Core { guid: hex, status });
            }
        };
        tracing::info!(guid = %hex, "sbd LU registered");
        lock(&self.lus).insert(
            guid,
            Registered {
                lu,
                handle: CoreLu(handle),
                saved,
            },
        );
        Ok(hex)
    }

    fn create_lu(
        &self,
        backing: BackingKind,
        path: Option<PathBuf>,
        size: Option<Value>,
        p: Props,
    ) -> Result<String, SbdError> {
        let bs = match &p.blk {
            None => 512,
            Some(v) => parse_size(v)?,
        };
        if bs != 512 && bs != 4096 {
            return Err(invalid(format!("block size must be 512 or 4096, not {bs}")));
        }
        let guid = match &p.guid {
            Some(g) => guid::parse(g).map_err(SbdError::Invalid)?,
            None => guid::generate(),
        };
        let hex = guid::to_hex(&guid);
        if lock(&self.lus).contains_key(&guid) {
            return Err(SbdError::Exists(hex));
        }
        let vid = p.vid.clone().unwrap_or_else(|| "RSTMF".into());
        let pid = p.pid.clone().unwrap_or_else(|| "SBD".into());
        let serial = p.serial.clone().unwrap_or_else(|| hex.clone());
        let alias = p.alias.clone().unwrap_or_default();
        let mgmt_url = p.mgmt_url.clone().unwrap_or_default();
        check_ascii("vid", &vid, 8)?;
        check_ascii("pid", &pid, 16)?;
        check_ascii("serial", &serial, 252)?;
        check_ascii("mgmt-url", &mgmt_url, 1024)?;
        if alias.len() > 255 {
            return Err(invalid("property alias is longer than 255 bytes"));
        }
        let wcd = p
            .wcd
            .as_ref()
            .map(|v| parse_flag("wcd", v))
            .transpose()?
            .unwrap_or(false);
        let wp =
            p.wp.as_ref()
                .map(|v| parse_flag("wp", v))
                .transpose()?
                .unwrap_or(false);
        let thin = p
            .thin
            .as_ref()
            .map(|v| parse_flag("thin", v))
            .transpose()?
            .unwrap_or(true);
        let size = size.as_ref().map(parse_size).transpose()?;
        let round = |s: u64| -> Result<u64, SbdError> {
            let s = s / bs * bs;
            if s < MIN_SIZE {
                return Err(invalid(format!(
                    "size {s} is below the minimum of {MIN_SIZE} bytes"
                )));
            }
            Ok(s)
        };
        let meta_path = match backing {
            BackingKind::Ram => None,
            BackingKind::File => {
                let data = path
                    .as_ref()
                    .ok_or_else(|| invalid("a file LU needs a path"))?;
                Some(p.meta.clone().unwrap_or_else(|| default_meta_path(data)))
            }
            BackingKind::Bdev => Some(p.meta.clone().ok_or_else(|| {
                invalid("a block-device LU needs the meta property (where to keep its metadata)")
            })?),
        };
        if let Some(mp) = &meta_path {
            if mp.exists() {
                return Err(invalid(format!(
                    "{} exists: this LU was created before (use import-lu)",
                    mp.display()
                )));
            }
        }
        let mut created: Option<PathBuf> = None;
        let (store, size): (Box<dyn Backing>, u64) = match backing {
            BackingKind::Ram => {
                let size = round(size.ok_or_else(|| invalid("a RAM LU needs a size"))?)?;
                (Box::new(RamStore::new(size)), size)
            }
            BackingKind::File => {
                let data = path.clone().unwrap_or_default();
                let store_err = |source| SbdError::Store {
                    path: data.clone(),
                    source,
                };
                if data.exists() {
                    let s = FileStore::open(&data, thin, false).map_err(store_err)?;
                    let size = round(size.unwrap_or(s.capacity()))?;
                    s.grow(size).map_err(store_err)?;
                    (Box::new(s), size)
                } else {
                    let size = round(size.ok_or_else(|| {
                        invalid(format!(
                            "{} does not exist: give a size to create it",
                            data.display()
                        ))
                    })?)?;
                    let s = FileStore::create(&data, size, thin).map_err(store_err)?;
                    created = Some(data.clone());
                    (Box::new(s), size)
                }
            }
            BackingKind::Bdev => {
                let data = path
                    .clone()
                    .ok_or_else(|| invalid("a block-device LU needs a path"))?;
                let s = BdevStore::open(&data, false).map_err(|source| SbdError::Store {
                    path: data.clone(),
                    source,
                })?;
                let size = round(size.unwrap_or(s.capacity()))?;
                if size > s.capacity() {
                    return Err(invalid(format!(
                        "{} holds {} bytes, {size} requested",
                        data.display(),
                        s.capacity()
                    )));
                }
                (Box::new(s), size)
            }
        };
        let meta = LuMeta {
            format: META_FORMAT.into(),
            version: META_VERSION,
            guid: hex.clone(),
            backing,
            data: path
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
            size,
            block_size: bs as u32,
            serial,
            vid,
            pid,
            revision: "0001".into(),
            alias,
            mgmt_url,
            write_cache: !wcd,
            write_protect: wp,
            thin,
            sanitize_rate: p
                .sanitize_rate
                .as_ref()
                .map(parse_size)
                .transpose()?
                .unwrap_or(0),
            mode: SavedMode {
                dexcpt: true,
                ..SavedMode::default()
            },
            pr: None,
        };
        let meta_path = meta_path.map(|p| std::path::absolute(&p).unwrap_or(p));
        let undo = |created: &Option<PathBuf>, meta_path: &Option<PathBuf>| {
            if let Some(c) = created {
                let _ = std::fs::remove_file(c);
            }
            if let Some(m) = meta_path {
                let _ = std::fs::remove_file(m);
            }
        };
        if let Some(mp) = &meta_path {
            if let Err(e) = meta.store(mp) {
                undo(&created, &None);
                return Err(e.into());
            }
        }
        let saved = match &meta_path {
            Some(mp) => SavedLu::Meta(mp.clone()),
            None => SavedLu::Ram(Box::new(meta.clone())),
        };
        self.register(meta, meta_path.clone(), store, saved)
            .inspect_err(|_| undo(&created, &meta_path))
    }

    /// Opens the store an LU's metadata describes.
    fn open_store(meta: &LuMeta) -> Result<Box<dyn Backing>, SbdError> {
        let data = meta.data.clone().unwrap_or_default();
        let store_err = |source| SbdError::Store {
            path: data.clone(),
            source,
        };
        Ok(match meta.backing {
            BackingKind::Ram => Box::new(RamStore::new(meta.size)),
            BackingKind::File => {
                let s = FileStore::open(&data, meta.thin, false).map_err(store_err)?;
                if s.capacity() < meta.size {
                    s.grow(meta.size).map_err(store_err)?;
                }
                Box::new(s)
            }
            BackingKind::Bdev => {
                let s = BdevStore::open(&data, false).map_err(store_err)?;
                if s.capacity() < meta.size {
                    return Err(invalid(format!(
                        "{} holds {} bytes, the LU has {}",
                        data.display(),
                        s.capacity(),
                        meta.size
                    )));
                }
                Box::new(s)
            }
        })
    }

    fn import(&self, saved: &SavedLu) -> Result<String, SbdError> {
        match saved {
            SavedLu::Ram(m) => {
                let m = LuMeta::parse(
                    Path::new("<saved RAM LU>"),
                    &serde_json::to_string(m).unwrap_or_default(),
                )?;
                let store = Self::open_store(&m)?;
                self.register(m, None, store, saved.clone())
            }
            SavedLu::Meta(path) => {
                let m = LuMeta::load(path)?;
                let store = Self::open_store(&m)?;
                self.register(m, Some(path.clone()), store, saved.clone())
            }
        }
    }

    fn import_path(&self, path: &Path) -> Result<String, SbdError> {
        let meta_path = if path.extension().is_some_and(|e| e == "meta") {
            path.to_path_buf()
        } else {
            default_meta_path(path)
        };
        let meta_path = std::path::absolute(&meta_path).unwrap_or(meta_path);
        self.import(&SavedLu::Meta(meta_path))
    }

    fn find(&self, guid: &str) -> Result<Arc<SbdLu>, SbdError> {
        let g = guid::parse(guid).map_err(SbdError::Invalid)?;
        lock(&self.lus)
            .get(&g)
            .map(|r| Arc::clone(&r.lu))
            .ok_or_else(|| SbdError::NotFound(guid::to_hex(&g)))
    }

    /// The registered LU whose data or metadata file is `path`.
    fn guid_of_path(&self, path: &Path) -> Result<String, SbdError> {
        let want = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        // Compare canonical paths too, so a symlink or `..` finds the LU.
        let canon = |p: &Path| std::fs::canonicalize(p).ok();
        let want_canon = canon(&want);
        let same = |p: &Path| p == want || (want_canon.is_some() && canon(p) == want_canon);
        lock(&self.lus)
            .values()
            .find(|r| {
                r.lu.meta().data.as_deref().is_some_and(same)
                    || r.lu.meta_path.as_deref().is_some_and(same)
            })
            .map(|r| guid::to_hex(&r.lu.guid))
            .ok_or_else(|| {
                SbdError::NotFound(format!("with data or metadata file {}", want.display()))
            })
    }

    fn delete(&self, guid: &str) -> Result<String, SbdError> {
        let g = guid::parse(guid).map_err(SbdError::Invalid)?;
        let hex = guid::to_hex(&g);
        let reg = lock(&self.lus)
            .remove(&g)
            .ok_or_else(|| SbdError::NotFound(hex.clone()))?;
        let status = self.host.deregister_lu(reg.handle.0);
        if status != Status::SUCCESS {
            lock(&self.lus).insert(g, reg);
            return Err(SbdError::Core { guid: hex, status });
        }
        self.registry.remove(&g);
        // A sanitize still running on it stops (its LU, and any status, are gone).
        reg.lu.sanitize_cancel();
        tracing::info!(guid = %hex, "sbd LU deleted (data kept)");
        Ok(hex)
    }

    fn modify(&self, guid: &str, p: Props, size: Option<Value>) -> Result<String, SbdError> {
        let lu = self.find(guid)?;
        for (name, set) in [
            ("blk", p.blk.is_some()),
            ("guid", p.guid.is_some()),
            ("meta", p.meta.is_some()),
            ("pid", p.pid.is_some()),
            ("serial", p.serial.is_some()),
            ("vid", p.vid.is_some()),
            ("thin", p.thin.is_some()),
        ] {
            if set {
                return Err(invalid(format!(
                    "property {name} can only be set when the LU is created"
                )));
            }
        }
        if let Some(a) = &p.alias {
            if a.len() > 255 {
                return Err(invalid("property alias is longer than 255 bytes"));
            }
        }
        if let Some(u) = &p.mgmt_url {
            check_ascii("mgmt-url", u, 1024)?;
        }
        let wcd = p.wcd.as_ref().map(|v| parse_flag("wcd", v)).transpose()?;
        let wp = p.wp.as_ref().map(|v| parse_flag("wp", v)).transpose()?;
        let size = size.as_ref().map(parse_size).transpose()?;
        let rate = p.sanitize_rate.as_ref().map(parse_size).transpose()?;
        lu.set_props(p.alias, p.mgmt_url, wcd, wp)
            .map_err(SbdError::Invalid)?;
        if let Some(r) = rate {
            lu.update_meta(|m| m.sanitize_rate = r)
                .map_err(|e| SbdError::Invalid(e.to_string()))?;
        }
        if let Some(s) = size {
            lu.grow(s).map_err(SbdError::Invalid)?;
        }
        // A RAM LU's definition lives in the configuration: refresh it.
        if let Some(r) = lock(&self.lus).get_mut(&lu.guid) {
            if let SavedLu::Ram(_) = r.saved {
                r.saved = SavedLu::Ram(Box::new(lu.meta()));
            }
        }
        Ok(guid::to_hex(&lu.guid))
    }

    fn list(&self, guid: Option<&str>) -> Result<Value, SbdError> {
        let want = guid
            .map(guid::parse)
            .transpose()
            .map_err(SbdError::Invalid)?;
        let mut lus: Vec<Value> = lock(&self.lus)
            .values()
            .filter(|r| want.is_none_or(|g| g == r.lu.guid))
            .map(|r| lu_info(&r.lu))
            .collect();
        if want.is_none() {
            for f in lock(&self.failed).iter() {
                lus.push(json!({ "saved": f.saved, "state": "import failed", "reason": f.reason }));
            }
        }
        Ok(json!({ "lus": lus }))
    }

    fn handle(&self, request: &str) -> Result<Value, SbdError> {
        let req: Request =
            serde_json::from_str(request).map_err(|e| SbdError::Request(e.to_string()))?;
        Ok(match req {
            Request::Create {
                backing,
                path,
                size,
                mut props,
                alias,
            } => {
                if let Some(a) = alias {
                    if props.alias.as_ref().is_some_and(|p| *p != a) {
                        return Err(invalid("alias given twice, with different values"));
                    }
                    props.alias = Some(a);
                }
                json!({ "guid": self.create_lu(backing, path, size, props)? })
            }
            Request::Delete { guid, keep_views } => {
                json!({ "deleted": self.delete(&guid)?, "keep_views": keep_views })
            }
            Request::Import { path } => json!({ "guid": self.import_path(&path)? }),
            Request::Modify {
                guid,
                path,
                props,
                size,
            } => {
                let guid = match (guid, path) {
                    (Some(g), None) => g,
                    (None, Some(p)) => self.guid_of_path(&p)?,
                    _ => return Err(invalid("modify-lu: give either guid or path")),
                };
                json!({ "guid": self.modify(&guid, props, size)? })
            }
            Request::List { guid } => self.list(guid.as_deref())?,
        })
    }
}

impl Provider for SbdProvider {
    const NAME: &'static str = "sbd";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "SCSI block device LUs on files, block devices and RAM";
    const KIND: ProviderKind = ProviderKind::LU;

    fn create(ctx: ProviderContext, config: &str) -> Result<Self, String> {
        let saved: SavedConfig = if config.trim().is_empty() {
            SavedConfig {
                version: CONFIG_VERSION,
                workers: None,
                lus: Vec::new(),
            }
        } else {
            serde_json::from_str(config)
                .map_err(|e| format!("sbd: invalid saved configuration: {e}"))?
        };
        if saved.version != CONFIG_VERSION {
            return Err(format!("sbd: saved configuration has version {}, this provider reads version {CONFIG_VERSION}", saved.version));
        }
        let workers = saved.workers.unwrap_or(DEFAULT_WORKERS).clamp(1, 256);
        let pool = pool::Pool::new("sbd-io", workers)
            .map_err(|e| format!("sbd: starting I/O workers: {e}"))?;
        let p = SbdProvider {
            host: ctx.host(),
            pool: Arc::new(pool),
            registry: Arc::new(Registry::default()),
            lus: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(Vec::new()),
        };
        for entry in saved.lus {
            // An LU that cannot come back (file gone, device missing) is logged and kept in
            // the configuration, so it is retried at the next start; the others are served.
            if let Err(e) = p.import(&entry) {
                tracing::error!("sbd: cannot re-import {entry:?}: {e}");
                lock(&p.failed).push(Failed {
                    saved: entry,
                    reason: e.to_string(),
                });
            }
        }
        Ok(p)
    }

    fn control(&self, request: &str) -> Result<String, String> {
        // The core prefixes errors with "provider sbd: ".
        self.handle(request)
            .map(|v| v.to_string())
            .map_err(|e| e.to_string())
    }

    fn save_config(&self) -> String {
        let mut lus: Vec<SavedLu> = lock(&self.lus).values().map(|r| r.saved.clone()).collect();
        lus.extend(lock(&self.failed).iter().map(|f| f.saved.clone()));
        let cfg = SavedConfig {
            version: CONFIG_VERSION,
            workers: (self.pool.size() != DEFAULT_WORKERS).then_some(self.pool.size()),
            lus,
        };
        serde_json::to_string(&cfg).unwrap_or_default()
    }

    fn shutdown(&self) {
        let lus = std::mem::take(&mut *lock(&self.lus));
        for (g, reg) in lus {
            let _ = self.host.deregister_lu(reg.handle.0);
            self.registry.remove(&g);
            reg.lu.sanitize_cancel();
        }
        // Join the workers before the library can be unloaded.
        self.pool.shutdown();
    }
}

plugins_sdk::export_provider!(SbdProvider);

#[cfg(test)]
pub(crate) mod testutil {
    //! A loop device for block-device tests (root and loop support needed).
    use std::path::{Path, PathBuf};
    use std::process::Command;

    pub(crate) struct LoopDev {
        dev: PathBuf,
        _file: tempfile::NamedTempFile,
    }

    impl LoopDev {
        pub(crate) fn new(size: u64) -> Option<LoopDev> {
            let file = tempfile::NamedTempFile::new().ok()?;
            file.as_file().set_len(size).ok()?;
            let out = Command::new("losetup")
                .args(["-f", "--show"])
                .arg(file.path())
                .output()
                .ok()?;
            if !out.status.success() {
                return None;
            }
            let dev = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
            Some(LoopDev { dev, _file: file })
        }

        pub(crate) fn path(&self) -> &Path {
            &self.dev
        }
    }

    impl Drop for LoopDev {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_flags_and_requests() {
        assert_eq!(parse_size(&json!(4096)).ok(), Some(4096));
        assert_eq!(parse_size(&json!("64m")).ok(), Some(64 << 20));
        assert_eq!(parse_size(&json!("2G")).ok(), Some(2 << 30));
        assert!(parse_size(&json!("-1")).is_err());
        assert!(parse_size(&json!("99999999999999999999p")).is_err());
        assert!(parse_size(&json!(true)).is_err());
        assert!(parse_flag("wcd", &json!("yes")).expect("flag"));
        assert!(parse_flag("wcd", &json!("maybe")).is_err());
        let r: Request = serde_json::from_str(
            r#"{"op":"create-lu","backing":"ram","size":"8m","props":{"wcd":"true","blk":4096}}"#,
        )
        .expect("req");
        assert!(matches!(
            r,
            Request::Create {
                backing: BackingKind::Ram,
                ..
            }
        ));
        assert!(
            serde_json::from_str::<Request>(r#"{"op":"create-lu","props":{"colour":1}}"#).is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"format"}"#).is_err());
        // stmfd's embedded default, as it sends it: alias at top level.
        let r: Request = serde_json::from_str(
            r#"{"op":"create-lu","backing":"ram","size":67108864,"alias":"default"}"#,
        )
        .expect("embedded default request");
        assert!(matches!(r, Request::Create { alias: Some(a), .. } if a == "default"));
        let r: Request =
            serde_json::from_str(r#"{"op":"modify-lu","path":"/d/x.img","size":"2g"}"#)
                .expect("modify by path");
        assert!(matches!(
            r,
            Request::Modify {
                guid: None,
                path: Some(_),
                ..
            }
        ));
        let s = SavedConfig {
            version: 1,
            workers: None,
            lus: vec![SavedLu::Meta("/x.meta".into())],
        };
        let text = serde_json::to_string(&s).expect("json");
        assert_eq!(
            text,
            r#"{"version":1,"workers":null,"lus":[{"meta":"/x.meta"}]}"#
        );
    }
}
