//! Command descriptor blocks: operation codes, the validated [`Cdb`] view, and typed
//! decoders for the commands a SPC-4/SBC-3 block device implements.
//!
//! Decoding never panics and never reads past the CDB. Errors are [`CdbError`]s that know
//! the byte and bit of the offending field, so [`CdbError::to_sense`] yields ILLEGAL REQUEST
//! sense data with the right field pointer.
//!
//! ```
//! use plugins_sdk::scsi::{Cdb, Rw, RwKind};
//!
//! // READ(16), DPO|FUA, LBA 0x1_0000_0000, 8 blocks, group 3; padded to 16 bytes as
//! // iSCSI delivers it.
//! let bytes = [0x88, 0x18, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 8, 3, 0];
//! let cdb = Cdb::parse(&bytes)?;
//! let rw = Rw::decode(&cdb)?;
//! assert_eq!((rw.kind, rw.lba, rw.blocks), (RwKind::Read, 1 << 32, 8));
//! assert!(rw.dpo && rw.fua);
//! assert_eq!(rw.group, 3);
//! # Ok::<(), plugins_sdk::scsi::CdbError>(())
//! ```

use core::fmt;
use core::ops::Range;

use super::sense::Sense;
use super::status::Asc;

/// A SCSI operation code: the first byte of a CDB (SPC-4 §4.2.5.1, annex E).
///
/// Bits 7–5 are the group code, which fixes the CDB length ([`OpCode::cdb_len`]). The
/// constants are named after SPC-4 and SBC-3; the `name()` is the standard's text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct OpCode(pub u8);

named_u8!(OpCode {
    TEST_UNIT_READY = 0x00, "TEST UNIT READY";
    REQUEST_SENSE = 0x03, "REQUEST SENSE";
    FORMAT_UNIT = 0x04, "FORMAT UNIT";
    REASSIGN_BLOCKS = 0x07, "REASSIGN BLOCKS";
    READ_6 = 0x08, "READ (6)";
    WRITE_6 = 0x0A, "WRITE (6)";
    INQUIRY = 0x12, "INQUIRY";
    MODE_SELECT_6 = 0x15, "MODE SELECT (6)";
    RESERVE_6 = 0x16, "RESERVE (6)";
    RELEASE_6 = 0x17, "RELEASE (6)";
    MODE_SENSE_6 = 0x1A, "MODE SENSE (6)";
    START_STOP_UNIT = 0x1B, "START STOP UNIT";
    RECEIVE_DIAGNOSTIC_RESULTS = 0x1C, "RECEIVE DIAGNOSTIC RESULTS";
    SEND_DIAGNOSTIC = 0x1D, "SEND DIAGNOSTIC";
    PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E, "PREVENT ALLOW MEDIUM REMOVAL";
    READ_CAPACITY_10 = 0x25, "READ CAPACITY (10)";
    READ_10 = 0x28, "READ (10)";
    WRITE_10 = 0x2A, "WRITE (10)";
    WRITE_AND_VERIFY_10 = 0x2E, "WRITE AND VERIFY (10)";
    VERIFY_10 = 0x2F, "VERIFY (10)";
    PRE_FETCH_10 = 0x34, "PRE-FETCH (10)";
    SYNCHRONIZE_CACHE_10 = 0x35, "SYNCHRONIZE CACHE (10)";
    READ_DEFECT_DATA_10 = 0x37, "READ DEFECT DATA (10)";
    WRITE_BUFFER = 0x3B, "WRITE BUFFER";
    READ_BUFFER = 0x3C, "READ BUFFER";
    READ_LONG_10 = 0x3E, "READ LONG (10)";
    WRITE_LONG_10 = 0x3F, "WRITE LONG (10)";
    WRITE_SAME_10 = 0x41, "WRITE SAME (10)";
    UNMAP = 0x42, "UNMAP";
    SANITIZE = 0x48, "SANITIZE";
    LOG_SELECT = 0x4C, "LOG SELECT";
    LOG_SENSE = 0x4D, "LOG SENSE";
    MODE_SELECT_10 = 0x55, "MODE SELECT (10)";
    RESERVE_10 = 0x56, "RESERVE (10)";
    RELEASE_10 = 0x57, "RELEASE (10)";
    MODE_SENSE_10 = 0x5A, "MODE SENSE (10)";
    PERSISTENT_RESERVE_IN = 0x5E, "PERSISTENT RESERVE IN";
    PERSISTENT_RESERVE_OUT = 0x5F, "PERSISTENT RESERVE OUT";
    VARIABLE_LENGTH = 0x7F, "VARIABLE LENGTH";
    EXTENDED_COPY = 0x83, "EXTENDED COPY (THIRD-PARTY COPY OUT)";
    RECEIVE_COPY_RESULTS = 0x84, "RECEIVE COPY RESULTS (THIRD-PARTY COPY IN)";
    ACCESS_CONTROL_IN = 0x86, "ACCESS CONTROL IN";
    ACCESS_CONTROL_OUT = 0x87, "ACCESS CONTROL OUT";
    READ_16 = 0x88, "READ (16)";
    COMPARE_AND_WRITE = 0x89, "COMPARE AND WRITE";
    WRITE_16 = 0x8A, "WRITE (16)";
    ORWRITE_16 = 0x8B, "ORWRITE (16)";
    READ_ATTRIBUTE = 0x8C, "READ ATTRIBUTE";
    WRITE_ATTRIBUTE = 0x8D, "WRITE ATTRIBUTE";
    WRITE_AND_VERIFY_16 = 0x8E, "WRITE AND VERIFY (16)";
    VERIFY_16 = 0x8F, "VERIFY (16)";
    PRE_FETCH_16 = 0x90, "PRE-FETCH (16)";
    SYNCHRONIZE_CACHE_16 = 0x91, "SYNCHRONIZE CACHE (16)";
    WRITE_SAME_16 = 0x93, "WRITE SAME (16)";
    WRITE_ATOMIC_16 = 0x9C, "WRITE ATOMIC (16)";
    SERVICE_ACTION_IN_16 = 0x9E, "SERVICE ACTION IN (16)";
    SERVICE_ACTION_OUT_16 = 0x9F, "SERVICE ACTION OUT (16)";
    REPORT_LUNS = 0xA0, "REPORT LUNS";
    SECURITY_PROTOCOL_IN = 0xA2, "SECURITY PROTOCOL IN";
    MAINTENANCE_IN = 0xA3, "MAINTENANCE IN";
    MAINTENANCE_OUT = 0xA4, "MAINTENANCE OUT";
    READ_12 = 0xA8, "READ (12)";
    SERVICE_ACTION_OUT_12 = 0xA9, "SERVICE ACTION OUT (12)";
    WRITE_12 = 0xAA, "WRITE (12)";
    SERVICE_ACTION_IN_12 = 0xAB, "SERVICE ACTION IN (12)";
    WRITE_AND_VERIFY_12 = 0xAE, "WRITE AND VERIFY (12)";
    VERIFY_12 = 0xAF, "VERIFY (12)";
    SECURITY_PROTOCOL_OUT = 0xB5, "SECURITY PROTOCOL OUT";
    READ_DEFECT_DATA_12 = 0xB7, "READ DEFECT DATA (12)";
});

impl OpCode {
    /// The group code (bits 7–5).
    pub const fn group(self) -> u8 {
        self.0 >> 5
    }

    /// The CDB length fixed by the group code: 6, 10, 10, –, 16, 12 for groups 0–5.
    ///
    /// `None` for group 3 (reserved, and the variable-length 7Fh whose length is in the
    /// CDB) and groups 6–7 (vendor specific).
    pub const fn cdb_len(self) -> Option<usize> {
        match self.group() {
            0 => Some(6),
            1 | 2 => Some(10),
            4 => Some(16),
            5 => Some(12),
            _ => None,
        }
    }

    /// Whether the command has a SERVICE ACTION field.
    pub const fn has_service_action(self) -> bool {
        matches!(
            self.0,
            0x48 | 0x5E | 0x5F | 0x7F | 0x83 | 0x84 | 0x86 | 0x87
        ) || matches!(self.0, 0x9E | 0x9F | 0xA3 | 0xA4 | 0xA9 | 0xAB)
    }
}

impl fmt::Display for OpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "OPERATION CODE {:02X}h", self.0),
        }
    }
}

impl fmt::Debug for OpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpCode({:#04x} {self})", self.0)
    }
}

/// SERVICE ACTION values, per operation code (SPC-4, SBC-3).
///
/// Compare them with [`Cdb::service_action`].
pub mod service_action {
    use super::OpCode;

    /// READ CAPACITY (16), under SERVICE ACTION IN (16).
    pub const READ_CAPACITY_16: u16 = 0x10;
    /// READ LONG (16), under SERVICE ACTION IN (16).
    pub const READ_LONG_16: u16 = 0x11;
    /// GET LBA STATUS, under SERVICE ACTION IN (16).
    pub const GET_LBA_STATUS: u16 = 0x12;
    /// REPORT REFERRALS, under SERVICE ACTION IN (16).
    pub const REPORT_REFERRALS: u16 = 0x13;
    /// WRITE LONG (16), under SERVICE ACTION OUT (16).
    pub const WRITE_LONG_16: u16 = 0x11;

    /// REPORT IDENTIFYING INFORMATION, under MAINTENANCE IN.
    pub const REPORT_IDENTIFYING_INFORMATION: u16 = 0x05;
    /// REPORT TARGET PORT GROUPS, under MAINTENANCE IN.
    pub const REPORT_TARGET_PORT_GROUPS: u16 = 0x0A;
    /// REPORT ALIASES, under MAINTENANCE IN.
    pub const REPORT_ALIASES: u16 = 0x0B;
    /// REPORT SUPPORTED OPERATION CODES, under MAINTENANCE IN.
    pub const REPORT_SUPPORTED_OPERATION_CODES: u16 = 0x0C;
    /// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS, under MAINTENANCE IN.
    pub const REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS: u16 = 0x0D;
    /// REPORT PRIORITY, under MAINTENANCE IN.
    pub const REPORT_PRIORITY: u16 = 0x0E;
    /// REPORT TIMESTAMP, under MAINTENANCE IN.
    pub const REPORT_TIMESTAMP: u16 = 0x0F;
    /// SET IDENTIFYING INFORMATION, under MAINTENANCE OUT.
    pub const SET_IDENTIFYING_INFORMATION: u16 = 0x06;
    /// SET TARGET PORT GROUPS, under MAINTENANCE OUT.
    pub const SET_TARGET_PORT_GROUPS: u16 = 0x0A;
    /// CHANGE ALIASES, under MAINTENANCE OUT.
    pub const CHANGE_ALIASES: u16 = 0x0B;
    /// SET PRIORITY, under MAINTENANCE OUT.
    pub const SET_PRIORITY: u16 = 0x0E;
    /// SET TIMESTAMP, under MAINTENANCE OUT.
    pub const SET_TIMESTAMP: u16 = 0x0F;

