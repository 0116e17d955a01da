//! iscsit end to end, PDU by PDU: a raw initiator (idm's codec over a TCP socket) logs in
//! to a core running iscsit and the example RAM LU, and checks the exact fields the
//! target sends: Data-In segmentation, DataSN, F and S bits, residuals, R2T/R2TSN with
//! MaxOutstandingR2T, immediate and unsolicited data, the CmdSN window, NOP, TMF, logout,
//! Async logout on offline, MC/S, session and connection reinstatement, discovery, digests
//! and bad input.
//!
//! The provider libraries come from the workspace's target directory: run
//! `cargo build --workspace` first.

mod iscsi_common;

use idm::pdu::{
    AsyncEvent, LogoutReason, LogoutResponseCode, Pdu, RejectReason, TmfFunction, TmfResponse,
    RESERVED_TAG,
};
use iscsi_common::*;
use std::time::Duration;

fn logged_in(s: &Setup, o: &LoginOpts) -> Ini {
    let mut i = Ini::connect(s.portal);
    assert_eq!(i.login(o), (0, 0), "login refused");
    i
}

/// Writes `data` at LBA 0 through R2Ts and reads it back.
fn write_then_read(i: &mut Ini, data: &[u8]) -> CmdResult {
    let blocks = (data.len() / 512) as u32;
    let w = i.scsi(&write16(0, blocks), 0, data, None);
    assert_eq!(w.status, 0, "write: {w:?}");
    let r = i.scsi(&read16(0, blocks), data.len() as u32, &[], None);
    assert_eq!(r.status, 0);
    assert!(r.data == data, "read back differs");
    r
}

#[test]
fn read_is_segmented_and_collapses_status_into_the_last_data_in() {
    let s = Setup::new();
    let mut i = logged_in(&s, &LoginOpts::normal());
    let data = pattern(64 * 1024, 1);
    let r = write_then_read(&mut i, &data);
    // MaxRecvDataSegmentLength 8192 → 8 Data-In, DataSN 0..7, no SCSI Response.
    assert_eq!(r.pdus.len(), 8, "{:?}", r.pdus);
    for (n, p) in r.pdus.iter().enumerate() {
        let Pdu::DataIn(d) = p else {
            panic!("PDU {n} is {p:?}");
        };
        assert_eq!(d.data_sn, n as u32);
        assert_eq!(d.buffer_offset, n as u32 * 8192);
        assert_eq!(d.ttt, RESERVED_TAG);
        let last = n == 7;
        assert_eq!(d.final_bit, last, "F bit of PDU {n}");
        assert_eq!(d.status.is_some(), last, "S bit of PDU {n}");
    }
    let Pdu::DataIn(last) = r.pdus[7] else {
        unreachable!()
    };
    let st = last.status.expect("status collapsed");
    assert_eq!(
        (st.status, st.overflow, st.underflow, st.residual_count),
        (0, false, false, 0)
    );
    assert_eq!(i.exp_stat_sn, st.stat_sn.wrapping_add(1));
}

#[test]
fn long_read_ends_a_sequence_every_max_burst_length() {
    let s = Setup::new();
    let mut i = logged_in(&s, &LoginOpts::normal());
    let data = pattern(256 * 1024, 2);
    let r = write_then_read(&mut i, &data);
    assert_eq!(r.pdus.len(), 32);
    for (n, p) in r.pdus.iter().enumerate() {
        let Pdu::DataIn(d) = p else {
            panic!("PDU {n} is {p:?}");
        };
        assert_eq!(d.data_sn, n as u32, "DataSN runs on across buffers");
        // MaxBurstLength 65536 = 8 PDUs of 8192.
        assert_eq!(d.final_bit, n % 8 == 7, "F bit of PDU {n}");
        assert_eq!(d.status.is_some(), n == 31);
    }
}

