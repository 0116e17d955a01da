//! Sense data (SPC-4 §4.5): the [`Sense`] value, its fixed and descriptor encodings, and a
//! bounds-checked parser.
//!
//! Encoders write into a caller buffer and never allocate. When the buffer is shorter than
//! the sense data, the data is truncated and its ADDITIONAL SENSE LENGTH is left as is, as
//! SPC-4 §4.2.5.6 requires for a short allocation length.

use core::fmt;

use super::status::{Asc, SenseKey};

/// Which sense data format to return (SPC-4 §4.5.1).
///
/// A device server returns descriptor format when the D_SENSE bit of the Control mode page
/// is one (or REQUEST SENSE has DESC set), fixed format otherwise.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum SenseFormat {
    /// Fixed format, response codes 70h (current) and 71h (deferred); 18 bytes.
    #[default]
    Fixed,
    /// Descriptor format, response codes 72h (current) and 73h (deferred).
    Descriptor,
}

impl SenseFormat {
    /// The format selected by the D_SENSE bit of the Control mode page.
    pub const fn from_d_sense(d_sense: bool) -> Self {
        if d_sense {
            Self::Descriptor
        } else {
            Self::Fixed
        }
    }

    /// The RESPONSE CODE byte for current or deferred errors in this format.
    pub const fn response_code(self, deferred: bool) -> u8 {
        match (self, deferred) {
            (Self::Fixed, false) => 0x70,
            (Self::Fixed, true) => 0x71,
            (Self::Descriptor, false) => 0x72,
            (Self::Descriptor, true) => 0x73,
        }
    }

    /// The format of encoded sense data, from its first byte; `None` for an empty buffer or
    /// a response code other than 70h–73h.
    pub fn detect(buf: &[u8]) -> Option<Self> {
        match buf.first()? & 0x7F {
            0x70 | 0x71 => Some(Self::Fixed),
            0x72 | 0x73 => Some(Self::Descriptor),
            _ => None,
        }
    }
}

/// Where an invalid field is, for ILLEGAL REQUEST sense data (SPC-4 §4.5.2.4.2).
///
/// For a field of several bits, `bit` is its most significant bit; for a field of several
/// bytes, `byte` is its most significant byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FieldPointer {
    /// `true` (C/D = 1) if the field is in the CDB, `false` if in the parameter list.
    pub in_cdb: bool,
    /// Byte offset of the field.
    pub byte: u16,
    /// Bit of the field within the byte (0–7), if known (BPV).
    pub bit: Option<u8>,
}

impl FieldPointer {
    /// A field in the CDB.
    pub const fn cdb(byte: u16, bit: Option<u8>) -> Self {
        Self {
            in_cdb: true,
            byte,
            bit,
        }
    }

    /// A field in the parameter list (data-out buffer).
    pub const fn parameter_list(byte: u16, bit: Option<u8>) -> Self {
        Self {
            in_cdb: false,
            byte,
            bit,
        }
    }
}

impl fmt::Display for FieldPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = if self.in_cdb { "CDB" } else { "parameter list" };
        write!(f, "{place} byte {}", self.byte)?;
        if let Some(bit) = self.bit {
            write!(f, " bit {bit}")?;
        }
        Ok(())
    }
}

/// The SENSE KEY SPECIFIC field (SPC-4 §4.5.2.4), whose meaning depends on the sense key.
///
/// Encoding always sets SKSV. Parsing chooses the variant from the sense key:
/// ILLEGAL REQUEST → [`Field`](Self::Field), NO SENSE and NOT READY →
/// [`Progress`](Self::Progress), RECOVERED/MEDIUM/HARDWARE ERROR →
/// [`ActualRetryCount`](Self::ActualRetryCount), COPY ABORTED → [`Segment`](Self::Segment),
/// UNIT ATTENTION → [`UnitAttention`](Self::UnitAttention), anything else →
/// [`Raw`](Self::Raw).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SenseKeySpecific {
    /// Field pointer of the invalid CDB or parameter list field (ILLEGAL REQUEST).
    Field(FieldPointer),
    /// Progress of a long operation, in 65536ths (NO SENSE, NOT READY).
    Progress(u16),
    /// Retries made (RECOVERED ERROR, MEDIUM ERROR, HARDWARE ERROR).
    ActualRetryCount(u16),
    /// Segment pointer of a failed copy (COPY ABORTED).
    Segment {
        /// SD: `byte` is relative to the segment descriptor rather than the parameter list.
        in_segment_descriptor: bool,
        /// Byte offset of the field in error.
        byte: u16,
        /// Bit of the field in error (0–7), if known.
        bit: Option<u8>,
    },
    /// Unit attention condition queue overflow (UNIT ATTENTION).
    UnitAttention {
        /// OVERFLOW: unit attention conditions were lost.
        overflow: bool,
    },
    /// The three bytes as transmitted (SKSV is set on encoding whatever bit 7 holds).
    Raw([u8; 3]),
}

