//! Sync runs: requested by an operator, the CLI or the schedule; their jobs
//! enqueued at once (all customers, one customer) or after detection
//! (revoked certificates); completed when no job is left pending.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};
use uuid::Uuid;

use super::{Scope, jobs};
use crate::audit::events::{Event, SyncRunRequested};
use crate::audit::{self, AuditContext};
use crate::db;
use crate::entities::sync_runs;
use crate::error::CoreError;

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A run and how its jobs stand: by outcome for those done, and `pending`
/// and `failed`.
#[derive(Debug, Clone)]
pub struct RunView {
    pub run: sync_runs::Model,
    pub counts: BTreeMap<String, u64>,
    pub jobs: u64,
}

async fn counts<C: ConnectionTrait>(
    db: &C,
    run: Uuid,
) -> Result<(BTreeMap<String, u64>, u64), CoreError> {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DatabaseBackend::Postgres => {
            "SELECT status, outcome, COUNT(*) AS n FROM sync_jobs WHERE run_id = $1 GROUP BY status, outcome"
        }
        _ => {
            "SELECT status, outcome, COUNT(*) AS n FROM sync_jobs WHERE run_id = ? GROUP BY status, outcome"
        }
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, [run.into()]))
        .await?;
    let mut out = BTreeMap::new();
    let mut total = 0;
    for r in rows {
        let status: String = r.try_get("", "status")?;
        let outcome: Option<String> = r.try_get("", "outcome")?;
        let n = u64::try_from(r.try_get::<i64>("", "n")?).unwrap_or_default();
        total += n;
        let key = match (status.as_str(), outcome) {
            ("done" | "pending", Some(outcome)) => outcome,
            (status, _) => status.to_owned(),
        };
        *out.entry(key).or_default() += n;
    }
    Ok((out, total))
}

async fn view<C: ConnectionTrait>(db: &C, run: sync_runs::Model) -> Result<RunView, CoreError> {
    let (counts, jobs) = counts(db, run.id).await?;
    Ok(RunView { run, counts, jobs })
}

/// Starts a run. `all` and `customer` enqueue their jobs now; `revoked`
/// waits in `queued` for the worker's detection.
pub async fn request(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    trigger: &str,
    scope: Scope,
    customer: Option<Uuid>,
) -> Result<RunView, CoreError> {
    let txn = db::begin_write(db).await?;
    let at = now();
    let id = Uuid::now_v7();
    let immediate = scope != Scope::Revoked;
    let targets = match scope {
        Scope::Revoked => Vec::new(),
        Scope::All => jobs::consenting(&txn, None).await?,
        Scope::Customer => {
            let customer = customer.ok_or(CoreError::NotFound("customer"))?;
            crate::customers::get(&txn, customer).await?;
            let found = jobs::consenting(&txn, Some(customer)).await?;
            if found.is_empty() {
                return Err(CoreError::NotConsenting);
            }
            found
        }
    };
    sync_runs::Entity::insert(sync_runs::ActiveModel {
        id: Set(id),
        trigger: Set(trigger.to_owned()),
        scope: Set(scope.as_str().to_owned()),
        customer_id: Set(customer),
        status: Set(if immediate { "running" } else { "queued" }.to_owned()),
        requested_by: Set(ctx.actor.as_str().to_owned()),
        error: Set(None),
        created_at: Set(at),
        started_at: Set(immediate.then_some(at)),
        finished_at: Set(None),
        lease_expires_at: Set(None),
    })
    .exec_without_returning(&txn)
    .await?;
    let enqueued = jobs::enqueue(&txn, id, &targets).await?;
    let event = Event::SyncRunRequested(SyncRunRequested {
        run_id: id,
        customer_id: customer,
        trigger: trigger.to_owned(),
        scope,
        jobs: enqueued,
    });
    audit::append(&txn, ctx, event).await?;
    txn.commit().await?;
    get(db, id).await
}

pub async fn get<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<RunView, CoreError> {
    let run = sync_runs::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(CoreError::NotFound("sync run"))?;
    view(db, run).await
}

