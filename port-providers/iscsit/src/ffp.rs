//! Full feature phase rules that need no I/O: the session's CmdSN window, the
//! iSCSI ⇄ SAM task-management code maps and the SCSI Response layout.
//!
//! The runtime (`runtime`) calls these; the tests pin the exact PDU fields.

use idm::pdu::{
    DataInStatus, ScsiResponse, ScsiResponseCode, TargetSn, TaskAttr, TmfFunction, TmfResponse,
};
use idm::transport::datamover::residual;
use plugins_sdk::abi::task_attr;
use plugins_sdk::{TmFunction, TmResponse};

/// Serial number arithmetic (RFC 1982, 32 bits): `a < b`.
pub fn sn_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

/// Serial number arithmetic: `a <= b`.
pub fn sn_le(a: u32, b: u32) -> bool {
    a == b || sn_lt(a, b)
}

/// What to do with a received command PDU (RFC 7143 §4.2.2.1, §3.2.2.1 of RFC 3720).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Deliver it now (in order, or immediate).
    Now,
    /// In the window but ahead of a gap: keep it until the gap is filled.
    Hold,
    /// Outside the window (a duplicate, or beyond MaxCmdSN): silently ignore it.
    Ignore,
    /// Immediate, but the session has as many immediate commands outstanding as it may:
    /// Reject with reason 0x06 (too many immediate commands).
    TooManyImmediate,
}

/// The session's command window: ExpCmdSN and MaxCmdSN, and the immediate commands
/// outstanding beside it.
///
/// A command takes a slot when it is delivered ([`CmdWindow::advance`]) and gives it
/// back when it is done ([`CmdWindow::release`]): MaxCmdSN advances then, not on
/// delivery, so a session never has more than `depth` commands outstanding however
/// fast it sends. A slot given back while the session is short of buffer memory is
/// *owed* instead and reopened later ([`CmdWindow::reopen`]): the initiator sees the
/// window shrink and sends less (backpressure), instead of the target allocating on its
/// word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdWindow {
    exp: u32,
    max: u32,
    depth: u32,
    owed: u32,
    immediate: u32,
    max_immediate: u32,
}

impl CmdWindow {
    /// A window starting at `exp_cmd_sn` (the leading login's CmdSN) admitting `depth`
    /// commands and `max_immediate` immediate ones.
    pub fn new(exp_cmd_sn: u32, depth: u32, max_immediate: u32) -> Self {
        let depth = depth.max(1);
        Self {
            exp: exp_cmd_sn,
            max: exp_cmd_sn.wrapping_add(depth - 1),
            depth,
            owed: 0,
            immediate: 0,
            max_immediate: max_immediate.max(1),
        }
    }

    /// ExpCmdSN.
    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp
    }

    /// MaxCmdSN (ExpCmdSN − 1 when the window is closed).
    pub fn max_cmd_sn(&self) -> u32 {
        self.max
    }

    /// Slots the initiator may use now: MaxCmdSN − ExpCmdSN + 1.
    pub fn open(&self) -> u32 {
        self.max.wrapping_sub(self.exp).wrapping_add(1)
    }

    /// Commands holding a slot (delivered or held, not yet done).
    pub fn outstanding(&self) -> u32 {
        self.depth.saturating_sub(self.open() + self.owed)
    }

    /// Slots given back under buffer pressure and not reopened yet.
    pub fn owed(&self) -> u32 {
        self.owed
    }

    /// Immediate commands outstanding.
    pub fn immediate(&self) -> u32 {
        self.immediate
    }

    /// Sequence numbers for a response: `stat_sn` and the window.
    pub fn target_sn(&self, stat_sn: u32) -> TargetSn {
        TargetSn {
            stat_sn,
            exp_cmd_sn: self.exp,
            max_cmd_sn: self.max,
        }
    }

    /// Classifies a PDU with `cmd_sn`. An immediate PDU is delivered at once, does not
    /// move the window and counts against the immediate cap until
    /// [`CmdWindow::release_immediate`].
    pub fn admit(&mut self, cmd_sn: u32, immediate: bool) -> Admit {
        if immediate {
            if self.immediate >= self.max_immediate {
                return Admit::TooManyImmediate;
            }
            self.immediate += 1;
            return Admit::Now;
        }
        if cmd_sn == self.exp && self.open() > 0 && self.open() <= self.depth {
            Admit::Now
        } else if sn_lt(self.exp, cmd_sn) && sn_le(cmd_sn, self.max) {
            Admit::Hold
        } else {
            Admit::Ignore
        }
    }

    /// A non-immediate PDU with CmdSN = ExpCmdSN was delivered: it takes its slot.
    pub fn advance(&mut self) {
        self.exp = self.exp.wrapping_add(1);
    }

    /// A delivered command is done. With `reopen` its slot opens again at once
    /// (MaxCmdSN + 1); otherwise it is owed until [`CmdWindow::reopen`].
    pub fn release(&mut self, reopen: bool) {
        if self.outstanding() == 0 {
            return;
        }
        if reopen {
            self.max = self.max.wrapping_add(1);
        } else {
            self.owed += 1;
        }
    }

    /// Opens the owed slots; true when MaxCmdSN moved.
    pub fn reopen(&mut self) -> bool {
        let moved = self.owed > 0;
        self.max = self.max.wrapping_add(self.owed);
        self.owed = 0;
        moved
    }

    /// An immediate command is done.
    pub fn release_immediate(&mut self) {
        self.immediate = self.immediate.saturating_sub(1);
    }
}