impl SenseKeySpecific {
    /// The three bytes of the field, SKSV set.
    pub const fn to_bytes(self) -> [u8; 3] {
        const fn pointer(flags: u8, bit: Option<u8>, byte: u16) -> [u8; 3] {
            let bits = match bit {
                Some(b) => 0x08 | (b & 0x07),
                None => 0,
            };
            let be = byte.to_be_bytes();
            [0x80 | flags | bits, be[0], be[1]]
        }
        match self {
            Self::Field(fp) => pointer(if fp.in_cdb { 0x40 } else { 0 }, fp.bit, fp.byte),
            Self::Progress(v) | Self::ActualRetryCount(v) => {
                let be = v.to_be_bytes();
                [0x80, be[0], be[1]]
            }
            Self::Segment {
                in_segment_descriptor,
                byte,
                bit,
            } => pointer(if in_segment_descriptor { 0x20 } else { 0 }, bit, byte),
            Self::UnitAttention { overflow } => [0x80 | overflow as u8, 0, 0],
            Self::Raw(b) => [0x80 | b[0], b[1], b[2]],
        }
    }

    /// Decodes the three bytes for `key`; `None` if SKSV is zero.
    pub const fn from_bytes(key: SenseKey, b: [u8; 3]) -> Option<Self> {
        if b[0] & 0x80 == 0 {
            return None;
        }
        let value = u16::from_be_bytes([b[1], b[2]]);
        let bit = if b[0] & 0x08 != 0 {
            Some(b[0] & 0x07)
        } else {
            None
        };
        Some(match key.0 & 0x0F {
            0x5 => Self::Field(FieldPointer {
                in_cdb: b[0] & 0x40 != 0,
                byte: value,
                bit,
            }),
            0x0 | 0x2 => Self::Progress(value),
            0x1 | 0x3 | 0x4 => Self::ActualRetryCount(value),
            0xA => Self::Segment {
                in_segment_descriptor: b[0] & 0x20 != 0,
                byte: value,
                bit,
            },
            0x6 => Self::UnitAttention {
                overflow: b[0] & 0x01 != 0,
            },
            _ => Self::Raw([b[0] & 0x7F, b[1], b[2]]),
        })
    }
}

/// Sense data for a CHECK CONDITION: what went wrong, independent of its encoding.
///
/// Build one with [`Sense::new`] or a named constructor, add fields with the `with_*`
/// methods, and emit it in the format the LU is configured for:
///
/// ```
/// use plugins_sdk::scsi::{Sense, SenseFormat};
///
/// let sense = Sense::invalid_field_in_cdb(2, Some(1));
/// let mut buf = [0u8; 252];
/// let len = sense.write(SenseFormat::Fixed, &mut buf);
/// assert_eq!(
///     &buf[..len],
///     &[0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x24, 0, 0, 0xC9, 0x00, 0x02]
/// );
/// assert_eq!(Sense::parse(&buf[..len]), Ok(sense));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct Sense {
    /// SENSE KEY.
    pub key: SenseKey,
    /// ADDITIONAL SENSE CODE and QUALIFIER.
    pub asc: Asc,
    /// INFORMATION (e.g. the first LBA in error, or the miscompare offset); sets VALID.
    pub info: Option<u64>,
    /// COMMAND-SPECIFIC INFORMATION.
    pub command_specific: Option<u64>,
    /// SENSE KEY SPECIFIC field (sets SKSV).
    pub sks: Option<SenseKeySpecific>,
    /// A deferred error (response code 71h/73h) rather than a current one.
    pub deferred: bool,
}

