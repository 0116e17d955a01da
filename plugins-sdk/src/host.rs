//! Safe access to the core's services ([`HostApi`]).

use crate::abi::*;
use crate::task::{DataBuf, TaskHandle, TaskSpec, UnpostedTask};
use core::borrow::Borrow;
use core::ffi::c_void;

/// The core's services, as seen from a provider. Cheap to copy; obtained from
/// [`crate::ProviderContext::host`].
#[derive(Clone, Copy)]
pub struct Host {
    api: &'static HostApi,
    token: ProviderToken,
}

impl core::fmt::Debug for Host {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Host").field("token", &self.token).finish()
    }
}

impl Host {
    /// Wraps the table the core passed to `create`.
    ///
    /// # Safety
    /// `api` must be the core's table, valid for as long as the provider is loaded.
    pub unsafe fn from_raw(api: *const HostApi, token: ProviderToken) -> Option<Host> {
        // SAFETY: the caller guarantees validity for the provider's lifetime.
        unsafe { api.as_ref() }.map(|api| Host { api, token })
    }

    /// The raw table.
    pub fn api(&self) -> &'static HostApi {
        self.api
    }

    /// This provider instance's token.
    pub fn token(&self) -> ProviderToken {
        self.token
    }

    // ---- registration -------------------------------------------------------------------

    /// Registers an LU built from a raw registration (see [`crate::Lu`] for the safe path).
    ///
    /// # Safety
    /// `reg.ctx` and `reg.ops` must stay valid until `ops.release` is called.
    pub unsafe fn register_lu_raw(&self, reg: &LuRegistration) -> Result<LuHandle, Status> {
        let mut out = LuHandle(core::ptr::null());
        // SAFETY: valid table; `reg` outlives the call; out is a valid place.
        let st = unsafe { (self.api.register_lu)(self.token, reg, &mut out) };
        if st.is_ok() {
            Ok(out)
        } else {
            Err(st)
        }
    }

    /// Deregisters an LU: the core offlines it (aborting its tasks) and then calls `release`.
    pub fn deregister_lu(&self, lu: LuHandle) -> Status {
        // SAFETY: the core validates the handle against its registry.
        unsafe { (self.api.deregister_lu)(lu) }
    }

    /// Registers a local port from a raw registration (see [`crate::Port`] for the safe path).
    ///
    /// # Safety
    /// `reg.ctx` and `reg.ops` must stay valid until `ops.release` is called.
    pub unsafe fn register_lport_raw(
        &self,
        reg: &LportRegistration,
    ) -> Result<LportHandle, Status> {
        let mut out = LportHandle(core::ptr::null());
        // SAFETY: as in register_lu_raw.
        let st = unsafe { (self.api.register_lport)(self.token, reg, &mut out) };
        if st.is_ok() {
            Ok(out)
        } else {
            Err(st)
        }
    }

    /// Deregisters a local port (BUSY while sessions exist).
    pub fn deregister_lport(&self, lport: LportHandle) -> Status {
        // SAFETY: the core validates the handle against its registry.
        unsafe { (self.api.deregister_lport)(lport) }
    }

    /// Reports the completion of an ONLINE/OFFLINE request for an LU.
    pub fn lu_ctl_complete(&self, lu: LuHandle, cmd: CtlCmd, status: Status) {
        // SAFETY: a call through the core's table; the core looks the handle up in its
        // registry (it never dereferences an unknown one).
        unsafe { (self.api.lu_ctl_complete)(lu, cmd, status) }
    }

    /// Reports the completion of an ONLINE/OFFLINE request for a local port.
    pub fn lport_ctl_complete(&self, lport: LportHandle, cmd: CtlCmd, status: Status) {
        // SAFETY: a call through the core's table; the core looks the handle up in its
        // registry (it never dereferences an unknown one).
        unsafe { (self.api.lport_ctl_complete)(lport, cmd, status) }
    }

    /// Tells the core that the LU's identity or inventory-relevant state changed.
    pub fn lu_changed(&self, lu: LuHandle) {
        // SAFETY: a call through the core's table; the core looks the handle up in its
        // registry (it never dereferences an unknown one).
        unsafe { (self.api.lu_changed)(lu) }
    }

    // ---- sessions (port side) -----------------------------------------------------------

    /// Registers an I_T nexus on an online local port.
    pub fn register_session(
        &self,
        lport: LportHandle,
        initiator: &str,
        alias: &str,
        transport_id: &str,
    ) -> Result<SessionHandle, Status> {
        self.register_session_with_flags(lport, initiator, alias, transport_id, 0)
    }

    /// Registers an I_T nexus with [`crate::abi::session_flags`] (e.g. `NAME_UNPROVEN`).
    pub fn register_session_with_flags(
        &self,
        lport: LportHandle,
        initiator: &str,
        alias: &str,
        transport_id: &str,
        flags: u32,
    ) -> Result<SessionHandle, Status> {
        let reg = SessionRegistration {
            initiator: RStr::new(initiator),
            alias: RStr::new(alias),
            transport_id: RStr::new(transport_id),
            flags,
        };
        let mut out = SessionHandle(core::ptr::null());
        // SAFETY: reg and out are valid for the call.
        let st = unsafe { (self.api.register_session)(lport, &reg, &mut out) };
        if st.is_ok() {
            Ok(out)
        } else {
            Err(st)
        }
    }

    /// Deregisters a session; its outstanding tasks are aborted (I_T nexus loss).
    pub fn deregister_session(&self, session: SessionHandle) -> Status {
        // SAFETY: a call through the core's table; the core looks the handle up in its
        // registry (it never dereferences an unknown one).
        unsafe { (self.api.deregister_session)(session) }
    }

    /// Who is behind a session (initiator port name, TransportID, target port, relative port
    /// id); `None` if the session is not registered any more.
    pub fn session_info(&self, session: SessionHandle) -> Option<SessionDetails> {
        // SAFETY: all-zero is a valid SessionInfoRaw (null pointers, zero lengths).
        let mut raw: SessionInfoRaw = unsafe { core::mem::zeroed() };
        // SAFETY: the core validates the handle; out is a valid place.
        if !unsafe { (self.api.session_info)(session, &mut raw) }.is_ok() {
            return None;
        }
        // SAFETY: the strings are valid while the session is registered; copied here.
        unsafe {
            Some(SessionDetails {
                initiator: raw.initiator.as_str().into_owned(),
                transport_id: raw.transport_id.as_str().into_owned(),
                target: raw.target.as_str().into_owned(),
                relative_port_id: raw.relative_port_id,
                id: raw.id,
            })
        }
    }

    // ---- tasks (port side) --------------------------------------------------------------

    /// Allocates a task for a command or TM request; `port_private` is stored in the task.
    /// Post it with [`Host::post_task`].
    pub fn task_alloc(
        &self,
        session: SessionHandle,
        spec: &TaskSpec<'_>,
        port_private: *mut c_void,
    ) -> Result<UnpostedTask, Status> {
        let req = spec.to_raw(port_private);
        let mut out: *mut Task = core::ptr::null_mut();
        // SAFETY: req/out valid for the call; the CDB slice outlives it (the core copies it).
        let st = unsafe { (self.api.task_alloc)(session, &req, &mut out) };
        if !st.is_ok() {
            return Err(st);
        }
        // SAFETY: on success the core returned a new task with its post reference.
        unsafe { UnpostedTask::from_raw(out) }.ok_or(Status::ALLOC_FAILURE)
    }

    /// Posts the task to the core, with immediate/unsolicited data (`initial`) if any.
    pub fn post_task(&self, task: UnpostedTask, initial: Option<DataBuf>) {
        let d = initial.map_or(core::ptr::null_mut(), DataBuf::into_raw);
        // SAFETY: an unposted task from task_alloc: its reference passes to the core, once;
        // so does the buffer's ownership.
        unsafe { (self.api.post_task)(task.into_raw(), d) }
    }

    /// Completes a transfer started by the port's `xfer_data`; the buffer goes back to the LU.
    pub fn data_xfer_done(&self, task: &TaskHandle, mut buf: DataBuf, status: Status) {
        buf.set_xfer_status(status);
        // SAFETY: the handle keeps the task valid for the call (the core refuses a dead one);
        // ownership of the buffer passes back through the core.
        unsafe { (self.api.data_xfer_done)(task.as_ptr(), buf.into_raw(), status) }
    }

    /// Completes a `send_status` request: the port is finished with the task. Pass a handle
    /// by value to let go of it with the call, or borrow one.
    pub fn send_status_done(&self, task: impl Borrow<TaskHandle>, status: Status) {
        // SAFETY: the handle keeps the task valid for the call; a repeated or late completion
        // is ignored by the core.
        unsafe { (self.api.send_status_done)(task.borrow().as_ptr(), status) }
    }

    /// Completes an abort the port answered with [`crate::AbortOutcome::Pending`]: the port
    /// is finished with the task. By value or borrowed, as [`Host::send_status_done`].
    pub fn lport_aborted(&self, task: impl Borrow<TaskHandle>, status: Status) {
        // SAFETY: as in send_status_done.
        unsafe { (self.api.lport_aborted)(task.borrow().as_ptr(), status) }
    }

    // ---- tasks (LU side) ----------------------------------------------------------------

    /// Allocates a buffer of `size` bytes (at least `min_size`) from the port's store.
    /// On failure returns the size the port could offer (0 when none).
    pub fn dbuf_alloc(&self, task: &TaskHandle, size: u32, min_size: u32) -> Result<DataBuf, u32> {
        let mut min = min_size;
        let mut out: *mut DataBufRaw = core::ptr::null_mut();
        // SAFETY: the handle keeps the task valid for the call; out-params are valid places.
        let st = unsafe { (self.api.dbuf_alloc)(task.as_ptr(), size, &mut min, &mut out) };
        if !st.is_ok() {
            return Err(min);
        }
        // SAFETY: on success the port handed us a valid buffer.
        unsafe { DataBuf::from_raw(out) }.ok_or(min)
    }

    /// Returns a buffer to the port's store.
    pub fn dbuf_free(&self, task: &TaskHandle, buf: DataBuf) {
        // SAFETY: the handle keeps the task valid for the call; the buffer came from
        // dbuf_alloc of this task's port and its ownership ends here.
        unsafe { (self.api.dbuf_free)(task.as_ptr(), buf.into_raw()) }
    }

    /// Starts moving `buf` (set up with [`DataBuf::set_xfer`]). On refusal (the task is being
    /// aborted, say) the buffer stays with the caller.
    ///
    /// A port may complete the transfer before this returns: [`crate::Lu::dbuf_xfer_done`]
    /// (and whatever the LU does from there, up to sending status) can run on this stack.
    /// Do not hold a lock across this call that `dbuf_xfer_done` takes.
    pub fn xfer_data(
        &self,
        task: &TaskHandle,
        buf: DataBuf,
        flags: u32,
    ) -> Result<(), (Status, DataBuf)> {
        let raw = buf.into_raw();
        // SAFETY: the handle keeps the task valid for the call; on success the port owns the
        // buffer until data_xfer_done.
        let st = unsafe { (self.api.xfer_data)(task.as_ptr(), raw, flags) };
        if st.is_ok() {
            Ok(())
        } else {
            // SAFETY: on failure ownership stays with us; raw came from a DataBuf.
            match unsafe { DataBuf::from_raw(raw) } {
                Some(b) => Err((st, b)),
                None => Ok(()),
            }
        }
    }

    /// Sends status: stores `scsi_status` and `sense` in the task and hands it to the core.
    /// With [`io_flags::LU_DONE`] the LU is finished with the task.
    pub fn send_status(
        &self,
        task: &TaskHandle,
        scsi_status: u8,
        sense: &[u8],
        flags: u32,
    ) -> Status {
        task.set_status(scsi_status, sense);
        // SAFETY: the handle keeps the task valid for the call (the core refuses a dead one).
        unsafe { (self.api.send_status)(task.as_ptr(), flags) }
    }

    /// Completes an abort the LU answered with [`crate::AbortOutcome::Pending`]: the LU is
    /// finished with the task. By value or borrowed, as [`Host::send_status_done`].
    pub fn lu_aborted(&self, task: impl Borrow<TaskHandle>, status: Status) {
        // SAFETY: as in send_status_done.
        unsafe { (self.api.lu_aborted)(task.borrow().as_ptr(), status) }
    }
}

/// Identity of a session's I_T nexus ([`Host::session_info`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDetails {
    /// Initiator port name (iSCSI: `iqn...,i,0x<ISID>`).
    pub initiator: String,
    /// SPC TransportID of the initiator port (may be empty).
    pub transport_id: String,
    /// Target port name.
    pub target: String,
    /// Relative target port identifier.
    pub relative_port_id: u16,
    /// Core-assigned session id, unique in the process.
    pub id: u64,
}

/// A reply being written back to the core (`control`, `save_config`, `info`).
pub struct ReplySink {
    api: &'static HostApi,
    sink: *mut c_void,
}

impl ReplySink {
    /// Wraps a sink pointer the core passed in.
    ///
    /// # Safety
    /// `sink` must be the pointer the core passed to the current call.
    pub unsafe fn new(api: &'static HostApi, sink: *mut c_void) -> Self {
        ReplySink { api, sink }
    }

    /// Appends text to the reply.
    pub fn write(&mut self, text: &str) {
        if self.sink.is_null() {
            return;
        }
        // SAFETY: sink is valid for the current call (constructor contract).
        unsafe { (self.api.reply)(self.sink, RStr::new(text)) }
    }
}
