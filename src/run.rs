//! Starting and stopping the roles of the binary.

use std::io::IsTerminal;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use kihon4_api::AppState;
use kihon4_core::config::Config;
use kihon4_core::jpki::verify::TrustAnchors;
use kihon4_core::notices::Notices;
use kihon4_core::shared::Shared;
use kihon4_migrations::{Migrator, MigratorTrait, schema_status};
use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

pub struct Roles {
    pub api: bool,
    pub worker: bool,
}

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

async fn connect(config: &Config) -> anyhow::Result<DatabaseConnection> {
    connect_to(&config.audit()).await
}

async fn connect_to(
    config: &kihon4_core::config::AuditConfig,
) -> anyhow::Result<DatabaseConnection> {
    kihon4_core::db::connect(
        config.database_url.expose_secret(),
        config.db_max_connections,
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))
}

pub async fn migrate(config: Config) -> anyhow::Result<()> {
    let db = connect(&config).await?;
    let before = schema_status(&db).await?;
    Migrator::up(&db, None).await?;
    for name in &before.pending {
        tracing::info!(migration = %name, "applied");
    }
    println!(
        "kihon4: {} migration(s) applied; the schema is current",
        before.pending.len()
    );
    Ok(())
}

/// Opens the database and checks that its schema is this binary's. The
/// embedded default migrates itself; anything else must be migrated first.
async fn open_current(config: &Config) -> anyhow::Result<DatabaseConnection> {
    open_current_of(&config.audit()).await
}

