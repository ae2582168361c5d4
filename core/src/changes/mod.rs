//! The change feed: every change kihon4 applies to a customer, told to the
//! institution's own systems (docs/integration.md).
//!
//! A change event is derived from the typed audit event that records the
//! change ([`drafts`]), carried inside it, and written by the audit append
//! in the same transaction ([`record`]): a change, its audit event, its
//! notice and its feed event commit together or not at all. Positions are
//! given under the feed head's row lock, which is held until commit, so
//! they follow commit order: a reader that sees position `p` committed sees
//! every position below it, and a cursor never skips an event.
//!
//! Events leave in three ways, all with the same JSON ([`envelope`]): the
//! cursor API (`GET /v1/changes`, [`page`]), signed webhooks
//! ([`webhooks`], [`delivery`]) and the daily file ([`file`]).

pub mod delivery;
pub mod file;
pub mod webhooks;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use chrono::{DateTime, FixedOffset, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::audit::events::{Event, UpdateSource, WithdrawnBy};
use crate::customers::CustomerStatus;
use crate::domain::Basic4;
use crate::entities::{
    change_customer_seqs, change_events, change_feed, customers as customer_rows,
};
use crate::error::CoreError;
use crate::provider::OptionalItems;

/// The kinds of change the feed tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeType {
    Basic4Changed,
    CustomerDeceased,
    CertificateRevoked,
    ConsentGranted,
    ConsentRenewed,
    ConsentWithdrawn,
    ConsentExpired,
    ReviewOpened,
    ReviewResolved,
}

impl ChangeType {
    pub const ALL: [ChangeType; 9] = [
        Self::Basic4Changed,
        Self::CustomerDeceased,
        Self::CertificateRevoked,
        Self::ConsentGranted,
        Self::ConsentRenewed,
        Self::ConsentWithdrawn,
        Self::ConsentExpired,
        Self::ReviewOpened,
        Self::ReviewResolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic4Changed => "basic4.changed",
            Self::CustomerDeceased => "customer.deceased",
            Self::CertificateRevoked => "certificate.revoked",
            Self::ConsentGranted => "consent.granted",
            Self::ConsentRenewed => "consent.renewed",
            Self::ConsentWithdrawn => "consent.withdrawn",
            Self::ConsentExpired => "consent.expired",
            Self::ReviewOpened => "review.opened",
            Self::ReviewResolved => "review.resolved",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }

    /// A comma-separated list of types (`types=` of the cursor API).
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, String> {
        let mut out = BTreeSet::new();
        for part in raw.split(',') {
            let part = part.trim();
            match Self::parse(part) {
                Some(t) => {
                    out.insert(t);
                }
                None => {
                    return Err(format!(
                        "`{}` is not an event type; the types are {}",
                        part.chars().take(64).collect::<String>(),
                        Self::ALL.map(Self::as_str).join(", ")
                    ));
                }
            }
        }
        Ok(out.into_iter().collect())
    }
}

/// How much of the changed values leaves kihon4 (`KIHON4_CHANGE_FEED_VALUES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValuePolicy {
    /// Which items changed, without their values: the default.
    #[default]
    ItemsOnly,
    /// The values before and after, for a system of record.
    Full,
}

/// A type by its name (`basic4.changed`).
impl serde::Serialize for ChangeType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ChangeType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("no change type `{name}`")))
    }
}

impl std::str::FromStr for ValuePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "items" => Ok(Self::ItemsOnly),
            "full" => Ok(Self::Full),
            _ => Err(format!("must be `items` or `full`, not `{s}`")),
        }
    }
}

/// A change as the audit event that records it tells it, before it is
/// numbered: what [`record`] writes (serialised only into the audit queue,
/// beside its event).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Draft {
    pub kind: ChangeType,
    pub customer_id: Uuid,
    /// The type's own fields; personal values only under `before`/`after`.
    pub data: Map<String, Value>,
}

impl Draft {
    fn new(kind: ChangeType, customer_id: Uuid, data: Value) -> Self {
        let Value::Object(data) = data else {
            unreachable!("drafts are built from objects")
        };
        Self {
            kind,
            customer_id,
            data,
        }
    }
}

