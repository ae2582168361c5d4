//! The audit chain (docs/architecture.md#the-audit-trail): every state
//! change appends one event in the same transaction as the change; `hash =
//! SHA-256(prev_hash || canonical JSON)`. Personal values enter the hashed
//! form only as salted commitments `SHA-256(salt || value)`; value and salt
//! are stored beside the event, so they can be erased without breaking the
//! chain.
//!
//! The canonical JSON is RFC 8785 (JCS). Appends from any number of
//! processes form one chain because each takes the lock on the single
//! `audit_chain` head row (on SQLite, the write transaction's lock).

use chrono::{DateTime, SubsecRound, Utc};
use rand::RngCore;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::entities::{audit_chain, audit_events, audit_personal_values};

pub mod events;
pub mod queue;
pub use events::Event;

/// The hash before the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The version of the event format, inside every event.
pub const FORMAT_VERSION: u32 = 1;

/// Who caused a change: a token's subject, the worker, the provider, the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    pub fn user(sub: &str) -> Self {
        Self(format!("user:{sub}"))
    }
    pub fn worker() -> Self {
        Self("worker".into())
    }
    pub fn provider() -> Self {
        Self("provider".into())
    }
    pub fn anonymous() -> Self {
        Self("anonymous".into())
    }
    /// The command line, when nobody is named.
    pub fn cli() -> Self {
        Self("cli".into())
    }
    /// A person at the command line: `cli:<name>`, the name held to the
    /// rules of a token's subject ([`crate::auth::acceptable_subject`]).
    pub fn cli_person(name: &str) -> Result<Self, &'static str> {
        if crate::auth::acceptable_subject(name) {
            Ok(Self(format!("cli:{name}")))
        } else {
            Err(
                "must be 1 to 100 bytes with no control, bidirectional or format characters and no My Number",
            )
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// An actor as it was stored by [`as_str`](Self::as_str).
    pub(crate) fn stored(s: String) -> Self {
        Self(s)
    }
}

/// Who acts and under which request: what every append needs besides the event.
#[derive(Debug, Clone)]
pub struct AuditContext {
    pub actor: Actor,
    pub request_id: Option<String>,
}

impl AuditContext {
    pub fn new(actor: Actor, request_id: Option<String>) -> Self {
        Self { actor, request_id }
    }
}

/// A personal value an event commits to (serialised only into the audit
/// queue, beside its event).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PersonalValue {
    /// Where the commitment stands in the event's `data`, e.g. `after.email`.
    pub field: String,
    pub value: String,
    pub salt: String,
}

/// One event, before it is appended.
#[derive(Clone)]
pub struct AuditEvent {
    action: String,
    subject_type: String,
    subject_id: Option<String>,
    customer_id: Option<Uuid>,
    data: Map<String, Value>,
    personal: Vec<PersonalValue>,
    /// The change feed's events this one reports, written with it.
    changes: Vec<crate::changes::Draft>,
}

