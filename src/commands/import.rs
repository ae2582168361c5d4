//! `kihon4 customers import`.

use kihon4_core::config::Config;

use crate::wiring;

/// `kihon4 customers import`: the rows of a CSV file, a batch per
/// transaction, with a progress bar on a terminal and a summary; rejected
/// rows in a report file, by line and reason (never their data).
pub async fn customers(
    config: Config,
    file: std::path::PathBuf,
    encoding: kihon4_core::import::Encoding,
    rejected: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let input = std::fs::File::open(&file)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
    let size = input.metadata().map(|m| m.len()).unwrap_or(0);
    let report_path = rejected.unwrap_or_else(|| {
        let mut name = file.file_name().unwrap_or_default().to_os_string();
        name.push(".rejected.csv");
        file.with_file_name(name)
    });
    let db = wiring::open_current(&config.audit()).await?;
    let bar = wiring::progress_bar(
        size,
        "{bar:40} {percent:>3}% {msg} ({elapsed_precise}, about {eta} left)",
    );
    let mut report = std::io::BufWriter::new(
        std::fs::File::create(&report_path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", report_path.display()))?,
    );
    writeln!(report, "line,reason")?;
    let mut report_error = None;
    let ctx = wiring::cli_context();
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
