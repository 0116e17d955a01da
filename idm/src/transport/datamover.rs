//! Target-side data movement of one command over a byte-stream transport, sans-IO
//! (RFC 7143 §4.2.3, §7.7–7.8, §11.3, §11.7–11.8).
//!
//! [`TaskXfer`] keeps the sequence state of one command and turns buffer transfers into
//! PDU headers: a *put* of `len` bytes at a command offset becomes Data-In PDUs of at most
//! the initiator's MaxRecvDataSegmentLength with consecutive DataSNs (the last one with F,
//! optionally held back so the status can ride on it); a *get* becomes R2Ts of at most
//! MaxBurstLength with consecutive R2TSNs, no more than MaxOutstandingR2T at a time, each
//! with its own Target Transfer Tag. Received Data-Out PDUs (solicited or unsolicited) are
//! checked here (TTT, offset, length, DataSN, F bit) and placed in the caller's buffer.
//!
//! Nothing here touches data: the caller copies bytes and writes headers.

use crate::keys::NegotiatedParams;
use crate::pdu::{DataIn, DataInStatus, DataOut, R2t, RejectReason, TargetSn, RESERVED_TAG};

/// Most R2Ts one command can have outstanding (the target never negotiates more).
pub const MAX_R2T_SLOTS: usize = 8;
/// Most buffers one command can have in flight (the SDK's limit).
pub const MAX_BUFS: usize = 4;

/// The negotiated values data movement obeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XferLimits {
    /// The initiator's MaxRecvDataSegmentLength: the largest Data-In data segment.
    pub max_send_segment: u32,
    /// MaxBurstLength: the largest R2T and Data-In sequence.
    pub max_burst: u32,
    /// FirstBurstLength: the largest unsolicited burst (immediate + unsolicited Data-Out).
    pub first_burst: u32,
    /// MaxOutstandingR2T (clamped to [`MAX_R2T_SLOTS`]).
    pub max_outstanding_r2t: u16,
    /// InitialR2T=Yes: no unsolicited Data-Out PDUs.
    pub initial_r2t: bool,
    /// ImmediateData=Yes.
    pub immediate_data: bool,
}

impl XferLimits {
    /// The limits a login negotiated.
    pub fn from_params(p: &NegotiatedParams) -> Self {
        Self {
            max_send_segment: p.max_send_data_segment_length.max(512),
            max_burst: p.max_burst_length.max(512),
            first_burst: p.first_burst_length,
            max_outstanding_r2t: p.max_outstanding_r2t.clamp(1, MAX_R2T_SLOTS as u16),
            initial_r2t: p.initial_r2t,
            immediate_data: p.immediate_data,
        }
    }
}

impl Default for XferLimits {
    /// The RFC defaults.
    fn default() -> Self {
        Self {
            max_send_segment: 8192,
            max_burst: 262_144,
            first_burst: 65_536,
            max_outstanding_r2t: 1,
            initial_r2t: true,
            immediate_data: true,
        }
    }
}

/// A data sequence error. Every one of them but [`XferError::UnknownTtt`] ends the command
/// (at ErrorRecoveryLevel 0 there is no recovery R2T): the target answers it with CHECK
/// CONDITION, ABORTED COMMAND / DATA PHASE ERROR ([`XferError::sense_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XferError {
    /// A Data-Out whose Target Transfer Tag names no outstanding R2T of the command.
    #[error("Data-Out with target transfer tag {0:#010x} that names no outstanding R2T")]
    UnknownTtt(u32),
    /// A Data-Out whose Buffer Offset is not the next one (DataPDUInOrder=Yes).
    #[error("Data-Out at offset {got}, expected {expected}")]
    Offset {
        /// The offset the sequence is at.
        expected: u32,
        /// The offset received.
        got: u32,
    },
    /// Data beyond the end of the R2T, the unsolicited burst or the command.
    #[error("data up to offset {end} exceeds the limit {limit}")]
    Overrun {
        /// End of the received data.
        end: u64,
        /// End allowed.
        limit: u64,
    },
    /// A Data-Out with the wrong DataSN.
    #[error("Data-Out DataSN {got}, expected {expected}")]
    DataSn {
        /// The DataSN expected.
        expected: u32,
        /// The DataSN received.
        got: u32,
    },
    /// The F bit set before the end of a sequence, or missing at its end.
    #[error("Data-Out F bit {got} at offset {offset}, sequence ends at {end}")]
    FinalBit {
        /// The F bit received.
        got: bool,
        /// Offset of the PDU.
        offset: u32,
        /// End of the sequence.
        end: u32,
    },
    /// A Data-Out with an empty data segment.
    #[error("Data-Out without data")]
    Empty,
    /// Unsolicited data when InitialR2T=Yes, after the unsolicited burst ended, or
    /// immediate data when ImmediateData=No.
    #[error("unsolicited data not allowed here")]
    Unsolicited,
    /// A get or put outside the command's expected data transfer length, or empty.
    #[error("transfer of {len} bytes at {offset} outside the expected length {edtl}")]
    Range {
        /// Offset of the transfer.
        offset: u64,
        /// Length of the transfer.
        len: u64,
        /// The command's expected data transfer length.
        edtl: u32,
    },
    /// More than [`MAX_BUFS`] buffers in flight.
    #[error("too many buffers in flight")]
    TooManyBuffers,
}

