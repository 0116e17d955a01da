//! Task management and aborts.
//!
//! Every abort is a two-sided handshake: the core marks the task ABORTING and asks each party
//! that knows it (LU, port) to let go; a party answers at once or later (`lu_aborted`,
//! `lport_aborted`). Whoever asked (a TM request, an admin offline, a session teardown) waits
//! on an [`AbortGroup`] that completes when every task of the group is freed. A party that
//! does not let go within the abort timeout gets its object (only that LU or that port)
//! forced offline, the task is quarantined (never reused, so a late call from the stuck
//! provider cannot hit a recycled task), and the group completes as timed out.

use crate::objects::{lock, read, LuEntry, LUS};
use crate::session::SessionCore;
use crate::task::*;
use plugins_sdk::abi::{LuEvent, SessionHandle, Status, Task, TmFunction, TmResponse};
use plugins_sdk::fields;
use plugins_sdk::scsi::lun::Lun;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

type DoneFn = Box<dyn FnOnce(bool) + Send>;
/// LU events to deliver once a TM request's aborts are done.
type PostEvents = Vec<(Arc<LuEntry>, LuEvent, SessionHandle)>;

/// A set of tasks being aborted for one requester.
pub(crate) struct AbortGroup {
    remaining: AtomicUsize,
    timed_out: AtomicBool,
    done: Mutex<Option<DoneFn>>,
}

impl AbortGroup {
    /// A group whose `done(timed_out)` runs once every added task is freed and `arm` was called.
    pub fn new(done: impl FnOnce(bool) + Send + 'static) -> Arc<Self> {
        Arc::new(AbortGroup {
            remaining: AtomicUsize::new(1),
            timed_out: AtomicBool::new(false),
            done: Mutex::new(Some(Box::new(done))),
        })
    }

    fn add(&self) {
        self.remaining.fetch_add(1, AcqRel);
    }

    /// One task of the group is gone.
    pub fn task_done(&self) {
        if self.remaining.fetch_sub(1, AcqRel) == 1 {
            let f = lock(&self.done).take();
            if let Some(f) = f {
                f(self.timed_out.load(Acquire));
            }
        }
    }

    /// All tasks are added: completes the group if they are all gone already.
    pub fn arm(&self) {
        self.task_done();
    }

    fn mark_timed_out(&self) {
        self.timed_out.store(true, Release);
    }
}

use std::sync::atomic::Ordering::Release;

/// A raw task pointer moved into a completion closure, with a reference of its own on the
/// task (taken by whoever makes it, given back by the closure).
struct SendTask(*mut CoreTask);
// SAFETY: tasks are designed to be completed from any thread, and the reference the pointer
// carries keeps the task's memory valid wherever the closure runs.
unsafe impl Send for SendTask {}

/// Aborts the tasks of session `s` selected by `pred` (never `exclude`, never TM tasks),
/// adding them to `group`. Returns how many were aborted.
pub(crate) fn abort_in_session(
    s: &SessionCore,
    group: &Arc<AbortGroup>,
    exclude: *mut CoreTask,
    pred: impl Fn(*mut CoreTask) -> bool,
) -> usize {
    let pinned: Vec<(*mut CoreTask, u32)> = {
        let pool = lock(&s.pool);
        pool.all
            .iter()
            .copied()
            .filter(|&t| {
                t != exclude && state(t).load(Acquire) & (IN_USE | TM) == IN_USE && pred(t)
            })
            .filter_map(|t| pin(t, ABORTING).map(|prev| (t, prev)))
            .collect()
    };
    let n = pinned.len();
    for (t, prev) in pinned {
        start_abort(s, t, prev, group);
    }
    n
}

