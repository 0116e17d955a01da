//! The IDM connection state machine as data (reference/comstar.md §6.2).
//!
//! States and events keep COMSTAR's names (`CS_S4_IN_LOGIN` is
//! [`ConnState::S4InLogin`], `CE_LOGIN_RCV` is [`SmEvent::LoginRcv`]). The transition
//! function is the `const` table [`TABLE`]: each [`Rule`] maps a state and a set of
//! events to the next state plus the actions of the transition itself; the actions
//! of entering a state come from [`entry_actions`]. Every (state, event) pair that
//! no rule names is refused with a [`TransitionError`], which is logged at `trace`
//! and recorded in the audit ring like any other event (COMSTAR's SM audit).
//!
//! Actions are values: the machine never performs I/O and never reads a clock
//! (timestamps are passed in only for the audit ring).
//!
//! Where the reference summary is terse, the rules follow the illumos
//! `idm_conn_sm.c` handlers; "don't care" events there are explicit
//! [`Next::Stay`] rules here, so "not in the table" means exactly what an
//! `ASSERT(0)` meant in COMSTAR.

use std::fmt;
use std::time::Instant;

use crate::pdu::{Opcode, Role};

/// IDM connection states (COMSTAR `idm_conn_state_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ConnState {
    /// S1 FREE: created, no transport yet.
    S1Free = 0,
    /// S2 XPT_WAIT: initiator, transport connect in progress.
    S2XptWait = 1,
    /// S3 XPT_UP: target, transport accepted, waiting for the first Login Request.
    S3XptUp = 2,
    /// S4 IN_LOGIN: login PDUs are being exchanged.
    S4InLogin = 3,
    /// S5 LOGGED_IN: full feature phase.
    S5LoggedIn = 4,
    /// S6 IN_LOGOUT: a logout of this connection or its session is in progress.
    S6InLogout = 5,
    /// S7 LOGOUT_REQ: the target asked for a logout (Async Message, event 1).
    S7LogoutReq = 6,
    /// S8 CLEANUP: the connection failed in full feature phase; tasks are suspended.
    S8Cleanup = 7,
    /// S9 INIT_ERROR: the connection failed before full feature phase (terminal).
    S9InitError = 8,
    /// S9A REJECTED: the target client refused the connection (terminal, no callbacks).
    S9aRejected = 9,
    /// S9B WAIT_SND_DONE: a failing Login Response is on its way out.
    S9bWaitSndDone = 10,
    /// S10 IN_CLEANUP: cleanup state, logout for recovery requested on another connection.
    S10InCleanup = 11,
    /// S11 COMPLETE: the connection is finished (terminal).
    S11Complete = 12,
    /// S12 ENABLE_DM: switching the connection to the RDMA data mover (iSER).
    S12EnableDm = 13,
}

impl ConnState {
    /// Number of states.
    pub const COUNT: usize = 14;

    /// Every state, in discriminant order.
    pub const ALL: [ConnState; Self::COUNT] = [
        Self::S1Free,
        Self::S2XptWait,
        Self::S3XptUp,
        Self::S4InLogin,
        Self::S5LoggedIn,
        Self::S6InLogout,
        Self::S7LogoutReq,
        Self::S8Cleanup,
        Self::S9InitError,
        Self::S9aRejected,
        Self::S9bWaitSndDone,
        Self::S10InCleanup,
        Self::S11Complete,
        Self::S12EnableDm,
    ];

