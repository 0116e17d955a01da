//! Task handles and owned data buffers.

use crate::abi::{
    DataBufRaw, HostApi, LuHandle, SessionHandle, Status, Task, TaskRequest, TmFunction,
    INLINE_CDB_LEN, SENSE_LEN,
};
use crate::fields;
use core::ffi::c_void;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;

/// The identity of a task, for maps and comparisons.
///
/// Two tasks that are alive at the same time never have the same id. The id of a task whose
/// last [`TaskHandle`] is gone may be given to a later task, so keep a handle (not only the
/// id) for as long as the id has to stay unambiguous.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TaskId(usize);

/// An owning, reference-counted handle to a task of the core (like an `Arc`).
///
/// `Clone` takes a reference through [`HostApi::task_hold`] and `Drop` gives it back through
/// [`HostApi::task_rele`]; the core frees the task's memory only after it has called the
/// port's `task_free` *and* the last handle is gone. A handle kept past `task_free` therefore
/// reads a dead task's last field values — never freed memory — and the core refuses the
/// calls made with it.
///
/// Entry points receive `&TaskHandle`, borrowed for the call at no cost; clone it to keep the
/// task beyond the call (to finish it from another thread, say). Being alive is not being
/// the owner of a role: the LU must not use the task after it sent status with `LU_DONE` or
/// let go of it in `abort`, and the port not after `send_status_done` or `lport_aborted`.
/// Field accessors read the fields fixed at allocation directly and the ones that change
/// atomically ([`crate::fields`]), so even a handle used out of turn never races; per-owner
/// fields have explicit setters.
pub struct TaskHandle(NonNull<Task>);

// SAFETY: a task is a core object designed to be completed from any thread; the reference
// count is atomic in the core, and fields are partitioned between owners (see `abi::Task`).
unsafe impl Send for TaskHandle {}
// SAFETY: as above: every method takes `&self` and the core synchronises its own fields.
unsafe impl Sync for TaskHandle {}

impl TaskHandle {
    /// Takes over one reference to a task (`None` for null, which takes nothing).
    ///
    /// # Safety
    /// `p` must be a task of a core, with a valid [`Task::host`], and the caller must own the
    /// reference it hands over (from [`HostApi::task_hold`], or the one `task_alloc` returned).
    pub unsafe fn from_raw(p: *mut Task) -> Option<Self> {
        NonNull::new(p).map(TaskHandle)
    }

    /// Gives up the handle without releasing its reference (see [`TaskHandle::from_raw`]).
    pub fn into_raw(self) -> *mut Task {
        ManuallyDrop::new(self).0.as_ptr()
    }

    /// Runs `f` with a handle borrowed from a raw pointer, taking no reference (what the
    /// SDK's entry-point shims do). Returns `None` for null.
    ///
    /// # Safety
    /// `p` must be a task of a core that stays valid for the whole call: one the core passed
    /// into the current entry point, or one the caller holds a reference to.
    pub unsafe fn with_borrowed<R>(p: *mut Task, f: impl FnOnce(&TaskHandle) -> R) -> Option<R> {
        let h = ManuallyDrop::new(NonNull::new(p).map(TaskHandle)?);
        Some(f(&h))
    }

    /// The raw pointer, for calls into [`crate::abi::HostApi`] (no reference is taken).
    pub fn as_ptr(&self) -> *mut Task {
        self.0.as_ptr()
    }

    /// The task's identity.
    pub fn id(&self) -> TaskId {
        TaskId(self.0.as_ptr() as usize)
    }

    fn t(&self) -> *mut Task {
        self.0.as_ptr()
    }

    fn host(&self) -> Option<&HostApi> {
        // SAFETY: the handle keeps the memory valid; `host` is written by the core when it
        // creates the task and never changes, and the table outlives every task of its core.
        unsafe { (*self.t()).host.as_ref() }
    }

