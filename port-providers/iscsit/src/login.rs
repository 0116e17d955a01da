//! The target's login state machine (RFC 7143 §6, §11.12, §11.13), sans-IO.
//!
//! [`TargetLogin`] takes Login Request PDUs (header and data segment) and returns
//! one [`LoginStep`] per request: a Login Response to send and, at the end, either
//! a [`LoginOutcome`] (the connection enters full feature phase) or a
//! [`LoginError`] (send the failure response, then close the connection). The
//! caller supplies StatSN/ExpCmdSN/MaxCmdSN for every response, and a
//! [`LoginHost`] for what only the provider knows: sessions and TSIHs, target
//! state, randomness. There is no socket and no clock.
//!
//! Inside, each stage is a type whose `handle(self, ..)` consumes the stage and
//! returns its legal successors only (rustls style):
//!
//! ```text
//! Start ──first text──▶ SecurityStage ──T=1──▶ OperationalStage ──T=1──▶ full feature
//!   │                        │  └──────────────────T=1, NSG=3──────────────▶ full feature
//!   └────CSG=1─────────────────────────────────▶ OperationalStage
//! ```
//!
//! What the machine does, in order, for each request:
//! - header checks: version (0x0205), then ISID, TSIH, CID and versions must not
//!   change; CSG must be the current stage (0x0200); non-Login PDUs are 0x020B;
//! - a source throttled after failed authentications ([`LoginHost::auth_throttled`])
//!   is refused (0x0201) before its first request is looked at;
//! - continuation: a request with C=1 (and T=0: both is 0x0200) is acknowledged with
//!   an empty T=0 response and its text accumulated, wherever the split falls; a
//!   response longer than 8192 bytes is sent in parts with C=1, each pulled by an
//!   empty request;
//! - each key once per login (RFC 7143 §6.3): a key sent again in a later request is
//!   0x0200, except unchanged repeats of InitiatorName, InitiatorAlias, TargetName
//!   and SessionType; a declared number out of range is 0x0200, a negotiated one is
//!   answered Reject;
//! - the first complete text: InitiatorName (0x0207 if missing), SessionType
//!   (0x0209 if unknown), TargetName for Normal sessions (0x0207 if missing, 0x0203
//!   unknown or not served on this portal group, 0x0301 offline, 0x0204 removed,
//!   0x0202 refused by the [`AccessPolicy`]), then the session: TSIH 0 is a new
//!   session or, if the host knows the (initiator, ISID, target, TPGT), a
//!   reinstatement; a non-zero TSIH must name a live session of the same nexus
//!   (0x020A) and have room for the connection (0x0206);
//! - security stage: AuthMethod chosen from the target's policy (CHAP or None; no
//!   acceptable method or skipping a required security stage is 0x0201), then the
//!   CHAP exchange of [`crate::chap`] against the one account
//!   [`IscsitConfig::chap_account`] allows for the name (its own context, proving it,
//!   or a shared account, proving nothing: [`Identity`]); a name that is not proven
//!   passes no ACL entry (0x0202); the target leaves the stage only when
//!   authentication is complete;
//! - operational stage: [`idm::keys::negotiate_all`] with the target's
//!   [`LocalConfig`]; the target declares its MaxRecvDataSegmentLength once, and when
//!   the initiator asks to leave, offers the keys it left out whose RFC default the
//!   target cannot accept, waiting for their answers before it transits;
//! - joining or replacing a session whose name was proven needs a login that proves
//!   it again (0x0201);
//! - the final response carries the new TSIH from [`LoginHost::allocate_tsih`]
//!   (0x0302 when none is left).
//!
//! Login Responses to a Normal session's first request carry TargetPortalGroupTag
//! and, if configured, TargetAlias.

#![warn(missing_docs)]

use std::collections::HashSet;

use idm::keys::{
    self, AuthMethod, Digest, KeyError, KeyId, KeyLog, LocalConfig, NegotiatedParams, Reply,
    SessionType,
};
use idm::pdu::{
    Bhs, Isid, LoginRequest, LoginResponse, LoginStatus, Opcode, Pdu, PduError, Stage, TargetSn,
    BHS_LEN,
};
use idm::text::{self, TextAccumulator, TextBuilder, TextError};

use crate::auth::Identity;
use crate::chap::{
    ChapError, ChapKeys, Entropy, EntropyError, OsEntropy, TargetChallenged, TargetChap,
};
use crate::config::{AccessPolicy, AuthPolicy, IscsitConfig, TargetState, DEFAULT_TPG_TAG};
use crate::names::{IscsiName, NameError};

/// The only iSCSI version there is (RFC 7143 §11.12.4): Version-max/min/active 0x00.
pub const ISCSI_VERSION: u8 = 0x00;
/// Largest data segment sent during login: the RFC default MaxRecvDataSegmentLength,
/// in force until the operational stage ends.
pub const LOGIN_SEGMENT_LIMIT: usize = 8192;

/// The operational-key policy of this target before any tuning: RFC defaults
/// (ERL 0, InitialR2T=Yes, ImmediateData=Yes, one connection per session, both
/// digests) with a 256 KiB receive segment and bursts up to 1 MiB (COMSTAR's cap).
pub fn default_local_config() -> LocalConfig {
    LocalConfig {
        max_recv_data_segment_length: 262_144,
        max_burst_length: 1 << 20,
        ..LocalConfig::default()
    }
}

/// Per-connection settings of a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSettings {
    /// The target's key policy (its `auth_methods` is replaced per login from the
    /// target's authentication setting).
    pub local: LocalConfig,
    /// Tag of the portal group the connection arrived on ([`DEFAULT_TPG_TAG`] for
    /// the default portal).
    pub portal_group: u16,
    /// Largest text accepted over C-bit continuations.
    pub max_text: usize,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            local: default_local_config(),
            portal_group: DEFAULT_TPG_TAG,
            max_text: text::DEFAULT_TEXT_CAP,
        }
    }
}

/// The identity of an iSCSI session: initiator, ISID, target and portal group
/// (RFC 7143 §4.4.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// InitiatorName.
    pub initiator: IscsiName,
    /// ISID.
    pub isid: Isid,
    /// TargetName (`None` for discovery sessions).
    pub target: Option<IscsiName>,
    /// Target portal group tag.
    pub portal_group: u16,
}

/// A live session as the host knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingSession {
    /// Its identity.
    pub key: SessionKey,
    /// Negotiated MaxConnections.
    pub max_connections: u16,
    /// CIDs of its connections.
    pub cids: Vec<u16>,
    /// How its leading login was authenticated: a session whose name was proven is
    /// joined or replaced only by a login that proves it again.
    pub identity: Identity,
}

/// What the login does to sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionDisposition {
    /// A new session.
    New,
    /// TSIH 0 for a nexus with a live session: once this login completes, the old
    /// session (`old_tsih`) must be closed and replaced (RFC 7143 §6.3.5).
    Reinstate {
        /// TSIH of the session to close.
        old_tsih: u16,
    },
    /// A new connection in an existing session (MC/S).
    AddConnection,
    /// The CID is in use in the session: the old connection must be closed
    /// (connection reinstatement, RFC 7143 §6.3.4).
    ReinstateConnection,
}

