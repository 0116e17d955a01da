//! The sans-IO initiator session: `idm`'s [`Connection`] in the initiator role plus
//! the iSCSI session logic (login, CmdSN/StatSN accounting, tasks, data transfer).
//!
//! Like `quinn-proto`, [`SessionCore`] owns no socket and reads no clock. Its owner
//!
//! - calls [`start`](SessionCore::start) once the TCP connection is up;
//! - feeds received bytes ([`read_buf`](SessionCore::read_buf) +
//!   [`commit`](SessionCore::commit), or [`handle_bytes`](SessionCore::handle_bytes));
//! - writes what [`poll_transmit`](SessionCore::poll_transmit) appends;
//! - calls [`handle_timeout`](SessionCore::handle_timeout) at
//!   [`poll_timeout`](SessionCore::poll_timeout);
//! - takes [`Event`]s from [`poll_event`](SessionCore::poll_event) and closes the socket
//!   when [`wants_close`](SessionCore::wants_close) says so.
//!
//! Commands are submitted at any time after login ([`submit`](SessionCore::submit));
//! they leave as soon as the target's CmdSN window admits them, with immediate and
//! unsolicited data as negotiated, and answer R2Ts with Data-Out. Many tasks may be
//! outstanding at once (one ITT each).

mod login;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idm::conn::{ConnConfig, ConnEvent, Connection, FfpDisableReason, Notify};
use idm::keys::NegotiatedParams;
use idm::pdu::{
    AhsSet, AsyncEvent, AsyncMessage, Cdb, DataIn, DataOut, ErrorAction, Isid, LogoutReason,
    LogoutRequest, LogoutResponseCode, NopIn, NopOut, Pdu, R2t, Reject, Role, ScsiCommand,
    ScsiResponse, ScsiResponseCode, TaskAttr, TaskMgmtRequest, TaskMgmtResponse, TextRequest,
    TextResponse, TmfFunction, TmfResponse, MAX_TOTAL_AHS_LEN, RESERVED_TAG,
};

use crate::auth::AuthProvider;
use crate::error::{Error, ProtocolError, TaskError};
use crate::url::{encode_lun, Credentials};

pub use login::{parse_send_targets, DiscoveredTarget, TargetPortal};

/// Initial CmdSN of a new session.
pub const INITIAL_CMD_SN: u32 = 1;
/// Default initiator name.
pub const DEFAULT_INITIATOR_NAME: &str = "iqn.2026-11.org.rstmf:initiator";

/// `a < b` in 32-bit serial number arithmetic (RFC 1982).
pub fn sn_lt(a: u32, b: u32) -> bool {
    a != b && (b.wrapping_sub(a) as i32) > 0
}

/// `a <= b` in serial number arithmetic.
pub fn sn_le(a: u32, b: u32) -> bool {
    a == b || sn_lt(a, b)
}

/// What we offer for HeaderDigest / DataDigest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigestMode {
    /// `None` only.
    #[default]
    None,
    /// `CRC32C` only (login fails if the target refuses).
    Crc32c,
    /// `CRC32C,None`.
    PreferCrc32c,
    /// `None,CRC32C`.
    PreferNone,
}

impl DigestMode {
    /// The offered list value.
    pub fn offer(self) -> &'static str {
        match self {
            DigestMode::None => "None",
            DigestMode::Crc32c => "CRC32C",
            DigestMode::PreferCrc32c => "CRC32C,None",
            DigestMode::PreferNone => "None,CRC32C",
        }
    }
}

/// Login and session settings of the initiator.
#[derive(Clone)]
pub struct LoginOptions {
    /// InitiatorName.
    pub initiator_name: String,
    /// InitiatorAlias, if any.
    pub initiator_alias: Option<String>,
    /// ISID (the driver picks a random one when `None`).
    pub isid: Option<Isid>,
    /// HeaderDigest offer.
    pub header_digest: DigestMode,
    /// DataDigest offer.
    pub data_digest: DigestMode,
    /// Our declared MaxRecvDataSegmentLength.
    pub max_recv_data_segment_length: u32,
    /// MaxBurstLength offered.
    pub max_burst_length: u32,
    /// FirstBurstLength offered.
    pub first_burst_length: u32,
    /// ImmediateData offered.
    pub immediate_data: bool,
    /// InitialR2T offered.
    pub initial_r2t: bool,
    /// MaxOutstandingR2T offered.
    pub max_outstanding_r2t: u16,
    /// Login must finish within this time.
    pub login_timeout: Duration,
    /// Each task must finish within this time (`None`: no limit). On expiry the
    /// session is failed: at ErrorRecoveryLevel 0 recovery is session-wide.
    pub command_timeout: Option<Duration>,
    /// Most tasks outstanding at once.
    pub max_tasks: usize,
    /// Authentication for URLs with credentials (default: one-way CHAP); `None`:
    /// credentials are refused. Without credentials AuthMethod=None is offered.
    pub auth: Option<Arc<dyn AuthProvider>>,
}

impl std::fmt::Debug for LoginOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginOptions")
            .field("initiator_name", &self.initiator_name)
            .field("isid", &self.isid)
            .field("header_digest", &self.header_digest)
            .field("data_digest", &self.data_digest)
            .field(
                "max_recv_data_segment_length",
                &self.max_recv_data_segment_length,
            )
            .field("max_burst_length", &self.max_burst_length)
            .field("first_burst_length", &self.first_burst_length)
            .field("immediate_data", &self.immediate_data)
            .field("initial_r2t", &self.initial_r2t)
            .field("max_tasks", &self.max_tasks)
            .field("auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for LoginOptions {
    fn default() -> Self {
        Self {
            initiator_name: DEFAULT_INITIATOR_NAME.to_owned(),
            initiator_alias: None,
            isid: None,
            header_digest: DigestMode::None,
            data_digest: DigestMode::None,
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1 << 20,
            first_burst_length: 262_144,
            immediate_data: true,
            initial_r2t: false,
            max_outstanding_r2t: 1,
            login_timeout: Duration::from_secs(15),
            command_timeout: Some(Duration::from_secs(60)),
            max_tasks: 1024,
            auth: Some(Arc::new(crate::auth::ChapProvider::new())),
        }
    }
}

