//! Block-device store: positioned I/O on the device node (through the page cache, since a
//! port's buffers have no alignment guarantee that `O_DIRECT` needs), capacity from
//! `BLKGETSIZE64`, deallocation with `BLKDISCARD` and zeroing with `BLKZEROOUT`.

use super::file::Fds;
use super::{check_range, Backing, BackingKind, Caps};
use crate::sys;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A store on a block device.
pub struct BdevStore {
    path: PathBuf,
    fds: Fds,
    size: AtomicU64,
    sector: u64,
    /// Cleared when the device refuses BLKDISCARD (no discard support).
    discard_ok: AtomicBool,
}

impl BdevStore {
    /// Opens the block device at `path`.
    pub fn open(path: &Path, read_only: bool) -> io::Result<BdevStore> {
        let fds = Fds::open(path, read_only)?;
        if !fds.plain.metadata()?.file_type().is_block_device() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a block device", path.display()),
            ));
        }
        let size = sys::blk_size(&fds.plain)?;
        let sector = u64::from(sys::blk_sector_size(&fds.plain).unwrap_or(512)).max(512);
        Ok(BdevStore {
            path: path.to_path_buf(),
            fds,
            size: AtomicU64::new(size),
            sector,
            discard_ok: AtomicBool::new(true),
        })
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The aligned middle of `offset..offset+len` in whole sectors.
    fn aligned(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        let start = offset.div_ceil(self.sector) * self.sector;
        let end = (offset + len) / self.sector * self.sector;
        (end > start).then(|| (start, end - start))
    }
}

impl Backing for BdevStore {
    fn kind(&self) -> BackingKind {
        BackingKind::Bdev
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
        // fsync on a block device flushes its page cache and the device's write cache.
        self.fds.plain.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(offset, len, self.capacity())?;
        if !self.discard_ok.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Page-cache pages of the range would shadow the discard: write back first.
        self.fds.plain.sync_data()?;
        if let Some((start, n)) = self.aligned(offset, len) {
            match sys::blk_discard(&self.fds.plain, start, n) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    self.discard_ok.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, durable: bool) -> io::Result<()> {
        check_range(offset, len, self.capacity())?;
        let Some((start, n)) = self.aligned(offset, len) else {
            return self.fds.write_zeroes_slow(offset, len, durable);
        };
        self.fds
            .write_zeroes_slow(offset, start - offset, durable)?;
        self.fds.plain.sync_data()?;
        if sys::blk_zeroout(&self.fds.plain, start, n).is_err() {
            self.fds.write_zeroes_slow(start, n, durable)?;
        }
        let tail = start + n;
        self.fds
            .write_zeroes_slow(tail, offset + len - tail, durable)
    }

    fn caps(&self) -> Caps {
        Caps {
            discard: self.discard_ok.load(Ordering::Relaxed),
            discard_zeroes: false,
            granularity: self.sector,
            extents: false,
        }
    }

    fn extent(&self, offset: u64) -> io::Result<(bool, u64)> {
        let size = self.capacity();
        Ok(if offset >= size {
            (false, u64::MAX)
        } else {
            (true, size)
        })
    }

    fn grow(&self, size: u64) -> io::Result<()> {
        // A device cannot be grown from here; pick up a size the admin changed underneath.
        let now = sys::blk_size(&self.fds.plain)?;
        self.size.store(now, Ordering::Release);
        if size > now {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} holds {now} bytes, {size} requested",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    fn allocated(&self) -> io::Result<u64> {
        Ok(self.capacity())
    }

    fn prefetch(&self, offset: u64, len: u64) -> io::Result<()> {
        sys::will_need(&self.fds.plain, offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the store conformance test on a loop device when the machine lets us make one
    /// (root with loop support); otherwise says why it did not run.
    #[test]
    fn conformance_on_a_loop_device() {
        let Some(dev) = crate::testutil::LoopDev::new(16 << 20) else {
            eprintln!("skipped: no loop device available");
            return;
        };
        let s = BdevStore::open(dev.path(), false).expect("open loop device");
        assert_eq!(s.capacity(), 16 << 20);
        super::super::tests::conformance(&s);
        assert!(s.grow(32 << 20).is_err());
        assert!(
            BdevStore::open(Path::new("/dev/null"), false).is_err(),
            "a char device is refused"
        );
    }
}
