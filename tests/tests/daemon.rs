//! stmfd + stmfadm end to end: the real binaries, the control socket, persistence, signals.
//!
//! The binaries and provider libraries come from the workspace's target directory: run
//! `cargo build --workspace` first (a missing artifact fails the test, it is never skipped).

use serde_json::{json, Value};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// `<target>/debug`, from this test's own path (`<target>/debug/deps/daemon-<hash>`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    deps.parent().expect("deps has a parent").to_path_buf()
}

/// A built artifact; fails with a clear message when it is missing.
fn artifact(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    p
}

fn example_lib() -> PathBuf {
    artifact("libexample_ram_lu.so")
}

/// A scratch area: state dir, socket, empty providers dir, daemon output files.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("stmfd-test")
            .tempdir()
            .expect("tempdir");
        fs::create_dir(dir.path().join("prov")).expect("mkdir prov");
        Env { dir }
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn config(&self) -> PathBuf {
        self.state().join("stmf.json")
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("run").join("stmfd.sock")
    }
    fn prov(&self) -> PathBuf {
        self.dir.path().join("prov")
    }

    /// Runs stmfd in the foreground until it exits (for start-up refusals).
    fn run_stmfd(&self) -> Output {
        let mut cmd = self.stmfd_cmd(&self.prov());
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stmfd");
        wait_output(child, Duration::from_secs(20))
    }

    fn stmfd_cmd(&self, providers_dir: &Path) -> Command {
        let mut cmd = Command::new(artifact("stmfd"));
        cmd.arg("--state-dir")
            .arg(self.state())
            .arg("--socket")
            .arg(self.socket())
            .arg("--providers-dir")
            .arg(providers_dir)
            .env_remove("STMF_SOCKET")
            .env_remove("STMFD_STATE_DIR")
            .env_remove("STMFD_PROVIDERS_DIR")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts stmfd and waits until it answers.
    fn start(&self) -> Daemon {
        self.start_with(&self.prov())
    }

    /// Starts stmfd with another providers directory.
    fn start_with(&self, providers_dir: &Path) -> Daemon {
        let n = fs::read_dir(self.dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let out = self.dir.path().join(format!("stdout.{n}"));
        let err = self.dir.path().join(format!("stderr.{n}"));
        let child = self
            .stmfd_cmd(providers_dir)
            .stdout(fs::File::create(&out).expect("stdout file"))
            .stderr(fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("spawn stmfd");
        let mut d = Daemon {
            child: Some(child),
            socket: self.socket(),
            out,
            err,
        };
        d.wait_ready();
        d
    }
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!(
                "stmfd did not exit within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running stmfd (killed on drop).
struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    out: PathBuf,
    err: PathBuf,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .expect("running")
                .try_wait()
                .expect("try_wait")
            {
                panic!(
                    "stmfd exited early ({st})\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            if let Ok(mut c) = RawClient::connect(&self.socket) {
                if c.call(json!({"v":1,"id":0,"cmd":"list-state"}))["ok"] == json!(true) {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "stmfd did not answer on {} within 20 s\nstderr:\n{}",
                self.socket.display(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` (a name: `TERM`, `INT`, `KILL`) and waits for the exit.
    fn signal_and_wait(&mut self, sig: &str) -> ExitStatus {
        let st = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -s {sig} failed");
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return st;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!(
                    "stmfd did not exit after signal {sig}\nstderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        let st = self.signal_and_wait("TERM");
        assert!(
            st.success(),
            "stmfd exited with {st} after SIGTERM\nstderr:\n{}",
            self.stderr()
        );
    }

    fn adm(&self, args: &[&str]) -> Output {
        Command::new(artifact("stmfadm"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("STMF_SOCKET")
            .output()
            .expect("run stmfadm")
    }

    /// Runs stmfadm, asserting success; returns stdout.
    fn adm_ok(&self, args: &[&str]) -> String {
        let o = self.adm(args);
        assert!(
            o.status.success(),
            "stmfadm {args:?} failed ({})\nstdout:\n{}\nstderr:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).expect("utf-8 output")
    }

    /// Runs `stmfadm --json ...` and parses its output.
    fn adm_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.adm_ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("stmfadm {args:?}: not JSON ({e}):\n{out}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A raw protocol client.
struct RawClient {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl RawClient {
    fn connect(path: &Path) -> std::io::Result<RawClient> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(RawClient { stream, reader })
    }

    fn send_line(&mut self, line: &[u8]) -> Value {
        self.stream.write_all(line).expect("write");
        self.stream.write_all(b"\n").expect("write");
        self.read_reply()
    }

    fn read_reply(&mut self) -> Value {
        let mut reply = String::new();
        self.reader.read_line(&mut reply).expect("read reply");
        serde_json::from_str(&reply)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {reply:?}"))
    }

    fn call(&mut self, req: Value) -> Value {
        self.send_line(req.to_string().as_bytes())
    }
}

fn load_example(d: &Daemon) -> String {
    d.adm_ok(&["load-provider", example_lib().to_str().expect("utf-8 path")]);
    let reply = d.adm_json(&[
        "provider-control",
        "example-ram-lu",
        r#"{"op":"create-lu","size_mb":16}"#,
    ]);
    let guid = reply["guid"]
        .as_str()
        .unwrap_or_else(|| panic!("create-lu reply without guid: {reply}"))
        .to_owned();
    assert_eq!(guid.len(), 32, "guid {guid}");
    guid
}

fn error_kind(reply: &Value) -> &str {
    assert_eq!(
        reply["ok"],
        json!(false),
        "expected an error reply: {reply}"
    );
    assert_eq!(reply["v"], json!(1), "{reply}");
    reply["error"]["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("no error kind: {reply}"))
}

#[test]
fn load_provider_create_lu_and_list() {
    let env = Env::new();
    let d = env.start();
    // A relative path is made absolute by stmfadm.
    let o = Command::new(artifact("stmfadm"))
        .current_dir(bin_dir())
        .args(["load-provider", "libexample_ram_lu.so", "--socket"])
        .arg(env.socket())
        .output()
        .expect("stmfadm");
    assert!(
        o.status.success(),
        "load-provider: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let providers = d.adm_json(&["list-provider"]);
    let list = providers
        .as_array()
        .expect("list-provider returns an array");
    let p = list
        .iter()
        .find(|p| p["name"] == "example-ram-lu")
        .unwrap_or_else(|| panic!("no example provider in {providers}"));
    assert_eq!(
        p["path"],
        json!(example_lib().to_str().expect("utf-8 path")),
        "{p}"
    );
    assert!(
        !p["version"].as_str().unwrap_or_default().is_empty(),
        "no version: {p}"
    );
    assert_eq!(p["kind"], "lu", "{p}");

    let reply = d.adm_json(&[
        "provider-control",
        "example-ram-lu",
        r#"{"op":"create-lu","size_mb":16}"#,
    ]);
    let guid = reply["guid"]
        .as_str()
        .unwrap_or_else(|| panic!("create-lu reply without guid: {reply}"));
    let lus = d.adm_json(&["list-lu"]);
    assert!(
        lus.as_array()
            .expect("array")
            .iter()
            .any(|l| l["guid"] == guid),
        "{guid} not in {lus}"
    );

    let human = d.adm_ok(&["list-lu", "-v", guid]);
    assert!(human.contains(&format!("LU Name: {guid}")), "{human}");
    assert!(human.contains("    Operational Status: Online"), "{human}");
    assert!(
        human.contains("Provider Name     : example-ram-lu"),
        "{human}"
    );
    let human = d.adm_ok(&["list-provider", "-v"]);
    assert!(human.contains("Provider: example-ram-lu"), "{human}");

    // The LU, provider and its configuration were saved.
    let saved: Value =
        serde_json::from_str(&fs::read_to_string(env.config()).expect("stmf.json written"))
            .expect("json");
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["providers"][0]["name"], "example-ram-lu", "{saved}");
    assert!(
        saved["providers"][0]["config"].to_string().contains(guid),
        "{saved}"
    );
}

#[test]
fn bad_requests_get_error_replies_and_daemon_keeps_serving() {
    let env = Env::new();
    let d = env.start();
    let mut c = RawClient::connect(&env.socket()).expect("connect");
    assert_eq!(error_kind(&c.send_line(b"{not json")), "protocol");
    assert_eq!(error_kind(&c.send_line(b"[1,2]")), "protocol");
    assert_eq!(error_kind(&c.send_line(&[0xff, 0xfe, b'{'])), "protocol");
    let r = c.call(json!({"v":1,"id":"a","cmd":"no-such-command"}));
    assert_eq!(error_kind(&r), "protocol");
    assert_eq!(r["id"], "a", "id echoed: {r}");
    let r = c.call(json!({"v":9,"id":2,"cmd":"list-state"}));
    assert_eq!(error_kind(&r), "protocol");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("version 1"),
        "{r}"
    );
    assert_eq!(
        error_kind(&c.call(json!({"id":3,"cmd":"list-state"}))),
        "protocol"
    );
    assert_eq!(
        error_kind(&c.call(json!({"v":1,"id":4,"cmd":"create-hg"}))),
        "invalid-argument"
    );
    assert_eq!(
        error_kind(&c.call(json!({"v":1,"id":5,"cmd":"create-hg","args":{"name":7}}))),
        "invalid-argument"
    );
    assert_eq!(
        error_kind(&c.call(json!({"v":1,"id":6,"cmd":"list-view","args":{"guid":"xyz"}}))),
        "invalid-argument"
    );
    assert_eq!(
        error_kind(&c.call(json!({"v":1,"id":7,"cmd":"delete-hg","args":{"name":"nope"}}))),
        "not-found"
    );
    // Same connection still serves.
    let r = c.call(json!({"v":1,"id":{"n":8},"cmd":"create-hg","args":{"name":"hg1"}}));
    assert_eq!(r, json!({"v":1,"id":{"n":8},"ok":true,"result":null}));
    let r = c.call(json!({"v":1,"id":9,"cmd":"list-hg"}));
    assert_eq!(r["result"], json!([{"name":"hg1","members":[]}]), "{r}");

    // A line over 1 MiB: error reply, then the connection is closed.
    let mut big = RawClient::connect(&env.socket()).expect("connect");
    let writer = {
        let mut s = big.stream.try_clone().expect("clone");
        std::thread::spawn(move || {
            let _ = s.write_all(&vec![b'x'; (1 << 20) + 16]); // may fail once the daemon closes
        })
    };
    assert_eq!(error_kind(&big.read_reply()), "protocol");
    let mut rest = Vec::new();
    assert_eq!(
        big.reader.read_to_end(&mut rest).expect("read to end"),
        0,
        "connection closed after the error"
    );
    writer.join().expect("writer thread");

    // The daemon keeps serving new connections.
    let mut c2 = RawClient::connect(&env.socket()).expect("connect again");
    assert_eq!(
        c2.call(json!({"v":1,"id":1,"cmd":"list-state"}))["ok"],
        true
    );
    drop(d);
}

#[test]
fn groups_views_and_providers_survive_a_restart() {
    let env = Env::new();
    let mut d = env.start();
    let guid = load_example(&d);
    d.adm_ok(&["create-hg", "hosts"]);
    d.adm_ok(&[
        "add-hg-member",
        "-g",
        "hosts",
        "iqn.1993-08.org.debian:01:a",
        "iqn.1993-08.org.debian:01:b",
    ]);
    d.adm_ok(&["create-tg", "targets"]);
    d.adm_ok(&["add-tg-member", "-g", "targets", "iqn.2026-11.org.rstmf:t1"]);
    let e = d.adm_json(&["add-view", "-h", "hosts", "-t", "targets", "-n", "7", &guid]);
    assert_eq!(e["lun"], 7, "{e}");
    d.adm_ok(&["create-hg", "spare"]);
    d.adm_ok(&["delete-hg", "spare"]);
    let views_before = d.adm_json(&["list-view", "-l", &guid]);
    d.stop();

    let d = env.start();
    let out = d.stdout();
    assert!(
        out.contains("provider: example-ram-lu"),
        "start-up output lists the provider:\n{out}"
    );
    assert!(
        out.contains(&format!("state dir: {}", env.state().display())),
        "{out}"
    );
    let providers = d.adm_json(&["list-provider"]);
    assert!(
        providers
            .as_array()
            .expect("array")
            .iter()
            .any(|p| p["name"] == "example-ram-lu"),
        "{providers}"
    );
    let hg = d.adm_json(&["list-hg"]);
    assert_eq!(
        hg,
        json!([{"name":"hosts","members":["iqn.1993-08.org.debian:01:a","iqn.1993-08.org.debian:01:b"]}]),
        "{hg}"
    );
    let tg = d.adm_json(&["list-tg", "targets"]);
    assert_eq!(
        tg,
        json!([{"name":"targets","members":["iqn.2026-11.org.rstmf:t1"]}]),
        "{tg}"
    );
    assert_eq!(d.adm_json(&["list-view", "-l", &guid]), views_before);
    let lus = d.adm_json(&["list-lu"]);
    assert!(
        lus.as_array()
            .expect("array")
            .iter()
            .any(|l| l["guid"] == json!(guid)),
        "LU restored: {lus}"
    );

    let human = d.adm_ok(&["list-hg", "-v"]);
    assert!(
        human.contains("Host Group: hosts\n        Member: iqn.1993-08.org.debian:01:a"),
        "{human}"
    );
    let human = d.adm_ok(&["list-view", "-l", &guid]);
    assert!(human.contains("View Entry: 0"), "{human}");
    assert!(human.contains("\n    LUN         : 7\n"), "{human}");

    // remove-view, then the removal persists too.
    let r = d.adm_json(&["remove-view", "-l", &guid, "0"]);
    assert_eq!(r, json!({"removed": 1}));
    assert_eq!(d.adm_json(&["list-view", "-l", &guid]), json!([]));
}

#[test]
fn provider_that_fails_to_load_is_kept_in_the_config() {
    let env = Env::new();
    fs::create_dir_all(env.state()).expect("mkdir state");
    let missing = env.dir.path().join("gone/libgone.so");
    let cfg = json!({
        "version": 1,
        "providers": [
            {"name": "gone", "path": missing, "config": {"keep": "me"}},
            {"name": "example-ram-lu", "path": example_lib(), "config": ""}
        ],
        "core": {"host_groups": [{"name": "hg", "members": []}]}
    });
    fs::write(env.config(), cfg.to_string()).expect("write config");
    let d = env.start();
    assert!(d.stdout().contains("gone NOT LOADED"), "{}", d.stdout());
    assert!(
        d.stderr().contains(&missing.display().to_string()),
        "reason logged:\n{}",
        d.stderr()
    );
    let providers = d.adm_json(&["list-provider"]);
    let gone = providers
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["name"] == "gone")
        .expect("listed");
    assert!(
        gone["failed"]
            .as_str()
            .unwrap_or_default()
            .starts_with("not loaded"),
        "{gone}"
    );
    d.adm_ok(&["create-hg", "another"]); // rewrites the file
    let saved: Value =
        serde_json::from_str(&fs::read_to_string(env.config()).expect("read")).expect("json");
    let gone = saved["providers"]
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["name"] == "gone")
        .cloned();
    assert_eq!(
        gone,
        Some(json!({"name":"gone","path":missing,"config":{"keep":"me"}})),
        "{saved}"
    );
    assert_eq!(
        saved["core"]["host_groups"].as_array().map(Vec::len),
        Some(2),
        "{saved}"
    );
}

#[test]
fn corrupt_or_unknown_version_config_is_refused() {
    for (text, what) in [
        ("{\"version\": 1, \"providers\": [", "corrupt"),
        ("{\"version\": 99}", "version 99"),
    ] {
        let env = Env::new();
        fs::create_dir_all(env.state()).expect("mkdir state");
        fs::write(env.config(), text).expect("write");
        let o = env.run_stmfd();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "stmfd accepted a bad config ({what})");
        assert!(
            err.contains(&env.config().display().to_string()),
            "message names the file:\n{err}"
        );
        assert!(err.contains(what), "message says why ({what}):\n{err}");
        assert_eq!(
            fs::read_to_string(env.config()).expect("read"),
            text,
            "file left untouched"
        );
        assert!(!env.socket().exists(), "no socket left behind");
    }
}

#[test]
fn sigterm_exits_zero_and_removes_the_private_socket() {
    let env = Env::new();
    let mut d = env.start();
    let sock = env.socket();
    let mode = fs::symlink_metadata(&sock)
        .expect("socket exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let dmode = fs::metadata(sock.parent().expect("parent"))
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700, "socket dir mode {dmode:o}");
    d.adm_ok(&["create-hg", "kept"]);
    d.stop();
    assert!(!sock.exists(), "socket removed at exit");
    let saved = fs::read_to_string(env.config()).expect("config");
    assert!(saved.contains("\"kept\""), "{saved}");

    // SIGINT too.
    let mut d = env.start();
    let st = d.signal_and_wait("INT");
    assert!(st.success(), "exit after SIGINT: {st}");
    assert!(!sock.exists());
}

#[test]
fn second_daemon_is_refused_and_stale_socket_replaced() {
    let env = Env::new();
    let mut d = env.start();
    // Same socket, another state dir: refused while the first answers.
    let other = env.dir.path().join("state2");
    let o = Command::new(artifact("stmfd"))
        .arg("--state-dir")
        .arg(&other)
        .arg("--socket")
        .arg(env.socket())
        .arg("--providers-dir")
        .arg(env.prov())
        .env_remove("STMF_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let o = wait_output(o, Duration::from_secs(20));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already serving"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        d.adm_json(&["list-state"])["operational"],
        "online",
        "first daemon unharmed"
    );

    // A killed daemon leaves a stale socket; the next one replaces it.
    let st = d.signal_and_wait("KILL");
    assert!(!st.success());
    assert!(env.socket().exists(), "stale socket left by SIGKILL");
    let mut d = env.start();
    d.adm_ok(&["list-state"]);
    d.stop();
}

#[test]
fn json_flag_and_socket_env_work_before_and_after_the_subcommand() {
    let env = Env::new();
    let d = env.start();
    for args in [["--json", "list-state"], ["list-state", "--json"]] {
        // --socket given before everything, and through the environment.
        let o = d.adm(&args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(v["config"], "initialized", "{args:?}: {v}");
        let o = Command::new(artifact("stmfadm"))
            .args(args)
            .env("STMF_SOCKET", env.socket())
            .output()
            .expect("stmfadm");
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(v["operational"], "online", "{args:?}: {v}");
    }
    let o = Command::new(artifact("stmfadm"))
        .args(["list-state", "--socket"])
        .arg(env.socket())
        .env_remove("STMF_SOCKET")
        .output()
        .expect("stmfadm");
    let human = String::from_utf8_lossy(&o.stdout);
    assert!(human.contains("Operational Status: online"), "{human}");
    assert!(human.contains("Config Status     : initialized"), "{human}");
}

#[test]
fn stmfadm_reports_errors_with_exit_codes() {
    let env = Env::new();
    let d = env.start();
    let o = d.adm(&["delete-hg", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("stmfadm: ") && err.contains("nope"),
        "{err}"
    );
    let o = d.adm(&["add-view", "not-a-guid"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "usage error: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = d.adm(&["provider-control", "example-ram-lu", "{bad json"]);
    assert_eq!(o.status.code(), Some(2));
    let o = d.adm(&["load-provider", "/nonexistent/libnothing.so"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/libnothing.so"));

    let nowhere = env.dir.path().join("nobody.sock");
    let o = Command::new(artifact("stmfadm"))
        .arg("--socket")
        .arg(&nowhere)
        .arg("list-lu")
        .output()
        .expect("stmfadm");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&nowhere.display().to_string()) && err.contains("stmfd"),
        "{err}"
    );
}

#[test]
fn embedded_default_unavailable_leaves_a_plain_daemon_and_no_config() {
    // Empty providers dir: the libraries are missing.
    let env = Env::new();
    let mut d = env.start();
    let out = d.stdout();
    assert!(
        out.contains("embedded default unavailable: ") && out.contains("libsbd.so"),
        "{out}"
    );
    assert_eq!(d.adm_json(&["list-provider"]), json!([]));
    d.stop();
    assert!(
        !env.config().exists(),
        "nothing persisted, even at shutdown"
    );
    // So the next start tries the default again.
    let d = env.start();
    assert!(
        d.stdout().contains("embedded default unavailable: "),
        "{}",
        d.stdout()
    );
    drop(d);

    // The workspace's own sbd and iscsit: whatever they support today, the daemon serves and a
    // half-made default is never persisted.
    let env = Env::new();
    let dir = bin_dir();
    artifact("libsbd.so");
    artifact("libiscsit.so");
    let d = env.start_with(&dir);
    let out = d.stdout();
    if out.contains("iscsi://127.0.0.1:3260/iqn.2026-11.org.rstmf:default/") {
        assert!(env.config().exists(), "a working default is persisted");
    } else {
        assert!(out.contains("embedded default unavailable: "), "{out}");
        assert!(!env.config().exists(), "half-made default persisted");
    }
    d.adm_ok(&["list-state"]);
}
