//! `/v1/audit`: role auditor.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use kihon4_core::audit::{self, EventFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Page, next_cursor, page_limit, seq_cursor};
use crate::AppState;
use crate::extract::{Auditor, Auth};
use crate::problem::{ApiError, ProblemKind};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Events at or after this time (RFC 3339).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Events before this time (RFC 3339).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Only the events of this customer.
    #[param(format = Uuid)]
    customer_id: Option<String>,
    /// e.g. `customer.created`.
    action: Option<String>,
    /// The `next_cursor` of the page before (a `seq`).
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 500)]
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
    operation_id = "listAuditEvents",
    tag = "audit",
    params(EventQuery),
    responses((status = 200, body = Page<AuditEventView>)),
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
    let after = seq_cursor(query.cursor.as_deref())?;
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

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Events at or after this time (RFC 3339); default: the first.
    #[param(format = DateTime)]
    from: Option<String>,
    /// Events before this time (RFC 3339); default: none. Whatever it is,
    /// an export holds only the events up to the chain head when it started
    /// (`Kihon4-Last-Seq`).
    #[param(format = DateTime)]
    to: Option<String>,
    /// `jsonl` (default: exactly what was hashed) or `csv` (UTF-8 with BOM).
    #[param(pattern = "^(jsonl|csv)$")]
    format: Option<String>,
    /// `true`: instead of the events, their companion file of personal
    /// values in clear (`{seq, field, value, salt}` per line), for the same
    /// range. Needs the role `auditor_pii` (or `admin`).
    include_personal_data: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestQuery {
    /// The export's id (its `Kihon4-Export-Id`): the manifest names exactly
    /// the events that export held. Required: a time range alone would be
    /// read anew, and events written since would make it another range.
    export_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
    include_personal_data: Option<bool>,
}

struct ExportRange {
    personal: bool,
    format: kihon4_core::audit_export::Format,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

fn export_range(query: &ExportQuery) -> Result<ExportRange, ApiError> {
    use kihon4_core::audit_export::Format;
    let format = match query.format.as_deref() {
        None => Format::Jsonl,
        Some(raw) => Format::parse(raw).ok_or_else(|| {
            ApiError::field(
                ProblemKind::InvalidQuery,
                "format",
                "must be `jsonl` or `csv`",
            )
        })?,
    };
    Ok(ExportRange {
        personal: query.include_personal_data == Some(true),
        format,
        from: time("from", query.from.as_deref())?,
        to: time("to", query.to.as_deref())?,
    })
}

/// A signed checkpoint of the chain head (`kihon4 audit verify` checks it).
#[derive(Serialize, ToSchema)]
#[schema(as = Checkpoint)]
#[allow(dead_code)]
pub struct CheckpointView {
    /// The `seq` of the head event.
    seq: i64,
    /// Its hash (hex).
    head_hash: String,
    at: DateTime<Utc>,
    /// The signing key's id.
    key_id: String,
    /// Ed25519 over the checkpoint, base64.
    signature: String,
}

/// The signed manifest of an export.
#[derive(Serialize, ToSchema)]
#[schema(as = Manifest)]
#[allow(dead_code)]
pub struct ManifestView {
    /// `kihon4-audit-export`.
    #[serde(rename = "type")]
    kind: String,
    v: u32,
    /// The export it describes (`Kihon4-Export-Id`).
    export_id: Option<Uuid>,
    /// `jsonl` or `csv`.
    format: String,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    count: u64,
    first_seq: Option<i64>,
    last_seq: Option<i64>,
    /// The hash before the first event (the genesis hash for the first).
    prev_hash: String,
    first_hash: Option<String>,
    last_hash: Option<String>,
    /// SHA-256 (hex) of the export file, byte for byte.
    file_sha256: String,
    checkpoint: CheckpointView,
    key_id: String,
    signature: String,
}

fn signing_key(state: &AppState) -> Result<&kihon4_core::audit_export::SigningKey, ApiError> {
    state.audit_key.as_deref().ok_or_else(|| {
        ApiError::new(
            ProblemKind::NotReady,
            "The audit signing key is not loaded (KIHON4_AUDIT_SIGNING_KEY).",
        )
    })
}

/// The newest signed checkpoint of the chain head (written daily by the
/// worker and at every export); with `Accept: text/plain`, the newest
/// checkpoint of the audit log instead, as its signed note (C2SP
/// tlog-checkpoint, as `/v1/audit/log/checkpoint`). Role: auditor.
#[utoipa::path(
    operation_id = "getLatestAuditCheckpoint",
    tag = "audit",
    responses(
        (status = 200, description = "The chain head's checkpoint (JSON), or the log's signed note (`Accept: text/plain`)",
            content(
                (CheckpointView = "application/json"),
                (String = "text/plain"),
            )),
        (status = 404, description = "not-found: none written yet"),
    ),
    security(("bearer" = ["auditor"]))
)]
#[get("/v1/audit/checkpoints/latest")]
pub async fn checkpoint(
    state: web::Data<AppState>,
    _auth: Auth<Auditor>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let wants_note = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|t| t.trim().to_ascii_lowercase().starts_with("text/plain"))
        });
    if wants_note {
        return match kihon4_core::audit_log::latest(&state.db).await? {
            Some(note) => Ok(super::audit_log::note_response(note)),
            None => Err(ApiError::not_found("checkpoint")),
        };
    }
    match kihon4_core::audit_export::latest_checkpoint(&state.db).await? {
        Some(checkpoint) => Ok(HttpResponse::Ok().json(checkpoint)),
        None => Err(ApiError::not_found("checkpoint")),
    }
}