/// Normal or discovery session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKind {
    /// A normal session to the named target.
    Normal {
        /// TargetName.
        target: String,
    },
    /// A discovery session (SendTargets only).
    Discovery,
}

/// Everything a [`SessionCore`] needs to log in.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Options.
    pub opts: LoginOptions,
    /// Session kind.
    pub kind: SessionKind,
    /// ISID of this session.
    pub isid: Isid,
    /// Credentials for the security stage.
    pub credentials: Option<Credentials>,
}

/// Identifies a submitted task (its Initiator Task Tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u32);

/// A SCSI command to submit.
#[derive(Debug, Clone)]
pub struct ScsiRequest {
    /// LUN number.
    pub lun: u16,
    /// The CDB (up to 260 bytes; more than 16 go in the extended CDB AHS).
    pub cdb: Vec<u8>,
    /// Data to write (empty for none).
    pub data_out: Vec<u8>,
    /// Bytes to read (0 for none).
    pub data_in_len: u32,
    /// A buffer to read into: only its allocation is used (cleared first), so a
    /// caller can recycle [`ScsiResult::data`] and avoid a fresh allocation per read.
    pub buffer: Vec<u8>,
}

impl ScsiRequest {
    /// A command that transfers no data.
    pub fn none(lun: u16, cdb: &[u8]) -> Self {
        Self {
            lun,
            cdb: cdb.to_vec(),
            data_out: Vec::new(),
            data_in_len: 0,
            buffer: Vec::new(),
        }
    }

    /// Reads into `buffer`'s allocation (see [`ScsiRequest::buffer`]).
    pub fn with_buffer(mut self, buffer: Vec<u8>) -> Self {
        self.buffer = buffer;
        self
    }

    /// A command that reads `len` bytes.
    pub fn read(lun: u16, cdb: &[u8], len: u32) -> Self {
        Self {
            data_in_len: len,
            ..Self::none(lun, cdb)
        }
    }

    /// A command that writes `data`.
    pub fn write(lun: u16, cdb: &[u8], data: Vec<u8>) -> Self {
        Self {
            data_out: data,
            ..Self::none(lun, cdb)
        }
    }
}

/// Residual of a command (RFC 7143 §11.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Residual {
    /// The whole expected length was transferred.
    #[default]
    None,
    /// This many bytes fewer than expected were transferred.
    Underflow(u32),
    /// The target wanted to transfer this many bytes more than expected.
    Overflow(u32),
}

/// The outcome of a SCSI command that reached the target and got a status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScsiResult {
    /// SCSI status byte (see [`crate::scsi::status`]).
    pub status: u8,
    /// Sense data (empty unless CHECK CONDITION).
    pub sense: Vec<u8>,
    /// Data read (length: expected minus underflow residual).
    pub data: Vec<u8>,
    /// Residual.
    pub residual: Residual,
    /// The request's `data_out`, handed back so that its allocation can be reused.
    pub data_out: Vec<u8>,
}

impl ScsiResult {
    /// True for GOOD status.
    pub fn is_good(&self) -> bool {
        self.status == crate::scsi::status::GOOD
    }

    /// Decoded sense data.
    pub fn sense(&self) -> Option<crate::scsi::Sense> {
        crate::scsi::Sense::parse(&self.sense)
    }

    /// `Ok(self)` for GOOD, else [`Error::Scsi`].
    pub fn check(self) -> Result<Self, Error> {
        if self.is_good() {
            Ok(self)
        } else {
            Err(Error::Scsi {
                status: self.status,
                sense: self.sense(),
            })
        }
    }
}

/// What an Async Message told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncNotice {
    /// AsyncEvent.
    pub event: AsyncEvent,
    /// LUN field.
    pub lun: u64,
    /// Parameter1..3.
    pub parameters: [u16; 3],
}

/// Events for the owner of a [`SessionCore`].
#[derive(Debug)]
pub enum Event {
    /// Login finished: full feature phase.
    LoggedIn,
    /// A SCSI command finished.
    Completed {
        /// The task.
        id: TaskId,
        /// Status and data, or why it failed.
        result: Result<ScsiResult, TaskError>,
    },
    /// A task management function finished.
    TmfDone {
        /// The TMF's task.
        id: TaskId,
        /// The target's response, or why it failed.
        result: Result<TmfResponse, TaskError>,
    },
    /// A NOP-Out ping was answered.
    NopDone {
        /// The ping's task.
        id: TaskId,
        /// Ok, or why it failed.
        result: Result<(), TaskError>,
    },
    /// A text request finished (all continuation PDUs joined).
    TextDone {
        /// The task.
        id: TaskId,
        /// The response text (raw key=value bytes), or why it failed.
        result: Result<Vec<u8>, TaskError>,
    },
    /// An Async Message other than those the connection acts on itself.
    Async(AsyncNotice),
    /// The session logged out cleanly.
    LoggedOut,
    /// The session failed; every outstanding task has completed with an error.
    Failed(Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Login,
    FullFeature,
    LoggingOut,
    Closed,
}

#[derive(Debug)]
struct ScsiTask {
    cdb: Cdb,
    read: bool,
    write: bool,
    data_out: Vec<u8>,
    data_in: Vec<u8>,
    data_in_len: u32,
    /// Next Data-In DataSN.
    exp_data_sn: u32,
    /// Next R2TSN.
    exp_r2t_sn: u32,
    received: u32,
    error: Option<TaskError>,
}

#[derive(Debug)]
enum Kind {
    Scsi(Box<ScsiTask>),
    Tmf {
        function: TmfFunction,
        referenced: Option<u32>,
    },
    Nop,
    Text {
        request: Vec<u8>,
        response: Vec<u8>,
        ttt: u32,
    },
    Logout,
}

#[derive(Debug)]
struct Task {
    kind: Kind,
    lun: u64,
    cmd_sn: u32,
    deadline: Option<Instant>,
}

/// Follow-up of a received PDU that needs the connection (sending) or owned data.
enum Rx {
    Done,
    Deferred(Pdu, Vec<u8>),
}

/// The initiator session state machine. See the [module documentation](self).
pub struct SessionCore {
    conn: Connection,
    st: State,
}

struct State {
    cfg: SessionConfig,
    phase: Phase,
    params: NegotiatedParams,
    login: login::LoginCtx,
    tsih: u16,
    target_alias: Option<String>,
    tpgt: Option<u16>,
    cmd_sn: u32,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    exp_stat_sn: u32,
    next_itt: u32,
    tasks: HashMap<u32, Task>,
    /// Non-immediate tasks waiting for the CmdSN window, in submission order.
    waiting: VecDeque<u32>,
    events: VecDeque<Event>,
    close: bool,
    failed: bool,
}

impl std::fmt::Debug for SessionCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCore")
            .field("phase", &self.st.phase)
            .field("conn", &self.conn.state())
            .field("cmd_sn", &self.st.cmd_sn)
            .field("exp_cmd_sn", &self.st.exp_cmd_sn)
            .field("max_cmd_sn", &self.st.max_cmd_sn)
            .field("exp_stat_sn", &self.st.exp_stat_sn)
            .field("tasks", &self.st.tasks.len())
            .finish_non_exhaustive()
    }
}

