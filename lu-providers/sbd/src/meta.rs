//! LU metadata: everything needed to bring an LU back with `import-lu`.
//!
//! Kept in a separate JSON file next to the data (`<data>.meta` by default, or the `meta`
//! property), replaced atomically on every change: written to a new temporary file in the
//! same directory (an unpredictable name created with `O_CREAT|O_EXCL|O_NOFOLLOW`, so a file
//! or symbolic link planted at any name is never opened or followed), fsynced, renamed over
//! the old one, and the directory fsynced. Why a separate
//! file rather than a metadata area at the start of the data (COMSTAR's default): the data
//! file stays a plain disk image (usable by qemu, loop devices, `dd`) with LBA 0 at offset 0,
//! a block device gives its whole capacity to the LU, and an atomic rename is a simpler
//! crash-safety argument than double-buffered in-place sectors. The cost is two files to
//! keep together; `import-lu` accepts either path. RAM LUs have no metadata file: their
//! definition lives in the provider's saved configuration.

use crate::backing::BackingKind;
use crate::pr::PrSaved;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Version of the metadata format this provider writes and reads.
pub const META_VERSION: u32 = 1;

/// Magic value of the `format` field, so a random JSON file is not taken for metadata.
pub const META_FORMAT: &str = "rstmf-sbd-lu";

/// The persistent description of one LU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuMeta {
    /// Always [`META_FORMAT`].
    pub format: String,
    /// [`META_VERSION`].
    pub version: u32,
    /// NAA GUID, 32 hex digits.
    pub guid: String,
    /// Where the data lives.
    pub backing: BackingKind,
    /// Data file or device (absent for RAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// Capacity in bytes (what READ CAPACITY reports; a multiple of the block size).
    pub size: u64,
    /// Logical block size: 512 or 4096.
    pub block_size: u32,
    /// Unit serial number (VPD 80h).
    pub serial: String,
    /// T10 vendor identification (≤ 8 ASCII characters).
    pub vid: String,
    /// Product identification (≤ 16 ASCII characters).
    pub pid: String,
    /// Product revision level (≤ 4 ASCII characters).
    pub revision: String,
    /// Alias shown by list-lu.
    #[serde(default)]
    pub alias: String,
    /// Management network address (VPD 85h), empty when none.
    #[serde(default)]
    pub mgmt_url: String,
    /// Saved value of WCE (write-back cache enabled).
    pub write_cache: bool,
    /// Write protected.
    pub write_protect: bool,
    /// Thin provisioned: unmapping frees space (LBPME).
    pub thin: bool,
    /// Most bytes per second a SANITIZE OVERWRITE writes (0: as fast as the store goes),
    /// so that sanitizing one LU does not starve the others sharing its storage.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sanitize_rate: u64,
    /// Saved values of the other changeable mode parameters.
    #[serde(default)]
    pub mode: SavedMode,
    /// Persistent reservations, kept only while APTPL is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr: Option<PrSaved>,
}

/// Saved mode parameters other than WCE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedMode {
    /// Control page D_SENSE: descriptor-format sense data.
    #[serde(default)]
    pub d_sense: bool,
    /// Control page SWP: software write protect.
    #[serde(default)]
    pub swp: bool,
    /// Informational exceptions page DEXCPT.
    #[serde(default = "yes")]
    pub dexcpt: bool,
    /// Informational exceptions page MRIE.
    #[serde(default)]
    pub mrie: u8,
    /// Caching page RCD (read cache disable).
    #[serde(default)]
    pub rcd: bool,
}

fn yes() -> bool {
    true
}

/// Why metadata could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Not valid metadata.
    #[error("{path}: not sbd LU metadata: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The default metadata path of a data file: `<data>.meta`.
