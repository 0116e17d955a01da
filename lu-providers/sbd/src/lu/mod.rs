//! One sbd logical unit: how a command is checked, planned and carried out.
//!
//! # Where code runs
//!
//! * `new_task` (the port's thread): decode the CDB, check unit attentions and
//!   reservations, validate every field and LBA, and *plan* the command into the task's
//!   context ([`ctx::Op`]). Commands that need no I/O (INQUIRY, MODE SENSE, PR IN, ...)
//!   build their reply here. Nothing is read or written on a bad CDB.
//! * Workers ([`crate::pool`]): every pread/pwrite, fdatasync, hole punch and metadata
//!   write. A READ's buffer is given to pread and then to the port; a WRITE's buffer comes
//!   from the port and is given to pwrite: one copy, by the kernel.
//! * `dbuf_xfer_done` (the port's thread): hand the buffer to a worker or to the next
//!   transfer.
//!
//! Up to `max_nbufs` buffers of one READ or WRITE are in flight at once; status goes out
//! when the last one is retired ([`ctx`] explains the state word that keeps this and aborts
//! race-free).

mod ctx;
mod data;
mod exec;
mod sanitize;
mod xcopy;

pub(crate) use ctx::{Fin, Op, TaskCtx};
pub(crate) use exec::Exec;

use crate::backing::Backing;
use crate::meta::LuMeta;
use crate::pool::Pool;
use crate::pr::{Access, Nexus, PrState};
use crate::rangelock::RangeLock;
use crate::scsi::inquiry::{self, Identity};
use crate::scsi::mode::{self, ModeValues};
use crate::scsi::{log, opcodes, Geometry};
use crate::Guid;
use plugins_sdk::abi::io_flags;
use plugins_sdk::scsi::{
    service_action, Asc, Cdb, CdbError, Inquiry, LogSense, ModeSelect, ModeSense, OpCode, PrIn,
    PrOut, ReadCapacity, ReceiveCopyResults, ReportSupportedOpcodes, RequestSense, Rw, RwKind,
    ScsiStatus, Sense, SenseFormat, SenseKey, StartStopUnit, Unmap,
};
use plugins_sdk::{AbortOutcome, DataBuf, Host, Lu, LuEvent, SessionHandle, Status, TaskHandle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};

/// Largest data transfer of one command (VPD B0h MAXIMUM TRANSFER LENGTH).
pub(crate) const MAX_XFER_BYTES: u64 = 32 << 20;
/// MAXIMUM COMPARE AND WRITE LENGTH in blocks.
pub(crate) const MAX_CAW_BLOCKS: u8 = 255;
/// MAXIMUM UNMAP LBA COUNT, in bytes (one UNMAP descriptor or WRITE SAME with UNMAP).
pub(crate) const MAX_UNMAP_BYTES: u64 = 2 << 30;
/// ... and in blocks at most 2^20: initiators (libiscsi's conformance suite among them)
/// treat larger explicit limits as bogus; 0xFFFFFFFF would mean "no limit".
const MAX_UNMAP_BLOCKS: u64 = 1 << 20;

/// MAXIMUM UNMAP LBA COUNT for a block size (what VPD B0h reports and UNMAP enforces).
pub(crate) const fn max_unmap_blocks(block_size: u64) -> u64 {
    let by_bytes = MAX_UNMAP_BYTES / block_size;
    if by_bytes < MAX_UNMAP_BLOCKS {
        by_bytes
    } else {
        MAX_UNMAP_BLOCKS
    }
}
/// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
pub(crate) const MAX_UNMAP_DESCRIPTORS: usize = 256;
/// MAXIMUM WRITE SAME LENGTH, in bytes.
pub(crate) const MAX_WRITE_SAME_BYTES: u64 = 1 << 30;
/// Largest parameter list accepted (PR OUT, EXTENDED COPY, ...).
const PARAM_MAX: u32 = 1 << 20;
/// Buffer size asked of the port for bulk data; ports may give less.
const CHUNK: u32 = 1 << 20;

/// A unit attention condition pending for a nexus (bits, in reporting priority order).
mod ua {
    pub const POWER_ON: u32 = 1 << 0;
    pub const LUN_RESET: u32 = 1 << 1;
    pub const NEXUS_LOSS: u32 = 1 << 2;
    pub const RES_PREEMPTED: u32 = 1 << 3;
    pub const RES_RELEASED: u32 = 1 << 4;
    pub const REG_PREEMPTED: u32 = 1 << 5;
    pub const MODE_CHANGED: u32 = 1 << 6;
    pub const CAPACITY_CHANGED: u32 = 1 << 7;
    pub const INQUIRY_CHANGED: u32 = 1 << 8;
    /// The reset family, reported before the reservation check.
    pub const RESETS: u32 = POWER_ON | LUN_RESET | NEXUS_LOSS;
}

fn ua_asc(bit: u32) -> Asc {
    match bit {
        ua::POWER_ON => Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED,
        ua::LUN_RESET => Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED,
        ua::NEXUS_LOSS => Asc::I_T_NEXUS_LOSS_OCCURRED,
        ua::RES_PREEMPTED => Asc::RESERVATIONS_PREEMPTED,
        ua::RES_RELEASED => Asc::RESERVATIONS_RELEASED,
        ua::REG_PREEMPTED => Asc::REGISTRATIONS_PREEMPTED,
        ua::MODE_CHANGED => Asc::MODE_PARAMETERS_CHANGED,
        ua::CAPACITY_CHANGED => Asc::CAPACITY_DATA_HAS_CHANGED,
        _ => Asc::INQUIRY_DATA_HAS_CHANGED,
    }
}

/// Per-I_T nexus state of the LU.
struct NexusState {
    id: Nexus,
    ua: u32,
}

