//! Login and text keys: the key table (RFC 7143 §13, iSER RFC 7145 §6.3) and the
//! pure negotiation function of the responder (RFC 7143 §6.2, §5.3).
//!
//! The table is `const` data in the SPDK style: name, value type and range, the
//! negotiation rule, where the key may be used, who may send it, and its default.
//! [`negotiate`] answers one offered `key=value` from the target's
//! [`LocalConfig`]; [`negotiate_all`] answers a whole text in dependency order and
//! records outcomes in [`NegotiatedParams`].

use std::collections::HashSet;
use std::fmt;

use crate::pdu::{Digests, LoginStatus, RejectReason, Stage};
use crate::text::{is_text_value, DEFAULT_TEXT_CAP};

/// Every key this implementation knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum KeyId {
    HeaderDigest,
    DataDigest,
    MaxConnections,
    SendTargets,
    TargetName,
    InitiatorName,
    TargetAlias,
    InitiatorAlias,
    TargetAddress,
    TargetPortalGroupTag,
    InitialR2T,
    ImmediateData,
    MaxRecvDataSegmentLength,
    MaxBurstLength,
    FirstBurstLength,
    DefaultTime2Wait,
    DefaultTime2Retain,
    MaxOutstandingR2T,
    DataPDUInOrder,
    DataSequenceInOrder,
    ErrorRecoveryLevel,
    SessionType,
    AuthMethod,
    OFMarker,
    IFMarker,
    OFMarkInt,
    IFMarkInt,
    TaskReporting,
    IscsiProtocolLevel,
    RDMAExtensions,
    TargetRecvDataSegmentLength,
    InitiatorRecvDataSegmentLength,
    MaxOutstandingUnexpectedPDUs,
    MaxAHSLength,
    TaggedBufferForSolicitedDataOnly,
    IserHelloRequired,
    ChapA,
    ChapI,
    ChapC,
    ChapN,
    ChapR,
}

/// The type and legal values of a key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// Decimal or hex number in `min..=max`.
    Numeric {
        /// Smallest legal value.
        min: u64,
        /// Largest legal value.
        max: u64,
    },
    /// `Yes` or `No`.
    Boolean,
    /// Comma-separated list; the values this implementation knows.
    List(&'static [&'static str]),
    /// One of a fixed set of values.
    Enum(&'static [&'static str]),
    /// An iSCSI name (iqn., eui., naa.).
    IscsiName,
    /// A UTF-8 local name (aliases).
    LocalName,
    /// A text value (TargetAddress, SendTargets).
    Text,
    /// A numeric range `a~b` (obsolete marker intervals).
    NumericRange,
    /// A value the authentication layer interprets (CHAP).
    Auth,
}

/// How an offer and the local value combine (RFC 7143 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The smaller of the two numbers.
    Minimum,
    /// The larger of the two numbers.
    Maximum,
    /// The smaller, where 0 means "no limit" (MaxOutstandingUnexpectedPDUs).
    MinimumOrZero,
    /// Boolean AND.
    And,
    /// Boolean OR.
    Or,
    /// The first value of the offered list the responder supports.
    ListFirstMatch,
    /// Declared by the sender, no answer.
    Declarative,
    /// Left to the authentication exchange (CHAP_*).
    Authentication,
    /// Obsolete in RFC 7143 (§13.26); answered `No` or `Reject`.
    Obsolete,
}

/// When a key may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Security negotiation stage only.
    Security,
    /// Any login stage (names and session type in the first request).
    Declaration,
    /// Anywhere: login stages and full feature phase (aliases, TargetAddress).
    Anywhere,
    /// Operational stage of the leading connection only ("LO").
    LeadingOnly,
    /// Operational stage only ("IO").
    LoginOnly,
    /// Operational stage and full feature phase ("ALL").
    Operational,
    /// Full feature phase only ("FFPO", SendTargets).
    FullFeatureOnly,
}

/// Who may send a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Senders {
    /// Initiator only.
    Initiator,
    /// Target only.
    Target,
    /// Both.
    Both,
}

/// What a negotiated value applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Session-wide (SW).
    Session,
    /// Connection only (CO).
    Connection,
}

/// A key's default value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// No default (names, declarations).
    None,
    /// A number.
    Number(u64),
    /// A boolean.
    Bool(bool),
    /// A text.
    Text(&'static str),
}

/// One row of the key table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDef {
    /// Identifier.
    pub id: KeyId,
    /// Name on the wire.
    pub name: &'static str,
    /// Value type.
    pub ty: ValueType,
    /// Negotiation rule.
    pub rule: Rule,
    /// Default.
    pub default: DefaultValue,
    /// When it may be sent.
    pub usage: Usage,
    /// Who may send it.
    pub senders: Senders,
    /// Session or connection.
    pub scope: Scope,
    /// Irrelevant in discovery sessions.
    pub discovery_irrelevant: bool,
    /// iSER key: irrelevant unless RDMAExtensions=Yes.
    pub iser: bool,
}

const MAX_24: u64 = (1 << 24) - 1;
const DIGESTS: &[&str] = &["CRC32C", "None"];
const AUTH_METHODS: &[&str] = &["None", "CHAP", "SRP", "KRB5", "SPKM1", "SPKM2"];
const TASK_REPORTING: &[&str] = &["RFC3720", "ResponseFence", "FastAbort"];
const SESSION_TYPES: &[&str] = &["Discovery", "Normal"];

#[allow(clippy::too_many_arguments)] // one table row per call
const fn key(
    id: KeyId,
    name: &'static str,
    ty: ValueType,
    rule: Rule,
    default: DefaultValue,
    usage: Usage,
    senders: Senders,
    scope: Scope,
) -> KeyDef {
    KeyDef {
        id,
        name,
        ty,
        rule,
        default,
        usage,
        senders,
        scope,
        discovery_irrelevant: false,
        iser: false,
    }
}

