//! One iSCSI connection: the IDM state machine and the TCP transport behind a lock, the
//! login, and the full feature phase (commands, data, status, TMF, NOP, text, logout).
//!
//! Whoever holds the lock does the protocol work (the event loop for received bytes, an
//! LU thread for `xfer_data`/`send_status`), writes to the socket as far as it goes, and
//! leaves the calls into the core to the [`Frame`] (see `deferred`). When the socket is
//! full the rest waits in the transport's queue for the loop's writable event.

use super::admission::Ticket;
use super::deferred::{defer, Act, Frame};
use super::pool::{BufPool, OwnedBuf};
use super::session::{HeldPdu, Session, Slot};
use super::Runtime;
use crate::auth::Identity;
use crate::config::{AclPolicy, TargetState};
use crate::discovery::{answer_text, DiscoveryContext, TextInput, TextResponder};
use crate::ffp::{self, Admit, CmdStatus};
use crate::limits::Limits;
use crate::login::{
    AuthFailure, ExistingSession, LoginEnv, LoginHost, LoginOutcome, LoginSettings, LoginStep,
    SessionDisposition, SessionKey, TargetLogin,
};
use crate::names::IscsiName;
use idm::conn::{ConnConfig, ConnEvent, Connection, FfpParams, Notify};
use idm::keys::{NegotiatedParams, SessionType};
use idm::pdu::{
    AsyncEvent, AsyncMessage, Cdb, DataOut, ErrorAction, LoginResponse, LoginStatus, LogoutReason,
    LogoutRequest, LogoutResponse, LogoutResponseCode, NopIn, NopOut, Pdu, Reject, RejectReason,
    Role, RxPdu, ScsiCommand, TargetSn, TaskMgmtRequest, TaskMgmtResponse, TextRequest,
    TmfResponse, BHS_LEN, RESERVED_TAG,
};
use idm::text::DEFAULT_TEXT_CAP;
use idm::transport::datamover::{
    DataInPdu, R2tReq, TaskXfer, XferError, XferLimits, MAX_BUFS, MAX_R2T_SLOTS,
};
use idm::transport::tcp::{ReadStatus, TcpTransport};
use idm::transport::{DataRef, Flushed, Transport, Xfer};
use plugins_sdk::abi::{dbuf_flags, task_flags, DataBufRaw};
use plugins_sdk::scsi::ScsiStatus;
use plugins_sdk::{AbortOutcome, DataBuf, Host, Status, TaskHandle, TaskId, TaskSpec, TmFunction};
use std::collections::HashMap;
use std::ffi::c_void;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

/// A buffer pointer carried in a completion token.
#[derive(Clone, Copy, PartialEq, Eq)]
struct RawBuf(*mut DataBufRaw);
// SAFETY: a buffer is owned by exactly one party; the token is how ownership travels
// back from the transport queue to the code that completes the transfer.
unsafe impl Send for RawBuf {}

/// Completion tokens of the transport queue.
#[derive(Clone, Copy)]
enum Tok {
    /// The Data-In of a TO_RPORT buffer (of the task with this ITT and id) left the socket:
    /// complete the transfer.
    XferIn(u32, TaskId, RawBuf),
    /// A held (final) Data-In left the socket: its buffer may be recycled.
    Unpin(RawBuf),
}

/// Why a connection ends, which decides what happens to its session (ERL 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gone {
    /// Failure or protocol error: at ERL 0 the session fails with it.
    Failed,
    /// Logout of this connection: the session lives on if it has others.
    LoggedOutConn,
    /// Logout of the session.
    LoggedOutSession,
    /// The session is being closed by someone else.
    SessionClosing,
}

/// A Data-In PDU held back for status phase collapse.
struct Held {
    pdu: DataInPdu,
    data: DataRef,
    raw: RawBuf,
}

/// The port's state of one command.
struct Cmd {
    /// The task, once allocated: the port's own handle, kept until `task_free`.
    task: Option<TaskHandle>,
    xfer: TaskXfer,
    cdb: Cdb,
    lun: [u8; 8],
    flags: u32,
    attr: u8,
    cmd_sn: u32,
    /// The unsolicited burst being gathered before the command is posted.
    collect: Option<DataBuf>,
    collected: u32,
    out_bufs: [Option<DataBuf>; MAX_BUFS],
    held: Option<Held>,
    in_flight: u8,
    aborted: bool,
    abort_pending: bool,
    /// `lport_aborted` is queued.
    abort_done: bool,
    status_sent: bool,
    /// `send_status_done` is queued.
    status_done: bool,
    /// A data sequence error ended the command: its status is this CHECK CONDITION.
    data_error: Option<(u8, u8)>,
    /// The session slot (window or immediate) the command holds until its status is
    /// queued or it is dropped.
    slot: Slot,
}

enum Phase {
    Login(Option<Box<TargetLogin>>),
    Ffp,
    Closed,
}

struct Core {
    tx: TcpTransport<Tok>,
    phase: Phase,
    stat_sn: u32,
    login_cmd_sn: u32,
    session: Option<Arc<Session>>,
    params: NegotiatedParams,
    tasks: HashMap<u32, Cmd>,
    /// Commands whose status went out but whose task is not freed yet, displaced from
    /// `tasks` by a new command reusing the ITT.
    zombies: Vec<Cmd>,
    /// ITTs whose ABORT TASK found the status already sent: the TMF answers
    /// TASK DOES NOT EXIST.
    late_aborts: Vec<u32>,
    limits: XferLimits,
    next_ttt: u32,
    scratch: Vec<u8>,
    done: Vec<Tok>,
    text: Option<TextResponder>,
    last_rx: Instant,
    /// Last time the transmit queue was empty or the socket took bytes.
    last_tx: Instant,
    ping: Option<(u32, Instant)>,
    /// The limits in force (refreshed on ticks).
    lim: Limits,
    /// The connection takes no PDUs: too much is queued for the socket.
    rx_paused: bool,
    /// Taking PDUs again is due (the queue drained).
    rx_resume: bool,
    /// The connection's place in the admission counts.
    ticket: Option<Ticket>,
    /// Slots of TMF requests in the core, by ITT.
    tmf_slots: Vec<(u32, Slot)>,
    close_after_flush: bool,
    after_flush: Option<Gone>,
    gone: Option<Gone>,
    closed: bool,
    cold_reset_itt: Option<u32>,
}

struct ConnSt {
    idm: Connection,
    c: Core,
}

/// One connection (see the [module documentation](self)).
pub struct Conn {
    /// Identifier (logs).
    pub id: u64,
    rt: Weak<Runtime>,
    host: Host,
    st: Mutex<ConnSt>,
    pool: Arc<BufPool>,
    max_burst: AtomicU32,
    cid: AtomicU32,
    closed: AtomicBool,
    loop_index: AtomicUsize,
    /// Local address (the portal).
    pub local: SocketAddr,
    /// Initiator's address.
    pub peer: SocketAddr,
}

/// What the caller of a locked step does after releasing the lock.
struct After {
    session: Option<Arc<Session>>,
    gone: Gone,
}

struct Ctx<'a> {
    rt: &'a Arc<Runtime>,
    conn: &'a Arc<Conn>,
    now: Instant,
}

/// A PDU the closure of `poll_pdu` leaves to code that can use the IDM connection.
enum Next {
    Done,
    Login(Pdu),
    Logout(LogoutRequest),
}

const NO_CID: u32 = u32::MAX;

/// Largest data buffer handed to an LU (unless MaxBurstLength is larger).
pub const MAX_DBUF: u32 = 1 << 20;

/// Memory a queued frame costs beyond its bytes (counted against `send_queue_limit`, so
/// a flood of small answers is bounded too).
const FRAME_COST: usize = 128;

/// ITTs remembered as aborted after their status went out (for ABORT TASK answers).
const MAX_LATE_ABORTS: usize = 64;

fn next_tag(t: &mut u32) -> u32 {
    let v = *t;
    *t = t.wrapping_add(1);
    if *t == RESERVED_TAG || *t == 0 {
        *t = 1;
    }
    v
}

impl Cmd {
    /// True when the command is the one of task `id`.
    fn is(&self, id: TaskId) -> bool {
        self.task.as_ref().is_some_and(|t| t.id() == id)
    }
}

