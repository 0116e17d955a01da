use super::*;
use crate::config::AclPolicy;

const HOST1: &str = "iqn.1994-05.com.redhat:host1";
const HOST2: &str = "iqn.1994-05.com.redhat:host2";

fn name(s: &str) -> IscsiName {
    IscsiName::parse(s).unwrap()
}

/// t1: TPGs 2 and 3, ACL host1. t2: default TPG, open. t3: open but offline.
/// t4: ACL host2. t5: a TPG with a wildcard portal.
fn config() -> IscsitConfig {
    let json = r#"{
      "tpgs": [
        {"name": "a", "tag": 2, "portals": ["10.0.0.2:3260", "[fe80::1]:3260", "10.0.0.1:3260"]},
        {"name": "b", "tag": 3, "portals": ["10.0.1.1:3261"]},
        {"name": "any", "tag": 4, "portals": ["0.0.0.0:3262"]}
      ],
      "targets": [
        {"name": "iqn.2026-11.org.rstmf:t1", "tpg_tags": [2, 3], "acl": ["iqn.1994-05.com.redhat:host1"]},
        {"name": "iqn.2026-11.org.rstmf:t2"},
        {"name": "iqn.2026-11.org.rstmf:t3"},
        {"name": "iqn.2026-11.org.rstmf:t4", "acl": ["iqn.1994-05.com.redhat:host2"]},
        {"name": "iqn.2026-11.org.rstmf:t5", "tpg_tags": [4]}
      ]
    }"#;
    IscsitConfig::from_json(json).unwrap()
}

fn online(n: &IscsiName) -> bool {
    n.as_str() != "iqn.2026-11.org.rstmf:t3"
}

fn local() -> Option<SocketAddr> {
    Some("10.0.0.1:3260".parse().unwrap())
}

fn ctx<'a>(
    cfg: &'a IscsitConfig,
    initiator: &'a IscsiName,
    session_type: SessionType,
    session_target: Option<&'a IscsiName>,
) -> DiscoveryContext<'a> {
    DiscoveryContext {
        config: cfg,
        access: &AclPolicy,
        is_online: &online,
        initiator,
        identity: Identity::Trusted,
        session_type,
        session_target,
        local_portal: local(),
    }
}

fn ask(c: &DiscoveryContext<'_>, value: &str) -> Vec<(String, String)> {
    let mut b = TextBuilder::new();
    send_targets(c, value, &mut b).unwrap();
    text::parse_with(b.as_bytes(), &["TargetName", "TargetAddress"])
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

#[test]
fn send_targets_all_filters_by_access() {
    let cfg = config();
    let host1 = name(HOST1);
    let c = ctx(&cfg, &host1, SessionType::Discovery, None);
    assert_eq!(
        ask(&c, "All"),
        owned(&[
            ("TargetName", "iqn.2026-11.org.rstmf:t1"),
            // The portal the request arrived on comes first.
            ("TargetAddress", "10.0.0.1:3260,2"),
            ("TargetAddress", "10.0.0.2:3260,2"),
            ("TargetAddress", "[fe80::1]:3260,2"),
            ("TargetAddress", "10.0.1.1:3261,3"),
            ("TargetName", "iqn.2026-11.org.rstmf:t2"),
            ("TargetAddress", "10.0.0.1:3260,1"),
            ("TargetName", "iqn.2026-11.org.rstmf:t5"),
            ("TargetAddress", "10.0.0.1:3262,4"),
        ])
    );
    let host2 = name(HOST2);
    let c = ctx(&cfg, &host2, SessionType::Discovery, None);
    let names: Vec<_> = ask(&c, "All")
        .into_iter()
        .filter(|(k, _)| k == "TargetName")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        names,
        [
            "iqn.2026-11.org.rstmf:t2",
            "iqn.2026-11.org.rstmf:t4",
            "iqn.2026-11.org.rstmf:t5"
        ]
    );

    // A view hook narrows it further.
    let only_t2 = |_: &IscsiName, t: &TargetConfig| t.name.as_str().ends_with(":t2");
    let c = DiscoveryContext {
        access: &only_t2,
        ..ctx(&cfg, &host2, SessionType::Discovery, None)
    };
    assert_eq!(
        ask(&c, "All"),
        owned(&[
            ("TargetName", "iqn.2026-11.org.rstmf:t2"),
            ("TargetAddress", "10.0.0.1:3260,1")
        ])
    );
}

