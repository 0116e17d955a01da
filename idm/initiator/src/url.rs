//! `iscsi://` URLs as libiscsi writes them: `iscsi://[user%secret@]host[:port]/iqn/lun`.
//!
//! The host is a name, an IPv4 address or an IPv6 address in brackets. Every part is
//! bounds-checked; nothing here panics on input. Percent-encoding is not decoded
//! (libiscsi does not decode it either): `%` separates the user from the secret.

use std::fmt;
use std::str::FromStr;

/// The default iSCSI port.
pub const DEFAULT_PORT: u16 = 3260;
/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 1024;
/// Longest host name (RFC 1035 limit).
pub const MAX_HOST_LEN: usize = 253;
/// Largest LUN with flat (single-level) addressing.
pub const MAX_LUN: u16 = 16383;

/// What is wrong with a URL or portal string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Longer than [`MAX_URL_LEN`].
    #[error("URL longer than {MAX_URL_LEN} bytes")]
    TooLong,
    /// Does not start with `iscsi://`.
    #[error("URL must start with iscsi://")]
    Scheme,
    /// `user%secret@` without the `%` or with an empty part.
    #[error("credentials must be user%secret with both parts non-empty")]
    Credentials,
    /// No host, or a host with illegal characters or too long.
    #[error("invalid host {0:?}")]
    Host(String),
    /// `[` without `]`, or an invalid IPv6 literal.
    #[error("invalid IPv6 literal {0:?}")]
    Ipv6(String),
    /// Port missing after `:`, not a number, or 0.
    #[error("invalid port {0:?}")]
    Port(String),
    /// No `/iqn` part.
    #[error("missing target name")]
    MissingTarget,
    /// Not an iSCSI name (iqn., eui., naa.).
    #[error("invalid target name {0:?}")]
    Target(String),
    /// No `/lun` part.
    #[error("missing LUN")]
    MissingLun,
    /// LUN not a number or above [`MAX_LUN`].
    #[error("invalid LUN {0:?} (0..={MAX_LUN})")]
    Lun(String),
    /// Something after the LUN.
    #[error("unexpected text after the LUN: {0:?}")]
    Trailing(String),
}

/// CHAP credentials carried by a URL. The secret is never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// CHAP_N to send.
    pub user: String,
    /// The shared secret.
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Host part of a portal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name or IPv4 address in text.
    Name(String),
    /// An IPv6 address (written in brackets in URLs).
    Ipv6(std::net::Ipv6Addr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// A network portal: host and TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Portal {
    /// Host.
    pub host: Host,
    /// TCP port.
    pub port: u16,
}

impl Portal {
    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port`, or an `iscsi://` URL whose
    /// target and LUN may be left out (credentials are returned too).
    pub fn parse(s: &str) -> Result<(Self, Option<Credentials>), UrlError> {
        if s.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        match s.strip_prefix("iscsi://") {
            Some(rest) => {
                let (authority, _) = rest.split_once('/').unwrap_or((rest, ""));
                let (creds, hostport) = split_credentials(authority)?;
                Ok((parse_host_port(hostport)?, creds))
            }
            None => Ok((parse_host_port(s)?, None)),
        }
    }

    /// `host:port` for `ToSocketAddrs` (brackets kept around IPv6).
    pub fn socket_addr_string(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for Portal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A parsed `iscsi://[user%secret@]host[:port]/iqn/lun` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiUrl {
    /// Where to connect.
    pub portal: Portal,
    /// CHAP credentials, if the URL has them.
    pub credentials: Option<Credentials>,
    /// Target name (TargetName key).
    pub target: String,
    /// Logical unit number.
    pub lun: u16,
}

impl IscsiUrl {
    /// Parses a URL.
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        if s.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let rest = s.strip_prefix("iscsi://").ok_or(UrlError::Scheme)?;
        let (authority, path) = rest.split_once('/').ok_or(UrlError::MissingTarget)?;
        let (credentials, hostport) = split_credentials(authority)?;
        let portal = parse_host_port(hostport)?;
        let (target, lun) = path.split_once('/').ok_or(if path.is_empty() {
            UrlError::MissingTarget
        } else {
            UrlError::MissingLun
        })?;
        if target.is_empty() {
            return Err(UrlError::MissingTarget);
        }
        if !idm::keys::is_iscsi_name(target) || !idm::text::is_text_value(target) {
            return Err(UrlError::Target(target.to_owned()));
        }
        let (lun, trailing) = lun.split_once('/').unwrap_or((lun, ""));
        if !trailing.is_empty() {
            return Err(UrlError::Trailing(trailing.to_owned()));
        }
        if lun.is_empty() {
            return Err(UrlError::MissingLun);
        }
        let lun = parse_decimal(lun)
            .filter(|&n| n <= u64::from(MAX_LUN))
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| UrlError::Lun(lun.to_owned()))?;
        Ok(Self {
            portal,
            credentials,
            target: target.to_owned(),
            lun,
        })
    }

