//! `/v1/audit`: role auditor.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use kihon4_core::audit::{self, EventFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Page, next_cursor, page_limit};
use crate::AppState;
use crate::extract::{Auditor, Auth};
use crate::problem::{ApiError, ProblemBody, ProblemKind};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Events at or after this time (RFC 3339).
    from: Option<String>,
    /// Events before this time (RFC 3339).
    to: Option<String>,
    customer_id: Option<String>,
    /// e.g. `customer.created`.
    action: Option<String>,
    cursor: Option<String>,
    limit: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEventView {
    seq: i64,
    occurred_at: DateTime<Utc>,
    actor: String,
    action: String,
    subject_type: String,
    subject_id: Option<String>,
    customer_id: Option<Uuid>,
    request_id: Option<String>,
    /// The event exactly as hashed (personal values as commitments).
    #[schema(value_type = Object)]
    event: Value,
    prev_hash: String,
    hash: String,
}

pub(crate) fn time(field: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|r| {
        DateTime::parse_from_rfc3339(r)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::field(ProblemKind::InvalidQuery, field, "must be an RFC 3339 time")
            })
    })
    .transpose()
}

/// Audit events in chain order, filtered and paged. Role: auditor.
#[utoipa::path(
    tag = "audit",
    params(EventQuery),
    responses((status = 200, body = Page<AuditEventView>), (status = 400, body = ProblemBody)),
    security(("bearer" = ["auditor"]))
)]
#[get("/v1/audit/events")]
pub async fn events(
    state: web::Data<AppState>,
    _auth: Auth<Auditor>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit)?;
    let filter = EventFilter {
        from: time("from", query.from.as_deref())?,
        to: time("to", query.to.as_deref())?,
        customer_id: query
            .customer_id
            .as_deref()
            .map(|c| {
                Uuid::parse_str(c).map_err(|_| {
                    ApiError::field(ProblemKind::InvalidQuery, "customer_id", "must be a UUID")
                })
            })
            .transpose()?,
        action: query.action.clone(),
    };
    let after = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiError::field(
                    ProblemKind::InvalidQuery,
                    "cursor",
                    "is not a cursor from this list",
                )
            })
        })
        .transpose()?;
    let found = audit::list_events(&state.db, &filter, after, limit).await?;
    let next_cursor = next_cursor(&found, limit, |e| e.seq.to_string());
    let items = found
        .into_iter()
        .map(|e| AuditEventView {
            event: serde_json::from_str(&e.canonical).unwrap_or(Value::Null),
            seq: e.seq,
            occurred_at: e.occurred_at,
            actor: e.actor,
            action: e.action,
            subject_type: e.subject_type,
            subject_id: e.subject_id,
            customer_id: e.customer_id,
            request_id: e.request_id,
            prev_hash: e.prev_hash,
            hash: e.hash,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}
