//! The authentication hook of the security negotiation stage.
//!
//! `AuthMethod=None` needs nothing. Other methods plug in through [`AuthProvider`]:
//! given the URL's `user%secret`, it returns an [`Authenticator`] that the login drives
//! with the target's security keys until it is done. [`ChapProvider`] does CHAP (one-way
//! or mutual) with `idm::chap`. Without a provider, credentials in the URL are refused
//! with [`AuthError::Unsupported`] rather than silently ignored.

use idm::chap::{ChapKeys, InitiatorChap, InitiatorResponded, OsEntropy, Secret};

use crate::url::Credentials;

/// Authentication failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Credentials were given but no authenticator is available for them.
    #[error("authentication not supported: {0}")]
    Unsupported(&'static str),
    /// The target chose a method we did not offer.
    #[error("target chose AuthMethod={0}, which was not offered")]
    Method(String),
    /// The exchange failed (bad keys, wrong target response in mutual CHAP, ...).
    #[error("authentication failed: {0}")]
    Failed(String),
}

/// What one step of the exchange produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthStep {
    /// Keys to send in the next Login Request.
    pub keys: Vec<(String, String)>,
    /// Ask to leave the security stage with that request (T=1, NSG=1).
    pub transit: bool,
}

/// One authentication exchange, initiator side (e.g. CHAP).
pub trait Authenticator: Send {
    /// The AuthMethod value to offer, e.g. `"CHAP"`.
    fn method(&self) -> &'static str;

    /// Called with the target's keys of each security-stage Login Response once the
    /// target has chosen [`method`](Self::method) (the first call gets the response
    /// that chose it). Returns the keys for the next request.
    fn step(&mut self, target_keys: &[(&str, &str)]) -> Result<AuthStep, AuthError>;

    /// Called with the keys of the response in which the target left the security
    /// stage (mutual CHAP: the target's CHAP_N/CHAP_R to verify).
    fn finish(&mut self, target_keys: &[(&str, &str)]) -> Result<(), AuthError>;
}

/// Makes an [`Authenticator`] for each login from the URL's credentials.
pub trait AuthProvider: Send + Sync {
    /// Starts one exchange.
    fn start(&self, credentials: &Credentials) -> Result<Box<dyn Authenticator>, AuthError>;
}

/// CHAP with MD5 (RFC 7143 §12.1.3) from `idm::chap`: one-way, or mutual when a
/// target secret is set.
#[derive(Clone, Default)]
pub struct ChapProvider {
    mutual: Option<(Option<String>, Secret)>,
}

impl std::fmt::Debug for ChapProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapProvider")
            .field("mutual", &self.mutual.is_some())
            .finish()
    }
}

impl ChapProvider {
    /// One-way CHAP: the target checks us.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mutual CHAP: the target must also answer our challenge with `target_secret`
    /// (and as `target_user` when given).
    pub fn mutual(target_user: Option<String>, target_secret: &str) -> Result<Self, AuthError> {
        let secret = Secret::new(target_secret).map_err(|e| AuthError::Failed(e.to_string()))?;
        Ok(Self {
            mutual: Some((target_user, secret)),
        })
    }
}

impl AuthProvider for ChapProvider {
    fn start(&self, c: &Credentials) -> Result<Box<dyn Authenticator>, AuthError> {
        let secret =
            Secret::new(c.secret.as_str()).map_err(|e| AuthError::Failed(e.to_string()))?;
        let mut chap = InitiatorChap::new(c.user.clone(), secret);
        if let Some((user, secret)) = &self.mutual {
            chap = chap.with_mutual(user.clone(), secret.clone());
        }
        Ok(Box::new(Chap::Start(chap)))
    }
}

/// The CHAP exchange, initiator side.
enum Chap {
    Start(InitiatorChap),
    Offered(InitiatorChap),
    Responded(InitiatorResponded),
    Done,
}