    /// The CDB.
    pub fn cdb(&self) -> &[u8] {
        let t = self.t();
        // SAFETY: the handle keeps the memory valid and from being reused while the slice
        // (bound to `&self`) lives; the CDB fields are written at allocation, before any
        // handle existed, and never after. A long CDB is the core's copy, in the task's
        // private part, valid as long as the task's memory.
        unsafe {
            let len = (*t).cdb_len as usize;
            if len <= INLINE_CDB_LEN {
                let cdb = &(*t).cdb;
                &cdb[..len]
            } else if (*t).ext_cdb.is_null() {
                &[]
            } else {
                core::slice::from_raw_parts((*t).ext_cdb, len)
            }
        }
    }

    /// The operation code (first CDB byte), 0 for an empty CDB.
    pub fn opcode(&self) -> u8 {
        self.cdb().first().copied().unwrap_or(0)
    }

    /// The 8-byte LUN.
    pub fn lun(&self) -> [u8; 8] {
        // SAFETY: valid memory (the handle); written at allocation only.
        unsafe { (*self.t()).lun }
    }

    /// The port's tag (iSCSI ITT).
    pub fn tag(&self) -> u64 {
        // SAFETY: valid memory (the handle); written at allocation only.
        unsafe { (*self.t()).tag }
    }

    /// Task flags ([`crate::abi::task_flags`]).
    pub fn flags(&self) -> u32 {
        // SAFETY: valid memory (the handle); written at allocation only.
        unsafe { (*self.t()).flags }
    }

    /// Expected data transfer length from the transport.
    pub fn expected_xfer_len(&self) -> u64 {
        // SAFETY: valid memory (the handle); written at allocation only.
        unsafe { (*self.t()).expected_xfer_len }
    }

    /// Maximum number of buffers the LU may have in flight.
    pub fn max_nbufs(&self) -> u8 {
        // SAFETY: valid memory (the handle); written at allocation only.
        unsafe { (*self.t()).max_nbufs }
    }

    /// Task attribute ([`crate::abi::task_attr`]).
    pub fn task_attr(&self) -> u8 {
        // SAFETY: valid memory (the handle); written at allocation only.
        unsafe { (*self.t()).task_attr }
    }

    /// Task-management function (NONE for a SCSI command).
    pub fn tm_function(&self) -> TmFunction {
        // SAFETY: valid memory (the handle); written at allocation only.
        TmFunction(unsafe { (*self.t()).tm_function })
    }

    /// Referenced tag of ABORT TASK / QUERY TASK.
    pub fn tm_ref_tag(&self) -> u64 {
        // SAFETY: valid memory (the handle); written at allocation only.
        unsafe { (*self.t()).tm_ref_tag }
    }

    /// Session (I_T nexus) of the task.
    pub fn session(&self) -> SessionHandle {
        // SAFETY: valid memory (the handle); written at allocation only.
        unsafe { (*self.t()).session }
    }

    /// LU the task is routed to.
    pub fn lu(&self) -> LuHandle {
        // SAFETY: valid memory (the handle); written at allocation only.
        unsafe { (*self.t()).lu }
    }

    /// Bytes moved so far by completed transfers.
    pub fn nbytes_transferred(&self) -> u64 {
        // SAFETY: valid memory (the handle); a shared field, accessed atomically by all.
        unsafe { fields::load_u64(&raw mut (*self.t()).nbytes_transferred) }
    }

    /// The LU's per-task context.
    pub fn lu_private(&self) -> *mut c_void {
        // SAFETY: valid memory (the handle); a shared field, accessed atomically by all.
        unsafe { fields::load_ptr(&raw mut (*self.t()).lu_private) }
    }

