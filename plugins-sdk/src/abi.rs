//! The raw, `#[repr(C)]` ABI between the core and providers.
//!
//! Everything here crosses a shared-library boundary. Every type is `#[repr(C)]` (or a
//! transparent newtype over a fixed-width integer), has its layout fingerprinted in
//! [`crate::layout::ABI_LAYOUTS`], and is checked by the core when a provider loads. Coded
//! values are integers with associated constants, never Rust enums, because a value that came
//! from another library must not be able to produce an invalid enum discriminant.
//!
//! Providers normally use the safe wrappers ([`crate::Provider`], [`crate::Lu`],
//! [`crate::Port`], [`crate::Host`]); this module is what those wrappers are made of and what
//! a provider written in another language would implement.

use core::ffi::c_void;

/// Version of this ABI. Bumped on any incompatible change; the core refuses a provider whose
/// root module carries another value.
///
/// History: 1 first release; 2 added `SessionRegistration::flags`; 3 made tasks
/// reference-counted ([`Task::host`], [`HostApi::task_hold`], [`HostApi::task_rele`],
/// [`HostApi::task_abandon`]).
pub const ABI_VERSION: u32 = 3;

/// First eight bytes of every [`ProviderRoot`]: `b"RSTMFPRV"` as a little-endian `u64`.
pub const ROOT_MAGIC: u64 = u64::from_le_bytes(*b"RSTMFPRV");

/// Name of the symbol every provider library exports: `extern "C" fn() -> *const ProviderRoot`.
pub const ROOT_SYMBOL: &[u8] = b"rstmf_provider_root\0";

/// A borrowed UTF-8 string: valid for the duration of the call it is passed to.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RStr {
    /// First byte (may be dangling when `len` is 0).
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

// SAFETY: RStr is a borrowed view of immutable bytes; sending it between threads is as safe as
// sending `&str` (the lifetime contract is the caller's, as for every ABI value).
unsafe impl Send for RStr {}
// SAFETY: see above; the bytes are never mutated through an RStr.
unsafe impl Sync for RStr {}

impl RStr {
    /// Borrows `s` as an `RStr` (the caller keeps `s` alive for the call).
    pub const fn new(s: &str) -> Self {
        RStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The empty string.
    pub const EMPTY: RStr = RStr {
        ptr: core::ptr::NonNull::<u8>::dangling().as_ptr(),
        len: 0,
    };

    /// Reads the string back.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be readable for `'a`. Invalid UTF-8 is replaced, never trusted.
    pub unsafe fn as_str<'a>(&self) -> std::borrow::Cow<'a, str> {
        if self.len == 0 || self.ptr.is_null() {
            return std::borrow::Cow::Borrowed("");
        }
        // SAFETY: the caller guarantees the range is readable for 'a.
        let bytes = unsafe { core::slice::from_raw_parts(self.ptr, self.len) };
        String::from_utf8_lossy(bytes)
    }
}

/// Result of an ABI call. The top byte is a class; the named constants cover every value the
/// core and the SDK produce.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    /// The call succeeded (or, for an abort, the abort was started and will be completed later).
    pub const SUCCESS: Status = Status(0);
    /// Temporarily unable; retry later.
    pub const BUSY: Status = Status(1);
    /// The object or task was not found.
    pub const NOT_FOUND: Status = Status(2);
    /// An argument was invalid.
    pub const INVALID_ARG: Status = Status(3);
    /// The object already exists or is already in the requested state.
    pub const ALREADY: Status = Status(4);
    /// The task was aborted.
    pub const ABORTED: Status = Status(5);
    /// The abort finished synchronously: the callee has let go of the task.
    pub const ABORT_SUCCESS: Status = Status(6);
    /// Out of memory or buffers.
    pub const ALLOC_FAILURE: Status = Status(7);
    /// Timed out.
    pub const TIMEOUT: Status = Status(8);
    /// Not supported by this provider or object.
    pub const NOT_SUPPORTED: Status = Status(9);
    /// The object is in a state where the call is not allowed.
    pub const BAD_STATE: Status = Status(10);
    /// The provider panicked during the call; the core fails the provider's objects.
    pub const PANICKED: Status = Status(11);
    /// A transport or I/O error.
    pub const IO_ERROR: Status = Status(12);

