//! Task handle ownership against a fake core: a `HostApi` made of test functions that
//! allocates tasks on the heap and frees each one when its lifecycle is over *and* its last
//! reference is gone — the contract of ABI 3. Under Miri (`scripts/miri.sh`) a handle that
//! took no reference, released one twice or read a task after its memory went back would be
//! reported as a use-after-free, a double free or a leak.

use plugins_sdk::abi::{
    CtlCmd, DataBufRaw, HostApi, LogLevel, LportHandle, LportRegistration, LuHandle,
    LuRegistration, ProviderToken, RStr, SessionHandle, SessionInfoRaw, SessionRegistration,
    Status, Task, TaskRequest, ABI_VERSION,
};
use plugins_sdk::{Host, TaskHandle, TaskSpec};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The fake core's task: the public part first, as in the real core.
#[repr(C)]
struct FakeTask {
    public: Task,
    /// References: one for the lifecycle (until the fake core ends the task) plus handles.
    refs: AtomicUsize,
    posted: Cell<bool>,
}

thread_local! {
    /// Tasks of this test thread whose memory is allocated.
    static LIVE: Cell<usize> = const { Cell::new(0) };
    /// Tasks the fake core ended (its `task_free`).
    static ENDED: Cell<usize> = const { Cell::new(0) };
    /// `send_status_done` calls seen.
    static COMPLETIONS: Cell<usize> = const { Cell::new(0) };
}

fn fake(t: *mut Task) -> *mut FakeTask {
    t.cast()
}

/// Gives back one reference; the last one frees the task.
fn rele(t: *mut Task) {
    // SAFETY: the caller owns one reference, so the task is allocated.
    if unsafe { &(*fake(t)).refs }.fetch_sub(1, Ordering::AcqRel) == 1 {
        // SAFETY: that was the last reference: nobody can reach the box any more.
        drop(unsafe { Box::from_raw(fake(t)) });
        LIVE.with(|n| n.set(n.get() - 1));
    }
}

/// What the fake core does when nobody knows the task any more (the real core's
/// `free_task`): the providers' `task_free` would run here, then the lifecycle ends.
fn end(t: *mut Task) {
    ENDED.with(|n| n.set(n.get() + 1));
    rele(t);
}

unsafe extern "C" fn max_log_level() -> LogLevel {
    LogLevel(0)
}
unsafe extern "C" fn log(_: ProviderToken, _: LogLevel, _: RStr, _: RStr) {}
unsafe extern "C" fn reply(_: *mut c_void, _: RStr) {}
unsafe extern "C" fn register_lu(
    _: ProviderToken,
    _: *const LuRegistration,
    _: *mut LuHandle,
) -> Status {
    Status::NOT_SUPPORTED
}
unsafe extern "C" fn deregister_lu(_: LuHandle) -> Status {
    Status::NOT_FOUND
}
unsafe extern "C" fn register_lport(
    _: ProviderToken,
    _: *const LportRegistration,
    _: *mut LportHandle,
) -> Status {
    Status::NOT_SUPPORTED
}
unsafe extern "C" fn deregister_lport(_: LportHandle) -> Status {
    Status::NOT_FOUND
}
unsafe extern "C" fn lu_ctl_complete(_: LuHandle, _: CtlCmd, _: Status) {}
unsafe extern "C" fn lport_ctl_complete(_: LportHandle, _: CtlCmd, _: Status) {}
unsafe extern "C" fn register_session(
    _: LportHandle,
    _: *const SessionRegistration,
    _: *mut SessionHandle,
) -> Status {
    Status::NOT_SUPPORTED
}
unsafe extern "C" fn deregister_session(_: SessionHandle) -> Status {
    Status::NOT_FOUND
}

unsafe extern "C" fn task_alloc(
    session: SessionHandle,
    req: *const TaskRequest,
    out: *mut *mut Task,
) -> Status {
    // SAFETY: all-zero is a valid Task (integers, arrays and raw pointers).
    let mut public: Task = unsafe { std::mem::zeroed() };
    // SAFETY: the SDK passes a request valid for the call, with `cdb_len` CDB bytes.
    let req = unsafe { &*req };
    // SAFETY: as above.
    let cdb = unsafe { std::slice::from_raw_parts(req.cdb, req.cdb_len as usize) };
    public.cdb[..cdb.len()].copy_from_slice(cdb);
    public.cdb_len = cdb.len() as u16;
    public.tag = req.tag;
    public.session = session;
    public.port_private = req.port_private;
    public.host = &FAKE_HOST;
    let t = Box::into_raw(Box::new(FakeTask {
        public,
        refs: AtomicUsize::new(1),
        posted: Cell::new(false),
    }));
    LIVE.with(|n| n.set(n.get() + 1));
    // SAFETY: a valid out-param of the SDK.
    unsafe { *out = t.cast() };
    Status::SUCCESS
}

