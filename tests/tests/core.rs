//! Integration tests of the core with real provider libraries, through the test port.
//!
//! The provider libraries must be built first (`cargo build --workspace`): the tests load
//! `target/<profile>/lib{example_ram_lu,faulty_lu,null_lu}.so` as the daemon would.

use plugins_sdk::abi::ABI_VERSION;
use plugins_sdk::{Status, TmFunction, TmResponse};
use rstmf_tests::{cdb, CmdOptions, Harness, Session, OVERFLOW, UNDERFLOW};
use std::time::{Duration, Instant};
use stmf::{ErrorKind, Guid, ObjState, Settings};

const FAULTY: &str = "600144F000000000000000000000FA01";
const TGT_A: &str = "iqn.2025-01.org.rstmf.test:tgt-a";
const TGT_B: &str = "iqn.2025-01.org.rstmf.test:tgt-b";
const INI1: &str = "iqn.2025-01.org.rstmf.test:ini-1";
const INI2: &str = "iqn.2025-01.org.rstmf.test:ini-2";
const INI3: &str = "iqn.2025-01.org.rstmf.test:ini-3";

fn guid(s: &str) -> Guid {
    s.parse().expect("valid GUID")
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("invalid JSON {s:?}: {e}"))
}

fn faulty_stats(h: &Harness) -> serde_json::Value {
    json(
        &h.stmf()
            .provider_control("faulty-lu", r#"{"op":"stats"}"#)
            .expect("faulty-lu stats"),
    )
}

/// The REPORT LUNS parameter data a nexus with `luns` mapped must receive.
fn report_luns_data(luns: &[u16]) -> Vec<u8> {
    let mut d = ((luns.len() * 8) as u32).to_be_bytes().to_vec();
    d.extend_from_slice(&[0; 4]);
    for &l in luns {
        let entry = if l < 256 {
            [0, l as u8, 0, 0, 0, 0, 0, 0]
        } else {
            [0x40 | (l >> 8) as u8, l as u8, 0, 0, 0, 0, 0, 0]
        };
        d.extend_from_slice(&entry);
    }
    d
}

/// The GUID an LUN answers with in VPD page 83h.
fn vpd83_guid(h: &Harness, s: &Session, lun: u16) -> [u8; 16] {
    let o = h.cmd(s, lun, &cdb::inquiry(true, 0x83, 255), &[], 255);
    o.assert_good();
    assert_eq!(
        &o.data[..8],
        &[0x00, 0x83, 0x00, 20, 0x01, 0x03, 0x00, 16],
        "VPD 83h header and NAA designator header"
    );
    o.data[8..24].try_into().expect("16-byte NAA designator")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn libc_path() -> std::path::PathBuf {
    let candidates = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/aarch64-linux-gnu/libc.so.6",
        "/usr/lib/aarch64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
        "/usr/lib64/libc.so.6",
        "/lib/libc.so.6",
    ];
    candidates
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .expect("no libc.so.6 found in the usual places: add this system's path to the list")
}

// ---- ABI checks ------------------------------------------------------------------------------

/// A provider built against another SDK (ABI version, type layout), something that is not a
/// provider at all (bad magic, no root symbol, not a library, missing) is refused with an
/// error naming the file and the reason; the core keeps working and loads good providers.
#[test]
fn incompatible_libraries_are_refused_and_the_core_keeps_working() {
    let h = Harness::new(Settings::default());
    let bad_abi = format!("abi {}", ABI_VERSION + 1);
    let ours = format!("abi {ABI_VERSION}");
    let cases: [(&str, Vec<&str>); 4] = [
        ("bad-abi", vec![bad_abi.as_str(), "rebuild"]),
        // Built before task handles were reference-counted: its handles would be `Copy`.
        ("abi-2", vec!["abi 2", ours.as_str(), "rebuild"]),
        ("bad-layout", vec!["layout", "task"]),
        ("bad-magic", vec!["magic"]),
    ];
    for (mode, words) in &cases {
        // A fresh copy per case: dlopen would return the image it already has for a path.
        let path = h.copy_library("faulty-lu");
        let err = h
            .load_path(&path, "", Some(("RSTMF_FAULTY_ROOT", mode)))
            .expect_err(mode);
        assert_eq!(err.kind, ErrorKind::ProviderLoad, "{mode}: {err}");
        assert!(
            err.message.contains(&path.display().to_string()),
            "{mode}: the error does not name the file: {err}"
        );
        let lower = err.message.to_lowercase();
        for w in words {
            assert!(
                lower.contains(w),
                "{mode}: the error does not say {w:?}: {err}"
            );
        }
    }

    // Not a library at all.
    let junk = h.tmp_dir().join("libjunk.so");
    std::fs::write(&junk, b"this is not an ELF shared object\n").unwrap();
    let err = h.load_path(&junk, "", None).expect_err("junk file");
    assert_eq!(err.kind, ErrorKind::ProviderLoad, "{err}");
    assert!(
        err.message.contains(&junk.display().to_string())
            && err.message.to_lowercase().contains("librar"),
        "{err}"
    );

    // A real library without the root symbol.
    let libc = libc_path();
    let err = h.load_path(&libc, "", None).expect_err("libc");
    assert_eq!(err.kind, ErrorKind::ProviderLoad, "{err}");
    assert!(
        err.message.contains(&libc.display().to_string())
            && err.message.contains("rstmf_provider_root"),
        "{err}"
    );

    // A file that does not exist.
    let missing = h.tmp_dir().join("libmissing.so");
    let err = h.load_path(&missing, "", None).expect_err("missing file");
    assert!(
        err.message.contains(&missing.display().to_string()),
        "{err}"
    );

    // Nothing was half-registered.
    let names: Vec<String> = h
        .stmf()
        .list_providers()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["test-port"]);
    assert!(h.stmf().list_lu().is_empty());

    // The core still loads and serves good providers, the same faulty-lu library included.
    let info = h.load("example-ram-lu");
    assert_eq!(
        (info.name.as_str(), info.kind.as_str(), info.abi_version),
        ("example-ram-lu", "lu", ABI_VERSION)
    );
    h.load("faulty-lu");
    let ram = h.create_ram_lu(1, 512);
    h.stmf().add_view(ram, None, None, Some(0)).unwrap();
    h.stmf()
        .add_view(guid(FAULTY), None, None, Some(1))
        .unwrap();
    let t = h.port(TGT_A);
    let s = t.session(INI1);
    h.cmd(&s, 0, &cdb::test_unit_ready(), &[], 0).assert_good();
    h.cmd(&s, 1, &cdb::test_unit_ready(), &[], 0).assert_good();
}