impl SessionCore {
    /// A session that has not started. Fails when credentials are given without an
    /// [`AuthProvider`].
    pub fn new(cfg: SessionConfig) -> Result<Self, Error> {
        let login = login::LoginCtx::new(&cfg)?;
        let params = NegotiatedParams {
            max_recv_data_segment_length: cfg.opts.max_recv_data_segment_length,
            ..NegotiatedParams::default()
        };
        let conn_cfg = ConnConfig {
            login_timeout: cfg.opts.login_timeout,
            ..ConnConfig::default()
        };
        Ok(Self {
            conn: Connection::new(Role::Initiator, conn_cfg),
            st: State {
                cfg,
                phase: Phase::Idle,
                params,
                login,
                tsih: 0,
                target_alias: None,
                tpgt: None,
                cmd_sn: INITIAL_CMD_SN,
                exp_cmd_sn: INITIAL_CMD_SN,
                max_cmd_sn: INITIAL_CMD_SN,
                exp_stat_sn: 0,
                next_itt: 0,
                tasks: HashMap::new(),
                waiting: VecDeque::new(),
                events: VecDeque::new(),
                close: false,
                failed: false,
            },
        })
    }

    /// The transport is connected: starts the login (sends the first Login Request).
    pub fn start(&mut self, now: Instant) -> Result<(), Error> {
        if self.st.phase != Phase::Idle {
            return Err(Error::Usage("session already started"));
        }
        self.conn.connect(now)?;
        self.conn.connect_succeeded(now)?;
        self.st.phase = Phase::Login;
        // The login timer of the IDM connection runs on the target side only; ours:
        self.st.login.deadline = now.checked_add(self.st.cfg.opts.login_timeout);
        self.drain_conn_events(now);
        Ok(())
    }

    /// The negotiated parameters (final once [`Event::LoggedIn`] was raised).
    pub fn params(&self) -> &NegotiatedParams {
        &self.st.params
    }

    /// The TSIH the target assigned.
    pub fn tsih(&self) -> u16 {
        self.st.tsih
    }

    /// TargetAlias, if the target declared one.
    pub fn target_alias(&self) -> Option<&str> {
        self.st.target_alias.as_deref()
    }

    /// TargetPortalGroupTag, if the target declared one.
    pub fn target_portal_group_tag(&self) -> Option<u16> {
        self.st.tpgt
    }

    /// True in full feature phase.
    pub fn is_logged_in(&self) -> bool {
        self.st.phase == Phase::FullFeature
    }

    /// True once the session is over (logged out or failed).
    pub fn is_closed(&self) -> bool {
        self.st.phase == Phase::Closed
    }

    /// The owner should close the transport (after writing what is queued).
    pub fn wants_close(&self) -> bool {
        self.st.close
    }

    /// Tasks submitted and not yet completed (including those waiting for the window).
    pub fn outstanding(&self) -> usize {
        self.st.tasks.len()
    }

    /// Next CmdSN, ExpCmdSN, MaxCmdSN and ExpStatSN.
    pub fn sequence_numbers(&self) -> (u32, u32, u32, u32) {
        let s = &self.st;
        (s.cmd_sn, s.exp_cmd_sn, s.max_cmd_sn, s.exp_stat_sn)
    }