/// The change events an audit event reports, in the order they happened.
pub fn drafts(event: &Event) -> Vec<Draft> {
    let mut out = Vec::new();
    match event {
        Event::CustomerUpdated(u) => {
            let (source, reported_on, consent) = match &u.source {
                None => ("operator", None, None),
                Some(UpdateSource::Import) => ("import", None, None),
                Some(UpdateSource::Consent) => ("consent", None, None),
                Some(UpdateSource::Mynaportal { consent }) => ("mynaportal", None, Some(*consent)),
                Some(UpdateSource::Sync {
                    reported_on,
                    consent,
                    ..
                }) => ("sync", *reported_on, *consent),
            };
            if let Some(basic4) = &u.basic4
                && let Some(after) = &basic4.after
            {
                let no_optional = (OptionalItems::default(), OptionalItems::default());
                let (opt_before, opt_after) = u
                    .optional
                    .as_ref()
                    .map(|o| (&o.before, &o.after))
                    .unwrap_or((&no_optional.0, &no_optional.1));
                let (names, before, after) =
                    changed_items(basic4.before.as_ref(), after, opt_before, opt_after);
                if !names.is_empty() {
                    let cert_serial = u.jpki_cert_serial.as_ref().and_then(|c| c.after.clone());
                    out.push(Draft::new(
                        ChangeType::Basic4Changed,
                        u.customer_id,
                        json!({
                            "source": source,
                            "items_changed": names,
                            "before": before,
                            "after": after,
                            "reported_on": reported_on,
                            "cert_serial": cert_serial,
                            "consent_id": consent,
                        }),
                    ));
                }
            }
            if let Some(status) = &u.status
                && status.after == CustomerStatus::Deceased
                && status.before != CustomerStatus::Deceased
            {
                out.push(Draft::new(
                    ChangeType::CustomerDeceased,
                    u.customer_id,
                    json!({"source": source, "reported_on": reported_on}),
                ));
            }
        }
        Event::ConsentGranted(g) => out.push(Draft::new(
            ChangeType::ConsentGranted,
            g.customer_id,
            json!({
                "consent_id": g.consent_id,
                "channel": g.channel.as_str(),
                "cert_serial": g.cert_serial,
                "granted_at": g.granted_at,
                "expires_at": g.expires_at,
                "renews": g.renews,
            }),
        )),
        Event::ConsentRenewed(r) => out.push(Draft::new(
            ChangeType::ConsentRenewed,
            r.customer_id,
            json!({"consent_id": r.consent_id, "renewed_by": r.renewed_by}),
        )),
        Event::ConsentWithdrawn(w) => out.push(Draft::new(
            ChangeType::ConsentWithdrawn,
            w.customer_id,
            json!({
                "consent_id": w.consent_id,
                "withdrawn_at": w.withdrawn_at,
                "by": match w.by {
                    WithdrawnBy::Institution { .. } => "institution",
                    WithdrawnBy::Provider { .. } => "provider",
                },
            }),
        )),
        Event::ConsentExpired(e) => out.push(Draft::new(
            ChangeType::ConsentExpired,
            e.customer_id,
            json!({"consent_id": e.consent_id, "expires_at": e.expires_at}),
        )),
        Event::ReviewOpened(r) => {
            // Seen in the CRL by sync, or told by the provider refusing a
            // registration (then without a reason).
            if r.kind == "revoked"
                || r.kind == crate::consent::registrations::REVOKED_BEFORE_REGISTRATION
            {
                out.push(Draft::new(
                    ChangeType::CertificateRevoked,
                    r.customer_id,
                    json!({
                        "cert_serial": r.detail.get("cert_serial"),
                        "reason": r.detail.get("reason"),
                        "review_id": r.review_id,
                    }),
                ));
            }
            out.push(Draft::new(
                ChangeType::ReviewOpened,
                r.customer_id,
                json!({"review_id": r.review_id, "kind": r.kind, "detail": r.detail}),
            ));
        }
        Event::ReviewResolved(r) => out.push(Draft::new(
            ChangeType::ReviewResolved,
            r.customer_id,
            json!({"review_id": r.review_id, "resolution": r.resolution}),
        )),
        _ => {}
    }
    out
}

