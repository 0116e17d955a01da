//! iSCSI names: `iqn.`, `eui.` and `naa.` (RFC 7143 §4.2.7, RFC 3722, RFC 3980).
//!
//! A name is compared in its normalized form: RFC 3722's stringprep profile maps
//! characters to lower case (and NFKC-normalizes), prohibits spaces, controls and all
//! ASCII punctuation except `-`, `.` and `:`, and limits the encoded name to 223
//! bytes. This module implements a "stringprep-lite": lower-casing, removal of the
//! "commonly mapped to nothing" code points (RFC 3454 table B.1), and the prohibited
//! tables that matter in practice. It does not apply NFKC, so two non-ASCII spellings
//! that differ only in Unicode normalization compare different; every name seen in
//! the wild is ASCII, where the result is exact.
//!
//! [`IscsiName::parse`] is strict (configuration, ACLs, names we send).
//! [`IscsiName::parse_lenient`] is for names received from initiators: it
//! normalizes and bounds the name but tolerates characters such as `_` that some
//! initiators put in their names, as tgt and LIO do.

#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;

/// Longest iSCSI name in bytes (RFC 7143 §4.2.7.1).
pub const MAX_NAME_LEN: usize = 223;

/// The three name formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// `iqn.yyyy-mm.reversed.domain[:anything]`.
    Iqn,
    /// `eui.` and 16 hex digits (EUI-64).
    Eui,
    /// `naa.` and 16 or 32 hex digits (RFC 3980).
    Naa,
}

/// Why a string is not an iSCSI name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty string.
    #[error("iSCSI name is empty")]
    Empty,
    /// Longer than 223 bytes once normalized.
    #[error("iSCSI name is {0} bytes long, more than 223")]
    TooLong(usize),
    /// Does not start with `iqn.`, `eui.` or `naa.`.
    #[error("iSCSI name must start with iqn., eui. or naa.")]
    UnknownType,
    /// A character RFC 3722 prohibits.
    #[error("iSCSI name contains the prohibited character {0:?}")]
    ProhibitedChar(char),
    /// An `iqn.` name without a valid `yyyy-mm` date.
    #[error("iqn. name needs a yyyy-mm date after the prefix")]
    BadDate,
    /// An `iqn.` name whose naming authority is missing or has an empty label.
    #[error("iqn. name needs a reversed domain name after the date")]
    BadAuthority,
    /// An `eui.`/`naa.` name whose hex part has the wrong length or characters.
    #[error("{kind} name needs {expected} hex digits")]
    BadHex {
        /// `eui` or `naa`.
        kind: &'static str,
        /// What the format allows.
        expected: &'static str,
    },
}

/// A validated, normalized (lower-case) iSCSI name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IscsiName(String);

impl IscsiName {
    /// Normalizes and strictly validates `s` (RFC 7143 §4.2.7, RFC 3722).
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let norm = normalize(s, true)?;
        check_format(&norm)?;
        Ok(Self(norm))
    }

    /// Normalizes `s` and checks the type prefix and length, tolerating characters
    /// outside RFC 3722's set except spaces, controls, `,` and NUL. For names
    /// received from peers.
    pub fn parse_lenient(s: &str) -> Result<Self, NameError> {
        let norm = normalize(s, false)?;
        kind_of(&norm).ok_or(NameError::UnknownType)?;
        Ok(Self(norm))
    }

    /// The normalized name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name's format.
    pub fn kind(&self) -> NameKind {
        // Both constructors checked the prefix.
        kind_of(&self.0).unwrap_or(NameKind::Iqn)
    }
}

impl fmt::Debug for IscsiName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for IscsiName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for IscsiName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for IscsiName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::parse(&s)
    }
}

impl From<IscsiName> for String {
    fn from(n: IscsiName) -> String {
        n.0
    }
}

impl AsRef<str> for IscsiName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// True if `s` is a valid iSCSI name under the strict rules.
pub fn is_valid(s: &str) -> bool {
    IscsiName::parse(s).is_ok()
}

fn kind_of(norm: &str) -> Option<NameKind> {
    match norm.get(..4)? {
        "iqn." => Some(NameKind::Iqn),
        "eui." => Some(NameKind::Eui),
        "naa." => Some(NameKind::Naa),
        _ => None,
    }
}

