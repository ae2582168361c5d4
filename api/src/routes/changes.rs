//! The change feed: `GET /v1/changes` for the roles configured to read it
//! (`KIHON4_CHANGES_READ_ROLES`, by default `integration` and `admin`), and
//! `/v1/webhook-endpoints` for admins (docs/integration.md).

use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use kihon4_core::audit::events::{ChangesRead, Event};
use kihon4_core::changes::webhooks::{self, NewEndpoint};
use kihon4_core::changes::{self, ChangeType, Cursor, PageError, envelope};
use kihon4_core::entities::webhook_endpoints;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::extract::{Admin, Auth, ChangesReader, JsonBody, JsonListBody, ListFields};
use crate::problem::{ApiError, ProblemKind};

/// Events per page: default and most.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;
/// The longest a long poll waits.
const MAX_WAIT_SECONDS: u64 = 30;
/// How often a long poll looks again.
const POLL: Duration = Duration::from_millis(250);

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// The `next_cursor` of the page before; from the oldest event kept when left out.
    #[param(pattern = "^c1_[A-Za-f][A-Za-z0-9_-]{9}[AEIMQUYcgkosw048]$")]
    after: Option<String>,
    /// Events per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Event types, separated by commas; every type when left out.
    #[param(
        pattern = "^(basic4\\.changed|customer\\.deceased|certificate\\.revoked|consent\\.granted|consent\\.renewed|consent\\.withdrawn|consent\\.expired|review\\.opened|review\\.resolved)(,(basic4\\.changed|customer\\.deceased|certificate\\.revoked|consent\\.granted|consent\\.renewed|consent\\.withdrawn|consent\\.expired|review\\.opened|review\\.resolved))*$"
    )]
    types: Option<String>,
    /// Seconds to wait for an event when there is none yet (long polling).
    #[param(minimum = 0, maximum = 30)]
    wait: Option<u64>,
}

/// One change event, as a webhook body carries it.
#[derive(Serialize, ToSchema)]
pub struct ChangeEvent {
    /// `basic4.changed`, `customer.deceased`, `certificate.revoked`,
    /// `consent.granted`, `consent.renewed`, `consent.withdrawn`,
    /// `consent.expired`, `review.opened` or `review.resolved`.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    kind: String,
    /// When it happened (RFC 3339, UTC).
    timestamp: String,
    /// `event_id`, `cursor`, `customer_id`, `external_ref`, `customer_seq`,
    /// `occurred_at`, `occurred_on_jst` and the type's own fields.
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct ChangesPage {
    events: Vec<ChangeEvent>,
    /// Pass as `after` for the next page; on a page that is not full, the
    /// feed's head (ask again later, or with `wait`).
    next_cursor: String,
}

fn bad_query(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(ProblemKind::InvalidQuery, field, message)
}

/// Change events after a cursor, in order; with `wait`, held open until
/// one arrives. Pages that give events are audited (`changes.read`).
/// Roles: as configured (`KIHON4_CHANGES_READ_ROLES`; by default
/// integration and admin).
#[utoipa::path(
    operation_id = "listChanges",
    tag = "changes",
    params(ChangesQuery),
    responses(
        (status = 200, body = ChangesPage),
        (status = 400, description = "invalid-query"),
        (status = 410, description = "cursor-expired"),
    ),
    security(("bearer" = ["integration", "admin"]))
)]
#[get("/v1/changes")]
pub async fn list(
    state: web::Data<AppState>,
    auth: ChangesReader,
    query: web::Query<ChangesQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = query
        .after
        .as_deref()
        .map(|raw| {
            Cursor::parse(raw).ok_or_else(|| bad_query("after", "is not a cursor of this feed"))
        })
        .transpose()?;
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return Err(bad_query("limit", format!("must be from 1 to {MAX_LIMIT}"))),
    };
    let wait = match query.wait {
        None => 0,
        Some(n) if n <= MAX_WAIT_SECONDS => n,
        Some(_) => {
            return Err(bad_query(
                "wait",
                format!("must be from 0 to {MAX_WAIT_SECONDS} seconds"),
            ));
        }
    };
    let types = match query.types.as_deref() {
        None => Vec::new(),
        Some(raw) => ChangeType::parse_list(raw).map_err(|e| bad_query("types", e))?,
    };
    let deadline = Instant::now() + Duration::from_secs(wait);
    let page = loop {
        let page = changes::page(&state.db, after, limit, &types)
            .await
            .map_err(|e| match e {
                PageError::Expired => ApiError::new(
                    ProblemKind::CursorExpired,
                    "The events after this cursor were removed after their retention; read from the oldest kept (leave `after` out) or take the daily files.",
                ),
                PageError::Db(e) => ApiError::from(kihon4_core::error::CoreError::from(e)),
            })?;
        if !page.events.is_empty() || Instant::now() >= deadline {
            break page;
        }
        tokio::time::sleep(POLL.min(deadline - Instant::now())).await;
    };
    if !page.events.is_empty() {
        // In a transaction of its own: the append reads the chain's head
        // and writes after it, which must not interleave with another's.
        let db_err = kihon4_core::error::CoreError::from;
        let txn = kihon4_core::db::begin_write(&state.db)
            .await
            .map_err(db_err)?;
        kihon4_core::audit::append(
            &txn,
            &auth.audit(),
            Event::ChangesRead(ChangesRead {
                after: after.map(|c| c.to_string()),
                next: page.next.to_string(),
                events: page.events.len() as u64,
                types: types.iter().map(|t| t.as_str().to_owned()).collect(),
            }),
        )
        .await
        .map_err(db_err)?;
        txn.commit().await.map_err(db_err)?;
    }
    let events = page
        .events
        .iter()
        .map(|row| {
            let mut e = envelope(row, state.change_values);
            ChangeEvent {
                kind: row.event_type.clone(),
                timestamp: e["timestamp"].as_str().unwrap_or_default().to_owned(),
                data: e["data"].take(),
            }
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(ChangesPage {
            events,
            next_cursor: page.next.to_string(),
        }))
}

