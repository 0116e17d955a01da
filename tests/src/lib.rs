//! # rstmf-tests: an in-process test port and a harness that drives the core like an initiator
//!
//! Integration tests load real provider libraries (`target/<profile>/lib<name>.so`) into a
//! real [`Stmf`] core and talk to their LUs through the **test port**, a port provider linked
//! into the test binary and registered with [`Stmf::register_builtin_provider`]:
//!
//! * its buffers are plain heap memory, counted so a test can check none leaked;
//! * `xfer_data` completes at once, on the caller's thread: data-out is copied from the
//!   command's buffer, data-in is captured; a transfer outside the command's buffers is
//!   refused and recorded as a protocol violation;
//! * `send_status` captures status, sense, residual (and the TM response) into an
//!   [`Outcome`].
//!
//! ```no_run
//! use rstmf_tests::{cdb, Harness};
//! use stmf::Settings;
//!
//! let h = Harness::new(Settings::default());
//! h.load("example-ram-lu");
//! let guid = h.create_ram_lu(4, 512);
//! h.stmf().add_view(guid, None, None, Some(0)).unwrap();
//! let tgt = h.port("iqn.2025-01.test:tgt");
//! let s = tgt.session("iqn.2025-01.test:ini");
//! h.cmd(&s, 0, &cdb::test_unit_ready(), &[], 0).assert_good();
//! ```
//!
//! Libraries are loaded from a private copy per load (see [`Harness::load`]) so that every
//! core gets a fresh image of the library: `dlopen` returns the already-loaded image for a
//! path it has seen, with whatever state its statics hold.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod daemon;

use plugins_sdk::abi::{dbuf_flags, task_attr, task_flags, DataBufRaw, ProviderRoot};
use plugins_sdk::scsi::{Lun, Sense};
use plugins_sdk::{
    AbortOutcome, CtlCmd, DataBuf, Host, LportHandle, Port, Provider, ProviderContext,
    ProviderKind, SessionHandle, Status, TaskHandle, TaskSpec, TmFunction, TmResponse,
};
use std::ffi::c_void;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};
pub use stmf::{Guid, ProviderInfo, Settings, Stmf, StmfError};

/// How long a command may take before the harness calls it a hang.
pub const HANG: Duration = Duration::from_secs(30);

/// Name of the built-in port provider.
pub const TEST_PORT_PROVIDER: &str = "test-port";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serialises everything that reads or writes the process environment while a provider
/// library is looked up (the faulty-lu fixture reads `RSTMF_FAULTY_ROOT` then, with its own
/// copy of std, which does not share std's environment lock with the test binary).
static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Installs a tracing subscriber in the test binary, once, before any provider is created.
///
/// The SDK installs its log bridge only in an image with no subscriber yet, and the core drops
/// re-entrant provider events, so this is for readable test logs, not for correctness.
pub fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

// ---- outcomes --------------------------------------------------------------------------------

/// What the initiator saw at the end of a command or TM request.
#[derive(Clone, PartialEq, Eq)]
pub struct Outcome {
    /// SCSI status byte.
    pub status: u8,
    /// Sense data (empty unless CHECK CONDITION).
    pub sense: Vec<u8>,
    /// Data-in received, up to the highest byte any transfer reached.
    pub data: Vec<u8>,
    /// Residual count.
    pub residual: u64,
    /// Residual flags: 1 = underflow, 2 = overflow.
    pub residual_flags: u8,
    /// TM response (TM requests only).
    pub tm_response: TmResponse,
}

/// Residual flag: fewer bytes moved than expected.
pub const UNDERFLOW: u8 = 1;
/// Residual flag: the command wanted more than expected.
pub const OVERFLOW: u8 = 2;

impl Outcome {
    /// True for GOOD status.
    pub fn is_good(&self) -> bool {
        self.status == 0
    }

    /// The parsed sense data, if any.
    pub fn parsed_sense(&self) -> Option<Sense> {
        Sense::parse(&self.sense).ok()
    }

    /// `(sense key, ASC, ASCQ)` of the sense data, if any.
    pub fn sense_code(&self) -> Option<(u8, u8, u8)> {
        self.parsed_sense()
            .map(|s| (s.key.0, s.asc.asc, s.asc.ascq))
    }

