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
use serde_json::{Value, json};
use uuid::Uuid;

use super::SyncSettings;
use super::reviews;
use crate::audit::events::{
    Change, ConsentWithdrawn, CustomerUpdated, Event, NoticeQueued, NoticeRef, QueuedFor,
    UpdateSource, WithdrawnBy,
};
use crate::audit::{self, Actor, AuditContext, Batch};
use crate::consent::records::{active_consents, event_row, registration_row};
use crate::consent::registrations::{self, Standing};
use crate::customers::{self, Basic4Source, Customer, CustomerStatus, HistoryEntry, items_json};
use crate::db;
use crate::db::EndLease;
use crate::domain::{Basic4, Locale};
use crate::entities::{
    basic4_history, consent_events, consents, customers as customer_rows, outbox,
    provider_registrations, sync_jobs,
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
                    .end_lease()
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

/// One answer being written: its job, the customer's locked row, and the
/// customer's active consent (with its last event's sequence number).
struct Answer<'a> {
    txn: &'a DatabaseTransaction,
    notices: &'a Notices,
    settings: SyncSettings,
    owner: &'a str,
    job: &'a sync_jobs::Model,
    row: customer_rows::Model,
    customer: Customer,
    active: Option<(consents::Model, i32)>,
    at: DateTime<Utc>,
}

impl Answer<'_> {
    fn worker() -> AuditContext {
        AuditContext::new(Actor::worker(), None)
    }

    fn living(&self) -> bool {
        self.customer.status != CustomerStatus::Deceased
    }

    /// `t`'s date in the institution's zone.
    fn local(&self, t: DateTime<Utc>) -> chrono::NaiveDate {
        t.with_timezone(&self.settings.timezone).date_naive()
    }

    /// Opens a review of `kind` for the customer, unless one is open.
    async fn review(
        &self,
        staged: &mut Staged,
        kind: &str,
        detail: Value,
    ) -> Result<Option<Uuid>, CoreError> {
        let worker = Self::worker();
        reviews::open(
            self.txn,
            &mut staged.events,
            &worker,
            self.customer.id,
            kind,
            detail,
        )
        .await
    }
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
    active: Option<(consents::Model, i32)>,
    at: DateTime<Utc>,
) -> Result<Option<&'static str>, CoreError> {
    let mut outcome = outcome_name(latest);
    let customer = Customer::try_from(row.clone())?;
    let a = Answer {
        txn,
        notices,
        settings,
        owner,
        job,
        row,
        customer,
        active,
        at,
    };
    match latest {
        Latest::Unchanged => {}
        // The consent may have ended since the job was made (withdrawn,
        // expired): then what J-LIS says is not taken into the record.
        Latest::Changed { .. } if a.active.is_none() => outcome = "consent_ended",
        Latest::Changed {
            current_cert_serial,
            changed_on,
            basic4,
            optional,
        } => {
            // Applied before (a job done twice after a crash): nothing more.
            if a.customer.jpki_cert_serial.as_ref() != Some(current_cert_serial) {
                let change = Changed {
                    serial: current_cert_serial.as_str(),
                    changed_on: *changed_on,
                    basic4,
                    optional,
                };
                take_change(&a, staged, change).await?;
            }
        }
        Latest::Deceased { changed_on } => {
            if a.living() {
                record_death(&a, staged, *changed_on).await?;
            }
            let detail = json!({"reported_on": changed_on, "cert_serial": job.cert_serial});
            a.review(staged, "deceased", detail).await?;
        }
        Latest::Revoked { reason } => review_revocation(&a, staged, reason).await?,
        Latest::AwaitingReissue => {
            let waited = at - job.created_at;
            if waited < chrono::Duration::days(settings.awaiting_reissue_days) {
                return Ok(ask_again_tomorrow(&a, outcome).await?.then_some(outcome));
            }
            let detail = json!({"since": job.created_at, "cert_serial": job.cert_serial});
            a.review(staged, "awaiting_reissue", detail).await?;
        }
        Latest::NotSubscribed => {
            // Withdrawn outside the institution, if the provider had
            // confirmed the consent; before that the answer means nothing.
            let standing = match &a.active {
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
            if standing == Standing::Confirmed {
                withdraw_by_provider(&a, staged).await?;
            }
        }
        Latest::UnknownCertificate => {
            let detail = json!({"cert_serial": job.cert_serial});
            a.review(staged, "unknown_certificate", detail).await?;
        }
    }
    staged.done.push((job.id, outcome));
    Ok(Some(outcome))
}