/// A page of runs, newest first.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    before: Option<Uuid>,
    limit: u64,
) -> Result<Vec<RunView>, CoreError> {
    let mut query = sync_runs::Entity::find().order_by_desc(sync_runs::Column::Id);
    if let Some(before) = before {
        query = query.filter(sync_runs::Column::Id.lt(before));
    }
    let mut out = Vec::new();
    for run in query.limit(limit).all(db).await? {
        out.push(view(db, run).await?);
    }
    Ok(out)
}

/// The oldest run waiting for detection, or abandoned in it (its lease ran
/// out: the worker died), claimed by moving it to `detecting` under a lease
/// of `lease`. The worker renews the lease with [`renew_detection`] while
/// it detects.
pub async fn take_queued(
    db: &DatabaseConnection,
    lease: std::time::Duration,
) -> Result<Option<sync_runs::Model>, CoreError> {
    use sea_orm::Condition;
    let at = now();
    let until = at + chrono::Duration::from_std(lease).expect("a lease of sane length");
    let waiting = || {
        Condition::any()
            .add(sync_runs::Column::Status.eq("queued"))
            .add(
                Condition::all()
                    .add(sync_runs::Column::Status.eq("detecting"))
                    .add(
                        Condition::any()
                            .add(sync_runs::Column::LeaseExpiresAt.lt(at))
                            .add(sync_runs::Column::LeaseExpiresAt.is_null()),
                    ),
            )
    };
    let queued = sync_runs::Entity::find()
        .filter(waiting())
        .order_by_asc(sync_runs::Column::Id)
        .one(db)
        .await?;
    let Some(run) = queued else {
        return Ok(None);
    };
    let taken = sync_runs::Entity::update_many()
        .col_expr(sync_runs::Column::Status, Expr::value("detecting"))
        .col_expr(sync_runs::Column::StartedAt, Expr::value(at))
        .col_expr(sync_runs::Column::LeaseExpiresAt, Expr::value(until))
        .filter(sync_runs::Column::Id.eq(run.id))
        .filter(waiting())
        .exec(db)
        .await?;
    Ok((taken.rows_affected == 1).then_some(sync_runs::Model {
        status: "detecting".into(),
        started_at: Some(at),
        lease_expires_at: Some(until),
        ..run
    }))
}

/// Extends the lease on a run still in detection; `false` when the run is
/// no longer detecting (another worker took it over and finished).
pub async fn renew_detection(
    db: &DatabaseConnection,
    run: Uuid,
    lease: std::time::Duration,
) -> Result<bool, CoreError> {
    let until = now() + chrono::Duration::from_std(lease).expect("a lease of sane length");
    let renewed = sync_runs::Entity::update_many()
        .col_expr(sync_runs::Column::LeaseExpiresAt, Expr::value(until))
        .filter(sync_runs::Column::Id.eq(run))
        .filter(sync_runs::Column::Status.eq("detecting"))
        .exec(db)
        .await?;
    Ok(renewed.rows_affected == 1)
}

