//! A consent's registration with the provider racing sync, on SQLite and
//! PostgreSQL, in both JPKI roles: a life event noticed before kihon4 has
//! registered the consent waits for the registration and is then applied
//! once; the consent is never taken for withdrawn; a registration refused
//! because the certificate was revoked opens a review and asks the customer
//! to consent again; an admin can have a registration retried.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kihon4_core::config::{JpkiRole, Revocation};
use kihon4_core::consent::registrations::{Summary, backlog, run_due};
use kihon4_core::entities::{
    audit_events, basic4_history, consent_events, provider_registrations, reviews, sync_jobs,
};
use kihon4_core::jpki::verify::TrustAnchors;
use kihon4_core::sync::{detect, runs};
use kihon4_sim::faults::Faults;
use kihon4_test_support::both;
use reqwest::StatusCode;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Backend, TestApp, expect_problem, notices};
use crate::sim::{TestSim, spawn_sim};
use crate::sync::{consenting, customer, process};

both!(
    a_move_before_registration_is_applied_once_platform,
    a_move_before_registration_is_applied_once_service_provider,
    an_outage_during_registration_then_a_move_is_applied_once_platform,
    an_outage_during_registration_then_a_move_is_applied_once_service_provider,
    a_certificate_revoked_before_registration_opens_a_review_and_asks_again,
    an_admin_retries_a_registration,
    a_not_subscribed_answer_racing_the_registration_withdraws_nothing,
);

async fn spawn(backend: Backend, sim: &TestSim, role: JpkiRole) -> TestApp {
    let verifier = match role {
        JpkiRole::Platform => sim.platform(Revocation::Crl),
        JpkiRole::ServiceProvider => sim.service_provider(),
    };
    TestApp::spawn_consent(backend, verifier, role).await
}

/// One round of the worker's registrations.
async fn register(app: &TestApp, sim: &TestSim) -> Summary {
    run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "test-worker",
        100,
    )
    .await
    .unwrap()
}

