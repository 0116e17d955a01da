//! An iSCSI session: one SDK session (I_T nexus) for a normal session, its connections
//! (MC/S) and the command window they share.

use super::conn::Conn;
use super::target::Target;
use crate::auth::Identity;
use crate::ffp::{Admit, CmdWindow};
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
    /// Its data segment.
    pub data: Vec<u8>,
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
}

impl Session {
    /// A session whose first command will carry `cmd_sn`.
    pub fn new(
        tsih: u16,
        key: SessionKey,
        target: Option<Arc<Target>>,
        handle: Option<SessionHandle>,
        params: NegotiatedParams,
        cmd_sn: u32,
        depth: u32,
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
                win: CmdWindow::new(cmd_sn, depth),
                held: BTreeMap::new(),
            }),
            conns: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
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

    /// Classifies a command PDU and, when it is in order, advances the window.
    pub fn admit(&self, cmd_sn: u32, immediate: bool) -> Admit {
        let mut w = lock(&self.window);
        let a = w.win.admit(cmd_sn, immediate);
        if a == Admit::Now && !immediate {
            w.win.advance();
        }
        a
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
