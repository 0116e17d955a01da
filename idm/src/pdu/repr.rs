//! Validated representations of every RFC 7143 PDU header (smoltcp's `Repr` layer).
//!
//! `parse` reads a [`Bhs`] view and checks the opcode-specific rules; `emit` writes
//! every byte of the header except TotalAHSLength and DataSegmentLength (bytes 4..8),
//! which are framing and are set by [`TxFrame`](super::TxFrame) from the actual
//! AHS and data. Reserved fields are written as zero and ignored on receipt.

use super::bhs::{get_u16, get_u32, put_u16, put_u32, Bhs, BHS_LEN};
use super::codes::*;
use super::PduError;

/// Starts a header: zeroes every byte but 4..8 and writes byte 0 and 1.
fn start(buf: &mut [u8; BHS_LEN], op: Opcode, immediate: bool, flags: u8) {
    for (i, b) in buf.iter_mut().enumerate() {
        if !(4..8).contains(&i) {
            *b = 0;
        }
    }
    buf[0] = op as u8 | if immediate { 0x40 } else { 0 };
    buf[1] = flags;
}

fn put_lun(buf: &mut [u8; BHS_LEN], lun: u64) {
    if let Some(dst) = buf.get_mut(8..16) {
        dst.copy_from_slice(&lun.to_be_bytes());
    }
}

fn bit(flags: u8, mask: u8) -> bool {
    flags & mask != 0
}

fn flag(on: bool, mask: u8) -> u8 {
    if on {
        mask
    } else {
        0
    }
}

fn expect_opcode<T: AsRef<[u8]>>(bhs: &Bhs<T>, op: Opcode) -> Result<&[u8; BHS_LEN], PduError> {
    if bhs.opcode_raw() != op as u8 {
        return Err(PduError::BadOpcode(bhs.opcode_raw()));
    }
    Ok(bhs.as_bytes())
}

fn no_data<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<(), PduError> {
    if bhs.data_segment_len() != 0 {
        return Err(PduError::InvalidField("DataSegmentLength must be 0"));
    }
    Ok(())
}

fn reserved_itt<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<(), PduError> {
    if bhs.itt() != RESERVED_TAG {
        return Err(PduError::InvalidField("ITT must be 0xffffffff"));
    }
    Ok(())
}

fn isid(h: &[u8; BHS_LEN]) -> Isid {
    let mut v = [0u8; 6];
    if let Some(src) = h.get(8..14) {
        v.copy_from_slice(src);
    }
    Isid(v)
}

fn put_isid(buf: &mut [u8; BHS_LEN], isid: Isid) {
    if let Some(dst) = buf.get_mut(8..14) {
        dst.copy_from_slice(&isid.0);
    }
}

/// Decodes the T/C/CSG/NSG bits shared by Login Request and Response.
fn login_flags(flags: u8) -> Result<(bool, bool, Stage, Stage), PduError> {
    let transit = bit(flags, 0x80);
    let cont = bit(flags, 0x40);
    if transit && cont {
        return Err(PduError::Protocol("login T and C bits both set"));
    }
    let csg = Stage::from_bits(flags >> 2).ok_or(PduError::InvalidField("CSG"))?;
    if csg == Stage::FullFeaturePhase {
        return Err(PduError::InvalidField("CSG"));
    }
    // NSG is only meaningful with T=1; otherwise it is reserved.
    let nsg = match Stage::from_bits(flags) {
        Some(s) if transit => {
            if s <= csg {
                return Err(PduError::Protocol("login NSG does not advance"));
            }
            s
        }
        None if transit => return Err(PduError::InvalidField("NSG")),
        _ => csg,
    };
    Ok((transit, cont, csg, nsg))
}

fn login_flags_byte(transit: bool, cont: bool, csg: Stage, nsg: Stage) -> u8 {
    let nsg = if transit { nsg as u8 } else { 0 };
    flag(transit, 0x80) | flag(cont, 0x40) | ((csg as u8) << 2) | nsg
}

/// NOP-Out (0x00, RFC 7143 §11.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NopOut {
    /// Immediate delivery.
    pub immediate: bool,
    /// LUN (echoed from a NOP-In, else reserved).
    pub lun: u64,
    /// ITT; 0xffffffff when answering a NOP-In (no response wanted).
    pub itt: u32,
    /// TTT copied from the NOP-In being answered, else 0xffffffff.
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

