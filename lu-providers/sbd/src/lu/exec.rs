//! The commands that run on a worker after their data-out (if any) is collected: UNMAP,
//! WRITE SAME, COMPARE AND WRITE, VERIFY with BYTCHK 11b, PRE-FETCH, SYNCHRONIZE CACHE,
//! GET LBA STATUS, START STOP UNIT, MODE SELECT, PERSISTENT RESERVE OUT, EXTENDED COPY and
//! SANITIZE. Every parameter list is validated whole before any block is touched.

use super::ctx::{Fin, Op, TaskCtx};
use super::data::{read_error, write_error};
use super::{lock, max_unmap_blocks, ua, Job, SbdLu, CHUNK, MAX_UNMAP_DESCRIPTORS};
use crate::pr::PrOutCdb;
use crate::scsi::mode;
use plugins_sdk::scsi::{Asc, Sense};
use plugins_sdk::TaskHandle;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A planned worker step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exec {
    /// MODE SELECT (6)/(10).
    ModeSelect { cdb_len: u8, sp: bool },
    /// UNMAP.
    Unmap,
    /// PERSISTENT RESERVE OUT.
    PrOut(PrOutCdb),
    /// WRITE SAME (pattern in scratch, or zeros with NDOB).
    WriteSame {
        lba: u64,
        blocks: u64,
        unmap: bool,
        durable: bool,
    },
    /// COMPARE AND WRITE (verify data then write data in scratch).
    CompareAndWrite {
        lba: u64,
        blocks: u64,
        durable: bool,
    },
    /// VERIFY with BYTCHK 11b (one block in scratch, compared with every block).
    VerifyEach { lba: u64, blocks: u64 },
    /// PRE-FETCH.
    Prefetch { lba: u64, blocks: u64 },
    /// SYNCHRONIZE CACHE.
    Sync { immed: bool },
    /// GET LBA STATUS.
    GetLbaStatus { lba: u64, alloc_len: u32 },
    /// START STOP UNIT.
    StartStop { start: bool, flush: bool },
    /// EXTENDED COPY (LID1).
    Xcopy,
    /// SANITIZE (OVERWRITE with its parameter list in scratch, or BLOCK ERASE).
    Sanitize { sa: u8, immed: bool, ause: bool },
}

fn param_len_error() -> Fin {
    Fin::Check(Sense::illegal_request(Asc::PARAMETER_LIST_LENGTH_ERROR))
}

fn param_field(byte: usize, bit: Option<u8>) -> Fin {
    Fin::Check(Sense::invalid_field_in_parameter_list(
        byte.min(usize::from(u16::MAX)) as u16,
        bit,
    ))
}

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([
        b.get(at).copied().unwrap_or(0),
        b.get(at + 1).copied().unwrap_or(0),
    ]))
}

fn be32(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 4)
        .and_then(|x| x.try_into().ok())
        .map_or(0, |x| u64::from(u32::from_be_bytes(x)))
}

fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|x| x.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// What an exec step produced.
enum Done {
    /// Status (GOOD or an error).
    Status(Fin),
    /// A reply is in scratch: send it.
    DataIn,
    /// Status was sent already (IMMED), or will be by whoever finishes the work.
    Detached,
}

