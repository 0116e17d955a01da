//! One RAM disk LU: the SCSI commands it answers and how its data moves.
//!
//! # How a command runs
//!
//! The core calls [`Lu::new_task`] with the task (CDB, expected transfer length, ...) and,
//! for a write, the immediate data the initiator sent with the command. The LU then:
//!
//! 1. decodes the CDB with [`plugins_sdk::scsi`] (every decoder returns a [`CdbError`] that
//!    already knows its sense data, field pointer included);
//! 2. records how many bytes the CDB asks for with [`TaskHandle::set_cmd_xfer_len`], so the
//!    core can compute the residual the initiator sees;
//! 3. moves data through buffers that belong to the *port* (an RDMA port hands out registered
//!    memory): [`Host::dbuf_alloc`], fill or describe it with [`DataBuf::set_xfer`], then
//!    [`Host::xfer_data`]. The port takes the buffer and gives it back in
//!    [`Lu::dbuf_xfer_done`], where the LU moves the next chunk or finishes;
//! 4. finishes with [`Host::send_status`] and [`io_flags::LU_DONE`]: after that the LU must
//!    not touch the task again.
//!
//! This LU keeps no per-task state at all: the CDB (still in the task) plus the offset and
//! length of the buffer that just came back say where the command is. That is why it needs
//! no allocation per command and has nothing to clean up in [`Lu::abort`]. It keeps one
//! buffer in flight at a time; a faster LU would keep up to [`TaskHandle::max_nbufs`].
//!
//! # Re-entrancy
//!
//! A port may complete a transfer before `xfer_data` even returns (the test port does), so
//! [`Lu::dbuf_xfer_done`] — and the final `send_status` — can run *inside* the LU's own call
//! to [`Host::xfer_data`]. Never touch the task or the buffer after handing them over.

use crate::guid::{self, Guid};
use crate::store::RamStore;
use plugins_sdk::abi::{dbuf_flags, io_flags};
use plugins_sdk::scsi::{
    Asc, Cdb, CdbError, Inquiry, ModeSense, OpCode, PageControl, ReadCapacity, RequestSense, Rw,
    ScsiStatus, Sense, SenseFormat, SenseKey,
};
use plugins_sdk::{DataBuf, Host, Lu, Status, TaskHandle};

/// T10 vendor identification (INQUIRY bytes 8–15), space padded. Put your own here.
const VENDOR: &[u8; 8] = b"RSTMF   ";
/// Product identification (INQUIRY bytes 16–31), space padded.
const PRODUCT: &[u8; 16] = b"RAMDISK         ";
/// Product revision level (INQUIRY bytes 32–35).
const REVISION: &[u8; 4] = b"0001";

/// Largest buffer asked of the port for one transfer. Ports may give less.
const MAX_CHUNK: u32 = 256 * 1024;
/// Smallest buffer worth a transfer of bulk data.
const MIN_CHUNK: u32 = 4096;

/// Parameter data of the small commands (INQUIRY, READ CAPACITY, ...) is built on the stack:
/// none of it is longer than this.
const REPLY_MAX: usize = 64;

/// A RAM disk logical unit.
pub struct RamLu {
    guid: Guid,
    /// Unit serial number (VPD page 80h): the GUID in hex.
    serial: [u8; 32],
    block_size: u32,
    blocks: u64,
    store: RamStore,
}

/// Where a READ or WRITE is: decoded again from the CDB at every step.
struct Xfer {
    /// Byte offset of the first addressed block in the store.
    start: u64,
    /// Bytes the CDB asks for (TRANSFER LENGTH × block size): the command transfer length.
    cmd_len: u64,
    /// Bytes actually moved: the command transfer length, cut to what the initiator said it
    /// expects (the core reports the difference as the residual).
    total: u64,
}

impl RamLu {
    /// A zero-filled LU of `size_bytes` with `block_size`-byte blocks (the provider checks
    /// both before calling this; a zero block size makes an empty LU).
    pub fn new(guid: Guid, size_bytes: u64, block_size: u32) -> Self {
        let mut serial = [b'0'; 32];
        serial.copy_from_slice(guid::to_hex(&guid).as_bytes());
        RamLu {
            guid,
            serial,
            block_size,
            blocks: size_bytes.checked_div(u64::from(block_size)).unwrap_or(0),
            store: RamStore::new(size_bytes),
        }
    }

    // ---- command dispatch ----------------------------------------------------------------

