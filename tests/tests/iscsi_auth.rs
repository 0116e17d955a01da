//! Authentication bound to identity, CHAP throttling and discovery filtering, end to end:
//! a real stmfd with sbd and iscsit, configured with `stmfadm`/`itadm`, the raw initiator
//! of `iscsi_common` (which can play a second host from 127.0.0.2) and libiscsi's
//! `iscsi-inq`/`iscsi-ls` (`user%secret@` URLs) as real clients.
//!
//! - a host that knows the target-wide CHAP secret cannot log in as a host that has its
//!   own initiator context (status 0x0201), and that host's session keeps doing I/O
//!   (it is not reinstated);
//! - a session authenticated with the target-wide secret sees only the views for all
//!   hosts, never its host group's (`stmfadm list-target -v` says its name is not
//!   proven);
//! - failed CHAP logins from one source are throttled (refused at the first request)
//!   while another source logs in, and `itadm list-auth-stats` counts them;
//! - discovery CHAP on and off (`itadm modify-defaults --discovery-auth`) with iscsi-ls;
//! - SendTargets lists only targets the initiator may log in to.
//!
//! Run `cargo build --workspace` first; `iscsi-inq`/`iscsi-ls` come from Debian's
//! `libiscsi-bin` (a missing one fails the test).

mod iscsi_common;

use iscsi_common::{Ini, LoginOpts};
use rstmf_tests::daemon::{artifact, Daemon, DaemonEnv};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T: &str = "iqn.2026-11.org.rstmf:auth-t";
const ACLED: &str = "iqn.2026-11.org.rstmf:auth-acl";
const DARK: &str = "iqn.2026-11.org.rstmf:auth-offline";
/// Has its own initiator context (and secret).
const HOST1: &str = "iqn.2026-11.org.rstmf:host1";
/// No context: can only use the target-wide secret. In the host group with HOST1.
const HOST2: &str = "iqn.2026-11.org.rstmf:host2";
const HOST1_SECRET: &str = "host1-Secret-0001";
const TARGET_USER: &str = "tuser";
const TARGET_SECRET: &str = "target-Secret-0002";
const DISCOVERY_SECRET: &str = "discovery-Secret-03";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn secret_file(env: &DaemonEnv, name: &str, secret: &str) -> PathBuf {
    let p = env.path().join(name);
    std::fs::write(&p, format!("{secret}\n")).expect("write secret");
    p
}

/// A daemon with two RAM LUs: LUN 0 for all hosts, LUN 1 for host group `hosts`
/// (HOST1 and HOST2); target [`T`] on a loopback portal requiring CHAP, with the
/// target-wide account [`TARGET_USER`]; HOST1's own context. Returns the daemon and
/// the portal.
fn setup(env: &DaemonEnv) -> (Daemon, SocketAddr) {
    let d = env.start_with_log("info");
    for lib in ["libsbd.so", "libiscsit.so"] {
        d.cli_ok("stmfadm", &["load-provider", s(&artifact(lib))]);
    }
    let lu = |d: &Daemon| -> String {
        let r = d.cli_json(
            "stmfadm",
            &[
                "provider-control",
                "sbd",
                r#"{"op":"create-lu","backing":"ram","size":4194304}"#,
            ],
        );
        r["guid"].as_str().expect("guid").to_owned()
    };
    let (all, grouped) = (lu(&d), lu(&d));
    d.cli_ok("stmfadm", &["add-view", "-n", "0", &all]);
    d.cli_ok("stmfadm", &["create-hg", "hosts"]);
    d.cli_ok("stmfadm", &["add-hg-member", "-g", "hosts", HOST1, HOST2]);
    d.cli_ok("stmfadm", &["add-view", "-h", "hosts", "-n", "1", &grouped]);
    d.cli_ok("itadm", &["create-tpg", "g", "127.0.0.1:0"]);
    let tsec = secret_file(env, "target.secret", TARGET_SECRET);
    d.cli_ok(
        "itadm",
        &[
            "create-target",
            "-n",
            T,
            "-t",
            "g",
            "-a",
            "chap",
            "-u",
            TARGET_USER,
            "-S",
            s(&tsec),
        ],
    );
    let hsec = secret_file(env, "host1.secret", HOST1_SECRET);
    d.cli_ok("itadm", &["create-initiator", "-S", s(&hsec), HOST1]);
    wait_online(&d, T);
    let v = d.cli_json("itadm", &["list-tpg", "g"]);
    let portal = v["tpgs"][0]["portals"][0]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("list-tpg {v}"));
    (d, portal)
}

