//! Residents: their certificates and signatures as OpenSSL and kihon4 read
//! them, the register surviving a restart, and life events that make no sense.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use der::Decode;
use serde_json::{Value, json};

use crate::helpers::{openssl, problem, spawn, taro};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn residents_get_certificates_that_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let res = sim.post("/sim/persons", &taro()).await;
    assert_eq!(res.status(), 201);
    let person: Value = res.json().await.unwrap();
    std::fs::write(
        dir.path().join("leaf.pem"),
        person["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    sim.ca_pem(dir.path()).await;
    let verified = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "leaf.pem"]);
    assert!(verified.contains("leaf.pem: OK"), "{verified}");
    let ca_text = openssl(dir.path(), &["x509", "-in", "ca.pem", "-noout", "-text"]);
    assert!(
        ca_text.contains("sha256WithRSAEncryption") && ca_text.contains("Public-Key: (2048 bit)")
    );
    assert!(ca_text.contains("CA:TRUE") && ca_text.contains("Certificate Sign, CRL Sign"));
    assert!(ca_text.contains("X509v3 Subject Key Identifier"));

    let pem = person["certificate_pem"].as_str().unwrap();
    let der = der::Document::from_pem(pem).unwrap().1;
    let cert = kihon4_core::jpki::parse_signing_certificate(der.as_bytes()).unwrap();
    assert_eq!(cert.basic4.name.as_str(), "山田 太郎");
    assert_eq!(cert.basic4.birth_date.to_iso(), "1980-02-17");
    assert_eq!(cert.serial.as_str(), person["cert_serial"]);
    let partition = cert.crl_partition.unwrap();
    assert_eq!(
        (partition.prefecture.as_str(), partition.city.as_str()),
        ("東京都", "千代田区")
    );
    assert_eq!(cert.prefecture.as_deref(), Some("東京都"));
    // Valid to the fifth birthday after issue, at the end of that day in Japan.
    let fifth = kihon4_sim::residents::fifth_birthday_after(
        chrono::NaiveDate::from_ymd_opt(1980, 2, 17).unwrap(),
        chrono::Utc::now().date_naive(),
    );
    assert_eq!(
        cert.not_after.format("%Y-%m-%d %H:%M:%S").to_string(),
        format!("{fifth} 14:59:59")
    );
    // The key plays the card: it matches the certificate.
    std::fs::write(
        dir.path().join("leaf.key"),
        person["private_key_pem"].as_str().unwrap(),
    )
    .unwrap();
    let from_key = openssl(dir.path(), &["pkey", "-in", "leaf.key", "-pubout"]);
    let from_cert = openssl(
        dir.path(),
        &["x509", "-in", "leaf.pem", "-noout", "-pubkey"],
    );
    assert_eq!(from_key, from_cert);
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_with_openssl_cms_and_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let person: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let id = person["person_id"].as_str().unwrap().to_owned();
    let ca_before = sim.get("/v1/ca").await.bytes().await.unwrap();
    sim.handle.stop(true).await;

    // A new simulator on the same folder: same CA, same resident.
    let sim = spawn(dir.path(), None).await;
    assert_eq!(sim.get("/v1/ca").await.bytes().await.unwrap(), ca_before);
    let again: Value = sim
        .get(&format!("/sim/persons/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["cert_serial"], person["cert_serial"]);
    assert_eq!(again["status"], "alive");

    let text = "私は、基本4情報の提供に同意します。\n";
    let res = sim
        .post(
            &format!("/sim/persons/{id}/sign"),
            &json!({"content_b64": B64.encode(text)}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let signed: Value = res.json().await.unwrap();
    let der = B64.decode(signed["cms_der_b64"].as_str().unwrap()).unwrap();
    std::fs::write(dir.path().join("signed.der"), &der).unwrap();
    sim.ca_pem(dir.path()).await;
    let content = openssl(
        dir.path(),
        &[
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            "signed.der",
            "-CAfile",
            "ca.pem",
        ],
    );
    assert_eq!(content, text);
    let structure = openssl(
        dir.path(),
        &[
            "cms",
            "-cmsout",
            "-print",
            "-inform",
            "DER",
            "-in",
            "signed.der",
        ],
    );
    for attribute in ["contentType", "messageDigest", "signingTime", "sha256"] {
        assert!(
            structure.contains(attribute),
            "{attribute} missing:\n{structure}"
        );
    }
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn life_events_refuse_what_makes_no_sense() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let person: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let id = person["person_id"].as_str().unwrap();
    let body = problem(
        sim.post(
            &format!("/sim/persons/{id}/events"),
            &json!({"kind": "wedding"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "kind");
    let body = problem(
        sim.post(
            &format!("/sim/persons/{id}/events"),
            &json!({"kind": "move"}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "basic4.address");
    let body = problem(
        sim.post(
            &format!("/sim/persons/{id}/events"),
            &json!({"kind": "rename", "basic4": {"name": ""}}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "basic4.name");
    problem(
        sim.post("/sim/persons/nobody/events", &json!({"kind": "death"}))
            .await,
        404,
        "not-found",
    )
    .await;
    // Nothing was revoked by any of it.
    let published: Value = sim
        .post("/sim/crl/publish", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(published["entries"], 0);
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kihon4_verifies_what_residents_sign() {
    use kihon4_core::jpki::verify::{SignatureError, TrustAnchors, verify_signed_document};
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let person: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let id = person["person_id"].as_str().unwrap();
    let text = "同意します";
    let signed: Value = sim
        .post(
            &format!("/sim/persons/{id}/sign"),
            &json!({"content_b64": B64.encode(text)}),
        )
        .await
        .json()
        .await
        .unwrap();
    let cms = B64.decode(signed["cms_der_b64"].as_str().unwrap()).unwrap();
    let ca =
        x509_cert::Certificate::from_der(&sim.get("/v1/ca").await.bytes().await.unwrap()).unwrap();
    let anchors = TrustAnchors::from_certificates(vec![ca]).unwrap();
    let verified = verify_signed_document(&cms, None, &anchors, chrono::Utc::now()).unwrap();
    assert_eq!(verified.content, text.as_bytes());
    assert_eq!(
        verified.certificate.serial.as_str(),
        person["cert_serial"].as_str().unwrap()
    );
    // The real J-LIS CAs do not vouch for the simulator's residents.
    let jlis = TrustAnchors::load(&[
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/jpki-trust-anchors")
    ])
    .unwrap();
    assert_eq!(
        verify_signed_document(&cms, None, &jlis, chrono::Utc::now()).unwrap_err(),
        SignatureError::UntrustedIssuer
    );
    sim.handle.stop(true).await;
}
