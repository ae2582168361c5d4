//! `/v1/outbox`: role admin. Operators see notices (never their address or
//! body) and send failed ones again.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use kihon4_core::notices::outbox::{self, OutboxEntry};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Page, next_cursor, page_limit, uuid_cursor};
use crate::AppState;
use crate::extract::{Admin, Auth};
use crate::problem::{ApiError, ProblemKind};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    /// `pending`, `sent` or `failed`.
    #[param(pattern = "^(pending|sent|failed)$")]
    status: Option<String>,
    /// The `next_cursor` of the page before.
    #[param(format = Uuid)]
    cursor: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct NoticeView {
    id: Uuid,
    customer_id: Option<Uuid>,
    /// `consent_receipt`, `consent_withdrawn`, `basic4_changed`, …
    kind: String,
    locale: String,
    /// The `Message-ID` header: a resend carries the same one.
    message_id: String,
    /// `pending`, `sent` or `failed`.
    status: String,
    attempts: i32,
    /// When it is (or was) due.
    run_at: DateTime<Utc>,
    /// Why the last attempt failed.
    last_error: Option<String>,
    /// The mail server's answer when it took the message.
    server_response: Option<String>,
    created_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
}

impl From<OutboxEntry> for NoticeView {
    fn from(e: OutboxEntry) -> Self {
        Self {
            id: e.id,
            customer_id: e.customer_id,
            kind: e.kind,
            locale: e.locale,
            message_id: e.message_id,
            status: e.status,
            attempts: e.attempts,
            run_at: e.run_at,
            last_error: e.last_error,
            server_response: e.server_response,
            created_at: e.created_at,
            sent_at: e.sent_at,
        }
    }
}

/// Notices, oldest first, optionally of one status. Role: admin.
#[utoipa::path(
    operation_id = "listNotices",
    tag = "notices",
    params(OutboxQuery),
    responses((status = 200, body = Page<NoticeView>)),
    security(("bearer" = ["admin"]))
)]
#[get("/v1/outbox")]
pub async fn list(
    state: web::Data<AppState>,
    _auth: Auth<Admin>,
    query: web::Query<OutboxQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = match query.status.as_deref() {
        None => None,
        Some(s @ ("pending" | "sent" | "failed")) => Some(s),
        Some(_) => {
            return Err(ApiError::field(
                ProblemKind::InvalidQuery,
                "status",
                "must be pending, sent or failed",
            ));
        }
    };
    let limit = page_limit(query.limit)?;
    let after = uuid_cursor(query.cursor.as_deref())?;
    let found = outbox::list(&state.db, status, after, limit).await?;
    let next_cursor = next_cursor(&found, limit, |n| n.id.to_string());
    Ok(HttpResponse::Ok().json(Page {
        items: found.into_iter().map(NoticeView::from).collect(),
        next_cursor,
    }))
}

/// Sends a failed notice again (due at once; the same Message-ID). Role: admin.
#[utoipa::path(
    operation_id = "retryNotice",
    tag = "notices",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = NoticeView),
        (status = 404, description = "not-found"),
        (status = 409, description = "notice-not-failed"),
    ),
    security(("bearer" = ["admin"]))
)]
#[post("/v1/outbox/{id}/retry")]
pub async fn retry(
    state: web::Data<AppState>,
    auth: Auth<Admin>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let entry = outbox::retry(&state.db, &auth.audit(), *id).await?;
    Ok(HttpResponse::Ok().json(NoticeView::from(entry)))
}
