//! Sync jobs: one per customer to ask the provider about. Enqueued once per
//! customer in flight (a partial unique index), claimed in batches under
//! leases (`FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite the write
//! transaction admits one claimer at a time), asked about in one provider
//! call per batch, outside any transaction, and the answers applied together
//! with the jobs' records, a batch per transaction (see [`apply`]).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, QueryFilter,
    Statement,
};
use uuid::Uuid;

use super::SyncSettings;
use super::apply;
use crate::consent::registrations::{self, AWAITING, Standing};
use crate::db;
use crate::db::EndLease;
use crate::domain::CertSerial;
use crate::entities::sync_jobs;
use crate::error::CoreError;
use crate::notices::Notices;
use crate::provider::Provider;

/// Attempts before a job is given up as `failed`.
pub const MAX_ATTEMPTS: i32 = 8;
/// Jobs asked about in one provider call.
const BATCH: u64 = 100;

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// 30 s, 60 s, … up to an hour.
pub fn backoff(attempts: i32) -> Duration {
    db::backoff(Duration::from_secs(30), attempts)
}

fn placeholders(backend: DatabaseBackend, first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| db::placeholder(backend, i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The customers with an active consent, and the certificate each record is
/// tied to; only `customer` when given. The deceased are left out.
pub async fn consenting<C: ConnectionTrait>(
    db: &C,
    customer: Option<Uuid>,
) -> Result<Vec<(Uuid, String)>, CoreError> {
    let backend = db.get_database_backend();
    let p = |i: usize| placeholders(backend, i, 1);
    let mut sql = format!(
        "SELECT cu.id AS customer_id, cu.jpki_cert_serial AS serial FROM customers cu \
         WHERE cu.status <> 'deceased' AND cu.jpki_cert_serial IS NOT NULL \
         AND EXISTS (SELECT 1 FROM consents c WHERE c.customer_id = cu.id AND c.expires_at > {} \
         AND NOT EXISTS (SELECT 1 FROM consent_events e WHERE e.consent_id = c.id \
         AND e.kind IN ('withdrawn', 'renewed', 'expired')))",
        p(1)
    );
    let mut values: Vec<sea_orm::Value> = vec![now().into()];
    if let Some(id) = customer {
        sql.push_str(&format!(" AND cu.id = {}", p(2)));
        values.push(id.into());
    }
    sql.push_str(" ORDER BY cu.id");
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<Uuid>("", "customer_id")?,
                r.try_get::<String>("", "serial")?,
            ))
        })
        .collect()
}

/// Enqueues a job per customer in `run`, skipping customers that already
/// have one in flight. Returns how many were enqueued.
pub async fn enqueue<C: ConnectionTrait>(
    txn: &C,
    run: Uuid,
    customers: &[(Uuid, String)],
) -> Result<u64, CoreError> {
    let backend = txn.get_database_backend();
    let at = now();
    let mut enqueued = 0;
    for chunk in customers.chunks(500) {
        let mut rows = Vec::with_capacity(chunk.len());
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 7);
        for (i, (customer, serial)) in chunk.iter().enumerate() {
            rows.push(format!(
                "({}, 'pending', 0)",
                placeholders(backend, i * 6 + 1, 6)
            ));
            values.extend([
                Uuid::now_v7().into(),
                run.into(),
                (*customer).into(),
                serial.clone().into(),
                at.into(),
                at.into(),
            ]);
        }
        let sql = format!(
            "INSERT INTO sync_jobs (id, run_id, customer_id, cert_serial, run_at, created_at, status, attempts) \
             VALUES {} ON CONFLICT DO NOTHING",
            rows.join(", ")
        );
        enqueued += txn
            .execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?
            .rows_affected();
    }
    Ok(enqueued)
}

/// Claims up to `limit` due jobs for `owner`.
pub async fn claim(
    db: &DatabaseConnection,
    owner: &str,
    limit: u64,
    lease: Duration,
) -> Result<Vec<sync_jobs::Model>, CoreError> {
    let mut rows = db::claim_due::<sync_jobs::Entity>(db, "sync_jobs", owner, limit, lease).await?;
    rows.sort_by_key(|r| (r.run_at, r.id));
    Ok(rows)
}

/// How long a job waiting for its consent's registration waits before it
/// is looked at again, unless the registration wakes it first.
pub const REGISTRATION_WAIT: Duration = Duration::from_secs(60);

