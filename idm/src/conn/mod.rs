//! The IDM connection, sans-IO: the connection state machine joined with the PDU codec
//! (after `quinn-proto`).
//!
//! A [`Connection`] owns no socket and reads no clock. The I/O loop around it
//!
//! - reports the transport: [`connect`](Connection::connect) /
//!   [`connect_succeeded`](Connection::connect_succeeded) (initiator),
//!   [`accept`](Connection::accept) (target), [`transport_failed`](Connection::transport_failed),
//!   [`enable_dm_done`](Connection::enable_dm_done) (iSER);
//! - feeds received bytes ([`handle_bytes`](Connection::handle_bytes), or
//!   [`read_buf`](Connection::read_buf) + [`commit`](Connection::commit)) and hands each
//!   whole PDU the client must see to it with [`poll_pdu`](Connection::poll_pdu), borrowed
//!   from the receive buffer (no copy);
//! - writes what [`poll_transmit`](Connection::poll_transmit) returns;
//! - calls [`handle_timeout`](Connection::handle_timeout) at
//!   [`poll_timeout`](Connection::poll_timeout);
//! - carries out [`poll_event`](Connection::poll_event): transport requests (connect,
//!   disconnect, enable the data mover) and client notifications.
//!
//! The client (iscsit, or the test initiator) sends with [`send_pdu`](Connection::send_pdu)
//! and declares the end of login with [`login_succeeded`](Connection::login_succeeded):
//! only it knows the negotiated digests, data segment lengths and whether RDMA extensions
//! were negotiated, and the switch must fall exactly between the final Login Response and
//! the first full feature phase PDU.
//!
//! Every PDU, received or sent, is checked against role and state ([`pdu_policy`]); the
//! PDUs that drive the state machine (login, logout, async logout/drop, NOP during login)
//! raise their [`SmEvent`]. Full feature phase traffic (SCSI, data, R2T, TMF, text, SNACK,
//! NOP, reject) raises no event, like COMSTAR's fast path.
//!
//! # States and events
//!
//! See [`ConnState`], [`SmEvent`], [`TABLE`] and [`entry_actions`].

mod state;
#[cfg(test)]
mod tests;

pub use state::{
    entry_actions, lookup, pdu_policy, table_pairs, Action, AuditEntry, AuditOutcome, ConnState,
    FfpDisableReason, Next, Notify, PduPolicy, Rule, SmEvent, StateMachine, Step, TransitionError,
    AUDIT_LEN, TABLE,
};

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::pdu::{
    AsyncEvent, AsyncMessage, Digests, ErrorAction, FrameLimits, LogoutReason, LogoutResponseCode,
    Opcode, Pdu, PduError, PduReader, Reject, RejectReason, Role, RxPdu, Stage, TargetSn, TxFrame,
    BHS_LEN, DEFAULT_MAX_RECV_DATA_SEGMENT_LEN,
};

/// Default login timer: armed in S3 XPT_UP, runs through S4 IN_LOGIN.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Default logout-request timer: armed in S7 LOGOUT_REQ (target).
pub const LOGOUT_TIMEOUT: Duration = Duration::from_secs(20);
/// Default cleanup timer: armed in S8 CLEANUP.
pub const CLEANUP_TIMEOUT: Duration = Duration::ZERO;

/// Bytes of already-sent frames kept at the front of the transmit buffer before it is
/// compacted.
const TX_COMPACT: usize = 64 * 1024;

/// Timer settings of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnConfig {
    /// Login timer (S3 → S4 → full feature phase).
    pub login_timeout: Duration,
    /// Logout-request timer (target, S7).
    pub logout_timeout: Duration,
    /// Cleanup timer (S8/S10).
    pub cleanup_timeout: Duration,
}