    /// COMSTAR's name of the state.
    pub const fn name(self) -> &'static str {
        match self {
            Self::S1Free => "S1_FREE",
            Self::S2XptWait => "S2_XPT_WAIT",
            Self::S3XptUp => "S3_XPT_UP",
            Self::S4InLogin => "S4_IN_LOGIN",
            Self::S5LoggedIn => "S5_LOGGED_IN",
            Self::S6InLogout => "S6_IN_LOGOUT",
            Self::S7LogoutReq => "S7_LOGOUT_REQ",
            Self::S8Cleanup => "S8_CLEANUP",
            Self::S9InitError => "S9_INIT_ERROR",
            Self::S9aRejected => "S9A_REJECTED",
            Self::S9bWaitSndDone => "S9B_WAIT_SND_DONE",
            Self::S10InCleanup => "S10_IN_CLEANUP",
            Self::S11Complete => "S11_COMPLETE",
            Self::S12EnableDm => "S12_ENABLE_DM",
        }
    }

    /// S9, S9A and S11: nothing happens on the connection any more.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::S9InitError | Self::S9aRejected | Self::S11Complete
        )
    }

    /// S5 to S7: full feature phase PDUs may flow.
    pub const fn is_ffp(self) -> bool {
        matches!(
            self,
            Self::S5LoggedIn | Self::S6InLogout | Self::S7LogoutReq
        )
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Declares [`SmEvent`] with its names and the `ALL` list from one list.
macro_rules! sm_events {
    ($($(#[$m:meta])* $variant:ident = $val:literal => $name:literal,)*) => {
        /// Events of the IDM connection state machine (COMSTAR `idm_conn_event_t`).
        ///
        /// `_SND`/`_RCV` name the side of the wire from this connection's point of
        /// view. Most are raised by [`Connection`](super::Connection) from PDUs, timers
        /// and transport reports; some concern a connection other than the one the PDU
        /// travelled on and are raised by the client ([`Connection::raise`](super::Connection::raise)).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum SmEvent {
            $($(#[$m])* $variant = $val,)*
        }

        impl SmEvent {
            /// Every event, in discriminant order.
            pub const ALL: [SmEvent; Self::COUNT] = [$(Self::$variant,)*];

            /// COMSTAR's name of the event.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

sm_events! {
    // Initiator events.
    /// Initiator asks for a transport connection.
    ConnectReq = 0 => "CE_CONNECT_REQ",
    /// The transport connection could not be set up.
    ConnectFail = 1 => "CE_CONNECT_FAIL",
    /// The transport connection is up (initiator).
    ConnectSuccess = 2 => "CE_CONNECT_SUCCESS",
    /// Initiator sent a Login Request.
    LoginSnd = 3 => "CE_LOGIN_SND",
    /// Initiator completed login (final Login Response received and accepted).
    LoginSuccessRcv = 4 => "CE_LOGIN_SUCCESS_RCV",
    /// Initiator received a failing Login Response (or gave up the login).
    LoginFailRcv = 5 => "CE_LOGIN_FAIL_RCV",
    /// Initiator sent a Logout Request for this connection.
    LogoutThisConnSnd = 6 => "CE_LOGOUT_THIS_CONN_SND",
    /// A Logout Request for this connection was sent on another connection.
    LogoutOtherConnSnd = 7 => "CE_LOGOUT_OTHER_CONN_SND",
    /// Initiator sent a Logout Request closing the session.
    LogoutSessionSnd = 8 => "CE_LOGOUT_SESSION_SND",
    /// Initiator received a successful Logout Response.
    LogoutSuccessRcv = 9 => "CE_LOGOUT_SUCCESS_RCV",
    /// Initiator received a failing Logout Response.
    LogoutFailRcv = 10 => "CE_LOGOUT_FAIL_RCV",
    /// Initiator received an Async Message requesting logout.
    AsyncLogoutRcv = 11 => "CE_ASYNC_LOGOUT_RCV",
    /// Initiator learnt the target drops this connection.
    AsyncDropConnRcv = 12 => "CE_ASYNC_DROP_CONN_RCV",
    /// Initiator learnt the target drops all connections of the session.
    AsyncDropAllConnRcv = 13 => "CE_ASYNC_DROP_ALL_CONN_RCV",
    // Target events.
    /// Target accepted a transport connection.
    ConnectAccept = 14 => "CE_CONNECT_ACCEPT",
    /// Target client refused the new connection.
    ConnectReject = 15 => "CE_CONNECT_REJECT",
    /// Target received a Login Request.
    LoginRcv = 16 => "CE_LOGIN_RCV",
    /// The login timer expired.
    LoginTimeout = 17 => "CE_LOGIN_TIMEOUT",
    /// Target completed login (final Login Response sent).
    LoginSuccessSnd = 18 => "CE_LOGIN_SUCCESS_SND",
    /// Target sends a failing Login Response.
    LoginFailSnd = 19 => "CE_LOGIN_FAIL_SND",
    /// The failing Login Response left.
    LoginFailSndDone = 20 => "CE_LOGIN_FAIL_SND_DONE",
    /// Target received a Logout Request for this connection.
    LogoutThisConnRcv = 21 => "CE_LOGOUT_THIS_CONN_RCV",
    /// A Logout Request for this connection arrived on another connection.
    LogoutOtherConnRcv = 22 => "CE_LOGOUT_OTHER_CONN_RCV",
    /// Target received a Logout Request closing the session.
    LogoutSessionRcv = 23 => "CE_LOGOUT_SESSION_RCV",
    /// Target sends a successful Logout Response.
    LogoutSuccessSnd = 24 => "CE_LOGOUT_SUCCESS_SND",
    /// The successful Logout Response left.
    LogoutSuccessSndDone = 25 => "CE_LOGOUT_SUCCESS_SND_DONE",
    /// Target sends a failing Logout Response.
    LogoutFailSnd = 26 => "CE_LOGOUT_FAIL_SND",
    /// The failing Logout Response left.
    LogoutFailSndDone = 27 => "CE_LOGOUT_FAIL_SND_DONE",
    /// The cleanup timer expired.
    CleanupTimeout = 28 => "CE_CLEANUP_TIMEOUT",
    /// Target sent an Async Message requesting logout.
    AsyncLogoutSnd = 29 => "CE_ASYNC_LOGOUT_SND",
    /// Target announced it drops this connection.
    AsyncDropConnSnd = 30 => "CE_ASYNC_DROP_CONN_SND",
    /// Target announced it drops all connections of the session.
    AsyncDropAllConnSnd = 31 => "CE_ASYNC_DROP_ALL_CONN_SND",
    /// The logout-request timer expired (target, S7).
    LogoutTimeout = 32 => "CE_LOGOUT_TIMEOUT",
    // Common events.
    /// The transport failed (reset, end of stream, framing lost).
    TransportFail = 33 => "CE_TRANSPORT_FAIL",
    /// Any other PDU sent.
    MiscTx = 34 => "CE_MISC_TX",
    /// A PDU that may not be sent in this state was offered for sending.
    TxProtocolError = 35 => "CE_TX_PROTOCOL_ERROR",
    /// Any other PDU received.
    MiscRx = 36 => "CE_MISC_RX",
    /// A PDU that may not be received in this state (or a malformed one) arrived.
    RxProtocolError = 37 => "CE_RX_PROTOCOL_ERROR",
    /// The session this connection belongs to was logged out (or reinstated).
    LogoutSessionSuccess = 38 => "CE_LOGOUT_SESSION_SUCCESS",
    /// A new connection reinstates this one.
    ConnReinstate = 39 => "CE_CONN_REINSTATE",
    /// Connection reinstatement finished.
    ConnReinstateSuccess = 40 => "CE_CONN_REINSTATE_SUCCESS",
    /// Connection reinstatement failed.
    ConnReinstateFail = 41 => "CE_CONN_REINSTATE_FAIL",
    /// The transport finished switching to the RDMA data mover.
    EnableDmSuccess = 42 => "CE_ENABLE_DM_SUCCESS",
    /// The transport could not switch to the RDMA data mover.
    EnableDmFail = 43 => "CE_ENABLE_DM_FAIL",
}

impl SmEvent {
    /// Number of events.
    pub const COUNT: usize = 44;

    /// For an event that waits until its response PDU has left, the event raised then.
    pub const fn send_done(self) -> Option<SmEvent> {
        match self {
            Self::LoginFailSnd => Some(Self::LoginFailSndDone),
            Self::LogoutSuccessSnd => Some(Self::LogoutSuccessSndDone),
            Self::LogoutFailSnd => Some(Self::LogoutFailSndDone),
            _ => None,
        }
    }
}

impl fmt::Display for SmEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why full feature phase ended (COMSTAR `idm_ffp_disable_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FfpDisableReason {
    /// The connection failed (implicit logout).
    ConnFail,
    /// The connection is logging out.
    ConnLogout,
    /// The session is logging out.
    SessLogout,
}

/// Notifications to the IDM client (COMSTAR `idm_client_notify_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notify {
    /// Target: a connection was accepted; the client may refuse it
    /// ([`Connection::reject`](super::Connection::reject)).
    ConnectAccept,
    /// Initiator: the transport connection could not be set up.
    ConnectFail,
    /// Initiator: the transport is up, send the first Login Request.
    ReadyForLogin,
    /// The login failed (timeout, transport failure, failing response).
    LoginFail,
    /// Full feature phase started.
    FfpEnabled,
    /// Full feature phase ended.
    FfpDisabled(FfpDisableReason),
    /// The connection is gone; `in_login` tells whether it died in S4 IN_LOGIN.
    ConnectLost {
        /// The connection was in S4 IN_LOGIN.
        in_login: bool,
    },
    /// Last notification: the client releases everything it holds for the connection.
    ConnectDestroy,
}

/// What a transition asks for. Values only; [`Connection`](super::Connection) carries them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Initiator: open the transport connection.
    Connect,
    /// Arm the login timer (20 s by default).
    StartLoginTimer,
    /// Disarm the login timer.
    StopLoginTimer,
    /// Arm the logout-request timer (target, 20 s by default).
    StartLogoutTimer,
    /// Disarm the logout-request timer.
    StopLogoutTimer,
    /// Arm the cleanup timer (0 s by default).
    StartCleanupTimer,
    /// Disarm the cleanup timer.
    StopCleanupTimer,
    /// Tell the client.
    NotifyClient(Notify),
    /// Close the transport connection.
    Disconnect,
    /// Switch the transport to the RDMA data mover (iSER Hello / HelloReply).
    EnableDatamover,
    /// Remember the CID that logged in (logout requests are matched against it).
    SaveLoginInfo,
    /// Hold the next state change until the response PDU just queued has left; the
    /// matching `*_SND_DONE` event ([`SmEvent::send_done`]) is raised then.
    AwaitSendDone,
    /// Suspend the connection's tasks (connection lost in full feature phase).
    SuspendTasks,
    /// Abort every task of the connection.
    AbortAllTasks,
    /// Release the connection (after `ConnectDestroy`, or silently after a reject).
    Free,
}

/// Where a [`Rule`] leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Next {
    /// To this state (its entry actions run).
    To(ConnState),
    /// The event is accepted and the state does not change (no entry actions).
    Stay,
    /// Login finished: S5 LOGGED_IN, or S12 ENABLE_DM when RDMA extensions were
    /// negotiated ([`StateMachine::set_rdma_extensions`]).
    LoginComplete,
}

/// One row of the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The state the rule applies in.
    pub from: ConnState,
    /// The events it accepts there.
    pub events: &'static [SmEvent],
    /// `None` for both roles, or the only role the rule applies to.
    pub role: Option<Role>,
    /// The next state.
    pub next: Next,
    /// Actions of the transition itself, before the entry actions of the next state.
    pub actions: &'static [Action],
}

impl Rule {
    const fn new(
        from: ConnState,
        events: &'static [SmEvent],
        next: Next,
        actions: &'static [Action],
    ) -> Self {
        Self {
            from,
            events,
            role: None,
            next,
            actions,
        }
    }

    const fn only(mut self, role: Role) -> Self {
        self.role = Some(role);
        self
    }

    /// Whether the rule applies to `role`.
    pub fn applies_to(&self, role: Role) -> bool {
        self.role.is_none_or(|r| r == role)
    }
}

/// The transition table (reference/comstar.md §6.2, illumos `idm_conn_sm.c`).
pub const TABLE: &[Rule] = table::TABLE;

mod table {
    use super::Action::*;
    use super::ConnState::*;
    use super::Next::{LoginComplete, Stay, To};
    use super::SmEvent::*;
    use super::{Action, FfpDisableReason, Notify, Rule};
    use crate::pdu::Role::{Initiator, Target};

    const LOGIN_FAIL: Action = NotifyClient(Notify::LoginFail);
    const FFP_OFF_FAIL: Action = NotifyClient(Notify::FfpDisabled(FfpDisableReason::ConnFail));
    const FFP_OFF_CONN: Action = NotifyClient(Notify::FfpDisabled(FfpDisableReason::ConnLogout));
    const FFP_OFF_SESS: Action = NotifyClient(Notify::FfpDisabled(FfpDisableReason::SessLogout));

    pub(super) const TABLE: &[Rule] = &[
        // S1 FREE
        Rule::new(S1Free, &[ConnectReq], To(S2XptWait), &[]).only(Initiator),
        Rule::new(S1Free, &[ConnectAccept], To(S3XptUp), &[]).only(Target),
        Rule::new(
            S1Free,
            &[TxProtocolError, RxProtocolError],
            To(S9InitError),
            &[],
        ),
        // S2 XPT_WAIT (initiator)
        Rule::new(S2XptWait, &[ConnectSuccess], To(S4InLogin), &[]),
        Rule::new(
            S2XptWait,
            &[
                TransportFail,
                ConnectFail,
                LogoutOtherConnRcv,
                TxProtocolError,
                RxProtocolError,
            ],
            To(S9InitError),
            &[],
        ),
        // S3 XPT_UP (target); the login timer was armed on entry.
        Rule::new(S3XptUp, &[LoginRcv], To(S4InLogin), &[]),
        Rule::new(S3XptUp, &[LoginTimeout], To(S9InitError), &[LOGIN_FAIL]),
        Rule::new(
            S3XptUp,
            &[ConnectReject],
            To(S9aRejected),
            &[StopLoginTimer],
        ),
        Rule::new(
            S3XptUp,
            &[ConnectFail, TransportFail, LogoutOtherConnSnd],
            To(S9InitError),
            &[StopLoginTimer, LOGIN_FAIL],
        ),
        Rule::new(S3XptUp, &[TxProtocolError, RxProtocolError], Stay, &[]),
        // S4 IN_LOGIN; the login timer runs on from S3 (target).
        Rule::new(
            S4InLogin,
            &[LoginSuccessRcv, LoginSuccessSnd],
            LoginComplete,
            &[StopLoginTimer, SaveLoginInfo],
        ),
        Rule::new(S4InLogin, &[LoginTimeout], To(S9InitError), &[LOGIN_FAIL]),
        Rule::new(
            S4InLogin,
            &[LoginFailSnd],
            To(S9bWaitSndDone),
            &[StopLoginTimer, AwaitSendDone],
        ),
        Rule::new(
            S4InLogin,
            &[
                LoginFailRcv,
                TransportFail,
                LogoutOtherConnSnd,
                LogoutOtherConnRcv,
            ],
            To(S9InitError),
            &[StopLoginTimer, LOGIN_FAIL],
        ),
        // Session reinstatement kills a connection that is still logging in.
        Rule::new(
            S4InLogin,
            &[LogoutSessionSuccess],
            To(S11Complete),
            &[StopLoginTimer, Disconnect],
        ),
        Rule::new(
            S4InLogin,
            &[
                LoginSnd,
                MiscTx,
                MiscRx,
                LoginRcv,
                TxProtocolError,
                RxProtocolError,
            ],
            Stay,
            &[],
        ),
        // S5 LOGGED_IN
        Rule::new(
            S5LoggedIn,
            &[
                MiscRx,
                LogoutThisConnRcv,
                LogoutThisConnSnd,
                LogoutOtherConnRcv,
                LogoutOtherConnSnd,
            ],
            To(S6InLogout),
            &[FFP_OFF_CONN],
        ),
        Rule::new(
            S5LoggedIn,
            &[LogoutSessionRcv, LogoutSessionSnd],
            To(S6InLogout),
            &[FFP_OFF_SESS],
        ),
        Rule::new(
            S5LoggedIn,
            &[LogoutSessionSuccess],
            To(S11Complete),
            &[FFP_OFF_SESS, Disconnect],
        ),
        Rule::new(
            S5LoggedIn,
            &[AsyncLogoutRcv, AsyncLogoutSnd],
            To(S7LogoutReq),
            &[],
        ),
        Rule::new(
            S5LoggedIn,
            &[
                TransportFail,
                AsyncDropConnRcv,
                AsyncDropConnSnd,
                AsyncDropAllConnRcv,
                AsyncDropAllConnSnd,
            ],
            To(S8Cleanup),
            &[FFP_OFF_FAIL],
        ),
        Rule::new(
            S5LoggedIn,
            &[MiscTx, TxProtocolError, RxProtocolError, LoginTimeout],
            Stay,
            &[],
        ),
        // S6 IN_LOGOUT
        Rule::new(
            S6InLogout,
            &[LogoutSuccessSndDone],
            To(S11Complete),
            &[Disconnect],
        )
        .only(Target),
        Rule::new(S6InLogout, &[LogoutFailSndDone], To(S8Cleanup), &[]),
        Rule::new(
            S6InLogout,
            &[LogoutSuccessSnd, LogoutFailSnd],
            Stay,
            &[AwaitSendDone],
        ),
        Rule::new(
            S6InLogout,
            &[LogoutSuccessRcv, LogoutSessionSuccess],
            To(S11Complete),
            &[Disconnect],
        ),
        Rule::new(S6InLogout, &[AsyncLogoutRcv], Stay, &[]),
        Rule::new(
            S6InLogout,
            &[
                TransportFail,
                AsyncDropConnRcv,
                AsyncDropConnSnd,
                AsyncDropAllConnRcv,
                AsyncDropAllConnSnd,
                LogoutFailRcv,
            ],
            To(S8Cleanup),
            &[],
        ),
        Rule::new(
            S6InLogout,
            &[
                TxProtocolError,
                RxProtocolError,
                MiscTx,
                MiscRx,
                LoginTimeout,
            ],
            Stay,
            &[],
        ),
        // S7 LOGOUT_REQ; the logout timer was armed on entry (target).
        Rule::new(
            S7LogoutReq,
            &[
                LogoutThisConnRcv,
                LogoutThisConnSnd,
                LogoutOtherConnRcv,
                LogoutOtherConnSnd,
            ],
            To(S6InLogout),
            &[StopLogoutTimer, FFP_OFF_CONN],
        ),
        Rule::new(
            S7LogoutReq,
            &[LogoutSessionRcv, LogoutSessionSnd],
            To(S6InLogout),
            &[StopLogoutTimer, FFP_OFF_SESS],
        ),
        Rule::new(S7LogoutReq, &[AsyncLogoutRcv, AsyncLogoutSnd], Stay, &[]),
        Rule::new(
            S7LogoutReq,
            &[
                TransportFail,
                AsyncDropConnRcv,
                AsyncDropConnSnd,
                AsyncDropAllConnRcv,
                AsyncDropAllConnSnd,
            ],
            To(S8Cleanup),
            &[StopLogoutTimer, FFP_OFF_FAIL],
        ),
        Rule::new(
            S7LogoutReq,
            &[LogoutTimeout],
            To(S8Cleanup),
            &[FFP_OFF_FAIL],
        ),
        Rule::new(
            S7LogoutReq,
            &[LogoutSessionSuccess],
            To(S11Complete),
            &[StopLogoutTimer, FFP_OFF_SESS, Disconnect],
        ),
        Rule::new(
            S7LogoutReq,
            &[
                TxProtocolError,
                RxProtocolError,
                MiscTx,
                MiscRx,
                LoginTimeout,
            ],
            Stay,
            &[],
        ),
        // S8 CLEANUP; disconnected, tasks suspended, cleanup timer armed on entry.
        Rule::new(
            S8Cleanup,
            &[LogoutSuccessRcv, LogoutSuccessSnd, LogoutSessionSuccess],
            To(S11Complete),
            &[StopCleanupTimer],
        ),
        Rule::new(S8Cleanup, &[CleanupTimeout], To(S11Complete), &[]),
        Rule::new(
            S8Cleanup,
            &[LogoutOtherConnRcv, LogoutOtherConnSnd],
            To(S10InCleanup),
            &[],
        ),
        Rule::new(
            S8Cleanup,
            &[LogoutSuccessSndDone, LogoutFailSndDone],
            Stay,
            &[],
        ),
        Rule::new(
            S8Cleanup,
            &[
                LogoutSessionRcv,
                LogoutSessionSnd,
                TxProtocolError,
                RxProtocolError,
                MiscTx,
                MiscRx,
                TransportFail,
                LoginTimeout,
                LogoutTimeout,
            ],
            Stay,
            &[],
        ),
        // S9B WAIT_SND_DONE
        Rule::new(S9bWaitSndDone, &[LoginFailSndDone], To(S9InitError), &[]),
        // S10 IN_CLEANUP; the cleanup timer keeps running.
        Rule::new(
            S10InCleanup,
            &[LogoutFailRcv, LogoutFailSnd],
            To(S8Cleanup),
            &[],
        ),
        Rule::new(
            S10InCleanup,
            &[LogoutSuccessSnd, LogoutSuccessRcv, LogoutSessionSuccess],
            To(S11Complete),
            &[StopCleanupTimer],
        ),
        Rule::new(S10InCleanup, &[CleanupTimeout], To(S11Complete), &[]),
        Rule::new(
            S10InCleanup,
            &[LogoutSuccessSndDone, LogoutFailSndDone],
            Stay,
            &[],
        ),
        Rule::new(
            S10InCleanup,
            &[
                TxProtocolError,
                RxProtocolError,
                MiscTx,
                MiscRx,
                LoginTimeout,
                LogoutTimeout,
            ],
            Stay,
            &[],
        ),
        // S11 COMPLETE: a deferred logout response may still complete.
        Rule::new(
            S11Complete,
            &[LogoutSuccessSndDone, LogoutFailSndDone],
            Stay,
            &[],
        ),
        // S12 ENABLE_DM: the transport always completes enable-DM; failures wait for it.
        Rule::new(S12EnableDm, &[EnableDmSuccess], To(S5LoggedIn), &[]),
        Rule::new(S12EnableDm, &[EnableDmFail], To(S9InitError), &[]),
        Rule::new(S12EnableDm, &[TransportFail], Stay, &[]),
    ];
}

const NO_RULE: u8 = u8::MAX;

/// `INDEX[state][event]` is the position of the rule in [`TABLE`], or `NO_RULE`.
/// Built at compile time; two rules for one pair fail the build.
const INDEX: [[u8; SmEvent::COUNT]; ConnState::COUNT] = build_index(TABLE);

const fn build_index(table: &[Rule]) -> [[u8; SmEvent::COUNT]; ConnState::COUNT] {
    assert!(table.len() < NO_RULE as usize, "transition table too long");
    let mut index = [[NO_RULE; SmEvent::COUNT]; ConnState::COUNT];
    let mut i = 0;
    while i < table.len() {
        let rule = &table[i];
        let mut j = 0;
        while j < rule.events.len() {
            let slot = &mut index[rule.from as usize][rule.events[j] as usize];
            assert!(*slot == NO_RULE, "two rules for one (state, event) pair");
            *slot = i as u8;
            j += 1;
        }
        i += 1;
    }
    index
}

/// Number of (state, event) pairs the table accepts (for either role).
pub const fn table_pairs() -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < TABLE.len() {
        n += TABLE[i].events.len();
        i += 1;
    }
    n
}

/// The rule for `event` in `state` for `role`, if the table has one.
pub fn lookup(role: Role, state: ConnState, event: SmEvent) -> Option<&'static Rule> {
    let i = *INDEX.get(state as usize)?.get(event as usize)?;
    let rule = TABLE.get(usize::from(i))?;
    rule.applies_to(role).then_some(rule)
}

const S9_INI_CONNECT_FAIL: &[Action] = &[
    Action::NotifyClient(Notify::ConnectFail),
    Action::AbortAllTasks,
    Action::NotifyClient(Notify::ConnectDestroy),
    Action::Free,
];
const S9_LOST_IN_LOGIN: &[Action] = &[
    Action::Disconnect,
    Action::NotifyClient(Notify::ConnectLost { in_login: true }),
    Action::AbortAllTasks,
    Action::NotifyClient(Notify::ConnectDestroy),
    Action::Free,
];
const S9_LOST: &[Action] = &[
    Action::Disconnect,
    Action::NotifyClient(Notify::ConnectLost { in_login: false }),
    Action::AbortAllTasks,
    Action::NotifyClient(Notify::ConnectDestroy),
    Action::Free,
];
const S11_LOST_IN_LOGIN: &[Action] = &[
    Action::NotifyClient(Notify::ConnectLost { in_login: true }),
    Action::AbortAllTasks,
    Action::NotifyClient(Notify::ConnectDestroy),
    Action::Free,
];
const S11_LOST: &[Action] = &[
    Action::NotifyClient(Notify::ConnectLost { in_login: false }),
    Action::AbortAllTasks,
    Action::NotifyClient(Notify::ConnectDestroy),
    Action::Free,
];

/// The actions of entering `state` from `from` (COMSTAR `idm_update_state`).
///
/// S9 and S11 tell the client the connection is lost (with "was in login" when the
/// previous state was S4), abort every task, then destroy; an initiator that never got
/// a transport (from S1/S2) is told CONNECT_FAIL instead of CONNECT_LOST.
pub fn entry_actions(state: ConnState, role: Role, from: ConnState) -> &'static [Action] {
    use ConnState::*;
    match state {
        S2XptWait => &[Action::Connect],
        S3XptUp => &[
            Action::NotifyClient(Notify::ConnectAccept),
            Action::StartLoginTimer,
        ],
        S4InLogin => match role {
            Role::Initiator => &[Action::NotifyClient(Notify::ReadyForLogin)],
            Role::Target => &[],
        },
        S5LoggedIn => &[Action::NotifyClient(Notify::FfpEnabled)],
        S7LogoutReq => match role {
            Role::Target => &[Action::StartLogoutTimer],
            Role::Initiator => &[],
        },
        S8Cleanup => &[
            Action::Disconnect,
            Action::SuspendTasks,
            Action::StartCleanupTimer,
        ],
        S9InitError => match (role, from) {
            (Role::Initiator, S1Free | S2XptWait) => S9_INI_CONNECT_FAIL,
            (_, S4InLogin) => S9_LOST_IN_LOGIN,
            _ => S9_LOST,
        },
        S9aRejected => &[Action::Free],
        S11Complete => match from {
            S4InLogin => S11_LOST_IN_LOGIN,
            _ => S11_LOST,
        },
        S12EnableDm => &[Action::EnableDatamover],
        S1Free | S6InLogout | S9bWaitSndDone | S10InCleanup => &[],
    }
}

/// What to do with a PDU of some opcode in some state (reference/comstar.md §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PduPolicy {
    /// The PDU may be sent or received.
    Allow,
    /// The connection is cleaning up: the PDU is silently dropped.
    Drop,
    /// A protocol error.
    ProtocolError,
}

/// Login PDUs only in S3/S4; NOP in S4-S7; every other PDU only in S5-S7; anything
/// but a login PDU is silently dropped in S8/S10; the rest is a protocol error.
pub const fn pdu_policy(opcode: Opcode, state: ConnState) -> PduPolicy {
    use ConnState::*;
    match opcode {
        Opcode::LoginRequest | Opcode::LoginResponse => match state {
            S3XptUp | S4InLogin => PduPolicy::Allow,
            _ => PduPolicy::ProtocolError,
        },
        Opcode::NopOut | Opcode::NopIn => match state {
            S4InLogin | S5LoggedIn | S6InLogout | S7LogoutReq => PduPolicy::Allow,
            S8Cleanup | S10InCleanup => PduPolicy::Drop,
            _ => PduPolicy::ProtocolError,
        },
        _ => match state {
            S5LoggedIn | S6InLogout | S7LogoutReq => PduPolicy::Allow,
            S8Cleanup | S10InCleanup => PduPolicy::Drop,
            _ => PduPolicy::ProtocolError,
        },
    }
}

/// An event the table does not accept in the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("IDM {role:?} connection: event {event} not allowed in state {state}")]
pub struct TransitionError {
    /// The connection's role.
    pub role: Role,
    /// The state the event arrived in (unchanged).
    pub state: ConnState,
    /// The refused event.
    pub event: SmEvent,
}

/// The result of an accepted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// State before the event.
    pub from: ConnState,
    /// State after the event (equal to `from` for [`Next::Stay`]).
    pub to: ConnState,
    /// The event.
    pub event: SmEvent,
    /// Actions of the transition.
    pub transition: &'static [Action],
    /// Entry actions of `to` (empty when the state did not change).
    pub entry: &'static [Action],
}

