//! Arbitrary bytes as an iSCSI byte stream: framing, digests, BHS/AHS parsing and every PDU
//! repr. The reader must never panic, and must stop cleanly on a fatal error.
#![no_main]

use idm::pdu::{Digests, FrameLimits, PduReader, Role};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let limits = FrameLimits {
        digests: Digests { header: mode & 1 != 0, data: mode & 2 != 0 },
        max_data_segment_len: if mode & 4 != 0 { 8192 } else { 262_144 },
    };
    let role = if mode & 8 != 0 { Role::Initiator } else { Role::Target };
    let mut reader = PduReader::new(role, limits);
    // Feed in chunks whose sizes come from the input, to exercise partial reads.
    let chunk = 1 + (mode as usize >> 4) * 7;
    for piece in rest.chunks(chunk) {
        let mut off = 0;
        while off < piece.len() {
            off += reader.feed(&piece[off..]);
            loop {
                match reader.next_pdu() {
                    Ok(Some(rx)) => {
                        let _ = rx.pdu.opcode();
                        let _ = rx.cdb();
                    }
                    Ok(None) => break,
                    Err(e) if e.is_fatal() => return,
                    Err(_) => {}
                }
            }
            if off == 0 {
                break;
            }
        }
    }
    let _ = reader.finish();
});
