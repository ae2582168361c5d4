//! `kihon4 sync run-once`.

use kihon4_core::config::Config;
use kihon4_core::consent::registrations::AWAITING;
use kihon4_core::sync::driver::{Detection, Driver, Progress};
use kihon4_core::sync::{self, Scope};

use crate::wiring;

/// Customers' jobs claimed per round.
const JOBS_PER_ROUND: u64 = 200;

/// One run, carried to its end here by the sync driver (the worker's), with
/// a progress bar and a summary.
pub async fn run_once(
    config: Config,
    scope: Scope,
    customer: Option<uuid::Uuid>,
) -> anyhow::Result<()> {
    if customer.is_some() && scope != Scope::Customer {
        anyhow::bail!("--customer goes with --scope customer only");
    }
    let notices = wiring::notices(&config)?;
    let detection = Detection::new(config.settings.role, wiring::anchors(&config)?);
    let Some(provider) = wiring::provider(&config)? else {
        anyhow::bail!("KIHON4_PROVIDER_URL is not set: there is no one to ask");
    };
    let db = wiring::open_current(&config.audit()).await?;
    let ctx = wiring::cli_context();
    let run = sync::runs::request(&db, &ctx, "cli", scope, customer).await?;
    let id = run.run.id;
    // No worker may be running: the registrations that jobs wait for are
    // carried out here too.
    let driver = Driver {
        provider,
        notices,
        detection,
        settings: config.sync(),
        owner: format!("cli-{}", uuid::Uuid::new_v4()),
    };
    let bar = wiring::progress_bar(
        0,
        "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} customers {msg}",
    );
    let view = driver
        .carry_out(&db, id, scope, JOBS_PER_ROUND, |progress| match progress {
            Progress::Detecting => eprintln!("kihon4: looking for revoked certificates…"),
            Progress::Round { view, waiting } => {
                let pending = view.counts.get("pending").copied().unwrap_or(0);
                let awaiting = view.counts.get(AWAITING).copied().unwrap_or(0);
                bar.set_length(view.jobs);
                bar.set_position(view.jobs - pending - awaiting);
                bar.set_message(if waiting {
                    "(waiting for the provider)"
                } else {
                    ""
                });
            }
        })
        .await;
    bar.finish_and_clear();
    // What the run queued (its writes raced another's for the chain's
    // head) goes into the chain before the command ends.
    kihon4_core::audit::queue::sequence_all(&db).await?;
    let view = view?;
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
