//! The queue before the chain (docs/architecture.md, "The audit log"). A
//! transaction that finds the chain's head held by another (PostgreSQL)
//! does not wait for it: it writes its events here, with everything the
//! chain's rows will hold, and commits. The **sequencer** then gives them
//! their places: one round, one transaction, takes the head (waiting only
//! for a transaction writing into the chain right then), reads the queued
//! events in the order they were queued, writes them into the chain with
//! their personal values and their change feed events, and removes them
//! from the queue. One round runs at a time (a PostgreSQL advisory lock,
//! taken without waiting); a round that dies commits nothing, and the next
//! round, in any process, does its work. Every process with the database
//! runs rounds ([`run`]), and the sealer runs one before it seals.
//!
//! Events are sequenced transaction by transaction, in the order of each
//! transaction's first queued event, and in their own order within it
//! (rows carry the queuing transaction's id: the queue's ids alone
//! interleave when transactions queue at once); two transactions that
//! overlap may come in either order, never interleaved. A queued event
//! keeps the time it was queued as its `at`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::Value;

use super::{Actor, AuditContext, AuditEvent, PersonalValue, lock_head, write_chained};
use crate::changes::Draft;
use crate::entities::audit_queue;

/// The advisory lock of the sequencer on PostgreSQL.
const SEQUENCER_LOCK: i64 = 0x6b69_686f_6e34_7371; // "kihon4sq"

/// Transactions whose events one round sequences at most.
pub const ROUND: u64 = 1_000;

/// How often a process looks for queued events.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// The transaction-local setting that marks a transaction which queued
/// events: its later appends queue as well (they would otherwise get
/// their places before its queued ones).
pub(super) const QUEUED: &str = "kihon4.audit_queued";

/// Writes `events` into the queue inside the caller's transaction.
pub(super) async fn enqueue<C: ConnectionTrait>(
    txn: &C,
    events: Vec<(AuditContext, AuditEvent)>,
    refs: &HashMap<uuid::Uuid, String>,
) -> Result<(), DbErr> {
    let xid: i64 = txn
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            txn.get_database_backend(),
            "SELECT set_config($1, 'on', true) AS marked, pg_current_xact_id()::text::bigint AS xid",
            [QUEUED.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("no transaction id to queue under".into()))?
        .try_get("", "xid")?;
    let at = super::now();
    let count = events.len() as u64;
    let rows: Vec<audit_queue::ActiveModel> = events
        .into_iter()
        .map(|(ctx, event)| audit_queue::ActiveModel {
            id: NotSet,
            xid: Set(xid),
            queued_at: Set(at),
            actor: Set(ctx.actor.as_str().to_owned()),
            request_id: Set(ctx.request_id.clone()),
            customer_ref: Set(event.customer_id.and_then(|id| refs.get(&id).cloned())),
            customer_id: Set(event.customer_id),
            data: Set(Value::Object(event.data).to_string()),
            personal: Set(json(&event.personal)),
            changes: Set(json(&event.changes)),
            action: Set(event.action),
            subject_type: Set(event.subject_type),
            subject_id: Set(event.subject_id),
        })
        .collect();
    for chunk in rows.chunks(500) {
        audit_queue::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    metrics::counter!("kihon4_audit_queued_total").increment(count);
    Ok(())
}

/// JSON of what the queue keeps beside an event.
fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("personal values and drafts serialise")
}

/// A queued row as the event it was.
fn decode(row: audit_queue::Model) -> Result<(AuditContext, AuditEvent, DateTime<Utc>), DbErr> {
    let bad = |what: &str| DbErr::Custom(format!("queued audit event {}: {what}", row.id));
    let Ok(Value::Object(data)) = serde_json::from_str::<Value>(&row.data) else {
        return Err(bad("its data is not a JSON object"));
    };
    let personal: Vec<PersonalValue> =
        serde_json::from_str(&row.personal).map_err(|_| bad("its personal values"))?;
    let changes: Vec<Draft> =
        serde_json::from_str(&row.changes).map_err(|_| bad("its change feed events"))?;
    let ctx = AuditContext::new(Actor::stored(row.actor), row.request_id);
    let event = AuditEvent {
        action: row.action,
        subject_type: row.subject_type,
        subject_id: row.subject_id,
        customer_id: row.customer_id,
        data,
        personal,
        changes,
    };
    Ok((ctx, event, row.queued_at))
}

/// One round: the queued events of up to `max` transactions into the
/// chain. Gives how many events; 0 when none was queued or another round
/// is running.
pub async fn sequence(db: &DatabaseConnection, max: u64) -> Result<u64, DbErr> {
    // Read first: an empty queue takes no write lock (on SQLite, the database's).
    let any: Option<i64> = audit_queue::Entity::find()
        .select_only()
        .column(audit_queue::Column::Id)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    if any.is_none() {
        return Ok(0);
    }
    let txn = crate::db::begin_write(db).await?;
    if !crate::db::try_xact_lock(&txn, SEQUENCER_LOCK).await? {
        return Ok(0);
    }
    let head = lock_head(&txn).await?;
    // Whole transactions, the first queued first: ids interleave when
    // transactions queue at once, so each is placed by its first id.
    let rows = audit_queue::Entity::find()
        .filter(sea_orm::sea_query::Expr::cust_with_values(
            "xid IN (SELECT xid FROM audit_queue GROUP BY xid ORDER BY min(id) LIMIT $1)",
            [sea_orm::Value::from(max.max(1) as i64)],
        ))
        .order_by_asc(audit_queue::Column::Id)
        .all(&txn)
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut first_of: HashMap<i64, usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        first_of.entry(r.xid).or_insert(i);
    }
    let mut rows = rows;
    rows.sort_by_key(|r| (first_of[&r.xid], r.id));
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let refs: HashMap<uuid::Uuid, String> = rows
        .iter()
        .filter_map(|r| Some((r.customer_id?, r.customer_ref.clone()?)))
        .collect();
    let events = rows
        .into_iter()
        .map(decode)
        .collect::<Result<Vec<_>, _>>()?;
    write_chained(&txn, head, events, &refs).await?;
    for chunk in ids.chunks(1000) {
        audit_queue::Entity::delete_many()
            .filter(audit_queue::Column::Id.is_in(chunk.iter().copied()))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    metrics::counter!("kihon4_audit_sequenced_total").increment(ids.len() as u64);
    Ok(ids.len() as u64)
}

/// Rounds until the queue is empty (as far as this process can take it:
/// a round another process runs meanwhile is waited for).
pub async fn sequence_all(db: &DatabaseConnection) -> Result<u64, DbErr> {
    let mut total = 0;
    loop {
        let n = sequence(db, ROUND).await?;
        total += n;
        if n == 0 {
            if depth(db).await? == 0 {
                return Ok(total);
            }
            // Another process's round holds the lock: it takes them.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// How many events wait in the queue.
pub async fn depth<C: ConnectionTrait>(db: &C) -> Result<u64, DbErr> {
    use sea_orm::PaginatorTrait;
    audit_queue::Entity::find().count(db).await
}

/// Rounds every [`INTERVAL`] (at once again while a round was full) until
/// `stop` is cancelled. Errors are logged and the next round tries again.
pub async fn run(db: DatabaseConnection, stop: tokio_util::sync::CancellationToken) {
    loop {
        let full = match sequence(&db, ROUND).await {
            Ok(n) => n >= ROUND,
            Err(e) => {
                tracing::error!(error = %e, "queued audit events could not be sequenced");
                false
            }
        };
        if !full {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(INTERVAL) => {}
            }
        } else if stop.is_cancelled() {
            return;
        }
    }
}
