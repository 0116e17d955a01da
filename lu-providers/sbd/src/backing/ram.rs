//! Memory-backed store: 1 MiB segments allocated on first write, so a large thin RAM LU
//! costs only what is written. Each segment has its own lock; the segment table itself is
//! behind a read-mostly lock taken exclusively only to grow the store.

use super::{check_range, Backing, BackingKind, Caps};
use std::io;
use std::sync::{PoisonError, RwLock};

/// Size of one segment.
const SEGMENT: u64 = 1 << 20;

type Segment = RwLock<Option<Box<[u8]>>>;

/// A RAM store.
pub struct RamStore {
    inner: RwLock<Inner>,
}

struct Inner {
    size: u64,
    segments: Vec<Segment>,
}

fn segments_for(size: u64) -> usize {
    size.div_ceil(SEGMENT) as usize
}

impl RamStore {
    /// A zero-filled store of `size` bytes.
    pub fn new(size: u64) -> RamStore {
        let segments = (0..segments_for(size)).map(|_| RwLock::new(None)).collect();
        RamStore {
            inner: RwLock::new(Inner { size, segments }),
        }
    }

    /// Runs `f(segment, offset in segment, offset in the caller's range, length)` for each
    /// segment piece of `offset..offset+len`.
    fn pieces(
        offset: u64,
        len: u64,
        mut f: impl FnMut(usize, usize, usize, usize) -> io::Result<()>,
    ) -> io::Result<()> {
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let index = (pos / SEGMENT) as usize;
            let within = (pos % SEGMENT) as usize;
            let n = (SEGMENT - within as u64).min(end - pos) as usize;
            f(index, within, (pos - offset) as usize, n)?;
            pos += n as u64;
        }
        Ok(())
    }
}

fn seg_len(size: u64, index: usize) -> usize {
    size.saturating_sub(index as u64 * SEGMENT).min(SEGMENT) as usize
}

fn gone() -> io::Error {
    io::Error::other("segment table inconsistent")
}

impl Backing for RamStore {
    fn kind(&self) -> BackingKind {
        BackingKind::Ram
    }

    fn capacity(&self) -> u64 {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        check_range(offset, buf.len() as u64, inner.size)?;
        Self::pieces(offset, buf.len() as u64, |i, within, at, n| {
            let seg = inner
                .segments
                .get(i)
                .ok_or_else(gone)?
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let dst = buf.get_mut(at..at + n).ok_or_else(gone)?;
            match seg.as_deref() {
                Some(s) => dst.copy_from_slice(s.get(within..within + n).ok_or_else(gone)?),
                None => dst.fill(0),
            }
            Ok(())
        })
    }

    fn write_at(&self, data: &[u8], offset: u64, _durable: bool) -> io::Result<()> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        check_range(offset, data.len() as u64, inner.size)?;
        let size = inner.size;
        Self::pieces(offset, data.len() as u64, |i, within, at, n| {
            let mut seg = inner
                .segments
                .get(i)
                .ok_or_else(gone)?
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            // First write to a segment: the only allocation of this store's data path.
            let s = seg.get_or_insert_with(|| vec![0u8; seg_len(size, i)].into_boxed_slice());
            s.get_mut(within..within + n)
                .ok_or_else(gone)?
                .copy_from_slice(data.get(at..at + n).ok_or_else(gone)?);
            Ok(())
        })
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        check_range(offset, len, inner.size)?;
        let size = inner.size;
        Self::pieces(offset, len, |i, within, _, n| {
            let mut seg = inner
                .segments
                .get(i)
                .ok_or_else(gone)?
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if within == 0 && n == seg_len(size, i) {
                *seg = None;
            } else if let Some(s) = seg.as_mut() {
                s.get_mut(within..within + n).ok_or_else(gone)?.fill(0);
            }
            Ok(())
        })
    }

    fn write_zeroes(&self, offset: u64, len: u64, _durable: bool) -> io::Result<()> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        check_range(offset, len, inner.size)?;
        Self::pieces(offset, len, |i, within, _, n| {
            let mut seg = inner
                .segments
                .get(i)
                .ok_or_else(gone)?
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = seg.as_mut() {
                s.get_mut(within..within + n).ok_or_else(gone)?.fill(0);
            }
            Ok(())
        })
    }

    fn caps(&self) -> Caps {
        Caps {
            discard: true,
            discard_zeroes: true,
            granularity: SEGMENT,
            extents: true,
        }
    }

    fn extent(&self, offset: u64) -> io::Result<(bool, u64)> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        if offset >= inner.size {
            return Ok((false, u64::MAX));
        }
        let first = (offset / SEGMENT) as usize;
        let mapped = |i: usize| {
            inner
                .segments
                .get(i)
                .is_some_and(|s| s.read().unwrap_or_else(PoisonError::into_inner).is_some())
        };
        let want = mapped(first);
        let mut i = first + 1;
        while i < inner.segments.len() && mapped(i) == want {
            i += 1;
        }
        Ok((want, (i as u64 * SEGMENT).min(inner.size)))
    }

    fn grow(&self, size: u64) -> io::Result<()> {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if size <= inner.size {
            return Ok(());
        }
        // The old last segment may be short: widen it.
        let old = inner.size;
        if let Some(last) = inner.segments.last_mut() {
            let idx = segments_for(old) - 1;
            let seg = last.get_mut().unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = seg.take() {
                let mut wide = vec![0u8; seg_len(size, idx)];
                wide[..s.len()].copy_from_slice(&s);
                *seg = Some(wide.into_boxed_slice());
            }
        }
        let n = segments_for(size);
        inner.segments.resize_with(n, || RwLock::new(None));
        inner.size = size;
        Ok(())
    }

    fn allocated(&self) -> io::Result<u64> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        Ok(inner
            .segments
            .iter()
            .filter_map(|s| {
                s.read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .map(|b| b.len() as u64)
            })
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        super::super::tests::conformance(&RamStore::new(8 << 20));
    }

    #[test]
    fn discard_frees_whole_segments_and_grow_keeps_data() {
        let s = RamStore::new(3 * SEGMENT + 512);
        s.write_at(&[1u8; 4096], 0, false).expect("write");
        s.write_at(&[2u8; 512], 3 * SEGMENT, false)
            .expect("write tail");
        assert_eq!(s.allocated().expect("alloc"), SEGMENT + 512);
        assert_eq!(s.extent(0).expect("extent"), (true, SEGMENT));
        assert_eq!(s.extent(SEGMENT).expect("extent"), (false, 3 * SEGMENT));
        s.discard(0, SEGMENT).expect("discard");
        assert_eq!(s.allocated().expect("alloc"), 512);
        s.grow(5 * SEGMENT).expect("grow");
        let mut b = [0u8; 512];
        s.read_at(&mut b, 3 * SEGMENT).expect("read");
        assert_eq!(b, [2u8; 512]);
        s.write_at(&[3u8; 1024], 3 * SEGMENT + 512, false)
            .expect("write in widened segment");
        assert_eq!(s.capacity(), 5 * SEGMENT);
    }
}