impl Step {
    /// Whether the state changed.
    pub fn changed(&self) -> bool {
        self.from != self.to
    }

    /// Transition actions, then entry actions, in order.
    pub fn actions(&self) -> impl Iterator<Item = Action> + '_ {
        self.transition.iter().chain(self.entry).copied()
    }
}

/// Number of entries the audit ring keeps.
pub const AUDIT_LEN: usize = 32;

/// What happened to an audited event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    /// The state changed to this one.
    Transition(ConnState),
    /// Accepted, state unchanged.
    Stay,
    /// Not in the table.
    Rejected,
}

/// One entry of the audit ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditEntry {
    /// Event number on this connection, from 0.
    pub seq: u64,
    /// When the event was handled.
    pub at: Instant,
    /// State the event arrived in.
    pub state: ConnState,
    /// The event.
    pub event: SmEvent,
    /// What the table made of it.
    pub outcome: AuditOutcome,
}

#[derive(Debug, Clone)]
struct AuditRing {
    entries: [Option<AuditEntry>; AUDIT_LEN],
    seq: u64,
}

impl AuditRing {
    fn new() -> Self {
        Self {
            entries: [None; AUDIT_LEN],
            seq: 0,
        }
    }

    fn record(&mut self, at: Instant, state: ConnState, event: SmEvent, outcome: AuditOutcome) {
        let slot = (self.seq % AUDIT_LEN as u64) as usize;
        if let Some(e) = self.entries.get_mut(slot) {
            *e = Some(AuditEntry {
                seq: self.seq,
                at,
                state,
                event,
                outcome,
            });
        }
        self.seq += 1;
    }

