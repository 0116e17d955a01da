//! The blocking driver: a [`SessionCore`] over one non-blocking TCP socket (`mio`).
//!
//! The loop only moves bytes: it writes what the core queued, waits for the socket or
//! the core's next deadline, reads into the core's receive buffer and collects the
//! core's events. Synchronous helpers (`login`, `scsi`, `read`, `write`, `discover`,
//! `logout`) wait for their own task; [`Session::submit`] and
//! [`Session::poll_completions`] keep many commands in flight.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use idm::pdu::{Isid, TmfFunction, TmfResponse};
use mio::{Events, Interest, Poll, Token};

use crate::core::{
    parse_send_targets, AsyncNotice, DiscoveredTarget, Event, LoginOptions, ScsiRequest,
    ScsiResult, SessionConfig, SessionCore, SessionKind, TaskId,
};
use crate::error::{Error, TaskError};
use crate::scsi::{self, sense_key, status, Capacity};
use crate::url::{Credentials, IscsiUrl, Portal};

const SOCK: Token = Token(0);
/// How often a command that got UNIT ATTENTION is retried by the blocking helpers.
const UA_RETRIES: usize = 3;

/// A finished SCSI command from [`Session::poll_completions`].
#[derive(Debug)]
pub struct Completion {
    /// The task.
    pub id: TaskId,
    /// Its result.
    pub result: Result<ScsiResult, TaskError>,
}

/// An iSCSI session over TCP. See the [module documentation](self).
pub struct Session {
    core: SessionCore,
    sock: mio::net::TcpStream,
    poll: Poll,
    events: Events,
    tx: Vec<u8>,
    tx_off: usize,
    lun: u16,
    capacity: Option<Capacity>,
    done: VecDeque<Completion>,
    other: Vec<Event>,
    notices: Vec<AsyncNotice>,
    failure: Option<Error>,
    dead: bool,
    logged_out: bool,
    shut: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("core", &self.core)
            .field("lun", &self.lun)
            .finish_non_exhaustive()
    }
}

/// A random ISID (type 10b "random", RFC 7143 §11.12.5).
pub fn random_isid() -> Isid {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let r = h.finish().to_be_bytes();
    Isid([0x80, r[0], r[1], r[2], r[3], r[4]])
}

