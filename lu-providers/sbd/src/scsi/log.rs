//! LOG SENSE pages (SPC-4 §7.3): supported pages and subpages, write/read/verify error
//! counters (always zero: errors are reported per command), logical block provisioning
//! (SBC-3 §6.3.4: resources used and available), temperature (not measured), and
//! informational exceptions (no exception).

use plugins_sdk::scsi::{CdbError, LogSense};

/// Counts for the logical block provisioning page, in blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Provisioning {
    /// Blocks still available.
    pub available: u64,
    /// Blocks in use.
    pub used: u64,
}

const PAGES: [u8; 7] = [0x00, 0x02, 0x03, 0x05, 0x0C, 0x0D, 0x2F];

fn param(out: &mut Vec<u8>, code: u16, control: u8, value: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.push(control);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// Builds LOG SENSE data.
pub fn sense(ls: &LogSense, thin: Option<Provisioning>, out: &mut Vec<u8>) -> Result<(), CdbError> {
    if ls.sp {
        return Err(CdbError::InvalidField {
            byte: 1,
            bit: Some(0),
        });
    }
    out.clear();
    let pages = PAGES
        .iter()
        .copied()
        .filter(|&p| p != 0x0C || thin.is_some());
    match (ls.page_code, ls.subpage_code) {
        (0x00, 0x00) => {
            out.extend_from_slice(&[0x00, 0x00, 0, 0]);
            out.extend(pages);
        }
        (0x00, 0xFF) => {
            out.extend_from_slice(&[0x40, 0xFF, 0, 0]);
            for p in pages {
                out.extend_from_slice(&[p, 0x00]);
            }
            out.extend_from_slice(&[0x00, 0xFF]);
        }
        (p @ (0x02 | 0x03 | 0x05), 0x00) => {
            out.extend_from_slice(&[p, 0, 0, 0]);
            // Errors corrected/uncorrected and bytes processed: all zero, 4-byte counters.
            for code in [0x0000u16, 0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x0006] {
                param(out, code, 0x02, &[0; 4]);
            }
        }
        (0x0C, 0x00) => {
            let t = thin.ok_or(CdbError::InvalidField {
                byte: 2,
                bit: Some(5),
            })?;
            out.extend_from_slice(&[0x0C, 0, 0, 0]);
            // Resource counts in units of 2^20 blocks... SBC-3 leaves the unit to VPD B2's
            // threshold exponent (0 here): counts are in blocks, clamped to 32 bits.
            let c = |v: u64| u32::try_from(v).unwrap_or(u32::MAX).to_be_bytes();
            param(out, 0x0001, 0x03, &c(t.available));
            param(out, 0x0102, 0x03, &c(t.used));
        }
        (0x0D, 0x00) => {
            out.extend_from_slice(&[0x0D, 0, 0, 0]);
            // Temperature unknown (FFh), reference temperature unknown.
            param(out, 0x0000, 0x03, &[0, 0xFF]);
            param(out, 0x0001, 0x03, &[0, 0xFF]);
        }
        (0x2F, 0x00) => {
            out.extend_from_slice(&[0x2F, 0, 0, 0]);
            // No informational exception: ASC 0, ASCQ 0, temperature unknown.
            param(out, 0x0000, 0x03, &[0, 0, 0xFF]);
        }
        (p, 0x00) if PAGES.contains(&p) => {
            return Err(CdbError::InvalidField {
                byte: 2,
                bit: Some(5),
            })
        }
        (p, _) if PAGES.contains(&p) => {
            return Err(CdbError::InvalidField {
                byte: 3,
                bit: Some(7),
            })
        }
        _ => {
            return Err(CdbError::InvalidField {
                byte: 2,
                bit: Some(5),
            })
        }
    }
    // PARAMETER POINTER: parameters with a code below it are left out (pages with codes).
    if ls.page_code != 0 && ls.param_pointer > 0 {
        let mut kept = 4;
        let mut at = 4;
        while at + 4 <= out.len() {
            let code = u16::from_be_bytes([out[at], out[at + 1]]);
            let len = 4 + usize::from(out[at + 3]);
            if code >= ls.param_pointer {
                out.copy_within(at..at + len, kept);
                kept += len;
            }
            at += len;
        }
        out.truncate(kept);
    }
    let n = (out.len() - 4) as u16;
    out[2..4].copy_from_slice(&n.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugins_sdk::scsi::Cdb;

    fn ls(page: u8, sub: u8, ptr: u16) -> LogSense {
        let p = ptr.to_be_bytes();
        LogSense::decode(
            &Cdb::parse(&[0x4D, 0, 0x40 | page, sub, 0, p[0], p[1], 0x10, 0, 0]).expect("cdb"),
        )
        .expect("ls")
    }

    #[test]
    fn pages() {
        let mut out = Vec::new();
        sense(&ls(0, 0, 0), None, &mut out).expect("supported");
        assert_eq!(out, [0, 0, 0, 6, 0x00, 0x02, 0x03, 0x05, 0x0D, 0x2F]);
        let t = Provisioning {
            available: 100,
            used: 28,
        };
        sense(&ls(0, 0, 0), Some(t), &mut out).expect("supported");
        assert!(out.contains(&0x0C));
        sense(&ls(0x0C, 0, 0), Some(t), &mut out).expect("lbp");
        assert_eq!(
            out,
            [0x0C, 0, 0, 16, 0, 1, 3, 4, 0, 0, 0, 100, 1, 2, 3, 4, 0, 0, 0, 28]
        );
        assert_eq!(
            sense(&ls(0x0C, 0, 0), None, &mut out),
            Err(CdbError::InvalidField {
                byte: 2,
                bit: Some(5)
            })
        );
        sense(&ls(0x2F, 0, 0), None, &mut out).expect("ie");
        assert_eq!(out, [0x2F, 0, 0, 7, 0, 0, 3, 3, 0, 0, 0xFF]);
        sense(&ls(0x03, 0, 4), None, &mut out).expect("pointer");
        assert_eq!(out[3], 3 * 8);
        assert!(sense(&ls(0x33, 0, 0), None, &mut out).is_err());
        assert!(sense(&ls(0x02, 5, 0), None, &mut out).is_err());
        sense(&ls(0x00, 0xFF, 0), None, &mut out).expect("subpages");
        assert_eq!(&out[..6], &[0x40, 0xFF, 0, 14, 0, 0]);
    }
}