impl ConnConfig {
    /// COMSTAR's values: 20 s, 20 s, 0 s.
    pub const DEFAULT: Self = Self {
        login_timeout: LOGIN_TIMEOUT,
        logout_timeout: LOGOUT_TIMEOUT,
        cleanup_timeout: CLEANUP_TIMEOUT,
    };
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What login negotiated for this connection, in force from full feature phase on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FfpParams {
    /// HeaderDigest / DataDigest.
    pub digests: Digests,
    /// Our declared MaxRecvDataSegmentLength: the largest data segment we accept.
    pub max_recv_data_segment_len: u32,
    /// The peer's MaxRecvDataSegmentLength: the largest data segment we send.
    pub max_send_data_segment_len: u32,
    /// `RDMAExtensions=Yes`: the connection goes through S12 ENABLE_DM (iSER).
    pub rdma_extensions: bool,
}

impl Default for FfpParams {
    /// The login-phase values: no digests, 8192-byte segments, no RDMA.
    fn default() -> Self {
        Self {
            digests: Digests::NONE,
            max_recv_data_segment_len: DEFAULT_MAX_RECV_DATA_SEGMENT_LEN,
            max_send_data_segment_len: DEFAULT_MAX_RECV_DATA_SEGMENT_LEN,
            rdma_extensions: false,
        }
    }
}

/// A received PDU the connection could not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RxError {
    /// The codec refused the bytes.
    #[error(transparent)]
    Codec(PduError),
    /// The PDU may not be received in this state ([`pdu_policy`]).
    #[error("{opcode:?} may not be received in state {state}")]
    NotAllowed {
        /// Its opcode.
        opcode: Opcode,
        /// The state it arrived in.
        state: ConnState,
    },
    /// The PDU raised an event the table refuses here (e.g. a second logout).
    #[error("unexpected PDU: {0}")]
    Unexpected(TransitionError),
    /// A Logout Request with a reserved reason code.
    #[error("invalid logout reason code {0:#04x}")]
    InvalidLogoutReason(u8),
}

impl RxError {
    /// The Reject reason that answers the error in full feature phase.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            RxError::Codec(e) => e.reject_reason().unwrap_or(RejectReason::ProtocolError),
            RxError::NotAllowed { .. } | RxError::Unexpected(_) => RejectReason::ProtocolError,
            RxError::InvalidLogoutReason(_) => RejectReason::InvalidPduField,
        }
    }
}

/// Errors of the client-facing calls. None of them changes the connection except
/// [`ConnError::NotAllowed`], which also feeds `CE_TX_PROTOCOL_ERROR` to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// The call's event is not in the transition table for the current state.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// This role never sends that opcode.
    #[error("a {role:?} never sends {opcode:?}")]
    WrongRole {
        /// Our role.
        role: Role,
        /// The opcode offered.
        opcode: Opcode,
    },
    /// The PDU may not be sent in this state ([`pdu_policy`]).
    #[error("{opcode:?} may not be sent in state {state}")]
    NotAllowed {
        /// The opcode offered.
        opcode: Opcode,
        /// The current state.
        state: ConnState,
    },
    /// The connection is cleaning up (S8/S10): the PDU was discarded.
    #[error("{opcode:?} discarded: the connection is cleaning up ({state})")]
    Dropped {
        /// The opcode offered.
        opcode: Opcode,
        /// The current state.
        state: ConnState,
    },
    /// The connection reached a terminal state.
    #[error("the connection is closed")]
    Closed,
    /// The PDU cannot be framed (data segment too long, bad AHS, bad field).
    #[error(transparent)]
    Codec(#[from] PduError),
    /// `login_succeeded` before the final Login Response (T=1, NSG=3, success) was
    /// sent (target) or received (initiator).
    #[error("login has not reached its final Login Response")]
    LoginIncomplete,
}

/// What the owner of a [`Connection`] must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// A notification for the client (COMSTAR `idm_client_notify`).
    Notify(Notify),
    /// Transport: open the connection, then report `connect_succeeded`/`connect_failed`.
    Connect,
    /// Transport: close the connection. Frames already queued in
    /// [`poll_transmit`](Connection::poll_transmit) may be written first.
    Disconnect,
    /// Transport: switch to the RDMA data mover (iSER Hello exchange), then report
    /// [`enable_dm_done`](Connection::enable_dm_done).
    EnableDatamover,
    /// Client: suspend the connection's tasks (connection lost in full feature phase).
    SuspendTasks,
    /// Client: abort every task of the connection.
    AbortTasks,
    /// A received PDU was refused. `action` says what was done: for
    /// [`ErrorAction::Reject`] a target queued a Reject PDU carrying `header` (an
    /// initiator, which cannot send Reject, discarded the PDU); for
    /// [`ErrorAction::DropConnection`] the connection is failing (`CE_TRANSPORT_FAIL`).
    ProtocolError {
        /// What was wrong.
        error: RxError,
        /// What the connection did.
        action: ErrorAction,
        /// The refused PDU's BHS, when the stream was still in sync.
        header: Option<[u8; BHS_LEN]>,
    },
}

/// One frame appended by [`Connection::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Opcode of the PDU.
    pub opcode: Opcode,
    /// Bytes appended to the caller's buffer.
    pub len: usize,
}