impl NopOut {
    /// Parses and validates a NOP-Out header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::NopOut)?;
        if !bhs.final_bit() {
            return Err(PduError::InvalidField("NOP-Out F bit must be 1"));
        }
        if bhs.itt() == RESERVED_TAG && !bhs.immediate() {
            return Err(PduError::Protocol(
                "NOP-Out with ITT 0xffffffff must be immediate",
            ));
        }
        Ok(Self {
            immediate: bhs.immediate(),
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: get_u32(h, 20),
            cmd_sn: get_u32(h, 24),
            exp_stat_sn: get_u32(h, 28),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        start(buf, Opcode::NopOut, self.immediate, 0x80);
        put_lun(buf, self.lun);
        put_u32(buf, 16, self.itt);
        put_u32(buf, 20, self.ttt);
        put_u32(buf, 24, self.cmd_sn);
        put_u32(buf, 28, self.exp_stat_sn);
    }
}

/// SCSI Command (0x01, RFC 7143 §11.3).
///
/// CDBs longer than 16 bytes carry bytes 16.. in the extended CDB AHS
/// (see [`Cdb`](super::Cdb) and [`AhsSet`](super::AhsSet)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiCommand {
    /// Immediate delivery.
    pub immediate: bool,
    /// F: no unsolicited Data-Out PDUs follow.
    pub final_bit: bool,
    /// R: data will be read from the target.
    pub read: bool,
    /// W: data will be written to the target.
    pub write: bool,
    /// Task attribute.
    pub attr: TaskAttr,
    /// LUN.
    pub lun: u64,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Expected Data Transfer Length.
    pub expected_data_transfer_length: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// First 16 CDB bytes (zero padded).
    pub cdb: [u8; 16],
}

impl ScsiCommand {
    /// Parses and validates a SCSI Command header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::ScsiCommand)?;
        let f = bhs.flags();
        let (read, write, final_bit) = (bit(f, 0x40), bit(f, 0x20), bit(f, 0x80));
        if !final_bit && !write {
            return Err(PduError::InvalidField("F bit clear on a command without W"));
        }
        if bhs.itt() == RESERVED_TAG {
            return Err(PduError::InvalidField("ITT 0xffffffff is reserved"));
        }
        Ok(Self {
            immediate: bhs.immediate(),
            final_bit,
            read,
            write,
            attr: TaskAttr::from(f & 7),
            lun: bhs.lun(),
            itt: bhs.itt(),
            expected_data_transfer_length: get_u32(h, 20),
            cmd_sn: get_u32(h, 24),
            exp_stat_sn: get_u32(h, 28),
            cdb: bhs.cdb(),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        let flags = flag(self.final_bit, 0x80)
            | flag(self.read, 0x40)
            | flag(self.write, 0x20)
            | (u8::from(self.attr) & 7);
        start(buf, Opcode::ScsiCommand, self.immediate, flags);
        put_lun(buf, self.lun);
        put_u32(buf, 16, self.itt);
        put_u32(buf, 20, self.expected_data_transfer_length);
        put_u32(buf, 24, self.cmd_sn);
        put_u32(buf, 28, self.exp_stat_sn);
        if let Some(dst) = buf.get_mut(32..48) {
            dst.copy_from_slice(&self.cdb);
        }
    }
}

/// Task Management Function Request (0x02, RFC 7143 §11.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    /// Immediate delivery.
    pub immediate: bool,
    /// Function code.
    pub function: TmfFunction,
    /// LUN (for LU-scoped functions).
    pub lun: u64,
    /// ITT of this request.
    pub itt: u32,
    /// ITT of the task to act on (ABORT TASK, QUERY TASK), else 0xffffffff.
    pub referenced_task_tag: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// RefCmdSN.
    pub ref_cmd_sn: u32,
    /// ExpDataSN (TASK REASSIGN).
    pub exp_data_sn: u32,
}

impl TaskMgmtRequest {
    /// Parses and validates a TMF Request header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::TaskMgmtRequest)?;
        no_data(bhs)?;
        if !bhs.final_bit() {
            return Err(PduError::InvalidField("TMF F bit must be 1"));
        }
        Ok(Self {
            immediate: bhs.immediate(),
            function: TmfFunction::from(bhs.flags() & 0x7f),
            lun: bhs.lun(),
            itt: bhs.itt(),
            referenced_task_tag: get_u32(h, 20),
            cmd_sn: get_u32(h, 24),
            exp_stat_sn: get_u32(h, 28),
            ref_cmd_sn: get_u32(h, 32),
            exp_data_sn: get_u32(h, 36),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        let flags = 0x80 | (u8::from(self.function) & 0x7f);
        start(buf, Opcode::TaskMgmtRequest, self.immediate, flags);
        put_lun(buf, self.lun);
        put_u32(buf, 16, self.itt);
        put_u32(buf, 20, self.referenced_task_tag);
        put_u32(buf, 24, self.cmd_sn);
        put_u32(buf, 28, self.exp_stat_sn);
        put_u32(buf, 32, self.ref_cmd_sn);
        put_u32(buf, 36, self.exp_data_sn);
    }
}

/// Login Request (0x03, RFC 7143 §11.12). Always sent with the I bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRequest {
    /// T: transit to `nsg`.
    pub transit: bool,
    /// C: the text continues in the next PDU.
    pub cont: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage (equals `csg` when `transit` is false).
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-min.
    pub version_min: u8,
    /// ISID.
    pub isid: Isid,
    /// TSIH (0 for a new session).
    pub tsih: u16,
    /// ITT.
    pub itt: u32,
    /// Connection ID.
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN (or the last StatSN of the old connection when reinstating).
    pub exp_stat_sn: u32,
}