    /// READ KEYS, under PERSISTENT RESERVE IN.
    pub const PR_IN_READ_KEYS: u16 = 0x00;
    /// READ RESERVATION, under PERSISTENT RESERVE IN.
    pub const PR_IN_READ_RESERVATION: u16 = 0x01;
    /// REPORT CAPABILITIES, under PERSISTENT RESERVE IN.
    pub const PR_IN_REPORT_CAPABILITIES: u16 = 0x02;
    /// READ FULL STATUS, under PERSISTENT RESERVE IN.
    pub const PR_IN_READ_FULL_STATUS: u16 = 0x03;
    /// REGISTER, under PERSISTENT RESERVE OUT.
    pub const PR_OUT_REGISTER: u16 = 0x00;
    /// RESERVE, under PERSISTENT RESERVE OUT.
    pub const PR_OUT_RESERVE: u16 = 0x01;
    /// RELEASE, under PERSISTENT RESERVE OUT.
    pub const PR_OUT_RELEASE: u16 = 0x02;
    /// CLEAR, under PERSISTENT RESERVE OUT.
    pub const PR_OUT_CLEAR: u16 = 0x03;
    /// PREEMPT, under PERSISTENT RESERVE OUT.
    pub const PR_OUT_PREEMPT: u16 = 0x04;
    /// PREEMPT AND ABORT, under PERSISTENT RESERVE OUT.
    pub const PR_OUT_PREEMPT_AND_ABORT: u16 = 0x05;
    /// REGISTER AND IGNORE EXISTING KEY, under PERSISTENT RESERVE OUT.
    pub const PR_OUT_REGISTER_AND_IGNORE_EXISTING_KEY: u16 = 0x06;
    /// REGISTER AND MOVE, under PERSISTENT RESERVE OUT.
    pub const PR_OUT_REGISTER_AND_MOVE: u16 = 0x07;
    /// REPLACE LOST RESERVATION, under PERSISTENT RESERVE OUT.
    pub const PR_OUT_REPLACE_LOST_RESERVATION: u16 = 0x08;

    /// EXTENDED COPY (LID1), under THIRD-PARTY COPY OUT (83h).
    pub const EXTENDED_COPY_LID1: u16 = 0x00;
    /// EXTENDED COPY (LID4), under THIRD-PARTY COPY OUT (83h).
    pub const EXTENDED_COPY_LID4: u16 = 0x01;
    /// POPULATE TOKEN, under THIRD-PARTY COPY OUT (83h).
    pub const POPULATE_TOKEN: u16 = 0x10;
    /// WRITE USING TOKEN, under THIRD-PARTY COPY OUT (83h).
    pub const WRITE_USING_TOKEN: u16 = 0x11;
    /// COPY OPERATION ABORT, under THIRD-PARTY COPY OUT (83h).
    pub const COPY_OPERATION_ABORT: u16 = 0x1C;
    /// RECEIVE COPY STATUS (LID1), under THIRD-PARTY COPY IN (84h).
    pub const RECEIVE_COPY_STATUS_LID1: u16 = 0x00;
    /// RECEIVE COPY DATA (LID1), under THIRD-PARTY COPY IN (84h).
    pub const RECEIVE_COPY_DATA_LID1: u16 = 0x01;
    /// RECEIVE COPY OPERATING PARAMETERS, under THIRD-PARTY COPY IN (84h).
    pub const RECEIVE_COPY_OPERATING_PARAMETERS: u16 = 0x03;
    /// RECEIVE COPY FAILURE DETAILS (LID1), under THIRD-PARTY COPY IN (84h).
    pub const RECEIVE_COPY_FAILURE_DETAILS_LID1: u16 = 0x04;
    /// RECEIVE COPY STATUS (LID4), under THIRD-PARTY COPY IN (84h).
    pub const RECEIVE_COPY_STATUS_LID4: u16 = 0x05;
    /// RECEIVE COPY DATA (LID4), under THIRD-PARTY COPY IN (84h).
    pub const RECEIVE_COPY_DATA_LID4: u16 = 0x06;
    /// RECEIVE ROD TOKEN INFORMATION, under THIRD-PARTY COPY IN (84h).
    pub const RECEIVE_ROD_TOKEN_INFORMATION: u16 = 0x07;
    /// REPORT ALL ROD TOKENS, under THIRD-PARTY COPY IN (84h).
    pub const REPORT_ALL_ROD_TOKENS: u16 = 0x08;

    /// OVERWRITE, under SANITIZE.
    pub const SANITIZE_OVERWRITE: u16 = 0x01;
    /// BLOCK ERASE, under SANITIZE.
    pub const SANITIZE_BLOCK_ERASE: u16 = 0x02;
    /// CRYPTOGRAPHIC ERASE, under SANITIZE.
    pub const SANITIZE_CRYPTOGRAPHIC_ERASE: u16 = 0x03;
    /// EXIT FAILURE MODE, under SANITIZE.
    pub const SANITIZE_EXIT_FAILURE_MODE: u16 = 0x1F;

    /// READ (32), under VARIABLE LENGTH (7Fh).
    pub const READ_32: u16 = 0x0009;
    /// VERIFY (32), under VARIABLE LENGTH (7Fh).
    pub const VERIFY_32: u16 = 0x000A;
    /// WRITE (32), under VARIABLE LENGTH (7Fh).
    pub const WRITE_32: u16 = 0x000B;
    /// WRITE AND VERIFY (32), under VARIABLE LENGTH (7Fh).
    pub const WRITE_AND_VERIFY_32: u16 = 0x000C;
    /// WRITE SAME (32), under VARIABLE LENGTH (7Fh).
    pub const WRITE_SAME_32: u16 = 0x000D;
    /// ORWRITE (32), under VARIABLE LENGTH (7Fh).
    pub const ORWRITE_32: u16 = 0x000E;

    /// The standard name of the command `opcode`/`service_action`, if known here.
    pub const fn name(opcode: OpCode, service_action: u16) -> Option<&'static str> {
        Some(match (opcode.0, service_action) {
            (0x9E, READ_CAPACITY_16) => "READ CAPACITY (16)",
            (0x9E, READ_LONG_16) => "READ LONG (16)",
            (0x9E, GET_LBA_STATUS) => "GET LBA STATUS",
            (0x9E, REPORT_REFERRALS) => "REPORT REFERRALS",
            (0x9F, WRITE_LONG_16) => "WRITE LONG (16)",
            (0xA3, REPORT_IDENTIFYING_INFORMATION) => "REPORT IDENTIFYING INFORMATION",
            (0xA3, REPORT_TARGET_PORT_GROUPS) => "REPORT TARGET PORT GROUPS",
            (0xA3, REPORT_ALIASES) => "REPORT ALIASES",
            (0xA3, REPORT_SUPPORTED_OPERATION_CODES) => "REPORT SUPPORTED OPERATION CODES",
            (0xA3, REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS) => {
                "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS"
            }
            (0xA3, REPORT_PRIORITY) => "REPORT PRIORITY",
            (0xA3, REPORT_TIMESTAMP) => "REPORT TIMESTAMP",
            (0xA4, SET_IDENTIFYING_INFORMATION) => "SET IDENTIFYING INFORMATION",
            (0xA4, SET_TARGET_PORT_GROUPS) => "SET TARGET PORT GROUPS",
            (0xA4, CHANGE_ALIASES) => "CHANGE ALIASES",
            (0xA4, SET_PRIORITY) => "SET PRIORITY",
            (0xA4, SET_TIMESTAMP) => "SET TIMESTAMP",
            (0x83, EXTENDED_COPY_LID1) => "EXTENDED COPY (LID1)",
            (0x83, EXTENDED_COPY_LID4) => "EXTENDED COPY (LID4)",
            (0x83, POPULATE_TOKEN) => "POPULATE TOKEN",
            (0x83, WRITE_USING_TOKEN) => "WRITE USING TOKEN",
            (0x83, COPY_OPERATION_ABORT) => "COPY OPERATION ABORT",
            (0x84, RECEIVE_COPY_STATUS_LID1) => "RECEIVE COPY STATUS (LID1)",
            (0x84, RECEIVE_COPY_DATA_LID1) => "RECEIVE COPY DATA (LID1)",
            (0x84, RECEIVE_COPY_OPERATING_PARAMETERS) => "RECEIVE COPY OPERATING PARAMETERS",
            (0x84, RECEIVE_COPY_FAILURE_DETAILS_LID1) => "RECEIVE COPY FAILURE DETAILS (LID1)",
            (0x84, RECEIVE_COPY_STATUS_LID4) => "RECEIVE COPY STATUS (LID4)",
            (0x84, RECEIVE_COPY_DATA_LID4) => "RECEIVE COPY DATA (LID4)",
            (0x84, RECEIVE_ROD_TOKEN_INFORMATION) => "RECEIVE ROD TOKEN INFORMATION",
            (0x84, REPORT_ALL_ROD_TOKENS) => "REPORT ALL ROD TOKENS",
            (0x48, SANITIZE_OVERWRITE) => "SANITIZE (OVERWRITE)",
            (0x48, SANITIZE_BLOCK_ERASE) => "SANITIZE (BLOCK ERASE)",
            (0x48, SANITIZE_CRYPTOGRAPHIC_ERASE) => "SANITIZE (CRYPTOGRAPHIC ERASE)",
            (0x48, SANITIZE_EXIT_FAILURE_MODE) => "SANITIZE (EXIT FAILURE MODE)",
            (0x7F, READ_32) => "READ (32)",
            (0x7F, VERIFY_32) => "VERIFY (32)",
            (0x7F, WRITE_32) => "WRITE (32)",
            (0x7F, WRITE_AND_VERIFY_32) => "WRITE AND VERIFY (32)",
            (0x7F, WRITE_SAME_32) => "WRITE SAME (32)",
            (0x7F, ORWRITE_32) => "ORWRITE (32)",
            _ => return None,
        })
    }
}