/// Logout events about this connection that the client raises because the PDU
/// travelled on another connection of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogoutNotice {
    /// A Logout Request (close connection / remove for recovery) naming this connection's
    /// CID was sent (initiator) or received (target) on another connection:
    /// `CE_LOGOUT_OTHER_CONN_SND` / `CE_LOGOUT_OTHER_CONN_RCV`.
    OtherConn,
    /// The session was logged out or reinstated: `CE_LOGOUT_SESSION_SUCCESS`.
    SessionComplete,
}

#[derive(Debug, Clone, Copy)]
struct TxMeta {
    opcode: Opcode,
    len: usize,
    /// Event raised when the frame leaves (deferred response completions).
    done: Option<SmEvent>,
}

/// An IDM connection of one role: state machine, receive framer, transmit queue,
/// timers and the event queue for its owner. See the [module documentation](self).
#[derive(Debug)]
pub struct Connection {
    reader: PduReader,
    core: Core,
}

/// Everything but the receive buffer, so that a PDU borrowed from the reader can be
/// checked against the state machine.
#[derive(Debug)]
struct Core {
    config: ConnConfig,
    sm: StateMachine,
    events: VecDeque<ConnEvent>,
    /// Events raised while handling another one, handled right after it.
    pending: VecDeque<SmEvent>,
    login_timer: Option<Instant>,
    logout_timer: Option<Instant>,
    cleanup_timer: Option<Instant>,
    tx_buf: Vec<u8>,
    tx_start: usize,
    tx_queue: VecDeque<TxMeta>,
    tx_digests: Digests,
    max_send: u32,
    /// CID of the latest Login Request.
    cid: Option<u16>,
    /// CID saved at login success (Logout Requests and drops are matched against it).
    login_cid: Option<u16>,
    final_login_rsp: bool,
    target_sn: TargetSn,
    /// Framing lost or transport gone: no more received PDUs.
    rx_dead: bool,
    /// Terminal state reached and resources released.
    closed: bool,
}

impl Connection {
    /// A connection in S1 FREE with the login-phase frame limits.
    pub fn new(role: Role, config: ConnConfig) -> Self {
        Self {
            reader: PduReader::new(role, FrameLimits::LOGIN),
            core: Core {
                config,
                sm: StateMachine::new(role),
                events: VecDeque::new(),
                pending: VecDeque::new(),
                login_timer: None,
                logout_timer: None,
                cleanup_timer: None,
                tx_buf: Vec::new(),
                tx_start: 0,
                tx_queue: VecDeque::new(),
                tx_digests: Digests::NONE,
                max_send: DEFAULT_MAX_RECV_DATA_SEGMENT_LEN,
                cid: None,
                login_cid: None,
                final_login_rsp: false,
                target_sn: TargetSn::default(),
                rx_dead: false,
                closed: false,
            },
        }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.core.sm.role()
    }

    /// The current state.
    pub fn state(&self) -> ConnState {
        self.core.sm.state()
    }

    /// The state machine (state, last state, audit ring).
    pub fn state_machine(&self) -> &StateMachine {
        &self.core.sm
    }