impl LoginRequest {
    /// Parses and validates a Login Request header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::LoginRequest)?;
        let (transit, cont, csg, nsg) = login_flags(bhs.flags())?;
        Ok(Self {
            transit,
            cont,
            csg,
            nsg,
            version_max: bhs.byte2(),
            version_min: bhs.byte3(),
            isid: isid(h),
            tsih: get_u16(h, 14),
            itt: bhs.itt(),
            cid: get_u16(h, 20),
            cmd_sn: get_u32(h, 24),
            exp_stat_sn: get_u32(h, 28),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        let flags = login_flags_byte(self.transit, self.cont, self.csg, self.nsg);
        start(buf, Opcode::LoginRequest, true, flags);
        buf[2] = self.version_max;
        buf[3] = self.version_min;
        put_isid(buf, self.isid);
        put_u16(buf, 14, self.tsih);
        put_u32(buf, 16, self.itt);
        put_u16(buf, 20, self.cid);
        put_u32(buf, 24, self.cmd_sn);
        put_u32(buf, 28, self.exp_stat_sn);
    }
}

/// Text Request (0x04, RFC 7143 §11.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRequest {
    /// Immediate delivery.
    pub immediate: bool,
    /// F: last PDU of the request.
    pub final_bit: bool,
    /// C: the text continues in the next PDU.
    pub cont: bool,
    /// LUN (reserved unless used by a key).
    pub lun: u64,
    /// ITT.
    pub itt: u32,
    /// TTT (0xffffffff for a new request, else copied from the Text Response).
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

fn text_flags(flags: u8) -> Result<(bool, bool), PduError> {
    let (f, c) = (bit(flags, 0x80), bit(flags, 0x40));
    if f && c {
        return Err(PduError::Protocol("text F and C bits both set"));
    }
    Ok((f, c))
}

impl TextRequest {
    /// Parses and validates a Text Request header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::TextRequest)?;
        let (final_bit, cont) = text_flags(bhs.flags())?;
        Ok(Self {
            immediate: bhs.immediate(),
            final_bit,
            cont,
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: get_u32(h, 20),
            cmd_sn: get_u32(h, 24),
            exp_stat_sn: get_u32(h, 28),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        let flags = flag(self.final_bit, 0x80) | flag(self.cont, 0x40);
        start(buf, Opcode::TextRequest, self.immediate, flags);
        put_lun(buf, self.lun);
        put_u32(buf, 16, self.itt);
        put_u32(buf, 20, self.ttt);
        put_u32(buf, 24, self.cmd_sn);
        put_u32(buf, 28, self.exp_stat_sn);
    }
}

/// SCSI Data-Out (0x05, RFC 7143 §11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOut {
    /// F: last PDU of the sequence.
    pub final_bit: bool,
    /// LUN.
    pub lun: u64,
    /// ITT of the command.
    pub itt: u32,
    /// TTT from the R2T, or 0xffffffff for unsolicited data.
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// DataSN within the sequence.
    pub data_sn: u32,
    /// Buffer Offset.
    pub buffer_offset: u32,
}

impl DataOut {
    /// Parses and validates a Data-Out header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::DataOut)?;
        Ok(Self {
            final_bit: bhs.final_bit(),
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: get_u32(h, 20),
            exp_stat_sn: get_u32(h, 28),
            data_sn: get_u32(h, 36),
            buffer_offset: get_u32(h, 40),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        start(buf, Opcode::DataOut, false, flag(self.final_bit, 0x80));
        put_lun(buf, self.lun);
        put_u32(buf, 16, self.itt);
        put_u32(buf, 20, self.ttt);
        put_u32(buf, 28, self.exp_stat_sn);
        put_u32(buf, 36, self.data_sn);
        put_u32(buf, 40, self.buffer_offset);
    }
}

/// Logout Request (0x06, RFC 7143 §11.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutRequest {
    /// Immediate delivery.
    pub immediate: bool,
    /// Reason code.
    pub reason: LogoutReason,
    /// ITT.
    pub itt: u32,
    /// CID of the connection to close (reserved for CloseSession).
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

impl LogoutRequest {
    /// Parses and validates a Logout Request header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::LogoutRequest)?;
        no_data(bhs)?;
        if !bhs.final_bit() {
            return Err(PduError::InvalidField("Logout F bit must be 1"));
        }
        Ok(Self {
            immediate: bhs.immediate(),
            reason: LogoutReason::from(bhs.flags() & 0x7f),
            itt: bhs.itt(),
            cid: get_u16(h, 20),
            cmd_sn: get_u32(h, 24),
            exp_stat_sn: get_u32(h, 28),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        let flags = 0x80 | (u8::from(self.reason) & 0x7f);
        start(buf, Opcode::LogoutRequest, self.immediate, flags);
        put_u32(buf, 16, self.itt);
        put_u16(buf, 20, self.cid);
        put_u32(buf, 24, self.cmd_sn);
        put_u32(buf, 28, self.exp_stat_sn);
    }
}

/// SNACK Request (0x10, RFC 7143 §11.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snack {
    /// SNACK type.
    pub snack_type: SnackType,
    /// LUN (DataACK).
    pub lun: u64,
    /// ITT (0xffffffff for status SNACKs).
    pub itt: u32,
    /// TTT (DataACK) or SNACK Tag (R-Data), else 0xffffffff.
    pub ttt_or_snack_tag: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// BegRun.
    pub beg_run: u32,
    /// RunLength.
    pub run_length: u32,
}

impl Snack {
    /// Parses and validates a SNACK header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::Snack)?;
        no_data(bhs)?;
        if !bhs.final_bit() {
            return Err(PduError::InvalidField("SNACK F bit must be 1"));
        }
        Ok(Self {
            snack_type: SnackType::from(bhs.flags() & 0x0f),
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt_or_snack_tag: get_u32(h, 20),
            exp_stat_sn: get_u32(h, 28),
            beg_run: get_u32(h, 40),
            run_length: get_u32(h, 44),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        let flags = 0x80 | (u8::from(self.snack_type) & 0x0f);
        start(buf, Opcode::Snack, false, flags);
        put_lun(buf, self.lun);
        put_u32(buf, 16, self.itt);
        put_u32(buf, 20, self.ttt_or_snack_tag);
        put_u32(buf, 28, self.exp_stat_sn);
        put_u32(buf, 40, self.beg_run);
        put_u32(buf, 44, self.run_length);
    }
}

/// The sequence numbers every target PDU carries at bytes 24..36.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetSn {
    /// StatSN (reserved in some PDUs, see each type).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
}

impl TargetSn {
    fn read(h: &[u8; BHS_LEN]) -> Self {
        Self {
            stat_sn: get_u32(h, 24),
            exp_cmd_sn: get_u32(h, 28),
            max_cmd_sn: get_u32(h, 32),
        }
    }

