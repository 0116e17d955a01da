//! The codec's error type and its mapping onto protocol answers.

use super::codes::{Opcode, RejectReason};

/// Everything that can be wrong with received bytes, one variant per protocol answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PduError {
    /// Fewer bytes than the structure needs (a short buffer, or end of stream mid-PDU).
    #[error("truncated PDU: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes required.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Reserved or vendor opcode.
    #[error("unsupported opcode {0:#04x}")]
    BadOpcode(u8),
    /// A known opcode that this role must never receive (e.g. a target opcode at a target).
    #[error("opcode {0:?} is not valid in this direction")]
    WrongDirection(Opcode),
    /// Data segment longer than the negotiated MaxRecvDataSegmentLength.
    #[error("data segment of {len} bytes exceeds the limit of {max} bytes")]
    Oversize {
        /// DataSegmentLength received.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// Header digest mismatch: the header cannot be trusted, framing is lost.
    #[error("header digest mismatch: received {received:#010x}, computed {computed:#010x}")]
    HeaderDigest {
        /// Digest carried by the PDU.
        received: u32,
        /// Digest computed over BHS and AHS.
        computed: u32,
    },
    /// Data digest mismatch: the PDU is discarded, the stream stays in sync.
    #[error("data digest mismatch: received {received:#010x}, computed {computed:#010x}")]
    DataDigest {
        /// Digest carried by the PDU.
        received: u32,
        /// Digest computed over data and padding.
        computed: u32,
    },
    /// With header digests on, a BHS that is wrong by itself (opcode, direction,
    /// DataSegmentLength) before its digest arrived: its lengths cannot be trusted, so
    /// framing is lost.
    #[error("invalid header before its digest arrived ({0}): framing lost")]
    Unframed(&'static str),
    /// A field holds a value the RFC does not allow.
    #[error("invalid PDU field: {0}")]
    InvalidField(&'static str),
    /// A combination of fields that violates the protocol.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// What the receiver of a bad PDU does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// Send a Reject PDU carrying the offending header, then carry on.
    Reject(RejectReason),
    /// The byte stream cannot be trusted any more: drop the connection
    /// (RFC 7143 §7.8: header digest errors at ERL 0, or end of stream).
    DropConnection,
}

impl PduError {
    /// The Reject reason that answers this error, if it is answered with a Reject.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self.action() {
            ErrorAction::Reject(r) => Some(r),
            ErrorAction::DropConnection => None,
        }
    }

    /// The protocol's answer to this error.
    pub fn action(&self) -> ErrorAction {
        match self {
            PduError::Truncated { .. } | PduError::HeaderDigest { .. } | PduError::Unframed(_) => {
                ErrorAction::DropConnection
            }
            PduError::BadOpcode(_) => ErrorAction::Reject(RejectReason::CommandNotSupported),
            PduError::WrongDirection(_) | PduError::Oversize { .. } | PduError::Protocol(_) => {
                ErrorAction::Reject(RejectReason::ProtocolError)
            }
            PduError::DataDigest { .. } => ErrorAction::Reject(RejectReason::DataDigestError),
            PduError::InvalidField(_) => ErrorAction::Reject(RejectReason::InvalidPduField),
        }
    }

    /// True when framing is lost and the connection must be dropped.
    pub fn is_fatal(&self) -> bool {
        self.action() == ErrorAction::DropConnection
    }
}
