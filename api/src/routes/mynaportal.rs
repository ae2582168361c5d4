//! Mynaportal-routed consent: `POST /v1/customers/{id}/consent-requests`
//! and `GET /v1/consent-requests/{id}` (role operator), and the provider's
//! signed callback `POST /v1/webhooks/mynaportal` (no bearer token: the JWT
//! body authenticates itself).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use kihon4_core::consent::mynaportal::{Mynaportal, Unavailable};
use kihon4_core::consent::{callbacks, requests};
use kihon4_core::entities::consent_requests;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::extract::{Auth, Operator, request_id};
use crate::problem::{ApiError, ProblemKind};

#[derive(Serialize, ToSchema)]
pub struct ConsentRequestView {
    id: Uuid,
    customer_id: Uuid,
    /// `sent`, `started` (the customer went on to Mynaportal), `granted`,
    /// `declined` or `expired`.
    status: String,
    /// The provider's id of the request.
    provider_request_id: String,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    /// The consent recorded when the customer granted it.
    consent_id: Option<Uuid>,
}

impl From<consent_requests::Model> for ConsentRequestView {
    fn from(r: consent_requests::Model) -> Self {
        Self {
            id: r.id,
            customer_id: r.customer_id,
            status: r.status,
            provider_request_id: r.provider_request_id,
            expires_at: r.expires_at,
            created_at: r.created_at,
            decided_at: r.decided_at,
            consent_id: r.consent_id,
        }
    }
}

/// The provider's callback in the description: a compact JWS, bounded.
struct CallbackJwt;

impl utoipa::PartialSchema for CallbackJwt {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(callbacks::MAX_BODY))
            .pattern(Some(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"))
            .into()
    }
}

impl ToSchema for CallbackJwt {}

fn configured(state: &AppState) -> Result<&Mynaportal, ApiError> {
    state.mynaportal.as_deref().ok_or_else(|| {
        ApiError::new(
            ProblemKind::MynaportalUnavailable,
            Unavailable::NoProvider.to_string(),
        )
    })
}

/// Asks an existing customer for consent on Mynaportal: the provider's
/// request, a single-use landing link, and the email with it. Role: operator.
#[utoipa::path(
    operation_id = "createConsentRequest",
    tag = "consent",
    params(("id" = Uuid, Path, description = "The customer")),
    responses(
        (status = 201, body = ConsentRequestView, description = "Sent; `Location` names the request", headers(("Location" = String))),
        (status = 404, description = "not-found"),
        (status = 409, description = "already-consenting, consent-request-open, customer-deceased"),
        (status = 501, description = "provider-capability-unsupported: the configured provider (e.g. PocketSign) does not offer Mynaportal consent requests"),
        (status = 502, description = "provider-error"),
        (status = 503, description = "mynaportal-unavailable: no provider, no KIHON4_PROVIDER_ISSUER, or no callback key at the provider"),
    ),
    security(("bearer" = ["operator"]))
)]
#[post("/v1/customers/{id}/consent-requests")]
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let mynaportal = Mynaportal::ready(state.mynaportal.as_deref())
        .await
        .map_err(|why| ApiError::new(ProblemKind::MynaportalUnavailable, why.to_string()))?;
    let request = mynaportal
        .ask(&state.db, &state.notices, &auth.audit(), *id)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/v1/consent-requests/{}", request.id),
        ))
        .json(ConsentRequestView::from(request)))
}

/// A consent request. Role: operator.
#[utoipa::path(
    operation_id = "getConsentRequest",
    tag = "consent",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ConsentRequestView), (status = 404, description = "not-found")),
    security(("bearer" = ["operator"]))
)]
#[get("/v1/consent-requests/{id}")]
pub async fn read(
    state: web::Data<AppState>,
    _auth: Auth<Operator>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let request = requests::get(&state.db, *id).await?;
    Ok(HttpResponse::Ok().json(ConsentRequestView::from(request)))
}

/// The provider's decision on a Mynaportal consent request, as a signed JWT
/// (`application/jwt`). `204` when taken, and when the same decision comes
/// again. No bearer token: the JWT is checked against the provider's keys.
#[utoipa::path(
    operation_id = "receiveMynaportalCallback",
    tag = "consent",
    request_body(
        content = inline(CallbackJwt),
        content_type = "application/jwt",
        description = "A compact JWS (RFC 7515) signed by the provider, at most 16 KiB",
    ),
    responses(
        (status = 204, description = "Taken (or taken before)"),
        (status = 400, description = "callback-malformed"),
        (status = 401, description = "callback-signature-invalid, callback-unknown-key, callback-algorithm-not-allowed, callback-expired, callback-claims-invalid"),
        (status = 404, description = "unknown-consent-request"),
        (status = 409, description = "callback-replayed"),
        (status = 422, description = "callback-decision-invalid"),
        (status = 413, description = "payload-too-large"),
        (status = 415, description = "unsupported-media-type"),
        (status = 503, description = "provider-keys-unavailable, mynaportal-unavailable"),
    )
)]
#[post("/v1/webhooks/mynaportal")]
pub async fn webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let is_jwt = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/jwt"));
    if !is_jwt {
        return Err(ApiError::new(
            ProblemKind::UnsupportedMediaType,
            "Send the callback as application/jwt.",
        ));
    }
    if body.len() > callbacks::MAX_BODY {
        return Err(ApiError::new(
            ProblemKind::PayloadTooLarge,
            format!("A callback is at most {} bytes.", callbacks::MAX_BODY),
        ));
    }
    let mynaportal = configured(&state)?;
    let Some(settings) = &mynaportal.callbacks else {
        return Err(ApiError::new(
            ProblemKind::MynaportalUnavailable,
            "KIHON4_PROVIDER_ISSUER is not set, so no callback can be trusted.",
        ));
    };
    match callbacks::receive(
        &state.db,
        &mynaportal.keys,
        &state.notices,
        settings,
        request_id(&req),
        &body,
        &kihon4_core::refusals::Tally {
            settings: state.refusals,
            source: crate::limits::ClientSource::of(&state.limits, &req).0,
        },
    )
    .await?
    {
        Ok(accepted) => {
            tracing::info!(outcome = ?accepted, "a Mynaportal callback was taken");
            Ok(HttpResponse::NoContent().finish())
        }
        Err(refusal) => {
            tracing::warn!(reason = refusal.slug(), "a Mynaportal callback was refused");
            Err(ApiError::from(&refusal))
        }
    }
}
