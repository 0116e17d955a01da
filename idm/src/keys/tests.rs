//! Key table and negotiation results.

use super::*;

fn op_ctx() -> NegContext {
    NegContext::new(
        Stage::OperationalNegotiation,
        true,
        &NegotiatedParams::default(),
    )
}

fn answer(local: &LocalConfig, key: &str, value: &str) -> Reply {
    negotiate(local, &op_ctx(), key, value).unwrap().reply
}

fn val(s: &str) -> Reply {
    Reply::Value(s.to_owned())
}

#[test]
fn table_is_in_enum_order_and_complete() {
    for (i, d) in KEYS.iter().enumerate() {
        assert_eq!(d.id as usize, i, "{}", d.name);
        assert_eq!(d.id.def().name, d.name);
        assert_eq!(lookup(d.name).unwrap().id, d.id);
        assert!(crate::text::is_valid_key(d.name), "{}", d.name);
    }
    for name in [
        "HeaderDigest",
        "DataDigest",
        "MaxConnections",
        "SendTargets",
        "TargetName",
        "InitiatorName",
        "TargetAlias",
        "InitiatorAlias",
        "TargetAddress",
        "TargetPortalGroupTag",
        "InitialR2T",
        "ImmediateData",
        "MaxRecvDataSegmentLength",
        "MaxBurstLength",
        "FirstBurstLength",
        "DefaultTime2Wait",
        "DefaultTime2Retain",
        "MaxOutstandingR2T",
        "DataPDUInOrder",
        "DataSequenceInOrder",
        "ErrorRecoveryLevel",
        "SessionType",
        "AuthMethod",
        "OFMarker",
        "IFMarker",
        "OFMarkInt",
        "IFMarkInt",
        "TaskReporting",
        "iSCSIProtocolLevel",
        "RDMAExtensions",
        "TargetRecvDataSegmentLength",
        "InitiatorRecvDataSegmentLength",
        "MaxOutstandingUnexpectedPDUs",
        "MaxAHSLength",
        "TaggedBufferForSolicitedDataOnly",
        "iSERHelloRequired",
    ] {
        assert!(lookup(name).is_some(), "{name}");
    }
    // Keys are case-sensitive.
    assert!(lookup("headerdigest").is_none());
}

#[test]
fn defaults_match_the_table() {
    let p = NegotiatedParams::default();
    let num = |id: KeyId| match id.def().default {
        DefaultValue::Number(n) => n,
        other => panic!("{other:?}"),
    };
    assert_eq!(u64::from(p.max_burst_length), num(K::MaxBurstLength));
    assert_eq!(u64::from(p.first_burst_length), num(K::FirstBurstLength));
    assert_eq!(
        u64::from(p.max_recv_data_segment_length),
        num(K::MaxRecvDataSegmentLength)
    );
    assert_eq!(u64::from(p.default_time2wait), num(K::DefaultTime2Wait));
    assert_eq!(u64::from(p.default_time2retain), num(K::DefaultTime2Retain));
    assert_eq!(u64::from(p.max_outstanding_r2t), num(K::MaxOutstandingR2T));
    assert_eq!(u64::from(p.max_ahs_length), num(K::MaxAHSLength));
    assert_eq!(p.digests(), Digests::NONE);
}

#[test]
fn max_recv_data_segment_length_is_declarative() {
    let local = LocalConfig {
        max_recv_data_segment_length: 65536,
        ..LocalConfig::default()
    };
    let n = negotiate(&local, &op_ctx(), "MaxRecvDataSegmentLength", "262144").unwrap();
    assert_eq!(n.reply, Reply::None, "declarations are not answered");
    assert_eq!(n.agreed, Some(Value::Number(262_144)));
    let mut p = NegotiatedParams::for_local(&local);
    p.apply(K::MaxRecvDataSegmentLength, n.agreed.as_ref().unwrap());
    assert_eq!(p.max_send_data_segment_length, 262_144);
    assert_eq!(p.max_recv_data_segment_length, 65536);
    // Out of range declarations cannot be answered Reject: they are protocol errors.
    for bad in ["511", "16777216", "0", "0x1000000", "abc", ""] {
        assert_eq!(
            negotiate(&local, &op_ctx(), "MaxRecvDataSegmentLength", bad),
            Err(KeyError::OutOfRange {
                key: "MaxRecvDataSegmentLength",
                value: bad.to_owned(),
                min: 512,
                max: (1 << 24) - 1,
            }),
            "{bad}"
        );
    }
    for edge in ["512", "16777215", "0xffffff"] {
        assert_eq!(
            answer(&local, "MaxRecvDataSegmentLength", edge),
            Reply::None,
            "{edge}"
        );
    }
    assert_eq!(
        KeyError::OutOfRange {
            key: "MaxRecvDataSegmentLength",
            value: "511".into(),
            min: 512,
            max: 16_777_215
        }
        .login_status(),
        LoginStatus::INITIATOR_ERROR
    );
    // Allowed in full feature phase (Text negotiation) too.
    let ffp = NegContext::new(Stage::FullFeaturePhase, true, &p);
    assert!(negotiate(&local, &ffp, "MaxRecvDataSegmentLength", "8192").is_ok());
}

