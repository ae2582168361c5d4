//! Consents signed the way card clients sign (issue 15): a raw RSA PKCS#1
//! v1.5 signature over the DigestInfo of the text's SHA-256, with the
//! signing certificate and no CMS, in both roles; OpenSSL signs as the
//! client would (`dgst -sha256 -sign`, `pkeyutl -sign` over a DigestInfo).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kihon4_core::config::{JpkiRole, Revocation};
use kihon4_core::entities::{consents, revocation_checks};
use reqwest::Response;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::consent::{JA, bare_customer, text, written};
use crate::helpers::{Backend, TestApp, expect_problem};
use crate::sim::{Signer, spawn_sim};
use kihon4_test_support::both;

both!(
    platform_verifies_raw_signatures_and_keeps_what_proves_them,
    service_provider_sends_raw_signatures_and_keeps_no_certificate,
    every_bad_raw_signature_is_refused_and_writes_nothing,
);

pub(crate) fn raw_body(certificate: &[u8], signature: &[u8], hash: &str) -> Value {
    json!({
        "text_version": JA,
        "channel": "online_signature",
        "signature": {
            "certificate_b64": B64.encode(certificate),
            "signature_b64": B64.encode(signature),
            "hash_algorithm": hash,
        },
    })
}

pub(crate) async fn grant(app: &TestApp, customer: &str, body: &Value) -> Response {
    app.post(
        &format!("/v1/customers/{customer}/consents"),
        &app.operator(),
        body,
    )
    .await
}

async fn stored(app: &TestApp, id: &str) -> consents::Model {
    consents::Entity::find_by_id(uuid::Uuid::parse_str(id).unwrap())
        .one(&app.db)
        .await
        .unwrap()
        .expect("the consent is stored")
}

async fn platform_verifies_raw_signatures_and_keeps_what_proves_them(backend: Backend) {
    use kihon4_core::jpki::verify::{HashAlgorithm, RawSignature, TrustAnchors};
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let ja = text(&app, JA).await;

    // Signed as `openssl dgst -sha256 -sign` and as `pkeyutl` over a DigestInfo.
    for (n, how) in ["sha256", "pkeyutl"].into_iter().enumerate() {
        let customer = bare_customer(&app, &format!("R-{n}")).await;
        let signer: Signer = sim.resident().await;
        let certificate = signer.certificate_der();
        let signature = signer.sign_raw(ja.as_bytes(), how);
        let res = grant(
            &app,
            &customer,
            &raw_body(&certificate, &signature, "sha256"),
        )
        .await;
        assert_eq!(res.status(), 201, "{how}");
        let granted: Value = res.json().await.unwrap();
        assert_eq!(granted["evidence"], "platform");
        assert_eq!(granted["evidence_form"], "pkcs1_sha256");
        assert_eq!(granted["cert_serial"], signer.serial.as_str());

        // What is kept proves the consent again, offline, from the kept
        // rows alone: the signature, the certificate, the text.
        let row = stored(&app, granted["id"].as_str().unwrap()).await;
        assert_eq!(row.evidence_form, "pkcs1_sha256");
        assert_eq!(row.signed_document.as_deref(), Some(signature.as_slice()));
        assert_eq!(row.certificate.as_deref(), Some(certificate.as_slice()));
        assert_eq!(row.signed_content, ja.as_bytes());
        let anchors = TrustAnchors::load(&[sim.ca_pem()]).unwrap();
        let again = kihon4_core::jpki::verify::verify_raw_signature(
            &RawSignature {
                certificate_der: row.certificate.as_deref().unwrap(),
                signature: row.signed_document.as_deref().unwrap(),
                hash: HashAlgorithm::Sha256,
            },
            &row.signed_content,
            &anchors,
            chrono::Utc::now(),
        );
        assert!(again.is_ok(), "the kept evidence verifies again");
        let consent: Value = app
            .get(&format!("/v1/consents/{}", row.id), &app.operator())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(consent["evidence_form"], "pkcs1_sha256");

        // The audit event names the form.
        let events: Value = app
            .get("/v1/audit/events?action=consent.granted", &app.auditor())
            .await
            .json()
            .await
            .unwrap();
        let last = events["items"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            last["event"]["data"]["after"]["evidence_form"], "pkcs1_sha256",
            "{last}"
        );

        // The same signature again is a replay.
        let before = written(&app).await;
        let other = bare_customer(&app, &format!("R-{n}-again")).await;
        let after_customer = written(&app).await;
        expect_problem(
            grant(&app, &other, &raw_body(&certificate, &signature, "sha256")).await,
            409,
            "signed-document-reused",
        )
        .await;
        assert_eq!(written(&app).await, after_customer);
        assert_ne!(before, after_customer, "the customer itself was written");
    }
    // CMS is still taken.
    let customer = bare_customer(&app, "R-cms").await;
    let signer = sim.resident().await;
    let res = app
        .post(
            &format!("/v1/customers/{customer}/consents"),
            &app.operator(),
            &json!({
                "text_version": JA,
                "channel": "online_signature",
                "signed_document_b64": B64.encode(signer.sign(ja.as_bytes(), true)),
            }),
        )
        .await;
    assert_eq!(res.status(), 201);
    let granted: Value = res.json().await.unwrap();
    assert_eq!(granted["evidence_form"], "cms");
}