#[test]
fn residuals_overflow_and_underflow() {
    let s = Setup::new();
    let mut i = logged_in(&s, &LoginOpts::normal());
    // One block with EDTL 10000: underflow 9488, still collapsed into the Data-In.
    let r = i.scsi(&read16(0, 1), 10_000, &[], None);
    assert_eq!(r.status, 0);
    assert_eq!(r.residual, (false, true, 9488));
    assert!(matches!(r.pdus.last(), Some(Pdu::DataIn(d)) if d.status.is_some()));
    // Two blocks with EDTL one block: overflow 512.
    let r = i.scsi(&read16(0, 2), 512, &[], Some(512));
    assert_eq!(r.residual, (true, false, 512));
    // EDTL 0: nothing moves, overflow of the whole block, a SCSI Response.
    let r = i.scsi(&read16(0, 1), 0, &[], Some(0));
    assert_eq!(r.residual, (true, false, 512));
    assert!(matches!(r.pdus[..], [Pdu::ScsiResponse(_)]));
    // Write of 1 block with EDTL 10000 (all immediate data): underflow 10000 - 512.
    let mut o = LoginOpts::normal().key("FirstBurstLength", "16384");
    o.isid = [0x80, 0, 0, 0, 0, 9];
    let mut j = logged_in(&s, &o);
    let r = j.scsi(&write16(0, 1), 0, &pattern(10_000, 3), None);
    assert_eq!(r.status, 0);
    assert_eq!(r.residual, (false, true, 9488));
}

#[test]
fn r2ts_keep_max_outstanding_r2t_in_flight() {
    let s = Setup::new();
    let o = LoginOpts::normal()
        .key("ImmediateData", "No")
        .key("MaxOutstandingR2T", "2");
    let mut i = logged_in(&s, &o);
    let data = pattern(256 * 1024, 4);
    let cmd = i.command(&write16(0, 512), false, true, data.len() as u32);
    let itt = cmd.itt;
    i.send(&Pdu::ScsiCommand(cmd), &[]);
    let mut outstanding = Vec::new();
    for _ in 0..2 {
        match i.recv().pdu {
            Pdu::R2t(r) => outstanding.push(r),
            other => panic!("expected an R2T, got {other:?}"),
        }
    }
    assert!(
        i.recv_timeout(Duration::from_millis(300)).is_none(),
        "no more than MaxOutstandingR2T (2) R2Ts"
    );
    let mut next_sn = 0;
    let mut issued = 2;
    let mut ttts = Vec::new();
    while let Some(r) = (!outstanding.is_empty()).then(|| outstanding.remove(0)) {
        assert_eq!(r.itt, itt);
        assert_eq!(r.r2t_sn, next_sn, "R2TSN");
        assert_eq!(r.buffer_offset, next_sn * 65536);
        assert_eq!(r.desired_data_transfer_length, 65536, "≤ MaxBurstLength");
        assert!(!ttts.contains(&r.ttt), "TTTs are unique");
        ttts.push(r.ttt);
        next_sn += 1;
        // Answer it: 8 Data-Out of 8 KiB, DataSN 0..7, F on the last.
        let off = r.buffer_offset as usize;
        for k in 0..8usize {
            let d = idm::pdu::DataOut {
                final_bit: k == 7,
                lun: 0,
                itt,
                ttt: r.ttt,
                exp_stat_sn: i.exp_stat_sn,
                data_sn: k as u32,
                buffer_offset: (off + k * 8192) as u32,
            };
            let chunk = data[off + k * 8192..off + (k + 1) * 8192].to_vec();
            i.send(&Pdu::DataOut(d), &chunk);
        }
        // A finished sequence frees a slot: the next R2T follows at once.
        if issued < 4 {
            match i.recv().pdu {
                Pdu::R2t(r) => outstanding.push(r),
                other => panic!("expected the next R2T, got {other:?}"),
            }
            issued += 1;
        }
    }
    assert_eq!(next_sn, 4);
    match i.recv().pdu {
        Pdu::ScsiResponse(r) => {
            assert_eq!(r.itt, itt);
            assert_eq!((r.status, r.overflow, r.underflow), (0, false, false));
        }
        other => panic!("expected the SCSI Response, got {other:?}"),
    }
    let r = i.scsi(&read16(0, 512), data.len() as u32, &[], None);
    assert!(r.data == data);
}

#[test]
fn immediate_and_unsolicited_data_then_r2t() {
    let s = Setup::new();
    let o = LoginOpts::normal()
        .key("InitialR2T", "No")
        .key("FirstBurstLength", "16384");
    let mut i = logged_in(&s, &o);
    assert!(!i.initial_r2t);
    i.imm_max = 4096;
    let data = pattern(64 * 1024, 5);
    // 4 KiB immediate, unsolicited Data-Out to 16 KiB (F), then R2Ts from 16 KiB.
    let w = i.scsi(&write16(8, 128), 0, &data, None);
    assert_eq!(w.status, 0, "{w:?}");
    let r2ts: Vec<_> = w
        .pdus
        .iter()
        .filter_map(|p| match p {
            Pdu::R2t(r) => Some(r.buffer_offset),
            _ => None,
        })
        .collect();
    assert_eq!(
        r2ts.first(),
        Some(&16384),
        "R2Ts start after the unsolicited burst"
    );
    let r = i.scsi(&read16(8, 128), data.len() as u32, &[], None);
    assert!(r.data == data);
}

