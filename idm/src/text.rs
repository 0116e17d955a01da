//! Login and Text data segments: NUL-terminated `key=value` pairs (RFC 7143 §6.1).
//!
//! Parsing is zero-copy ([`pairs`]); [`parse`] adds the duplicate check a login
//! needs; [`TextBuilder`] encodes; [`TextAccumulator`] joins the data of PDUs sent
//! with the C (continue) bit under a size cap; [`segments`] splits an encoded text
//! for sending under a MaxRecvDataSegmentLength.

use std::collections::HashSet;

/// Longest key name (RFC 7143 §6.1).
pub const MAX_KEY_LEN: usize = 63;
/// Longest value unless the key carries a large binary value.
pub const MAX_VALUE_LEN: usize = 255;
/// Longest encoded value of large-binary keys (CHAP_C, CHAP_R, SRP, Kerberos, SPKM).
pub const MAX_LARGE_VALUE_LEN: usize = 8192;
/// Default cap of a whole text accumulated over C-bit PDUs (RFC 7143 asks for at
/// least 8192 bytes per negotiation sequence).
pub const DEFAULT_TEXT_CAP: usize = 64 * 1024;

/// Keys that may legitimately repeat in one text (RFC 7143 §6.3: e.g. TargetAddress).
pub const REPEATABLE_KEYS: &[&str] = &["TargetAddress"];

/// Errors in a key=value data segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// The text does not end with a NUL.
    #[error("key=value text is not NUL terminated")]
    Unterminated,
    /// An entry without `=`.
    #[error("entry at offset {0} has no '='")]
    MissingEquals(usize),
    /// A key name that is empty, too long or has an illegal character.
    #[error("invalid key name at offset {0}")]
    BadKey(usize),
    /// A value longer than the key allows.
    #[error("value of {key} is {len} bytes, more than {max}")]
    ValueTooLong {
        /// The key.
        key: String,
        /// Value length.
        len: usize,
        /// Limit for this key.
        max: usize,
    },
    /// A value that is not UTF-8 or holds a NUL.
    #[error("value at offset {0} is not valid UTF-8 text")]
    BadValue(usize),
    /// A key sent twice in one text.
    #[error("key {0} appears more than once")]
    Duplicate(String),
    /// Accumulated text larger than the cap.
    #[error("text larger than {cap} bytes")]
    TooLarge {
        /// The cap in force.
        cap: usize,
    },
}

/// True if `key` is a legal key name: a capital letter first, then letters, digits,
/// `.`, `-`, `+`, `@`, `_`; at most 63 bytes. `X#` (IANA-registered private keys)
/// is accepted as a prefix, and so are `iSCSI`/`iSER`: standard keys such as
/// `iSCSIProtocolLevel` and `iSERHelloRequired` break the capital-letter rule.
pub fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    let Some((&first, rest)) = b.split_first() else {
        return false;
    };
    let standard_lower = key.starts_with("iSCSI") || key.starts_with("iSER");
    if b.len() > MAX_KEY_LEN || !(first.is_ascii_uppercase() || standard_lower) {
        return false;
    }
    let rest = match rest.split_first() {
        Some((b'#', tail)) if first == b'X' => tail,
        _ => rest,
    };
    rest.iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'@' | b'_'))
}

/// True if every character of `v` is legal in a `text-value` (RFC 7143 §6.1):
/// letters, digits, `.`, `-`, `+`, `@`, `_`, `/`, `[`, `]`, `:`.
pub fn is_text_value(v: &str) -> bool {
    v.bytes().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'.' | b'-' | b'+' | b'@' | b'_' | b'/' | b'[' | b']' | b':'
            )
    })
}

/// The longest value `key` may carry.
pub fn max_value_len(key: &str) -> usize {
    const LARGE: &[&str] = &["CHAP_C", "CHAP_R"];
    const LARGE_PREFIX: &[&str] = &["SRP_", "KRB_", "SPKM_"];
    if LARGE.contains(&key) || LARGE_PREFIX.iter().any(|p| key.starts_with(p)) {
        MAX_LARGE_VALUE_LEN
    } else {
        MAX_VALUE_LEN
    }
}

/// Zero-copy iterator over the pairs of a text; empty entries (stray NULs) are skipped.
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    rest: &'a [u8],
    offset: usize,
}

/// Iterates over the `key=value` pairs of `data`.
pub fn pairs(data: &[u8]) -> Pairs<'_> {
    Pairs {
        rest: data,
        offset: 0,
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Result<(&'a str, &'a str), TextError>;

    fn next(&mut self) -> Option<Self::Item> {
        while let Some((&0, tail)) = self.rest.split_first() {
            self.rest = tail;
            self.offset += 1;
        }
        if self.rest.is_empty() {
            return None;
        }
        let at = self.offset;
        let Some(nul) = self.rest.iter().position(|&c| c == 0) else {
            self.rest = &[];
            return Some(Err(TextError::Unterminated));
        };
        let (entry, tail) = self.rest.split_at(nul);
        self.rest = tail.get(1..).unwrap_or(&[]);
        self.offset += nul + 1;
        Some(parse_entry(entry, at))
    }
}