    /// The last [`AUDIT_LEN`] state machine events, oldest first.
    pub fn audit(&self) -> impl Iterator<Item = &AuditEntry> + '_ {
        self.core.sm.audit()
    }

    /// True once a terminal state (S9, S9A, S11) released the connection: the owner
    /// may drop it.
    pub fn is_closed(&self) -> bool {
        self.core.closed
    }

    /// The CID that logged in, once login succeeded.
    pub fn login_cid(&self) -> Option<u16> {
        self.core.login_cid
    }

    /// Sequence numbers put on PDUs the connection generates itself (Reject). The
    /// target client keeps them current.
    pub fn set_target_sn(&mut self, sn: TargetSn) {
        self.core.target_sn = sn;
    }

    // ---- transport side -------------------------------------------------------------

    /// Initiator: asks for a transport connection (`CE_CONNECT_REQ`, S1 → S2); the
    /// owner gets [`ConnEvent::Connect`].
    pub fn connect(&mut self, now: Instant) -> Result<(), ConnError> {
        Ok(self.core.fire(now, SmEvent::ConnectReq)?)
    }

    /// Initiator: the transport is up (`CE_CONNECT_SUCCESS`, S2 → S4).
    pub fn connect_succeeded(&mut self, now: Instant) -> Result<(), ConnError> {
        Ok(self.core.fire(now, SmEvent::ConnectSuccess)?)
    }

    /// The transport connection could not be set up (`CE_CONNECT_FAIL`).
    pub fn connect_failed(&mut self, now: Instant) -> Result<(), ConnError> {
        Ok(self.core.fire(now, SmEvent::ConnectFail)?)
    }

    /// Target: a transport connection was accepted (`CE_CONNECT_ACCEPT`, S1 → S3); the
    /// login timer starts and the client is told [`Notify::ConnectAccept`].
    pub fn accept(&mut self, now: Instant) -> Result<(), ConnError> {
        Ok(self.core.fire(now, SmEvent::ConnectAccept)?)
    }

    /// Target client: refuse the connection just accepted (`CE_CONNECT_REJECT`,
    /// S3 → S9A; no further notifications).
    pub fn reject(&mut self, now: Instant) -> Result<(), ConnError> {
        Ok(self.core.fire(now, SmEvent::ConnectReject)?)
    }

    /// The transport failed or reached end of stream (`CE_TRANSPORT_FAIL`). Frames not
    /// yet handed out are abandoned; deferred response completions fire as failed.
    pub fn transport_failed(&mut self, now: Instant) {
        self.core.rx_dead = true;
        // Ignored where the table says so (terminal states, S12).
        let _ = self.core.fire(now, SmEvent::TransportFail);
        self.core.abandon_tx(now);
    }

    /// iSER: the transport finished (or failed) switching to the RDMA data mover
    /// (`CE_ENABLE_DM_SUCCESS`, S12 → S5 / `CE_ENABLE_DM_FAIL`, S12 → S9).
    pub fn enable_dm_done(&mut self, now: Instant, ok: bool) -> Result<(), ConnError> {
        let event = if ok {
            SmEvent::EnableDmSuccess
        } else {
            SmEvent::EnableDmFail
        };
        Ok(self.core.fire(now, event)?)
    }

    /// Copies received bytes into the receive buffer; returns how many were taken.
    /// Take the PDUs out with [`poll_pdu`](Self::poll_pdu) until it returns `None`
    /// before feeding the rest. Bytes for a closed connection are discarded.
    pub fn handle_bytes(&mut self, data: &[u8]) -> usize {
        if self.core.closed || self.core.rx_dead {
            return data.len();
        }
        self.reader.feed(data)
    }

    /// Free space of the receive buffer to read the socket into (zero-copy path);
    /// then [`commit`](Self::commit).
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.reader.read_buf()
    }

    /// Records that `n` bytes were read into [`read_buf`](Self::read_buf).
    pub fn commit(&mut self, n: usize) {
        self.reader.commit(n);
    }

    /// Takes the next whole PDU the client must process, checks it against role and
    /// state, drives the state machine with it, and lends it to `f` (borrowed from the
    /// receive buffer). PDUs refused or dropped on the way are handled here (see
    /// [`ConnEvent::ProtocolError`]). Returns `None` when no whole PDU is buffered.
    pub fn poll_pdu<R>(&mut self, now: Instant, f: impl FnOnce(RxPdu<'_>) -> R) -> Option<R> {
        let Self { reader, core } = self;
        loop {
            if core.closed || core.rx_dead {
                return None;
            }
            match reader.next_pdu() {
                Ok(None) => return None,
                Ok(Some(rx)) => {
                    if core.on_rx(now, &rx.pdu, rx.header) {
                        return Some(f(rx));
                    }
                }
                Err(e) => {
                    let header = reader.rejected_header().copied();
                    core.on_rx_error(now, e, header);
                }
            }
        }
    }

    /// Appends the next queued frame to `buf` (several calls may batch frames into one
    /// write). A frame whose leaving completes a deferred response (failing Login
    /// Response, Logout Response) raises its `*_SND_DONE` event now.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.core.poll_transmit(now, buf)
    }

    /// The earliest armed timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.core.login_timer,
            self.core.logout_timer,
            self.core.cleanup_timer,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires the timers due at `now` (`CE_LOGIN_TIMEOUT`, `CE_LOGOUT_TIMEOUT`,
    /// `CE_CLEANUP_TIMEOUT`).
    pub fn handle_timeout(&mut self, now: Instant) {
        let core = &mut self.core;
        if core.login_timer.is_some_and(|t| t <= now) {
            core.login_timer = None;
            let _ = core.fire(now, SmEvent::LoginTimeout);
        }
        if core.logout_timer.is_some_and(|t| t <= now) {
            core.logout_timer = None;
            let _ = core.fire(now, SmEvent::LogoutTimeout);
        }
        if core.cleanup_timer.is_some_and(|t| t <= now) {
            core.cleanup_timer = None;
            let _ = core.fire(now, SmEvent::CleanupTimeout);
        }
    }

    /// The next event for the owner, oldest first.
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        self.core.events.pop_front()
    }

    // ---- client side ----------------------------------------------------------------

    /// Sends a PDU without AHS. See [`send_pdu_with_ahs`](Self::send_pdu_with_ahs).
    pub fn send_pdu(&mut self, now: Instant, pdu: &Pdu, data: &[u8]) -> Result<(), ConnError> {
        self.core.send(now, pdu, &[], data)
    }

    /// Checks `pdu` against role and state, raises its state machine event (Login
    /// Request, Login Response with a failure status, Logout Request/Response, Async
    /// logout/drop, NOP during login), frames it with the digests in force and queues
    /// it for [`poll_transmit`](Self::poll_transmit). Nothing is queued on error.
    ///
    /// A PDU not allowed in the current state is refused with
    /// [`ConnError::NotAllowed`] and raises `CE_TX_PROTOCOL_ERROR` (fatal in S1/S2, as
    /// in COMSTAR).
    pub fn send_pdu_with_ahs(
        &mut self,
        now: Instant,
        pdu: &Pdu,
        ahs: &[u8],
        data: &[u8],
    ) -> Result<(), ConnError> {
        self.core.send(now, pdu, ahs, data)
    }

    /// Login succeeded: call after sending (target) or receiving and accepting
    /// (initiator) the final Login Response. Switches to the negotiated digests and
    /// data segment limits, and goes to S5 LOGGED_IN, or to S12 ENABLE_DM when
    /// `params.rdma_extensions` (the owner then gets [`ConnEvent::EnableDatamover`]).
    pub fn login_succeeded(&mut self, now: Instant, params: FfpParams) -> Result<(), ConnError> {
        if !self.core.final_login_rsp {
            return Err(ConnError::LoginIncomplete);
        }
        self.core.sm.set_rdma_extensions(params.rdma_extensions);
        let event = match self.role() {
            Role::Target => SmEvent::LoginSuccessSnd,
            Role::Initiator => SmEvent::LoginSuccessRcv,
        };
        self.core.fire(now, event)?;
        self.reader.set_limits(FrameLimits {
            digests: params.digests,
            max_data_segment_len: params.max_recv_data_segment_len,
        });
        self.core.tx_digests = params.digests;
        self.core.max_send = params.max_send_data_segment_len;
        Ok(())
    }

    /// The client fails the login without a failing Login Response crossing this
    /// connection just now (a failing Login Response fails the login by itself).
    /// Target: `CE_LOGIN_FAIL_SND`, S4 → S9B until a Login Response still queued has
    /// left, then S9. Initiator: `CE_LOGIN_FAIL_RCV`, S4 → S9.
    pub fn login_failed(&mut self, now: Instant) -> Result<(), ConnError> {
        let event = match self.role() {
            Role::Target => SmEvent::LoginFailSnd,
            Role::Initiator => SmEvent::LoginFailRcv,
        };
        Ok(self.core.fire(now, event)?)
    }

    /// Logout events the client raises for this connection (logout of this connection
    /// requested on another one, or the session logged out). Logout PDUs on this
    /// connection raise their events by themselves.
    pub fn logout(&mut self, now: Instant, notice: LogoutNotice) -> Result<(), ConnError> {
        let event = match (notice, self.role()) {
            (LogoutNotice::OtherConn, Role::Target) => SmEvent::LogoutOtherConnRcv,
            (LogoutNotice::OtherConn, Role::Initiator) => SmEvent::LogoutOtherConnSnd,
            (LogoutNotice::SessionComplete, _) => SmEvent::LogoutSessionSuccess,
        };
        Ok(self.core.fire(now, event)?)
    }

    /// Raises any state machine event: for the events COMSTAR leaves to the client
    /// (`CE_ASYNC_DROP_CONN_*` / `CE_ASYNC_DROP_ALL_CONN_*` when the Async Message
    /// travelled on another connection, `CE_LOGOUT_OTHER_CONN_*`,
    /// `CE_LOGOUT_SESSION_SUCCESS`, ...). Refused when not in the table.
    pub fn raise(&mut self, now: Instant, event: SmEvent) -> Result<(), ConnError> {
        Ok(self.core.fire(now, event)?)
    }
}

