//! SCSI status codes (SAM-5 §5.3), sense keys and additional sense codes (SPC-4 §4.5.6).

use core::fmt;

/// A SCSI status byte, as returned to the initiator at the end of a command (SAM-5 table 28).
///
/// A newtype rather than an enum so that any byte received from the wire is representable;
/// the known values are associated constants.
///
/// ```
/// use plugins_sdk::scsi::ScsiStatus;
/// assert_eq!(ScsiStatus::CHECK_CONDITION.0, 0x02);
/// assert_eq!(ScsiStatus::RESERVATION_CONFLICT.to_string(), "RESERVATION CONFLICT");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct ScsiStatus(pub u8);

named_u8!(ScsiStatus {
    GOOD = 0x00, "GOOD";
    CHECK_CONDITION = 0x02, "CHECK CONDITION";
    CONDITION_MET = 0x04, "CONDITION MET";
    BUSY = 0x08, "BUSY";
    RESERVATION_CONFLICT = 0x18, "RESERVATION CONFLICT";
    TASK_SET_FULL = 0x28, "TASK SET FULL";
    ACA_ACTIVE = 0x30, "ACA ACTIVE";
    TASK_ABORTED = 0x40, "TASK ABORTED";
});

impl ScsiStatus {
    /// Whether this status carries sense data (CHECK CONDITION).
    pub const fn has_sense(self) -> bool {
        self.0 == Self::CHECK_CONDITION.0
    }
}

/// A sense key (SPC-4 table 48): the 4-bit class of a CHECK CONDITION.
///
/// Only the low 4 bits are meaningful; encoders mask the value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct SenseKey(pub u8);

named_u8!(SenseKey {
    NO_SENSE = 0x0, "NO SENSE";
    RECOVERED_ERROR = 0x1, "RECOVERED ERROR";
    NOT_READY = 0x2, "NOT READY";
    MEDIUM_ERROR = 0x3, "MEDIUM ERROR";
    HARDWARE_ERROR = 0x4, "HARDWARE ERROR";
    ILLEGAL_REQUEST = 0x5, "ILLEGAL REQUEST";
    UNIT_ATTENTION = 0x6, "UNIT ATTENTION";
    DATA_PROTECT = 0x7, "DATA PROTECT";
    BLANK_CHECK = 0x8, "BLANK CHECK";
    VENDOR_SPECIFIC = 0x9, "VENDOR SPECIFIC";
    COPY_ABORTED = 0xA, "COPY ABORTED";
    ABORTED_COMMAND = 0xB, "ABORTED COMMAND";
    VOLUME_OVERFLOW = 0xD, "VOLUME OVERFLOW";
    MISCOMPARE = 0xE, "MISCOMPARE";
});

/// An additional sense code and its qualifier (ASC/ASCQ, SPC-4 table 49).
///
/// The pairs a SPC-4/SBC-3 target reports are associated constants named after the
/// standard's text, and listed with that text in [`ASC_TABLE`].
///
/// ```
/// use plugins_sdk::scsi::Asc;
/// assert_eq!(Asc::INVALID_FIELD_IN_CDB, Asc::new(0x24, 0x00));
/// assert_eq!(Asc::new(0x3F, 0x0E).name(), Some("REPORTED LUNS DATA HAS CHANGED"));
/// assert_eq!(Asc::new(0x80, 0x01).to_string(), "ASC 80h ASCQ 01h");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Asc {
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
}

impl Asc {
    /// An ASC/ASCQ pair from its two bytes.
    pub const fn new(asc: u8, ascq: u8) -> Self {
        Self { asc, ascq }
    }

    /// The standard text of this pair, if it is in [`ASC_TABLE`].
    pub fn name(self) -> Option<&'static str> {
        ASC_TABLE.iter().find(|(a, _)| *a == self).map(|(_, n)| *n)
    }
}

macro_rules! asc_table {
    ($( $name:ident = ($asc:literal, $ascq:literal), $text:literal; )*) => {
        impl Asc {
            $(
                #[doc = concat!($text, " (", stringify!($asc), "/", stringify!($ascq), ").")]
                pub const $name: Asc = Asc::new($asc, $ascq);
            )*
        }

        /// Every named [`Asc`] constant with its SPC-4 text, in code order.
        pub const ASC_TABLE: &[(Asc, &str)] = &[ $( (Asc::$name, $text), )* ];
    };
}