    /// True for [`Status::SUCCESS`].
    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// Short name of the status for messages.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0 => "success",
            1 => "busy",
            2 => "not found",
            3 => "invalid argument",
            4 => "already",
            5 => "aborted",
            6 => "abort success",
            7 => "allocation failure",
            8 => "timeout",
            9 => "not supported",
            10 => "bad state",
            11 => "provider panicked",
            12 => "I/O error",
            _ => "unknown status",
        }
    }
}

impl core::fmt::Debug for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Status({}: {})", self.0, self.name())
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Kind of provider a library implements.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderKind(pub u32);

impl ProviderKind {
    /// A port provider: it owns local ports (SCSI target ports) and brings in commands.
    pub const PORT: ProviderKind = ProviderKind(1);
    /// A logical-unit provider: it owns LUs and executes commands.
    pub const LU: ProviderKind = ProviderKind(2);

    /// `"port"`, `"lu"` or `"unknown"`.
    pub const fn name(self) -> &'static str {
        match self.0 {
            1 => "port",
            2 => "lu",
            _ => "unknown",
        }
    }
}

/// Log levels of the tracing bridge (same order as `tracing::Level`, most verbose last).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogLevel(pub u32);

impl LogLevel {
    /// Errors.
    pub const ERROR: LogLevel = LogLevel(1);
    /// Warnings.
    pub const WARN: LogLevel = LogLevel(2);
    /// Informational.
    pub const INFO: LogLevel = LogLevel(3);
    /// Debugging.
    pub const DEBUG: LogLevel = LogLevel(4);
    /// Tracing.
    pub const TRACE: LogLevel = LogLevel(5);
}

/// Online/offline control commands exchanged by the core and providers for LUs and ports
/// (the request → complete → acknowledge handshake of COMSTAR's `stmf_ctl`).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtlCmd(pub u32);

impl CtlCmd {
    /// Core → provider: bring the object online; the provider answers with `*_ctl_complete`.
    pub const ONLINE: CtlCmd = CtlCmd(1);
    /// Core → provider: take the object offline (no tasks are outstanding any more).
    pub const OFFLINE: CtlCmd = CtlCmd(2);
    /// Core → provider: the core has seen the ONLINE completion.
    pub const ACK_ONLINE_COMPLETE: CtlCmd = CtlCmd(3);
    /// Core → provider: the core has seen the OFFLINE completion.
    pub const ACK_OFFLINE_COMPLETE: CtlCmd = CtlCmd(4);
}

/// Events the core reports to an LU through [`LuOps::event`].
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LuEvent(pub u32);

impl LuEvent {
    /// A LUN RESET (or a TARGET RESET that covers this LU) finished aborting tasks: reset the
    /// LU's state (reservations per SPC rules, mode pages, unit attentions).
    pub const RESET_STATE: LuEvent = LuEvent(1);
    /// The I_T nexus `session` no longer reaches this LU (session gone, view removed, reset):
    /// drop per-nexus state.
    pub const ITL_REMOVED: LuEvent = LuEvent(2);
    /// The I_T nexus `session` was reset (I_T NEXUS RESET): report a power-on/reset UA to it.
    pub const NEXUS_RESET: LuEvent = LuEvent(3);
}

/// Task-management function codes carried in [`Task::tm_function`] (SAM-5 names, values as in
/// the iSCSI TMF request).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmFunction(pub u8);

impl TmFunction {
    /// Not a task-management request: a SCSI command.
    pub const NONE: TmFunction = TmFunction(0);
    /// Abort the task whose tag is [`Task::tm_ref_tag`] on this I_T nexus.
    pub const ABORT_TASK: TmFunction = TmFunction(1);
    /// Abort every task of this I_T nexus on the LUN.
    pub const ABORT_TASK_SET: TmFunction = TmFunction(2);
    /// Clear ACA (not supported: answered FUNCTION NOT SUPPORTED).
    pub const CLEAR_ACA: TmFunction = TmFunction(3);
    /// Clear the task set of this I_T nexus on the LUN (task sets are per I_T nexus, TST=001b).
    pub const CLEAR_TASK_SET: TmFunction = TmFunction(4);
    /// Abort every task on the LU from every initiator, then reset the LU's state.
    pub const LUN_RESET: TmFunction = TmFunction(5);
    /// Reset every LU reachable through the target port.
    pub const TARGET_RESET: TmFunction = TmFunction(6);
    /// Cold reset (treated as TARGET RESET).
    pub const TARGET_COLD_RESET: TmFunction = TmFunction(7);
    /// Task reassign (not supported).
    pub const TASK_REASSIGN: TmFunction = TmFunction(8);
    /// Abort every task of this I_T nexus on every LU.
    pub const IT_NEXUS_RESET: TmFunction = TmFunction(9);
    /// Ask whether the task with tag [`Task::tm_ref_tag`] exists.
    pub const QUERY_TASK: TmFunction = TmFunction(10);
}