impl Core {
    /// Handles one event and everything it raises.
    fn fire(&mut self, now: Instant, event: SmEvent) -> Result<(), TransitionError> {
        let result = self
            .sm
            .handle(now, event)
            .map(|step| self.apply(now, &step));
        self.drain(now);
        result
    }

    /// Handles the events raised by actions (refusals are traced and audited).
    fn drain(&mut self, now: Instant) {
        while let Some(event) = self.pending.pop_front() {
            if let Ok(step) = self.sm.handle(now, event) {
                self.apply(now, &step);
            }
        }
    }

    fn deadline(now: Instant, after: Duration) -> Option<Instant> {
        // An unrepresentable deadline never fires rather than panicking.
        now.checked_add(after)
    }

    fn apply(&mut self, now: Instant, step: &Step) {
        for action in step.actions() {
            match action {
                Action::Connect => self.events.push_back(ConnEvent::Connect),
                Action::StartLoginTimer => {
                    self.login_timer = Self::deadline(now, self.config.login_timeout);
                }
                Action::StopLoginTimer => self.login_timer = None,
                Action::StartLogoutTimer => {
                    self.logout_timer = Self::deadline(now, self.config.logout_timeout);
                }
                Action::StopLogoutTimer => self.logout_timer = None,
                Action::StartCleanupTimer => {
                    self.cleanup_timer = Self::deadline(now, self.config.cleanup_timeout);
                }
                Action::StopCleanupTimer => self.cleanup_timer = None,
                Action::NotifyClient(n) => self.events.push_back(ConnEvent::Notify(n)),
                Action::Disconnect => self.events.push_back(ConnEvent::Disconnect),
                Action::EnableDatamover => self.events.push_back(ConnEvent::EnableDatamover),
                Action::SaveLoginInfo => self.login_cid = self.cid,
                Action::AwaitSendDone => self.await_send_done(step.event),
                Action::SuspendTasks => self.events.push_back(ConnEvent::SuspendTasks),
                Action::AbortAllTasks => self.events.push_back(ConnEvent::AbortTasks),
                Action::Free => self.free(),
            }
        }
    }

