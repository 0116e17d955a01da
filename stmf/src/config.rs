//! The persisted configuration of stmfd: `<state-dir>/stmf.json`.
//!
//! ```json
//! {"version":1,"settings":{..},"providers":[{"name":..,"path":..,"config":..}],"core":{..}}
//! ```
//! The file is rewritten atomically by [`write_file_atomic`] after every change. A file that
//! cannot be parsed or has an unknown version is refused, never silently replaced; so is a
//! `stmf.json` that is a symbolic link or anything but a regular file (it is never followed).
//!
//! A provider's `config` is its `save_config` string. A JSON object or array is embedded as
//! is so the file stays readable; anything else (including the empty string) is stored as a
//! JSON string. Both forms are given back to the provider verbatim on restart.

use crate::{CoreConfig, Settings, Stmf};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

/// Version of the file format this build reads and writes.
pub const CONFIG_VERSION: u32 = 1;
/// File name inside the state directory.
pub const CONFIG_FILE: &str = "stmf.json";

/// Errors of the configuration store.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {op}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{path}: corrupt configuration: {reason} (fix or move the file away; it was left untouched)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// The file was written by an incompatible version.
    #[error("{path}: unsupported configuration version {found} (this stmfd reads version {CONFIG_VERSION}; the file was left untouched)")]
    Version {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u64,
    },
    /// The file is a symbolic link or a special file: never followed, read or replaced.
    #[error("{path} is not a regular file ({found}); stmfd reads and replaces only a regular file there: move it away")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        found: &'static str,
    },
    /// The daemon is shutting down; no more changes are accepted.
    #[error("stmfd is shutting down")]
    Closed,
}

/// One provider to load at start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    /// Provider name (as reported when it was loaded).
    pub name: String,
    /// Absolute path of its library.
    pub path: String,
    /// Its saved configuration (see the module documentation).
    #[serde(default)]
    pub config: serde_json::Value,
}

impl ProviderEntry {
    /// Builds an entry from a provider's `save_config` string.
    pub fn new(name: &str, path: &str, config: &str) -> Self {
        let value = match serde_json::from_str::<serde_json::Value>(config) {
            Ok(v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => v,
            _ => serde_json::Value::String(config.to_owned()),
        };
        ProviderEntry {
            name: name.to_owned(),
            path: path.to_owned(),
            config: value,
        }
    }

    /// The configuration string to give back to the provider.
    pub fn config_string(&self) -> String {
        match &self.config {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedConfig {
    /// Format version ([`CONFIG_VERSION`]).
    pub version: u32,
    /// Core tunables.
    #[serde(default)]
    pub settings: Settings,
    /// Providers, in load order.
    #[serde(default)]
    pub providers: Vec<ProviderEntry>,
    /// Groups, views and admin-set states.
    #[serde(default)]
    pub core: CoreConfig,
}

impl PersistedConfig {
    /// Parses a file's contents, checking the version first so that a newer file is reported
    /// as such rather than as corrupt.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let corrupt = |reason: String| ConfigError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
        let version = value
            .get("version")
            .ok_or_else(|| corrupt("no \"version\" field".into()))?
            .as_u64()
            .ok_or_else(|| corrupt("\"version\" is not a number".into()))?;
        if version != u64::from(CONFIG_VERSION) {
            return Err(ConfigError::Version {
                path: path.to_owned(),
                found: version,
            });
        }
        serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
    }
}

/// A provider from the file that is not loaded (its library failed to load); kept so that
/// saving does not drop it.
#[derive(Clone, Debug, PartialEq)]
pub struct RetainedProvider {
    /// The entry as read from the file.
    pub entry: ProviderEntry,
    /// Why it is not loaded.
    pub reason: String,
}

/// Reads and writes `<state-dir>/stmf.json`; serialises saves and gates changes at shutdown.
#[derive(Debug)]
pub struct ConfigStore {
    path: PathBuf,
    retained: Mutex<Vec<RetainedProvider>>,
    /// `true` once closed. Commands that change state hold it shared from the change until
    /// the save; [`ConfigStore::close`] takes it exclusively.
    gate: RwLock<bool>,
    save_lock: Mutex<()>,
    /// Whether the file exists (read at start or written since): the final save at shutdown
    /// only refreshes an existing file, so an untouched daemon leaves no file behind and
    /// the embedded default still applies at the next start.
    has_file: AtomicBool,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> ConfigError + 'a {
    move |source| ConfigError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Proof that the store accepts changes; hold it from a change until its save.
pub struct ChangeGuard<'a> {
    _gate: RwLockReadGuard<'a, bool>,
}

impl ConfigStore {
    /// A store for the state directory `dir` (which must exist before saving).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let path = dir.into().join(CONFIG_FILE);
        ConfigStore {
            path,
            retained: Mutex::new(Vec::new()),
            gate: RwLock::new(false),
            save_lock: Mutex::new(()),
            has_file: AtomicBool::new(false),
        }
    }

    /// Path of the configuration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file: `Ok(None)` when there is none.
    pub fn load(&self) -> Result<Option<PersistedConfig>, ConfigError> {
        let Some(bytes) = read_regular(&self.path)? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Corrupt {
            path: self.path.clone(),
            reason: "not UTF-8".into(),
        })?;
        self.has_file.store(true, Ordering::SeqCst);
        PersistedConfig::parse(&self.path, &text).map(Some)
    }

    /// Remembers a provider of the file that failed to load, so saves keep its entry.
    pub fn retain_provider(&self, entry: ProviderEntry, reason: String) {
        let mut r = lock(&self.retained);
        r.retain(|p| p.entry.name != entry.name);
        r.push(RetainedProvider { entry, reason });
    }

    /// Providers of the file that are not loaded.
    pub fn retained_providers(&self) -> Vec<RetainedProvider> {
        lock(&self.retained).clone()
    }

    /// Forgets a retained provider by name; `true` if there was one.
    pub fn forget_provider(&self, name: &str) -> bool {
        let mut r = lock(&self.retained);
        let before = r.len();
        r.retain(|p| p.entry.name != name);
        r.len() != before
    }

    /// Forgets a retained provider by library path.
    pub fn forget_provider_path(&self, path: &str) {
        lock(&self.retained).retain(|p| p.entry.path != path);
    }

    /// The saved configuration string of a retained provider whose library is `path` (to
    /// hand it over when the admin loads that library again).
    pub fn retained_config_for_path(&self, path: &str) -> Option<String> {
        lock(&self.retained)
            .iter()
            .find(|p| p.entry.path == path)
            .map(|p| p.entry.config_string())
    }

    /// Starts a change: fails once the store is closed.
    pub fn begin_change(&self) -> Result<ChangeGuard<'_>, ConfigError> {
        let g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        if *g {
            return Err(ConfigError::Closed);
        }
        Ok(ChangeGuard { _gate: g })
    }