/// The SAM function of an iSCSI TMF request; `Err` carries the response the target
/// gives itself to functions it does not forward (RFC 7143 §11.5.1, ERL 0).
pub fn tm_function(f: TmfFunction) -> Result<TmFunction, TmfResponse> {
    Ok(match f {
        TmfFunction::AbortTask => TmFunction::ABORT_TASK,
        TmfFunction::AbortTaskSet => TmFunction::ABORT_TASK_SET,
        TmfFunction::ClearAca => TmFunction::CLEAR_ACA,
        TmfFunction::ClearTaskSet => TmFunction::CLEAR_TASK_SET,
        TmfFunction::LogicalUnitReset => TmFunction::LUN_RESET,
        TmfFunction::TargetWarmReset => TmFunction::TARGET_RESET,
        TmfFunction::TargetColdReset => TmFunction::TARGET_COLD_RESET,
        TmfFunction::QueryTask => TmFunction::QUERY_TASK,
        TmfFunction::ItNexusReset => TmFunction::IT_NEXUS_RESET,
        // Allegiance reassignment needs ErrorRecoveryLevel 2.
        TmfFunction::TaskReassign => return Err(TmfResponse::ReassignmentNotSupported),
        _ => return Err(TmfResponse::NotSupported),
    })
}

/// The iSCSI response code of a SAM task-management response.
pub fn tmf_response(r: TmResponse, f: TmFunction) -> TmfResponse {
    match r {
        TmResponse::COMPLETE => TmfResponse::FunctionComplete,
        // QUERY TASK: the task exists (RFC 7144 §4.4).
        TmResponse::SUCCEEDED if f == TmFunction::QUERY_TASK => TmfResponse::FunctionSucceeded,
        TmResponse::SUCCEEDED => TmfResponse::FunctionComplete,
        TmResponse::TASK_DOES_NOT_EXIST => TmfResponse::TaskDoesNotExist,
        TmResponse::LUN_DOES_NOT_EXIST => TmfResponse::LunDoesNotExist,
        TmResponse::NOT_SUPPORTED => TmfResponse::NotSupported,
        _ => TmfResponse::Rejected,
    }
}

/// The SAM task attribute of an iSCSI ATTR field.
pub fn task_attribute(a: TaskAttr) -> u8 {
    match a {
        TaskAttr::Untagged => task_attr::UNTAGGED,
        TaskAttr::Simple => task_attr::SIMPLE,
        TaskAttr::Ordered => task_attr::ORDERED,
        TaskAttr::HeadOfQueue => task_attr::HEAD_OF_QUEUE,
        TaskAttr::Aca => task_attr::ACA,
        _ => task_attr::SIMPLE,
    }
}

/// Status of a finished command, as the port computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdStatus {
    /// SCSI status byte.
    pub status: u8,
    /// O bit.
    pub overflow: bool,
    /// U bit.
    pub underflow: bool,
    /// Residual Count.
    pub residual: u32,
}

impl CmdStatus {
    /// Status and residual of a command with Expected Data Transfer Length `edtl`, whose
    /// CDB asks for `wanted` bytes (0 when unknown) and which moved `moved` bytes.
    pub fn new(status: u8, edtl: u32, wanted: u64, moved: u64) -> Self {
        let (overflow, underflow, residual) = residual(edtl, wanted, moved);
        Self {
            status,
            overflow,
            underflow,
            residual,
        }
    }

