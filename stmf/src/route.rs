//! The per-command path: port → core → LU → core → port.
//!
//! These functions are what the host entry points of `host.rs` call. They run on the
//! providers' threads, never block, never allocate in steady state (tasks come from the
//! session's pool), and take no lock shared between sessions.

use crate::objects::{lock, read};
use crate::session::SessionCore;
use crate::stats::CmdClass;
use crate::task::*;
use plugins_sdk::abi::{
    io_flags, task_flags, DataBufRaw, LuHandle, SessionHandle, Status, Task, TaskRequest,
    INLINE_CDB_LEN,
};
use plugins_sdk::fields;
use plugins_sdk::scsi::lun::Lun;
use plugins_sdk::scsi::{Asc, OpCode, ScsiStatus, Sense, SenseFormat, SenseKey};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::time::Instant;

/// Longest CDB accepted (SPC variable-length CDBs go up to 260 bytes).
pub(crate) const MAX_CDB: usize = 260;

/// Allocates a task on a session (port side).
/// Most tasks one session may hold at once (live, or quarantined after an abort that
/// never completed). Ports bound their commands well below it (iscsit: `cmd_window` +
/// `max_immediate_commands` + task management, at most 5,120 + TMFs); this is the core's
/// own bound for a port that does not. Over it, `task_alloc` answers BUSY.
pub const MAX_TASKS_PER_SESSION: usize = 8192;

pub(crate) fn task_alloc(sp: *const SessionCore, req: &TaskRequest) -> Result<*mut Task, Status> {
    // SAFETY: the port passes the handle it got from register_session, alive until it
    // deregisters the session (the ABI contract).
    let s = unsafe { &*sp };
    if s.closing.load(Relaxed) {
        return Err(Status::BAD_STATE);
    }
    let cdb_len = req.cdb_len as usize;
    if cdb_len > MAX_CDB || (cdb_len > 0 && req.cdb.is_null()) {
        return Err(Status::INVALID_ARG);
    }
    let ct = {
        let mut pool = lock(&s.pool);
        let ct = match pool.free.pop() {
            Some(t) => t,
            None if pool.all.len() >= MAX_TASKS_PER_SESSION => {
                // Every task of the session is live (or quarantined): the port sent more
                // than any port bounds its commands to. No allocation on its say-so.
                return Err(Status::BUSY);
            }
            None => {
                let t = CoreTask::new_boxed(sp);
                pool.all.push(t);
                t
            }
        };
        // A TM request is marked at once, so no concurrent abort scan can select it.
        let tm = if req.tm_function != 0 { TM } else { 0 };
        state(ct).store(IN_USE | KNOWN_TO_PORT | CORE_ONE | tm, Relaxed);
        // The lifecycle reference, which the port's post reference borrows until post_task
        // (a free task has none: its last reference recycled it).
        refs(ct).store(1, Relaxed);
        ct
    };
    s.in_use.fetch_add(1, Relaxed);
    // SAFETY: the task is ours alone until it is returned; the CDB pointer is valid for
    // cdb_len bytes for this call (the port's request).
    unsafe {
        let cdb = if cdb_len == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(req.cdb, cdb_len)
        };
        let t = &mut (*ct).public;
        t.lun = req.lun;
        t.tag = req.tag;
        t.tm_ref_tag = req.tm_ref_tag;
        t.expected_xfer_len = req.expected_xfer_len;
        t.cmd_sn = req.cmd_sn;
        t.flags = req.flags;
        t.task_attr = req.task_attr;
        t.tm_function = req.tm_function;
        t.max_nbufs = req.max_nbufs.clamp(1, 4);
        t.port_private = req.port_private;
        t.lu_private = std::ptr::null_mut();
        t.itl_private = std::ptr::null_mut();
        t.scsi_status = 0;
        t.tm_response = 0;
        t.residual_flags = 0;
        t.sense_len = 0;
        t.residual = 0;
        t.nbytes_transferred = 0;
        t.cmd_xfer_len = 0;
        t.cdb_len = cdb_len as u16;
        if cdb_len <= INLINE_CDB_LEN {
            t.cdb[..cdb_len].copy_from_slice(cdb);
            t.ext_cdb = std::ptr::null();
        } else {
            t.cdb.copy_from_slice(&cdb[..INLINE_CDB_LEN]);
            (*ct).ext_cdb.clear();
            (*ct).ext_cdb.extend_from_slice(cdb);
            (*ct).public.ext_cdb = (*ct).ext_cdb.as_ptr();
        }
        let map = read(&s.map).clone();
        let entry = Lun::from_bytes(req.lun)
            .ok()
            .and_then(|l| map.get(l.number()));
        let (lu, stats) = match entry {
            Some(e) => (
                e.lu.as_ref()
                    .map_or(std::ptr::null(), std::sync::Arc::as_ptr),
                std::sync::Arc::as_ptr(&e.stats),
            ),
            None => (std::ptr::null(), std::sync::Arc::as_ptr(&s.core_stats)),
        };
        (*ct).lu = lu;
        (*ct).stats = stats;
        (*ct).map = Some(map);
        (*ct).start = Instant::now();
        let t = &mut (*ct).public;
        t.session = SessionHandle(sp as *const _);
        t.lu = LuHandle(lu as *const _);
    }
    Ok(ct as *mut Task)
}