fn start_abort(s: &SessionCore, ct: *mut CoreTask, prev: u32, group: &Arc<AbortGroup>) {
    {
        // SAFETY: pinned task; its waiters list has its own lock. A task quarantined by an
        // earlier abort's deadline will never be freed: the group learns it timed out
        // instead of waiting on it. (The quarantine sets QUARANTINED before it takes the
        // waiters, under this same lock, so no waiter is lost.)
        let mut waiters = lock(unsafe { &(*ct).waiters });
        if state(ct).load(Acquire) & QUARANTINED != 0 {
            group.mark_timed_out();
        } else {
            group.add();
            waiters.push(group.clone());
        }
    }
    if prev & ABORTING == 0 {
        if let Some(core) = s.lport.provider.core.upgrade() {
            // SAFETY: the task is pinned, so not freed or recycled; an atomic core field.
            let gen = unsafe { (*ct).generation.load(Relaxed) };
            let session =
                crate::core::find_session(SessionHandle(s as *const SessionCore as *const _));
            if let Some(session) = session {
                core.svc
                    .schedule(Instant::now() + core.abort_timeout(), ct, gen, session);
            }
        }
        let t = ct as *mut Task;
        // While the LU is still inside new_task, post_task asks it when new_task returns.
        if state(ct).load(Acquire) & IN_NEW_TASK == 0 {
            abort_lu_side(ct);
        }
        if state(ct).load(Acquire) & KNOWN_TO_PORT != 0 {
            let lp = &s.lport;
            if lp.released.load(Acquire) {
                release(ct, KNOWN_TO_PORT);
            } else {
                // SAFETY: not released, so the port's ops and ctx are valid; the task is
                // pinned for the call.
                match unsafe { (lp.ops.abort)(lp.ctx, t) } {
                    Status::ABORT_SUCCESS | Status::NOT_FOUND => release(ct, KNOWN_TO_PORT),
                    Status::PANICKED => {
                        crate::core::fail_provider(&lp.provider, "panicked in abort");
                        release(ct, KNOWN_TO_PORT);
                    }
                    _ => {}
                }
            }
        }
    }
    unpin(ct);
}

/// Asks the LU side of an aborting task to let go, once (whoever gets here first: the
/// aborter, or `post_task` when the LU's `new_task` returns). The caller holds a core
/// reference on the task.
pub(crate) fn abort_lu_side(ct: *mut CoreTask) {
    let prev = state(ct).fetch_or(LU_ABORT_ASKED, AcqRel);
    if prev & LU_ABORT_ASKED != 0 || prev & KNOWN_TO_LU == 0 {
        return;
    }
    if prev & DEFAULT_LU != 0 {
        release(ct, KNOWN_TO_LU);
        return;
    }
    // SAFETY: the task's map keeps its LU alive.
    match unsafe { (*ct).lu.as_ref() } {
        Some(lu) if !lu.released.load(Acquire) => {
            // SAFETY: not released, so the LU's ops and ctx are valid; the caller holds a
            // core reference on the task for the call.
            match unsafe { (lu.ops.abort)(lu.ctx, ct as *mut Task) } {
                Status::ABORT_SUCCESS | Status::NOT_FOUND => release(ct, KNOWN_TO_LU),
                Status::PANICKED => {
                    crate::core::fail_provider(&lu.provider, "panicked in abort");
                    release(ct, KNOWN_TO_LU);
                }
                _ => {} // pending: lu_aborted, or the timeout
            }
        }
        _ => release(ct, KNOWN_TO_LU),
    }
}

fn task_lu(t: *mut CoreTask) -> *const LuEntry {
    // SAFETY: called under the pool lock on in-use tasks; the field is fixed while in use.
    unsafe { (*t).lu }
}

fn task_tag(t: *mut CoreTask) -> u64 {
    // SAFETY: as above.
    unsafe { (*t).public.tag }
}

