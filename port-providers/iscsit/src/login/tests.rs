//! Login transcripts: exact key lists and header fields, driven step by step.

use std::collections::HashMap;

use super::*;
use crate::chap::{chap_md5, encode_hex, ChapKeys, FixedEntropy, InitiatorChap};
use crate::config::{
    AclPolicy, ChapCredentials, InitiatorContext, MutualChap, Secret, TargetAuth, TargetConfig,
};

const INI: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test";
const OPEN_ISCSI: &str = "iqn.2004-10.com.ubuntu:01:5b4a3f2e1d0c";
const TGT: &str = "iqn.2026-11.org.rstmf:disk1";
const ISID: Isid = Isid([0x80, 0x12, 0x34, 0x56, 0x00, 0x01]);
const ITT: u32 = 0x1234_5678;
const FIRST_TSIH: u16 = 0x0a01;
/// Host entropy: CHAP_I = 0x4d (77), CHAP_C = 00 01 .. 0f.
const SEED: [u8; 17] = [0x4d, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const CHALLENGE_HEX: &str = "0x000102030405060708090a0b0c0d0e0f";

const INI_SECRET: &str = "initiator-secret-1";
const TGT_SECRET: &str = "target-mutual-secret";

fn name(s: &str) -> IscsiName {
    IscsiName::parse(s).unwrap()
}

fn secret(s: &str) -> Secret {
    Secret::new(s).unwrap()
}

struct Host {
    sessions: Vec<(u16, ExistingSession)>,
    next_tsih: Option<u16>,
    states: HashMap<IscsiName, TargetState>,
    entropy: FixedEntropy,
    /// The source is throttled (checked how many times).
    throttled: bool,
    throttle_checks: usize,
    /// Failed verifications reported: (initiator, CHAP_N).
    failures: Vec<(String, Option<String>)>,
    successes: Vec<Identity>,
    /// Targets `login_settings` was called with.
    settings_for: Vec<Option<IscsiName>>,
    random_calls: usize,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            sessions: Vec::new(),
            next_tsih: Some(FIRST_TSIH),
            states: HashMap::new(),
            entropy: FixedEntropy::new(&SEED),
            throttled: false,
            throttle_checks: 0,
            failures: Vec::new(),
            successes: Vec::new(),
            settings_for: Vec::new(),
            random_calls: 0,
        }
    }
}

impl LoginHost for Host {
    fn session(&self, tsih: u16) -> Option<ExistingSession> {
        self.sessions
            .iter()
            .find(|s| s.0 == tsih)
            .map(|s| s.1.clone())
    }
    fn find_session(&self, key: &SessionKey) -> Option<u16> {
        self.sessions.iter().find(|s| &s.1.key == key).map(|s| s.0)
    }
    fn allocate_tsih(&mut self) -> Option<u16> {
        let t = self.next_tsih?;
        self.next_tsih = Some(t + 1);
        Some(t)
    }
    fn target_state(&self, target: &IscsiName) -> TargetState {
        self.states.get(target).copied().unwrap_or_default()
    }
    fn fill_random(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        self.random_calls += 1;
        self.entropy.fill(buf)
    }
    fn auth_throttled(&mut self) -> bool {
        self.throttle_checks += 1;
        self.throttled
    }
    fn auth_failed(&mut self, f: &AuthFailure<'_>) {
        self.failures
            .push((f.initiator.to_string(), f.user.map(str::to_owned)));
    }
    fn auth_succeeded(&mut self, identity: Identity) {
        self.successes.push(identity);
    }
    fn login_settings(&mut self, target: Option<&IscsiName>, _settings: &mut LoginSettings) {
        self.settings_for.push(target.cloned());
    }
}

/// One login under test: the target side plus the initiator's fixed header fields.
struct Harness {
    cfg: IscsitConfig,
    host: Host,
    login: TargetLogin,
    stat_sn: u32,
    tsih: u16,
    cid: u16,
}

fn target_cfg(auth: TargetAuth) -> TargetConfig {
    let mut t = TargetConfig::new(name(TGT));
    t.auth = auth;
    t
}

fn config_with(t: TargetConfig) -> IscsitConfig {
    IscsitConfig {
        targets: vec![t],
        ..Default::default()
    }
}

fn chap_config(mutual: bool) -> IscsitConfig {
    let mut t = target_cfg(TargetAuth::Chap);
    if mutual {
        t.mutual_chap = Some(MutualChap {
            user: None,
            secret: secret(TGT_SECRET),
        });
    }
    let mut cfg = config_with(t);
    cfg.initiators.push(InitiatorContext {
        name: name(INI),
        chap_user: Some("libiscsi-user".into()),
        chap_secret: Some(secret(INI_SECRET)),
    });
    cfg.validate().unwrap();
    cfg
}

impl Harness {
    fn new(cfg: IscsitConfig) -> Self {
        Self::with_settings(cfg, LoginSettings::default())
    }

    fn with_settings(cfg: IscsitConfig, settings: LoginSettings) -> Self {
        Self {
            cfg,
            host: Host::default(),
            login: TargetLogin::new(settings),
            stat_sn: 0x100,
            tsih: 0,
            cid: 0,
        }
    }

    fn req(&self, csg: Stage, nsg: Option<Stage>, cont: bool) -> LoginRequest {
        LoginRequest {
            transit: nsg.is_some(),
            cont,
            csg,
            nsg: nsg.unwrap_or(csg),
            version_max: 0,
            version_min: 0,
            isid: ISID,
            tsih: self.tsih,
            itt: ITT,
            cid: self.cid,
            cmd_sn: 7,
            exp_stat_sn: 0,
        }
    }

    fn sn(&self) -> TargetSn {
        TargetSn {
            stat_sn: self.stat_sn,
            exp_cmd_sn: 7,
            max_cmd_sn: 7,
        }
    }

    fn raw(&mut self, req: LoginRequest, data: &[u8]) -> LoginStep {
        let sn = self.sn();
        self.stat_sn += 1;
        let mut env = LoginEnv {
            config: &self.cfg,
            access: &AclPolicy,
            host: &mut self.host,
        };
        let step = self.login.handle(&mut env, &req, data, sn);
        check_wire(step.pdu());
        step
    }

    fn send(&mut self, csg: Stage, nsg: Option<Stage>, keys: &[(&str, &str)]) -> LoginStep {
        let req = self.req(csg, nsg, false);
        self.raw(req, &encode(keys))
    }
}

/// The response header survives emit/parse, so its flags are legal on the wire.
fn check_wire(p: &LoginPdu) {
    let bytes = Pdu::LoginResponse(p.header).to_bytes();
    let bhs = Bhs::new_checked(&bytes[..]).unwrap();
    assert_eq!(LoginResponse::parse(&bhs).unwrap(), p.header);
}

fn encode(keys: &[(&str, &str)]) -> Vec<u8> {
    let mut b = TextBuilder::new();
    for (k, v) in keys {
        b.push(k, v).unwrap();
    }
    b.into_bytes()
}

