//! itadm end to end: every subcommand against a real stmfd with sbd and iscsit loaded, CHAP
//! secrets read from a file or standard input (never from the command line, never shown,
//! never logged: stmfd runs with `RUST_LOG=trace` and its output is searched), a libiscsi
//! login with the secret (`iscsi://user%secret@...`) and a refused one with a wrong secret
//! (login status 0x0201), `--json`, and errors with their exit codes; the tunables (digest
//! policy, keepalive) and the default portal group, set with itadm and kept across a
//! restart.
//!
//! Run `cargo build --workspace` first (binaries and provider libraries come from the target
//! dir); `iscsi-inq` comes from Debian's `libiscsi-bin` (a missing one fails the test).

mod iscsi_common;

use iscsi_common::{Ini, LoginOpts};
use rstmf_tests::daemon::{artifact, Daemon, DaemonEnv};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const T1: &str = "iqn.2026-11.org.rstmf:itadm-t1";
const T2: &str = "iqn.2026-11.org.rstmf:itadm-t2";
const INI: &str = "iqn.2026-11.org.rstmf:itadm-ini";
const SECRET: &str = "file-Secret-4711";
const INI_SECRET: &str = "stdin-Secret-0815";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A daemon (logging everything) with sbd and iscsit loaded and one 16 MiB RAM LU viewed
/// by everyone at LUN 0.
fn setup(env: &DaemonEnv) -> Daemon {
    let d = env.start_with_log("trace");
    for lib in ["libsbd.so", "libiscsit.so"] {
        d.cli_ok("stmfadm", &["load-provider", s(&artifact(lib))]);
    }
    let r = d.cli_json(
        "stmfadm",
        &[
            "provider-control",
            "sbd",
            r#"{"op":"create-lu","backing":"ram","size":16777216}"#,
        ],
    );
    let guid = r["guid"].as_str().expect("guid").to_owned();
    d.cli_ok("stmfadm", &["add-view", "-n", "0", &guid]);
    d
}

/// Runs itadm with `stdin` as its standard input (not a terminal).
fn itadm_stdin(d: &Daemon, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(artifact("itadm"))
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .env_remove("STMF_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn itadm");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("itadm")
}

/// `iscsi-inq`, or a failure naming the package.
fn iscsi_inq() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("iscsi-inq"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("iscsi-inq not found: apt-get install -y libiscsi-bin"))
}

fn inq(args: &[&str]) -> (bool, String) {
    let o = Command::new(iscsi_inq())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run iscsi-inq");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// The value of `label:` in itadm's verbose output.
fn prop<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{label}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label} in:\n{out}"))
}

/// The port of the first portal of TPG `name`.
fn tpg_portal(d: &Daemon, name: &str) -> String {
    let v = d.cli_json("itadm", &["list-tpg", name]);
    v["tpgs"][0]["portals"][0]
        .as_str()
        .unwrap_or_else(|| panic!("list-tpg {v}"))
        .to_owned()
}

fn wait_online(d: &Daemon, name: &str) {
    assert!(
        rstmf_tests::wait_until(Duration::from_secs(10), || {
            d.cli_json("itadm", &["list-target", name])["targets"][0]["state"] == "online"
        }),
        "{name} did not come online"
    );
}