    /// Asserts GOOD status.
    #[track_caller]
    pub fn assert_good(&self) -> &Self {
        assert!(self.is_good(), "expected GOOD, got {self:?}");
        self
    }

    /// Asserts CHECK CONDITION with the given sense key and ASC/ASCQ; returns the sense.
    #[track_caller]
    pub fn assert_check(&self, key: u8, asc: u8, ascq: u8) -> Sense {
        assert_eq!(
            self.status, 2,
            "expected CHECK CONDITION {key:X}/{asc:02X}/{ascq:02X}, got {self:?}"
        );
        assert_eq!(
            self.sense_code(),
            Some((key, asc, ascq)),
            "wrong sense in {self:?}"
        );
        self.parsed_sense()
            .unwrap_or_else(|| panic!("unparsable sense in {self:?}"))
    }
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = plugins_sdk::scsi::ScsiStatus(self.status);
        write!(f, "Outcome {{ status: {status}")?;
        if let Some(s) = self.parsed_sense() {
            write!(f, ", sense: {s}")?;
        } else if !self.sense.is_empty() {
            write!(f, ", sense bytes: {:02X?}", self.sense)?;
        }
        write!(
            f,
            ", data: {} bytes {:02X?}",
            self.data.len(),
            &self.data[..self.data.len().min(16)]
        )?;
        write!(
            f,
            ", residual: {} flags {}",
            self.residual, self.residual_flags
        )?;
        if self.tm_response != TmResponse::COMPLETE {
            write!(f, ", tm_response: {:?}", self.tm_response)?;
        }
        f.write_str(" }")
    }
}

// ---- per-command state of the test port -------------------------------------------------------

/// The port's context of one task (its `port_private` is an `Arc<CmdSlot>` turned raw).
struct CmdSlot {
    tag: u64,
    data_out: Vec<u8>,
    data_in_len: usize,
    st: Mutex<SlotState>,
    cv: Condvar,
}

#[derive(Default)]
struct SlotState {
    data_in: Vec<u8>,
    data_in_hi: usize,
    outcome: Option<Outcome>,
    statuses: usize,
    freed: bool,
    port_aborted: bool,
    violations: Vec<String>,
}

impl CmdSlot {
    fn new(tag: u64, data_out: &[u8], data_in_len: usize) -> Arc<Self> {
        Arc::new(CmdSlot {
            tag,
            data_out: data_out.to_vec(),
            data_in_len,
            st: Mutex::new(SlotState {
                data_in: vec![0; data_in_len],
                ..SlotState::default()
            }),
            cv: Condvar::new(),
        })
    }

    /// Moves the data of one transfer; returns the transfer status.
    fn move_data(&self, buf: &mut DataBuf) -> Status {
        let off = usize::try_from(buf.rel_offset()).unwrap_or(usize::MAX);
        let len = buf.xfer_len();
        let flags = buf.flags();
        let end = off.saturating_add(len);
        let to = flags & dbuf_flags::TO_RPORT != 0;
        let from = flags & dbuf_flags::FROM_RPORT != 0;
        let mut st = lock(&self.st);
        match (to, from) {
            (true, false) => {
                if end > self.data_in_len {
                    st.violations.push(format!(
                        "tag {}: data-in {off}..{end} beyond the expected length {}",
                        self.tag, self.data_in_len
                    ));
                    return Status::IO_ERROR;
                }
                st.data_in[off..end].copy_from_slice(buf.data());
                st.data_in_hi = st.data_in_hi.max(end);
                Status::SUCCESS
            }
            (false, true) => {
                if end > self.data_out.len() {
                    st.violations.push(format!(
                        "tag {}: data-out {off}..{end} requested beyond the {} bytes sent",
                        self.tag,
                        self.data_out.len()
                    ));
                    return Status::IO_ERROR;
                }
                buf.as_mut_slice()[..len].copy_from_slice(&self.data_out[off..end]);
                Status::SUCCESS
            }
            _ => {
                st.violations.push(format!(
                    "tag {}: transfer with direction flags {flags:#x}",
                    self.tag
                ));
                Status::INVALID_ARG
            }
        }
    }
}

/// The slot of `task`, with its own reference (the task's may go inside the call).
fn slot_of(task: &TaskHandle) -> Option<Arc<CmdSlot>> {
    let p = task.port_private() as *const CmdSlot;
    if p.is_null() {
        return None;
    }
    // SAFETY: port_private holds an Arc<CmdSlot> made raw by `Harness::submit_spec`, released
    // only by `TestPort::task_free` (which nulls the field first).
    unsafe {
        Arc::increment_strong_count(p);
        Some(Arc::from_raw(p))
    }
}