fn kv(p: &LoginPdu) -> Vec<(String, String)> {
    p.pairs()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn owned(keys: &[(&str, &str)]) -> Vec<(String, String)> {
    keys.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const SEC: Stage = Stage::SecurityNegotiation;
const OP: Stage = Stage::OperationalNegotiation;
const FFP: Stage = Stage::FullFeaturePhase;

fn continued(step: LoginStep) -> LoginPdu {
    match step {
        LoginStep::Continue(p) => p,
        other => panic!("expected Continue, got {:?}", other.pdu().header),
    }
}

fn completed(step: LoginStep) -> (LoginPdu, LoginOutcome) {
    match step {
        LoginStep::Complete(p, o) => (p, *o),
        other => panic!("expected Complete, got {:?}", other.pdu().header),
    }
}

fn failed(step: LoginStep) -> (LoginPdu, LoginError) {
    match step {
        LoginStep::Fail(p, e) => (p, e),
        other => panic!("expected Fail, got {:?}", other.pdu().header),
    }
}

fn assert_header(p: &LoginPdu, transit: Option<Stage>, csg: Stage, tsih: u16) {
    let h = &p.header;
    assert_eq!(h.transit, transit.is_some(), "T bit");
    assert!(!h.cont, "C bit");
    assert_eq!(h.csg, csg, "CSG");
    assert_eq!(h.nsg, transit.unwrap_or(csg), "NSG");
    assert_eq!((h.version_max, h.version_active), (0, 0));
    assert_eq!(h.isid, ISID);
    assert_eq!(h.tsih, tsih, "TSIH");
    assert_eq!(h.itt, ITT);
    assert_eq!(h.status, LoginStatus::SUCCESS);
}

fn assert_failure(p: &LoginPdu, status: LoginStatus) {
    assert_eq!(p.header.status, status);
    assert!(!p.header.transit && !p.header.cont);
    assert!(p.data.is_empty(), "a failure response carries no keys");
}

/// libiscsi's login text in the operational stage (lib/login.c order and values).
fn libiscsi_operational(session_type: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("InitiatorName", INI)];
    if session_type == "Normal" {
        v.push(("TargetName", TGT));
    }
    v.extend([
        ("SessionType", session_type),
        ("HeaderDigest", "None,CRC32C"),
        ("DataDigest", "None"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "262144"),
        ("FirstBurstLength", "262144"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("MaxOutstandingR2T", "1"),
        ("ErrorRecoveryLevel", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("MaxConnections", "1"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
    ]);
    v
}

/// The target's answer to [`libiscsi_operational`] for a normal session.
const LIBISCSI_NORMAL_ANSWER: &[(&str, &str)] = &[
    ("HeaderDigest", "None"),
    ("DataDigest", "None"),
    ("InitialR2T", "Yes"),
    ("ImmediateData", "Yes"),
    ("MaxBurstLength", "262144"),
    ("FirstBurstLength", "65536"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "0"),
    ("MaxOutstandingR2T", "1"),
    ("ErrorRecoveryLevel", "0"),
    ("IFMarker", "No"),
    ("OFMarker", "No"),
    ("MaxConnections", "1"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
];

/// open-iscsi's operational text for a normal session (usr/login.c order).
const OPEN_ISCSI_OPERATIONAL: &[(&str, &str)] = &[
    ("HeaderDigest", "None"),
    ("DataDigest", "None"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "0"),
    ("IFMarker", "No"),
    ("OFMarker", "No"),
    ("ErrorRecoveryLevel", "0"),
    ("InitialR2T", "No"),
    ("ImmediateData", "Yes"),
    ("MaxBurstLength", "16776192"),
    ("FirstBurstLength", "262144"),
    ("MaxOutstandingR2T", "1"),
    ("MaxConnections", "1"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
    ("MaxRecvDataSegmentLength", "262144"),
];

#[test]
fn discovery_open_iscsi_no_auth() {
    // open-iscsi: security stage straight to full feature phase.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::Default)));
    let step = h.send(
        SEC,
        Some(FFP),
        &[
            ("InitiatorName", OPEN_ISCSI),
            ("InitiatorAlias", "host1"),
            ("SessionType", "Discovery"),
            ("AuthMethod", "None"),
        ],
    );
    let (pdu, out) = completed(step);
    assert_header(&pdu, Some(FFP), SEC, FIRST_TSIH);
    assert_eq!(pdu.header.sn.stat_sn, 0x100);
    assert_eq!(kv(&pdu), owned(&[("AuthMethod", "None")]));
    assert_eq!(out.session_type, SessionType::Discovery);
    assert_eq!(out.initiator_name, name(OPEN_ISCSI));
    assert_eq!(out.initiator_alias.as_deref(), Some("host1"));
    assert_eq!(out.target_name, None);
    assert_eq!((out.isid, out.tsih, out.cid), (ISID, FIRST_TSIH, 0));
    assert_eq!(out.disposition, SessionDisposition::New);
    assert_eq!(out.auth.method, AuthMethod::None);
    // Nothing declared: both directions use the 8192-byte default.
    assert_eq!(out.params.max_recv_data_segment_length, 8192);
    assert_eq!(out.params.max_send_data_segment_length, 8192);
    assert!(!out.rdma_extensions);
    assert_eq!(h.login.stage(), LoginStage::FullFeature);
}

#[test]
fn discovery_libiscsi_no_auth() {
    // libiscsi (iscsi-ls) starts in the operational stage with its usual keys.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::Default)));
    let keys = libiscsi_operational("Discovery");
    let (pdu, out) = completed(h.send(OP, Some(FFP), &keys));
    assert_header(&pdu, Some(FFP), OP, FIRST_TSIH);
    assert_eq!(
        kv(&pdu),
        owned(&[
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("InitialR2T", "Irrelevant"),
            ("ImmediateData", "Irrelevant"),
            ("MaxBurstLength", "Irrelevant"),
            ("FirstBurstLength", "Irrelevant"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("MaxOutstandingR2T", "Irrelevant"),
            ("ErrorRecoveryLevel", "0"),
            ("IFMarker", "No"),
            ("OFMarker", "No"),
            ("MaxConnections", "Irrelevant"),
            ("DataPDUInOrder", "Irrelevant"),
            ("DataSequenceInOrder", "Irrelevant"),
            ("MaxRecvDataSegmentLength", "262144"),
        ])
    );
    assert_eq!(out.session_type, SessionType::Discovery);
    assert_eq!(out.params.max_recv_data_segment_length, 262_144);
    assert_eq!(out.params.max_send_data_segment_length, 262_144);
}

#[test]
fn normal_libiscsi_no_auth() {
    let mut t = target_cfg(TargetAuth::None);
    t.alias = Some("disk one".replace(' ', "-"));
    let mut h = Harness::new(config_with(t));
    let keys = libiscsi_operational("Normal");
    let (pdu, out) = completed(h.send(OP, Some(FFP), &keys));
    assert_header(&pdu, Some(FFP), OP, FIRST_TSIH);
    let mut expected = owned(LIBISCSI_NORMAL_ANSWER);
    expected.extend(owned(&[
        ("TargetPortalGroupTag", "1"),
        ("TargetAlias", "disk-one"),
        ("MaxRecvDataSegmentLength", "262144"),
    ]));
    assert_eq!(kv(&pdu), expected);
    assert_eq!(out.session_type, SessionType::Normal);
    assert_eq!(out.target_name, Some(name(TGT)));
    assert_eq!(out.portal_group, 1);
    let p = &out.params;
    assert_eq!(p.max_recv_data_segment_length, 262_144);
    assert_eq!(p.max_send_data_segment_length, 262_144);
    assert_eq!(
        (p.max_burst_length, p.first_burst_length),
        (262_144, 65_536)
    );
    assert!(p.initial_r2t && p.immediate_data);
    assert_eq!(p.error_recovery_level, 0);
    assert_eq!(p.default_time2retain, 0);
    assert_eq!(p.target_name.as_deref(), Some(TGT));
}

#[test]
fn normal_open_iscsi_no_auth() {
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::Default)));
    let step = h.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", OPEN_ISCSI),
            ("InitiatorAlias", "host1"),
            ("TargetName", TGT),
            ("SessionType", "Normal"),
            ("AuthMethod", "None"),
        ],
    );
    let pdu = continued(step);
    assert_header(&pdu, Some(OP), SEC, 0);
    assert_eq!(
        kv(&pdu),
        owned(&[("AuthMethod", "None"), ("TargetPortalGroupTag", "1")])
    );
    assert_eq!(h.login.stage(), LoginStage::Operational);

    let (pdu, out) = completed(h.send(OP, Some(FFP), OPEN_ISCSI_OPERATIONAL));
    assert_header(&pdu, Some(FFP), OP, FIRST_TSIH);
    assert_eq!(
        kv(&pdu),
        owned(&[
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("IFMarker", "No"),
            ("OFMarker", "No"),
            ("ErrorRecoveryLevel", "0"),
            ("InitialR2T", "Yes"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "1048576"),
            ("FirstBurstLength", "65536"),
            ("MaxOutstandingR2T", "1"),
            ("MaxConnections", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("MaxRecvDataSegmentLength", "262144"),
        ])
    );
    assert_eq!(out.params.max_burst_length, 1 << 20);
    assert_eq!(out.initiator_alias.as_deref(), Some("host1"));
}

/// libiscsi's CHAP exchange (lib/login.c): AuthMethod offer with T=1, CHAP_A with
/// T=0, then CHAP_N/CHAP_R (upper-case hex) with T=1.
fn chap_until_response(h: &mut Harness) -> LoginPdu {
    let pdu = continued(h.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", INI),
            ("TargetName", TGT),
            ("SessionType", "Normal"),
            ("AuthMethod", "CHAP,None"),
        ],
    ));
    // Authentication is not done: no transit.
    assert_header(&pdu, None, SEC, 0);
    assert_eq!(
        kv(&pdu),
        owned(&[("AuthMethod", "CHAP"), ("TargetPortalGroupTag", "1")])
    );
    let pdu = continued(h.send(SEC, None, &[("CHAP_A", "5")]));
    assert_header(&pdu, None, SEC, 0);
    assert_eq!(
        kv(&pdu),
        owned(&[("CHAP_A", "5"), ("CHAP_I", "77"), ("CHAP_C", CHALLENGE_HEX)])
    );
    pdu
}

fn libiscsi_chap_r(secret: &str) -> String {
    let c: Vec<u8> = (0u8..16).collect();
    encode_hex(&chap_md5(77, secret.as_bytes(), &c))
        .to_uppercase()
        .replacen("0X", "0x", 1)
}

#[test]
fn chap_one_way_success() {
    let mut h = Harness::new(chap_config(false));
    chap_until_response(&mut h);
    let r = libiscsi_chap_r(INI_SECRET);
    let pdu = continued(h.send(
        SEC,
        Some(OP),
        &[("CHAP_N", "libiscsi-user"), ("CHAP_R", &r)],
    ));
    assert_header(&pdu, Some(OP), SEC, 0);
    assert_eq!(kv(&pdu), owned(&[]));
    // libiscsi repeats InitiatorName, TargetName and SessionType here.
    let keys = libiscsi_operational("Normal");
    let (pdu, out) = completed(h.send(OP, Some(FFP), &keys));
    assert_header(&pdu, Some(FFP), OP, FIRST_TSIH);
    let mut expected = owned(LIBISCSI_NORMAL_ANSWER);
    expected.push(("MaxRecvDataSegmentLength".into(), "262144".into()));
    assert_eq!(kv(&pdu), expected);
    assert_eq!(
        out.auth,
        AuthOutcome {
            method: AuthMethod::Chap,
            chap_user: Some("libiscsi-user".into()),
            mutual: false,
            identity: Identity::Proven,
        }
    );
    assert_eq!(out.params.auth_method, AuthMethod::Chap);
}

#[test]
fn chap_with_per_target_account() {
    // tgt-style account on the target, no initiator context.
    let mut t = target_cfg(TargetAuth::Chap);
    t.chap = Some(ChapCredentials {
        user: "tuser".into(),
        secret: secret("per-target-secret"),
    });
    let mut h = Harness::new(config_with(t));
    chap_until_response(&mut h);
    let r = libiscsi_chap_r("per-target-secret");
    let pdu = continued(h.send(SEC, Some(OP), &[("CHAP_N", "tuser"), ("CHAP_R", &r)]));
    assert_header(&pdu, Some(OP), SEC, 0);
}

#[test]
fn chap_wrong_secret_reveals_nothing() {
    let mut h = Harness::new(chap_config(false));
    chap_until_response(&mut h);
    let r = libiscsi_chap_r("initiator-secret-2");
    let (wrong_secret, err) = failed(h.send(
        SEC,
        Some(OP),
        &[("CHAP_N", "libiscsi-user"), ("CHAP_R", &r)],
    ));
    assert_failure(&wrong_secret, LoginStatus::AUTHENTICATION_FAILURE);
    assert_eq!((err.status_class(), err.status_detail()), (2, 1));
    assert!(!err.to_string().contains("secret-"));
    assert_eq!(h.login.stage(), LoginStage::Failed);

    // An unknown user gets a byte-identical answer.
    let mut h2 = Harness::new(chap_config(false));
    chap_until_response(&mut h2);
    let r = libiscsi_chap_r(INI_SECRET);
    let (unknown_user, err) =
        failed(h2.send(SEC, Some(OP), &[("CHAP_N", "someone-else"), ("CHAP_R", &r)]));
    assert!(matches!(
        err,
        LoginError::Authentication(ChapError::UnknownUser(_))
    ));
    assert_eq!(wrong_secret, unknown_user);

    // The failed login stays failed.
    let (p, err) = failed(h.send(OP, Some(FFP), &libiscsi_operational("Normal")));
    assert_eq!(err, LoginError::Finished);
    assert_failure(&p, LoginStatus::INITIATOR_ERROR);
}

#[test]
fn chap_transit_without_response_fails() {
    let mut h = Harness::new(chap_config(false));
    chap_until_response(&mut h);
    let (p, err) = failed(h.send(SEC, Some(OP), &[]));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);
    assert_eq!(
        err,
        LoginError::Authentication(ChapError::Missing("CHAP_N"))
    );
}