fn parse_entry(entry: &[u8], at: usize) -> Result<(&str, &str), TextError> {
    let eq = entry
        .iter()
        .position(|&c| c == b'=')
        .ok_or(TextError::MissingEquals(at))?;
    let (k, v) = entry.split_at(eq);
    let v = v.get(1..).unwrap_or(&[]);
    let key = std::str::from_utf8(k).map_err(|_| TextError::BadKey(at))?;
    if !is_valid_key(key) {
        return Err(TextError::BadKey(at));
    }
    let max = max_value_len(key);
    if v.len() > max {
        return Err(TextError::ValueTooLong {
            key: key.to_owned(),
            len: v.len(),
            max,
        });
    }
    let value = std::str::from_utf8(v).map_err(|_| TextError::BadValue(at + eq + 1))?;
    Ok((key, value))
}

/// Parses a whole text, rejecting keys that appear twice (except [`REPEATABLE_KEYS`]).
pub fn parse(data: &[u8]) -> Result<Vec<(&str, &str)>, TextError> {
    parse_with(data, REPEATABLE_KEYS)
}

/// Parses a whole text, rejecting duplicates except the keys in `repeatable`.
pub fn parse_with<'a>(
    data: &'a [u8],
    repeatable: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, TextError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for p in pairs(data) {
        let (k, v) = p?;
        if !repeatable.contains(&k) && !seen.insert(k) {
            return Err(TextError::Duplicate(k.to_owned()));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// Appends `key=value\0` to `out`, checking key and value.
pub fn encode_pair(out: &mut Vec<u8>, key: &str, value: &str) -> Result<(), TextError> {
    if !is_valid_key(key) {
        return Err(TextError::BadKey(out.len()));
    }
    let max = max_value_len(key);
    if value.len() > max {
        return Err(TextError::ValueTooLong {
            key: key.to_owned(),
            len: value.len(),
            max,
        });
    }
    if value.as_bytes().contains(&0) {
        return Err(TextError::BadValue(out.len() + key.len() + 1));
    }
    out.reserve(key.len() + value.len() + 2);
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value.as_bytes());
    out.push(0);
    Ok(())
}

/// Builds a text data segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextBuilder {
    buf: Vec<u8>,
}

impl TextBuilder {
    /// An empty text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one pair.
    pub fn push(&mut self, key: &str, value: &str) -> Result<&mut Self, TextError> {
        encode_pair(&mut self.buf, key, value)?;
        Ok(self)
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Encoded length.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Empties the builder, keeping its allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// Joins the data segments of a multi-PDU text (C bit) under a size cap, reusing
/// its buffer from one negotiation step to the next.
#[derive(Debug, Clone)]
pub struct TextAccumulator {
    buf: Vec<u8>,
    cap: usize,
    complete: bool,
}

impl Default for TextAccumulator {
    fn default() -> Self {
        Self::new(DEFAULT_TEXT_CAP)
    }
}

impl TextAccumulator {
    /// An accumulator refusing texts larger than `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap,
            complete: false,
        }
    }

    /// Adds one PDU's data; `cont` is its C bit. Returns the whole text once the PDU
    /// without C arrives. Over the cap, the partial text is dropped and an error returned.
    pub fn push(&mut self, data: &[u8], cont: bool) -> Result<Option<&[u8]>, TextError> {
        if self.complete {
            self.buf.clear();
            self.complete = false;
        }
        if self.buf.len() + data.len() > self.cap {
            self.buf.clear();
            return Err(TextError::TooLarge { cap: self.cap });
        }
        self.buf.extend_from_slice(data);
        if cont {
            return Ok(None);
        }
        self.complete = true;
        Ok(Some(&self.buf))
    }

    /// Bytes held so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no partial text is held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Drops any partial text.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.complete = false;
    }
}

