//! The initiator and `rstmf-bench` against Debian's tgt (`scripts/peer-tgt.sh`).
//!
//! Starts tgtd on a free loopback port with its state in a temporary directory and
//! stops it at the end, also on failure. Fails with the install line when tgtd is not
//! installed (`scripts/test-all.sh` installs it). The script is the workspace's
//! `scripts/peer-tgt.sh` (or `$PEER_TGT_SH`).

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use idm::pdu::{LoginStatus, TmfFunction, TmfResponse};
use iscsi_initiator::scsi::{self, status};
use iscsi_initiator::{
    AuthError, ChapProvider, DigestMode, Error, IscsiUrl, LoginOptions, ScsiRequest, Session,
};

const IQN: &str = "iqn.2026-11.org.example:tgt";
const LU_SIZE: u64 = 64 << 20;

struct Tgt {
    script: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Tgt {
    fn script() -> PathBuf {
        std::env::var_os("PEER_TGT_SH").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/peer-tgt.sh"),
            PathBuf::from,
        )
    }

    fn available() -> Result<(), String> {
        let have_tgtd = Command::new("sh")
            .args(["-c", "command -v tgtd"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have_tgtd {
            return Err("tgtd not installed (apt-get install -y tgt)".into());
        }
        if !Self::script().exists() {
            return Err(format!("{} not found", Self::script().display()));
        }
        Ok(())
    }

    /// Starts tgtd; retries on another port if it does not come up (seen once: tgtd
    /// exiting during startup on a port that was free a moment before).
    fn start() -> Self {
        let mut failures = String::new();
        // peer-tgt.sh passes the portal port to tgtd as its control port (-C), a C
        // `short`: only ports up to 32767 work.
        let base = (std::process::id() % 10_000) as u16;
        let free = (0..2000u16)
            .map(|i| 20_000 + (base + i * 7) % 12_767)
            .filter(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        for port in free.take(3) {
            let dir = tempfile::tempdir().expect("temp dir");
            let out = Command::new("bash")
                .arg(Self::script())
                .args(["start", &port.to_string()])
                .arg(dir.path())
                .env("SIZE", LU_SIZE.to_string())
                .output()
                .expect("run peer-tgt.sh");
            let tgt = Tgt {
                script: Self::script(),
                dir,
                port,
            };
            if out.status.success() {
                return tgt;
            }
            failures += &format!(
                "port {port}: {}\ntgtd.log:\n{}\n",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(tgt.dir.path().join("tgtd.log")).unwrap_or_default()
            );
        }
        panic!("peer-tgt.sh start failed:\n{failures}");
    }

    fn tgtadm(&self, args: &[&str]) {
        let out = Command::new("tgtadm")
            .args(["--control-port", &self.port.to_string(), "--lld", "iscsi"])
            .args(args)
            .output()
            .expect("run tgtadm");
        assert!(
            out.status.success(),
            "tgtadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self, lun: u16) -> IscsiUrl {
        format!("iscsi://127.0.0.1:{}/{IQN}/{lun}", self.port)
            .parse()
            .expect("url")
    }
}

impl Drop for Tgt {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

fn opts() -> LoginOptions {
    LoginOptions {
        initiator_name: "iqn.2026-11.org.rstmf:test".into(),
        login_timeout: Duration::from_secs(10),
        command_timeout: Some(Duration::from_secs(30)),
        ..LoginOptions::default()
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// Runs rstmf-bench with a hard timeout.
fn bench(args: &[&str], during: impl FnOnce()) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rstmf-bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rstmf-bench");
    during();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rstmf-bench did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn against_tgt() {
    if let Err(why) = Tgt::available() {
        panic!("tgt is required for this test: {why} (apt-get install -y tgt, or run scripts/test-all.sh)");
    }
    let tgt = Tgt::start();
    let o = opts();

    // Discovery.
    let found = Session::discover(&format!("127.0.0.1:{}", tgt.port), &o).expect("discovery");
    let t = found
        .iter()
        .find(|t| t.name == IQN)
        .expect("our target listed");
    let portal = t
        .portals
        .first()
        .expect("a portal")
        .portal()
        .expect("portal parses");
    assert_eq!(portal.port, tgt.port);

    // Login, capacity, INQUIRY.
    let mut s = Session::login(&tgt.url(1), &o).expect("login");
    let cap = s.read_capacity().expect("READ CAPACITY");
    assert_eq!((cap.block_size, cap.bytes()), (512, LU_SIZE));
    let inq = s
        .execute_checked(ScsiRequest::read(1, &scsi::inquiry(None, 96), 96))
        .expect("INQUIRY");
    assert_eq!(inq.data.first().map(|b| b & 0x1f), Some(0), "a disk");

    // Write then read back: small, 64 KiB (immediate + R2T), 1 MiB (several R2Ts and
    // Data-In PDUs), and the last block of the LU.
    for (lba, len, seed) in [(0u64, 512usize, 1u8), (100, 65536, 2), (4096, 1 << 20, 3)] {
        let data = pattern(len, seed);
        s.write(lba, &data).expect("write");
        assert_eq!(
            s.read(lba, (len / 512) as u32).expect("read"),
            data,
            "LBA {lba}"
        );
    }
    let last = cap.blocks - 1;
    s.write(last, &pattern(512, 9)).expect("write last block");
    assert_eq!(s.read(last, 1).expect("read last block"), pattern(512, 9));
    let past_end = s
        .execute(ScsiRequest::read(1, &scsi::read16(cap.blocks, 1), 512))
        .expect("read past the end completes");
    assert_eq!(past_end.status, status::CHECK_CONDITION);
    assert_eq!(
        past_end.sense().map(|s| s.key),
        Some(scsi::sense_key::ILLEGAL_REQUEST)
    );

    // Queue depth: 64 reads in flight, each checked.
    let mut ids = Vec::new();
    for i in 0..64u64 {
        let req = ScsiRequest::read(1, &scsi::read16(4096 + i * 8, 8), 4096);
        ids.push((s.submit(req).expect("submit"), i));
    }
    let full = pattern(1 << 20, 3);
    let mut done = Vec::new();
    while done.len() < ids.len() {
        s.poll_completions(&mut done, Some(Duration::from_secs(10)))
            .expect("poll");
    }
    for c in done {
        let i = ids.iter().find(|(id, _)| *id == c.id).expect("known id").1 as usize;
        let r = c.result.expect("read ok");
        assert_eq!(r.data, full[i * 4096..(i + 1) * 4096]);
    }

    // NOP ping, a TMF and the UNIT ATTENTION it leaves behind.
    s.nop().expect("NOP-Out ping");
    assert_eq!(
        s.tmf(TmfFunction::LogicalUnitReset, None)
            .expect("LU reset"),
        TmfResponse::FunctionComplete
    );
    assert_eq!(s.read(0, 1).expect("read after reset"), pattern(512, 1));
    s.logout().expect("logout");

    // Digests on.
    let dig = LoginOptions {
        header_digest: DigestMode::Crc32c,
        data_digest: DigestMode::Crc32c,
        ..opts()
    };
    // tgt quirk: with its default HeaderDigest=None it answers "None" even to an offer
    // of "CRC32C" alone (RFC 7143 §6.2 wants Reject); we refuse that answer.
    match Session::login(&tgt.url(1), &dig) {
        Err(Error::Key(idm::keys::KeyError::BadAnswer { key, answer })) => {
            assert_eq!((key, answer.as_str()), ("HeaderDigest", "None"))
        }
        other => panic!("expected tgt's digest quirk, got {other:?}"),
    }
    tgt.tgtadm(&[
        "--mode",
        "target",
        "--op",
        "update",
        "--tid",
        "1",
        "--name",
        "HeaderDigest",
        "--value",
        "CRC32C,None",
    ]);
    tgt.tgtadm(&[
        "--mode",
        "target",
        "--op",
        "update",
        "--tid",
        "1",
        "--name",
        "DataDigest",
        "--value",
        "CRC32C,None",
    ]);
    let mut s = Session::login(&tgt.url(1), &dig).expect("login with digests");
    assert!(s.core().params().digests().header && s.core().params().digests().data);
    let data = pattern(300 * 512, 7);
    s.write(20_000, &data).expect("write with digests");
    assert_eq!(s.read(20_000, 300).expect("read with digests"), data);
    s.logout().expect("logout");

    // A target that does not exist.
    let mut bad = tgt.url(1);
    bad.target = "iqn.2026-11.org.example:nope".into();
    match Session::login(&bad, &o) {
        Err(Error::LoginRejected { status, .. }) => {
            assert_eq!(status, LoginStatus::NOT_FOUND)
        }
        other => panic!("expected a refused login, got {other:?}"),
    }

    // rstmf-bench: verify pattern, then a JSON summary.
    let url1 = tgt.url(1).to_string();
    let out = bench(
        &["--url", &url1, "--pattern", "verify", "--seconds", "2"],
        || {},
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("verify: OK"),
        "verify run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bench(
        &[
            "--url",
            &url1,
            "--pattern",
            "randread",
            "--seconds",
            "1",
            "--qd",
            "8",
            "--json",
        ],
        || {},
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    for k in ["iops", "mib_per_s", "lat_us_p50", "lat_us_p99"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {v}");
    }

    // The verify pattern catches corruption: zero LUN 2's backing file mid-run.
    let url2 = tgt.url(2).to_string();
    let img = tgt.dir.path().join("lun2.img");
    let out = bench(
        &[
            "--url",
            &url2,
            "--pattern",
            "verify",
            "--seconds",
            "3",
            "--quiet",
        ],
        || {
            std::thread::sleep(Duration::from_millis(1500));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&img)
                .expect("open lun2.img");
            f.seek(SeekFrom::Start(0)).expect("seek");
            f.write_all(&vec![0u8; 16 << 20]).expect("zero");
            f.sync_all().expect("sync");
        },
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected a verify failure: {stderr}"
    );
    assert!(stderr.contains("VERIFY FAILED at LBA"), "{stderr}");

    // CHAP, last: once an account is bound, tgt refuses logins without credentials.
    let args = |v: &[&'static str]| v.to_vec();
    tgt.tgtadm(&args(&[
        "--mode",
        "account",
        "--op",
        "new",
        "--user",
        "alice",
        "--password",
        "alice-secret-1",
    ]));
    tgt.tgtadm(&args(&[
        "--mode", "account", "--op", "bind", "--tid", "1", "--user", "alice",
    ]));
    let with = |creds: &str| -> IscsiUrl {
        format!("iscsi://{creds}@127.0.0.1:{}/{IQN}/1", tgt.port)
            .parse()
            .expect("url")
    };
    let s = Session::login(&with("alice%alice-secret-1"), &o).expect("one-way CHAP");
    s.logout().expect("logout");
    for url in [with("alice%alice-secret-2"), tgt.url(1)] {
        match Session::login(&url, &o) {
            Err(Error::LoginRejected { status, .. }) => {
                assert_eq!(status, LoginStatus::AUTHENTICATION_FAILURE)
            }
            other => panic!("expected an authentication failure, got {other:?}"),
        }
    }
    tgt.tgtadm(&args(&[
        "--mode",
        "account",
        "--op",
        "new",
        "--user",
        "tgtuser",
        "--password",
        "target-secret-1",
    ]));
    tgt.tgtadm(&args(&[
        "--mode",
        "account",
        "--op",
        "bind",
        "--tid",
        "1",
        "--user",
        "tgtuser",
        "--outgoing",
    ]));
    let mutual = |secret: &str| LoginOptions {
        auth: Some(std::sync::Arc::new(
            ChapProvider::mutual(Some("tgtuser".into()), secret).expect("secret"),
        )),
        ..opts()
    };
    let s = Session::login(&with("alice%alice-secret-1"), &mutual("target-secret-1"))
        .expect("mutual CHAP");
    s.logout().expect("logout");
    match Session::login(&with("alice%alice-secret-1"), &mutual("target-secret-9")) {
        Err(Error::Auth(AuthError::Failed(_))) => {}
        other => panic!("expected the target's CHAP response to be refused, got {other:?}"),
    }
}