#[test]
fn chap_mutual_with_our_initiator() {
    let mut h = Harness::new(chap_config(true));
    let challenge = chap_until_response(&mut h);
    let pairs = challenge.pairs().unwrap();
    let ini = InitiatorChap::new("libiscsi-user", secret(INI_SECRET))
        .with_mutual(Some(TGT.into()), secret(TGT_SECRET));
    let mut e = FixedEntropy::new(&[9, 0xee]);
    let (responded, answer) = ini.respond(&ChapKeys::from_pairs(&pairs), &mut e).unwrap();
    let answer: Vec<(&str, &str)> = answer.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        answer.iter().map(|p| p.0).collect::<Vec<_>>(),
        ["CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C"]
    );
    let pdu = continued(h.send(SEC, Some(OP), &answer));
    assert_header(&pdu, Some(OP), SEC, 0);
    let expected_r = encode_hex(&chap_md5(9, TGT_SECRET.as_bytes(), &[0xee, 9].repeat(8)));
    assert_eq!(kv(&pdu), owned(&[("CHAP_N", TGT), ("CHAP_R", &expected_r)]));
    responded
        .verify_target(&ChapKeys::from_pairs(&pdu.pairs().unwrap()))
        .unwrap();
    let (_, out) = completed(h.send(OP, Some(FFP), OPEN_ISCSI_OPERATIONAL));
    assert!(out.auth.mutual);
}

#[test]
fn chap_mutual_reflected_challenge() {
    let mut h = Harness::new(chap_config(true));
    chap_until_response(&mut h);
    let r = libiscsi_chap_r(INI_SECRET);
    let (p, err) = failed(h.send(
        SEC,
        Some(OP),
        &[
            ("CHAP_N", "libiscsi-user"),
            ("CHAP_R", &r),
            ("CHAP_I", "77"),
            ("CHAP_C", CHALLENGE_HEX),
        ],
    ));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);
    assert_eq!(
        err,
        LoginError::Authentication(ChapError::ReflectedChallenge)
    );
}

#[test]
fn chap_mutual_without_target_secret() {
    let mut h = Harness::new(chap_config(false));
    chap_until_response(&mut h);
    let r = libiscsi_chap_r(INI_SECRET);
    let (p, err) = failed(h.send(
        SEC,
        Some(OP),
        &[
            ("CHAP_N", "libiscsi-user"),
            ("CHAP_R", &r),
            ("CHAP_I", "1"),
            ("CHAP_C", "0x0123456789abcdef0123456789abcdef"),
        ],
    ));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);
    assert_eq!(
        err,
        LoginError::Authentication(ChapError::MutualNotConfigured)
    );
}

#[test]
fn chap_required_but_security_skipped() {
    let mut h = Harness::new(chap_config(false));
    let (p, err) = failed(h.send(OP, Some(FFP), &libiscsi_operational("Normal")));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);
    assert_eq!(err, LoginError::AuthenticationRequired);

    let mut h = Harness::new(chap_config(false));
    let (p, err) = failed(h.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", INI),
            ("TargetName", TGT),
            ("AuthMethod", "None"),
        ],
    ));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);
    assert_eq!(err, LoginError::AuthMethodRejected("None".into()));

    let mut h = Harness::new(chap_config(false));
    let (_, err) = failed(h.send(
        SEC,
        Some(OP),
        &[("InitiatorName", INI), ("TargetName", TGT)],
    ));
    assert_eq!(err, LoginError::AuthenticationRequired);
}

#[test]
fn chap_algorithm_not_offered() {
    let mut h = Harness::new(chap_config(false));
    continued(h.send(
        SEC,
        None,
        &[
            ("InitiatorName", INI),
            ("TargetName", TGT),
            ("AuthMethod", "CHAP"),
        ],
    ));
    let (p, err) = failed(h.send(SEC, None, &[("CHAP_A", "6,7")]));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);
    assert_eq!(
        err,
        LoginError::Authentication(ChapError::NoCommonAlgorithm)
    );
}

#[test]
fn chap_a_in_first_request_and_sha_offers() {
    // AuthMethod and CHAP_A together; newer open-iscsi offers SHA algorithms first.
    let mut h = Harness::new(chap_config(false));
    let pdu = continued(h.send(
        SEC,
        None,
        &[
            ("InitiatorName", INI),
            ("TargetName", TGT),
            ("AuthMethod", "CHAP"),
            ("CHAP_A", "8,7,6,5"),
        ],
    ));
    assert_eq!(
        kv(&pdu),
        owned(&[
            ("AuthMethod", "CHAP"),
            ("CHAP_A", "5"),
            ("CHAP_I", "77"),
            ("CHAP_C", CHALLENGE_HEX),
            ("TargetPortalGroupTag", "1"),
        ])
    );
}

#[test]
fn chap_keys_with_an_offer_that_resolves_to_none() {
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let pdu = continued(h.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", INI),
            ("TargetName", TGT),
            ("AuthMethod", "CHAP,None"),
            ("CHAP_A", "5"),
        ],
    ));
    assert_header(&pdu, Some(OP), SEC, 0);
    assert_eq!(
        kv(&pdu),
        owned(&[("AuthMethod", "None"), ("TargetPortalGroupTag", "1")])
    );
    // Later CHAP keys are out of place.
    let (p, err) = failed(h.send(OP, Some(FFP), &[("CHAP_N", "x")]));
    assert_failure(&p, LoginStatus::INITIATOR_ERROR);
    assert!(matches!(
        err,
        LoginError::BadKey(KeyError::WrongStage { .. })
    ));
}