/// What J-LIS's `changed` answer holds.
struct Changed<'a> {
    serial: &'a str,
    changed_on: chrono::NaiveDate,
    basic4: &'a Basic4,
    optional: &'a OptionalItems,
}

/// Takes J-LIS's change into the record: the four items, the optional ones
/// J-LIS returns, the new certificate (which the subscription follows), the
/// history, the notice of what changed and the `customer.updated` event.
async fn take_change(a: &Answer<'_>, staged: &mut Staged, c: Changed<'_>) -> Result<(), CoreError> {
    let customer = &a.customer;
    let kept = kept_optional(&customer.optional, c.optional);
    let old_serial = a.row.jpki_cert_serial.clone();
    let version = a.row.version + 1;
    let update = customer_rows::Entity::update_many()
        .col_expr(customer_rows::Column::JpkiCertSerial, Expr::value(c.serial))
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
        .col_expr(customer_rows::Column::UpdatedAt, Expr::value(a.at))
        .filter(customer_rows::Column::Id.eq(customer.id))
        .filter(customer_rows::Column::Version.eq(a.row.version));
    let entry = HistoryEntry {
        customer_id: customer.id,
        version,
        source: Basic4Source::Sync,
        before: customer
            .basic4
            .as_ref()
            .map(|b| items_json(b, &customer.optional)),
        after: items_json(c.basic4, &kept),
        reported_on: Some(c.changed_on),
        at: a.at,
    };
    let (update, entry) = customers::write_basic4(update, c.basic4, entry);
    if update.exec(a.txn).await?.rows_affected != 1 {
        // An edit won the race since the row was read: try again later.
        return Err(CoreError::Conflict("the customer changed meanwhile"));
    }
    staged.history.push(entry);
    // The subscription follows the certificate.
    if let Some((consent, _)) = &a.active {
        if let Some(old) = old_serial.as_deref().filter(|o| *o != c.serial) {
            staged
                .registrations
                .push(registration_row(consent.id, old, "unsubscribe", a.at));
        }
        staged
            .registrations
            .push(registration_row(consent.id, c.serial, "subscribe", a.at));
    }
    let mut items = changes(customer.locale, customer.basic4.as_ref(), c.basic4);
    items.extend(optional_changes(customer.locale, &customer.optional, &kept));
    let mut event = CustomerUpdated::new(customer.id, Change::new(a.row.version, version));
    event.basic4 = Some(Change::new(customer.basic4.clone(), Some(c.basic4.clone())));
    event.optional = Some(Change::new(customer.optional.clone(), kept));
    event.jpki_cert_serial = Some(Change::new(old_serial, Some(c.serial.to_owned())));
    event.source = Some(UpdateSource::Sync {
        run: a.job.run_id,
        job: a.job.id,
        reported_on: Some(c.changed_on),
        consent: a.active.as_ref().map(|(c, _)| c.id),
    });
    if !items.is_empty() && a.living() {
        let (notice, row) = prepare(
            a.notices,
            NewNotice {
                kind: NoticeKind::Basic4Changed,
                customer_id: Some(customer.id),
                to: &customer.email,
                locale: customer.locale,
                customer_name: Some(c.basic4.name.as_str()),
                data: json!({
                    "changes": items,
                    "reported_on": format_date(customer.locale, c.changed_on),
                }),
            },
        )?;
        staged.notices.push(row);
        event.notice = Some(NoticeRef::new(notice, NoticeKind::Basic4Changed));
    }
    staged
        .events
        .push(&Answer::worker(), Event::CustomerUpdated(event));
    Ok(())
}

/// The optional items after a change: those J-LIS returns, and the
/// customer's own where it returns none.
fn kept_optional(had: &OptionalItems, returned: &OptionalItems) -> OptionalItems {
    OptionalItems {
        name_kana: returned.name_kana.clone().or_else(|| had.name_kana.clone()),
        former_surname: returned
            .former_surname
            .clone()
            .or_else(|| had.former_surname.clone()),
        overseas_move_on: returned.overseas_move_on.or(had.overseas_move_on),
    }
}