    /// Tags the response just queued so its leaving raises the `*_SND_DONE` event; if
    /// it is not queued any more (or never was), raises it now.
    fn await_send_done(&mut self, event: SmEvent) {
        let Some(done) = event.send_done() else {
            return;
        };
        let opcode = if done == SmEvent::LoginFailSndDone {
            Opcode::LoginResponse
        } else {
            Opcode::LogoutResponse
        };
        match self.tx_queue.back_mut() {
            Some(m) if m.opcode == opcode && m.done.is_none() => m.done = Some(done),
            _ => self.pending.push_back(done),
        }
    }

    fn free(&mut self) {
        self.closed = true;
        self.rx_dead = true;
        self.login_timer = None;
        self.logout_timer = None;
        self.cleanup_timer = None;
        self.tx_queue.clear();
        self.tx_buf.clear();
        self.tx_start = 0;
    }

    /// Drops every queued frame; their deferred completions fire (as failed sends).
    fn abandon_tx(&mut self, now: Instant) {
        let dones: Vec<SmEvent> = self.tx_queue.iter().filter_map(|m| m.done).collect();
        self.tx_queue.clear();
        self.tx_buf.clear();
        self.tx_start = 0;
        self.pending.extend(dones);
        self.drain(now);
    }

    fn queue(&mut self, frame: &TxFrame<'_>, opcode: Opcode) {
        let before = self.tx_buf.len();
        frame.write_to(&mut self.tx_buf);
        self.tx_queue.push_back(TxMeta {
            opcode,
            len: self.tx_buf.len() - before,
            done: None,
        });
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let meta = self.tx_queue.pop_front()?;
        let end = self.tx_start + meta.len;
        if let Some(bytes) = self.tx_buf.get(self.tx_start..end) {
            buf.extend_from_slice(bytes);
        }
        self.tx_start = end;
        if self.tx_queue.is_empty() {
            self.tx_buf.clear();
            self.tx_start = 0;
        } else if self.tx_start >= TX_COMPACT && self.tx_start * 2 >= self.tx_buf.len() {
            self.tx_buf.drain(..self.tx_start);
            self.tx_start = 0;
        }
        if let Some(done) = meta.done {
            let _ = self.fire(now, done);
        }
        Some(Transmit {
            opcode: meta.opcode,
            len: meta.len,
        })
    }