const fn disc(mut d: KeyDef) -> KeyDef {
    d.discovery_irrelevant = true;
    d
}

const fn iser(mut d: KeyDef) -> KeyDef {
    d.iser = true;
    d
}

const fn num(min: u64, max: u64) -> ValueType {
    ValueType::Numeric { min, max }
}

use DefaultValue as D;
use KeyId as K;
use Rule as R;
use Scope::{Connection as CO, Session as SW};
use Senders::{Both, Initiator as Ini, Target as Tgt};
use Usage as U;
use ValueType as T;

/// The key table, in [`KeyId`] order.
#[rustfmt::skip]
pub const KEYS: &[KeyDef] = &[
    key(K::HeaderDigest, "HeaderDigest", T::List(DIGESTS), R::ListFirstMatch, D::Text("None"), U::LoginOnly, Both, CO),
    key(K::DataDigest, "DataDigest", T::List(DIGESTS), R::ListFirstMatch, D::Text("None"), U::LoginOnly, Both, CO),
    disc(key(K::MaxConnections, "MaxConnections", num(1, 65535), R::Minimum, D::Number(1), U::LeadingOnly, Both, SW)),
    key(K::SendTargets, "SendTargets", T::Text, R::Declarative, D::None, U::FullFeatureOnly, Ini, SW),
    key(K::TargetName, "TargetName", T::IscsiName, R::Declarative, D::None, U::Declaration, Both, SW),
    key(K::InitiatorName, "InitiatorName", T::IscsiName, R::Declarative, D::None, U::Declaration, Ini, SW),
    key(K::TargetAlias, "TargetAlias", T::LocalName, R::Declarative, D::None, U::Anywhere, Tgt, SW),
    key(K::InitiatorAlias, "InitiatorAlias", T::LocalName, R::Declarative, D::None, U::Anywhere, Ini, SW),
    key(K::TargetAddress, "TargetAddress", T::Text, R::Declarative, D::None, U::Anywhere, Tgt, SW),
    key(K::TargetPortalGroupTag, "TargetPortalGroupTag", num(0, 65535), R::Declarative, D::None, U::Declaration, Tgt, SW),
    disc(key(K::InitialR2T, "InitialR2T", T::Boolean, R::Or, D::Bool(true), U::LeadingOnly, Both, SW)),
    disc(key(K::ImmediateData, "ImmediateData", T::Boolean, R::And, D::Bool(true), U::LeadingOnly, Both, SW)),
    key(K::MaxRecvDataSegmentLength, "MaxRecvDataSegmentLength", num(512, MAX_24), R::Declarative, D::Number(8192), U::Operational, Both, CO),
    disc(key(K::MaxBurstLength, "MaxBurstLength", num(512, MAX_24), R::Minimum, D::Number(262_144), U::LeadingOnly, Both, SW)),
    disc(key(K::FirstBurstLength, "FirstBurstLength", num(512, MAX_24), R::Minimum, D::Number(65_536), U::LeadingOnly, Both, SW)),
    key(K::DefaultTime2Wait, "DefaultTime2Wait", num(0, 3600), R::Maximum, D::Number(2), U::LeadingOnly, Both, SW),
    key(K::DefaultTime2Retain, "DefaultTime2Retain", num(0, 3600), R::Minimum, D::Number(20), U::LeadingOnly, Both, SW),
    disc(key(K::MaxOutstandingR2T, "MaxOutstandingR2T", num(1, 65535), R::Minimum, D::Number(1), U::LeadingOnly, Both, SW)),
    disc(key(K::DataPDUInOrder, "DataPDUInOrder", T::Boolean, R::Or, D::Bool(true), U::LeadingOnly, Both, SW)),
    disc(key(K::DataSequenceInOrder, "DataSequenceInOrder", T::Boolean, R::Or, D::Bool(true), U::LeadingOnly, Both, SW)),
    key(K::ErrorRecoveryLevel, "ErrorRecoveryLevel", num(0, 2), R::Minimum, D::Number(0), U::LeadingOnly, Both, SW),
    key(K::SessionType, "SessionType", T::Enum(SESSION_TYPES), R::Declarative, D::Text("Normal"), U::Declaration, Ini, SW),
    key(K::AuthMethod, "AuthMethod", T::List(AUTH_METHODS), R::ListFirstMatch, D::Text("None"), U::Security, Both, CO),
    key(K::OFMarker, "OFMarker", T::Boolean, R::Obsolete, D::Bool(false), U::LoginOnly, Both, CO),
    key(K::IFMarker, "IFMarker", T::Boolean, R::Obsolete, D::Bool(false), U::LoginOnly, Both, CO),
    key(K::OFMarkInt, "OFMarkInt", T::NumericRange, R::Obsolete, D::Number(2048), U::LoginOnly, Both, CO),
    key(K::IFMarkInt, "IFMarkInt", T::NumericRange, R::Obsolete, D::Number(2048), U::LoginOnly, Both, CO),
    disc(key(K::TaskReporting, "TaskReporting", T::List(TASK_REPORTING), R::ListFirstMatch, D::Text("RFC3720"), U::LeadingOnly, Both, SW)),
    key(K::IscsiProtocolLevel, "iSCSIProtocolLevel", num(0, 31), R::Minimum, D::Number(1), U::LeadingOnly, Both, SW),
    key(K::RDMAExtensions, "RDMAExtensions", T::Boolean, R::And, D::Bool(false), U::LeadingOnly, Both, SW),
    iser(key(K::TargetRecvDataSegmentLength, "TargetRecvDataSegmentLength", num(512, MAX_24), R::Minimum, D::Number(8192), U::LoginOnly, Both, CO)),
    iser(key(K::InitiatorRecvDataSegmentLength, "InitiatorRecvDataSegmentLength", num(512, MAX_24), R::Minimum, D::Number(8192), U::LoginOnly, Both, CO)),
    iser(key(K::MaxOutstandingUnexpectedPDUs, "MaxOutstandingUnexpectedPDUs", num(2, u32::MAX as u64), R::MinimumOrZero, D::Number(0), U::LoginOnly, Both, CO)),
    iser(key(K::MaxAHSLength, "MaxAHSLength", num(2, 65535), R::Minimum, D::Number(256), U::LeadingOnly, Both, SW)),
    iser(key(K::TaggedBufferForSolicitedDataOnly, "TaggedBufferForSolicitedDataOnly", T::Boolean, R::Or, D::Bool(false), U::LeadingOnly, Both, SW)),
    iser(key(K::IserHelloRequired, "iSERHelloRequired", T::Boolean, R::Or, D::Bool(false), U::LeadingOnly, Both, SW)),
    key(K::ChapA, "CHAP_A", T::Auth, R::Authentication, D::None, U::Security, Both, CO),
    key(K::ChapI, "CHAP_I", T::Auth, R::Authentication, D::None, U::Security, Both, CO),
    key(K::ChapC, "CHAP_C", T::Auth, R::Authentication, D::None, U::Security, Both, CO),
    key(K::ChapN, "CHAP_N", T::Auth, R::Authentication, D::None, U::Security, Both, CO),
    key(K::ChapR, "CHAP_R", T::Auth, R::Authentication, D::None, U::Security, Both, CO),
];