/// RFC 3454 table B.1: code points mapped to nothing.
fn mapped_to_nothing(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{1806}'
            | '\u{180B}'..='\u{180D}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

/// RFC 3722 §6 prohibited output (the ASCII part exactly, and the Unicode tables
/// of RFC 3454 that apply to names typed by people).
fn prohibited(c: char, strict: bool) -> bool {
    if c.is_whitespace() || c.is_control() || c == ',' {
        return true;
    }
    if c.is_ascii() {
        // Only letters, digits, '-', '.', ':' survive among ASCII characters.
        return strict && !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
    }
    matches!(
        c,
        '\u{3002}'                              // ideographic full stop (RFC 3722)
            | '\u{E000}'..='\u{F8FF}'           // C.3 private use
            | '\u{F0000}'..='\u{FFFFD}'
            | '\u{100000}'..='\u{10FFFD}'
            | '\u{FDD0}'..='\u{FDEF}'           // C.4 non-characters
            | '\u{FFF9}'..='\u{FFFF}'           // C.6 and C.4
            | '\u{2FF0}'..='\u{2FFB}'           // C.7
            | '\u{0340}' | '\u{0341}'           // C.8
            | '\u{200E}' | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{206A}'..='\u{206F}'
            | '\u{E0001}' | '\u{E0020}'..='\u{E007F}' // C.9 tagging
    ) || (c as u32 & 0xFFFE) == 0xFFFE
}

fn normalize(s: &str, strict: bool) -> Result<String, NameError> {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if mapped_to_nothing(c) {
            continue;
        }
        if prohibited(c, strict) {
            return Err(NameError::ProhibitedChar(c));
        }
        out.extend(c.to_lowercase());
    }
    if out.is_empty() {
        return Err(NameError::Empty);
    }
    if out.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(out.len()));
    }
    Ok(out)
}

fn check_format(norm: &str) -> Result<(), NameError> {
    match kind_of(norm).ok_or(NameError::UnknownType)? {
        NameKind::Iqn => check_iqn(norm.get(4..).unwrap_or("")),
        NameKind::Eui => check_hex(norm.get(4..).unwrap_or(""), "eui", &[16], "16"),
        NameKind::Naa => check_hex(norm.get(4..).unwrap_or(""), "naa", &[16, 32], "16 or 32"),
    }
}

fn check_iqn(rest: &str) -> Result<(), NameError> {
    // yyyy-mm.authority[:designation]
    let b = rest.as_bytes();
    let date_ok = b.len() >= 8
        && b.get(..4).is_some_and(|y| y.iter().all(u8::is_ascii_digit))
        && b.get(4) == Some(&b'-')
        && b.get(5..7)
            .is_some_and(|m| m.iter().all(u8::is_ascii_digit))
        && b.get(7) == Some(&b'.');
    if !date_ok {
        return Err(NameError::BadDate);
    }
    let month = rest
        .get(5..7)
        .and_then(|m| m.parse::<u8>().ok())
        .unwrap_or(0);
    if !(1..=12).contains(&month) {
        return Err(NameError::BadDate);
    }
    let tail = rest.get(8..).unwrap_or("");
    let authority = tail.split(':').next().unwrap_or("");
    if authority.is_empty() || authority.split('.').any(str::is_empty) {
        return Err(NameError::BadAuthority);
    }
    Ok(())
}

