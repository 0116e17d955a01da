//! INQUIRY data: the standard page and the vital product data pages, and READ CAPACITY.
//! Pure builders into a caller's buffer (reused per command).

use super::Geometry;

/// Identity strings of an LU, padded as INQUIRY wants them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// NAA GUID.
    pub guid: [u8; 16],
    /// T10 vendor identification, space padded.
    pub vid: [u8; 8],
    /// Product identification, space padded.
    pub pid: [u8; 16],
    /// Product revision, space padded.
    pub rev: [u8; 4],
    /// Unit serial number (VPD 80h).
    pub serial: String,
    /// Management network address (VPD 85h).
    pub mgmt_url: String,
}

/// Pads `s` with spaces (or cuts it) to `N` bytes; non-printable bytes become spaces.
pub fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    for (d, &b) in out.iter_mut().zip(s.as_bytes()) {
        *d = if (0x20..0x7F).contains(&b) { b } else { b' ' };
    }
    out
}

/// VPD pages this LU reports, in order.
pub fn vpd_pages(id: &Identity, geo: &Geometry) -> impl Iterator<Item = u8> {
    let url = !id.mgmt_url.is_empty();
    let lbp = geo.lbpme;
    [0x00, 0x80, 0x83, 0x85, 0x86, 0xB0, 0xB1, 0xB2]
        .into_iter()
        .filter(move |&p| (p != 0x85 || url) && (p != 0xB2 || lbp))
}

/// Version descriptors: SAM-5, iSCSI (no version claimed), SPC-4, SBC-3.
const VERSION_DESCRIPTORS: [u16; 4] = [0x00A0, 0x0960, 0x0460, 0x04C0];

/// Standard INQUIRY data (SPC-4 §6.6.2).
pub fn standard(id: &Identity, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[
        0x00, // PQ 0, direct access block device
        0x00, // not removable
        0x06, // SPC-4
        0x12, // HISUP, response data format 2
        0,    // additional length, below
        0x18, // TPGS = 01b (implicit ALUA), 3PC (EXTENDED COPY)
        0x00, 0x02, // CMDQUE
    ]);
    out.extend_from_slice(&id.vid);
    out.extend_from_slice(&id.pid);
    out.extend_from_slice(&id.rev);
    out.resize(58, 0); // vendor specific, reserved
    for v in VERSION_DESCRIPTORS {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.resize(96, 0);
    out[4] = (out.len() - 5) as u8;
}

/// Target port group this LU reports (single group, active/optimized).
pub const TARGET_PORT_GROUP: u16 = 1;

/// A VPD page, or `None` if the page is not supported.
pub fn vpd(page: u8, id: &Identity, geo: &Geometry, out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    out.extend_from_slice(&[0x00, page, 0, 0]);
    match page {
        0x00 => out.extend(vpd_pages(id, geo)),
        0x80 => {
            let s = if id.serial.is_empty() {
                "    "
            } else {
                id.serial.as_str()
            };
            out.extend(
                s.bytes()
                    .take(252)
                    .map(|b| if (0x20..0x7F).contains(&b) { b } else { b' ' }),
            );
        }
        0x83 => {
            // NAA IEEE Registered Extended (binary, LU association).
            out.extend_from_slice(&[0x01, 0x03, 0x00, 16]);
            out.extend_from_slice(&id.guid);
            // T10 vendor ID based: vendor + GUID in hex (ASCII, LU association).
            out.extend_from_slice(&[0x02, 0x01, 0x00, 8 + 32]);
            out.extend_from_slice(&id.vid);
            for b in id.guid {
                out.extend_from_slice(&hex_byte(b));
            }
            // Target port group (association: target port).
            out.extend_from_slice(&[0x01, 0x15, 0x00, 4, 0, 0]);
            out.extend_from_slice(&TARGET_PORT_GROUP.to_be_bytes());
        }
        0x85 => {
            let url = id.mgmt_url.as_bytes();
            let n = (url.len() + 1).div_ceil(4) * 4;
            // Network service descriptor: LU association, storage configuration service.
            out.extend_from_slice(&[0x01, 0]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(url);
            out.resize(out.len() + n - url.len(), 0);
        }
        0x86 => {
            // Extended INQUIRY: SIMPSUP only (the core keeps no ordered queues); V_SUP.
            out.extend_from_slice(&[0, 0x01, 0x01]);
            out.resize(64, 0);
        }
        0xB0 => {
            let be32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX).to_be_bytes();
            out.push(0); // WSNZ = 0
            out.push(geo.max_caw_blocks);
            out.extend_from_slice(&(geo.opt_gran_blocks as u16).to_be_bytes());
            out.extend_from_slice(&be32(geo.max_xfer_blocks));
            out.extend_from_slice(&be32(geo.max_xfer_blocks));
            out.extend_from_slice(&be32(geo.max_xfer_blocks)); // max prefetch
            if geo.lbpme {
                out.extend_from_slice(&be32(geo.max_unmap_blocks));
                out.extend_from_slice(&be32(geo.max_unmap_descriptors));
                out.extend_from_slice(&be32(geo.unmap_gran_blocks));
                out.extend_from_slice(&(0x8000_0000u32).to_be_bytes()); // UGAVALID, alignment 0
            } else {
                out.extend_from_slice(&[0; 16]);
            }
            out.extend_from_slice(&geo.max_write_same_blocks.to_be_bytes());
            out.resize(64, 0);
        }
        0xB1 => {
            out.extend_from_slice(&geo.rotation_rate.to_be_bytes());
            out.push(0); // product type
            out.push(if geo.block_erase { 0x40 } else { 0 }); // WABEREQ
            out.resize(64, 0);
        }
        0xB2 if geo.lbpme => {
            out.push(0); // threshold exponent
                         // LBPU, LBPWS, LBPWS10, LBPRZ.
            out.push(0x80 | 0x40 | 0x20 | if geo.lbprz { 0x04 } else { 0 });
            out.push(0x02); // thin provisioned
            out.push(0);
        }
        _ => return None,
    }
    let n = (out.len() - 4) as u16;
    out[2..4].copy_from_slice(&n.to_be_bytes());
    Some(())
}