    fn write(&self, buf: &mut [u8; BHS_LEN]) {
        put_u32(buf, 24, self.stat_sn);
        put_u32(buf, 28, self.exp_cmd_sn);
        put_u32(buf, 32, self.max_cmd_sn);
    }
}

/// NOP-In (0x20, RFC 7143 §11.19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NopIn {
    /// LUN (with a ping TTT, else reserved).
    pub lun: u64,
    /// ITT of the NOP-Out answered, or 0xffffffff for a target ping.
    pub itt: u32,
    /// TTT: a valid tag asks for a NOP-Out answer, 0xffffffff otherwise.
    pub ttt: u32,
    /// StatSN / ExpCmdSN / MaxCmdSN.
    pub sn: TargetSn,
}

impl NopIn {
    /// Parses and validates a NOP-In header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::NopIn)?;
        Ok(Self {
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: get_u32(h, 20),
            sn: TargetSn::read(h),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        start(buf, Opcode::NopIn, false, 0x80);
        put_lun(buf, self.lun);
        put_u32(buf, 16, self.itt);
        put_u32(buf, 20, self.ttt);
        self.sn.write(buf);
    }
}

/// SCSI Response (0x21, RFC 7143 §11.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiResponse {
    /// o: bidirectional read residual overflow.
    pub bidi_overflow: bool,
    /// u: bidirectional read residual underflow.
    pub bidi_underflow: bool,
    /// O: residual overflow.
    pub overflow: bool,
    /// U: residual underflow.
    pub underflow: bool,
    /// iSCSI service response.
    pub response: ScsiResponseCode,
    /// SCSI status byte (valid when `response` is Completed).
    pub status: u8,
    /// ITT.
    pub itt: u32,
    /// SNACK Tag (0 unless answering an R-Data SNACK).
    pub snack_tag: u32,
    /// StatSN / ExpCmdSN / MaxCmdSN.
    pub sn: TargetSn,
    /// ExpDataSN (number of Data-In PDUs sent).
    pub exp_data_sn: u32,
    /// Bidirectional Read Residual Count.
    pub bidi_read_residual_count: u32,
    /// Residual Count.
    pub residual_count: u32,
}

impl ScsiResponse {
    /// Parses and validates a SCSI Response header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::ScsiResponse)?;
        let f = bhs.flags();
        let r = Self {
            bidi_overflow: bit(f, 0x10),
            bidi_underflow: bit(f, 0x08),
            overflow: bit(f, 0x04),
            underflow: bit(f, 0x02),
            response: ScsiResponseCode::from(bhs.byte2()),
            status: bhs.byte3(),
            itt: bhs.itt(),
            snack_tag: get_u32(h, 20),
            sn: TargetSn::read(h),
            exp_data_sn: get_u32(h, 36),
            bidi_read_residual_count: get_u32(h, 40),
            residual_count: get_u32(h, 44),
        };
        if (r.overflow && r.underflow) || (r.bidi_overflow && r.bidi_underflow) {
            return Err(PduError::InvalidField("SCSI Response O and U both set"));
        }
        Ok(r)
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        let flags = 0x80
            | flag(self.bidi_overflow, 0x10)
            | flag(self.bidi_underflow, 0x08)
            | flag(self.overflow, 0x04)
            | flag(self.underflow, 0x02);
        start(buf, Opcode::ScsiResponse, false, flags);
        buf[2] = self.response.into();
        buf[3] = self.status;
        put_u32(buf, 16, self.itt);
        put_u32(buf, 20, self.snack_tag);
        self.sn.write(buf);
        put_u32(buf, 36, self.exp_data_sn);
        put_u32(buf, 40, self.bidi_read_residual_count);
        put_u32(buf, 44, self.residual_count);
    }
}