    /// Sets the LU's per-task context (LU only).
    #[allow(
        clippy::not_unsafe_ptr_arg_deref,
        reason = "`p` is stored in the task, never dereferenced"
    )]
    pub fn set_lu_private(&self, p: *mut c_void) {
        // SAFETY: valid memory (the handle); a shared field, accessed atomically by all.
        unsafe { fields::store_ptr(&raw mut (*self.t()).lu_private, p) }
    }

    /// The LU's scratch pointer for this task ([`Task::itl_private`]).
    pub fn itl_private(&self) -> *mut c_void {
        // SAFETY: valid memory (the handle); a shared field, accessed atomically by all.
        unsafe { fields::load_ptr(&raw mut (*self.t()).itl_private) }
    }

    /// The port's per-task context.
    pub fn port_private(&self) -> *mut c_void {
        // SAFETY: valid memory (the handle); a shared field, accessed atomically by all.
        unsafe { fields::load_ptr(&raw mut (*self.t()).port_private) }
    }

    /// Sets the port's per-task context (port only).
    #[allow(
        clippy::not_unsafe_ptr_arg_deref,
        reason = "`p` is stored in the task, never dereferenced"
    )]
    pub fn set_port_private(&self, p: *mut c_void) {
        // SAFETY: valid memory (the handle); a shared field, accessed atomically by all.
        unsafe { fields::store_ptr(&raw mut (*self.t()).port_private, p) }
    }

    /// The transfer length the LU computed from the CDB (0 until the LU sets it).
    pub fn cmd_xfer_len(&self) -> u64 {
        // SAFETY: valid memory (the handle); a shared field, accessed atomically by all.
        unsafe { fields::load_u64(&raw mut (*self.t()).cmd_xfer_len) }
    }

    /// Records the transfer length the LU computed from the CDB (LU only; residuals).
    pub fn set_cmd_xfer_len(&self, n: u64) {
        // SAFETY: valid memory (the handle); a shared field, accessed atomically by all.
        unsafe { fields::store_u64(&raw mut (*self.t()).cmd_xfer_len, n) }
    }

    /// SCSI status byte (set by the LU or the core).
    pub fn scsi_status(&self) -> u8 {
        // SAFETY: valid memory (the handle); a shared field, accessed atomically by all.
        unsafe { fields::load_u8(&raw mut (*self.t()).scsi_status) }
    }

    /// A copy of the sense data of the status.
    pub fn sense(&self) -> SenseBytes {
        let t = self.t();
        let mut out = SenseBytes {
            len: 0,
            bytes: [0; SENSE_LEN],
        };
        // SAFETY: valid memory (the handle); shared fields, accessed atomically by all; the
        // length is clamped to the array.
        unsafe {
            let len = usize::from(fields::load_u16(&raw mut (*t).sense_len)).min(SENSE_LEN);
            fields::read_bytes((&raw mut (*t).sense).cast(), &mut out.bytes[..len]);
            out.len = len as u16;
        }
        out
    }

    /// Task-management response (TM tasks).
    pub fn tm_response(&self) -> crate::TmResponse {
        // SAFETY: valid memory (the handle); a shared field, accessed atomically by all.
        crate::TmResponse(unsafe { fields::load_u8(&raw mut (*self.t()).tm_response) })
    }

    /// Residual count and flags (1 = underflow, 2 = overflow), set by the core.
    pub fn residual(&self) -> (u64, u8) {
        let t = self.t();
        // SAFETY: valid memory (the handle); shared fields, accessed atomically by all.
        unsafe {
            (
                fields::load_u64(&raw mut (*t).residual),
                fields::load_u8(&raw mut (*t).residual_flags),
            )
        }
    }

    /// Stores status and sense in the task (LU or core, before `send_status`).
    pub fn set_status(&self, scsi_status: u8, sense: &[u8]) {
        let t = self.t();
        let n = sense.len().min(SENSE_LEN);
        // SAFETY: valid memory (the handle); shared fields, accessed atomically by all; at
        // most SENSE_LEN bytes go into the sense array.
        unsafe {
            fields::store_u8(&raw mut (*t).scsi_status, scsi_status);
            fields::write_bytes((&raw mut (*t).sense).cast(), &sense[..n]);
            fields::store_u16(&raw mut (*t).sense_len, n as u16);
        }
    }
}

/// A copy of a task's sense data ([`TaskHandle::sense`]); derefs to the valid bytes.
#[derive(Clone, Copy)]
pub struct SenseBytes {
    len: u16,
    bytes: [u8; SENSE_LEN],
}

impl core::ops::Deref for SenseBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl core::fmt::Debug for SenseBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(&**self, f)
    }
}

impl Clone for TaskHandle {
    fn clone(&self) -> Self {
        if let Some(api) = self.host() {
            // SAFETY: we hold a reference, which is what task_hold requires.
            unsafe { (api.task_hold)(self.t()) }
        }
        TaskHandle(self.0)
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        if let Some(api) = self.host() {
            // SAFETY: gives back the reference this handle owns, once (drop runs once).
            unsafe { (api.task_rele)(self.t()) }
        }
    }
}