/// What the login asks of the port provider.
pub trait LoginHost {
    /// The live session with this TSIH.
    fn session(&self, tsih: u16) -> Option<ExistingSession>;
    /// The TSIH of a live session with this identity (for reinstatement).
    fn find_session(&self, key: &SessionKey) -> Option<u16>;
    /// A fresh, non-zero TSIH for a new session; `None` when all are in use.
    fn allocate_tsih(&mut self) -> Option<u16>;
    /// Run-time state of a configured target.
    fn target_state(&self, _target: &IscsiName) -> TargetState {
        TargetState::Online
    }
    /// Random bytes for CHAP challenges (the OS generator by default).
    fn fill_random(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        OsEntropy.fill(buf)
    }
    /// Whether the connection's source is refused after failed authentications
    /// ([`crate::auth::AuthThrottle`]). Asked before the first request is looked at and
    /// again before a CHAP response is checked, so a throttled source costs no parsing
    /// and no CHAP computation.
    fn auth_throttled(&mut self) -> bool {
        false
    }
    /// A CHAP response on this connection failed verification.
    fn auth_failed(&mut self, _failure: &AuthFailure<'_>) {}
    /// A CHAP response on this connection was verified.
    fn auth_succeeded(&mut self, _identity: Identity) {}
    /// Adjusts the settings once the first complete text names the target (`None`:
    /// discovery). The first text may come in C-bit parts that split TargetName, so the
    /// caller cannot choose them from the first PDU.
    fn login_settings(&mut self, _target: Option<&IscsiName>, _settings: &mut LoginSettings) {}
}

/// A failed CHAP verification, for the host's accounting and log (no secret in it).
#[derive(Debug, Clone, Copy)]
pub struct AuthFailure<'a> {
    /// InitiatorName claimed.
    pub initiator: &'a IscsiName,
    /// TargetName (`None`: discovery).
    pub target: Option<&'a IscsiName>,
    /// CHAP_N sent, if any.
    pub user: Option<&'a str>,
    /// What failed.
    pub error: &'a ChapError,
}

/// Everything a login step reads besides the PDU.
pub struct LoginEnv<'a> {
    /// Targets, TPGs, initiator contexts, defaults.
    pub config: &'a IscsitConfig,
    /// Who may log in to what.
    pub access: &'a dyn AccessPolicy,
    /// Sessions, TSIHs, target state, randomness.
    pub host: &'a mut dyn LoginHost,
}

struct HostEntropy<'a, 'b>(&'a mut (dyn LoginHost + 'b));

impl Entropy for HostEntropy<'_, '_> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        self.0.fill_random(buf)
    }
}