/// Why a CDB was rejected. [`to_sense`](Self::to_sense) gives the sense data to return.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CdbError {
    /// No bytes at all.
    #[error("empty CDB")]
    Empty,
    /// Fewer bytes than the operation code's CDB length.
    #[error("CDB for operation code {opcode:#04x} is {got} bytes, {needed} needed")]
    Truncated {
        /// The operation code.
        opcode: u8,
        /// The CDB length the operation code requires.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The operation code is reserved or not supported (or not the one a decoder expects).
    #[error("invalid command operation code {opcode:#04x}")]
    InvalidOpcode {
        /// The operation code.
        opcode: u8,
    },
    /// A field holds a value that is reserved or not supported.
    #[error("invalid field in CDB at byte {byte}{}", BitSuffix(*bit))]
    InvalidField {
        /// Byte offset of the field (its most significant byte).
        byte: u16,
        /// Most significant bit of the field, if the field is smaller than a byte.
        bit: Option<u8>,
    },
    /// The logical blocks addressed run past the capacity.
    #[error("logical block address out of range")]
    LbaOutOfRange,
}

/// Displays " bit N" for a known bit, nothing otherwise.
struct BitSuffix(Option<u8>);

impl fmt::Display for BitSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(bit) => write!(f, " bit {bit}"),
            None => Ok(()),
        }
    }
}

impl CdbError {
    /// The sense data for this error: ILLEGAL REQUEST with INVALID COMMAND OPERATION CODE,
    /// INVALID FIELD IN CDB (with a field pointer when the field is known) or LOGICAL BLOCK
    /// ADDRESS OUT OF RANGE.
    pub const fn to_sense(self) -> Sense {
        match self {
            Self::Empty | Self::Truncated { .. } => {
                Sense::illegal_request(Asc::INVALID_FIELD_IN_CDB)
            }
            Self::InvalidOpcode { .. } => Sense::invalid_opcode(),
            Self::InvalidField { byte, bit } => Sense::invalid_field_in_cdb(byte, bit),
            Self::LbaOutOfRange => Sense::lba_out_of_range(),
        }
    }
}

impl From<CdbError> for Sense {
    fn from(e: CdbError) -> Self {
        e.to_sense()
    }
}

const fn field(byte: u16, bit: u8) -> CdbError {
    CdbError::InvalidField {
        byte,
        bit: Some(bit),
    }
}

/// The CONTROL byte of a CDB (SAM-5 §5.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Control(pub u8);

impl Control {
    /// NACA: establish an ACA condition if the command ends with CHECK CONDITION.
    pub const fn naca(self) -> bool {
        self.0 & 0x04 != 0
    }

    /// LINK (obsolete in SAM-5): a linked command follows.
    pub const fn link(self) -> bool {
        self.0 & 0x01 != 0
    }

    /// The vendor-specific bits 7–6.
    pub const fn vendor_specific(self) -> u8 {
        self.0 >> 6
    }
}

/// A CDB whose length has been checked against its operation code.
///
/// Bytes past the CDB's length (iSCSI pads CDBs to 16 bytes) are not part of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cdb<'a> {
    bytes: &'a [u8],
}

impl<'a> Cdb<'a> {
    /// Checks `buf` against the length its operation code requires (6, 10, 12 or 16
    /// bytes by group code, `8 + ADDITIONAL CDB LENGTH` for variable-length 7Fh) and keeps
    /// that many bytes.
    ///
    /// Group 3 operation codes other than 7Fh are rejected as invalid; vendor-specific
    /// groups 6 and 7 have no defined length and keep the whole buffer.
    pub fn parse(buf: &'a [u8]) -> Result<Self, CdbError> {
        let Some(&opcode) = buf.first() else {
            return Err(CdbError::Empty);
        };
        let needed = match OpCode(opcode).cdb_len() {
            Some(n) => n,
            None if opcode == OpCode::VARIABLE_LENGTH.0 => match buf.get(7) {
                Some(&add) => 8 + add as usize,
                None => 8,
            },
            None if OpCode(opcode).group() >= 6 => buf.len(),
            None => return Err(CdbError::InvalidOpcode { opcode }),
        };
        match buf.get(..needed) {
            Some(bytes) => Ok(Self { bytes }),
            None => Err(CdbError::Truncated {
                opcode,
                needed,
                got: buf.len(),
            }),
        }
    }

    /// The operation code.
    pub fn opcode(&self) -> OpCode {
        OpCode(self.byte(0))
    }

    /// The CDB bytes, exactly as long as the CDB.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The SERVICE ACTION field (bits 4–0 of byte 1; bytes 8–9 of a variable-length CDB),
    /// for operation codes that have one.
    pub fn service_action(&self) -> Option<u16> {
        let op = self.opcode();
        if !op.has_service_action() {
            None
        } else if op == OpCode::VARIABLE_LENGTH {
            Some(self.be16(8))
        } else {
            Some(u16::from(self.byte(1) & 0x1F))
        }
    }

    /// The error for an unsupported service action: INVALID FIELD IN CDB pointing at the
    /// SERVICE ACTION field (or INVALID COMMAND OPERATION CODE if there is none).
    pub fn invalid_service_action(&self) -> CdbError {
        let op = self.opcode();
        if !op.has_service_action() {
            CdbError::InvalidOpcode { opcode: op.0 }
        } else if op == OpCode::VARIABLE_LENGTH {
            field(8, 7)
        } else {
            field(1, 4)
        }
    }

    /// The command's name, resolving service actions (e.g. `"READ CAPACITY (16)"`).
    pub fn name(&self) -> &'static str {
        let op = self.opcode();
        if let Some(n) = self
            .service_action()
            .and_then(|sa| service_action::name(op, sa))
        {
            return n;
        }
        op.name().unwrap_or("UNKNOWN")
    }

    fn control_index(&self) -> Option<usize> {
        let op = self.opcode();
        if op == OpCode::VARIABLE_LENGTH {
            Some(1)
        } else {
            op.cdb_len().map(|n| n - 1)
        }
    }

    /// The CONTROL byte (last byte; byte 1 of a variable-length CDB). Vendor-specific CDBs
    /// have no defined CONTROL byte and report zero.
    pub fn control(&self) -> Control {
        Control(self.control_index().map_or(0, |i| self.byte(i)))
    }

    /// Rejects a CONTROL byte the device server cannot honour: NACA = 1 without ACA
    /// support, or LINK = 1 (linked commands are obsolete), with INVALID FIELD IN CDB.
    pub fn check_control(&self, aca_supported: bool) -> Result<Control, CdbError> {
        let control = self.control();
        let at = self.control_index().unwrap_or(0) as u16;
        if control.naca() && !aca_supported {
            return Err(field(at, 2));
        }
        if control.link() {
            return Err(field(at, 0));
        }
        Ok(control)
    }

    /// The ALLOCATION LENGTH field (the most data-in the initiator accepts), for commands
    /// that have one: REQUEST SENSE, INQUIRY, MODE SENSE, LOG SENSE, RECEIVE DIAGNOSTIC
    /// RESULTS, READ DEFECT DATA, READ BUFFER, PERSISTENT RESERVE IN, REPORT LUNS,
    /// RECEIVE COPY RESULTS, READ CAPACITY (16), GET LBA STATUS, REPORT REFERRALS,
    /// MAINTENANCE IN, SECURITY PROTOCOL IN, READ ATTRIBUTE.
    pub fn allocation_length(&self) -> Option<u32> {
        Some(match self.opcode().0 {
            0x03 | 0x1A => u32::from(self.byte(4)),
            0x12 | 0x1C => u32::from(self.be16(3)),
            0x37 | 0x4D | 0x5A | 0x5E => u32::from(self.be16(7)),
            0x3C => self.be24(6),
            0xA0 | 0xA2 | 0xA3 | 0xB7 => self.be32(6),
            0x84 | 0x8C => self.be32(10),
            0x9E => match self.service_action()? {
                service_action::READ_CAPACITY_16
                | service_action::GET_LBA_STATUS
                | service_action::REPORT_REFERRALS => self.be32(10),
                _ => return None,
            },
            _ => return None,
        })
    }

    /// The PARAMETER LIST LENGTH field (the data-out the command carries), for commands
    /// that have one: MODE SELECT, LOG SELECT, SEND DIAGNOSTIC, WRITE BUFFER, UNMAP,
    /// SANITIZE, RESERVE/RELEASE (10), PERSISTENT RESERVE OUT, EXTENDED COPY,
    /// MAINTENANCE OUT, SECURITY PROTOCOL OUT, WRITE ATTRIBUTE.
    pub fn parameter_list_length(&self) -> Option<u32> {
        Some(match self.opcode().0 {
            0x15 => u32::from(self.byte(4)),
            0x1D => u32::from(self.be16(3)),
            0x42 | 0x48 | 0x4C | 0x55 | 0x56 | 0x57 => u32::from(self.be16(7)),
            0x3B => self.be24(6),
            0x5F => self.be32(5),
            0xA4 | 0xB5 => self.be32(6),
            0x83 | 0x8D => self.be32(10),
            _ => return None,
        })
    }

    fn byte(&self, i: usize) -> u8 {
        self.bytes.get(i).copied().unwrap_or(0)
    }

    fn bit(&self, i: usize, bit: u8) -> bool {
        (self.byte(i) >> bit) & 1 != 0
    }

    fn be(&self, i: usize, n: usize) -> u64 {
        (i..i + n).fold(0, |acc, k| (acc << 8) | u64::from(self.byte(k)))
    }

    fn be16(&self, i: usize) -> u16 {
        self.be(i, 2) as u16
    }

    fn be24(&self, i: usize) -> u32 {
        self.be(i, 3) as u32
    }

    fn be32(&self, i: usize) -> u32 {
        self.be(i, 4) as u32
    }

    fn be64(&self, i: usize) -> u64 {
        self.be(i, 8)
    }

    fn wrong_opcode(&self) -> CdbError {
        CdbError::InvalidOpcode {
            opcode: self.opcode().0,
        }
    }
}