    /// The IDM connection (state, audit).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.st.events.pop_front()
    }

    // ---- transport side -------------------------------------------------------------

    /// Free space of the receive buffer to read into; then [`commit`](Self::commit).
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.conn.read_buf()
    }

    /// Records `n` bytes read into [`read_buf`](Self::read_buf) and processes every
    /// whole PDU buffered.
    pub fn commit(&mut self, now: Instant, n: usize) {
        self.conn.commit(n);
        self.process(now);
    }

    /// Feeds received bytes (copying) and processes them; returns the count taken.
    pub fn handle_bytes(&mut self, now: Instant, mut data: &[u8]) -> usize {
        let mut taken = 0;
        while !data.is_empty() {
            let n = self.conn.handle_bytes(data);
            self.process(now);
            if n == 0 {
                break;
            }
            taken += n;
            data = data.get(n..).unwrap_or(&[]);
        }
        taken
    }

    /// The transport reached end of stream or failed.
    pub fn transport_failed(&mut self, now: Instant) {
        self.conn.transport_failed(now);
        self.drain_conn_events(now);
        if self.st.phase == Phase::LoggingOut {
            // The target may close right after the Logout Response.
            self.st.close_session(None);
        } else if self.st.phase != Phase::Closed {
            self.st.fail(Error::Closed);
        }
    }

    /// Appends every queued frame to `buf`; returns the bytes appended.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> usize {
        let before = buf.len();
        while self.conn.poll_transmit(now, buf).is_some() {}
        self.drain_conn_events(now);
        buf.len() - before
    }

    /// The earliest deadline: login, command timeouts, IDM timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tasks = self.st.tasks.values().filter_map(|t| t.deadline).min();
        let login = (self.st.phase == Phase::Login)
            .then_some(self.st.login.deadline)
            .flatten();
        [self.conn.poll_timeout(), tasks, login]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        self.drain_conn_events(now);
        if self.st.phase == Phase::Login && self.st.login.deadline.is_some_and(|d| d <= now) {
            self.st.fail(Error::Timeout("login"));
            let _ = self.conn.login_failed(now);
            self.drain_conn_events(now);
            return;
        }
        let expired = self
            .st
            .tasks
            .values()
            .any(|t| t.deadline.is_some_and(|d| d <= now));
        if expired {
            tracing::warn!("iscsi initiator: command timeout, failing the session");
            self.st.fail_tasks(TaskError::Timeout);
            self.st.fail(Error::Timeout("command"));
            self.conn.transport_failed(now);
            self.drain_conn_events(now);
        }
    }

    // ---- client side ----------------------------------------------------------------

    /// Submits a SCSI command; it leaves when the CmdSN window admits it.
    pub fn submit(&mut self, now: Instant, req: ScsiRequest) -> Result<TaskId, Error> {
        self.st.check_ffp()?;
        if !matches!(self.st.cfg.kind, SessionKind::Normal { .. }) {
            return Err(Error::Usage("SCSI commands need a normal session"));
        }
        if !req.data_out.is_empty() && req.data_in_len > 0 {
            return Err(Error::Usage("bidirectional commands are not supported"));
        }
        if u32::try_from(req.data_out.len()).is_err() {
            return Err(Error::Usage("data_out longer than 4 GiB"));
        }
        let cdb = Cdb::from_slice(&req.cdb).map_err(|_| Error::Usage("CDB longer than 260"))?;
        let read = req.data_in_len > 0;
        let write = !req.data_out.is_empty();
        let mut data_in = req.buffer;
        data_in.clear();
        let task = ScsiTask {
            cdb,
            read,
            write,
            data_out: req.data_out,
            data_in,
            data_in_len: req.data_in_len,
            exp_data_sn: 0,
            exp_r2t_sn: 0,
            received: 0,
            error: None,
        };
        let itt = self
            .st
            .add_task(now, Kind::Scsi(Box::new(task)), encode_lun(req.lun))?;
        self.st.waiting.push_back(itt);
        self.send_waiting(now);
        Ok(TaskId(itt))
    }

    /// Sends a task management function (immediate). `referenced` names the task for
    /// ABORT TASK / QUERY TASK.
    pub fn submit_tmf(
        &mut self,
        now: Instant,
        function: TmfFunction,
        lun: u16,
        referenced: Option<TaskId>,
    ) -> Result<TaskId, Error> {
        self.st.check_ffp()?;
        let lun = encode_lun(lun);
        let referenced = referenced.map(|t| t.0);
        let ref_cmd_sn = referenced
            .and_then(|r| self.st.tasks.get(&r))
            .map_or(self.st.cmd_sn, |t| t.cmd_sn);
        let itt = self.st.add_task(
            now,
            Kind::Tmf {
                function,
                referenced,
            },
            lun,
        )?;
        let pdu = Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function,
            lun,
            itt,
            referenced_task_tag: referenced.unwrap_or(RESERVED_TAG),
            cmd_sn: self.st.cmd_sn,
            exp_stat_sn: self.st.exp_stat_sn,
            ref_cmd_sn,
            exp_data_sn: 0,
        });
        self.send_task_pdu(now, itt, &pdu, &[])?;
        Ok(TaskId(itt))
    }

    /// Sends a NOP-Out ping (immediate) that the target answers with a NOP-In.
    pub fn submit_nop(&mut self, now: Instant) -> Result<TaskId, Error> {
        self.st.check_ffp()?;
        let itt = self.st.add_task(now, Kind::Nop, 0)?;
        let pdu = Pdu::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: self.st.cmd_sn,
            exp_stat_sn: self.st.exp_stat_sn,
        });
        self.send_task_pdu(now, itt, &pdu, &[])?;
        Ok(TaskId(itt))
    }

    /// Sends a Text Request with `text` (encoded key=value pairs, e.g. from
    /// [`idm::text::TextBuilder`]); continuation PDUs are fetched automatically.
    pub fn submit_text(&mut self, now: Instant, text: Vec<u8>) -> Result<TaskId, Error> {
        self.st.check_ffp()?;
        if text.len() > self.st.params.max_send_data_segment_length as usize {
            return Err(Error::Usage("text longer than one data segment"));
        }
        let kind = Kind::Text {
            request: text,
            response: Vec::new(),
            ttt: RESERVED_TAG,
        };
        let itt = self.st.add_task(now, kind, 0)?;
        self.st.waiting.push_back(itt);
        self.send_waiting(now);
        Ok(TaskId(itt))
    }

    /// Sends `SendTargets=All` (discovery sessions; `Some(name)` asks for one target).
    pub fn submit_send_targets(
        &mut self,
        now: Instant,
        target: Option<&str>,
    ) -> Result<TaskId, Error> {
        let mut t = idm::text::TextBuilder::new();
        t.push("SendTargets", target.unwrap_or("All"))?;
        self.submit_text(now, t.into_bytes())
    }

    /// Logs the session out (Logout Request, close session). [`Event::LoggedOut`]
    /// follows the target's answer.
    pub fn logout(&mut self, now: Instant) -> Result<(), Error> {
        self.st.check_ffp()?;
        let itt = self.st.add_task(now, Kind::Logout, 0)?;
        let pdu = Pdu::LogoutRequest(LogoutRequest {
            immediate: true,
            reason: LogoutReason::CloseSession,
            itt,
            cid: 0,
            cmd_sn: self.st.cmd_sn,
            exp_stat_sn: self.st.exp_stat_sn,
        });
        self.send_task_pdu(now, itt, &pdu, &[])?;
        self.st.phase = Phase::LoggingOut;
        Ok(())
    }

    // ---- internals ------------------------------------------------------------------

    fn send_task_pdu(
        &mut self,
        now: Instant,
        itt: u32,
        pdu: &Pdu,
        data: &[u8],
    ) -> Result<(), Error> {
        if let Err(e) = self.conn.send_pdu(now, pdu, data) {
            self.st.tasks.remove(&itt);
            self.drain_conn_events(now);
            return Err(e.into());
        }
        Ok(())
    }

    /// Processes every whole PDU in the receive buffer.
    fn process(&mut self, now: Instant) {
        loop {
            let Self { conn, st } = self;
            let Some(rx) = conn.poll_pdu(now, |rx| st.on_rx(rx.pdu, rx.data)) else {
                break;
            };
            if let Rx::Deferred(pdu, data) = rx {
                self.on_deferred(now, pdu, data);
            }
            self.drain_conn_events(now);
        }
        self.drain_conn_events(now);
        self.send_waiting(now);
    }

    /// Sends the waiting tasks the CmdSN window admits.
    fn send_waiting(&mut self, now: Instant) {
        if self.st.phase != Phase::FullFeature {
            return;
        }
        while let Some(&itt) = self.st.waiting.front() {
            if !sn_le(self.st.cmd_sn, self.st.max_cmd_sn) {
                break;
            }
            self.st.waiting.pop_front();
            let cmd_sn = self.st.cmd_sn;
            self.st.cmd_sn = cmd_sn.wrapping_add(1);
            let result = match self.st.tasks.get_mut(&itt) {
                Some(t) => {
                    t.cmd_sn = cmd_sn;
                    Ok(())
                }
                None => Err(()),
            };
            if result.is_err() {
                continue;
            }
            if let Err(e) = self.send_task(now, itt) {
                tracing::debug!(error = %e, itt, "iscsi initiator: send failed");
                self.st.complete_error(itt, TaskError::ConnectionLost);
            }
        }
    }

    /// Sends a non-immediate task's PDU(s): SCSI Command with immediate and
    /// unsolicited data, or a Text Request.
    fn send_task(&mut self, now: Instant, itt: u32) -> Result<(), Error> {
        let Self { conn, st } = self;
        let Some(task) = st.tasks.get(&itt) else {
            return Ok(());
        };
        let exp_stat_sn = st.exp_stat_sn;
        match &task.kind {
            Kind::Scsi(s) => {
                let p = &st.params;
                let max_send = p.max_send_data_segment_length.max(512) as usize;
                let edtl = if s.write {
                    s.data_out.len()
                } else {
                    s.data_in_len as usize
                };
                let unsolicited = if s.write && (p.immediate_data || !p.initial_r2t) {
                    edtl.min(p.first_burst_length as usize)
                } else {
                    0
                };
                let immediate = if p.immediate_data {
                    unsolicited.min(max_send)
                } else {
                    0
                };
                let data_outs = !p.initial_r2t && unsolicited > immediate;
                let mut ahs_buf = [0u8; MAX_TOTAL_AHS_LEN];
                let ahs_len = AhsSet {
                    extended_cdb: s.cdb.extension(),
                    bidi_read_data_length: None,
                }
                .emit(&mut ahs_buf)
                .map_err(ProtocolError::Pdu)?;
                let cmd = Pdu::ScsiCommand(ScsiCommand {
                    immediate: false,
                    final_bit: !data_outs,
                    read: s.read,
                    write: s.write,
                    attr: TaskAttr::Simple,
                    lun: task.lun,
                    itt,
                    expected_data_transfer_length: edtl as u32,
                    cmd_sn: task.cmd_sn,
                    exp_stat_sn,
                    cdb: s.cdb.base(),
                });
                let imm = s.data_out.get(..immediate).unwrap_or(&[]);
                conn.send_pdu_with_ahs(now, &cmd, ahs_buf.get(..ahs_len).unwrap_or(&[]), imm)?;
                if data_outs {
                    send_data_out(
                        conn,
                        now,
                        &s.data_out,
                        DataOutSeq {
                            lun: task.lun,
                            itt,
                            ttt: RESERVED_TAG,
                            exp_stat_sn,
                            start: immediate,
                            end: unsolicited,
                            max_send,
                        },
                    )?;
                }
            }
            Kind::Text { request, ttt, .. } => {
                let data = if *ttt == RESERVED_TAG {
                    &request[..]
                } else {
                    &[]
                };
                let pdu = Pdu::TextRequest(TextRequest {
                    immediate: false,
                    final_bit: true,
                    cont: false,
                    lun: 0,
                    itt,
                    ttt: *ttt,
                    cmd_sn: task.cmd_sn,
                    exp_stat_sn,
                });
                conn.send_pdu(now, &pdu, data)?;
            }
            Kind::Tmf { .. } | Kind::Nop | Kind::Logout => {}
        }
        Ok(())
    }

    /// Handles the PDUs that need the connection or owned data.
    fn on_deferred(&mut self, now: Instant, pdu: Pdu, data: Vec<u8>) {
        match pdu {
            Pdu::LoginResponse(r) => {
                if let Err(e) = self.on_login_response(now, r, &data) {
                    tracing::debug!(error = %e, "iscsi initiator: login failed");
                    self.st.fail(e);
                    let _ = self.conn.login_failed(now);
                    self.drain_conn_events(now);
                }
            }
            Pdu::R2t(r) => {
                if let Err(e) = self.on_r2t(now, r) {
                    self.st.fail(e);
                    self.conn.transport_failed(now);
                    self.drain_conn_events(now);
                }
            }
            Pdu::NopIn(n) => self.on_nop_in(now, n),
            Pdu::TextResponse(t) => self.on_text_response(now, t, data),
            Pdu::Reject(r) => self.st.on_reject(r, &data),
            Pdu::AsyncMessage(m) => self.st.on_async(m),
            other => tracing::trace!(opcode = ?other.opcode(), "iscsi initiator: PDU ignored"),
        }
    }

    fn on_r2t(&mut self, now: Instant, r: R2t) -> Result<(), Error> {
        let Self { conn, st } = self;
        let exp_stat_sn = st.exp_stat_sn;
        let max_send = st.params.max_send_data_segment_length.max(512) as usize;
        let bad = |reason| ProtocolError::BadR2t { itt: r.itt, reason };
        let Some(task) = st.tasks.get_mut(&r.itt) else {
            tracing::debug!(
                itt = r.itt,
                "iscsi initiator: R2T for an unknown task ignored"
            );
            return Ok(());
        };
        let Kind::Scsi(s) = &mut task.kind else {
            return Err(bad("not a SCSI command").into());
        };
        if !s.write {
            return Err(bad("command does not write").into());
        }
        let start = r.buffer_offset as usize;
        let end = start.saturating_add(r.desired_data_transfer_length as usize);
        if end > s.data_out.len() {
            return Err(bad("beyond the expected data transfer length").into());
        }
        if r.r2t_sn != s.exp_r2t_sn {
            tracing::debug!(
                got = r.r2t_sn,
                expected = s.exp_r2t_sn,
                "R2TSN out of order"
            );
            s.error.get_or_insert(TaskError::DataSn {
                expected: s.exp_r2t_sn,
                got: r.r2t_sn,
            });
        }
        s.exp_r2t_sn = r.r2t_sn.wrapping_add(1);
        send_data_out(
            conn,
            now,
            &s.data_out,
            DataOutSeq {
                lun: task.lun,
                itt: r.itt,
                ttt: r.ttt,
                exp_stat_sn,
                start,
                end,
                max_send,
            },
        )
    }

    fn on_nop_in(&mut self, now: Instant, n: NopIn) {
        if n.itt != RESERVED_TAG {
            if let Some(t) = self.st.tasks.remove(&n.itt) {
                if matches!(t.kind, Kind::Nop) {
                    self.st.events.push_back(Event::NopDone {
                        id: TaskId(n.itt),
                        result: Ok(()),
                    });
                } else {
                    self.st.tasks.insert(n.itt, t);
                }
            }
        }
        if n.ttt != RESERVED_TAG {
            // A ping from the target: answer with the same TTT and LUN.
            let pdu = Pdu::NopOut(NopOut {
                immediate: true,
                lun: n.lun,
                itt: RESERVED_TAG,
                ttt: n.ttt,
                cmd_sn: self.st.cmd_sn,
                exp_stat_sn: self.st.exp_stat_sn,
            });
            if let Err(e) = self.conn.send_pdu(now, &pdu, &[]) {
                tracing::debug!(error = %e, "iscsi initiator: cannot answer NOP-In");
            }
        }
    }

    fn on_text_response(&mut self, now: Instant, t: TextResponse, data: Vec<u8>) {
        let Some(task) = self.st.tasks.get_mut(&t.itt) else {
            return;
        };
        let Kind::Text { response, ttt, .. } = &mut task.kind else {
            return;
        };
        if response.len() + data.len() > idm::text::DEFAULT_TEXT_CAP {
            self.st.complete_error(
                t.itt,
                TaskError::Text(idm::text::TextError::TooLarge {
                    cap: idm::text::DEFAULT_TEXT_CAP,
                }),
            );
            return;
        }
        response.extend_from_slice(&data);
        if t.final_bit || t.ttt == RESERVED_TAG {
            let body = std::mem::take(response);
            self.st.tasks.remove(&t.itt);
            self.st.events.push_back(Event::TextDone {
                id: TaskId(t.itt),
                result: Ok(body),
            });
        } else {
            // More to come: an empty Text Request with the target's TTT fetches it.
            *ttt = t.ttt;
            self.st.waiting.push_back(t.itt);
            self.send_waiting(now);
        }
    }

    fn drain_conn_events(&mut self, _now: Instant) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                ConnEvent::Notify(Notify::ReadyForLogin) => {
                    if let Err(e) = self.send_login_request(_now) {
                        self.st.fail(e);
                    }
                }
                ConnEvent::Notify(Notify::FfpDisabled(FfpDisableReason::ConnFail))
                | ConnEvent::Notify(Notify::ConnectLost { .. })
                | ConnEvent::Notify(Notify::LoginFail)
                | ConnEvent::AbortTasks
                | ConnEvent::SuspendTasks => {
                    if self.st.phase != Phase::LoggingOut {
                        self.st.fail(Error::Closed);
                    }
                }
                ConnEvent::Disconnect => self.st.close = true,
                ConnEvent::ProtocolError {
                    error,
                    action,
                    header,
                } => {
                    tracing::debug!(%error, ?action, "iscsi initiator: PDU from target refused");
                    match (action, header) {
                        (ErrorAction::Reject(_), Some(h)) => {
                            let itt = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
                            if self.st.tasks.contains_key(&itt) {
                                self.st.complete_error(itt, TaskError::BadPdu);
                            }
                        }
                        (ErrorAction::Reject(_), None) => {}
                        (ErrorAction::DropConnection, _) => {
                            self.st.fail(ProtocolError::Rx(error.to_string()).into());
                        }
                    }
                }
                ConnEvent::Notify(_) | ConnEvent::Connect | ConnEvent::EnableDatamover => {}
            }
        }
    }
}

