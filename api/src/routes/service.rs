//! Health, readiness, metrics and the API's own description.

use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, get, web};
use sea_orm::ConnectionTrait;
use serde_json::json;
use utoipa::ToSchema;

use crate::AppState;
use crate::problem::{ApiError, ProblemKind};

#[derive(serde::Serialize, ToSchema)]
pub struct Status {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    status: String,
}

/// The process is up.
#[utoipa::path(operation_id = "healthz", tag = "service", responses((status = 200, body = Status, description = "Up")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers and its schema is this binary's.
#[utoipa::path(
    operation_id = "readyz",
    tag = "service",
    responses(
        (status = 200, body = Status, description = "Ready"),
        (status = 503, description = "not-ready: the database does not answer, or migrations are pending"),
    )
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Err(e) = state.db.execute_unprepared("SELECT 1").await {
        tracing::warn!(error = %e, "database unreachable");
        return Err(ApiError::new(
            ProblemKind::NotReady,
            "The database does not answer.",
        ));
    }
    match kihon4_migrations::schema_status(&state.db).await {
        Ok(status) if status.is_current() => {
            Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
        }
        Ok(status) => Err(ApiError::new(
            ProblemKind::NotReady,
            format!(
                "{} migration(s) are not applied; run `kihon4 migrate`.",
                status.pending.len()
            ),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "schema status unreadable");
            Err(ApiError::new(
                ProblemKind::NotReady,
                "The schema status cannot be read.",
            ))
        }
    }
}

/// Prometheus metrics.
#[utoipa::path(
    operation_id = "metrics",
    tag = "service",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(
    operation_id = "openapi",
    tag = "service",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object))
)]
#[get("/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}

/// A browsable page of the API, rendered on the server (no script, no CDN).
#[utoipa::path(
    operation_id = "docs",
    tag = "service",
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
#[get("/docs")]
pub async fn docs() -> Result<HttpResponse, ApiError> {
    let html = crate::openapi::render_docs_page().map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(html))
}
