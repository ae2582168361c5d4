//! The provider's signed callback for a Mynaportal decision
//! (PROVIDER-PROTOCOL.md "Mynaportal-routed consent"): a JWS whose key is
//! found by `kid` in the provider's JWKS (fetched from the provider, cached,
//! fetched again for an unknown `kid`; never taken from the token), whose
//! algorithm is pinned to RS256, and whose `iss`, `aud`, `iat`, `exp` and
//! `jti` are checked. Each `jti` is taken once: the same decision again is a
//! redelivery (nothing changes), even signed anew with other `iat`/`exp`,
//! as a provider retrying does; other claims under a known `jti` are a
//! replay.
//!
//! A granted decision records an active consent (channel `mynaportal`, the
//! callback JWT as its evidence, the certificate serial and the PPID it
//! names), registers it with the provider and sends the receipt; a declined
//! one closes the request. Anything refused writes only an audit event of
//! the refusal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, SubsecRound, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::records::{self, Channel, Receipt};
use super::{PURPOSE, requests};
use crate::audit::events::{
    Change, ConsentGranted, ConsentRequestDeclined, ConsentRequestGranted, CustomerUpdated, Event,
    GrantedBy, NoticeRef, UpdateSource,
};
use crate::audit::{self, Actor, AuditContext};
use crate::customers::{self, CustomerStatus};
use crate::db;
use crate::domain::CertSerial;
use crate::entities::{consents, customers as customer_rows, webhook_receipts};
use crate::error::CoreError;
use crate::notices::{NoticeKind, Notices};
use crate::provider::Provider;

/// The only algorithm the provider signs callbacks with.
pub const ALGORITHM: Algorithm = Algorithm::RS256;
/// Longest lifetime a callback may claim (`exp - iat`).
pub const MAX_LIFETIME: i64 = 600;
/// Largest body taken.
pub const MAX_BODY: usize = 16 * 1024;
/// The JWKS is fetched again for an unknown `kid` at most this often.
const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// Why a callback is refused; each has its problem type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackRefusal {
    #[error("the body is not a JWS the provider would send")]
    Malformed,
    #[error("the token is not signed with RS256")]
    AlgorithmNotAllowed,
    #[error("no key of the provider has this kid")]
    UnknownKey,
    #[error("the signature does not verify with the provider's key")]
    SignatureInvalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token's issuer, audience or times are not acceptable")]
    ClaimsInvalid,
    #[error("this jti was taken before with another body")]
    Replayed,
    #[error("no consent request matches the token")]
    UnknownRequest,
    #[error("the provider's keys cannot be fetched now")]
    KeysUnavailable,
    /// Signed by the provider, but what it decided cannot be recorded: the
    /// named claim (`cert_serial`, `consented_at`, `expires_at`) is not valid.
    #[error("its {0} is not acceptable")]
    DecisionInvalid(&'static str),
}

impl CallbackRefusal {
    pub fn slug(&self) -> &'static str {
        match self {
            Self::Malformed => "callback-malformed",
            Self::AlgorithmNotAllowed => "callback-algorithm-not-allowed",
            Self::UnknownKey => "callback-unknown-key",
            Self::SignatureInvalid => "callback-signature-invalid",
            Self::Expired => "callback-expired",
            Self::ClaimsInvalid => "callback-claims-invalid",
            Self::Replayed => "callback-replayed",
            Self::UnknownRequest => "unknown-consent-request",
            Self::KeysUnavailable => "provider-keys-unavailable",
            Self::DecisionInvalid(_) => "callback-decision-invalid",
        }
    }
}

/// The provider's callback keys, cached.
pub struct ProviderKeys {
    provider: Arc<dyn Provider>,
    cache: tokio::sync::Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    keys: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

impl ProviderKeys {
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self {
            provider,
            cache: tokio::sync::Mutex::new(Cached::default()),
        }
    }