/// One Data-Out sequence: `[start, end)` of the buffer in PDUs of at most `max_send`.
struct DataOutSeq {
    lun: u64,
    itt: u32,
    ttt: u32,
    exp_stat_sn: u32,
    start: usize,
    end: usize,
    max_send: usize,
}

fn send_data_out(
    conn: &mut Connection,
    now: Instant,
    data: &[u8],
    seq: DataOutSeq,
) -> Result<(), Error> {
    let mut off = seq.start;
    let mut data_sn = 0u32;
    while off < seq.end {
        let len = (seq.end - off).min(seq.max_send);
        let chunk = data
            .get(off..off + len)
            .ok_or(Error::Usage("Data-Out beyond buffer"))?;
        let pdu = Pdu::DataOut(DataOut {
            final_bit: off + len == seq.end,
            lun: seq.lun,
            itt: seq.itt,
            ttt: seq.ttt,
            exp_stat_sn: seq.exp_stat_sn,
            data_sn,
            buffer_offset: off as u32,
        });
        conn.send_pdu(now, &pdu, chunk)?;
        data_sn = data_sn.wrapping_add(1);
        off += len;
    }
    Ok(())
}

impl State {
    fn check_ffp(&self) -> Result<(), Error> {
        match self.phase {
            Phase::FullFeature => Ok(()),
            Phase::Closed => Err(Error::Closed),
            _ => Err(Error::Usage("not in full feature phase")),
        }
    }

