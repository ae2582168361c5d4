//! kihon4-worker: the scheduled worker. It owns the scheduler and the job
//! loops; the rules it applies live in `kihon4_core`.

use std::sync::Arc;

use kihon4_core::audit::{Actor, AuditContext};
use kihon4_core::notices::Notices;
use kihon4_core::notices::mail::Mailer;
use kihon4_core::provider::Provider;
use kihon4_core::sync::driver::{Driver, Plan};
use kihon4_core::sync::{self, Scope, SyncSettings};
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
    /// The notices' templates, for the notices sync writes.
    pub notices: Arc<Notices>,
    /// How revoked certificates are found.
    pub detection: Detection,
    pub sync: SyncSettings,
    /// When detection and the full refresh run (six-field cron expressions).
    pub detect_cron: String,
    pub full_refresh_cron: String,
    /// Mynaportal consent requests (their links), when a provider is configured.
    pub consent_requests: Option<kihon4_core::consent::requests::RequestSettings>,
    /// Days after a consent request when its reminders go out.
    pub reminder_days: Vec<u32>,
    /// Signs the daily checkpoint of the audit chain.
    pub audit_key: Option<Arc<kihon4_core::audit_export::SigningKey>>,
    /// How the change feed is delivered to webhook endpoints.
    pub webhooks: kihon4_core::changes::delivery::DeliverySettings,
    /// The daily change file, when a folder is configured.
    pub changes_file: Option<kihon4_core::changes::file::FileSettings>,
    /// Days change events are kept.
    pub change_feed_retention_days: i64,
    /// How often new audit events are sealed into the audit log
    /// (`KIHON4_AUDIT_LOG_SEAL_INTERVAL_MS`).
    pub audit_log_seal_interval: std::time::Duration,
    /// The witnesses checkpoints are sent to (`KIHON4_AUDIT_LOG_WITNESSES`).
    pub audit_log_witnesses: Vec<kihon4_core::audit_log::witness::WitnessEndpoint>,
}

impl WorkerSettings {
    /// The worker's settings, from the configuration and what the process
    /// shares between its roles: its provider client ([`provider`]), its
    /// mailer and its own connection for the dispatcher are made here. The
    /// only place `WorkerSettings` are assembled.
    pub async fn from_config(
        config: &kihon4_core::config::Config,
        shared: &kihon4_core::shared::Shared,
    ) -> anyhow::Result<Self> {
        let schedules = config.schedules();
        check_schedule(
            "KIHON4_SYNC_DETECT_CRON",
            &schedules.detect_cron,
            schedules.timezone,
        )?;
        check_schedule(
            "KIHON4_SYNC_FULL_REFRESH_CRON",
            &schedules.full_refresh_cron,
            schedules.timezone,
        )?;
        let changes_file = config.changes_file();
        if let Some(file) = &changes_file {
            check_schedule("KIHON4_CHANGES_FILE_CRON", &file.cron, schedules.timezone)?;
        }
        let notices_db = {
            use secrecy::ExposeSecret;
            kihon4_core::db::connect_relaxed(config.audit().database_url.expose_secret())
                .await
                .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))?
        };
        let provider = provider(config).map_err(anyhow::Error::msg)?;
        let mailer = Arc::new(config.mail().mailer().map_err(anyhow::Error::msg)?);
        Ok(Self {
            timezone: schedules.timezone,
            consent_requests: provider.as_ref().map(|_| config.consent_requests()),
            provider,
            mailer,
            notices_db,
            notices: shared.notices.clone(),
            detection: Detection::new(config.settings.role, shared.anchors.clone()),
            sync: config.sync(),
            detect_cron: schedules.detect_cron,
            full_refresh_cron: schedules.full_refresh_cron,
            reminder_days: config.settings.consent_request_reminder_days.clone(),
            audit_key: shared.audit_key.clone(),
            webhooks: config.webhooks(),
            changes_file,
            change_feed_retention_days: config.settings.change_feed_retention_days,
            audit_log_seal_interval: config.settings.audit_log_seal_interval_ms,
            audit_log_witnesses: config.settings.audit_log_witnesses.clone(),
        })
    }
}

/// The provider client the worker (and the CLI's runs) use, when one is
/// configured: it waits out maintenance windows.
pub fn provider(config: &kihon4_core::config::Config) -> Result<Option<Arc<dyn Provider>>, String> {
    use kihon4_core::provider::{ProviderSettings, connect};
    let Some(upstream) = config.upstream()? else {
        return Ok(None);
    };
    // The adapter of the configured kind (KIHON4_PROVIDER_KIND).
    let settings = ProviderSettings::new(upstream.url, upstream.api_key);
    connect(upstream.kind, settings, upstream.check_method).map(Some)
}

