//! Framing: PDU sizes, the sans-IO receive buffer and the scatter-gather writer.
//!
//! On the wire a PDU is `BHS | AHS | [HeaderDigest] | Data | pad to 4 | [DataDigest]`
//! (RFC 7143 §11.1). The data digest is present only when the data segment is
//! non-empty and covers the padding; the header digest covers BHS and AHS.

use std::io::IoSlice;

use super::ahs::{AhsSet, Cdb, MAX_TOTAL_AHS_LEN};
use super::bhs::{Bhs, BHS_LEN, MAX_DATA_SEGMENT_LEN};
use super::codes::Role;
use super::digest::{crc32c, crc32c_append, from_wire, to_wire, Digests, DIGEST_LEN};
use super::repr::Pdu;
use super::PduError;

/// Bytes the reader may read past the end of a small PDU in one go.
pub const READ_AHEAD: usize = 16 * 1024;

/// Default MaxRecvDataSegmentLength, in force during login (RFC 7143 §13.12).
pub const DEFAULT_MAX_RECV_DATA_SEGMENT_LEN: u32 = 8192;

const ZERO_PAD: [u8; 3] = [0; 3];

fn pad_len(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// What the receiver accepts: digests in force and its declared MaxRecvDataSegmentLength.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Digests in force.
    pub digests: Digests,
    /// Largest DataSegmentLength accepted (our declared MaxRecvDataSegmentLength).
    pub max_data_segment_len: u32,
}

impl FrameLimits {
    /// Limits during login: no digests, 8192-byte data segments.
    pub const LOGIN: Self = Self {
        digests: Digests::NONE,
        max_data_segment_len: DEFAULT_MAX_RECV_DATA_SEGMENT_LEN,
    };

    /// The largest PDU these limits admit.
    pub fn max_frame_len(&self) -> usize {
        let data = self.max_data_segment_len.min(MAX_DATA_SEGMENT_LEN) as usize;
        BHS_LEN + MAX_TOTAL_AHS_LEN + 2 * DIGEST_LEN + data + pad_len(data)
    }
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self::LOGIN
    }
}

/// Where the parts of one PDU lie, from its BHS and the digests in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    /// TotalAHSLength in bytes.
    pub ahs_len: usize,
    /// DataSegmentLength (without padding).
    pub data_len: usize,
    /// Header digest present.
    pub header_digest: bool,
    /// Data digest present (negotiated and data non-empty).
    pub data_digest: bool,
}

impl FrameLayout {
    /// Reads the layout from a header.
    pub fn from_bhs<T: AsRef<[u8]>>(bhs: &Bhs<T>, digests: Digests) -> Self {
        let data_len = bhs.data_segment_len() as usize;
        Self {
            ahs_len: bhs.total_ahs_len(),
            data_len,
            header_digest: digests.header,
            data_digest: digests.data && data_len > 0,
        }
    }

    /// BHS + AHS + header digest.
    pub fn header_len(&self) -> usize {
        BHS_LEN + self.ahs_len + if self.header_digest { DIGEST_LEN } else { 0 }
    }

    /// Data segment rounded up to four bytes.
    pub fn padded_data_len(&self) -> usize {
        self.data_len + pad_len(self.data_len)
    }

    /// Bytes of the whole PDU.
    pub fn total_len(&self) -> usize {
        self.header_len() + self.padded_data_len() + if self.data_digest { DIGEST_LEN } else { 0 }
    }
}

/// How many bytes the PDU starting at `prefix` needs in total.
///
/// Returns `Truncated` while fewer than 48 bytes are known, `BadOpcode` for a
/// reserved opcode and `Oversize` when DataSegmentLength exceeds the limit.
pub fn frame_len(prefix: &[u8], limits: &FrameLimits) -> Result<FrameLayout, PduError> {
    let bhs = Bhs::new_checked(prefix)?;
    bhs.opcode()?;
    let len = bhs.data_segment_len();
    if len > limits.max_data_segment_len {
        return Err(PduError::Oversize {
            len,
            max: limits.max_data_segment_len,
        });
    }
    Ok(FrameLayout::from_bhs(&bhs, limits.digests))
}

