//! `/v1/audit/log`, `/v1/audit/checkpoints/{size}` and `/v1/audit/proofs`:
//! the audit trail as a transparency log (docs/audit.md, "The audit log").
//! Role: auditor. Checkpoints are C2SP signed notes (`text/plain`), tiles
//! are C2SP tlog-tiles (`application/octet-stream`, immutable), proofs are
//! JSON with base64 hashes.

use actix_web::http::header;
use actix_web::{HttpResponse, get, web};
use kihon4_core::audit_log::{self, LogError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::extract::{Auditor, Auth};
use crate::problem::{ApiError, ProblemKind};

/// The media type of a signed note (C2SP signed-note).
const NOTE_TYPE: &str = "text/plain; charset=utf-8";

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::NotSealed { sealed } => ApiError::new(
                ProblemKind::LogNotSealed,
                format!(
                    "The audit log is sealed to {sealed} events; a checkpoint follows new events within seconds."
                ),
            ),
            // A leaf beyond the tree asked for, a proof from a larger
            // tree to a smaller: no such proof.
            LogError::Invalid(message) => ApiError::new(ProblemKind::NotFound, message),
            LogError::NoCheckpoint { size } => ApiError::new(
                ProblemKind::NotFound,
                format!("No checkpoint was signed at {size} events: use the size of one that was."),
            ),
            LogError::Core(e) => e.into(),
        }
    }
}

pub(crate) fn note_response(note: String) -> HttpResponse {
    HttpResponse::Ok().content_type(NOTE_TYPE).body(note)
}

/// The newest checkpoint of the audit log, as a signed note (C2SP
/// tlog-checkpoint): `<origin>\n<size>\n<base64 root>\n\n— <origin> <signature>\n`.
/// Role: auditor.
#[utoipa::path(
    operation_id = "getAuditLogCheckpoint",
    tag = "audit",
    responses(
        (status = 200, description = "The signed note", content_type = "text/plain", body = String),
        (status = 404, description = "not-found: nothing sealed yet"),
    ),
    security(("bearer" = ["auditor"]))
)]
#[get("/v1/audit/log/checkpoint")]
pub async fn log_checkpoint(
    state: web::Data<AppState>,
    _auth: Auth<Auditor>,
) -> Result<HttpResponse, ApiError> {
    match audit_log::latest(&state.db).await? {
        Some(note) => Ok(note_response(note)),
        None => Err(ApiError::not_found("checkpoint")),
    }
}

/// The audit log's keys.
#[derive(Serialize, ToSchema)]
pub struct LogKeysView {
    /// The log's origin, which every key signs under (`null` before the
    /// first checkpoint).
    origin: Option<String>,
    /// Oldest first.
    keys: Vec<LogKeyView>,
}

/// A key of the audit log, and the trees it may sign.
#[derive(Serialize, ToSchema)]
pub struct LogKeyView {
    /// The key's own id: the first 16 hex digits of the SHA-256 of its raw
    /// Ed25519 public key.
    key_id: String,
    /// Its signed-note key id as the log's key (8 hex digits).
    note_key_id: String,
    /// The verifier key (`<origin>+<key id>+<base64 key>`).
    vkey: String,
    /// SubjectPublicKeyInfo PEM.
    public_key_pem: String,
    valid_from: chrono::DateTime<chrono::Utc>,
    /// `null` for the current key.
    valid_until: Option<chrono::DateTime<chrono::Utc>>,
    /// The smallest tree it signs.
    first_tree_size: i64,
    /// The largest tree it signed; `null` for the current key.
    last_tree_size: Option<i64>,
    /// The `audit.log_key_rotated` event that brought it in (`null` for the
    /// first key).
    rotation_seq: Option<i64>,
    /// That event's statement, signed by this key and the one it replaced.
    statement: Option<String>,
}

/// Every key the audit log has had, with the trees each may sign: a
/// checkpoint of size `n` is the log's only when signed by the key whose
/// `first_tree_size`–`last_tree_size` holds `n`. Role: auditor.
#[utoipa::path(
    operation_id = "listAuditLogKeys",
    tag = "audit",
    responses(
        (status = 200, description = "The keys, oldest first", body = LogKeysView),
    ),
    security(("bearer" = ["auditor"]))
)]
#[get("/v1/audit/log/keys")]
pub async fn log_keys(
    state: web::Data<AppState>,
    _auth: Auth<Auditor>,
) -> Result<HttpResponse, ApiError> {
    let keys = audit_log::keys::list(&state.db).await?;
    Ok(HttpResponse::Ok().json(LogKeysView {
        origin: keys.first().map(|k| k.origin.clone()),
        keys: keys
            .into_iter()
            .map(|k| LogKeyView {
                key_id: k.key_id,
                note_key_id: k.note_key_id,
                vkey: k.vkey,
                public_key_pem: k.public_key_pem,
                valid_from: k.valid_from,
                valid_until: k.valid_until,
                first_tree_size: k.first_size,
                last_tree_size: k.last_size,
                rotation_seq: k.rotation_seq,
                statement: k.statement,
            })
            .collect(),
    }))
}