#[test]
fn discovery_with_chap_from_defaults() {
    let mut cfg = chap_config(false);
    cfg.defaults.auth = AuthPolicy::Chap;
    let mut h = Harness::new(cfg);
    let pdu = continued(h.send(
        SEC,
        Some(FFP),
        &[
            ("InitiatorName", INI),
            ("SessionType", "Discovery"),
            ("AuthMethod", "CHAP,None"),
        ],
    ));
    assert_eq!(kv(&pdu), owned(&[("AuthMethod", "CHAP")]));
    continued(h.send(SEC, None, &[("CHAP_A", "5")]));
    let r = libiscsi_chap_r(INI_SECRET);
    let (pdu, out) = completed(h.send(
        SEC,
        Some(FFP),
        &[("CHAP_N", "libiscsi-user"), ("CHAP_R", &r)],
    ));
    assert_header(&pdu, Some(FFP), SEC, FIRST_TSIH);
    assert_eq!(out.session_type, SessionType::Discovery);
    assert_eq!(out.auth.chap_user.as_deref(), Some("libiscsi-user"));
}

#[test]
fn unknown_target() {
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let (p, err) = failed(h.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", INI),
            ("TargetName", "iqn.2026-11.org.rstmf:nope"),
            ("AuthMethod", "None"),
        ],
    ));
    assert_failure(&p, LoginStatus::NOT_FOUND);
    assert_eq!((err.status_class(), err.status_detail()), (2, 3));
    assert_header_ids(&p, SEC);

    // Case does not matter: names are normalized.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let upper = TGT.to_uppercase();
    continued(h.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", INI),
            ("TargetName", &upper),
            ("AuthMethod", "None"),
        ],
    ));

    // A malformed name cannot be one of ours.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let (p, _) = failed(h.send(
        SEC,
        Some(OP),
        &[("InitiatorName", INI), ("TargetName", "disk1")],
    ));
    assert_failure(&p, LoginStatus::NOT_FOUND);
}

fn assert_header_ids(p: &LoginPdu, csg: Stage) {
    assert_eq!(p.header.isid, ISID);
    assert_eq!(p.header.itt, ITT);
    assert_eq!(p.header.tsih, 0);
    assert_eq!(p.header.csg, csg);
    assert_eq!(p.header.sn.stat_sn, 0x100);
}

#[test]
fn target_not_on_this_portal_group() {
    let mut t = target_cfg(TargetAuth::None);
    t.tpg_tags = vec![2];
    let mut cfg = config_with(t);
    cfg.tpgs.push(crate::config::Tpg {
        name: "a".into(),
        tag: 2,
        portals: vec!["10.0.0.1:3260".parse().unwrap()],
    });
    cfg.validate().unwrap();
    let mut h = Harness::new(cfg.clone());
    let (p, err) = failed(h.send(OP, Some(FFP), &libiscsi_operational("Normal")));
    assert_failure(&p, LoginStatus::NOT_FOUND);
    assert!(matches!(err, LoginError::NotOnThisPortal { tag: 1, .. }));
    // Through portal group 2 it works, and the tag is announced.
    let settings = LoginSettings {
        portal_group: 2,
        ..LoginSettings::default()
    };
    let mut h = Harness::with_settings(cfg, settings);
    let (p, out) = completed(h.send(OP, Some(FFP), &libiscsi_operational("Normal")));
    assert!(kv(&p).contains(&("TargetPortalGroupTag".into(), "2".into())));
    assert_eq!(out.portal_group, 2);
}

#[test]
fn target_not_allowed() {
    let mut t = target_cfg(TargetAuth::None);
    t.acl = vec![name("iqn.1994-05.com.redhat:allowed")];
    let mut h = Harness::new(config_with(t));
    let (p, err) = failed(h.send(OP, Some(FFP), &libiscsi_operational("Normal")));
    assert_failure(&p, LoginStatus::AUTHORIZATION_FAILURE);
    assert_eq!((err.status_class(), err.status_detail()), (2, 2));

    // A closure policy (the later stmf view hook) is consulted too.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let deny = |_: &IscsiName, _: &TargetConfig| false;
    let mut env = LoginEnv {
        config: &h.cfg,
        access: &deny,
        host: &mut h.host,
    };
    let req = LoginRequest {
        transit: true,
        cont: false,
        csg: OP,
        nsg: FFP,
        version_max: 0,
        version_min: 0,
        isid: ISID,
        tsih: 0,
        itt: ITT,
        cid: 0,
        cmd_sn: 0,
        exp_stat_sn: 0,
    };
    let step = h.login.handle(
        &mut env,
        &req,
        &encode(&libiscsi_operational("Normal")),
        TargetSn::default(),
    );
    assert_eq!(step.pdu().header.status, LoginStatus::AUTHORIZATION_FAILURE);
}

#[test]
fn missing_parameters() {
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let (p, err) = failed(h.send(
        SEC,
        Some(OP),
        &[("InitiatorName", INI), ("AuthMethod", "None")],
    ));
    assert_failure(&p, LoginStatus::MISSING_PARAMETER);
    assert_eq!(err, LoginError::MissingParameter("TargetName"));
    assert_eq!((err.status_class(), err.status_detail()), (2, 7));

    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let (p, err) = failed(h.send(
        SEC,
        Some(OP),
        &[("TargetName", TGT), ("AuthMethod", "None")],
    ));
    assert_failure(&p, LoginStatus::MISSING_PARAMETER);
    assert_eq!(err, LoginError::MissingParameter("InitiatorName"));

    // Discovery sessions need no TargetName.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    completed(h.send(
        SEC,
        Some(FFP),
        &[("InitiatorName", INI), ("SessionType", "Discovery")],
    ));
}

#[test]
fn unsupported_version() {
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let mut req = h.req(SEC, Some(OP), false);
    req.version_min = 1;
    req.version_max = 2;
    let (p, err) = failed(h.raw(req, &encode(&[("InitiatorName", INI), ("TargetName", TGT)])));
    assert_failure(&p, LoginStatus::UNSUPPORTED_VERSION);
    assert_eq!((err.status_class(), err.status_detail()), (2, 5));
    assert_eq!((p.header.version_max, p.header.version_active), (0, 0));
}

#[test]
fn bad_session_type() {
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let (p, _) = failed(h.send(
        SEC,
        Some(OP),
        &[("InitiatorName", INI), ("SessionType", "Boot")],
    ));
    assert_failure(&p, LoginStatus::SESSION_TYPE_NOT_SUPPORTED);
}

#[test]
fn target_offline_or_removed() {
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    h.host.states.insert(name(TGT), TargetState::Offline);
    let (p, _) = failed(h.send(OP, Some(FFP), &libiscsi_operational("Normal")));
    assert_failure(&p, LoginStatus::SERVICE_UNAVAILABLE);

    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    h.host.states.insert(name(TGT), TargetState::Removed);
    let (p, _) = failed(h.send(OP, Some(FFP), &libiscsi_operational("Normal")));
    assert_failure(&p, LoginStatus::TARGET_REMOVED);
}

#[test]
fn out_of_tsih() {
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    h.host.next_tsih = None;
    let (p, err) = failed(h.send(OP, Some(FFP), &libiscsi_operational("Normal")));
    assert_failure(&p, LoginStatus::OUT_OF_RESOURCES);
    assert_eq!((err.status_class(), err.status_detail()), (3, 2));
}

fn session_key() -> SessionKey {
    SessionKey {
        initiator: name(INI),
        isid: ISID,
        target: Some(name(TGT)),
        portal_group: 1,
    }
}

#[test]
fn session_reinstatement() {
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    h.host.sessions.push((
        0x0777,
        ExistingSession {
            key: session_key(),
            max_connections: 1,
            cids: vec![0],
            identity: Identity::Trusted,
        },
    ));
    let (p, out) = completed(h.send(OP, Some(FFP), &libiscsi_operational("Normal")));
    assert_eq!(p.header.tsih, FIRST_TSIH);
    assert_eq!(
        out.disposition,
        SessionDisposition::Reinstate { old_tsih: 0x0777 }
    );
    assert_eq!(out.tsih, FIRST_TSIH);
}

