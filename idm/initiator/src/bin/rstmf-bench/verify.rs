//! Self-checking block contents for `--pattern verify`.
//!
//! Every logical block written carries
//!
//! ```text
//! 0..8    magic "RSTMFVF1"
//! 8..16   its LBA (little endian)
//! 16..24  the generation of the write (little endian)
//! 24..n-4 filler derived from LBA and generation
//! n-4..n  CRC32C of bytes 0..n-4 (little endian)
//! ```
//!
//! so a read proves the block is intact (CRC), in the right place (LBA) and current
//! (generation: a lost or misdirected write shows up as an old generation).

use std::fmt;

/// Magic at the start of every block.
pub const MAGIC: &[u8; 8] = b"RSTMFVF1";
/// Smallest block size the format fits in.
pub const MIN_BLOCK: usize = 32;

/// How a block failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// No magic: never written by us, or overwritten by something else.
    Magic,
    /// The CRC does not match the contents.
    Crc {
        /// CRC stored in the block.
        stored: u32,
        /// CRC of the contents.
        computed: u32,
    },
    /// The block carries another LBA (misdirected write or read).
    Lba(u64),
    /// The block carries another generation (lost or stale write).
    Generation {
        /// Expected generation.
        expected: u64,
        /// Generation found.
        found: u64,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Magic => {
                f.write_str("no verify magic (block not written by this run's format)")
            }
            Mismatch::Crc { stored, computed } => {
                write!(
                    f,
                    "CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            Mismatch::Lba(l) => write!(f, "block carries LBA {l}"),
            Mismatch::Generation { expected, found } => {
                write!(f, "generation {found}, expected {expected}")
            }
        }
    }
}

fn le64(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Fills one block for `lba` and `generation`.
pub fn fill_block(block: &mut [u8], lba: u64, generation: u64) {
    let n = block.len();
    if n < MIN_BLOCK {
        return;
    }
    block[0..8].copy_from_slice(MAGIC);
    block[8..16].copy_from_slice(&lba.to_le_bytes());
    block[16..24].copy_from_slice(&generation.to_le_bytes());
    let mut x = lba.rotate_left(17) ^ generation ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in block[24..n - 4].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    let crc = crc32c::crc32c(&block[..n - 4]);
    block[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// Checks one block.
pub fn check_block(block: &[u8], lba: u64, generation: u64) -> Result<(), Mismatch> {
    let n = block.len();
    if n < MIN_BLOCK || block.get(0..8) != Some(&MAGIC[..]) {
        return Err(Mismatch::Magic);
    }
    let (body, tail) = block.split_at(n - 4);
    let stored = u32::from_le_bytes(tail.try_into().unwrap_or([0; 4]));
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(Mismatch::Crc { stored, computed });
    }
    let found_lba = le64(block, 8);
    if found_lba != lba {
        return Err(Mismatch::Lba(found_lba));
    }
    let found = le64(block, 16);
    if found != generation {
        return Err(Mismatch::Generation {
            expected: generation,
            found,
        });
    }
    Ok(())
}

/// Fills `buf` (whole blocks of `bs` bytes) starting at `lba`.
pub fn fill(buf: &mut [u8], bs: usize, lba: u64, generation: u64) {
    for (i, b) in buf.chunks_mut(bs).enumerate() {
        fill_block(b, lba + i as u64, generation);
    }
}

/// Checks `buf` starting at `lba`; the first bad block's LBA and why.
pub fn check(buf: &[u8], bs: usize, lba: u64, generation: u64) -> Result<(), (u64, Mismatch)> {
    for (i, b) in buf.chunks(bs).enumerate() {
        let l = lba + i as u64;
        check_block(b, l, generation).map_err(|m| (l, m))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_each_failure() {
        let mut buf = vec![0u8; 4096];
        fill(&mut buf, 512, 100, 7);
        assert_eq!(check(&buf, 512, 100, 7), Ok(()));
        assert_eq!(check(&buf, 512, 100, 8).unwrap_err().0, 100);
        assert_eq!(
            check(&buf, 512, 101, 7).unwrap_err(),
            (101, Mismatch::Lba(100))
        );
        let mut bad = buf.clone();
        bad[512 * 3 + 100] ^= 1;
        assert!(matches!(
            check(&bad, 512, 100, 7),
            Err((103, Mismatch::Crc { .. }))
        ));
        let zero = vec![0u8; 512];
        assert_eq!(check(&zero, 512, 0, 1), Err((0, Mismatch::Magic)));
    }
}
