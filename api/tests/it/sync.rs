//! Sync end to end against the simulator, on SQLite and PostgreSQL: each
//! life event ends in the right state, with history, review, audit event and
//! notice, and a second run changes nothing and sends nothing.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kihon4_core::config::{JpkiRole, Revocation};
use kihon4_core::consent::registrations::run_due;
use kihon4_core::entities::{
    audit_events, audit_personal_values, basic4_history, outbox, provider_registrations, reviews,
    revocation_checks, sync_jobs, sync_runs,
};
use kihon4_core::sync::SyncSettings;
use kihon4_core::sync::jobs::process_due;
use kihon4_test_support::both;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::ExprTrait};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Backend, TestApp, expect_problem, notices};
use crate::sim::{Signer, TestSim, spawn_sim};

both!(
    every_life_event_reaches_the_record_once,
    runs_refuse_what_cannot_be_synced,
    a_revoked_run_asks_only_about_certificates_in_the_crl,
    a_provider_having_a_bad_day_delays_sync_but_applies_each_change_once,
    a_service_provider_detects_by_liveness_checks,
    a_consent_withdrawn_before_the_answer_keeps_the_record_as_it_was,
    a_job_taken_over_does_not_hold_back_the_rest_of_its_batch,
);

/// A customer who consented with a resident's card, registered with the provider.
pub(crate) async fn consenting(
    app: &TestApp,
    sim: &TestSim,
    external_ref: &str,
    name: &str,
) -> (String, Signer) {
    let res = app
        .post(
            "/v1/customers",
            &app.operator(),
            &json!({"external_ref": external_ref, "email": format!("{external_ref}@example.jp"), "locale": "ja"}),
        )
        .await;
    let customer = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let signer = sim
        .resident_with(json!({
            "name": name,
            "address": "東京都千代田区千代田1-1",
            "birth_date": "1980-02-17",
            "gender": "1"
        }))
        .await;
    let texts: Value = app
        .get("/v1/consent-texts", &app.operator())
        .await
        .json()
        .await
        .unwrap();
    let text = texts["items"][0]["text"].as_str().unwrap();
    let res = app
        .post(
            &format!("/v1/customers/{customer}/consents"),
            &app.operator(),
            &json!({
                "text_version": texts["items"][0]["version"],
                "channel": "online_signature",
                "signed_document_b64": B64.encode(signer.sign(text.as_bytes(), true)),
            }),
        )
        .await;
    assert_eq!(res.status(), 201);
    (customer, signer)
}

pub(crate) async fn customer(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/customers/{id}"), &app.operator())
        .await
        .json()
        .await
        .unwrap()
}

async fn run_sync(app: &TestApp, sim: &TestSim) -> Value {
    let res = app
        .post("/v1/sync/runs", &app.operator(), &json!({"scope": "all"}))
        .await;
    assert_eq!(res.status(), 202);
    let run: Value = res.json().await.unwrap();
    assert_eq!(run["status"], "running");
    let summary = process(app, sim, 1000).await;
    assert_eq!((summary.retried, summary.failed), (0, 0));
    kihon4_core::sync::runs::complete_finished(&app.db)
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap();
    app.get(&format!("/v1/sync/runs/{id}"), &app.operator())
        .await
        .json()
        .await
        .unwrap()
}

/// Claims and applies due jobs as a worker does.
pub(crate) async fn process(
    app: &TestApp,
    sim: &TestSim,
    limit: u64,
) -> kihon4_core::sync::jobs::Summary {
    process_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        SyncSettings::default(),
        "test-worker",
        limit,
    )
    .await
    .unwrap()
}

/// The customer withdraws their consent (the first listed) at the institution.
async fn withdraw_consent(app: &TestApp, customer: &str) {
    let consents: Value = app
        .get(
            &format!("/v1/customers/{customer}/consents"),
            &app.operator(),
        )
        .await
        .json()
        .await
        .unwrap();
    let consent = consents["items"][0]["id"].as_str().unwrap();
    let res = app
        .post(
            &format!("/v1/consents/{consent}/withdraw"),
            &app.operator(),
            &json!({"reason": "お客さまからの申し出"}),
        )
        .await;
    assert_eq!(res.status(), 200);
}

