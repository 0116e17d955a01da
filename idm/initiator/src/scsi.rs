//! The few SCSI pieces an initiator needs: CDB builders, status codes, sense parsing
//! and READ CAPACITY decoding. Parsers never panic on short or odd input.

/// SCSI status byte values (SAM-5 §5.3).
pub mod status {
    /// GOOD.
    pub const GOOD: u8 = 0x00;
    /// CHECK CONDITION (sense data follows).
    pub const CHECK_CONDITION: u8 = 0x02;
    /// CONDITION MET.
    pub const CONDITION_MET: u8 = 0x04;
    /// BUSY.
    pub const BUSY: u8 = 0x08;
    /// RESERVATION CONFLICT.
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    /// TASK SET FULL.
    pub const TASK_SET_FULL: u8 = 0x28;
    /// ACA ACTIVE.
    pub const ACA_ACTIVE: u8 = 0x30;
    /// TASK ABORTED.
    pub const TASK_ABORTED: u8 = 0x40;
}

/// Sense key values (SPC-5 §4.4.8) used by callers.
pub mod sense_key {
    /// NO SENSE.
    pub const NO_SENSE: u8 = 0x0;
    /// NOT READY.
    pub const NOT_READY: u8 = 0x2;
    /// MEDIUM ERROR.
    pub const MEDIUM_ERROR: u8 = 0x3;
    /// ILLEGAL REQUEST.
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    /// UNIT ATTENTION.
    pub const UNIT_ATTENTION: u8 = 0x6;
    /// ABORTED COMMAND.
    pub const ABORTED_COMMAND: u8 = 0xb;
    /// MISCOMPARE.
    pub const MISCOMPARE: u8 = 0xe;
}

/// Key fields of fixed (0x70/0x71) or descriptor (0x72/0x73) format sense data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    /// Sense key.
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
}

impl Sense {
    /// Decodes sense data; `None` if it is too short or of an unknown format.
    pub fn parse(sense: &[u8]) -> Option<Self> {
        let code = sense.first()? & 0x7f;
        match code {
            0x70 | 0x71 => Some(Self {
                key: sense.get(2)? & 0x0f,
                asc: *sense.get(12).unwrap_or(&0),
                ascq: *sense.get(13).unwrap_or(&0),
            }),
            0x72 | 0x73 => Some(Self {
                key: sense.get(1)? & 0x0f,
                asc: *sense.get(2).unwrap_or(&0),
                ascq: *sense.get(3).unwrap_or(&0),
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Sense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sense key {:#x} asc {:#04x} ascq {:#04x}",
            self.key, self.asc, self.ascq
        )
    }
}

/// What READ CAPACITY reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Number of logical blocks (last LBA + 1).
    pub blocks: u64,
    /// Logical block length in bytes.
    pub block_size: u32,
}

impl Capacity {
    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }

    /// Decodes READ CAPACITY (16) parameter data (at least 12 bytes).
    pub fn from_rc16(d: &[u8]) -> Option<Self> {
        let last = u64::from_be_bytes(d.get(0..8)?.try_into().ok()?);
        let bs = u32::from_be_bytes(d.get(8..12)?.try_into().ok()?);
        (bs != 0).then(|| Self {
            blocks: last.saturating_add(1),
            block_size: bs,
        })
    }

    /// Decodes READ CAPACITY (10) parameter data (8 bytes).
    pub fn from_rc10(d: &[u8]) -> Option<Self> {
        let last = u32::from_be_bytes(d.get(0..4)?.try_into().ok()?);
        let bs = u32::from_be_bytes(d.get(4..8)?.try_into().ok()?);
        (bs != 0).then(|| Self {
            blocks: u64::from(last) + 1,
            block_size: bs,
        })
    }
}

/// TEST UNIT READY.
pub fn test_unit_ready() -> [u8; 6] {
    [0; 6]
}

/// INQUIRY (standard data, or the VPD `page` when `Some`).
pub fn inquiry(page: Option<u8>, alloc: u16) -> [u8; 6] {
    let a = alloc.to_be_bytes();
    match page {
        Some(p) => [0x12, 1, p, a[0], a[1], 0],
        None => [0x12, 0, 0, a[0], a[1], 0],
    }
}

/// READ CAPACITY (10).
pub fn read_capacity10() -> [u8; 10] {
    [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// READ CAPACITY (16) (SERVICE ACTION IN 16, service action 0x10).
pub fn read_capacity16(alloc: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x10;
    c[10..14].copy_from_slice(&alloc.to_be_bytes());
    c
}

fn rw16(op: u8, lba: u64, blocks: u32, fua: bool) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[1] = if fua { 0x08 } else { 0 };
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// READ (16).
pub fn read16(lba: u64, blocks: u32) -> [u8; 16] {
    rw16(0x88, lba, blocks, false)
}

/// WRITE (16), with FUA when `fua`.
pub fn write16(lba: u64, blocks: u32, fua: bool) -> [u8; 16] {
    rw16(0x8a, lba, blocks, fua)
}

/// SYNCHRONIZE CACHE (10) of the whole medium.
pub fn synchronize_cache10() -> [u8; 10] {
    [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// REPORT LUNS.
pub fn report_luns(alloc: u32) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = 0xa0;
    c[6..10].copy_from_slice(&alloc.to_be_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sense_formats() {
        let mut fixed = [0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x06;
        fixed[12] = 0x29;
        assert_eq!(
            Sense::parse(&fixed),
            Some(Sense {
                key: 6,
                asc: 0x29,
                ascq: 0
            })
        );
        assert_eq!(
            Sense::parse(&[0x72, 0x05, 0x24, 0x00]),
            Some(Sense {
                key: 5,
                asc: 0x24,
                ascq: 0
            })
        );
        assert_eq!(Sense::parse(&[]), None);
        assert_eq!(Sense::parse(&[0x70, 0]), None);
        assert_eq!(Sense::parse(&[0x12, 0, 0]), None);
    }

    #[test]
    fn capacity() {
        let mut d = [0u8; 32];
        d[7] = 0xff;
        d[10] = 0x02;
        let c = Capacity::from_rc16(&d).unwrap();
        assert_eq!((c.blocks, c.block_size, c.bytes()), (256, 512, 131072));
        assert_eq!(Capacity::from_rc16(&d[..11]), None);
        assert_eq!(
            Capacity::from_rc10(&[0, 0, 0, 9, 0, 0, 0x10, 0]),
            Some(Capacity {
                blocks: 10,
                block_size: 4096
            })
        );
        assert_eq!(Capacity::from_rc10(&[0; 8]), None);
    }

    #[test]
    fn cdbs() {
        assert_eq!(
            read16(0x0102_0304_0506_0708, 8),
            [0x88, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 8, 0, 0]
        );
        assert_eq!(write16(1, 1, true)[..2], [0x8a, 0x08]);
        assert_eq!(read_capacity16(32)[..2], [0x9e, 0x10]);
        assert_eq!(read_capacity16(32)[13], 32);
        assert_eq!(inquiry(Some(0x80), 255), [0x12, 1, 0x80, 0, 255, 0]);
    }
}