/// A login failure: one variant per reason, each mapping to one login status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The PDU does not parse (0x0200).
    #[error("malformed login PDU: {0}")]
    BadPdu(PduError),
    /// The key=value text does not parse (0x0200).
    #[error("malformed login text: {0}")]
    BadText(TextError),
    /// A key the initiator may not send here (0x0200).
    #[error("login key error: {0}")]
    BadKey(KeyError),
    /// A malformed InitiatorName (0x0200).
    #[error("invalid InitiatorName: {0}")]
    BadInitiatorName(NameError),
    /// ISID, TSIH, CID or a version changed between requests (0x0200).
    #[error("{0} changed during the login")]
    HeaderChanged(&'static str),
    /// InitiatorName, TargetName or SessionType redeclared with another value (0x0200).
    #[error("{0} changed during the login")]
    DeclarationChanged(&'static str),
    /// A request for a stage other than the current one (0x0200).
    #[error("login request for stage {got:?} while in stage {expected:?}")]
    UnexpectedStage {
        /// The CSG received.
        got: Stage,
        /// The current stage.
        expected: Stage,
    },
    /// Another violation of the login sequence (0x0200).
    #[error("login protocol violation: {0}")]
    Protocol(&'static str),
    /// The initiator left the stage without answering a key the target offered (0x0200).
    #[error("the initiator did not answer {0}, which the target offered")]
    UnansweredOffer(&'static str),
    /// The initiator refused a value the target requires (0x0200).
    #[error("the initiator refused {0}, which the target requires")]
    OfferRefused(&'static str),
    /// A request after the login ended (0x0200).
    #[error("the login is over")]
    Finished,
    /// CHAP failed (0x0201; 0x0300 when randomness failed).
    #[error("authentication failed: {0}")]
    Authentication(ChapError),
    /// No AuthMethod the target accepts was offered (0x0201).
    #[error("no acceptable AuthMethod in {0:?}")]
    AuthMethodRejected(String),
    /// The initiator tried to skip the authentication the target requires (0x0201).
    #[error("the target requires authentication")]
    AuthenticationRequired,
    /// The connection's source is throttled after failed authentications (0x0201).
    #[error("too many failed authentications from this source: login refused")]
    Throttled,
    /// The login would join or replace a session whose name was proven, without
    /// proving it (0x0201).
    #[error("session {tsih:#06x} was authenticated as {old}; a {new} login may not take it over")]
    TakeoverRefused {
        /// TSIH of the session.
        tsih: u16,
        /// How the session was authenticated.
        old: Identity,
        /// How this login was.
        new: Identity,
    },
    /// The initiator may not access the target (0x0202).
    #[error("initiator {initiator} may not access target {target}")]
    NotAuthorized {
        /// InitiatorName.
        initiator: IscsiName,
        /// TargetName.
        target: IscsiName,
    },
    /// No such target (0x0203).
    #[error("target {0:?} not found")]
    TargetNotFound(String),
    /// The target exists but is not served on this portal group (0x0203).
    #[error("target {target} is not served on target portal group {tag}")]
    NotOnThisPortal {
        /// TargetName.
        target: IscsiName,
        /// The connection's portal group tag.
        tag: u16,
    },
    /// The target is being removed (0x0204).
    #[error("target {0} is being removed")]
    TargetRemoved(IscsiName),
    /// The initiator needs a version above 0 (0x0205).
    #[error("unsupported iSCSI version range {min:#04x}..={max:#04x}")]
    UnsupportedVersion {
        /// Version-min.
        min: u8,
        /// Version-max.
        max: u8,
    },
    /// The session has no room for another connection (0x0206).
    #[error("session {tsih:#06x} already has its maximum number of connections")]
    TooManyConnections {
        /// TSIH.
        tsih: u16,
    },
    /// A key the first request must carry is missing (0x0207).
    #[error("missing {0}")]
    MissingParameter(&'static str),
    /// SessionType is neither Normal nor Discovery (0x0209).
    #[error("session type {0:?} is not supported")]
    SessionTypeNotSupported(String),
    /// A non-zero TSIH that names no session of this nexus (0x020A).
    #[error("session {0:#06x} does not exist")]
    SessionDoesNotExist(u16),
    /// A PDU other than Login Request during login (0x020B).
    #[error("{0:?} is not allowed during login")]
    InvalidDuringLogin(Opcode),
    /// A fault on the target's side (0x0300).
    #[error("target error: {0}")]
    Internal(&'static str),
    /// The target is offline (0x0301).
    #[error("target {0} is not online")]
    ServiceUnavailable(IscsiName),
    /// No TSIH left (0x0302).
    #[error("out of session identifiers")]
    OutOfResources,
}

impl From<PduError> for LoginError {
    fn from(e: PduError) -> Self {
        LoginError::BadPdu(e)
    }
}

impl From<TextError> for LoginError {
    fn from(e: TextError) -> Self {
        LoginError::BadText(e)
    }
}

impl From<KeyError> for LoginError {
    fn from(e: KeyError) -> Self {
        LoginError::BadKey(e)
    }
}

impl From<ChapError> for LoginError {
    fn from(e: ChapError) -> Self {
        LoginError::Authentication(e)
    }
}

impl LoginError {
    /// The login status (class and detail) that answers this error.
    pub fn status(&self) -> LoginStatus {
        use LoginError::*;
        match self {
            BadPdu(_)
            | BadText(_)
            | BadKey(_)
            | BadInitiatorName(_)
            | HeaderChanged(_)
            | DeclarationChanged(_)
            | UnexpectedStage { .. }
            | Protocol(_)
            | UnansweredOffer(_)
            | OfferRefused(_)
            | Finished => LoginStatus::INITIATOR_ERROR,
            Authentication(e) => e.login_status(),
            AuthMethodRejected(_) | AuthenticationRequired | Throttled | TakeoverRefused { .. } => {
                LoginStatus::AUTHENTICATION_FAILURE
            }
            NotAuthorized { .. } => LoginStatus::AUTHORIZATION_FAILURE,
            TargetNotFound(_) | NotOnThisPortal { .. } => LoginStatus::NOT_FOUND,
            TargetRemoved(_) => LoginStatus::TARGET_REMOVED,
            UnsupportedVersion { .. } => LoginStatus::UNSUPPORTED_VERSION,
            TooManyConnections { .. } => LoginStatus::TOO_MANY_CONNECTIONS,
            MissingParameter(_) => LoginStatus::MISSING_PARAMETER,
            SessionTypeNotSupported(_) => LoginStatus::SESSION_TYPE_NOT_SUPPORTED,
            SessionDoesNotExist(_) => LoginStatus::SESSION_DOES_NOT_EXIST,
            InvalidDuringLogin(_) => LoginStatus::INVALID_DURING_LOGIN,
            Internal(_) => LoginStatus::TARGET_ERROR,
            ServiceUnavailable(_) => LoginStatus::SERVICE_UNAVAILABLE,
            OutOfResources => LoginStatus::OUT_OF_RESOURCES,
        }
    }

    /// Status-Class (0x02 initiator error, 0x03 target error).
    pub fn status_class(&self) -> u8 {
        self.status().class
    }

    /// Status-Detail.
    pub fn status_detail(&self) -> u8 {
        self.status().detail
    }
}

/// A Login Response to send: header and data segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPdu {
    /// The header.
    pub header: LoginResponse,
    /// The key=value data segment.
    pub data: Vec<u8>,
}

impl LoginPdu {
    /// The pairs of the data segment.
    pub fn pairs(&self) -> Result<Vec<(&str, &str)>, TextError> {
        text::parse(&self.data)
    }
}

/// How authentication went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOutcome {
    /// The method agreed (None when the security stage was skipped).
    pub method: AuthMethod,
    /// The CHAP user the initiator authenticated as.
    pub chap_user: Option<String>,
    /// Whether the target authenticated itself too (mutual CHAP).
    pub mutual: bool,
    /// What the login established about the InitiatorName.
    pub identity: Identity,
}

/// A completed login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    /// Normal or Discovery.
    pub session_type: SessionType,
    /// InitiatorName (normalized).
    pub initiator_name: IscsiName,
    /// InitiatorAlias, if sent.
    pub initiator_alias: Option<String>,
    /// TargetName (normalized; `None` for discovery sessions).
    pub target_name: Option<IscsiName>,
    /// ISID.
    pub isid: Isid,
    /// TSIH of the session (new, or the one the connection joined).
    pub tsih: u16,
    /// CID of the connection.
    pub cid: u16,
    /// Portal group tag of the connection.
    pub portal_group: u16,
    /// New session, reinstatement or added connection.
    pub disposition: SessionDisposition,
    /// Authentication result.
    pub auth: AuthOutcome,
    /// Every negotiated parameter.
    pub params: NegotiatedParams,
    /// RDMAExtensions=Yes was agreed (switch to iSER after the final response).
    pub rdma_extensions: bool,
}

/// The result of one Login Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginStep {
    /// Send this response; more requests follow.
    Continue(LoginPdu),
    /// Send this final response; the connection is in full feature phase.
    Complete(LoginPdu, Box<LoginOutcome>),
    /// Send this failure response and close the connection.
    Fail(LoginPdu, LoginError),
}

impl LoginStep {
    /// The response to send.
    pub fn pdu(&self) -> &LoginPdu {
        match self {
            LoginStep::Continue(p) | LoginStep::Complete(p, _) | LoginStep::Fail(p, _) => p,
        }
    }
}

/// Where a login stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStage {
    /// No complete request yet.
    Start,
    /// Security negotiation.
    Security,
    /// Operational negotiation.
    Operational,
    /// Done: full feature phase.
    FullFeature,
    /// Failed: the connection must close.
    Failed,
}

/// Header fields that stay fixed for a whole login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnIds {
    isid: Isid,
    tsih: u16,
    cid: u16,
    version_max: u8,
    version_min: u8,
}

/// Session facts established by the first request, plus negotiation state.
#[derive(Debug)]
struct Ctx {
    ids: ConnIds,
    portal_group: u16,
    initiator: IscsiName,
    initiator_alias: Option<String>,
    session_type: SessionType,
    session_type_raw: String,
    target: Option<IscsiName>,
    target_alias: Option<String>,
    disposition: SessionDisposition,
    auth_required: bool,
    local: LocalConfig,
    params: NegotiatedParams,
    auth: AuthOutcome,
    sent_first: bool,
    declared_mrdsl: bool,
    mentioned: HashSet<KeyId>,
    /// Every key the initiator sent in this login (RFC 7143 §6.3: once each).
    key_log: KeyLog,
}

impl Ctx {
    fn leading(&self) -> bool {
        self.ids.tsih == 0
    }