fn wait_online(d: &Daemon, name: &str) {
    assert!(
        rstmf_tests::wait_until(Duration::from_secs(10), || {
            d.cli_json("itadm", &["list-target", name])["targets"][0]["state"] == "online"
        }),
        "{name} did not come online"
    );
}

fn opts(initiator: &str, target: Option<&str>, isid_last: u8) -> LoginOpts {
    let mut o = LoginOpts::normal();
    o.initiator = initiator.into();
    o.target = target.map(str::to_owned);
    o.isid[5] = isid_last;
    o
}

fn attacker(portal: SocketAddr) -> Ini {
    Ini::connect_from(portal, "127.0.0.2:0".parse().expect("address"))
}

/// LUNs listed by REPORT LUNS.
fn report_luns(i: &mut Ini) -> Vec<u16> {
    let cdb = [0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    let r = i.scsi(&cdb, 256, &[], None);
    assert_eq!(r.status, 0, "REPORT LUNS: {:?}", r.sense);
    let n = u32::from_be_bytes([r.data[0], r.data[1], r.data[2], r.data[3]]) as usize / 8;
    (0..n)
        .map(|k| {
            let e = &r.data[8 + 8 * k..16 + 8 * k];
            u16::from_be_bytes([e[0] & 0x3f, e[1]])
        })
        .collect()
}

/// A READ (16) of 8 blocks at LBA 0 of LUN 0 succeeds (after the unit attention a
/// new nexus gets first).
fn read_ok(i: &mut Ini) {
    let mut r = i.scsi(&iscsi_common::read16(0, 8), 4096, &[], None);
    for _ in 0..2 {
        if r.status == 2 && r.sense.get(2).is_some_and(|k| k & 0x0f == 6) {
            r = i.scsi(&iscsi_common::read16(0, 8), 4096, &[], None);
        }
    }
    assert_eq!(r.status, 0, "READ: {:?}", r.sense);
}

fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: apt-get install -y libiscsi-bin"))
}

/// Runs a libiscsi tool: (success, output).
fn libiscsi(name: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(tool(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), out)
}

fn auth_stats(d: &Daemon) -> Value {
    d.cli_json("itadm", &["list-auth-stats"])
}

fn source<'a>(stats: &'a Value, addr: &str) -> Option<&'a Value> {
    stats["sources"]
        .as_array()?
        .iter()
        .find(|s| s["source"] == addr)
}

#[test]
fn the_target_secret_cannot_log_in_as_a_host_with_its_own_secret() {
    let env = DaemonEnv::new();
    let (d, portal) = setup(&env);
    // HOST1 logs in with its own secret and sees its host group's LUN.
    let mut real = Ini::connect(portal);
    assert_eq!(
        real.login_chap(&opts(HOST1, Some(T), 1), HOST1, HOST1_SECRET),
        (0, 0, 4)
    );
    assert_eq!(report_luns(&mut real), [0, 1]);
    read_ok(&mut real);

    // The impostor knows the target-wide secret and claims HOST1, with HOST1's ISID (a
    // success would reinstate, i.e. kick, the real session): refused at the CHAP
    // response with 0x0201, however it names the CHAP user.
    for user in [TARGET_USER, HOST1] {
        let mut imp = attacker(portal);
        assert_eq!(
            imp.login_chap(&opts(HOST1, Some(T), 1), user, TARGET_SECRET),
            (2, 1, 3),
            "CHAP_N={user}"
        );
        assert!(imp.closed_within(Duration::from_secs(5)));
    }
    // libiscsi as the impostor, too.
    let url = format!("iscsi://{TARGET_USER}%{TARGET_SECRET}@{portal}/{T}/0");
    let (ok, out) = libiscsi("iscsi-inq", &["-i", HOST1, &url]);
    assert!(!ok, "the target secret logged in as {HOST1}: {out}");
    // The real session was not reinstated: it keeps doing I/O, and it is the only one.
    read_ok(&mut real);
    assert_eq!(report_luns(&mut real), [0, 1]);
    let v = d.cli_json("itadm", &["list-target", "-v", T]);
    let sessions = v["targets"][0]["session_list"]
        .as_array()
        .expect("sessions");
    assert_eq!(sessions.len(), 1, "{v}");
    assert_eq!(sessions[0]["identity"], "proven");
    // The honest host with libiscsi and its own secret gets in.
    let url = format!("iscsi://{HOST1}%{HOST1_SECRET}@{portal}/{T}/0");
    let (ok, out) = libiscsi("iscsi-inq", &["-i", HOST1, &url]);
    assert!(ok, "{out}");
    read_ok(&mut real);
    // The failures are counted against the impostor's address only.
    let st = auth_stats(&d);
    let imp = source(&st, "127.0.0.2").unwrap_or_else(|| panic!("{st}"));
    assert_eq!(imp["failures"], 2, "{st}");
    assert_eq!(imp["last_initiator"], HOST1);
    let local = source(&st, "127.0.0.1").unwrap_or_else(|| panic!("{st}"));
    assert_eq!(local["failures"], 1, "libiscsi's impostor login: {st}");
    // The log names the source and the claimed name, never a secret.
    let log = d.stderr();
    assert!(log.contains("iSCSI CHAP authentication failed"), "{log}");
    assert!(log.contains("127.0.0.2"), "{log}");
    assert!(!log.contains(TARGET_SECRET) && !log.contains(HOST1_SECRET));
}

