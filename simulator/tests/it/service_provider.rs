//! The service-provider role's routes: liveness checks, verifications and
//! the counts of checks by purpose.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::helpers::{keyed, ocsp_check, openssl, osaka, problem, spawn, taro};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_checks_answer_and_every_check_is_counted_by_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let from = chrono::Utc::now() - chrono::Duration::minutes(1);
    let alive: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let gone: Value = sim
        .post("/sim/persons", &osaka())
        .await
        .json()
        .await
        .unwrap();
    let gone_id = gone["person_id"].as_str().unwrap();
    assert_eq!(
        sim.post(
            &format!("/sim/persons/{gone_id}/events"),
            &json!({"kind": "death"})
        )
        .await
        .status(),
        200
    );

    let ids = json!({"certificate_ids": [alive["certificate_id"], gone["certificate_id"]]});
    let res = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/certificates/status",
        Some(&ids),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["results"][0]["status"], "good");
    assert_eq!(body["results"][1]["status"], "revoked");
    assert_eq!(body["results"][1]["reason"], "cessation_of_operation");
    assert!(body["results"][0]["checked_at"].is_string());

    // One OCSP check for signature verification.
    std::fs::write(
        dir.path().join("leaf.pem"),
        alive["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    sim.ca_pem(dir.path()).await;
    let sim_ref = &sim;
    let answer = tokio::task::block_in_place(|| ocsp_check(dir.path(), sim_ref, "leaf.pem"));
    assert!(answer.contains("leaf.pem: good"), "{answer}");

    let to = chrono::Utc::now() + chrono::Duration::minutes(1);
    let path = format!(
        "/v1/checks?from={}&to={}",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let counts: Value = keyed(&sim, reqwest::Method::GET, &path, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(counts["liveness_check"], 2);
    assert_eq!(counts["signature_verification"], 1);

    for bad in [
        json!({"certificate_ids": []}),
        json!({"certificate_ids": ["nope"]}),
        json!({"ids": []}),
    ] {
        problem(
            keyed(
                &sim,
                reqwest::Method::POST,
                "/v1/certificates/status",
                Some(&bad),
            )
            .await,
            400,
            "bad-request",
        )
        .await;
    }
    let unknown = json!({"certificate_ids": ["crt_abcdef"]});
    problem(
        keyed(
            &sim,
            reqwest::Method::POST,
            "/v1/certificates/status",
            Some(&unknown),
        )
        .await,
        404,
        "unknown-certificate",
    )
    .await;
    problem(
        keyed(&sim, reqwest::Method::GET, "/v1/checks", None).await,
        400,
        "bad-request",
    )
    .await;
    // Refused checks are not counted.
    let counts: Value = keyed(&sim, reqwest::Method::GET, &path, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(counts["liveness_check"], 2);
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifications_check_signatures_from_the_simulator_and_from_openssl() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let person: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let id = person["person_id"].as_str().unwrap();
    let text = "基本4情報の提供に同意します。";
    let signed: Value = sim
        .post(
            &format!("/sim/persons/{id}/sign"),
            &json!({"content_b64": B64.encode(text)}),
        )
        .await
        .json()
        .await
        .unwrap();
    let verify = |cms_b64: String| {
        let sim = &sim;
        async move {
            keyed(
                sim,
                reqwest::Method::POST,
                "/v1/verifications",
                Some(&json!({"cms_b64": cms_b64})),
            )
            .await
        }
    };
    let res = verify(signed["cms_der_b64"].as_str().unwrap().to_owned()).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["cert_serial"], person["cert_serial"]);
    assert_eq!(v["certificate_id"], person["certificate_id"]);
    assert_eq!(
        v["content_sha256"],
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    );
    assert_eq!(v["basic4"]["name"], "山田 太郎");
    assert!(v["verification_id"].is_string() && v["not_after"].is_string());

    // OpenSSL signing with the resident's key and certificate: the same verdict.
    std::fs::write(
        dir.path().join("leaf.pem"),
        person["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("leaf.key"),
        person["private_key_pem"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("text"), text).unwrap();
    openssl(
        dir.path(),
        &[
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-md",
            "sha256",
            "-in",
            "text",
            "-signer",
            "leaf.pem",
            "-inkey",
            "leaf.key",
            "-outform",
            "DER",
            "-out",
            "by-openssl.der",
        ],
    );
    let by_openssl = std::fs::read(dir.path().join("by-openssl.der")).unwrap();
    let v: Value = verify(B64.encode(&by_openssl)).await.json().await.unwrap();
    assert_eq!(v["valid"], true, "{v}");

    // A changed content no longer matches its digest.
    let mut tampered = by_openssl.clone();
    let at = tampered
        .windows(3)
        .position(|w| w == "基".as_bytes())
        .unwrap();
    tampered[at + 2] ^= 1;
    let v: Value = verify(B64.encode(&tampered)).await.json().await.unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["reason"].as_str()),
        (Some(false), Some("digest_mismatch"))
    );

    // Signed with a certificate from another CA.
    openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ],
    );
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/jpki-profile/openssl-signing-cert.cnf"),
    )
    .unwrap()
    .replace(";UTF8:", ";FORMAT:UTF8,UTF8:")
    .replace("UTF8:0000000000000", "UTF8:000000000000000");
    std::fs::write(dir.path().join("leaf.cnf"), config).unwrap();
    openssl(
        dir.path(),
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "forged.key",
            "-out",
            "forged.csr",
            "-config",
            "leaf.cnf",
        ],
    );
    openssl(
        dir.path(),
        &[
            "x509",
            "-req",
            "-in",
            "forged.csr",
            "-CA",
            "other.pem",
            "-CAkey",
            "other.key",
            "-CAcreateserial",
            "-out",
            "forged.pem",
            "-days",
            "1",
            "-extfile",
            "leaf.cnf",
            "-extensions",
            "ext",
        ],
    );
    openssl(
        dir.path(),
        &[
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-md",
            "sha256",
            "-in",
            "text",
            "-signer",
            "forged.pem",
            "-inkey",
            "forged.key",
            "-outform",
            "DER",
            "-out",
            "forged.der",
        ],
    );
    let v: Value = verify(B64.encode(std::fs::read(dir.path().join("forged.der")).unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["reason"].as_str()),
        (Some(false), Some("untrusted_issuer"))
    );

    // The holder lost the card: the signature holds, the certificate does not.
    assert_eq!(
        sim.post(
            &format!("/sim/persons/{id}/events"),
            &json!({"kind": "card_lost"})
        )
        .await
        .status(),
        200
    );
    let v: Value = verify(signed["cms_der_b64"].as_str().unwrap().to_owned())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["reason"].as_str()),
        (Some(false), Some("revoked"))
    );

    problem(verify("***".into()).await, 400, "bad-request").await;
    problem(
        verify(B64.encode(b"not cms")).await,
        400,
        "unreadable-signature",
    )
    .await;
    sim.handle.stop(true).await;
}
