//! Login as the initiator (RFC 7143 §6, §11.12-13): the security stage
//! (AuthMethod=None or an [`Authenticator`]), the operational stage with our offers
//! resolved by [`idm::keys::resolve_answer`] and the target's own offers answered
//! by [`idm::keys::negotiate`], text continuation, and SendTargets parsing.

use std::time::Instant;

use idm::conn::FfpParams;
use idm::keys::{self, Digest, KeyId, LocalConfig, NegContext, Value};
use idm::pdu::{LoginRequest, LoginResponse, Pdu, Stage};
use idm::text::{self, TextAccumulator, TextBuilder};

use super::{DigestMode, Event, LoginOptions, Phase, SessionConfig, SessionCore, SessionKind};
use crate::auth::{AuthError, AuthStep, Authenticator};
use crate::error::{Error, ProtocolError};
use crate::url::Portal;

/// Most Login Request/Response exchanges before we give up.
pub const MAX_LOGIN_ROUNDS: u32 = 16;

/// Login progress.
pub(super) struct LoginCtx {
    pub(super) deadline: Option<Instant>,
    stage: Stage,
    itt: u32,
    first: bool,
    op_offers_sent: bool,
    /// Our offers awaiting the target's answer.
    offered: Vec<(KeyId, String)>,
    /// Answers to the target's offers, for the next request.
    replies: Vec<(String, String)>,
    acc: TextAccumulator,
    /// The target sent C=1: the next request is empty and does not transit.
    cont_pending: bool,
    rounds: u32,
    auth: Option<Box<dyn Authenticator>>,
    auth_selected: bool,
    auth_next: Option<AuthStep>,
    local: LocalConfig,
}

fn digest_list(mode: DigestMode) -> &'static [Digest] {
    match mode {
        DigestMode::None => &[Digest::None],
        DigestMode::Crc32c => &[Digest::Crc32c],
        DigestMode::PreferCrc32c | DigestMode::PreferNone => &[Digest::Crc32c, Digest::None],
    }
}

/// What we accept when the target offers a key we did not offer.
fn local_config(o: &LoginOptions) -> LocalConfig {
    LocalConfig {
        header_digests: digest_list(o.header_digest),
        data_digests: digest_list(o.data_digest),
        initial_r2t: o.initial_r2t,
        immediate_data: o.immediate_data,
        max_recv_data_segment_length: o.max_recv_data_segment_length,
        max_burst_length: o.max_burst_length,
        first_burst_length: o.first_burst_length,
        max_outstanding_r2t: o.max_outstanding_r2t,
        ..LocalConfig::default()
    }
}

impl LoginCtx {
    pub(super) fn new(cfg: &SessionConfig) -> Result<Self, Error> {
        let auth = match (&cfg.credentials, &cfg.opts.auth) {
            (None, _) => None,
            (Some(c), Some(p)) => Some(p.start(c)?),
            (Some(_), None) => {
                return Err(AuthError::Unsupported(
                    "credentials given but no CHAP authenticator is configured",
                )
                .into())
            }
        };
        Ok(Self {
            deadline: None,
            stage: Stage::SecurityNegotiation,
            itt: 0,
            first: true,
            op_offers_sent: false,
            offered: Vec::new(),
            replies: Vec::new(),
            acc: TextAccumulator::default(),
            cont_pending: false,
            rounds: 0,
            auth,
            auth_selected: false,
            auth_next: None,
            local: local_config(&cfg.opts),
        })
    }
}

/// Our operational offers: (key, value), in the order sent.
fn operational_offers(o: &LoginOptions, kind: &SessionKind) -> Vec<(KeyId, String)> {
    let yn = |b: bool| if b { "Yes" } else { "No" }.to_owned();
    let mut v = vec![
        (KeyId::HeaderDigest, o.header_digest.offer().to_owned()),
        (KeyId::DataDigest, o.data_digest.offer().to_owned()),
    ];
    if matches!(kind, SessionKind::Normal { .. }) {
        v.extend([
            (KeyId::MaxConnections, "1".to_owned()),
            (KeyId::InitialR2T, yn(o.initial_r2t)),
            (KeyId::ImmediateData, yn(o.immediate_data)),
            (KeyId::MaxBurstLength, o.max_burst_length.to_string()),
            (
                KeyId::FirstBurstLength,
                o.first_burst_length.min(o.max_burst_length).to_string(),
            ),
            (KeyId::MaxOutstandingR2T, o.max_outstanding_r2t.to_string()),
            (KeyId::DataPDUInOrder, "Yes".to_owned()),
            (KeyId::DataSequenceInOrder, "Yes".to_owned()),
        ]);
    }
    v.extend([
        (KeyId::DefaultTime2Wait, "2".to_owned()),
        (KeyId::DefaultTime2Retain, "0".to_owned()),
        (KeyId::ErrorRecoveryLevel, "0".to_owned()),
    ]);
    v
}