/// The registration standing of each job's customer's active consent
/// (customers without one are left out: their answers change nothing).
async fn registration_standings(
    db: &DatabaseConnection,
    batch: &[sync_jobs::Model],
) -> Result<std::collections::HashMap<Uuid, Standing>, CoreError> {
    let customers: Vec<Uuid> = batch.iter().map(|j| j.customer_id).collect();
    let active = crate::consent::records::active_consents(db, &customers, now()).await?;
    let consents: Vec<Uuid> = active.values().map(|(c, _)| c.id).collect();
    let standings = registrations::standings(db, &consents).await?;
    Ok(active
        .into_iter()
        .filter_map(|(customer, (consent, _))| standings.get(&consent.id).map(|s| (customer, *s)))
        .collect())
}

/// Puts off a job whose consent the provider has not confirmed yet: not
/// asked about, not an attempt, counted as `awaiting_registration` (the run
/// completes without it). The registration wakes it when carried out or
/// refused; otherwise it is looked at again after [`REGISTRATION_WAIT`].
/// `false` when the job is no longer ours.
pub async fn defer_for_registration<C: ConnectionTrait>(
    db: &C,
    owner: &str,
    job: &sync_jobs::Model,
) -> Result<bool, CoreError> {
    let later = now() + chrono::Duration::from_std(REGISTRATION_WAIT).expect("short");
    let updated = sync_jobs::Entity::update_many()
        .col_expr(sync_jobs::Column::RunAt, Expr::value(later))
        .col_expr(
            sync_jobs::Column::Attempts,
            Expr::value((job.attempts - 1).max(0)),
        )
        .end_lease()
        .col_expr(sync_jobs::Column::Outcome, Expr::value(AWAITING))
        .col_expr(
            sync_jobs::Column::LastError,
            Expr::value(Option::<String>::None),
        )
        .filter(sync_jobs::Column::Id.eq(job.id))
        .filter(sync_jobs::Column::LeaseOwner.eq(owner))
        .filter(sync_jobs::Column::Status.eq("pending"))
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// A job done without asking the provider, with `outcome`.
async fn conclude<C: ConnectionTrait>(
    db: &C,
    owner: &str,
    job: &sync_jobs::Model,
    outcome: &str,
) -> Result<bool, CoreError> {
    let updated = sync_jobs::Entity::update_many()
        .col_expr(sync_jobs::Column::Status, Expr::value("done"))
        .col_expr(sync_jobs::Column::Outcome, Expr::value(outcome))
        .col_expr(sync_jobs::Column::FinishedAt, Expr::value(now()))
        .end_lease()
        .filter(sync_jobs::Column::Id.eq(job.id))
        .filter(sync_jobs::Column::LeaseOwner.eq(owner))
        .filter(sync_jobs::Column::Status.eq("pending"))
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// The outcome of a sync job the provider cannot answer at all (it does
/// not offer the latest four items): a `provider_capability_unsupported`
/// review is opened for its customer.
pub const UNSUPPORTED: &str = "capability_unsupported";

/// The review kind for a customer the provider cannot be asked about.
pub const UNSUPPORTED_REVIEW: &str = "provider_capability_unsupported";

/// Ends `job` as [`UNSUPPORTED`] with a review naming the provider and the
/// capability, in one transaction; `false` when the job is no longer ours.
async fn review_unsupported(
    db: &DatabaseConnection,
    owner: &str,
    job: &sync_jobs::Model,
    provider: &str,
    capability: &str,
) -> Result<bool, CoreError> {
    use crate::audit::{self, Actor, AuditContext};
    let txn = db::begin_write(db).await?;
    if !conclude(&txn, owner, job, UNSUPPORTED).await? {
        txn.rollback().await?;
        return Ok(false);
    }
    let mut events = audit::Batch::default();
    super::reviews::open(
        &txn,
        &mut events,
        &AuditContext::new(Actor::worker(), None),
        job.customer_id,
        UNSUPPORTED_REVIEW,
        serde_json::json!({
            "provider": provider,
            "capability": capability,
            "cert_serial": job.cert_serial,
            "run_id": job.run_id,
        }),
    )
    .await?;
    audit::append_batch(&txn, events).await?;
    txn.commit().await?;
    Ok(true)
}

/// A job that could not be done now: tried again later, or given up.
async fn retry(
    db: &DatabaseConnection,
    owner: &str,
    job: &sync_jobs::Model,
    why: &str,
) -> Result<bool, CoreError> {
    let at = now();
    let give_up = job.attempts >= MAX_ATTEMPTS;
    let next = at + chrono::Duration::from_std(backoff(job.attempts)).expect("short");
    let mut update = sync_jobs::Entity::update_many()
        .end_lease()
        .col_expr(sync_jobs::Column::LastError, Expr::value(why))
        .filter(sync_jobs::Column::Id.eq(job.id))
        .filter(sync_jobs::Column::LeaseOwner.eq(owner))
        .filter(sync_jobs::Column::Status.eq("pending"));
    update = if give_up {
        update
            .col_expr(sync_jobs::Column::Status, Expr::value("failed"))
            .col_expr(sync_jobs::Column::FinishedAt, Expr::value(at))
    } else {
        update.col_expr(sync_jobs::Column::RunAt, Expr::value(next))
    };
    update.exec(db).await?;
    Ok(give_up)
}

/// What a round did: answers applied, by outcome, and jobs retried or given up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub outcomes: BTreeMap<String, u64>,
    pub retried: u64,
    pub failed: u64,
}

impl Summary {
    pub fn applied(&self) -> u64 {
        self.outcomes.values().sum()
    }
}

/// Claims due jobs in batches, asks the provider about each batch in one
/// call, and applies every answer; stops when none is due or after `limit`.
pub async fn process_due(
    db: &DatabaseConnection,
    provider: &dyn Provider,
    notices: &Notices,
    settings: SyncSettings,
    owner: &str,
    limit: u64,
) -> Result<Summary, CoreError> {
    let mut summary = Summary::default();
    let mut tried = 0;
    while tried < limit {
        let batch = claim(
            db,
            owner,
            std::cmp::min(limit - tried, BATCH),
            settings.lease,
        )
        .await?;
        if batch.is_empty() {
            break;
        }
        tried += batch.len() as u64;
        // Nothing is concluded about a consent the provider has not
        // confirmed: its job waits, unasked, or ends as the refusal says.
        let standings = registration_standings(db, &batch).await?;
        let mut asking = Vec::with_capacity(batch.len());
        for job in batch {
            let standing = standings
                .get(&job.customer_id)
                .copied()
                .unwrap_or(Standing::Confirmed);
            let settled = match standing.outcome() {
                None => {
                    asking.push(job);
                    continue;
                }
                Some(AWAITING) => defer_for_registration(db, owner, &job).await?,
                Some(outcome) => conclude(db, owner, &job, outcome).await?,
            };
            if settled {
                let outcome = standing.outcome().expect("not confirmed");
                *summary.outcomes.entry(outcome.to_owned()).or_default() += 1;
            }
        }
        let batch = asking;
        if batch.is_empty() {
            continue;
        }
        let mut serials = Vec::with_capacity(batch.len());
        for job in &batch {
            serials.push(
                CertSerial::parse(&job.cert_serial)
                    .map_err(|e| CoreError::Corrupt(format!("a job's serial: {e}")))?,
            );
        }
        let asked = provider.latest_basic4(&serials).await.and_then(|answers| {
            if answers.len() == batch.len() {
                Ok(answers)
            } else {
                Err(crate::provider::ProviderError::Unexpected(
                    "the provider answered another number of queries".into(),
                ))
            }
        });
        let answers = match asked {
            Ok(answers) => answers,
            // Asking again will not help: a person decides, once per customer.
            Err(crate::provider::ProviderError::Unsupported {
                provider,
                capability,
            }) => {
                tracing::warn!(
                    provider,
                    capability,
                    jobs = batch.len(),
                    "the provider does not offer the latest four items: each job goes to a review"
                );
                for job in &batch {
                    if review_unsupported(db, owner, job, provider, capability).await? {
                        *summary.outcomes.entry(UNSUPPORTED.to_owned()).or_default() += 1;
                    }
                }
                continue;
            }
            Err(e) => {
                let why = e.to_string();
                tracing::warn!(jobs = batch.len(), error = %why, "the provider could not be asked; jobs wait");
                for job in &batch {
                    if retry(db, owner, job, &why).await? {
                        summary.failed += 1;
                    } else {
                        summary.retried += 1;
                    }
                }
                continue;
            }
        };
        let pairs: Vec<_> = batch
            .iter()
            .zip(answers.iter().map(|a| &a.latest))
            .collect();
        let results = apply::apply_batch(db, notices, settings, owner, &pairs).await;
        for (job, result) in batch.iter().zip(results) {
            match result {
                Ok(Some(outcome)) => *summary.outcomes.entry(outcome.to_owned()).or_default() += 1,
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(job = %job.id, error = %e, "an answer could not be applied; the job waits");
                    if retry(db, owner, job, &e.to_string()).await? {
                        summary.failed += 1;
                    } else {
                        summary.retried += 1;
                    }
                }
            }
        }
    }
    for (outcome, n) in &summary.outcomes {
        metrics::counter!("kihon4_sync_jobs_total", "outcome" => outcome.clone()).increment(*n);
    }
    metrics::counter!("kihon4_sync_jobs_total", "outcome" => "retried").increment(summary.retried);
    metrics::counter!("kihon4_sync_jobs_total", "outcome" => "failed").increment(summary.failed);
    Ok(summary)
}
