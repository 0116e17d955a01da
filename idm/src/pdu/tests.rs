//! Golden PDUs, round trips, digests and every error path of the codec.

use super::wire::to_wire;
use super::*;

/// Parses whitespace-separated hex.
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn bhs48(s: &str) -> [u8; 48] {
    hex(s).try_into().unwrap()
}

/// Checks parse(golden) == repr and framing repr (+ahs, data) == golden wire bytes.
fn golden(wire: &[u8], repr: Pdu, data: &[u8], digests: Digests) {
    let bhs = Bhs::new_checked(wire).unwrap();
    assert_eq!(Pdu::parse(&bhs).unwrap(), repr);
    let mut out = Vec::new();
    TxFrame::from_pdu(&repr, &[], data, digests)
        .unwrap()
        .write_to(&mut out);
    assert_eq!(out, wire);
    // emit leaves bytes 4..8 alone and rewrites the rest identically.
    let mut copy: [u8; 48] = wire[..48].try_into().unwrap();
    repr.emit(&mut copy);
    assert_eq!(&copy[..], &wire[..48]);
}

/// RFC 3720 appendix B.4: "iSCSI - Read (10) Command PDU" and its CRC.
const RFC_READ10: &str = "01 c0 00 00  00 00 00 00  00 00 00 00  00 00 00 00
                          14 00 00 00  00 00 04 00  00 00 00 14  00 00 00 18
                          28 00 00 00  00 00 00 00  02 00 00 00  00 00 00 00";

fn rfc_read10() -> ScsiCommand {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x28;
    cdb[8] = 0x02;
    ScsiCommand {
        immediate: false,
        final_bit: true,
        read: true,
        write: false,
        attr: TaskAttr::Untagged,
        lun: 0,
        itt: 0x1400_0000,
        expected_data_transfer_length: 0x400,
        cmd_sn: 0x14,
        exp_stat_sn: 0x18,
        cdb,
    }
}

#[test]
fn golden_rfc3720_read10_with_header_digest() {
    let mut wire = hex(RFC_READ10);
    wire.extend_from_slice(&[0x56, 0x3a, 0x96, 0xd9]);
    golden(
        &wire,
        Pdu::ScsiCommand(rfc_read10()),
        &[],
        Digests {
            header: true,
            data: false,
        },
    );
    // And the reader accepts it with HeaderDigest=CRC32C.
    let limits = FrameLimits {
        digests: Digests::BOTH,
        max_data_segment_len: 8192,
    };
    let mut rx = PduReader::new(Role::Target, limits);
    assert_eq!(rx.feed(&wire), wire.len());
    let got = rx.next_pdu().unwrap().unwrap();
    assert_eq!(got.pdu, Pdu::ScsiCommand(rfc_read10()));
    assert_eq!(got.cdb().unwrap().as_bytes(), &rfc_read10().cdb);
}