#[test]
fn add_connection_and_connection_reinstatement() {
    let existing = ExistingSession {
        key: session_key(),
        max_connections: 2,
        cids: vec![0],
        identity: Identity::Trusted,
    };
    let op_keys = [
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("MaxRecvDataSegmentLength", "65536"),
    ];
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    h.host.sessions.push((0x0777, existing.clone()));
    h.tsih = 0x0777;
    h.cid = 1;
    let mut keys = vec![("InitiatorName", INI), ("TargetName", TGT)];
    keys.extend(op_keys);
    let (p, out) = completed(h.send(OP, Some(FFP), &keys));
    assert_header(&p, Some(FFP), OP, 0x0777);
    assert_eq!(out.disposition, SessionDisposition::AddConnection);
    assert_eq!((out.tsih, out.cid), (0x0777, 1));
    assert_eq!(out.params.max_send_data_segment_length, 65_536);

    // Same CID: connection reinstatement.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    h.host.sessions.push((0x0777, existing.clone()));
    h.tsih = 0x0777;
    let (_, out) = completed(h.send(OP, Some(FFP), &keys));
    assert_eq!(out.disposition, SessionDisposition::ReinstateConnection);

    // Leading-only keys are not allowed on a non-leading connection.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    h.host.sessions.push((0x0777, existing.clone()));
    h.tsih = 0x0777;
    h.cid = 1;
    let (p, err) = failed(h.send(
        OP,
        Some(FFP),
        &[
            ("InitiatorName", INI),
            ("TargetName", TGT),
            ("MaxBurstLength", "65536"),
        ],
    ));
    assert_failure(&p, LoginStatus::INITIATOR_ERROR);
    assert!(matches!(err, LoginError::BadKey(KeyError::NotLeading(_))));

    // Full session.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    h.host.sessions.push((
        0x0777,
        ExistingSession {
            max_connections: 1,
            ..existing.clone()
        },
    ));
    h.tsih = 0x0777;
    h.cid = 1;
    let (p, _) = failed(h.send(OP, Some(FFP), &keys));
    assert_failure(&p, LoginStatus::TOO_MANY_CONNECTIONS);

    // Unknown TSIH, or a TSIH of another nexus.
    for (tsih, sessions) in [
        (0x0888, vec![]),
        (
            0x0777,
            vec![(
                0x0777,
                ExistingSession {
                    key: SessionKey {
                        isid: Isid([0; 6]),
                        ..session_key()
                    },
                    ..existing.clone()
                },
            )],
        ),
    ] {
        let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
        h.host.sessions = sessions;
        h.tsih = tsih;
        let (p, err) = failed(h.send(OP, Some(FFP), &keys));
        assert_failure(&p, LoginStatus::SESSION_DOES_NOT_EXIST);
        assert_eq!(err, LoginError::SessionDoesNotExist(tsih));
        assert_eq!(p.header.tsih, tsih);
    }
}

#[test]
fn continuation_across_pdus() {
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let text = encode(&libiscsi_operational("Normal"));
    // Split in three, the first cut inside a key name.
    let cuts = [0, 17, 200, text.len()];
    for w in cuts.windows(2).take(2) {
        let req = h.req(OP, None, true);
        let pdu = continued(h.raw(req, &text[w[0]..w[1]]));
        assert_header(&pdu, None, OP, 0);
        assert!(pdu.data.is_empty());
    }
    let req = h.req(OP, Some(FFP), false);
    let (pdu, _) = completed(h.raw(req, &text[200..]));
    let mut expected = owned(LIBISCSI_NORMAL_ANSWER);
    expected.extend(owned(&[
        ("TargetPortalGroupTag", "1"),
        ("MaxRecvDataSegmentLength", "262144"),
    ]));
    assert_eq!(kv(&pdu), expected);
}

#[test]
fn long_request_and_long_response() {
    // 500 private keys: the request needs C-bit parts, and the answer
    // (500 × NotUnderstood) is longer than 8192 bytes.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let names: Vec<String> = (0..500)
        .map(|i| format!("X-org.example.Key{i:04}"))
        .collect();
    let mut keys: Vec<(&str, &str)> = vec![("InitiatorName", INI), ("TargetName", TGT)];
    keys.extend(names.iter().map(|n| (n.as_str(), "1")));
    let text = encode(&keys);
    assert!(text.len() > LOGIN_SEGMENT_LIMIT);
    let mut parts = text.chunks(LOGIN_SEGMENT_LIMIT).peekable();
    let mut last = None;
    while let Some(part) = parts.next() {
        let more = parts.peek().is_some();
        let req = h.req(OP, if more { None } else { Some(FFP) }, more);
        last = Some(h.raw(req, part));
        if more {
            assert!(continued(last.take().unwrap()).data.is_empty());
        }
    }
    // The answer comes in 8192-byte parts with C=1, no transit and TSIH 0, each
    // pulled by an empty request; the last part transits.
    let mut answer = Vec::new();
    let mut step = last.unwrap();
    let mut parts = 0;
    let (last, out) = loop {
        match step {
            LoginStep::Continue(p) => {
                assert!(p.header.cont && !p.header.transit);
                assert_eq!(p.data.len(), LOGIN_SEGMENT_LIMIT);
                assert_eq!(p.header.tsih, 0);
                answer.extend_from_slice(&p.data);
                parts += 1;
                let req = h.req(OP, None, false);
                step = h.raw(req, &[]);
            }
            other => break completed(other),
        }
    };
    assert_eq!(parts, 2);
    assert_header(&last, Some(FFP), OP, FIRST_TSIH);
    answer.extend_from_slice(&last.data);
    let pairs = text::parse(&answer).unwrap();
    assert_eq!(pairs.len(), 502);
    assert_eq!(pairs[0], ("X-org.example.Key0000", "NotUnderstood"));
    assert_eq!(pairs[499], ("X-org.example.Key0499", "NotUnderstood"));
    assert_eq!(pairs[500], ("TargetPortalGroupTag", "1"));
    assert_eq!(out.tsih, FIRST_TSIH);

    // A non-empty request while the answer is pending is an error.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    for (i, part) in text.chunks(LOGIN_SEGMENT_LIMIT).enumerate() {
        let more = i == 0;
        let req = h.req(OP, if more { None } else { Some(FFP) }, more);
        h.raw(req, part);
    }
    let (p, _) = failed(h.send(OP, Some(FFP), &[("HeaderDigest", "None")]));
    assert_failure(&p, LoginStatus::INITIATOR_ERROR);
}

#[test]
fn target_offers_keys_the_initiator_left_out() {
    let settings = LoginSettings {
        local: LocalConfig {
            initial_r2t: false,
            immediate_data: false,
            max_burst_length: 65_536,
            first_burst_length: 16_384,
            ..default_local_config()
        },
        ..LoginSettings::default()
    };
    let mut h = Harness::with_settings(config_with(target_cfg(TargetAuth::None)), settings.clone());
    let pdu = continued(h.send(
        OP,
        Some(FFP),
        &[
            ("InitiatorName", INI),
            ("TargetName", TGT),
            ("HeaderDigest", "None"),
            ("InitialR2T", "No"),
        ],
    ));
    // No transit: the target waits for answers to its offers.
    assert_header(&pdu, None, OP, 0);
    assert_eq!(
        kv(&pdu),
        owned(&[
            ("HeaderDigest", "None"),
            ("InitialR2T", "No"),
            ("TargetPortalGroupTag", "1"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("ImmediateData", "No"),
            ("MaxBurstLength", "65536"),
            ("FirstBurstLength", "16384"),
        ])
    );
    let (pdu, out) = completed(h.send(
        OP,
        Some(FFP),
        &[
            ("ImmediateData", "No"),
            ("MaxBurstLength", "32768"),
            ("FirstBurstLength", "16384"),
        ],
    ));
    assert_header(&pdu, Some(FFP), OP, FIRST_TSIH);
    assert_eq!(kv(&pdu), owned(&[]));
    let p = &out.params;
    assert!(!p.immediate_data && !p.initial_r2t);
    assert_eq!((p.max_burst_length, p.first_burst_length), (32_768, 16_384));

    // Leaving without answering is refused.
    let mut h = Harness::with_settings(config_with(target_cfg(TargetAuth::None)), settings.clone());
    continued(h.send(
        OP,
        Some(FFP),
        &[("InitiatorName", INI), ("TargetName", TGT)],
    ));
    let (p, err) = failed(h.send(OP, Some(FFP), &[]));
    assert_failure(&p, LoginStatus::INITIATOR_ERROR);
    assert!(matches!(err, LoginError::UnansweredOffer(_)));

    // An answer the rule does not allow (Minimum: larger than offered).
    let mut h = Harness::with_settings(config_with(target_cfg(TargetAuth::None)), settings);
    continued(h.send(
        OP,
        Some(FFP),
        &[("InitiatorName", INI), ("TargetName", TGT)],
    ));
    let (p, _) = failed(h.send(
        OP,
        Some(FFP),
        &[
            ("ImmediateData", "No"),
            ("MaxBurstLength", "131072"),
            ("FirstBurstLength", "16384"),
        ],
    ));
    assert_failure(&p, LoginStatus::INITIATOR_ERROR);
}

#[test]
fn digest_policy_lowers_nsg() {
    let settings = LoginSettings {
        local: LocalConfig {
            header_digests: &[Digest::Crc32c],
            ..default_local_config()
        },
        ..LoginSettings::default()
    };
    let mut h = Harness::with_settings(config_with(target_cfg(TargetAuth::None)), settings);
    let pdu = continued(h.send(
        SEC,
        Some(FFP),
        &[
            ("InitiatorName", INI),
            ("SessionType", "Discovery"),
            ("AuthMethod", "None"),
        ],
    ));
    // The target goes through the operational stage to ask for CRC32C.
    assert_header(&pdu, Some(OP), SEC, 0);
    let pdu = continued(h.send(OP, Some(FFP), &[]));
    assert_eq!(
        kv(&pdu),
        owned(&[
            ("MaxRecvDataSegmentLength", "262144"),
            ("HeaderDigest", "CRC32C")
        ])
    );
    let (_, out) = completed(h.send(OP, Some(FFP), &[("HeaderDigest", "CRC32C")]));
    assert_eq!(out.params.header_digest, Digest::Crc32c);
}

#[test]
fn protocol_violations() {
    // ISID changes between requests.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    continued(h.send(SEC, None, &[("InitiatorName", INI), ("TargetName", TGT)]));
    let mut req = h.req(SEC, Some(OP), false);
    req.isid = Isid([1; 6]);
    let (p, err) = failed(h.raw(req, &[]));
    assert_failure(&p, LoginStatus::INITIATOR_ERROR);
    assert_eq!(err, LoginError::HeaderChanged("ISID"));

    // Stage jumps back / wrong CSG.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    continued(h.send(
        SEC,
        Some(OP),
        &[("InitiatorName", INI), ("TargetName", TGT)],
    ));
    let (_, err) = failed(h.send(SEC, Some(OP), &[]));
    assert_eq!(
        err,
        LoginError::UnexpectedStage {
            got: SEC,
            expected: OP
        }
    );

    // A redeclared TargetName with another value.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    continued(h.send(
        SEC,
        Some(OP),
        &[("InitiatorName", INI), ("TargetName", TGT)],
    ));
    let (_, err) = failed(h.send(
        OP,
        Some(FFP),
        &[("TargetName", "iqn.2026-11.org.rstmf:other")],
    ));
    assert_eq!(err, LoginError::DeclarationChanged("TargetName"));

    // Security keys in the operational stage, operational keys in the security stage.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    continued(h.send(
        SEC,
        Some(OP),
        &[("InitiatorName", INI), ("TargetName", TGT)],
    ));
    let (_, err) = failed(h.send(OP, Some(FFP), &[("AuthMethod", "None")]));
    assert!(matches!(
        err,
        LoginError::BadKey(KeyError::WrongStage { .. })
    ));
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let (_, err) = failed(h.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", INI),
            ("TargetName", TGT),
            ("MaxBurstLength", "65536"),
        ],
    ));
    assert!(matches!(
        err,
        LoginError::BadKey(KeyError::WrongStage { .. })
    ));

    // Target-only keys from the initiator; answer constants as offers; duplicates.
    for keys in [
        vec![("TargetPortalGroupTag", "1")],
        vec![("HeaderDigest", "Reject")],
        vec![("HeaderDigest", "None"), ("HeaderDigest", "None")],
    ] {
        let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
        let mut all = vec![("InitiatorName", INI), ("TargetName", TGT)];
        all.extend(keys);
        let (p, _) = failed(h.send(OP, Some(FFP), &all));
        assert_failure(&p, LoginStatus::INITIATOR_ERROR);
    }

    // AuthMethod offered twice.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    continued(h.send(
        SEC,
        None,
        &[
            ("InitiatorName", INI),
            ("TargetName", TGT),
            ("AuthMethod", "None"),
        ],
    ));
    let (p, err) = failed(h.send(SEC, Some(OP), &[("AuthMethod", "None")]));
    assert_failure(&p, LoginStatus::INITIATOR_ERROR);
    assert_eq!(
        err,
        LoginError::BadKey(KeyError::Renegotiated("AuthMethod".into()))
    );

    // A malformed InitiatorName.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let (p, err) = failed(h.send(
        SEC,
        Some(OP),
        &[("InitiatorName", "host one"), ("TargetName", TGT)],
    ));
    assert_failure(&p, LoginStatus::INITIATOR_ERROR);
    assert!(matches!(err, LoginError::BadInitiatorName(_)));
}

