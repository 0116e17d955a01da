//! Zero-copy view of the 48-byte Basic Header Segment (RFC 7143 §11.2.1).

use super::codes::Opcode;
use super::PduError;

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;
/// Largest DataSegmentLength the 24-bit field can express.
pub const MAX_DATA_SEGMENT_LEN: u32 = 0x00ff_ffff;

static ZERO_BHS: [u8; BHS_LEN] = [0; BHS_LEN];

/// Reads a big-endian `u16` at a fixed offset of a header.
#[inline]
pub(crate) fn get_u16(h: &[u8; BHS_LEN], off: usize) -> u16 {
    match h.get(off..off + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

/// Reads a big-endian `u32` at a fixed offset of a header.
#[inline]
pub(crate) fn get_u32(h: &[u8; BHS_LEN], off: usize) -> u32 {
    match h.get(off..off + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Writes a big-endian `u16` at a fixed offset of a header.
#[inline]
pub(crate) fn put_u16(h: &mut [u8; BHS_LEN], off: usize, v: u16) {
    if let Some(dst) = h.get_mut(off..off + 2) {
        dst.copy_from_slice(&v.to_be_bytes());
    }
}

/// Writes a big-endian `u32` at a fixed offset of a header.
#[inline]
pub(crate) fn put_u32(h: &mut [u8; BHS_LEN], off: usize, v: u32) {
    if let Some(dst) = h.get_mut(off..off + 4) {
        dst.copy_from_slice(&v.to_be_bytes());
    }
}

/// A read (and, for mutable buffers, write) view of a BHS.
///
/// [`Bhs::new_checked`] validates the length once; afterwards no accessor can panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bhs<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Bhs<T> {
    /// Wraps a buffer of at least [`BHS_LEN`] bytes (extra bytes are ignored).
    pub fn new_checked(buffer: T) -> Result<Self, PduError> {
        let have = buffer.as_ref().len();
        if have < BHS_LEN {
            return Err(PduError::Truncated {
                need: BHS_LEN,
                have,
            });
        }
        Ok(Self { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The 48 header bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8; BHS_LEN] {
        // new_checked guarantees the length; the fallback is unreachable.
        self.buffer.as_ref().first_chunk().unwrap_or(&ZERO_BHS)
    }

    /// Raw opcode (byte 0, low six bits).
    pub fn opcode_raw(&self) -> u8 {
        self.as_bytes()[0] & 0x3f
    }

    /// Decoded opcode.
    pub fn opcode(&self) -> Result<Opcode, PduError> {
        Opcode::from_u8(self.opcode_raw())
    }

    /// Immediate delivery bit (byte 0, bit 6; initiator PDUs only).
    pub fn immediate(&self) -> bool {
        self.as_bytes()[0] & 0x40 != 0
    }

    /// Byte 1: the F bit and opcode-specific flags.
    pub fn flags(&self) -> u8 {
        self.as_bytes()[1]
    }

    /// Final bit (byte 1, bit 7).
    pub fn final_bit(&self) -> bool {
        self.flags() & 0x80 != 0
    }

    /// Opcode-specific byte 2.
    pub fn byte2(&self) -> u8 {
        self.as_bytes()[2]
    }

    /// Opcode-specific byte 3.
    pub fn byte3(&self) -> u8 {
        self.as_bytes()[3]
    }

    /// TotalAHSLength in 4-byte words (byte 4).
    pub fn total_ahs_words(&self) -> u8 {
        self.as_bytes()[4]
    }

    /// TotalAHSLength in bytes.
    pub fn total_ahs_len(&self) -> usize {
        usize::from(self.total_ahs_words()) * 4
    }

    /// DataSegmentLength (bytes 5..8, 24 bits, excluding padding).
    pub fn data_segment_len(&self) -> u32 {
        let h = self.as_bytes();
        u32::from_be_bytes([0, h[5], h[6], h[7]])
    }

    /// LUN field (bytes 8..16) as a big-endian integer.
    pub fn lun(&self) -> u64 {
        let h = self.as_bytes();
        u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]])
    }

    /// Initiator Task Tag (bytes 16..20).
    pub fn itt(&self) -> u32 {
        get_u32(self.as_bytes(), 16)
    }

    /// Big-endian 32-bit word at `off` (0 when out of range).
    pub fn u32_at(&self, off: usize) -> u32 {
        get_u32(self.as_bytes(), off)
    }

    /// Big-endian 16-bit word at `off` (0 when out of range).
    pub fn u16_at(&self, off: usize) -> u16 {
        get_u16(self.as_bytes(), off)
    }

    /// Target Transfer Tag (bytes 20..24) of the PDUs that carry one.
    pub fn ttt(&self) -> u32 {
        self.u32_at(20)
    }

    /// CmdSN (bytes 24..28) of an initiator PDU.
    pub fn cmd_sn(&self) -> u32 {
        self.u32_at(24)
    }

    /// StatSN (bytes 24..28) of a target PDU.
    pub fn stat_sn(&self) -> u32 {
        self.u32_at(24)
    }

    /// ExpStatSN (bytes 28..32) of an initiator PDU.
    pub fn exp_stat_sn(&self) -> u32 {
        self.u32_at(28)
    }

    /// ExpCmdSN (bytes 28..32) of a target PDU.
    pub fn exp_cmd_sn(&self) -> u32 {
        self.u32_at(28)
    }

    /// ISID (bytes 8..14) of a Login Request/Response.
    pub fn isid(&self) -> [u8; 6] {
        let h = self.as_bytes();
        [h[8], h[9], h[10], h[11], h[12], h[13]]
    }

    /// TSIH (bytes 14..16) of a Login Request/Response.
    pub fn tsih(&self) -> u16 {
        self.u16_at(14)
    }

    /// CID (bytes 20..22) of a Login or Logout Request.
    pub fn cid(&self) -> u16 {
        self.u16_at(20)
    }

    /// Status-Class and Status-Detail (bytes 36, 37) of a Login Response.
    pub fn login_status(&self) -> (u8, u8) {
        let h = self.as_bytes();
        (h[36], h[37])
    }

    /// MaxCmdSN (bytes 32..36, target PDUs).
    pub fn max_cmd_sn(&self) -> u32 {
        self.u32_at(32)
    }

    /// DataSN / R2TSN / ExpDataSN (bytes 36..40).
    pub fn data_sn(&self) -> u32 {
        self.u32_at(36)
    }

    /// Buffer Offset (bytes 40..44, Data-In/Data-Out/R2T).
    pub fn buffer_offset(&self) -> u32 {
        self.u32_at(40)
    }

    /// Residual Count / Desired Data Transfer Length (bytes 44..48).
    pub fn residual_count(&self) -> u32 {
        self.u32_at(44)
    }

    /// The 16 CDB bytes of a SCSI Command (bytes 32..48).
    pub fn cdb(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        if let Some(src) = self.as_bytes().get(32..48) {
            out.copy_from_slice(src);
        }
        out
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Bhs<T> {
    /// Mutable access to the 48 header bytes.
    #[inline]
    pub fn as_bytes_mut(&mut self) -> Option<&mut [u8; BHS_LEN]> {
        self.buffer.as_mut().first_chunk_mut()
    }

    /// Sets TotalAHSLength in 4-byte words.
    pub fn set_total_ahs_words(&mut self, words: u8) {
        if let Some(h) = self.as_bytes_mut() {
            h[4] = words;
        }
    }

    /// Sets DataSegmentLength; fails above 2^24 - 1.
    pub fn set_data_segment_len(&mut self, len: u32) -> Result<(), PduError> {
        if len > MAX_DATA_SEGMENT_LEN {
            return Err(PduError::Oversize {
                len,
                max: MAX_DATA_SEGMENT_LEN,
            });
        }
        if let Some(h) = self.as_bytes_mut() {
            let b = len.to_be_bytes();
            h[5] = b[1];
            h[6] = b[2];
            h[7] = b[3];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffer_is_truncated() {
        assert_eq!(
            Bhs::new_checked(&[0u8; 47][..]).unwrap_err(),
            PduError::Truncated { need: 48, have: 47 }
        );
        assert!(Bhs::new_checked(&[0u8; 0][..]).is_err());
    }

    #[test]
    fn accessors() {
        let mut b = [0u8; 52];
        b[0] = 0x41;
        b[1] = 0x81;
        b[4] = 2;
        b[5..8].copy_from_slice(&[0x01, 0x02, 0x03]);
        b[8..16].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        b[16..20].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        let v = Bhs::new_checked(&b[..]).unwrap();
        assert_eq!(v.opcode().unwrap(), Opcode::ScsiCommand);
        assert!(v.immediate());
        assert!(v.final_bit());
        assert_eq!(v.total_ahs_len(), 8);
        assert_eq!(v.data_segment_len(), 0x010203);
        assert_eq!(v.lun(), 0x0001_0000_0000_0000);
        assert_eq!(v.itt(), 0xdead_beef);
        assert_eq!(v.u32_at(46), 0, "out of range reads as zero, never panics");
        assert_eq!(v.isid(), [0, 1, 0, 0, 0, 0]);
        assert_eq!(v.cid(), 0);
    }

    #[test]
    fn set_lengths() {
        let mut b = [0u8; 48];
        let mut v = Bhs::new_checked(&mut b[..]).unwrap();
        v.set_total_ahs_words(3);
        v.set_data_segment_len(0x00ab_cdef).unwrap();
        assert!(v.set_data_segment_len(0x0100_0000).is_err());
        assert_eq!(v.data_segment_len(), 0xab_cdef);
        assert_eq!(v.total_ahs_len(), 12);
    }
}
