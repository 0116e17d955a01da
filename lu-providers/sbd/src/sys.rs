//! The few Linux system calls std does not wrap: hole punching, block-device ioctls,
//! SEEK_DATA/SEEK_HOLE and read-ahead hints. Each is a thin, checked wrapper. (The crate's
//! other `unsafe` is the task-context pointer kept in `Task::lu_private`, in `lu/mod.rs`.)

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `BLKGETSIZE64`: `_IOR(0x12, 114, size_t)`.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `BLKDISCARD`: `_IO(0x12, 119)`, argument `u64[2]` = {offset, length}.
const BLKDISCARD: libc::c_ulong = 0x1277;
/// `BLKZEROOUT`: `_IO(0x12, 127)`, argument `u64[2]` = {offset, length}.
const BLKZEROOUT: libc::c_ulong = 0x127F;
/// `BLKSSZGET`: `_IO(0x12, 104)`, logical sector size (int).
const BLKSSZGET: libc::c_ulong = 0x1268;

fn off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Deallocates `len` bytes at `offset` of a regular file, keeping its size. Later reads of
/// the range return zeros.
pub(crate) fn punch_hole(f: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: plain syscall on a valid descriptor; no memory is passed.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off(offset)?,
            off(len)?,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Allocates `len` bytes at `offset` of a regular file (mode 0: may extend the file).
pub(crate) fn preallocate(f: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: plain syscall on a valid descriptor; no memory is passed.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, off(offset)?, off(len)?) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Size of a block device in bytes.
pub(crate) fn blk_size(f: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid for the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if r == 0 {
        Ok(size)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Logical sector size of a block device.
pub(crate) fn blk_sector_size(f: &File) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which is valid for the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKSSZGET as _, &mut size as *mut libc::c_int) };
    if r == 0 {
        u32::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
    } else {
        Err(io::Error::last_os_error())
    }
}

fn blk_range_ioctl(f: &File, req: libc::c_ulong, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let range: [u64; 2] = [offset, len];
    // SAFETY: the ioctl reads two u64 from the pointer, valid for the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _, range.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Discards `len` bytes at `offset` of a block device (both multiples of the sector size).
pub(crate) fn blk_discard(f: &File, offset: u64, len: u64) -> io::Result<()> {
    blk_range_ioctl(f, BLKDISCARD, offset, len)
}

/// Writes zeros to `len` bytes at `offset` of a block device (the kernel uses WRITE SAME /
/// WRITE ZEROES offload where the device has it).
pub(crate) fn blk_zeroout(f: &File, offset: u64, len: u64) -> io::Result<()> {
    blk_range_ioctl(f, BLKZEROOUT, offset, len)
}

/// Where the data or hole that contains `offset` ends: `Ok((mapped, end))`. Past the end of
/// the file everything is a hole. File systems without SEEK_DATA report all data.
pub(crate) fn extent_at(f: &File, offset: u64, file_len: u64) -> io::Result<(bool, u64)> {
    if offset >= file_len {
        return Ok((false, u64::MAX));
    }
    let fd = f.as_raw_fd();
    // SAFETY: lseek on a valid descriptor; the file offset is never used for I/O here
    // (all I/O is positioned), so moving it is harmless.
    let data = unsafe { libc::lseek(fd, off(offset)?, libc::SEEK_DATA) };
    if data < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // No data at or after offset: a hole to the end of the file.
            Some(libc::ENXIO) => Ok((false, file_len)),
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok((true, file_len)),
            _ => Err(e),
        };
    }
    let data = data as u64;
    if data > offset {
        return Ok((false, data));
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, off(offset)?, libc::SEEK_HOLE) };
    if hole < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((true, (hole as u64).max(offset + 1)))
}

/// Tells the kernel the range will be read soon (PRE-FETCH).
pub(crate) fn will_need(f: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: advisory call on a valid descriptor.
    let r = unsafe {
        libc::posix_fadvise(
            f.as_raw_fd(),
            off(offset)?,
            off(len)?,
            libc::POSIX_FADV_WILLNEED,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Blocks allocated to a file, in bytes (`st_blocks * 512`).
pub(crate) fn allocated_bytes(f: &File) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(f.metadata()?.blocks() * 512)
}

/// Preferred I/O size of the file system holding `f` (its block size): the granularity at
/// which punching holes frees space.
pub(crate) fn fs_block_size(f: &File) -> u64 {
    use std::os::unix::fs::MetadataExt;
    f.metadata().map(|m| m.blksize()).unwrap_or(4096).max(512)
}
