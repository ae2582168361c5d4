//! The outbox. A notice is a row written in the transaction of the change
//! that causes it, rendered there, with a Message-ID derived from the row.
//! The worker claims due rows under a lease (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL; on SQLite the write transaction admits one claimer at a
//! time), sends them one by one and records each result at once, so that a
//! process killed between the server's `250` and that record resends at most
//! the one row it was sending.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::Value;
use uuid::Uuid;

use super::templates::{NoticeKind, Notices};
use crate::audit::events::{Event, NoticeRetried};
use crate::audit::{self, AuditContext};
use crate::db;
use crate::db::EndLease;
use crate::domain::{Email, Locale};
use crate::entities::outbox;
use crate::error::CoreError;

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// 30 s, 60 s, 120 s, … up to an hour, before attempt `attempts + 1`.
pub fn backoff(attempts: i32) -> Duration {
    db::backoff(Duration::from_secs(30), attempts)
}

/// A notice to write with a change.
pub struct NewNotice<'a> {
    pub kind: NoticeKind,
    pub customer_id: Option<Uuid>,
    pub to: &'a Email,
    pub locale: Locale,
    /// How to address the customer, when known.
    pub customer_name: Option<&'a str>,
    pub data: Value,
}

/// Renders the notice and writes it into the outbox in `txn`, the change's transaction.
pub async fn enqueue<C: ConnectionTrait>(
    txn: &C,
    notices: &Notices,
    notice: NewNotice<'_>,
) -> Result<Uuid, CoreError> {
    let (id, row) = prepare(notices, notice)?;
    outbox::Entity::insert(row)
        .exec_without_returning(txn)
        .await?;
    Ok(id)
}

/// The outbox row of `notice`, rendered and composed, for a caller that
/// inserts many at once; with its id.
pub fn prepare(
    notices: &Notices,
    notice: NewNotice<'_>,
) -> Result<(Uuid, outbox::ActiveModel), CoreError> {
    let rendered = notices
        .render(
            notice.kind,
            notice.locale,
            notice.customer_name,
            notice.data,
        )
        .map_err(|e| CoreError::Corrupt(format!("a notice does not render: {e:#}")))?;
    let id = Uuid::now_v7();
    let at = now();
    let message_id = format!("<{id}@{}>", notices.message_id_domain);
    let message = notices
        .compose(notice.to.as_str(), &message_id, &rendered, at)
        .map_err(|e| CoreError::Corrupt(format!("a notice cannot be composed: {e}")))?;
    Ok((
        id,
        outbox::ActiveModel {
            id: Set(id),
            customer_id: Set(notice.customer_id),
            kind: Set(notice.kind.as_str().to_owned()),
            locale: Set(notice.locale.as_str().to_owned()),
            to_address: Set(notice.to.as_str().to_owned()),
            message: Set(message),
            message_id: Set(message_id),
            status: Set("pending".to_owned()),
            attempts: Set(0),
            run_at: Set(at),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            last_error: Set(None),
            server_response: Set(None),
            created_at: Set(at),
            sent_at: Set(None),
        },
    ))
}

/// Claims up to `limit` due notices for `owner` until `lease` from now.
pub async fn claim(
    db: &DatabaseConnection,
    owner: &str,
    limit: u64,
    lease: Duration,
) -> Result<Vec<outbox::Model>, CoreError> {
    let mut rows = db::claim_due::<outbox::Entity>(db, "outbox", owner, limit, lease).await?;
    rows.sort_by_key(|r| (r.run_at, r.id));
    Ok(rows)
}

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The server took it, with this answer.
    Sent(String),
    /// Try again later (connection refused, timeout, 4xx).
    Transient(String),
    /// Never (5xx, an address the server refuses).
    Permanent(String),
}

/// Records the outcome of a claimed notice, if `owner` still holds it.
/// Returns whether it was recorded. `db` may be a relaxed pool
/// ([`crate::db::connect_relaxed`]): the commit does not wait for the disk,
/// so a power cut right after it may send the notice again (with the same
/// Message-ID), while a killed process loses nothing.
pub async fn settle(
    db: &DatabaseConnection,
    owner: &str,
    notice: &outbox::Model,
    outcome: &SendOutcome,
) -> Result<bool, CoreError> {
    let at = now();
    let mut update = outbox::Entity::update_many()
        .end_lease()
        .filter(outbox::Column::Id.eq(notice.id))
        .filter(outbox::Column::LeaseOwner.eq(owner))
        .filter(outbox::Column::Status.eq("pending"));
    update = match outcome {
        SendOutcome::Sent(answer) => update
            .col_expr(outbox::Column::Status, Expr::value("sent"))
            .col_expr(outbox::Column::SentAt, Expr::value(at))
            .col_expr(outbox::Column::ServerResponse, Expr::value(answer.as_str()))
            .col_expr(
                outbox::Column::LastError,
                Expr::value(Option::<String>::None),
            ),
        SendOutcome::Transient(why) => {
            let next = at + chrono::Duration::from_std(backoff(notice.attempts)).expect("short");
            update
                .col_expr(outbox::Column::RunAt, Expr::value(next))
                .col_expr(outbox::Column::LastError, Expr::value(why.as_str()))
        }
        SendOutcome::Permanent(why) => update
            .col_expr(outbox::Column::Status, Expr::value("failed"))
            .col_expr(outbox::Column::LastError, Expr::value(why.as_str())),
    };
    Ok(update.exec(db).await?.rows_affected == 1)
}