impl NexusState {
    /// Takes the highest-priority pending UA among `mask`.
    fn take_ua(&mut self, mask: u32) -> Option<Sense> {
        let pending = self.ua & mask;
        if pending == 0 {
            return None;
        }
        let bit = pending & pending.wrapping_neg();
        self.ua &= !bit;
        // A reset supersedes the lesser conditions it implies.
        if bit & ua::RESETS != 0 {
            self.ua &= !ua::RESETS;
        }
        Some(Sense::unit_attention(ua_asc(bit)))
    }
}

/// The identity of the I_T nexus behind `session`, as the core knows it: the initiator
/// port (its TransportID's name, else its port name) and the relative target port. `None`
/// once the session is gone.
fn nexus_of(host: &Host, session: SessionHandle) -> Option<Nexus> {
    let d = host.session_info(session)?;
    Some(Nexus {
        initiator: crate::pr::initiator_identity(&d.initiator, &d.transport_id),
        rtpi: d.relative_port_id,
    })
}

/// The name of a nexus whose session the core no longer knows (a command racing its end):
/// it matches no registration and is never cached.
fn orphan_nexus(session: SessionHandle) -> Nexus {
    Nexus {
        initiator: format!("rstmf.session:{:x}", session.0 as usize),
        rtpi: 0,
    }
}

/// Registered LUs of one provider instance, by GUID (EXTENDED COPY between LUs).
#[derive(Default)]
pub(crate) struct Registry {
    lus: RwLock<HashMap<Guid, Weak<SbdLu>>>,
}

impl Registry {
    pub(crate) fn insert(&self, lu: &Arc<SbdLu>) {
        self.lus
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(lu.guid, Arc::downgrade(lu));
    }

    pub(crate) fn remove(&self, guid: &Guid) {
        self.lus
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(guid);
    }

    pub(crate) fn get(&self, guid: &Guid) -> Option<Arc<SbdLu>> {
        self.lus
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(guid)
            .and_then(Weak::upgrade)
    }
}

/// Work for the I/O pool.
pub(crate) enum Job {
    /// A step of a task.
    Task {
        lu: Arc<SbdLu>,
        /// The LU's own handle, for the worker.
        task: TaskHandle,
        work: Work,
    },
    /// SYNCHRONIZE CACHE with IMMED: status is gone already.
    Flush { lu: Arc<SbdLu> },
    /// A sanitize operation (its command's status is gone already, or waits for it).
    Sanitize {
        lu: Arc<SbdLu>,
        method: sanitize::Method,
        ause: bool,
    },
}

/// The step of a task a worker runs.
pub(crate) enum Work {
    /// Fill the buffer from the store and send it.
    Read(DataBuf),
    /// Store (or compare) the data of the buffer, then ask for more.
    Out(DataBuf),
    /// Run the planned [`Exec`].
    Exec,
}

impl crate::pool::Job for Job {
    fn run(self) {
        match self {
            Job::Task { lu, task, work } => lu.run(&task, work),
            Job::Flush { lu } => {
                if let Err(e) = lu.store.flush() {
                    tracing::error!(guid = %crate::guid::to_hex(&lu.guid), "SYNCHRONIZE CACHE (IMMED) failed: {e}");
                }
            }
            Job::Sanitize { lu, method, ause } => lu.sanitize_run(&method, ause),
        }
    }
}

/// Current and saved mode values.
struct ModeState {
    current: ModeValues,
    saved: ModeValues,
}

