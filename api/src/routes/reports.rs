//! `/v1/reports`: role auditor.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use kihon4_core::consent::checks;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit::time;
use crate::AppState;
use crate::extract::{Auditor, Auth};
use crate::problem::{ApiError, ProblemKind};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// Checks at or after this time (RFC 3339).
    #[param(required = true, format = DateTime)]
    from: Option<String>,
    /// Checks before this time (RFC 3339); after `from`.
    #[param(required = true, format = DateTime)]
    to: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MethodCount {
    /// `signature_verification` or `liveness_check`.
    purpose: String,
    /// `crl`, `ocsp` or `provider`.
    method: String,
    count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct RevocationCheckReport {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    signature_verification: u64,
    liveness_check: u64,
    by_method: Vec<MethodCount>,
}

/// How many revocation checks kihon4 made or asked for in `[from, to)`,
/// by purpose, for the institution's reports to the authorities. Role: auditor.
#[utoipa::path(
    operation_id = "reportRevocationChecks",
    tag = "reports",
    params(RangeQuery),
    responses((status = 200, body = RevocationCheckReport)),
    security(("bearer" = ["auditor"]))
)]
#[get("/v1/reports/revocation-checks")]
pub async fn revocation_checks(
    state: web::Data<AppState>,
    _auth: Auth<Auditor>,
    query: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    let from = time("from", query.from.as_deref())?
        .ok_or_else(|| ApiError::field(ProblemKind::InvalidQuery, "from", "is required"))?;
    let to = time("to", query.to.as_deref())?
        .ok_or_else(|| ApiError::field(ProblemKind::InvalidQuery, "to", "is required"))?;
    if to <= from {
        return Err(ApiError::field(
            ProblemKind::InvalidQuery,
            "to",
            "must be after from",
        ));
    }
    let report = checks::report(&state.db, from, to).await?;
    Ok(HttpResponse::Ok().json(RevocationCheckReport {
        from,
        to,
        signature_verification: report.signature_verification,
        liveness_check: report.liveness_check,
        by_method: report
            .by_method
            .into_iter()
            .map(|(purpose, method, count)| MethodCount {
                purpose,
                method,
                count,
            })
            .collect(),
    }))
}
