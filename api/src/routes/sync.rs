//! `/v1/sync/runs` and `/v1/reviews`: role operator.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use kihon4_core::domain::{FieldErrors, FreeText, ValueError};
use kihon4_core::entities::reviews as review_rows;
use kihon4_core::sync::{self, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Page, Paging, next_cursor, page_limit, uuid_cursor};
use crate::AppState;
use crate::extract::{Auth, JsonBody, Operator};
use crate::problem::{ApiError, ProblemKind};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// `revoked` (certificates no longer valid), `all` (every consenting customer) or `customer`.
    #[schema(required = true, value_type = String, pattern = "^(revoked|all|customer)$")]
    scope: Option<String>,
    /// With `scope` `customer` (required then), and only then.
    #[schema(format = Uuid)]
    customer_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RunView {
    id: Uuid,
    /// `api`, `schedule` or `cli`.
    trigger: String,
    scope: String,
    customer_id: Option<Uuid>,
    /// `queued` (waiting for detection), `detecting`, `running`, `completed` or `failed`.
    status: String,
    requested_by: String,
    error: Option<String>,
    /// Jobs in the run.
    jobs: u64,
    /// Jobs by outcome (`changed`, `unchanged`, `deceased`, …), and `pending` and `failed`.
    #[schema(value_type = Object)]
    counts: BTreeMap<String, u64>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<sync::runs::RunView> for RunView {
    fn from(v: sync::runs::RunView) -> Self {
        Self {
            id: v.run.id,
            trigger: v.run.trigger,
            scope: v.run.scope,
            customer_id: v.run.customer_id,
            status: v.run.status,
            requested_by: v.run.requested_by,
            error: v.run.error,
            jobs: v.jobs,
            counts: v.counts,
            created_at: v.run.created_at,
            started_at: v.run.started_at,
            finished_at: v.run.finished_at,
        }
    }
}

/// Starts a sync run. `all` and `customer` enqueue their jobs at once;
/// `revoked` waits for the worker's detection. Role: operator.
#[utoipa::path(
    operation_id = "requestSyncRun",
    tag = "sync",
    request_body = RunRequest,
    responses(
        (status = 202, body = RunView, description = "Accepted; `Location` names the run", headers(("Location" = String))),
        (status = 404, description = "not-found: no such customer"),
        (status = 409, description = "customer-not-consenting"),
    ),
    security(("bearer" = ["operator"]))
)]
#[post("/v1/sync/runs")]
pub async fn request(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    body: JsonBody<RunRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = FieldErrors::new();
    let scope = errors.check("scope", body.0.scope.as_deref(), |raw| {
        Scope::parse(raw).ok_or(ValueError::Invalid(
            "must be `revoked`, `all` or `customer`".into(),
        ))
    });
    let customer = errors.check_optional("customer_id", body.0.customer_id.as_deref(), |raw| {
        Uuid::parse_str(raw).map_err(|_| ValueError::Invalid("must be a customer id".into()))
    });
    match (scope, customer) {
        (Some(Scope::Customer), None) => errors.push(
            "customer_id",
            ValueError::Invalid("is required with scope `customer`".into()),
        ),
        (Some(Scope::All | Scope::Revoked), Some(_)) => errors.push(
            "customer_id",
            ValueError::Invalid("is only for scope `customer`".into()),
        ),
        _ => {}
    }
    errors.into_result()?;
    let run = sync::runs::request(
        &state.db,
        &auth.audit(),
        "api",
        scope.expect("checked"),
        customer,
    )
    .await?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/v1/sync/runs/{}", run.run.id)))
        .json(RunView::from(run)))
}

/// Sync runs, newest first. Role: operator.
#[utoipa::path(
    operation_id = "listSyncRuns",
    tag = "sync",
    params(Paging),
    responses((status = 200, body = Page<RunView>)),
    security(("bearer" = ["operator"]))
)]
#[get("/v1/sync/runs")]
pub async fn list(
    state: web::Data<AppState>,
    _auth: Auth<Operator>,
    query: web::Query<Paging>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit)?;
    let before = uuid_cursor(query.cursor.as_deref())?;
    let runs = sync::runs::list(&state.db, before, limit).await?;
    let next_cursor = next_cursor(&runs, limit, |r| r.run.id.to_string());
    Ok(HttpResponse::Ok().json(Page {
        items: runs.into_iter().map(RunView::from).collect(),
        next_cursor,
    }))
}