    /// Drops the declarations an initiator may repeat (libiscsi repeats
    /// InitiatorName, InitiatorAlias, TargetName and SessionType in the operational
    /// stage), checking they did not change; records InitiatorAlias. Every other key
    /// goes into the login's key log: sent again in a later request, it is a
    /// protocol error.
    fn strip_declarations<'a>(
        &mut self,
        pairs: Vec<(&'a str, &'a str)>,
    ) -> Result<Vec<(&'a str, &'a str)>, LoginError> {
        let mut rest = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            match k {
                "InitiatorName" => {
                    if IscsiName::parse_lenient(v).ok().as_ref() != Some(&self.initiator) {
                        return Err(LoginError::DeclarationChanged("InitiatorName"));
                    }
                }
                "TargetName" => {
                    if self.session_type == SessionType::Normal
                        && IscsiName::parse_lenient(v).ok() != self.target
                    {
                        return Err(LoginError::DeclarationChanged("TargetName"));
                    }
                }
                "SessionType" => {
                    if v != self.session_type_raw {
                        return Err(LoginError::DeclarationChanged("SessionType"));
                    }
                }
                "InitiatorAlias" => {
                    if self.initiator_alias.as_deref().is_some_and(|a| a != v) {
                        return Err(LoginError::DeclarationChanged("InitiatorAlias"));
                    }
                    self.initiator_alias = Some(v.to_owned());
                    self.params.initiator_alias = Some(v.to_owned());
                }
                _ => rest.push((k, v)),
            }
        }
        self.key_log.record(rest.iter().map(|p| p.0))?;
        Ok(rest)
    }

    /// TargetPortalGroupTag and TargetAlias, once, in the response to the first
    /// complete request of a Normal session (RFC 7143 §13.9).
    fn first_declarations(&mut self, out: &mut Vec<(String, String)>) {
        if self.sent_first {
            return;
        }
        self.sent_first = true;
        if self.session_type == SessionType::Normal {
            out.push(("TargetPortalGroupTag".into(), self.portal_group.to_string()));
            if let Some(a) = &self.target_alias {
                out.push(("TargetAlias".into(), a.clone()));
            }
        }
    }

    /// Keys the target must offer because the initiator left them out and the RFC
    /// default is something the target cannot accept.
    fn needed_offers(&self) -> Vec<(KeyId, String)> {
        let l = &self.local;
        let p = &self.params;
        let mut v = Vec::new();
        let rdma = p.rdma_extensions;
        let digests = |d: &[Digest]| d.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(",");
        if !rdma && !l.header_digests.contains(&Digest::None) && !l.header_digests.is_empty() {
            v.push((KeyId::HeaderDigest, digests(l.header_digests)));
        }
        if !rdma && !l.data_digests.contains(&Digest::None) && !l.data_digests.is_empty() {
            v.push((KeyId::DataDigest, digests(l.data_digests)));
        }
        if !l.immediate_data {
            v.push((KeyId::ImmediateData, "No".into()));
        }
        if l.max_burst_length < 262_144 {
            v.push((KeyId::MaxBurstLength, l.max_burst_length.to_string()));
        }
        let fbl_irrelevant = p.initial_r2t && !(p.immediate_data && l.immediate_data);
        if l.first_burst_length < 65_536 && !fbl_irrelevant {
            v.push((KeyId::FirstBurstLength, l.first_burst_length.to_string()));
        }
        if l.default_time2wait > 2 {
            v.push((KeyId::DefaultTime2Wait, l.default_time2wait.to_string()));
        }
        if l.default_time2retain < 20 {
            v.push((KeyId::DefaultTime2Retain, l.default_time2retain.to_string()));
        }
        if rdma && l.target_recv_data_segment_length < 8192 {
            let n = l.target_recv_data_segment_length.to_string();
            v.push((KeyId::TargetRecvDataSegmentLength, n));
        }
        if rdma && l.initiator_recv_data_segment_length < 8192 {
            let n = l.initiator_recv_data_segment_length.to_string();
            v.push((KeyId::InitiatorRecvDataSegmentLength, n));
        }
        let discovery = self.session_type == SessionType::Discovery;
        v.retain(|(id, _)| {
            let def = id.def();
            let irrelevant = def.discovery_irrelevant && discovery;
            let not_here = !self.leading() && def.usage == keys::Usage::LeadingOnly;
            !(self.mentioned.contains(id) || irrelevant || not_here)
        });
        v
    }

    /// Whether the target can accept every operational default, so that the
    /// initiator may go from the security stage straight to full feature phase.
    fn defaults_acceptable(&self) -> bool {
        self.needed_offers().is_empty() && self.local.max_recv_data_segment_length >= 8192
    }
}

/// What a stage wants sent.
#[derive(Debug, Default)]
struct StageReply {
    keys: Vec<(String, String)>,
    transit: Option<Stage>,
}

fn push_answers(out: &mut Vec<(String, String)>, answers: Vec<(&str, Reply)>) {
    for (k, r) in answers {
        if let Some(v) = r.as_str() {
            out.push((k.to_owned(), v.to_owned()));
        }
    }
}

/// CHAP progress inside the security stage.
#[derive(Debug)]
enum AuthPhase {
    /// No AuthMethod agreed yet.
    Undecided,
    /// AuthMethod=None agreed.
    NoneAgreed,
    /// AuthMethod=CHAP agreed, waiting for CHAP_A.
    Chap(TargetChap),
    /// Challenge sent, waiting for CHAP_N/CHAP_R.
    Challenged(TargetChallenged),
    /// CHAP succeeded.
    Authenticated,
}

/// The security negotiation stage.
#[derive(Debug)]
struct SecurityStage {
    ctx: Ctx,
    auth: AuthPhase,
}

/// Successors of the security stage.
enum SecurityNext {
    Stay(SecurityStage),
    Operational(OperationalStage),
    FullFeature(Ctx),
}

