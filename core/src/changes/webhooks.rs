//! Webhook endpoints: the receivers an admin registers for the change
//! feed, their secrets, and the Standard Webhooks signature
//! (standardwebhooks.com) every delivery carries.
//!
//! A secret is `whsec_` and the base64 of 32 random bytes, shown once when
//! it is made. It is signed with by the official `standardwebhooks`
//! library: `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{webhook-id}.{webhook-timestamp}.{body}">`. After a rotation the old
//! secret signs too, as a second `v1,…` in the same header, until the
//! overlap ends, so a receiver may switch its secret at any moment in it.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ChangeType, Cursor};
use crate::audit::events::{EndpointChange, Event, WebhookEndpointChanged};
use crate::audit::{self, AuditContext};
use crate::domain::{FieldErrors, ValueError, contains_my_number};
use crate::entities::{webhook_attempts, webhook_deliveries, webhook_endpoints};
use crate::error::CoreError;

/// The longest URL an endpoint may have.
pub const MAX_URL_LEN: usize = 2048;
/// The longest overlap of a rotation: a week.
pub const MAX_OVERLAP_SECONDS: i64 = 7 * 86_400;
/// The overlap of a rotation when none is asked for: a day.
pub const DEFAULT_OVERLAP_SECONDS: i64 = 86_400;

/// A new secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The `webhook-signature` header for `body`, sent as message `msg_id` at
/// `timestamp` (Unix seconds): one `v1,…` per secret, separated by spaces.
pub fn signature_header(
    secrets: &[&str],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, String> {
    let mut parts = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let wh = standardwebhooks::Webhook::new(secret)
            .map_err(|e| format!("an endpoint's secret cannot be used: {e}"))?;
        parts.push(
            wh.sign(msg_id, timestamp, body)
                .map_err(|e| format!("the body cannot be signed: {e}"))?,
        );
    }
    Ok(parts.join(" "))
}

/// The secrets an endpoint signs with at `at`: its own, and the previous
/// one during a rotation's overlap.
pub fn signing_secrets(endpoint: &webhook_endpoints::Model, at: DateTime<Utc>) -> Vec<&str> {
    let mut out = vec![endpoint.secret.as_str()];
    if let (Some(previous), Some(until)) =
        (&endpoint.previous_secret, endpoint.previous_secret_until)
        && at < until
    {
        out.push(previous.as_str());
    }
    out
}

/// Whether `raw` may be an endpoint's URL: `https`, or plain `http` to a
/// loopback address only (for tests on one machine); no user or password,
/// no fragment, nothing that looks like a My Number.
pub fn check_url(raw: &str) -> Result<url::Url, ValueError> {
    if raw.len() > MAX_URL_LEN {
        return Err(ValueError::invalid(format!(
            "must be at most {MAX_URL_LEN} characters"
        )));
    }
    if contains_my_number(raw) {
        return Err(ValueError::MyNumber);
    }
    let url =
        url::Url::parse(raw).map_err(|e| ValueError::invalid(format!("is not a URL: {e}")))?;
    let Some(host) = url.host() else {
        return Err(ValueError::invalid("must name a host"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ValueError::invalid(
            "must not hold a user name or password; the signature authenticates kihon4",
        ));
    }
    if url.fragment().is_some() {
        return Err(ValueError::invalid("must not have a fragment"));
    }
    let loopback = match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(ValueError::invalid(
            "must be https; plain http is accepted only to a loopback address",
        )),
        other => Err(ValueError::invalid(format!("must be https, not `{other}`"))),
    }
}

/// An endpoint as the API shows it: never its secret.
pub fn view(e: &webhook_endpoints::Model) -> Value {
    json!({
        "id": e.id,
        "url": e.url,
        "event_types": event_types(e),
        "status": e.status,
        "disabled_reason": e.disabled_reason,
        "previous_secret_until": e.previous_secret_until,
        "failing_since": e.failing_since,
        "created_by": e.created_by,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
    })
}