impl KeyId {
    /// The table row of this key.
    pub fn def(self) -> &'static KeyDef {
        match KEYS.get(self as usize) {
            Some(d) if d.id == self => d,
            // Unreachable while the table is in enum order (a test checks it).
            _ => KEYS.iter().find(|d| d.id == self).unwrap_or(&KEYS[0]),
        }
    }

    /// The key's name on the wire.
    pub fn name(self) -> &'static str {
        self.def().name
    }
}

/// Finds a key by its wire name (case-sensitive, as RFC 7143 requires).
pub fn lookup(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|d| d.name == name)
}

/// True for vendor-private keys (`X-...`, `X#...`), which are answered NotUnderstood
/// unless a caller handles them first.
pub fn is_private(name: &str) -> bool {
    name.starts_with("X-") || name.starts_with("X#")
}

/// True if `v` is a plausible iSCSI name: `iqn.`, `eui.` or `naa.` prefix,
/// at most 223 bytes, no spaces or control characters (RFC 7143 §4.2.7).
pub fn is_iscsi_name(v: &str) -> bool {
    let lower = v.get(..4).map(str::to_ascii_lowercase);
    matches!(lower.as_deref(), Some("iqn." | "eui." | "naa."))
        && v.len() <= 223
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
}

/// Parses a `numerical-value`: decimal, or hex with `0x`/`0X`.
pub fn parse_number(v: &str) -> Option<u64> {
    if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Parses `Yes` / `No`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

/// True for the constants that are answers, never offers.
pub fn is_answer_constant(v: &str) -> bool {
    matches!(v, "Reject" | "Irrelevant" | "NotUnderstood")
}

/// HeaderDigest / DataDigest value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Digest {
    /// No digest.
    #[default]
    None,
    /// CRC32C.
    Crc32c,
}

impl Digest {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Digest::None => "None",
            Digest::Crc32c => "CRC32C",
        }
    }

    /// Parses a wire name.
    pub fn parse(v: &str) -> Option<Self> {
        match v {
            "None" => Some(Digest::None),
            "CRC32C" => Some(Digest::Crc32c),
            _ => None,
        }
    }
}

/// AuthMethod value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AuthMethod {
    /// No authentication.
    #[default]
    None,
    /// CHAP (RFC 1994 with MD5).
    Chap,
    /// SRP.
    Srp,
    /// Kerberos V5.
    Krb5,
    /// SPKM1.
    Spkm1,
    /// SPKM2.
    Spkm2,
}

impl AuthMethod {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "None",
            AuthMethod::Chap => "CHAP",
            AuthMethod::Srp => "SRP",
            AuthMethod::Krb5 => "KRB5",
            AuthMethod::Spkm1 => "SPKM1",
            AuthMethod::Spkm2 => "SPKM2",
        }
    }

    /// Parses a wire name.
    pub fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "None" => AuthMethod::None,
            "CHAP" => AuthMethod::Chap,
            "SRP" => AuthMethod::Srp,
            "KRB5" => AuthMethod::Krb5,
            "SPKM1" => AuthMethod::Spkm1,
            "SPKM2" => AuthMethod::Spkm2,
            _ => return None,
        })
    }
}

/// TaskReporting value (RFC 7143 §13.23).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TaskReporting {
    /// RFC 3720 semantics.
    #[default]
    Rfc3720,
    /// Response fence semantics.
    ResponseFence,
    /// Response fence plus fast abort.
    FastAbort,
}

impl TaskReporting {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskReporting::Rfc3720 => "RFC3720",
            TaskReporting::ResponseFence => "ResponseFence",
            TaskReporting::FastAbort => "FastAbort",
        }
    }

    /// Parses a wire name.
    pub fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "RFC3720" => TaskReporting::Rfc3720,
            "ResponseFence" => TaskReporting::ResponseFence,
            "FastAbort" => TaskReporting::FastAbort,
            _ => return None,
        })
    }
}

/// SessionType value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionType {
    /// Discovery session (SendTargets only).
    Discovery,
    /// Normal session.
    #[default]
    Normal,
}

