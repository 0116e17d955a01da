//! Additional Header Segments (RFC 7143 §11.2.2) and CDBs longer than 16 bytes.

use super::PduError;

/// Largest TotalAHSLength: 255 four-byte words.
pub const MAX_TOTAL_AHS_LEN: usize = 255 * 4;
/// Largest CDB accepted (SPC variable-length CDB limit).
pub const MAX_CDB_LEN: usize = 260;
/// AHS type code of the extended CDB AHS.
pub const AHS_EXTENDED_CDB: u8 = 1;
/// AHS type code of the expected bidirectional read data length AHS.
pub const AHS_BIDI_READ_LENGTH: u8 = 2;

/// One raw AHS: its type code and AHS-specific bytes (AHSLength of them, which
/// include the reserved byte that opens both defined types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ahs<'a> {
    /// AHSType code (low six bits of the type byte).
    pub ahs_type: u8,
    /// AHS-specific bytes, padding excluded.
    pub specific: &'a [u8],
}

/// Iterator over the AHSs of a TotalAHSLength region; yields an error once on garbage.
#[derive(Debug, Clone)]
pub struct AhsIter<'a> {
    rest: &'a [u8],
}

impl<'a> AhsIter<'a> {
    /// Iterates over `region` (exactly TotalAHSLength bytes).
    pub fn new(region: &'a [u8]) -> Self {
        Self { rest: region }
    }
}

impl<'a> Iterator for AhsIter<'a> {
    type Item = Result<Ahs<'a>, PduError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((&[l0, l1, ty], tail)) = self.rest.split_first_chunk::<3>() else {
            self.rest = &[];
            return Some(Err(PduError::InvalidField("AHS header truncated")));
        };
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let padded = (3 + len).div_ceil(4) * 4 - 3;
        let (Some(specific), Some(next)) = (tail.get(..len), tail.get(padded..)) else {
            self.rest = &[];
            return Some(Err(PduError::InvalidField(
                "AHSLength exceeds TotalAHSLength",
            )));
        };
        self.rest = next;
        Some(Ok(Ahs {
            ahs_type: ty & 0x3f,
            specific,
        }))
    }
}

/// The AHSs RFC 7143 defines, collected from one PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AhsSet<'a> {
    /// CDB bytes 16.. from the extended CDB AHS.
    pub extended_cdb: Option<&'a [u8]>,
    /// Expected Bidirectional Read Data Length.
    pub bidi_read_data_length: Option<u32>,
}

impl<'a> AhsSet<'a> {
    /// Parses a TotalAHSLength region. Unknown AHS types are skipped; duplicates,
    /// wrong lengths and oversize CDBs are `InvalidField` errors.
    pub fn parse(region: &'a [u8]) -> Result<Self, PduError> {
        if region.len() > MAX_TOTAL_AHS_LEN || region.len() % 4 != 0 {
            return Err(PduError::InvalidField("TotalAHSLength"));
        }
        let mut set = AhsSet::default();
        for ahs in AhsIter::new(region) {
            let ahs = ahs?;
            match ahs.ahs_type {
                AHS_EXTENDED_CDB => {
                    if set.extended_cdb.is_some() {
                        return Err(PduError::InvalidField("duplicate extended CDB AHS"));
                    }
                    let ext = match ahs.specific.split_first() {
                        Some((_, ext)) if !ext.is_empty() => ext,
                        _ => return Err(PduError::InvalidField("empty extended CDB AHS")),
                    };
                    if ext.len() + 16 > MAX_CDB_LEN {
                        return Err(PduError::InvalidField("CDB longer than 260 bytes"));
                    }
                    set.extended_cdb = Some(ext);
                }
                AHS_BIDI_READ_LENGTH => {
                    if set.bidi_read_data_length.is_some() {
                        return Err(PduError::InvalidField("duplicate bidirectional AHS"));
                    }
                    let &[_, a, b, c, d] = ahs.specific else {
                        return Err(PduError::InvalidField("bidirectional AHSLength must be 5"));
                    };
                    set.bidi_read_data_length = Some(u32::from_be_bytes([a, b, c, d]));
                }
                _ => {}
            }
        }
        Ok(set)
    }

    /// Encodes the AHSs into `out`, returning the TotalAHSLength in bytes.
    pub fn emit(&self, out: &mut [u8; MAX_TOTAL_AHS_LEN]) -> Result<usize, PduError> {
        let mut pos = 0usize;
        if let Some(ext) = self.extended_cdb {
            if ext.is_empty() || ext.len() + 16 > MAX_CDB_LEN {
                return Err(PduError::InvalidField("extended CDB length"));
            }
            pos = put_ahs(out, pos, AHS_EXTENDED_CDB, ext)?;
        }
        if let Some(len) = self.bidi_read_data_length {
            pos = put_ahs(out, pos, AHS_BIDI_READ_LENGTH, &len.to_be_bytes())?;
        }
        Ok(pos)
    }
}