#[test]
fn a_broken_data_out_sequence_ends_the_command_not_the_connection() {
    let s = Setup::new();
    let o = LoginOpts::normal()
        .key("InitialR2T", "No")
        .key("ImmediateData", "No");
    let mut i = logged_in(&s, &o);
    let cmd = {
        let mut c = i.command(&write16(100, 2), false, true, 1024);
        c.final_bit = false;
        c
    };
    let itt = cmd.itt;
    i.send(&Pdu::ScsiCommand(cmd), &[]);
    for off in [0u32, 512] {
        let d = idm::pdu::DataOut {
            final_bit: off == 512,
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            exp_stat_sn: i.exp_stat_sn,
            data_sn: 0, // the second one should be 1
            buffer_offset: off,
        };
        i.send(&Pdu::DataOut(d), &[0xa6; 512]);
    }
    let r = i.finish(itt, 0, &[]);
    assert_eq!(r.status, 2, "CHECK CONDITION");
    assert_eq!(
        (r.sense[2] & 0x0f, r.sense[12], r.sense[13]),
        (0x0b, 0x4b, 0x00),
        "ABORTED COMMAND, DATA PHASE ERROR"
    );
    let n = i.ping(b"still here");
    assert!(matches!(n.pdu, Pdu::NopIn(_)));
    assert_eq!(n.data, b"still here");
}

#[test]
fn cmdsn_window_holds_gaps_and_ignores_outsiders() {
    let s = Setup::new();
    let mut i = logged_in(&s, &LoginOpts::normal());
    let tur = [0u8; 6];
    // CmdSN exp+1 first: held until exp arrives, then both run in order.
    let mut first = i.command(&tur, false, false, 0);
    let mut second = i.command(&tur, false, false, 0);
    std::mem::swap(&mut first.cmd_sn, &mut second.cmd_sn);
    i.send(&Pdu::ScsiCommand(first), &[]);
    assert!(
        i.recv_timeout(Duration::from_millis(300)).is_none(),
        "gap: held"
    );
    i.send(&Pdu::ScsiCommand(second), &[]);
    let a = i.recv();
    let b = i.recv();
    let itts: Vec<u32> = [a.pdu, b.pdu].iter().map(Pdu::itt).collect();
    assert_eq!(itts, [second.itt, first.itt], "delivered in CmdSN order");
    // Beyond MaxCmdSN and below ExpCmdSN: ignored.
    let mut far = i.command(&tur, false, false, 0);
    far.cmd_sn = far.cmd_sn.wrapping_add(1000);
    i.cmd_sn = i.cmd_sn.wrapping_sub(1);
    i.send(&Pdu::ScsiCommand(far), &[]);
    let mut old = i.command(&tur, false, false, 0);
    old.cmd_sn = old.cmd_sn.wrapping_sub(5);
    i.cmd_sn = i.cmd_sn.wrapping_sub(1);
    i.send(&Pdu::ScsiCommand(old), &[]);
    assert!(
        i.recv_timeout(Duration::from_millis(300)).is_none(),
        "ignored"
    );
    let r = i.scsi(&tur, 0, &[], None);
    assert_eq!(r.status, 0);
}