/// The core rule on personal data in clear (KIHON4_AUDIT_PII_ROLES), as a problem.
fn may_see_personal_data(state: &AppState, auth: &Auth<Auditor>) -> Result<(), ApiError> {
    kihon4_core::audit_export::may_see_personal_data(&auth.principal.roles, &state.audit_pii_roles)
        .map_err(|refused| ApiError::new(ProblemKind::Forbidden, refused.to_string()))
}

/// The headers that say which export a response is and which events it
/// covers.
fn export_headers(
    mut res: actix_web::HttpResponseBuilder,
    started: &kihon4_core::audit_export::Started,
) -> actix_web::HttpResponseBuilder {
    res.insert_header(("Kihon4-Export-Id", started.id.to_string()))
        .insert_header(("Kihon4-Event-Count", started.count().to_string()))
        .insert_header(("Kihon4-Checkpoint-Seq", started.checkpoint.seq.to_string()))
        .insert_header((
            "Link",
            format!(
                "</v1/audit/exports/{}/manifest>; rel=\"describedby\"",
                started.id
            ),
        ));
    if let Some((first, last)) = started.range {
        res.insert_header(("Kihon4-First-Seq", first.to_string()))
            .insert_header(("Kihon4-Last-Seq", last.to_string()));
    }
    res
}

/// The companion file of a range, streamed.
fn personal_body(
    state: &AppState,
    started: &kihon4_core::audit_export::Started,
) -> impl futures_util::Stream<Item = Result<web::Bytes, actix_web::Error>> + use<> {
    use kihon4_core::audit_export as export;
    let db = state.db.clone();
    // Every field of the first event: fields are never empty.
    let start = started
        .range
        .map(|(first, last)| ((first, String::new()), last));
    paged(start, move |(after, last)| {
        let db = db.clone();
        async move {
            let rows = export::personal_page(&db, after, last).await?;
            Ok(rows.last().map(|r| {
                let bytes = rows.iter().flat_map(export::personal_line).collect();
                (bytes, ((r.seq, r.field.clone()), last))
            }))
        }
    })
}

fn export_id(raw: &str, field: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::field(
            ProblemKind::InvalidQuery,
            field,
            "must be the Kihon4-Export-Id of an export",
        )
    })
}

/// A body streamed a page at a time, in constant memory whatever its size:
/// `fetch` gives a page's bytes and the cursor after it, or `None` after the
/// last page. A failure ends the body (the client sees it cut short).
fn paged<K, F, Fut>(
    start: Option<K>,
    fetch: F,
) -> impl futures_util::Stream<Item = Result<web::Bytes, actix_web::Error>>
where
    F: Fn(K) -> Fut + Clone,
    Fut: std::future::Future<Output = Result<Option<(Vec<u8>, K)>, kihon4_core::CoreError>>,
{
    futures_util::stream::unfold(start, move |cursor| {
        let fetch = fetch.clone();
        async move {
            match fetch(cursor?).await {
                Ok(None) => None,
                Ok(Some((bytes, next))) => Some((Ok(web::Bytes::from(bytes)), Some(next))),
                Err(e) => {
                    tracing::error!(error = %e, "an audit export stopped");
                    Some((
                        Err(actix_web::error::ErrorInternalServerError("export failed")),
                        None,
                    ))
                }
            }
        }
    })
}