/// An sbd LU.
pub struct SbdLu {
    me: Weak<SbdLu>,
    pub(crate) guid: Guid,
    host: Host,
    pool: Arc<Pool<Job>>,
    registry: Arc<Registry>,
    pub(crate) store: Box<dyn Backing>,
    pub(crate) meta_path: Option<PathBuf>,
    meta: Mutex<LuMeta>,
    ident: RwLock<Identity>,
    block_size: u32,
    shift: u32,
    blocks: AtomicU64,
    wp: AtomicBool,
    mode: Mutex<ModeState>,
    wce: AtomicBool,
    d_sense: AtomicBool,
    swp: AtomicBool,
    nexus: Mutex<HashMap<usize, NexusState>>,
    pr: Mutex<PrState>,
    pr_active: AtomicBool,
    pub(crate) ranges: RangeLock,
    /// Free task contexts. Boxed: a context's address lives in `Task::lu_private`.
    #[allow(clippy::vec_box)]
    ctxs: Mutex<Vec<Box<TaskCtx>>>,
    stopped: AtomicBool,
    sanitize: sanitize::Sanitize,
    copies: Mutex<xcopy::CopyLog>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn identity_of(m: &LuMeta, guid: Guid) -> Identity {
    Identity {
        guid,
        vid: inquiry::padded(&m.vid),
        pid: inquiry::padded(&m.pid),
        rev: inquiry::padded(&m.revision),
        serial: m.serial.clone(),
        mgmt_url: m.mgmt_url.clone(),
    }
}

fn invalid_field(byte: u16, bit: Option<u8>) -> Fin {
    Fin::Check(Sense::invalid_field_in_cdb(byte, bit))
}

fn cdb_err(e: CdbError) -> Fin {
    Fin::Check(e.to_sense())
}

impl From<CdbError> for Fin {
    fn from(e: CdbError) -> Fin {
        cdb_err(e)
    }
}

/// Which reservation class a command belongs to (SPC-4 table 62).
fn access_class(cdb: &Cdb<'_>) -> Access {
    let sa = cdb.service_action().unwrap_or(0);
    match cdb.opcode() {
        OpCode::INQUIRY
        | OpCode::REQUEST_SENSE
        | OpCode::REPORT_LUNS
        | OpCode::READ_CAPACITY_10
        | OpCode::LOG_SENSE
        | OpCode::PERSISTENT_RESERVE_IN
        | OpCode::MAINTENANCE_IN
        | OpCode::TEST_UNIT_READY
        | OpCode::RECEIVE_COPY_RESULTS => Access::Always,
        OpCode::SERVICE_ACTION_IN_16 if sa == service_action::READ_CAPACITY_16 => Access::Always,
        OpCode::SERVICE_ACTION_IN_16 => Access::Read,
        OpCode::PERSISTENT_RESERVE_OUT => Access::PrOut,
        OpCode::RESERVE_6 | OpCode::RESERVE_10 => Access::Reserve,
        OpCode::RELEASE_6 | OpCode::RELEASE_10 => Access::Release,
        OpCode::READ_6
        | OpCode::READ_10
        | OpCode::READ_12
        | OpCode::READ_16
        | OpCode::VERIFY_10
        | OpCode::VERIFY_12
        | OpCode::VERIFY_16
        | OpCode::MODE_SENSE_6
        | OpCode::MODE_SENSE_10
        | OpCode::PRE_FETCH_10
        | OpCode::PRE_FETCH_16
        | OpCode::READ_DEFECT_DATA_10
        | OpCode::READ_DEFECT_DATA_12 => Access::Read,
        _ => Access::Write,
    }
}

/// Byte of the TRANSFER LENGTH (or equivalent) field of a block command.
fn length_field(rw: &Rw) -> u16 {
    match (rw.kind, rw.cdb_len) {
        (RwKind::CompareAndWrite, _) => 13,
        (_, 6) => 4,
        (_, 10) => 7,
        (_, 12) => 6,
        _ => 10,
    }
}

impl SbdLu {
    /// Builds an LU over `store` described by `meta` (already validated).
    pub(crate) fn new(
        host: Host,
        pool: Arc<Pool<Job>>,
        registry: Arc<Registry>,
        store: Box<dyn Backing>,
        meta: LuMeta,
        meta_path: Option<PathBuf>,
        guid: Guid,
    ) -> Arc<SbdLu> {
        let mode = ModeValues {
            wce: meta.write_cache,
            rcd: meta.mode.rcd,
            d_sense: meta.mode.d_sense,
            swp: meta.mode.swp,
            dexcpt: meta.mode.dexcpt,
            mrie: meta.mode.mrie,
        };
        let pr = meta.pr.clone().map(PrState::restore).unwrap_or_default();
        Arc::new_cyclic(|me| SbdLu {
            me: me.clone(),
            guid,
            host,
            pool,
            registry,
            ident: RwLock::new(identity_of(&meta, guid)),
            block_size: meta.block_size,
            shift: meta.block_size.trailing_zeros(),
            blocks: AtomicU64::new(meta.size / u64::from(meta.block_size)),
            wp: AtomicBool::new(meta.write_protect),
            wce: AtomicBool::new(mode.wce),
            d_sense: AtomicBool::new(mode.d_sense),
            swp: AtomicBool::new(mode.swp),
            mode: Mutex::new(ModeState {
                current: mode,
                saved: mode,
            }),
            nexus: Mutex::new(HashMap::new()),
            pr_active: AtomicBool::new(pr.any_reservation()),
            pr: Mutex::new(pr),
            ranges: RangeLock::default(),
            ctxs: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            sanitize: sanitize::Sanitize::default(),
            copies: Mutex::new(xcopy::CopyLog::default()),
            store,
            meta_path,
            meta: Mutex::new(meta),
        })
    }

    /// A copy of the metadata as it stands.
    pub(crate) fn meta(&self) -> LuMeta {
        lock(&self.meta).clone()
    }

    /// Capacity in blocks.
    pub(crate) fn blocks(&self) -> u64 {
        self.blocks.load(Ordering::Acquire)
    }

    pub(crate) fn block_size(&self) -> u32 {
        self.block_size
    }

    fn geometry(&self) -> Geometry {
        let caps = self.store.caps();
        let thin = lock(&self.meta).thin && caps.discard;
        let kind = self.store.kind();
        let rotation = if kind == crate::backing::BackingKind::Ram {
            1
        } else {
            0
        };
        // Only a block device has physical blocks; a file's file-system block is a
        // granularity (hole punching, alignment), not a physical block of the LU.
        let physical = if kind == crate::backing::BackingKind::Bdev {
            caps.granularity
        } else {
            u64::from(self.block_size)
        };
        let mut g = Geometry::new(
            self.block_size,
            self.blocks(),
            thin,
            caps.discard_zeroes,
            caps.granularity,
            physical,
            rotation,
        );
        g.block_erase = thin && caps.discard_zeroes;
        g
    }

    fn thin(&self) -> bool {
        lock(&self.meta).thin && self.store.caps().discard
    }

    /// Writes the metadata file (no-op for RAM LUs).
    pub(crate) fn persist(&self) -> Result<(), crate::meta::MetaError> {
        let m = lock(&self.meta).clone();
        match &self.meta_path {
            Some(p) => m.store(p),
            None => Ok(()),
        }
    }

    /// Applies `f` to the metadata and persists it.
    pub(crate) fn update_meta(
        &self,
        f: impl FnOnce(&mut LuMeta),
    ) -> Result<(), crate::meta::MetaError> {
        f(&mut lock(&self.meta));
        self.persist()
    }

    /// Raises `bit` on every nexus (except `except`).
    fn raise_ua(&self, bit: u32, except: Option<usize>) {
        for (k, n) in lock(&self.nexus).iter_mut() {
            if Some(*k) != except {
                n.ua |= bit;
            }
        }
    }

    /// modify-lu: grows the LU to `size` bytes online (CAPACITY DATA HAS CHANGED).
    pub(crate) fn grow(&self, size: u64) -> Result<(), String> {
        let bs = u64::from(self.block_size);
        let size = size / bs * bs;
        let cur = self.blocks() * bs;
        if size < cur {
            return Err(format!("cannot shrink an LU ({cur} bytes) to {size} bytes"));
        }
        if size == cur {
            return Ok(());
        }
        self.store
            .grow(size)
            .map_err(|e| format!("growing the backing store: {e}"))?;
        self.update_meta(|m| m.size = size)
            .map_err(|e| e.to_string())?;
        self.blocks.store(size / bs, Ordering::Release);
        self.raise_ua(ua::CAPACITY_CHANGED, None);
        Ok(())
    }