#[test]
fn non_login_pdu_and_garbage() {
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    continued(h.send(SEC, None, &[("InitiatorName", INI), ("TargetName", TGT)]));
    let nop = Pdu::NopOut(idm::pdu::NopOut {
        itt: 5,
        ..Default::default()
    });
    let mut env = LoginEnv {
        config: &h.cfg,
        access: &AclPolicy,
        host: &mut h.host,
    };
    let step = h.login.handle_pdu(&mut env, &nop, &[], TargetSn::default());
    let (p, err) = failed(step);
    assert_failure(&p, LoginStatus::INVALID_DURING_LOGIN);
    assert_eq!(err, LoginError::InvalidDuringLogin(Opcode::NopOut));
    assert_eq!((p.header.isid, p.header.itt), (ISID, 5));

    // Login header with T and C both set does not parse: initiator error.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let mut bhs = Pdu::LoginRequest(h.req(SEC, Some(OP), false)).to_bytes();
    bhs[1] |= 0x40;
    let mut env = LoginEnv {
        config: &h.cfg,
        access: &AclPolicy,
        host: &mut h.host,
    };
    let (p, err) = failed(
        h.login
            .handle_bytes(&mut env, &bhs, &[], TargetSn::default()),
    );
    assert_failure(&p, LoginStatus::INITIATOR_ERROR);
    assert!(matches!(err, LoginError::BadPdu(_)));
    assert_eq!((p.header.isid, p.header.itt), (ISID, ITT));

    // A valid Login Request through the raw entry point works.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let bhs = Pdu::LoginRequest(h.req(SEC, Some(FFP), false)).to_bytes();
    let data = encode(&[("InitiatorName", INI), ("SessionType", "Discovery")]);
    let mut env = LoginEnv {
        config: &h.cfg,
        access: &AclPolicy,
        host: &mut h.host,
    };
    completed(
        h.login
            .handle_bytes(&mut env, &bhs, &data, TargetSn::default()),
    );

    // Malformed text.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let req = h.req(SEC, Some(OP), false);
    let (p, err) = failed(h.raw(req, b"InitiatorName=iqn.x"));
    assert_failure(&p, LoginStatus::INITIATOR_ERROR);
    assert!(matches!(err, LoginError::BadText(_)));
}

#[test]
fn every_error_has_one_status() {
    use LoginError as E;
    let n = name(TGT);
    let cases: Vec<(LoginError, u16)> = vec![
        (E::Protocol("x"), 0x0200),
        (
            E::Authentication(ChapError::BadResponse("u".into())),
            0x0201,
        ),
        (E::Authentication(ChapError::Entropy(EntropyError)), 0x0300),
        (E::Throttled, 0x0201),
        (
            E::TakeoverRefused {
                tsih: 1,
                old: Identity::Proven,
                new: Identity::SharedSecret,
            },
            0x0201,
        ),
        (
            E::NotAuthorized {
                initiator: n.clone(),
                target: n.clone(),
            },
            0x0202,
        ),
        (E::TargetNotFound("x".into()), 0x0203),
        (E::TargetRemoved(n.clone()), 0x0204),
        (E::UnsupportedVersion { min: 1, max: 1 }, 0x0205),
        (E::TooManyConnections { tsih: 1 }, 0x0206),
        (E::MissingParameter("TargetName"), 0x0207),
        (E::SessionTypeNotSupported("x".into()), 0x0209),
        (E::SessionDoesNotExist(1), 0x020a),
        (E::InvalidDuringLogin(Opcode::ScsiCommand), 0x020b),
        (E::Internal("x"), 0x0300),
        (E::ServiceUnavailable(n), 0x0301),
        (E::OutOfResources, 0x0302),
    ];
    for (e, code) in cases {
        let got = u16::from(e.status_class()) << 8 | u16::from(e.status_detail());
        assert_eq!(got, code, "{e}");
    }
}

// ---- identity, throttling, RFC 7143 text rules -----------------------------------------

const SHARED_USER: &str = "tuser";
const SHARED_SECRET: &str = "per-target-secret";

/// A CHAP target with a shared (target) account, and [`INI`] with its own context.
fn shared_and_own_config(acl: &[&str]) -> IscsitConfig {
    let mut t = target_cfg(TargetAuth::Chap);
    t.chap = Some(ChapCredentials {
        user: SHARED_USER.into(),
        secret: secret(SHARED_SECRET),
    });
    t.acl = acl.iter().map(|a| name(a)).collect();
    let mut cfg = config_with(t);
    cfg.initiators.push(InitiatorContext {
        name: name(INI),
        chap_user: Some("libiscsi-user".into()),
        chap_secret: Some(secret(INI_SECRET)),
    });
    cfg.validate().unwrap();
    cfg
}

/// A libiscsi-style CHAP login of `initiator` answered with (`user`, `secret`); the
/// last step.
fn chap_login(h: &mut Harness, initiator: &str, user: &str, secret: &str) -> LoginStep {
    continued(h.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", initiator),
            ("TargetName", TGT),
            ("SessionType", "Normal"),
            ("AuthMethod", "CHAP,None"),
        ],
    ));
    continued(h.send(SEC, None, &[("CHAP_A", "5")]));
    let r = libiscsi_chap_r(secret);
    h.send(SEC, Some(OP), &[("CHAP_N", user), ("CHAP_R", &r)])
}

/// Finishes a login that left the security stage.
fn operational(h: &mut Harness, initiator: &str) -> LoginStep {
    let mut keys = libiscsi_operational("Normal");
    keys[0] = ("InitiatorName", initiator);
    h.send(OP, Some(FFP), &keys)
}