/// The endpoint's event types; empty for every type.
pub fn event_types(e: &webhook_endpoints::Model) -> Vec<String> {
    serde_json::from_str(&e.event_types).unwrap_or_default()
}

/// Whether the endpoint takes events of `kind`.
pub fn takes(e: &webhook_endpoints::Model, kind: &str) -> bool {
    let types = event_types(e);
    types.is_empty() || types.iter().any(|t| t == kind)
}

/// A new endpoint as asked for.
pub struct NewEndpoint<'a> {
    pub url: Option<&'a str>,
    /// `None`: every type.
    pub event_types: Option<Vec<String>>,
}

/// Registers an endpoint; it receives the events written from now on.
/// Returns it with its secret, which is never shown again.
pub async fn create(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    new: NewEndpoint<'_>,
) -> Result<(webhook_endpoints::Model, String), CoreError> {
    let mut errors = FieldErrors::new();
    let url = errors.check("url", new.url, check_url);
    let mut types = Vec::new();
    for (i, t) in new.event_types.unwrap_or_default().iter().enumerate() {
        match ChangeType::parse(t) {
            Some(t) if !types.contains(&t.as_str().to_owned()) => types.push(t.as_str().to_owned()),
            Some(_) => errors.push(
                format!("event_types[{i}]"),
                ValueError::invalid("is given twice"),
            ),
            None => errors.push(
                format!("event_types[{i}]"),
                ValueError::invalid(format!(
                    "is not an event type; the types are {}",
                    ChangeType::ALL.map(ChangeType::as_str).join(", ")
                )),
            ),
        }
    }
    let Some(url) = url.filter(|_| errors.is_empty()) else {
        return Err(CoreError::Invalid(errors));
    };
    let at = Utc::now();
    let secret = new_secret();
    let txn = crate::db::begin_write(db).await?;
    // From the head as this transaction sees it: the events after it are its.
    let head = super::head(&txn).await?;
    let endpoint = webhook_endpoints::ActiveModel {
        id: Set(Uuid::new_v4()),
        url: Set(url.to_string()),
        event_types: Set(serde_json::to_string(&types).expect("strings")),
        status: Set("active".into()),
        disabled_reason: Set(None),
        secret: Set(secret.clone()),
        previous_secret: Set(None),
        previous_secret_until: Set(None),
        fanned_out_to: Set(head.last_position),
        failing_since: Set(None),
        created_by: Set(ctx.actor.as_str().to_owned()),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(&txn)
    .await?;
    audit::append(
        &txn,
        ctx,
        Event::WebhookEndpoint(WebhookEndpointChanged {
            endpoint_id: endpoint.id,
            change: EndpointChange::Created {
                url: endpoint.url.clone(),
                event_types: types,
            },
        }),
    )
    .await?;
    txn.commit().await?;
    Ok((endpoint, secret))
}

pub async fn list(db: &DatabaseConnection) -> Result<Vec<webhook_endpoints::Model>, CoreError> {
    Ok(webhook_endpoints::Entity::find()
        .order_by_asc(webhook_endpoints::Column::CreatedAt)
        .order_by_asc(webhook_endpoints::Column::Id)
        .all(db)
        .await?)
}

pub async fn get(db: &DatabaseConnection, id: Uuid) -> Result<webhook_endpoints::Model, CoreError> {
    webhook_endpoints::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(CoreError::NotFound("webhook endpoint"))
}

/// The endpoint, locked until the transaction ends.
async fn lock<C: ConnectionTrait>(
    txn: &C,
    id: Uuid,
) -> Result<webhook_endpoints::Model, CoreError> {
    let mut q = webhook_endpoints::Entity::find_by_id(id);
    if txn.get_database_backend() == DbBackend::Postgres {
        q = q.lock_exclusive();
    }
    q.one(txn)
        .await?
        .ok_or(CoreError::NotFound("webhook endpoint"))
}

/// Disables (`active == false`) or enables an endpoint. Disabling pauses
/// it: its events are kept and delivered, in order, once it is enabled.
pub async fn set_active(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    id: Uuid,
    active: bool,
) -> Result<webhook_endpoints::Model, CoreError> {
    let txn = crate::db::begin_write(db).await?;
    let endpoint = lock(&txn, id).await?;
    let status = if active { "active" } else { "disabled" };
    if endpoint.status == status {
        txn.rollback().await?;
        return Ok(endpoint);
    }
    let mut row: webhook_endpoints::ActiveModel = endpoint.into();
    row.status = Set(status.into());
    row.disabled_reason = Set((!active).then(|| "operator".to_owned()));
    if active {
        // Its retry period starts again.
        row.failing_since = Set(None);
    }
    row.updated_at = Set(Utc::now());
    let endpoint = row.update(&txn).await?;
    let change = if active {
        EndpointChange::Enabled
    } else {
        EndpointChange::Disabled { reason: "operator" }
    };
    if active {
        // Undelivered events are tried at once, with a fresh retry period.
        webhook_deliveries::Entity::update_many()
            .col_expr(webhook_deliveries::Column::RunAt, Expr::value(Utc::now()))
            .col_expr(
                webhook_deliveries::Column::FirstAttemptAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(webhook_deliveries::Column::EndpointId.eq(id))
            .filter(webhook_deliveries::Column::Status.eq("pending"))
            .exec(&txn)
            .await?;
    }
    audit::append(
        &txn,
        ctx,
        Event::WebhookEndpoint(WebhookEndpointChanged {
            endpoint_id: id,
            change,
        }),
    )
    .await?;
    txn.commit().await?;
    Ok(endpoint)
}

/// Removes an endpoint with its deliveries and their attempts.
pub async fn delete(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    id: Uuid,
) -> Result<(), CoreError> {
    let txn = crate::db::begin_write(db).await?;
    lock(&txn, id).await?;
    webhook_attempts::Entity::delete_many()
        .filter(webhook_attempts::Column::EndpointId.eq(id))
        .exec(&txn)
        .await?;
    webhook_deliveries::Entity::delete_many()
        .filter(webhook_deliveries::Column::EndpointId.eq(id))
        .exec(&txn)
        .await?;
    webhook_endpoints::Entity::delete_by_id(id)
        .exec(&txn)
        .await?;
    audit::append(
        &txn,
        ctx,
        Event::WebhookEndpoint(WebhookEndpointChanged {
            endpoint_id: id,
            change: EndpointChange::Deleted,
        }),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Gives an endpoint a new secret; the old one signs too for
/// `overlap_seconds` (0 to a week). Returns the endpoint and the new secret.
pub async fn rotate_secret(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    id: Uuid,
    overlap_seconds: i64,
) -> Result<(webhook_endpoints::Model, String), CoreError> {
    if !(0..=MAX_OVERLAP_SECONDS).contains(&overlap_seconds) {
        let mut errors = FieldErrors::new();
        errors.push(
            "overlap_seconds",
            ValueError::invalid(format!("must be from 0 to {MAX_OVERLAP_SECONDS}")),
        );
        return Err(CoreError::Invalid(errors));
    }
    let txn = crate::db::begin_write(db).await?;
    let endpoint = lock(&txn, id).await?;
    let at = Utc::now();
    let until = at + chrono::Duration::seconds(overlap_seconds);
    let secret = new_secret();
    let old = endpoint.secret.clone();
    let mut row: webhook_endpoints::ActiveModel = endpoint.into();
    row.previous_secret = Set(Some(old));
    row.previous_secret_until = Set(Some(until));
    row.secret = Set(secret.clone());
    row.updated_at = Set(at);
    let endpoint = row.update(&txn).await?;
    audit::append(
        &txn,
        ctx,
        Event::WebhookEndpoint(WebhookEndpointChanged {
            endpoint_id: id,
            change: EndpointChange::SecretRotated {
                previous_secret_until: until,
            },
        }),
    )
    .await?;
    txn.commit().await?;
    Ok((endpoint, secret))
}

/// Queues again, for this endpoint, every event of its types after
/// `after` that it was given; returns how many.
pub async fn replay(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    id: Uuid,
    after: Cursor,
) -> Result<u64, CoreError> {
    let txn = crate::db::begin_write(db).await?;
    let endpoint = lock(&txn, id).await?;
    let feed = super::head(&txn).await?;
    if after.0 < feed.purged_through {
        return Err(CoreError::CursorExpired);
    }
    let queued = super::delivery::queue(&txn, &endpoint, after.0, endpoint.fanned_out_to).await?;
    audit::append(
        &txn,
        ctx,
        Event::WebhookEndpoint(WebhookEndpointChanged {
            endpoint_id: id,
            change: EndpointChange::Replayed {
                after: after.to_string(),
                deliveries: queued,
            },
        }),
    )
    .await?;
    txn.commit().await?;
    Ok(queued)
}

/// The latest attempts to deliver to an endpoint, newest first.
pub async fn attempts(
    db: &DatabaseConnection,
    id: Uuid,
    limit: u64,
) -> Result<Vec<webhook_attempts::Model>, CoreError> {
    get(db, id).await?;
    Ok(webhook_attempts::Entity::find()
        .filter(webhook_attempts::Column::EndpointId.eq(id))
        .order_by_desc(webhook_attempts::Column::AttemptedAt)
        .order_by_desc(webhook_attempts::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// An attempt as the API shows it.
pub fn attempt_view(a: &webhook_attempts::Model) -> Value {
    json!({
        "id": a.id,
        "delivery_id": a.delivery_id,
        "cursor": Cursor(a.position).to_string(),
        "attempted_at": a.attempted_at,
        "status_code": a.status_code,
        "error": a.error,
        "duration_ms": a.duration_ms,
    })
}

/// How many deliveries an endpoint still has to make.
pub async fn pending(db: &DatabaseConnection, id: Uuid) -> Result<u64, CoreError> {
    use sea_orm::PaginatorTrait;
    Ok(webhook_deliveries::Entity::find()
        .filter(webhook_deliveries::Column::EndpointId.eq(id))
        .filter(webhook_deliveries::Column::Status.eq("pending"))
        .count(db)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_urls_are_taken() {
        for ok in [
            "https://core.bank.example/kihon4",
            "http://127.0.0.1:8080/hook",
            "http://[::1]:9/x",
            "http://localhost/x",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://core.bank.example/hook",
            "http://10.0.0.1/hook",
            "ftp://core.bank.example/",
            "https://user:pw@core.bank.example/",
            "https://core.bank.example/#x",
            "not a url",
            "https://core.bank.example/123456789018",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        let long = format!("https://a.example/{}", "x".repeat(MAX_URL_LEN));
        assert!(check_url(&long).is_err());
    }

    #[test]
    fn both_secrets_sign_during_an_overlap_and_each_signature_verifies() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with("whsec_") && a != b);
        let header = signature_header(&[&a, &b], "msg_1", 1_700_000_000, b"{}").unwrap();
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        // The HMAC of the Standard Webhooks content, computed here with ring.
        for (secret, part) in [(&a, parts[0]), (&b, parts[1])] {
            let key = base64::engine::general_purpose::STANDARD
                .decode(secret.trim_start_matches("whsec_"))
                .unwrap();
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
            let tag = ring::hmac::sign(&key, b"msg_1.1700000000.{}");
            assert_eq!(
                part,
                format!(
                    "v1,{}",
                    base64::engine::general_purpose::STANDARD.encode(tag)
                )
            );
        }
    }
}