    /// modify-lu of the properties that change the LU while it runs.
    pub(crate) fn set_props(
        &self,
        alias: Option<String>,
        mgmt_url: Option<String>,
        wcd: Option<bool>,
        wp: Option<bool>,
    ) -> Result<(), String> {
        let mut inquiry_changed = false;
        let mut mode_changed = false;
        self.update_meta(|m| {
            if let Some(a) = alias {
                m.alias = a;
            }
            if let Some(u) = mgmt_url {
                inquiry_changed |= u != m.mgmt_url;
                m.mgmt_url = u;
            }
            if let Some(wcd) = wcd {
                mode_changed |= m.write_cache == wcd;
                m.write_cache = !wcd;
            }
            if let Some(wp) = wp {
                m.write_protect = wp;
            }
        })
        .map_err(|e| e.to_string())?;
        let m = self.meta();
        *self.ident.write().unwrap_or_else(PoisonError::into_inner) = identity_of(&m, self.guid);
        self.wp.store(m.write_protect, Ordering::Release);
        if mode_changed {
            let mut ms = lock(&self.mode);
            ms.current.wce = m.write_cache;
            ms.saved.wce = m.write_cache;
            self.wce.store(m.write_cache, Ordering::Release);
            drop(ms);
            self.raise_ua(ua::MODE_CHANGED, None);
        }
        if inquiry_changed {
            self.raise_ua(ua::INQUIRY_CHANGED, None);
        }
        Ok(())
    }

    /// PR state summary for list-lu.
    pub(crate) fn pr_summary(&self) -> serde_json::Value {
        let pr = lock(&self.pr);
        serde_json::json!({
            "generation": pr.saved().map(|s| s.generation),
            "aptpl": pr.aptpl(),
            "registrations": pr.registrations().len(),
            "reserved": pr.reservation().is_some(),
        })
    }

    // ---- the context free list ------------------------------------------------------------

    fn ctx_alloc(&self) -> Box<TaskCtx> {
        let mut c = lock(&self.ctxs)
            .pop()
            .unwrap_or_else(|| Box::new(TaskCtx::new()));
        c.reset();
        c
    }

    fn ctx_of(task: &TaskHandle) -> Option<&'static TaskCtx> {
        let p = task.lu_private() as *const TaskCtx;
        // SAFETY: lu_private holds a Box<TaskCtx> from new_task until task_free takes it back;
        // callers only use the reference while the task is alive and they are counted busy
        // (see ctx.rs), so it cannot be freed under them. The 'static is a lie bounded by
        // that protocol; the reference never escapes the entry point or job.
        unsafe { p.as_ref() }
    }

    /// Leaves the task and does what the state word says (send status / report abort).
    pub(crate) fn leave(&self, task: &TaskHandle, ctx: &TaskCtx) {
        match ctx.leave() {
            ctx::Exit::Stay => {}
            ctx::Exit::Send(fin) => self.send(task, fin),
            ctx::Exit::Aborted => self.host.lu_aborted(task, Status::ABORTED),
        }
    }

    fn sense_format(&self) -> SenseFormat {
        SenseFormat::from_d_sense(self.d_sense.load(Ordering::Relaxed))
    }

    fn send(&self, task: &TaskHandle, fin: Fin) {
        let (status, sense) = match fin {
            Fin::Good => (ScsiStatus::GOOD, None),
            Fin::Check(s) => (
                ScsiStatus::CHECK_CONDITION,
                Some(s.encode(self.sense_format())),
            ),
            Fin::Conflict => (ScsiStatus::RESERVATION_CONFLICT, None),
            Fin::Busy => (ScsiStatus::BUSY, None),
        };
        let bytes: &[u8] = sense.as_ref().map_or(&[], |s| s.as_slice());
        self.host
            .send_status(task, status.0, bytes, io_flags::LU_DONE);
    }

    // ---- checks ---------------------------------------------------------------------------

    fn media_ready(&self) -> Result<(), Fin> {
        self.sanitize_medium()?;
        if self.stopped.load(Ordering::Acquire) {
            return Err(Fin::Check(Sense::not_ready(
                Asc::LU_NOT_READY_INITIALIZING_COMMAND_REQUIRED,
            )));
        }
        Ok(())
    }

    fn writable(&self) -> Result<(), Fin> {
        if self.wp.load(Ordering::Acquire) {
            return Err(Fin::Check(Sense::new(
                SenseKey::DATA_PROTECT,
                Asc::WRITE_PROTECTED,
            )));
        }
        if self.swp.load(Ordering::Acquire) {
            return Err(Fin::Check(Sense::new(
                SenseKey::DATA_PROTECT,
                Asc::LU_SOFTWARE_WRITE_PROTECTED,
            )));
        }
        Ok(())
    }

    /// Unit attentions and reservation conflicts, in SAM-5 order.
    ///
    /// A nexus' identity is asked of the core on its first command and cached until
    /// `ITL_REMOVED` (the core's lock is not taken under ours).
    fn check_nexus(&self, session: SessionHandle, cdb: &Cdb<'_>) -> Result<(), Fin> {
        let op = cdb.opcode();
        let reports_ua = op != OpCode::INQUIRY && op != OpCode::REQUEST_SENSE;
        let key = session.0 as usize;
        let mut map = lock(&self.nexus);
        if !map.contains_key(&key) {
            drop(map);
            let id = nexus_of(&self.host, session);
            map = lock(&self.nexus);
            if let Some(id) = id {
                map.entry(key).or_insert(NexusState {
                    id,
                    ua: ua::POWER_ON,
                });
            }
        }
        let mut orphan = NexusState {
            id: orphan_nexus(session),
            ua: 0,
        };
        let st = map.get_mut(&key).unwrap_or(&mut orphan);
        if reports_ua {
            if let Some(s) = st.take_ua(ua::RESETS) {
                return Err(Fin::Check(s));
            }
        }
        if self.pr_active.load(Ordering::Acquire)
            && lock(&self.pr).conflicts(&st.id, access_class(cdb))
        {
            return Err(Fin::Conflict);
        }
        if reports_ua {
            if let Some(s) = st.take_ua(u32::MAX) {
                return Err(Fin::Check(s));
            }
        }
        Ok(())
    }