#[test]
fn a_name_that_is_not_proven_sees_only_open_targets() {
    let mut cfg = config();
    // t6 requires CHAP (listed all the same: CHAP is checked at login).
    let mut t6 = TargetConfig::new(name("iqn.2026-11.org.rstmf:t6"));
    t6.auth = crate::config::TargetAuth::Chap;
    cfg.targets.push(t6);
    let host1 = name(HOST1);
    let names = |identity: Identity| -> Vec<String> {
        let c = DiscoveryContext {
            identity,
            ..ctx(&cfg, &host1, SessionType::Discovery, None)
        };
        ask(&c, "All")
            .into_iter()
            .filter(|(k, _)| k == "TargetName")
            .map(|(_, v)| v)
            .collect()
    };
    let open = [
        "iqn.2026-11.org.rstmf:t2",
        "iqn.2026-11.org.rstmf:t5",
        "iqn.2026-11.org.rstmf:t6",
    ];
    let mut with_t1 = vec!["iqn.2026-11.org.rstmf:t1"];
    with_t1.extend(open);
    assert_eq!(names(Identity::Proven), with_t1);
    assert_eq!(names(Identity::Trusted), with_t1);
    // Host1's ACL entry honours only a proven (or trusted) name.
    assert_eq!(names(Identity::SharedSecret), open);
    let c = DiscoveryContext {
        identity: Identity::SharedSecret,
        ..ctx(&cfg, &host1, SessionType::Discovery, None)
    };
    assert_eq!(ask(&c, "iqn.2026-11.org.rstmf:t1"), owned(&[]));
}

#[test]
fn targets_without_a_usable_address_are_not_listed() {
    // Without the local address, wildcard portals cannot be advertised: t2 (default
    // portal group 0.0.0.0) and t5 (a wildcard TPG) have no address to log in at.
    let cfg = config();
    let host1 = name(HOST1);
    let c = DiscoveryContext {
        local_portal: None,
        ..ctx(&cfg, &host1, SessionType::Discovery, None)
    };
    let names: Vec<String> = ask(&c, "All")
        .into_iter()
        .filter(|(k, _)| k == "TargetName")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(names, ["iqn.2026-11.org.rstmf:t1"]);
}

#[test]
fn send_targets_named() {
    let cfg = config();
    let host1 = name(HOST1);
    let c = ctx(&cfg, &host1, SessionType::Discovery, None);
    assert_eq!(
        ask(&c, "IQN.2026-11.org.rstmf:T2"),
        owned(&[
            ("TargetName", "iqn.2026-11.org.rstmf:t2"),
            ("TargetAddress", "10.0.0.1:3260,1")
        ])
    );
    // Hidden, offline, unknown and malformed names all look the same: nothing.
    for v in [
        "iqn.2026-11.org.rstmf:t4",
        "iqn.2026-11.org.rstmf:t3",
        "iqn.2026-11.org.rstmf:nope",
        "not a name",
    ] {
        assert_eq!(ask(&c, v), owned(&[]), "{v}");
    }
    // The empty value belongs to normal sessions.
    assert_eq!(ask(&c, ""), owned(&[("SendTargets", "Reject")]));
}

#[test]
fn send_targets_in_normal_session() {
    let cfg = config();
    let host1 = name(HOST1);
    let t1 = name("iqn.2026-11.org.rstmf:t1");
    let c = ctx(&cfg, &host1, SessionType::Normal, Some(&t1));
    let own = ask(&c, "");
    assert_eq!(own.first(), Some(&("TargetName".into(), t1.to_string())));
    assert_eq!(own.len(), 5);
    assert_eq!(ask(&c, t1.as_str()), own);
    assert_eq!(ask(&c, "All"), owned(&[("SendTargets", "Reject")]));
    assert_eq!(ask(&c, "iqn.2026-11.org.rstmf:t2"), owned(&[]));
}