    /// The 8-byte LUN field for this URL's LUN (SAM single-level addressing).
    pub fn lun_field(&self) -> u64 {
        encode_lun(self.lun)
    }
}

impl FromStr for IscsiUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, UrlError> {
        Self::parse(s)
    }
}

impl fmt::Display for IscsiUrl {
    /// Writes the URL without the secret (`user%***@` when there are credentials).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("iscsi://")?;
        if let Some(c) = &self.credentials {
            write!(f, "{}%***@", c.user)?;
        }
        write!(f, "{}/{}/{}", self.portal, self.target, self.lun)
    }
}

/// Encodes a LUN number as the 8-byte LUN field: peripheral addressing below 256,
/// flat addressing up to [`MAX_LUN`] (SAM-5 §4.7). Larger values are clamped.
pub fn encode_lun(lun: u16) -> u64 {
    let lun = lun.min(MAX_LUN);
    let (b0, b1) = if lun < 256 {
        (0u8, lun as u8)
    } else {
        (0x40 | (lun >> 8) as u8, (lun & 0xff) as u8)
    };
    (u64::from(b0) << 56) | (u64::from(b1) << 48)
}

fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn split_credentials(authority: &str) -> Result<(Option<Credentials>, &str), UrlError> {
    match authority.rsplit_once('@') {
        None => Ok((None, authority)),
        Some((cred, hostport)) => {
            let (user, secret) = cred.split_once('%').ok_or(UrlError::Credentials)?;
            if user.is_empty() || secret.is_empty() {
                return Err(UrlError::Credentials);
            }
            Ok((
                Some(Credentials {
                    user: user.to_owned(),
                    secret: secret.to_owned(),
                }),
                hostport,
            ))
        }
    }
}

fn parse_port(p: &str) -> Result<u16, UrlError> {
    parse_decimal(p)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n != 0)
        .ok_or_else(|| UrlError::Port(p.to_owned()))
}

