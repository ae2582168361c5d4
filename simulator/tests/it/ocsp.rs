//! OCSP, checked by OpenSSL's client.

use serde_json::{Value, json};

use crate::helpers::{ocsp_check, openssl, problem, spawn, taro};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsp_says_good_then_revoked_and_unknown_for_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    sim.ca_pem(dir.path()).await;
    let person: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    std::fs::write(
        dir.path().join("leaf.pem"),
        person["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    let sim_ref = &sim;
    let answer = tokio::task::block_in_place(|| ocsp_check(dir.path(), sim_ref, "leaf.pem"));
    assert!(answer.contains("Response verify OK"), "{answer}");
    assert!(answer.contains("leaf.pem: good"), "{answer}");
    assert!(
        !answer.contains("WARNING: no nonce"),
        "the nonce is echoed: {answer}"
    );

    let id = person["person_id"].as_str().unwrap();
    let moved = sim
        .post(
            &format!("/sim/persons/{id}/events"),
            &json!({"kind": "move", "basic4": {"address": "京都府京都市左京区1"}}),
        )
        .await;
    assert_eq!(moved.status(), 200);
    // OCSP knows at once, without waiting for the next CRL.
    let answer = tokio::task::block_in_place(|| ocsp_check(dir.path(), sim_ref, "leaf.pem"));
    assert!(answer.contains("leaf.pem: revoked"), "{answer}");
    assert!(answer.contains("Reason: affiliationChanged"), "{answer}");

    // A certificate this CA never issued (same serial space, other CA).
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
            "/CN=stranger",
        ],
    );
    let answer = tokio::task::block_in_place(|| ocsp_check(dir.path(), sim_ref, "other.pem"));
    assert!(answer.contains("other.pem: unknown"), "{answer}");

    // Garbage gets an OCSP malformedRequest, not a crash.
    let res = sim
        .http
        .post(format!("{}/v1/ocsp", sim.base))
        .bearer_auth("k")
        .header("content-type", "application/ocsp-request")
        .body(vec![0x30, 0x03, 0x02, 0x01, 0x01])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        [0x30, 0x03, 0x0a, 0x01, 0x01]
    );
    let res = sim
        .http
        .post(format!("{}/v1/ocsp", sim.base))
        .bearer_auth("k")
        .body("x")
        .send()
        .await
        .unwrap();
    problem(res, 415, "unsupported-media-type").await;
    sim.handle.stop(true).await;
}
