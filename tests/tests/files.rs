//! Safe files, trusted providers, bounded control clients and the descriptor limit, against
//! the real stmfd (docs/security.md, "Files and providers").
//!
//! The tests run as root (they chown files to uid 65534); run `cargo build --workspace`
//! first: binaries and provider libraries come from the target directory.

use rstmf_tests::daemon::{artifact, Daemon, DaemonEnv};
use serde_json::{json, Value};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// The uid the tests give files that must not be trusted.
const NOBODY: u32 = 65534;

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), None)
        .unwrap_or_else(|e| panic!("chown {uid} {} (the tests run as root): {e}", p.display()));
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .mode()
        & 0o7777
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The daemon's error: its last stderr line, which must be the only `stmfd: ` line.
#[track_caller]
fn refusal(o: &Output) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "stmfd started:\n{err}");
    assert_eq!(o.status.code(), Some(1), "exit status\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("stmfd: ")).collect();
    assert_eq!(lines.len(), 1, "one error line:\n{err}");
    lines[0].to_owned()
}

/// A victim file outside the state dir, for planted links to point at.
fn victim(env: &DaemonEnv) -> PathBuf {
    let v = env.path().join("victim");
    fs::write(&v, b"precious\n").expect("write victim");
    v
}

#[track_caller]
fn assert_untouched(victim: &Path) {
    assert_eq!(
        fs::read(victim).expect("victim still there"),
        b"precious\n",
        "{} was written through a link",
        victim.display()
    );
}

#[test]
fn world_writable_state_dir_is_refused() {
    let env = DaemonEnv::new();
    fs::create_dir(env.state()).expect("mkdir");
    chmod(&env.state(), 0o777);
    let line = refusal(&env.run_to_exit(&[]));
    let st = s(&env.state()).to_owned();
    assert_eq!(
        line,
        format!("stmfd: state dir {st} refused: {st} is writable by group and others (mode 0777); fix: chmod 0700 {st}")
    );
    assert!(!env.socket().exists(), "no socket bound");
    assert_eq!(mode(&env.state()), 0o777, "left as it was");
}

#[test]
fn state_dir_owned_by_another_user_is_refused() {
    let env = DaemonEnv::new();
    fs::create_dir(env.state()).expect("mkdir");
    chmod(&env.state(), 0o700);
    chown(&env.state(), NOBODY);
    let line = refusal(&env.run_to_exit(&[]));
    let st = s(&env.state()).to_owned();
    assert_eq!(
        line,
        format!("stmfd: state dir {st} refused: {st} is owned by uid {NOBODY}, not by uid 0 that runs stmfd; fix: chown 0 {st}")
    );
}

#[test]
fn state_dir_below_an_open_directory_is_refused() {
    let env = DaemonEnv::new();
    let open = env.path();
    chmod(open, 0o777);
    let line = refusal(&env.run_to_exit(&[]));
    let o = s(open);
    assert_eq!(
        line,
        format!(
            "stmfd: state dir {} refused: {o} is writable by group and others (mode 0777); fix: chmod go-w {o} (or use another directory)",
            s(&env.state())
        )
    );
    chmod(open, 0o700);
}

#[test]
fn missing_state_and_socket_dirs_are_created_private() {
    let env = DaemonEnv::new();
    assert!(!env.state().exists());
    let d = env.start();
    assert_eq!(mode(&env.state()), 0o700, "state dir");
    assert_eq!(
        fs::metadata(env.state()).expect("stat").uid(),
        0,
        "owned by the daemon's user"
    );
    assert_eq!(
        mode(env.socket().parent().expect("dir")),
        0o700,
        "socket dir"
    );
    d.stop();
}

#[test]
fn open_socket_directory_is_refused() {
    let env = DaemonEnv::new();
    let run = env.socket().parent().expect("dir").to_path_buf();
    fs::create_dir(&run).expect("mkdir");
    chmod(&run, 0o1777); // sticky does not make it private
    let line = refusal(&env.run_to_exit(&[]));
    let r = s(&run);
    assert_eq!(
        line,
        format!("stmfd: socket directory {r} refused: {r} is writable by group and others (mode 1777); fix: chmod 0700 {r}")
    );
    assert!(!env.socket().exists());
}