    fn alloc_itt(&mut self) -> u32 {
        loop {
            let itt = self.next_itt;
            self.next_itt = self.next_itt.wrapping_add(1);
            if itt != RESERVED_TAG && !self.tasks.contains_key(&itt) {
                return itt;
            }
        }
    }

    fn add_task(&mut self, now: Instant, kind: Kind, lun: u64) -> Result<u32, Error> {
        if self.tasks.len() >= self.cfg.opts.max_tasks {
            return Err(Error::QueueFull(self.tasks.len()));
        }
        let itt = self.alloc_itt();
        let deadline = self
            .cfg
            .opts
            .command_timeout
            .and_then(|d| now.checked_add(d));
        self.tasks.insert(
            itt,
            Task {
                kind,
                lun,
                cmd_sn: self.cmd_sn,
                deadline,
            },
        );
        Ok(itt)
    }

    /// ExpCmdSN / MaxCmdSN from a target PDU (ignored when MaxCmdSN < ExpCmdSN - 1).
    fn update_cmd_window(&mut self, exp: u32, max: u32) {
        if sn_lt(max, exp.wrapping_sub(1)) {
            return;
        }
        if sn_lt(self.exp_cmd_sn, exp) {
            self.exp_cmd_sn = exp;
        }
        if sn_lt(self.max_cmd_sn, max) {
            self.max_cmd_sn = max;
        }
    }