/// One whole, validated PDU borrowed from a [`PduReader`].
#[derive(Debug, Clone, Copy)]
pub struct RxPdu<'a> {
    /// The decoded header.
    pub pdu: Pdu,
    /// The raw BHS (a Reject carries it back).
    pub header: &'a [u8; BHS_LEN],
    /// The AHSs RFC 7143 defines, already validated.
    pub ahs: AhsSet<'a>,
    /// The data segment without padding.
    pub data: &'a [u8],
}

impl RxPdu<'_> {
    /// The complete CDB of a SCSI Command (BHS part joined with the extended CDB AHS).
    pub fn cdb(&self) -> Option<Cdb> {
        match &self.pdu {
            Pdu::ScsiCommand(c) => Cdb::from_parts(&c.cdb, self.ahs.extended_cdb).ok(),
            _ => None,
        }
    }
}

/// Sans-IO receive side: accumulates stream bytes and yields whole, checked PDUs.
///
/// The buffer is allocated once (it grows only when the limits grow, at the
/// login → full feature transition). Reads are shaped so that a large PDU is
/// read exactly to its end, so a stream of large Data-Out PDUs is never moved;
/// small PDUs may be read ahead by up to [`READ_AHEAD`] bytes, the only bytes
/// that are ever moved to the front of the buffer.
///
/// ```
/// use idm::pdu::{FrameLimits, PduReader, Role, Pdu, NopOut, TxFrame, Digests};
/// let nop = Pdu::NopOut(NopOut { immediate: true, itt: 1, ttt: u32::MAX, ..Default::default() });
/// let mut wire = Vec::new();
/// TxFrame::from_pdu(&nop, &[], b"ping", Digests::NONE).unwrap().write_to(&mut wire);
///
/// let mut rx = PduReader::new(Role::Target, FrameLimits::LOGIN);
/// let n = rx.feed(&wire);
/// assert_eq!(n, wire.len());
/// let got = rx.next_pdu().unwrap().unwrap();
/// assert_eq!(got.pdu, nop);
/// assert_eq!(got.data, b"ping");
/// ```
#[derive(Debug)]
pub struct PduReader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    role: Role,
    limits: FrameLimits,
    /// Length of the PDU last handed out; dropped on the next call.
    consumed: usize,
    /// Bytes of a skipped PDU still to drop as they arrive.
    discard: usize,
    /// Set once framing is lost; every later call returns it.
    failed: Option<PduError>,
    rejected: Option<[u8; BHS_LEN]>,
}

impl PduReader {
    /// A reader for `role` (a target receives initiator opcodes) with `limits`.
    pub fn new(role: Role, limits: FrameLimits) -> Self {
        Self {
            buf: vec![0u8; limits.max_frame_len() + READ_AHEAD].into_boxed_slice(),
            start: 0,
            end: 0,
            role,
            limits,
            consumed: 0,
            discard: 0,
            failed: None,
            rejected: None,
        }
    }

    /// Limits in force.
    pub fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// Changes the limits for the PDUs not yet returned (digests start with the first
    /// PDU after the final Login Response). Grows the buffer if needed.
    pub fn set_limits(&mut self, limits: FrameLimits) {
        self.limits = limits;
        let want = limits.max_frame_len() + READ_AHEAD;
        if want > self.buf.len() {
            self.drop_consumed();
            let mut bigger = vec![0u8; want].into_boxed_slice();
            let live = self.buf.get(self.start..self.end).unwrap_or(&[]);
            if let Some(dst) = bigger.get_mut(..live.len()) {
                dst.copy_from_slice(live);
            }
            self.end -= self.start;
            self.start = 0;
            self.buf = bigger;
        }
    }

    /// Bytes received but not yet returned as PDUs.
    pub fn buffered(&self) -> usize {
        self.end - self.start - self.consumed.min(self.end - self.start)
    }

    /// The BHS of the PDU behind the last non-fatal error, for the Reject's data segment.
    pub fn rejected_header(&self) -> Option<&[u8; BHS_LEN]> {
        self.rejected.as_ref()
    }