async fn service_provider_sends_raw_signatures_and_keeps_no_certificate(backend: Backend) {
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.service_provider(), JpkiRole::ServiceProvider).await;
    let ja = text(&app, JA).await;
    let customer = bare_customer(&app, "S-1").await;
    let signer = sim.resident().await;
    let certificate = signer.certificate_der();
    let signature = signer.sign_raw(ja.as_bytes(), "sha256");
    let res = grant(
        &app,
        &customer,
        &raw_body(&certificate, &signature, "sha256"),
    )
    .await;
    assert_eq!(res.status(), 201);
    let granted: Value = res.json().await.unwrap();
    assert_eq!(granted["evidence"], "service_provider");
    assert_eq!(granted["evidence_form"], "pkcs1_sha256");
    assert!(granted["verification_id"].is_string());
    assert!(granted["certificate_id"].is_string());
    assert_eq!(granted["cert_serial"], signer.serial.as_str());
    let row = stored(&app, granted["id"].as_str().unwrap()).await;
    assert_eq!(
        row.signed_document, None,
        "a service provider keeps no signature"
    );
    assert_eq!(row.certificate, None, "nor any certificate");
    assert_eq!(row.signed_content, ja.as_bytes());
    assert_eq!(
        app.count_where(
            revocation_checks::Entity,
            revocation_checks::Column::Method.eq("provider")
        )
        .await,
        1
    );
    // Nothing of the certificate is anywhere in the consents.
    let rows = consents::Entity::find()
        .filter(consents::Column::Id.is_not_null())
        .all(&app.db)
        .await
        .unwrap();
    for row in rows {
        for kept in [
            row.signed_content.as_slice(),
            row.signed_document.as_deref().unwrap_or_default(),
        ] {
            assert!(
                !kept
                    .windows(64)
                    .any(|w| certificate.windows(64).any(|c| c == w))
            );
        }
    }

    // What the provider decides, each refused with nothing written.
    let before = written(&app).await;
    let refuse = |body: Value, status: u16, slug: &'static str| {
        let (app, customer) = (&app, &customer);
        async move {
            expect_problem(grant(app, customer, &body).await, status, slug).await;
        }
    };
    let fresh = sim.resident().await;
    let mut other_text = ja.as_bytes().to_vec();
    other_text[0] ^= 1;
    refuse(
        raw_body(
            &fresh.certificate_der(),
            &fresh.sign_raw(&other_text, "sha256"),
            "sha256",
        ),
        422,
        "content-not-consent-text",
    )
    .await;
    refuse(
        raw_body(
            &fresh.certificate_der(),
            &fresh.sign_raw(ja.as_bytes(), "sha1"),
            "sha256",
        ),
        422,
        "unsupported-hash-algorithm",
    )
    .await;
    let mut flipped = fresh.sign_raw(ja.as_bytes(), "sha256");
    flipped[7] ^= 1;
    refuse(
        raw_body(&fresh.certificate_der(), &flipped, "sha256"),
        422,
        "signature-invalid",
    )
    .await;
    let stranger = spawn_sim().await.resident().await;
    refuse(
        raw_body(
            &stranger.certificate_der(),
            &stranger.sign_raw(ja.as_bytes(), "sha256"),
            "sha256",
        ),
        422,
        "untrusted-issuer",
    )
    .await;
    assert_eq!(written(&app).await, before);
}