/// The events of a time range, streamed: JSON Lines of exactly what was
/// hashed, or CSV. The range is fixed when the export starts (the events
/// of `[from, to)` up to the chain head then) and named by the headers
/// `Kihon4-Export-Id`, `Kihon4-First-Seq`, `Kihon4-Last-Seq`,
/// `Kihon4-Event-Count` and `Kihon4-Checkpoint-Seq`; its manifest is at
/// `/v1/audit/exports/{id}/manifest` (the `Link` header). Role: auditor.
#[utoipa::path(
    operation_id = "exportAuditEvents",
    tag = "audit",
    params(ExportQuery),
    responses(
        (status = 200, description = "The events, streamed: JSON Lines (`format=jsonl`, and the companion file of `include_personal_data=true`) or CSV (`format=csv`)",
            headers(
                ("Kihon4-Export-Id" = Uuid, description = "The export's id: its manifest is at /v1/audit/exports/{id}/manifest"),
                ("Kihon4-First-Seq" = i64, description = "The first event's seq (absent for an empty export)"),
                ("Kihon4-Last-Seq" = i64, description = "The last event's seq (absent for an empty export)"),
                ("Kihon4-Event-Count" = u64, description = "How many events it holds"),
                ("Kihon4-Checkpoint-Seq" = i64, description = "The seq of the checkpoint signed when it started"),
                ("Link" = String, description = "`</v1/audit/exports/{id}/manifest>; rel=\"describedby\"`"),
            ),
            content(
                (String = "application/jsonl"),
                (String = "text/csv"),
            )),
    ),
    security(("bearer" = ["auditor"]))
)]
#[get("/v1/audit/export")]
pub async fn export(
    state: web::Data<AppState>,
    auth: Auth<Auditor>,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    use kihon4_core::audit_export::{self as export, CSV_BOM, CSV_HEADER, ExportRequest, Format};
    let range = export_range(&query)?;
    if range.personal {
        may_see_personal_data(&state, &auth)?;
    }
    let key = signing_key(&state)?;
    // The range is fixed here, and the export's own audit event comes after it.
    let started = export::start_export(
        &state.db,
        key,
        &auth.audit(),
        &ExportRequest {
            format: range.format,
            from: range.from,
            to: range.to,
            events: !range.personal,
            personal_data: range.personal,
        },
    )
    .await?;
    if range.personal {
        let body = personal_body(&state, &started);
        return Ok(export_headers(HttpResponse::Ok(), &started)
            .content_type("application/jsonl; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .streaming(body));
    }
    let format = range.format;
    let head: Vec<u8> = match format {
        Format::Jsonl => Vec::new(),
        Format::Csv => [CSV_BOM, CSV_HEADER.as_bytes()].concat(),
    };
    let db = state.db.clone();
    let pages = paged(
        started.range.map(|(first, last)| (first - 1, last)),
        move |(after, last)| {
            let db = db.clone();
            async move {
                let rows = export::page(&db, after, last).await?;
                Ok(rows.last().map(|r| {
                    let bytes = rows.iter().flat_map(|e| export::line(format, e)).collect();
                    (bytes, (r.seq, last))
                }))
            }
        },
    );
    let body = futures_util::StreamExt::chain(
        futures_util::stream::once(
            async move { Ok::<_, actix_web::Error>(web::Bytes::from(head)) },
        ),
        pages,
    );
    let content_type = match format {
        Format::Jsonl => "application/jsonl; charset=utf-8",
        Format::Csv => "text/csv; charset=utf-8",
    };
    Ok(export_headers(HttpResponse::Ok(), &started)
        .content_type(content_type)
        .insert_header(("cache-control", "no-store"))
        .streaming(body))
}

async fn manifest_response(
    state: &AppState,
    auth: &Auth<Auditor>,
    id: Uuid,
) -> Result<HttpResponse, ApiError> {
    use kihon4_core::audit_export::{ManifestRefused, hand_out_manifest};
    let key = signing_key(state)?;
    let (started, signed) = match hand_out_manifest(&state.db, key, &auth.audit(), id).await {
        Ok(handed) => handed,
        Err(ManifestRefused::CompanionOnly) => {
            return Err(ApiError::new(
                ProblemKind::NotFound,
                "This export is a companion file of personal values, which has no manifest: fetch the manifest of the events' export, and its companion at /v1/audit/exports/{id}/personal-data.",
            ));
        }
        Err(ManifestRefused::Core(e)) => return Err(e.into()),
    };
    Ok(export_headers(HttpResponse::Ok(), &started).json(signed))
}

/// The signed manifest of an export, by its id: its fixed range, count,
/// hashes, the file's SHA-256 and the checkpoint taken when it started.
/// The same manifest every time. Role: auditor.
#[utoipa::path(
    operation_id = "getAuditExportManifest",
    tag = "audit",
    params(("id" = Uuid, Path, description = "The export's `Kihon4-Export-Id`")),
    responses(
        (status = 200, body = ManifestView, description = "The manifest"),
        (status = 404, description = "not-found: no such export, or an export of only a companion file"),
        (status = 503, description = "not-ready: the audit signing key is not loaded"),
    ),
    security(("bearer" = ["auditor"]))
)]
#[get("/v1/audit/exports/{id}/manifest")]
pub async fn export_manifest(
    state: web::Data<AppState>,
    auth: Auth<Auditor>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("audit export"))?;
    manifest_response(&state, &auth, id).await
}