#[test]
fn numeric_minimum_and_maximum() {
    let local = LocalConfig {
        max_burst_length: 262_144,
        ..LocalConfig::default()
    };
    assert_eq!(answer(&local, "MaxBurstLength", "1048576"), val("262144"));
    assert_eq!(answer(&local, "MaxBurstLength", "65536"), val("65536"));
    assert_eq!(answer(&local, "MaxBurstLength", "0x10000"), val("65536"));
    assert_eq!(answer(&local, "ErrorRecoveryLevel", "2"), val("0"));
    assert_eq!(answer(&local, "DefaultTime2Wait", "0"), val("2"), "maximum");
    assert_eq!(answer(&local, "DefaultTime2Wait", "10"), val("10"));
    assert_eq!(answer(&local, "DefaultTime2Retain", "60"), val("20"));
    assert_eq!(answer(&local, "MaxConnections", "8"), val("1"));
}

#[test]
fn numeric_rejects() {
    let local = LocalConfig::default();
    assert_eq!(answer(&local, "MaxBurstLength", "100"), Reply::Reject);
    assert_eq!(answer(&local, "MaxBurstLength", "16777216"), Reply::Reject);
    assert_eq!(answer(&local, "MaxConnections", "0"), Reply::Reject);
    assert_eq!(answer(&local, "MaxConnections", "65536"), Reply::Reject);
    assert_eq!(answer(&local, "ErrorRecoveryLevel", "3"), Reply::Reject);
    assert_eq!(answer(&local, "MaxBurstLength", "abc"), Reply::Reject);
    assert_eq!(answer(&local, "MaxBurstLength", ""), Reply::Reject);
    assert_eq!(answer(&local, "MaxBurstLength", "-1"), Reply::Reject);
    assert_eq!(answer(&local, "MaxBurstLength", "0x"), Reply::Reject);
    assert_eq!(
        answer(&local, "MaxBurstLength", "99999999999999999999999"),
        Reply::Reject
    );
    assert_eq!(answer(&local, "DefaultTime2Wait", "3601"), Reply::Reject);
}

#[test]
fn boolean_or_and() {
    let strict = LocalConfig {
        initial_r2t: true,
        immediate_data: false,
        ..LocalConfig::default()
    };
    let lax = LocalConfig {
        initial_r2t: false,
        immediate_data: true,
        ..LocalConfig::default()
    };
    assert_eq!(answer(&strict, "InitialR2T", "No"), val("Yes"));
    assert_eq!(answer(&lax, "InitialR2T", "No"), val("No"));
    assert_eq!(answer(&lax, "InitialR2T", "Yes"), val("Yes"));
    assert_eq!(answer(&strict, "ImmediateData", "Yes"), val("No"));
    assert_eq!(answer(&lax, "ImmediateData", "Yes"), val("Yes"));
    assert_eq!(answer(&lax, "ImmediateData", "No"), val("No"));
    assert_eq!(answer(&lax, "ImmediateData", "yes"), Reply::Reject);
    assert_eq!(answer(&lax, "DataPDUInOrder", "No"), val("Yes"));
}