/// Reads the first CDB byte.
fn opcode(ct: *mut CoreTask) -> u8 {
    // SAFETY: live task; the CDB is fixed after allocation.
    unsafe {
        if (*ct).public.cdb_len == 0 {
            0
        } else {
            (*ct).public.cdb[0]
        }
    }
}

/// Routes a posted task (port side). The SDK's `UnpostedTask` makes sure a task is posted
/// once; the post reference becomes part of the lifecycle reference (nothing to count).
pub(crate) fn post_task(t: *mut Task, initial: *mut DataBufRaw) {
    let ct = core_of(t);
    if state(ct).load(Acquire) & IN_USE == 0 {
        // Orphaned: its session went with the core. Its post reference is all that is left
        // (the buffer's store went with the session: it is left alone).
        ref_rele(ct);
        return;
    }
    // Every path below marks the task POSTED with the atomic operation it does anyway.
    // SAFETY: the port posts a task it allocated; fields are stable.
    let tm = unsafe { (*ct).public.tm_function };
    if tm != 0 {
        if !initial.is_null() {
            free_port_dbuf(ct, initial);
        }
        state(ct).fetch_or(TM | POSTED, AcqRel);
        crate::tm::handle_tm(ct);
        unpin(ct);
        return;
    }
    let s = session(ct);
    let op = opcode(ct);
    if s.ua_inventory.load(Relaxed)
        && op != OpCode::INQUIRY.0
        && op != OpCode::REPORT_LUNS.0
        && s.ua_inventory.swap(false, AcqRel)
    {
        crate::default_lu::check_condition(
            ct,
            initial,
            Sense::unit_attention(Asc::REPORTED_LUNS_DATA_HAS_CHANGED),
        );
        unpin(ct);
        return;
    }
    if op == OpCode::REPORT_LUNS.0 {
        s.ua_inventory.store(false, Relaxed);
        crate::default_lu::report_luns(ct, initial);
        unpin(ct);
        return;
    }
    // SAFETY: the task is held by its post reference; `lu` is fixed at allocation.
    let lu = unsafe { (*ct).lu };
    // SAFETY: a non-null LU pointer is kept alive by the task's map.
    if lu.is_null() || !unsafe { &*lu }.online.load(Acquire) {
        crate::default_lu::no_lu(ct, initial);
        unpin(ct);
        return;
    }
    // SAFETY: as above.
    let lu = unsafe { &*lu };
    // Hand the task to the LU unless an abort got to it first (then the aborter finishes it
    // with the port, and the LU never sees it).
    let st = state(ct);
    let mut s = st.load(Acquire);
    loop {
        if s & ABORTING != 0 {
            st.fetch_or(POSTED, AcqRel);
            if !initial.is_null() {
                free_port_dbuf(ct, initial);
            }
            unpin(ct);
            return;
        }
        match st.compare_exchange_weak(
            s,
            s | KNOWN_TO_LU | ROUTED_TO_LU | IN_NEW_TASK | POSTED,
            AcqRel,
            Acquire,
        ) {
            Ok(_) => break,
            Err(now) => s = now,
        }
    }
    if !initial.is_null() {
        // Immediate/unsolicited data has been moved already: it counts for residuals.
        // SAFETY: the port hands over a valid buffer with the task; the count is a shared
        // field of a live task, accessed atomically by all.
        unsafe {
            let n = u64::from((*initial).xfer_len);
            fields::add_u64(&raw mut (*ct).public.nbytes_transferred, n);
            if let Some(stats) = (*ct).stats.as_ref() {
                stats.bytes(false, n);
            }
        }
    }
    // SAFETY: an online LU (checked above) is registered, so its ops and ctx are valid; the
    // task is held by its post reference for the call.
    let r = unsafe { (lu.ops.new_task)(lu.ctx, t, initial) };
    let prev = st.fetch_and(!IN_NEW_TASK, AcqRel);
    if r == Status::PANICKED {
        crate::core::fail_provider(&lu.provider, "panicked in new_task");
        fail_for_lu(ct);
    } else if prev & ABORTING != 0 {
        // An abort arrived while the LU was taking the task: it left the LU to us.
        crate::tm::abort_lu_side(ct);
    }
    unpin(ct);
}

