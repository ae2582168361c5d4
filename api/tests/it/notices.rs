//! Notices through a real SMTP server (aiosmtpd), on SQLite and PostgreSQL.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kihon4_core::auth::Role;
use kihon4_core::config::{JpkiRole, Revocation};
use kihon4_core::domain::{Email, Locale};
use kihon4_core::entities::outbox;
use kihon4_core::notices::mail::{Mailer, dispatch_due};
use kihon4_core::notices::{NewNotice, NoticeKind, enqueue};
use kihon4_test_support::both;
use kihon4_test_support::smtp_sink::SmtpSink;
use sea_orm::{ColumnTrait, ConnectionTrait, TransactionTrait, sea_query::ExprTrait};
use serde_json::{Value, json};

use crate::helpers::{Backend, INSTITUTION, TestApp, expect_problem, notices};
use crate::sim::spawn_sim;

both!(
    a_consent_receipt_arrives_once_in_the_customers_language,
    notices_wait_out_an_smtp_outage_and_a_refused_address_fails_alone,
    two_dispatchers_send_each_of_2000_notices_once,
    the_mail_drop_holds_each_notice_and_starttls_is_never_skipped_when_required,
);

fn mailer(sink: &SmtpSink) -> Mailer {
    Mailer::smtp(&sink.url(), "notices@bank.example.jp").expect("a mailer")
}