/// Task Management Function Response (0x22, RFC 7143 §11.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    /// Response code.
    pub response: TmfResponse,
    /// ITT of the TMF request.
    pub itt: u32,
    /// StatSN / ExpCmdSN / MaxCmdSN.
    pub sn: TargetSn,
}

impl TaskMgmtResponse {
    /// Parses and validates a TMF Response header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::TaskMgmtResponse)?;
        no_data(bhs)?;
        Ok(Self {
            response: TmfResponse::from(bhs.byte2()),
            itt: bhs.itt(),
            sn: TargetSn::read(h),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        start(buf, Opcode::TaskMgmtResponse, false, 0x80);
        buf[2] = self.response.into();
        put_u32(buf, 16, self.itt);
        self.sn.write(buf);
    }
}

/// Login Response (0x23, RFC 7143 §11.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginResponse {
    /// T: transit to `nsg`.
    pub transit: bool,
    /// C: the text continues in the next PDU.
    pub cont: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage (equals `csg` when `transit` is false).
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-active.
    pub version_active: u8,
    /// ISID.
    pub isid: Isid,
    /// TSIH.
    pub tsih: u16,
    /// ITT of the Login Request.
    pub itt: u32,
    /// StatSN / ExpCmdSN / MaxCmdSN.
    pub sn: TargetSn,
    /// Status-Class and Status-Detail.
    pub status: LoginStatus,
}

impl LoginResponse {
    /// Parses and validates a Login Response header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::LoginResponse)?;
        let (transit, cont, csg, nsg) = login_flags(bhs.flags())?;
        Ok(Self {
            transit,
            cont,
            csg,
            nsg,
            version_max: bhs.byte2(),
            version_active: bhs.byte3(),
            isid: isid(h),
            tsih: get_u16(h, 14),
            itt: bhs.itt(),
            sn: TargetSn::read(h),
            status: LoginStatus::new(h[36], h[37]),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        let flags = login_flags_byte(self.transit, self.cont, self.csg, self.nsg);
        start(buf, Opcode::LoginResponse, false, flags);
        buf[2] = self.version_max;
        buf[3] = self.version_active;
        put_isid(buf, self.isid);
        put_u16(buf, 14, self.tsih);
        put_u32(buf, 16, self.itt);
        self.sn.write(buf);
        buf[36] = self.status.class;
        buf[37] = self.status.detail;
    }
}

/// Text Response (0x24, RFC 7143 §11.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextResponse {
    /// F: last PDU of the response.
    pub final_bit: bool,
    /// C: the text continues in the next PDU.
    pub cont: bool,
    /// LUN (reserved unless used by a key).
    pub lun: u64,
    /// ITT of the Text Request.
    pub itt: u32,
    /// TTT: 0xffffffff on the final response, else a tag to continue.
    pub ttt: u32,
    /// StatSN / ExpCmdSN / MaxCmdSN.
    pub sn: TargetSn,
}

impl TextResponse {
    /// Parses and validates a Text Response header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::TextResponse)?;
        let (final_bit, cont) = text_flags(bhs.flags())?;
        Ok(Self {
            final_bit,
            cont,
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: get_u32(h, 20),
            sn: TargetSn::read(h),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        let flags = flag(self.final_bit, 0x80) | flag(self.cont, 0x40);
        start(buf, Opcode::TextResponse, false, flags);
        put_lun(buf, self.lun);
        put_u32(buf, 16, self.itt);
        put_u32(buf, 20, self.ttt);
        self.sn.write(buf);
    }
}

/// Status carried by the last Data-In PDU of a command (S bit set, phase collapse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataInStatus {
    /// SCSI status byte.
    pub status: u8,
    /// StatSN.
    pub stat_sn: u32,
    /// O: residual overflow.
    pub overflow: bool,
    /// U: residual underflow.
    pub underflow: bool,
    /// Residual Count.
    pub residual_count: u32,
}

/// SCSI Data-In (0x25, RFC 7143 §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataIn {
    /// F: last PDU of the sequence (forced on when `status` is present).
    pub final_bit: bool,
    /// A: acknowledge requested (ERL > 0).
    pub ack: bool,
    /// LUN (valid with A set, else reserved).
    pub lun: u64,
    /// ITT of the command.
    pub itt: u32,
    /// TTT (with A set), else 0xffffffff.
    pub ttt: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN.
    pub data_sn: u32,
    /// Buffer Offset.
    pub buffer_offset: u32,
    /// S bit: the PDU also carries the command's status.
    pub status: Option<DataInStatus>,
}