#[test]
fn nop_out_is_answered_and_idle_connections_are_pinged_then_dropped() {
    let s = Setup::with_defaults(r#"{"nop_interval_ms":300,"nop_timeout_ms":600}"#);
    let mut i = logged_in(&s, &LoginOpts::normal());
    let before = i.exp_stat_sn;
    let r = i.ping(b"ping data");
    let Pdu::NopIn(n) = r.pdu else {
        panic!("expected NOP-In, got {:?}", r.pdu)
    };
    assert_eq!(
        (n.ttt, r.data.as_slice()),
        (RESERVED_TAG, &b"ping data"[..])
    );
    assert_eq!(n.sn.stat_sn, before, "the NOP-In takes the next StatSN");
    // Idle: the target pings (ITT reserved, a TTT to echo); answering keeps it alive.
    let ping = i
        .recv_timeout(Duration::from_secs(3))
        .expect("keepalive NOP-In");
    let Pdu::NopIn(p) = ping.pdu else {
        panic!("expected a keepalive NOP-In, got {:?}", ping.pdu)
    };
    assert_eq!(p.itt, RESERVED_TAG);
    assert_ne!(p.ttt, RESERVED_TAG);
    i.answer_ping(p.ttt, p.lun);
    assert!(i.scsi(&[0u8; 6], 0, &[], None).status == 0);
    // Unanswered pings: the connection and its session are dropped.
    assert!(
        i.closed_within(Duration::from_secs(5)),
        "dead connection dropped"
    );
    assert!(s.wait_sessions(0));
}

#[test]
fn task_management() {
    let s = Setup::new();
    let o = LoginOpts::normal().key("ImmediateData", "No");
    let mut i = logged_in(&s, &o);
    let code = |r: Rx| match r.pdu {
        Pdu::TaskMgmtResponse(t) => t.response,
        other => panic!("expected a TMF response, got {other:?}"),
    };
    assert_eq!(
        code(i.tmf(TmfFunction::AbortTask, 0x7777)),
        TmfResponse::TaskDoesNotExist
    );
    assert_eq!(
        code(i.tmf(TmfFunction::LogicalUnitReset, RESERVED_TAG)),
        TmfResponse::FunctionComplete
    );
    assert_eq!(
        code(i.tmf(TmfFunction::QueryTaskSet, RESERVED_TAG)),
        TmfResponse::NotSupported
    );
    assert_eq!(
        code(i.tmf(TmfFunction::TaskReassign, 1)),
        TmfResponse::ReassignmentNotSupported
    );
    // Abort a write that waits for its data: FUNCTION COMPLETE, and no response for it.
    let cmd = i.command(&write16(0, 128), false, true, 65536);
    let itt = cmd.itt;
    i.send(&Pdu::ScsiCommand(cmd), &[]);
    assert!(matches!(i.recv().pdu, Pdu::R2t(r) if r.itt == itt));
    assert_eq!(
        code(i.tmf(TmfFunction::AbortTask, itt)),
        TmfResponse::FunctionComplete
    );
    assert!(
        i.recv_timeout(Duration::from_millis(500)).is_none(),
        "no status for the aborted task"
    );
    assert!(matches!(i.ping(b"").pdu, Pdu::NopIn(_)));
}

#[test]
fn logout_closes_the_session() {
    let s = Setup::new();
    let mut i = logged_in(&s, &LoginOpts::normal());
    assert!(s.wait_sessions(1));
    let r = i.logout(LogoutReason::CloseSession, 0);
    assert!(matches!(r.pdu, Pdu::LogoutResponse(l) if l.response == LogoutResponseCode::Success));
    assert!(i.closed_within(Duration::from_secs(5)));
    assert!(s.wait_sessions(0));
}

#[test]
fn multiple_connections_per_session() {
    let s = Setup::new();
    let mut a = logged_in(&s, &LoginOpts::normal());
    let o = LoginOpts::added(a.tsih, 1);
    let mut b = Ini::connect(s.portal);
    b.cmd_sn = a.cmd_sn;
    assert_eq!(b.login(&o), (0, 0));
    assert_eq!(b.tsih, a.tsih);
    assert_eq!(s.core_sessions(), 1, "one I_T nexus");
    // The CmdSN sequence is the session's.
    b.cmd_sn = a.cmd_sn;
    let data = pattern(32 * 1024, 6);
    assert_eq!(b.scsi(&write16(0, 64), 0, &data, None).status, 0);
    a.cmd_sn = b.cmd_sn;
    let r = a.scsi(&read16(0, 64), data.len() as u32, &[], None);
    assert!(r.data == data);
    b.cmd_sn = a.cmd_sn;
    // Close connection 1 only.
    let r = b.logout(LogoutReason::CloseConnection, 1);
    assert!(matches!(r.pdu, Pdu::LogoutResponse(l) if l.response == LogoutResponseCode::Success));
    assert!(b.closed_within(Duration::from_secs(5)));
    a.cmd_sn = b.cmd_sn;
    assert_eq!(
        a.scsi(&[0u8; 6], 0, &[], None).status,
        0,
        "connection 0 lives on"
    );
    assert_eq!(s.core_sessions(), 1);
    // A too-many-connections login is refused: MaxConnections is 4.
    let r = a.logout(LogoutReason::CloseSession, 0);
    assert!(matches!(r.pdu, Pdu::LogoutResponse(_)));
    assert!(s.wait_sessions(0));
}

#[test]
fn session_reinstatement_replaces_the_old_session() {
    let s = Setup::new();
    let mut a = logged_in(&s, &LoginOpts::normal());
    let old = a.tsih;
    let mut b = logged_in(&s, &LoginOpts::normal());
    assert_ne!(b.tsih, old);
    assert!(
        a.closed_within(Duration::from_secs(5)),
        "old session's connection closed"
    );
    assert!(s.wait_sessions(1));
    assert_eq!(b.scsi(&[0u8; 6], 0, &[], None).status, 0);
}

#[test]
fn connection_reinstatement_replaces_the_old_connection() {
    let s = Setup::new();
    let mut a = logged_in(&s, &LoginOpts::normal());
    let o = LoginOpts::added(a.tsih, 0);
    let mut b = Ini::connect(s.portal);
    b.cmd_sn = a.cmd_sn;
    assert_eq!(b.login(&o), (0, 0));
    assert!(
        a.closed_within(Duration::from_secs(5)),
        "old connection closed"
    );
    assert_eq!(s.core_sessions(), 1, "same session");
    assert_eq!(b.scsi(&[0u8; 6], 0, &[], None).status, 0);
}

#[test]
fn going_offline_asks_initiators_to_log_out() {
    let s = Setup::new();
    let mut i = logged_in(&s, &LoginOpts::normal());
    let stmf = s.h.stmf().clone();
    let t = std::thread::spawn(move || stmf.offline_target(TARGET));
    let r = i.recv();
    let Pdu::AsyncMessage(m) = r.pdu else {
        panic!("expected an Async Message, got {:?}", r.pdu)
    };
    assert_eq!(m.event, AsyncEvent::LogoutRequest);
    assert_eq!(m.parameter3, 2, "seconds to log out within");
    let r = i.logout(LogoutReason::CloseSession, 0);
    assert!(matches!(r.pdu, Pdu::LogoutResponse(_)));
    t.join().expect("offline thread").expect("offline-target");
    // Offline: logins get 0x0301 (service unavailable); online again: they work.
    let mut j = Ini::connect(s.portal);
    assert_eq!(j.login(&LoginOpts::normal()), (3, 1));
    s.h.stmf().online_target(TARGET).expect("online-target");
    let _ = logged_in(&s, &LoginOpts::normal());
}

#[test]
fn discovery_lists_only_targets_the_initiator_may_access() {
    let s = Setup::new();
    let send_targets = |initiator: &str| -> String {
        let mut o = LoginOpts::normal();
        o.target = None;
        o.initiator = initiator.into();
        let mut i = logged_in(&s, &o);
        let r = i.text("SendTargets=All");
        assert!(matches!(r.pdu, Pdu::TextResponse(t) if t.final_bit));
        String::from_utf8_lossy(&r.data).replace('\0', "\n")
    };
    let all = send_targets(INITIATOR);
    assert!(all.contains(&format!("TargetName={TARGET}")), "{all}");
    assert!(
        all.contains(&format!("TargetAddress={},", s.portal)),
        "{all}"
    );
    assert!(!all.contains(HIDDEN), "hidden target leaked: {all}");
    let allowed = send_targets(ALLOWED);
    assert!(allowed.contains(HIDDEN), "{allowed}");
    // A normal session may ask about its own target only.
    let mut i = logged_in(&s, &LoginOpts::normal());
    let r = i.text("SendTargets=");
    let own = String::from_utf8_lossy(&r.data).to_string();
    assert!(own.contains(TARGET) && !own.contains(HIDDEN), "{own}");
    // The hidden target refuses the initiator's login (authorization failure).
    let mut o = LoginOpts::normal();
    o.target = Some(HIDDEN.into());
    let mut j = Ini::connect(s.portal);
    assert_eq!(j.login(&o), (2, 2));
}

#[test]
fn digests_on_both_ways() {
    let s = Setup::new();
    let o = LoginOpts::normal()
        .key("HeaderDigest", "CRC32C")
        .key("DataDigest", "CRC32C");
    let mut i = logged_in(&s, &o);
    assert!(i.digests.header && i.digests.data, "digests negotiated");
    let data = pattern(96 * 1024, 7);
    write_then_read(&mut i, &data);
    assert!(matches!(i.ping(b"with digests").pdu, Pdu::NopIn(_)));
}

/// A raw PDU as `i` would frame it (its digests), for tests that then damage it.
fn framed(i: &Ini, pdu: &Pdu, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    idm::pdu::TxFrame::from_pdu(pdu, &[], data, i.digests)
        .expect("frame")
        .write_to(&mut out);
    out
}

/// An immediate NOP-Out ping of `i` (the caller sends it).
fn nop(i: &mut Ini) -> Pdu {
    let itt = i.next_itt();
    Pdu::NopOut(idm::pdu::NopOut {
        immediate: true,
        lun: 0,
        itt,
        ttt: RESERVED_TAG,
        cmd_sn: i.cmd_sn,
        exp_stat_sn: i.exp_stat_sn,
    })
}

/// The next PDU is a Reject with `reason` carrying `header` back.
#[track_caller]
fn expect_reject(i: &mut Ini, reason: RejectReason, header: &[u8]) {
    let r = i.recv();
    match r.pdu {
        Pdu::Reject(rj) => {
            assert_eq!(rj.reason, reason, "{rj:?}");
            assert_eq!(
                &r.data[..48],
                &header[..48],
                "the rejected header comes back"
            );
            i.exp_stat_sn = rj.sn.stat_sn.wrapping_add(1);
        }
        other => panic!("expected a Reject ({reason:?}), got {other:?}"),
    }
}

#[test]
fn bad_input_gets_the_protocol_answer_and_spares_other_sessions() {
    let s = Setup::new();
    let portal = s.portal;
    // A session that keeps writing and reading (and checking) while the others misbehave.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut o = LoginOpts::normal();
            o.isid = [0x80, 0, 0, 0, 0, 0x40];
            let mut good = Ini::connect(portal);
            assert_eq!(good.login(&o), (0, 0));
            let mut rounds = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let data = pattern(64 * 1024, rounds as u8);
                let lba = 8192;
                assert_eq!(good.scsi(&write16(lba, 128), 0, &data, None).status, 0);
                let r = good.scsi(&read16(lba, 128), data.len() as u32, &[], None);
                assert!(r.data == data, "round {rounds}: data differs");
                rounds += 1;
            }
            (rounds, good)
        })
    };
    let isid = |n: u8| {
        let mut o = LoginOpts::normal();
        o.isid = [0x80, 0, 0, 0, 0, n];
        o
    };
    let quick = Duration::from_secs(3);

    // Garbage before login: a target opcode, a reserved one, and junk whose AHS length
    // (0x5a words) promises bytes that never come: each dropped at once (the BHS is
    // checked as soon as 48 bytes are in, not after the 20 s login timer).
    for (op, ahs) in [(0x23u8, 0u8), (0x1f, 0), (0x5a, 0x5a), (0x3f, 0xff)] {
        let mut g = Ini::connect(s.portal);
        let mut junk = [0x5au8; 48];
        junk[0] = op;
        junk[4] = ahs;
        junk[5..8].copy_from_slice(&[0; 3]);
        g.send_raw(&junk).expect("send");
        assert!(
            g.closed_within(quick),
            "garbage login {op:#x} (AHS {ahs:#x}) dropped"
        );
    }
    // Text that is not iSCSI at all ("G" = reserved opcode 0x07 once 48 bytes are in).
    let mut g = Ini::connect(s.portal);
    g.send_raw(b"GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: curl/8\r\n\r\n")
        .expect("send");
    assert!(g.closed_within(quick), "HTTP request dropped");

    // An unknown opcode in full feature phase: Reject (command not supported), and the
    // connection carries on.
    let mut i = logged_in(&s, &isid(2));
    let mut bhs = [0u8; 48];
    bhs[0] = 0x1d;
    bhs[1] = 0x80;
    i.send_raw(&bhs).expect("send");
    expect_reject(&mut i, RejectReason::CommandNotSupported, &bhs);
    assert!(matches!(i.ping(b"").pdu, Pdu::NopIn(_)));
    // A target opcode: Reject (protocol error).
    bhs[0] = 0x21;
    i.send_raw(&bhs).expect("send");
    expect_reject(&mut i, RejectReason::ProtocolError, &bhs);

    // AHS length garbage: TotalAHSLength 2 words whose AHS claims 256 bytes: Reject
    // (invalid PDU field), the stream stays in sync.
    let p = nop(&mut i);
    let mut raw = framed(&i, &p, &[]);
    raw[4] = 2;
    raw.extend_from_slice(&[0x01, 0x00, 0xff, 0x00, 0, 0, 0, 0]);
    i.send_raw(&raw).expect("send");
    expect_reject(&mut i, RejectReason::InvalidPduField, &raw);
    assert!(matches!(i.ping(b"after AHS").pdu, Pdu::NopIn(_)));

    // An oversize data segment (beyond our MaxRecvDataSegmentLength of 256 KiB): Reject
    // (protocol error), the data is skipped, the connection carries on.
    let p = nop(&mut i);
    let big = vec![0xa5u8; 262_144 + 512];
    let raw = framed(&i, &p, &big);
    i.send_raw(&raw).expect("send");
    expect_reject(&mut i, RejectReason::ProtocolError, &raw);
    assert!(matches!(i.ping(b"after oversize").pdu, Pdu::NopIn(_)));

    // Out-of-window CmdSN: ignored; the session goes on.
    let tur = [0u8; 6];
    let mut far = i.command(&tur, false, false, 0);
    far.cmd_sn = far.cmd_sn.wrapping_add(5000);
    i.cmd_sn = i.cmd_sn.wrapping_sub(1);
    i.send(&Pdu::ScsiCommand(far), &[]);
    assert!(
        i.recv_timeout(Duration::from_millis(300)).is_none(),
        "ignored"
    );
    assert_eq!(i.scsi(&tur, 0, &[], None).status, 0);

    // A truncated PDU (half a BHS), then the peer goes away.
    let mut t = logged_in(&s, &isid(3));
    t.send_raw(&[0x01, 0x80, 0, 0]).expect("send");
    drop(t);
    // DataSegmentLength larger than what follows, then close.
    let mut t = logged_in(&s, &isid(4));
    let p = nop(&mut t);
    let raw = framed(&t, &p, &[7u8; 1000]);
    t.send_raw(&raw[..48 + 100]).expect("send");
    drop(t);
    // The same, but the peer stays: nothing comes back for the incomplete PDU.
    let mut t = logged_in(&s, &isid(5));
    let p = nop(&mut t);
    let raw = framed(&t, &p, &[7u8; 1000]);
    t.send_raw(&raw[..48 + 100]).expect("send");
    assert!(t.recv_timeout(Duration::from_millis(300)).is_none());
    drop(t);

    // Header digest error: framing is lost, the connection is dropped (ERL 0).
    let o = isid(6)
        .key("HeaderDigest", "CRC32C")
        .key("DataDigest", "CRC32C");
    let mut d = logged_in(&s, &o);
    assert!(d.digests.header && d.digests.data);
    let p = nop(&mut d);
    let mut raw = framed(&d, &p, b"hdr");
    raw[48] ^= 0xff;
    d.send_raw(&raw).expect("send");
    assert!(d.closed_within(quick), "header digest error: dropped");
    // Data digest error: Reject (data digest error, 0x02), the session continues.
    let mut d = logged_in(&s, &o);
    let p = nop(&mut d);
    let mut raw = framed(&d, &p, b"data digest");
    let n = raw.len();
    raw[n - 1] ^= 0xff;
    d.send_raw(&raw).expect("send");
    expect_reject(&mut d, RejectReason::DataDigestError, &raw);
    assert!(matches!(d.ping(b"after data digest").pdu, Pdu::NopIn(_)));
    let data = pattern(32 * 1024, 9);
    assert_eq!(d.scsi(&write16(0, 64), 0, &data, None).status, 0);
    drop(d);

    // The misbehaving sessions are gone; the worker never noticed.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (rounds, mut good) = worker.join().expect("the good session kept working");
    assert!(rounds > 0, "the good session did I/O");
    drop(i);
    assert!(s.wait_sessions(1), "only the good session is left");
    assert_eq!(good.scsi(&[0u8; 6], 0, &[], None).status, 0);
}

