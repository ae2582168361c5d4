//! Bearer tokens: checking them for the API, issuing them for the CLI.
//! The algorithm is pinned by configuration; `exp` is required and may lie
//! at most the configured maximum lifetime ahead, `nbf` honoured, `iss`/`aud`
//! checked when configured; a `crit` header is refused (kihon4 understands
//! no extension, RFC 7515 §4.1.11), and so is a `sub` with control,
//! bidirectional or format characters or anything like a My Number.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The one algorithm bearer tokens are signed with (`KIHON4_JWT_ALGORITHM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    Rs256,
    Es256,
}

impl JwtAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }
}

impl std::str::FromStr for JwtAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "HS256" => Ok(Self::Hs256),
            "RS256" => Ok(Self::Rs256),
            "ES256" => Ok(Self::Es256),
            other => Err(format!("must be HS256, RS256 or ES256, not `{other}`")),
        }
    }
}

/// Where bearer tokens' signatures are checked against.
#[derive(Debug, Clone)]
pub enum JwtKeys {
    /// HS256 with a shared secret.
    Secret(SecretString),
    /// RS256 or ES256 with the issuer's public keys (PEM text, file by file).
    PublicKeys(Vec<(PathBuf, String)>),
}

/// How bearer tokens are checked (and issued by `kihon4 token issue`).
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub algorithm: JwtAlgorithm,
    pub keys: JwtKeys,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// The longest a bearer token may be valid (`exp` ahead of now, or of
    /// its `iat`); a token claiming more is refused.
    pub max_token_lifetime: std::time::Duration,
}

/// The default longest lifetime of a bearer token: a working day and some
/// (`KIHON4_AUTH_MAX_TOKEN_LIFETIME`'s default, `24h`).
pub const DEFAULT_MAX_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(24 * 3600);

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Operator,
    Auditor,
    /// An auditor who may also see personal values in clear (exports with
    /// `include_personal_data`).
    AuditorPii,
    /// A system of the institution that reads the change feed
    /// (`GET /v1/changes`, by default).
    Integration,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Auditor => "auditor",
            Self::AuditorPii => "auditor_pii",
            Self::Integration => "integration",
            Self::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "operator" => Some(Self::Operator),
            "auditor" => Some(Self::Auditor),
            "auditor_pii" => Some(Self::AuditorPii),
            "integration" => Some(Self::Integration),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub sub: String,
    pub roles: Vec<Role>,
}

impl Principal {
    /// Admins may do what every other role may.
    pub fn has(&self, role: Role) -> bool {
        // Admins may do anything; an auditor who may see personal data is an auditor.
        self.roles.iter().any(|&r| {
            r == role || r == Role::Admin || (r == Role::AuditorPii && role == Role::Auditor)
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    /// One audience or several (RFC 7519 allows both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<Audience>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Why a token was refused. Never carries the token or its claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid")]
    Invalid,
}

impl AuthError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Expired => "expired",
            Self::Invalid => "invalid",
        }
    }
}

/// Checks bearer tokens against the configured keys.
pub struct Authenticator {
    keys: Vec<DecodingKey>,
    validation: Validation,
    max_lifetime: std::time::Duration,
}

/// A subject kihon4 may record as the actor of audit events: 1 to 100
/// bytes, no control, bidirectional or format characters, nothing like a
/// My Number (a canonical UUID is taken for one: see
/// [`identifier_holds_my_number`](crate::domain::identifier_holds_my_number)).
pub fn acceptable_subject(sub: &str) -> bool {
    !sub.is_empty()
        && sub.len() <= 100
        && crate::domain::spoofing_character(sub).is_none()
        && !crate::domain::identifier_holds_my_number(sub)
}

