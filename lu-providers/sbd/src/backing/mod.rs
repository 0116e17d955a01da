//! Backing stores: where an LU's blocks live.
//!
//! Every store implements [`Backing`] with positioned I/O only (no shared file offset), so
//! any number of workers may read and write one store at once. The LU layer checks LBA
//! ranges before calling; a store still refuses a range outside its capacity
//! ([`io::ErrorKind::InvalidInput`]) rather than touching data outside the LU.
//!
//! | store | data | durable write | deallocate | reads after deallocate |
//! |---|---|---|---|---|
//! | [`RamStore`] | 1 MiB segments allocated on first write | nothing to do | drops whole segments, zeros partial ones | zeros |
//! | [`FileStore`] | a regular file, sparse or preallocated | a second descriptor opened `O_DSYNC` | `fallocate(PUNCH_HOLE | KEEP_SIZE)` | zeros |
//! | [`BdevStore`] | a block device | a second descriptor opened `O_DSYNC` | `BLKDISCARD` | undefined (LBPRZ = 0) |

mod bdev;
mod file;
mod ram;

pub use bdev::BdevStore;
pub use file::FileStore;
pub use ram::RamStore;

use std::io;

/// What a store can do beyond reading and writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// [`Backing::discard`] frees space.
    pub discard: bool,
    /// Deallocated ranges read back as zeros (LBPRZ).
    pub discard_zeroes: bool,
    /// Bytes below which a discard frees nothing (the file system block, the RAM segment,
    /// the device's sector): the UNMAP granularity.
    pub granularity: u64,
    /// [`Backing::extent`] knows which ranges are allocated (GET LBA STATUS is meaningful).
    pub extents: bool,
}

/// Kind of a backing store, as it appears in the metadata and `list-lu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackingKind {
    /// Memory; contents are lost when the LU goes away.
    Ram,
    /// A regular file.
    File,
    /// A block device.
    Bdev,
}

/// A store of bytes addressed by offset.
pub trait Backing: Send + Sync {
    /// Which kind of store this is.
    fn kind(&self) -> BackingKind;

    /// Bytes the store holds now (the LU's capacity is at most this).
    fn capacity(&self) -> u64;

    /// Fills `buf` from `offset`. Unallocated ranges read as zeros.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Writes `data` at `offset`; with `durable`, the data is on stable storage when this
    /// returns (write-through: WCE = 0 or FUA).
    fn write_at(&self, data: &[u8], offset: u64, durable: bool) -> io::Result<()>;

    /// Makes every completed write durable (SYNCHRONIZE CACHE).
    fn flush(&self) -> io::Result<()>;

    /// Deallocates `len` bytes at `offset` as far as the store can (see [`Caps`]).
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Writes zeros to `len` bytes at `offset` (allocated, unlike [`Backing::discard`]).
    fn write_zeroes(&self, offset: u64, len: u64, durable: bool) -> io::Result<()>;

    /// Capabilities.
    fn caps(&self) -> Caps;

    /// Whether the byte at `offset` is allocated, and where that allocated (or
    /// unallocated) extent ends.
    fn extent(&self, offset: u64) -> io::Result<(bool, u64)>;

    /// Grows the store to `size` bytes (never shrinks).
    fn grow(&self, size: u64) -> io::Result<()>;

    /// Bytes of storage actually in use.
    fn allocated(&self) -> io::Result<u64>;

    /// Hints that the range will be read soon (PRE-FETCH). Best effort.
    fn prefetch(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

/// Checks that `offset..offset+len` lies within `capacity`.
pub(crate) fn check_range(offset: u64, len: u64, capacity: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {offset}+{len} outside the store ({capacity} bytes)"),
        )),
    }
}

/// A zero buffer for writing zeros in chunks without allocating per call.
pub(crate) static ZEROES: [u8; 64 * 1024] = [0; 64 * 1024];

#[cfg(test)]
pub(crate) mod tests {
    //! Behaviour every store must share, run against each of them.
    use super::*;

    pub(crate) fn conformance(s: &dyn Backing) {
        let cap = s.capacity();
        assert!(cap >= 4 << 20, "test store too small");
        // Unwritten data reads zero.
        let mut buf = vec![0xFFu8; 8192];
        s.read_at(&mut buf, 4096).expect("read");
        assert!(buf.iter().all(|&b| b == 0));
        // Round trip, across a 1 MiB boundary, plain and durable.
        let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i * 7 + 3) as u8).collect();
        s.write_at(&data, (1 << 20) - 4096, false).expect("write");
        s.write_at(&data[..4096], 0, true).expect("durable write");
        let mut back = vec![0u8; data.len()];
        s.read_at(&mut back, (1 << 20) - 4096).expect("read back");
        assert_eq!(back, data);
        s.flush().expect("flush");
        // Out of range is refused and touches nothing.
        assert!(s.write_at(&data, cap - 4096, false).is_err());
        assert!(s.read_at(&mut back, cap).is_err());
        assert!(s.write_at(&data[..1], u64::MAX, false).is_err());
        // Zeroes.
        s.write_zeroes((1 << 20) - 4096, 4096, false)
            .expect("zeroes");
        s.read_at(&mut back[..4096], (1 << 20) - 4096)
            .expect("read");
        assert!(back[..4096].iter().all(|&b| b == 0));
        // Discard: the data is gone from the reader's point of view when LBPRZ.
        if s.caps().discard {
            s.write_at(&data, 2 << 20, false).expect("write");
            s.discard(2 << 20, data.len() as u64).expect("discard");
            if s.caps().discard_zeroes {
                s.read_at(&mut back, 2 << 20).expect("read");
                assert!(back.iter().all(|&b| b == 0), "discarded range reads zero");
            }
        }
        // Extents are consistent.
        let (_, end) = s.extent(0).expect("extent");
        assert!(end > 0);
    }
}