impl SecurityStage {
    fn handle(
        mut self,
        env: &mut LoginEnv<'_>,
        req: &LoginRequest,
        pairs: Vec<(&str, &str)>,
    ) -> Result<(SecurityNext, StageReply), LoginError> {
        let pairs = self.ctx.strip_declarations(pairs)?;
        let (chap, other): (Vec<_>, Vec<_>) = pairs
            .into_iter()
            .partition(|(k, _)| ChapKeys::is_chap_key(k));
        let offered_auth = other.iter().find(|(k, _)| *k == "AuthMethod").map(|p| p.1);
        if offered_auth.is_some() && !matches!(self.auth, AuthPhase::Undecided) {
            return Err(LoginError::Protocol("AuthMethod offered again"));
        }
        let leading = self.ctx.leading();
        let answers = keys::negotiate_all(
            &self.ctx.local,
            Stage::SecurityNegotiation,
            leading,
            &mut self.ctx.params,
            &other,
        )?;
        if let Some(offer) = offered_auth {
            let rejected = answers
                .iter()
                .any(|(k, r)| *k == "AuthMethod" && *r == Reply::Reject);
            if rejected {
                return Err(LoginError::AuthMethodRejected(offer.to_owned()));
            }
            self.ctx.auth.method = self.ctx.params.auth_method;
            self.auth = match self.ctx.params.auth_method {
                AuthMethod::Chap => AuthPhase::Chap(TargetChap::new()),
                _ => AuthPhase::NoneAgreed,
            };
        }
        let mut out = StageReply::default();
        push_answers(&mut out.keys, answers);

        let chap_keys = ChapKeys::from_pairs(&chap);
        self.auth = match self.auth {
            AuthPhase::Chap(st) if !chap_keys.is_empty() => {
                let mut entropy = HostEntropy(&mut *env.host);
                let (next, reply) = st.challenge(&chap_keys, &mut entropy)?;
                out.keys
                    .extend(reply.into_iter().map(|(k, v)| (k.to_owned(), v)));
                AuthPhase::Challenged(next)
            }
            AuthPhase::Challenged(st) if !chap_keys.is_empty() || req.transit => {
                if env.host.auth_throttled() {
                    return Err(LoginError::Throttled);
                }
                let target_cfg = self.ctx.target.as_ref().and_then(|t| env.config.target(t));
                let (accounts, identity) =
                    match env.config.chap_account(&self.ctx.initiator, target_cfg) {
                        Some((a, id)) => (vec![a], id),
                        None => (Vec::new(), Identity::SharedSecret),
                    };
                let own = env.config.mutual_account(target_cfg);
                let ok = match st.verify(&chap_keys, &accounts, own) {
                    Ok(ok) => ok,
                    Err(error) => {
                        if !matches!(error, ChapError::Entropy(_)) {
                            env.host.auth_failed(&AuthFailure {
                                initiator: &self.ctx.initiator,
                                target: self.ctx.target.as_ref(),
                                user: chap_keys.n,
                                error: &error,
                            });
                        }
                        return Err(error.into());
                    }
                };
                env.host.auth_succeeded(identity);
                if let Some(t) = target_cfg {
                    // ACL entries name initiators: they admit only a proven name.
                    if !env.access.may_access_as(&self.ctx.initiator, identity, t) {
                        return Err(LoginError::NotAuthorized {
                            initiator: self.ctx.initiator.clone(),
                            target: t.name.clone(),
                        });
                    }
                }
                out.keys
                    .extend(ok.reply.into_iter().map(|(k, v)| (k.to_owned(), v)));
                self.ctx.auth.chap_user = Some(ok.user);
                self.ctx.auth.mutual = ok.mutual;
                self.ctx.auth.identity = identity;
                AuthPhase::Authenticated
            }
            phase => {
                // CHAP keys sent optimistically with an AuthMethod offer that just
                // resolved to None are moot; anywhere else they are out of place.
                let moot = offered_auth.is_some() && matches!(phase, AuthPhase::NoneAgreed);
                if let Some(key) = chap.first().map(|p| p.0).filter(|_| !moot) {
                    let key = ["CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"]
                        .into_iter()
                        .find(|k| *k == key)
                        .unwrap_or("CHAP_A");
                    return Err(ChapError::Unexpected(key).into());
                }
                phase
            }
        };
        self.ctx.first_declarations(&mut out.keys);

        let done = match self.auth {
            AuthPhase::NoneAgreed | AuthPhase::Authenticated => true,
            AuthPhase::Undecided => !self.ctx.auth_required,
            AuthPhase::Chap(_) | AuthPhase::Challenged(_) => false,
        };
        if !req.transit {
            return Ok((SecurityNext::Stay(self), out));
        }
        if !done {
            if matches!(self.auth, AuthPhase::Undecided) {
                return Err(LoginError::AuthenticationRequired);
            }
            // The exchange is still running: answer without transit (RFC 7143 §6.6).
            return Ok((SecurityNext::Stay(self), out));
        }
        if req.nsg == Stage::FullFeaturePhase && self.ctx.defaults_acceptable() {
            out.transit = Some(Stage::FullFeaturePhase);
            Ok((SecurityNext::FullFeature(self.ctx), out))
        } else {
            // Straight to full feature phase would force defaults the target cannot
            // take: go through the operational stage (NSG lowered).
            out.transit = Some(Stage::OperationalNegotiation);
            Ok((
                SecurityNext::Operational(OperationalStage::new(self.ctx)),
                out,
            ))
        }
    }
}

/// The operational negotiation stage.
#[derive(Debug)]
struct OperationalStage {
    ctx: Ctx,
    /// Keys the target offered and the initiator has not answered yet.
    offered: Vec<(KeyId, String)>,
    /// Whether the target already made its offers.
    offers_made: bool,
}

/// Successors of the operational stage.
enum OperationalNext {
    Stay(OperationalStage),
    FullFeature(Ctx),
}

impl OperationalStage {
    fn new(ctx: Ctx) -> Self {
        Self {
            ctx,
            offered: Vec::new(),
            offers_made: false,
        }
    }

    fn handle(
        mut self,
        req: &LoginRequest,
        pairs: Vec<(&str, &str)>,
    ) -> Result<(OperationalNext, StageReply), LoginError> {
        let pairs = self.ctx.strip_declarations(pairs)?;
        let mut offers = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            if let Some(pos) = self.offered.iter().position(|(id, _)| id.name() == k) {
                let (id, ours) = self.offered.remove(pos);
                match keys::resolve_answer(id, &ours, v)? {
                    Some(value) => self.ctx.params.apply(id, &value),
                    None => return Err(LoginError::OfferRefused(id.name())),
                }
                continue;
            }
            if let Some(def) = keys::lookup(k) {
                self.ctx.mentioned.insert(def.id);
            }
            offers.push((k, v));
        }
        let leading = self.ctx.leading();
        let answers = keys::negotiate_all(
            &self.ctx.local,
            Stage::OperationalNegotiation,
            leading,
            &mut self.ctx.params,
            &offers,
        )?;
        let mut out = StageReply::default();
        push_answers(&mut out.keys, answers);
        self.ctx.first_declarations(&mut out.keys);
        if !self.ctx.declared_mrdsl && !self.ctx.params.rdma_extensions {
            let ours = self.ctx.local.max_recv_data_segment_length;
            out.keys
                .push(("MaxRecvDataSegmentLength".into(), ours.to_string()));
            self.ctx.params.max_recv_data_segment_length = ours;
            self.ctx.declared_mrdsl = true;
        }
        if !req.transit {
            return Ok((OperationalNext::Stay(self), out));
        }
        if let Some((id, _)) = self.offered.first() {
            return Err(LoginError::UnansweredOffer(id.name()));
        }
        if !self.offers_made {
            self.offers_made = true;
            let needed = self.ctx.needed_offers();
            if !needed.is_empty() {
                for (id, v) in &needed {
                    out.keys.push((id.name().to_owned(), v.clone()));
                }
                self.offered = needed;
                return Ok((OperationalNext::Stay(self), out));
            }
        }
        // A digest the target requires (its list has no None) may have been refused with
        // Reject, which leaves the default (None): such a session is not allowed.
        // (iSER has no digests.)
        let got = self.ctx.params.digests();
        let local = &self.ctx.local;
        let rdma = self.ctx.params.rdma_extensions;
        if !rdma && !got.header && !local.header_digests.contains(&Digest::None) {
            return Err(LoginError::OfferRefused("HeaderDigest"));
        }
        if !rdma && !got.data && !local.data_digests.contains(&Digest::None) {
            return Err(LoginError::OfferRefused("DataDigest"));
        }
        self.ctx.params.finalize();
        out.transit = Some(Stage::FullFeaturePhase);
        Ok((OperationalNext::FullFeature(self.ctx), out))
    }
}

