//! What time does to consents (docs/architecture.md#consent-housekeeping): a
//! consent past its ten years is expired (an event, and its registration
//! removed); customers are reminded once a year that their consent is in
//! force, and asked to renew it in its last months. Each step is idempotent:
//! run it as often as you like, it writes each event and sends each notice
//! once.

use chrono::{DateTime, Datelike, Days, Months, SubsecRound, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
};
use serde_json::json;
use uuid::Uuid;

use crate::audit::events::{ConsentExpired, ConsentNotified, Event, NoticeRef};
use crate::audit::{self, Actor, AuditContext};
use crate::consent::records::{event_row, registration_row};
use crate::customers::{Customer, CustomerStatus};
use crate::db;
use crate::entities::{consent_events, consents, provider_registrations};
use crate::error::CoreError;
use crate::notices::templates::format_date;
use crate::notices::{self, NewNotice, NoticeKind, Notices};

/// How long before the end a customer is asked to renew.
pub const RENEWAL_MONTHS: u32 = 3;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub expired: u64,
    pub reminded: u64,
    pub renewal_requested: u64,
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The consents something may be due for at `at`, found by the database:
/// open ones (no withdrawn, renewed or expired event) that are past their
/// end, in their last months without a renewal request, or past an
/// anniversary without a reminder for it. The rest is not even read.
async fn candidates<C: ConnectionTrait>(
    db: &C,
    at: DateTime<Utc>,
) -> Result<Vec<consents::Model>, CoreError> {
    let backend = db.get_database_backend();
    let p = |i: usize| db::placeholder(backend, i);
    let renewal_horizon = at
        .checked_add_months(Months::new(RENEWAL_MONTHS))
        .unwrap_or(at);
    let year_ago = at.checked_sub_months(Months::new(12)).unwrap_or(at);
    let sql = format!(
        "SELECT c.* FROM consents c \
         WHERE NOT EXISTS (SELECT 1 FROM consent_events e WHERE e.consent_id = c.id \
           AND e.kind IN ('withdrawn', 'renewed', 'expired')) \
         AND (c.expires_at <= {at1} \
           OR (c.expires_at <= {horizon} AND NOT EXISTS (SELECT 1 FROM consent_reminders r \
               WHERE r.consent_id = c.id AND r.kind = 'consent_renewal')) \
           OR (c.granted_at <= {year} AND c.expires_at > {horizon2} \
               AND NOT EXISTS (SELECT 1 FROM consent_reminders r \
               WHERE r.consent_id = c.id AND r.kind = 'consent_reminder' AND r.period_start > {year2}))) \
         ORDER BY c.id",
        at1 = p(1),
        horizon = p(2),
        year = p(3),
        year2 = p(4),
        horizon2 = p(5),
    );
    Ok(consents::Entity::find()
        .from_raw_sql(sea_orm::Statement::from_sql_and_values(
            backend,
            sql,
            [
                at.into(),
                renewal_horizon.into(),
                year_ago.into(),
                year_ago.into(),
                renewal_horizon.into(),
            ],
        ))
        .all(db)
        .await?)
}

/// Marks the reminder of `kind` for the period starting `since` as sent
/// for `consent`; false when it already was (by this or another worker).
async fn mark_sent<C: ConnectionTrait>(
    db: &C,
    consent: Uuid,
    kind: NoticeKind,
    since: DateTime<Utc>,
    notice: Uuid,
) -> Result<bool, CoreError> {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DatabaseBackend::Postgres => {
            "INSERT INTO consent_reminders (consent_id, kind, period_start, notice_id, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
        }
        _ => {
            "INSERT INTO consent_reminders (consent_id, kind, period_start, notice_id, created_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
        }
    };
    let inserted = db
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            sql,
            [
                consent.into(),
                kind.as_str().into(),
                since.into(),
                notice.into(),
                now().into(),
            ],
        ))
        .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The last anniversary of `granted` at or before `at`, if a year has passed.
fn last_anniversary(granted: DateTime<Utc>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let years = at.year() - granted.year();
    (0..=years).rev().find_map(|y| {
        let months = u32::try_from(y).ok()? * 12;
        let candidate = granted.checked_add_months(Months::new(months))?;
        (y >= 1 && candidate <= at).then_some(candidate)
    })
}

