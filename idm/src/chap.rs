//! CHAP for iSCSI (RFC 1994 with MD5, as carried by RFC 7143 §12.1.3), both sides,
//! as type-state machines.
//!
//! ```text
//! initiator                                   target
//!   CHAP_A=<A1,A2,..>                 ──▶  TargetChap::challenge
//!                                     ◀──  CHAP_A=5 CHAP_I=<I> CHAP_C=<C>
//!   InitiatorChap::respond
//!   CHAP_N=<N> CHAP_R=<R>
//!   [CHAP_I=<I'> CHAP_C=<C'>] (mutual) ──▶  TargetChallenged::verify
//!                                     ◀──  [CHAP_N=<N'> CHAP_R=<R'>] (mutual)
//!   InitiatorResponded::verify_target
//! ```
//!
//! `R = MD5(I || secret || C)` over the one-byte identifier, the secret and the
//! decoded challenge. Binary values are sent as `0x` hex; `0x`/`0X` hex and
//! `0b`/`0B` base64 are accepted (RFC 7143 §6.1). Responses are compared in constant
//! time. A mutual challenge equal to the one we sent (a reflection) and a response
//! equal to what our own secret would give (one secret used in both directions) are
//! authentication failures, as RFC 7143 §12.1.3 requires.
//!
//! Every failure maps to login status 0x0201 (authentication failure), except an
//! entropy failure (0x0300). The wire answer to a failure carries no keys, so a
//! wrong user and a wrong secret look the same to the peer.

#![warn(missing_docs)]

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use crate::pdu::LoginStatus;
use std::fmt;

/// Shortest CHAP secret accepted: 12 bytes (96 bits), RFC 7143 §12.1.3's
/// minimum for secrets that are not random (and the limit of tgt, LIO, COMSTAR
/// and the Microsoft initiator).
pub const MIN_SECRET_LEN: usize = 12;
/// Longest CHAP secret accepted (COMSTAR's limit; a secret is a text value).
pub const MAX_SECRET_LEN: usize = 255;

/// A CHAP secret: never shown by `Debug`, compared in constant time, zeroed on drop.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Secret(Vec<u8>);

/// Why a secret was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Fewer than [`MIN_SECRET_LEN`] bytes.
    #[error("CHAP secret is {0} bytes; it must be at least 12 bytes (96 bits, RFC 7143 §12.1.3)")]
    TooShort(usize),
    /// More than [`MAX_SECRET_LEN`] bytes.
    #[error("CHAP secret is {0} bytes; it must be at most 255 bytes")]
    TooLong(usize),
    /// Contains a NUL, which cannot travel in a key=value text.
    #[error("CHAP secret contains a NUL character")]
    Nul,
}

impl Secret {
    /// A secret of 12 to 255 bytes.
    pub fn new(s: impl Into<String>) -> Result<Self, SecretError> {
        let s: String = s.into();
        let len = s.len();
        let bytes = s.into_bytes();
        let secret = Secret(bytes); // zeroed on every path out
        if len < MIN_SECRET_LEN {
            return Err(SecretError::TooShort(len));
        }
        if len > MAX_SECRET_LEN {
            return Err(SecretError::TooLong(len));
        }
        if secret.0.contains(&0) {
            return Err(SecretError::Nul);
        }
        Ok(secret)
    }

    /// The secret's bytes, for computing CHAP responses.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a secret has at least 12 bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time equality (for a given length).
    pub fn ct_eq(&self, other: &Secret) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            *b = 0;
        }
        std::hint::black_box(&mut self.0);
    }
}

impl TryFrom<String> for Secret {
    type Error = SecretError;
    fn try_from(s: String) -> Result<Self, SecretError> {
        Secret::new(s)
    }
}

impl From<Secret> for String {
    fn from(s: Secret) -> String {
        // Secrets are built from Strings, so this never loses anything.
        String::from_utf8_lossy(&s.0).into_owned()
    }
}

/// CHAP_A value of CHAP with MD5, the one algorithm RFC 1994/7143 require.
pub const CHAP_MD5: u8 = 5;
/// Bytes of challenge this implementation sends.
pub const CHALLENGE_LEN: usize = 16;
/// Largest binary length of CHAP_C and CHAP_R (RFC 7143 §12.1.3).
pub const MAX_BINARY_LEN: usize = 1024;
/// Length of an MD5 response.
pub const RESPONSE_LEN: usize = 16;

/// A source of unpredictable bytes for identifiers and challenges.
pub trait Entropy {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError>;
}

/// The operating system's generator (`getrandom`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::fill(buf).map_err(|_| EntropyError)
    }
}

/// The random number generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the random number generator failed")]
pub struct EntropyError;