    /// Runs one command; an `Err` becomes CHECK CONDITION with that sense data. (A
    /// [`CdbError`] from a decoder converts with `?`.)
    fn execute(
        &self,
        host: &Host,
        task: &TaskHandle,
        cdb: &Cdb<'_>,
        initial: Option<DataBuf>,
    ) -> Result<(), Sense> {
        let op = cdb.opcode();
        // Only WRITE consumes immediate data; any other command gives the buffer back at once.
        let initial = match initial {
            Some(buf) if op != OpCode::WRITE_10 && op != OpCode::WRITE_16 => {
                host.dbuf_free(task, buf);
                None
            }
            other => other,
        };
        match op {
            OpCode::TEST_UNIT_READY => {
                good(host, task);
                Ok(())
            }
            OpCode::INQUIRY => self.inquiry(host, task, cdb),
            OpCode::REQUEST_SENSE => {
                // This LU never holds sense data for later: always NO SENSE.
                let rs = RequestSense::decode(cdb)?;
                let format = if rs.desc {
                    SenseFormat::Descriptor
                } else {
                    SenseFormat::Fixed
                };
                let sense = Sense::new(SenseKey::NO_SENSE, Asc::NO_ADDITIONAL_SENSE).encode(format);
                send_data_in(host, task, &sense, u32::from(rs.alloc_len));
                Ok(())
            }
            OpCode::READ_CAPACITY_10 | OpCode::SERVICE_ACTION_IN_16 => {
                self.read_capacity(host, task, cdb)
            }
            OpCode::MODE_SENSE_6 => self.mode_sense(host, task, cdb),
            OpCode::SYNCHRONIZE_CACHE_10 => {
                // RAM has no cache to flush; only check the range.
                Rw::decode(cdb)?.lba_range(self.blocks)?;
                good(host, task);
                Ok(())
            }
            OpCode::READ_10 | OpCode::READ_16 => {
                let x = self.rw_xfer(task, cdb)?;
                self.start_read(host, task, x);
                Ok(())
            }
            OpCode::WRITE_10 | OpCode::WRITE_16 => match self.rw_xfer(task, cdb) {
                Ok(x) => {
                    self.start_write(host, task, x, initial);
                    Ok(())
                }
                Err(e) => {
                    // Rejected before any data moved: the immediate data goes back unread.
                    if let Some(buf) = initial {
                        host.dbuf_free(task, buf);
                    }
                    Err(e.into())
                }
            },
            _ => Err(Sense::invalid_opcode()),
        }
    }

    /// Decodes READ/WRITE (10/16) and checks the block range against the capacity.
    fn rw_xfer(&self, task: &TaskHandle, cdb: &Cdb<'_>) -> Result<Xfer, CdbError> {
        let rw = Rw::decode(cdb)?;
        rw.check_no_protection()?; // no protection information on this LU
        let blocks = rw.lba_range(self.blocks)?; // LBA OUT OF RANGE past the end
        let bs = u64::from(self.block_size);
        // Cannot overflow: the range lies within the capacity, which fits the store.
        let cmd_len = (blocks.end - blocks.start) * bs;
        Ok(Xfer {
            start: blocks.start * bs,
            cmd_len,
            total: cmd_len.min(task.expected_xfer_len()),
        })
    }

    // ---- small commands --------------------------------------------------------------------

    fn inquiry(&self, host: &Host, task: &TaskHandle, cdb: &Cdb<'_>) -> Result<(), Sense> {
        let inq = Inquiry::decode(cdb)?;
        let mut r = Reply::new();
        if !inq.evpd {
            // Standard INQUIRY data (SPC-4 §6.6.2), 36 bytes.
            r.put(&[
                0x00, // peripheral qualifier 000b (connected), device type 00h (block device)
                0x00, // not removable
                0x06, // VERSION: SPC-4
                0x12, // HISUP = 1, RESPONSE DATA FORMAT = 2
                31,   // ADDITIONAL LENGTH: 36 - 5
                0x00, // no SCCS/ACC/TPGS/3PC/PROTECT
                0x00, // no ENCSERV/MULTIP
                0x02, // CMDQUE: full task management model
            ]);
            r.put(VENDOR);
            r.put(PRODUCT);
            r.put(REVISION);
        } else {
            // Vital product data pages: 4-byte header, then the page.
            let page = inq.page_code;
            match page {
                // Supported VPD pages.
                0x00 => r.vpd(page, &[0x00, 0x80, 0x83]),
                // Unit serial number.
                0x80 => r.vpd(page, &self.serial),
                // Device identification: one designator, the GUID as an NAA identifier
                // (code set binary, association LU, designator type NAA, 16 bytes).
                0x83 => {
                    let mut d = [0u8; 20];
                    d[..4].copy_from_slice(&[0x01, 0x03, 0x00, 16]);
                    d[4..].copy_from_slice(&self.guid);
                    r.vpd(page, &d);
                }
                _ => return Err(Sense::invalid_field_in_cdb(2, Some(7))),
            }
        }
        send_data_in(host, task, r.as_slice(), u32::from(inq.alloc_len));
        Ok(())
    }

