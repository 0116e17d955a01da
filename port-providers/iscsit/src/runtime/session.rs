//! An iSCSI session: one SDK session (I_T nexus) for a normal session, its connections
//! (MC/S) and the command window they share.

use super::conn::Conn;
use super::pool::{Account, Budget, OwnedBuf};
use super::target::Target;
use crate::auth::Identity;
use crate::ffp::{Admit, CmdWindow};
use crate::limits::Limits;
use crate::login::SessionKey;
use idm::keys::NegotiatedParams;
use idm::pdu::{Cdb, Pdu};
use plugins_sdk::SessionHandle;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A command PDU received ahead of a CmdSN gap, kept (copied) until the gap fills.
pub struct HeldPdu {
    /// The connection it arrived on (responses go there: connection allegiance).
    pub conn: Weak<Conn>,
    /// Its header.
    pub pdu: Pdu,
    /// The whole CDB of a SCSI Command.
    pub cdb: Option<Cdb>,
    /// Its data segment, in a buffer of the connection's store (budgeted); `None` with
    /// `len > 0` when the budget had no room for it (the command is answered BUSY).
    pub data: Option<OwnedBuf>,
    /// Length of the data segment.
    pub len: usize,
}

/// What a command holds of its session until it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Nothing (already given back, or never taken).
    None,
    /// A slot of the CmdSN window.
    Window,
    /// One of the immediate commands allowed beside the window.
    Immediate,
}

struct Window {
    win: CmdWindow,
    held: BTreeMap<u32, HeldPdu>,
}

/// A logged-in session.
pub struct Session {
    /// TSIH.
    pub tsih: u16,
    /// Initiator, ISID, target, portal group.
    pub key: SessionKey,
    /// The target (normal sessions).
    pub target: Option<Arc<Target>>,
    /// The SDK session (normal sessions).
    pub handle: Option<SessionHandle>,
    /// What the leading login negotiated.
    pub params: NegotiatedParams,
    /// InitiatorAlias.
    pub initiator_alias: String,
    /// What the leading login established about the initiator name.
    pub identity: Identity,
    window: Mutex<Window>,
    conns: Mutex<Vec<Arc<Conn>>>,
    closing: AtomicBool,
    /// The session's share of the buffer memory.
    pub account: Arc<Account>,
    global: Arc<Budget>,
}

impl Session {
    /// A session whose first command will carry `cmd_sn`, with the window and buffer
    /// budget of `limits`, charging `global` too.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tsih: u16,
        key: SessionKey,
        target: Option<Arc<Target>>,
        handle: Option<SessionHandle>,
        params: NegotiatedParams,
        cmd_sn: u32,
        limits: &Limits,
        global: Arc<Budget>,
    ) -> Self {
        Self {
            tsih,
            key,
            target,
            handle,
            initiator_alias: params.initiator_alias.clone().unwrap_or_default(),
            identity: Identity::Trusted,
            params,
            window: Mutex::new(Window {
                win: CmdWindow::new(cmd_sn, limits.cmd_window, limits.max_immediate_commands),
                held: BTreeMap::new(),
            }),
            conns: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            account: Account::new(limits.session_buffer_memory, &global),
            global,
        }
    }

    /// The session with the identity its leading login established.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    /// True for a discovery session.
    pub fn is_discovery(&self) -> bool {
        self.key.target.is_none()
    }

    /// The window now.
    pub fn window(&self) -> CmdWindow {
        lock(&self.window).win
    }

    /// Classifies a command PDU and, when it is in order, advances the window (the
    /// command takes its slot; an immediate one takes one of the immediate slots).
    pub fn admit(&self, cmd_sn: u32, immediate: bool) -> Admit {
        let mut w = lock(&self.window);
        let a = w.win.admit(cmd_sn, immediate);
        if a == Admit::Now && !immediate {
            w.win.advance();
        }
        a
    }

    /// A command is done with its `slot`. A window slot opens again at once unless the
    /// session is short of buffer memory; then it is owed, and the account calls back
    /// (see [`Session::reopen`]) when memory is free again.
    pub fn release(&self, slot: Slot) {
        match slot {
            Slot::None => {}
            Slot::Immediate => lock(&self.window).win.release_immediate(),
            Slot::Window => {
                let pressed = self.account.pressed(&self.global);
                lock(&self.window).win.release(!pressed);
                if pressed {
                    self.account.wait();
                    // Memory may have come back between the check and the wait.
                    if !self.account.pressed(&self.global) {
                        self.reopen();
                    }
                }
            }
        }
    }

    /// Opens the window slots owed under memory pressure; true when MaxCmdSN moved (the
    /// caller then tells the initiator, e.g. with a NOP-In).
    pub fn reopen(&self) -> bool {
        lock(&self.window).win.reopen()
    }

    /// True while the session is short of buffer memory.
    pub fn pressed(&self) -> bool {
        self.account.pressed(&self.global)
    }

    /// Keeps a PDU that arrived ahead of a gap (a second one with the same CmdSN is
    /// dropped).
    pub fn hold(&self, cmd_sn: u32, held: HeldPdu) {
        lock(&self.window).held.entry(cmd_sn).or_insert(held);
    }

    /// The held PDU whose turn it is now, if any (the window advances past it).
    pub fn take_next_held(&self) -> Option<HeldPdu> {
        let mut w = lock(&self.window);
        let exp = w.win.exp_cmd_sn();
        let h = w.held.remove(&exp)?;
        w.win.advance();
        Some(h)
    }

    /// Adds a connection.
    pub fn add_conn(&self, c: Arc<Conn>) {
        lock(&self.conns).push(c);
    }

    /// Removes a connection; returns how many are left.
    pub fn remove_conn(&self, c: &Conn) -> usize {
        let mut v = lock(&self.conns);
        v.retain(|x| !std::ptr::eq(Arc::as_ptr(x), c));
        v.len()
    }

    /// The connections (a copy: never lock a connection while holding the list).
    pub fn conns(&self) -> Vec<Arc<Conn>> {
        lock(&self.conns).clone()
    }

    /// CIDs in use.
    pub fn cids(&self) -> Vec<u16> {
        self.conns().iter().filter_map(|c| c.cid()).collect()
    }

    /// Marks the session closing; true for the first caller.
    pub fn start_closing(&self) -> bool {
        !self.closing.swap(true, Ordering::AcqRel)
    }

    /// True once the session is being closed.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// SCSI initiator port name: `<initiator>,i,0x<ISID>` (SPC-4 §7.6.4.6).
    pub fn port_name(&self) -> String {
        port_name(&self.key)
    }
}

/// SCSI initiator port name of a session key.
pub fn port_name(key: &SessionKey) -> String {
    let isid: String = key.isid.0.iter().map(|b| format!("{b:02x}")).collect();
    format!("{},i,0x{isid}", key.initiator)
}
