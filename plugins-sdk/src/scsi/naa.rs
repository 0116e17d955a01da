//! LU GUIDs: 16-byte NAA identifiers (the LU name in VPD page 0x83), written as 32 hex
//! digits. Shared by every LU provider so GUIDs look and parse the same everywhere.
//!
//! New GUIDs use NAA type 6 (IEEE Registered Extended) with the `600144F0` prefix COMSTAR
//! uses (NAA 6, IEEE OUI 00-14-4F), followed by 12 bytes that are unique on this host: a hash
//! of the time, the process id and a counter, keyed by std's per-process random hasher
//! keys. A real product would put its own IEEE OUI here.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A 16-byte NAA identifier.
pub type Guid = [u8; 16];

/// The first four bytes of every generated GUID.
const PREFIX: [u8; 4] = [0x60, 0x01, 0x44, 0xF0];

/// Generates a new NAA-6 GUID (`600144F0` + 24 hex digits).
pub fn generate() -> Guid {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let keys = RandomState::new();
    let hash = |salt: u64| {
        let mut h = keys.build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(count);
        h.write_u64(salt);
        h.finish()
    };
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&PREFIX);
    g[4..12].copy_from_slice(&hash(1).to_be_bytes());
    g[12..].copy_from_slice(&hash(2).to_be_bytes()[..4]);
    g
}

/// Parses 32 hex digits (either case). The first digit, the NAA field, must be 6: IEEE
/// Registered Extended is the NAA format that is 16 bytes long.
pub fn parse(s: &str) -> Result<Guid, String> {
    let s = s.trim();
    let bad = || format!("invalid GUID {s:?}: expected 32 hex digits starting with 6 (NAA 6)");
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut g = [0u8; 16];
    for (i, byte) in g.iter_mut().enumerate() {
        *byte = s
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(bad)?;
    }
    if g[0] >> 4 != 6 {
        return Err(bad());
    }
    Ok(g)
}

/// Formats a GUID as 32 upper-case hex digits (as `stmfadm list-lu` shows it).
pub fn to_hex(g: &Guid) -> String {
    g.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_guids_are_naa6_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(to_hex(&a).starts_with("600144F0"));
        assert_eq!(parse(&to_hex(&a)), Ok(a));
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert!(parse("600144f0000000000000000000000001").is_ok());
        assert!(parse("600144F00000000000000000000001").is_err()); // 30 digits
        assert!(parse("500144F0000000000000000000000001").is_err()); // NAA 5
        assert!(parse("600144F000000000000000000000000G").is_err());
        assert!(parse("600144F0000000000000000000000éé").is_err());
    }
}