/// How the worker finds customers whose certificate is no longer valid
/// (the sync driver's).
pub use kihon4_core::sync::driver::Detection;

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
    let (housekeeping_notices, timezone) = (settings.notices.clone(), settings.timezone);
    let requests = Arc::new((
        settings.consent_requests.clone(),
        settings.reminder_days.clone(),
    ));
    let audit_key = settings.audit_key.clone();
    let retention_days = settings.change_feed_retention_days;
    scheduler
        .add(Job::new_async_tz(
            HOUSEKEEPING_CRON,
            settings.timezone,
            move |_, _| {
                let (db, notices) = (housekeeping_db.clone(), housekeeping_notices.clone());
                let requests = requests.clone();
                let audit_key = audit_key.clone();
                Box::pin(async move {
                    housekeeping(&db, &notices, timezone).await;
                    purge_changes(&db, retention_days).await;
                    if let Some(key) = &audit_key {
                        daily_checkpoint(&db, key).await;
                    }
                    if let Some(settings) = &requests.0 {
                        consent_requests(&db, &notices, settings, &requests.1).await;
                    }
                })
            },
        )?)
        .await?;
    // Scheduled runs: each tick is acted on by one worker process, however many see it.
    let owner = format!("worker-{}", uuid::Uuid::new_v4());
    for (name, expression, scope) in [
        ("sync.detect", settings.detect_cron.clone(), Scope::Revoked),
        (
            "sync.full_refresh",
            settings.full_refresh_cron.clone(),
            Scope::All,
        ),
    ] {
        let (db, owner) = (db.clone(), owner.clone());
        let job = Job::new_async_tz(expression.as_str(), settings.timezone, move |_, _| {
            let (db, owner) = (db.clone(), owner.clone());
            Box::pin(async move { scheduled_run(&db, name, scope, &owner).await })
        })
        .map_err(|e| anyhow::anyhow!("the schedule `{expression}` for {name}: {e}"))?;
        scheduler.add(job).await?;
    }
    let driver = settings.provider.clone().map(|provider| Driver {
        provider,
        notices: settings.notices.clone(),
        detection: settings.detection.clone(),
        settings: settings.sync,
        owner: format!("sync-{}", uuid::Uuid::new_v4()),
    });
    let syncing = driver
        .clone()
        .map(|driver| tokio::spawn(sync_forever(db.clone(), driver, shutdown.clone())));
    if let Some(driver) = driver {
        let db = db.clone();
        // Registrations are claimed as the worker's, apart from its sync rounds.
        let driver = Arc::new(Driver {
            owner: format!("worker-{}", uuid::Uuid::new_v4()),
            ..driver
        });
        let running = Arc::new(tokio::sync::Mutex::new(()));
        scheduler
            .add(Job::new_async_tz(
                REGISTRATIONS_CRON,
                settings.timezone,
                move |_, _| {
                    let (db, driver, running) = (db.clone(), driver.clone(), running.clone());
                    Box::pin(async move {
                        // A slow round is not overtaken by the next tick.
                        let Ok(_one) = running.try_lock() else {
                            return;
                        };
                        registrations(&db, &driver).await;
                    })
                },
            )?)
            .await?;
    } else {
        tracing::warn!("no provider configured: consent registrations wait until one is");
    }
    if let Some(file) = settings.changes_file.clone() {
        let (db, owner, timezone) = (db.clone(), owner.clone(), settings.timezone);
        let cron = file.cron.clone();
        let file = Arc::new(file);
        let job = Job::new_async_tz(cron.as_str(), settings.timezone, move |_, _| {
            let (db, owner, file) = (db.clone(), owner.clone(), file.clone());
            Box::pin(async move { daily_change_file(&db, &file, timezone, &owner).await })
        })?;
        scheduler.add(job).await?;
    }
    scheduler.start().await?;
    let sender = kihon4_core::changes::delivery::Sender::new(settings.webhooks)
        .map_err(anyhow::Error::msg)?;
    let delivering = tokio::spawn(deliver_forever(db.clone(), sender, shutdown.clone()));
    let sealing = match settings.audit_key.clone() {
        Some(key) => Some(tokio::spawn(seal_forever(
            db.clone(),
            key,
            settings.audit_log_seal_interval,
            settings.audit_log_witnesses.clone(),
            shutdown.clone(),
        ))),
        None => {
            tracing::warn!("no audit signing key: the audit log is not sealed by this worker");
            None
        }
    };
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
    delivering.await?;
    if let Some(sealing) = sealing {
        sealing.await?;
    }
    if let Some(syncing) = syncing {
        syncing.await?;
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Removes what is kept only for a while. Deleting is idempotent, so ticks
/// seen by several worker processes need no coordination.
pub async fn housekeeping(db: &DatabaseConnection, notices: &Notices, timezone: chrono_tz::Tz) {
    match kihon4_core::consent::housekeeping::run(db, notices, timezone, None).await {
        Ok(s) => tracing::info!(
            expired = s.expired,
            reminded = s.reminded,
            renewal_requested = s.renewal_requested,
            "consents looked after"
        ),
        Err(e) => tracing::error!(error = %e, "housekeeping of consents failed"),
    }
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
    match kihon4_core::refusals::seal_closed(db, chrono::Utc::now()).await {
        Ok(n) => tracing::info!(appended = n, "closed windows of refused requests sealed"),
        Err(e) => tracing::error!(error = %e, "sealing refused requests failed"),
    }
}

/// Removes change events past their retention, and the deliveries and
/// attempts of that age.
pub async fn purge_changes(db: &DatabaseConnection, retention_days: i64) {
    let before = chrono::Utc::now() - chrono::Duration::days(retention_days);
    match kihon4_core::changes::purge(db, before).await {
        Ok(n) if n > 0 => tracing::info!(removed = n, "change events past retention removed"),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "change events could not be purged"),
    }
    match kihon4_core::changes::delivery::purge(db, before).await {
        Ok(n) if n > 0 => tracing::info!(removed = n, "webhook deliveries past retention removed"),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "webhook deliveries could not be purged"),
    }
}

