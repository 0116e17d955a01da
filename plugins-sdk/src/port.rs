//! The safe local-port interface and its ABI shims.

use crate::abi::*;
use crate::guard::guard;
use crate::host::{Host, ReplySink};
use crate::lu::AbortOutcome;
use crate::task::{DataBuf, TaskHandle};
use core::ffi::c_void;
use std::sync::Arc;

/// A local port (SCSI target port). Implement it and register instances with
/// [`Host::register_lport`]. Entry points must not block; every one is panic-guarded.
pub trait Port: Send + Sync + 'static {
    /// Move `buf` for `task` (direction in its flags, offset and length set by the LU). Always
    /// complete with [`Host::data_xfer_done`], even on failure, possibly before returning.
    /// `task` is borrowed for the call (as in every entry point): clone it to keep it.
    fn xfer_data(&self, host: &Host, task: &TaskHandle, buf: DataBuf, flags: u32);

    /// Send the status of `task` (SCSI status and sense, or the TM response for TM tasks).
    /// Always complete with [`Host::send_status_done`].
    fn send_status(&self, host: &Host, task: &TaskHandle, flags: u32);

    /// The core is done with `task`: forget it (drop the handles you kept). The task is dead
    /// after this call; a handle kept longer only reads its last values.
    fn task_free(&self, _task: &TaskHandle) {}

    /// Abort `task` (stop moving its data, drop queued status).
    fn abort(&self, _host: &Host, _task: &TaskHandle) -> AbortOutcome {
        AbortOutcome::Done
    }

    /// ONLINE/OFFLINE request. The default completes at once with success.
    fn ctl(&self, host: &Host, lport: LportHandle, cmd: CtlCmd) {
        if cmd == CtlCmd::ONLINE || cmd == CtlCmd::OFFLINE {
            host.lport_ctl_complete(lport, cmd, Status::SUCCESS);
        }
    }

    /// Allocates a buffer of `size` bytes (at least `min_size`); on failure returns the largest
    /// size that could be had (0 for none). Ports enforce their transfer limits here.
    fn dbuf_alloc(&self, task: &TaskHandle, size: u32, min_size: u32) -> Result<DataBuf, u32>;

    /// Returns a buffer from [`Port::dbuf_alloc`] to the store.
    fn dbuf_free(&self, buf: DataBuf);

    /// A JSON object describing the port.
    fn info(&self) -> String {
        "{}".to_string()
    }
}

struct PortBox<P> {
    host: Host,
    port: Arc<P>,
}

fn st(r: Result<(), String>) -> Status {
    match r {
        Ok(()) => Status::SUCCESS,
        Err(_) => Status::PANICKED,
    }
}

/// # Safety (all shims)
/// `ctx` is the `PortBox<P>` leaked at registration; the core passes valid pointers.
unsafe extern "C" fn xfer_data_shim<P: Port>(
    ctx: *const c_void,
    task: *mut Task,
    dbuf: *mut DataBufRaw,
    flags: u32,
) -> Status {
    st(guard("port.xfer_data", || {
        // SAFETY: `ctx` is the PortBox<P> leaked by register_lport; the core passes it back
        // to every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const PortBox<P>) };
        // SAFETY: the core hands the buffer's ownership to the port.
        if let Some(d) = unsafe { DataBuf::from_raw(dbuf) } {
            // SAFETY: the core passes a task that stays valid for the call.
            unsafe { TaskHandle::with_borrowed(task, |t| b.port.xfer_data(&b.host, t, d, flags)) };
        }
    }))
}

unsafe extern "C" fn send_status_shim<P: Port>(
    ctx: *const c_void,
    task: *mut Task,
    flags: u32,
) -> Status {
    st(guard("port.send_status", || {
        // SAFETY: `ctx` is the PortBox<P> leaked by register_lport; the core passes it back
        // to every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const PortBox<P>) };
        // SAFETY: the core passes a task that stays valid for the call.
        unsafe { TaskHandle::with_borrowed(task, |t| b.port.send_status(&b.host, t, flags)) };
    }))
}

unsafe extern "C" fn task_free_shim<P: Port>(ctx: *const c_void, task: *mut Task) -> Status {
    st(guard("port.task_free", || {
        // SAFETY: `ctx` is the PortBox<P> leaked by register_lport; the core passes it back
        // to every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const PortBox<P>) };
        // SAFETY: the core passes a task that stays valid for the call.
        unsafe { TaskHandle::with_borrowed(task, |t| b.port.task_free(t)) };
    }))
}