#[test]
fn many_sessions_read_and_write_at_once() {
    let s = Setup::new();
    let portal = s.portal;
    let workers: Vec<_> = (0..8u8)
        .map(|n| {
            std::thread::spawn(move || {
                let mut o = LoginOpts::normal().key("InitialR2T", "No");
                o.isid = [0x80, 0, 0, 0, 1, n];
                let mut i = Ini::connect(portal);
                assert_eq!(i.login(&o), (0, 0));
                // Each session owns 1 MiB of the LU.
                let lba = u64::from(n) * 2048;
                for round in 0..4u8 {
                    let data = pattern(128 * 1024, n.wrapping_mul(31).wrapping_add(round));
                    let w = i.scsi(&write16(lba, 256), 0, &data, None);
                    assert_eq!(w.status, 0);
                    let r = i.scsi(&read16(lba, 256), data.len() as u32, &[], None);
                    assert!(r.data == data, "session {n} round {round}: data differs");
                }
                i.logout(LogoutReason::CloseSession, 0);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    assert!(s.wait_sessions(0));
}

#[test]
fn control_ops_and_config_round_trip() {
    let s = Setup::new();
    let h = &s.h;
    let err = |req: &str| {
        h.stmf()
            .provider_control("iscsit", req)
            .expect_err(&format!("{req} should fail"))
            .to_string()
    };
    // Refusals: bad names, duplicates, unknown groups, short secrets, groups in use.
    assert!(err(r#"{"op":"create-target","name":"not a name"}"#).contains("invalid iSCSI name"));
    assert!(err(&format!(r#"{{"op":"create-target","name":"{TARGET}"}}"#)).contains("exists"));
    assert!(err(r#"{"op":"create-target","tpgs":["nope"]}"#).contains("does not exist"));
    assert!(err(
        r#"{"op":"create-initiator","name":"iqn.2026-11.org.rstmf:i","chap_secret":"short"}"#
    )
    .contains("12"));
    assert!(err(&format!(r#"{{"op":"delete-tpg","name":"{TARGET}"}}"#)).contains("used by"));
    assert!(
        err(r#"{"op":"create-tpg","name":"bad","portals":["nowhere:1"]}"#)
            .contains("invalid portal")
    );
    // A portal group, an auto-named target on it, an initiator context, defaults.
    let g = control(
        h,
        r#"{"op":"create-tpg","name":"g1","portals":["127.0.0.1:0"]}"#,
    );
    let g_portal = g["portals"][0].as_str().expect("portal").to_string();
    assert!(!g_portal.ends_with(":0"), "the bound port is shown: {g}");
    let t = control(
        h,
        r#"{"op":"create-target","alias":"second","tpgs":["g1"]}"#,
    );
    let auto = t["name"].as_str().expect("name").to_string();
    assert!(auto.starts_with("iqn.2026-11.org.rstmf:"), "{t}");
    assert_eq!(t["portals"][0], g_portal.as_str());
    control(
        h,
        r#"{"op":"create-initiator","name":"iqn.2026-11.org.rstmf:i","chap_user":"u","chap_secret":"0123456789abcdef"}"#,
    );
    control(h, r#"{"op":"modify-defaults","alias":"rstmf"}"#);
    let l = control(h, r#"{"op":"list-initiator"}"#);
    assert_eq!(l["initiators"][0]["chap_secret_set"], true);
    assert!(
        !l.to_string().contains("0123456789abcdef"),
        "secrets are not listed"
    );
    let tpgs = control(h, r#"{"op":"list-tpg"}"#);
    assert_eq!(tpgs["tpgs"].as_array().map(Vec::len), Some(2), "{tpgs}");
    // The saved configuration recreates everything, portals included.
    let saved = h.stmf().provider_config("iscsit").expect("saved config");
    let before = [
        control(h, r#"{"op":"list-tpg"}"#),
        control(h, r#"{"op":"list-initiator"}"#),
        control(h, r#"{"op":"list-defaults"}"#),
    ];
    let portal = s.portal;
    drop(s);
    let h2 = rstmf_tests::Harness::new(rstmf_tests::Settings::default());
    h2.load("example-ram-lu");
    h2.load_with_config("iscsit", &saved);
    let after = [
        control(&h2, r#"{"op":"list-tpg"}"#),
        control(&h2, r#"{"op":"list-initiator"}"#),
        control(&h2, r#"{"op":"list-defaults"}"#),
    ];
    assert_eq!(before, after);
    let names: Vec<String> = control(&h2, r#"{"op":"list-target"}"#)["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        names.contains(&TARGET.to_string()) && names.contains(&auto),
        "{names:?}"
    );
    assert!(rstmf_tests::wait_until(Duration::from_secs(10), || {
        let mut i = Ini::connect(portal);
        i.login(&LoginOpts::normal()) == (0, 0)
    }));
    // Deleting a target keeps its portal group while another target uses it; deleting a
    // group in use needs force.
    control(
        &h2,
        &format!(r#"{{"op":"delete-target","name":"{TARGET}","force":true}}"#),
    );
    control(&h2, r#"{"op":"delete-tpg","name":"g1","force":true}"#);
    let tpgs = control(&h2, r#"{"op":"list-tpg"}"#);
    assert_eq!(tpgs["tpgs"].as_array().map(Vec::len), Some(1), "{tpgs}");
    assert_eq!(tpgs["tpgs"][0]["targets"][0], HIDDEN, "{tpgs}");
    control(
        &h2,
        &format!(r#"{{"op":"delete-target","name":"{HIDDEN}"}}"#),
    );
    let tpgs = control(&h2, r#"{"op":"list-tpg"}"#);
    assert_eq!(
        tpgs["tpgs"].as_array().map(Vec::len),
        Some(1),
        "a TPG named like another target stays"
    );
}