fn owned(reply: Vec<(&'static str, String)>) -> Vec<(String, String)> {
    reply.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

impl Authenticator for Chap {
    fn method(&self) -> &'static str {
        "CHAP"
    }

    fn step(&mut self, target_keys: &[(&str, &str)]) -> Result<AuthStep, AuthError> {
        match std::mem::replace(self, Chap::Done) {
            Chap::Start(c) => {
                let keys = owned(c.offer());
                *self = Chap::Offered(c);
                Ok(AuthStep {
                    keys,
                    transit: false,
                })
            }
            Chap::Offered(c) => {
                let k = ChapKeys::from_pairs(target_keys);
                let (responded, reply) = c
                    .respond(&k, &mut OsEntropy)
                    .map_err(|e| AuthError::Failed(e.to_string()))?;
                *self = Chap::Responded(responded);
                Ok(AuthStep {
                    keys: owned(reply),
                    transit: true,
                })
            }
            Chap::Responded(_) | Chap::Done => Err(AuthError::Failed(
                "target continued the security stage after CHAP_R".to_owned(),
            )),
        }
    }

    fn finish(&mut self, target_keys: &[(&str, &str)]) -> Result<(), AuthError> {
        match std::mem::replace(self, Chap::Done) {
            Chap::Responded(r) => r
                .verify_target(&ChapKeys::from_pairs(target_keys))
                .map_err(|e| AuthError::Failed(e.to_string())),
            _ => Err(AuthError::Failed(
                "target left the security stage before CHAP completed".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idm::chap::{ChapAccount, FixedEntropy, TargetChap};

    fn creds() -> Credentials {
        Credentials {
            user: "alice".into(),
            secret: "alice-secret-1".into(),
        }
    }

    /// Our CHAP steps against idm's target side, one-way and mutual.
    #[test]
    fn chap_against_the_target_side() {
        for mutual in [false, true] {
            let provider = if mutual {
                ChapProvider::mutual(Some("tgt".into()), "target-secret-1").unwrap()
            } else {
                ChapProvider::new()
            };
            let mut a = provider.start(&creds()).unwrap();
            assert_eq!(a.method(), "CHAP");
            let first = a.step(&[]).unwrap();
            assert_eq!(first.keys, vec![("CHAP_A".to_owned(), "5".to_owned())]);
            assert!(!first.transit);
            let offer: Vec<(&str, &str)> = first
                .keys
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let (challenged, challenge) = TargetChap::new()
                .challenge(
                    &ChapKeys::from_pairs(&offer),
                    &mut FixedEntropy::new(&[7, 1]),
                )
                .unwrap();
            let challenge: Vec<(&str, &str)> =
                challenge.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let answer = a.step(&challenge).unwrap();
            assert!(answer.transit);
            let answer: Vec<(&str, &str)> = answer
                .keys
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let ini_secret = Secret::new("alice-secret-1").unwrap();
            let tgt_secret = Secret::new("target-secret-1").unwrap();
            let accounts = [ChapAccount {
                user: "alice",
                secret: &ini_secret,
            }];
            let own = mutual.then_some(ChapAccount {
                user: "tgt",
                secret: &tgt_secret,
            });
            let ok = challenged
                .verify(&ChapKeys::from_pairs(&answer), &accounts, own)
                .unwrap();
            let reply: Vec<(&str, &str)> = ok.reply.iter().map(|(k, v)| (*k, v.as_str())).collect();
            a.finish(&reply).unwrap();
        }
    }

    #[test]
    fn short_secrets_and_misuse_are_refused() {
        let short = Credentials {
            user: "u".into(),
            secret: "short".into(),
        };
        assert!(matches!(
            ChapProvider::new().start(&short),
            Err(AuthError::Failed(_))
        ));
        let mut a = ChapProvider::new().start(&creds()).unwrap();
        assert!(a.finish(&[]).is_err(), "finish before the exchange");
    }
}