#[test]
fn a_target_secret_session_sees_only_the_views_for_all_hosts() {
    let env = DaemonEnv::new();
    let (d, portal) = setup(&env);
    // HOST2 is in host group "hosts" but has no context: with the target-wide secret
    // it is in, but its name is not proven, so LUN 1 (the group's) is not there.
    let mut shared = Ini::connect(portal);
    assert_eq!(
        shared.login_chap(&opts(HOST2, Some(T), 2), TARGET_USER, TARGET_SECRET),
        (0, 0, 4)
    );
    assert_eq!(report_luns(&mut shared), [0]);
    read_ok(&mut shared);
    let out = d.cli_ok("stmfadm", &["list-target", "-v", T]);
    assert!(out.contains(HOST2), "{out}");
    assert!(
        out.contains("Name Proven") && out.contains("No (views for all hosts only)"),
        "{out}"
    );
    let v = d.cli_json("stmfadm", &["list-target", T]);
    let sess = &v[0]["sessions"][0];
    assert_eq!(sess["name_unproven"], true, "{v}");
    assert_eq!(sess["luns"], serde_json::json!([0]), "{v}");
    let v = d.cli_json("itadm", &["list-target", "-v", T]);
    assert_eq!(
        v["targets"][0]["session_list"][0]["identity"],
        "shared-secret"
    );
    // HOST1, proven, sees both.
    let mut own = Ini::connect(portal);
    assert_eq!(
        own.login_chap(&opts(HOST1, Some(T), 1), HOST1, HOST1_SECRET),
        (0, 0, 4)
    );
    assert_eq!(report_luns(&mut own), [0, 1]);
    // With an ACL the target-wide secret opens nothing: ACL entries need a proven name.
    d.cli_ok(
        "itadm",
        &["modify-target", "--acl", &format!("{HOST1},{HOST2}"), T],
    );
    let mut i = Ini::connect(portal);
    assert_eq!(
        i.login_chap(&opts(HOST2, Some(T), 3), TARGET_USER, TARGET_SECRET),
        (2, 2, 3)
    );
    // Without authentication names are trusted, as documented: HOST2 gets its group.
    d.cli_ok(
        "itadm",
        &["modify-target", "--acl", "none", "-a", "none", T],
    );
    let mut trusted = Ini::connect(portal);
    assert_eq!(trusted.login(&opts(HOST2, Some(T), 4)), (0, 0));
    assert_eq!(report_luns(&mut trusted), [0, 1]);
}

