//! `kihon4 consent-requests send --all-without-consent`.

use kihon4_core::config::Config;
use kihon4_core::consent::mynaportal::Mynaportal;

use crate::wiring;

/// Asks every customer with neither an active consent nor an open request
/// (at most `limit`), with a progress bar and a summary. Run again, it goes
/// on where it stopped: those asked have an open request.
pub async fn send(config: Config, limit: Option<u64>) -> anyhow::Result<()> {
    let notices = wiring::notices(&config)?;
    let mynaportal = wiring::provider(&config)?.map(|provider| {
        let settings = config.mynaportal();
        Mynaportal::new(settings.requests, settings.callbacks, provider)
    });
    let mynaportal = Mynaportal::ready(mynaportal.as_ref())
        .await
        .map_err(anyhow::Error::new)?;
    let db = wiring::open_current(&config.audit()).await?;
    let bar = wiring::progress_bar(
        0,
        "{bar:40} {pos}/{len} customers {msg} ({elapsed_precise}, about {eta} left)",
    );
    let batch = mynaportal
        .ask_all_without_consent(&db, &notices, &wiring::cli_context(), limit, |batch| {
            bar.set_length(batch.customers);
            bar.set_position(batch.done());
            if batch.done() > 0 {
                bar.set_message(format!(
                    "({} sent, {} skipped, {} failed)",
                    batch.sent, batch.skipped, batch.failed
                ));
            }
        })
        .await;
    bar.finish_and_clear();
    let batch = batch?;
    println!(
        "kihon4: {} customer(s) without consent: {} asked, {} skipped (consented or asked meanwhile), {} failed",
        batch.customers, batch.sent, batch.skipped, batch.failed
    );
    // What was queued (the chain's head held by another writer) goes into
    // the chain before the command ends.
    kihon4_core::audit::queue::sequence_all(&db).await?;
    if batch.failed > 0 {
        anyhow::bail!(
            "{} request(s) failed; run the command again to ask them",
            batch.failed
        );
    }
    Ok(())
}
