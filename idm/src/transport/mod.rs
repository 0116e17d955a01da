//! Transports: what moves PDUs and data between an IDM connection and the wire.
//!
//! COMSTAR's `idm_transport_ops_t` as a trait ([`Transport`]): send control PDUs, put data
//! to the initiator, get data from the initiator, enable the data mover after login,
//! negotiate the transport's own login keys, free resources. Two transports fit it:
//!
//! - **TCP** ([`tcp::TcpTransport`]): data goes as Data-In PDUs and comes as R2T-solicited
//!   Data-Out PDUs ([`datamover::TaskXfer`] does the sequence work), written with
//!   scatter-gather `writev` straight from the data buffers.
//! - **iSER** (RFC 7145, to come): data goes by RDMA Write into the initiator's buffer
//!   and comes by RDMA Read; there are no Data-In, R2T or Data-Out PDUs and no status
//!   phase collapse, and `enable_datamover` runs the Hello exchange.
//!
//! Data buffers are passed by reference ([`DataRef`]): the transport reads or fills them
//! after the call returns, until it reports the transfer's completion token. That is the
//! one unsafe promise of this interface; it is what lets a transport send from (or RDMA
//! into) registered memory without a copy.

// The crate denies unsafe code; buffers passed by reference are the exception (DataRef).
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod datamover;
pub mod tcp;

use crate::conn::FfpParams;
use crate::keys::LocalConfig;
use crate::pdu::{Pdu, PduError, TargetSn};
use datamover::{DataInPdu, TaskXfer, XferError, XferLimits};

/// Which transport a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// iSCSI over TCP (RFC 7143).
    Tcp,
    /// iSER: iSCSI Extensions for RDMA (RFC 7145).
    Iser,
}

/// A transport failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The socket (or queue pair) failed.
    #[error("transport I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// A PDU could not be framed.
    #[error(transparent)]
    Pdu(#[from] PduError),
    /// A data sequence rule was broken.
    #[error(transparent)]
    Xfer(#[from] XferError),
}

/// A borrowed data buffer handed to a transport: valid, and not touched by anyone else,
/// until the transport reports the completion token it came with.
#[derive(Debug, Clone, Copy)]
pub struct DataRef {
    ptr: *const u8,
    len: usize,
}

// SAFETY: a DataRef is a promise about memory validity made by its creator (see `new`);
// moving it between threads does not change that promise.
unsafe impl Send for DataRef {}

impl DataRef {
    /// Wraps `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay valid and unmodified until the transport reports the
    /// completion token passed with this reference (or is dropped).
    pub unsafe fn new(ptr: *const u8, len: usize) -> Self {
        Self { ptr, len }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The part `off..off+len` (clamped to the buffer).
    pub fn slice(&self, off: usize, len: usize) -> DataRef {
        let off = off.min(self.len);
        let len = len.min(self.len - off);
        // Stays within the original buffer, so the creator's promise covers it.
        DataRef {
            ptr: self.ptr.wrapping_add(off),
            len,
        }
    }

    /// The bytes.
    ///
    /// # Safety
    /// Only while the creator's promise holds (before the completion is reported).
    pub(crate) unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees the constructor's contract still holds.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The command a transfer belongs to: its sequence state, the connection's limits and
/// the sequence numbers to put on the PDUs (ExpCmdSN/MaxCmdSN; StatSN not advanced).
pub struct Xfer<'a> {
    /// The command's data sequence state.
    pub task: &'a mut TaskXfer,
    /// Negotiated limits.
    pub limits: &'a XferLimits,
    /// Sequence numbers.
    pub sn: TargetSn,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued was written.
    All,
    /// The socket is full; the rest goes when it becomes writable again.
    Blocked,
}

/// What a transport must do for a target connection (see the [module documentation](self)).
///
/// Completion tokens (`Self::Token`) are the caller's: a transport reports each token it
/// was given exactly once, through the `done` callback of [`Transport::flush`] (or
/// [`Transport::free`]), when the bytes or buffer it stands for are no longer needed.
pub trait Transport {
    /// The caller's completion token.
    type Token: Copy;

    /// Which transport this is.
    fn kind(&self) -> TransportKind;

    /// Adjusts the target's login key policy for this transport (TCP refuses
    /// RDMAExtensions; iSER accepts it and its keys).
    fn login_keys(&self, local: &mut LocalConfig);

    /// Full feature phase starts with `params` (digests, segment lengths). Returns true
    /// when the data mover is ready now; false when the transport finishes a handshake
    /// first (iSER Hello) and the caller reports `enable_dm_done` later.
    fn enable_datamover(&mut self, params: &FfpParams) -> bool;

    /// Queues already framed bytes (the IDM connection's own transmit queue: login,
    /// logout, reject).
    fn send_framed(&mut self, bytes: &[u8], done: Option<Self::Token>);

    /// Frames and queues a control PDU; `data` is copied.
    fn send_pdu(
        &mut self,
        pdu: &Pdu,
        data: &[u8],
        done: Option<Self::Token>,
    ) -> Result<(), TransportError>;

    /// Puts `data` (the command's bytes at `offset`) to the initiator. TCP sends Data-In
    /// PDUs from the buffer and, with `hold_last`, returns the final one unsent for
    /// status phase collapse ([`Transport::send_held`]); `done` is reported when the
    /// buffer is no longer read (before the held PDU, which carries its own token).
    fn put_data(
        &mut self,
        x: Xfer<'_>,
        offset: u32,
        data: DataRef,
        hold_last: bool,
        done: Self::Token,
    ) -> Result<Option<DataInPdu>, TransportError>;

    /// Sends a Data-In PDU held back by [`Transport::put_data`], with or without status;
    /// `data` is the buffer it was cut from.
    fn send_held(
        &mut self,
        pdu: &DataInPdu,
        data: DataRef,
        done: Option<Self::Token>,
    ) -> Result<(), TransportError>;

    /// Asks the initiator for `len` bytes at `offset` into buffer `buf_id` (R2T over
    /// TCP; RDMA Read over iSER). TCP data arrives as Data-Out PDUs the caller checks
    /// with [`TaskXfer::data_out`].
    fn get_data(
        &mut self,
        x: Xfer<'_>,
        buf_id: u8,
        offset: u32,
        len: u32,
        next_ttt: &mut dyn FnMut() -> u32,
    ) -> Result<(), TransportError>;

    /// Writes as much as the wire takes now; reports finished tokens to `done`.
    fn flush(&mut self, done: &mut dyn FnMut(Self::Token)) -> Result<Flushed, TransportError>;

    /// Releases everything: queued frames are dropped and their tokens reported.
    fn free(&mut self, done: &mut dyn FnMut(Self::Token));
}