/// A CHAP account: a user name and its secret, borrowed from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ChapAccount<'a> {
    /// CHAP_N.
    pub user: &'a str,
    /// Shared secret.
    pub secret: &'a Secret,
}

/// `MD5(id || secret || challenge)` (RFC 1994 §4.1).
pub fn chap_md5(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; RESPONSE_LEN] {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

/// Errors decoding a binary value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BinaryError {
    /// Neither `0x`/`0X` nor `0b`/`0B`.
    #[error("binary value lacks a 0x or 0b prefix")]
    NoPrefix,
    /// A character outside the encoding's alphabet, or bad base64 padding.
    #[error("binary value has an invalid digit")]
    BadDigit,
    /// Nothing after the prefix.
    #[error("binary value is empty")]
    Empty,
    /// Longer than [`MAX_BINARY_LEN`] bytes decoded.
    #[error("binary value is longer than 1024 bytes")]
    TooLong,
}

/// Encodes bytes as an RFC 7143 hex constant: `0x` and lower-case digits.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("0x");
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes bytes as an RFC 7143 base64 constant: `0b` and RFC 4648 base64 with padding.
pub fn encode_base64(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len().div_ceil(3) * 4);
    s.push_str("0b");
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Decodes a binary value: `0x`/`0X` hex (an odd digit count has an implied
/// leading zero, RFC 7143 §6.1) or `0b`/`0B` base64 (RFC 4648, padding optional).
pub fn decode_binary(v: &str) -> Result<Vec<u8>, BinaryError> {
    let (kind, body) = match v.get(..2) {
        Some("0x" | "0X") => (16, v.get(2..).unwrap_or("")),
        Some("0b" | "0B") => (64, v.get(2..).unwrap_or("")),
        _ => return Err(BinaryError::NoPrefix),
    };
    if body.is_empty() {
        return Err(BinaryError::Empty);
    }
    let out = if kind == 16 {
        decode_hex(body)?
    } else {
        decode_b64(body)?
    };
    if out.len() > MAX_BINARY_LEN {
        return Err(BinaryError::TooLong);
    }
    Ok(out)
}

fn hex_val(c: u8) -> Result<u8, BinaryError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(BinaryError::BadDigit),
    }
}

fn decode_hex(body: &str) -> Result<Vec<u8>, BinaryError> {
    let b = body.as_bytes();
    if b.len() > 2 * MAX_BINARY_LEN + 1 {
        return Err(BinaryError::TooLong);
    }
    let mut out = Vec::with_capacity(b.len().div_ceil(2));
    let (head, rest) = if b.len() % 2 == 1 {
        b.split_at(1)
    } else {
        (&[][..], b)
    };
    if let Some(&c) = head.first() {
        out.push(hex_val(c)?);
    }
    for pair in rest.chunks_exact(2) {
        out.push((hex_val(pair[0])? << 4) | hex_val(pair[1])?);
    }
    Ok(out)
}

