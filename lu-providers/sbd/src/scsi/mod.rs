//! SCSI parameter data of sbd: pure encoders and decoders, unit-tested byte for byte. The
//! command flow that uses them is in `crate::lu`.

pub mod defect;
pub mod inquiry;
pub mod log;
pub mod mode;
pub mod opcodes;

/// Geometry and limits of an LU, as the pages report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Logical block size.
    pub block_size: u32,
    /// Number of logical blocks.
    pub blocks: u64,
    /// Logical block provisioning management enabled (thin, with UNMAP).
    pub lbpme: bool,
    /// Unmapped blocks read as zero.
    pub lbprz: bool,
    /// Logical blocks per physical block, as a power of two (READ CAPACITY (16) LBPPBE).
    pub phys_exponent: u8,
    /// Maximum transfer length in blocks.
    pub max_xfer_blocks: u64,
    /// Optimal transfer length granularity in blocks.
    pub opt_gran_blocks: u64,
    /// MAXIMUM COMPARE AND WRITE LENGTH.
    pub max_caw_blocks: u8,
    /// MAXIMUM UNMAP LBA COUNT.
    pub max_unmap_blocks: u64,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u64,
    /// OPTIMAL UNMAP GRANULARITY in blocks.
    pub unmap_gran_blocks: u64,
    /// MAXIMUM WRITE SAME LENGTH in blocks.
    pub max_write_same_blocks: u64,
    /// MEDIUM ROTATION RATE (1: non-rotating, 0: not reported).
    pub rotation_rate: u16,
    /// SANITIZE BLOCK ERASE is supported (VPD B1h WABEREQ = 01b: blocks read after an
    /// erase complete without error).
    pub block_erase: bool,
}

impl Geometry {
    /// A geometry with the crate's default limits. `granularity` (bytes) is the optimal
    /// transfer and unmap granularity; `physical_block` (bytes) the physical block the
    /// logical blocks are packed into, when the store has one (a block device's sector;
    /// files and RAM have none and pass the logical block size, as LIO's fileio does).
    pub fn new(
        block_size: u32,
        blocks: u64,
        lbpme: bool,
        lbprz: bool,
        granularity: u64,
        physical_block: u64,
        rotation_rate: u16,
    ) -> Geometry {
        let bs = u64::from(block_size.max(1));
        let gran = (granularity / bs).max(1);
        let per_physical = (physical_block / bs).clamp(1, 1 << 15);
        Geometry {
            block_size,
            blocks,
            lbpme,
            lbprz,
            phys_exponent: (63 - per_physical.leading_zeros()) as u8,
            max_xfer_blocks: crate::lu::MAX_XFER_BYTES / bs,
            opt_gran_blocks: gran,
            max_caw_blocks: crate::lu::MAX_CAW_BLOCKS,
            max_unmap_blocks: crate::lu::max_unmap_blocks(bs),
            max_unmap_descriptors: crate::lu::MAX_UNMAP_DESCRIPTORS as u64,
            unmap_gran_blocks: gran,
            max_write_same_blocks: crate::lu::MAX_WRITE_SAME_BYTES / bs,
            rotation_rate,
            block_erase: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn test(block_size: u32, blocks: u64, lbpme: bool) -> Geometry {
        Geometry::new(block_size, blocks, lbpme, true, 4096, 4096, 1)
    }
}