// ---- the port provider --------------------------------------------------------------------------

/// State shared by a harness and its port provider instance.
struct PortShared {
    host: OnceLock<Host>,
    max_buf: AtomicUsize,
    bufs_out: AtomicI64,
    violations: Mutex<Vec<String>>,
}

/// Harnesses waiting for their provider instance to be created, by id.
static PENDING: Mutex<Vec<(u64, Arc<PortShared>)>> = Mutex::new(Vec::new());
static NEXT_HARNESS: AtomicU64 = AtomicU64::new(1);

/// Marks buffers of the test port (in their `port_private`).
static BUF_MARK: u8 = 0;

fn buf_mark() -> *mut c_void {
    &BUF_MARK as *const u8 as *mut c_void
}

/// The built-in port provider of the harness.
pub struct TestPortProvider {
    /// The harness's state (kept alive while the core holds the provider).
    _shared: Arc<PortShared>,
}

impl Provider for TestPortProvider {
    const NAME: &'static str = TEST_PORT_PROVIDER;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "In-process port for integration tests";
    const KIND: ProviderKind = ProviderKind::PORT;

    fn create(ctx: ProviderContext, config: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(config).map_err(|e| format!("test-port: {e}"))?;
        let id = v
            .get("harness")
            .and_then(|x| x.as_u64())
            .ok_or("test-port: config needs {\"harness\":<id>}")?;
        let mut pending = lock(&PENDING);
        let pos = pending
            .iter()
            .position(|(i, _)| *i == id)
            .ok_or("test-port: unknown harness id")?;
        let (_, shared) = pending.swap_remove(pos);
        let _ = shared.host.set(ctx.host());
        Ok(TestPortProvider { _shared: shared })
    }
}

/// The root module of the test port provider.
static TEST_PORT_ROOT: ProviderRoot = plugins_sdk::root_module::<TestPortProvider>();

/// A session as the port knows it.
struct SessionInner {
    host: Host,
    handle: SessionHandle,
    initiator: String,
    open: Mutex<bool>,
}

impl SessionInner {
    /// Deregisters the session once (the port at OFFLINE, or the test dropping it).
    fn close(&self) {
        let mut open = lock(&self.open);
        if *open {
            let _ = self.host.deregister_session(self.handle);
            *open = false;
        }
    }
}

/// One local port of the test port provider.
struct TestPort {
    shared: Arc<PortShared>,
    sessions: Mutex<Vec<Arc<SessionInner>>>,
}

impl Port for TestPort {
    fn xfer_data(&self, host: &Host, task: &TaskHandle, mut buf: DataBuf, _flags: u32) {
        let status = match slot_of(task) {
            Some(slot) => slot.move_data(&mut buf),
            None => {
                lock(&self.shared.violations).push(format!(
                    "xfer_data on task {:#x} without context",
                    task.tag()
                ));
                Status::INVALID_ARG
            }
        };
        host.data_xfer_done(task, buf, status);
    }

    fn send_status(&self, host: &Host, task: &TaskHandle, _flags: u32) {
        let slot = slot_of(task);
        let (residual, residual_flags) = task.residual();
        let mut outcome = Outcome {
            status: task.scsi_status(),
            sense: task.sense().to_vec(),
            data: Vec::new(),
            residual,
            residual_flags,
            tm_response: task.tm_response(),
        };
        // Read everything before completing: the task may be freed inside (the borrowed
        // handle would still read it, but the harness checks what the port was sent).
        host.send_status_done(task, Status::SUCCESS);
        let Some(slot) = slot else {
            lock(&self.shared.violations).push("send_status on a task without context".into());
            return;
        };
        let mut st = lock(&slot.st);
        st.statuses += 1;
        if st.statuses > 1 {
            let n = st.statuses;
            st.violations
                .push(format!("tag {}: status sent {n} times", slot.tag));
            return;
        }
        if st.port_aborted {
            st.violations.push(format!(
                "tag {}: status sent after the port aborted the task",
                slot.tag
            ));
        }
        let hi = st.data_in_hi;
        outcome.data = st.data_in[..hi].to_vec();
        st.outcome = Some(outcome);
        slot.cv.notify_all();
    }