impl XferError {
    /// True when the error ends the command; the unknown-TTT case is a late Data-Out of
    /// a command that is gone, and is dropped.
    pub fn ends_task(&self) -> bool {
        !matches!(self, XferError::UnknownTtt(_))
    }

    /// ASC/ASCQ of the CHECK CONDITION (sense key ABORTED COMMAND) that ends the command:
    /// DATA OFFSET ERROR, TOO MUCH WRITE DATA, or DATA PHASE ERROR (SPC-4 4Bh).
    pub fn sense_code(&self) -> (u8, u8) {
        match self {
            XferError::Offset { .. } => (0x4b, 0x05),
            XferError::Overrun { .. } => (0x4b, 0x02),
            XferError::UnknownTtt(_) => (0x4b, 0x01),
            _ => (0x4b, 0x00),
        }
    }

    /// The Reject reason for the error, when answered with a Reject.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            XferError::UnknownTtt(_) | XferError::Range { .. } => RejectReason::InvalidPduField,
            _ => RejectReason::ProtocolError,
        }
    }
}

/// A Data-In PDU to send: its header and the part of the buffer it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataInPdu {
    /// The header (DataSegmentLength is framing: it is `len`).
    pub header: DataIn,
    /// Offset of the data within the buffer being put.
    pub buf_offset: usize,
    /// Bytes of data.
    pub len: usize,
}

impl DataInPdu {
    /// Puts the command's status on this (last) PDU: S and F bits, status, StatSN and
    /// residuals (status phase collapse, RFC 7143 §11.7.4); refreshes ExpCmdSN/MaxCmdSN.
    pub fn collapse_status(&mut self, status: DataInStatus, exp_cmd_sn: u32, max_cmd_sn: u32) {
        self.header.final_bit = true;
        self.header.status = Some(status);
        self.header.exp_cmd_sn = exp_cmd_sn;
        self.header.max_cmd_sn = max_cmd_sn;
    }
}

/// An R2T to send: everything but the sequence numbers of the connection and session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2tReq {
    /// Target Transfer Tag the Data-Out PDUs will carry.
    pub ttt: u32,
    /// R2TSN.
    pub r2t_sn: u32,
    /// Buffer Offset.
    pub offset: u32,
    /// Desired Data Transfer Length.
    pub len: u32,
}

