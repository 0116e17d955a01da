//! The connection state machine: table conformance, and an initiator and a target
//! paired in memory on a virtual clock (no sockets, no sleeps).

use std::time::{Duration, Instant};

use super::*;
use crate::pdu::{
    AsyncMessage, Digests, ErrorAction, Isid, LoginRequest, LoginResponse, LoginStatus,
    LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode, NopOut, Opcode, Pdu,
    RejectReason, Role, ScsiCommand, ScsiResponse, ScsiResponseCode, Stage, TargetSn, TaskAttr,
    TxFrame, BHS_LEN,
};

use ConnState::*;

const CID: u16 = 7;
const SEC: Duration = Duration::from_secs(1);

type Got = Vec<(Pdu, Vec<u8>)>;

// ---- PDU builders ----------------------------------------------------------------------

fn login_req(transit: bool) -> Pdu {
    Pdu::LoginRequest(LoginRequest {
        transit,
        cont: false,
        csg: Stage::OperationalNegotiation,
        nsg: if transit {
            Stage::FullFeaturePhase
        } else {
            Stage::OperationalNegotiation
        },
        version_max: 0,
        version_min: 0,
        isid: Isid([0x80, 0, 0, 0, 0, 1]),
        tsih: 0,
        itt: 1,
        cid: CID,
        cmd_sn: 1,
        exp_stat_sn: 0,
    })
}

fn login_rsp(transit: bool, status: LoginStatus) -> Pdu {
    Pdu::LoginResponse(LoginResponse {
        transit,
        cont: false,
        csg: Stage::OperationalNegotiation,
        nsg: if transit {
            Stage::FullFeaturePhase
        } else {
            Stage::OperationalNegotiation
        },
        version_max: 0,
        version_active: 0,
        isid: Isid([0x80, 0, 0, 0, 0, 1]),
        tsih: 1,
        itt: 1,
        sn: TargetSn::default(),
        status,
    })
}

fn scsi_write(itt: u32, len: u32) -> Pdu {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x2a;
    Pdu::ScsiCommand(ScsiCommand {
        immediate: false,
        final_bit: true,
        read: false,
        write: true,
        attr: TaskAttr::Simple,
        lun: 0,
        itt,
        expected_data_transfer_length: len,
        cmd_sn: 1,
        exp_stat_sn: 1,
        cdb,
    })
}

fn scsi_rsp(itt: u32) -> Pdu {
    Pdu::ScsiResponse(ScsiResponse {
        bidi_overflow: false,
        bidi_underflow: false,
        overflow: false,
        underflow: false,
        response: ScsiResponseCode::Completed,
        status: 0,
        itt,
        snack_tag: 0,
        sn: TargetSn {
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 9,
        },
        exp_data_sn: 0,
        bidi_read_residual_count: 0,
        residual_count: 0,
    })
}

fn logout_req(reason: LogoutReason, cid: u16) -> Pdu {
    Pdu::LogoutRequest(LogoutRequest {
        immediate: true,
        reason,
        itt: 9,
        cid,
        cmd_sn: 2,
        exp_stat_sn: 2,
    })
}

fn logout_rsp(response: LogoutResponseCode) -> Pdu {
    Pdu::LogoutResponse(LogoutResponse {
        response,
        itt: 9,
        sn: TargetSn::default(),
        time2wait: 0,
        time2retain: 0,
    })
}

fn async_msg(event: AsyncEvent, parameter1: u16) -> Pdu {
    Pdu::AsyncMessage(AsyncMessage {
        lun: 0,
        sn: TargetSn::default(),
        event,
        vcode: 0,
        parameter1,
        parameter2: 0,
        parameter3: 20,
    })
}

fn nop_out() -> Pdu {
    Pdu::NopOut(NopOut {
        immediate: true,
        itt: 3,
        ttt: u32::MAX,
        ..Default::default()
    })
}

/// Raw wire bytes of a PDU (to inject PDUs a well-behaved peer would refuse to send).
fn wire(pdu: &Pdu, data: &[u8], digests: Digests) -> Vec<u8> {
    let mut out = Vec::new();
    TxFrame::from_pdu(pdu, &[], data, digests)
        .unwrap()
        .write_to(&mut out);
    out
}

fn params(digests: Digests, rdma: bool) -> FfpParams {
    FfpParams {
        digests,
        max_recv_data_segment_len: 65536,
        max_send_data_segment_len: 65536,
        rdma_extensions: rdma,
    }
}

// ---- the in-memory pair ----------------------------------------------------------------

/// Feeds `bytes` to `to`, collecting every PDU it hands to the client.
fn feed(to: &mut Connection, now: Instant, bytes: &[u8], got: &mut Got) {
    let mut off = 0;
    loop {
        let n = to.handle_bytes(&bytes[off..]);
        off += n;
        let mut pdus = 0;
        while let Some(p) = to.poll_pdu(now, |rx| (rx.pdu, rx.data.to_vec())) {
            got.push(p);
            pdus += 1;
        }
        if off >= bytes.len() || (n == 0 && pdus == 0) {
            break;
        }
    }
}

/// Moves every queued frame of `from` to `to`; returns the frames moved.
fn deliver(from: &mut Connection, to: &mut Connection, now: Instant, got: &mut Got) -> usize {
    let mut bytes = Vec::new();
    let mut frames = 0;
    while from.poll_transmit(now, &mut bytes).is_some() {
        frames += 1;
    }
    feed(to, now, &bytes, got);
    frames
}

fn drain(conn: &mut Connection) -> Vec<ConnEvent> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn notify(n: Notify) -> ConnEvent {
    ConnEvent::Notify(n)
}

fn lost(in_login: bool) -> ConnEvent {
    notify(Notify::ConnectLost { in_login })
}

struct Pair {
    now: Instant,
    ini: Connection,
    tgt: Connection,
    /// PDUs the initiator client received.
    ini_got: Got,
    /// PDUs the target client received.
    tgt_got: Got,
}

impl Pair {
    fn new(config: ConnConfig) -> Self {
        Self {
            now: Instant::now(),
            ini: Connection::new(Role::Initiator, config),
            tgt: Connection::new(Role::Target, config),
            ini_got: Vec::new(),
            tgt_got: Vec::new(),
        }
    }

    /// Moves frames both ways until nothing is queued.
    fn pump(&mut self) {
        loop {
            let a = deliver(&mut self.ini, &mut self.tgt, self.now, &mut self.tgt_got);
            let b = deliver(&mut self.tgt, &mut self.ini, self.now, &mut self.ini_got);
            if a + b == 0 {
                break;
            }
        }
    }