async fn outbox_rows(app: &TestApp, sql: &str) -> Vec<sea_orm::QueryResult> {
    app.db
        .query_all_raw(sea_orm::Statement::from_string(
            app.db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
}

async fn a_consent_receipt_arrives_once_in_the_customers_language(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path(), None);
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let texts: Value = app
        .get("/v1/consent-texts", &app.operator())
        .await
        .json()
        .await
        .unwrap();
    for (external_ref, locale, email, index) in [
        ("N-ja", "ja", "hanako@example.jp", 0),
        ("N-en", "en", "emma@example.com", 1),
    ] {
        let res = app
            .post(
                "/v1/customers",
                &app.operator(),
                &json!({"external_ref": external_ref, "email": email, "locale": locale}),
            )
            .await;
        let customer: Value = res.json().await.unwrap();
        let signer = sim.resident().await;
        let text = texts["items"][index]["text"].as_str().unwrap();
        let res = app
            .post(
                &format!(
                    "/v1/customers/{}/consents",
                    customer["id"].as_str().unwrap()
                ),
                &app.operator(),
                &json!({
                    "text_version": texts["items"][index]["version"],
                    "channel": "online_signature",
                    "signed_document_b64": B64.encode(signer.sign(text.as_bytes(), true)),
                }),
            )
            .await;
        assert_eq!(res.status(), 201);
    }

    let mailer = mailer(&sink);
    let round = dispatch_due(&app.db, &app.db, &mailer, "dispatcher-1", 100, &|| false)
        .await
        .unwrap();
    assert_eq!((round.sent, round.retried, round.failed), (2, 0, 0));
    let again = dispatch_due(&app.db, &app.db, &mailer, "dispatcher-1", 100, &|| false)
        .await
        .unwrap();
    assert_eq!(again.sent, 0, "nothing is sent twice");

    let messages = sink.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 2);
    let stored = outbox_rows(
        &app,
        "SELECT message_id, to_address FROM outbox ORDER BY id",
    )
    .await;
    for (message, row) in messages.iter().zip(&stored) {
        let message_id: String = row.try_get("", "message_id").unwrap();
        let to: String = row.try_get("", "to_address").unwrap();
        assert_eq!(message["message_id"], message_id.as_str());
        assert!(message_id.ends_with("@bank.example.jp>"));
        assert_eq!(message["rcpt_tos"], json!([to]));
        assert_eq!(message["to"], to.as_str());
        assert_eq!(message["mail_from"], "notices@bank.example.jp");
        assert!(message["from"].as_str().unwrap().contains(INSTITUTION));
        assert_eq!(message["reply_to"], "support@bank.example.jp");
        assert!(
            message["date"].as_str().unwrap().ends_with("+0900"),
            "{}",
            message["date"]
        );
        assert_eq!(message["content_type"], "multipart/alternative");
        let parts = message["parts"].as_array().unwrap();
        assert_eq!(parts[0]["type"], "text/plain");
        assert_eq!(parts[0]["charset"], "utf-8");
        assert_eq!(parts[1]["type"], "text/html");
        assert!(parts[0]["body"].as_str().unwrap().contains(INSTITUTION));
        assert!(parts[1]["body"].as_str().unwrap().contains("<html"));
        // Nothing of the customer's but the address in the headers.
        for name in message["header_names"].as_array().unwrap() {
            assert!(
                [
                    "From",
                    "Reply-To",
                    "To",
                    "Subject",
                    "Message-ID",
                    "MIME-Version",
                    "Date",
                    "Content-Type",
                    "Content-Transfer-Encoding"
                ]
                .contains(&name.as_str().unwrap()),
                "unexpected header {name}"
            );
        }
    }
    // Japanese for the ja customer, RFC 2047-encoded; English for the other.
    let ja = &messages[0];
    assert!(ja["raw_subject"].as_str().unwrap().starts_with("=?utf-8?"));
    assert!(
        ja["subject"].as_str().unwrap().contains("同意"),
        "{}",
        ja["subject"]
    );
    assert!(ja["parts"][0]["body"].as_str().unwrap().contains("年"));
    let en = &messages[1];
    assert!(
        en["subject"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("consent")
    );
    assert!(!en["subject"].as_str().unwrap().contains("同意"));

    let sent: Value = app
        .get(
            "/v1/outbox?status=sent",
            &crate::helpers::token_for("admin", &[Role::Admin]),
        )
        .await
        .json()
        .await
        .unwrap();
    let items = sent["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        items[0]["server_response"]
            .as_str()
            .unwrap()
            .starts_with("250")
    );
    assert!(items[0].get("to_address").is_none() && items[0].get("text_body").is_none());
    expect_problem(
        app.get("/v1/outbox", &app.operator()).await,
        403,
        "forbidden",
    )
    .await;
}

async fn enqueue_many(app: &TestApp, addresses: &[String]) {
    let notices = notices();
    let txn = app.db.begin().await.unwrap();
    for to in addresses {
        enqueue(
            &txn,
            &notices,
            NewNotice {
                kind: NoticeKind::ConsentLapsed,
                customer_id: None,
                to: &Email::parse(to).unwrap(),
                locale: Locale::Ja,
                customer_name: None,
                data: json!({}),
            },
        )
        .await
        .unwrap();
    }
    txn.commit().await.unwrap();
}

async fn notices_wait_out_an_smtp_outage_and_a_refused_address_fails_alone(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start(dir.path(), Some("nobody"));
    let app = TestApp::spawn(backend).await;
    enqueue_many(
        &app,
        &[
            "a@example.jp".into(),
            "nobody@example.jp".into(),
            "b@example.jp".into(),
        ],
    )
    .await;
    let mailer = mailer(&sink);

    sink.stop();
    let down = dispatch_due(&app.db, &app.db, &mailer, "dispatcher-1", 100, &|| false)
        .await
        .unwrap();
    assert_eq!((down.sent, down.retried), (0, 3));
    assert_eq!(
        app.count_where(
            outbox::Entity,
            outbox::Column::Status
                .eq("pending")
                .and(outbox::Column::LastError.is_not_null())
        )
        .await,
        3
    );
    // Not due again until the backoff has passed.
    sink.resume();
    let early = dispatch_due(&app.db, &app.db, &mailer, "dispatcher-1", 100, &|| false)
        .await
        .unwrap();
    assert_eq!(early.sent, 0);
    app.db
        .execute_unprepared("UPDATE outbox SET run_at = created_at")
        .await
        .unwrap();
    let up = dispatch_due(&app.db, &app.db, &mailer, "dispatcher-1", 100, &|| false)
        .await
        .unwrap();
    assert_eq!((up.sent, up.retried, up.failed), (2, 0, 1));
    let messages = sink.wait_for(2, Duration::from_secs(10)).await;
    let mut to: Vec<&str> = messages
        .iter()
        .map(|m| m["rcpt_tos"][0].as_str().unwrap())
        .collect();
    to.sort();
    assert_eq!(to, ["a@example.jp", "b@example.jp"], "each once");

    let admin = crate::helpers::token_for("admin", &[Role::Admin]);
    let failed: Value = app
        .get("/v1/outbox?status=failed", &admin)
        .await
        .json()
        .await
        .unwrap();
    let items = failed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(
        items[0]["last_error"].as_str().unwrap().contains("550"),
        "{}",
        items[0]
    );
    let id = items[0]["id"].as_str().unwrap();
    let res = app
        .post(&format!("/v1/outbox/{id}/retry"), &admin, &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "pending");
    expect_problem(
        app.post(&format!("/v1/outbox/{id}/retry"), &admin, &json!({}))
            .await,
        409,
        "notice-not-failed",
    )
    .await;
    expect_problem(
        app.get("/v1/outbox?status=lost", &admin).await,
        400,
        "invalid-query",
    )
    .await;
    assert_eq!(app.count_events("notice.retried").await, 1);
    let again = dispatch_due(&app.db, &app.db, &mailer, "dispatcher-1", 100, &|| false)
        .await
        .unwrap();
    assert_eq!(again.failed, 1, "still refused by the server");
    assert_eq!(sink.messages().len(), 2);

    // Housekeeping empties sent notices' addresses and messages after their retention.
    use kihon4_core::notices::outbox::purge_sent;
    let emptied = purge_sent(&app.db, chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(emptied, 2);
    assert_eq!(
        app.count_where(
            outbox::Entity,
            outbox::Column::Status
                .eq("sent")
                .and(outbox::Column::ToAddress.eq(""))
        )
        .await,
        2
    );
    assert_eq!(
        app.count_where(
            outbox::Entity,
            outbox::Column::Status
                .eq("failed")
                .and(outbox::Column::ToAddress.eq("nobody@example.jp"))
        )
        .await,
        1,
        "an unsent notice keeps what it needs to be sent"
    );
}

async fn two_dispatchers_send_each_of_2000_notices_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path(), None);
    let app = TestApp::spawn(backend).await;
    let addresses: Vec<String> = (0..2000).map(|i| format!("c{i}@example.jp")).collect();
    enqueue_many(&app, &addresses).await;
    let run = |owner: &'static str| {
        let (db, mailer) = (app.db.clone(), mailer(&sink));
        tokio::spawn(async move {
            let mut sent = 0;
            loop {
                let round = dispatch_due(&db, &db, &mailer, owner, 50, &|| false)
                    .await
                    .unwrap();
                sent += round.sent;
                if round.sent + round.retried + round.failed == 0 {
                    return sent;
                }
            }
        })
    };
    let (a, b) = (run("dispatcher-a"), run("dispatcher-b"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a + b, 2000);
    assert!(a > 0 && b > 0, "both took part: {a} and {b}");
    let messages = sink.wait_for(2000, Duration::from_secs(30)).await;
    let mut ids: Vec<&str> = messages
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2000);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2000, "no Message-ID twice");
    assert_eq!(
        app.count_where(outbox::Entity, outbox::Column::Status.eq("sent"))
            .await,
        2000
    );
}