// ---- panics ------------------------------------------------------------------------------------

/// A panic in an LU provider completes the command with CHECK CONDITION, HARDWARE ERROR,
/// INTERNAL TARGET FAILURE, takes that provider's LUs offline with the reason, and the core
/// keeps serving another provider's LU on the same session.
#[test]
fn provider_panic_fails_only_that_provider() {
    let h = Harness::new(Settings::default());
    h.load("faulty-lu");
    h.load("example-ram-lu");
    let ram = h.create_ram_lu(2, 512);
    h.stmf()
        .add_view(guid(FAULTY), None, None, Some(0))
        .unwrap();
    h.stmf().add_view(ram, None, None, Some(1)).unwrap();
    let t = h.port(TGT_A);
    let s = t.session(INI1);
    h.cmd(&s, 0, &cdb::test_unit_ready(), &[], 0).assert_good();

    h.cmd(&s, 0, &cdb::vendor(0xC0), &[], 0)
        .assert_check(0x4, 0x44, 0x00);

    let lu = h.lu_info(guid(FAULTY));
    assert_eq!(lu.state, ObjState::Offline);
    let why = lu.failed.expect("the offline LU has a failure reason");
    assert!(
        why.contains("faulty-lu") && why.contains("panic"),
        "reason: {why}"
    );
    let provider = h
        .stmf()
        .list_providers()
        .into_iter()
        .find(|p| p.name == "faulty-lu")
        .unwrap();
    assert!(provider.failed.is_some(), "{provider:?}");
    assert_eq!(h.lu_info(ram).state, ObjState::Online);

    // The nexus's inventory changed (LUN 0 left): reported once, then business as usual.
    h.cmd(&s, 1, &cdb::test_unit_ready(), &[], 0)
        .assert_check(0x6, 0x3F, 0x0E);
    let o = h.cmd(&s, 0, &cdb::report_luns(4096), &[], 4096);
    assert_eq!(o.assert_good().data, report_luns_data(&[1]));
    let data = pattern(4096, 7);
    h.cmd(&s, 1, &cdb::write_10(8, 8), &data, 0).assert_good();
    assert_eq!(
        h.cmd(&s, 1, &cdb::read_10(8, 8), &[], 4096)
            .assert_good()
            .data,
        data
    );

    // The failed LU's LUN answers like an empty one; its provider takes no more requests.
    h.cmd(&s, 0, &cdb::test_unit_ready(), &[], 0)
        .assert_check(0x5, 0x25, 0x00);
    let err = h
        .stmf()
        .provider_control("faulty-lu", r#"{"op":"stats"}"#)
        .expect_err("failed provider");
    assert_eq!(err.kind, ErrorKind::Provider);
    h.stmf()
        .provider_control("example-ram-lu", r#"{"op":"list-lu"}"#)
        .expect("the other provider still answers");
    assert_eq!(h.outstanding_buffers(), 0);
}

// ---- views and REPORT LUNS ------------------------------------------------------------------

/// Host groups, target groups and "all" decide which LUNs a nexus sees: REPORT LUNS returns
/// exactly those (peripheral addressing below 256, flat above), each LUN reaches its LU, and
/// an unmapped LUN answers LOGICAL UNIT NOT SUPPORTED (INQUIRY: qualifier 011b, type 1Fh).
#[test]
fn views_decide_which_luns_a_nexus_sees() {
    let h = Harness::new(Settings::default());
    h.load("example-ram-lu");
    let (a, b, c) = (
        h.create_ram_lu(1, 512),
        h.create_ram_lu(1, 512),
        h.create_ram_lu(1, 512),
    );
    let st = h.stmf();
    st.create_hg("hg1").unwrap();
    st.add_hg_member("hg1", INI1).unwrap();
    st.create_tg("tg1").unwrap();
    st.add_tg_member("tg1", TGT_A).unwrap();
    st.add_view(a, Some("hg1"), None, Some(0)).unwrap(); // INI1 through any target
    st.add_view(b, None, Some("tg1"), Some(5)).unwrap(); // anyone through TGT_A
    st.add_view(c, None, None, Some(300)).unwrap(); // everyone, flat addressing

    let (ta, tb) = (h.port(TGT_A), h.port(TGT_B));
    let cases = [
        (&ta, INI1, vec![0, 5, 300]),
        (&ta, INI2, vec![5, 300]),
        (&tb, INI1, vec![0, 300]),
        (&tb, INI2, vec![300]),
    ];
    let lu_of = |lun: u16| match lun {
        0 => a,
        5 => b,
        _ => c,
    };
    for (t, ini, luns) in &cases {
        let s = t.session(ini);
        let o = h.cmd(&s, 0, &cdb::report_luns(4096), &[], 4096);
        assert_eq!(
            o.assert_good().data,
            report_luns_data(luns),
            "REPORT LUNS for {ini} via {}",
            t.name()
        );
        for &lun in luns {
            assert_eq!(
                vpd83_guid(&h, &s, lun),
                lu_of(lun).0,
                "LUN {lun} for {ini} via {}",
                t.name()
            );
        }
        for lun in [0u16, 1, 5, 255, 256, 300] {
            if luns.contains(&lun) {
                continue;
            }
            h.cmd(&s, lun, &cdb::test_unit_ready(), &[], 0)
                .assert_check(0x5, 0x25, 0x00);
            let inq = h.cmd(&s, lun, &cdb::inquiry(false, 0, 36), &[], 36);
            assert_eq!(
                inq.assert_good().data[0],
                0x7F,
                "peripheral qualifier 011b, type 1Fh at unmapped LUN {lun}"
            );
        }
    }

    // Allocation length below 16 is refused, pointing at the ALLOCATION LENGTH field.
    let s = ta.session(INI1);
    let sense = h
        .cmd(&s, 0, &cdb::report_luns(15), &[], 15)
        .assert_check(0x5, 0x24, 0x00);
    let fp = sense.field_pointer().expect("field pointer");
    assert!(fp.in_cdb && fp.byte == 6, "{fp:?}");
    // 16 is enough: the header and the first LUN (the list length still counts them all).
    let o = h.cmd(&s, 0, &cdb::report_luns(16), &[], 16);
    assert_eq!(o.assert_good().data, report_luns_data(&[0, 5, 300])[..16]);
}

/// Adding (or removing) a view raises REPORTED LUNS DATA HAS CHANGED once per I_T nexus:
/// INQUIRY neither reports nor clears it, REPORT LUNS clears it, a nexus that logs in later
/// never sees it.
#[test]
fn view_changes_raise_one_unit_attention_per_nexus() {
    let h = Harness::new(Settings::default());
    h.load("example-ram-lu");
    let a = h.create_ram_lu(1, 512);
    h.stmf().add_view(a, None, None, Some(0)).unwrap();
    let t = h.port(TGT_A);
    let (s1, s2) = (t.session(INI1), t.session(INI2));
    h.cmd(&s1, 0, &cdb::test_unit_ready(), &[], 0).assert_good();
    h.cmd(&s2, 0, &cdb::test_unit_ready(), &[], 0).assert_good();

    // An LU without a view changes nobody's inventory.
    let b = h.create_ram_lu(1, 512);
    h.cmd(&s1, 0, &cdb::test_unit_ready(), &[], 0).assert_good();

    let view = h.stmf().add_view(b, None, None, Some(1)).unwrap();
    // s1: INQUIRY passes the UA by; the next command gets it, on any LUN, once.
    h.cmd(&s1, 0, &cdb::inquiry(false, 0, 36), &[], 36)
        .assert_good();
    h.cmd(&s1, 1, &cdb::test_unit_ready(), &[], 0)
        .assert_check(0x6, 0x3F, 0x0E);
    h.cmd(&s1, 0, &cdb::test_unit_ready(), &[], 0).assert_good();
    h.cmd(&s1, 1, &cdb::test_unit_ready(), &[], 0).assert_good();
    // s2: REPORT LUNS returns the new inventory and clears the UA.
    let o = h.cmd(&s2, 0, &cdb::report_luns(4096), &[], 4096);
    assert_eq!(o.assert_good().data, report_luns_data(&[0, 1]));
    h.cmd(&s2, 0, &cdb::test_unit_ready(), &[], 0).assert_good();

    // Removing the view: again once per nexus.
    h.stmf().remove_view(b, view.index).unwrap();
    for s in [&s1, &s2] {
        h.cmd(s, 0, &cdb::test_unit_ready(), &[], 0)
            .assert_check(0x6, 0x3F, 0x0E);
        h.cmd(s, 0, &cdb::test_unit_ready(), &[], 0).assert_good();
        h.cmd(s, 1, &cdb::test_unit_ready(), &[], 0)
            .assert_check(0x5, 0x25, 0x00);
    }
    let s3 = t.session(INI3);
    h.cmd(&s3, 0, &cdb::test_unit_ready(), &[], 0).assert_good();
}

// ---- task management -------------------------------------------------------------------------

/// ABORT TASK of a task the LU holds completes both sides (LU abort pending then completed,
/// port abort) before FUNCTION COMPLETE, and the command never gets status; an unknown tag
/// is TASK DOES NOT EXIST; ABORT TASK SET only touches its own nexus; LUN RESET aborts the
/// tasks of every nexus.
#[test]
fn task_management_aborts_held_tasks() {
    let h = Harness::new(Settings::default());
    h.load("faulty-lu");
    h.stmf()
        .add_view(guid(FAULTY), None, None, Some(0))
        .unwrap();
    let t = h.port(TGT_A);
    let (s1, s2) = (t.session(INI1), t.session(INI2));
    let hold = cdb::vendor(0xC1);

    let p = h.submit(&s1, 0, &hold, &[], 0);
    assert!(
        p.wait(Duration::from_millis(50)).is_none(),
        "a held task has no status"
    );
    assert_eq!(faulty_stats(&h)["held"], 1);
    assert_eq!(
        h.tm(&s1, 0, TmFunction::ABORT_TASK, p.tag()),
        TmResponse::COMPLETE
    );
    assert!(p.is_freed(), "FUNCTION COMPLETE only once the task is gone");
    assert!(p.port_aborted(), "the port was told");
    assert!(p.outcome().is_none(), "an aborted command gets no status");
    let stats = faulty_stats(&h);
    assert_eq!(
        (
            stats["aborts"].as_u64(),
            stats["aborts_completed"].as_u64(),
            stats["held"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );

    assert_eq!(
        h.tm(&s1, 0, TmFunction::ABORT_TASK, 0xDEAD),
        TmResponse::TASK_DOES_NOT_EXIST
    );

    // QUERY TASK sees a held task.
    let q = h.submit(&s1, 0, &hold, &[], 0);
    assert_eq!(
        h.tm(&s1, 0, TmFunction::QUERY_TASK, q.tag()),
        TmResponse::SUCCEEDED
    );
    assert_eq!(
        h.tm(&s1, 0, TmFunction::QUERY_TASK, 0xDEAD),
        TmResponse::COMPLETE
    );

    // ABORT TASK SET on s1: both of s1's tasks go, s2's stays.
    let p1 = h.submit(&s1, 0, &hold, &[], 0);
    let p2 = h.submit(&s2, 0, &hold, &[], 0);
    assert_eq!(faulty_stats(&h)["held"], 3);
    assert_eq!(
        h.tm(&s1, 0, TmFunction::ABORT_TASK_SET, 0),
        TmResponse::COMPLETE
    );
    assert!(q.is_freed() && p1.is_freed());
    assert!(q.outcome().is_none() && p1.outcome().is_none());
    assert!(
        !p2.is_freed() && p2.outcome().is_none(),
        "another nexus's task survives ABORT TASK SET"
    );
    assert_eq!(faulty_stats(&h)["held"], 1);

    // LUN RESET from s1 aborts s2's task too.
    assert_eq!(h.tm(&s1, 0, TmFunction::LUN_RESET, 0), TmResponse::COMPLETE);
    assert!(p2.is_freed() && p2.outcome().is_none());
    let stats = faulty_stats(&h);
    assert_eq!(
        (
            stats["aborts"].as_u64(),
            stats["aborts_completed"].as_u64(),
            stats["held"].as_u64()
        ),
        (Some(4), Some(4), Some(0))
    );

    // TM to a LUN without an LU.
    assert_eq!(
        h.tm(&s1, 9, TmFunction::LUN_RESET, 0),
        TmResponse::LUN_DOES_NOT_EXIST
    );
    // The LU is still in service.
    h.cmd(&s2, 0, &cdb::test_unit_ready(), &[], 0).assert_good();
    assert_eq!(h.lu_info(guid(FAULTY)).state, ObjState::Online);
}

/// An abort that arrives while the LU is still inside `new_task` (it has not taken the task
/// yet) is held back until `new_task` returns, then sent: the LU is never asked about a task
/// it does not know, and the task is not freed under it.
#[test]
fn abort_during_new_task_waits_for_the_lu_to_take_the_task() {
    let h = Harness::new(Settings::default());
    h.load("faulty-lu");
    h.stmf()
        .add_view(guid(FAULTY), None, None, Some(0))
        .unwrap();
    let t = h.port(TGT_A);
    let (s1, s2) = (t.session(INI1), t.session(INI2));
    let slow = cdb::vendor(0xC3);
    let p = std::thread::scope(|sc| {
        let submitter = sc.spawn(|| h.submit(&s1, 0, &slow, &[], 0));
        std::thread::sleep(Duration::from_millis(100)); // inside new_task (300 ms) by now
        assert_eq!(h.tm(&s2, 0, TmFunction::LUN_RESET, 0), TmResponse::COMPLETE);
        submitter.join().expect("submitter")
    });
    assert!(
        p.is_freed() && p.outcome().is_none(),
        "the task was aborted"
    );
    let stats = faulty_stats(&h);
    assert_eq!(stats["aborts_during_new_task"], 0, "{stats}");
    assert_eq!(
        stats["aborts"], 1,
        "the LU was asked once, after new_task: {stats}"
    );
    assert_eq!(stats["held"], 0, "{stats}");
    h.cmd(&s1, 0, &cdb::test_unit_ready(), &[], 0).assert_good();
}

/// CLEAR TASK SET and I_T NEXUS RESET act on the requesting nexus only; TARGET RESET on every
/// nexus of the target port, and not on another port's.
#[test]
fn nexus_and_target_scoped_task_management() {
    let h = Harness::new(Settings::default());
    h.load("faulty-lu");
    h.stmf()
        .add_view(guid(FAULTY), None, None, Some(0))
        .unwrap();
    let (ta, tb) = (h.port(TGT_A), h.port(TGT_B));
    let (a1, a2, b1) = (ta.session(INI1), ta.session(INI2), tb.session(INI1));
    let hold = cdb::vendor(0xC1);
    let held = |s: &Session| h.submit(s, 0, &hold, &[], 0);

    let (x1, x2, y) = (held(&a1), held(&a2), held(&b1));
    assert_eq!(
        h.tm(&a1, 0, TmFunction::CLEAR_TASK_SET, 0),
        TmResponse::COMPLETE
    );
    assert!(x1.is_freed() && x1.outcome().is_none());
    assert!(
        !x2.is_freed() && !y.is_freed(),
        "other nexuses keep their tasks"
    );

    let x3 = held(&a1);
    assert_eq!(
        h.tm(&a2, 0, TmFunction::IT_NEXUS_RESET, 0),
        TmResponse::COMPLETE
    );
    assert!(x2.is_freed(), "the nexus's own task is aborted");
    assert!(!x3.is_freed() && !y.is_freed(), "other nexuses keep theirs");

    assert_eq!(
        h.tm(&a1, 0, TmFunction::TARGET_RESET, 0),
        TmResponse::COMPLETE
    );
    assert!(x3.is_freed(), "every nexus of target A is reset");
    assert!(!y.is_freed(), "target B's nexus is not");
    assert_eq!(
        h.tm(&b1, 0, TmFunction::ABORT_TASK, y.tag()),
        TmResponse::COMPLETE
    );
    assert!(y.is_freed());
    assert_eq!(faulty_stats(&h)["held"], 0);

    assert_eq!(
        h.tm(&a1, 0, TmFunction::CLEAR_ACA, 0),
        TmResponse::NOT_SUPPORTED
    );
    h.cmd(&a1, 0, &cdb::test_unit_ready(), &[], 0).assert_good();
}

/// An LU that never completes an abort is forced offline after the abort timeout: the TM
/// request completes (no hang), the LU is listed offline with the reason, other LUs serve.
#[test]
fn stuck_abort_offlines_the_lu_after_the_timeout_tm() {
    let h = Harness::new(Settings {
        abort_timeout_ms: 300,
        ..Settings::default()
    });
    h.load("faulty-lu");
    h.load("example-ram-lu");
    let ram = h.create_ram_lu(1, 512);
    h.stmf()
        .add_view(guid(FAULTY), None, None, Some(0))
        .unwrap();
    h.stmf().add_view(ram, None, None, Some(1)).unwrap();
    let t = h.port(TGT_A);
    let s = t.session(INI1);

    let p = h.submit(&s, 0, &cdb::vendor(0xC2), &[], 0);
    assert!(p.wait(Duration::from_millis(20)).is_none());
    let start = Instant::now();
    let resp = h.tm(&s, 0, TmFunction::ABORT_TASK, p.tag());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(10),
        "TM took {took:?}"
    );
    assert_eq!(resp, TmResponse::COMPLETE);
    assert!(p.outcome().is_none());

    let lu = h.lu_info(guid(FAULTY));
    assert_eq!(lu.state, ObjState::Offline);
    let why = lu.failed.expect("reason");
    assert!(why.contains("abort"), "reason: {why}");
    assert_eq!(faulty_stats(&h)["aborts_stuck"], 1);

    // The RAM LU keeps serving (after the inventory change is reported once).
    h.cmd(&s, 1, &cdb::test_unit_ready(), &[], 0)
        .assert_check(0x6, 0x3F, 0x0E);
    let data = pattern(1024, 3);
    h.cmd(&s, 1, &cdb::write_10(0, 2), &data, 0).assert_good();
    assert_eq!(
        h.cmd(&s, 1, &cdb::read_10(0, 2), &[], 1024)
            .assert_good()
            .data,
        data
    );
}

/// Same provider, stuck task, and the admin takes the LU offline: `offline_lu` returns a
/// Timeout error after the abort timeout instead of hanging, and the LU is offline.
#[test]
fn stuck_abort_offlines_the_lu_after_the_timeout_admin() {
    let h = Harness::new(Settings {
        abort_timeout_ms: 300,
        ..Settings::default()
    });
    h.load("faulty-lu");
    h.load("example-ram-lu");
    let ram = h.create_ram_lu(1, 512);
    h.stmf()
        .add_view(guid(FAULTY), None, None, Some(0))
        .unwrap();
    h.stmf().add_view(ram, None, None, Some(1)).unwrap();
    let t = h.port(TGT_A);
    let s = t.session(INI1);
    let p = h.submit(&s, 0, &cdb::vendor(0xC2), &[], 0);
    assert!(p.wait(Duration::from_millis(20)).is_none());

    let (tx, rx) = std::sync::mpsc::channel();
    let stmf = h.stmf().clone();
    let start = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(stmf.offline_lu(guid(FAULTY)));
    });
    let r = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("offline_lu hung on a stuck provider");
    let took = start.elapsed();
    let err = r.expect_err("offline_lu of an LU whose abort never completes");
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(
        err.message.contains(FAULTY),
        "the error names the LU: {err}"
    );
    assert!(took >= Duration::from_millis(250), "took {took:?}");
    assert_eq!(h.lu_info(guid(FAULTY)).state, ObjState::Offline);
    assert!(p.outcome().is_none());

    h.cmd(&s, 1, &cdb::test_unit_ready(), &[], 0)
        .assert_check(0x6, 0x3F, 0x0E);
    h.cmd(&s, 1, &cdb::test_unit_ready(), &[], 0).assert_good();
    h.cmd(&s, 0, &cdb::test_unit_ready(), &[], 0)
        .assert_check(0x5, 0x25, 0x00);
}

// ---- the example provider ----------------------------------------------------------------------

/// example-ram-lu: identity, capacity, mode and sense data byte for byte; data written is
/// read back whatever the port's buffer size, with and without immediate data; range checks;
/// residuals; malformed CDBs rejected with field pointers; no buffer leaks.
#[test]
fn ram_lu_commands_and_data_path() {
    let h = Harness::new(Settings::default());
    h.load("example-ram-lu");
    let g = h.create_ram_lu(4, 512); // 8192 blocks
    h.stmf().add_view(g, None, None, Some(0)).unwrap();
    let t = h.port(TGT_A);
    let s = t.session(INI1);

    // Standard INQUIRY, and residuals: the data is 36 bytes whatever the allocation length.
    let o = h.cmd(&s, 0, &cdb::inquiry(false, 0, 255), &[], 255);
    let std_inq = o.assert_good().data.clone();
    assert_eq!(std_inq.len(), 36);
    assert_eq!(
        &std_inq[..8],
        &[0x00, 0x00, 0x06, 0x12, 31, 0x00, 0x00, 0x02]
    );
    assert_eq!(&std_inq[8..16], b"RSTMF   ");
    assert_eq!(&std_inq[16..32], b"RAMDISK         ");
    assert_eq!((o.residual, o.residual_flags), (255 - 36, UNDERFLOW));
    let o = h.cmd(&s, 0, &cdb::inquiry(false, 0, 20), &[], 255);
    assert_eq!(o.assert_good().data, std_inq[..20]);
    assert_eq!((o.residual, o.residual_flags), (255 - 20, UNDERFLOW));
    let o = h.cmd(&s, 0, &cdb::inquiry(false, 0, 36), &[], 8);
    assert_eq!(o.assert_good().data, std_inq[..8]);
    assert_eq!((o.residual, o.residual_flags), (36 - 8, OVERFLOW));
    let o = h.cmd(&s, 0, &cdb::inquiry(false, 0, 36), &[], 36);
    assert_eq!((o.assert_good().residual, o.residual_flags), (0, 0));

    // VPD pages.
    let o = h.cmd(&s, 0, &cdb::inquiry(true, 0x00, 255), &[], 255);
    assert_eq!(
        o.assert_good().data,
        [0x00, 0x00, 0x00, 3, 0x00, 0x80, 0x83]
    );
    let o = h.cmd(&s, 0, &cdb::inquiry(true, 0x80, 255), &[], 255);
    let mut serial = vec![0x00, 0x80, 0x00, 32];
    serial.extend_from_slice(g.to_string().as_bytes());
    assert_eq!(o.assert_good().data, serial);
    assert_eq!(vpd83_guid(&h, &s, 0), g.0);
    let sense = h
        .cmd(&s, 0, &cdb::inquiry(true, 0xB0, 255), &[], 255)
        .assert_check(0x5, 0x24, 0x00);
    assert_eq!(
        sense.field_pointer().map(|f| (f.in_cdb, f.byte)),
        Some((true, 2))
    );
    let sense = h
        .cmd(&s, 0, &cdb::inquiry(false, 0x83, 255), &[], 255)
        .assert_check(0x5, 0x24, 0x00);
    assert_eq!(
        sense.field_pointer().map(|f| (f.in_cdb, f.byte)),
        Some((true, 2))
    );

    // Capacity, mode and sense data.
    let o = h.cmd(&s, 0, &cdb::read_capacity_10(), &[], 8);
    assert_eq!(
        o.assert_good().data,
        [0x00, 0x00, 0x1F, 0xFF, 0x00, 0x00, 0x02, 0x00]
    );
    let o = h.cmd(&s, 0, &cdb::read_capacity_16(32), &[], 32);
    let mut rc16 = vec![0, 0, 0, 0, 0, 0, 0x1F, 0xFF, 0, 0, 0x02, 0x00];
    rc16.resize(32, 0);
    assert_eq!(o.assert_good().data, rc16);
    let mut bad_sa = cdb::read_capacity_16(32);
    bad_sa[1] = 0x12 + 0x05; // a service action READ CAPACITY does not have
    let sense = h.cmd(&s, 0, &bad_sa, &[], 32).assert_check(0x5, 0x24, 0x00);
    assert_eq!(
        sense.field_pointer().map(|f| (f.byte, f.bit)),
        Some((1, Some(4)))
    );
    let o = h.cmd(&s, 0, &cdb::mode_sense_6(false, 255), &[], 255);
    assert_eq!(
        o.assert_good().data,
        [11, 0, 0, 8, 0x00, 0x00, 0x20, 0x00, 0, 0x00, 0x02, 0x00]
    );
    let o = h.cmd(&s, 0, &cdb::mode_sense_6(true, 255), &[], 255);
    assert_eq!(o.assert_good().data, [3, 0, 0, 0]);
    let o = h.cmd(&s, 0, &cdb::request_sense(false, 252), &[], 252);
    assert_eq!(
        o.assert_good().data,
        [0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    h.cmd(&s, 0, &cdb::synchronize_cache_10(), &[], 0)
        .assert_good();
    h.cmd(&s, 0, &cdb::test_unit_ready(), &[], 0).assert_good();

    // Unsupported and malformed commands.
    h.cmd(&s, 0, &[0x04, 0, 0, 0, 0, 0], &[], 0)
        .assert_check(0x5, 0x20, 0x00); // FORMAT UNIT
    h.cmd(&s, 0, &[0xA8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], &[], 512)
        .assert_check(0x5, 0x20, 0x00); // READ (12)
    let sense = h
        .cmd(&s, 0, &[0, 0, 0, 0, 0, 0x04], &[], 0)
        .assert_check(0x5, 0x24, 0x00); // NACA
    assert_eq!(
        sense.field_pointer().map(|f| (f.byte, f.bit)),
        Some((5, Some(2)))
    );
    let mut rdprotect = cdb::read_10(0, 1);
    rdprotect[1] = 0x20;
    let sense = h
        .cmd(&s, 0, &rdprotect, &[], 512)
        .assert_check(0x5, 0x24, 0x00);
    assert_eq!(
        sense.field_pointer().map(|f| (f.byte, f.bit)),
        Some((1, Some(7)))
    );
    h.cmd(&s, 0, &[0x28, 0, 0, 0], &[], 512)
        .assert_check(0x5, 0x24, 0x00); // truncated CDB

    // Data, in chunks of whatever the port gives.
    for (i, max_buf) in [512usize, 4096, 65536].into_iter().enumerate() {
        h.set_max_buf(max_buf);
        let data = pattern(64 * 1024, i as u8);
        let lba = 100 + 200 * i as u32;
        h.cmd(&s, 0, &cdb::write_10(lba, 128), &data, 0)
            .assert_good();
        let o = h.cmd(&s, 0, &cdb::read_16(u64::from(lba), 128), &[], data.len());
        assert!(
            o.assert_good().data == data,
            "read back with {max_buf}-byte buffers"
        );
        assert_eq!((o.residual, o.residual_flags), (0, 0));
    }
    h.set_max_buf(64 * 1024);
    // Immediate data (a whole number of blocks, and not).
    for immediate in [8192usize, 1000] {
        let data = pattern(16 * 1024, immediate as u8);
        let opts = CmdOptions {
            immediate,
            ..CmdOptions::default()
        };
        let w = h.cmd_with(&s, 0, &cdb::write_16(1000, 32), &data, 0, opts);
        w.assert_good();
        assert_eq!(
            (w.residual, w.residual_flags),
            (0, 0),
            "immediate data counts as transferred (immediate {immediate})"
        );
        assert!(
            h.cmd(&s, 0, &cdb::read_10(1000, 32), &[], data.len())
                .assert_good()
                .data
                == data,
            "immediate {immediate}"
        );
    }
    // A rejected write gives its immediate data back (checked by the buffer count below).
    let opts = CmdOptions {
        immediate: 512,
        ..CmdOptions::default()
    };
    h.cmd_with(&s, 0, &cdb::write_10(8191, 2), &[0xEE; 1024], 0, opts)
        .assert_check(0x5, 0x21, 0x00);

    // Range checks.
    h.cmd(&s, 0, &cdb::read_10(8191, 2), &[], 1024)
        .assert_check(0x5, 0x21, 0x00);
    h.cmd(&s, 0, &cdb::read_16(u64::MAX - 1, 4), &[], 2048)
        .assert_check(0x5, 0x21, 0x00);
    h.cmd(&s, 0, &cdb::read_10(8193, 0), &[], 0)
        .assert_check(0x5, 0x21, 0x00);
    h.cmd(&s, 0, &cdb::write_10(8190, 4), &[0xAB; 2048], 0)
        .assert_check(0x5, 0x21, 0x00);
    let o = h.cmd(&s, 0, &cdb::read_10(8190, 2), &[], 1024);
    assert!(
        o.assert_good().data.iter().all(|&b| b == 0),
        "the refused write wrote nothing"
    );
    h.cmd(&s, 0, &cdb::read_10(8191, 0), &[], 0).assert_good();

    // The initiator expects less, or more, than the CDB transfers.
    let o = h.cmd(&s, 0, &cdb::read_10(100, 8), &[], 1024);
    assert_eq!(o.assert_good().data, pattern(64 * 1024, 0)[..1024]);
    assert_eq!((o.residual, o.residual_flags), (4096 - 1024, OVERFLOW));
    let o = h.cmd(&s, 0, &cdb::read_10(100, 1), &[], 4096);
    assert_eq!(o.assert_good().data.len(), 512);
    assert_eq!((o.residual, o.residual_flags), (4096 - 512, UNDERFLOW));

    assert_eq!(h.outstanding_buffers(), 0, "every port buffer went back");
    assert!(h.violations().is_empty(), "{:?}", h.violations());
    let details = h.lu_info(g).details;
    assert_eq!(
        (details["block_size"].as_u64(), details["blocks"].as_u64()),
        (Some(512), Some(8192))
    );
}

/// example-ram-lu's management requests: create-lu (given or generated GUID, block sizes),
/// list-lu, delete-lu, errors for bad requests; its saved configuration recreates the same
/// LUs in a new core (contents are RAM: not kept); unload and reload at run time.
#[test]
fn ram_lu_control_round_trip() {
    let h = Harness::new(Settings::default());
    h.load("example-ram-lu");
    let ctl = |req: &str| h.stmf().provider_control("example-ram-lu", req);

    let given = "600144f0aabbccdd0000000000000001";
    let r = json(&ctl(&format!(r#"{{"op":"create-lu","size_mb":8,"alias":"scratch","block_size":4096,"guid":"{given}"}}"#)).unwrap());
    assert_eq!(r, serde_json::json!({ "guid": given.to_uppercase() }));
    let r = json(&ctl(r#"{"op":"create-lu","size_mb":1}"#).unwrap());
    let generated = r["guid"].as_str().unwrap().to_string();
    assert!(
        generated.starts_with("600144F0")
            && generated.len() == 32
            && generated.chars().all(|c| c.is_ascii_hexdigit()),
        "{generated}"
    );
    assert_ne!(generated, given.to_uppercase());

    let list = json(&ctl(r#"{"op":"list-lu"}"#).unwrap());
    let mut lus = list["lus"].as_array().unwrap().clone();
    lus.sort_by_key(|l| l["guid"].as_str().unwrap().to_string());
    let mut expect = vec![
        serde_json::json!({"guid": given.to_uppercase(), "alias": "scratch", "size_mb": 8, "block_size": 4096}),
        serde_json::json!({"guid": generated, "alias": "", "size_mb": 1, "block_size": 512}),
    ];
    expect.sort_by_key(|l| l["guid"].as_str().unwrap().to_string());
    assert_eq!(lus, expect);

    let core_lus = h.stmf().list_lu();
    let big = core_lus
        .iter()
        .find(|l| l.guid == guid(given))
        .expect("the core lists the LU");
    assert_eq!(
        (big.provider.as_str(), big.alias.as_str(), big.state),
        ("example-ram-lu", "scratch", ObjState::Online)
    );
    assert_eq!(big.details["block_size"], 4096);

    // A 4096-byte-block LU through a session.
    h.stmf().add_view(guid(given), None, None, Some(0)).unwrap();
    let t = h.port(TGT_A);
    let s = t.session(INI1);
    let o = h.cmd(&s, 0, &cdb::read_capacity_10(), &[], 8);
    assert_eq!(o.assert_good().data, [0, 0, 0x07, 0xFF, 0, 0, 0x10, 0]); // 2048 blocks of 4096
    let data = pattern(8192, 9);
    h.cmd(&s, 0, &cdb::write_10(3, 2), &data, 0).assert_good();

    // Bad requests are refused with a message and change nothing.
    for bad in [
        format!(r#"{{"op":"create-lu","size_mb":1,"guid":"{given}"}}"#), // exists
        r#"{"op":"create-lu","size_mb":0}"#.to_string(),
        r#"{"op":"create-lu","size_mb":1,"block_size":1000}"#.to_string(),
        r#"{"op":"create-lu","size_mb":1,"guid":"5001"}"#.to_string(),
        r#"{"op":"create-lu","size_mb":1,"colour":"red"}"#.to_string(),
        r#"{"op":"delete-lu","guid":"600144F0000000000000000000000BAD"}"#.to_string(),
        r#"{"op":"format-lu"}"#.to_string(),
        "not json".to_string(),
    ] {
        let err = ctl(&bad).expect_err(&bad);
        assert_eq!(err.kind, ErrorKind::Provider, "{bad}: {err}");
        assert!(
            err.message.len() > "provider example-ram-lu: ".len(),
            "{bad}: the error says why: {err}"
        );
    }
    assert_eq!(
        json(&ctl(r#"{"op":"list-lu"}"#).unwrap())["lus"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The saved configuration recreates the LUs (not their data) in another core.
    let saved = h.stmf().provider_config("example-ram-lu").unwrap();
    let cfg = json(&saved);
    assert_eq!(cfg["version"], 1);
    assert_eq!(cfg["lus"].as_array().unwrap().len(), 2);
    {
        let h2 = Harness::new(Settings::default());
        h2.load_with_config("example-ram-lu", &saved);
        let mut again = json(
            &h2.stmf()
                .provider_control("example-ram-lu", r#"{"op":"list-lu"}"#)
                .unwrap(),
        )["lus"]
            .as_array()
            .unwrap()
            .clone();
        again.sort_by_key(|l| l["guid"].as_str().unwrap().to_string());
        assert_eq!(again, expect);
        h2.stmf()
            .add_view(guid(given), None, None, Some(0))
            .unwrap();
        let t2 = h2.port(TGT_A);
        let s2 = t2.session(INI1);
        let o = h2.cmd(&s2, 0, &cdb::read_10(3, 2), &[], 8192);
        assert!(
            o.assert_good().data.iter().all(|&b| b == 0),
            "RAM contents are not persistent"
        );
    }
    // A corrupt configuration is refused, not dropped.
    let h3 = Harness::new(Settings::default());
    let err = h3
        .try_load("example-ram-lu", r#"{"version":1,"lus":[{"guid":"zz"}]}"#)
        .expect_err("corrupt config");
    assert_eq!(err.kind, ErrorKind::ProviderLoad, "{err}");
    assert!(err.message.contains("configuration"), "{err}");
    drop(h3);

    // delete-lu; the core forgets the LU; its LUN empties.
    let r = json(&ctl(&format!(r#"{{"op":"delete-lu","guid":"{given}"}}"#)).unwrap());
    assert_eq!(r, serde_json::json!({ "deleted": given.to_uppercase() }));
    assert!(h.stmf().list_lu().iter().all(|l| l.guid != guid(given)));
    assert_eq!(
        json(&ctl(r#"{"op":"list-lu"}"#).unwrap())["lus"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    h.cmd(&s, 0, &cdb::test_unit_ready(), &[], 0)
        .assert_check(0x6, 0x3F, 0x0E);
    h.cmd(&s, 0, &cdb::test_unit_ready(), &[], 0)
        .assert_check(0x5, 0x25, 0x00);

    // Unload (refused while an LU is online) and load again at run time.
    let err = h
        .stmf()
        .unload_provider("example-ram-lu")
        .expect_err("an LU is online");
    assert_eq!(err.kind, ErrorKind::Busy, "{err}");
    ctl(&format!(r#"{{"op":"delete-lu","guid":"{generated}"}}"#)).unwrap();
    h.stmf().unload_provider("example-ram-lu").unwrap();
    h.load("example-ram-lu");
    assert!(json(&ctl(r#"{"op":"list-lu"}"#).unwrap())["lus"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(h.outstanding_buffers(), 0);
}

// ---- null-lu ------------------------------------------------------------------------------------

/// null-lu registers its LUs (one by default, N with `{"luns":N}`) and completes every
/// command with GOOD and no data.
#[test]
fn null_lu_completes_everything_at_once() {
    let h = Harness::new(Settings::default());
    h.load_with_config("null-lu", r#"{"luns":3}"#);
    let mut guids: Vec<String> = h
        .stmf()
        .list_lu()
        .iter()
        .map(|l| l.guid.to_string())
        .collect();
    guids.sort();
    assert_eq!(
        guids,
        [
            "600144F000000000000000000000AA01",
            "600144F000000000000000000000AA02",
            "600144F000000000000000000000AA03"
        ]
    );
    assert_eq!(
        h.stmf().provider_config("null-lu").unwrap(),
        r#"{"luns":3}"#
    );
    h.stmf()
        .add_view(
            guid("600144F000000000000000000000AA02"),
            None,
            None,
            Some(0),
        )
        .unwrap();
    let t = h.port(TGT_A);
    let s = t.session(INI1);
    let o = h.cmd(&s, 0, &cdb::read_10(0, 8), &[], 4096);
    assert_eq!(
        (o.assert_good().data.len(), o.residual, o.residual_flags),
        (0, 4096, UNDERFLOW)
    );
    h.cmd(&s, 0, &cdb::write_10(0, 1), &[1; 512], 0)
        .assert_good();
    h.cmd(&s, 0, &[0xFF; 6], &[], 0).assert_good();

    let h1 = Harness::new(Settings::default());
    h1.load("null-lu");
    let lus = h1.stmf().list_lu();
    assert_eq!(lus.len(), 1);
    assert_eq!(lus[0].guid, guid("600144F000000000000000000000AA01"));
    let err = Harness::new(Settings::default())
        .try_load("null-lu", r#"{"luns":0}"#)
        .expect_err("0 LUs");
    assert!(err.message.contains("luns"), "{err}");
}

#[test]
fn a_session_whose_name_is_not_proven_gets_only_the_views_for_all_hosts() {
    use plugins_sdk::abi::session_flags::NAME_UNPROVEN;
    let h = Harness::new(Settings::default());
    h.load("example-ram-lu");
    let (all, grouped) = (h.create_ram_lu(1, 512), h.create_ram_lu(1, 512));
    let st = h.stmf();
    st.add_view(all, None, None, Some(0)).expect("view for all");
    st.create_hg("hg").expect("hg");
    st.add_hg_member("hg", "iqn.2026-11.org.rstmf:named")
        .expect("member");
    st.add_view(grouped, Some("hg"), None, Some(1))
        .expect("view for hg");
    let t = h.port("t.unproven");
    let _proven = t.session("iqn.2026-11.org.rstmf:named");
    t.register_with_flags("iqn.2026-11.org.rstmf:named", NAME_UNPROVEN)
        .expect("register unproven");
    // Unknown flags are refused.
    assert_eq!(
        t.register_with_flags("iqn.2026-11.org.rstmf:named", 1 << 7),
        Err(Status::INVALID_ARG)
    );
    let info = st.list_targets();
    let sessions = &info
        .iter()
        .find(|l| l.name == "t.unproven")
        .expect("target")
        .sessions;
    let mut got: Vec<(bool, Vec<u16>)> = sessions
        .iter()
        .map(|s| (s.name_unproven, s.luns.clone()))
        .collect();
    got.sort();
    assert_eq!(got, [(false, vec![0, 1]), (true, vec![0])]);
}