async fn open_current_of(
    config: &kihon4_core::config::AuditConfig,
) -> anyhow::Result<DatabaseConnection> {
    let db = connect_to(config).await?;
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

/// The notices' templates, checked: a missing or broken one stops the process.
fn notices(config: &Config) -> anyhow::Result<Arc<Notices>> {
    config
        .notices()
        .load()
        .map(Arc::new)
        .map_err(anyhow::Error::msg)
}

/// The trust anchors, loaded once for the API and the worker.
fn anchors(config: &Config) -> anyhow::Result<Option<Arc<TrustAnchors>>> {
    config.trust().load().map_err(anyhow::Error::msg)
}

/// `kihon4 sync run-once`: one run, carried to its end here.
pub async fn sync_once(
    config: Config,
    scope: kihon4_core::sync::Scope,
    customer: Option<uuid::Uuid>,
) -> anyhow::Result<()> {
    use kihon4_core::audit::{Actor, AuditContext};
    use kihon4_core::sync;
    if customer.is_some() && scope != kihon4_core::sync::Scope::Customer {
        anyhow::bail!("--customer goes with --scope customer only");
    }
    let notices = notices(&config)?;
    let detection = kihon4_worker::Detection::new(config.settings.role, anchors(&config)?);
    let Some(provider) = kihon4_worker::provider(&config).map_err(anyhow::Error::msg)? else {
        anyhow::bail!("KIHON4_PROVIDER_URL is not set: there is no one to ask");
    };
    let db = open_current(&config).await?;
    let ctx = AuditContext::new(Actor::cli(), None);
    let run = sync::runs::request(&db, &ctx, "cli", scope, customer).await?;
    let id = run.run.id;
    let settings = config.sync();
    if scope == sync::Scope::Revoked && sync::runs::take(&db, id, settings.lease).await? {
        eprintln!("kihon4: looking for revoked certificates…");
        kihon4_worker::detect(&db, provider.as_ref(), &detection, id, settings.lease).await;
    }
    let owner = format!("cli-{}", uuid::Uuid::new_v4());
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} customers {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let view = loop {
        // No worker may be running: the registrations that jobs wait for
        // are carried out here too.
        let registered = kihon4_core::consent::registrations::run_due(
            &db,
            provider.as_ref(),
            &notices,
            config.settings.timezone,
            &owner,
            500,
        )
        .await?;
        let round =
            sync::jobs::process_due(&db, provider.as_ref(), &notices, settings, &owner, 200)
                .await?;
        sync::runs::complete_finished(&db).await?;
        let view = sync::runs::get(&db, id).await?;
        let pending = view.counts.get("pending").copied().unwrap_or(0);
        let awaiting = view
            .counts
            .get(kihon4_core::consent::registrations::AWAITING)
            .copied()
            .unwrap_or(0);
        bar.set_length(view.jobs);
        bar.set_position(view.jobs - pending - awaiting);
        if matches!(view.run.status.as_str(), "completed" | "failed") && awaiting == 0 {
            break view;
        }
        let waited = round
            .outcomes
            .get(kihon4_core::consent::registrations::AWAITING);
        if round.applied() - waited.copied().unwrap_or(0) + round.retried + round.failed == 0
            && registered.done + registered.failed == 0
        {
            bar.set_message("(waiting for the provider)");
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else {
            bar.set_message("");
        }
    };
    bar.finish_and_clear();
    let counts = view
        .counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "kihon4: sync run {id} ({}) {}: {} customer(s){}{}",
        scope.as_str(),
        view.run.status,
        view.jobs,
        if counts.is_empty() { "" } else { ": " },
        counts
    );
    match view.run.status.as_str() {
        "failed" => anyhow::bail!("the run failed: {}", view.run.error.unwrap_or_default()),
        _ => Ok(()),
    }
}

/// The audit signing key. Made on first use only on the embedded default;
/// anywhere else it must have been made by `kihon4 audit init-key`, and a
/// missing one is refused, naming the setting and the command.
pub fn audit_key(
    config: &kihon4_core::config::AuditConfig,
) -> anyhow::Result<kihon4_core::audit_export::SigningKey> {
    use kihon4_core::audit_export::SigningKey;
    let path = &config.audit_signing_key;
    if !path.exists() && !config.makes_key_on_first_use() {
        anyhow::bail!(
            "the audit signing key {} does not exist (KIHON4_AUDIT_SIGNING_KEY): make it once with `kihon4 audit init-key`, keep it, and give auditors `kihon4 audit public-key`; outside the embedded default it is never made silently",
            path.display()
        );
    }
    SigningKey::load_or_create(path, config.makes_key_on_first_use())
        .map_err(|e| anyhow::anyhow!("{e} (KIHON4_AUDIT_SIGNING_KEY)"))
}

/// `kihon4 audit init-key`: a new signing key at `out` (default: the
/// configured KIHON4_AUDIT_SIGNING_KEY), owner-only, never replacing one.
pub fn init_audit_key(
    config: &kihon4_core::config::AuditConfig,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use kihon4_core::audit_export::{SigningKey, public_key_path};
    let path = out.unwrap_or(&config.audit_signing_key);
    let key = SigningKey::create(path).map_err(anyhow::Error::msg)?;
    println!(
        "kihon4: audit signing key {} made (owner-only), key id {}; its public key is {}",
        path.display(),
        key.key_id,
        public_key_path(path).display()
    );
    if out.is_some_and(|o| o != config.audit_signing_key) {
        println!(
            "kihon4: set KIHON4_AUDIT_SIGNING_KEY={} for kihon4 to use it",
            path.display()
        );
    }
    Ok(())
}

/// `kihon4 audit export`: the file and its signed manifest beside it, both
/// of the one range fixed when the export started (and with
/// `personal_data`, the companion file of that same range).
pub async fn export_audit(
    config: kihon4_core::config::AuditConfig,
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
    format: kihon4_core::audit_export::Format,
    out: std::path::PathBuf,
    personal_data: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use kihon4_core::audit::{Actor, AuditContext};
    use kihon4_core::audit_export::ExportRequest;
    use std::io::Write;
    let key = audit_key(&config)?;
    let db = open_current_of(&config).await?;
    let file = std::fs::File::create(&out)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} events ({elapsed_precise}, about {eta} left)",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    // The export is audited when it starts: who, which range, whether
    // personal data; that event comes after the range.
    let manifest = kihon4_core::audit_export::export(
        &db,
        &key,
        &AuditContext::new(Actor::cli(), None),
        &ExportRequest {
            format,
            from,
            to,
            events: true,
            personal_data: personal_data.is_some(),
        },
        &mut writer,
        |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )
    .await?;
    writer.flush()?;
    bar.finish_and_clear();
    let manifest_path = {
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(".manifest.json");
        out.with_file_name(name)
    };
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;
    let mut values = None;
    if let Some(path) = &personal_data {
        // Personal data: readable by its owner only.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
        }
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        let mut writer = std::io::BufWriter::new(file);
        values =
            Some(kihon4_core::audit_export::export_personal(&db, &manifest, &mut writer).await?);
        writer.flush()?;
    }
    println!(
        "kihon4: {} event(s), seq {} to {}, written to {}, manifest {} (export {})",
        manifest.count,
        manifest.first_seq.map_or("-".into(), |s| s.to_string()),
        manifest.last_seq.map_or("-".into(), |s| s.to_string()),
        out.display(),
        manifest_path.display(),
        manifest.export_id.map_or("-".into(), |id| id.to_string()),
    );
    if let (Some(path), Some(values)) = (&personal_data, values) {
        println!(
            "kihon4: {values} personal value(s) in clear written to {}: keep it as personal data",
            path.display()
        );
    }
    Ok(())
}