    /// Snapshot of the running configuration.
    pub fn snapshot(&self, stmf: &Stmf) -> PersistedConfig {
        let mut providers = Vec::new();
        for p in stmf.list_providers() {
            if p.path.starts_with("builtin:") {
                continue; // linked into the process: nothing to load at start
            }
            let config = match stmf.provider_config(&p.name) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(provider = %p.name, "cannot get provider configuration: {e}");
                    String::new()
                }
            };
            providers.push(ProviderEntry::new(&p.name, &p.path, &config));
        }
        for r in lock(&self.retained).iter() {
            if !providers.iter().any(|p| p.name == r.entry.name) {
                providers.push(r.entry.clone());
            }
        }
        PersistedConfig {
            version: CONFIG_VERSION,
            settings: stmf.settings(),
            providers,
            core: stmf.export_config(),
        }
    }

    /// Saves the running configuration atomically.
    pub fn save(&self, stmf: &Stmf) -> Result<(), ConfigError> {
        let _g = lock(&self.save_lock);
        let cfg = self.snapshot(stmf);
        self.write(&cfg)
    }

    /// Waits for changes in progress, refuses every later change, and saves a last time if
    /// the file exists.
    pub fn close(&self, stmf: &Stmf) -> Result<(), ConfigError> {
        let mut g = self.gate.write().unwrap_or_else(|p| p.into_inner());
        if *g {
            return Ok(());
        }
        *g = true;
        if self.has_file.load(Ordering::SeqCst) {
            self.save(stmf)?;
        }
        Ok(())
    }

    /// Writes `cfg` atomically ([`write_file_atomic`]).
    pub fn write(&self, cfg: &PersistedConfig) -> Result<(), ConfigError> {
        let mut text = serde_json::to_string_pretty(cfg)
            .map_err(|e| io_err(&self.path, "serialise")(std::io::Error::other(e)))?;
        text.push('\n');
        write_file_atomic(&self.path, text.as_bytes())?;
        self.has_file.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// What a file type is, for messages.
fn kind_of(t: fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// Reads `path` if it is a regular file (`Ok(None)` when it does not exist), never following
/// a symbolic link: `O_NOFOLLOW` refuses a link, `O_NONBLOCK` keeps a FIFO from blocking the
/// open, and the opened file's own type is checked.
pub fn read_regular(path: &Path) -> Result<Option<Vec<u8>>, ConfigError> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(ConfigError::NotRegular {
                path: path.to_owned(),
                found: "a symbolic link",
            })
        }
        Err(e) => return Err(io_err(path, "open")(e)),
    };
    let t = f.metadata().map_err(io_err(path, "stat"))?.file_type();
    if !t.is_file() {
        return Err(ConfigError::NotRegular {
            path: path.to_owned(),
            found: kind_of(t),
        });
    }
    let mut bytes = Vec::new();
    (&f).read_to_end(&mut bytes).map_err(io_err(path, "read"))?;
    Ok(Some(bytes))
}