asc_table! {
    NO_ADDITIONAL_SENSE = (0x00, 0x00), "NO ADDITIONAL SENSE INFORMATION";
    OPERATION_IN_PROGRESS = (0x00, 0x16), "OPERATION IN PROGRESS";
    PERIPHERAL_DEVICE_WRITE_FAULT = (0x03, 0x00), "PERIPHERAL DEVICE WRITE FAULT";
    LU_NOT_READY_CAUSE_NOT_REPORTABLE = (0x04, 0x00),
        "LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE";
    LU_NOT_READY_BECOMING_READY = (0x04, 0x01), "LOGICAL UNIT IS IN PROCESS OF BECOMING READY";
    LU_NOT_READY_INITIALIZING_COMMAND_REQUIRED = (0x04, 0x02),
        "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED";
    LU_NOT_READY_MANUAL_INTERVENTION_REQUIRED = (0x04, 0x03),
        "LOGICAL UNIT NOT READY, MANUAL INTERVENTION REQUIRED";
    LU_NOT_READY_FORMAT_IN_PROGRESS = (0x04, 0x04), "LOGICAL UNIT NOT READY, FORMAT IN PROGRESS";
    LU_NOT_READY_OPERATION_IN_PROGRESS = (0x04, 0x07),
        "LOGICAL UNIT NOT READY, OPERATION IN PROGRESS";
    LU_NOT_READY_SELF_TEST_IN_PROGRESS = (0x04, 0x09),
        "LOGICAL UNIT NOT READY, SELF-TEST IN PROGRESS";
    LU_NOT_ACCESSIBLE_ASYMMETRIC_ACCESS_STATE_TRANSITION = (0x04, 0x0A),
        "LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS STATE TRANSITION";
    LU_NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY_STATE = (0x04, 0x0B),
        "LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE";
    LU_NOT_ACCESSIBLE_TARGET_PORT_IN_UNAVAILABLE_STATE = (0x04, 0x0C),
        "LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE";
    LU_NOT_READY_NOTIFY_REQUIRED = (0x04, 0x11),
        "LOGICAL UNIT NOT READY, NOTIFY (ENABLE SPINUP) REQUIRED";
    LU_NOT_READY_OFFLINE = (0x04, 0x12), "LOGICAL UNIT NOT READY, OFFLINE";
    LU_NOT_READY_SPACE_ALLOCATION_IN_PROGRESS = (0x04, 0x14),
        "LOGICAL UNIT NOT READY, SPACE ALLOCATION IN PROGRESS";
    LU_NOT_READY_SANITIZE_IN_PROGRESS = (0x04, 0x1B),
        "LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS";
    LU_DOES_NOT_RESPOND_TO_SELECTION = (0x05, 0x00), "LOGICAL UNIT DOES NOT RESPOND TO SELECTION";
    LU_COMMUNICATION_FAILURE = (0x08, 0x00), "LOGICAL UNIT COMMUNICATION FAILURE";
    LU_COMMUNICATION_TIME_OUT = (0x08, 0x01), "LOGICAL UNIT COMMUNICATION TIME-OUT";
    UNREACHABLE_COPY_TARGET = (0x08, 0x04), "UNREACHABLE COPY TARGET";
    WRITE_ERROR = (0x0C, 0x00), "WRITE ERROR";
    ERROR_DETECTED_BY_THIRD_PARTY_TEMPORARY_INITIATOR = (0x0D, 0x00),
        "ERROR DETECTED BY THIRD PARTY TEMPORARY INITIATOR";
    THIRD_PARTY_DEVICE_FAILURE = (0x0D, 0x01), "THIRD PARTY DEVICE FAILURE";
    COPY_TARGET_DEVICE_NOT_REACHABLE = (0x0D, 0x02), "COPY TARGET DEVICE NOT REACHABLE";
    INCORRECT_COPY_TARGET_DEVICE_TYPE = (0x0D, 0x03), "INCORRECT COPY TARGET DEVICE TYPE";
    COPY_TARGET_DEVICE_DATA_UNDERRUN = (0x0D, 0x04), "COPY TARGET DEVICE DATA UNDERRUN";
    COPY_TARGET_DEVICE_DATA_OVERRUN = (0x0D, 0x05), "COPY TARGET DEVICE DATA OVERRUN";
    INVALID_INFORMATION_UNIT = (0x0E, 0x00), "INVALID INFORMATION UNIT";
    INFORMATION_UNIT_TOO_SHORT = (0x0E, 0x01), "INFORMATION UNIT TOO SHORT";
    INFORMATION_UNIT_TOO_LONG = (0x0E, 0x02), "INFORMATION UNIT TOO LONG";
    INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT = (0x0E, 0x03),
        "INVALID FIELD IN COMMAND INFORMATION UNIT";
    LOGICAL_BLOCK_GUARD_CHECK_FAILED = (0x10, 0x01), "LOGICAL BLOCK GUARD CHECK FAILED";
    LOGICAL_BLOCK_APPLICATION_TAG_CHECK_FAILED = (0x10, 0x02),
        "LOGICAL BLOCK APPLICATION TAG CHECK FAILED";
    LOGICAL_BLOCK_REFERENCE_TAG_CHECK_FAILED = (0x10, 0x03),
        "LOGICAL BLOCK REFERENCE TAG CHECK FAILED";
    UNRECOVERED_READ_ERROR = (0x11, 0x00), "UNRECOVERED READ ERROR";
    PARAMETER_LIST_LENGTH_ERROR = (0x1A, 0x00), "PARAMETER LIST LENGTH ERROR";
    MISCOMPARE_DURING_VERIFY_OPERATION = (0x1D, 0x00), "MISCOMPARE DURING VERIFY OPERATION";
    MISCOMPARED_VERIFY_OF_UNMAPPED_LBA = (0x1D, 0x01), "MISCOMPARED VERIFY OF UNMAPPED LBA";
    INVALID_COMMAND_OPERATION_CODE = (0x20, 0x00), "INVALID COMMAND OPERATION CODE";
    ACCESS_DENIED_INITIATOR_PENDING_ENROLLED = (0x20, 0x01),
        "ACCESS DENIED - INITIATOR PENDING-ENROLLED";
    ACCESS_DENIED_NO_ACCESS_RIGHTS = (0x20, 0x02), "ACCESS DENIED - NO ACCESS RIGHTS";
    ACCESS_DENIED_INVALID_LU_IDENTIFIER = (0x20, 0x09), "ACCESS DENIED - INVALID LU IDENTIFIER";
    LBA_OUT_OF_RANGE = (0x21, 0x00), "LOGICAL BLOCK ADDRESS OUT OF RANGE";
    INVALID_FIELD_IN_CDB = (0x24, 0x00), "INVALID FIELD IN CDB";
    LOGICAL_UNIT_NOT_SUPPORTED = (0x25, 0x00), "LOGICAL UNIT NOT SUPPORTED";
    INVALID_FIELD_IN_PARAMETER_LIST = (0x26, 0x00), "INVALID FIELD IN PARAMETER LIST";
    PARAMETER_NOT_SUPPORTED = (0x26, 0x01), "PARAMETER NOT SUPPORTED";
    PARAMETER_VALUE_INVALID = (0x26, 0x02), "PARAMETER VALUE INVALID";
    THRESHOLD_PARAMETERS_NOT_SUPPORTED = (0x26, 0x03), "THRESHOLD PARAMETERS NOT SUPPORTED";
    INVALID_RELEASE_OF_PERSISTENT_RESERVATION = (0x26, 0x04),
        "INVALID RELEASE OF PERSISTENT RESERVATION";
    TOO_MANY_TARGET_DESCRIPTORS = (0x26, 0x06), "TOO MANY TARGET DESCRIPTORS";
    UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE = (0x26, 0x07),
        "UNSUPPORTED TARGET DESCRIPTOR TYPE CODE";
    TOO_MANY_SEGMENT_DESCRIPTORS = (0x26, 0x08), "TOO MANY SEGMENT DESCRIPTORS";
    UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE = (0x26, 0x09),
        "UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE";
    UNEXPECTED_INEXACT_SEGMENT = (0x26, 0x0A), "UNEXPECTED INEXACT SEGMENT";
    INLINE_DATA_LENGTH_EXCEEDED = (0x26, 0x0B), "INLINE DATA LENGTH EXCEEDED";
    INVALID_OPERATION_FOR_COPY_SOURCE_OR_DESTINATION = (0x26, 0x0C),
        "INVALID OPERATION FOR COPY SOURCE OR DESTINATION";
    COPY_SEGMENT_GRANULARITY_VIOLATION = (0x26, 0x0D), "COPY SEGMENT GRANULARITY VIOLATION";
    WRITE_PROTECTED = (0x27, 0x00), "WRITE PROTECTED";
    HARDWARE_WRITE_PROTECTED = (0x27, 0x01), "HARDWARE WRITE PROTECTED";
    LU_SOFTWARE_WRITE_PROTECTED = (0x27, 0x02), "LOGICAL UNIT SOFTWARE WRITE PROTECTED";
    SPACE_ALLOCATION_FAILED_WRITE_PROTECT = (0x27, 0x07), "SPACE ALLOCATION FAILED WRITE PROTECT";
    NOT_READY_TO_READY_CHANGE = (0x28, 0x00),
        "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED";
    POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED = (0x29, 0x00),
        "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED";
    POWER_ON_OCCURRED = (0x29, 0x01), "POWER ON OCCURRED";
    SCSI_BUS_RESET_OCCURRED = (0x29, 0x02), "SCSI BUS RESET OCCURRED";
    BUS_DEVICE_RESET_FUNCTION_OCCURRED = (0x29, 0x03), "BUS DEVICE RESET FUNCTION OCCURRED";
    DEVICE_INTERNAL_RESET = (0x29, 0x04), "DEVICE INTERNAL RESET";
    I_T_NEXUS_LOSS_OCCURRED = (0x29, 0x07), "I_T NEXUS LOSS OCCURRED";
    PARAMETERS_CHANGED = (0x2A, 0x00), "PARAMETERS CHANGED";
    MODE_PARAMETERS_CHANGED = (0x2A, 0x01), "MODE PARAMETERS CHANGED";
    LOG_PARAMETERS_CHANGED = (0x2A, 0x02), "LOG PARAMETERS CHANGED";
    RESERVATIONS_PREEMPTED = (0x2A, 0x03), "RESERVATIONS PREEMPTED";
    RESERVATIONS_RELEASED = (0x2A, 0x04), "RESERVATIONS RELEASED";
    REGISTRATIONS_PREEMPTED = (0x2A, 0x05), "REGISTRATIONS PREEMPTED";
    ASYMMETRIC_ACCESS_STATE_CHANGED = (0x2A, 0x06), "ASYMMETRIC ACCESS STATE CHANGED";
    IMPLICIT_ASYMMETRIC_ACCESS_STATE_TRANSITION_FAILED = (0x2A, 0x07),
        "IMPLICIT ASYMMETRIC ACCESS STATE TRANSITION FAILED";
    PRIORITY_CHANGED = (0x2A, 0x08), "PRIORITY CHANGED";
    CAPACITY_DATA_HAS_CHANGED = (0x2A, 0x09), "CAPACITY DATA HAS CHANGED";
    COMMAND_SEQUENCE_ERROR = (0x2C, 0x00), "COMMAND SEQUENCE ERROR";
    COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = (0x2F, 0x00), "COMMANDS CLEARED BY ANOTHER INITIATOR";
    COMMANDS_CLEARED_BY_POWER_LOSS_NOTIFICATION = (0x2F, 0x01),
        "COMMANDS CLEARED BY POWER LOSS NOTIFICATION";
    COMMANDS_CLEARED_BY_DEVICE_SERVER = (0x2F, 0x02), "COMMANDS CLEARED BY DEVICE SERVER";
    MEDIUM_FORMAT_CORRUPTED = (0x31, 0x00), "MEDIUM FORMAT CORRUPTED";
    SANITIZE_COMMAND_FAILED = (0x31, 0x03), "SANITIZE COMMAND FAILED";
    THIN_PROVISIONING_SOFT_THRESHOLD_REACHED = (0x38, 0x07),
        "THIN PROVISIONING SOFT THRESHOLD REACHED";
    SAVING_PARAMETERS_NOT_SUPPORTED = (0x39, 0x00), "SAVING PARAMETERS NOT SUPPORTED";
    MEDIUM_NOT_PRESENT = (0x3A, 0x00), "MEDIUM NOT PRESENT";
    LOGICAL_UNIT_HAS_NOT_SELF_CONFIGURED_YET = (0x3E, 0x00),
        "LOGICAL UNIT HAS NOT SELF-CONFIGURED YET";
    LOGICAL_UNIT_FAILURE = (0x3E, 0x01), "LOGICAL UNIT FAILURE";
    TARGET_OPERATING_CONDITIONS_HAVE_CHANGED = (0x3F, 0x00),
        "TARGET OPERATING CONDITIONS HAVE CHANGED";
    MICROCODE_HAS_BEEN_CHANGED = (0x3F, 0x01), "MICROCODE HAS BEEN CHANGED";
    CHANGED_OPERATING_DEFINITION = (0x3F, 0x02), "CHANGED OPERATING DEFINITION";
    INQUIRY_DATA_HAS_CHANGED = (0x3F, 0x03), "INQUIRY DATA HAS CHANGED";
    REPORTED_LUNS_DATA_HAS_CHANGED = (0x3F, 0x0E), "REPORTED LUNS DATA HAS CHANGED";
    INTERNAL_TARGET_FAILURE = (0x44, 0x00), "INTERNAL TARGET FAILURE";
    PROTOCOL_SERVICE_CRC_ERROR = (0x47, 0x05), "PROTOCOL SERVICE CRC ERROR";
    INITIATOR_DETECTED_ERROR_MESSAGE_RECEIVED = (0x48, 0x00),
        "INITIATOR DETECTED ERROR MESSAGE RECEIVED";
    INVALID_MESSAGE_ERROR = (0x49, 0x00), "INVALID MESSAGE ERROR";
    COMMAND_PHASE_ERROR = (0x4A, 0x00), "COMMAND PHASE ERROR";
    DATA_PHASE_ERROR = (0x4B, 0x00), "DATA PHASE ERROR";
    TOO_MUCH_WRITE_DATA = (0x4B, 0x02), "TOO MUCH WRITE DATA";
    OVERLAPPED_COMMANDS_ATTEMPTED = (0x4E, 0x00), "OVERLAPPED COMMANDS ATTEMPTED";
    MEDIUM_REMOVAL_PREVENTED = (0x53, 0x02), "MEDIUM REMOVAL PREVENTED";
    SYSTEM_RESOURCE_FAILURE = (0x55, 0x00), "SYSTEM RESOURCE FAILURE";
    INSUFFICIENT_RESOURCES = (0x55, 0x03), "INSUFFICIENT RESOURCES";
    INSUFFICIENT_REGISTRATION_RESOURCES = (0x55, 0x04), "INSUFFICIENT REGISTRATION RESOURCES";
    INSUFFICIENT_ACCESS_CONTROL_RESOURCES = (0x55, 0x05), "INSUFFICIENT ACCESS CONTROL RESOURCES";
    FAILURE_PREDICTION_THRESHOLD_EXCEEDED = (0x5D, 0x00), "FAILURE PREDICTION THRESHOLD EXCEEDED";
    LOW_POWER_CONDITION_ON = (0x5E, 0x00), "LOW POWER CONDITION ON";
    SET_TARGET_PORT_GROUPS_COMMAND_FAILED = (0x67, 0x0A), "SET TARGET PORT GROUPS COMMAND FAILED";
    LOGICAL_UNIT_NOT_CONFIGURED = (0x68, 0x00), "LOGICAL UNIT NOT CONFIGURED";
}

