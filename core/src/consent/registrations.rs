//! Carrying out registrations with the provider. An HTTP call cannot share
//! the database transaction that grants or withdraws a consent, so that
//! transaction writes an intent, and the worker carries it out: claimed
//! under a lease (an expired lease is taken over), one at a time per
//! certificate serial and in order, retried with backoff while the
//! provider is unreachable, marked `failed` with the reason when the
//! provider refuses it. Subscribing and unsubscribing are idempotent at the
//! provider, so an intent carried out twice after a crash does no harm.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::json;

use crate::audit::{self, Actor, AuditContext, AuditEvent};
use crate::db;
use crate::domain::CertSerial;
use crate::entities::{consents, provider_registrations as regs};
use crate::error::CoreError;
use crate::provider::{Provider, ProviderError, Subscription};

/// How long a claim holds before another worker may take the intent over.
pub const LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub done: u64,
    pub retried: u64,
    pub failed: u64,
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
    Failed(String),
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
        }) if status != 429 && status < 500 => Outcome::Failed(format!(
            "the provider refused it ({status}, {problem_type}): {detail}"
        )),
        Err(e) => Outcome::Retry(e.to_string()),
    })
}

/// Records what became of an intent, if `owner` still holds it.
async fn settle(
    db: &DatabaseConnection,
    owner: &str,
    intent: &regs::Model,
    outcome: Outcome,
) -> Result<(), CoreError> {
    let at = now();
    let txn = db::begin_write(db).await?;
    let mut update = regs::Entity::update_many()
        .col_expr(
            regs::Column::LeaseOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            regs::Column::LeaseExpiresAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(regs::Column::Id.eq(intent.id))
        .filter(regs::Column::LeaseOwner.eq(owner))
        .filter(regs::Column::Status.eq("pending"));
    let event = match &outcome {
        Outcome::Done => {
            update = update
                .col_expr(regs::Column::Status, Expr::value("done"))
                .col_expr(regs::Column::CompletedAt, Expr::value(at))
                .col_expr(regs::Column::LastError, Expr::value(Option::<String>::None));
            let action = if intent.action == "subscribe" {
                "consent.registered"
            } else {
                "consent.unregistered"
            };
            Some(AuditEvent::new(
                action,
                "consent",
                Some(intent.consent_id.to_string()),
            ))
        }
        Outcome::Retry(why) => {
            let next = at + chrono::Duration::from_std(backoff(intent.attempts)).expect("short");
            update = update
                .col_expr(regs::Column::RunAt, Expr::value(next))
                .col_expr(regs::Column::LastError, Expr::value(why.as_str()));
            None
        }
        Outcome::Failed(why) => {
            update = update
                .col_expr(regs::Column::Status, Expr::value("failed"))
                .col_expr(regs::Column::CompletedAt, Expr::value(at))
                .col_expr(regs::Column::LastError, Expr::value(why.as_str()));
            Some(
                AuditEvent::new(
                    "consent.registration_failed",
                    "consent",
                    Some(intent.consent_id.to_string()),
                )
                .set("reason", json!(why)),
            )
        }
    };
    if update.exec(&txn).await?.rows_affected != 1 {
        // The lease ran out and another worker took the intent over.
        txn.rollback().await?;
        return Ok(());
    }
    if let Some(event) = event {
        let customer = consents::Entity::find_by_id(intent.consent_id)
            .one(&txn)
            .await?
            .map(|c| c.customer_id);
        let mut event = event.set(
            "after",
            json!({ "action": intent.action, "cert_serial": intent.cert_serial, "attempts": intent.attempts }),
        );
        if let Some(customer) = customer {
            event = event.with_customer(customer);
        }
        audit::append(&txn, &AuditContext::new(Actor::worker(), None), event).await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Claims and carries out due intents until none is left or `limit` were tried.
pub async fn run_due(
    db: &DatabaseConnection,
    provider: &dyn Provider,
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
                Outcome::Failed(why) => {
                    tracing::error!(registration = %intent.id, error = %why, "the provider refused a registration");
                    summary.failed += 1;
                }
            }
            settle(db, owner, &intent, outcome).await?;
        }
    }
    metrics::counter!("kihon4_registrations_total", "outcome" => "done").increment(summary.done);
    metrics::counter!("kihon4_registrations_total", "outcome" => "retried")
        .increment(summary.retried);
    metrics::counter!("kihon4_registrations_total", "outcome" => "failed")
        .increment(summary.failed);
    Ok(summary)
}
