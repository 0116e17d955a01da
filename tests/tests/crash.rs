//! Crash safety: with the write-back cache off, `kill -9` of stmfd in the middle of a stream
//! of writes loses none of the writes that were acknowledged.
//!
//! A real stmfd (sbd + iscsit loaded, configured with stmfadm) serves a file LU created with
//! `wcd=true`; the project's initiator (`iscsi-initiator`) keeps 8 WRITE(16)s in flight, each
//! to its own 4 KiB slot with a pattern naming the slot, and records every GOOD status. Once
//! enough are acknowledged the daemon gets SIGKILL while writes are in flight. After a
//! restart (the LU comes back from the saved configuration) every acknowledged slot must
//! hold its pattern, read both from the data file and over iSCSI; the LU is then deleted
//! with `-k` and re-imported and read again.
//!
//! What this proves and what it does not: sbd acknowledges a write only after it reached the
//! backing file (no user-space buffering, no early status), and the configuration and
//! metadata survive a crash. A process kill leaves the kernel's page cache intact, so it
//! cannot show that `O_DSYNC` reached the disk; that needs power-loss testing (e.g.
//! dm-flakey / dm-log-writes), which this test does not do.
//!
//! Run `cargo build --workspace` first (binaries and provider libraries come from the
//! target directory).

use iscsi_initiator::scsi::{read16, write16};
use iscsi_initiator::{IscsiUrl, LoginOptions, ScsiRequest, Session, TaskId};
use rstmf_tests::daemon::{artifact, Daemon, DaemonEnv};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TARGET: &str = "iqn.2026-11.org.rstmf:crash";
const INITIATOR: &str = "iqn.2026-11.org.rstmf.test:crash-writer";
/// LU size and the slot each write owns.
const LU_SIZE: u64 = 64 << 20;
const SLOT: usize = 4096;
const BLOCK: usize = 512;
const SLOTS: u64 = LU_SIZE / SLOT as u64;
/// Writes in flight at once.
const QUEUE_DEPTH: usize = 8;
/// Kill once this many writes are acknowledged, or after `KILL_AFTER`, whichever is first
/// (but never before `MIN_ACKED`).
const KILL_AT_ACKED: usize = 3000;
const KILL_AFTER: Duration = Duration::from_secs(4);
const MIN_ACKED: usize = 200;

