//! EXTENDED COPY (LID1) with block→block segments between LUs of this provider, and
//! RECEIVE COPY RESULTS (copy status, operating parameters). Copies run synchronously on a
//! worker, one chunk at a time through the task's scratch buffer; copy targets are named by
//! identification descriptors (E4h) carrying the LU's NAA designator.

use super::ctx::{Fin, TaskCtx};
use super::data::{read_error, write_error};
use super::{lock, SbdLu, CHUNK};
use plugins_sdk::scsi::{Asc, CdbError, Sense, SenseKey, SenseKeySpecific};
use std::sync::Arc;

/// Most CSCD descriptors in one list.
const MAX_CSCD: usize = 8;
/// Most segment descriptors in one list.
const MAX_SEGMENTS: usize = 64;
/// Most bytes of descriptors in one list.
const MAX_LIST: usize = MAX_CSCD * 32 + MAX_SEGMENTS * 28;
/// Largest segment in bytes.
const MAX_SEGMENT_BYTES: u32 = 65535 * 4096;

/// Results of finished copies, by I_T nexus and list identifier (RECEIVE COPY RESULTS).
///
/// A list identifier names a copy only on the I_T nexus that sent it (SPC-4 6.18.3:
/// RECEIVE COPY STATUS reports the EXTENDED COPY "received on the same I_T nexus"), so
/// another initiator port reusing list identifier 1 does not see (or clobber) this one's
/// result. Entries go when their nexus goes (`ITL_REMOVED`), or the oldest when 64 are
/// kept.
#[derive(Default)]
pub(crate) struct CopyLog {
    done: Vec<(usize, u8, CopyResult)>,
}

#[derive(Clone, Copy)]
struct CopyResult {
    ok: bool,
    segments: u16,
    bytes: u64,
}

impl CopyLog {
    fn record(&mut self, nexus: usize, id: u8, r: CopyResult) {
        self.done.retain(|(n, i, _)| (*n, *i) != (nexus, id));
        if self.done.len() >= 64 {
            self.done.remove(0);
        }
        self.done.push((nexus, id, r));
    }

    /// Forgets the copies of a nexus that is gone.
    pub(crate) fn forget(&mut self, nexus: usize) {
        self.done.retain(|(n, _, _)| *n != nexus);
    }

    /// RECEIVE COPY STATUS (LID1) data for `id` on `nexus`; INVALID FIELD IN CDB (the LIST
    /// IDENTIFIER) when that nexus sent no such copy.
    pub(crate) fn status(&self, nexus: usize, id: u8, out: &mut Vec<u8>) -> Result<(), CdbError> {
        let r = self
            .done
            .iter()
            .find(|(n, i, _)| (*n, *i) == (nexus, id))
            .map(|(_, _, r)| *r)
            .ok_or(CdbError::InvalidField { byte: 2, bit: None })?;
        out.clear();
        out.extend_from_slice(&8u32.to_be_bytes());
        out.push(if r.ok { 0x00 } else { 0x01 });
        out.extend_from_slice(&r.segments.to_be_bytes());
        // Transfer count in bytes (units 00h), saturated.
        out.push(0x00);
        out.extend_from_slice(&u32::try_from(r.bytes).unwrap_or(u32::MAX).to_be_bytes());
        Ok(())
    }
}

/// RECEIVE COPY OPERATING PARAMETERS data.
pub(crate) fn operating_parameters(out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&[0x01, 0, 0, 0]); // SNLID
    out.extend_from_slice(&(MAX_CSCD as u16).to_be_bytes());
    out.extend_from_slice(&(MAX_SEGMENTS as u16).to_be_bytes());
    out.extend_from_slice(&(MAX_LIST as u32).to_be_bytes());
    out.extend_from_slice(&MAX_SEGMENT_BYTES.to_be_bytes());
    out.extend_from_slice(&[0; 4]); // inline data
    out.extend_from_slice(&[0; 4]); // held data
    out.extend_from_slice(&[0; 4]); // stream devices
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&1u16.to_be_bytes()); // total concurrent copies
    out.push(1); // maximum concurrent copies
    out.push(CHUNK.trailing_zeros() as u8); // data segment granularity
    out.push(0);
    out.push(0);
    out.extend_from_slice(&[0; 3]);
    out.push(2);
    out.extend_from_slice(&[0x02, 0xE4]);
    let n = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&n.to_be_bytes());
}

fn param(byte: usize, bit: Option<u8>) -> Fin {
    Fin::Check(Sense::invalid_field_in_parameter_list(
        byte.min(usize::from(u16::MAX)) as u16,
        bit,
    ))
}

fn illegal(asc: Asc) -> Fin {
    Fin::Check(Sense::illegal_request(asc))
}