fn decode_b64(body: &str) -> Result<Vec<u8>, BinaryError> {
    let b = body.as_bytes();
    if b.len() > MAX_BINARY_LEN.div_ceil(3) * 4 + 4 {
        return Err(BinaryError::TooLong);
    }
    let data = b
        .strip_suffix(b"==")
        .or_else(|| b.strip_suffix(b"="))
        .unwrap_or(b);
    if data.len() % 4 == 1 || (data.len() != b.len() && b.len() % 4 != 0) {
        return Err(BinaryError::BadDigit);
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for &c in data {
        let v = B64
            .iter()
            .position(|&a| a == c)
            .ok_or(BinaryError::BadDigit)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero in canonical encodings (RFC 4648 §3.5).
    if acc != 0 {
        return Err(BinaryError::BadDigit);
    }
    Ok(out)
}

/// The CHAP keys of one login text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChapKeys<'a> {
    /// CHAP_A.
    pub a: Option<&'a str>,
    /// CHAP_I.
    pub i: Option<&'a str>,
    /// CHAP_C.
    pub c: Option<&'a str>,
    /// CHAP_N.
    pub n: Option<&'a str>,
    /// CHAP_R.
    pub r: Option<&'a str>,
}

impl<'a> ChapKeys<'a> {
    /// Picks the CHAP keys out of parsed pairs (a key seen twice was already
    /// rejected by [`idm::text::parse`]).
    pub fn from_pairs(pairs: &[(&'a str, &'a str)]) -> Self {
        let mut k = Self::default();
        for &(key, value) in pairs {
            match key {
                "CHAP_A" => k.a = Some(value),
                "CHAP_I" => k.i = Some(value),
                "CHAP_C" => k.c = Some(value),
                "CHAP_N" => k.n = Some(value),
                "CHAP_R" => k.r = Some(value),
                _ => {}
            }
        }
        k
    }

    /// True for a CHAP_* key name.
    pub fn is_chap_key(key: &str) -> bool {
        matches!(key, "CHAP_A" | "CHAP_I" | "CHAP_C" | "CHAP_N" | "CHAP_R")
    }

    /// True when no CHAP key is present.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A CHAP failure. Every variant is an authentication failure on the wire; the
/// variants exist for the local log and never include secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChapError {
    /// CHAP_A offered no algorithm we support (we need 5, MD5).
    #[error("CHAP_A offers no supported algorithm (need 5, MD5)")]
    NoCommonAlgorithm,
    /// A key the current step needs is missing.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A key that does not belong to the current step.
    #[error("{0} was not expected at this step")]
    Unexpected(&'static str),
    /// A value that does not decode.
    #[error("{key} is malformed")]
    Malformed {
        /// The key.
        key: &'static str,
    },
    /// CHAP_N names no account this login may use.
    #[error("unknown CHAP user {0:?}")]
    UnknownUser(String),
    /// CHAP_R does not prove knowledge of the secret.
    #[error("wrong CHAP response for user {0:?}")]
    BadResponse(String),
    /// The initiator asked for mutual CHAP but the target has no identity for it.
    #[error("mutual CHAP requested but the target has no CHAP secret of its own")]
    MutualNotConfigured,
    /// The peer sent back our own challenge (reflection attack).
    #[error("the peer's CHAP challenge reflects ours")]
    ReflectedChallenge,
    /// The peer's response equals what our own secret gives: one secret is used in
    /// both directions.
    #[error("the peer's CHAP response matches our own secret")]
    SecretReused,
    /// The target's CHAP_N is not the expected one (initiator side).
    #[error("target answered as CHAP user {0:?}, not the expected one")]
    WrongTargetUser(String),
    /// The target's CHAP_R is wrong (initiator side).
    #[error("the target's CHAP response is wrong")]
    TargetResponseWrong,
    /// No randomness for a challenge.
    #[error(transparent)]
    Entropy(#[from] EntropyError),
}

impl ChapError {
    /// The login status that answers this failure.
    pub fn login_status(&self) -> LoginStatus {
        match self {
            ChapError::Entropy(_) => LoginStatus::TARGET_ERROR,
            _ => LoginStatus::AUTHENTICATION_FAILURE,
        }
    }
}

/// Keys to send, in order.
pub type ChapReply = Vec<(&'static str, String)>;

fn parse_id(v: &str) -> Result<u8, ChapError> {
    crate::keys::parse_number(v)
        .and_then(|n| u8::try_from(n).ok())
        .ok_or(ChapError::Malformed { key: "CHAP_I" })
}

fn decode(key: &'static str, v: &str) -> Result<Vec<u8>, ChapError> {
    decode_binary(v).map_err(|_| ChapError::Malformed { key })
}

fn random_challenge(entropy: &mut dyn Entropy) -> Result<(u8, [u8; CHALLENGE_LEN]), ChapError> {
    let mut buf = [0u8; CHALLENGE_LEN + 1];
    entropy.fill(&mut buf)?;
    let mut c = [0u8; CHALLENGE_LEN];
    c.copy_from_slice(&buf[1..]);
    Ok((buf[0], c))
}

/// True when `ours` CHAP_A list value contains `5`.
fn offers_md5(list: &str) -> bool {
    list.split(',')
        .any(|a| crate::keys::parse_number(a) == Some(u64::from(CHAP_MD5)))
}

/// Target side, first step: AuthMethod=CHAP was agreed; waiting for CHAP_A.
#[derive(Debug, Default)]
pub struct TargetChap {
    _private: (),
}

impl TargetChap {
    /// Starts a CHAP exchange.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers the initiator's CHAP_A list: picks MD5 and challenges with a random
    /// identifier and [`CHALLENGE_LEN`] random bytes. Returns the next state and
    /// `CHAP_A`, `CHAP_I`, `CHAP_C` to send.
    pub fn challenge(
        self,
        keys: &ChapKeys<'_>,
        entropy: &mut dyn Entropy,
    ) -> Result<(TargetChallenged, ChapReply), ChapError> {
        for (k, v) in [
            ("CHAP_I", keys.i),
            ("CHAP_C", keys.c),
            ("CHAP_N", keys.n),
            ("CHAP_R", keys.r),
        ] {
            if v.is_some() {
                return Err(ChapError::Unexpected(k));
            }
        }
        let list = keys.a.ok_or(ChapError::Missing("CHAP_A"))?;
        if !offers_md5(list) {
            return Err(ChapError::NoCommonAlgorithm);
        }
        let (id, challenge) = random_challenge(entropy)?;
        let reply = vec![
            ("CHAP_A", CHAP_MD5.to_string()),
            ("CHAP_I", id.to_string()),
            ("CHAP_C", encode_hex(&challenge)),
        ];
        Ok((TargetChallenged { id, challenge }, reply))
    }
}

/// Target side, second step: the challenge went out; waiting for CHAP_N and CHAP_R.
#[derive(Debug)]
pub struct TargetChallenged {
    id: u8,
    challenge: [u8; CHALLENGE_LEN],
}

/// A successful CHAP exchange on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapVerified {
    /// The CHAP user the initiator authenticated as.
    pub user: String,
    /// Whether the target authenticated itself too.
    pub mutual: bool,
    /// `CHAP_N`, `CHAP_R` to send for mutual CHAP; empty for one-way.
    pub reply: ChapReply,
}

impl TargetChallenged {
    /// The identifier sent.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The challenge sent.
    pub fn challenge(&self) -> &[u8] {
        &self.challenge
    }

    /// Checks the initiator's CHAP_N/CHAP_R against `accounts` and, when the
    /// initiator sent CHAP_I/CHAP_C, answers them with the target's `own` account.
    pub fn verify(
        self,
        keys: &ChapKeys<'_>,
        accounts: &[ChapAccount<'_>],
        own: Option<ChapAccount<'_>>,
    ) -> Result<ChapVerified, ChapError> {
        if keys.a.is_some() {
            return Err(ChapError::Unexpected("CHAP_A"));
        }
        let user = keys.n.ok_or(ChapError::Missing("CHAP_N"))?;
        let response = decode("CHAP_R", keys.r.ok_or(ChapError::Missing("CHAP_R"))?)?;
        let mutual = match (keys.i, keys.c) {
            (None, None) => None,
            (Some(_), None) => return Err(ChapError::Missing("CHAP_C")),
            (None, Some(_)) => return Err(ChapError::Missing("CHAP_I")),
            (Some(i), Some(c)) => {
                let id = parse_id(i)?;
                let challenge = decode("CHAP_C", c)?;
                if bool::from(challenge.ct_eq(&self.challenge[..])) {
                    return Err(ChapError::ReflectedChallenge);
                }
                Some((id, challenge))
            }
        };
        if mutual.is_some() && own.is_none() {
            return Err(ChapError::MutualNotConfigured);
        }

        // Compare against every account with this user name, in constant time.
        let mut known = false;
        let mut ok = subtle::Choice::from(0u8);
        for acct in accounts.iter().filter(|a| a.user == user) {
            known = true;
            let expected = chap_md5(self.id, acct.secret.expose(), &self.challenge);
            ok |= expected[..].ct_eq(&response[..]);
        }
        if !known {
            // Same work as a known user, so timing does not reveal which users exist.
            let _ = chap_md5(self.id, b"rstmf-no-such-user", &self.challenge);
            return Err(ChapError::UnknownUser(user.to_owned()));
        }
        if !bool::from(ok) {
            return Err(ChapError::BadResponse(user.to_owned()));
        }
        if let Some(own) = own {
            let ours = chap_md5(self.id, own.secret.expose(), &self.challenge);
            if bool::from(ours[..].ct_eq(&response[..])) {
                return Err(ChapError::SecretReused);
            }
        }
        let reply = match (mutual, own) {
            (Some((id, challenge)), Some(own)) => vec![
                ("CHAP_N", own.user.to_owned()),
                (
                    "CHAP_R",
                    encode_hex(&chap_md5(id, own.secret.expose(), &challenge)),
                ),
            ],
            _ => Vec::new(),
        };
        Ok(ChapVerified {
            user: user.to_owned(),
            mutual: !reply.is_empty(),
            reply,
        })
    }
}

/// Initiator side, first step: knows its account and, for mutual CHAP, the target's.
#[derive(Debug, Clone)]
pub struct InitiatorChap {
    user: String,
    secret: Secret,
    target: Option<(Option<String>, Secret)>,
}

impl InitiatorChap {
    /// One-way CHAP as `user` with `secret`.
    pub fn new(user: impl Into<String>, secret: Secret) -> Self {
        Self {
            user: user.into(),
            secret,
            target: None,
        }
    }

    /// Also authenticate the target: it must answer with `target_secret` and, when
    /// given, as `target_user`.
    pub fn with_mutual(mut self, target_user: Option<String>, target_secret: Secret) -> Self {
        self.target = Some((target_user, target_secret));
        self
    }

    /// The CHAP_A offer: `CHAP_A=5`.
    pub fn offer(&self) -> ChapReply {
        vec![("CHAP_A", CHAP_MD5.to_string())]
    }

    /// Answers the target's CHAP_A/CHAP_I/CHAP_C: `CHAP_N`, `CHAP_R` and, for mutual
    /// CHAP, a fresh `CHAP_I`, `CHAP_C`.
    pub fn respond(
        self,
        keys: &ChapKeys<'_>,
        entropy: &mut dyn Entropy,
    ) -> Result<(InitiatorResponded, ChapReply), ChapError> {
        let a = keys.a.ok_or(ChapError::Missing("CHAP_A"))?;
        if crate::keys::parse_number(a) != Some(u64::from(CHAP_MD5)) {
            return Err(ChapError::NoCommonAlgorithm);
        }
        let id = parse_id(keys.i.ok_or(ChapError::Missing("CHAP_I"))?)?;
        let challenge = decode("CHAP_C", keys.c.ok_or(ChapError::Missing("CHAP_C"))?)?;
        let response = chap_md5(id, self.secret.expose(), &challenge);
        let mut reply = vec![
            ("CHAP_N", self.user.clone()),
            ("CHAP_R", encode_hex(&response)),
        ];
        let expect = match self.target {
            None => None,
            Some((target_user, target_secret)) => {
                let (mut my_id, mut mine) = random_challenge(entropy)?;
                // Never send the target's own challenge back (RFC 7143 §12.1.3).
                let mut tries = 0;
                while mine[..] == challenge[..] {
                    tries += 1;
                    if tries > 3 {
                        return Err(ChapError::Entropy(EntropyError));
                    }
                    (my_id, mine) = random_challenge(entropy)?;
                }
                reply.push(("CHAP_I", my_id.to_string()));
                reply.push(("CHAP_C", encode_hex(&mine)));
                Some(MutualExpectation {
                    user: target_user,
                    secret: target_secret,
                    own_secret: self.secret,
                    id: my_id,
                    challenge: mine,
                })
            }
        };
        Ok((InitiatorResponded { expect }, reply))
    }
}

#[derive(Debug)]
struct MutualExpectation {
    user: Option<String>,
    secret: Secret,
    own_secret: Secret,
    id: u8,
    challenge: [u8; CHALLENGE_LEN],
}

/// Initiator side, second step: the response went out.
#[derive(Debug)]
pub struct InitiatorResponded {
    expect: Option<MutualExpectation>,
}

impl InitiatorResponded {
    /// Whether the target must prove itself.
    pub fn is_mutual(&self) -> bool {
        self.expect.is_some()
    }

    /// Checks the target's final security-stage answer: for mutual CHAP its
    /// CHAP_N/CHAP_R; for one-way CHAP, that it sent neither.
    pub fn verify_target(self, keys: &ChapKeys<'_>) -> Result<(), ChapError> {
        let Some(exp) = self.expect else {
            if keys.n.is_some() {
                return Err(ChapError::Unexpected("CHAP_N"));
            }
            if keys.r.is_some() {
                return Err(ChapError::Unexpected("CHAP_R"));
            }
            return Ok(());
        };
        let user = keys.n.ok_or(ChapError::Missing("CHAP_N"))?;
        let response = decode("CHAP_R", keys.r.ok_or(ChapError::Missing("CHAP_R"))?)?;
        if exp.user.as_deref().is_some_and(|u| u != user) {
            return Err(ChapError::WrongTargetUser(user.to_owned()));
        }
        let ours = chap_md5(exp.id, exp.own_secret.expose(), &exp.challenge);
        if bool::from(ours[..].ct_eq(&response[..])) {
            return Err(ChapError::SecretReused);
        }
        let expected = chap_md5(exp.id, exp.secret.expose(), &exp.challenge);
        if bool::from(expected[..].ct_eq(&response[..])) {
            Ok(())
        } else {
            Err(ChapError::TargetResponseWrong)
        }
    }
}

/// A deterministic [`Entropy`] for tests: repeats its seed bytes.
#[derive(Debug, Clone)]
pub struct FixedEntropy {
    bytes: Vec<u8>,
    pos: usize,
}

impl FixedEntropy {
    /// Produces `bytes` cyclically (a single zero byte if empty).
    pub fn new(bytes: &[u8]) -> Self {
        let bytes = if bytes.is_empty() {
            vec![0]
        } else {
            bytes.to_vec()
        };
        Self { bytes, pos: 0 }
    }
}

impl Entropy for FixedEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for b in buf {
            *b = self.bytes[self.pos % self.bytes.len()];
            self.pos = self.pos.wrapping_add(1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s).unwrap()
    }

    fn keys(pairs: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        pairs.to_vec()
    }

    fn as_keys<'a>(v: &'a [(&'static str, String)]) -> ChapKeys<'a> {
        let pairs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ChapKeys::from_pairs(&pairs)
    }

    /// Known answers computed independently with coreutils: `printf '\x01secretsecret12\x00\x01...\x0f' | md5sum`.
    #[test]
    fn md5_known_answers() {
        // id 0x01, secret "secretsecret12", challenge 00 01 .. 0f
        let c: Vec<u8> = (0u8..16).collect();
        assert_eq!(
            encode_hex(&chap_md5(1, b"secretsecret12", &c)),
            "0xc69b78dc6ac14bd854fdade1fcb18a77"
        );
        // RFC 1321 test suite sanity: MD5("") and MD5("abc") via the same helper
        // shape (id byte 'a', empty secret, "bc").
        assert_eq!(
            encode_hex(&chap_md5(b'a', b"", b"bc")),
            "0x900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn binary_encodings() {
        assert_eq!(encode_hex(&[0, 0xab, 0x10]), "0x00ab10");
        assert_eq!(decode_binary("0x00ab10").unwrap(), [0, 0xab, 0x10]);
        assert_eq!(decode_binary("0X00AB10").unwrap(), [0, 0xab, 0x10]);
        assert_eq!(decode_binary("0xabc").unwrap(), [0x0a, 0xbc]);
        assert_eq!(decode_binary("0bAKsQ").unwrap(), [0, 0xab, 0x10]);
        assert_eq!(decode_binary("0BAKs=").unwrap(), [0, 0xab]);
        assert_eq!(decode_binary("0bAA==").unwrap(), [0]);
        assert_eq!(decode_binary("0bAA").unwrap(), [0]);
        for n in 0..40u8 {
            let v: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            if !v.is_empty() {
                assert_eq!(decode_binary(&encode_base64(&v)).unwrap(), v);
                assert_eq!(decode_binary(&encode_hex(&v)).unwrap(), v);
            }
        }
        assert_eq!(encode_base64(b"foobar"), "0bZm9vYmFy");
        assert_eq!(encode_base64(b"fo"), "0bZm8=");
        assert_eq!(decode_binary("ab"), Err(BinaryError::NoPrefix));
        assert_eq!(decode_binary("0x"), Err(BinaryError::Empty));
        assert_eq!(decode_binary("0xzz"), Err(BinaryError::BadDigit));
        assert_eq!(decode_binary("0bA"), Err(BinaryError::BadDigit));
        assert_eq!(decode_binary("0bA*=="), Err(BinaryError::BadDigit));
        assert_eq!(decode_binary("0bAB=="), Err(BinaryError::BadDigit)); // non-zero pad bits
        assert_eq!(decode_binary("0bAA="), Err(BinaryError::BadDigit));
        let long = format!("0x{}", "00".repeat(1025));
        assert_eq!(decode_binary(&long), Err(BinaryError::TooLong));
        let max = format!("0x{}", "00".repeat(1024));
        assert_eq!(decode_binary(&max).unwrap().len(), 1024);
    }

    fn target_challenge(seed: &[u8]) -> (TargetChallenged, ChapReply) {
        let mut e = FixedEntropy::new(seed);
        let k = ChapKeys {
            a: Some("7,5"),
            ..Default::default()
        };
        TargetChap::new().challenge(&k, &mut e).unwrap()
    }

    #[test]
    fn target_picks_md5() {
        let (st, reply) = target_challenge(&[7, 0xaa]);
        assert_eq!(
            reply,
            keys(&[
                ("CHAP_A", "5".into()),
                ("CHAP_I", "7".into()),
                ("CHAP_C", format!("0x{}", "aa07".repeat(8))),
            ])
        );
        assert_eq!(st.id(), 7);
        assert_eq!(st.challenge().len(), 16);
        let mut e = FixedEntropy::new(&[1]);
        let k = ChapKeys {
            a: Some("6,7"),
            ..Default::default()
        };
        assert_eq!(
            TargetChap::new().challenge(&k, &mut e).unwrap_err(),
            ChapError::NoCommonAlgorithm
        );
        let k = ChapKeys::default();
        assert_eq!(
            TargetChap::new().challenge(&k, &mut e).unwrap_err(),
            ChapError::Missing("CHAP_A")
        );
        let k = ChapKeys {
            a: Some("5"),
            n: Some("x"),
            ..Default::default()
        };
        assert_eq!(
            TargetChap::new().challenge(&k, &mut e).unwrap_err(),
            ChapError::Unexpected("CHAP_N")
        );
    }

    #[test]
    fn one_way_round_trip() {
        let s = secret("initiator-secret");
        let (st, challenge) = target_challenge(&[3, 9, 200]);
        let ini = InitiatorChap::new("alice", s.clone());
        assert_eq!(ini.offer(), keys(&[("CHAP_A", "5".into())]));
        let mut e = FixedEntropy::new(&[1]);
        let (responded, answer) = ini.respond(&as_keys(&challenge), &mut e).unwrap();
        assert!(!responded.is_mutual());
        assert_eq!(answer.len(), 2);
        assert_eq!(answer[0], ("CHAP_N", "alice".to_owned()));
        let accounts = [ChapAccount {
            user: "alice",
            secret: &s,
        }];
        let ok = st.verify(&as_keys(&answer), &accounts, None).unwrap();
        assert_eq!(ok.user, "alice");
        assert!(!ok.mutual && ok.reply.is_empty());
        responded.verify_target(&ChapKeys::default()).unwrap();
    }

    #[test]
    fn wrong_secret_and_user() {
        let good = secret("initiator-secret");
        let bad = secret("initiator-secreT");
        let accounts = [ChapAccount {
            user: "alice",
            secret: &good,
        }];
        let (st, challenge) = target_challenge(&[3]);
        let mut e = FixedEntropy::new(&[1]);
        let (_, answer) = InitiatorChap::new("alice", bad.clone())
            .respond(&as_keys(&challenge), &mut e)
            .unwrap();
        let err = st.verify(&as_keys(&answer), &accounts, None).unwrap_err();
        assert_eq!(err, ChapError::BadResponse("alice".into()));
        assert_eq!(err.login_status(), LoginStatus::AUTHENTICATION_FAILURE);
        assert!(!err.to_string().contains("secre"));

        let (st, challenge) = target_challenge(&[3]);
        let (_, answer) = InitiatorChap::new("mallory", good.clone())
            .respond(&as_keys(&challenge), &mut e)
            .unwrap();
        let err = st.verify(&as_keys(&answer), &accounts, None).unwrap_err();
        assert_eq!(err, ChapError::UnknownUser("mallory".into()));
        assert_eq!(err.login_status(), LoginStatus::AUTHENTICATION_FAILURE);

        // Malformed and short responses.
        for r in ["zz", "0x00", "0xgg"] {
            let (st, _) = target_challenge(&[3]);
            let k = ChapKeys {
                n: Some("alice"),
                r: Some(r),
                ..Default::default()
            };
            assert!(st.verify(&k, &accounts, None).is_err(), "{r}");
        }
        let (st, _) = target_challenge(&[3]);
        let k = ChapKeys {
            n: Some("alice"),
            ..Default::default()
        };
        assert_eq!(
            st.verify(&k, &accounts, None).unwrap_err(),
            ChapError::Missing("CHAP_R")
        );
    }

    #[test]
    fn mutual_round_trip() {
        let ini_secret = secret("initiator-secret");
        let tgt_secret = secret("target-secret-xyz");
        let (st, challenge) = target_challenge(&[5, 1, 2, 3]);
        let ini = InitiatorChap::new("alice", ini_secret.clone())
            .with_mutual(Some("iqn.2026-11.org.rstmf:t".into()), tgt_secret.clone());
        let mut e = FixedEntropy::new(&[42, 0x55]);
        let (responded, answer) = ini.respond(&as_keys(&challenge), &mut e).unwrap();
        assert!(responded.is_mutual());
        assert_eq!(answer[2], ("CHAP_I", "42".to_owned()));
        assert_eq!(answer[3], ("CHAP_C", format!("0x{}", "552a".repeat(8))));
        let accounts = [ChapAccount {
            user: "alice",
            secret: &ini_secret,
        }];
        let own = ChapAccount {
            user: "iqn.2026-11.org.rstmf:t",
            secret: &tgt_secret,
        };
        let ok = st.verify(&as_keys(&answer), &accounts, Some(own)).unwrap();
        assert!(ok.mutual);
        let expected_r = encode_hex(&chap_md5(42, tgt_secret.expose(), &[0x55, 42].repeat(8)));
        assert_eq!(
            ok.reply,
            keys(&[
                ("CHAP_N", "iqn.2026-11.org.rstmf:t".into()),
                ("CHAP_R", expected_r),
            ])
        );
        responded.verify_target(&as_keys(&ok.reply)).unwrap();
    }

    #[test]
    fn mutual_failures() {
        let ini_secret = secret("initiator-secret");
        let tgt_secret = secret("target-secret-xyz");
        let accounts = [ChapAccount {
            user: "alice",
            secret: &ini_secret,
        }];
        let own = ChapAccount {
            user: "tgt",
            secret: &tgt_secret,
        };
        // Mutual requested, target has no identity.
        let (st, challenge) = target_challenge(&[5]);
        let mut e = FixedEntropy::new(&[42, 0x55]);
        let (_, answer) = InitiatorChap::new("alice", ini_secret.clone())
            .with_mutual(None, tgt_secret.clone())
            .respond(&as_keys(&challenge), &mut e)
            .unwrap();
        assert_eq!(
            st.verify(&as_keys(&answer), &accounts, None).unwrap_err(),
            ChapError::MutualNotConfigured
        );

        // Reflected challenge: the initiator sends our own challenge back.
        let (st, challenge) = target_challenge(&[5, 6]);
        let ours = as_keys(&challenge).c.unwrap().to_owned();
        let r = encode_hex(&chap_md5(st.id(), ini_secret.expose(), st.challenge()));
        let k = ChapKeys {
            n: Some("alice"),
            r: Some(&r),
            i: Some("9"),
            c: Some(&ours),
            ..Default::default()
        };
        assert_eq!(
            st.verify(&k, &accounts, Some(own)).unwrap_err(),
            ChapError::ReflectedChallenge
        );
        // Also when re-encoded in base64 or upper case.
        let (st, _) = target_challenge(&[5, 6]);
        let b64 = encode_base64(st.challenge());
        let k = ChapKeys { c: Some(&b64), ..k };
        assert_eq!(
            st.verify(&k, &accounts, Some(own)).unwrap_err(),
            ChapError::ReflectedChallenge
        );

        // One secret in both directions.
        let same = [ChapAccount {
            user: "alice",
            secret: &tgt_secret,
        }];
        let (st, challenge) = target_challenge(&[5]);
        let (_, answer) = InitiatorChap::new("alice", tgt_secret.clone())
            .respond(&as_keys(&challenge), &mut e)
            .unwrap();
        assert_eq!(
            st.verify(&as_keys(&answer), &same, Some(own)).unwrap_err(),
            ChapError::SecretReused
        );

        // Initiator side: wrong target secret / name.
        let (st, challenge) = target_challenge(&[5]);
        let (responded, answer) = InitiatorChap::new("alice", ini_secret.clone())
            .with_mutual(Some("tgt".into()), secret("another-secret"))
            .respond(&as_keys(&challenge), &mut e)
            .unwrap();
        let ok = st.verify(&as_keys(&answer), &accounts, Some(own)).unwrap();
        assert_eq!(
            responded.verify_target(&as_keys(&ok.reply)).unwrap_err(),
            ChapError::TargetResponseWrong
        );
        let (st, challenge) = target_challenge(&[5]);
        let (responded, answer) = InitiatorChap::new("alice", ini_secret.clone())
            .with_mutual(Some("other".into()), tgt_secret.clone())
            .respond(&as_keys(&challenge), &mut e)
            .unwrap();
        let ok = st.verify(&as_keys(&answer), &accounts, Some(own)).unwrap();
        assert_eq!(
            responded.verify_target(&as_keys(&ok.reply)).unwrap_err(),
            ChapError::WrongTargetUser("tgt".into())
        );
        // Mutual initiator but the target sent nothing.
        let (_, challenge) = target_challenge(&[5]);
        let (responded, _) = InitiatorChap::new("alice", ini_secret)
            .with_mutual(None, tgt_secret)
            .respond(&as_keys(&challenge), &mut e)
            .unwrap();
        assert_eq!(
            responded.verify_target(&ChapKeys::default()).unwrap_err(),
            ChapError::Missing("CHAP_N")
        );
    }

    #[test]
    fn accepts_base64_response() {
        let s = secret("initiator-secret");
        let accounts = [ChapAccount {
            user: "alice",
            secret: &s,
        }];
        let (st, _) = target_challenge(&[1, 2]);
        let r = encode_base64(&chap_md5(st.id(), s.expose(), st.challenge()));
        let k = ChapKeys {
            n: Some("alice"),
            r: Some(&r),
            ..Default::default()
        };
        assert!(st.verify(&k, &accounts, None).is_ok());
    }

    #[test]
    fn entropy_failure_maps_to_target_error() {
        struct Broken;
        impl Entropy for Broken {
            fn fill(&mut self, _: &mut [u8]) -> Result<(), EntropyError> {
                Err(EntropyError)
            }
        }
        let k = ChapKeys {
            a: Some("5"),
            ..Default::default()
        };
        let err = TargetChap::new().challenge(&k, &mut Broken).unwrap_err();
        assert_eq!(err.login_status(), LoginStatus::TARGET_ERROR);
        let mut b = [0u8; 8];
        OsEntropy.fill(&mut b).unwrap();
    }
}
