//! Carrying out registrations with the provider. An HTTP call cannot share
//! the database transaction that grants or withdraws a consent, so that
//! transaction writes an intent, and the worker carries it out: claimed
//! under a lease (an expired lease is taken over), one at a time per
//! certificate serial and in order, retried with backoff while the
//! provider is unreachable, marked `failed` with the reason when the
//! provider refuses it. Subscribing and unsubscribing are idempotent at the
//! provider, so an intent carried out twice after a crash does no harm.
//!
//! Until the provider has confirmed a consent's subscription, its answers
//! about the consent's certificate mean nothing (`not_subscribed` would read
//! as a withdrawal): sync jobs wait for it ([`Standing`]) and are woken when
//! the subscription is carried out or refused. A subscription refused because
//! the certificate was revoked before the consent could be registered opens a
//! `revoked_before_registration` review and asks the customer to consent again.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Days, SubsecRound, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::json;
use uuid::Uuid;

use crate::audit::events::{
    Event, NoticeQueued, NoticeRef, QueuedFor, RegistrationDone, RegistrationFailed,
    RegistrationRetried,
};
use crate::audit::{self, Actor, AuditContext};
use crate::customers::{self, CustomerStatus};
use crate::db;
use crate::db::EndLease;
use crate::domain::CertSerial;
use crate::entities::{consents, provider_registrations as regs, sync_jobs};
use crate::error::CoreError;
use crate::notices::templates::{format_date, revocation_label};
use crate::notices::{NewNotice, NoticeKind, Notices};
use crate::provider::{Provider, ProviderError, Subscription};

/// The provider's refusal of a subscription for a certificate revoked
/// before the consent was given (its problem type's last segment).
pub const REFUSED_REVOKED: &str = "certificate-revoked";

/// The refusal, before the capability's name, of a registration the
/// provider cannot take at all (it offers no subscriptions: PocketSign).
/// It is not retried, and it gates nothing: such a provider's answers do
/// not depend on a registration.
pub const REFUSED_UNSUPPORTED: &str = "capability-unsupported:";

/// The outcome of a sync job that waits for its consent's registration.
pub const AWAITING: &str = "awaiting_registration";
/// The outcome of a sync job whose consent the provider refused to register
/// because the certificate had been revoked.
pub const REVOKED_BEFORE_REGISTRATION: &str = "revoked_before_registration";
/// The outcome of a sync job whose consent the provider refused to register
/// for another reason.
pub const REGISTRATION_REFUSED: &str = "registration_refused";

/// Where a consent's registration stands, as far as sync may conclude
/// anything from the provider's answers about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The provider holds it: it confirmed a subscription, and none is
    /// still to be carried out (or kihon4 asked for none: consents
    /// registered out of band).
    Confirmed,
    /// A subscription is still to be carried out (or retried).
    Awaiting,
    /// The provider refused the consent's subscriptions and confirmed none;
    /// `revoked` when it refused because the certificate was revoked.
    Refused { revoked: bool },
}

impl Standing {
    /// The job outcome that stands for this, when the provider is not to be asked.
    pub fn outcome(self) -> Option<&'static str> {
        match self {
            Self::Confirmed => None,
            Self::Awaiting => Some(AWAITING),
            Self::Refused { revoked: true } => Some(REVOKED_BEFORE_REGISTRATION),
            Self::Refused { revoked: false } => Some(REGISTRATION_REFUSED),
        }
    }
}

/// The standing of one consent from its registrations, in the order written.
fn standing_of<'a>(rows: impl Iterator<Item = &'a regs::Model>) -> Standing {
    let mut confirmed = false;
    let mut last_refusal: Option<Option<&str>> = None;
    let gating = |r: &&regs::Model| {
        !r.refusal
            .as_deref()
            .is_some_and(|refusal| refusal.starts_with(REFUSED_UNSUPPORTED))
    };
    for row in rows.filter(|r| r.action == "subscribe").filter(gating) {
        match row.status.as_str() {
            "pending" => return Standing::Awaiting,
            "done" => confirmed = true,
            _ => last_refusal = Some(row.refusal.as_deref()),
        }
    }
    match last_refusal {
        Some(refusal) if !confirmed => Standing::Refused {
            revoked: refusal == Some(REFUSED_REVOKED),
        },
        _ => Standing::Confirmed,
    }
}

