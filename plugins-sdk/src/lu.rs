//! The safe LU interface and its ABI shims.

use crate::abi::*;
use crate::guard::guard;
use crate::host::{Host, ReplySink};
use crate::task::{DataBuf, TaskHandle};
use core::ffi::c_void;
use std::sync::Arc;

/// Result of an abort request to an LU or port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortOutcome {
    /// The task is let go of (or was not known): the core may free it.
    Done,
    /// The abort was started; call [`Host::lu_aborted`] / [`Host::lport_aborted`] when done.
    Pending,
    /// Cannot abort right now; the core asks again.
    Busy,
}

impl AbortOutcome {
    fn status(self) -> Status {
        match self {
            AbortOutcome::Done => Status::ABORT_SUCCESS,
            AbortOutcome::Pending => Status::SUCCESS,
            AbortOutcome::Busy => Status::BUSY,
        }
    }
}

/// A logical unit. Implement it and register instances with [`Host::register_lu`].
///
/// Entry points are called from the port's threads and must not block: an LU that does I/O
/// hands it to its own workers and completes the task from there. Every entry point is
/// panic-guarded by the SDK.
pub trait Lu: Send + Sync + 'static {
    /// Executes a command (or, for TM requests routed to the LU, nothing: the core handles TM).
    /// `initial` holds immediate/unsolicited data of a write, if the port received any.
    /// `task` is borrowed for the call: clone it to finish the command later.
    fn new_task(&self, host: &Host, task: &TaskHandle, initial: Option<DataBuf>);

    /// A transfer started with [`Host::xfer_data`] finished; the buffer is the LU's again.
    fn dbuf_xfer_done(&self, host: &Host, task: &TaskHandle, buf: DataBuf);

    /// Abort `task`. An LU that completes every task before returning from `new_task` has
    /// nothing to abort and keeps the default.
    fn abort(&self, _host: &Host, _task: &TaskHandle) -> AbortOutcome {
        AbortOutcome::Done
    }

    /// The task is freed; drop per-task state kept outside the task.
    fn task_free(&self, _task: &TaskHandle) {}

    /// ONLINE/OFFLINE request. The default completes at once with success.
    fn ctl(&self, host: &Host, lu: LuHandle, cmd: CtlCmd) {
        if cmd == CtlCmd::ONLINE || cmd == CtlCmd::OFFLINE {
            host.lu_ctl_complete(lu, cmd, Status::SUCCESS);
        }
    }

    /// A reset or nexus event (see [`LuEvent`]).
    fn event(&self, _event: LuEvent, _session: SessionHandle) {}

    /// A JSON object describing the LU for `list-lu -v`.
    fn info(&self) -> String {
        "{}".to_string()
    }
}

struct LuBox<L> {
    host: Host,
    lu: Arc<L>,
}

fn st(r: Result<(), String>) -> Status {
    match r {
        Ok(()) => Status::SUCCESS,
        Err(_) => Status::PANICKED,
    }
}

/// # Safety (all shims)
/// `ctx` is the `LuBox<L>` leaked at registration; the core passes valid task/buffer pointers.
unsafe extern "C" fn new_task_shim<L: Lu>(
    ctx: *const c_void,
    task: *mut Task,
    initial: *mut DataBufRaw,
) -> Status {
    st(guard("lu.new_task", || {
        // SAFETY: `ctx` is the LuBox<L> leaked by register_lu; the core passes it back to
        // every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const LuBox<L>) };
        // SAFETY: `initial` is null or a buffer whose ownership the core hands to the LU.
        let initial = unsafe { DataBuf::from_raw(initial) };
        // SAFETY: the core passes a task that stays valid for the call.
        unsafe { TaskHandle::with_borrowed(task, |t| b.lu.new_task(&b.host, t, initial)) };
    }))
}

unsafe extern "C" fn dbuf_xfer_done_shim<L: Lu>(
    ctx: *const c_void,
    task: *mut Task,
    dbuf: *mut DataBufRaw,
) -> Status {
    st(guard("lu.dbuf_xfer_done", || {
        // SAFETY: `ctx` is the LuBox<L> leaked by register_lu; the core passes it back to
        // every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const LuBox<L>) };
        // SAFETY: the core hands the buffer's ownership back to the LU.
        if let Some(d) = unsafe { DataBuf::from_raw(dbuf) } {
            // SAFETY: the core passes a task that stays valid for the call.
            unsafe { TaskHandle::with_borrowed(task, |t| b.lu.dbuf_xfer_done(&b.host, t, d)) };
        }
    }))
}