/// The names of the items that differ, and each one's value before and after.
pub(crate) fn changed_items(
    before: Option<&Basic4>,
    after: &Basic4,
    opt_before: &OptionalItems,
    opt_after: &OptionalItems,
) -> (Vec<&'static str>, Map<String, Value>, Map<String, Value>) {
    let mut names = Vec::new();
    let (mut b, mut a) = (Map::new(), Map::new());
    let items = |x: &Basic4| {
        [
            (
                "name",
                vec![
                    ("name", json!(x.name.as_str())),
                    ("name_substitute_flags", json!(x.name.flags().as_str())),
                ],
            ),
            (
                "address",
                vec![
                    ("address", json!(x.address.as_str())),
                    (
                        "address_substitute_flags",
                        json!(x.address.flags().as_str()),
                    ),
                ],
            ),
            (
                "birth_date",
                vec![("birth_date", json!(x.birth_date.to_iso()))],
            ),
            ("gender", vec![("gender", json!(x.gender.code()))]),
        ]
    };
    let after_items = items(after);
    let before_items = before.map(items);
    for (i, (name, values)) in after_items.into_iter().enumerate() {
        let old = before_items.as_ref().map(|b| &b[i].1);
        if old != Some(&values) {
            names.push(name);
            for (j, (key, value)) in values.into_iter().enumerate() {
                b.insert(key.into(), old.map_or(Value::Null, |o| o[j].1.clone()));
                a.insert(key.into(), value);
            }
        }
    }
    for (name, old, new) in [
        (
            "name_kana",
            json!(opt_before.name_kana),
            json!(opt_after.name_kana),
        ),
        (
            "former_surname",
            json!(opt_before.former_surname),
            json!(opt_after.former_surname),
        ),
        (
            "overseas_move_on",
            json!(opt_before.overseas_move_on),
            json!(opt_after.overseas_move_on),
        ),
    ] {
        if old != new {
            names.push(name);
            b.insert(name.into(), old);
            a.insert(name.into(), new);
        }
    }
    (names, b, a)
}

/// Writes `drafts` (each with the sequence number of the audit event that
/// reports it) as the next positions of the feed, inside the caller's
/// transaction. Called by the audit append, after the chain lock is taken:
/// the feed head is always locked second, so the two never deadlock.
pub(crate) async fn record<C: ConnectionTrait>(
    txn: &C,
    drafts: Vec<(i64, Draft)>,
) -> Result<(), DbErr> {
    if drafts.is_empty() {
        return Ok(());
    }
    let mut head = change_feed::Entity::find_by_id(1);
    if txn.get_database_backend() == DbBackend::Postgres {
        head = head.lock_exclusive();
    }
    let head = head
        .one(txn)
        .await?
        .ok_or_else(|| DbErr::Custom("the change feed head is missing".into()))?;
    let ids: BTreeSet<Uuid> = drafts.iter().map(|(_, d)| d.customer_id).collect();
    let refs: BTreeMap<Uuid, String> = customer_rows::Entity::find()
        .select_only()
        .column(customer_rows::Column::Id)
        .column(customer_rows::Column::ExternalRef)
        .filter(customer_rows::Column::Id.is_in(ids.iter().copied()))
        .into_tuple::<(Uuid, String)>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    // Kept apart from the events, which retention removes: a customer's
    // sequence goes on after its events are purged.
    let mut seqs: BTreeMap<Uuid, i64> = change_customer_seqs::Entity::find()
        .filter(change_customer_seqs::Column::CustomerId.is_in(ids.iter().copied()))
        .all(txn)
        .await?
        .into_iter()
        .map(|r| (r.customer_id, r.last_seq))
        .collect();
    let at = Utc::now().trunc_subsecs(6);
    let mut position = head.last_position;
    let count = drafts.len();
    let mut rows = Vec::with_capacity(count);
    for (audit_seq, draft) in drafts {
        position += 1;
        let seq = seqs.entry(draft.customer_id).or_insert(0);
        *seq += 1;
        rows.push(change_events::ActiveModel {
            position: Set(position),
            id: Set(Uuid::new_v4()),
            event_type: Set(draft.kind.as_str().to_owned()),
            customer_id: Set(draft.customer_id),
            external_ref: Set(refs.get(&draft.customer_id).cloned().unwrap_or_default()),
            customer_seq: Set(*seq),
            occurred_at: Set(at),
            audit_seq: Set(audit_seq),
            data: Set(Value::Object(draft.data).to_string()),
        });
    }
    for chunk in rows.chunks(200) {
        change_events::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    let last: Vec<change_customer_seqs::ActiveModel> = seqs
        .into_iter()
        .map(
            |(customer_id, last_seq)| change_customer_seqs::ActiveModel {
                customer_id: Set(customer_id),
                last_seq: Set(last_seq),
            },
        )
        .collect();
    for chunk in last.chunks(200) {
        change_customer_seqs::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(change_customer_seqs::Column::CustomerId)
                    .update_column(change_customer_seqs::Column::LastSeq)
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    let moved = change_feed::Entity::update_many()
        .col_expr(change_feed::Column::LastPosition, Expr::value(position))
        .filter(change_feed::Column::Id.eq(1))
        .filter(change_feed::Column::LastPosition.eq(head.last_position))
        .exec(txn)
        .await?;
    if moved.rows_affected != 1 {
        return Err(DbErr::Custom(
            "the change feed head moved during a write".into(),
        ));
    }
    metrics::counter!("kihon4_change_events_total").increment(count as u64);
    Ok(())
}

/// A place in the feed: the events after it come next. Shown as an opaque
/// string; only [`Cursor::parse`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor(pub i64);

/// What a cursor string starts with (its format's version).
const CURSOR_PREFIX: &str = "c1_";

impl Cursor {
    pub fn parse(raw: &str) -> Option<Self> {
        let body = raw.strip_prefix(CURSOR_PREFIX)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .ok()?;
        let bytes: [u8; 8] = bytes.try_into().ok()?;
        let position = i64::from_be_bytes(bytes);
        (position >= 0).then_some(Self(position))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0.to_be_bytes());
        write!(f, "{CURSOR_PREFIX}{body}")
    }
}

/// Japan Standard Time, in which the `occurred_on` date is given.
pub fn jst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("a valid offset")
}

