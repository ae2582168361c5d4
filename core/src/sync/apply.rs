//! Applying the provider's answers (docs/architecture.md#apply). Each
//! answer's writes — the customer's change, its history, audit events,
//! reviews, registration intents, notices, and the job's own record (`done`,
//! with the outcome) — commit together. A batch of answers shares one
//! transaction and one hold of the audit chain lock; if any answer in it
//! cannot be applied, the batch is rolled back and each answer is applied on
//! its own. If a job is no longer ours (its lease ran out and another worker
//! took it), nothing of it is written.

use chrono::{DateTime, Days, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    QueryFilter,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::SyncSettings;
use super::reviews;
use crate::audit::{self, Actor, AuditContext, AuditEvent, Batch};
use crate::consent::records::{active_consents, event_row, registration_row};
use crate::consent::registrations::{self, Standing};
use crate::customers::{self, Basic4Source, Customer, CustomerStatus, items_json};
use crate::db;
use crate::domain::{Basic4, Locale};
use crate::entities::{
    basic4_history, consent_events, customers as customer_rows, outbox, provider_registrations,
    sync_jobs,
};
use crate::error::CoreError;
use crate::notices::templates::{format_date, gender_label, item_label, revocation_label};
use crate::notices::{NewNotice, NoticeKind, Notices, outbox::prepare};
use crate::provider::{Latest, OptionalItems, RevokedReason};

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The outcome's name, as jobs and runs count it.
pub fn outcome_name(latest: &Latest) -> &'static str {
    match latest {
        Latest::Unchanged => "unchanged",
        Latest::Changed { .. } => "changed",
        Latest::AwaitingReissue => "awaiting_reissue",
        Latest::Deceased { .. } => "deceased",
        Latest::Revoked { .. } => "revoked",
        Latest::NotSubscribed => "not_subscribed",
        Latest::UnknownCertificate => "unknown_certificate",
    }
}

fn reason_name(reason: &RevokedReason) -> &'static str {
    match reason {
        RevokedReason::Lost => "lost",
        RevokedReason::Expired => "expired",
        RevokedReason::WithdrawnByHolder => "withdrawn_by_holder",
    }
}

/// The items that differ, each with its label and new value in `locale`.
fn changes(locale: Locale, before: Option<&Basic4>, after: &Basic4) -> Vec<Value> {
    let mut out = Vec::new();
    let differs = |f: fn(&Basic4) -> String| before.is_none_or(|b| f(b) != f(after));
    if differs(|b| b.name.as_str().to_owned()) {
        out.push(json!({"item": "name", "label": item_label(locale, "name"), "value": after.name.as_str()}));
    }
    if differs(|b| b.address.as_str().to_owned()) {
        out.push(json!({"item": "address", "label": item_label(locale, "address"), "value": after.address.as_str()}));
    }
    if differs(|b| b.birth_date.to_iso()) {
        out.push(json!({
            "item": "birth_date",
            "label": item_label(locale, "birth_date"),
            "value": format_date(locale, after.birth_date.date()),
        }));
    }
    if differs(|b| b.gender.code().to_owned()) {
        out.push(json!({
            "item": "gender",
            "label": item_label(locale, "gender"),
            "value": gender_label(locale, after.gender.code()),
        }));
    }
    out
}