unsafe extern "C" fn abort_shim<L: Lu>(ctx: *const c_void, task: *mut Task) -> Status {
    guard("lu.abort", || {
        // SAFETY: `ctx` is the LuBox<L> leaked by register_lu; the core passes it back to
        // every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const LuBox<L>) };
        // SAFETY: the core passes a task that stays valid for the call.
        unsafe { TaskHandle::with_borrowed(task, |t| b.lu.abort(&b.host, t).status()) }
            .unwrap_or(Status::NOT_FOUND)
    })
    .unwrap_or(Status::PANICKED)
}

unsafe extern "C" fn task_free_shim<L: Lu>(ctx: *const c_void, task: *mut Task) -> Status {
    st(guard("lu.task_free", || {
        // SAFETY: `ctx` is the LuBox<L> leaked by register_lu; the core passes it back to
        // every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const LuBox<L>) };
        // SAFETY: the core passes a task that stays valid for the call.
        unsafe { TaskHandle::with_borrowed(task, |t| b.lu.task_free(t)) };
    }))
}

unsafe extern "C" fn ctl_shim<L: Lu>(ctx: *const c_void, lu: LuHandle, cmd: CtlCmd) -> Status {
    st(guard("lu.ctl", || {
        // SAFETY: `ctx` is the LuBox<L> leaked by register_lu; the core passes it back to
        // every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const LuBox<L>) };
        b.lu.ctl(&b.host, lu, cmd);
    }))
}

unsafe extern "C" fn event_shim<L: Lu>(
    ctx: *const c_void,
    event: LuEvent,
    session: SessionHandle,
) -> Status {
    st(guard("lu.event", || {
        // SAFETY: `ctx` is the LuBox<L> leaked by register_lu; the core passes it back to
        // every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const LuBox<L>) };
        b.lu.event(event, session);
    }))
}

unsafe extern "C" fn info_shim<L: Lu>(ctx: *const c_void, sink: *mut c_void) -> Status {
    st(guard("lu.info", || {
        // SAFETY: `ctx` is the LuBox<L> leaked by register_lu; the core passes it back to
        // every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const LuBox<L>) };
        let text = b.lu.info();
        // SAFETY: sink is the core's pointer for this call.
        unsafe { ReplySink::new(b.host.api(), sink) }.write(&text);
    }))
}

unsafe extern "C" fn release_shim<L: Lu>(ctx: *const c_void) -> Status {
    st(guard("lu.release", || {
        // SAFETY: ctx was leaked by Box::into_raw at registration and the core releases once.
        drop(unsafe { Box::from_raw(ctx as *mut LuBox<L>) });
    }))
}

impl Host {
    /// Registers `lu` under the NAA identifier `guid`. The core keeps a reference until it
    /// calls the LU's release entry after [`Host::deregister_lu`].
    pub fn register_lu<L: Lu>(
        &self,
        guid: [u8; 16],
        alias: &str,
        lu: Arc<L>,
    ) -> Result<LuHandle, Status> {
        let ctx = Box::into_raw(Box::new(LuBox { host: *self, lu })) as *const c_void;
        let reg = LuRegistration {
            guid,
            alias: RStr::new(alias),
            ctx,
            ops: LuOps {
                new_task: new_task_shim::<L>,
                dbuf_xfer_done: dbuf_xfer_done_shim::<L>,
                abort: abort_shim::<L>,
                task_free: task_free_shim::<L>,
                ctl: ctl_shim::<L>,
                event: event_shim::<L>,
                info: info_shim::<L>,
                release: release_shim::<L>,
            },
        };
        // SAFETY: ctx stays valid until release; ops are static functions.
        let r = unsafe { self.register_lu_raw(&reg) };
        if r.is_err() {
            // SAFETY: the core refused the registration and holds no reference to ctx.
            drop(unsafe { Box::from_raw(ctx as *mut LuBox<L>) });
        }
        r
    }
}