/// The JSON of one event, as the webhook body and the cursor API give it:
/// the Standard Webhooks payload shape `{type, timestamp, data}`.
pub fn envelope(row: &change_events::Model, policy: ValuePolicy) -> Value {
    let mut data: Map<String, Value> = serde_json::from_str(&row.data).unwrap_or_default();
    if policy == ValuePolicy::ItemsOnly {
        data.remove("before");
        data.remove("after");
    }
    let at = row
        .occurred_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut out = Map::new();
    out.insert("event_id".into(), json!(row.id));
    out.insert("cursor".into(), json!(Cursor(row.position).to_string()));
    out.insert("customer_id".into(), json!(row.customer_id));
    out.insert("external_ref".into(), json!(row.external_ref));
    out.insert("customer_seq".into(), json!(row.customer_seq));
    out.insert("occurred_at".into(), json!(at));
    out.insert(
        "occurred_on_jst".into(),
        json!(row.occurred_at.with_timezone(&jst()).date_naive()),
    );
    out.extend(data);
    json!({"type": row.event_type, "timestamp": at, "data": out})
}

/// One page of the cursor API.
#[derive(Debug, Clone)]
pub struct Page {
    pub events: Vec<change_events::Model>,
    /// Where the next page starts: after the last event given, or, when the
    /// page is not full, the feed's head as it was read.
    pub next: Cursor,
}

/// Why a page cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The events after the cursor were removed after their retention.
    #[error("the events after this cursor were removed after their retention")]
    Expired,
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// The head of the feed and how far it was purged.
pub async fn head<C: ConnectionTrait>(db: &C) -> Result<change_feed::Model, DbErr> {
    change_feed::Entity::find_by_id(1)
        .one(db)
        .await?
        .ok_or_else(|| DbErr::Custom("the change feed head is missing".into()))
}