impl DataIn {
    /// Parses and validates a Data-In header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::DataIn)?;
        let f = bhs.flags();
        let final_bit = bit(f, 0x80);
        let (o, u, s) = (bit(f, 0x04), bit(f, 0x02), bit(f, 0x01));
        if s && !final_bit {
            return Err(PduError::Protocol("Data-In S bit without F bit"));
        }
        if !s && (o || u) {
            return Err(PduError::InvalidField("Data-In O/U without S bit"));
        }
        if o && u {
            return Err(PduError::InvalidField("Data-In O and U both set"));
        }
        let status = s.then(|| DataInStatus {
            status: bhs.byte3(),
            stat_sn: get_u32(h, 24),
            overflow: o,
            underflow: u,
            residual_count: get_u32(h, 44),
        });
        Ok(Self {
            final_bit,
            ack: bit(f, 0x40),
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: get_u32(h, 20),
            exp_cmd_sn: get_u32(h, 28),
            max_cmd_sn: get_u32(h, 32),
            data_sn: get_u32(h, 36),
            buffer_offset: get_u32(h, 40),
            status,
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        let s = self.status.unwrap_or_default();
        let has = self.status.is_some();
        let flags = flag(self.final_bit || has, 0x80)
            | flag(self.ack, 0x40)
            | flag(has && s.overflow, 0x04)
            | flag(has && s.underflow, 0x02)
            | flag(has, 0x01);
        start(buf, Opcode::DataIn, false, flags);
        buf[3] = s.status;
        put_lun(buf, self.lun);
        put_u32(buf, 16, self.itt);
        put_u32(buf, 20, self.ttt);
        put_u32(buf, 24, s.stat_sn);
        put_u32(buf, 28, self.exp_cmd_sn);
        put_u32(buf, 32, self.max_cmd_sn);
        put_u32(buf, 36, self.data_sn);
        put_u32(buf, 40, self.buffer_offset);
        put_u32(buf, 44, s.residual_count);
    }
}

/// Logout Response (0x26, RFC 7143 §11.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutResponse {
    /// Response code.
    pub response: LogoutResponseCode,
    /// ITT of the Logout Request.
    pub itt: u32,
    /// StatSN / ExpCmdSN / MaxCmdSN.
    pub sn: TargetSn,
    /// Time2Wait in seconds.
    pub time2wait: u16,
    /// Time2Retain in seconds.
    pub time2retain: u16,
}

impl LogoutResponse {
    /// Parses and validates a Logout Response header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::LogoutResponse)?;
        no_data(bhs)?;
        Ok(Self {
            response: LogoutResponseCode::from(bhs.byte2()),
            itt: bhs.itt(),
            sn: TargetSn::read(h),
            time2wait: get_u16(h, 40),
            time2retain: get_u16(h, 42),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        start(buf, Opcode::LogoutResponse, false, 0x80);
        buf[2] = self.response.into();
        put_u32(buf, 16, self.itt);
        self.sn.write(buf);
        put_u16(buf, 40, self.time2wait);
        put_u16(buf, 42, self.time2retain);
    }
}

/// Ready To Transfer (0x31, RFC 7143 §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2t {
    /// LUN.
    pub lun: u64,
    /// ITT of the command.
    pub itt: u32,
    /// Target Transfer Tag the Data-Out PDUs must carry.
    pub ttt: u32,
    /// StatSN / ExpCmdSN / MaxCmdSN (StatSN is the next StatSN, not advanced).
    pub sn: TargetSn,
    /// R2TSN.
    pub r2t_sn: u32,
    /// Buffer Offset.
    pub buffer_offset: u32,
    /// Desired Data Transfer Length.
    pub desired_data_transfer_length: u32,
}

impl R2t {
    /// Parses and validates an R2T header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::R2t)?;
        no_data(bhs)?;
        if get_u32(h, 20) == RESERVED_TAG {
            return Err(PduError::InvalidField("R2T TTT 0xffffffff is reserved"));
        }
        if get_u32(h, 44) == 0 {
            return Err(PduError::InvalidField("R2T Desired Data Transfer Length 0"));
        }
        Ok(Self {
            lun: bhs.lun(),
            itt: bhs.itt(),
            ttt: get_u32(h, 20),
            sn: TargetSn::read(h),
            r2t_sn: get_u32(h, 36),
            buffer_offset: get_u32(h, 40),
            desired_data_transfer_length: get_u32(h, 44),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        start(buf, Opcode::R2t, false, 0x80);
        put_lun(buf, self.lun);
        put_u32(buf, 16, self.itt);
        put_u32(buf, 20, self.ttt);
        self.sn.write(buf);
        put_u32(buf, 36, self.r2t_sn);
        put_u32(buf, 40, self.buffer_offset);
        put_u32(buf, 44, self.desired_data_transfer_length);
    }
}

/// Asynchronous Message (0x32, RFC 7143 §11.9). ITT is always 0xffffffff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncMessage {
    /// LUN (SCSI events and task termination).
    pub lun: u64,
    /// StatSN / ExpCmdSN / MaxCmdSN.
    pub sn: TargetSn,
    /// AsyncEvent.
    pub event: AsyncEvent,
    /// AsyncVCode (vendor code).
    pub vcode: u8,
    /// Parameter1 (e.g. the CID to be dropped).
    pub parameter1: u16,
    /// Parameter2 (e.g. Time2Wait).
    pub parameter2: u16,
    /// Parameter3 (e.g. Time2Retain, or the seconds to wait for a logout).
    pub parameter3: u16,
}

