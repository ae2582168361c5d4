//! `kihon4 changes export --date YYYY-MM-DD`: a business day's change
//! file, written again the same as the worker wrote it.

use std::path::PathBuf;

use chrono::NaiveDate;
use kihon4_core::changes::file::{self, FileEncoding};
use kihon4_core::config::Config;

use crate::wiring;

/// Writes business day `date`'s file and manifest into `dir` (default
/// `KIHON4_CHANGES_FILE_DIR`), in `encoding` (default
/// `KIHON4_CHANGES_FILE_ENCODING`), with a progress bar.
pub async fn export(
    config: Config,
    date: NaiveDate,
    dir: Option<PathBuf>,
    encoding: Option<FileEncoding>,
) -> anyhow::Result<()> {
    let mut settings = match (config.changes_file(), dir) {
        (Some(mut s), Some(dir)) => {
            s.dir = dir;
            s
        }
        (Some(s), None) => s,
        (None, Some(dir)) => file::FileSettings {
            dir,
            cron: String::new(),
            encoding: config.settings.changes_file_encoding,
            holidays: config.settings.business_holidays.clone(),
            values: config.settings.change_feed_values,
        },
        (None, None) => {
            anyhow::bail!("say where to write the file: --dir DIR, or KIHON4_CHANGES_FILE_DIR")
        }
    };
    if let Some(encoding) = encoding {
        settings.encoding = encoding;
    }
    if !file::is_business_day(date, &settings.holidays) {
        anyhow::bail!(
            "{date} is not a business day (a Saturday, a Sunday or in KIHON4_BUSINESS_HOLIDAYS): its events are in the file of {}",
            file::file_day_of(date, &settings.holidays)
        );
    }
    let db = wiring::open_current(&config.audit()).await?;
    let bar = wiring::progress_bar(
        0,
        "{bar:40} {pos}/{len} events ({elapsed_precise}, about {eta} left)",
    );
    let written = file::export(
        &db,
        &wiring::cli_context(),
        &settings,
        date,
        &|done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )
    .await;
    bar.finish_and_clear();
    let written = written?;
    println!(
        "kihon4: {} event(s) of business day {date} written to {} (SHA-256 {}), manifest {}",
        written.events,
        written.csv.display(),
        written.sha256,
        written.manifest.display()
    );
    Ok(())
}