/// What the responder (normally the target) accepts or prefers for each key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// Header digests accepted.
    pub header_digests: &'static [Digest],
    /// Data digests accepted.
    pub data_digests: &'static [Digest],
    /// Authentication methods accepted.
    pub auth_methods: &'static [AuthMethod],
    /// TaskReporting values accepted.
    pub task_reporting: &'static [TaskReporting],
    /// Largest MaxConnections.
    pub max_connections: u16,
    /// Require R2T for the first burst (OR: `true` forces Yes).
    pub initial_r2t: bool,
    /// Accept immediate data (AND: `false` forces No).
    pub immediate_data: bool,
    /// Our declared MaxRecvDataSegmentLength.
    pub max_recv_data_segment_length: u32,
    /// Largest MaxBurstLength.
    pub max_burst_length: u32,
    /// Largest FirstBurstLength.
    pub first_burst_length: u32,
    /// Smallest DefaultTime2Wait (Maximum rule).
    pub default_time2wait: u16,
    /// Largest DefaultTime2Retain.
    pub default_time2retain: u16,
    /// Largest MaxOutstandingR2T.
    pub max_outstanding_r2t: u16,
    /// Require in-order Data PDUs (OR).
    pub data_pdu_in_order: bool,
    /// Require in-order data sequences (OR).
    pub data_sequence_in_order: bool,
    /// Highest ErrorRecoveryLevel supported.
    pub error_recovery_level: u8,
    /// Highest iSCSIProtocolLevel supported.
    pub iscsi_protocol_level: u8,
    /// Accept iSER (RDMAExtensions=Yes).
    pub rdma_extensions: bool,
    /// Largest TargetRecvDataSegmentLength (iSER).
    pub target_recv_data_segment_length: u32,
    /// Largest InitiatorRecvDataSegmentLength (iSER).
    pub initiator_recv_data_segment_length: u32,
    /// MaxOutstandingUnexpectedPDUs we can take (0 = no limit).
    pub max_outstanding_unexpected_pdus: u32,
    /// Largest MaxAHSLength.
    pub max_ahs_length: u16,
    /// TaggedBufferForSolicitedDataOnly wanted (OR).
    pub tagged_buffer_for_solicited_data_only: bool,
    /// iSERHelloRequired wanted (OR).
    pub iser_hello_required: bool,
}

impl Default for LocalConfig {
    /// Accepts every RFC default and both digests; ERL 0; no iSER; AuthMethod None.
    fn default() -> Self {
        Self {
            header_digests: &[Digest::Crc32c, Digest::None],
            data_digests: &[Digest::Crc32c, Digest::None],
            auth_methods: &[AuthMethod::None],
            task_reporting: &[TaskReporting::Rfc3720],
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_recv_data_segment_length: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            iscsi_protocol_level: 1,
            rdma_extensions: false,
            target_recv_data_segment_length: 8192,
            initiator_recv_data_segment_length: 8192,
            max_outstanding_unexpected_pdus: 0,
            max_ahs_length: 256,
            tagged_buffer_for_solicited_data_only: false,
            iser_hello_required: false,
        }
    }
}

impl LocalConfig {
    fn number(&self, id: KeyId) -> Option<u64> {
        Some(match id {
            K::MaxConnections => self.max_connections.into(),
            K::MaxRecvDataSegmentLength => self.max_recv_data_segment_length.into(),
            K::MaxBurstLength => self.max_burst_length.into(),
            K::FirstBurstLength => self.first_burst_length.into(),
            K::DefaultTime2Wait => self.default_time2wait.into(),
            K::DefaultTime2Retain => self.default_time2retain.into(),
            K::MaxOutstandingR2T => self.max_outstanding_r2t.into(),
            K::ErrorRecoveryLevel => self.error_recovery_level.into(),
            K::IscsiProtocolLevel => self.iscsi_protocol_level.into(),
            K::TargetRecvDataSegmentLength => self.target_recv_data_segment_length.into(),
            K::InitiatorRecvDataSegmentLength => self.initiator_recv_data_segment_length.into(),
            K::MaxOutstandingUnexpectedPDUs => self.max_outstanding_unexpected_pdus.into(),
            K::MaxAHSLength => self.max_ahs_length.into(),
            _ => return None,
        })
    }

    fn boolean(&self, id: KeyId) -> Option<bool> {
        Some(match id {
            K::InitialR2T => self.initial_r2t,
            K::ImmediateData => self.immediate_data,
            K::DataPDUInOrder => self.data_pdu_in_order,
            K::DataSequenceInOrder => self.data_sequence_in_order,
            K::RDMAExtensions => self.rdma_extensions,
            K::TaggedBufferForSolicitedDataOnly => self.tagged_buffer_for_solicited_data_only,
            K::IserHelloRequired => self.iser_hello_required,
            _ => return None,
        })
    }

    /// Whether the list value `v` of key `id` is acceptable here.
    fn accepts(&self, id: KeyId, v: &str, rdma: bool) -> bool {
        match id {
            // iSER moves data with RDMA: digests must be None (RFC 7145 §6.3).
            K::HeaderDigest | K::DataDigest if rdma => v == "None",
            K::HeaderDigest => Digest::parse(v).is_some_and(|d| self.header_digests.contains(&d)),
            K::DataDigest => Digest::parse(v).is_some_and(|d| self.data_digests.contains(&d)),
            K::AuthMethod => AuthMethod::parse(v).is_some_and(|a| self.auth_methods.contains(&a)),
            K::TaskReporting => {
                TaskReporting::parse(v).is_some_and(|t| self.task_reporting.contains(&t))
            }
            _ => false,
        }
    }
}

/// A negotiated or declared value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A number.
    Number(u64),
    /// A boolean.
    Bool(bool),
    /// A text (list choice, name, alias...).
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Bool(b) => f.write_str(yes_no(*b)),
            Value::Text(t) => f.write_str(t),
        }
    }
}