/// The checkpoint of the audit log at exactly `size` events, when one was
/// signed at that size. Role: auditor.
#[utoipa::path(
    operation_id = "getAuditLogCheckpointAt",
    tag = "audit",
    params(("size" = u64, Path, minimum = 1, description = "The tree size")),
    responses(
        (status = 200, description = "The signed note", content_type = "text/plain", body = String),
        (status = 404, description = "not-found: no checkpoint was signed at that size"),
    ),
    security(("bearer" = ["auditor"]))
)]
#[get("/v1/audit/checkpoints/{size}")]
pub async fn checkpoint_at(
    state: web::Data<AppState>,
    _auth: Auth<Auditor>,
    size: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // Only the plain decimal spelling names a size (no sign, no leading zero).
    let note = match size.parse::<u64>() {
        Ok(n) if n.to_string() == *size => audit_log::checkpoint_at(&state.db, n).await?,
        _ => None,
    };
    note.map(note_response)
        .ok_or_else(|| ApiError::not_found("checkpoint"))
}

/// A tile of the audit log's Merkle tree (C2SP tlog-tiles): `tile/<L>/<N>`
/// or the partial `tile/<L>/<N>.p/<W>`, `N` in three-digit groups, all but
/// the last prefixed `x` (`x001/x234/067`), the slashes literal. 32-byte
/// hashes, 256 in a full tile. Immutable. Role: auditor.
#[utoipa::path(
    operation_id = "getAuditLogTile",
    tag = "audit",
    params(("tile" = String, Path, pattern = r"^[0-9]{1,2}/(x[0-9]{3}/)*[0-9]{3}(\.p/[1-9][0-9]{0,2})?$", description = "`<L>/<N>[.p/<W>]`")),
    responses(
        (status = 200, description = "The tile's hashes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "not-found: no such tile in the sealed tree"),
    ),
    security(("bearer" = ["auditor"]))
)]
#[get("/v1/audit/log/tile/{tile:.*}")]
pub async fn tile(
    state: web::Data<AppState>,
    _auth: Auth<Auditor>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Some(tile) = audit_log::proofs::parse_tile_path(&path) else {
        return Err(ApiError::not_found("tile"));
    };
    match audit_log::tile(&state.db, tile).await? {
        Some(data) => Ok(HttpResponse::Ok()
            .content_type("application/octet-stream")
            // A tile never changes once served; only an auditor may keep it.
            .insert_header((
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable",
            ))
            .body(data)),
        None => Err(ApiError::not_found("tile")),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// The event's `seq` (its leaf is `seq - 1`).
    #[param(minimum = 1)]
    seq: u64,
    /// The tree size the proof is for (default: the newest checkpoint's).
    #[param(minimum = 1)]
    tree_size: Option<u64>,
}

/// An inclusion proof (RFC 6962 audit path).
#[derive(Serialize, ToSchema)]
#[schema(as = InclusionProof)]
#[allow(dead_code)]
pub struct InclusionView {
    /// `seq - 1`.
    leaf_index: u64,
    tree_size: u64,
    /// The path's hashes, base64, from the leaf up.
    proof: Vec<String>,
}

/// The proof that an event is in the tree of a checkpoint. Role: auditor.
#[utoipa::path(
    operation_id = "getAuditInclusionProof",
    tag = "audit",
    params(InclusionQuery),
    responses(
        (status = 200, body = InclusionView, description = "The proof"),
        (status = 404, description = "log-not-sealed, not-found: the event or the tree size is not sealed yet; the event is beyond tree_size"),
    ),
    security(("bearer" = ["auditor"]))
)]
#[get("/v1/audit/proofs/inclusion")]
pub async fn inclusion(
    state: web::Data<AppState>,
    _auth: Auth<Auditor>,
    query: web::Query<InclusionQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.seq == 0 {
        return Err(ApiError::field(
            ProblemKind::InvalidQuery,
            "seq",
            "must be at least 1",
        ));
    }
    if query.tree_size == Some(0) {
        return Err(ApiError::field(
            ProblemKind::InvalidQuery,
            "tree_size",
            "must be at least 1",
        ));
    }
    if let Some(size) = query.tree_size.filter(|size| query.seq > *size) {
        return Err(ApiError::new(
            ProblemKind::NotFound,
            format!("No event {} in a tree of {size}.", query.seq),
        ));
    }
    let proof = audit_log::inclusion(&state.db, query.seq - 1, query.tree_size).await?;
    Ok(HttpResponse::Ok().json(proof))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The smaller tree size (an auditor's kept checkpoint).
    #[param(minimum = 1)]
    from: u64,
    /// The larger tree size (default: the newest checkpoint's).
    #[param(minimum = 1)]
    to: Option<u64>,
}

/// A consistency proof (RFC 6962).
#[derive(Serialize, ToSchema)]
#[schema(as = ConsistencyProof)]
#[allow(dead_code)]
pub struct ConsistencyView {
    from: u64,
    to: u64,
    /// The proof's hashes, base64.
    proof: Vec<String>,
}

/// The proof that the tree of one checkpoint extends the tree of an
/// earlier one. Role: auditor.
#[utoipa::path(
    operation_id = "getAuditConsistencyProof",
    tag = "audit",
    params(ConsistencyQuery),
    responses(
        (status = 200, body = ConsistencyView, description = "The proof"),
        (status = 404, description = "log-not-sealed, not-found: a size is not sealed yet; from is larger than to"),
    ),
    security(("bearer" = ["auditor"]))
)]
#[get("/v1/audit/proofs/consistency")]
pub async fn consistency(
    state: web::Data<AppState>,
    _auth: Auth<Auditor>,
    query: web::Query<ConsistencyQuery>,
) -> Result<HttpResponse, ApiError> {
    for (field, value) in [("from", Some(query.from)), ("to", query.to)] {
        if value == Some(0) {
            return Err(ApiError::field(
                ProblemKind::InvalidQuery,
                field,
                "must be at least 1",
            ));
        }
    }
    if let Some(to) = query.to.filter(|to| query.from > *to) {
        return Err(ApiError::new(
            ProblemKind::NotFound,
            format!(
                "No proof from a tree of {} to a smaller one of {to}.",
                query.from
            ),
        ));
    }
    let proof = audit_log::consistency(&state.db, query.from, query.to).await?;
    Ok(HttpResponse::Ok().json(proof))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CustomerProofsQuery {
    /// The size of a checkpoint (default: the newest).
    #[param(minimum = 1)]
    tree_size: Option<u64>,
    /// The `next_cursor` of the page before (a `seq`).
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
    /// Events per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
}

/// One customer's events with their inclusion proofs.
#[derive(Serialize, ToSchema)]
#[schema(as = CustomerProofs)]
#[allow(dead_code)]
pub struct CustomerProofsView {
    customer_id: uuid::Uuid,
    tree_size: u64,
    /// The checkpoint of `tree_size`, a signed note with its cosignatures.
    checkpoint: String,
    events: Vec<ProvenEventView>,
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ProvenEvent)]
#[allow(dead_code)]
pub struct ProvenEventView {
    seq: u64,
    /// The event's canonical JSON: the leaf.
    event: String,
    /// Its audit path, base64 hashes.
    proof: Vec<String>,
}