    /// Whether a callback could be checked now: the provider publishes at
    /// least one usable key (fetched when none is known, at most every 30 s).
    pub async fn available(&self) -> bool {
        let mut cache = self.cache.lock().await;
        if !cache.keys.is_empty() {
            return true;
        }
        if cache.fetched.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            return false;
        }
        Self::fetch(self.provider.as_ref(), &mut cache)
            .await
            .is_ok()
            && !cache.keys.is_empty()
    }

    /// The key with `kid`, fetching the JWKS when it is not known (and was
    /// not fetched in the last 30 s: forged kids do not make kihon4 hammer
    /// the provider).
    async fn key(&self, kid: &str) -> Result<DecodingKey, CallbackRefusal> {
        let mut cache = self.cache.lock().await;
        if let Some(key) = cache.keys.get(kid) {
            return Ok(key.clone());
        }
        if cache.fetched.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            return Err(CallbackRefusal::UnknownKey);
        }
        Self::fetch(self.provider.as_ref(), &mut cache).await?;
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or(CallbackRefusal::UnknownKey)
    }

    async fn fetch(provider: &dyn Provider, cache: &mut Cached) -> Result<(), CallbackRefusal> {
        let raw = provider
            .jwks()
            .await
            .map_err(|_| CallbackRefusal::KeysUnavailable)?;
        let set: JwkSet =
            serde_json::from_value(raw).map_err(|_| CallbackRefusal::KeysUnavailable)?;
        cache.keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
            })
            .collect();
        cache.fetched = Some(Instant::now());
        Ok(())
    }
}

/// Who kihon4 expects the callbacks from and for.
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// The provider's `iss`.
    pub issuer: String,
    /// kihon4's `client_id` at the provider: the `aud`.
    pub client_id: String,
    pub timezone: chrono_tz::Tz,
    /// The institution's role, recorded on the consent.
    pub role: crate::domain::JpkiRole,
}

#[derive(Debug, Deserialize, serde::Serialize)]
struct Claims {
    /// Checked to be exactly kihon4's `client_id` (not an array); left out
    /// of what the decision says, as it was before it was read here.
    #[serde(default, skip_serializing)]
    aud: Option<serde_json::Value>,
    iat: i64,
    exp: i64,
    jti: String,
    request_id: String,
    request_ref: String,
    decision: String,
    cert_serial: Option<String>,
    consented_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    ppid: Option<String>,
}

/// What an accepted callback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    Granted {
        consent_id: Uuid,
    },
    Declined,
    /// The same decision delivered again: nothing changed.
    Redelivered,
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Checks the token's signature and claims; nothing is written.
async fn verify(
    keys: &ProviderKeys,
    settings: &CallbackSettings,
    body: &[u8],
) -> Result<Claims, CallbackRefusal> {
    if body.is_empty() || body.len() > MAX_BODY {
        return Err(CallbackRefusal::Malformed);
    }
    let token = std::str::from_utf8(body)
        .map_err(|_| CallbackRefusal::Malformed)?
        .trim();
    if token.split('.').count() != 3 {
        return Err(CallbackRefusal::Malformed);
    }
    // The header is read only to find the key. Its `alg` is read by hand
    // first, so that `none` and algorithms the JWT library does not know are
    // named as what they are; a `crit` header is refused, as kihon4
    // understands no extension (RFC 7515 §4.1.11).
    let raw_header = token.split('.').next().unwrap_or_default();
    let raw_header: serde_json::Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw_header)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .filter(serde_json::Value::is_object)
        .ok_or(CallbackRefusal::Malformed)?;
    match raw_header.get("alg") {
        Some(serde_json::Value::String(alg)) if alg == "RS256" => {}
        Some(serde_json::Value::String(_)) => return Err(CallbackRefusal::AlgorithmNotAllowed),
        _ => return Err(CallbackRefusal::Malformed),
    }
    if raw_header.get("crit").is_some() {
        return Err(CallbackRefusal::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| CallbackRefusal::Malformed)?;
    if header.alg != ALGORITHM {
        return Err(CallbackRefusal::AlgorithmNotAllowed);
    }
    let kid = header.kid.ok_or(CallbackRefusal::UnknownKey)?;
    let key = keys.key(&kid).await?;
    let mut validation = Validation::new(ALGORITHM);
    validation.set_audience(&[settings.client_id.as_str()]);
    validation.set_issuer(&[settings.issuer.as_str()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    validation.leeway = 30;
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature => CallbackRefusal::SignatureInvalid,
            ErrorKind::ExpiredSignature => CallbackRefusal::Expired,
            ErrorKind::InvalidAudience
            | ErrorKind::InvalidIssuer
            | ErrorKind::MissingRequiredClaim(_)
            | ErrorKind::ImmatureSignature => CallbackRefusal::ClaimsInvalid,
            ErrorKind::InvalidAlgorithm => CallbackRefusal::AlgorithmNotAllowed,
            _ => CallbackRefusal::Malformed,
        }
    })?;
    let claims = data.claims;
    // `aud` must equal kihon4's client id: an array, even one holding it, is
    // not what the provider sends.
    if claims.aud.as_ref().and_then(serde_json::Value::as_str) != Some(settings.client_id.as_str())
    {
        return Err(CallbackRefusal::ClaimsInvalid);
    }
    let at = Utc::now().timestamp();
    if claims.exp - claims.iat > MAX_LIFETIME || claims.iat > at + 60 || claims.exp <= claims.iat {
        return Err(CallbackRefusal::ClaimsInvalid);
    }
    // What kihon4 keeps of the token's own text holds no control,
    // bidirectional or format character, even signed by the provider. (The
    // provider's identifiers are not checked for My Numbers: a random hex
    // identifier can hold twelve digits that pass the check digit, and
    // refusing it would lose the customer's decision.)
    let plain = |text: &str| crate::domain::spoofing_character(text).is_none();
    if claims.jti.is_empty() || claims.jti.len() > 200 || !plain(&claims.jti) {
        return Err(CallbackRefusal::Malformed);
    }
    if claims.ppid.as_deref().is_some_and(|p| !plain(p)) || !plain(&claims.request_id) {
        return Err(CallbackRefusal::Malformed);
    }
    match claims.decision.as_str() {
        "declined" => {}
        "granted"
            if claims.cert_serial.is_some()
                && claims.consented_at.is_some()
                && claims.expires_at.is_some()
                && claims
                    .ppid
                    .as_ref()
                    .is_some_and(|p| !p.is_empty() && p.len() <= 128) => {}
        _ => return Err(CallbackRefusal::Malformed),
    }
    if claims.decision == "granted" {
        check_decision(settings, &claims, Utc::now())?;
    }
    Ok(claims)
}