    /// The nexus' identity (cached by [`SbdLu::check_nexus`], which every command passes).
    fn nexus_id(&self, session: SessionHandle) -> Nexus {
        let cached = lock(&self.nexus)
            .get(&(session.0 as usize))
            .map(|n| n.id.clone());
        cached
            .or_else(|| nexus_of(&self.host, session))
            .unwrap_or_else(|| orphan_nexus(session))
    }

    // ---- planning -------------------------------------------------------------------------

    /// Sets up a data-in reply of the first `alloc_len` bytes of the scratch buffer.
    fn reply(task: &TaskHandle, ctx: &mut TaskCtx, alloc_len: u32) {
        let n = (ctx
            .scratch
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64)
            .min(u64::from(alloc_len));
        task.set_cmd_xfer_len(n);
        *ctx.total.get_mut() = n.min(task.expected_xfer_len());
        ctx.op = Op::DataIn;
    }

    /// Sets up a data-out collection of `len` bytes into scratch, then `exec`.
    fn gather(task: &TaskHandle, ctx: &mut TaskCtx, len: u64, exec: Exec) {
        task.set_cmd_xfer_len(len);
        *ctx.total.get_mut() = len.min(task.expected_xfer_len());
        ctx.op = Op::Gather(exec);
    }

    /// Decides what the command does; errors end it with that status, touching nothing.
    fn plan(&self, task: &TaskHandle, ctx: &mut TaskCtx) -> Result<(), Fin> {
        let cdb = Cdb::parse(task.cdb())?;
        cdb.check_control(false)?;
        self.check_nexus(task.session(), &cdb)?;
        if !matches!(cdb.opcode(), OpCode::INQUIRY | OpCode::REQUEST_SENSE) {
            self.sanitize_busy()?;
        }
        let scratch = ctx
            .scratch
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        match cdb.opcode() {
            OpCode::TEST_UNIT_READY => self.media_ready(),
            OpCode::INQUIRY => {
                let q = Inquiry::decode(&cdb)?;
                let id = self.ident.read().unwrap_or_else(PoisonError::into_inner);
                if q.evpd {
                    inquiry::vpd(q.page_code, &id, &self.geometry(), scratch)
                        .ok_or(invalid_field(2, Some(7)))?;
                } else {
                    inquiry::standard(&id, scratch);
                }
                drop(id);
                Self::reply(task, ctx, u32::from(q.alloc_len));
                Ok(())
            }
            OpCode::REQUEST_SENSE => {
                let r = RequestSense::decode(&cdb)?;
                let pending = lock(&self.nexus)
                    .get_mut(&(task.session().0 as usize))
                    .and_then(|n| n.take_ua(u32::MAX));
                let sense = pending
                    .or_else(|| {
                        self.media_ready().err().and_then(|f| {
                            if let Fin::Check(s) = f {
                                Some(s)
                            } else {
                                None
                            }
                        })
                    })
                    .unwrap_or(Sense::new(SenseKey::NO_SENSE, Asc::NO_ADDITIONAL_SENSE));
                let format = if r.desc {
                    SenseFormat::Descriptor
                } else {
                    SenseFormat::Fixed
                };
                scratch.clear();
                scratch.extend_from_slice(&sense.encode(format));
                Self::reply(task, ctx, u32::from(r.alloc_len));
                Ok(())
            }
            OpCode::READ_CAPACITY_10 => {
                ReadCapacity::decode(&cdb)?;
                inquiry::read_capacity_10(&self.geometry(), scratch);
                Self::reply(task, ctx, 8);
                Ok(())
            }
            OpCode::SERVICE_ACTION_IN_16 => match cdb.service_action() {
                Some(service_action::READ_CAPACITY_16) => {
                    let r = ReadCapacity::decode(&cdb)?;
                    inquiry::read_capacity_16(&self.geometry(), scratch);
                    Self::reply(task, ctx, r.alloc_len);
                    Ok(())
                }
                Some(service_action::GET_LBA_STATUS) => {
                    let g = plugins_sdk::scsi::GetLbaStatus::decode(&cdb)?;
                    self.media_ready()?;
                    if g.lba >= self.blocks() {
                        return Err(Fin::Check(Sense::lba_out_of_range()));
                    }
                    task.set_cmd_xfer_len(u64::from(g.alloc_len));
                    ctx.op = Op::Exec(Exec::GetLbaStatus {
                        lba: g.lba,
                        alloc_len: g.alloc_len,
                    });
                    Ok(())
                }
                _ => Err(cdb.invalid_service_action().into()),
            },
            OpCode::MODE_SENSE_6 | OpCode::MODE_SENSE_10 => {
                let m = ModeSense::decode(&cdb)?;
                let ms = lock(&self.mode);
                let wp = self.wp.load(Ordering::Relaxed) || ms.current.swp;
                mode::sense(&m, &ms.current, &ms.saved, &self.geometry(), wp, scratch)?;
                drop(ms);
                Self::reply(task, ctx, u32::from(m.alloc_len));
                Ok(())
            }
            OpCode::MODE_SELECT_6 | OpCode::MODE_SELECT_10 => {
                let m = ModeSelect::decode(&cdb)?;
                if !m.pf {
                    return Err(invalid_field(1, Some(4)));
                }
                if m.param_len == 0 {
                    return Ok(());
                }
                Self::gather(
                    task,
                    ctx,
                    u64::from(m.param_len),
                    Exec::ModeSelect {
                        cdb_len: m.cdb_len,
                        sp: m.sp,
                    },
                );
                Ok(())
            }
            OpCode::LOG_SENSE => {
                let l = LogSense::decode(&cdb)?;
                let thin = self.thin().then(|| {
                    let used = self.store.allocated().unwrap_or(0) >> self.shift;
                    log::Provisioning {
                        used,
                        available: self.blocks().saturating_sub(used),
                    }
                });
                log::sense(&l, thin, scratch)?;
                Self::reply(task, ctx, u32::from(l.alloc_len));
                Ok(())
            }
            OpCode::MAINTENANCE_IN => match cdb.service_action() {
                Some(service_action::REPORT_SUPPORTED_OPERATION_CODES) => {
                    let r = ReportSupportedOpcodes::decode(&cdb)?;
                    let (thin, erase) = (self.thin(), self.block_erase_supported());
                    opcodes::report(
                        &r,
                        |c| match (c.opcode, c.sa) {
                            (0x42, _) => thin,
                            (0x48, Some(sa)) => sa != service_action::SANITIZE_BLOCK_ERASE || erase,
                            _ => true,
                        },
                        scratch,
                    )?;
                    Self::reply(task, ctx, r.alloc_len);
                    Ok(())
                }
                Some(service_action::REPORT_TARGET_PORT_GROUPS) => {
                    let ext = cdb.as_bytes()[1] >> 5;
                    if ext > 1 {
                        return Err(invalid_field(1, Some(7)));
                    }
                    scratch.clear();
                    scratch.extend_from_slice(&[0; 4]);
                    if ext == 1 {
                        scratch.extend_from_slice(&[0x10, 0, 0, 0]);
                    }
                    // One group, active/optimized, supporting only that state; the target
                    // ports in it are the core's to know (no relative port ids yet).
                    scratch.extend_from_slice(&[0x80, 0x01]);
                    scratch.extend_from_slice(&inquiry::TARGET_PORT_GROUP.to_be_bytes());
                    scratch.extend_from_slice(&[0, 0, 0, 0]);
                    let n = (scratch.len() - 4) as u32;
                    scratch[..4].copy_from_slice(&n.to_be_bytes());
                    let alloc = cdb.allocation_length().unwrap_or(0);
                    Self::reply(task, ctx, alloc);
                    Ok(())
                }
                _ => Err(cdb.invalid_service_action().into()),
            },
            OpCode::START_STOP_UNIT => {
                let s = StartStopUnit::decode(&cdb)?;
                if s.loej {
                    return Err(invalid_field(4, Some(1)));
                }
                if s.power_condition > 3 {
                    return Err(invalid_field(4, Some(7)));
                }
                if s.power_condition != 0 {
                    return Ok(());
                }
                ctx.op = Op::Exec(Exec::StartStop {
                    start: s.start,
                    flush: !s.no_flush,
                });
                Ok(())
            }
            OpCode::SYNCHRONIZE_CACHE_10
            | OpCode::SYNCHRONIZE_CACHE_16
            | OpCode::PRE_FETCH_10
            | OpCode::PRE_FETCH_16
            | OpCode::READ_6
            | OpCode::READ_10
            | OpCode::READ_12
            | OpCode::READ_16
            | OpCode::WRITE_6
            | OpCode::WRITE_10
            | OpCode::WRITE_12
            | OpCode::WRITE_16
            | OpCode::VERIFY_10
            | OpCode::VERIFY_12
            | OpCode::VERIFY_16
            | OpCode::WRITE_AND_VERIFY_10
            | OpCode::WRITE_AND_VERIFY_12
            | OpCode::WRITE_AND_VERIFY_16
            | OpCode::ORWRITE_16
            | OpCode::WRITE_SAME_10
            | OpCode::WRITE_SAME_16
            | OpCode::COMPARE_AND_WRITE => self.plan_block(task, ctx, &cdb),
            OpCode::UNMAP => {
                let u = Unmap::decode(&cdb)?;
                if !self.thin() {
                    return Err(Fin::Check(Sense::invalid_opcode()));
                }
                if u.anchor {
                    return Err(invalid_field(1, Some(0)));
                }
                self.media_ready()?;
                self.writable()?;
                match u.param_len {
                    0 => Ok(()),
                    1..=7 => Err(Fin::Check(Sense::illegal_request(
                        Asc::PARAMETER_LIST_LENGTH_ERROR,
                    ))),
                    n => {
                        Self::gather(task, ctx, u64::from(n), Exec::Unmap);
                        Ok(())
                    }
                }
            }
            OpCode::RESERVE_6 | OpCode::RESERVE_10 | OpCode::RELEASE_6 | OpCode::RELEASE_10 => {
                let b1 = cdb.as_bytes().get(1).copied().unwrap_or(0);
                if b1 & 0x13 != 0 {
                    // Extents, third-party and long ids are not supported.
                    let bit = if b1 & 0x10 != 0 {
                        4
                    } else if b1 & 0x02 != 0 {
                        1
                    } else {
                        0
                    };
                    return Err(invalid_field(1, Some(bit)));
                }
                let n = self.nexus_id(task.session());
                let mut pr = lock(&self.pr);
                let r = if matches!(cdb.opcode(), OpCode::RESERVE_6 | OpCode::RESERVE_10) {
                    pr.reserve_scsi2(&n)
                } else {
                    pr.release_scsi2(&n)
                };
                self.pr_active
                    .store(pr.any_reservation(), Ordering::Release);
                r.map_err(pr_fin)
            }
            OpCode::PERSISTENT_RESERVE_IN => {
                let p = PrIn::decode(&cdb)?;
                lock(&self.pr)
                    .pr_in(p.service_action, scratch)
                    .map_err(pr_fin)?;
                Self::reply(task, ctx, u32::from(p.alloc_len));
                Ok(())
            }
            OpCode::PERSISTENT_RESERVE_OUT => {
                let p = PrOut::decode(&cdb)?;
                if u16::from(p.service_action) > service_action::PR_OUT_REGISTER_AND_MOVE {
                    return Err(cdb.invalid_service_action().into());
                }
                if p.param_len > PARAM_MAX {
                    return Err(invalid_field(5, None));
                }
                let pcdb = crate::pr::PrOutCdb {
                    sa: p.service_action,
                    scope: p.scope,
                    pr_type: p.pr_type,
                };
                Self::gather(task, ctx, u64::from(p.param_len), Exec::PrOut(pcdb));
                Ok(())
            }
            OpCode::EXTENDED_COPY => {
                if cdb.service_action() != Some(service_action::EXTENDED_COPY_LID1) {
                    return Err(cdb.invalid_service_action().into());
                }
                let len = cdb.parameter_list_length().unwrap_or(0);
                if len > PARAM_MAX {
                    return Err(invalid_field(10, None));
                }
                self.media_ready()?;
                if len == 0 {
                    return Ok(());
                }
                Self::gather(task, ctx, u64::from(len), Exec::Xcopy);
                Ok(())
            }
            OpCode::RECEIVE_COPY_RESULTS => {
                let r = ReceiveCopyResults::decode(&cdb)?;
                match u16::from(r.service_action) {
                    service_action::RECEIVE_COPY_STATUS_LID1 => lock(&self.copies).status(
                        task.session().0 as usize,
                        r.list_id as u8,
                        scratch,
                    )?,
                    service_action::RECEIVE_COPY_OPERATING_PARAMETERS => {
                        xcopy::operating_parameters(scratch)
                    }
                    _ => return Err(cdb.invalid_service_action().into()),
                }
                Self::reply(task, ctx, r.alloc_len);
                Ok(())
            }
            OpCode::READ_DEFECT_DATA_10 | OpCode::READ_DEFECT_DATA_12 => {
                let twelve = cdb.opcode() == OpCode::READ_DEFECT_DATA_12;
                let at = if twelve { 1 } else { 2 };
                let flags = cdb.as_bytes()[at];
                if flags & 0xE0 != 0 {
                    return Err(invalid_field(at as u16, Some(7)));
                }
                crate::scsi::defect::header(twelve, flags, scratch)
                    .ok_or(invalid_field(at as u16, Some(2)))?;
                let alloc = cdb.allocation_length().unwrap_or(0);
                Self::reply(task, ctx, alloc);
                Ok(())
            }
            OpCode::SANITIZE => match self.plan_sanitize(&cdb)? {
                None => Ok(()),
                Some((0, exec)) => {
                    ctx.op = Op::Exec(exec);
                    Ok(())
                }
                Some((len, exec)) => {
                    Self::gather(task, ctx, u64::from(len), exec);
                    Ok(())
                }
            },
            other => Err(Fin::Check(
                CdbError::InvalidOpcode { opcode: other.0 }.to_sense(),
            )),
        }
    }