#[test]
fn addresses_without_a_local_portal() {
    let cfg = config();
    let t2 = cfg.target(&name("iqn.2026-11.org.rstmf:t2")).unwrap();
    assert!(target_addresses(&cfg, t2, None).is_empty());
    let t5 = cfg.target(&name("iqn.2026-11.org.rstmf:t5")).unwrap();
    assert!(target_addresses(&cfg, t5, None).is_empty());
    let t1 = cfg.target(&name("iqn.2026-11.org.rstmf:t1")).unwrap();
    let a = target_addresses(&cfg, t1, None);
    assert_eq!(a.len(), 4);
    assert_eq!(a[0], ("10.0.0.2:3260".parse().unwrap(), 2));
    // IPv6 scope ids are not advertised.
    let v6: SocketAddr = "[fe80::1%2]:3260".parse().unwrap();
    assert_eq!(address_text(v6, 7), "[fe80::1]:3260,7");
}

#[test]
fn answer_text_mixes_send_targets_and_keys() {
    let cfg = config();
    let host2 = name(HOST2);
    let c = ctx(&cfg, &host2, SessionType::Discovery, None);
    let mut params = NegotiatedParams {
        session_type: SessionType::Discovery,
        ..NegotiatedParams::default()
    };
    let local = LocalConfig::default();
    let req = b"SendTargets=iqn.2026-11.org.rstmf:t4\0MaxRecvDataSegmentLength=16384\0X-org.example.Foo=1\0";
    let answer = answer_text(&c, &local, &mut params, req).unwrap();
    assert_eq!(
        text::parse(&answer).unwrap(),
        vec![
            ("TargetName", "iqn.2026-11.org.rstmf:t4"),
            ("TargetAddress", "10.0.0.1:3260,1"),
            ("X-org.example.Foo", "NotUnderstood"),
        ]
    );
    assert_eq!(params.max_send_data_segment_length, 16_384);

    // Login-only keys in full feature phase: Reject PDU.
    let err = answer_text(&c, &local, &mut params, b"HeaderDigest=None\0").unwrap_err();
    assert!(matches!(err, DiscoveryError::Key(_)));
    assert_eq!(err.reject_reason(), RejectReason::ProtocolError);
    let err = answer_text(&c, &local, &mut params, b"SendTargets=All").unwrap_err();
    assert!(matches!(err, DiscoveryError::Text(_)));
}

fn text_req(itt: u32, ttt: u32, final_bit: bool, cont: bool) -> TextRequest {
    TextRequest {
        immediate: false,
        final_bit,
        cont,
        lun: 0,
        itt,
        ttt,
        cmd_sn: 3,
        exp_stat_sn: 9,
    }
}

fn sn(stat_sn: u32) -> TargetSn {
    TargetSn {
        stat_sn,
        exp_cmd_sn: 4,
        max_cmd_sn: 20,
    }
}

fn whole(input: TextInput) -> Vec<u8> {
    match input {
        TextInput::Request(t) => t,
        TextInput::Respond(p) => panic!("expected a whole request, got {:?}", p.header),
    }
}

fn respond(input: TextInput) -> TextPdu {
    match input {
        TextInput::Respond(p) => p,
        TextInput::Request(_) => panic!("expected a response"),
    }
}

#[test]
fn short_answer_in_one_pdu() {
    let mut r = TextResponder::new(8192, 65536);
    let req = text_req(0x42, RESERVED_TAG, true, false);
    let t = whole(r.receive(&req, b"SendTargets=All\0", sn(1)).unwrap());
    assert_eq!(t, b"SendTargets=All\0");
    let pdu = r.respond(&req, b"TargetName=iqn.2026-11.x:y\0".to_vec(), sn(1));
    assert_eq!(
        pdu.header,
        TextResponse {
            final_bit: true,
            cont: false,
            lun: 0,
            itt: 0x42,
            ttt: RESERVED_TAG,
            sn: sn(1),
        }
    );
    assert!(r.is_idle());
}

