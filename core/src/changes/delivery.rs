//! Delivering the change feed to webhook endpoints: at least once, in order
//! per customer (a customer's next event waits until the previous one was
//! answered 2xx), concurrently across customers.
//!
//! The worker first *fans out*: for each endpoint, the events after its
//! `fanned_out_to` become `webhook_deliveries` rows, in one transaction
//! with the move of `fanned_out_to`. It then claims due deliveries under a
//! lease — only the lowest pending position of each (endpoint, customer) is
//! due — sends them, and records each attempt. A killed worker's lease runs
//! out and its deliveries are sent again (the receiver sees the same
//! `webhook-id`), so a kill costs at most one duplicate per delivery it held.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use futures_util::StreamExt;
use rand::Rng;
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::{ValuePolicy, envelope, webhooks};
use crate::audit::events::{EndpointChange, Event, WebhookEndpointChanged};
use crate::audit::{self, Actor, AuditContext};
use crate::db::{EndLease, begin_write};
use crate::entities::{change_events, webhook_attempts, webhook_deliveries, webhook_endpoints};
use crate::error::CoreError;

impl crate::db::Leased for webhook_deliveries::Entity {
    const LEASE_OWNER: Self::Column = webhook_deliveries::Column::LeaseOwner;
    const LEASE_EXPIRES_AT: Self::Column = webhook_deliveries::Column::LeaseExpiresAt;
}

/// How deliveries are made (`KIHON4_WEBHOOK_*`).
#[derive(Debug, Clone, Copy)]
pub struct DeliverySettings {
    /// How long one request may take.
    pub timeout: Duration,
    /// How long a delivery is retried before its endpoint is disabled.
    pub retry_for: Duration,
    /// The first retry's wait; each next one doubles, up to an hour.
    pub retry_base: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// How much of the values the bodies hold.
    pub values: ValuePolicy,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            retry_for: Duration::from_secs(3 * 86_400),
            retry_base: Duration::from_secs(5),
            concurrency: 16,
            values: ValuePolicy::ItemsOnly,
        }
    }
}

impl DeliverySettings {
    /// How long the deliveries of a round of `round` are held: time for
    /// their requests, `concurrency` at a time (a delivery waits for the
    /// sends before it), and for their record.
    fn lease(&self, round: u64) -> Duration {
        let waves = round
            .div_ceil(self.concurrency.max(1) as u64)
            .clamp(1, 1024) as u32;
        self.timeout * (waves + 1) + Duration::from_secs(5)
    }
}

/// The HTTP client deliveries go through: a timeout, no redirects followed,
/// connections kept alive.
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
    settings: DeliverySettings,
}

impl Sender {
    pub fn new(settings: DeliverySettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kihon4/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(settings.concurrency.max(1))
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        Ok(Self { http, settings })
    }

    pub fn settings(&self) -> &DeliverySettings {
        &self.settings
    }
}

/// Events fanned out per statement.
const FAN_OUT_CHUNK: u64 = 1000;

/// Queues, for `endpoint`, the events of its types in `(after, through]`;
/// returns how many deliveries were written.
pub(crate) async fn queue<C: ConnectionTrait>(
    txn: &C,
    endpoint: &webhook_endpoints::Model,
    after: i64,
    through: i64,
) -> Result<u64, CoreError> {
    let types = webhooks::event_types(endpoint);
    let at = Utc::now().trunc_subsecs(6);
    let mut from = after;
    let mut queued = 0;
    loop {
        let mut q = change_events::Entity::find()
            .select_only()
            .column(change_events::Column::Position)
            .column(change_events::Column::CustomerId)
            .filter(change_events::Column::Position.gt(from))
            .filter(change_events::Column::Position.lte(through))
            .order_by_asc(change_events::Column::Position)
            .limit(FAN_OUT_CHUNK);
        if !types.is_empty() {
            q = q.filter(change_events::Column::EventType.is_in(types.clone()));
        }
        let rows: Vec<(i64, Uuid)> = q.into_tuple().all(txn).await?;
        let Some(&(last, _)) = rows.last() else {
            return Ok(queued);
        };
        queued += rows.len() as u64;
        let deliveries: Vec<webhook_deliveries::ActiveModel> = rows
            .into_iter()
            .map(|(position, customer_id)| webhook_deliveries::ActiveModel {
                id: Set(Uuid::new_v4()),
                endpoint_id: Set(endpoint.id),
                position: Set(position),
                customer_id: Set(customer_id),
                status: Set("pending".into()),
                attempts: Set(0),
                run_at: Set(at),
                lease_owner: Set(None),
                lease_expires_at: Set(None),
                first_attempt_at: Set(None),
                last_status_code: Set(None),
                last_error: Set(None),
                created_at: Set(at),
                delivered_at: Set(None),
            })
            .collect();
        for chunk in deliveries.chunks(200) {
            webhook_deliveries::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(txn)
                .await?;
        }
        from = last;
    }
}

