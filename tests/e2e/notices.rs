//! The worker sending notices while it is killed again and again: every
//! notice arrives, and a kill resends at most the one notice in flight.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kihon4_core::domain::{Email, Locale};
use kihon4_core::notices::{Institution, NewNotice, NoticeKind, Notices, enqueue};
use kihon4_test_support::smtp_sink::SmtpSink;
use kihon4_test_support::{Backend, both, fresh_database};
use rand::Rng;
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
use serde_json::json;

use crate::process::{Running, SECRET, kihon4};

both!(workers = 4; a_worker_killed_while_sending_loses_nothing_and_resends_at_most_one_per_kill);

const NOTICES: usize = 1000;
const KILLS: usize = 6;

async fn sent(db: &sea_orm::DatabaseConnection) -> i64 {
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT COUNT(*) AS n FROM outbox WHERE status = 'sent'".to_owned(),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get("", "n")
    .unwrap()
}

async fn a_worker_killed_while_sending_loses_nothing_and_resends_at_most_one_per_kill(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sink = SmtpSink::start(&d.join("mail"), None);
    let url = fresh_database(backend, d).await;
    let envs = vec![
        ("KIHON4_DATABASE_URL", url.clone()),
        ("KIHON4_JWT_SECRET", SECRET.to_owned()),
        ("KIHON4_SMTP_URL", sink.url()),
        ("KIHON4_MAIL_FROM", "notices@bank.example.jp".to_owned()),
        // A killed worker's claim runs out after 5 s (five times this).
        ("KIHON4_SMTP_TIMEOUT_SECONDS", "1".to_owned()),
    ];
    let out = kihon4(d, &envs).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let db = kihon4_core::db::connect(&url, 2).await.unwrap();
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
    for i in 0..NOTICES {
        enqueue(
            &txn,
            &notices,
            NewNotice {
                kind: NoticeKind::ConsentLapsed,
                customer_id: None,
                to: &Email::parse(&format!("k{i}@example.jp")).unwrap(),
                locale: Locale::Ja,
                customer_name: None,
                data: json!({}),
            },
        )
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();

    // Killed at random moments while it sends.
    let mut kills = 0;
    while kills < KILLS {
        let mut worker = Running::start(d, "worker", &envs).await;
        let pause = rand::thread_rng().gen_range(300..900);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        worker.signal("KILL");
        worker.wait(Duration::from_secs(10)).await;
        kills += 1;
        assert!(
            (sent(&db).await as usize) < NOTICES,
            "the kills came too late to test anything"
        );
    }
    let mut worker = Running::start(d, "worker", &envs).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    while (sent(&db).await as usize) < NOTICES {
        assert!(
            Instant::now() < deadline,
            "not all sent:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.signal("TERM");
    assert!(worker.wait(Duration::from_secs(30)).await.success());

    let messages = sink.wait_for(NOTICES, Duration::from_secs(10)).await;
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for m in &messages {
        *by_id
            .entry(m["message_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(by_id.len(), NOTICES, "every notice arrived");
    let duplicates = messages.len() - NOTICES;
    assert!(
        duplicates <= kills,
        "{duplicates} duplicates after {kills} kills: at most one per kill"
    );
    assert!(by_id.values().all(|&n| n <= 2));
}