/// Handles a task-management request (the TM task is pinned by the caller).
pub(crate) fn handle_tm(ct: *mut CoreTask) {
    let s = session(ct);
    // SAFETY: pinned task; fields fixed after posting.
    let (func, lun_bytes, ref_tag) = unsafe {
        (
            TmFunction((*ct).public.tm_function),
            (*ct).public.lun,
            (*ct).public.tm_ref_tag,
        )
    };
    // SAFETY: the task is pinned by post_task; `map` is set at allocation and only taken
    // in free_task, which cannot run while the task is pinned.
    let map = unsafe { (*ct).map.clone() };
    let lun = Lun::from_bytes(lun_bytes).ok().map(|l| l.number());
    let lu: Option<Arc<LuEntry>> = lun.and_then(|l| {
        map.as_ref()
            .and_then(|m| m.get(l))
            .and_then(|e| e.lu.clone())
    });
    let lu_ptr = lu.as_ref().map_or(std::ptr::null(), Arc::as_ptr);
    let session_handle = SessionHandle(s as *const SessionCore as *const _);

    let mut post: PostEvents = Vec::new();
    let response: TmResponse;
    let target = SendTask(ct);
    let response_cell = Arc::new(Mutex::new(TmResponse::COMPLETE));
    let post_cell: Arc<Mutex<PostEvents>> = Arc::new(Mutex::new(Vec::new()));
    let (rc, pc) = (response_cell.clone(), post_cell.clone());
    // The closure may run on another thread after the port let go of the TM task: its own
    // reference keeps the memory from being reused under it.
    ref_hold(ct);
    let group = AbortGroup::new(move |_timed_out| {
        let target = target;
        let ct = target.0;
        let resp = *lock(&rc);
        for (lu, ev, sh) in lock(&pc).drain(..) {
            if !lu.released.load(Acquire) {
                // SAFETY: not released, so the LU's ops and ctx are valid.
                if unsafe { (lu.ops.event)(lu.ctx, ev, sh) } == Status::PANICKED {
                    crate::core::fail_provider(&lu.provider, "panicked in event");
                }
            }
        }
        finish_tm(ct, resp);
        ref_rele(ct);
    });

    let lun_needed = matches!(
        func,
        TmFunction::ABORT_TASK_SET | TmFunction::CLEAR_TASK_SET | TmFunction::LUN_RESET
    );
    if lun_needed && lu.is_none() {
        response = TmResponse::LUN_DOES_NOT_EXIST;
    } else {
        match func {
            TmFunction::ABORT_TASK => {
                let n = abort_in_session(s, &group, ct, |t| task_tag(t) == ref_tag);
                response = if n > 0 {
                    TmResponse::COMPLETE
                } else {
                    TmResponse::TASK_DOES_NOT_EXIST
                };
            }
            TmFunction::QUERY_TASK => {
                let pool = lock(&s.pool);
                let found = pool.all.iter().any(|&t| {
                    t != ct
                        && state(t).load(Acquire) & (IN_USE | TM | ABORTING) == IN_USE
                        && task_tag(t) == ref_tag
                });
                response = if found {
                    TmResponse::SUCCEEDED
                } else {
                    TmResponse::COMPLETE
                };
            }
            TmFunction::ABORT_TASK_SET | TmFunction::CLEAR_TASK_SET => {
                abort_in_session(s, &group, ct, |t| task_lu(t) == lu_ptr);
                response = TmResponse::COMPLETE;
            }
            TmFunction::LUN_RESET => {
                if let Some(core) = s.lport.provider.core.upgrade() {
                    for sess in core.all_sessions() {
                        abort_in_session(&sess, &group, ct, |t| task_lu(t) == lu_ptr);
                    }
                }
                if let Some(lu) = lu.clone() {
                    post.push((lu, LuEvent::RESET_STATE, SessionHandle(std::ptr::null())));
                }
                response = TmResponse::COMPLETE;
            }
            TmFunction::IT_NEXUS_RESET => {
                abort_in_session(s, &group, ct, |_| true);
                if let Some(m) = &map {
                    for e in &m.entries {
                        if let Some(l) = &e.lu {
                            post.push((l.clone(), LuEvent::NEXUS_RESET, session_handle));
                        }
                    }
                }
                response = TmResponse::COMPLETE;
            }
            TmFunction::TARGET_RESET | TmFunction::TARGET_COLD_RESET => {
                let sessions: Vec<Arc<SessionCore>> = lock(&s.lport.sessions).clone();
                let mut lus: Vec<Arc<LuEntry>> = Vec::new();
                for sess in &sessions {
                    abort_in_session(sess, &group, ct, |_| true);
                    for e in &read(&sess.map).entries {
                        if let Some(l) = &e.lu {
                            if !lus.iter().any(|x| Arc::ptr_eq(x, l)) {
                                lus.push(l.clone());
                            }
                        }
                    }
                }
                post.extend(
                    lus.into_iter()
                        .map(|l| (l, LuEvent::RESET_STATE, SessionHandle(std::ptr::null()))),
                );
                response = TmResponse::COMPLETE;
            }
            _ => response = TmResponse::NOT_SUPPORTED,
        }
    }
    *lock(&response_cell) = response;
    *lock(&post_cell) = post;
    group.arm();
}