    fn read_capacity(&self, host: &Host, task: &TaskHandle, cdb: &Cdb<'_>) -> Result<(), Sense> {
        // Also rejects other service actions of SERVICE ACTION IN (16).
        let rc = ReadCapacity::decode(cdb)?;
        let last_lba = self.blocks.saturating_sub(1);
        let mut r = Reply::new();
        if rc.cdb_len == 10 {
            // A capacity that does not fit reports FFFFFFFFh: "use READ CAPACITY (16)".
            r.put(&u32::try_from(last_lba).unwrap_or(u32::MAX).to_be_bytes());
            r.put(&self.block_size.to_be_bytes());
        } else {
            r.put(&last_lba.to_be_bytes());
            r.put(&self.block_size.to_be_bytes());
            // No protection, one logical block per physical block, no thin provisioning.
            r.put(&[0u8; 20]);
        }
        send_data_in(host, task, r.as_slice(), rc.alloc_len);
        Ok(())
    }

    fn mode_sense(&self, host: &Host, task: &TaskHandle, cdb: &Cdb<'_>) -> Result<(), Sense> {
        let ms = ModeSense::decode(cdb)?;
        if ms.pc == PageControl::Saved {
            return Err(Sense::illegal_request(Asc::SAVING_PARAMETERS_NOT_SUPPORTED));
        }
        // This LU has no mode pages: only "all pages" (3Fh) is a valid request, and it
        // returns the header and the block descriptor.
        if ms.page_code != 0x3F {
            return Err(Sense::invalid_field_in_cdb(2, Some(5)));
        }
        if ms.subpage_code != 0x00 && ms.subpage_code != 0xFF {
            return Err(Sense::invalid_field_in_cdb(3, Some(7)));
        }
        let bd_len: u8 = if ms.dbd { 0 } else { 8 };
        let mut r = Reply::new();
        // Mode parameter header (6): MODE DATA LENGTH (excludes itself), MEDIUM TYPE,
        // DEVICE-SPECIFIC PARAMETER (WP = 0), BLOCK DESCRIPTOR LENGTH.
        r.put(&[3 + bd_len, 0x00, 0x00, bd_len]);
        if !ms.dbd {
            // Short LBA block descriptor: NUMBER OF BLOCKS (FFFFFFFFh if too many), reserved,
            // LOGICAL BLOCK LENGTH (3 bytes).
            r.put(&u32::try_from(self.blocks).unwrap_or(u32::MAX).to_be_bytes());
            r.put(&self.block_size.to_be_bytes()); // byte 0 is the reserved byte: bs < 2^24
        }
        send_data_in(host, task, r.as_slice(), u32::from(ms.alloc_len));
        Ok(())
    }

    // ---- READ ----------------------------------------------------------------------------

    fn start_read(&self, host: &Host, task: &TaskHandle, x: Xfer) {
        task.set_cmd_xfer_len(x.cmd_len);
        if x.total == 0 {
            return good(host, task);
        }
        match alloc(host, task, x.total) {
            Some(buf) => self.read_chunk(host, task, &x, buf, 0),
            None => busy(host, task),
        }
    }

    /// Fills `buf` with the data at `offset` of the command and sends it.
    fn read_chunk(&self, host: &Host, task: &TaskHandle, x: &Xfer, mut buf: DataBuf, offset: u64) {
        let n = (buf.capacity() as u64).min(x.total - offset) as usize;
        if let Some(dst) = buf.as_mut_slice().get_mut(..n) {
            self.store.read(x.start + offset, dst);
        }
        buf.set_xfer(offset, n, dbuf_flags::TO_RPORT);
        xfer(host, task, buf);
    }

    fn continue_read(&self, host: &Host, task: &TaskHandle, x: Xfer, buf: DataBuf) {
        let next = buf.rel_offset() + buf.xfer_len() as u64;
        if next >= x.total {
            host.dbuf_free(task, buf);
            good(host, task);
        } else {
            self.read_chunk(host, task, &x, buf, next);
        }
    }