impl fmt::Debug for Cdb<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cdb({} [", self.name())?;
        for (i, b) in self.bytes.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{b:02X}")?;
        }
        f.write_str("])")
    }
}

/// The family of a block command decoded by [`Rw`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RwKind {
    /// READ (6/10/12/16).
    Read,
    /// WRITE (6/10/12/16).
    Write,
    /// VERIFY (10/12/16).
    Verify,
    /// WRITE AND VERIFY (10/12/16).
    WriteAndVerify,
    /// ORWRITE (16).
    OrWrite,
    /// PRE-FETCH (10/16).
    PreFetch,
    /// SYNCHRONIZE CACHE (10/16).
    SynchronizeCache,
    /// WRITE SAME (10/16).
    WriteSame,
    /// COMPARE AND WRITE.
    CompareAndWrite,
}

impl RwKind {
    /// Whether the command may change the medium (and so is refused on a write-protected
    /// LU).
    pub const fn modifies_medium(self) -> bool {
        matches!(
            self,
            Self::Write
                | Self::WriteAndVerify
                | Self::OrWrite
                | Self::WriteSame
                | Self::CompareAndWrite
        )
    }
}

/// A decoded block command: READ, WRITE, VERIFY, WRITE AND VERIFY, ORWRITE, PRE-FETCH,
/// SYNCHRONIZE CACHE, WRITE SAME or COMPARE AND WRITE, of any CDB size (SBC-3 §5).
///
/// Flags a command does not have are `false`/zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct Rw {
    /// Which command.
    pub kind: RwKind,
    /// CDB length: 6, 10, 12 or 16.
    pub cdb_len: u8,
    /// LOGICAL BLOCK ADDRESS.
    pub lba: u64,
    /// TRANSFER LENGTH, VERIFICATION LENGTH, PREFETCH LENGTH or NUMBER OF LOGICAL BLOCKS,
    /// in blocks, as in the CDB, except that READ (6) and WRITE (6) with 0 mean 256.
    /// For PRE-FETCH, SYNCHRONIZE CACHE and WRITE SAME, 0 means "to the last LBA" (see
    /// [`lba_range`](Self::lba_range)).
    pub blocks: u32,
    /// DPO: disable page out (do not keep the data in cache).
    pub dpo: bool,
    /// FUA: force unit access (the write is durable / the read comes from the medium).
    pub fua: bool,
    /// RDPROTECT, WRPROTECT, VRPROTECT or ORPROTECT (bits 7–5 of byte 1).
    pub protect: u8,
    /// GROUP NUMBER.
    pub group: u8,
    /// BYTCHK of VERIFY and WRITE AND VERIFY: 00b medium only, 01b compare with the
    /// data-out, 11b (VERIFY only) compare each block with one block of data-out.
    pub bytchk: u8,
    /// IMMED of PRE-FETCH and SYNCHRONIZE CACHE: return status before the operation ends.
    pub immed: bool,
    /// UNMAP of WRITE SAME: unmap the blocks if possible.
    pub unmap: bool,
    /// ANCHOR of WRITE SAME: anchor rather than deallocate.
    pub anchor: bool,
    /// NDOB of WRITE SAME (16): no data-out buffer, write zeros.
    pub ndob: bool,
}

impl Rw {
    /// Decodes a block command. Other operation codes are [`CdbError::InvalidOpcode`].
    ///
    /// Reserved values are rejected with their field pointer: BYTCHK 10b (and 11b for
    /// WRITE AND VERIFY), and the obsolete PBDATA/LBDATA bits of WRITE SAME.
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        use RwKind::*;
        let op = cdb.opcode().0;
        let kind = match op {
            0x08 | 0x28 | 0xA8 | 0x88 => Read,
            0x0A | 0x2A | 0xAA | 0x8A => Write,
            0x2F | 0xAF | 0x8F => Verify,
            0x2E | 0xAE | 0x8E => WriteAndVerify,
            0x8B => OrWrite,
            0x34 | 0x90 => PreFetch,
            0x35 | 0x91 => SynchronizeCache,
            0x41 | 0x93 => WriteSame,
            0x89 => CompareAndWrite,
            _ => return Err(cdb.wrong_opcode()),
        };
        let b1 = cdb.byte(1);
        let mut rw = Rw {
            kind,
            cdb_len: cdb.bytes.len() as u8,
            lba: 0,
            blocks: 0,
            dpo: false,
            fua: false,
            protect: 0,
            group: 0,
            bytchk: 0,
            immed: false,
            unmap: false,
            anchor: false,
            ndob: false,
        };
        match cdb.bytes.len() {
            6 => {
                rw.lba = (u64::from(b1 & 0x1F) << 16) | u64::from(cdb.be16(2));
                rw.blocks = match cdb.byte(4) {
                    0 => 256,
                    n => u32::from(n),
                };
                return Ok(rw);
            }
            10 => {
                rw.lba = u64::from(cdb.be32(2));
                rw.group = cdb.byte(6) & 0x1F;
                rw.blocks = u32::from(cdb.be16(7));
            }
            12 => {
                rw.lba = u64::from(cdb.be32(2));
                rw.blocks = cdb.be32(6);
                rw.group = cdb.byte(10) & 0x1F;
            }
            _ => {
                rw.lba = cdb.be64(2);
                rw.blocks = if kind == CompareAndWrite {
                    u32::from(cdb.byte(13))
                } else {
                    cdb.be32(10)
                };
                rw.group = cdb.byte(14) & 0x1F;
            }
        }
        match kind {
            Read | Write | OrWrite | CompareAndWrite => {
                rw.protect = b1 >> 5;
                rw.dpo = b1 & 0x10 != 0;
                rw.fua = b1 & 0x08 != 0;
            }
            Verify | WriteAndVerify => {
                rw.protect = b1 >> 5;
                rw.dpo = b1 & 0x10 != 0;
                rw.bytchk = (b1 >> 1) & 0x03;
                if rw.bytchk == 0b10 || (kind == WriteAndVerify && rw.bytchk == 0b11) {
                    return Err(field(1, 2));
                }
            }
            PreFetch | SynchronizeCache => rw.immed = b1 & 0x02 != 0,
            WriteSame => {
                rw.protect = b1 >> 5;
                rw.anchor = b1 & 0x10 != 0;
                rw.unmap = b1 & 0x08 != 0;
                if b1 & 0x04 != 0 {
                    return Err(field(1, 2)); // PBDATA
                }
                if b1 & 0x02 != 0 {
                    return Err(field(1, 1)); // LBDATA
                }
                rw.ndob = op == OpCode::WRITE_SAME_16.0 && b1 & 0x01 != 0;
            }
        }
        Ok(rw)
    }

    /// The blocks addressed, checked against `capacity` (the number of logical blocks):
    /// [`CdbError::LbaOutOfRange`] if any lies past the last LBA.
    ///
    /// A zero length addresses nothing, except for PRE-FETCH, SYNCHRONIZE CACHE and
    /// WRITE SAME, where it means every block from `lba` to the last one (a device server
    /// that sets WSNZ must reject a zero WRITE SAME itself).
    pub fn lba_range(&self, capacity: u64) -> Result<Range<u64>, CdbError> {
        let to_end = matches!(
            self.kind,
            RwKind::PreFetch | RwKind::SynchronizeCache | RwKind::WriteSame
        );
        let end = if self.blocks == 0 && to_end {
            Some(capacity)
        } else {
            self.lba.checked_add(u64::from(self.blocks))
        };
        match end {
            Some(end) if self.lba <= capacity && end <= capacity => Ok(self.lba..end),
            _ => Err(CdbError::LbaOutOfRange),
        }
    }

    /// How many logical blocks of data the command transfers (data-in for READ, data-out
    /// otherwise): twice the blocks for COMPARE AND WRITE, one for WRITE SAME (none with
    /// NDOB), none for VERIFY without BYTCHK, PRE-FETCH and SYNCHRONIZE CACHE.
    pub const fn data_blocks(&self) -> u64 {
        let blocks = self.blocks as u64;
        match self.kind {
            RwKind::Read | RwKind::Write | RwKind::WriteAndVerify | RwKind::OrWrite => blocks,
            RwKind::Verify => match self.bytchk {
                0b01 => blocks,
                0b11 => 1,
                _ => 0,
            },
            RwKind::WriteSame => {
                if self.ndob {
                    0
                } else {
                    1
                }
            }
            RwKind::CompareAndWrite => 2 * blocks,
            RwKind::PreFetch | RwKind::SynchronizeCache => 0,
        }
    }

    /// Rejects protection information requests (a non-zero RDPROTECT/WRPROTECT/...
    /// field) with INVALID FIELD IN CDB, for an LU formatted without protection.
    pub const fn check_no_protection(&self) -> Result<(), CdbError> {
        if self.protect != 0 {
            Err(field(1, 7))
        } else {
            Ok(())
        }
    }
}

/// A decoded INQUIRY (SPC-4 §6.6).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct Inquiry {
    /// EVPD: return the vital product data page `page_code`.
    pub evpd: bool,
    /// PAGE CODE (zero unless `evpd`).
    pub page_code: u8,
    /// ALLOCATION LENGTH.
    pub alloc_len: u16,
}

impl Inquiry {
    /// Decodes INQUIRY, rejecting a PAGE CODE without EVPD and the obsolete CMDDT bit.
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        if cdb.opcode() != OpCode::INQUIRY {
            return Err(cdb.wrong_opcode());
        }
        let evpd = cdb.bit(1, 0);
        if cdb.bit(1, 1) {
            return Err(field(1, 1));
        }
        let page_code = cdb.byte(2);
        if !evpd && page_code != 0 {
            return Err(field(2, 7));
        }
        Ok(Self {
            evpd,
            page_code,
            alloc_len: cdb.be16(3),
        })
    }
}

/// The PC field of MODE SENSE and LOG SENSE: which values to return.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PageControl {
    /// 00b: current values.
    Current,
    /// 01b: changeable values (a mask).
    Changeable,
    /// 10b: default values.
    Default,
    /// 11b: saved values.
    Saved,
}