#[test]
fn links_planted_in_the_state_dir_are_never_followed() {
    let env = DaemonEnv::new();
    let v = victim(&env);
    fs::create_dir(env.state()).expect("mkdir");
    chmod(&env.state(), 0o700);
    // The old fixed temporary name, and a few plausible others.
    let planted = [".stmf.json.tmp", ".stmf.json.tmp1", "stmf.json.tmp"];
    for name in planted {
        symlink(&v, env.state().join(name)).expect("plant");
    }
    let d = env.start();
    d.cli_ok("stmfadm", &["create-hg", "saved"]); // a config save
    d.cli_ok("stmfadm", &["create-hg", "again"]);
    assert_untouched(&v);
    let cfg = env.state().join("stmf.json");
    assert!(
        fs::symlink_metadata(&cfg)
            .expect("stat")
            .file_type()
            .is_file(),
        "stmf.json is a regular file"
    );
    assert_eq!(mode(&cfg), 0o600);
    let saved: Value =
        serde_json::from_str(&fs::read_to_string(&cfg).expect("read")).expect("json");
    assert_eq!(
        saved["core"]["host_groups"],
        json!([{"name":"again","members":[]},{"name":"saved","members":[]}]),
        "{saved}"
    );
    for name in planted {
        let l = env.state().join(name);
        assert_eq!(fs::read_link(&l).expect("still a link"), v, "{name}");
    }
    d.stop();
    assert_untouched(&v);
    // No temporary file is left behind: the state dir holds the lock, the file and the links.
    let mut names: Vec<String> = fs::read_dir(env.state())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".stmf.json.tmp",
            ".stmf.json.tmp1",
            ".stmfd.lock",
            "stmf.json",
            "stmf.json.tmp"
        ]
    );
}

#[test]
fn a_linked_config_or_lock_file_is_refused_not_followed() {
    // stmf.json as a link: refused at start, the target neither read into nor replaced.
    let env = DaemonEnv::new();
    let v = victim(&env);
    fs::create_dir(env.state()).expect("mkdir");
    chmod(&env.state(), 0o700);
    let cfg = env.state().join("stmf.json");
    symlink(&v, &cfg).expect("plant");
    let line = refusal(&env.run_to_exit(&[]));
    assert!(
        line.contains(&format!(
            "{} is not a regular file (a symbolic link)",
            s(&cfg)
        )),
        "{line}"
    );
    assert_untouched(&v);
    assert_eq!(fs::read_link(&cfg).expect("link kept"), v);

    // The lock file as a link to a missing file: refused, nothing created.
    let env = DaemonEnv::new();
    fs::create_dir(env.state()).expect("mkdir");
    chmod(&env.state(), 0o700);
    let target = env.path().join("created-through-a-link");
    symlink(&target, env.state().join(".stmfd.lock")).expect("plant");
    let line = refusal(&env.run_to_exit(&[]));
    assert!(line.contains(".stmfd.lock"), "{line}");
    assert!(!target.exists(), "the link was followed");
}

#[test]
fn import_failed_backup_does_not_follow_a_link() {
    let env = DaemonEnv::new();
    let v = victim(&env);
    fs::create_dir(env.state()).expect("mkdir");
    chmod(&env.state(), 0o700);
    // A duplicate host group makes the import fail, so the file is kept as a backup.
    let text = json!({"version":1,"core":{"host_groups":[
        {"name":"dup","members":[]},{"name":"dup","members":[]}]}})
    .to_string();
    fs::write(env.state().join("stmf.json"), &text).expect("write config");
    let backup = env.state().join("stmf.json.import-failed");
    symlink(&v, &backup).expect("plant");
    let d = env.start();
    assert_untouched(&v);
    assert!(
        fs::symlink_metadata(&backup)
            .expect("stat")
            .file_type()
            .is_file(),
        "the link was replaced by the backup"
    );
    assert_eq!(fs::read_to_string(&backup).expect("read"), text);
    drop(d);
}