    // ---- WRITE ---------------------------------------------------------------------------

    fn start_write(&self, host: &Host, task: &TaskHandle, x: Xfer, initial: Option<DataBuf>) {
        task.set_cmd_xfer_len(x.cmd_len);
        // Immediate (and unsolicited) data came with the command: store it first.
        let mut done = 0;
        if let Some(buf) = initial {
            done = self.store_chunk(&x, &buf);
            host.dbuf_free(task, buf);
        }
        if done >= x.total {
            return good(host, task);
        }
        // Ask the port for the rest, one buffer at a time.
        match alloc(host, task, x.total - done) {
            Some(buf) => request_chunk(host, task, &x, buf, done),
            None => busy(host, task),
        }
    }

    /// Stores the data of a FROM_RPORT buffer; returns the command offset it reaches.
    fn store_chunk(&self, x: &Xfer, buf: &DataBuf) -> u64 {
        let offset = buf.rel_offset();
        if offset >= x.total {
            return offset; // beyond what the command writes: ignore it
        }
        let n = (buf.xfer_len() as u64).min(x.total - offset) as usize;
        if let Some(data) = buf.data().get(..n) {
            self.store.write(x.start + offset, data);
        }
        offset + n as u64
    }

    fn continue_write(&self, host: &Host, task: &TaskHandle, x: Xfer, buf: DataBuf) {
        let next = self.store_chunk(&x, &buf);
        if next >= x.total {
            host.dbuf_free(task, buf);
            good(host, task);
        } else {
            request_chunk(host, task, &x, buf, next);
        }
    }
}

impl Lu for RamLu {
    fn new_task(&self, host: &Host, task: &TaskHandle, initial: Option<DataBuf>) {
        let cdb = match Cdb::parse(task.cdb()).and_then(|c| c.check_control(false).map(|_| c)) {
            Ok(cdb) => cdb,
            Err(e) => {
                if let Some(buf) = initial {
                    host.dbuf_free(task, buf);
                }
                return fail(host, task, e.to_sense());
            }
        };
        if let Err(sense) = self.execute(host, task, &cdb, initial) {
            fail(host, task, sense);
        }
    }

    fn dbuf_xfer_done(&self, host: &Host, task: &TaskHandle, buf: DataBuf) {
        let status = buf.xfer_status();
        if status != Status::SUCCESS {
            host.dbuf_free(task, buf);
            return transfer_failed(host, task, status);
        }
        let Ok(cdb) = Cdb::parse(task.cdb()) else {
            host.dbuf_free(task, buf);
            return fail(
                host,
                task,
                Sense::new(SenseKey::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE),
            );
        };
        match cdb.opcode() {
            op @ (OpCode::READ_10 | OpCode::READ_16 | OpCode::WRITE_10 | OpCode::WRITE_16) => {
                match self.rw_xfer(task, &cdb) {
                    Ok(x) if op == OpCode::READ_10 || op == OpCode::READ_16 => {
                        self.continue_read(host, task, x, buf)
                    }
                    Ok(x) => self.continue_write(host, task, x, buf),
                    Err(e) => {
                        host.dbuf_free(task, buf);
                        fail(host, task, e.to_sense());
                    }
                }
            }
            // The single transfer of a small command (INQUIRY, READ CAPACITY, ...) is done.
            _ => {
                host.dbuf_free(task, buf);
                good(host, task);
            }
        }
    }

    // `abort` keeps the default (`AbortOutcome::Done`): between calls this LU holds nothing
    // of a task but, possibly, a buffer that is with the port, which the core recovers.

    fn info(&self) -> String {
        serde_json::json!({
            "guid": guid::to_hex(&self.guid),
            "block_size": self.block_size,
            "blocks": self.blocks,
            "allocated_bytes": self.store.allocated(),
            "persistent": false,
        })
        .to_string()
    }
}

// ---- data movement helpers -----------------------------------------------------------------

/// Asks the port for a buffer of up to `want` bytes (at most [`MAX_CHUNK`]). A port that
/// cannot give that much says what it could; take that instead.
fn alloc(host: &Host, task: &TaskHandle, want: u64) -> Option<DataBuf> {
    let size = u32::try_from(want).unwrap_or(u32::MAX).min(MAX_CHUNK);
    let buf = match host.dbuf_alloc(task, size, size.min(MIN_CHUNK)) {
        Ok(buf) => buf,
        Err(could) if could > 0 => host.dbuf_alloc(task, could, could).ok()?,
        Err(_) => return None,
    };
    if buf.capacity() == 0 {
        host.dbuf_free(task, buf);
        return None;
    }
    Some(buf)
}