impl SessionCore {
    /// Sends the next Login Request for the current login state.
    pub(super) fn send_login_request(&mut self, now: Instant) -> Result<(), Error> {
        let st = &mut self.st;
        let l = &mut st.login;
        let mut t = TextBuilder::new();
        let (transit, nsg) = if l.cont_pending {
            l.cont_pending = false;
            (false, l.stage)
        } else {
            if l.first {
                let o = &st.cfg.opts;
                t.push("InitiatorName", &o.initiator_name)?;
                if let Some(a) = &o.initiator_alias {
                    t.push("InitiatorAlias", a)?;
                }
                match &st.cfg.kind {
                    SessionKind::Normal { target } => {
                        t.push("SessionType", "Normal")?;
                        t.push("TargetName", target)?;
                    }
                    SessionKind::Discovery => {
                        t.push("SessionType", "Discovery")?;
                    }
                }
            }
            match l.stage {
                Stage::SecurityNegotiation => {
                    if l.first {
                        let method = l.auth.as_ref().map_or("None", |a| a.method());
                        t.push("AuthMethod", method)?;
                        l.offered.push((KeyId::AuthMethod, method.to_owned()));
                    }
                    for (k, v) in &l.replies {
                        t.push(k, v)?;
                    }
                    let transit = match (&l.auth, l.auth_next.take()) {
                        (None, _) => true,
                        (Some(_), Some(step)) => {
                            for (k, v) in &step.keys {
                                t.push(k, v)?;
                            }
                            step.transit
                        }
                        (Some(_), None) => false,
                    };
                    (transit, Stage::OperationalNegotiation)
                }
                _ => {
                    if !l.op_offers_sent {
                        l.op_offers_sent = true;
                        let offers = operational_offers(&st.cfg.opts, &st.cfg.kind);
                        for (id, v) in &offers {
                            t.push(id.name(), v)?;
                        }
                        t.push(
                            "MaxRecvDataSegmentLength",
                            &st.cfg.opts.max_recv_data_segment_length.to_string(),
                        )?;
                        l.offered.extend(offers);
                    }
                    for (k, v) in &l.replies {
                        t.push(k, v)?;
                    }
                    (true, Stage::FullFeaturePhase)
                }
            }
        };
        l.replies.clear();
        l.first = false;
        let csg = l.stage;
        let itt = st.alloc_itt();
        st.login.itt = itt;
        let pdu = Pdu::LoginRequest(LoginRequest {
            transit,
            cont: false,
            csg,
            nsg: if transit { nsg } else { csg },
            version_max: 0,
            version_min: 0,
            isid: st.cfg.isid,
            tsih: 0,
            itt,
            cid: 0,
            cmd_sn: st.cmd_sn,
            exp_stat_sn: st.exp_stat_sn,
        });
        self.conn.send_pdu(now, &pdu, t.as_bytes())?;
        Ok(())
    }