fn check_hex(
    hex: &str,
    kind: &'static str,
    lens: &[usize],
    expected: &'static str,
) -> Result<(), NameError> {
    if lens.contains(&hex.len()) && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(NameError::BadHex { kind, expected })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_examples() {
        for n in [
            "iqn.2001-04.com.example:storage:diskarrays-sn-a8675309",
            "iqn.2001-04.com.example",
            "iqn.2001-04.com.example:storage.tape1.sys1.xyz",
            "iqn.1986-03.com.sun:02:0f3b1d8e-1234-5678-9abc-def012345678",
            "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
            "iqn.1993-08.org.debian:01:abcdef0123",
            "eui.02004567a425678d",
            "naa.52004567ba64678d",
            "naa.62004567ba64678d0123456789abcdef",
        ] {
            let name = IscsiName::parse(n).unwrap();
            assert_eq!(name.as_str(), n);
        }
        assert_eq!(
            IscsiName::parse("eui.0123456789abcdef").unwrap().kind(),
            NameKind::Eui
        );
        assert_eq!(
            IscsiName::parse("naa.0123456789abcdef").unwrap().kind(),
            NameKind::Naa
        );
        assert_eq!(
            IscsiName::parse("iqn.2001-04.a").unwrap().kind(),
            NameKind::Iqn
        );
    }

    #[test]
    fn normalizes_case() {
        let n = IscsiName::parse("IQN.2001-04.COM.Example:Disk").unwrap();
        assert_eq!(n.as_str(), "iqn.2001-04.com.example:disk");
        assert_eq!(
            IscsiName::parse("eui.02004567A425678D").unwrap().as_str(),
            "eui.02004567a425678d"
        );
        // Soft hyphen is mapped to nothing.
        assert_eq!(
            IscsiName::parse("iqn.2001-04.com.ex\u{00AD}ample")
                .unwrap()
                .as_str(),
            "iqn.2001-04.com.example"
        );
        // Non-ASCII letters are allowed and lower-cased.
        assert_eq!(
            IscsiName::parse("iqn.2001-04.com.example:Ünïcode")
                .unwrap()
                .as_str(),
            "iqn.2001-04.com.example:ünïcode"
        );
    }

    #[test]
    fn rejects() {
        use NameError::*;
        assert_eq!(IscsiName::parse(""), Err(Empty));
        assert_eq!(IscsiName::parse("foo.bar"), Err(UnknownType));
        assert_eq!(IscsiName::parse("iqn"), Err(UnknownType));
        assert_eq!(
            IscsiName::parse("iqn.2001-04.com.ex ample"),
            Err(ProhibitedChar(' '))
        );
        assert_eq!(
            IscsiName::parse("iqn.2001-04.com.ex_ample"),
            Err(ProhibitedChar('_'))
        );
        assert_eq!(
            IscsiName::parse("iqn.2001-04.com.ex/ample"),
            Err(ProhibitedChar('/'))
        );
        assert_eq!(
            IscsiName::parse("iqn.2001-04.com,x"),
            Err(ProhibitedChar(','))
        );
        assert_eq!(
            IscsiName::parse("iqn.2001-04.com\u{3002}x"),
            Err(ProhibitedChar('\u{3002}'))
        );
        assert_eq!(
            IscsiName::parse("iqn.2001-04.com\u{E000}"),
            Err(ProhibitedChar('\u{E000}'))
        );
        assert_eq!(IscsiName::parse("iqn.2001-4.com.example"), Err(BadDate));
        assert_eq!(IscsiName::parse("iqn.2001-13.com.example"), Err(BadDate));
        assert_eq!(IscsiName::parse("iqn.2001-00.com.example"), Err(BadDate));
        assert_eq!(IscsiName::parse("iqn.2001-04"), Err(BadDate));
        assert_eq!(IscsiName::parse("iqn.2001-04.:x"), Err(BadAuthority));
        assert_eq!(IscsiName::parse("iqn.2001-04."), Err(BadAuthority));
        assert_eq!(
            IscsiName::parse("iqn.2001-04.com..example"),
            Err(BadAuthority)
        );
        assert!(matches!(IscsiName::parse("eui.0123"), Err(BadHex { .. })));
        assert!(matches!(
            IscsiName::parse("eui.0123456789abcdeg"),
            Err(BadHex { .. })
        ));
        assert!(matches!(
            IscsiName::parse("naa.0123456789abcdef01"),
            Err(BadHex { .. })
        ));
    }

    #[test]
    fn length_limit() {
        let base = "iqn.2001-04.com.example:";
        let ok = format!("{base}{}", "a".repeat(MAX_NAME_LEN - base.len()));
        assert!(IscsiName::parse(&ok).is_ok());
        let long = format!("{ok}a");
        assert_eq!(IscsiName::parse(&long), Err(NameError::TooLong(224)));
        assert_eq!(
            IscsiName::parse_lenient(&long),
            Err(NameError::TooLong(224))
        );
    }

    #[test]
    fn lenient() {
        let n = IscsiName::parse_lenient("iqn.1998-01.com.VMware:esx_host-1").unwrap();
        assert_eq!(n.as_str(), "iqn.1998-01.com.vmware:esx_host-1");
        assert!(IscsiName::parse_lenient("iqn.x y").is_err());
        assert!(IscsiName::parse_lenient("iqn.x,y").is_err());
        assert!(IscsiName::parse_lenient("iqn.x\u{7}").is_err());
        assert_eq!(
            IscsiName::parse_lenient("host"),
            Err(NameError::UnknownType)
        );
    }

    #[test]
    fn serde_round_trip() {
        let n: IscsiName = serde_json::from_str("\"IQN.2001-04.com.example\"").unwrap();
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            "\"iqn.2001-04.com.example\""
        );
        assert!(serde_json::from_str::<IscsiName>("\"nope\"").is_err());
    }
}
