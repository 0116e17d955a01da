//! The port's data buffer store: power-of-two size classes with free lists, one store
//! per connection (buffers are bound to a connection, as in COMSTAR's iscsit), so no
//! lock is shared between connections and steady state allocates nothing.
//!
//! Every byte is budgeted (docs/security.md): a [`Budget`] bounds the memory of all
//! stores together (`buffer_memory`), an [`Account`] the memory of one session's stores
//! (`session_buffer_memory`). Both are charged only when a store takes fresh memory and
//! credited when it gives memory back, so a buffer reused from a free list costs no
//! shared atomic; an account also counts the bytes handed out, which is what tells the
//! session it is short of memory ([`Account::pressed`]) and must stop opening its command
//! window. A store that cannot take fresh memory within both first gives back its own
//! cached buffers, then refuses: nothing is allocated beyond the budget.
//!
//! Buffers of 64 KiB and more are anonymous mappings, so memory given back goes back to
//! the system at once (the allocator would keep it); a store idle for
//! [`IDLE_TICKS`] ticks gives back its cache.
//!
//! A buffer may be *pinned* by a Data-In PDU still queued on the socket (the final PDU
//! of a read, held back for status phase collapse): freeing it then only marks it, and
//! the unpin returns it to the free list.

use memmap2::MmapMut;
use plugins_sdk::abi::{DataBufRaw, Status};
use plugins_sdk::DataBuf;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