/// Task-management response codes written to [`Task::tm_response`] (SAM-5).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmResponse(pub u8);

impl TmResponse {
    /// FUNCTION COMPLETE.
    pub const COMPLETE: TmResponse = TmResponse(0);
    /// FUNCTION SUCCEEDED (QUERY TASK: the task exists).
    pub const SUCCEEDED: TmResponse = TmResponse(1);
    /// The referenced task does not exist (iSCSI response 1).
    pub const TASK_DOES_NOT_EXIST: TmResponse = TmResponse(2);
    /// The LUN does not exist.
    pub const LUN_DOES_NOT_EXIST: TmResponse = TmResponse(3);
    /// FUNCTION NOT SUPPORTED.
    pub const NOT_SUPPORTED: TmResponse = TmResponse(4);
    /// FUNCTION REJECTED.
    pub const REJECTED: TmResponse = TmResponse(5);
}

/// Flags of [`Task::flags`].
pub mod task_flags {
    /// The command reads data (data flows to the initiator: Data-In).
    pub const READ_DATA: u32 = 1 << 0;
    /// The command writes data (data flows from the initiator: Data-Out).
    pub const WRITE_DATA: u32 = 1 << 1;
    /// The initial data buffer passed to `new_task` already holds immediate/unsolicited data.
    pub const INITIAL_BURST: u32 = 1 << 2;
    /// The port accepts buffers the LU built around its own memory (zero-copy).
    pub const PORT_ACCEPTS_LU_DBUF: u32 = 1 << 3;
    /// The port's queue is nearly full: the LU may answer TASK SET FULL.
    pub const PORT_LOAD_HIGH: u32 = 1 << 4;
}

/// Task attributes of [`Task::task_attr`] (SAM-5).
pub mod task_attr {
    /// SIMPLE.
    pub const SIMPLE: u8 = 0;
    /// ORDERED.
    pub const ORDERED: u8 = 1;
    /// HEAD OF QUEUE.
    pub const HEAD_OF_QUEUE: u8 = 2;
    /// ACA.
    pub const ACA: u8 = 3;
    /// Untagged.
    pub const UNTAGGED: u8 = 4;
}

/// Flags of [`DataBufRaw::flags`].
pub mod dbuf_flags {
    /// Data goes to the initiator (a read).
    pub const TO_RPORT: u32 = 1 << 0;
    /// Data comes from the initiator (a write).
    pub const FROM_RPORT: u32 = 1 << 1;
    /// The port may send GOOD status together with the last data of this transfer
    /// (status phase collapse); the LU then does not call `send_status`.
    pub const SEND_STATUS_GOOD: u32 = 1 << 2;
    /// The buffer memory belongs to the LU (zero-copy path).
    pub const LU_DATA_BUF: u32 = 1 << 3;
}

/// Flags for `xfer_data` and `send_status` (COMSTAR's ioflags).
pub mod io_flags {
    /// The LU is finished with the task after this call.
    pub const LU_DONE: u32 = 1 << 0;
}

/// Size of the inline CDB in [`Task`]; longer CDBs are referenced by [`Task::ext_cdb`].
pub const INLINE_CDB_LEN: usize = 32;
/// Size of the sense buffer in [`Task`] (SPC-4 allows up to 252 bytes).
pub const SENSE_LEN: usize = 252;