#[test]
fn failed_chap_is_throttled_per_source_and_counted() {
    let env = DaemonEnv::new();
    let (d, portal) = setup(&env);
    let wrong = "wrong-Secret-9999";
    // Five wrong guesses from 127.0.0.2 are each checked (refused at the CHAP response).
    for n in 0..5u8 {
        let mut a = attacker(portal);
        assert_eq!(
            a.login_chap(&opts(HOST2, Some(T), 10 + n), TARGET_USER, wrong),
            (2, 1, 3),
            "guess {n}"
        );
    }
    // The next is refused at the very first request: no CHAP exchange at all.
    let started = Instant::now();
    let mut a = attacker(portal);
    assert_eq!(
        a.login_chap(&opts(HOST2, Some(T), 20), TARGET_USER, TARGET_SECRET),
        (2, 1, 1),
        "a throttled source is refused even with the right secret"
    );
    // Another source is not affected, with the raw initiator and with libiscsi.
    let mut honest = Ini::connect(portal);
    assert_eq!(
        honest.login_chap(&opts(HOST1, Some(T), 1), HOST1, HOST1_SECRET),
        (0, 0, 4)
    );
    read_ok(&mut honest);
    let url = format!("iscsi://{HOST1}%{HOST1_SECRET}@{portal}/{T}/0");
    let (ok, out) = libiscsi("iscsi-inq", &["-i", HOST1, &url]);
    assert!(ok, "{out}");
    // list-auth-stats: totals and the throttled source.
    let st = auth_stats(&d);
    assert_eq!(st["failures_total"], 5, "{st}");
    assert_eq!(st["refused_total"], 1, "{st}");
    assert_eq!(st["sources_throttled"], 1, "{st}");
    let src = source(&st, "127.0.0.2").unwrap_or_else(|| panic!("{st}"));
    assert_eq!(src["failures"], 5);
    assert_eq!(src["consecutive"], 5);
    assert_eq!(src["refused"], 1);
    assert_eq!(src["throttled"], true);
    let left = src["throttled_for_ms"].as_u64().expect("throttled_for_ms");
    assert!(left > 0 && left <= 1000, "first backoff is 1 s: {st}");
    assert!(source(&st, "127.0.0.1").is_none(), "{st}");
    let out = d.cli_ok("itadm", &["list-auth-stats"]);
    let row = out
        .lines()
        .find(|l| l.starts_with("127.0.0.2"))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..5], ["5", "5", "1", "yes,"], "{out}");
    assert!(out.starts_with("failed CHAP logins: 5"), "{out}");
    // After the backoff the source may try again; its next failure doubles it.
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed()));
    let mut a = attacker(portal);
    assert_eq!(
        a.login_chap(&opts(HOST2, Some(T), 21), TARGET_USER, wrong),
        (2, 1, 3)
    );
    let st = auth_stats(&d);
    let src = source(&st, "127.0.0.2").unwrap_or_else(|| panic!("{st}"));
    let left = src["throttled_for_ms"].as_u64().expect("throttled_for_ms");
    assert!(left > 1000 && left <= 2000, "second backoff is 2 s: {st}");
    // The knobs are limits of the defaults.
    let v = d.cli_json("itadm", &["list-defaults"]);
    assert_eq!(v["limits"]["auth_fail_threshold"], 5, "{v}");
    d.cli_ok(
        "itadm",
        &["modify-defaults", "--limit", "auth_fail_threshold=50"],
    );
    let v = d.cli_json("itadm", &["list-defaults"]);
    assert_eq!(v["limits"]["auth_fail_threshold"], 50, "{v}");
}

#[test]
fn discovery_chap_on_and_off_with_iscsi_ls() {
    let env = DaemonEnv::new();
    let (d, portal) = setup(&env);
    // An open target besides T (whose ACL is empty), and one with an ACL.
    d.cli_ok(
        "itadm",
        &["create-target", "-n", ACLED, "-t", "g", "--acl", HOST1],
    );
    wait_online(&d, ACLED);
    let ls = |url: &str, ini: Option<&str>| -> (bool, String) {
        let mut args: Vec<&str> = Vec::new();
        if let Some(i) = ini {
            args.extend(["-i", i]);
        }
        args.push(url);
        libiscsi("iscsi-ls", &args)
    };
    let plain = format!("iscsi://{portal}");
    // Off (the default): discovery needs no secret, even though T requires CHAP.
    let v = d.cli_json("itadm", &["list-defaults"]);
    assert_eq!(v["discovery_auth"], "default", "{v}");
    let (ok, out) = ls(&plain, Some(HOST1));
    assert!(ok && out.contains(T) && out.contains(ACLED), "{out}");
    // On: without a secret iscsi-ls fails; HOST1's own secret works and proves HOST1.
    d.cli_ok("itadm", &["modify-defaults", "--discovery-auth", "chap"]);
    let out = d.cli_ok("itadm", &["list-defaults"]);
    assert!(
        out.contains("discovery-auth:") && out.contains("chap"),
        "{out}"
    );
    let (ok, out) = ls(&plain, Some(HOST1));
    assert!(!ok && !out.contains(T), "discovery without CHAP: {out}");
    let own = format!("iscsi://{HOST1}%{HOST1_SECRET}@{portal}");
    let (ok, out) = ls(&own, Some(HOST1));
    assert!(ok && out.contains(T) && out.contains(ACLED), "{out}");
    let bad = format!("iscsi://{HOST1}%wrong-Secret-9999@{portal}");
    let (ok, _) = ls(&bad, Some(HOST1));
    assert!(!ok);
    // The discovery account (LIO's discovery_auth) lets hosts without a context in,
    // but proves no name: the target whose ACL names HOST2... or anyone is not listed.
    let dsec = secret_file(&env, "disc.secret", DISCOVERY_SECRET);
    d.cli_ok(
        "itadm",
        &["modify-defaults", "--discovery-chap-secret-file", s(&dsec)],
    );
    let shared = format!("iscsi://discovery%{DISCOVERY_SECRET}@{portal}");
    let (ok, out) = ls(&shared, Some(HOST2));
    assert!(ok && out.contains(T), "{out}");
    assert!(
        !out.contains(ACLED),
        "an ACL'd target for an unproven name: {out}"
    );
    // Off again.
    d.cli_ok("itadm", &["modify-defaults", "--discovery-auth", "none"]);
    let (ok, out) = ls(&plain, None);
    assert!(ok && out.contains(T), "{out}");
    // Kept across a restart.
    d.stop();
    let d = env.start();
    let v = d.cli_json("itadm", &["list-defaults"]);
    assert_eq!(v["discovery_auth"], "none", "{v}");
    assert_eq!(v["discovery_chap_user"], "discovery");
    assert_eq!(v["discovery_chap_secret_set"], true);
    // Removing the account.
    d.cli_ok("itadm", &["modify-defaults", "--clear-discovery-secret"]);
    let v = d.cli_json("itadm", &["list-defaults"]);
    assert_eq!(v["discovery_chap_secret_set"], false, "{v}");
}

