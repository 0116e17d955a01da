//! The port's data buffer store: power-of-two size classes with free lists, one store
//! per connection (buffers are bound to a connection, as in COMSTAR's iscsit), so no
//! lock is shared between connections and steady state allocates nothing.
//!
//! A buffer may be *pinned* by a Data-In PDU still queued on the socket (the final PDU
//! of a read, held back for status phase collapse): freeing it then only marks it, and
//! the unpin returns it to the free list.

use plugins_sdk::abi::{DataBufRaw, Status};
use plugins_sdk::DataBuf;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, PoisonError};

/// Smallest buffer class (4 KiB).
const MIN_SHIFT: u32 = 12;
/// Largest buffer class (16 MiB).
const MAX_SHIFT: u32 = 24;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// Buffers kept per class (fewer of the big ones: at most [`KEEP_BYTES`] per class).
const KEEP: usize = 32;
/// Bytes of cached buffers kept per class.
const KEEP_BYTES: usize = 8 << 20;

/// One buffer: the ABI header first (so a `*mut DataBufRaw` is a `*mut PoolBuf`), then
/// the memory and bookkeeping.
#[repr(C)]
struct PoolBuf {
    raw: DataBufRaw,
    mem: Box<[u8]>,
    class: usize,
    pinned: bool,
    freed_while_pinned: bool,
    /// The store, while the buffer is handed out (none while cached: no cycle).
    owner: Option<Arc<BufPool>>,
}

/// A connection's buffer store.
// Buffers are handed out by address (`*mut DataBufRaw`): each keeps its own allocation.
#[allow(clippy::vec_box)]
#[derive(Default)]
pub struct BufPool {
    free: Mutex<Vec<Vec<Box<PoolBuf>>>>,
}

// SAFETY: cached buffers are owned by the pool behind its mutex; raw pointers inside
// them point into their own boxed memory.
unsafe impl Send for BufPool {}
// SAFETY: as above; all access goes through the mutex.
unsafe impl Sync for BufPool {}

fn class_of(size: u32) -> Option<usize> {
    let shift = size
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
        .max(MIN_SHIFT);
    (shift <= MAX_SHIFT).then(|| (shift - MIN_SHIFT) as usize)
}

/// The mark stored in `port_private` of every buffer of this port.
fn mark() -> *mut c_void {
    static MARK: u8 = 0;
    &MARK as *const u8 as *mut c_void
}

