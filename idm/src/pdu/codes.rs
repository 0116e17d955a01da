//! Coded fields of the BHS: opcodes, stages, reason and response codes (RFC 7143 §11).

use super::PduError;

/// Declares a `u8`-coded enum with an `Unknown(u8)` catch-all and lossless
/// conversions to and from `u8`.
macro_rules! coded_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident = $val:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)*
            /// A value this implementation does not name (reserved, vendor or future).
            Unknown(u8),
        }
        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                match v {
                    $($val => Self::$variant,)*
                    other => Self::Unknown(other),
                }
            }
        }
        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                match v {
                    $($name::$variant => $val,)*
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

/// iSCSI opcode (BHS byte 0, low six bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// NOP-Out (initiator).
    NopOut = 0x00,
    /// SCSI Command (initiator).
    ScsiCommand = 0x01,
    /// SCSI Task Management Function Request (initiator).
    TaskMgmtRequest = 0x02,
    /// Login Request (initiator).
    LoginRequest = 0x03,
    /// Text Request (initiator).
    TextRequest = 0x04,
    /// SCSI Data-Out (initiator).
    DataOut = 0x05,
    /// Logout Request (initiator).
    LogoutRequest = 0x06,
    /// SNACK Request (initiator).
    Snack = 0x10,
    /// NOP-In (target).
    NopIn = 0x20,
    /// SCSI Response (target).
    ScsiResponse = 0x21,
    /// SCSI Task Management Function Response (target).
    TaskMgmtResponse = 0x22,
    /// Login Response (target).
    LoginResponse = 0x23,
    /// Text Response (target).
    TextResponse = 0x24,
    /// SCSI Data-In (target).
    DataIn = 0x25,
    /// Logout Response (target).
    LogoutResponse = 0x26,
    /// Ready To Transfer (target).
    R2t = 0x31,
    /// Asynchronous Message (target).
    AsyncMessage = 0x32,
    /// Reject (target).
    Reject = 0x3f,
}

impl Opcode {
    /// Decodes the six-bit opcode; vendor-specific and reserved codes are errors.
    pub fn from_u8(v: u8) -> Result<Self, PduError> {
        Ok(match v & 0x3f {
            0x00 => Self::NopOut,
            0x01 => Self::ScsiCommand,
            0x02 => Self::TaskMgmtRequest,
            0x03 => Self::LoginRequest,
            0x04 => Self::TextRequest,
            0x05 => Self::DataOut,
            0x06 => Self::LogoutRequest,
            0x10 => Self::Snack,
            0x20 => Self::NopIn,
            0x21 => Self::ScsiResponse,
            0x22 => Self::TaskMgmtResponse,
            0x23 => Self::LoginResponse,
            0x24 => Self::TextResponse,
            0x25 => Self::DataIn,
            0x26 => Self::LogoutResponse,
            0x31 => Self::R2t,
            0x32 => Self::AsyncMessage,
            0x3f => Self::Reject,
            other => return Err(PduError::BadOpcode(other)),
        })
    }

    /// True for opcodes sent by initiators (0x00..=0x1f), false for target opcodes.
    pub fn is_initiator(self) -> bool {
        (self as u8) < 0x20
    }

    /// Whether the opcode may carry a non-empty data segment.
    pub fn allows_data(self) -> bool {
        !matches!(
            self,
            Self::TaskMgmtRequest
                | Self::TaskMgmtResponse
                | Self::LogoutRequest
                | Self::LogoutResponse
                | Self::Snack
                | Self::R2t
        )
    }
}

/// Which side of the connection we are; decides which opcodes may be received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// We are the target: we receive initiator opcodes.
    Target,
    /// We are the initiator: we receive target opcodes.
    Initiator,
}

impl Role {
    /// Whether a PDU with this opcode may be received by this role.
    pub fn accepts(self, op: Opcode) -> bool {
        match self {
            Role::Target => op.is_initiator(),
            Role::Initiator => !op.is_initiator(),
        }
    }
}

/// Login stage (CSG/NSG, RFC 7143 §11.12.3). The value 2 is reserved and rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// 0: security negotiation.
    SecurityNegotiation = 0,
    /// 1: login operational negotiation.
    OperationalNegotiation = 1,
    /// 3: full feature phase.
    FullFeaturePhase = 3,
}