/// Fans the feed out to every endpoint (active or paused) up to its head;
/// returns how many deliveries were written. Each endpoint is moved in its
/// own transaction; on PostgreSQL, workers take different endpoints.
pub async fn fan_out(db: &DatabaseConnection) -> Result<u64, CoreError> {
    let head = super::head(db).await?.last_position;
    let behind: Vec<Uuid> = webhook_endpoints::Entity::find()
        .select_only()
        .column(webhook_endpoints::Column::Id)
        .filter(webhook_endpoints::Column::FannedOutTo.lt(head))
        .into_tuple()
        .all(db)
        .await?;
    let mut total = 0;
    for id in behind {
        let txn = begin_write(db).await?;
        let mut q = webhook_endpoints::Entity::find_by_id(id);
        if txn.get_database_backend() == DbBackend::Postgres {
            q = q.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let Some(endpoint) = q.one(&txn).await? else {
            txn.rollback().await?;
            continue;
        };
        let through = super::head(&txn).await?.last_position;
        if endpoint.fanned_out_to >= through {
            txn.rollback().await?;
            continue;
        }
        total += queue(&txn, &endpoint, endpoint.fanned_out_to, through).await?;
        webhook_endpoints::Entity::update_many()
            .col_expr(webhook_endpoints::Column::FannedOutTo, Expr::value(through))
            .filter(webhook_endpoints::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
    }
    Ok(total)
}

/// Claims up to `limit` due deliveries for `owner`: of active endpoints,
/// each the lowest pending position of its (endpoint, customer).
pub async fn claim(
    db: &DatabaseConnection,
    owner: &str,
    limit: u64,
    lease: Duration,
) -> Result<Vec<webhook_deliveries::Model>, CoreError> {
    let at = Utc::now().trunc_subsecs(6);
    // A read first: an idle feed takes no write lock (on SQLite, the
    // database's one) twice a second per worker.
    let due = webhook_deliveries::Entity::find()
        .select_only()
        .column(webhook_deliveries::Column::Id)
        .filter(webhook_deliveries::Column::Status.eq("pending"))
        .filter(webhook_deliveries::Column::RunAt.lte(at))
        .limit(1)
        .into_tuple::<Uuid>()
        .one(db)
        .await?;
    if due.is_none() {
        return Ok(Vec::new());
    }
    let mut rows = crate::db::claim_due_where::<webhook_deliveries::Entity>(
        db,
        "webhook_deliveries",
        " AND webhook_deliveries.endpoint_id IN \
         (SELECT e.id FROM webhook_endpoints e WHERE e.status = 'active') \
         AND NOT EXISTS (SELECT 1 FROM webhook_deliveries b \
         WHERE b.endpoint_id = webhook_deliveries.endpoint_id \
         AND b.customer_id = webhook_deliveries.customer_id \
         AND b.status = 'pending' AND b.position < webhook_deliveries.position)",
        owner,
        limit,
        lease,
    )
    .await?;
    rows.sort_by_key(|r| (r.run_at, r.position));
    Ok(rows)
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Answered 2xx.
    Delivered(u16),
    /// Any other answer, or none: with the status, why, and the
    /// receiver's `Retry-After`.
    Failed {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
    /// The event is no longer kept (it cannot be: pending events are not purged).
    Gone,
}

/// What a round of deliveries did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    pub fanned_out: u64,
    pub delivered: u64,
    pub failed: u64,
    pub endpoints_disabled: u64,
}

impl DeliveryStats {
    pub fn attempted(&self) -> u64 {
        self.delivered + self.failed
    }
}

/// The wait before the next attempt: exponential from `base`, with
/// jitter, up to an hour; at least what the receiver's `Retry-After` asked
/// (up to a day).
pub fn retry_delay(base: Duration, attempts: i32, retry_after: Option<Duration>) -> Duration {
    let full = crate::db::backoff(base, attempts);
    let jittered = full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
    match retry_after {
        Some(asked) => jittered.max(asked.min(Duration::from_secs(86_400))),
        None => jittered,
    }
}

/// A `Retry-After` value: seconds, or an HTTP date.
pub fn parse_retry_after(raw: &str, now: DateTime<Utc>) -> Option<Duration> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(raw).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// One round: fans out, claims up to `limit` due deliveries, sends them
/// (`concurrency` at a time) and records every attempt.
pub async fn deliver_due(
    db: &DatabaseConnection,
    sender: &Sender,
    owner: &str,
    limit: u64,
) -> Result<DeliveryStats, CoreError> {
    let mut stats = DeliveryStats {
        fanned_out: fan_out(db).await?,
        ..Default::default()
    };
    let settings = sender.settings;
    let claimed = claim(db, owner, limit, settings.lease(limit)).await?;
    if claimed.is_empty() {
        return Ok(stats);
    }
    let endpoints: HashMap<Uuid, webhook_endpoints::Model> = webhook_endpoints::Entity::find()
        .filter(webhook_endpoints::Column::Id.is_in(claimed.iter().map(|d| d.endpoint_id)))
        .all(db)
        .await?
        .into_iter()
        .map(|e| (e.id, e))
        .collect();
    let events: HashMap<i64, change_events::Model> = change_events::Entity::find()
        .filter(change_events::Column::Position.is_in(claimed.iter().map(|d| d.position)))
        .all(db)
        .await?
        .into_iter()
        .map(|e| (e.position, e))
        .collect();
    let jobs: Vec<_> = claimed
        .into_iter()
        .map(|d| {
            let endpoint = endpoints.get(&d.endpoint_id).cloned();
            let event = events.get(&d.position).cloned();
            (d, endpoint, event)
        })
        .collect();
    let sends = jobs.into_iter().map(|(d, endpoint, event)| {
        let sender = sender.clone();
        async move {
            let started = Instant::now();
            let outcome = match (&endpoint, &event) {
                (Some(endpoint), Some(event)) => send(&sender, endpoint, event).await,
                _ => Outcome::Gone,
            };
            (d, outcome, started.elapsed())
        }
    });
    let results: Vec<_> = futures_util::stream::iter(sends)
        .buffer_unordered(settings.concurrency.max(1))
        .collect()
        .await;
    settle(db, owner, &settings, &endpoints, results, &mut stats).await?;
    Ok(stats)
}

/// Sends one event to one endpoint, signed.
async fn send(
    sender: &Sender,
    endpoint: &webhook_endpoints::Model,
    event: &change_events::Model,
) -> Outcome {
    let now = Utc::now();
    let body = serde_json::to_vec(&envelope(event, sender.settings.values)).expect("JSON");
    let msg_id = format!("msg_{}", event.id.simple());
    let timestamp = now.timestamp();
    let signature = match webhooks::signature_header(
        &webhooks::signing_secrets(endpoint, now),
        &msg_id,
        timestamp,
        &body,
    ) {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Failed {
                status: None,
                error: e,
                retry_after: None,
            };
        }
    };
    let response = sender
        .http
        .post(&endpoint.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(standardwebhooks::HEADER_WEBHOOK_ID, &msg_id)
        .header(
            standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
            timestamp.to_string(),
        )
        .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
        .body(body)
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => Outcome::Delivered(r.status().as_u16()),
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()));
            let error = if r.status().is_redirection() {
                format!("answered {status}; redirects are not followed")
            } else if status == 410 {
                "answered 410 Gone: the receiver wants no more webhooks".to_owned()
            } else {
                format!("answered {status}")
            };
            Outcome::Failed {
                status: Some(status),
                error,
                retry_after,
            }
        }
        Err(e) => Outcome::Failed {
            status: None,
            error: if e.is_timeout() {
                "timed out".to_owned()
            } else if e.is_connect() {
                "could not connect".to_owned()
            } else {
                "the request failed".to_owned()
            },
            retry_after: None,
        },
    }
}

