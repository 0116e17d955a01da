//! Single-level LUN encoding (SAM-5 §4.7).
//!
//! An 8-byte LUN of the first level only, in peripheral device addressing (00b, LUNs
//! 0–255) or flat space addressing (01b, LUNs 0–16383). Like COMSTAR and Linux, LUNs up to
//! 255 are encoded with peripheral addressing and larger ones with flat addressing.

use core::fmt;

use super::sense::Sense;
use super::status::Asc;

/// A LUN number, 0–16383, as used in views and REPORT LUNS.
///
/// ```
/// use plugins_sdk::scsi::Lun;
///
/// let lun = Lun::new(300).unwrap();
/// assert_eq!(lun.to_bytes(), [0x41, 0x2C, 0, 0, 0, 0, 0, 0]);
/// assert_eq!(Lun::from_bytes([0x41, 0x2C, 0, 0, 0, 0, 0, 0]), Ok(lun));
/// assert_eq!(Lun::new(5).unwrap().to_bytes(), [0, 5, 0, 0, 0, 0, 0, 0]);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Lun(u16);

impl Lun {
    /// The largest LUN number (flat space addressing has 14 bits).
    pub const MAX: u16 = 0x3FFF;

    /// The REPORT LUNS well-known logical unit (C101h, extended addressing), which a
    /// target may accept in place of LUN 0 for REPORT LUNS; [`Lun::from_bytes`] rejects it.
    pub const REPORT_LUNS_WLUN: [u8; 8] = [0xC1, 0x01, 0, 0, 0, 0, 0, 0];

    /// The LUN `number`, or `None` above [`Lun::MAX`].
    pub const fn new(number: u16) -> Option<Self> {
        if number <= Self::MAX {
            Some(Self(number))
        } else {
            None
        }
    }

    /// The LUN number.
    pub const fn number(self) -> u16 {
        self.0
    }

    /// The 8-byte encoding: peripheral device addressing below 256, flat space
    /// addressing otherwise.
    pub const fn to_bytes(self) -> [u8; 8] {
        let [hi, lo] = self.0.to_be_bytes();
        let first = if self.0 < 256 { 0 } else { 0x40 | hi };
        [first, lo, 0, 0, 0, 0, 0, 0]
    }

    /// Decodes an 8-byte LUN: peripheral device addressing with bus identifier 0, or flat
    /// space addressing, with the second to fourth levels zero.
    pub const fn from_bytes(b: [u8; 8]) -> Result<Self, LunError> {
        let mut i = 2;
        while i < 8 {
            if b[i] != 0 {
                return Err(LunError::MultiLevel);
            }
            i += 1;
        }
        match b[0] >> 6 {
            0b00 if b[0] & 0x3F != 0 => Err(LunError::BusIdentifier(b[0] & 0x3F)),
            0b00 => Ok(Self(b[1] as u16)),
            0b01 => Ok(Self((((b[0] & 0x3F) as u16) << 8) | b[1] as u16)),
            method => Err(LunError::UnsupportedAddressing(method)),
        }
    }
}

impl TryFrom<u16> for Lun {
    type Error = LunError;

    fn try_from(number: u16) -> Result<Self, LunError> {
        Self::new(number).ok_or(LunError::OutOfRange(number))
    }
}

impl From<Lun> for u16 {
    fn from(lun: Lun) -> u16 {
        lun.0
    }
}

impl fmt::Display for Lun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why an 8-byte LUN (or a LUN number) is not one this framework addresses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LunError {
    /// Addressing method 10b (logical unit) or 11b (extended, incl. well-known LUs).
    #[error("unsupported LUN addressing method {0:02b}b")]
    UnsupportedAddressing(u8),
    /// Peripheral device addressing with a non-zero bus identifier (a device behind a
    /// bridge, not a LU of this target).
    #[error("peripheral device addressing with bus identifier {0}")]
    BusIdentifier(u8),
    /// A hierarchical LUN with a second, third or fourth level.
    #[error("multi-level LUN")]
    MultiLevel,
    /// A LUN number above 16383.
    #[error("LUN {0} out of range (0-16383)")]
    OutOfRange(u16),
}

impl LunError {
    /// The sense data for a command to such a LUN: ILLEGAL REQUEST, LOGICAL UNIT NOT
    /// SUPPORTED.
    pub const fn to_sense(self) -> Sense {
        Sense::illegal_request(Asc::LOGICAL_UNIT_NOT_SUPPORTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_peripheral_and_flat() {
        assert_eq!(Lun::new(0).map(Lun::to_bytes), Some([0; 8]));
        assert_eq!(
            Lun::new(5).map(Lun::to_bytes),
            Some([0, 5, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(
            Lun::new(255).map(Lun::to_bytes),
            Some([0, 0xFF, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(
            Lun::new(256).map(Lun::to_bytes),
            Some([0x41, 0x00, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(
            Lun::new(300).map(Lun::to_bytes),
            Some([0x41, 0x2C, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(
            Lun::new(16383).map(Lun::to_bytes),
            Some([0x7F, 0xFF, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(Lun::new(16384), None);
        assert_eq!(Lun::try_from(16384), Err(LunError::OutOfRange(16384)));
    }

    #[test]
    fn round_trip_every_lun() {
        for n in 0..=Lun::MAX {
            let lun = Lun::new(n).expect("in range");
            assert_eq!(Lun::from_bytes(lun.to_bytes()), Ok(lun));
            assert_eq!(u16::from(lun), n);
        }
    }

    #[test]
    fn decode_accepts_flat_below_256() {
        assert_eq!(
            Lun::from_bytes([0x40, 5, 0, 0, 0, 0, 0, 0]).map(Lun::number),
            Ok(5)
        );
    }

    #[test]
    fn decode_rejects_other_addressing() {
        assert_eq!(
            Lun::from_bytes(Lun::REPORT_LUNS_WLUN),
            Err(LunError::UnsupportedAddressing(3))
        );
        assert_eq!(
            Lun::from_bytes([0x80, 1, 0, 0, 0, 0, 0, 0]),
            Err(LunError::UnsupportedAddressing(2))
        );
        assert_eq!(
            Lun::from_bytes([0x01, 0x2C, 0, 0, 0, 0, 0, 0]),
            Err(LunError::BusIdentifier(1))
        );
        assert_eq!(
            Lun::from_bytes([0, 1, 0, 2, 0, 0, 0, 0]),
            Err(LunError::MultiLevel)
        );
        assert_eq!(
            Lun::from_bytes([0, 1, 0, 0, 0, 0, 0, 1]),
            Err(LunError::MultiLevel)
        );
        let s = LunError::MultiLevel.to_sense();
        assert_eq!((s.asc.asc, s.asc.ascq), (0x25, 0x00));
    }
}
