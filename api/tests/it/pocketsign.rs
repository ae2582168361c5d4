//! The PocketSign adapter end to end (issue 15): kihon4 in the
//! service-provider role with `KIHON4_PROVIDER_KIND=pocketsign` against the
//! simulator's PocketSign stand-in (Connect RPC, camelCase, Connect errors),
//! with the simulator's residents, revocations and faults.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kihon4_core::config::JpkiRole;
use kihon4_core::consent::ConsentVerifier;
use kihon4_core::entities::consents;
use kihon4_core::provider::{CheckMethod, PocketSignProvider, Provider, ProviderSettings};
use kihon4_sim::faults::Faults;
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use crate::consent::{JA, bare_customer, text, written};
use crate::helpers::{Backend, TestApp, expect_problem};
use crate::raw_consent::{grant, raw_body};
use crate::sim::{TestSim, spawn_sim};
use kihon4_test_support::both;

both!(
    consents_go_through_pocketsign_in_both_forms,
    pocketsign_faults_are_retried_or_refused_and_write_nothing,
    a_moved_resident_is_detected_and_reviewed_since_pocketsign_has_no_latest_four_items,
);

fn pocketsign(sim: &TestSim) -> Arc<dyn Provider> {
    let mut settings = ProviderSettings::new(
        format!("{}/", sim.base).parse().unwrap(),
        "tenant-token".to_owned().into(),
    );
    settings.timeout = Duration::from_secs(10);
    settings.max_attempts = 2;
    settings.max_wait = Duration::from_secs(1);
    Arc::new(PocketSignProvider::new(settings, CheckMethod::Crl).expect("a client"))
}

fn verifier(sim: &TestSim) -> ConsentVerifier {
    ConsentVerifier::ServiceProvider {
        provider: pocketsign(sim),
    }
}

fn cms_body(document: &[u8]) -> Value {
    json!({
        "text_version": JA,
        "channel": "online_signature",
        "signed_document_b64": B64.encode(document),
    })
}

async fn consents_go_through_pocketsign_in_both_forms(backend: Backend) {
    let sim = spawn_sim().await;
    let app = TestApp::spawn_consent(backend, verifier(&sim), JpkiRole::ServiceProvider).await;
    let ja = text(&app, JA).await;

    // A raw card signature.
    let signer = sim.resident().await;
    let customer = bare_customer(&app, "P-1").await;
    let res = grant(
        &app,
        &customer,
        &raw_body(
            &signer.certificate_der(),
            &signer.sign_raw(ja.as_bytes(), "sha256"),
            "sha256",
        ),
    )
    .await;
    assert_eq!(res.status(), 201);
    let granted: Value = res.json().await.unwrap();
    assert_eq!(granted["evidence"], "service_provider");
    assert_eq!(granted["evidence_form"], "pkcs1_sha256");
    assert_eq!(granted["cert_serial"], signer.serial.as_str());
    let certificate_id = granted["certificate_id"].as_str().unwrap().to_owned();
    assert_eq!(certificate_id, format!("crt_{}", signer.serial.as_str()));
    let row = consents::Entity::find_by_id(
        uuid::Uuid::parse_str(granted["id"].as_str().unwrap()).unwrap(),
    )
    .one(&app.db)
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        row.certificate, None,
        "PocketSign's rule: no raw certificate kept"
    );
    assert_eq!(row.signed_document, None);
    assert_eq!(
        row.provider_user_id.as_deref(),
        Some(format!("usr_{}", signer.person_id.as_deref().unwrap()).as_str())
    );

    // A CMS document, taken apart by kihon4 for Verify.
    let cms_signer = sim.resident().await;
    let cms_customer = bare_customer(&app, "P-2").await;
    let res = grant(
        &app,
        &cms_customer,
        &cms_body(&cms_signer.sign(ja.as_bytes(), false)),
    )
    .await;
    assert_eq!(res.status(), 201);
    let granted: Value = res.json().await.unwrap();
    assert_eq!(granted["evidence_form"], "cms");
    assert_eq!(granted["cert_serial"], cms_signer.serial.as_str());

    // What PocketSign decides is refused with nothing written.
    let other = bare_customer(&app, "P-3").await;
    let revoked = sim.resident().await;
    let fresh = sim.resident().await;
    let stranger = sim.fixture_signer(30, |c| c);
    let before = written(&app).await;
    sim.life_event(&revoked, "card_lost").await;
    expect_problem(
        grant(
            &app,
            &other,
            &raw_body(
                &revoked.certificate_der(),
                &revoked.sign_raw(ja.as_bytes(), "sha256"),
                "sha256",
            ),
        )
        .await,
        422,
        "certificate-revoked",
    )
    .await;
    let mut flipped = fresh.sign_raw(ja.as_bytes(), "sha256");
    flipped[10] ^= 1;
    expect_problem(
        grant(
            &app,
            &other,
            &raw_body(&fresh.certificate_der(), &flipped, "sha256"),
        )
        .await,
        422,
        "signature-invalid",
    )
    .await;
    expect_problem(
        grant(
            &app,
            &other,
            &raw_body(
                &stranger.certificate_der(),
                &stranger.sign_raw(ja.as_bytes(), "sha256"),
                "sha256",
            ),
        )
        .await,
        422,
        "untrusted-issuer",
    )
    .await;
    assert_eq!(written(&app).await, before, "nothing written");

    // Liveness: the first resident moves, the move revokes its certificate,
    // and CheckCertificateStatus finds it.
    let provider = pocketsign(&sim);
    let good = provider
        .certificate_status(std::slice::from_ref(&certificate_id))
        .await
        .unwrap();
    assert_eq!(good[0].status, "good");
    sim.life_event_with(
        &signer,
        json!({"kind": "move", "basic4": {"address": "大阪府大阪市北区梅田1-1"}}),
    )
    .await;
    let moved = provider
        .certificate_status(std::slice::from_ref(&certificate_id))
        .await
        .unwrap();
    assert_eq!(moved[0].status, "revoked");
    assert_eq!(moved[0].certificate_id, certificate_id);
    // The latest four items are not something PocketSign documents.
    assert_eq!(
        provider
            .latest_basic4(&[kihon4_core::domain::CertSerial::parse(&signer.serial).unwrap()])
            .await
            .unwrap_err(),
        kihon4_core::provider::ProviderError::Unsupported {
            provider: "pocketsign",
            capability: "latest_basic4"
        }
    );
}