#[test]
fn digest_lists() {
    let none_only = LocalConfig {
        header_digests: &[Digest::None],
        ..LocalConfig::default()
    };
    assert_eq!(
        answer(&none_only, "HeaderDigest", "CRC32C,None"),
        val("None")
    );
    assert_eq!(answer(&none_only, "HeaderDigest", "CRC32C"), Reply::Reject);
    let both = LocalConfig::default();
    assert_eq!(answer(&both, "HeaderDigest", "CRC32C,None"), val("CRC32C"));
    assert_eq!(answer(&both, "DataDigest", "None,CRC32C"), val("None"));
    // Unknown values are skipped, not fatal.
    assert_eq!(answer(&both, "HeaderDigest", "MD5,CRC32C"), val("CRC32C"));
    assert_eq!(answer(&both, "HeaderDigest", "MD5"), Reply::Reject);
    assert_eq!(answer(&both, "HeaderDigest", ""), Reply::Reject);
    let n = negotiate(&both, &op_ctx(), "HeaderDigest", "CRC32C,None").unwrap();
    let mut p = NegotiatedParams::default();
    p.apply(K::HeaderDigest, n.agreed.as_ref().unwrap());
    assert_eq!(
        p.digests(),
        Digests {
            header: true,
            data: false
        }
    );
}

#[test]
fn unknown_and_private_keys() {
    let local = LocalConfig::default();
    assert_eq!(answer(&local, "FooBar", "1"), Reply::NotUnderstood);
    assert_eq!(
        answer(&local, "X-com.example.Foo", "1"),
        Reply::NotUnderstood
    );
    assert_eq!(answer(&local, "X#vendor", "1"), Reply::NotUnderstood);
    assert!(is_private("X-com.example.Foo"));
    assert!(!is_private("MaxBurstLength"));
}

#[test]
fn protocol_violations() {
    let local = LocalConfig::default();
    let ctx = op_ctx();
    assert_eq!(
        negotiate(&local, &ctx, "TargetPortalGroupTag", "1"),
        Err(KeyError::WrongSender("TargetPortalGroupTag"))
    );
    assert!(matches!(
        negotiate(&local, &ctx, "AuthMethod", "None"),
        Err(KeyError::WrongStage { .. })
    ));
    let sec = NegContext::new(
        Stage::SecurityNegotiation,
        true,
        &NegotiatedParams::default(),
    );
    assert!(matches!(
        negotiate(&local, &sec, "MaxBurstLength", "512"),
        Err(KeyError::WrongStage { .. })
    ));
    assert!(negotiate(&local, &sec, "InitiatorName", "iqn.2024-01.test:i").is_ok());
    let non_leading = NegContext {
        leading: false,
        ..ctx
    };
    assert_eq!(
        negotiate(&local, &non_leading, "MaxBurstLength", "512"),
        Err(KeyError::NotLeading("MaxBurstLength"))
    );
    // Connection keys are fine on any connection.
    assert!(negotiate(&local, &non_leading, "HeaderDigest", "None").is_ok());
    let ffp = NegContext {
        stage: Stage::FullFeaturePhase,
        ..ctx
    };
    assert!(matches!(
        negotiate(&local, &ffp, "InitialR2T", "Yes"),
        Err(KeyError::WrongStage { .. })
    ));
    assert!(matches!(
        negotiate(&local, &ctx, "SendTargets", "All"),
        Err(KeyError::WrongStage { .. })
    ));
    assert!(negotiate(&local, &ffp, "SendTargets", "All").is_ok());
    assert_eq!(
        negotiate(&local, &ctx, "MaxBurstLength", "Reject"),
        Err(KeyError::AnswerAsOffer("MaxBurstLength".to_owned()))
    );
    let e = KeyError::WrongSender("TargetAlias");
    assert_eq!(e.login_status(), LoginStatus::INITIATOR_ERROR);
    assert_eq!(e.reject_reason(), RejectReason::ProtocolError);
}

#[test]
fn irrelevance() {
    let local = LocalConfig::default();
    let disc = NegContext {
        session_type: SessionType::Discovery,
        ..op_ctx()
    };
    for k in [
        "InitialR2T",
        "ImmediateData",
        "MaxBurstLength",
        "DataPDUInOrder",
    ] {
        let v = if k == "MaxBurstLength" { "512" } else { "Yes" };
        assert_eq!(
            negotiate(&local, &disc, k, v).unwrap().reply,
            Reply::Irrelevant,
            "{k}"
        );
    }
    assert_eq!(
        negotiate(&local, &disc, "HeaderDigest", "None")
            .unwrap()
            .reply,
        val("None")
    );
    // iSER keys without RDMAExtensions.
    assert_eq!(
        answer(&local, "TargetRecvDataSegmentLength", "8192"),
        Reply::Irrelevant
    );
    // FirstBurstLength with InitialR2T=Yes and ImmediateData=No.
    let no_unsolicited = NegContext {
        initial_r2t: true,
        immediate_data: false,
        ..op_ctx()
    };
    assert_eq!(
        negotiate(&local, &no_unsolicited, "FirstBurstLength", "65536")
            .unwrap()
            .reply,
        Reply::Irrelevant
    );
}