/// A webhook endpoint; never its secret.
#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    id: Uuid,
    url: String,
    /// The event types it receives; empty for every type.
    event_types: Vec<String>,
    /// `active` or `disabled`.
    status: String,
    /// `operator`; `failing` or `gone` (its receiver answered 410) when the worker disabled it.
    disabled_reason: Option<String>,
    /// Until when the secret before the last rotation also signs.
    previous_secret_until: Option<DateTime<Utc>>,
    /// Since when its deliveries fail.
    failing_since: Option<DateTime<Utc>>,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<webhook_endpoints::Model> for EndpointView {
    fn from(e: webhook_endpoints::Model) -> Self {
        Self {
            event_types: webhooks::event_types(&e),
            id: e.id,
            url: e.url,
            status: e.status,
            disabled_reason: e.disabled_reason,
            previous_secret_until: e.previous_secret_until,
            failing_since: e.failing_since,
            created_by: e.created_by,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// An endpoint with its secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    endpoint: EndpointView,
    /// `whsec_…`: the Standard Webhooks secret that signs its deliveries.
    secret: String,
}

/// An event type of the change feed (for the description only: bodies
/// are read as text and checked by core, which names a wrong one).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub enum EventTypeName {
    #[serde(rename = "basic4.changed")]
    Basic4Changed,
    #[serde(rename = "customer.deceased")]
    CustomerDeceased,
    #[serde(rename = "certificate.revoked")]
    CertificateRevoked,
    #[serde(rename = "consent.granted")]
    ConsentGranted,
    #[serde(rename = "consent.renewed")]
    ConsentRenewed,
    #[serde(rename = "consent.withdrawn")]
    ConsentWithdrawn,
    #[serde(rename = "consent.expired")]
    ConsentExpired,
    #[serde(rename = "review.opened")]
    ReviewOpened,
    #[serde(rename = "review.resolved")]
    ReviewResolved,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointBody {
    /// `https://…` (plain `http` only to a loopback address).
    #[schema(required = true, value_type = String, min_length = 1, max_length = 2048)]
    url: Option<String>,
    /// The event types to receive, each once; every type when left out or empty.
    #[schema(max_items = 9, value_type = Option<Vec<EventTypeName>>)]
    event_types: Option<Vec<String>>,
}

impl ListFields for EndpointBody {
    const LISTS: &'static [&'static str] = &["event_types"];
}

/// Registers a webhook endpoint; it receives the events written from now
/// on. Answers its secret, which is never shown again. Role: admin.
#[utoipa::path(
    operation_id = "createWebhookEndpoint",
    tag = "changes",
    request_body = EndpointBody,
    responses(
        (status = 201, body = EndpointWithSecret, headers(("Location" = String))),
        (status = 422, description = "validation, my-number-refused"),
    ),
    security(("bearer" = ["admin"]))
)]
#[post("/v1/webhook-endpoints")]
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    body: JsonListBody<EndpointBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    if body
        .event_types
        .as_ref()
        .is_some_and(|t| t.len() > ChangeType::ALL.len())
    {
        return Err(ApiError::field(
            ProblemKind::Validation,
            "event_types",
            format!("must hold at most {} types", ChangeType::ALL.len()),
        ));
    }
    let (endpoint, secret) = webhooks::create(
        &state.db,
        &auth.audit(),
        NewEndpoint {
            url: body.url.as_deref(),
            event_types: body.event_types,
        },
    )
    .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/v1/webhook-endpoints/{}", endpoint.id),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(EndpointWithSecret {
            endpoint: endpoint.into(),
            secret,
        }))
}