#[test]
fn the_target_secret_cannot_claim_a_name_that_has_its_own_secret() {
    // The impostor knows the target-wide secret and claims INI, which has a context.
    let mut h = Harness::new(shared_and_own_config(&[]));
    let (p, err) = failed(chap_login(&mut h, INI, SHARED_USER, SHARED_SECRET));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);
    assert_eq!(
        (p.header.status.class, p.header.status.detail),
        (0x02, 0x01)
    );
    assert_eq!(
        err,
        LoginError::Authentication(ChapError::UnknownUser(SHARED_USER.into()))
    );
    // The failure is reported (name and user as claimed, no secret) for the throttle.
    assert_eq!(
        h.host.failures,
        [(INI.to_string(), Some(SHARED_USER.to_string()))]
    );
    // Even with INI's own CHAP user name, the shared secret does not prove INI.
    let mut h = Harness::new(shared_and_own_config(&[]));
    let (p, _) = failed(chap_login(&mut h, INI, "libiscsi-user", SHARED_SECRET));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);

    // INI with its own secret: proven.
    let mut h = Harness::new(shared_and_own_config(&[]));
    continued(chap_login(&mut h, INI, "libiscsi-user", INI_SECRET));
    let (_, out) = completed(operational(&mut h, INI));
    assert_eq!(out.auth.identity, Identity::Proven);
    assert_eq!(h.host.successes, [Identity::Proven]);

    // A name without a context may use the shared account: it gets in, unproven.
    let mut h = Harness::new(shared_and_own_config(&[]));
    continued(chap_login(&mut h, OPEN_ISCSI, SHARED_USER, SHARED_SECRET));
    let (_, out) = completed(operational(&mut h, OPEN_ISCSI));
    assert_eq!(out.auth.identity, Identity::SharedSecret);
    assert_eq!(out.initiator_name, name(OPEN_ISCSI));
    assert!(h.host.failures.is_empty());

    // Without authentication, names are trusted.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let (_, out) = completed(h.send(OP, Some(FFP), &libiscsi_operational("Normal")));
    assert_eq!(out.auth.identity, Identity::Trusted);
}

#[test]
fn acl_entries_admit_only_proven_names() {
    let cfg = shared_and_own_config(&[INI, OPEN_ISCSI]);
    // OPEN_ISCSI is in the ACL but has no context: the shared secret does not prove
    // it, so the ACL entry does not apply (0x0202 after CHAP, no keys).
    let mut h = Harness::new(cfg.clone());
    let (p, err) = failed(chap_login(&mut h, OPEN_ISCSI, SHARED_USER, SHARED_SECRET));
    assert_failure(&p, LoginStatus::AUTHORIZATION_FAILURE);
    assert_eq!(
        (p.header.status.class, p.header.status.detail),
        (0x02, 0x02)
    );
    assert!(matches!(err, LoginError::NotAuthorized { .. }));
    // INI proves its name: admitted.
    let mut h = Harness::new(cfg);
    continued(chap_login(&mut h, INI, "libiscsi-user", INI_SECRET));
    completed(operational(&mut h, INI));
    // A name outside the ACL is refused before any CHAP.
    let mut h = Harness::new(shared_and_own_config(&[INI]));
    let (p, _) = failed(h.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", OPEN_ISCSI),
            ("TargetName", TGT),
            ("AuthMethod", "CHAP"),
        ],
    ));
    assert_failure(&p, LoginStatus::AUTHORIZATION_FAILURE);
    assert_eq!(h.host.random_calls, 0, "no challenge was made");
}

fn existing(identity: Identity, initiator: &str, max_connections: u16) -> ExistingSession {
    ExistingSession {
        key: SessionKey {
            initiator: name(initiator),
            ..session_key()
        },
        max_connections,
        cids: vec![0],
        identity,
    }
}

#[test]
fn a_proven_session_is_taken_over_only_by_a_login_that_proves_the_name() {
    // The old session of OPEN_ISCSI was proven by a context that was deleted since; a
    // login with the shared secret may not reinstate (kick) it.
    let cfg = shared_and_own_config(&[]);
    let mut h = Harness::new(cfg.clone());
    h.host
        .sessions
        .push((0x0777, existing(Identity::Proven, OPEN_ISCSI, 1)));
    continued(chap_login(&mut h, OPEN_ISCSI, SHARED_USER, SHARED_SECRET));
    let (p, err) = failed(operational(&mut h, OPEN_ISCSI));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);
    assert_eq!(
        err,
        LoginError::TakeoverRefused {
            tsih: 0x0777,
            old: Identity::Proven,
            new: Identity::SharedSecret
        }
    );
    // Nor by a login to a target that stopped asking for authentication.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    h.host
        .sessions
        .push((0x0777, existing(Identity::Proven, INI, 1)));
    let (p, err) = failed(h.send(OP, Some(FFP), &libiscsi_operational("Normal")));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);
    assert!(matches!(err, LoginError::TakeoverRefused { .. }));

    // The same name proven again reinstates it.
    let mut h = Harness::new(cfg.clone());
    h.host
        .sessions
        .push((0x0777, existing(Identity::Proven, INI, 1)));
    continued(chap_login(&mut h, INI, "libiscsi-user", INI_SECRET));
    let (_, out) = completed(operational(&mut h, INI));
    assert_eq!(
        out.disposition,
        SessionDisposition::Reinstate { old_tsih: 0x0777 }
    );

    // Shared-secret sessions are one principal: reinstated by a shared-secret login and
    // by a proven one.
    for (who, user, sec) in [
        (OPEN_ISCSI, SHARED_USER, SHARED_SECRET),
        (INI, "libiscsi-user", INI_SECRET),
    ] {
        let mut h = Harness::new(cfg.clone());
        h.host
            .sessions
            .push((0x0777, existing(Identity::SharedSecret, who, 1)));
        continued(chap_login(&mut h, who, user, sec));
        let (_, out) = completed(operational(&mut h, who));
        assert_eq!(
            out.disposition,
            SessionDisposition::Reinstate { old_tsih: 0x0777 },
            "{who}"
        );
    }
}

#[test]
fn a_connection_joins_a_proven_session_only_by_proving_the_name() {
    let cfg = shared_and_own_config(&[]);
    let mut h = Harness::new(cfg.clone());
    h.host
        .sessions
        .push((0x0777, existing(Identity::Proven, OPEN_ISCSI, 2)));
    h.tsih = 0x0777;
    h.cid = 1;
    continued(chap_login(&mut h, OPEN_ISCSI, SHARED_USER, SHARED_SECRET));
    let (p, err) = failed(h.send(OP, Some(FFP), &[("HeaderDigest", "None")]));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);
    assert_eq!(p.header.tsih, 0x0777);
    assert!(matches!(
        err,
        LoginError::TakeoverRefused { tsih: 0x0777, .. }
    ));
    // Proving it: the connection joins.
    let mut h = Harness::new(cfg);
    h.host
        .sessions
        .push((0x0777, existing(Identity::Proven, INI, 2)));
    h.tsih = 0x0777;
    h.cid = 1;
    continued(chap_login(&mut h, INI, "libiscsi-user", INI_SECRET));
    let (_, out) = completed(h.send(OP, Some(FFP), &[("HeaderDigest", "None")]));
    assert_eq!(out.disposition, SessionDisposition::AddConnection);
}

#[test]
fn a_throttled_source_costs_a_look_up() {
    // Refused at the first request: the text (here not even valid) is never parsed and
    // no challenge is made.
    let mut h = Harness::new(chap_config(false));
    h.host.throttled = true;
    let req = h.req(SEC, Some(OP), false);
    let (p, err) = failed(h.raw(req, b"garbage without NUL"));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);
    assert_eq!(err, LoginError::Throttled);
    assert_eq!((h.host.throttle_checks, h.host.random_calls), (1, 0));
    assert_header_ids(&p, SEC);

    // Throttled between challenge and response: refused without computing CHAP, and
    // not counted as a failed guess.
    let mut h = Harness::new(chap_config(false));
    chap_until_response(&mut h);
    h.host.throttled = true;
    let r = libiscsi_chap_r(INI_SECRET);
    let (p, err) = failed(h.send(
        SEC,
        Some(OP),
        &[("CHAP_N", "libiscsi-user"), ("CHAP_R", &r)],
    ));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);
    assert_eq!(err, LoginError::Throttled);
    assert!(h.host.failures.is_empty() && h.host.successes.is_empty());

    // Only verifications count: refusing AuthMethod=None is not a guess.
    let mut h = Harness::new(chap_config(false));
    failed(h.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", INI),
            ("TargetName", TGT),
            ("AuthMethod", "None"),
        ],
    ));
    assert!(h.host.failures.is_empty());
    // A wrong secret is one failure.
    let mut h = Harness::new(chap_config(false));
    failed(chap_login(&mut h, INI, "libiscsi-user", "wrong-secret-000"));
    assert_eq!(h.host.failures.len(), 1);
}