/// The responder's answer to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send `key=<value>`.
    Value(String),
    /// Send `key=Reject`: the offer is unacceptable or malformed.
    Reject,
    /// Send `key=Irrelevant`: the key does not apply to this session.
    Irrelevant,
    /// Send `key=NotUnderstood`: unknown key.
    NotUnderstood,
    /// Nothing to send (declarations, authentication keys).
    None,
}

impl Reply {
    /// The value to send, if anything is sent.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Value(v) => Some(v),
            Reply::Reject => Some("Reject"),
            Reply::Irrelevant => Some("Irrelevant"),
            Reply::NotUnderstood => Some("NotUnderstood"),
            Reply::None => None,
        }
    }
}

/// The result of answering one offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiation {
    /// The key, if known.
    pub key: Option<KeyId>,
    /// What to answer.
    pub reply: Reply,
    /// The outcome (the value now in force), if the negotiation produced one.
    pub agreed: Option<Value>,
}

impl Negotiation {
    fn reply(key: Option<KeyId>, reply: Reply) -> Self {
        Self {
            key,
            reply,
            agreed: None,
        }
    }

    fn agreed(key: KeyId, reply: Reply, agreed: Value) -> Self {
        Self {
            key: Some(key),
            reply,
            agreed: Some(agreed),
        }
    }
}

/// Offers that break the protocol rather than just being refused; a target fails
/// the login (or rejects the Text request) instead of answering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key the initiator must not send (e.g. TargetPortalGroupTag).
    #[error("{0} may not be sent by the initiator")]
    WrongSender(&'static str),
    /// A key outside the stage where it is allowed.
    #[error("{key} is not allowed in stage {stage:?}")]
    WrongStage {
        /// The key.
        key: &'static str,
        /// The stage it arrived in.
        stage: Stage,
    },
    /// A leading-only key on a non-leading connection.
    #[error("{0} may only be negotiated on the leading connection")]
    NotLeading(&'static str),
    /// An answer constant (`Reject`, `Irrelevant`, `NotUnderstood`) sent as an offer.
    #[error("{0} carries an answer constant where an offer was expected")]
    AnswerAsOffer(String),
    /// An answer that the negotiation rule does not allow.
    #[error("answer {answer:?} to {key} is not allowed by the negotiation rule")]
    BadAnswer {
        /// The key.
        key: &'static str,
        /// The answer received.
        answer: String,
    },
    /// A declaration (no answer expected) whose number is outside the key's range: it
    /// cannot be refused with `Reject`, and going on with the default would use a limit
    /// the peer did not declare.
    #[error("{key}={value} is outside the legal range {min}..={max}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The value received.
        value: String,
        /// Smallest legal value.
        min: u64,
        /// Largest legal value.
        max: u64,
    },
    /// A key sent again in a later request of the same login (RFC 7143 §6.3: a
    /// parameter is declared or negotiated at most once per login).
    #[error("{0} was already declared or negotiated in this login")]
    Renegotiated(String),
    /// More distinct keys in one login than [`MAX_LOGIN_KEY_BYTES`] of names.
    #[error("more than {MAX_LOGIN_KEY_BYTES} bytes of distinct key names in one login")]
    TooManyKeys,
}

impl KeyError {
    /// The login status that answers this error during login (initiator error).
    pub fn login_status(&self) -> LoginStatus {
        LoginStatus::INITIATOR_ERROR
    }

    /// The Reject reason that answers this error in a Text request.
    pub fn reject_reason(&self) -> RejectReason {
        RejectReason::ProtocolError
    }
}

/// Where the offer arrives: what decides legality and relevance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegContext {
    /// Current stage (full feature phase for Text requests).
    pub stage: Stage,
    /// The connection is the leading one (first of a new session).
    pub leading: bool,
    /// Session type declared so far.
    pub session_type: SessionType,
    /// RDMAExtensions=Yes agreed (or being agreed in this request).
    pub rdma_extensions: bool,
    /// InitialR2T outcome so far.
    pub initial_r2t: bool,
    /// ImmediateData outcome so far.
    pub immediate_data: bool,
}

impl NegContext {
    /// A context at `stage` that takes session facts from `params`.
    pub fn new(stage: Stage, leading: bool, params: &NegotiatedParams) -> Self {
        Self {
            stage,
            leading,
            session_type: params.session_type,
            rdma_extensions: params.rdma_extensions,
            initial_r2t: params.initial_r2t,
            immediate_data: params.immediate_data,
        }
    }
}

fn check_usage(def: &KeyDef, ctx: &NegContext) -> Result<(), KeyError> {
    use Stage::*;
    let ok = match def.usage {
        U::Security => ctx.stage == SecurityNegotiation,
        U::Declaration => ctx.stage != FullFeaturePhase,
        U::Anywhere => true,
        U::LeadingOnly | U::LoginOnly => ctx.stage == OperationalNegotiation,
        U::Operational => ctx.stage != SecurityNegotiation,
        U::FullFeatureOnly => ctx.stage == FullFeaturePhase,
    };
    if !ok {
        return Err(KeyError::WrongStage {
            key: def.name,
            stage: ctx.stage,
        });
    }
    if def.usage == U::LeadingOnly && !ctx.leading {
        return Err(KeyError::NotLeading(def.name));
    }
    Ok(())
}