/// The daily change file: at its tick, the file of yesterday (in the
/// configured zone) when that was a business day; one worker writes it,
/// however many see the tick.
pub async fn daily_change_file(
    db: &DatabaseConnection,
    file: &kihon4_core::changes::file::FileSettings,
    timezone: chrono_tz::Tz,
    owner: &str,
) {
    use chrono::DurationRound;
    use kihon4_core::changes::file::{export, is_business_day};
    let tick = chrono::Utc::now()
        .duration_round(chrono::Duration::minutes(1))
        .unwrap_or_else(|_| chrono::Utc::now());
    match sync::runs::claim_tick(db, "changes.file", tick, owner).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!(error = %e, "the change file's tick could not be claimed");
            return;
        }
    }
    let today = chrono::Utc::now().with_timezone(&timezone).date_naive();
    let Some(day) = today.pred_opt() else { return };
    if !is_business_day(day, &file.holidays) {
        tracing::debug!(%day, "not a business day: its events go into the next business day's file");
        return;
    }
    let ctx = AuditContext::new(Actor::worker(), None);
    match export(db, &ctx, file, day, &|_, _| {}).await {
        Ok(w) => {
            tracing::info!(%day, events = w.events, file = %w.csv.display(), "daily change file written")
        }
        Err(e) => {
            metrics::counter!("kihon4_changes_file_failures_total").increment(1);
            tracing::error!(%day, error = %e, "the daily change file could not be written")
        }
    }
}