async fn notices_of(app: &TestApp, kind: &str) -> i64 {
    app.count_notices(kind).await
}

async fn every_life_event_reaches_the_record_once(backend: Backend) {
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let (stays, _) = consenting(&app, &sim, "S-stays", "山田太郎").await;
    let (moves, moving) = consenting(&app, &sim, "S-moves", "佐藤花子").await;
    let (renames, renaming) = consenting(&app, &sim, "S-renames", "鈴木一郎").await;
    let (dies, dying) = consenting(&app, &sim, "S-dies", "高橋次郎").await;
    let (loses, losing) = consenting(&app, &sim, "S-loses", "田中三郎").await;
    let (leaves, leaving) = consenting(&app, &sim, "S-leaves", "伊藤四郎").await;
    let (waits, waiting) = consenting(&app, &sim, "S-waits", "渡辺五郎").await;
    let (unknown, _) = consenting(&app, &sim, "S-unknown", "山本六郎").await;
    run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "test-worker",
        100,
    )
    .await
    .unwrap();

    // What happens on the register.
    sim.life_event_with(
        &moving,
        json!({"kind": "move", "basic4": {"address": "大阪府大阪市北区梅田1-1",
               "overseas_move": {"scheduled_on": "2027-04-01"}}}),
    )
    .await;
    // The optional items J-LIS returns where the register has them.
    sim.life_event_with(
        &renaming,
        json!({"kind": "rename", "basic4": {"name": "佐々木一郎",
               "name_kana": "ササキ イチロウ", "former_surname": "鈴木"}}),
    )
    .await;
    sim.life_event(&dying, "death").await;
    sim.life_event(&losing, "card_lost").await;
    sim.life_event_with(&waiting, json!({"kind": "move", "basic4": {"address": "福岡県福岡市中央区天神1-1"}, "reissue": false}))
        .await;
    // Withdrawn outside the institution: the provider holds no consent any more.
    let serial = kihon4_core::domain::CertSerial::parse(&leaving.serial).unwrap();
    sim.provider().unsubscribe(&serial).await.unwrap();
    // A record tied to a certificate J-LIS never issued.
    {
        use kihon4_core::entities::customers as rows;
        rows::Entity::update_many()
            .col_expr(
                rows::Column::JpkiCertSerial,
                sea_orm::sea_query::Expr::value("7fffffff0001"),
            )
            .filter(rows::Column::Id.eq(Uuid::parse_str(&unknown).unwrap()))
            .exec(&app.db)
            .await
            .unwrap();
    }

    let history_before = app.count(basic4_history::Entity).await;
    let run = run_sync(&app, &sim).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["jobs"], 8);
    for (outcome, n) in [
        ("unchanged", 1),
        ("changed", 2),
        ("deceased", 1),
        ("revoked", 1),
        ("not_subscribed", 1),
        ("unknown_certificate", 1),
    ] {
        assert_eq!(run["counts"][outcome], n, "{outcome} in {run}");
    }
    assert_eq!(
        run["counts"]["awaiting_reissue"], 1,
        "asked again later: {run}"
    );
    assert_eq!(
        app.count_where(
            sync_jobs::Entity,
            sync_jobs::Column::Status
                .eq("pending")
                .and(sync_jobs::Column::Outcome.eq("awaiting_reissue"))
        )
        .await,
        1
    );

    // The move and the rename: the record, its history, the new certificate, a notice.
    let moved = customer(&app, &moves).await;
    assert_eq!(moved["basic4"]["address"], "大阪府大阪市北区梅田1-1");
    assert_ne!(moved["jpki_cert_serial"], moving.serial.as_str());
    assert_eq!(
        moved["basic4"]["overseas_move"]["scheduled_on"],
        "2027-04-01"
    );
    let renamed = customer(&app, &renames).await;
    assert_eq!(renamed["basic4"]["name"], "佐々木一郎");
    assert_eq!(renamed["basic4"]["name_kana"], "ササキ イチロウ");
    assert_eq!(renamed["basic4"]["former_surname"], "鈴木");
    assert!(
        customer(&app, &stays).await["basic4"]
            .get("former_surname")
            .is_none(),
        "left out where J-LIS returned none"
    );
    assert_eq!(app.count(basic4_history::Entity).await, history_before + 2);
    let renamed_history: Value = app
        .get(&format!("/v1/customers/{renames}/history"), &app.operator())
        .await
        .json()
        .await
        .unwrap();
    let last = renamed_history["items"].as_array().unwrap().last().unwrap();
    assert_eq!(last["after"]["former_surname"], "鈴木");
    // The audit event commits to the new items, in no clear text.
    assert_eq!(
        app.count_where(
            audit_personal_values::Entity,
            audit_personal_values::Column::Field.eq("after.optional.former_surname")
        )
        .await,
        1
    );
    assert_eq!(
        app.count_where(
            audit_events::Entity,
            audit_events::Column::Canonical
                .contains("鈴木")
                .and(audit_events::Column::Action.eq("customer.updated"))
        )
        .await,
        0
    );
    let history: Value = app
        .get(&format!("/v1/customers/{moves}/history"), &app.operator())
        .await
        .json()
        .await
        .unwrap();
    let last = history["items"].as_array().unwrap().last().unwrap();
    assert_eq!(last["source"], "sync");
    assert!(last["reported_on"].is_string());
    assert_eq!(notices_of(&app, "basic4_changed").await, 2);
    // The notices name what changed; of the new address only its
    // municipality, of the new name nothing, nor in the greeting.
    let message_to = |customer: &str| {
        use kihon4_core::entities::outbox;
        let id = Uuid::parse_str(customer).unwrap();
        let db = app.db.clone();
        async move {
            let row = outbox::Entity::find()
                .filter(outbox::Column::Kind.eq("basic4_changed"))
                .filter(outbox::Column::CustomerId.eq(id))
                .one(&db)
                .await
                .unwrap()
                .unwrap();
            kihon4_test_support::mail::decoded_text(&row.message).replace("\r\n", "\n")
        }
    };
    let moved_mail = message_to(&moves).await;
    assert!(
        moved_mail.contains("・住所：大阪府大阪市北区（以下省略）"),
        "{moved_mail}"
    );
    assert!(!moved_mail.contains("梅田"));
    assert!(moved_mail.contains("・国外転出予定日\n"), "{moved_mail}");
    assert!(!moved_mail.contains("2027年4月1日"));
    let renamed_mail = message_to(&renames).await;
    assert!(renamed_mail.contains("・氏名\n"), "{renamed_mail}");
    assert!(renamed_mail.contains("お客さま\n"));
    for new in ["佐々木", "ササキ", "鈴木"] {
        assert!(!renamed_mail.contains(new), "{new} in the notice");
    }
    // The subscription follows the new certificate.
    assert_eq!(
        app.count_where(
            provider_registrations::Entity,
            provider_registrations::Column::Action
                .eq("unsubscribe")
                .and(provider_registrations::Column::Status.eq("pending"))
        )
        .await,
        2
    );
    let unchanged = customer(&app, &stays).await;
    assert_eq!(unchanged["version"], 2, "only the consent changed it");

    // The death, the lost card, the unknown certificate: reviews.
    assert_eq!(customer(&app, &dies).await["status"], "deceased");
    let reviews: Value = app
        .get("/v1/reviews?status=open", &app.operator())
        .await
        .json()
        .await
        .unwrap();
    let mut kinds: Vec<(String, String)> = reviews["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["customer_id"].as_str().unwrap().to_owned(),
                r["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    kinds.sort();
    let mut expected = vec![
        (dies.clone(), "deceased".to_owned()),
        (loses.clone(), "revoked".to_owned()),
        (unknown.clone(), "unknown_certificate".to_owned()),
    ];
    expected.sort();
    assert_eq!(kinds, expected);
    assert_eq!(notices_of(&app, "certificate_revoked").await, 1);

    // Withdrawn outside: the consent is over, the customer told how to consent again.
    let consents: Value = app
        .get(&format!("/v1/customers/{leaves}/consents"), &app.operator())
        .await
        .json()
        .await
        .unwrap();
    let consent = &consents["items"][0];
    assert_eq!(consent["status"], "withdrawn");
    assert_eq!(consent["events"][1]["actor"], "provider");
    assert_eq!(notices_of(&app, "consent_lapsed").await, 1);
    assert_eq!(
        app.count_where(
            audit_events::Entity,
            audit_events::Column::Action
                .eq("consent.withdrawn")
                .and(audit_events::Column::Actor.eq("provider"))
        )
        .await,
        1
    );

    // The provider holds no registration for the consent withdrawn outside.
    assert_eq!(consent["registration"], "unregistered");
    let lost_review = reviews["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "revoked")
        .unwrap();
    assert_eq!(lost_review["detail"]["reason"], "lost");

    // A second run: nothing more is changed, opened or sent.
    let outbox = app.count(outbox::Entity).await;
    let reviews_count = app.count(reviews::Entity).await;
    let history = app.count(basic4_history::Entity).await;
    let run = run_sync(&app, &sim).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(app.count(outbox::Entity).await, outbox);
    assert_eq!(app.count(reviews::Entity).await, reviews_count);
    assert_eq!(app.count(basic4_history::Entity).await, history);
    assert_eq!(run["counts"]["changed"], Value::Null, "{run}");

    // Withdrawing after the move removes the registration of the new certificate.
    withdraw_consent(&app, &moves).await;
    let new_serial = moved["jpki_cert_serial"].as_str().unwrap();
    assert_eq!(
        app.count_where(
            provider_registrations::Entity,
            provider_registrations::Column::Action
                .eq("unsubscribe")
                .and(provider_registrations::Column::CertSerial.eq(new_serial))
                .and(provider_registrations::Column::Status.eq("pending"))
        )
        .await,
        1
    );

    // A review is closed by a person, audited.
    let review = reviews["items"][0]["id"].as_str().unwrap();
    let res = app
        .post(
            &format!("/v1/reviews/{review}/resolve"),
            &app.operator(),
            &json!({"resolution": "confirmed", "note": "戸籍の届出を確認しました"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "resolved");
    expect_problem(
        app.post(
            &format!("/v1/reviews/{review}/resolve"),
            &app.operator(),
            &json!({"resolution": "confirmed", "note": "again"}),
        )
        .await,
        409,
        "review-not-open",
    )
    .await;
    app.assert_chain_verifies().await;
    let _ = waits;
}

async fn runs_refuse_what_cannot_be_synced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app.create_customer("R-1").await;
    let id = created["id"].as_str().unwrap();
    for (body, field) in [
        (json!({}), "scope"),
        (json!({"scope": "everything"}), "scope"),
        (json!({"scope": "customer"}), "customer_id"),
        (json!({"scope": "all", "customer_id": id}), "customer_id"),
        (
            json!({"scope": "customer", "customer_id": "nope"}),
            "customer_id",
        ),
    ] {
        let problem = expect_problem(
            app.post("/v1/sync/runs", &app.operator(), &body).await,
            422,
            "validation",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    expect_problem(
        app.post(
            "/v1/sync/runs",
            &app.operator(),
            &json!({"scope": "customer", "customer_id": id}),
        )
        .await,
        409,
        "customer-not-consenting",
    )
    .await;
    expect_problem(
        app.post(
            "/v1/sync/runs",
            &app.operator(),
            &json!({"scope": "customer", "customer_id": Uuid::now_v7().to_string()}),
        )
        .await,
        404,
        "not-found",
    )
    .await;
    expect_problem(
        app.post("/v1/sync/runs", &app.auditor(), &json!({"scope": "all"}))
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(app.count(sync_runs::Entity).await, 0, "nothing was written");
    // An empty run completes at once.
    let res = app
        .post("/v1/sync/runs", &app.operator(), &json!({"scope": "all"}))
        .await;
    assert_eq!(res.status(), 202);
    kihon4_core::sync::runs::complete_finished(&app.db)
        .await
        .unwrap();
    let runs: Value = app
        .get("/v1/sync/runs", &app.operator())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(runs["items"][0]["status"], "completed");
    assert_eq!(runs["items"][0]["jobs"], 0);
}

async fn a_revoked_run_asks_only_about_certificates_in_the_crl(backend: Backend) {
    use kihon4_core::jpki::verify::TrustAnchors;
    use kihon4_core::sync::{detect, runs};
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let (moves, moving) = consenting(&app, &sim, "D-moves", "佐藤花子").await;
    let (_stays, _) = consenting(&app, &sim, "D-stays", "山田太郎").await;
    run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "test-worker",
        100,
    )
    .await
    .unwrap();
    sim.life_event_with(
        &moving,
        json!({"kind": "move", "basic4": {"address": "京都府京都市下京区烏丸通1"}}),
    )
    .await;
    sim.publish_crl().await;

    let res = app
        .post(
            "/v1/sync/runs",
            &app.operator(),
            &json!({"scope": "revoked"}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let run: Value = res.json().await.unwrap();
    assert_eq!(run["status"], "queued");
    assert_eq!(run["jobs"], 0);

    // What the worker does with a queued run.
    let taken = runs::take_queued(&app.db, std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .expect("a queued run");
    assert!(
        runs::take_queued(&app.db, std::time::Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "taken once"
    );
    let anchors = TrustAnchors::load(&[sim.ca_pem()]).unwrap();
    let found = detect::by_crl(&app.db, sim.provider().as_ref(), &anchors)
        .await
        .unwrap();
    assert_eq!(
        found,
        vec![(Uuid::parse_str(&moves).unwrap(), moving.serial.clone())]
    );
    runs::detected(&app.db, taken.id, &found).await.unwrap();
    let done = process(&app, &sim, 1000).await;
    assert_eq!(done.outcomes.get("changed"), Some(&1));
    runs::complete_finished(&app.db).await.unwrap();
    let run: Value = app
        .get(&format!("/v1/sync/runs/{}", taken.id), &app.operator())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(run["status"], "completed");
    assert_eq!(run["jobs"], 1);
    assert_eq!(
        customer(&app, &moves).await["basic4"]["address"],
        "京都府京都市下京区烏丸通1"
    );
    // What the worker reads into kihon4_sync_last_completed_timestamp_seconds.
    let finished: chrono::DateTime<chrono::Utc> =
        run["finished_at"].as_str().unwrap().parse().unwrap();
    let last = runs::last_completed(&app.db).await.unwrap();
    let (_, at) = last
        .iter()
        .find(|(scope, _)| scope == "revoked")
        .unwrap_or_else(|| panic!("{last:?}"));
    assert!(
        (*at - finished).num_milliseconds().abs() < 1000,
        "{at} {finished}"
    );
    // The CRL's age and the completed run are counted (docs/operations.md).
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kihon4_crl_age_seconds"), "{metrics}");
    assert!(
        metrics.contains("kihon4_sync_runs_total{outcome=\"completed\"}"),
        "{metrics}"
    );

    // A CRL from anyone else is refused: the run fails with the reason.
    let foreign = TrustAnchors::load(&[shared_anchor()]).unwrap();
    let refused = detect::by_crl(&app.db, sim.provider().as_ref(), &foreign).await;
    assert!(refused.is_err());

    // A run abandoned in detection (its worker died) is taken over after a while.
    let res = app
        .post(
            "/v1/sync/runs",
            &app.operator(),
            &json!({"scope": "revoked"}),
        )
        .await;
    let abandoned = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = runs::take_queued(&app.db, std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .expect("queued");
    assert_eq!(first.id.to_string(), abandoned);
    assert!(
        runs::take_queued(&app.db, std::time::Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "not yet"
    );
    assert!(
        runs::renew_detection(&app.db, first.id, std::time::Duration::from_secs(60))
            .await
            .unwrap(),
        "the worker detecting renews its lease"
    );
    {
        use kihon4_core::entities::sync_runs as rows;
        rows::Entity::update_many()
            .col_expr(
                rows::Column::LeaseExpiresAt,
                sea_orm::sea_query::Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
            )
            .filter(rows::Column::Id.eq(first.id))
            .exec(&app.db)
            .await
            .unwrap();
    }
    let again = runs::take_queued(&app.db, std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .expect("taken over");
    assert_eq!(again.id, first.id);
    // Both workers finish detecting: the run's customers are enqueued once.
    assert_eq!(runs::detected(&app.db, first.id, &found).await.unwrap(), 1);
    assert_eq!(
        runs::detected(&app.db, first.id, &found).await.unwrap(),
        0,
        "the second to finish enqueues nothing"
    );

    // Two workers see the same scheduled tick: one acts on it.
    let tick = chrono::Utc::now();
    assert!(
        runs::claim_tick(&app.db, "sync.detect", tick, "worker-a")
            .await
            .unwrap()
    );
    assert!(
        !runs::claim_tick(&app.db, "sync.detect", tick, "worker-b")
            .await
            .unwrap()
    );
}

fn shared_anchor() -> std::path::PathBuf {
    crate::sim::shared_fixtures().join("jpki-trust-anchors/sign_ca_2023.pem")
}

async fn a_provider_having_a_bad_day_delays_sync_but_applies_each_change_once(backend: Backend) {
    use kihon4_sim::faults::Faults;
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let mut movers = Vec::new();
    for i in 0..6 {
        let (customer, signer) = consenting(&app, &sim, &format!("F-{i}"), "中村七郎").await;
        if i % 2 == 0 {
            movers.push((customer, signer));
        }
    }
    run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "test-worker",
        100,
    )
    .await
    .unwrap();
    for (i, (_, signer)) in movers.iter().enumerate() {
        sim.life_event_with(signer, json!({"kind": "move", "basic4": {"address": format!("愛知県名古屋市中区栄{}-1", i + 1)}}))
            .await;
    }
    let res = app
        .post("/v1/sync/runs", &app.operator(), &json!({"scope": "all"}))
        .await;
    let run = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Maintenance first, then errors, malformed answers and latency.
    sim.set_faults(Faults {
        maintenance: true,
        maintenance_retry_after_s: 1,
        ..Faults::default()
    });
    let mut rounds = 0;
    let status = loop {
        if rounds == 2 {
            sim.set_faults(Faults {
                error_rate: 0.3,
                malformed_rate: 0.1,
                latency_ms: 20,
                ..Faults::default()
            });
        }
        rounds += 1;
        assert!(rounds < 60, "the run never completed");
        process(&app, &sim, 1000).await;
        kihon4_core::sync::runs::complete_finished(&app.db)
            .await
            .unwrap();
        let now: Value = app
            .get(&format!("/v1/sync/runs/{run}"), &app.operator())
            .await
            .json()
            .await
            .unwrap();
        if now["status"] == "completed" {
            break now;
        }
        // Time passes: jobs waiting for their backoff are due again.
        app.db
            .execute_unprepared("UPDATE sync_jobs SET run_at = created_at WHERE status = 'pending'")
            .await
            .unwrap();
    };
    assert!(rounds > 2, "the faults made it wait");
    assert_eq!(status["counts"]["changed"], 3, "{status}");
    assert_eq!(status["counts"]["unchanged"], 3, "{status}");
    assert_eq!(status["counts"]["failed"], Value::Null, "{status}");
    // Each change once: one history row from sync and one notice per mover.
    assert_eq!(
        app.count_where(
            basic4_history::Entity,
            basic4_history::Column::Source.eq("sync")
        )
        .await,
        3
    );
    assert_eq!(app.count_notices("basic4_changed").await, 3);
    for (customer_id, _) in &movers {
        let record = customer(&app, customer_id).await;
        assert!(
            record["basic4"]["address"]
                .as_str()
                .unwrap()
                .starts_with("愛知県名古屋市中区栄")
        );
    }
    app.assert_chain_verifies().await;
}

async fn a_service_provider_detects_by_liveness_checks(backend: Backend) {
    use kihon4_core::sync::detect;
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.service_provider(), JpkiRole::ServiceProvider).await;
    let (lost, losing) = consenting(&app, &sim, "L-lost", "小林八郎").await;
    let (_fine, _) = consenting(&app, &sim, "L-fine", "加藤九郎").await;
    sim.life_event(&losing, "card_lost").await;
    let found = detect::by_liveness(&app.db, sim.provider().as_ref())
        .await
        .unwrap();
    assert_eq!(
        found,
        vec![(Uuid::parse_str(&lost).unwrap(), losing.serial.clone())]
    );
    assert_eq!(
        app.count_where(
            revocation_checks::Entity,
            revocation_checks::Column::Purpose.eq("liveness_check")
        )
        .await,
        2,
        "every certificate checked is recorded"
    );
    let from = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let to = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let report: Value = app
        .get(
            &format!(
                "/v1/reports/revocation-checks?from={}&to={}",
                url::form_urlencoded::byte_serialize(from.as_bytes()).collect::<String>(),
                url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
            ),
            &app.auditor(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["liveness_check"], 2);
    assert_eq!(report["signature_verification"], 2);
}

async fn a_consent_withdrawn_before_the_answer_keeps_the_record_as_it_was(backend: Backend) {
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let (id, signer) = consenting(&app, &sim, "W-1", "井上十一").await;
    run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "test-worker",
        100,
    )
    .await
    .unwrap();
    sim.life_event_with(
        &signer,
        json!({"kind": "move", "basic4": {"address": "沖縄県那覇市泉崎1-2-2"}}),
    )
    .await;
    let res = app
        .post("/v1/sync/runs", &app.operator(), &json!({"scope": "all"}))
        .await;
    let run = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Withdrawn after the job was made, before J-LIS's answer is applied.
    withdraw_consent(&app, &id).await;
    let done = process(&app, &sim, 100).await;
    assert_eq!(done.outcomes.get("consent_ended"), Some(&1), "{done:?}");
    assert_eq!(
        customer(&app, &id).await["basic4"]["address"],
        "東京都千代田区千代田1-1"
    );
    assert_eq!(
        app.count_where(
            basic4_history::Entity,
            basic4_history::Column::Source.eq("sync")
        )
        .await,
        0
    );
    assert_eq!(notices_of(&app, "basic4_changed").await, 0);
    kihon4_core::sync::runs::complete_finished(&app.db)
        .await
        .unwrap();
    let status: Value = app
        .get(&format!("/v1/sync/runs/{run}"), &app.operator())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["counts"]["consent_ended"], 1);
}

async fn a_job_taken_over_does_not_hold_back_the_rest_of_its_batch(backend: Backend) {
    use kihon4_core::entities::sync_jobs;
    use kihon4_core::sync::{apply::apply_batch, jobs::claim};
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let mut ids = Vec::new();
    for (i, name) in ["石川一", "石川二", "石川三"].iter().enumerate() {
        let (id, signer) = consenting(&app, &sim, &format!("B-{i}"), name).await;
        sim.life_event_with(
            &signer,
            json!({"kind": "move", "basic4": {"address": format!("石川県金沢市広坂{}-1-1", i + 1)}}),
        )
        .await;
        ids.push(Uuid::parse_str(&id).unwrap());
    }
    run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "test-worker",
        100,
    )
    .await
    .unwrap();
    let res = app
        .post("/v1/sync/runs", &app.operator(), &json!({"scope": "all"}))
        .await;
    assert_eq!(res.status(), 202);
    let jobs = claim(
        &app.db,
        "test-worker",
        10,
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(jobs.len(), 3);
    let serials: Vec<_> = jobs
        .iter()
        .map(|j| kihon4_core::domain::CertSerial::parse(&j.cert_serial).unwrap())
        .collect();
    let answers = sim.provider().latest_basic4(&serials).await.unwrap();
    // The second job's lease ran out and another worker holds it now.
    let taken = jobs[1].id;
    sync_jobs::Entity::update_many()
        .col_expr(
            sync_jobs::Column::LeaseOwner,
            sea_orm::sea_query::Expr::value("another-worker"),
        )
        .filter(sync_jobs::Column::Id.eq(taken))
        .exec(&app.db)
        .await
        .unwrap();
    let pairs: Vec<_> = jobs.iter().zip(answers.iter().map(|a| &a.latest)).collect();
    let results = apply_batch(
        &app.db,
        &notices(),
        SyncSettings::default(),
        "test-worker",
        &pairs,
    )
    .await;
    let outcomes: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(outcomes, [Some("changed"), None, Some("changed")]);
    assert_eq!(
        app.count_where(
            basic4_history::Entity,
            basic4_history::Column::Source.eq("sync")
        )
        .await,
        2
    );
    assert_eq!(notices_of(&app, "basic4_changed").await, 2);
    let untouched = ids
        .iter()
        .find(|id| **id == jobs[1].customer_id)
        .unwrap()
        .to_string();
    assert_eq!(
        customer(&app, &untouched).await["basic4"]["address"],
        "東京都千代田区千代田1-1"
    );
    app.assert_chain_verifies().await;
}