/// Replaces `path` with `contents` atomically and durably, mode 0600.
///
/// The data goes to a new temporary file in the same directory with an unpredictable name
/// (`.<name>.XXXXXX.tmp`, `tempfile`), created with `O_CREAT|O_EXCL|O_NOFOLLOW`: an existing
/// file or a symbolic link planted at that name is never opened or followed, another name is
/// tried instead. Then: fsync of the file, rename over `path` (which replaces a link at `path`
/// rather than following it), fsync of the directory. On failure the temporary is removed and
/// `path` is unchanged.
pub fn write_file_atomic(path: &Path, contents: &[u8]) -> Result<(), ConfigError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io_err(path, "write")(std::io::Error::from(std::io::ErrorKind::InvalidInput))
    })?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .make_in(dir, |p| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(p)
        })
        .map_err(io_err(dir, "create a temporary file in"))?;
    let tmp_path = tmp.path().to_owned();
    tmp.as_file_mut()
        .write_all(contents)
        .map_err(io_err(&tmp_path, "write"))?;
    tmp.as_file()
        .sync_all()
        .map_err(io_err(&tmp_path, "fsync"))?;
    tmp.persist(path)
        .map_err(|e| io_err(path, "rename")(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_config_round_trips() {
        for c in [
            "",
            "plain",
            "{\"luns\":[1,2]}",
            "[1]",
            "\"quoted\"",
            "5",
            "null",
        ] {
            let e = ProviderEntry::new("p", "/x.so", c);
            let text = serde_json::to_string(&e).unwrap();
            let back: ProviderEntry = serde_json::from_str(&text).unwrap();
            let expect = if c.starts_with('{') || c.starts_with('[') {
                c.replace(' ', "")
            } else {
                c.to_owned()
            };
            assert_eq!(back.config_string(), expect, "config {c:?}");
        }
        assert!(ProviderEntry::new("p", "/x.so", "{\"a\":1}")
            .config
            .is_object());
    }

    #[test]
    fn parse_refuses_bad_files() {
        let p = Path::new("/state/stmf.json");
        let e = PersistedConfig::parse(p, "{not json").unwrap_err();
        assert!(matches!(e, ConfigError::Corrupt { .. }));
        assert!(e.to_string().contains("/state/stmf.json"), "{e}");
        let e = PersistedConfig::parse(p, r#"{"version":2}"#).unwrap_err();
        assert!(matches!(e, ConfigError::Version { found: 2, .. }), "{e}");
        assert!(e.to_string().contains("/state/stmf.json"), "{e}");
        let e = PersistedConfig::parse(p, r#"{"providers":[]}"#).unwrap_err();
        assert!(matches!(e, ConfigError::Corrupt { .. }));
        let e = PersistedConfig::parse(p, r#"{"version":1,"bogus":1}"#).unwrap_err();
        assert!(matches!(e, ConfigError::Corrupt { .. }));
        let c = PersistedConfig::parse(p, r#"{"version":1}"#).unwrap();
        assert_eq!(c.settings, Settings::default());
        assert!(c.providers.is_empty());
    }

    #[test]
    fn write_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(dir.path());
        assert!(store.load().unwrap().is_none());
        let cfg = PersistedConfig {
            version: CONFIG_VERSION,
            settings: Settings::default(),
            providers: vec![ProviderEntry::new("a", "/a.so", "{\"x\":1}")],
            core: CoreConfig::default(),
        };
        store.write(&cfg).unwrap();
        assert_eq!(store.load().unwrap(), Some(cfg));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn atomic_write_never_follows_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        // Links at the old fixed temporary name and at the file itself.
        std::os::unix::fs::symlink(&victim, dir.path().join(".stmf.json.tmp")).unwrap();
        let target = dir.path().join(CONFIG_FILE);
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_file_atomic(&target, b"{}\n").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(fs::symlink_metadata(&target).unwrap().file_type().is_file());
        assert_eq!(fs::read(&target).unwrap(), b"{}\n");
        // A link as the configuration file is refused on read, and not followed.
        fs::remove_file(&target).unwrap();
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        let e = ConfigStore::new(dir.path()).load().unwrap_err();
        assert!(matches!(e, ConfigError::NotRegular { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // So is a FIFO, without blocking.
        fs::remove_file(&target).unwrap();
        let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = ConfigStore::new(dir.path()).load().unwrap_err();
        assert!(e.to_string().contains("special file"), "{e}");
    }
}