impl AsyncMessage {
    /// Parses and validates an Asynchronous Message header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::AsyncMessage)?;
        reserved_itt(bhs)?;
        Ok(Self {
            lun: bhs.lun(),
            sn: TargetSn::read(h),
            event: AsyncEvent::from(h[36]),
            vcode: h[37],
            parameter1: get_u16(h, 38),
            parameter2: get_u16(h, 40),
            parameter3: get_u16(h, 42),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        start(buf, Opcode::AsyncMessage, false, 0x80);
        put_lun(buf, self.lun);
        put_u32(buf, 16, RESERVED_TAG);
        self.sn.write(buf);
        buf[36] = self.event.into();
        buf[37] = self.vcode;
        put_u16(buf, 38, self.parameter1);
        put_u16(buf, 40, self.parameter2);
        put_u16(buf, 42, self.parameter3);
    }
}

/// Reject (0x3f, RFC 7143 §11.17). The data segment is the rejected PDU's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// Reason code.
    pub reason: RejectReason,
    /// StatSN / ExpCmdSN / MaxCmdSN.
    pub sn: TargetSn,
    /// DataSN/R2TSN (for rejected SNACKs), else 0.
    pub data_sn_or_r2t_sn: u32,
}

impl Reject {
    /// Parses and validates a Reject header.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let h = expect_opcode(bhs, Opcode::Reject)?;
        reserved_itt(bhs)?;
        Ok(Self {
            reason: RejectReason::from(bhs.byte2()),
            sn: TargetSn::read(h),
            data_sn_or_r2t_sn: get_u32(h, 36),
        })
    }

    /// Writes the header.
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        start(buf, Opcode::Reject, false, 0x80);
        buf[2] = self.reason.into();
        put_u32(buf, 16, RESERVED_TAG);
        self.sn.write(buf);
        put_u32(buf, 36, self.data_sn_or_r2t_sn);
    }
}

/// A validated PDU header: one variant per RFC 7143 opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pdu {
    /// 0x00 NOP-Out.
    NopOut(NopOut),
    /// 0x01 SCSI Command.
    ScsiCommand(ScsiCommand),
    /// 0x02 Task Management Function Request.
    TaskMgmtRequest(TaskMgmtRequest),
    /// 0x03 Login Request.
    LoginRequest(LoginRequest),
    /// 0x04 Text Request.
    TextRequest(TextRequest),
    /// 0x05 SCSI Data-Out.
    DataOut(DataOut),
    /// 0x06 Logout Request.
    LogoutRequest(LogoutRequest),
    /// 0x10 SNACK Request.
    Snack(Snack),
    /// 0x20 NOP-In.
    NopIn(NopIn),
    /// 0x21 SCSI Response.
    ScsiResponse(ScsiResponse),
    /// 0x22 Task Management Function Response.
    TaskMgmtResponse(TaskMgmtResponse),
    /// 0x23 Login Response.
    LoginResponse(LoginResponse),
    /// 0x24 Text Response.
    TextResponse(TextResponse),
    /// 0x25 SCSI Data-In.
    DataIn(DataIn),
    /// 0x26 Logout Response.
    LogoutResponse(LogoutResponse),
    /// 0x31 Ready To Transfer.
    R2t(R2t),
    /// 0x32 Asynchronous Message.
    AsyncMessage(AsyncMessage),
    /// 0x3f Reject.
    Reject(Reject),
}

impl Pdu {
    /// Parses any header, dispatching on the opcode.
    pub fn parse<T: AsRef<[u8]>>(bhs: &Bhs<T>) -> Result<Self, PduError> {
        let op = bhs.opcode()?;
        if !op.allows_data() && bhs.data_segment_len() != 0 {
            return Err(PduError::InvalidField("DataSegmentLength must be 0"));
        }
        Ok(match op {
            Opcode::NopOut => Pdu::NopOut(NopOut::parse(bhs)?),
            Opcode::ScsiCommand => Pdu::ScsiCommand(ScsiCommand::parse(bhs)?),
            Opcode::TaskMgmtRequest => Pdu::TaskMgmtRequest(TaskMgmtRequest::parse(bhs)?),
            Opcode::LoginRequest => Pdu::LoginRequest(LoginRequest::parse(bhs)?),
            Opcode::TextRequest => Pdu::TextRequest(TextRequest::parse(bhs)?),
            Opcode::DataOut => Pdu::DataOut(DataOut::parse(bhs)?),
            Opcode::LogoutRequest => Pdu::LogoutRequest(LogoutRequest::parse(bhs)?),
            Opcode::Snack => Pdu::Snack(Snack::parse(bhs)?),
            Opcode::NopIn => Pdu::NopIn(NopIn::parse(bhs)?),
            Opcode::ScsiResponse => Pdu::ScsiResponse(ScsiResponse::parse(bhs)?),
            Opcode::TaskMgmtResponse => Pdu::TaskMgmtResponse(TaskMgmtResponse::parse(bhs)?),
            Opcode::LoginResponse => Pdu::LoginResponse(LoginResponse::parse(bhs)?),
            Opcode::TextResponse => Pdu::TextResponse(TextResponse::parse(bhs)?),
            Opcode::DataIn => Pdu::DataIn(DataIn::parse(bhs)?),
            Opcode::LogoutResponse => Pdu::LogoutResponse(LogoutResponse::parse(bhs)?),
            Opcode::R2t => Pdu::R2t(R2t::parse(bhs)?),
            Opcode::AsyncMessage => Pdu::AsyncMessage(AsyncMessage::parse(bhs)?),
            Opcode::Reject => Pdu::Reject(Reject::parse(bhs)?),
        })
    }