#[test]
fn every_subcommand_with_human_and_json_output() {
    let env = DaemonEnv::new();
    let d = setup(&env);

    // Defaults: COMSTAR's default portal group listens on every address, port 3260.
    let out = d.cli_ok("itadm", &["list-defaults"]);
    assert!(out.starts_with("iSCSI Target Default Properties:"), "{out}");
    assert_eq!(prop(&out, "alias"), "-");
    assert_eq!(prop(&out, "auth"), "none");
    d.cli_ok("itadm", &["modify-defaults", "-a", "none", "-l", "rstmf"]);
    assert_eq!(
        prop(&d.cli_ok("itadm", &["list-defaults"]), "alias"),
        "rstmf"
    );
    // COMSTAR's -d spelling works too; "none" clears.
    d.cli_ok("itadm", &["modify-defaults", "-d", "none"]);
    let v = d.cli_json("itadm", &["list-defaults"]);
    assert_eq!(v["alias"], Value::Null, "{v}");
    assert_eq!(v["auth"], "none");

    // Portal groups.
    d.cli_ok("itadm", &["create-tpg", "g1", "127.0.0.1:0"]);
    d.cli_ok("itadm", &["create-tpg", "g2", "127.0.0.1:0", "[::1]:0"]);
    let out = d.cli_ok("itadm", &["list-tpg"]);
    let mut lines = out.lines();
    let head = lines.next().expect("header");
    assert!(
        head.starts_with("TARGET PORTAL GROUP") && head.ends_with("PORTAL COUNT"),
        "{out}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows, [vec!["g1", "1"], vec!["g2", "2"]], "{out}");
    let out = d.cli_ok("itadm", &["list-tpg", "-v", "g2"]);
    assert!(prop(&out, "portals").contains("[::1]:"), "{out}");
    assert_eq!(prop(&out, "targets"), "-");
    let g1 = tpg_portal(&d, "g1");
    assert!(!g1.ends_with(":0"), "the bound port is shown: {g1}");

    // Targets.
    let out = d.cli_ok(
        "itadm",
        &["create-target", "-n", T1, "-t", "g1", "-l", "one"],
    );
    assert_eq!(out.trim(), format!("Target {T1} successfully created"));
    let out = d.cli_ok("itadm", &["create-target", "-t", "g2"]);
    let auto = out
        .trim()
        .strip_prefix("Target ")
        .and_then(|r| r.strip_suffix(" successfully created"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    assert!(auto.starts_with("iqn.2026-11.org.rstmf:"), "{auto}");
    let v = d.cli_json("itadm", &["create-target", "-n", T2, "-t", "g2,g1"]);
    assert_eq!(v["name"], T2, "{v}");
    wait_online(&d, T1);
    let out = d.cli_ok("itadm", &["list-target"]);
    let head = out.lines().next().expect("header");
    assert!(
        head.starts_with("TARGET NAME") && head.ends_with("SESSIONS"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with(T1))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        [T1, "online", "0"]
    );
    assert_eq!(out.lines().count(), 4, "{out}");
    let out = d.cli_ok("itadm", &["list-target", "-v", T1]);
    assert_eq!(prop(&out, "alias"), "one");
    assert_eq!(prop(&out, "auth"), "none (defaults)");
    assert_eq!(prop(&out, "targetchapuser"), "-");
    assert_eq!(prop(&out, "targetchapsecret"), "unset");
    assert!(prop(&out, "tpg-tags").starts_with("g1 = "), "{out}");
    assert_eq!(prop(&out, "portals"), g1);

    d.cli_ok(
        "itadm",
        &["modify-target", "-l", "none", "-a", "none", "-t", "g2", T1],
    );
    let v = d.cli_json("itadm", &["list-target", "-v", T1]);
    let t = &v["targets"][0];
    assert_eq!(
        (t["alias"].clone(), t["auth"].clone()),
        (Value::Null, json!("none"))
    );
    assert_eq!(t["tpgs"][0]["name"], "g2", "{v}");
    let v = d.cli_json("itadm", &["list-target"]);
    assert_eq!(v["targets"].as_array().map(Vec::len), Some(3), "{v}");
    assert!(v["targets"][0].get("auth").is_none(), "not verbose: {v}");

    // Initiator contexts (secret from standard input).
    let o = itadm_stdin(
        &d,
        &["create-initiator", "-s", "-u", "bob", INI],
        &format!("{INI_SECRET}\n"),
    );
    assert!(o.status.success(), "{o:?}");
    let out = d.cli_ok("itadm", &["list-initiator"]);
    let row = out.lines().nth(1).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        [INI, "bob", "set"]
    );
    let out = d.cli_ok("itadm", &["list-initiator", "-v", INI]);
    assert_eq!(prop(&out, "chapsecret"), "set");
    d.cli_ok(
        "itadm",
        &["modify-initiator", "-u", "none", "--clear-secret", INI],
    );
    let v = d.cli_json("itadm", &["list-initiator", INI]);
    assert_eq!(v["initiators"][0]["chap_secret_set"], false, "{v}");
    assert_eq!(v["initiators"][0]["chap_user"], Value::Null, "{v}");
    d.cli_ok("itadm", &["delete-initiator", INI]);
    let err = d.cli_err("itadm", &["list-initiator", INI], 1);
    assert!(
        err.starts_with("itadm: ") && err.contains("does not exist"),
        "{err}"
    );

    // Deleting: a group in use needs -f; deleting a target.
    let err = d.cli_err("itadm", &["delete-tpg", "g1"], 1);
    assert!(err.contains("used by"), "{err}");
    d.cli_ok("itadm", &["delete-target", &auto]);
    d.cli_ok("itadm", &["delete-tpg", "-f", "g1"]);
    let v = d.cli_json("itadm", &["list-tpg"]);
    assert_eq!(v["tpgs"].as_array().map(Vec::len), Some(1), "{v}");
    d.cli_ok("itadm", &["delete-target", "-f", T2]);
    d.cli_ok("itadm", &["delete-target", T1]);
    let v = d.cli_json("itadm", &["list-target"]);
    assert_eq!(v["targets"], json!([]));

    // Everything persists: a restart brings the group back.
    d.stop();
    let d = env.start();
    let v = d.cli_json("itadm", &["list-tpg"]);
    assert_eq!(v["tpgs"][0]["name"], "g2", "{v}");
}

#[test]
fn chap_secret_from_a_file_logs_in_and_is_never_shown_or_logged() {
    let env = DaemonEnv::new();
    let d = setup(&env);
    d.cli_ok("itadm", &["create-tpg", "chap", "127.0.0.1:0"]);
    let portal = tpg_portal(&d, "chap");
    let file = env.path().join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).expect("write secret file");
    d.cli_ok(
        "itadm",
        &[
            "create-target",
            "-n",
            T1,
            "-t",
            "chap",
            "-a",
            "chap",
            "-u",
            "alice",
            "-S",
            s(&file),
        ],
    );
    wait_online(&d, T1);
    let url = |user: &str, secret: &str| format!("iscsi://{user}%{secret}@{portal}/{T1}/0");

    let (ok, out) = inq(&[&url("alice", SECRET)]);
    assert!(ok, "right secret refused: {out}");
    let (ok, out) = inq(&[&url("alice", "wrong-secret-99")]);
    assert!(!ok, "wrong secret let in: {out}");
    // libiscsi prints the login status in decimal: 513 = 0x0201, authentication failure.
    assert!(out.contains("Authentication failure(513)"), "{out}");
    let (ok, out) = inq(&[&format!("iscsi://{portal}/{T1}/0")]);
    assert!(!ok, "no secret let in: {out}");

    // An initiator context with its own secret (from standard input) works as well.
    let o = itadm_stdin(
        &d,
        &["create-initiator", "-s", "-u", "bob", INI],
        &format!("{INI_SECRET}\n"),
    );
    assert!(o.status.success(), "{o:?}");
    let (ok, out) = inq(&["-i", INI, &url("bob", INI_SECRET)]);
    assert!(ok, "initiator secret refused: {out}");

    // Shown as set, never shown itself.
    let out = d.cli_ok("itadm", &["list-target", "-v", T1]);
    assert_eq!(prop(&out, "auth"), "chap");
    assert_eq!(prop(&out, "targetchapuser"), "alice");
    assert_eq!(prop(&out, "targetchapsecret"), "set");
    let json = d.cli_ok("itadm", &["--json", "list-target", "-v"]);
    let inis = d.cli_ok("itadm", &["list-initiator", "-v"]);
    let jinis = d.cli_ok("itadm", &["--json", "list-initiator", "-v"]);

    // Changing the secret: the old one stops working.
    let file2 = env.path().join("secret2");
    std::fs::write(&file2, "second-Secret-77").expect("write");
    d.cli_ok("itadm", &["modify-target", "-S", s(&file2), T1]);
    assert!(!inq(&[&url("alice", SECRET)]).0, "old secret still works");
    assert!(
        inq(&[&url("alice", "second-Secret-77")]).0,
        "new secret refused"
    );

    // A short secret is refused without being echoed.
    std::fs::write(&file2, "short-0042").expect("write");
    let err = d.cli_err("itadm", &["modify-target", "-S", s(&file2), T1], 1);
    assert!(err.contains("12") && !err.contains("short-0042"), "{err}");
    let o = itadm_stdin(&d, &["modify-initiator", "-s", INI], "tiny-0043\n");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("tiny-0043"), "{err}");
    // A secret file that is not there.
    let err = d.cli_err(
        "itadm",
        &["modify-target", "-S", "/nonexistent/secret", T1],
        1,
    );
    assert!(err.contains("/nonexistent/secret"), "{err}");
    // -s takes no value: a secret on the command line is a usage error.
    d.cli_err(
        "itadm",
        &["modify-target", "--chap-secret=foo-bar-baz-qux", T1],
        2,
    );

    d.stop();
    let logs = std::fs::read_dir(env.path())
        .expect("read scratch dir")
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("stdout.") || n.starts_with("stderr.")
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "stmfd logged nothing:\n{logs}"
    );
    for secret in [
        SECRET,
        INI_SECRET,
        "second-Secret-77",
        "short-0042",
        "tiny-0043",
    ] {
        for (what, text) in [
            ("stmfd's log", &logs),
            ("list-target -v", &out),
            ("list-target --json", &json),
            ("list-initiator -v", &inis),
            ("list-initiator --json", &jinis),
        ] {
            assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
        }
    }
}