    fn send(&mut self, now: Instant, pdu: &Pdu, ahs: &[u8], data: &[u8]) -> Result<(), ConnError> {
        if self.closed {
            return Err(ConnError::Closed);
        }
        let opcode = pdu.opcode();
        let role = self.sm.role();
        if role.accepts(opcode) {
            return Err(ConnError::WrongRole { role, opcode });
        }
        let state = self.sm.state();
        match pdu_policy(opcode, state) {
            PduPolicy::Allow => {}
            PduPolicy::Drop => {
                tracing::trace!(?opcode, state = state.name(), "idm conn: tx PDU dropped");
                return Err(ConnError::Dropped { opcode, state });
            }
            PduPolicy::ProtocolError => {
                let _ = self.fire(now, SmEvent::TxProtocolError);
                return Err(ConnError::NotAllowed { opcode, state });
            }
        }
        if data.len() > self.max_send as usize {
            return Err(ConnError::Codec(PduError::Oversize {
                len: u32::try_from(data.len()).unwrap_or(u32::MAX),
                max: self.max_send,
            }));
        }
        let frame = TxFrame::from_pdu(pdu, ahs, data, self.tx_digests)?;
        let step = match self.tx_event(pdu)? {
            Some(event) => Some(self.sm.handle(now, event)?),
            None => None,
        };
        self.note_login_pdu(pdu);
        self.queue(&frame, opcode);
        if let Some(step) = step {
            self.apply(now, &step);
            self.drain(now);
        }
        Ok(())
    }

    /// The event a PDU we send raises (COMSTAR `idm_pdu_tx` / `idm_parse_*`).
    fn tx_event(&self, pdu: &Pdu) -> Result<Option<SmEvent>, ConnError> {
        let state = self.sm.state();
        Ok(match pdu {
            Pdu::LoginRequest(_) => Some(SmEvent::LoginSnd),
            Pdu::LoginResponse(r) if !r.status.is_success() => Some(SmEvent::LoginFailSnd),
            Pdu::LoginResponse(_) => Some(SmEvent::MiscTx),
            Pdu::LogoutRequest(r) => self
                .logout_request_event(r.reason, r.cid, true)
                .map_err(|_| PduError::InvalidField("logout reason code"))?,
            Pdu::LogoutResponse(r) if state == ConnState::S6InLogout => {
                Some(if r.response == LogoutResponseCode::Success {
                    SmEvent::LogoutSuccessSnd
                } else {
                    SmEvent::LogoutFailSnd
                })
            }
            Pdu::AsyncMessage(m) => self.async_event(m, true),
            Pdu::NopOut(_) | Pdu::NopIn(_) if state == ConnState::S4InLogin => {
                Some(SmEvent::MiscTx)
            }
            _ => None,
        })
    }

    /// The event a PDU we receive raises.
    fn rx_event(&self, pdu: &Pdu) -> Result<Option<SmEvent>, RxError> {
        let state = self.sm.state();
        Ok(match pdu {
            Pdu::LoginRequest(_) => Some(SmEvent::LoginRcv),
            Pdu::LoginResponse(r) if !r.status.is_success() => Some(SmEvent::LoginFailRcv),
            Pdu::LoginResponse(_) => Some(SmEvent::MiscRx),
            Pdu::LogoutRequest(r) => self
                .logout_request_event(r.reason, r.cid, false)
                .map_err(RxError::InvalidLogoutReason)?,
            Pdu::LogoutResponse(r) if state == ConnState::S6InLogout => {
                Some(if r.response == LogoutResponseCode::Success {
                    SmEvent::LogoutSuccessRcv
                } else {
                    SmEvent::LogoutFailRcv
                })
            }
            Pdu::AsyncMessage(m) => self.async_event(m, false),
            Pdu::NopOut(_) | Pdu::NopIn(_) if state == ConnState::S4InLogin => {
                Some(SmEvent::MiscRx)
            }
            _ => None,
        })
    }

    /// Logout Request → event; a request for another CID is plain traffic here (the
    /// client raises `CE_LOGOUT_OTHER_CONN_*` on that connection).
    fn logout_request_event(
        &self,
        reason: LogoutReason,
        cid: u16,
        tx: bool,
    ) -> Result<Option<SmEvent>, u8> {
        match reason {
            LogoutReason::CloseSession => Ok(Some(if tx {
                SmEvent::LogoutSessionSnd
            } else {
                SmEvent::LogoutSessionRcv
            })),
            LogoutReason::CloseConnection | LogoutReason::RemoveForRecovery => {
                Ok((self.login_cid == Some(cid)).then_some(if tx {
                    SmEvent::LogoutThisConnSnd
                } else {
                    SmEvent::LogoutThisConnRcv
                }))
            }
            LogoutReason::Unknown(v) => Err(v),
        }
    }