/// The content of slot `slot`: its number, then a stream seeded by it (never all zero).
fn pattern(slot: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(SLOT);
    v.extend_from_slice(&slot.to_be_bytes());
    v.extend_from_slice(b"rstmf-crash-test");
    let mut x = slot.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < SLOT {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(SLOT);
    v
}

/// Slot `i` of a fixed permutation of all slots (writes scatter over the LU, each slot once).
fn slot_at(i: u64) -> u64 {
    // SLOTS is a power of two; an odd multiplier is a bijection modulo it.
    i.wrapping_mul(0x2545_F491) % SLOTS
}

fn lba(slot: u64) -> u64 {
    slot * (SLOT / BLOCK) as u64
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Logs in, retrying while the target comes up (after a restart).
fn login(url: &IscsiUrl) -> Session {
    let opts = LoginOptions {
        initiator_name: INITIATOR.into(),
        login_timeout: Duration::from_secs(5),
        command_timeout: Some(Duration::from_secs(30)),
        ..LoginOptions::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Session::login(url, &opts) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("login: {e}; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("cannot log in to {TARGET}: {e}"),
        }
    }
}

fn setup(d: &Daemon, data: &Path, port: u16) -> String {
    for lib in ["libsbd.so", "libiscsit.so"] {
        let p = artifact(lib);
        d.cli_ok(
            "stmfadm",
            &["load-provider", p.to_str().expect("utf-8 path")],
        );
    }
    let size = LU_SIZE.to_string();
    let r = d.cli_json(
        "stmfadm",
        &[
            "create-lu",
            "-s",
            &size,
            "-p",
            "wcd=true",
            data.to_str().expect("utf-8 path"),
        ],
    );
    let guid = r["guid"].as_str().expect("guid").to_owned();
    let l = d.cli_json("stmfadm", &["list-lu", &guid]);
    assert_eq!(l[0]["details"]["write_cache"], false, "WCE off: {l}");
    d.cli_ok("stmfadm", &["add-view", "-n", "0", &guid]);
    let req =
        format!(r#"{{"op":"create-target","name":"{TARGET}","portals":["127.0.0.1:{port}"]}}"#);
    d.cli_ok("stmfadm", &["provider-control", "iscsit", &req]);
    guid
}

/// WCE of the caching mode page (MODE SENSE(10), DBD, current values).
fn wce(s: &mut Session) -> bool {
    let r = s
        .scsi(&[0x5A, 0x08, 0x08, 0, 0, 0, 0, 0, 0xFF, 0], &[], 0xFF)
        .expect("MODE SENSE");
    assert!(r.is_good(), "MODE SENSE: {r:?}");
    assert_eq!(r.data.get(8).map(|b| b & 0x3F), Some(0x08), "caching page");
    r.data.get(10).is_some_and(|b| b & 0x04 != 0)
}

/// What the writer saw.
struct Stream {
    acked: Vec<u64>,
    /// Writes that were submitted and failed without status (the connection died).
    lost_in_flight: usize,
    /// Why the stream ended (`None`: every slot was written before the kill).
    failure: Option<String>,
}

/// Writes slots until the session dies; `acked_count` counts acknowledgements for the killer.
fn write_stream(s: &mut Session, acked_count: &AtomicUsize) -> Stream {
    // The first command of a new nexus gets POWER ON; the blocking helper retries it.
    s.read_capacity().expect("READ CAPACITY");
    assert!(!wce(s), "the initiator sees the write-back cache off");
    let mut pending: HashMap<TaskId, u64> = HashMap::new();
    let mut st = Stream {
        acked: Vec::new(),
        lost_in_flight: 0,
        failure: None,
    };
    let mut done = Vec::new();
    let mut next = 0u64;
    while st.failure.is_none() {
        while pending.len() < QUEUE_DEPTH && next < SLOTS && st.failure.is_none() {
            let slot = slot_at(next);
            next += 1;
            let cdb = write16(lba(slot), (SLOT / BLOCK) as u32, false);
            match s.submit(ScsiRequest::write(0, &cdb, pattern(slot))) {
                Ok(id) => {
                    pending.insert(id, slot);
                }
                Err(e) => st.failure = Some(format!("submit: {e}")),
            }
        }
        if pending.is_empty() {
            break;
        }
        done.clear();
        if let Err(e) = s.poll_completions(&mut done, Some(Duration::from_secs(30))) {
            st.failure.get_or_insert(format!("poll: {e}"));
            st.lost_in_flight += pending.len();
            break;
        }
        for c in done.drain(..) {
            let Some(slot) = pending.remove(&c.id) else {
                panic!("completion for an unknown task {:?}", c.id);
            };
            match c.result {
                Ok(r) if r.is_good() => {
                    st.acked.push(slot);
                    acked_count.fetch_add(1, Ordering::Release);
                }
                // Not acknowledged: no promise was made about this slot.
                Ok(r) => panic!("write of slot {slot}: status {:#x}", r.status),
                Err(e) => {
                    st.lost_in_flight += 1;
                    st.failure.get_or_insert(format!("task: {e}"));
                }
            }
        }
    }
    st
}

/// Every acknowledged slot holds its pattern in the data file.
fn verify_file(data: &Path, acked: &[u64]) {
    let f = File::open(data).expect("open the data file");
    let mut buf = vec![0u8; SLOT];
    for &slot in acked {
        f.read_exact_at(&mut buf, slot * SLOT as u64)
            .expect("read the data file");
        assert!(
            buf == pattern(slot),
            "acknowledged slot {slot} lost in the data file (first bytes {:02x?})",
            &buf[..16]
        );
    }
}

/// Every acknowledged slot holds its pattern, read over iSCSI.
fn verify_iscsi(url: &IscsiUrl, acked: &[u64]) {
    let mut s = login(url);
    s.read_capacity().expect("READ CAPACITY");
    for &slot in acked {
        let r = s
            .execute_checked(ScsiRequest::read(
                0,
                &read16(lba(slot), (SLOT / BLOCK) as u32),
                SLOT as u32,
            ))
            .unwrap_or_else(|e| panic!("reading slot {slot}: {e}"));
        assert!(
            r.data == pattern(slot),
            "acknowledged slot {slot} lost over iSCSI"
        );
    }
    let _ = s.logout();
}

#[test]
fn kill9_during_acknowledged_writes_loses_none() {
    let env = DaemonEnv::new();
    let data = env.path().join("crash.img");
    let port = free_port();
    let d = env.start();
    let guid = setup(&d, &data, port);
    let url: IscsiUrl = format!("iscsi://127.0.0.1:{port}/{TARGET}/0")
        .parse()
        .expect("url");

    let acked_count = Arc::new(AtomicUsize::new(0));
    let killer = {
        let acked = Arc::clone(&acked_count);
        std::thread::spawn(move || {
            let start = Instant::now();
            loop {
                let n = acked.load(Ordering::Acquire);
                if n >= KILL_AT_ACKED || (n >= MIN_ACKED && start.elapsed() >= KILL_AFTER) {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "only {n} writes acknowledged in 60 s"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            d.kill9();
            acked.load(Ordering::Acquire)
        })
    };
    let mut s = login(&url);
    let stream = write_stream(&mut s, &acked_count);
    drop(s);
    let acked_at_kill = killer.join().expect("killer thread");
    eprintln!(
        "{} writes acknowledged ({acked_at_kill} when SIGKILL was sent), {} in flight lost; {:?}",
        stream.acked.len(),
        stream.lost_in_flight,
        stream.failure
    );
    assert!(
        stream.failure.is_some(),
        "the stream must still be running at the kill"
    );
    assert!(stream.acked.len() >= MIN_ACKED);

    verify_file(&data, &stream.acked);

    // Restart: the LU and the target come back from the saved configuration.
    let d = env.start();
    let l = d.cli_json("stmfadm", &["list-lu", &guid]);
    assert_eq!(l[0]["state"], "online", "{l}");
    assert_eq!(l[0]["details"]["write_cache"], false, "{l}");
    verify_iscsi(&url, &stream.acked);

    // Delete (keeping data and views) and import: the same LU, the same data.
    d.cli_ok("stmfadm", &["delete-lu", "-k", &guid]);
    let r = d.cli_json(
        "stmfadm",
        &["import-lu", data.to_str().expect("utf-8 path")],
    );
    assert_eq!(r["guid"], guid.as_str(), "{r}");
    verify_iscsi(&url, &stream.acked);
    verify_file(&data, &stream.acked);
    d.stop();
}