/// Builds the session context from the first complete request.
fn begin(
    env: &mut LoginEnv<'_>,
    settings: &mut LoginSettings,
    ids: ConnIds,
    pairs: &[(&str, &str)],
) -> Result<Ctx, LoginError> {
    let find = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|p| p.1);
    let initiator_raw =
        find("InitiatorName").ok_or(LoginError::MissingParameter("InitiatorName"))?;
    let initiator =
        IscsiName::parse_lenient(initiator_raw).map_err(LoginError::BadInitiatorName)?;
    let session_type_raw = find("SessionType").unwrap_or("Normal");
    let session_type = match session_type_raw {
        "Normal" => SessionType::Normal,
        "Discovery" => SessionType::Discovery,
        other => return Err(LoginError::SessionTypeNotSupported(other.to_owned())),
    };
    let named_target = match session_type {
        SessionType::Discovery => None,
        SessionType::Normal => find("TargetName").and_then(|v| IscsiName::parse_lenient(v).ok()),
    };
    env.host.login_settings(named_target.as_ref(), settings);
    let portal_group = settings.portal_group;
    let (target, target_cfg) = match session_type {
        SessionType::Discovery => (None, None),
        SessionType::Normal => {
            let raw = find("TargetName").ok_or(LoginError::MissingParameter("TargetName"))?;
            let not_found = || LoginError::TargetNotFound(raw.to_owned());
            let name = IscsiName::parse_lenient(raw).map_err(|_| not_found())?;
            let cfg = env.config.target(&name).ok_or_else(not_found)?;
            match env.host.target_state(&name) {
                TargetState::Online => {}
                TargetState::Offline => return Err(LoginError::ServiceUnavailable(name)),
                TargetState::Removed => return Err(LoginError::TargetRemoved(name)),
            }
            if !cfg.serves_tag(portal_group) {
                return Err(LoginError::NotOnThisPortal {
                    target: name,
                    tag: portal_group,
                });
            }
            if !env.access.may_access(&initiator, cfg) {
                return Err(LoginError::NotAuthorized {
                    initiator,
                    target: name,
                });
            }
            (Some(name), Some(cfg))
        }
    };
    let key = SessionKey {
        initiator: initiator.clone(),
        isid: ids.isid,
        target: target.clone(),
        portal_group,
    };
    let disposition = if ids.tsih == 0 {
        match env.host.find_session(&key) {
            Some(old_tsih) => SessionDisposition::Reinstate { old_tsih },
            None => SessionDisposition::New,
        }
    } else {
        match env.host.session(ids.tsih) {
            Some(s) if s.key == key => {
                if s.cids.contains(&ids.cid) {
                    SessionDisposition::ReinstateConnection
                } else if s.cids.len() >= usize::from(s.max_connections) {
                    return Err(LoginError::TooManyConnections { tsih: ids.tsih });
                } else {
                    SessionDisposition::AddConnection
                }
            }
            _ => return Err(LoginError::SessionDoesNotExist(ids.tsih)),
        }
    };
    let policy = env.config.effective_auth(target_cfg);
    let mut local = settings.local.clone();
    local.auth_methods = match policy {
        AuthPolicy::None => &[AuthMethod::None],
        AuthPolicy::Chap => &[AuthMethod::Chap],
    };
    let initiator_alias = find("InitiatorAlias").map(str::to_owned);
    let params = NegotiatedParams {
        session_type,
        initiator_name: Some(initiator.to_string()),
        initiator_alias: initiator_alias.clone(),
        target_name: target.as_ref().map(|t| t.to_string()),
        ..NegotiatedParams::default()
    };
    Ok(Ctx {
        ids,
        portal_group,
        target_alias: target_cfg
            .and_then(|t| env.config.alias_of(t))
            .map(str::to_owned),
        initiator,
        initiator_alias,
        session_type,
        session_type_raw: session_type_raw.to_owned(),
        target,
        disposition,
        auth_required: policy == AuthPolicy::Chap,
        local,
        params,
        auth: AuthOutcome {
            method: AuthMethod::None,
            chap_user: None,
            mutual: false,
            identity: Identity::Trusted,
        },
        sent_first: false,
        declared_mrdsl: false,
        mentioned: HashSet::new(),
        key_log: KeyLog::new(),
    })
}

/// Where the state machine is.
#[derive(Debug)]
enum State {
    Start,
    Security(Box<SecurityStage>),
    Operational(Box<OperationalStage>),
    Finished,
    Failed,
}

/// The rest of a response that did not fit in one PDU.
#[derive(Debug)]
struct PendingTx {
    rest: Vec<u8>,
    csg: Stage,
    transit: Option<Stage>,
    final_tsih: u16,
    outcome: Option<Box<LoginOutcome>>,
}

/// One response to emit.
struct Emit {
    csg: Stage,
    transit: Option<Stage>,
    cont: bool,
    tsih: u16,
    data: Vec<u8>,
    outcome: Option<Box<LoginOutcome>>,
}

/// The target side of one connection's login.
///
/// ```
/// use idm::pdu::{Isid, LoginRequest, LoginStatus, Stage, TargetSn};
/// use idm::text::TextBuilder;
/// use iscsit::config::{AclPolicy, IscsitConfig};
/// use iscsit::login::*;
///
/// struct Host(u16);
/// impl LoginHost for Host {
///     fn session(&self, _tsih: u16) -> Option<ExistingSession> { None }
///     fn find_session(&self, _key: &SessionKey) -> Option<u16> { None }
///     fn allocate_tsih(&mut self) -> Option<u16> { self.0 += 1; Some(self.0) }
/// }
///
/// let config = IscsitConfig::default();
/// let mut host = Host(0);
/// let mut login = TargetLogin::new(LoginSettings::default());
///
/// // A discovery login in one round trip (what open-iscsi sends).
/// let req = LoginRequest {
///     transit: true, cont: false,
///     csg: Stage::SecurityNegotiation, nsg: Stage::FullFeaturePhase,
///     version_max: 0, version_min: 0, isid: Isid([0x80, 0, 0, 0, 0, 1]),
///     tsih: 0, itt: 1, cid: 0, cmd_sn: 1, exp_stat_sn: 0,
/// };
/// let mut text = TextBuilder::new();
/// text.push("InitiatorName", "iqn.2004-10.com.ubuntu:01:abc")?
///     .push("SessionType", "Discovery")?
///     .push("AuthMethod", "None")?;
/// let mut env = LoginEnv { config: &config, access: &AclPolicy, host: &mut host };
/// let sn = TargetSn { stat_sn: 1, exp_cmd_sn: 1, max_cmd_sn: 1 };
/// match login.handle(&mut env, &req, text.as_bytes(), sn) {
///     LoginStep::Complete(pdu, outcome) => {
///         assert_eq!(pdu.header.status, LoginStatus::SUCCESS);
///         assert_eq!(pdu.data, b"AuthMethod=None\0");
///         assert_eq!(outcome.tsih, 1);
///         // send `pdu`, then run the full feature phase with `outcome.params`
///     }
///     LoginStep::Continue(_pdu) => { /* send it, wait for the next request */ }
///     LoginStep::Fail(_pdu, _err) => { /* send it, close the connection */ }
/// }
/// # Ok::<(), idm::text::TextError>(())
/// ```
#[derive(Debug)]
pub struct TargetLogin {
    settings: LoginSettings,
    state: State,
    ids: Option<ConnIds>,
    /// CSG of the first request (C-bit parts of the first text must agree).
    start_csg: Option<Stage>,
    acc: TextAccumulator,
    tx: Option<PendingTx>,
}

