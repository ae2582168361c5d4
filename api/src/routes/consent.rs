//! Consent texts and consent records: role operator.

use actix_web::http::header;
use actix_web::{HttpResponse, get, post, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use kihon4_core::consent::{self, Channel, Consent, GrantRequest, Submitted};
use kihon4_core::domain::{FieldErrors, FreeText, ValueError};
use kihon4_core::jpki::verify::HashAlgorithm;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Page, Paging, next_cursor, page_limit, uuid_cursor};
use crate::AppState;
use crate::extract::{Admin, Auth, JsonBody, Operator};
use crate::problem::{ApiError, ProblemKind};

#[derive(Serialize, ToSchema)]
pub struct ConsentTextView {
    /// Give this as `text_version` with the signed consent.
    version: String,
    /// `ja` or `en`.
    locale: String,
    /// SHA-256 of the text's UTF-8 bytes, hex.
    sha256: String,
    /// The exact text to sign: its UTF-8 bytes are the signed content.
    text: String,
}

/// The consent texts a customer may sign, oldest first. Role: operator.
#[utoipa::path(
    operation_id = "listConsentTexts",
    tag = "consent",
    responses((status = 200, body = Page<ConsentTextView>, description = "Every text (one page: `next_cursor` is null)")),
    security(("bearer" = ["operator"]))
)]
#[get("/v1/consent-texts")]
pub async fn texts(
    state: web::Data<AppState>,
    _auth: Auth<Operator>,
) -> Result<HttpResponse, ApiError> {
    let items = state
        .consent_texts
        .all()
        .iter()
        .map(|t| ConsentTextView {
            version: t.version.clone(),
            locale: t.locale.as_str().to_owned(),
            sha256: t.sha256.clone(),
            text: t.text.clone(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(Page {
        items,
        next_cursor: None,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// The version of the consent text that was signed (see `GET /v1/consent-texts`).
    #[schema(required = true, value_type = String, min_length = 1, max_length = 1000)]
    text_version: Option<String>,
    /// `online_signature` or `branch`.
    #[schema(required = true, value_type = String, pattern = "^(online_signature|branch)$")]
    channel: Option<String>,
    /// A CMS SignedData (DER, base64), attached or detached, over the exact
    /// text. Give this or `signature`, not both.
    #[schema(value_type = String, content_encoding = "base64")]
    signed_document_b64: Option<String>,
    /// A raw signature as card clients produce it (the card's JPKI
    /// application, PKCS#11, the platform operators' SDKs): give this or
    /// `signed_document_b64`, not both.
    signature: Option<RawSignatureBody>,
    /// Take the certificate's four items when they differ from the customer's.
    #[serde(default)]
    update_customer: bool,
}

/// An RSA PKCS#1 v1.5 signature over the DigestInfo of the SHA-256 of the
/// exact consent text, and the signing certificate.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSignatureBody {
    /// The signer's JPKI signing certificate (DER, base64).
    #[schema(required = true, value_type = String, content_encoding = "base64")]
    certificate_b64: Option<String>,
    /// The signature value (base64): 256 bytes for the card's RSA-2048 key.
    #[schema(required = true, value_type = String, content_encoding = "base64")]
    signature_b64: Option<String>,
    /// The hash in the signed DigestInfo: `sha256`. Any other, SHA-1
    /// included, is refused as `unsupported-hash-algorithm`.
    #[schema(required = true, value_type = String, max_length = 40)]
    hash_algorithm: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawBody {
    /// Why, in the institution's words (kept with the audit trail; at most 1000 characters).
    #[schema(required = true, value_type = String, min_length = 1, max_length = 1000)]
    reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ConsentEventView {
    /// `granted`, `renewed`, `withdrawn` or `expired`.
    kind: String,
    occurred_at: DateTime<Utc>,
    actor: String,
    /// For `renewed`: the consent that replaced this one.
    related_consent_id: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct ConsentView {
    id: Uuid,
    customer_id: Uuid,
    /// `basic4_update`.
    purpose: String,
    /// `active`, `renewed`, `withdrawn` or `expired`.
    status: String,
    channel: String,
    /// The signing certificate's serial (lowercase hex).
    cert_serial: String,
    cert_not_after: DateTime<Utc>,
    text_version: String,
    text_sha256: String,
    granted_at: DateTime<Utc>,
    /// The consent lapses at this instant (10 years, counted in the configured time zone).
    expires_at: DateTime<Utc>,
    withdrawn_at: Option<DateTime<Utc>>,
    /// With the provider: `pending`, `registered`, `unregistering`, `unregistered` or `failed`.
    registration: String,
    /// The provider's refusal, or the last failure to reach it while the
    /// registration waits to be tried again; `null` once carried out.
    registration_error: Option<String>,
    /// Attempts made at the latest registration request.
    registration_attempts: i32,
    /// While `pending` after a failure: when the worker tries again.
    registration_retry_at: Option<DateTime<Utc>>,
    /// `platform` (document and certificate kept) or `service_provider` (the provider's ids kept).
    evidence: String,
    /// How it was signed: `cms` (a CMS document), `pkcs1_sha256` (a raw card
    /// signature) or `mynaportal` (a decision given on Mynaportal).
    #[schema(pattern = "^(cms|pkcs1_sha256|mynaportal)$")]
    evidence_form: String,
    verification_id: Option<String>,
    certificate_id: Option<String>,
    events: Vec<ConsentEventView>,
}

impl From<Consent> for ConsentView {
    fn from(c: Consent) -> Self {
        Self {
            id: c.id,
            customer_id: c.customer_id,
            purpose: c.purpose,
            status: c.status.as_str().to_owned(),
            channel: c.channel,
            cert_serial: c.cert_serial,
            cert_not_after: c.cert_not_after,
            text_version: c.text_version,
            text_sha256: c.text_sha256,
            granted_at: c.granted_at,
            expires_at: c.expires_at,
            withdrawn_at: c.withdrawn_at,
            registration: c.registration.as_str().to_owned(),
            registration_error: c.registration_error,
            registration_attempts: c.registration_attempts,
            registration_retry_at: c.registration_retry_at,
            evidence: c.evidence,
            evidence_form: c.evidence_form,
            verification_id: c.verification_id,
            certificate_id: c.certificate_id,
            events: c
                .events
                .into_iter()
                .map(|e| ConsentEventView {
                    kind: e.kind,
                    occurred_at: e.occurred_at,
                    actor: e.actor,
                    related_consent_id: e.related_consent_id,
                })
                .collect(),
        }
    }
}

/// Records a customer's consent signed with their My Number Card's signing
/// certificate: a CMS document, or the raw signature card clients produce.
/// Role: operator.
#[utoipa::path(
    operation_id = "grantConsent",
    tag = "consent",
    request_body = GrantBody,
    params(("id" = Uuid, Path, description = "The customer")),
    responses(
        (status = 201, body = ConsentView, description = "Granted; `Location` names it", headers(("Location" = String))),
        (status = 404, description = "not-found"),
        (status = 409, description = "customer-deceased, basic4-mismatch, signed-document-reused, conflict"),
        (status = 422, description = "not-base64, not-cms, cms-no-signer, cms-several-signers, signer-certificate-missing, unsupported-algorithm, unsupported-hash-algorithm, signature-invalid, unknown-text-version, content-not-consent-text, untrusted-issuer, certificate-expired, certificate-not-yet-valid, user-identification-certificate, not-signing-certificate, certificate-revoked, certificate-unknown"),
        (status = 502, description = "crl-invalid, ocsp-invalid, provider-error"),
        (status = 503, description = "revocation-unavailable, crl-stale, provider-unavailable, consent-unavailable: retry later (`Retry-After`); nothing was written"),
    ),
    security(("bearer" = ["operator"]))
)]
#[post("/v1/customers/{id}/consents")]
pub async fn grant(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    body: JsonBody<GrantBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let mut errors = FieldErrors::new();
    let text_version = errors.check(
        "text_version",
        body.text_version.as_deref(),
        FreeText::parse,
    );
    let channel = errors.check(
        "channel",
        body.channel.as_deref(),
        |raw| match Channel::parse(raw) {
            Some(c @ (Channel::OnlineSignature | Channel::Branch)) => Ok(c),
            _ => Err(ValueError::Invalid(
                "must be `online_signature` or `branch`".into(),
            )),
        },
    );
    let raw = match (&body.signed_document_b64, &body.signature) {
        (Some(_), Some(_)) => {
            errors.push(
                "signature",
                ValueError::invalid("give `signed_document_b64` or `signature`, not both"),
            );
            None
        }
        (None, None) => {
            errors.push(
                "signed_document_b64",
                ValueError::invalid("is required (or `signature`)"),
            );
            None
        }
        (None, Some(raw)) => {
            let part = |field: &str, value: &Option<String>, errors: &mut FieldErrors| {
                errors.check(&format!("signature.{field}"), value.as_deref(), |v| {
                    Ok(v.to_owned())
                })
            };
            let certificate = part("certificate_b64", &raw.certificate_b64, &mut errors);
            let signature = part("signature_b64", &raw.signature_b64, &mut errors);
            let hash = part("hash_algorithm", &raw.hash_algorithm, &mut errors);
            certificate.zip(signature).zip(hash)
        }
        (Some(_), None) => None,
    };
    errors.into_result()?;
    let decode = |field: &str, value: &str| {
        B64.decode(value).map_err(|_| {
            ApiError::field(
                ProblemKind::NotBase64,
                field,
                "is not standard base64 (RFC 4648 §4, with padding)",
            )
        })
    };
    let signed = match (raw, body.signed_document_b64.as_deref()) {
        (Some(((certificate, signature), hash)), _) => {
            let hash = HashAlgorithm::parse(&hash)
                .map_err(|e| ApiError::from(consent::ConsentRefusal::Signature(e)))?;
            Submitted::Raw {
                certificate: decode("signature.certificate_b64", &certificate)?,
                signature: decode("signature.signature_b64", &signature)?,
                hash,
            }
        }
        (None, Some(document)) => Submitted::Cms(decode("signed_document_b64", document)?),
        (None, None) => unreachable!("checked above"),
    };
    let consent = consent::grant(
        &state.db,
        &state.consent_verifier,
        &state.consent_texts,
        &state.notices,
        state.consent_settings,
        &auth.audit(),
        GrantRequest {
            customer_id: *id,
            text_version: text_version.expect("checked").as_str().to_owned(),
            channel: channel.expect("checked"),
            signed,
            update_customer: body.update_customer,
        },
    )
    .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/consents/{}", consent.id)))
        .json(ConsentView::from(consent)))
}

/// A customer's consents, oldest first. Role: operator.
#[utoipa::path(
    operation_id = "listCustomerConsents",
    tag = "consent",
    params(("id" = Uuid, Path, description = "The customer"), Paging),
    responses((status = 200, body = Page<ConsentView>), (status = 404, description = "not-found")),
    security(("bearer" = ["operator"]))
)]
#[get("/v1/customers/{id}/consents")]
pub async fn list(
    state: web::Data<AppState>,
    _auth: Auth<Operator>,
    id: web::Path<Uuid>,
    query: web::Query<Paging>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit)?;
    let after = uuid_cursor(query.cursor.as_deref())?;
    let found = consent::list(&state.db, *id, after, limit).await?;
    let next_cursor = next_cursor(&found, limit, |c| c.id.to_string());
    Ok(HttpResponse::Ok().json(Page {
        items: found.into_iter().map(ConsentView::from).collect(),
        next_cursor,
    }))
}

/// One consent. Role: operator.
#[utoipa::path(
    operation_id = "getConsent",
    tag = "consent",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ConsentView), (status = 404, description = "not-found")),
    security(("bearer" = ["operator"]))
)]
#[get("/v1/consents/{id}")]
pub async fn read(
    state: web::Data<AppState>,
    _auth: Auth<Operator>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let found = consent::get(&state.db, *id).await?;
    Ok(HttpResponse::Ok().json(ConsentView::from(found)))
}