/// Sends the response of a TM task, pinned for the call (so the port's `send_status` may
/// complete it at once and still read it); nothing when the port let go of it already.
fn finish_tm(ct: *mut CoreTask, response: TmResponse) {
    // The caller's reference keeps the task from being recycled, as pin requires.
    if pin(ct, 0).is_none() {
        return;
    }
    // SAFETY: a pinned task; the status fields are the core's to write for a TM task, and
    // shared (accessed atomically by all).
    unsafe {
        fields::store_u8(&raw mut (*ct).public.tm_response, response.0);
        fields::store_u8(&raw mut (*ct).public.scsi_status, 0);
    }
    let lp = &session(ct).lport;
    let r = if lp.released.load(Acquire) {
        Status::BAD_STATE
    } else {
        // SAFETY: the port is not released, so its ops and ctx are valid; the TM task is
        // known to the port until it completes this status.
        unsafe { (lp.ops.send_status)(lp.ctx, ct as *mut Task, 0) }
    };
    if r == Status::PANICKED {
        crate::core::fail_provider(&lp.provider, "panicked in send_status");
    }
    if !r.is_ok() {
        release(ct, KNOWN_TO_PORT);
    }
    unpin(ct);
}

/// Aborts every task of `lu` on every session; `done(timed_out)` runs when all are gone.
pub(crate) fn abort_lu_tasks(
    sessions: &[Arc<SessionCore>],
    lu: *const LuEntry,
    done: impl FnOnce(bool) + Send + 'static,
) {
    let group = AbortGroup::new(done);
    for s in sessions {
        abort_in_session(s, &group, std::ptr::null_mut(), |t| task_lu(t) == lu);
    }
    group.arm();
}

/// Aborts every task of a session (I_T nexus loss).
pub(crate) fn abort_session_tasks(s: &SessionCore) {
    let group = AbortGroup::new(|_| {});
    abort_in_session(s, &group, std::ptr::null_mut(), |_| true);
    group.arm();
}

struct Deadline {
    at: Instant,
    ct: usize,
    generation: u32,
    session: Arc<SessionCore>,
}

impl PartialEq for Deadline {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.ct) == (o.at, o.ct)
    }
}
impl Eq for Deadline {}
impl PartialOrd for Deadline {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Deadline {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.ct).cmp(&(o.at, o.ct))
    }
}

/// The core's service thread: abort deadlines and reaping of dead sessions.
pub(crate) struct Svc {
    heap: Mutex<BinaryHeap<Reverse<Deadline>>>,
    cv: Condvar,
    stop: AtomicBool,
}

impl Svc {
    pub fn new() -> Arc<Svc> {
        Arc::new(Svc {
            heap: Mutex::new(BinaryHeap::new()),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
        })
    }

    fn schedule(&self, at: Instant, ct: *mut CoreTask, generation: u32, session: Arc<SessionCore>) {
        lock(&self.heap).push(Reverse(Deadline {
            at,
            ct: ct as usize,
            generation,
            session,
        }));
        self.cv.notify_one();
    }

    pub fn stop(&self) {
        self.stop.store(true, Release);
        self.cv.notify_all();
    }

