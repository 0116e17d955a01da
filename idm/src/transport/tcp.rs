//! The TCP transport: a non-blocking `mio` socket with a transmit queue written by
//! scatter-gather `writev`.
//!
//! Each queued frame is a header (BHS and header digest) and a tail (padding and data
//! digest) in small fixed arrays, and a data segment that is either a reference to the
//! caller's buffer ([`DataRef`]: Data-In goes straight from the LU's buffer to the
//! socket) or a range of a byte arena for the few control PDUs that carry data (sense,
//! text, login). The queue and the arena are reused, so steady state allocates nothing.
//! When the socket is full the rest stays queued ([`Flushed::Blocked`]); the owner writes
//! again when `mio` reports the socket writable.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};

use mio::net::TcpStream;

use super::datamover::{DataInPdu, TaskXfer};
use super::{DataRef, Flushed, Transport, TransportError, TransportKind, Xfer};
use crate::conn::{Connection, FfpParams};
use crate::keys::LocalConfig;
use crate::pdu::{Digests, Pdu, PduError, TargetSn, TxFrame, BHS_LEN, DIGEST_LEN};

/// Most iovecs handed to one `writev`.
const MAX_IOV: usize = 64;
/// Arena bytes already sent that are kept before the arena is compacted.
const ARENA_COMPACT: usize = 64 * 1024;
/// Most bytes read in one [`TcpTransport::read_into`] call before the owner processes them.
pub const READ_BUDGET: usize = 4 << 20;

#[derive(Debug, Clone, Copy)]
enum Data {
    None,
    /// Absolute offset into the arena (see `TxQueue::arena_base`).
    Arena {
        off: u64,
        len: usize,
    },
    Ext(DataRef),
}

#[derive(Debug, Clone, Copy)]
struct Entry<C> {
    head: [u8; BHS_LEN + DIGEST_LEN],
    head_len: u8,
    data: Data,
    tail: [u8; 3 + DIGEST_LEN],
    tail_len: u8,
    /// Bytes of this entry already written.
    sent: usize,
    done: Option<C>,
}

impl<C> Entry<C> {
    fn total(&self) -> usize {
        let data = match self.data {
            Data::None => 0,
            Data::Arena { len, .. } => len,
            Data::Ext(d) => d.len(),
        };
        usize::from(self.head_len) + data + usize::from(self.tail_len)
    }
}

/// The ordered transmit queue of one connection (sans-IO: it only produces slices).
#[derive(Debug)]
pub struct TxQueue<C> {
    entries: VecDeque<Entry<C>>,
    arena: Vec<u8>,
    /// Absolute offset of `arena[0]`.
    arena_base: u64,
    /// Arena bytes at the front no entry needs any more.
    arena_dead: usize,
    queued_bytes: usize,
}

