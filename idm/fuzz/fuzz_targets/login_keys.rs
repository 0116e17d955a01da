//! Arbitrary bytes as a Login/Text data segment: key=value parsing and the target's answer to
//! every offer in both login stages. Must never panic.
#![no_main]

use idm::keys::{negotiate_all, LocalConfig, NegotiatedParams};
use idm::pdu::Stage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(pairs) = idm::text::parse(data) else { return };
    let local = LocalConfig::default();
    for stage in [Stage::SecurityNegotiation, Stage::OperationalNegotiation] {
        for leading in [true, false] {
            let mut params = NegotiatedParams::default();
            if negotiate_all(&local, stage, leading, &mut params, &pairs).is_ok() {
                params.finalize();
                let _ = params.digests();
            }
        }
    }
});