pub fn default_meta_path(data: &Path) -> PathBuf {
    let mut s = data.as_os_str().to_owned();
    s.push(".meta");
    PathBuf::from(s)
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl LuMeta {
    /// Parses and validates metadata text.
    pub fn parse(path: &Path, text: &str) -> Result<LuMeta, MetaError> {
        let invalid = |reason: String| MetaError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let m: LuMeta = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if m.format != META_FORMAT {
            return Err(invalid(format!("format {:?}", m.format)));
        }
        if m.version != META_VERSION {
            return Err(invalid(format!(
                "version {} (this provider reads version {META_VERSION})",
                m.version
            )));
        }
        if m.block_size != 512 && m.block_size != 4096 {
            return Err(invalid(format!("block size {}", m.block_size)));
        }
        if m.size == 0 || m.size % u64::from(m.block_size) != 0 {
            return Err(invalid(format!(
                "size {} is not a positive multiple of the block size",
                m.size
            )));
        }
        if m.backing != BackingKind::Ram && m.data.is_none() {
            return Err(invalid("no data path".into()));
        }
        Ok(m)
    }

    /// Reads metadata from `path`.
    pub fn load(path: &Path) -> Result<LuMeta, MetaError> {
        let text = std::fs::read_to_string(path).map_err(|source| MetaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Writes the metadata to `path` atomically (temp file, fsync, rename, fsync directory;
    /// see the module documentation).
    pub fn store(&self, path: &Path) -> Result<(), MetaError> {
        let io_err = |source: io::Error| MetaError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut text =
            serde_json::to_string_pretty(self).map_err(|e| io_err(io::Error::other(e)))?;
        text.push('\n');
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| io_err(io::Error::from(io::ErrorKind::InvalidInput)))?;
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(name);
        prefix.push(".");
        let write = || -> io::Result<()> {
            let mut tmp = tempfile::Builder::new()
                .prefix(&prefix)
                .suffix(".tmp")
                .make_in(&dir, |p| {
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                        .open(p)
                })?;
            tmp.as_file_mut().write_all(text.as_bytes())?;
            tmp.as_file().sync_all()?;
            // On failure the temporary file is removed when `tmp` is dropped.
            tmp.persist(path).map_err(|e| e.error)?;
            File::open(&dir)?.sync_all()
        };
        write().map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> LuMeta {
        LuMeta {
            format: META_FORMAT.into(),
            version: META_VERSION,
            guid: "600144F0AABBCCDDEEFF001122334455".into(),
            backing: BackingKind::File,
            data: Some("/tmp/x.img".into()),
            size: 1 << 30,
            block_size: 512,
            serial: "S1".into(),
            vid: "RSTMF".into(),
            pid: "SBD".into(),
            revision: "0001".into(),
            alias: "a".into(),
            mgmt_url: String::new(),
            write_cache: true,
            write_protect: false,
            thin: true,
            sanitize_rate: 0,
            mode: SavedMode::default(),
            pr: None,
        }
    }

    #[test]
    fn round_trip_atomic_and_validation() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("lu.meta");
        let m = sample();
        m.store(&p).expect("store");
        assert_eq!(LuMeta::load(&p).expect("load"), m);
        // Only the metadata file remains (the temporary was renamed).
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
        let mut m2 = m.clone();
        m2.size = 2 << 30;
        m2.store(&p).expect("replace");
        assert_eq!(LuMeta::load(&p).expect("load").size, 2 << 30);

        // A link planted at the old predictable temporary name is never followed.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("victim");
        let old_tmp = dir
            .path()
            .join(format!(".lu.meta.tmp{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_tmp).expect("plant");
        m.store(&p).expect("store past the link");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
        assert_eq!(LuMeta::load(&p).expect("load"), m);
        std::fs::remove_file(&old_tmp).expect("rm link");
        std::fs::remove_file(&victim).expect("rm victim");

        let bad = |t: &str| LuMeta::parse(&p, t).is_err();
        assert!(bad("{}"));
        assert!(bad("not json"));
        let mut v = serde_json::to_value(&m).expect("value");
        v["version"] = 9.into();
        assert!(bad(&v.to_string()));
        v["version"] = 1.into();
        v["block_size"] = 1024.into();
        assert!(bad(&v.to_string()));
        v["block_size"] = 512.into();
        v["size"] = 1000.into();
        assert!(bad(&v.to_string()));
        v["size"] = 1024.into();
        v["colour"] = "red".into();
        assert!(bad(&v.to_string()));
        assert_eq!(
            default_meta_path(Path::new("/a/b.img")),
            Path::new("/a/b.img.meta")
        );
    }
}