/// Completes a task on behalf of a failed LU: CHECK CONDITION, INTERNAL TARGET FAILURE.
pub(crate) fn fail_for_lu(ct: *mut CoreTask) {
    if state(ct).load(Acquire) & KNOWN_TO_LU == 0 {
        return;
    }
    set_sense(
        ct,
        Sense::new(SenseKey::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE),
    );
    send_status(ct as *mut Task, io_flags::LU_DONE);
}

/// Stores CHECK CONDITION with `sense` (fixed format) in the task.
pub(crate) fn set_sense(ct: *mut CoreTask, sense: Sense) {
    let bytes = sense.encode(SenseFormat::Fixed);
    let b = bytes.as_slice();
    let b = &b[..b.len().min(plugins_sdk::abi::SENSE_LEN)];
    // SAFETY: the status fields belong to whoever completes the task, the core here; they
    // are shared fields of a live task, accessed atomically by all (never through a
    // reference to the whole task, which providers read at the same time).
    unsafe {
        let t = &raw mut (*ct).public;
        fields::store_u8(&raw mut (*t).scsi_status, ScsiStatus::CHECK_CONDITION.0);
        fields::write_bytes((&raw mut (*t).sense).cast(), b);
        fields::store_u16(&raw mut (*t).sense_len, b.len() as u16);
    }
}

/// Returns a buffer to the port's store.
pub(crate) fn free_port_dbuf(ct: *mut CoreTask, d: *mut DataBufRaw) {
    let lp = &session(ct).lport;
    if lp.released.load(Acquire) {
        return;
    }
    // SAFETY: the buffer came from this port's store.
    if unsafe { (lp.ops.dbuf_free)(lp.ctx, d) } == Status::PANICKED {
        crate::core::fail_provider(&lp.provider, "panicked in dbuf_free");
    }
}

/// Returns a buffer of a task that may be dead to its port's store: a zombie's session is
/// alive (it counts the task in use), an orphan's is gone and the buffer is left alone.
pub(crate) fn free_port_dbuf_if_alive(ct: *mut CoreTask, d: *mut DataBufRaw) {
    if refs(ct).load(Acquire) & ORPHAN == 0 {
        free_port_dbuf(ct, d);
    }
}

/// True when a provider's call for the task may go ahead: the task is alive and not
/// quarantined. The caller's reference keeps a task that dies meanwhile a zombie whose
/// session and port stay valid; only a live task's session may be gone (orphaned, at core
/// teardown), and an orphan's state word is 0.
fn alive(ct: *mut CoreTask) -> bool {
    state(ct).load(Acquire) & (IN_USE | QUARANTINED) == IN_USE
}

/// LU → port: allocate a buffer from the port's store.
pub(crate) fn dbuf_alloc(
    t: *mut Task,
    size: u32,
    min: *mut u32,
    out: *mut *mut DataBufRaw,
) -> Status {
    let ct = core_of(t);
    if !alive(ct) {
        return Status::BAD_STATE;
    }
    let lp = &session(ct).lport;
    if lp.released.load(Acquire) {
        return Status::BAD_STATE;
    }
    // SAFETY: the LU's out-params are passed through; the task is valid.
    let r = unsafe { (lp.ops.dbuf_alloc)(lp.ctx, t, size, min, out) };
    if r == Status::PANICKED {
        crate::core::fail_provider(&lp.provider, "panicked in dbuf_alloc");
    }
    r
}

/// LU → port: return a buffer.
pub(crate) fn dbuf_free(t: *mut Task, d: *mut DataBufRaw) {
    free_port_dbuf_if_alive(core_of(t), d);
}