    fn task_free(&self, task: &TaskHandle) {
        let p = task.port_private() as *const CmdSlot;
        if p.is_null() {
            return;
        }
        task.set_port_private(std::ptr::null_mut());
        // SAFETY: the reference made raw at task_alloc; the field is nulled so it is taken once.
        let slot = unsafe { Arc::from_raw(p) };
        lock(&slot.st).freed = true;
        slot.cv.notify_all();
    }

    fn abort(&self, _host: &Host, task: &TaskHandle) -> AbortOutcome {
        if let Some(slot) = slot_of(task) {
            lock(&slot.st).port_aborted = true;
        }
        AbortOutcome::Done
    }

    fn ctl(&self, host: &Host, lport: LportHandle, cmd: CtlCmd) {
        if cmd == CtlCmd::OFFLINE {
            // A port going offline logs its initiators out first.
            let sessions = std::mem::take(&mut *lock(&self.sessions));
            for s in sessions {
                s.close();
            }
        }
        if cmd == CtlCmd::ONLINE || cmd == CtlCmd::OFFLINE {
            host.lport_ctl_complete(lport, cmd, Status::SUCCESS);
        }
    }

    fn dbuf_alloc(&self, _task: &TaskHandle, size: u32, min_size: u32) -> Result<DataBuf, u32> {
        let max = u32::try_from(self.shared.max_buf.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
        let n = size.min(max);
        if n == 0 || n < min_size {
            return Err(max);
        }
        self.shared.bufs_out.fetch_add(1, Ordering::Relaxed);
        Ok(new_buf(n))
    }

    fn dbuf_free(&self, buf: DataBuf) {
        if buf.port_private() != buf_mark() {
            lock(&self.shared.violations)
                .push("dbuf_free of a buffer the test port did not allocate".into());
            let _ = buf.into_raw(); // not ours: leak rather than free foreign memory
            return;
        }
        self.shared.bufs_out.fetch_sub(1, Ordering::Relaxed);
        free_buf(buf);
    }
}

fn new_buf(size: u32) -> DataBuf {
    let mem: Box<[u8]> = vec![0u8; size as usize].into_boxed_slice();
    let raw = Box::new(DataBufRaw {
        data: Box::into_raw(mem) as *mut u8,
        buf_size: size,
        xfer_len: 0,
        rel_offset: 0,
        flags: 0,
        xfer_status: Status::SUCCESS,
        port_private: buf_mark(),
        lu_private: std::ptr::null_mut(),
        core_private: 0,
    });
    // SAFETY: a fresh, valid buffer whose ownership we hand over.
    unsafe { DataBuf::from_raw(Box::into_raw(raw)) }.expect("Box::into_raw is never null")
}

fn free_buf(buf: DataBuf) {
    // SAFETY: made by new_buf (checked by the caller through the mark): a boxed DataBufRaw
    // whose data is a boxed slice of buf_size bytes.
    unsafe {
        let raw = Box::from_raw(buf.into_raw());
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
            raw.data,
            raw.buf_size as usize,
        )));
    }
}

/// A handle the core gave out: an opaque token, usable from any thread.
#[derive(Clone, Copy)]
struct Token<T>(T);
// SAFETY: LportHandle is an opaque token the core validates; never dereferenced here.
unsafe impl Send for Token<LportHandle> {}
// SAFETY: as above.
unsafe impl Sync for Token<LportHandle> {}

// ---- the harness ---------------------------------------------------------------------------------

/// Options of one command.
#[derive(Clone, Copy, Debug)]
pub struct CmdOptions {
    /// Bytes of data-out sent with the command as immediate data (the `initial` buffer).
    pub immediate: usize,
    /// Most buffers the LU may have in flight.
    pub max_nbufs: u8,
    /// Expected transfer length; by default the length of the data-out or data-in buffer.
    pub expected_xfer_len: Option<u64>,
}

impl Default for CmdOptions {
    fn default() -> Self {
        CmdOptions {
            immediate: 0,
            max_nbufs: 1,
            expected_xfer_len: None,
        }
    }
}

/// A core with the test port provider registered, plus helpers.
pub struct Harness {
    stmf: Stmf,
    shared: Arc<PortShared>,
    host: Host,
    tmp: tempfile::TempDir,
    copies: AtomicUsize,
}

