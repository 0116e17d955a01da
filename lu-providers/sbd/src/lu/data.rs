//! Moving data between the port's buffers and the store.
//!
//! A *stream* (READ, WRITE, VERIFY with BYTCHK, ORWRITE) keeps up to `max_nbufs` buffers
//! busy: each buffer takes the next unclaimed piece of the command (`ctx.next`), goes to a
//! worker for the store I/O and to the port for the transfer, and takes the next piece when
//! it comes back. A buffer with nothing left to do is *retired* (freed); the last one to
//! retire ends the command. A *gather* collects a parameter list (or the blocks of WRITE
//! SAME and COMPARE AND WRITE) into the context's scratch buffer with one buffer, then runs
//! the planned [`Exec`] on a worker. *Data-in* sends the scratch buffer.

use super::ctx::{Fin, Op, TaskCtx};
use super::{Job, SbdLu, Work, CHUNK};
use plugins_sdk::abi::dbuf_flags;
use plugins_sdk::scsi::{Asc, Sense, SenseKey};
use plugins_sdk::{DataBuf, Status, TaskHandle};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Sense data for a failed read of the store.
pub(crate) fn read_error(e: &io::Error) -> Fin {
    tracing::warn!("sbd: backing store read failed: {e}");
    Fin::Check(Sense::new(
        SenseKey::MEDIUM_ERROR,
        Asc::UNRECOVERED_READ_ERROR,
    ))
}

/// Sense data for a failed write to the store.
pub(crate) fn write_error(e: &io::Error) -> Fin {
    tracing::warn!("sbd: backing store write failed: {e}");
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return Fin::Check(Sense::new(
            SenseKey::DATA_PROTECT,
            Asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
        ));
    }
    Fin::Check(Sense::new(SenseKey::MEDIUM_ERROR, Asc::WRITE_ERROR))
}

/// Claims the next piece of the command for a buffer of `cap` bytes.
fn claim(ctx: &TaskCtx, cap: usize) -> Option<(u64, usize)> {
    if ctx.failed.load(Ordering::Acquire) || cap == 0 {
        return None;
    }
    let total = ctx.total_bytes();
    let off = ctx.next.fetch_add(cap as u64, Ordering::AcqRel);
    (off < total).then(|| (off, (total - off).min(cap as u64) as usize))
}

impl TaskCtx {
    pub(crate) fn total_bytes(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }
}

impl SbdLu {
    /// Asks the port for a buffer of up to `want` bytes.
    fn alloc(&self, task: &TaskHandle, want: u64) -> Option<DataBuf> {
        let size = u32::try_from(want).unwrap_or(u32::MAX).clamp(1, CHUNK);
        let min = size.min(self.block_size);
        let buf = match self.host.dbuf_alloc(task, size, min) {
            Ok(b) => b,
            Err(could) if could > 0 => self.host.dbuf_alloc(task, could, could).ok()?,
            Err(_) => return None,
        };
        if buf.capacity() == 0 {
            self.host.dbuf_free(task, buf);
            return None;
        }
        Some(buf)
    }

    /// Queues a step of `task` on a worker; the job counts as busy until it leaves.
    fn submit(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx, work: Work) {
        if !ctx.enter() {
            // Aborted meanwhile: give the buffer back and let go.
            match work {
                Work::Read(b) | Work::Out(b) => self.retire(task, ctx, b),
                Work::Exec => {}
            }
            self.leave(task, ctx);
            return;
        }
        self.pool.submit(Job::Task {
            lu: Arc::clone(self),
            task: task.clone(),
            work,
        });
    }

