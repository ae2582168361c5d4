//! `Idempotency-Key` on POST: the same key and body gets the first response
//! again; the same key with another body is refused; two requests with one
//! key at once run one, and the other is told to wait. A key is kept only
//! as its SHA-256, keyed by the caller it belongs to, never in clear.

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::entities::idempotency_keys;

/// How long a request may hold a key before another may take it over (a
/// process that died mid-request never finishes its claim).
pub const LOCK_SECONDS: i64 = 60;

/// How long a finished request's response is kept for replay.
pub const RETENTION_HOURS: i64 = 24;

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// The headers worth replaying (content type, location, ETag).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Run the request; then [`complete`] or [`release`].
    Execute,
    /// The same request ran before: send this again.
    Replay(StoredResponse),
    /// The key was used with another request.
    Mismatch,
    /// The same request is running right now.
    InProgress,
}

/// Who a key belongs to: the token's subject with its roles, sorted, so a
/// replay never answers a token the route would refuse.
pub fn principal_of(sub: &str, roles: &[&str]) -> String {
    let mut roles = roles.to_vec();
    roles.sort_unstable();
    roles.dedup();
    format!("{sub}|{}", roles.join(","))
}

/// Why an `Idempotency-Key` header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// Not 1 to 255 visible ASCII characters.
    Invalid,
    /// It looks like a My Number, which is never stored, hashed or not.
    MyNumber,
}

/// The key of an `Idempotency-Key` header's raw bytes.
pub fn parse_key(raw: &[u8]) -> Result<String, KeyRefusal> {
    let key = std::str::from_utf8(raw)
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(KeyRefusal::Invalid)?;
    if crate::domain::identifier_holds_my_number(key) {
        return Err(KeyRefusal::MyNumber);
    }
    Ok(key.to_owned())
}

/// What makes two requests with one key the same request: method, path and
/// query, content type and body.
pub fn request_hash(
    method: &str,
    path_and_query: &str,
    content_type: Option<&[u8]>,
    body: &[u8],
) -> String {
    let mut hash = Sha256::new();
    hash.update(method);
    hash.update(b" ");
    hash.update(path_and_query);
    hash.update(b"\n");
    if let Some(ct) = content_type {
        hash.update(ct);
    }
    hash.update(b"\n");
    hash.update(body);
    hex::encode(hash.finalize())
}

/// The response headers kept for a replay.
pub const KEPT_HEADERS: [&str; 3] = ["content-type", "location", "etag"];

/// Whether an answer with `status` is kept for replay. Server errors are
/// not, so a retry runs again; nor are refusals of the token (401, 403), so
/// a retry with a better token is judged (and audited) anew.
pub fn keeps(status: u16) -> bool {
    !(status >= 500 || status == 401 || status == 403)
}

/// The stored form of `key` for `principal`: the SHA-256 of both, so that a
/// key (which a caller may have made of anything) is never kept in clear.
/// The migration that hashed the keys kept before uses the same function.
pub fn key_sha256(principal: &str, key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"kihon4 idempotency key\0");
    hash.update(principal.as_bytes());
    hash.update(b"\0");
    hash.update(key.as_bytes());
    hex::encode(hash.finalize())
}