/// Records each attempt and moves each delivery on, in one transaction;
/// disables the endpoints whose delivery failed for the whole retry period.
async fn settle(
    db: &DatabaseConnection,
    owner: &str,
    settings: &DeliverySettings,
    endpoints: &HashMap<Uuid, webhook_endpoints::Model>,
    results: Vec<(webhook_deliveries::Model, Outcome, Duration)>,
    stats: &mut DeliveryStats,
) -> Result<(), CoreError> {
    let at = Utc::now().trunc_subsecs(6);
    let retry_for =
        chrono::Duration::from_std(settings.retry_for).unwrap_or(chrono::Duration::days(3));
    let txn = begin_write(db).await?;
    let mut attempts = Vec::with_capacity(results.len());
    let mut delivered = Vec::new();
    let mut failing: Vec<Uuid> = Vec::new();
    // (endpoint, why): disabled in this round.
    let mut exhausted: Vec<(Uuid, &'static str)> = Vec::new();
    for (d, outcome, took) in &results {
        let (status, error) = match outcome {
            Outcome::Delivered(s) => (Some(i32::from(*s)), None),
            Outcome::Failed { status, error, .. } => (status.map(i32::from), Some(error.clone())),
            Outcome::Gone => (None, Some("the event is no longer kept".to_owned())),
        };
        attempts.push(webhook_attempts::ActiveModel {
            id: Set(Uuid::new_v4()),
            delivery_id: Set(d.id),
            endpoint_id: Set(d.endpoint_id),
            position: Set(d.position),
            attempted_at: Set(at),
            status_code: Set(status),
            error: Set(error.clone()),
            duration_ms: Set(i32::try_from(took.as_millis()).unwrap_or(i32::MAX)),
        });
        match outcome {
            Outcome::Delivered(_) => {
                delivered.push(d.id);
                stats.delivered += 1;
                metrics::counter!("kihon4_webhook_deliveries_total", "outcome" => "delivered")
                    .increment(1);
            }
            Outcome::Gone => {
                webhook_deliveries::Entity::update_many()
                    .col_expr(webhook_deliveries::Column::Status, Expr::value("gone"))
                    .col_expr(webhook_deliveries::Column::LastError, Expr::value(error))
                    .end_lease()
                    .filter(webhook_deliveries::Column::Id.eq(d.id))
                    .filter(webhook_deliveries::Column::LeaseOwner.eq(owner))
                    .exec(&txn)
                    .await?;
            }
            Outcome::Failed {
                retry_after,
                status: answered,
                ..
            } => {
                stats.failed += 1;
                metrics::counter!("kihon4_webhook_deliveries_total", "outcome" => "failed")
                    .increment(1);
                let first = d.first_attempt_at.unwrap_or(at);
                let next = at
                    + chrono::Duration::from_std(retry_delay(
                        settings.retry_base,
                        d.attempts,
                        *retry_after,
                    ))
                    .unwrap_or(chrono::Duration::hours(1));
                webhook_deliveries::Entity::update_many()
                    .col_expr(webhook_deliveries::Column::RunAt, Expr::value(next))
                    .col_expr(
                        webhook_deliveries::Column::FirstAttemptAt,
                        Expr::value(first),
                    )
                    .col_expr(
                        webhook_deliveries::Column::LastStatusCode,
                        Expr::value(status),
                    )
                    .col_expr(webhook_deliveries::Column::LastError, Expr::value(error))
                    .end_lease()
                    .filter(webhook_deliveries::Column::Id.eq(d.id))
                    .filter(webhook_deliveries::Column::LeaseOwner.eq(owner))
                    .exec(&txn)
                    .await?;
                if !failing.contains(&d.endpoint_id) {
                    failing.push(d.endpoint_id);
                }
                // Standard Webhooks: a 410 says the receiver wants no more.
                let why = if *answered == Some(410) {
                    Some("gone")
                } else if at - first >= retry_for {
                    Some("failing")
                } else {
                    None
                };
                if let Some(why) = why
                    && !exhausted.iter().any(|(id, _)| *id == d.endpoint_id)
                {
                    exhausted.push((d.endpoint_id, why));
                }
            }
        }
    }
    for chunk in attempts.chunks(200) {
        webhook_attempts::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&txn)
            .await?;
    }
    for chunk in delivered.chunks(500) {
        webhook_deliveries::Entity::update_many()
            .col_expr(webhook_deliveries::Column::Status, Expr::value("delivered"))
            .col_expr(webhook_deliveries::Column::DeliveredAt, Expr::value(at))
            .col_expr(
                webhook_deliveries::Column::LastError,
                Expr::value(Option::<String>::None),
            )
            .end_lease()
            .filter(webhook_deliveries::Column::Id.is_in(chunk.iter().copied()))
            .filter(webhook_deliveries::Column::Status.eq("pending"))
            .exec(&txn)
            .await?;
    }
    // An endpoint is failing from its first failure until a delivery succeeds.
    let succeeded: Vec<Uuid> = results
        .iter()
        .filter(|(_, o, _)| matches!(o, Outcome::Delivered(_)))
        .map(|(d, _, _)| d.endpoint_id)
        .filter(|id| !failing.contains(id))
        .collect();
    if !succeeded.is_empty() {
        webhook_endpoints::Entity::update_many()
            .col_expr(
                webhook_endpoints::Column::FailingSince,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(webhook_endpoints::Column::Id.is_in(succeeded))
            .filter(webhook_endpoints::Column::FailingSince.is_not_null())
            .exec(&txn)
            .await?;
    }
    if !failing.is_empty() {
        webhook_endpoints::Entity::update_many()
            .col_expr(webhook_endpoints::Column::FailingSince, Expr::value(at))
            .filter(webhook_endpoints::Column::Id.is_in(failing))
            .filter(webhook_endpoints::Column::FailingSince.is_null())
            .exec(&txn)
            .await?;
    }
    let worker = AuditContext::new(Actor::worker(), None);
    for (id, why) in exhausted {
        let disabled = webhook_endpoints::Entity::update_many()
            .col_expr(webhook_endpoints::Column::Status, Expr::value("disabled"))
            .col_expr(webhook_endpoints::Column::DisabledReason, Expr::value(why))
            .col_expr(webhook_endpoints::Column::UpdatedAt, Expr::value(at))
            .filter(webhook_endpoints::Column::Id.eq(id))
            .filter(webhook_endpoints::Column::Status.eq("active"))
            .exec(&txn)
            .await?;
        if disabled.rows_affected == 1 {
            stats.endpoints_disabled += 1;
            metrics::counter!("kihon4_webhook_endpoints_disabled_total").increment(1);
            let url = endpoints.get(&id).map(|e| e.url.as_str()).unwrap_or("");
            let host = url::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            if why == "gone" {
                tracing::error!(endpoint = %id, %host, "a webhook endpoint was disabled: its receiver answered 410 Gone; enable it again (POST /v1/webhook-endpoints/{{id}}/enable) once it wants the feed");
            } else {
                tracing::error!(endpoint = %id, %host, "a webhook endpoint was disabled: its oldest event could not be delivered for the whole retry period; fix the receiver, then enable it (POST /v1/webhook-endpoints/{{id}}/enable)");
            }
            audit::append(
                &txn,
                &worker,
                Event::WebhookEndpoint(WebhookEndpointChanged {
                    endpoint_id: id,
                    change: EndpointChange::Disabled { reason: why },
                }),
            )
            .await?;
        }
    }
    txn.commit().await?;
    Ok(())
}

/// Removes delivered deliveries and attempts older than `before`.
pub async fn purge(db: &DatabaseConnection, before: DateTime<Utc>) -> Result<u64, CoreError> {
    let attempts = webhook_attempts::Entity::delete_many()
        .filter(webhook_attempts::Column::AttemptedAt.lt(before))
        .exec(db)
        .await?
        .rows_affected;
    let deliveries = webhook_deliveries::Entity::delete_many()
        .filter(webhook_deliveries::Column::Status.ne("pending"))
        .filter(webhook_deliveries::Column::CreatedAt.lt(before))
        .exec(db)
        .await?
        .rows_affected;
    Ok(attempts + deliveries)
}

/// Deliveries waiting, and how long the oldest has waited: the feed's lag.
pub async fn backlog(db: &DatabaseConnection) -> Result<(u64, Option<DateTime<Utc>>), CoreError> {
    use sea_orm::PaginatorTrait;
    let pending = webhook_deliveries::Entity::find()
        .filter(webhook_deliveries::Column::Status.eq("pending"))
        .count(db)
        .await?;
    let oldest = webhook_deliveries::Entity::find()
        .select_only()
        .column_as(webhook_deliveries::Column::CreatedAt.min(), "oldest")
        .filter(webhook_deliveries::Column::Status.eq("pending"))
        .into_tuple::<Option<DateTime<Utc>>>()
        .one(db)
        .await?
        .flatten();
    Ok((pending, oldest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 00:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retries_back_off_with_jitter_and_honour_retry_after() {
        let base = Duration::from_secs(4);
        for attempts in 1..6 {
            let full = base * (1 << (attempts - 1));
            for _ in 0..50 {
                let d = retry_delay(base, attempts, None);
                assert!(d >= full / 2 && d <= full, "{d:?} for {attempts}");
            }
        }
        assert!(retry_delay(base, 30, None) <= Duration::from_secs(3600));
        let asked = Duration::from_secs(900);
        assert!(retry_delay(base, 1, Some(asked)) >= asked);
        assert_eq!(
            retry_delay(base, 1, Some(Duration::from_secs(10 * 86_400))),
            Duration::from_secs(86_400)
        );
    }
}