#[test]
fn send_targets_spans_several_pdus() {
    // 60 targets on the default TPG; the initiator takes 512 bytes per PDU.
    let mut cfg = IscsitConfig::default();
    for i in 0..60 {
        cfg.targets.push(TargetConfig::new(name(&format!(
            "iqn.2026-11.org.rstmf:disk{i:03}"
        ))));
    }
    let host = name(HOST1);
    let c = ctx(&cfg, &host, SessionType::Discovery, None);
    let mut params = NegotiatedParams::default();
    let mut r = TextResponder::new(512, 65536);
    let req = text_req(7, RESERVED_TAG, true, false);
    let t = whole(r.receive(&req, b"SendTargets=All\0", sn(10)).unwrap());
    let answer = answer_text(&c, &LocalConfig::default(), &mut params, &t).unwrap();
    assert!(answer.len() > 4 * 512);

    let mut got = Vec::new();
    let mut pdu = r.respond(&req, answer.clone(), sn(10));
    let ttt = pdu.header.ttt;
    assert_ne!(ttt, RESERVED_TAG);
    let mut n = 1;
    while !pdu.header.final_bit {
        // Parts end on pair boundaries: C=0, F=0, same TTT.
        assert!(!pdu.header.cont);
        assert_eq!(pdu.header.ttt, ttt);
        assert!(pdu.data.len() <= 512 && pdu.data.ends_with(&[0]));
        assert_eq!(pdu.header.itt, 7);
        got.extend_from_slice(&pdu.data);
        let cont_req = text_req(7, ttt, true, false);
        pdu = respond(r.receive(&cont_req, &[], sn(10 + n)).unwrap());
        assert_eq!(pdu.header.sn.stat_sn, 10 + n);
        n += 1;
    }
    assert_eq!(pdu.header.ttt, RESERVED_TAG);
    got.extend_from_slice(&pdu.data);
    assert_eq!(got, answer);
    assert!(n >= 5);
    assert!(r.is_idle());
    let pairs = text::parse_with(&got, &["TargetName", "TargetAddress"]).unwrap();
    assert_eq!(pairs.len(), 120);
    assert_eq!(pairs[118], ("TargetName", "iqn.2026-11.org.rstmf:disk059"));
    assert_eq!(pairs[119], ("TargetAddress", "10.0.0.1:3260,1"));
}

#[test]
fn over_long_pair_is_split_with_c_bit() {
    let mut r = TextResponder::new(16, 65536);
    let req = text_req(1, RESERVED_TAG, true, false);
    whole(r.receive(&req, b"SendTargets=All\0", sn(1)).unwrap());
    // A 38-byte pair, then a 15-byte one.
    let answer = b"TargetName=iqn.2026-11.org.rstmf:long\0Bbbbbbbbbbbb=1\0".to_vec();
    let p1 = r.respond(&req, answer.clone(), sn(1));
    assert!(p1.header.cont && !p1.header.final_bit);
    assert_eq!(p1.data.len(), 16);
    let ttt = p1.header.ttt;
    let p2 = respond(
        r.receive(&text_req(1, ttt, true, false), &[], sn(2))
            .unwrap(),
    );
    assert!(p2.header.cont);
    let p3 = respond(
        r.receive(&text_req(1, ttt, true, false), &[], sn(3))
            .unwrap(),
    );
    // The long pair ends here: C=0, but more follows.
    assert!(!p3.header.cont && !p3.header.final_bit);
    assert_eq!(p3.data, b":long\0");
    let p4 = respond(
        r.receive(&text_req(1, ttt, true, false), &[], sn(4))
            .unwrap(),
    );
    assert!(p4.header.final_bit && p4.header.ttt == RESERVED_TAG);
    let all = [p1.data, p2.data, p3.data, p4.data].concat();
    assert_eq!(all, answer);
}