impl core::fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id())
            .field("tag", &self.tag())
            .finish()
    }
}

/// A task from [`crate::Host::task_alloc`] that is not posted yet.
///
/// It carries the reference [`crate::Host::post_task`] consumes, so a task is posted at most
/// once. It derefs to a [`TaskHandle`] for reading fields; [`UnpostedTask::handle`] gives a
/// handle to keep. Dropping it without posting abandons the task ([`HostApi::task_abandon`]):
/// the core ends it and calls the port's `task_free` from inside the drop, so do not drop one
/// while holding a lock your `task_free` takes.
#[must_use = "an allocated task must be posted; dropping it abandons it"]
pub struct UnpostedTask(ManuallyDrop<TaskHandle>);

impl UnpostedTask {
    /// Wraps a task fresh from `task_alloc` (`None` for null).
    ///
    /// # Safety
    /// `p` must be a task `task_alloc` just returned, not yet posted nor abandoned, with the
    /// reference that came with it.
    pub unsafe fn from_raw(p: *mut Task) -> Option<Self> {
        NonNull::new(p).map(|p| UnpostedTask(ManuallyDrop::new(TaskHandle(p))))
    }

    /// A counted handle to keep (the task stays unposted).
    pub fn handle(&self) -> TaskHandle {
        TaskHandle::clone(&self.0)
    }

    /// Gives up the reference, for `post_task` or `task_abandon`.
    pub fn into_raw(self) -> *mut Task {
        ManuallyDrop::new(self).0.as_ptr()
    }
}

impl core::ops::Deref for UnpostedTask {
    type Target = TaskHandle;
    fn deref(&self) -> &TaskHandle {
        &self.0
    }
}

impl Drop for UnpostedTask {
    fn drop(&mut self) {
        let t = self.0.as_ptr();
        if let Some(api) = self.0.host() {
            // SAFETY: the task is unposted and this is its post reference, consumed once.
            unsafe { (api.task_abandon)(t) }
        }
    }
}

impl core::fmt::Debug for UnpostedTask {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("UnpostedTask").field(&*self.0).finish()
    }
}

/// What a port fills in to allocate a task (safe form of [`TaskRequest`]).
#[derive(Clone, Copy, Debug)]
pub struct TaskSpec<'a> {
    /// 8-byte LUN.
    pub lun: [u8; 8],
    /// CDB (empty for TM requests).
    pub cdb: &'a [u8],
    /// [`crate::abi::task_flags`].
    pub flags: u32,
    /// Port tag (iSCSI ITT).
    pub tag: u64,
    /// Expected transfer length.
    pub expected_xfer_len: u64,
    /// CmdSN.
    pub cmd_sn: u32,
    /// [`crate::abi::task_attr`].
    pub task_attr: u8,
    /// TM function (NONE for commands).
    pub tm_function: TmFunction,
    /// Referenced tag for ABORT TASK / QUERY TASK.
    pub tm_ref_tag: u64,
    /// Maximum parallel buffers (1..=4).
    pub max_nbufs: u8,
}

impl<'a> TaskSpec<'a> {
    /// A SIMPLE command with no data expected, one buffer.
    pub fn command(lun: [u8; 8], cdb: &'a [u8], tag: u64) -> Self {
        TaskSpec {
            lun,
            cdb,
            flags: 0,
            tag,
            expected_xfer_len: 0,
            cmd_sn: 0,
            task_attr: crate::abi::task_attr::SIMPLE,
            tm_function: TmFunction::NONE,
            tm_ref_tag: 0,
            max_nbufs: 1,
        }
    }

    /// A task-management request.
    pub fn task_mgmt(lun: [u8; 8], function: TmFunction, tag: u64, ref_tag: u64) -> Self {
        TaskSpec {
            tm_function: function,
            tm_ref_tag: ref_tag,
            ..Self::command(lun, &[], tag)
        }
    }