/// The standing of each of `consents`' registrations.
pub async fn standings<C: ConnectionTrait>(
    db: &C,
    consents: &[Uuid],
) -> Result<HashMap<Uuid, Standing>, CoreError> {
    let mut rows: HashMap<Uuid, Vec<regs::Model>> = HashMap::new();
    for chunk in consents.chunks(500) {
        for row in regs::Entity::find()
            .filter(regs::Column::ConsentId.is_in(chunk.iter().copied()))
            .filter(regs::Column::Action.eq("subscribe"))
            .order_by_asc(regs::Column::Id)
            .all(db)
            .await?
        {
            rows.entry(row.consent_id).or_default().push(row);
        }
    }
    Ok(consents
        .iter()
        .map(|id| {
            let mine = rows.get(id).map(Vec::as_slice).unwrap_or(&[]);
            (*id, standing_of(mine.iter()))
        })
        .collect())
}

/// Makes the customer's sync jobs that wait for a registration due now.
async fn wake_jobs(txn: &DatabaseTransaction, customer: Uuid) -> Result<u64, CoreError> {
    Ok(sync_jobs::Entity::update_many()
        .col_expr(sync_jobs::Column::RunAt, Expr::value(now()))
        .filter(sync_jobs::Column::CustomerId.eq(customer))
        .filter(sync_jobs::Column::Status.eq("pending"))
        .filter(sync_jobs::Column::Outcome.eq(AWAITING))
        .exec(txn)
        .await?
        .rows_affected)
}

/// How long a claim holds before another worker may take the intent over.
pub const LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub done: u64,
    pub retried: u64,
    pub failed: u64,
    /// Of `failed`: refused because the certificate was revoked before the
    /// consent was registered (a review opened, the customer asked to consent again).
    pub revoked_before_registration: u64,
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Seconds before attempt `attempts + 1`: 5 s, 10 s, 20 s, … up to an hour.
pub fn backoff(attempts: i32) -> Duration {
    db::backoff(Duration::from_secs(5), attempts)
}