    /// Frees a buffer of a stream; the last one ends the stream.
    fn retire(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx, buf: DataBuf) {
        self.host.dbuf_free(task, buf);
        if ctx.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.stream_end(task, ctx);
        }
    }

    fn stream_end(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx) {
        match ctx.op {
            Op::Gather(_) if !ctx.failed.load(Ordering::Acquire) && !ctx.aborted() => {
                self.submit(task, ctx, Work::Exec)
            }
            _ => ctx.complete(Fin::Good),
        }
    }

    /// Hands a buffer to the port; on refusal records the failure and retires it.
    fn xfer(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx, buf: DataBuf) {
        if let Err((status, buf)) = self.host.xfer_data(task, buf, 0) {
            self.transfer_failed(ctx, status);
            self.retire(task, ctx, buf);
        }
    }

    fn transfer_failed(&self, ctx: &TaskCtx, status: Status) {
        if status == Status::ABORTED {
            // The core is aborting the task: no status will be wanted.
            ctx.failed.store(true, Ordering::Release);
        } else {
            tracing::debug!(%status, "sbd: data transfer failed");
            ctx.record(Fin::Check(Sense::new(
                SenseKey::ABORTED_COMMAND,
                Asc::DATA_PHASE_ERROR,
            )));
        }
    }

    /// Starts what `new_task` planned.
    pub(crate) fn launch(
        self: &Arc<Self>,
        task: &TaskHandle,
        ctx: &TaskCtx,
        initial: Option<DataBuf>,
    ) {
        let initial = match ctx.op {
            Op::Write { .. } | Op::Verify | Op::OrWrite { .. } | Op::Gather(_) => initial,
            _ => {
                if let Some(b) = initial {
                    self.host.dbuf_free(task, b);
                }
                None
            }
        };
        match ctx.op {
            Op::None => ctx.complete(Fin::Good),
            Op::DataIn => self.start_data_in(task, ctx),
            Op::Read => self.start_read(task, ctx),
            Op::Write { .. } | Op::Verify | Op::OrWrite { .. } => {
                self.start_out(task, ctx, initial)
            }
            Op::Gather(_) => self.start_gather(task, ctx, initial),
            Op::Exec(_) => self.submit(task, ctx, Work::Exec),
        }
    }

    /// A buffer came back from the port.
    pub(crate) fn xfer_done(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx, mut buf: DataBuf) {
        let status = buf.xfer_status();
        if status != Status::SUCCESS {
            self.transfer_failed(ctx, status);
            return self.retire(task, ctx, buf);
        }
        match ctx.op {
            Op::Read => match claim(ctx, buf.capacity()) {
                Some((off, len)) => {
                    buf.set_xfer(off, len, dbuf_flags::TO_RPORT);
                    self.submit(task, ctx, Work::Read(buf));
                }
                None => self.retire(task, ctx, buf),
            },
            Op::Write { .. } | Op::Verify | Op::OrWrite { .. } => {
                self.submit(task, ctx, Work::Out(buf))
            }
            Op::Gather(_) => {
                self.gathered(ctx, &buf);
                self.next_in(task, ctx, buf);
            }
            Op::DataIn => self.next_data_in(task, ctx, buf),
            _ => self.retire(task, ctx, buf),
        }
    }

    /// Runs a worker step.
    pub(crate) fn run(self: Arc<Self>, task: &TaskHandle, work: Work) {
        let Some(ctx) = Self::ctx_of(task) else {
            return;
        };
        match work {
            Work::Read(buf) => self.read_piece(task, ctx, buf),
            Work::Out(buf) => self.out_piece(task, ctx, buf),
            Work::Exec => {
                if ctx.aborted() {
                    ctx.complete(Fin::Good);
                } else {
                    self.exec(task, ctx);
                }
            }
        }
        self.leave(task, ctx);
    }

    // ---- READ -----------------------------------------------------------------------------

    fn start_read(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx) {
        if ctx.total_bytes() == 0 {
            return ctx.complete(Fin::Good);
        }
        let want = usize::from(task.max_nbufs().max(1));
        for _ in 0..want {
            let left = ctx
                .total_bytes()
                .saturating_sub(ctx.next.load(Ordering::Acquire));
            if left == 0 {
                break;
            }
            let Some(mut buf) = self.alloc(task, left) else {
                break;
            };
            match claim(ctx, buf.capacity()) {
                Some((off, len)) => {
                    buf.set_xfer(off, len, dbuf_flags::TO_RPORT);
                    ctx.inflight.fetch_add(1, Ordering::AcqRel);
                    self.submit(task, ctx, Work::Read(buf));
                }
                None => {
                    self.host.dbuf_free(task, buf);
                    break;
                }
            }
        }
        if ctx.inflight.load(Ordering::Acquire) == 0 && ctx.next.load(Ordering::Acquire) == 0 {
            ctx.complete(Fin::Busy);
        }
    }

    fn read_piece(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx, mut buf: DataBuf) {
        if ctx.failed.load(Ordering::Acquire) {
            return self.retire(task, ctx, buf);
        }
        let (off, len) = (buf.rel_offset(), buf.xfer_len());
        let r = match buf.as_mut_slice().get_mut(..len) {
            Some(dst) => self.store.read_at(dst, ctx.base + off),
            None => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        };
        match r {
            Ok(()) => self.xfer(task, ctx, buf),
            Err(e) => {
                ctx.record(read_error(&e));
                self.retire(task, ctx, buf);
            }
        }
    }

    // ---- WRITE, VERIFY (BYTCHK 01b), ORWRITE --------------------------------------------

    fn start_out(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx, initial: Option<DataBuf>) {
        if ctx.total_bytes() == 0 {
            if let Some(b) = initial {
                self.host.dbuf_free(task, b);
            }
            return ctx.complete(Fin::Good);
        }
        let mut slots = usize::from(task.max_nbufs().max(1));
        if let Some(buf) = initial {
            // Immediate data: the first bytes of the command.
            let end = (buf.rel_offset() + buf.xfer_len() as u64).min(ctx.total_bytes());
            ctx.next.store(end, Ordering::Release);
            ctx.inflight.fetch_add(1, Ordering::AcqRel);
            self.submit(task, ctx, Work::Out(buf));
            slots = slots.saturating_sub(1).max(1);
        }
        for _ in 0..slots {
            let left = ctx
                .total_bytes()
                .saturating_sub(ctx.next.load(Ordering::Acquire));
            if left == 0 {
                break;
            }
            let Some(buf) = self.alloc(task, left) else {
                break;
            };
            ctx.inflight.fetch_add(1, Ordering::AcqRel);
            self.next_in(task, ctx, buf);
        }
        if ctx.inflight.load(Ordering::Acquire) == 0 && ctx.next.load(Ordering::Acquire) == 0 {
            ctx.complete(Fin::Busy);
        }
    }

    /// Asks the initiator for the next piece into `buf`, or retires it.
    fn next_in(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx, mut buf: DataBuf) {
        match claim(ctx, buf.capacity()) {
            Some((off, len)) => {
                buf.set_xfer(off, len, dbuf_flags::FROM_RPORT);
                self.xfer(task, ctx, buf);
            }
            None => self.retire(task, ctx, buf),
        }
    }

    fn out_piece(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx, buf: DataBuf) {
        if ctx.failed.load(Ordering::Acquire) {
            return self.retire(task, ctx, buf);
        }
        let off = buf.rel_offset();
        let n = (buf.xfer_len() as u64).min(ctx.total_bytes().saturating_sub(off)) as usize;
        let data = buf.data().get(..n).unwrap_or(&[]);
        let at = ctx.base + off;
        let range = at..at + n as u64;
        let r = match ctx.op {
            Op::Write { durable } => {
                let _g = self.ranges.write(range);
                self.store
                    .write_at(data, at, durable)
                    .map_err(|e| write_error(&e))
            }
            Op::Verify => self.compare(ctx, data, at, off),
            Op::OrWrite { durable } => {
                let _g = self.ranges.exclusive(range);
                let mut s = ctx.scratch();
                s.clear();
                s.resize(n, 0);
                match self.store.read_at(&mut s, at) {
                    Ok(()) => {
                        s.iter_mut().zip(data).for_each(|(d, x)| *d |= *x);
                        self.store
                            .write_at(&s, at, durable)
                            .map_err(|e| write_error(&e))
                    }
                    Err(e) => Err(read_error(&e)),
                }
            }
            _ => Ok(()),
        };
        if let Err(fin) = r {
            ctx.record(fin);
        }
        self.next_in(task, ctx, buf);
    }

    /// Compares `data` with the medium at byte `at`; `rel` is its offset in the data-out
    /// buffer (reported in MISCOMPARE sense).
    pub(crate) fn compare(&self, ctx: &TaskCtx, data: &[u8], at: u64, rel: u64) -> Result<(), Fin> {
        let mut s = ctx.scratch();
        s.clear();
        s.resize(data.len(), 0);
        self.store.read_at(&mut s, at).map_err(|e| read_error(&e))?;
        match s.iter().zip(data).position(|(a, b)| a != b) {
            Some(i) => Err(Fin::Check(Sense::miscompare(rel + i as u64))),
            None => Ok(()),
        }
    }

    // ---- parameter data in (gather) -------------------------------------------------------

    fn start_gather(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx, initial: Option<DataBuf>) {
        {
            let mut s = ctx.scratch();
            s.clear();
            s.resize(ctx.total_bytes() as usize, 0);
        }
        if let Some(buf) = initial {
            self.gathered(ctx, &buf);
            let end = (buf.rel_offset() + buf.xfer_len() as u64).min(ctx.total_bytes());
            ctx.next.store(end, Ordering::Release);
            self.host.dbuf_free(task, buf);
        }
        let left = ctx
            .total_bytes()
            .saturating_sub(ctx.next.load(Ordering::Acquire));
        if left == 0 {
            return self.submit(task, ctx, Work::Exec);
        }
        match self.alloc(task, left) {
            Some(buf) => {
                ctx.inflight.fetch_add(1, Ordering::AcqRel);
                self.next_in(task, ctx, buf);
            }
            None => ctx.complete(Fin::Busy),
        }
    }

    fn gathered(&self, ctx: &TaskCtx, buf: &DataBuf) {
        let off = buf.rel_offset() as usize;
        let mut s = ctx.scratch();
        let n = buf.xfer_len().min(s.len().saturating_sub(off));
        if let (Some(dst), Some(src)) = (s.get_mut(off..off + n), buf.data().get(..n)) {
            dst.copy_from_slice(src);
        }
    }

    // ---- parameter data out (data-in) -----------------------------------------------------

    /// Sends the first `ctx.total` bytes of scratch to the initiator.
    pub(crate) fn start_data_in(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx) {
        if ctx.total_bytes() == 0 {
            return ctx.complete(Fin::Good);
        }
        match self.alloc(task, ctx.total_bytes()) {
            Some(buf) => {
                ctx.inflight.fetch_add(1, Ordering::AcqRel);
                self.next_data_in(task, ctx, buf);
            }
            None => ctx.complete(Fin::Busy),
        }
    }

    fn next_data_in(self: &Arc<Self>, task: &TaskHandle, ctx: &TaskCtx, mut buf: DataBuf) {
        let Some((off, len)) = claim(ctx, buf.capacity()) else {
            return self.retire(task, ctx, buf);
        };
        {
            let s = ctx.scratch();
            let o = off as usize;
            if let (Some(dst), Some(src)) = (buf.as_mut_slice().get_mut(..len), s.get(o..o + len)) {
                dst.copy_from_slice(src);
            }
        }
        buf.set_xfer(off, len, dbuf_flags::TO_RPORT);
        self.xfer(task, ctx, buf);
    }
}