    fn drop_consumed(&mut self) {
        self.start += self.consumed.min(self.end - self.start);
        self.consumed = 0;
        if self.discard > 0 {
            let n = self.discard.min(self.end - self.start);
            self.start += n;
            self.discard -= n;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Size of the PDU being assembled, if its header is in (bounded by the limits).
    fn current_total(&self) -> Option<usize> {
        let live = self.buf.get(self.start..self.end)?;
        let bhs = Bhs::new_checked(live).ok()?;
        let total = FrameLayout::from_bhs(&bhs, self.limits.digests).total_len();
        Some(total.min(self.limits.max_frame_len()))
    }

    /// Free space to read the socket into; call [`commit`](Self::commit) with the
    /// count read. Empty when a whole PDU is waiting for [`next_pdu`](Self::next_pdu).
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.drop_consumed();
        let limit = if self.discard > 0 {
            self.start + self.discard
        } else {
            let total = self.current_total();
            let need = total.unwrap_or(BHS_LEN + MAX_TOTAL_AHS_LEN + DIGEST_LEN);
            if self.start + need > self.buf.len() && self.start > 0 {
                // Only read-ahead bytes (at most READ_AHEAD) or a partial header move.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match total {
                Some(t) if t > READ_AHEAD => self.start + t,
                Some(t) => self.start + t + READ_AHEAD,
                None => self.start + BHS_LEN + READ_AHEAD,
            }
        };
        let limit = limit.min(self.buf.len()).max(self.end);
        self.buf.get_mut(self.end..limit).unwrap_or(&mut [])
    }

    /// Records that `n` bytes were written into [`read_buf`](Self::read_buf).
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies as much of `data` as fits now; returns the count taken. Call
    /// [`next_pdu`](Self::next_pdu) until it returns `Ok(None)` before feeding the rest.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        let mut taken = 0;
        while taken < data.len() {
            let rest = data.get(taken..).unwrap_or(&[]);
            let dst = self.read_buf();
            let n = dst.len().min(rest.len());
            if n == 0 {
                break;
            }
            if let (Some(d), Some(s)) = (dst.get_mut(..n), rest.get(..n)) {
                d.copy_from_slice(s);
            }
            self.commit(n);
            taken += n;
        }
        taken
    }

    /// At end of stream: an error if a PDU was cut short.
    pub fn finish(&mut self) -> Result<(), PduError> {
        self.drop_consumed();
        let have = self.end - self.start;
        if have == 0 && self.discard == 0 {
            return Ok(());
        }
        let need = self.discard + self.current_total().unwrap_or(BHS_LEN);
        Err(PduError::Truncated { need, have })
    }

    fn skip(&mut self, total: usize, err: PduError) -> PduError {
        tracing::debug!(error = %err, bytes = total, "skipping bad PDU");
        self.rejected = self
            .buf
            .get(self.start..)
            .and_then(|b| b.first_chunk::<BHS_LEN>())
            .copied();
        self.discard = total;
        err
    }

    /// What is wrong with a BHS by itself: opcode, direction, DataSegmentLength.
    fn bhs_error<T: AsRef<[u8]>>(&self, bhs: &Bhs<T>) -> Option<PduError> {
        let op = match bhs.opcode() {
            Ok(op) => op,
            Err(e) => return Some(e),
        };
        if !self.role.accepts(op) {
            return Some(PduError::WrongDirection(op));
        }
        let len = bhs.data_segment_len();
        if len > self.limits.max_data_segment_len {
            let max = self.limits.max_data_segment_len;
            return Some(PduError::Oversize { len, max });
        }
        None
    }