/// `kihon4 audit erase`.
pub async fn erase_audit(
    config: Config,
    customer: uuid::Uuid,
    reason: kihon4_core::domain::FreeText,
) -> anyhow::Result<()> {
    use kihon4_core::audit::{Actor, AuditContext};
    let db = open_current(&config).await?;
    kihon4_core::customers::get(&db, customer)
        .await
        .map_err(|e| anyhow::anyhow!("customer {customer}: {e}"))?;
    let erased = kihon4_core::audit_export::erase_customer(
        &db,
        &AuditContext::new(Actor::cli(), None),
        customer,
        &reason,
    )
    .await?;
    println!(
        "kihon4: {erased} personal value(s) of customer {customer} erased from the audit trail"
    );
    Ok(())
}

/// `kihon4 audit verify`: exit 0 when everything holds, 1 when something
/// does not (the first line that does not verify is named; a manifest or
/// kept checkpoint that is not exactly kihon4's form counts as tampered),
/// 2 when a file cannot be read or is not a kihon4 manifest at all.
pub fn verify_export(
    export: &std::path::Path,
    manifest: &std::path::Path,
    key: &std::path::Path,
    personal_data: Option<&std::path::Path>,
    checkpoints: &[std::path::PathBuf],
    expect_key_id: Option<&str>,
) -> ExitCode {
    use kihon4_core::audit_export::{
        Companion, Expectations, Manifest, PublicKey, parse_checkpoint, verify_expecting,
    };
    enum Refused {
        /// Bad usage: exit 2.
        Usage(String),
        /// Tampering: exit 1.
        Tampered(String),
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| Refused::Usage(format!("cannot read {}: {e}", path.display())))
    };
    let json = |path: &std::path::Path| -> Result<serde_json::Value, Refused> {
        serde_json::from_slice(&read(path)?)
            .map_err(|e| Refused::Usage(format!("{} is not JSON: {e}", path.display())))
    };
    let is_manifest = |v: &serde_json::Value| {
        v.get("type").and_then(|t| t.as_str()) == Some("kihon4-audit-export")
    };
    let loaded = (|| {
        let key = PublicKey::parse(&read(key)?)
            .map_err(|e| Refused::Usage(format!("{}: {e}", key.display())))?;
        let value = json(manifest)?;
        if !is_manifest(&value) {
            return Err(Refused::Usage(format!(
                "{} is not a kihon4 manifest (no \"type\": \"kihon4-audit-export\")",
                manifest.display()
            )));
        }
        // A manifest of kihon4's type in any other form was changed.
        let parsed: Manifest = serde_json::from_value(value).map_err(|e| {
            Refused::Tampered(format!(
                "the manifest {} is not in kihon4's form ({e}): it was changed",
                manifest.display()
            ))
        })?;
        let mut kept = Vec::new();
        for path in checkpoints {
            let mut value = json(path)?;
            if is_manifest(&value) {
                value = value.get("checkpoint").cloned().unwrap_or_default();
            }
            let bytes = serde_json::to_vec(&value).expect("a value serialises");
            kept.push(parse_checkpoint(&bytes).map_err(|e| {
                Refused::Tampered(format!(
                    "the kept checkpoint {} is not in kihon4's form ({e}): it was changed",
                    path.display()
                ))
            })?);
        }
        let file = std::fs::File::open(export)
            .map_err(|e| Refused::Usage(format!("cannot read {}: {e}", export.display())))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let companion = personal_data
            .map(|p| {
                std::fs::File::open(p)
                    .map(|f| Companion::new(std::io::BufReader::new(f)))
                    .map_err(|e| Refused::Usage(format!("cannot read {}: {e}", p.display())))
            })
            .transpose()?;
        Ok((key, parsed, kept, file, size, companion))
    })();
    let (key, manifest, kept, file, size, companion) = match loaded {
        Ok(loaded) => loaded,
        Err(Refused::Usage(e)) => {
            eprintln!("kihon4: {e}");
            return ExitCode::from(crate::BAD_USAGE);
        }
        Err(Refused::Tampered(e)) => {
            println!("kihon4: {} does not verify: {e}", export.display());
            return ExitCode::from(1);
        }
    };
    let kept_count = kept.len();
    let expect = Expectations {
        checkpoints: kept,
        key_id: expect_key_id.map(str::to_owned),
    };
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} ({eta} left)")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let result = verify_expecting(
        std::io::BufReader::with_capacity(1 << 20, file),
        &manifest,
        &key,
        companion,
        &expect,
        |read| bar.set_position(read),
    );
    bar.finish_and_clear();
    match result {
        Ok((count, values)) => {
            println!(
                "kihon4: {} verifies: {count} event(s), seq {} to {}, signed by key {}",
                export.display(),
                manifest.first_seq.map_or("-".into(), |s| s.to_string()),
                manifest.last_seq.map_or("-".into(), |s| s.to_string()),
                key.key_id
            );
            if personal_data.is_some() {
                println!("kihon4: {values} personal value(s) match their commitments");
            }
            if kept_count > 0 {
                println!("kihon4: it extends the {kept_count} kept checkpoint(s)");
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("kihon4: {} does not verify: {failure}", export.display());
            ExitCode::from(1)
        }
    }
}