impl fmt::Display for ScsiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "STATUS {:02X}h", self.0),
        }
    }
}

impl fmt::Debug for ScsiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScsiStatus({:#04x} {self})", self.0)
    }
}

impl fmt::Display for SenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "SENSE KEY {:X}h", self.0),
        }
    }
}

impl fmt::Debug for SenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SenseKey({:#x} {self})", self.0)
    }
}

impl fmt::Display for Asc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "ASC {:02X}h ASCQ {:02X}h", self.asc, self.ascq),
        }
    }
}

impl fmt::Debug for Asc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Asc({:02X}/{:02X} {self})", self.asc, self.ascq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_values() {
        let all = [
            (ScsiStatus::GOOD, 0x00),
            (ScsiStatus::CHECK_CONDITION, 0x02),
            (ScsiStatus::CONDITION_MET, 0x04),
            (ScsiStatus::BUSY, 0x08),
            (ScsiStatus::RESERVATION_CONFLICT, 0x18),
            (ScsiStatus::TASK_SET_FULL, 0x28),
            (ScsiStatus::ACA_ACTIVE, 0x30),
            (ScsiStatus::TASK_ABORTED, 0x40),
        ];
        for (s, v) in all {
            assert_eq!(s.0, v);
            assert!(s.name().is_some());
        }
        assert!(ScsiStatus::CHECK_CONDITION.has_sense());
        assert!(!ScsiStatus::GOOD.has_sense());
        assert_eq!(ScsiStatus(0x22).to_string(), "STATUS 22h");
        assert_eq!(format!("{:?}", ScsiStatus::BUSY), "ScsiStatus(0x08 BUSY)");
    }

    #[test]
    fn sense_keys() {
        assert_eq!(SenseKey::ILLEGAL_REQUEST.0, 5);
        assert_eq!(SenseKey::UNIT_ATTENTION.0, 6);
        assert_eq!(SenseKey::MISCOMPARE.0, 0xE);
        assert_eq!(SenseKey::COPY_ABORTED.to_string(), "COPY ABORTED");
        assert_eq!(SenseKey(0xC).to_string(), "SENSE KEY Ch");
    }

    #[test]
    fn asc_table_is_sorted_and_unique() {
        for w in ASC_TABLE.windows(2) {
            assert!(w[0].0 < w[1].0, "{:?} !< {:?}", w[0].0, w[1].0);
        }
    }

    #[test]
    fn asc_values_from_spc4() {
        let expect = [
            (Asc::INVALID_COMMAND_OPERATION_CODE, 0x20, 0x00),
            (Asc::INVALID_FIELD_IN_CDB, 0x24, 0x00),
            (Asc::INVALID_FIELD_IN_PARAMETER_LIST, 0x26, 0x00),
            (Asc::PARAMETER_LIST_LENGTH_ERROR, 0x1A, 0x00),
            (Asc::LBA_OUT_OF_RANGE, 0x21, 0x00),
            (Asc::LOGICAL_UNIT_NOT_SUPPORTED, 0x25, 0x00),
            (Asc::LU_NOT_READY_CAUSE_NOT_REPORTABLE, 0x04, 0x00),
            (Asc::LU_NOT_READY_BECOMING_READY, 0x04, 0x01),
            (Asc::LU_NOT_READY_MANUAL_INTERVENTION_REQUIRED, 0x04, 0x03),
            (Asc::LU_NOT_READY_OFFLINE, 0x04, 0x12),
            (
                Asc::LU_NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY_STATE,
                0x04,
                0x0B,
            ),
            (Asc::LU_NOT_READY_SANITIZE_IN_PROGRESS, 0x04, 0x1B),
            (Asc::WRITE_PROTECTED, 0x27, 0x00),
            (Asc::MISCOMPARE_DURING_VERIFY_OPERATION, 0x1D, 0x00),
            (Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET_OCCURRED, 0x29, 0x00),
            (Asc::REPORTED_LUNS_DATA_HAS_CHANGED, 0x3F, 0x0E),
            (Asc::CAPACITY_DATA_HAS_CHANGED, 0x2A, 0x09),
            (Asc::MODE_PARAMETERS_CHANGED, 0x2A, 0x01),
            (Asc::RESERVATIONS_PREEMPTED, 0x2A, 0x03),
            (Asc::RESERVATIONS_RELEASED, 0x2A, 0x04),
            (Asc::REGISTRATIONS_PREEMPTED, 0x2A, 0x05),
            (Asc::ASYMMETRIC_ACCESS_STATE_CHANGED, 0x2A, 0x06),
            (Asc::COMMANDS_CLEARED_BY_ANOTHER_INITIATOR, 0x2F, 0x00),
            (Asc::INSUFFICIENT_REGISTRATION_RESOURCES, 0x55, 0x04),
            (Asc::SAVING_PARAMETERS_NOT_SUPPORTED, 0x39, 0x00),
            (Asc::INTERNAL_TARGET_FAILURE, 0x44, 0x00),
            (Asc::UNRECOVERED_READ_ERROR, 0x11, 0x00),
            (Asc::WRITE_ERROR, 0x0C, 0x00),
            (Asc::INITIATOR_DETECTED_ERROR_MESSAGE_RECEIVED, 0x48, 0x00),
            (Asc::INVALID_MESSAGE_ERROR, 0x49, 0x00),
            (Asc::MEDIUM_NOT_PRESENT, 0x3A, 0x00),
            (Asc::COPY_TARGET_DEVICE_NOT_REACHABLE, 0x0D, 0x02),
        ];
        for (a, asc, ascq) in expect {
            assert_eq!((a.asc, a.ascq), (asc, ascq), "{a:?}");
            assert!(a.name().is_some());
        }
        assert_eq!(
            Asc::INVALID_FIELD_IN_CDB.to_string(),
            "INVALID FIELD IN CDB"
        );
        assert_eq!(
            format!("{:?}", Asc::WRITE_PROTECTED),
            "Asc(27/00 WRITE PROTECTED)"
        );
    }
}