async fn every_bad_raw_signature_is_refused_and_writes_nothing(backend: Backend) {
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let ja = text(&app, JA).await;
    let customer = bare_customer(&app, "B-1").await;
    let signer = sim.resident().await;
    let certificate = signer.certificate_der();
    let good = signer.sign_raw(ja.as_bytes(), "sha256");
    let before = written(&app).await;
    let refuse = |body: Value, status: u16, slug: &'static str| {
        let (app, customer) = (&app, &customer);
        async move { expect_problem(grant(app, customer, &body).await, status, slug).await }
    };

    // SHA-1 named, or found in the DigestInfo; other names; named in `detail`.
    for name in ["sha1", "SHA-1", "sha384", "md5"] {
        let problem = refuse(
            raw_body(&certificate, &good, name),
            422,
            "unsupported-hash-algorithm",
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains(name),
            "{problem}"
        );
    }
    let sha1 = signer.sign_raw(ja.as_bytes(), "sha1");
    let problem = refuse(
        raw_body(&certificate, &sha1, "sha256"),
        422,
        "unsupported-hash-algorithm",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("sha1"),
        "{problem}"
    );

    // Over other content; a changed byte; a cut signature; another key's.
    let mut other_text = ja.as_bytes().to_vec();
    other_text.push(b' ');
    refuse(
        raw_body(
            &certificate,
            &signer.sign_raw(&other_text, "sha256"),
            "sha256",
        ),
        422,
        "content-not-consent-text",
    )
    .await;
    let mut flipped = good.clone();
    flipped[100] ^= 1;
    refuse(
        raw_body(&certificate, &flipped, "sha256"),
        422,
        "signature-invalid",
    )
    .await;
    refuse(
        raw_body(&certificate, &good[..255], "sha256"),
        422,
        "signature-invalid",
    )
    .await;
    let someone_else = sim.resident().await;
    refuse(
        raw_body(
            &certificate,
            &someone_else.sign_raw(ja.as_bytes(), "sha256"),
            "sha256",
        ),
        422,
        "signature-invalid",
    )
    .await;

    // Certificates that cannot sign a consent.
    let user_id = sim.fixture_signer(365, |c| {
        c.replace("1.2.392.200149.8.5.1.1.20", "1.2.392.200149.8.5.1.3.30")
    });
    refuse(
        raw_body(
            &user_id.certificate_der(),
            &user_id.sign_raw(ja.as_bytes(), "sha256"),
            "sha256",
        ),
        422,
        "user-identification-certificate",
    )
    .await;
    refuse(
        raw_body(b"not a certificate", &good, "sha256"),
        422,
        "not-signing-certificate",
    )
    .await;
    let stranger = spawn_sim().await.resident().await;
    refuse(
        raw_body(
            &stranger.certificate_der(),
            &stranger.sign_raw(ja.as_bytes(), "sha256"),
            "sha256",
        ),
        422,
        "untrusted-issuer",
    )
    .await;

    // The body: not base64, both forms, neither, parts missing.
    let mut body = raw_body(&certificate, &good, "sha256");
    body["signature"]["signature_b64"] = json!("not base64!");
    let problem = refuse(body, 422, "not-base64").await;
    assert_eq!(
        problem["errors"][0]["field"], "signature.signature_b64",
        "{problem}"
    );
    let mut both = raw_body(&certificate, &good, "sha256");
    both["signed_document_b64"] = json!(B64.encode(signer.sign(ja.as_bytes(), true)));
    refuse(both, 422, "validation").await;
    let mut neither = raw_body(&certificate, &good, "sha256");
    neither.as_object_mut().unwrap().remove("signature");
    refuse(neither, 422, "validation").await;
    let mut partial = raw_body(&certificate, &good, "sha256");
    partial["signature"]
        .as_object_mut()
        .unwrap()
        .remove("hash_algorithm");
    let problem = refuse(partial, 422, "validation").await;
    assert_eq!(
        problem["errors"][0]["field"], "signature.hash_algorithm",
        "{problem}"
    );
    let mut unknown = raw_body(&certificate, &good, "sha256");
    unknown["signature"]["digest_b64"] = json!("AAAA");
    let problem = refuse(unknown, 422, "validation").await;
    assert_eq!(
        problem["errors"][0]["field"], "signature.digest_b64",
        "{problem}"
    );

    assert_eq!(written(&app).await, before);
    // And the good one still goes through.
    assert_eq!(
        grant(&app, &customer, &raw_body(&certificate, &good, "sha256"))
            .await
            .status(),
        201
    );
}
