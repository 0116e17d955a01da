//! Commands the core answers itself (COMSTAR's `dlun0`): REPORT LUNS from the session's map,
//! commands to a LUN with no LU, and the LUN-inventory unit attention.

use crate::route::{free_port_dbuf, send_status, set_sense};
use crate::task::*;
use plugins_sdk::abi::{dbuf_flags, io_flags, DataBufRaw, Status, Task};
use plugins_sdk::fields;
use plugins_sdk::scsi::lun::Lun;
use plugins_sdk::scsi::{
    Asc, Cdb, Inquiry, OpCode, ReportLuns, RequestSense, ScsiStatus, Sense, SenseFormat, SenseKey,
};
use std::sync::atomic::Ordering::AcqRel;

/// The core takes the LU's role for a task `post_task` is routing (hence POSTED).
fn begin(ct: *mut CoreTask, initial: *mut DataBufRaw) {
    state(ct).fetch_or(KNOWN_TO_LU | DEFAULT_LU | POSTED, AcqRel);
    if !initial.is_null() {
        free_port_dbuf(ct, initial);
    }
}

fn cdb<'a>(ct: *mut CoreTask) -> &'a [u8] {
    // SAFETY: live task; the CDB is fixed after allocation and lives as long as the task.
    unsafe {
        let t = &(*ct).public;
        let n = t.cdb_len as usize;
        if n <= t.cdb.len() {
            let cdb = &(*ct).public.cdb;
            &cdb[..n]
        } else {
            let ext = &(*ct).ext_cdb;
            &ext[..]
        }
    }
}

/// Completes with CHECK CONDITION and `sense`.
pub(crate) fn check_condition(ct: *mut CoreTask, initial: *mut DataBufRaw, sense: Sense) {
    begin(ct, initial);
    finish_check(ct, sense);
}

fn finish_check(ct: *mut CoreTask, sense: Sense) {
    set_sense(ct, sense);
    send_status(ct as *mut Task, io_flags::LU_DONE);
}

fn finish_good(ct: *mut CoreTask) {
    // SAFETY: the core completes this task; shared status fields, accessed atomically.
    unsafe {
        fields::store_u8(&raw mut (*ct).public.scsi_status, ScsiStatus::GOOD.0);
        fields::store_u16(&raw mut (*ct).public.sense_len, 0);
    }
    send_status(ct as *mut Task, io_flags::LU_DONE);
}

/// Sends `data` truncated to `alloc_len` (the allocation length of the CDB), then GOOD.
fn send_data(ct: *mut CoreTask, data: &[u8], alloc_len: usize) {
    let want = data.len().min(alloc_len);
    // SAFETY: the core owns the task's LU-side fields (shared: accessed atomically); the
    // expected length is fixed at allocation.
    let expected = unsafe {
        fields::store_u64(&raw mut (*ct).public.cmd_xfer_len, want as u64);
        (*ct).public.expected_xfer_len
    };
    let len = want.min(usize::try_from(expected).unwrap_or(usize::MAX));
    if len == 0 {
        finish_good(ct);
        return;
    }
    let mut min = len as u32;
    let mut d: *mut DataBufRaw = std::ptr::null_mut();
    let st = crate::route::dbuf_alloc(ct as *mut Task, len as u32, &mut min, &mut d);
    if !st.is_ok() || d.is_null() {
        // SAFETY: the core completes this task; a shared field, accessed atomically.
        unsafe { fields::store_u8(&raw mut (*ct).public.scsi_status, ScsiStatus::BUSY.0) };
        send_status(ct as *mut Task, io_flags::LU_DONE);
        return;
    }
    // SAFETY: the port handed over a buffer of at least `min` = len bytes (checked).
    unsafe {
        let b = &mut *d;
        if (b.buf_size as usize) < len || b.data.is_null() {
            free_port_dbuf(ct, d);
            fields::store_u8(&raw mut (*ct).public.scsi_status, ScsiStatus::BUSY.0);
            send_status(ct as *mut Task, io_flags::LU_DONE);
            return;
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), b.data, len);
        b.xfer_len = len as u32;
        b.rel_offset = 0;
        b.flags = dbuf_flags::TO_RPORT;
    }
    let r = crate::route::xfer_data(ct as *mut Task, d, 0);
    if !r.is_ok() {
        free_port_dbuf(ct, d);
        if r != Status::ABORTED {
            finish_check(ct, Sense::new(SenseKey::ABORTED_COMMAND, Asc::new(0, 0)));
        }
    }
}