    /// Plans the block commands (SBC-3 §5).
    fn plan_block(&self, task: &TaskHandle, ctx: &mut TaskCtx, cdb: &Cdb<'_>) -> Result<(), Fin> {
        let rw = Rw::decode(cdb)?;
        rw.check_no_protection()?;
        let bs = u64::from(self.block_size);
        if rw.kind == RwKind::WriteSame && rw.anchor {
            return Err(invalid_field(1, Some(4)));
        }
        let expected = task.expected_xfer_len();
        if rw.kind == RwKind::CompareAndWrite {
            if rw.blocks > u32::from(MAX_CAW_BLOCKS) {
                return Err(invalid_field(13, None));
            }
            // The Data-Out buffer is exactly the verify instance and the write instance:
            // a buffer of another size means NUMBER OF LOGICAL BLOCKS is not what the
            // initiator meant (a count of 256 wraps to 0 in its one byte). Refused before
            // any data moves, as Linux's target does.
            if expected != rw.data_blocks() * bs {
                return Err(invalid_field(13, None));
            }
        } else if rw.data_blocks() * bs > MAX_XFER_BYTES && rw.kind != RwKind::WriteSame {
            return Err(invalid_field(length_field(&rw), None));
        }
        let range = rw.lba_range(self.blocks())?;
        let n = range.end - range.start;
        if rw.kind == RwKind::WriteSame && n * bs > MAX_WRITE_SAME_BYTES {
            return Err(invalid_field(length_field(&rw), None));
        }
        self.media_ready()?;
        if rw.kind.modifies_medium() {
            self.writable()?;
        }
        if rw.kind == RwKind::WriteSame && !rw.ndob && expected != bs {
            // WRITE SAME carries exactly one block; a longer or shorter Data-Out buffer is
            // a malformed command, not a residual to report (after the medium checks: a
            // write-protected LU answers DATA PROTECT whatever the command carries).
            return Err(Fin::Check(Sense::illegal_request(
                Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
            )));
        }
        let wce = self.wce.load(Ordering::Acquire);
        let durable = rw.fua || !wce;
        ctx.base = range.start << self.shift;
        let bytes = n << self.shift;
        match rw.kind {
            RwKind::Read => {
                task.set_cmd_xfer_len(bytes);
                *ctx.total.get_mut() = bytes.min(expected);
                ctx.op = Op::Read;
            }
            RwKind::Write | RwKind::WriteAndVerify => {
                task.set_cmd_xfer_len(bytes);
                *ctx.total.get_mut() = bytes.min(expected);
                ctx.op = Op::Write {
                    durable: durable || rw.kind == RwKind::WriteAndVerify,
                };
            }
            RwKind::OrWrite => {
                task.set_cmd_xfer_len(bytes);
                *ctx.total.get_mut() = bytes.min(expected);
                ctx.op = Op::OrWrite { durable };
            }
            RwKind::Verify => match rw.bytchk {
                0 => {}
                1 => {
                    task.set_cmd_xfer_len(bytes);
                    *ctx.total.get_mut() = bytes.min(expected);
                    ctx.op = Op::Verify;
                }
                _ => {
                    if n > 0 {
                        Self::gather(
                            task,
                            ctx,
                            bs,
                            Exec::VerifyEach {
                                lba: range.start,
                                blocks: n,
                            },
                        );
                    }
                }
            },
            RwKind::PreFetch => {
                ctx.op = Op::Exec(Exec::Prefetch {
                    lba: range.start,
                    blocks: n,
                })
            }
            RwKind::SynchronizeCache => ctx.op = Op::Exec(Exec::Sync { immed: rw.immed }),
            RwKind::WriteSame => {
                let ws = Exec::WriteSame {
                    lba: range.start,
                    blocks: n,
                    unmap: rw.unmap && self.thin(),
                    durable,
                };
                if rw.ndob {
                    ctx.op = Op::Exec(ws);
                } else {
                    Self::gather(task, ctx, bs, ws);
                }
            }
            RwKind::CompareAndWrite => {
                if n > 0 {
                    Self::gather(
                        task,
                        ctx,
                        2 * bytes,
                        Exec::CompareAndWrite {
                            lba: range.start,
                            blocks: n,
                            durable,
                        },
                    );
                }
            }
        }
        Ok(())
    }
}