/// Where a received Data-Out goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOutPlace {
    /// The caller's buffer id (from [`TaskXfer::get_data`]); `None` for unsolicited data.
    pub buf: Option<u8>,
    /// Offset within that buffer (for unsolicited data: the command offset).
    pub buf_offset: usize,
    /// The buffer (or the unsolicited burst) is now complete.
    pub complete: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct OutBuf {
    active: bool,
    id: u8,
    /// Command offset of the buffer's first byte.
    start: u32,
    len: u32,
    /// Command offset up to which R2Ts were issued.
    requested: u32,
    received: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct R2tSlot {
    active: bool,
    ttt: u32,
    buf: usize,
    offset: u32,
    len: u32,
    next_offset: u32,
    next_data_sn: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Unsolicited {
    open: bool,
    next_offset: u32,
    end_limit: u32,
    next_data_sn: u32,
}

/// Sequence state of one command's data (see the [module documentation](self)).
#[derive(Debug, Clone)]
pub struct TaskXfer {
    itt: u32,
    lun: u64,
    edtl: u32,
    data_sn: u32,
    r2t_sn: u32,
    sent: u64,
    received: u64,
    bufs: [OutBuf; MAX_BUFS],
    r2ts: [R2tSlot; MAX_R2T_SLOTS],
    unsol: Unsolicited,
}

impl TaskXfer {
    /// A command with Initiator Task Tag `itt`, LUN `lun` and Expected Data Transfer
    /// Length `edtl`.
    pub fn new(itt: u32, lun: u64, edtl: u32) -> Self {
        Self {
            itt,
            lun,
            edtl,
            data_sn: 0,
            r2t_sn: 0,
            sent: 0,
            received: 0,
            bufs: [OutBuf::default(); MAX_BUFS],
            r2ts: [R2tSlot::default(); MAX_R2T_SLOTS],
            unsol: Unsolicited::default(),
        }
    }

    /// The command's ITT.
    pub fn itt(&self) -> u32 {
        self.itt
    }

    /// The command's Expected Data Transfer Length.
    pub fn edtl(&self) -> u32 {
        self.edtl
    }

    /// Data-In PDUs sent so far (the ExpDataSN of a SCSI Response).
    pub fn data_sn(&self) -> u32 {
        self.data_sn
    }

    /// Bytes put to the initiator so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Bytes received from the initiator so far (immediate, unsolicited and solicited).
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), XferError> {
        if len == 0 || offset + len > u64::from(self.edtl) {
            return Err(XferError::Range {
                offset,
                len,
                edtl: self.edtl,
            });
        }
        Ok(())
    }

    // ---- Data-In ---------------------------------------------------------------------

    /// Segments a put of `len` bytes at command offset `offset` into Data-In PDUs and
    /// hands each to `emit`. The last PDU of every MaxBurstLength sequence and of the put
    /// has the F bit; with `hold_last` the last one is returned
    /// instead of emitted, so that the caller can put the status on it
    /// ([`DataInPdu::collapse_status`]) or send it as is later. `sn` supplies
    /// ExpCmdSN/MaxCmdSN.
    pub fn data_in(
        &mut self,
        offset: u32,
        len: u32,
        limits: &XferLimits,
        sn: TargetSn,
        hold_last: bool,
        mut emit: impl FnMut(DataInPdu),
    ) -> Result<Option<DataInPdu>, XferError> {
        self.check_range(offset.into(), len.into())?;
        let seg = limits.max_send_segment.max(1);
        let burst = limits.max_burst.max(1);
        let mut done = 0u32;
        while done < len {
            // A Data-In sequence ends (F) at the end of the put and at every MaxBurstLength.
            let seq_end = (done / burst)
                .saturating_add(1)
                .saturating_mul(burst)
                .min(len);
            let n = seg.min(seq_end - done);
            let last = done + n == len;
            let pdu = DataInPdu {
                header: DataIn {
                    final_bit: done + n == seq_end,
                    ack: false,
                    lun: 0,
                    itt: self.itt,
                    ttt: RESERVED_TAG,
                    exp_cmd_sn: sn.exp_cmd_sn,
                    max_cmd_sn: sn.max_cmd_sn,
                    data_sn: self.data_sn,
                    buffer_offset: offset + done,
                    status: None,
                },
                buf_offset: done as usize,
                len: n as usize,
            };
            self.data_sn = self.data_sn.wrapping_add(1);
            done += n;
            if last && hold_last {
                self.sent += u64::from(len);
                return Ok(Some(pdu));
            }
            emit(pdu);
        }
        self.sent += u64::from(len);
        Ok(None)
    }

    // ---- unsolicited data ----------------------------------------------------------

    /// The SCSI Command arrived with `immediate` bytes of immediate data and its F bit.
    /// Returns whether unsolicited Data-Out PDUs follow (F=0).
    pub fn begin_unsolicited(
        &mut self,
        immediate: u32,
        final_bit: bool,
        limits: &XferLimits,
    ) -> Result<bool, XferError> {
        let burst_end = limits.first_burst.min(self.edtl);
        if immediate > 0 && !limits.immediate_data {
            return Err(XferError::Unsolicited);
        }
        if immediate > burst_end {
            return Err(XferError::Overrun {
                end: immediate.into(),
                limit: burst_end.into(),
            });
        }
        self.received += u64::from(immediate);
        if final_bit {
            return Ok(false);
        }
        if limits.initial_r2t || immediate >= burst_end {
            return Err(XferError::Unsolicited);
        }
        self.unsol = Unsolicited {
            open: true,
            next_offset: immediate,
            end_limit: burst_end,
            next_data_sn: 0,
        };
        Ok(true)
    }

    /// True while unsolicited Data-Out PDUs are expected.
    pub fn unsolicited_open(&self) -> bool {
        self.unsol.open
    }

    fn unsolicited_out(&mut self, hdr: &DataOut, len: u32) -> Result<DataOutPlace, XferError> {
        let u = &mut self.unsol;
        if !u.open {
            return Err(XferError::Unsolicited);
        }
        if hdr.data_sn != u.next_data_sn {
            return Err(XferError::DataSn {
                expected: u.next_data_sn,
                got: hdr.data_sn,
            });
        }
        if hdr.buffer_offset != u.next_offset {
            return Err(XferError::Offset {
                expected: u.next_offset,
                got: hdr.buffer_offset,
            });
        }
        let end = u64::from(hdr.buffer_offset) + u64::from(len);
        if end > u64::from(u.end_limit) {
            return Err(XferError::Overrun {
                end,
                limit: u.end_limit.into(),
            });
        }
        let end = end as u32;
        if end == u.end_limit && !hdr.final_bit {
            return Err(XferError::FinalBit {
                got: false,
                offset: hdr.buffer_offset,
                end: u.end_limit,
            });
        }
        u.next_offset = end;
        u.next_data_sn = u.next_data_sn.wrapping_add(1);
        if hdr.final_bit {
            u.open = false;
        }
        self.received += u64::from(len);
        Ok(DataOutPlace {
            buf: None,
            buf_offset: hdr.buffer_offset as usize,
            complete: hdr.final_bit,
        })
    }

    // ---- R2T / Data-Out ----------------------------------------------------------------

    fn outstanding_r2ts(&self) -> usize {
        self.r2ts.iter().filter(|s| s.active).count()
    }

    /// Buffers still waiting for data, by id.
    pub fn pending_gets(&self) -> impl Iterator<Item = u8> + '_ {
        self.bufs.iter().filter(|b| b.active).map(|b| b.id)
    }

    /// Starts getting `len` bytes at command offset `offset` into the caller's buffer
    /// `id`: issues R2Ts (each ≤ MaxBurstLength, at most MaxOutstandingR2T outstanding)
    /// through `emit`; `next_ttt` allocates Target Transfer Tags.
    pub fn get_data(
        &mut self,
        id: u8,
        offset: u32,
        len: u32,
        limits: &XferLimits,
        next_ttt: &mut impl FnMut() -> u32,
        emit: impl FnMut(R2tReq),
    ) -> Result<(), XferError> {
        self.check_range(offset.into(), len.into())?;
        let slot = self
            .bufs
            .iter()
            .position(|b| !b.active)
            .ok_or(XferError::TooManyBuffers)?;
        self.bufs[slot] = OutBuf {
            active: true,
            id,
            start: offset,
            len,
            requested: offset,
            received: 0,
        };
        self.issue_r2ts(limits, next_ttt, emit);
        Ok(())
    }

    /// Issues R2Ts for the buffers, oldest first, while slots are free.
    fn issue_r2ts(
        &mut self,
        limits: &XferLimits,
        next_ttt: &mut impl FnMut() -> u32,
        mut emit: impl FnMut(R2tReq),
    ) {
        let max = usize::from(limits.max_outstanding_r2t).clamp(1, MAX_R2T_SLOTS);
        for b in 0..MAX_BUFS {
            loop {
                let buf = self.bufs[b];
                let end = buf.start + buf.len;
                if !buf.active || buf.requested >= end || self.outstanding_r2ts() >= max {
                    break;
                }
                let Some(slot) = self.r2ts.iter().position(|s| !s.active) else {
                    return;
                };
                let len = limits.max_burst.max(1).min(end - buf.requested);
                let req = R2tReq {
                    ttt: next_ttt(),
                    r2t_sn: self.r2t_sn,
                    offset: buf.requested,
                    len,
                };
                self.r2t_sn = self.r2t_sn.wrapping_add(1);
                self.bufs[b].requested += len;
                self.r2ts[slot] = R2tSlot {
                    active: true,
                    ttt: req.ttt,
                    buf: b,
                    offset: req.offset,
                    len,
                    next_offset: req.offset,
                    next_data_sn: 0,
                };
                emit(req);
            }
        }
    }

    /// Checks a received Data-Out carrying `len` bytes and says where its data goes.
    /// A completed R2T sequence frees its slot and may issue further R2Ts.
    pub fn data_out(
        &mut self,
        hdr: &DataOut,
        len: u32,
        limits: &XferLimits,
        next_ttt: &mut impl FnMut() -> u32,
        emit: impl FnMut(R2tReq),
    ) -> Result<DataOutPlace, XferError> {
        if len == 0 {
            return Err(XferError::Empty);
        }
        if hdr.ttt == RESERVED_TAG {
            return self.unsolicited_out(hdr, len);
        }
        let slot = self
            .r2ts
            .iter()
            .position(|s| s.active && s.ttt == hdr.ttt)
            .ok_or(XferError::UnknownTtt(hdr.ttt))?;
        let s = self.r2ts[slot];
        if hdr.data_sn != s.next_data_sn {
            return Err(XferError::DataSn {
                expected: s.next_data_sn,
                got: hdr.data_sn,
            });
        }
        if hdr.buffer_offset != s.next_offset {
            return Err(XferError::Offset {
                expected: s.next_offset,
                got: hdr.buffer_offset,
            });
        }
        let seq_end = s.offset + s.len;
        let end = u64::from(hdr.buffer_offset) + u64::from(len);
        if end > u64::from(seq_end) {
            return Err(XferError::Overrun {
                end,
                limit: seq_end.into(),
            });
        }
        let end = end as u32;
        if hdr.final_bit != (end == seq_end) {
            return Err(XferError::FinalBit {
                got: hdr.final_bit,
                offset: hdr.buffer_offset,
                end: seq_end,
            });
        }
        self.received += u64::from(len);
        let buf = &mut self.bufs[s.buf];
        buf.received += len;
        let place = DataOutPlace {
            buf: Some(buf.id),
            buf_offset: (hdr.buffer_offset - buf.start) as usize,
            complete: buf.received >= buf.len,
        };
        if place.complete {
            buf.active = false;
        }
        let r = &mut self.r2ts[slot];
        r.next_offset = end;
        r.next_data_sn = r.next_data_sn.wrapping_add(1);
        if end == seq_end {
            r.active = false;
            self.issue_r2ts(limits, next_ttt, emit);
        }
        Ok(place)
    }

    /// Forgets every outstanding get (abort); returns the buffer ids that were pending.
    pub fn cancel_gets(&mut self) -> impl Iterator<Item = u8> {
        let ids: [Option<u8>; MAX_BUFS] = self.bufs.map(|b| b.active.then_some(b.id));
        self.bufs = [OutBuf::default(); MAX_BUFS];
        self.r2ts = [R2tSlot::default(); MAX_R2T_SLOTS];
        self.unsol.open = false;
        ids.into_iter().flatten()
    }

    /// The R2T PDU for `req`, with the connection's next StatSN (not advanced) and the
    /// session's ExpCmdSN/MaxCmdSN in `sn`.
    pub fn r2t_pdu(&self, req: &R2tReq, sn: TargetSn) -> R2t {
        R2t {
            lun: self.lun,
            itt: self.itt,
            ttt: req.ttt,
            sn,
            r2t_sn: req.r2t_sn,
            buffer_offset: req.offset,
            desired_data_transfer_length: req.len,
        }
    }
}

