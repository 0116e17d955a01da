//! End-to-end tests of the sbd LU provider: `target/<profile>/libsbd.so` loaded into a real
//! core, driven through the in-process test port. Build the providers first
//! (`cargo build --workspace`).

use plugins_sdk::TmFunction;
use rstmf_tests::{CmdOptions, Harness, Outcome, Session};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use stmf::{Guid, ObjState, Settings};

const TGT: &str = "iqn.2025-01.org.rstmf.test:sbd";
const INI1: &str = "iqn.2025-01.org.rstmf.test:ini-1";
const INI2: &str = "iqn.2025-01.org.rstmf.test:ini-2";

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("invalid JSON {s:?}: {e}"))
}

fn ctl(h: &Harness, req: serde_json::Value) -> serde_json::Value {
    let r = h
        .stmf()
        .provider_control("sbd", &req.to_string())
        .unwrap_or_else(|e| panic!("{req}: {e}"));
    json(&r)
}

fn create(h: &Harness, req: serde_json::Value) -> Guid {
    let v = ctl(h, req);
    let g: Guid = v["guid"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("create-lu reply {v}"));
    let online = rstmf_tests::wait_until(Duration::from_secs(10), || {
        h.stmf()
            .list_lu()
            .iter()
            .any(|l| l.guid == g && l.state == ObjState::Online)
    });
    assert!(online, "LU {g} did not come online");
    g
}

/// A harness with sbd loaded, one target and one LU at LUN 0.
struct Setup {
    h: Harness,
    guid: Guid,
    tgt: rstmf_tests::TestTarget,
}

fn setup(req: serde_json::Value) -> Setup {
    let h = Harness::new(Settings::default());
    h.load("sbd");
    let guid = create(&h, req);
    h.stmf()
        .add_view(guid, None, None, Some(0))
        .expect("add view");
    let tgt = h.port(TGT);
    Setup { h, guid, tgt }
}

fn file_lu(dir: &Path, name: &str, size: &str) -> serde_json::Value {
    serde_json::json!({"op":"create-lu","backing":"file","path":dir.join(name),"size":size})
}