    /// A PDU that carries a status with this StatSN.
    fn status_received(&mut self, stat_sn: u32) {
        let next = stat_sn.wrapping_add(1);
        if sn_lt(self.exp_stat_sn, next) {
            self.exp_stat_sn = next;
        }
    }

    /// A PDU whose StatSN field is the next StatSN (not advanced).
    fn stat_sn_seen(&mut self, stat_sn: u32) {
        if sn_lt(self.exp_stat_sn, stat_sn) {
            self.exp_stat_sn = stat_sn;
        }
    }

    /// Handles a received PDU in place where it can (Data-In, SCSI Response and
    /// other small answers); defers the rest.
    fn on_rx(&mut self, pdu: Pdu, data: &[u8]) -> Rx {
        if self.phase == Phase::Login {
            return Rx::Deferred(pdu, data.to_vec());
        }
        match pdu {
            Pdu::DataIn(d) => {
                self.update_cmd_window(d.exp_cmd_sn, d.max_cmd_sn);
                self.on_data_in(d, data);
                Rx::Done
            }
            Pdu::ScsiResponse(r) => {
                self.update_cmd_window(r.sn.exp_cmd_sn, r.sn.max_cmd_sn);
                self.status_received(r.sn.stat_sn);
                self.on_scsi_response(r, data);
                Rx::Done
            }
            Pdu::TaskMgmtResponse(r) => {
                self.update_cmd_window(r.sn.exp_cmd_sn, r.sn.max_cmd_sn);
                self.status_received(r.sn.stat_sn);
                self.on_tmf_response(r);
                Rx::Done
            }
            Pdu::LogoutResponse(r) => {
                self.update_cmd_window(r.sn.exp_cmd_sn, r.sn.max_cmd_sn);
                self.status_received(r.sn.stat_sn);
                self.tasks.remove(&r.itt);
                if r.response == LogoutResponseCode::Success {
                    self.close_session(None);
                } else {
                    self.fail(Error::Usage("logout refused by the target"));
                }
                Rx::Done
            }
            Pdu::NopIn(n) => {
                self.update_cmd_window(n.sn.exp_cmd_sn, n.sn.max_cmd_sn);
                if n.itt == RESERVED_TAG {
                    self.stat_sn_seen(n.sn.stat_sn);
                } else {
                    self.status_received(n.sn.stat_sn);
                }
                Rx::Deferred(pdu, Vec::new())
            }
            Pdu::R2t(r) => {
                self.update_cmd_window(r.sn.exp_cmd_sn, r.sn.max_cmd_sn);
                self.stat_sn_seen(r.sn.stat_sn);
                Rx::Deferred(pdu, Vec::new())
            }
            Pdu::TextResponse(t) => {
                self.update_cmd_window(t.sn.exp_cmd_sn, t.sn.max_cmd_sn);
                self.status_received(t.sn.stat_sn);
                Rx::Deferred(pdu, data.to_vec())
            }
            Pdu::Reject(r) => {
                self.update_cmd_window(r.sn.exp_cmd_sn, r.sn.max_cmd_sn);
                self.stat_sn_seen(r.sn.stat_sn);
                Rx::Deferred(pdu, data.get(..48).unwrap_or(data).to_vec())
            }
            Pdu::AsyncMessage(m) => {
                self.update_cmd_window(m.sn.exp_cmd_sn, m.sn.max_cmd_sn);
                self.stat_sn_seen(m.sn.stat_sn);
                Rx::Deferred(pdu, Vec::new())
            }
            other => Rx::Deferred(other, Vec::new()),
        }
    }

    fn on_data_in(&mut self, d: DataIn, data: &[u8]) {
        let Some(task) = self.tasks.get_mut(&d.itt) else {
            tracing::debug!(itt = d.itt, "iscsi initiator: Data-In for an unknown task");
            return;
        };
        let Kind::Scsi(s) = &mut task.kind else {
            return;
        };
        if d.data_sn != s.exp_data_sn {
            s.error.get_or_insert(TaskError::DataSn {
                expected: s.exp_data_sn,
                got: d.data_sn,
            });
        }
        s.exp_data_sn = d.data_sn.wrapping_add(1);
        if !data.is_empty() {
            let off = d.buffer_offset as usize;
            let end = off.saturating_add(data.len());
            if !s.read || end > s.data_in_len as usize {
                s.error.get_or_insert(TaskError::DataOverflow {
                    offset: d.buffer_offset,
                    len: data.len() as u32,
                    cap: s.data_in_len,
                });
            } else {
                if s.data_in.capacity() < s.data_in_len as usize {
                    s.data_in
                        .reserve_exact(s.data_in_len as usize - s.data_in.len());
                }
                if off == s.data_in.len() {
                    // In order (DataPDUInOrder=Yes): append, no zero fill.
                    s.data_in.extend_from_slice(data);
                } else {
                    if s.data_in.len() < end {
                        s.data_in.resize(end, 0);
                    }
                    if let Some(dst) = s.data_in.get_mut(off..end) {
                        dst.copy_from_slice(data);
                    }
                }
                s.received = s.received.saturating_add(data.len() as u32);
            }
        }
        if let Some(st) = d.status {
            self.status_received(st.stat_sn);
            let residual = residual(st.overflow, st.underflow, st.residual_count);
            self.complete_scsi(d.itt, st.status, Vec::new(), residual, None);
        }
    }

