//! Task handles a provider keeps (ABI 3): a handle kept past the port's `task_free` reads the
//! dead task's last values, the core refuses calls made with it, and the task's memory goes
//! back to the session's pool only with the last handle. An allocated task that is dropped
//! unposted is ended by the core. A handle that outlives the whole core stays readable.

use plugins_sdk::abi::io_flags;
use plugins_sdk::scsi::ScsiStatus;
use plugins_sdk::{
    DataBuf, Host, LportHandle, Lu, Port, Provider, ProviderContext, ProviderKind, SessionHandle,
    Status, TaskHandle, TaskId, TaskSpec,
};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use stmf::{Settings, Stmf};

/// Tag of the commands whose handles the LU and the port keep.
const KEEP: u64 = 1;

const GUID: [u8; 16] = [
    0x60, 0x01, 0x44, 0xF0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xAB, 0x01,
];

/// Handles kept by the LU and the port, and the tasks the port saw freed.
static KEPT_BY_LU: Mutex<Vec<TaskHandle>> = Mutex::new(Vec::new());
static KEPT_BY_PORT: Mutex<Vec<TaskHandle>> = Mutex::new(Vec::new());
static FREED: Mutex<Vec<TaskId>> = Mutex::new(Vec::new());
static PORT: OnceLock<(Host, LportHandle)> = OnceLock::new();

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct KeepingLu;

impl Lu for KeepingLu {
    fn new_task(&self, host: &Host, task: &TaskHandle, initial: Option<DataBuf>) {
        if let Some(b) = initial {
            host.dbuf_free(task, b);
        }
        if task.tag() == KEEP {
            lock(&KEPT_BY_LU).push(task.clone());
        }
        host.send_status(task, ScsiStatus::GOOD.0, &[], io_flags::LU_DONE);
    }

    fn dbuf_xfer_done(&self, host: &Host, task: &TaskHandle, buf: DataBuf) {
        host.dbuf_free(task, buf);
    }
}

struct KeepingLuProvider;

impl Provider for KeepingLuProvider {
    const NAME: &'static str = "keeping-lu";
    const VERSION: &'static str = "0";
    const DESCRIPTION: &'static str = "LU that keeps handles of some tasks";
    const KIND: ProviderKind = ProviderKind::LU;
    fn create(ctx: ProviderContext, _config: &str) -> Result<Self, String> {
        ctx.host()
            .register_lu(GUID, "keeping", Arc::new(KeepingLu))
            .map_err(|e| e.to_string())?;
        Ok(KeepingLuProvider)
    }
}

struct KeepingPort;

impl Port for KeepingPort {
    fn xfer_data(&self, host: &Host, task: &TaskHandle, buf: DataBuf, _flags: u32) {
        host.data_xfer_done(task, buf, Status::IO_ERROR);
    }
    fn send_status(&self, host: &Host, task: &TaskHandle, _flags: u32) {
        if task.tag() == KEEP {
            lock(&KEPT_BY_PORT).push(task.clone());
        }
        host.send_status_done(task, Status::SUCCESS);
    }
    fn task_free(&self, task: &TaskHandle) {
        lock(&FREED).push(task.id());
    }
    fn dbuf_alloc(&self, _task: &TaskHandle, _size: u32, _min: u32) -> Result<DataBuf, u32> {
        Err(0)
    }
    fn dbuf_free(&self, _buf: DataBuf) {}
}

struct KeepingPortProvider;

impl Provider for KeepingPortProvider {
    const NAME: &'static str = "keeping-port";
    const VERSION: &'static str = "0";
    const DESCRIPTION: &'static str = "port that keeps handles of some tasks";
    const KIND: ProviderKind = ProviderKind::PORT;
    fn create(ctx: ProviderContext, _config: &str) -> Result<Self, String> {
        let host = ctx.host();
        let lp = host
            .register_lport("keeping.port", "", "test", Arc::new(KeepingPort))
            .map_err(|e| e.to_string())?;
        let _ = PORT.set((host, lp));
        Ok(KeepingPortProvider)
    }
}

/// One TEST UNIT READY, posted and (synchronously) completed; its task id.
fn run(host: &Host, session: SessionHandle, tag: u64) -> TaskId {
    let t = host
        .task_alloc(
            session,
            &TaskSpec::command([0; 8], &[0; 6], tag),
            std::ptr::null_mut(),
        )
        .expect("task_alloc");
    let id = t.id();
    host.post_task(t, None);
    assert!(lock(&FREED).contains(&id), "task {tag} completed and freed");
    id
}