impl Harness {
    /// A fresh core with `settings` and the test port provider.
    pub fn new(settings: Settings) -> Harness {
        init_tracing();
        let id = NEXT_HARNESS.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(PortShared {
            host: OnceLock::new(),
            max_buf: AtomicUsize::new(64 * 1024),
            bufs_out: AtomicI64::new(0),
            violations: Mutex::new(Vec::new()),
        });
        lock(&PENDING).push((id, Arc::clone(&shared)));
        let stmf = Stmf::new(settings);
        stmf.register_builtin_provider(&TEST_PORT_ROOT, &format!("{{\"harness\":{id}}}"))
            .unwrap_or_else(|e| panic!("registering the test port provider: {e}"));
        let host = *shared
            .host
            .get()
            .expect("the test port provider was created");
        let tmp = tempfile::Builder::new()
            .prefix("rstmf-tests")
            .tempdir()
            .expect("temporary directory");
        Harness {
            stmf,
            shared,
            host,
            tmp,
            copies: AtomicUsize::new(0),
        }
    }

    /// The core.
    pub fn stmf(&self) -> &Stmf {
        &self.stmf
    }

    /// The test port provider's host services.
    pub fn host(&self) -> Host {
        self.host
    }

    /// A private temporary directory, removed with the harness.
    pub fn tmp_dir(&self) -> &Path {
        self.tmp.path()
    }

    // ---- providers ----

    /// The build output directory of the running test binary (`target/<profile>`).
    pub fn target_dir() -> PathBuf {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/<test binary>
        exe.parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .expect("test binary lives in target/<profile>/deps")
    }

    /// Path of the library of crate `name` (`lib<name>.so`, dashes as underscores). Panics
    /// if it was not built.
    pub fn lib_path(name: &str) -> PathBuf {
        let file = format!("lib{}.so", name.replace('-', "_"));
        let path = Self::target_dir().join(&file);
        assert!(
            path.is_file(),
            "provider library {} not found: run `cargo build --workspace` first (tests load the providers as built libraries)",
            path.display()
        );
        path
    }

    /// Copies the library of crate `name` to a new private path (a fresh image when loaded).
    pub fn copy_library(&self, name: &str) -> PathBuf {
        let src = Self::lib_path(name);
        let n = self.copies.fetch_add(1, Ordering::Relaxed);
        let dst = self
            .tmp
            .path()
            .join(format!("lib{}-{n}.so", name.replace('-', "_")));
        std::fs::copy(&src, &dst)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", src.display(), dst.display()));
        dst
    }

    /// Loads `path` with `config`, with the environment variable `env` set while the core
    /// opens and checks it.
    pub fn load_path(
        &self,
        path: &Path,
        config: &str,
        env: Option<(&str, &str)>,
    ) -> Result<ProviderInfo, StmfError> {
        let _guard = lock(&ENV_LOCK);
        if let Some((k, v)) = env {
            std::env::set_var(k, v);
        }
        let r = self.stmf.load_provider(path, config);
        if let Some((k, _)) = env {
            std::env::remove_var(k);
        }
        r
    }

    /// Loads the provider crate `name` (from a private copy of its library, so every core
    /// gets a fresh image), with `config`.
    pub fn try_load(&self, name: &str, config: &str) -> Result<ProviderInfo, StmfError> {
        let path = self.copy_library(name);
        self.load_path(&path, config, None)
    }

    /// Loads the provider crate `name` with no saved configuration; panics on error.
    pub fn load(&self, name: &str) -> ProviderInfo {
        self.load_with_config(name, "")
    }

    /// Loads the provider crate `name` with `config`; panics on error.
    pub fn load_with_config(&self, name: &str, config: &str) -> ProviderInfo {
        self.try_load(name, config)
            .unwrap_or_else(|e| panic!("loading provider {name}: {e}"))
    }

    /// Creates a RAM LU through the example-ram-lu provider (loaded already).
    pub fn create_ram_lu(&self, size_mb: u64, block_size: u32) -> Guid {
        let req = format!(r#"{{"op":"create-lu","size_mb":{size_mb},"block_size":{block_size}}}"#);
        let reply = self
            .stmf
            .provider_control("example-ram-lu", &req)
            .unwrap_or_else(|e| panic!("create-lu: {e}"));
        let v: serde_json::Value = serde_json::from_str(&reply).expect("create-lu replies JSON");
        v["guid"]
            .as_str()
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| panic!("create-lu reply {reply}"))
    }