impl AuditEvent {
    pub fn new(action: &str, subject_type: &str, subject_id: Option<String>) -> Self {
        Self {
            action: action.to_owned(),
            subject_type: subject_type.to_owned(),
            subject_id,
            customer_id: None,
            data: Map::new(),
            personal: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// An event about one customer (found later by `customer_id`).
    pub fn customer(action: &str, customer_id: Uuid) -> Self {
        let mut event = Self::new(action, "customer", Some(customer_id.to_string()));
        event.customer_id = Some(customer_id);
        event
    }

    pub fn with_customer(mut self, customer_id: Uuid) -> Self {
        self.customer_id = Some(customer_id);
        self
    }

    /// Sets a non-personal value in `data`.
    pub fn set(mut self, key: &str, value: Value) -> Self {
        self.data.insert(key.to_owned(), value);
        self
    }

    /// The commitment to a personal value at `field` (a dotted path in
    /// `data`), remembering value and salt to store beside the event.
    pub fn commit(&mut self, field: &str, value: &str) -> Value {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let commitment = commitment(&salt, value);
        self.personal.push(PersonalValue {
            field: field.to_owned(),
            value: value.to_owned(),
            salt: hex::encode(salt),
        });
        json!({ "commitment": commitment })
    }

    pub fn action(&self) -> &str {
        &self.action
    }

    /// Carries the change feed's events that this event reports.
    pub(crate) fn with_changes(mut self, changes: Vec<crate::changes::Draft>) -> Self {
        self.changes = changes;
        self
    }
}

/// `SHA-256(salt || value)`, hex.
pub fn commitment(salt: &[u8], value: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(value.as_bytes());
    hex::encode(h.finalize())
}

/// `SHA-256(prev_hash || canonical)`, hex; `prev_hash` as its 32 bytes.
pub fn chain_hash(prev_hash_hex: &str, canonical: &[u8]) -> Result<String, String> {
    let prev = hex::decode(prev_hash_hex).map_err(|_| "previous hash is not hex".to_owned())?;
    if prev.len() != 32 {
        return Err("previous hash is not 32 bytes".into());
    }
    let mut h = Sha256::new();
    h.update(&prev);
    h.update(canonical);
    Ok(hex::encode(h.finalize()))
}

/// The canonical form (RFC 8785) of a JSON value.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    serde_json_canonicalizer::to_vec(value).expect("a serde_json::Value always serialises")
}

/// Appends `event` inside the caller's transaction: to the chain when its
/// head is free, and then returns its sequence number (call it last in the
/// transaction: the head stays taken until commit); else, on PostgreSQL,
/// to the queue, which the sequencer empties into the chain within
/// moments ([`queue`]), and returns `None`. It never waits for another
/// writer.
pub async fn append<C: ConnectionTrait>(
    txn: &C,
    ctx: &AuditContext,
    event: impl Into<AuditEvent>,
) -> Result<Option<i64>, DbErr> {
    let mut event = event.into();
    // Read before the head: it is held only for the chain's own writes.
    let refs = customer_refs(txn, event.customer_id.into_iter()).await?;
    let Some(head) = take_head(txn).await? else {
        queue::enqueue(txn, vec![(ctx.clone(), event)], &refs).await?;
        return Ok(None);
    };
    let changes = std::mem::take(&mut event.changes);
    let seq = head.last_seq + 1;
    let (row, personal) = chained(seq, &head.last_hash, ctx, event, &refs, now())?;
    let moved = match txn.get_database_backend() {
        DbBackend::Postgres => write_event_postgres(txn, &row, &personal).await?,
        _ => write_event(txn, &row, personal).await?,
    };
    if moved != 1 {
        return Err(DbErr::Custom(
            "the audit chain head moved during an append".into(),
        ));
    }
    crate::changes::record(txn, changes.into_iter().map(|c| (seq, c)).collect()).await?;
    metrics::counter!("kihon4_audit_appends_total").increment(1);
    Ok(Some(seq))
}

/// The time an event happens, as the chain keeps it.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Events gathered while a transaction does many things, appended together
/// at its end under one hold of the chain lock (see [`append_batch`]).
#[derive(Default)]
pub struct Batch(Vec<(AuditContext, AuditEvent)>);

impl Batch {
    pub fn push(&mut self, ctx: &AuditContext, event: impl Into<AuditEvent>) {
        self.0.push((ctx.clone(), event.into()));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets the events pushed after the first `len`.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }
}

/// Events in one multi-row statement, personal values in another.
const BATCH_CHUNK: usize = 200;

/// Appends every event of `batch`, in order, inside the caller's
/// transaction: the chain lock is taken once and the rows are written a few
/// hundred per statement. Like [`append`], call it last in the transaction.
pub async fn append_batch<C: ConnectionTrait>(txn: &C, batch: Batch) -> Result<(), DbErr> {
    match batch.0.len() {
        0 => return Ok(()),
        1 => {
            let (ctx, event) = batch.0.into_iter().next().expect("one");
            return append(txn, &ctx, event).await.map(|_| ());
        }
        _ => {}
    }
    let refs = customer_refs(txn, batch.0.iter().filter_map(|(_, e)| e.customer_id)).await?;
    let Some(head) = take_head(txn).await? else {
        return queue::enqueue(txn, batch.0, &refs).await;
    };
    let at = now();
    write_chained(
        txn,
        head,
        batch.0.into_iter().map(|(c, e)| (c, e, at)).collect(),
        &refs,
    )
    .await
}

/// Writes `events` into the chain after `head`, which the caller's
/// transaction holds, a few hundred rows per statement.
async fn write_chained<C: ConnectionTrait>(
    txn: &C,
    head: audit_chain::Model,
    events: Vec<(AuditContext, AuditEvent, DateTime<Utc>)>,
    refs: &std::collections::HashMap<uuid::Uuid, String>,
) -> Result<(), DbErr> {
    let count = events.len() as u64;
    let (mut seq, mut prev) = (head.last_seq, head.last_hash);
    let mut events = events.into_iter().peekable();
    let mut changes = Vec::new();
    while events.peek().is_some() {
        let first = seq + 1;
        let mut rows = Vec::with_capacity(BATCH_CHUNK);
        let mut personal = Vec::new();
        for (ctx, mut event, at) in events.by_ref().take(BATCH_CHUNK) {
            seq += 1;
            changes.extend(
                std::mem::take(&mut event.changes)
                    .into_iter()
                    .map(|c| (seq, c)),
            );
            let (row, values) = chained(seq, &prev, &ctx, event, refs, at)?;
            prev = row.hash.clone();
            personal.extend(
                values
                    .into_iter()
                    .map(|p| audit_personal_values::ActiveModel {
                        seq: Set(seq),
                        field: Set(p.field),
                        value: Set(Some(p.value)),
                        salt: Set(p.salt),
                        erased_at: Set(None),
                    }),
            );
            rows.push(audit_events::ActiveModel::from(row));
        }
        audit_events::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
        for chunk in personal.chunks(BATCH_CHUNK * 4) {
            audit_personal_values::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(txn)
                .await?;
        }
        let moved = audit_chain::Entity::update_many()
            .col_expr(audit_chain::Column::LastSeq, Expr::value(seq))
            .col_expr(audit_chain::Column::LastHash, Expr::value(prev.clone()))
            .filter(audit_chain::Column::Id.eq(1))
            .filter(audit_chain::Column::LastSeq.eq(first - 1))
            .exec(txn)
            .await?;
        if moved.rows_affected != 1 {
            return Err(DbErr::Custom(
                "the audit chain head moved during an append".into(),
            ));
        }
    }
    crate::changes::record(txn, changes).await?;
    metrics::counter!("kihon4_audit_appends_total").increment(count);
    Ok(())
}

/// The sequence number of the newest event, with the chain locked until
/// the caller's transaction ends: the next [`append`] in it takes the next.
pub(crate) async fn head_seq<C: ConnectionTrait>(txn: &C) -> Result<i64, DbErr> {
    Ok(lock_head(txn).await?.last_seq)
}

/// The chain head, held until commit, when no other transaction holds it
/// (PostgreSQL's `FOR UPDATE SKIP LOCKED`: it never waits) and this one
/// has queued nothing yet (its later events queue too, so that they stay
/// after its earlier ones; see [`queue::QUEUED`]); on SQLite the write
/// transaction already excludes every other writer, so always.
async fn take_head<C: ConnectionTrait>(txn: &C) -> Result<Option<audit_chain::Model>, DbErr> {
    let mut head_query = audit_chain::Entity::find_by_id(1);
    if txn.get_database_backend() == DbBackend::Postgres {
        head_query = head_query
            .filter(Expr::cust(format!(
                "coalesce(current_setting('{}', true), '') <> 'on'",
                queue::QUEUED
            )))
            .lock_with_behavior(
                sea_orm::sea_query::LockType::Update,
                sea_orm::sea_query::LockBehavior::SkipLocked,
            );
    }
    let head = head_query.one(txn).await?;
    if head.is_none() && txn.get_database_backend() != DbBackend::Postgres {
        return Err(DbErr::Custom("the audit chain head is missing".into()));
    }
    Ok(head)
}

/// Reads the chain head, locking it until commit on PostgreSQL (on SQLite
/// the write transaction already excludes every other writer).
async fn lock_head<C: ConnectionTrait>(txn: &C) -> Result<audit_chain::Model, DbErr> {
    let mut head_query = audit_chain::Entity::find_by_id(1);
    if txn.get_database_backend() == DbBackend::Postgres {
        head_query = head_query.lock_exclusive();
    }
    head_query
        .one(txn)
        .await?
        .ok_or_else(|| DbErr::Custom("the audit chain head is missing".into()))
}

/// The institution's own reference (`external_ref`) of each customer, for
/// the `customer_ref` of their events: an auditor reads whose event it is
/// without looking the UUID up.
async fn customer_refs<C: ConnectionTrait>(
    txn: &C,
    ids: impl Iterator<Item = uuid::Uuid>,
) -> Result<std::collections::HashMap<uuid::Uuid, String>, DbErr> {
    use crate::entities::customers;
    use sea_orm::QuerySelect;
    let mut ids: Vec<uuid::Uuid> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    let mut refs = std::collections::HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let found: Vec<(uuid::Uuid, String)> = customers::Entity::find()
            .select_only()
            .column(customers::Column::Id)
            .column(customers::Column::ExternalRef)
            .filter(customers::Column::Id.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(txn)
            .await?;
        refs.extend(found);
    }
    Ok(refs)
}

/// The stored row of `event` as number `seq` after `prev_hash`, and the
/// personal values it commits to.
fn chained(
    seq: i64,
    prev_hash: &str,
    ctx: &AuditContext,
    event: AuditEvent,
    refs: &std::collections::HashMap<uuid::Uuid, String>,
    occurred_at: DateTime<Utc>,
) -> Result<(audit_events::Model, Vec<PersonalValue>), DbErr> {
    let event_customer = event.customer_id;
    let canonical_value = json!({
        "v": FORMAT_VERSION,
        "seq": seq,
        "prev_hash": prev_hash,
        "at": occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "actor": ctx.actor.as_str(),
        "action": event.action,
        "subject": { "type": event.subject_type, "id": event.subject_id },
        "customer_id": event.customer_id,
        "request_id": ctx.request_id,
        "data": Value::Object(event.data),
    });
    let mut canonical_value = canonical_value;
    if let Some(customer_ref) = event_customer.and_then(|id| refs.get(&id)) {
        canonical_value["customer_ref"] = json!(customer_ref);
    }
    let canonical = canonical_json(&canonical_value);
    let hash = chain_hash(prev_hash, &canonical).map_err(DbErr::Custom)?;
    let canonical = String::from_utf8(canonical).expect("JSON is UTF-8");
    let row = audit_events::Model {
        seq,
        occurred_at,
        actor: ctx.actor.as_str().to_owned(),
        action: event.action,
        subject_type: event.subject_type,
        subject_id: event.subject_id,
        customer_id: event.customer_id,
        request_id: ctx.request_id.clone(),
        canonical,
        prev_hash: prev_hash.to_owned(),
        hash,
    };
    Ok((row, event.personal))
}

/// Writes an event, its personal values and the new head, statement by
/// statement. Returns how many head rows moved (1 when all is well).
async fn write_event<C: ConnectionTrait>(
    txn: &C,
    row: &audit_events::Model,
    personal: Vec<PersonalValue>,
) -> Result<u64, DbErr> {
    audit_events::Entity::insert(audit_events::ActiveModel::from(row.clone()))
        .exec_without_returning(txn)
        .await?;
    if !personal.is_empty() {
        audit_personal_values::Entity::insert_many(personal.into_iter().map(|p| {
            audit_personal_values::ActiveModel {
                seq: Set(row.seq),
                field: Set(p.field),
                value: Set(Some(p.value)),
                salt: Set(p.salt),
                erased_at: Set(None),
            }
        }))
        .exec_without_returning(txn)
        .await?;
    }
    let moved = audit_chain::Entity::update_many()
        .col_expr(audit_chain::Column::LastSeq, Expr::value(row.seq))
        .col_expr(audit_chain::Column::LastHash, Expr::value(row.hash.clone()))
        .filter(audit_chain::Column::Id.eq(1))
        .filter(audit_chain::Column::LastSeq.eq(row.seq - 1))
        .exec(txn)
        .await?;
    Ok(moved.rows_affected)
}

/// The same as [`write_event`] in one PostgreSQL statement: the chain lock
/// is held from the head's read to commit, so every round trip saved there
/// is throughput for every writer (see bench/RESULTS.md).
async fn write_event_postgres<C: ConnectionTrait>(
    txn: &C,
    row: &audit_events::Model,
    personal: &[PersonalValue],
) -> Result<u64, DbErr> {
    let mut values: Vec<sea_orm::Value> = vec![
        row.seq.into(),
        row.occurred_at.into(),
        row.actor.clone().into(),
        row.action.clone().into(),
        row.subject_type.clone().into(),
        row.subject_id.clone().into(),
        row.customer_id.into(),
        row.request_id.clone().into(),
        row.canonical.clone().into(),
        row.prev_hash.clone().into(),
        row.hash.clone().into(),
    ];
    let mut sql = String::from(
        "WITH event AS (INSERT INTO audit_events (seq, occurred_at, actor, action, subject_type, subject_id, customer_id, request_id, canonical, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING seq)",
    );
    if !personal.is_empty() {
        let rows: Vec<String> = personal
            .iter()
            .map(|p| {
                let n = values.len();
                values.extend([
                    p.field.clone().into(),
                    p.value.clone().into(),
                    p.salt.clone().into(),
                ]);
                format!("(${}, ${}, ${})", n + 1, n + 2, n + 3)
            })
            .collect();
        sql.push_str(&format!(
            ", personal AS (INSERT INTO audit_personal_values (seq, field, value, salt) \
             SELECT event.seq, p.field, p.value, p.salt FROM event, (VALUES {}) AS p(field, value, salt))",
            rows.join(", ")
        ));
    }
    sql.push_str(
        " UPDATE audit_chain SET last_seq = $1, last_hash = $11 WHERE id = 1 AND last_seq = $1 - 1",
    );
    let result = txn
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    Ok(result.rows_affected())
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Events at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Events before this time.
    pub to: Option<DateTime<Utc>>,
    pub customer_id: Option<Uuid>,
    pub action: Option<String>,
}

/// A page of events in chain order, after sequence number `after`.
pub async fn list_events<C: ConnectionTrait>(
    db: &C,
    filter: &EventFilter,
    after: Option<i64>,
    limit: u64,
) -> Result<Vec<audit_events::Model>, DbErr> {
    let mut query = audit_events::Entity::find().order_by_asc(audit_events::Column::Seq);
    if let Some(from) = filter.from {
        query = query.filter(audit_events::Column::OccurredAt.gte(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(audit_events::Column::OccurredAt.lt(to));
    }
    if let Some(id) = filter.customer_id {
        query = query.filter(audit_events::Column::CustomerId.eq(id));
    }
    if let Some(action) = &filter.action {
        query = query.filter(audit_events::Column::Action.eq(action.as_str()));
    }
    if let Some(after) = after {
        query = query.filter(audit_events::Column::Seq.gt(after));
    }
    query.limit(limit).all(db).await
}

/// What a verified chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub events: u64,
    pub head_hash: String,
}

/// The first event that does not verify, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit event {seq} does not verify: {reason}")]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// Verifies the chain stored in the database: contiguous sequence numbers,
/// each event linked to the one before, each hash, each stored personal
/// value against its commitment, and the head row. Names the first bad event.
pub async fn verify_chain<C: ConnectionTrait>(
    db: &C,
) -> Result<Result<ChainSummary, ChainBreak>, DbErr> {
    const PAGE: u64 = 1000;
    // The head first: events keep being appended while the chain is read,
    // and every event up to the head read here is already committed (appends
    // commit in sequence, each with its head).
    let head = audit_chain::Entity::find_by_id(1)
        .one(db)
        .await?
        .ok_or_else(|| DbErr::Custom("the audit chain head is missing".into()))?;
    let mut expected_seq = 1i64;
    let mut prev_hash = GENESIS_HASH.to_owned();
    while expected_seq <= head.last_seq {
        let events = audit_events::Entity::find()
            .filter(audit_events::Column::Seq.gte(expected_seq))
            .filter(audit_events::Column::Seq.lte(head.last_seq))
            .order_by_asc(audit_events::Column::Seq)
            .limit(PAGE)
            .all(db)
            .await?;
        let Some(last) = events.last() else { break };
        let personal = audit_personal_values::Entity::find()
            .filter(audit_personal_values::Column::Seq.between(expected_seq, last.seq))
            .all(db)
            .await?;
        for event in &events {
            if let Err(reason) = verify_event(event, expected_seq, &prev_hash) {
                return Ok(Err(ChainBreak {
                    seq: event.seq,
                    reason,
                }));
            }
            let parsed: Value = serde_json::from_str(&event.canonical).unwrap_or(Value::Null);
            for p in personal.iter().filter(|p| p.seq == event.seq) {
                if let Err(reason) = verify_personal(&parsed, p) {
                    return Ok(Err(ChainBreak {
                        seq: event.seq,
                        reason,
                    }));
                }
            }
            prev_hash = event.hash.clone();
            expected_seq += 1;
        }
        if (events.len() as u64) < PAGE {
            break;
        }
    }
    if head.last_seq != expected_seq - 1 || head.last_hash != prev_hash {
        return Ok(Err(ChainBreak {
            seq: head.last_seq,
            reason: format!(
                "the chain head names event {} but the chain ends at event {}",
                head.last_seq,
                expected_seq - 1
            ),
        }));
    }
    // An event past the head is one the head never took in, unless it was
    // appended while this ran (then a head read now covers it).
    let beyond = audit_events::Entity::find()
        .filter(audit_events::Column::Seq.gt(head.last_seq))
        .order_by_desc(audit_events::Column::Seq)
        .one(db)
        .await?;
    if let Some(beyond) = beyond {
        let now = audit_chain::Entity::find_by_id(1)
            .one(db)
            .await?
            .ok_or_else(|| DbErr::Custom("the audit chain head is missing".into()))?;
        if beyond.seq > now.last_seq {
            return Ok(Err(ChainBreak {
                seq: beyond.seq,
                reason: format!(
                    "event {} lies beyond the chain head, which names event {}",
                    beyond.seq, now.last_seq
                ),
            }));
        }
    }
    Ok(Ok(ChainSummary {
        events: (expected_seq - 1) as u64,
        head_hash: prev_hash,
    }))
}

/// Checks one stored event against the chain so far.
pub fn verify_event(
    event: &audit_events::Model,
    expected_seq: i64,
    prev_hash: &str,
) -> Result<(), String> {
    if event.seq != expected_seq {
        return Err(format!(
            "expected event {expected_seq} next, found {}",
            event.seq
        ));
    }
    if event.prev_hash != prev_hash {
        return Err("does not link to the event before it".into());
    }
    let parsed: Value = serde_json::from_str(&event.canonical)
        .map_err(|_| "the stored event is not JSON".to_owned())?;
    if canonical_json(&parsed) != event.canonical.as_bytes() {
        return Err("the stored event is not in canonical form".into());
    }
    if parsed.get("seq").and_then(Value::as_i64) != Some(event.seq) {
        return Err("the sequence number inside the event differs".into());
    }
    if parsed.get("prev_hash").and_then(Value::as_str) != Some(prev_hash) {
        return Err("the previous hash inside the event differs".into());
    }
    let hash = chain_hash(prev_hash, event.canonical.as_bytes())?;
    if hash != event.hash {
        return Err("the hash does not match the event".into());
    }
    Ok(())
}

fn verify_personal(event: &Value, p: &audit_personal_values::Model) -> Result<(), String> {
    let Some(value) = &p.value else {
        return Ok(()); // erased: nothing left to check, the chain still holds
    };
    let mut at = event.get("data");
    for part in p.field.split('.') {
        at = at.and_then(|v| v.get(part));
    }
    let committed = at
        .and_then(|v| v.get("commitment"))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no commitment for the personal value `{}`", p.field))?;
    let salt = hex::decode(&p.salt).map_err(|_| format!("the salt of `{}` is not hex", p.field))?;
    if commitment(&salt, value) != committed {
        return Err(format!(
            "the personal value `{}` does not match its commitment",
            p.field
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        let v = json!({"b": 1, "a": {"d": "ü", "c": null}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":null,"d":"ü"},"b":1}"#.as_bytes()
        );
    }

    #[test]
    fn chain_hash_is_sha256_of_prev_bytes_then_event() {
        // sha256 of 32 zero bytes followed by "{}", computed independently with
        // `printf '%064d' 0 | xxd -r -p | cat - <(printf '{}') | sha256sum`.
        let h = chain_hash(GENESIS_HASH, b"{}").unwrap();
        let mut expected = Sha256::new();
        expected.update([0u8; 32]);
        expected.update(b"{}");
        assert_eq!(h, hex::encode(expected.finalize()));
        assert!(chain_hash("zz", b"{}").is_err());
    }

    #[test]
    fn commitments_hide_the_value_and_verify_with_the_salt() {
        let mut event = AuditEvent::customer("customer.created", Uuid::nil());
        let c = event.commit("after.email", "taro@example.jp");
        let shown = c.to_string();
        assert!(!shown.contains("taro"));
        let p = &event.personal[0];
        let salt = hex::decode(&p.salt).unwrap();
        assert_eq!(c["commitment"], commitment(&salt, "taro@example.jp"));
    }
}