/// A data transfer the core started finished.
pub(crate) fn xfer_done(ct: *mut CoreTask, d: *mut DataBufRaw, status: Status) {
    free_port_dbuf(ct, d);
    if state(ct).load(std::sync::atomic::Ordering::Acquire) & KNOWN_TO_LU == 0 {
        return; // aborted meanwhile
    }
    if status.is_ok() {
        finish_good(ct);
    } else {
        finish_check(ct, Sense::new(SenseKey::ABORTED_COMMAND, Asc::new(0, 0)));
    }
}

/// REPORT LUNS from the session's map (the one the task was routed with).
pub(crate) fn report_luns(ct: *mut CoreTask, initial: *mut DataBufRaw) {
    begin(ct, initial);
    let req = match Cdb::parse(cdb(ct)).and_then(|c| ReportLuns::decode(&c)) {
        Ok(r) => r,
        Err(e) => return finish_check(ct, e.into()),
    };
    if req.alloc_len < 16 {
        return finish_check(ct, Sense::invalid_field_in_cdb(6, None));
    }
    let luns: Vec<u16> = match req.select_report {
        // 00h: all LUs but well-known ones; 02h: all. We have no well-known LUs to list.
        0x00 | 0x02 => {
            // SAFETY: the task holds its map.
            let map = unsafe { (*ct).map.as_ref() };
            map.map(|m| m.inventory().into_iter().map(|(l, _)| l).collect())
                .unwrap_or_default()
        }
        0x01 => Vec::new(),
        _ => return finish_check(ct, Sense::invalid_field_in_cdb(2, None)),
    };
    let mut data = Vec::with_capacity(8 + 8 * luns.len());
    data.extend_from_slice(&((8 * luns.len()) as u32).to_be_bytes());
    data.extend_from_slice(&[0; 4]);
    for l in luns {
        if let Some(lun) = Lun::new(l) {
            data.extend_from_slice(&lun.to_bytes());
        }
    }
    send_data(ct, &data, req.alloc_len as usize);
}

/// A command to a LUN with no (online) LU.
pub(crate) fn no_lu(ct: *mut CoreTask, initial: *mut DataBufRaw) {
    begin(ct, initial);
    let c = match Cdb::parse(cdb(ct)) {
        Ok(c) => c,
        Err(e) => return finish_check(ct, e.into()),
    };
    let not_supported = Sense::illegal_request(Asc::LOGICAL_UNIT_NOT_SUPPORTED);
    match c.opcode() {
        OpCode::INQUIRY => match Inquiry::decode(&c) {
            Ok(q) if !q.evpd => {
                // Peripheral qualifier 011b, device type 1Fh: no LU can be here.
                let mut d = [0u8; 36];
                d[0] = 0x7F;
                d[2] = 0x06;
                d[3] = 0x02;
                d[4] = 31;
                d[8..16].copy_from_slice(b"RSTMF   ");
                d[16..32].copy_from_slice(b"NO LU MAPPED    ");
                d[32..36].copy_from_slice(b"0001");
                send_data(ct, &d, q.alloc_len as usize);
            }
            Ok(_) => finish_check(ct, not_supported),
            Err(e) => finish_check(ct, e.into()),
        },
        OpCode::REQUEST_SENSE => match RequestSense::decode(&c) {
            Ok(r) => {
                let fmt = if r.desc {
                    SenseFormat::Descriptor
                } else {
                    SenseFormat::Fixed
                };
                let bytes = not_supported.encode(fmt);
                send_data(ct, bytes.as_slice(), r.alloc_len as usize);
            }
            Err(e) => finish_check(ct, e.into()),
        },
        _ => finish_check(ct, not_supported),
    }
}