    // ---- ports and sessions ----

    /// Registers a local port named `name` (the core brings it online; [`TestTarget::session`]
    /// waits for that).
    pub fn port(&self, name: &str) -> TestTarget {
        let port = Arc::new(TestPort {
            shared: Arc::clone(&self.shared),
            sessions: Mutex::new(Vec::new()),
        });
        let handle = self
            .host
            .register_lport(name, "", "test", Arc::clone(&port))
            .unwrap_or_else(|st| panic!("registering port {name}: {st}"));
        TestTarget {
            name: name.to_string(),
            handle: Token(handle),
            port,
            host: self.host,
        }
    }

    // ---- commands ----

    /// Runs a command to completion: `data_out` is the data-out buffer, `data_in_len` the
    /// data-in buffer size (the expected transfer length is the larger of the two). Panics on
    /// a hang or a protocol violation.
    #[track_caller]
    pub fn cmd(
        &self,
        s: &Session,
        lun: u16,
        cdb: &[u8],
        data_out: &[u8],
        data_in_len: usize,
    ) -> Outcome {
        self.cmd_with(s, lun, cdb, data_out, data_in_len, CmdOptions::default())
    }

    /// [`Harness::cmd`] with options.
    #[track_caller]
    pub fn cmd_with(
        &self,
        s: &Session,
        lun: u16,
        cdb: &[u8],
        data_out: &[u8],
        data_in_len: usize,
        opts: CmdOptions,
    ) -> Outcome {
        self.submit_with(s, lun, cdb, data_out, data_in_len, opts)
            .wait_done()
    }

    /// Submits a command without waiting.
    #[track_caller]
    pub fn submit(
        &self,
        s: &Session,
        lun: u16,
        cdb: &[u8],
        data_out: &[u8],
        data_in_len: usize,
    ) -> Pending {
        self.submit_with(s, lun, cdb, data_out, data_in_len, CmdOptions::default())
    }

    /// Submits a command with options, without waiting.
    #[track_caller]
    pub fn submit_with(
        &self,
        s: &Session,
        lun: u16,
        cdb: &[u8],
        data_out: &[u8],
        data_in_len: usize,
        opts: CmdOptions,
    ) -> Pending {
        let mut flags = 0;
        if data_in_len > 0 {
            flags |= task_flags::READ_DATA;
        }
        if !data_out.is_empty() {
            flags |= task_flags::WRITE_DATA;
        }
        let immediate = opts.immediate.min(data_out.len());
        if immediate > 0 {
            flags |= task_flags::INITIAL_BURST;
        }
        let tag = s.next_tag();
        let spec = TaskSpec {
            lun: lun_bytes(lun),
            cdb,
            flags,
            tag,
            expected_xfer_len: opts
                .expected_xfer_len
                .unwrap_or(data_in_len.max(data_out.len()) as u64),
            cmd_sn: tag as u32,
            task_attr: task_attr::SIMPLE,
            tm_function: TmFunction::NONE,
            tm_ref_tag: 0,
            max_nbufs: opts.max_nbufs,
        };
        let slot = CmdSlot::new(tag, data_out, data_in_len);
        let initial = (immediate > 0).then(|| {
            let mut buf = new_buf(immediate as u32);
            self.shared.bufs_out.fetch_add(1, Ordering::Relaxed);
            buf.as_mut_slice()[..immediate].copy_from_slice(&data_out[..immediate]);
            buf.set_xfer(0, immediate, dbuf_flags::FROM_RPORT);
            buf
        });
        self.post(s, &spec, slot, initial)
    }

    /// Submits a task-management request without waiting.
    #[track_caller]
    pub fn submit_tm(&self, s: &Session, lun: u16, function: TmFunction, ref_tag: u64) -> Pending {
        let tag = s.next_tag();
        let spec = TaskSpec::task_mgmt(lun_bytes(lun), function, tag, ref_tag);
        self.post(s, &spec, CmdSlot::new(tag, &[], 0), None)
    }

    /// Runs a task-management request to completion; returns its response.
    #[track_caller]
    pub fn tm(&self, s: &Session, lun: u16, function: TmFunction, ref_tag: u64) -> TmResponse {
        self.submit_tm(s, lun, function, ref_tag)
            .wait_done()
            .tm_response
    }

