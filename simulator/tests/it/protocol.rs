//! The provider protocol's queries and consent registrations
//! (subscriptions).

use serde_json::{Value, json};

use crate::helpers::{TestSim, keyed, problem, spawn, taro};

fn subscription() -> Value {
    json!({"consent_id": "consent-1", "granted_at": "2026-11-25T00:00:00Z", "expires_at": "2036-11-26T00:00:00Z"})
}

async fn subscribe(sim: &TestSim, serial: &str) -> reqwest::StatusCode {
    keyed(
        sim,
        reqwest::Method::PUT,
        &format!("/v1/basic4/subscriptions/{serial}"),
        Some(&subscription()),
    )
    .await
    .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_every_status_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let mut people = Vec::new();
    for _ in 0..6 {
        let p: Value = sim
            .post("/sim/persons", &taro())
            .await
            .json()
            .await
            .unwrap();
        people.push((
            p["person_id"].as_str().unwrap().to_owned(),
            p["cert_serial"].as_str().unwrap().to_owned(),
        ));
    }
    let [still, mover, dead, lost, late, stranger] = people.try_into().unwrap();
    for (_, serial) in [&still, &mover, &dead, &lost, &late] {
        assert_eq!(subscribe(&sim, serial).await, 201);
    }
    let sim = &sim;
    let event = |id: &str, body: Value| {
        let path = format!("/sim/persons/{id}/events");
        async move { sim.post(&path, &body).await }
    };
    let moved: Value = event(
        &mover.0,
        json!({"kind": "move", "basic4": {"address": "北海道札幌市中央区北1条西2丁目"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(event(&dead.0, json!({"kind": "death"})).await.status(), 200);
    assert_eq!(
        event(&lost.0, json!({"kind": "card_lost"})).await.status(),
        200
    );
    assert_eq!(
        event(
            &late.0,
            json!({"kind": "move", "basic4": {"address": "沖縄県那覇市泉崎1-1"}, "reissue": false})
        )
        .await
        .status(),
        200
    );

    let order = [
        &still.1,
        &mover.1,
        &dead.1,
        &lost.1,
        &late.1,
        &stranger.1,
        &"abc123".to_owned(),
    ];
    let body =
        json!({"queries": order.iter().map(|s| json!({"cert_serial": s})).collect::<Vec<_>>()});
    let res = keyed(
        sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&body),
    )
    .await;
    assert_eq!(res.status(), 200);
    let results: Value = res.json().await.unwrap();
    let results = results["results"].as_array().unwrap();
    let got: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["cert_serial"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(&str, &str)> = order
        .iter()
        .map(|s| s.as_str())
        .zip([
            "unchanged",
            "changed",
            "deceased",
            "revoked",
            "awaiting_reissue",
            "not_subscribed",
            "unknown_certificate",
        ])
        .collect();
    assert_eq!(got, expected);
    let changed = &results[1];
    assert_eq!(changed["current_cert_serial"], moved["cert_serial"]);
    assert_eq!(
        changed["changed_on"],
        chrono::Utc::now().date_naive().to_string()
    );
    assert_eq!(
        changed["basic4"]["address"],
        "北海道札幌市中央区北1条西2丁目"
    );
    assert_eq!(changed["basic4"]["name"], "山田 太郎");
    assert_eq!(changed["basic4"]["birth_date"], "1980-02-17");
    assert!(results[2]["changed_on"].is_string());
    assert_eq!(results[3]["reason"], "lost");
    assert!(
        results[0].get("basic4").is_none(),
        "unchanged carries no items"
    );

    // The consent survives the revocation: the new certificate is still subscribed.
    let again = json!({"queries": [{"cert_serial": moved["cert_serial"]}]});
    let res: Value = keyed(
        sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&again),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(res["results"][0]["status"], "unchanged");
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_idempotent_and_batches_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), Some("institution-key")).await;
    let p: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let serial = p["cert_serial"].as_str().unwrap();
    assert_eq!(subscribe(&sim, serial).await, 201);
    assert_eq!(subscribe(&sim, serial).await, 200);
    let path = format!("/v1/basic4/subscriptions/{serial}");
    assert_eq!(
        keyed(&sim, reqwest::Method::DELETE, &path, None)
            .await
            .status(),
        204
    );
    assert_eq!(
        keyed(&sim, reqwest::Method::DELETE, &path, None)
            .await
            .status(),
        204
    );
    let query = json!({"queries": [{"cert_serial": serial}]});
    let res: Value = keyed(
        &sim,
        reqwest::Method::POST,
        "/v1/basic4/queries",
        Some(&query),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(res["results"][0]["status"], "not_subscribed");

    problem(
        keyed(
            &sim,
            reqwest::Method::PUT,
            "/v1/basic4/subscriptions/abc123",
            Some(&subscription()),
        )
        .await,
        404,
        "unknown-certificate",
    )
    .await;
    problem(
        keyed(
            &sim,
            reqwest::Method::PUT,
            "/v1/basic4/subscriptions/00AB",
            Some(&subscription()),
        )
        .await,
        400,
        "bad-request",
    )
    .await;
    let backwards = json!({"consent_id": "c", "granted_at": "2030-01-01T00:00:00Z", "expires_at": "2029-01-01T00:00:00Z"});
    problem(
        keyed(&sim, reqwest::Method::PUT, &path, Some(&backwards)).await,
        400,
        "bad-request",
    )
    .await;

    // A consent given before the certificate was revoked is registered; one
    // dated after the revocation cannot have been given with it.
    let lost: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let lost_serial = lost["cert_serial"].as_str().unwrap();
    let res = sim
        .post(
            &format!(
                "/sim/persons/{}/events",
                lost["person_id"].as_str().unwrap()
            ),
            &json!({"kind": "card_lost"}),
        )
        .await;
    assert!(res.status().is_success());
    assert_eq!(subscribe(&sim, lost_serial).await, 201);
    let after = chrono::Utc::now() + chrono::Duration::seconds(1);
    let late = json!({"consent_id": "consent-2", "granted_at": after, "expires_at": "2036-11-26T00:00:00Z"});
    problem(
        keyed(
            &sim,
            reqwest::Method::PUT,
            &format!("/v1/basic4/subscriptions/{lost_serial}"),
            Some(&late),
        )
        .await,
        409,
        "certificate-revoked",
    )
    .await;

    let batch = |n: usize| json!({"queries": (0..n).map(|_| json!({"cert_serial": serial})).collect::<Vec<_>>()});
    for n in [0, 1001] {
        let body = problem(
            keyed(
                &sim,
                reqwest::Method::POST,
                "/v1/basic4/queries",
                Some(&batch(n)),
            )
            .await,
            400,
            "bad-request",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "queries");
    }
    assert_eq!(
        keyed(
            &sim,
            reqwest::Method::POST,
            "/v1/basic4/queries",
            Some(&batch(1000))
        )
        .await
        .status(),
        200
    );
    let bad = json!({"queries": [{"cert_serial": serial}, {"cert_serial": serial}, {"cert_serial": "XYZ"}]});
    let body = problem(
        keyed(
            &sim,
            reqwest::Method::POST,
            "/v1/basic4/queries",
            Some(&bad),
        )
        .await,
        400,
        "bad-request",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "queries[2].cert_serial");
    let unknown_field = json!({"queries": [{"cert_serial": serial, "extra": true}]});
    problem(
        keyed(
            &sim,
            reqwest::Method::POST,
            "/v1/basic4/queries",
            Some(&unknown_field),
        )
        .await,
        400,
        "bad-request",
    )
    .await;
    let res = sim
        .http
        .post(format!("{}/v1/basic4/queries", sim.base))
        .json(&query)
        .send()
        .await
        .unwrap();
    problem(res, 401, "unauthorized").await;
    sim.handle.stop(true).await;
}