async fn pocketsign_faults_are_retried_or_refused_and_write_nothing(backend: Backend) {
    let sim = spawn_sim().await;
    let app = TestApp::spawn_consent(backend, verifier(&sim), JpkiRole::ServiceProvider).await;
    let ja = text(&app, JA).await;
    let signer = sim.resident().await;
    let customer = bare_customer(&app, "F-1").await;
    let body = raw_body(
        &signer.certificate_der(),
        &signer.sign_raw(ja.as_bytes(), "sha256"),
        "sha256",
    );
    let before = written(&app).await;

    sim.set_faults(Faults {
        maintenance: true,
        maintenance_retry_after_s: 1,
        ..Faults::default()
    });
    expect_problem(
        grant(&app, &customer, &body).await,
        503,
        "provider-unavailable",
    )
    .await;
    sim.set_faults(Faults {
        malformed_rate: 1.0,
        ..Faults::default()
    });
    expect_problem(grant(&app, &customer, &body).await, 502, "provider-error").await;
    assert_eq!(written(&app).await, before, "nothing written");

    // Recovery: the same consent goes through.
    sim.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = grant(&app, &customer, &body).await;
    assert_eq!(res.status(), 201);
}

async fn a_moved_resident_is_detected_and_reviewed_since_pocketsign_has_no_latest_four_items(
    backend: Backend,
) {
    use kihon4_core::entities::{provider_registrations, reviews};
    use kihon4_core::sync::driver::{Detection, Driver};
    use kihon4_core::sync::{Scope, SyncSettings};
    use sea_orm::{ColumnTrait, QueryFilter};

    let sim = spawn_sim().await;
    let app = TestApp::spawn_consent(backend, verifier(&sim), JpkiRole::ServiceProvider).await;
    let ja = text(&app, JA).await;
    let signer = sim.resident().await;
    let customer = bare_customer(&app, "M-1").await;
    let res = grant(
        &app,
        &customer,
        &raw_body(
            &signer.certificate_der(),
            &signer.sign_raw(ja.as_bytes(), "sha256"),
            "sha256",
        ),
    )
    .await;
    assert_eq!(res.status(), 201);
    sim.life_event_with(
        &signer,
        json!({"kind": "move", "basic4": {"address": "大阪府大阪市北区梅田1-1"}}),
    )
    .await;
    let res = app
        .post(
            "/v1/sync/runs",
            &app.operator(),
            &json!({"scope": "revoked"}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let run: Value = res.json().await.unwrap();
    let run_id = uuid::Uuid::parse_str(run["id"].as_str().unwrap()).unwrap();

    let driver = Driver {
        provider: pocketsign(&sim),
        notices: Arc::new(crate::helpers::notices()),
        detection: Detection::Liveness,
        settings: SyncSettings::default(),
        owner: "test-driver".into(),
    };
    let view = tokio::time::timeout(
        Duration::from_secs(60),
        driver.carry_out(&app.db, run_id, Scope::Revoked, 100, |_| {}),
    )
    .await
    .expect("the run ends: nothing is retried forever")
    .unwrap();
    assert_eq!(view.run.status, "completed");

    // The registration is refused by name, not retried.
    let registrations = provider_registrations::Entity::find()
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(registrations.len(), 1);
    assert_eq!(registrations[0].status, "failed");
    assert_eq!(
        registrations[0].refusal.as_deref(),
        Some("capability-unsupported:subscriptions")
    );
    // The moved resident was found, and a person decides.
    let opened = reviews::Entity::find()
        .filter(reviews::Column::Kind.eq("provider_capability_unsupported"))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].customer_id.to_string(), customer);
    let detail = opened[0].detail.clone().unwrap();
    assert_eq!(detail["provider"], "pocketsign");
    assert_eq!(detail["capability"], "latest_basic4");
    app.assert_chain_verifies().await;
}