#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    items: Vec<EndpointView>,
}

/// Every webhook endpoint, oldest first. Role: admin.
#[utoipa::path(
    operation_id = "listWebhookEndpoints",
    tag = "changes",
    responses((status = 200, body = EndpointList)),
    security(("bearer" = ["admin"]))
)]
#[get("/v1/webhook-endpoints")]
pub async fn list_endpoints(
    state: web::Data<AppState>,
    _auth: Auth<Admin>,
) -> Result<HttpResponse, ApiError> {
    let items = webhooks::list(&state.db).await?;
    Ok(HttpResponse::Ok().json(EndpointList {
        items: items.into_iter().map(EndpointView::from).collect(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct EndpointDetail {
    #[serde(flatten)]
    endpoint: EndpointView,
    /// Deliveries it has still to receive.
    pending: u64,
}

/// One webhook endpoint, with its deliveries still to make. Role: admin.
#[utoipa::path(
    operation_id = "readWebhookEndpoint",
    tag = "changes",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = EndpointDetail), (status = 404, description = "not-found")),
    security(("bearer" = ["admin"]))
)]
#[get("/v1/webhook-endpoints/{id}")]
pub async fn read(
    state: web::Data<AppState>,
    _auth: Auth<Admin>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = webhooks::get(&state.db, *id).await?;
    let pending = webhooks::pending(&state.db, *id).await?;
    Ok(HttpResponse::Ok().json(EndpointDetail {
        endpoint: endpoint.into(),
        pending,
    }))
}

/// Pauses an endpoint: its events are kept, and delivered in order once it
/// is enabled. Role: admin.
#[utoipa::path(
    operation_id = "disableWebhookEndpoint",
    tag = "changes",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = EndpointView), (status = 404, description = "not-found")),
    security(("bearer" = ["admin"]))
)]
#[post("/v1/webhook-endpoints/{id}/disable")]
pub async fn disable(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = webhooks::set_active(&state.db, &auth.audit(), *id, false).await?;
    Ok(HttpResponse::Ok().json(EndpointView::from(endpoint)))
}

/// Enables an endpoint; what it has still to receive is tried at once,
/// with a fresh retry period. Role: admin.
#[utoipa::path(
    operation_id = "enableWebhookEndpoint",
    tag = "changes",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = EndpointView), (status = 404, description = "not-found")),
    security(("bearer" = ["admin"]))
)]
#[post("/v1/webhook-endpoints/{id}/enable")]
pub async fn enable(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = webhooks::set_active(&state.db, &auth.audit(), *id, true).await?;
    Ok(HttpResponse::Ok().json(EndpointView::from(endpoint)))
}