/// What a granted decision must hold to be recorded: a certificate serial
/// kihon4 can keep (RFC 5280: a positive integer of at most 20 octets, in
/// hex), a consent given by now, and an expiry after now and no later than
/// the consent period allows (ten years from the day after it was given:
/// docs/architecture.md#consent-terms).
fn check_decision(
    settings: &CallbackSettings,
    claims: &Claims,
    now: DateTime<Utc>,
) -> Result<(), CallbackRefusal> {
    let serial = claims.cert_serial.as_deref().unwrap_or_default();
    if serial.len() > 64 || CertSerial::parse(serial).is_err() {
        return Err(CallbackRefusal::DecisionInvalid("cert_serial"));
    }
    let (Some(consented_at), Some(expires_at)) = (claims.consented_at, claims.expires_at) else {
        return Err(CallbackRefusal::Malformed);
    };
    if consented_at > now + chrono::Duration::seconds(60) {
        return Err(CallbackRefusal::DecisionInvalid("consented_at"));
    }
    let longest = super::records::expires_at(
        consented_at,
        super::ValidityStart::NextDay,
        settings.timezone,
    );
    if expires_at <= now || expires_at <= consented_at || expires_at > longest {
        return Err(CallbackRefusal::DecisionInvalid("expires_at"));
    }
    Ok(())
}

/// Takes a callback: verified, then applied once, in one transaction with
/// its audit events. A refusal is itself audited and writes nothing else.
pub async fn receive(
    db: &DatabaseConnection,
    keys: &ProviderKeys,
    notices: &Notices,
    settings: &CallbackSettings,
    request_id: Option<String>,
    body: &[u8],
    tally: &crate::refusals::Tally,
) -> Result<Result<Accepted, CallbackRefusal>, CoreError> {
    let ctx = AuditContext::new(Actor::provider(), request_id);
    let outcome = match verify(keys, settings, body).await {
        Ok(claims) => apply(db, notices, settings, &ctx, body, claims).await?,
        Err(refusal) => Err(refusal),
    };
    if let Err(refusal) = &outcome {
        refused(db, &ctx, refusal, tally).await?;
    }
    Ok(outcome)
}

async fn refused(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    refusal: &CallbackRefusal,
    tally: &crate::refusals::Tally,
) -> Result<(), CoreError> {
    let refusal = crate::refusals::Refusal::Webhook {
        reason: refusal.slug(),
    };
    crate::refusals::record(db, &tally.settings, &tally.source, ctx, refusal).await?;
    Ok(())
}