impl SbdLu {
    pub(crate) fn exec(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx) {
        let exec = match ctx.op {
            Op::Exec(e) | Op::Gather(e) => e,
            _ => return ctx.complete(Fin::Good),
        };
        let done = match exec {
            Exec::ModeSelect { cdb_len, sp } => Done::Status(
                self.mode_select(task, ctx, cdb_len, sp)
                    .err()
                    .unwrap_or(Fin::Good),
            ),
            Exec::Unmap => Done::Status(self.unmap(ctx).err().unwrap_or(Fin::Good)),
            Exec::PrOut(cdb) => {
                Done::Status(self.pr_out(task, ctx, cdb).err().unwrap_or(Fin::Good))
            }
            Exec::WriteSame {
                lba,
                blocks,
                unmap,
                durable,
            } => {
                let ndob = matches!(ctx.op, Op::Exec(_));
                Done::Status(
                    self.write_same(ctx, lba, blocks, unmap, durable, ndob)
                        .err()
                        .unwrap_or(Fin::Good),
                )
            }
            Exec::CompareAndWrite {
                lba,
                blocks,
                durable,
            } => Done::Status(
                self.compare_and_write(ctx, lba, blocks, durable)
                    .err()
                    .unwrap_or(Fin::Good),
            ),
            Exec::VerifyEach { lba, blocks } => Done::Status(
                self.verify_each(ctx, lba, blocks)
                    .err()
                    .unwrap_or(Fin::Good),
            ),
            Exec::Prefetch { lba, blocks } => {
                let _ = self.store.prefetch(lba << self.shift, blocks << self.shift);
                Done::Status(Fin::Good)
            }
            Exec::Sync { immed: true } => {
                ctx.complete(Fin::Good);
                self.pool.submit(Job::Flush {
                    lu: Arc::clone(self),
                });
                Done::Detached
            }
            Exec::Sync { immed: false } => Done::Status(
                self.store
                    .flush()
                    .map_err(|e| write_error(&e))
                    .err()
                    .unwrap_or(Fin::Good),
            ),
            Exec::GetLbaStatus { lba, alloc_len } => {
                match self.get_lba_status(task, ctx, lba, alloc_len) {
                    Ok(()) => Done::DataIn,
                    Err(f) => Done::Status(f),
                }
            }
            Exec::StartStop { start, flush } => {
                let r = if !start && flush {
                    self.store.flush().map_err(|e| write_error(&e))
                } else {
                    Ok(())
                };
                if r.is_ok() {
                    self.stopped.store(!start, Ordering::Release);
                }
                Done::Status(r.err().unwrap_or(Fin::Good))
            }
            Exec::Xcopy => Done::Status(
                self.xcopy(ctx, task.session().0 as usize)
                    .err()
                    .unwrap_or(Fin::Good),
            ),
            Exec::Sanitize { sa, immed, ause } => {
                match self.sanitize_start(task, ctx, sa, immed, ause) {
                    Ok(()) => Done::Detached,
                    Err(f) => Done::Status(f),
                }
            }
        };
        match done {
            Done::Status(f) => ctx.complete(f),
            Done::DataIn => self.start_data_in(task, ctx),
            Done::Detached => {}
        }
    }

    fn mode_select(
        &self,
        task: &TaskHandle,
        ctx: &TaskCtx,
        cdb_len: u8,
        sp: bool,
    ) -> Result<(), Fin> {
        let s = ctx.scratch();
        let mut ms = lock(&self.mode);
        let new = mode::select(&s, cdb_len, &ms.current, self.block_size)?;
        drop(s);
        let changed = new != ms.current;
        ms.current = new;
        if sp {
            ms.saved = new;
        }
        self.wce.store(new.wce, Ordering::Release);
        self.d_sense.store(new.d_sense, Ordering::Release);
        self.swp.store(new.swp, Ordering::Release);
        drop(ms);
        if changed {
            self.raise_ua(ua::MODE_CHANGED, Some(task.session().0 as usize));
        }
        if sp {
            self.update_meta(|m| {
                m.write_cache = new.wce;
                m.mode = crate::meta::SavedMode {
                    d_sense: new.d_sense,
                    swp: new.swp,
                    dexcpt: new.dexcpt,
                    mrie: new.mrie,
                    rcd: new.rcd,
                };
            })
            .map_err(|e| {
                tracing::error!("sbd: saving mode parameters: {e}");
                write_error(&std::io::Error::other(e.to_string()))
            })?;
        }
        Ok(())
    }