fn pr_fin(e: crate::pr::PrError) -> Fin {
    match e {
        crate::pr::PrError::Conflict => Fin::Conflict,
        crate::pr::PrError::Check(s) => Fin::Check(s),
    }
}

impl Lu for SbdLu {
    fn new_task(&self, host: &Host, task: &TaskHandle, initial: Option<DataBuf>) {
        let Some(me) = self.me.upgrade() else {
            if let Some(b) = initial {
                host.dbuf_free(task, b);
            }
            let s = Sense::new(SenseKey::HARDWARE_ERROR, Asc::LOGICAL_UNIT_FAILURE)
                .encode(SenseFormat::Fixed);
            host.send_status(task, ScsiStatus::CHECK_CONDITION.0, &s, io_flags::LU_DONE);
            return;
        };
        let mut ctx = self.ctx_alloc();
        let planned = self.plan(task, &mut ctx);
        let ptr = Box::into_raw(ctx);
        task.set_lu_private(ptr.cast());
        // SAFETY: just leaked; owned by the task until task_free.
        let ctx: &TaskCtx = unsafe { &*ptr };
        match planned {
            Ok(()) => me.launch(task, ctx, initial),
            Err(fin) => {
                if let Some(b) = initial {
                    host.dbuf_free(task, b);
                }
                ctx.complete(fin);
            }
        }
        self.leave(task, ctx);
    }