/// Claims up to `limit` due intents for `owner`. An intent waits while an
/// older one for the same serial is still pending.
async fn claim(
    db: &DatabaseConnection,
    owner: &str,
    limit: u64,
) -> Result<Vec<regs::Model>, CoreError> {
    let at = now();
    let candidates = regs::Entity::find()
        .filter(regs::Column::Status.eq("pending"))
        .filter(regs::Column::RunAt.lte(at))
        .filter(
            Condition::any()
                .add(regs::Column::LeaseExpiresAt.is_null())
                .add(regs::Column::LeaseExpiresAt.lt(at)),
        )
        .order_by_asc(regs::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    let lease_until = at + chrono::Duration::from_std(LEASE).expect("a short lease");
    let mut claimed = Vec::new();
    for candidate in candidates {
        let earlier = regs::Entity::find()
            .filter(regs::Column::CertSerial.eq(&candidate.cert_serial))
            .filter(regs::Column::Status.eq("pending"))
            .filter(regs::Column::Id.lt(candidate.id))
            .one(db)
            .await?;
        if earlier.is_some() {
            continue;
        }
        // The conditional update decides between workers racing for one intent.
        let taken = regs::Entity::update_many()
            .col_expr(regs::Column::LeaseOwner, Expr::value(owner))
            .col_expr(regs::Column::LeaseExpiresAt, Expr::value(lease_until))
            .col_expr(
                regs::Column::Attempts,
                Expr::col(regs::Column::Attempts).add(1),
            )
            .filter(regs::Column::Id.eq(candidate.id))
            .filter(regs::Column::Status.eq("pending"))
            .filter(
                Condition::any()
                    .add(regs::Column::LeaseExpiresAt.is_null())
                    .add(regs::Column::LeaseExpiresAt.lt(at)),
            )
            .exec(db)
            .await?;
        if taken.rows_affected == 1 {
            claimed.push(regs::Model {
                attempts: candidate.attempts + 1,
                lease_owner: Some(owner.to_owned()),
                lease_expires_at: Some(lease_until),
                ..candidate
            });
        }
    }
    Ok(claimed)
}

enum Outcome {
    Done,
    Retry(String),
    /// Refused: why, and the provider's problem type's last segment.
    Failed(String, Option<String>),
}

async fn carry_out(
    db: &DatabaseConnection,
    provider: &dyn Provider,
    intent: &regs::Model,
) -> Result<Outcome, CoreError> {
    let serial = CertSerial::parse(&intent.cert_serial)
        .map_err(|e| CoreError::Corrupt(format!("a registration's serial: {e}")))?;
    let result = match intent.action.as_str() {
        "subscribe" => {
            let consent = consents::Entity::find_by_id(intent.consent_id)
                .one(db)
                .await?
                .ok_or_else(|| CoreError::Corrupt("a registration without its consent".into()))?;
            let subscription = Subscription {
                consent_id: consent.id.to_string(),
                granted_at: consent.granted_at,
                expires_at: consent.expires_at,
            };
            provider.subscribe(&serial, &subscription).await.map(|_| ())
        }
        "unsubscribe" => provider.unsubscribe(&serial).await,
        other => {
            return Err(CoreError::Corrupt(format!(
                "unknown registration action `{other}`"
            )));
        }
    };
    Ok(match result {
        Ok(()) => Outcome::Done,
        Err(ProviderError::Rejected {
            status,
            problem_type,
            detail,
        }) if status != 429 && status < 500 => Outcome::Failed(
            format!("the provider refused it ({status}, {problem_type}): {detail}"),
            problem_type
                .rsplit('/')
                .next()
                .filter(|slug| !slug.is_empty() && slug.len() <= 64)
                .map(str::to_owned),
        ),
        Err(ProviderError::Unsupported {
            provider,
            capability,
        }) => {
            tracing::warn!(
                provider,
                capability,
                registration = %intent.id,
                "the provider does not offer registrations: refused, not retried"
            );
            Outcome::Failed(
                format!("the provider {provider} does not offer {capability}"),
                Some(format!("{REFUSED_UNSUPPORTED}{capability}")),
            )
        }
        Err(e) => Outcome::Retry(e.to_string()),
    })
}

/// Records what became of an intent, if `owner` still holds it; wakes the
/// sync jobs that waited for a subscription carried out or refused.
async fn settle(
    db: &DatabaseConnection,
    notices: &Notices,
    timezone: chrono_tz::Tz,
    owner: &str,
    intent: &regs::Model,
    outcome: Outcome,
) -> Result<bool, CoreError> {
    let at = now();
    let txn = db::begin_write(db).await?;
    let mut update = regs::Entity::update_many()
        .end_lease()
        .filter(regs::Column::Id.eq(intent.id))
        .filter(regs::Column::LeaseOwner.eq(owner))
        .filter(regs::Column::Status.eq("pending"));
    // Only an outcome is audited, not an attempt to be made again.
    let settled = match &outcome {
        Outcome::Done => {
            update = update
                .col_expr(regs::Column::Status, Expr::value("done"))
                .col_expr(regs::Column::CompletedAt, Expr::value(at))
                .col_expr(regs::Column::LastError, Expr::value(Option::<String>::None))
                .col_expr(regs::Column::Refusal, Expr::value(Option::<String>::None));
            true
        }
        Outcome::Retry(why) => {
            let next = at + chrono::Duration::from_std(backoff(intent.attempts)).expect("short");
            update = update
                .col_expr(regs::Column::RunAt, Expr::value(next))
                .col_expr(regs::Column::LastError, Expr::value(why.as_str()));
            false
        }
        Outcome::Failed(why, refusal) => {
            update = update
                .col_expr(regs::Column::Status, Expr::value("failed"))
                .col_expr(regs::Column::CompletedAt, Expr::value(at))
                .col_expr(regs::Column::LastError, Expr::value(why.as_str()))
                .col_expr(regs::Column::Refusal, Expr::value(refusal.clone()));
            true
        }
    };
    if update.exec(&txn).await?.rows_affected != 1 {
        // The lease ran out and another worker took the intent over.
        txn.rollback().await?;
        return Ok(false);
    }
    let mut revoked_before = false;
    if settled {
        let worker = AuditContext::new(Actor::worker(), None);
        let consent = consents::Entity::find_by_id(intent.consent_id)
            .one(&txn)
            .await?;
        let done = RegistrationDone {
            consent_id: intent.consent_id,
            customer_id: consent.as_ref().map(|c| c.customer_id),
            action: intent.action.clone(),
            cert_serial: intent.cert_serial.clone(),
            attempts: intent.attempts,
        };
        let event = match &outcome {
            Outcome::Failed(why, refusal) => Event::ConsentRegistrationFailed(RegistrationFailed {
                registration: done,
                reason: why.clone(),
                refusal: refusal.clone(),
            }),
            _ if intent.action == "subscribe" => Event::ConsentRegistered(done),
            _ => Event::ConsentUnregistered(done),
        };
        let mut events = audit::Batch::default();
        events.push(&worker, event);
        if let (Some(consent), "subscribe") = (&consent, intent.action.as_str()) {
            // Sync jobs that waited for this subscription may go on.
            wake_jobs(&txn, consent.customer_id).await?;
            if matches!(&outcome, Outcome::Failed(_, Some(r)) if r == REFUSED_REVOKED) {
                revoked_before = revoked_before_registration(
                    &txn,
                    &mut events,
                    notices,
                    timezone,
                    consent,
                    intent,
                    at,
                )
                .await?;
            }
        }
        audit::append_batch(&txn, events).await?;
    }
    txn.commit().await?;
    Ok(revoked_before)
}

/// The provider refused to register `consent` because its certificate was
/// revoked before kihon4 could register it: unless the consent is no longer
/// active or the provider holds it under another certificate, a review, and
/// the notice asking the customer to consent again (once per review).
async fn revoked_before_registration(
    txn: &DatabaseTransaction,
    events: &mut audit::Batch,
    notices: &Notices,
    timezone: chrono_tz::Tz,
    consent: &consents::Model,
    intent: &regs::Model,
    at: DateTime<Utc>,
) -> Result<bool, CoreError> {
    let customer = customers::Customer::try_from(customers::lock(txn, consent.customer_id).await?)?;
    let active = crate::consent::records::active_consent(txn, customer.id, at).await?;
    if active.is_none_or(|(c, _)| c.id != consent.id) {
        return Ok(false);
    }
    let standing = standings(txn, &[consent.id]).await?;
    if standing.get(&consent.id) != Some(&Standing::Refused { revoked: true }) {
        return Ok(false);
    }
    let worker = AuditContext::new(Actor::worker(), None);
    let opened = crate::sync::reviews::open(
        txn,
        events,
        &worker,
        customer.id,
        REVOKED_BEFORE_REGISTRATION,
        json!({"consent_id": consent.id, "cert_serial": intent.cert_serial, "registration": intent.id}),
    )
    .await?;
    if opened.is_some() && customer.status != CustomerStatus::Deceased {
        let local = |t: DateTime<Utc>| t.with_timezone(&timezone).date_naive();
        let notice = crate::notices::outbox::enqueue(
            txn,
            notices,
            NewNotice {
                kind: NoticeKind::CertificateRevoked,
                customer_id: Some(customer.id),
                to: &customer.email,
                locale: customer.locale,
                customer_name: customer.basic4.as_ref().map(|b| b.name.as_str()),
                data: json!({
                    "certificate": {"reason_label": revocation_label(customer.locale, "revoked")},
                    "consent": {"valid_until": format_date(
                        customer.locale,
                        local(consent.expires_at) - Days::new(1),
                    )},
                }),
            },
        )
        .await?;
        events.push(
            &worker,
            Event::NoticeQueued(NoticeQueued {
                customer_id: customer.id,
                notice: NoticeRef::new(notice, NoticeKind::CertificateRevoked),
                queued_for: QueuedFor::Consent(consent.id),
            }),
        );
    }
    Ok(true)
}

/// Claims and carries out due intents until none is left or `limit` were tried.
pub async fn run_due(
    db: &DatabaseConnection,
    provider: &dyn Provider,
    notices: &Notices,
    timezone: chrono_tz::Tz,
    owner: &str,
    limit: u64,
) -> Result<Summary, CoreError> {
    let mut summary = Summary::default();
    let mut tried = 0;
    while tried < limit {
        let batch = claim(db, owner, std::cmp::min(limit - tried, 50)).await?;
        if batch.is_empty() {
            break;
        }
        tried += batch.len() as u64;
        for intent in batch {
            let outcome = carry_out(db, provider, &intent).await?;
            match &outcome {
                Outcome::Done => summary.done += 1,
                Outcome::Retry(why) => {
                    tracing::warn!(registration = %intent.id, attempts = intent.attempts, error = %why, "provider registration will be retried");
                    summary.retried += 1;
                }
                Outcome::Failed(why, _) => {
                    tracing::error!(registration = %intent.id, error = %why, "the provider refused a registration");
                    summary.failed += 1;
                }
            }
            if settle(db, notices, timezone, owner, &intent, outcome).await? {
                summary.revoked_before_registration += 1;
            }
        }
    }
    metrics::counter!("kihon4_registrations_total", "outcome" => "done").increment(summary.done);
    metrics::counter!("kihon4_registrations_total", "outcome" => "retried")
        .increment(summary.retried);
    metrics::counter!("kihon4_registrations_total", "outcome" => "failed")
        .increment(summary.failed);
    Ok(summary)
}

/// What an admin's retry of a consent's registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retried {
    /// The registration carried out next: the refused one written again, or
    /// the one waiting for its backoff, now due.
    pub registration: Uuid,
    pub action: String,
    /// `refused` (a new request, the refused one kept) or `waiting` (made due now).
    pub was: &'static str,
}

