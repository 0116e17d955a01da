//! A real `stmfd` in a scratch directory, and its CLIs, for end-to-end tests.
//!
//! Binaries and provider libraries come from the target directory of the running test
//! (`<target>/<profile>`): run `cargo build --workspace` first; a missing artifact fails the
//! test with that advice, it is never skipped.

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long stmfd may take to start answering or to exit.
pub const DAEMON_WAIT: Duration = Duration::from_secs(20);

/// `<target>/<profile>`, from the test binary's path (`<target>/<profile>/deps/<test>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    deps.parent().expect("deps has a parent").to_path_buf()
}

/// A built binary or library of the workspace; panics with advice when it is missing.
pub fn artifact(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// A scratch directory for one daemon: state dir, socket, providers dir, output files.
pub struct DaemonEnv {
    dir: tempfile::TempDir,
}

impl Default for DaemonEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl DaemonEnv {
    /// A fresh scratch directory with an empty providers directory (no embedded default).
    pub fn new() -> DaemonEnv {
        let dir = tempfile::Builder::new()
            .prefix("stmfd-test")
            .tempdir()
            .expect("tempdir");
        fs::create_dir(dir.path().join("prov")).expect("mkdir prov");
        DaemonEnv { dir }
    }

    /// The scratch directory (tests may keep data files here).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run").join("stmfd.sock")
    }

    /// Starts stmfd and waits until it answers `list-state`.
    pub fn start(&self) -> Daemon {
        self.start_with_log("info")
    }

    /// Starts stmfd with `RUST_LOG=<filter>` (e.g. `trace` to check what it ever logs).
    pub fn start_with_log(&self, filter: &str) -> Daemon {
        self.spawn(self.command(filter))
    }

    /// Starts stmfd with extra command-line arguments.
    pub fn start_with_args(&self, args: &[&str]) -> Daemon {
        let mut cmd = self.command("info");
        cmd.args(args);
        self.spawn(cmd)
    }

    /// The stmfd command line for this scratch directory (state dir, socket, providers dir,
    /// `RUST_LOG=<filter>`), for tests that add arguments or run it to its exit.
    pub fn command(&self, filter: &str) -> Command {
        let mut cmd = Command::new(artifact("stmfd"));
        cmd.arg("--state-dir")
            .arg(self.state())
            .arg("--socket")
            .arg(self.socket())
            .arg("--providers-dir")
            .arg(self.dir.path().join("prov"))
            .env_remove("STMF_SOCKET")
            .env_remove("STMFD_STATE_DIR")
            .env_remove("STMFD_PROVIDERS_DIR")
            .env("RUST_LOG", filter)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs stmfd with `args` until it exits by itself (start-up refusals); fails the test
    /// if it is still running after [`DAEMON_WAIT`].
    pub fn run_to_exit(&self, args: &[&str]) -> Output {
        let mut child = self
            .command("info")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stmfd");
        let start = Instant::now();
        while child.try_wait().expect("try_wait").is_none() {
            if start.elapsed() > DAEMON_WAIT {
                let _ = child.kill();
                let o = child.wait_with_output().expect("output");
                panic!(
                    "stmfd did not exit within {DAEMON_WAIT:?}\nstderr:\n{}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("output")
    }

    /// Starts `cmd` (from [`DaemonEnv::command`]) and waits until it answers `list-state`.
    pub fn spawn(&self, mut cmd: Command) -> Daemon {
        let n = fs::read_dir(self.dir.path()).map_or(0, |d| d.count());
        let out = self.dir.path().join(format!("stdout.{n}"));
        let err = self.dir.path().join(format!("stderr.{n}"));
        let child = cmd
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

/// A running stmfd (killed on drop).
pub struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    out: PathBuf,
    err: PathBuf,
}

impl Daemon {
    /// The daemon's stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The daemon's stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// The control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("stmfd running").id()
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child_mut().try_wait().expect("try_wait") {
                panic!("stmfd exited early ({st})\nstderr:\n{}", self.stderr());
            }
            let o = self.cli("stmfadm", &["list-state"]);
            if o.status.success() {
                return;
            }
            assert!(
                start.elapsed() < DAEMON_WAIT,
                "stmfd did not answer on {} within {DAEMON_WAIT:?}\nstderr:\n{}",
                self.socket.display(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("stmfd running")
    }

    /// Sends SIGTERM and asserts a clean exit.
    pub fn stop(mut self) {
        let st = self.signal_and_wait(libc_sig::TERM);
        assert!(
            st.success(),
            "stmfd exited with {st} after SIGTERM\nstderr:\n{}",
            self.stderr()
        );
    }

    /// SIGKILL: the daemon dies without saving or closing anything.
    pub fn kill9(mut self) {
        self.signal_and_wait(libc_sig::KILL);
    }

    fn signal_and_wait(&mut self, sig: &str) -> ExitStatus {
        let pid = self.child_mut().id().to_string();
        let st = Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -s {sig} {pid} failed");
        let mut child = self.child.take().expect("stmfd running");
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return st;
            }
            if start.elapsed() > DAEMON_WAIT {
                let _ = child.kill();
                panic!(
                    "stmfd did not exit after SIG{sig}\nstderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs CLI `prog` (`stmfadm`, `sbdadm`, ...) against this daemon.
    pub fn cli(&self, prog: &str, args: &[&str]) -> Output {
        Command::new(artifact(prog))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("STMF_SOCKET")
            .output()
            .unwrap_or_else(|e| panic!("run {prog}: {e}"))
    }

    /// Runs `prog`, asserting success; returns stdout.
    #[track_caller]
    pub fn cli_ok(&self, prog: &str, args: &[&str]) -> String {
        let o = self.cli(prog, args);
        assert!(
            o.status.success(),
            "{prog} {args:?} failed ({})\nstdout:\n{}\nstderr:\n{}\nstmfd stderr:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.stderr()
        );
        String::from_utf8(o.stdout).expect("utf-8 output")
    }

    /// Runs `prog --json ...`, asserting success; returns the parsed output.
    #[track_caller]
    pub fn cli_json(&self, prog: &str, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.cli_ok(prog, &a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{prog} {args:?}: not JSON ({e}):\n{out}"))
    }

    /// Runs `prog`, asserting it fails with exit status `code`; returns stderr.
    #[track_caller]
    pub fn cli_err(&self, prog: &str, args: &[&str], code: i32) -> String {
        let o = self.cli(prog, args);
        assert_eq!(
            o.status.code(),
            Some(code),
            "{prog} {args:?}: expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
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

/// Signal names for `kill -s`.
mod libc_sig {
    pub const TERM: &str = "TERM";
    pub const KILL: &str = "KILL";
}
