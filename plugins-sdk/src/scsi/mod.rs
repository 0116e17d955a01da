//! SCSI helpers for LU and port providers.
//!
//! Everything here is plain, allocation-free and panic-free on any input, so it can sit on
//! the per-command path of a provider:
//!
//! - [`status`]: SCSI status codes ([`ScsiStatus`]), sense keys ([`SenseKey`]) and the named
//!   additional sense code pairs of SPC-4/SBC-3 ([`Asc`], [`ASC_TABLE`]).
//! - [`sense`]: the [`Sense`] value type and its fixed-format (70h/71h) and descriptor-format
//!   (72h/73h) encodings, written into a caller buffer, and a bounds-checked parser.
//! - [`cdb`]: operation codes ([`OpCode`], [`service_action`]), the validated [`Cdb`] view,
//!   typed decoders for the command families a block device needs ([`Rw`], [`Inquiry`],
//!   [`ModeSense`], ...) whose errors ([`CdbError`]) turn into the right sense data, and
//!   the CONTROL byte.
//! - [`lun`]: single-level 8-byte LUN encoding and decoding ([`Lun`]).
//!
//! A typical LU provider checks a command like this, and on error ends it with CHECK
//! CONDITION and the sense data the error converts to:
//!
//! ```
//! use core::ops::Range;
//! use plugins_sdk::scsi::{Cdb, CdbError, OpCode, Rw, SenseFormat};
//!
//! fn blocks_to_read(cdb_bytes: &[u8], capacity: u64) -> Result<Range<u64>, CdbError> {
//!     let cdb = Cdb::parse(cdb_bytes)?;
//!     cdb.check_control(false)?;
//!     match cdb.opcode() {
//!         OpCode::READ_10 | OpCode::READ_16 => Rw::decode(&cdb)?.lba_range(capacity),
//!         other => Err(CdbError::InvalidOpcode { opcode: other.0 }),
//!     }
//! }
//!
//! assert_eq!(blocks_to_read(&[0x28, 0, 0, 0, 0, 10, 0, 0, 4, 0], 100), Ok(10..14));
//!
//! // The NACA bit set in the CONTROL byte (byte 9, bit 2) of a READ (10):
//! let err = blocks_to_read(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0x04], 100).unwrap_err();
//! let mut sense = [0u8; 18];
//! let len = err.to_sense().write(SenseFormat::Fixed, &mut sense);
//! assert_eq!(len, 18);
//! // INVALID FIELD IN CDB, field pointer: SKSV | C/D | BPV | bit 2, byte 9.
//! assert_eq!(&sense[12..], &[0x24, 0x00, 0x00, 0xCA, 0x00, 0x09]);
//! ```

/// Defines associated constants on a `u8` newtype together with a `name()` lookup.
macro_rules! named_u8 {
    ($ty:ident { $( $name:ident = $val:literal, $text:literal; )* }) => {
        impl $ty {
            $(
                #[doc = concat!($text, " (`", stringify!($val), "`).")]
                pub const $name: $ty = $ty($val);
            )*

            /// The standard name of this value, or `None` if it is not one this module knows.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some($text), )*
                    _ => None,
                }
            }
        }
    };
}

pub mod cdb;
pub mod lun;
pub mod naa;
pub mod sense;
pub mod status;

pub use cdb::{
    service_action, Cdb, CdbError, Control, GetLbaStatus, Inquiry, LogSense, ModeSelect, ModeSense,
    OpCode, PageControl, PrIn, PrOut, ReadCapacity, ReceiveCopyResults, ReportLuns,
    ReportSupportedOpcodes, RequestSense, Rw, RwKind, StartStopUnit, Unmap,
};
pub use lun::{Lun, LunError};
pub use sense::{FieldPointer, Sense, SenseBytes, SenseError, SenseFormat, SenseKeySpecific};
pub use status::{Asc, ScsiStatus, SenseKey, ASC_TABLE};

#[cfg(test)]
mod robustness_tests {
    //! Every parser and decoder against arbitrary bytes: no panic, and encoders never
    //! write past the caller's buffer.

    use super::*;

    /// How many inputs the random tests try: a sample under Miri, where one CDB through
    /// every decoder takes tens of milliseconds (this code has no `unsafe`; the full sweep
    /// runs natively and Miri's sample keeps the whole run within scripts/miri.sh's budget).
    const fn rounds(native: usize) -> usize {
        if cfg!(miri) {
            native / 4000
        } else {
            native
        }
    }

    /// Fill bytes, opcode step and CDB lengths of the exhaustive CDB test: every opcode at
    /// every length natively; under Miri (for the same reason) every seventh opcode at the
    /// lengths around each CDB group size.
    const FILLS: &[u8] = if cfg!(miri) {
        &[0x5A]
    } else {
        &[0x00, 0xFF, 0x5A]
    };
    const OPCODE_STEP: usize = if cfg!(miri) { 7 } else { 1 };
    const MIRI_LENGTHS: &[usize] = &[0, 5, 6, 9, 10, 11, 12, 15, 16, 40];