    /// Checks the buffered bytes without changing state.
    ///
    /// The BHS is checked (opcode, direction, DataSegmentLength against the limit) as soon
    /// as its 48 bytes are in, before the AHS and header digest arrive: a junk header
    /// never makes the reader wait for up to 1 KiB of "AHS" that may never come. Without
    /// header digests a bad header is trusted for its lengths and the PDU is skipped whole
    /// (non-fatal: Reject); with header digests it cannot be trusted before its digest is
    /// checked, so if the digest is not in yet, framing is lost (fatal).
    fn check(&self) -> Check {
        let live = self.buf.get(self.start..self.end).unwrap_or(&[]);
        let Ok(bhs) = Bhs::new_checked(live) else {
            return Check::NeedMore;
        };
        let layout = FrameLayout::from_bhs(&bhs, self.limits.digests);
        let header_len = layout.header_len();
        let total = layout.total_len();
        let early = self.bhs_error(&bhs);
        let Some(header_part) = live.get(..header_len) else {
            return match early {
                None => Check::NeedMore,
                Some(e) if layout.header_digest => Check::Fatal(PduError::Unframed(match e {
                    PduError::BadOpcode(_) => "reserved opcode",
                    PduError::WrongDirection(_) => "opcode of the other direction",
                    _ => "data segment over the limit",
                })),
                Some(e) => Check::Skip(total, e),
            };
        };
        if layout.header_digest {
            let (covered, digest) = header_part.split_at(header_len - DIGEST_LEN);
            let received = from_wire(digest.try_into().unwrap_or([0; DIGEST_LEN]));
            let computed = crc32c(covered);
            if received != computed {
                return Check::Fatal(PduError::HeaderDigest { received, computed });
            }
        }
        // The header is trusted from here on: a bad PDU can be skipped whole.
        if let Some(e) = early {
            return Check::Skip(total, e);
        }
        if live.len() < total {
            return Check::NeedMore;
        }
        if layout.data_digest {
            let padded_end = header_len + layout.padded_data_len();
            let covered = live.get(header_len..padded_end).unwrap_or(&[]);
            let digest = live.get(padded_end..total).unwrap_or(&[]);
            let received = from_wire(digest.try_into().unwrap_or([0; DIGEST_LEN]));
            let computed = crc32c(covered);
            if received != computed {
                return Check::Skip(total, PduError::DataDigest { received, computed });
            }
        }
        let pdu = match Pdu::parse(&bhs) {
            Ok(p) => p,
            Err(e) => return Check::Skip(total, e),
        };
        let ahs_region = live.get(BHS_LEN..BHS_LEN + layout.ahs_len).unwrap_or(&[]);
        if let Err(e) = AhsSet::parse(ahs_region) {
            return Check::Skip(total, e);
        }
        Check::Ready(pdu, layout)
    }

    /// The next whole PDU, `Ok(None)` when more bytes are needed, or an error.
    ///
    /// After a non-fatal error the bad PDU has been skipped and the stream is still
    /// in sync ([`rejected_header`](Self::rejected_header) holds its BHS); after a
    /// fatal one ([`PduError::is_fatal`]) every call returns the same error.
    pub fn next_pdu(&mut self) -> Result<Option<RxPdu<'_>>, PduError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.drop_consumed();
        if self.discard > 0 {
            return Ok(None);
        }
        let (pdu, layout) = match self.check() {
            Check::NeedMore => return Ok(None),
            Check::Fatal(e) => {
                tracing::debug!(error = %e, "PDU framing lost");
                self.failed = Some(e);
                return Err(e);
            }
            Check::Skip(total, e) => return Err(self.skip(total, e)),
            Check::Ready(pdu, layout) => (pdu, layout),
        };
        // Handed out now, dropped on the next call.
        self.consumed = layout.total_len();
        self.rejected = None;
        let live = self.buf.get(self.start..self.end).unwrap_or(&[]);
        let header = live.first_chunk::<BHS_LEN>().ok_or(PduError::Truncated {
            need: BHS_LEN,
            have: live.len(),
        })?;
        let ahs_region = live.get(BHS_LEN..BHS_LEN + layout.ahs_len).unwrap_or(&[]);
        let ahs = AhsSet::parse(ahs_region)?;
        let data_start = layout.header_len();
        let data = live
            .get(data_start..data_start + layout.data_len)
            .unwrap_or(&[]);
        Ok(Some(RxPdu {
            pdu,
            header,
            ahs,
            data,
        }))
    }
}

/// Outcome of [`PduReader::check`].
enum Check {
    NeedMore,
    Fatal(PduError),
    Skip(usize, PduError),
    Ready(Pdu, FrameLayout),
}