/// Answers one offered `key=value` as the target (RFC 7143 §6.2).
///
/// Unknown and private keys get `NotUnderstood`; malformed or out-of-range values
/// and lists with no acceptable entry get `Reject`; keys that do not apply get
/// `Irrelevant`. Offers that break the protocol are errors.
pub fn negotiate(
    local: &LocalConfig,
    ctx: &NegContext,
    key: &str,
    value: &str,
) -> Result<Negotiation, KeyError> {
    let Some(def) = lookup(key) else {
        return Ok(Negotiation::reply(None, Reply::NotUnderstood));
    };
    let id = def.id;
    if is_answer_constant(value) {
        return Err(KeyError::AnswerAsOffer(def.name.to_owned()));
    }
    if def.senders == Senders::Target {
        return Err(KeyError::WrongSender(def.name));
    }
    check_usage(def, ctx)?;
    if def.iser && !ctx.rdma_extensions {
        return Ok(Negotiation::reply(Some(id), Reply::Irrelevant));
    }
    if def.discovery_irrelevant && ctx.session_type == SessionType::Discovery {
        return Ok(Negotiation::reply(Some(id), Reply::Irrelevant));
    }
    if id == K::FirstBurstLength && ctx.initial_r2t && !ctx.immediate_data {
        return Ok(Negotiation::reply(Some(id), Reply::Irrelevant));
    }
    let reject = Ok(Negotiation::reply(Some(id), Reply::Reject));
    match def.rule {
        R::Minimum | R::Maximum | R::MinimumOrZero => {
            let T::Numeric { min, max } = def.ty else {
                return reject;
            };
            let Some(offered) = parse_number(value) else {
                return reject;
            };
            let zero_ok = def.rule == R::MinimumOrZero && offered == 0;
            if !zero_ok && !(min..=max).contains(&offered) {
                return reject;
            }
            let ours = local.number(id).unwrap_or(offered);
            let result = match def.rule {
                R::Maximum => offered.max(ours),
                R::MinimumOrZero if offered == 0 => ours,
                R::MinimumOrZero if ours == 0 => offered,
                _ => offered.min(ours),
            };
            Ok(Negotiation::agreed(
                id,
                Reply::Value(result.to_string()),
                Value::Number(result),
            ))
        }
        R::And | R::Or => {
            let Some(offered) = parse_bool(value) else {
                return reject;
            };
            let ours = local.boolean(id).unwrap_or(offered);
            let result = if def.rule == R::And {
                offered && ours
            } else {
                offered || ours
            };
            Ok(Negotiation::agreed(
                id,
                Reply::Value(yes_no(result).to_owned()),
                Value::Bool(result),
            ))
        }
        R::ListFirstMatch => {
            // Unknown values are ignored (§6.2.1); the first acceptable one wins.
            let choice = value
                .split(',')
                .filter(|v| is_text_value(v))
                .find(|v| local.accepts(id, v, ctx.rdma_extensions));
            match choice {
                Some(v) => Ok(Negotiation::agreed(
                    id,
                    Reply::Value(v.to_owned()),
                    Value::Text(v.to_owned()),
                )),
                None => reject,
            }
        }
        R::Declarative => {
            let agreed = match def.ty {
                T::Numeric { min, max } => match parse_number(value) {
                    Some(n) if (min..=max).contains(&n) => Value::Number(n),
                    _ => {
                        return Err(KeyError::OutOfRange {
                            key: def.name,
                            value: value.chars().take(32).collect(),
                            min,
                            max,
                        })
                    }
                },
                T::Enum(allowed) if allowed.contains(&value) => Value::Text(value.to_owned()),
                T::IscsiName if is_iscsi_name(value) => Value::Text(value.to_owned()),
                T::LocalName | T::Text => Value::Text(value.to_owned()),
                _ => return reject,
            };
            Ok(Negotiation::agreed(id, Reply::None, agreed))
        }
        R::Authentication => Ok(Negotiation::agreed(
            id,
            Reply::None,
            Value::Text(value.to_owned()),
        )),
        R::Obsolete => {
            // RFC 7143 §13.26: MarkInt keys MUST get Reject; markers SHOULD get Reject
            // and MAY get No. We answer No to a well-formed marker offer, which both
            // RFC 3720 and RFC 7143 peers accept.
            match (def.ty, parse_bool(value)) {
                (T::Boolean, Some(_)) => Ok(Negotiation::agreed(
                    id,
                    Reply::Value("No".to_owned()),
                    Value::Bool(false),
                )),
                _ => reject,
            }
        }
    }
}

/// Answers every pair of one request in dependency order (SessionType and
/// RDMAExtensions, then InitialR2T and ImmediateData, then the rest), records the
/// outcomes in `params` and returns the answers in request order (keys with
/// [`Reply::None`] are left out).
pub fn negotiate_all<'a>(
    local: &LocalConfig,
    stage: Stage,
    leading: bool,
    params: &mut NegotiatedParams,
    offers: &[(&'a str, &'a str)],
) -> Result<Vec<(&'a str, Reply)>, KeyError> {
    const FIRST: &[&str] = &["SessionType", "RDMAExtensions"];
    const SECOND: &[&str] = &["InitialR2T", "ImmediateData"];
    let mut replies: Vec<Option<Reply>> = vec![None; offers.len()];
    for pass in 0..3 {
        let ctx = NegContext::new(stage, leading, params);
        for (slot, &(k, v)) in replies.iter_mut().zip(offers) {
            let in_pass = match pass {
                0 => FIRST.contains(&k),
                1 => SECOND.contains(&k),
                _ => !FIRST.contains(&k) && !SECOND.contains(&k),
            };
            if !in_pass {
                continue;
            }
            let n = negotiate(local, &ctx, k, v)?;
            if let (Some(id), Some(value)) = (n.key, &n.agreed) {
                params.apply(id, value);
            }
            *slot = Some(n.reply);
        }
    }
    params.finalize();
    Ok(offers
        .iter()
        .zip(replies)
        .filter_map(|(&(k, _), r)| match r {
            Some(Reply::None) | None => None,
            Some(r) => Some((k, r)),
        })
        .collect())
}

/// Most bytes of distinct key names one login may carry (the keys of a login are
/// remembered to detect renegotiation; a peer cannot make the log grow past this).
pub const MAX_LOGIN_KEY_BYTES: usize = DEFAULT_TEXT_CAP;