#[test]
fn a_text_split_anywhere_across_pdus_is_the_same_text() {
    let keys = [
        ("InitiatorName", INI),
        ("TargetName", TGT),
        ("SessionType", "Normal"),
        ("AuthMethod", "None"),
    ];
    let text = encode(&keys);
    let mut whole = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let expected = continued(whole.send(SEC, Some(OP), &keys));
    for cut in 1..text.len() {
        let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
        let req = h.req(SEC, None, true);
        let ack = continued(h.raw(req, &text[..cut]));
        // The answer to C=1: empty, T=0, C=0, same stage, TSIH 0, success.
        assert_header(&ack, None, SEC, 0);
        assert!(ack.data.is_empty(), "cut {cut}");
        let req = h.req(SEC, Some(OP), false);
        let pdu = continued(h.raw(req, &text[cut..]));
        assert_eq!(kv(&pdu), kv(&expected), "cut {cut}");
        assert_header(&pdu, Some(OP), SEC, 0);
        // The settings were chosen from the whole TargetName, not from the first part.
        assert_eq!(h.host.settings_for, [Some(name(TGT))], "cut {cut}");
    }
    // Three parts, cuts inside a key name and inside a value.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let (a, b) = (5, text.len() - 7);
    for (part, cont) in [(&text[..a], true), (&text[a..b], true)] {
        let req = h.req(SEC, None, cont);
        assert!(continued(h.raw(req, part)).data.is_empty());
    }
    let req = h.req(SEC, Some(OP), false);
    assert_eq!(kv(&continued(h.raw(req, &text[b..]))), kv(&expected));
}

#[test]
fn c_and_t_together_are_an_initiator_error() {
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let mut req = h.req(SEC, Some(OP), true);
    req.transit = true;
    let (p, err) = failed(h.raw(req, &encode(&[("InitiatorName", INI)])));
    assert_failure(&p, LoginStatus::INITIATOR_ERROR);
    assert_eq!(
        (p.header.status.class, p.header.status.detail),
        (0x02, 0x00)
    );
    assert_eq!(err, LoginError::Protocol("T and C both set"));
}

#[test]
fn a_key_sent_again_in_a_later_request_fails_the_login() {
    // Operational stage, two requests without transit.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    continued(h.send(
        OP,
        None,
        &[
            ("InitiatorName", INI),
            ("TargetName", TGT),
            ("MaxBurstLength", "65536"),
        ],
    ));
    let (p, err) = failed(h.send(OP, Some(FFP), &[("MaxBurstLength", "65536")]));
    assert_failure(&p, LoginStatus::INITIATOR_ERROR);
    assert_eq!(
        (p.header.status.class, p.header.status.detail),
        (0x02, 0x00)
    );
    assert_eq!(
        err,
        LoginError::BadKey(KeyError::Renegotiated("MaxBurstLength".into()))
    );
    // A declaration too (MaxRecvDataSegmentLength), and an unknown key.
    for key in [
        ("MaxRecvDataSegmentLength", "8192"),
        ("X-org.example.K", "1"),
    ] {
        let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
        continued(h.send(
            OP,
            None,
            &[("InitiatorName", INI), ("TargetName", TGT), key],
        ));
        let (p, err) = failed(h.send(OP, Some(FFP), &[key]));
        assert_failure(&p, LoginStatus::INITIATOR_ERROR);
        assert_eq!(
            err,
            LoginError::BadKey(KeyError::Renegotiated(key.0.into()))
        );
    }
    // Across stages: a security key in the security stage, then again (WrongStage is
    // not what stops it: it is the repetition).
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    continued(h.send(
        SEC,
        None,
        &[
            ("InitiatorName", INI),
            ("TargetName", TGT),
            ("X-org.example.K", "1"),
        ],
    ));
    let (_, err) = failed(h.send(SEC, Some(OP), &[("X-org.example.K", "1")]));
    assert_eq!(
        err,
        LoginError::BadKey(KeyError::Renegotiated("X-org.example.K".into()))
    );
    // Declarations repeated unchanged are tolerated (libiscsi); a changed alias is not.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    continued(h.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", INI),
            ("InitiatorAlias", "host1"),
            ("TargetName", TGT),
            ("AuthMethod", "None"),
        ],
    ));
    let (_, err) = failed(h.send(
        OP,
        Some(FFP),
        &[("InitiatorName", INI), ("InitiatorAlias", "host2")],
    ));
    assert_eq!(err, LoginError::DeclarationChanged("InitiatorAlias"));
}

#[test]
fn numbers_out_of_range_are_refused_not_clamped() {
    // A declaration cannot be answered Reject: the login fails (initiator error).
    for bad in ["511", "16777216", "0"] {
        let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
        let mut keys = libiscsi_operational("Normal");
        for k in keys.iter_mut() {
            if k.0 == "MaxRecvDataSegmentLength" {
                k.1 = bad;
            }
        }
        let (p, err) = failed(h.send(OP, Some(FFP), &keys));
        assert_failure(&p, LoginStatus::INITIATOR_ERROR);
        assert!(
            matches!(
                err,
                LoginError::BadKey(KeyError::OutOfRange {
                    key: "MaxRecvDataSegmentLength",
                    ..
                })
            ),
            "{bad}: {err:?}"
        );
    }
    // Negotiated numbers out of range are answered Reject and keep their defaults.
    let mut h = Harness::new(config_with(target_cfg(TargetAuth::None)));
    let (p, out) = completed(h.send(
        OP,
        Some(FFP),
        &[
            ("InitiatorName", INI),
            ("TargetName", TGT),
            ("MaxBurstLength", "511"),
            ("FirstBurstLength", "16777216"),
            ("MaxConnections", "0"),
            ("DefaultTime2Wait", "3601"),
            ("MaxRecvDataSegmentLength", "16777215"),
        ],
    ));
    let answers = kv(&p);
    for k in [
        "MaxBurstLength",
        "FirstBurstLength",
        "MaxConnections",
        "DefaultTime2Wait",
    ] {
        assert!(
            answers.contains(&(k.into(), "Reject".into())),
            "{k}: {answers:?}"
        );
    }
    let d = NegotiatedParams::default();
    assert_eq!(out.params.max_burst_length, d.max_burst_length);
    assert_eq!(out.params.first_burst_length, d.first_burst_length);
    assert_eq!(out.params.max_connections, 1);
    assert_eq!(out.params.default_time2wait, d.default_time2wait);
    // The largest legal declaration is taken as is.
    assert_eq!(out.params.max_send_data_segment_length, 16_777_215);
}

#[test]
fn discovery_authentication_is_its_own_setting() {
    // Targets require CHAP by default, discovery does not.
    let mut cfg = chap_config(false);
    cfg.defaults.auth = AuthPolicy::Chap;
    cfg.defaults.discovery_auth = Some(AuthPolicy::None);
    let mut h = Harness::new(cfg.clone());
    let (_, out) = completed(h.send(
        SEC,
        Some(FFP),
        &[
            ("InitiatorName", OPEN_ISCSI),
            ("SessionType", "Discovery"),
            ("AuthMethod", "None"),
        ],
    ));
    assert_eq!(out.auth.identity, Identity::Trusted);
    // Discovery CHAP with the defaults' discovery account: a shared secret.
    cfg.defaults.discovery_auth = Some(AuthPolicy::Chap);
    cfg.defaults.discovery_chap = Some(ChapCredentials {
        user: "disc".into(),
        secret: secret("discovery-secret-1"),
    });
    cfg.validate().unwrap();
    let discovery = |cfg: &IscsitConfig, who: &str, user: &str, sec: &str| {
        let mut h = Harness::new(cfg.clone());
        continued(h.send(
            SEC,
            Some(FFP),
            &[
                ("InitiatorName", who),
                ("SessionType", "Discovery"),
                ("AuthMethod", "CHAP"),
            ],
        ));
        continued(h.send(SEC, None, &[("CHAP_A", "5")]));
        let r = libiscsi_chap_r(sec);
        h.send(SEC, Some(FFP), &[("CHAP_N", user), ("CHAP_R", &r)])
    };
    let (_, out) = completed(discovery(&cfg, OPEN_ISCSI, "disc", "discovery-secret-1"));
    assert_eq!(out.auth.identity, Identity::SharedSecret);
    // An initiator with its own context uses it; the discovery account does not prove it.
    let (_, out) = completed(discovery(&cfg, INI, "libiscsi-user", INI_SECRET));
    assert_eq!(out.auth.identity, Identity::Proven);
    let (p, _) = failed(discovery(&cfg, INI, "disc", "discovery-secret-1"));
    assert_failure(&p, LoginStatus::AUTHENTICATION_FAILURE);
    // Unset, discovery follows the targets' default (as before the setting existed).
    cfg.defaults.discovery_auth = None;
    cfg.defaults.auth = AuthPolicy::None;
    let mut h = Harness::new(cfg);
    completed(h.send(
        SEC,
        Some(FFP),
        &[
            ("InitiatorName", OPEN_ISCSI),
            ("SessionType", "Discovery"),
            ("AuthMethod", "None"),
        ],
    ));
}