impl Sense {
    /// The largest encoding this type produces (descriptor format with all three
    /// descriptors): 40 bytes.
    pub const MAX_LEN: usize = 40;
    /// Length of fixed-format sense data as produced here.
    pub const FIXED_LEN: usize = 18;

    /// Current sense data with only a key and ASC/ASCQ.
    pub const fn new(key: SenseKey, asc: Asc) -> Self {
        Self {
            key,
            asc,
            info: None,
            command_specific: None,
            sks: None,
            deferred: false,
        }
    }

    /// ILLEGAL REQUEST with the given ASC/ASCQ.
    pub const fn illegal_request(asc: Asc) -> Self {
        Self::new(SenseKey::ILLEGAL_REQUEST, asc)
    }

    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
    pub const fn invalid_opcode() -> Self {
        Self::illegal_request(Asc::INVALID_COMMAND_OPERATION_CODE)
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN CDB, pointing at `byte` (and `bit`) of the CDB.
    pub const fn invalid_field_in_cdb(byte: u16, bit: Option<u8>) -> Self {
        Self::illegal_request(Asc::INVALID_FIELD_IN_CDB)
            .with_field_pointer(FieldPointer::cdb(byte, bit))
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST, pointing at `byte` (and `bit`) of
    /// the parameter list.
    pub const fn invalid_field_in_parameter_list(byte: u16, bit: Option<u8>) -> Self {
        Self::illegal_request(Asc::INVALID_FIELD_IN_PARAMETER_LIST)
            .with_field_pointer(FieldPointer::parameter_list(byte, bit))
    }

    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const fn lba_out_of_range() -> Self {
        Self::illegal_request(Asc::LBA_OUT_OF_RANGE)
    }

    /// MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION, with INFORMATION set to the offset
    /// of the first byte that differs (VERIFY with BYTCHK, COMPARE AND WRITE).
    pub const fn miscompare(offset: u64) -> Self {
        Self::new(
            SenseKey::MISCOMPARE,
            Asc::MISCOMPARE_DURING_VERIFY_OPERATION,
        )
        .with_info(offset)
    }

    /// UNIT ATTENTION with the given ASC/ASCQ.
    pub const fn unit_attention(asc: Asc) -> Self {
        Self::new(SenseKey::UNIT_ATTENTION, asc)
    }

    /// NOT READY with the given ASC/ASCQ.
    pub const fn not_ready(asc: Asc) -> Self {
        Self::new(SenseKey::NOT_READY, asc)
    }

    /// Sets the INFORMATION field.
    #[must_use]
    pub const fn with_info(mut self, info: u64) -> Self {
        self.info = Some(info);
        self
    }

    /// Sets the COMMAND-SPECIFIC INFORMATION field.
    #[must_use]
    pub const fn with_command_specific(mut self, value: u64) -> Self {
        self.command_specific = Some(value);
        self
    }

    /// Sets the SENSE KEY SPECIFIC field.
    #[must_use]
    pub const fn with_sks(mut self, sks: SenseKeySpecific) -> Self {
        self.sks = Some(sks);
        self
    }

    /// Sets the SENSE KEY SPECIFIC field to a field pointer (for ILLEGAL REQUEST).
    #[must_use]
    pub const fn with_field_pointer(self, fp: FieldPointer) -> Self {
        self.with_sks(SenseKeySpecific::Field(fp))
    }

    /// Sets the SENSE KEY SPECIFIC field to a progress indication, in 65536ths.
    #[must_use]
    pub const fn with_progress(self, progress: u16) -> Self {
        self.with_sks(SenseKeySpecific::Progress(progress))
    }

    /// Marks the error as deferred (response code 71h/73h).
    #[must_use]
    pub const fn with_deferred(mut self, deferred: bool) -> Self {
        self.deferred = deferred;
        self
    }

    /// The field pointer, if the SENSE KEY SPECIFIC field holds one.
    pub const fn field_pointer(&self) -> Option<FieldPointer> {
        match self.sks {
            Some(SenseKeySpecific::Field(fp)) => Some(fp),
            _ => None,
        }
    }

    /// The full length of the encoding in `format` (before any truncation).
    pub const fn encoded_len(&self, format: SenseFormat) -> usize {
        match format {
            SenseFormat::Fixed => Self::FIXED_LEN,
            SenseFormat::Descriptor => {
                8 + if self.info.is_some() { 12 } else { 0 }
                    + if self.command_specific.is_some() {
                        12
                    } else {
                        0
                    }
                    + if self.sks.is_some() { 8 } else { 0 }
            }
        }
    }

    /// Writes the sense data in `format` into `buf` and returns the number of bytes
    /// written: the full length, or `buf.len()` if the buffer is shorter (truncated).
    ///
    /// In fixed format the INFORMATION and COMMAND-SPECIFIC INFORMATION fields are four
    /// bytes: a value above `u32::MAX` is not reported (INFORMATION then has VALID = 0), so
    /// use descriptor format for 64-bit LBAs.
    pub fn write(&self, format: SenseFormat, buf: &mut [u8]) -> usize {
        let full = self.encode(format);
        let n = full.len().min(buf.len());
        buf[..n].copy_from_slice(&full[..n]);
        n
    }

    /// Encodes the sense data in `format` into a stack value.
    pub fn encode(&self, format: SenseFormat) -> SenseBytes {
        let mut out = SenseBytes {
            buf: [0; Self::MAX_LEN],
            len: 0,
        };
        match format {
            SenseFormat::Fixed => self.encode_fixed(&mut out),
            SenseFormat::Descriptor => self.encode_descriptor(&mut out),
        }
        out
    }

    fn encode_fixed(&self, out: &mut SenseBytes) {
        let b = &mut out.buf;
        b[0] = SenseFormat::Fixed.response_code(self.deferred);
        if let Some(info) = self.info.and_then(|i| u32::try_from(i).ok()) {
            b[0] |= 0x80; // VALID
            b[3..7].copy_from_slice(&info.to_be_bytes());
        }
        b[2] = self.key.0 & 0x0F;
        b[7] = (Self::FIXED_LEN - 8) as u8;
        if let Some(csi) = self.command_specific.and_then(|v| u32::try_from(v).ok()) {
            b[8..12].copy_from_slice(&csi.to_be_bytes());
        }
        b[12] = self.asc.asc;
        b[13] = self.asc.ascq;
        if let Some(sks) = self.sks {
            b[15..18].copy_from_slice(&sks.to_bytes());
        }
        out.len = Self::FIXED_LEN as u8;
    }

    fn encode_descriptor(&self, out: &mut SenseBytes) {
        out.push(&[
            SenseFormat::Descriptor.response_code(self.deferred),
            self.key.0 & 0x0F,
            self.asc.asc,
            self.asc.ascq,
            0,
            0,
            0,
            0, // ADDITIONAL SENSE LENGTH, set below
        ]);
        if let Some(info) = self.info {
            // Information descriptor, VALID = 1.
            out.push(&[0x00, 0x0A, 0x80, 0]);
            out.push(&info.to_be_bytes());
        }
        if let Some(csi) = self.command_specific {
            out.push(&[0x01, 0x0A, 0, 0]);
            out.push(&csi.to_be_bytes());
        }
        if let Some(sks) = self.sks {
            let [a, b, c] = sks.to_bytes();
            out.push(&[0x02, 0x06, 0, 0, a, b, c, 0]);
        }
        out.buf[7] = out.len - 8;
    }

    /// Parses fixed (70h/71h) or descriptor (72h/73h) sense data.
    ///
    /// The ADDITIONAL SENSE LENGTH is honoured and checked against the buffer; fields past
    /// the end of the data are treated as absent, and unknown descriptors are skipped. In
    /// fixed format a zero COMMAND-SPECIFIC INFORMATION field reads as `None`.
    pub fn parse(buf: &[u8]) -> Result<Self, SenseError> {
        let Some(&first) = buf.first() else {
            return Err(SenseError::Truncated { got: 0, need: 1 });
        };
        let rc = first & 0x7F;
        let (format, deferred) = match rc {
            0x70 => (SenseFormat::Fixed, false),
            0x71 => (SenseFormat::Fixed, true),
            0x72 => (SenseFormat::Descriptor, false),
            0x73 => (SenseFormat::Descriptor, true),
            _ => return Err(SenseError::ResponseCode(rc)),
        };
        let need = match format {
            SenseFormat::Fixed => 14,
            SenseFormat::Descriptor => 8,
        };
        // The data ends at ADDITIONAL SENSE LENGTH or at the end of the buffer.
        let end = match buf.get(7) {
            Some(&add) => buf.len().min(8 + add as usize),
            None => buf.len(),
        };
        if end < need {
            return Err(SenseError::Truncated { got: end, need });
        }
        let data = &buf[..end];
        let byte = |i: usize| data.get(i).copied().unwrap_or(0);
        let mut sense = match format {
            SenseFormat::Fixed => {
                let key = SenseKey(byte(2) & 0x0F);
                let mut s = Sense::new(key, Asc::new(byte(12), byte(13)));
                if first & 0x80 != 0 {
                    s.info = Some(u64::from(be32(data, 3)));
                }
                let csi = be32(data, 8);
                if csi != 0 {
                    s.command_specific = Some(u64::from(csi));
                }
                if data.len() >= 18 {
                    s.sks = SenseKeySpecific::from_bytes(key, [byte(15), byte(16), byte(17)]);
                }
                s
            }
            SenseFormat::Descriptor => {
                let key = SenseKey(byte(1) & 0x0F);
                let mut s = Sense::new(key, Asc::new(byte(2), byte(3)));
                let mut rest = data.get(8..).unwrap_or(&[]);
                while let [kind, len, ..] = *rest {
                    let total = 2 + len as usize;
                    let Some(d) = rest.get(..total) else {
                        break; // truncated descriptor
                    };
                    match (kind, d.len()) {
                        (0x00, 12..) if d[2] & 0x80 != 0 => s.info = Some(be64(d, 4)),
                        (0x01, 12..) => s.command_specific = Some(be64(d, 4)),
                        (0x02, 8..) => {
                            s.sks = SenseKeySpecific::from_bytes(key, [d[4], d[5], d[6]])
                        }
                        _ => {}
                    }
                    rest = rest.get(total..).unwrap_or(&[]);
                }
                s
            }
        };
        sense.deferred = deferred;
        Ok(sense)
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    for (i, x) in v.iter_mut().enumerate() {
        *x = b.get(at + i).copied().unwrap_or(0);
    }
    u32::from_be_bytes(v)
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

impl fmt::Display for Sense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {} ({:02X}h/{:02X}h)",
            self.key, self.asc, self.asc.asc, self.asc.ascq
        )?;
        if self.deferred {
            f.write_str(", deferred")?;
        }
        if let Some(info) = self.info {
            write!(f, ", information {info:#x}")?;
        }
        if let Some(csi) = self.command_specific {
            write!(f, ", command-specific {csi:#x}")?;
        }
        match self.sks {
            Some(SenseKeySpecific::Field(fp)) => write!(f, ", field pointer {fp}")?,
            Some(SenseKeySpecific::Progress(p)) => write!(f, ", progress {p}/65536")?,
            Some(other) => write!(f, ", sense-key specific {other:?}")?,
            None => {}
        }
        Ok(())
    }
}

/// Encoded sense data held on the stack (up to [`Sense::MAX_LEN`] bytes); derefs to `[u8]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SenseBytes {
    buf: [u8; Sense::MAX_LEN],
    len: u8,
}