/// The TargetNames a SendTargets=All answers in a discovery session of `o` (logged in
/// with CHAP when `chap` is given).
fn send_targets(portal: SocketAddr, o: &LoginOpts, chap: Option<(&str, &str)>) -> Vec<String> {
    let mut i = Ini::connect(portal);
    match chap {
        Some((user, secret)) => assert_eq!(i.login_chap(o, user, secret), (0, 0, 4)),
        None => assert_eq!(i.login(o), (0, 0)),
    }
    let r = i.text("SendTargets=All");
    idm::text::parse_with(&r.data, &["TargetName", "TargetAddress"])
        .expect("SendTargets text")
        .into_iter()
        .filter(|(k, _)| *k == "TargetName")
        .map(|(_, v)| v.to_owned())
        .collect()
}

#[test]
fn send_targets_lists_only_targets_the_initiator_may_log_in_to() {
    let env = DaemonEnv::new();
    let (d, portal) = setup(&env);
    d.cli_ok(
        "itadm",
        &[
            "create-target",
            "-n",
            ACLED,
            "-t",
            "g",
            "--acl",
            &format!("{HOST1},{HOST2}"),
        ],
    );
    d.cli_ok("itadm", &["create-target", "-n", DARK, "-t", "g"]);
    wait_online(&d, ACLED);
    wait_online(&d, DARK);
    d.cli_ok("stmfadm", &["offline-target", DARK]);
    let other = "iqn.2026-11.org.rstmf:someone-else";
    // Discovery without authentication: names are trusted. T requires CHAP and is
    // listed all the same (whether a host can pass is known only at login); the
    // offline target is not; the ACL'd one only for the names it lists.
    assert_eq!(
        send_targets(portal, &opts(HOST2, None, 1), None),
        [T, ACLED]
    );
    assert_eq!(send_targets(portal, &opts(other, None, 1), None), [T]);
    // With discovery CHAP: HOST1 proven by its own secret sees the ACL'd target; HOST2
    // through the discovery account is not proven and does not.
    let dsec = secret_file(&env, "disc.secret", DISCOVERY_SECRET);
    d.cli_ok(
        "itadm",
        &[
            "modify-defaults",
            "--discovery-auth",
            "chap",
            "--discovery-chap-user",
            "disc",
            "--discovery-chap-secret-file",
            s(&dsec),
        ],
    );
    assert_eq!(
        send_targets(portal, &opts(HOST1, None, 2), Some((HOST1, HOST1_SECRET))),
        [T, ACLED]
    );
    assert_eq!(
        send_targets(
            portal,
            &opts(HOST2, None, 2),
            Some(("disc", DISCOVERY_SECRET))
        ),
        [T]
    );
    // Back online, it is listed again.
    d.cli_ok("stmfadm", &["online-target", DARK]);
    wait_online(&d, DARK);
    assert_eq!(
        send_targets(
            portal,
            &opts(HOST2, None, 3),
            Some(("disc", DISCOVERY_SECRET))
        ),
        [T, DARK]
    );
}