    pub(crate) fn to_raw(self, port_private: *mut c_void) -> TaskRequest {
        TaskRequest {
            lun: self.lun,
            cdb: self.cdb.as_ptr(),
            cdb_len: self.cdb.len() as u32,
            flags: self.flags,
            tag: self.tag,
            expected_xfer_len: self.expected_xfer_len,
            cmd_sn: self.cmd_sn,
            task_attr: self.task_attr,
            tm_function: self.tm_function.0,
            max_nbufs: self.max_nbufs,
            reserved0: 0,
            tm_ref_tag: self.tm_ref_tag,
            port_private,
        }
    }
}

/// An owned data buffer.
///
/// Ownership is the type: whoever holds a `DataBuf` may touch its memory. Passing it to
/// [`crate::Host::xfer_data`] moves it to the port (in flight); it comes back in
/// [`crate::Lu::dbuf_xfer_done`]. A buffer is returned to the port's store with
/// [`crate::Host::dbuf_free`] (LU) or by the port itself. Dropping a `DataBuf` leaks it.
#[derive(Debug)]
#[must_use = "a DataBuf must be transferred or freed; dropping it leaks the buffer"]
pub struct DataBuf(NonNull<DataBufRaw>);

// SAFETY: a buffer is owned by exactly one party at a time (the type enforces it).
unsafe impl Send for DataBuf {}

impl DataBuf {
    /// Takes ownership of a raw buffer (`None` for null).
    ///
    /// # Safety
    /// `p` must point to a valid `DataBufRaw` whose ownership is being handed over, with
    /// `data` valid for `buf_size` bytes.
    pub unsafe fn from_raw(p: *mut DataBufRaw) -> Option<Self> {
        NonNull::new(p).map(DataBuf)
    }

    /// Gives up ownership, returning the raw pointer.
    pub fn into_raw(self) -> *mut DataBufRaw {
        self.0.as_ptr()
    }

    fn r(&self) -> &DataBufRaw {
        // SAFETY: we own the buffer.
        unsafe { self.0.as_ref() }
    }

    fn rm(&mut self) -> &mut DataBufRaw {
        // SAFETY: we own the buffer exclusively.
        unsafe { self.0.as_mut() }
    }

    /// Size of the memory in bytes.
    pub fn capacity(&self) -> usize {
        self.r().buf_size as usize
    }

    /// Bytes of the current transfer.
    pub fn xfer_len(&self) -> usize {
        self.r().xfer_len as usize
    }

    /// Offset of the current transfer within the command's data.
    pub fn rel_offset(&self) -> u64 {
        self.r().rel_offset
    }

    /// Flags ([`crate::abi::dbuf_flags`]).
    pub fn flags(&self) -> u32 {
        self.r().flags
    }

    /// Status of the last transfer (set by the port).
    pub fn xfer_status(&self) -> Status {
        self.r().xfer_status
    }

    /// Sets the status of the transfer (port only).
    pub fn set_xfer_status(&mut self, s: Status) {
        self.rm().xfer_status = s;
    }

    /// Describes the next transfer: `len` bytes (clamped to the capacity) at `rel_offset`,
    /// with `flags`.
    pub fn set_xfer(&mut self, rel_offset: u64, len: usize, flags: u32) {
        let cap = self.capacity();
        let r = self.rm();
        r.rel_offset = rel_offset;
        r.xfer_len = len.min(cap) as u32;
        r.flags = flags;
    }

    /// The whole memory.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let r = self.r();
        let (p, n) = (r.data, r.buf_size as usize);
        if p.is_null() || n == 0 {
            return &mut [];
        }
        // SAFETY: we own the buffer; `data` is valid for `buf_size` bytes (from_raw contract).
        unsafe { core::slice::from_raw_parts_mut(p, n) }
    }

    /// The bytes of the current transfer.
    pub fn data(&self) -> &[u8] {
        let r = self.r();
        let (p, n) = (r.data, (r.xfer_len.min(r.buf_size)) as usize);
        if p.is_null() || n == 0 {
            return &[];
        }
        // SAFETY: as in as_mut_slice; xfer_len is clamped to buf_size.
        unsafe { core::slice::from_raw_parts(p, n) }
    }

    /// The port's private context of the buffer.
    pub fn port_private(&self) -> *mut c_void {
        self.r().port_private
    }

    /// Sets the port's private context of the buffer.
    pub fn set_port_private(&mut self, p: *mut c_void) {
        self.rm().port_private = p;
    }
}
