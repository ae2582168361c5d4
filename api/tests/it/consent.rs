use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kihon4_core::config::{JpkiRole, Revocation};
use kihon4_core::consent::registrations::run_due;
use kihon4_core::entities::{
    audit_events, basic4_history, consent_events, consents, outbox, provider_registrations,
    revocation_checks,
};
use kihon4_core::provider::Latest;
use kihon4_sim::faults::{CrlFault, Faults};
use kihon4_test_support::both;
use reqwest::Response;
use sea_orm::{ColumnTrait, ConnectionTrait, sea_query::ExprTrait};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{Backend, INSTITUTION, TestApp, expect_problem, notices};
use crate::sim::{Signer, TestSim, openssl, shared_fixtures, spawn_sim};

both!(
    consent_texts_are_served_with_their_hashes,
    platform_grants_registers_withdraws_and_refuses_replays,
    detached_signatures_with_ocsp_and_renewal,
    service_provider_keeps_no_certificate,
    every_bad_document_is_refused_and_writes_nothing,
    a_card_reported_lost_counts_once_the_new_crl_is_out,
    crl_and_ocsp_troubles_are_retryable_and_write_nothing,
    mismatched_items_need_update_customer_and_the_deceased_cannot_consent,
    registrations_wait_out_a_provider_that_is_down,
    a_worker_that_died_holding_a_registration_is_taken_over,
    revocation_checks_are_reported_by_purpose,
    time_reminds_asks_for_renewal_and_expires_each_once,
);

