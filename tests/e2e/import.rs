//! `kihon4 customers import` of a 100,000-row Shift_JIS (CP932) file with
//! bad rows among the good: the good rows are imported, the bad ones are
//! reported by line (never their data), the command fails so that a script
//! notices, and importing the same file again changes nothing.
use kihon4_test_support::{Backend, fresh_database};

use crate::process::kihon4;
use crate::process::scalar;

const ROWS: usize = 100_000;
/// A valid My Number (the check digit holds).
const MY_NUMBER: &str = "123456789018";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_cp932_file_imports_its_good_rows_and_reports_the_bad() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(Backend::Postgres, d).await;
    let envs = vec![
        ("KIHON4_DATABASE_URL", url.clone()),
        ("KIHON4_JWT_SECRET", crate::process::SECRET.to_owned()),
    ];
    let out = kihon4(d, &envs).arg("migrate").output().unwrap();
    assert!(out.status.success());

    let names = ["髙橋一郎", "山﨑花子", "渡邉次郎", "斎藤三郎", "佐々木四郎"];
    let mut text = String::from("external_ref,email,locale,name,address,birth_date,gender\r\n");
    let mut bad = Vec::new();
    for i in 0..ROWS {
        let line = i as u64 + 2;
        let (mut birth, mut address, mut reference) = (
            format!("19{:02}-{:02}-{:02}", 30 + i % 70, 1 + i % 12, 1 + i % 28),
            format!("東京都千代田区千代田{}-1", 1 + i % 9),
            format!("CSV-{i}"),
        );
        if i % 997 == 5 {
            birth = "1980-02-30".into();
            bad.push(line);
        } else if i % 1009 == 7 {
            address = format!("東京都港区芝公園{MY_NUMBER}");
            bad.push(line);
        } else if i % 1013 == 9 {
            reference = "CSV-0".into();
            bad.push(line);
        }
        text.push_str(&format!(
            "{reference},c{i}@example.jp,ja,{},{address},{birth},{}\r\n",
            names[i % names.len()],
            1 + i % 2
        ));
    }
    let (bytes, _, lossy) = encoding_rs::SHIFT_JIS.encode(&text);
    assert!(!lossy);
    let file = d.join("customers.csv");
    std::fs::write(&file, &bytes).unwrap();

    let out = kihon4(d, &envs)
        .args(["customers", "import", "--encoding", "cp932"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let good = ROWS - bad.len();
    assert!(
        stdout.contains(&format!(
            "{ROWS} rows read from {}: {good} created, 0 updated, 0 unchanged, {} rejected",
            file.display(),
            bad.len()
        )),
        "{stdout}"
    );
    // The report: line and reason, and nothing the rows held.
    let report = std::fs::read_to_string(d.join("customers.csv.rejected.csv")).unwrap();
    let lines: Vec<u64> = report
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(lines, bad);
    for secret in [MY_NUMBER, "芝公園", "@example.jp", "髙橋"] {
        assert!(!report.contains(secret), "{secret} in the report");
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }

    let db = kihon4_core::db::connect(&url, 2).await.unwrap();
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM customers").await,
        good as i64
    );
    // Characters of CP932's extensions arrive intact.
    assert!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM customers WHERE name = '髙橋一郎'"
        )
        .await
            > 0
    );
    assert!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM customers WHERE name = '山﨑花子'"
        )
        .await
            > 0
    );
    let events = scalar(&db, "SELECT COUNT(*) FROM audit_events").await;
    assert_eq!(events, good as i64);

    // Again: nothing changes.
    let out = kihon4(d, &envs)
        .args(["customers", "import", "--encoding", "cp932"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("0 created, 0 updated, {good} unchanged")),
        "{stdout}"
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM audit_events").await,
        events
    );
    kihon4_core::audit::verify_chain(&db)
        .await
        .unwrap()
        .expect("the chain verifies");
}
