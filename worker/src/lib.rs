//! kihon4-worker: the scheduled worker. It owns the scheduler and the job
//! loops; the rules it applies live in `kihon4_core`.

use std::sync::Arc;

use kihon4_core::notices::mail::Mailer;
use kihon4_core::provider::Provider;
use sea_orm::DatabaseConnection;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

/// What the worker needs from the process that runs it.
pub struct WorkerSettings {
    pub timezone: chrono_tz::Tz,
    /// The provider, when configured: registrations wait for it.
    pub provider: Option<Arc<dyn Provider>>,
    /// Where notices go.
    pub mailer: Arc<Mailer>,
    /// Where the dispatcher records what it sent ([`kihon4_core::db::connect_relaxed`]).
    pub notices_db: DatabaseConnection,
}

/// Housekeeping: every hour, at minute 17 (away from the top of the hour).
const HOUSEKEEPING_CRON: &str = "0 17 * * * *";
/// Registrations with the provider: every 10 seconds.
const REGISTRATIONS_CRON: &str = "*/10 * * * * *";

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
    if let Some(provider) = settings.provider.clone() {
        let db = db.clone();
        let owner = format!("worker-{}", uuid::Uuid::new_v4());
        let running = Arc::new(tokio::sync::Mutex::new(()));
        scheduler
            .add(Job::new_async_tz(
                REGISTRATIONS_CRON,
                settings.timezone,
                move |_, _| {
                    let (db, provider, owner, running) =
                        (db.clone(), provider.clone(), owner.clone(), running.clone());
                    Box::pin(async move {
                        // A slow round is not overtaken by the next tick.
                        let Ok(_one) = running.try_lock() else {
                            return;
                        };
                        registrations(&db, provider.as_ref(), &owner).await;
                    })
                },
            )?)
            .await?;
    } else {
        tracing::warn!("no provider configured: consent registrations wait until one is");
    }
    scheduler.start().await?;
    let dispatcher = tokio::spawn(dispatch_forever(
        db.clone(),
        settings.notices_db.clone(),
        settings.mailer.clone(),
        shutdown.clone(),
    ));
    tracing::info!(timezone = %settings.timezone, "worker started");
    shutdown.cancelled().await;
    tracing::info!("worker stopping");
    scheduler.shutdown().await?;
    // The notice being sent is finished and recorded; no new one is started.
    dispatcher.await?;
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
    use kihon4_core::notices::outbox::{RETENTION_DAYS, purge_sent};
    match purge_sent(
        db,
        chrono::Utc::now() - chrono::Duration::days(RETENTION_DAYS),
    )
    .await
    {
        Ok(n) => tracing::info!(
            emptied = n,
            "addresses and messages of notices sent over 30 days ago removed"
        ),
        Err(e) => tracing::error!(error = %e, "housekeeping of notices failed"),
    }
}

/// Carries out due registrations with the provider.
pub async fn registrations(db: &DatabaseConnection, provider: &dyn Provider, owner: &str) {
    use kihon4_core::consent::registrations::run_due;
    match run_due(db, provider, owner, 500).await {
        Ok(s) if s.done + s.retried + s.failed > 0 => tracing::info!(
            done = s.done,
            retried = s.retried,
            failed = s.failed,
            "provider registrations carried out"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "provider registrations failed"),
    }
}

/// How often the outbox is looked at when it was found empty.
const DISPATCH_IDLE: std::time::Duration = std::time::Duration::from_secs(2);
/// Notices per round: small, so that a stop is prompt.
const DISPATCH_ROUND: u64 = 20;

/// Sends due notices until `shutdown`: round after round while there is
/// work, every couple of seconds when there is none.
pub async fn dispatch_forever(
    db: DatabaseConnection,
    notices_db: DatabaseConnection,
    mailer: Arc<Mailer>,
    shutdown: CancellationToken,
) {
    use kihon4_core::notices::mail::dispatch_due;
    let owner = format!("dispatcher-{}", uuid::Uuid::new_v4());
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let busy = match dispatch_due(&db, &notices_db, &mailer, &owner, DISPATCH_ROUND, &|| {
            shutdown.is_cancelled()
        })
        .await
        {
            Ok(s) => s.sent + s.retried + s.failed >= DISPATCH_ROUND,
            Err(e) => {
                tracing::error!(error = %e, "notice dispatch failed");
                false
            }
        };
        if let Ok((pending, oldest)) = kihon4_core::notices::outbox::backlog(&db).await {
            metrics::gauge!("kihon4_outbox_pending").set(pending as f64);
            let age = oldest.map_or(0.0, |t| {
                (chrono::Utc::now() - t).num_milliseconds() as f64 / 1000.0
            });
            metrics::gauge!("kihon4_outbox_oldest_pending_seconds").set(age);
        }
        if !busy {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(DISPATCH_IDLE) => {}
            }
        }
    }
}
