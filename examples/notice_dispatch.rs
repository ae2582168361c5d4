//! Notices dispatched per second: N rendered notices in a fresh outbox,
//! sent by one dispatcher as the worker sends them. Also writes the same messages, as sent, for
//! the reference sender in bench/notices/run.
//!
//!   notice_dispatch DATABASE_URL SMTP_URL COUNT MESSAGES_DIR

use std::time::Instant;

use kihon4_core::domain::{Email, Locale};
use kihon4_core::notices::mail::{Mailer, dispatch_due};
use kihon4_core::notices::{Institution, NewNotice, NoticeKind, Notices, enqueue};
use kihon4_migrations::{Migrator, MigratorTrait};
use sea_orm::TransactionTrait;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [database, smtp, count, messages] = args.as_slice() else {
        anyhow::bail!("usage: notice_dispatch DATABASE_URL SMTP_URL COUNT MESSAGES_DIR");
    };
    let count: usize = count.parse()?;
    let db = kihon4_core::db::connect(database, 4).await?;
    let settle_db = kihon4_core::db::connect_relaxed(database).await?;
    Migrator::up(&db, None).await?;
    let notices = Notices::load(
        Institution {
            name: "かもめ銀行".into(),
            contact: "0120-000-000".into(),
            reply_to: String::new(),
            ..Default::default()
        },
        kihon4_core::notices::Sender {
            address: "notices@bank.example.jp",
            reply_to: None,
            timezone: chrono_tz::Asia::Tokyo,
        },
        None,
    )
    .map_err(anyhow::Error::msg)?;
    let txn = db.begin().await?;
    for i in 0..count {
        enqueue(
            &txn,
            &notices,
            NewNotice {
                kind: NoticeKind::ConsentReceipt,
                customer_id: None,
                to: &Email::parse(&format!("customer{i}@example.jp"))?,
                locale: Locale::Ja,
                customer_name: Some("山田太郎"),
                data: serde_json::json!({"consent": {
                    "text_version": "2026-11-25.ja",
                    "granted_on": "2026年11月25日",
                    "valid_until": "2036年11月25日",
                    "channel_label": "マイナンバーカードによる電子署名",
                }}),
            },
        )
        .await?;
    }
    txn.commit().await?;
    let mailer = Mailer::smtp(smtp, "notices@bank.example.jp").map_err(anyhow::Error::msg)?;

    // The same messages for the reference sender, as kihon4 builds them.
    std::fs::create_dir_all(messages)?;
    for (i, row) in kihon4_core::notices::outbox::pending_rows(&db)
        .await?
        .iter()
        .enumerate()
    {
        std::fs::write(format!("{messages}/{i:06}.eml"), &row.message)?;
    }

    let started = Instant::now();
    let mut sent = 0;
    while sent < count as u64 {
        let round = dispatch_due(&db, &settle_db, &mailer, "bench", 1000, &|| false).await?;
        anyhow::ensure!(round.retried + round.failed == 0, "a notice was not sent");
        if round.sent == 0 {
            break;
        }
        sent += round.sent;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("sent={sent} per_second={:.0}", sent as f64 / seconds);
    Ok(())
}