/// Smallest buffer class (4 KiB).
const MIN_SHIFT: u32 = 12;
/// Largest buffer class (16 MiB).
const MAX_SHIFT: u32 = 24;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// Classes from this size up are anonymous mappings (given back to the system on free).
const MAP_MIN: usize = 64 << 10;
/// Ticks (100 ms each) without an allocation after which a store drops its cache.
pub const IDLE_TICKS: u32 = 10;
/// Room a session keeps free before it counts as short of memory: one largest data
/// buffer handed to an LU (1 MiB).
pub const HEADROOM: u64 = 1 << 20;
/// Part of the global budget (1/4) kept for small sessions: once the rest is spent, only
/// a session that holds less than its fair share (the limit divided by the sessions)
/// and less than [`SMALL_DIVISOR`]th of the limit gets fresh memory, so sessions that
/// hold buffers for as long as they like (peers that do not read, or never send the data
/// they announced) cannot starve the others, nor can sessions that came first.
const RESERVE_DIVISOR: u64 = 4;
/// A small session holds less than 1/32 of the global limit.
const SMALL_DIVISOR: u64 = 32;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A byte budget: a limit and what is held against it.
#[derive(Debug)]
pub struct Budget {
    limit: AtomicU64,
    used: AtomicU64,
    peak: AtomicU64,
    refused: AtomicU64,
    /// Accounts (sessions) sharing the budget.
    members: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            members: AtomicU64::new(0),
        }
    }

    /// Changes the limit (what is held stays held).
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes held.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Most bytes ever held.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Charges refused because the budget was spent.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes if they fit.
    fn charge(&self, n: u64) -> bool {
        let limit = self.limit();
        let r = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= limit)
            });
        match r {
            Ok(before) => {
                self.peak.fetch_max(before + n, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Gives `n` bytes back.
    fn credit(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// True when less than [`HEADROOM`] is left.
    pub fn pressed(&self) -> bool {
        self.used().saturating_add(HEADROOM) > self.limit()
    }

    /// Sessions sharing the budget.
    pub fn members(&self) -> u64 {
        self.members.load(Ordering::Relaxed)
    }

    /// What a session may hold and still take from the reserve: the limit divided by
    /// the sessions, at most 1/[`SMALL_DIVISOR`] of the limit.
    pub fn fair_share(&self) -> u64 {
        let limit = self.limit();
        (limit / self.members().max(1)).min(limit / SMALL_DIVISOR)
    }

    /// True when taking `n` more bytes would reach into the reserve.
    fn in_reserve(&self, n: u64) -> bool {
        let limit = self.limit();
        self.used().saturating_add(n) > limit - limit / RESERVE_DIVISOR
    }

    /// True when a session that holds `held` bytes may not take `n` more: the rest of
    /// the budget is spent and the session is above its fair share.
    fn over_share(&self, held: u64, n: u64) -> bool {
        self.in_reserve(n) && held.saturating_add(n) > self.fair_share()
    }
}

/// One session's share of the buffer memory: its budget and the bytes handed out.
pub struct Account {
    /// Memory held by the session's stores (handed out and cached).
    pub memory: Budget,
    /// The global budget the session counts as a member of.
    global: Arc<Budget>,
    out: AtomicU64,
    /// The session owes window slots: call `relief` once memory is free again.
    waiting: AtomicBool,
    relief: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Account {
    /// An account of `limit` bytes, one of the members of `global`.
    pub fn new(limit: u64, global: &Arc<Budget>) -> Arc<Self> {
        global.members.fetch_add(1, Ordering::Relaxed);
        Arc::new(Self {
            memory: Budget::new(limit),
            global: Arc::clone(global),
            out: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            relief: OnceLock::new(),
        })
    }

    /// Sets what to call when memory frees up after [`Account::wait`] (once).
    pub fn on_relief(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.relief.set(f);
    }

    /// Bytes of buffers handed out now (not cached).
    pub fn out(&self) -> u64 {
        self.out.load(Ordering::Relaxed)
    }

    /// True when the session should not open more window slots: less than
    /// [`HEADROOM`] of its budget is free of handed-out buffers, the global budget
    /// is nearly spent while the session holds buffers, or only the reserve is left
    /// and the session is above its fair share.
    pub fn pressed(&self, global: &Budget) -> bool {
        let out = self.out();
        out.saturating_add(HEADROOM) > self.memory.limit()
            || (out > 0 && global.pressed())
            || global.over_share(out, HEADROOM)
    }

    /// Asks for the relief call once memory frees up.
    pub fn wait(&self) {
        self.waiting.store(true, Ordering::Release);
    }

    fn released(&self, global: &Budget) {
        if self.waiting.load(Ordering::Acquire)
            && !self.pressed(global)
            && self.waiting.swap(false, Ordering::AcqRel)
        {
            if let Some(f) = self.relief.get() {
                f();
            }
        }
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.global.members.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Buffer memory: small classes from the allocator, large ones mapped.
enum Mem {
    Heap(Box<[u8]>),
    Map(MmapMut),
}

impl Mem {
    fn new(len: usize) -> Option<Mem> {
        if len < MAP_MIN {
            return Some(Mem::Heap(vec![0u8; len].into_boxed_slice()));
        }
        match MmapMut::map_anon(len) {
            Ok(m) => Some(Mem::Map(m)),
            Err(e) => {
                tracing::warn!("iscsit: cannot map a {len}-byte buffer: {e}");
                None
            }
        }
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        match self {
            Mem::Heap(b) => b.as_mut_ptr(),
            Mem::Map(m) => m.as_mut_ptr(),
        }
    }
}

/// One buffer: the ABI header first (so a `*mut DataBufRaw` is a `*mut PoolBuf`), then
/// the memory and bookkeeping.
#[repr(C)]
struct PoolBuf {
    raw: DataBufRaw,
    mem: Mem,
    class: usize,
    pinned: bool,
    freed_while_pinned: bool,
    /// The store, while the buffer is handed out (none while cached: no cycle).
    owner: Option<Arc<BufPool>>,
    /// Where the memory is charged; credited when the buffer is dropped.
    global: Arc<Budget>,
    account: Option<Arc<Account>>,
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let n = class_bytes(self.class);
        self.global.credit(n);
        if let Some(a) = &self.account {
            a.memory.credit(n);
        }
    }
}

#[derive(Default)]
struct Cache {
    // Buffers are handed out by address (`*mut DataBufRaw`): each keeps its own box.
    #[allow(clippy::vec_box)]
    lists: Vec<Vec<Box<PoolBuf>>>,
    allocs: u64,
    seen_allocs: u64,
    idle: u32,
}

/// A connection's buffer store.
pub struct BufPool {
    cache: Mutex<Cache>,
    global: Arc<Budget>,
    account: OnceLock<Arc<Account>>,
}

// SAFETY: cached buffers are owned by the store behind its mutex; raw pointers inside
// them point into their own memory.
unsafe impl Send for BufPool {}
// SAFETY: as above; all access to the cache goes through the mutex.
unsafe impl Sync for BufPool {}

fn class_of(size: u32) -> Option<usize> {
    let shift = size
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
        .max(MIN_SHIFT);
    (shift <= MAX_SHIFT).then(|| (shift - MIN_SHIFT) as usize)
}

fn class_bytes(class: usize) -> u64 {
    1u64 << (class as u32 + MIN_SHIFT)
}

/// The mark stored in `port_private` of every buffer of this port.
fn mark() -> *mut c_void {
    static MARK: u8 = 0;
    &MARK as *const u8 as *mut c_void
}

impl BufPool {
    /// An empty store charging `global`.
    pub fn new(global: Arc<Budget>) -> Arc<Self> {
        Arc::new(BufPool {
            cache: Mutex::new(Cache {
                lists: (0..CLASSES).map(|_| Vec::new()).collect(),
                ..Cache::default()
            }),
            global,
            account: OnceLock::new(),
        })
    }

    /// Charges the session's `account` from now on (set once, at login).
    pub fn attach(&self, account: Arc<Account>) {
        let _ = self.account.set(account);
    }

    /// The session's account, once attached.
    pub fn account(&self) -> Option<&Arc<Account>> {
        self.account.get()
    }

    /// A buffer of `size` bytes (capacity exactly `size`), or `None` when the budget
    /// has no room for it.
    pub fn alloc(self: &Arc<Self>, size: u32) -> Option<DataBuf> {
        let class = class_of(size)?;
        let account = self.account.get();
        let mut b = {
            let mut c = lock(&self.cache);
            c.allocs += 1;
            match c.lists.get_mut(class).and_then(Vec::pop) {
                Some(b) => b,
                None => self.fresh(&mut c, class, account)?,
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
        if let Some(a) = account {
            a.out.fetch_add(class_bytes(class), Ordering::Relaxed);
        }
        let raw = Box::into_raw(b) as *mut DataBufRaw;
        // SAFETY: a fresh, valid buffer whose ownership passes to the caller.
        unsafe { DataBuf::from_raw(raw) }
    }

    /// New memory for a buffer of `class`, charged to both budgets; the store's own
    /// cache is given back first when that makes room.
    fn fresh(
        &self,
        c: &mut Cache,
        class: usize,
        account: Option<&Arc<Account>>,
    ) -> Option<Box<PoolBuf>> {
        let n = class_bytes(class);
        let fits = |me: &Self| {
            if let Some(a) = account {
                if me.global.over_share(a.memory.used(), n) {
                    me.global.refused.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
            if !me.global.charge(n) {
                return false;
            }
            if let Some(a) = account {
                if !a.memory.charge(n) {
                    me.global.credit(n);
                    return false;
                }
            }
            true
        };
        if !fits(self) {
            // Give back cached buffers, largest first, until there is room.
            let mut fitted = false;
            for list in c.lists.iter_mut().rev() {
                while list.pop().is_some() {
                    if fits(self) {
                        fitted = true;
                        break;
                    }
                }
                if fitted {
                    break;
                }
            }
            if !fitted {
                return None;
            }
        }
        // Charged: from here on the PoolBuf's drop credits it, whatever happens.
        let mem = Mem::new(n as usize);
        let Some(mem) = mem else {
            self.global.credit(n);
            if let Some(a) = account {
                a.memory.credit(n);
            }
            return None;
        };
        Some(Box::new(PoolBuf {
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
            global: Arc::clone(&self.global),
            account: account.cloned(),
        }))
    }

    /// True when `buf` came from a store of this port.
    pub fn is_ours(buf: &DataBuf) -> bool {
        buf.port_private() == mark()
    }

    /// Puts a buffer back on its store's free list (the store is `pool`, its cache
    /// locked as `c`); the session's account no longer counts it as handed out.
    #[allow(clippy::vec_box)]
    fn recycle(pool: &BufPool, mut b: Box<PoolBuf>, c: &mut Cache) {
        b.owner = None;
        if let Some(a) = &b.account {
            a.out.fetch_sub(class_bytes(b.class), Ordering::Relaxed);
        }
        // A buffer charged to another account (none: a store has one) is dropped.
        let same = match (&b.account, pool.account.get()) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            (None, None) => true,
            _ => false,
        };
        if same {
            if let Some(list) = c.lists.get_mut(b.class) {
                list.push(b);
            }
        }
    }

    /// Tells the session when its handed-out memory fell enough (after a recycle).
    fn after_release(pool: &BufPool) {
        if let Some(a) = pool.account.get() {
            a.released(&pool.global);
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
        {
            let mut c = lock(&pool.cache);
            // SAFETY: as above; the pin flags are only touched under this lock.
            unsafe {
                if (*raw).pinned {
                    // Still read by a queued PDU: `unpin` recycles it.
                    (*raw).freed_while_pinned = true;
                    return;
                }
                Self::recycle(&pool, Box::from_raw(raw), &mut c);
            }
        }
        Self::after_release(&pool);
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
        let _c = lock(&pool.cache);
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
        {
            let mut c = lock(&pool.cache);
            // SAFETY: as above, under the store's lock.
            unsafe {
                (*p).pinned = false;
                if !(*p).freed_while_pinned {
                    return;
                }
                Self::recycle(&pool, Box::from_raw(p), &mut c);
            }
        }
        Self::after_release(&pool);
    }

    /// A timer tick: a store that allocated nothing for [`IDLE_TICKS`] ticks gives its
    /// cached memory back.
    pub fn tick(&self) {
        let dropped: Vec<Vec<Box<PoolBuf>>> = {
            let mut c = lock(&self.cache);
            if c.allocs != c.seen_allocs {
                c.seen_allocs = c.allocs;
                c.idle = 0;
                return;
            }
            c.idle = c.idle.saturating_add(1);
            if c.idle < IDLE_TICKS || c.lists.iter().all(Vec::is_empty) {
                return;
            }
            c.lists.iter_mut().map(std::mem::take).collect()
        };
        // Unmapped outside the lock.
        drop(dropped);
    }

    /// Buffers cached.
    pub fn cached(&self) -> usize {
        lock(&self.cache).lists.iter().map(Vec::len).sum()
    }
}

/// A buffer of this port kept by the port itself (the data of a PDU held for CmdSN
/// order): given back to its store when dropped.
pub struct OwnedBuf(Option<DataBuf>);

impl OwnedBuf {
    /// Takes ownership of `buf` (a buffer of this port).
    pub fn new(buf: DataBuf) -> Self {
        Self(Some(buf))
    }

    /// Its bytes up to the transfer length.
    pub fn data(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], DataBuf::data)
    }
}

impl Drop for OwnedBuf {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            BufPool::free(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(global: u64) -> (Arc<BufPool>, Arc<Budget>) {
        let g = Arc::new(Budget::new(global));
        (BufPool::new(Arc::clone(&g)), g)
    }

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
        let (pool, g) = pool(1 << 30);
        let mut b = pool.alloc(5000).unwrap();
        assert_eq!(b.capacity(), 5000);
        b.as_mut_slice()[4999] = 7;
        let p = b.as_mut_slice().as_ptr();
        BufPool::free(b);
        assert_eq!(pool.cached(), 1);
        let mut b = pool.alloc(8192).unwrap();
        assert_eq!(b.as_mut_slice().as_ptr(), p, "same memory again");
        assert_eq!(b.capacity(), 8192);
        assert_eq!(g.used(), 8192, "charged once, for the class");
        BufPool::free(b);
    }

    #[test]
    fn pinned_buffer_returns_at_unpin() {
        let (pool, _) = pool(1 << 30);
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
        let (pool, g) = pool(1 << 30);
        let b = pool.alloc(1 << 20).unwrap();
        drop(pool);
        BufPool::free(b); // recycled into the still-alive store, then dropped with it
        assert_eq!(g.used(), 0, "memory given back with the store");
    }

    #[test]
    fn global_budget_is_never_exceeded() {
        let (pool, g) = pool(3 << 20);
        let a = pool.alloc(1 << 20).unwrap();
        let b = pool.alloc(1 << 20).unwrap();
        let c = pool.alloc(1 << 20).unwrap();
        assert!(pool.alloc(4096).is_none(), "the budget is spent");
        assert_eq!(g.used(), 3 << 20);
        assert_eq!(g.refused(), 1);
        BufPool::free(a);
        // The cached 1 MiB buffer is given back to make room for another class.
        let d = pool.alloc(256 << 10).unwrap();
        assert_eq!(g.used(), (2 << 20) + (256 << 10));
        for x in [b, c, d] {
            BufPool::free(x);
        }
        assert_eq!(g.peak(), 3 << 20);
    }

    /// A session that holds buffers without end gets at most the part of the global
    /// budget outside the reserve; the reserve stays for the sessions below their share.
    #[test]
    fn the_reserve_is_kept_for_sessions_below_their_share() {
        let g = Arc::new(Budget::new(64 << 20));
        let hog = BufPool::new(Arc::clone(&g));
        hog.attach(Account::new(64 << 20, &g));
        let fair = BufPool::new(Arc::clone(&g));
        let fair_acct = Account::new(64 << 20, &g);
        fair.attach(Arc::clone(&fair_acct));
        assert_eq!(
            g.fair_share(),
            2 << 20,
            "1/32 of the limit (less than half)"
        );
        let mut held = Vec::new();
        while let Some(b) = hog.alloc(1 << 20) {
            held.push(b);
        }
        assert_eq!(
            held.len(),
            48,
            "the hog stops at the reserve (1/4 of 64 MiB)"
        );
        assert!(
            hog.account().unwrap().pressed(&g),
            "the hog's window closes"
        );
        assert!(!fair_acct.pressed(&g), "the other session's does not");
        let a = fair
            .alloc(1 << 20)
            .expect("the reserve serves the small session");
        let b = fair.alloc(1 << 20).expect("up to its share");
        assert!(fair.alloc(1 << 20).is_none(), "not beyond its share");
        assert_eq!(g.used(), 50 << 20);
        for x in held.into_iter().chain([a, b]) {
            BufPool::free(x);
        }
    }

    #[test]
    fn session_account_bounds_its_stores_and_signals_relief() {
        let (pool, g) = pool(1 << 30);
        let acct = Account::new(4 << 20, &g);
        let woken = Arc::new(AtomicU64::new(0));
        let w = Arc::clone(&woken);
        acct.on_relief(Box::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        }));
        pool.attach(Arc::clone(&acct));
        let big: Vec<DataBuf> = (0..3).map(|_| pool.alloc(1 << 20).unwrap()).collect();
        let small: Vec<DataBuf> = (0..4).map(|_| pool.alloc(256 << 10).unwrap()).collect();
        assert!(pool.alloc(4096).is_none(), "the session's budget is spent");
        assert_eq!(acct.out(), 4 << 20);
        assert!(acct.pressed(&g));
        acct.wait();
        let mut small = small.into_iter();
        for _ in 0..3 {
            BufPool::free(small.next().unwrap());
            assert_eq!(
                woken.load(Ordering::Relaxed),
                0,
                "less than 1 MiB free: pressed"
            );
        }
        BufPool::free(small.next().unwrap());
        assert_eq!(
            woken.load(Ordering::Relaxed),
            1,
            "1 MiB free again: relief once"
        );
        for b in big {
            BufPool::free(b);
        }
        assert_eq!(woken.load(Ordering::Relaxed), 1);
        assert_eq!(acct.out(), 0);
        assert_eq!(acct.memory.used(), 4 << 20, "cached, still charged");
        drop(pool);
        assert_eq!((acct.memory.used(), g.used()), (0, 0));
    }

    #[test]
    fn idle_store_gives_its_cache_back() {
        let (pool, g) = pool(1 << 30);
        let b = pool.alloc(1 << 20).unwrap();
        BufPool::free(b);
        assert_eq!(g.used(), 1 << 20);
        pool.tick(); // sees the allocation
        for _ in 0..IDLE_TICKS - 1 {
            pool.tick();
        }
        assert_eq!(pool.cached(), 1, "not idle long enough");
        pool.tick();
        assert_eq!((pool.cached(), g.used()), (0, 0));
    }
}