/// The companion file of personal values in clear for exactly the events
/// of an export (`{seq, field, value, salt}` per line). Role: `auditor_pii`
/// (KIHON4_AUDIT_PII_ROLES).
#[utoipa::path(
    operation_id = "getAuditExportPersonalData",
    tag = "audit",
    params(("id" = Uuid, Path, description = "The export's `Kihon4-Export-Id`")),
    responses(
        (status = 200, description = "The companion file, streamed as JSON Lines",
            headers(
                ("Kihon4-Export-Id" = Uuid, description = "The export's id: its manifest is at /v1/audit/exports/{id}/manifest"),
                ("Kihon4-First-Seq" = i64, description = "The first event's seq (absent for an empty export)"),
                ("Kihon4-Last-Seq" = i64, description = "The last event's seq (absent for an empty export)"),
                ("Kihon4-Event-Count" = u64, description = "How many events it holds"),
                ("Kihon4-Checkpoint-Seq" = i64, description = "The seq of the checkpoint signed when it started"),
                ("Link" = String, description = "`</v1/audit/exports/{id}/manifest>; rel=\"describedby\"`"),
            ),
            content((String = "application/jsonl"))),
    ),
    security(("bearer" = ["auditor_pii"]))
)]
#[get("/v1/audit/exports/{id}/personal-data")]
pub async fn export_personal_data(
    state: web::Data<AppState>,
    auth: Auth<Auditor>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    may_see_personal_data(&state, &auth)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("audit export"))?;
    let started =
        kihon4_core::audit_export::hand_out_personal_data(&state.db, &auth.audit(), id).await?;
    let body = personal_body(&state, &started);
    Ok(export_headers(HttpResponse::Ok(), &started)
        .content_type("application/jsonl; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .streaming(body))
}

/// The signed manifest of an export named by `export_id` (as
/// `/v1/audit/exports/{id}/manifest`). A time range alone is refused: read
/// anew, it would take in the events written since, the export's own
/// `audit.exported` first. Role: auditor.
#[utoipa::path(
    operation_id = "getAuditExportManifestByQuery",
    tag = "audit",
    params(("export_id" = Uuid, Query, description = "The export's `Kihon4-Export-Id`. Required: a time range alone would be read anew, and events written since would make it another range; the export's own parameters are refused beside it")),
    responses(
        (status = 200, body = ManifestView, description = "The manifest"),
        (status = 404, description = "not-found: no such export, or an export of only a companion file"),
        (status = 503, description = "not-ready: the audit signing key is not loaded"),
    ),
    security(("bearer" = ["auditor"]))
)]
#[get("/v1/audit/export/manifest")]
pub async fn manifest(
    state: web::Data<AppState>,
    auth: Auth<Auditor>,
    query: web::Query<ManifestQuery>,
) -> Result<HttpResponse, ApiError> {
    let Some(raw) = query.export_id.as_deref() else {
        return Err(ApiError::field(
            ProblemKind::InvalidQuery,
            "export_id",
            "is required: give the Kihon4-Export-Id of the export (or fetch /v1/audit/exports/{id}/manifest); a time range read again would be another range",
        ));
    };
    let id = export_id(raw, "export_id")?;
    for (field, given) in [
        ("from", query.from.is_some()),
        ("to", query.to.is_some()),
        ("format", query.format.is_some()),
        (
            "include_personal_data",
            query.include_personal_data.is_some(),
        ),
    ] {
        if given {
            return Err(ApiError::field(
                ProblemKind::InvalidQuery,
                field,
                "is the export's own: give export_id alone",
            ));
        }
    }
    manifest_response(&state, &auth, id).await
}