fn copy_aborted(asc: Asc) -> Fin {
    Fin::Check(Sense::new(SenseKey::COPY_ABORTED, asc))
}

/// COPY ABORTED for segment descriptor `seg`: its number in the COMMAND-SPECIFIC
/// INFORMATION field and a segment pointer to byte `byte` of that descriptor (SPC-4
/// 4.5.2.4.5).
fn segment_error(seg: usize, byte: u16, asc: Asc) -> Fin {
    Fin::Check(
        Sense::new(SenseKey::COPY_ABORTED, asc)
            .with_command_specific(seg as u64)
            .with_sks(SenseKeySpecific::Segment {
                in_segment_descriptor: true,
                byte,
                bit: None,
            }),
    )
}

struct Segment {
    src: usize,
    dst: usize,
    blocks: u64,
    src_lba: u64,
    dst_lba: u64,
}

impl SbdLu {
    /// Parses and runs the EXTENDED COPY parameter list in scratch, sent on `nexus` (the
    /// session key of the per-nexus maps).
    pub(crate) fn xcopy(self: &Arc<Self>, ctx: &TaskCtx, nexus: usize) -> Result<(), Fin> {
        let (id, track, targets, segments) = self.xcopy_parse(ctx)?;
        let mut done = CopyResult {
            ok: false,
            segments: 0,
            bytes: 0,
        };
        let r = self.xcopy_run(ctx, &targets, &segments, &mut done);
        done.ok = r.is_ok();
        if track {
            lock(&self.copies).record(nexus, id, done);
        }
        r
    }

    #[allow(clippy::type_complexity)]
    fn xcopy_parse(&self, ctx: &TaskCtx) -> Result<(u8, bool, Vec<Arc<SbdLu>>, Vec<Segment>), Fin> {
        let s = ctx.scratch();
        if s.len() < 16 {
            return Err(illegal(Asc::PARAMETER_LIST_LENGTH_ERROR));
        }
        let id = s[0];
        let usage = (s[1] >> 3) & 0x03;
        if usage == 0x03 {
            return Err(param(1, Some(4)));
        }
        let cscd_len = usize::from(u16::from_be_bytes([s[2], s[3]]));
        let seg_len = u32::from_be_bytes([s[8], s[9], s[10], s[11]]) as usize;
        let inline = u32::from_be_bytes([s[12], s[13], s[14], s[15]]);
        if inline != 0 {
            return Err(illegal(Asc::INLINE_DATA_LENGTH_EXCEEDED));
        }
        if cscd_len % 32 != 0 {
            return Err(param(2, None));
        }
        // SPC-4 6.4.1: descriptor lists longer than MAXIMUM DESCRIPTOR LIST LENGTH are a
        // PARAMETER LIST LENGTH ERROR, whatever they hold; within it, too many of either
        // kind is TOO MANY TARGET/SEGMENT DESCRIPTORS.
        if cscd_len + seg_len > MAX_LIST {
            return Err(illegal(Asc::PARAMETER_LIST_LENGTH_ERROR));
        }
        if cscd_len / 32 > MAX_CSCD {
            return Err(illegal(Asc::TOO_MANY_TARGET_DESCRIPTORS));
        }
        if 16 + cscd_len + seg_len > s.len() {
            return Err(illegal(Asc::PARAMETER_LIST_LENGTH_ERROR));
        }
        let mut targets = Vec::with_capacity(cscd_len / 32);
        for i in 0..cscd_len / 32 {
            let at = 16 + 32 * i;
            let d = &s[at..at + 32];
            if d[0] != 0xE4 {
                return Err(illegal(Asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE));
            }
            if d[1] & 0x1F != 0 {
                return Err(param(at + 1, Some(4))); // not a direct-access block device
            }
            // Designation descriptor: NAA (type 3), 16 bytes.
            let (kind, len) = (d[5] & 0x0F, usize::from(d[7]));
            if kind != 3 || len != 16 {
                return Err(copy_aborted(Asc::COPY_TARGET_DEVICE_NOT_REACHABLE));
            }
            let mut guid = [0u8; 16];
            guid.copy_from_slice(&d[8..24]);
            let lu = if guid == self.guid {
                self.me.upgrade()
            } else {
                self.registry.get(&guid)
            };
            let lu = lu.ok_or(copy_aborted(Asc::COPY_TARGET_DEVICE_NOT_REACHABLE))?;
            let block_len = u32::from_be_bytes([0, d[29], d[30], d[31]]);
            if block_len != 0 && block_len != lu.block_size {
                return Err(param(at + 29, None));
            }
            targets.push(lu);
        }
        let mut segments = Vec::new();
        let mut at = 16 + cscd_len;
        let end = at + seg_len;
        while at < end {
            let d = s.get(at..end).unwrap_or(&[]);
            if d.len() < 4 {
                return Err(illegal(Asc::PARAMETER_LIST_LENGTH_ERROR));
            }
            if d[0] != 0x02 {
                return Err(illegal(Asc::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE));
            }
            let dlen = usize::from(u16::from_be_bytes([d[2], d[3]]));
            if dlen != 0x18 {
                return Err(param(at + 2, None));
            }
            if d.len() < 28 {
                return Err(illegal(Asc::PARAMETER_LIST_LENGTH_ERROR));
            }
            if segments.len() == MAX_SEGMENTS {
                return Err(illegal(Asc::TOO_MANY_SEGMENT_DESCRIPTORS));
            }
            let src = usize::from(u16::from_be_bytes([d[4], d[5]]));
            let dst = usize::from(u16::from_be_bytes([d[6], d[7]]));
            let seg = segments.len();
            // An index naming no CSCD descriptor names a copy target the copy manager
            // cannot reach.
            if src >= targets.len() {
                return Err(segment_error(seg, 4, Asc::UNREACHABLE_COPY_TARGET));
            }
            if dst >= targets.len() {
                return Err(segment_error(seg, 6, Asc::UNREACHABLE_COPY_TARGET));
            }
            if targets[src].block_size != targets[dst].block_size {
                return Err(copy_aborted(Asc::INCORRECT_COPY_TARGET_DEVICE_TYPE));
            }
            let blocks = u64::from(u16::from_be_bytes([d[10], d[11]]));
            let src_lba = u64::from_be_bytes(d[12..20].try_into().unwrap_or([0; 8]));
            let dst_lba = u64::from_be_bytes(d[20..28].try_into().unwrap_or([0; 8]));
            // A segment past the end of its source or destination: the copy manager's
            // READ or WRITE would fail there, so the copy is aborted at this segment
            // (checked for every segment before anything is copied).
            for (lu, lba, field) in [(&targets[src], src_lba, 12), (&targets[dst], dst_lba, 20)] {
                if lba.checked_add(blocks).is_none_or(|e| e > lu.blocks()) {
                    return Err(segment_error(seg, field, Asc::NO_ADDITIONAL_SENSE));
                }
            }
            segments.push(Segment {
                src,
                dst,
                blocks,
                src_lba,
                dst_lba,
            });
            at += 28;
        }
        for seg in &segments {
            targets[seg.dst].writable()?;
            targets[seg.dst].media_ready()?;
            targets[seg.src].media_ready()?;
        }
        Ok((id, usage != 0x02, targets, segments))
    }

