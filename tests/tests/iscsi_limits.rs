//! The resource limits of iscsit, one rule per test, with real sockets against a core
//! running iscsit and a RAM LU (docs/security.md, "Resource budget"). The attacks that
//! combine them, with memory measurements and an honest session beside, are in
//! `hostile.rs`.

mod iscsi_common;

use idm::pdu::{DataOut, Pdu, RejectReason};
use iscsi_common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn logged_in(s: &Setup, o: &LoginOpts) -> Ini {
    let mut i = Ini::connect(s.portal);
    assert_eq!(i.login(o), (0, 0), "login");
    i
}

/// WRITE(10) of one 512-byte block at `lba`.
fn write10(lba: u32) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x2a;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[8] = 1;
    c
}

fn max_cmd_sn(p: &Pdu) -> u32 {
    match p {
        Pdu::R2t(r) => r.sn.max_cmd_sn,
        Pdu::ScsiResponse(r) => r.sn.max_cmd_sn,
        Pdu::NopIn(n) => n.sn.max_cmd_sn,
        Pdu::Reject(r) => r.sn.max_cmd_sn,
        other => panic!("no MaxCmdSN in {other:?}"),
    }
}

fn reject_reason(r: &Rx) -> RejectReason {
    match &r.pdu {
        Pdu::Reject(j) => j.reason,
        other => panic!("expected a Reject, got {other:?}"),
    }
}

