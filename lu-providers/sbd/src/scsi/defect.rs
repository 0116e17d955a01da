//! READ DEFECT DATA (10) and (12) (SBC-3 §5.11, §5.12): an LU backed by a file, a device
//! or memory has no medium defects the initiator can act on, so both lists are empty.

/// The defect list header for a request with `flags` = the CDB byte holding REQ_PLIST
/// (bit 4), REQ_GLIST (bit 3) and the DEFECT LIST FORMAT (bits 2-0). `None` for a
/// reserved format (001b, 010b, 111b): INVALID FIELD IN CDB.
pub fn header(twelve: bool, flags: u8, out: &mut Vec<u8>) -> Option<()> {
    let format = flags & 0x07;
    if matches!(format, 0b001 | 0b010 | 0b111) {
        return None;
    }
    out.clear();
    // PLISTV / GLISTV: the lists asked for are the (empty) lists returned, in the format
    // asked for.
    out.extend_from_slice(&[0, flags & 0x1F]);
    if twelve {
        // GENERATION CODE 0 (not supported), DEFECT LIST LENGTH 0.
        out.extend_from_slice(&[0; 6]);
    } else {
        out.extend_from_slice(&[0; 2]);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lists() {
        let mut b = Vec::new();
        header(false, 0x18 | 0b101, &mut b).expect("10");
        assert_eq!(b, [0, 0x1D, 0, 0]);
        header(true, 0b011, &mut b).expect("12");
        assert_eq!(b, [0, 0x03, 0, 0, 0, 0, 0, 0]);
        assert!(header(false, 0b001, &mut b).is_none());
        assert!(header(true, 0b111, &mut b).is_none());
    }
}