/// `kihon4 consent-requests send --all-without-consent`: asks every
/// customer with neither an active consent nor an open request (at most
/// `limit`), with a progress bar and a summary. Run again, it goes on where
/// it stopped: those asked have an open request.
pub async fn send_consent_requests(config: Config, limit: Option<u64>) -> anyhow::Result<()> {
    use kihon4_core::CoreError;
    use kihon4_core::audit::{Actor, AuditContext};
    use kihon4_core::consent::requests;
    let notices = notices(&config)?;
    let Some(provider) = kihon4_worker::provider(&config).map_err(anyhow::Error::msg)? else {
        anyhow::bail!("KIHON4_PROVIDER_URL is not set: there is no one to ask through");
    };
    if config.settings.provider_issuer.is_none() {
        anyhow::bail!(
            "KIHON4_PROVIDER_ISSUER is not set: every Mynaportal callback would be refused, so no customer is asked (a decision could never arrive)"
        );
    }
    let keys = kihon4_core::consent::callbacks::ProviderKeys::new(provider.clone());
    if !keys.available().await {
        anyhow::bail!(
            "the provider's callback keys (JWKS) cannot be fetched: no Mynaportal decision could be checked, so no customer is asked"
        );
    }
    let db = open_current(&config).await?;
    let settings = config.consent_requests();
    let ctx = AuditContext::new(Actor::cli(), None);
    let limit = limit.unwrap_or(u64::MAX);
    let mut ids = Vec::new();
    let mut after = None;
    while (ids.len() as u64) < limit {
        let page =
            requests::customers_to_ask(&db, after, 1000.min(limit - ids.len() as u64)).await?;
        let Some(last) = page.last().copied() else {
            break;
        };
        after = Some(last);
        ids.extend(page);
    }
    let bar = indicatif::ProgressBar::new(ids.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} customers {msg} ({elapsed_precise}, about {eta} left)",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let (mut sent, mut skipped, mut failed) = (0u64, 0u64, 0u64);
    for id in &ids {
        match requests::create(&db, provider.as_ref(), &notices, &settings, &ctx, *id).await {
            Ok(_) => sent += 1,
            Err(
                CoreError::AlreadyConsenting
                | CoreError::ConsentRequestOpen
                | CoreError::NotFound(_)
                | CoreError::Consent(_),
            ) => skipped += 1,
            Err(CoreError::Upstream(why)) => {
                failed += 1;
                tracing::warn!(customer = %id, error = %why, "the provider did not take a consent request");
            }
            Err(e) => {
                bar.finish_and_clear();
                return Err(e.into());
            }
        }
        bar.inc(1);
        bar.set_message(format!("({sent} sent, {skipped} skipped, {failed} failed)"));
    }
    bar.finish_and_clear();
    println!(
        "kihon4: {} customer(s) without consent: {sent} asked, {skipped} skipped (consented or asked meanwhile), {failed} failed",
        ids.len()
    );
    if failed > 0 {
        anyhow::bail!("{failed} request(s) failed; run the command again to ask them");
    }
    Ok(())
}