fn connect(portal: &Portal, timeout: Duration) -> Result<std::net::TcpStream, Error> {
    let name = portal.socket_addr_string();
    let addrs: Vec<SocketAddr> = name.to_socket_addrs()?.collect();
    let mut last = None;
    for a in &addrs {
        match std::net::TcpStream::connect_timeout(a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(Error::Resolve(name), Error::Io))
}

impl Session {
    /// Connects to `portal` and logs in a session of `kind`.
    pub fn connect(
        portal: &Portal,
        kind: SessionKind,
        credentials: Option<Credentials>,
        opts: &LoginOptions,
    ) -> Result<Self, Error> {
        let cfg = SessionConfig {
            opts: opts.clone(),
            kind,
            isid: opts.isid.unwrap_or_else(random_isid),
            credentials,
        };
        let mut core = SessionCore::new(cfg)?;
        let std_sock = connect(portal, opts.login_timeout)?;
        std_sock.set_nodelay(true)?;
        std_sock.set_nonblocking(true)?;
        let mut sock = mio::net::TcpStream::from_std(std_sock);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut sock, SOCK, Interest::READABLE | Interest::WRITABLE)?;
        core.start(Instant::now())?;
        let mut s = Self {
            core,
            sock,
            poll,
            events: Events::with_capacity(16),
            tx: Vec::with_capacity(64 * 1024),
            tx_off: 0,
            lun: 0,
            capacity: None,
            done: VecDeque::new(),
            other: Vec::new(),
            notices: Vec::new(),
            failure: None,
            dead: false,
            logged_out: false,
            shut: false,
        };
        let deadline = Instant::now().checked_add(opts.login_timeout);
        s.wait(deadline, "login", |s| s.core.is_logged_in().then_some(()))?;
        Ok(s)
    }

    /// Logs in to the target and LUN of `url` (normal session).
    pub fn login(url: &IscsiUrl, opts: &LoginOptions) -> Result<Self, Error> {
        let kind = SessionKind::Normal {
            target: url.target.clone(),
        };
        let mut s = Self::connect(&url.portal, kind, url.credentials.clone(), opts)?;
        s.lun = url.lun;
        Ok(s)
    }

    /// Lists the targets a portal (`host[:port]` or an `iscsi://` URL) offers, with a
    /// discovery session and `SendTargets=All`.
    pub fn discover(portal: &str, opts: &LoginOptions) -> Result<Vec<DiscoveredTarget>, Error> {
        let (portal, creds) = Portal::parse(portal)?;
        let mut s = Self::connect(&portal, SessionKind::Discovery, creds, opts)?;
        let id = s.core.submit_send_targets(Instant::now(), None)?;
        let text = s.wait_other(id, |e| match e {
            Event::TextDone { id: i, result } if *i == id => Some(result.clone()),
            _ => None,
        })??;
        let targets = parse_send_targets(&text).map_err(Error::Protocol)?;
        s.logout()?;
        Ok(targets)
    }

    /// The session core (negotiated parameters, sequence numbers, TSIH).
    pub fn core(&self) -> &SessionCore {
        &self.core
    }

    /// The LUN the helpers address (the URL's).
    pub fn lun(&self) -> u16 {
        self.lun
    }

    /// Changes the LUN the helpers address.
    pub fn set_lun(&mut self, lun: u16) {
        self.lun = lun;
        self.capacity = None;
    }

    /// Commands submitted and not yet collected by [`poll_completions`](Self::poll_completions).
    pub fn in_flight(&self) -> usize {
        self.core.outstanding()
    }

    /// Async Messages received so far (taken).
    pub fn take_async_notices(&mut self) -> Vec<AsyncNotice> {
        std::mem::take(&mut self.notices)
    }

    // ---- queue depth API -------------------------------------------------------------

    /// Queues a command without waiting. Queued commands are written, as the CmdSN
    /// window allows, by the next [`poll_completions`](Self::poll_completions) or
    /// [`flush`](Self::flush), so that a batch of submissions leaves in one write.
    pub fn submit(&mut self, req: ScsiRequest) -> Result<TaskId, Error> {
        self.check_alive()?;
        self.core.submit(Instant::now(), req)
    }

    /// Waits up to `timeout` (forever with `None`) until at least one command finished,
    /// then moves every finished command to `out`; returns how many were moved.
    pub fn poll_completions(
        &mut self,
        out: &mut Vec<Completion>,
        timeout: Option<Duration>,
    ) -> Result<usize, Error> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self.flush()?;
        while self.done.is_empty() {
            if self.dead || self.core.is_closed() {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(0);
            }
            self.pump(deadline)?;
        }
        let n = self.done.len();
        out.extend(self.done.drain(..));
        if n == 0 {
            self.check_alive()?;
        }
        Ok(n)
    }

    // ---- blocking helpers ------------------------------------------------------------

    /// Runs one SCSI command on the session's LUN and returns its status, sense and
    /// data (any status; see [`ScsiResult::check`]).
    pub fn scsi(
        &mut self,
        cdb: &[u8],
        data_out: &[u8],
        data_in_len: u32,
    ) -> Result<ScsiResult, Error> {
        let req = ScsiRequest {
            lun: self.lun,
            cdb: cdb.to_vec(),
            data_out: data_out.to_vec(),
            data_in_len,
            buffer: Vec::new(),
        };
        self.execute(req)
    }

    /// Runs one command and waits for it.
    pub fn execute(&mut self, req: ScsiRequest) -> Result<ScsiResult, Error> {
        let id = self.submit(req)?;
        let c = self.wait(None, "command", |s| {
            let pos = s.done.iter().position(|c| c.id == id)?;
            s.done.remove(pos)
        })?;
        Ok(c.result?)
    }

    /// Runs a command, retrying on UNIT ATTENTION, and fails on any status but GOOD.
    pub fn execute_checked(&mut self, req: ScsiRequest) -> Result<ScsiResult, Error> {
        for _ in 0..UA_RETRIES {
            let r = self.execute(req.clone())?;
            let ua = r.status == status::CHECK_CONDITION
                && r.sense()
                    .is_some_and(|s| s.key == sense_key::UNIT_ATTENTION);
            if !ua {
                return r.check();
            }
        }
        self.execute(req)?.check()
    }

    /// READ CAPACITY (16, falling back to 10) of the session's LUN, cached.
    pub fn read_capacity(&mut self) -> Result<Capacity, Error> {
        if let Some(c) = self.capacity {
            return Ok(c);
        }
        let lun = self.lun;
        let r16 = self.execute_checked(ScsiRequest::read(lun, &scsi::read_capacity16(32), 32));
        let cap = match r16 {
            Ok(r) => Capacity::from_rc16(&r.data),
            Err(Error::Scsi { .. }) => {
                let r =
                    self.execute_checked(ScsiRequest::read(lun, &scsi::read_capacity10(), 8))?;
                Capacity::from_rc10(&r.data)
            }
            Err(e) => return Err(e),
        }
        .ok_or(Error::Protocol(crate::error::ProtocolError::BadText(
            "READ CAPACITY data too short or zero block size".to_owned(),
        )))?;
        self.capacity = Some(cap);
        Ok(cap)
    }

    /// Reads `blocks` logical blocks at `lba` (READ 16).
    pub fn read(&mut self, lba: u64, blocks: u32) -> Result<Vec<u8>, Error> {
        let bs = self.read_capacity()?.block_size;
        let len = blocks
            .checked_mul(bs)
            .ok_or(Error::Usage("read longer than 4 GiB"))?;
        let req = ScsiRequest::read(self.lun, &scsi::read16(lba, blocks), len);
        Ok(self.execute_checked(req)?.data)
    }

    /// Writes whole blocks at `lba` (WRITE 16).
    pub fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), Error> {
        let bs = self.read_capacity()?.block_size as usize;
        if data.is_empty() || data.len() % bs != 0 {
            return Err(Error::Usage(
                "write length must be a non-zero multiple of the block size",
            ));
        }
        let blocks = u32::try_from(data.len() / bs).map_err(|_| Error::Usage("write too long"))?;
        let req = ScsiRequest::write(self.lun, &scsi::write16(lba, blocks, false), data.to_vec());
        self.execute_checked(req).map(|_| ())
    }

    /// Sends a task management function and waits for the response.
    pub fn tmf(
        &mut self,
        function: TmfFunction,
        referenced: Option<TaskId>,
    ) -> Result<TmfResponse, Error> {
        self.check_alive()?;
        let id = self
            .core
            .submit_tmf(Instant::now(), function, self.lun, referenced)?;
        Ok(self.wait_other(id, |e| match e {
            Event::TmfDone { id: i, result } if *i == id => Some(result.clone()),
            _ => None,
        })??)
    }

    /// Pings the target (NOP-Out / NOP-In).
    pub fn nop(&mut self) -> Result<(), Error> {
        self.check_alive()?;
        let id = self.core.submit_nop(Instant::now())?;
        Ok(self.wait_other(id, |e| match e {
            Event::NopDone { id: i, result } if *i == id => Some(result.clone()),
            _ => None,
        })??)
    }

    /// Logs out (close session) and waits for the target's answer.
    pub fn logout(mut self) -> Result<(), Error> {
        self.check_alive()?;
        self.core.logout(Instant::now())?;
        let deadline = Instant::now().checked_add(Duration::from_secs(10));
        self.wait(deadline, "logout", |s| s.logged_out.then_some(()))
    }

    // ---- the loop --------------------------------------------------------------------

    fn check_alive(&mut self) -> Result<(), Error> {
        if let Some(e) = self.failure.take() {
            self.dead = true;
            return Err(e);
        }
        if self.dead || self.core.is_closed() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Pumps until `ready` yields, the deadline passes or the session fails.
    fn wait<T>(
        &mut self,
        deadline: Option<Instant>,
        what: &'static str,
        mut ready: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<T, Error> {
        loop {
            if let Some(v) = ready(self) {
                return Ok(v);
            }
            self.check_alive()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout(what));
            }
            self.pump(deadline)?;
        }
    }

    /// Waits for a non-SCSI task's event and maps it with `pick`.
    fn wait_other<T>(
        &mut self,
        _id: TaskId,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Result<T, Error> {
        self.wait(None, "task", |s| {
            let pos = s.other.iter().position(|e| pick(e).is_some())?;
            pick(&s.other.remove(pos))
        })
    }

    /// Writes as much of the queued output as the socket takes without blocking.
    pub fn flush(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        if self.tx_off == self.tx.len() {
            self.tx.clear();
            self.tx_off = 0;
        }
        self.core.poll_transmit(now, &mut self.tx);
        while self.tx_off < self.tx.len() {
            match self.sock.write(self.tx.get(self.tx_off..).unwrap_or(&[])) {
                Ok(0) => {
                    self.core.transport_failed(now);
                    break;
                }
                Ok(n) => self.tx_off += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.core.transport_failed(now);
                    self.collect();
                    self.failure.get_or_insert(Error::Io(e));
                    return Ok(());
                }
            }
        }
        if self.tx_off == self.tx.len() {
            self.tx.clear();
            self.tx_off = 0;
            if self.core.wants_close() && !self.shut {
                self.shut = true;
                let _ = self.sock.shutdown(Shutdown::Both);
            }
        }
        self.collect();
        Ok(())
    }

    /// Reads everything the socket has into the core.
    fn read_all(&mut self) {
        let now = Instant::now();
        loop {
            let buf = self.core.read_buf();
            if buf.is_empty() {
                // A whole PDU is waiting: process it and look again.
                self.core.commit(now, 0);
                if self.core.read_buf().is_empty() {
                    break;
                }
                continue;
            }
            let buf_len = buf.len();
            match self.sock.read(buf) {
                Ok(0) => {
                    self.core.transport_failed(now);
                    break;
                }
                Ok(n) => {
                    let short = n < buf_len;
                    self.core.commit(now, n);
                    // Edge-triggered: a short read drained the socket, and data that
                    // arrives later raises a new event. Saves one EAGAIN read.
                    if short {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.core.transport_failed(now);
                    self.failure.get_or_insert(Error::Io(e));
                    break;
                }
            }
        }
    }

    /// One round: write, wait for the socket or a deadline, read, fire timers.
    fn pump(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
        self.flush()?;
        if self.failure.is_some() {
            return Ok(());
        }
        if self.shut || self.core.is_closed() && self.tx_off == self.tx.len() {
            self.dead = true;
            return Ok(());
        }
        let now = Instant::now();
        let until = [deadline, self.core.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let timeout = until.map(|t| t.saturating_duration_since(now));
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
        let readable = self
            .events
            .iter()
            .any(|e| e.is_readable() || e.is_read_closed() || e.is_error());
        if readable {
            self.read_all();
        }
        let now = Instant::now();
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        self.flush()
    }

    /// Moves the core's events into the driver's queues.
    fn collect(&mut self) {
        while let Some(ev) = self.core.poll_event() {
            match ev {
                Event::Completed { id, result } => self.done.push_back(Completion { id, result }),
                Event::Failed(e) => {
                    self.failure.get_or_insert(e);
                }
                Event::LoggedOut => self.logged_out = true,
                Event::Async(n) => self.notices.push(n),
                Event::LoggedIn => {}
                other => self.other.push(other),
            }
        }
    }
}