fn hex_byte(b: u8) -> [u8; 2] {
    const H: &[u8; 16] = b"0123456789ABCDEF";
    [H[usize::from(b >> 4)], H[usize::from(b & 15)]]
}

/// READ CAPACITY (10) data.
pub fn read_capacity_10(geo: &Geometry, out: &mut Vec<u8>) {
    out.clear();
    let last = geo.blocks.saturating_sub(1);
    out.extend_from_slice(&u32::try_from(last).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&geo.block_size.to_be_bytes());
}

/// READ CAPACITY (16) data.
pub fn read_capacity_16(geo: &Geometry, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&geo.blocks.saturating_sub(1).to_be_bytes());
    out.extend_from_slice(&geo.block_size.to_be_bytes());
    out.push(0); // no protection
    out.push(geo.phys_exponent & 0x0F);
    out.push(if geo.lbpme { 0x80 } else { 0 } | if geo.lbpme && geo.lbprz { 0x40 } else { 0 });
    out.push(0);
    out.resize(32, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ident() -> Identity {
        Identity {
            guid: [
                0x60, 0x01, 0x44, 0xF0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            ],
            vid: padded("RSTMF"),
            pid: padded("SBD"),
            rev: padded("0001"),
            serial: "SER1".into(),
            mgmt_url: String::new(),
        }
    }

    #[test]
    fn standard_inquiry() {
        let mut b = Vec::new();
        standard(&ident(), &mut b);
        assert_eq!(b.len(), 96);
        assert_eq!(&b[..8], &[0, 0, 6, 0x12, 91, 0x18, 0, 2]);
        assert_eq!(&b[8..16], b"RSTMF   ");
        assert_eq!(&b[58..60], &[0x00, 0xA0]);
    }

    #[test]
    fn vpd_pages_exact() {
        let g = Geometry::test(512, 2048, true);
        let id = ident();
        let mut b = Vec::new();
        vpd(0x00, &id, &g, &mut b).expect("00");
        assert_eq!(b, [0, 0, 0, 7, 0x00, 0x80, 0x83, 0x86, 0xB0, 0xB1, 0xB2]);
        vpd(0x80, &id, &g, &mut b).expect("80");
        assert_eq!(b, [0, 0x80, 0, 4, b'S', b'E', b'R', b'1']);
        vpd(0x83, &id, &g, &mut b).expect("83");
        assert_eq!(&b[..8], &[0, 0x83, 0, 20 + 44 + 8, 0x01, 0x03, 0x00, 16]);
        assert_eq!(&b[8..24], &id.guid);
        vpd(0xB2, &id, &g, &mut b).expect("b2");
        assert_eq!(b, [0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0]);
        vpd(0xB0, &id, &g, &mut b).expect("b0");
        assert_eq!(b.len(), 64);
        assert_eq!(&b[2..4], &[0, 0x3C]);
        assert!(vpd(0x42, &id, &g, &mut b).is_none());
        let thick = Geometry::test(512, 2048, false);
        assert!(vpd(0xB2, &id, &thick, &mut b).is_none());
        vpd(0x00, &id, &thick, &mut b).expect("00");
        assert!(!b[4..].contains(&0xB2));
    }

    #[test]
    fn physical_block_and_unmap_limits() {
        // 512-byte blocks on a device with 4096-byte sectors: LBPPBE 3; without physical
        // blocks (files, RAM): 0, whatever the unmap granularity.
        let dev = Geometry::new(512, 1 << 21, true, true, 4096, 4096, 0);
        let file = Geometry::new(512, 1 << 21, true, true, 4096, 512, 0);
        let mut b = Vec::new();
        read_capacity_16(&dev, &mut b);
        assert_eq!(b[13], 3);
        read_capacity_16(&file, &mut b);
        assert_eq!(b[13], 0);
        vpd(0xB0, &ident(), &file, &mut b).expect("b0");
        assert_eq!(
            &b[20..24],
            &(1u32 << 20).to_be_bytes(),
            "max unmap LBA count"
        );
        assert_eq!(&b[28..32], &8u32.to_be_bytes(), "optimal unmap granularity");
        let big = Geometry::new(4096, 1 << 21, true, true, 4096, 4096, 0);
        vpd(0xB0, &ident(), &big, &mut b).expect("b0");
        assert_eq!(
            &b[20..24],
            &(1u32 << 19).to_be_bytes(),
            "2 GiB of 4 KiB blocks"
        );
    }

    #[test]
    fn capacity() {
        let g = Geometry::test(4096, 1 << 33, true);
        let mut b = Vec::new();
        read_capacity_10(&g, &mut b);
        assert_eq!(b, [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x10, 0]);
        read_capacity_16(&g, &mut b);
        assert_eq!(
            &b[..16],
            &[0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x10, 0, 0, 0, 0xC0, 0]
        );
    }
}