    /// Transport up on both sides, nothing sent yet.
    fn connected(config: ConnConfig) -> Self {
        let mut p = Self::new(config);
        p.tgt.accept(p.now).unwrap();
        p.ini.connect(p.now).unwrap();
        p.ini.connect_succeeded(p.now).unwrap();
        drain(&mut p.ini);
        drain(&mut p.tgt);
        p
    }

    /// Both sides through login, events drained, `ffp` negotiated.
    fn logged_in(config: ConnConfig, ffp: FfpParams) -> Self {
        let mut p = Self::connected(config);
        p.ini.send_pdu(p.now, &login_req(true), b"").unwrap();
        p.pump();
        p.tgt
            .send_pdu(p.now, &login_rsp(true, LoginStatus::SUCCESS), b"")
            .unwrap();
        p.tgt.login_succeeded(p.now, ffp).unwrap();
        p.pump();
        p.ini.login_succeeded(p.now, ffp).unwrap();
        if ffp.rdma_extensions {
            p.tgt.enable_dm_done(p.now, true).unwrap();
            p.ini.enable_dm_done(p.now, true).unwrap();
        }
        assert_eq!((p.ini.state(), p.tgt.state()), (S5LoggedIn, S5LoggedIn));
        drain(&mut p.ini);
        drain(&mut p.tgt);
        p.ini_got.clear();
        p.tgt_got.clear();
        p
    }
}

// ---- the table ---------------------------------------------------------------------------

/// Every (role, state, event) triple: accepted exactly when the table has a rule, with
/// the rule's next state and actions; refused with a typed error otherwise, the state
/// untouched and the refusal audited.
#[test]
fn every_pair_matches_the_table() {
    let now = Instant::now();
    let mut accepted = [0usize; 2];
    for (r, role) in [Role::Initiator, Role::Target].into_iter().enumerate() {
        for state in ConnState::ALL {
            for event in SmEvent::ALL {
                let rule = TABLE
                    .iter()
                    .find(|r| r.from == state && r.events.contains(&event) && r.applies_to(role));
                assert_eq!(lookup(role, state, event), rule);
                for rdma in [false, true] {
                    let mut sm = StateMachine::at(role, state);
                    sm.set_rdma_extensions(rdma);
                    let result = sm.handle(now, event);
                    let audit = *sm.audit().last().unwrap();
                    assert_eq!((audit.state, audit.event), (state, event));
                    match (rule, result) {
                        (None, Err(e)) => {
                            assert_eq!(e, TransitionError { role, state, event });
                            assert_eq!(sm.state(), state);
                            assert_eq!(audit.outcome, AuditOutcome::Rejected);
                        }
                        (Some(rule), Ok(step)) => {
                            let to = match rule.next {
                                Next::To(s) => s,
                                Next::Stay => state,
                                Next::LoginComplete if rdma => S12EnableDm,
                                Next::LoginComplete => S5LoggedIn,
                            };
                            assert_eq!((step.from, step.to, step.event), (state, to, event));
                            assert_eq!(sm.state(), to);
                            assert_eq!(step.transition, rule.actions);
                            if rule.next == Next::Stay {
                                assert!(step.entry.is_empty());
                                assert_eq!(audit.outcome, AuditOutcome::Stay);
                            } else {
                                assert_eq!(step.entry, entry_actions(to, role, state));
                                assert_eq!(sm.last_state(), state);
                                assert_eq!(audit.outcome, AuditOutcome::Transition(to));
                            }
                            if rdma {
                                accepted[r] += 1;
                            }
                        }
                        (rule, result) => {
                            panic!("{role:?} {state} {event}: rule {rule:?}, result {result:?}")
                        }
                    }
                }
            }
        }
    }
    // Two role-specific rules (CONNECT_REQ/ACCEPT in S1) and one target-only
    // (LOGOUT_SUCCESS_SND_DONE in S6).
    assert_eq!(table_pairs(), 127);
    assert_eq!(accepted, [125, 126]);
}