impl TargetLogin {
    /// A login on a new connection.
    pub fn new(settings: LoginSettings) -> Self {
        let acc = TextAccumulator::new(settings.max_text);
        Self {
            settings,
            state: State::Start,
            ids: None,
            start_csg: None,
            acc,
            tx: None,
        }
    }

    /// Where the login stands.
    pub fn stage(&self) -> LoginStage {
        if let Some(t) = self.tx.as_ref().filter(|t| t.outcome.is_some()) {
            // The final response is still being sent in parts.
            return match t.csg {
                Stage::OperationalNegotiation => LoginStage::Operational,
                _ => LoginStage::Security,
            };
        }
        match self.state {
            State::Start => LoginStage::Start,
            State::Security(_) => LoginStage::Security,
            State::Operational(_) => LoginStage::Operational,
            State::Finished => LoginStage::FullFeature,
            State::Failed => LoginStage::Failed,
        }
    }

    /// Handles a received PDU: Login Requests go to [`TargetLogin::handle`]; any
    /// other opcode fails the login with 0x020B.
    pub fn handle_pdu(
        &mut self,
        env: &mut LoginEnv<'_>,
        pdu: &Pdu,
        data: &[u8],
        sn: TargetSn,
    ) -> LoginStep {
        match pdu {
            Pdu::LoginRequest(req) => self.handle(env, req, data, sn),
            other => {
                let ids = self.ids;
                let isid = ids.map(|i| i.isid).unwrap_or_default();
                let tsih = ids.map(|i| i.tsih).unwrap_or(0);
                let err = LoginError::InvalidDuringLogin(other.opcode());
                self.fail(isid, tsih, other.itt(), self.current_stage(), err, sn)
            }
        }
    }

    /// Handles a raw 48-byte header and its data segment; a header that does not
    /// parse as a Login Request fails the login with 0x0200 (0x020B for another
    /// valid opcode).
    pub fn handle_bytes(
        &mut self,
        env: &mut LoginEnv<'_>,
        header: &[u8; BHS_LEN],
        data: &[u8],
        sn: TargetSn,
    ) -> LoginStep {
        let parsed = Bhs::new_checked(&header[..]).and_then(|b| Pdu::parse(&b));
        match parsed {
            Ok(pdu) => self.handle_pdu(env, &pdu, data, sn),
            Err(e) => {
                let mut isid = [0u8; 6];
                isid.copy_from_slice(&header[8..14]);
                let tsih = u16::from_be_bytes([header[14], header[15]]);
                let itt = u32::from_be_bytes([header[16], header[17], header[18], header[19]]);
                let csg = Stage::from_bits(header[1] >> 2)
                    .filter(|s| *s != Stage::FullFeaturePhase)
                    .unwrap_or(Stage::SecurityNegotiation);
                self.fail(Isid(isid), tsih, itt, csg, LoginError::BadPdu(e), sn)
            }
        }
    }

    /// Handles one Login Request.
    pub fn handle(
        &mut self,
        env: &mut LoginEnv<'_>,
        req: &LoginRequest,
        data: &[u8],
        sn: TargetSn,
    ) -> LoginStep {
        match self.step(env, req, data) {
            Ok(e) => {
                let header = LoginResponse {
                    transit: e.transit.is_some(),
                    cont: e.cont,
                    csg: e.csg,
                    nsg: e.transit.unwrap_or(e.csg),
                    version_max: ISCSI_VERSION,
                    version_active: ISCSI_VERSION,
                    isid: req.isid,
                    tsih: e.tsih,
                    itt: req.itt,
                    sn,
                    status: LoginStatus::SUCCESS,
                };
                let pdu = LoginPdu {
                    header,
                    data: e.data,
                };
                match e.outcome {
                    Some(outcome) => LoginStep::Complete(pdu, outcome),
                    None => LoginStep::Continue(pdu),
                }
            }
            Err(err) => self.fail(req.isid, req.tsih, req.itt, req.csg, err, sn),
        }
    }

    fn current_stage(&self) -> Stage {
        match self.state {
            State::Operational(_) => Stage::OperationalNegotiation,
            _ => Stage::SecurityNegotiation,
        }
    }

    fn fail(
        &mut self,
        isid: Isid,
        tsih: u16,
        itt: u32,
        csg: Stage,
        err: LoginError,
        sn: TargetSn,
    ) -> LoginStep {
        tracing::debug!(error = %err, "iSCSI login failed");
        self.state = State::Failed;
        self.tx = None;
        self.acc.reset();
        let header = LoginResponse {
            transit: false,
            cont: false,
            csg,
            nsg: csg,
            version_max: ISCSI_VERSION,
            version_active: ISCSI_VERSION,
            isid,
            tsih,
            itt,
            sn,
            status: err.status(),
        };
        LoginStep::Fail(
            LoginPdu {
                header,
                data: Vec::new(),
            },
            err,
        )
    }

    fn check_ids(&mut self, req: &LoginRequest) -> Result<ConnIds, LoginError> {
        let ids = ConnIds {
            isid: req.isid,
            tsih: req.tsih,
            cid: req.cid,
            version_max: req.version_max,
            version_min: req.version_min,
        };
        let Some(first) = self.ids else {
            if req.version_min > ISCSI_VERSION {
                return Err(LoginError::UnsupportedVersion {
                    min: req.version_min,
                    max: req.version_max,
                });
            }
            if req.version_max < req.version_min {
                return Err(LoginError::Protocol("Version-max is below Version-min"));
            }
            self.ids = Some(ids);
            return Ok(ids);
        };
        let changed = if first.isid != ids.isid {
            Some("ISID")
        } else if first.tsih != ids.tsih {
            Some("TSIH")
        } else if first.cid != ids.cid {
            Some("CID")
        } else if first.version_max != ids.version_max || first.version_min != ids.version_min {
            Some("Version")
        } else {
            None
        };
        match changed {
            Some(field) => Err(LoginError::HeaderChanged(field)),
            None => Ok(first),
        }
    }

