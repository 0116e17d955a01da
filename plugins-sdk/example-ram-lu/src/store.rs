//! The backing store of a RAM LU: its bytes, kept in 1 MiB segments.
//!
//! A segment is allocated the first time something is written to it; reading a segment that
//! was never written returns zeros. So a freshly created LU costs almost no memory, whatever
//! its size, and concurrent commands on different segments do not contend for one lock.
//!
//! Nothing here is persistent: the data lives as long as the LU object.

use std::sync::{PoisonError, RwLock};

/// Size of one segment in bytes.
const SEGMENT: u64 = 1 << 20;

/// One segment: `None` until first written.
type Segment = RwLock<Option<Box<[u8]>>>;

/// The bytes of one LU.
pub(crate) struct RamStore {
    size: u64,
    segments: Box<[Segment]>,
}

impl RamStore {
    /// A store of `size` bytes, all zero.
    pub(crate) fn new(size: u64) -> Self {
        let count = size.div_ceil(SEGMENT) as usize;
        let segments = (0..count).map(|_| RwLock::new(None)).collect();
        RamStore { size, segments }
    }

    /// Size of segment `index` (the last one may be short).
    fn segment_len(&self, index: usize) -> usize {
        let start = index as u64 * SEGMENT;
        self.size.saturating_sub(start).min(SEGMENT) as usize
    }

    /// Splits the byte range `offset..offset+len` into per-segment pieces:
    /// `(segment index, offset within the segment, offset within the caller's buffer, length)`.
    fn pieces(
        &self,
        offset: u64,
        len: usize,
    ) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
        let end = offset.saturating_add(len as u64).min(self.size);
        let mut pos = offset;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let index = (pos / SEGMENT) as usize;
            let within = (pos % SEGMENT) as usize;
            let n = ((SEGMENT - within as u64).min(end - pos)) as usize;
            let piece = (index, within, (pos - offset) as usize, n);
            pos += n as u64;
            Some(piece)
        })
    }

    /// Copies the bytes at `offset` into `buf`. Bytes past the end of the store read as zero
    /// (callers check LBA ranges before calling, so that does not happen).
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) {
        buf.fill(0);
        for (index, within, at, n) in self.pieces(offset, buf.len()) {
            let Some(lock) = self.segments.get(index) else {
                break;
            };
            let guard = lock.read().unwrap_or_else(PoisonError::into_inner);
            if let (Some(seg), Some(dst)) = (guard.as_deref(), buf.get_mut(at..at + n)) {
                if let Some(src) = seg.get(within..within + n) {
                    dst.copy_from_slice(src);
                }
            }
        }
    }

    /// Writes `data` at `offset`. Bytes past the end of the store are dropped (callers check
    /// LBA ranges before calling, so that does not happen).
    pub(crate) fn write(&self, offset: u64, data: &[u8]) {
        for (index, within, at, n) in self.pieces(offset, data.len()) {
            let seg_len = self.segment_len(index);
            let Some(lock) = self.segments.get(index) else {
                break;
            };
            let mut guard = lock.write().unwrap_or_else(PoisonError::into_inner);
            // First write to this segment: this is the only allocation on the data path.
            let seg = guard.get_or_insert_with(|| vec![0u8; seg_len].into_boxed_slice());
            if let (Some(dst), Some(src)) = (seg.get_mut(within..within + n), data.get(at..at + n))
            {
                dst.copy_from_slice(src);
            }
        }
    }

    /// Bytes of memory actually allocated (segments written so far).
    pub(crate) fn allocated(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.read().unwrap_or_else(PoisonError::into_inner).is_some())
            .count() as u64
            * SEGMENT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritten_reads_zero_and_writes_span_segments() {
        let s = RamStore::new(3 * SEGMENT + 100);
        let mut buf = vec![0xFFu8; 16];
        s.read(5, &mut buf);
        assert!(buf.iter().all(|&b| b == 0));
        assert_eq!(s.allocated(), 0);

        // A write straddling the first segment boundary.
        let data: Vec<u8> = (0..64u8).collect();
        s.write(SEGMENT - 32, &data);
        let mut back = vec![0u8; 64];
        s.read(SEGMENT - 32, &mut back);
        assert_eq!(back, data);
        assert_eq!(s.allocated(), 2 * SEGMENT);

        // The short last segment, and a write that runs past the end is clipped.
        s.write(3 * SEGMENT + 90, &[7u8; 20]);
        let mut tail = vec![0u8; 10];
        s.read(3 * SEGMENT + 90, &mut tail);
        assert_eq!(tail, vec![7u8; 10]);
    }
}