pub async fn claim<C: ConnectionTrait>(
    db: &C,
    principal: &str,
    key: &str,
    request_hash: &str,
    now: DateTime<Utc>,
) -> Result<Claim, DbErr> {
    let stored_key = key_sha256(principal, key);
    let locked_until = now + Duration::seconds(LOCK_SECONDS);
    let inserted = idempotency_keys::Entity::insert(idempotency_keys::ActiveModel {
        principal: Set(principal.to_owned()),
        key_sha256: Set(stored_key.clone()),
        request_hash: Set(request_hash.to_owned()),
        state: Set("in_progress".into()),
        locked_until: Set(locked_until),
        response_status: Set(None),
        response_headers: Set(None),
        response_body: Set(None),
        created_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([
            idempotency_keys::Column::Principal,
            idempotency_keys::Column::KeySha256,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    if inserted == 1 {
        return Ok(Claim::Execute);
    }
    let Some(row) =
        idempotency_keys::Entity::find_by_id((principal.to_owned(), stored_key.clone()))
            .one(db)
            .await?
    else {
        // Released between our insert and our read: try once more.
        return Box::pin(claim(db, principal, key, request_hash, now)).await;
    };
    if row.request_hash != request_hash {
        return Ok(Claim::Mismatch);
    }
    if row.state == "done" {
        return Ok(Claim::Replay(stored(row)));
    }
    if row.locked_until > now {
        return Ok(Claim::InProgress);
    }
    // The holder died: take the claim over, if nobody else did first.
    let taken = idempotency_keys::Entity::update_many()
        .col_expr(
            idempotency_keys::Column::LockedUntil,
            Expr::value(locked_until),
        )
        .filter(idempotency_keys::Column::Principal.eq(principal))
        .filter(idempotency_keys::Column::KeySha256.eq(stored_key.as_str()))
        .filter(idempotency_keys::Column::State.eq("in_progress"))
        .filter(idempotency_keys::Column::LockedUntil.eq(row.locked_until))
        .exec(db)
        .await?;
    Ok(if taken.rows_affected == 1 {
        Claim::Execute
    } else {
        Claim::InProgress
    })
}

fn stored(row: idempotency_keys::Model) -> StoredResponse {
    let headers = row
        .response_headers
        .and_then(|h| serde_json::from_value::<Vec<(String, String)>>(h).ok())
        .unwrap_or_default();
    StoredResponse {
        status: row.response_status.unwrap_or(500) as u16,
        headers,
        body: row.response_body.unwrap_or_default(),
    }
}

/// Keeps the response of a request that ran under `key`.
pub async fn complete<C: ConnectionTrait>(
    db: &C,
    principal: &str,
    key: &str,
    response: &StoredResponse,
) -> Result<(), DbErr> {
    let headers: Value = serde_json::to_value(&response.headers).expect("strings serialise");
    idempotency_keys::Entity::update_many()
        .col_expr(idempotency_keys::Column::State, Expr::value("done"))
        .col_expr(
            idempotency_keys::Column::ResponseStatus,
            Expr::value(i32::from(response.status)),
        )
        .col_expr(
            idempotency_keys::Column::ResponseHeaders,
            Expr::value(headers),
        )
        .col_expr(
            idempotency_keys::Column::ResponseBody,
            Expr::value(response.body.clone()),
        )
        .filter(idempotency_keys::Column::Principal.eq(principal))
        .filter(idempotency_keys::Column::KeySha256.eq(key_sha256(principal, key)))
        .exec(db)
        .await?;
    Ok(())
}

/// Gives a key back when its request failed in a way worth retrying.
pub async fn release<C: ConnectionTrait>(db: &C, principal: &str, key: &str) -> Result<(), DbErr> {
    idempotency_keys::Entity::delete_many()
        .filter(idempotency_keys::Column::Principal.eq(principal))
        .filter(idempotency_keys::Column::KeySha256.eq(key_sha256(principal, key)))
        .filter(idempotency_keys::Column::State.eq("in_progress"))
        .exec(db)
        .await?;
    Ok(())
}

/// Forgets keys older than `retention` at `now`, except claims still held.
/// Returns how many were removed.
pub async fn purge<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
    retention: Duration,
) -> Result<u64, DbErr> {
    let gone = idempotency_keys::Entity::delete_many()
        .filter(idempotency_keys::Column::CreatedAt.lt(now - retention))
        .filter(
            sea_orm::Condition::any()
                .add(idempotency_keys::Column::State.eq("done"))
                .add(idempotency_keys::Column::LockedUntil.lt(now)),
        )
        .exec(db)
        .await?;
    Ok(gone.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_and_never_a_my_number() {
        assert_eq!(parse_key(b"8d3c5a0e-6f1b").as_deref(), Ok("8d3c5a0e-6f1b"));
        for bad in [
            &b""[..],
            b"with space",
            b"tab\t",
            "日本".as_bytes(),
            &[0xff, 0xfe],
        ] {
            assert_eq!(parse_key(bad), Err(KeyRefusal::Invalid), "{bad:?}");
        }
        assert_eq!(parse_key(&[b'a'; 256]), Err(KeyRefusal::Invalid));
        assert!(parse_key(&[b'a'; 255]).is_ok());
        // A valid My Number (check digit 8) in a key.
        assert_eq!(parse_key(b"key-123456789018"), Err(KeyRefusal::MyNumber));
    }

    #[test]
    fn a_principal_is_its_subject_and_sorted_roles() {
        assert_eq!(
            principal_of("alice", &["operator", "admin", "operator"]),
            "alice|admin,operator"
        );
        assert_eq!(principal_of("bob", &[]), "bob|");
    }

    #[test]
    fn server_errors_and_token_refusals_are_not_kept() {
        for status in [200, 201, 204, 400, 404, 409, 422, 429] {
            assert!(keeps(status), "{status}");
        }
        for status in [401, 403, 500, 502, 503] {
            assert!(!keeps(status), "{status}");
        }
    }

    #[test]
    fn the_request_hash_covers_method_path_type_and_body() {
        let base = request_hash("POST", "/v1/customers", Some(b"application/json"), b"{}");
        assert_ne!(
            base,
            request_hash("PUT", "/v1/customers", Some(b"application/json"), b"{}")
        );
        assert_ne!(
            base,
            request_hash("POST", "/v1/customers?x", Some(b"application/json"), b"{}")
        );
        assert_ne!(base, request_hash("POST", "/v1/customers", None, b"{}"));
        assert_ne!(
            base,
            request_hash("POST", "/v1/customers", Some(b"application/json"), b"{ }")
        );
        assert_eq!(
            base,
            request_hash("POST", "/v1/customers", Some(b"application/json"), b"{}")
        );
    }
}