    /// Runs the service loop until `stop` (in its own thread).
    pub fn run(self: Arc<Self>, core: Weak<crate::core::CoreInner>) {
        let mut heap = lock(&self.heap);
        while !self.stop.load(Acquire) {
            let now = Instant::now();
            let next = heap.peek().map(|Reverse(d)| d.at);
            match next {
                Some(at) if at <= now => {
                    if let Some(Reverse(d)) = heap.pop() {
                        drop(heap);
                        expire(&d, &core);
                        heap = lock(&self.heap);
                    }
                }
                _ => {
                    let wait = next.map_or(Duration::from_millis(200), |at| {
                        (at - now).min(Duration::from_millis(200))
                    });
                    heap = self
                        .cv
                        .wait_timeout(heap, wait)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                    drop(heap);
                    if let Some(c) = core.upgrade() {
                        c.reap_sessions();
                    }
                    heap = lock(&self.heap);
                }
            }
        }
    }
}

/// An abort deadline passed: offline whoever still holds the task and quarantine it.
fn expire(d: &Deadline, core: &Weak<crate::core::CoreInner>) {
    let s = &d.session;
    let ct = d.ct as *mut CoreTask;
    let (stuck_lu, stuck_port) = {
        let mut pool = lock(&s.pool);
        // SAFETY: the session (alive through the Arc) owns the task box.
        let generation = unsafe { (*ct).generation.load(Relaxed) };
        if generation != d.generation {
            return;
        }
        // A compare-and-swap, not a store: a provider may let go (release) right now without
        // the pool lock; then the task is freed normally and must not be quarantined too.
        let word = state(ct);
        let mut st = word.load(Acquire);
        let stuck = loop {
            if st & IN_USE == 0 || st & ABORTING == 0 || st & QUARANTINED != 0 {
                return;
            }
            let stuck_lu = st & KNOWN_TO_LU != 0 && st & DEFAULT_LU == 0;
            let stuck_port = st & KNOWN_TO_PORT != 0;
            if !stuck_lu && !stuck_port {
                return;
            }
            let quarantined = (st & (CORE_MASK | ABORTING | ROUTED_TO_LU)) | IN_USE | QUARANTINED;
            match word.compare_exchange(st, quarantined, AcqRel, Acquire) {
                Ok(_) => break (stuck_lu, stuck_port),
                Err(now) => st = now,
            }
        };
        pool.all.retain(|&t| t != ct);
        stuck
    };
    s.in_use.fetch_sub(1, Relaxed);
    // SAFETY: quarantined tasks are never freed.
    let (tag, lu) = unsafe { ((*ct).public.tag, (*ct).lu) };
    let Some(core) = core.upgrade() else { return };
    // A late call from the stuck provider (dbuf_free, send_status, ...) reaches the task's
    // session and port: keep them alive for as long as the core lives.
    core.keep_for_quarantine(s.clone());
    let ms = core.abort_timeout().as_millis();
    if stuck_lu {
        if let Some(lu) = LUS.get(lu as *const _) {
            let why = format!(
                "LU {} did not complete the abort of task 0x{tag:x} within {ms} ms",
                lu.guid
            );
            tracing::error!("{why}; forcing it offline");
            core.force_offline_lu(&lu, why);
        }
    }
    let lp = &s.lport;
    if stuck_port {
        let why = format!(
            "port {} did not complete the abort of task 0x{tag:x} within {ms} ms",
            lp.name
        );
        tracing::error!("{why}; forcing it offline");
        core.force_offline_lport(lp, why);
    } else if !lp.released.load(Acquire) {
        // The port let go already: let it drop its context; the task memory stays quarantined.
        // SAFETY: not released, so the port's ops and ctx are valid; a quarantined task is
        // never freed, so the pointer stays valid.
        unsafe { (lp.ops.task_free)(lp.ctx, ct as *mut Task) };
    }
    for g in take_waiters(ct) {
        g.mark_timed_out();
        g.task_done();
    }
}