    fn dbuf_xfer_done(&self, host: &Host, task: &TaskHandle, buf: DataBuf) {
        let (Some(me), Some(ctx)) = (self.me.upgrade(), Self::ctx_of(task)) else {
            host.dbuf_free(task, buf);
            return;
        };
        if !ctx.enter() {
            host.dbuf_free(task, buf);
            self.leave(task, ctx);
            return;
        }
        me.xfer_done(task, ctx, buf);
        self.leave(task, ctx);
    }

    fn abort(&self, _host: &Host, task: &TaskHandle) -> AbortOutcome {
        // A SANITIZE waiting for its operation: the command goes, the operation stays.
        self.sanitize_abort(task, || match Self::ctx_of(task) {
            None => AbortOutcome::Done,
            Some(ctx) if ctx.abort() => AbortOutcome::Done,
            Some(_) => AbortOutcome::Pending,
        })
    }

    fn task_free(&self, task: &TaskHandle) {
        let p = task.lu_private() as *mut TaskCtx;
        if p.is_null() {
            return;
        }
        task.set_lu_private(std::ptr::null_mut());
        // SAFETY: the Box leaked in new_task; the core frees a task once, after everyone let go.
        let ctx = unsafe { Box::from_raw(p) };
        lock(&self.ctxs).push(ctx);
    }

    fn event(&self, event: LuEvent, session: SessionHandle) {
        match event {
            LuEvent::RESET_STATE => {
                lock(&self.pr).reset();
                let mut ms = lock(&self.mode);
                ms.current = ms.saved;
                self.wce.store(ms.current.wce, Ordering::Release);
                self.d_sense.store(ms.current.d_sense, Ordering::Release);
                self.swp.store(ms.current.swp, Ordering::Release);
                drop(ms);
                self.pr_active
                    .store(lock(&self.pr).any_reservation(), Ordering::Release);
                self.raise_ua(ua::LUN_RESET, None);
            }
            LuEvent::ITL_REMOVED => {
                lock(&self.copies).forget(session.0 as usize);
                if let Some(n) = lock(&self.nexus).remove(&(session.0 as usize)) {
                    let mut pr = lock(&self.pr);
                    pr.nexus_lost(&n.id);
                    self.pr_active
                        .store(pr.any_reservation(), Ordering::Release);
                }
            }
            LuEvent::NEXUS_RESET => {
                let mut map = lock(&self.nexus);
                if let Some(n) = map.get_mut(&(session.0 as usize)) {
                    n.ua |= ua::NEXUS_LOSS;
                    let mut pr = lock(&self.pr);
                    pr.nexus_lost(&n.id);
                    self.pr_active
                        .store(pr.any_reservation(), Ordering::Release);
                }
            }
            _ => {}
        }
    }

    fn info(&self) -> String {
        crate::lu_info(self).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ua_priority_and_reset_supersedes() {
        let mut n = NexusState {
            id: Nexus {
                initiator: "i".into(),
                rtpi: 1,
            },
            ua: ua::POWER_ON | ua::LUN_RESET | ua::CAPACITY_CHANGED,
        };
        assert_eq!(
            n.take_ua(u32::MAX).map(|s| s.asc),
            Some(Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED)
        );
        assert_eq!(
            n.take_ua(u32::MAX).map(|s| s.asc),
            Some(Asc::CAPACITY_DATA_HAS_CHANGED)
        );
        assert_eq!(n.take_ua(u32::MAX), None);
        n.ua = ua::MODE_CHANGED;
        assert_eq!(
            n.take_ua(ua::RESETS),
            None,
            "only resets before the reservation check"
        );
    }

    #[test]
    fn every_rsoc_command_has_an_access_class_and_plans() {
        // Every opcode the RSOC table lists parses as a CDB of its length.
        for c in opcodes::COMMANDS {
            let mut b = c.usage.to_vec();
            b.iter_mut().skip(1).for_each(|x| *x = 0);
            if let Some(sa) = c.sa {
                b[1] = sa as u8;
            }
            let cdb = Cdb::parse(&b).expect("cdb");
            let _ = access_class(&cdb);
        }
    }
}