impl<C: Copy> Default for TxQueue<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Copy> TxQueue<C> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            entries: VecDeque::with_capacity(256),
            arena: Vec::with_capacity(16 * 1024),
            arena_base: 0,
            arena_dead: 0,
            queued_bytes: 0,
        }
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    fn arena_put(&mut self, bytes: &[u8]) -> Data {
        if bytes.is_empty() {
            return Data::None;
        }
        let off = self.arena_base + self.arena.len() as u64;
        self.arena.extend_from_slice(bytes);
        Data::Arena {
            off,
            len: bytes.len(),
        }
    }

    fn push(&mut self, e: Entry<C>) {
        self.queued_bytes += e.total();
        self.entries.push_back(e);
    }

    /// Queues framed bytes as they are (copied).
    pub fn push_bytes(&mut self, bytes: &[u8], done: Option<C>) {
        let data = self.arena_put(bytes);
        self.push(Entry {
            head: [0; BHS_LEN + DIGEST_LEN],
            head_len: 0,
            data,
            tail: [0; 3 + DIGEST_LEN],
            tail_len: 0,
            sent: 0,
            done,
        });
    }

    /// Queues `pdu` with `data` copied (control PDUs).
    pub fn push_pdu(
        &mut self,
        pdu: &Pdu,
        data: &[u8],
        digests: Digests,
        done: Option<C>,
    ) -> Result<(), PduError> {
        let frame = TxFrame::from_pdu(pdu, &[], data, digests)?;
        let [head, _, _, _, tail] = frame.slices();
        let mut e = Entry {
            head: [0; BHS_LEN + DIGEST_LEN],
            head_len: head.len() as u8,
            data: Data::None,
            tail: [0; 3 + DIGEST_LEN],
            tail_len: tail.len() as u8,
            sent: 0,
            done,
        };
        e.head[..head.len()].copy_from_slice(head);
        e.tail[..tail.len()].copy_from_slice(tail);
        e.data = self.arena_put(data);
        self.push(e);
        Ok(())
    }

    /// Queues `pdu` with its data segment by reference (Data-In).
    pub fn push_pdu_ref(
        &mut self,
        pdu: &Pdu,
        data: DataRef,
        digests: Digests,
        done: Option<C>,
    ) -> Result<(), PduError> {
        // SAFETY: the DataRef contract: the bytes are valid until `done` is reported,
        // which happens after this entry is written or dropped.
        let bytes = unsafe { data.as_slice() };
        let frame = TxFrame::from_pdu(pdu, &[], bytes, digests)?;
        let [head, _, _, _, tail] = frame.slices();
        let mut e = Entry {
            head: [0; BHS_LEN + DIGEST_LEN],
            head_len: head.len() as u8,
            data: if data.is_empty() {
                Data::None
            } else {
                Data::Ext(data)
            },
            tail: [0; 3 + DIGEST_LEN],
            tail_len: tail.len() as u8,
            sent: 0,
            done,
        };
        e.head[..head.len()].copy_from_slice(head);
        e.tail[..tail.len()].copy_from_slice(tail);
        self.push(e);
        Ok(())
    }

    fn data_slice<'a>(arena: &'a [u8], base: u64, d: &Data) -> &'a [u8] {
        match *d {
            Data::None => &[],
            Data::Arena { off, len } => {
                let start = (off - base) as usize;
                arena.get(start..start + len).unwrap_or(&[])
            }
            // SAFETY: DataRef contract (valid until the entry's token is reported).
            Data::Ext(r) => unsafe { r.as_slice() },
        }
    }

    /// Fills `iov` with the unsent bytes of the queue, in order; returns how many.
    pub fn gather<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for e in &self.entries {
            let parts = [
                &e.head[..usize::from(e.head_len)],
                Self::data_slice(&self.arena, self.arena_base, &e.data),
                &e.tail[..usize::from(e.tail_len)],
            ];
            let mut skip = e.sent;
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                if n == iov.len() {
                    return n;
                }
                iov[n] = IoSlice::new(&p[skip..]);
                skip = 0;
                n += 1;
            }
        }
        n
    }

    /// Records that `n` bytes were written; reports finished entries' tokens.
    pub fn advance(&mut self, mut n: usize, done: &mut dyn FnMut(C)) {
        self.queued_bytes = self.queued_bytes.saturating_sub(n);
        while let Some(e) = self.entries.front_mut() {
            let left = e.total() - e.sent;
            if n < left {
                e.sent += n;
                break;
            }
            n -= left;
            self.pop_front(done);
        }
        self.compact();
    }

    fn pop_front(&mut self, done: &mut dyn FnMut(C)) {
        if let Some(e) = self.entries.pop_front() {
            if let Data::Arena { off, len } = e.data {
                let end = (off + len as u64 - self.arena_base) as usize;
                self.arena_dead = self.arena_dead.max(end);
            }
            if let Some(t) = e.done {
                done(t);
            }
        }
    }

    fn compact(&mut self) {
        if self.entries.is_empty() {
            self.arena_base += self.arena.len() as u64;
            self.arena.clear();
            self.arena_dead = 0;
        } else if self.arena_dead >= ARENA_COMPACT && self.arena_dead * 2 >= self.arena.len() {
            self.arena.drain(..self.arena_dead);
            self.arena_base += self.arena_dead as u64;
            self.arena_dead = 0;
        }
    }

    /// Drops queued entries that have not started and match `pred` (an aborted task's
    /// Data-In), reporting their tokens; returns how many matching entries are already
    /// partly written and must finish.
    pub fn cancel(&mut self, pred: impl Fn(&C) -> bool, done: &mut dyn FnMut(C)) -> usize {
        let mut busy = 0;
        let mut i = 0;
        while i < self.entries.len() {
            let e = self.entries[i];
            let hit = e.done.as_ref().is_some_and(&pred);
            if hit && e.sent == 0 {
                self.queued_bytes -= e.total();
                if let Some(e) = self.entries.remove(i) {
                    if let Some(t) = e.done {
                        done(t);
                    }
                }
                continue;
            }
            if hit {
                busy += 1;
            }
            i += 1;
        }
        busy
    }

    /// Drops everything, reporting every token.
    pub fn clear(&mut self, done: &mut dyn FnMut(C)) {
        while !self.entries.is_empty() {
            self.pop_front(done);
        }
        self.queued_bytes = 0;
        self.compact();
    }

    /// Writes as much as `w` takes without blocking.
    pub fn write_to(&mut self, w: &mut impl Write, done: &mut dyn FnMut(C)) -> io::Result<Flushed> {
        loop {
            // Entries with nothing (left) to write complete at once.
            self.advance(0, done);
            if self.entries.is_empty() {
                return Ok(Flushed::All);
            }
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let n = self.gather(&mut iov);
            let r = w.write_vectored(&iov[..n]);
            match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n, done),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// What [`TcpTransport::read_into`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// The socket has no more bytes now.
    WouldBlock,
    /// The receive buffer is full or the budget is spent: process PDUs, then read again.
    More,
    /// The peer closed its side.
    Eof,
}

