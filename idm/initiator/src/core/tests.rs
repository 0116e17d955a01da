//! The session core against golden and scripted target PDUs: no sockets, a virtual
//! clock, every byte the core sends parsed back and checked.

use std::time::{Duration, Instant};

use idm::pdu::{
    Bhs, DataIn, DataInStatus, Digests, FrameLimits, Isid, LoginResponse, LoginStatus, NopIn,
    Opcode, Pdu, PduReader, R2t, Reject, RejectReason, Role, ScsiResponse, ScsiResponseCode, Stage,
    TargetSn, TaskMgmtResponse, TextResponse, TmfFunction, TmfResponse, TxFrame, RESERVED_TAG,
};

use super::*;
use crate::auth::{AuthError, AuthProvider, AuthStep, Authenticator};

const ISID: Isid = Isid([0x80, 1, 2, 3, 4, 5]);
const TARGET: &str = "iqn.2026-11.org.example:tgt";

fn config(kind: SessionKind) -> SessionConfig {
    SessionConfig {
        opts: LoginOptions {
            command_timeout: Some(Duration::from_secs(30)),
            ..LoginOptions::default()
        },
        kind,
        isid: ISID,
        credentials: None,
    }
}

fn normal() -> SessionConfig {
    config(SessionKind::Normal {
        target: TARGET.to_owned(),
    })
}

/// A session core and a scripted target.
struct Rig {
    core: SessionCore,
    now: Instant,
    rx: PduReader,
    stat_sn: u32,
    max_cmd_sn: u32,
}

impl Rig {
    fn new(cfg: SessionConfig) -> Self {
        Self {
            core: SessionCore::new(cfg).unwrap(),
            now: Instant::now(),
            rx: PduReader::new(
                Role::Target,
                FrameLimits {
                    digests: Digests::NONE,
                    max_data_segment_len: 1 << 20,
                },
            ),
            stat_sn: 100,
            max_cmd_sn: 64,
        }
    }

    /// Raw bytes the core queued.
    fn sent_bytes(&mut self) -> Vec<u8> {
        let mut b = Vec::new();
        self.core.poll_transmit(self.now, &mut b);
        b
    }

    /// PDUs the core queued, parsed as a target would.
    fn sent(&mut self) -> Vec<(Pdu, Vec<u8>)> {
        let bytes = self.sent_bytes();
        self.parse(&bytes)
    }

    fn parse(&mut self, mut bytes: &[u8]) -> Vec<(Pdu, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let n = self.rx.feed(bytes);
            bytes = &bytes[n..];
            while let Some(p) = self.rx.next_pdu().unwrap() {
                out.push((p.pdu, p.data.to_vec()));
            }
            if bytes.is_empty() {
                return out;
            }
        }
    }

    fn deliver(&mut self, pdu: &Pdu, data: &[u8]) {
        let mut wire = Vec::new();
        TxFrame::from_pdu(pdu, &[], data, Digests::NONE)
            .unwrap()
            .write_to(&mut wire);
        self.deliver_bytes(&wire);
    }

    fn deliver_bytes(&mut self, wire: &[u8]) {
        assert_eq!(self.core.handle_bytes(self.now, wire), wire.len());
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.core.poll_event()).collect()
    }

    fn sn(&mut self, advance: bool) -> TargetSn {
        let sn = TargetSn {
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.core.st.cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
        };
        if advance {
            self.stat_sn += 1;
        }
        sn
    }

    fn login_rsp(&mut self, itt: u32, csg: Stage, nsg: Option<Stage>, cont: bool) -> Pdu {
        Pdu::LoginResponse(LoginResponse {
            transit: nsg.is_some(),
            cont,
            csg,
            nsg: nsg.unwrap_or(csg),
            version_max: 0,
            version_active: 0,
            isid: ISID,
            tsih: if nsg == Some(Stage::FullFeaturePhase) {
                0x1234
            } else {
                0
            },
            itt,
            sn: self.sn(true),
            status: LoginStatus::SUCCESS,
        })
    }

    /// Runs a whole login: the target answers every offer with `answers` (or echoes
    /// the offer) and declares MaxRecvDataSegmentLength=8192.
    fn login(cfg: SessionConfig, answers: &[(&str, &str)]) -> Self {
        let mut r = Self::new(cfg);
        r.core.start(r.now).unwrap();
        let sent = r.sent();
        let (Pdu::LoginRequest(req), _) = &sent[0] else {
            panic!("{sent:?}")
        };
        let rsp = r.login_rsp(
            req.itt,
            Stage::SecurityNegotiation,
            Some(Stage::OperationalNegotiation),
            false,
        );
        r.deliver(&rsp, b"AuthMethod=None\0");
        let sent = r.sent();
        let (Pdu::LoginRequest(req), text) = &sent[0] else {
            panic!("{sent:?}")
        };
        assert_eq!(req.csg, Stage::OperationalNegotiation);
        assert_eq!((req.transit, req.nsg), (true, Stage::FullFeaturePhase));
        let mut t = idm::text::TextBuilder::new();
        for (k, v) in idm::text::parse(text).unwrap() {
            if k == "MaxRecvDataSegmentLength" {
                continue;
            }
            let a = answers
                .iter()
                .find(|(ak, _)| *ak == k)
                .map_or(v.split(',').next().unwrap_or(v), |(_, a)| a);
            t.push(k, a).unwrap();
        }
        t.push("MaxRecvDataSegmentLength", "8192").unwrap();
        let rsp = r.login_rsp(
            req.itt,
            Stage::OperationalNegotiation,
            Some(Stage::FullFeaturePhase),
            false,
        );
        r.deliver(&rsp, t.as_bytes());
        let ev = r.events();
        assert!(matches!(ev.as_slice(), [Event::LoggedIn]), "{ev:?}");
        assert!(r.core.is_logged_in());
        r
    }

    fn data_in(&mut self, itt: u32, data_sn: u32, offset: u32, data: &[u8], status: Option<u8>) {
        let sn = self.sn(status.is_some());
        let pdu = Pdu::DataIn(DataIn {
            final_bit: status.is_some(),
            ack: false,
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            exp_cmd_sn: sn.exp_cmd_sn,
            max_cmd_sn: sn.max_cmd_sn,
            data_sn,
            buffer_offset: offset,
            status: status.map(|s| DataInStatus {
                status: s,
                stat_sn: sn.stat_sn,
                overflow: false,
                underflow: false,
                residual_count: 0,
            }),
        });
        self.deliver(&pdu, data);
    }

    fn scsi_rsp(&mut self, itt: u32, status: u8, underflow: Option<u32>, data: &[u8]) {
        let pdu = Pdu::ScsiResponse(ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: false,
            overflow: false,
            underflow: underflow.is_some(),
            response: ScsiResponseCode::Completed,
            status,
            itt,
            snack_tag: 0,
            sn: self.sn(true),
            exp_data_sn: 0,
            bidi_read_residual_count: 0,
            residual_count: underflow.unwrap_or(0),
        });
        self.deliver(&pdu, data);
    }
}