unsafe extern "C" fn abort_shim<P: Port>(ctx: *const c_void, task: *mut Task) -> Status {
    guard("port.abort", || {
        // SAFETY: `ctx` is the PortBox<P> leaked by register_lport; the core passes it back
        // to every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const PortBox<P>) };
        // SAFETY: the core passes a task that stays valid for the call.
        let outcome = unsafe { TaskHandle::with_borrowed(task, |t| b.port.abort(&b.host, t)) };
        match outcome {
            Some(AbortOutcome::Done) => Status::ABORT_SUCCESS,
            Some(AbortOutcome::Pending) => Status::SUCCESS,
            Some(AbortOutcome::Busy) => Status::BUSY,
            None => Status::NOT_FOUND,
        }
    })
    .unwrap_or(Status::PANICKED)
}

unsafe extern "C" fn ctl_shim<P: Port>(
    ctx: *const c_void,
    lport: LportHandle,
    cmd: CtlCmd,
) -> Status {
    st(guard("port.ctl", || {
        // SAFETY: `ctx` is the PortBox<P> leaked by register_lport; the core passes it back
        // to every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const PortBox<P>) };
        b.port.ctl(&b.host, lport, cmd);
    }))
}

unsafe extern "C" fn dbuf_alloc_shim<P: Port>(
    ctx: *const c_void,
    task: *mut Task,
    size: u32,
    min_size: *mut u32,
    out: *mut *mut DataBufRaw,
) -> Status {
    guard("port.dbuf_alloc", || {
        // SAFETY: `ctx` is the PortBox<P> leaked by register_lport; the core passes it back
        // to every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const PortBox<P>) };
        // SAFETY: the core passes valid out-params.
        let (min, out) = unsafe { (&mut *min_size, &mut *out) };
        // SAFETY: the core passes a task that stays valid for the call.
        let r = unsafe { TaskHandle::with_borrowed(task, |t| b.port.dbuf_alloc(t, size, *min)) };
        match r {
            Some(Ok(d)) => {
                *out = d.into_raw();
                Status::SUCCESS
            }
            Some(Err(could)) => {
                *min = could;
                Status::ALLOC_FAILURE
            }
            None => Status::INVALID_ARG,
        }
    })
    .unwrap_or(Status::PANICKED)
}

unsafe extern "C" fn dbuf_free_shim<P: Port>(ctx: *const c_void, dbuf: *mut DataBufRaw) -> Status {
    st(guard("port.dbuf_free", || {
        // SAFETY: `ctx` is the PortBox<P> leaked by register_lport; the core passes it back
        // to every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const PortBox<P>) };
        // SAFETY: the buffer is handed back to its owner.
        if let Some(d) = unsafe { DataBuf::from_raw(dbuf) } {
            b.port.dbuf_free(d);
        }
    }))
}

unsafe extern "C" fn info_shim<P: Port>(ctx: *const c_void, sink: *mut c_void) -> Status {
    st(guard("port.info", || {
        // SAFETY: `ctx` is the PortBox<P> leaked by register_lport; the core passes it back
        // to every entry point until it calls release, which frees it.
        let b = unsafe { &*(ctx as *const PortBox<P>) };
        let text = b.port.info();
        // SAFETY: sink is the core's pointer for this call.
        unsafe { ReplySink::new(b.host.api(), sink) }.write(&text);
    }))
}

unsafe extern "C" fn release_shim<P: Port>(ctx: *const c_void) -> Status {
    st(guard("port.release", || {
        // SAFETY: ctx was leaked at registration and the core releases once.
        drop(unsafe { Box::from_raw(ctx as *mut PortBox<P>) });
    }))
}

impl Host {
    /// Registers a local port named `name` (e.g. a target IQN) speaking `protocol`.
    pub fn register_lport<P: Port>(
        &self,
        name: &str,
        alias: &str,
        protocol: &str,
        port: Arc<P>,
    ) -> Result<LportHandle, Status> {
        let ctx = Box::into_raw(Box::new(PortBox { host: *self, port })) as *const c_void;
        let reg = LportRegistration {
            name: RStr::new(name),
            alias: RStr::new(alias),
            protocol: RStr::new(protocol),
            ctx,
            ops: PortOps {
                xfer_data: xfer_data_shim::<P>,
                send_status: send_status_shim::<P>,
                task_free: task_free_shim::<P>,
                abort: abort_shim::<P>,
                ctl: ctl_shim::<P>,
                dbuf_alloc: dbuf_alloc_shim::<P>,
                dbuf_free: dbuf_free_shim::<P>,
                info: info_shim::<P>,
                release: release_shim::<P>,
            },
        };
        // SAFETY: ctx stays valid until release; ops are static functions.
        let r = unsafe { self.register_lport_raw(&reg) };
        if r.is_err() {
            // SAFETY: refused; the core holds no reference.
            drop(unsafe { Box::from_raw(ctx as *mut PortBox<P>) });
        }
        r
    }
}