/// The keys a peer has sent so far in one login: RFC 7143 §6.3 lets a key be declared
/// or negotiated once per login (the exceptions, such as the declarations some
/// initiators repeat, are the caller's to drop first).
#[derive(Debug, Clone, Default)]
pub struct KeyLog {
    seen: HashSet<String>,
    bytes: usize,
}

impl KeyLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the keys of one whole request text (one text's own duplicates are the
    /// parser's to catch). A key the log holds already is [`KeyError::Renegotiated`];
    /// over [`MAX_LOGIN_KEY_BYTES`] of names is [`KeyError::TooManyKeys`]. Nothing is
    /// recorded when an error is returned.
    pub fn record<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>) -> Result<(), KeyError> {
        let keys: Vec<&str> = keys.into_iter().collect();
        if let Some(k) = keys.iter().find(|k| self.seen.contains(**k)) {
            return Err(KeyError::Renegotiated((*k).to_owned()));
        }
        let added: usize = keys.iter().map(|k| k.len()).sum();
        if self.bytes + added > MAX_LOGIN_KEY_BYTES {
            return Err(KeyError::TooManyKeys);
        }
        self.bytes += added;
        self.seen.extend(keys.into_iter().map(str::to_owned));
        Ok(())
    }

    /// True when `key` was recorded.
    pub fn contains(&self, key: &str) -> bool {
        self.seen.contains(key)
    }
}

/// Checks the peer's answer to a key we offered and returns the outcome: `None`
/// when the key keeps its current value (Reject, Irrelevant, NotUnderstood).
pub fn resolve_answer(id: KeyId, offered: &str, answer: &str) -> Result<Option<Value>, KeyError> {
    let def = id.def();
    if is_answer_constant(answer) {
        return Ok(None);
    }
    let bad = || KeyError::BadAnswer {
        key: def.name,
        answer: answer.to_owned(),
    };
    match def.rule {
        R::Minimum | R::Maximum | R::MinimumOrZero => {
            let (Some(o), Some(a)) = (parse_number(offered), parse_number(answer)) else {
                return Err(bad());
            };
            let ok = match def.rule {
                R::Minimum => a <= o,
                R::Maximum => a >= o,
                _ => o == 0 || (a != 0 && a <= o),
            };
            if let (true, T::Numeric { min, max }) = (ok, def.ty) {
                if (min..=max).contains(&a) || (def.rule == R::MinimumOrZero && a == 0) {
                    return Ok(Some(Value::Number(a)));
                }
            }
            Err(bad())
        }
        R::And | R::Or | R::Obsolete => {
            let (Some(o), Some(a)) = (parse_bool(offered), parse_bool(answer)) else {
                return Err(bad());
            };
            let forced = match def.rule {
                R::And => !o && a,
                R::Or => o && !a,
                _ => false,
            };
            if forced {
                return Err(bad());
            }
            Ok(Some(Value::Bool(a)))
        }
        R::ListFirstMatch => {
            if offered.split(',').any(|v| v == answer) {
                Ok(Some(Value::Text(answer.to_owned())))
            } else {
                Err(bad())
            }
        }
        R::Declarative | R::Authentication => Ok(Some(match def.ty {
            T::Numeric { .. } => Value::Number(parse_number(answer).ok_or_else(bad)?),
            _ => Value::Text(answer.to_owned()),
        })),
    }
}

/// Session and connection parameters in force, starting from the RFC defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedParams {
    /// HeaderDigest.
    pub header_digest: Digest,
    /// DataDigest.
    pub data_digest: Digest,
    /// AuthMethod chosen.
    pub auth_method: AuthMethod,
    /// MaxConnections.
    pub max_connections: u16,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// ImmediateData.
    pub immediate_data: bool,
    /// Our MaxRecvDataSegmentLength (what we declared: the receive limit).
    pub max_recv_data_segment_length: u32,
    /// The peer's declared MaxRecvDataSegmentLength: the limit on what we send.
    pub max_send_data_segment_length: u32,
    /// MaxBurstLength.
    pub max_burst_length: u32,
    /// FirstBurstLength.
    pub first_burst_length: u32,
    /// DefaultTime2Wait.
    pub default_time2wait: u16,
    /// DefaultTime2Retain.
    pub default_time2retain: u16,
    /// MaxOutstandingR2T.
    pub max_outstanding_r2t: u16,
    /// DataPDUInOrder.
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder.
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel.
    pub error_recovery_level: u8,
    /// TaskReporting.
    pub task_reporting: TaskReporting,
    /// iSCSIProtocolLevel.
    pub iscsi_protocol_level: u8,
    /// SessionType.
    pub session_type: SessionType,
    /// InitiatorName.
    pub initiator_name: Option<String>,
    /// InitiatorAlias.
    pub initiator_alias: Option<String>,
    /// TargetName.
    pub target_name: Option<String>,
    /// RDMAExtensions (iSER).
    pub rdma_extensions: bool,
    /// TargetRecvDataSegmentLength (iSER).
    pub target_recv_data_segment_length: u32,
    /// InitiatorRecvDataSegmentLength (iSER).
    pub initiator_recv_data_segment_length: u32,
    /// MaxOutstandingUnexpectedPDUs (iSER, 0 = no limit).
    pub max_outstanding_unexpected_pdus: u32,
    /// MaxAHSLength (iSER).
    pub max_ahs_length: u16,
    /// TaggedBufferForSolicitedDataOnly (iSER).
    pub tagged_buffer_for_solicited_data_only: bool,
    /// iSERHelloRequired (iSER).
    pub iser_hello_required: bool,
}

