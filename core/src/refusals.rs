//! Refused requests (`auth.denied`, `webhook.refused`) on record without
//! letting a flood of them grow the audit trail without limit.
//!
//! Each refusal is counted in a row per (action, source, window) — the
//! source is the client's address or a token's subject, the window a fixed
//! stretch of `window_seconds`. The first `individually` refusals of a
//! window are appended as events of their own, as before; the rest are only
//! counted, with their first and last request ids. When the window has
//! closed, its row is sealed into one event with that count (by the next
//! refusal from the same source, or by the worker's housekeeping) and
//! removed in the same transaction. The row is written in the refusal's own
//! transaction, before the answer leaves: a process that dies loses no
//! count, and a row is sealed once, whichever process gets to it first.

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, Value};

use crate::audit::events::{
    AuthAttempt, AuthDenied, Event, RefusalsSealed, Refused, WebhookRefused,
};
use crate::audit::{self, Actor, AuditContext};
use crate::db::{begin_write, placeholder};

/// How refusals are counted (`KIHON4_REFUSAL_WINDOW_SECONDS`,
/// `KIHON4_REFUSALS_RECORDED_INDIVIDUALLY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalSettings {
    pub window_seconds: i64,
    /// How many refusals per source and window get an event of their own.
    pub individually: u32,
}

impl Default for RefusalSettings {
    fn default() -> Self {
        Self {
            window_seconds: 60,
            individually: 10,
        }
    }
}

/// Where a refusal is counted: under which source, with which settings.
#[derive(Debug, Clone)]
pub struct Tally {
    pub settings: RefusalSettings,
    /// `address:<client address>` or `user:<token subject>`.
    pub source: String,
}

/// The sealed windows one pass of [`seal_closed`] handles per transaction.
const SEAL_BATCH: i64 = 100;

/// One refusal, as its own event would record it.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// `auth.denied`
    Auth(AuthAttempt),
    /// `webhook.refused`, with the problem type's slug.
    Webhook { reason: &'static str },
}

impl Refusal {
    fn refused(&self) -> Refused {
        match self {
            Self::Auth(_) => Refused::AuthDenied,
            Self::Webhook { .. } => Refused::WebhookRefused,
        }
    }

    /// Its own event, counted under `source`.
    fn event(self, source: &str) -> Event {
        let source = source.to_owned();
        match self {
            Self::Auth(attempt) => Event::AuthDenied(AuthDenied { attempt, source }),
            Self::Webhook { reason } => Event::WebhookRefused(WebhookRefused { reason, source }),
        }
    }
}

/// Puts a refusal on record: counted under `source` (in the tally of its
/// action), appended as its own event if it is among the first of its
/// window, and this source's closed windows sealed.
pub async fn record(
    db: &DatabaseConnection,
    settings: &RefusalSettings,
    source: &str,
    ctx: &AuditContext,
    refusal: Refusal,
) -> Result<(), DbErr> {
    let now = Utc::now().trunc_subsecs(6);
    let window = settings.window_seconds.max(1);
    let window_start = now.timestamp().div_euclid(window) * window;
    let action = refusal.refused().action().to_owned();
    let backend = db.get_database_backend();
    let p = |i| placeholder(backend, i);
    let txn = begin_write(db).await?;
    let upsert = format!(
        "INSERT INTO refusal_tallies (action, source, window_start, window_seconds, actor, count, aggregated) \
         VALUES ({}, {}, {}, {}, {}, 1, 0) \
         ON CONFLICT (action, source, window_start) DO UPDATE SET count = refusal_tallies.count + 1 \
         RETURNING count",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5)
    );
    let values: Vec<Value> = vec![
        action.clone().into(),
        source.into(),
        window_start.into(),
        window.into(),
        ctx.actor.as_str().into(),
    ];
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(backend, upsert, values))
        .await?
        .ok_or_else(|| DbErr::Custom("the refusal tally returned nothing".into()))?;
    let count: i64 = row.try_get("", "count")?;
    let individual = count <= i64::from(settings.individually);
    if !individual {
        let counted = format!(
            "UPDATE refusal_tallies SET aggregated = aggregated + 1, \
             first_request_id = COALESCE(first_request_id, {}), last_request_id = {}, \
             first_at = COALESCE(first_at, {}), last_at = {} \
             WHERE action = {} AND source = {} AND window_start = {}",
            p(1),
            p(2),
            p(3),
            p(4),
            p(5),
            p(6),
            p(7)
        );
        let values: Vec<Value> = vec![
            ctx.request_id.clone().into(),
            ctx.request_id.clone().into(),
            now.into(),
            now.into(),
            action.clone().into(),
            source.into(),
            window_start.into(),
        ];
        txn.execute_raw(Statement::from_sql_and_values(backend, counted, values))
            .await?;
    }
    let sealed = take_closed(&txn, now, Some((&action, source)), SEAL_BATCH).await?;
    // Appends come last: they hold the chain lock until commit.
    for window in sealed {
        window.append(&txn).await?;
    }
    if individual {
        audit::append(&txn, ctx, refusal.event(source)).await?;
    }
    txn.commit().await
}