/// Asks the initiator for the data at `offset` of a write, into `buf`.
fn request_chunk(host: &Host, task: &TaskHandle, x: &Xfer, mut buf: DataBuf, offset: u64) {
    let n = (buf.capacity() as u64).min(x.total - offset) as usize;
    buf.set_xfer(offset, n, dbuf_flags::FROM_RPORT);
    xfer(host, task, buf);
}

/// Hands `buf` to the port. On success the LU is done with the buffer and the task until
/// [`Lu::dbuf_xfer_done`] (which may already have run when this returns).
fn xfer(host: &Host, task: &TaskHandle, buf: DataBuf) {
    if let Err((status, buf)) = host.xfer_data(task, buf, 0) {
        host.dbuf_free(task, buf);
        transfer_failed(host, task, status);
    }
}

/// Sends a short parameter data reply (INQUIRY, READ CAPACITY, ...): at most `alloc_len`
/// bytes of `data`, in one buffer.
fn send_data_in(host: &Host, task: &TaskHandle, data: &[u8], alloc_len: u32) {
    // What the command returns: the data, cut to the ALLOCATION LENGTH. The core compares it
    // and what was actually sent with the initiator's expected length to set the residual
    // (overflow when the expected length was too short, underflow when it was longer).
    let want = data.len().min(alloc_len as usize);
    task.set_cmd_xfer_len(want as u64);
    let n = want.min(usize::try_from(task.expected_xfer_len()).unwrap_or(usize::MAX));
    if n == 0 {
        return good(host, task);
    }
    let size = n as u32; // n ≤ REPLY_MAX
    let mut buf = match host.dbuf_alloc(task, size, size) {
        Ok(buf) if buf.capacity() >= n => buf,
        Ok(buf) => {
            host.dbuf_free(task, buf);
            return busy(host, task);
        }
        Err(_) => return busy(host, task),
    };
    if let (Some(dst), Some(src)) = (buf.as_mut_slice().get_mut(..n), data.get(..n)) {
        dst.copy_from_slice(src);
    }
    buf.set_xfer(0, n, dbuf_flags::TO_RPORT);
    xfer(host, task, buf);
}

// ---- status helpers ---------------------------------------------------------------------------

/// GOOD status; the LU is done with the task.
fn good(host: &Host, task: &TaskHandle) {
    host.send_status(task, ScsiStatus::GOOD.0, &[], io_flags::LU_DONE);
}

/// CHECK CONDITION with `sense` (fixed format); the LU is done with the task.
fn fail(host: &Host, task: &TaskHandle, sense: Sense) {
    let bytes = sense.encode(SenseFormat::Fixed);
    host.send_status(
        task,
        ScsiStatus::CHECK_CONDITION.0,
        &bytes,
        io_flags::LU_DONE,
    );
}

/// BUSY: the port had no buffer for us; the initiator retries.
fn busy(host: &Host, task: &TaskHandle) {
    host.send_status(task, ScsiStatus::BUSY.0, &[], io_flags::LU_DONE);
}

/// A transfer failed or was refused. When the task is being aborted the core finishes it
/// (and calls [`Lu::abort`]), so the LU only lets go; otherwise the command ends with
/// ABORTED COMMAND.
fn transfer_failed(host: &Host, task: &TaskHandle, status: Status) {
    if status == Status::ABORTED {
        return;
    }
    tracing::debug!(tag = task.tag(), %status, "data transfer failed");
    fail(
        host,
        task,
        Sense::new(SenseKey::ABORTED_COMMAND, Asc::DATA_PHASE_ERROR),
    );
}

/// Parameter data of a small command, built on the stack.
struct Reply {
    buf: [u8; REPLY_MAX],
    len: usize,
}

impl Reply {
    fn new() -> Self {
        Reply {
            buf: [0; REPLY_MAX],
            len: 0,
        }
    }

    /// Appends bytes (silently cut at [`REPLY_MAX`], which no reply here reaches).
    fn put(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(REPLY_MAX - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    /// A VPD page: peripheral byte, page code, PAGE LENGTH, then the page.
    fn vpd(&mut self, page: u8, body: &[u8]) {
        self.put(&[0x00, page]);
        self.put(&(body.len() as u16).to_be_bytes());
        self.put(body);
    }

    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}