impl BufPool {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(BufPool {
            free: Mutex::new((0..CLASSES).map(|_| Vec::new()).collect()),
        })
    }

    /// A buffer of `size` bytes (capacity exactly `size`).
    pub fn alloc(self: &Arc<Self>, size: u32) -> Option<DataBuf> {
        let class = class_of(size)?;
        let cached = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(class)
            .and_then(Vec::pop);
        let mut b = match cached {
            Some(b) => b,
            None => {
                let mem = vec![0u8; 1usize << (class as u32 + MIN_SHIFT)].into_boxed_slice();
                Box::new(PoolBuf {
                    raw: DataBufRaw {
                        data: std::ptr::null_mut(),
                        buf_size: 0,
                        xfer_len: 0,
                        rel_offset: 0,
                        flags: 0,
                        xfer_status: Status::SUCCESS,
                        port_private: mark(),
                        lu_private: std::ptr::null_mut(),
                        core_private: 0,
                    },
                    mem,
                    class,
                    pinned: false,
                    freed_while_pinned: false,
                    owner: None,
                })
            }
        };
        b.raw.data = b.mem.as_mut_ptr();
        b.raw.buf_size = size;
        b.raw.xfer_len = 0;
        b.raw.rel_offset = 0;
        b.raw.flags = 0;
        b.raw.xfer_status = Status::SUCCESS;
        b.raw.lu_private = std::ptr::null_mut();
        b.raw.core_private = 0;
        b.pinned = false;
        b.freed_while_pinned = false;
        b.owner = Some(Arc::clone(self));
        let raw = Box::into_raw(b) as *mut DataBufRaw;
        // SAFETY: a fresh, valid buffer whose ownership passes to the caller.
        unsafe { DataBuf::from_raw(raw) }
    }

    /// True when `buf` came from a store of this port.
    pub fn is_ours(buf: &DataBuf) -> bool {
        buf.port_private() == mark()
    }

    /// Puts a buffer back on its store's free list; `free` is that store's list, locked.
    #[allow(clippy::vec_box)]
    fn recycle(mut b: Box<PoolBuf>, free: &mut [Vec<Box<PoolBuf>>]) {
        b.owner = None;
        let keep = KEEP.min(KEEP_BYTES >> (b.class as u32 + MIN_SHIFT)).max(1);
        if let Some(list) = free.get_mut(b.class) {
            if list.len() < keep {
                list.push(b);
            }
        }
    }

    /// Returns a buffer (any store of this port); a pinned one goes back at unpin.
    pub fn free(buf: DataBuf) {
        if !Self::is_ours(&buf) {
            tracing::error!("iscsit: dbuf_free of a buffer this port did not allocate (leaked)");
            let _ = buf.into_raw();
            return;
        }
        let raw = buf.into_raw() as *mut PoolBuf;
        // SAFETY: our buffers are PoolBufs (repr(C), header first), allocated by `alloc`
        // and handed back exactly once; `owner` is set while a buffer is handed out.
        let Some(pool) = (unsafe { (*raw).owner.clone() }) else {
            return;
        };
        let mut free = pool.free.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: as above; the pin flags are only touched under this lock.
        unsafe {
            if (*raw).pinned {
                // Still read by a queued PDU: `unpin` recycles it.
                (*raw).freed_while_pinned = true;
                return;
            }
            Self::recycle(Box::from_raw(raw), &mut free);
        }
    }

    /// Pins the buffer at `raw` (a queued PDU still reads it).
    ///
    /// # Safety
    /// `raw` must be a buffer of this port that is handed out (not freed).
    pub unsafe fn pin(raw: *mut DataBufRaw) {
        let p = raw as *mut PoolBuf;
        // SAFETY: caller contract; the header is the first field of a PoolBuf.
        let Some(pool) = (unsafe { (*p).owner.clone() }) else {
            return;
        };
        let _free = pool.free.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: as above, under the store's lock.
        unsafe { (*p).pinned = true }
    }

    /// Drops the pin of the buffer at `raw`; recycles it if it was freed meanwhile.
    ///
    /// # Safety
    /// `raw` must have been pinned with [`BufPool::pin`] and not unpinned since.
    pub unsafe fn unpin(raw: *mut DataBufRaw) {
        let p = raw as *mut PoolBuf;
        // SAFETY: caller contract: a pinned buffer is never recycled, so it is alive.
        let Some(pool) = (unsafe { (*p).owner.clone() }) else {
            return;
        };
        let mut free = pool.free.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: as above, under the store's lock.
        unsafe {
            (*p).pinned = false;
            if (*p).freed_while_pinned {
                Self::recycle(Box::from_raw(p), &mut free);
            }
        }
    }

    /// Buffers cached (tests).
    #[cfg(test)]
    fn cached(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(Vec::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class_of(1), Some(0));
        assert_eq!(class_of(4096), Some(0));
        assert_eq!(class_of(4097), Some(1));
        assert_eq!(class_of(1 << 24), Some(12));
        assert_eq!(class_of((1 << 24) + 1), None);
    }

    #[test]
    fn buffers_are_reused() {
        let pool = BufPool::new();
        let mut b = pool.alloc(5000).unwrap();
        assert_eq!(b.capacity(), 5000);
        b.as_mut_slice()[4999] = 7;
        let p = b.as_mut_slice().as_ptr();
        BufPool::free(b);
        assert_eq!(pool.cached(), 1);
        let mut b = pool.alloc(8192).unwrap();
        assert_eq!(b.as_mut_slice().as_ptr(), p, "same memory again");
        assert_eq!(b.capacity(), 8192);
        BufPool::free(b);
    }

    #[test]
    fn pinned_buffer_returns_at_unpin() {
        let pool = BufPool::new();
        let b = pool.alloc(4096).unwrap();
        let raw = b.into_raw();
        // SAFETY: handed out above.
        unsafe { BufPool::pin(raw) };
        // SAFETY: we own it again (it was into_raw'd above).
        let b = unsafe { DataBuf::from_raw(raw) }.unwrap();
        BufPool::free(b);
        assert_eq!(pool.cached(), 0, "still pinned");
        // SAFETY: pinned above.
        unsafe { BufPool::unpin(raw) };
        assert_eq!(pool.cached(), 1);
    }

    #[test]
    fn pool_outlives_connection_while_buffers_are_out() {
        let pool = BufPool::new();
        let b = pool.alloc(4096).unwrap();
        drop(pool);
        BufPool::free(b); // recycled into the still-alive store, then dropped with it
    }
}
