//! Shared by the iSCSI tests: a core with iscsit and the example RAM LU serving one target
//! on a free loopback port, and a raw initiator built on idm's codec that shows every PDU
//! the target sends (so tests can check DataSN, offsets, the S bit, R2TSN ...).

#![allow(dead_code)]

use idm::pdu::{
    DataOut, Digests, FrameLimits, Isid, LoginRequest, LogoutReason, LogoutRequest, NopOut, Pdu,
    PduReader, Role, ScsiCommand, Stage, TaskAttr, TaskMgmtRequest, TextRequest, TmfFunction,
    TxFrame, RESERVED_TAG,
};
use rstmf_tests::{Guid, Harness, Settings};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The target every test logs in to.
pub const TARGET: &str = "iqn.2026-11.org.rstmf:itest";
/// A target with an ACL that admits only [`ALLOWED`].
pub const HIDDEN: &str = "iqn.2026-11.org.rstmf:hidden";
/// The only initiator the hidden target admits.
pub const ALLOWED: &str = "iqn.2026-11.org.rstmf:allowed-initiator";
/// The initiator name the raw client uses.
pub const INITIATOR: &str = "iqn.2026-11.org.rstmf:raw-initiator";
/// LU size.
pub const LU_MB: u64 = 64;

/// A core serving [`TARGET`] (and [`HIDDEN`]) with one RAM LU at LUN 0.
pub struct Setup {
    /// The core.
    pub h: Harness,
    /// The LU.
    pub guid: Guid,
    /// Where the targets listen.
    pub portal: SocketAddr,
}

impl Setup {
    /// Starts it with default tunables.
    pub fn new() -> Setup {
        Setup::with_defaults("{}")
    }

    /// Starts it with iscsit's defaults set to `defaults` (the members of
    /// `modify-defaults`, e.g. `{"digests":"header"}`) before the targets are made.
    pub fn with_defaults(defaults: &str) -> Setup {
        let h = Harness::new(Settings::default());
        h.load("example-ram-lu");
        let path = h.copy_library("iscsit");
        h.load_path(&path, "", None)
            .unwrap_or_else(|e| panic!("loading iscsit: {e}"));
        let mut req: serde_json::Value = serde_json::from_str(defaults).expect("defaults JSON");
        req["op"] = "modify-defaults".into();
        control(&h, &req.to_string());
        let guid = h.create_ram_lu(LU_MB, 512);
        h.stmf()
            .add_view(guid, None, None, Some(0))
            .expect("add view");
        let reply = control(
            &h,
            &format!(r#"{{"op":"create-target","name":"{TARGET}","portals":["127.0.0.1:0"]}}"#),
        );
        let portal: SocketAddr = reply["portals"][0]
            .as_str()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("create-target reply {reply}"));
        control(
            &h,
            &format!(
                r#"{{"op":"create-target","name":"{HIDDEN}","tpgs":["{TARGET}"],"acl":["{ALLOWED}"]}}"#
            ),
        );
        let s = Setup { h, guid, portal };
        s.wait_online(TARGET);
        s.wait_online(HIDDEN);
        s
    }