/// What a batch's answers write besides the customers' rows, gathered and
/// written a few statements per batch at its end.
#[derive(Default)]
struct Staged {
    events: Batch,
    history: Vec<basic4_history::ActiveModel>,
    registrations: Vec<provider_registrations::ActiveModel>,
    notices: Vec<outbox::ActiveModel>,
    /// Jobs done, with their outcome.
    done: Vec<(Uuid, &'static str)>,
}

/// Rows per multi-row INSERT.
const ROWS: usize = 100;

impl Staged {
    /// Writes everything gathered; `false` when some job is no longer ours.
    async fn flush(self, txn: &DatabaseTransaction, owner: &str) -> Result<bool, CoreError> {
        let at = now();
        let mut by_outcome: std::collections::BTreeMap<&str, Vec<Uuid>> = Default::default();
        for (job, outcome) in &self.done {
            by_outcome.entry(outcome).or_default().push(*job);
        }
        let mut finished = 0;
        for (outcome, jobs) in by_outcome {
            for chunk in jobs.chunks(ROWS * 5) {
                finished += sync_jobs::Entity::update_many()
                    .col_expr(sync_jobs::Column::Status, Expr::value("done"))
                    .col_expr(sync_jobs::Column::Outcome, Expr::value(outcome))
                    .col_expr(sync_jobs::Column::FinishedAt, Expr::value(at))
                    .col_expr(
                        sync_jobs::Column::LeaseOwner,
                        Expr::value(Option::<String>::None),
                    )
                    .col_expr(
                        sync_jobs::Column::LeaseExpiresAt,
                        Expr::value(Option::<DateTime<Utc>>::None),
                    )
                    .filter(sync_jobs::Column::Id.is_in(chunk.iter().copied()))
                    .filter(sync_jobs::Column::LeaseOwner.eq(owner))
                    .filter(sync_jobs::Column::Status.eq("pending"))
                    .exec(txn)
                    .await?
                    .rows_affected;
            }
        }
        if finished != self.done.len() as u64 {
            return Ok(false);
        }
        for chunk in self.history.chunks(ROWS) {
            basic4_history::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(txn)
                .await?;
        }
        for chunk in self.registrations.chunks(ROWS) {
            provider_registrations::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(txn)
                .await?;
        }
        for chunk in self.notices.chunks(ROWS) {
            outbox::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(txn)
                .await?;
        }
        // Last: the chain lock is held from here to commit.
        audit::append_batch(txn, self.events).await?;
        Ok(true)
    }
}

/// The optional items that differ, each with its label and new value.
fn optional_changes(locale: Locale, before: &OptionalItems, after: &OptionalItems) -> Vec<Value> {
    let mut out = Vec::new();
    if after.name_kana != before.name_kana
        && let Some(kana) = &after.name_kana
    {
        out.push(
            json!({"item": "name_kana", "label": item_label(locale, "name_kana"), "value": kana}),
        );
    }
    if after.former_surname != before.former_surname
        && let Some(surname) = &after.former_surname
    {
        out.push(json!({"item": "former_surname", "label": item_label(locale, "former_surname"), "value": surname}));
    }
    if after.overseas_move_on != before.overseas_move_on
        && let Some(on) = after.overseas_move_on
    {
        out.push(json!({
            "item": "overseas_move_on",
            "label": item_label(locale, "overseas_move_on"),
            "value": format_date(locale, on),
        }));
    }
    out
}

/// Applies `latest` for `job` in a transaction of its own. Returns the
/// outcome recorded, or `None` when the job was no longer ours (nothing
/// written).
pub async fn apply(
    db: &DatabaseConnection,
    notices: &Notices,
    settings: SyncSettings,
    owner: &str,
    job: &sync_jobs::Model,
    latest: &Latest,
) -> Result<Option<&'static str>, CoreError> {
    Ok(write_all(db, notices, settings, owner, &[(job, latest)])
        .await?
        .map(|outcomes| outcomes[0]))
}

/// Applies each answer of `batch` in one transaction and one chain append;
/// when any of them cannot be (a concurrent edit, a job taken over, an
/// error), rolls back and applies each on its own. The results are in the
/// batch's order.
pub async fn apply_batch(
    db: &DatabaseConnection,
    notices: &Notices,
    settings: SyncSettings,
    owner: &str,
    batch: &[(&sync_jobs::Model, &Latest)],
) -> Vec<Result<Option<&'static str>, CoreError>> {
    if batch.len() > 1 {
        match write_all(db, notices, settings, owner, batch).await {
            Ok(Some(outcomes)) => return outcomes.into_iter().map(|o| Ok(Some(o))).collect(),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, jobs = batch.len(), "a batch was rolled back; its answers are applied one by one");
            }
        }
    }
    let mut results = Vec::with_capacity(batch.len());
    for (job, latest) in batch {
        results.push(apply(db, notices, settings, owner, job, latest).await);
    }
    results
}