impl Conn {
    /// A connection accepted on `local` from `peer`, counted by `ticket`, served by
    /// event loop `loop_index`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        rt: &Arc<Runtime>,
        stream: mio::net::TcpStream,
        local: SocketAddr,
        peer: SocketAddr,
        ticket: Ticket,
        lim: &Limits,
        loop_index: usize,
    ) -> Arc<Conn> {
        let now = Instant::now();
        let timers = ConnConfig {
            login_timeout: Duration::from_millis(lim.login_timeout_ms),
            ..ConnConfig::DEFAULT
        };
        let mut idm = Connection::new(Role::Target, timers);
        let _ = idm.accept(now);
        let limits = XferLimits::default();
        Arc::new(Conn {
            id,
            rt: Arc::downgrade(rt),
            host: rt.host,
            pool: BufPool::new(Arc::clone(&rt.buffers)),
            max_burst: AtomicU32::new(limits.max_burst),
            cid: AtomicU32::new(NO_CID),
            closed: AtomicBool::new(false),
            loop_index: AtomicUsize::new(loop_index),
            local,
            peer,
            st: Mutex::new(ConnSt {
                idm,
                c: Core {
                    tx: TcpTransport::new(stream),
                    phase: Phase::Login(None),
                    stat_sn: 0,
                    login_cmd_sn: 0,
                    session: None,
                    params: NegotiatedParams::default(),
                    tasks: HashMap::new(),
                    zombies: Vec::new(),
                    late_aborts: Vec::new(),
                    limits,
                    next_ttt: 1,
                    scratch: Vec::with_capacity(8192),
                    done: Vec::with_capacity(64),
                    text: None,
                    last_rx: now,
                    last_tx: now,
                    ping: None,
                    lim: *lim,
                    rx_paused: false,
                    rx_resume: false,
                    ticket: Some(ticket),
                    tmf_slots: Vec::new(),
                    close_after_flush: false,
                    after_flush: None,
                    gone: None,
                    closed: false,
                    cold_reset_itt: None,
                },
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ConnSt> {
        self.st.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The CID, once logged in.
    pub fn cid(&self) -> Option<u16> {
        u16::try_from(self.cid.load(Ordering::Acquire)).ok()
    }

    /// True once closed (the loop forgets it).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The event loop that serves the connection.
    pub fn loop_index(&self) -> usize {
        self.loop_index.load(Ordering::Relaxed)
    }

    /// Registers the socket with a `mio` registry.
    pub fn register(&self, registry: &mio::Registry, token: mio::Token) -> std::io::Result<()> {
        let mut st = self.lock();
        registry.register(
            st.c.tx.stream_mut(),
            token,
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )
    }

    /// The connection behind a task's `port_private` (a new reference).
    pub fn of_task(task: &TaskHandle) -> Option<Arc<Conn>> {
        let p = task.port_private() as *const Conn;
        if p.is_null() {
            return None;
        }
        // SAFETY: port_private holds a reference made with Arc::into_raw when the task
        // was allocated; it is released only by `task_free`, after every other call.
        unsafe {
            Arc::increment_strong_count(p);
            Some(Arc::from_raw(p))
        }
    }

    /// Releases the reference a task holds.
    pub fn task_free(task: &TaskHandle) {
        let p = task.port_private() as *const Conn;
        if p.is_null() {
            return;
        }
        task.set_port_private(std::ptr::null_mut());
        // SAFETY: the reference made at allocation, taken exactly once (nulled above).
        let conn = unsafe { Arc::from_raw(p) };
        let _f = Frame::enter();
        let mut st = conn.lock();
        if let Some(cmd) = st.c.take_cmd(task) {
            st.c.drop_cmd_bufs(cmd);
        }
    }

    fn ctx_run<R>(self: &Arc<Self>, f: impl FnOnce(&mut ConnSt, &Ctx<'_>) -> R) -> Option<R> {
        let rt = self.rt.upgrade()?;
        let _f = Frame::enter();
        let ctx = Ctx {
            rt: &rt,
            conn: self,
            now: Instant::now(),
        };
        let (r, after) = {
            let mut st = self.lock();
            let r = f(&mut st, &ctx);
            let mut after = st.settle(&ctx);
            // The queue drained below its limit: take the PDUs that waited.
            while after.is_none() && std::mem::take(&mut st.c.rx_resume) {
                st.read_all(&ctx);
                after = st.settle(&ctx);
            }
            (r, after)
        };
        if let Some(a) = after {
            rt.conn_gone(self, a.session, a.gone);
        }
        Some(r)
    }

    /// The socket is readable (or closed): read, process, answer.
    pub fn on_readable(self: &Arc<Self>) {
        self.ctx_run(|st, ctx| st.read_all(ctx));
    }

    /// The socket is writable again.
    pub fn on_writable(self: &Arc<Self>) {
        self.ctx_run(|_, _| ());
    }

    /// Timers: login timeouts, keepalive, a peer that stopped reading; the buffer
    /// store gives back what it did not use for a while.
    pub fn on_tick(self: &Arc<Self>) {
        self.pool.tick();
        self.ctx_run(|st, ctx| st.tick(ctx));
    }

    /// Buffer memory came back to the session: reopen the window slots it owes and tell
    /// the initiator (a NOP-In that asks for no answer carries the new MaxCmdSN).
    pub fn on_wake(self: &Arc<Self>) {
        self.ctx_run(|st, ctx| st.c.advertise_window(ctx));
    }

    /// Closes the connection (session teardown, reinstatement, shutdown).
    pub fn close(self: &Arc<Self>, why: &'static str) {
        let _f = Frame::enter();
        let mut st = self.lock();
        if !st.c.closed {
            tracing::debug!(conn = self.id, why, "iSCSI connection closed");
            st.c.gone.get_or_insert(Gone::SessionClosing);
            let now = Instant::now();
            st.shutdown(self, now);
        }
    }

    /// Target going offline: ask the initiator to log out (Async Message).
    pub fn request_logout(self: &Arc<Self>) {
        self.ctx_run(|st, ctx| st.request_logout(ctx));
    }

    /// Processes a PDU held for CmdSN order on this connection.
    pub fn replay(self: &Arc<Self>, held: HeldPdu) {
        self.ctx_run(|st, ctx| st.replay(ctx, held));
    }

    /// Another connection carried a Logout for this one.
    pub fn logout_other(self: &Arc<Self>) {
        self.ctx_run(|st, ctx| {
            let _ = st.idm.logout(ctx.now, idm::conn::LogoutNotice::OtherConn);
            st.c.gone_after_flush(Gone::LoggedOutConn);
        });
    }

    // ---- port entry points -----------------------------------------------------------

    /// `Port::dbuf_alloc`. A buffer may span several bursts (Data-In sequences and R2Ts
    /// stay within MaxBurstLength, several R2Ts of one buffer may be outstanding), up to
    /// [`MAX_DBUF`] or MaxBurstLength if that is larger.
    pub fn dbuf_alloc(&self, size: u32, min_size: u32) -> Result<DataBuf, u32> {
        let max = self.max_burst.load(Ordering::Relaxed).max(MAX_DBUF);
        let n = size.min(max);
        if n == 0 || n < min_size {
            return Err(max);
        }
        self.pool.alloc(n).ok_or(0)
    }

    /// `Port::xfer_data`.
    pub fn xfer_data(self: &Arc<Self>, task: &TaskHandle, buf: DataBuf) {
        let host = self.host;
        let mut buf = Some(buf);
        self.ctx_run(|st, _| {
            if let Some(b) = buf.take() {
                st.c.xfer_data(host, task, b);
            }
        });
        if let Some(b) = buf {
            defer(Act::XferDone(host, task.clone(), b, Status::BAD_STATE));
        }
    }

    /// `Port::send_status`.
    pub fn send_status(self: &Arc<Self>, task: &TaskHandle) {
        let host = self.host;
        let ran = self.ctx_run(|st, _| st.c.send_status(host, task));
        if ran.is_none() {
            defer(Act::StatusDone(host, task.clone(), Status::BAD_STATE));
        }
    }

    /// `Port::abort`.
    pub fn abort(self: &Arc<Self>, task: &TaskHandle) -> AbortOutcome {
        let host = self.host;
        self.ctx_run(|st, _| st.c.abort(host, task))
            .unwrap_or(AbortOutcome::Done)
    }
}

impl ConnSt {
    /// After any step: moves IDM's frames to the transport, handles IDM's events, writes,
    /// completes what was written, and closes when it is time.
    fn settle(&mut self, ctx: &Ctx<'_>) -> Option<After> {
        if self.c.closed {
            return None;
        }
        loop {
            let mut progressed = false;
            while let Some(ev) = self.idm.poll_event() {
                progressed = true;
                self.on_idm_event(ev);
            }
            loop {
                let mut buf = std::mem::take(&mut self.c.scratch);
                buf.clear();
                let got = self.idm.poll_transmit(ctx.now, &mut buf).is_some();
                if got {
                    self.c.tx.send_framed(&buf, None);
                }
                self.c.scratch = buf;
                if !got {
                    break;
                }
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        if self.c.gone.is_none() || self.c.close_after_flush {
            let c = &mut self.c;
            let mut done = std::mem::take(&mut c.done);
            let before = c.tx.queue().queued_bytes();
            let r = c.tx.flush(&mut |t| done.push(t));
            let left = c.tx.queue().queued_bytes();
            if left == 0 || left < before {
                c.last_tx = ctx.now;
            }
            if c.rx_paused && c.tx_load() <= c.lim.send_queue_limit as usize / 2 {
                c.rx_paused = false;
                c.rx_resume = true;
            }
            for t in done.drain(..) {
                c.complete(ctx.conn.host, t, Status::SUCCESS);
            }
            c.done = done;
            match r {
                Ok(Flushed::All) if c.close_after_flush && c.gone.is_none() => {
                    c.gone = Some(c.after_flush.unwrap_or(Gone::LoggedOutConn));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(conn = ctx.conn.id, error = %e, "iSCSI connection write failed");
                    c.gone = Some(Gone::Failed);
                }
            }
        }
        let gone = self.c.gone?;
        let session = self.shutdown(ctx.conn, ctx.now);
        Some(After { session, gone })
    }

    fn on_idm_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Disconnect => {
                self.c.close_after_flush = true;
            }
            ConnEvent::Notify(Notify::LoginFail)
            | ConnEvent::Notify(Notify::ConnectLost { .. })
            | ConnEvent::AbortTasks
            | ConnEvent::SuspendTasks
                if !self.c.close_after_flush =>
            {
                self.c.gone.get_or_insert(Gone::Failed);
            }
            ConnEvent::ProtocolError { error, action, .. } => {
                tracing::debug!(%error, ?action, "iSCSI PDU refused");
                match action {
                    // IDM queued a Reject with the current StatSN: it advances.
                    ErrorAction::Reject(_) => self.c.stat_sn = self.c.stat_sn.wrapping_add(1),
                    ErrorAction::DropConnection => {
                        self.c.gone.get_or_insert(Gone::Failed);
                    }
                }
            }
            _ => {}
        }
    }

    /// Tears the connection down under the lock: every buffer goes back, queued frames
    /// are dropped. Returns the session for the caller to deal with after unlocking.
    fn shutdown(&mut self, conn: &Arc<Conn>, now: Instant) -> Option<Arc<Session>> {
        if self.c.closed {
            return None;
        }
        let c = &mut self.c;
        c.closed = true;
        conn.closed.store(true, Ordering::Release);
        c.ticket = None;
        c.phase = Phase::Closed;
        self.idm.transport_failed(now);
        let host = conn.host;
        let mut done = std::mem::take(&mut c.done);
        c.tx.free(&mut |t| done.push(t));
        for t in done.drain(..) {
            c.complete(host, t, Status::IO_ERROR);
        }
        c.done = done;
        let mut cmds: Vec<Cmd> = c.tasks.drain().map(|(_, v)| v).collect();
        cmds.append(&mut c.zombies);
        for cmd in cmds {
            c.drop_cmd_with(host, cmd, Status::ABORTED);
        }
        c.session.take()
    }

    fn read_all(&mut self, ctx: &Ctx<'_>) {
        loop {
            if self.c.closed || self.c.gone.is_some() || self.c.rx_paused {
                return;
            }
            let r = self.c.tx.read_into(&mut self.idm);
            self.process(ctx);
            match r {
                Ok((_, ReadStatus::More)) => continue,
                Ok((_, ReadStatus::WouldBlock)) => return,
                Ok((_, ReadStatus::Eof)) => {
                    tracing::debug!(
                        conn = ctx.conn.id,
                        "iSCSI connection closed by the initiator"
                    );
                    self.idm.transport_failed(ctx.now);
                    if !self.c.close_after_flush {
                        self.c.gone.get_or_insert(Gone::Failed);
                    } else {
                        self.c.gone.get_or_insert(Gone::LoggedOutConn);
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(conn = ctx.conn.id, error = %e, "iSCSI connection read failed");
                    self.idm.transport_failed(ctx.now);
                    self.c.gone.get_or_insert(Gone::Failed);
                    return;
                }
            }
        }
    }

    /// Processes every whole PDU buffered.
    fn process(&mut self, ctx: &Ctx<'_>) {
        loop {
            if self.c.closed || self.c.gone.is_some() {
                return;
            }
            if self.c.tx_load() > self.c.lim.send_queue_limit as usize {
                // The peer is not reading what we owe it: take no more until it does.
                if !self.c.rx_paused {
                    tracing::debug!(
                        conn = ctx.conn.id,
                        queued = self.c.tx.queue().queued_bytes(),
                        "iSCSI send queue full: not taking PDUs"
                    );
                }
                self.c.rx_paused = true;
                return;
            }
            if let Some(s) = &self.c.session {
                self.idm.set_target_sn(s.window().target_sn(self.c.stat_sn));
            }
            let ConnSt { idm, c } = self;
            let Some(next) = idm.poll_pdu(ctx.now, |rx| c.on_pdu(ctx, rx)) else {
                return;
            };
            match next {
                Next::Done => {}
                Next::Login(pdu) => {
                    let data = std::mem::take(&mut self.c.scratch);
                    self.on_login(ctx, &pdu, &data);
                    self.c.scratch = data;
                }
                Next::Logout(req) => self.on_logout(ctx, &req),
            }
            self.release_held(ctx);
        }
    }

    /// Runs the PDUs held for CmdSN order whose turn has come.
    fn release_held(&mut self, ctx: &Ctx<'_>) {
        let Some(s) = self.c.session.clone() else {
            return;
        };
        while let Some(h) = s.take_next_held() {
            match h.conn.upgrade() {
                Some(c) if Arc::ptr_eq(&c, ctx.conn) => self.replay(ctx, h),
                Some(c) => defer(Act::Call(Box::new(move || c.replay(h)))),
                None => {}
            }
        }
    }

    fn replay(&mut self, ctx: &Ctx<'_>, h: HeldPdu) {
        if self.c.closed {
            return;
        }
        if h.len > 0 && h.data.is_none() {
            // Its data found no room in the budget when it arrived.
            let header = h.pdu.to_bytes();
            self.c.release(Slot::Window);
            match &h.pdu {
                Pdu::ScsiCommand(c) => {
                    let (itt, edtl) = (c.itt, c.expected_data_transfer_length);
                    self.c.status_only(itt, ScsiStatus::BUSY.0, edtl);
                }
                _ => self.c.reject(RejectReason::LongOperationReject, &header),
            }
            return;
        }
        let data = h.data.as_ref().map_or(&[][..], OwnedBuf::data);
        match self
            .c
            .dispatch(ctx, &h.pdu, h.cdb.as_ref(), data, None, Slot::Window)
        {
            Next::Logout(req) => self.on_logout(ctx, &req),
            Next::Login(_) | Next::Done => {}
        }
    }

    fn tick(&mut self, ctx: &Ctx<'_>) {
        self.idm.handle_timeout(ctx.now);
        let c = &mut self.c;
        c.lim = ctx.rt.limits();
        if c.closed {
            return;
        }
        let stalled = ctx.now.duration_since(c.last_tx);
        if !c.tx.queue().is_empty() && stalled > Duration::from_millis(c.lim.send_timeout_ms) {
            tracing::info!(
                conn = ctx.conn.id,
                peer = %ctx.conn.peer,
                queued = c.tx.queue().queued_bytes(),
                "iSCSI peer stopped reading: dropping the connection"
            );
            c.gone = Some(Gone::Failed);
            return;
        }
        if c.ticket.as_ref().is_some_and(Ticket::evicted) {
            tracing::debug!(
                conn = ctx.conn.id,
                peer = %ctx.conn.peer,
                "iSCSI connection in login gave its place to a newcomer"
            );
            c.gone = Some(Gone::Failed);
            return;
        }
        if matches!(c.phase, Phase::Login(_))
            && ctx.now.duration_since(c.last_rx)
                > Duration::from_millis(c.lim.login_idle_timeout_ms)
        {
            tracing::info!(
                conn = ctx.conn.id,
                peer = %ctx.conn.peer,
                "iSCSI login stalled: dropping the connection"
            );
            c.gone = Some(Gone::Failed);
            return;
        }
        if !matches!(c.phase, Phase::Ffp) || c.close_after_flush {
            return;
        }
        let target = c.session.as_ref().and_then(|s| s.key.target.as_ref());
        let Some(ka) = ctx.rt.keepalive(target) else {
            c.ping = None;
            return;
        };
        match c.ping {
            Some((_, sent)) if ctx.now.duration_since(sent) > ka.timeout => {
                tracing::info!(
                    conn = ctx.conn.id,
                    "iSCSI keepalive timed out: dropping the connection"
                );
                c.gone = Some(Gone::Failed);
            }
            None if ctx.now.duration_since(c.last_rx) > ka.interval => {
                let ttt = next_tag(&mut c.next_ttt);
                let sn = c.target_sn();
                let pdu = Pdu::NopIn(NopIn {
                    lun: 0,
                    itt: RESERVED_TAG,
                    ttt,
                    sn,
                });
                if c.tx.send_pdu(&pdu, &[], None).is_ok() {
                    c.ping = Some((ttt, ctx.now));
                }
            }
            _ => {}
        }
    }

    fn request_logout(&mut self, ctx: &Ctx<'_>) {
        if !matches!(self.c.phase, Phase::Ffp) || self.c.closed {
            return;
        }
        let pdu = Pdu::AsyncMessage(AsyncMessage {
            lun: 0,
            sn: self.c.target_sn(),
            event: AsyncEvent::LogoutRequest,
            vcode: 0,
            parameter1: 0,
            parameter2: 0,
            parameter3: 2,
        });
        match self.idm.send_pdu(ctx.now, &pdu, &[]) {
            Ok(()) => self.c.stat_sn = self.c.stat_sn.wrapping_add(1),
            Err(e) => tracing::debug!(error = %e, "cannot send the Async logout request"),
        }
    }

    // ---- login ---------------------------------------------------------------------

    fn send_login(&mut self, ctx: &Ctx<'_>, header: &LoginResponse, data: &[u8]) -> bool {
        match self
            .idm
            .send_pdu(ctx.now, &Pdu::LoginResponse(*header), data)
        {
            Ok(()) => {
                self.c.stat_sn = self.c.stat_sn.wrapping_add(1);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a Login Response");
                self.c.gone.get_or_insert(Gone::Failed);
                false
            }
        }
    }

    fn on_login(&mut self, ctx: &Ctx<'_>, pdu: &Pdu, data: &[u8]) {
        let Phase::Login(login) = &mut self.c.phase else {
            return;
        };
        let rt = ctx.rt;
        let first = login.is_none();
        if let (true, Pdu::LoginRequest(req)) = (first, pdu) {
            self.c.stat_sn = req.exp_stat_sn;
            self.c.login_cmd_sn = req.cmd_sn;
        }
        let login = login.get_or_insert_with(|| {
            let target = Runtime::login_target(data);
            let mut local = rt.local_config(target.as_ref());
            self.c.tx.login_keys(&mut local);
            Box::new(TargetLogin::new(LoginSettings {
                local,
                portal_group: rt.portal_group_for(ctx.conn.local, target.as_ref()),
                max_text: DEFAULT_TEXT_CAP,
            }))
        });
        let exp = match pdu {
            Pdu::LoginRequest(r) if r.tsih != 0 => rt
                .session(r.tsih)
                .map(|s| s.window().exp_cmd_sn())
                .unwrap_or(self.c.login_cmd_sn),
            _ => self.c.login_cmd_sn,
        };
        let sn = TargetSn {
            stat_sn: self.c.stat_sn,
            exp_cmd_sn: exp,
            max_cmd_sn: exp.wrapping_add(self.c.lim.cmd_window.max(1) - 1),
        };
        let step = {
            let cfg = rt.config_read();
            let mut host = LoginHostImpl {
                rt,
                cfg: &cfg,
                peer: ctx.conn.peer,
                local: ctx.conn.local,
                throttle: rt.throttle_config_of(&cfg),
            };
            let mut env = LoginEnv {
                config: &cfg,
                access: &AclPolicy,
                host: &mut host,
            };
            login.handle_pdu(&mut env, pdu, data, sn)
        };
        match step {
            LoginStep::Continue(p) => {
                self.send_login(ctx, &p.header, &p.data);
            }
            LoginStep::Fail(p, err) => {
                // Failed CHAP is logged, rate-limited, by `auth_failed`; a throttled
                // source gets no line per attempt.
                let quiet = matches!(
                    err,
                    crate::login::LoginError::Throttled
                        | crate::login::LoginError::Authentication(_)
                );
                if quiet {
                    tracing::debug!(conn = ctx.conn.id, peer = %ctx.conn.peer, error = %err, "iSCSI login refused");
                } else {
                    tracing::info!(conn = ctx.conn.id, peer = %ctx.conn.peer, error = %err, "iSCSI login refused");
                }
                self.send_login(ctx, &p.header, &p.data);
                self.c.gone_after_flush(Gone::Failed);
            }
            LoginStep::Complete(p, outcome) => match self.attach(ctx, &outcome) {
                Ok(session) => {
                    if !self.send_login(ctx, &p.header, &p.data) {
                        return;
                    }
                    self.enter_ffp(ctx, session, &outcome);
                }
                Err(status) => {
                    let mut h = p.header;
                    h.transit = false;
                    h.cont = false;
                    h.nsg = h.csg;
                    h.tsih = 0;
                    h.status = status;
                    self.send_login(ctx, &h, &[]);
                    self.c.gone_after_flush(Gone::Failed);
                }
            },
        }
    }

    /// Joins or creates the session of a completed login (before the final response).
    fn attach(&mut self, ctx: &Ctx<'_>, o: &LoginOutcome) -> Result<Arc<Session>, LoginStatus> {
        let rt = ctx.rt;
        let key = SessionKey {
            initiator: o.initiator_name.clone(),
            isid: o.isid,
            target: o.target_name.clone(),
            portal_group: o.portal_group,
        };
        match o.disposition {
            SessionDisposition::New | SessionDisposition::Reinstate { .. } => {
                if let SessionDisposition::Reinstate { old_tsih } = o.disposition {
                    if let Some(old) = rt.session(old_tsih) {
                        tracing::info!(tsih = old_tsih, "iSCSI session reinstatement");
                        let rt2 = Arc::clone(rt);
                        defer(Act::Call(Box::new(move || {
                            rt2.close_session(&old, "session reinstatement")
                        })));
                    }
                }
                let target = match &o.target_name {
                    Some(n) => Some(rt.target(n).ok_or(LoginStatus::NOT_FOUND)?),
                    None => None,
                };
                let handle = match &target {
                    Some(t) => {
                        let lport = *t.lport.get().ok_or(LoginStatus::SERVICE_UNAVAILABLE)?;
                        let name = super::session::port_name(&key);
                        let alias = o.initiator_alias.clone().unwrap_or_default();
                        let flags = if o.auth.identity.name_honoured() {
                            0
                        } else {
                            plugins_sdk::abi::session_flags::NAME_UNPROVEN
                        };
                        Some(rt.host.register_session_with_flags(lport, &name, &alias, "", flags).map_err(|st| {
                            tracing::warn!(target = %t.name, "registering the session: {st}");
                            LoginStatus::SERVICE_UNAVAILABLE
                        })?)
                    }
                    None => None,
                };
                let s = Arc::new(
                    Session::new(
                        o.tsih,
                        key,
                        target.clone(),
                        handle,
                        o.params.clone(),
                        self.c.login_cmd_sn,
                        &self.c.lim,
                        Arc::clone(&rt.buffers),
                    )
                    .with_identity(o.auth.identity),
                );
                let (weak, rt2) = (Arc::downgrade(&s), Arc::downgrade(rt));
                s.account.on_relief(Box::new(move || {
                    if let (Some(s), Some(rt)) = (weak.upgrade(), rt2.upgrade()) {
                        if let Some(c) = s.conns().first() {
                            rt.wake(c);
                        }
                    }
                }));
                s.add_conn(Arc::clone(ctx.conn));
                if let Some(t) = &target {
                    t.add_session(Arc::clone(&s));
                }
                rt.insert_session(Arc::clone(&s));
                Ok(s)
            }
            SessionDisposition::AddConnection | SessionDisposition::ReinstateConnection => {
                let s = rt
                    .session(o.tsih)
                    .filter(|s| s.key == key && !s.is_closing())
                    .ok_or(LoginStatus::SESSION_DOES_NOT_EXIST)?;
                if o.disposition == SessionDisposition::ReinstateConnection {
                    if let Some(old) = s
                        .conns()
                        .into_iter()
                        .find(|c| c.cid() == Some(o.cid) && !Arc::ptr_eq(c, ctx.conn))
                    {
                        tracing::info!(cid = o.cid, "iSCSI connection reinstatement");
                        let s2 = Arc::clone(&s);
                        defer(Act::Call(Box::new(move || {
                            s2.remove_conn(&old);
                            old.close("connection reinstatement");
                        })));
                    }
                }
                s.add_conn(Arc::clone(ctx.conn));
                Ok(s)
            }
        }
    }

    fn enter_ffp(&mut self, ctx: &Ctx<'_>, session: Arc<Session>, o: &LoginOutcome) {
        let p = &o.params;
        let ffp = FfpParams {
            digests: p.digests(),
            max_recv_data_segment_len: p.max_recv_data_segment_length,
            max_send_data_segment_len: p.max_send_data_segment_length,
            rdma_extensions: false,
        };
        // The final Login Response is framed already (no digests); everything after uses
        // the negotiated ones.
        if let Err(e) = self.idm.login_succeeded(ctx.now, ffp) {
            tracing::warn!(error = %e, "iSCSI login could not enter full feature phase");
            self.c.gone.get_or_insert(Gone::Failed);
            return;
        }
        self.c.tx.enable_datamover(&ffp);
        ctx.conn.pool.attach(Arc::clone(&session.account));
        if let Some(t) = self.c.ticket.as_mut() {
            t.logged_in();
        }
        self.c.limits = XferLimits::from_params(p);
        ctx.conn
            .max_burst
            .store(self.c.limits.max_burst, Ordering::Relaxed);
        ctx.conn.cid.store(u32::from(o.cid), Ordering::Release);
        self.c.params = p.clone();
        self.c.session = Some(session);
        self.c.phase = Phase::Ffp;
        self.c.last_rx = ctx.now;
        tracing::info!(
            conn = ctx.conn.id,
            initiator = %o.initiator_name,
            target = ?o.target_name.as_ref().map(IscsiName::as_str),
            tsih = o.tsih,
            cid = o.cid,
            header_digest = ffp.digests.header,
            data_digest = ffp.digests.data,
            "iSCSI login complete"
        );
    }

    // ---- logout ---------------------------------------------------------------------

    fn on_logout(&mut self, ctx: &Ctx<'_>, req: &LogoutRequest) {
        let session = self.c.session.clone();
        let my_cid = ctx.conn.cid();
        let mut response = LogoutResponseCode::Success;
        match req.reason {
            LogoutReason::CloseSession => self.c.gone_after_flush(Gone::LoggedOutSession),
            _ if Some(req.cid) == my_cid => self.c.gone_after_flush(Gone::LoggedOutConn),
            _ => {
                let other = session.as_ref().and_then(|s| {
                    s.conns()
                        .into_iter()
                        .find(|c| c.cid() == Some(req.cid) && !Arc::ptr_eq(c, ctx.conn))
                });
                match other {
                    Some(o) => defer(Act::Call(Box::new(move || o.logout_other()))),
                    None => response = LogoutResponseCode::CidNotFound,
                }
            }
        }
        let pdu = Pdu::LogoutResponse(LogoutResponse {
            response,
            itt: req.itt,
            sn: self.c.target_sn(),
            time2wait: 0,
            time2retain: 0,
        });
        match self.idm.send_pdu(ctx.now, &pdu, &[]) {
            Ok(()) => self.c.stat_sn = self.c.stat_sn.wrapping_add(1),
            Err(e) => {
                tracing::debug!(error = %e, "cannot send the Logout Response");
                self.c.gone.get_or_insert(Gone::Failed);
            }
        }
    }
}

/// What the login asks of the provider, from the runtime's tables.
struct LoginHostImpl<'a> {
    rt: &'a Arc<Runtime>,
    /// The configuration the login reads (held by the caller: never read it again).
    cfg: &'a crate::config::IscsitConfig,
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
    throttle: crate::auth::ThrottleConfig,
}

impl LoginHost for LoginHostImpl<'_> {
    fn session(&self, tsih: u16) -> Option<ExistingSession> {
        let s = self.rt.session(tsih).filter(|s| !s.is_closing())?;
        Some(ExistingSession {
            key: s.key.clone(),
            max_connections: s.params.max_connections,
            cids: s.cids(),
            identity: s.identity,
        })
    }

    fn auth_throttled(&mut self) -> bool {
        let now = Instant::now();
        self.rt.auth_throttle().check(self.peer.ip(), now).is_some()
    }

    fn auth_failed(&mut self, f: &AuthFailure<'_>) {
        let now = Instant::now();
        let note = self.rt.auth_throttle().failed(
            &self.throttle,
            self.peer.ip(),
            f.initiator.as_str(),
            now,
        );
        if let Some(suppressed) = note.log {
            tracing::warn!(
                source = %note.source,
                peer = %self.peer,
                initiator = %f.initiator,
                target = ?f.target.map(IscsiName::as_str),
                user = ?f.user,
                error = %f.error,
                consecutive = note.streak,
                suppressed,
                throttled_ms = note.throttled_for.map_or(0, |d| d.as_millis() as u64),
                "iSCSI CHAP authentication failed"
            );
        }
    }

    fn auth_succeeded(&mut self, _identity: Identity) {
        self.rt.auth_throttle().succeeded();
    }

    fn login_settings(&mut self, target: Option<&IscsiName>, settings: &mut LoginSettings) {
        let rdma = settings.local.rdma_extensions;
        settings.local = Runtime::local_config_of(self.cfg, target);
        settings.local.rdma_extensions = rdma;
        settings.portal_group = Runtime::portal_group_of(self.cfg, self.local, target);
    }

    fn find_session(&self, key: &SessionKey) -> Option<u16> {
        self.rt.find_session(key)
    }

    fn allocate_tsih(&mut self) -> Option<u16> {
        self.rt.allocate_tsih()
    }

    fn target_state(&self, target: &IscsiName) -> TargetState {
        self.rt
            .target(target)
            .map_or(TargetState::Offline, |t| t.state())
    }
}

impl Core {
    /// The command of a posted task (live or zombie).
    fn cmd_mut(&mut self, task: &TaskHandle) -> Option<&mut Cmd> {
        self.cmd_of(task.tag() as u32, task.id())
    }

    /// The command with ITT `itt` of task `id` (live or zombie).
    fn cmd_of(&mut self, itt: u32, id: TaskId) -> Option<&mut Cmd> {
        if self.tasks.get(&itt).is_some_and(|c| c.is(id)) {
            return self.tasks.get_mut(&itt);
        }
        self.zombies.iter_mut().find(|c| c.is(id))
    }

    /// Removes the command of a freed task.
    fn take_cmd(&mut self, task: &TaskHandle) -> Option<Cmd> {
        let (itt, id) = (task.tag() as u32, task.id());
        if self.tasks.get(&itt).is_some_and(|c| c.is(id)) {
            return self.tasks.remove(&itt);
        }
        let i = self.zombies.iter().position(|c| c.is(id))?;
        Some(self.zombies.swap_remove(i))
    }

    /// What the transmit queue holds: its bytes and a cost per frame.
    fn tx_load(&self) -> usize {
        let q = self.tx.queue();
        q.queued_bytes() + q.len() * FRAME_COST
    }

    /// Opens the window slots the session owed and, when MaxCmdSN moved, says so with a
    /// NOP-In that wants no answer (ITT and TTT 0xffffffff; StatSN is not advanced,
    /// RFC 7143 §11.19).
    fn advertise_window(&mut self, ctx: &Ctx<'_>) {
        if self.closed || !matches!(self.phase, Phase::Ffp) {
            return;
        }
        let Some(s) = &self.session else {
            return;
        };
        if !s.reopen() {
            return;
        }
        let pdu = Pdu::NopIn(NopIn {
            lun: 0,
            itt: RESERVED_TAG,
            ttt: RESERVED_TAG,
            sn: self.target_sn(),
        });
        if let Err(e) = self.tx.send_pdu(&pdu, &[], None) {
            tracing::debug!(conn = ctx.conn.id, error = %e, "cannot queue a window update");
        }
    }

    fn target_sn(&self) -> TargetSn {
        match &self.session {
            Some(s) => s.window().target_sn(self.stat_sn),
            None => TargetSn {
                stat_sn: self.stat_sn,
                exp_cmd_sn: self.login_cmd_sn,
                max_cmd_sn: self.login_cmd_sn,
            },
        }
    }

    /// Sends a status-carrying PDU built with the current sequence numbers; StatSN advances.
    fn respond(&mut self, build: impl FnOnce(TargetSn) -> Pdu, data: &[u8]) {
        let pdu = build(self.target_sn());
        match self.tx.send_pdu(&pdu, data, None) {
            Ok(()) => self.stat_sn = self.stat_sn.wrapping_add(1),
            Err(e) => {
                tracing::debug!(error = %e, "cannot frame a response");
                self.gone.get_or_insert(Gone::Failed);
            }
        }
    }

    fn reject(&mut self, reason: RejectReason, header: &[u8; BHS_LEN]) {
        self.respond(
            |sn| {
                Pdu::Reject(Reject {
                    reason,
                    sn,
                    data_sn_or_r2t_sn: 0,
                })
            },
            header,
        );
    }

    /// Closes the connection once everything queued is written (`settle` does it).
    fn gone_after_flush(&mut self, g: Gone) {
        self.after_flush.get_or_insert(g);
        self.close_after_flush = true;
    }

    /// A transport token: the bytes it stood for are written (or dropped).
    fn complete(&mut self, host: Host, t: Tok, status: Status) {
        match t {
            Tok::XferIn(itt, id, raw) => {
                // SAFETY: the buffer handed to the transport by xfer_data; its ownership
                // comes back with this token, exactly once.
                let Some(buf) = (unsafe { DataBuf::from_raw(raw.0) }) else {
                    return;
                };
                let Some((cmd, task)) = self
                    .cmd_of(itt, id)
                    .and_then(|c| c.task.clone().map(|t| (c, t)))
                else {
                    // The task was freed while its Data-In was queued (the connection
                    // went): nobody waits for the buffer, it goes back to the store.
                    BufPool::free(buf);
                    return;
                };
                let mut status = status;
                let mut after = None;
                cmd.in_flight = cmd.in_flight.saturating_sub(1);
                if cmd.aborted {
                    status = Status::ABORTED;
                }
                if cmd.in_flight == 0 {
                    if cmd.abort_pending && !cmd.abort_done {
                        cmd.abort_done = true;
                        after = Some(Act::LportAborted(host, task.clone(), Status::ABORTED));
                    } else if cmd.status_sent && !cmd.status_done {
                        cmd.status_done = true;
                        after = Some(Act::StatusDone(host, task.clone(), Status::SUCCESS));
                    }
                }
                defer(Act::XferDone(host, task, buf, status));
                if let Some(a) = after {
                    defer(a);
                }
            }
            // SAFETY: pinned when the PDU was held; unpinned once, here.
            Tok::Unpin(raw) => unsafe { BufPool::unpin(raw.0) },
        }
    }

    /// Gives back a dead task's buffers to the store (task freed) and its slot.
    fn drop_cmd_bufs(&mut self, mut cmd: Cmd) {
        self.release(std::mem::replace(&mut cmd.slot, Slot::None));
        if let Some(b) = cmd.collect.take() {
            BufPool::free(b);
        }
        if let Some(h) = cmd.held.take() {
            // SAFETY: pinned when held; unpinned once.
            unsafe { BufPool::unpin(h.raw.0) };
        }
        for b in cmd.out_bufs.iter_mut().filter_map(Option::take) {
            BufPool::free(b);
        }
    }

    fn drop_cmd_with(&mut self, host: Host, mut cmd: Cmd, status: Status) {
        self.release(std::mem::replace(&mut cmd.slot, Slot::None));
        if let Some(b) = cmd.collect.take() {
            BufPool::free(b);
        }
        if let Some(h) = cmd.held.take() {
            // SAFETY: pinned when held; unpinned once.
            unsafe { BufPool::unpin(h.raw.0) };
        }
        if let Some(task) = cmd.task.take() {
            for b in cmd.out_bufs.iter_mut().filter_map(Option::take) {
                defer(Act::XferDone(host, task.clone(), b, status));
            }
            if cmd.abort_pending && !cmd.abort_done {
                defer(Act::LportAborted(host, task, status));
            } else if cmd.status_sent && !cmd.status_done {
                defer(Act::StatusDone(host, task, status));
            }
        }
    }

    // ---- received PDUs --------------------------------------------------------------

    /// One PDU from IDM's receive buffer (borrowed: what needs IDM goes back as `Next`).
    fn on_pdu(&mut self, ctx: &Ctx<'_>, rx: RxPdu<'_>) -> Next {
        tracing::trace!(conn = ctx.conn.id, pdu = ?rx.pdu, data = rx.data.len(), "iSCSI PDU in");
        self.last_rx = ctx.now;
        self.ping = None;
        match &self.phase {
            Phase::Login(_) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(rx.data);
                return Next::Login(rx.pdu);
            }
            Phase::Closed => return Next::Done,
            Phase::Ffp => {}
        }
        let pdu = rx.pdu;
        if let Pdu::DataOut(d) = &pdu {
            self.on_data_out(ctx, d, rx.data);
            return Next::Done;
        }
        if let Pdu::NopOut(n) = &pdu {
            if n.itt == RESERVED_TAG {
                return Next::Done; // answer to our ping
            }
        }
        let (cmd_sn, immediate) = match &pdu {
            Pdu::ScsiCommand(c) => (c.cmd_sn, c.immediate),
            Pdu::TaskMgmtRequest(t) => (t.cmd_sn, t.immediate),
            Pdu::TextRequest(t) => (t.cmd_sn, t.immediate),
            Pdu::LogoutRequest(l) => (l.cmd_sn, l.immediate),
            Pdu::NopOut(n) => (n.cmd_sn, n.immediate),
            Pdu::Snack(_) => {
                self.reject(RejectReason::CommandNotSupported, rx.header);
                return Next::Done;
            }
            _ => {
                self.reject(RejectReason::ProtocolError, rx.header);
                return Next::Done;
            }
        };
        let Some(s) = self.session.clone() else {
            return Next::Done;
        };
        let cdb = rx.cdb();
        match s.admit(cmd_sn, immediate) {
            Admit::Now => {
                let slot = if immediate {
                    Slot::Immediate
                } else {
                    Slot::Window
                };
                self.dispatch(ctx, &pdu, cdb.as_ref(), rx.data, Some(rx.header), slot)
            }
            Admit::Hold => {
                tracing::debug!(cmd_sn, "iSCSI command ahead of a CmdSN gap: held");
                // The data waits in a budgeted buffer; without room the command is
                // answered BUSY when its turn comes.
                let data = (!rx.data.is_empty())
                    .then(|| ctx.conn.pool.alloc(rx.data.len() as u32))
                    .flatten()
                    .map(|mut b| {
                        b.as_mut_slice()[..rx.data.len()].copy_from_slice(rx.data);
                        b.set_xfer(0, rx.data.len(), 0);
                        OwnedBuf::new(b)
                    });
                s.hold(
                    cmd_sn,
                    HeldPdu {
                        conn: Arc::downgrade(ctx.conn),
                        pdu,
                        cdb,
                        data,
                        len: rx.data.len(),
                    },
                );
                Next::Done
            }
            Admit::Ignore => {
                tracing::debug!(cmd_sn, "iSCSI command outside the CmdSN window: ignored");
                Next::Done
            }
            Admit::TooManyImmediate => {
                tracing::debug!(
                    conn = ctx.conn.id,
                    "too many immediate commands outstanding: rejected"
                );
                self.reject(RejectReason::ImmediateCommandReject, rx.header);
                Next::Done
            }
        }
    }

    /// Gives a finished command's session slot back (the window may open).
    fn release(&self, slot: Slot) {
        if let Some(s) = &self.session {
            s.release(slot);
        }
    }

    /// A command PDU whose turn it is; it holds `slot` of its session until it is done.
    fn dispatch(
        &mut self,
        ctx: &Ctx<'_>,
        pdu: &Pdu,
        cdb: Option<&Cdb>,
        data: &[u8],
        header: Option<&[u8; BHS_LEN]>,
        slot: Slot,
    ) -> Next {
        let header = header.copied().unwrap_or_else(|| pdu.to_bytes());
        // Commands answered at once give their slot back first, so the answer carries
        // the window that includes it.
        match pdu {
            Pdu::ScsiCommand(c) => match cdb {
                Some(cdb) => return self.on_scsi_command(ctx, c, cdb, data, &header, slot),
                None => {
                    self.release(slot);
                    self.reject(RejectReason::InvalidPduField, &header)
                }
            },
            Pdu::TaskMgmtRequest(t) => self.on_tmf(ctx, t, &header, slot),
            Pdu::TextRequest(t) => {
                self.release(slot);
                self.on_text(ctx, t, data, &header)
            }
            Pdu::NopOut(n) => {
                self.release(slot);
                self.on_nop_out(n, data)
            }
            Pdu::LogoutRequest(l) => {
                self.release(slot);
                return Next::Logout(*l);
            }
            _ => {
                self.release(slot);
                self.reject(RejectReason::ProtocolError, &header)
            }
        }
        Next::Done
    }

    fn on_nop_out(&mut self, n: &NopOut, data: &[u8]) {
        let (itt, lun) = (n.itt, n.lun);
        self.respond(
            |sn| {
                Pdu::NopIn(NopIn {
                    lun,
                    itt,
                    ttt: RESERVED_TAG,
                    sn,
                })
            },
            data,
        );
    }

    fn on_text(&mut self, ctx: &Ctx<'_>, req: &TextRequest, data: &[u8], header: &[u8; BHS_LEN]) {
        let Some(s) = self.session.clone() else {
            return;
        };
        let seg = self.limits.max_send_segment;
        let sn = self.target_sn();
        let responder = self
            .text
            .get_or_insert_with(|| TextResponder::new(seg, DEFAULT_TEXT_CAP));
        let pdu = match responder.receive(req, data, sn) {
            Ok(TextInput::Respond(p)) => p,
            Ok(TextInput::Request(text)) => {
                let answer = {
                    let cfg = ctx.rt.config_read();
                    let rt = ctx.rt;
                    let is_online = |n: &IscsiName| {
                        rt.target(n)
                            .is_some_and(|t| t.state() == TargetState::Online)
                    };
                    let dctx = DiscoveryContext {
                        config: &cfg,
                        access: &AclPolicy,
                        is_online: &is_online,
                        initiator: &s.key.initiator,
                        identity: s.identity,
                        session_type: if s.is_discovery() {
                            SessionType::Discovery
                        } else {
                            SessionType::Normal
                        },
                        session_target: s.key.target.as_ref(),
                        local_portal: Some(ctx.conn.local),
                    };
                    let local = rt.local_config(s.key.target.as_ref());
                    answer_text(&dctx, &local, &mut self.params, &text)
                };
                match answer {
                    Ok(bytes) => responder.respond(req, bytes, sn),
                    Err(e) => {
                        tracing::debug!(error = %e, "Text Request refused");
                        return self.reject(e.reject_reason(), header);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "Text Request refused");
                return self.reject(e.reject_reason(), header);
            }
        };
        self.respond(
            |sn| {
                let mut h = pdu.header;
                h.sn = sn;
                Pdu::TextResponse(h)
            },
            &pdu.data,
        );
    }

    fn on_tmf(&mut self, ctx: &Ctx<'_>, req: &TaskMgmtRequest, header: &[u8; BHS_LEN], slot: Slot) {
        let Some(s) = self.session.clone() else {
            return;
        };
        let Some(handle) = s.handle else {
            self.release(slot);
            return self.reject(RejectReason::ProtocolError, header);
        };
        let itt = req.itt;
        let tmf_rsp = |me: &mut Core, response: TmfResponse| {
            me.release(slot);
            me.respond(
                |sn| Pdu::TaskMgmtResponse(TaskMgmtResponse { response, itt, sn }),
                &[],
            )
        };
        let f = match ffp::tm_function(req.function) {
            Ok(f) => f,
            Err(r) => return tmf_rsp(self, r),
        };
        if f == TmFunction::ABORT_TASK {
            // A command still gathering its unsolicited data is not known to the core yet.
            let rt = req.referenced_task_tag;
            if self.tasks.get(&rt).is_some_and(|c| c.task.is_none()) {
                if let Some(cmd) = self.tasks.remove(&rt) {
                    self.drop_cmd_bufs(cmd);
                }
                return tmf_rsp(self, TmfResponse::FunctionComplete);
            }
        }
        if f == TmFunction::TARGET_COLD_RESET {
            self.cold_reset_itt = Some(itt);
        }
        let spec = TaskSpec::task_mgmt(
            req.lun.to_be_bytes(),
            f,
            u64::from(itt),
            u64::from(req.referenced_task_tag),
        );
        let host = ctx.conn.host;
        let raw = Arc::into_raw(Arc::clone(ctx.conn)) as *mut c_void;
        match host.task_alloc(handle, &spec, raw) {
            Ok(task) => {
                self.tmf_slots.push((itt, slot));
                defer(Act::Post(host, task, None))
            }
            Err(st) => {
                // SAFETY: the reference made above; the core did not keep it.
                drop(unsafe { Arc::from_raw(raw as *const Conn) });
                tracing::debug!("TMF task allocation refused: {st}");
                tmf_rsp(self, TmfResponse::Rejected);
            }
        }
    }

    /// A SCSI Command whose turn it is, holding `slot`.
    fn on_scsi_command(
        &mut self,
        ctx: &Ctx<'_>,
        c: &ScsiCommand,
        cdb: &Cdb,
        data: &[u8],
        header: &[u8; BHS_LEN],
        slot: Slot,
    ) -> Next {
        if let Err(reason) = self.scsi_command(ctx, c, cdb, data, slot) {
            self.release(slot);
            self.reject(reason, header);
        }
        Next::Done
    }

    /// [`Core::on_scsi_command`]; `Err` is the Reject to answer (the slot is not used).
    fn scsi_command(
        &mut self,
        ctx: &Ctx<'_>,
        c: &ScsiCommand,
        cdb: &Cdb,
        data: &[u8],
        slot: Slot,
    ) -> Result<(), RejectReason> {
        let Some(s) = self.session.clone() else {
            return Ok(());
        };
        if s.handle.is_none() {
            return Err(RejectReason::ProtocolError);
        }
        let edtl = c.expected_data_transfer_length;
        // RFC 7143 §11.3.1: data needs its direction bit (a W or R bit with no length is
        // harmless and tolerated, as LIO does); both bits would be a bidirectional
        // command, which needs an AHS this target does not support.
        if c.read && c.write {
            tracing::debug!(
                conn = ctx.conn.id,
                itt = c.itt,
                "bidirectional command refused"
            );
            return Err(RejectReason::CommandNotSupported);
        }
        if !c.read && !c.write && edtl > 0 {
            tracing::debug!(
                conn = ctx.conn.id,
                itt = c.itt,
                edtl,
                "Expected Data Transfer Length without R or W bit refused"
            );
            return Err(RejectReason::ProtocolError);
        }
        if let Some(old) = self.tasks.get(&c.itt) {
            if !old.status_sent {
                return Err(RejectReason::TaskInProgress);
            }
            // The initiator has the old command's status: the ITT is free to reuse.
            if let Some(old) = self.tasks.remove(&c.itt) {
                self.zombies.push(old);
            }
        }
        let mut xfer = TaskXfer::new(c.itt, c.lun, edtl);
        let imm = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let more = if c.write {
            match xfer.begin_unsolicited(imm, c.final_bit, &self.limits) {
                Ok(m) => m,
                Err(e) => {
                    tracing::info!(conn = ctx.conn.id, error = %e, "bad unsolicited data: dropping the connection");
                    self.gone = Some(Gone::Failed);
                    return Ok(());
                }
            }
        } else if imm > 0 {
            return Err(RejectReason::ProtocolError);
        } else {
            false
        };
        let mut flags = 0;
        if c.read {
            flags |= task_flags::READ_DATA;
        }
        if c.write {
            flags |= task_flags::WRITE_DATA;
        }
        let mut cmd = Cmd {
            task: None,
            xfer,
            cdb: *cdb,
            lun: c.lun.to_be_bytes(),
            flags,
            attr: ffp::task_attribute(c.attr),
            cmd_sn: c.cmd_sn,
            collect: None,
            collected: imm,
            out_bufs: Default::default(),
            held: None,
            in_flight: 0,
            aborted: false,
            abort_pending: false,
            abort_done: false,
            status_sent: false,
            status_done: false,
            data_error: None,
            slot,
        };
        if imm > 0 || more {
            let size = if more {
                self.limits.first_burst.min(edtl)
            } else {
                imm
            };
            let Some(mut buf) = ctx.conn.pool.alloc(size.max(imm)) else {
                // No room in the buffer budget: the initiator retries later.
                self.release(slot);
                self.status_only(c.itt, ScsiStatus::BUSY.0, edtl);
                return Ok(());
            };
            if let Some(dst) = buf.as_mut_slice().get_mut(..data.len()) {
                dst.copy_from_slice(data);
            }
            cmd.collect = Some(buf);
        }
        if more {
            self.tasks.insert(c.itt, cmd);
            return Ok(());
        }
        self.post(ctx, cmd);
        Ok(())
    }

    /// Allocates the task of a command whose unsolicited data is all in, and posts it.
    fn post(&mut self, ctx: &Ctx<'_>, mut cmd: Cmd) {
        let Some(handle) = self.session.as_ref().and_then(|s| s.handle) else {
            return self.drop_cmd_bufs(cmd);
        };
        let itt = cmd.xfer.itt();
        let mut initial = cmd.collect.take();
        let mut flags = cmd.flags;
        if let Some(b) = initial.as_mut() {
            flags |= task_flags::INITIAL_BURST;
            b.set_xfer(0, cmd.collected as usize, dbuf_flags::FROM_RPORT);
        }
        let write = cmd.flags & task_flags::WRITE_DATA != 0;
        let spec = TaskSpec {
            lun: cmd.lun,
            cdb: cmd.cdb.as_bytes(),
            flags,
            tag: u64::from(itt),
            expected_xfer_len: u64::from(cmd.xfer.edtl()),
            cmd_sn: cmd.cmd_sn,
            task_attr: cmd.attr,
            tm_function: TmFunction::NONE,
            tm_ref_tag: 0,
            max_nbufs: if write {
                self.limits.max_outstanding_r2t.clamp(1, MAX_BUFS as u16) as u8
            } else {
                MAX_BUFS as u8
            },
        };
        let host = ctx.conn.host;
        let raw = Arc::into_raw(Arc::clone(ctx.conn)) as *mut c_void;
        match host.task_alloc(handle, &spec, raw) {
            Ok(task) => {
                cmd.task = Some(task.handle());
                self.tasks.insert(itt, cmd);
                defer(Act::Post(host, task, initial));
            }
            Err(st) => {
                // SAFETY: the reference made above; the core did not keep it.
                drop(unsafe { Arc::from_raw(raw as *const Conn) });
                if let Some(b) = initial {
                    BufPool::free(b);
                }
                tracing::debug!("task allocation refused: {st}");
                let edtl = cmd.xfer.edtl();
                self.release(std::mem::replace(&mut cmd.slot, Slot::None));
                self.status_only(itt, ScsiStatus::BUSY.0, edtl);
            }
        }
    }

    /// A SCSI Response for a command the core never saw.
    fn status_only(&mut self, itt: u32, status: u8, edtl: u32) {
        self.status_sense(itt, status, edtl, &[]);
    }

    fn status_sense(&mut self, itt: u32, status: u8, edtl: u32, sense: &[u8]) {
        let st = CmdStatus::new(status, edtl, 0, 0);
        let mut seg = std::mem::take(&mut self.scratch);
        ffp::sense_segment(sense, &mut seg);
        self.respond(|sn| Pdu::ScsiResponse(st.response(itt, sn, 0)), &seg);
        self.scratch = seg;
    }

    /// Ends a command whose Data-Out broke the sequence rules: CHECK CONDITION, ABORTED
    /// COMMAND with `e`'s ASC/ASCQ; the connection carries on.
    fn data_error(&mut self, ctx: &Ctx<'_>, itt: u32, e: XferError) {
        tracing::info!(conn = ctx.conn.id, itt, error = %e, "Data-Out sequence error: command ended");
        let host = ctx.conn.host;
        let Some(cmd) = self.tasks.get_mut(&itt) else {
            return;
        };
        match cmd.task.clone() {
            None => {
                let edtl = cmd.xfer.edtl();
                if let Some(cmd) = self.tasks.remove(&itt) {
                    self.drop_cmd_bufs(cmd);
                }
                let (asc, ascq) = e.sense_code();
                self.status_sense(
                    itt,
                    ScsiStatus::CHECK_CONDITION.0,
                    edtl,
                    &ffp::aborted_command_sense(asc, ascq),
                );
            }
            Some(task) => {
                cmd.data_error = Some(e.sense_code());
                let _ = cmd.xfer.cancel_gets().count();
                for b in cmd.out_bufs.iter_mut().filter_map(Option::take) {
                    defer(Act::XferDone(host, task.clone(), b, Status::IO_ERROR));
                }
            }
        }
    }

    fn on_data_out(&mut self, ctx: &Ctx<'_>, d: &DataOut, data: &[u8]) {
        let Some(cmd) = self.tasks.get_mut(&d.itt) else {
            tracing::trace!(itt = d.itt, "Data-Out for an unknown task dropped");
            return;
        };
        if cmd.aborted || cmd.data_error.is_some() {
            return;
        }
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let mut reqs: [Option<R2tReq>; MAX_R2T_SLOTS] = [None; MAX_R2T_SLOTS];
        let mut n = 0;
        let next_ttt = &mut self.next_ttt;
        let r = cmd
            .xfer
            .data_out(d, len, &self.limits, &mut || next_tag(next_ttt), |r| {
                if let Some(slot) = reqs.get_mut(n) {
                    *slot = Some(r);
                    n += 1;
                }
            });
        let place = match r {
            Ok(p) => p,
            Err(e) if !e.ends_task() => {
                tracing::debug!(error = %e, "Data-Out dropped");
                return;
            }
            Err(e) => return self.data_error(ctx, d.itt, e),
        };
        let host = ctx.conn.host;
        match place.buf {
            None => {
                if let Some(b) = cmd.collect.as_mut() {
                    let end = place.buf_offset + data.len();
                    if let Some(dst) = b.as_mut_slice().get_mut(place.buf_offset..end) {
                        dst.copy_from_slice(data);
                    }
                    cmd.collected = cmd.collected.max(end as u32);
                }
                if place.complete {
                    if let Some(cmd) = self.tasks.remove(&d.itt) {
                        self.post(ctx, cmd);
                    }
                }
            }
            Some(id) => {
                let slot = usize::from(id);
                if let Some(Some(b)) = cmd.out_bufs.get_mut(slot) {
                    let end = place.buf_offset + data.len();
                    if let Some(dst) = b.as_mut_slice().get_mut(place.buf_offset..end) {
                        dst.copy_from_slice(data);
                    }
                }
                if place.complete {
                    if let (Some(task), Some(b)) =
                        (&cmd.task, cmd.out_bufs.get_mut(slot).and_then(Option::take))
                    {
                        defer(Act::XferDone(host, task.clone(), b, Status::SUCCESS));
                    }
                }
                let sn = self.target_sn_nostat();
                if let Some(cmd) = self.tasks.get(&d.itt) {
                    for r in reqs.iter().flatten() {
                        if let Err(e) = self.tx.send_r2t(&cmd.xfer, r, sn) {
                            tracing::debug!(error = %e, "cannot queue an R2T");
                        }
                    }
                }
            }
        }
    }

    /// Sequence numbers for an R2T: the next StatSN, not advanced.
    fn target_sn_nostat(&self) -> TargetSn {
        self.target_sn()
    }

    // ---- port entry points ----------------------------------------------------------

    fn xfer_data(&mut self, host: Host, task: &TaskHandle, mut buf: DataBuf) {
        if self.closed {
            return defer(Act::XferDone(host, task.clone(), buf, Status::IO_ERROR));
        }
        let itt = task.tag() as u32;
        let sn = self.target_sn_nostat();
        let limits = self.limits;
        let tx = &mut self.tx;
        let next_ttt = &mut self.next_ttt;
        let id = task.id();
        let cmd = match self.tasks.get_mut(&itt).filter(|c| c.is(id)) {
            Some(c) => c,
            None => match self.zombies.iter_mut().find(|c| c.is(id)) {
                Some(c) => c,
                None => return defer(Act::XferDone(host, task.clone(), buf, Status::ABORTED)),
            },
        };
        if cmd.aborted || cmd.status_sent {
            return defer(Act::XferDone(host, task.clone(), buf, Status::ABORTED));
        }
        if cmd.data_error.is_some() {
            return defer(Act::XferDone(host, task.clone(), buf, Status::IO_ERROR));
        }
        // A PDU held for phase collapse goes as it is before more data.
        if let Some(h) = cmd.held.take() {
            if let Err(e) = tx.send_held(&h.pdu, h.data, Some(Tok::Unpin(h.raw))) {
                tracing::debug!(error = %e, "cannot queue a held Data-In");
            }
        }
        let flags = buf.flags();
        let off = buf.rel_offset();
        let len = buf.xfer_len();
        let edtl = u64::from(cmd.xfer.edtl());
        if len == 0 {
            return defer(Act::XferDone(host, task.clone(), buf, Status::SUCCESS));
        }
        if off + len as u64 > edtl {
            tracing::warn!(
                itt,
                off,
                len,
                edtl,
                "transfer beyond the expected data transfer length refused"
            );
            return defer(Act::XferDone(host, task.clone(), buf, Status::INVALID_ARG));
        }
        let off = off as u32;
        if flags & dbuf_flags::TO_RPORT != 0 {
            let wanted = task.cmd_xfer_len();
            let final_end = if wanted > 0 { wanted.min(edtl) } else { edtl };
            let hold = off as u64 + len as u64 >= final_end && BufPool::is_ours(&buf);
            let ptr = buf.as_mut_slice().as_ptr();
            // SAFETY: the buffer's memory stays valid and unmodified until its token
            // comes back (the LU gets the buffer back only through that token); a held
            // PDU pins the memory beyond that (see BufPool::pin).
            let dref = unsafe { DataRef::new(ptr, len) };
            let raw = RawBuf(buf.into_raw());
            let x = Xfer {
                task: &mut cmd.xfer,
                limits: &limits,
                sn,
            };
            match tx.put_data(x, off, dref, hold, Tok::XferIn(itt, id, raw)) {
                Ok(held) => {
                    if let Some(pdu) = held {
                        // SAFETY: a buffer of ours, handed out; the token above is not
                        // reported before the next flush.
                        unsafe { BufPool::pin(raw.0) };
                        cmd.held = Some(Held {
                            pdu,
                            data: dref,
                            raw,
                        });
                    }
                    cmd.in_flight += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot queue Data-In");
                    // SAFETY: nothing was queued; the buffer is ours to give back.
                    if let Some(b) = unsafe { DataBuf::from_raw(raw.0) } {
                        defer(Act::XferDone(host, task.clone(), b, Status::IO_ERROR));
                    }
                }
            }
        } else if flags & dbuf_flags::FROM_RPORT != 0 {
            let Some(slot) = cmd.out_bufs.iter().position(Option::is_none) else {
                return defer(Act::XferDone(host, task.clone(), buf, Status::BUSY));
            };
            let x = Xfer {
                task: &mut cmd.xfer,
                limits: &limits,
                sn,
            };
            let r = tx.get_data(x, slot as u8, off, len as u32, &mut || next_tag(next_ttt));
            match r {
                Ok(()) => cmd.out_bufs[slot] = Some(buf),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot request Data-Out");
                    defer(Act::XferDone(host, task.clone(), buf, Status::IO_ERROR));
                }
            }
        } else {
            defer(Act::XferDone(host, task.clone(), buf, Status::INVALID_ARG));
        }
    }

    fn send_status(&mut self, host: Host, task: &TaskHandle) {
        if self.closed {
            return defer(Act::StatusDone(host, task.clone(), Status::IO_ERROR));
        }
        let itt = task.tag() as u32;
        let f = task.tm_function();
        if f != TmFunction::NONE {
            let mut response = ffp::tmf_response(task.tm_response(), f);
            let ref_itt = task.tm_ref_tag() as u32;
            if let Some(i) = self.tmf_slots.iter().position(|(t, _)| *t == itt) {
                let (_, slot) = self.tmf_slots.swap_remove(i);
                self.release(slot);
            }
            if f == TmFunction::ABORT_TASK {
                if let Some(i) = self.late_aborts.iter().position(|x| *x == ref_itt) {
                    // Its status had gone out: for the initiator the task did not exist.
                    self.late_aborts.swap_remove(i);
                    response = TmfResponse::TaskDoesNotExist;
                }
            }
            self.respond(
                |sn| Pdu::TaskMgmtResponse(TaskMgmtResponse { response, itt, sn }),
                &[],
            );
            if self.cold_reset_itt == Some(itt) {
                self.gone_after_flush(Gone::Failed);
            }
            return defer(Act::StatusDone(host, task.clone(), Status::SUCCESS));
        }
        let slot = match self.cmd_mut(task) {
            Some(cmd) if cmd.status_sent => return,
            Some(cmd) => std::mem::replace(&mut cmd.slot, Slot::None),
            None => return defer(Act::StatusDone(host, task.clone(), Status::ABORTED)),
        };
        // The slot opens before the response is built, so the response carries it.
        self.release(slot);
        let sn = self.target_sn();
        let Some(cmd) = self.cmd_mut(task) else {
            return;
        };
        let moved = cmd.xfer.bytes_sent().max(cmd.xfer.bytes_received());
        let own_sense;
        let task_sense;
        let (status, sense) = match cmd.data_error {
            Some((asc, ascq)) => {
                own_sense = ffp::aborted_command_sense(asc, ascq);
                (ScsiStatus::CHECK_CONDITION.0, &own_sense[..])
            }
            None => {
                task_sense = task.sense();
                (task.scsi_status(), &task_sense[..])
            }
        };
        let st = CmdStatus::new(status, cmd.xfer.edtl(), task.cmd_xfer_len(), moved);
        let data_sn = cmd.xfer.data_sn();
        let held = cmd.held.take();
        for b in cmd.out_bufs.iter_mut().filter_map(Option::take) {
            defer(Act::XferDone(host, task.clone(), b, Status::ABORTED));
        }
        cmd.status_sent = true;
        if cmd.in_flight == 0 {
            cmd.status_done = true;
        }
        let done_now = cmd.status_done;
        let collapse = held.is_some() && st.status == ScsiStatus::GOOD.0 && sense.is_empty();
        if let Some(mut h) = held {
            if collapse {
                h.pdu
                    .collapse_status(st.data_in_status(sn.stat_sn), sn.exp_cmd_sn, sn.max_cmd_sn);
                self.stat_sn = self.stat_sn.wrapping_add(1);
            }
            if let Err(e) = self.tx.send_held(&h.pdu, h.data, Some(Tok::Unpin(h.raw))) {
                tracing::debug!(error = %e, "cannot queue the final Data-In");
                // SAFETY: pinned when held; not queued, so unpinned here once.
                unsafe { BufPool::unpin(h.raw.0) };
            }
        }
        if !collapse {
            let mut seg = std::mem::take(&mut self.scratch);
            ffp::sense_segment(sense, &mut seg);
            self.respond(|sn| Pdu::ScsiResponse(st.response(itt, sn, data_sn)), &seg);
            self.scratch = seg;
        }
        if done_now {
            defer(Act::StatusDone(host, task.clone(), Status::SUCCESS));
        }
    }

    fn abort(&mut self, host: Host, task: &TaskHandle) -> AbortOutcome {
        let Some(cmd) = self.cmd_mut(task) else {
            return AbortOutcome::Done;
        };
        if cmd.status_sent {
            // Its status is out (send_status_done is queued or done): nothing to stop.
            // An ABORT TASK naming it answers TASK DOES NOT EXIST.
            let itt = task.tag() as u32;
            if !self.late_aborts.contains(&itt) {
                // Only ABORT TASK consumes an entry (a LUN RESET leaves its own): keep
                // the latest few.
                if self.late_aborts.len() >= MAX_LATE_ABORTS {
                    self.late_aborts.remove(0);
                }
                self.late_aborts.push(itt);
            }
            return AbortOutcome::Pending;
        }
        if cmd.aborted {
            return AbortOutcome::Pending;
        }
        cmd.aborted = true;
        let mut handed_back = false;
        if let Some(h) = cmd.held.take() {
            // SAFETY: pinned when held; unpinned once.
            unsafe { BufPool::unpin(h.raw.0) };
        }
        let _ = cmd.xfer.cancel_gets().count();
        for b in cmd.out_bufs.iter_mut().filter_map(Option::take) {
            defer(Act::XferDone(host, task.clone(), b, Status::ABORTED));
            handed_back = true;
        }
        // Data-In not started yet is dropped; a PDU half written must finish.
        let mut done = std::mem::take(&mut self.done);
        self.tx.cancel(
            |t| matches!(t, Tok::XferIn(_, id, _) if *id == task.id()),
            &mut |t| done.push(t),
        );
        for t in done.drain(..) {
            self.complete(host, t, Status::ABORTED);
            handed_back = true;
        }
        self.done = done;
        let Some(cmd) = self.cmd_mut(task) else {
            return AbortOutcome::Pending;
        };
        if cmd.in_flight > 0 {
            cmd.abort_pending = true;
            return AbortOutcome::Pending;
        }
        if handed_back {
            // The buffers go back first; then the port lets go of the task.
            cmd.abort_pending = true;
            cmd.abort_done = true;
            defer(Act::LportAborted(host, task.clone(), Status::ABORTED));
            return AbortOutcome::Pending;
        }
        AbortOutcome::Done
    }
}

/// Keepalive settings.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// Idle time before the target pings (NOP-In).
    pub interval: Duration,
    /// Time a ping may stay unanswered before the connection is dropped.
    pub timeout: Duration,
}