/// Carries out the consent's latest registration again as soon as the
/// worker looks: a refused one is written anew (the refused one is kept),
/// one waiting for its next attempt after a failure is made due now.
/// [`CoreError::NothingToRetry`] when the latest is done, or pending and
/// not yet tried.
pub async fn retry(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    consent_id: Uuid,
) -> Result<Retried, CoreError> {
    let at = now();
    let txn = db::begin_write(db).await?;
    let consent = consents::Entity::find_by_id(consent_id)
        .one(&txn)
        .await?
        .ok_or(CoreError::NotFound("consent"))?;
    // Two retries at once: the second sees the first's request.
    customers::lock(&txn, consent.customer_id).await?;
    let latest = regs::Entity::find()
        .filter(regs::Column::ConsentId.eq(consent_id))
        .order_by_desc(regs::Column::Id)
        .one(&txn)
        .await?
        .ok_or(CoreError::NothingToRetry)?;
    let retried = match latest.status.as_str() {
        "failed" => {
            let row = crate::consent::records::registration_row(
                consent_id,
                &latest.cert_serial,
                &latest.action,
                at,
            );
            let id = row.id.clone().unwrap();
            regs::Entity::insert(row)
                .exec_without_returning(&txn)
                .await?;
            Retried {
                registration: id,
                action: latest.action.clone(),
                was: "refused",
            }
        }
        "pending" if latest.attempts > 0 && latest.last_error.is_some() => {
            regs::Entity::update_many()
                .col_expr(regs::Column::RunAt, Expr::value(at))
                .filter(regs::Column::Id.eq(latest.id))
                .filter(regs::Column::Status.eq("pending"))
                .exec(&txn)
                .await?;
            Retried {
                registration: latest.id,
                action: latest.action.clone(),
                was: "waiting",
            }
        }
        _ => return Err(CoreError::NothingToRetry),
    };
    let event = Event::ConsentRegistrationRetried(RegistrationRetried {
        consent_id,
        customer_id: consent.customer_id,
        registration: latest.id,
        status: latest.status.clone(),
        attempts: latest.attempts,
        last_error: latest.last_error.clone(),
        retried: retried.registration,
        action: retried.action.clone(),
        cert_serial: latest.cert_serial.clone(),
        run_at: at,
    });
    audit::append(&txn, ctx, event).await?;
    txn.commit().await?;
    Ok(retried)
}