/// One customer's audit events, each with its inclusion proof in a
/// checkpoint's tree, and that checkpoint: the customer's trail proven
/// without anyone else's (`kihon4 audit verify-customer` checks it
/// offline). Role: auditor.
#[utoipa::path(
    operation_id = "getAuditCustomerProofs",
    tag = "audit",
    params(("id" = Uuid, Path, description = "The customer's id"), CustomerProofsQuery),
    responses(
        (status = 200, body = CustomerProofsView, description = "A page of the customer's events with their proofs"),
        (status = 404, description = "not-found, log-not-sealed: no checkpoint at that size; the size is not sealed yet"),
    ),
    security(("bearer" = ["auditor"]))
)]
#[get("/v1/audit/proofs/customers/{id}")]
pub async fn customer(
    state: web::Data<AppState>,
    _auth: Auth<Auditor>,
    id: web::Path<uuid::Uuid>,
    query: web::Query<CustomerProofsQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.tree_size == Some(0) {
        return Err(ApiError::field(
            ProblemKind::InvalidQuery,
            "tree_size",
            "must be at least 1",
        ));
    }
    let after = super::seq_cursor(query.cursor.as_deref())?.map(|s| s as u64);
    let limit = super::page_limit(query.limit)?;
    let bundle = audit_log::customer_proofs(&state.db, *id, query.tree_size, after, limit).await?;
    Ok(HttpResponse::Ok().json(bundle))
}