/// The customer died (J-LIS dates it `changed_on`, if it does).
async fn record_death(
    a: &Answer<'_>,
    staged: &mut Staged,
    changed_on: Option<chrono::NaiveDate>,
) -> Result<(), CoreError> {
    let version = a.row.version + 1;
    customer_rows::Entity::update_many()
        .col_expr(
            customer_rows::Column::Status,
            Expr::value(CustomerStatus::Deceased.as_str()),
        )
        .col_expr(customer_rows::Column::Version, Expr::value(version))
        .col_expr(customer_rows::Column::UpdatedAt, Expr::value(a.at))
        .filter(customer_rows::Column::Id.eq(a.customer.id))
        .exec(a.txn)
        .await?;
    let mut event = CustomerUpdated::new(a.customer.id, Change::new(a.row.version, version));
    event.status = Some(Change::new(a.customer.status, CustomerStatus::Deceased));
    event.source = Some(UpdateSource::Sync {
        run: a.job.run_id,
        job: a.job.id,
        reported_on: changed_on,
        consent: a.active.as_ref().map(|(c, _)| c.id),
    });
    staged
        .events
        .push(&Answer::worker(), Event::CustomerUpdated(event));
    Ok(())
}

/// A revoked certificate: a review, and (once per review, to a living
/// customer with an active consent) the notice asking to consent again.
async fn review_revocation(
    a: &Answer<'_>,
    staged: &mut Staged,
    reason: &RevokedReason,
) -> Result<(), CoreError> {
    let detail = json!({"reason": reason_name(reason), "cert_serial": a.job.cert_serial});
    let opened = a.review(staged, "revoked", detail).await?;
    // Asked once per review, not on every run that sees the same certificate.
    let consent = a.active.as_ref().filter(|_| opened.is_some() && a.living());
    let Some((consent, _)) = consent else {
        return Ok(());
    };
    let customer = &a.customer;
    let (notice, row) = prepare(
        a.notices,
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
                        a.local(consent.expires_at) - Days::new(1),
                    ),
                },
            }),
        },
    )?;
    staged.notices.push(row);
    let event = Event::NoticeQueued(NoticeQueued {
        customer_id: customer.id,
        notice: NoticeRef::new(notice, NoticeKind::CertificateRevoked),
        queued_for: QueuedFor::SyncJob(a.job.id),
    });
    staged.events.push(&Answer::worker(), event);
    Ok(())
}

/// Asks J-LIS again tomorrow while a certificate awaits its reissue
/// (waiting is not a failure); `false` when the job is no longer ours.
async fn ask_again_tomorrow(a: &Answer<'_>, outcome: &'static str) -> Result<bool, CoreError> {
    let later = a.at + chrono::Duration::days(1);
    let updated = sync_jobs::Entity::update_many()
        .col_expr(sync_jobs::Column::RunAt, Expr::value(later))
        .col_expr(sync_jobs::Column::Attempts, Expr::value(0))
        .end_lease()
        // Counted as waiting: the run completes without it.
        .col_expr(sync_jobs::Column::Outcome, Expr::value(outcome))
        .col_expr(
            sync_jobs::Column::LastError,
            Expr::value(Option::<String>::None),
        )
        .filter(sync_jobs::Column::Id.eq(a.job.id))
        .filter(sync_jobs::Column::LeaseOwner.eq(a.owner))
        .filter(sync_jobs::Column::Status.eq("pending"))
        .exec(a.txn)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// The customer withdrew the active consent outside the institution (the
/// provider answered `not_subscribed`): its `withdrawn` event by the
/// provider, the notice that it lapsed, and the registration marked gone.
async fn withdraw_by_provider(a: &Answer<'_>, staged: &mut Staged) -> Result<(), CoreError> {
    let Some((consent, seq)) = &a.active else {
        return Ok(());
    };
    let customer = &a.customer;
    let provider = AuditContext::new(Actor::provider(), None);
    consent_events::Entity::insert(event_row(
        consent.id,
        seq + 1,
        "withdrawn",
        a.at,
        &provider,
        Some("not_subscribed"),
        None,
    ))
    .exec_without_returning(a.txn)
    .await?;
    let mut notice = None;
    if a.living() {
        let (id, row) = prepare(
            a.notices,
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
        notice = Some(NoticeRef::new(id, NoticeKind::ConsentLapsed));
    }
    let event = Event::ConsentWithdrawn(ConsentWithdrawn {
        consent_id: consent.id,
        customer_id: customer.id,
        withdrawn_at: a.at,
        by: WithdrawnBy::Provider {
            job: a.job.id,
            notice,
        },
    });
    staged.events.push(&provider, event);
    // The provider holds no registration any more: say so on the consent.
    let mut gone = registration_row(consent.id, &a.job.cert_serial, "unsubscribe", a.at);
    gone.status = Set("done".to_owned());
    gone.completed_at = Set(Some(a.at));
    gone.last_error = Set(Some("the provider answered not_subscribed".to_owned()));
    provider_registrations::Entity::insert(gone)
        .exec_without_returning(a.txn)
        .await?;
    Ok(())
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