/// The rows of reference/comstar.md §6.2, written out independently of the table.
#[test]
fn table_has_every_reference_row() {
    use SmEvent::*;
    let ini = Role::Initiator;
    let tgt = Role::Target;
    let both = [ini, tgt];
    type Row<'a> = (&'a [Role], ConnState, &'a [SmEvent], Option<ConnState>);
    let rows: &[Row<'_>] = &[
        (&[ini], S1Free, &[ConnectReq], Some(S2XptWait)),
        (&[tgt], S1Free, &[ConnectAccept], Some(S3XptUp)),
        (&both, S2XptWait, &[ConnectSuccess], Some(S4InLogin)),
        (
            &both,
            S2XptWait,
            &[ConnectFail, TransportFail, RxProtocolError, TxProtocolError],
            Some(S9InitError),
        ),
        (&both, S3XptUp, &[LoginRcv], Some(S4InLogin)),
        (
            &both,
            S3XptUp,
            &[LoginTimeout, ConnectFail, TransportFail],
            Some(S9InitError),
        ),
        (&both, S3XptUp, &[ConnectReject], Some(S9aRejected)),
        (&both, S4InLogin, &[LoginFailSnd], Some(S9bWaitSndDone)),
        (
            &both,
            S4InLogin,
            &[
                LoginTimeout,
                LoginFailRcv,
                TransportFail,
                LogoutOtherConnSnd,
                LogoutOtherConnRcv,
            ],
            Some(S9InitError),
        ),
        (&both, S4InLogin, &[LogoutSessionSuccess], Some(S11Complete)),
        (&both, S12EnableDm, &[EnableDmSuccess], Some(S5LoggedIn)),
        (&both, S12EnableDm, &[EnableDmFail], Some(S9InitError)),
        (&both, S12EnableDm, &[TransportFail], None),
        (
            &both,
            S5LoggedIn,
            &[
                LogoutThisConnRcv,
                LogoutThisConnSnd,
                LogoutOtherConnRcv,
                LogoutOtherConnSnd,
                MiscRx,
                LogoutSessionRcv,
                LogoutSessionSnd,
            ],
            Some(S6InLogout),
        ),
        (
            &both,
            S5LoggedIn,
            &[LogoutSessionSuccess],
            Some(S11Complete),
        ),
        (
            &both,
            S5LoggedIn,
            &[AsyncLogoutRcv, AsyncLogoutSnd],
            Some(S7LogoutReq),
        ),
        (
            &both,
            S5LoggedIn,
            &[
                TransportFail,
                AsyncDropConnRcv,
                AsyncDropConnSnd,
                AsyncDropAllConnRcv,
                AsyncDropAllConnSnd,
            ],
            Some(S8Cleanup),
        ),
        (
            &[tgt],
            S6InLogout,
            &[LogoutSuccessSndDone],
            Some(S11Complete),
        ),
        (
            &both,
            S6InLogout,
            &[
                LogoutFailSndDone,
                TransportFail,
                AsyncDropConnRcv,
                AsyncDropAllConnSnd,
                LogoutFailRcv,
            ],
            Some(S8Cleanup),
        ),
        (
            &both,
            S6InLogout,
            &[LogoutSuccessRcv, LogoutSessionSuccess],
            Some(S11Complete),
        ),
        (
            &both,
            S7LogoutReq,
            &[
                LogoutThisConnRcv,
                LogoutOtherConnSnd,
                LogoutSessionRcv,
                LogoutSessionSnd,
            ],
            Some(S6InLogout),
        ),
        (
            &both,
            S7LogoutReq,
            &[TransportFail, AsyncDropConnSnd, LogoutTimeout],
            Some(S8Cleanup),
        ),
        (
            &both,
            S7LogoutReq,
            &[LogoutSessionSuccess],
            Some(S11Complete),
        ),
        (
            &both,
            S8Cleanup,
            &[
                CleanupTimeout,
                LogoutSuccessRcv,
                LogoutSuccessSnd,
                LogoutSessionSuccess,
            ],
            Some(S11Complete),
        ),
        (
            &both,
            S8Cleanup,
            &[LogoutOtherConnRcv, LogoutOtherConnSnd],
            Some(S10InCleanup),
        ),
        (
            &both,
            S10InCleanup,
            &[LogoutFailRcv, LogoutFailSnd],
            Some(S8Cleanup),
        ),
        (
            &both,
            S10InCleanup,
            &[LogoutSuccessRcv, LogoutSuccessSnd, CleanupTimeout],
            Some(S11Complete),
        ),
        (
            &both,
            S9bWaitSndDone,
            &[LoginFailSndDone],
            Some(S9InitError),
        ),
    ];
    for &(roles, from, events, to) in rows {
        for &role in roles {
            for &event in events {
                let rule = lookup(role, from, event)
                    .unwrap_or_else(|| panic!("{role:?} {from} {event} missing"));
                match (rule.next, to) {
                    (Next::To(s), Some(t)) => assert_eq!(s, t, "{role:?} {from} {event}"),
                    (Next::Stay, None) => {}
                    (next, to) => panic!("{role:?} {from} {event}: {next:?}, want {to:?}"),
                }
            }
        }
    }
    // Login success: S5, or S12 with RDMA extensions.
    for event in [LoginSuccessSnd, LoginSuccessRcv] {
        assert_eq!(
            lookup(tgt, S4InLogin, event).unwrap().next,
            Next::LoginComplete
        );
    }
    // Role-specific and never-accepted pairs.
    assert!(lookup(tgt, S1Free, ConnectReq).is_none());
    assert!(lookup(ini, S1Free, ConnectAccept).is_none());
    assert!(lookup(ini, S6InLogout, LogoutSuccessSndDone).is_none());
    for state in [S9InitError, S9aRejected] {
        for event in SmEvent::ALL {
            assert!(lookup(tgt, state, event).is_none(), "{state} {event}");
        }
    }
    for state in ConnState::ALL {
        for event in [ConnReinstate, ConnReinstateSuccess, ConnReinstateFail] {
            assert!(lookup(tgt, state, event).is_none());
        }
        assert!(lookup(ini, state, LoginRcv).is_none() || matches!(state, S3XptUp | S4InLogin));
    }
}

#[test]
fn entry_actions_follow_the_reference() {
    use Action::*;
    let (ini, tgt) = (Role::Initiator, Role::Target);
    assert_eq!(
        entry_actions(S3XptUp, tgt, S1Free),
        &[NotifyClient(Notify::ConnectAccept), StartLoginTimer]
    );
    assert_eq!(
        entry_actions(S4InLogin, ini, S2XptWait),
        &[NotifyClient(Notify::ReadyForLogin)]
    );
    assert!(entry_actions(S4InLogin, tgt, S3XptUp).is_empty());
    assert_eq!(
        entry_actions(S7LogoutReq, tgt, S5LoggedIn),
        &[StartLogoutTimer]
    );
    assert!(entry_actions(S7LogoutReq, ini, S5LoggedIn).is_empty());
    assert_eq!(
        entry_actions(S8Cleanup, ini, S5LoggedIn),
        &[Disconnect, SuspendTasks, StartCleanupTimer]
    );
    assert_eq!(
        entry_actions(S9InitError, ini, S2XptWait),
        &[
            NotifyClient(Notify::ConnectFail),
            AbortAllTasks,
            NotifyClient(Notify::ConnectDestroy),
            Free
        ]
    );
    assert_eq!(
        entry_actions(S9InitError, tgt, S4InLogin)[..2],
        [
            Disconnect,
            NotifyClient(Notify::ConnectLost { in_login: true })
        ]
    );
    assert_eq!(entry_actions(S9aRejected, tgt, S3XptUp), &[Free]);
    assert_eq!(
        entry_actions(S11Complete, tgt, S6InLogout),
        &[
            NotifyClient(Notify::ConnectLost { in_login: false }),
            AbortAllTasks,
            NotifyClient(Notify::ConnectDestroy),
            Free
        ]
    );
    assert_eq!(
        entry_actions(S12EnableDm, ini, S4InLogin),
        &[EnableDatamover]
    );
}

#[test]
fn pdu_policy_per_state() {
    use PduPolicy::*;
    let ffp = [S5LoggedIn, S6InLogout, S7LogoutReq];
    for state in ConnState::ALL {
        let login = pdu_policy(Opcode::LoginRequest, state);
        assert_eq!(
            login == Allow,
            matches!(state, S3XptUp | S4InLogin),
            "{state}"
        );
        assert_ne!(login, Drop);
        let nop = pdu_policy(Opcode::NopOut, state);
        assert_eq!(nop == Allow, state == S4InLogin || ffp.contains(&state));
        for op in [
            Opcode::ScsiCommand,
            Opcode::DataOut,
            Opcode::R2t,
            Opcode::TaskMgmtRequest,
            Opcode::TextRequest,
            Opcode::Snack,
            Opcode::LogoutRequest,
            Opcode::Reject,
            Opcode::AsyncMessage,
        ] {
            let want = if ffp.contains(&state) {
                Allow
            } else if matches!(state, S8Cleanup | S10InCleanup) {
                Drop
            } else {
                ProtocolError
            };
            assert_eq!(pdu_policy(op, state), want, "{op:?} {state}");
        }
    }
}