fn completed(ev: Vec<Event>) -> Vec<(TaskId, Result<ScsiResult, TaskError>)> {
    ev.into_iter()
        .map(|e| match e {
            Event::Completed { id, result } => (id, result),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// ---- login -------------------------------------------------------------------------------

const FIRST_LOGIN_TEXT: &[u8] = b"InitiatorName=iqn.2026-11.org.rstmf:initiator\0SessionType=Normal\0TargetName=iqn.2026-11.org.example:tgt\0AuthMethod=None\0";

#[test]
fn first_login_request_is_golden() {
    let mut r = Rig::new(normal());
    r.core.start(r.now).unwrap();
    let bytes = r.sent_bytes();
    let mut golden = hex("43 81 00 00 00 00 00 78  80 01 02 03 04 05 00 00
         00 00 00 00 00 00 00 00  00 00 00 01 00 00 00 00
         00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00");
    golden.extend_from_slice(FIRST_LOGIN_TEXT);
    assert_eq!(bytes, golden);
    assert!(!r.core.is_logged_in());
    assert!(r.core.poll_timeout().is_some(), "the login timer runs");
}

#[test]
fn golden_security_response_leads_to_operational_offers() {
    let mut r = Rig::new(normal());
    r.core.start(r.now).unwrap();
    r.sent();
    // T=1 CSG=0 NSG=1, StatSN 5, ExpCmdSN 1, MaxCmdSN 1, status 0, 39 bytes of text.
    let mut rsp = hex("23 81 00 00 00 00 00 27  80 01 02 03 04 05 00 00
         00 00 00 00 00 00 00 00  00 00 00 05 00 00 00 01
         00 00 00 01 00 00 00 00  00 00 00 00 00 00 00 00");
    rsp.extend_from_slice(b"AuthMethod=None\0TargetPortalGroupTag=1\0\0");
    r.deliver_bytes(&rsp);
    assert_eq!(r.core.target_portal_group_tag(), Some(1));
    let sent = r.sent();
    let [(Pdu::LoginRequest(req), text)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(req.csg, Stage::OperationalNegotiation);
    assert_eq!(req.exp_stat_sn, 6);
    assert_eq!(req.cmd_sn, 1);
    assert_eq!(req.itt, 1);
    let keys = idm::text::parse(text).unwrap();
    assert_eq!(
        keys,
        vec![
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxConnections", "1"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "1048576"),
            ("FirstBurstLength", "262144"),
            ("MaxOutstandingR2T", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("ErrorRecoveryLevel", "0"),
            ("MaxRecvDataSegmentLength", "262144"),
        ]
    );
}

#[test]
fn login_applies_answers_and_declarations() {
    let r = Rig::login(
        normal(),
        &[
            ("InitialR2T", "Yes"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
        ],
    );
    let p = r.core.params();
    assert!(p.initial_r2t && p.immediate_data);
    assert_eq!(p.max_burst_length, 262_144);
    assert_eq!(p.first_burst_length, 65_536);
    assert_eq!(p.max_send_data_segment_length, 8192);
    assert_eq!(p.max_recv_data_segment_length, 262_144);
    assert_eq!(r.core.tsih(), 0x1234);
    let (cmd_sn, exp, max, exp_stat) = r.core.sequence_numbers();
    assert_eq!((cmd_sn, exp, max, exp_stat), (1, 1, 64, 102));
}

#[test]
fn login_refused_with_status() {
    let mut r = Rig::new(normal());
    r.core.start(r.now).unwrap();
    let sent = r.sent();
    let mut rsp = r.login_rsp(sent[0].0.itt(), Stage::SecurityNegotiation, None, false);
    if let Pdu::LoginResponse(l) = &mut rsp {
        l.status = LoginStatus::NOT_FOUND;
    }
    r.deliver(&rsp, b"");
    let ev = r.events();
    match ev.as_slice() {
        [Event::Failed(Error::LoginRejected {
            status,
            redirect: None,
        })] => {
            assert_eq!(*status, LoginStatus::NOT_FOUND)
        }
        other => panic!("{other:?}"),
    }
    assert!(r.core.is_closed() && r.core.wants_close());
}

#[test]
fn login_response_with_wrong_itt_or_version_fails() {
    for bad in 0..2 {
        let mut r = Rig::new(normal());
        r.core.start(r.now).unwrap();
        let sent = r.sent();
        let mut rsp = r.login_rsp(sent[0].0.itt(), Stage::SecurityNegotiation, None, false);
        if let Pdu::LoginResponse(l) = &mut rsp {
            if bad == 0 {
                l.itt = 77;
            } else {
                l.version_active = 2;
            }
        }
        r.deliver(&rsp, b"");
        assert!(matches!(
            r.events().as_slice(),
            [Event::Failed(Error::Protocol(_))]
        ));
    }
}

#[test]
fn login_text_continuation_and_target_offers() {
    let mut r = Rig::new(normal());
    r.core.start(r.now).unwrap();
    let itt = r.sent()[0].0.itt();
    let rsp = r.login_rsp(
        itt,
        Stage::SecurityNegotiation,
        Some(Stage::OperationalNegotiation),
        false,
    );
    r.deliver(&rsp, b"AuthMethod=None\0");
    let itt = r.sent()[0].0.itt();
    // Part one of the answer, C=1: the initiator asks for the rest with an empty request.
    let rsp = r.login_rsp(itt, Stage::OperationalNegotiation, None, true);
    r.deliver(&rsp, b"HeaderDigest=None\0DataDig");
    let sent = r.sent();
    let [(Pdu::LoginRequest(req), text)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert!(text.is_empty() && !req.transit && !req.cont);
    // Part two, with an offer of the target's own and a private key: T=0.
    let rsp = r.login_rsp(req.itt, Stage::OperationalNegotiation, None, false);
    r.deliver(
        &rsp,
        b"est=None\0TaskReporting=ResponseFence,RFC3720\0X-com.example.Foo=1\0",
    );
    let sent = r.sent();
    let [(Pdu::LoginRequest(req), text)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert!(req.transit);
    assert_eq!(
        idm::text::parse(text).unwrap(),
        vec![
            ("TaskReporting", "RFC3720"),
            ("X-com.example.Foo", "NotUnderstood")
        ]
    );
    let rsp = r.login_rsp(
        req.itt,
        Stage::OperationalNegotiation,
        Some(Stage::FullFeaturePhase),
        false,
    );
    r.deliver(&rsp, b"");
    assert!(matches!(r.events().as_slice(), [Event::LoggedIn]));
}

#[test]
fn forbidden_answer_fails_the_login() {
    let mut r = Rig::new(normal());
    r.core.start(r.now).unwrap();
    let itt = r.sent()[0].0.itt();
    let rsp = r.login_rsp(
        itt,
        Stage::SecurityNegotiation,
        Some(Stage::OperationalNegotiation),
        false,
    );
    r.deliver(&rsp, b"AuthMethod=None\0");
    let itt = r.sent()[0].0.itt();
    // We offered MaxBurstLength=1048576; "Minimum" forbids a larger answer.
    let rsp = r.login_rsp(
        itt,
        Stage::OperationalNegotiation,
        Some(Stage::FullFeaturePhase),
        false,
    );
    r.deliver(&rsp, b"MaxBurstLength=2097152\0");
    assert!(matches!(
        r.events().as_slice(),
        [Event::Failed(Error::Key(_))]
    ));
}

#[test]
fn login_timeout() {
    let mut r = Rig::new(normal());
    r.core.start(r.now).unwrap();
    r.sent();
    let t = r.core.poll_timeout().unwrap();
    r.core.handle_timeout(t);
    assert!(matches!(
        r.events().as_slice(),
        [Event::Failed(Error::Timeout("login"))]
    ));
}

/// A toy authenticator: proves the hook's call order (CHAP itself lives elsewhere).
struct Toy(Vec<String>);
impl Authenticator for Toy {
    fn method(&self) -> &'static str {
        "CHAP"
    }
    fn step(&mut self, keys: &[(&str, &str)]) -> Result<AuthStep, AuthError> {
        self.0.push(format!("step {keys:?}"));
        Ok(if keys.is_empty() {
            AuthStep {
                keys: vec![("CHAP_A".into(), "5".into())],
                transit: false,
            }
        } else {
            AuthStep {
                keys: vec![
                    ("CHAP_N".into(), "u".into()),
                    ("CHAP_R".into(), "0x00".into()),
                ],
                transit: true,
            }
        })
    }
    fn finish(&mut self, keys: &[(&str, &str)]) -> Result<(), AuthError> {
        if keys.is_empty() {
            Ok(())
        } else {
            Err(AuthError::Failed("unexpected mutual keys".into()))
        }
    }
}
struct ToyProvider;
impl AuthProvider for ToyProvider {
    fn start(&self, _: &Credentials) -> Result<Box<dyn Authenticator>, AuthError> {
        Ok(Box::new(Toy(Vec::new())))
    }
}

#[test]
fn credentials_need_an_authenticator() {
    let mut cfg = normal();
    cfg.credentials = Some(Credentials {
        user: "u".into(),
        secret: "s".into(),
    });
    cfg.opts.auth = None;
    assert!(matches!(
        SessionCore::new(cfg.clone()),
        Err(Error::Auth(AuthError::Unsupported(_)))
    ));
    cfg.opts.auth = Some(std::sync::Arc::new(ToyProvider));
    let mut r = Rig::new(cfg);
    r.core.start(r.now).unwrap();
    let sent = r.sent();
    let (Pdu::LoginRequest(req), text) = &sent[0] else {
        panic!()
    };
    assert!(!req.transit);
    assert!(text.ends_with(b"AuthMethod=CHAP\0"));
    let rsp = r.login_rsp(req.itt, Stage::SecurityNegotiation, None, false);
    r.deliver(&rsp, b"AuthMethod=CHAP\0");
    let sent = r.sent();
    let (Pdu::LoginRequest(req), text) = &sent[0] else {
        panic!()
    };
    assert_eq!((req.transit, text.as_slice()), (false, &b"CHAP_A=5\0"[..]));
    let rsp = r.login_rsp(req.itt, Stage::SecurityNegotiation, None, false);
    r.deliver(&rsp, b"CHAP_A=5\0CHAP_I=1\0CHAP_C=0x0102\0");
    let sent = r.sent();
    let (Pdu::LoginRequest(req), text) = &sent[0] else {
        panic!()
    };
    assert!(req.transit && req.nsg == Stage::OperationalNegotiation);
    assert_eq!(text.as_slice(), b"CHAP_N=u\0CHAP_R=0x00\0");
    let rsp = r.login_rsp(
        req.itt,
        Stage::SecurityNegotiation,
        Some(Stage::OperationalNegotiation),
        false,
    );
    r.deliver(&rsp, b"");
    let sent = r.sent();
    assert!(matches!(&sent[0].0, Pdu::LoginRequest(l) if l.csg == Stage::OperationalNegotiation));
}

// ---- full feature phase -------------------------------------------------------------------

#[test]
fn read_with_data_in_and_phase_collapse() {
    let mut r = Rig::login(normal(), &[]);
    let id = r
        .core
        .submit(
            r.now,
            ScsiRequest::read(1, &crate::scsi::read16(8, 16), 8192),
        )
        .unwrap();
    let sent = r.sent();
    let [(Pdu::ScsiCommand(c), data)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert!(data.is_empty());
    assert!(c.read && !c.write && c.final_bit && !c.immediate);
    assert_eq!(c.itt, id.0);
    assert_eq!(c.lun, 0x0001_0000_0000_0000);
    assert_eq!(c.expected_data_transfer_length, 8192);
    assert_eq!((c.cmd_sn, c.exp_stat_sn), (1, 102));
    assert_eq!(c.cdb[0], 0x88);
    r.data_in(id.0, 0, 0, &[1; 4096], None);
    assert!(r.events().is_empty());
    r.data_in(id.0, 1, 4096, &[2; 4096], Some(0));
    let done = completed(r.events());
    let res = done[0].1.as_ref().unwrap();
    assert_eq!(done[0].0, id);
    assert!(res.is_good());
    assert_eq!(res.data.len(), 8192);
    assert!(res.data[..4096].iter().all(|&b| b == 1) && res.data[4096..].iter().all(|&b| b == 2));
    assert_eq!(r.core.sequence_numbers(), (2, 2, 64, 103));
    assert_eq!(r.core.outstanding(), 0);
}

#[test]
fn data_sn_gap_and_overflow_fail_the_task() {
    let mut r = Rig::login(normal(), &[]);
    let a = r
        .core
        .submit(r.now, ScsiRequest::read(0, &[0x88], 1024))
        .unwrap();
    let b = r
        .core
        .submit(r.now, ScsiRequest::read(0, &[0x88], 1024))
        .unwrap();
    r.sent();
    r.data_in(a.0, 1, 0, &[0; 512], None);
    r.data_in(a.0, 2, 512, &[0; 512], Some(0));
    r.data_in(b.0, 0, 800, &[0; 512], Some(0));
    let done = completed(r.events());
    assert_eq!(
        done[0].1,
        Err(TaskError::DataSn {
            expected: 0,
            got: 1
        })
    );
    assert_eq!(
        done[1].1,
        Err(TaskError::DataOverflow {
            offset: 800,
            len: 512,
            cap: 1024
        })
    );
}

#[test]
fn missing_data_and_exp_data_sn_are_caught() {
    let mut r = Rig::login(normal(), &[]);
    let a = r
        .core
        .submit(r.now, ScsiRequest::read(0, &[0x88], 1024))
        .unwrap();
    r.sent();
    r.data_in(a.0, 0, 0, &[0; 512], Some(0));
    let done = completed(r.events());
    assert_eq!(
        done[0].1,
        Err(TaskError::MissingData {
            expected: 1024,
            got: 512
        })
    );
    let b = r
        .core
        .submit(r.now, ScsiRequest::read(0, &[0x88], 512))
        .unwrap();
    r.sent();
    r.data_in(b.0, 0, 0, &[0; 512], None);
    r.scsi_rsp(b.0, 0, None, b""); // ExpDataSN 0, but one Data-In was received
    let done = completed(r.events());
    assert_eq!(
        done[0].1,
        Err(TaskError::ExpDataSn {
            expected: 1,
            got: 0
        })
    );
}

#[test]
fn check_condition_with_sense_and_underflow() {
    let mut r = Rig::login(normal(), &[]);
    let id = r
        .core
        .submit(r.now, ScsiRequest::read(0, &[0x12, 0, 0, 0, 96, 0], 96))
        .unwrap();
    r.sent();
    r.data_in(id.0, 0, 0, &[7; 36], None);
    let mut sense = vec![
        0, 18, 0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0,
    ];
    sense.truncate(20);
    // GOOD with underflow: 60 of 96 bytes not transferred.
    let pdu = Pdu::ScsiResponse(ScsiResponse {
        bidi_overflow: false,
        bidi_underflow: false,
        overflow: false,
        underflow: true,
        response: ScsiResponseCode::Completed,
        status: 0,
        itt: id.0,
        snack_tag: 0,
        sn: r.sn(true),
        exp_data_sn: 1,
        bidi_read_residual_count: 0,
        residual_count: 60,
    });
    r.deliver(&pdu, b"");
    let done = completed(r.events());
    let res = done[0].1.as_ref().unwrap();
    assert_eq!(res.residual, Residual::Underflow(60));
    assert_eq!(res.data, vec![7; 36]);
    // CHECK CONDITION with sense data.
    let id = r.core.submit(r.now, ScsiRequest::none(0, &[0; 6])).unwrap();
    r.sent();
    r.scsi_rsp(id.0, 2, None, &sense);
    let done = completed(r.events());
    let res = done[0].1.clone().unwrap();
    assert_eq!(res.status, 2);
    assert_eq!(res.sense.len(), 18);
    let s = res.sense().unwrap();
    assert_eq!((s.key, s.asc), (5, 0x24));
    assert!(matches!(
        res.check(),
        Err(Error::Scsi {
            status: 2,
            sense: Some(_)
        })
    ));
}

#[test]
fn write_with_immediate_data_then_r2t() {
    // tgt's defaults: InitialR2T=Yes, ImmediateData=Yes, FirstBurstLength=65536.
    let mut r = Rig::login(
        normal(),
        &[("InitialR2T", "Yes"), ("FirstBurstLength", "65536")],
    );
    let data: Vec<u8> = (0..20000u32).map(|i| i as u8).collect();
    let id = r
        .core
        .submit(
            r.now,
            ScsiRequest::write(0, &crate::scsi::write16(0, 40, false), data.clone()),
        )
        .unwrap();
    let sent = r.sent();
    let [(Pdu::ScsiCommand(c), imm)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert!(c.write && c.final_bit && !c.read);
    assert_eq!(c.expected_data_transfer_length, 20000);
    assert_eq!(imm.as_slice(), &data[..8192]);
    let sn = r.sn(false);
    r.deliver(
        &Pdu::R2t(R2t {
            lun: 0,
            itt: id.0,
            ttt: 0x55,
            sn,
            r2t_sn: 0,
            buffer_offset: 8192,
            desired_data_transfer_length: 11808,
        }),
        b"",
    );
    let sent = r.sent();
    assert_eq!(sent.len(), 2);
    let mut got = Vec::new();
    for (i, (p, d)) in sent.iter().enumerate() {
        let Pdu::DataOut(o) = p else { panic!("{p:?}") };
        assert_eq!((o.itt, o.ttt, o.data_sn), (id.0, 0x55, i as u32));
        assert_eq!(o.final_bit, i == 1);
        assert_eq!(o.buffer_offset as usize, 8192 + got.len());
        got.extend_from_slice(d);
    }
    assert_eq!(got.as_slice(), &data[8192..]);
    r.scsi_rsp(id.0, 0, None, b"");
    let done = completed(r.events());
    assert_eq!(done[0].1.as_ref().unwrap().data, Vec::<u8>::new());
}

#[test]
fn unsolicited_data_out_without_initial_r2t() {
    let mut r = Rig::login(normal(), &[("FirstBurstLength", "20000")]);
    let data = vec![9u8; 30000];
    let id = r
        .core
        .submit(r.now, ScsiRequest::write(0, &[0x8a], data))
        .unwrap();
    let sent = r.sent();
    // Command (8192 immediate, F=0), then Data-Out 8192 + 3616 up to FirstBurstLength.
    let lens: Vec<usize> = sent.iter().map(|(_, d)| d.len()).collect();
    assert_eq!(lens, vec![8192, 8192, 3616]);
    let Pdu::ScsiCommand(c) = &sent[0].0 else {
        panic!()
    };
    assert!(!c.final_bit);
    for (i, (p, _)) in sent[1..].iter().enumerate() {
        let Pdu::DataOut(o) = p else { panic!() };
        assert_eq!(
            (o.ttt, o.data_sn, o.final_bit),
            (RESERVED_TAG, i as u32, i == 1)
        );
    }
    // R2T for the rest.
    let sn = r.sn(false);
    r.deliver(
        &Pdu::R2t(R2t {
            lun: 0,
            itt: id.0,
            ttt: 1,
            sn,
            r2t_sn: 0,
            buffer_offset: 20000,
            desired_data_transfer_length: 10000,
        }),
        b"",
    );
    let lens: Vec<usize> = r.sent().iter().map(|(_, d)| d.len()).collect();
    assert_eq!(lens, vec![8192, 1808]);
}

#[test]
fn r2t_beyond_the_buffer_fails_the_session() {
    let mut r = Rig::login(normal(), &[]);
    let id = r
        .core
        .submit(r.now, ScsiRequest::write(0, &[0x8a], vec![0; 512]))
        .unwrap();
    r.sent();
    let sn = r.sn(false);
    r.deliver(
        &Pdu::R2t(R2t {
            lun: 0,
            itt: id.0,
            ttt: 1,
            sn,
            r2t_sn: 0,
            buffer_offset: 0,
            desired_data_transfer_length: 4096,
        }),
        b"",
    );
    let ev = r.events();
    assert!(matches!(
        &ev[0],
        Event::Completed {
            result: Err(TaskError::ConnectionLost),
            ..
        }
    ));
    assert!(matches!(
        &ev[1],
        Event::Failed(Error::Protocol(ProtocolError::BadR2t { .. }))
    ));
    assert!(r.core.wants_close());
}

#[test]
fn cmd_sn_window_holds_commands_back() {
    let mut r = Rig::login(normal(), &[]);
    // Window of one command: MaxCmdSN = CmdSN = 1.
    r.core.st.max_cmd_sn = 1;
    r.max_cmd_sn = 1;
    let ids: Vec<TaskId> = (0..3)
        .map(|_| r.core.submit(r.now, ScsiRequest::none(0, &[0; 6])).unwrap())
        .collect();
    let sent = r.sent();
    assert_eq!(sent.len(), 1, "only CmdSN 1 fits the window");
    assert_eq!(sent[0].0.itt(), ids[0].0);
    r.max_cmd_sn = 2;
    r.scsi_rsp(ids[0].0, 0, None, b"");
    let sent = r.sent();
    assert_eq!(sent.len(), 1);
    let Pdu::ScsiCommand(c) = &sent[0].0 else {
        panic!()
    };
    assert_eq!((c.itt, c.cmd_sn), (ids[1].0, 2));
    assert_eq!(r.core.outstanding(), 2);
    // A window that is invalid (MaxCmdSN < ExpCmdSN - 1) is ignored.
    r.core.st.update_cmd_window(10, 5);
    assert_eq!(r.core.sequence_numbers().2, 2);
}

#[test]
fn serial_arithmetic_wraps() {
    assert!(sn_lt(u32::MAX, 0));
    assert!(sn_lt(5, 6) && !sn_lt(6, 5));
    assert!(sn_le(7, 7));
    assert!(!sn_lt(0, 0x8000_0000) || !sn_lt(0x8000_0000, 0));
}

#[test]
fn nop_in_ping_is_answered_and_nop_out_ping_completes() {
    let mut r = Rig::login(normal(), &[]);
    let sn = r.sn(false);
    r.deliver(
        &Pdu::NopIn(NopIn {
            lun: 0x0001_0000_0000_0000,
            itt: RESERVED_TAG,
            ttt: 0xabcd,
            sn,
        }),
        b"",
    );
    let sent = r.sent();
    let [(Pdu::NopOut(n), _)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert!(n.immediate);
    assert_eq!(
        (n.itt, n.ttt, n.lun),
        (RESERVED_TAG, 0xabcd, 0x0001_0000_0000_0000)
    );
    assert_eq!(n.cmd_sn, 1, "immediate PDUs do not advance CmdSN");
    let id = r.core.submit_nop(r.now).unwrap();
    let sent = r.sent();
    let [(Pdu::NopOut(n), _)] = sent.as_slice() else {
        panic!()
    };
    assert_eq!((n.itt, n.ttt), (id.0, RESERVED_TAG));
    let sn = r.sn(true);
    r.deliver(
        &Pdu::NopIn(NopIn {
            lun: 0,
            itt: id.0,
            ttt: RESERVED_TAG,
            sn,
        }),
        b"",
    );
    assert!(matches!(
        r.events().as_slice(),
        [Event::NopDone { result: Ok(()), .. }]
    ));
}

#[test]
fn abort_task_completes_the_aborted_command() {
    let mut r = Rig::login(normal(), &[]);
    let victim = r
        .core
        .submit(r.now, ScsiRequest::read(0, &[0x88], 512))
        .unwrap();
    let tmf = r
        .core
        .submit_tmf(r.now, TmfFunction::AbortTask, 0, Some(victim))
        .unwrap();
    let sent = r.sent();
    let Pdu::TaskMgmtRequest(t) = &sent[1].0 else {
        panic!("{sent:?}")
    };
    assert!(t.immediate);
    assert_eq!(
        (t.referenced_task_tag, t.ref_cmd_sn, t.cmd_sn),
        (victim.0, 1, 2)
    );
    let sn = r.sn(true);
    r.deliver(
        &Pdu::TaskMgmtResponse(TaskMgmtResponse {
            response: TmfResponse::FunctionComplete,
            itt: tmf.0,
            sn,
        }),
        b"",
    );
    let ev = r.events();
    assert!(
        matches!(&ev[0], Event::Completed { id, result: Err(TaskError::Aborted) } if *id == victim)
    );
    assert!(
        matches!(&ev[1], Event::TmfDone { id, result: Ok(TmfResponse::FunctionComplete) } if *id == tmf)
    );
}

#[test]
fn reject_fails_the_named_task() {
    let mut r = Rig::login(normal(), &[]);
    let id = r
        .core
        .submit(r.now, ScsiRequest::none(0, &[0xff; 6]))
        .unwrap();
    let sent = r.sent_bytes();
    let sn = r.sn(false);
    r.deliver(
        &Pdu::Reject(Reject {
            reason: RejectReason::CommandNotSupported,
            sn,
            data_sn_or_r2t_sn: 0,
        }),
        &sent[..48],
    );
    let done = completed(r.events());
    assert_eq!(
        done[0],
        (
            id,
            Err(TaskError::Rejected(RejectReason::CommandNotSupported))
        )
    );
}

#[test]
fn logout_closes_the_session() {
    let mut r = Rig::login(normal(), &[]);
    r.core.logout(r.now).unwrap();
    let sent = r.sent();
    let [(Pdu::LogoutRequest(l), _)] = sent.as_slice() else {
        panic!()
    };
    assert!(l.immediate);
    let sn = r.sn(true);
    r.deliver(
        &Pdu::LogoutResponse(idm::pdu::LogoutResponse {
            response: idm::pdu::LogoutResponseCode::Success,
            itt: l.itt,
            sn,
            time2wait: 0,
            time2retain: 0,
        }),
        b"",
    );
    assert!(matches!(r.events().as_slice(), [Event::LoggedOut]));
    assert!(r.core.is_closed() && r.core.wants_close());
    assert!(matches!(
        r.core.submit(r.now, ScsiRequest::none(0, &[0; 6])),
        Err(Error::Closed)
    ));
}

#[test]
fn command_timeout_fails_the_session() {
    let mut r = Rig::login(normal(), &[]);
    let id = r.core.submit(r.now, ScsiRequest::none(0, &[0; 6])).unwrap();
    r.sent();
    let t = r.core.poll_timeout().unwrap();
    assert_eq!(t, r.now + Duration::from_secs(30));
    r.core.handle_timeout(t);
    let ev = r.events();
    assert!(
        matches!(&ev[0], Event::Completed { id: i, result: Err(TaskError::Timeout) } if *i == id)
    );
    assert!(matches!(&ev[1], Event::Failed(Error::Timeout("command"))));
}

#[test]
fn garbage_from_the_target_fails_the_session() {
    let mut r = Rig::login(normal(), &[]);
    let id = r.core.submit(r.now, ScsiRequest::none(0, &[0; 6])).unwrap();
    r.sent();
    // A header digest cannot be checked here, but a wrong-direction opcode is refused
    // and an unknown opcode with a broken length drops nothing silently.
    let mut bad = [0u8; 48];
    bad[0] = 0x01; // SCSI Command: an initiator opcode, wrong direction
    bad[16..20].copy_from_slice(&id.0.to_be_bytes());
    r.deliver_bytes(&bad);
    let done = completed(r.events());
    assert_eq!(done, vec![(id, Err(TaskError::BadPdu))]);
    assert!(r.core.is_logged_in());
    r.core.transport_failed(r.now);
    assert!(matches!(
        r.events().as_slice(),
        [Event::Failed(Error::Closed)]
    ));
}

#[test]
fn bhs_of_every_sent_pdu_is_well_formed() {
    let mut r = Rig::login(normal(), &[]);
    r.core
        .submit(r.now, ScsiRequest::write(0, &[0x8a], vec![1; 100_000]))
        .unwrap();
    let bytes = r.sent_bytes();
    let b = Bhs::new_checked(&bytes[..]).unwrap();
    assert_eq!(b.opcode().unwrap(), Opcode::ScsiCommand);
    assert_eq!(b.data_segment_len(), 8192);
}

// ---- discovery --------------------------------------------------------------------------

#[test]
fn discovery_send_targets_with_continuation() {
    let mut r = Rig::login(config(SessionKind::Discovery), &[]);
    assert!(r.core.submit(r.now, ScsiRequest::none(0, &[0; 6])).is_err());
    let id = r.core.submit_send_targets(r.now, None).unwrap();
    let sent = r.sent();
    let [(Pdu::TextRequest(t), text)] = sent.as_slice() else {
        panic!()
    };
    assert_eq!(text.as_slice(), b"SendTargets=All\0");
    assert_eq!((t.ttt, t.final_bit, t.cmd_sn), (RESERVED_TAG, true, 1));
    let sn = r.sn(true);
    r.deliver(
        &Pdu::TextResponse(TextResponse {
            final_bit: false,
            cont: true,
            lun: 0,
            itt: id.0,
            ttt: 9,
            sn,
        }),
        b"TargetName=iqn.2026-11.org.example:a\0TargetAddress=10.0.0.1:3260,1\0TargetAddress=[fe80::1]:3261,2\0TargetName=iqn.20",
    );
    let sent = r.sent();
    let [(Pdu::TextRequest(t), text)] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert!(text.is_empty());
    assert_eq!((t.ttt, t.itt, t.cmd_sn), (9, id.0, 2));
    let sn = r.sn(true);
    r.deliver(
        &Pdu::TextResponse(TextResponse {
            final_bit: true,
            cont: false,
            lun: 0,
            itt: id.0,
            ttt: RESERVED_TAG,
            sn,
        }),
        b"26-11.org.example:b\0",
    );
    let ev = r.events();
    let [Event::TextDone {
        result: Ok(body), ..
    }] = ev.as_slice()
    else {
        panic!("{ev:?}")
    };
    let t = parse_send_targets(body).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].name, "iqn.2026-11.org.example:a");
    assert_eq!(t[0].portals.len(), 2);
    assert_eq!(t[0].portals[1].tpgt, Some(2));
    assert_eq!(t[0].portals[1].portal().unwrap().port, 3261);
    assert_eq!(t[1].name, "iqn.2026-11.org.example:b");
    assert!(t[1].portals.is_empty());
    assert!(parse_send_targets(b"TargetAddress=1.2.3.4\0").is_err());
}

#[test]
fn query_task_does_not_abort() {
    let mut r = Rig::login(normal(), &[]);
    let t = r
        .core
        .submit(r.now, ScsiRequest::read(0, &[0x88], 512))
        .unwrap();
    let q = r
        .core
        .submit_tmf(r.now, TmfFunction::QueryTask, 0, Some(t))
        .unwrap();
    r.sent();
    let sn = r.sn(true);
    r.deliver(
        &Pdu::TaskMgmtResponse(TaskMgmtResponse {
            response: TmfResponse::FunctionComplete,
            itt: q.0,
            sn,
        }),
        b"",
    );
    assert!(matches!(r.events().as_slice(), [Event::TmfDone { .. }]));
    assert_eq!(r.core.outstanding(), 1, "the queried task is still running");
}