    /// Async Message → event; a connection drop naming another CID is plain traffic
    /// here (the client raises the drop on that connection).
    fn async_event(&self, m: &AsyncMessage, tx: bool) -> Option<SmEvent> {
        let (logout, drop, drop_all) = if tx {
            (
                SmEvent::AsyncLogoutSnd,
                SmEvent::AsyncDropConnSnd,
                SmEvent::AsyncDropAllConnSnd,
            )
        } else {
            (
                SmEvent::AsyncLogoutRcv,
                SmEvent::AsyncDropConnRcv,
                SmEvent::AsyncDropAllConnRcv,
            )
        };
        match m.event {
            AsyncEvent::LogoutRequest => Some(logout),
            AsyncEvent::ConnectionDrop if self.login_cid == Some(m.parameter1) => Some(drop),
            AsyncEvent::SessionDrop => Some(drop_all),
            _ => None,
        }
    }

    /// Remembers the CID of Login Requests and whether the final Login Response passed.
    fn note_login_pdu(&mut self, pdu: &Pdu) {
        match pdu {
            Pdu::LoginRequest(r) => self.cid = Some(r.cid),
            Pdu::LoginResponse(r)
                if r.status.is_success() && r.transit && r.nsg == Stage::FullFeaturePhase =>
            {
                self.final_login_rsp = true;
            }
            _ => {}
        }
    }

    /// A whole, well-formed PDU arrived; true when the client must see it.
    fn on_rx(&mut self, now: Instant, pdu: &Pdu, header: &[u8; BHS_LEN]) -> bool {
        let state = self.sm.state();
        let opcode = pdu.opcode();
        match pdu_policy(opcode, state) {
            PduPolicy::Allow => {}
            PduPolicy::Drop => {
                tracing::trace!(?opcode, state = state.name(), "idm conn: rx PDU dropped");
                return false;
            }
            PduPolicy::ProtocolError => {
                self.rx_protocol_error(now, RxError::NotAllowed { opcode, state }, Some(*header));
                return false;
            }
        }
        let event = match self.rx_event(pdu) {
            Ok(event) => event,
            Err(e) => {
                self.rx_protocol_error(now, e, Some(*header));
                return false;
            }
        };
        if let Some(event) = event {
            match self.sm.handle(now, event) {
                Ok(step) => {
                    self.note_login_pdu(pdu);
                    self.apply(now, &step);
                    self.drain(now);
                }
                Err(e) => {
                    self.rx_protocol_error(now, RxError::Unexpected(e), Some(*header));
                    return false;
                }
            }
        } else {
            self.note_login_pdu(pdu);
        }
        true
    }

    /// The codec refused received bytes.
    fn on_rx_error(&mut self, now: Instant, error: PduError, header: Option<[u8; BHS_LEN]>) {
        let state = self.sm.state();
        if matches!(state, ConnState::S8Cleanup | ConnState::S10InCleanup) {
            tracing::trace!(%error, state = state.name(), "idm conn: rx error while cleaning up");
            self.rx_dead |= error.is_fatal();
            return;
        }
        let header = if error.is_fatal() { None } else { header };
        self.rx_protocol_error(now, RxError::Codec(error), header);
    }

    /// A refused PDU: Reject in full feature phase (target), otherwise the connection
    /// is dropped (no Reject may be sent during login, RFC 7143 §6.3).
    fn rx_protocol_error(&mut self, now: Instant, error: RxError, header: Option<[u8; BHS_LEN]>) {
        let state = self.sm.state();
        let action = match error {
            RxError::Codec(e) if e.is_fatal() => ErrorAction::DropConnection,
            _ if state.is_ffp() => ErrorAction::Reject(error.reject_reason()),
            _ => ErrorAction::DropConnection,
        };
        tracing::debug!(%error, ?action, state = state.name(), "idm conn: received PDU refused");
        self.events.push_back(ConnEvent::ProtocolError {
            error,
            action,
            header,
        });
        let _ = self.fire(now, SmEvent::RxProtocolError);
        match action {
            ErrorAction::Reject(reason) => {
                if let (Role::Target, Some(h), false) = (self.sm.role(), header, self.closed) {
                    self.queue_reject(reason, &h);
                }
            }
            ErrorAction::DropConnection => {
                self.rx_dead = true;
                let _ = self.fire(now, SmEvent::TransportFail);
            }
        }
    }

    fn queue_reject(&mut self, reason: RejectReason, header: &[u8; BHS_LEN]) {
        let pdu = Pdu::Reject(Reject {
            reason,
            sn: self.target_sn,
            data_sn_or_r2t_sn: 0,
        });
        match TxFrame::from_pdu(&pdu, &[], header, self.tx_digests) {
            Ok(frame) => self.queue(&frame, Opcode::Reject),
            Err(e) => tracing::debug!(error = %e, "idm conn: cannot frame Reject"),
        }
    }
}
