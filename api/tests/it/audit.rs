use kihon4_core::audit::verify_chain;
use kihon4_core::entities::{audit_events, audit_exports};
use kihon4_test_support::both;
use sea_orm::{ColumnTrait, ConnectionTrait, Statement, sea_query::ExprTrait};
use serde_json::Value;

use crate::helpers::{Backend, TestApp, expect_problem};

both!(
    events_filter_and_page_in_chain_order,
    concurrent_appends_form_one_chain,
    a_batch_appends_in_order_under_one_lock,
    an_export_streams_what_was_hashed_and_its_manifest_verifies,
    tampering_is_found_and_named,
    an_export_and_its_manifest_fetched_the_natural_way_verify,
    an_append_that_finds_the_head_held_is_queued_then_sequenced_whole,
);

async fn events_filter_and_page_in_chain_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_customer("AUD-1").await;
    app.create_customer("AUD-2").await;
    let a_id = a["id"].as_str().unwrap();
    let res = app
        .http
        .patch(app.url(&format!("/v1/customers/{a_id}")))
        .bearer_auth(app.operator())
        .header("if-match", "\"1\"")
        .json(&serde_json::json!({"locale": "en"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let all: Value = app
        .get("/v1/audit/events", &app.auditor())
        .await
        .json()
        .await
        .unwrap();
    let seqs: Vec<i64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    let items = all["items"].as_array().unwrap();
    assert_eq!(items[1]["prev_hash"], items[0]["hash"]);

    let of_a: Value = app
        .get(
            &format!("/v1/audit/events?customer_id={a_id}"),
            &app.auditor(),
        )
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = of_a["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["customer.created", "customer.updated"]);
    let updates: Value = app
        .get("/v1/audit/events?action=customer.updated", &app.auditor())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(updates["items"].as_array().unwrap().len(), 1);

    let page1: Value = app
        .get("/v1/audit/events?limit=2", &app.auditor())
        .await
        .json()
        .await
        .unwrap();
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2: Value = app
        .get(
            &format!("/v1/audit/events?limit=2&cursor={cursor}"),
            &app.auditor(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page2["items"][0]["seq"], 3);
    assert_eq!(page2["next_cursor"], Value::Null);

    let future: Value = app
        .get("/v1/audit/events?from=2999-01-01T00:00:00Z", &app.auditor())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(future["items"].as_array().unwrap().len(), 0);
    let past: Value = app
        .get(
            "/v1/audit/events?to=2000-01-01T00:00:00%2B09:00",
            &app.auditor(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(past["items"].as_array().unwrap().len(), 0);
    for bad in [
        "from=yesterday",
        "customer_id=42",
        "cursor=abc",
        "cursor=-1",
        "cursor=%2B5",
        "limit=9999",
        "sort=desc",
    ] {
        expect_problem(
            app.get(&format!("/v1/audit/events?{bad}"), &app.auditor())
                .await,
            400,
            "invalid-query",
        )
        .await;
    }
}

async fn concurrent_appends_form_one_chain(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let creates = (0..24).map(|i| {
        let app = &app;
        async move {
            app.post(
                "/v1/customers",
                &app.operator(),
                &crate::helpers::customer_body(&format!("PAR-{i}")),
            )
            .await
        }
    });
    let responses = futures_util::future::join_all(creates).await;
    assert!(responses.iter().all(|r| r.status() == 201));
    assert_eq!(app.assert_chain_verifies().await, 24);
}

async fn a_batch_appends_in_order_under_one_lock(backend: Backend) {
    use kihon4_core::audit::{Actor, AuditContext, AuditEvent, Batch, append_batch};
    use sea_orm::TransactionTrait;
    let app = TestApp::spawn(backend).await;
    app.create_customer("BATCH-0").await;
    let ctx = AuditContext::new(Actor::worker(), None);
    // More events than one statement takes, each with personal values.
    let mut batch = Batch::default();
    for i in 0..450 {
        let mut event = AuditEvent::new("test.batched", "test", Some(i.to_string()));
        let email = event.commit("after.email", &format!("b{i}@example.jp"));
        batch.push(
            &ctx,
            event.set("after", serde_json::json!({"email": email})),
        );
    }
    // A batch rolled back leaves nothing behind.
    let txn = app.db.begin().await.unwrap();
    let mut forgotten = Batch::default();
    forgotten.push(&ctx, AuditEvent::new("test.forgotten", "test", None));
    forgotten.push(&ctx, AuditEvent::new("test.forgotten", "test", None));
    append_batch(&txn, forgotten).await.unwrap();
    txn.rollback().await.unwrap();

    let txn = app.db.begin().await.unwrap();
    append_batch(&txn, batch).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(app.assert_chain_verifies().await, 451);
    let count = |sql: &str| {
        let db = &app.db;
        let sql = sql.to_owned();
        async move {
            db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                .await
                .unwrap()
                .unwrap()
                .try_get_by_index::<i64>(0)
                .unwrap()
        }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_personal_values WHERE field = 'after.email' AND seq > 1")
            .await,
        450
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_events WHERE action = 'test.forgotten'").await,
        0
    );
    // In the order pushed.
    assert_eq!(
        count("SELECT MIN(seq) FROM audit_events WHERE subject_id = '449'").await,
        451
    );
}

async fn tampering_is_found_and_named(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..3 {
        app.create_customer(&format!("TAMPER-{i}")).await;
    }
    app.assert_chain_verifies().await;
    let exec = |sql: &str| {
        app.db.execute_raw(Statement::from_string(
            app.db.get_database_backend(),
            sql.to_owned(),
        ))
    };

    // A personal value that no longer matches its commitment.
    exec("UPDATE audit_personal_values SET value = 'someone@else.jp' WHERE seq = 2 AND field = 'after.email'")
        .await
        .unwrap();
    let broken = verify_chain(&app.db).await.unwrap().unwrap_err();
    assert_eq!(broken.seq, 2);
    assert!(broken.reason.contains("after.email"));
    // Erasing it instead keeps the chain whole.
    exec("UPDATE audit_personal_values SET value = NULL WHERE seq = 2 AND field = 'after.email'")
        .await
        .unwrap();
    app.assert_chain_verifies().await;

    // An altered event.
    exec("UPDATE audit_events SET canonical = REPLACE(canonical, 'TAMPER-1', 'TAMPER-X') WHERE seq = 2").await.unwrap();
    let broken = verify_chain(&app.db).await.unwrap().unwrap_err();
    assert_eq!(broken.seq, 2);
    assert_eq!(broken.reason, "the hash does not match the event");

    // A removed event.
    exec("DELETE FROM audit_personal_values WHERE seq = 2")
        .await
        .unwrap();
    exec("DELETE FROM audit_events WHERE seq = 2")
        .await
        .unwrap();
    let broken = verify_chain(&app.db).await.unwrap().unwrap_err();
    assert_eq!(broken.seq, 3);
    assert!(
        broken.reason.contains("expected event 2"),
        "{}",
        broken.reason
    );
}

async fn an_export_streams_what_was_hashed_and_its_manifest_verifies(backend: Backend) {
    use kihon4_core::audit_export::{Manifest, PublicKey, verify_jsonl};
    let app = TestApp::spawn(backend).await;
    for i in 0..5 {
        app.create_customer(&format!("EXP-{i}")).await;
    }
    // A moment in the past: the export and its manifest cover the same
    // events (their own audit events come after it).
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let to = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let export = app
        .get(&format!("/v1/audit/export?to={to}"), &app.auditor())
        .await;
    assert_eq!(export.status(), 200);
    assert!(
        export.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/jsonl")
    );
    let export_id = export.headers()["kihon4-export-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = export.bytes().await.unwrap();
    assert_eq!(body.iter().filter(|b| **b == b'\n').count(), 5);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(!text.contains("@example.jp"), "emails only as commitments");
    let manifest: Manifest = app
        .get(
            &format!("/v1/audit/export/manifest?export_id={export_id}"),
            &app.auditor(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(manifest.count, 5);
    let checkpoint: Value = app
        .get("/v1/audit/checkpoints/latest", &app.auditor())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(checkpoint["key_id"], manifest.key_id.as_str());
    assert_eq!(checkpoint["seq"], manifest.checkpoint.seq);
    // The worker's daily one: not again within the day.
    let signing = kihon4_core::audit_export::SigningKey::load_or_create(
        &app.dir().join("audit-signing-key.pem"),
        false,
    )
    .unwrap();
    let day = chrono::Duration::hours(24);
    use kihon4_core::audit_export::checkpoint_if_due;
    assert!(
        checkpoint_if_due(&app.db, &signing, day)
            .await
            .unwrap()
            .is_none()
    );
    let fresh = checkpoint_if_due(&app.db, &signing, chrono::Duration::zero())
        .await
        .unwrap()
        .expect("due");
    let key_now =
        PublicKey::parse(&std::fs::read(app.dir().join("audit-signing-key.pem.pub")).unwrap())
            .unwrap();
    assert!(fresh.verifies(&key_now));
    let key =
        PublicKey::parse(&std::fs::read(app.dir().join("audit-signing-key.pem.pub")).unwrap())
            .unwrap();
    assert_eq!(verify_jsonl(&body[..], &manifest, &key, |_| {}), Ok(5));
    // CSV for spreadsheets.
    let csv = app
        .get(
            &format!("/v1/audit/export?format=csv&to={to}"),
            &app.auditor(),
        )
        .await
        .bytes()
        .await
        .unwrap();
    assert!(csv.starts_with(b"\xEF\xBB\xBFseq,"));
    // Who may, and what is refused.
    expect_problem(
        app.get("/v1/audit/export", &app.operator()).await,
        403,
        "forbidden",
    )
    .await;
    expect_problem(
        app.get("/v1/audit/export?format=xml", &app.auditor()).await,
        400,
        "invalid-query",
    )
    .await;
    // Personal data in clear: only with the role for it, as the companion
    // file, each value matching its commitment.
    expect_problem(
        app.get(
            "/v1/audit/export?include_personal_data=true",
            &app.auditor(),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    let pii = app.token(&[kihon4_core::auth::Role::AuditorPii]);
    let companion = app
        .get(
            &format!("/v1/audit/export?include_personal_data=true&to={to}"),
            &pii,
        )
        .await;
    assert_eq!(companion.status(), 200);
    let companion = companion.bytes().await.unwrap();
    assert!(String::from_utf8_lossy(&companion).contains("@example.jp"));
    use kihon4_core::audit_export::{Companion, verify_with_personal};
    let (events, values) = verify_with_personal(
        &body[..],
        &manifest,
        &key,
        Some(Companion::new(&companion[..])),
        |_| {},
    )
    .unwrap();
    assert_eq!(events, 5);
    assert!(values >= 5, "{values}");
    let forged =
        String::from_utf8(companion.to_vec())
            .unwrap()
            .replacen("@example.jp", "@example.com", 1);
    let failure = verify_with_personal(
        &body[..],
        &manifest,
        &key,
        Some(Companion::new(forged.as_bytes())),
        |_| {},
    )
    .unwrap_err();
    assert!(
        failure.why.contains("does not match its commitment"),
        "{failure}"
    );
    assert!(failure.line >= 1);
    // A range that starts later: its companion holds its events' values only.
    let events: Value = app
        .get("/v1/audit/events?limit=3", &app.auditor())
        .await
        .json()
        .await
        .unwrap();
    let from = events["items"][2]["occurred_at"]
        .as_str()
        .unwrap()
        .replace('+', "%2B");
    let later = app
        .get(
            &format!("/v1/audit/export?from={from}&to={to}"),
            &app.auditor(),
        )
        .await;
    let later_id = later.headers()["kihon4-export-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let later = later.bytes().await.unwrap();
    let later_manifest: Manifest = app
        .get(
            &format!("/v1/audit/exports/{later_id}/manifest"),
            &app.auditor(),
        )
        .await
        .json()
        .await
        .unwrap();
    let later_values = app
        .get(&format!("/v1/audit/exports/{later_id}/personal-data"), &pii)
        .await
        .bytes()
        .await
        .unwrap();
    let (events, _) = verify_with_personal(
        &later[..],
        &later_manifest,
        &key,
        Some(Companion::new(&later_values[..])),
        |_| {},
    )
    .unwrap();
    assert_eq!(events, 3);
    expect_problem(
        app.get("/v1/audit/export/manifest?include_personal_data=true", &pii)
            .await,
        400,
        "invalid-query",
    )
    .await;
    // Each export and manifest is audited.
    assert_eq!(app.count_events("audit.exported").await, 7);
    assert_eq!(
        app.count_where(
            audit_events::Entity,
            audit_events::Column::Action
                .eq("audit.exported")
                .and(audit_events::Column::Canonical.contains("\"include_personal_data\":true"))
        )
        .await,
        2
    );
    app.assert_chain_verifies().await;
}

/// The header `name` of `res`, as text.
fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn an_export_and_its_manifest_fetched_the_natural_way_verify(backend: Backend) {
    use kihon4_core::audit_export::{
        Companion, Manifest, PublicKey, verify_jsonl, verify_with_personal,
    };
    let app = TestApp::spawn(backend).await;
    for i in 0..3 {
        app.create_customer(&format!("NAT-{i}")).await;
    }
    let key =
        PublicKey::parse(&std::fs::read(app.dir().join("audit-signing-key.pem.pub")).unwrap())
            .unwrap();
    let head = app.count(audit_events::Entity).await;
    let query = "from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z";
    // The export, with `to` in the future: its range is fixed when it starts.
    let export = app
        .get(&format!("/v1/audit/export?{query}"), &app.auditor())
        .await;
    assert_eq!(export.status(), 200);
    let id = header(&export, "kihon4-export-id").expect("Kihon4-Export-Id");
    assert_eq!(header(&export, "kihon4-first-seq").as_deref(), Some("1"));
    assert_eq!(
        header(&export, "kihon4-last-seq"),
        Some(head.to_string()),
        "up to the head when it started"
    );
    assert_eq!(
        header(&export, "kihon4-event-count"),
        Some(head.to_string())
    );
    assert_eq!(
        header(&export, "kihon4-checkpoint-seq"),
        Some(head.to_string())
    );
    assert_eq!(
        header(&export, "link"),
        Some(format!(
            "</v1/audit/exports/{id}/manifest>; rel=\"describedby\""
        ))
    );
    let body = export.bytes().await.unwrap();
    // Its own audit event comes right after its range.
    assert_eq!(
        app.count_where(
            audit_events::Entity,
            audit_events::Column::Action
                .eq("audit.exported")
                .and(audit_events::Column::Seq.eq(head + 1))
                .and(audit_events::Column::SubjectId.eq(id.as_str()))
        )
        .await,
        1
    );
    // Meanwhile more is written; the manifest fetched afterwards is still the export's.
    app.create_customer("NAT-later").await;
    let by_path = app
        .get(&format!("/v1/audit/exports/{id}/manifest"), &app.auditor())
        .await;
    assert_eq!(by_path.status(), 200);
    assert_eq!(
        header(&by_path, "kihon4-export-id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(header(&by_path, "kihon4-last-seq"), Some(head.to_string()));
    let by_path = by_path.bytes().await.unwrap();
    let manifest: Manifest = serde_json::from_slice(&by_path).unwrap();
    assert_eq!(
        manifest.export_id.map(|u| u.to_string()).as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        (manifest.first_seq, manifest.last_seq),
        (Some(1), Some(head))
    );
    assert_eq!(
        verify_jsonl(&body[..], &manifest, &key, |_| {}),
        Ok(head as u64)
    );
    // Asked again, either way: the same manifest, byte for byte.
    let again = app
        .get(
            &format!("/v1/audit/export/manifest?export_id={id}"),
            &app.auditor(),
        )
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(again, by_path);
    // A second export of the same query is another export, of a later range,
    // which verifies with its own manifest; the first's range does not move.
    let second = app
        .get(&format!("/v1/audit/export?{query}"), &app.auditor())
        .await;
    let second_id = header(&second, "kihon4-export-id").unwrap();
    assert_ne!(second_id, id);
    let second_last: i64 = header(&second, "kihon4-last-seq").unwrap().parse().unwrap();
    assert!(second_last > head + 1, "{second_last}");
    let second_body = second.bytes().await.unwrap();
    let second_manifest: Manifest = app
        .get(
            &format!("/v1/audit/exports/{second_id}/manifest"),
            &app.auditor(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        verify_jsonl(&second_body[..], &second_manifest, &key, |_| {}),
        Ok(second_last as u64)
    );
    let first_again = app
        .get(&format!("/v1/audit/exports/{id}/manifest"), &app.auditor())
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(first_again, by_path);
    // The companion of exactly that export's events.
    let pii = app.token(&[kihon4_core::auth::Role::AuditorPii]);
    expect_problem(
        app.get(
            &format!("/v1/audit/exports/{id}/personal-data"),
            &app.auditor(),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    let values = app
        .get(&format!("/v1/audit/exports/{id}/personal-data"), &pii)
        .await;
    assert_eq!(values.status(), 200);
    assert_eq!(header(&values, "kihon4-last-seq"), Some(head.to_string()));
    let values = values.bytes().await.unwrap();
    let (events, checked) = verify_with_personal(
        &body[..],
        &manifest,
        &key,
        Some(Companion::new(&values[..])),
        |_| {},
    )
    .unwrap();
    assert_eq!((events, checked > 0), (head as u64, true));
    // A companion-only export has no manifest of its own.
    let only_values = app
        .get(
            &format!("/v1/audit/export?include_personal_data=true&{query}"),
            &pii,
        )
        .await;
    assert!(header(&only_values, "kihon4-last-seq").is_some());
    let only_id = header(&only_values, "kihon4-export-id").unwrap();
    expect_problem(
        app.get(
            &format!("/v1/audit/exports/{only_id}/manifest"),
            &app.auditor(),
        )
        .await,
        404,
        "not-found",
    )
    .await;
    // A manifest by time range alone, or mixed with one, is refused; an
    // unknown export is not found; none of it writes anything.
    let events_before = app.count(audit_events::Entity).await;
    let exports_before = app.count(audit_exports::Entity).await;
    let problem = expect_problem(
        app.get(
            &format!("/v1/audit/export/manifest?{query}"),
            &app.auditor(),
        )
        .await,
        400,
        "invalid-query",
    )
    .await;
    assert_eq!(crate::helpers::problem_fields(&problem), vec!["export_id"]);
    let problem = expect_problem(
        app.get(
            &format!("/v1/audit/export/manifest?export_id={id}&to=2100-01-01T00:00:00Z"),
            &app.auditor(),
        )
        .await,
        400,
        "invalid-query",
    )
    .await;
    assert_eq!(crate::helpers::problem_fields(&problem), vec!["to"]);
    expect_problem(
        app.get("/v1/audit/export/manifest?export_id=nope", &app.auditor())
            .await,
        400,
        "invalid-query",
    )
    .await;
    let unknown = uuid::Uuid::now_v7();
    expect_problem(
        app.get(
            &format!("/v1/audit/exports/{unknown}/manifest"),
            &app.auditor(),
        )
        .await,
        404,
        "not-found",
    )
    .await;
    expect_problem(
        app.get(
            &format!("/v1/audit/export/manifest?export_id={unknown}"),
            &app.auditor(),
        )
        .await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(app.count(audit_events::Entity).await, events_before);
    assert_eq!(app.count(audit_exports::Entity).await, exports_before);
    assert_eq!(exports_before, 3);
    expect_problem(
        app.get(&format!("/v1/audit/exports/{id}/manifest"), &app.operator())
            .await,
        403,
        "forbidden",
    )
    .await;
    app.assert_chain_verifies().await;
}

async fn an_append_that_finds_the_head_held_is_queued_then_sequenced_whole(backend: Backend) {
    use kihon4_core::audit::events::{ConsentWithdrawn, Event, WithdrawnBy};
    use kihon4_core::audit::{Actor, AuditContext, AuditEvent, append, queue};
    use kihon4_core::entities::{audit_events, audit_personal_values, change_events};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
    let app = TestApp::spawn(backend).await;
    let customer = app.create_customer("QUEUE-1").await;
    let customer_id: uuid::Uuid = customer["id"].as_str().unwrap().parse().unwrap();
    let ctx = AuditContext::new(Actor::worker(), Some("req-queued".into()));
    let withdrawn = || {
        Event::ConsentWithdrawn(ConsentWithdrawn {
            consent_id: uuid::Uuid::now_v7(),
            customer_id,
            withdrawn_at: chrono::Utc::now(),
            by: WithdrawnBy::Provider {
                job: uuid::Uuid::now_v7(),
                notice: None,
            },
        })
    };
    // A holds the chain's head: its event is in the chain, not committed.
    let a = kihon4_core::db::begin_write(&app.db).await.unwrap();
    let first = append(&a, &ctx, AuditEvent::new("test.holding", "test", None))
        .await
        .unwrap()
        .expect("the head was free");
    if matches!(backend, Backend::Sqlite) {
        // One writer at a time: never queued.
        a.commit().await.unwrap();
        assert_eq!(queue::depth(&app.db).await.unwrap(), 0);
        return;
    }
    // B finds it held: its event (with a personal value) is queued.
    let b = app.db.begin().await.unwrap();
    let mut personal = AuditEvent::new("test.queued", "test", Some("q".into()));
    let email = personal.commit("after.email", "queued@example.jp");
    let personal = personal
        .set("after", serde_json::json!({"email": email}))
        .with_customer(customer_id);
    let started = std::time::Instant::now();
    assert_eq!(append(&b, &ctx, personal).await.unwrap(), None);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // A transaction that is rolled back queues nothing.
    let c = app.db.begin().await.unwrap();
    assert_eq!(
        append(&c, &ctx, AuditEvent::new("test.forgotten", "test", None))
            .await
            .unwrap(),
        None
    );
    c.rollback().await.unwrap();
    // A commits; B's next event (with a change feed event) queues too,
    // though the head is free now: it must come after B's first.
    a.commit().await.unwrap();
    assert_eq!(append(&b, &ctx, withdrawn()).await.unwrap(), None);
    b.commit().await.unwrap();
    let in_chain = |action: &'static str| {
        let db = app.db.clone();
        async move {
            audit_events::Entity::find()
                .filter(audit_events::Column::Action.eq(action))
                .all(&db)
                .await
                .unwrap()
        }
    };

    // A round puts B's events after A's, whole and in order.
    queue::sequence_all(&app.db).await.unwrap();
    assert_eq!(queue::depth(&app.db).await.unwrap(), 0);
    let queued = in_chain("test.queued").await;
    assert_eq!(queued.len(), 1);
    let queued = &queued[0];
    assert_eq!(queued.seq, first + 1);
    assert_eq!(queued.request_id.as_deref(), Some("req-queued"));
    let canonical: Value = serde_json::from_str(&queued.canonical).unwrap();
    assert_eq!(canonical["customer_ref"], "QUEUE-1", "{canonical}");
    let values = audit_personal_values::Entity::find()
        .filter(audit_personal_values::Column::Seq.eq(queued.seq))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].value.as_deref(), Some("queued@example.jp"));
    let withdrawal = in_chain("consent.withdrawn").await;
    assert_eq!(withdrawal[0].seq, first + 2);
    let feed = change_events::Entity::find()
        .filter(change_events::Column::AuditSeq.eq(first + 2))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(feed.len(), 1, "the change feed's event came with it");
    assert_eq!(feed[0].event_type, "consent.withdrawn");
    assert!(in_chain("test.forgotten").await.is_empty());
    app.assert_chain_verifies().await;
}