async fn apply(
    db: &DatabaseConnection,
    notices: &Notices,
    settings: &CallbackSettings,
    ctx: &AuditContext,
    body: &[u8],
    claims: Claims,
) -> Result<Result<Accepted, CallbackRefusal>, CoreError> {
    let at = now();
    // What the decision says, whatever its signing time: a retry signed anew
    // is the same decision.
    let mut said = serde_json::to_value(&claims).map_err(|e| CoreError::Corrupt(e.to_string()))?;
    if let Some(map) = said.as_object_mut() {
        map.remove("iat");
        map.remove("exp");
    }
    let body_sha256 = hex::encode(Sha256::digest(crate::audit::canonical_json(&said)));
    let Ok(request_uuid) = Uuid::parse_str(&claims.request_ref) else {
        return Ok(Err(CallbackRefusal::UnknownRequest));
    };
    let txn = db::begin_write(db).await?;
    if let Some(seen) = webhook_receipts::Entity::find_by_id(claims.jti.clone())
        .one(&txn)
        .await?
    {
        txn.rollback().await?;
        return Ok(if seen.body_sha256 == body_sha256 {
            Ok(Accepted::Redelivered)
        } else {
            Err(CallbackRefusal::Replayed)
        });
    }
    let request = match requests::get(&txn, request_uuid).await {
        Ok(r) if r.provider_request_id == claims.request_id => r,
        Ok(_) | Err(CoreError::NotFound(_)) => {
            txn.rollback().await?;
            return Ok(Err(CallbackRefusal::UnknownRequest));
        }
        Err(e) => return Err(e),
    };
    webhook_receipts::Entity::insert(webhook_receipts::ActiveModel {
        jti: Set(claims.jti.clone()),
        body_sha256: Set(body_sha256),
        request_id: Set(Some(request.id)),
        received_at: Set(at),
    })
    .exec_without_returning(&txn)
    .await?;
    // A decision already taken (delivered again under a new jti): kept as it was.
    if matches!(request.status.as_str(), "granted" | "declined") {
        txn.commit().await?;
        return Ok(Ok(Accepted::Redelivered));
    }
    let accepted = if claims.decision == "declined" {
        requests::decide(&txn, &request, "declined", None, at).await?;
        let event = Event::ConsentRequestDeclined(ConsentRequestDeclined {
            request_id: request.id,
            customer_id: request.customer_id,
            before: request.status.clone(),
            jti: claims.jti.clone(),
        });
        audit::append(&txn, ctx, event).await?;
        Accepted::Declined
    } else {
        let consent_id = grant(&txn, notices, settings, ctx, &request, &claims, body, at).await?;
        Accepted::Granted { consent_id }
    };
    txn.commit().await?;
    Ok(Ok(accepted))
}

/// Records the consent given on Mynaportal, in the callback's transaction:
/// the consent and its first event, the renewal of the active consent, its
/// registration intent, the record tied to the certificate, the request
/// decided, the receipt and the audit events.
#[allow(clippy::too_many_arguments)]
async fn grant(
    txn: &sea_orm::DatabaseTransaction,
    notices: &Notices,
    settings: &CallbackSettings,
    ctx: &AuditContext,
    request: &crate::entities::consent_requests::Model,
    claims: &Claims,
    body: &[u8],
    at: DateTime<Utc>,
) -> Result<Uuid, CoreError> {
    let serial = claims
        .cert_serial
        .as_deref()
        .and_then(|s| CertSerial::parse(s).ok())
        .ok_or_else(|| CoreError::Corrupt("a callback's cert_serial".into()))?;
    let consented_at = claims.consented_at.expect("checked").trunc_subsecs(6);
    let expires_at = claims.expires_at.expect("checked").trunc_subsecs(6);
    let row = customers::lock(txn, request.customer_id).await?;
    let customer = customers::Customer::try_from(row.clone())?;
    let previous = records::active_consent(txn, customer.id, at).await?;
    let id = Uuid::now_v7();
    consents::Entity::insert(mynaportal_consent_row(
        id,
        customer.id,
        settings,
        claims,
        body,
        &serial,
        (consented_at, expires_at),
    ))
    .exec_without_returning(txn)
    .await?;
    records::first_event(txn, ctx, id, at).await?;
    if let Some((old, seq)) = &previous {
        let record_serial = row.jpki_cert_serial.as_deref();
        records::renew(txn, ctx, old, *seq, id, record_serial, serial.as_str(), at).await?;
    }
    records::subscribe(txn, id, serial.as_str(), at).await?;
    let customer_event = match customer.jpki_cert_serial.as_ref() == Some(&serial) {
        true => None,
        false => Some(tie_to_certificate(txn, &row, &serial, id, at).await?),
    };
    requests::decide(txn, request, "granted", Some(id), at).await?;
    let mut receipt = None;
    if customer.status != CustomerStatus::Deceased {
        let r = Receipt {
            customer: &customer,
            name: customer.basic4.as_ref().map(|b| b.name.as_str()),
            text_version: "mynaportal",
            channel: Channel::Mynaportal,
            granted_at: consented_at,
            expires_at,
            timezone: settings.timezone,
        };
        let notice = records::send_receipt(txn, notices, r).await?;
        receipt = Some(NoticeRef::new(notice, NoticeKind::ConsentReceipt));
    }
    let (granted, renewed) = records::granted_events(ConsentGranted {
        consent_id: id,
        customer_id: customer.id,
        channel: Channel::Mynaportal,
        cert_serial: serial.as_str().to_owned(),
        granted_at: consented_at,
        expires_at,
        renews: previous.as_ref().map(|(old, _)| old.id),
        notice: receipt,
        by: GrantedBy::Mynaportal {
            request: request.id,
            jti: claims.jti.clone(),
        },
    });
    audit::append(txn, ctx, granted).await?;
    if let Some(renewed) = renewed {
        audit::append(txn, ctx, renewed).await?;
    }
    if let Some(event) = customer_event {
        audit::append(txn, ctx, event).await?;
    }
    let event = Event::ConsentRequestGranted(ConsentRequestGranted {
        request_id: request.id,
        customer_id: customer.id,
        before: request.status.clone(),
        consent_id: id,
    });
    audit::append(txn, ctx, event).await?;
    Ok(id)
}