/// Residual of a command (RFC 7143 §11.4.5): `wanted` is the transfer length the
/// command asked for (0 when unknown), `moved` the bytes actually transferred, `edtl`
/// the Expected Data Transfer Length. Returns `(overflow, underflow, count)`.
pub fn residual(edtl: u32, wanted: u64, moved: u64) -> (bool, bool, u32) {
    let edtl64 = u64::from(edtl);
    if wanted > edtl64 {
        return (
            true,
            false,
            u32::try_from(wanted - edtl64).unwrap_or(u32::MAX),
        );
    }
    let actual = if wanted > 0 {
        wanted
    } else {
        moved.min(edtl64)
    };
    if actual < edtl64 {
        return (false, true, (edtl64 - actual) as u32);
    }
    (false, false, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sn() -> TargetSn {
        TargetSn {
            stat_sn: 0,
            exp_cmd_sn: 10,
            max_cmd_sn: 73,
        }
    }

    fn limits(seg: u32, burst: u32, r2t: u16) -> XferLimits {
        XferLimits {
            max_send_segment: seg,
            max_burst: burst,
            first_burst: 65536,
            max_outstanding_r2t: r2t,
            initial_r2t: false,
            immediate_data: true,
        }
    }

    fn ttt_gen() -> impl FnMut() -> u32 {
        let mut next = 0x100;
        move || {
            next += 1;
            next
        }
    }

    #[test]
    fn data_in_segments_by_max_recv_data_segment_length() {
        let mut x = TaskXfer::new(7, 0, 20_000);
        let mut out = Vec::new();
        let held = x
            .data_in(0, 20_000, &limits(8192, 1 << 20, 1), sn(), false, |p| {
                out.push(p)
            })
            .unwrap();
        assert!(held.is_none());
        let got: Vec<_> = out
            .iter()
            .map(|p| {
                (
                    p.header.data_sn,
                    p.header.buffer_offset,
                    p.len,
                    p.buf_offset,
                    p.header.final_bit,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, 0, 8192, 0, false),
                (1, 8192, 8192, 8192, false),
                (2, 16384, 3616, 16384, true)
            ]
        );
        for p in &out {
            assert_eq!(p.header.itt, 7);
            assert_eq!(p.header.ttt, RESERVED_TAG);
            assert_eq!((p.header.exp_cmd_sn, p.header.max_cmd_sn), (10, 73));
            assert!(p.header.status.is_none());
        }
        assert_eq!(x.data_sn(), 3);
        assert_eq!(x.bytes_sent(), 20_000);
    }

    #[test]
    fn data_sn_continues_across_buffers_and_last_is_held() {
        let mut x = TaskXfer::new(1, 0, 12_288);
        let l = limits(4096, 1 << 20, 1);
        let mut out = Vec::new();
        x.data_in(0, 8192, &l, sn(), false, |p| out.push(p))
            .unwrap();
        let mut held = x
            .data_in(8192, 4096, &l, sn(), true, |p| out.push(p))
            .unwrap()
            .expect("last PDU held");
        assert_eq!(out.len(), 2);
        assert!(out[1].header.final_bit, "each buffer ends a sequence");
        assert_eq!(held.header.data_sn, 2);
        assert_eq!(held.header.buffer_offset, 8192);
        assert_eq!(held.buf_offset, 0);
        assert!(held.header.final_bit);
        held.collapse_status(
            DataInStatus {
                status: 0,
                stat_sn: 55,
                overflow: false,
                underflow: true,
                residual_count: 100,
            },
            11,
            74,
        );
        let bytes = crate::pdu::Pdu::DataIn(held.header).to_bytes();
        assert_eq!(bytes[1], 0x80 | 0x02 | 0x01, "F, U and S bits");
        assert_eq!(&bytes[24..28], &55u32.to_be_bytes(), "StatSN");
        assert_eq!(&bytes[28..32], &11u32.to_be_bytes(), "ExpCmdSN refreshed");
        assert_eq!(&bytes[36..40], &2u32.to_be_bytes(), "DataSN");
        assert_eq!(&bytes[44..48], &100u32.to_be_bytes(), "residual");
        assert_eq!(x.data_sn(), 3);
    }

    #[test]
    fn data_in_sequences_end_at_max_burst_length() {
        let mut x = TaskXfer::new(1, 0, 40_000);
        let mut out = Vec::new();
        x.data_in(0, 40_000, &limits(12_000, 16_384, 1), sn(), false, |p| {
            out.push(p)
        })
        .unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|p| (p.header.buffer_offset, p.len, p.header.final_bit))
            .collect();
        assert_eq!(
            got,
            [
                (0, 12_000, false),
                (12_000, 4_384, true),
                (16_384, 12_000, false),
                (28_384, 4_384, true),
                (32_768, 7_232, true)
            ]
        );
        let sns: Vec<u32> = out.iter().map(|p| p.header.data_sn).collect();
        assert_eq!(sns, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn data_in_outside_edtl_is_refused() {
        let mut x = TaskXfer::new(1, 0, 512);
        let l = limits(8192, 1 << 20, 1);
        assert!(matches!(
            x.data_in(0, 1024, &l, sn(), false, |_| {}),
            Err(XferError::Range { .. })
        ));
        assert!(matches!(
            x.data_in(0, 0, &l, sn(), false, |_| {}),
            Err(XferError::Range { .. })
        ));
        assert_eq!(x.data_sn(), 0);
    }

    fn dout(ttt: u32, off: u32, sn: u32, f: bool) -> DataOut {
        DataOut {
            final_bit: f,
            lun: 0,
            itt: 5,
            ttt,
            exp_stat_sn: 0,
            data_sn: sn,
            buffer_offset: off,
        }
    }

    #[test]
    fn r2ts_respect_burst_and_outstanding_limits() {
        let l = limits(8192, 65536, 2);
        let mut x = TaskXfer::new(5, 3, 4 * 65536);
        let mut ttt = ttt_gen();
        let mut r2ts = Vec::new();
        x.get_data(9, 0, 3 * 65536, &l, &mut ttt, |r| r2ts.push(r))
            .unwrap();
        assert_eq!(
            r2ts,
            [
                R2tReq {
                    ttt: 0x101,
                    r2t_sn: 0,
                    offset: 0,
                    len: 65536
                },
                R2tReq {
                    ttt: 0x102,
                    r2t_sn: 1,
                    offset: 65536,
                    len: 65536
                }
            ]
        );
        let pdu = x.r2t_pdu(&r2ts[1], sn());
        assert_eq!((pdu.lun, pdu.itt, pdu.r2t_sn), (3, 5, 1));
        r2ts.clear();
        // Complete the second R2T first (sequences may complete in any order).
        for i in 0..8u32 {
            let p = x
                .data_out(
                    &dout(0x102, 65536 + i * 8192, i, i == 7),
                    8192,
                    &l,
                    &mut ttt,
                    |r| r2ts.push(r),
                )
                .unwrap();
            assert_eq!(p.buf, Some(9));
            assert_eq!(p.buf_offset, 65536 + i as usize * 8192);
            assert!(!p.complete);
        }
        assert_eq!(
            r2ts,
            [R2tReq {
                ttt: 0x103,
                r2t_sn: 2,
                offset: 131072,
                len: 65536
            }]
        );
        let p = x
            .data_out(&dout(0x101, 0, 0, true), 65536, &l, &mut ttt, |_| {})
            .unwrap();
        assert!(!p.complete);
        let p = x
            .data_out(&dout(0x103, 131072, 0, true), 65536, &l, &mut ttt, |_| {})
            .unwrap();
        assert!(p.complete);
        assert_eq!(x.bytes_received(), 3 * 65536);
        assert_eq!(x.pending_gets().count(), 0);
    }

    #[test]
    fn data_out_checks() {
        let l = limits(8192, 65536, 1);
        let mut x = TaskXfer::new(5, 0, 16384);
        let mut ttt = ttt_gen();
        let mut r2ts = Vec::new();
        x.get_data(0, 0, 16384, &l, &mut ttt, |r| r2ts.push(r))
            .unwrap();
        let t = r2ts[0].ttt;
        let mut go = |h: DataOut, n: u32| x.data_out(&h, n, &l, &mut ttt, |_| {});
        assert_eq!(
            go(dout(0x999, 0, 0, false), 8192),
            Err(XferError::UnknownTtt(0x999))
        );
        assert!(!XferError::UnknownTtt(1).ends_task());
        assert_eq!(
            XferError::DataSn {
                expected: 0,
                got: 1
            }
            .sense_code(),
            (0x4b, 0x00)
        );
        assert_eq!(
            go(dout(t, 0, 1, false), 8192),
            Err(XferError::DataSn {
                expected: 0,
                got: 1
            })
        );
        assert_eq!(
            go(dout(t, 512, 0, false), 8192),
            Err(XferError::Offset {
                expected: 0,
                got: 512
            })
        );
        assert_eq!(
            go(dout(t, 0, 0, true), 8192),
            Err(XferError::FinalBit {
                got: true,
                offset: 0,
                end: 16384
            })
        );
        assert_eq!(go(dout(t, 0, 0, false), 0), Err(XferError::Empty));
        assert!(go(dout(t, 0, 0, false), 8192).is_ok());
        assert_eq!(
            go(dout(t, 8192, 1, true), 16384),
            Err(XferError::Overrun {
                end: 24576,
                limit: 16384
            })
        );
        assert_eq!(
            go(dout(t, 8192, 1, false), 8192),
            Err(XferError::FinalBit {
                got: false,
                offset: 8192,
                end: 16384
            })
        );
        let p = go(dout(t, 8192, 1, true), 8192).unwrap();
        assert!(p.complete);
        // The sequence is over: its tag is unknown now.
        assert_eq!(
            go(dout(t, 8192, 2, true), 8192),
            Err(XferError::UnknownTtt(t))
        );
    }

    #[test]
    fn unsolicited_burst() {
        let l = limits(8192, 65536, 1);
        let mut x = TaskXfer::new(5, 0, 100_000);
        assert_eq!(x.begin_unsolicited(8192, false, &l), Ok(true));
        let mut ttt = ttt_gen();
        let mut go = |h: DataOut, n: u32| x.data_out(&h, n, &l, &mut ttt, |_| {});
        assert_eq!(
            go(dout(RESERVED_TAG, 8192, 1, false), 8192),
            Err(XferError::DataSn {
                expected: 0,
                got: 1
            })
        );
        let p = go(dout(RESERVED_TAG, 8192, 0, false), 8192).unwrap();
        assert_eq!((p.buf, p.buf_offset, p.complete), (None, 8192, false));
        // The burst ends at FirstBurstLength (65536): F is required there.
        assert_eq!(
            go(dout(RESERVED_TAG, 16384, 1, false), 49152),
            Err(XferError::FinalBit {
                got: false,
                offset: 16384,
                end: 65536
            })
        );
        assert!(matches!(
            go(dout(RESERVED_TAG, 16384, 1, true), 65536),
            Err(XferError::Overrun { .. })
        ));
        let p = go(dout(RESERVED_TAG, 16384, 1, true), 8192).unwrap();
        assert!(p.complete);
        assert_eq!(
            go(dout(RESERVED_TAG, 24576, 2, true), 8192),
            Err(XferError::Unsolicited)
        );
        assert_eq!(x.bytes_received(), 24576);
    }

    #[test]
    fn unsolicited_rules() {
        let mut l = limits(8192, 65536, 1);
        let mut x = TaskXfer::new(5, 0, 4096);
        assert_eq!(x.begin_unsolicited(4096, true, &l), Ok(false));
        let mut x = TaskXfer::new(5, 0, 4096);
        assert!(matches!(
            x.begin_unsolicited(8192, true, &l),
            Err(XferError::Overrun { .. })
        ));
        l.initial_r2t = true;
        let mut x = TaskXfer::new(5, 0, 100_000);
        assert_eq!(
            x.begin_unsolicited(0, false, &l),
            Err(XferError::Unsolicited)
        );
        l.immediate_data = false;
        let mut x = TaskXfer::new(5, 0, 100_000);
        assert_eq!(
            x.begin_unsolicited(512, true, &l),
            Err(XferError::Unsolicited)
        );
    }

    #[test]
    fn cancel_returns_pending_buffers() {
        let l = limits(8192, 4096, 1);
        let mut x = TaskXfer::new(5, 0, 16384);
        let mut ttt = ttt_gen();
        x.get_data(1, 0, 8192, &l, &mut ttt, |_| {}).unwrap();
        x.get_data(2, 8192, 8192, &l, &mut ttt, |_| {}).unwrap();
        let ids: Vec<u8> = x.cancel_gets().collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(x.pending_gets().count(), 0);
    }

    #[test]
    fn residuals() {
        // READ of one 512-byte block with EDTL 0, 10000 and 200 (libiscsi Read10Invalid).
        assert_eq!(residual(0, 512, 0), (true, false, 512));
        assert_eq!(residual(10_000, 512, 512), (false, true, 9488));
        assert_eq!(residual(200, 512, 200), (true, false, 312));
        assert_eq!(residual(512, 512, 512), (false, false, 0));
        // Unknown command length: what moved decides.
        assert_eq!(residual(4096, 0, 1024), (false, true, 3072));
        assert_eq!(residual(4096, 0, 0), (false, true, 4096));
    }
}