/// The events after `after` (from the oldest kept when `None`), of `types`
/// (every type when empty), at most `limit`, in order.
pub async fn page<C: ConnectionTrait>(
    db: &C,
    after: Option<Cursor>,
    limit: u64,
    types: &[ChangeType],
) -> Result<Page, PageError> {
    // The head first: every position up to it has committed.
    let head = head(db).await?;
    let after = match after {
        Some(c) if c.0 < head.purged_through => return Err(PageError::Expired),
        Some(c) => c.0,
        None => head.purged_through,
    };
    let mut query = change_events::Entity::find()
        .filter(change_events::Column::Position.gt(after))
        .filter(change_events::Column::Position.lte(head.last_position))
        .order_by_asc(change_events::Column::Position)
        .limit(limit);
    if !types.is_empty() {
        query = query.filter(
            change_events::Column::EventType.is_in(types.iter().map(|t| t.as_str().to_owned())),
        );
    }
    let events = query.all(db).await?;
    let next = if events.len() as u64 == limit {
        Cursor(events.last().map_or(after, |e| e.position))
    } else {
        Cursor(head.last_position.max(after))
    };
    Ok(Page { events, next })
}

/// Removes the values (`before`, `after`) the feed keeps of `customer_id`'s
/// events, inside the caller's transaction (an erasure of the customer's
/// personal data, [`crate::audit_export::erase_customer`]); the events
/// stay, naming what changed. Returns how many events held values.
pub(crate) async fn erase_values<C: ConnectionTrait>(
    txn: &C,
    customer_id: Uuid,
) -> Result<u64, DbErr> {
    let rows = change_events::Entity::find()
        .filter(change_events::Column::CustomerId.eq(customer_id))
        .all(txn)
        .await?;
    let mut erased = 0;
    for row in rows {
        let mut data: Map<String, Value> = serde_json::from_str(&row.data).unwrap_or_default();
        let had = data.remove("before").is_some() | data.remove("after").is_some();
        if !had {
            continue;
        }
        change_events::Entity::update_many()
            .col_expr(
                change_events::Column::Data,
                Expr::value(Value::Object(data).to_string()),
            )
            .filter(change_events::Column::Position.eq(row.position))
            .exec(txn)
            .await?;
        erased += 1;
    }
    Ok(erased)
}

/// Removes events older than `before` that no endpoint still has to
/// deliver; returns how many went.
pub async fn purge<C: ConnectionTrait>(db: &C, before: DateTime<Utc>) -> Result<u64, CoreError> {
    let backend = db.get_database_backend();
    let p = |i| crate::db::placeholder(backend, i);
    let sql = format!(
        "DELETE FROM change_events WHERE occurred_at < {} AND NOT EXISTS \
         (SELECT 1 FROM webhook_deliveries d WHERE d.position = change_events.position AND d.status = 'pending')",
        p(1)
    );
    let removed = db
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            sql,
            [before.into()],
        ))
        .await?
        .rows_affected();
    if removed > 0 {
        // Positions from the oldest kept on are whole.
        let oldest: Option<i64> = change_events::Entity::find()
            .select_only()
            .column_as(change_events::Column::Position.min(), "p")
            .into_tuple::<Option<i64>>()
            .one(db)
            .await?
            .flatten();
        let head = head(db).await?;
        let through = oldest.map_or(head.last_position, |p| p - 1);
        change_feed::Entity::update_many()
            .col_expr(change_feed::Column::PurgedThrough, Expr::value(through))
            .filter(change_feed::Column::Id.eq(1))
            .filter(change_feed::Column::PurgedThrough.lt(through))
            .exec(db)
            .await?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_nothing_else_does() {
        for p in [0, 1, 41, i64::MAX] {
            let c = Cursor(p);
            assert_eq!(Cursor::parse(&c.to_string()), Some(c));
        }
        for bad in [
            "",
            "c1_",
            "c2_AAAAAAAAAAE",
            "c1_AAAAAAAAAAE=",
            "c1_AAAA",
            "42",
            "c1_gAAAAAAAAAA",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn types_parse_and_unknown_ones_are_named() {
        assert_eq!(
            ChangeType::parse_list("consent.granted, basic4.changed,consent.granted").unwrap(),
            [ChangeType::Basic4Changed, ChangeType::ConsentGranted]
        );
        let err = ChangeType::parse_list("basic4.changed,nope").unwrap_err();
        assert!(err.contains("`nope`"), "{err}");
        for t in ChangeType::ALL {
            assert_eq!(ChangeType::parse(t.as_str()), Some(t));
        }
    }
}