/// LU → port: move a buffer.
pub(crate) fn xfer_data(t: *mut Task, d: *mut DataBufRaw, flags: u32) -> Status {
    let ct = core_of(t);
    let st = state(ct).load(Acquire);
    if st & (ABORTING | QUARANTINED) != 0 {
        return Status::ABORTED;
    }
    if st & IN_USE == 0 {
        return Status::BAD_STATE;
    }
    let lp = &session(ct).lport;
    if lp.released.load(Acquire) || !lp.online.load(Acquire) {
        return Status::BAD_STATE;
    }
    // SAFETY: valid task and buffer; ownership of the buffer passes to the port.
    let r = unsafe { (lp.ops.xfer_data)(lp.ctx, t, d, flags) };
    if r == Status::PANICKED {
        crate::core::fail_provider(&lp.provider, "panicked in xfer_data");
        return Status::IO_ERROR;
    }
    r
}

/// Port → LU: a transfer finished.
pub(crate) fn data_xfer_done(t: *mut Task, d: *mut DataBufRaw, status: Status) {
    let ct = core_of(t);
    // Hold the task for the whole call: an abort both parties answer at once must not free it
    // under the LU (or under the core's own default handling). A task nobody knows any more
    // (a late completion through a kept handle) is not touched: its buffer goes home.
    let Some(st) = pin(ct, 0) else {
        if state(ct).load(Acquire) & QUARANTINED == 0 {
            free_port_dbuf_if_alive(ct, d);
        }
        return;
    };
    data_xfer_done_held(ct, st, d, status);
    unpin(ct);
}

fn data_xfer_done_held(ct: *mut CoreTask, st: u32, d: *mut DataBufRaw, status: Status) {
    let t = ct as *mut Task;
    // SAFETY: the port hands back a valid buffer of this task (ours until we pass it on);
    // the count is a shared field, accessed atomically by all: two buffers of one task may
    // complete on two threads at once.
    unsafe {
        (*d).xfer_status = status;
        if status.is_ok() {
            let n = u64::from((*d).xfer_len);
            fields::add_u64(&raw mut (*ct).public.nbytes_transferred, n);
            if let Some(stats) = (*ct).stats.as_ref() {
                stats.bytes((*d).flags & plugins_sdk::abi::dbuf_flags::TO_RPORT != 0, n);
            }
        }
    }
    if st & DEFAULT_LU != 0 {
        crate::default_lu::xfer_done(ct, d, status);
        return;
    }
    // SAFETY: a task routed to an LU keeps its LU alive through its map.
    let lu = unsafe { (*ct).lu.as_ref() };
    match lu {
        Some(lu) if st & KNOWN_TO_LU != 0 && !lu.released.load(Acquire) => {
            // SAFETY: not released, so the LU's ops and ctx are valid; the task is pinned for
            // the call; ownership of the buffer returns to the LU.
            if unsafe { (lu.ops.dbuf_xfer_done)(lu.ctx, t, d) } == Status::PANICKED {
                crate::core::fail_provider(&lu.provider, "panicked in dbuf_xfer_done");
                fail_for_lu(ct);
            }
        }
        // The LU let go of the task (aborted) or is gone: the buffer goes home.
        _ => free_port_dbuf(ct, d),
    }
}

/// LU (or the core) → port: send status.
pub(crate) fn send_status(t: *mut Task, flags: u32) -> Status {
    let ct = core_of(t);
    let Some(prev) = pin(ct, 0) else {
        // Quarantined, or known to nobody (dead, or a second status after LU_DONE).
        return if state(ct).load(Acquire) & QUARANTINED != 0 {
            Status::ABORTED
        } else {
            Status::BAD_STATE
        };
    };
    if prev & ABORTING != 0 {
        if flags & io_flags::LU_DONE != 0 {
            release(ct, KNOWN_TO_LU);
        }
        unpin(ct);
        return Status::ABORTED;
    }
    // SAFETY: a pinned task; the LU is done writing status fields and residuals are the
    // core's. Shared fields are accessed atomically (providers may read them meanwhile),
    // the ones fixed at allocation directly, never through a reference to the whole task.
    unsafe {
        let p = &raw mut (*ct).public;
        let exp = (*p).expected_xfer_len;
        let moved = fields::load_u64(&raw mut (*p).nbytes_transferred);
        let want = fields::load_u64(&raw mut (*p).cmd_xfer_len);
        let (residual, residual_flags) = if want > exp {
            (want - exp, 2)
        } else if moved < exp {
            (exp - moved, 1)
        } else {
            (0, 0)
        };
        fields::store_u64(&raw mut (*p).residual, residual);
        fields::store_u8(&raw mut (*p).residual_flags, residual_flags);
        if let Some(stats) = (*ct).stats.as_ref() {
            let flags = (*p).flags;
            let class = if flags & task_flags::READ_DATA != 0 {
                CmdClass::Read
            } else if flags & task_flags::WRITE_DATA != 0 {
                CmdClass::Write
            } else {
                CmdClass::Other
            };
            stats.command(
                class,
                fields::load_u8(&raw mut (*p).scsi_status) == 0,
                (*ct).start.elapsed().as_nanos() as u64,
            );
        }
    }
    if flags & io_flags::LU_DONE != 0 {
        state(ct).fetch_and(!KNOWN_TO_LU, AcqRel);
    }
    let lp = &session(ct).lport;
    let r = if lp.released.load(Acquire) {
        Status::BAD_STATE
    } else {
        // SAFETY: the port is not released, so its ops and ctx are valid; the task is held
        // by the core for the call.
        unsafe { (lp.ops.send_status)(lp.ctx, t, flags) }
    };
    if r == Status::PANICKED {
        crate::core::fail_provider(&lp.provider, "panicked in send_status");
    }
    if !r.is_ok() {
        release(ct, KNOWN_TO_PORT);
    }
    unpin(ct);
    Status::SUCCESS
}