impl PageControl {
    /// From the two PC bits.
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 0x03 {
            0 => Self::Current,
            1 => Self::Changeable,
            2 => Self::Default,
            _ => Self::Saved,
        }
    }
}

/// A decoded MODE SENSE (6) or (10) (SPC-4 §6.11, §6.12).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct ModeSense {
    /// CDB length, 6 or 10 (which also selects the mode parameter header format).
    pub cdb_len: u8,
    /// DBD: disable block descriptors.
    pub dbd: bool,
    /// LLBAA: long LBA block descriptors accepted (MODE SENSE (10) only).
    pub llbaa: bool,
    /// PC: which values.
    pub pc: PageControl,
    /// PAGE CODE (3Fh: all pages).
    pub page_code: u8,
    /// SUBPAGE CODE (FFh: all subpages).
    pub subpage_code: u8,
    /// ALLOCATION LENGTH.
    pub alloc_len: u16,
}

impl ModeSense {
    /// Decodes MODE SENSE (6) or (10).
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        let (cdb_len, alloc_len) = match cdb.opcode() {
            OpCode::MODE_SENSE_6 => (6, u16::from(cdb.byte(4))),
            OpCode::MODE_SENSE_10 => (10, cdb.be16(7)),
            _ => return Err(cdb.wrong_opcode()),
        };
        Ok(Self {
            cdb_len,
            dbd: cdb.bit(1, 3),
            llbaa: cdb_len == 10 && cdb.bit(1, 4),
            pc: PageControl::from_bits(cdb.byte(2) >> 6),
            page_code: cdb.byte(2) & 0x3F,
            subpage_code: cdb.byte(3),
            alloc_len,
        })
    }
}

/// A decoded MODE SELECT (6) or (10) (SPC-4 §6.9, §6.10).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct ModeSelect {
    /// CDB length, 6 or 10 (which also selects the mode parameter header format).
    pub cdb_len: u8,
    /// PF: the pages follow the page format.
    pub pf: bool,
    /// SP: save the pages.
    pub sp: bool,
    /// PARAMETER LIST LENGTH.
    pub param_len: u16,
}

impl ModeSelect {
    /// Decodes MODE SELECT (6) or (10).
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        let (cdb_len, param_len) = match cdb.opcode() {
            OpCode::MODE_SELECT_6 => (6, u16::from(cdb.byte(4))),
            OpCode::MODE_SELECT_10 => (10, cdb.be16(7)),
            _ => return Err(cdb.wrong_opcode()),
        };
        Ok(Self {
            cdb_len,
            pf: cdb.bit(1, 4),
            sp: cdb.bit(1, 0),
            param_len,
        })
    }
}

/// A decoded LOG SENSE (SPC-4 §6.8).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct LogSense {
    /// SP: save parameters.
    pub sp: bool,
    /// PC: which values.
    pub pc: PageControl,
    /// PAGE CODE.
    pub page_code: u8,
    /// SUBPAGE CODE.
    pub subpage_code: u8,
    /// PARAMETER POINTER: first parameter code to return.
    pub param_pointer: u16,
    /// ALLOCATION LENGTH.
    pub alloc_len: u16,
}

impl LogSense {
    /// Decodes LOG SENSE.
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        if cdb.opcode() != OpCode::LOG_SENSE {
            return Err(cdb.wrong_opcode());
        }
        Ok(Self {
            sp: cdb.bit(1, 0),
            pc: PageControl::from_bits(cdb.byte(2) >> 6),
            page_code: cdb.byte(2) & 0x3F,
            subpage_code: cdb.byte(3),
            param_pointer: cdb.be16(5),
            alloc_len: cdb.be16(7),
        })
    }
}

/// A decoded PERSISTENT RESERVE IN (SPC-4 §6.15).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct PrIn {
    /// SERVICE ACTION (`service_action::PR_IN_*`).
    pub service_action: u8,
    /// ALLOCATION LENGTH.
    pub alloc_len: u16,
}

impl PrIn {
    /// Decodes PERSISTENT RESERVE IN; service actions above READ FULL STATUS are
    /// rejected with a pointer to the SERVICE ACTION field.
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        if cdb.opcode() != OpCode::PERSISTENT_RESERVE_IN {
            return Err(cdb.wrong_opcode());
        }
        let service_action = cdb.byte(1) & 0x1F;
        if u16::from(service_action) > service_action::PR_IN_READ_FULL_STATUS {
            return Err(cdb.invalid_service_action());
        }
        Ok(Self {
            service_action,
            alloc_len: cdb.be16(7),
        })
    }
}

/// A decoded PERSISTENT RESERVE OUT (SPC-4 §6.16).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct PrOut {
    /// SERVICE ACTION (`service_action::PR_OUT_*`).
    pub service_action: u8,
    /// SCOPE (0: LU scope).
    pub scope: u8,
    /// TYPE of the persistent reservation.
    pub pr_type: u8,
    /// PARAMETER LIST LENGTH.
    pub param_len: u32,
}

impl PrOut {
    /// Decodes PERSISTENT RESERVE OUT; service actions above REPLACE LOST RESERVATION are
    /// rejected with a pointer to the SERVICE ACTION field.
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        if cdb.opcode() != OpCode::PERSISTENT_RESERVE_OUT {
            return Err(cdb.wrong_opcode());
        }
        let service_action = cdb.byte(1) & 0x1F;
        if u16::from(service_action) > service_action::PR_OUT_REPLACE_LOST_RESERVATION {
            return Err(cdb.invalid_service_action());
        }
        Ok(Self {
            service_action,
            scope: cdb.byte(2) >> 4,
            pr_type: cdb.byte(2) & 0x0F,
            param_len: cdb.be32(5),
        })
    }
}

/// A decoded REPORT LUNS (SPC-4 §6.33).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct ReportLuns {
    /// SELECT REPORT (00h all LUs, 01h well-known, 02h all, 10h–12h administrative).
    pub select_report: u8,
    /// ALLOCATION LENGTH.
    pub alloc_len: u32,
}

impl ReportLuns {
    /// Decodes REPORT LUNS.
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        if cdb.opcode() != OpCode::REPORT_LUNS {
            return Err(cdb.wrong_opcode());
        }
        Ok(Self {
            select_report: cdb.byte(2),
            alloc_len: cdb.be32(6),
        })
    }
}

/// A decoded REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct ReportSupportedOpcodes {
    /// RCTD: return command timeouts descriptors.
    pub rctd: bool,
    /// REPORTING OPTIONS (000b all commands, 001b one opcode, 010b opcode + service
    /// action, 011b either).
    pub reporting_options: u8,
    /// REQUESTED OPERATION CODE.
    pub opcode: OpCode,
    /// REQUESTED SERVICE ACTION.
    pub service_action: u16,
    /// ALLOCATION LENGTH.
    pub alloc_len: u32,
}

impl ReportSupportedOpcodes {
    /// Decodes REPORT SUPPORTED OPERATION CODES (MAINTENANCE IN, service action 0Ch),
    /// rejecting reserved REPORTING OPTIONS.
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        if cdb.opcode() != OpCode::MAINTENANCE_IN {
            return Err(cdb.wrong_opcode());
        }
        if cdb.service_action() != Some(service_action::REPORT_SUPPORTED_OPERATION_CODES) {
            return Err(cdb.invalid_service_action());
        }
        let reporting_options = cdb.byte(2) & 0x07;
        if reporting_options > 0b011 {
            return Err(field(2, 2));
        }
        Ok(Self {
            rctd: cdb.bit(2, 7),
            reporting_options,
            opcode: OpCode(cdb.byte(3)),
            service_action: cdb.be16(4),
            alloc_len: cdb.be32(6),
        })
    }
}

/// A decoded REQUEST SENSE (SPC-4 §6.39).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct RequestSense {
    /// DESC: return descriptor-format sense data.
    pub desc: bool,
    /// ALLOCATION LENGTH.
    pub alloc_len: u8,
}

impl RequestSense {
    /// Decodes REQUEST SENSE.
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        if cdb.opcode() != OpCode::REQUEST_SENSE {
            return Err(cdb.wrong_opcode());
        }
        Ok(Self {
            desc: cdb.bit(1, 0),
            alloc_len: cdb.byte(4),
        })
    }
}

/// A decoded UNMAP (SBC-3 §5.28).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct Unmap {
    /// ANCHOR: anchor rather than deallocate.
    pub anchor: bool,
    /// GROUP NUMBER.
    pub group: u8,
    /// PARAMETER LIST LENGTH.
    pub param_len: u16,
}

impl Unmap {
    /// Decodes UNMAP.
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        if cdb.opcode() != OpCode::UNMAP {
            return Err(cdb.wrong_opcode());
        }
        Ok(Self {
            anchor: cdb.bit(1, 0),
            group: cdb.byte(6) & 0x1F,
            param_len: cdb.be16(7),
        })
    }
}

/// A decoded READ CAPACITY (10) or (16) (SBC-3 §5.15, §5.16).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct ReadCapacity {
    /// CDB length, 10 or 16 (which selects the parameter data format).
    pub cdb_len: u8,
    /// ALLOCATION LENGTH (8 for READ CAPACITY (10), which has no such field).
    pub alloc_len: u32,
}

impl ReadCapacity {
    /// Decodes READ CAPACITY (10), rejecting a non-zero LBA without PMI, or READ
    /// CAPACITY (16) (SERVICE ACTION IN (16), service action 10h).
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        match cdb.opcode() {
            OpCode::READ_CAPACITY_10 => {
                if cdb.be32(2) != 0 && !cdb.bit(8, 0) {
                    return Err(field(2, 7));
                }
                Ok(Self {
                    cdb_len: 10,
                    alloc_len: 8,
                })
            }
            OpCode::SERVICE_ACTION_IN_16 => {
                if cdb.service_action() != Some(service_action::READ_CAPACITY_16) {
                    return Err(cdb.invalid_service_action());
                }
                Ok(Self {
                    cdb_len: 16,
                    alloc_len: cdb.be32(10),
                })
            }
            _ => Err(cdb.wrong_opcode()),
        }
    }
}

/// A decoded GET LBA STATUS (SBC-3 §5.7).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct GetLbaStatus {
    /// STARTING LOGICAL BLOCK ADDRESS.
    pub lba: u64,
    /// ALLOCATION LENGTH.
    pub alloc_len: u32,
}