fn parse_host_port(s: &str) -> Result<Portal, UrlError> {
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| UrlError::Ipv6(s.to_owned()))?;
        let ip: std::net::Ipv6Addr = addr.parse().map_err(|_| UrlError::Ipv6(s.to_owned()))?;
        let port = match after {
            "" => DEFAULT_PORT,
            p => parse_port(
                p.strip_prefix(':')
                    .ok_or_else(|| UrlError::Port(p.to_owned()))?,
            )?,
        };
        return Ok(Portal {
            host: Host::Ipv6(ip),
            port,
        });
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, parse_port(p)?),
        None => (s, DEFAULT_PORT),
    };
    let ok = !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !ok {
        return Err(UrlError::Host(host.to_owned()));
    }
    Ok(Portal {
        host: Host::Name(host.to_owned()),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url() {
        let u =
            IscsiUrl::parse("iscsi://alice%s3cr%et@10.0.0.1:3261/iqn.2026-11.org.example:tgt/1")
                .unwrap();
        assert_eq!(u.portal.host, Host::Name("10.0.0.1".into()));
        assert_eq!(u.portal.port, 3261);
        let c = u.credentials.clone().unwrap();
        assert_eq!((c.user.as_str(), c.secret.as_str()), ("alice", "s3cr%et"));
        assert!(!format!("{c:?}").contains("s3cr"));
        assert!(!u.to_string().contains("s3cr"));
        assert_eq!(u.target, "iqn.2026-11.org.example:tgt");
        assert_eq!(u.lun, 1);
        assert_eq!(u.lun_field(), 0x0001_0000_0000_0000);
    }

    #[test]
    fn defaults_and_ipv6() {
        let u = IscsiUrl::parse("iscsi://host.example/iqn.a:b/0").unwrap();
        assert_eq!(u.portal.port, DEFAULT_PORT);
        assert_eq!(u.credentials, None);
        let u = IscsiUrl::parse("iscsi://[::1]:3262/iqn.a:b/300").unwrap();
        assert_eq!(u.portal.host, Host::Ipv6("::1".parse().unwrap()));
        assert_eq!(u.portal.port, 3262);
        assert_eq!(u.portal.socket_addr_string(), "[::1]:3262");
        assert_eq!(u.lun_field(), 0x412c_0000_0000_0000);
        let u = IscsiUrl::parse("iscsi://[fe80::1]/eui.0123456789abcdef/2").unwrap();
        assert_eq!(u.portal.port, 3260);
    }

    #[test]
    fn errors() {
        use UrlError as E;
        let cases: &[(&str, UrlError)] = &[
            ("http://h/iqn.a:b/1", E::Scheme),
            ("iscsi://h", E::MissingTarget),
            ("iscsi://h/", E::MissingTarget),
            ("iscsi://h//1", E::MissingTarget),
            ("iscsi://h/iqn.a:b", E::MissingLun),
            ("iscsi://h/iqn.a:b/", E::MissingLun),
            ("iscsi://h/iqn.a:b/x", E::Lun("x".into())),
            ("iscsi://h/iqn.a:b/16384", E::Lun("16384".into())),
            (
                "iscsi://h/iqn.a:b/99999999999999999999",
                E::Lun("99999999999999999999".into()),
            ),
            ("iscsi://h/iqn.a:b/1/x", E::Trailing("x".into())),
            ("iscsi://h/notaname/1", E::Target("notaname".into())),
            ("iscsi://h:0/iqn.a:b/1", E::Port("0".into())),
            ("iscsi://h:65536/iqn.a:b/1", E::Port("65536".into())),
            ("iscsi://h:/iqn.a:b/1", E::Port("".into())),
            ("iscsi://:3260/iqn.a:b/1", E::Host("".into())),
            ("iscsi://h h/iqn.a:b/1", E::Host("h h".into())),
            ("iscsi://[::1/iqn.a:b/1", E::Ipv6("[::1".into())),
            ("iscsi://[zz]:1/iqn.a:b/1", E::Ipv6("[zz]:1".into())),
            ("iscsi://[::1]x/iqn.a:b/1", E::Port("x".into())),
            ("iscsi://user@h/iqn.a:b/1", E::Credentials),
            ("iscsi://%s@h/iqn.a:b/1", E::Credentials),
            ("iscsi://u%@h/iqn.a:b/1", E::Credentials),
        ];
        for (s, e) in cases {
            assert_eq!(IscsiUrl::parse(s).as_ref(), Err(e), "{s}");
        }
        let long = format!("iscsi://h/iqn.a:{}/1", "x".repeat(MAX_URL_LEN));
        assert_eq!(IscsiUrl::parse(&long), Err(E::TooLong));
        let long_host = format!("iscsi://{}/iqn.a:b/1", "h".repeat(254));
        assert!(matches!(IscsiUrl::parse(&long_host), Err(E::Host(_))));
    }

    #[test]
    fn portals() {
        let (p, c) = Portal::parse("127.0.0.1").unwrap();
        assert_eq!((p.port, c), (3260, None));
        let (p, _) = Portal::parse("[::1]:999").unwrap();
        assert_eq!(p.to_string(), "[::1]:999");
        let (p, c) = Portal::parse("iscsi://u%p@h:1").unwrap();
        assert_eq!((p.port, c.unwrap().user.as_str()), (1, "u"));
        let (p, _) = Portal::parse("iscsi://h:7/iqn.a:b/1").unwrap();
        assert_eq!(p.port, 7);
        assert!(Portal::parse("h:x").is_err());
    }
}