impl Authenticator {
    pub fn new(settings: &JwtSettings) -> Result<Self, String> {
        let algorithm = algorithm(settings.algorithm);
        let keys = match &settings.keys {
            JwtKeys::Secret(secret) => {
                vec![DecodingKey::from_secret(secret.expose_secret().as_bytes())]
            }
            JwtKeys::PublicKeys(pems) => pems
                .iter()
                .map(|(path, pem)| {
                    let key = match settings.algorithm {
                        JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                        _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
                    };
                    key.map_err(|e| {
                        format!(
                            "{} is not a {} public key: {e}",
                            path.display(),
                            settings.algorithm.name()
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &settings.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Self {
            keys,
            validation,
            max_lifetime: settings.max_token_lifetime,
        })
    }

    /// Checks a token (without the `Bearer ` prefix).
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() || token.len() > 8192 {
            return Err(AuthError::Invalid);
        }
        match jsonwebtoken::decode_header(token) {
            Ok(header) if header.crit.is_none() => {}
            _ => return Err(AuthError::Invalid),
        }
        let mut refusal = AuthError::Invalid;
        for key in &self.keys {
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => {
                    let claims = data.claims;
                    if !acceptable_subject(&claims.sub) {
                        return Err(AuthError::Invalid);
                    }
                    // A lifetime beyond the maximum, whether counted from
                    // now or from the token's own `iat`.
                    let now = jsonwebtoken::get_current_timestamp();
                    let longest = self.max_lifetime.as_secs() + LEEWAY_SECONDS;
                    if claims.exp > now.saturating_add(longest)
                        || claims
                            .iat
                            .is_some_and(|iat| claims.exp.saturating_sub(iat) > longest)
                    {
                        return Err(AuthError::Invalid);
                    }
                    let roles = claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
                    return Ok(Principal {
                        sub: claims.sub,
                        roles,
                    });
                }
                Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                    refusal = AuthError::Expired
                }
                Err(_) => {}
            }
        }
        Err(refusal)
    }
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::Hs256 => Algorithm::HS256,
        JwtAlgorithm::Rs256 => Algorithm::RS256,
        JwtAlgorithm::Es256 => Algorithm::ES256,
    }
}

/// Issues a token for the configured key. With public keys configured, the
/// matching private key (PKCS#8 PEM) must be given.
pub fn issue_token(
    settings: &JwtSettings,
    private_key_pem: Option<&str>,
    sub: &str,
    roles: &[Role],
    ttl: std::time::Duration,
) -> Result<String, String> {
    let key = match (&settings.keys, private_key_pem) {
        (JwtKeys::Secret(secret), _) => EncodingKey::from_secret(secret.expose_secret().as_bytes()),
        (JwtKeys::PublicKeys(_), Some(pem)) => match settings.algorithm {
            JwtAlgorithm::Es256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .map_err(|e| format!("the private key is not usable: {e}"))?,
        (JwtKeys::PublicKeys(_), None) => {
            return Err(format!(
                "tokens are checked with {} public keys: give the private key with --private-key",
                settings.algorithm.name()
            ));
        }
    };
    if ttl > settings.max_token_lifetime {
        return Err(format!(
            "a token may be valid for at most {} seconds (KIHON4_AUTH_MAX_TOKEN_LIFETIME)",
            settings.max_token_lifetime.as_secs()
        ));
    }
    if !acceptable_subject(sub) {
        return Err(
            "the subject must be 1 to 100 bytes with no control, bidirectional or format characters and no My Number"
                .into(),
        );
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: sub.to_owned(),
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        exp: now + ttl.as_secs(),
        nbf: Some(now),
        iat: Some(now),
        iss: settings.issuer.clone(),
        aud: settings.audience.clone().map(Audience::One),
    };
    jsonwebtoken::encode(&Header::new(algorithm(settings.algorithm)), &claims, &key)
        .map_err(|e| format!("cannot sign the token: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use std::time::Duration;

    fn settings() -> JwtSettings {
        JwtSettings {
            algorithm: JwtAlgorithm::Hs256,
            keys: JwtKeys::Secret(SecretString::from(
                "0123456789abcdef0123456789abcdef".to_owned(),
            )),
            issuer: Some("kihon4-test".into()),
            audience: Some("kihon4".into()),
            max_token_lifetime: Duration::from_secs(3600),
        }
    }

    fn signed(s: &JwtSettings, header: &Header, claims: &serde_json::Value) -> String {
        let JwtKeys::Secret(secret) = &s.keys else {
            unreachable!()
        };
        jsonwebtoken::encode(
            header,
            claims,
            &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
        )
        .unwrap()
    }

    fn claims(sub: &str, exp_in: u64) -> serde_json::Value {
        serde_json::json!({
            "sub": sub, "roles": ["operator"], "exp": jsonwebtoken::get_current_timestamp() + exp_in,
            "iss": "kihon4-test", "aud": "kihon4"
        })
    }

    #[test]
    fn a_crit_header_is_refused() {
        let s = settings();
        let auth = Authenticator::new(&s).unwrap();
        let plain = Header::new(Algorithm::HS256);
        assert!(
            auth.verify(&signed(&s, &plain, &claims("alice", 60)))
                .is_ok()
        );
        for crit in [vec!["exp".to_owned()], vec!["b64".to_owned()], vec![]] {
            let mut header = Header::new(Algorithm::HS256);
            header.crit = Some(crit);
            assert_eq!(
                auth.verify(&signed(&s, &header, &claims("alice", 60))),
                Err(AuthError::Invalid)
            );
        }
    }

    #[test]
    fn a_lifetime_beyond_the_maximum_is_refused() {
        let s = settings();
        let auth = Authenticator::new(&s).unwrap();
        let header = Header::new(Algorithm::HS256);
        assert!(
            auth.verify(&signed(&s, &header, &claims("alice", 3600)))
                .is_ok()
        );
        assert_eq!(
            auth.verify(&signed(&s, &header, &claims("alice", 3600 + 120))),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.verify(&signed(&s, &header, &claims("alice", 100 * 365 * 86400))),
            Err(AuthError::Invalid)
        );
        // Counted from its own iat too.
        let mut old = claims("alice", 600);
        old["iat"] = serde_json::json!(jsonwebtoken::get_current_timestamp() - 7200);
        assert_eq!(
            auth.verify(&signed(&s, &header, &old)),
            Err(AuthError::Invalid)
        );
        assert!(
            issue_token(
                &s,
                None,
                "alice",
                &[Role::Operator],
                Duration::from_secs(7200)
            )
            .is_err()
        );
    }

    #[test]
    fn a_subject_with_spoofing_characters_or_a_my_number_is_refused() {
        let s = settings();
        let auth = Authenticator::new(&s).unwrap();
        let header = Header::new(Algorithm::HS256);
        for sub in [
            "alice\u{202E}",
            "ali\nce",
            "alice\u{200B}",
            "\u{FEFF}alice",
            "alice\u{2028}",
            "314159265352",
            "user-3141.5926.5352",
            "",
        ] {
            assert_eq!(
                auth.verify(&signed(&s, &header, &claims(sub, 60))),
                Err(AuthError::Invalid),
                "{sub:?}"
            );
            assert!(
                issue_token(&s, None, sub, &[Role::Operator], Duration::from_secs(60)).is_err()
            );
        }
        assert!(
            auth.verify(&signed(&s, &header, &claims("山田 太郎", 60)))
                .is_ok()
        );
    }

    #[test]
    fn issued_tokens_verify_and_carry_roles() {
        let s = settings();
        let token = issue_token(
            &s,
            None,
            "alice",
            &[Role::Operator],
            Duration::from_secs(60),
        )
        .unwrap();
        let p = Authenticator::new(&s).unwrap().verify(&token).unwrap();
        assert_eq!(p.sub, "alice");
        assert!(p.has(Role::Operator) && !p.has(Role::Auditor));
    }

    #[test]
    fn wrong_issuer_audience_or_key_is_refused() {
        let s = settings();
        let token =
            issue_token(&s, None, "alice", &[Role::Admin], Duration::from_secs(60)).unwrap();
        for change in 0..3 {
            let mut other = settings();
            match change {
                0 => other.issuer = Some("someone-else".into()),
                1 => other.audience = Some("another-service".into()),
                _ => other.keys = JwtKeys::Secret(SecretString::from("x".repeat(40))),
            }
            assert_eq!(
                Authenticator::new(&other).unwrap().verify(&token),
                Err(AuthError::Invalid)
            );
        }
    }

    #[test]
    fn an_audience_list_is_accepted() {
        let s = settings();
        let claims = serde_json::json!({
            "sub": "bob", "roles": ["auditor"], "exp": jsonwebtoken::get_current_timestamp() + 60,
            "iss": "kihon4-test", "aud": ["other", "kihon4"]
        });
        let JwtKeys::Secret(secret) = &s.keys else {
            unreachable!()
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
        )
        .unwrap();
        let p = Authenticator::new(&s).unwrap().verify(&token).unwrap();
        assert!(p.has(Role::Auditor));
    }

    #[test]
    fn admins_hold_every_role() {
        let p = Principal {
            sub: "root".into(),
            roles: vec![Role::Admin],
        };
        assert!(p.has(Role::Operator) && p.has(Role::Auditor));
    }
}