/// Withdraws an active consent; the provider registration is removed by
/// the worker. Role: operator.
#[utoipa::path(
    operation_id = "withdrawConsent",
    tag = "consent",
    request_body = WithdrawBody,
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = ConsentView),
        (status = 404, description = "not-found"),
        (status = 409, description = "consent-not-active, conflict"),
    ),
    security(("bearer" = ["operator"]))
)]
#[post("/v1/consents/{id}/withdraw")]
pub async fn withdraw(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    body: JsonBody<WithdrawBody>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = FieldErrors::new();
    let reason = errors.check("reason", body.0.reason.as_deref(), FreeText::parse);
    errors.into_result()?;
    let done = consent::withdraw(
        &state.db,
        &state.notices,
        state.consent_settings.timezone,
        &auth.audit(),
        *id,
        &reason.expect("checked"),
    )
    .await?;
    Ok(HttpResponse::Ok().json(ConsentView::from(done)))
}

/// Has the consent's registration with the provider carried out again at
/// once: a refused one is written anew (the refused one is kept), one
/// waiting for its next attempt after a failure is made due now. Role: admin.
#[utoipa::path(
    operation_id = "retryConsentRegistration",
    tag = "consent",
    params(("id" = Uuid, Path, description = "The consent")),
    responses(
        (status = 200, body = ConsentView, description = "The registration is due; the worker carries it out within seconds"),
        (status = 409, description = "registration-not-retryable"),
    ),
    security(("bearer" = ["admin"]))
)]
#[post("/v1/consents/{id}/registration/retry")]
pub async fn retry_registration(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    consent::registrations::retry(&state.db, &auth.audit(), *id).await?;
    let found = consent::get(&state.db, *id).await?;
    Ok(HttpResponse::Ok().json(ConsentView::from(found)))
}
