//! Files that hold personal data are the owner's alone, whatever the umask:
//! the embedded SQLite database with its WAL and shared-memory files, the
//! data folder, and every email in the mail drop.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use kihon4_core::domain::{Email, Locale};
use kihon4_core::notices::{Institution, NewNotice, NoticeKind, Notices, enqueue};
use sea_orm::TransactionTrait;
use serde_json::json;

use crate::process::Running;

unsafe extern "C" {
    fn umask(mask: u32) -> u32;
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_holding_personal_data_are_owner_only_under_umask_022() {
    // The usual umask, set explicitly: files would be 0644 and folders 0755.
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { umask(0o022) };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let drop = d.join("spool/kihon4-mail");
    let envs = [("KIHON4_MAIL_DROP_DIR", drop.to_str().unwrap().to_owned())];
    let serve = Running::start(d, "serve", &envs).await;

    // A notice for the worker of `serve` to drop.
    let db_file = d.join("data/kihon4.db");
    let db = kihon4_core::db::connect(&format!("sqlite://{}", db_file.display()), 1)
        .await
        .unwrap();
    let notices = Notices::load(
        Institution {
            name: "かもめ銀行".into(),
            ..Institution::default()
        },
        kihon4_core::notices::Sender {
            address: "notices@bank.example.jp",
            reply_to: None,
            timezone: chrono_tz::Asia::Tokyo,
        },
        None,
    )
    .unwrap();
    let txn = db.begin().await.unwrap();
    enqueue(
        &txn,
        &notices,
        NewNotice {
            kind: NoticeKind::ConsentLapsed,
            customer_id: None,
            to: &Email::parse("hanako@example.jp").unwrap(),
            locale: Locale::Ja,
            customer_name: Some("鈴木花子"),
            data: json!({}),
        },
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let emails = loop {
        let emails: Vec<_> = std::fs::read_dir(&drop)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        if !emails.is_empty() {
            break emails;
        }
        assert!(
            Instant::now() < deadline,
            "no email in the drop:\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for email in &emails {
        assert_eq!(mode(email), 0o600, "{}", email.display());
        assert!(
            std::fs::read_to_string(email)
                .unwrap()
                .contains("hanako@example.jp")
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&drop)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "no half-written email is left");
    for folder in [d.join("data"), d.join("spool"), drop.clone()] {
        assert_eq!(mode(&folder), 0o700, "{}", folder.display());
    }
    for file in ["kihon4.db", "kihon4.db-wal", "kihon4.db-shm", "jwt-secret"] {
        let path = d.join("data").join(file);
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    let key = d.join("data/audit-signing-key.pem");
    if key.exists() {
        assert_eq!(mode(&key), 0o600);
    }
    let _ = db.close().await;
}