    fn unmap(&self, ctx: &TaskCtx) -> Result<(), Fin> {
        let s = ctx.scratch();
        if s.len() < 8 {
            return Err(param_len_error());
        }
        let bd_len = be16(&s, 2);
        if bd_len + 8 > s.len() {
            return Err(param_len_error());
        }
        let n = bd_len / 16;
        if n > MAX_UNMAP_DESCRIPTORS {
            return Err(param_field(2, None));
        }
        let blocks = self.blocks();
        let max = max_unmap_blocks(u64::from(self.block_size));
        for i in 0..n {
            let d = 8 + 16 * i;
            let (lba, count) = (be64(&s, d), be32(&s, d + 8));
            if count > max {
                return Err(param_field(d + 8, None));
            }
            if lba.checked_add(count).is_none_or(|end| end > blocks) {
                return Err(Fin::Check(Sense::lba_out_of_range()));
            }
        }
        for i in 0..n {
            let d = 8 + 16 * i;
            let (lba, count) = (be64(&s, d), be32(&s, d + 8));
            if count == 0 {
                continue;
            }
            let (at, len) = (lba << self.shift, count << self.shift);
            let _g = self.ranges.write(at..at + len);
            self.store.discard(at, len).map_err(|e| write_error(&e))?;
        }
        Ok(())
    }

    fn pr_out(&self, task: &TaskHandle, ctx: &TaskCtx, cdb: PrOutCdb) -> Result<(), Fin> {
        let n = self.nexus_id(task.session());
        let s = ctx.scratch();
        let mut pr = lock(&self.pr);
        let out = pr.pr_out(&n, cdb, &s).map_err(super::pr_fin)?;
        drop(s);
        self.pr_active
            .store(pr.any_reservation(), Ordering::Release);
        let saved = pr.saved();
        drop(pr);
        if !out.uas.is_empty() {
            let mut map = lock(&self.nexus);
            for (reg, what) in &out.uas {
                let bit = match what {
                    crate::pr::PrUa::RegistrationsPreempted => ua::REG_PREEMPTED,
                    crate::pr::PrUa::ReservationsPreempted => ua::RES_PREEMPTED,
                    crate::pr::PrUa::ReservationsReleased => ua::RES_RELEASED,
                };
                for st in map.values_mut() {
                    if reg.matches(&st.id) && st.id != n {
                        st.ua |= bit;
                    }
                }
            }
        }
        if !out.abort.is_empty() {
            // PREEMPT AND ABORT: the core has no call to abort another nexus' tasks yet;
            // they complete normally. See docs/sbd.md.
            tracing::debug!(
                count = out.abort.len(),
                "sbd: PREEMPT AND ABORT cannot abort the preempted nexuses' tasks"
            );
        }
        if out.persist && (saved.is_some() || lock(&self.meta).pr.is_some()) {
            self.update_meta(|m| m.pr = saved).map_err(|e| {
                tracing::error!("sbd: persisting reservations: {e}");
                Fin::Check(Sense::new(
                    plugins_sdk::scsi::SenseKey::HARDWARE_ERROR,
                    Asc::INSUFFICIENT_REGISTRATION_RESOURCES,
                ))
            })?;
        }
        Ok(())
    }

    /// Writes `pattern` (one block) over `blocks` blocks at `lba`, using scratch as a
    /// repeated-pattern buffer.
    fn fill(
        &self,
        ctx: &TaskCtx,
        lba: u64,
        blocks: u64,
        pattern_in_scratch: bool,
        durable: bool,
    ) -> Result<(), Fin> {
        let bs = u64::from(self.block_size);
        let mut s = ctx.scratch();
        if !pattern_in_scratch {
            s.clear();
            s.resize(bs as usize, 0);
        }
        s.truncate(bs as usize);
        let reps = (u64::from(CHUNK) / bs).min(blocks.max(1)) as usize;
        for _ in 1..reps {
            s.extend_from_within(..bs as usize);
        }
        let mut at = lba << self.shift;
        let end = (lba + blocks) << self.shift;
        while at < end {
            let n = (end - at).min(s.len() as u64) as usize;
            let _g = self.ranges.write(at..at + n as u64);
            self.store
                .write_at(&s[..n], at, durable)
                .map_err(|e| write_error(&e))?;
            at += n as u64;
        }
        Ok(())
    }

