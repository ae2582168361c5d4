//! `kihon4 serve`, `api` and `worker`: the roles of the binary, started
//! together and stopped through one cancellation token.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::web;
use kihon4_api::AppState;
use kihon4_core::config::Config;
use kihon4_core::shared::Shared;
use tokio_util::sync::CancellationToken;

use crate::wiring;

pub struct Roles {
    pub api: bool,
    pub worker: bool,
}

/// Says at start-up what consent and sync will need that is not configured.
fn report_missing_upstream(config: &Config) {
    let settings = &config.settings;
    if settings.provider_url.is_none() {
        tracing::warn!(
            "KIHON4_PROVIDER_URL is not set: consent and sync cannot reach the provider"
        );
    }
    if settings.trust_anchors.is_empty() && settings.role == kihon4_core::domain::JpkiRole::Platform
    {
        tracing::warn!(
            "KIHON4_TRUST_ANCHORS is not set: in the platform role, signed consents cannot be verified"
        );
    }
    if settings.smtp_url.is_none() {
        tracing::warn!(mail_drop_dir = %config.mail_drop_dir().display(), "KIHON4_SMTP_URL is not set: notices go to the mail drop folder");
    }
}

pub async fn serve(config: Config, roles: Roles) -> anyhow::Result<()> {
    report_missing_upstream(&config);
    // Refused at once without a signing key (outside the embedded default).
    let signing_key = Arc::new(wiring::audit_key(&config.audit())?);
    let notices = wiring::notices(&config)?;
    let db = wiring::open_current(&config.audit()).await?;
    let shared = Shared {
        db: db.clone(),
        notices,
        audit_key: Some(signing_key),
        anchors: wiring::anchors(&config)?,
    };
    let shutdown = CancellationToken::new();
    // Every process sequences queued audit events (one round at a time
    // across them all), whatever its roles.
    let sequencing = tokio::spawn(kihon4_core::audit::queue::run(db.clone(), shutdown.clone()));

    let server = if roles.api {
        let provider = kihon4_api::provider(&config).map_err(anyhow::Error::msg)?;
        if provider.is_some() && config.settings.provider_issuer.is_none() {
            tracing::warn!(
                "KIHON4_PROVIDER_ISSUER is not set: every Mynaportal callback is refused, so consent requests are refused too (503 mynaportal-unavailable) until it is set"
            );
        }
        let state = web::Data::new(
            AppState::build(&config, &shared, provider).map_err(anyhow::Error::msg)?,
        );
        let http = config.http();
        let listener = TcpListener::bind(http.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", http.listen))?;
        let server = kihon4_api::server(state, listener, http.max_body_bytes, http.shutdown_grace)?;
        tracing::info!(listen = %http.listen, "API listening");
        Some(server)
    } else {
        None
    };
    let api = server.as_ref().map(|s| s.handle());
    let api_task = server.map(tokio::spawn);

    let worker_task = if roles.worker {
        let settings = kihon4_worker::WorkerSettings::from_config(&config, &shared).await?;
        Some(tokio::spawn(kihon4_worker::run(
            db.clone(),
            settings,
            shutdown.clone(),
        )))
    } else {
        None
    };

    wiring::wait_for_signal().await;
    tracing::info!("stopping: in-flight work finishes first");
    shutdown.cancel();
    if let Some(api) = api {
        api.stop(true).await;
    }
    if let Some(task) = api_task {
        task.await??;
    }
    if let Some(task) = worker_task {
        task.await??;
    }
    sequencing.await?;
    // What was queued while stopping goes into the chain before the end,
    // if it can within moments; else it stays queued, safe, for the next
    // process's rounds.
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        kihon4_core::audit::queue::sequence_all(&db),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "queued audit events are left for another process")
        }
        Err(_) => tracing::warn!("queued audit events are left for another process"),
    }
    db.close().await?;
    tracing::info!("stopped");
    Ok(())
}