/// A `revoked` run, detected as the worker does in `role`; its id.
async fn revoked_run(app: &TestApp, sim: &TestSim, role: JpkiRole) -> Uuid {
    let res = app
        .post(
            "/v1/sync/runs",
            &app.operator(),
            &json!({"scope": "revoked"}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let taken = runs::take_queued(&app.db, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("a queued run");
    let found = match role {
        JpkiRole::Platform => {
            let anchors = TrustAnchors::load(&[sim.ca_pem()]).unwrap();
            detect::by_crl(&app.db, sim.provider().as_ref(), &anchors)
                .await
                .unwrap()
        }
        JpkiRole::ServiceProvider => detect::by_liveness(&app.db, sim.provider().as_ref())
            .await
            .unwrap(),
    };
    runs::detected(&app.db, taken.id, &found).await.unwrap();
    taken.id
}

async fn run(app: &TestApp, id: Uuid) -> Value {
    runs::complete_finished(&app.db).await.unwrap();
    app.get(&format!("/v1/sync/runs/{id}"), &app.operator())
        .await
        .json()
        .await
        .unwrap()
}

async fn consent_of(app: &TestApp, customer: &str) -> Value {
    let list: Value = app
        .get(
            &format!("/v1/customers/{customer}/consents"),
            &app.operator(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    list["items"][0].clone()
}

/// What waits for its backoff in [`time_passes`].
enum Waiting {
    Registrations,
    SyncJobs,
}

/// Time passes: whatever of `waiting` waits for its backoff is due again.
async fn time_passes(app: &TestApp, waiting: Waiting) {
    match waiting {
        Waiting::Registrations => {
            use provider_registrations::Column;
            provider_registrations::Entity::update_many()
                .col_expr(Column::RunAt, Expr::col(Column::CreatedAt))
                .filter(Column::Status.eq("pending"))
                .exec(&app.db)
                .await
                .unwrap();
        }
        Waiting::SyncJobs => {
            use sync_jobs::Column;
            sync_jobs::Entity::update_many()
                .col_expr(Column::RunAt, Expr::col(Column::CreatedAt))
                .filter(Column::Status.eq("pending"))
                .exec(&app.db)
                .await
                .unwrap();
        }
    }
}

/// The move was applied once, and the consent is active with no withdrawal.
async fn applied_once_and_consenting(app: &TestApp, id: &str, address: &str) {
    assert_eq!(customer(app, id).await["basic4"]["address"], address);
    assert_eq!(
        app.count_where(
            basic4_history::Entity,
            basic4_history::Column::Source.eq("sync")
        )
        .await,
        1
    );
    assert_eq!(app.count_notices("basic4_changed").await, 1);
    assert_eq!(
        app.count_where(
            audit_events::Entity,
            audit_events::Column::Action
                .eq("customer.updated")
                .and(audit_events::Column::Actor.eq("worker"))
        )
        .await,
        1
    );
    let consent = consent_of(app, id).await;
    assert_eq!(consent["status"], "active", "{consent}");
    assert_eq!(consent["withdrawn_at"], Value::Null);
    assert_eq!(
        app.count_where(
            consent_events::Entity,
            consent_events::Column::Kind.eq("withdrawn")
        )
        .await,
        0
    );
    assert_eq!(app.count_events("consent.withdrawn").await, 0);
    assert_eq!(app.count_notices("consent_lapsed").await, 0);
}

async fn a_move_before_registration_is_applied_once_platform(backend: Backend) {
    a_move_before_registration_is_applied_once(backend, JpkiRole::Platform).await
}

async fn a_move_before_registration_is_applied_once_service_provider(backend: Backend) {
    a_move_before_registration_is_applied_once(backend, JpkiRole::ServiceProvider).await
}

/// Consent, a move, the CRL (or a liveness check) and a run within a
/// second, before the worker registered the consent.
async fn a_move_before_registration_is_applied_once(backend: Backend, role: JpkiRole) {
    let sim = spawn_sim().await;
    let app = spawn(backend, &sim, role).await;
    let (id, signer) = consenting(&app, &sim, "R-moves", "佐藤花子").await;
    assert_eq!(consent_of(&app, &id).await["registration"], "pending");
    sim.life_event_with(
        &signer,
        json!({"kind": "move", "basic4": {"address": "大阪府大阪市北区梅田1-1"}}),
    )
    .await;
    sim.publish_crl().await;
    let run_id = revoked_run(&app, &sim, role).await;

    // Detection noticed the certificate; the job waits, the provider unasked.
    let asked = sim.sim.provider_requests();
    let done = process(&app, &sim, 100).await;
    assert_eq!(
        done.outcomes.get("awaiting_registration"),
        Some(&1),
        "{done:?}"
    );
    assert_eq!(sim.sim.provider_requests(), asked, "nothing asked");
    let status = run(&app, run_id).await;
    assert_eq!(status["jobs"], 1, "{status}");
    assert_eq!(status["counts"], json!({"awaiting_registration": 1}));
    assert_eq!(
        customer(&app, &id).await["basic4"]["address"],
        "東京都千代田区千代田1-1"
    );
    let consent = consent_of(&app, &id).await;
    assert_eq!(consent["status"], "active");
    assert_eq!(consent["registration"], "pending");
    // Not due again before the registration is carried out.
    assert_eq!(process(&app, &sim, 100).await.applied(), 0);

    // The worker registers the consent: the job is due at once, asked, applied.
    assert_eq!(register(&app, &sim).await.done, 1);
    assert_eq!(consent_of(&app, &id).await["registration"], "registered");
    let done = process(&app, &sim, 100).await;
    assert_eq!(done.outcomes.get("changed"), Some(&1), "{done:?}");
    let status = run(&app, run_id).await;
    assert_eq!(status["status"], "completed");
    assert_eq!(status["counts"], json!({"changed": 1}), "{status}");
    applied_once_and_consenting(&app, &id, "大阪府大阪市北区梅田1-1").await;

    // The subscription follows the certificate; asking again changes nothing.
    let moved = register(&app, &sim).await;
    assert_eq!((moved.done, moved.failed), (2, 0), "{moved:?}");
    let res = app
        .post("/v1/sync/runs", &app.operator(), &json!({"scope": "all"}))
        .await;
    let again = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    let done = process(&app, &sim, 100).await;
    assert_eq!(done.outcomes.get("unchanged"), Some(&1), "{done:?}");
    assert_eq!(run(&app, again).await["counts"], json!({"unchanged": 1}));
    applied_once_and_consenting(&app, &id, "大阪府大阪市北区梅田1-1").await;
    assert_eq!(consent_of(&app, &id).await["registration"], "registered");
    app.assert_chain_verifies().await;
}

async fn an_outage_during_registration_then_a_move_is_applied_once_platform(backend: Backend) {
    an_outage_during_registration_then_a_move_is_applied_once(backend, JpkiRole::Platform).await
}

async fn an_outage_during_registration_then_a_move_is_applied_once_service_provider(
    backend: Backend,
) {
    an_outage_during_registration_then_a_move_is_applied_once(backend, JpkiRole::ServiceProvider)
        .await
}

/// The provider is down while the worker first tries to register the
/// consent; the customer moves; a run asks; the provider recovers.
async fn an_outage_during_registration_then_a_move_is_applied_once(
    backend: Backend,
    role: JpkiRole,
) {
    let sim = spawn_sim().await;
    let app = spawn(backend, &sim, role).await;
    let (id, signer) = consenting(&app, &sim, "O-moves", "高橋次郎").await;
    sim.set_faults(Faults {
        maintenance: true,
        maintenance_retry_after_s: 1,
        ..Faults::default()
    });
    let round = register(&app, &sim).await;
    assert_eq!((round.done, round.retried), (0, 1), "{round:?}");
    let consent = consent_of(&app, &id).await;
    assert_eq!(consent["registration"], "pending", "{consent}");
    assert!(
        consent["registration_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "the failure shows: {consent}"
    );
    assert_eq!(consent["registration_attempts"], 1);
    assert!(consent["registration_retry_at"].is_string(), "{consent}");
    let gauges = backlog(&app.db).await.unwrap();
    assert_eq!((gauges.retrying, gauges.refused), (1, 0));
    assert!(gauges.oldest_pending_seconds >= 0.0);

    // The move, while the provider is still down.
    sim.set_faults(Faults::default());
    sim.life_event_with(
        &signer,
        json!({"kind": "move", "basic4": {"address": "福岡県福岡市中央区天神1-1"}}),
    )
    .await;
    sim.publish_crl().await;
    let run_id = revoked_run(&app, &sim, role).await;
    sim.set_faults(Faults {
        maintenance: true,
        maintenance_retry_after_s: 1,
        ..Faults::default()
    });
    let done = process(&app, &sim, 100).await;
    assert_eq!(
        done.outcomes.get("awaiting_registration"),
        Some(&1),
        "{done:?}"
    );
    assert_eq!((done.retried, done.failed), (0, 0), "not an attempt");
    time_passes(&app, Waiting::Registrations).await;
    assert_eq!(register(&app, &sim).await.retried, 1);
    // The job is looked at again while the registration still fails: it waits on.
    time_passes(&app, Waiting::SyncJobs).await;
    let done = process(&app, &sim, 100).await;
    assert_eq!(done.outcomes.get("awaiting_registration"), Some(&1));
    assert_eq!(
        app.count_where(
            sync_jobs::Entity,
            sync_jobs::Column::Attempts
                .eq(0)
                .and(sync_jobs::Column::Outcome.eq("awaiting_registration"))
        )
        .await,
        1,
        "waiting is not an attempt"
    );
    assert_eq!(
        run(&app, run_id).await["counts"],
        json!({"awaiting_registration": 1})
    );

    // The provider recovers.
    sim.set_faults(Faults::default());
    time_passes(&app, Waiting::Registrations).await;
    let round = register(&app, &sim).await;
    assert_eq!((round.done, round.retried), (1, 0), "{round:?}");
    let consent = consent_of(&app, &id).await;
    assert_eq!(consent["registration"], "registered");
    assert_eq!(consent["registration_error"], Value::Null);
    assert_eq!(consent["registration_retry_at"], Value::Null);
    assert_eq!(backlog(&app.db).await.unwrap().retrying, 0);
    let done = process(&app, &sim, 100).await;
    assert_eq!(done.outcomes.get("changed"), Some(&1), "{done:?}");
    assert_eq!(run(&app, run_id).await["counts"], json!({"changed": 1}));
    applied_once_and_consenting(&app, &id, "福岡県福岡市中央区天神1-1").await;
    // Nothing more comes of it.
    assert_eq!(process(&app, &sim, 100).await.applied(), 0);
    app.assert_chain_verifies().await;
}

/// A customer whose card was reported lost a moment before they signed:
/// the CRL kihon4 checked (published daily) did not list it yet, so the
/// consent is recorded; the provider refuses to register it.
async fn consenting_with_a_certificate_just_revoked(app: &TestApp, sim: &TestSim) -> String {
    let customer = app.create_customer("V-lost").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let signer = sim.resident().await;
    sim.life_event(&signer, "card_lost").await;
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
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    customer
}

async fn a_certificate_revoked_before_registration_opens_a_review_and_asks_again(backend: Backend) {
    let sim = spawn_sim().await;
    let app = spawn(backend, &sim, JpkiRole::Platform).await;
    let id = consenting_with_a_certificate_just_revoked(&app, &sim).await;
    // The next day's CRL lists it; a run notices before the worker registered.
    sim.publish_crl().await;
    let run_id = revoked_run(&app, &sim, JpkiRole::Platform).await;
    let done = process(&app, &sim, 100).await;
    assert_eq!(done.outcomes.get("awaiting_registration"), Some(&1));

    // The provider refuses: the certificate was revoked before the consent.
    let round = register(&app, &sim).await;
    assert_eq!(
        (round.done, round.failed, round.revoked_before_registration),
        (0, 1, 1),
        "{round:?}"
    );
    let consent = consent_of(&app, &id).await;
    assert_eq!(consent["status"], "active", "{consent}");
    assert_eq!(consent["registration"], "failed");
    assert!(
        consent["registration_error"]
            .as_str()
            .is_some_and(|e| e.contains("409") && e.contains("certificate-revoked")),
        "{consent}"
    );
    let reviews: Value = app
        .get("/v1/reviews?status=open", &app.operator())
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = reviews["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["revoked_before_registration"], "{reviews}");
    assert_eq!(
        app.count_notices("certificate_revoked").await,
        1,
        "asked to consent again"
    );
    assert_eq!(app.count_events("consent.registration_failed").await, 1);
    assert_eq!(app.count_events("review.opened").await, 1);

    // The waiting job ends, saying so, the provider unasked.
    let asked = sim.sim.provider_requests();
    let done = process(&app, &sim, 100).await;
    assert_eq!(
        done.outcomes.get("revoked_before_registration"),
        Some(&1),
        "{done:?}"
    );
    assert_eq!(sim.sim.provider_requests(), asked);
    let status = run(&app, run_id).await;
    assert_eq!(status["status"], "completed");
    assert_eq!(
        status["counts"],
        json!({"revoked_before_registration": 1}),
        "{status}"
    );
    // Never taken for a withdrawal.
    assert_eq!(
        app.count_where(
            consent_events::Entity,
            consent_events::Column::Kind.eq("withdrawn")
        )
        .await,
        0
    );
    assert_eq!(app.count_notices("consent_lapsed").await, 0);

    // Tomorrow's run says so again, with no second review or notice.
    let again = revoked_run(&app, &sim, JpkiRole::Platform).await;
    let done = process(&app, &sim, 100).await;
    assert_eq!(done.outcomes.get("revoked_before_registration"), Some(&1));
    assert_eq!(
        run(&app, again).await["counts"],
        json!({"revoked_before_registration": 1})
    );
    assert_eq!(app.count(reviews::Entity).await, 1);
    assert_eq!(app.count_notices("certificate_revoked").await, 1);
    assert_eq!(backlog(&app.db).await.unwrap().refused, 1);
    app.assert_chain_verifies().await;
}

async fn an_admin_retries_a_registration(backend: Backend) {
    use kihon4_core::auth::Role;
    let sim = spawn_sim().await;
    let app = spawn(backend, &sim, JpkiRole::Platform).await;
    let admin = app.token(&[Role::Admin]);
    let (id, _) = consenting(&app, &sim, "A-retry", "渡辺五郎").await;
    let consent = consent_of(&app, &id).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let retry = |c: String, token: String| {
        let app = &app;
        async move {
            app.post(
                &format!("/v1/consents/{c}/registration/retry"),
                &token,
                &json!({}),
            )
            .await
        }
    };
    let events = app.count(audit_events::Entity).await;

    // Only an admin; an unknown consent; nothing to retry before the first attempt.
    let res = retry(consent.clone(), app.operator()).await;
    expect_problem(res, 403, "forbidden").await;
    let res = retry(Uuid::now_v7().to_string(), admin.clone()).await;
    expect_problem(res, 404, "not-found").await;
    let res = retry(consent.clone(), admin.clone()).await;
    expect_problem(res, 409, "registration-not-retryable").await;
    assert_eq!(app.count_events("consent.registration_retried").await, 0);
    assert_eq!(
        app.count(provider_registrations::Entity).await,
        1,
        "nothing written"
    );

    // Waiting for its next attempt after a failure: made due now.
    sim.set_faults(Faults {
        maintenance: true,
        maintenance_retry_after_s: 1,
        ..Faults::default()
    });
    assert_eq!(register(&app, &sim).await.retried, 1);
    assert_eq!(register(&app, &sim).await.retried, 0, "backing off");
    sim.set_faults(Faults::default());
    let res = retry(consent.clone(), admin.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["registration"], "pending");
    assert_eq!(
        app.count_where(
            audit_events::Entity,
            audit_events::Column::Action
                .eq("consent.registration_retried")
                .and(audit_events::Column::Actor.eq("user:tester"))
        )
        .await,
        1
    );
    assert_eq!(register(&app, &sim).await.done, 1, "due at once");
    let res = retry(consent.clone(), admin.clone()).await;
    expect_problem(res, 409, "registration-not-retryable").await;
    assert!(app.count(audit_events::Entity).await > events);

    // A refused registration is written anew, the refused one kept.
    let lost = consenting_with_a_certificate_just_revoked(&app, &sim).await;
    let refused = consent_of(&app, &lost).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(register(&app, &sim).await.failed, 1);
    let before = app.count(provider_registrations::Entity).await;
    let res = retry(refused.clone(), admin.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["registration"], "pending", "{body}");
    assert_eq!(body["registration_error"], Value::Null);
    assert_eq!(app.count(provider_registrations::Entity).await, before + 1);
    assert_eq!(
        app.count_where(
            provider_registrations::Entity,
            provider_registrations::Column::Status.eq("failed")
        )
        .await,
        1,
        "the refusal is kept"
    );
    // Refused again: no second review or notice.
    let round = register(&app, &sim).await;
    assert_eq!((round.failed, round.revoked_before_registration), (1, 1));
    assert_eq!(
        app.count_where(
            reviews::Entity,
            reviews::Column::Kind.eq("revoked_before_registration")
        )
        .await,
        1
    );
    assert_eq!(app.count_notices("certificate_revoked").await, 1);
    assert_eq!(
        app.count_where(
            audit_events::Entity,
            audit_events::Column::Action
                .eq("consent.registration_retried")
                .and(audit_events::Column::SubjectId.eq(refused.as_str()))
                .and(audit_events::Column::CustomerId.is_not_null())
        )
        .await,
        1
    );
    app.assert_chain_verifies().await;
}

/// The registration was pending when the job was claimed, and the provider's
/// `not_subscribed` answer arrives: the answer is not applied, the job waits.
async fn a_not_subscribed_answer_racing_the_registration_withdraws_nothing(backend: Backend) {
    use kihon4_core::provider::Latest;
    use kihon4_core::sync::SyncSettings;
    use kihon4_core::sync::{apply::apply_batch, jobs::claim};
    let sim = spawn_sim().await;
    let app = spawn(backend, &sim, JpkiRole::Platform).await;
    let (id, _) = consenting(&app, &sim, "N-race", "小林八郎").await;
    let res = app
        .post("/v1/sync/runs", &app.operator(), &json!({"scope": "all"}))
        .await;
    assert_eq!(res.status(), 202);
    let jobs = claim(&app.db, "test-worker", 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    let results = apply_batch(
        &app.db,
        &notices(),
        SyncSettings::default(),
        "test-worker",
        &[(&jobs[0], &Latest::NotSubscribed)],
    )
    .await;
    assert_eq!(
        results.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [Some("awaiting_registration")]
    );
    let consent = consent_of(&app, &id).await;
    assert_eq!(consent["status"], "active", "{consent}");
    assert_eq!(
        app.count_where(
            consent_events::Entity,
            consent_events::Column::Kind.eq("withdrawn")
        )
        .await,
        0
    );
    assert_eq!(app.count_notices("consent_lapsed").await, 0);
    assert_eq!(
        app.count_where(
            sync_jobs::Entity,
            sync_jobs::Column::Status
                .eq("pending")
                .and(sync_jobs::Column::Outcome.eq("awaiting_registration"))
                .and(sync_jobs::Column::Attempts.eq(0))
                .and(sync_jobs::Column::LeaseOwner.is_null())
        )
        .await,
        1
    );
    // Registered, the job is asked and answered as it should be.
    assert_eq!(register(&app, &sim).await.done, 1);
    let done = process(&app, &sim, 100).await;
    assert_eq!(done.outcomes.get("unchanged"), Some(&1), "{done:?}");
    assert_eq!(consent_of(&app, &id).await["status"], "active");
    app.assert_chain_verifies().await;
}