/// Opaque handle of a registered LU (owned by the core).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LuHandle(pub *const c_void);
/// Opaque handle of a registered local port (owned by the core).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LportHandle(pub *const c_void);
/// Opaque handle of a registered session (I_T nexus, owned by the core).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionHandle(pub *const c_void);
/// Opaque token identifying a loaded provider instance to the core.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderToken(pub *const c_void);

// SAFETY: handles are opaque identifiers; the core synchronises the objects behind them.
unsafe impl Send for LuHandle {}
// SAFETY: as above.
unsafe impl Sync for LuHandle {}
// SAFETY: as above.
unsafe impl Send for LportHandle {}
// SAFETY: as above.
unsafe impl Sync for LportHandle {}
// SAFETY: as above.
unsafe impl Send for SessionHandle {}
// SAFETY: as above.
unsafe impl Sync for SessionHandle {}
// SAFETY: as above.
unsafe impl Send for ProviderToken {}
// SAFETY: as above.
unsafe impl Sync for ProviderToken {}

/// A SCSI task: one command (or one task-management request) of one I_T_L nexus.
///
/// The core allocates tasks (with a private part after this struct); providers only ever see
/// `*mut Task`. Fields are partitioned by owner: the port fills the command part before
/// posting, the LU fills the status part before `send_status`, the core fills identity and
/// residuals.
///
/// Lifetime (ABI 3): the memory of a task is reference-counted. `task_alloc` returns the task
/// with the reference that `post_task` (or `task_abandon`) consumes; a provider takes more
/// with [`HostApi::task_hold`] (while it holds one already, or inside a call the core made
/// for the task) and gives each back with [`HostApi::task_rele`]. The task is *live* from
/// `task_alloc` until the core calls the port's `task_free`; after that it is dead — the
/// core refuses calls for it — but its memory stays readable until the last reference is
/// released. A pointer the core passes into an entry point is valid for that call.
///
/// Fields written while the task is live (status, sense, residuals, counts, the private
/// pointers) are accessed by everyone through [`crate::fields`]; the rest is written at
/// allocation and then only read.
#[repr(C)]
pub struct Task {
    /// Session (I_T nexus) the task arrived on. Set by the core.
    pub session: SessionHandle,
    /// LU the task is routed to, or null when the core answers it itself. Set by the core.
    pub lu: LuHandle,
    /// The 8-byte SCSI LUN as received. Set by the core from the port's request.
    pub lun: [u8; 8],
    /// Zero at allocation; the LU's to use for the life of the task. (Per-nexus state is
    /// keyed by [`Task::session`]; the LU hears of a nexus ending through
    /// [`LuEvent::ITL_REMOVED`].)
    pub itl_private: *mut c_void,
    /// The port's own per-task context.
    pub port_private: *mut c_void,
    /// The LU's own per-task context.
    pub lu_private: *mut c_void,
    /// The port's tag for the task (iSCSI: the ITT).
    pub tag: u64,
    /// Referenced tag of ABORT TASK / QUERY TASK.
    pub tm_ref_tag: u64,
    /// Expected data transfer length from the transport (iSCSI EDTL).
    pub expected_xfer_len: u64,
    /// Command sequence number from the transport (informational).
    pub cmd_sn: u32,
    /// [`task_flags`].
    pub flags: u32,
    /// The CDB (first [`Task::cdb_len`] bytes, up to [`INLINE_CDB_LEN`]).
    pub cdb: [u8; INLINE_CDB_LEN],
    /// CDB longer than [`INLINE_CDB_LEN`]: the core's copy, valid as long as the task's
    /// memory.
    pub ext_cdb: *const u8,
    /// Length of the CDB in bytes.
    pub cdb_len: u16,
    /// [`task_attr`].
    pub task_attr: u8,
    /// [`TmFunction`] code; 0 for a SCSI command.
    pub tm_function: u8,
    /// Most data buffers the LU may have in flight at once (1..=4).
    pub max_nbufs: u8,
    /// SCSI status byte (set by the LU or the core).
    pub scsi_status: u8,
    /// Task-management response ([`TmResponse`]) for TM tasks.
    pub tm_response: u8,
    /// Residual flags: 1 = underflow, 2 = overflow (set by the core).
    pub residual_flags: u8,
    /// Valid bytes in [`Task::sense`].
    pub sense_len: u16,
    /// Reserved, zero.
    pub reserved0: u16,
    /// Residual count in bytes (set by the core when status is sent).
    pub residual: u64,
    /// Bytes moved so far (maintained by the core from completed transfers).
    pub nbytes_transferred: u64,
    /// Transfer length the LU computed from the CDB (set by the LU; used for residuals).
    pub cmd_xfer_len: u64,
    /// Sense data.
    pub sense: [u8; SENSE_LEN],
    /// The services table of the core that owns the task: the one whose `task_hold` and
    /// `task_rele` count its references. Set by the core when it creates the task; never
    /// changes.
    pub host: *const HostApi,
    /// Reserved for future ABI revisions, zero.
    pub reserved: [u64; 3],
}