    fn wait_online(&self, name: &str) {
        let ok = rstmf_tests::wait_until(Duration::from_secs(10), || {
            let v = control(&self.h, r#"{"op":"list-target"}"#);
            v["targets"].as_array().is_some_and(|ts| {
                ts.iter()
                    .any(|t| t["name"] == name && t["state"] == "online")
            })
        });
        assert!(ok, "target {name} did not come online");
    }

    /// `iscsi://127.0.0.1:<port>/<target>/0`.
    pub fn url(&self) -> String {
        format!("iscsi://{}/{TARGET}/0", self.portal)
    }

    /// Sessions the core has on [`TARGET`].
    pub fn core_sessions(&self) -> usize {
        self.h
            .stmf()
            .list_targets()
            .iter()
            .find(|t| t.name == TARGET)
            .map_or(0, |t| t.sessions.len())
    }

    /// Waits until the core has `n` sessions on [`TARGET`].
    pub fn wait_sessions(&self, n: usize) -> bool {
        rstmf_tests::wait_until(Duration::from_secs(10), || self.core_sessions() == n)
    }
}

/// Sends a control request to iscsit; panics on error.
pub fn control(h: &Harness, req: &str) -> serde_json::Value {
    let reply = h
        .stmf()
        .provider_control("iscsit", req)
        .unwrap_or_else(|e| panic!("iscsit {req}: {e}"));
    serde_json::from_str(&reply).expect("iscsit replies JSON")
}

/// A received PDU with its data.
#[derive(Debug, Clone)]
pub struct Rx {
    /// Header.
    pub pdu: Pdu,
    /// Data segment.
    pub data: Vec<u8>,
}

/// Login options.
#[derive(Debug, Clone)]
pub struct LoginOpts {
    /// ISID.
    pub isid: [u8; 6],
    /// TSIH (0: new session).
    pub tsih: u16,
    /// CID.
    pub cid: u16,
    /// InitiatorName.
    pub initiator: String,
    /// TargetName (`None`: discovery session).
    pub target: Option<String>,
    /// Operational keys offered.
    pub keys: Vec<(String, String)>,
}

impl LoginOpts {
    /// A normal session to [`TARGET`] with InitialR2T=Yes, ImmediateData=Yes, 8 KiB
    /// data segments each way and 64 KiB bursts.
    pub fn normal() -> LoginOpts {
        LoginOpts {
            isid: [0x80, 0, 0, 0, 0, 1],
            tsih: 0,
            cid: 0,
            initiator: INITIATOR.into(),
            target: Some(TARGET.into()),
            keys: [
                ("HeaderDigest", "None"),
                ("DataDigest", "None"),
                ("MaxConnections", "4"),
                ("InitialR2T", "Yes"),
                ("ImmediateData", "Yes"),
                ("MaxRecvDataSegmentLength", "8192"),
                ("MaxBurstLength", "65536"),
                ("FirstBurstLength", "16384"),
                ("DefaultTime2Wait", "0"),
                ("DefaultTime2Retain", "0"),
                ("MaxOutstandingR2T", "2"),
                ("DataPDUInOrder", "Yes"),
                ("DataSequenceInOrder", "Yes"),
                ("ErrorRecoveryLevel", "0"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }
    }

    /// A connection added to session `tsih` (MC/S or connection reinstatement): only
    /// connection-scoped keys.
    pub fn added(tsih: u16, cid: u16) -> LoginOpts {
        let mut o = LoginOpts::normal();
        o.tsih = tsih;
        o.cid = cid;
        o.keys.retain(|(k, _)| {
            matches!(
                k.as_str(),
                "HeaderDigest" | "DataDigest" | "MaxRecvDataSegmentLength"
            )
        });
        o
    }

    /// Replaces (or adds) key `k`.
    pub fn key(mut self, k: &str, v: &str) -> Self {
        self.keys.retain(|(x, _)| x != k);
        self.keys.push((k.into(), v.into()));
        self
    }
}

/// What a command returned.
#[derive(Debug, Clone, Default)]
pub struct CmdResult {
    /// SCSI status.
    pub status: u8,
    /// Sense data (without the length prefix).
    pub sense: Vec<u8>,
    /// Data-In gathered at its offsets.
    pub data: Vec<u8>,
    /// Every PDU the target sent for the command, in order.
    pub pdus: Vec<Pdu>,
    /// (O, U, residual count) of the final status.
    pub residual: (bool, bool, u32),
}

/// A blocking raw initiator (one connection).
pub struct Ini {
    s: TcpStream,
    rx: PduReader,
    buf: Vec<u8>,
    unfed: Vec<u8>,
    /// Next ITT.
    pub itt: u32,
    /// Next CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// TSIH after login.
    pub tsih: u16,
    /// Target's MaxRecvDataSegmentLength.
    pub max_send: usize,
    /// FirstBurstLength.
    pub first_burst: usize,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// ImmediateData.
    pub immediate: bool,
    /// Most immediate data this client sends with a command.
    pub imm_max: usize,
    /// Digests in force.
    pub digests: Digests,
}

impl Ini {
    /// Connects.
    pub fn connect(addr: SocketAddr) -> Ini {
        Ini::with_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// Connects from the local address `from` (port 0: any; on loopback every 127/8
    /// address is the machine's own, so a test can play another host).
    pub fn connect_from(addr: SocketAddr, from: SocketAddr) -> Ini {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
        sock.bind(&from.into()).expect("bind the source address");
        sock.connect(&addr.into()).expect("connect");
        Ini::with_stream(sock.into())
    }

    fn with_stream(s: TcpStream) -> Ini {
        s.set_nodelay(true).ok();
        Ini {
            s,
            rx: PduReader::new(Role::Initiator, FrameLimits::LOGIN),
            buf: vec![0; 1 << 20],
            unfed: Vec::new(),
            itt: 0x1000,
            cmd_sn: 1,
            exp_stat_sn: 0,
            tsih: 0,
            max_send: 8192,
            first_burst: 65536,
            initial_r2t: true,
            immediate: true,
            imm_max: usize::MAX,
            digests: Digests::NONE,
        }
    }

    /// Logs in with `o`; returns the final Login Response's status (class, detail).
    pub fn login(&mut self, o: &LoginOpts) -> (u8, u8) {
        let mut text = Vec::new();
        let mut push = |k: &str, v: &str| {
            text.extend_from_slice(format!("{k}={v}\0").as_bytes());
        };
        push("InitiatorName", &o.initiator);
        match &o.target {
            Some(t) => {
                push("SessionType", "Normal");
                push("TargetName", t);
            }
            None => push("SessionType", "Discovery"),
        }
        for (k, v) in &o.keys {
            push(k, v);
        }
        let itt = self.next_itt();
        loop {
            let req = LoginRequest {
                transit: true,
                cont: false,
                csg: Stage::OperationalNegotiation,
                nsg: Stage::FullFeaturePhase,
                version_max: 0,
                version_min: 0,
                isid: Isid(o.isid),
                tsih: o.tsih,
                itt,
                cid: o.cid,
                cmd_sn: self.cmd_sn,
                exp_stat_sn: self.exp_stat_sn,
            };
            self.send(&Pdu::LoginRequest(req), &text);
            let r = self.recv();
            let Pdu::LoginResponse(rsp) = r.pdu else {
                panic!("expected a Login Response, got {:?}", r.pdu);
            };
            self.exp_stat_sn = rsp.sn.stat_sn.wrapping_add(1);
            if !rsp.status.is_success() {
                return (rsp.status.class, rsp.status.detail);
            }
            for (k, v) in idm::text::parse(&r.data).expect("login text") {
                match k {
                    "MaxRecvDataSegmentLength" => self.max_send = v.parse().unwrap_or(8192),
                    "FirstBurstLength" => self.first_burst = v.parse().unwrap_or(65536),
                    "InitialR2T" => self.initial_r2t = v == "Yes",
                    "ImmediateData" => self.immediate = v == "Yes",
                    "HeaderDigest" => self.digests.header = v == "CRC32C",
                    "DataDigest" => self.digests.data = v == "CRC32C",
                    _ => {}
                }
            }
            if rsp.transit && rsp.nsg == Stage::FullFeaturePhase {
                self.tsih = rsp.tsih;
                self.cmd_sn = rsp.sn.exp_cmd_sn;
                let limits = FrameLimits {
                    digests: self.digests,
                    max_data_segment_len: 1 << 20,
                };
                self.rx.set_limits(limits);
                return (0, 0);
            }
            // The target offered keys: agree with what it offered (never resend a key:
            // RFC 7143 §6.3 allows each once per login), then ask again.
            let sent: Vec<&str> = o.keys.iter().map(|(k, _)| k.as_str()).collect();
            text = Vec::new();
            for (k, v) in idm::text::parse(&r.data).expect("login text") {
                let declared = matches!(
                    k,
                    "TargetPortalGroupTag" | "TargetAlias" | "MaxRecvDataSegmentLength"
                );
                if !declared && !sent.contains(&k) {
                    text.extend_from_slice(format!("{k}={v}\0").as_bytes());
                }
            }
        }
    }

    /// Logs in with CHAP (`user`, `secret`) in the security stage, then as
    /// [`Ini::login`]. Returns the status (class, detail) and the number of the
    /// response that carried it (1: the very first request was refused, 3: the CHAP
    /// response was; 4 and more: the operational stage).
    pub fn login_chap(&mut self, o: &LoginOpts, user: &str, secret: &str) -> (u8, u8, usize) {
        let itt = self.next_itt();
        let mut first = format!("InitiatorName={}\0", o.initiator);
        match &o.target {
            Some(t) => first.push_str(&format!("SessionType=Normal\0TargetName={t}\0")),
            None => first.push_str("SessionType=Discovery\0"),
        }
        first.push_str("AuthMethod=CHAP\0");
        let mut challenge = (0u8, Vec::new());
        let steps: [(bool, String); 3] = [
            (false, first),
            (false, "CHAP_A=5\0".into()),
            (true, String::new()),
        ];
        for (round, (transit, mut text)) in steps.into_iter().enumerate() {
            if round == 2 {
                let r = idm::chap::chap_md5(challenge.0, secret.as_bytes(), &challenge.1);
                text = format!("CHAP_N={user}\0CHAP_R={}\0", idm::chap::encode_hex(&r));
            }
            let req = LoginRequest {
                transit,
                cont: false,
                csg: Stage::SecurityNegotiation,
                nsg: if transit {
                    Stage::OperationalNegotiation
                } else {
                    Stage::SecurityNegotiation
                },
                version_max: 0,
                version_min: 0,
                isid: Isid(o.isid),
                tsih: o.tsih,
                itt,
                cid: o.cid,
                cmd_sn: self.cmd_sn,
                exp_stat_sn: self.exp_stat_sn,
            };
            self.send(&Pdu::LoginRequest(req), text.as_bytes());
            let r = self.recv();
            let Pdu::LoginResponse(rsp) = r.pdu else {
                panic!("expected a Login Response, got {:?}", r.pdu);
            };
            self.exp_stat_sn = rsp.sn.stat_sn.wrapping_add(1);
            if !rsp.status.is_success() {
                return (rsp.status.class, rsp.status.detail, round + 1);
            }
            for (k, v) in idm::text::parse(&r.data).expect("login text") {
                match k {
                    "CHAP_I" => challenge.0 = idm::keys::parse_number(v).unwrap_or(0) as u8,
                    "CHAP_C" => challenge.1 = idm::chap::decode_binary(v).expect("CHAP_C"),
                    _ => {}
                }
            }
        }
        let (class, detail) = self.login(o);
        (class, detail, 4)
    }

    /// The next ITT.
    pub fn next_itt(&mut self) -> u32 {
        self.itt += 1;
        self.itt
    }

    /// Sends one PDU.
    pub fn send(&mut self, pdu: &Pdu, data: &[u8]) {
        let mut out = Vec::new();
        TxFrame::from_pdu(pdu, &[], data, self.digests)
            .expect("frame")
            .write_to(&mut out);
        self.s.write_all(&out).expect("send");
    }

    /// The connection's socket.
    pub fn stream(&self) -> &TcpStream {
        &self.s
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    /// The next PDU within `timeout`; `None` on timeout or when the target closed.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Rx> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.rx.next_pdu() {
                Ok(Some(p)) => {
                    return Some(Rx {
                        pdu: p.pdu,
                        data: p.data.to_vec(),
                    })
                }
                Ok(None) => {}
                Err(e) => panic!("bad PDU from the target: {e}"),
            }
            if !self.unfed.is_empty() {
                let k = self.rx.feed(&self.unfed);
                self.unfed.drain(..k);
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.s.set_read_timeout(Some(left)).ok();
            match self.s.read(&mut self.buf) {
                Ok(0) => return None,
                Ok(n) => self.unfed.extend_from_slice(&self.buf[..n]),
                Err(_) => return None,
            }
        }
    }

    /// The next PDU (10 s at most).
    pub fn recv(&mut self) -> Rx {
        self.recv_timeout(Duration::from_secs(10))
            .expect("no PDU from the target within 10 s")
    }

    /// True when the target closed the connection within `timeout` (PDUs are skipped).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.s
                .set_read_timeout(Some(Duration::from_millis(50)))
                .ok();
            match self.s.read(&mut self.buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }

    /// A SCSI Command header.
    pub fn command(&mut self, cdb: &[u8], read: bool, write: bool, edtl: u32) -> ScsiCommand {
        let mut c = [0u8; 16];
        c[..cdb.len().min(16)].copy_from_slice(&cdb[..cdb.len().min(16)]);
        let cmd = ScsiCommand {
            immediate: false,
            final_bit: true,
            read,
            write,
            attr: TaskAttr::Simple,
            lun: 0,
            itt: self.next_itt(),
            expected_data_transfer_length: edtl,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb: c,
        };
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        cmd
    }

    /// Runs a command to its status, answering R2Ts from `out`, sending immediate and
    /// unsolicited data as negotiated. `edtl` defaults to the data length.
    pub fn scsi(&mut self, cdb: &[u8], read_len: u32, out: &[u8], edtl: Option<u32>) -> CmdResult {
        let write = !out.is_empty();
        let edtl = edtl.unwrap_or(if write { out.len() as u32 } else { read_len });
        let mut cmd = self.command(cdb, read_len > 0, write, edtl);
        let imm = if write && self.immediate {
            out.len()
                .min(self.max_send)
                .min(self.first_burst)
                .min(self.imm_max)
        } else {
            0
        };
        let unsol_end = if write && !self.initial_r2t {
            self.first_burst.min(out.len())
        } else {
            imm
        };
        cmd.final_bit = !(write && unsol_end > imm);
        let itt = cmd.itt;
        self.send(&Pdu::ScsiCommand(cmd), &out[..imm]);
        // Unsolicited Data-Out up to FirstBurstLength (InitialR2T=No).
        let mut off = imm;
        let mut sn = 0;
        while off < unsol_end {
            let n = (unsol_end - off).min(self.max_send);
            let d = DataOut {
                final_bit: off + n == unsol_end,
                lun: 0,
                itt,
                ttt: RESERVED_TAG,
                exp_stat_sn: self.exp_stat_sn,
                data_sn: sn,
                buffer_offset: off as u32,
            };
            self.send(&Pdu::DataOut(d), &out[off..off + n]);
            off += n;
            sn += 1;
        }
        self.finish(itt, read_len, out)
    }

    /// Collects the responses of command `itt` until its status.
    pub fn finish(&mut self, itt: u32, read_len: u32, out: &[u8]) -> CmdResult {
        let mut res = CmdResult {
            data: vec![0; read_len as usize],
            ..Default::default()
        };
        loop {
            let r = self.recv();
            res.pdus.push(r.pdu);
            match r.pdu {
                Pdu::DataIn(d) if d.itt == itt => {
                    let o = d.buffer_offset as usize;
                    if let Some(dst) = res.data.get_mut(o..o + r.data.len()) {
                        dst.copy_from_slice(&r.data);
                    }
                    if let Some(st) = d.status {
                        self.exp_stat_sn = st.stat_sn.wrapping_add(1);
                        res.status = st.status;
                        res.residual = (st.overflow, st.underflow, st.residual_count);
                        return res;
                    }
                }
                Pdu::R2t(r2t) if r2t.itt == itt => {
                    let start = r2t.buffer_offset as usize;
                    let end = start + r2t.desired_data_transfer_length as usize;
                    let mut off = start;
                    let mut sn = 0;
                    while off < end {
                        let n = (end - off).min(self.max_send);
                        let d = DataOut {
                            final_bit: off + n == end,
                            lun: 0,
                            itt,
                            ttt: r2t.ttt,
                            exp_stat_sn: self.exp_stat_sn,
                            data_sn: sn,
                            buffer_offset: off as u32,
                        };
                        let data = out.get(off..off + n).unwrap_or(&[]).to_vec();
                        self.send(&Pdu::DataOut(d), &data);
                        off += n;
                        sn += 1;
                    }
                }
                Pdu::ScsiResponse(s) if s.itt == itt => {
                    self.exp_stat_sn = s.sn.stat_sn.wrapping_add(1);
                    res.status = s.status;
                    res.residual = (s.overflow, s.underflow, s.residual_count);
                    if r.data.len() >= 2 {
                        let n = usize::from(u16::from_be_bytes([r.data[0], r.data[1]]));
                        res.sense = r.data[2..2 + n.min(r.data.len() - 2)].to_vec();
                    }
                    return res;
                }
                Pdu::NopIn(n) if n.ttt != RESERVED_TAG => self.answer_ping(n.ttt, n.lun),
                other => panic!("unexpected PDU while waiting for ITT {itt:#x}: {other:?}"),
            }
        }
    }

    /// Answers a target ping.
    pub fn answer_ping(&mut self, ttt: u32, lun: u64) {
        let nop = NopOut {
            immediate: true,
            lun,
            itt: RESERVED_TAG,
            ttt,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(&Pdu::NopOut(nop), &[]);
    }

    /// NOP-Out ping (immediate) with `data`; returns the NOP-In.
    pub fn ping(&mut self, data: &[u8]) -> Rx {
        let itt = self.next_itt();
        let nop = NopOut {
            immediate: true,
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(&Pdu::NopOut(nop), data);
        let r = self.recv();
        if let Pdu::NopIn(n) = r.pdu {
            self.exp_stat_sn = n.sn.stat_sn.wrapping_add(1);
        }
        r
    }

    /// A TMF request (immediate); returns the response.
    pub fn tmf(&mut self, f: TmfFunction, ref_itt: u32) -> Rx {
        let itt = self.next_itt();
        let req = TaskMgmtRequest {
            immediate: true,
            function: f,
            lun: 0,
            itt,
            referenced_task_tag: ref_itt,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            ref_cmd_sn: self.cmd_sn.wrapping_sub(1),
            exp_data_sn: 0,
        };
        self.send(&Pdu::TaskMgmtRequest(req), &[]);
        loop {
            let r = self.recv();
            if let Pdu::TaskMgmtResponse(t) = r.pdu {
                if t.itt == itt {
                    self.exp_stat_sn = t.sn.stat_sn.wrapping_add(1);
                    return r;
                }
            }
        }
    }

    /// A Text Request (non-immediate) with `text`; returns the response.
    pub fn text(&mut self, text: &str) -> Rx {
        let itt = self.next_itt();
        let req = TextRequest {
            immediate: false,
            final_bit: true,
            cont: false,
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        let mut data = text.as_bytes().to_vec();
        data.push(0);
        self.send(&Pdu::TextRequest(req), &data);
        self.recv()
    }

    /// A Logout Request (immediate); returns the response.
    pub fn logout(&mut self, reason: LogoutReason, cid: u16) -> Rx {
        let itt = self.next_itt();
        let req = LogoutRequest {
            immediate: true,
            reason,
            itt,
            cid,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.send(&Pdu::LogoutRequest(req), &[]);
        self.recv()
    }
}

/// READ (16) of `blocks` 512-byte blocks at `lba`.
pub fn read16(lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x88;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// WRITE (16) of `blocks` 512-byte blocks at `lba`.
pub fn write16(lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = read16(lba, blocks);
    c[0] = 0x8A;
    c
}

/// A recognisable data pattern.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}