/// Writes one AHS (header, reserved byte, `body`, padding) at `pos`.
fn put_ahs(out: &mut [u8], pos: usize, ty: u8, body: &[u8]) -> Result<usize, PduError> {
    let len = body.len() + 1; // the reserved byte counts in AHSLength
    let total = (3 + len).div_ceil(4) * 4;
    let len16 = u16::try_from(len).map_err(|_| PduError::InvalidField("AHSLength"))?;
    let dst = out
        .get_mut(pos..pos + total)
        .ok_or(PduError::InvalidField("TotalAHSLength"))?;
    dst.fill(0);
    let [l0, l1] = len16.to_be_bytes();
    if let Some((hdr, rest)) = dst.split_first_chunk_mut::<4>() {
        *hdr = [l0, l1, ty, 0];
        if let Some(b) = rest.get_mut(..body.len()) {
            b.copy_from_slice(body);
        }
    }
    Ok(pos + total)
}

/// A complete CDB of up to [`MAX_CDB_LEN`] bytes, assembled from the BHS and the
/// extended CDB AHS without heap allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cdb {
    len: u16,
    bytes: [u8; MAX_CDB_LEN],
}

impl Cdb {
    /// Joins the 16 BHS bytes and the optional extended part.
    pub fn from_parts(base: &[u8; 16], ext: Option<&[u8]>) -> Result<Self, PduError> {
        let ext = ext.unwrap_or(&[]);
        let mut bytes = [0u8; MAX_CDB_LEN];
        let total = 16 + ext.len();
        let dst = bytes
            .get_mut(..total)
            .ok_or(PduError::InvalidField("CDB longer than 260 bytes"))?;
        let (head, tail) = dst.split_at_mut(16);
        head.copy_from_slice(base);
        tail.copy_from_slice(ext);
        Ok(Self {
            len: total as u16,
            bytes,
        })
    }

    /// Builds from a whole CDB (shorter than 16 bytes is zero padded).
    pub fn from_slice(cdb: &[u8]) -> Result<Self, PduError> {
        let mut base = [0u8; 16];
        let split = cdb.len().min(16);
        let (head, ext) = cdb.split_at(split);
        if let Some(b) = base.get_mut(..split) {
            b.copy_from_slice(head);
        }
        Self::from_parts(&base, (!ext.is_empty()).then_some(ext))
    }

    /// The CDB bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The 16 bytes that go in the BHS.
    pub fn base(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        if let Some(src) = self.bytes.get(..16) {
            b.copy_from_slice(src);
        }
        b
    }

    /// The bytes that go in the extended CDB AHS (`None` for CDBs of 16 bytes or less).
    pub fn extension(&self) -> Option<&[u8]> {
        self.as_bytes().get(16..).filter(|e| !e.is_empty())
    }
}

impl core::fmt::Debug for Cdb {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Cdb").field(&self.as_bytes()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_cdb_round_trip() {
        let cdb: Vec<u8> = (0u8..32).collect();
        let c = Cdb::from_slice(&cdb).unwrap();
        assert_eq!(c.as_bytes(), &cdb[..]);
        let set = AhsSet {
            extended_cdb: c.extension(),
            bidi_read_data_length: Some(0x1234),
        };
        let mut out = [0u8; MAX_TOTAL_AHS_LEN];
        let n = set.emit(&mut out).unwrap();
        // ext CDB: 3 + 1 + 16 = 20 bytes; bidi: 3 + 5 = 8 bytes.
        assert_eq!(n, 28);
        assert_eq!(&out[..4], &[0x00, 0x11, 0x01, 0x00]);
        assert_eq!(&out[20..28], &[0x00, 0x05, 0x02, 0x00, 0, 0, 0x12, 0x34]);
        let back = AhsSet::parse(&out[..n]).unwrap();
        assert_eq!(back, set);
        let joined = Cdb::from_parts(&c.base(), back.extended_cdb).unwrap();
        assert_eq!(joined, c);
    }

    #[test]
    fn ahs_errors() {
        // AHSLength larger than the region.
        assert!(AhsSet::parse(&[0x00, 0x10, 0x01, 0x00]).is_err());
        // Bidi AHS with a wrong length.
        assert!(AhsSet::parse(&[0x00, 0x01, 0x02, 0x00]).is_err());
        // Not a multiple of four.
        assert!(AhsSet::parse(&[0x00, 0x01]).is_err());
        // Duplicate bidi.
        let d = [0, 5, 2, 0, 0, 0, 0, 1, 0, 5, 2, 0, 0, 0, 0, 1];
        assert!(AhsSet::parse(&d).is_err());
        // Unknown types are skipped.
        let u = [0, 1, 0x3c, 0];
        assert_eq!(AhsSet::parse(&u).unwrap(), AhsSet::default());
        // Oversize CDB: 16 + 248 > 260.
        let mut big = vec![0u8; 252];
        big[..4].copy_from_slice(&[0x00, 249, 0x01, 0x00]);
        assert!(AhsSet::parse(&big).is_err());
        assert!(Cdb::from_slice(&[0u8; 261]).is_err());
    }

    #[test]
    fn short_cdb_is_padded() {
        let c = Cdb::from_slice(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap();
        assert_eq!(c.as_bytes().len(), 16);
        assert_eq!(c.extension(), None);
    }
}