/// Port: status delivered.
pub(crate) fn send_status_done(t: *mut Task, _status: Status) {
    let ct = core_of(t);
    if state(ct).load(Acquire) & QUARANTINED == 0 {
        release(ct, KNOWN_TO_PORT);
    }
}

/// Port: a pending abort finished.
pub(crate) fn lport_aborted(t: *mut Task) {
    send_status_done(t, Status::ABORTED);
}

/// LU: a pending abort finished.
pub(crate) fn lu_aborted(t: *mut Task) {
    let ct = core_of(t);
    if state(ct).load(Acquire) & QUARANTINED == 0 {
        release(ct, KNOWN_TO_LU);
    }
}

/// Ends a task nobody knows any more: the providers' `task_free`, then the lifecycle
/// reference (see [`end_lifecycle`]).
pub(crate) fn free_task(ct: *mut CoreTask) {
    let t = ct as *mut Task;
    let st = state(ct).load(Acquire);
    let waiters = take_waiters(ct);
    let s = session(ct);
    if st & ROUTED_TO_LU != 0 {
        // SAFETY: the map held by the task keeps the LU alive.
        if let Some(lu) = unsafe { (*ct).lu.as_ref() } {
            if !lu.released.load(Acquire)
                // SAFETY: the LU is not released, so its ops and ctx are valid; nobody else
                // uses the task any more.
                && unsafe { (lu.ops.task_free)(lu.ctx, t) } == Status::PANICKED
            {
                crate::core::fail_provider(&lu.provider, "panicked in task_free");
            }
        }
    }
    let lp = &s.lport;
    // SAFETY: the port's entry point while it is not released; the task is dead after this
    // (a handle the port kept holds only its memory).
    if !lp.released.load(Acquire) && unsafe { (lp.ops.task_free)(lp.ctx, t) } == Status::PANICKED {
        crate::core::fail_provider(&lp.provider, "panicked in task_free");
    }
    if st & ABORTING != 0 {
        // SAFETY: stats pointer kept alive by the map or the session.
        if let Some(stats) = unsafe { (*ct).stats.as_ref() } {
            stats.aborted();
        }
    }
    // SAFETY: no party knows the task and the core holds no pin, so nobody else touches its
    // core-private fields; providers holding handles read only the public part.
    let map = unsafe { (*ct).map.take() };
    // SAFETY: an atomic field of a task whose memory our lifecycle reference keeps.
    unsafe { (*ct).generation.fetch_add(1, Relaxed) };
    end_lifecycle(ct);
    drop(map);
    for g in waiters {
        g.task_done();
    }
}

/// Returns a task nobody references any more to its session's pool.
#[inline]
pub(crate) fn recycle(ct: *mut CoreTask) {
    let s = session(ct);
    {
        let mut pool = lock(&s.pool);
        state(ct).store(0, Relaxed);
        pool.free.push(ct);
    }
    s.in_use.fetch_sub(1, Relaxed);
}

/// Port: a task from `task_alloc` is given up unposted. The port lets go of it and the post
/// reference goes: the task ends like any other (`task_free`, then back to the pool).
pub(crate) fn task_abandon(t: *mut Task) {
    let ct = core_of(t);
    if state(ct).load(Acquire) & IN_USE == 0 {
        // Orphaned (see post_task): only the reference is left to give back.
        ref_rele(ct);
        return;
    }
    release(ct, KNOWN_TO_PORT);
    unpin(ct);
}