    fn step(
        &mut self,
        env: &mut LoginEnv<'_>,
        req: &LoginRequest,
        data: &[u8],
    ) -> Result<Emit, LoginError> {
        if matches!(self.state, State::Failed) {
            return Err(LoginError::Finished);
        }
        if self.ids.is_none() && env.host.auth_throttled() {
            return Err(LoginError::Throttled);
        }
        if req.transit && req.cont {
            // RFC 7143 §11.12.2: a request with C=1 must have T=0.
            return Err(LoginError::Protocol("T and C both set"));
        }
        let ids = self.check_ids(req)?;
        if let Some(pending) = self.tx.take() {
            if req.transit || req.cont || !data.is_empty() || req.csg != pending.csg {
                return Err(LoginError::Protocol(
                    "expected an empty Login Request to continue the response",
                ));
            }
            return Ok(self.emit(pending, ids.tsih));
        }
        let expected = match &self.state {
            State::Start => *self.start_csg.get_or_insert(req.csg),
            State::Security(_) => Stage::SecurityNegotiation,
            State::Operational(_) => Stage::OperationalNegotiation,
            State::Finished | State::Failed => return Err(LoginError::Finished),
        };
        if req.csg != expected {
            return Err(LoginError::UnexpectedStage {
                got: req.csg,
                expected,
            });
        }
        let text = match self.acc.push(data, req.cont)? {
            None => {
                // C=1: acknowledge with an empty response (RFC 7143 §11.12.2).
                return Ok(Emit {
                    csg: req.csg,
                    transit: None,
                    cont: false,
                    tsih: ids.tsih,
                    data: Vec::new(),
                    outcome: None,
                });
            }
            Some(t) => t.to_vec(),
        };
        let pairs = text::parse(&text)?;
        let state = std::mem::replace(&mut self.state, State::Failed);
        let (csg, reply, finished) = match state {
            State::Start => {
                let ctx = begin(env, &mut self.settings, ids, &pairs)?;
                match req.csg {
                    Stage::SecurityNegotiation => {
                        let st = SecurityStage {
                            ctx,
                            auth: AuthPhase::Undecided,
                        };
                        self.security(env, st, req, pairs)?
                    }
                    _ => {
                        if ctx.auth_required {
                            return Err(LoginError::AuthenticationRequired);
                        }
                        self.operational(OperationalStage::new(ctx), req, pairs)?
                    }
                }
            }
            State::Security(st) => self.security(env, *st, req, pairs)?,
            State::Operational(st) => self.operational(*st, req, pairs)?,
            State::Finished | State::Failed => return Err(LoginError::Finished),
        };
        let mut b = TextBuilder::new();
        for (k, v) in &reply.keys {
            b.push(k, v)
                .map_err(|_| LoginError::Internal("response key does not encode"))?;
        }
        let (final_tsih, outcome) = match finished {
            Some(ctx) => {
                let outcome = finish(env, ctx)?;
                (outcome.tsih, Some(Box::new(outcome)))
            }
            None => (ids.tsih, None),
        };
        let pending = PendingTx {
            rest: b.into_bytes(),
            csg,
            transit: reply.transit,
            final_tsih,
            outcome,
        };
        Ok(self.emit(pending, ids.tsih))
    }

    fn security(
        &mut self,
        env: &mut LoginEnv<'_>,
        st: SecurityStage,
        req: &LoginRequest,
        pairs: Vec<(&str, &str)>,
    ) -> Result<(Stage, StageReply, Option<Ctx>), LoginError> {
        let (next, reply) = st.handle(env, req, pairs)?;
        let finished = match next {
            SecurityNext::Stay(s) => {
                self.state = State::Security(Box::new(s));
                None
            }
            SecurityNext::Operational(o) => {
                self.state = State::Operational(Box::new(o));
                None
            }
            SecurityNext::FullFeature(ctx) => {
                self.state = State::Finished;
                Some(ctx)
            }
        };
        Ok((Stage::SecurityNegotiation, reply, finished))
    }

    fn operational(
        &mut self,
        st: OperationalStage,
        req: &LoginRequest,
        pairs: Vec<(&str, &str)>,
    ) -> Result<(Stage, StageReply, Option<Ctx>), LoginError> {
        let (next, reply) = st.handle(req, pairs)?;
        let finished = match next {
            OperationalNext::Stay(s) => {
                self.state = State::Operational(Box::new(s));
                None
            }
            OperationalNext::FullFeature(ctx) => {
                self.state = State::Finished;
                Some(ctx)
            }
        };
        Ok((Stage::OperationalNegotiation, reply, finished))
    }

    /// Emits the next part of `p`: all of it, or [`LOGIN_SEGMENT_LIMIT`] bytes with
    /// C=1 (the rest waits for an empty request).
    fn emit(&mut self, mut p: PendingTx, request_tsih: u16) -> Emit {
        if p.rest.len() > LOGIN_SEGMENT_LIMIT {
            let tail = p.rest.split_off(LOGIN_SEGMENT_LIMIT);
            let data = std::mem::replace(&mut p.rest, tail);
            let csg = p.csg;
            self.tx = Some(p);
            return Emit {
                csg,
                transit: None,
                cont: true,
                tsih: request_tsih,
                data,
                outcome: None,
            };
        }
        Emit {
            csg: p.csg,
            transit: p.transit,
            cont: false,
            tsih: if p.outcome.is_some() {
                p.final_tsih
            } else {
                request_tsih
            },
            data: p.rest,
            outcome: p.outcome,
        }
    }
}

/// Ends a successful login: allocates the TSIH of a new session.
fn finish(env: &mut LoginEnv<'_>, mut ctx: Ctx) -> Result<LoginOutcome, LoginError> {
    let existing = match ctx.disposition {
        SessionDisposition::Reinstate { old_tsih } => Some(old_tsih),
        SessionDisposition::AddConnection | SessionDisposition::ReinstateConnection => {
            Some(ctx.ids.tsih)
        }
        SessionDisposition::New => None,
    };
    if let Some((tsih, old)) = existing.and_then(|t| Some((t, env.host.session(t)?))) {
        let new = ctx.auth.identity;
        if !new.may_take_over(old.identity) {
            return Err(LoginError::TakeoverRefused {
                tsih,
                old: old.identity,
                new,
            });
        }
    }
    let tsih = match ctx.disposition {
        SessionDisposition::New | SessionDisposition::Reinstate { .. } => {
            match env.host.allocate_tsih() {
                Some(0) => return Err(LoginError::Internal("host allocated TSIH 0")),
                Some(t) => t,
                None => return Err(LoginError::OutOfResources),
            }
        }
        SessionDisposition::AddConnection | SessionDisposition::ReinstateConnection => ctx.ids.tsih,
    };
    ctx.params.finalize();
    ctx.params.auth_method = ctx.auth.method;
    Ok(LoginOutcome {
        session_type: ctx.session_type,
        initiator_name: ctx.initiator,
        initiator_alias: ctx.initiator_alias,
        target_name: ctx.target,
        isid: ctx.ids.isid,
        tsih,
        cid: ctx.ids.cid,
        portal_group: ctx.portal_group,
        disposition: ctx.disposition,
        auth: ctx.auth,
        rdma_extensions: ctx.params.rdma_extensions,
        params: ctx.params,
    })
}

#[cfg(test)]
mod tests;