/// The whole batch in one transaction, or `None` (rolled back) when some
/// job is no longer ours. The customers are locked together, in id order.
async fn write_all(
    db: &DatabaseConnection,
    notices: &Notices,
    settings: SyncSettings,
    owner: &str,
    batch: &[(&sync_jobs::Model, &Latest)],
) -> Result<Option<Vec<&'static str>>, CoreError> {
    let at = now();
    let txn = db::begin_write(db).await?;
    let ids: Vec<Uuid> = batch.iter().map(|(job, _)| job.customer_id).collect();
    let mut rows = customers::lock_many(&txn, &ids).await?;
    let mut active = active_consents(&txn, &ids, at).await?;
    let mut staged = Staged::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    for (job, latest) in batch {
        let row = rows
            .remove(&job.customer_id)
            .ok_or(CoreError::NotFound("customer"))?;
        let consent = active.remove(&job.customer_id);
        match write(
            &txn,
            &mut staged,
            notices,
            settings,
            owner,
            job,
            latest,
            row,
            consent,
            at,
        )
        .await?
        {
            Some(outcome) => outcomes.push(outcome),
            None => {
                txn.rollback().await?;
                return Ok(None);
            }
        }
    }
    if !staged.flush(&txn, owner).await? {
        // Another worker took a job over: whatever was written goes.
        txn.rollback().await?;
        return Ok(None);
    }
    txn.commit().await?;
    Ok(Some(outcomes))
}