/// Deliveries per round.
const DELIVERY_ROUND: u64 = 64;
/// How often the feed is looked at when there was nothing to deliver.
const DELIVERY_IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// Delivers the change feed to webhook endpoints until `shutdown`: round
/// after round while there is work, every half second when there is none.
/// A round in flight is finished and recorded.
/// Seals the audit events committed since the last round into the audit
/// log and signs its checkpoint, every `every`, until `shutdown`; then
/// sends the newest checkpoint to each witness that has not cosigned it
/// (a witness that failed is tried again after a minute). Any number of
/// workers may run it: one seals at a time (docs/architecture.md, "The
/// audit log"), and a killed one loses nothing, since what it would have
/// sealed is sealed by the next round of any worker.
pub async fn seal_forever(
    db: DatabaseConnection,
    key: Arc<kihon4_core::audit_export::SigningKey>,
    every: std::time::Duration,
    witnesses: Vec<kihon4_core::audit_log::witness::WitnessEndpoint>,
    shutdown: CancellationToken,
) {
    use kihon4_core::audit_log::witness::submit;
    use kihon4_core::audit_log::{SEAL_BATCH, seal::seal};
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    let mut retry_at: std::collections::HashMap<String, std::time::Instant> = Default::default();
    loop {
        // Round after round until caught up (a large backlog, after an
        // upgrade, takes several), stopping between rounds when told to.
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match seal(&db, &key, SEAL_BATCH).await {
                Ok(Some(sealed)) => {
                    tracing::debug!(tree_size = sealed.tree_size, "audit log sealed");
                    metrics::gauge!("kihon4_audit_log_tree_size").set(sealed.tree_size as f64);
                    metrics::gauge!("kihon4_audit_log_sealed_timestamp_seconds")
                        .set(chrono::Utc::now().timestamp() as f64);
                    if sealed.added < SEAL_BATCH {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "the audit log could not be sealed");
                    break;
                }
            }
        }
        let now = std::time::Instant::now();
        let due: Vec<_> = witnesses
            .iter()
            .filter(|w| retry_at.get(&w.id()).is_none_or(|at| *at <= now))
            .collect();
        if !due.is_empty() {
            // The log's keys as registered: a rotated key signs under the
            // log's origin, not its own default.
            let vkeys = match kihon4_core::audit_log::keys::list(&db).await {
                Ok(keys) if !keys.is_empty() => keys
                    .iter()
                    .map(|k| k.vkey.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => kihon4_core::audit_log::verifier_key(&key),
            };
            match submit(&db, &vkeys, &due, &http).await {
                Ok(done) => {
                    for id in done.cosigned {
                        retry_at.remove(&id);
                    }
                    for (id, why) in done.failed {
                        tracing::warn!(witness = %id, reason = %why, "a witness did not cosign the audit log's checkpoint");
                        metrics::counter!("kihon4_audit_log_witness_failures_total").increment(1);
                        retry_at.insert(id, now + std::time::Duration::from_secs(60));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the audit log's checkpoint could not be sent to witnesses")
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

pub async fn deliver_forever(
    db: DatabaseConnection,
    sender: kihon4_core::changes::delivery::Sender,
    shutdown: CancellationToken,
) {
    use kihon4_core::changes::delivery::{backlog, deliver_due};
    let owner = format!("webhooks-{}", uuid::Uuid::new_v4());
    let mut last_gauge = std::time::Instant::now() - std::time::Duration::from_secs(60);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let busy = match deliver_due(&db, &sender, &owner, DELIVERY_ROUND).await {
            Ok(s) => {
                if s.endpoints_disabled > 0 {
                    tracing::warn!(
                        disabled = s.endpoints_disabled,
                        "webhook endpoints disabled"
                    );
                }
                s.attempted() > 0
            }
            Err(e) => {
                tracing::error!(error = %e, "webhook delivery failed");
                false
            }
        };
        if last_gauge.elapsed() >= std::time::Duration::from_secs(5) {
            last_gauge = std::time::Instant::now();
            if let Ok((pending, oldest)) = backlog(&db).await {
                metrics::gauge!("kihon4_webhook_deliveries_pending").set(pending as f64);
                let lag = oldest.map_or(0.0, |t| {
                    (chrono::Utc::now() - t).num_milliseconds() as f64 / 1000.0
                });
                metrics::gauge!("kihon4_webhook_oldest_pending_seconds").set(lag);
            }
        }
        if !busy {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(DELIVERY_IDLE) => {}
            }
        }
    }
}

/// A signed checkpoint of the audit chain head, once a day.
pub async fn daily_checkpoint(
    db: &DatabaseConnection,
    key: &kihon4_core::audit_export::SigningKey,
) {
    match kihon4_core::audit_export::checkpoint_if_due(db, key, chrono::Duration::hours(24)).await {
        Ok(Some(c)) => tracing::info!(seq = c.seq, key = %c.key_id, "audit checkpoint signed"),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "the audit checkpoint could not be written"),
    }
    // When the newest checkpoint kept (an export's included) was signed: it
    // should never be much more than a day old.
    if let Ok(Some(c)) = kihon4_core::audit_export::latest_checkpoint(db).await {
        metrics::gauge!("kihon4_audit_checkpoint_timestamp_seconds")
            .set(c.at.timestamp_millis() as f64 / 1000.0);
    }
}

/// Mynaportal consent requests: reminders due, and those past their expiry.
pub async fn consent_requests(
    db: &DatabaseConnection,
    notices: &Notices,
    settings: &kihon4_core::consent::requests::RequestSettings,
    reminder_days: &[u32],
) {
    use kihon4_core::audit::{Actor, AuditContext};
    use kihon4_core::consent::requests::{expire_due, remind_due};
    let ctx = AuditContext::new(Actor::worker(), None);
    match remind_due(db, notices, settings, &ctx, reminder_days).await {
        Ok(n) if n > 0 => tracing::info!(reminded = n, "consent requests reminded"),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "consent request reminders failed"),
    }
    match expire_due(db, &ctx).await {
        Ok(n) if n > 0 => tracing::info!(expired = n, "consent requests expired"),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "consent request expiry failed"),
    }
}

/// Carries out due registrations with the provider, then reads how they
/// stand into the registration gauges.
pub async fn registrations(db: &DatabaseConnection, driver: &Driver) {
    use kihon4_core::consent::registrations::backlog;
    match driver.register_due(db).await {
        Ok(s) if s.done + s.retried + s.failed > 0 => tracing::info!(
            done = s.done,
            retried = s.retried,
            failed = s.failed,
            revoked_before_registration = s.revoked_before_registration,
            "provider registrations carried out"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "provider registrations failed"),
    }
    match backlog(db).await {
        Ok(b) => {
            metrics::gauge!("kihon4_registrations_retrying").set(b.retrying as f64);
            metrics::gauge!("kihon4_registrations_refused").set(b.refused as f64);
            metrics::gauge!("kihon4_registrations_oldest_pending_seconds")
                .set(b.oldest_pending_seconds);
        }
        Err(e) => tracing::error!(error = %e, "the registrations' backlog could not be read"),
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

/// A scheduled tick: one run, started by whichever worker claims the tick.
async fn scheduled_run(db: &DatabaseConnection, name: &str, scope: Scope, owner: &str) {
    use chrono::DurationRound;
    // Ticks seen by several processes fall within the same minute.
    let tick = chrono::Utc::now()
        .duration_round(chrono::Duration::minutes(1))
        .unwrap_or_else(|_| chrono::Utc::now());
    match sync::runs::claim_tick(db, name, tick, owner).await {
        Ok(true) => {
            let ctx = AuditContext::new(Actor::worker(), None);
            match sync::runs::request(db, &ctx, "schedule", scope, None).await {
                Ok(run) => {
                    tracing::info!(run = %run.run.id, job = name, jobs = run.jobs, "scheduled sync run started")
                }
                Err(e) => {
                    tracing::error!(job = name, error = %e, "a scheduled sync run could not start")
                }
            }
        }
        Ok(false) => tracing::debug!(job = name, "another worker took this tick"),
        Err(e) => tracing::error!(job = name, error = %e, "a scheduled tick could not be claimed"),
    }
}

/// How often sync looks for work when it found none.
const SYNC_IDLE: std::time::Duration = std::time::Duration::from_secs(2);
/// How often the sync loop reads when runs last completed.
const SYNC_GAUGES: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads when the newest run of the scheduled scopes completed into
/// `kihon4_sync_last_completed_timestamp_seconds` (0 for a scope that never
/// completed one), across all processes.
async fn sync_gauges(db: &DatabaseConnection) {
    match sync::runs::last_completed(db).await {
        Ok(last) => {
            for scope in ["revoked", "all"] {
                let at = last
                    .iter()
                    .find(|(s, _)| s == scope)
                    .map_or(0.0, |(_, at)| at.timestamp_millis() as f64 / 1000.0);
                metrics::gauge!("kihon4_sync_last_completed_timestamp_seconds", "scope" => scope)
                    .set(at);
            }
        }
        Err(e) => tracing::error!(error = %e, "when sync runs last completed could not be read"),
    }
}

/// Sync rounds until `shutdown`: detection for a queued run, then the due
/// jobs, round after round while there is work, every couple of seconds
/// when there is none.
pub async fn sync_forever(db: DatabaseConnection, driver: Driver, shutdown: CancellationToken) {
    let plan = Plan {
        detect_queued: true,
        register: false,
        jobs: 500,
    };
    let mut last_gauges: Option<std::time::Instant> = None;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if last_gauges.is_none_or(|t| t.elapsed() >= SYNC_GAUGES) {
            last_gauges = Some(std::time::Instant::now());
            sync_gauges(&db).await;
        }
        let busy = match driver.round(&db, plan).await {
            Ok(round) => {
                let s = &round.jobs;
                if s.applied() + s.retried + s.failed > 0 {
                    tracing::info!(applied = s.applied(), retried = s.retried, failed = s.failed, outcomes = ?s.outcomes, "sync jobs done");
                }
                round.found_work()
            }
            Err(e) => {
                tracing::error!(error = %e, "a sync round failed");
                false
            }
        };
        if !busy {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SYNC_IDLE) => {}
            }
        }
    }
}

/// Whether the scheduler accepts `expression`, checked before anything starts.
pub fn check_schedule(name: &str, expression: &str, timezone: chrono_tz::Tz) -> anyhow::Result<()> {
    Job::new_async_tz(expression, timezone, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| {
            anyhow::anyhow!("{name} `{expression}` is not a schedule the worker can keep: {e}")
        })
}