/// Removes an endpoint with its deliveries and attempts. Role: admin.
#[utoipa::path(
    operation_id = "deleteWebhookEndpoint",
    tag = "changes",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, description = "not-found")),
    security(("bearer" = ["admin"]))
)]
#[delete("/v1/webhook-endpoints/{id}")]
pub async fn remove(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    webhooks::delete(&state.db, &auth.audit(), *id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Seconds during which the old secret signs too (default a day, at most a week).
    #[schema(minimum = 0, maximum = 604800)]
    overlap_seconds: Option<i64>,
}

/// Gives an endpoint a new secret, answered this once; during the overlap
/// every delivery is signed with both. Role: admin.
#[utoipa::path(
    operation_id = "rotateWebhookSecret",
    tag = "changes",
    params(("id" = Uuid, Path)),
    request_body = RotateBody,
    responses(
        (status = 200, body = EndpointWithSecret),
        (status = 404, description = "not-found"),
        (status = 422, description = "validation"),
    ),
    security(("bearer" = ["admin"]))
)]
#[post("/v1/webhook-endpoints/{id}/rotate-secret")]
pub async fn rotate(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    id: web::Path<Uuid>,
    body: JsonBody<RotateBody>,
) -> Result<HttpResponse, ApiError> {
    let overlap = body
        .0
        .overlap_seconds
        .unwrap_or(webhooks::DEFAULT_OVERLAP_SECONDS);
    let (endpoint, secret) =
        webhooks::rotate_secret(&state.db, &auth.audit(), *id, overlap).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(EndpointWithSecret {
            endpoint: endpoint.into(),
            secret,
        }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// A cursor (`next_cursor`, or a delivered event's `cursor`): the events after it are sent again.
    #[schema(required = true, value_type = String, pattern = "^c1_[A-Za-f][A-Za-z0-9_-]{9}[AEIMQUYcgkosw048]$")]
    after: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Replayed {
    /// Deliveries queued.
    deliveries: u64,
}

/// Sends an endpoint again, in order, the events of its types after a
/// cursor that it was given. Role: admin.
#[utoipa::path(
    operation_id = "replayWebhookEndpoint",
    tag = "changes",
    params(("id" = Uuid, Path)),
    request_body = ReplayBody,
    responses(
        (status = 202, body = Replayed),
        (status = 404, description = "not-found"),
        (status = 410, description = "cursor-expired"),
        (status = 422, description = "validation"),
    ),
    security(("bearer" = ["admin"]))
)]
#[post("/v1/webhook-endpoints/{id}/replay")]
pub async fn replay(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    id: web::Path<Uuid>,
    body: JsonBody<ReplayBody>,
) -> Result<HttpResponse, ApiError> {
    let after = match body.0.after.as_deref() {
        None => {
            return Err(ApiError::field(
                ProblemKind::Validation,
                "after",
                "is required",
            ));
        }
        Some(raw) => Cursor::parse(raw).ok_or_else(|| {
            ApiError::field(
                ProblemKind::Validation,
                "after",
                "is not a cursor of this feed",
            )
        })?,
    };
    let deliveries = webhooks::replay(&state.db, &auth.audit(), *id, after).await?;
    Ok(HttpResponse::Accepted().json(Replayed { deliveries }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AttemptsQuery {
    /// Attempts to show, newest first (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    id: Uuid,
    delivery_id: Uuid,
    /// The event's cursor.
    cursor: String,
    attempted_at: DateTime<Utc>,
    /// The receiver's status, when it answered.
    status_code: Option<i32>,
    /// Why it failed: `answered 503`, `timed out`, `could not connect`, …
    error: Option<String>,
    duration_ms: i32,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptList {
    items: Vec<AttemptView>,
}

/// The latest delivery attempts to an endpoint, newest first. Role: admin.
#[utoipa::path(
    operation_id = "listWebhookAttempts",
    tag = "changes",
    params(("id" = Uuid, Path), AttemptsQuery),
    responses(
        (status = 200, body = AttemptList),
        (status = 400, description = "invalid-query"),
        (status = 404, description = "not-found"),
    ),
    security(("bearer" = ["admin"]))
)]
#[get("/v1/webhook-endpoints/{id}/attempts")]
pub async fn attempts(
    state: web::Data<AppState>,
    _auth: Auth<Admin>,
    id: web::Path<Uuid>,
    query: web::Query<AttemptsQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = super::page_limit(query.limit)?;
    let items = webhooks::attempts(&state.db, *id, limit).await?;
    Ok(HttpResponse::Ok().json(AttemptList {
        items: items
            .into_iter()
            .map(|a| AttemptView {
                cursor: Cursor(a.position).to_string(),
                id: a.id,
                delivery_id: a.delivery_id,
                attempted_at: a.attempted_at,
                status_code: a.status_code,
                error: a.error,
                duration_ms: a.duration_ms,
            })
            .collect(),
    }))
}
