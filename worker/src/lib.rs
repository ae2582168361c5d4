//! kihon4-worker: the scheduled worker. It owns the scheduler and the job
//! loops; the rules it applies live in `kihon4_core`.

use sea_orm::DatabaseConnection;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

/// What the worker needs from the process that runs it.
pub struct WorkerSettings {
    pub timezone: chrono_tz::Tz,
}

/// Housekeeping: every hour, at minute 17 (away from the top of the hour).
const HOUSEKEEPING_CRON: &str = "0 17 * * * *";

/// Runs the worker until `shutdown` is cancelled, then stops its scheduler
/// and returns once no job is running.
pub async fn run(
    db: DatabaseConnection,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut scheduler = JobScheduler::new().await?;
    let housekeeping_db = db.clone();
    scheduler
        .add(Job::new_async_tz(
            HOUSEKEEPING_CRON,
            settings.timezone,
            move |_, _| {
                let db = housekeeping_db.clone();
                Box::pin(async move { housekeeping(&db).await })
            },
        )?)
        .await?;
    scheduler.start().await?;
    tracing::info!(timezone = %settings.timezone, "worker started");
    shutdown.cancelled().await;
    tracing::info!("worker stopping");
    scheduler.shutdown().await?;
    tracing::info!("worker stopped");
    Ok(())
}

/// Removes what is kept only for a while. Deleting is idempotent, so ticks
/// seen by several worker processes need no coordination.
pub async fn housekeeping(db: &DatabaseConnection) {
    use kihon4_core::idempotency::{RETENTION_HOURS, purge};
    match purge(
        db,
        chrono::Utc::now(),
        chrono::Duration::hours(RETENTION_HOURS),
    )
    .await
    {
        Ok(n) => tracing::info!(removed = n, "idempotency keys past retention removed"),
        Err(e) => tracing::error!(error = %e, "housekeeping failed"),
    }
}
