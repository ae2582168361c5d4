//! kihon4-worker: the scheduled worker. It owns the scheduler and the job
//! loops; the rules it applies live in `kihon4_core`.

use sea_orm::DatabaseConnection;
use tokio_cron_scheduler::JobScheduler;
use tokio_util::sync::CancellationToken;

/// What the worker needs from the process that runs it.
pub struct WorkerSettings {
    pub timezone: chrono_tz::Tz,
}

/// Runs the worker until `shutdown` is cancelled, then stops its scheduler
/// and returns once no job is running.
pub async fn run(
    _db: DatabaseConnection,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut scheduler = JobScheduler::new().await?;
    scheduler.start().await?;
    tracing::info!(timezone = %settings.timezone, "worker started");
    shutdown.cancelled().await;
    tracing::info!("worker stopping");
    scheduler.shutdown().await?;
    tracing::info!("worker stopped");
    Ok(())
}