/// One data buffer of a task: memory owned by the port's buffer store (or by the LU, with
/// [`dbuf_flags::LU_DATA_BUF`]).
#[repr(C)]
pub struct DataBufRaw {
    /// Start of the buffer memory.
    pub data: *mut u8,
    /// Size of the memory in bytes.
    pub buf_size: u32,
    /// Bytes to move in the current transfer (≤ `buf_size`).
    pub xfer_len: u32,
    /// Offset of this transfer within the command's data.
    pub rel_offset: u64,
    /// [`dbuf_flags`].
    pub flags: u32,
    /// Completion status of the last transfer (set by the port).
    pub xfer_status: Status,
    /// The port's private context for the buffer.
    pub port_private: *mut c_void,
    /// The LU's private context for the buffer.
    pub lu_private: *mut c_void,
    /// Reserved for the core, zero.
    pub core_private: u64,
}

/// Port-side request to allocate a task ([`HostApi::task_alloc`]).
#[repr(C)]
pub struct TaskRequest {
    /// 8-byte LUN.
    pub lun: [u8; 8],
    /// CDB (may be empty for task-management requests).
    pub cdb: *const u8,
    /// CDB length.
    pub cdb_len: u32,
    /// [`task_flags`].
    pub flags: u32,
    /// Port tag.
    pub tag: u64,
    /// Expected transfer length.
    pub expected_xfer_len: u64,
    /// CmdSN.
    pub cmd_sn: u32,
    /// [`task_attr`].
    pub task_attr: u8,
    /// [`TmFunction`].
    pub tm_function: u8,
    /// Maximum parallel buffers.
    pub max_nbufs: u8,
    /// Reserved, zero.
    pub reserved0: u8,
    /// Referenced tag (ABORT TASK / QUERY TASK).
    pub tm_ref_tag: u64,
    /// Port context stored in [`Task::port_private`].
    pub port_private: *mut c_void,
}

/// Entry points of an LU, registered with [`HostApi::register_lu`]. `ctx` is the LU's own
/// pointer given at registration.
#[repr(C)]
pub struct LuOps {
    /// Start executing a command or task-management request.
    pub new_task: unsafe extern "C" fn(
        ctx: *const c_void,
        task: *mut Task,
        initial: *mut DataBufRaw,
    ) -> Status,
    /// A data transfer of `dbuf` finished; check `dbuf.xfer_status`. Ownership returns to the LU.
    pub dbuf_xfer_done:
        unsafe extern "C" fn(ctx: *const c_void, task: *mut Task, dbuf: *mut DataBufRaw) -> Status,
    /// Abort `task`: return ABORT_SUCCESS or NOT_FOUND when let go, SUCCESS when the LU will call
    /// `lu_aborted` later, BUSY to be asked again.
    pub abort: unsafe extern "C" fn(ctx: *const c_void, task: *mut Task) -> Status,
    /// The task is being freed: drop any per-task state.
    pub task_free: unsafe extern "C" fn(ctx: *const c_void, task: *mut Task) -> Status,
    /// Online/offline control; the LU answers with `lu_ctl_complete` for ONLINE and OFFLINE.
    pub ctl: unsafe extern "C" fn(ctx: *const c_void, lu: LuHandle, cmd: CtlCmd) -> Status,
    /// An [`LuEvent`] concerning `session` (null for all).
    pub event:
        unsafe extern "C" fn(ctx: *const c_void, event: LuEvent, session: SessionHandle) -> Status,
    /// Write a JSON object describing the LU (for `list-lu -v`) with [`HostApi::reply`].
    pub info: unsafe extern "C" fn(ctx: *const c_void, sink: *mut c_void) -> Status,
    /// The core no longer references the LU (after deregistration): free `ctx`.
    pub release: unsafe extern "C" fn(ctx: *const c_void) -> Status,
}