/// How registrations stand across all consents, for the worker's gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    /// Pending, and failed at least once already (the provider could not be reached).
    pub retrying: u64,
    /// Refused and the latest of their consent (nothing will carry them out
    /// unless an admin retries them).
    pub refused: u64,
    /// Seconds since the oldest pending registration was written, or 0.
    pub oldest_pending_seconds: f64,
}

pub async fn backlog(db: &DatabaseConnection) -> Result<Backlog, CoreError> {
    use sea_orm::Statement;
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT \
             (SELECT COUNT(*) FROM provider_registrations WHERE status = 'pending' AND attempts > 0 AND last_error IS NOT NULL) AS retrying, \
             (SELECT COUNT(*) FROM provider_registrations r WHERE r.status = 'failed' AND NOT EXISTS \
               (SELECT 1 FROM provider_registrations n WHERE n.consent_id = r.consent_id AND n.id > r.id)) AS refused",
        ))
        .await?;
    let (retrying, refused) = match row {
        Some(r) => (
            r.try_get::<i64>("", "retrying")?,
            r.try_get::<i64>("", "refused")?,
        ),
        None => (0, 0),
    };
    let oldest = regs::Entity::find()
        .filter(regs::Column::Status.eq("pending"))
        .order_by_asc(regs::Column::CreatedAt)
        .one(db)
        .await?
        .map(|r| r.created_at);
    Ok(Backlog {
        retrying: u64::try_from(retrying).unwrap_or_default(),
        refused: u64::try_from(refused).unwrap_or_default(),
        oldest_pending_seconds: oldest.map_or(0.0, |t| {
            ((Utc::now() - t).num_milliseconds() as f64 / 1000.0).max(0.0)
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(action: &str, status: &str, refusal: Option<&str>) -> regs::Model {
        let at = Utc::now();
        regs::Model {
            id: Uuid::now_v7(),
            consent_id: Uuid::nil(),
            cert_serial: "1a".into(),
            action: action.into(),
            status: status.into(),
            attempts: 1,
            run_at: at,
            lease_owner: None,
            lease_expires_at: None,
            last_error: None,
            created_at: at,
            completed_at: None,
            refusal: refusal.map(str::to_owned),
        }
    }

    #[test]
    fn a_consent_is_confirmed_once_a_subscription_was_carried_out_and_none_waits() {
        let standing = |rows: &[regs::Model]| standing_of(rows.iter());
        // Registered out of band: nothing to wait for.
        assert_eq!(standing(&[]), Standing::Confirmed);
        assert_eq!(
            standing(&[row("subscribe", "pending", None)]),
            Standing::Awaiting
        );
        assert_eq!(
            standing(&[row("subscribe", "done", None)]),
            Standing::Confirmed
        );
        // The new certificate's subscription after a change: wait for it.
        assert_eq!(
            standing(&[
                row("subscribe", "done", None),
                row("unsubscribe", "pending", None),
                row("subscribe", "pending", None),
            ]),
            Standing::Awaiting
        );
        assert_eq!(
            standing(&[row("subscribe", "failed", Some(REFUSED_REVOKED))]),
            Standing::Refused { revoked: true }
        );
        assert_eq!(
            standing(&[row("subscribe", "failed", Some("bad-request"))]),
            Standing::Refused { revoked: false }
        );
        // Refused, then retried and carried out.
        assert_eq!(
            standing(&[
                row("subscribe", "failed", Some(REFUSED_REVOKED)),
                row("subscribe", "done", None),
            ]),
            Standing::Confirmed
        );
        // The provider held it under the old certificate: still confirmed.
        assert_eq!(
            standing(&[
                row("subscribe", "done", None),
                row("subscribe", "failed", Some("bad-request")),
            ]),
            Standing::Confirmed
        );
        assert_eq!(Standing::Awaiting.outcome(), Some(AWAITING));
        assert_eq!(
            Standing::Refused { revoked: true }.outcome(),
            Some(REVOKED_BEFORE_REGISTRATION)
        );
    }
}
