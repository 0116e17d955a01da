//! Mode parameters (SPC-4 §7.5, SBC-3 §6.4): MODE SENSE data and MODE SELECT parsing.
//!
//! Pages: Read-Write Error Recovery (01h, nothing changeable), Caching (08h: WCE and RCD),
//! Control (0Ah: D_SENSE and SWP changeable, TST = 001b since task sets are per I_T nexus),
//! Informational Exceptions Control (1Ch: DEXCPT and MRIE).

use super::Geometry;
use plugins_sdk::scsi::{Asc, CdbError, ModeSense, PageControl, Sense};

/// The changeable mode parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeValues {
    /// Caching WCE: write-back cache enabled.
    pub wce: bool,
    /// Caching RCD: read cache disabled.
    pub rcd: bool,
    /// Control D_SENSE: descriptor-format sense.
    pub d_sense: bool,
    /// Control SWP: software write protect.
    pub swp: bool,
    /// Informational exceptions DEXCPT.
    pub dexcpt: bool,
    /// Informational exceptions MRIE.
    pub mrie: u8,
}

impl ModeValues {
    /// The defaults.
    pub const DEFAULT: ModeValues = ModeValues {
        wce: true,
        rcd: false,
        d_sense: false,
        swp: false,
        dexcpt: true,
        mrie: 0,
    };
    /// The changeable mask (every changeable field set).
    const MASK: ModeValues = ModeValues {
        wce: true,
        rcd: true,
        d_sense: true,
        swp: true,
        dexcpt: true,
        mrie: 0x0F,
    };
}

const PAGES: [u8; 4] = [0x01, 0x08, 0x0A, 0x1C];

