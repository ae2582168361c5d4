//! Faults: bad days on the provider routes, and only there.

use serde_json::{Value, json};

use crate::helpers::{keyed, problem, spawn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_make_bad_days_on_provider_routes_only() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let put = |body: Value| {
        sim.http
            .put(format!("{}/sim/faults", sim.base))
            .json(&body)
            .send()
    };
    let query = json!({"queries": [{"cert_serial": "abc"}]});

    assert_eq!(
        put(json!({"maintenance": true, "maintenance_retry_after_s": 7}))
            .await
            .unwrap()
            .status(),
        200
    );
    let res = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&query),
    )
    .await;
    assert_eq!(res.headers()["retry-after"], "7");
    problem(res, 503, "maintenance").await;
    // Simulator control still answers during maintenance.
    assert_eq!(
        sim.post("/sim/persons", &json!({"basic4": {}}))
            .await
            .status(),
        422
    );

    put(json!({"error_rate": 1.0})).await.unwrap();
    for _ in 0..10 {
        let res = keyed(
            &sim,
            reqwest::Method::POST,
            "/v1/basic4/queries",
            Some(&query),
        )
        .await;
        match res.status().as_u16() {
            500 => {}
            429 => assert_eq!(res.headers()["retry-after"], "1"),
            other => panic!("unexpected {other}"),
        }
    }

    put(json!({"malformed_rate": 1.0})).await.unwrap();
    let res = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&query),
    )
    .await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "cut short: {text}"
    );

    put(json!({"latency_ms": 300})).await.unwrap();
    let started = std::time::Instant::now();
    let res = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&query),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));

    for bad in [
        json!({"error_rate": 2}),
        json!({"latency_ms": 100000}),
        json!({"colour": "red"}),
    ] {
        let res = put(bad).await.unwrap();
        assert_eq!(res.status(), 400);
    }
    put(json!({})).await.unwrap();
    let res = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&query),
    )
    .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["results"][0]["status"], "unknown_certificate");
    sim.handle.stop(true).await;
}