unsafe extern "C" fn post_task(t: *mut Task, _initial: *mut DataBufRaw) {
    // SAFETY: the SDK posts a task it got from task_alloc, once: still allocated.
    let f = unsafe { &*fake(t) };
    assert!(!f.posted.replace(true), "a task was posted twice");
}
unsafe extern "C" fn data_xfer_done(_: *mut Task, _: *mut DataBufRaw, _: Status) {}
unsafe extern "C" fn send_status_done(t: *mut Task, _: Status) {
    // SAFETY: the caller's handle keeps the task allocated for the call; reading a field
    // checks exactly that under Miri.
    let _tag = unsafe { (*t).tag };
    COMPLETIONS.with(|n| n.set(n.get() + 1));
}
unsafe extern "C" fn lport_aborted(_: *mut Task, _: Status) {}
unsafe extern "C" fn dbuf_alloc(
    _: *mut Task,
    _: u32,
    _: *mut u32,
    _: *mut *mut DataBufRaw,
) -> Status {
    Status::ALLOC_FAILURE
}
unsafe extern "C" fn dbuf_free(_: *mut Task, _: *mut DataBufRaw) {}
unsafe extern "C" fn xfer_data(_: *mut Task, _: *mut DataBufRaw, _: u32) -> Status {
    Status::BAD_STATE
}
unsafe extern "C" fn send_status(_: *mut Task, _: u32) -> Status {
    Status::SUCCESS
}
unsafe extern "C" fn lu_aborted(_: *mut Task, _: Status) {}
unsafe extern "C" fn lu_changed(_: LuHandle) {}
unsafe extern "C" fn session_info(_: SessionHandle, _: *mut SessionInfoRaw) -> Status {
    Status::NOT_FOUND
}
unsafe extern "C" fn task_hold(t: *mut Task) {
    // SAFETY: the caller holds a reference, so the task is allocated.
    unsafe { &(*fake(t)).refs }.fetch_add(1, Ordering::Relaxed);
}
unsafe extern "C" fn task_rele(t: *mut Task) {
    rele(t);
}
unsafe extern "C" fn task_abandon(t: *mut Task) {
    // The post reference ends the task at once (this core has nobody else to tell).
    end(t);
}

static FAKE_HOST: HostApi = HostApi {
    abi_version: ABI_VERSION,
    size: std::mem::size_of::<HostApi>() as u32,
    max_log_level,
    log,
    reply,
    register_lu,
    deregister_lu,
    register_lport,
    deregister_lport,
    lu_ctl_complete,
    lport_ctl_complete,
    register_session,
    deregister_session,
    task_alloc,
    post_task,
    data_xfer_done,
    send_status_done,
    lport_aborted,
    dbuf_alloc,
    dbuf_free,
    xfer_data,
    send_status,
    lu_aborted,
    lu_changed,
    session_info,
    task_hold,
    task_rele,
    task_abandon,
};

fn host() -> Host {
    // SAFETY: a static table, valid for the whole test.
    unsafe { Host::from_raw(&FAKE_HOST, ProviderToken(std::ptr::null())) }.expect("host")
}

const INQUIRY: [u8; 6] = [0x12, 0, 0, 0, 36, 0];

fn alloc(host: &Host, tag: u64) -> plugins_sdk::UnpostedTask {
    host.task_alloc(
        SessionHandle(std::ptr::null()),
        &TaskSpec::command([0; 8], &INQUIRY, tag),
        std::ptr::null_mut(),
    )
    .expect("task_alloc")
}

fn live() -> usize {
    LIVE.with(Cell::get)
}