#[test]
fn audit_ring_keeps_the_last_32() {
    let now = Instant::now();
    let mut sm = StateMachine::new(Role::Target);
    sm.handle(now, SmEvent::ConnectAccept).unwrap();
    for i in 0..39 {
        let _ = sm.handle(now + i * SEC, SmEvent::MiscTx); // rejected in S3
    }
    let audit: Vec<_> = sm.audit().collect();
    assert_eq!(audit.len(), AUDIT_LEN);
    assert_eq!(audit.first().unwrap().seq, 40 - AUDIT_LEN as u64);
    assert_eq!(audit.last().unwrap().seq, 39);
    assert!(audit.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    assert!(audit
        .iter()
        .all(|e| e.outcome == AuditOutcome::Rejected && e.state == S3XptUp));
}

// ---- full lifecycle ------------------------------------------------------------------------

#[test]
fn full_lifecycle_login_ffp_scsi_logout() {
    let mut p = Pair::new(ConnConfig::default());
    let t0 = p.now;

    // Transport.
    p.tgt.accept(p.now).unwrap();
    assert_eq!(p.tgt.state(), S3XptUp);
    assert_eq!(drain(&mut p.tgt), [notify(Notify::ConnectAccept)]);
    assert_eq!(p.tgt.poll_timeout(), Some(t0 + 20 * SEC));
    p.ini.connect(p.now).unwrap();
    assert_eq!(p.ini.state(), S2XptWait);
    assert_eq!(drain(&mut p.ini), [ConnEvent::Connect]);
    p.ini.connect_succeeded(p.now).unwrap();
    assert_eq!(p.ini.state(), S4InLogin);
    assert_eq!(drain(&mut p.ini), [notify(Notify::ReadyForLogin)]);
    assert_eq!(p.ini.poll_timeout(), None);

    // Login: one exchange that does not transit, then the final one.
    p.now += SEC;
    p.ini
        .send_pdu(
            p.now,
            &login_req(false),
            b"InitiatorName=iqn.1994-05.com.x:i\0",
        )
        .unwrap();
    p.pump();
    assert_eq!(p.tgt.state(), S4InLogin);
    assert!(matches!(p.tgt_got[0].0, Pdu::LoginRequest(_)));
    assert_eq!(p.tgt_got[0].1, b"InitiatorName=iqn.1994-05.com.x:i\0");
    assert_eq!(
        p.tgt.login_succeeded(p.now, FfpParams::default()),
        Err(ConnError::LoginIncomplete)
    );
    p.tgt
        .send_pdu(p.now, &login_rsp(false, LoginStatus::SUCCESS), b"")
        .unwrap();
    p.pump();
    p.ini.send_pdu(p.now, &login_req(true), b"").unwrap();
    p.pump();
    let ffp = params(Digests::BOTH, false);
    p.tgt
        .send_pdu(p.now, &login_rsp(true, LoginStatus::SUCCESS), b"")
        .unwrap();
    p.tgt.login_succeeded(p.now, ffp).unwrap();
    assert_eq!(p.tgt.state(), S5LoggedIn);
    assert_eq!(p.tgt.login_cid(), Some(CID));
    assert_eq!(drain(&mut p.tgt), [notify(Notify::FfpEnabled)]);
    assert_eq!(p.tgt.poll_timeout(), None, "login timer stopped");

    // The final Login Response still goes out without digests.
    let mut bytes = Vec::new();
    let t = p.tgt.poll_transmit(p.now, &mut bytes).unwrap();
    assert_eq!((t.opcode, t.len), (Opcode::LoginResponse, BHS_LEN));
    feed(&mut p.ini, p.now, &bytes, &mut p.ini_got);
    assert_eq!(p.ini_got.len(), 2);
    assert_eq!(p.ini.state(), S4InLogin);
    p.ini.login_succeeded(p.now, ffp).unwrap();
    assert_eq!(p.ini.state(), S5LoggedIn);
    assert_eq!(drain(&mut p.ini), [notify(Notify::FfpEnabled)]);

    // A SCSI command with immediate data passes through, with both digests.
    let data = vec![0xa5u8; 512];
    p.ini
        .send_pdu(p.now, &scsi_write(0x10, 512), &data)
        .unwrap();
    let mut bytes = Vec::new();
    let t = p.ini.poll_transmit(p.now, &mut bytes).unwrap();
    assert_eq!(t.len, BHS_LEN + 4 + 512 + 4);
    feed(&mut p.tgt, p.now, &bytes, &mut p.tgt_got);
    let (cmd, got) = p.tgt_got.last().unwrap();
    assert_eq!(*cmd, scsi_write(0x10, 512));
    assert_eq!(got, &data);
    p.tgt.send_pdu(p.now, &scsi_rsp(0x10), b"").unwrap();
    p.pump();
    assert_eq!(p.ini_got.last().unwrap().0, scsi_rsp(0x10));
    assert!(drain(&mut p.ini).is_empty() && drain(&mut p.tgt).is_empty());

    // Logout of this connection.
    p.ini
        .send_pdu(p.now, &logout_req(LogoutReason::CloseConnection, CID), b"")
        .unwrap();
    assert_eq!(p.ini.state(), S6InLogout);
    let ffp_off = notify(Notify::FfpDisabled(FfpDisableReason::ConnLogout));
    assert_eq!(drain(&mut p.ini), std::slice::from_ref(&ffp_off));
    p.pump();
    assert_eq!(p.tgt.state(), S6InLogout);
    assert_eq!(drain(&mut p.tgt), [ffp_off]);
    assert!(matches!(p.tgt_got.last().unwrap().0, Pdu::LogoutRequest(_)));
    p.tgt
        .send_pdu(p.now, &logout_rsp(LogoutResponseCode::Success), b"")
        .unwrap();
    assert_eq!(p.tgt.state(), S6InLogout, "waits until the response left");
    p.pump();
    let gone = [
        ConnEvent::Disconnect,
        lost(false),
        ConnEvent::AbortTasks,
        notify(Notify::ConnectDestroy),
    ];
    assert_eq!(p.tgt.state(), S11Complete);
    assert_eq!(drain(&mut p.tgt), gone);
    assert_eq!(p.ini.state(), S11Complete);
    assert_eq!(drain(&mut p.ini), gone);
    assert!(matches!(
        p.ini_got.last().unwrap().0,
        Pdu::LogoutResponse(_)
    ));
    assert!(p.ini.is_closed() && p.tgt.is_closed());
    assert_eq!((p.ini.poll_timeout(), p.tgt.poll_timeout()), (None, None));
    assert_eq!(
        p.ini.send_pdu(p.now, &nop_out(), b""),
        Err(ConnError::Closed)
    );

    // The target's audit trail, transitions only.
    let path: Vec<_> = p
        .tgt
        .audit()
        .filter_map(|e| match e.outcome {
            AuditOutcome::Transition(to) => Some((e.state, e.event, to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        path,
        [
            (S1Free, SmEvent::ConnectAccept, S3XptUp),
            (S3XptUp, SmEvent::LoginRcv, S4InLogin),
            (S4InLogin, SmEvent::LoginSuccessSnd, S5LoggedIn),
            (S5LoggedIn, SmEvent::LogoutThisConnRcv, S6InLogout),
            (S6InLogout, SmEvent::LogoutSuccessSndDone, S11Complete),
        ]
    );
}

#[test]
fn session_logout_from_initiator() {
    let mut p = Pair::logged_in(ConnConfig::default(), params(Digests::NONE, false));
    p.ini
        .send_pdu(p.now, &logout_req(LogoutReason::CloseSession, 0), b"")
        .unwrap();
    p.pump();
    let off = notify(Notify::FfpDisabled(FfpDisableReason::SessLogout));
    assert_eq!(drain(&mut p.tgt), std::slice::from_ref(&off));
    assert_eq!(drain(&mut p.ini), [off]);
    // A failing response: both go to cleanup, then complete when the timer (0 s) fires.
    p.tgt
        .send_pdu(p.now, &logout_rsp(LogoutResponseCode::CleanupFailed), b"")
        .unwrap();
    p.pump();
    assert_eq!((p.ini.state(), p.tgt.state()), (S8Cleanup, S8Cleanup));
    assert_eq!(p.tgt.poll_timeout(), Some(p.now));
    p.tgt.handle_timeout(p.now);
    p.ini.handle_timeout(p.now);
    assert_eq!((p.ini.state(), p.tgt.state()), (S11Complete, S11Complete));
}

// ---- timers --------------------------------------------------------------------------------

#[test]
fn login_timeout_fires_at_20_seconds_and_not_before() {
    let t0 = Instant::now();
    let mut tgt = Connection::new(Role::Target, ConnConfig::default());
    tgt.accept(t0).unwrap();
    drain(&mut tgt);
    // First Login Request at 5 s: S4, and the timer keeps its S3 deadline.
    let mut got = Vec::new();
    feed(
        &mut tgt,
        t0 + 5 * SEC,
        &wire(&login_req(false), b"", Digests::NONE),
        &mut got,
    );
    assert_eq!(tgt.state(), S4InLogin);
    assert_eq!(got.len(), 1);
    assert_eq!(tgt.poll_timeout(), Some(t0 + 20 * SEC));
    tgt.handle_timeout(t0 + 20 * SEC - Duration::from_nanos(1));
    assert_eq!(tgt.state(), S4InLogin);
    assert!(drain(&mut tgt).is_empty());
    tgt.handle_timeout(t0 + 20 * SEC);
    assert_eq!(tgt.state(), S9InitError);
    assert_eq!(
        drain(&mut tgt),
        [
            notify(Notify::LoginFail),
            ConnEvent::Disconnect,
            lost(true),
            ConnEvent::AbortTasks,
            notify(Notify::ConnectDestroy),
        ]
    );
    assert!(tgt.is_closed());
    assert_eq!(tgt.poll_timeout(), None);
}

#[test]
fn login_timeout_in_xpt_up_and_configurable() {
    let t0 = Instant::now();
    let config = ConnConfig {
        login_timeout: 3 * SEC,
        ..ConnConfig::default()
    };
    let mut tgt = Connection::new(Role::Target, config);
    tgt.accept(t0).unwrap();
    assert_eq!(tgt.poll_timeout(), Some(t0 + 3 * SEC));
    tgt.handle_timeout(t0 + 2 * SEC);
    assert_eq!(tgt.state(), S3XptUp);
    tgt.handle_timeout(t0 + 4 * SEC);
    assert_eq!(tgt.state(), S9InitError);
    assert!(drain(&mut tgt).contains(&lost(false)));
}

#[test]
fn async_logout_request_arms_the_target_logout_timer() {
    let config = ConnConfig {
        cleanup_timeout: SEC,
        ..ConnConfig::default()
    };
    let mut p = Pair::logged_in(config, params(Digests::NONE, false));
    p.tgt
        .send_pdu(p.now, &async_msg(AsyncEvent::LogoutRequest, 0), b"")
        .unwrap();
    p.pump();
    assert_eq!((p.ini.state(), p.tgt.state()), (S7LogoutReq, S7LogoutReq));
    assert_eq!(p.tgt.poll_timeout(), Some(p.now + 20 * SEC));
    assert_eq!(
        p.ini.poll_timeout(),
        None,
        "the logout timer is the target's"
    );
    assert!(matches!(p.ini_got[0].0, Pdu::AsyncMessage(_)));
    // Still full feature phase in S7.
    p.ini.send_pdu(p.now, &scsi_write(1, 0), b"").unwrap();
    p.pump();
    assert!(matches!(p.tgt_got[0].0, Pdu::ScsiCommand(_)));

    let t0 = p.now;
    p.tgt.handle_timeout(t0 + 19 * SEC);
    assert_eq!(p.tgt.state(), S7LogoutReq);
    p.tgt.handle_timeout(t0 + 20 * SEC);
    assert_eq!(p.tgt.state(), S8Cleanup);
    assert_eq!(
        drain(&mut p.tgt),
        [
            notify(Notify::FfpDisabled(FfpDisableReason::ConnFail)),
            ConnEvent::Disconnect,
            ConnEvent::SuspendTasks,
        ]
    );
}

#[test]
fn logout_after_async_request_stops_the_timer() {
    let mut p = Pair::logged_in(ConnConfig::default(), params(Digests::NONE, false));
    p.tgt
        .send_pdu(p.now, &async_msg(AsyncEvent::LogoutRequest, 0), b"")
        .unwrap();
    p.pump();
    p.ini
        .send_pdu(p.now, &logout_req(LogoutReason::CloseConnection, CID), b"")
        .unwrap();
    p.pump();
    assert_eq!((p.ini.state(), p.tgt.state()), (S6InLogout, S6InLogout));
    assert_eq!(p.tgt.poll_timeout(), None);
}

// ---- failures ------------------------------------------------------------------------------

#[test]
fn transport_failure_in_ffp_goes_through_cleanup() {
    let mut p = Pair::logged_in(ConnConfig::default(), params(Digests::NONE, false));
    p.tgt.transport_failed(p.now);
    assert_eq!(p.tgt.state(), S8Cleanup);
    assert_eq!(
        drain(&mut p.tgt),
        [
            notify(Notify::FfpDisabled(FfpDisableReason::ConnFail)),
            ConnEvent::Disconnect,
            ConnEvent::SuspendTasks,
        ]
    );
    // Cleanup timer is 0 s: due at once.
    assert_eq!(p.tgt.poll_timeout(), Some(p.now));
    // PDUs are silently dropped while cleaning up.
    assert_eq!(
        p.tgt.send_pdu(p.now, &scsi_rsp(1), b""),
        Err(ConnError::Dropped {
            opcode: Opcode::ScsiResponse,
            state: S8Cleanup
        })
    );
    p.tgt.handle_timeout(p.now);
    assert_eq!(p.tgt.state(), S11Complete);
    assert_eq!(
        drain(&mut p.tgt),
        [
            lost(false),
            ConnEvent::AbortTasks,
            notify(Notify::ConnectDestroy)
        ]
    );
    assert!(p.tgt.is_closed());
}

#[test]
fn cleanup_timer_is_configurable_and_rx_is_dropped_meanwhile() {
    let config = ConnConfig {
        cleanup_timeout: 5 * SEC,
        ..ConnConfig::default()
    };
    let mut p = Pair::logged_in(config, params(Digests::NONE, false));
    p.ini.raise(p.now, SmEvent::AsyncDropConnRcv).unwrap();
    assert_eq!(p.ini.state(), S8Cleanup);
    // A stray target PDU still in the pipe is dropped without a word.
    p.tgt.send_pdu(p.now, &scsi_rsp(4), b"").unwrap();
    p.pump();
    assert!(p.ini_got.is_empty());
    drain(&mut p.ini);
    p.ini.handle_timeout(p.now + 4 * SEC);
    assert_eq!(p.ini.state(), S8Cleanup);
    // Logout for recovery via another connection: S10, then the timer completes it.
    p.ini.logout(p.now, LogoutNotice::OtherConn).unwrap();
    assert_eq!(p.ini.state(), S10InCleanup);
    p.ini.handle_timeout(p.now + 5 * SEC);
    assert_eq!(p.ini.state(), S11Complete);
    assert_eq!(
        drain(&mut p.ini),
        [
            lost(false),
            ConnEvent::AbortTasks,
            notify(Notify::ConnectDestroy)
        ]
    );
}

#[test]
fn async_drop_of_this_connection_and_of_another() {
    let mut p = Pair::logged_in(ConnConfig::default(), params(Digests::NONE, false));
    // Drop of CID 99: plain traffic on this connection.
    p.tgt
        .send_pdu(p.now, &async_msg(AsyncEvent::ConnectionDrop, 99), b"")
        .unwrap();
    p.pump();
    assert_eq!((p.ini.state(), p.tgt.state()), (S5LoggedIn, S5LoggedIn));
    // Drop of this connection: the message leaves first, then both clean up.
    p.tgt
        .send_pdu(p.now, &async_msg(AsyncEvent::ConnectionDrop, CID), b"")
        .unwrap();
    assert_eq!(p.tgt.state(), S8Cleanup);
    p.pump();
    assert_eq!(p.ini.state(), S8Cleanup);
    assert_eq!(p.ini_got.len(), 2);
}

#[test]
fn session_reinstatement_kills_a_connection_in_login() {
    let mut p = Pair::connected(ConnConfig::default());
    p.ini.send_pdu(p.now, &login_req(false), b"").unwrap();
    p.pump();
    p.tgt.logout(p.now, LogoutNotice::SessionComplete).unwrap();
    assert_eq!(p.tgt.state(), S11Complete);
    assert_eq!(
        drain(&mut p.tgt),
        [
            ConnEvent::Disconnect,
            lost(true),
            ConnEvent::AbortTasks,
            notify(Notify::ConnectDestroy)
        ]
    );
}

#[test]
fn failed_login_waits_for_the_response_to_leave() {
    let mut p = Pair::connected(ConnConfig::default());
    p.ini.send_pdu(p.now, &login_req(true), b"").unwrap();
    p.pump();
    p.tgt
        .send_pdu(
            p.now,
            &login_rsp(false, LoginStatus::AUTHENTICATION_FAILURE),
            b"",
        )
        .unwrap();
    assert_eq!(p.tgt.state(), S9bWaitSndDone);
    assert_eq!(p.tgt.poll_timeout(), None, "login timer stopped");
    assert!(drain(&mut p.tgt).is_empty());
    p.pump();
    assert_eq!(p.tgt.state(), S9InitError);
    assert_eq!(
        drain(&mut p.tgt),
        [
            ConnEvent::Disconnect,
            lost(false),
            ConnEvent::AbortTasks,
            notify(Notify::ConnectDestroy)
        ]
    );
    // The initiator got the response, then failed the login.
    assert!(matches!(p.ini_got[0].0, Pdu::LoginResponse(_)));
    assert_eq!(p.ini.state(), S9InitError);
    assert_eq!(
        drain(&mut p.ini),
        [
            notify(Notify::LoginFail),
            ConnEvent::Disconnect,
            lost(true),
            ConnEvent::AbortTasks,
            notify(Notify::ConnectDestroy)
        ]
    );
}

#[test]
fn login_failed_without_response_and_transport_loss_in_wait_snd_done() {
    // Target fails the login with nothing queued: S9B, then S9 at once.
    let mut p = Pair::connected(ConnConfig::default());
    p.ini.send_pdu(p.now, &login_req(true), b"").unwrap();
    p.pump();
    p.tgt.login_failed(p.now).unwrap();
    assert_eq!(p.tgt.state(), S9InitError);

    // The failing response is queued but the transport dies: S9 all the same.
    let mut p = Pair::connected(ConnConfig::default());
    p.ini.send_pdu(p.now, &login_req(true), b"").unwrap();
    p.pump();
    p.tgt
        .send_pdu(p.now, &login_rsp(false, LoginStatus::TARGET_ERROR), b"")
        .unwrap();
    assert_eq!(p.tgt.state(), S9bWaitSndDone);
    p.tgt.transport_failed(p.now);
    assert_eq!(p.tgt.state(), S9InitError);
    assert!(p.tgt.is_closed());
}

#[test]
fn initiator_connect_failure_and_target_reject() {
    let now = Instant::now();
    let mut ini = Connection::new(Role::Initiator, ConnConfig::default());
    assert!(matches!(ini.accept(now), Err(ConnError::Transition(_))));
    ini.connect(now).unwrap();
    ini.connect_failed(now).unwrap();
    assert_eq!(ini.state(), S9InitError);
    assert_eq!(
        drain(&mut ini),
        [
            ConnEvent::Connect,
            notify(Notify::ConnectFail),
            ConnEvent::AbortTasks,
            notify(Notify::ConnectDestroy)
        ]
    );

    let mut tgt = Connection::new(Role::Target, ConnConfig::default());
    tgt.accept(now).unwrap();
    tgt.reject(now).unwrap();
    assert_eq!(tgt.state(), S9aRejected);
    assert_eq!(drain(&mut tgt), [notify(Notify::ConnectAccept)]);
    assert!(tgt.is_closed());
    assert_eq!(tgt.poll_timeout(), None);
}

// ---- PDUs in the wrong state ---------------------------------------------------------------

#[test]
fn scsi_command_before_login_drops_the_connection() {
    let now = Instant::now();
    let mut tgt = Connection::new(Role::Target, ConnConfig::default());
    tgt.accept(now).unwrap();
    drain(&mut tgt);
    let bytes = wire(&scsi_write(1, 0), b"", Digests::NONE);
    let mut got = Vec::new();
    feed(&mut tgt, now, &bytes, &mut got);
    assert!(got.is_empty());
    assert_eq!(tgt.state(), S9InitError);
    let events = drain(&mut tgt);
    assert_eq!(
        events[0],
        ConnEvent::ProtocolError {
            error: RxError::NotAllowed {
                opcode: Opcode::ScsiCommand,
                state: S3XptUp
            },
            action: ErrorAction::DropConnection,
            header: Some(bytes[..BHS_LEN].try_into().unwrap()),
        }
    );
    assert_eq!(events[1], notify(Notify::LoginFail));
    assert!(events.contains(&ConnEvent::Disconnect));
    // Nothing is sent back during login.
    assert_eq!(tgt.poll_transmit(now, &mut Vec::new()), None);
}

#[test]
fn scsi_command_during_login_drops_the_connection_too() {
    let mut p = Pair::connected(ConnConfig::default());
    p.ini.send_pdu(p.now, &login_req(false), b"").unwrap();
    p.pump();
    // The initiator refuses to send it ...
    assert_eq!(
        p.ini.send_pdu(p.now, &scsi_write(1, 0), b""),
        Err(ConnError::NotAllowed {
            opcode: Opcode::ScsiCommand,
            state: S4InLogin
        })
    );
    assert_eq!(
        p.ini.state(),
        S4InLogin,
        "TX_PROTOCOL_ERROR is ignored in S4"
    );
    // ... so inject it.
    feed(
        &mut p.tgt,
        p.now,
        &wire(&scsi_write(1, 0), b"", Digests::NONE),
        &mut p.tgt_got,
    );
    assert_eq!(p.tgt.state(), S9InitError);
    assert!(drain(&mut p.tgt).contains(&lost(true)));
}

#[test]
fn nop_is_allowed_during_login() {
    let mut p = Pair::connected(ConnConfig::default());
    p.ini.send_pdu(p.now, &login_req(false), b"").unwrap();
    p.pump();
    p.ini.send_pdu(p.now, &nop_out(), b"").unwrap();
    p.pump();
    assert_eq!(p.tgt.state(), S4InLogin);
    assert!(matches!(p.tgt_got[1].0, Pdu::NopOut(_)));
}

#[test]
fn login_pdu_in_ffp_is_rejected_with_its_header() {
    let mut p = Pair::logged_in(ConnConfig::default(), params(Digests::BOTH, false));
    let sn = TargetSn {
        stat_sn: 5,
        exp_cmd_sn: 6,
        max_cmd_sn: 40,
    };
    p.tgt.set_target_sn(sn);
    assert_eq!(
        p.ini.send_pdu(p.now, &login_req(true), b""),
        Err(ConnError::NotAllowed {
            opcode: Opcode::LoginRequest,
            state: S5LoggedIn
        })
    );
    let bytes = wire(&login_req(true), b"", Digests::BOTH);
    let header: [u8; BHS_LEN] = bytes[..BHS_LEN].try_into().unwrap();
    feed(&mut p.tgt, p.now, &bytes, &mut p.tgt_got);
    assert!(p.tgt_got.is_empty());
    assert_eq!(p.tgt.state(), S5LoggedIn);
    assert_eq!(
        drain(&mut p.tgt),
        [ConnEvent::ProtocolError {
            error: RxError::NotAllowed {
                opcode: Opcode::LoginRequest,
                state: S5LoggedIn
            },
            action: ErrorAction::Reject(RejectReason::ProtocolError),
            header: Some(header),
        }]
    );
    p.pump();
    let (reject, data) = p.ini_got.last().unwrap();
    match reject {
        Pdu::Reject(r) => {
            assert_eq!(r.reason, RejectReason::ProtocolError);
            assert_eq!(r.sn, sn);
        }
        other => panic!("expected Reject, got {other:?}"),
    }
    assert_eq!(data[..], header[..]);
    assert_eq!(p.ini.state(), S5LoggedIn);
}

#[test]
fn data_digest_error_is_rejected_and_header_digest_error_drops() {
    let mut p = Pair::logged_in(ConnConfig::default(), params(Digests::BOTH, false));
    let mut bytes = wire(&scsi_write(2, 8), b"12345678", Digests::BOTH);
    let data_at = BHS_LEN + 4;
    bytes[data_at] ^= 1;
    feed(&mut p.tgt, p.now, &bytes, &mut p.tgt_got);
    assert!(p.tgt_got.is_empty());
    let events = drain(&mut p.tgt);
    assert!(matches!(
        events[..],
        [ConnEvent::ProtocolError {
            error: RxError::Codec(PduError::DataDigest { .. }),
            action: ErrorAction::Reject(RejectReason::DataDigestError),
            header: Some(_),
        }]
    ));
    p.pump();
    assert!(matches!(p.ini_got.last().unwrap().0, Pdu::Reject(_)));
    assert_eq!(p.tgt.state(), S5LoggedIn);

    // The stream is still in sync: a good command passes.
    feed(
        &mut p.tgt,
        p.now,
        &wire(&scsi_write(3, 0), b"", Digests::BOTH),
        &mut p.tgt_got,
    );
    assert_eq!(p.tgt_got.len(), 1);

    // A header digest error loses framing: connection failure, cleanup.
    let mut bytes = wire(&scsi_write(4, 0), b"", Digests::BOTH);
    bytes[20] ^= 1;
    feed(&mut p.tgt, p.now, &bytes, &mut p.tgt_got);
    assert_eq!(p.tgt.state(), S8Cleanup);
    assert!(matches!(
        drain(&mut p.tgt)[0],
        ConnEvent::ProtocolError {
            action: ErrorAction::DropConnection,
            header: None,
            ..
        }
    ));
}

#[test]
fn digests_switch_on_at_the_login_boundary() {
    let p = Pair::logged_in(ConnConfig::default(), params(Digests::BOTH, false));
    let mut p = p;
    // Without digests the target would misframe this; with them it parses.
    p.ini.send_pdu(p.now, &nop_out(), b"ping").unwrap();
    let mut bytes = Vec::new();
    p.ini.poll_transmit(p.now, &mut bytes).unwrap();
    assert_eq!(bytes.len(), BHS_LEN + 4 + 4 + 4);
    feed(&mut p.tgt, p.now, &bytes, &mut p.tgt_got);
    assert_eq!(p.tgt_got[0].1, b"ping");
    // Data segments larger than the peer's MaxRecvDataSegmentLength are refused.
    let big = vec![0u8; 65537];
    assert!(matches!(
        p.ini.send_pdu(p.now, &scsi_write(5, 65537), &big),
        Err(ConnError::Codec(PduError::Oversize { .. }))
    ));
}

#[test]
fn misuse_is_refused_without_panicking() {
    let now = Instant::now();
    let mut ini = Connection::new(Role::Initiator, ConnConfig::default());
    // A target opcode from an initiator.
    assert_eq!(
        ini.send_pdu(now, &scsi_rsp(1), b""),
        Err(ConnError::WrongRole {
            role: Role::Initiator,
            opcode: Opcode::ScsiResponse
        })
    );
    assert_eq!(ini.state(), S1Free);
    assert_eq!(
        ini.enable_dm_done(now, true),
        Err(ConnError::Transition(TransitionError {
            role: Role::Initiator,
            state: S1Free,
            event: SmEvent::EnableDmSuccess
        }))
    );
    assert_eq!(
        ini.login_succeeded(now, FfpParams::default()),
        Err(ConnError::LoginIncomplete)
    );
    // Sending before connecting is a TX protocol error, fatal in S1 as in COMSTAR.
    assert!(matches!(
        ini.send_pdu(now, &login_req(false), b""),
        Err(ConnError::NotAllowed { .. })
    ));
    assert_eq!(ini.state(), S9InitError);

    // A second logout request for this connection while logging out is refused.
    let mut p = Pair::logged_in(ConnConfig::default(), params(Digests::NONE, false));
    let req = logout_req(LogoutReason::CloseConnection, CID);
    p.ini.send_pdu(p.now, &req, b"").unwrap();
    assert!(matches!(
        p.ini.send_pdu(p.now, &req, b""),
        Err(ConnError::Transition(_))
    ));
    p.pump();
    feed(
        &mut p.tgt,
        p.now,
        &wire(&req, b"", Digests::NONE),
        &mut p.tgt_got,
    );
    assert!(matches!(
        drain(&mut p.tgt)[..],
        [
            ConnEvent::Notify(Notify::FfpDisabled(_)),
            ConnEvent::ProtocolError {
                error: RxError::Unexpected(_),
                action: ErrorAction::Reject(RejectReason::ProtocolError),
                ..
            }
        ]
    ));
}

/// Garbage in every state a peer can reach: no panic, and the connection ends up either
/// still usable or failed, never stuck in between.
#[test]
fn garbage_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let mut p = if round % 2 == 0 {
            Pair::connected(ConnConfig::default())
        } else {
            Pair::logged_in(ConnConfig::default(), params(Digests::BOTH, round % 4 == 1))
        };
        let len = (next() % 400) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(b) = bytes.first_mut() {
            // Mostly valid opcodes.
            *b = [0x00, 0x01, 0x03, 0x05, 0x06, 0x10, 0x23, 0x3f][(next() % 8) as usize];
        }
        feed(&mut p.tgt, p.now, &bytes, &mut p.tgt_got);
        p.pump();
        p.tgt.handle_timeout(p.now + 60 * SEC);
        p.ini.transport_failed(p.now);
        p.ini.handle_timeout(p.now + 60 * SEC);
        assert!(p.ini.is_closed());
    }
}

// ---- iSER ----------------------------------------------------------------------------------

#[test]
fn iser_login_goes_through_enable_dm() {
    let mut p = Pair::connected(ConnConfig::default());
    let ffp = params(Digests::NONE, true);
    p.ini
        .send_pdu(p.now, &login_req(true), b"RDMAExtensions=Yes\0")
        .unwrap();
    p.pump();
    p.tgt
        .send_pdu(
            p.now,
            &login_rsp(true, LoginStatus::SUCCESS),
            b"RDMAExtensions=Yes\0",
        )
        .unwrap();
    p.tgt.login_succeeded(p.now, ffp).unwrap();
    assert_eq!(p.tgt.state(), S12EnableDm);
    assert_eq!(drain(&mut p.tgt), [ConnEvent::EnableDatamover]);
    assert_eq!(p.tgt.poll_timeout(), None);
    p.pump();
    p.ini.login_succeeded(p.now, ffp).unwrap();
    assert_eq!(p.ini.state(), S12EnableDm);
    assert_eq!(drain(&mut p.ini), [ConnEvent::EnableDatamover]);

    // No iSCSI PDUs until the data mover is enabled; transport failure waits for it.
    assert!(matches!(
        p.ini.send_pdu(p.now, &scsi_write(1, 0), b""),
        Err(ConnError::NotAllowed {
            state: S12EnableDm,
            ..
        })
    ));
    p.tgt.transport_failed(p.now);
    assert_eq!(p.tgt.state(), S12EnableDm);

    p.ini.enable_dm_done(p.now, true).unwrap();
    assert_eq!(p.ini.state(), S5LoggedIn);
    assert_eq!(drain(&mut p.ini), [notify(Notify::FfpEnabled)]);
    p.tgt.enable_dm_done(p.now, false).unwrap();
    assert_eq!(p.tgt.state(), S9InitError);
    assert_eq!(
        drain(&mut p.tgt),
        [
            ConnEvent::Disconnect,
            lost(false),
            ConnEvent::AbortTasks,
            notify(Notify::ConnectDestroy)
        ]
    );
}
