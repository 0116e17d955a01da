//! The PDU codec: BHS view, validated headers, AHS, digests and framing.
//!
//! Layers, after smoltcp: [`Bhs`] is a zero-copy view whose `new_checked` validates
//! the length once; [`Pdu`] is the validated representation with `parse` and
//! `emit`; [`PduReader`] and [`TxFrame`] frame whole PDUs on a byte stream.
//! Nothing here performs I/O or panics on input.

mod ahs;
mod bhs;
mod codes;
mod digest;
mod error;
mod framing;
mod repr;

pub use ahs::{
    Ahs, AhsIter, AhsSet, Cdb, AHS_BIDI_READ_LENGTH, AHS_EXTENDED_CDB, MAX_CDB_LEN,
    MAX_TOTAL_AHS_LEN,
};
pub use bhs::{Bhs, BHS_LEN, MAX_DATA_SEGMENT_LEN};
pub use codes::{
    AsyncEvent, Isid, LoginStatus, LogoutReason, LogoutResponseCode, Opcode, RejectReason, Role,
    ScsiResponseCode, SnackType, Stage, TaskAttr, TmfFunction, TmfResponse, RESERVED_TAG,
};
pub use digest::{crc32c, crc32c_append, Digests, DIGEST_LEN};
pub use error::{ErrorAction, PduError};
pub use framing::{
    frame_len, FrameLayout, FrameLimits, PduReader, RxPdu, TxFrame,
    DEFAULT_MAX_RECV_DATA_SEGMENT_LEN, READ_AHEAD,
};
pub use repr::{
    AsyncMessage, DataIn, DataInStatus, DataOut, LoginRequest, LoginResponse, LogoutRequest,
    LogoutResponse, NopIn, NopOut, Pdu, R2t, Reject, ScsiCommand, ScsiResponse, Snack, TargetSn,
    TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse,
};

/// Digest helpers with explicit wire byte order.
pub mod wire {
    pub use super::digest::{from_wire, to_wire};
}

#[cfg(test)]
mod tests;