impl Stage {
    /// Decodes a two-bit stage code.
    pub fn from_bits(v: u8) -> Option<Self> {
        match v & 3 {
            0 => Some(Self::SecurityNegotiation),
            1 => Some(Self::OperationalNegotiation),
            3 => Some(Self::FullFeaturePhase),
            _ => None,
        }
    }
}

coded_enum! {
    /// SCSI task attribute of a SCSI Command (ATTR, three bits).
    pub enum TaskAttr {
        /// 0: untagged.
        Untagged = 0,
        /// 1: simple.
        Simple = 1,
        /// 2: ordered.
        Ordered = 2,
        /// 3: head of queue.
        HeadOfQueue = 3,
        /// 4: ACA.
        Aca = 4,
    }
}

coded_enum! {
    /// Task management function code (RFC 7143 §11.5.1, RFC 7144 §4.3).
    pub enum TmfFunction {
        /// 1: ABORT TASK.
        AbortTask = 1,
        /// 2: ABORT TASK SET.
        AbortTaskSet = 2,
        /// 3: CLEAR ACA.
        ClearAca = 3,
        /// 4: CLEAR TASK SET.
        ClearTaskSet = 4,
        /// 5: LOGICAL UNIT RESET.
        LogicalUnitReset = 5,
        /// 6: TARGET WARM RESET.
        TargetWarmReset = 6,
        /// 7: TARGET COLD RESET.
        TargetColdReset = 7,
        /// 8: TASK REASSIGN.
        TaskReassign = 8,
        /// 9: QUERY TASK (RFC 7144).
        QueryTask = 9,
        /// 10: QUERY TASK SET (RFC 7144).
        QueryTaskSet = 10,
        /// 11: I_T NEXUS RESET (RFC 7144).
        ItNexusReset = 11,
        /// 12: QUERY ASYNCHRONOUS EVENT (RFC 7144).
        QueryAsyncEvent = 12,
    }
}

coded_enum! {
    /// Task management response code (RFC 7143 §11.6.1, RFC 7144 §4.4).
    pub enum TmfResponse {
        /// 0: function complete.
        FunctionComplete = 0,
        /// 1: task does not exist.
        TaskDoesNotExist = 1,
        /// 2: LUN does not exist.
        LunDoesNotExist = 2,
        /// 3: task still allegiant.
        TaskStillAllegiant = 3,
        /// 4: task allegiance reassignment not supported.
        ReassignmentNotSupported = 4,
        /// 5: task management function not supported.
        NotSupported = 5,
        /// 6: function authorization failed.
        AuthorizationFailed = 6,
        /// 7: function succeeded (RFC 7144, QUERY functions).
        FunctionSucceeded = 7,
        /// 255: function rejected.
        Rejected = 255,
    }
}

coded_enum! {
    /// Logout request reason code (RFC 7143 §11.14.1).
    pub enum LogoutReason {
        /// 0: close the session.
        CloseSession = 0,
        /// 1: close the connection.
        CloseConnection = 1,
        /// 2: remove the connection for recovery.
        RemoveForRecovery = 2,
    }
}

coded_enum! {
    /// Logout response code (RFC 7143 §11.15.1).
    pub enum LogoutResponseCode {
        /// 0: connection or session closed successfully.
        Success = 0,
        /// 1: CID not found.
        CidNotFound = 1,
        /// 2: connection recovery is not supported.
        RecoveryNotSupported = 2,
        /// 3: cleanup failed for various reasons.
        CleanupFailed = 3,
    }
}

coded_enum! {
    /// SNACK type (RFC 7143 §11.16.1).
    pub enum SnackType {
        /// 0: Data/R2T SNACK.
        DataR2t = 0,
        /// 1: status SNACK.
        Status = 1,
        /// 2: DataACK.
        DataAck = 2,
        /// 3: R-Data SNACK.
        RData = 3,
    }
}

coded_enum! {
    /// Asynchronous event code (RFC 7143 §11.9.1).
    pub enum AsyncEvent {
        /// 0: SCSI asynchronous event (sense data in the data segment).
        ScsiEvent = 0,
        /// 1: target requests logout (Parameter3 = seconds to wait).
        LogoutRequest = 1,
        /// 2: target will drop this connection (Parameter1 = CID).
        ConnectionDrop = 2,
        /// 3: target will drop all connections of the session.
        SessionDrop = 3,
        /// 4: target requests parameter renegotiation.
        Renegotiate = 4,
        /// 5: all active tasks of the LU named by the LUN field are being terminated.
        TaskTermination = 5,
        /// 255: vendor-specific event.
        VendorSpecific = 255,
    }
}

