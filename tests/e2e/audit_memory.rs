//! An export of 1,000,000 events runs in constant memory: the binary's
//! peak resident set stays far below the size of what it writes.

use std::time::Duration;

use kihon4_test_support::{Backend, fresh_database};
use sea_orm::{ConnectionTrait, Statement};

use crate::process::{SECRET, kihon4};

const EVENTS: i64 = 1_000_000;
/// What the exporter may hold at its peak, whatever the export's size.
const PEAK_RSS_BOUND: u64 = 96 * 1024 * 1024;

/// The high-water mark of a process's resident set, from /proc.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Drops the database at `url`, from the server's own `postgres` database.
async fn drop_database(url: &str) {
    let mut admin = url::Url::parse(url).unwrap();
    let name = admin.path().trim_start_matches('/').to_owned();
    admin.set_path("/postgres");
    let admin = sea_orm::Database::connect(admin.as_str()).await.unwrap();
    admin
        .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_a_million_events_runs_in_constant_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(Backend::Postgres, d).await;
    let envs = vec![
        ("KIHON4_DATABASE_URL", url.clone()),
        ("KIHON4_JWT_SECRET", SECRET.to_owned()),
        (
            "KIHON4_AUDIT_SIGNING_KEY",
            d.join("data/audit-signing-key.pem")
                .to_str()
                .unwrap()
                .to_owned(),
        ),
    ];
    assert!(
        kihon4(d, &envs)
            .arg("migrate")
            .output()
            .unwrap()
            .status
            .success()
    );
    // A million events written by SQL, not chained: this test is about
    // memory, the others about hashes.
    let db = kihon4_core::db::connect(&url, 2).await.unwrap();
    for sql in [
        format!(
            "INSERT INTO audit_events (seq, occurred_at, actor, action, subject_type, subject_id, customer_id, request_id, canonical, prev_hash, hash) \
             SELECT g, now(), 'cli', 'load.event', 'load', g::text, NULL, NULL, \
             '{{\"action\":\"load.event\",\"data\":{{\"pad\":\"' || repeat('x', 160) || '\"}},\"seq\":' || g || '}}', \
             lpad(to_hex(g - 1), 64, '0'), lpad(to_hex(g), 64, '0') FROM generate_series(1, {EVENTS}) g"
        ),
        format!(
            "UPDATE audit_chain SET last_seq = {EVENTS}, last_hash = lpad(to_hex({EVENTS}), 64, '0') WHERE id = 1"
        ),
    ] {
        db.execute_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap();
    }
    let out = d.join("million.jsonl");
    let mut child = kihon4(d, &envs)
        .args(["audit", "export", "--out", out.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(rss) = peak_rss(pid) {
            peak = peak.max(rss);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
    let written = std::fs::metadata(&out).unwrap().len();
    // A gigabyte on the server's disk and the file on ours: not kept for
    // the tests that follow.
    std::fs::remove_file(&out).unwrap();
    drop(db);
    drop_database(&url).await;
    assert!(written > 150 * 1024 * 1024, "{written} bytes written");
    assert!(peak > 0, "the peak was read");
    assert!(
        peak < PEAK_RSS_BOUND,
        "peak resident set {} MiB while writing {} MiB",
        peak / 1024 / 1024,
        written / 1024 / 1024
    );
}