/// Expires, reminds and asks for renewal, as of `at`.
pub async fn run(
    db: &DatabaseConnection,
    notices: &Notices,
    timezone: chrono_tz::Tz,
    at: Option<DateTime<Utc>>,
) -> Result<Summary, CoreError> {
    let at = at.unwrap_or_else(now);
    let worker = AuditContext::new(Actor::worker(), None);
    let mut summary = Summary::default();
    let local = |t: DateTime<Utc>| t.with_timezone(&timezone).date_naive();
    for consent in candidates(db, at).await? {
        let txn = db::begin_write(db).await?;
        // The customer's row is the lock between workers doing this at once
        // (on SQLite the write transaction already is).
        let customer_row = crate::customers::lock(&txn, consent.customer_id).await?;
        // Read again inside the transaction: another worker may have been first.
        let last = consent_events::Entity::find()
            .filter(consent_events::Column::ConsentId.eq(consent.id))
            .order_by_desc(consent_events::Column::Seq)
            .one(&txn)
            .await?;
        let customer = Customer::try_from(customer_row)?;
        let Some(seq) = last.filter(|e| e.kind == "granted").map(|e| e.seq) else {
            continue;
        };
        let name = customer.basic4.as_ref().map(|b| b.name.as_str());
        let living = customer.status != CustomerStatus::Deceased;
        if consent.expires_at <= at {
            let inserted = consent_events::Entity::insert(event_row(
                consent.id,
                seq + 1,
                "expired",
                at,
                &worker,
                None,
                None,
            ))
            .exec_without_returning(&txn)
            .await;
            match inserted {
                Ok(_) => {}
                Err(e) if db::is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
            let registered = customer
                .jpki_cert_serial
                .as_ref()
                .map_or(consent.cert_serial.clone(), |s| s.as_str().to_owned());
            provider_registrations::Entity::insert(registration_row(
                consent.id,
                &registered,
                "unsubscribe",
                at,
            ))
            .exec_without_returning(&txn)
            .await?;
            let event = Event::ConsentExpired(ConsentExpired {
                consent_id: consent.id,
                customer_id: customer.id,
                expires_at: consent.expires_at,
            });
            audit::append(&txn, &worker, event).await?;
            txn.commit().await?;
            summary.expired += 1;
            continue;
        }
        let renewal_from = consent
            .expires_at
            .checked_sub_months(Months::new(RENEWAL_MONTHS))
            .unwrap_or(consent.expires_at);
        let valid_until = format_date(customer.locale, local(consent.expires_at) - Days::new(1));
        let (kind, since, data) = if at >= renewal_from {
            (
                NoticeKind::ConsentRenewal,
                renewal_from,
                json!({"consent": {"valid_until": valid_until}}),
            )
        } else if let Some(anniversary) = last_anniversary(consent.granted_at, at) {
            (
                NoticeKind::ConsentReminder,
                anniversary,
                json!({"consent": {
                    "granted_on": format_date(customer.locale, local(consent.granted_at)),
                    "valid_until": valid_until,
                }}),
            )
        } else {
            continue;
        };
        if !living {
            continue;
        }
        let notice = notices::enqueue(
            &txn,
            notices,
            NewNotice {
                kind,
                customer_id: Some(customer.id),
                to: &customer.email,
                locale: customer.locale,
                customer_name: name,
                data,
            },
        )
        .await?;
        if !mark_sent(&txn, consent.id, kind, since, notice).await? {
            // Sent for this period already: the notice just written goes with the rollback.
            continue;
        }
        let notified = ConsentNotified {
            consent_id: consent.id,
            customer_id: customer.id,
            notice: NoticeRef::new(notice, kind),
        };
        let event = match kind {
            NoticeKind::ConsentRenewal => Event::ConsentRenewalRequested(notified),
            _ => Event::ConsentReminded(notified),
        };
        audit::append(&txn, &worker, event).await?;
        txn.commit().await?;
        match kind {
            NoticeKind::ConsentRenewal => summary.renewal_requested += 1,
            _ => summary.reminded += 1,
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn anniversaries_count_whole_years() {
        let granted = at("2026-11-25T10:00:00Z");
        assert_eq!(last_anniversary(granted, at("2027-11-25T09:59:59Z")), None);
        assert_eq!(
            last_anniversary(granted, at("2027-11-25T10:00:00Z")),
            Some(at("2027-11-25T10:00:00Z"))
        );
        assert_eq!(
            last_anniversary(granted, at("2030-01-01T00:00:00Z")),
            Some(at("2029-11-25T10:00:00Z"))
        );
    }
}