/// Splits an encoded text into data segments of at most `max` bytes; the flag is
/// the C bit (true on every segment but the last). An empty text gives one empty segment.
pub fn segments(data: &[u8], max: usize) -> impl Iterator<Item = (&[u8], bool)> {
    let max = max.max(1);
    let count = data.len().div_ceil(max).max(1);
    (0..count).map(move |i| {
        let start = i * max;
        let end = (start + max).min(data.len());
        (data.get(start..end).unwrap_or(&[]), i + 1 < count)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_basic() {
        let t = b"InitiatorName=iqn.1994-05.com.redhat:abc\0SessionType=Normal\0X-com.example.Foo=1\0X#bar=\0";
        let v = parse(t).unwrap();
        assert_eq!(
            v,
            vec![
                ("InitiatorName", "iqn.1994-05.com.redhat:abc"),
                ("SessionType", "Normal"),
                ("X-com.example.Foo", "1"),
                ("X#bar", ""),
            ]
        );
    }

    #[test]
    fn stray_nuls_are_skipped() {
        let v = parse(b"\0A=1\0\0\0B=2\0\0\0").unwrap();
        assert_eq!(v, vec![("A", "1"), ("B", "2")]);
        assert!(parse(b"").unwrap().is_empty());
    }

    #[test]
    fn value_may_contain_equals() {
        assert_eq!(parse(b"CHAP_N=a=b\0").unwrap(), vec![("CHAP_N", "a=b")]);
    }

    #[test]
    fn errors() {
        assert_eq!(parse(b"A=1"), Err(TextError::Unterminated));
        assert_eq!(parse(b"A=1\0B\0"), Err(TextError::MissingEquals(4)));
        assert_eq!(parse(b"=1\0"), Err(TextError::BadKey(0)));
        assert_eq!(parse(b"lower=1\0"), Err(TextError::BadKey(0)));
        assert_eq!(parse(b"iSCSIProtocolLevel=1\0").unwrap().len(), 1);
        assert_eq!(parse(b"iSERHelloRequired=No\0").unwrap().len(), 1);
        assert_eq!(parse(b"Bad Key=1\0"), Err(TextError::BadKey(0)));
        assert_eq!(parse(b"A#b=1\0"), Err(TextError::BadKey(0)));
        let long_key = format!("K{}=1\0", "a".repeat(63));
        assert_eq!(parse(long_key.as_bytes()), Err(TextError::BadKey(0)));
        let ok_key = format!("K{}=1\0", "a".repeat(62));
        assert!(parse(ok_key.as_bytes()).is_ok());
        assert_eq!(
            parse(b"A=1\0A=2\0"),
            Err(TextError::Duplicate("A".to_owned()))
        );
        assert_eq!(parse(b"A=\xff\0"), Err(TextError::BadValue(2)));
    }

    #[test]
    fn value_lengths() {
        let v255 = format!("TargetAlias={}\0", "a".repeat(255));
        assert!(parse(v255.as_bytes()).is_ok());
        let v256 = format!("TargetAlias={}\0", "a".repeat(256));
        assert!(matches!(
            parse(v256.as_bytes()),
            Err(TextError::ValueTooLong { max: 255, .. })
        ));
        let chap = format!("CHAP_C=0x{}\0", "ab".repeat(4095));
        assert!(parse(chap.as_bytes()).is_ok());
        let chap = format!("CHAP_R=0x{}\0", "ab".repeat(4096));
        assert!(matches!(
            parse(chap.as_bytes()),
            Err(TextError::ValueTooLong { max: 8192, .. })
        ));
    }

    #[test]
    fn repeatable_target_address() {
        let t =
            b"TargetName=iqn.a\0TargetAddress=10.0.0.1:3260,1\0TargetAddress=[fe80::1]:3260,1\0";
        assert_eq!(parse(t).unwrap().len(), 3);
        // SendTargets responses repeat TargetName as well.
        let t = b"TargetName=iqn.a\0TargetName=iqn.b\0";
        assert!(parse(t).is_err());
        assert_eq!(parse_with(t, &["TargetName"]).unwrap().len(), 2);
    }

    #[test]
    fn encode_round_trip() {
        let mut b = TextBuilder::new();
        b.push("HeaderDigest", "CRC32C,None")
            .unwrap()
            .push("MaxRecvDataSegmentLength", "262144")
            .unwrap();
        assert_eq!(
            b.as_bytes(),
            b"HeaderDigest=CRC32C,None\0MaxRecvDataSegmentLength=262144\0"
        );
        assert_eq!(parse(b.as_bytes()).unwrap().len(), 2);
        assert!(b.push("bad", "x").is_err());
        assert!(b.push("Good", "a\0b").is_err());
        assert!(b.push("Good", &"x".repeat(256)).is_err());
    }

    #[test]
    fn accumulator() {
        let mut acc = TextAccumulator::new(32);
        assert_eq!(acc.push(b"Initiator", true).unwrap(), None);
        assert_eq!(acc.push(b"Name=iqn.x", true).unwrap(), None);
        let whole = acc.push(b"\0", false).unwrap().unwrap().to_vec();
        assert_eq!(parse(&whole).unwrap(), vec![("InitiatorName", "iqn.x")]);
        // The next text starts afresh.
        assert_eq!(acc.push(b"A=1\0", false).unwrap().unwrap(), b"A=1\0");
        // Cap.
        assert_eq!(acc.push(&[b'a'; 20], true).unwrap(), None);
        assert_eq!(
            acc.push(&[b'a'; 20], true),
            Err(TextError::TooLarge { cap: 32 })
        );
        assert!(acc.is_empty());
    }

    #[test]
    fn segmenting() {
        let data = [1u8; 10];
        let s: Vec<_> = segments(&data, 4).collect();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], (&data[..4], true));
        assert_eq!(s[2], (&data[8..], false));
        let s: Vec<_> = segments(&[], 4).collect();
        assert_eq!(s, vec![(&[][..], false)]);
        let s: Vec<_> = segments(&data, 10).collect();
        assert_eq!(s, vec![(&data[..], false)]);
    }

    #[test]
    fn text_value_charset() {
        assert!(is_text_value("CRC32C"));
        assert!(is_text_value("[fe80::1]:3260"));
        assert!(!is_text_value("a b"));
        assert!(!is_text_value("a,b"));
    }
}