#[test]
fn kept_handles_read_dead_tasks_and_hold_back_their_reuse() {
    let stmf = Stmf::new(Settings {
        abort_timeout_ms: 200,
        ..Settings::default()
    });
    let lu_root: &'static _ = Box::leak(Box::new(plugins_sdk::root_module::<KeepingLuProvider>()));
    stmf.register_builtin_provider(lu_root, "")
        .expect("LU provider");
    let port_root: &'static _ =
        Box::leak(Box::new(plugins_sdk::root_module::<KeepingPortProvider>()));
    stmf.register_builtin_provider(port_root, "")
        .expect("port provider");
    let guid = "600144F000000000000000000000AB01".parse().expect("guid");
    stmf.add_view(guid, None, None, Some(0)).expect("view");
    let (host, lp) = *PORT.get().expect("port registered");
    let session = host
        .register_session(lp, "iqn.2026-12.org.rstmf:kept", "", "")
        .expect("session");

    // Warm the pool, then the command whose handles are kept.
    let warm = run(&host, session, 100);
    let kept = run(&host, session, KEEP);
    assert_eq!(kept, warm, "the pool hands out its idle task again");
    let lu_h = lock(&KEPT_BY_LU).pop().expect("the LU kept its handle");
    let port_h = lock(&KEPT_BY_PORT).pop().expect("the port kept its handle");
    assert_eq!((lu_h.id(), port_h.id()), (kept, kept));

    // The task is dead: its last values are still there to read ...
    assert_eq!((lu_h.tag(), port_h.tag()), (KEEP, KEEP));
    assert_eq!(port_h.scsi_status(), ScsiStatus::GOOD.0);
    assert_eq!(lu_h.cdb(), &[0; 6]);
    // ... and the core refuses what the handles ask of it.
    assert_eq!(
        host.send_status(&lu_h, ScsiStatus::GOOD.0, &[], io_flags::LU_DONE),
        Status::BAD_STATE
    );
    assert!(host.dbuf_alloc(&lu_h, 512, 512).is_err());
    host.send_status_done(&port_h, Status::SUCCESS);
    host.lu_aborted(&lu_h, Status::ABORTED);
    host.lport_aborted(&port_h, Status::ABORTED);
    assert_eq!(
        lock(&FREED).iter().filter(|id| **id == kept).count(),
        2,
        "no second task_free for the dead task (one for the warm-up, one for it)"
    );

    // While a handle is out the memory is not reused ...
    let other = run(&host, session, 101);
    assert_ne!(other, kept);
    drop(lu_h);
    let other2 = run(&host, session, 102);
    assert_ne!(other2, kept);
    // ... and with the last one it goes back to the pool (last in, first out).
    drop(port_h);
    assert_eq!(run(&host, session, 103), kept);

    // Dropping an allocated task unposted ends it: task_free, then back to the pool.
    let t = host
        .task_alloc(
            session,
            &TaskSpec::command([0; 8], &[0; 6], 104),
            std::ptr::null_mut(),
        )
        .expect("task_alloc");
    let abandoned = t.id();
    let keep = t.handle();
    drop(t);
    assert!(
        lock(&FREED).contains(&abandoned),
        "the port heard task_free"
    );
    assert_eq!(keep.tag(), 104);
    assert_eq!(
        host.send_status(&keep, ScsiStatus::GOOD.0, &[], io_flags::LU_DONE),
        Status::BAD_STATE
    );
    drop(keep);
    assert_eq!(run(&host, session, 105), abandoned);

    // The core's own bound: a session holds at most MAX_TASKS_PER_SESSION tasks; past it
    // task_alloc answers BUSY instead of allocating, and a task given back makes room.
    let spec = TaskSpec::command([0; 8], &[0; 6], 200);
    let mut held = Vec::new();
    let refused = loop {
        match host.task_alloc(session, &spec, std::ptr::null_mut()) {
            Ok(t) => held.push(t),
            Err(st) => break st,
        }
        assert!(held.len() <= stmf::MAX_TASKS_PER_SESSION, "no cap");
    };
    assert_eq!(refused, Status::BUSY);
    assert_eq!(held.len(), stmf::MAX_TASKS_PER_SESSION);
    held.pop();
    held.push(
        host.task_alloc(session, &spec, std::ptr::null_mut())
            .expect("room again"),
    );
    drop(held);

    // A handle that outlives the core (the session goes with it) stays readable; the last
    // reference frees the orphaned task.
    let t = host
        .task_alloc(
            session,
            &TaskSpec::command([0; 8], &[0; 6], 106),
            std::ptr::null_mut(),
        )
        .expect("task_alloc");
    let orphan = t.handle();
    host.post_task(t, None);
    let unposted = host
        .task_alloc(
            session,
            &TaskSpec::command([0; 8], &[0; 6], 107),
            std::ptr::null_mut(),
        )
        .expect("task_alloc");
    let live = unposted.handle();
    // Shutting down aborts what is in flight; the unposted task cannot be, and times out.
    stmf.shutdown();
    drop(stmf);
    assert_eq!(orphan.tag(), 106);
    assert_eq!(live.tag(), 107);
    assert_eq!(
        host.send_status(&live, ScsiStatus::GOOD.0, &[], io_flags::LU_DONE),
        Status::BAD_STATE
    );
    drop(orphan);
    drop(unposted);
    assert_eq!(live.tag(), 107, "the handle outlives the abandoned orphan");
    drop(live);
}