/// One PDU ready for a vectored write: header bytes and digests in small fixed
/// arrays, AHS and data borrowed (never copied).
#[derive(Debug, Clone)]
pub struct TxFrame<'a> {
    head: [u8; BHS_LEN + DIGEST_LEN],
    head_len: usize,
    ahs: &'a [u8],
    ahs_digest: [u8; DIGEST_LEN],
    ahs_digest_len: usize,
    data: &'a [u8],
    tail: [u8; 3 + DIGEST_LEN],
    tail_len: usize,
}

impl<'a> TxFrame<'a> {
    /// Frames an emitted header: sets TotalAHSLength and DataSegmentLength, computes
    /// digests and padding. `ahs` must be whole 4-byte words (see [`AhsSet::emit`]).
    pub fn new(
        bhs: &[u8; BHS_LEN],
        ahs: &'a [u8],
        data: &'a [u8],
        digests: Digests,
    ) -> Result<Self, PduError> {
        if ahs.len() % 4 != 0 || ahs.len() > MAX_TOTAL_AHS_LEN {
            return Err(PduError::InvalidField("TotalAHSLength"));
        }
        let data_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let mut head = [0u8; BHS_LEN + DIGEST_LEN];
        let (h, _) = head.split_at_mut(BHS_LEN);
        h.copy_from_slice(bhs);
        let mut view = Bhs::new_checked(&mut *h)?;
        view.set_total_ahs_words((ahs.len() / 4) as u8);
        view.set_data_segment_len(data_len)?;

        let mut frame = Self {
            head,
            head_len: BHS_LEN,
            ahs,
            ahs_digest: [0; DIGEST_LEN],
            ahs_digest_len: 0,
            data,
            tail: [0; 3 + DIGEST_LEN],
            tail_len: pad_len(data.len()),
        };
        if digests.header {
            let (bhs_bytes, _) = frame.head.split_at(BHS_LEN);
            let d = to_wire(crc32c_append(crc32c(bhs_bytes), ahs));
            if ahs.is_empty() {
                if let Some(dst) = frame.head.get_mut(BHS_LEN..) {
                    dst.copy_from_slice(&d);
                }
                frame.head_len = BHS_LEN + DIGEST_LEN;
            } else {
                frame.ahs_digest = d;
                frame.ahs_digest_len = DIGEST_LEN;
            }
        }
        if digests.data && !data.is_empty() {
            let pad = ZERO_PAD.get(..frame.tail_len).unwrap_or(&[]);
            let d = to_wire(crc32c_append(crc32c(data), pad));
            if let Some(dst) = frame
                .tail
                .get_mut(frame.tail_len..frame.tail_len + DIGEST_LEN)
            {
                dst.copy_from_slice(&d);
            }
            frame.tail_len += DIGEST_LEN;
        }
        Ok(frame)
    }

    /// Emits `pdu` and frames it.
    pub fn from_pdu(
        pdu: &Pdu,
        ahs: &'a [u8],
        data: &'a [u8],
        digests: Digests,
    ) -> Result<Self, PduError> {
        Self::new(&pdu.to_bytes(), ahs, data, digests)
    }

    /// The final BHS, lengths included.
    pub fn header(&self) -> &[u8; BHS_LEN] {
        self.head.first_chunk().unwrap_or(&[0; BHS_LEN])
    }

    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        self.head_len + self.ahs.len() + self.ahs_digest_len + self.data.len() + self.tail_len
    }

    /// The five pieces in wire order (some may be empty): BHS (+ header digest when
    /// there is no AHS), AHS, header digest after AHS, data, padding + data digest.
    pub fn slices(&self) -> [&[u8]; 5] {
        [
            self.head.get(..self.head_len).unwrap_or(&[]),
            self.ahs,
            self.ahs_digest.get(..self.ahs_digest_len).unwrap_or(&[]),
            self.data,
            self.tail.get(..self.tail_len).unwrap_or(&[]),
        ]
    }

    /// The pieces as `IoSlice`s for `write_vectored`.
    pub fn io_slices(&self) -> [IoSlice<'_>; 5] {
        self.slices().map(IoSlice::new)
    }

    /// Appends the whole PDU to `out` (tests and non-vectored transports).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for s in self.slices() {
            out.extend_from_slice(s);
        }
    }
}