    #[track_caller]
    fn post(
        &self,
        s: &Session,
        spec: &TaskSpec<'_>,
        slot: Arc<CmdSlot>,
        initial: Option<DataBuf>,
    ) -> Pending {
        let raw = Arc::into_raw(Arc::clone(&slot)) as *mut c_void;
        let task = match self.host.task_alloc(s.inner.handle, spec, raw) {
            Ok(t) => t,
            Err(st) => {
                // SAFETY: the reference made raw above; the core did not keep it.
                drop(unsafe { Arc::from_raw(raw as *const CmdSlot) });
                if let Some(b) = initial {
                    self.shared.bufs_out.fetch_sub(1, Ordering::Relaxed);
                    free_buf(b);
                }
                panic!("task_alloc on session {} refused: {st}", s.inner.initiator);
            }
        };
        self.host.post_task(task, initial);
        Pending { slot }
    }

    // ---- checks ----

    /// Sets the largest buffer the port hands out (default 64 KiB).
    pub fn set_max_buf(&self, bytes: usize) {
        self.shared.max_buf.store(bytes, Ordering::Relaxed);
    }

    /// Buffers allocated by the port and not yet freed.
    pub fn outstanding_buffers(&self) -> i64 {
        self.shared.bufs_out.load(Ordering::Relaxed)
    }

    /// Protocol violations the port saw outside any command.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.shared.violations).clone()
    }

    /// The LU `guid` as `list_lu` shows it.
    pub fn lu_info(&self, guid: Guid) -> stmf::LuInfo {
        self.stmf
            .list_lu()
            .into_iter()
            .find(|l| l.guid == guid)
            .unwrap_or_else(|| panic!("LU {guid} not listed"))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stmf.shutdown();
    }
}

/// A local port of the test port provider.
pub struct TestTarget {
    name: String,
    handle: Token<LportHandle>,
    port: Arc<TestPort>,
    host: Host,
}

impl TestTarget {
    /// The port's SCSI name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Logs initiator `initiator` in: registers an I_T nexus (waiting up to 10 s for the port
    /// to be online).
    pub fn session(&self, initiator: &str) -> Session {
        self.session_with_transport_id(initiator, "")
    }

    /// Registers a nexus with `plugins_sdk::abi::session_flags` and nothing else (the
    /// port must be online); the handle is the core's to clean up at shutdown.
    pub fn register_with_flags(&self, initiator: &str, flags: u32) -> Result<(), Status> {
        self.host
            .register_session_with_flags(self.handle.0, initiator, "", "", flags)
            .map(|_| ())
    }

    /// [`TestTarget::session`] with the TransportID the port reports for the initiator.
    pub fn session_with_transport_id(&self, initiator: &str, transport_id: &str) -> Session {
        let deadline = Instant::now() + Duration::from_secs(10);
        let handle = loop {
            match self
                .host
                .register_session(self.handle.0, initiator, "", transport_id)
            {
                Ok(h) => break h,
                Err(Status::BAD_STATE) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(st) => panic!("registering session {initiator} on {}: {st}", self.name),
            }
        };
        let inner = Arc::new(SessionInner {
            host: self.host,
            handle,
            initiator: initiator.to_string(),
            open: Mutex::new(true),
        });
        lock(&self.port.sessions).push(Arc::clone(&inner));
        Session {
            inner,
            next_tag: AtomicU64::new(0x100),
        }
    }
}

/// An I_T nexus; logged out when dropped.
pub struct Session {
    inner: Arc<SessionInner>,
    next_tag: AtomicU64,
}

impl Session {
    /// The initiator port name.
    pub fn initiator(&self) -> &str {
        &self.inner.initiator
    }

    fn next_tag(&self) -> u64 {
        self.next_tag.fetch_add(1, Ordering::Relaxed)
    }

    /// Logs the initiator out now (deregisters the session).
    pub fn close(&self) {
        self.inner.close();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.inner.close();
    }
}

/// A submitted command or TM request.
pub struct Pending {
    slot: Arc<CmdSlot>,
}

impl Pending {
    /// The task's tag (for ABORT TASK).
    pub fn tag(&self) -> u64 {
        self.slot.tag
    }

    /// The outcome, if status arrived already.
    pub fn outcome(&self) -> Option<Outcome> {
        lock(&self.slot.st).outcome.clone()
    }