/// Entry points of a local port, registered with [`HostApi::register_lport`].
#[repr(C)]
pub struct PortOps {
    /// Move one buffer of data for `task` (direction in `dbuf.flags`); complete with
    /// `data_xfer_done`. Ownership of `dbuf` passes to the port until then.
    pub xfer_data: unsafe extern "C" fn(
        ctx: *const c_void,
        task: *mut Task,
        dbuf: *mut DataBufRaw,
        flags: u32,
    ) -> Status,
    /// Send the status (or the TM response) of `task`; complete with `send_status_done`.
    pub send_status:
        unsafe extern "C" fn(ctx: *const c_void, task: *mut Task, flags: u32) -> Status,
    /// The core is done with `task`: release the port's context. The task is dead after this
    /// (references the port still holds keep only its memory).
    pub task_free: unsafe extern "C" fn(ctx: *const c_void, task: *mut Task) -> Status,
    /// Abort `task` (same results as [`LuOps::abort`]; late completion via `lport_aborted`).
    pub abort: unsafe extern "C" fn(ctx: *const c_void, task: *mut Task) -> Status,
    /// Online/offline control; the port answers with `lport_ctl_complete`.
    pub ctl: unsafe extern "C" fn(ctx: *const c_void, lport: LportHandle, cmd: CtlCmd) -> Status,
    /// Allocate a data buffer of `size` bytes (at least `*min_size`) into `*out`; on failure
    /// return ALLOC_FAILURE and may lower `*min_size` to what could be had.
    pub dbuf_alloc: unsafe extern "C" fn(
        ctx: *const c_void,
        task: *mut Task,
        size: u32,
        min_size: *mut u32,
        out: *mut *mut DataBufRaw,
    ) -> Status,
    /// Free a buffer from `dbuf_alloc`.
    pub dbuf_free: unsafe extern "C" fn(ctx: *const c_void, dbuf: *mut DataBufRaw) -> Status,
    /// Write a JSON object describing the port with [`HostApi::reply`].
    pub info: unsafe extern "C" fn(ctx: *const c_void, sink: *mut c_void) -> Status,
    /// The core no longer references the port: free `ctx`.
    pub release: unsafe extern "C" fn(ctx: *const c_void) -> Status,
}

/// LU registration ([`HostApi::register_lu`]).
#[repr(C)]
pub struct LuRegistration {
    /// 16-byte NAA identifier (first nibble 6): the LU's GUID.
    pub guid: [u8; 16],
    /// Alias shown by `list-lu`.
    pub alias: RStr,
    /// The LU's context, passed back to every [`LuOps`] entry.
    pub ctx: *const c_void,
    /// Entry points (copied by the core).
    pub ops: LuOps,
}

/// Local port registration ([`HostApi::register_lport`]).
#[repr(C)]
pub struct LportRegistration {
    /// SCSI name of the target port (e.g. an iSCSI target IQN); unique in the core.
    pub name: RStr,
    /// Alias.
    pub alias: RStr,
    /// Transport protocol name (`"iscsi"`, `"iser"`, `"test"`).
    pub protocol: RStr,
    /// The port's context, passed back to every [`PortOps`] entry.
    pub ctx: *const c_void,
    /// Entry points (copied by the core).
    pub ops: PortOps,
}

/// Session registration ([`HostApi::register_session`]).
#[repr(C)]
pub struct SessionRegistration {
    /// Initiator port name (iSCSI: the initiator IQN/EUI, possibly with `,i,0x<ISID>`).
    pub initiator: RStr,
    /// Initiator alias.
    pub alias: RStr,
    /// SPC TransportID of the initiator port (may be empty).
    pub transport_id: RStr,
    /// [`session_flags`] bits; unknown bits are refused with `INVALID_ARG`.
    pub flags: u32,
}