/// `kihon4 customers import`: the rows of a CSV file, a batch per
/// transaction, with a progress bar on a terminal and a summary; rejected
/// rows in a report file, by line and reason (never their data).
pub async fn import_customers(
    config: Config,
    file: std::path::PathBuf,
    encoding: kihon4_core::import::Encoding,
    rejected: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use kihon4_core::audit::{Actor, AuditContext};
    use std::io::Write;
    let input = std::fs::File::open(&file)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
    let size = input.metadata().map(|m| m.len()).unwrap_or(0);
    let report_path = rejected.unwrap_or_else(|| {
        let mut name = file.file_name().unwrap_or_default().to_os_string();
        name.push(".rejected.csv");
        file.with_file_name(name)
    });
    let db = open_current(&config).await?;
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {percent:>3}% {msg} ({elapsed_precise}, about {eta} left)",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let mut report = std::io::BufWriter::new(
        std::fs::File::create(&report_path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", report_path.display()))?,
    );
    writeln!(report, "line,reason")?;
    let mut report_error = None;
    let ctx = AuditContext::new(Actor::cli(), None);
    let summary = kihon4_core::import::import(
        &db,
        &ctx,
        bar.wrap_read(input),
        encoding,
        |s| {
            bar.set_message(format!(
                "{} rows: {} created, {} updated, {} unchanged, {} rejected",
                s.rows, s.created, s.updated, s.unchanged, s.rejected
            ))
        },
        |r| {
            let reason = r.reason.replace('"', "\"\"");
            if let Err(e) = writeln!(report, "{},\"{reason}\"", r.line) {
                report_error.get_or_insert(e);
            }
        },
    )
    .await;
    bar.finish_and_clear();
    report.flush()?;
    if let Some(e) = report_error {
        anyhow::bail!(
            "the report {} could not be written: {e}",
            report_path.display()
        );
    }
    let summary = summary?;
    println!(
        "kihon4: {} rows read from {}: {} created, {} updated, {} unchanged, {} rejected",
        summary.rows,
        file.display(),
        summary.created,
        summary.updated,
        summary.unchanged,
        summary.rejected
    );
    if summary.rejected > 0 {
        println!(
            "kihon4: the rejected rows are listed by line in {}",
            report_path.display()
        );
        anyhow::bail!("{} row(s) were not imported", summary.rejected);
    }
    std::fs::remove_file(&report_path).ok();
    Ok(())
}

pub async fn serve(config: Config, roles: Roles) -> anyhow::Result<()> {
    report_missing_upstream(&config);
    // Refused at once without a signing key (outside the embedded default).
    let signing_key = Arc::new(audit_key(&config.audit())?);
    let notices = notices(&config)?;
    let db = open_current(&config).await?;
    let shared = Shared {
        db: db.clone(),
        notices,
        audit_key: Some(signing_key),
        anchors: anchors(&config)?,
    };
    let shutdown = CancellationToken::new();

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

    wait_for_signal().await;
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
    db.close().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs the simulator until SIGTERM/SIGINT.
pub async fn simulate(
    settings: kihon4_sim::SimSettings,
    listen: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let sim = web::Data::new(kihon4_sim::Simulator::open(settings).await?);
    let callbacks = kihon4_sim::start_callbacks(&sim);
    // J-LIS publishes its CRL daily; so does the simulator (and at start, and on demand).
    let daily = {
        let sim = sim.clone();
        tokio::spawn(async move {
            let mut every_day = tokio::time::interval(Duration::from_secs(24 * 3600));
            every_day.tick().await;
            loop {
                every_day.tick().await;
                match sim.publish_crls().await {
                    Ok(p) => {
                        tracing::info!(crl_number = p.number, entries = p.entries, "CRLs published")
                    }
                    Err(e) => tracing::error!(error = %e, "CRL publication failed"),
                }
            }
        })
    };
    let listener =
        TcpListener::bind(listen).map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let server = kihon4_sim::server(sim, listener)?;
    let handle = server.handle();
    let task = tokio::spawn(server);
    tracing::info!(listen = %listen, "simulator listening");
    wait_for_signal().await;
    daily.abort();
    callbacks.abort();
    handle.stop(true).await;
    task.await??;
    tracing::info!("simulator stopped");
    Ok(())
}

async fn wait_for_signal() {
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