coded_enum! {
    /// SCSI Response "Response" field (RFC 7143 §11.4.3).
    pub enum ScsiResponseCode {
        /// 0: command completed at target (see the Status field).
        Completed = 0,
        /// 1: target failure.
        TargetFailure = 1,
    }
}

coded_enum! {
    /// Reject reason (RFC 7143 §11.17.1).
    pub enum RejectReason {
        /// 0x02: data (payload) digest error.
        DataDigestError = 0x02,
        /// 0x03: SNACK reject.
        SnackReject = 0x03,
        /// 0x04: protocol error.
        ProtocolError = 0x04,
        /// 0x05: command not supported.
        CommandNotSupported = 0x05,
        /// 0x06: immediate command reject, too many immediate commands.
        ImmediateCommandReject = 0x06,
        /// 0x07: task in progress.
        TaskInProgress = 0x07,
        /// 0x08: invalid data ack.
        InvalidDataAck = 0x08,
        /// 0x09: invalid PDU field.
        InvalidPduField = 0x09,
        /// 0x0a: long operation reject, out of resources.
        LongOperationReject = 0x0a,
        /// 0x0b: deprecated (was "negotiation reset").
        Deprecated = 0x0b,
        /// 0x0c: waiting for logout.
        WaitingForLogout = 0x0c,
    }
}

/// Login status class and detail (RFC 7143 §11.13.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoginStatus {
    /// Status-Class (0 success, 1 redirection, 2 initiator error, 3 target error).
    pub class: u8,
    /// Status-Detail, meaning depends on the class.
    pub detail: u8,
}

impl LoginStatus {
    /// 0x0000 success.
    pub const SUCCESS: Self = Self::new(0, 0);
    /// 0x0101 target moved temporarily.
    pub const TARGET_MOVED_TEMPORARILY: Self = Self::new(1, 1);
    /// 0x0102 target moved permanently.
    pub const TARGET_MOVED_PERMANENTLY: Self = Self::new(1, 2);
    /// 0x0200 initiator error (miscellaneous).
    pub const INITIATOR_ERROR: Self = Self::new(2, 0);
    /// 0x0201 authentication failure.
    pub const AUTHENTICATION_FAILURE: Self = Self::new(2, 1);
    /// 0x0202 authorization failure.
    pub const AUTHORIZATION_FAILURE: Self = Self::new(2, 2);
    /// 0x0203 target not found.
    pub const NOT_FOUND: Self = Self::new(2, 3);
    /// 0x0204 target removed.
    pub const TARGET_REMOVED: Self = Self::new(2, 4);
    /// 0x0205 unsupported version.
    pub const UNSUPPORTED_VERSION: Self = Self::new(2, 5);
    /// 0x0206 too many connections.
    pub const TOO_MANY_CONNECTIONS: Self = Self::new(2, 6);
    /// 0x0207 missing parameter.
    pub const MISSING_PARAMETER: Self = Self::new(2, 7);
    /// 0x0208 cannot include connection in session.
    pub const CANT_INCLUDE_IN_SESSION: Self = Self::new(2, 8);
    /// 0x0209 session type not supported.
    pub const SESSION_TYPE_NOT_SUPPORTED: Self = Self::new(2, 9);
    /// 0x020a session does not exist.
    pub const SESSION_DOES_NOT_EXIST: Self = Self::new(2, 0x0a);
    /// 0x020b invalid request during login.
    pub const INVALID_DURING_LOGIN: Self = Self::new(2, 0x0b);
    /// 0x0300 target error (miscellaneous).
    pub const TARGET_ERROR: Self = Self::new(3, 0);
    /// 0x0301 service unavailable.
    pub const SERVICE_UNAVAILABLE: Self = Self::new(3, 1);
    /// 0x0302 out of resources.
    pub const OUT_OF_RESOURCES: Self = Self::new(3, 2);

    /// Builds a status from class and detail.
    pub const fn new(class: u8, detail: u8) -> Self {
        Self { class, detail }
    }

    /// True for class 0 (success).
    pub const fn is_success(self) -> bool {
        self.class == 0
    }
}

/// Initiator Session ID (six bytes: T/A, B, C, D; RFC 7143 §11.12.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Isid(pub [u8; 6]);

/// The reserved tag value 0xffffffff (ITT or TTT "not used").
pub const RESERVED_TAG: u32 = 0xffff_ffff;