    fn on_scsi_response(&mut self, r: ScsiResponse, data: &[u8]) {
        if r.response != ScsiResponseCode::Completed {
            self.complete_error(r.itt, TaskError::TargetFailure(r.response.into()));
            return;
        }
        let sense = match data {
            [a, b, rest @ ..] => {
                let n = usize::from(u16::from_be_bytes([*a, *b]));
                rest.get(..n.min(rest.len())).unwrap_or(&[]).to_vec()
            }
            _ => Vec::new(),
        };
        let residual = residual(r.overflow, r.underflow, r.residual_count);
        self.complete_scsi(r.itt, r.status, sense, residual, Some(r.exp_data_sn));
    }

    fn complete_scsi(
        &mut self,
        itt: u32,
        status: u8,
        sense: Vec<u8>,
        residual: Residual,
        exp_data_sn: Option<u32>,
    ) {
        let Some(task) = self.tasks.remove(&itt) else {
            tracing::debug!(itt, "iscsi initiator: status for an unknown task");
            return;
        };
        let Kind::Scsi(s) = task.kind else {
            self.tasks.insert(itt, task);
            return;
        };
        let s = *s;
        let result = match s.error {
            Some(e) => Err(e),
            None => {
                let expected = match residual {
                    Residual::Underflow(r) if s.read => s.data_in_len.saturating_sub(r),
                    _ if s.read => s.data_in_len,
                    _ => 0,
                };
                let data_pdus = s.exp_data_sn;
                match exp_data_sn {
                    Some(e) if s.read && status == 0 && e != data_pdus => {
                        Err(TaskError::ExpDataSn {
                            expected: data_pdus,
                            got: e,
                        })
                    }
                    _ if status == 0 && s.received < expected => Err(TaskError::MissingData {
                        expected,
                        got: s.received,
                    }),
                    _ => {
                        let mut data = s.data_in;
                        data.truncate(expected as usize);
                        if data.len() < expected as usize {
                            data.resize(expected as usize, 0);
                        }
                        Ok(ScsiResult {
                            status,
                            sense,
                            data,
                            residual,
                            data_out: s.data_out,
                        })
                    }
                }
            }
        };
        self.events.push_back(Event::Completed {
            id: TaskId(itt),
            result,
        });
    }

    fn on_tmf_response(&mut self, r: TaskMgmtResponse) {
        let Some(task) = self.tasks.remove(&r.itt) else {
            return;
        };
        let Kind::Tmf {
            function,
            referenced,
        } = task.kind
        else {
            self.tasks.insert(r.itt, task);
            return;
        };
        let aborts = matches!(
            function,
            TmfFunction::AbortTask
                | TmfFunction::AbortTaskSet
                | TmfFunction::ClearTaskSet
                | TmfFunction::LogicalUnitReset
                | TmfFunction::TargetWarmReset
                | TmfFunction::TargetColdReset
                | TmfFunction::ItNexusReset
        );
        if aborts && r.response == TmfResponse::FunctionComplete {
            // The target sends no response for the tasks it aborted (RFC 7143 §11.6.1).
            let aborted: Vec<u32> = match referenced {
                Some(t) => vec![t],
                None => self
                    .tasks
                    .iter()
                    .filter(|(itt, t)| {
                        matches!(t.kind, Kind::Scsi(_))
                            && (t.lun == task.lun || task.lun == 0)
                            && !self.waiting.contains(itt)
                    })
                    .map(|(itt, _)| *itt)
                    .collect(),
            };
            for itt in aborted {
                if self.tasks.contains_key(&itt) && !self.waiting.contains(&itt) {
                    self.complete_error(itt, TaskError::Aborted);
                }
            }
        }
        self.events.push_back(Event::TmfDone {
            id: TaskId(r.itt),
            result: Ok(r.response),
        });
    }

    fn on_reject(&mut self, r: Reject, header: &[u8]) {
        let itt = match header.get(16..20) {
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            _ => RESERVED_TAG,
        };
        tracing::debug!(reason = ?r.reason, itt, "iscsi initiator: Reject from target");
        if itt != RESERVED_TAG && self.tasks.contains_key(&itt) {
            self.complete_error(itt, TaskError::Rejected(r.reason));
        }
    }

    fn on_async(&mut self, m: AsyncMessage) {
        self.events.push_back(Event::Async(AsyncNotice {
            event: m.event,
            lun: m.lun,
            parameters: [m.parameter1, m.parameter2, m.parameter3],
        }));
    }

    /// Completes a task of any kind with an error.
    fn complete_error(&mut self, itt: u32, e: TaskError) {
        self.waiting.retain(|&w| w != itt);
        let Some(task) = self.tasks.remove(&itt) else {
            return;
        };
        let id = TaskId(itt);
        let ev = match task.kind {
            Kind::Scsi(_) => Event::Completed { id, result: Err(e) },
            Kind::Tmf { .. } => Event::TmfDone { id, result: Err(e) },
            Kind::Nop => Event::NopDone { id, result: Err(e) },
            Kind::Text { .. } => Event::TextDone { id, result: Err(e) },
            Kind::Logout => return,
        };
        self.events.push_back(ev);
    }

    fn fail_tasks(&mut self, e: TaskError) {
        let mut itts: Vec<u32> = self.tasks.keys().copied().collect();
        itts.sort_unstable();
        for itt in itts {
            self.complete_error(itt, e.clone());
        }
    }

    /// The session is over without error (logout).
    fn close_session(&mut self, _why: Option<Error>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.fail_tasks(TaskError::ConnectionLost);
        self.phase = Phase::Closed;
        self.close = true;
        self.events.push_back(Event::LoggedOut);
    }

    /// The session failed: every task completes with an error, then [`Event::Failed`].
    fn fail(&mut self, e: Error) {
        if self.phase == Phase::Closed {
            return;
        }
        tracing::debug!(error = %e, "iscsi initiator: session failed");
        self.fail_tasks(TaskError::ConnectionLost);
        self.phase = Phase::Closed;
        self.close = true;
        self.failed = true;
        self.events.push_back(Event::Failed(e));
    }
}

fn residual(overflow: bool, underflow: bool, count: u32) -> Residual {
    match (overflow, underflow) {
        (true, _) => Residual::Overflow(count),
        (_, true) => Residual::Underflow(count),
        _ => Residual::None,
    }
}
