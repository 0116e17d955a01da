//! The `mio` event loops: they accept connections on the portals and read from them.
//!
//! Listeners live on loop 0; each accepted connection is adopted by one loop (round
//! robin) for its whole life. Other threads talk to a loop through its inbox and wake it
//! with its `mio::Waker`. A 100 ms tick drives login and keepalive timers.

use super::conn::Conn;
use super::Runtime;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WAKER: Token = Token(0);
const TICK: Duration = Duration::from_millis(100);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request to a loop.
pub enum Msg {
    /// Start accepting on a listener (id for `Unlisten`).
    Listen(u64, TcpListener),
    /// Stop accepting on a listener.
    Unlisten(u64),
    /// Take over a new connection.
    Adopt(Arc<Conn>),
    /// Run [`Conn::on_wake`] (buffer memory came back, window slots to reopen).
    Wake(Arc<Conn>),
    /// Close every connection and end the thread.
    Stop,
}

struct Shared {
    waker: Waker,
    inbox: Mutex<Vec<Msg>>,
}

struct Handle {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The provider's event loops.
pub struct Loops {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Loops {
    /// Starts `n` loop threads.
    pub fn start(n: usize, rt: Weak<Runtime>) -> io::Result<Loops> {
        let mut handles = Vec::new();
        for i in 0..n.max(1) {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            let shared = Arc::new(Shared {
                waker,
                inbox: Mutex::new(Vec::new()),
            });
            let (s, rt) = (Arc::clone(&shared), rt.clone());
            let thread = std::thread::Builder::new()
                .name(format!("iscsit-loop{i}"))
                .spawn(move || run(poll, s, rt))?;
            handles.push(Handle {
                shared,
                thread: Mutex::new(Some(thread)),
            });
        }
        Ok(Loops {
            handles,
            next: AtomicUsize::new(0),
        })
    }

    /// Sends `msg` to loop `i`.
    pub fn send(&self, i: usize, msg: Msg) {
        if let Some(h) = self.handles.get(i % self.handles.len().max(1)) {
            lock(&h.shared.inbox).push(msg);
            if let Err(e) = h.shared.waker.wake() {
                tracing::error!("iscsit: cannot wake an event loop: {e}");
            }
        }
    }

    /// The loop for the next connection.
    pub fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len().max(1)
    }

    /// Stops every loop and waits for the threads.
    pub fn stop(&self) {
        for i in 0..self.handles.len() {
            self.send(i, Msg::Stop);
        }
        let me = std::thread::current().id();
        for h in &self.handles {
            if let Some(t) = lock(&h.thread).take() {
                if t.thread().id() != me {
                    let _ = t.join();
                }
            }
        }
    }
}

enum Source {
    Listener(u64, TcpListener),
    Conn(Arc<Conn>),
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// One descriptor kept open so that, when the process runs out, a pending connection can
/// still be accepted and closed instead of waiting in the backlog (the classic
/// reserve-descriptor trick): the initiator is told no at once, existing sessions keep
/// their descriptors, and the oldest connection in login of the busiest source is closed
/// so that a later newcomer finds one.
struct Spare(Option<std::fs::File>);

impl Spare {
    fn open() -> Spare {
        Spare(std::fs::File::open("/dev/null").ok())
    }

    /// Accepts and closes one pending connection; false when there is none or the
    /// reserve is gone.
    fn refuse_one(&mut self, l: &TcpListener, rt: &Runtime) -> bool {
        if self.0.take().is_none() {
            return false;
        }
        let refused = match l.accept() {
            Ok((stream, peer)) => {
                drop(stream);
                rt.admission
                    .refuse(super::admission::Refusal::Descriptors, peer.ip());
                // A connection still in login gives its descriptor up for the next
                // newcomer (admission.rs).
                rt.admission.evict_for_descriptor();
                true
            }
            Err(_) => false,
        };
        *self = Spare::open();
        refused
    }
}

fn run(mut poll: Poll, shared: Arc<Shared>, rt: Weak<Runtime>) {
    let mut spare = Spare::open();
    let mut events = Events::with_capacity(256);
    let mut sources: HashMap<Token, Source> = HashMap::new();
    let mut next_token = 1usize;
    let mut next_tick = Instant::now() + TICK;
    loop {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!("iscsit: event loop poll failed: {e}");
                std::thread::sleep(TICK);
            }
            continue;
        }
        for ev in events.iter() {
            let token = ev.token();
            if token == WAKER {
                let msgs = std::mem::take(&mut *lock(&shared.inbox));
                for m in msgs {
                    match m {
                        Msg::Listen(id, mut l) => {
                            let t = Token(next_token);
                            next_token += 1;
                            match poll.registry().register(&mut l, t, Interest::READABLE) {
                                Ok(()) => {
                                    sources.insert(t, Source::Listener(id, l));
                                }
                                Err(e) => tracing::error!("iscsit: cannot watch a portal: {e}"),
                            }
                        }
                        Msg::Unlisten(gone) => {
                            sources.retain(|_, s| {
                                let Source::Listener(lid, l) = s else {
                                    return true;
                                };
                                if *lid != gone {
                                    return true;
                                }
                                let _ = poll.registry().deregister(l);
                                false
                            });
                        }
                        Msg::Adopt(c) => {
                            let t = Token(next_token);
                            next_token += 1;
                            match c.register(poll.registry(), t) {
                                Ok(()) => {
                                    c.on_readable();
                                    sources.insert(t, Source::Conn(c));
                                }
                                Err(e) => {
                                    tracing::error!("iscsit: cannot watch a connection: {e}");
                                    c.close("registration failed");
                                }
                            }
                        }
                        Msg::Wake(c) => c.on_wake(),
                        Msg::Stop => {
                            for s in sources.values() {
                                if let Source::Conn(c) = s {
                                    c.close("shutdown");
                                }
                            }
                            return;
                        }
                    }
                }
                continue;
            }
            match sources.get(&token) {
                Some(Source::Listener(_, l)) => loop {
                    match l.accept() {
                        Ok((stream, peer)) => match rt.upgrade() {
                            Some(rt) => rt.accept(stream, peer),
                            None => return,
                        },
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if out_of_descriptors(&e) => {
                            // The backlog would keep the connection waiting: take it with
                            // the reserve descriptor and close it at once.
                            let Some(rt) = rt.upgrade() else { return };
                            if !spare.refuse_one(l, &rt) {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!("iscsit: accept failed: {e}");
                            break;
                        }
                    }
                },
                Some(Source::Conn(c)) => {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        c.on_readable();
                    }
                    if ev.is_writable() {
                        c.on_writable();
                    }
                }
                None => {}
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + TICK;
            for s in sources.values() {
                if let Source::Conn(c) = s {
                    c.on_tick();
                }
            }
            sources.retain(|_, s| match s {
                Source::Conn(c) => !c.is_closed(),
                Source::Listener(..) => true,
            });
        }
    }
}
