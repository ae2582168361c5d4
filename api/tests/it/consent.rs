use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::both;
use crate::helpers::{Backend, INSTITUTION, TestApp, expect_problem};

both!(consent_texts_are_served_with_their_hashes);

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
