//! CRC32C header and data digests (RFC 7143 §13.1, Appendix of RFC 3720 B.4).
//!
//! The digest is the standard CRC32C (Castagnoli, reflected, initial value and final
//! XOR 0xffffffff) and goes on the wire **least significant byte first**: RFC 3720
//! B.4 lists 32 zero bytes as `aa 36 91 8a`, i.e. CRC 0x8a9136aa in little-endian
//! order. This is the opposite of every other multi-byte iSCSI field.

/// Length of a digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// CRC32C of `data` (hardware accelerated where the CPU has it).
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continues a CRC32C over more bytes.
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// The wire bytes of a digest value.
#[inline]
pub fn to_wire(crc: u32) -> [u8; DIGEST_LEN] {
    crc.to_le_bytes()
}

/// The digest value of wire bytes.
#[inline]
pub fn from_wire(b: [u8; DIGEST_LEN]) -> u32 {
    u32::from_le_bytes(b)
}

/// Which digests are in force on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    /// HeaderDigest=CRC32C.
    pub header: bool,
    /// DataDigest=CRC32C.
    pub data: bool,
}

impl Digests {
    /// No digests (login phase, or negotiated None).
    pub const NONE: Self = Self {
        header: false,
        data: false,
    };
    /// Both digests.
    pub const BOTH: Self = Self {
        header: true,
        data: true,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_append(crc32c(b"1234"), b"56789"), 0xE306_9283);
    }

    /// The CRC examples of RFC 3720 appendix B.4, as bytes on the wire.
    #[test]
    fn rfc3720_b4_vectors() {
        assert_eq!(to_wire(crc32c(&[0u8; 32])), [0xaa, 0x36, 0x91, 0x8a]);
        assert_eq!(to_wire(crc32c(&[0xffu8; 32])), [0x43, 0xab, 0xa8, 0x62]);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(to_wire(crc32c(&inc)), [0x4e, 0x79, 0xdd, 0x46]);
        let dec: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(to_wire(crc32c(&dec)), [0x5c, 0xdb, 0x3f, 0x11]);
        assert_eq!(from_wire([0xaa, 0x36, 0x91, 0x8a]), 0x8a91_36aa);
    }
}