/// Seals every window that closed by `now` into its event (the worker's
/// housekeeping). Returns how many events were appended.
pub async fn seal_closed(db: &DatabaseConnection, now: DateTime<Utc>) -> Result<u64, DbErr> {
    let mut appended = 0;
    loop {
        let txn = begin_write(db).await?;
        let sealed = take_closed(&txn, now, None, SEAL_BATCH).await?;
        let taken = sealed.len() as i64;
        for window in sealed {
            if window.append(&txn).await? {
                appended += 1;
            }
        }
        txn.commit().await?;
        if taken < SEAL_BATCH {
            return Ok(appended);
        }
    }
}

/// A closed window, taken out of the tallies.
struct Closed {
    action: String,
    source: String,
    actor: String,
    window_start: i64,
    window_seconds: i64,
    count: i64,
    aggregated: i64,
    first_request_id: Option<String>,
    last_request_id: Option<String>,
    first_at: Option<DateTime<Utc>>,
    last_at: Option<DateTime<Utc>>,
}

impl Closed {
    /// Appends the window's event, if any refusal in it had none of its own.
    async fn append<C: ConnectionTrait>(self, txn: &C) -> Result<bool, DbErr> {
        if self.aggregated == 0 {
            return Ok(false);
        }
        let at = |secs: i64| {
            Utc.timestamp_opt(secs, 0)
                .single()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        };
        let stamp = |t: Option<DateTime<Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        };
        let event = Event::RefusalsSealed(RefusalsSealed {
            refused: Refused::from_action(&self.action),
            source: self.source,
            window_start: at(self.window_start),
            window_end: at(self.window_start + self.window_seconds),
            count: self.aggregated,
            recorded_individually: self.count - self.aggregated,
            first_request_id: self.first_request_id,
            last_request_id: self.last_request_id,
            first_at: stamp(self.first_at),
            last_at: stamp(self.last_at),
        });
        let ctx = AuditContext::new(Actor::stored(self.actor), None);
        audit::append(txn, &ctx, event).await?;
        Ok(true)
    }
}

/// Takes (locks and deletes) up to `limit` windows closed by `now`, of one
/// action and source or of all. On PostgreSQL rows another transaction is
/// sealing are skipped, so each is sealed once.
async fn take_closed<C: ConnectionTrait>(
    txn: &C,
    now: DateTime<Utc>,
    only: Option<(&str, &str)>,
    limit: i64,
) -> Result<Vec<Closed>, DbErr> {
    let backend = txn.get_database_backend();
    let p = |i| placeholder(backend, i);
    let mut values: Vec<Value> = vec![now.timestamp().into()];
    let mut filter = format!("window_start + window_seconds <= {}", p(1));
    if let Some((action, source)) = only {
        filter.push_str(&format!(" AND action = {} AND source = {}", p(2), p(3)));
        values.push(action.into());
        values.push(source.into());
    }
    let lock = if backend == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "SELECT action, source, actor, window_start, window_seconds, count, aggregated, \
         first_request_id, last_request_id, first_at, last_at FROM refusal_tallies \
         WHERE {filter} ORDER BY window_start, action, source LIMIT {limit}{lock}"
    );
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    let mut closed = Vec::with_capacity(rows.len());
    for r in rows {
        let window = Closed {
            action: r.try_get("", "action")?,
            source: r.try_get("", "source")?,
            actor: r.try_get("", "actor")?,
            window_start: r.try_get("", "window_start")?,
            window_seconds: r.try_get("", "window_seconds")?,
            count: r.try_get("", "count")?,
            aggregated: r.try_get("", "aggregated")?,
            first_request_id: r.try_get("", "first_request_id")?,
            last_request_id: r.try_get("", "last_request_id")?,
            first_at: r.try_get("", "first_at")?,
            last_at: r.try_get("", "last_at")?,
        };
        let delete = format!(
            "DELETE FROM refusal_tallies WHERE action = {} AND source = {} AND window_start = {}",
            p(1),
            p(2),
            p(3)
        );
        let key: Vec<Value> = vec![
            window.action.clone().into(),
            window.source.clone().into(),
            window.window_start.into(),
        ];
        let gone = txn
            .execute_raw(Statement::from_sql_and_values(backend, delete, key))
            .await?;
        if gone.rows_affected() == 1 {
            closed.push(window);
        }
    }
    Ok(closed)
}
