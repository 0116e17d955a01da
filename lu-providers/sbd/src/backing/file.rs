//! Regular-file store: positioned I/O on two descriptors of the same file, one plain (the
//! write-back path, data reaches the page cache) and one opened `O_DSYNC` (the
//! write-through path: `pwrite` returns once the data and the metadata needed to read it
//! are stable). Choosing the descriptor per write is what makes WCE and FUA real.

use super::{check_range, Backing, BackingKind, Caps, ZEROES};
use crate::sys;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The two descriptors of a file or device.
pub(crate) struct Fds {
    pub(crate) plain: File,
    pub(crate) dsync: File,
}

impl Fds {
    pub(crate) fn open(path: &Path, read_only: bool) -> io::Result<Fds> {
        let open = |extra: i32| {
            OpenOptions::new()
                .read(true)
                .write(!read_only)
                .custom_flags(libc::O_CLOEXEC | extra)
                .open(path)
        };
        Ok(Fds {
            plain: open(0)?,
            dsync: open(libc::O_DSYNC)?,
        })
    }

    /// Reads `buf` at `offset`; bytes past the end of the file read as zero.
    pub(crate) fn read_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.plain.read_at(buf, offset) {
                Ok(0) => {
                    buf.fill(0);
                    return Ok(());
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(crate) fn write_at(&self, data: &[u8], offset: u64, durable: bool) -> io::Result<()> {
        let f = if durable { &self.dsync } else { &self.plain };
        f.write_all_at(data, offset)
    }

    /// Writes zeros with plain writes, 64 KiB at a time.
    pub(crate) fn write_zeroes_slow(&self, offset: u64, len: u64, durable: bool) -> io::Result<()> {
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = (end - pos).min(ZEROES.len() as u64) as usize;
            self.write_at(&ZEROES[..n], pos, durable)?;
            pos += n as u64;
        }
        Ok(())
    }
}

/// A store on a regular file.
pub struct FileStore {
    path: PathBuf,
    fds: Fds,
    size: AtomicU64,
    thin: bool,
    granularity: u64,
}

impl FileStore {
    /// Creates `path` (which must not exist) with `size` bytes: sparse when `thin`,
    /// allocated with `fallocate` otherwise.
    pub fn create(path: &Path, size: u64, thin: bool) -> io::Result<FileStore> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        let r = if thin {
            f.set_len(size)
        } else {
            sys::preallocate(&f, 0, size).and_then(|()| f.set_len(size))
        };
        if let Err(e) = r.and_then(|()| f.sync_all()) {
            drop(f);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        drop(f);
        Self::open(path, thin, false)
    }

    /// Opens an existing file.
    pub fn open(path: &Path, thin: bool, read_only: bool) -> io::Result<FileStore> {
        let fds = Fds::open(path, read_only)?;
        let meta = fds.plain.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        let granularity = sys::fs_block_size(&fds.plain);
        Ok(FileStore {
            path: path.to_path_buf(),
            size: AtomicU64::new(meta.len()),
            fds,
            thin,
            granularity,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Backing for FileStore {
    fn kind(&self) -> BackingKind {
        BackingKind::File
    }

    fn capacity(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.capacity())?;
        self.fds.read_at(buf, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64, durable: bool) -> io::Result<()> {
        check_range(offset, data.len() as u64, self.capacity())?;
        self.fds.write_at(data, offset, durable)
    }

    fn flush(&self) -> io::Result<()> {
        self.fds.plain.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(offset, len, self.capacity())?;
        // PUNCH_HOLE zeroes the partial file-system blocks at the edges and frees the whole
        // ones in between: the range reads back as zeros either way.
        sys::punch_hole(&self.fds.plain, offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64, durable: bool) -> io::Result<()> {
        // Allocated zeros (WRITE SAME without UNMAP leaves the blocks mapped).
        check_range(offset, len, self.capacity())?;
        self.fds.write_zeroes_slow(offset, len, durable)
    }

    fn caps(&self) -> Caps {
        Caps {
            discard: self.thin,
            discard_zeroes: true,
            granularity: self.granularity,
            extents: true,
        }
    }

    fn extent(&self, offset: u64) -> io::Result<(bool, u64)> {
        sys::extent_at(&self.fds.plain, offset, self.capacity())
    }

    fn grow(&self, size: u64) -> io::Result<()> {
        let old = self.capacity();
        if size <= old {
            return Ok(());
        }
        if !self.thin {
            sys::preallocate(&self.fds.plain, old, size - old)?;
        }
        self.fds.plain.set_len(size)?;
        self.fds.plain.sync_all()?;
        self.size.store(size, Ordering::Release);
        Ok(())
    }

    fn allocated(&self) -> io::Result<u64> {
        sys::allocated_bytes(&self.fds.plain)
    }

    fn prefetch(&self, offset: u64, len: u64) -> io::Result<()> {
        sys::will_need(&self.fds.plain, offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance_thin_and_thick() {
        let dir = tempfile::tempdir().expect("tmp");
        let thin = FileStore::create(&dir.path().join("thin"), 8 << 20, true).expect("create thin");
        super::super::tests::conformance(&thin);
        let thick =
            FileStore::create(&dir.path().join("thick"), 8 << 20, false).expect("create thick");
        assert!(thick.allocated().expect("alloc") >= 8 << 20, "preallocated");
        super::super::tests::conformance(&thick);
        assert!(
            FileStore::create(&dir.path().join("thin"), 1 << 20, true).is_err(),
            "never overwrites"
        );
    }

    #[test]
    fn discard_frees_blocks() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = FileStore::create(&dir.path().join("f"), 16 << 20, true).expect("create");
        let data = vec![0x5Au8; 4 << 20];
        s.write_at(&data, 0, false).expect("write");
        s.flush().expect("flush");
        let before = s.allocated().expect("alloc");
        assert!(before >= 4 << 20);
        assert!(s.extent(0).expect("extent").0);
        s.discard(0, 4 << 20).expect("discard");
        let after = s.allocated().expect("alloc");
        assert!(after < before - (3 << 20), "{before} -> {after}");
        assert!(!s.extent(0).expect("extent").0);
        s.grow(32 << 20).expect("grow");
        assert_eq!(s.capacity(), 32 << 20);
        assert_eq!(std::fs::metadata(s.path()).expect("stat").len(), 32 << 20);
    }
}