/// Logs in and consumes the POWER ON unit attention every new nexus gets first.
fn login(s: &Setup, ini: &str) -> Session {
    let sess = s.tgt.session(ini);
    s.h.cmd(&sess, 0, &[0; 6], &[], 0)
        .assert_check(0x6, 0x29, 0x00);
    s.h.cmd(&sess, 0, &[0; 6], &[], 0).assert_good();
    sess
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn rw10(op: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [op, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
}

fn rw16(op: u8, flags: u8, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[1] = flags;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn read(s: &Setup, sess: &Session, lba: u64, blocks: u32, bs: usize) -> Vec<u8> {
    let o = s.h.cmd(
        sess,
        0,
        &rw16(0x88, 0, lba, blocks),
        &[],
        blocks as usize * bs,
    );
    o.assert_good();
    o.data
}

fn write(s: &Setup, sess: &Session, lba: u64, data: &[u8], bs: usize) -> Outcome {
    s.h.cmd(
        sess,
        0,
        &rw16(0x8A, 0, lba, (data.len() / bs) as u32),
        data,
        0,
    )
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").blocks() * 512
}

// ---- identity and basic commands ---------------------------------------------------------------

#[test]
fn inquiry_vpd_capacity_and_first_command_unit_attention() {
    let s = setup(
        serde_json::json!({"op":"create-lu","backing":"ram","size":"16m","props":{"serial":"SER-42","vid":"ACME","pid":"DISK"}}),
    );
    let sess = s.tgt.session(INI1);
    // INQUIRY does not consume the POWER ON unit attention.
    let o = s.h.cmd(&sess, 0, &[0x12, 0, 0, 0, 96, 0], &[], 96);
    o.assert_good();
    assert_eq!(&o.data[..8], &[0, 0, 6, 0x12, 91, 0x18, 0, 2]);
    assert_eq!(&o.data[8..32], b"ACME    DISK            ");
    // Exact fixed-format sense of the UA.
    let o = s.h.cmd(&sess, 0, &[0; 6], &[], 0);
    assert_eq!(o.status, 2);
    assert_eq!(
        o.sense,
        [0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0, 0, 0, 0, 0]
    );
    s.h.cmd(&sess, 0, &[0; 6], &[], 0).assert_good();
    // VPD 80h, 83h (NAA = the GUID), B0h, B2h.
    let o = s.h.cmd(&sess, 0, &[0x12, 1, 0x80, 0, 255, 0], &[], 255);
    assert_eq!(o.data, b"\x00\x80\x00\x06SER-42");
    let o = s.h.cmd(&sess, 0, &[0x12, 1, 0x83, 0, 255, 0], &[], 255);
    assert_eq!(&o.data[4..8], &[0x01, 0x03, 0x00, 16]);
    assert_eq!(&o.data[8..24], &s.guid.0);
    let o = s.h.cmd(&sess, 0, &[0x12, 1, 0x00, 0, 255, 0], &[], 255);
    assert_eq!(&o.data[4..], &[0x00, 0x80, 0x83, 0x86, 0xB0, 0xB1, 0xB2]);
    let o = s.h.cmd(&sess, 0, &[0x12, 1, 0xB2, 0, 255, 0], &[], 255);
    assert_eq!(o.data, [0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0]);
    // Unsupported VPD page: INVALID FIELD IN CDB at byte 2.
    let o = s.h.cmd(&sess, 0, &[0x12, 1, 0x42, 0, 255, 0], &[], 255);
    assert_eq!(
        o.sense,
        [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xCF, 0, 2]
    );
    // READ CAPACITY (10) and (16): 32768 blocks of 512, LBPME and LBPRZ.
    let o =
        s.h.cmd(&sess, 0, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 8);
    assert_eq!(o.data, [0, 0, 0x7F, 0xFF, 0, 0, 2, 0]);
    let o = s.h.cmd(
        &sess,
        0,
        &[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        &[],
        32,
    );
    assert_eq!(
        &o.data[..16],
        &[0, 0, 0, 0, 0, 0, 0x7F, 0xFF, 0, 0, 2, 0, 0, 0x00, 0xC0, 0]
    );
    // An unknown opcode: INVALID COMMAND OPERATION CODE.
    let o = s.h.cmd(&sess, 0, &[0xC7, 0, 0, 0, 0, 0], &[], 0);
    assert_eq!(
        o.sense,
        [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0]
    );
    // REQUEST SENSE with nothing pending: NO SENSE.
    let o = s.h.cmd(&sess, 0, &[0x03, 0, 0, 0, 18, 0], &[], 18);
    assert_eq!(
        o.data,
        [0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(s.h.outstanding_buffers(), 0);
}

#[test]
fn report_supported_opcodes_all_and_one() {
    let s = setup(serde_json::json!({"op":"create-lu","backing":"ram","size":"4m"}));
    let sess = login(&s, INI1);
    let o = s.h.cmd(
        &sess,
        0,
        &[0xA3, 0x0C, 0x80, 0, 0, 0, 0, 0, 0x10, 0, 0, 0],
        &[],
        4096,
    );
    o.assert_good();
    let len = u32::from_be_bytes([o.data[0], o.data[1], o.data[2], o.data[3]]) as usize;
    assert_eq!(len % 20, 0, "descriptors with timeouts are 20 bytes");
    let o = s.h.cmd(
        &sess,
        0,
        &[0xA3, 0x0C, 0x01, 0x2A, 0, 0, 0, 0, 0, 64, 0, 0],
        &[],
        64,
    );
    assert_eq!(&o.data[..4], &[0, 0x03, 0, 10]);
    assert_eq!(o.data[4], 0x2A);
    // Reserved reporting options: field pointer at byte 2 bit 2.
    let o = s.h.cmd(
        &sess,
        0,
        &[0xA3, 0x0C, 0x04, 0, 0, 0, 0, 0, 0, 64, 0, 0],
        &[],
        64,
    );
    assert_eq!(&o.sense[12..], &[0x24, 0, 0, 0xCA, 0, 2]);
}

// ---- data path ------------------------------------------------------------------------------------

#[test]
fn file_lu_data_round_trip_all_sizes_multi_buffer_immediate_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = setup(file_lu(dir.path(), "lu.img", "8m"));
    s.h.set_max_buf(4096);
    let sess = login(&s, INI1);
    let data = pattern(64 * 1024, 7);
    // WRITE (16) with 4 buffers in flight, 4 KiB each, and 8 KiB of immediate data.
    let opts = CmdOptions {
        immediate: 8192,
        max_nbufs: 4,
        expected_xfer_len: None,
    };
    s.h.cmd_with(&sess, 0, &rw16(0x8A, 0, 100, 128), &data, 0, opts)
        .assert_good();
    let back = s.h.cmd_with(
        &sess,
        0,
        &rw16(0x88, 0, 100, 128),
        &[],
        data.len(),
        CmdOptions {
            max_nbufs: 4,
            ..CmdOptions::default()
        },
    );
    back.assert_good();
    assert_eq!(back.data, data);
    // READ (6), (10), (12) of the same blocks.
    let o = s.h.cmd(&sess, 0, &[0x08, 0, 0, 100, 2, 0], &[], 1024);
    assert_eq!(o.data, data[..1024]);
    let o = s.h.cmd(&sess, 0, &rw10(0x28, 101, 1), &[], 512);
    assert_eq!(o.data, data[512..1024]);
    let o = s.h.cmd(
        &sess,
        0,
        &[0xA8, 0, 0, 0, 0, 102, 0, 0, 0, 1, 0, 0],
        &[],
        512,
    );
    assert_eq!(o.data, data[1024..1536]);
    // WRITE (6) / (10) / (12) with FUA (write-through path).
    s.h.cmd(&sess, 0, &[0x0A, 0, 0, 5, 1, 0], &data[..512], 0)
        .assert_good();
    s.h.cmd(
        &sess,
        0,
        &[0x2A, 0x08, 0, 0, 0, 6, 0, 0, 1, 0],
        &data[512..1024],
        0,
    )
    .assert_good();
    s.h.cmd(
        &sess,
        0,
        &[0xAA, 0x08, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0],
        &data[1024..1536],
        0,
    )
    .assert_good();
    assert_eq!(read(&s, &sess, 5, 3, 512), data[..1536]);
    // The data is in the file at the LBA's offset.
    let f = std::fs::read(dir.path().join("lu.img")).expect("read file");
    assert_eq!(&f[100 * 512..100 * 512 + data.len()], &data[..]);
    assert_eq!(s.h.outstanding_buffers(), 0);
}

#[test]
fn bad_cdbs_touch_no_data() {
    let s = setup(serde_json::json!({"op":"create-lu","backing":"ram","size":"1m"}));
    let sess = login(&s, INI1);
    let blocks = 2048u64;
    // Past the end: LBA OUT OF RANGE, nothing written.
    let o = write(&s, &sess, blocks - 1, &[0xAB; 1024], 512);
    assert_eq!(
        o.sense,
        [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0, 0, 0, 0, 0]
    );
    assert!(read(&s, &sess, blocks - 1, 1, 512).iter().all(|&b| b == 0));
    // WRPROTECT set: INVALID FIELD IN CDB, byte 1 bit 7.
    let mut c = rw16(0x8A, 0x20, 0, 1);
    let o = s.h.cmd(&sess, 0, &c, &[0xAB; 512], 0);
    assert_eq!(&o.sense[12..], &[0x24, 0, 0, 0xCF, 0, 1]);
    // NACA in the CONTROL byte.
    c = rw16(0x8A, 0, 0, 1);
    c[15] = 0x04;
    let o = s.h.cmd(&sess, 0, &c, &[0xAB; 512], 0);
    assert_eq!(&o.sense[12..], &[0x24, 0, 0, 0xCA, 0, 15]);
    // More than the maximum transfer length.
    let o = s.h.cmd(&sess, 0, &rw16(0x88, 0, 0, 1 << 20), &[], 0);
    assert_eq!(&o.sense[12..], &[0x24, 0, 0, 0xC0, 0, 10]);
    assert!(read(&s, &sess, 0, 1, 512).iter().all(|&b| b == 0));
}

#[test]
fn unmap_punches_holes_and_get_lba_status_reports_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("thin.img");
    let s = setup(file_lu(dir.path(), "thin.img", "16m"));
    let sess = login(&s, INI1);
    let data = vec![0x5Au8; 4 << 20];
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        write(&s, &sess, (i as u64) * 2048, chunk, 512).assert_good();
    }
    s.h.cmd(&sess, 0, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0)
        .assert_good();
    let before = allocated(&path);
    assert!(before >= 4 << 20, "{before}");
    // GET LBA STATUS at 0: mapped extent.
    let glbas = [0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0, 0];
    let o = s.h.cmd(&sess, 0, &glbas, &[], 255);
    assert_eq!(o.data[8 + 12], 0, "mapped");
    // UNMAP the first 3 MiB (one descriptor) and 512 KiB more (another).
    let mut p = vec![0, 38, 0, 32, 0, 0, 0, 0];
    p.extend_from_slice(&0u64.to_be_bytes());
    p.extend_from_slice(&6144u32.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&6144u64.to_be_bytes());
    p.extend_from_slice(&1024u32.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    s.h.cmd(&sess, 0, &[0x42, 0, 0, 0, 0, 0, 0, 0, 40, 0], &p, 0)
        .assert_good();
    let after = allocated(&path);
    assert!(
        after <= before - (3 << 20),
        "st_blocks did not drop: {before} -> {after}"
    );
    assert!(
        read(&s, &sess, 0, 8, 512).iter().all(|&b| b == 0),
        "unmapped reads zero (LBPRZ)"
    );
    assert!(
        read(&s, &sess, 7168, 8, 512).iter().all(|&b| b == 0x5A),
        "the rest is intact"
    );
    let o = s.h.cmd(&sess, 0, &glbas, &[], 255);
    o.assert_good();
    assert_eq!(
        &o.data[8..20],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x1C, 0],
        "7168 blocks deallocated"
    );
    assert_eq!(o.data[20], 1);
    // A descriptor past the end: LBA OUT OF RANGE and nothing unmapped.
    let mut bad = vec![0, 22, 0, 16, 0, 0, 0, 0];
    bad.extend_from_slice(&7168u64.to_be_bytes());
    bad.extend_from_slice(&100_000u32.to_be_bytes());
    bad.extend_from_slice(&[0; 4]);
    s.h.cmd(&sess, 0, &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &bad, 0)
        .assert_check(5, 0x21, 0);
    assert!(read(&s, &sess, 7168, 8, 512).iter().all(|&b| b == 0x5A));
    // WRITE SAME (16) with UNMAP and a zero block deallocates too.
    s.h.cmd(
        &sess,
        0,
        &[0x93, 0x08, 0, 0, 0, 0, 0, 0, 0x1C, 0, 0, 0, 0x04, 0, 0, 0],
        &[0; 512],
        0,
    )
    .assert_good();
    assert!(
        allocated(&path) + (512 << 10) <= after + 4096,
        "WRITE SAME with UNMAP frees space"
    );
    assert!(read(&s, &sess, 7168, 8, 512).iter().all(|&b| b == 0));
}

#[test]
fn write_same_verify_orwrite_compare_and_write() {
    let s = setup(serde_json::json!({"op":"create-lu","backing":"ram","size":"4m"}));
    let sess = login(&s, INI1);
    let block = pattern(512, 3);
    // WRITE SAME (10) of 16 blocks, then read back.
    s.h.cmd(&sess, 0, &[0x41, 0, 0, 0, 0, 10, 0, 0, 16, 0], &block, 0)
        .assert_good();
    let back = read(&s, &sess, 10, 16, 512);
    assert!(back.chunks(512).all(|c| c == block));
    // WRITE SAME (16) NDOB: zeros.
    s.h.cmd(
        &sess,
        0,
        &[0x93, 0x01, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0],
        &[],
        0,
    )
    .assert_good();
    assert!(read(&s, &sess, 12, 2, 512).iter().all(|&b| b == 0));
    // ANCHOR is not supported.
    s.h.cmd(&sess, 0, &[0x41, 0x10, 0, 0, 0, 10, 0, 0, 1, 0], &block, 0)
        .assert_check(5, 0x24, 0);
    // VERIFY (10) BYTCHK=1: equal, then a miscompare at byte 700 of the data-out buffer.
    let two = read(&s, &sess, 10, 2, 512);
    s.h.cmd(&sess, 0, &[0x2F, 0x02, 0, 0, 0, 10, 0, 0, 2, 0], &two, 0)
        .assert_good();
    let mut wrong = two.clone();
    wrong[700] ^= 1;
    let sense =
        s.h.cmd(&sess, 0, &[0x2F, 0x02, 0, 0, 0, 10, 0, 0, 2, 0], &wrong, 0)
            .assert_check(0xE, 0x1D, 0);
    assert_eq!(sense.info, Some(700));
    // ORWRITE.
    write(&s, &sess, 40, &[0x0F; 512], 512).assert_good();
    s.h.cmd(&sess, 0, &rw16(0x8B, 0, 40, 1), &[0xF0; 512], 0)
        .assert_good();
    assert!(read(&s, &sess, 40, 1, 512).iter().all(|&b| b == 0xFF));
    // COMPARE AND WRITE: match then miscompare with the offset, data unchanged.
    let mut caw = [0u8; 16];
    caw[0] = 0x89;
    caw[9] = 40;
    caw[13] = 1;
    let mut d = vec![0xFF; 512];
    d.extend_from_slice(&[0x11; 512]);
    s.h.cmd(&sess, 0, &caw, &d, 0).assert_good();
    assert!(read(&s, &sess, 40, 1, 512).iter().all(|&b| b == 0x11));
    let mut d2 = vec![0x11; 512];
    d2[100] = 0;
    d2.extend_from_slice(&[0x22; 512]);
    let sense = s.h.cmd(&sess, 0, &caw, &d2, 0).assert_check(0xE, 0x1D, 0);
    assert_eq!(sense.info, Some(100));
    assert!(read(&s, &sess, 40, 1, 512).iter().all(|&b| b == 0x11));
}

#[test]
fn compare_and_write_is_atomic_under_concurrent_writers() {
    let s = Arc::new(setup(
        serde_json::json!({"op":"create-lu","backing":"ram","size":"4m"}),
    ));
    let threads = 4;
    let per = 50;
    let sessions: Vec<Session> = (0..threads)
        .map(|i| login(&s, &format!("{INI1}-{i}")))
        .collect();
    let counter_cdb = {
        let mut c = [0u8; 16];
        c[0] = 0x89;
        c[13] = 2; // two blocks: a torn update would show as differing halves
        c
    };
    let img = |v: u64| -> Vec<u8> { (0..1024).map(|i| (v >> (8 * (i % 8))) as u8).collect() };
    std::thread::scope(|scope| {
        // Plain writers hammer the neighbouring blocks (2..4) the whole time.
        let noise = login(&s, INI2);
        let s2 = Arc::clone(&s);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let w = scope.spawn(move || {
            let mut n = 0u8;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                n = n.wrapping_add(1);
                write(&s2, &noise, 2, &[n; 1024], 512).assert_good();
            }
        });
        let mut hs = Vec::new();
        for sess in &sessions {
            let s = Arc::clone(&s);
            hs.push(scope.spawn(move || {
                let mut done = 0;
                while done < per {
                    let cur = read(&s, sess, 0, 2, 512);
                    assert!(
                        cur == img(u64::from_le_bytes(cur[..8].try_into().expect("8"))),
                        "torn counter image"
                    );
                    let v = u64::from_le_bytes(cur[..8].try_into().expect("8"));
                    let mut d = cur.clone();
                    d.extend_from_slice(&img(v + 1));
                    let o = s.h.cmd(sess, 0, &counter_cdb, &d, 0);
                    if o.is_good() {
                        done += 1;
                    } else {
                        o.assert_check(0xE, 0x1D, 0);
                    }
                }
            }));
        }
        for h in hs {
            h.join().expect("caw thread");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        w.join().expect("writer");
    });
    let sess = login(&s, "iqn.2025-01.org.rstmf.test:check");
    let fin = read(&s, &sess, 0, 2, 512);
    assert_eq!(
        fin,
        img((threads * per) as u64),
        "every successful COMPARE AND WRITE counted once"
    );
}

// ---- mode pages, unit attentions, resize ---------------------------------------------------------

#[test]
fn mode_select_switches_wce_and_d_sense_and_saved_values_survive_import() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = setup(file_lu(dir.path(), "m.img", "4m"));
    let a = login(&s, INI1);
    let b = login(&s, INI2);
    let o = s.h.cmd(&a, 0, &[0x1A, 0x08, 0x08, 0, 255, 0], &[], 255);
    assert_eq!(&o.data[4..7], &[0x08, 0x12, 0x04], "WCE on by default");
    // MODE SELECT (6), SP: caching page with WCE off.
    let mut p = vec![0, 0, 0, 0, 0x08, 0x12, 0x00];
    p.resize(4 + 20, 0);
    s.h.cmd(&a, 0, &[0x15, 0x11, 0, 0, p.len() as u8, 0], &p, 0)
        .assert_good();
    let o = s.h.cmd(&a, 0, &[0x1A, 0x08, 0x08, 0, 255, 0], &[], 255);
    assert_eq!(o.data[6], 0x00, "WCE off");
    // The other nexus is told.
    s.h.cmd(&b, 0, &[0; 6], &[], 0).assert_check(6, 0x2A, 0x01);
    // Writes still work (write-through now).
    write(&s, &a, 0, &[1; 512], 512).assert_good();
    // D_SENSE on: errors come in descriptor format.
    let mut c = vec![
        0, 0, 0, 0, 0x0A, 0x0A, 0x24, 0x10, 0, 0x40, 0, 0, 0xFF, 0xFF, 0, 0,
    ];
    s.h.cmd(&a, 0, &[0x15, 0x10, 0, 0, c.len() as u8, 0], &c, 0)
        .assert_good();
    let o = s.h.cmd(&a, 0, &[0xC7, 0, 0, 0, 0, 0], &[], 0);
    assert_eq!(o.sense, [0x72, 5, 0x20, 0, 0, 0, 0, 0]);
    // Changing TST (not changeable) is refused with a parameter-list pointer.
    c[6] = 0x44;
    let o = s.h.cmd(&a, 0, &[0x15, 0x10, 0, 0, c.len() as u8, 0], &c, 0);
    assert_eq!(
        o.parsed_sense().map(|x| (x.key.0, x.asc.asc)),
        Some((5, 0x26))
    );
    // Saved WCE=0 comes back after delete + import.
    let guid = s.guid.to_string();
    ctl(&s.h, serde_json::json!({"op":"delete-lu","guid":guid}));
    ctl(
        &s.h,
        serde_json::json!({"op":"import-lu","path":dir.path().join("m.img")}),
    );
    let _ = s.h.stmf().add_view(s.guid, None, None, Some(0));
    assert!(rstmf_tests::wait_until(Duration::from_secs(10), || s
        .h
        .lu_info(s.guid)
        .state
        == ObjState::Online));
    let c2 = login(&s, "iqn.2025-01.org.rstmf.test:ini-3");
    let o = s.h.cmd(&c2, 0, &[0x1A, 0x08, 0x08, 0, 255, 0], &[], 255);
    assert_eq!(o.data[6], 0x00, "saved WCE=0 persisted");
}

#[test]
fn grow_online_raises_capacity_changed_per_nexus() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = setup(file_lu(dir.path(), "g.img", "4m"));
    let a = login(&s, INI1);
    let b = login(&s, INI2);
    ctl(
        &s.h,
        serde_json::json!({"op":"modify-lu","guid":s.guid.to_string(),"size":"8m"}),
    );
    for sess in [&a, &b] {
        s.h.cmd(sess, 0, &[0; 6], &[], 0)
            .assert_check(6, 0x2A, 0x09);
        let o = s.h.cmd(sess, 0, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 8);
        assert_eq!(o.data, [0, 0, 0x3F, 0xFF, 0, 0, 2, 0]);
    }
    assert_eq!(
        std::fs::metadata(dir.path().join("g.img"))
            .expect("stat")
            .len(),
        8 << 20
    );
    write(&s, &a, 16383, &[9; 512], 512).assert_good();
    // Shrinking is refused.
    assert!(s
        .h
        .stmf()
        .provider_control(
            "sbd",
            &serde_json::json!({"op":"modify-lu","guid":s.guid.to_string(),"size":"4m"})
                .to_string()
        )
        .is_err());
}

#[test]
fn lun_reset_and_write_protect() {
    let s = setup(
        serde_json::json!({"op":"create-lu","backing":"ram","size":"4m","props":{"wp":"true"}}),
    );
    let a = login(&s, INI1);
    let o = write(&s, &a, 0, &[1; 512], 512);
    assert_eq!(o.sense_code(), Some((7, 0x27, 0)));
    ctl(
        &s.h,
        serde_json::json!({"op":"modify-lu","guid":s.guid.to_string(),"props":{"wp":false}}),
    );
    write(&s, &a, 0, &[1; 512], 512).assert_good();
    assert_eq!(
        s.h.tm(&a, 0, TmFunction::LUN_RESET, 0),
        plugins_sdk::TmResponse::COMPLETE
    );
    s.h.cmd(&a, 0, &[0; 6], &[], 0).assert_check(6, 0x29, 0x03);
    s.h.cmd(&a, 0, &[0; 6], &[], 0).assert_good();
}

// ---- reservations -----------------------------------------------------------------------------------

fn pr_out(s: &Setup, sess: &Session, sa: u8, ty: u8, key: u64, sa_key: u64, flags: u8) -> Outcome {
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = flags;
    s.h.cmd(sess, 0, &[0x5F, sa, ty, 0, 0, 0, 0, 0, 24, 0], &p, 0)
}

fn read_keys(s: &Setup, sess: &Session) -> Vec<u64> {
    let o =
        s.h.cmd(sess, 0, &[0x5E, 0, 0, 0, 0, 0, 0, 1, 0, 0], &[], 256);
    o.assert_good();
    o.data[8..]
        .chunks(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8")))
        .collect()
}

#[test]
fn persistent_reservations_conflicts_and_aptpl_survives_reimport() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = setup(file_lu(dir.path(), "pr.img", "4m"));
    let a = login(&s, INI1);
    let b = login(&s, INI2);
    pr_out(&s, &a, 0, 0, 0, 0xAAAA, 0x01).assert_good(); // REGISTER, APTPL
    pr_out(&s, &b, 0, 0, 0, 0xBBBB, 0x01).assert_good();
    assert_eq!(read_keys(&s, &a), vec![0xAAAA, 0xBBBB]);
    pr_out(&s, &a, 1, 0x01, 0xAAAA, 0, 0x01).assert_good(); // RESERVE, Write Exclusive
                                                            // b may read, not write; the holder writes.
    let o = write(&s, &b, 0, &[1; 512], 512);
    assert_eq!(o.status, 0x18, "RESERVATION CONFLICT");
    read(&s, &b, 0, 1, 512);
    write(&s, &a, 0, &[2; 512], 512).assert_good();
    // Wrong key: conflict. RESERVE (6) against a PR: conflict.
    assert_eq!(pr_out(&s, &b, 1, 0x01, 0x1234, 0, 0).status, 0x18);
    assert_eq!(s.h.cmd(&b, 0, &[0x16, 0, 0, 0, 0, 0], &[], 0).status, 0x18);
    // REPORT CAPABILITIES: PTPL_A set.
    let o = s.h.cmd(&a, 0, &[0x5E, 2, 0, 0, 0, 0, 0, 0, 8, 0], &[], 8);
    assert_eq!(o.data[3] & 1, 1);
    // Delete the LU (data kept), import it: registrations and the reservation are back.
    let guid = s.guid.to_string();
    ctl(&s.h, serde_json::json!({"op":"delete-lu","guid":guid}));
    let meta = dir.path().join("pr.img.meta");
    ctl(&s.h, serde_json::json!({"op":"import-lu","path":meta}));
    let _ = s.h.stmf().add_view(s.guid, None, None, Some(0));
    assert!(rstmf_tests::wait_until(Duration::from_secs(10), || s
        .h
        .lu_info(s.guid)
        .state
        == ObjState::Online));
    let c = login(&s, "iqn.2025-01.org.rstmf.test:ini-3");
    assert_eq!(read_keys(&s, &c), vec![0xAAAA, 0xBBBB]);
    let o = s.h.cmd(&c, 0, &[0x5E, 1, 0, 0, 0, 0, 0, 0, 24, 0], &[], 24);
    assert_eq!(&o.data[4..8], &[0, 0, 0, 16]);
    assert_eq!(
        u64::from_be_bytes(o.data[8..16].try_into().expect("8")),
        0xAAAA
    );
    assert_eq!(o.data[21], 0x01);
    // A nexus that is not the holder still cannot write.
    assert_eq!(write(&s, &c, 0, &[3; 512], 512).status, 0x18);
}

#[test]
fn preempt_clear_and_scsi2_reserve_release() {
    let s = setup(serde_json::json!({"op":"create-lu","backing":"ram","size":"4m"}));
    let a = login(&s, INI1);
    let b = login(&s, INI2);
    // SCSI-2: a reserves, b conflicts (even TUR-free media access), b's RELEASE is a no-op.
    s.h.cmd(&a, 0, &[0x16, 0, 0, 0, 0, 0], &[], 0).assert_good();
    assert_eq!(write(&s, &b, 0, &[1; 512], 512).status, 0x18);
    s.h.cmd(&b, 0, &[0x17, 0, 0, 0, 0, 0], &[], 0).assert_good();
    assert_eq!(s.h.cmd(&b, 0, &[0x16, 0, 0, 0, 0, 0], &[], 0).status, 0x18);
    s.h.cmd(&a, 0, &[0x17, 0, 0, 0, 0, 0], &[], 0).assert_good();
    write(&s, &b, 0, &[1; 512], 512).assert_good();
    // PR: b reserves Exclusive Access, a preempts it.
    pr_out(&s, &a, 0, 0, 0, 1, 0).assert_good();
    pr_out(&s, &b, 0, 0, 0, 2, 0).assert_good();
    pr_out(&s, &b, 1, 0x03, 2, 0, 0).assert_good();
    assert_eq!(
        s.h.cmd(&a, 0, &rw16(0x88, 0, 0, 1), &[], 512).status,
        0x18,
        "EA: no reads either"
    );
    pr_out(&s, &a, 4, 0x03, 1, 2, 0).assert_good(); // PREEMPT
    s.h.cmd(&b, 0, &[0; 6], &[], 0).assert_check(6, 0x2A, 0x05); // REGISTRATIONS PREEMPTED
    assert_eq!(read_keys(&s, &a), vec![1]);
    read(&s, &a, 0, 1, 512);
    pr_out(&s, &a, 3, 0, 1, 0, 0).assert_good(); // CLEAR
    assert!(read_keys(&s, &a).is_empty());
    write(&s, &b, 0, &[1; 512], 512).assert_good();
}

// ---- copy, sanitize, configuration ------------------------------------------------------------------

#[test]
fn extended_copy_between_lus_and_receive_copy_results() {
    let s = setup(serde_json::json!({"op":"create-lu","backing":"ram","size":"4m"}));
    let other = create(
        &s.h,
        serde_json::json!({"op":"create-lu","backing":"ram","size":"4m"}),
    );
    s.h.stmf()
        .add_view(other, None, None, Some(1))
        .expect("view");
    let sess = login(&s, INI1);
    s.h.cmd(&sess, 1, &[0; 6], &[], 0).assert_check(6, 0x29, 0);
    let data = pattern(8 * 512, 9);
    write(&s, &sess, 16, &data, 512).assert_good();
    let e4 = |g: &Guid| {
        let mut d = vec![0xE4, 0, 0, 0, 0x01, 0x03, 0, 16];
        d.extend_from_slice(&g.0);
        d.resize(28, 0);
        d.extend_from_slice(&[0, 0, 2, 0]);
        d
    };
    let mut p = vec![7, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, 0];
    p.extend(e4(&s.guid));
    p.extend(e4(&other));
    p.extend_from_slice(&[0x02, 0, 0, 0x18, 0, 0, 0, 1, 0, 0, 0, 8]);
    p.extend_from_slice(&16u64.to_be_bytes());
    p.extend_from_slice(&100u64.to_be_bytes());
    let len = (p.len() as u32).to_be_bytes();
    let cdb = [
        0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, len[0], len[1], len[2], len[3], 0, 0,
    ];
    s.h.cmd(&sess, 0, &cdb, &p, 0).assert_good();
    let o = s.h.cmd(&sess, 1, &rw16(0x88, 0, 100, 8), &[], data.len());
    assert_eq!(o.data, data);
    let o = s.h.cmd(
        &sess,
        0,
        &[0x84, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0],
        &[],
        12,
    );
    assert_eq!(o.data, [0, 0, 0, 8, 0, 0, 1, 0, 0, 0, 0x10, 0]);
    // Unknown copy target: COPY ABORTED.
    let mut bad = p.clone();
    bad[16 + 8] ^= 0xFF;
    let o = s.h.cmd(&sess, 0, &cdb, &bad, 0);
    assert_eq!(o.sense_code(), Some((0x0A, 0x0D, 0x02)));
    // Operating parameters.
    let o = s.h.cmd(
        &sess,
        0,
        &[0x84, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0],
        &[],
        64,
    );
    assert_eq!(&o.data[43..46], &[2, 0x02, 0xE4]);
}

#[test]
fn sanitize_overwrite() {
    let s = setup(serde_json::json!({"op":"create-lu","backing":"ram","size":"1m"}));
    let sess = login(&s, INI1);
    write(&s, &sess, 0, &[7; 4096], 512).assert_good();
    let p = [0x01, 0, 0, 4, 0xDE, 0xAD, 0xBE, 0xEF];
    s.h.cmd(&sess, 0, &[0x48, 0x01, 0, 0, 0, 0, 0, 0, 8, 0], &p, 0)
        .assert_good();
    let back = read(&s, &sess, 0, 2048, 512);
    assert!(back.chunks(4).all(|c| c == [0xDE, 0xAD, 0xBE, 0xEF]));
    // Cryptographic erase is not supported; pattern lengths are checked.
    s.h.cmd(&sess, 0, &[0x48, 0x03, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0)
        .assert_check(5, 0x24, 0);
    let bad = [0x01, 0, 0, 9, 1, 2, 3, 4];
    s.h.cmd(&sess, 0, &[0x48, 0x01, 0, 0, 0, 0, 0, 0, 8, 0], &bad, 0)
        .assert_check(5, 0x1A, 0);
    let zero = [0x01, 0, 0, 0, 1];
    s.h.cmd(&sess, 0, &[0x48, 0x01, 0, 0, 0, 0, 0, 0, 5, 0], &zero, 0)
        .assert_check(5, 0x26, 0);
    let no_passes = [0x00, 0, 0, 1, 1];
    s.h.cmd(
        &sess,
        0,
        &[0x48, 0x01, 0, 0, 0, 0, 0, 0, 5, 0],
        &no_passes,
        0,
    )
    .assert_check(5, 0x26, 0);
}

#[test]
fn saved_config_reimports_lus_in_a_new_core() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = {
        let s = setup(file_lu(dir.path(), "c.img", "4m"));
        let sess = login(&s, INI1);
        write(&s, &sess, 3, &[0x42; 512], 512).assert_good();
        create(
            &s.h,
            serde_json::json!({"op":"create-lu","backing":"ram","size":"2m","props":{"alias":"scratch"}}),
        );
        s.h.stmf().provider_config("sbd").expect("config")
    };
    let v = json(&config);
    assert_eq!(v["lus"].as_array().map(Vec::len), Some(2), "{config}");
    let h = Harness::new(Settings::default());
    h.load_with_config("sbd", &config);
    let list = json(
        &h.stmf()
            .provider_control("sbd", r#"{"op":"list-lu"}"#)
            .expect("list"),
    );
    assert_eq!(list["lus"].as_array().map(Vec::len), Some(2), "{list}");
    let file = list["lus"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["backing"] == "file"))
        .expect("file LU")
        .clone();
    let guid: Guid = file["guid"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .expect("guid");
    h.stmf().add_view(guid, None, None, Some(0)).expect("view");
    assert!(rstmf_tests::wait_until(Duration::from_secs(10), || h
        .lu_info(guid)
        .state
        == ObjState::Online));
    let tgt = h.port(TGT);
    let sess = tgt.session(INI1);
    h.cmd(&sess, 0, &[0; 6], &[], 0).assert_check(6, 0x29, 0);
    let o = h.cmd(&sess, 0, &rw16(0x88, 0, 3, 1), &[], 512);
    assert!(o.data.iter().all(|&b| b == 0x42));
    // A missing data file does not stop the others, and stays in the configuration.
    std::fs::remove_file(dir.path().join("c.img")).expect("rm");
    let h2 = Harness::new(Settings::default());
    h2.load_with_config("sbd", &config);
    let again = json(&h2.stmf().provider_config("sbd").expect("config"));
    assert_eq!(again["lus"].as_array().map(Vec::len), Some(2));
}

#[test]
fn control_errors_are_clear() {
    let h = Harness::new(Settings::default());
    h.load("sbd");
    let err = |req: &str| {
        h.stmf()
            .provider_control("sbd", req)
            .expect_err(req)
            .to_string()
    };
    assert!(err(r#"{"op":"create-lu","backing":"ram"}"#).contains("needs a size"));
    assert!(
        err(r#"{"op":"create-lu","backing":"ram","size":"4m","props":{"blk":1024}}"#)
            .contains("512 or 4096")
    );
    assert!(err(
        r#"{"op":"create-lu","backing":"ram","size":"4m","props":{"vid":"WAY-TOO-LONG"}}"#
    )
    .contains("vid"));
    assert!(err(r#"{"op":"create-lu","backing":"ram","size":"4k"}"#).contains("minimum"));
    assert!(
        err(r#"{"op":"delete-lu","guid":"600144F0000000000000000000000001"}"#).contains("no LU")
    );
    assert!(err(r#"{"op":"import-lu","path":"/nonexistent/x.img"}"#)
        .contains("/nonexistent/x.img.meta"));
    assert!(err(r#"{"op":"frobnicate"}"#).contains("invalid request"));
    let g = create(
        &h,
        serde_json::json!({"op":"create-lu","backing":"ram","size":"4m","props":{"guid":"600144F0000000000000000000000042"}}),
    );
    assert!(err(
        &serde_json::json!({"op":"modify-lu","guid":g.to_string(),"props":{"blk":4096}})
            .to_string()
    )
    .contains("only be set"));
    assert!(err(r#"{"op":"create-lu","backing":"ram","size":"4m","props":{"guid":"600144F0000000000000000000000042"}}"#).contains("exists"));
}

#[test]
fn block_device_lu_on_a_loop_device() {
    let dir = tempfile::tempdir().expect("tmp");
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(8 << 20))
        .expect("image");
    let out = std::process::Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output();
    let Some(dev) = out
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    else {
        eprintln!("skipped: no loop device");
        return;
    };
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(&self.0)
                .status();
        }
    }
    let _d = Detach(dev.clone());
    let s = setup(
        serde_json::json!({"op":"create-lu","backing":"bdev","path":dev,"props":{"meta":dir.path().join("disk.meta"),"blk":4096}}),
    );
    let sess = login(&s, INI1);
    let o =
        s.h.cmd(&sess, 0, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 8);
    assert_eq!(o.data, [0, 0, 0x07, 0xFF, 0, 0, 0x10, 0]);
    let data = pattern(8192, 1);
    write(&s, &sess, 10, &data, 4096).assert_good();
    s.h.cmd(&sess, 0, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0)
        .assert_good();
    assert_eq!(read(&s, &sess, 10, 2, 4096), data);
}

#[test]
fn abort_task_mid_transfer_leaks_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = setup(file_lu(dir.path(), "ab.img", "40m"));
    s.h.set_max_buf(512);
    let sess = login(&s, INI1);
    for round in 0..5 {
        // 32 MiB in 512-byte buffers: 65536 round trips, plenty of time to abort.
        let p = s.h.submit_with(
            &sess,
            0,
            &rw16(0x88, 0, 0, 65536),
            &[],
            32 << 20,
            CmdOptions {
                max_nbufs: 4,
                ..CmdOptions::default()
            },
        );
        if round % 2 == 1 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let r = s.h.tm(&sess, 0, TmFunction::ABORT_TASK, p.tag());
        assert!(
            r == plugins_sdk::TmResponse::COMPLETE
                || r == plugins_sdk::TmResponse::TASK_DOES_NOT_EXIST,
            "{r:?}"
        );
        assert!(p.wait_freed(Duration::from_secs(10)), "aborted task freed");
        // FUNCTION COMPLETE means the read was cut short: no status reached the initiator.
        if r == plugins_sdk::TmResponse::COMPLETE {
            assert!(p
                .outcome()
                .is_none_or(|o| o.status != 0 || o.data.len() == 32 << 20));
        }
        assert!(p.violations().is_empty(), "{:?}", p.violations());
    }
    assert!(rstmf_tests::wait_until(Duration::from_secs(5), || s
        .h
        .outstanding_buffers()
        == 0));
    assert!(s.h.violations().is_empty());
    // The LU still works.
    s.h.set_max_buf(64 * 1024);
    write(&s, &sess, 0, &[5; 4096], 512).assert_good();
    assert!(read(&s, &sess, 0, 8, 512).iter().all(|&b| b == 5));
}

// ---- reservation identity: initiator ports and TransportIDs from the core ---------------------

/// Initiator port names as iscsit registers them (`<name>,i,0x<ISID>`).
const PORT_A: &str = "iqn.2025-01.org.rstmf.test:ini-a,i,0x400001370000";
const PORT_A2: &str = "iqn.2025-01.org.rstmf.test:ini-a,i,0x400001370001";
const PORT_B: &str = "iqn.2025-01.org.rstmf.test:ini-b,i,0x400001370000";

/// PERSISTENT RESERVE OUT with a parameter list of any length.
fn pr_out_list(s: &Setup, sess: &Session, sa: u8, ty: u8, p: &[u8]) -> Outcome {
    let len = (p.len() as u32).to_be_bytes();
    s.h.cmd(
        sess,
        0,
        &[0x5F, sa, ty, 0, 0, len[0], len[1], len[2], len[3], 0],
        p,
        0,
    )
}

/// An iSCSI TransportID (format 01b when the name has an ISID).
fn transport_id(name: &str) -> Vec<u8> {
    let padded = ((name.len() + 1).div_ceil(4) * 4).max(20);
    let mut t = vec![if name.contains(",i,0x") { 0x45 } else { 0x05 }, 0];
    t.extend_from_slice(&(padded as u16).to_be_bytes());
    t.extend_from_slice(name.as_bytes());
    t.resize(4 + padded, 0);
    t
}

/// One READ FULL STATUS descriptor.
#[derive(Debug, PartialEq)]
struct FullStatus {
    key: u64,
    holder: bool,
    all_tg_pt: bool,
    rtpi: u16,
    name: String,
}

fn read_full_status(s: &Setup, sess: &Session) -> Vec<FullStatus> {
    let o =
        s.h.cmd(sess, 0, &[0x5E, 3, 0, 0, 0, 0, 0, 4, 0, 0], &[], 1024);
    o.assert_good();
    let mut d = &o.data[8..];
    let mut out = Vec::new();
    while d.len() >= 24 {
        let tid_len = u32::from_be_bytes(d[20..24].try_into().expect("4")) as usize;
        let tid = &d[24..24 + tid_len];
        let name_len = usize::from(u16::from_be_bytes([tid[2], tid[3]]));
        let name = &tid[4..4 + name_len];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        out.push(FullStatus {
            key: u64::from_be_bytes(d[..8].try_into().expect("8")),
            holder: d[12] & 1 != 0,
            all_tg_pt: d[12] & 2 != 0,
            rtpi: u16::from_be_bytes([d[18], d[19]]),
            name: String::from_utf8_lossy(&name[..end]).into_owned(),
        });
        d = &d[24 + tid_len..];
    }
    out
}

#[test]
fn registrant_is_the_initiator_port_across_reconnections() {
    let s = setup(serde_json::json!({"op":"create-lu","backing":"ram","size":"4m"}));
    let a = login(&s, PORT_A);
    let b = login(&s, PORT_B);
    pr_out(&s, &a, 0, 0, 0, 0xA, 0).assert_good(); // REGISTER
    pr_out(&s, &a, 1, 0x03, 0xA, 0, 0).assert_good(); // RESERVE, Exclusive Access
    assert_eq!(read(&s, &a, 0, 1, 512).len(), 512);
    assert_eq!(
        s.h.cmd(&b, 0, &rw16(0x88, 0, 0, 1), &[], 512).status,
        0x18,
        "another initiator conflicts"
    );
    let st = read_full_status(&s, &b);
    assert_eq!(
        st,
        vec![FullStatus {
            key: 0xA,
            holder: true,
            all_tg_pt: false,
            rtpi: st[0].rtpi,
            name: PORT_A.into(),
        }],
        "READ FULL STATUS names the real initiator port"
    );
    assert_ne!(st[0].rtpi, 0, "a real relative target port id");

    // The initiator logs out and back in (a new session, same initiator port): it is still
    // the registrant and the holder.
    a.close();
    drop(a);
    let a = login(&s, PORT_A);
    assert_eq!(read(&s, &a, 0, 1, 512).len(), 512);
    write(&s, &a, 0, &[7; 512], 512).assert_good();
    assert_eq!(read_keys(&s, &a), vec![0xA]);
    // Registered already: REGISTER with the wrong reservation key conflicts.
    assert_eq!(pr_out(&s, &a, 0, 0, 0, 0xA2, 0).status, 0x18);

    // A second session of the same initiator port is the same I_T nexus for PR.
    let a_again = login(&s, PORT_A);
    write(&s, &a_again, 1, &[8; 512], 512).assert_good();

    // The same iSCSI name with another ISID is another initiator port: not registered.
    let a2 = login(&s, PORT_A2);
    assert_eq!(s.h.cmd(&a2, 0, &rw16(0x88, 0, 0, 1), &[], 512).status, 0x18);
    assert_eq!(pr_out(&s, &a2, 1, 0x03, 0xA, 0, 0).status, 0x18);
    // ISID case does not matter (iSCSI names are case-insensitive).
    let upper = login(&s, &PORT_A.to_ascii_uppercase());
    write(&s, &upper, 2, &[9; 512], 512).assert_good();

    pr_out(&s, &a, 2, 0x03, 0xA, 0, 0).assert_good(); // RELEASE
    write(&s, &b, 0, &[1; 512], 512).assert_good();
}

#[test]
fn spec_i_pt_and_register_and_move_name_real_ports() {
    let s = setup(serde_json::json!({"op":"create-lu","backing":"ram","size":"4m"}));
    let a = login(&s, PORT_A);
    // REGISTER with SPEC_I_PT for PORT_B (given in upper case), before B ever logs in.
    let tid = transport_id(&PORT_B.to_ascii_uppercase());
    let mut p = vec![0u8; 28];
    p[8..16].copy_from_slice(&0xAu64.to_be_bytes());
    p[20] = 0x08;
    p[24..28].copy_from_slice(&(tid.len() as u32).to_be_bytes());
    p.extend_from_slice(&tid);
    pr_out_list(&s, &a, 0, 0, &p).assert_good();
    let b = login(&s, PORT_B);
    assert_eq!(read_keys(&s, &b), vec![0xA, 0xA]);
    // B is registered: it may reserve with the key.
    pr_out(&s, &b, 1, 0x01, 0xA, 0, 0).assert_good();
    write(&s, &b, 0, &[1; 512], 512).assert_good();
    assert_eq!(write(&s, &a, 0, &[2; 512], 512).status, 0x18);

    // REGISTER AND MOVE the reservation from B to A's port.
    let rtpi = read_full_status(&s, &b)[0].rtpi;
    let tid = transport_id(PORT_A);
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&0xAu64.to_be_bytes());
    p[8..16].copy_from_slice(&0xA1u64.to_be_bytes());
    p[18..20].copy_from_slice(&rtpi.to_be_bytes());
    p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
    p.extend_from_slice(&tid);
    pr_out_list(&s, &b, 7, 0x01, &p).assert_good();
    write(&s, &a, 0, &[3; 512], 512).assert_good();
    assert_eq!(write(&s, &b, 0, &[4; 512], 512).status, 0x18);
    let st = read_full_status(&s, &a);
    let holder = st.iter().find(|r| r.holder).expect("a holder");
    assert_eq!((holder.name.as_str(), holder.key), (PORT_A, 0xA1));
}

#[test]
fn registrations_follow_the_target_port_unless_all_tg_pt() {
    let s = setup(serde_json::json!({"op":"create-lu","backing":"ram","size":"4m"}));
    let t2 = s.h.port("iqn.2025-01.org.rstmf.test:sbd-2");
    let a1 = login(&s, PORT_A);
    let a2 = t2.session(PORT_A);
    s.h.cmd(&a2, 0, &[0; 6], &[], 0)
        .assert_check(0x6, 0x29, 0x00);
    pr_out(&s, &a1, 0, 0, 0, 0xA, 0).assert_good();
    // Through the other target port, the same initiator port is another I_T nexus.
    assert_eq!(pr_out(&s, &a2, 1, 0x01, 0xA, 0, 0).status, 0x18);
    pr_out(&s, &a2, 0, 0, 0, 0xA2, 0).assert_good();
    let st = read_full_status(&s, &a1);
    assert_eq!(st.len(), 2);
    assert_ne!(st[0].rtpi, st[1].rtpi, "{st:?}");

    // ALL_TG_PT: one registration for every target port.
    let b1 = login(&s, PORT_B);
    let b2 = t2.session(PORT_B);
    s.h.cmd(&b2, 0, &[0; 6], &[], 0)
        .assert_check(0x6, 0x29, 0x00);
    pr_out(&s, &b1, 0, 0, 0, 0xB, 0x04).assert_good();
    pr_out(&s, &b2, 1, 0x01, 0xB, 0, 0).assert_good();
    let st = read_full_status(&s, &a1);
    let b = st.iter().find(|r| r.key == 0xB).expect("B registered");
    assert!(b.all_tg_pt && b.holder && b.name == PORT_B, "{st:?}");
}

#[test]
fn transport_id_from_the_port_names_the_registrant() {
    let s = setup(serde_json::json!({"op":"create-lu","backing":"ram","size":"4m"}));
    // The port reports a TransportID (as text) that differs from the name it registered:
    // the TransportID is the identity.
    let a = s
        .tgt
        .session_with_transport_id("ini-a-alias", &PORT_A.to_ascii_uppercase());
    s.h.cmd(&a, 0, &[0; 6], &[], 0)
        .assert_check(0x6, 0x29, 0x00);
    pr_out(&s, &a, 0, 0, 0, 0xA, 0).assert_good();
    assert_eq!(read_full_status(&s, &a)[0].name, PORT_A);
    // A session registered under that port name, without a TransportID, is the same port.
    let same = login(&s, PORT_A);
    pr_out(&s, &same, 1, 0x01, 0xA, 0, 0).assert_good();
    // TransportID bytes in hex work too.
    let hex: String = transport_id(PORT_A)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let h = s.tgt.session_with_transport_id("whatever", &hex);
    s.h.cmd(&h, 0, &[0; 6], &[], 0)
        .assert_check(0x6, 0x29, 0x00);
    write(&s, &h, 0, &[1; 512], 512).assert_good();
    let b = login(&s, PORT_B);
    assert_eq!(write(&s, &b, 0, &[1; 512], 512).status, 0x18);
}

#[test]
fn aptpl_reservation_is_restored_in_a_new_core_for_the_same_initiator() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = {
        let s = setup(file_lu(dir.path(), "aptpl.img", "4m"));
        let a = login(&s, PORT_A);
        let b = login(&s, PORT_B);
        pr_out(&s, &a, 0, 0, 0, 0xA, 0x01).assert_good(); // REGISTER, APTPL
        pr_out(&s, &b, 0, 0, 0, 0xB, 0x01).assert_good();
        pr_out(&s, &a, 1, 0x01, 0xA, 0, 0x01).assert_good(); // RESERVE, Write Exclusive
        write(&s, &a, 0, &[5; 512], 512).assert_good();
        s.h.stmf().provider_config("sbd").expect("config")
    };
    // "Restart": a new core, sbd loaded with its saved configuration.
    let h = Harness::new(Settings::default());
    h.load_with_config("sbd", &config);
    let list = json(
        &h.stmf()
            .provider_control("sbd", r#"{"op":"list-lu"}"#)
            .expect("list"),
    );
    let guid: Guid = list["lus"][0]["guid"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("{list}"));
    h.stmf().add_view(guid, None, None, Some(0)).expect("view");
    assert!(rstmf_tests::wait_until(Duration::from_secs(10), || h
        .lu_info(guid)
        .state
        == ObjState::Online));
    let s = Setup {
        tgt: h.port(TGT),
        h,
        guid,
    };
    // The same initiators log in again: A still holds the reservation, B is registered.
    let a = login(&s, PORT_A);
    let b = login(&s, PORT_B);
    assert_eq!(read_keys(&s, &b), vec![0xA, 0xB]);
    write(&s, &a, 1, &[6; 512], 512).assert_good();
    assert_eq!(write(&s, &b, 1, &[7; 512], 512).status, 0x18);
    // B is a registrant: it may preempt A.
    pr_out(&s, &b, 4, 0x01, 0xB, 0xA, 0).assert_good();
    write(&s, &b, 1, &[7; 512], 512).assert_good();
    assert_eq!(read_keys(&s, &b), vec![0xB]);
    // A learns of it by a unit attention (REGISTRATIONS PREEMPTED) on its next command.
    s.h.cmd(&a, 0, &[0; 6], &[], 0)
        .assert_check(0x6, 0x2A, 0x05);
}

// ---- behaviours the libiscsi conformance suite checks (docs/conformance.md) -------------------

/// INVALID FIELD IN CDB with its field pointer: `(byte, bit)`.
fn cdb_field(o: &Outcome) -> (u16, Option<u8>) {
    let s = o.assert_check(5, 0x24, 0);
    match s.sks {
        Some(plugins_sdk::scsi::SenseKeySpecific::Field(fp)) if fp.in_cdb => (fp.byte, fp.bit),
        other => panic!("no CDB field pointer in {o:?} ({other:?})"),
    }
}

fn vpd(s: &Setup, sess: &Session, page: u8) -> Vec<u8> {
    let o = s.h.cmd(sess, 0, &[0x12, 1, page, 0, 255, 0], &[], 255);
    o.assert_good();
    o.data
}

#[test]
fn block_limits_and_physical_block_of_a_file_lu() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = setup(file_lu(dir.path(), "bl.img", "64m"));
    let sess = login(&s, INI1);
    // No physical blocks on a file (LBPPBE 0, as Linux's fileio reports), LBPME + LBPRZ.
    let o = s.h.cmd(&sess, 0, &rw16(0x9E, 0x10, 0, 32), &[], 32);
    assert_eq!(&o.data[12..16], &[0, 0x00, 0xC0, 0]);
    // MAXIMUM UNMAP LBA COUNT at most 2^20 blocks, and UNMAP holds to it.
    let b0 = vpd(&s, &sess, 0xB0);
    let max_unmap = u32::from_be_bytes(b0[20..24].try_into().expect("4 bytes"));
    assert_eq!(max_unmap, 1 << 20);
    let fs_block = u32::from_be_bytes(b0[28..32].try_into().expect("4 bytes"));
    assert!(fs_block >= 1, "OPTIMAL UNMAP GRANULARITY {fs_block}");
    let unmap = |count: u32| {
        let mut p = vec![0, 22, 0, 16, 0, 0, 0, 0];
        p.extend_from_slice(&0u64.to_be_bytes());
        p.extend_from_slice(&count.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        s.h.cmd(&sess, 0, &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &p, 0)
    };
    unmap(max_unmap + 1).assert_check(5, 0x26, 0);
    unmap(1 << 17).assert_good();
}

#[test]
fn compare_and_write_data_out_must_match_the_block_count() {
    let s = setup(serde_json::json!({"op":"create-lu","backing":"ram","size":"4m"}));
    let sess = login(&s, INI1);
    write(&s, &sess, 0, &[0xA6; 2048], 512).assert_good();
    let caw = |nlb: u8, data: &[u8]| {
        let mut c = [0u8; 16];
        c[0] = 0x89;
        c[13] = nlb;
        s.h.cmd(&sess, 0, &c, data, 0)
    };
    // 4 blocks of data-out for 1 or 3 blocks, and 256 blocks wrapped to 0 in the one-byte
    // field: INVALID FIELD IN CDB at NUMBER OF LOGICAL BLOCKS, nothing written.
    let mut four = vec![0xA6; 1024];
    four.extend_from_slice(&[0x11; 1024]);
    assert_eq!(cdb_field(&caw(1, &four)), (13, None));
    assert_eq!(cdb_field(&caw(3, &four)), (13, None));
    assert_eq!(cdb_field(&caw(0, &four)), (13, None));
    assert!(read(&s, &sess, 0, 4, 512).iter().all(|&b| b == 0xA6));
    // The matching size works; 0 blocks with no data is a no-op.
    caw(2, &four).assert_good();
    assert!(read(&s, &sess, 0, 2, 512).iter().all(|&b| b == 0x11));
    caw(0, &[]).assert_good();
}

#[test]
fn write_same_data_out_size_and_unmap_whatever_the_block() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ws.img");
    let s = setup(file_lu(dir.path(), "ws.img", "16m"));
    let sess = login(&s, INI1);
    let ws10 = |flags: u8, lba: u32, blocks: u16| {
        let mut c = rw10(0x41, lba, blocks);
        c[1] = flags;
        c
    };
    // A Data-Out buffer of half a block or two blocks: INVALID FIELD IN COMMAND IU.
    for len in [256usize, 1024] {
        s.h.cmd(&sess, 0, &ws10(0x08, 0, 1), &vec![0xA6; len], 0)
            .assert_check(5, 0x0E, 0x03);
    }
    // WRITE SAME with UNMAP deallocates even when the block is not zeros (the blocks then
    // read back as zeros: LBPRZ), here up to the end of the LU (NUMBER OF BLOCKS 0).
    let data = vec![0xFF; 1 << 20];
    write(&s, &sess, 30720, &data, 512).assert_good();
    s.h.cmd(&sess, 0, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0)
        .assert_good();
    let before = allocated(&path);
    s.h.cmd(&sess, 0, &ws10(0x08, 30720, 0), &[0xFF; 512], 0)
        .assert_good();
    assert!(read(&s, &sess, 30720, 2048, 512).iter().all(|&b| b == 0));
    assert!(
        allocated(&path) + (1 << 20) <= before + 4096,
        "WRITE SAME with UNMAP frees space: {before} -> {}",
        allocated(&path)
    );
    // A write-protected LU answers DATA PROTECT before looking at the Data-Out size.
    let wp = setup(
        serde_json::json!({"op":"create-lu","backing":"ram","size":"4m","props":{"wp":"true"}}),
    );
    let sess = login(&wp, INI1);
    wp.h.cmd(&sess, 0, &ws10(0x08, 0, 1), &[], 0)
        .assert_check(7, 0x27, 0);
}

/// The EXTENDED COPY (LID1) CDB for a parameter list of `len` bytes.
fn xcopy_cdb(len: usize) -> [u8; 16] {
    let l = (len as u32).to_be_bytes();
    [
        0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, l[0], l[1], l[2], l[3], 0, 0,
    ]
}

/// An E4h (identification) CSCD descriptor naming `g`.
fn e4(g: &Guid) -> Vec<u8> {
    let mut d = vec![0xE4, 0, 0, 0, 0x01, 0x03, 0, 16];
    d.extend_from_slice(&g.0);
    d.resize(28, 0);
    d.extend_from_slice(&[0, 0, 2, 0]);
    d
}

/// A block→block segment descriptor.
fn b2b(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
    let mut d = vec![0x02, 0, 0, 0x18];
    d.extend_from_slice(&src.to_be_bytes());
    d.extend_from_slice(&dst.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&blocks.to_be_bytes());
    d.extend_from_slice(&src_lba.to_be_bytes());
    d.extend_from_slice(&dst_lba.to_be_bytes());
    d
}

/// An EXTENDED COPY parameter list: header, CSCD descriptors, segment descriptors.
fn xcopy_list(id: u8, cscds: &[Vec<u8>], segs: &[Vec<u8>]) -> Vec<u8> {
    let cl: usize = cscds.iter().map(Vec::len).sum();
    let sl: usize = segs.iter().map(Vec::len).sum();
    let mut p = vec![id, 0];
    p.extend_from_slice(&(cl as u16).to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&(sl as u32).to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    cscds.iter().for_each(|d| p.extend_from_slice(d));
    segs.iter().for_each(|d| p.extend_from_slice(d));
    p
}

#[test]
fn extended_copy_limits_segment_errors_and_per_nexus_results() {
    let s = setup(serde_json::json!({"op":"create-lu","backing":"ram","size":"4m"}));
    let a = login(&s, INI1);
    let b = login(&s, INI2);
    write(&s, &a, 0, &pattern(4096, 1), 512).assert_good();
    let xcopy = |sess: &Session, p: &[u8]| s.h.cmd(sess, 0, &xcopy_cdb(p.len()), p, 0);
    let me = e4(&s.guid);
    // Limits from RECEIVE COPY OPERATING PARAMETERS: 8 CSCDs, 64 segments, 2048 bytes.
    let nine = vec![me.clone(); 9];
    let one_seg = vec![b2b(0, 0, 1, 0, 100)];
    xcopy(&a, &xcopy_list(1, &nine, &one_seg)).assert_check(5, 0x26, 0x06);
    let many = vec![b2b(0, 0, 1, 0, 100); 65];
    xcopy(&a, &xcopy_list(1, std::slice::from_ref(&me), &many)).assert_check(5, 0x26, 0x08);
    // Both too many: longer than MAXIMUM DESCRIPTOR LIST LENGTH, a PARAMETER LIST LENGTH
    // ERROR first.
    xcopy(&a, &xcopy_list(1, &nine, &many)).assert_check(5, 0x1A, 0);
    // A segment naming a CSCD that is not in the list: COPY ABORTED, UNREACHABLE COPY
    // TARGET, with the segment number and a pointer to the DESTINATION index.
    let bad = xcopy(
        &a,
        &xcopy_list(1, std::slice::from_ref(&me), &[b2b(0, 1, 1, 0, 100)]),
    );
    let sense = bad.assert_check(0x0A, 0x08, 0x04);
    // (Segment 0: fixed-format COMMAND-SPECIFIC INFORMATION 0, which reads as absent.)
    assert_eq!(sense.command_specific.unwrap_or(0), 0);
    assert!(matches!(
        sense.sks,
        Some(plugins_sdk::scsi::SenseKeySpecific::Segment {
            in_segment_descriptor: true,
            byte: 6,
            ..
        })
    ));
    // A second segment running past the end of the LU: COPY ABORTED at segment 1, and the
    // first segment was not copied either (every segment is checked first).
    let past = xcopy(
        &a,
        &xcopy_list(
            1,
            std::slice::from_ref(&me),
            &[b2b(0, 0, 8, 0, 100), b2b(0, 0, 8, 0, 8190)],
        ),
    );
    let sense = past.assert_check(0x0A, 0, 0);
    assert_eq!(sense.command_specific, Some(1));
    assert!(read(&s, &a, 100, 8, 512).iter().all(|&x| x == 0));
    // RECEIVE COPY STATUS is per I_T nexus: list 5 of nexus A is not B's.
    xcopy(
        &a,
        &xcopy_list(5, std::slice::from_ref(&me), &[b2b(0, 0, 8, 0, 100)]),
    )
    .assert_good();
    assert_eq!(read(&s, &a, 100, 8, 512), pattern(4096, 1));
    let rcs = [0x84, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0];
    let o = s.h.cmd(&a, 0, &rcs, &[], 12);
    assert_eq!(o.data, [0, 0, 0, 8, 0, 0, 1, 0, 0, 0, 0x10, 0]);
    assert_eq!(cdb_field(&s.h.cmd(&b, 0, &rcs, &[], 12)), (2, None));
    // A nexus that goes away takes its results along.
    a.close();
    let a2 = login(&s, INI1);
    assert_eq!(cdb_field(&s.h.cmd(&a2, 0, &rcs, &[], 12)), (2, None));
}

#[test]
fn read_defect_data_reports_empty_lists() {
    let s = setup(serde_json::json!({"op":"create-lu","backing":"ram","size":"4m"}));
    let sess = login(&s, INI1);
    let o =
        s.h.cmd(&sess, 0, &[0x37, 0, 0x18, 0, 0, 0, 0, 0, 32, 0], &[], 32);
    o.assert_good();
    assert_eq!(o.data, [0, 0x18, 0, 0]);
    let o = s.h.cmd(
        &sess,
        0,
        &[0xB7, 0x05, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        &[],
        32,
    );
    assert_eq!(o.data, [0, 0x05, 0, 0, 0, 0, 0, 0]);
    // A reserved list format.
    assert_eq!(
        cdb_field(&s.h.cmd(&sess, 0, &[0x37, 0, 0x01, 0, 0, 0, 0, 0, 32, 0], &[], 32)),
        (2, Some(2))
    );
}

/// SANITIZE `sa` with `flags` in byte 1 and a parameter list.
fn sanitize(s: &Setup, sess: &Session, flags: u8, p: &[u8]) -> Outcome {
    let l = (p.len() as u16).to_be_bytes();
    s.h.cmd(sess, 0, &[0x48, flags, 0, 0, 0, 0, 0, l[0], l[1], 0], p, 0)
}

#[test]
fn sanitize_cdb_checks_block_erase_and_exit_failure_mode() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("san.img");
    let s = setup(file_lu(dir.path(), "san.img", "16m"));
    let sess = login(&s, INI1);
    let one = [0x01, 0, 0, 1, 0x5A];
    // PARAMETER LIST LENGTH outside 5..=block size + 4 for OVERWRITE, or not 0 for the
    // others: INVALID FIELD IN CDB at byte 7.
    for len in [0usize, 4, 517] {
        let mut p = vec![0x01, 0, 0, 1];
        p.resize(len, 0x5A);
        assert_eq!(
            cdb_field(&sanitize(&s, &sess, 0x01, &p)),
            (7, None),
            "{len}"
        );
    }
    assert_eq!(cdb_field(&sanitize(&s, &sess, 0x02, &[0; 8])), (7, None));
    assert_eq!(cdb_field(&sanitize(&s, &sess, 0x1F, &[0; 8])), (7, None));
    // Reserved bit 6 of byte 1 and bytes 2..=6.
    let o =
        s.h.cmd(&sess, 0, &[0x48, 0x41, 0, 0, 0, 0, 0, 0, 5, 0], &one, 0);
    assert_eq!(cdb_field(&o), (1, Some(6)));
    for byte in 2..=6 {
        let mut c = [0x48, 0x01, 0, 0, 0, 0, 0, 0, 5, 0];
        c[byte] = 1;
        assert_eq!(
            cdb_field(&s.h.cmd(&sess, 0, &c, &one, 0)),
            (byte as u16, None)
        );
    }
    // EXIT FAILURE MODE with no failed sanitize has nothing to do.
    sanitize(&s, &sess, 0x1F, &[]).assert_good();
    // BLOCK ERASE on a thin file LU: listed by RSOC, WABEREQ = 01b, every block
    // deallocated (reads zero, space freed, GET LBA STATUS: one deallocated extent).
    let rsoc = |sa: u8| {
        let o = s.h.cmd(
            &sess,
            0,
            &[0xA3, 0x0C, 0x02, 0x48, 0, sa, 0, 0, 0, 64, 0, 0],
            &[],
            64,
        );
        o.assert_good();
        o.data[1] & 0x07
    };
    assert_eq!(rsoc(0x02), 3);
    assert_eq!(rsoc(0x1F), 3);
    assert_eq!(rsoc(0x03), 1, "no cryptographic erase");
    assert_eq!(vpd(&s, &sess, 0xB1)[7] & 0xC0, 0x40);
    write(&s, &sess, 0, &[0x77; 1 << 20], 512).assert_good();
    write(&s, &sess, 30720, &[0x77; 1 << 20], 512).assert_good();
    s.h.cmd(&sess, 0, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0)
        .assert_good();
    assert!(allocated(&path) >= 2 << 20);
    sanitize(&s, &sess, 0x02, &[]).assert_good();
    assert!(allocated(&path) < 1 << 20, "{}", allocated(&path));
    assert!(read(&s, &sess, 0, 2048, 512).iter().all(|&b| b == 0));
    let glbas = [0x9E, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0, 0];
    let o = s.h.cmd(&sess, 0, &glbas, &[], 255);
    assert_eq!(&o.data[..4], &[0, 0, 0, 20]);
    assert_eq!(&o.data[8..21], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 1]);
    // A thick LU has no BLOCK ERASE (deallocation would not erase) and no UNMAP.
    let thick = setup(
        serde_json::json!({"op":"create-lu","backing":"file","path":dir.path().join("thick.img"),"size":"4m","props":{"thin":"false"}}),
    );
    let t = login(&thick, INI1);
    assert_eq!(
        cdb_field(
            &thick
                .h
                .cmd(&t, 0, &[0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0], &[], 0)
        ),
        (1, Some(4))
    );
    let o = thick.h.cmd(
        &t,
        0,
        &[0xA3, 0x0C, 0x02, 0x48, 0, 2, 0, 0, 0, 64, 0, 0],
        &[],
        64,
    );
    assert_eq!(o.data[1] & 0x07, 1);
    let o = thick.h.cmd(
        &t,
        0,
        &[0xA3, 0x0C, 0x01, 0x42, 0, 0, 0, 0, 0, 64, 0, 0],
        &[],
        64,
    );
    assert_eq!(o.data[1] & 0x07, 1);
}

#[test]
fn sanitize_in_progress_survives_aborts_and_resets() {
    // 8 MiB at 4 MiB/s: the overwrite lasts about two seconds.
    let s = setup(
        serde_json::json!({"op":"create-lu","backing":"ram","size":"8m","props":{"sanitize-rate":"4m"}}),
    );
    let a = login(&s, INI1);
    let b = login(&s, INI2);
    let started = std::time::Instant::now();
    // INVERT with two passes: the last pass writes the pattern itself.
    let p = [0x82, 0, 0, 2, 0x0F, 0xF0];
    let l = (p.len() as u16).to_be_bytes();
    let pending =
        s.h.submit(&a, 0, &[0x48, 0x01, 0, 0, 0, 0, 0, l[0], l[1], 0], &p, 0);
    assert!(rstmf_tests::wait_until(Duration::from_secs(5), || {
        s.h.cmd(&b, 0, &[0; 6], &[], 0).sense_code() == Some((2, 0x04, 0x1B))
    }));
    // NOT READY, SANITIZE IN PROGRESS (with progress) for everything but INQUIRY and
    // REQUEST SENSE; a second SANITIZE is refused the same way.
    let o = s.h.cmd(&b, 0, &rw16(0x88, 0, 0, 1), &[], 512);
    let sense = o.assert_check(2, 0x04, 0x1B);
    assert!(matches!(
        sense.sks,
        Some(plugins_sdk::scsi::SenseKeySpecific::Progress(_))
    ));
    s.h.cmd(&b, 0, &[0x1B, 1, 0, 0, 0, 0], &[], 0)
        .assert_check(2, 0x04, 0x1B);
    sanitize(&s, &b, 0x01, &p).assert_check(2, 0x04, 0x1B);
    s.h.cmd(&b, 0, &[0x12, 0, 0, 0, 96, 0], &[], 96)
        .assert_good();
    let o = s.h.cmd(&b, 0, &[0x03, 0, 0, 0, 18, 0], &[], 18);
    o.assert_good();
    assert_eq!((o.data[2], o.data[12], o.data[13]), (2, 0x04, 0x1B));
    // ABORT TASK ends the SANITIZE command, not the operation.
    let r = s.h.tm(&a, 0, TmFunction::ABORT_TASK, pending.tag());
    assert_eq!(r, plugins_sdk::TmResponse::COMPLETE);
    assert!(pending.wait_freed(Duration::from_secs(5)));
    s.h.cmd(&b, 0, &[0; 6], &[], 0).assert_check(2, 0x04, 0x1B);
    // Nor does a LUN reset (its unit attention first), nor the initiator going away.
    s.h.tm(&b, 0, TmFunction::LUN_RESET, 0);
    s.h.cmd(&b, 0, &[0; 6], &[], 0).assert_check(6, 0x29, 0x03);
    s.h.cmd(&b, 0, &[0; 6], &[], 0).assert_check(2, 0x04, 0x1B);
    a.close();
    assert!(rstmf_tests::wait_until(Duration::from_secs(20), || {
        s.h.cmd(&b, 0, &[0; 6], &[], 0).is_good()
    }));
    assert!(
        started.elapsed() >= Duration::from_millis(3500),
        "two passes over 8 MiB at 4 MiB/s took {:?}",
        started.elapsed()
    );
    assert!(read(&s, &b, 0, 16384, 512)
        .chunks(2)
        .all(|c| c == [0x0F, 0xF0]));
    assert!(s.h.violations().is_empty(), "{:?}", s.h.violations());
    // Without IMMED the command returns when the operation is done, with IMMED at once.
    let t = std::time::Instant::now();
    sanitize(&s, &b, 0x01, &[0x01, 0, 0, 1, 0x33]).assert_good();
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    assert!(read(&s, &b, 16383, 1, 512).iter().all(|&x| x == 0x33));
    let t = std::time::Instant::now();
    sanitize(&s, &b, 0x81, &[0x01, 0, 0, 1, 0x44]).assert_good();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    s.h.cmd(&b, 0, &[0; 6], &[], 0).assert_check(2, 0x04, 0x1B);
    assert!(rstmf_tests::wait_until(Duration::from_secs(20), || {
        s.h.cmd(&b, 0, &[0; 6], &[], 0).is_good()
    }));
    assert!(read(&s, &b, 0, 1, 512).iter().all(|&x| x == 0x44));
}

#[test]
fn deleting_an_lu_stops_its_sanitize() {
    // 64 MiB at 1 MiB/s would take a minute.
    let s = setup(
        serde_json::json!({"op":"create-lu","backing":"ram","size":"64m","props":{"sanitize-rate":"1m"}}),
    );
    let sess = login(&s, INI1);
    sanitize(&s, &sess, 0x81, &[0x01, 0, 0, 1, 0x55]).assert_good();
    s.h.cmd(&sess, 0, &[0; 6], &[], 0)
        .assert_check(2, 0x04, 0x1B);
    let t = std::time::Instant::now();
    ctl(
        &s.h,
        serde_json::json!({"op":"delete-lu","guid":s.guid.to_string()}),
    );
    drop(sess);
    // Tearing the core down joins sbd's workers: the sanitize has stopped.
    drop(s);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}