#[test]
fn obsolete_markers() {
    let local = LocalConfig::default();
    assert_eq!(answer(&local, "OFMarker", "No"), val("No"));
    assert_eq!(answer(&local, "IFMarker", "Yes"), val("No"));
    assert_eq!(answer(&local, "OFMarkInt", "2048~8192"), Reply::Reject);
    assert_eq!(answer(&local, "IFMarkInt", "2048"), Reply::Reject);
    assert_eq!(answer(&local, "IFMarker", "Maybe"), Reply::Reject);
}

#[test]
fn declarations_and_names() {
    let local = LocalConfig::default();
    let sec = NegContext::new(
        Stage::SecurityNegotiation,
        true,
        &NegotiatedParams::default(),
    );
    let n = negotiate(&local, &sec, "SessionType", "Discovery").unwrap();
    assert_eq!(n.reply, Reply::None);
    assert_eq!(n.agreed, Some(Value::Text("Discovery".to_owned())));
    assert_eq!(
        negotiate(&local, &sec, "SessionType", "Bogus")
            .unwrap()
            .reply,
        Reply::Reject
    );
    assert_eq!(
        negotiate(&local, &sec, "InitiatorName", "not-a-name")
            .unwrap()
            .reply,
        Reply::Reject
    );
    assert_eq!(
        negotiate(&local, &sec, "InitiatorAlias", "host ünïcode")
            .unwrap()
            .reply,
        Reply::None
    );
    let chap = negotiate(&local, &sec, "CHAP_A", "5,7").unwrap();
    assert_eq!(chap.reply, Reply::None);
    assert_eq!(chap.key, Some(K::ChapA));
    assert!(is_iscsi_name("iqn.2024-01.com.example:storage.disk1"));
    assert!(is_iscsi_name("eui.02004567A425678D"));
    assert!(is_iscsi_name("naa.52004567BA64678D"));
    assert!(!is_iscsi_name("iqn.a b"));
    assert!(!is_iscsi_name(&format!("iqn.{}", "a".repeat(220))));
}

#[test]
fn auth_method_choice() {
    let chap = LocalConfig {
        auth_methods: &[AuthMethod::Chap],
        ..LocalConfig::default()
    };
    let sec = NegContext::new(
        Stage::SecurityNegotiation,
        true,
        &NegotiatedParams::default(),
    );
    assert_eq!(
        negotiate(&chap, &sec, "AuthMethod", "None,CHAP")
            .unwrap()
            .reply,
        val("CHAP")
    );
    assert_eq!(
        negotiate(&chap, &sec, "AuthMethod", "None").unwrap().reply,
        Reply::Reject
    );
}

#[test]
fn iser_negotiation() {
    let local = LocalConfig {
        rdma_extensions: true,
        target_recv_data_segment_length: 262_144,
        max_outstanding_unexpected_pdus: 0,
        ..LocalConfig::default()
    };
    let mut p = NegotiatedParams::default();
    let offers = [
        ("HeaderDigest", "CRC32C,None"),
        ("TargetRecvDataSegmentLength", "1048576"),
        ("MaxOutstandingUnexpectedPDUs", "16"),
        ("RDMAExtensions", "Yes"),
        ("MaxAHSLength", "1024"),
    ];
    let r = negotiate_all(&local, Stage::OperationalNegotiation, true, &mut p, &offers).unwrap();
    assert_eq!(
        r,
        vec![
            ("HeaderDigest", val("None")),
            ("TargetRecvDataSegmentLength", val("262144")),
            ("MaxOutstandingUnexpectedPDUs", val("16")),
            ("RDMAExtensions", val("Yes")),
            ("MaxAHSLength", val("256")),
        ]
    );
    assert!(p.rdma_extensions);
    assert_eq!(p.target_recv_data_segment_length, 262_144);
    assert_eq!(p.max_outstanding_unexpected_pdus, 16);
    // A target without iSER says No, and the iSER keys become irrelevant.
    let mut p = NegotiatedParams::default();
    let r = negotiate_all(
        &LocalConfig::default(),
        Stage::OperationalNegotiation,
        true,
        &mut p,
        &offers,
    )
    .unwrap();
    assert_eq!(r[1], ("TargetRecvDataSegmentLength", Reply::Irrelevant));
    assert_eq!(r[3], ("RDMAExtensions", val("No")));
    // Zero means unlimited on either side.
    let lim = LocalConfig {
        max_outstanding_unexpected_pdus: 8,
        ..local
    };
    let ctx = NegContext {
        rdma_extensions: true,
        ..op_ctx()
    };
    let a = |v| {
        negotiate(&lim, &ctx, "MaxOutstandingUnexpectedPDUs", v)
            .unwrap()
            .reply
    };
    assert_eq!(a("0"), val("8"));
    assert_eq!(a("4"), val("4"));
    assert_eq!(a("1"), Reply::Reject);
}