    /// xorshift64: a deterministic source of test bytes, no extra crates.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn byte(&mut self) -> u8 {
            self.next() as u8
        }

        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.byte();
            }
        }
    }

    /// Runs every CDB entry point on `buf`.
    fn exercise_cdb(buf: &[u8]) {
        let Ok(cdb) = Cdb::parse(buf) else {
            return;
        };
        assert!(cdb.as_bytes().len() <= buf.len());
        let _ = (
            cdb.name(),
            cdb.service_action(),
            cdb.control(),
            cdb.check_control(false),
        );
        let _ = (cdb.allocation_length(), cdb.parameter_list_length());
        let _ = cdb.invalid_service_action().to_sense();
        if let Ok(rw) = Rw::decode(&cdb) {
            let _ = (
                rw.lba_range(u64::MAX),
                rw.lba_range(0),
                rw.lba_range(1 << 20),
            );
            let _ = (rw.data_blocks(), rw.check_no_protection());
        }
        let results = [
            Inquiry::decode(&cdb).err(),
            ModeSense::decode(&cdb).err(),
            ModeSelect::decode(&cdb).err(),
            LogSense::decode(&cdb).err(),
            PrIn::decode(&cdb).err(),
            PrOut::decode(&cdb).err(),
            ReportLuns::decode(&cdb).err(),
            ReportSupportedOpcodes::decode(&cdb).err(),
            RequestSense::decode(&cdb).err(),
            Unmap::decode(&cdb).err(),
            ReadCapacity::decode(&cdb).err(),
            GetLbaStatus::decode(&cdb).err(),
            ReceiveCopyResults::decode(&cdb).err(),
            StartStopUnit::decode(&cdb).err(),
        ];
        for e in results.into_iter().flatten() {
            let _ = e.to_string();
            let s = e.to_sense();
            if let CdbError::InvalidField { byte, .. } = e {
                assert!(usize::from(byte) < cdb.as_bytes().len(), "{e} in {cdb:?}");
            }
            assert_eq!(Sense::parse(&s.encode(SenseFormat::Descriptor)), Ok(s));
        }
    }

    #[test]
    fn every_opcode_every_short_length() {
        for op in (0..=255u8).step_by(OPCODE_STEP) {
            for &fill in FILLS {
                let mut buf = [fill; 40];
                buf[0] = op;
                for len in 0..=buf.len() {
                    if !cfg!(miri) || MIRI_LENGTHS.contains(&len) {
                        exercise_cdb(&buf[..len]);
                    }
                }
            }
        }
    }

    #[test]
    fn random_cdbs() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut buf = [0u8; 40];
        for _ in 0..rounds(200_000) {
            let len = (rng.next() % 41) as usize;
            rng.fill(&mut buf[..len]);
            exercise_cdb(&buf[..len]);
        }
    }

    #[test]
    fn random_sense_parse() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let mut buf = [0u8; 64];
        for _ in 0..rounds(200_000) {
            let len = (rng.next() % 65) as usize;
            rng.fill(&mut buf[..len]);
            if len > 0 && rng.byte() & 1 == 0 {
                buf[0] = 0x70 | (rng.byte() & 0x83); // a valid response code, maybe VALID
            }
            if let Ok(s) = Sense::parse(&buf[..len]) {
                // Whatever parsed re-encodes and parses back the same in descriptor format
                // (which carries every field at full width).
                let again = s.encode(SenseFormat::Descriptor);
                assert_eq!(Sense::parse(&again), Ok(s), "{:02X?}", &buf[..len]);
                let _ = s.to_string();
            }
        }
    }

    #[test]
    fn random_sense_round_trip_and_truncation() {
        let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
        let mut out = [0u8; Sense::MAX_LEN + 8];
        for _ in 0..rounds(100_000) {
            let key = SenseKey(rng.byte() & 0x0F);
            let mut s = Sense::new(key, Asc::new(rng.byte(), rng.byte()))
                .with_deferred(rng.byte() & 1 == 1);
            let wide = rng.byte() & 1 == 1;
            let value = |r: &mut XorShift| {
                if wide {
                    r.next()
                } else {
                    r.next() & 0xFFFF_FFFF
                }
            };
            if rng.byte() & 1 == 1 {
                s = s.with_info(value(&mut rng));
            }
            if rng.byte() & 1 == 1 {
                s = s.with_command_specific(value(&mut rng));
            }
            if rng.byte() & 1 == 1 {
                // Canonical for the key, as a parser would see it.
                let raw = [rng.byte() | 0x80, rng.byte(), rng.byte()];
                if let Some(sks) = SenseKeySpecific::from_bytes(key, raw) {
                    s = s.with_sks(sks);
                }
            }
            let d = s.encode(SenseFormat::Descriptor);
            assert_eq!(d.len(), s.encoded_len(SenseFormat::Descriptor));
            assert_eq!(Sense::parse(&d), Ok(s));

            let f = s.encode(SenseFormat::Fixed);
            assert_eq!(f.len(), Sense::FIXED_LEN);
            let p = Sense::parse(&f).expect("fixed parses");
            assert_eq!(
                (p.key, p.asc, p.sks, p.deferred),
                (s.key, s.asc, s.sks, s.deferred)
            );
            assert_eq!(p.info, s.info.filter(|&i| i <= u64::from(u32::MAX)));

            let format = if rng.byte() & 1 == 1 {
                SenseFormat::Fixed
            } else {
                SenseFormat::Descriptor
            };
            let cap = (rng.next() % out.len() as u64) as usize;
            out.fill(0xAA);
            let n = s.write(format, &mut out[..cap]);
            assert_eq!(n, cap.min(s.encoded_len(format)));
            assert!(out[n..].iter().all(|&b| b == 0xAA), "wrote past {n}");
        }
    }

    #[test]
    fn random_luns() {
        let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
        for _ in 0..rounds(100_000) {
            let mut b = [0u8; 8];
            let len = (rng.next() % 9) as usize;
            rng.fill(&mut b[..len]);
            if let Ok(lun) = Lun::from_bytes(b) {
                assert!(lun.number() <= Lun::MAX);
                assert_eq!(Lun::from_bytes(lun.to_bytes()), Ok(lun));
            }
        }
    }
}