/// Gives back a claimed notice unsent (its lease was running out).
pub async fn release(
    db: &DatabaseConnection,
    owner: &str,
    notice: &outbox::Model,
) -> Result<(), CoreError> {
    outbox::Entity::update_many()
        .end_lease()
        .col_expr(
            outbox::Column::Attempts,
            Expr::value(notice.attempts.saturating_sub(1)),
        )
        .filter(outbox::Column::Id.eq(notice.id))
        .filter(outbox::Column::LeaseOwner.eq(owner))
        .filter(outbox::Column::Status.eq("pending"))
        .exec(db)
        .await?;
    Ok(())
}

/// A notice as operators see it: never its address or body.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: Uuid,
    pub customer_id: Option<Uuid>,
    pub kind: String,
    pub locale: String,
    pub message_id: String,
    pub status: String,
    pub attempts: i32,
    pub run_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub server_response: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl From<outbox::Model> for OutboxEntry {
    fn from(r: outbox::Model) -> Self {
        Self {
            id: r.id,
            customer_id: r.customer_id,
            kind: r.kind,
            locale: r.locale,
            message_id: r.message_id,
            status: r.status,
            attempts: r.attempts,
            run_at: r.run_at,
            last_error: r.last_error,
            server_response: r.server_response,
            created_at: r.created_at,
            sent_at: r.sent_at,
        }
    }
}

/// A page of notices, oldest first, optionally of one status.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    status: Option<&str>,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<OutboxEntry>, CoreError> {
    let mut query = outbox::Entity::find().order_by_asc(outbox::Column::Id);
    if let Some(status) = status {
        query = query.filter(outbox::Column::Status.eq(status));
    }
    if let Some(after) = after {
        query = query.filter(outbox::Column::Id.gt(after));
    }
    Ok(query
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(OutboxEntry::from)
        .collect())
}

/// Sends a failed notice again: back to `pending`, due now, audited.
pub async fn retry(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    id: Uuid,
) -> Result<OutboxEntry, CoreError> {
    let txn = db::begin_write(db).await?;
    let row = outbox::Entity::find_by_id(id)
        .one(&txn)
        .await?
        .ok_or(CoreError::NotFound("notice"))?;
    if row.status != "failed" {
        return Err(CoreError::NoticeNotFailed);
    }
    let at = now();
    let changed = outbox::Entity::update_many()
        .col_expr(outbox::Column::Status, Expr::value("pending"))
        .col_expr(outbox::Column::RunAt, Expr::value(at))
        .col_expr(outbox::Column::Attempts, Expr::value(0))
        .filter(outbox::Column::Id.eq(id))
        .filter(outbox::Column::Status.eq("failed"))
        .exec(&txn)
        .await?;
    if changed.rows_affected != 1 {
        return Err(CoreError::NoticeNotFailed);
    }
    let event = Event::NoticeRetried(NoticeRetried {
        notice_id: id,
        customer_id: row.customer_id,
        attempts: row.attempts,
    });
    audit::append(&txn, ctx, event).await?;
    txn.commit().await?;
    let mut entry = OutboxEntry::from(row);
    entry.status = "pending".into();
    entry.attempts = 0;
    entry.run_at = at;
    Ok(entry)
}

/// How long a sent notice keeps its address and message.
pub const RETENTION_DAYS: i64 = 30;

/// Empties the address and message of notices sent before `before`: the
/// row stays (kind, Message-ID, server's answer, times), the personal data
/// goes. Returns how many were emptied.
pub async fn purge_sent<C: ConnectionTrait>(
    db: &C,
    before: DateTime<Utc>,
) -> Result<u64, CoreError> {
    Ok(outbox::Entity::update_many()
        .col_expr(outbox::Column::ToAddress, Expr::value(""))
        .col_expr(outbox::Column::Message, Expr::value(Vec::<u8>::new()))
        .filter(outbox::Column::Status.eq("sent"))
        .filter(outbox::Column::SentAt.lt(before))
        .filter(outbox::Column::ToAddress.ne(""))
        .exec(db)
        .await?
        .rows_affected)
}

/// Every pending notice, oldest first (tools and benchmarks).
pub async fn pending_rows<C: ConnectionTrait>(db: &C) -> Result<Vec<outbox::Model>, CoreError> {
    Ok(outbox::Entity::find()
        .filter(outbox::Column::Status.eq("pending"))
        .order_by_asc(outbox::Column::Id)
        .all(db)
        .await?)
}

/// How many notices are pending, and the age of the oldest, for metrics.
pub async fn backlog(db: &DatabaseConnection) -> Result<(u64, Option<DateTime<Utc>>), CoreError> {
    let pending = outbox::Entity::find()
        .filter(outbox::Column::Status.eq("pending"))
        .order_by_asc(outbox::Column::CreatedAt)
        .limit(1)
        .one(db)
        .await?;
    let count = {
        use sea_orm::PaginatorTrait;
        outbox::Entity::find()
            .filter(outbox::Column::Status.eq("pending"))
            .count(db)
            .await?
    };
    Ok((count, pending.map(|p| p.created_at)))
}