    /// Handles one Login Response.
    pub(super) fn on_login_response(
        &mut self,
        now: Instant,
        r: LoginResponse,
        data: &[u8],
    ) -> Result<(), Error> {
        let st = &mut self.st;
        if !r.status.is_success() {
            let redirect = text::parse(data).ok().and_then(|p| {
                p.iter()
                    .find(|(k, _)| *k == "TargetAddress")
                    .map(|(_, v)| (*v).to_owned())
            });
            return Err(Error::LoginRejected {
                status: r.status,
                redirect,
            });
        }
        if r.version_active != 0 {
            return Err(ProtocolError::Version(r.version_active).into());
        }
        if r.itt != st.login.itt {
            return Err(ProtocolError::BadLoginResponse("ITT does not match the request").into());
        }
        if r.isid != st.cfg.isid {
            return Err(ProtocolError::BadLoginResponse("ISID does not match").into());
        }
        if r.csg != st.login.stage {
            return Err(ProtocolError::BadLoginResponse("CSG does not match the request").into());
        }
        st.login.rounds += 1;
        if st.login.rounds > MAX_LOGIN_ROUNDS {
            return Err(ProtocolError::LoginLoop(st.login.rounds).into());
        }
        // The first response sets StatSN and the command window.
        if st.login.rounds == 1 {
            st.exp_stat_sn = r.sn.stat_sn.wrapping_add(1);
            st.exp_cmd_sn = r.sn.exp_cmd_sn;
            st.max_cmd_sn = r.sn.max_cmd_sn;
        } else {
            st.status_received(r.sn.stat_sn);
            st.update_cmd_window(r.sn.exp_cmd_sn, r.sn.max_cmd_sn);
        }
        let l = &mut st.login;
        let whole = match l.acc.push(data, r.cont)? {
            None => {
                l.cont_pending = true;
                return self.send_login_request(now);
            }
            Some(t) => t.to_vec(),
        };
        let pairs = text::parse(&whole)?;
        let mut auth_keys: Vec<(&str, &str)> = Vec::new();
        for &(k, v) in &pairs {
            if let Some(pos) = l.offered.iter().position(|(id, _)| id.name() == k) {
                let (id, offered) = l.offered.remove(pos);
                let outcome = keys::resolve_answer(id, &offered, v)?;
                if id == KeyId::AuthMethod {
                    match (&l.auth, outcome.as_ref()) {
                        (Some(a), Some(Value::Text(m))) if m == a.method() => {
                            l.auth_selected = true
                        }
                        (None, Some(Value::Text(m))) if m == "None" => {}
                        _ => return Err(AuthError::Method(v.to_owned()).into()),
                    }
                }
                if let Some(value) = outcome {
                    st.params.apply(id, &value);
                }
                continue;
            }
            match k {
                "TargetAlias" => st.target_alias = Some(v.to_owned()),
                "TargetPortalGroupTag" => {
                    st.tpgt = keys::parse_number(v).and_then(|n| u16::try_from(n).ok());
                }
                "TargetAddress" => {}
                _ if k.starts_with("CHAP_") => auth_keys.push((k, v)),
                _ => {
                    if keys::lookup(k).is_none() {
                        l.replies.push((k.to_owned(), "NotUnderstood".to_owned()));
                        continue;
                    }
                    let ctx = NegContext::new(l.stage, true, &st.params);
                    let n = keys::negotiate(&l.local, &ctx, k, v)
                        .map_err(|e| ProtocolError::BadKey(e.to_string()))?;
                    if let (Some(id), Some(value)) = (n.key, &n.agreed) {
                        st.params.apply(id, value);
                    }
                    if let Some(reply) = n.reply.as_str() {
                        l.replies.push((k.to_owned(), reply.to_owned()));
                    }
                }
            }
        }
        match (l.stage, r.transit) {
            (Stage::SecurityNegotiation, true) => {
                if r.nsg != Stage::OperationalNegotiation {
                    return Err(ProtocolError::BadLoginResponse("NSG not requested").into());
                }
                if let (Some(a), true) = (&mut l.auth, l.auth_selected) {
                    a.finish(&auth_keys)?;
                }
                l.stage = Stage::OperationalNegotiation;
                self.send_login_request(now)
            }
            (Stage::SecurityNegotiation, false) => {
                if let (Some(a), true) = (&mut l.auth, l.auth_selected) {
                    l.auth_next = Some(a.step(&auth_keys)?);
                }
                self.send_login_request(now)
            }
            (_, true) => {
                if r.nsg != Stage::FullFeaturePhase {
                    return Err(ProtocolError::BadLoginResponse("NSG not requested").into());
                }
                if !l.replies.is_empty() {
                    return Err(ProtocolError::BadLoginResponse(
                        "target left the login with keys unanswered",
                    )
                    .into());
                }
                st.params.finalize();
                st.tsih = r.tsih;
                let ffp = FfpParams {
                    digests: st.params.digests(),
                    max_recv_data_segment_len: st.cfg.opts.max_recv_data_segment_length,
                    max_send_data_segment_len: st.params.max_send_data_segment_length,
                    rdma_extensions: false,
                };
                self.conn.login_succeeded(now, ffp)?;
                self.st.phase = Phase::FullFeature;
                self.st.events.push_back(Event::LoggedIn);
                tracing::debug!(tsih = r.tsih, params = ?self.st.params, "iscsi initiator: logged in");
                Ok(())
            }
            (_, false) => self.send_login_request(now),
        }
    }
}

/// One portal of a discovered target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPortal {
    /// The address as sent (`host:port`, `[v6]:port` or just `host`).
    pub address: String,
    /// Target portal group tag.
    pub tpgt: Option<u16>,
}

impl TargetPortal {
    /// The address as a [`Portal`] (port 3260 when none is given).
    pub fn portal(&self) -> Result<Portal, crate::url::UrlError> {
        Portal::parse(&self.address).map(|(p, _)| p)
    }
}

/// A target listed by SendTargets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTarget {
    /// TargetName.
    pub name: String,
    /// Its portals (none means "the portal you asked").
    pub portals: Vec<TargetPortal>,
}

/// Parses a SendTargets response text (`TargetName=` then its `TargetAddress=`es).
pub fn parse_send_targets(data: &[u8]) -> Result<Vec<DiscoveredTarget>, ProtocolError> {
    let pairs = text::parse_with(data, &["TargetName", "TargetAddress"])
        .map_err(|e| ProtocolError::BadText(e.to_string()))?;
    let mut out: Vec<DiscoveredTarget> = Vec::new();
    for (k, v) in pairs {
        match k {
            "TargetName" => out.push(DiscoveredTarget {
                name: v.to_owned(),
                portals: Vec::new(),
            }),
            "TargetAddress" => {
                let t = out.last_mut().ok_or_else(|| {
                    ProtocolError::BadText("TargetAddress before TargetName".to_owned())
                })?;
                let (address, tpgt) = match v.rsplit_once(',') {
                    Some((a, g)) => (a, keys::parse_number(g).and_then(|n| u16::try_from(n).ok())),
                    None => (v, None),
                };
                t.portals.push(TargetPortal {
                    address: address.to_owned(),
                    tpgt,
                });
            }
            _ => {}
        }
    }
    Ok(out)
}