#[test]
fn errors_and_exit_codes() {
    let env = DaemonEnv::new();
    let d = setup(&env);
    // Refusals of the provider: exit 1, "itadm: <message>".
    let err = d.cli_err("itadm", &["create-target", "-n", "not a name"], 1);
    assert!(
        err.starts_with("itadm: ") && err.contains("invalid iSCSI name"),
        "{err}"
    );
    let err = d.cli_err("itadm", &["create-target", "-t", "nope"], 1);
    assert!(err.contains("does not exist"), "{err}");
    let err = d.cli_err("itadm", &["delete-target", T1], 1);
    assert!(err.contains("does not exist"), "{err}");
    let err = d.cli_err("itadm", &["create-tpg", "bad", "nowhere:1"], 1);
    assert!(err.contains("invalid portal"), "{err}");
    d.cli_ok("itadm", &["create-tpg", "g", "127.0.0.1:0"]);
    let err = d.cli_err("itadm", &["create-tpg", "g", "127.0.0.1:0"], 1);
    assert!(err.contains("already exists"), "{err}");
    d.cli_ok("itadm", &["create-target", "-n", T1, "-t", "g"]);
    let err = d.cli_err("itadm", &["create-target", "-n", T1, "-t", "g"], 1);
    assert!(err.contains("already exists"), "{err}");
    let err = d.cli_err("itadm", &["modify-target", "-u", "carol", T1], 1);
    assert!(err.contains("no CHAP secret"), "{err}");
    // Usage errors: exit 2.
    d.cli_err("itadm", &["create-tpg", "only-a-name"], 2);
    d.cli_err("itadm", &["modify-defaults", "-a", "radius"], 2);
    d.cli_err("itadm", &["bogus"], 2);
    d.cli_err("itadm", &["create-target", "-s", "-S", "/dev/null"], 2);
    // An empty secret file.
    let empty = env.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let err = d.cli_err("itadm", &["modify-target", "-S", s(&empty), T1], 1);
    assert!(err.contains("empty"), "{err}");
    // No daemon: exit 1 with advice.
    let o = Command::new(artifact("itadm"))
        .args(["--socket", "/nonexistent/stmfd.sock", "list-target"])
        .env_remove("STMF_SOCKET")
        .output()
        .expect("itadm");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is stmfd running?"),
        "{o:?}"
    );
    // --json after the subcommand works too.
    let v: Value = serde_json::from_str(&d.cli_ok("itadm", &["list-tpg", "--json"])).expect("json");
    assert_eq!(v["tpgs"][0]["name"], "g");
}