/// Handles kept past the end of the task read its last values, not freed memory; the
/// memory goes with the last of them, not before.
#[test]
fn kept_handles_outlive_the_task_and_the_last_one_frees_it() {
    let host = host();
    let t = alloc(&host, 7);
    let kept = t.handle();
    let kept2 = kept.clone();
    let raw = t.as_ptr();
    host.post_task(t, None);
    // The core is done with the task (after the port's task_free) ...
    end(raw);
    assert_eq!(ENDED.with(Cell::get), 1);
    // ... but the handles still read it.
    assert_eq!(kept.tag(), 7);
    assert_eq!(kept.cdb(), &INQUIRY);
    assert_eq!(kept.opcode(), 0x12);
    assert_eq!(kept.id(), kept2.id());
    drop(kept);
    assert_eq!(live(), 1, "one handle is left: the memory stays");
    assert_eq!(kept2.tag(), 7);
    // A completion that gives up the handle with the call: the last reference.
    host.send_status_done(kept2, Status::SUCCESS);
    assert_eq!(COMPLETIONS.with(Cell::get), 1);
    assert_eq!(live(), 0, "the last reference freed the task");
}

/// Borrowing a handle from a raw pointer takes no reference and gives none back.
#[test]
fn borrowed_handles_take_no_reference() {
    let host = host();
    let t = alloc(&host, 9);
    let raw = t.as_ptr();
    host.post_task(t, None);
    // What the SDK's shims do for every entry point the core calls.
    // SAFETY: the lifecycle reference keeps the task for the call.
    let kept = unsafe {
        TaskHandle::with_borrowed(raw, |b| {
            assert_eq!(b.tag(), 9);
            host.send_status_done(b, Status::SUCCESS);
            b.clone()
        })
    }
    .expect("non-null");
    end(raw);
    assert_eq!(live(), 1);
    assert_eq!(kept.tag(), 9);
    drop(kept);
    assert_eq!(live(), 0);
    // SAFETY: null is refused without calling anything.
    assert!(unsafe { TaskHandle::with_borrowed(std::ptr::null_mut(), |_| ()) }.is_none());
}

/// An allocated task dropped without being posted is abandoned: its post reference goes to
/// the core, which ends it; handles taken from it keep the memory.
#[test]
fn an_unposted_task_is_abandoned_on_drop() {
    let host = host();
    let t = alloc(&host, 11);
    let kept = t.handle();
    drop(t);
    assert_eq!(ENDED.with(Cell::get), 1, "abandoning ends the task");
    assert_eq!(live(), 1);
    assert_eq!(kept.tag(), 11);
    drop(kept);
    assert_eq!(live(), 0);

    drop(alloc(&host, 12));
    assert_eq!(live(), 0, "without handles the memory goes at once");
}

/// Handles move to other threads and are dropped there (the count is atomic).
#[test]
fn handles_cross_threads() {
    let host = host();
    let t = alloc(&host, 13);
    let handles: Vec<TaskHandle> = (0..4).map(|_| t.handle()).collect();
    let raw = t.as_ptr();
    host.post_task(t, None);
    let tags: Vec<u64> = std::thread::scope(|s| {
        let joins: Vec<_> = handles
            .into_iter()
            .map(|h| s.spawn(move || h.tag()))
            .collect();
        joins.into_iter().map(|j| j.join().expect("join")).collect()
    });
    assert_eq!(tags, [13; 4]);
    // The handles were dropped on their threads; this thread's lifecycle reference is last.
    end(raw);
    assert_eq!(live(), 0);
}

/// Shared fields written and read from several threads at once — a provider using its
/// handles out of turn — are stale at worst, never a data race (Miri checks).
#[test]
fn fields_used_out_of_turn_do_not_race() {
    let host = host();
    let t = alloc(&host, 15);
    let (a, b) = (t.handle(), t.handle());
    let raw = t.as_ptr();
    host.post_task(t, None);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..4u8 {
                a.set_status(i, &[0x70, 0, i]);
                a.set_cmd_xfer_len(u64::from(i));
                a.set_lu_private(std::ptr::null_mut());
            }
        });
        s.spawn(|| {
            for _ in 0..4 {
                let sense = b.sense();
                assert!(sense.is_empty() || sense.len() == 3);
                let _ = (
                    b.scsi_status(),
                    b.cmd_xfer_len(),
                    b.lu_private(),
                    b.residual(),
                );
            }
        });
    });
    assert_eq!(&*a.sense(), &[0x70, 0, 3]);
    drop((a, b));
    end(raw);
    assert_eq!(live(), 0);
}