#[test]
fn whole_login_request() {
    // What open-iscsi sends in its operational stage.
    let local = LocalConfig {
        max_recv_data_segment_length: 262_144,
        max_burst_length: 1_048_576,
        first_burst_length: 65_536,
        immediate_data: true,
        initial_r2t: false,
        ..LocalConfig::default()
    };
    let text = b"HeaderDigest=None\0DataDigest=None\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0\
IFMarker=No\0OFMarker=No\0ErrorRecoveryLevel=0\0InitialR2T=No\0ImmediateData=Yes\0\
MaxBurstLength=16776192\0FirstBurstLength=262144\0MaxOutstandingR2T=1\0MaxConnections=1\0\
DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0MaxRecvDataSegmentLength=262144\0X-org.x=1\0";
    let offers = crate::text::parse(text).unwrap();
    let mut p = NegotiatedParams::for_local(&local);
    let r = negotiate_all(&local, Stage::OperationalNegotiation, true, &mut p, &offers).unwrap();
    let get = |k: &str| r.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone());
    assert_eq!(get("MaxBurstLength"), Some(val("1048576")));
    assert_eq!(get("FirstBurstLength"), Some(val("65536")));
    assert_eq!(get("InitialR2T"), Some(val("No")));
    assert_eq!(get("DefaultTime2Retain"), Some(val("0")));
    assert_eq!(
        get("MaxRecvDataSegmentLength"),
        None,
        "declarative, not answered"
    );
    assert_eq!(get("X-org.x"), Some(Reply::NotUnderstood));
    assert_eq!(p.max_burst_length, 1_048_576);
    assert_eq!(p.first_burst_length, 65_536);
    assert!(!p.initial_r2t && p.immediate_data);
    assert_eq!(p.max_send_data_segment_length, 262_144);
    assert_eq!(p.default_time2retain, 0);
    // Encoding the answers.
    let mut out = crate::text::TextBuilder::new();
    for (k, v) in &r {
        out.push(k, v.as_str().unwrap()).unwrap();
    }
    assert!(crate::text::parse(out.as_bytes()).is_ok());
}

#[test]
fn first_burst_never_exceeds_max_burst() {
    let local = LocalConfig {
        first_burst_length: 262_144,
        max_burst_length: 1_048_576,
        ..LocalConfig::default()
    };
    let mut p = NegotiatedParams::default();
    let offers = [("FirstBurstLength", "262144"), ("MaxBurstLength", "131072")];
    negotiate_all(&local, Stage::OperationalNegotiation, true, &mut p, &offers).unwrap();
    assert_eq!(p.max_burst_length, 131_072);
    assert_eq!(p.first_burst_length, 131_072);
}

#[test]
fn first_burst_irrelevant_in_same_request() {
    let local = LocalConfig {
        immediate_data: false,
        ..LocalConfig::default()
    };
    let mut p = NegotiatedParams::default();
    let offers = [
        ("FirstBurstLength", "65536"),
        ("ImmediateData", "Yes"),
        ("InitialR2T", "Yes"),
    ];
    let r = negotiate_all(&local, Stage::OperationalNegotiation, true, &mut p, &offers).unwrap();
    assert_eq!(r[0], ("FirstBurstLength", Reply::Irrelevant));
    assert_eq!(r[1], ("ImmediateData", val("No")));
}