#[test]
fn golden_read10_immediate_simple_attr() {
    // Immediate READ(10), simple task attribute, LUN 1, 8 blocks.
    let wire = hex("41 c1 00 00  00 00 00 00  00 01 00 00  00 00 00 00
                    00 00 00 07  00 00 10 00  00 00 00 2a  00 00 00 11
                    28 00 00 00  10 00 00 00  08 00 00 00  00 00 00 00");
    let mut cdb = [0u8; 16];
    cdb[0] = 0x28;
    cdb[4] = 0x10;
    cdb[8] = 0x08;
    let cmd = ScsiCommand {
        immediate: true,
        final_bit: true,
        read: true,
        write: false,
        attr: TaskAttr::Simple,
        lun: 0x0001_0000_0000_0000,
        itt: 7,
        expected_data_transfer_length: 4096,
        cmd_sn: 0x2a,
        exp_stat_sn: 0x11,
        cdb,
    };
    golden(&wire, Pdu::ScsiCommand(cmd), &[], Digests::NONE);
}

#[test]
fn golden_write10_with_immediate_data_and_digests() {
    // WRITE(10) of 6 bytes of immediate data (padded to 8), both digests.
    let data = b"abcdef";
    let head = hex("01 a1 00 00  00 00 00 06  00 00 00 00  00 00 00 00
                    00 00 00 09  00 00 00 06  00 00 00 01  00 00 00 01
                    2a 00 00 00  00 00 00 00  01 00 00 00  00 00 00 00");
    let mut wire = head.clone();
    wire.extend_from_slice(&to_wire(crc32c(&head)));
    wire.extend_from_slice(data);
    wire.extend_from_slice(&[0, 0]);
    wire.extend_from_slice(&to_wire(crc32c(b"abcdef\0\0")));
    let mut cdb = [0u8; 16];
    cdb[0] = 0x2a;
    cdb[8] = 1;
    let cmd = ScsiCommand {
        immediate: false,
        final_bit: true,
        read: false,
        write: true,
        attr: TaskAttr::Simple,
        lun: 0,
        itt: 9,
        expected_data_transfer_length: 6,
        cmd_sn: 1,
        exp_stat_sn: 1,
        cdb,
    };
    golden(&wire, Pdu::ScsiCommand(cmd), data, Digests::BOTH);
    let limits = FrameLimits {
        digests: Digests::BOTH,
        max_data_segment_len: 8192,
    };
    let mut rx = PduReader::new(Role::Target, limits);
    rx.feed(&wire);
    let got = rx.next_pdu().unwrap().unwrap();
    assert_eq!(got.data, data);
    assert_eq!(got.header[..], head[..]);
}

#[test]
fn golden_data_in_with_status() {
    let wire = hex("25 83 00 00  00 00 00 08  00 00 00 00  00 00 00 00
                    00 00 00 14  ff ff ff ff  00 00 00 18  00 00 00 15
                    00 00 00 34  00 00 00 00  00 00 00 00  00 00 02 00
                    01 02 03 04  05 06 07 08");
    let d = DataIn {
        final_bit: true,
        ack: false,
        lun: 0,
        itt: 0x14,
        ttt: RESERVED_TAG,
        exp_cmd_sn: 0x15,
        max_cmd_sn: 0x34,
        data_sn: 0,
        buffer_offset: 0,
        status: Some(DataInStatus {
            status: 0,
            stat_sn: 0x18,
            overflow: false,
            underflow: true,
            residual_count: 0x200,
        }),
    };
    golden(
        &wire,
        Pdu::DataIn(d),
        &[1, 2, 3, 4, 5, 6, 7, 8],
        Digests::NONE,
    );
}

#[test]
fn golden_r2t() {
    let wire = hex("31 80 00 00  00 00 00 00  00 01 00 00  00 00 00 00
                    00 00 00 2a  00 00 10 01  00 00 00 19  00 00 00 16
                    00 00 00 35  00 00 00 01  00 01 00 00  00 04 00 00");
    let r = R2t {
        lun: 0x0001_0000_0000_0000,
        itt: 42,
        ttt: 0x1001,
        sn: TargetSn {
            stat_sn: 0x19,
            exp_cmd_sn: 0x16,
            max_cmd_sn: 0x35,
        },
        r2t_sn: 1,
        buffer_offset: 65536,
        desired_data_transfer_length: 262_144,
    };
    golden(&wire, Pdu::R2t(r), &[], Digests::NONE);
}

const ISID: Isid = Isid([0x00, 0x02, 0x3d, 0x00, 0x00, 0x01]);

#[test]
fn golden_login_request_with_text() {
    let wire = hex("43 87 00 00  00 00 00 12  00 02 3d 00  00 01 00 00
                    00 00 00 00  00 00 00 00  00 00 00 01  00 00 00 00
                    00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00
                    48 65 61 64  65 72 44 69  67 65 73 74  3d 4e 6f 6e
                    65 00 00 00");
    let l = LoginRequest {
        transit: true,
        cont: false,
        csg: Stage::OperationalNegotiation,
        nsg: Stage::FullFeaturePhase,
        version_max: 0,
        version_min: 0,
        isid: ISID,
        tsih: 0,
        itt: 0,
        cid: 0,
        cmd_sn: 1,
        exp_stat_sn: 0,
    };
    golden(
        &wire,
        Pdu::LoginRequest(l),
        b"HeaderDigest=None\0",
        Digests::NONE,
    );
    let mut rx = PduReader::new(Role::Target, FrameLimits::LOGIN);
    rx.feed(&wire);
    let got = rx.next_pdu().unwrap().unwrap();
    assert_eq!(
        crate::text::parse(got.data).unwrap(),
        vec![("HeaderDigest", "None")]
    );
}

#[test]
fn golden_login_response_with_text() {
    let wire = hex("23 87 00 00  00 00 00 12  00 02 3d 00  00 01 12 34
                    00 00 00 00  00 00 00 00  00 00 00 01  00 00 00 02
                    00 00 00 21  00 00 00 00  00 00 00 00  00 00 00 00
                    48 65 61 64  65 72 44 69  67 65 73 74  3d 4e 6f 6e
                    65 00 00 00");
    let l = LoginResponse {
        transit: true,
        cont: false,
        csg: Stage::OperationalNegotiation,
        nsg: Stage::FullFeaturePhase,
        version_max: 0,
        version_active: 0,
        isid: ISID,
        tsih: 0x1234,
        itt: 0,
        sn: TargetSn {
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 0x21,
        },
        status: LoginStatus::SUCCESS,
    };
    golden(
        &wire,
        Pdu::LoginResponse(l),
        b"HeaderDigest=None\0",
        Digests::NONE,
    );
}

#[test]
fn golden_login_failure_status() {
    let wire = bhs48(
        "23 00 00 00  00 00 00 00  00 02 3d 00  00 01 00 00
                      00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00
                      00 00 00 00  02 01 00 00  00 00 00 00  00 00 00 00",
    );
    let Pdu::LoginResponse(l) = Pdu::parse(&Bhs::new_checked(&wire[..]).unwrap()).unwrap() else {
        panic!("not a login response");
    };
    assert_eq!(l.status, LoginStatus::AUTHENTICATION_FAILURE);
    assert!(!l.status.is_success());
    assert_eq!(l.csg, Stage::SecurityNegotiation);
    assert_eq!(l.nsg, Stage::SecurityNegotiation);
}

#[test]
fn golden_nop_in() {
    let wire = hex("20 80 00 00  00 00 00 00  00 00 00 00  00 00 00 00
                    ff ff ff ff  00 00 00 07  00 00 00 05  00 00 00 06
                    00 00 00 26  00 00 00 00  00 00 00 00  00 00 00 00");
    let n = NopIn {
        lun: 0,
        itt: RESERVED_TAG,
        ttt: 7,
        sn: TargetSn {
            stat_sn: 5,
            exp_cmd_sn: 6,
            max_cmd_sn: 0x26,
        },
    };
    golden(&wire, Pdu::NopIn(n), &[], Digests::NONE);
}

#[test]
fn golden_reject_carries_bad_header() {
    let bad = [0x1cu8; 48];
    let mut wire = hex("3f 80 09 00  00 00 00 30  00 00 00 00  00 00 00 00
                        ff ff ff ff  00 00 00 00  00 00 00 07  00 00 00 08
                        00 00 00 28  00 00 00 00  00 00 00 00  00 00 00 00");
    wire.extend_from_slice(&bad);
    let r = Reject {
        reason: RejectReason::InvalidPduField,
        sn: TargetSn {
            stat_sn: 7,
            exp_cmd_sn: 8,
            max_cmd_sn: 0x28,
        },
        data_sn_or_r2t_sn: 0,
    };
    golden(&wire, Pdu::Reject(r), &bad, Digests::NONE);
}

#[test]
fn golden_async_logout_request() {
    let wire = hex("32 80 00 00  00 00 00 00  00 00 00 00  00 00 00 00
                    ff ff ff ff  00 00 00 00  00 00 00 09  00 00 00 0a
                    00 00 00 2a  01 00 00 00  00 00 00 05  00 00 00 00");
    let a = AsyncMessage {
        lun: 0,
        sn: TargetSn {
            stat_sn: 9,
            exp_cmd_sn: 10,
            max_cmd_sn: 0x2a,
        },
        event: AsyncEvent::LogoutRequest,
        vcode: 0,
        parameter1: 0,
        parameter2: 0,
        parameter3: 5,
    };
    golden(&wire, Pdu::AsyncMessage(a), &[], Digests::NONE);
}

#[test]
fn golden_tmf_request_and_response() {
    let req = hex("42 81 00 00  00 00 00 00  00 01 00 00  00 00 00 00
                   00 00 00 50  00 00 00 14  00 00 00 20  00 00 00 30
                   00 00 00 14  00 00 00 00  00 00 00 00  00 00 00 00");
    let t = TaskMgmtRequest {
        immediate: true,
        function: TmfFunction::AbortTask,
        lun: 0x0001_0000_0000_0000,
        itt: 0x50,
        referenced_task_tag: 0x14,
        cmd_sn: 0x20,
        exp_stat_sn: 0x30,
        ref_cmd_sn: 0x14,
        exp_data_sn: 0,
    };
    golden(&req, Pdu::TaskMgmtRequest(t), &[], Digests::NONE);
    let rsp = hex("22 80 01 00  00 00 00 00  00 00 00 00  00 00 00 00
                   00 00 00 50  00 00 00 00  00 00 00 30  00 00 00 21
                   00 00 00 41  00 00 00 00  00 00 00 00  00 00 00 00");
    let r = TaskMgmtResponse {
        response: TmfResponse::TaskDoesNotExist,
        itt: 0x50,
        sn: TargetSn {
            stat_sn: 0x30,
            exp_cmd_sn: 0x21,
            max_cmd_sn: 0x41,
        },
    };
    golden(&rsp, Pdu::TaskMgmtResponse(r), &[], Digests::NONE);
}

#[test]
fn known_data_digest_bytes() {
    // 32 zero bytes of ping data: RFC 3720 B.4 gives the digest as aa 36 91 8a.
    let nop = Pdu::NopOut(NopOut {
        immediate: true,
        lun: 0,
        itt: 3,
        ttt: RESERVED_TAG,
        cmd_sn: 1,
        exp_stat_sn: 1,
    });
    let zeros = [0u8; 32];
    let f = TxFrame::from_pdu(&nop, &[], &zeros, Digests::BOTH).unwrap();
    let mut wire = Vec::new();
    f.write_to(&mut wire);
    assert_eq!(wire.len(), 48 + 4 + 32 + 4);
    assert_eq!(f.wire_len(), wire.len());
    assert_eq!(&wire[wire.len() - 4..], &[0xaa, 0x36, 0x91, 0x8a]);
    // No data, no data digest even when negotiated.
    let f = TxFrame::from_pdu(&nop, &[], &[], Digests::BOTH).unwrap();
    assert_eq!(f.wire_len(), 52);
}

/// One sample of every variant with non-default values.
fn samples() -> Vec<Pdu> {
    let sn = TargetSn {
        stat_sn: 0x0102_0304,
        exp_cmd_sn: 0x1112_1314,
        max_cmd_sn: 0x2122_2324,
    };
    let mut cdb = [0u8; 16];
    cdb.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = i as u8 + 1);
    vec![
        Pdu::NopOut(NopOut {
            immediate: false,
            lun: 5,
            itt: 1,
            ttt: 2,
            cmd_sn: 3,
            exp_stat_sn: 4,
        }),
        Pdu::ScsiCommand(ScsiCommand {
            immediate: true,
            final_bit: false,
            read: true,
            write: true,
            attr: TaskAttr::Aca,
            lun: u64::MAX,
            itt: 9,
            expected_data_transfer_length: 0xdead,
            cmd_sn: 10,
            exp_stat_sn: 11,
            cdb,
        }),
        Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate: false,
            function: TmfFunction::Unknown(0x7f),
            lun: 1,
            itt: 2,
            referenced_task_tag: 3,
            cmd_sn: 4,
            exp_stat_sn: 5,
            ref_cmd_sn: 6,
            exp_data_sn: 7,
        }),
        Pdu::LoginRequest(LoginRequest {
            transit: false,
            cont: true,
            csg: Stage::SecurityNegotiation,
            nsg: Stage::SecurityNegotiation,
            version_max: 2,
            version_min: 1,
            isid: Isid([1, 2, 3, 4, 5, 6]),
            tsih: 7,
            itt: 8,
            cid: 9,
            cmd_sn: 10,
            exp_stat_sn: 11,
        }),
        Pdu::TextRequest(TextRequest {
            immediate: true,
            final_bit: true,
            cont: false,
            lun: 1,
            itt: 2,
            ttt: RESERVED_TAG,
            cmd_sn: 3,
            exp_stat_sn: 4,
        }),
        Pdu::DataOut(DataOut {
            final_bit: true,
            lun: 1,
            itt: 2,
            ttt: 3,
            exp_stat_sn: 4,
            data_sn: 5,
            buffer_offset: 6,
        }),
        Pdu::LogoutRequest(LogoutRequest {
            immediate: true,
            reason: LogoutReason::RemoveForRecovery,
            itt: 1,
            cid: 2,
            cmd_sn: 3,
            exp_stat_sn: 4,
        }),
        Pdu::Snack(Snack {
            snack_type: SnackType::RData,
            lun: 1,
            itt: 2,
            ttt_or_snack_tag: 3,
            exp_stat_sn: 4,
            beg_run: 5,
            run_length: 6,
        }),
        Pdu::NopIn(NopIn {
            lun: 1,
            itt: 2,
            ttt: 3,
            sn,
        }),
        Pdu::ScsiResponse(ScsiResponse {
            bidi_overflow: true,
            bidi_underflow: false,
            overflow: false,
            underflow: true,
            response: ScsiResponseCode::Completed,
            status: 0x02,
            itt: 1,
            snack_tag: 2,
            sn,
            exp_data_sn: 3,
            bidi_read_residual_count: 4,
            residual_count: 5,
        }),
        Pdu::TaskMgmtResponse(TaskMgmtResponse {
            response: TmfResponse::Rejected,
            itt: 1,
            sn,
        }),
        Pdu::LoginResponse(LoginResponse {
            transit: true,
            cont: false,
            csg: Stage::SecurityNegotiation,
            nsg: Stage::OperationalNegotiation,
            version_max: 0,
            version_active: 0,
            isid: Isid([6, 5, 4, 3, 2, 1]),
            tsih: 0xffff,
            itt: 1,
            sn,
            status: LoginStatus::TARGET_MOVED_TEMPORARILY,
        }),
        Pdu::TextResponse(TextResponse {
            final_bit: false,
            cont: true,
            lun: 1,
            itt: 2,
            ttt: 3,
            sn,
        }),
        Pdu::DataIn(DataIn {
            final_bit: false,
            ack: true,
            lun: 1,
            itt: 2,
            ttt: 3,
            exp_cmd_sn: 4,
            max_cmd_sn: 5,
            data_sn: 6,
            buffer_offset: 7,
            status: None,
        }),
        Pdu::LogoutResponse(LogoutResponse {
            response: LogoutResponseCode::CleanupFailed,
            itt: 1,
            sn,
            time2wait: 2,
            time2retain: 20,
        }),
        Pdu::R2t(R2t {
            lun: 1,
            itt: 2,
            ttt: 3,
            sn,
            r2t_sn: 4,
            buffer_offset: 5,
            desired_data_transfer_length: 6,
        }),
        Pdu::AsyncMessage(AsyncMessage {
            lun: 1,
            sn,
            event: AsyncEvent::ConnectionDrop,
            vcode: 7,
            parameter1: 1,
            parameter2: 2,
            parameter3: 3,
        }),
        Pdu::Reject(Reject {
            reason: RejectReason::Unknown(0x42),
            sn,
            data_sn_or_r2t_sn: 9,
        }),
    ]
}

#[test]
fn round_trip_every_variant() {
    let all = samples();
    assert_eq!(all.len(), 18, "one sample per RFC 7143 opcode");
    for pdu in all {
        let bytes = pdu.to_bytes();
        let bhs = Bhs::new_checked(&bytes[..]).unwrap();
        assert_eq!(bhs.opcode().unwrap(), pdu.opcode());
        assert_eq!(Pdu::parse(&bhs).unwrap(), pdu, "{pdu:?}");
        assert_eq!(bhs.itt(), pdu.itt());
        // And through the framer, with both digests.
        let data = [0x5au8; 5];
        let data: &[u8] = if pdu.opcode().allows_data() {
            &data
        } else {
            &[]
        };
        let mut wire = Vec::new();
        TxFrame::from_pdu(&pdu, &[], data, Digests::BOTH)
            .unwrap()
            .write_to(&mut wire);
        let role = if pdu.opcode().is_initiator() {
            Role::Target
        } else {
            Role::Initiator
        };
        let limits = FrameLimits {
            digests: Digests::BOTH,
            max_data_segment_len: 8192,
        };
        let mut rx = PduReader::new(role, limits);
        assert_eq!(rx.feed(&wire), wire.len());
        let got = rx.next_pdu().unwrap().unwrap();
        assert_eq!(got.pdu, pdu);
        assert_eq!(got.data, data);
        assert!(rx.next_pdu().unwrap().is_none());
        assert!(rx.finish().is_ok());
    }
}

#[test]
fn data_in_status_forces_final() {
    let d = DataIn {
        final_bit: false,
        ack: false,
        lun: 0,
        itt: 1,
        ttt: RESERVED_TAG,
        exp_cmd_sn: 1,
        max_cmd_sn: 1,
        data_sn: 0,
        buffer_offset: 0,
        status: Some(DataInStatus::default()),
    };
    let b = Pdu::DataIn(d).to_bytes();
    assert_eq!(b[1], 0x81);
}

fn parse_err(bytes: &[u8]) -> PduError {
    Pdu::parse(&Bhs::new_checked(bytes).unwrap()).unwrap_err()
}

#[test]
fn header_field_errors() {
    // Unknown opcodes (vendor 0x1c, reserved 0x07).
    let mut b = [0u8; 48];
    b[0] = 0x1c;
    assert_eq!(parse_err(&b), PduError::BadOpcode(0x1c));
    b[0] = 0x07;
    assert_eq!(parse_err(&b), PduError::BadOpcode(0x07));
    // Login: T and C both set, reserved CSG 2, FFP as CSG, NSG going back.
    let login = |flags: u8| {
        let mut b = [0u8; 48];
        b[0] = 0x43;
        b[1] = flags;
        b
    };
    assert!(matches!(parse_err(&login(0xc0)), PduError::Protocol(_)));
    assert!(matches!(parse_err(&login(0x08)), PduError::InvalidField(_)));
    assert!(matches!(parse_err(&login(0x0c)), PduError::InvalidField(_)));
    assert!(matches!(parse_err(&login(0x84)), PduError::Protocol(_)));
    assert!(matches!(parse_err(&login(0x82)), PduError::InvalidField(_)));
    // Data-In: S without F, O/U without S, O and U.
    let data_in = |flags: u8| {
        let mut b = [0u8; 48];
        b[0] = 0x25;
        b[1] = flags;
        b
    };
    assert!(matches!(parse_err(&data_in(0x01)), PduError::Protocol(_)));
    assert!(matches!(
        parse_err(&data_in(0x82)),
        PduError::InvalidField(_)
    ));
    assert!(matches!(
        parse_err(&data_in(0x87)),
        PduError::InvalidField(_)
    ));
    // Data segment on PDUs that cannot carry one.
    for op in [0x02u8, 0x06, 0x10, 0x22, 0x26, 0x31] {
        let mut b = Pdu::parse(&Bhs::new_checked(&samples_bytes(op)[..]).unwrap())
            .unwrap()
            .to_bytes();
        b[7] = 4;
        assert!(
            matches!(parse_err(&b), PduError::InvalidField(_)),
            "{op:#x}"
        );
    }
    // Reserved ITT required on Reject and Async; forbidden on SCSI Command.
    let mut b = samples_bytes(0x3f);
    b[16..20].copy_from_slice(&[0, 0, 0, 1]);
    assert!(matches!(parse_err(&b), PduError::InvalidField(_)));
    let mut b = samples_bytes(0x01);
    b[16..20].copy_from_slice(&[0xff; 4]);
    assert!(matches!(parse_err(&b), PduError::InvalidField(_)));
    // Text with F and C.
    let mut b = samples_bytes(0x04);
    b[1] = 0xc0;
    assert!(matches!(parse_err(&b), PduError::Protocol(_)));
    // SCSI Response with O and U.
    let mut b = samples_bytes(0x21);
    b[1] = 0x86;
    assert!(matches!(parse_err(&b), PduError::InvalidField(_)));
    // NOP-Out with reserved ITT but not immediate.
    let mut b = samples_bytes(0x00);
    b[0] = 0x00;
    b[16..20].copy_from_slice(&[0xff; 4]);
    assert!(matches!(parse_err(&b), PduError::Protocol(_)));
    // A typed parser given another opcode.
    let b = samples_bytes(0x20);
    assert_eq!(
        NopOut::parse(&Bhs::new_checked(&b[..]).unwrap()),
        Err(PduError::BadOpcode(0x20))
    );
}

fn samples_bytes(op: u8) -> [u8; 48] {
    samples()
        .into_iter()
        .find(|p| p.opcode() as u8 == op)
        .unwrap()
        .to_bytes()
}

#[test]
fn error_actions() {
    use ErrorAction::*;
    assert_eq!(
        PduError::DataDigest {
            received: 0,
            computed: 1
        }
        .action(),
        Reject(RejectReason::DataDigestError)
    );
    assert_eq!(
        PduError::InvalidField("x").reject_reason(),
        Some(RejectReason::InvalidPduField)
    );
    assert_eq!(
        PduError::Protocol("x").reject_reason(),
        Some(RejectReason::ProtocolError)
    );
    assert_eq!(
        PduError::BadOpcode(0x1c).reject_reason(),
        Some(RejectReason::CommandNotSupported)
    );
    assert_eq!(
        PduError::Oversize { len: 2, max: 1 }.reject_reason(),
        Some(RejectReason::ProtocolError)
    );
    assert!(PduError::HeaderDigest {
        received: 0,
        computed: 1
    }
    .is_fatal());
    assert!(PduError::Truncated { need: 48, have: 0 }.is_fatal());
    assert!(!PduError::WrongDirection(Opcode::NopIn).is_fatal());
}

#[test]
fn frame_len_errors_and_sizes() {
    let limits = FrameLimits {
        digests: Digests::BOTH,
        max_data_segment_len: 8192,
    };
    assert_eq!(
        frame_len(&[0u8; 10], &limits),
        Err(PduError::Truncated { need: 48, have: 10 })
    );
    let mut b = [0u8; 48];
    b[0] = 0x3c;
    assert_eq!(frame_len(&b, &limits), Err(PduError::BadOpcode(0x3c)));
    b[0] = 0x05;
    b[5..8].copy_from_slice(&[0x00, 0x20, 0x01]);
    assert_eq!(
        frame_len(&b, &limits),
        Err(PduError::Oversize {
            len: 8193,
            max: 8192
        })
    );
    b[5..8].copy_from_slice(&[0x00, 0x00, 0x05]);
    b[4] = 2;
    let l = frame_len(&b, &limits).unwrap();
    // 48 + 8 AHS + 4 HD + 5 data + 3 pad + 4 DD
    assert_eq!(l.total_len(), 72);
    assert_eq!(l.header_len(), 60);
    b[5..8].copy_from_slice(&[0, 0, 0]);
    assert_eq!(frame_len(&b, &limits).unwrap().total_len(), 60);
    assert_eq!(
        frame_len(&b, &FrameLimits::LOGIN).unwrap().total_len(),
        56,
        "no digests during login"
    );
}

fn frame(pdu: &Pdu, data: &[u8], digests: Digests) -> Vec<u8> {
    let mut v = Vec::new();
    TxFrame::from_pdu(pdu, &[], data, digests)
        .unwrap()
        .write_to(&mut v);
    v
}

fn nop_out(itt: u32) -> Pdu {
    Pdu::NopOut(NopOut {
        immediate: true,
        lun: 0,
        itt,
        ttt: RESERVED_TAG,
        cmd_sn: 1,
        exp_stat_sn: 1,
    })
}

#[test]
fn reader_byte_by_byte_and_batched() {
    let limits = FrameLimits {
        digests: Digests::BOTH,
        max_data_segment_len: 65536,
    };
    let mut stream = Vec::new();
    for i in 0..50u32 {
        let data = vec![i as u8; (i as usize * 37) % 300];
        stream.extend(frame(&nop_out(i), &data, Digests::BOTH));
    }
    // Byte by byte.
    let mut rx = PduReader::new(Role::Target, limits);
    let mut seen = 0u32;
    for b in &stream {
        assert_eq!(rx.feed(std::slice::from_ref(b)), 1);
        while let Some(p) = rx.next_pdu().unwrap() {
            assert_eq!(p.pdu.itt(), seen);
            assert_eq!(p.data.len(), (seen as usize * 37) % 300);
            seen += 1;
        }
    }
    assert_eq!(seen, 50);
    assert!(rx.finish().is_ok());
    // In chunks of odd sizes.
    for chunk in [7usize, 48, 1000, 100_000] {
        let mut rx = PduReader::new(Role::Target, limits);
        let mut seen = 0u32;
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = rx.feed(&rest[..chunk.min(rest.len())]);
            rest = &rest[n..];
            while let Some(p) = rx.next_pdu().unwrap() {
                assert_eq!(p.pdu.itt(), seen);
                seen += 1;
            }
        }
        assert_eq!(seen, 50, "chunk {chunk}");
    }
}

#[test]
fn reader_large_pdus_are_read_in_place() {
    let limits = FrameLimits {
        digests: Digests::NONE,
        max_data_segment_len: 262_144,
    };
    let mut rx = PduReader::new(Role::Target, limits);
    let data = vec![0xa5u8; 262_144];
    let dout = Pdu::DataOut(DataOut {
        final_bit: true,
        lun: 0,
        itt: 1,
        ttt: 2,
        exp_stat_sn: 0,
        data_sn: 0,
        buffer_offset: 0,
    });
    let one = frame(&dout, &data, Digests::NONE);
    let stream: Vec<u8> = one
        .iter()
        .chain(one.iter())
        .chain(one.iter())
        .copied()
        .collect();
    let mut rest = &stream[..];
    let mut count = 0;
    while !rest.is_empty() {
        let buf = rx.read_buf();
        // Never reads past the end of a large PDU.
        assert!(buf.len() <= one.len());
        let n = buf.len().min(rest.len());
        buf[..n].copy_from_slice(&rest[..n]);
        rx.commit(n);
        rest = &rest[n..];
        while let Some(p) = rx.next_pdu().unwrap() {
            assert_eq!(p.data.len(), 262_144);
            count += 1;
        }
    }
    assert_eq!(count, 3);
}

#[test]
fn reader_truncated_at_eof() {
    let wire = frame(&nop_out(1), b"hello", Digests::NONE);
    let mut rx = PduReader::new(Role::Target, FrameLimits::LOGIN);
    rx.feed(&wire[..wire.len() - 1]);
    assert!(rx.next_pdu().unwrap().is_none());
    assert_eq!(
        rx.finish(),
        Err(PduError::Truncated {
            need: wire.len(),
            have: wire.len() - 1
        })
    );
    let mut rx = PduReader::new(Role::Target, FrameLimits::LOGIN);
    rx.feed(&wire[..20]);
    assert!(matches!(rx.finish(), Err(PduError::Truncated { .. })));
}

#[test]
fn reader_oversize_is_skipped() {
    let limits = FrameLimits {
        digests: Digests::NONE,
        max_data_segment_len: 8192,
    };
    let mut stream = frame(&nop_out(1), &vec![1u8; 9000], Digests::NONE);
    stream.extend(frame(&nop_out(2), b"ok", Digests::NONE));
    let mut rx = PduReader::new(Role::Target, limits);
    let mut rest = &stream[..];
    let mut events = Vec::new();
    while !rest.is_empty() {
        let n = rx.feed(rest);
        rest = &rest[n..];
        loop {
            match rx.next_pdu() {
                Ok(Some(p)) => events.push(Ok(p.pdu.itt())),
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(rx.rejected_header().unwrap()[16..20], [0, 0, 0, 1]);
                    events.push(Err(e));
                }
            }
        }
    }
    assert_eq!(
        events,
        vec![
            Err(PduError::Oversize {
                len: 9000,
                max: 8192
            }),
            Ok(2)
        ]
    );
}

#[test]
fn reader_bad_data_digest_rejects_and_continues() {
    let mut bad = frame(&nop_out(1), b"payload!", Digests::BOTH);
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    let mut stream = bad.clone();
    stream.extend(frame(&nop_out(2), b"ok", Digests::BOTH));
    let mut rx = PduReader::new(
        Role::Target,
        FrameLimits {
            digests: Digests::BOTH,
            max_data_segment_len: 8192,
        },
    );
    rx.feed(&stream);
    let e = rx.next_pdu().unwrap_err();
    assert!(matches!(e, PduError::DataDigest { .. }));
    assert_eq!(e.reject_reason(), Some(RejectReason::DataDigestError));
    assert_eq!(rx.rejected_header().unwrap()[..], bad[..48]);
    assert_eq!(rx.next_pdu().unwrap().unwrap().pdu.itt(), 2);
    assert!(rx.rejected_header().is_none());
}

#[test]
fn reader_bad_header_digest_is_fatal() {
    let mut stream = frame(&nop_out(1), b"", Digests::BOTH);
    stream[48] ^= 1;
    stream.extend(frame(&nop_out(2), b"", Digests::BOTH));
    let mut rx = PduReader::new(
        Role::Target,
        FrameLimits {
            digests: Digests::BOTH,
            max_data_segment_len: 8192,
        },
    );
    rx.feed(&stream);
    let e = rx.next_pdu().unwrap_err();
    assert!(matches!(e, PduError::HeaderDigest { .. }));
    assert!(e.is_fatal());
    assert_eq!(rx.next_pdu().unwrap_err(), e);
}

#[test]
fn reader_unknown_opcode_and_wrong_direction() {
    let mut junk = [0u8; 48];
    junk[0] = 0x1d;
    junk[7] = 3; // 3 bytes of data + 1 pad
    let mut stream = junk.to_vec();
    stream.extend_from_slice(&[9, 9, 9, 0]);
    let nop_in = Pdu::NopIn(NopIn {
        itt: 5,
        ttt: RESERVED_TAG,
        ..Default::default()
    });
    stream.extend(frame(&nop_in, b"", Digests::NONE));
    stream.extend(frame(&nop_out(3), b"", Digests::NONE));
    let mut rx = PduReader::new(Role::Target, FrameLimits::LOGIN);
    rx.feed(&stream);
    assert_eq!(rx.next_pdu().unwrap_err(), PduError::BadOpcode(0x1d));
    assert_eq!(
        rx.next_pdu().unwrap_err(),
        PduError::WrongDirection(Opcode::NopIn)
    );
    assert_eq!(rx.next_pdu().unwrap().unwrap().pdu.itt(), 3);
    assert!(rx.next_pdu().unwrap().is_none());
}

#[test]
fn reader_invalid_field_is_skipped() {
    let mut tmf = samples_bytes(0x02).to_vec();
    tmf[1] = 0x01; // F bit clear
    tmf.extend(frame(&nop_out(4), b"", Digests::NONE));
    let mut rx = PduReader::new(Role::Target, FrameLimits::LOGIN);
    rx.feed(&tmf);
    let e = rx.next_pdu().unwrap_err();
    assert_eq!(e.reject_reason(), Some(RejectReason::InvalidPduField));
    assert_eq!(rx.next_pdu().unwrap().unwrap().pdu.itt(), 4);
}

#[test]
fn extended_cdb_through_ahs_and_header_digest() {
    let cdb: Vec<u8> = (0..32u8).map(|i| i ^ 0x7f).collect();
    let full = Cdb::from_slice(&cdb).unwrap();
    let mut ahs_buf = [0u8; MAX_TOTAL_AHS_LEN];
    let n = AhsSet {
        extended_cdb: full.extension(),
        bidi_read_data_length: Some(4096),
    }
    .emit(&mut ahs_buf)
    .unwrap();
    let cmd = Pdu::ScsiCommand(ScsiCommand {
        immediate: false,
        final_bit: true,
        read: true,
        write: true,
        attr: TaskAttr::Simple,
        lun: 0,
        itt: 77,
        expected_data_transfer_length: 4096,
        cmd_sn: 1,
        exp_stat_sn: 1,
        cdb: full.base(),
    });
    let f = TxFrame::from_pdu(&cmd, &ahs_buf[..n], &[], Digests::BOTH).unwrap();
    let s = f.slices();
    assert_eq!(s[0].len(), 48);
    assert_eq!(s[1].len(), n);
    assert_eq!(s[2].len(), 4);
    assert_eq!(f.header()[4] as usize, n / 4);
    assert_eq!(
        f.io_slices().iter().map(|s| s.len()).sum::<usize>(),
        f.wire_len()
    );
    let mut wire = Vec::new();
    f.write_to(&mut wire);
    let mut rx = PduReader::new(
        Role::Target,
        FrameLimits {
            digests: Digests::BOTH,
            max_data_segment_len: 8192,
        },
    );
    rx.feed(&wire);
    let got = rx.next_pdu().unwrap().unwrap();
    assert_eq!(got.cdb().unwrap().as_bytes(), &cdb[..]);
    assert_eq!(got.ahs.bidi_read_data_length, Some(4096));
}

#[test]
fn bad_ahs_in_stream_is_invalid_field() {
    let cmd = Pdu::ScsiCommand(rfc_read10());
    // AHSLength 16 in a 4-byte TotalAHSLength.
    let ahs = [0x00, 0x10, 0x01, 0x00];
    let mut wire = Vec::new();
    TxFrame::from_pdu(&cmd, &ahs, &[], Digests::NONE)
        .unwrap()
        .write_to(&mut wire);
    let mut rx = PduReader::new(Role::Target, FrameLimits::LOGIN);
    rx.feed(&wire);
    assert!(matches!(
        rx.next_pdu().unwrap_err(),
        PduError::InvalidField(_)
    ));
    assert!(TxFrame::from_pdu(&cmd, &[1, 2, 3], &[], Digests::NONE).is_err());
}

#[test]
fn set_limits_grows_between_pdus() {
    let mut rx = PduReader::new(Role::Target, FrameLimits::LOGIN);
    let first = frame(&nop_out(1), b"", Digests::NONE);
    let big = frame(&nop_out(2), &vec![3u8; 100_000], Digests::BOTH);
    rx.feed(&first);
    assert_eq!(rx.next_pdu().unwrap().unwrap().pdu.itt(), 1);
    rx.set_limits(FrameLimits {
        digests: Digests::BOTH,
        max_data_segment_len: 262_144,
    });
    let mut rest = &big[..];
    let mut got = None;
    while got.is_none() {
        let n = rx.feed(rest);
        rest = &rest[n..];
        if let Some(p) = rx.next_pdu().unwrap() {
            got = Some(p.data.len());
        }
    }
    assert_eq!(got, Some(100_000));
}

/// Deterministic xorshift noise: no input may panic the parsers or the reader.
#[test]
fn garbage_never_panics() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut parsed, mut yielded, mut errors) = (0, 0, 0);
    for _ in 0..20_000 {
        let mut b = [0u8; 48];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&next().to_le_bytes());
        }
        // Bias towards valid opcodes so the typed parsers run.
        let ops = [
            0u8, 1, 2, 3, 4, 5, 6, 0x10, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x31, 0x32, 0x3f,
        ];
        b[0] = ops[(next() % ops.len() as u64) as usize] | (b[0] & 0xc0);
        if let Ok(p) = Pdu::parse(&Bhs::new_checked(&b[..]).unwrap()) {
            parsed += 1;
            // A parsed header re-emits to something that parses the same.
            let again = p.to_bytes();
            assert_eq!(
                Pdu::parse(&Bhs::new_checked(&again[..]).unwrap()).unwrap(),
                p
            );
        }
        let _ = AhsSet::parse(&b[..(next() % 48) as usize]);
    }
    for role in [Role::Target, Role::Initiator] {
        for digests in [Digests::NONE, Digests::BOTH] {
            let mut rx = PduReader::new(
                role,
                FrameLimits {
                    digests,
                    max_data_segment_len: 4096,
                },
            );
            for _ in 0..5_000 {
                let mut chunk = vec![0u8; (next() % 200) as usize];
                for c in chunk.iter_mut() {
                    *c = next() as u8;
                }
                if next() % 3 == 0 {
                    let valid = match role {
                        Role::Target => nop_out(1),
                        Role::Initiator => Pdu::NopIn(NopIn::default()),
                    };
                    chunk = frame(&valid, b"abc", digests);
                } else if next() % 4 == 0 {
                    // Small lengths so whole PDUs complete now and then.
                    if let Some(b) = chunk.get_mut(4..8) {
                        b.copy_from_slice(&[0, 0, 0, (next() % 16) as u8]);
                    }
                }
                let mut rest = &chunk[..];
                let mut guard = 0;
                while !rest.is_empty() && guard < 1000 {
                    guard += 1;
                    let n = rx.feed(rest);
                    rest = &rest[n..];
                    match rx.next_pdu() {
                        Err(e) if e.is_fatal() => {
                            rx = PduReader::new(role, rx.limits());
                            errors += 1;
                        }
                        Err(_) => errors += 1,
                        Ok(Some(_)) => yielded += 1,
                        Ok(None) => {}
                    }
                }
            }
            let _ = rx.finish();
        }
    }
    eprintln!("parsed {parsed}, yielded {yielded}, errors {errors}");
    assert!(parsed > 1000 && yielded > 10 && errors > 100);
}

#[test]
fn a_bad_bhs_is_refused_as_soon_as_its_48_bytes_are_in() {
    // Reserved opcode, TotalAHSLength 255 words, no digests: refused at 48 bytes (not after
    // 1020 bytes of "AHS"), skipped whole, non-fatal.
    let mut junk = [0x5au8; 48];
    junk[0] = 0x1d;
    junk[4] = 0xff;
    junk[5..8].copy_from_slice(&[0, 0, 0]);
    let mut rx = PduReader::new(Role::Target, FrameLimits::LOGIN);
    assert_eq!(rx.feed(&junk), 48);
    let e = rx.next_pdu().unwrap_err();
    assert_eq!(e, PduError::BadOpcode(0x1d));
    assert!(!e.is_fatal());
    assert_eq!(rx.rejected_header(), Some(&junk));
    // The 1020 AHS bytes are discarded as they come; the next PDU parses.
    let mut rest = vec![0u8; 1020];
    rest.extend(frame(&nop_out(7), b"", Digests::NONE));
    let mut fed = 0;
    let mut got = None;
    while fed < rest.len() {
        fed += rx.feed(&rest[fed..]);
        if let Some(p) = rx.next_pdu().unwrap() {
            got = Some(p.pdu);
        }
    }
    assert_eq!(got, Some(nop_out(7)));

    // A target opcode sent to a target, with digests on: framing is lost at 48 bytes.
    let limits = FrameLimits {
        digests: Digests::BOTH,
        max_data_segment_len: 8192,
    };
    let mut junk = [0u8; 48];
    junk[0] = 0x21;
    junk[4] = 0x40;
    let mut rx = PduReader::new(Role::Target, limits);
    rx.feed(&junk);
    let e = rx.next_pdu().unwrap_err();
    assert!(matches!(e, PduError::Unframed(_)) && e.is_fatal(), "{e:?}");

    // DataSegmentLength over the limit: refused before any data arrives.
    let mut big = frame(&nop_out(8), b"", Digests::NONE);
    big[5..8].copy_from_slice(&[0x10, 0, 0]);
    let mut rx = PduReader::new(Role::Target, FrameLimits::LOGIN);
    rx.feed(&big[..48]);
    assert!(matches!(
        rx.next_pdu(),
        Err(PduError::Oversize {
            len: 0x10_0000,
            max: 8192
        })
    ));
}