    fn xcopy_run(
        &self,
        ctx: &TaskCtx,
        targets: &[Arc<SbdLu>],
        segments: &[Segment],
        done: &mut CopyResult,
    ) -> Result<(), Fin> {
        let mut buf = ctx.scratch();
        buf.clear();
        buf.resize(CHUNK as usize, 0);
        for seg in segments {
            let (src, dst) = (&targets[seg.src], &targets[seg.dst]);
            let bs = u64::from(src.block_size);
            let (mut from, mut to) = (seg.src_lba * bs, seg.dst_lba * bs);
            let mut left = seg.blocks * bs;
            while left > 0 {
                let n = left.min(u64::from(CHUNK)) as usize;
                src.store
                    .read_at(&mut buf[..n], from)
                    .map_err(|e| read_error(&e))?;
                let _g = dst.ranges.write(to..to + n as u64);
                let durable = !dst.wce.load(std::sync::atomic::Ordering::Acquire);
                dst.store
                    .write_at(&buf[..n], to, durable)
                    .map_err(|e| write_error(&e))?;
                from += n as u64;
                to += n as u64;
                left -= n as u64;
                done.bytes += n as u64;
            }
            done.segments += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operating_parameters_layout() {
        let mut out = Vec::new();
        operating_parameters(&mut out);
        assert_eq!(out.len(), 46);
        assert_eq!(&out[..4], &[0, 0, 0, 42]);
        assert_eq!(&out[8..12], &[0, 8, 0, 64]);
        assert_eq!(&out[43..], &[2, 0x02, 0xE4]);
    }

    #[test]
    fn copy_status() {
        let mut log = CopyLog::default();
        let mut out = Vec::new();
        assert!(log.status(7, 1, &mut out).is_err());
        log.record(
            7,
            1,
            CopyResult {
                ok: true,
                segments: 2,
                bytes: 4096,
            },
        );
        log.status(7, 1, &mut out).expect("status");
        assert_eq!(out, [0, 0, 0, 8, 0, 0, 2, 0, 0, 0, 0x10, 0]);
        // Another nexus' list identifier 1 is another copy.
        assert!(log.status(8, 1, &mut out).is_err());
        log.forget(7);
        assert!(log.status(7, 1, &mut out).is_err());
    }
}