    fn write_same(
        &self,
        ctx: &TaskCtx,
        lba: u64,
        blocks: u64,
        unmap: bool,
        durable: bool,
        ndob: bool,
    ) -> Result<(), Fin> {
        let bs = self.block_size as usize;
        if !ndob && ctx.scratch().len() < bs {
            return Err(param_len_error());
        }
        let (at, len) = (lba << self.shift, blocks << self.shift);
        // UNMAP asks for deallocation whatever the block holds (SBC-3 4.7.3.4, as Linux's
        // target and tgt do): on a store whose deallocated blocks read as zeros (LBPRZ) the
        // blocks are deallocated and read back zero. Elsewhere (a device whose discards
        // leave garbage, LBPRZ = 0) the data is written, which SBC also allows.
        if unmap && self.store.caps().discard_zeroes {
            let _g = self.ranges.write(at..at + len);
            self.store.discard(at, len).map_err(|e| write_error(&e))?;
            if durable {
                self.store.flush().map_err(|e| write_error(&e))?;
            }
            return Ok(());
        }
        self.fill(ctx, lba, blocks, !ndob, durable)
    }

    fn compare_and_write(
        &self,
        ctx: &TaskCtx,
        lba: u64,
        blocks: u64,
        durable: bool,
    ) -> Result<(), Fin> {
        let bytes = (blocks << self.shift) as usize;
        let at = lba << self.shift;
        let mut s = ctx.scratch();
        if s.len() < 2 * bytes {
            return Err(param_len_error());
        }
        s.resize(3 * bytes, 0);
        let _g = self.ranges.exclusive(at..at + bytes as u64);
        let (data, current) = s.split_at_mut(2 * bytes);
        self.store
            .read_at(current, at)
            .map_err(|e| read_error(&e))?;
        if let Some(i) = data[..bytes]
            .iter()
            .zip(current.iter())
            .position(|(a, b)| a != b)
        {
            return Err(Fin::Check(Sense::miscompare(i as u64)));
        }
        self.store
            .write_at(&data[bytes..], at, durable)
            .map_err(|e| write_error(&e))
    }

    fn verify_each(&self, ctx: &TaskCtx, lba: u64, blocks: u64) -> Result<(), Fin> {
        let bs = self.block_size as usize;
        let mut s = ctx.scratch();
        if s.len() < bs {
            return Err(param_len_error());
        }
        s.resize(2 * bs, 0);
        let (pattern, block) = s.split_at_mut(bs);
        for i in 0..blocks {
            self.store
                .read_at(block, (lba + i) << self.shift)
                .map_err(|e| read_error(&e))?;
            if let Some(j) = pattern.iter().zip(block.iter()).position(|(a, b)| a != b) {
                return Err(Fin::Check(Sense::miscompare(i * bs as u64 + j as u64)));
            }
        }
        Ok(())
    }

    fn get_lba_status(
        &self,
        task: &TaskHandle,
        ctx: &TaskCtx,
        lba: u64,
        alloc_len: u32,
    ) -> Result<(), Fin> {
        let blocks = self.blocks();
        let bs = u64::from(self.block_size);
        let max_desc = ((alloc_len.saturating_sub(8)) / 16).clamp(1, 1024) as usize;
        let mut s = ctx.scratch();
        s.clear();
        s.extend_from_slice(&[0; 8]);
        let mut cur = lba;
        let mut n = 0;
        while cur < blocks && n < max_desc {
            let (mapped, end_byte) = self.store.extent(cur * bs).map_err(|e| read_error(&e))?;
            // A block partly mapped is mapped.
            let end = if mapped {
                end_byte.div_ceil(bs)
            } else {
                end_byte / bs
            };
            let end = end.clamp(cur + 1, blocks);
            let count = (end - cur).min(u64::from(u32::MAX));
            s.extend_from_slice(&cur.to_be_bytes());
            s.extend_from_slice(&(count as u32).to_be_bytes());
            s.push(if mapped { 0 } else { 1 });
            s.extend_from_slice(&[0; 3]);
            cur += count;
            n += 1;
        }
        let len = (s.len() - 4) as u32;
        s[..4].copy_from_slice(&len.to_be_bytes());
        let reply = (s.len() as u64).min(u64::from(alloc_len));
        drop(s);
        task.set_cmd_xfer_len(reply);
        ctx.total
            .store(reply.min(task.expected_xfer_len()), Ordering::Release);
        Ok(())
    }
}