    /// Oldest first.
    fn iter(&self) -> impl Iterator<Item = &AuditEntry> + '_ {
        let start = (self.seq % AUDIT_LEN as u64) as usize;
        let (a, b) = self.entries.split_at(start.min(AUDIT_LEN));
        b.iter().chain(a).flatten()
    }
}

/// The connection state machine of one role: the table plus the current state, the
/// RDMA-extensions flag that picks S5 or S12 after login, and the audit ring.
#[derive(Debug, Clone)]
pub struct StateMachine {
    role: Role,
    state: ConnState,
    last_state: ConnState,
    rdma_extensions: bool,
    audit: AuditRing,
}

impl StateMachine {
    /// A machine in S1 FREE.
    pub fn new(role: Role) -> Self {
        Self::at(role, ConnState::S1Free)
    }

    /// A machine placed directly in `state` (tests and tools; real connections
    /// start in S1 FREE).
    pub fn at(role: Role, state: ConnState) -> Self {
        Self {
            role,
            state,
            last_state: state,
            rdma_extensions: false,
            audit: AuditRing::new(),
        }
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// The state before the last transition.
    pub fn last_state(&self) -> ConnState {
        self.last_state
    }

    /// Records whether login negotiated `RDMAExtensions=Yes` (login then goes to S12).
    pub fn set_rdma_extensions(&mut self, on: bool) {
        self.rdma_extensions = on;
    }

    /// Whether RDMA extensions were negotiated.
    pub fn rdma_extensions(&self) -> bool {
        self.rdma_extensions
    }

    /// Feeds one event. Refused events leave the state alone and are logged at
    /// `trace`; both kinds are recorded in the audit ring.
    pub fn handle(&mut self, now: Instant, event: SmEvent) -> Result<Step, TransitionError> {
        let from = self.state;
        let Some(rule) = lookup(self.role, from, event) else {
            tracing::trace!(
                role = ?self.role,
                state = from.name(),
                event = event.name(),
                "idm conn: event not in the transition table"
            );
            self.audit.record(now, from, event, AuditOutcome::Rejected);
            return Err(TransitionError {
                role: self.role,
                state: from,
                event,
            });
        };
        let to = match rule.next {
            Next::To(s) => Some(s),
            Next::Stay => None,
            Next::LoginComplete if self.rdma_extensions => Some(ConnState::S12EnableDm),
            Next::LoginComplete => Some(ConnState::S5LoggedIn),
        };
        let step = match to {
            Some(to) => {
                tracing::trace!(
                    role = ?self.role,
                    from = from.name(),
                    event = event.name(),
                    to = to.name(),
                    "idm conn: transition"
                );
                self.audit
                    .record(now, from, event, AuditOutcome::Transition(to));
                self.last_state = from;
                self.state = to;
                Step {
                    from,
                    to,
                    event,
                    transition: rule.actions,
                    entry: entry_actions(to, self.role, from),
                }
            }
            None => {
                tracing::trace!(
                    role = ?self.role,
                    state = from.name(),
                    event = event.name(),
                    "idm conn: event accepted, state unchanged"
                );
                self.audit.record(now, from, event, AuditOutcome::Stay);
                Step {
                    from,
                    to: from,
                    event,
                    transition: rule.actions,
                    entry: &[],
                }
            }
        };
        Ok(step)
    }

    /// The last [`AUDIT_LEN`] events, oldest first.
    pub fn audit(&self) -> impl Iterator<Item = &AuditEntry> + '_ {
        self.audit.iter()
    }
}