impl SenseBytes {
    /// The encoded bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len as usize).unwrap_or(&self.buf)
    }

    fn push(&mut self, bytes: &[u8]) {
        let at = self.len as usize;
        if let Some(dst) = self.buf.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.len += bytes.len() as u8;
        }
    }
}

impl core::ops::Deref for SenseBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for SenseBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for SenseBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SenseBytes(")?;
        for (i, b) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b:02X}")?;
        }
        f.write_str(")")
    }
}

/// Why sense data could not be parsed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SenseError {
    /// Fewer bytes than the format's header (14 for fixed, 8 for descriptor).
    #[error("sense data truncated: {got} bytes, at least {need} needed")]
    Truncated {
        /// Usable bytes (bounded by ADDITIONAL SENSE LENGTH).
        got: usize,
        /// Minimum for the format.
        need: usize,
    },
    /// A response code other than 70h–73h.
    #[error("unsupported sense data response code {0:#04x}")]
    ResponseCode(u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_invalid_field_in_cdb_with_bit_pointer() {
        let s = Sense::invalid_field_in_cdb(2, Some(1));
        let mut buf = [0xEEu8; 32];
        let n = s.write(SenseFormat::Fixed, &mut buf);
        assert_eq!(n, 18);
        assert_eq!(
            &buf[..n],
            &[
                0x70, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00,
                0x00, 0xC9, 0x00, 0x02
            ]
        );
        assert_eq!(buf[18], 0xEE, "nothing written past the sense data");
        assert_eq!(Sense::parse(&buf[..n]), Ok(s));
    }

    #[test]
    fn fixed_parameter_list_pointer_without_bit() {
        let s = Sense::invalid_field_in_parameter_list(0x104, None);
        let b = s.encode(SenseFormat::Fixed);
        assert_eq!(&b[12..], &[0x26, 0x00, 0x00, 0x80, 0x01, 0x04]);
        assert_eq!(Sense::parse(&b), Ok(s));
    }

    #[test]
    fn fixed_miscompare_information() {
        let s = Sense::miscompare(0x1234);
        let b = s.encode(SenseFormat::Fixed);
        assert_eq!(
            &*b,
            &[
                0xF0, 0x00, 0x0E, 0x00, 0x00, 0x12, 0x34, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x1D, 0x00,
                0x00, 0x00, 0x00, 0x00
            ]
        );
        assert_eq!(Sense::parse(&b), Ok(s));
    }

    #[test]
    fn descriptor_miscompare_information() {
        let s = Sense::miscompare(0x1_0000_0200);
        let b = s.encode(SenseFormat::Descriptor);
        assert_eq!(
            &*b,
            &[
                0x72, 0x0E, 0x1D, 0x00, 0x00, 0x00, 0x00, 0x0C, // header
                0x00, 0x0A, 0x80, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x02, 0x00,
            ]
        );
        assert_eq!(Sense::parse(&b), Ok(s));
        // Too big for fixed format: VALID = 0, field zero.
        let f = s.encode(SenseFormat::Fixed);
        assert_eq!(&f[..8], &[0x70, 0, 0x0E, 0, 0, 0, 0, 0x0A]);
        assert_eq!(Sense::parse(&f).map(|p| p.info), Ok(None));
    }

    #[test]
    fn descriptor_round_trip_all_descriptors() {
        let s = Sense::invalid_field_in_cdb(2, Some(1))
            .with_info(0xDEAD_BEEF_0000_0001)
            .with_command_specific(7)
            .with_deferred(true);
        let b = s.encode(SenseFormat::Descriptor);
        assert_eq!(b.len(), 40);
        assert_eq!(b.len(), s.encoded_len(SenseFormat::Descriptor));
        assert_eq!(
            &*b,
            &[
                0x73, 0x05, 0x24, 0x00, 0x00, 0x00, 0x00, 0x20, // header, 32 more bytes
                0x00, 0x0A, 0x80, 0x00, 0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x00, 0x00,
                0x01, // info
                0x01, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, // csi
                0x02, 0x06, 0x00, 0x00, 0xC9, 0x00, 0x02, 0x00, // sense-key specific
            ]
        );
        assert_eq!(Sense::parse(&b), Ok(s));
        assert_eq!(SenseFormat::detect(&b), Some(SenseFormat::Descriptor));
    }

    #[test]
    fn descriptor_minimal() {
        let s = Sense::unit_attention(Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
        let b = s.encode(SenseFormat::Descriptor);
        assert_eq!(&*b, &[0x72, 0x06, 0x3F, 0x0E, 0, 0, 0, 0]);
        assert_eq!(Sense::parse(&b), Ok(s));
    }

    #[test]
    fn progress_and_other_sks_round_trip() {
        let cases = [
            Sense::not_ready(Asc::LU_NOT_READY_SANITIZE_IN_PROGRESS).with_progress(0x8000),
            Sense::new(SenseKey::MEDIUM_ERROR, Asc::UNRECOVERED_READ_ERROR)
                .with_info(99)
                .with_sks(SenseKeySpecific::ActualRetryCount(3)),
            Sense::new(
                SenseKey::COPY_ABORTED,
                Asc::COPY_TARGET_DEVICE_NOT_REACHABLE,
            )
            .with_command_specific(5)
            .with_sks(SenseKeySpecific::Segment {
                in_segment_descriptor: true,
                byte: 4,
                bit: Some(7),
            }),
            Sense::unit_attention(Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED)
                .with_sks(SenseKeySpecific::UnitAttention { overflow: true }),
            Sense::new(SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED)
                .with_sks(SenseKeySpecific::Raw([0x12, 0x34, 0x56])),
        ];
        for s in cases {
            for format in [SenseFormat::Fixed, SenseFormat::Descriptor] {
                let b = s.encode(format);
                assert_eq!(b.len(), s.encoded_len(format));
                assert_eq!(Sense::parse(&b), Ok(s), "{format:?} {b:?}");
            }
        }
        let p = Sense::not_ready(Asc::LU_NOT_READY_FORMAT_IN_PROGRESS).with_progress(0x4000);
        assert_eq!(&p.encode(SenseFormat::Fixed)[15..], &[0x80, 0x40, 0x00]);
    }

    #[test]
    fn truncation_keeps_additional_length() {
        let s = Sense::invalid_field_in_cdb(9, Some(2));
        let mut small = [0u8; 8];
        assert_eq!(s.write(SenseFormat::Fixed, &mut small), 8);
        assert_eq!(small, [0x70, 0, 0x05, 0, 0, 0, 0, 0x0A]);
        assert_eq!(s.write(SenseFormat::Descriptor, &mut []), 0);
        let mut d = [0u8; 10];
        assert_eq!(s.write(SenseFormat::Descriptor, &mut d), 10);
        assert_eq!(d, [0x72, 0x05, 0x24, 0, 0, 0, 0, 0x08, 0x02, 0x06]);
        // Parsing truncated data: the cut descriptor is ignored.
        assert_eq!(
            Sense::parse(&d),
            Ok(Sense::illegal_request(Asc::INVALID_FIELD_IN_CDB))
        );
    }

    #[test]
    fn parse_rejects_garbage() {
        assert_eq!(
            Sense::parse(&[]),
            Err(SenseError::Truncated { got: 0, need: 1 })
        );
        assert_eq!(
            Sense::parse(&[0x7F; 18]),
            Err(SenseError::ResponseCode(0x7F))
        );
        assert_eq!(
            Sense::parse(&[0x70, 0, 5, 0, 0, 0, 0, 0]),
            Err(SenseError::Truncated { got: 8, need: 14 })
        );
        // ADDITIONAL SENSE LENGTH shorter than the header needs.
        let mut b = Sense::invalid_opcode().encode(SenseFormat::Fixed);
        b.buf[7] = 2;
        assert!(Sense::parse(&b).is_err());
        // A descriptor claiming more bytes than exist.
        let d = [0x72, 5, 0x24, 0, 0, 0, 0, 6, 0x00, 0xFF, 0x80, 0, 0, 0];
        assert_eq!(
            Sense::parse(&d),
            Ok(Sense::illegal_request(Asc::INVALID_FIELD_IN_CDB))
        );
    }

    #[test]
    fn display() {
        assert_eq!(
            Sense::invalid_field_in_cdb(1, Some(4)).to_string(),
            "ILLEGAL REQUEST, INVALID FIELD IN CDB (24h/00h), field pointer CDB byte 1 bit 4"
        );
        assert_eq!(
            Sense::miscompare(16).to_string(),
            "MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION (1Dh/00h), information 0x10"
        );
    }
}