impl GetLbaStatus {
    /// Decodes GET LBA STATUS (SERVICE ACTION IN (16), service action 12h).
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        if cdb.opcode() != OpCode::SERVICE_ACTION_IN_16 {
            return Err(cdb.wrong_opcode());
        }
        if cdb.service_action() != Some(service_action::GET_LBA_STATUS) {
            return Err(cdb.invalid_service_action());
        }
        Ok(Self {
            lba: cdb.be64(2),
            alloc_len: cdb.be32(10),
        })
    }
}

/// A decoded RECEIVE COPY RESULTS / THIRD-PARTY COPY IN (SPC-4 §6.18–6.23).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct ReceiveCopyResults {
    /// SERVICE ACTION (`service_action::RECEIVE_*`, `REPORT_ALL_ROD_TOKENS`).
    pub service_action: u8,
    /// LIST IDENTIFIER: one byte for the LID1 service actions, four for LID4 ones, zero
    /// for those without.
    pub list_id: u32,
    /// ALLOCATION LENGTH.
    pub alloc_len: u32,
}

impl ReceiveCopyResults {
    /// Decodes RECEIVE COPY RESULTS.
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        if cdb.opcode() != OpCode::RECEIVE_COPY_RESULTS {
            return Err(cdb.wrong_opcode());
        }
        let service_action = cdb.byte(1) & 0x1F;
        let list_id = match u16::from(service_action) {
            service_action::RECEIVE_COPY_STATUS_LID1
            | service_action::RECEIVE_COPY_DATA_LID1
            | service_action::RECEIVE_COPY_FAILURE_DETAILS_LID1 => u32::from(cdb.byte(2)),
            service_action::RECEIVE_COPY_STATUS_LID4
            | service_action::RECEIVE_COPY_DATA_LID4
            | service_action::RECEIVE_ROD_TOKEN_INFORMATION => cdb.be32(2),
            _ => 0,
        };
        Ok(Self {
            service_action,
            list_id,
            alloc_len: cdb.be32(10),
        })
    }
}

/// A decoded START STOP UNIT (SBC-3 §5.25).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub struct StartStopUnit {
    /// IMMED: return status before the operation ends.
    pub immed: bool,
    /// POWER CONDITION MODIFIER.
    pub power_condition_modifier: u8,
    /// POWER CONDITION (0: use START and LOEJ).
    pub power_condition: u8,
    /// NO_FLUSH: do not write the cache back before stopping.
    pub no_flush: bool,
    /// LOEJ: load or eject the medium.
    pub loej: bool,
    /// START: make the LU ready (or, with 0, stop it).
    pub start: bool,
}