#[test]
fn lu_metadata_write_does_not_follow_a_planted_link() {
    let env = DaemonEnv::new();
    let v = victim(&env);
    let d = env.start();
    d.cli_ok("stmfadm", &["load-provider", s(&artifact("libsbd.so"))]);
    let data_dir = env.path().join("data");
    fs::create_dir(&data_dir).expect("mkdir");
    let img = data_dir.join("vol.img");
    let guid = d.cli_ok("sbdadm", &["create-lu", "-s", "4m", s(&img)]);
    let guid = guid
        .split_whitespace()
        .find(|w| w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no GUID in {guid:?}"))
        .to_owned();
    let meta = data_dir.join("vol.img.meta");
    assert!(meta.is_file(), "metadata written");
    // The name the old code used: `.<name>.tmp<pid>`, and the fixed-style one.
    let planted = [
        data_dir.join(format!(".vol.img.meta.tmp{}", d.pid())),
        data_dir.join(".vol.img.meta.tmp"),
    ];
    for p in &planted {
        symlink(&v, p).expect("plant");
    }
    d.cli_ok("stmfadm", &["modify-lu", "-p", "alias=renamed", &guid]);
    assert_untouched(&v);
    let m: Value =
        serde_json::from_str(&fs::read_to_string(&meta).expect("read meta")).expect("meta is JSON");
    assert_eq!(m["alias"], "renamed", "{m}");
    assert_eq!(mode(&meta), 0o600);
    for p in &planted {
        assert_eq!(fs::read_link(p).expect("still a link"), v);
    }
    let left: Vec<_> = fs::read_dir(&data_dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert_eq!(left.len(), 1, "only the planted .tmp link: {left:?}");
}

/// A private copy of the example provider, `lib<n>.so` in `dir`.
fn provider_copy(dir: &Path, n: &str) -> PathBuf {
    let p = dir.join(format!("lib{n}.so"));
    fs::copy(artifact("libexample_ram_lu.so"), &p).expect("copy provider");
    chmod(&p, 0o755);
    p
}

/// Three libraries the daemon must refuse, and what each message must say.
fn insecure_providers(env: &DaemonEnv) -> Vec<(PathBuf, String)> {
    let libs = env.path().join("libs");
    fs::create_dir(&libs).expect("mkdir");
    let writable = provider_copy(&libs, "writable");
    chmod(&writable, 0o666);
    let foreign = provider_copy(&libs, "foreign");
    chown(&foreign, NOBODY);
    let open = env.path().join("open");
    fs::create_dir(&open).expect("mkdir");
    chmod(&open, 0o777);
    let in_open = provider_copy(&open, "inopen");
    vec![
        (
            writable.clone(),
            format!(
                "{w}: refused: insecure provider library: {w} is writable by group and others (mode 0666); fix: chmod go-w {w}, or start stmfd with --allow-insecure-providers to load it anyway",
                w = s(&writable)
            ),
        ),
        (
            foreign.clone(),
            format!(
                "{f} is owned by uid {NOBODY}, not by root or uid 0 (stmfd's user); fix: chown root {f}",
                f = s(&foreign)
            ),
        ),
        (
            in_open,
            format!(
                "{o} is writable by group and others (mode 0777); fix: chmod go-w {o}",
                o = s(&open)
            ),
        ),
    ]
}

#[test]
fn insecure_provider_libraries_are_refused_and_the_daemon_keeps_serving() {
    let env = DaemonEnv::new();
    let libs = insecure_providers(&env);
    let d = env.start();
    for (lib, message) in &libs {
        let err = d.cli_err("stmfadm", &["load-provider", s(lib)], 1);
        assert!(err.contains(message), "expected {message:?} in:\n{err}");
        assert!(err.contains("--allow-insecure-providers"), "{err}");
        assert_eq!(
            d.cli_json("stmfadm", &["list-state"])["operational"],
            "online",
            "still serving"
        );
    }
    assert_eq!(d.cli_json("stmfadm", &["list-provider"]), json!([]));
    // A trusted copy in a private directory loads.
    let ok = provider_copy(&env.path().join("prov"), "trusted");
    d.cli_ok("stmfadm", &["load-provider", s(&ok)]);
    d.stop();

    // Saved in the configuration, an insecure library is refused at start too (kept, listed
    // as not loaded with the reason), and the daemon serves.
    let cfg = env.state().join("stmf.json");
    let (lib, message) = &libs[0];
    fs::write(
        &cfg,
        json!({"version":1,"providers":[{"name":"example-ram-lu","path":lib,"config":""}]})
            .to_string(),
    )
    .expect("write config");
    let d = env.start();
    let listed = d.cli_json("stmfadm", &["list-provider"]);
    let failed = listed[0]["failed"].as_str().unwrap_or_default();
    assert!(failed.contains(message), "{listed}");
    assert!(d.stdout().contains("NOT LOADED"), "{}", d.stdout());
}

#[test]
fn allow_insecure_providers_loads_them_with_a_warning() {
    let env = DaemonEnv::new();
    let libs = insecure_providers(&env);
    let d = env.start_with_args(&["--allow-insecure-providers"]);
    for (lib, _) in &libs {
        let info = d.cli_json("stmfadm", &["load-provider", s(lib)]);
        assert_eq!(info["name"], "example-ram-lu", "{info}");
        assert_eq!(info["path"], s(lib), "{info}");
        d.cli_ok("stmfadm", &["unload-provider", "example-ram-lu"]);
    }
    let log = d.stderr();
    for (lib, _) in &libs {
        assert!(
            log.contains(&format!(
                "loading the insecure provider library {} (--allow-insecure-providers)",
                s(lib)
            )),
            "{log}"
        );
    }
    // The flag has no environment variable and no saved form: without it, refused again.
    d.stop();
    let d = env.start();
    d.cli_err("stmfadm", &["load-provider", s(&libs[0].0)], 1);
}

#[test]
fn embedded_default_loads_providers_from_the_build_directory() {
    // target/<profile> as built (0755, owned by the builder = root here) is trusted, also
    // through links from the providers directory.
    let env = DaemonEnv::new();
    for lib in ["libsbd.so", "libiscsit.so"] {
        symlink(artifact(lib), env.path().join("prov").join(lib)).expect("link");
    }
    let d = env.start();
    let out = d.stdout();
    assert!(!out.contains("insecure"), "{out}\n{}", d.stderr());
    if !out.contains("iscsi://127.0.0.1:3260/") {
        // 127.0.0.1:3260 may be taken on a shared machine: then the default is undone, but
        // not because a library was refused.
        assert!(
            out.contains("embedded default unavailable: ") && !out.contains("refused"),
            "{out}"
        );
        return;
    }
    let listed = d.cli_json("stmfadm", &["list-provider"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
}

/// A raw control client.
struct Raw {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Raw {
    fn connect(d: &Daemon) -> Raw {
        let stream = UnixStream::connect(d.socket()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Raw { stream, reader }
    }

    fn line(&mut self) -> Value {
        let mut l = String::new();
        self.reader.read_line(&mut l).expect("read a line");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"))
    }

    fn call(&mut self, cmd: &str) -> Value {
        let req = json!({"v":1,"id":1,"cmd":cmd}).to_string() + "\n";
        self.stream.write_all(req.as_bytes()).expect("write");
        self.line()
    }

    /// A client that has been served once: connects again while the daemon still counts
    /// clients that have just left (their threads free the slot when they see the end).
    fn served(d: &Daemon) -> Raw {
        let start = Instant::now();
        loop {
            let mut c = Raw::connect(d);
            let req = json!({"v":1,"id":1,"cmd":"list-state"}).to_string() + "\n";
            let _ = c.stream.write_all(req.as_bytes()); // a refused client may be closed already
            let r = c.line();
            if r["ok"] == true {
                return c;
            }
            assert_eq!(r["error"]["kind"], "busy", "{r}");
            assert!(start.elapsed() < Duration::from_secs(10), "no slot freed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads to end of stream (the daemon closed), returning what came.
    fn rest(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).expect("read to end");
        rest
    }
}

#[test]
fn control_clients_beyond_the_cap_are_refused_while_others_work() {
    let env = DaemonEnv::new();
    let d = env.start_with_args(&["--max-control-clients", "2"]);
    let mut a = Raw::served(&d);
    let mut b = Raw::served(&d);

    let mut c = Raw::connect(&d);
    let r = c.line();
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["id"], Value::Null, "{r}");
    assert_eq!(r["error"]["kind"], "busy", "{r}");
    assert_eq!(
        r["error"]["message"],
        "too many control clients (the limit is 2, stmfd --max-control-clients); try again later"
    );
    assert!(c.rest().is_empty(), "closed after the one line");
    // So does a CLI, with the daemon's message and exit status 1.
    let err = d.cli_err("stmfadm", &["list-state"], 1);
    assert!(err.contains("too many control clients"), "{err}");

    // The connected clients are unharmed.
    assert_eq!(a.call("list-state")["ok"], true);
    assert_eq!(b.call("list-hg")["ok"], true);

    // A slot is free again once a client leaves.
    drop(b);
    let start = Instant::now();
    loop {
        let o = d.cli("stmfadm", &["list-state"]);
        if o.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "slot never freed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(a.call("list-state")["ok"], true);
}

#[test]
fn idle_slow_and_non_reading_clients_are_dropped_after_the_timeout() {
    let env = DaemonEnv::new();
    let d = env.start_with_args(&["--control-timeout-ms", "500", "--max-control-clients", "3"]);

    // Connects and sends nothing.
    let mut idle = Raw::connect(&d);
    let start = Instant::now();
    let r = idle.line();
    let waited = start.elapsed();
    assert_eq!(r["error"]["kind"], "protocol", "{r}");
    assert_eq!(
        r["error"]["message"],
        "no complete request within 500 ms; closing the connection"
    );
    assert!(idle.rest().is_empty(), "closed");
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "dropped after {waited:?}"
    );

    // Sends a request line without end, one byte every 100 ms: dropped just the same.
    let mut slow = Raw::connect(&d);
    let start = Instant::now();
    let mut w = slow.stream.try_clone().expect("clone");
    let dripper = std::thread::spawn(move || {
        for _ in 0..100 {
            if w.write_all(b" ").is_err() {
                return true; // closed by the daemon
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    });
    assert_eq!(slow.line()["error"]["kind"], "protocol");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        dripper.join().expect("dripper"),
        "the daemon closed the stream"
    );

    // Pipelines requests and never reads a reply: dropped once its replies back up.
    let mut deaf = UnixStream::connect(d.socket()).expect("connect");
    let req = json!({"v":1,"id":1,"cmd":"list-state"}).to_string() + "\n";
    let flood = req.repeat(20_000);
    deaf.set_write_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let start = Instant::now();
    let _ = deaf.write_all(flood.as_bytes()); // fails once the daemon closes
    let mut sink = Vec::new();
    deaf.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let _ = deaf.read_to_end(&mut sink);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "non-reading client held on for {:?}",
        start.elapsed()
    );

    // An active client sending requests keeps its connection past the timeout.
    let mut busy = Raw::served(&d);
    for _ in 0..8 {
        assert_eq!(busy.call("list-state")["ok"], true);
        std::thread::sleep(Duration::from_millis(150));
    }
    // All slots but the active one are free again.
    let mut others: Vec<Raw> = (0..2).map(|_| Raw::served(&d)).collect();
    for o in &mut others {
        assert_eq!(o.call("list-hg")["ok"], true);
    }
    assert_eq!(busy.call("list-state")["ok"], true);
}

#[test]
fn open_files_limit_is_raised_to_the_hard_limit() {
    let env = DaemonEnv::new();
    let mut cmd = env.command("info");
    // Start with a low soft limit (the hard limit stays).
    // SAFETY: the closure runs in the forked child before exec and only calls getrlimit and
    // setrlimit, which are async-signal-safe, on a struct of its own.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let mut rl = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            rl.rlim_cur = rl.rlim_max.min(256);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let d = env.spawn(cmd);
    let limits = fs::read_to_string(format!("/proc/{}/limits", d.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("{limits}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (f[3], f[4]);
    assert_eq!(soft, hard, "{line}");
    assert_ne!(soft, "256", "{line}");
    let log = d.stderr();
    assert!(
        log.contains(&format!(
            "open-files limit (RLIMIT_NOFILE): {soft} (raised from 256)"
        )),
        "{log}"
    );
}