/// Flags of [`SessionRegistration::flags`].
pub mod session_flags {
    /// The port did not prove the initiator name (e.g. iSCSI CHAP with an account shared
    /// by several hosts): the core maps only the views for all host groups to the
    /// session, never those of a host group the name is a member of.
    pub const NAME_UNPROVEN: u32 = 1 << 0;
    /// Every flag this ABI version defines.
    pub const ALL: u32 = NAME_UNPROVEN;
}

/// Services the core offers to providers. The table is passed to [`ProviderRoot::create`] and
/// stays valid until the provider is destroyed.
#[repr(C)]
pub struct HostApi {
    /// [`ABI_VERSION`] of the core.
    pub abi_version: u32,
    /// `size_of::<HostApi>()` of the core.
    pub size: u32,
    /// Most verbose [`LogLevel`] the core wants (events above it are not sent).
    pub max_log_level: unsafe extern "C" fn() -> LogLevel,
    /// Emit a log event on the core's subscriber.
    pub log:
        unsafe extern "C" fn(provider: ProviderToken, level: LogLevel, target: RStr, message: RStr),
    /// Append `text` to a reply sink handed to `control`, `save_config` or `info`.
    pub reply: unsafe extern "C" fn(sink: *mut c_void, text: RStr),
    /// Register an LU. It starts OFFLINE; the core then onlines it.
    pub register_lu: unsafe extern "C" fn(
        provider: ProviderToken,
        reg: *const LuRegistration,
        out: *mut LuHandle,
    ) -> Status,
    /// Deregister an LU (offlines it first, aborting its tasks). `release` is called after.
    pub deregister_lu: unsafe extern "C" fn(lu: LuHandle) -> Status,
    /// Register a local port. It starts OFFLINE; the core then onlines it.
    pub register_lport: unsafe extern "C" fn(
        provider: ProviderToken,
        reg: *const LportRegistration,
        out: *mut LportHandle,
    ) -> Status,
    /// Deregister a local port (refused with BUSY while it has sessions).
    pub deregister_lport: unsafe extern "C" fn(lport: LportHandle) -> Status,
    /// The LU finished an ONLINE/OFFLINE request with `status`.
    pub lu_ctl_complete: unsafe extern "C" fn(lu: LuHandle, cmd: CtlCmd, status: Status),
    /// The port finished an ONLINE/OFFLINE request with `status`.
    pub lport_ctl_complete: unsafe extern "C" fn(lport: LportHandle, cmd: CtlCmd, status: Status),
    /// Register a session (I_T nexus) on an ONLINE port.
    pub register_session: unsafe extern "C" fn(
        lport: LportHandle,
        reg: *const SessionRegistration,
        out: *mut SessionHandle,
    ) -> Status,
    /// Deregister a session; its outstanding tasks are aborted (I_T nexus loss).
    pub deregister_session: unsafe extern "C" fn(session: SessionHandle) -> Status,
    /// Port: allocate a task for a command or TM request. The task comes with one reference,
    /// which `post_task` or `task_abandon` consumes.
    pub task_alloc: unsafe extern "C" fn(
        session: SessionHandle,
        req: *const TaskRequest,
        out: *mut *mut Task,
    ) -> Status,
    /// Port: hand the task to the core, with immediate/unsolicited data in `initial` (or null).
    /// Consumes the reference `task_alloc` returned; once per task.
    pub post_task: unsafe extern "C" fn(task: *mut Task, initial: *mut DataBufRaw),
    /// Port: a transfer started by `xfer_data` finished; ownership of `dbuf` returns to the LU.
    pub data_xfer_done:
        unsafe extern "C" fn(task: *mut Task, dbuf: *mut DataBufRaw, status: Status),
    /// Port: the status of `task` was delivered (or failed with `status`).
    pub send_status_done: unsafe extern "C" fn(task: *mut Task, status: Status),
    /// Port: an abort that returned SUCCESS has finished; the port let go of the task.
    pub lport_aborted: unsafe extern "C" fn(task: *mut Task, status: Status),
    /// LU: allocate a data buffer from the port's store (see [`PortOps::dbuf_alloc`]).
    pub dbuf_alloc: unsafe extern "C" fn(
        task: *mut Task,
        size: u32,
        min_size: *mut u32,
        out: *mut *mut DataBufRaw,
    ) -> Status,
    /// LU: return a buffer to the port's store.
    pub dbuf_free: unsafe extern "C" fn(task: *mut Task, dbuf: *mut DataBufRaw),
    /// LU: move data (ownership of `dbuf` passes to the port until `dbuf_xfer_done`).
    pub xfer_data:
        unsafe extern "C" fn(task: *mut Task, dbuf: *mut DataBufRaw, flags: u32) -> Status,
    /// LU: send the status in `task.scsi_status`/`task.sense` (with [`io_flags::LU_DONE`]
    /// when the LU is finished with the task).
    pub send_status: unsafe extern "C" fn(task: *mut Task, flags: u32) -> Status,
    /// LU: an abort that returned SUCCESS has finished; the LU let go of the task.
    pub lu_aborted: unsafe extern "C" fn(task: *mut Task, status: Status),
    /// LU: a unit attention / capacity event for every nexus of the LU (informational to the core).
    pub lu_changed: unsafe extern "C" fn(lu: LuHandle),
    /// Who is behind a session: fills `out` (strings valid while the session is registered).
    pub session_info:
        unsafe extern "C" fn(session: SessionHandle, out: *mut SessionInfoRaw) -> Status,
    /// Takes one more reference on `task`. The caller holds a reference already or is inside
    /// a call the core made for the task.
    pub task_hold: unsafe extern "C" fn(task: *mut Task),
    /// Gives back one reference. The memory of a dead task is freed (returned to the core's
    /// pool) with its last reference; the core never calls a provider from here.
    pub task_rele: unsafe extern "C" fn(task: *mut Task),
    /// Port: give up a task from `task_alloc` without posting it, consuming the reference
    /// `post_task` would have taken. The core ends the task (the port's `task_free` follows,
    /// possibly before this returns).
    pub task_abandon: unsafe extern "C" fn(task: *mut Task),
}