    /// Writes the header (all bytes but 4..8, see the module documentation).
    pub fn emit(&self, buf: &mut [u8; BHS_LEN]) {
        match self {
            Pdu::NopOut(p) => p.emit(buf),
            Pdu::ScsiCommand(p) => p.emit(buf),
            Pdu::TaskMgmtRequest(p) => p.emit(buf),
            Pdu::LoginRequest(p) => p.emit(buf),
            Pdu::TextRequest(p) => p.emit(buf),
            Pdu::DataOut(p) => p.emit(buf),
            Pdu::LogoutRequest(p) => p.emit(buf),
            Pdu::Snack(p) => p.emit(buf),
            Pdu::NopIn(p) => p.emit(buf),
            Pdu::ScsiResponse(p) => p.emit(buf),
            Pdu::TaskMgmtResponse(p) => p.emit(buf),
            Pdu::LoginResponse(p) => p.emit(buf),
            Pdu::TextResponse(p) => p.emit(buf),
            Pdu::DataIn(p) => p.emit(buf),
            Pdu::LogoutResponse(p) => p.emit(buf),
            Pdu::R2t(p) => p.emit(buf),
            Pdu::AsyncMessage(p) => p.emit(buf),
            Pdu::Reject(p) => p.emit(buf),
        }
    }

    /// The opcode of this PDU.
    pub fn opcode(&self) -> Opcode {
        match self {
            Pdu::NopOut(_) => Opcode::NopOut,
            Pdu::ScsiCommand(_) => Opcode::ScsiCommand,
            Pdu::TaskMgmtRequest(_) => Opcode::TaskMgmtRequest,
            Pdu::LoginRequest(_) => Opcode::LoginRequest,
            Pdu::TextRequest(_) => Opcode::TextRequest,
            Pdu::DataOut(_) => Opcode::DataOut,
            Pdu::LogoutRequest(_) => Opcode::LogoutRequest,
            Pdu::Snack(_) => Opcode::Snack,
            Pdu::NopIn(_) => Opcode::NopIn,
            Pdu::ScsiResponse(_) => Opcode::ScsiResponse,
            Pdu::TaskMgmtResponse(_) => Opcode::TaskMgmtResponse,
            Pdu::LoginResponse(_) => Opcode::LoginResponse,
            Pdu::TextResponse(_) => Opcode::TextResponse,
            Pdu::DataIn(_) => Opcode::DataIn,
            Pdu::LogoutResponse(_) => Opcode::LogoutResponse,
            Pdu::R2t(_) => Opcode::R2t,
            Pdu::AsyncMessage(_) => Opcode::AsyncMessage,
            Pdu::Reject(_) => Opcode::Reject,
        }
    }

    /// The Initiator Task Tag (0xffffffff for Async Message and Reject).
    pub fn itt(&self) -> u32 {
        match self {
            Pdu::NopOut(p) => p.itt,
            Pdu::ScsiCommand(p) => p.itt,
            Pdu::TaskMgmtRequest(p) => p.itt,
            Pdu::LoginRequest(p) => p.itt,
            Pdu::TextRequest(p) => p.itt,
            Pdu::DataOut(p) => p.itt,
            Pdu::LogoutRequest(p) => p.itt,
            Pdu::Snack(p) => p.itt,
            Pdu::NopIn(p) => p.itt,
            Pdu::ScsiResponse(p) => p.itt,
            Pdu::TaskMgmtResponse(p) => p.itt,
            Pdu::LoginResponse(p) => p.itt,
            Pdu::TextResponse(p) => p.itt,
            Pdu::DataIn(p) => p.itt,
            Pdu::LogoutResponse(p) => p.itt,
            Pdu::R2t(p) => p.itt,
            Pdu::AsyncMessage(_) | Pdu::Reject(_) => RESERVED_TAG,
        }
    }

    /// Emits into a fresh 48-byte array with both lengths set to zero.
    pub fn to_bytes(&self) -> [u8; BHS_LEN] {
        let mut b = [0u8; BHS_LEN];
        self.emit(&mut b);
        b
    }
}