    /// Waits up to `timeout` for the status.
    pub fn wait(&self, timeout: Duration) -> Option<Outcome> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.slot.st);
        while st.outcome.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self
                .slot
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        st.outcome.clone()
    }

    /// Waits for the status ([`HANG`] at most) and checks the port saw no protocol violation.
    #[track_caller]
    pub fn wait_done(&self) -> Outcome {
        let Some(o) = self.wait(HANG) else {
            panic!("tag {:#x} got no status within {HANG:?}", self.slot.tag);
        };
        let v = self.violations();
        assert!(v.is_empty(), "protocol violations: {v:?}");
        o
    }

    /// Whether the core freed the task (the port's `task_free` ran).
    pub fn is_freed(&self) -> bool {
        lock(&self.slot.st).freed
    }

    /// Waits up to `timeout` for the task to be freed.
    pub fn wait_freed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.slot.st);
        while !st.freed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .slot
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Whether the core asked the port to abort the task.
    pub fn port_aborted(&self) -> bool {
        lock(&self.slot.st).port_aborted
    }

    /// Protocol violations seen on this task.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.slot.st).violations.clone()
    }
}

/// The 8-byte LUN of `lun` (peripheral addressing below 256, flat above).
pub fn lun_bytes(lun: u16) -> [u8; 8] {
    Lun::new(lun)
        .unwrap_or_else(|| panic!("LUN {lun} out of range"))
        .to_bytes()
}

/// Polls `cond` every millisecond until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// CDB builders for the commands the tests send.
pub mod cdb {
    /// TEST UNIT READY.
    pub fn test_unit_ready() -> [u8; 6] {
        [0; 6]
    }

    /// INQUIRY (standard data, or the VPD page `page` with EVPD).
    pub fn inquiry(evpd: bool, page: u8, alloc_len: u16) -> [u8; 6] {
        let [hi, lo] = alloc_len.to_be_bytes();
        [0x12, u8::from(evpd), page, hi, lo, 0]
    }

    /// REQUEST SENSE.
    pub fn request_sense(desc: bool, alloc_len: u8) -> [u8; 6] {
        [0x03, u8::from(desc), 0, 0, alloc_len, 0]
    }

    /// REPORT LUNS (SELECT REPORT 0).
    pub fn report_luns(alloc_len: u32) -> [u8; 12] {
        let a = alloc_len.to_be_bytes();
        [0xA0, 0, 0, 0, 0, 0, a[0], a[1], a[2], a[3], 0, 0]
    }

    /// READ CAPACITY (10).
    pub fn read_capacity_10() -> [u8; 10] {
        [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    }

    /// READ CAPACITY (16).
    pub fn read_capacity_16(alloc_len: u32) -> [u8; 16] {
        let a = alloc_len.to_be_bytes();
        [
            0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, a[0], a[1], a[2], a[3], 0, 0,
        ]
    }

    /// READ (10).
    pub fn read_10(lba: u32, blocks: u16) -> [u8; 10] {
        let l = lba.to_be_bytes();
        let b = blocks.to_be_bytes();
        [0x28, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
    }

    /// WRITE (10).
    pub fn write_10(lba: u32, blocks: u16) -> [u8; 10] {
        let mut c = read_10(lba, blocks);
        c[0] = 0x2A;
        c
    }

    /// READ (16).
    pub fn read_16(lba: u64, blocks: u32) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0] = 0x88;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[10..14].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    /// WRITE (16).
    pub fn write_16(lba: u64, blocks: u32) -> [u8; 16] {
        let mut c = read_16(lba, blocks);
        c[0] = 0x8A;
        c
    }

    /// SYNCHRONIZE CACHE (10) of the whole LU.
    pub fn synchronize_cache_10() -> [u8; 10] {
        [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    }

    /// MODE SENSE (6), all pages.
    pub fn mode_sense_6(dbd: bool, alloc_len: u8) -> [u8; 6] {
        [0x1A, if dbd { 0x08 } else { 0 }, 0x3F, 0, alloc_len, 0]
    }

    /// A 6-byte vendor-specific CDB with opcode `op` (faulty-lu's C0h/C1h/C2h).
    pub fn vendor(op: u8) -> [u8; 6] {
        [op, 0, 0, 0, 0, 0]
    }
}