/// Detection found `targets` for `run`: enqueue them and let the run go on.
pub async fn detected(
    db: &DatabaseConnection,
    run: Uuid,
    targets: &[(Uuid, String)],
) -> Result<u64, CoreError> {
    let txn = db::begin_write(db).await?;
    // Only the first of two workers that detected for the run (one taken
    // over while the other was still at it) enqueues.
    let moved = sync_runs::Entity::update_many()
        .col_expr(sync_runs::Column::Status, Expr::value("running"))
        .col_expr(
            sync_runs::Column::LeaseExpiresAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(sync_runs::Column::Id.eq(run))
        .filter(sync_runs::Column::Status.eq("detecting"))
        .exec(&txn)
        .await?;
    if moved.rows_affected != 1 {
        txn.rollback().await?;
        return Ok(0);
    }
    let enqueued = jobs::enqueue(&txn, run, targets).await?;
    txn.commit().await?;
    Ok(enqueued)
}

/// The run could not go on (detection failed): `failed`, with the reason;
/// unless another worker, which took the run over, got further with it.
pub async fn fail(db: &DatabaseConnection, run: Uuid, why: &str) -> Result<(), CoreError> {
    let failed = sync_runs::Entity::update_many()
        .col_expr(sync_runs::Column::Status, Expr::value("failed"))
        .col_expr(sync_runs::Column::Error, Expr::value(why))
        .col_expr(sync_runs::Column::FinishedAt, Expr::value(now()))
        .col_expr(
            sync_runs::Column::LeaseExpiresAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(sync_runs::Column::Id.eq(run))
        .filter(sync_runs::Column::Status.eq("detecting"))
        .exec(db)
        .await?;
    metrics::counter!("kihon4_sync_runs_total", "outcome" => "failed")
        .increment(failed.rows_affected);
    Ok(())
}

/// Marks `completed` every running run with no job left pending, but for
/// those waiting for J-LIS to reissue a certificate (counted as
/// `awaiting_reissue`; they are asked again daily).
pub async fn complete_finished(db: &DatabaseConnection) -> Result<u64, CoreError> {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DatabaseBackend::Postgres => {
            "UPDATE sync_runs SET status = 'completed', finished_at = $1 WHERE status = 'running' \
             AND NOT EXISTS (SELECT 1 FROM sync_jobs j WHERE j.run_id = sync_runs.id AND j.status = 'pending' AND j.outcome IS NULL)"
        }
        _ => {
            "UPDATE sync_runs SET status = 'completed', finished_at = ? WHERE status = 'running' \
             AND NOT EXISTS (SELECT 1 FROM sync_jobs j WHERE j.run_id = sync_runs.id AND j.status = 'pending' AND j.outcome IS NULL)"
        }
    };
    let completed = db
        .execute_raw(Statement::from_sql_and_values(backend, sql, [now().into()]))
        .await?
        .rows_affected();
    metrics::counter!("kihon4_sync_runs_total", "outcome" => "completed").increment(completed);
    Ok(completed)
}

/// When the newest `completed` run of each scope finished, for the scopes
/// that have one (read into `kihon4_sync_last_completed_timestamp_seconds`).
pub async fn last_completed<C: ConnectionTrait>(
    db: &C,
) -> Result<Vec<(String, DateTime<Utc>)>, CoreError> {
    let rows: Vec<(String, Option<DateTime<Utc>>)> = sync_runs::Entity::find()
        .select_only()
        .column(sync_runs::Column::Scope)
        .column_as(sync_runs::Column::FinishedAt.max(), "finished_at")
        .filter(sync_runs::Column::Status.eq("completed"))
        .group_by(sync_runs::Column::Scope)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(scope, at)| at.map(|at| (scope, at)))
        .collect())
}

/// Claims a scheduled tick for `job` at `tick`: true for the one worker
/// process that acts on it, false for every other that saw it.
pub async fn claim_tick(
    db: &DatabaseConnection,
    job: &str,
    tick: DateTime<Utc>,
    owner: &str,
) -> Result<bool, CoreError> {
    use crate::entities::cron_ticks;
    let inserted = cron_ticks::Entity::insert(cron_ticks::ActiveModel {
        job: Set(job.to_owned()),
        tick: Set(tick),
        owner: Set(owner.to_owned()),
        created_at: Set(now()),
    })
    .exec_without_returning(db)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if db::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Takes the queued run `id` for detection; false when another took it.
pub async fn take(
    db: &DatabaseConnection,
    id: Uuid,
    lease: std::time::Duration,
) -> Result<bool, CoreError> {
    let at = now();
    let until = at + chrono::Duration::from_std(lease).expect("a lease of sane length");
    let taken = sync_runs::Entity::update_many()
        .col_expr(sync_runs::Column::Status, Expr::value("detecting"))
        .col_expr(sync_runs::Column::StartedAt, Expr::value(at))
        .col_expr(sync_runs::Column::LeaseExpiresAt, Expr::value(until))
        .filter(sync_runs::Column::Id.eq(id))
        .filter(sync_runs::Column::Status.eq("queued"))
        .exec(db)
        .await?;
    Ok(taken.rows_affected == 1)
}
