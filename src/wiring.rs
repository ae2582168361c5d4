//! The wiring every command shares: logging, the runtime, the database,
//! the notices, trust anchors and signing key, progress bars and signals.
//! Commands in [`crate::commands`] assemble what they need from here, and
//! the API's and worker's state from their own builders
//! (`AppState::build`, `WorkerSettings::from_config`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use kihon4_core::config::{AuditConfig, Config};
use kihon4_core::jpki::verify::TrustAnchors;
use kihon4_core::notices::Notices;
use kihon4_migrations::{Migrator, MigratorTrait, schema_status};
use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret;
use tracing_subscriber::EnvFilter;

pub fn block_on(work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    block_on_logging(work, "info,sqlx=warn")
}

/// As [`block_on`], logging at `default_filter` unless RUST_LOG says otherwise.
pub fn block_on_logging(
    work: impl Future<Output = anyhow::Result<()>>,
    default_filter: &str,
) -> ExitCode {
    init_logging(default_filter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kihon4: cannot start the runtime: {e}");
            return crate::failed();
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "kihon4 stopped with an error");
            eprintln!("kihon4: {e:#}");
            crate::failed()
        }
    }
}

/// JSON lines when not on a terminal, readable text on one. RUST_LOG filters.
fn init_logging(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    }
}

/// Opens the database, whatever its schema.
pub async fn connect(config: &AuditConfig) -> anyhow::Result<DatabaseConnection> {
    kihon4_core::db::connect(
        config.database_url.expose_secret(),
        config.db_max_connections,
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))
}

/// Opens the database and checks that its schema is this binary's. The
/// embedded default migrates itself; anything else must be migrated first.
pub async fn open_current(config: &AuditConfig) -> anyhow::Result<DatabaseConnection> {
    let db = connect(config).await?;
    if config.database_embedded {
        Migrator::up(&db, None).await?;
    }
    let status = schema_status(&db).await?;
    if !status.is_current() {
        anyhow::bail!(
            "the database schema is behind this binary ({} migration(s) not applied: {}); run `kihon4 migrate` first",
            status.pending.len(),
            status.pending.join(", ")
        );
    }
    Ok(db)
}

/// The notices' templates, checked: a missing or broken one stops the process.
pub fn notices(config: &Config) -> anyhow::Result<Arc<Notices>> {
    config
        .notices()
        .load()
        .map(Arc::new)
        .map_err(anyhow::Error::msg)
}

/// The trust anchors, loaded once for the API and the worker.
pub fn anchors(config: &Config) -> anyhow::Result<Option<Arc<TrustAnchors>>> {
    config.trust().load().map_err(anyhow::Error::msg)
}

/// The provider client of the worker and the commands, when one is
/// configured: it waits out maintenance windows.
pub fn provider(
    config: &Config,
) -> anyhow::Result<Option<Arc<dyn kihon4_core::provider::Provider>>> {
    kihon4_worker::provider(config).map_err(anyhow::Error::msg)
}

/// The audit signing key. Made on first use only on the embedded default;
/// anywhere else it must have been made by `kihon4 audit init-key`, and a
/// missing one is refused, naming the setting and the command.
pub fn audit_key(config: &AuditConfig) -> anyhow::Result<kihon4_core::audit_export::SigningKey> {
    use kihon4_core::audit_export::SigningKey;
    let path = &config.audit_signing_key;
    if !path.exists()
        && !kihon4_core::audit_export::in_token(path)
        && !config.makes_key_on_first_use()
    {
        anyhow::bail!(
            "the audit signing key {} does not exist (KIHON4_AUDIT_SIGNING_KEY): make it once with `kihon4 audit init-key`, keep it, and give auditors `kihon4 audit public-key`; outside the embedded default it is never made silently",
            path.display()
        );
    }
    SigningKey::load_or_create(path, config.makes_key_on_first_use())
        .map(|key| key.with_log_origin(config.log_origin.as_deref()))
        .map_err(|e| anyhow::anyhow!("{e} (KIHON4_AUDIT_SIGNING_KEY)"))
}

/// Who acts at this command line, for the audit trail: set once by `main`.
static ACTOR: std::sync::OnceLock<kihon4_core::audit::Actor> = std::sync::OnceLock::new();

/// Names the person at the command line: `--actor NAME`, else the login
/// (`LOGNAME`, then `USER`), else nobody (plain `cli`). A given name that
/// could not be a token's subject is refused; a login that could not is
/// left out.
pub fn set_actor(given: Option<&str>) -> Result<(), String> {
    use kihon4_core::audit::Actor;
    let actor = match given {
        Some(name) => Actor::cli_person(name).map_err(|e| format!("--actor {e}"))?,
        None => ["LOGNAME", "USER"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            .and_then(|login| Actor::cli_person(&login).ok())
            .unwrap_or_else(Actor::cli),
    };
    let _ = ACTOR.set(actor);
    Ok(())
}

/// The audit context of a command's own actions (`cli:<name>`, see [`set_actor`]).
pub fn cli_context() -> kihon4_core::audit::AuditContext {
    kihon4_core::audit::AuditContext::new(
        ACTOR
            .get()
            .cloned()
            .unwrap_or_else(kihon4_core::audit::Actor::cli),
        None,
    )
}

/// A progress bar of `len` in the commands' one style; `template` says what
/// it counts (indicatif's template language).
pub fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

/// Returns on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