/// Identity of a session's I_T nexus ([`HostApi::session_info`]).
#[repr(C)]
pub struct SessionInfoRaw {
    /// Initiator port name (iSCSI: `iqn...,i,0x<ISID>`).
    pub initiator: RStr,
    /// SPC TransportID of the initiator port (may be empty).
    pub transport_id: RStr,
    /// Target port name (e.g. the target IQN).
    pub target: RStr,
    /// Relative target port identifier.
    pub relative_port_id: u16,
    /// Reserved, zero.
    pub reserved: [u16; 3],
    /// Core-assigned session id (unique in the process).
    pub id: u64,
}

/// What a provider library exports through [`ROOT_SYMBOL`].
#[repr(C)]
pub struct ProviderRoot {
    /// [`ROOT_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`] the provider was built with.
    pub abi_version: u32,
    /// `size_of::<ProviderRoot>()` in the provider's build.
    pub root_size: u32,
    /// [`ProviderKind`].
    pub kind: ProviderKind,
    /// Reserved, zero.
    pub reserved0: u32,
    /// Unique provider name (e.g. `"sbd"`, `"iscsit"`).
    pub name: RStr,
    /// Provider version (semver).
    pub version: RStr,
    /// One-line description.
    pub description: RStr,
    /// Layout fingerprints of every ABI type, as compiled into the provider.
    pub layouts: *const crate::layout::LayoutEntry,
    /// Number of entries in `layouts`.
    pub layouts_len: usize,
    /// Create the provider instance with its saved configuration (JSON, possibly empty).
    /// On failure write a message with `host.reply(err_sink, ..)` and return non-SUCCESS.
    pub create: unsafe extern "C" fn(
        host: *const HostApi,
        token: ProviderToken,
        config: RStr,
        out: *mut *mut c_void,
        err_sink: *mut c_void,
    ) -> Status,
    /// Destroy the instance. The provider deregisters its objects here; the core then
    /// releases any it left registered and unloads the library.
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
    /// A management request (JSON); write the JSON reply to `sink`. Non-SUCCESS means the
    /// reply is an error message.
    pub control:
        unsafe extern "C" fn(instance: *mut c_void, request: RStr, sink: *mut c_void) -> Status,
    /// Write the provider's configuration (JSON) to `sink`, to be given back to `create`.
    pub save_config: unsafe extern "C" fn(instance: *mut c_void, sink: *mut c_void) -> Status,
}

// SAFETY: the root is immutable static data describing the library.
unsafe impl Sync for ProviderRoot {}