/// Commands waiting for their Data-Out hold their window slot: MaxCmdSN stays put
/// until a command is done, and a command beyond it is ignored.
#[test]
fn max_cmd_sn_moves_when_commands_finish_not_when_they_arrive() {
    let s = Setup::with_defaults(r#"{"limits":{"cmd_window":4}}"#);
    let o = LoginOpts::normal().key("ImmediateData", "No");
    let mut i = logged_in(&s, &o);
    let first = i.cmd_sn;
    let mut r2ts = Vec::new();
    for lba in 0..4 {
        let c = i.command(&write10(lba), false, true, 512);
        i.send(&Pdu::ScsiCommand(c), &[]);
        let r = i.recv();
        let Pdu::R2t(r2t) = r.pdu else {
            panic!("expected an R2T, got {:?}", r.pdu)
        };
        assert_eq!(
            r2t.sn.max_cmd_sn,
            first + 3,
            "the window does not move while commands wait for data"
        );
        r2ts.push((c.itt, r2t.ttt));
    }
    // The window is full: a fifth command is ignored.
    let fifth = i.command(&[0u8; 6], false, false, 0);
    i.send(&Pdu::ScsiCommand(fifth), &[]);
    assert!(
        i.recv_timeout(Duration::from_millis(300)).is_none(),
        "a command beyond MaxCmdSN is ignored"
    );
    // The first write finishes: its status carries the slot it gave back.
    let (itt, ttt) = r2ts[0];
    let d = DataOut {
        final_bit: true,
        lun: 0,
        itt,
        ttt,
        exp_stat_sn: i.exp_stat_sn,
        data_sn: 0,
        buffer_offset: 0,
    };
    i.send(&Pdu::DataOut(d), &[7u8; 512]);
    let r = i.recv();
    assert!(matches!(r.pdu, Pdu::ScsiResponse(_)), "got {:?}", r.pdu);
    assert_eq!(max_cmd_sn(&r.pdu), first + 4);
    // Now the fifth command (sent again with the same CmdSN) runs.
    let mut again = fifth;
    again.itt = i.next_itt();
    i.send(&Pdu::ScsiCommand(again), &[]);
    let r = i.recv();
    assert!(
        matches!(r.pdu, Pdu::ScsiResponse(x) if x.itt == again.itt),
        "got {:?}",
        r.pdu
    );
}

/// Immediate commands do not move the window, but only so many may be outstanding:
/// the next one is rejected with reason 0x06.
#[test]
fn immediate_commands_beyond_the_cap_are_rejected() {
    let s = Setup::with_defaults(r#"{"limits":{"max_immediate_commands":2}}"#);
    let o = LoginOpts::normal().key("ImmediateData", "No");
    let mut i = logged_in(&s, &o);
    for lba in 0..2 {
        let mut c = i.command(&write10(lba), false, true, 512);
        c.immediate = true;
        i.send(&Pdu::ScsiCommand(c), &[]);
        let r = i.recv();
        assert!(matches!(r.pdu, Pdu::R2t(_)), "got {:?}", r.pdu);
    }
    let mut c = i.command(&write10(9), false, true, 512);
    c.immediate = true;
    i.send(&Pdu::ScsiCommand(c), &[]);
    let r = i.recv();
    assert_eq!(reject_reason(&r), RejectReason::ImmediateCommandReject);
    // Non-immediate commands are not affected.
    i.cmd_sn = i.cmd_sn.wrapping_sub(3);
    assert_eq!(i.scsi(&[0u8; 6], 0, &[], None).status, 0);
}

/// RFC 7143 §11.3.1: a command that expects data names its direction; one that names
/// both (a bidirectional command without its AHS) is not supported. Neither moves data.
#[test]
fn direction_bits_must_agree_with_the_expected_length() {
    let s = Setup::new();
    let mut i = logged_in(&s, &LoginOpts::normal());
    let mut read10 = [0u8; 10];
    read10[0] = 0x28;
    read10[8] = 1;
    let c = i.command(&read10, false, false, 512);
    i.send(&Pdu::ScsiCommand(c), &[]);
    let r = i.recv();
    assert_eq!(reject_reason(&r), RejectReason::ProtocolError);
    let c = i.command(&read10, true, true, 512);
    i.send(&Pdu::ScsiCommand(c), &[]);
    let r = i.recv();
    assert_eq!(reject_reason(&r), RejectReason::CommandNotSupported);
    // The rejected commands gave their slots back and the session goes on.
    let ok = i.scsi(&read10, 512, &[], None);
    assert_eq!((ok.status, ok.data.len()), (0, 512));
}

/// A peer that stops reading while the target owes it data: the connection stops
/// taking PDUs, and is dropped once nothing moves for send_timeout_ms.
#[test]
fn a_peer_that_stops_reading_is_dropped() {
    let s = Setup::with_defaults(
        r#"{"limits":{"send_timeout_ms":1000,"send_queue_limit":65536},"nop_interval_ms":0}"#,
    );
    let o = LoginOpts::normal().key("MaxRecvDataSegmentLength", "262144");
    let mut i = logged_in(&s, &o);
    assert!(s.wait_sessions(1));
    // 64 reads of 1 MiB: far more than the socket buffers hold.
    let mut read10 = [0u8; 10];
    read10[0] = 0x28;
    read10[7..9].copy_from_slice(&2048u16.to_be_bytes());
    for _ in 0..64 {
        let c = i.command(&read10, true, false, 1 << 20);
        i.send(&Pdu::ScsiCommand(c), &[]);
    }
    let started = Instant::now();
    assert!(
        s.wait_sessions(0),
        "the session of a peer that does not read ends"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "dropped after the send timeout, not at once ({took:?})"
    );
}

/// A connection that sends nothing (or stops in the middle of its login) is dropped
/// after login_idle_timeout_ms.
#[test]
fn a_stalled_login_is_dropped() {
    let s = Setup::with_defaults(r#"{"limits":{"login_idle_timeout_ms":400}}"#);
    let mut quiet = TcpStream::connect(s.portal).expect("connect");
    let started = Instant::now();
    assert!(
        closed_within(&mut quiet, Duration::from_secs(3)),
        "a silent connection"
    );
    assert!(started.elapsed() >= Duration::from_millis(350));
    // Half a Login Request, then nothing.
    let mut half = TcpStream::connect(s.portal).expect("connect");
    half.write_all(&[0x43, 0x87, 0, 0, 0, 0, 0, 40])
        .expect("send");
    assert!(
        closed_within(&mut half, Duration::from_secs(3)),
        "a half login"
    );
    // A client that logs in promptly is not affected, and its session's buffers are
    // accounted.
    let mut i = logged_in(&s, &LoginOpts::normal());
    let mut read10 = [0u8; 10];
    read10[0] = 0x28;
    read10[8] = 8;
    assert_eq!(i.scsi(&read10, 4096, &[], None).status, 0);
    // The buffer goes back once its last Data-In has left the socket.
    let settled = rstmf_tests::wait_until(Duration::from_secs(5), || {
        control(&s.h, r#"{"op":"list-resources"}"#)["sessions"][0]["buffers_out"] == 0
    });
    assert!(settled, "the read's buffer came back");
    let r = control(&s.h, r#"{"op":"list-resources"}"#);
    assert_eq!(r["connections"]["open"], 1, "{r}");
    let sess = &r["sessions"][0];
    assert_eq!(sess["buffers_out"], 0, "{r}");
    assert_eq!(sess["buffer_memory"], 4096, "the cached 4 KiB buffer: {r}");
    assert_eq!(r["buffer_memory"]["used"], 4096, "{r}");
}

/// Connections in login are capped per source address; one over the cap is closed at
/// once, and a place frees up when one of them leaves.
#[test]
fn logins_per_source_are_capped() {
    let s =
        Setup::with_defaults(r#"{"limits":{"max_login_per_source":2,"max_login_connections":8}}"#);
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(s.portal).expect("connect"))
        .collect();
    // Give the target time to count them.
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(s.portal).expect("the kernel still accepts");
    let started = Instant::now();
    assert!(
        closed_within(&mut third, Duration::from_secs(2)),
        "over the cap: closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "closed at once, not after a timeout"
    );
    let r = control(&s.h, r#"{"op":"list-resources"}"#);
    assert_eq!(r["refused"]["max_login_per_source"], 1, "{r}");
    assert_eq!(r["connections"]["in_login"], 2, "{r}");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let i = logged_in(&s, &LoginOpts::normal());
    drop(i);
}

fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(50))).ok();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}
