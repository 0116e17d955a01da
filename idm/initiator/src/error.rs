//! Error types: one session-level [`Error`] and the per-task [`TaskError`].

use idm::conn::ConnError;
use idm::keys::KeyError;
use idm::pdu::{LoginStatus, PduError, RejectReason};
use idm::text::TextError;

use crate::auth::AuthError;
use crate::scsi::Sense;
use crate::url::UrlError;

/// The target broke the protocol (the session cannot go on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A Login Response that does not fit the request.
    #[error("bad Login Response: {0}")]
    BadLoginResponse(&'static str),
    /// The target answered a version we do not speak.
    #[error("unsupported iSCSI version {0:#04x}")]
    Version(u8),
    /// Login did not finish in a bounded number of exchanges.
    #[error("login did not converge after {0} exchanges")]
    LoginLoop(u32),
    /// The target sent a key it may not send, or an answer the rule forbids.
    #[error("bad key from target: {0}")]
    BadKey(String),
    /// An R2T outside the command's buffer, or for a task that writes nothing.
    #[error("bad R2T for ITT {itt:#x}: {reason}")]
    BadR2t {
        /// Task tag.
        itt: u32,
        /// What was wrong.
        reason: &'static str,
    },
    /// A received PDU the connection refused.
    #[error("received PDU refused: {0}")]
    Rx(String),
    /// The codec refused bytes from the target.
    #[error(transparent)]
    Pdu(#[from] PduError),
    /// A text response we cannot use (SendTargets).
    #[error("bad text response: {0}")]
    BadText(String),
}

/// Why one command (or TMF, NOP, text request) failed; the session may go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The target answered with a Reject PDU.
    #[error("rejected by the target: {0:?}")]
    Rejected(RejectReason),
    /// iSCSI response "target failure" (or another non-zero response code).
    #[error("iSCSI target failure (response {0:#04x})")]
    TargetFailure(u8),
    /// A Data-In PDU out of DataSN order.
    #[error("Data-In DataSN {got}, expected {expected}")]
    DataSn {
        /// DataSN expected next.
        expected: u32,
        /// DataSN received.
        got: u32,
    },
    /// Data-In beyond the expected transfer length.
    #[error("Data-In at offset {offset} + {len} exceeds the buffer of {cap} bytes")]
    DataOverflow {
        /// Buffer offset.
        offset: u32,
        /// Data length.
        len: u32,
        /// Expected data transfer length.
        cap: u32,
    },
    /// GOOD status but fewer data bytes arrived than status and residual claim.
    #[error("{got} data bytes received, {expected} announced")]
    MissingData {
        /// Bytes the status announces.
        expected: u32,
        /// Bytes received.
        got: u32,
    },
    /// The SCSI Response's ExpDataSN does not match the Data-In PDUs received.
    #[error("ExpDataSN {got} in the response, {expected} Data-In PDUs received")]
    ExpDataSn {
        /// Data-In PDUs received.
        expected: u32,
        /// ExpDataSN in the response.
        got: u32,
    },
    /// A PDU for this task was malformed and discarded.
    #[error("malformed PDU for this task")]
    BadPdu,
    /// The task was aborted by a task management function.
    #[error("task aborted")]
    Aborted,
    /// The connection or session ended before the task completed.
    #[error("connection lost")]
    ConnectionLost,
    /// No answer within the command timeout.
    #[error("command timed out")]
    Timeout,
    /// A text response that is not valid key=value text.
    #[error("bad text response: {0}")]
    Text(TextError),
}

/// Everything that can go wrong with a session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A malformed URL or portal.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// Socket or name resolution failure.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The host name resolved to no address.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// The target refused the login (class 1 carries the TargetAddress to retry at).
    #[error("login refused: status class {:#04x} detail {:#04x}{}", .status.class, .status.detail,
        .redirect.as_deref().map(|a| format!(" (redirect to {a})")).unwrap_or_default())]
    LoginRejected {
        /// Status class and detail.
        status: LoginStatus,
        /// TargetAddress of a redirection.
        redirect: Option<String>,
    },
    /// Authentication could not be done.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Negotiation failed on our side (an answer the rule forbids, ...).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// We could not build a text.
    #[error(transparent)]
    Text(#[from] TextError),
    /// The target broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The IDM connection refused an operation.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The connection is closed (after logout, a failure or end of stream).
    #[error("connection closed")]
    Closed,
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The call does not fit the session's state or kind (API misuse).
    #[error("invalid use: {0}")]
    Usage(&'static str),
    /// Too many tasks outstanding.
    #[error("task table full ({0} tasks)")]
    QueueFull(usize),
    /// A command finished with a status other than GOOD.
    #[error("SCSI status {status:#04x}{}", .sense.map(|s| format!(" ({s})")).unwrap_or_default())]
    Scsi {
        /// Status byte.
        status: u8,
        /// Decoded sense, if any.
        sense: Option<Sense>,
    },
    /// A command failed at the iSCSI level.
    #[error(transparent)]
    Task(#[from] TaskError),
}