#[test]
fn originator_checks_answers() {
    assert_eq!(
        resolve_answer(K::MaxBurstLength, "262144", "65536").unwrap(),
        Some(Value::Number(65536))
    );
    assert!(resolve_answer(K::MaxBurstLength, "65536", "262144").is_err());
    assert!(resolve_answer(K::DefaultTime2Wait, "5", "2").is_err());
    assert_eq!(
        resolve_answer(K::MaxBurstLength, "65536", "Reject").unwrap(),
        None
    );
    assert_eq!(
        resolve_answer(K::MaxBurstLength, "65536", "NotUnderstood").unwrap(),
        None
    );
    assert!(resolve_answer(K::ImmediateData, "No", "Yes").is_err());
    assert!(resolve_answer(K::InitialR2T, "Yes", "No").is_err());
    assert_eq!(
        resolve_answer(K::InitialR2T, "No", "Yes").unwrap(),
        Some(Value::Bool(true))
    );
    assert_eq!(
        resolve_answer(K::HeaderDigest, "CRC32C,None", "None").unwrap(),
        Some(Value::Text("None".to_owned()))
    );
    assert!(resolve_answer(K::HeaderDigest, "None", "CRC32C").is_err());
    assert!(resolve_answer(K::MaxOutstandingUnexpectedPDUs, "8", "0").is_err());
    assert_eq!(
        resolve_answer(K::MaxOutstandingUnexpectedPDUs, "0", "5").unwrap(),
        Some(Value::Number(5))
    );
}

#[test]
fn number_syntax() {
    assert_eq!(parse_number("0"), Some(0));
    assert_eq!(parse_number("0X1f"), Some(31));
    assert_eq!(parse_number("18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_number("18446744073709551616"), None);
    assert_eq!(parse_number("+1"), None);
    assert_eq!(parse_number(" 1"), None);
}

#[test]
fn every_numeric_key_rejects_values_outside_its_range() {
    // (key, smallest legal, largest legal), RFC 7143 §13 and RFC 7144.
    let local = LocalConfig::default();
    let ranges: &[(&str, u64, u64)] = &[
        ("MaxConnections", 1, 65_535),
        ("MaxBurstLength", 512, (1 << 24) - 1),
        ("FirstBurstLength", 512, (1 << 24) - 1),
        ("DefaultTime2Wait", 0, 3600),
        ("DefaultTime2Retain", 0, 3600),
        ("MaxOutstandingR2T", 1, 65_535),
        ("ErrorRecoveryLevel", 0, 2),
        ("iSCSIProtocolLevel", 0, 31),
    ];
    for &(key, min, max) in ranges {
        if min > 0 {
            assert_eq!(
                answer(&local, key, &(min - 1).to_string()),
                Reply::Reject,
                "{key} below"
            );
        }
        assert_eq!(
            answer(&local, key, &(max + 1).to_string()),
            Reply::Reject,
            "{key} above"
        );
        for ok in [min, max] {
            let r = answer(&local, key, &ok.to_string());
            let n = match r {
                Reply::Value(v) => parse_number(&v).unwrap(),
                other => panic!("{key}={ok}: {other:?}"),
            };
            // The answer is the rule applied to a legal offer, never a clamp of an
            // illegal one, and it is in range itself.
            assert!((min..=max).contains(&n), "{key}={ok} -> {n}");
        }
    }
}

#[test]
fn key_log_refuses_a_key_sent_twice_in_one_login() {
    let mut log = KeyLog::new();
    log.record(["HeaderDigest", "MaxBurstLength"]).unwrap();
    log.record(["DataDigest"]).unwrap();
    assert_eq!(
        log.record(["ImmediateData", "MaxBurstLength"]),
        Err(KeyError::Renegotiated("MaxBurstLength".into()))
    );
    // Nothing of a refused text is recorded.
    assert!(!log.contains("ImmediateData"));
    assert!(log.contains("DataDigest"));
    assert_eq!(
        KeyError::Renegotiated("X".into()).login_status(),
        LoginStatus::INITIATOR_ERROR
    );
}

#[test]
fn key_log_is_bounded() {
    let mut log = KeyLog::new();
    let names: Vec<String> = (0..MAX_LOGIN_KEY_BYTES / 16)
        .map(|i| format!("X-org.ex.K{i:06}"))
        .collect();
    assert!(names.iter().all(|n| n.len() == 16));
    log.record(names.iter().map(String::as_str)).unwrap();
    assert_eq!(
        log.record(["X-org.ex.one-more"]),
        Err(KeyError::TooManyKeys)
    );
}