/// The TCP transport of one connection (target side).
#[derive(Debug)]
pub struct TcpTransport<C> {
    stream: TcpStream,
    queue: TxQueue<C>,
    digests: Digests,
}

impl<C: Copy> TcpTransport<C> {
    /// Wraps an accepted, non-blocking socket.
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            queue: TxQueue::new(),
            digests: Digests::NONE,
        }
    }

    /// The socket (to register it with a `mio` registry).
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The transmit queue.
    pub fn queue(&self) -> &TxQueue<C> {
        &self.queue
    }

    /// Digests in force for the PDUs this transport frames.
    pub fn digests(&self) -> Digests {
        self.digests
    }

    /// Reads into the connection's receive buffer until the socket is drained, the
    /// buffer holds a whole PDU to process, or [`READ_BUDGET`] bytes were read.
    pub fn read_into(&mut self, conn: &mut Connection) -> io::Result<(usize, ReadStatus)> {
        let mut total = 0;
        loop {
            let buf = conn.read_buf();
            if buf.is_empty() {
                return Ok((total, ReadStatus::More));
            }
            match self.stream.read(buf) {
                Ok(0) => return Ok((total, ReadStatus::Eof)),
                Ok(n) => {
                    conn.commit(n);
                    total += n;
                    if total >= READ_BUDGET {
                        return Ok((total, ReadStatus::More));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((total, ReadStatus::WouldBlock))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops queued Data-In of an aborted task (see [`TxQueue::cancel`]).
    pub fn cancel(&mut self, pred: impl Fn(&C) -> bool, done: &mut dyn FnMut(C)) -> usize {
        self.queue.cancel(pred, done)
    }

    /// Shuts the socket down in both directions.
    pub fn shutdown(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl<C: Copy> Transport for TcpTransport<C> {
    type Token = C;

    fn kind(&self) -> TransportKind {
        TransportKind::Tcp
    }

    fn login_keys(&self, local: &mut LocalConfig) {
        local.rdma_extensions = false;
    }

    fn enable_datamover(&mut self, params: &FfpParams) -> bool {
        self.digests = params.digests;
        true
    }

    fn send_framed(&mut self, bytes: &[u8], done: Option<C>) {
        self.queue.push_bytes(bytes, done);
    }

    fn send_pdu(&mut self, pdu: &Pdu, data: &[u8], done: Option<C>) -> Result<(), TransportError> {
        Ok(self.queue.push_pdu(pdu, data, self.digests, done)?)
    }

    fn put_data(
        &mut self,
        x: Xfer<'_>,
        offset: u32,
        data: DataRef,
        hold_last: bool,
        done: C,
    ) -> Result<Option<DataInPdu>, TransportError> {
        let len = u32::try_from(data.len()).map_err(|_| PduError::InvalidField("length"))?;
        let digests = self.digests;
        let queue = &mut self.queue;
        let mut err = None;
        let mut last_queued = false;
        let held = x
            .task
            .data_in(offset, len, x.limits, x.sn, hold_last, |p| {
                let part = data.slice(p.buf_offset, p.len);
                let tok = p.header.final_bit.then_some(done);
                last_queued |= tok.is_some();
                if let Err(e) = queue.push_pdu_ref(&Pdu::DataIn(p.header), part, digests, tok) {
                    err.get_or_insert(e);
                }
            })?;
        if let Some(e) = err {
            return Err(e.into());
        }
        if !last_queued {
            // Everything but the held PDU is queued: the buffer is released once those
            // are written (the held PDU keeps its own reference).
            self.queue.push_bytes(&[], Some(done));
        }
        Ok(held)
    }

    fn send_held(
        &mut self,
        pdu: &DataInPdu,
        data: DataRef,
        done: Option<C>,
    ) -> Result<(), TransportError> {
        let part = data.slice(pdu.buf_offset, pdu.len);
        Ok(self
            .queue
            .push_pdu_ref(&Pdu::DataIn(pdu.header), part, self.digests, done)?)
    }

    fn get_data(
        &mut self,
        x: Xfer<'_>,
        buf_id: u8,
        offset: u32,
        len: u32,
        next_ttt: &mut dyn FnMut() -> u32,
    ) -> Result<(), TransportError> {
        let mut reqs = [None; super::datamover::MAX_R2T_SLOTS];
        let mut n = 0;
        x.task
            .get_data(buf_id, offset, len, x.limits, &mut || next_ttt(), |r| {
                if let Some(slot) = reqs.get_mut(n) {
                    *slot = Some(r);
                    n += 1;
                }
            })?;
        for r in reqs.iter().flatten() {
            self.send_r2t(x.task, r, x.sn)?;
        }
        Ok(())
    }

    fn flush(&mut self, done: &mut dyn FnMut(C)) -> Result<Flushed, TransportError> {
        Ok(self.queue.write_to(&mut self.stream, done)?)
    }

    fn free(&mut self, done: &mut dyn FnMut(C)) {
        self.queue.clear(done);
        self.shutdown();
    }
}

impl<C: Copy> TcpTransport<C> {
    /// Queues the R2T for `req` (issued by [`TaskXfer::data_out`] when a sequence
    /// completes and another may start).
    pub fn send_r2t(
        &mut self,
        xfer: &TaskXfer,
        req: &super::datamover::R2tReq,
        sn: TargetSn,
    ) -> Result<(), TransportError> {
        let pdu = Pdu::R2t(xfer.r2t_pdu(req, sn));
        Ok(self.queue.push_pdu(&pdu, &[], self.digests, None)?)
    }

    /// Queues a Data-In-like PDU whose data is referenced (any PDU, by reference).
    pub fn send_pdu_ref(
        &mut self,
        pdu: &Pdu,
        data: DataRef,
        done: Option<C>,
    ) -> Result<(), TransportError> {
        Ok(self.queue.push_pdu_ref(pdu, data, self.digests, done)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{FrameLimits, NopIn, PduReader, Role};

    /// A writer that takes at most `max` bytes per call, then blocks after `budget`.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
        budget: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n).min(self.budget);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                self.budget -= take;
                if n == self.max || self.budget == 0 {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn nop(ttt: u32) -> Pdu {
        Pdu::NopIn(NopIn {
            lun: 0,
            itt: 0xffff_ffff,
            ttt,
            sn: TargetSn::default(),
        })
    }

    #[test]
    fn writes_in_order_with_partial_writes_and_back_pressure() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut q: TxQueue<u32> = TxQueue::new();
        q.push_pdu(&nop(1), b"ctrl", Digests::BOTH, Some(1))
            .unwrap();
        // SAFETY: `data` outlives the queue's use of it (drained below).
        let r = unsafe { DataRef::new(data.as_ptr(), data.len()) };
        q.push_pdu_ref(&nop(2), r.slice(0, 5000), Digests::BOTH, Some(2))
            .unwrap();
        q.push_pdu_ref(&nop(3), r.slice(5000, 5000), Digests::BOTH, Some(3))
            .unwrap();
        q.push_bytes(&[], Some(4));
        let total = q.queued_bytes();
        let mut w = Trickle {
            out: Vec::new(),
            max: 777,
            budget: 3000,
            calls: 0,
        };
        let mut done = Vec::new();
        assert_eq!(
            q.write_to(&mut w, &mut |t| done.push(t)).unwrap(),
            Flushed::Blocked
        );
        assert_eq!(done, [1]);
        assert_eq!(w.out.len(), 3000);
        w.budget = usize::MAX;
        assert_eq!(
            q.write_to(&mut w, &mut |t| done.push(t)).unwrap(),
            Flushed::All
        );
        assert_eq!(done, [1, 2, 3, 4]);
        assert_eq!(w.out.len(), total);
        assert!(q.is_empty() && q.queued_bytes() == 0);

        // The byte stream parses back into the same PDUs and data, digests checked.
        let mut rx = PduReader::new(
            Role::Initiator,
            FrameLimits {
                digests: Digests::BOTH,
                max_data_segment_len: 65536,
            },
        );
        let mut got = Vec::new();
        let mut fed = 0;
        while fed < w.out.len() {
            fed += rx.feed(&w.out[fed..]);
            while let Some(p) = rx.next_pdu().unwrap() {
                got.push((p.pdu, p.data.to_vec()));
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (nop(1), b"ctrl".to_vec()));
        assert_eq!(got[1].1, &data[..5000]);
        assert_eq!(got[2].1, &data[5000..]);
    }

    #[test]
    fn cancel_drops_unstarted_entries_only() {
        let data = [7u8; 100];
        let mut q: TxQueue<u32> = TxQueue::new();
        // SAFETY: `data` outlives the queue.
        let r = unsafe { DataRef::new(data.as_ptr(), data.len()) };
        for t in [10, 11, 20, 12] {
            q.push_pdu_ref(&nop(t), r, Digests::NONE, Some(t)).unwrap();
        }
        let mut w = Trickle {
            out: Vec::new(),
            max: 100,
            budget: 60,
            calls: 0,
        };
        let mut done = Vec::new();
        q.write_to(&mut w, &mut |t| done.push(t)).unwrap();
        assert!(done.is_empty(), "first entry is partly written");
        let busy = q.cancel(|t| *t / 10 == 1, &mut |t| done.push(t));
        assert_eq!(busy, 1);
        assert_eq!(done, [11, 12]);
        assert_eq!(q.len(), 2);
        w.budget = usize::MAX;
        q.write_to(&mut w, &mut |t| done.push(t)).unwrap();
        assert_eq!(done, [11, 12, 10, 20]);
        assert_eq!(w.out.len(), 2 * (48 + 100));
    }

    #[test]
    fn arena_is_reused() {
        let mut q: TxQueue<u32> = TxQueue::new();
        let mut w = Trickle {
            out: Vec::new(),
            max: usize::MAX,
            budget: usize::MAX,
            calls: 0,
        };
        for i in 0..1000u32 {
            q.push_pdu(&nop(i), &[1u8; 200], Digests::NONE, None)
                .unwrap();
            q.write_to(&mut w, &mut |_| {}).unwrap();
        }
        assert!(q.arena.capacity() <= 16 * 1024);
        assert_eq!(w.out.len(), 1000 * 248);
    }
}