/// One sync run, with its jobs counted by outcome. Role: operator.
#[utoipa::path(
    operation_id = "getSyncRun",
    tag = "sync",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = RunView), (status = 404, description = "not-found")),
    security(("bearer" = ["operator"]))
)]
#[get("/v1/sync/runs/{id}")]
pub async fn read(
    state: web::Data<AppState>,
    _auth: Auth<Operator>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(RunView::from(sync::runs::get(&state.db, *id).await?)))
}

#[derive(Serialize, ToSchema)]
pub struct ReviewView {
    id: Uuid,
    customer_id: Uuid,
    /// `deceased`, `revoked`, `awaiting_reissue` or `unknown_certificate`.
    kind: String,
    #[schema(value_type = Option<Object>)]
    detail: Option<Value>,
    /// `open` or `resolved`.
    status: String,
    created_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    resolved_by: Option<String>,
    resolution: Option<String>,
    note: Option<String>,
}

impl From<review_rows::Model> for ReviewView {
    fn from(r: review_rows::Model) -> Self {
        Self {
            id: r.id,
            customer_id: r.customer_id,
            kind: r.kind,
            detail: r.detail,
            status: r.status,
            created_at: r.created_at,
            resolved_at: r.resolved_at,
            resolved_by: r.resolved_by,
            resolution: r.resolution,
            note: r.note,
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReviewQuery {
    /// `open` or `resolved`.
    #[param(pattern = "^(open|resolved)$")]
    status: Option<String>,
    /// The `next_cursor` of the page before.
    #[param(format = Uuid)]
    cursor: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
}

/// Reviews, oldest first. Role: operator.
#[utoipa::path(
    operation_id = "listReviews",
    tag = "sync",
    params(ReviewQuery),
    responses((status = 200, body = Page<ReviewView>)),
    security(("bearer" = ["operator"]))
)]
#[get("/v1/reviews")]
pub async fn reviews(
    state: web::Data<AppState>,
    _auth: Auth<Operator>,
    query: web::Query<ReviewQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = match query.status.as_deref() {
        None => None,
        Some(s @ ("open" | "resolved")) => Some(s),
        Some(_) => {
            return Err(ApiError::field(
                ProblemKind::InvalidQuery,
                "status",
                "must be open or resolved",
            ));
        }
    };
    let limit = page_limit(query.limit)?;
    let after = uuid_cursor(query.cursor.as_deref())?;
    let found = sync::reviews::list(&state.db, status, after, limit).await?;
    let next_cursor = next_cursor(&found, limit, |r| r.id.to_string());
    Ok(HttpResponse::Ok().json(Page {
        items: found.into_iter().map(ReviewView::from).collect(),
        next_cursor,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// `confirmed`, `corrected` or `dismissed`.
    #[schema(required = true, value_type = String, pattern = "^(confirmed|corrected|dismissed)$")]
    resolution: Option<String>,
    /// What was decided and why (kept with the audit trail; at most 1000 characters).
    #[schema(required = true, value_type = String, min_length = 1, max_length = 1000)]
    note: Option<String>,
}

/// Closes an open review. Role: operator.
#[utoipa::path(
    operation_id = "resolveReview",
    tag = "sync",
    request_body = ResolveBody,
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = ReviewView),
        (status = 404, description = "not-found"),
        (status = 409, description = "review-not-open"),
    ),
    security(("bearer" = ["operator"]))
)]
#[post("/v1/reviews/{id}/resolve")]
pub async fn resolve(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    body: JsonBody<ResolveBody>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = FieldErrors::new();
    let resolution = errors.check("resolution", body.0.resolution.as_deref(), |raw| {
        sync::reviews::RESOLUTIONS
            .contains(&raw)
            .then(|| raw.to_owned())
            .ok_or(ValueError::Invalid(
                "must be `confirmed`, `corrected` or `dismissed`".into(),
            ))
    });
    let note = errors.check("note", body.0.note.as_deref(), FreeText::parse);
    errors.into_result()?;
    let review = sync::reviews::resolve(
        &state.db,
        &auth.audit(),
        *id,
        &resolution.expect("checked"),
        &note.expect("checked"),
    )
    .await?;
    Ok(HttpResponse::Ok().json(ReviewView::from(review)))
}