fn ini_opts(target: &str) -> LoginOpts {
    let mut o = LoginOpts::normal();
    o.target = Some(target.into());
    o
}

#[test]
fn tunables_and_the_default_portal_group_are_configuration() {
    let env = DaemonEnv::new();
    let d = setup(&env);
    // COMSTAR's defaults: the default portal group is every address on port 3260.
    let out = d.cli_ok("itadm", &["list-defaults"]);
    assert_eq!(prop(&out, "default-portals"), "0.0.0.0:3260", "{out}");
    assert_eq!(prop(&out, "digest"), "none");
    assert_eq!(prop(&out, "nop-interval"), "10s");
    assert_eq!(prop(&out, "nop-timeout"), "15s");

    // A free loopback port for the default portal group (port 0 is resolved at once).
    let v = d.cli_json("itadm", &["modify-defaults", "--portals", "127.0.0.1:0"]);
    let portal = v["portals"][0].as_str().expect("portal").to_owned();
    assert!(!portal.ends_with(":0"), "{v}");
    // A target bound to no group is served there.
    d.cli_ok("itadm", &["create-target", "-n", T1]);
    wait_online(&d, T1);
    let out = d.cli_ok("itadm", &["list-target", "-v", T1]);
    assert_eq!(prop(&out, "tpg-tags"), "default");
    assert_eq!(prop(&out, "portals"), portal);
    assert_eq!(prop(&out, "digest"), "none (defaults)");
    assert_eq!(prop(&out, "nop-interval"), "10s (defaults)");
    let addr: std::net::SocketAddr = portal.parse().expect("portal address");
    let mut i = Ini::connect(addr);
    assert_eq!(i.login(&ini_opts(T1)), (0, 0));
    // The session shows in the listings, and deleting needs -f while it is there.
    let out = d.cli_ok("itadm", &["list-target", T1]);
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row, [T1, "online", "1"], "{out}");
    let out = d.cli_ok("itadm", &["list-target", "-v", T1]);
    let sess = prop(&out, "session");
    assert!(
        sess.starts_with(iscsi_common::INITIATOR) && sess.contains("tsih"),
        "{out}"
    );
    let err = d.cli_err("itadm", &["delete-target", T1], 1);
    assert!(err.contains("session"), "{err}");
    drop(i);
    // libiscsi's offer ("None,CRC32C"): the initiator's preference wins.
    let offer = || {
        let mut i = Ini::connect(addr);
        let o = ini_opts(T1)
            .key("HeaderDigest", "None,CRC32C")
            .key("DataDigest", "None,CRC32C");
        assert_eq!(i.login(&o), (0, 0));
        (i.digests.header, i.digests.data)
    };
    assert_eq!(offer(), (false, false));
    // Required digests, per target and by default.
    d.cli_ok("itadm", &["modify-target", "--digest", "header", T1]);
    assert_eq!(offer(), (true, false));
    d.cli_ok("itadm", &["modify-defaults", "--digest", "both"]);
    assert_eq!(offer(), (true, false), "the target's own policy wins");
    d.cli_ok("itadm", &["modify-target", "--digest", "default", T1]);
    assert_eq!(offer(), (true, true));
    let mut i = Ini::connect(addr);
    let (class, _) = i.login(&ini_opts(T1).key("HeaderDigest", "None"));
    assert_ne!(class, 0, "a login without the required digest is refused");
    d.cli_ok("itadm", &["modify-defaults", "--digest", "none"]);

    // Keepalive per target: an idle connection is pinged, then dropped.
    d.cli_ok(
        "itadm",
        &[
            "modify-target",
            "--nop-interval",
            "0.3",
            "--nop-timeout",
            "0.6",
            T1,
        ],
    );
    let out = d.cli_ok("itadm", &["list-target", "-v", T1]);
    assert_eq!(prop(&out, "nop-interval"), "0.3s");
    assert_eq!(prop(&out, "nop-timeout"), "0.6s");
    let mut i = Ini::connect(addr);
    assert_eq!(i.login(&ini_opts(T1)), (0, 0));
    let ping = i
        .recv_timeout(Duration::from_secs(3))
        .expect("keepalive NOP-In");
    assert!(
        matches!(ping.pdu, idm::pdu::Pdu::NopIn(n) if n.itt == idm::pdu::RESERVED_TAG),
        "{:?}",
        ping.pdu
    );
    assert!(
        i.closed_within(Duration::from_secs(5)),
        "unanswered: dropped"
    );
    // Keepalive off by default: no ping within a second.
    d.cli_ok(
        "itadm",
        &[
            "modify-target",
            "--nop-interval",
            "default",
            "--nop-timeout",
            "default",
            T1,
        ],
    );
    d.cli_ok("itadm", &["modify-defaults", "--nop-interval", "0"]);
    let mut i = Ini::connect(addr);
    assert_eq!(i.login(&ini_opts(T1)), (0, 0));
    assert!(
        i.recv_timeout(Duration::from_secs(1)).is_none(),
        "pinged with keepalive off"
    );
    drop(i);
    // Bad values are refused.
    let err = d.cli_err("itadm", &["modify-defaults", "--nop-timeout", "0"], 1);
    assert!(err.contains("keepalive"), "{err}");
    d.cli_err("itadm", &["modify-target", "--digest", "crc", T1], 2);

    // Persisted (saved configuration, no environment variable), and back after a restart.
    d.cli_ok(
        "itadm",
        &[
            "modify-target",
            "--digest",
            "data",
            "--nop-interval",
            "5",
            T1,
        ],
    );
    let saved = std::fs::read_to_string(env.state().join("stmf.json")).expect("stmf.json");
    assert!(saved.contains("\"nop_interval_ms\": 5000"), "{saved}");
    assert!(saved.contains("\"digests\": \"data\""), "{saved}");
    d.stop();
    let d = env.start();
    let out = d.cli_ok("itadm", &["list-target", "-v", T1]);
    assert_eq!(prop(&out, "digest"), "data");
    assert_eq!(prop(&out, "nop-interval"), "5s");
    assert_eq!(prop(&out, "nop-timeout"), "15s (defaults)");
    let out = d.cli_ok("itadm", &["list-defaults"]);
    assert_eq!(prop(&out, "default-portals"), portal);
    assert_eq!(prop(&out, "nop-interval"), "0s");
    wait_online(&d, T1);
    let mut i = Ini::connect(addr);
    assert_eq!(i.login(&ini_opts(T1).key("DataDigest", "CRC32C")), (0, 0));
    assert!(i.digests.data);
    drop(i);
    // The default portals close with the last target on them.
    d.cli_ok("itadm", &["delete-target", "-f", T1]);
    assert!(
        rstmf_tests::wait_until(Duration::from_secs(5), || std::net::TcpStream::connect(
            addr
        )
        .is_err()),
        "default portal still listening"
    );
}