async fn the_mail_drop_holds_each_notice_and_starttls_is_never_skipped_when_required(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    enqueue_many(&app, &["d1@example.jp".into(), "d2@example.jp".into()]).await;

    // A server that does not offer STARTTLS gets nothing when TLS is required.
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(dir.path(), None);
    let strict = Mailer::smtp(
        &format!("{}?tls=required", sink.url()),
        "notices@bank.example.jp",
    )
    .unwrap();
    let round = dispatch_due(&app.db, &app.db, &strict, "dispatcher-1", 100, &|| false)
        .await
        .unwrap();
    assert_eq!((round.sent, round.retried), (0, 2));
    assert_eq!(
        app.count_where(
            outbox::Entity,
            outbox::Column::LastError.contains("STARTTLS")
        )
        .await,
        2
    );
    assert!(sink.messages().is_empty());
    app.db
        .execute_unprepared("UPDATE outbox SET run_at = created_at")
        .await
        .unwrap();

    // The embedded default's mail drop: one .eml per notice.
    let drop = tempfile::tempdir().unwrap();
    let folder = drop.path().join("mail");
    let mailer = Mailer::drop_folder(&folder, "notices@bank.example.jp").unwrap();
    let round = dispatch_due(&app.db, &app.db, &mailer, "dispatcher-1", 100, &|| false)
        .await
        .unwrap();
    assert_eq!(round.sent, 2);
    let files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2);
    let ids = outbox_rows(&app, "SELECT message_id FROM outbox").await;
    for file in &files {
        assert_eq!(file.extension().unwrap(), "eml");
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains("Content-Type: multipart/alternative"));
        assert!(
            ids.iter().any(|r| {
                let id: String = r.try_get("", "message_id").unwrap();
                text.contains(&format!("Message-ID: {id}"))
            }),
            "{text}"
        );
    }
    // What was sent is counted.
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kihon4_notices_total"), "{metrics}");
}