#[test]
fn request_in_parts_is_acknowledged() {
    let mut r = TextResponder::new(8192, 65536);
    let first = text_req(9, RESERVED_TAG, false, true);
    let ack = respond(r.receive(&first, b"SendTar", sn(1)).unwrap());
    assert!(!ack.header.final_bit && !ack.header.cont && ack.data.is_empty());
    let ttt = ack.header.ttt;
    assert_ne!(ttt, RESERVED_TAG);
    let second = text_req(9, ttt, true, false);
    let t = whole(r.receive(&second, b"gets=All\0", sn(2)).unwrap());
    assert_eq!(t, b"SendTargets=All\0");
    let pdu = r.respond(&second, Vec::new(), sn(2));
    assert!(pdu.header.final_bit && pdu.data.is_empty());
}

#[test]
fn open_negotiation_keeps_the_tag() {
    // F=0 request: the answer has F=0 and a TTT the next request continues with.
    let mut r = TextResponder::new(8192, 65536);
    let req = text_req(5, RESERVED_TAG, false, false);
    whole(r.receive(&req, b"X-org.example.A=1\0", sn(1)).unwrap());
    let p = r.respond(&req, b"X-org.example.A=NotUnderstood\0".to_vec(), sn(1));
    assert!(!p.header.final_bit);
    let next = text_req(5, p.header.ttt, true, false);
    let t = whole(r.receive(&next, b"X-org.example.B=1\0", sn(2)).unwrap());
    assert_eq!(t, b"X-org.example.B=1\0");
    let p = r.respond(&next, Vec::new(), sn(2));
    assert!(p.header.final_bit && p.header.ttt == RESERVED_TAG);
}

#[test]
fn exchange_errors() {
    let mut r = TextResponder::new(16, 65536);
    // Unknown TTT.
    let err = r
        .receive(&text_req(1, 77, true, false), &[], sn(1))
        .unwrap_err();
    assert_eq!(err, DiscoveryError::UnknownTtt(77));
    assert_eq!(err.reject_reason(), RejectReason::InvalidPduField);

    // Continuation carrying data.
    let req = text_req(1, RESERVED_TAG, true, false);
    whole(r.receive(&req, b"SendTargets=All\0", sn(1)).unwrap());
    let p = r.respond(&req, b"A=1\0".repeat(10), sn(1));
    let ttt = p.header.ttt;
    let err = r
        .receive(&text_req(1, ttt, true, false), b"A=1\0", sn(2))
        .unwrap_err();
    assert_eq!(err, DiscoveryError::DataInContinuation);
    // Wrong ITT for the tag.
    let err = r
        .receive(&text_req(2, ttt, true, false), &[], sn(2))
        .unwrap_err();
    assert_eq!(err, DiscoveryError::UnknownTtt(ttt));
    // The exchange is still there after those errors.
    assert!(!r.is_idle());
    // A new request resets it.
    let t = whole(
        r.receive(&text_req(3, RESERVED_TAG, true, false), b"B=2\0", sn(3))
            .unwrap(),
    );
    assert_eq!(t, b"B=2\0");
    assert!(r
        .receive(&text_req(1, ttt, true, false), &[], sn(4))
        .is_err());

    // Texts over the cap.
    let mut r = TextResponder::new(8192, 8);
    let err = r
        .receive(
            &text_req(1, RESERVED_TAG, true, false),
            b"SendTargets=All\0",
            sn(1),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        DiscoveryError::Text(TextError::TooLarge { .. })
    ));
}

#[test]
fn segmenting() {
    assert_eq!(next_segment(b"A=1\0B=2\0", 8), (8, false));
    assert_eq!(next_segment(b"A=1\0B=2\0", 7), (4, false));
    assert_eq!(next_segment(b"ABCDEFGH=1\0", 4), (4, true));
    assert_eq!(next_segment(b"", 4), (0, false));
    assert_eq!(next_segment(b"A=1\0", 0), (1, true));
}