impl Default for NegotiatedParams {
    fn default() -> Self {
        Self {
            header_digest: Digest::None,
            data_digest: Digest::None,
            auth_method: AuthMethod::None,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_recv_data_segment_length: 8192,
            max_send_data_segment_length: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            task_reporting: TaskReporting::Rfc3720,
            iscsi_protocol_level: 1,
            session_type: SessionType::Normal,
            initiator_name: None,
            initiator_alias: None,
            target_name: None,
            rdma_extensions: false,
            target_recv_data_segment_length: 8192,
            initiator_recv_data_segment_length: 8192,
            max_outstanding_unexpected_pdus: 0,
            max_ahs_length: 256,
            tagged_buffer_for_solicited_data_only: false,
            iser_hello_required: false,
        }
    }
}

fn clamp<N: TryFrom<u64> + Copy>(n: u64, fallback: N) -> N {
    N::try_from(n).unwrap_or(fallback)
}

impl NegotiatedParams {
    /// Params for a responder that declares `local`'s MaxRecvDataSegmentLength.
    pub fn for_local(local: &LocalConfig) -> Self {
        Self {
            max_recv_data_segment_length: local.max_recv_data_segment_length,
            ..Self::default()
        }
    }

    /// Records one outcome. Values of the wrong type are ignored. A declared
    /// MaxRecvDataSegmentLength is the peer's and sets `max_send_data_segment_length`.
    pub fn apply(&mut self, key: KeyId, value: &Value) {
        match (key, value) {
            (K::HeaderDigest, Value::Text(t)) => {
                self.header_digest = Digest::parse(t).unwrap_or(self.header_digest)
            }
            (K::DataDigest, Value::Text(t)) => {
                self.data_digest = Digest::parse(t).unwrap_or(self.data_digest)
            }
            (K::AuthMethod, Value::Text(t)) => {
                self.auth_method = AuthMethod::parse(t).unwrap_or(self.auth_method)
            }
            (K::TaskReporting, Value::Text(t)) => {
                self.task_reporting = TaskReporting::parse(t).unwrap_or(self.task_reporting)
            }
            (K::SessionType, Value::Text(t)) => {
                self.session_type = match t.as_str() {
                    "Discovery" => SessionType::Discovery,
                    _ => SessionType::Normal,
                }
            }
            (K::InitiatorName, Value::Text(t)) => self.initiator_name = Some(t.clone()),
            (K::InitiatorAlias, Value::Text(t)) => self.initiator_alias = Some(t.clone()),
            (K::TargetName, Value::Text(t)) => self.target_name = Some(t.clone()),
            (K::MaxConnections, Value::Number(n)) => {
                self.max_connections = clamp(*n, self.max_connections)
            }
            (K::MaxRecvDataSegmentLength, Value::Number(n)) => {
                self.max_send_data_segment_length = clamp(*n, self.max_send_data_segment_length)
            }
            (K::MaxBurstLength, Value::Number(n)) => {
                self.max_burst_length = clamp(*n, self.max_burst_length)
            }
            (K::FirstBurstLength, Value::Number(n)) => {
                self.first_burst_length = clamp(*n, self.first_burst_length)
            }
            (K::DefaultTime2Wait, Value::Number(n)) => {
                self.default_time2wait = clamp(*n, self.default_time2wait)
            }
            (K::DefaultTime2Retain, Value::Number(n)) => {
                self.default_time2retain = clamp(*n, self.default_time2retain)
            }
            (K::MaxOutstandingR2T, Value::Number(n)) => {
                self.max_outstanding_r2t = clamp(*n, self.max_outstanding_r2t)
            }
            (K::ErrorRecoveryLevel, Value::Number(n)) => {
                self.error_recovery_level = clamp(*n, self.error_recovery_level)
            }
            (K::IscsiProtocolLevel, Value::Number(n)) => {
                self.iscsi_protocol_level = clamp(*n, self.iscsi_protocol_level)
            }
            (K::TargetRecvDataSegmentLength, Value::Number(n)) => {
                self.target_recv_data_segment_length =
                    clamp(*n, self.target_recv_data_segment_length)
            }
            (K::InitiatorRecvDataSegmentLength, Value::Number(n)) => {
                self.initiator_recv_data_segment_length =
                    clamp(*n, self.initiator_recv_data_segment_length)
            }
            (K::MaxOutstandingUnexpectedPDUs, Value::Number(n)) => {
                self.max_outstanding_unexpected_pdus =
                    clamp(*n, self.max_outstanding_unexpected_pdus)
            }
            (K::MaxAHSLength, Value::Number(n)) => {
                self.max_ahs_length = clamp(*n, self.max_ahs_length)
            }
            (K::InitialR2T, Value::Bool(b)) => self.initial_r2t = *b,
            (K::ImmediateData, Value::Bool(b)) => self.immediate_data = *b,
            (K::DataPDUInOrder, Value::Bool(b)) => self.data_pdu_in_order = *b,
            (K::DataSequenceInOrder, Value::Bool(b)) => self.data_sequence_in_order = *b,
            (K::RDMAExtensions, Value::Bool(b)) => self.rdma_extensions = *b,
            (K::TaggedBufferForSolicitedDataOnly, Value::Bool(b)) => {
                self.tagged_buffer_for_solicited_data_only = *b
            }
            (K::IserHelloRequired, Value::Bool(b)) => self.iser_hello_required = *b,
            _ => {}
        }
    }

    /// Enforces cross-key rules after a negotiation step: FirstBurstLength never
    /// exceeds MaxBurstLength (RFC 7143 §13.14).
    pub fn finalize(&mut self) {
        self.first_burst_length = self.first_burst_length.min(self.max_burst_length);
    }

    /// The digests in force once the login completes.
    pub fn digests(&self) -> Digests {
        Digests {
            header: self.header_digest == Digest::Crc32c,
            data: self.data_digest == Digest::Crc32c,
        }
    }
}

#[cfg(test)]
mod tests;