impl StartStopUnit {
    /// Decodes START STOP UNIT.
    pub fn decode(cdb: &Cdb<'_>) -> Result<Self, CdbError> {
        if cdb.opcode() != OpCode::START_STOP_UNIT {
            return Err(cdb.wrong_opcode());
        }
        let b4 = cdb.byte(4);
        Ok(Self {
            immed: cdb.bit(1, 0),
            power_condition_modifier: cdb.byte(3) & 0x0F,
            power_condition: b4 >> 4,
            no_flush: b4 & 0x04 != 0,
            loej: b4 & 0x02 != 0,
            start: b4 & 0x01 != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::SenseFormat;

    fn cdb(bytes: &[u8]) -> Cdb<'_> {
        Cdb::parse(bytes).expect("valid CDB")
    }

    fn rw(bytes: &[u8]) -> Rw {
        Rw::decode(&cdb(bytes)).expect("valid block command")
    }

    #[test]
    fn lengths_by_group() {
        let expect = [
            (0x00, Some(6)),
            (0x28, Some(10)),
            (0x5A, Some(10)),
            (0x60, None),
            (0x88, Some(16)),
            (0xA8, Some(12)),
            (0xC0, None),
            (0xE0, None),
        ];
        for (op, len) in expect {
            assert_eq!(OpCode(op).cdb_len(), len, "{op:#x}");
        }
        // iSCSI pads to 16 bytes: the CDB keeps its own length.
        let padded = [0x12, 0, 0, 0, 0x24, 0, 0xAA, 0xAA, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(cdb(&padded).as_bytes(), &padded[..6]);
        // Vendor specific keeps everything.
        assert_eq!(cdb(&[0xC5, 1, 2]).as_bytes(), &[0xC5, 1, 2]);
    }

    #[test]
    fn short_cdbs_rejected() {
        assert_eq!(Cdb::parse(&[]), Err(CdbError::Empty));
        assert_eq!(
            Cdb::parse(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(CdbError::Truncated {
                opcode: 0x28,
                needed: 10,
                got: 9
            })
        );
        assert_eq!(
            Cdb::parse(&[0x08, 0, 0, 0, 1]),
            Err(CdbError::Truncated {
                opcode: 0x08,
                needed: 6,
                got: 5
            })
        );
        assert_eq!(
            Cdb::parse(&[0x88; 15]),
            Err(CdbError::Truncated {
                opcode: 0x88,
                needed: 16,
                got: 15
            })
        );
        assert_eq!(
            Cdb::parse(&[0xA8; 11]),
            Err(CdbError::Truncated {
                opcode: 0xA8,
                needed: 12,
                got: 11
            })
        );
        assert_eq!(
            Cdb::parse(&[0x60; 16]),
            Err(CdbError::InvalidOpcode { opcode: 0x60 })
        );
        let sense = CdbError::Empty.to_sense();
        assert_eq!((sense.asc, sense.sks), (Asc::INVALID_FIELD_IN_CDB, None));
    }

    #[test]
    fn variable_length_cdb() {
        // READ (32): 8 + 0x18 = 32 bytes.
        let mut b = [0u8; 40];
        b[0] = 0x7F;
        b[1] = 0x04; // CONTROL: NACA
        b[7] = 0x18;
        b[9] = 0x09;
        let c = cdb(&b);
        assert_eq!(c.as_bytes().len(), 32);
        assert_eq!(c.service_action(), Some(service_action::READ_32));
        assert_eq!(c.name(), "READ (32)");
        assert!(c.control().naca());
        assert_eq!(c.check_control(false), Err(field(1, 2)));
        assert_eq!(c.invalid_service_action(), field(8, 7));
        assert_eq!(
            Cdb::parse(&b[..16]),
            Err(CdbError::Truncated {
                opcode: 0x7F,
                needed: 32,
                got: 16
            })
        );
        assert_eq!(
            Cdb::parse(&b[..7]),
            Err(CdbError::Truncated {
                opcode: 0x7F,
                needed: 8,
                got: 7
            })
        );
    }

    #[test]
    fn read6_write6() {
        let r = rw(&[0x08, 0x1F, 0xFF, 0xFE, 0x00, 0x00]);
        assert_eq!(
            (r.kind, r.cdb_len, r.lba, r.blocks),
            (RwKind::Read, 6, 0x1F_FFFE, 256)
        );
        assert!(!r.dpo && !r.fua);
        // Bits 7-5 of byte 1 (the old LUN field) are not part of the LBA.
        let w = rw(&[0x0A, 0xE1, 0x02, 0x03, 0x08, 0x00]);
        assert_eq!((w.kind, w.lba, w.blocks), (RwKind::Write, 0x01_0203, 8));
        assert_eq!(w.data_blocks(), 8);
        assert!(w.kind.modifies_medium());
    }

    #[test]
    fn read_write_10_12_16() {
        let r10 = rw(&[0x28, 0x78, 0x12, 0x34, 0x56, 0x78, 0xE5, 0x01, 0x02, 0x00]);
        assert_eq!(
            (
                r10.kind,
                r10.cdb_len,
                r10.lba,
                r10.blocks,
                r10.group,
                r10.protect
            ),
            (RwKind::Read, 10, 0x1234_5678, 0x0102, 5, 3)
        );
        assert!(r10.dpo && r10.fua);

        let w12 = rw(&[0xAA, 0x08, 0, 0, 0, 9, 0x00, 0x01, 0x00, 0x00, 0x1F, 0x00]);
        assert_eq!(
            (w12.kind, w12.cdb_len, w12.lba, w12.blocks, w12.group),
            (RwKind::Write, 12, 9, 0x1_0000, 31)
        );
        assert!(w12.fua && !w12.dpo);

        let w16 = rw(&[
            0x8A, 0x10, 0xFF, 0xEE, 0xDD, 0xCC, 0xBB, 0xAA, 0x99, 0x88, 0xDE, 0xAD, 0xBE, 0xEF,
            0x02, 0x00,
        ]);
        assert_eq!(
            (w16.kind, w16.cdb_len, w16.lba, w16.blocks, w16.group),
            (RwKind::Write, 16, 0xFFEE_DDCC_BBAA_9988, 0xDEAD_BEEF, 2)
        );
        assert!(w16.dpo && !w16.fua);

        let r12 = rw(&[0xA8, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            (r12.kind, r12.blocks, r12.data_blocks()),
            (RwKind::Read, 0, 0)
        );
        assert!(!r12.kind.modifies_medium());
    }

    #[test]
    fn verify_and_write_and_verify() {
        let v10 = rw(&[0x2F, 0b0001_0010, 0, 0, 0, 7, 0, 0, 4, 0]);
        assert_eq!(
            (v10.kind, v10.lba, v10.blocks, v10.bytchk),
            (RwKind::Verify, 7, 4, 1)
        );
        assert!(v10.dpo);
        assert_eq!(v10.data_blocks(), 4);
        let v12 = rw(&[0xAF, 0b0000_0110, 0, 0, 0, 7, 0, 0, 0, 4, 0, 0]);
        assert_eq!((v12.bytchk, v12.data_blocks()), (3, 1));
        let v16 = rw(&[0x8F, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 4, 0, 0]);
        assert_eq!(
            (v16.lba, v16.blocks, v16.bytchk, v16.data_blocks()),
            (7, 4, 0, 0)
        );
        // BYTCHK 10b is reserved.
        let bad = Rw::decode(&cdb(&[0x2F, 0b0000_0100, 0, 0, 0, 0, 0, 0, 1, 0]));
        assert_eq!(bad, Err(field(1, 2)));

        let wv10 = rw(&[0x2E, 0b0010_0010, 0, 0, 1, 0, 0, 0, 2, 0]);
        assert_eq!(
            (wv10.kind, wv10.lba, wv10.blocks, wv10.bytchk, wv10.protect),
            (RwKind::WriteAndVerify, 256, 2, 1, 1)
        );
        assert!(wv10.kind.modifies_medium());
        assert_eq!(wv10.data_blocks(), 2);
        let wv12 = rw(&[0xAE, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0]);
        assert_eq!((wv12.kind, wv12.blocks), (RwKind::WriteAndVerify, 3));
        let wv16 = rw(&[0x8E, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0]);
        assert_eq!(
            (wv16.kind, wv16.cdb_len, wv16.blocks),
            (RwKind::WriteAndVerify, 16, 3)
        );
        // BYTCHK 11b is reserved for WRITE AND VERIFY.
        let bad = Rw::decode(&cdb(&[
            0x8E, 0x06, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0,
        ]));
        assert_eq!(bad, Err(field(1, 2)));
    }

    #[test]
    fn orwrite_prefetch_sync_cache() {
        let o = rw(&[0x8B, 0x08, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0]);
        assert_eq!((o.kind, o.lba, o.blocks), (RwKind::OrWrite, 5, 1));
        assert!(o.fua);

        let p10 = rw(&[0x34, 0x02, 0, 0, 0, 8, 0, 0, 0, 0]);
        assert_eq!((p10.kind, p10.lba, p10.blocks), (RwKind::PreFetch, 8, 0));
        assert!(p10.immed);
        assert_eq!(p10.lba_range(100), Ok(8..100));
        assert_eq!(p10.data_blocks(), 0);
        let p16 = rw(&[0x90, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 2, 0, 0]);
        assert_eq!((p16.kind, p16.blocks), (RwKind::PreFetch, 2));
        assert!(!p16.immed);

        let s10 = rw(&[0x35, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            (s10.kind, s10.lba_range(50)),
            (RwKind::SynchronizeCache, Ok(0..50))
        );
        assert!(s10.immed);
        let s16 = rw(&[0x91, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 5, 0, 0]);
        assert_eq!(
            (s16.kind, s16.lba_range(50)),
            (RwKind::SynchronizeCache, Ok(10..15))
        );
        assert!(!s16.kind.modifies_medium());
    }

    #[test]
    fn write_same() {
        let ws10 = rw(&[0x41, 0b0001_1000, 0, 0, 0, 3, 0x01, 0, 16, 0]);
        assert_eq!(
            (ws10.kind, ws10.lba, ws10.blocks, ws10.group),
            (RwKind::WriteSame, 3, 16, 1)
        );
        assert!(ws10.anchor && ws10.unmap && !ws10.ndob);
        assert_eq!(ws10.data_blocks(), 1);
        assert_eq!(ws10.lba_range(10), Err(CdbError::LbaOutOfRange));
        assert_eq!(ws10.lba_range(19), Ok(3..19));

        let ws16 = rw(&[0x93, 0b0000_1001, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(ws16.unmap && ws16.ndob && !ws16.anchor);
        assert_eq!(ws16.data_blocks(), 0);
        assert_eq!(ws16.lba_range(1000), Ok(0..1000));
        // The NDOB position is reserved in WRITE SAME (10).
        assert!(!rw(&[0x41, 0x01, 0, 0, 0, 0, 0, 0, 1, 0]).ndob);
        // PBDATA and LBDATA are refused.
        assert_eq!(
            Rw::decode(&cdb(&[0x41, 0x04, 0, 0, 0, 0, 0, 0, 1, 0])),
            Err(field(1, 2))
        );
        assert_eq!(
            Rw::decode(&cdb(&[
                0x93, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0
            ])),
            Err(field(1, 1))
        );
    }

    #[test]
    fn compare_and_write() {
        let c = rw(&[
            0x89, 0x18, 0, 0, 0, 0, 0, 0, 0x10, 0x00, 0xFF, 0xFF, 0xFF, 0x02, 0x04, 0x00,
        ]);
        assert_eq!(
            (c.kind, c.lba, c.blocks, c.group),
            (RwKind::CompareAndWrite, 0x1000, 2, 4)
        );
        assert!(c.dpo && c.fua);
        assert_eq!(c.data_blocks(), 4);
        assert_eq!(c.lba_range(0x1002), Ok(0x1000..0x1002));
        assert_eq!(c.lba_range(0x1001), Err(CdbError::LbaOutOfRange));
    }

    #[test]
    fn lba_range_edges() {
        let mut r = rw(&[
            0x88, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 2, 0, 0,
        ]);
        assert_eq!(
            r.lba_range(u64::MAX),
            Err(CdbError::LbaOutOfRange),
            "overflow"
        );
        r.lba = 10;
        r.blocks = 0;
        assert_eq!(r.lba_range(10), Ok(10..10), "zero blocks at capacity");
        r.lba = 11;
        assert_eq!(r.lba_range(10), Err(CdbError::LbaOutOfRange));
        r.lba = 8;
        r.blocks = 2;
        assert_eq!(r.lba_range(10), Ok(8..10));
        r.blocks = 3;
        assert_eq!(r.lba_range(10), Err(CdbError::LbaOutOfRange));
        let s = CdbError::LbaOutOfRange.to_sense();
        assert_eq!(s.asc, Asc::LBA_OUT_OF_RANGE);
    }

    #[test]
    fn protection_check() {
        let r = rw(&[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(r.protect, 1);
        assert_eq!(r.check_no_protection(), Err(field(1, 7)));
        assert_eq!(
            rw(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]).check_no_protection(),
            Ok(())
        );
    }

    #[test]
    fn decoders_reject_other_opcodes() {
        let tur = cdb(&[0, 0, 0, 0, 0, 0]);
        let err = Some(CdbError::InvalidOpcode { opcode: 0 });
        assert_eq!(Rw::decode(&tur).err(), err);
        assert_eq!(Inquiry::decode(&tur).err(), err);
        assert_eq!(ModeSense::decode(&tur).err(), err);
        assert_eq!(ModeSelect::decode(&tur).err(), err);
        assert_eq!(LogSense::decode(&tur).err(), err);
        assert_eq!(PrIn::decode(&tur).err(), err);
        assert_eq!(PrOut::decode(&tur).err(), err);
        assert_eq!(ReportLuns::decode(&tur).err(), err);
        assert_eq!(ReportSupportedOpcodes::decode(&tur).err(), err);
        assert_eq!(RequestSense::decode(&tur).err(), err);
        assert_eq!(Unmap::decode(&tur).err(), err);
        assert_eq!(ReadCapacity::decode(&tur).err(), err);
        assert_eq!(GetLbaStatus::decode(&tur).err(), err);
        assert_eq!(ReceiveCopyResults::decode(&tur).err(), err);
        assert_eq!(StartStopUnit::decode(&tur).err(), err);
        assert_eq!(
            tur.invalid_service_action(),
            CdbError::InvalidOpcode { opcode: 0 }
        );
        let s = CdbError::InvalidOpcode { opcode: 0 }.to_sense();
        assert_eq!(s.asc, Asc::INVALID_COMMAND_OPERATION_CODE);
    }

    #[test]
    fn inquiry() {
        let i = Inquiry::decode(&cdb(&[0x12, 0, 0, 0x01, 0x00, 0])).expect("std inquiry");
        assert_eq!((i.evpd, i.page_code, i.alloc_len), (false, 0, 256));
        let v = Inquiry::decode(&cdb(&[0x12, 1, 0x83, 0, 0xFF, 0])).expect("vpd");
        assert_eq!((v.evpd, v.page_code, v.alloc_len), (true, 0x83, 255));
        let e = Inquiry::decode(&cdb(&[0x12, 0, 0x83, 0, 0xFF, 0])).unwrap_err();
        assert_eq!(e, field(2, 7));
        assert_eq!(
            &e.to_sense().encode(SenseFormat::Fixed)[12..],
            &[0x24, 0x00, 0x00, 0xCF, 0x00, 0x02]
        );
        assert_eq!(
            Inquiry::decode(&cdb(&[0x12, 2, 0, 0, 0xFF, 0])),
            Err(field(1, 1))
        );
    }

    #[test]
    fn mode_sense_and_select() {
        let m6 = ModeSense::decode(&cdb(&[0x1A, 0x08, 0x3F, 0x00, 0xFC, 0])).expect("ms6");
        assert_eq!(
            (
                m6.cdb_len,
                m6.dbd,
                m6.llbaa,
                m6.pc,
                m6.page_code,
                m6.subpage_code,
                m6.alloc_len
            ),
            (6, true, false, PageControl::Current, 0x3F, 0, 252)
        );
        let m10 = ModeSense::decode(&cdb(&[0x5A, 0x10, 0x8A, 0xFF, 0, 0, 0, 0x10, 0x00, 0]))
            .expect("ms10");
        assert_eq!(
            (
                m10.cdb_len,
                m10.dbd,
                m10.llbaa,
                m10.pc,
                m10.page_code,
                m10.subpage_code
            ),
            (10, false, true, PageControl::Default, 0x0A, 0xFF)
        );
        assert_eq!(m10.alloc_len, 0x1000);
        assert_eq!(
            ModeSense::decode(&cdb(&[0x1A, 0, 0x7F, 0, 0, 0])).map(|m| m.pc),
            Ok(PageControl::Changeable)
        );
        assert_eq!(
            ModeSense::decode(&cdb(&[0x1A, 0, 0xC8, 0, 0, 0])).map(|m| m.pc),
            Ok(PageControl::Saved)
        );

        let s6 = ModeSelect::decode(&cdb(&[0x15, 0x11, 0, 0, 24, 0])).expect("msel6");
        assert_eq!(
            (s6.cdb_len, s6.pf, s6.sp, s6.param_len),
            (6, true, true, 24)
        );
        let s10 =
            ModeSelect::decode(&cdb(&[0x55, 0x10, 0, 0, 0, 0, 0, 0x01, 0x00, 0])).expect("msel10");
        assert_eq!(
            (s10.cdb_len, s10.pf, s10.sp, s10.param_len),
            (10, true, false, 256)
        );
    }

    #[test]
    fn log_sense() {
        let l = LogSense::decode(&cdb(&[
            0x4D, 0x01, 0x4D, 0x01, 0, 0x00, 0x02, 0x02, 0x00, 0,
        ]))
        .expect("log sense");
        assert_eq!(
            (
                l.sp,
                l.pc,
                l.page_code,
                l.subpage_code,
                l.param_pointer,
                l.alloc_len
            ),
            (true, PageControl::Changeable, 0x0D, 1, 2, 0x200)
        );
    }

    #[test]
    fn persistent_reserve() {
        let i = PrIn::decode(&cdb(&[0x5E, 0x03, 0, 0, 0, 0, 0, 0x20, 0x00, 0])).expect("pr in");
        assert_eq!((i.service_action, i.alloc_len), (3, 0x2000));
        assert_eq!(
            PrIn::decode(&cdb(&[0x5E, 0x04, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(field(1, 4))
        );
        let o = PrOut::decode(&cdb(&[0x5F, 0x01, 0x05, 0, 0, 0, 0, 0, 24, 0])).expect("pr out");
        assert_eq!(
            (o.service_action, o.scope, o.pr_type, o.param_len),
            (1, 0, 5, 24)
        );
        assert_eq!(
            PrOut::decode(&cdb(&[0x5F, 0x09, 0, 0, 0, 0, 0, 0, 24, 0])),
            Err(field(1, 4))
        );
    }

    #[test]
    fn report_luns_and_rsoc() {
        let c = cdb(&[0xA0, 0, 0x02, 0, 0, 0, 0x00, 0x00, 0x10, 0x00, 0, 0]);
        let r = ReportLuns::decode(&c).expect("report luns");
        assert_eq!((r.select_report, r.alloc_len), (2, 0x1000));
        assert_eq!(c.allocation_length(), Some(0x1000));

        let c = cdb(&[0xA3, 0x0C, 0x82, 0x9E, 0x00, 0x10, 0, 0, 0x02, 0x00, 0, 0]);
        assert_eq!(c.name(), "REPORT SUPPORTED OPERATION CODES");
        let o = ReportSupportedOpcodes::decode(&c).expect("rsoc");
        assert_eq!(
            (
                o.rctd,
                o.reporting_options,
                o.opcode,
                o.service_action,
                o.alloc_len
            ),
            (true, 2, OpCode::SERVICE_ACTION_IN_16, 0x10, 0x200)
        );
        assert_eq!(
            ReportSupportedOpcodes::decode(&cdb(&[0xA3, 0x0C, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(field(2, 2))
        );
        // REPORT TARGET PORT GROUPS is not RSOC.
        let rtpg = cdb(&[0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 0x04, 0x00, 0, 0]);
        assert_eq!(ReportSupportedOpcodes::decode(&rtpg), Err(field(1, 4)));
        assert_eq!(
            rtpg.service_action(),
            Some(service_action::REPORT_TARGET_PORT_GROUPS)
        );
        assert_eq!(rtpg.allocation_length(), Some(0x400));
    }

    #[test]
    fn capacity_and_lba_status() {
        let r10 = ReadCapacity::decode(&cdb(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0])).expect("rc10");
        assert_eq!((r10.cdb_len, r10.alloc_len), (10, 8));
        assert_eq!(
            ReadCapacity::decode(&cdb(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0])),
            Err(field(2, 7))
        );
        assert!(ReadCapacity::decode(&cdb(&[0x25, 0, 0, 0, 0, 1, 0, 0, 1, 0])).is_ok());

        let c = cdb(&[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]);
        assert_eq!(c.name(), "READ CAPACITY (16)");
        assert_eq!(c.allocation_length(), Some(32));
        let r16 = ReadCapacity::decode(&c).expect("rc16");
        assert_eq!((r16.cdb_len, r16.alloc_len), (16, 32));
        assert_eq!(GetLbaStatus::decode(&c), Err(field(1, 4)));

        let c = cdb(&[
            0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0, 0x10, 0, 0, 0,
        ]);
        let g = GetLbaStatus::decode(&c).expect("get lba status");
        assert_eq!((g.lba, g.alloc_len), (256, 0x1000));
        assert_eq!(c.allocation_length(), Some(0x1000));
        assert_eq!(ReadCapacity::decode(&c), Err(field(1, 4)));
        // READ LONG (16) has no allocation length.
        let c = cdb(&[0x9E, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(c.allocation_length(), None);
    }

    #[test]
    fn copy_commands() {
        let c = cdb(&[
            0x84, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0,
        ]);
        let r = ReceiveCopyResults::decode(&c).expect("lid1");
        assert_eq!((r.service_action, r.list_id, r.alloc_len), (0, 7, 256));
        assert_eq!(c.allocation_length(), Some(256));
        let c = cdb(&[
            0x84, 0x05, 0x01, 0x02, 0x03, 0x04, 0, 0, 0, 0, 0, 0, 0, 0x60, 0, 0,
        ]);
        let r = ReceiveCopyResults::decode(&c).expect("lid4");
        assert_eq!(
            (r.service_action, r.list_id, r.alloc_len),
            (5, 0x0102_0304, 0x60)
        );
        let c = cdb(&[0x84, 0x03, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x60, 0, 0]);
        assert_eq!(ReceiveCopyResults::decode(&c).map(|r| r.list_id), Ok(0));
        assert_eq!(c.name(), "RECEIVE COPY OPERATING PARAMETERS");

        let x = cdb(&[0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0, 0]);
        assert_eq!(x.service_action(), Some(service_action::EXTENDED_COPY_LID1));
        assert_eq!(x.parameter_list_length(), Some(0x200));
        assert_eq!(x.name(), "EXTENDED COPY (LID1)");
    }

    #[test]
    fn misc_commands() {
        let r = RequestSense::decode(&cdb(&[0x03, 0x01, 0, 0, 252, 0])).expect("request sense");
        assert_eq!((r.desc, r.alloc_len), (true, 252));
        let u = Unmap::decode(&cdb(&[0x42, 0x01, 0, 0, 0, 0, 0x03, 0, 24, 0])).expect("unmap");
        assert_eq!((u.anchor, u.group, u.param_len), (true, 3, 24));
        let s = StartStopUnit::decode(&cdb(&[0x1B, 0x01, 0, 0x02, 0x27, 0])).expect("ssu");
        assert_eq!(
            (
                s.immed,
                s.power_condition_modifier,
                s.power_condition,
                s.no_flush,
                s.loej,
                s.start
            ),
            (true, 2, 2, true, true, true)
        );
    }

    #[test]
    fn allocation_and_parameter_lengths() {
        let alloc = [
            (&[0x03, 0, 0, 0, 18, 0][..], Some(18)),
            (&[0x12, 0, 0, 0x12, 0x34, 0], Some(0x1234)),
            (&[0x1A, 0, 0, 0, 0xFF, 0], Some(255)),
            (&[0x5A, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0], Some(0x1234)),
            (&[0x4D, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0], Some(0x1234)),
            (&[0x5E, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0], Some(0x1234)),
            (&[0x3C, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0], Some(0x12_3456)),
            (&[0x28, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0], None),
            (&[0x00, 0, 0, 0, 0, 0], None),
        ];
        for (bytes, want) in alloc {
            assert_eq!(cdb(bytes).allocation_length(), want, "{bytes:02X?}");
        }
        let param = [
            (&[0x15, 0, 0, 0, 28, 0][..], Some(28)),
            (&[0x55, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0], Some(0x102)),
            (&[0x4C, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0], Some(0x102)),
            (&[0x42, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0], Some(0x102)),
            (&[0x48, 0x01, 0, 0, 0, 0, 0, 0x01, 0x02, 0], Some(0x102)),
            (
                &[0x5F, 0, 0, 0, 0, 0x01, 0x02, 0x03, 0x04, 0],
                Some(0x0102_0304),
            ),
            (
                &[0xA4, 0x0A, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0],
                Some(0x100),
            ),
            (&[0x12, 0, 0, 0, 0xFF, 0], None),
        ];
        for (bytes, want) in param {
            assert_eq!(cdb(bytes).parameter_list_length(), want, "{bytes:02X?}");
        }
    }

    #[test]
    fn control_byte() {
        let c = cdb(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0x04]);
        assert!(c.control().naca() && !c.control().link());
        assert_eq!(c.check_control(false), Err(field(9, 2)));
        assert_eq!(c.check_control(true), Ok(Control(0x04)));
        let c = cdb(&[0x00, 0, 0, 0, 0, 0x01]);
        assert!(c.control().link());
        assert_eq!(c.check_control(true), Err(field(5, 0)));
        let c = cdb(&[0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xC0]);
        assert_eq!(c.control().vendor_specific(), 3);
        assert_eq!(c.check_control(false), Ok(Control(0xC0)));
        assert_eq!(cdb(&[0xC0, 0xFF]).control(), Control(0));
    }

    #[test]
    fn invalid_field_sense_bytes() {
        let e = field(1, 4);
        assert_eq!(e.to_string(), "invalid field in CDB at byte 1 bit 4");
        let s = Sense::from(e);
        assert_eq!(
            &*s.encode(SenseFormat::Fixed),
            &[0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x24, 0, 0, 0xCC, 0x00, 0x01]
        );
        let e = CdbError::InvalidField { byte: 7, bit: None };
        assert_eq!(e.to_string(), "invalid field in CDB at byte 7");
        assert_eq!(
            &*e.to_sense().encode(SenseFormat::Descriptor),
            &[0x72, 0x05, 0x24, 0, 0, 0, 0, 0x08, 0x02, 0x06, 0, 0, 0xC0, 0x00, 0x07, 0x00]
        );
    }

    #[test]
    fn names() {
        assert_eq!(OpCode::WRITE_SAME_16.to_string(), "WRITE SAME (16)");
        assert_eq!(OpCode(0xFF).to_string(), "OPERATION CODE FFh");
        assert_eq!(format!("{:?}", OpCode::READ_10), "OpCode(0x28 READ (10))");
        assert_eq!(cdb(&[0xFF, 0]).name(), "UNKNOWN");
        assert_eq!(
            cdb(&[0x5E, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0]).name(),
            "PERSISTENT RESERVE IN"
        );
        assert_eq!(
            format!("{:?}", cdb(&[0x00, 0, 0, 0, 0, 0])),
            "Cdb(TEST UNIT READY [00 00 00 00 00 00])"
        );
    }
}