    /// The status part of a final Data-In (phase collapse) with StatSN `stat_sn`.
    pub fn data_in_status(&self, stat_sn: u32) -> DataInStatus {
        DataInStatus {
            status: self.status,
            stat_sn,
            overflow: self.overflow,
            underflow: self.underflow,
            residual_count: self.residual,
        }
    }

    /// The SCSI Response header for command `itt` after `data_sn` Data-In PDUs.
    pub fn response(&self, itt: u32, sn: TargetSn, data_sn: u32) -> ScsiResponse {
        ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: false,
            overflow: self.overflow,
            underflow: self.underflow,
            response: ScsiResponseCode::Completed,
            status: self.status,
            itt,
            snack_tag: 0,
            sn,
            exp_data_sn: data_sn,
            bidi_read_residual_count: 0,
            residual_count: self.residual,
        }
    }
}

/// Writes the SCSI Response data segment for `sense` into `out`: SenseLength (2 bytes,
/// big endian) then the sense data (RFC 7143 §11.4.7). Empty without sense.
pub fn sense_segment(sense: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if sense.is_empty() {
        return;
    }
    let n = sense.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&sense[..n]);
}

/// Fixed-format sense data (SPC-4 §4.5.3): ABORTED COMMAND with `asc`/`ascq` (the DATA
/// PHASE ERROR family, 4Bh, for broken Data-Out sequences).
pub fn aborted_command_sense(asc: u8, ascq: u8) -> [u8; 18] {
    let mut s = [0u8; 18];
    s[0] = 0x70; // current error, fixed format
    s[2] = 0x0b; // ABORTED COMMAND
    s[7] = 10; // additional sense length
    s[12] = asc;
    s[13] = ascq;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use idm::pdu::Pdu;

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(sn_lt(1, 2));
        assert!(sn_lt(0xffff_fff0, 5));
        assert!(!sn_lt(5, 0xffff_fff0));
        assert!(sn_le(7, 7));
    }

    #[test]
    fn window_admits_in_order_holds_gaps_ignores_outside() {
        let mut w = CmdWindow::new(10, 4, 2);
        assert_eq!((w.exp_cmd_sn(), w.max_cmd_sn()), (10, 13));
        assert_eq!(w.admit(10, false), Admit::Now);
        assert_eq!(w.admit(11, false), Admit::Hold);
        assert_eq!(w.admit(13, false), Admit::Hold);
        assert_eq!(w.admit(14, false), Admit::Ignore, "beyond MaxCmdSN");
        assert_eq!(w.admit(9, false), Admit::Ignore, "below ExpCmdSN");
        assert_eq!(w.admit(0, false), Admit::Ignore);
        assert_eq!(w.admit(99, true), Admit::Now, "immediate bypasses");
        w.advance();
        assert_eq!(w.admit(11, false), Admit::Now);
        assert_eq!(
            w.target_sn(3),
            TargetSn {
                stat_sn: 3,
                exp_cmd_sn: 11,
                max_cmd_sn: 13
            },
            "MaxCmdSN does not move on delivery"
        );
        w.release(true);
        assert_eq!(w.max_cmd_sn(), 14, "it moves when the command is done");
        let mut w = CmdWindow::new(u32::MAX, 4, 1);
        assert_eq!(w.admit(1, false), Admit::Hold);
        w.advance();
        assert_eq!(w.exp_cmd_sn(), 0);
        assert_eq!(w.max_cmd_sn(), 2);
        w.release(true);
        assert_eq!(w.max_cmd_sn(), 3);
    }

    #[test]
    fn window_closes_when_every_slot_is_taken_and_reopens_on_release() {
        let mut w = CmdWindow::new(1, 2, 1);
        for sn in 1..=2 {
            assert_eq!(w.admit(sn, false), Admit::Now);
            w.advance();
        }
        assert_eq!((w.open(), w.outstanding()), (0, 2));
        assert_eq!(
            w.max_cmd_sn(),
            w.exp_cmd_sn().wrapping_sub(1),
            "closed: Max = Exp - 1"
        );
        assert_eq!(w.admit(3, false), Admit::Ignore, "no slot left");
        assert_eq!(w.admit(4, false), Admit::Ignore);
        w.release(true);
        assert_eq!(w.admit(3, false), Admit::Now);
        w.advance();
        // Under pressure a slot is owed, not opened.
        w.release(false);
        w.release(false);
        assert_eq!((w.open(), w.owed(), w.outstanding()), (0, 2, 0));
        assert_eq!(w.admit(4, false), Admit::Ignore);
        assert!(w.reopen());
        assert!(!w.reopen());
        assert_eq!((w.open(), w.owed(), w.max_cmd_sn()), (2, 0, 5));
        // A release with nothing outstanding never opens beyond the depth.
        w.release(true);
        assert_eq!(w.open(), 2);
    }

    #[test]
    fn immediate_commands_are_capped() {
        let mut w = CmdWindow::new(7, 8, 2);
        assert_eq!(w.admit(7, true), Admit::Now);
        assert_eq!(w.admit(7, true), Admit::Now);
        assert_eq!(w.admit(7, true), Admit::TooManyImmediate);
        assert_eq!(w.immediate(), 2);
        w.release_immediate();
        assert_eq!(w.admit(7, true), Admit::Now);
        assert_eq!(
            (w.exp_cmd_sn(), w.max_cmd_sn()),
            (7, 14),
            "the window is untouched"
        );
    }

    #[test]
    fn tmf_codes() {
        assert_eq!(
            tm_function(TmfFunction::AbortTask),
            Ok(TmFunction::ABORT_TASK)
        );
        assert_eq!(
            tm_function(TmfFunction::LogicalUnitReset),
            Ok(TmFunction::LUN_RESET)
        );
        assert_eq!(
            tm_function(TmfFunction::TargetWarmReset),
            Ok(TmFunction::TARGET_RESET)
        );
        assert_eq!(
            tm_function(TmfFunction::ItNexusReset),
            Ok(TmFunction::IT_NEXUS_RESET)
        );
        assert_eq!(
            tm_function(TmfFunction::QueryTask),
            Ok(TmFunction::QUERY_TASK)
        );
        assert_eq!(
            tm_function(TmfFunction::TaskReassign),
            Err(TmfResponse::ReassignmentNotSupported)
        );
        assert_eq!(
            tm_function(TmfFunction::QueryTaskSet),
            Err(TmfResponse::NotSupported)
        );
        let code = |r, f| u8::from(tmf_response(r, f));
        let abort = TmFunction::ABORT_TASK;
        assert_eq!(code(TmResponse::COMPLETE, abort), 0);
        assert_eq!(code(TmResponse::TASK_DOES_NOT_EXIST, abort), 1);
        assert_eq!(code(TmResponse::LUN_DOES_NOT_EXIST, abort), 2);
        assert_eq!(code(TmResponse::NOT_SUPPORTED, abort), 5);
        assert_eq!(code(TmResponse::REJECTED, abort), 255);
        assert_eq!(code(TmResponse::SUCCEEDED, TmFunction::QUERY_TASK), 7);
    }

    #[test]
    fn scsi_response_fields() {
        // READ of 1 block (512) with EDTL 10000: underflow 9488, CHECK CONDITION with sense.
        let st = CmdStatus::new(2, 10_000, 512, 512);
        assert_eq!(
            (st.overflow, st.underflow, st.residual),
            (false, true, 9488)
        );
        let sn = TargetSn {
            stat_sn: 40,
            exp_cmd_sn: 7,
            max_cmd_sn: 70,
        };
        let b = Pdu::ScsiResponse(st.response(0x1234, sn, 3)).to_bytes();
        assert_eq!(b[0], 0x21);
        assert_eq!(b[1], 0x80 | 0x02, "F and U");
        assert_eq!((b[2], b[3]), (0, 2), "completed, CHECK CONDITION");
        assert_eq!(&b[16..20], &0x1234u32.to_be_bytes());
        assert_eq!(&b[24..28], &40u32.to_be_bytes());
        assert_eq!(&b[36..40], &3u32.to_be_bytes(), "ExpDataSN");
        assert_eq!(&b[44..48], &9488u32.to_be_bytes());
        // WRITE of 2 blocks with EDTL of one: overflow.
        let st = CmdStatus::new(0, 512, 1024, 512);
        assert_eq!((st.overflow, st.underflow, st.residual), (true, false, 512));
        let b = Pdu::ScsiResponse(st.response(1, sn, 0)).to_bytes();
        assert_eq!(b[1], 0x80 | 0x04, "F and O");
        let mut seg = Vec::new();
        sense_segment(&[0x70, 0, 5, 0, 0, 0, 0, 10], &mut seg);
        assert_eq!(&seg[..2], &[0, 8]);
        assert_eq!(seg.len(), 10);
        sense_segment(&[], &mut seg);
        assert!(seg.is_empty());
        let d = CmdStatus::new(0, 4096, 4096, 4096).data_in_status(9);
        assert_eq!(
            (d.stat_sn, d.underflow, d.overflow, d.residual_count),
            (9, false, false, 0)
        );
    }
}