fn page(code: u8, v: &ModeValues, out: &mut Vec<u8>) {
    match code {
        0x01 => out.extend_from_slice(&[0x01, 0x0A, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // AWRE
        0x08 => {
            let b2 = u8::from(v.wce) << 2 | u8::from(v.rcd);
            out.extend_from_slice(&[0x08, 0x12, b2, 0]);
            out.extend_from_slice(&[0; 16]);
        }
        0x0A => {
            // TST=001b, D_SENSE; QUEUE ALGORITHM MODIFIER 1 (unrestricted); SWP; TAS=1.
            let b2 = 0x20 | u8::from(v.d_sense) << 2;
            let b4 = u8::from(v.swp) << 3;
            out.extend_from_slice(&[0x0A, 0x0A, b2, 0x10, b4, 0x40, 0, 0, 0xFF, 0xFF, 0, 0]);
        }
        0x1C => {
            let b2 = u8::from(v.dexcpt) << 3;
            out.extend_from_slice(&[0x1C, 0x0A, b2, v.mrie & 0x0F, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        _ => {}
    }
}

/// Builds MODE SENSE (6)/(10) data. `current`/`saved` are the values for PC current/saved;
/// `wp` is the WP bit of the device-specific parameter.
pub fn sense(
    ms: &ModeSense,
    current: &ModeValues,
    saved: &ModeValues,
    geo: &Geometry,
    wp: bool,
    out: &mut Vec<u8>,
) -> Result<(), CdbError> {
    let vals = match ms.pc {
        PageControl::Current => *current,
        PageControl::Saved => *saved,
        PageControl::Default => ModeValues::DEFAULT,
        PageControl::Changeable => ModeValues::MASK,
    };
    let pages: &[u8] = match ms.page_code {
        0x3F => &PAGES,
        p => match PAGES.iter().position(|&x| x == p) {
            Some(i) => &PAGES[i..=i],
            None => {
                return Err(CdbError::InvalidField {
                    byte: 2,
                    bit: Some(5),
                })
            }
        },
    };
    // Subpages: 00h only (FFh with "all pages" means every subpage: ours are all 00h).
    if ms.subpage_code != 0 && !(ms.subpage_code == 0xFF && ms.page_code == 0x3F) {
        return Err(CdbError::InvalidField {
            byte: 3,
            bit: Some(7),
        });
    }
    out.clear();
    let long = ms.cdb_len == 10 && ms.llbaa;
    let hdr = if ms.cdb_len == 6 { 4 } else { 8 };
    out.resize(hdr, 0);
    // Device-specific parameter: WP, DPOFUA.
    let dsp = u8::from(wp) << 7 | 0x10;
    let bd_len: usize = if ms.dbd {
        0
    } else if long {
        16
    } else {
        8
    };
    if ms.cdb_len == 6 {
        out[2] = dsp;
        out[3] = bd_len as u8;
    } else {
        out[3] = dsp;
        out[4] = u8::from(long);
        out[6..8].copy_from_slice(&(bd_len as u16).to_be_bytes());
    }
    if bd_len == 8 {
        out.extend_from_slice(&u32::try_from(geo.blocks).unwrap_or(u32::MAX).to_be_bytes());
        out.push(0);
        out.extend_from_slice(&geo.block_size.to_be_bytes()[1..]);
    } else if bd_len == 16 {
        out.extend_from_slice(&geo.blocks.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&geo.block_size.to_be_bytes());
    }
    for &p in pages {
        page(p, &vals, out);
    }
    if ms.cdb_len == 6 {
        out[0] = (out.len() - 1).min(255) as u8;
    } else {
        let n = (out.len() - 2) as u16;
        out[0..2].copy_from_slice(&n.to_be_bytes());
    }
    Ok(())
}

fn bad_param(byte: usize, bit: Option<u8>) -> Sense {
    Sense::invalid_field_in_parameter_list(byte.min(u16::MAX as usize) as u16, bit)
}

/// Parses MODE SELECT parameter data against `current` and returns the new values.
/// Non-changeable fields must hold their current values.
pub fn select(
    data: &[u8],
    cdb_len: u8,
    current: &ModeValues,
    block_size: u32,
) -> Result<ModeValues, Sense> {
    let short = || Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR);
    let (hdr, bd_len, long) = if cdb_len == 6 {
        let h = data.get(..4).ok_or_else(short)?;
        (4usize, usize::from(h[3]), false)
    } else {
        let h = data.get(..8).ok_or_else(short)?;
        (
            8usize,
            usize::from(u16::from_be_bytes([h[6], h[7]])),
            h[4] & 1 != 0,
        )
    };
    // Block descriptors: the block length must be ours (or zero: unchanged).
    let bd = data.get(hdr..hdr + bd_len).ok_or_else(short)?;
    let step = if long { 16 } else { 8 };
    if bd_len % step != 0 {
        return Err(bad_param(if cdb_len == 6 { 3 } else { 6 }, None));
    }
    for (i, d) in bd.chunks(step).enumerate() {
        let len = if long {
            u32::from_be_bytes([d[12], d[13], d[14], d[15]])
        } else {
            u32::from_be_bytes([0, d[5], d[6], d[7]])
        };
        if len != 0 && len != block_size {
            return Err(bad_param(hdr + i * step + if long { 12 } else { 5 }, None));
        }
    }
    let mut v = *current;
    let mut at = hdr + bd_len;
    while at < data.len() {
        let b0 = data[at];
        if b0 & 0x40 != 0 {
            return Err(bad_param(at, Some(6))); // subpage format: none changeable here
        }
        let code = b0 & 0x3F;
        let len = usize::from(*data.get(at + 1).ok_or_else(short)?);
        let body = data.get(at..at + 2 + len).ok_or_else(short)?;
        let mut want = Vec::with_capacity(24);
        page(code, current, &mut want);
        if want.is_empty() {
            return Err(bad_param(at, Some(5)));
        }
        if want.len() != body.len() {
            return Err(bad_param(at + 1, None));
        }
        // Compare byte by byte outside the changeable bits.
        let mut mask = Vec::with_capacity(24);
        page(code, &ModeValues::MASK, &mut mask);
        let mut zero = Vec::with_capacity(24);
        page(
            code,
            &ModeValues {
                wce: false,
                rcd: false,
                d_sense: false,
                swp: false,
                dexcpt: false,
                mrie: 0,
            },
            &mut zero,
        );
        for i in 2..body.len() {
            let changeable = mask[i] ^ zero[i];
            if (body[i] ^ want[i]) & !changeable != 0 {
                let diff = (body[i] ^ want[i]) & !changeable;
                return Err(bad_param(at + i, Some(7 - diff.leading_zeros() as u8)));
            }
        }
        match code {
            0x08 => {
                v.wce = body[2] & 0x04 != 0;
                v.rcd = body[2] & 0x01 != 0;
            }
            0x0A => {
                v.d_sense = body[2] & 0x04 != 0;
                v.swp = body[4] & 0x08 != 0;
            }
            0x1C => {
                v.dexcpt = body[2] & 0x08 != 0;
                v.mrie = body[3] & 0x0F;
                if v.mrie > 6 {
                    return Err(bad_param(at + 3, Some(3)));
                }
            }
            _ => {}
        }
        at += body.len();
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugins_sdk::scsi::Cdb;

    fn ms(cdb: &[u8]) -> ModeSense {
        ModeSense::decode(&Cdb::parse(cdb).expect("cdb")).expect("mode sense")
    }

    #[test]
    fn caching_page_and_header() {
        let g = Geometry::test(512, 1000, true);
        let v = ModeValues::DEFAULT;
        let mut out = Vec::new();
        sense(
            &ms(&[0x1A, 0, 0x08, 0, 255, 0]),
            &v,
            &v,
            &g,
            false,
            &mut out,
        )
        .expect("ok");
        assert_eq!(&out[..4], &[4 + 8 + 20 - 1, 0, 0x10, 8]);
        assert_eq!(&out[4..12], &[0, 0, 0x03, 0xE8, 0, 0, 0x02, 0]);
        assert_eq!(&out[12..16], &[0x08, 0x12, 0x04, 0]);
        // Changeable values, no block descriptors, 10-byte header with WP.
        sense(
            &ms(&[0x5A, 0x08, 0x48, 0, 0, 0, 0, 1, 0, 0]),
            &v,
            &v,
            &g,
            true,
            &mut out,
        )
        .expect("ok");
        assert_eq!(&out[..8], &[0, 26, 0, 0x90, 0, 0, 0, 0]);
        assert_eq!(&out[8..12], &[0x08, 0x12, 0x05, 0]);
        // All pages; an unknown page is refused.
        sense(
            &ms(&[0x1A, 0x08, 0x3F, 0, 255, 0]),
            &v,
            &v,
            &g,
            false,
            &mut out,
        )
        .expect("ok");
        assert_eq!(out.len(), 4 + 12 + 20 + 12 + 12);
        assert_eq!(
            sense(
                &ms(&[0x1A, 0x08, 0x19, 0, 255, 0]),
                &v,
                &v,
                &g,
                false,
                &mut out
            ),
            Err(CdbError::InvalidField {
                byte: 2,
                bit: Some(5)
            })
        );
        assert_eq!(
            sense(
                &ms(&[0x1A, 0x08, 0x08, 1, 255, 0]),
                &v,
                &v,
                &g,
                false,
                &mut out
            ),
            Err(CdbError::InvalidField {
                byte: 3,
                bit: Some(7)
            })
        );
        // Long LBA descriptor.
        sense(
            &ms(&[0x5A, 0x10, 0x08, 0, 0, 0, 0, 1, 0, 0]),
            &v,
            &v,
            &g,
            false,
            &mut out,
        )
        .expect("ok");
        assert_eq!(&out[4..8], &[1, 0, 0, 16]);
    }

    #[test]
    fn select_changes_only_changeable_bits() {
        let cur = ModeValues::DEFAULT;
        let mut p = vec![0, 0, 0, 0];
        page(0x08, &ModeValues { wce: false, ..cur }, &mut p);
        assert!(!select(&p, 6, &cur, 512).expect("ok").wce);
        // D_SENSE through the control page, with a block descriptor of our block size.
        let mut p = vec![0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 2, 0];
        page(
            0x0A,
            &ModeValues {
                d_sense: true,
                ..cur
            },
            &mut p,
        );
        assert!(select(&p, 6, &cur, 512).expect("ok").d_sense);
        // Another block size is refused, pointing at the field.
        p[10] = 0x10;
        assert_eq!(
            select(&p, 6, &cur, 512),
            Err(Sense::invalid_field_in_parameter_list(9, None))
        );
        // Touching a non-changeable bit (TST) is refused.
        let mut p = vec![0, 0, 0, 0];
        page(0x0A, &cur, &mut p);
        p[6] |= 0x40;
        assert_eq!(
            select(&p, 6, &cur, 512),
            Err(Sense::invalid_field_in_parameter_list(6, Some(6)))
        );
        // Wrong page length, unknown page, truncated list.
        let mut p = vec![0, 0, 0, 0, 0x08, 0x10];
        p.resize(4 + 18, 0);
        assert!(select(&p, 6, &cur, 512).is_err());
        assert!(select(&[0, 0, 0, 0, 0x19, 2, 0, 0], 6, &cur, 512).is_err());
        assert_eq!(
            select(&[0, 0], 6, &cur, 512),
            Err(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR))
        );
        // MODE SELECT (10) header.
        let mut p = vec![0; 8];
        page(
            0x1C,
            &ModeValues {
                dexcpt: false,
                mrie: 4,
                ..cur
            },
            &mut p,
        );
        let v = select(&p, 10, &cur, 512).expect("ok");
        assert_eq!((v.dexcpt, v.mrie), (false, 4));
    }
}