/// Writes what `latest` means for `job`, whose customer's locked `row` and
/// active consent are given; the rest joins `staged`. `None`: the job is no
/// longer ours, and the caller rolls back.
#[allow(clippy::too_many_arguments)]
async fn write(
    txn: &DatabaseTransaction,
    staged: &mut Staged,
    notices: &Notices,
    settings: SyncSettings,
    owner: &str,
    job: &sync_jobs::Model,
    latest: &Latest,
    row: customer_rows::Model,
    active: Option<(crate::entities::consents::Model, i32)>,
    at: DateTime<Utc>,
) -> Result<Option<&'static str>, CoreError> {
    let mut outcome = outcome_name(latest);
    let worker = AuditContext::new(Actor::worker(), None);
    let customer = Customer::try_from(row.clone())?;
    let local = |t: DateTime<Utc>| t.with_timezone(&settings.timezone).date_naive();
    // The consent may have ended since the job was made (withdrawn, expired):
    // then what J-LIS says is not taken into the record.
    let consenting = active.is_some();
    let events = &mut staged.events;

    match latest {
        Latest::Unchanged => {}
        Latest::Changed { .. } if !consenting => outcome = "consent_ended",
        Latest::Changed {
            current_cert_serial,
            changed_on,
            basic4,
            optional,
        } => {
            // Applied before (a job done twice after a crash): nothing more.
            if customer.jpki_cert_serial.as_ref() != Some(current_cert_serial) {
                // Optional items J-LIS returns are kept; one it does not
                // return stays as it was.
                let kept = OptionalItems {
                    name_kana: optional
                        .name_kana
                        .clone()
                        .or_else(|| customer.optional.name_kana.clone()),
                    former_surname: optional
                        .former_surname
                        .clone()
                        .or_else(|| customer.optional.former_surname.clone()),
                    overseas_move_on: optional
                        .overseas_move_on
                        .or(customer.optional.overseas_move_on),
                };
                let old_serial = row.jpki_cert_serial.clone();
                let version = row.version + 1;
                let new_serial = current_cert_serial.as_str();
                let updated = customer_rows::Entity::update_many()
                    .col_expr(
                        customer_rows::Column::Name,
                        Expr::value(basic4.name.as_str()),
                    )
                    .col_expr(
                        customer_rows::Column::NameFlags,
                        Expr::value(basic4.name.flags().as_str()),
                    )
                    .col_expr(
                        customer_rows::Column::Address,
                        Expr::value(basic4.address.as_str()),
                    )
                    .col_expr(
                        customer_rows::Column::AddressFlags,
                        Expr::value(basic4.address.flags().as_str()),
                    )
                    .col_expr(
                        customer_rows::Column::BirthDate,
                        Expr::value(basic4.birth_date.date()),
                    )
                    .col_expr(
                        customer_rows::Column::Gender,
                        Expr::value(basic4.gender.code()),
                    )
                    .col_expr(
                        customer_rows::Column::JpkiCertSerial,
                        Expr::value(new_serial),
                    )
                    .col_expr(
                        customer_rows::Column::CertNotAfter,
                        Expr::value(Option::<DateTime<Utc>>::None),
                    )
                    .col_expr(
                        customer_rows::Column::NameKana,
                        Expr::value(kept.name_kana.clone()),
                    )
                    .col_expr(
                        customer_rows::Column::FormerSurname,
                        Expr::value(kept.former_surname.clone()),
                    )
                    .col_expr(
                        customer_rows::Column::OverseasMoveOn,
                        Expr::value(kept.overseas_move_on),
                    )
                    .col_expr(customer_rows::Column::Version, Expr::value(version))
                    .col_expr(customer_rows::Column::UpdatedAt, Expr::value(at))
                    .filter(customer_rows::Column::Id.eq(customer.id))
                    .filter(customer_rows::Column::Version.eq(row.version))
                    .exec(txn)
                    .await?;
                if updated.rows_affected != 1 {
                    // An edit won the race since the row was read: try again later.
                    return Err(CoreError::Conflict("the customer changed meanwhile"));
                }
                staged.history.push(basic4_history::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    customer_id: Set(customer.id),
                    customer_version: Set(version),
                    source: Set(Basic4Source::Sync.as_str().to_owned()),
                    before: Set(customer
                        .basic4
                        .as_ref()
                        .map(|b| items_json(b, &customer.optional))),
                    after: Set(items_json(basic4, &kept)),
                    reported_on: Set(Some(*changed_on)),
                    changed_at: Set(at),
                });
                // The subscription follows the certificate.
                if let Some((consent, _)) = &active {
                    if let Some(old) = old_serial.as_deref().filter(|o| *o != new_serial) {
                        staged.registrations.push(registration_row(
                            consent.id,
                            old,
                            "unsubscribe",
                            at,
                        ));
                    }
                    staged.registrations.push(registration_row(
                        consent.id,
                        new_serial,
                        "subscribe",
                        at,
                    ));
                }
                let mut items = changes(customer.locale, customer.basic4.as_ref(), basic4);
                items.extend(optional_changes(customer.locale, &customer.optional, &kept));
                let mut event = AuditEvent::customer("customer.updated", customer.id);
                let mut before = Map::new();
                let mut after = Map::new();
                if let Some(b) = &customer.basic4 {
                    before.insert(
                        "basic4".into(),
                        customers::basic4_commitments(&mut event, "before.basic4", b),
                    );
                }
                after.insert(
                    "basic4".into(),
                    customers::basic4_commitments(&mut event, "after.basic4", basic4),
                );
                if customer.optional != OptionalItems::default() {
                    before.insert(
                        "optional".into(),
                        customers::optional_commitments(
                            &mut event,
                            "before.optional",
                            &customer.optional,
                        ),
                    );
                }
                if kept != OptionalItems::default() {
                    after.insert(
                        "optional".into(),
                        customers::optional_commitments(&mut event, "after.optional", &kept),
                    );
                }
                before.insert("jpki_cert_serial".into(), json!(old_serial));
                after.insert("jpki_cert_serial".into(), json!(new_serial));
                before.insert("version".into(), json!(row.version));
                after.insert("version".into(), json!(version));
                let mut event = event
                    .set("before", Value::Object(before))
                    .set("after", Value::Object(after))
                    .set("source", json!(Basic4Source::Sync.as_str()))
                    .set("reported_on", json!(changed_on))
                    .set("job", json!(job.id));
                if !items.is_empty() && customer.status != CustomerStatus::Deceased {
                    let (notice, row) = prepare(
                        notices,
                        NewNotice {
                            kind: NoticeKind::Basic4Changed,
                            customer_id: Some(customer.id),
                            to: &customer.email,
                            locale: customer.locale,
                            customer_name: Some(basic4.name.as_str()),
                            data: json!({
                                "changes": items,
                                "reported_on": format_date(customer.locale, *changed_on),
                            }),
                        },
                    )?;
                    staged.notices.push(row);
                    event = event.set(
                        "notice",
                        json!({"id": notice, "kind": NoticeKind::Basic4Changed.as_str()}),
                    );
                }
                events.push(&worker, event);
            }
        }
        Latest::Deceased { changed_on } => {
            if customer.status != CustomerStatus::Deceased {
                let version = row.version + 1;
                customer_rows::Entity::update_many()
                    .col_expr(customer_rows::Column::Status, Expr::value("deceased"))
                    .col_expr(customer_rows::Column::Version, Expr::value(version))
                    .col_expr(customer_rows::Column::UpdatedAt, Expr::value(at))
                    .filter(customer_rows::Column::Id.eq(customer.id))
                    .exec(txn)
                    .await?;
                let event = AuditEvent::customer("customer.updated", customer.id)
                    .set(
                        "before",
                        json!({"status": customer.status.as_str(), "version": row.version}),
                    )
                    .set("after", json!({"status": "deceased", "version": version}))
                    .set("source", json!(Basic4Source::Sync.as_str()))
                    .set("reported_on", json!(changed_on))
                    .set("job", json!(job.id));
                events.push(&worker, event);
            }
            reviews::open(
                txn,
                events,
                &worker,
                customer.id,
                "deceased",
                json!({"reported_on": changed_on, "cert_serial": job.cert_serial}),
            )
            .await?;
        }
        Latest::Revoked { reason } => {
            let opened = reviews::open(
                txn,
                events,
                &worker,
                customer.id,
                "revoked",
                json!({"reason": reason_name(reason), "cert_serial": job.cert_serial}),
            )
            .await?;
            // Asked once per review, not on every run that sees the same certificate.
            let consent = active
                .as_ref()
                .filter(|_| opened.is_some() && customer.status != CustomerStatus::Deceased);
            if let Some((consent, _)) = consent {
                let (notice, row) = prepare(
                    notices,
                    NewNotice {
                        kind: NoticeKind::CertificateRevoked,
                        customer_id: Some(customer.id),
                        to: &customer.email,
                        locale: customer.locale,
                        customer_name: customer.basic4.as_ref().map(|b| b.name.as_str()),
                        data: json!({
                            "certificate": {
                                "reason_label": revocation_label(customer.locale, reason_name(reason)),
                            },
                            "consent": {
                                "valid_until": format_date(
                                    customer.locale,
                                    local(consent.expires_at) - Days::new(1),
                                ),
                            },
                        }),
                    },
                )?;
                staged.notices.push(row);
                let event = AuditEvent::customer("notice.queued", customer.id).set(
                    "notice",
                    json!({"id": notice, "kind": NoticeKind::CertificateRevoked.as_str(), "job": job.id}),
                );
                events.push(&worker, event);
            }
        }
        Latest::AwaitingReissue => {
            let waited = at - job.created_at;
            if waited < chrono::Duration::days(settings.awaiting_reissue_days) {
                // Ask again tomorrow; waiting is not a failure.
                let later = at + chrono::Duration::days(1);
                let updated = sync_jobs::Entity::update_many()
                    .col_expr(sync_jobs::Column::RunAt, Expr::value(later))
                    .col_expr(sync_jobs::Column::Attempts, Expr::value(0))
                    .col_expr(
                        sync_jobs::Column::LeaseOwner,
                        Expr::value(Option::<String>::None),
                    )
                    .col_expr(
                        sync_jobs::Column::LeaseExpiresAt,
                        Expr::value(Option::<DateTime<Utc>>::None),
                    )
                    // Counted as waiting: the run completes without it.
                    .col_expr(sync_jobs::Column::Outcome, Expr::value(outcome))
                    .col_expr(
                        sync_jobs::Column::LastError,
                        Expr::value(Option::<String>::None),
                    )
                    .filter(sync_jobs::Column::Id.eq(job.id))
                    .filter(sync_jobs::Column::LeaseOwner.eq(owner))
                    .filter(sync_jobs::Column::Status.eq("pending"))
                    .exec(txn)
                    .await?;
                return Ok((updated.rows_affected == 1).then_some(outcome));
            }
            reviews::open(
                txn,
                events,
                &worker,
                customer.id,
                "awaiting_reissue",
                json!({"since": job.created_at, "cert_serial": job.cert_serial}),
            )
            .await?;
        }
        Latest::NotSubscribed => {
            // Withdrawn outside the institution, if the provider had
            // confirmed the consent; before that the answer means nothing.
            let standing = match &active {
                Some((consent, _)) => registrations::standings(txn, &[consent.id])
                    .await?
                    .remove(&consent.id)
                    .unwrap_or(Standing::Confirmed),
                None => Standing::Confirmed,
            };
            match standing.outcome() {
                None => {}
                Some(registrations::AWAITING) => {
                    return Ok(super::jobs::defer_for_registration(txn, owner, job)
                        .await?
                        .then_some(registrations::AWAITING));
                }
                Some(refused) => outcome = refused,
            }
            if let Some((consent, seq)) =
                active.as_ref().filter(|_| standing == Standing::Confirmed)
            {
                let provider = AuditContext::new(Actor::provider(), None);
                consent_events::Entity::insert(event_row(
                    consent.id,
                    seq + 1,
                    "withdrawn",
                    at,
                    &provider,
                    Some("not_subscribed"),
                    None,
                ))
                .exec_without_returning(txn)
                .await?;
                let mut event = AuditEvent::new(
                    "consent.withdrawn",
                    "consent",
                    Some(consent.id.to_string()),
                )
                .with_customer(customer.id)
                .set("before", json!({"status": "active"}))
                .set(
                    "after",
                    json!({"status": "withdrawn", "withdrawn_at": at, "reason": "not_subscribed"}),
                )
                .set("job", json!(job.id));
                if customer.status != CustomerStatus::Deceased {
                    let (notice, row) = prepare(
                        notices,
                        NewNotice {
                            kind: NoticeKind::ConsentLapsed,
                            customer_id: Some(customer.id),
                            to: &customer.email,
                            locale: customer.locale,
                            customer_name: customer.basic4.as_ref().map(|b| b.name.as_str()),
                            data: json!({}),
                        },
                    )?;
                    staged.notices.push(row);
                    event = event.set(
                        "notice",
                        json!({"id": notice, "kind": NoticeKind::ConsentLapsed.as_str()}),
                    );
                }
                events.push(&provider, event);
                // The provider holds no registration any more: say so on the consent.
                let mut gone = registration_row(consent.id, &job.cert_serial, "unsubscribe", at);
                gone.status = Set("done".to_owned());
                gone.completed_at = Set(Some(at));
                gone.last_error = Set(Some("the provider answered not_subscribed".to_owned()));
                provider_registrations::Entity::insert(gone)
                    .exec_without_returning(txn)
                    .await?;
            }
        }
        Latest::UnknownCertificate => {
            reviews::open(
                txn,
                events,
                &worker,
                customer.id,
                "unknown_certificate",
                json!({"cert_serial": job.cert_serial}),
            )
            .await?;
        }
    }
    staged.done.push((job.id, outcome));
    Ok(Some(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_items_that_change_are_named_in_the_notice() {
        let before = OptionalItems {
            name_kana: Some("スズキ イチロウ".into()),
            ..Default::default()
        };
        let after = OptionalItems {
            name_kana: Some("スズキ イチロウ".into()),
            former_surname: Some("鈴木".into()),
            overseas_move_on: chrono::NaiveDate::from_ymd_opt(2027, 4, 1),
        };
        let ja = optional_changes(Locale::Ja, &before, &after);
        assert_eq!(
            ja,
            vec![
                json!({"item": "former_surname", "label": "旧姓", "value": "鈴木"}),
                json!({"item": "overseas_move_on", "label": "国外転出予定日", "value": format_date(Locale::Ja, after.overseas_move_on.unwrap())}),
            ]
        );
        assert!(optional_changes(Locale::En, &after, &after).is_empty());
    }
}