/// The row of a consent given on Mynaportal: the callback JWT is its
/// evidence, `period` when it was given and when it ends.
fn mynaportal_consent_row(
    id: Uuid,
    customer_id: Uuid,
    settings: &CallbackSettings,
    claims: &Claims,
    body: &[u8],
    serial: &CertSerial,
    period: (DateTime<Utc>, DateTime<Utc>),
) -> consents::ActiveModel {
    let (consented_at, expires_at) = period;
    let token = std::str::from_utf8(body).unwrap_or_default().trim();
    let signature = token.rsplit('.').next().unwrap_or_default();
    let payload = token.split('.').nth(1).unwrap_or_default();
    consents::ActiveModel {
        id: Set(id),
        customer_id: Set(customer_id),
        purpose: Set(PURPOSE.to_owned()),
        channel: Set(Channel::Mynaportal.as_str().to_owned()),
        role: Set(settings.role.as_str().to_owned()),
        text_version: Set("mynaportal".to_owned()),
        text_sha256: Set(hex::encode(Sha256::digest(b""))),
        cert_serial: Set(serial.as_str().to_owned()),
        // The certificate itself is not seen on this route.
        cert_not_after: Set(expires_at),
        granted_at: Set(consented_at),
        expires_at: Set(expires_at),
        document_sha256: Set(hex::encode(Sha256::digest(token.as_bytes()))),
        signature_sha256: Set(hex::encode(Sha256::digest(signature.as_bytes()))),
        signed_document: Set(Some(token.as_bytes().to_vec())),
        certificate: Set(None),
        anchor_key_id: Set(None),
        verification_id: Set(Some(claims.request_id.clone())),
        certificate_id: Set(None),
        signed_content: Set(payload.as_bytes().to_vec()),
        revocation_method: Set("provider".to_owned()),
        ppid: Set(claims.ppid.clone()),
        evidence_form: Set("mynaportal".to_owned()),
        provider_user_id: Set(None),
    }
}

/// The record follows the certificate the holder consented with (consent
/// `consent`); returns its `customer.updated`.
async fn tie_to_certificate(
    txn: &sea_orm::DatabaseTransaction,
    row: &customer_rows::Model,
    serial: &CertSerial,
    consent: Uuid,
    at: DateTime<Utc>,
) -> Result<Event, CoreError> {
    let version = row.version + 1;
    customer_rows::Entity::update_many()
        .col_expr(
            customer_rows::Column::JpkiCertSerial,
            Expr::value(serial.as_str()),
        )
        .col_expr(customer_rows::Column::Version, Expr::value(version))
        .col_expr(customer_rows::Column::UpdatedAt, Expr::value(at))
        .filter(customer_rows::Column::Id.eq(row.id))
        .exec(txn)
        .await?;
    let mut event = CustomerUpdated::new(row.id, Change::new(row.version, version));
    event.jpki_cert_serial = Some(Change::new(
        row.jpki_cert_serial.clone(),
        Some(serial.as_str().to_owned()),
    ));
    event.source = Some(UpdateSource::Mynaportal { consent });
    Ok(Event::CustomerUpdated(event))
}