async fn consent_texts_are_served_with_their_hashes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.get("/v1/consent-texts", &app.operator()).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    let versions: Vec<&str> = items
        .iter()
        .map(|t| t["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["2026-11-25.ja", "2026-11-25.en"]);
    for item in items {
        let text = item["text"].as_str().unwrap();
        assert_eq!(item["sha256"], hex::encode(Sha256::digest(text.as_bytes())));
        assert!(text.contains(INSTITUTION), "the institution is named");
    }
    assert_eq!(items[0]["locale"], "ja");
    assert_eq!(body["next_cursor"], Value::Null);
    expect_problem(
        app.get("/v1/consent-texts", &app.auditor()).await,
        403,
        "forbidden",
    )
    .await;
}

pub(crate) const JA: &str = "2026-11-25.ja";
const EN: &str = "2026-11-25.en";

pub(crate) async fn text(app: &TestApp, version: &str) -> String {
    let body: Value = app
        .get("/v1/consent-texts", &app.operator())
        .await
        .json()
        .await
        .unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["version"] == version)
        .expect("the version exists")["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A customer whose four items will come from the certificate.
pub(crate) async fn bare_customer(app: &TestApp, external_ref: &str) -> String {
    let res = app
        .post(
            "/v1/customers",
            &app.operator(),
            &json!({"external_ref": external_ref, "email": "hanako@example.jp", "locale": "ja"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn grant(app: &TestApp, customer: &str, version: &str, document: &[u8]) -> Response {
    grant_body(
        app,
        customer,
        json!({
            "text_version": version,
            "channel": "online_signature",
            "signed_document_b64": B64.encode(document),
        }),
    )
    .await
}

async fn grant_body(app: &TestApp, customer: &str, body: Value) -> Response {
    app.post(
        &format!("/v1/customers/{customer}/consents"),
        &app.operator(),
        &body,
    )
    .await
}

/// Row counts of everything a consent writes.
pub(crate) async fn written(app: &TestApp) -> Vec<i64> {
    vec![
        app.count(consents::Entity).await,
        app.count(consent_events::Entity).await,
        app.count(provider_registrations::Entity).await,
        app.count(revocation_checks::Entity).await,
        app.count(audit_events::Entity).await,
        app.count(basic4_history::Entity).await,
        app.count(outbox::Entity).await,
    ]
}

async fn consent(app: &TestApp, id: &str) -> Value {
    let res = app
        .get(&format!("/v1/consents/{id}"), &app.operator())
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn latest(sim: &TestSim, serial: &str) -> Latest {
    let serial = kihon4_core::domain::CertSerial::parse(serial).unwrap();
    sim.provider()
        .latest_basic4(&[serial])
        .await
        .expect("the provider answers")
        .remove(0)
        .latest
}

async fn platform_grants_registers_withdraws_and_refuses_replays(backend: Backend) {
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let customer = bare_customer(&app, "C-1").await;
    let signer = sim.resident().await;
    let document = signer.sign(text(&app, JA).await.as_bytes(), true);

    let res = grant(&app, &customer, JA, &document).await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let granted: Value = res.json().await.unwrap();
    let id = granted["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/consents/{id}"));
    assert_eq!(granted["status"], "active");
    assert_eq!(granted["customer_id"], customer.as_str());
    assert_eq!(granted["channel"], "online_signature");
    assert_eq!(granted["cert_serial"], signer.serial.as_str());
    assert_eq!(granted["text_version"], JA);
    assert_eq!(granted["registration"], "pending");
    assert_eq!(granted["evidence"], "platform");
    // Ten years from the day after, ending at midnight in Tokyo.
    let expires = chrono::DateTime::parse_from_rfc3339(granted["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono_tz::Asia::Tokyo);
    let given = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Tokyo);
    assert_eq!(
        expires.date_naive(),
        given.date_naive() + chrono::Days::new(1) + chrono::Months::new(120)
    );
    assert_eq!(expires.time(), chrono::NaiveTime::MIN);

    // The customer took the certificate's four items and serial.
    let record: Value = app
        .get(&format!("/v1/customers/{customer}"), &app.operator())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["basic4"]["name"], "山田太郎");
    assert_eq!(record["jpki_cert_serial"], signer.serial.as_str());
    assert_eq!(record["version"], 2);
    // The evidence: the document and the certificate, kept as sent.
    assert_eq!(
        app.count_where(
            consents::Entity,
            consents::Column::SignedDocument
                .is_not_null()
                .and(consents::Column::Certificate.is_not_null())
        )
        .await,
        1
    );
    assert_eq!(
        app.count_where(
            revocation_checks::Entity,
            revocation_checks::Column::Purpose
                .eq("signature_verification")
                .and(revocation_checks::Column::Method.eq("crl"))
        )
        .await,
        1
    );
    let actions = app.audit_actions().await;
    assert!(actions.ends_with(&["consent.granted".into(), "customer.updated".into()]));
    // The receipt waits in the outbox, in the customer's language.
    assert_eq!(
        app.count_where(
            outbox::Entity,
            outbox::Column::Kind
                .eq("consent_receipt")
                .and(outbox::Column::Locale.eq("ja"))
        )
        .await,
        1
    );

    // The worker registers it with the provider.
    assert_eq!(latest(&sim, &signer.serial).await, Latest::NotSubscribed);
    let done = run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "test-worker",
        10,
    )
    .await
    .unwrap();
    assert_eq!((done.done, done.retried, done.failed), (1, 0, 0));
    assert_eq!(consent(&app, &id).await["registration"], "registered");
    assert_eq!(latest(&sim, &signer.serial).await, Latest::Unchanged);

    // The same document again proves nothing new.
    let before = written(&app).await;
    expect_problem(
        grant(&app, &customer, JA, &document).await,
        409,
        "signed-document-reused",
    )
    .await;
    assert_eq!(written(&app).await, before);

    // Withdrawal, and its deregistration.
    let res = app
        .post(
            &format!("/v1/consents/{id}/withdraw"),
            &app.operator(),
            &json!({"reason": "お客さまからの申し出"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let withdrawn: Value = res.json().await.unwrap();
    assert_eq!(withdrawn["status"], "withdrawn");
    assert_eq!(withdrawn["registration"], "unregistering");
    assert!(withdrawn["withdrawn_at"].is_string());
    assert_eq!(
        app.count_where(
            outbox::Entity,
            outbox::Column::Kind
                .eq("consent_withdrawn")
                .and(outbox::Column::Status.eq("pending"))
        )
        .await,
        1
    );
    let kinds: Vec<&str> = withdrawn["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["granted", "withdrawn"]);
    run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "test-worker",
        10,
    )
    .await
    .unwrap();
    assert_eq!(consent(&app, &id).await["registration"], "unregistered");
    assert_eq!(latest(&sim, &signer.serial).await, Latest::NotSubscribed);

    let before = written(&app).await;
    expect_problem(
        app.post(
            &format!("/v1/consents/{id}/withdraw"),
            &app.operator(),
            &json!({"reason": "二度目"}),
        )
        .await,
        409,
        "consent-not-active",
    )
    .await;
    let missing = expect_problem(
        app.post(
            &format!("/v1/consents/{id}/withdraw"),
            &app.operator(),
            &json!({}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(missing["errors"][0]["field"], "reason");
    expect_problem(
        app.post(
            &format!("/v1/consents/{}/withdraw", Uuid::now_v7()),
            &app.operator(),
            &json!({"reason": "x"}),
        )
        .await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(written(&app).await, before);

    let list: Value = app
        .get(
            &format!("/v1/customers/{customer}/consents"),
            &app.operator(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["id"], id.as_str());
    expect_problem(
        app.get(&format!("/v1/consents/{id}"), &app.auditor()).await,
        403,
        "forbidden",
    )
    .await;
    app.assert_chain_verifies().await;
}

async fn detached_signatures_with_ocsp_and_renewal(backend: Backend) {
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Ocsp), JpkiRole::Platform).await;
    // A customer whose four items match the certificate's.
    let customer: Value = app.create_customer("C-2").await;
    let customer = customer["id"].as_str().unwrap();
    let signer = sim.resident().await;
    let en = text(&app, EN).await;

    let detached = signer.sign(en.as_bytes(), false);
    let res = grant(&app, customer, EN, &detached).await;
    let first: Value = res.json().await.unwrap();
    assert!(first["id"].is_string(), "{first}");
    // The same signature, now attached, is a replay.
    let attached = kihon4_core::jpki::verify::attach_content(&detached, en.as_bytes()).unwrap();
    let before = written(&app).await;
    expect_problem(
        grant(&app, customer, EN, &attached).await,
        409,
        "signed-document-reused",
    )
    .await;
    assert_eq!(written(&app).await, before);
    assert_eq!(
        app.count_where(
            revocation_checks::Entity,
            revocation_checks::Column::Method.eq("ocsp")
        )
        .await,
        1
    );
    assert_eq!(
        app.count(basic4_history::Entity).await,
        1,
        "the items were the same"
    );

    // A second consent renews the first. OpenSSL's signingTime counts seconds:
    // signed again within the same one, it would be the same signature.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let res = grant(&app, customer, EN, &signer.sign(en.as_bytes(), true)).await;
    assert_eq!(res.status(), 201);
    let second: Value = res.json().await.unwrap();
    let renewed = consent(&app, first["id"].as_str().unwrap()).await;
    assert_eq!(renewed["status"], "renewed");
    assert_eq!(renewed["events"][1]["related_consent_id"], second["id"]);
    assert_eq!(second["status"], "active");
    // OCSP sees a lost card at once, without waiting for a CRL.
    let lost = sim.resident().await;
    sim.life_event(&lost, "card_lost").await;
    let someone = bare_customer(&app, "C-2b").await;
    let before = written(&app).await;
    expect_problem(
        grant(&app, &someone, EN, &lost.sign(en.as_bytes(), true)).await,
        422,
        "certificate-revoked",
    )
    .await;
    assert_eq!(written(&app).await, before);
    // A detached signature over another version's text is not that version's consent.
    let before = written(&app).await;
    expect_problem(
        grant(&app, customer, JA, &signer.sign(en.as_bytes(), false)).await,
        422,
        "content-not-consent-text",
    )
    .await;
    assert_eq!(written(&app).await, before);
    app.assert_chain_verifies().await;
}

async fn service_provider_keeps_no_certificate(backend: Backend) {
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.service_provider(), JpkiRole::ServiceProvider).await;
    let customer = bare_customer(&app, "C-3").await;
    let signer = sim.resident().await;
    let ja = text(&app, JA).await;

    // Detached: kihon4 attaches the text before handing it to the provider.
    let res = grant(&app, &customer, JA, &signer.sign(ja.as_bytes(), false)).await;
    assert_eq!(res.status(), 201);
    let granted: Value = res.json().await.unwrap();
    assert_eq!(granted["evidence"], "service_provider");
    assert!(granted["verification_id"].is_string());
    assert!(granted["certificate_id"].is_string());
    assert_eq!(granted["cert_serial"], signer.serial.as_str());
    assert_eq!(
        app.count_where(
            consents::Entity,
            consents::Column::SignedDocument
                .is_null()
                .and(consents::Column::Certificate.is_null())
        )
        .await,
        1
    );
    assert_eq!(
        app.count_where(
            revocation_checks::Entity,
            revocation_checks::Column::Method.eq("provider")
        )
        .await,
        1
    );
    // Nothing of the certificate is anywhere: not its bytes, not its key.
    let certificate = std::fs::read_to_string(signer.path().join("signer.pem")).unwrap();
    let der = B64
        .decode(
            certificate
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let rows = app
        .db
        .query_all_raw(sea_orm::Statement::from_string(
            app.db.get_database_backend(),
            "SELECT signed_content FROM consents".to_owned(),
        ))
        .await
        .unwrap();
    for row in rows {
        let content: Vec<u8> = row.try_get("", "signed_content").unwrap();
        assert_eq!(content, ja.as_bytes());
        assert!(!content.windows(64).any(|w| der.windows(64).any(|d| d == w)));
    }
    let record: Value = app
        .get(&format!("/v1/customers/{customer}"), &app.operator())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["basic4"]["address"], "東京都千代田区千代田1-1");

    // Refusals the provider decides, and one kihon4 decides before asking.
    let before = written(&app).await;
    let other = spawn_sim().await.resident().await;
    expect_problem(
        grant(&app, &customer, JA, &other.sign(ja.as_bytes(), true)).await,
        422,
        "untrusted-issuer",
    )
    .await;
    let mut tampered = ja.clone().into_bytes();
    tampered[0] ^= 1;
    let requests = sim.sim.provider_requests();
    expect_problem(
        grant(&app, &customer, JA, &signer.sign(&tampered, true)).await,
        422,
        "content-not-consent-text",
    )
    .await;
    assert_eq!(
        sim.sim.provider_requests(),
        requests,
        "not sent to be billed"
    );
    sim.life_event(&signer, "card_lost").await;
    expect_problem(
        grant(&app, &customer, JA, &signer.sign(ja.as_bytes(), true)).await,
        422,
        "certificate-revoked",
    )
    .await;
    sim.set_faults(Faults {
        maintenance: true,
        ..Faults::default()
    });
    let fresh = sim.resident().await;
    let res = grant(&app, &customer, JA, &fresh.sign(ja.as_bytes(), true)).await;
    assert!(res.headers().contains_key("retry-after"));
    expect_problem(res, 503, "provider-unavailable").await;
    assert_eq!(written(&app).await, before);
}

async fn every_bad_document_is_refused_and_writes_nothing(backend: Backend) {
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let customer = bare_customer(&app, "C-4").await;
    let ja = text(&app, JA).await;
    let signer = sim.resident().await;
    let good = signer.sign(ja.as_bytes(), true);
    let before = written(&app).await;

    let refuse = |body: Value, status: u16, slug: &'static str| {
        let (app, customer) = (&app, &customer);
        async move {
            let problem = expect_problem(grant_body(app, customer, body).await, status, slug).await;
            assert!(!problem["detail"].as_str().unwrap().is_empty());
            problem
        }
    };
    let body = |version: &str, document: &[u8]| json!({"text_version": version, "channel": "online_signature", "signed_document_b64": B64.encode(document)});

    // Not base64; not CMS.
    refuse(
        json!({"text_version": JA, "channel": "branch", "signed_document_b64": "not base64!"}),
        422,
        "not-base64",
    )
    .await;
    refuse(body(JA, b"\x30\x03\x02\x01\x01"), 422, "not-cms").await;
    refuse(body(JA, ja.as_bytes()), 422, "not-cms").await;
    // No signer; several signers.
    let d = signer.path();
    openssl(
        d,
        &[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            "signer.pem",
            "-outform",
            "DER",
            "-out",
            "nosigner.der",
        ],
    );
    let no_signer = std::fs::read(d.join("nosigner.der")).unwrap();
    refuse(body(JA, &no_signer), 422, "cms-no-signer").await;
    let second = sim.resident().await;
    let two = signer.sign_with(ja.as_bytes(), &second);
    refuse(body(JA, &two), 422, "cms-several-signers").await;
    // Content one byte off the text, validly signed; an unknown version.
    let mut tampered = ja.clone().into_bytes();
    tampered[10] ^= 1;
    refuse(
        body(JA, &signer.sign(&tampered, true)),
        422,
        "content-not-consent-text",
    )
    .await;
    refuse(body(EN, &good), 422, "content-not-consent-text").await;
    refuse(body("2020-01-01.ja", &good), 422, "unknown-text-version").await;
    // A signature that does not match.
    let mut broken = good.clone();
    let at = broken.len() - 5;
    broken[at] ^= 1;
    refuse(body(JA, &broken), 422, "signature-invalid").await;
    // A signer from a foreign CA (same name, other key).
    let foreign = spawn_sim().await.resident().await;
    refuse(
        body(JA, &foreign.sign(ja.as_bytes(), true)),
        422,
        "untrusted-issuer",
    )
    .await;
    // Certificates OpenSSL makes from the shared JPKI profile: expired; user identification.
    let expired = sim.fixture_signer(-1, |c| c);
    refuse(
        body(JA, &expired.sign(ja.as_bytes(), true)),
        422,
        "certificate-expired",
    )
    .await;
    let user_id = sim.fixture_signer(365, |c| {
        c.replace("1.2.392.200149.8.5.1.1.20", "1.2.392.200149.8.5.1.3.30")
    });
    refuse(
        body(JA, &user_id.sign(ja.as_bytes(), true)),
        422,
        "user-identification-certificate",
    )
    .await;
    // Fields missing or wrong; an unknown customer.
    let invalid = refuse(json!({"channel": "fax"}), 422, "validation").await;
    let fields: Vec<&str> = invalid["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["text_version", "channel", "signed_document_b64"]);
    refuse(
        json!({"text_version": JA, "channel": "branch", "signed_document_b64": "", "extra": 1}),
        422,
        "validation",
    )
    .await;
    expect_problem(
        grant(&app, &Uuid::now_v7().to_string(), JA, &good).await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(written(&app).await, before, "no refusal wrote anything");

    // The real J-LIS CAs as the only anchors: the simulator's chain leads elsewhere.
    let jlis = TestApp::spawn_consent(
        backend,
        sim.platform_trusting(
            &[shared_fixtures().join("jpki-trust-anchors")],
            Revocation::Crl,
        ),
        JpkiRole::Platform,
    )
    .await;
    let someone = bare_customer(&jlis, "C-5").await;
    expect_problem(
        grant(&jlis, &someone, JA, &good).await,
        422,
        "untrusted-issuer",
    )
    .await;

    // And what is right is accepted: a certificate OpenSSL made from the profile.
    let fixture = sim.fixture_signer(365, |c| c);
    let res = grant(&app, &customer, JA, &fixture.sign(ja.as_bytes(), true)).await;
    assert_eq!(res.status(), 201);
}

async fn a_card_reported_lost_counts_once_the_new_crl_is_out(backend: Backend) {
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let customer = bare_customer(&app, "C-6").await;
    let ja = text(&app, JA).await;
    let signer = sim.resident().await;
    // A first verification caches the CRL.
    let bystander = sim.resident().await;
    let other = bare_customer(&app, "C-7").await;
    assert_eq!(
        grant(&app, &other, JA, &bystander.sign(ja.as_bytes(), true))
            .await
            .status(),
        201
    );
    sim.life_event(&signer, "card_lost").await;
    sim.publish_crl().await;
    let before = written(&app).await;
    expect_problem(
        grant(&app, &customer, JA, &signer.sign(ja.as_bytes(), true)).await,
        422,
        "certificate-revoked",
    )
    .await;
    assert_eq!(written(&app).await, before);
}

async fn crl_and_ocsp_troubles_are_retryable_and_write_nothing(backend: Backend) {
    let sim = spawn_sim().await;
    let crl_app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let customer = bare_customer(&crl_app, "C-8").await;
    let ja = text(&crl_app, JA).await;
    let signer = sim.resident().await;
    let before = written(&crl_app).await;

    sim.set_faults(Faults {
        crl: Some(CrlFault::Stale),
        ..Faults::default()
    });
    let res = grant(&crl_app, &customer, JA, &signer.sign(ja.as_bytes(), true)).await;
    assert!(res.headers().contains_key("retry-after"));
    expect_problem(res, 503, "crl-stale").await;
    sim.set_faults(Faults {
        crl: Some(CrlFault::BadSignature),
        ..Faults::default()
    });
    expect_problem(
        grant(&crl_app, &customer, JA, &signer.sign(ja.as_bytes(), true)).await,
        502,
        "crl-invalid",
    )
    .await;
    sim.set_faults(Faults {
        maintenance: true,
        ..Faults::default()
    });
    expect_problem(
        grant(&crl_app, &customer, JA, &signer.sign(ja.as_bytes(), true)).await,
        503,
        "revocation-unavailable",
    )
    .await;
    assert_eq!(written(&crl_app).await, before);

    let ocsp_app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Ocsp), JpkiRole::Platform).await;
    let customer = bare_customer(&ocsp_app, "C-9").await;
    let before = written(&ocsp_app).await;
    let res = grant(&ocsp_app, &customer, JA, &signer.sign(ja.as_bytes(), true)).await;
    assert_eq!(res.headers()["retry-after"], "30");
    expect_problem(res, 503, "revocation-unavailable").await;
    assert_eq!(written(&ocsp_app).await, before);
    // Once the provider is back, the same consent goes through.
    sim.set_faults(Faults::default());
    let res = grant(&ocsp_app, &customer, JA, &signer.sign(ja.as_bytes(), true)).await;
    assert_eq!(res.status(), 201);
}

async fn mismatched_items_need_update_customer_and_the_deceased_cannot_consent(backend: Backend) {
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let ja = text(&app, JA).await;
    let customer: Value = app.create_customer("C-10").await;
    let customer = customer["id"].as_str().unwrap();
    let moved = sim
        .resident_with(json!({
            "name": "山田太郎",
            "address": "大阪府大阪市北区梅田1-1",
            "birth_date": "1980-02-17",
            "gender": "1"
        }))
        .await;
    let before = written(&app).await;
    let document = moved.sign(ja.as_bytes(), true);
    expect_problem(
        grant(&app, customer, JA, &document).await,
        409,
        "basic4-mismatch",
    )
    .await;
    assert_eq!(written(&app).await, before);

    let res = grant_body(
        &app,
        customer,
        json!({
            "text_version": JA,
            "channel": "branch",
            "signed_document_b64": B64.encode(&document),
            "update_customer": true,
        }),
    )
    .await;
    assert_eq!(res.status(), 201);
    let history: Value = app
        .get(
            &format!("/v1/customers/{customer}/history"),
            &app.operator(),
        )
        .await
        .json()
        .await
        .unwrap();
    let last = history["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["source"], "consent");
    assert_eq!(last["after"]["address"], "大阪府大阪市北区梅田1-1");
    assert_eq!(last["before"]["address"], "東京都千代田区千代田1-1");

    let other = bare_customer(&app, "C-11").await;
    {
        use kihon4_core::entities::customers as rows;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
        rows::Entity::update_many()
            .col_expr(rows::Column::Status, Expr::value("deceased"))
            .filter(rows::Column::Id.eq(Uuid::parse_str(&other).unwrap()))
            .exec(&app.db)
            .await
            .unwrap();
    }
    let before = written(&app).await;
    let signer = sim.resident().await;
    expect_problem(
        grant(&app, &other, JA, &signer.sign(ja.as_bytes(), true)).await,
        409,
        "customer-deceased",
    )
    .await;
    assert_eq!(written(&app).await, before);
}

async fn registrations_wait_out_a_provider_that_is_down(backend: Backend) {
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let customer = bare_customer(&app, "C-12").await;
    let signer = sim.resident().await;
    let res = grant(
        &app,
        &customer,
        JA,
        &signer.sign(text(&app, JA).await.as_bytes(), true),
    )
    .await;
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    sim.set_faults(Faults {
        maintenance: true,
        ..Faults::default()
    });
    let round = run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "test-worker",
        10,
    )
    .await
    .unwrap();
    assert_eq!((round.done, round.retried), (0, 1));
    let pending = consent(&app, &id).await;
    assert_eq!(pending["registration"], "pending");
    assert!(
        pending["registration_error"]
            .as_str()
            .unwrap()
            .contains("unavailable")
    );
    // Not due again before its backoff.
    sim.set_faults(Faults::default());
    let early = run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "test-worker",
        10,
    )
    .await
    .unwrap();
    assert_eq!(early.done, 0);
    // Time passes.
    app.db
        .execute_unprepared("UPDATE provider_registrations SET run_at = created_at")
        .await
        .unwrap();
    let later = run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "test-worker",
        10,
    )
    .await
    .unwrap();
    assert_eq!(later.done, 1);
    assert_eq!(consent(&app, &id).await["registration"], "registered");
    assert_eq!(app.count_events("consent.registered").await, 1);
    app.assert_chain_verifies().await;
}

async fn a_worker_that_died_holding_a_registration_is_taken_over(backend: Backend) {
    use kihon4_core::entities::provider_registrations as regs;
    use sea_orm::{EntityTrait, sea_query::Expr};
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let customer = bare_customer(&app, "C-14").await;
    let signer = sim.resident().await;
    let res = grant(
        &app,
        &customer,
        JA,
        &signer.sign(text(&app, JA).await.as_bytes(), true),
    )
    .await;
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A worker claimed it and was killed before it could record anything.
    let held = |until: chrono::DateTime<chrono::Utc>| {
        regs::Entity::update_many()
            .col_expr(regs::Column::LeaseOwner, Expr::value("killed-worker"))
            .col_expr(regs::Column::LeaseExpiresAt, Expr::value(until))
            .col_expr(regs::Column::Attempts, Expr::value(1))
            .exec(&app.db)
    };
    held(chrono::Utc::now() + chrono::Duration::seconds(60))
        .await
        .unwrap();
    let round = run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "other-worker",
        10,
    )
    .await
    .unwrap();
    assert_eq!(round.done, 0, "a live lease is respected");
    held(chrono::Utc::now() - chrono::Duration::seconds(1))
        .await
        .unwrap();
    let round = run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "other-worker",
        10,
    )
    .await
    .unwrap();
    assert_eq!(round.done, 1, "an expired lease is taken over");
    assert_eq!(consent(&app, &id).await["registration"], "registered");
    assert_eq!(latest(&sim, &signer.serial).await, Latest::Unchanged);
    let row = regs::Entity::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!((row.attempts, row.lease_owner), (2, None));
}

async fn revocation_checks_are_reported_by_purpose(backend: Backend) {
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let customer = bare_customer(&app, "C-13").await;
    let signer = sim.resident().await;
    let res = grant(
        &app,
        &customer,
        JA,
        &signer.sign(text(&app, JA).await.as_bytes(), true),
    )
    .await;
    assert_eq!(res.status(), 201);
    let from = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let to = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let query = format!(
        "/v1/reports/revocation-checks?from={}&to={}",
        urlencode(&from),
        urlencode(&to)
    );
    let res = app.get(&query, &app.auditor()).await;
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.unwrap();
    assert_eq!(report["signature_verification"], 1);
    assert_eq!(report["liveness_check"], 0);
    assert_eq!(report["by_method"][0]["method"], "crl");
    expect_problem(app.get(&query, &app.operator()).await, 403, "forbidden").await;
    expect_problem(
        app.get("/v1/reports/revocation-checks", &app.auditor())
            .await,
        400,
        "invalid-query",
    )
    .await;
    let backwards = format!(
        "/v1/reports/revocation-checks?from={}&to={}",
        urlencode(&to),
        urlencode(&from)
    );
    expect_problem(
        app.get(&backwards, &app.auditor()).await,
        400,
        "invalid-query",
    )
    .await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Signer {
    /// Signed by this signer and `other` together.
    pub fn sign_with(&self, content: &[u8], other: &Signer) -> Vec<u8> {
        let d = self.path();
        std::fs::copy(other.path().join("signer.pem"), d.join("other.pem")).unwrap();
        std::fs::copy(other.path().join("signer.key"), d.join("other.key")).unwrap();
        std::fs::write(d.join("content.txt"), content).unwrap();
        openssl(
            d,
            &[
                "cms",
                "-sign",
                "-binary",
                "-md",
                "sha256",
                "-nodetach",
                "-in",
                "content.txt",
                "-signer",
                "signer.pem",
                "-inkey",
                "signer.key",
                "-signer",
                "other.pem",
                "-inkey",
                "other.key",
                "-outform",
                "DER",
                "-out",
                "two.der",
            ],
        );
        std::fs::read(d.join("two.der")).unwrap()
    }
}

async fn time_reminds_asks_for_renewal_and_expires_each_once(backend: Backend) {
    use kihon4_core::consent::housekeeping::run;
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let customer = bare_customer(&app, "C-15").await;
    let signer = sim.resident().await;
    let res = grant(
        &app,
        &customer,
        JA,
        &signer.sign(text(&app, JA).await.as_bytes(), true),
    )
    .await;
    let granted: Value = res.json().await.unwrap();
    let id = granted["id"].as_str().unwrap().to_owned();
    let expires = chrono::DateTime::parse_from_rfc3339(granted["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let notices = crate::helpers::notices();
    let tokyo = chrono_tz::Asia::Tokyo;
    let now = chrono::Utc::now();
    let at = |t: chrono::DateTime<chrono::Utc>| {
        let (db, notices) = (&app.db, &notices);
        async move { run(db, notices, tokyo, Some(t)).await.unwrap() }
    };

    assert_eq!(
        at(now + chrono::Duration::days(30)).await.reminded,
        0,
        "not a year yet"
    );
    let year = now + chrono::Duration::days(366);
    assert_eq!(at(year).await.reminded, 1);
    assert_eq!(at(year).await.reminded, 0, "once a year");
    assert_eq!(at(now + chrono::Duration::days(2 * 366)).await.reminded, 1);
    assert_eq!(app.count_notices("consent_reminder").await, 2);

    let late = expires - chrono::Duration::days(60);
    let renewal = at(late).await;
    assert_eq!((renewal.renewal_requested, renewal.reminded), (1, 0));
    assert_eq!(
        at(late + chrono::Duration::days(7)).await.renewal_requested,
        0
    );
    assert_eq!(app.count_notices("consent_renewal").await, 1);

    let after = expires + chrono::Duration::days(1);
    assert_eq!(at(after).await.expired, 1);
    assert_eq!(at(after).await.expired, 0, "expired once");
    let expired = consent(&app, &id).await;
    assert_eq!(expired["status"], "expired");
    assert_eq!(expired["registration"], "unregistering");
    let kinds: Vec<&str> = expired["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["granted", "expired"]);
    for (action, n) in [
        ("consent.reminded", 2),
        ("consent.renewal_requested", 1),
        ("consent.expired", 1),
    ] {
        assert_eq!(app.count_events(action).await, n, "{action}");
    }
    app.assert_chain_verifies().await;
}
